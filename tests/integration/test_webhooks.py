"""Contract tests for events and webhooks (docs/api.md "Events and webhooks",
its delivery log and redeliver routes, the Job object's `webhook_url`,
`POST /v1/jobs`; DESIGN.md §1 "Events and webhooks"; the subscription routes
`POST/GET/PATCH /v1/subscriptions`).

A receiver (webhook_receiver.py: http.server on 127.0.0.1, port 0, in a
daemon thread; the `receiver` and `make_receiver` fixtures in conftest.py)
records every delivery — method, path, headers, the exact raw body, the
arrival time — and answers from a per-path script (500, 429 with
Retry-After, 410, ...) or a per-path default. Signatures are checked here
with hmac/hashlib/base64 (Standard Webhooks: HMAC-SHA256 keyed with the
base64-decoded `whsec_` secret over "{webhook-id}.{webhook-timestamp}.{body}"),
never with drover's code; the helpers are first checked against the
published vectors in tests/testdata/signature-vectors.json.

A job's own webhook_url is signed with the server's secret, read from
DATA/webhook.secret (generated there when `webhooks.secret` is not set).

Covered: the whole lifecycle in order, signed, with stable webhook-ids and
the documented body; subscriptions with events and queues filters and their
own secret; secret rotation (two signatures); 500, 500, 200 on the retry
schedule without touching the job; order held while an earlier event fails;
Retry-After (seconds and HTTP date); 410 from a subscription (disabled) and
from a webhook_url (that delivery dies); dead after give_up_after_s with
job.delivery_dead; the delivery log and redeliver (of delivered, dead and
pending deliveries, of one behind another pending one, of one whose try is
out, of one whose key has a newer event's send out, 404s, roles); kill -9 with deliveries pending; the SSRF guard
without --allow-target; the circuit breaker (cool-down, doubling);
webhooks.max_in_flight across keys. How each kind of answer is treated
(3xx, timeouts, Retry-After's cap) is in test_webhook_answers.py.

Servers run with a fast schedule (`retry_schedule = 200ms,400ms,800ms`) and,
unless the test is about the SSRF guard, `--allow-target 127.0.0.0/8`.
Every wait has a deadline.
"""

import base64
import email.utils
import time

from webhook_receiver import (
    ALLOW,
    SCHEDULE,
    WH,
    check_body,
    create_sub,
    deliveries,
    delivery_of,
    first_arrivals,
    poll_deliveries,
    run_to_success,
    server_secret,
    verifies,
    wh_server,
)
from webhook_sig import new_secret, sw_verify
from conftest import (
    TIME_RE,
    UNKNOWN_ID,
    assert_error,
    claim_one,
    job_events,
    ts_parse,
)

JITTER = 0.2
SLACK_EARLY = 0.05  # clock and scheduling slack before a due time
SLACK_LATE = 0.6  # HTTP round trips, writer commit, scheduling after a due time


# ------------------------------------------------------------------ helpers


def entry_verifies(secret, msg_id, ts, body, entry):
    """Does this one 'v1,<base64>' entry verify with secret?"""
    return sw_verify(secret, msg_id, ts, body, entry) and " " not in entry


def get_sub(srv, sub_id):
    r = srv.request("GET", f"/v1/subscriptions/{sub_id}", token="admin")
    assert r.status == 200, r
    return r.json


def gap_ok(gap, delay):
    """A retry `delay` after the previous answer, ±JITTER, plus slack."""
    return delay * (1 - JITTER) - SLACK_EARLY <= gap <= delay * (1 + JITTER) + SLACK_LATE


def check_headers(rec, now=None):
    h = rec["headers"]
    assert rec["method"] == "POST", rec["method"]
    assert h.get("content-type", "").split(";")[0].strip().lower() == "application/json", h
    assert rec["ts"] and rec["ts"].isdigit(), h
    now = now if now is not None else rec["wall"]
    assert abs(int(rec["ts"]) - now) < 60, (rec["ts"], now)
    assert rec["sig"], h
    for entry in rec["sig"].split(" "):
        assert entry.startswith("v1,") and len(base64.b64decode(entry[3:])) == 32, rec["sig"]


# ------------------------------------------------------------------ lifecycle


