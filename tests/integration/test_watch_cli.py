"""`drover watch` and `drover retry` against the real server.

A test drives each job through the worker API (claim -> steps -> complete or
fail, with the worker token) while the real `drover watch` binary follows it
as a subprocess; a reader thread collects the watcher's output so that every
wait has a deadline. Loopback only.
"""

import json
import os
import pty
import queue
import re
import select
import signal
import subprocess
import threading
import time

import pytest

from conftest import DROVER_BIN, TOKENS, UNKNOWN_ID

# Exit codes (src/cli/cli.h).
OK, JOB_FAILED, USAGE, NOT_FOUND, CONFLICT, AUTH = 0, 1, 2, 3, 4, 5
INTERRUPTED = 130

WAIT_S = 30  # the bound on any one wait; generous for ASan builds
INTERVAL = "0.05"  # watch's poll interval in these tests


def clean_env():
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("DROVER_") or k.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            del env[k]
    return env


def cli_env(server, token):
    e = clean_env()
    e["DROVER_URL"] = server.url
    if token is not None:
        e["DROVER_TOKEN"] = TOKENS.get(token, token)
    return e


def drover(server, *args, token="submit", timeout=WAIT_S):
    """Run the binary to its end; server None means no server (help, usage)."""
    e = cli_env(server, token) if server else clean_env()
    return subprocess.run([DROVER_BIN, *args], capture_output=True, text=True, env=e,
                          timeout=timeout)


