"""Contract tests for the job and queue routes (docs/api.md, DESIGN.md §1-2):
submit, get, list with filters and cursor pagination, events, cancel, queue
policies, health endpoints."""

import calendar
import datetime
import json
import time
import urllib.parse

from conftest import (
    TIME_RE,
    ULID_RE,
    UNKNOWN_ID,
    assert_error,
    field_matches,
    list_all_jobs,
)

JOB_FIELDS = {
    "id", "queue", "state", "step", "attempt", "payload", "dedup_key",
    "concurrency_key", "lock_keys", "webhook_url", "run_at", "cancel_requested",
    "result", "error", "checkpoints", "created_at", "updated_at", "seq",
}

EVENT_FIELDS = {"seq", "type", "at", "state", "prev_state", "step", "attempt", "data"}

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

DEFAULT_POLICY = {
    "mode": "pull",
    "steps": [],
    "timeout_s": 3600,
    "heartbeat_timeout_s": 60,
    "queue_timeout_s": 0,
    "max_attempts": 1,
    "backoff": {"initial_s": 5, "factor": 2.0, "max_s": 600, "jitter": 0.2},
    "retry_cap": 5,
    "concurrency_limit": 0,
    "on_limit": "queue",
    "dedup_window_s": 0,
    "on_failure": None,
    "retention_s": 0,
    "artifact_inline_max": 262144,
    "dispatch": None,
    "callback_secret": None,
}

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def iso_ms(unix_s):
    return datetime.datetime.fromtimestamp(unix_s, datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % 0


def parse_time(s):
    assert TIME_RE.match(s), s
    dt = datetime.datetime.strptime(s[:-1], "%Y-%m-%dT%H:%M:%S.%f")
    return calendar.timegm(dt.timetuple()) + dt.microsecond / 1e6


def ulid_ms(ulid):
    n = 0
    for ch in ulid[:10]:
        n = n * 32 + CROCKFORD.index(ch)
    return n


def q(path, **params):
    return path + "?" + urllib.parse.urlencode(params) if params else path


def assert_policy(actual, expected):
    for k, v in expected.items():
        if isinstance(v, float) or (isinstance(v, dict) and k == "backoff"):
            if isinstance(v, dict):
                assert set(actual[k]) >= set(v), (k, actual[k])
                for bk, bv in v.items():
                    assert abs(actual[k][bk] - bv) < 1e-9, (k, bk, actual[k])
            else:
                assert abs(actual[k] - v) < 1e-9, (k, actual[k])
        else:
            assert actual.get(k, "<missing>") == v, f"{k}: {actual.get(k, '<missing>')!r} != {v!r}"


# --------------------------------------------------------------------- submit


def test_submit_returns_202_location_and_full_job(server):
    before = time.time()
    r = server.request("POST", "/v1/jobs", {
        "queue": "provision",
        "payload": {"customer": 42},
        "concurrency_key": "user:42",
        "lock_keys": ["server:123", "net:9"],
    }, token="submit")
    after = time.time()
    assert r.status == 202, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    job = r.json
    assert set(job) >= JOB_FIELDS, f"missing: {JOB_FIELDS - set(job)}"
    assert ULID_RE.match(job["id"]), job["id"]
    loc = r.headers.get("location")
    path = f"/v1/jobs/{job['id']}"
    assert loc == path or (loc and loc.startswith("http") and loc.endswith(path)), loc
    assert job["queue"] == "provision"
    assert job["state"] == "queued"
    assert job["step"] is None
    assert job["attempt"] == 0
    assert job["payload"] == {"customer": 42}
    assert job["dedup_key"] is None
    assert job["concurrency_key"] == "user:42"
    assert job["lock_keys"] == ["server:123", "net:9"]
    assert job["webhook_url"] is None
    assert job["run_at"] is None
    assert job["cancel_requested"] is False
    assert job["result"] is None
    assert job["error"] is None
    assert job["checkpoints"] == {}
    assert job["seq"] == 1
    created = parse_time(job["created_at"])
    assert before - 2 <= created <= after + 2, (before, job["created_at"], after)
    assert job["updated_at"] == job["created_at"]
    # ULIDs are time-ordered: the id's timestamp is the creation time.
    assert abs(ulid_ms(job["id"]) / 1000.0 - created) < 2, (job["id"], job["created_at"])

    got = server.get_job(job["id"])
    assert got == job


def test_submit_minimal_defaults(server):
    job = server.submit("q1")
    assert job["payload"] == {}
    assert job["lock_keys"] == []
    assert job["concurrency_key"] is None
    assert job["state"] == "queued"


def test_submit_all_optional_fields_round_trip(server):
    job = server.submit(
        "q1", payload={"a": 1}, dedup_key="order-77", concurrency_key="user:7",
        lock_keys=["server:1"], webhook_url="https://hooks.example.com/x?y=1")
    got = server.get_job(job["id"])
    assert got["dedup_key"] == "order-77"
    assert got["concurrency_key"] == "user:7"
    assert got["lock_keys"] == ["server:1"]
    assert got["webhook_url"] == "https://hooks.example.com/x?y=1"


def test_ids_are_unique_and_time_ordered(server):
    ids = [server.submit("ord")["id"] for _ in range(20)]
    assert len(set(ids)) == 20
    assert ids == sorted(ids), "ULIDs of successive submissions must increase"


PAYLOAD = {
    "big": 9007199254740993,  # 2**53 + 1: not representable as a double
    "max": 9223372036854775807,
    "min": -9223372036854775808,
    "neg": -9007199254740993,
    "float": 1.5,
    "zero": 0,
    "t": True,
    "f": False,
    "n": None,
    "s": "ünïcödé ☃ 日本語 😀",
    "esc": "quote\" backslash\\ newline\n tab\t ctrl\u0001",
    "empty": "",
    "nested": {"list": [1, [2, [3, {"k": "v"}]], {}], "obj": {"x": {"y": {"z": []}}}},
    "ключ": "значение",
}


def test_payload_round_trips_exactly(server):
    # Sent as the exact text: raw UTF-8 for some strings, \u escapes (with a
    # surrogate pair) for others.
    body = json.dumps({"queue": "q"})[:-1] + ', "payload": ' + \
        json.dumps(PAYLOAD, ensure_ascii=False)[:-1] + \
        ', "escaped": "\\u00fc\\ud83d\\ude00\\u2603"}}'
    r = server.request("POST", "/v1/jobs", raw=body.encode("utf-8"),
                       token="submit", headers={"Content-Type": "application/json"})
    assert r.status == 202, r
    expected = dict(PAYLOAD, escaped="ü😀☃")
    # The exact integers must come back as integers, not as doubles.
    raw_text = r.body.decode("utf-8")
    assert "9007199254740993" in raw_text, raw_text
    assert "9223372036854775807" in raw_text and "-9223372036854775808" in raw_text
    assert r.json["payload"] == expected
    assert isinstance(r.json["payload"]["big"], int)
    got = server.request("GET", f"/v1/jobs/{r.json['id']}", token="read")
    assert got.status == 200
    assert "9007199254740993" in got.body.decode("utf-8")
    assert got.json["payload"] == expected
    assert r.json["payload"]["float"] == 1.5
    listed = list_all_jobs(server, queue="q")
    assert [j["payload"] for j in listed] == [expected]


def test_payload_with_nul_escape_round_trips(server):
    # "\u0000" is valid JSON; it must not be refused or truncated.
    body = b'{"queue":"q","payload":{"s":"a\\u0000b"}}'
    r = server.request("POST", "/v1/jobs", raw=body, token="submit",
                       headers={"Content-Type": "application/json"})
    assert r.status == 202, r
    assert server.get_job(r.json["id"])["payload"] == {"s": "a\x00b"}


def test_large_payload_under_limit_round_trips(server):
    payload = {"blob": "x" * 200_000, "list": list(range(5000))}
    job = server.submit("big", payload=payload)
    assert server.get_job(job["id"])["payload"] == payload


# -------------------------------------------------------------------- get


def test_get_unknown_job_404(server):
    r = server.request("GET", f"/v1/jobs/{UNKNOWN_ID}", token="read")
    assert_error(r, 404, "not_found")


# ------------------------------------------------------------------ run_at


def test_run_at_rfc3339_in_future_is_scheduled(server):
    t = int(time.time()) + 3600
    job = server.submit("later", run_at=iso_ms(t))
    assert job["state"] == "scheduled"
    assert job["run_at"] == iso_ms(t)
    got = server.get_job(job["id"])
    assert got["state"] == "scheduled" and got["run_at"] == iso_ms(t)


def test_run_at_unix_seconds_in_future_is_scheduled(server):
    t = int(time.time()) + 7200
    job = server.submit("later", run_at=t)
    assert job["state"] == "scheduled"
    assert job["run_at"] == iso_ms(t)
    assert server.get_job(job["id"])["state"] == "scheduled"


def test_run_at_with_offset_is_normalised_to_utc(server):
    job = server.submit("later", run_at="2099-01-01T02:00:00+02:00")
    assert job["state"] == "scheduled"
    assert job["run_at"] == "2099-01-01T00:00:00.000Z"


def test_run_at_in_the_past_is_queued(server):
    job = server.submit("now", run_at=int(time.time()) - 3600)
    assert job["state"] == "queued"


def test_scheduled_job_created_event(server):
    job = server.submit("later", run_at=int(time.time()) + 3600)
    r = server.request("GET", f"/v1/jobs/{job['id']}/events", token="read")
    assert r.status == 200, r
    ev = r.json["events"]
    assert len(ev) == 1
    assert ev[0]["type"] == "job.created" and ev[0]["state"] == "scheduled"
    assert ev[0]["prev_state"] is None


# -------------------------------------------------------------------- list


def test_list_newest_first_and_shape(server):
    ids = [server.submit("lq", payload={"i": i})["id"] for i in range(5)]
    r = server.request("GET", "/v1/jobs", token="read")
    assert r.status == 200, r
    assert set(r.json) >= {"jobs", "next"}
    assert r.json["next"] is None
    assert [j["id"] for j in r.json["jobs"]] == ids[::-1]
    for j in r.json["jobs"]:
        assert set(j) >= JOB_FIELDS


def test_list_empty(server):
    r = server.request("GET", "/v1/jobs", token="read")
    assert r.status == 200, r
    assert r.json["jobs"] == [] and r.json["next"] is None


def test_list_filters(server):
    a = [server.submit("qa", concurrency_key="user:1")["id"] for _ in range(3)]
    b = [server.submit("qb", concurrency_key="user:2")["id"] for _ in range(2)]
    c = server.submit("qb", concurrency_key="user:1")["id"]
    s = server.submit("qa", run_at=int(time.time()) + 3600)["id"]
    r = server.request("POST", f"/v1/jobs/{a[1]}/cancel", token="submit")
    assert r.status == 200, r

    def ids(**query):
        r = server.request("GET", q("/v1/jobs", **query), token="read")
        assert r.status == 200, r
        return [j["id"] for j in r.json["jobs"]]

    assert ids(queue="qa") == [s, a[2], a[1], a[0]]
    assert ids(queue="qb") == [c, b[1], b[0]]
    assert ids(queue="nothing-here") == []
    assert ids(key="user:1") == [c, a[2], a[1], a[0]]
    assert ids(key="user:2") == [b[1], b[0]]
    assert ids(state="canceled") == [a[1]]
    assert ids(state="scheduled") == [s]
    assert ids(state="queued") == [c, b[1], b[0], a[2], a[0]]
    assert ids(state="succeeded") == []
    assert ids(queue="qa", state="queued") == [a[2], a[0]]
    assert ids(queue="qb", key="user:1") == [c]
    assert ids(queue="qa", key="user:1", state="canceled") == [a[1]]
    for j in server.request("GET", q("/v1/jobs", queue="qa"), token="read").json["jobs"]:
        assert j["queue"] == "qa"


def test_list_cursor_pagination_walks_every_job_once(server):
    ids = [server.submit("pq", payload={"i": i})["id"] for i in range(7)]
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": 2}
        if after is not None:
            params["after"] = after
        r = server.request("GET", q("/v1/jobs", **params), token="read")
        assert r.status == 200, r
        pages += 1
        assert len(r.json["jobs"]) <= 2
        seen.extend(j["id"] for j in r.json["jobs"])
        after = r.json["next"]
        if after is None:
            break
        assert isinstance(after, str) and after, r.json
        assert pages < 10, "pagination does not end"
    assert pages == 4, pages
    assert len(seen) == len(set(seen)), "duplicates across pages"
    assert seen == ids[::-1]


def test_list_pagination_stable_while_jobs_arrive(server):
    old = [server.submit("pq")["id"] for _ in range(6)]
    r = server.request("GET", q("/v1/jobs", limit=2), token="read")
    assert r.status == 200, r
    seen = [j["id"] for j in r.json["jobs"]]
    after = r.json["next"]
    new = [server.submit("pq")["id"] for _ in range(3)]
    for _ in range(10):
        if after is None:
            break
        r = server.request("GET", q("/v1/jobs", limit=2, after=after), token="read")
        assert r.status == 200, r
        seen.extend(j["id"] for j in r.json["jobs"])
        after = r.json["next"]
    assert seen == old[::-1], "a cursor walk must not skip, repeat or pick up newer jobs"
    assert not set(new) & set(seen)


def test_list_pagination_with_filter(server):
    want = []
    for i in range(9):
        j = server.submit("fa" if i % 2 == 0 else "fb")
        if i % 2 == 0:
            want.append(j["id"])
    got = list_all_jobs(server, queue="fa", limit=2)
    assert [j["id"] for j in got] == want[::-1]


def test_list_limit_default_and_bounds(server):
    for _ in range(3):
        server.submit("lim")
    r = server.request("GET", q("/v1/jobs", limit=1), token="read")
    assert r.status == 200 and len(r.json["jobs"]) == 1 and r.json["next"] is not None
    r = server.request("GET", q("/v1/jobs", limit=500), token="read")
    assert r.status == 200 and len(r.json["jobs"]) == 3
    for bad in ("0", "501", "-1", "abc", ""):
        r = server.request("GET", "/v1/jobs?limit=" + bad, token="read")
        assert_error(r, 400, "bad_request")


def test_list_default_limit_is_50(server):
    for i in range(55):
        server.submit("many", payload={"i": i})
    r = server.request("GET", "/v1/jobs", token="read")
    assert r.status == 200, r
    assert len(r.json["jobs"]) == 50 and r.json["next"] is not None
    r2 = server.request("GET", q("/v1/jobs", after=r.json["next"]), token="read")
    assert len(r2.json["jobs"]) == 5 and r2.json["next"] is None


def test_list_bad_state_filter(server):
    r = server.request("GET", q("/v1/jobs", state="sleeping"), token="read")
    assert_error(r, 400, "bad_request")


# ------------------------------------------------------------------ events


def test_events_created_then_canceled(server):
    job = server.submit("ev")
    r = server.request("GET", f"/v1/jobs/{job['id']}/events", token="read")
    assert r.status == 200, r
    assert r.json["next"] is None
    (e1,) = r.json["events"]
    assert set(e1) >= EVENT_FIELDS, e1
    assert e1["seq"] == 1 and e1["type"] == "job.created"
    assert e1["state"] == "queued" and e1["prev_state"] is None
    assert e1["attempt"] == 0 and e1["step"] is None
    assert TIME_RE.match(e1["at"]), e1

    r = server.request("POST", f"/v1/jobs/{job['id']}/cancel", token="submit")
    assert r.status == 200, r
    assert r.json["seq"] == 2
    r = server.request("GET", f"/v1/jobs/{job['id']}/events", token="read")
    evs = r.json["events"]
    assert [e["seq"] for e in evs] == [1, 2]
    e2 = evs[1]
    assert e2["type"] == "job.canceled"
    assert e2["state"] == "canceled" and e2["prev_state"] == "queued"
    assert parse_time(e2["at"]) >= parse_time(e1["at"])

    r = server.request("GET", f"/v1/jobs/{job['id']}/events?after=1", token="read")
    assert [e["seq"] for e in r.json["events"]] == [2] and r.json["next"] is None
    r = server.request("GET", f"/v1/jobs/{job['id']}/events?after=2", token="read")
    assert r.json["events"] == [] and r.json["next"] is None
    r = server.request("GET", f"/v1/jobs/{job['id']}/events?limit=1", token="read")
    assert [e["seq"] for e in r.json["events"]] == [1]
    assert r.json["next"] == 1
    r = server.request("GET", f"/v1/jobs/{job['id']}/events?limit=1&after=1", token="read")
    assert [e["seq"] for e in r.json["events"]] == [2]


def test_events_bad_params_and_unknown_job(server):
    job = server.submit("ev")
    for bad in ("limit=0", "limit=1001", "limit=x", "after=-1", "after=x"):
        r = server.request("GET", f"/v1/jobs/{job['id']}/events?{bad}", token="read")
        assert_error(r, 400, "bad_request")
    r = server.request("GET", f"/v1/jobs/{UNKNOWN_ID}/events", token="read")
    assert_error(r, 404, "not_found")


# ------------------------------------------------------------------ cancel


def test_cancel_queued_then_again_409(server):
    job = server.submit("c")
    r = server.request("POST", f"/v1/jobs/{job['id']}/cancel", token="submit")
    assert r.status == 200, r
    assert r.json["id"] == job["id"] and r.json["state"] == "canceled"
    assert parse_time(r.json["updated_at"]) >= parse_time(job["created_at"])
    got = server.get_job(job["id"])
    assert got["state"] == "canceled" and got["seq"] == 2

    r = server.request("POST", f"/v1/jobs/{job['id']}/cancel", token="submit")
    assert_error(r, 409, "illegal_transition")
    got2 = server.get_job(job["id"])
    assert got2 == got, "a refused cancel changed the job"
    r = server.request("GET", f"/v1/jobs/{job['id']}/events", token="read")
    assert len(r.json["events"]) == 2


def test_cancel_with_reason_body(server):
    job = server.submit("c")
    r = server.request("POST", f"/v1/jobs/{job['id']}/cancel", {"reason": "customer refunded"},
                       token="submit")
    assert r.status == 200, r
    assert r.json["state"] == "canceled"
    job2 = server.submit("c")
    r = server.request("POST", f"/v1/jobs/{job2['id']}/cancel", {}, token="submit")
    assert r.status == 200 and r.json["state"] == "canceled", r


def test_cancel_scheduled(server):
    job = server.submit("c", run_at=int(time.time()) + 3600)
    assert job["state"] == "scheduled"
    r = server.request("POST", f"/v1/jobs/{job['id']}/cancel", token="submit")
    assert r.status == 200, r
    assert r.json["state"] == "canceled"
    r = server.request("GET", f"/v1/jobs/{job['id']}/events", token="read")
    evs = r.json["events"]
    assert [e["type"] for e in evs] == ["job.created", "job.canceled"]
    assert evs[1]["prev_state"] == "scheduled"


def test_cancel_unknown_job_404(server):
    r = server.request("POST", f"/v1/jobs/{UNKNOWN_ID}/cancel", token="submit")
    assert_error(r, 404, "not_found")


# ------------------------------------------------------------------ queues


def test_queue_defaults_for_unconfigured_queue(server):
    r = server.request("GET", "/v1/queues/never-configured", token="read")
    assert r.status == 200, r
    assert_policy(r.json, DEFAULT_POLICY)


FULL_POLICY = {
    "mode": "http",
    "steps": ["vm_created", "ansible_started", "ansible_complete"],
    "timeout_s": 7200,
    "heartbeat_timeout_s": 30,
    "queue_timeout_s": 600,
    "max_attempts": 3,
    "backoff": {"initial_s": 10, "factor": 3.0, "max_s": 900, "jitter": 0.5},
    "retry_cap": 7,
    "concurrency_limit": 1,
    "on_limit": "reject",
    "dedup_window_s": 86400,
    "on_failure": "cleanup-vm",
    "retention_s": 2592000,
    "artifact_inline_max": 1024,
    "dispatch": {
        "url": "https://ci.example.com/repos/acme/infra/dispatches",
        "method": "POST",
        "headers": {"Authorization": "Bearer ghp_supersecret", "Accept": "application/json"},
        "body": {"ref": "main", "inputs": {"job": "{{job.id}}", "cb": "{{callback.url}}",
                                           "n": 3, "list": [1, "two", None, True]}},
    },
    "callback_secret": SECRET,
}


def test_queue_put_full_policy_round_trip(server):
    r = server.request("PUT", "/v1/queues/provision", FULL_POLICY, token="admin")
    assert r.status == 200, r
    assert_policy(r.json, FULL_POLICY)
    r = server.request("GET", "/v1/queues/provision", token="admin")
    assert r.status == 200, r
    assert_policy(r.json, FULL_POLICY)
    # other queues keep their defaults
    r = server.request("GET", "/v1/queues/other", token="admin")
    assert_policy(r.json, DEFAULT_POLICY)


def test_queue_put_partial_takes_defaults(server):
    r = server.request("PUT", "/v1/queues/p", {"max_attempts": 3, "retry_cap": 9}, token="admin")
    assert r.status == 200, r
    assert_policy(r.json, dict(DEFAULT_POLICY, max_attempts=3, retry_cap=9))
    # A second PUT is the whole policy: what it leaves out goes back to defaults.
    r = server.request("PUT", "/v1/queues/p", FULL_POLICY, token="admin")
    assert r.status == 200, r
    r = server.request("PUT", "/v1/queues/p", {"timeout_s": 10}, token="admin")
    assert r.status == 200, r
    assert_policy(r.json, dict(DEFAULT_POLICY, timeout_s=10))
    r = server.request("GET", "/v1/queues/p", token="read")
    assert_policy(r.json, dict(DEFAULT_POLICY, timeout_s=10))
    r = server.request("PUT", "/v1/queues/p", {}, token="admin")
    assert r.status == 200, r
    assert_policy(r.json, DEFAULT_POLICY)


def test_queue_boundaries_accepted(server):
    ok = [
        {"timeout_s": 0}, {"timeout_s": 604800}, {"heartbeat_timeout_s": 86400},
        {"queue_timeout_s": 604800}, {"max_attempts": 100, "retry_cap": 1000},
        {"concurrency_limit": 100000}, {"dedup_window_s": 31536000},
        {"retention_s": 315360000}, {"artifact_inline_max": 0},
        {"artifact_inline_max": 16777216},
        {"steps": ["s%d" % i for i in range(64)]},
        {"backoff": {"initial_s": 0, "factor": 1, "max_s": 0, "jitter": 0}},
        {"backoff": {"initial_s": 86400, "factor": 10, "max_s": 86400, "jitter": 1}},
        {"max_attempts": 5, "retry_cap": 5},
        {"on_failure": None, "dispatch": None, "callback_secret": None},
    ]
    for body in ok:
        r = server.request("PUT", "/v1/queues/b", body, token="admin")
        assert r.status == 200, (body, r)


def test_queue_secrets_redacted_for_non_admins(server):
    r = server.request("PUT", "/v1/queues/sec", FULL_POLICY, token="admin")
    assert r.status == 200, r
    assert r.json["callback_secret"] == SECRET
    assert r.json["dispatch"]["headers"]["Authorization"] == "Bearer ghp_supersecret"
    for role in ("read", "submit", "worker"):
        r = server.request("GET", "/v1/queues/sec", token=role)
        assert r.status == 200, (role, r)
        assert r.json["callback_secret"] == "<redacted>", role
        assert r.json["dispatch"]["headers"] == {
            "Authorization": "<redacted>", "Accept": "<redacted>"}, role
        assert "ghp_supersecret" not in r.body.decode(), role
        assert SECRET not in r.body.decode(), role
        # the rest of the policy is shown
        assert r.json["dispatch"]["url"] == FULL_POLICY["dispatch"]["url"]
        assert r.json["steps"] == FULL_POLICY["steps"]
    r = server.request("GET", "/v1/queues/sec", token="admin")
    assert r.json["callback_secret"] == SECRET


BAD_POLICIES = [
    ({"timeout_s": "10"}, "timeout_s"),
    ({"timeout_s": 1.5}, "timeout_s"),
    ({"timeout_s": True}, "timeout_s"),
    ({"timeout_s": -1}, "timeout_s"),
    ({"timeout_s": 604801}, "timeout_s"),
    ({"heartbeat_timeout_s": 86401}, "heartbeat_timeout_s"),
    ({"queue_timeout_s": -5}, "queue_timeout_s"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"max_attempts": 101}, "max_attempts"),
    ({"max_attempts": 10, "retry_cap": 5}, "retry_cap"),
    ({"retry_cap": 1001}, "retry_cap"),
    ({"concurrency_limit": 100001}, "concurrency_limit"),
    ({"concurrency_limit": -1}, "concurrency_limit"),
    ({"on_limit": "maybe"}, "on_limit"),
    ({"dedup_window_s": 31536001}, "dedup_window_s"),
    ({"retention_s": -1}, "retention_s"),
    ({"artifact_inline_max": 16777217}, "artifact_inline_max"),
    ({"mode": "push"}, "mode"),
    ({"mode": 1}, "mode"),
    ({"steps": "vm_created"}, "steps"),
    ({"steps": [1, 2]}, "steps"),
    ({"steps": ["a", "a"]}, "steps"),
    ({"steps": ["s%d" % i for i in range(65)]}, "steps"),
    ({"backoff": 5}, "backoff"),
    ({"backoff": {"initial_s": 5, "factor": 0.5, "max_s": 600, "jitter": 0.2}}, "backoff"),
    ({"backoff": {"initial_s": 5, "factor": 11, "max_s": 600, "jitter": 0.2}}, "backoff"),
    ({"backoff": {"initial_s": 100, "factor": 2, "max_s": 50, "jitter": 0.2}}, "backoff"),
    ({"backoff": {"initial_s": 5, "factor": 2, "max_s": 600, "jitter": 1.5}}, "backoff"),
    ({"backoff": {"initial_s": 86401, "factor": 2, "max_s": 90000, "jitter": 0}}, "backoff"),
    ({"on_failure": 7}, "on_failure"),
    ({"on_failure": "bad name!"}, "on_failure"),
    ({"colour": "blue"}, "colour"),
    ({"mode": "http"}, ("dispatch", "mode")),
    ({"mode": "http", "dispatch": None}, ("dispatch", "mode")),
    ({"mode": "http", "dispatch": {"url": "ftp://x.example.com/", "method": "POST"}}, "dispatch"),
    ({"mode": "http", "dispatch": {"url": "https://x.example.com/", "method": "GET"}}, "dispatch"),
    ({"mode": "http", "dispatch": {"url": "https://x.example.com/", "method": "POST",
                                   "headers": {"X": 1}}}, "dispatch"),
    ({"mode": "http", "dispatch": {"method": "POST"}}, "dispatch"),
    # dispatch templates (src/template.h): the field names where the placeholder is
    ({"mode": "http", "dispatch": {"url": "https://x.example.com/",
                                   "body": {"inputs": {"job_id": "{{job.name}}"}}}},
     "dispatch.body.inputs.job_id"),
    ({"mode": "http", "dispatch": {"url": "https://x.example.com/{{job.id"}}, "dispatch.url"),
    ({"mode": "http", "dispatch": {"url": "https://{{payload.host}}/run"}}, "dispatch.url"),
    ({"mode": "http", "dispatch": {"url": "https://x.example.com/",
                                   "headers": {"Authorization": "Bearer {{env.}}"}}},
     "dispatch.headers.Authorization"),
    ({"callback_secret": "secret123"}, "callback_secret"),
    ({"callback_secret": "whsec_!!!not base64!!!"}, "callback_secret"),
    ({"callback_secret": 12345}, "callback_secret"),
]


