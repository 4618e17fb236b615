"""Contract tests for the Idempotency-Key header (docs/api.md, "Idempotent
requests"; DESIGN.md §1 Admission): a repeat of a POST with the same key and
the same request gets the first reply byte for byte (and changes nothing); the
same key with another request gets 422 idempotency_key_reused; refusals are
not kept; keys expire after http.idempotency_ttl_s; all of it holds under
concurrency and across kill -9."""

import json
import sqlite3

import pytest

from conftest import (
    Async,
    assert_error,
    claim_req,
    job_events,
    list_all_jobs,
    put_queue,
    run_threads,
)


def post(server, path, body, key, token="submit", **kw):
    headers = {"Idempotency-Key": key} if key is not None else None
    return server.request("POST", path, body, token=token, headers=headers, **kw)


def submit(server, key, queue="idem", token="submit", **fields):
    return post(server, "/v1/jobs", {"queue": queue, **fields}, key, token=token)


def assert_replay(first, again):
    assert again.status == first.status, again
    assert again.body == first.body  # byte for byte
    assert again.headers.get("idempotent-replayed") == "true", again.headers
    assert "idempotent-replayed" not in first.headers
    assert again.headers.get("location") == first.headers.get("location")


def count_rows(server, table):
    db = sqlite3.connect(f"file:{server.data_dir}/drover.db?mode=ro", uri=True)
    try:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        db.close()


# ------------------------------------------------------------------ submit


def test_repeat_of_a_submit_returns_the_first_reply_and_creates_nothing(server):
    first = submit(server, "order-1", payload={"vm": "small"})
    assert first.status == 202, first
    assert first.headers["location"] == f"/v1/jobs/{first.json['id']}"
    again = submit(server, "order-1", payload={"vm": "small"})
    assert_replay(first, again)
    assert [j["id"] for j in list_all_jobs(server, queue="idem")] == [first.json["id"]]


def test_the_replay_is_the_first_reply_even_after_the_job_moved_on(server):
    first = submit(server, "order-2")
    job_id = first.json["id"]
    r = server.request("POST", f"/v1/jobs/{job_id}/cancel", token="submit")
    assert r.status == 200, r
    again = submit(server, "order-2")
    assert_replay(first, again)
    assert again.json["state"] == "queued"  # what the first caller saw
    assert server.get_job(job_id)["state"] == "canceled"


def test_same_key_with_another_body_is_refused_with_422_and_changes_nothing(server):
    first = submit(server, "order-3", payload={"vm": "small"})
    assert first.status == 202
    r = submit(server, "order-3", payload={"vm": "large"})
    assert_error(r, 422, "idempotency_key_reused")
    assert "order-3" in r.json["message"]
    assert len(list_all_jobs(server, queue="idem")) == 1


def test_same_key_on_another_route_is_refused_with_422(server):
    first = submit(server, "shared-key")
    job_id = first.json["id"]
    r = post(server, f"/v1/jobs/{job_id}/cancel", None, "shared-key")
    assert_error(r, 422, "idempotency_key_reused")
    assert server.get_job(job_id)["state"] == "queued"


def test_keys_are_exact_strings(server):
    a = submit(server, "Key-A")
    b = submit(server, "key-a")
    assert a.status == b.status == 202
    assert a.json["id"] != b.json["id"]


def test_requests_without_a_key_are_never_replayed(server):
    a = submit(server, None)
    b = submit(server, None)
    assert a.status == b.status == 202
    assert a.json["id"] != b.json["id"]
    assert "idempotent-replayed" not in b.headers


@pytest.mark.parametrize("key", ["", "has space", "tab\there", "é", "x" * 256])
def test_a_malformed_key_is_a_400_and_creates_nothing(server, key):
    r = server.request("POST", "/v1/jobs", {"queue": "idem"}, token="submit",
                       headers={"Idempotency-Key": key.encode("utf-8").decode("latin-1")})
    assert_error(r, 400, "bad_request")
    assert "Idempotency-Key" in r.json["message"]
    assert list_all_jobs(server, queue="idem") == []


def test_the_longest_key_is_accepted(server):
    first = submit(server, "k" * 255)
    assert first.status == 202, first
    assert_replay(first, submit(server, "k" * 255))


