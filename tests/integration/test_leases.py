"""Contract tests for the lease calls (docs/api.md, "Workers: claims and
leases"): heartbeat, steps, complete, fail — fencing by lease token, steps as
checkpoints, results and errors, and the events they leave."""

import time

import pytest

from conftest import (
    TIME_RE,
    UNKNOWN_ID,
    assert_error,
    claim_one,
    job_events,
    lease_call,
    poll_job,
    put_queue,
    ts_parse,
)

ACTIONS = ["heartbeat", "steps", "complete", "fail"]


def good_fields(action):
    """A valid body (besides the lease) for each lease call."""
    return {
        "heartbeat": {},
        "steps": {"step": "s1", "data": {"k": 1}},
        "complete": {"result": {"ok": True}},
        "fail": {"error": {"message": "boom"}},
    }[action]


def claimed(server, queue="lq", **policy):
    if policy:
        put_queue(server, queue, **policy)
    sub = server.submit(queue, payload={"p": 1})
    job = claim_one(server, queue)
    assert job["id"] == sub["id"]
    return job


# --------------------------------------------------------------- heartbeat


def test_heartbeat_extends_lease(server):
    job = claimed(server, heartbeat_timeout_s=30)
    e0 = ts_parse(job["lease"]["expires_at"])
    time.sleep(1.1)
    t0 = time.time()
    r = lease_call(server, job["id"], "heartbeat", job["lease"]["token"])
    t1 = time.time()
    assert r.status == 200, r
    assert r.json["cancel_requested"] is False, r.json
    lease = r.json["lease"]
    assert isinstance(lease["token"], str) and lease["token"], lease
    assert TIME_RE.match(lease["expires_at"]), lease
    e1 = ts_parse(lease["expires_at"])
    assert e1 >= e0 + 0.9, f"heartbeat did not extend the lease: {e0} -> {e1}"
    assert t0 + 30 - 2 <= e1 <= t1 + 30 + 2, lease
    # The token is bound to (job, attempt): the one from the claim still works.
    r = lease_call(server, job["id"], "heartbeat", job["lease"]["token"])
    assert r.status == 200, r
    r = lease_call(server, job["id"], "heartbeat", lease["token"])
    assert r.status == 200, r
    assert server.get_job(job["id"])["state"] == "running"


def test_heartbeats_keep_short_lease_alive(server):
    job = claimed(server, heartbeat_timeout_s=1, timeout_s=0)
    token = job["lease"]["token"]
    start = time.monotonic()
    while time.monotonic() - start < 2.5:
        r = lease_call(server, job["id"], "heartbeat", token)
        assert r.status == 200, (time.monotonic() - start, r)
        time.sleep(0.3)
    assert server.get_job(job["id"])["state"] == "running"
    r = lease_call(server, job["id"], "complete", token)
    assert r.status == 200 and r.json["state"] == "succeeded", r


def test_steps_renew_the_lease(server):
    job = claimed(server, heartbeat_timeout_s=1, timeout_s=0)
    token = job["lease"]["token"]
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < 2.5:
        r = lease_call(server, job["id"], "steps", token, step=f"s{n}", data=n)
        assert r.status == 200, (time.monotonic() - start, r)
        n += 1
        time.sleep(0.3)
    got = server.get_job(job["id"])
    assert got["state"] == "running", got


# ------------------------------------------------------------ stale tokens


@pytest.mark.parametrize("action", ACTIONS)
def test_wrong_token_is_lease_lost_and_changes_nothing(server, action):
    job = claimed(server)
    before = server.get_job(job["id"])
    ev_before = job_events(server, job["id"])
    for bad in ("bogus", job["lease"]["token"] + "x", job["lease"]["token"][:-1]):
        r = lease_call(server, job["id"], action, bad, **good_fields(action))
        assert_error(r, 409, "lease_lost")
    assert server.get_job(job["id"]) == before
    assert job_events(server, job["id"]) == ev_before
    # The real token still works.
    r = lease_call(server, job["id"], action, job["lease"]["token"], **good_fields(action))
    assert r.status == 200, r


