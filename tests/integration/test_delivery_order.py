"""Contract tests for the order and fan-out of webhook deliveries (docs/api.md
"Events and webhooks" — "Order", "After a restart", the delivery log;
"Subscriptions" — DELETE; DESIGN.md §1 "Events and webhooks": at least once,
in order per job and subscriber).

What test_webhooks.py does not already cover:

- per-destination order when the receiver is slow and one job's events pile
  up behind each other, to four destinations at once (webhook_url and three
  subscriptions);
- a retry on one destination holds back only that destination: its later
  events wait (in order) for the retry, the job's webhook_url gets them all
  meanwhile;
- the same order while another destination of the failed event (or of one
  queued behind it) answers slowly;
- the delivery log stays oldest first when later events waited behind a
  failed one;
- fan-out of one job to 50 subscriptions, each signed with its own secret,
  each in its own delivery log;
- kill -9 while events are queued and unanswered (the receiver holds its
  answers) or undeliverable (the receiver is down): after a restart every
  event arrives, first arrivals in seq order per job and destination;
- a deleted subscription gets nothing queued after its deletion.

The receiver (webhook_receiver.py) can delay its answers and hold them
until released; each record carries its arrival time ("at") and the time
just before its answer was written ("answered_at"), so "sent only after the
previous one was answered" is checked causally, not by timing. Every wait
is a poll with a deadline; no sleep stands in for synchronisation.
Delivery is at least once: a seq may arrive more than once, so order is
checked on first arrivals (and, per destination, that no request overlaps
the one before it).
"""

import time

import pytest

from conftest import claim_one, job_events, lease_call
from webhook_receiver import (
    all_deliveries,
    create_sub,
    delivery_of,
    first_arrivals,
    poll_deliveries,
    poll_sub_deliveries,
    run_to_success,
    server_secret,
    verifies,
    wh_server,
)
from webhook_sig import new_secret

WAIT_S = 10  # the longest any single wait may take


# ------------------------------------------------------------------ helpers