def test_whole_lifecycle_in_order_signed_with_stable_ids(make_server, receiver):
    srv = wh_server(make_server)
    secret = server_secret(srv)
    url = receiver.url + "/hooks/life"
    job = srv.submit("wh-life", payload={"vm": "vm-12"}, webhook_url=url)
    jid = job["id"]
    assert job["webhook_url"] == url, job
    run_to_success(srv, "wh-life", jid,
                   steps=[("vm_created", {"vm": "vm-12"}), ("ansible_complete", None)],
                   result={"vm": "vm-12"})
    events = job_events(srv, jid)
    types = [e["type"] for e in events]
    assert types[0] == "job.created" and types[-1] == "job.succeeded", types
    assert "job.running" in types and types.count("job.step") == 2, types
    assert types.index("job.running") < types.index("job.step"), types
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs), seqs

    now = srv.get_job(jid)  # the job as it ended: every body's updated_at is before
    recs = receiver.wait_seqs(jid, seqs, timeout=10)
    # In order: each event's first arrival after the previous one's; nothing
    # but the job's events came.
    assert first_arrivals(recs) == seqs, [(r["type"], r["seq"]) for r in recs]
    assert {r["path"] for r in recs} == {"/hooks/life"}
    by_seq = {e["seq"]: e for e in events}
    for rec in recs:
        ev = by_seq[rec["seq"]]
        check_headers(rec)
        # webhook-id is the job id and the seq: the receiver's idempotency key.
        assert rec["id"] == f"{jid}_{ev['seq']}", rec["id"]
        # The signature verifies over the exact raw bytes, with the server's secret
        # only; a changed byte or another secret does not verify.
        assert verifies(rec, secret), (rec["id"], rec["sig"])
        assert not verifies(rec, new_secret())
        assert not sw_verify(secret, rec["id"], rec["ts"], rec["body"] + b" ", rec["sig"])
        assert not sw_verify(secret, rec["id"], str(int(rec["ts"]) + 1), rec["body"], rec["sig"])
        # The body.
        assert isinstance(rec["json"], dict), rec["body"][:300]
        result = {"vm": "vm-12"} if ev["type"] == "job.succeeded" else None
        j = check_body(rec["json"], ev, now, queue="wh-life", error=None, result=result)
        if ev["type"] == "job.created":
            assert j["previous_state"] is None and j["attempt"] == 0, j
            assert j["state"] == "queued" and j["result"] is None, j
        if ev["type"] == "job.running":
            assert j["state"] == "running" and j["attempt"] == 1, j
    # Every event once (all answered 200): the same webhook-id never differs
    # for one seq.
    ids = {}
    for rec in recs:
        assert ids.setdefault(rec["seq"], rec["id"]) == rec["id"]
    # The deliveries went to the webhook_url and are delivered.
    ds = poll_deliveries(srv, jid, lambda ds: len(ds) == len(seqs) and
                         all(d["state"] == "delivered" for d in ds), timeout=5)
    assert [d["seq"] for d in ds] == seqs, ds
    assert all(d["destination"] == "webhook_url" and d["subscription"] is None for d in ds), ds


def test_job_without_webhook_url_has_no_deliveries(make_server):
    srv = wh_server(make_server)
    job = srv.submit("wh-none")
    run_to_success(srv, "wh-none", job["id"])
    assert job["webhook_url"] is None, job
    assert deliveries(srv, job["id"]) == {"deliveries": [], "next": None}


def test_configured_secret_signs_webhook_url_deliveries(make_server, receiver):
    secret = new_secret()
    srv = wh_server(make_server, f"secret = {secret}\n")
    job = srv.submit("wh-cfg", webhook_url=receiver.url + "/cfg")
    rec = receiver.wait(1, path="/cfg")[0]
    assert rec["id"] == f"{job['id']}_1", rec["id"]
    assert verifies(rec, secret), rec["sig"]


# ------------------------------------------------------------------ subscriptions


def test_subscriptions_get_only_matching_events_signed_with_their_secret(make_server,
                                                                        receiver):
    srv = wh_server(make_server)
    server_key = server_secret(srv)
    # A: terminal events of queue wh-a only; secret generated and shown.
    a = create_sub(srv, url=receiver.url + "/sub-a",
                   events=["job.succeeded", "job.failed"], queues=["wh-a"])
    # B: job.created of every queue, with its own given secret.
    b_secret = new_secret()
    b = create_sub(srv, url=receiver.url + "/sub-b", secret=b_secret,
                   events=["job.created"])
    # C: disabled from the start: gets nothing.
    c = create_sub(srv, url=receiver.url + "/sub-c", enabled=False)
    assert a["secret"] != b_secret
    own = receiver.url + "/own"

    ja = srv.submit("wh-a", webhook_url=own)["id"]
    jb = srv.submit("wh-b")["id"]
    run_to_success(srv, "wh-a", ja, result={"ok": 1})
    run_to_success(srv, "wh-b", jb)
    ev_a = {e["type"]: e["seq"] for e in job_events(srv, ja)}
    ev_b = {e["type"]: e["seq"] for e in job_events(srv, jb)}

    # The outbox rows exist from the events' own transactions: exactly the
    # matching ones.
    da = poll_deliveries(srv, ja, lambda ds: ds and all(d["state"] == "delivered" for d in ds))
    db = poll_deliveries(srv, jb, lambda ds: ds and all(d["state"] == "delivered" for d in ds))
    got_a = sorted((d["seq"], d["destination"], d["subscription"]) for d in da)
    want_a = sorted([(s, "webhook_url", None) for s in ev_a.values()] +
                    [(ev_a["job.succeeded"], "subscription", a["id"]),
                     (ev_a["job.created"], "subscription", b["id"])])
    assert got_a == want_a, da
    got_b = sorted((d["seq"], d["destination"], d["subscription"]) for d in db)
    assert got_b == [(ev_b["job.created"], "subscription", b["id"])], db

    # What arrived: the same, each signed with its destination's secret.
    ra = receiver.wait(1, path="/sub-a")
    rb = receiver.wait(2, path="/sub-b")
    receiver.wait(len(ev_a), path="/own")
    assert [(r["job_id"], r["type"]) for r in ra] == [(ja, "job.succeeded")], ra
    assert sorted((r["job_id"], r["type"]) for r in rb) == \
        sorted([(ja, "job.created"), (jb, "job.created")]), rb
    for r in ra:
        assert verifies(r, a["secret"]) and not verifies(r, server_key), r["sig"]
        assert r["id"] == f"{ja}_{ev_a['job.succeeded']}"
        assert r["json"]["data"]["job"]["result"] == {"ok": 1}, r["json"]
    for r in rb:
        assert verifies(r, b_secret) and not verifies(r, a["secret"]), r["sig"]
        assert r["id"] == f"{r['job_id']}_1"
    for r in receiver.got(path="/own"):
        assert verifies(r, server_key) and not verifies(r, b_secret), r["sig"]
    # The same event to two destinations carries the same webhook-id.
    own_created = [r for r in receiver.got(path="/own") if r["type"] == "job.created"]
    b_created = [r for r in rb if r["job_id"] == ja]
    assert own_created[0]["id"] == b_created[0]["id"] == f"{ja}_1"
    assert receiver.got(path="/sub-c") == []

    # The subscription's own delivery log.
    r = srv.request("GET", f"/v1/subscriptions/{b['id']}/deliveries", token="read")
    assert r.status == 200, r
    sd = r.json["deliveries"]
    assert sorted((d["job"], d["seq"]) for d in sd) == sorted([(ja, 1), (jb, 1)]), sd
    assert all(d["destination"] == "subscription" and d["subscription"] == b["id"]
               for d in sd), sd
    assert r.json["next"] is None
    assert srv.request("GET", f"/v1/subscriptions/{c['id']}/deliveries",
                       token="read").json["deliveries"] == []


