"""A webhook receiver for the integration tests, and what it takes to check
drover's deliveries to it (docs/api.md "Events and webhooks").

Receiver listens on 127.0.0.1 (port 0, a daemon thread), records every
request — method, path, lower-case headers, the exact raw body, its JSON,
the webhook headers, arrival times — and answers from a per-path script
(500, 429 with Retry-After, 410, ...) or a per-path default. The
`receiver` and `make_receiver` fixtures (conftest.py) make them and stop
them after the test. Signatures are checked with webhook_sig.py, never with
drover's code.
"""

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from webhook_sig import sw_key


class Receiver:
    """A webhook receiver on 127.0.0.1. Records every request (method, path,
    lower-case headers, raw body, parsed JSON, monotonic and wall arrival
    times) and answers from the path's script, then the path's default, then
    `default`. An answer is a status or (status, headers, body). stop() and
    start() take it down and bring it back on the same port."""

    def __init__(self, default=200):
        self.default = default
        self.scripts = {}
        self.defaults = {}
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
                }
                with receiver.cond:
                    script = receiver.scripts.get(path)
                    if script:
                        item = script.pop(0)
                    else:
                        item = receiver.defaults.get(path, receiver.default)
                    rec["answer"] = item if isinstance(item, int) else item[0]
                    receiver.requests.append(rec)
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
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def answer(self, path, *items):
        """The next requests to path get these answers, in turn."""
        with self.cond:
            self.scripts.setdefault(path, []).extend(items)

    def set_default(self, path, item):
        with self.cond:
            self.defaults[path] = item

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
