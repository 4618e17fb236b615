"""Contract tests for lock keys and maintenance locks (docs/api.md, POST
/v1/jobs, "Admission": the `lock_keys` bullet and "Maintenance locks";
DESIGN.md §1 Admission).

- A job does not start while another running job, or a maintenance lock,
  holds one of its keys. A claim that meets such a job sets it aside
  (`scheduled`, `"waiting_for": "lock"`) and takes the next ready one; the job
  becomes `queued` again (oldest first) the moment the lock is released, so a
  waiting claim gets it at once.
- A running job holds its keys as long as its lease: complete, fail, timeout,
  lost lease and cancel all release them.
- PUT / GET / DELETE /v1/locks/{key}: validation, 409 locked, renewal, roles,
  ttl_s expiry with no request needed.
- Claims race in the writer's transaction: no two jobs with one key get out.
- All of it across a kill -9 and restart.

Loopback only; every wait is bounded; policies use seconds-scale values."""

import json
import time
import urllib.parse


from conftest import (
    Async,
    assert_error,
    claim,
    claim_one,
    lease_call,
    poll_job,
    put_queue,
    run_threads,
    ts_parse,
)

AT_ONCE_S = 0.5   # "the moment the lock is released": a round trip and a wakeup
PROMPT_S = 1.5    # timer-driven releases (expiry, timeout, lost lease): timer slack


# ------------------------------------------------------------------ helpers


def submit(server, queue, lock_keys=None, **fields):
    body = {"queue": queue, **fields}
    if lock_keys is not None:
        body["lock_keys"] = lock_keys
    r = server.request("POST", "/v1/jobs", body, token="submit")
    assert r.status == 202, r
    if lock_keys is not None:
        assert r.json["lock_keys"] == lock_keys, r.json
    return r.json


def put_lock_req(server, key, body, token="admin"):
    return server.request("PUT", f"/v1/locks/{key}", body, token=token)


def put_lock(server, key, owner="ops", **fields):
    """PUT /v1/locks/{key}; assert 200 and the documented shape."""
    body = {"owner": owner, **fields}
    r = put_lock_req(server, key, body)
    assert r.status == 200, r
    lk = r.json
    assert isinstance(lk, dict), r
    for f in ("key", "owner", "reason", "expires_at", "created_at", "job"):
        assert f in lk, f"lock has no {f!r}: {lk}"
    assert lk["key"] == key and lk["owner"] == owner and lk["job"] is None, lk
    assert lk["reason"] == fields.get("reason"), lk
    ts_parse(lk["created_at"])
    if "ttl_s" in fields:
        ts_parse(lk["expires_at"])
    else:
        assert lk["expires_at"] is None, f"a lock without ttl_s never expires: {lk}"
    return lk


def del_lock(server, key, token="admin"):
    return server.request("DELETE", f"/v1/locks/{key}", token=token)


def list_locks(server, token="read"):
    r = server.request("GET", "/v1/locks", token=token)
    assert r.status == 200, r
    assert isinstance(r.json, dict) and isinstance(r.json.get("locks"), list), r
    return r.json["locks"]


def locks_by_key(server):
    out = {}
    for lk in list_locks(server):
        assert lk["key"] not in out, f"key listed twice: {lk['key']}"
        out[lk["key"]] = lk
    return out


def complete(server, job):
    r = lease_call(server, job["id"], "complete", job["lease"]["token"])
    assert r.status == 200, r
    assert r.json["state"] == "succeeded", r.json
    return r.json


def fail(server, job, message="boom", **extra):
    r = lease_call(server, job["id"], "fail", job["lease"]["token"],
                   error={"message": message, **extra})
    assert r.status == 200, r
    return r.json


def cancel(server, job_id):
    r = server.request("POST", f"/v1/jobs/{job_id}/cancel", token="submit")
    assert r.status == 200, r
    return r.json


def ids(jobs):
    return [j["id"] for j in jobs]


def assert_lock_waiting(server, job_id):
    j = server.get_job(job_id, token="admin")
    assert j["state"] == "scheduled" and j["waiting_for"] == "lock", \
        f"expected scheduled/waiting_for lock: {j}"
    return j


def assert_queued(server, job_id, timeout=AT_ONCE_S):
    """The job is (or within timeout becomes) queued, waiting for nothing."""
    j = poll_job(server, job_id, lambda x: x["state"] == "queued", timeout,
                 interval=0.02, what="state queued")
    assert j["waiting_for"] is None, f"a queued job waits for nothing: {j}"
    return j


