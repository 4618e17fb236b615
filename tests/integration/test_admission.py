"""Contract tests for admission (docs/api.md, POST /v1/jobs, "Admission: dedup
and concurrency keys"; DESIGN.md §1 Admission): dedup_key with and without the
queue's dedup_window_s, concurrency_key with the queue's concurrency_limit or
a per-submit "concurrency_limit", on_limit "reject" (409 concurrency_limited
naming the active job) and "queue" (waiting_for "concurrency", started oldest
first when a slot frees on any terminal transition), races of concurrent
submits, and all of it across a kill -9 and restart.

Every wait is bounded and policies use seconds-scale values so the file stays
short."""

import os
import time

import pytest

from conftest import (
    Async,
    ULID_RE,
    assert_error,
    claim,
    claim_one,
    job_events,
    lease_call,
    list_all_jobs,
    poll_job,
    put_queue,
    run_threads,
    ts_format,
)

N_RACE = 50
PROMPT_S = 1.5  # "the moment a slot frees": timer slack plus HTTP round trips


# ------------------------------------------------------------------ helpers


def submit_req(server, queue, token="submit", **fields):
    """POST /v1/jobs; returns the Response (no status assertion)."""
    return server.request("POST", "/v1/jobs", {"queue": queue, **fields}, token=token)


def submit_created(server, queue, **fields):
    r = submit_req(server, queue, **fields)
    assert r.status == 202, r
    assert "deduplicated" not in r.json, f"a created job carries no 'deduplicated': {r.json}"
    assert ULID_RE.match(r.json["id"]), r.json
    return r.json


def submit_dedup(server, queue, first_id, **fields):
    r = submit_req(server, queue, **fields)
    assert r.status == 200, f"expected 200 deduplicated to {first_id}, got {r!r}"
    assert r.json.get("deduplicated") is True, r.json
    assert r.json["id"] == first_id, r.json
    return r.json


def complete(server, job, result=None):
    r = lease_call(server, job["id"], "complete", job["lease"]["token"], result=result)
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


def state(server, job_id):
    return server.get_job(job_id, token="admin")["state"]


def wait_state(server, job_id, st, timeout=PROMPT_S):
    return poll_job(server, job_id, lambda j: j["state"] == st, timeout,
                    interval=0.02, what=f"state {st}")


def assert_waiting(server, job_id):
    j = server.get_job(job_id, token="admin")
    assert j["state"] == "scheduled" and j["waiting_for"] == "concurrency", \
        f"expected scheduled/waiting_for concurrency: {j}"
    return j


def assert_queued(server, job_id):
    """The job is (or within PROMPT_S becomes) queued, waiting for nothing."""
    j = wait_state(server, job_id, "queued")
    assert j["waiting_for"] is None, f"a queued job waits for nothing: {j}"
    return j


def assert_still_waiting(server, job_ids, hold_s=0.3):
    """Each job stays waiting for concurrency over hold_s (a freed slot would
    promote it at once)."""
    deadline = time.monotonic() + hold_s
    while True:
        for jid in job_ids:
            assert_waiting(server, jid)
        if time.monotonic() >= deadline:
            return
        time.sleep(0.05)


def assert_409_limited(r, active_id, key):
    """409 concurrency_limited naming the active job: active_id is its id, or
    a set of ids any of which may be named."""
    body = assert_error(r, 409, "concurrency_limited")
    allowed = {active_id} if isinstance(active_id, str) else set(active_id)
    active = body.get("active_job")
    assert active in allowed, f"active_job not in {allowed}: {body}"
    assert active in body["message"], f"message does not name the active job: {body}"
    assert key in body["message"], f"message does not name the key: {body}"
    return body


def queue_mode(server, name, limit=1, **policy):
    put_queue(server, name, concurrency_limit=limit, on_limit="queue", **policy)


def reject_mode(server, name, limit=1, **policy):
    put_queue(server, name, concurrency_limit=limit, on_limit="reject", **policy)


def submit_backlog(server, queue, key, n):
    """Submit n jobs one after another; the first takes the (single) slot."""
    jobs = [submit_created(server, queue, concurrency_key=key, payload={"n": i})
            for i in range(n)]
    assert jobs[0]["state"] == "queued" and jobs[0]["waiting_for"] is None, jobs[0]
    for j in jobs[1:]:
        assert j["state"] == "scheduled", j
        assert j["waiting_for"] == "concurrency", j
    return [j["id"] for j in jobs]


