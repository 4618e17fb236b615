"""Deadlines survive a crash (docs/api.md, "Retries, timeouts and
cancellation": deadlines are kept in the store and re-armed after a restart;
those that passed while the server was down fire at once). The server is
SIGKILLed and started again on the same data directory and port."""

import time

from conftest import (
    assert_error,
    claim,
    claim_one,
    lease_call,
    put_queue,
    ts_format,
    ts_parse,
)

def crash_and_restart(server, down_s):
    port = server.port
    server.kill()
    time.sleep(down_s)
    server.start(listen=f"127.0.0.1:{port}")
    assert server.port == port
    return time.time()


def watch(server, expect, timeout):
    """Poll every job in expect {id: state} every 50 ms until each has reached
    its state; return {id: (job, wall time first seen)}."""
    seen = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(expect):
        for jid, state in expect.items():
            if jid in seen:
                continue
            job = server.get_job(jid, token="admin")
            if job["state"] == state:
                seen[jid] = (job, time.time())
        if len(seen) == len(expect):
            break
        if time.monotonic() >= deadline:
            missing = {j: server.get_job(j, token="admin") for j in expect if j not in seen}
            raise AssertionError(f"not reached in {timeout}s: {missing}")
        time.sleep(0.05)
    return seen


def test_deadlines_passed_while_down_fire_at_restart(server):
    put_queue(server, "rl", heartbeat_timeout_s=2, timeout_s=0, max_attempts=1)
    put_queue(server, "rlong", heartbeat_timeout_s=60)
    put_queue(server, "rre", heartbeat_timeout_s=2, timeout_s=0, max_attempts=2,
              backoff={"initial_s": 0, "factor": 1, "max_s": 0, "jitter": 0})
    retried = server.submit("rre")
    r1 = claim_one(server, "rre")
    expiring = [server.submit("rl", payload={"n": i}) for i in range(2)]
    leased = claim(server, "rl", max_jobs=2)
    assert sorted(j["id"] for j in leased) == sorted(j["id"] for j in expiring)
    server.submit("rlong")
    long_job = claim_one(server, "rlong")
    later = server.submit("rs", run_at=ts_format(time.time() + 2))
    assert later["state"] == "scheduled"

    t_start = crash_and_restart(server, down_s=3)

    # Passed deadlines fire at once: the expired leases fail, the due job is
    # ready.
    seen = watch(server, {j["id"]: "failed" for j in leased}, timeout=1.5)
    got = None
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        got = claim(server, "rs", max_jobs=10)
        if got:
            break
        time.sleep(0.05)
    t_claimed = time.time()
    assert [j["id"] for j in got or []] == [later["id"]], "scheduled job not claimable"
    assert t_claimed - t_start <= 1.0 + 0.3, f"scheduled job ready {t_claimed - t_start:.2f}s" \
        " after the restart"
    for j in leased:
        job, t = seen[j["id"]]
        assert job["error"]["kind"] == "heartbeat_timeout", job["error"]
        assert t - t_start <= 1.0 + 0.3, f"expired lease failed {t - t_start:.2f}s after restart"
        r = lease_call(server, j["id"], "heartbeat", j["lease"]["token"])
        assert_error(r, 409, "lease_lost")

    # An expired lease with attempts left goes through the retry policy.
    got = None
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        got = claim(server, "rre", max_jobs=10)
        if got:
            break
        time.sleep(0.05)
    assert [j["id"] for j in got or []] == [retried["id"]], server.get_job(retried["id"])
    assert got[0]["attempt"] == 2 and got[0]["lease"]["token"] != r1["lease"]["token"]

    # A lease that had not expired survives the crash, token and all.
    r = lease_call(server, long_job["id"], "heartbeat", long_job["lease"]["token"])
    assert r.status == 200, r
    assert server.get_job(long_job["id"])["state"] == "running"


