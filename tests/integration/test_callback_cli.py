"""`drover callback`: signed runner callbacks, against a test receiver.

No drover server: each test starts the shared receiver (webhook_receiver.py:
http.server on 127.0.0.1, port 0, in a thread) that checks the Standard
Webhooks signature on its own with webhook_sig.py (Python's hmac and base64,
never through drover), records every request and answers from a script (503
a few times, 409, 401, ...).
"Unreachable" is a port that was bound and closed again. Every wait has a
deadline, and every run checks that the secret shows up in neither stdout nor
stderr.
"""

import base64
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import DROVER_BIN, closed_port
from webhook_receiver import Receiver
from webhook_sig import sw_verify

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
SECRET_VAR = "RUNNER_CALLBACK_SECRET"
JOB = "01JCALLBACKTESTJOB0000000"
RUN_TIMEOUT_S = 30


# --- the receiver ------------------------------------------------------------

class CallbackReceiver(Receiver):
    """The shared receiver (webhook_receiver.py) as the callback endpoint:
    200 {"ok": true} by default, each record's signature checked against
    SECRET ("valid"), and answers scripted for every path. An int answer
    gets an error body whose message says it was scripted."""

    def __init__(self, secret=SECRET):
        self.secret = secret
        super().__init__(default=(200, {}, b'{"ok":true}'))

    def describe(self, rec):
        h = rec["headers"]
        return {"valid": sw_verify(self.secret, h.get("webhook-id"), h.get("webhook-timestamp"),
                                   rec["body"], h.get("webhook-signature"))}

    def answer(self, *answers):
        for a in answers:
            if isinstance(a, int):
                body = json.dumps({"error": "scripted", "message": f"scripted {a}"}).encode()
                a = (a, {}, body)
            super().answer(None, a)

    def wait_requests(self, n, timeout=10):
        return self.wait_for(lambda got: len(got) >= n, timeout, f"{n} requests")


@pytest.fixture
def receiver():
    r = CallbackReceiver()
    yield r
    r.stop()


# --- running drover callback -------------------------------------------------

def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DROVER_") and k.lower() not in ("http_proxy", "https_proxy",
                                                                 "all_proxy", "no_proxy")}
    env[SECRET_VAR] = SECRET
    env.update(extra)
    return env


def assert_no_secret(text):
    assert SECRET not in text
    assert SECRET[len("whsec_"):] not in text


def callback(url, *args, common=True, env=None, timeout=RUN_TIMEOUT_S):
    """Run `drover callback [--url URL --secret-env VAR --job JOB --attempt 2] ARGS`."""
    argv = [DROVER_BIN, "callback"]
    if common:
        argv += ["--url", url, "--secret-env", SECRET_VAR, "--job", JOB, "--attempt", "2"]
    argv += list(args)
    p = subprocess.run(argv, capture_output=True, text=True, env=env or clean_env(),
                       timeout=timeout)
    assert_no_secret(p.stdout)
    assert_no_secret(p.stderr)
    return p


def body_of(req):
    return json.loads(req["body"])


# --- bodies, headers, signature ----------------------------------------------

@pytest.mark.parametrize("args, want", [
    (["step", "vm_created", "--data", '{"ip": "10.0.0.7", "n": [1, 2]}'],
     {"attempt": 2, "status": "running", "step": "vm_created",
      "data": {"ip": "10.0.0.7", "n": [1, 2]}}),
    (["step", "booted"], {"attempt": 2, "status": "running", "step": "booted"}),
    (["step", "scalar", "--data", "42"],
     {"attempt": 2, "status": "running", "step": "scalar", "data": 42}),
    (["heartbeat"], {"attempt": 2, "status": "heartbeat"}),
    (["running", "--run-id", "gh-run-991"],
     {"attempt": 2, "status": "running", "run_id": "gh-run-991"}),
    (["succeeded", "--result", '{"vm": "vm-12"}'],
     {"attempt": 2, "status": "succeeded", "result": {"vm": "vm-12"}}),
    (["succeeded"], {"attempt": 2, "status": "succeeded"}),
    (["failed", "--message", "terraform apply failed: quota", "--step", "apply",
      "--run-id", "r-7"],
     {"attempt": 2, "status": "failed", "run_id": "r-7",
      "error": {"message": "terraform apply failed: quota", "step": "apply"}}),
    (["failed", "--message", "no step"],
     {"attempt": 2, "status": "failed", "error": {"message": "no step"}}),
])
def test_each_status_body(receiver, args, want):
    before = int(time.time())
    p = callback(receiver.url, *args)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "" and p.stderr == ""
    (req,) = receiver.wait_requests(1)
    assert req["path"] == f"/v1/callbacks/{JOB}"
    assert body_of(req) == want
    assert req["valid"], req["headers"]
    h = req["headers"]
    assert h["content-type"] == "application/json"
    assert re.fullmatch(r"cb_[0-9a-f]{32}", h["webhook-id"])
    assert before - 1 <= int(h["webhook-timestamp"]) <= int(time.time()) + 1
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", h["webhook-signature"])
    assert "authorization" not in h


