"""Retention: a queue's retention_s prunes its terminal jobs with their events
and artifacts once they ended that long ago (docs/api.md "Retention").

Covered: succeeded, failed and canceled jobs of a queue with retention_s 1
disappear (job, events, artifacts, their files) within a few seconds, while
its scheduled, queued and running jobs and every job of a queue without
retention stay; a job that just ended is kept until its time (and for a
dedup window longer than its retention); a retention turned off again stops
pruning; a backlog bigger than one batch goes in several rounds of at most a
batch each while the server keeps answering; a pruned job's rows leave its
subscription's delivery log; pruning a job whose webhooks still wait for a retry
leaves another job's deliveries, retrying at the same time, in order.
"""

import re
import time

from conftest import (
    claim_one,
    job_events,
    lease_call,
    put_queue,
    ts_parse,
    ts_format,
)
from webhook_receiver import (
    all_sub_deliveries,
    create_sub,
    first_arrivals,
    poll_sub_deliveries,
    run_to_success,
    wh_server,
)

GONE_WITHIN_S = 12  # retention 1 s, rounds every 1 s; generous for slow builds
ROUND_RE = re.compile(r"retention: deleted (\d+) ended jobs")  # a round's debug line


def status(server, path):
    return server.request("GET", path, token="read").status


def gone(server, job_id):
    return status(server, f"/v1/jobs/{job_id}") == 404


def wait_gone(server, job_ids, timeout=GONE_WITHIN_S):
    deadline = time.monotonic() + timeout
    left = set(job_ids)
    while left:
        left = {j for j in left if not gone(server, j)}
        if not left:
            return
        assert time.monotonic() < deadline, f"still there after {timeout}s: {sorted(left)}"
        time.sleep(0.1)


def artifact_dir(server, job_id):
    return server.data_dir / "artifacts" / job_id


def put_artifact(server, job_id, lease, name="log", data=b"some bytes"):
    r = server.request("PUT", f"/v1/jobs/{job_id}/artifacts/{name}", raw=data, token="worker",
                       headers={"X-Drover-Lease": lease, "Content-Type": "text/plain"})
    assert r.status == 201, r
    assert artifact_dir(server, job_id).exists()


def succeeded_job(server, queue, with_artifact=True):
    job = server.submit(queue)
    claimed = claim_one(server, queue)
    assert claimed["id"] == job["id"]
    lease = claimed["lease"]["token"]
    if with_artifact:
        put_artifact(server, job["id"], lease)
    r = lease_call(server, job["id"], "complete", lease, result={"ok": True})
    assert r.status == 200 and r.json["state"] == "succeeded", r
    return r.json


def failed_job(server, queue):
    job = server.submit(queue)
    claimed = claim_one(server, queue)
    lease = claimed["lease"]["token"]
    put_artifact(server, job["id"], lease, name="stderr")
    r = lease_call(server, job["id"], "fail", lease,
                   error={"message": "boom", "retryable": False})
    assert r.status == 200 and r.json["state"] == "failed", r
    return r.json


def canceled_job(server, queue):
    job = server.submit(queue)
    r = server.request("POST", f"/v1/jobs/{job['id']}/cancel", token="submit")
    assert r.status == 200 and r.json["state"] == "canceled", r
    return r.json


def test_terminal_jobs_go_with_events_and_artifacts_the_rest_stays(server):
    put_queue(server, "short", retention_s=1)
    kept_terminal = succeeded_job(server, "forever")  # retention 0, the default

    ended = [succeeded_job(server, "short"), failed_job(server, "short"),
             canceled_job(server, "short")]
    running = server.submit("short")
    claimed = claim_one(server, "short")
    assert claimed["id"] == running["id"]
    put_artifact(server, running["id"], claimed["lease"]["token"])
    queued = server.submit("short")
    scheduled = server.submit("short", run_at=ts_format(time.time() + 3600))
    assert scheduled["state"] == "scheduled"

    wait_gone(server, [j["id"] for j in ended])
    for j in ended:
        assert status(server, f"/v1/jobs/{j['id']}/events") == 404
        assert status(server, f"/v1/jobs/{j['id']}/artifacts") == 404
        assert status(server, f"/v1/jobs/{j['id']}/artifacts/log") == 404
    # Their files follow the commit that deleted their rows, within a round or two.
    deadline = time.monotonic() + 5
    while any(artifact_dir(server, j["id"]).exists() for j in ended):
        assert time.monotonic() < deadline, [j["id"] for j in ended
                                             if artifact_dir(server, j["id"]).exists()]
        time.sleep(0.1)
    r = server.request("GET", "/v1/jobs?queue=short&limit=500", token="read")
    assert {j["id"] for j in r.json["jobs"]} == {running["id"], queued["id"], scheduled["id"]}

    # Not terminal: kept, whatever their age.
    time.sleep(1.5)
    assert server.get_job(running["id"])["state"] == "running"
    assert server.get_job(queued["id"])["state"] == "queued"
    assert server.get_job(scheduled["id"])["state"] == "scheduled"
    assert len(job_events(server, running["id"])) >= 2
    assert artifact_dir(server, running["id"]).exists()
    assert status(server, f"/v1/jobs/{running['id']}/artifacts/log") == 200
    # Another queue's ended job: kept, with its artifact.
    assert server.get_job(kept_terminal["id"])["state"] == "succeeded"
    assert status(server, f"/v1/jobs/{kept_terminal['id']}/artifacts/log") == 200
    assert len(job_events(server, kept_terminal["id"])) >= 3


