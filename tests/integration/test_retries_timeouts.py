"""Contract tests for retries, timeouts and cancellation (docs/api.md,
"Retries, timeouts and cancellation", POST /v1/jobs/{id}/retry): backoff with
jitter and cap, retry_cap, checkpoints across attempts, timeout_s,
heartbeat_timeout_s, queue_timeout_s, run_at, cancel of running and waiting
jobs. Policies use seconds-scale values so each test stays short."""

import time

import pytest

from conftest import (
    assert_error,
    claim,
    claim_one,
    job_events,
    lease_call,
    list_all_jobs,
    poll_job,
    put_queue,
    ts_format,
    ts_parse,
)

TOL_EARLY = 0.1   # the server may answer a little before our clock says
TOL_LATE = 0.3    # timer slack plus HTTP round trips


def fail(server, job, message="boom", **extra):
    r = lease_call(server, job["id"], "fail", job["lease"]["token"],
                   error={"message": message, **extra})
    assert r.status == 200, r
    return r.json


def transitions(server, job_id):
    return [e["type"] for e in job_events(server, job_id)
            if e["type"] not in ("job.step", "job.cancel_requested")]


def wait_state(server, job_id, state, timeout):
    return poll_job(server, job_id, lambda j: j["state"] == state, timeout,
                    what=f"state {state}")


# ----------------------------------------------------------------- backoff


