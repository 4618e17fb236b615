"""The bodies of the failure-path events as a receiver gets them (docs/api.md
"Events and webhooks", "Workers: claims and leases" for the fail call,
"POST /v1/jobs/{id}/cancel"; DESIGN.md §1 "Events and webhooks").

test_webhooks checks the body of a job that succeeds; here the other ways a
job goes: an attempt that fails and is retried after its backoff
(job.scheduled, job.queued, job.running again) and then fails for good
(job.failed), and cancels — of a queued job (canceled at once) and of a
running one (job.cancel_requested, then job.canceled when its worker
acknowledges by failing). Each body is checked field by field against the
documented shape — `state`, `previous_state`, `step`, `attempt` as of the
event, `error` the event's (as the worker's fail call gave it, with the kind
drover sets), `result` null, the timestamps — and against the job's history
(`GET /v1/jobs/{id}/events`); every delivery's Standard Webhooks signature is
verified with webhook_sig.py against the server's secret, never with
drover's code.

A receiver (webhook_receiver.py) on 127.0.0.1 records the deliveries; the
server may deliver to loopback (`--allow-target 127.0.0.0/8`) on the fast
retry schedule. Every wait has a deadline.
"""

from conftest import (
    TIME_RE,
    claim_one,
    job_events,
    lease_call,
    put_queue,
    ts_parse,
)
from webhook_receiver import check_body, first_arrivals, server_secret, verifies, wh_server
from webhook_sig import new_secret

BACKOFF_S = 1  # the retry's backoff (integer seconds, no jitter)

ERROR_KEYS = {"kind", "message", "step", "run_id", "attempt", "at"}


# ------------------------------------------------------------------ helpers


def delivered_bodies(srv, receiver, jid, path, secret):
    """Wait until every event of the job arrived (2xx) at path; check they
    came in order, each signed with secret over its exact bytes; return
    (events, {seq: body}) where each body is the first that arrived."""
    events = job_events(srv, jid)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    recs = receiver.wait_seqs(jid, seqs, path=path, timeout=10)
    assert first_arrivals(recs) == seqs, [(r["type"], r["seq"]) for r in recs]
    bodies = {}
    for rec in recs:
        assert rec["id"] == f"{jid}_{rec['seq']}", rec["id"]
        assert verifies(rec, secret), (rec["id"], rec["sig"])
        assert not verifies(rec, new_secret()), rec["sig"]
        assert isinstance(rec["json"], dict), rec["body"][:300]
        bodies.setdefault(rec["seq"], rec["json"])
    return events, bodies


def check_error(err, kind, message, step, attempt):
    assert isinstance(err, dict) and set(err) == ERROR_KEYS, err
    assert err["kind"] == kind and err["message"] == message, err
    assert err["step"] == step and err["attempt"] == attempt, err
    assert err["run_id"] is None, err
    assert TIME_RE.match(err["at"]), err


# ------------------------------------------------------------------ retry, then failed


def test_failed_twice_retry_then_failed_bodies(make_server, receiver):
    srv = wh_server(make_server)
    secret = server_secret(srv)
    put_queue(srv, "eb-retry", max_attempts=2,
              backoff={"initial_s": BACKOFF_S, "factor": 1, "max_s": BACKOFF_S, "jitter": 0})
    jid = srv.submit("eb-retry", payload={"n": 1},
                     webhook_url=receiver.url + "/retry")["id"]

    # Attempt 1 fails, retryable (the default), naming the step it failed in.
    c = claim_one(srv, "eb-retry")
    assert c["id"] == jid and c["attempt"] == 1, c
    r = lease_call(srv, jid, "fail", c["lease"]["token"],
                   error={"message": "disk full on vm-12", "step": "provision"})
    assert r.status == 200 and r.json["state"] == "scheduled", r
    first_error = r.json["error"]
    # Attempt 2 comes after the backoff and fails too: that was the last one.
    c = claim_one(srv, "eb-retry", wait_s=BACKOFF_S + 5)
    assert c["id"] == jid and c["attempt"] == 2, c
    r = lease_call(srv, jid, "fail", c["lease"]["token"],
                   error={"message": "still no disk", "retryable": True})
    assert r.status == 200 and r.json["state"] == "failed", r
    job = srv.get_job(jid)
    assert job["error"] == r.json["error"], (job, r.json)

    events, bodies = delivered_bodies(srv, receiver, jid, "/retry", secret)
    types = [e["type"] for e in events]
    assert types == ["job.created", "job.running", "job.scheduled", "job.queued",
                     "job.running", "job.failed"], types
    created, run1, sched, queued, run2, failed = events

    check_body(bodies[created["seq"]], created, job, state="queued", previous_state=None,
               attempt=0, step=None, error=None)
    check_body(bodies[run1["seq"]], run1, job, state="running", previous_state="queued",
               attempt=1, step=None, error=None)

    # job.scheduled: the retry is coming; the error is the first attempt's,
    # as the worker gave it (kind "error" is drover's), the job's step
    # untouched by error.step.
    j = check_body(bodies[sched["seq"]], sched, job, state="scheduled",
                   previous_state="running", attempt=1, step=None)
    check_error(j["error"], "error", "disk full on vm-12", "provision", 1)
    assert j["error"] == first_error, (j["error"], first_error)
    retry_at = ts_parse(bodies[sched["seq"]]["data"]["event"]["retry_at"])
    assert abs(retry_at - (ts_parse(j["updated_at"]) + BACKOFF_S)) < 0.1, \
        bodies[sched["seq"]]

    # job.queued: ready again after the backoff, no error of its own.
    j = check_body(bodies[queued["seq"]], queued, job, state="queued",
                   previous_state="scheduled", attempt=1, step=None, error=None)
    assert ts_parse(j["updated_at"]) >= retry_at - 0.05, (j, retry_at)

    check_body(bodies[run2["seq"]], run2, job, state="running", previous_state="queued",
               attempt=2, step=None, error=None)

    # job.failed: for good, with the second attempt's error.
    j = check_body(bodies[failed["seq"]], failed, job, state="failed",
                   previous_state="running", attempt=2, step=None)
    check_error(j["error"], "error", "still no disk", None, 2)
    assert j["error"] == job["error"], (j["error"], job["error"])
    assert j["updated_at"] == job["updated_at"], (j, job)

    # The bodies' timestamps follow the events' order.
    stamps = [ts_parse(bodies[e["seq"]]["timestamp"]) for e in events]
    assert stamps == sorted(stamps), stamps