def test_signature_fails_with_another_secret(receiver):
    """The receiver's check can fail: a different secret gives an invalid signature."""
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    p = callback(receiver.url, "heartbeat", env=clean_env(**{SECRET_VAR: other}))
    assert p.returncode == 0, p.stderr
    (req,) = receiver.wait_requests(1)
    assert not req["valid"]


def test_long_message_is_cut_on_a_character(receiver):
    message = "é" * 3000  # 6000 bytes
    p = callback(receiver.url, "failed", "--message", message)
    assert p.returncode == 0, p.stderr
    (req,) = receiver.wait_requests(1)
    got = body_of(req)["error"]["message"]
    assert got == "é" * 2048 and len(got.encode()) == 4096


def test_json_prints_the_reply(receiver):
    receiver.answer((200, {}, b'{"ok":true,"ignored":false}'))
    p = callback(receiver.url, "heartbeat", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"ok": True, "ignored": False}


# --- url ---------------------------------------------------------------------

def test_url_from_environment_with_prefix(receiver):
    env = clean_env(DROVER_URL=receiver.url + "/drover/")
    p = subprocess.run([DROVER_BIN, "callback", "--secret-env", SECRET_VAR, "--job", "a b/c",
                        "--attempt", "1", "heartbeat"],
                       capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT_S)
    assert p.returncode == 0, p.stderr
    (req,) = receiver.wait_requests(1)
    assert req["path"] == "/drover/v1/callbacks/a%20b%2Fc"
    assert req["valid"]


def test_full_callback_url_used_as_is(receiver):
    url = receiver.url + "/v1/callbacks/OTHERID?token=t1"
    p = callback(url, "heartbeat")
    assert p.returncode == 0, p.stderr
    (req,) = receiver.wait_requests(1)
    assert req["target"] == "/v1/callbacks/OTHERID?token=t1"


def test_query_kept_after_the_appended_path(receiver):
    p = callback(receiver.url + "/base?x=1", "heartbeat")
    assert p.returncode == 0, p.stderr
    (req,) = receiver.wait_requests(1)
    assert req["target"] == f"/base/v1/callbacks/{JOB}?x=1"


# --- retries -----------------------------------------------------------------

def test_retry_then_success_keeps_the_webhook_id(receiver):
    receiver.answer(503, 500, 429)
    p = callback(receiver.url, "succeeded", "--result", "[1]")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    reqs = receiver.wait_requests(4)
    assert len(receiver.requests) == 4  # drover has exited: nothing more can come
    assert len({r["headers"]["webhook-id"] for r in reqs}) == 1
    assert all(r["valid"] for r in reqs)
    assert all(r["body"] == reqs[0]["body"] for r in reqs)
    # Backoff: the tries are spread out, each gap at least the shortest wait.
    gaps = [b["at"] - a["at"] for a, b in zip(reqs, reqs[1:])]
    assert all(g >= 0.1 for g in gaps), gaps


def test_retry_after_is_honoured(receiver):
    receiver.answer((503, {"Retry-After": "2"}, b'{"error":"unavailable"}'))
    p = callback(receiver.url, "heartbeat", "--timeout", "20s")
    assert p.returncode == 0, p.stderr
    first, second = receiver.wait_requests(2)
    assert second["at"] - first["at"] >= 1.9
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]


def test_retry_after_past_the_timeout_ends_the_tries(receiver):
    receiver.answer((503, {"Retry-After": "30"}, b'{"error":"unavailable"}'))
    started = time.monotonic()
    p = callback(receiver.url, "heartbeat", "--timeout", "5s")
    assert time.monotonic() - started < 4
    assert p.returncode == 0
    assert p.stderr.startswith("drover: warning: ")
    assert len(receiver.requests) == 1


def test_unreachable_warns_and_exits_0():
    url = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    p = callback(url, "step", "s1", "--timeout", "2s")
    elapsed = time.monotonic() - started
    assert p.returncode == 0
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("drover: warning: step callback not delivered after ")
    assert "tries" in lines[0]
    assert elapsed < 10


