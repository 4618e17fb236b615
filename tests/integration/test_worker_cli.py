"""`drover worker QUEUE -- CMD`: the pull worker against the real server.

Each test starts the server fixture, runs `drover worker` as a subprocess
(DROVER_URL/DROVER_TOKEN with the worker role) and a real shell script written
to tmp_path as CMD, and follows the job through GET /v1/jobs/ID. Every wait
has a deadline; scripts that could outlive a failed test write their pid to a
*.pid file, and the teardown kills those process groups.
"""

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import DROVER_BIN, TOKENS

TERMINAL = ("succeeded", "failed", "canceled")


# --- helpers -----------------------------------------------------------------

def clean_env():
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("DROVER_") or k.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            del env[k]
    return env


def put_queue(server, name, **policy):
    r = server.request("PUT", f"/v1/queues/{name}", policy, token="admin")
    assert r.status == 200, r
    return r.json


def wait_for(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached in {timeout}s")
        time.sleep(interval)


def wait_job(server, job_id, states=TERMINAL, timeout=20):
    """GET the job until its state is one of states; return it."""
    last = {}

    def done():
        last["job"] = server.get_job(job_id, token="admin")
        return last["job"]["state"] in states

    try:
        wait_for(done, timeout, f"job {job_id} in {states}")
    except AssertionError as e:
        raise AssertionError(f"{e}; last seen: {last.get('job')}") from None
    return last["job"]


def pid_alive(pid):
    """True while pid names a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def read_pid(path, timeout=15):
    wait_for(lambda: path.exists() and path.read_text().strip(), timeout, f"{path.name} written")
    return int(path.read_text().strip())


def script(tmp_path, name, body):
    """Write an executable /bin/sh script; return its path as a string."""
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return str(p)


class Worker:
    """One `drover worker` process with its stdout and stderr in files."""

    def __init__(self, server, tmp_path, queue, cmd, *opts, token="worker", name="w"):
        self.out_path = tmp_path / f"worker-{name}.out"
        self.err_path = tmp_path / f"worker-{name}.err"
        env = clean_env()
        env["DROVER_URL"] = server.url
        env["DROVER_TOKEN"] = TOKENS.get(token, token)
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([DROVER_BIN, "worker", queue, *opts, "--", *cmd],
                                         stdout=out, stderr=err, env=env, cwd=tmp_path)

    def out(self):
        return self.out_path.read_text(errors="replace")

    def err(self):
        return self.err_path.read_text(errors="replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=20):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker did not exit in {timeout}s:\n{self.err()}") from None

    def stop(self, timeout=20):
        """SIGTERM, then expect the documented exit 0."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        rc = self.wait(timeout)
        assert rc == 0, f"worker exited {rc}:\n{self.err()}"


@pytest.fixture
def workers(tmp_path):
    """Factory: workers(server, queue, cmd, *opts). Teardown kills what is left."""
    made = []

    def make(server, queue, cmd, *opts, **kw):
        w = Worker(server, tmp_path, queue, cmd, *opts, name=str(len(made)), **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(timeout=10)
    for pidfile in tmp_path.glob("*.pid"):
        try:
            pid = int(pidfile.read_text().strip())
            os.killpg(pid, signal.SIGKILL)
        except (ValueError, ProcessLookupError, PermissionError):
            pass


# --- help and usage ----------------------------------------------------------

def test_help_documents_options_env_protocol_signals_and_exit_codes():
    p = subprocess.run([DROVER_BIN, "worker", "--help"], capture_output=True, text=True,
                       env=clean_env(), timeout=10)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith("usage: drover worker QUEUE")
    for word in ("--concurrency", "--wait", "--worker", "--url", "--token", "--json",
                 "DROVER_JOB_ID", "DROVER_ATTEMPT", "DROVER_CHECKPOINTS", "DROVER_URL",
                 "DROVER_QUEUE", "::step", "::result", "SIGTERM", "lease_lost",
                 "exit status", "worker stopped"):
        assert word in out, word


@pytest.mark.parametrize("args, needle", [
    (["worker", "q"], "missing '-- CMD'"),
    (["worker", "q", "--"], "missing CMD"),
    (["worker", "--", "true"], "missing QUEUE"),
    (["worker", "q", "--concurrency", "0", "--", "true"], "--concurrency"),
    (["worker", "q", "--concurrency", "x", "--", "true"], "--concurrency"),
    (["worker", "q", "--wait", "61", "--", "true"], "--wait"),
    (["worker", "q", "--worker", "", "--", "true"], "--worker"),
    (["worker", "q", "--", "/nonexistent/cmd"], "cannot run"),
    (["worker", "q", "--", "no-such-command-drover-test"], "cannot run"),
])
def test_usage_errors_exit_2(args, needle):
    p = subprocess.run([DROVER_BIN, *args], capture_output=True, text=True, env=clean_env(),
                       timeout=10)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert needle in p.stderr, p.stderr


def test_refused_claim_exits_with_its_code(server, tmp_path, workers):
    """A token the server refuses: no point retrying, exit 5 at once."""
    w = workers(server, "q", ["true"], "--wait", "1", token="read")
    assert w.wait(15) == 5, w.err()
    assert "forbidden" in w.err()


# --- running jobs ------------------------------------------------------------

def test_job_end_to_end_steps_result_payload_env(server, tmp_path, workers):
    put_queue(server, "e2e", steps=["fetch", "build"])
    cmd = script(tmp_path, "job.sh", """
cat > "$0.stdin"
env | grep '^DROVER_' | sort > "$0.env"
echo "hello from the job"
echo '::step fetch {"n": 1, "src": "s3://b/k"}'
echo '::step build'
echo "warning: something" >&2
echo '::result {"ok": true, "artifacts": [1, 2]}'
""")
    job = server.submit("e2e", payload={"customer": 42})
    w = workers(server, "e2e", [cmd], "--wait", "1")
    done = wait_job(server, job["id"])
    assert done["state"] == "succeeded", done
    assert done["attempt"] == 1
    assert done["checkpoints"] == {"fetch": {"n": 1, "src": "s3://b/k"}, "build": None}
    assert done["step"] == "build"
    assert done["result"] == {"ok": True, "artifacts": [1, 2]}
    assert done["error"] is None

    # The payload on stdin (then end of file), the environment.
    assert json.loads((tmp_path / "job.sh.stdin").read_text()) == {"customer": 42}
    env = dict(line.split("=", 1) for line in
               (tmp_path / "job.sh.env").read_text().splitlines())
    assert env["DROVER_JOB_ID"] == job["id"]
    assert env["DROVER_ATTEMPT"] == "1"
    assert env["DROVER_QUEUE"] == "e2e"
    assert env["DROVER_URL"] == server.url
    assert json.loads(env["DROVER_CHECKPOINTS"]) == {}
    w.stop()
    # Other lines are passed through with the job id; protocol lines are not.
    assert f"{job['id']}: hello from the job\n" in w.out()
    assert "::step" not in w.out() and "::result" not in w.out()
    assert "warning: something" not in w.out()


def test_failing_command_reports_exit_status_stderr_tail_and_step(server, tmp_path, workers):
    put_queue(server, "fails", max_attempts=1)
    cmd = script(tmp_path, "fail.sh", """
echo '::step provision {"vm": "vm-1"}'
echo "starting" >&2
echo "disk full on /dev/sda1" >&2
exit 3
""")
    job = server.submit("fails")
    w = workers(server, "fails", [cmd], "--wait", "1")
    done = wait_job(server, job["id"])
    assert done["state"] == "failed", done
    err = done["error"]
    assert err["message"].startswith("exit status 3: "), err
    assert "disk full on /dev/sda1" in err["message"], err
    assert err["step"] == "provision", err
    assert done["checkpoints"] == {"provision": {"vm": "vm-1"}}
    w.stop()


def test_killed_command_and_bounded_output(server, tmp_path, workers):
    """A line over 64 KiB is cut, stderr keeps only its tail, a signal death
    is named, and the message stays within the server's 4096 bytes."""
    put_queue(server, "big", max_attempts=1)
    cmd = script(tmp_path, "big.sh", """
head -c 200000 /dev/zero | tr '\\0' 'x'; echo
i=0; while [ $i -lt 500 ]; do echo "noise line $i" >&2; i=$((i+1)); done
echo "the last words" >&2
kill -KILL $$
""")
    job = server.submit("big")
    w = workers(server, "big", [cmd], "--wait", "1")
    done = wait_job(server, job["id"])
    assert done["state"] == "failed", done
    msg = done["error"]["message"]
    assert msg.startswith("killed by signal 9 (KILL): "), msg[:100]
    assert msg.endswith("the last words"), msg[-100:]
    assert "noise line 0\n" not in msg and len(msg.encode()) <= 4096
    w.stop()
    line = next(l for l in w.out().splitlines() if l.startswith(job["id"]))
    assert len(line) < 64 * 1024 + 100 and "[line cut]" in line


def test_retry_gets_earlier_checkpoints(server, tmp_path, workers):
    put_queue(server, "retry", max_attempts=2,
              backoff={"initial_s": 0, "factor": 1, "max_s": 0, "jitter": 0})
    cmd = script(tmp_path, "retry.sh", """
echo "$DROVER_CHECKPOINTS" > "$0.attempt$DROVER_ATTEMPT"
if [ "$DROVER_ATTEMPT" = 1 ]; then
    echo '::step vm_created {"vm_id": 42}'
    echo "network flake" >&2
    exit 1
fi
echo '::step configured'
echo '::result {"attempt": 2}'
""")
    job = server.submit("retry")
    w = workers(server, "retry", [cmd], "--wait", "1")
    done = wait_job(server, job["id"])
    assert done["state"] == "succeeded", done
    assert done["attempt"] == 2
    assert json.loads((tmp_path / "retry.sh.attempt1").read_text()) == {}
    assert json.loads((tmp_path / "retry.sh.attempt2").read_text()) == \
        {"vm_created": {"vm_id": 42}}
    assert done["checkpoints"] == {"vm_created": {"vm_id": 42}, "configured": None}
    assert done["result"] == {"attempt": 2}
    w.stop()


def test_cancel_kills_the_process_group(server, tmp_path, workers):
    # A 3 s lease: heartbeats every second, so the cancel is seen quickly.
    put_queue(server, "cancel", heartbeat_timeout_s=3)
    cmd = script(tmp_path, "cancel.sh", """
sleep 60 &
echo $! > "$0.child"
echo $$ > "$0.pid"
echo '::step waiting'
wait
""")
    job = server.submit("cancel")
    w = workers(server, "cancel", [cmd], "--wait", "1")
    pid = read_pid(tmp_path / "cancel.sh.pid")
    child = read_pid(tmp_path / "cancel.sh.child")
    assert pid_alive(pid) and pid_alive(child)
    wait_job(server, job["id"], states=("running",))

    r = server.request("POST", f"/v1/jobs/{job['id']}/cancel", {}, token="submit")
    assert r.status == 200, r
    done = wait_job(server, job["id"], timeout=15)
    assert done["state"] == "canceled", done
    wait_for(lambda: not pid_alive(pid) and not pid_alive(child), 10,
             "the script and its child killed")
    assert "cancel requested" in w.err()
    w.stop()


def test_lease_lost_on_timeout_kills_command_and_reports_nothing(server, tmp_path, workers):
    """timeout_s ends the attempt under the worker: its next heartbeat gets
    409 lease_lost, and the command is stopped without a report."""
    put_queue(server, "lost", timeout_s=2, heartbeat_timeout_s=3, max_attempts=1)
    cmd = script(tmp_path, "lost.sh", """
echo $$ > "$0.pid"
exec sleep 60
""")
    job = server.submit("lost")
    w = workers(server, "lost", [cmd], "--wait", "1")
    pid = read_pid(tmp_path / "lost.sh.pid")
    done = wait_job(server, job["id"], timeout=15)
    assert done["state"] == "failed" and done["error"]["kind"] == "timeout", done
    wait_for(lambda: not pid_alive(pid), 10, "the command killed after the lease was lost")
    wait_for(lambda: "lease lost" in w.err(), 5, "lease lost logged")
    # Nothing was reported over the server's own verdict.
    assert server.get_job(job["id"])["error"]["kind"] == "timeout"
    w.stop()


def test_sigterm_lets_the_running_job_finish(server, tmp_path, workers):
    cmd = script(tmp_path, "slow.sh", """
echo $$ > "$0.pid"
sleep 2
echo '::result {"finished": true}'
""")
    job = server.submit("slow")
    w = workers(server, "slow", [cmd], "--wait", "1")
    read_pid(tmp_path / "slow.sh.pid")
    w.signal(signal.SIGTERM)
    later = server.submit("slow")  # must not be claimed any more
    assert w.wait(20) == 0, w.err()
    done = server.get_job(job["id"])
    assert done["state"] == "succeeded", done
    assert done["result"] == {"finished": True}
    assert server.get_job(later["id"])["state"] == "queued"


def test_second_sigterm_kills_and_reports_worker_stopped(server, tmp_path, workers):
    put_queue(server, "stop2", max_attempts=1)
    cmd = script(tmp_path, "stuck.sh", """
echo $$ > "$0.pid"
echo '::step stuck'
sleep 60
""")
    job = server.submit("stop2")
    w = workers(server, "stop2", [cmd], "--wait", "1")
    pid = read_pid(tmp_path / "stuck.sh.pid")
    wait_job(server, job["id"], states=("running",))
    w.signal(signal.SIGTERM)
    time.sleep(0.3)
    assert pid_alive(pid)  # the first signal only stops claiming
    w.signal(signal.SIGTERM)
    assert w.wait(20) == 0, w.err()
    assert not pid_alive(pid)
    done = server.get_job(job["id"])
    assert done["state"] == "failed", done
    assert done["error"]["message"] == "worker stopped", done
    assert done["error"]["step"] == "stuck"


def test_concurrency_two_runs_two_jobs_at_once(server, tmp_path, workers):
    """Each job waits until the other has started: only two at once can pass."""
    marks = tmp_path / "marks"
    marks.mkdir()
    cmd = script(tmp_path, "pair.sh", f"""
touch "{marks}/$DROVER_JOB_ID"
i=0
while [ "$(ls "{marks}" | wc -l)" -lt 2 ]; do
    i=$((i+1)); [ $i -gt 100 ] && {{ echo "alone" >&2; exit 9; }}
    sleep 0.1
done
echo '::result "together"'
""")
    jobs = [server.submit("pair") for _ in range(2)]
    w = workers(server, "pair", [cmd], "--concurrency", "2", "--wait", "1")
    for j in jobs:
        done = wait_job(server, j["id"], timeout=20)
        assert done["state"] == "succeeded", done
        assert done["result"] == "together"
    w.stop()


def test_concurrency_one_runs_jobs_one_after_another(server, tmp_path, workers):
    """With the default concurrency a job never sees another one running."""
    put_queue(server, "single", max_attempts=1)
    marks = tmp_path / "marks"
    marks.mkdir()
    cmd = script(tmp_path, "alone.sh", f"""
touch "{marks}/$DROVER_JOB_ID"
sleep 0.5
[ "$(ls "{marks}" | wc -l)" -lt 2 ] || exit 9
rm "{marks}/$DROVER_JOB_ID"
""")
    jobs = [server.submit("single") for _ in range(2)]
    w = workers(server, "single", [cmd], "--wait", "1")
    for j in jobs:
        assert wait_job(server, j["id"])["state"] == "succeeded"
    w.stop()


def test_worker_survives_a_server_restart(server, tmp_path, workers):
    """The server goes away while the command runs: the step and the result
    are delivered once it is back, retried with backoff in between."""
    put_queue(server, "restart", heartbeat_timeout_s=30)
    go = tmp_path / "go"
    cmd = script(tmp_path, "restart.sh", f"""
echo $$ > "$0.pid"
i=0; while [ ! -e "{go}" ]; do i=$((i+1)); [ $i -gt 300 ] && exit 9; sleep 0.1; done
echo '::step after_restart {{"n": 1}}'
echo '::result "made it"'
""")
    job = server.submit("restart")
    w = workers(server, "restart", [cmd], "--wait", "1")
    read_pid(tmp_path / "restart.sh.pid")
    wait_job(server, job["id"], states=("running",))
    server.stop()
    go.touch()  # the command finishes while nobody answers
    wait_for(lambda: "retrying in" in w.err(), 10, "the worker retrying")
    server.start(listen=f"127.0.0.1:{server.port}")
    done = wait_job(server, job["id"], timeout=20)
    assert done["state"] == "succeeded", (done, w.err())
    assert done["checkpoints"] == {"after_restart": {"n": 1}}
    assert done["result"] == "made it"
    w.stop()


def test_json_output(server, tmp_path, workers):
    cmd = script(tmp_path, "say.sh", "echo 'plain output'\n")
    job = server.submit("jsonq")
    w = workers(server, "jsonq", [cmd], "--wait", "1", "--json")
    assert wait_job(server, job["id"])["state"] == "succeeded"
    w.stop()
    lines = [json.loads(l) for l in w.out().splitlines()]
    assert {"job": job["id"], "line": "plain output", "truncated": False} in lines
    logs = [json.loads(l) for l in w.err().splitlines()]
    assert any(r.get("job") == job["id"] and "at" in r and "msg" in r for r in logs), logs


def test_output_held_open_by_a_leftover_process_does_not_hang_the_job(server, tmp_path, workers):
    """CMD exits 0 but leaves a background process holding its stdout: the
    job is still reported, after a short drain."""
    cmd = script(tmp_path, "bg.sh", """
sleep 30 &
echo $! > "$0.pid"
echo '::result "left one behind"'
""")
    job = server.submit("bg")
    w = workers(server, "bg", [cmd], "--wait", "1")
    done = wait_job(server, job["id"], timeout=10)
    assert done["state"] == "succeeded", done
    assert done["result"] == "left one behind"
    w.stop()


def test_unreachable_server_is_retried_and_sigterm_still_stops(tmp_path, workers):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()

    class Dead:
        url = f"http://127.0.0.1:{port}"

    w = workers(Dead, "q", ["true"], "--wait", "1")
    wait_for(lambda: w.err().count("retrying in") >= 2, 10, "retries logged")
    assert w.proc.poll() is None  # not given up
    t0 = time.monotonic()
    w.stop(timeout=10)
    assert time.monotonic() - t0 < 5