# -------------------------------------------------------------------- dedup


def test_dedup_returns_first_job_with_200(server):
    first = submit_created(server, "dd", dedup_key="order-1", payload={"v": 1})
    again = submit_dedup(server, "dd", first["id"], dedup_key="order-1", payload={"v": 2})
    assert again["payload"] == {"v": 1}, "the first job is answered, not the second body"
    assert again["dedup_key"] == "order-1"
    assert again["state"] == "queued"
    # Even after the first has started (still not terminal).
    j = claim_one(server, "dd")
    assert j["id"] == first["id"]
    running = submit_dedup(server, "dd", first["id"], dedup_key="order-1")
    assert running["state"] == "running"
    assert [x["id"] for x in list_all_jobs(server, queue="dd")] == [first["id"]]


def test_dedup_is_per_queue_and_per_key(server):
    a = submit_created(server, "dq1", dedup_key="k1")
    b = submit_created(server, "dq2", dedup_key="k1")  # other queue
    c = submit_created(server, "dq1", dedup_key="k2")  # other key
    d = submit_created(server, "dq1")                  # no key
    e = submit_created(server, "dq1")                  # no key: never deduplicated
    assert len({a["id"], b["id"], c["id"], d["id"], e["id"]}) == 5
    submit_dedup(server, "dq1", a["id"], dedup_key="k1")
    submit_dedup(server, "dq2", b["id"], dedup_key="k1")
    submit_dedup(server, "dq1", c["id"], dedup_key="k2")
    assert len(list_all_jobs(server, queue="dq1")) == 4
    assert len(list_all_jobs(server, queue="dq2")) == 1


def test_dedup_without_window_ends_when_first_is_terminal(server):
    put_queue(server, "dt", dedup_window_s=0)
    first = submit_created(server, "dt", dedup_key="x")
    complete(server, claim_one(server, "dt"))
    second = submit_created(server, "dt", dedup_key="x")
    assert second["id"] != first["id"]
    # Canceled is terminal too.
    submit_dedup(server, "dt", second["id"], dedup_key="x")
    cancel(server, second["id"])
    third = submit_created(server, "dt", dedup_key="x")
    assert third["id"] not in (first["id"], second["id"])
    # Failed for good as well.
    put_queue(server, "dt2")
    f1 = submit_created(server, "dt2", dedup_key="x")
    assert fail(server, claim_one(server, "dt2"), retryable=False)["state"] == "failed"
    f2 = submit_created(server, "dt2", dedup_key="x")
    assert f2["id"] != f1["id"]


def test_dedup_window_outlives_terminal_first_job(server):
    put_queue(server, "dw", dedup_window_s=3)
    t0 = time.monotonic()
    first = submit_created(server, "dw", dedup_key="pay-9")
    done = complete(server, claim_one(server, "dw"))
    assert done["id"] == first["id"]
    again = submit_dedup(server, "dw", first["id"], dedup_key="pay-9")
    assert again["state"] == "succeeded"
    time.sleep(max(0.0, t0 + 2.3 - time.monotonic()))
    submit_dedup(server, "dw", first["id"], dedup_key="pay-9")  # still inside 3 s
    time.sleep(max(0.0, t0 + 3.4 - time.monotonic()))
    second = submit_created(server, "dw", dedup_key="pay-9")      # window over
    assert second["id"] != first["id"]
    submit_dedup(server, "dw", second["id"], dedup_key="pay-9")
    assert len(list_all_jobs(server, queue="dw")) == 2


def test_dedup_holds_past_window_while_first_not_terminal(server):
    put_queue(server, "dw1", dedup_window_s=1)
    first = submit_created(server, "dw1", dedup_key="k")
    time.sleep(1.3)
    submit_dedup(server, "dw1", first["id"], dedup_key="k")
    assert len(list_all_jobs(server, queue="dw1")) == 1


def test_concurrent_submits_with_one_dedup_key_create_one_job(server):
    rs = run_threads(N_RACE, lambda i: submit_req(
        server, "drace", dedup_key="same", payload={"i": i}))
    created = [r for r in rs if r.status == 202]
    deduped = [r for r in rs if r.status == 200]
    assert len(created) == 1, f"{len(created)} created: {[r.json for r in created][:3]}"
    assert len(deduped) == N_RACE - 1, [r for r in rs if r.status not in (200, 202)][:3]
    jid = created[0].json["id"]
    assert all(r.json["id"] == jid and r.json.get("deduplicated") is True for r in deduped), \
        {r.json["id"] for r in deduped}
    jobs = list_all_jobs(server, queue="drace")
    assert [j["id"] for j in jobs] == [jid]