@pytest.mark.parametrize("action", ACTIONS)
def test_other_jobs_token_is_lease_lost(server, action):
    a = claimed(server)
    b = claimed(server)
    before = server.get_job(a["id"])
    r = lease_call(server, a["id"], action, b["lease"]["token"], **good_fields(action))
    assert_error(r, 409, "lease_lost")
    assert server.get_job(a["id"]) == before


@pytest.mark.parametrize("action", ACTIONS)
def test_lease_call_on_unclaimed_job_409(server, action):
    sub = server.submit("lq")
    r = lease_call(server, sub["id"], action, "whatever", **good_fields(action))
    assert_error(r, 409, {"lease_lost", "illegal_transition"})
    assert server.get_job(sub["id"]) == sub


@pytest.mark.parametrize("action", ACTIONS)
def test_token_of_ended_attempt_is_lease_lost(server, action):
    job = claimed(server)
    token = job["lease"]["token"]
    r = lease_call(server, job["id"], "complete", token, result={"n": 1})
    assert r.status == 200 and r.json["state"] == "succeeded", r
    done = server.get_job(job["id"])
    r = lease_call(server, job["id"], action, token, **good_fields(action))
    assert_error(r, 409, "lease_lost")
    assert server.get_job(job["id"]) == done


@pytest.mark.parametrize("action", ACTIONS)
def test_old_token_after_manual_retry_is_lease_lost(server, action):
    job = claimed(server, "rq", max_attempts=1)
    t1 = job["lease"]["token"]
    r = lease_call(server, job["id"], "fail", t1, error={"message": "first"})
    assert r.status == 200 and r.json["state"] == "failed", r
    r = server.request("POST", f"/v1/jobs/{job['id']}/retry", token="submit")
    assert r.status == 200 and r.json["state"] == "queued", r
    # Even before the new attempt starts, the old token is dead.
    queued = server.get_job(job["id"])
    r = lease_call(server, job["id"], action, t1, **good_fields(action))
    assert_error(r, 409, {"lease_lost", "illegal_transition"})
    assert server.get_job(job["id"]) == queued
    job2 = claim_one(server, "rq")
    assert job2["id"] == job["id"] and job2["attempt"] == 2, job2
    t2 = job2["lease"]["token"]
    assert t2 != t1, "a new attempt must get a new fencing token"
    running = server.get_job(job["id"])
    r = lease_call(server, job["id"], action, t1, **good_fields(action))
    assert_error(r, 409, "lease_lost")
    assert server.get_job(job["id"]) == running
    r = lease_call(server, job["id"], action, t2, **good_fields(action))
    assert r.status == 200, r


def test_old_token_after_automatic_retry_is_lease_lost(server):
    job = claimed(server, "arq", max_attempts=2,
                  backoff={"initial_s": 0, "factor": 1, "max_s": 0, "jitter": 0})
    t1 = job["lease"]["token"]
    r = lease_call(server, job["id"], "fail", t1, error={"message": "flaky"})
    assert r.status == 200 and r.json["state"] == "queued", r
    job2 = claim_one(server, "arq")
    assert job2["attempt"] == 2
    r = lease_call(server, job["id"], "complete", t1, result="stale")
    assert_error(r, 409, "lease_lost")
    got = server.get_job(job["id"])
    assert got["state"] == "running" and got["result"] is None, got
    r = lease_call(server, job["id"], "complete", job2["lease"]["token"], result="fresh")
    assert r.status == 200 and r.json["result"] == "fresh", r


# ------------------------------------------------------------------- steps


