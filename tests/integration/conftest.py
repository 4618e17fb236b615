"""Harness for drover's integration tests.

Each test talks to the real binary ($DROVER_BIN, default ./drover) started on
a free loopback port (`--listen 127.0.0.1:0`; the port is read back from the
"listening" log line) with a fresh data directory. Nothing here reaches beyond
127.0.0.1, and every wait is bounded.
"""

import http.client
import json
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DROVER_BIN = os.environ.get("DROVER_BIN", str(ROOT / "drover"))

TOKENS = {
    "admin": "admin-secret-0123456789",
    "submit": "submit-secret-0123456789",
    "worker": "worker-secret-0123456789",
    "read": "read-secret-0123456789",
}

START_TIMEOUT_S = 20  # generous: ASan builds start slower


def config_text(extra=""):
    return (
        "[auth]\n"
        f"admin_token = {TOKENS['admin']}\n"
        f"submit_token = {TOKENS['submit']}\n"
        f"worker_token = {TOKENS['worker']}\n"
        f"read_token = {TOKENS['read']}\n" + extra
    )


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # dict, lower-case names
        self.body = body  # bytes
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return f"<Response {self.status} {self.body[:200]!r}>"


class Server:
    """One drover process. start() / stop() / kill() / restart()."""

    def __init__(self, tmp_path, config_extra="", args=(), env=None):
        self.data_dir = tmp_path / "data"
        self.config_path = tmp_path / "drover.conf"
        self.config_path.write_text(config_text(config_extra))
        self.log_path = tmp_path / "server.log"
        self.args = list(args)
        self.env = dict(os.environ)
        self.env.pop("DROVER_ADMIN_TOKEN", None)
        if env:
            self.env.update(env)
        self.proc = None
        self.port = None
        self._log = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, listen="127.0.0.1:0"):
        self._log = open(self.log_path, "ab")
        start_offset = self._log.tell()
        self.proc = subprocess.Popen(
            [DROVER_BIN, "serve", "--listen", listen, "--data", str(self.data_dir),
             "--config", str(self.config_path), *self.args],
            stdout=self._log, stderr=self._log, env=self.env,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"drover exited {self.proc.returncode}:\n{self.log()}")
            with open(self.log_path, "rb") as f:
                f.seek(start_offset)
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if rec.get("msg") == "listening":
                        self.port = int(rec["addr"].rsplit(":", 1)[1])
                        return self
            time.sleep(0.02)
        self.proc.kill()
        raise RuntimeError(f"drover did not start in {START_TIMEOUT_S}s:\n{self.log()}")

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self):
        out = []
        for line in self.log().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def stop(self, timeout=20):
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._log.close()
        self.proc = None
        return rc

    def kill(self):
        """SIGKILL: no chance to flush or close anything."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._log.close()
        self.proc = None

    def restart(self):
        self.stop()
        return self.start(listen=f"127.0.0.1:{self.port}")

    def request(self, method, path, body=None, token="admin", headers=None, raw=None,
                timeout=10):
        """One HTTP request on a fresh connection. body is JSON-encoded unless
        raw (bytes) is given. token is a role name, a literal token, or None."""
        h = {}
        if token is not None:
            h["Authorization"] = "Bearer " + TOKENS.get(token, token)
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if headers:
            h.update(headers)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def raw(self, data, timeout=5):
        """Send raw bytes on a new connection; return everything read until close
        or timeout (bytes)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            s.sendall(data)
            chunks = []
            while True:
                try:
                    c = s.recv(65536)
                except socket.timeout:
                    break
                if not c:
                    break
                chunks.append(c)
            return b"".join(chunks)
        finally:
            s.close()

    # Conveniences used across tests.
    def submit(self, queue="default", payload=None, token="submit", **fields):
        body = {"queue": queue, **fields}
        if payload is not None:
            body["payload"] = payload
        r = self.request("POST", "/v1/jobs", body, token=token)
        assert r.status == 202, r
        return r.json

    def get_job(self, job_id, token="read"):
        r = self.request("GET", f"/v1/jobs/{job_id}", token=token)
        assert r.status == 200, r
        return r.json


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path).start()
    yield s
    if s.proc is not None:
        rc = s.stop()
        assert rc == 0, f"drover exited {rc} on SIGTERM:\n{s.log()[-4000:]}"


@pytest.fixture
def make_server(tmp_path):
    """Factory for tests that need their own config or several servers."""
    made = []

    def make(config_extra="", args=(), env=None, subdir=None, start=True):
        d = tmp_path / (subdir or f"s{len(made)}")
        d.mkdir(exist_ok=True)
        s = Server(d, config_extra=config_extra, args=args, env=env)
        made.append(s)
        return s.start() if start else s

    yield make
    for s in made:
        if s.proc is not None:
            s.stop()