# ------------------------------------------------------ concurrency: reject


def test_concurrent_submits_reject_mode_one_accepted(server):
    reject_mode(server, "crj", limit=1)
    rs = run_threads(N_RACE, lambda i: submit_req(
        server, "crj", concurrency_key="user:42", payload={"i": i}))
    created = [r for r in rs if r.status == 202]
    assert len(created) == 1, f"{len(created)} accepted"
    active = created[0].json["id"]
    refused = [r for r in rs if r.status != 202]
    assert len(refused) == N_RACE - 1
    for r in refused:
        assert_409_limited(r, active, "user:42")
    assert [j["id"] for j in list_all_jobs(server, queue="crj")] == [active], \
        "a refused submit created a job"


def test_reject_mode_slot_held_until_terminal(server):
    reject_mode(server, "crh", limit=1, max_attempts=2,
                backoff={"initial_s": 5, "factor": 1, "max_s": 5, "jitter": 0})
    first = submit_created(server, "crh", concurrency_key="k")
    # queued, running and waiting for a retry all hold the slot
    assert_409_limited(submit_req(server, "crh", concurrency_key="k"), first["id"], "k")
    j = claim_one(server, "crh")
    assert_409_limited(submit_req(server, "crh", concurrency_key="k"), first["id"], "k")
    assert fail(server, j, "transient")["state"] == "scheduled"
    assert_409_limited(submit_req(server, "crh", concurrency_key="k"), first["id"], "k")
    cancel(server, first["id"])
    second = submit_created(server, "crh", concurrency_key="k")
    # other keys, and jobs without a key, are not limited by it
    submit_created(server, "crh", concurrency_key="other")
    submit_created(server, "crh")
    submit_created(server, "crh")
    # completing frees the slot as well
    got = claim(server, "crh", max_jobs=10)
    assert second["id"] in [x["id"] for x in got]
    assert_409_limited(submit_req(server, "crh", concurrency_key="k"), second["id"], "k")
    complete(server, next(x for x in got if x["id"] == second["id"]))
    submit_created(server, "crh", concurrency_key="k")


def test_reject_mode_accepts_after_active_job_completes(server):
    reject_mode(server, "cra", limit=1)
    first = submit_created(server, "cra", concurrency_key="user:7")
    assert_409_limited(submit_req(server, "cra", concurrency_key="user:7"),
                       first["id"], "user:7")
    complete(server, claim_one(server, "cra"))
    second = submit_created(server, "cra", concurrency_key="user:7")
    assert second["id"] != first["id"] and second["state"] == "queued"


def test_dedup_answers_before_concurrency_reject(server):
    reject_mode(server, "cdd", limit=1)
    first = submit_created(server, "cdd", concurrency_key="k", dedup_key="d")
    # The same request again is deduplicated, not refused.
    submit_dedup(server, "cdd", first["id"], concurrency_key="k", dedup_key="d")
    assert_409_limited(submit_req(server, "cdd", concurrency_key="k", dedup_key="e"),
                       first["id"], "k")


def test_per_submit_limit_within_queue_limit(server):
    reject_mode(server, "cps", limit=3)
    a = submit_created(server, "cps", concurrency_key="k", concurrency_limit=2)
    b = submit_created(server, "cps", concurrency_key="k", concurrency_limit=2)
    r = submit_req(server, "cps", concurrency_key="k", concurrency_limit=2)
    assert_409_limited(r, {a["id"], b["id"]}, "k")
    # Without the override the queue's limit (3) applies.
    c = submit_created(server, "cps", concurrency_key="k")
    r = submit_req(server, "cps", concurrency_key="k")
    assert_409_limited(r, {a["id"], b["id"], c["id"]}, "k")
    assert len(list_all_jobs(server, queue="cps")) == 3


def test_per_submit_limit_on_unlimited_queue_is_enforced(server):
    # The queue has no limit (default): any per-submit limit is allowed, and
    # on_limit defaults to "queue".
    a = submit_created(server, "cfree", concurrency_key="k", concurrency_limit=1)
    b = submit_created(server, "cfree", concurrency_key="k", concurrency_limit=1)
    assert a["state"] == "queued"
    assert b["state"] == "scheduled" and b["waiting_for"] == "concurrency", b
    big = submit_created(server, "cfree", concurrency_key="other", concurrency_limit=100000)
    assert big["state"] == "queued"