def assert_not_claimable(server, queue, job_ids):
    """A claim hands out none of job_ids; each is then set aside for its lock."""
    got = claim(server, queue, worker="probe", max_jobs=10)
    assert not set(ids(got)) & set(job_ids), f"a locked job was handed out: {got}"
    for jid in job_ids:
        assert_lock_waiting(server, jid)
    return got


def waiting_claim(server, queue, wait_s=5, worker="w2"):
    """Start a claim that waits; assert it is still waiting after 0.25 s."""
    w = Async(lambda: claim(server, queue, worker=worker, max_jobs=10, wait_s=wait_s))
    time.sleep(0.25)
    assert not w.done.is_set(), f"the claim answered while the lock is held: {w.value}"
    return w


def crash_and_restart(server, down_s=0.0):
    port = server.port
    server.kill()
    if down_s:
        time.sleep(down_s)
    server.start(listen=f"127.0.0.1:{port}")
    assert server.port == port


# --------------------------------------------------------- job-held keys


def test_shared_key_second_job_waits_then_starts_at_once(server):
    a = submit(server, "lk", ["server:1"], payload={"n": 1})
    b = submit(server, "lk", ["server:1"], payload={"n": 2})
    assert a["state"] == "queued" and b["state"] == "queued", (a, b)  # nothing runs yet
    # One claim asking for many never hands out two jobs sharing a key.
    got = claim(server, "lk", max_jobs=10)
    assert ids(got) == [a["id"]], got
    assert got[0]["lock_keys"] == ["server:1"], got[0]
    assert_lock_waiting(server, b["id"])
    assert claim(server, "lk", max_jobs=10) == []
    assert_lock_waiting(server, b["id"])
    w = waiting_claim(server, "lk")
    t_done = time.monotonic()
    complete(server, got[0])
    nxt = w.result(timeout=6)
    assert w.t_done - t_done < AT_ONCE_S, \
        f"the released key was handed on after {w.t_done - t_done:.2f}s"
    assert ids(nxt) == [b["id"]], nxt
    assert nxt[0]["state"] == "running" and nxt[0]["waiting_for"] is None, nxt[0]
    held = locks_by_key(server)
    assert held["server:1"]["job"] == b["id"], held


def test_claim_sets_locked_job_aside_and_takes_next_ready(server):
    a = submit(server, "lkn", ["server:2"])
    b = submit(server, "lkn", ["server:2"])
    c = submit(server, "lkn")  # no keys
    assert ids(claim(server, "lkn", max_jobs=1)) == [a["id"]]
    got = claim(server, "lkn", max_jobs=1)
    assert ids(got) == [c["id"]], f"expected the next ready job {c['id']}: {got}"
    assert_lock_waiting(server, b["id"])


def test_waiting_jobs_start_oldest_first_one_at_a_time(server):
    a = submit(server, "lko", ["k:1"])
    b = submit(server, "lko", ["k:1"])
    c = submit(server, "lko", ["k:1"])
    ja = claim_one(server, "lko")
    assert ja["id"] == a["id"]
    assert_not_claimable(server, "lko", [b["id"], c["id"]])
    complete(server, ja)
    got = claim(server, "lko", max_jobs=10, wait_s=2)
    assert ids(got) == [b["id"]], f"oldest waiting job first, one only: {got}"
    assert_not_claimable(server, "lko", [c["id"]])
    complete(server, got[0])
    got = claim(server, "lko", max_jobs=10, wait_s=2)
    assert ids(got) == [c["id"]], got


def test_disjoint_keys_run_together(server):
    a = submit(server, "lkd", ["server:1"])
    b = submit(server, "lkd", ["server:2"])
    c = submit(server, "lkd", ["server:3", "db:1"])
    d = submit(server, "lkd")
    got = claim(server, "lkd", max_jobs=10)
    assert sorted(ids(got)) == sorted([a["id"], b["id"], c["id"], d["id"]]), got
    held = locks_by_key(server)
    for key, jid in (("server:1", a["id"]), ("server:2", b["id"]),
                     ("server:3", c["id"]), ("db:1", c["id"])):
        assert key in held and held[key]["job"] == jid, (key, held)


def test_job_with_two_keys_waits_while_either_is_held(server):
    a = submit(server, "lk2", ["s:1"])
    b = submit(server, "lk2", ["s:2"])
    c = submit(server, "lk2", ["s:1", "s:2"])
    got = claim(server, "lk2", max_jobs=10)
    assert sorted(ids(got)) == sorted([a["id"], b["id"]]), got
    assert_lock_waiting(server, c["id"])
    complete(server, next(j for j in got if j["id"] == a["id"]))
    # s:1 is free, s:2 still held by b: c must not start.
    time.sleep(0.2)
    assert_not_claimable(server, "lk2", [c["id"]])
    w = waiting_claim(server, "lk2")
    t_done = time.monotonic()
    complete(server, next(j for j in got if j["id"] == b["id"]))
    nxt = w.result(timeout=6)
    assert ids(nxt) == [c["id"]], nxt
    assert w.t_done - t_done < AT_ONCE_S, f"c started {w.t_done - t_done:.2f}s later"


