#!/usr/bin/env python3
"""A stand-in for the GitHub Actions workflow, to try the provisioning loop on
one machine. Python 3 standard library only.

It listens for drover's dispatches (POST /dispatch, the body that
policy-local.json renders), checks their Standard Webhooks signature with the
queue's callback_secret, answers 202 at once and then "provisions" in a
background thread, reporting every step back to drover with `drover callback`
-- the same commands github/.github/workflows/provision.yml runs:

    step vm_created --data '{"vm_id": ...}'
    step ansible_started
    heartbeat --every 1s -- <fake ansible-playbook>
    step ansible_complete --data ...
    succeeded --result ...

A payload with "fail_at": "<step>" makes the run report
`failed --step <step> --run-id local-<n>` at that step instead.

Environment:
  FAKE_RUNNER_SECRET  the queue's callback_secret (whsec_...), to verify
                      dispatches; unset = no verification (a warning is logged)
  DROVER_BIN          the drover binary (default: `drover` on PATH)

Options: --listen HOST:PORT (default 127.0.0.1:9090), --ansible-seconds N
(how long the fake playbook runs, default 3; a payload's "ansible_seconds"
wins).
"""

import argparse
import base64
import hashlib
import hmac
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STEPS = ("vm_created", "ansible_started", "ansible_complete")
TOLERANCE_S = 300           # Standard Webhooks: timestamps at most 5 min off
TOKEN_VAR = "DROVER_CALLBACK_TOKEN"  # env var the per-attempt token is handed in

_print_lock = threading.Lock()
_run_numbers = itertools.count(1)
_seen_ids = set()           # webhook-ids already accepted (drover may resend)
_seen_lock = threading.Lock()


def log(msg, run=None):
    stamp = time.strftime("%H:%M:%S")
    with _print_lock:
        print(f"{stamp} fake-runner{' ' + run if run else ''}: {msg}", flush=True)


# --- dispatch signature ------------------------------------------------------

def verify(secret, headers, body):
    """Standard Webhooks: HMAC-SHA256, keyed by the base64-decoded part of
    whsec_..., over "{webhook-id}.{webhook-timestamp}.{body}"; the header
    webhook-signature holds one or more space-separated "v1,<base64>".
    Returns None when the signature is good, else the reason."""
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sigs = headers.get("webhook-signature")
    if not (msg_id and ts and sigs):
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    try:
        age = abs(time.time() - int(ts))
    except ValueError:
        return "webhook-timestamp is not a number"
    if age > TOLERANCE_S:
        return f"webhook-timestamp is {int(age)} s off"
    key = base64.b64decode(secret[len("whsec_"):])
    signed = msg_id.encode() + b"." + ts.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for entry in sigs.split(" "):
        version, _, sig = entry.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return None
    return "no signature matches"


# --- reporting back ------------------------------------------------------------

class Run:
    """One dispatched attempt, reported on with `drover callback`."""

    def __init__(self, job_id, attempt, callback_url, token, payload, checkpoints,
                 drover, ansible_seconds):
        self.job_id = job_id
        self.attempt = attempt
        self.callback_url = callback_url
        self.payload = payload
        self.checkpoints = checkpoints or {}
        self.drover = drover
        self.ansible_seconds = ansible_seconds
        self.run_id = f"local-{next(_run_numbers)}"
        self.tag = f"[{self.run_id} job {job_id} attempt {attempt}]"
        # The token reaches `drover callback` through its environment only:
        # never on a command line, never in a log.
        self.env = dict(os.environ, **{TOKEN_VAR: token})

    def base(self):
        return [self.drover, "callback", "--url", self.callback_url,
                "--secret-env", TOKEN_VAR, "--job", self.job_id,
                "--attempt", str(self.attempt), "--run-id", self.run_id]

    def callback(self, *args):
        """One callback, --strict so an undelivered one is an error here.
        Returns the server's reply (a dict) or raises Stop."""
        shown = " ".join(args)
        cmd = self.base() + ["--strict", "--timeout", "20s", "--json", *args]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        if proc.returncode != 0:
            log(f"callback {shown} -> exit {proc.returncode}: {proc.stderr.strip()}", self.tag)
            raise Stop(f"drover callback exited {proc.returncode}")
        try:
            reply = json.loads(proc.stdout)
        except ValueError:
            reply = {}
        job = reply.get("job") or {}
        if reply.get("applied") is False:
            # A duplicate (a step an earlier attempt reported already, with the
            # same data) is fine; a job that is no longer running is not.
            log(f"callback {shown} -> not applied ({reply.get('reason')})", self.tag)
            if job.get("state") != "running":
                raise Stop(f"job is {job.get('state')}: nothing left to do")
        else:
            log(f"callback {shown} -> job {job.get('state', '?')}, step {job.get('step')}", self.tag)
        if reply.get("cancel_requested"):
            raise Canceled()
        return reply

    def heartbeat_while(self, cmd):
        """Run cmd while `drover callback heartbeat --every 1s` keeps the job's
        heartbeat deadline moving; returns cmd's exit status."""
        full = self.base() + ["heartbeat", "--every", "1s", "--", *cmd]
        log(f"running the playbook under 'drover callback ... heartbeat --every 1s'", self.tag)
        return subprocess.run(full, env=self.env).returncode

    def fail(self, step, message):
        log(f"FAILED at {step}: {message}", self.tag)
        self.callback("failed", "--step", step, "--message", message)

    def provision(self):
        fail_at = self.payload.get("fail_at")
        vm = self.payload.get("vm") or {}
        name = vm.get("name", "vm") if isinstance(vm, dict) else str(vm)
        log(f"provisioning {name!r}" + (f" (will fail at {fail_at})" if fail_at else ""), self.tag)

        # vm_created -- skipped when an earlier attempt already made the VM:
        # drover hands the new attempt the earlier checkpoints.
        done = self.checkpoints.get("vm_created")
        if isinstance(done, dict) and done.get("vm_id"):
            vm_info = done
            log(f"vm_created already done by an earlier attempt: {vm_info['vm_id']}", self.tag)
        else:
            time.sleep(1)                                   # "create the VM"
            if fail_at == "vm_created":
                return self.fail("vm_created", "the cloud API refused: quota exceeded")
            vm_info = {"vm_id": f"vm-{self.job_id[-6:].lower()}",
                       "ip": f"10.0.0.{int(self.job_id[-2:], 36) % 250 + 2}"}
            self.callback("step", "vm_created", "--data", json.dumps(vm_info))

        if fail_at == "ansible_started":
            return self.fail("ansible_started", "ssh: connect to host: connection refused")
        self.callback("step", "ansible_started")

        # "ansible-playbook": a few fake tasks, with heartbeats while it runs.
        tasks = ["Gathering Facts", "apt: base packages", "template: nginx.conf",
                 "service: nginx restarted"]
        pause = max(self.ansible_seconds, 0.4) / len(tasks)
        script = "; ".join(f"echo '    TASK [{t}] ok'; sleep {pause:.2f}" for t in tasks)
        rc = self.heartbeat_while(["sh", "-c", script])
        if rc != 0:
            return self.fail("ansible_complete", f"ansible-playbook exited {rc}")
        if fail_at == "ansible_complete":
            return self.fail("ansible_complete",
                             f"ansible-playbook: 1 task failed on {vm_info['ip']} (nginx did not start)")

        self.callback("step", "ansible_complete", "--data", json.dumps({"changed": len(tasks)}))
        self.callback("succeeded", "--result", json.dumps(dict(vm_info, name=name)))
        log("done", self.tag)

    def __call__(self):
        try:
            self.callback("running")
            self.provision()
        except Canceled:
            log("drover asks to cancel: stopping and reporting it", self.tag)
            try:
                self.callback("failed", "--message", "canceled on request")
            except (Stop, Canceled):
                pass
        except Stop as e:
            log(f"stopped: {e}", self.tag)
        except Exception as e:  # a bug here must not go unreported to drover
            log(f"crashed: {e!r}", self.tag)
            try:
                self.callback("failed", "--message", f"fake runner crashed: {e!r}")
            except Exception:
                pass