def test_per_submit_limit_validation(server):
    reject_mode(server, "cval", limit=3)
    r = submit_req(server, "cval", concurrency_key="k", concurrency_limit=4)
    assert_error(r, 400, "invalid_field", field="concurrency_limit")
    for bad in (0, -1, 1.5, "2", True, [1], {}):
        r = submit_req(server, "cval", concurrency_key="k", concurrency_limit=bad)
        assert_error(r, 400, "invalid_field", field="concurrency_limit")
    r = submit_req(server, "cval", concurrency_limit=2)
    body = assert_error(r, 400, "invalid_field")
    assert body.get("field") in ("concurrency_limit", "concurrency_key"), body
    r = submit_req(server, "cfree", concurrency_limit=1)  # unlimited queue, no key
    body = assert_error(r, 400, "invalid_field")
    assert body.get("field") in ("concurrency_limit", "concurrency_key"), body
    assert list_all_jobs(server, queue="cval") == []
    assert list_all_jobs(server, queue="cfree") == []
    submit_created(server, "cval", concurrency_key="k", concurrency_limit=3)


# ------------------------------------------------------- concurrency: queue


def test_queue_mode_runs_one_at_a_time_in_order(server):
    queue_mode(server, "cq", limit=1)
    ids = submit_backlog(server, "cq", "user:1", 5)
    assert [j["id"] for j in list_all_jobs(server, queue="cq", state="scheduled")] == \
        list(reversed(ids[1:]))
    ran = []
    job = claim(server, "cq", max_jobs=10)
    assert [j["id"] for j in job] == [ids[0]], job
    job = job[0]
    for k in range(1, 5):
        ran.append(job["id"])
        assert claim(server, "cq", max_jobs=10) == [], "a second job of the key started"
        waiter = Async(lambda: claim(server, "cq", worker="w2", max_jobs=10, wait_s=5))
        time.sleep(0.2)
        assert not waiter.done.is_set(), f"claim answered while {job['id']} runs: {waiter.value}"
        for jid in ids[k:]:
            assert_waiting(server, jid)
        t_done = time.monotonic()
        complete(server, job)
        got = waiter.result(timeout=6)
        assert waiter.t_done - t_done < PROMPT_S, "the freed slot was not handed on at once"
        assert [j["id"] for j in got] == [ids[k]], f"expected job {k} ({ids[k]}), got {got}"
        assert got[0]["waiting_for"] is None, got[0]
        job = got[0]
    ran.append(job["id"])
    complete(server, job)
    assert ran == ids
    assert all(state(server, i) == "succeeded" for i in ids)
    # the jobs ran strictly one after another
    spans = []
    for i in ids:
        j = server.get_job(i, token="admin")
        spans.append((j["started_at"], j["updated_at"]))
    for (s1, e1), (s2, _) in zip(spans, spans[1:]):
        assert e1 <= s2, f"overlapping runs: {spans}"
    # a promoted job's history: created waiting, then queued, then run
    evs = [e for e in job_events(server, ids[1]) if e["type"] != "job.step"]
    assert [e["type"] for e in evs] == \
        ["job.created", "job.queued", "job.running", "job.succeeded"], evs
    assert evs[0]["state"] == "scheduled" and evs[1]["state"] == "queued", evs


def test_concurrent_submits_queue_mode_one_queued(server):
    queue_mode(server, "cqr", limit=1)
    rs = run_threads(N_RACE, lambda i: submit_req(
        server, "cqr", concurrency_key="k", payload={"i": i}))
    assert all(r.status == 202 for r in rs), [r for r in rs if r.status != 202][:3]
    queued = [r.json for r in rs if r.json["state"] == "queued"]
    assert len(queued) == 1, f"{len(queued)} admitted at once"
    assert len(list_all_jobs(server, queue="cqr", state="queued")) == 1
    waiting = list_all_jobs(server, queue="cqr", state="scheduled")
    assert len(waiting) == N_RACE - 1
    assert all(j["waiting_for"] == "concurrency" for j in waiting)
    got = claim(server, "cqr", max_jobs=100)
    assert [j["id"] for j in got] == [queued[0]["id"]], got
    complete(server, got[0])
    nxt = claim(server, "cqr", max_jobs=100, wait_s=2)
    assert len(nxt) == 1, f"{len(nxt)} started after one slot freed"
    assert nxt[0]["id"] in {j["id"] for j in waiting}
    assert len(list_all_jobs(server, queue="cqr", state="scheduled")) == N_RACE - 2