def test_future_deadlines_fire_on_time_after_restart(server):
    put_queue(server, "hf", heartbeat_timeout_s=3, timeout_s=0, max_attempts=1)
    put_queue(server, "tf", heartbeat_timeout_s=0, timeout_s=3, max_attempts=1)
    put_queue(server, "qf", queue_timeout_s=3)
    put_queue(server, "bf", max_attempts=2,
              backoff={"initial_s": 3, "factor": 1, "max_s": 3, "jitter": 0})
    t0 = time.time()
    hf_sub = server.submit("hf")
    hf = claim_one(server, "hf")
    tf_sub = server.submit("tf")
    tf = claim_one(server, "tf")
    qf = server.submit("qf")
    sf = server.submit("sf", run_at=ts_format(t0 + 3))
    server.submit("bf")
    bf = claim_one(server, "bf")
    r = lease_call(server, bf["id"], "fail", bf["lease"]["token"], error={"message": "x"})
    assert r.status == 200 and r.json["state"] == "scheduled", r
    t_bf = time.time()
    t_setup = time.time() - t0
    assert t_setup < 1.0, f"setup took {t_setup:.2f}s; timings below would be meaningless"

    crash_and_restart(server, down_s=0.2)

    # Nothing fires early.
    time.sleep(max(0.0, t0 + 2.5 - time.time()))
    assert server.get_job(hf_sub["id"])["state"] == "running"
    assert server.get_job(tf_sub["id"])["state"] == "running"
    assert server.get_job(qf["id"])["state"] == "queued"
    assert server.get_job(sf["id"])["state"] == "scheduled"
    assert server.get_job(bf["id"])["state"] == "scheduled"

    seen = watch(server, {hf["id"]: "failed", tf["id"]: "failed", qf["id"]: "failed",
                          sf["id"]: "queued", bf["id"]: "queued"}, timeout=3)

    hf_due = ts_parse(hf["lease"]["expires_at"])
    tf_due = ts_parse(tf["lease"]["expires_at"])  # lease = timeout_s when no heartbeat timeout
    qf_due = ts_parse(qf["created_at"]) + 3
    cases = [
        (hf["id"], "heartbeat_timeout", hf_due),
        (tf["id"], "timeout", tf_due),
        (qf["id"], "queue_timeout", qf_due),
    ]
    for jid, kind, due in cases:
        job, t_seen = seen[jid]
        assert job["error"]["kind"] == kind, job["error"]
        at = ts_parse(job["error"]["at"])
        assert due - 0.1 <= at <= due + 0.5, f"{kind} fired at {at - due:+.3f}s from its deadline"
        assert t_seen <= due + 0.5 + 0.2, f"{kind} seen {t_seen - due:+.3f}s from its deadline"
    for jid, due in ((sf["id"], ts_parse(sf["run_at"])), (bf["id"], t_bf + 3)):
        _, t_seen = seen[jid]
        assert due - 0.15 <= t_seen <= due + 0.5 + 0.2, \
            f"scheduled job ready {t_seen - due:+.3f}s from its due time"
    assert sorted(j["id"] for j in claim(server, "sf", max_jobs=5)) == [sf["id"]]
    again = claim(server, "bf", max_jobs=5)
    assert [j["id"] for j in again] == [bf["id"]] and again[0]["attempt"] == 2


def test_graceful_restart_keeps_leases_and_deadlines(server):
    put_queue(server, "gr", heartbeat_timeout_s=3, timeout_s=0, max_attempts=1)
    sub = server.submit("gr", payload={"k": 1})
    job = claim_one(server, "gr")
    r = lease_call(server, sub["id"], "steps", job["lease"]["token"], step="a", data={"v": 1})
    assert r.status == 200, r
    server.restart()  # SIGTERM, then the same port and data
    got = server.get_job(sub["id"])
    assert got["state"] == "running" and got["checkpoints"] == {"a": {"v": 1}}, got
    r = lease_call(server, sub["id"], "heartbeat", job["lease"]["token"])
    assert r.status == 200, r
    t_hb = time.time()
    got = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        got = server.get_job(sub["id"])
        if got["state"] != "running":
            break
        time.sleep(0.05)
    assert got["state"] == "failed" and got["error"]["kind"] == "heartbeat_timeout", got
    at = ts_parse(got["error"]["at"])
    assert t_hb + 3 - 0.2 <= at <= t_hb + 3 + 0.5, f"lease ended {at - t_hb:.2f}s after the heartbeat"