def test_rotated_secret_signs_with_both_during_grace(make_server, receiver):
    srv = wh_server(make_server)
    s1 = new_secret()
    sub = create_sub(srv, url=receiver.url + "/rot", secret=s1, queues=["wh-rot"],
                     events=["job.created"])
    s2 = new_secret()
    r = srv.request("PATCH", f"/v1/subscriptions/{sub['id']}", {"secret": s2, "grace_s": 3600},
                    token="admin")
    assert r.status == 200, r
    assert r.json["secret"] == s2, r.json
    jid = srv.submit("wh-rot")["id"]
    rec = receiver.wait(1, path="/rot")[0]
    assert rec["id"] == f"{jid}_1"
    entries = rec["sig"].split(" ")
    assert len(entries) == 2, rec["sig"]
    # One signature per secret, each over the same exact bytes.
    new_ok = [e for e in entries if entry_verifies(s2, rec["id"], rec["ts"], rec["body"], e)]
    old_ok = [e for e in entries if entry_verifies(s1, rec["id"], rec["ts"], rec["body"], e)]
    assert len(new_ok) == 1 and len(old_ok) == 1 and new_ok != old_ok, rec["sig"]

    # Another rotation without grace: the new secret alone signs.
    s3 = new_secret()
    r = srv.request("PATCH", f"/v1/subscriptions/{sub['id']}", {"secret": s3, "grace_s": 0},
                    token="admin")
    assert r.status == 200, r
    jid2 = srv.submit("wh-rot")["id"]
    rec = receiver.wait(2, path="/rot")[1]
    assert rec["id"] == f"{jid2}_1"
    assert len(rec["sig"].split(" ")) == 1, rec["sig"]
    assert verifies(rec, s3) and not verifies(rec, s2) and not verifies(rec, s1), rec["sig"]


# ------------------------------------------------------------------ retries


def test_500_twice_then_200_retried_on_schedule_job_unaffected(make_server, receiver):
    srv = wh_server(make_server)
    secret = server_secret(srv)
    receiver.answer("/retry", (500, {}, "boom: upstream exploded"), (500, {}, "boom again"))
    job = srv.submit("wh-retry", webhook_url=receiver.url + "/retry")
    jid = job["id"]
    recs = receiver.wait(3, path="/retry", timeout=10)
    assert [r["answer"] for r in recs[:3]] == [500, 500, 200], recs
    # The same event each time: same webhook-id, each signature verifies.
    for r in recs[:3]:
        assert r["id"] == f"{jid}_1" and r["seq"] == 1 and r["type"] == "job.created", r["id"]
        assert verifies(r, secret), r["sig"]
    g1 = recs[1]["at"] - recs[0]["at"]
    g2 = recs[2]["at"] - recs[1]["at"]
    assert gap_ok(g1, SCHEDULE[0]), f"1st retry {g1:.3f}s after, schedule {SCHEDULE[0]}s"
    assert gap_ok(g2, SCHEDULE[1]), f"2nd retry {g2:.3f}s after, schedule {SCHEDULE[1]}s"

    ds = poll_deliveries(srv, jid, lambda ds: ds and ds[0]["state"] == "delivered")
    assert len(ds) == 1, ds
    d = ds[0]
    assert d["attempts"] == 3 and d["last_status"] == 200 and d["last_error"] is None, d
    assert d["next_attempt_at"] is None, d
    assert [a["n"] for a in d["log"]] == [1, 2, 3], d
    assert [a["status"] for a in d["log"]] == [500, 500, 200], d
    assert "boom: upstream exploded" in d["log"][0]["excerpt"], d
    assert "boom again" in d["log"][1]["excerpt"], d
    for a in d["log"]:
        assert TIME_RE.match(a["at"]) and a["error"] is None, a
        assert isinstance(a["latency_ms"], int) and 0 <= a["latency_ms"] < 10000, a
    # The job never noticed: still queued at seq 1 with only its own event,
    # and it runs as usual.
    got = srv.get_job(jid, token="admin")
    assert got["state"] == "queued" and got["seq"] == 1, got
    assert [e["type"] for e in job_events(srv, jid)] == ["job.created"]
    c = claim_one(srv, "wh-retry")
    assert c["id"] == jid and c["state"] == "running", c


