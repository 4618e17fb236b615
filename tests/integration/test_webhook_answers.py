"""Contract tests for how drover treats a webhook endpoint's answer, end to
end (docs/api.md "Events and webhooks": "Success is a 2xx answer; redirects
are not followed. Each attempt has outbound.connect_timeout_ms and
outbound.timeout_ms"; "A 429 or 503 with Retry-After ... waits that long
instead, up to an hour"; the delivery log of GET /v1/jobs/{id}/deliveries).

Covered: a 302 / 307 with a Location on the same receiver is a failed try,
retried on the schedule, and the Location is never requested; an answer
slower than `outbound.timeout_ms` is a failed try with no status and a
timeout error, and the retry then succeeds; `Retry-After: 999999` on a 429
is cut to one hour (next_attempt_at), far beyond the schedule; Retry-After
on a 500 is ignored (the schedule decides).

The receiver (webhook_receiver.py) runs on 127.0.0.1 and servers run with
`--allow-target 127.0.0.0/8`; nothing leaves loopback. The pending state
between two tries is read deterministically by holding the retry at the
receiver (Receiver.hold) while the log is read. Every wait has a deadline.
"""

import time

import pytest

from webhook_receiver import ALLOW, poll_deliveries
from conftest import TIME_RE, ts_parse

SLACK_EARLY = 0.05  # clock and scheduling slack before a due time
SLACK_LATE = 2.0  # commits, wake-ups and threads on a busy 2-core machine under ASan
JITTER = 0.2  # the schedule's documented ±20%


def answers_server(make_server, schedule="200ms,400ms,800ms", extra=""):
    """A server that may deliver to loopback, with its own retry schedule."""
    conf = f"[webhooks]\nretry_schedule = {schedule}\nbreaker_after = 1000\n" + extra
    return make_server(config_extra=conf, args=ALLOW)


def the_delivery(srv, jid, pred, timeout=10, what="delivery"):
    """The job's one delivery (seq 1, job.created, to its webhook_url) once pred(it)."""
    ds = poll_deliveries(srv, jid, lambda ds: len(ds) == 1 and pred(ds[0]),
                         timeout=timeout, what=what)
    d = ds[0]
    assert d["seq"] == 1 and d["destination"] == "webhook_url", d
    return d


# ------------------------------------------------------------------ redirects


@pytest.mark.parametrize("status", [302, 307])
def test_redirect_is_a_failed_try_and_its_location_is_never_requested(make_server,
                                                                     receiver, status):
    srv = answers_server(make_server)
    elsewhere = receiver.url + "/elsewhere"
    receiver.answer("/moved", (status, {"Location": elsewhere}, "moved over there"))
    jid = srv.submit("wh-redirect", webhook_url=receiver.url + "/moved")["id"]
    first = receiver.wait(1, path="/moved")[0]
    # Hold the retry unanswered, so the log shows the delivery between tries.
    receiver.hold("/moved")
    second = receiver.wait(2, path="/moved", timeout=5, what="the retry after a redirect")[1]
    gap = second["at"] - first["at"]
    assert 0.2 * (1 - JITTER) - SLACK_EARLY <= gap <= 0.2 * (1 + JITTER) + SLACK_LATE, \
        f"retry {gap:.3f}s after the {status}, schedule 0.2s"
    assert second["method"] == "POST" and second["id"] == first["id"] == f"{jid}_1", second
    assert second["body"] == first["body"]

    d = the_delivery(srv, jid, lambda d: d["attempts"] == 1, what="the redirect logged")
    assert d["state"] == "pending", d
    assert d["last_status"] == status and d["last_error"] is None, d
    assert [a["status"] for a in d["log"]] == [status], d
    assert d["log"][0]["error"] is None and "moved over there" in d["log"][0]["excerpt"], d
    assert TIME_RE.match(d["next_attempt_at"] or ""), d

    receiver.release("/moved")
    d = the_delivery(srv, jid, lambda d: d["state"] == "delivered", what="delivered on retry")
    assert d["attempts"] == 2 and d["last_status"] == 200, d
    assert [a["status"] for a in d["log"]] == [status, 200], d
    assert d["next_attempt_at"] is None, d
    time.sleep(0.3)  # anything sent on the answer's behalf would have come by now
    assert receiver.got(path="/elsewhere") == [], "the redirect's Location was requested"
    assert [r["path"] for r in receiver.got()] == ["/moved", "/moved"], receiver.got()


# ------------------------------------------------------------------ timeout


