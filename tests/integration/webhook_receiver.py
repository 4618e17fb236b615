"""A webhook receiver for the integration tests, and what it takes to check
drover's deliveries to it (docs/api.md "Events and webhooks").

Receiver listens on 127.0.0.1 (port 0, a daemon thread), records every
request — method, path, lower-case headers, the exact raw body, its JSON,
the webhook headers, arrival times — and answers from a per-path script
(500, 429 with Retry-After, 410, ...) or a per-path default, optionally
after a per-path delay or only once a held path is released. The
`receiver` and `make_receiver` fixtures (conftest.py) make them and stop
them after the test; test_runners.py's runner is a subclass that adds
fields of its own to each record (describe()). Signatures are checked with
webhook_sig.py, never with drover's code.

Below the receiver: helpers shared by the tests that follow deliveries
(test_webhooks, test_delivery_order) — the server they run, the delivery
log, subscriptions, a job run to success.
"""

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import TIME_RE, ts_parse
from webhook_sig import sw_key, sw_verify

MAX_HOLD_S = 30  # a held request is answered after this anyway (no thread outlives a test)


class Receiver:
    """A webhook receiver on 127.0.0.1. Records every request (method, path,
    "target" (the path with its query), lower-case headers, raw body, parsed
    JSON, monotonic and wall arrival times, and what describe() adds) and
    answers from the path's script, then the every-path script (path None),
    then the path's default, then `default`. An answer is a status or
    (status, headers, body). stop() and start() take it down and bring it
    back on the same port.

    set_delay(path, s) answers that path's requests s seconds after they
    arrive; hold(path) keeps them unanswered until release(path) (each
    request waits on the hold that was in place when it arrived). A record's
    "answered_at" is the monotonic time just before its answer was written
    (None while held or delayed): drover cannot have read an answer before
    it."""

    def __init__(self, default=200):
        self.default = default
        self.scripts = {}
        self.defaults = {}
        self.delays = {}
        self.holds = {}  # path (None: every path) -> threading.Event, set on release
        self.requests = []
        self.cond = threading.Condition()
        self.port = 0
        self.httpd = None
        self.start()

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _read_body(self):
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    body = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return body
                        body += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self):
                body = self._read_body()
                headers = {k.lower(): v for k, v in self.headers.items()}
                path = urllib.parse.urlsplit(self.path).path
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = None
                data = doc.get("data") if isinstance(doc, dict) else None
                job = data.get("job") if isinstance(data, dict) else None
                rec = {
                    "method": self.command,
                    "path": path,
                    "target": self.path,
                    "headers": headers,
                    "body": body,
                    "json": doc,
                    "type": doc.get("type") if isinstance(doc, dict) else None,
                    "seq": data.get("seq") if isinstance(data, dict) else None,
                    "job_id": job.get("id") if isinstance(job, dict) else None,
                    "id": headers.get("webhook-id"),
                    "ts": headers.get("webhook-timestamp"),
                    "sig": headers.get("webhook-signature"),
                    "at": time.monotonic(),
                    "wall": time.time(),
                    "answered_at": None,
                }
                rec.update(receiver.describe(rec))
                with receiver.cond:
                    script = receiver.scripts.get(path) or receiver.scripts.get(None)
                    if script:
                        item = script.pop(0)
                    else:
                        item = receiver.defaults.get(path, receiver.default)
                    rec["answer"] = item if isinstance(item, int) else item[0]
                    gates = [g for g in (receiver.holds.get(path), receiver.holds.get(None))
                             if g is not None]
                    rec["held"] = bool(gates)
                    delay = receiver.delays.get(path, 0)
                    receiver.requests.append(rec)
                    receiver.cond.notify_all()
                for g in gates:
                    g.wait(MAX_HOLD_S)
                if delay:
                    time.sleep(delay)
                with receiver.cond:
                    rec["answered_at"] = time.monotonic()
                    receiver.cond.notify_all()
                if isinstance(item, int):
                    item = (item, {}, json.dumps({"status": item}).encode())
                status, extra, reply = item
                if isinstance(reply, str):
                    reply = reply.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.send_header("Connection", "close")
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(reply)
                    self.wfile.flush()
                except OSError:
                    pass
                finally:
                    self.close_connection = True

            do_POST = do_PUT = do_PATCH = do_GET = _handle

            def log_message(self, *args):
                pass

        return Handler

    def start(self):
        deadline = time.monotonic() + 5
        while True:
            try:
                self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
                break
            except OSError:
                if self.port == 0 or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.release()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def describe(self, rec):
        """Fields of a subclass's own for a request's record (rec holds the
        common ones), added before it is recorded; on the request's thread."""
        return {}

    def answer(self, path, *items):
        """The next requests to path (None: to any path without a script of
        its own) get these answers, in turn."""
        with self.cond:
            self.scripts.setdefault(path, []).extend(items)

    def set_default(self, path, item):
        with self.cond:
            self.defaults[path] = item

    def set_delay(self, path, seconds):
        """Answer requests to path `seconds` after they arrive."""
        with self.cond:
            self.delays[path] = seconds

    def hold(self, path=None):
        """Leave requests to path (None: every path) that arrive from now on
        unanswered until release()."""
        with self.cond:
            if self.holds.get(path) is None:
                self.holds[path] = threading.Event()

    def release(self, path=False):
        """Answer the requests held on path (None: the every-path hold; by
        default every hold) and stop holding it."""
        with self.cond:
            paths = list(self.holds) if path is False else [path]
            for p in paths:
                g = self.holds.pop(p, None)
                if g is not None:
                    g.set()

    def wait_for(self, pred, timeout=10, what="condition"):
        """Wait until pred(requests) is true (called under the lock with a
        copy of every record so far); return the records."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = list(self.requests)
                if pred(got):
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{what}: not reached in {timeout}s; got "
                        f"{[(r['path'], r['job_id'], r['seq'], r['answer']) for r in got]}")
                self.cond.wait(left)

    def got(self, path=None, job_id=None):
        with self.cond:
            return [r for r in self.requests
                    if (path is None or r["path"] == path)
                    and (job_id is None or r["job_id"] == job_id)]

    def wait(self, n, path=None, job_id=None, timeout=10, what=None):
        """Wait until n requests (to path / for job_id) came; return them all."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [r for r in self.requests
                       if (path is None or r["path"] == path)
                       and (job_id is None or r["job_id"] == job_id)]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{what or 'receiver'}: got {len(got)} requests, wanted {n}: "
                        f"{[(r['path'], r['type'], r['seq'], r['answer']) for r in got]}")
                self.cond.wait(left)

    def wait_seqs(self, job_id, seqs, path=None, timeout=10):
        """Wait until every seq in seqs arrived for job_id; return the job's requests."""
        deadline = time.monotonic() + timeout
        want = set(seqs)
        with self.cond:
            while True:
                got = [r for r in self.requests if r["job_id"] == job_id
                       and (path is None or r["path"] == path)]
                if want <= {r["seq"] for r in got if r["answer"] // 100 == 2}:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"wanted seqs {sorted(want)} of {job_id}, got "
                        f"{[(r['type'], r['seq'], r['answer']) for r in got]}")
                self.cond.wait(left)