def test_later_event_waits_while_earlier_one_fails(make_server, receiver):
    srv = wh_server(make_server, "breaker_after = 1000\n")
    receiver.answer("/order", 500, 500, 500)
    jid = srv.submit("wh-order", webhook_url=receiver.url + "/order")["id"]
    receiver.wait(1, path="/order")
    # Delivery never blocks the job: it runs to the end while event 1 fails.
    run_to_success(srv, "wh-order", jid, steps=[("s1", None)])
    assert srv.get_job(jid)["state"] == "succeeded"
    seqs = [e["seq"] for e in job_events(srv, jid)]
    assert len(seqs) >= 4, seqs
    recs = receiver.wait_seqs(jid, seqs, timeout=15)
    arrivals = [r["seq"] for r in recs]
    assert arrivals[:4] == [1, 1, 1, 1], arrivals
    last_1 = max(i for i, s in enumerate(arrivals) if s == 1)
    assert all(s == 1 for s in arrivals[:last_1 + 1]), arrivals
    assert first_arrivals(recs) == seqs, arrivals
    # Each later event went out only after the earlier one was answered 2xx.
    ok_at = {}
    for r in recs:
        if r["answer"] // 100 == 2:
            ok_at.setdefault(r["seq"], r["at"])
    for prev, nxt in zip(seqs, seqs[1:]):
        first_nxt = min(r["at"] for r in recs if r["seq"] == nxt)
        assert first_nxt >= ok_at[prev], (prev, nxt, arrivals)


def test_retry_after_is_honoured_on_429_and_503(make_server, receiver):
    srv = wh_server(make_server)
    receiver.answer("/ra-secs", (429, {"Retry-After": "1"}, "slow down"))
    j1 = srv.submit("wh-ra", webhook_url=receiver.url + "/ra-secs")["id"]
    r0 = receiver.wait(1, path="/ra-secs")[0]
    date = email.utils.formatdate(time.time() + 3, usegmt=True)
    receiver.answer("/ra-date", (503, {"Retry-After": date}, "maintenance"))
    j2 = srv.submit("wh-ra", webhook_url=receiver.url + "/ra-date")["id"]

    recs = receiver.wait(2, path="/ra-secs", timeout=10)
    gap = recs[1]["at"] - r0["at"]
    # The schedule alone would retry after 0.2 s.
    assert 1.0 - SLACK_EARLY <= gap <= 1.0 + 1.0, f"429 Retry-After: 1 retried after {gap:.3f}s"
    assert recs[1]["id"] == recs[0]["id"] == f"{j1}_1"

    recs = receiver.wait(2, path="/ra-date", timeout=10)
    gap = recs[1]["at"] - recs[0]["at"]
    # An HTTP date 3 s ahead (1-s resolution): at least ~2 s.
    assert 2.0 - 0.15 <= gap <= 3.0 + 1.0, f"503 Retry-After: {date} retried after {gap:.3f}s"
    assert recs[1]["id"] == f"{j2}_1"
    for jid, status in ((j1, 429), (j2, 503)):
        d = poll_deliveries(srv, jid, lambda ds: ds[0]["state"] == "delivered")[0]
        assert [a["status"] for a in d["log"]] == [status, 200], d


# ------------------------------------------------------------------ 410 and dead


def test_410_from_subscription_disables_it_and_kills_the_delivery(make_server, receiver):
    srv = wh_server(make_server)
    sub = create_sub(srv, url=receiver.url + "/gone", queues=["wh-gone"])
    receiver.set_default("/gone", (410, {}, "no such hook"))
    jid = srv.submit("wh-gone")["id"]
    receiver.wait(1, path="/gone")
    deadline = time.monotonic() + 5
    while True:
        s = get_sub(srv, sub["id"])
        if s["enabled"] is False or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert s["enabled"] is False, s
    assert isinstance(s["disabled_reason"], str) and "410" in s["disabled_reason"], s
    ds = poll_deliveries(srv, jid, lambda ds: ds and ds[0]["state"] == "dead")
    d = delivery_of(ds, 1, "subscription", sub["id"])
    assert d["attempts"] == 1 and d["last_status"] == 410, d
    assert [a["status"] for a in d["log"]] == [410], d
    # Not retried.
    time.sleep(SCHEDULE[0] * 1.2 + 0.3)
    assert len(receiver.got(path="/gone")) == 1
    # The job hears of it (job.delivery_dead), and the job itself is untouched.
    dead = [e for e in job_events(srv, jid) if e["type"] == "job.delivery_dead"]
    assert len(dead) == 1, job_events(srv, jid)
    assert dead[0]["data"]["event_seq"] == 1 and dead[0]["data"]["delivery"] == d["id"], dead
    assert dead[0]["data"]["destination"] == sub["id"], dead
    assert isinstance(dead[0]["data"]["reason"], str) and dead[0]["data"]["reason"], dead
    assert srv.get_job(jid)["state"] == "queued"
    # A disabled subscription gets no new events.
    run_to_success(srv, "wh-gone", jid)
    jid2 = srv.submit("wh-gone")["id"]
    assert [d["seq"] for d in deliveries(srv, jid)["deliveries"]] == [1], \
        "events after the 410 still went to the disabled subscription"
    assert deliveries(srv, jid2)["deliveries"] == []
    assert len(receiver.got(path="/gone")) == 1
    # Re-enabling it clears the reason.
    r = srv.request("PATCH", f"/v1/subscriptions/{sub['id']}", {"enabled": True}, token="admin")
    assert r.status == 200 and r.json["enabled"] is True, r
    assert r.json["disabled_reason"] is None, r.json


def test_410_from_webhook_url_kills_that_delivery_only(make_server, receiver):
    srv = wh_server(make_server)
    receiver.answer("/gone-own", (410, {}, "gone"))
    jid = srv.submit("wh-gone-own", webhook_url=receiver.url + "/gone-own")["id"]
    receiver.wait(1, path="/gone-own")
    ds = poll_deliveries(srv, jid, lambda ds: ds and ds[0]["state"] == "dead")
    assert ds[0]["seq"] == 1 and ds[0]["attempts"] == 1 and ds[0]["last_status"] == 410, ds
    evs = job_events(srv, jid)
    dead = [e for e in evs if e["type"] == "job.delivery_dead"]
    assert len(dead) == 1 and dead[0]["data"]["event_seq"] == 1, evs
    # The next event still goes there; the delivery_dead event never does.
    c = claim_one(srv, "wh-gone-own")
    running_seq = c["seq"]
    recs = receiver.wait_seqs(jid, [running_seq], path="/gone-own")
    assert [r["type"] for r in recs] == ["job.created", "job.running"], recs
    assert "job.delivery_dead" not in [r["type"] for r in receiver.got()]