# ------------------------------------------------------------------ cancel


def test_canceled_while_queued_body(make_server, receiver):
    srv = wh_server(make_server)
    secret = server_secret(srv)
    jid = srv.submit("eb-cancel", webhook_url=receiver.url + "/cq")["id"]
    r = srv.request("POST", f"/v1/jobs/{jid}/cancel", {"reason": "customer left"},
                    token="submit")
    assert r.status == 200 and r.json["state"] == "canceled", r
    job = srv.get_job(jid)

    events, bodies = delivered_bodies(srv, receiver, jid, "/cq", secret)
    assert [e["type"] for e in events] == ["job.created", "job.canceled"], events
    ev = events[1]
    j = check_body(bodies[ev["seq"]], ev, job, state="canceled", previous_state="queued",
                   attempt=0, step=None)
    assert bodies[ev["seq"]]["data"]["event"] == {"reason": "customer left",
                                                   "error": job["error"]}, bodies[ev["seq"]]
    assert j["updated_at"] == job["updated_at"], (j, job)
    # Like every ending's, the body carries the error that ended the job.
    check_error(j["error"], "canceled", "customer left", None, 0)
    assert j["error"] == job["error"], (j["error"], job["error"])


def test_canceled_while_running_body(make_server, receiver):
    srv = wh_server(make_server)
    secret = server_secret(srv)
    jid = srv.submit("eb-cancel-run", webhook_url=receiver.url + "/cr")["id"]
    c = claim_one(srv, "eb-cancel-run")
    lease = c["lease"]["token"]
    r = srv.request("POST", f"/v1/jobs/{jid}/cancel", {"reason": "wrong vm"}, token="submit")
    assert r.status == 200 and r.json["state"] == "running", r
    assert r.json["cancel_requested"] is True, r.json
    # The worker learns it from its heartbeat and acknowledges by failing.
    r = lease_call(srv, jid, "heartbeat", lease)
    assert r.status == 200 and r.json["cancel_requested"] is True, r
    r = lease_call(srv, jid, "fail", lease, error={"message": "stopped on request"})
    assert r.status == 200 and r.json["state"] == "canceled", r
    job = srv.get_job(jid)

    events, bodies = delivered_bodies(srv, receiver, jid, "/cr", secret)
    assert [e["type"] for e in events] == ["job.created", "job.running",
                                           "job.cancel_requested", "job.canceled"], events
    req, canceled = events[2], events[3]
    check_body(bodies[req["seq"]], req, job, state="running", previous_state="running",
               attempt=1, step=None, error=None)
    assert bodies[req["seq"]]["data"]["event"] == {"reason": "wrong vm"}, bodies[req["seq"]]

    j = check_body(bodies[canceled["seq"]], canceled, job, state="canceled",
                   previous_state="running", attempt=1, step=None)
    # The worker's acknowledgement: kind "canceled", its message.
    check_error(j["error"], "canceled", "stopped on request", None, 1)
    assert j["error"] == job["error"], (j["error"], job["error"])
    assert j["updated_at"] == job["updated_at"], (j, job)