def test_waiting_claim_is_not_answered_while_one_of_two_keys_is_held(server):
    # A claim waiting with wait_s answers when a job is ready: freeing one of
    # two keys readies nothing, so it keeps waiting (no early empty answer).
    a = submit(server, "lk2w", ["u:1"])
    b = submit(server, "lk2w", ["u:2"])
    c = submit(server, "lk2w", ["u:1", "u:2"])
    got = claim(server, "lk2w", max_jobs=10)
    assert sorted(ids(got)) == sorted([a["id"], b["id"]]), got
    assert_lock_waiting(server, c["id"])
    w = waiting_claim(server, "lk2w", wait_s=5)
    complete(server, next(j for j in got if j["id"] == a["id"]))
    time.sleep(0.4)
    assert not w.done.is_set(), \
        f"the claim answered while u:2 is still held: {w.value}"
    t_done = time.monotonic()
    complete(server, next(j for j in got if j["id"] == b["id"]))
    nxt = w.result(timeout=6)
    assert ids(nxt) == [c["id"]], nxt
    assert w.t_done - t_done < AT_ONCE_S, f"c started {w.t_done - t_done:.2f}s later"


def test_two_keys_released_one_after_the_other_without_a_claim(server):
    # Nobody claims between the two releases: the job must still end up
    # queued once both are free (not stranded waiting for a released key).
    a = submit(server, "lk2n", ["t:1"])
    b = submit(server, "lk2n", ["t:2"])
    c = submit(server, "lk2n", ["t:1", "t:2"])
    got = claim(server, "lk2n", max_jobs=10)
    assert sorted(ids(got)) == sorted([a["id"], b["id"]]), got
    assert_lock_waiting(server, c["id"])
    complete(server, next(j for j in got if j["id"] == a["id"]))
    time.sleep(0.1)
    complete(server, next(j for j in got if j["id"] == b["id"]))
    assert_queued(server, c["id"])
    assert ids(claim(server, "lk2n", max_jobs=10)) == [c["id"]]


def test_two_maintenance_locks_released_in_turn(server):
    put_lock(server, "m:a")
    put_lock(server, "m:b")
    j = submit(server, "lk2d", ["m:a", "m:b"])
    assert_not_claimable(server, "lk2d", [j["id"]])
    assert del_lock(server, "m:b").status == 200
    time.sleep(0.1)
    assert_not_claimable(server, "lk2d", [j["id"]])  # m:a still held
    assert del_lock(server, "m:a").status == 200
    assert_queued(server, j["id"])
    # and the same without a claim between the two releases
    put_lock(server, "m:c")
    put_lock(server, "m:d")
    k = submit(server, "lk2d2", ["m:c", "m:d"])
    assert_not_claimable(server, "lk2d2", [k["id"]])
    assert del_lock(server, "m:c").status == 200
    time.sleep(0.1)
    assert del_lock(server, "m:d").status == 200
    assert_queued(server, k["id"])
    assert ids(claim(server, "lk2d", max_jobs=10)) == [j["id"]]
    assert ids(claim(server, "lk2d2", max_jobs=10)) == [k["id"]]


def test_job_with_two_keys_waits_for_maintenance_lock_on_either(server):
    put_lock(server, "s:22")
    c = submit(server, "lk2m", ["s:21", "s:22"])
    d = submit(server, "lk2m", ["s:21"])
    got = claim(server, "lk2m", max_jobs=10)
    assert ids(got) == [d["id"]], f"only the job without the locked key starts: {got}"
    assert_lock_waiting(server, c["id"])


def test_lock_keys_hold_across_queues(server):
    # Keys name resources (server:123), not queue-local slots: a maintenance
    # lock has no queue, and a job in one queue holding a key blocks a job in
    # another.
    a = submit(server, "lkqa", ["host:9"])
    b = submit(server, "lkqb", ["host:9"])
    ja = claim_one(server, "lkqa")
    assert ja["id"] == a["id"]
    assert_not_claimable(server, "lkqb", [b["id"]])
    complete(server, ja)
    assert_queued(server, b["id"])
    assert ids(claim(server, "lkqb", max_jobs=10)) == [b["id"]]