def test_dead_after_give_up_then_recovered_by_get_and_redeliver(make_server, receiver):
    srv = wh_server(make_server, "give_up_after_s = 2\nbreaker_after = 1000\n")
    secret = server_secret(srv)
    watch = create_sub(srv, url=receiver.url + "/watch", events=["job.delivery_dead"])
    receiver.set_default("/dead", (500, {}, "still broken"))
    t0 = time.monotonic()
    jid = srv.submit("wh-dead", payload={"n": 1}, webhook_url=receiver.url + "/dead")["id"]
    ds = poll_deliveries(srv, jid, lambda ds: ds and ds[0]["state"] == "dead", timeout=10,
                         what="the delivery dead after give_up_after_s")
    took = time.monotonic() - t0
    d = ds[0]
    assert took >= 2 - SLACK_EARLY, f"dead after {took:.2f}s, give_up_after_s is 2"
    assert d["attempts"] >= 3 and d["next_attempt_at"] is None, d
    assert d["last_status"] == 500 and len(d["log"]) == d["attempts"], d
    assert all(a["status"] == 500 and "still broken" in a["excerpt"] for a in d["log"]), d
    n_tries = len(receiver.got(path="/dead"))
    assert n_tries == d["attempts"], (n_tries, d)

    # The job's history says so, with the destination.
    evs = job_events(srv, jid)
    dead = [e for e in evs if e["type"] == "job.delivery_dead"]
    assert len(dead) == 1, evs
    data = dead[0]["data"]
    assert set(data) >= {"destination", "event_seq", "delivery", "reason"}, data
    assert data["event_seq"] == 1 and data["delivery"] == d["id"], data
    assert data["destination"] in ("webhook_url", "job", receiver.url + "/dead"), data
    assert isinstance(data["reason"], str) and data["reason"], data
    # ... which goes to the other destinations (the watching subscription),
    # never to the one that died.
    w = receiver.wait(1, path="/watch")[0]
    assert w["type"] == "job.delivery_dead" and w["id"] == f"{jid}_{dead[0]['seq']}", w
    assert verifies(w, watch["secret"]), w["sig"]
    assert w["json"]["data"]["event"] == data, w["json"]
    time.sleep(0.3)
    assert all(r["type"] == "job.created" for r in receiver.got(path="/dead"))
    # Delivery never touched the job.
    job = srv.get_job(jid)
    assert job["state"] == "queued" and job["attempt"] == 0, job

    # Recovery 1: the state is always there to read.
    assert job["seq"] == dead[0]["seq"] and job["payload"] == {"n": 1}, job
    # Recovery 2: redeliver the dead one once the endpoint works again.
    receiver.set_default("/dead", 200)
    r = srv.request("POST", f"/v1/jobs/{jid}/deliveries/{d['id']}/redeliver", token="admin")
    assert r.status == 200, r
    assert r.json["id"] == d["id"] and r.json["state"] in ("pending", "delivered"), r.json
    recs = receiver.wait(n_tries + 1, path="/dead")
    again = recs[n_tries]
    assert again["id"] == f"{jid}_1" and again["answer"] == 200, again
    assert verifies(again, secret)
    ds = poll_deliveries(srv, jid, lambda ds: ds[0]["state"] == "delivered")
    assert ds[0]["attempts"] == d["attempts"] + 1 and ds[0]["last_status"] == 200, ds


# ------------------------------------------------------------------ log and redeliver