def test_answer_slower_than_outbound_timeout_ms_fails_the_try_then_retry_succeeds(
        make_server, receiver):
    timeout_ms = 500
    srv = answers_server(make_server, extra=f"[outbound]\ntimeout_ms = {timeout_ms}\n")
    # The first request is answered (200) only after 3 s: well past the timeout.
    receiver.set_delay("/slow", 3.0)
    jid = srv.submit("wh-slow", webhook_url=receiver.url + "/slow")["id"]
    first = receiver.wait(1, path="/slow")[0]
    receiver.set_delay("/slow", 0)  # read at arrival: only the first is slow

    recs = receiver.wait(2, path="/slow", timeout=5, what="the retry after a timeout")
    gap = recs[1]["at"] - first["at"]
    # The try ends at timeout_ms (not at the receiver's 3 s answer), then the
    # schedule's 0.2 s.
    lo = timeout_ms / 1000 + 0.2 * (1 - JITTER) - SLACK_EARLY
    assert lo <= gap <= timeout_ms / 1000 + 0.2 * (1 + JITTER) + SLACK_LATE, \
        f"retry {gap:.3f}s after the first try; timeout {timeout_ms} ms, schedule 0.2s"
    assert recs[1]["id"] == first["id"] == f"{jid}_1", recs[1]["id"]

    d = the_delivery(srv, jid, lambda d: d["state"] == "delivered", what="delivered on retry")
    assert d["attempts"] == 2 and d["last_status"] == 200 and d["last_error"] is None, d
    assert [a["status"] for a in d["log"]] == [None, 200], d
    timed_out = d["log"][0]
    err = (timed_out["error"] or "").lower()
    assert "timed out" in err or "timeout" in err, timed_out
    assert timed_out["excerpt"] in (None, ""), timed_out
    assert timeout_ms - 50 <= timed_out["latency_ms"] < 2500, timed_out
    assert d["log"][1]["error"] is None, d


# ------------------------------------------------------------------ Retry-After


def test_retry_after_on_429_is_capped_at_one_hour(make_server, receiver):
    srv = answers_server(make_server)
    receiver.answer("/ra-huge", (429, {"Retry-After": "999999"}, "come back in 11 days"))
    jid = srv.submit("wh-ra-cap", webhook_url=receiver.url + "/ra-huge")["id"]
    receiver.wait(1, path="/ra-huge")
    now = time.time()
    d = the_delivery(srv, jid, lambda d: d["attempts"] == 1, what="the 429 logged")
    assert d["state"] == "pending" and d["last_status"] == 429, d
    assert [a["status"] for a in d["log"]] == [429], d
    tried = ts_parse(d["log"][0]["at"])
    assert TIME_RE.match(d["next_attempt_at"] or ""), d
    wait = ts_parse(d["next_attempt_at"]) - tried
    # Cut to exactly the hour (Retry-After carries no jitter) ...
    assert 3600 - 1 <= wait <= 3600 + 1, f"next attempt {wait:.1f}s after the 429"
    assert ts_parse(d["next_attempt_at"]) <= now + 3600 + 2, d
    # ... and nothing comes on the schedule's 0.2 s.
    time.sleep(1.0)
    assert len(receiver.got(path="/ra-huge")) == 1, receiver.got()
    assert the_delivery(srv, jid, lambda d: True)["attempts"] == 1


def test_retry_after_on_500_is_ignored_the_schedule_decides(make_server, receiver):
    srv = answers_server(make_server, schedule="1s")
    receiver.answer("/ra-500", (500, {"Retry-After": "600"}, "broken, try in 10 min"))
    jid = srv.submit("wh-ra-500", webhook_url=receiver.url + "/ra-500")["id"]
    first = receiver.wait(1, path="/ra-500")[0]
    receiver.hold("/ra-500")  # the retry stays unanswered while the log is read
    recs = receiver.wait(2, path="/ra-500", timeout=5,
                         what="the retry on the 1s schedule (Retry-After: 600 ignored)")
    gap = recs[1]["at"] - first["at"]
    assert 1.0 * (1 - JITTER) - SLACK_EARLY <= gap <= 1.0 * (1 + JITTER) + SLACK_LATE, \
        f"retry {gap:.3f}s after a 500 with Retry-After: 600; schedule 1s"

    d = the_delivery(srv, jid, lambda d: d["attempts"] == 1, what="the 500 logged")
    assert d["state"] == "pending" and d["last_status"] == 500, d
    wait = ts_parse(d["next_attempt_at"]) - ts_parse(d["log"][0]["at"])
    assert 1.0 * (1 - JITTER) - 0.01 <= wait <= 1.0 * (1 + JITTER) + 0.01, \
        f"next attempt {wait:.3f}s after the 500; schedule 1s"

    receiver.release("/ra-500")
    d = the_delivery(srv, jid, lambda d: d["state"] == "delivered", what="delivered on retry")
    assert [a["status"] for a in d["log"]] == [500, 200], d