def test_backoff_with_jitter_then_final_failure(server):
    put_queue(server, "bo", max_attempts=3,
              backoff={"initial_s": 1, "factor": 2, "max_s": 60, "jitter": 0.5})
    sub = server.submit("bo", payload={"n": 1})

    # Attempt 1 fails: scheduled for 1 s less up to 50 %.
    j1 = claim_one(server, "bo")
    assert j1["attempt"] == 1
    after_fail = fail(server, j1, "first")
    t_fail = time.monotonic()
    assert after_fail["state"] == "scheduled", after_fail
    assert after_fail["attempt"] == 1
    assert claim(server, "bo", max_jobs=10) == [], "claimable during its backoff"
    seen = set()

    def became_queued(j):
        seen.add(j["state"])
        return j["state"] == "queued"

    poll_job(server, sub["id"], became_queued, timeout=3, interval=0.02, what="queued")
    gap = time.monotonic() - t_fail
    assert seen <= {"scheduled", "queued"}, seen
    assert 1.0 * 0.5 - TOL_EARLY <= gap <= 1.0 + TOL_LATE, f"first backoff {gap:.3f}s"

    # Attempt 2 fails: 2 s less up to 50 %; a waiting claim gets it when due.
    j2 = claim_one(server, "bo")
    assert j2["attempt"] == 2 and j2["id"] == sub["id"]
    after_fail = fail(server, j2, "second")
    t_fail = time.monotonic()
    assert after_fail["state"] == "scheduled", after_fail
    j3 = claim(server, "bo", max_jobs=1, wait_s=4)
    gap = time.monotonic() - t_fail
    assert [j["id"] for j in j3] == [sub["id"]], j3
    assert 2.0 * 0.5 - TOL_EARLY <= gap <= 2.0 + TOL_LATE, f"second backoff {gap:.3f}s"
    assert j3[0]["attempt"] == 3

    # Attempt 3 (= max_attempts) fails for good.
    final = fail(server, j3[0], "third")
    assert final["state"] == "failed", final
    assert final["attempt"] == 3
    assert final["error"]["kind"] == "error" and final["error"]["message"] == "third"
    assert transitions(server, sub["id"]) == [
        "job.created",
        "job.running", "job.scheduled", "job.queued",
        "job.running", "job.scheduled", "job.queued",
        "job.running", "job.failed",
    ]
    evs = job_events(server, sub["id"])
    seqs = [e["seq"] for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs


def test_backoff_capped_by_max_s_without_jitter(server):
    put_queue(server, "cap", max_attempts=3,
              backoff={"initial_s": 1, "factor": 10, "max_s": 1, "jitter": 0})
    sub = server.submit("cap")
    job = claim_one(server, "cap")
    for attempt in (1, 2):
        assert job["attempt"] == attempt
        assert fail(server, job)["state"] == "scheduled"
        t_fail = time.monotonic()
        got = claim(server, "cap", wait_s=4)
        gap = time.monotonic() - t_fail
        assert [j["id"] for j in got] == [sub["id"]], got
        # jitter 0: exactly min(max_s, initial_s * factor^(n-1)) = 1 s
        assert 1.0 - TOL_EARLY <= gap <= 1.0 + TOL_LATE, f"backoff {attempt}: {gap:.3f}s"
        job = got[0]
    assert job["attempt"] == 3


def test_zero_backoff_requeues_at_once(server):
    put_queue(server, "zb", max_attempts=2,
              backoff={"initial_s": 0, "factor": 1, "max_s": 0, "jitter": 0})
    server.submit("zb")
    job = claim_one(server, "zb")
    after = fail(server, job)
    assert after["state"] == "queued", after
    again = claim_one(server, "zb")
    assert again["id"] == job["id"] and again["attempt"] == 2
    assert "job.scheduled" not in transitions(server, job["id"])


def test_non_retryable_error_fails_at_once(server):
    put_queue(server, "nr", max_attempts=3,
              backoff={"initial_s": 0, "factor": 1, "max_s": 0, "jitter": 0})
    server.submit("nr")
    job = claim_one(server, "nr")
    after = fail(server, job, "bad input", retryable=False)
    assert after["state"] == "failed" and after["attempt"] == 1, after
    assert claim(server, "nr") == []


def test_new_attempt_receives_earlier_checkpoints(server):
    put_queue(server, "ck", steps=["vm_created", "configured"], max_attempts=2,
              backoff={"initial_s": 0, "factor": 1, "max_s": 0, "jitter": 0})
    sub = server.submit("ck")
    j1 = claim_one(server, "ck")
    r = lease_call(server, sub["id"], "steps", j1["lease"]["token"],
                   step="vm_created", data={"vm": "i-77"})
    assert r.status == 200, r
    fail(server, j1, "ansible failed", step="configured")
    j2 = claim_one(server, "ck")
    assert j2["attempt"] == 2
    assert j2["checkpoints"] == {"vm_created": {"vm": "i-77"}}, j2
    r = lease_call(server, sub["id"], "steps", j2["lease"]["token"], step="configured", data=2)
    assert r.status == 200
    assert fail(server, j2, "again")["state"] == "failed"
    # A manual retry keeps them too.
    r = server.request("POST", f"/v1/jobs/{sub['id']}/retry", token="submit")
    assert r.status == 200, r
    assert r.json["checkpoints"] == {"vm_created": {"vm": "i-77"}, "configured": 2}, r.json
    j3 = claim_one(server, "ck")
    assert j3["attempt"] == 3
    assert j3["checkpoints"] == {"vm_created": {"vm": "i-77"}, "configured": 2}, j3


# ------------------------------------------------------------ manual retry


def test_retry_cap_and_admin_force(server):
    put_queue(server, "rc", max_attempts=1, retry_cap=2)
    sub = server.submit("rc")
    assert fail(server, claim_one(server, "rc"))["state"] == "failed"
    r = server.request("POST", f"/v1/jobs/{sub['id']}/retry", token="submit")
    assert r.status == 200, r
    assert r.json["state"] == "queued", r.json
    j2 = claim_one(server, "rc")
    assert j2["attempt"] == 2
    assert fail(server, j2)["state"] == "failed"
    failed = server.get_job(sub["id"])

    # Two attempts = retry_cap: refused, and nothing changes.
    for token, body in (("submit", None), ("admin", None), ("admin", {"force": False})):
        r = server.request("POST", f"/v1/jobs/{sub['id']}/retry", body, token=token)
        assert_error(r, 409, "retry_cap")
    # force is for admins only
    r = server.request("POST", f"/v1/jobs/{sub['id']}/retry", {"force": True}, token="submit")
    assert_error(r, r.status, {"forbidden", "retry_cap"})
    assert r.status in (403, 409), r
    assert server.get_job(sub["id"]) == failed

    r = server.request("POST", f"/v1/jobs/{sub['id']}/retry", {"force": True}, token="admin")
    assert r.status == 200, r
    assert r.json["state"] == "queued", r.json
    j3 = claim_one(server, "rc")
    assert j3["id"] == sub["id"] and j3["attempt"] == 3


def test_retry_cap_counts_automatic_attempts(server):
    put_queue(server, "rca", max_attempts=2, retry_cap=2,
              backoff={"initial_s": 0, "factor": 1, "max_s": 0, "jitter": 0})
    sub = server.submit("rca")
    assert fail(server, claim_one(server, "rca"))["state"] == "queued"
    assert fail(server, claim_one(server, "rca"))["state"] == "failed"
    r = server.request("POST", f"/v1/jobs/{sub['id']}/retry", token="submit")
    assert_error(r, 409, "retry_cap")


def test_retry_events_and_canceled_job(server):
    put_queue(server, "rev", max_attempts=1)
    sub = server.submit("rev")
    fail(server, claim_one(server, "rev"))
    r = server.request("POST", f"/v1/jobs/{sub['id']}/retry", token="submit")
    assert r.status == 200 and r.json["state"] == "queued", r
    assert transitions(server, sub["id"])[-2:] == ["job.failed", "job.queued"]
    # A canceled job may be retried as well.
    c = server.submit("rev")
    assert server.request("POST", f"/v1/jobs/{c['id']}/cancel", token="submit").status == 200
    r = server.request("POST", f"/v1/jobs/{c['id']}/retry", token="submit")
    assert r.status == 200 and r.json["state"] == "queued", r


def test_retry_of_non_terminal_or_succeeded_job_409(server):
    queued = server.submit("rn")
    running_sub = server.submit("rn2")
    running = claim_one(server, "rn2")
    done_sub = server.submit("rn3")
    done = claim_one(server, "rn3")
    assert lease_call(server, done["id"], "complete", done["lease"]["token"]).status == 200
    later = server.submit("rn", run_at=int(time.time()) + 3600)
    for jid in (queued["id"], running_sub["id"], done_sub["id"], later["id"]):
        before = server.get_job(jid)
        r = server.request("POST", f"/v1/jobs/{jid}/retry", token="submit")
        assert_error(r, 409, "illegal_transition")
        assert server.get_job(jid) == before
    assert running["state"] == "running"


@pytest.mark.parametrize("role", ["worker", "read"])
def test_retry_forbidden_roles(server, role):
    put_queue(server, "rr", max_attempts=1)
    sub = server.submit("rr")
    fail(server, claim_one(server, "rr"))
    before = server.get_job(sub["id"])
    r = server.request("POST", f"/v1/jobs/{sub['id']}/retry", token=role)
    assert_error(r, 403, "forbidden")
    assert server.get_job(sub["id"]) == before


def test_retry_body_validation(server):
    put_queue(server, "rv", max_attempts=1)
    sub = server.submit("rv")
    fail(server, claim_one(server, "rv"))
    before = server.get_job(sub["id"])
    for body, field in (({"force": "yes"}, "force"), ({"force": 1}, "force"),
                        ({"bogus": True}, "bogus")):
        r = server.request("POST", f"/v1/jobs/{sub['id']}/retry", body, token="admin")
        assert_error(r, 400, "invalid_field", field=field)
    assert server.get_job(sub["id"]) == before


# ---------------------------------------------------------------- timeouts


def test_heartbeats_keep_job_alive_past_heartbeat_timeout(server):
    put_queue(server, "hb", heartbeat_timeout_s=1, timeout_s=60)
    server.submit("hb")
    job = claim_one(server, "hb")
    start = time.monotonic()
    while time.monotonic() - start < 2.3:
        r = lease_call(server, job["id"], "heartbeat", job["lease"]["token"])
        assert r.status == 200, (round(time.monotonic() - start, 2), r)
        time.sleep(0.3)
    got = server.get_job(job["id"])
    assert got["state"] == "running" and got["attempt"] == 1, got


def test_timeout_s_fails_attempt_despite_heartbeats(server):
    put_queue(server, "to", heartbeat_timeout_s=1, timeout_s=2)
    sub = server.submit("to")
    job = claim_one(server, "to")
    start = time.monotonic()
    lost_at = None
    n = 0
    while time.monotonic() - start < 4:
        # Heartbeats and steps alternate: neither extends timeout_s.
        if n % 2:
            r = lease_call(server, job["id"], "steps", job["lease"]["token"], step=f"s{n}")
        else:
            r = lease_call(server, job["id"], "heartbeat", job["lease"]["token"])
        n += 1
        t = time.monotonic() - start
        if r.status == 409:
            assert_error(r, 409, "lease_lost")
            lost_at = t
            break
        assert r.status == 200, (t, r)
        time.sleep(0.3)
    assert lost_at is not None, "heartbeats kept the job past timeout_s"
    assert lost_at >= 1.5, f"lease lost after {lost_at:.2f}s: before timeout_s, despite heartbeats"
    assert lost_at <= 3.0, f"lease lost only after {lost_at:.2f}s"
    got = wait_state(server, sub["id"], "failed", timeout=1)
    assert got["error"]["kind"] == "timeout", got["error"]
    # The claim's lease lasted heartbeat_timeout_s (1 s) from the start.
    started = ts_parse(job["lease"]["expires_at"]) - 1.0
    ran = ts_parse(got["error"]["at"]) - started
    assert 2.0 - TOL_EARLY <= ran <= 2.0 + 0.5, f"attempt failed {ran:.3f}s after its start"


def test_stuck_job_fails_with_heartbeat_timeout(server):
    put_queue(server, "stuck", heartbeat_timeout_s=1, timeout_s=0)
    sub = server.submit("stuck")
    job = claim_one(server, "stuck")
    t0 = time.monotonic()
    got = wait_state(server, sub["id"], "failed", timeout=2.5)
    gap = time.monotonic() - t0
    assert 1.0 - TOL_EARLY <= gap <= 1.0 + 0.5 + TOL_LATE, f"failed after {gap:.3f}s"
    assert got["error"]["kind"] == "heartbeat_timeout", got["error"]
    assert got["attempt"] == 1
    r = lease_call(server, sub["id"], "heartbeat", job["lease"]["token"])
    assert_error(r, 409, "lease_lost")
    # A late worker cannot overwrite the outcome.
    r = lease_call(server, sub["id"], "complete", job["lease"]["token"], result="late")
    assert_error(r, 409, "lease_lost")
    r = lease_call(server, sub["id"], "fail", job["lease"]["token"], error={"message": "late"})
    assert_error(r, 409, "lease_lost")
    assert server.get_job(sub["id"]) == got
    assert transitions(server, sub["id"]) == ["job.created", "job.running", "job.failed"]


def test_heartbeat_timeout_goes_through_retry_policy(server):
    put_queue(server, "stuck2", heartbeat_timeout_s=1, timeout_s=0, max_attempts=2,
              backoff={"initial_s": 0, "factor": 1, "max_s": 0, "jitter": 0})
    sub = server.submit("stuck2")
    j1 = claim_one(server, "stuck2")
    j2 = claim(server, "stuck2", wait_s=3)
    assert [j["id"] for j in j2] == [sub["id"]], "the timed-out attempt was not retried"
    assert j2[0]["attempt"] == 2
    assert j2[0]["lease"]["token"] != j1["lease"]["token"]
    r = lease_call(server, sub["id"], "heartbeat", j1["lease"]["token"])
    assert_error(r, 409, "lease_lost")


def test_queue_timeout_fails_unclaimed_job_for_good(server):
    put_queue(server, "qt", queue_timeout_s=1, max_attempts=3,
              backoff={"initial_s": 0, "factor": 1, "max_s": 0, "jitter": 0})
    started = server.submit("qt")
    sub = server.submit("qt")
    t0 = time.monotonic()
    assert claim_one(server, "qt")["id"] == started["id"]
    got = wait_state(server, sub["id"], "failed", timeout=2.5)
    gap = time.monotonic() - t0
    assert 1.0 - TOL_EARLY <= gap <= 1.0 + 0.5 + TOL_LATE, f"failed after {gap:.3f}s"
    assert got["error"]["kind"] == "queue_timeout", got["error"]
    assert got["attempt"] == 0, got
    assert claim(server, "qt", max_jobs=10) == []
    time.sleep(0.3)
    assert server.get_job(sub["id"])["state"] == "failed", "queue_timeout must be final"
    # queue_timeout_s bounds the wait for the first start, not the run.
    running = server.get_job(started["id"])
    assert running["state"] == "running" and running["error"] is None, running


def test_queue_timeout_counts_from_run_at(server):
    put_queue(server, "qt3", queue_timeout_s=1)
    run_at = time.time() + 0.6
    sub = server.submit("qt3", run_at=ts_format(run_at))
    assert sub["state"] == "scheduled"
    # At run_at + 0.6 s (1.2 s after submit) the job waits, queued, and has
    # not timed out: the queue timeout counts from run_at.
    time.sleep(max(0.0, run_at + 0.6 - time.time()))
    got = server.get_job(sub["id"])
    assert got["state"] == "queued", got
    got = wait_state(server, sub["id"], "failed", timeout=1.5)
    assert got["error"]["kind"] == "queue_timeout"
    assert time.time() >= run_at + 1.0 - TOL_EARLY


def test_run_at_makes_job_claimable_only_when_due(server):
    run_at_s = ts_format(time.time() + 1.5)
    run_at = ts_parse(run_at_s)
    sub = server.submit("ra", run_at=run_at_s)
    assert sub["state"] == "scheduled"
    assert claim(server, "ra", max_jobs=10) == []
    got = claim(server, "ra", wait_s=4)
    t = time.time()
    assert [j["id"] for j in got] == [sub["id"]], got
    assert t >= run_at - TOL_EARLY, f"claimed {run_at - t:.3f}s before run_at"
    assert t <= run_at + 0.5, f"claimed {t - run_at:.3f}s after run_at"
    assert transitions(server, sub["id"]) == ["job.created", "job.queued", "job.running"]


def test_scheduled_job_becomes_queued_without_claimers(server):
    t0 = time.monotonic()
    sub = server.submit("ra2", run_at=ts_format(time.time() + 0.5))
    assert sub["state"] == "scheduled"
    wait_state(server, sub["id"], "queued", timeout=2)
    assert 0.5 - TOL_EARLY <= time.monotonic() - t0 <= 0.5 + 0.5 + TOL_LATE


# ------------------------------------------------------------ cancellation


def test_cancel_running_job_then_worker_fails(server):
    put_queue(server, "cr", max_attempts=3,
              backoff={"initial_s": 0, "factor": 1, "max_s": 0, "jitter": 0})
    sub = server.submit("cr")
    job = claim_one(server, "cr")
    tok = job["lease"]["token"]
    r = lease_call(server, sub["id"], "heartbeat", tok)
    assert r.status == 200 and r.json["cancel_requested"] is False, r
    r = server.request("POST", f"/v1/jobs/{sub['id']}/cancel", {"reason": "refund"},
                       token="submit")
    assert r.status == 200, r
    assert r.json["state"] == "running" and r.json["cancel_requested"] is True, r.json
    r = lease_call(server, sub["id"], "heartbeat", tok)
    assert r.status == 200, r
    assert r.json["cancel_requested"] is True, r.json
    r = lease_call(server, sub["id"], "fail", tok, error={"message": "stopped"})
    assert r.status == 200, r
    assert r.json["state"] == "canceled", r.json  # not retried despite max_attempts 3
    assert claim(server, "cr") == []
    types = transitions(server, sub["id"])
    assert types == ["job.created", "job.running", "job.canceled"], types
    assert "job.cancel_requested" in [e["type"] for e in job_events(server, sub["id"])]


def test_cancel_running_job_then_worker_completes(server):
    sub = server.submit("cc")
    job = claim_one(server, "cc")
    r = server.request("POST", f"/v1/jobs/{sub['id']}/cancel", token="submit")
    assert r.status == 200 and r.json["cancel_requested"] is True, r
    r = lease_call(server, sub["id"], "complete", job["lease"]["token"], result="done anyway")
    assert r.status == 200 and r.json["state"] == "succeeded", r
    assert r.json["result"] == "done anyway"


def test_cancel_running_job_then_lease_expires(server):
    put_queue(server, "cx", heartbeat_timeout_s=1, timeout_s=0, max_attempts=3,
              backoff={"initial_s": 0, "factor": 1, "max_s": 0, "jitter": 0})
    sub = server.submit("cx")
    claim_one(server, "cx")
    r = server.request("POST", f"/v1/jobs/{sub['id']}/cancel", token="submit")
    assert r.status == 200 and r.json["cancel_requested"] is True, r
    got = poll_job(server, sub["id"], lambda j: j["state"] != "running", timeout=2.5,
                   what="lease end")
    assert got["state"] == "canceled", got
    assert claim(server, "cx") == []


def test_cancel_queued_and_backing_off_jobs_at_once(server):
    put_queue(server, "cq", max_attempts=2,
              backoff={"initial_s": 30, "factor": 1, "max_s": 30, "jitter": 0})
    q = server.submit("cq")
    r = server.request("POST", f"/v1/jobs/{q['id']}/cancel", token="submit")
    assert r.status == 200 and r.json["state"] == "canceled", r
    s = server.submit("cq")
    assert fail(server, claim_one(server, "cq"))["state"] == "scheduled"
    r = server.request("POST", f"/v1/jobs/{s['id']}/cancel", token="submit")
    assert r.status == 200 and r.json["state"] == "canceled", r
    assert claim(server, "cq", max_jobs=10) == []


def test_backoff_jitter_is_random(server):
    put_queue(server, "jit", max_attempts=2,
              backoff={"initial_s": 1, "factor": 1, "max_s": 1, "jitter": 1})
    ids = [server.submit("jit")["id"] for _ in range(8)]
    jobs = claim(server, "jit", max_jobs=8)
    assert len(jobs) == 8
    for j in jobs:
        after = fail(server, j)
        assert after["state"] in ("scheduled", "queued"), after
    t0 = time.monotonic()
    ready = {}
    deadline = t0 + 2
    while len(ready) < 8 and time.monotonic() < deadline:
        for j in claim(server, "jit", max_jobs=8):
            ready[j["id"]] = time.monotonic() - t0
        time.sleep(0.02)
    assert sorted(ready) == sorted(ids), f"only {len(ready)} of 8 came back within 2 s"
    assert all(t <= 1.0 + TOL_LATE for t in ready.values()), ready
    spread = max(ready.values()) - min(ready.values())
    assert spread > 0.1, f"8 backoffs with jitter 1 all ended within {spread:.3f}s: {ready}"


def test_canceled_scheduled_jobs_stay_canceled_when_due(server):
    put_queue(server, "cd", max_attempts=2,
              backoff={"initial_s": 1, "factor": 1, "max_s": 1, "jitter": 0})
    later = server.submit("cd", run_at=ts_format(time.time() + 1))
    backing = server.submit("cd")
    job = claim_one(server, "cd")
    assert job["id"] == backing["id"]
    assert fail(server, job)["state"] == "scheduled"
    for jid in (later["id"], backing["id"]):
        r = server.request("POST", f"/v1/jobs/{jid}/cancel", token="submit")
        assert r.status == 200 and r.json["state"] == "canceled", r
    before = {jid: server.get_job(jid) for jid in (later["id"], backing["id"])}
    t_fail = time.monotonic()
    assert claim(server, "cd", max_jobs=10, wait_s=1) == []
    time.sleep(max(0.0, t_fail + 1.3 - time.monotonic()))  # past both due times
    got = claim(server, "cd", max_jobs=10)
    assert got == [], "a canceled job came back when its old due time passed"
    for jid, b in before.items():
        assert server.get_job(jid) == b


def test_old_attempts_deadline_does_not_fail_new_attempt(server):
    put_queue(server, "od", timeout_s=1, heartbeat_timeout_s=60, max_attempts=1)
    sub = server.submit("od")
    j1 = claim_one(server, "od")
    t0 = time.monotonic()  # attempt 1 would time out at t0 + 1
    fail(server, j1)
    r = server.request("POST", f"/v1/jobs/{sub['id']}/retry", token="submit")
    assert r.status == 200, r
    time.sleep(max(0.0, t0 + 0.6 - time.monotonic()))
    j2 = claim_one(server, "od")  # attempt 2 times out at about t0 + 1.6
    assert j2["attempt"] == 2
    time.sleep(max(0.0, t0 + 1.3 - time.monotonic()))
    got = server.get_job(sub["id"])
    assert got["state"] == "running" and got["attempt"] == 2, \
        f"attempt 1's deadline ended attempt 2: {got}"
    got = wait_state(server, sub["id"], "failed", timeout=2)
    assert got["error"]["kind"] == "timeout" and got["attempt"] == 2


def test_many_stuck_jobs_all_time_out(server):
    put_queue(server, "many", heartbeat_timeout_s=1, timeout_s=0)
    ids = [server.submit("many")["id"] for _ in range(60)]
    got = claim(server, "many", max_jobs=60)
    assert len(got) == 60
    t0 = time.monotonic()
    deadline = t0 + 3
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        pending = {j["id"] for j in list_all_jobs(server, queue="many", state="running")}
        if pending:
            time.sleep(0.05)
    assert not pending, f"{len(pending)} of 60 stuck jobs still running after 3 s"
    assert time.monotonic() - t0 <= 1.0 + 0.5 + TOL_LATE + 0.2
    for jid in ids[::10]:
        assert server.get_job(jid)["error"]["kind"] == "heartbeat_timeout"


# ------------------------------------------------------------------ on_failure cleanup


def test_a_failed_job_queues_its_cleanup_and_a_retry_starts_clean(server):
    """DESIGN.md §1 Queue `on_failure` and Steps: a job that ends failed
    queues a cleanup job in the on_failure queue, in the same transaction,
    carrying what it needs; a manual retry then starts from a clean slate."""
    put_queue(server, "prov", on_failure="prov-cleanup", steps=["vm_created", "configured"])
    job = server.submit("prov", payload={"vm": "small"})
    c = claim_one(server, "prov")
    lease = c["lease"]["token"]
    r = lease_call(server, job["id"], "steps", lease, step="vm_created", data={"vm_id": 7})
    assert r.status == 200, r
    r = lease_call(server, job["id"], "fail", lease,
                   error={"message": "ansible broke", "step": "configured", "retryable": False})
    assert r.status == 200 and r.json["state"] == "failed", r
    cleanups = claim(server, "prov-cleanup", max_jobs=5)
    assert len(cleanups) == 1, cleanups
    p = cleanups[0]["payload"]
    assert p["failed_job"] == job["id"] and p["queue"] == "prov", p
    assert p["payload"] == {"vm": "small"}
    assert p["checkpoints"] == {"vm_created": {"vm_id": 7}}, p
    assert p["error"]["step"] == "configured" and p["error"]["message"] == "ansible broke", p
    created = job_events(server, cleanups[0]["id"])[0]
    assert created["type"] == "job.created" and created["data"]["cleanup_of"] == job["id"]
    # A job that only completes gets no cleanup.
    ok = server.submit("prov")
    c2 = claim_one(server, "prov")
    assert lease_call(server, ok["id"], "complete", c2["lease"]["token"]).status == 200
    assert claim(server, "prov-cleanup", max_jobs=5) == []
    # The manual retry after the cleanup starts without the old checkpoints.
    r = server.request("POST", f"/v1/jobs/{job['id']}/retry", token="submit")
    assert r.status == 200, r
    again = claim_one(server, "prov")
    assert again["id"] == job["id"] and again["attempt"] == 2, again
    assert not again["checkpoints"] and again["step"] is None, again


def test_a_queue_whose_on_failure_is_itself_gets_no_cleanup(server):
    put_queue(server, "selfish", on_failure="selfish")
    job = server.submit("selfish")
    c = claim_one(server, "selfish")
    r = lease_call(server, job["id"], "fail", c["lease"]["token"],
                   error={"message": "x", "retryable": False})
    assert r.json["state"] == "failed", r
    assert claim(server, "selfish", max_jobs=5) == []