def test_unreachable_with_strict_exits_7():
    url = f"http://127.0.0.1:{closed_port()}"
    p = callback(url, "heartbeat", "--timeout", "1s", "--strict")
    assert p.returncode == 7
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("drover: heartbeat callback not delivered")


def test_5xx_until_the_timeout(receiver):
    receiver.answer(*([503] * 100))
    p = callback(receiver.url, "heartbeat", "--timeout", "2s")
    assert p.returncode == 0
    assert "scripted 503" in p.stderr and p.stderr.startswith("drover: warning: ")
    assert len(receiver.requests) >= 3
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1

    receiver.requests.clear()
    p = callback(receiver.url, "heartbeat", "--timeout", "1s", "--strict")
    assert p.returncode == 7
    ids = {r["headers"]["webhook-id"] for r in receiver.requests}
    assert len(ids) == 1  # a new invocation, a new id, kept across its own retries


# --- definite refusals -------------------------------------------------------

@pytest.mark.parametrize("status, code", [(409, 4), (401, 5), (403, 5), (404, 3), (400, 6),
                                          (422, 6)])
@pytest.mark.parametrize("strict", [False, True])
def test_4xx_is_not_retried(receiver, status, code, strict):
    receiver.answer(status, 200)
    args = ["heartbeat"] + (["--strict"] if strict else [])
    p = callback(receiver.url, *args)
    assert p.returncode == code, p.stderr
    assert f"scripted {status}" in p.stderr
    assert len(p.stderr.splitlines()) == 1
    assert len(receiver.requests) == 1  # drover has exited: a retry would be here


# --- usage errors ------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["--url", "U", "--job", JOB, "--attempt", "1", "heartbeat"],                 # no --secret-env
    ["--url", "U", "--secret-env", "NO_SUCH_VAR_X", "--job", JOB, "--attempt", "1", "heartbeat"],
    ["--url", "U", "--secret-env", "EMPTY_SECRET", "--job", JOB, "--attempt", "1", "heartbeat"],
    ["--url", "U", "--secret-env", "BAD_SECRET", "--job", JOB, "--attempt", "1", "heartbeat"],
    ["--url", "U", "--secret-env", SECRET_VAR, "--attempt", "1", "heartbeat"],   # no --job
    ["--url", "U", "--secret-env", SECRET_VAR, "--job", JOB, "heartbeat"],       # no --attempt
    ["--url", "U", "--secret-env", SECRET_VAR, "--job", JOB, "--attempt", "0", "heartbeat"],
    ["--url", "U", "--secret-env", SECRET_VAR, "--job", JOB, "--attempt", "1", "paused"],
    ["--url", "U", "--secret-env", SECRET_VAR, "--job", JOB, "--attempt", "1", "step"],
    ["--url", "U", "--secret-env", SECRET_VAR, "--job", JOB, "--attempt", "1", "heartbeat", "x"],
    ["--url", "U", "--secret-env", SECRET_VAR, "--job", JOB, "--attempt", "1", "failed"],
    ["--url", "U", "--secret-env", SECRET_VAR, "--job", JOB, "--attempt", "1", "heartbeat",
     "--data", "{}"],
    ["--url", "U", "--secret-env", SECRET_VAR, "--job", JOB, "--attempt", "1", "step", "s",
     "--data", "{bad"],
    ["--url", "U", "--secret-env", SECRET_VAR, "--job", JOB, "--attempt", "1", "running",
     "--result", "1"],
    ["--url", "U", "--secret-env", SECRET_VAR, "--job", JOB, "--attempt", "1", "heartbeat",
     "--timeout", "5x"],
    ["--url", "U", "--secret-env", SECRET_VAR, "--job", JOB, "--attempt", "1", "heartbeat",
     "--timeout", "0s"],
    ["--url", "U", "--secret-env", SECRET_VAR, "--job", JOB, "--attempt", "1", "heartbeat",
     "--every", "1s"],                                                           # no -- CMD
    ["--url", "U", "--secret-env", SECRET_VAR, "--job", JOB, "--attempt", "1", "step", "s",
     "--every", "1s", "--", "true"],
    ["--url", "U", "--secret-env", SECRET_VAR, "--job", JOB, "--attempt", "1", "heartbeat",
     "--", "true"],                                                              # no --every
    ["--url", "U", "--secret-env", SECRET_VAR, "--job", JOB, "--attempt", "1", "heartbeat",
     "--every", "10ms", "--", "true"],
    ["--secret-env", SECRET_VAR, "--job", JOB, "--attempt", "1", "heartbeat"],   # no url at all
    ["--url", "ftp://x", "--secret-env", SECRET_VAR, "--job", JOB, "--attempt", "1", "heartbeat"],
])
def test_usage_errors_exit_2(receiver, args):
    args = [receiver.url if a == "U" else a for a in args]
    env = clean_env(EMPTY_SECRET="", BAD_SECRET="whsec_not*base64!!")
    p = callback(None, *args, common=False, env=env)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert p.stderr.startswith("drover")
    assert p.stdout == ""
    assert receiver.requests == []