def test_steps_stored_as_checkpoints_in_declared_order(server):
    put_queue(server, "prov", steps=["vm_created", "ansible_started", "ansible_complete"])
    server.submit("prov", payload={"customer": 7})
    job = claim_one(server, "prov")
    tok = job["lease"]["token"]

    r = lease_call(server, job["id"], "steps", tok, step="vm_created", data={"vm": "i-123"})
    assert r.status == 200, r
    assert r.json["id"] == job["id"]
    assert r.json["step"] == "vm_created"
    assert r.json["checkpoints"] == {"vm_created": {"vm": "i-123"}}, r.json
    seq1 = r.json["seq"]
    n_events = len(job_events(server, job["id"]))

    # An identical repeat is harmless: same job, no extra event.
    r = lease_call(server, job["id"], "steps", tok, step="vm_created", data={"vm": "i-123"})
    assert r.status == 200, r
    assert r.json["step"] == "vm_created"
    assert r.json["checkpoints"] == {"vm_created": {"vm": "i-123"}}
    assert r.json["seq"] == seq1, "a duplicate step report produced an event"
    assert len(job_events(server, job["id"])) == n_events

    # Out of order: the last step first, then the middle one.
    r = lease_call(server, job["id"], "steps", tok, step="ansible_complete", data=[1, 2])
    assert r.status == 200 and r.json["step"] == "ansible_complete", r
    r = lease_call(server, job["id"], "steps", tok, step="ansible_started", data="log-1")
    assert r.status == 200, r
    assert r.json["step"] == "ansible_complete", "step must be the furthest in declared order"
    got = server.get_job(job["id"])
    assert got["step"] == "ansible_complete"
    assert got["checkpoints"] == {"vm_created": {"vm": "i-123"},
                                  "ansible_complete": [1, 2],
                                  "ansible_started": "log-1"}, got
    assert got["state"] == "running"

    evs = job_events(server, job["id"])
    steps = [e for e in evs if e["type"] == "job.step"]
    assert [e["step"] for e in steps] == ["vm_created", "ansible_complete", "ansible_started"], \
        steps


def test_steps_without_declared_order_latest_wins(server):
    job = claimed(server, "free")
    tok = job["lease"]["token"]
    for name in ("x", "y"):
        r = lease_call(server, job["id"], "steps", tok, step=name, data={"n": name})
        assert r.status == 200 and r.json["step"] == name, r
    seq = r.json["seq"]
    # Repeating "x" with the same data changes nothing: step stays "y".
    r = lease_call(server, job["id"], "steps", tok, step="x", data={"n": "x"})
    assert r.status == 200, r
    assert r.json["step"] == "y" and r.json["seq"] == seq, r.json
    r = lease_call(server, job["id"], "steps", tok, step="z")  # no data
    assert r.status == 200 and r.json["step"] == "z", r
    assert set(r.json["checkpoints"]) == {"x", "y", "z"}, r.json


def test_step_data_round_trips_exactly(server):
    job = claimed(server, "exact")
    data = {"big": 9007199254740993, "s": "ünï ☃", "nested": [None, True, 1.5, {"a": []}]}
    r = lease_call(server, job["id"], "steps", job["lease"]["token"], step="s", data=data)
    assert r.status == 200, r
    assert "9007199254740993" in r.body.decode()
    assert server.get_job(job["id"])["checkpoints"] == {"s": data}


@pytest.mark.parametrize("fields,field", [
    ({}, "step"),
    ({"step": ""}, "step"),
    ({"step": "s" * 65}, "step"),
    ({"step": 5}, "step"),
    ({"step": None}, "step"),
    ({"step": "s", "bogus": 1}, "bogus"),
])
def test_steps_validation(server, fields, field):
    job = claimed(server, "sv")
    before = server.get_job(job["id"])
    r = lease_call(server, job["id"], "steps", job["lease"]["token"], **fields)
    assert_error(r, 400, "invalid_field", field=field)
    assert server.get_job(job["id"]) == before


def test_step_name_64_bytes_accepted(server):
    job = claimed(server, "sv")
    r = lease_call(server, job["id"], "steps", job["lease"]["token"], step="s" * 64, data=1)
    assert r.status == 200 and r.json["step"] == "s" * 64, r


@pytest.mark.parametrize("action", ACTIONS)
def test_missing_or_bad_lease_field_400(server, action):
    job = claimed(server)
    before = server.get_job(job["id"])
    r = lease_call(server, job["id"], action, None, **good_fields(action))
    assert_error(r, 400, "invalid_field", field="lease")
    r = lease_call(server, job["id"], action, 12345, **good_fields(action))
    assert_error(r, 400, "invalid_field", field="lease")
    assert server.get_job(job["id"]) == before