def test_queue_mode_final_failure_frees_slot(server):
    queue_mode(server, "cqf", limit=1, max_attempts=1)
    ids = submit_backlog(server, "cqf", "k", 3)
    j = claim_one(server, "cqf")
    assert fail(server, j, "dead", retryable=False)["state"] == "failed"
    assert_queued(server, ids[1])
    assert_waiting(server, ids[2])
    assert [x["id"] for x in claim(server, "cqf", max_jobs=10)] == [ids[1]]


def test_queue_mode_retry_keeps_slot(server):
    queue_mode(server, "cqt", limit=1, max_attempts=2,
               backoff={"initial_s": 0, "factor": 1, "max_s": 0, "jitter": 0})
    ids = submit_backlog(server, "cqt", "k", 2)
    j = claim_one(server, "cqt")
    assert fail(server, j, "transient")["state"] == "queued"
    assert_still_waiting(server, [ids[1]])
    again = claim(server, "cqt", max_jobs=10)
    assert [(x["id"], x["attempt"]) for x in again] == [(ids[0], 2)], again
    assert fail(server, again[0], "again")["state"] == "failed"  # attempts used up
    wait_state(server, ids[1], "queued")


def test_queue_mode_cancel_frees_slot(server):
    queue_mode(server, "cqc", limit=1)
    ids = submit_backlog(server, "cqc", "k", 4)
    # cancel of the queued slot holder
    cancel(server, ids[0])
    assert_queued(server, ids[1])
    assert_waiting(server, ids[2])
    # cancel of a running holder: the slot is held until the job is canceled
    j = claim_one(server, "cqc")
    assert j["id"] == ids[1]
    assert cancel(server, ids[1])["cancel_requested"] is True
    assert_still_waiting(server, [ids[2], ids[3]])
    assert fail(server, j, "acknowledged")["state"] == "canceled"
    assert_queued(server, ids[2])
    assert_waiting(server, ids[3])


def test_cancel_of_waiting_job_frees_no_slot(server):
    queue_mode(server, "cqw", limit=1)
    ids = submit_backlog(server, "cqw", "k", 3)
    assert cancel(server, ids[1])["state"] == "canceled"
    assert_queued(server, ids[0])
    assert_still_waiting(server, [ids[2]])
    assert [x["id"] for x in claim(server, "cqw", max_jobs=10)] == [ids[0]]
    assert_still_waiting(server, [ids[2]], hold_s=0.1)
    # a cancel request on the running holder frees nothing until it ends
    assert cancel(server, ids[0])["cancel_requested"] is True
    assert state(server, ids[0]) == "running"
    assert_still_waiting(server, [ids[2]])


def test_cancel_of_waiting_job_then_holder_completes(server):
    queue_mode(server, "cqw2", limit=1)
    ids = submit_backlog(server, "cqw2", "k", 3)
    cancel(server, ids[1])
    j = claim_one(server, "cqw2")
    complete(server, j)
    assert state(server, ids[1]) == "canceled"
    assert_queued(server, ids[2])
    assert [x["id"] for x in claim(server, "cqw2", max_jobs=10)] == [ids[2]]


def test_queue_mode_timeout_frees_slot(server):
    queue_mode(server, "cqto", limit=1, timeout_s=1, heartbeat_timeout_s=60, max_attempts=1)
    ids = submit_backlog(server, "cqto", "k", 3)
    t0 = time.monotonic()
    j = claim_one(server, "cqto")
    assert j["id"] == ids[0]
    got = claim(server, "cqto", worker="w2", max_jobs=10, wait_s=4)
    took = time.monotonic() - t0
    assert [x["id"] for x in got] == [ids[1]], got
    assert 0.8 <= took <= 1.0 + PROMPT_S, f"next job started after {took:.2f}s"
    first = server.get_job(ids[0], token="admin")
    assert first["state"] == "failed" and first["error"]["kind"] == "timeout", first
    assert_waiting(server, ids[2])