def test_a_job_that_just_ended_is_kept_until_its_time(server):
    put_queue(server, "three", retention_s=3)
    job = succeeded_job(server, "three", with_artifact=False)
    ended_at = ts_parse(job["updated_at"])
    while not gone(server, job["id"]):
        assert time.time() < ended_at + 3 + GONE_WITHIN_S, "not pruned in time"
        time.sleep(0.05)
    # Our clock and the server's are the same machine's.
    assert time.time() >= ended_at + 3 - 0.05, time.time() - ended_at


def test_a_dedup_window_longer_than_the_retention_keeps_the_job(server):
    put_queue(server, "dd", retention_s=1, dedup_window_s=4)
    first = server.submit("dd", dedup_key="order-7")
    r = server.request("POST", f"/v1/jobs/{first['id']}/cancel", token="submit")
    assert r.status == 200, r
    ended_at = ts_parse(r.json["updated_at"])
    time.sleep(2.5)
    # Past the retention, inside the dedup window: still there, still deduplicating.
    again = server.request("POST", "/v1/jobs", {"queue": "dd", "dedup_key": "order-7"},
                           token="submit")
    assert again.status == 200 and again.json["id"] == first["id"], again
    wait_gone(server, [first["id"]])
    assert time.time() >= ended_at + 4 - 0.05


def test_retention_turned_off_again_stops_pruning(server):
    put_queue(server, "flip", retention_s=1)
    job = succeeded_job(server, "flip", with_artifact=False)
    put_queue(server, "flip", retention_s=0)
    time.sleep(3)
    assert server.get_job(job["id"])["state"] == "succeeded"


def test_a_backlog_goes_in_rounds_and_the_server_keeps_answering(make_server):
    server = make_server(args=["--log-level", "debug"])  # for each round's count
    put_queue(server, "bulk", retention_s=1)
    ids = []
    for _ in range(450):  # more than two rounds of 200
        ids.append(canceled_job(server, "bulk")["id"])
    keep = server.submit("bulk")
    time.sleep(1)
    t0 = time.monotonic()
    slowest = 0.0
    while True:
        start = time.monotonic()
        r = server.request("GET", "/v1/jobs?queue=bulk&limit=500", token="read")
        slowest = max(slowest, time.monotonic() - start)
        assert r.status == 200, r
        if [j["id"] for j in r.json["jobs"]] == [keep["id"]]:
            break
        assert time.monotonic() - t0 < GONE_WITHIN_S, len(r.json["jobs"])
        time.sleep(0.05)
    assert slowest < 2.0, slowest
    assert all(gone(server, i) for i in ids[:5] + ids[-5:])
    # Each round's transaction deleted at most one batch (RETENTION_BATCH,
    # 200). A round logs its count after the commit: wait for the last line.
    deadline = time.monotonic() + 5
    while True:
        rounds = [int(m.group(1)) for m in (ROUND_RE.fullmatch(rec.get("msg", ""))
                                            for rec in server.log_records()) if m]
        if sum(rounds) >= len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sum(rounds) == len(ids) and max(rounds) <= 200 and len(rounds) >= 3, rounds


def test_kill_9_mid_sweep_then_restart_finishes_the_job(make_server):
    s = make_server()
    put_queue(s, "crash", retention_s=1)
    ended = [succeeded_job(s, "crash") for _ in range(20)]
    ids = [j["id"] for j in ended]
    # Kill as soon as the first job is pruned: its files may or may not be gone yet.
    deadline = time.monotonic() + GONE_WITHIN_S
    while not any(gone(s, i) for i in ids[:3]):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    s.kill()
    s.start(listen=f"127.0.0.1:{s.port}")
    wait_gone(s, ids)
    deadline = time.monotonic() + 5
    while any(artifact_dir(s, i).exists() for i in ids):
        assert time.monotonic() < deadline, [i for i in ids if artifact_dir(s, i).exists()]
        time.sleep(0.1)