def closed_port():
    """A loopback port nothing listens on (bound once, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_threads(n, fn):
    """Run fn(i) on n threads; return the list of results (exceptions re-raised)."""
    results = [None] * n
    errors = []

    def wrap(i):
        try:
            results[i] = fn(i)
        except BaseException as e:  # noqa: B902 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    return results


# ---------------------------------------------------------------------------
# Helpers shared by the contract tests (test_jobs_api, test_errors, test_auth,
# test_durability, test_server_ops). Added below the harness; nothing above is
# changed.
# ---------------------------------------------------------------------------

import re as _re

ULID_RE = _re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
TIME_RE = _re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
REQUEST_ID_RE = _re.compile(r"^[A-Za-z0-9._-]{1,64}$")
UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"  # well-formed ULID nobody created


def field_matches(actual, expected):
    """`field` names the field: exactly, or a path inside it (lock_keys[0],
    backoff.factor)."""
    if not isinstance(actual, str):
        return False
    return actual == expected or actual.startswith(expected + "[") or \
        actual.startswith(expected + ".") or actual.startswith(expected + "/")


def assert_error(r, status, code, field=None):
    """r is a documented error: status, JSON body {"error", "message"[, "field"]},
    and an X-Request-Id header. code may be a string or a set of allowed codes."""
    assert r.status == status, f"expected {status} {code}, got {r!r}"
    ctype = r.headers.get("content-type", "")
    assert ctype.split(";")[0].strip().lower() == "application/json", (ctype, r)
    assert isinstance(r.json, dict), f"error body is not a JSON object: {r!r}"
    codes = {code} if isinstance(code, str) else set(code)
    assert r.json.get("error") in codes, f"expected error in {codes}: {r.json}"
    assert isinstance(r.json.get("message"), str) and r.json["message"], r.json
    if field is not None:
        assert field_matches(r.json.get("field"), field), \
            f"expected field {field!r}: {r.json}"
    assert REQUEST_ID_RE.match(r.headers.get("x-request-id", "")), r.headers
    return r.json


def list_all_jobs(server, token="admin", limit=500, max_pages=1000, **query):
    """Walk GET /v1/jobs page by page; return every job (newest first)."""
    import urllib.parse
    jobs, after = [], None
    for _ in range(max_pages):
        q = dict(query, limit=limit)
        if after is not None:
            q["after"] = after
        r = server.request("GET", "/v1/jobs?" + urllib.parse.urlencode(q), token=token)
        assert r.status == 200, r
        jobs.extend(r.json["jobs"])
        after = r.json["next"]
        if after is None:
            return jobs
    raise AssertionError("pagination did not end")


def parse_http_response(data):
    """Parse one HTTP/1.1 response from bytes. Returns (Response, complete)."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None, False
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        k = k.strip().decode("latin-1").lower()
        v = v.strip().decode("latin-1")
        headers[k] = headers[k] + ", " + v if k in headers else v
    if "content-length" in headers:
        n = int(headers["content-length"].split(",")[0])
        return Response(status, headers, rest[:n]), len(rest) >= n
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body, pos = b"", 0
        while True:
            eol = rest.find(b"\r\n", pos)
            if eol < 0:
                return Response(status, headers, body), False
            size = int(rest[pos:eol].split(b";")[0], 16)
            if size == 0:
                return Response(status, headers, body), True
            if len(rest) < eol + 2 + size + 2:
                return Response(status, headers, body), False
            body += rest[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
    if status in (204, 304) or 100 <= status < 200:
        return Response(status, headers, b""), True
    return Response(status, headers, rest), False  # body until close


def raw_exchange(server, head, body_parts=(), timeout=5):
    """Send raw bytes (head, then each of body_parts) on a new connection and
    read one response, returning as soon as it is complete (or at close or
    timeout). Send errors after the server answered early are tolerated.
    Returns a Response, or None when nothing parseable came back."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    try:
        try:
            s.sendall(head)
            for p in body_parts:
                s.sendall(p)
        except (BrokenPipeError, ConnectionResetError):
            pass
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, complete = parse_http_response(buf)
            if complete:
                return r
            try:
                c = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not c:
                break
            buf += c
        r, _ = parse_http_response(buf)
        return r
    finally:
        s.close()


# ---------------------------------------------------------------------------
# Helpers for the worker-contract tests (test_claims, test_leases,
# test_retries_timeouts, test_restart_deadlines). Appended; nothing above is
# changed.
# ---------------------------------------------------------------------------

import calendar as _calendar
import datetime as _datetime


def ts_parse(s):
    """RFC 3339 UTC with milliseconds -> Unix seconds (float)."""
    assert isinstance(s, str) and TIME_RE.match(s), s
    dt = _datetime.datetime.strptime(s[:-1], "%Y-%m-%dT%H:%M:%S.%f")
    return _calendar.timegm(dt.timetuple()) + dt.microsecond / 1e6


def ts_format(unix_s):
    """Unix seconds -> RFC 3339 UTC with milliseconds (truncated)."""
    ms = int(unix_s * 1000)
    dt = _datetime.datetime.fromtimestamp(ms // 1000, _datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)


def put_queue(server, name, **policy):
    """PUT /v1/queues/{name} (admin) and return the policy."""
    r = server.request("PUT", f"/v1/queues/{name}", policy, token="admin")
    assert r.status == 200, r
    return r.json


def claim_req(server, queue, worker="w1", max_jobs=None, wait_s=None, token="worker",
              body=None):
    """POST /v1/queues/{queue}/claim; returns the Response. body overrides."""
    if body is None:
        body = {"worker": worker}
        if max_jobs is not None:
            body["max"] = max_jobs
        if wait_s is not None:
            body["wait_s"] = wait_s
    timeout = 10 + (wait_s or 0)
    return server.request("POST", f"/v1/queues/{queue}/claim", body, token=token,
                          timeout=timeout)


def claim(server, queue, worker="w1", max_jobs=None, wait_s=None, token="worker"):
    """Claim; assert 200 {"jobs": [...]}; return the list of claimed jobs."""
    r = claim_req(server, queue, worker, max_jobs, wait_s, token)
    assert r.status == 200, r
    assert isinstance(r.json, dict) and isinstance(r.json.get("jobs"), list), r
    return r.json["jobs"]


def claim_one(server, queue, worker="w1", wait_s=None):
    jobs = claim(server, queue, worker, max_jobs=1, wait_s=wait_s)
    assert len(jobs) == 1, jobs
    return jobs[0]


def lease_call(server, job_id, action, lease, token="worker", **fields):
    """POST /v1/jobs/{id}/{heartbeat|steps|complete|fail} with {"lease": lease, ...}."""
    body = dict(fields)
    if lease is not None:
        body["lease"] = lease
    return server.request("POST", f"/v1/jobs/{job_id}/{action}", body, token=token)


def poll_job(server, job_id, pred, timeout, interval=0.05, what="condition"):
    """GET the job every `interval` s until pred(job); return it. Fails with
    the last job seen when `timeout` s pass."""
    deadline = time.monotonic() + timeout
    job = None
    while True:
        job = server.get_job(job_id, token="admin")
        if pred(job):
            return job
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached in {timeout}s; job: {job}")
        time.sleep(interval)


def job_events(server, job_id):
    """Every event of a job, oldest first."""
    out, after = [], 0
    for _ in range(1000):
        r = server.request("GET", f"/v1/jobs/{job_id}/events?after={after}&limit=1000",
                           token="read")
        assert r.status == 200, r
        out.extend(r.json["events"])
        if r.json["next"] is None:
            return out
        after = r.json["next"]
    raise AssertionError("event pagination did not end")


class Async:
    """Run fn() on a thread; .result(timeout) returns its value (or re-raises)
    and .t_done is the monotonic time it finished."""

    def __init__(self, fn):
        self.value = None
        self.error = None
        self.t_done = None
        self.done = threading.Event()

        def run():
            try:
                self.value = fn()
            except BaseException as e:  # noqa: B902 - re-raised in result()
                self.error = e
            finally:
                self.t_done = time.monotonic()
                self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout):
        assert self.done.wait(timeout), f"background call did not finish in {timeout}s"
        if self.error is not None:
            raise self.error
        return self.value


# ---------------------------------------------------------------------------
# Webhook receivers (webhook_receiver.py) for the tests that follow drover's
# deliveries (test_webhooks, test_artifacts). Appended; nothing above is
# changed.
# ---------------------------------------------------------------------------

from webhook_receiver import Receiver as _Receiver


@pytest.fixture
def make_receiver():
    """Factory: make_receiver(default=200) -> a started Receiver, stopped after the test.
    cls: a subclass of Receiver to make instead."""
    made = []

    def make(cls=_Receiver, **kw):
        r = cls(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


@pytest.fixture
def receiver(make_receiver):
    return make_receiver()