def test_killed_worker_slot_released_when_lease_ends(server):
    queue_mode(server, "cqhb", limit=1, heartbeat_timeout_s=1, timeout_s=0, max_attempts=1)
    ids = submit_backlog(server, "cqhb", "k", 3)
    t0 = time.monotonic()
    j = claim_one(server, "cqhb")  # the worker never heartbeats
    assert j["id"] == ids[0]
    got = claim(server, "cqhb", worker="w2", max_jobs=10, wait_s=4)
    took = time.monotonic() - t0
    assert [x["id"] for x in got] == [ids[1]], got
    assert 0.8 <= took <= 1.0 + PROMPT_S, f"next job started after {took:.2f}s"
    first = server.get_job(ids[0], token="admin")
    assert first["state"] == "failed", first
    assert first["error"]["kind"] == "heartbeat_timeout", first
    r = lease_call(server, ids[0], "complete", j["lease"]["token"])
    assert_error(r, 409, "lease_lost")
    assert_waiting(server, ids[2])


def test_cancel_of_running_holder_whose_lease_ends_frees_slot(server):
    queue_mode(server, "cqcl", limit=1, heartbeat_timeout_s=1, timeout_s=0)
    ids = submit_backlog(server, "cqcl", "k", 2)
    t0 = time.monotonic()
    claim_one(server, "cqcl")
    assert cancel(server, ids[0])["cancel_requested"] is True
    got = claim(server, "cqcl", worker="w2", max_jobs=10, wait_s=4)
    took = time.monotonic() - t0
    assert [x["id"] for x in got] == [ids[1]], got
    assert 0.8 <= took <= 1.0 + PROMPT_S, f"next job started after {took:.2f}s"
    assert state(server, ids[0]) == "canceled"


def test_queue_timeout_of_holder_frees_slot(server):
    queue_mode(server, "cqqt", limit=1, queue_timeout_s=1)
    t0 = time.monotonic()
    first = submit_created(server, "cqqt", concurrency_key="k")
    time.sleep(0.5)
    second = submit_created(server, "cqqt", concurrency_key="k")
    assert second["state"] == "scheduled" and second["waiting_for"] == "concurrency"
    # first never starts: its queue timeout (1 s) ends it and frees the slot
    # before second's own queue timeout (1.5 s after t0) comes.
    # (nobody claims: first stays queued until its queue timeout)
    poll_job(server, second["id"], lambda j: j["state"] != "scheduled", timeout=2.5,
             interval=0.02, what="second leaves scheduled")
    took = time.monotonic() - t0
    got = server.get_job(second["id"], token="admin")
    assert got["state"] == "queued" and took < 1.5, \
        f"{took:.2f}s after t0, second is {got['state']} ({got['error']})"
    assert [x["id"] for x in claim(server, "cqqt", max_jobs=10)] == [second["id"]]
    f = server.get_job(first["id"], token="admin")
    assert f["state"] == "failed" and f["error"]["kind"] == "queue_timeout", f


def test_run_at_job_coming_due_respects_limit(server):
    queue_mode(server, "cqra", limit=1)
    first = submit_created(server, "cqra", concurrency_key="k")
    run_at = time.time() + 0.6
    later = submit_created(server, "cqra", concurrency_key="k", run_at=ts_format(run_at))
    assert later["state"] == "scheduled", later
    j = claim_one(server, "cqra")
    assert j["id"] == first["id"]
    time.sleep(max(0.0, run_at + 0.5 - time.time()))
    # due, but the key's only slot is taken: it must not start
    assert claim(server, "cqra", max_jobs=10) == []
    got = server.get_job(later["id"], token="admin")
    assert got["state"] == "scheduled" and got["waiting_for"] == "concurrency", got
    complete(server, j)
    assert_queued(server, later["id"])


def test_waiting_job_keeps_its_run_at(server):
    # A job submitted for later that also has to wait for its key's slot
    # starts neither before its run_at nor while the slot is taken.
    queue_mode(server, "cqrw", limit=1)
    first = submit_created(server, "cqrw", concurrency_key="k")
    run_at = time.time() + 1.5
    later = submit_created(server, "cqrw", concurrency_key="k", run_at=ts_format(run_at))
    assert later["state"] == "scheduled", later
    cancel(server, first["id"])  # the slot frees long before run_at
    time.sleep(0.2)
    got = server.get_job(later["id"], token="admin")
    assert got["state"] == "scheduled", \
        f"started {run_at - time.time():.2f}s before its run_at: {got}"
    assert claim(server, "cqrw", max_jobs=10) == []
    got = claim(server, "cqrw", max_jobs=10, wait_s=3)
    t = time.time()
    assert [x["id"] for x in got] == [later["id"]], got
    assert t >= run_at - 0.1, f"claimed {run_at - t:.2f}s before run_at"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_waiting_job_past_its_run_at_does_not_spin(server):
    # A job waiting for a slot whose run_at has passed has nothing due: the
    # server must idle, not re-fire its timer in a loop.
    queue_mode(server, "cqsp", limit=1)
    first = submit_created(server, "cqsp", concurrency_key="k")
    later = submit_created(server, "cqsp", concurrency_key="k",
                           run_at=ts_format(time.time() + 0.3))
    time.sleep(0.6)
    c0 = cpu_seconds(server.proc.pid)
    time.sleep(1.5)
    used = cpu_seconds(server.proc.pid) - c0
    assert used < 0.5, f"idle server used {used:.2f}s of CPU in 1.5s"
    assert_waiting(server, later["id"])
    cancel(server, first["id"])
    assert_queued(server, later["id"])