def ok_seqs(recs):
    """The seqs answered 2xx (and actually answered, not still held)."""
    return {r["seq"] for r in recs if r["answer"] // 100 == 2 and r["answered_at"] is not None}


def of(recs, path, job_id, since=None):
    return [r for r in recs if r["path"] == path and r["job_id"] == job_id
            and (since is None or r["at"] >= since)]


def wait_all(rcv, want, since=None, timeout=WAIT_S, what="every seq at every destination"):
    """want: {(path, job_id): seqs}. Wait until each path got each of its
    job's seqs answered 2xx (arrived at or after `since`); return the records."""
    def done(recs):
        return all(set(seqs) <= ok_seqs(of(recs, path, jid, since))
                   for (path, jid), seqs in want.items())
    return rcv.wait_for(done, timeout=timeout, what=what)


def check_in_order(recs, seqs, job_id, secret, what):
    """recs (one destination, one job, in arrival order) carry each seq of
    seqs, first arrivals strictly in seq order, one request at a time, each
    with webhook-id {job}_{seq} and a signature by secret."""
    assert first_arrivals(recs) == seqs, \
        (what, [(r["seq"], r["answer"]) for r in recs])
    for prev, nxt in zip(recs, recs[1:]):
        # Sent only once the one before it was answered: it arrived after
        # the receiver began writing that answer.
        assert prev["answered_at"] is not None and nxt["at"] >= prev["answered_at"], \
            (what, "overlapping sends", prev["seq"], nxt["seq"])
    for r in recs:
        assert r["id"] == f"{job_id}_{r['seq']}", (what, r["id"])
        assert verifies(r, secret), (what, r["id"], r["sig"])


def lifecycle(srv, queue, job_id, n_steps):
    """Claim, n_steps steps, complete — as fast as the API answers."""
    run_to_success(srv, queue, job_id, steps=[(f"s{i}", {"i": i}) for i in range(n_steps)],
                   result={"ok": True})
    seqs = [e["seq"] for e in job_events(srv, job_id)]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert len(seqs) == n_steps + 3, seqs  # created, running, the steps, succeeded
    return seqs


def log_rows(ds):
    return sorted((d["seq"], d["destination"], d["subscription"]) for d in ds)


# ------------------------------------------------------------------ slow receiver


def test_slow_receiver_every_destination_gets_every_seq_in_order(make_server, receiver):
    srv = wh_server(make_server)
    server_key = server_secret(srv)
    q = "do-slow"
    own = "/slow/own"
    secrets = {own: server_key}
    for i in range(3):
        s = create_sub(srv, url=receiver.url + f"/slow/sub{i}")  # every type, every queue
        secrets[f"/slow/sub{i}"] = s["secret"]
    for path, delay in zip(secrets, (0.03, 0.04, 0.05, 0.035)):
        receiver.set_delay(path, delay)
    # Until the job has ended, the first delivery to each destination stays
    # unanswered: every later event is queued behind it.
    receiver.hold()
    jid = srv.submit(q, webhook_url=receiver.url + own)["id"]
    seqs = lifecycle(srv, q, jid, n_steps=6)
    recs = receiver.wait_for(lambda rs: all(of(rs, p, jid) for p in secrets),
                             what="seq 1 at every destination")
    for p in secrets:
        assert [r["seq"] for r in of(recs, p, jid)] == [1], \
            (p, "sent before seq 1 was answered", [r["seq"] for r in of(recs, p, jid)])
    receiver.release()

    recs = wait_all(receiver, {(p, jid): seqs for p in secrets})
    for p, secret in secrets.items():
        check_in_order(of(recs, p, jid), seqs, jid, secret, p)
    # The delivery log: one row per event and destination, each delivered at
    # the first try.
    subs = sorted(s["id"] for s in srv.request("GET", "/v1/subscriptions").json["subscriptions"])
    want = sorted([(s, "webhook_url", None) for s in seqs] +
                  [(s, "subscription", sub) for s in seqs for sub in subs])
    ds = poll_deliveries(srv, jid, lambda ds: log_rows(ds) == want and
                         all(d["state"] == "delivered" for d in ds), timeout=WAIT_S,
                         what="every delivery logged as delivered")
    assert all(d["attempts"] == 1 and d["last_status"] == 200 for d in ds), ds


# ------------------------------------------------------------------ order across a retry


def test_retry_holds_back_only_its_own_destination(make_server, make_receiver):
    own_rcv = make_receiver()
    sub_rcv = make_receiver()  # another endpoint: its failure opens no circuit for own_rcv
    srv = wh_server(make_server, "breaker_after = 1000\n")
    server_key = server_secret(srv)
    q = "do-retry"
    sub = create_sub(srv, url=sub_rcv.url + "/sub", queues=[q])
    sub_rcv.answer("/sub", (500, {}, "first try of seq 1 fails"))  # then 200s
    sub_rcv.hold("/sub")

    jid = srv.submit(q, webhook_url=own_rcv.url + "/own")["id"]
    first = sub_rcv.wait(1, path="/sub")[0]
    assert first["seq"] == 1 and first["answer"] == 500, first
    # Phase A, while seq 1's first try to the subscription is out: the job
    # runs, and its webhook_url is not held back.
    c = claim_one(srv, q)
    assert c["id"] == jid
    lease = c["lease"]["token"]
    assert lease_call(srv, jid, "steps", lease, step="a", data=None).status == 200
    phase_a = [e["seq"] for e in job_events(srv, jid)]
    assert phase_a == [1, 2, 3], phase_a
    own_rcv.wait_seqs(jid, phase_a, path="/own", timeout=WAIT_S)
    assert [r["seq"] for r in sub_rcv.got(path="/sub")] == [1]

    # The first try gets its 500; the retry that follows is held.
    with sub_rcv.cond:
        sub_rcv.release("/sub")
        sub_rcv.hold("/sub")
    sub_rcv.wait_for(lambda rs: first["answered_at"] is not None, what="the 500 answered")
    # Phase B, while seq 1 waits for (or is in) its retry.
    assert lease_call(srv, jid, "steps", lease, step="b", data=None).status == 200
    r = lease_call(srv, jid, "complete", lease, result={"ok": True})
    assert r.status == 200 and r.json["state"] == "succeeded", r
    seqs = [e["seq"] for e in job_events(srv, jid)]
    assert seqs == [1, 2, 3, 4, 5], seqs
    own_recs = of(wait_all(own_rcv, {("/own", jid): seqs}), "/own", jid)
    retry = sub_rcv.wait(2, path="/sub", timeout=WAIT_S, what="seq 1's retry")[1]
    # Nothing but seq 1 has gone to the subscription while its retry is unanswered.
    assert [r["seq"] for r in sub_rcv.got(path="/sub")] == [1, 1], sub_rcv.got(path="/sub")
    assert retry["answer"] == 200 and retry["answered_at"] is None, retry
    assert retry["at"] - first["answered_at"] >= 0.2 * 0.8 - 0.05, \
        "retried before the schedule's first delay"
    sub_rcv.release("/sub")

    sub_recs = of(wait_all(sub_rcv, {("/sub", jid): seqs}), "/sub", jid)
    assert [r["answer"] for r in sub_recs[:2]] == [500, 200], sub_recs
    check_in_order(sub_recs, seqs, jid, sub["secret"], "subscription")
    assert all(r["at"] >= retry["answered_at"] for r in sub_recs[2:])
    # The webhook_url had every event before the subscription's retry was
    # answered, in order.
    check_in_order(own_recs, seqs, jid, server_key, "webhook_url")
    assert max(r["answered_at"] for r in own_recs) < retry["answered_at"]

    want = sorted([(s, "webhook_url", None) for s in seqs] +
                  [(s, "subscription", sub["id"]) for s in seqs])
    ds = poll_deliveries(srv, jid, lambda ds: log_rows(ds) == want and
                         all(d["state"] == "delivered" for d in ds), timeout=WAIT_S,
                         what="every delivery logged as delivered")
    d1 = delivery_of(ds, 1, "subscription", sub["id"])
    assert d1["attempts"] == 2 and [a["status"] for a in d1["log"]] == [500, 200], d1
    # The events that waited behind the retry were sent once each.
    for d in ds:
        if d is not d1:
            assert d["attempts"] == 1 and [a["status"] for a in d["log"]] == [200], d


def test_delivery_log_is_oldest_first_after_a_retry(make_server, receiver):
    """The job's delivery log lists oldest first (docs/api.md), also when
    later events waited behind a failed one: seq order for one destination."""
    srv = wh_server(make_server)
    q = "do-log"
    receiver.answer("/own", (500, {}, "first try of seq 1 fails"))
    receiver.hold("/own")  # events 2 and 3 come while seq 1's first try is out
    jid = srv.submit(q, webhook_url=receiver.url + "/own")["id"]
    receiver.wait(1, path="/own")
    c = claim_one(srv, q)
    assert lease_call(srv, jid, "steps", c["lease"]["token"], step="a", data=None).status == 200
    seqs = [e["seq"] for e in job_events(srv, jid)]
    assert seqs == [1, 2, 3], seqs
    receiver.release()
    wait_all(receiver, {("/own", jid): seqs})
    ds = poll_deliveries(srv, jid, lambda ds: len(ds) == 3 and
                         all(d["state"] == "delivered" for d in ds), timeout=WAIT_S,
                         what="every delivery logged as delivered")
    assert [d["seq"] for d in ds] == seqs, \
        f"log not oldest first: {[(d['id'], d['seq'], d['created_at']) for d in ds]}"
    assert [d["attempts"] for d in ds] == [2, 1, 1], ds


@pytest.mark.parametrize("slow_type", ["job.created", "job.running"])
def test_retry_order_holds_while_another_destination_is_slow(make_server, make_receiver,
                                                             slow_type):
    """Subscription A fails seq 1 once; subscription B, which takes only one
    event type, answers that event slowly (1 s). B being slow may delay A, but
    A still gets seq n+1 only after seq n is delivered: no later seq before
    seq 1's successful retry, then every seq in order. slow_type is the
    failed event itself (job.created) or one that waits behind it
    (job.running)."""
    a_rcv = make_receiver()
    b_rcv = make_receiver()
    srv = wh_server(make_server, "breaker_after = 1000\n")
    q = "do-slow-other"
    a = create_sub(srv, url=a_rcv.url + "/a", queues=[q])
    b = create_sub(srv, url=b_rcv.url + "/b", queues=[q], events=[slow_type])
    a_rcv.answer("/a", (500, {}, "first try of seq 1 fails"))
    b_rcv.set_delay("/b", 1.0)

    jid = srv.submit(q)["id"]
    first = a_rcv.wait_for(lambda rs: rs and rs[0]["answered_at"] is not None,
                           what="seq 1's first try answered")[0]
    assert first["seq"] == 1 and first["answer"] == 500, first
    seqs = lifecycle(srv, q, jid, n_steps=2)

    a_recs = of(wait_all(a_rcv, {("/a", jid): seqs}), "/a", jid)
    arrivals = [(r["seq"], r["answer"]) for r in a_recs]
    assert arrivals[:2] == [(1, 500), (1, 200)], \
        f"A got a later seq before seq 1's retry: {arrivals}"
    check_in_order(a_recs, seqs, jid, a["secret"], "subscription A")
    b_recs = of(wait_all(b_rcv, {("/b", jid): [2 if slow_type == "job.running" else 1]}),
                "/b", jid)
    assert all(verifies(r, b["secret"]) and r["type"] == slow_type for r in b_recs), b_recs
    ds = poll_deliveries(srv, jid, lambda ds: len(ds) == len(seqs) + 1 and
                         all(d["state"] == "delivered" for d in ds), timeout=WAIT_S,
                         what="every delivery logged as delivered")
    assert [a_["status"] for a_ in delivery_of(ds, 1, "subscription", a["id"])["log"]] == \
        [500, 200], ds


# ------------------------------------------------------------------ fan-out


def test_fan_out_to_50_subscriptions_each_signed_and_logged(make_server, receiver):
    srv = wh_server(make_server)
    q = "do-fan"
    subs = [create_sub(srv, url=receiver.url + f"/fan/{i}") for i in range(50)]
    assert len({s["secret"] for s in subs}) == 50
    jid = srv.submit(q)["id"]
    run_to_success(srv, q, jid, result={"n": 50})
    seqs = [e["seq"] for e in job_events(srv, jid)]
    assert seqs == [1, 2, 3], seqs  # created, running, succeeded

    recs = wait_all(receiver, {(f"/fan/{i}", jid): seqs for i in range(50)})
    stranger = new_secret()
    for i, s in enumerate(subs):
        mine = of(recs, f"/fan/{i}", jid)
        check_in_order(mine, seqs, jid, s["secret"], f"subscription {i}")
        created = [r for r in mine if r["seq"] == 1]
        assert created[0]["type"] == "job.created", created[0]["json"]
        # Signed with its own secret only.
        neighbour = subs[(i + 1) % len(subs)]["secret"]
        assert not any(verifies(r, neighbour) or verifies(r, stranger) for r in mine), i
    assert {r["path"] for r in recs} == {f"/fan/{i}" for i in range(50)}

    # Each subscription's delivery log shows its own deliveries, delivered
    # (the log is written in the background: poll).
    for s in subs:
        ds = poll_sub_deliveries(
            srv, s["id"], lambda ds: sorted((d["job"], d["seq"]) for d in ds) ==
            [(jid, n) for n in seqs] and all(d["state"] == "delivered" for d in ds),
            timeout=WAIT_S, what=f"subscription {s['id']}'s log")
        for d in ds:
            assert d["destination"] == "subscription" and d["subscription"] == s["id"], d
            assert d["attempts"] == 1 and d["last_status"] == 200, d
    assert len(all_deliveries(srv, jid)) == 50 * len(seqs)


# ------------------------------------------------------------------ kill -9


@pytest.mark.parametrize("receiver_state", ["held", "down"])
def test_kill_9_with_events_queued_then_every_event_arrives_in_order(make_server,
                                                                    make_receiver,
                                                                    receiver_state):
    rcv = make_receiver()
    srv = wh_server(make_server, "breaker_after = 1000\n")
    server_key = server_secret(srv)
    q = "do-crash"
    sub = create_sub(srv, url=rcv.url + "/crash/sub", queues=[q])
    if receiver_state == "held":
        rcv.hold()  # requests arrive and are never answered (before the crash)
    else:
        rcv.stop()  # connection refused
    jobs = {}
    for i in range(3):
        jid = srv.submit(q, webhook_url=rcv.url + f"/crash/own{i}")["id"]
        jobs[jid] = (f"/crash/own{i}", lifecycle(srv, q, jid, n_steps=2))
    dests = {(path, jid): seqs for jid, (path, seqs) in jobs.items()}
    dests.update({("/crash/sub", jid): seqs for jid, (_, seqs) in jobs.items()})

    if receiver_state == "held":
        # Each (job, destination) has its first event out, unanswered, and
        # nothing else: the rest are queued behind it.
        recs = rcv.wait_for(lambda rs: all(of(rs, p, jid) for p, jid in dests),
                            what="seq 1 out to every destination")
        for p, jid in dests:
            assert [r["seq"] for r in of(recs, p, jid)] == [1], (p, jid, recs)
    port = srv.port
    srv.kill()
    restarted = time.monotonic()
    if receiver_state == "held":
        rcv.release()  # the held answers go nowhere: drover is gone
    else:
        rcv.start()
    srv.start(listen=f"127.0.0.1:{port}")
    assert server_secret(srv) == server_key

    recs = wait_all(rcv, dests, since=restarted, what="every event after the restart")
    for (path, jid), seqs in dests.items():
        secret = sub["secret"] if path == "/crash/sub" else server_key
        # In order after the restart, and first arrivals in order overall.
        check_in_order(of(recs, path, jid, since=restarted), seqs, jid, secret, (path, jid))
        assert first_arrivals(of(recs, path, jid)) == seqs, (path, jid)
    for jid, (_, seqs) in jobs.items():
        want = sorted([(s, "webhook_url", None) for s in seqs] +
                      [(s, "subscription", sub["id"]) for s in seqs])
        poll_deliveries(srv, jid, lambda ds: log_rows(ds) == want and
                        all(d["state"] == "delivered" for d in ds), timeout=WAIT_S,
                        what=f"{jid}: every delivery logged once, delivered")
        assert srv.get_job(jid)["state"] == "succeeded"


# ------------------------------------------------------------------ deleted subscription


def test_deleted_subscription_gets_nothing_queued_after_its_deletion(make_server, receiver):
    srv = wh_server(make_server)
    q = "do-del"
    gone = create_sub(srv, url=receiver.url + "/del/gone")
    keep = create_sub(srv, url=receiver.url + "/del/keep")
    # The doomed subscription's first delivery is out, unanswered, when it is
    # deleted: later events of the same job would queue behind it.
    receiver.hold("/del/gone")
    jid = srv.submit(q, webhook_url=receiver.url + "/del/own")["id"]
    receiver.wait_for(lambda rs: of(rs, "/del/gone", jid) and ok_seqs(of(rs, "/del/keep", jid)),
                      what="seq 1 to both subscriptions")
    r = srv.request("DELETE", f"/v1/subscriptions/{gone['id']}", token="admin")
    assert r.status == 200 and r.json == {"deleted": True}, r
    assert srv.request("GET", f"/v1/subscriptions/{gone['id']}").status == 404

    # Everything from here on is queued after the deletion.
    seqs = lifecycle(srv, q, jid, n_steps=2)
    jid2 = srv.submit(q)["id"]
    receiver.release("/del/gone")
    recs = wait_all(receiver, {("/del/keep", jid): seqs, ("/del/own", jid): seqs,
                               ("/del/keep", jid2): [1]})
    check_in_order(of(recs, "/del/keep", jid), seqs, jid, keep["secret"], "kept subscription")
    # The events are settled: each one's deliveries are in the log (written
    # once every destination of the event has answered).
    ds = poll_deliveries(srv, jid, lambda ds: all(
        any(d["seq"] == s and d["subscription"] == keep["id"] and d["state"] == "delivered"
            for d in ds) and
        any(d["seq"] == s and d["destination"] == "webhook_url" and d["state"] == "delivered"
            for d in ds) for s in seqs), timeout=WAIT_S, what="the kept deliveries logged")
    ds2 = poll_deliveries(srv, jid2, lambda ds: any(d["subscription"] == keep["id"] and
                                                    d["state"] == "delivered" for d in ds),
                          timeout=WAIT_S, what="the second job's delivery logged")
    got = [(r["job_id"], r["seq"]) for r in receiver.got(path="/del/gone")]
    assert got == [(jid, 1)], f"the deleted subscription received {got}"
    late = [(d["job"], d["seq"]) for d in ds + ds2
            if d["subscription"] == gone["id"] and (d["job"], d["seq"]) != (jid, 1)]
    assert late == [], f"deliveries to the deleted subscription: {late}"