def test_concurrent_claims_hand_out_one_job_per_key(server):
    n = 20
    jobs = [submit(server, "lkrace", ["race:1"], payload={"i": i}) for i in range(n)]
    rs = run_threads(n, lambda i: claim(server, "lkrace", worker=f"w{i}", max_jobs=1))
    got = [j for r in rs for j in r]
    assert len(got) == 1, f"{len(got)} jobs with one key handed out at once"
    assert got[0]["id"] == jobs[0]["id"], "the oldest job should win"
    running = [j for j in jobs if server.get_job(j["id"], token="admin")["state"] == "running"]
    assert len(running) == 1


def test_concurrent_claims_across_queues_hand_out_one_job_per_key(server):
    n = 10
    jobs = [submit(server, f"lkxr{i}", ["xrace:1"]) for i in range(n)]
    rs = run_threads(n, lambda i: claim(server, f"lkxr{i}", worker=f"w{i}", max_jobs=1))
    got = [j for r in rs for j in r]
    assert len(got) == 1, f"{len(got)} jobs with one key handed out at once: {ids(got)}"
    states = [server.get_job(j["id"], token="admin")["state"] for j in jobs]
    assert states.count("running") == 1, states


def test_concurrent_puts_by_two_owners_one_wins(server):
    for i in range(10):
        key = f"race-o:{i}"
        rs = run_threads(2, lambda t: put_lock_req(server, key, {"owner": f"o{t}"}))
        assert sorted(r.status for r in rs) == [200, 409], rs
        winner = next(r for r in rs if r.status == 200).json["owner"]
        assert locks_by_key(server)[key]["owner"] == winner


def test_put_lock_races_claim_one_winner(server):
    # A maintenance PUT and a claim for the same key, at the same moment:
    # either the job starts (and the PUT is 409 locked) or the lock is taken
    # (and the job does not start) — never both.
    for i in range(10):
        key = f"race-m:{i}"
        j = submit(server, "lkmr", [key])
        rs = run_threads(2, lambda t: (
            put_lock_req(server, key, {"owner": "ops"}) if t == 0
            else claim(server, "lkmr", max_jobs=1)))
        put_r, got = rs
        started = ids(got) == [j["id"]]
        assert put_r.status in (200, 409), put_r
        assert started != (put_r.status == 200), \
            f"round {i}: PUT {put_r.status} and claim {got}"
        if started:
            assert_error(put_r, 409, "locked")
            complete(server, got[0])
        else:
            assert got == [], got
            assert_lock_waiting(server, j["id"])
            assert del_lock(server, key).status == 200
            assert_queued(server, j["id"])
            complete(server, claim_one(server, "lkmr"))


# ------------------------------------------------------ maintenance locks


def test_maintenance_lock_blocks_until_delete_then_job_starts_at_once(server):
    lk = put_lock(server, "server:7", owner="alice", reason="disk swap")
    assert lk["expires_at"] is None
    j = submit(server, "lkm", ["server:7"])
    assert j["state"] in ("queued", "scheduled"), j
    assert claim(server, "lkm", max_jobs=10) == []
    assert_lock_waiting(server, j["id"])
    w = waiting_claim(server, "lkm")
    t_del = time.monotonic()
    r = del_lock(server, "server:7")
    assert r.status == 200 and r.json == {"released": True}, r
    got = w.result(timeout=6)
    assert w.t_done - t_del < AT_ONCE_S, f"job started {w.t_done - t_del:.2f}s after DELETE"
    assert ids(got) == [j["id"]], got
    assert got[0]["waiting_for"] is None, got[0]


def test_delete_makes_waiting_job_queued_without_a_claim(server):
    put_lock(server, "server:8")
    j = submit(server, "lkmq", ["server:8"])
    assert_not_claimable(server, "lkmq", [j["id"]])
    assert del_lock(server, "server:8").status == 200
    assert_queued(server, j["id"])


def test_maintenance_lock_blocks_job_submitted_before_it(server):
    j = submit(server, "lkmb", ["server:9"])
    assert j["state"] == "queued"
    put_lock(server, "server:9")  # a queued job holds nothing: the PUT succeeds
    assert_not_claimable(server, "lkmb", [j["id"]])


