"""Retention: a queue's retention_s prunes its terminal jobs with their events
and artifacts once they ended that long ago (docs/api.md "Retention").

Covered: succeeded, failed and canceled jobs of a queue with retention_s 1
disappear (job, events, artifacts, their files) within a few seconds, while
its scheduled, queued and running jobs and every job of a queue without
retention stay; a job that just ended is kept until its time (and for a
dedup window longer than its retention); a retention turned off again stops
pruning; a backlog bigger than one batch goes in several rounds while the
server keeps answering.
"""

import time

from conftest import (
    claim_one,
    job_events,
    lease_call,
    put_queue,
    ts_parse,
    ts_format,
)

GONE_WITHIN_S = 12  # retention 1 s, rounds every 1 s; generous for slow builds


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


def test_a_backlog_goes_in_rounds_and_the_server_keeps_answering(server):
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