def test_a_bad_body_with_a_key_is_a_400_and_keeps_nothing(server):
    r = post(server, "/v1/jobs", {"queue": "idem", "payload": 3}, "bad-body")
    assert_error(r, 400, "invalid_field")
    ok = post(server, "/v1/jobs", {"queue": "idem"}, "bad-body")
    assert ok.status == 202, ok  # the key was not taken by the refusal


def test_fifty_concurrent_repeats_create_exactly_one_job(server):
    results = run_threads(50, lambda i: submit(server, "burst", payload={"n": 1}))
    assert {r.status for r in results} == {202}
    assert len({r.body for r in results}) == 1
    assert sum(1 for r in results if "idempotent-replayed" not in r.headers) == 1
    assert len(list_all_jobs(server, queue="idem")) == 1


def test_a_refusal_is_not_kept_so_a_later_repeat_is_judged_again(server):
    put_queue(server, "limited", concurrency_limit=1, on_limit="reject")
    holder = submit(server, None, queue="limited", concurrency_key="user:1")
    assert holder.status == 202
    refused = submit(server, "second", queue="limited", concurrency_key="user:1")
    assert_error(refused, 409, "concurrency_limited")
    r = server.request("POST", f"/v1/jobs/{holder.json['id']}/cancel", token="submit")
    assert r.status == 200
    admitted = submit(server, "second", queue="limited", concurrency_key="user:1")
    assert admitted.status == 202, admitted
    assert "idempotent-replayed" not in admitted.headers
    assert_replay(admitted, submit(server, "second", queue="limited",
                                   concurrency_key="user:1"))


def test_a_dedup_reply_is_kept_like_any_other(server):
    first = submit(server, None, dedup_key="d1")
    dup = submit(server, "dedup-key", dedup_key="d1")
    assert dup.status == 200 and dup.json["deduplicated"] is True
    assert_replay(dup, submit(server, "dedup-key", dedup_key="d1"))
    assert dup.json["id"] == first.json["id"]


def test_put_and_get_ignore_the_header(server):
    h = {"Idempotency-Key": "not-for-put"}
    r1 = server.request("PUT", "/v1/queues/q1", {"max_attempts": 2}, headers=h)
    r2 = server.request("PUT", "/v1/queues/q1", {"max_attempts": 3}, headers=h)
    assert r1.status == r2.status == 200
    assert r2.json["max_attempts"] == 3
    assert "idempotent-replayed" not in r2.headers
    g = server.request("GET", "/v1/queues/q1", headers=h, token="read")
    assert g.status == 200 and g.json["max_attempts"] == 3


# ------------------------------------------------------------------ other POSTs


def test_cancel_and_retry_replay(server):
    job_id = submit(server, None).json["id"]
    c1 = post(server, f"/v1/jobs/{job_id}/cancel", {"reason": "x"}, "cancel-1")
    assert c1.status == 200
    c2 = post(server, f"/v1/jobs/{job_id}/cancel", {"reason": "x"}, "cancel-1")
    assert_replay(c1, c2)  # without the key a second cancel would be a 409
    r1 = post(server, f"/v1/jobs/{job_id}/retry", None, "retry-1")
    assert r1.status == 200 and r1.json["state"] == "queued", r1
    n_events = len(job_events(server, job_id))
    r2 = post(server, f"/v1/jobs/{job_id}/retry", None, "retry-1")
    assert_replay(r1, r2)
    assert len(job_events(server, job_id)) == n_events  # nothing happened again


def test_claim_with_a_key_replays_the_same_jobs_and_leases(server):
    a = submit(server, None, queue="work").json["id"]
    submit(server, None, queue="work")
    body = {"worker": "w1", "max": 1}
    first = post(server, "/v1/queues/work/claim", body, "claim-1", token="worker")
    assert first.status == 200 and [j["id"] for j in first.json["jobs"]] == [a], first
    again = post(server, "/v1/queues/work/claim", body, "claim-1", token="worker")
    assert_replay(first, again)
    other = claim_req(server, "work", worker="w2", max_jobs=5)
    assert len(other.json["jobs"]) == 1  # only the second job was left