def server_secret(srv):
    """The secret that signs jobs' own webhook_url deliveries (generated)."""
    p = srv.data_dir / "webhook.secret"
    assert p.exists(), f"{p} was not generated"
    s = p.read_text().strip()
    assert s.startswith("whsec_") and len(sw_key(s)) >= 16, s
    return s


# ---------------------------------------------------------------------------
# Helpers for the delivery tests (test_webhooks, test_delivery_order).
# ---------------------------------------------------------------------------

ALLOW = ["--allow-target", "127.0.0.0/8"]
SCHEDULE = [0.2, 0.4, 0.8]  # seconds; the last repeats
WH = "[webhooks]\nretry_schedule = 200ms,400ms,800ms\n"


def wh_server(make_server, extra=""):
    """A server with the fast retry schedule (WH) that may deliver to loopback."""
    return make_server(config_extra=WH + extra, args=ALLOW)


# The fields of a body's data.job (job.succeeded adds artifacts).
JOB_KEYS = {"id", "queue", "state", "previous_state", "step", "attempt", "error", "result",
            "created_at", "updated_at"}


def check_body(doc, ev, job, **want):
    """The documented body of event ev of job (as GET shows it now): the
    event's type, timestamp, seq and data, the job's id, queue and
    created_at, and its state, previous state, step and attempt as of the
    event; then every field of data.job named in want (result: null unless
    wanted). Returns data.job."""
    assert set(doc) == {"type", "timestamp", "data"}, doc
    assert doc["type"] == ev["type"], (doc, ev)
    assert TIME_RE.match(doc["timestamp"]), doc
    assert abs(ts_parse(doc["timestamp"]) - ts_parse(ev["at"])) < 2, (doc, ev)
    data = doc["data"]
    assert data["seq"] == ev["seq"], doc
    assert data["event"] == ev["data"], (doc, ev)
    j = data["job"]
    assert JOB_KEYS <= set(j), j
    if doc["type"] != "job.succeeded":
        assert "artifacts" not in j, f"artifacts are on job.succeeded only: {j}"
    assert j["id"] == job["id"] and j["queue"] == job["queue"], j
    assert j["created_at"] == job["created_at"], j
    assert TIME_RE.match(j["updated_at"]), j
    assert ts_parse(job["created_at"]) <= ts_parse(j["updated_at"]) <= \
        ts_parse(job["updated_at"]), (j, job)
    # The job as of the event: what its history says.
    assert j["state"] == ev["state"] and j["previous_state"] == ev["prev_state"], (j, ev)
    assert j["attempt"] == ev["attempt"] and j["step"] == ev["step"], (j, ev)
    want.setdefault("result", None)
    for k, v in want.items():
        assert j[k] == v, (k, j)
    return j