def test_ttl_lock_expires_by_itself_and_job_starts(server):
    t0 = time.time()
    lk = put_lock(server, "server:10", ttl_s=1)
    put_lock(server, "server:10b", owner="alice", ttl_s=1)
    exp = ts_parse(lk["expires_at"])
    assert t0 + 0.8 <= exp <= time.time() + 1.2, (t0, lk)
    j = submit(server, "lkttl", ["server:10"])
    assert_not_claimable(server, "lkttl", [j["id"]])
    # No request at all until well past the expiry: it must free itself.
    time.sleep(max(0.0, exp + 0.6 - time.time()))
    got = server.get_job(j["id"], token="admin")
    assert got["state"] == "queued" and got["waiting_for"] is None, \
        f"{time.time() - exp:.2f}s after expires_at the job still waits: {got}"
    assert "server:10" not in locks_by_key(server)
    r = del_lock(server, "server:10")
    assert_error(r, 404, "not_found")
    # an expired lock is free for anyone
    put_lock(server, "server:10b", owner="bob")


def test_ttl_lock_expiry_wakes_a_waiting_claim(server):
    t_put = time.time()
    lk = put_lock(server, "server:11", ttl_s=1)
    exp = ts_parse(lk["expires_at"])
    j = submit(server, "lkttw", ["server:11"])
    w = Async(lambda: claim(server, "lkttw", worker="w2", max_jobs=10, wait_s=5))
    got = w.result(timeout=8)
    t = time.time()
    assert ids(got) == [j["id"]], got
    assert t >= exp - 0.1, f"started {exp - t:.2f}s before the lock expired"
    assert t - t_put <= 1.6, f"started {t - t_put:.2f}s after the PUT of a 1 s lock"


def test_put_validation(server):
    cases = [
        ({}, "owner"),
        ({"reason": "x"}, "owner"),
        ({"owner": ""}, "owner"),
        ({"owner": "o" * 129}, "owner"),
        ({"owner": 123}, "owner"),
        ({"owner": None}, "owner"),
        ({"owner": ["ops"]}, "owner"),
        ({"owner": "ops", "ttl_s": 0}, "ttl_s"),
        ({"owner": "ops", "ttl_s": -1}, "ttl_s"),
        ({"owner": "ops", "ttl_s": 604801}, "ttl_s"),
        ({"owner": "ops", "ttl_s": "60"}, "ttl_s"),
        ({"owner": "ops", "ttl_s": 1.5}, "ttl_s"),
        ({"owner": "ops", "ttl_s": True}, "ttl_s"),
        ({"owner": "ops", "reason": 5}, "reason"),
        ({"owner": "ops", "reason": "r" * 1001}, "reason"),
        ({"owner": "ops", "reason": ["x"]}, "reason"),
        ({"owner": "ops", "bogus": 1}, "bogus"),
    ]
    for body, field in cases:
        r = put_lock_req(server, "val:1", body)
        assert_error(r, 400, "invalid_field", field=field)
    r = server.request("PUT", "/v1/locks/val:1", raw=b"{not json",
                       headers={"Content-Type": "application/json"})
    assert_error(r, 400, "malformed_json")
    assert list_locks(server) == [], "bad input changed nothing"
    # The bounds themselves are accepted.
    put_lock(server, "val:2", owner="o" * 128, reason="r" * 1000, ttl_s=604800)
    put_lock(server, "val:3", owner="x", ttl_s=1)
    assert set(locks_by_key(server)) == {"val:2", "val:3"}


def test_lock_key_in_path_is_percent_decoded(server):
    # lock_keys are any 1-200 byte strings; the path carries them
    # percent-encoded, and the lock must meet the job's key as written.
    j = submit(server, "lkenc", ["rack/7 a"])
    r = put_lock_req(server, "rack%2F7%20a", {"owner": "ops"})
    assert r.status == 200 and r.json["key"] == "rack/7 a", r
    assert_not_claimable(server, "lkenc", [j["id"]])
    assert "rack/7 a" in locks_by_key(server)
    assert del_lock(server, "rack%2F7%20a").status == 200
    assert_queued(server, j["id"])


def test_lock_key_length_bounds(server):
    # The same bounds as lock_keys (1-200 bytes): 200 is a key, 201 is a bad
    # request on a known route (not "no route").
    put_lock(server, "k" * 200)
    r = put_lock_req(server, "k" * 201, {"owner": "ops"})
    assert_error(r, 400, {"bad_request", "invalid_field"})
    r = del_lock(server, "k" * 201)
    assert_error(r, 400, {"bad_request", "invalid_field"})
    assert [lk["key"] for lk in list_locks(server)] == ["k" * 200]


def test_longest_key_needing_escapes_can_be_locked(server):
    # A 200-byte key is a valid lock key even when its path form is longer
    # (each "/" travels as "%2F"): a job may hold it, so an admin must be able
    # to lock and release it.
    key = "s/" * 100
    j = submit(server, "lklong", [key])
    r = put_lock_req(server, urllib.parse.quote(key, safe=""), {"owner": "ops"})
    assert r.status == 200 and r.json["key"] == key, r
    assert_not_claimable(server, "lklong", [j["id"]])
    assert del_lock(server, urllib.parse.quote(key, safe="")).status == 200
    assert_queued(server, j["id"])