def test_delivery_log_and_redeliver(make_server, receiver):
    srv = wh_server(make_server)
    secret = server_secret(srv)
    url = receiver.url + "/log"
    receiver.answer("/log", (500, {}, "x" * 2000))
    jid = srv.submit("wh-log", webhook_url=url)["id"]
    other = srv.submit("wh-log-other", webhook_url=receiver.url + "/log-other")["id"]
    run_to_success(srv, "wh-log", jid, steps=[("a", 1)], result=True)
    seqs = [e["seq"] for e in job_events(srv, jid)]
    ds = poll_deliveries(srv, jid, lambda ds: len(ds) == len(seqs) and
                         all(d["state"] == "delivered" for d in ds))
    # Oldest first, one per event, documented shape.
    assert [d["seq"] for d in ds] == seqs, ds
    ids = [d["id"] for d in ds]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    for d in ds:
        assert set(d) >= {"id", "job", "seq", "destination", "subscription", "state",
                          "attempts", "next_attempt_at", "last_status", "last_error",
                          "created_at", "updated_at", "log"}, d
        assert isinstance(d["id"], int) and d["job"] == jid, d
        assert d["destination"] == "webhook_url" and d["subscription"] is None, d
        assert d["next_attempt_at"] is None and d["last_status"] == 200, d
        assert d["last_error"] is None, d
        assert TIME_RE.match(d["created_at"]) and TIME_RE.match(d["updated_at"]), d
        assert len(d["log"]) == d["attempts"], d
        for i, a in enumerate(d["log"], 1):
            assert set(a) >= {"n", "at", "status", "latency_ms", "error", "excerpt"}, a
            assert a["n"] == i and TIME_RE.match(a["at"]), a
            assert isinstance(a["latency_ms"], int) and a["latency_ms"] >= 0, a
            assert a["error"] is None, a
    first = ds[0]
    assert first["attempts"] == 2, first
    assert [a["status"] for a in first["log"]] == [500, 200], first
    # The excerpt is the start of the answer, at most 512 bytes.
    ex = first["log"][0]["excerpt"]
    assert ex and set(ex) == {"x"} and 1 <= len(ex.encode()) <= 512, ex[:40]
    assert all(d["attempts"] == 1 for d in ds[1:]), ds

    # Pagination: ?limit and ?after.
    p1 = deliveries(srv, jid, limit=2)
    assert [d["id"] for d in p1["deliveries"]] == ids[:2] and p1["next"] is not None, p1
    p2 = deliveries(srv, jid, limit=200, after=p1["next"])
    assert [d["id"] for d in p2["deliveries"]] == ids[2:] and p2["next"] is None, p2
    for bad in ("0", "201", "x"):
        assert_error(srv.request("GET", f"/v1/jobs/{jid}/deliveries?limit={bad}", token="read"),
                     400, "bad_request")
    assert_error(srv.request("GET", f"/v1/jobs/{UNKNOWN_ID}/deliveries", token="read"),
                 404, "not_found")
    assert_error(srv.request("GET", "/v1/jobs/nope/deliveries", token="read"),
                 400, "bad_request")

    # Redeliver a delivered one: it comes again with the same webhook-id.
    target = ds[1]
    before = len(receiver.got(path="/log"))
    for role in ("read", "submit", "worker"):
        assert_error(srv.request("POST", f"/v1/jobs/{jid}/deliveries/{target['id']}/redeliver",
                                 token=role), 403, "forbidden")
    time.sleep(0.2)
    assert len(receiver.got(path="/log")) == before, "a refused redeliver sent something"
    r = srv.request("POST", f"/v1/jobs/{jid}/deliveries/{target['id']}/redeliver",
                    token="admin")
    assert r.status == 200, r
    assert r.json["id"] == target["id"] and r.json["seq"] == target["seq"], r.json
    assert r.json["state"] in ("pending", "delivered"), r.json
    rec = receiver.wait(before + 1, path="/log")[before]
    assert rec["id"] == f"{jid}_{target['seq']}" and rec["seq"] == target["seq"], rec
    assert verifies(rec, secret)
    ds2 = poll_deliveries(srv, jid, lambda x: delivery_of(x, target["seq"])["attempts"] == 2
                          and delivery_of(x, target["seq"])["state"] == "delivered")
    assert delivery_of(ds2, target["seq"])["log"][1]["status"] == 200

    # Unknown delivery, another job's delivery, unknown job: 404.
    other_d = poll_deliveries(srv, other, lambda x: len(x) >= 1)[0]
    big = max(ids + [other_d["id"]]) + 1000
    assert_error(srv.request("POST", f"/v1/jobs/{jid}/deliveries/{big}/redeliver",
                             token="admin"), 404, "not_found")
    assert_error(srv.request("POST", f"/v1/jobs/{jid}/deliveries/{other_d['id']}/redeliver",
                             token="admin"), 404, "not_found")
    assert_error(srv.request("POST", f"/v1/jobs/{UNKNOWN_ID}/deliveries/{ids[0]}/redeliver",
                             token="admin"), 404, "not_found")
    time.sleep(0.2)
    assert len(receiver.got(path="/log-other")) == 1


def redeliver(srv, jid, delivery_id):
    r = srv.request("POST", f"/v1/jobs/{jid}/deliveries/{delivery_id}/redeliver", token="admin")
    assert r.status == 200, r
    return r.json


def test_redeliver_of_a_pending_delivery_sends_it_now(make_server, receiver):
    # A minute to the retry: only the redeliver can bring it sooner.
    srv = make_server(config_extra="[webhooks]\nretry_schedule = 60s\n", args=ALLOW)
    secret = server_secret(srv)
    receiver.answer("/pend", (500, {}, "not yet"))
    jid = srv.submit("wh-pend", webhook_url=receiver.url + "/pend")["id"]
    receiver.wait(1, path="/pend")
    d = poll_deliveries(srv, jid, lambda ds: ds and ds[0]["attempts"] == 1)[0]
    assert d["state"] == "pending" and d["last_status"] == 500, d
    assert ts_parse(d["next_attempt_at"]) > time.time() + 30, d

    receiver.hold("/pend")  # the reply is read while the send is out
    got = redeliver(srv, jid, d["id"])
    assert got["id"] == d["id"] and got["state"] == "pending", got
    assert ts_parse(got["next_attempt_at"]) <= time.time() + 1, got
    recs = receiver.wait(2, path="/pend", timeout=5)
    receiver.release("/pend")
    assert recs[1]["id"] == f"{jid}_1" and verifies(recs[1], secret), recs[1]
    ds = poll_deliveries(srv, jid, lambda ds: ds[0]["state"] == "delivered")
    assert ds[0]["attempts"] == 2 and [a["status"] for a in ds[0]["log"]] == [500, 200], ds
    time.sleep(0.3)
    assert len(receiver.got(path="/pend")) == 2, "sent again after it was delivered"


def test_redeliver_of_a_later_pending_delivery_sends_the_earlier_first(make_server, receiver):
    # Event 1 fails and waits a minute; event 2 waits behind it (order per
    # job and destination). Redelivering 2 brings 1 forward too, in order.
    srv = make_server(config_extra="[webhooks]\nretry_schedule = 60s\n", args=ALLOW)
    receiver.answer("/later", (500, {}, "not yet"))
    jid = srv.submit("wh-later", webhook_url=receiver.url + "/later")["id"]
    receiver.wait(1, path="/later")
    claim_one(srv, "wh-later")  # job.running: seq 2
    ds = poll_deliveries(srv, jid, lambda ds: len(ds) == 2)
    assert [(d["seq"], d["state"], d["attempts"]) for d in ds] == [(1, "pending", 1),
                                                                  (2, "pending", 0)], ds
    redeliver(srv, jid, ds[1]["id"])
    recs = receiver.wait(3, path="/later", timeout=5)
    assert [r["seq"] for r in recs] == [1, 1, 2], [r["seq"] for r in recs]
    poll_deliveries(srv, jid, lambda ds: all(d["state"] == "delivered" for d in ds))