def verifies(rec, secret):
    return sw_verify(secret, rec["id"], rec["ts"], rec["body"], rec["sig"])


def first_arrivals(recs):
    """The seqs in the order each first arrived."""
    seen, out = set(), []
    for r in recs:
        if r["seq"] not in seen:
            seen.add(r["seq"])
            out.append(r["seq"])
    return out


def deliveries(srv, job_id, token="read", **query):
    q = urllib.parse.urlencode(query)
    r = srv.request("GET", f"/v1/jobs/{job_id}/deliveries" + (f"?{q}" if q else ""),
                    token=token)
    assert r.status == 200, r
    return r.json


def _all_pages(srv, path):
    out, after = [], None
    for _ in range(100):
        q = {"limit": 200, **({"after": after} if after else {})}
        r = srv.request("GET", f"{path}?{urllib.parse.urlencode(q)}", token="read")
        assert r.status == 200, r
        out.extend(r.json["deliveries"])
        after = r.json["next"]
        if after is None:
            return out
    raise AssertionError("delivery pagination did not end")


def all_deliveries(srv, job_id):
    """GET /v1/jobs/{id}/deliveries, every page."""
    return _all_pages(srv, f"/v1/jobs/{job_id}/deliveries")


def all_sub_deliveries(srv, sub_id):
    """GET /v1/subscriptions/{id}/deliveries, every page."""
    return _all_pages(srv, f"/v1/subscriptions/{sub_id}/deliveries")


def _poll(fetch, pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        ds = fetch()
        if pred(ds):
            return ds
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached in {timeout}s: "
                                 f"{json.dumps(ds, indent=1)[:3000]}")
        time.sleep(0.05)


def poll_deliveries(srv, job_id, pred, timeout=10, what="deliveries"):
    """The job's delivery log, once pred(log) (it is written in the background)."""
    return _poll(lambda: all_deliveries(srv, job_id), pred, timeout, what)


def poll_sub_deliveries(srv, sub_id, pred, timeout=10, what="deliveries"):
    """A subscription's delivery log, once pred(log)."""
    return _poll(lambda: all_sub_deliveries(srv, sub_id), pred, timeout, what)


def delivery_of(ds, seq, destination="webhook_url", sub=None):
    """The one row of a delivery log for (seq, destination[, subscription])."""
    got = [d for d in ds if d["seq"] == seq and d["destination"] == destination
           and (sub is None or d["subscription"] == sub)]
    assert len(got) == 1, (seq, destination, sub, ds)
    return got[0]


def create_sub(srv, **body):
    """POST /v1/subscriptions (admin); assert 201 and the echoed fields; return it."""
    from conftest import ULID_RE  # here, not at the top: conftest imports this module

    r = srv.request("POST", "/v1/subscriptions", body, token="admin")
    assert r.status == 201, r
    s = r.json
    assert ULID_RE.match(s["id"]), s
    assert r.headers.get("location") == f"/v1/subscriptions/{s['id']}", r.headers
    assert s["url"] == body["url"], s
    assert isinstance(s["secret"], str) and s["secret"].startswith("whsec_"), s
    if "secret" in body:
        assert s["secret"] == body["secret"], s
    assert s["enabled"] is body.get("enabled", True), s
    assert s["disabled_reason"] is None, s
    assert s["events"] == body.get("events"), s
    assert s["queues"] == body.get("queues"), s
    return s


def run_to_success(srv, queue, job_id, steps=(), result=None):
    """Claim job_id from queue, report steps [(name, data)], complete it."""
    from conftest import claim_one, lease_call  # see create_sub

    c = claim_one(srv, queue)
    assert c["id"] == job_id, c
    lease = c["lease"]["token"]
    for name, data in steps:
        r = lease_call(srv, job_id, "steps", lease, step=name, data=data)
        assert r.status == 200, r
    body = {} if result is None else {"result": result}
    r = lease_call(srv, job_id, "complete", lease, **body)
    assert r.status == 200 and r.json["state"] == "succeeded", r
    return r.json