@pytest.mark.parametrize("action", ACTIONS)
def test_lease_call_unknown_and_malformed_id(server, action):
    r = lease_call(server, UNKNOWN_ID, action, "tok", **good_fields(action))
    assert_error(r, 404, "not_found")
    r = lease_call(server, "not-a-ulid", action, "tok", **good_fields(action))
    assert_error(r, 400, "bad_request")


# ---------------------------------------------------------- complete, fail


def test_complete_succeeds_with_result_and_events(server):
    put_queue(server, "done", steps=["a", "b"])
    sub = server.submit("done")
    job = claim_one(server, "done")
    tok = job["lease"]["token"]
    assert lease_call(server, job["id"], "steps", tok, step="a", data=1).status == 200
    r = lease_call(server, job["id"], "complete", tok,
                   result={"vm": "i-9", "ip": "10.0.0.9", "n": 9007199254740993})
    assert r.status == 200, r
    assert r.json["state"] == "succeeded", r.json
    assert r.json["result"] == {"vm": "i-9", "ip": "10.0.0.9", "n": 9007199254740993}
    assert r.json["error"] is None
    got = server.get_job(job["id"])
    assert got == r.json
    evs = job_events(server, job["id"])
    types = [e["type"] for e in evs]
    assert types == ["job.created", "job.running", "job.step", "job.succeeded"], types
    seqs = [e["seq"] for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    assert seqs[0] == sub["seq"] and seqs[-1] == got["seq"], (seqs, got["seq"])
    run = evs[1]
    assert run["state"] == "running" and run["prev_state"] == "queued" and run["attempt"] == 1
    assert evs[2]["step"] == "a"
    assert evs[3]["state"] == "succeeded" and evs[3]["prev_state"] == "running"


def test_complete_without_result(server):
    job = claimed(server, "nores")
    r = lease_call(server, job["id"], "complete", job["lease"]["token"])
    assert r.status == 200 and r.json["state"] == "succeeded" and r.json["result"] is None, r


def test_fail_records_error_and_events(server):
    put_queue(server, "bad", steps=["a", "b"])
    server.submit("bad")
    job = claim_one(server, "bad")
    tok = job["lease"]["token"]
    assert lease_call(server, job["id"], "steps", tok, step="a").status == 200
    before = time.time()
    r = lease_call(server, job["id"], "fail", tok,
                   error={"message": "ansible exited 2", "step": "b"})
    assert r.status == 200, r
    job2 = r.json
    assert job2["state"] == "failed", job2
    err = job2["error"]
    assert err["kind"] == "error", err
    assert err["message"] == "ansible exited 2"
    assert err["step"] == "b"
    assert "run_id" in err, err
    assert abs(ts_parse(err["at"]) - before) < 3, err
    assert job2["result"] is None
    assert server.get_job(job["id"]) == job2
    evs = job_events(server, job["id"])
    types = [e["type"] for e in evs]
    assert types == ["job.created", "job.running", "job.step", "job.failed"], types
    seqs = [e["seq"] for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert evs[-1]["state"] == "failed" and evs[-1]["prev_state"] == "running"
    assert evs[-1]["seq"] == job2["seq"]


@pytest.mark.parametrize("fields,field", [
    ({}, "error"),
    ({"error": "boom"}, "error"),
    ({"error": {}}, "error"),
    ({"error": {"message": 5}}, "error"),
    ({"error": {"message": "m", "retryable": "yes"}}, "error"),
    ({"error": {"message": "m", "step": 7}}, "error"),
])
def test_fail_validation(server, fields, field):
    job = claimed(server, "fv")
    before = server.get_job(job["id"])
    r = lease_call(server, job["id"], "fail", job["lease"]["token"], **fields)
    assert_error(r, 400, "invalid_field", field=field)
    assert server.get_job(job["id"]) == before


def test_second_complete_or_fail_after_end_is_refused(server):
    job = claimed(server, "twice")
    tok = job["lease"]["token"]
    r = lease_call(server, job["id"], "fail", tok, error={"message": "x"})
    assert r.status == 200 and r.json["state"] == "failed", r
    ended = server.get_job(job["id"])
    assert_error(lease_call(server, job["id"], "complete", tok, result=1), 409, "lease_lost")
    assert_error(lease_call(server, job["id"], "fail", tok, error={"message": "y"}), 409,
                 "lease_lost")
    assert server.get_job(job["id"]) == ended


# ------------------------------------------------------------------- roles


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("role", ["submit", "read"])
def test_lease_calls_forbidden_roles(server, action, role):
    job = claimed(server)
    before = server.get_job(job["id"])
    r = lease_call(server, job["id"], action, job["lease"]["token"], token=role,
                   **good_fields(action))
    assert_error(r, 403, "forbidden")
    assert server.get_job(job["id"]) == before


@pytest.mark.parametrize("action", ACTIONS)
def test_lease_calls_admin_allowed(server, action):
    job = claimed(server)
    r = lease_call(server, job["id"], action, job["lease"]["token"], token="admin",
                   **good_fields(action))
    assert r.status == 200, r


def test_heartbeat_on_running_job_does_not_change_it_visibly(server):
    job = claimed(server, heartbeat_timeout_s=30)
    before = server.get_job(job["id"])
    r = lease_call(server, job["id"], "heartbeat", job["lease"]["token"])
    assert r.status == 200, r
    after = poll_job(server, job["id"], lambda j: True, timeout=1)
    for k in ("state", "attempt", "step", "checkpoints", "result", "error", "seq"):
        assert after[k] == before[k], (k, before, after)


def test_lease_token_is_not_exposed_to_readers(server):
    job = claimed(server, "secret")
    token = job["lease"]["token"]
    lease_call(server, job["id"], "steps", token, step="s", data=1)
    for path in (f"/v1/jobs/{job['id']}", "/v1/jobs?queue=secret",
                 f"/v1/jobs/{job['id']}/events"):
        r = server.request("GET", path, token="read")
        assert r.status == 200, r
        assert token.encode() not in r.body, f"{path} shows the lease token to a reader"


def test_same_step_data_with_other_key_order_is_a_duplicate(server):
    job = claimed(server, "ko")
    tok = job["lease"]["token"]
    raw1 = b'{"lease": "%s", "step": "s", "data": {"a": 1, "b": [1, 2], "c": {"x": 1, "y": 2}}}'
    raw2 = b'{"data": {"c": {"y": 2, "x": 1}, "b": [1, 2], "a": 1}, "step": "s", "lease": "%s"}'
    h = {"Content-Type": "application/json"}
    r = server.request("POST", f"/v1/jobs/{job['id']}/steps", raw=raw1 % tok.encode(),
                       token="worker", headers=h)
    assert r.status == 200, r
    seq = r.json["seq"]
    n = len(job_events(server, job["id"]))
    r = server.request("POST", f"/v1/jobs/{job['id']}/steps", raw=raw2 % tok.encode(),
                       token="worker", headers=h)
    assert r.status == 200, r
    assert r.json["seq"] == seq, "the same data with its keys in another order made an event"
    assert len(job_events(server, job["id"])) == n



def test_worker_cannot_choose_error_kind(server):
    job = claimed(server, "kind")
    r = lease_call(server, job["id"], "fail", job["lease"]["token"],
                   error={"message": "m", "kind": "timeout"})
    if r.status == 400:
        assert_error(r, 400, "invalid_field", field="error")
        assert server.get_job(job["id"])["state"] == "running"
    else:
        assert r.status == 200, r
        assert r.json["error"]["kind"] == "error", \
            f"a worker's fail recorded error.kind {r.json['error']['kind']!r}"


def test_fail_error_unknown_field_400(server):
    job = claimed(server, "kind")
    before = server.get_job(job["id"])
    r = lease_call(server, job["id"], "fail", job["lease"]["token"],
                   error={"message": "m", "bogus": 1})
    assert_error(r, 400, "invalid_field", field="error")
    assert server.get_job(job["id"]) == before