def test_redeliver_while_a_try_is_out_tries_again_at_once_if_it_fails(make_server, receiver):
    # The first try fails; its retry (1 s later) is held at the receiver
    # while the redeliver comes, then fails too: the next try is at once,
    # not the schedule's minute later.
    srv = make_server(config_extra="[webhooks]\nretry_schedule = 1s,60s\n", args=ALLOW)
    receiver.answer("/mid", (500, {}, "first"), (500, {}, "second"))
    jid = srv.submit("wh-mid", webhook_url=receiver.url + "/mid")["id"]
    receiver.wait(1, path="/mid")
    receiver.hold("/mid")
    receiver.wait(2, path="/mid", timeout=5)  # the retry, out and unanswered
    d = poll_deliveries(srv, jid, lambda ds: ds and ds[0]["attempts"] == 1)[0]
    assert redeliver(srv, jid, d["id"])["state"] == "pending"
    receiver.release("/mid")
    recs = receiver.wait(3, path="/mid", timeout=5)
    assert [r["answer"] for r in recs] == [500, 500, 200], recs
    ds = poll_deliveries(srv, jid, lambda ds: ds[0]["state"] == "delivered")
    assert [a["status"] for a in ds[0]["log"]] == [500, 500, 200], ds


def test_redeliver_behind_a_try_that_is_out_brings_that_one_forward(make_server, receiver):
    # Event 1's retry is out (held at the receiver) when event 2, waiting
    # behind it, is redelivered; that retry fails: it goes again at once,
    # and event 2 right after it, not a minute later.
    srv = make_server(config_extra="[webhooks]\nretry_schedule = 1s,60s\n", args=ALLOW)
    receiver.answer("/behind", (500, {}, "first"), (500, {}, "second"))
    jid = srv.submit("wh-behind", webhook_url=receiver.url + "/behind")["id"]
    receiver.wait(1, path="/behind")
    claim_one(srv, "wh-behind")  # job.running: seq 2, behind seq 1
    ds = poll_deliveries(srv, jid, lambda ds: len(ds) == 2)
    receiver.hold("/behind")
    receiver.wait(2, path="/behind", timeout=5)  # seq 1's retry, out and unanswered
    redeliver(srv, jid, ds[1]["id"])
    receiver.release("/behind")
    recs = receiver.wait(4, path="/behind", timeout=5)
    assert [(r["seq"], r["answer"]) for r in recs] == [(1, 500), (1, 500), (1, 200),
                                                      (2, 200)], recs
    poll_deliveries(srv, jid, lambda ds: all(d["state"] == "delivered" for d in ds))


def test_redeliver_while_a_newer_event_is_out_goes_once_that_one_is_answered(make_server,
                                                                              receiver):
    # Event 1 was delivered; event 2's send is out (held) when event 1 is
    # redelivered: one send per job and destination at a time, so event 1
    # goes again as soon as event 2 is answered, with nothing else to wake
    # the deliverer.
    srv = wh_server(make_server)
    jid = srv.submit("wh-newer", webhook_url=receiver.url + "/newer")["id"]
    receiver.wait(1, path="/newer")
    first = poll_deliveries(srv, jid, lambda ds: ds and ds[0]["state"] == "delivered")[0]
    receiver.hold("/newer")
    claim_one(srv, "wh-newer")  # job.running: seq 2, sent and held
    receiver.wait(2, path="/newer", timeout=5)
    redeliver(srv, jid, first["id"])
    time.sleep(0.3)
    assert len(receiver.got(path="/newer")) == 2, "sent beside the send that is out"
    receiver.release("/newer")
    recs = receiver.wait(3, path="/newer", timeout=3)
    assert [r["seq"] for r in recs] == [1, 2, 1], recs
    poll_deliveries(srv, jid, lambda ds: len(ds) == 2 and
                    all(d["state"] == "delivered" for d in ds))


# ------------------------------------------------------------------ kill -9


def test_kill_9_with_deliveries_pending_every_event_arrives_in_order(make_server,
                                                                   make_receiver):
    rcv = make_receiver()
    srv = wh_server(make_server, "breaker_after = 1000\n")
    secret = server_secret(srv)
    rcv.stop()  # the receiver is down: every delivery stays pending
    jobs = {}
    for i in range(2):
        q = f"wh-k9-{i}"
        jid = srv.submit(q, webhook_url=rcv.url + f"/k9/{i}")["id"]
        run_to_success(srv, q, jid, steps=[("one", i), ("two", None)], result={"i": i})
        jobs[jid] = [e["seq"] for e in job_events(srv, jid)]
    for jid in jobs:
        ds = poll_deliveries(srv, jid, lambda ds: ds and ds[0]["attempts"] >= 1,
                             what="a failed attempt while the receiver is down")
        assert all(d["state"] == "pending" for d in ds), ds
        assert ds[0]["log"][0]["status"] is None and ds[0]["log"][0]["error"], ds[0]
    assert rcv.got() == []

    port = srv.port
    srv.kill()
    rcv.start()
    srv.start(listen=f"127.0.0.1:{port}")
    assert server_secret(srv) == secret
    for i, (jid, seqs) in enumerate(jobs.items()):
        recs = rcv.wait_seqs(jid, seqs, timeout=15)
        assert first_arrivals(recs) == seqs, [(r["type"], r["seq"]) for r in recs]
        for r in recs:
            assert r["path"] == f"/k9/{i}" and r["id"] == f"{jid}_{r['seq']}", r["id"]
            assert verifies(r, secret), r["sig"]
        ds = poll_deliveries(srv, jid, lambda ds: ds and
                             all(d["state"] == "delivered" for d in ds))
        assert [d["seq"] for d in ds] == seqs, ds
        assert srv.get_job(jid)["state"] == "succeeded"