class Stop(Exception):
    pass


class Canceled(Exception):
    pass


# --- the HTTP side ---------------------------------------------------------------

def make_handler(secret, drover, ansible_seconds):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, status, obj):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):   # quiet: log() says what matters
            pass

        def do_GET(self):
            if self.path == "/healthz":
                return self.answer(200, {"status": "ok"})
            self.answer(404, {"error": "not_found"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self.path != "/dispatch":
                return self.answer(404, {"error": "not_found"})
            headers = {k.lower(): v for k, v in self.headers.items()}
            if secret:
                why = verify(secret, headers, body)
                if why:
                    log(f"refused a dispatch: bad signature ({why})")
                    return self.answer(401, {"error": "bad_signature", "message": why})
            try:
                d = json.loads(body)
                job_id, attempt = d["job_id"], d["attempt"]
                cb_url, token = d["callback"]["url"], d["callback"]["token"]
                payload = d.get("payload") or {}
                if not (isinstance(job_id, str) and isinstance(attempt, int)
                        and isinstance(payload, dict)):
                    raise TypeError("job_id must be a string, attempt an integer, payload an object")
            except (ValueError, KeyError, TypeError) as e:
                log(f"refused a dispatch: unexpected body ({e!r})")
                return self.answer(400, {"error": "invalid_body", "message": str(e)})

            msg_id = headers.get("webhook-id", f"dispatch_{job_id}_{attempt}")
            with _seen_lock:
                repeat = msg_id in _seen_ids
                _seen_ids.add(msg_id)
            if repeat:     # drover resent it (e.g. our 202 got lost): run it once
                log(f"dispatch {msg_id} again: already running it")
                return self.answer(202, {"accepted": True, "duplicate": True})

            seconds = payload.get("ansible_seconds", ansible_seconds)
            run = Run(job_id, attempt, cb_url, token, payload, d.get("checkpoints"),
                      drover, float(seconds))
            log(f"dispatch {msg_id} accepted{' (signature ok)' if secret else ''}: "
                f"callbacks go to {cb_url}", run.tag)
            self.answer(202, {"accepted": True, "run_id": run.run_id})
            threading.Thread(target=run, name=run.run_id, daemon=True).start()

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:9090", help="HOST:PORT (default 127.0.0.1:9090)")
    ap.add_argument("--ansible-seconds", type=float, default=3.0,
                    help="how long the fake playbook runs (default 3)")
    args = ap.parse_args()

    host, _, port = args.listen.rpartition(":")
    drover = os.environ.get("DROVER_BIN") or "drover"
    if not shutil.which(drover):
        sys.exit(f"fake-runner: cannot run {drover!r}: set DROVER_BIN to the drover binary")
    secret = os.environ.get("FAKE_RUNNER_SECRET")
    if secret:
        try:
            if not secret.startswith("whsec_") or not base64.b64decode(secret[6:], validate=True):
                raise ValueError
        except ValueError:
            sys.exit("fake-runner: FAKE_RUNNER_SECRET is not a whsec_<base64> secret")
    else:
        log("WARNING: FAKE_RUNNER_SECRET is not set: dispatches are NOT verified")

    server = ThreadingHTTPServer((host, int(port)), make_handler(secret, drover, args.ansible_seconds))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log(f"listening on http://{host}:{port}/dispatch, reporting with {drover}")
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
        log("stopped")


if __name__ == "__main__":
    main()