def test_per_submit_limit_honoured_when_promoted(server):
    # A job that asked for at most 1 running per key is not started while
    # another job of the key holds a slot, even when the queue allows 3.
    queue_mode(server, "cqph", limit=3)
    a = submit_created(server, "cqph", concurrency_key="k")
    b = submit_created(server, "cqph", concurrency_key="k")
    c = submit_created(server, "cqph", concurrency_key="k", concurrency_limit=1)
    assert c["state"] == "scheduled" and c["waiting_for"] == "concurrency", c
    cancel(server, a["id"])
    assert state(server, b["id"]) == "queued"
    assert_still_waiting(server, [c["id"]])
    cancel(server, b["id"])
    assert_queued(server, c["id"])


def test_raising_queue_limit_starts_waiting_jobs_oldest_first(server):
    # Raising (or removing) the queue's limit frees slots: the jobs waiting
    # for them start, before any newer submit.
    queue_mode(server, "cqup", limit=1)
    ids = submit_backlog(server, "cqup", "k", 4)
    queue_mode(server, "cqup", limit=3)
    assert_queued(server, ids[1])
    assert_queued(server, ids[2])
    assert_still_waiting(server, [ids[3]], hold_s=0.1)
    queue_mode(server, "cqup", limit=0)
    assert_queued(server, ids[3])
    newer = submit_created(server, "cqup", concurrency_key="k")
    assert newer["state"] == "queued"
    assert [x["id"] for x in claim(server, "cqup", max_jobs=10)] == ids + [newer["id"]]


def test_lost_lease_with_retries_left_keeps_slot(server):
    queue_mode(server, "cqhr", limit=1, heartbeat_timeout_s=1, timeout_s=0, max_attempts=2,
               backoff={"initial_s": 0, "factor": 1, "max_s": 0, "jitter": 0})
    ids = submit_backlog(server, "cqhr", "k", 2)
    claim_one(server, "cqhr")
    poll_job(server, ids[0], lambda j: j["state"] == "queued" and j["attempt"] == 1,
             timeout=1 + PROMPT_S, interval=0.02, what="requeued after lost lease")
    assert_still_waiting(server, [ids[1]], hold_s=0.2)
    got = claim(server, "cqhr", max_jobs=10)
    assert [(x["id"], x["attempt"]) for x in got] == [(ids[0], 2)], got


def test_manual_retry_waits_for_the_keys_slot(server):
    # A retried job is unfinished again, so it needs a slot like any other.
    queue_mode(server, "cqmr", limit=1)
    a = submit_created(server, "cqmr", concurrency_key="k")
    assert fail(server, claim_one(server, "cqmr"), retryable=False)["state"] == "failed"
    b = submit_created(server, "cqmr", concurrency_key="k")
    assert b["state"] == "queued"
    r = server.request("POST", f"/v1/jobs/{a['id']}/retry", {}, token="submit")
    assert r.status == 200, r
    assert r.json["state"] == "scheduled" and r.json["waiting_for"] == "concurrency", r.json
    assert [x["id"] for x in claim(server, "cqmr", max_jobs=10)] == [b["id"]]
    assert_still_waiting(server, [a["id"]], hold_s=0.1)
    cancel(server, b["id"])
    assert_still_waiting(server, [a["id"]], hold_s=0.1)  # b still runs until acknowledged
    j = server.get_job(b["id"], token="admin")
    assert j["state"] == "running" and j["cancel_requested"], j