def test_an_empty_claim_is_not_kept(server):
    body = {"worker": "w1"}
    empty = post(server, "/v1/queues/work/claim", body, "claim-2", token="worker")
    assert empty.status == 200 and empty.json["jobs"] == []
    job_id = submit(server, None, queue="work").json["id"]
    got = post(server, "/v1/queues/work/claim", body, "claim-2", token="worker")
    assert [j["id"] for j in got.json["jobs"]] == [job_id]
    assert "idempotent-replayed" not in got.headers


def test_a_waiting_claim_handed_a_job_keeps_its_reply(server):
    body = {"worker": "w1", "wait_s": 10}
    waiting = Async(lambda: post(server, "/v1/queues/park/claim", body, "claim-3",
                                 token="worker", timeout=20))
    job_id = submit(server, None, queue="park").json["id"]
    first = waiting.result(15)
    assert [j["id"] for j in first.json["jobs"]] == [job_id], first
    again = post(server, "/v1/queues/park/claim", body, "claim-3", token="worker")
    assert_replay(first, again)


def test_lease_calls_replay(server):
    submit(server, None, queue="lease")
    job = claim_req(server, "lease", worker="w1").json["jobs"][0]
    path = f"/v1/jobs/{job['id']}"
    lease = job["lease"]["token"]
    s1 = post(server, f"{path}/steps", {"lease": lease, "step": "a"}, "step-a", token="worker")
    assert s1.status == 200, s1
    assert_replay(s1, post(server, f"{path}/steps", {"lease": lease, "step": "a"}, "step-a",
                           token="worker"))
    done = post(server, f"{path}/complete", {"lease": lease, "result": {"ok": 1}}, "done",
                token="worker")
    assert done.status == 200 and done.json["state"] == "succeeded", done
    again = post(server, f"{path}/complete", {"lease": lease, "result": {"ok": 1}}, "done",
                 token="worker")
    assert_replay(done, again)  # without the key: 409 lease_lost
    events = server.request("GET", f"{path}/events", token="read").json["events"]
    assert sum(1 for e in events if e["type"] == "job.succeeded") == 1


# ------------------------------------------------------------------ durability, expiry


def test_kept_replies_survive_kill_9(server):
    first = submit(server, "durable", payload={"a": [1, 2, 3]})
    assert first.status == 202
    server.kill()
    server.start(listen=f"127.0.0.1:{server.port}")
    assert_replay(first, submit(server, "durable", payload={"a": [1, 2, 3]}))
    assert_error(submit(server, "durable", payload={}), 422, "idempotency_key_reused")
    assert len(list_all_jobs(server, queue="idem")) == 1


def test_keys_expire_after_the_ttl_and_are_swept(make_server):
    server = make_server("[http]\nidempotency_ttl_s = 1\n")
    first = submit(server, "short-lived", payload={"v": 1})
    assert first.status == 202
    assert_replay(first, submit(server, "short-lived", payload={"v": 1}))
    import time

    time.sleep(1.2)
    fresh = submit(server, "short-lived", payload={"v": 2})  # a new key now: no 422
    assert fresh.status == 202, fresh
    assert fresh.json["id"] != first.json["id"]
    assert "idempotent-replayed" not in fresh.headers
    time.sleep(1.2)
    server.restart()  # the sweep runs at start, then every minute
    deadline = time.monotonic() + 5
    while count_rows(server, "idempotency") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count_rows(server, "idempotency") == 0


def test_the_ttl_is_configurable_and_checked(tmp_path):
    import subprocess

    from conftest import DROVER_BIN

    conf = tmp_path / "bad.conf"
    conf.write_text("[http]\nidempotency_ttl_s = 0\n")
    r = subprocess.run([DROVER_BIN, "serve", "--check-config", "--config", str(conf)],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "idempotency_ttl_s" in r.stderr
    out = subprocess.run([DROVER_BIN, "serve", "--example-config"], capture_output=True,
                         text=True)
    assert "idempotency_ttl_s = 86400" in out.stdout


def test_replay_body_is_valid_json_with_the_job(server):
    first = submit(server, "json-check", payload={"x": "ü"})
    again = submit(server, "json-check", payload={"x": "ü"})
    assert json.loads(again.body)["payload"] == {"x": "ü"}
    assert_replay(first, again)