def test_put_on_key_held_by_running_job_is_409_naming_the_job(server):
    j = submit(server, "lk409", ["server:5"])
    running = claim_one(server, "lk409")
    r = put_lock_req(server, "server:5", {"owner": "ops", "reason": "reboot"})
    body = assert_error(r, 409, "locked")
    assert j["id"] in json.dumps(body), f"409 does not name the job: {body}"
    held = locks_by_key(server)
    assert held["server:5"]["job"] == j["id"] and held["server:5"]["owner"] is None, held
    complete(server, running)
    put_lock(server, "server:5", reason="reboot")


def test_put_same_owner_renews_other_owner_is_409(server):
    lk1 = put_lock(server, "server:6", owner="alice", ttl_s=60)
    time.sleep(0.3)
    lk2 = put_lock(server, "server:6", owner="alice", ttl_s=60)
    assert ts_parse(lk2["expires_at"]) >= ts_parse(lk1["expires_at"]) + 0.2, (lk1, lk2)
    r = put_lock_req(server, "server:6", {"owner": "bob", "ttl_s": 60})
    assert_error(r, 409, "locked")
    held = locks_by_key(server)
    assert held["server:6"]["owner"] == "alice", held
    assert held["server:6"]["expires_at"] == lk2["expires_at"], "the 409 changed the lock"


def test_renewal_keeps_the_lock_past_its_first_expiry(server):
    t0 = time.time()
    lk1 = put_lock(server, "server:12", owner="alice", ttl_s=1)
    j = submit(server, "lkren", ["server:12"])
    assert_not_claimable(server, "lkren", [j["id"]])
    time.sleep(max(0.0, t0 + 0.6 - time.time()))
    lk2 = put_lock(server, "server:12", owner="alice", ttl_s=1)
    assert ts_parse(lk2["expires_at"]) > ts_parse(lk1["expires_at"]) + 0.4, (lk1, lk2)
    # Past the first expiry, before the second: still held.
    time.sleep(max(0.0, ts_parse(lk1["expires_at"]) + 0.25 - time.time()))
    assert time.time() < ts_parse(lk2["expires_at"]) - 0.1, "test too slow to judge"
    assert "server:12" in locks_by_key(server), "a renewed lock expired at its old time"
    assert_not_claimable(server, "lkren", [j["id"]])
    got = claim(server, "lkren", max_jobs=10, wait_s=3)
    assert ids(got) == [j["id"]], got
    assert time.time() >= ts_parse(lk2["expires_at"]) - 0.1


def test_get_locks_lists_maintenance_locks_and_job_keys(server):
    assert list_locks(server) == []
    m = put_lock(server, "m:1", owner="ops", reason="kernel upgrade", ttl_s=600)
    n = put_lock(server, "m:2", owner="bob")
    assert n["reason"] is None
    j = submit(server, "lkget", ["server:1", "server:2"])
    q = submit(server, "lkget", ["server:3"])  # queued, never claimed
    running = claim(server, "lkget", max_jobs=1)
    assert ids(running) == [j["id"]]
    held = locks_by_key(server)
    assert set(held) == {"m:1", "m:2", "server:1", "server:2"}, \
        f"a queued job ({q['id']}) holds nothing: {held}"
    fields = ("key", "owner", "reason", "expires_at", "created_at", "job")
    for got, put in ((held["m:1"], m), (held["m:2"], n)):
        assert {f: got.get(f) for f in fields} == {f: put[f] for f in fields}, (got, put)
    for key in ("server:1", "server:2"):
        lk = held[key]
        assert lk["job"] == j["id"] and lk["owner"] is None, lk
    # read, submit and worker may all list
    for role in ("read", "submit", "worker", "admin"):
        assert len(list_locks(server, token=role)) == 4
    complete(server, running[0])
    assert set(locks_by_key(server)) == {"m:1", "m:2"}, "job keys outlived the job"


def test_delete_unknown_or_job_held_key_is_404(server):
    assert_error(del_lock(server, "nobody:1"), 404, "not_found")
    put_lock(server, "once:1")
    assert del_lock(server, "once:1").status == 200
    assert_error(del_lock(server, "once:1"), 404, "not_found")
    j = submit(server, "lkdel", ["server:4"])
    claim_one(server, "lkdel")
    # A job's key is not a maintenance lock: DELETE must not free it.
    assert_error(del_lock(server, "server:4"), 404, "not_found")
    held = locks_by_key(server)
    assert held["server:4"]["job"] == j["id"], held
    k = submit(server, "lkdel", ["server:4"])
    assert_not_claimable(server, "lkdel", [k["id"]])