def test_queue_put_validation_names_the_field(server):
    r = server.request("PUT", "/v1/queues/v", {"timeout_s": 77}, token="admin")
    assert r.status == 200, r
    for body, field in BAD_POLICIES:
        r = server.request("PUT", "/v1/queues/v", body, token="admin")
        fields = field if isinstance(field, tuple) else (field,)
        assert r.status == 400, (body, r)
        err = assert_error(r, 400, "invalid_field")
        assert any(f for f in fields if field_matches(err.get("field"), f)), (body, err)
        # nothing changed
        g = server.request("GET", "/v1/queues/v", token="admin")
        assert_policy(g.json, dict(DEFAULT_POLICY, timeout_s=77))


def test_queue_put_malformed_json(server):
    r = server.request("PUT", "/v1/queues/v", raw=b'{"timeout_s": ', token="admin",
                       headers={"Content-Type": "application/json"})
    assert_error(r, 400, "malformed_json")


def test_queue_policy_does_not_leak_into_jobs_of_other_queues(server):
    server.request("PUT", "/v1/queues/x", {"max_attempts": 2}, token="admin")
    job = server.submit("y")
    assert job["state"] == "queued"


# ------------------------------------------------------------------ health


def test_healthz_and_readyz(server):
    r = server.request("GET", "/healthz", token=None)
    assert r.status == 200 and r.json == {"status": "ok"}, r
    assert r.headers.get("content-type", "").startswith("application/json")
    r = server.request("GET", "/readyz", token=None)
    assert r.status == 200 and r.json == {"status": "ready"}, r
    # a token does not hurt
    assert server.request("GET", "/healthz", token="read").status == 200