# ------------------------------------------------------------------ SSRF guard


def test_private_target_refused_without_allow_target(make_server, receiver):
    srv = make_server(config_extra=WH + "give_up_after_s = 60\n")  # no --allow-target
    sub = create_sub(srv, url=f"http://localhost:{receiver.port}/ssrf-sub", queues=["wh-ssrf"])
    job = srv.submit("wh-ssrf", webhook_url=receiver.url + "/ssrf")
    jid = job["id"]
    assert job["state"] == "queued", job
    ds = poll_deliveries(srv, jid, lambda ds: len(ds) == 2 and
                         all(d["attempts"] >= 2 for d in ds), timeout=10,
                         what="two refused attempts per destination")
    for d in ds:
        assert d["state"] in ("pending", "dead"), d
        assert d["last_status"] is None, d
        for a in d["log"]:
            assert a["status"] is None, a
            err = a["error"] or ""
            assert "loopback" in err or "--allow-target" in err, a
        assert "loopback" in d["last_error"] or "--allow-target" in d["last_error"], d
    assert {d["destination"] for d in ds} == {"webhook_url", "subscription"}, ds
    assert delivery_of(ds, 1, "subscription", sub["id"])
    assert receiver.got() == [], "a refused destination was reached"
    # The job is not held back.
    c = claim_one(srv, "wh-ssrf")
    assert c["id"] == jid and c["state"] == "running"
    assert [e["type"] for e in job_events(srv, jid)][:2] == ["job.created", "job.running"]


# ------------------------------------------------------------------ circuit breaker


def test_circuit_breaker_pauses_an_endpoint_then_probes(make_server, make_receiver):
    srv = wh_server(make_server, "breaker_after = 2\nbreaker_cooldown_ms = 1000\n")
    r1 = make_receiver()  # one endpoint: fails through one probe (the pause doubles)
    r2 = make_receiver()  # another: fails twice; a second job waits for the probe
    r1.answer("/cb", 500, 500, 500)
    r2.answer("/cb", 500, 500)
    j1 = srv.submit("wh-cb", webhook_url=r1.url + "/cb")["id"]
    j2 = srv.submit("wh-cb", webhook_url=r2.url + "/cb")["id"]

    a = r2.wait(2, timeout=5)
    assert gap_ok(a[1]["at"] - a[0]["at"], SCHEDULE[0]), a[1]["at"] - a[0]["at"]
    # Once drover has recorded that second failure (not merely sent the
    # request), r2's circuit is open: nothing goes there, not even a new
    # job's first delivery, for ~1 s.
    poll_deliveries(srv, j2, lambda ds: ds[0]["attempts"] == 2)
    time.sleep(0.05)  # the log is read from the commit; the breaker learns it just after
    j3 = srv.submit("wh-cb", webhook_url=r2.url + "/other")["id"]
    opened = a[1]["at"]
    all2 = r2.wait(4, timeout=10)  # j2's retry and j3's first, after the pause
    after = [r for r in all2[2:]]
    assert min(r["at"] for r in after) - opened >= 1.0 - SLACK_EARLY - 0.05, \
        [(r["path"], r["at"] - opened) for r in all2]
    assert {(r["job_id"], r["seq"]) for r in after} == {(j2, 1), (j3, 1)}, after
    assert all(r["answer"] == 200 for r in after), after

    b = r1.wait(4, timeout=10)
    g1, g2, g3 = (b[1]["at"] - b[0]["at"], b[2]["at"] - b[1]["at"], b[3]["at"] - b[2]["at"])
    assert gap_ok(g1, SCHEDULE[0]), g1
    # Open after 2 failures: the probe comes after the cool-down, not after
    # the schedule's 0.4 s; it fails, so the next pause is doubled.
    assert 1.0 - SLACK_EARLY - 0.05 <= g2 <= 1.0 + SLACK_LATE + 0.4, g2
    assert 2.0 - SLACK_EARLY - 0.05 <= g3 <= 2.0 + SLACK_LATE + 0.8, g3
    assert [r["answer"] for r in b[:4]] == [500, 500, 500, 200]
    assert all(r["id"] == f"{j1}_1" for r in b), b
    for jid in (j1, j2, j3):
        poll_deliveries(srv, jid, lambda ds: ds[0]["state"] == "delivered")


# ------------------------------------------------------------------ bounds


def test_max_in_flight_bounds_sends_across_keys(make_server, receiver):
    # Six jobs, six keys: nothing orders them, the engine would open eight
    # connections to this host, and only max_in_flight holds them to two.
    srv = wh_server(make_server, "max_in_flight = 2\n")
    receiver.set_delay("/mif", 0.3)
    jids = [srv.submit("wh-mif", webhook_url=receiver.url + "/mif")["id"] for _ in range(6)]
    recs = receiver.wait(6, path="/mif", timeout=10)
    for jid in jids:
        poll_deliveries(srv, jid, lambda ds: ds and ds[0]["state"] == "delivered")
    # The most requests open at once: each is open from its arrival until
    # its answer, and drover cannot send the next before it read one.
    spans = [(r["at"], r["answered_at"]) for r in recs]
    most = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    assert most == 2, spans