def test_roles(server):
    for role in ("read", "submit", "worker"):
        assert_error(put_lock_req(server, "r:1", {"owner": "ops"}, token=role),
                     403, "forbidden")
    assert list_locks(server, token="admin") == []
    put_lock(server, "r:1")
    for role in ("read", "submit", "worker"):
        assert_error(del_lock(server, "r:1", token=role), 403, "forbidden")
    assert "r:1" in locks_by_key(server)
    assert [lk["key"] for lk in list_locks(server, token="read")] == ["r:1"]
    for method, path in (("GET", "/v1/locks"), ("PUT", "/v1/locks/r:1"),
                         ("DELETE", "/v1/locks/r:1")):
        body = {"owner": "ops"} if method == "PUT" else None
        r = server.request(method, path, body, token=None)
        assert_error(r, 401, "unauthorized")
    assert del_lock(server, "r:1").status == 200


# ------------------------------------------- released when the attempt ends


def two_sharing(server, queue, key):
    """a runs holding key; b waits for it (set aside by a claim)."""
    a = submit(server, queue, [key])
    b = submit(server, queue, [key])
    ja = claim_one(server, queue)
    assert ja["id"] == a["id"]
    assert_not_claimable(server, queue, [b["id"]])
    return ja, b


def test_locks_released_when_attempt_fails_for_good(server):
    ja, b = two_sharing(server, "lkf", "k:f")
    assert fail(server, ja, "dead", retryable=False)["state"] == "failed"
    assert_queued(server, b["id"])
    assert ids(claim(server, "lkf", max_jobs=10)) == [b["id"]]


def test_locks_released_when_attempt_fails_with_retry_pending(server):
    put_queue(server, "lkfr", max_attempts=2,
              backoff={"initial_s": 30, "factor": 1, "max_s": 30, "jitter": 0})
    ja, b = two_sharing(server, "lkfr", "k:fr")
    assert fail(server, ja, "transient")["state"] == "scheduled"
    # The attempt ended: its keys go with it, even though the job will retry.
    assert_queued(server, b["id"])
    assert ids(claim(server, "lkfr", max_jobs=10)) == [b["id"]]


def test_locks_released_when_attempt_times_out(server):
    put_queue(server, "lkto", timeout_s=1, heartbeat_timeout_s=60, max_attempts=1)
    t0 = time.monotonic()
    ja, b = two_sharing(server, "lkto", "k:to")
    got = claim(server, "lkto", worker="w2", max_jobs=10, wait_s=5)
    took = time.monotonic() - t0
    assert ids(got) == [b["id"]], got
    assert 0.8 <= took <= 1.0 + PROMPT_S, f"waiting job started after {took:.2f}s"
    a = server.get_job(ja["id"], token="admin")
    assert a["state"] == "failed" and a["error"]["kind"] == "timeout", a


def test_killed_worker_locks_released_when_lease_ends(server):
    put_queue(server, "lkhb", heartbeat_timeout_s=1, timeout_s=0, max_attempts=1)
    t0 = time.monotonic()
    ja, b = two_sharing(server, "lkhb", "k:hb")  # the worker never heartbeats
    got = claim(server, "lkhb", worker="w2", max_jobs=10, wait_s=5)
    took = time.monotonic() - t0
    assert ids(got) == [b["id"]], got
    assert 0.8 <= took <= 1.0 + PROMPT_S, f"waiting job started after {took:.2f}s"
    a = server.get_job(ja["id"], token="admin")
    assert a["state"] == "failed" and a["error"]["kind"] == "heartbeat_timeout", a
    assert_error(lease_call(server, ja["id"], "complete", ja["lease"]["token"]),
                 409, "lease_lost")
    assert locks_by_key(server)["k:hb"]["job"] == b["id"]


def test_locks_released_when_running_job_is_canceled(server):
    ja, b = two_sharing(server, "lkc", "k:c")
    assert cancel(server, ja["id"])["cancel_requested"] is True
    # Still running until the worker acknowledges: the key stays held.
    time.sleep(0.2)
    assert_not_claimable(server, "lkc", [b["id"]])
    assert locks_by_key(server)["k:c"]["job"] == ja["id"]
    assert fail(server, ja, "acknowledged")["state"] == "canceled"
    assert_queued(server, b["id"])
    assert ids(claim(server, "lkc", max_jobs=10)) == [b["id"]]