def test_different_keys_and_queues_do_not_block(server):
    queue_mode(server, "cqa", limit=1)
    queue_mode(server, "cqb", limit=1)
    a1 = submit_created(server, "cqa", concurrency_key="a")
    b1 = submit_created(server, "cqa", concurrency_key="b")
    n1 = submit_created(server, "cqa")  # no key: no limit
    n2 = submit_created(server, "cqa")
    o1 = submit_created(server, "cqb", concurrency_key="a")  # same key, other queue
    for j in (a1, b1, n1, n2, o1):
        assert j["state"] == "queued" and j["waiting_for"] is None, j
    a2 = submit_created(server, "cqa", concurrency_key="a")
    assert a2["state"] == "scheduled" and a2["waiting_for"] == "concurrency"
    got = claim(server, "cqa", max_jobs=10)
    assert sorted(x["id"] for x in got) == sorted([a1["id"], b1["id"], n1["id"], n2["id"]])
    # finishing b's job does not release a's slot
    complete(server, next(x for x in got if x["id"] == b1["id"]))
    complete(server, next(x for x in got if x["id"] == n1["id"]))
    assert_still_waiting(server, [a2["id"]])
    complete(server, next(x for x in got if x["id"] == a1["id"]))
    assert_queued(server, a2["id"])


def test_per_submit_limit_in_queue_mode(server):
    queue_mode(server, "cqp", limit=3)
    js = [submit_created(server, "cqp", concurrency_key="k", concurrency_limit=2)
          for _ in range(3)]
    assert [j["state"] for j in js] == ["queued", "queued", "scheduled"], js
    assert js[2]["waiting_for"] == "concurrency"
    got = claim(server, "cqp", max_jobs=10)
    assert [x["id"] for x in got] == [js[0]["id"], js[1]["id"]]
    complete(server, got[0])
    assert_queued(server, js[2]["id"])


# ------------------------------------------------------------------ restart


def crash_and_restart(server):
    port = server.port
    server.kill()
    server.start(listen=f"127.0.0.1:{port}")
    assert server.port == port


def test_queue_mode_backlog_survives_kill_9(server):
    queue_mode(server, "rq", limit=1)
    ids = submit_backlog(server, "rq", "k", 3)
    j = claim_one(server, "rq")
    crash_and_restart(server)
    assert state(server, ids[0]) == "running"
    assert_waiting(server, ids[1])
    assert_waiting(server, ids[2])
    assert claim(server, "rq", max_jobs=10) == []
    # a new submit still waits behind the running job
    late = submit_created(server, "rq", concurrency_key="k")
    assert late["state"] == "scheduled" and late["waiting_for"] == "concurrency"
    complete(server, j)
    assert_queued(server, ids[1])
    assert_waiting(server, ids[2])
    assert [x["id"] for x in claim(server, "rq", max_jobs=10)] == [ids[1]]


def test_lost_lease_across_kill_9_frees_slot(server):
    queue_mode(server, "rql", limit=1, heartbeat_timeout_s=1, timeout_s=0, max_attempts=1)
    ids = submit_backlog(server, "rql", "k", 2)
    claim_one(server, "rql")
    crash_and_restart(server)
    got = claim(server, "rql", max_jobs=10, wait_s=4)
    assert [x["id"] for x in got] == [ids[1]], got
    first = server.get_job(ids[0], token="admin")
    assert first["state"] == "failed" and first["error"]["kind"] == "heartbeat_timeout", first


def test_dedup_and_reject_hold_after_kill_9(server):
    reject_mode(server, "rd", limit=1)
    put_queue(server, "rdw", dedup_window_s=60)
    first = submit_created(server, "rd", dedup_key="order-5", concurrency_key="user:5")
    windowed = submit_created(server, "rdw", dedup_key="w")
    cancel(server, windowed["id"])
    crash_and_restart(server)
    submit_dedup(server, "rd", first["id"], dedup_key="order-5", concurrency_key="user:5")
    submit_dedup(server, "rdw", windowed["id"], dedup_key="w")
    assert_409_limited(submit_req(server, "rd", concurrency_key="user:5"),
                       first["id"], "user:5")
    rs = run_threads(20, lambda i: submit_req(server, "rd", dedup_key="order-5",
                                              concurrency_key="user:5"))
    assert all(r.status == 200 and r.json["id"] == first["id"] for r in rs), rs[:3]
    assert [j["id"] for j in list_all_jobs(server, queue="rd")] == [first["id"]]
    assert [j["id"] for j in list_all_jobs(server, queue="rdw")] == [windowed["id"]]