class Watcher:
    """`drover watch ...` running in the background, its stdout read line by
    line on a thread so that tests can wait for a line with a deadline."""

    def __init__(self, server, *args, token="read"):
        self.proc = subprocess.Popen([DROVER_BIN, "watch", *args, "--interval", INTERVAL],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=cli_env(server, token))
        self.lines = []
        self._queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_line(self, pred, timeout=WAIT_S):
        """Collect lines until one satisfies pred; return it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such line in {timeout}s: {self.lines}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"watch ended first (rc {self.proc.poll()}): {self.lines}")
            self.lines.append(line)
            if pred(line):
                return line

    def finish(self, timeout=WAIT_S):
        """Wait for the exit; returns (rc, all stdout lines, stderr)."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(timeout=timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rc, self.lines, err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def watchers():
    made = []

    def make(server, *args, **kw):
        w = Watcher(server, *args, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.kill()


# --- the worker side, through the API ----------------------------------------

def put_steps(server, q, steps, **policy):
    r = server.request("PUT", f"/v1/queues/{q}", {"steps": steps, **policy}, token="admin")
    assert r.status == 200, r


def claim_job(server, q, job_id):
    r = server.request("POST", f"/v1/queues/{q}/claim", {"worker": "t", "max": 1, "wait_s": 5},
                       token="worker", timeout=20)
    assert r.status == 200, r
    jobs = r.json["jobs"]
    assert [j["id"] for j in jobs] == [job_id], r.json
    return jobs[0]["lease"]["token"]


def lease_call(server, job_id, action, lease, **fields):
    r = server.request("POST", f"/v1/jobs/{job_id}/{action}", {"lease": lease, **fields},
                       token="worker")
    assert r.status == 200, (action, r)
    return r.json


def all_events(server, job_id):
    events, after = [], 0
    for _ in range(100):
        r = server.request("GET", f"/v1/jobs/{job_id}/events?after={after}", token="read")
        assert r.status == 200, r
        events += r.json["events"]
        if r.json["next"] is None:
            return events
        after = r.json["next"]
    raise AssertionError("events did not end")


def snapshots(lines):
    """Plain watch output: snapshots separated by blank lines, each a list of lines."""
    out, cur = [], []
    for line in lines:
        if line == "":
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append(line)
    if cur:
        out.append(cur)
    return out


def field(snapshot, name):
    for line in snapshot:
        key, _, value = line.partition(" ")
        if key == name:
            return value.strip()
    return None


def step_marks(snapshot):
    """{step: mark} from the plain view's "  MARK  NAME" lines."""
    marks = {}
    for line in snapshot:
        m = re.fullmatch(r"  (done|active|error|pending) +(\S+)", line)
        if m:
            marks[m.group(2)] = m.group(1)
    return marks


# --- watch --json ------------------------------------------------------------

def test_watch_json_prints_every_event_in_order_and_exits_0(server, watchers):
    put_steps(server, "q", ["fetch", "build", "deploy"])
    job_id = server.submit("q")["id"]
    w = watchers(server, job_id, "--json")
    first = json.loads(w.wait_line(lambda line: True))
    assert first["type"] == "job.created" and first["seq"] == 1, first

    def drive():
        lease = claim_job(server, "q", job_id)
        for step in ("fetch", "build", "deploy"):
            time.sleep(0.1)  # a few polls apart: the watcher sees them arrive
            lease_call(server, job_id, "steps", lease, step=step, data={"n": step})
        lease_call(server, job_id, "complete", lease, result={"ok": True})

    t = threading.Thread(target=drive)
    t.start()
    t.join(timeout=WAIT_S)
    assert not t.is_alive()
    rc, lines, err = w.finish()
    assert rc == OK, (rc, err, lines)
    assert err == ""
    printed = [json.loads(line) for line in lines]
    assert printed == all_events(server, job_id)  # each one, in order, nothing else
    seqs = [e["seq"] for e in printed]
    assert seqs == sorted(set(seqs))
    types = [e["type"] for e in printed]
    assert types[0] == "job.created" and types[-1] == "job.succeeded", types
    assert [e["step"] for e in printed if e["type"] == "job.step"] == ["fetch", "build", "deploy"]
    assert "job.running" in types


def test_watch_json_of_an_ended_job_prints_its_history(server):
    job_id = server.submit("q")["id"]
    assert server.request("POST", f"/v1/jobs/{job_id}/cancel", token="submit").status == 200
    p = drover(server, "watch", job_id, "--json", token="read")
    assert p.returncode == JOB_FAILED, p.stderr
    assert [json.loads(line) for line in p.stdout.splitlines()] == all_events(server, job_id)


# --- watch, readable (not a terminal) ----------------------------------------

def test_watch_plain_shows_declared_steps_done_and_active(server, watchers):
    put_steps(server, "prov", ["vm_created", "ansible_started", "ansible_complete"])
    job_id = server.submit("prov")["id"]
    lease = claim_job(server, "prov", job_id)
    lease_call(server, job_id, "steps", lease, step="vm_created", data={"vm": 7})

    w = watchers(server, job_id)
    w.wait_line(lambda line: "ansible_complete" in line)  # the end of the first snapshot
    first = snapshots(w.lines)[0]
    assert field(first, "job") == job_id
    assert field(first, "queue") == "prov"
    assert field(first, "state") == "running"
    assert field(first, "attempt") == "1"
    assert re.fullmatch(r"\d+\.\ds", field(first, "elapsed")), first
    assert step_marks(first) == {"vm_created": "done", "ansible_started": "active",
                                 "ansible_complete": "pending"}, first

    # The next step moves "active" on, in a new snapshot.
    lease_call(server, job_id, "steps", lease, step="ansible_started")
    w.wait_line(lambda line: re.fullmatch(r"  active +ansible_complete", line) is not None)
    # A step the queue did not declare is listed after the declared ones.
    lease_call(server, job_id, "steps", lease, step="extra_step")
    w.wait_line(lambda line: "extra_step" in line)
    lease_call(server, job_id, "steps", lease, step="ansible_complete")
    lease_call(server, job_id, "complete", lease)

    rc, lines, err = w.finish()
    assert rc == OK, (rc, err, lines)
    last = snapshots(lines)[-1]
    assert field(last, "state") == "succeeded"
    assert list(step_marks(last).items()) == [
        ("vm_created", "done"), ("ansible_started", "done"), ("ansible_complete", "done"),
        ("extra_step", "done")], last
    assert not any("\x1b" in line for line in lines)  # no terminal codes into a pipe


def test_watch_failed_job_exits_1_and_shows_failed_step_and_error(server, watchers):
    put_steps(server, "build", ["fetch", "compile", "upload"])
    job_id = server.submit("build")["id"]
    w = watchers(server, job_id)
    w.wait_line(lambda line: line.startswith("state") and "queued" in line)

    lease = claim_job(server, "build", job_id)
    lease_call(server, job_id, "steps", lease, step="fetch")
    lease_call(server, job_id, "fail", lease,
               error={"message": "the compiler exploded", "step": "compile",
                      "retryable": False})

    rc, lines, err = w.finish()
    assert rc == JOB_FAILED, (rc, err, lines)
    assert err == ""
    last = snapshots(lines)[-1]
    assert field(last, "state") == "failed"
    assert step_marks(last) == {"fetch": "done", "compile": "error", "upload": "pending"}, last
    # The error's kind and message sit right under the step that failed.
    at = last.index(next(line for line in last if re.fullmatch(r"  error +compile", line)))
    assert "the compiler exploded" in last[at + 1], last
    assert "error" in last[at + 1].split(":")[0], last


def test_watch_canceled_queued_job_exits_1(server, watchers):
    job_id = server.submit("q")["id"]
    w = watchers(server, job_id)
    w.wait_line(lambda line: line.startswith("state") and "queued" in line)
    assert server.request("POST", f"/v1/jobs/{job_id}/cancel", token="submit").status == 200
    rc, lines, err = w.finish()
    assert rc == JOB_FAILED, (rc, err, lines)
    assert field(snapshots(lines)[-1], "state") == "canceled"


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_watch_unknown_job_exits_3(server, extra):
    p = drover(server, "watch", UNKNOWN_ID, *extra, token="read")
    assert p.returncode == NOT_FOUND, p.stderr
    assert p.stdout == ""
    assert p.stderr.startswith("drover: not_found"), p.stderr
    assert len(p.stderr.splitlines()) == 1


def test_watch_bad_token_exits_5(server):
    job_id = server.submit("q")["id"]
    p = drover(server, "watch", job_id, token="wrong-token")
    assert p.returncode == AUTH, p.stderr


def test_watch_sigint_exits_cleanly(server, watchers):
    job_id = server.submit("q")["id"]
    w = watchers(server, job_id)
    w.wait_line(lambda line: line.startswith("state"))
    w.proc.send_signal(signal.SIGINT)
    rc, _, err = w.finish(timeout=10)
    assert rc == INTERRUPTED, (rc, err)
    assert err == ""


def read_pty(fd, proc, timeout):
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out


def test_watch_on_a_terminal_redraws_in_place(server):
    put_steps(server, "tty", ["one", "two"])
    job_id = server.submit("tty")["id"]
    lease = claim_job(server, "tty", job_id)
    lease_call(server, job_id, "steps", lease, step="one")

    master, slave = pty.openpty()
    env = cli_env(server, "read")
    env["TERM"] = "xterm"
    proc = subprocess.Popen([DROVER_BIN, "watch", job_id, "--interval", INTERVAL],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE,
                            env=env)
    os.close(slave)
    try:
        out = read_pty(master, proc, 1.0)  # a few frames of a running job
        lease_call(server, job_id, "steps", lease, step="two")
        lease_call(server, job_id, "complete", lease)
        out += read_pty(master, proc, WAIT_S)
        rc = proc.wait(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = out.decode("utf-8", errors="replace")
    assert rc == OK, (rc, proc.stderr.read(), text)
    assert "✓ one" in text and "▸ two" in text, text
    assert re.search(r"\x1b\[\d+A", text), text  # moved back up to redraw
    assert "\x1b[K" in text
    assert "✓ two" in text
    assert "succeeded" in text


# --- retry -------------------------------------------------------------------

def failed_job(server, q="r"):
    job_id = server.submit(q)["id"]
    lease = claim_job(server, q, job_id)
    lease_call(server, job_id, "fail", lease, error={"message": "boom", "retryable": False})
    assert server.get_job(job_id)["state"] == "failed"
    return job_id


def test_retry_failed_job_is_queued(server):
    job_id = failed_job(server)
    p = drover(server, "retry", job_id)
    assert p.returncode == OK, p.stderr
    assert p.stdout == f"{job_id} queued\n"
    assert p.stderr == ""
    job = server.get_job(job_id)
    assert job["state"] == "queued"
    # And the new attempt is claimable.
    claim_job(server, "r", job_id)


def test_retry_json_prints_the_job(server):
    job_id = failed_job(server)
    p = drover(server, "retry", job_id, "--json")
    assert p.returncode == OK, p.stderr
    job = json.loads(p.stdout)
    assert job["id"] == job_id and job["state"] == "queued"
    assert job == server.get_job(job_id)


def test_retry_succeeded_job_conflicts(server):
    job_id = server.submit("r")["id"]
    lease = claim_job(server, "r", job_id)
    lease_call(server, job_id, "complete", lease)
    p = drover(server, "retry", job_id)
    assert p.returncode == CONFLICT, p.stderr
    assert p.stdout == ""
    assert p.stderr.startswith("drover: illegal_transition: "), p.stderr


def test_retry_past_retry_cap_needs_admin_force(server):
    r = server.request("PUT", "/v1/queues/capped", {"retry_cap": 1}, token="admin")
    assert r.status == 200, r
    job_id = failed_job(server, "capped")

    p = drover(server, "retry", job_id)
    assert p.returncode == CONFLICT, p.stderr
    assert p.stderr.startswith("drover: retry_cap: "), p.stderr
    assert len(p.stderr.splitlines()) == 1
    # --force is an admin's: with a submit token it is refused (api.md says 409
    # retry_cap; the server answers 403 forbidden, which the auth rules allow too).
    p = drover(server, "retry", job_id, "--force")
    assert p.returncode in (CONFLICT, AUTH), p.stderr
    assert re.match(r"drover: (retry_cap|forbidden): ", p.stderr), p.stderr
    assert server.get_job(job_id)["state"] == "failed"

    p = drover(server, "retry", job_id, "--force", token="admin")
    assert p.returncode == OK, p.stderr
    assert p.stdout == f"{job_id} queued\n"
    assert server.get_job(job_id)["state"] == "queued"


def test_retry_unknown_job_exits_3(server):
    p = drover(server, "retry", UNKNOWN_ID)
    assert p.returncode == NOT_FOUND, p.stderr
    assert p.stderr.startswith("drover: not_found"), p.stderr


def test_watch_follows_a_retried_job_to_success(server, watchers):
    """After a manual retry the job is no longer ended: watch waits for the new attempt."""
    job_id = failed_job(server)
    assert drover(server, "retry", job_id).returncode == OK
    w = watchers(server, job_id, "--json")
    w.wait_line(lambda line: json.loads(line)["type"] == "job.queued")
    lease = claim_job(server, "r", job_id)
    lease_call(server, job_id, "complete", lease)
    rc, lines, err = w.finish()
    assert rc == OK, (rc, err, lines)
    assert json.loads(lines[-1])["type"] == "job.succeeded"
    assert [json.loads(line) for line in lines] == all_events(server, job_id)


# --- help and usage ----------------------------------------------------------

@pytest.mark.parametrize("cmd, options", [("watch", ["--interval", "--json"]),
                                          ("retry", ["--force", "--json"])])
def test_help_lists_options_and_exit_codes(cmd, options):
    p = drover(None, cmd, "--help")
    assert p.returncode == OK, p.stderr
    assert p.stdout.startswith(f"usage: drover {cmd} ID")
    for o in options + ["--url", "--token", "DROVER_URL", "DROVER_TOKEN"]:
        assert o in p.stdout, (o, p.stdout)
    for code in range(8):
        assert re.search(rf"^\s+{code}\s+\S", p.stdout, re.M), (code, p.stdout)


def test_top_level_usage_lists_the_new_commands():
    p = drover(None, "--help")
    assert p.returncode == OK
    for cmd in ("watch", "retry", "worker"):
        assert re.search(rf"^\s+{cmd}\s", p.stdout, re.M), (cmd, p.stdout)


@pytest.mark.parametrize("args, needle", [
    (["watch"], "missing ID"),
    (["watch", "a", "b"], "unexpected argument"),
    (["watch", UNKNOWN_ID, "--interval"], "needs a value"),
    (["watch", UNKNOWN_ID, "--interval", "0"], "--interval"),
    (["watch", UNKNOWN_ID, "--interval", "0.01"], "--interval"),
    (["watch", UNKNOWN_ID, "--interval", "soon"], "--interval"),
    (["watch", UNKNOWN_ID, "--interval", "nan"], "--interval"),
    (["watch", UNKNOWN_ID, "--interval", "1e9"], "--interval"),
    (["retry"], "missing ID"),
    (["retry", UNKNOWN_ID, "--force=1"], "takes no value"),
])
def test_usage_errors_exit_2(args, needle):
    p = drover(None, *args)
    assert p.returncode == USAGE, (p.returncode, p.stderr)
    assert p.stdout == ""
    assert needle in p.stderr, p.stderr