def test_malformed_secret_is_not_printed(receiver):
    bad = "whsec_c2VjcmV0LXZhbHVlLXRoYXQtaXMtbm90LXBhZGRlZA"  # no padding
    env = clean_env(**{SECRET_VAR: bad})
    p = callback(receiver.url, "heartbeat", env=env)
    assert p.returncode == 2
    assert SECRET_VAR in p.stderr
    assert bad[6:] not in p.stderr and bad[6:] not in p.stdout


def test_help_documents_the_exit_codes():
    p = subprocess.run([DROVER_BIN, "callback", "--help"], capture_output=True, text=True,
                       env=clean_env(), timeout=RUN_TIMEOUT_S)
    assert p.returncode == 0
    assert "--strict" in p.stdout and "4xx" in p.stdout and "--every" in p.stdout
    usage = subprocess.run([DROVER_BIN, "--help"], capture_output=True, text=True,
                           env=clean_env(), timeout=RUN_TIMEOUT_S)
    assert "callback" in usage.stdout


# --- heartbeat --every -- CMD ------------------------------------------------

@pytest.mark.parametrize("every", ["200ms", "0.2s"])
def test_heartbeats_while_the_command_runs(receiver, every):
    started = time.monotonic()
    p = callback(receiver.url, "heartbeat", "--every", every, "--",
                 "sh", "-c", "sleep 1; echo out; echo err >&2; exit 3")
    elapsed = time.monotonic() - started
    assert p.returncode == 3, p.stderr
    assert p.stdout == "out\n"           # CMD's stdio is shared
    assert p.stderr == "err\n"
    reqs = list(receiver.requests)
    assert 3 <= len(reqs) <= 8, len(reqs)
    assert all(body_of(r) == {"attempt": 2, "status": "heartbeat"} for r in reqs)
    assert all(r["valid"] for r in reqs)
    # Each heartbeat is its own message.
    assert len({r["headers"]["webhook-id"] for r in reqs}) == len(reqs)
    # The first one right away, the rest spaced by the interval.
    assert reqs[0]["at"] - started < 0.9
    gaps = [b["at"] - a["at"] for a, b in zip(reqs, reqs[1:])]
    assert all(g >= 0.15 for g in gaps), gaps
    assert elapsed < 10


def test_heartbeat_failures_only_warn():
    url = f"http://127.0.0.1:{closed_port()}"
    p = callback(url, "heartbeat", "--every", "200ms", "--strict", "--",
                 "sh", "-c", "sleep 0.5; exit 0")
    assert p.returncode == 0
    assert "drover: warning: heartbeat not delivered" in p.stderr


def test_heartbeat_refused_only_warns(receiver):
    receiver.answer(*([409] * 50))
    p = callback(receiver.url, "heartbeat", "--every", "200ms", "--",
                 "sh", "-c", "sleep 0.5; exit 5")
    assert p.returncode == 5
    assert "drover: warning: heartbeat refused" in p.stderr


def test_command_killed_by_a_signal(receiver):
    p = callback(receiver.url, "heartbeat", "--every", "1s", "--", "sh", "-c", "kill -9 $$")
    assert p.returncode == 128 + 9


def test_command_not_found(receiver):
    p = callback(receiver.url, "heartbeat", "--every", "1s", "--", "/no/such/command")
    assert p.returncode == 127
    assert "/no/such/command" in p.stderr


def test_sigterm_is_passed_on_to_the_command(receiver, tmp_path):
    marker = tmp_path / "got-term"
    script = tmp_path / "child.sh"
    script.write_text(f"trap 'echo term > {marker}; exit 42' TERM\n"
                      "while :; do sleep 0.05; done\n")
    argv = [DROVER_BIN, "callback", "--url", receiver.url, "--secret-env", SECRET_VAR,
            "--job", JOB, "--attempt", "2", "heartbeat", "--every", "200ms", "--",
            "sh", str(script)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env())
    try:
        receiver.wait_requests(2)  # running, and heartbeating
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 42, err
    assert marker.read_text() == "term\n"
    assert_no_secret(out + err)