def test_manual_retry_of_a_job_whose_key_is_held_waits(server):
    a = submit(server, "lkmr", ["k:mr"])
    assert fail(server, claim_one(server, "lkmr"), retryable=False)["state"] == "failed"
    put_lock(server, "k:mr")
    r = server.request("POST", f"/v1/jobs/{a['id']}/retry", {}, token="submit")
    assert r.status == 200, r
    assert_not_claimable(server, "lkmr", [a["id"]])
    assert del_lock(server, "k:mr").status == 200
    got = claim(server, "lkmr", max_jobs=10, wait_s=2)
    assert [(j["id"], j["attempt"]) for j in got] == [(a["id"], 2)], got


def test_cancel_of_waiting_job_leaves_the_holder_alone(server):
    ja, b = two_sharing(server, "lkcw", "k:cw")
    c = submit(server, "lkcw", ["k:cw"])
    assert cancel(server, b["id"])["state"] == "canceled"
    assert locks_by_key(server)["k:cw"]["job"] == ja["id"]
    assert_not_claimable(server, "lkcw", [c["id"]])
    complete(server, ja)
    assert_queued(server, c["id"])
    assert server.get_job(b["id"], token="admin")["state"] == "canceled"


# ------------------------------------------------------------------ restart


def test_locks_hold_across_kill_9(server):
    ja, b = two_sharing(server, "lkr", "srv:1")
    put_lock(server, "srv:2", owner="ops", reason="maintenance")
    c = submit(server, "lkr", ["srv:2"])
    assert_not_claimable(server, "lkr", [c["id"]])
    crash_and_restart(server)
    held = locks_by_key(server)
    assert held["srv:1"]["job"] == ja["id"], held
    assert held["srv:2"]["owner"] == "ops" and held["srv:2"]["job"] is None, held
    assert claim(server, "lkr", max_jobs=10) == [], "a lock was lost in the crash"
    assert_lock_waiting(server, b["id"])
    assert_lock_waiting(server, c["id"])
    # a new job on a held key waits as well
    d = submit(server, "lkr", ["srv:2"])
    assert_not_claimable(server, "lkr", [d["id"]])
    # releasing the maintenance lock after the restart starts its oldest waiter
    w = waiting_claim(server, "lkr")
    t_del = time.monotonic()
    assert del_lock(server, "srv:2").status == 200
    got = w.result(timeout=6)
    assert w.t_done - t_del < AT_ONCE_S, f"started {w.t_done - t_del:.2f}s after DELETE"
    assert ids(got) == [c["id"]], got
    # and the job-held key goes with the (pre-crash) lease
    complete(server, ja)
    assert_queued(server, b["id"])
    assert ids(claim(server, "lkr", max_jobs=10)) == [b["id"]]


def test_ttl_lock_expired_while_down_is_gone_after_restart(server):
    t0 = time.time()
    short = put_lock(server, "srv:3", ttl_s=1)
    long_ = put_lock(server, "srv:4", ttl_s=4)
    j3 = submit(server, "lkrt", ["srv:3"])
    j4 = submit(server, "lkrt", ["srv:4"])
    assert_not_claimable(server, "lkrt", [j3["id"], j4["id"]])
    crash_and_restart(server, down_s=max(0.0, ts_parse(short["expires_at"]) + 0.3 - time.time()))
    assert time.time() < ts_parse(long_["expires_at"]) - 1.0, "restart too slow to judge"
    assert_queued(server, j3["id"], timeout=PROMPT_S)
    held = locks_by_key(server)
    assert "srv:3" not in held and "srv:4" in held, held
    got = claim(server, "lkrt", max_jobs=10)
    assert ids(got) == [j3["id"]], got
    assert_lock_waiting(server, j4["id"])
    # the unexpired one still frees itself on time after the restart
    got = claim(server, "lkrt", max_jobs=10, wait_s=6)
    t = time.time()
    assert ids(got) == [j4["id"]], got
    exp = ts_parse(long_["expires_at"])
    assert exp - 0.1 <= t <= exp + PROMPT_S, f"started {t - exp:+.2f}s from expiry"
    assert t - t0 < 10


def test_lease_ended_while_down_releases_locks_after_restart(server):
    put_queue(server, "lkrl", heartbeat_timeout_s=1, timeout_s=0, max_attempts=1)
    ja, b = two_sharing(server, "lkrl", "srv:5")
    crash_and_restart(server, down_s=1.2)
    assert_queued(server, b["id"], timeout=PROMPT_S)
    a = server.get_job(ja["id"], token="admin")
    assert a["state"] == "failed" and a["error"]["kind"] == "heartbeat_timeout", a
    assert ids(claim(server, "lkrl", max_jobs=10)) == [b["id"]]