def test_pruning_a_job_with_failing_webhooks_keeps_other_jobs_in_order(make_server, receiver,
                                                                     make_receiver):
    """The deliverer keeps, per (job, destination), how many rows wait for a
    retry; later events of that key wait behind them. When retention deletes
    a job with such rows, the deliverer forgets that job's keys, and only
    its: a job whose first delivery is retrying across the prune still gets
    every event, in order. (Two receivers, and a breaker that waits for 100
    failures: the endpoint's circuit must not pause B's retries.)"""
    srv = wh_server(make_server, "breaker_after = 100\n")
    put_queue(srv, "short-lived", retention_s=1)
    failing = make_receiver()
    failing.set_default("/gone", (500, {}, "never"))
    # B's first event fails for ~3.8 s of retries (200, 400, 800 ms, then
    # 800 ms), long enough to be pending while A is pruned and after.
    receiver.answer("/b", *[(500, {}, "not yet")] * 6)
    b = srv.submit("kept", webhook_url=receiver.url + "/b")["id"]
    a = srv.submit("short-lived", webhook_url=failing.url + "/gone")["id"]
    r = srv.request("POST", f"/v1/jobs/{a}/cancel", token="submit")
    assert r.status == 200 and r.json["state"] == "canceled", r
    failing.wait_for(lambda got: any(x["job_id"] == a for x in got),
                     what="a delivery of the job to prune")
    wait_gone(srv, [a])
    # B's later events come after the prune, while its first still waits.
    run_to_success(srv, "kept", b)
    seqs = [e["seq"] for e in job_events(srv, b)]
    recs = receiver.wait_seqs(b, seqs, path="/b", timeout=15)
    # Event n+1 is not sent before event n is delivered: every request for
    # a seq comes after the one that delivered the seq before it.
    trace = [(x["seq"], x["answer"]) for x in recs]
    assert first_arrivals(recs) == seqs, trace
    for prev, seq in zip(seqs, seqs[1:]):
        delivered = next(i for i, x in enumerate(recs) if x["seq"] == prev and x["answer"] < 300)
        first = next(i for i, x in enumerate(recs) if x["seq"] == seq)
        assert first > delivered, trace
    assert trace[:6] == [(seqs[0], 500)] * 6, trace
    # A is gone with its deliveries; the server still answers for both.
    assert status(srv, f"/v1/jobs/{a}/deliveries") == 404
    assert status(srv, f"/v1/jobs/{b}") == 200


def test_a_pruned_job_leaves_no_rows_in_its_subscriptions_delivery_log(make_server, receiver):
    """A job's delivery rows go with it: once the sweep pruned a job, the
    subscription's own log (GET /v1/subscriptions/{id}/deliveries, which
    outlives the job) lists none of its rows, while a kept job's rows to the
    same subscription stay as they were."""
    srv = wh_server(make_server)
    sub = create_sub(srv, url=receiver.url + "/sub-log", queues=["prune-log", "keep-log"])
    pruned = srv.submit("prune-log")["id"]
    kept = srv.submit("keep-log")["id"]
    run_to_success(srv, "prune-log", pruned, steps=[("one", 1)], result={"ok": True})
    run_to_success(srv, "keep-log", kept, result={"ok": True})
    seqs = {j: [e["seq"] for e in job_events(srv, j)] for j in (pruned, kept)}

    # Every event of both jobs is delivered and listed in the subscription's log.
    def rows_of(ds, job_id):
        return [d for d in ds if d["job"] == job_id]

    before = poll_sub_deliveries(
        srv, sub["id"],
        lambda ds: all(sorted(d["seq"] for d in rows_of(ds, j)) == seqs[j] and
                       all(d["state"] == "delivered" for d in rows_of(ds, j))
                       for j in seqs),
        what="both jobs' deliveries in the subscription's log")
    assert len(before) == len(seqs[pruned]) + len(seqs[kept]), before
    assert {r["job_id"] for r in receiver.got(path="/sub-log")} == {pruned, kept}

    # Only now does its queue get a retention (a PUT starts a round at once).
    put_queue(srv, "prune-log", retention_s=1)
    wait_gone(srv, [pruned])
    after = all_sub_deliveries(srv, sub["id"])
    assert rows_of(after, pruned) == [], \
        f"rows of pruned job {pruned} still listed: {rows_of(after, pruned)}"
    assert after == rows_of(before, kept), (before, after)
    assert status(srv, f"/v1/jobs/{pruned}/deliveries") == 404
    assert status(srv, f"/v1/subscriptions/{sub['id']}") == 200
