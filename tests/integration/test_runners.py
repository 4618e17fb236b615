"""Contract tests for external runners (docs/api.md, "External runners:
dispatch and callbacks (http mode)", "Dispatch templates", the error table;
DESIGN.md §1 "External runner" and "Callbacks").

An in-test runner (the shared loopback receiver of webhook_receiver.py)
receives drover's dispatches, records each one (headers and raw body) and
checks its Standard Webhooks signature on its own with webhook_sig.py; it
answers from a script (202, 503, 302, or holds requests open until the test
releases them). The test then plays the runner's side: it signs callbacks
itself (Standard Webhooks or X-Drover, with the queue's callback_secret or the
attempt's callback.token from the dispatch body) and sends them with
http.client. The signing helpers are first checked against the published
vectors in tests/testdata/signature-vectors.json.

Covered: the full path queued -> running (waiting_for dispatch) -> dispatched
-> steps -> succeeded; a failure at a step with the run id; out-of-order and
duplicate callbacks; callbacks for an old attempt, after a heartbeat timeout
and after a cancel; a callback while the dispatch is still open; a dispatch
target that is down, redirects, or recovers; templates that cannot be
rendered; heartbeats; every refusal (401 bad_signature, 404, 400, 409
stale_attempt) changing nothing; kill -9 between dispatch and callback.

Servers run with --allow-target 127.0.0.0/8 (the runner is on loopback).
Policies use seconds-scale timeouts; every wait has a deadline.
"""

import hashlib
import hmac
import json
import os
import time

import pytest

from webhook_receiver import Receiver
from webhook_sig import drover_signature, new_secret, sw_key, sw_signature, sw_verify
from conftest import (
    ROOT,
    UNKNOWN_ID,
    assert_error,
    closed_port,
    claim_req,
    job_events,
    poll_job,
    put_queue,
)

VECTORS = ROOT / "tests" / "testdata" / "signature-vectors.json"
ALLOW = ["--allow-target", "127.0.0.0/8"]
STEPS = ["vm_created", "ansible_started", "ansible_complete"]
TOL = 0.35  # timer slack plus HTTP round trips


# ------------------------------------------------------------------ signing


def test_signing_helpers_match_published_vectors():
    v = json.loads(VECTORS.read_text())
    for vec in v["standard_webhooks"]:
        body = vec["body"].encode()
        assert sw_signature(vec["secret"], vec["id"], vec["timestamp"], body) == vec["signature"]
        assert sw_verify(vec["secret"], vec["id"], str(vec["timestamp"]), body, vec["signature"])
    for vec in v["standard_webhooks_must_fail"]:
        assert not sw_verify(vec["secret"], vec["id"], str(vec["timestamp"]),
                             vec["body"].encode(), vec["signature"]), vec
    first = v["standard_webhooks"][0]
    assert sw_verify(first["secret"], first["id"], str(first["timestamp"]),
                     first["body"].encode(), v["standard_webhooks_list_passes"]["signature"])
    # Stripe's scheme is X-Drover's: hex HMAC of '{t}.{body}' keyed with the
    # secret's bytes, whsec_ included.
    s = v["stripe"]
    sig = drover_signature(s["secret"], s["timestamp"], s["body"].encode())
    assert f"t={s['timestamp']},v1={sig[len('sha256='):]}" == s["stripe_signature"]


# ------------------------------------------------------------------ the runner


class Runner(Receiver):
    """The shared receiver as a runner: answers 202 unless told otherwise.
    Dispatches go to /run/{job id} (template()), so a record's job_id is the
    one in its path; its "valid" says whether its Standard Webhooks
    signature verifies with `secret`, the queues' callback_secret."""

    def __init__(self, secret=None, default=202):
        self.secret = secret or new_secret()
        super().__init__(default=default)

    def describe(self, rec):
        path = rec["path"]
        return {
            "job_id": path.rsplit("/", 1)[-1] if path.startswith("/run/") else None,
            "valid": sw_verify(self.secret, rec["id"], rec["ts"], rec["body"], rec["sig"]),
        }

    def count(self, job_id=None):
        return len(self.got(job_id=job_id))

    def wait_answered(self, rec, timeout=10):
        """Wait until rec is answered (a held one: after release())."""
        self.wait_for(lambda _: rec["answered_at"] is not None, timeout, "the runner's answer")


@pytest.fixture
def srv(make_server):
    return make_server(args=ALLOW)


@pytest.fixture
def make_runner(make_receiver):
    """Factory: make_runner(secret=None, default=202) -> a started Runner,
    stopped after the test."""
    return lambda **kw: make_receiver(cls=Runner, **kw)


@pytest.fixture
def runner(make_runner):
    return make_runner()


def template(url_base, **over):
    """A dispatch template that tells the runner everything it needs."""
    t = {
        "url": url_base + "/run/{{job.id}}?attempt={{job.attempt}}",
        "method": "POST",
        "headers": {"X-Runner-Test": "drover-{{job.attempt}}"},
        "body": {
            "job_id": "{{job.id}}",
            "attempt": "{{job.attempt}}",
            "attempt_text": "{{job.attempt | string}}",
            "callback": {"url": "{{callback.url}}", "token": "{{callback.token}}"},
            "vm": "{{payload.vm}}",
            "resume_from": "{{checkpoints}}",
        },
    }
    t.update(over)
    return t


def http_queue(srv, runner, name, url_base=None, **policy):
    p = {
        "mode": "http",
        "steps": STEPS,
        "timeout_s": 120,
        "heartbeat_timeout_s": 30,
        "callback_secret": runner.secret,
        "dispatch": template(url_base or runner.url),
    }
    p.update(policy)
    return put_queue(srv, name, **p)


def submit(srv, queue, vm="vm-1", **fields):
    return srv.submit(queue, payload={"vm": vm}, **fields)


def token_of(dispatch):
    return dispatch["json"]["callback"]["token"]


def dispatched(srv, runner, job_id, n=1, timeout=10):
    """Wait for the job's n-th dispatch and for drover to record its 2xx."""
    d = runner.wait(n, job_id=job_id, timeout=timeout)[n - 1]
    runner.wait_answered(d, timeout)
    poll_job(srv, job_id, lambda j: j["waiting_for"] is None, timeout=5,
             what="waiting_for cleared after the runner's 2xx")
    return d


# ------------------------------------------------------------------ callbacks


def cb(attempt, status, **fields):
    return {"attempt": attempt, "status": status, **fields}


def send_callback(server, job_id, body, secret, scheme="standard", msg_id=None, ts=None,
                  tamper=False, headers_override=None, path=None):
    """POST /v1/callbacks/{job_id}, signed here. body: dict (JSON-encoded) or
    bytes. scheme: "standard" (webhook-*), "drover" (X-Drover-*) or None
    (unsigned). tamper: True sends the signed bytes plus a trailing blank;
    bytes are sent instead of the signed body. headers_override: name ->
    value, None removes the header."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    ts = int(time.time()) if ts is None else ts
    h = {"Content-Type": "application/json"}
    if scheme == "standard":
        msg_id = msg_id or "msg_" + os.urandom(12).hex()
        h["webhook-id"] = msg_id
        h["webhook-timestamp"] = str(ts)
        h["webhook-signature"] = sw_signature(secret, msg_id, ts, raw)
    elif scheme == "drover":
        h["X-Drover-Timestamp"] = str(ts)
        h["X-Drover-Signature"] = drover_signature(secret, ts, raw)
    else:
        assert scheme is None, scheme
    for k, v in (headers_override or {}).items():
        for old in [x for x in h if x.lower() == k.lower()]:
            del h[old]
        if v is not None:
            h[k] = v
    sent = raw
    if tamper is True:
        sent = raw + b" "
    elif isinstance(tamper, bytes):
        sent = tamper
    return server.request("POST", path or f"/v1/callbacks/{job_id}", raw=sent, token=None,
                          headers=h)


def applied(r, job_id):
    """200 {"applied": true, "cancel_requested": bool, "job": {...}}; the job."""
    assert r.status == 200, r
    assert isinstance(r.json, dict) and r.json.get("applied") is True, r.json
    assert isinstance(r.json.get("cancel_requested"), bool), r.json
    assert isinstance(r.json.get("job"), dict) and r.json["job"]["id"] == job_id, r.json
    assert r.json["cancel_requested"] == r.json["job"]["cancel_requested"], r.json
    return r.json["job"]


def not_applied(r, reason):
    """200 {"applied": false, "reason": ...}. reason: exact text, or a
    callable that judges it."""
    assert r.status == 200, r
    assert isinstance(r.json, dict) and r.json.get("applied") is False, r.json
    got = r.json.get("reason")
    assert isinstance(got, str) and got, r.json
    if callable(reason):
        assert reason(got), r.json
    else:
        assert got == reason, r.json
    return r.json


def snapshot(srv, job_id):
    return srv.get_job(job_id, token="admin"), job_events(srv, job_id)


def assert_unchanged(srv, job_id, before, what="", renews_lease=False):
    """Job and events as before. renews_lease: the callback proved the runner
    alive, so lease_expires_at may move on (never back)."""
    after = snapshot(srv, job_id)
    if renews_lease:
        b, a = dict(before[0]), dict(after[0])
        lb, la = b.pop("lease_expires_at"), a.pop("lease_expires_at")
        assert la >= lb, f"{what}: the heartbeat deadline moved back: {lb} -> {la}"
        assert a == b, f"{what}: job changed\n{b}\n{a}"
    else:
        assert after[0] == before[0], f"{what}: job changed\n{before[0]}\n{after[0]}"
    assert after[1] == before[1], f"{what}: events changed\n{before[1][-3:]}\n{after[1][-3:]}"


def types(events):
    return [e["type"] for e in events]


def assert_in_order(seq, wanted):
    """wanted is a subsequence of seq (other items may come between)."""
    it = iter(seq)
    for w in wanted:
        assert any(x == w for x in it), f"{wanted} not in order in {seq}"


def crash_and_restart(srv):
    port = srv.port
    srv.kill()
    srv.start(listen=f"127.0.0.1:{port}")
    assert srv.port == port


# ------------------------------------------------------------------ policy, claims


def test_http_mode_needs_callback_secret(srv, runner):
    p = {"mode": "http", "dispatch": template(runner.url)}
    r = srv.request("PUT", "/v1/queues/nosecret", p, token="admin")
    err = assert_error(r, 400, "invalid_field")
    assert err.get("field") in ("callback_secret", "mode"), err
    got = http_queue(srv, runner, "withsecret")
    assert got["mode"] == "http" and got["callback_secret"] == runner.secret


def test_claim_on_http_queue_is_conflict(srv, runner):
    http_queue(srv, runner, "hq")
    job = submit(srv, "hq")
    dispatched(srv, runner, job["id"])
    before = snapshot(srv, job["id"])
    assert_error(claim_req(srv, "hq"), 409, "conflict")
    assert_error(claim_req(srv, "hq", wait_s=1), 409, "conflict")
    assert_unchanged(srv, job["id"], before, "claim on an http queue")


# ------------------------------------------------------------------ the full path


def test_full_path_dispatch_steps_succeeded(srv, runner):
    http_queue(srv, runner, "provision")
    runner.hold()
    t_submit = time.time()
    job = submit(srv, "provision", vm="vm-42")
    jid = job["id"]
    assert job["state"] == "queued" and job["attempt"] == 0, job

    d = runner.wait(1, job_id=jid)[0]
    # Leased to the dispatcher and committed before the request was sent.
    held = srv.get_job(jid, token="admin")
    assert held["state"] == "running", held
    assert held["attempt"] == 1, held
    assert held["worker"] == "dispatch", held
    assert held["waiting_for"] == "dispatch", held
    evs = types(job_events(srv, jid))
    assert "job.running" in evs and "job.dispatched" not in evs, evs

    # The request: rendered template, JSON, signed with the queue's secret.
    assert d["method"] == "POST"
    assert d["target"] == f"/run/{jid}?attempt=1", d["target"]
    h = d["headers"]
    assert h.get("content-type", "").split(";")[0].strip() == "application/json", h
    assert h.get("x-runner-test") == "drover-1", h
    assert h.get("webhook-id") == f"dispatch_{jid}_1", h
    assert abs(int(h["webhook-timestamp"]) - time.time()) < 60, h
    assert d["valid"], f"dispatch signature does not verify: {h}"
    body = d["json"]
    assert body["job_id"] == jid
    assert body["attempt"] == 1 and body["attempt_text"] == "1", body
    assert body["vm"] == "vm-42"
    assert body["resume_from"] == {}, body
    assert body["callback"]["url"] == f"http://127.0.0.1:{srv.port}/v1/callbacks/{jid}", body
    token = body["callback"]["token"]
    assert token.startswith("whsec_") and token != runner.secret, token
    assert len(sw_key(token)) >= 16, token

    runner.release()
    runner.wait_answered(d)
    job = poll_job(srv, jid, lambda j: j["waiting_for"] is None, timeout=5,
                   what="waiting_for cleared after 202")
    assert job["state"] == "running" and job["attempt"] == 1, job
    disp = [e for e in job_events(srv, jid) if e["type"] == "job.dispatched"]
    assert len(disp) == 1, disp
    assert disp[0]["data"]["status"] == 202, disp
    lat = disp[0]["data"]["latency_ms"]
    assert isinstance(lat, (int, float)) and not isinstance(lat, bool) and lat >= 0, disp

    # The runner reports back: its run id, each step with data, then success.
    j = applied(send_callback(srv, jid, cb(1, "running", run_id="gh-run-1001"), token), jid)
    assert j["run_id"] == "gh-run-1001" and j["state"] == "running", j
    data = {"vm_created": {"vm_id": "vm-42", "ip": "10.0.0.7"},
            "ansible_started": None,
            "ansible_complete": {"changed": 12, "failed": 0}}
    for i, step in enumerate(STEPS):
        body = cb(1, "running", step=step)
        if data[step] is not None:
            body["data"] = data[step]
        # alternate the schemes and the secrets
        secret = token if i % 2 == 0 else runner.secret
        scheme = "standard" if i != 1 else "drover"
        j = applied(send_callback(srv, jid, body, secret, scheme=scheme), jid)
        assert j["state"] == "running" and j["step"] == step, j
        assert j["checkpoints"][step] == data[step], j
        assert j["cancel_requested"] is False
    j = applied(send_callback(srv, jid, cb(1, "succeeded", result={"vm": "vm-42", "ok": True}),
                              runner.secret, scheme="drover"), jid)
    assert j["state"] == "succeeded", j

    final = srv.get_job(jid, token="admin")
    assert final["state"] == "succeeded", final
    assert final["step"] == "ansible_complete", final
    assert final["attempt"] == 1
    assert final["result"] == {"vm": "vm-42", "ok": True}, final
    assert final["checkpoints"] == data, final
    assert final["error"] is None, final
    assert final["run_id"] == "gh-run-1001", final

    evs = job_events(srv, jid)
    assert_in_order(types(evs), ["job.created", "job.running", "job.dispatched",
                                 "job.step", "job.step", "job.step", "job.succeeded"])
    assert evs[0]["type"] == "job.created" and evs[0]["prev_state"] is None
    assert evs[-1]["type"] == "job.succeeded", types(evs)
    running = [e for e in evs if e["type"] == "job.running"]
    assert len(running) == 1 and running[0]["attempt"] == 1, running
    assert [e["step"] for e in evs if e["type"] == "job.step"] == STEPS
    seqs = [e["seq"] for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    assert final["seq"] == seqs[-1]
    assert runner.count(jid) == 1, "dispatched more than once"
    assert time.time() - t_submit < 30


def test_failure_at_ansible_complete_with_run_id(srv, runner):
    http_queue(srv, runner, "prov")
    job = submit(srv, "prov")
    jid = job["id"]
    token = token_of(dispatched(srv, runner, jid))
    for step in STEPS[:2]:
        applied(send_callback(srv, jid, cb(1, "running", step=step, data={"s": step}), token), jid)
    r = send_callback(srv, jid, cb(1, "failed", step="ansible_complete", run_id="gh-run-42",
                                   error={"message": "playbook failed: 3 hosts unreachable"}),
                      token)
    j = applied(r, jid)
    assert j["state"] == "failed", j
    final = srv.get_job(jid, token="admin")
    assert final["state"] == "failed"
    err = final["error"]
    assert err["kind"] == "error", err
    assert err["step"] == "ansible_complete", err
    assert err["run_id"] == "gh-run-42", err
    assert err["message"] == "playbook failed: 3 hosts unreachable", err
    assert err["attempt"] == 1, err
    assert final["run_id"] == "gh-run-42", final
    assert final["checkpoints"]["vm_created"] == {"s": "vm_created"}, final
    evs = job_events(srv, jid)
    assert evs[-1]["type"] == "job.failed", types(evs)

    # Without an error object: drover's default message; the step in error.step.
    job2 = submit(srv, "prov", vm="vm-2")
    tok2 = token_of(dispatched(srv, runner, job2["id"]))
    j = applied(send_callback(srv, job2["id"], cb(1, "failed", step="vm_created"), tok2,
                              scheme="drover"), job2["id"])
    assert j["state"] == "failed", j
    err = srv.get_job(job2["id"], token="admin")["error"]
    assert err["kind"] == "error" and err["step"] == "vm_created", err
    assert err["message"] == "the runner reported a failure", err


# ------------------------------------------------------------------ order, duplicates


def test_out_of_order_and_duplicate_callbacks(srv, runner):
    http_queue(srv, runner, "ooo")
    job = submit(srv, "ooo")
    jid = job["id"]
    token = token_of(dispatched(srv, runner, jid))

    # The last step first, then the first one: both kept; step = furthest.
    j = applied(send_callback(srv, jid, cb(1, "running", step="ansible_complete",
                                           data={"ok": True}), token), jid)
    assert j["step"] == "ansible_complete", j
    first_id = "msg_vm_created_1"
    j = applied(send_callback(srv, jid, cb(1, "running", step="vm_created", data={"vm_id": 9}),
                              token, msg_id=first_id), jid)
    assert j["step"] == "ansible_complete", j
    assert j["checkpoints"] == {"ansible_complete": {"ok": True}, "vm_created": {"vm_id": 9}}, j

    # Same step, same data, new webhook-id (and the other scheme): duplicate.
    before = snapshot(srv, jid)
    not_applied(send_callback(srv, jid, cb(1, "running", step="vm_created", data={"vm_id": 9}),
                              token), "duplicate")
    not_applied(send_callback(srv, jid, cb(1, "running", step="vm_created", data={"vm_id": 9}),
                              runner.secret, scheme="drover"), "duplicate")
    # "nothing changes": no checkpoint, step or event; a running callback
    # may still count as a sign of life.
    assert_unchanged(srv, jid, before, "same step, same data", renews_lease=True)
    before = snapshot(srv, jid)
    # A webhook-id seen before: duplicate, whatever the body says now.
    not_applied(send_callback(srv, jid, cb(1, "running", step="ansible_started"), token,
                              msg_id=first_id), "duplicate")
    not_applied(send_callback(srv, jid, cb(1, "succeeded", result=1), runner.secret,
                              msg_id=first_id), "duplicate")
    assert_unchanged(srv, jid, before, "repeated webhook-id")
    assert "ansible_started" not in srv.get_job(jid)["checkpoints"]

    # Same step with other data is a new report: the checkpoint is replaced.
    j = applied(send_callback(srv, jid, cb(1, "running", step="vm_created", data={"vm_id": 10}),
                              token), jid)
    assert j["checkpoints"]["vm_created"] == {"vm_id": 10}, j

    # succeeded with a step: the step is recorded first.
    done_id = "msg_done_1"
    j = applied(send_callback(srv, jid, cb(1, "succeeded", step="ansible_started",
                                           data={"t": 1}, result={"r": 1}),
                              token, msg_id=done_id), jid)
    assert j["state"] == "succeeded", j
    final = srv.get_job(jid, token="admin")
    assert final["checkpoints"] == {"ansible_complete": {"ok": True}, "vm_created": {"vm_id": 10},
                                    "ansible_started": {"t": 1}}, final
    assert final["step"] == "ansible_complete", final
    assert final["result"] == {"r": 1}
    steps = [e["step"] for e in job_events(srv, jid) if e["type"] == "job.step"]
    assert steps == ["ansible_complete", "vm_created", "vm_created", "ansible_started"], steps

    # The runner resends its success: 200, nothing changes.
    before = snapshot(srv, jid)
    not_applied(send_callback(srv, jid, cb(1, "succeeded", step="ansible_started",
                                           data={"t": 1}, result={"r": 1}),
                              token, msg_id=done_id), "duplicate")
    not_applied(send_callback(srv, jid, cb(1, "succeeded", result={"r": 2}), token),
                lambda s: s.startswith("job is succeeded"))
    not_applied(send_callback(srv, jid, cb(1, "heartbeat"), runner.secret, scheme="drover"),
                lambda s: s.startswith("job is succeeded"))
    assert_unchanged(srv, jid, before, "callbacks after success")


def test_both_schemes_with_queue_secret_and_attempt_token(srv, runner):
    http_queue(srv, runner, "schemes")
    a = submit(srv, "schemes", vm="a")
    b = submit(srv, "schemes", vm="b")
    tok_a = token_of(dispatched(srv, runner, a["id"]))
    tok_b = token_of(dispatched(srv, runner, b["id"]))
    assert tok_a != tok_b, "the callback token is per job and attempt"
    for secret in (runner.secret, tok_a):
        for scheme in ("standard", "drover"):
            r = send_callback(srv, a["id"], cb(1, "heartbeat"), secret, scheme=scheme)
            j = applied(r, a["id"])
            assert j["state"] == "running", j
    # Several signatures (secret rotation): any v1 entry that verifies passes.
    body = json.dumps(cb(1, "running", step="vm_created")).encode()
    ts = int(time.time())
    good = sw_signature(tok_a, "msg_rot", ts, body)
    bogus = sw_signature(new_secret(), "msg_rot", ts, body)
    r = send_callback(srv, a["id"], body, tok_a, msg_id="msg_rot", ts=ts,
                      headers_override={"webhook-signature": f"v2,{good[3:]} {bogus} {good}"})
    assert applied(r, a["id"])["step"] == "vm_created"
    # Job b's token does not sign for job a.
    before = snapshot(srv, a["id"])
    for scheme in ("standard", "drover"):
        r = send_callback(srv, a["id"], cb(1, "running", step="ansible_started"), tok_b,
                          scheme=scheme)
        assert_error(r, 401, "bad_signature")
    assert_unchanged(srv, a["id"], before, "another job's token")


# ------------------------------------------------------------------ refusals


def test_bad_signatures_are_401_and_change_nothing(srv, runner):
    http_queue(srv, runner, "sig")
    job = submit(srv, "sig")
    jid = job["id"]
    token = token_of(dispatched(srv, runner, jid))
    body = cb(1, "running", step="vm_created", data={"vm_id": "x"})
    raw = json.dumps(body).encode()
    other = json.dumps(cb(1, "succeeded", result="forged")).encode()
    now = int(time.time())
    wrong = new_secret()

    cases = {
        "no signature headers": dict(secret=token, scheme=None),
        "no webhook-id": dict(secret=token, headers_override={"webhook-id": None}),
        "no webhook-timestamp": dict(secret=token, headers_override={"webhook-timestamp": None}),
        "no webhook-signature": dict(secret=token, headers_override={"webhook-signature": None}),
        "empty v1 signature": dict(secret=token, headers_override={"webhook-signature": "v1,"}),
        "v2 only": dict(secret=token, headers_override={
            "webhook-signature": "v2," + sw_signature(token, "msg_v2", now, raw)[3:]},
            msg_id="msg_v2", ts=now),
        "garbage signature": dict(secret=token,
                                  headers_override={"webhook-signature": "not a signature"}),
        "webhook-id changed after signing": dict(secret=token, msg_id="msg_a",
                                                 headers_override={"webhook-id": "msg_b"}),
        "non-numeric timestamp": dict(secret=token, headers_override={
            "webhook-timestamp": "yesterday"}),
        "wrong secret": dict(secret=wrong),
        "wrong secret, drover scheme": dict(secret=wrong, scheme="drover"),
        "tampered body": dict(secret=token, tamper=other),
        "trailing blank added": dict(secret=token, tamper=True),
        "tampered body, drover scheme": dict(secret=runner.secret, scheme="drover", tamper=other),
        "stale timestamp": dict(secret=token, ts=now - 400),
        "future timestamp": dict(secret=token, ts=now + 400),
        "stale timestamp, drover scheme": dict(secret=runner.secret, scheme="drover",
                                               ts=now - 400),
        "future timestamp, drover scheme": dict(secret=runner.secret, scheme="drover",
                                                ts=now + 400),
        "no X-Drover-Timestamp": dict(secret=runner.secret, scheme="drover",
                                      headers_override={"X-Drover-Timestamp": None}),
        "X-Drover-Signature without sha256=": dict(secret=runner.secret, scheme="drover",
                                                   headers_override={"X-Drover-Signature":
                                                                     drover_signature(
                                                                         runner.secret, now,
                                                                         raw)[7:]}, ts=now),
        # X-Drover is keyed with the secret string, not the decoded bytes
        "drover scheme keyed with decoded secret": dict(
            secret=runner.secret, scheme="drover", ts=now, headers_override={
                "X-Drover-Signature": "sha256=" + hmac.new(
                    sw_key(runner.secret), f"{now}.".encode() + raw, hashlib.sha256).hexdigest()}),
    }
    before = snapshot(srv, jid)
    for what, kw in cases.items():
        secret = kw.pop("secret")
        r = send_callback(srv, jid, body, secret, **kw)
        err = assert_error(r, 401, "bad_signature")
        if "timestamp" in what and "no " not in what and "non-numeric" not in what:
            assert "timestamp" in err["message"].lower(), (what, err)
        assert_unchanged(srv, jid, before, what)
    # Unsigned garbage: the signature is checked before the body is parsed.
    r = send_callback(srv, jid, b"{not json", token, scheme=None)
    assert_error(r, 401, "bad_signature")
    assert_unchanged(srv, jid, before, "unsigned garbage")

    # Within 300 s either way is fine.
    applied(send_callback(srv, jid, cb(1, "heartbeat"), token, ts=now - 200), jid)
    applied(send_callback(srv, jid, cb(1, "heartbeat"), runner.secret, scheme="drover",
                          ts=now + 200), jid)
    assert srv.get_job(jid)["checkpoints"] == {}


def test_unknown_job_and_malformed_bodies(srv, runner):
    http_queue(srv, runner, "bad")
    job = submit(srv, "bad")
    jid = job["id"]
    token = token_of(dispatched(srv, runner, jid))

    assert_error(send_callback(srv, UNKNOWN_ID, cb(1, "heartbeat"), runner.secret), 404,
                 "not_found")
    assert_error(send_callback(srv, UNKNOWN_ID, cb(1, "heartbeat"), runner.secret,
                               scheme="drover"), 404, "not_found")
    assert_error(send_callback(srv, "not-a-ulid", cb(1, "heartbeat"), runner.secret), 400,
                 "bad_request")

    before = snapshot(srv, jid)
    cases = [
        (b'{"attempt": 1, "status": ', "malformed_json", None),
        (b"\xff\xfe{}", "malformed_json", None),
        (cb(1, "done"), "invalid_field", "status"),
        ({"attempt": 1}, "invalid_field", "status"),
        ({"status": "heartbeat"}, "invalid_field", "attempt"),
        (cb(0, "heartbeat"), "invalid_field", "attempt"),
        (cb("1", "heartbeat"), "invalid_field", "attempt"),
        (cb(1.5, "heartbeat"), "invalid_field", "attempt"),
        (cb(1, "running", run_id="r" * 257), "invalid_field", "run_id"),
        (cb(1, "running", run_id=7), "invalid_field", "run_id"),
        (cb(1, "failed", error="boom"), "invalid_field", "error"),
        (cb(1, "running", step=5), "invalid_field", "step"),
    ]
    for body, code, field in cases:
        for secret, scheme in ((token, "standard"), (runner.secret, "drover")):
            r = send_callback(srv, jid, body, secret, scheme=scheme)
            assert_error(r, 400, code, field=field)
            assert_unchanged(srv, jid, before, f"malformed {body!r}")
    for body in (b"[]", b'"heartbeat"', b"null"):
        r = send_callback(srv, jid, body, token)
        assert_error(r, 400, {"malformed_json", "invalid_field"})
    assert_unchanged(srv, jid, before, "non-object bodies")

    r = srv.request("GET", f"/v1/callbacks/{jid}", token="admin")
    assert_error(r, 405, "method_not_allowed")
    assert "POST" in r.headers.get("allow", ""), r.headers


def test_callback_for_a_pull_queue_job_is_401(srv):
    put_queue(srv, "pullq")
    job = srv.submit("pullq", payload={"vm": "p"})
    before = snapshot(srv, job["id"])
    for scheme in ("standard", "drover"):
        r = send_callback(srv, job["id"], cb(1, "running", step="x"), new_secret(), scheme=scheme)
        assert_error(r, 401, "bad_signature")
    assert_unchanged(srv, job["id"], before, "pull queue")
    # A pull queue's callback_secret, if it may have one, signs nothing either.
    secret = new_secret()
    r = srv.request("PUT", "/v1/queues/pullsec", {"callback_secret": secret}, token="admin")
    if r.status == 200:
        job = srv.submit("pullsec", payload={})
        before = snapshot(srv, job["id"])
        for scheme in ("standard", "drover"):
            r = send_callback(srv, job["id"], cb(0, "heartbeat"), secret, scheme=scheme)
            assert_error(r, 401, "bad_signature")
            r = send_callback(srv, job["id"], cb(1, "heartbeat"), secret, scheme=scheme)
            assert_error(r, 401, "bad_signature")
        assert_unchanged(srv, job["id"], before, "pull queue with a callback_secret")
    else:
        assert_error(r, 400, "invalid_field", field="callback_secret")


def test_callback_for_an_old_attempt_is_stale(srv, runner):
    http_queue(srv, runner, "stale", max_attempts=2,
               backoff={"initial_s": 0, "factor": 1, "max_s": 0, "jitter": 0})
    job = submit(srv, "stale")
    jid = job["id"]
    tok1 = token_of(dispatched(srv, runner, jid))
    applied(send_callback(srv, jid, cb(1, "running", step="vm_created", data={"vm_id": "v1"}),
                          tok1), jid)
    j = applied(send_callback(srv, jid, cb(1, "failed", step="ansible_started", run_id="run-a1",
                                           error={"message": "flaky"}), tok1), jid)
    assert j["state"] in ("queued", "running"), j

    d2 = dispatched(srv, runner, jid, n=2)
    assert d2["valid"]
    assert d2["headers"]["webhook-id"] == f"dispatch_{jid}_2", d2["headers"]
    assert d2["json"]["attempt"] == 2, d2["json"]
    assert d2["json"]["resume_from"] == {"vm_created": {"vm_id": "v1"}}, d2["json"]
    tok2 = token_of(d2)
    assert tok2 != tok1
    job = srv.get_job(jid, token="admin")
    assert job["state"] == "running" and job["attempt"] == 2, job

    before = snapshot(srv, jid)
    for secret, scheme in ((runner.secret, "standard"), (tok1, "standard"), (tok1, "drover"),
                           (runner.secret, "drover")):
        for body in (cb(1, "succeeded", result="late"), cb(1, "heartbeat"),
                     cb(1, "running", step="ansible_complete")):
            r = send_callback(srv, jid, body, secret, scheme=scheme)
            assert_error(r, 409, "stale_attempt")
            assert_unchanged(srv, jid, before, f"attempt 1 with {scheme}")
    r = send_callback(srv, jid, cb(3, "succeeded"), runner.secret)
    assert_error(r, 409, "stale_attempt")
    assert_unchanged(srv, jid, before, "attempt 3")

    # A token signs for its own attempt only: attempt 1's cannot drive attempt 2.
    for scheme in ("standard", "drover"):
        for body in (cb(2, "heartbeat"), cb(2, "succeeded", result="forged")):
            r = send_callback(srv, jid, body, tok1, scheme=scheme)
            assert_error(r, 401, "bad_signature")
            assert "attempt 1" in r.json["message"], r.json
            assert_unchanged(srv, jid, before, f"attempt 2 signed with attempt 1's token ({scheme})")

    j = applied(send_callback(srv, jid, cb(2, "succeeded", result="ok"), tok2), jid)
    assert j["state"] == "succeeded" and j["attempt"] == 2, j
    running = [e["attempt"] for e in job_events(srv, jid) if e["type"] == "job.running"]
    assert running == [1, 2], running


# ------------------------------------------------------------------ dispatch races


def test_callback_while_dispatch_request_is_open(srv, runner):
    http_queue(srv, runner, "race")
    runner.hold()
    job = submit(srv, "race")
    jid = job["id"]
    d = runner.wait(1, job_id=jid)[0]
    assert srv.get_job(jid)["waiting_for"] == "dispatch"
    token = token_of(d)

    j = applied(send_callback(srv, jid, cb(1, "running", step="vm_created", data={"vm_id": 1}),
                              token), jid)
    assert j["waiting_for"] is None, j
    assert j["state"] == "running" and j["step"] == "vm_created", j
    assert srv.get_job(jid)["waiting_for"] is None
    assert d["answered_at"] is None

    runner.release()
    runner.wait_answered(d)
    deadline = time.monotonic() + 5
    while "job.dispatched" not in types(job_events(srv, jid)):
        assert time.monotonic() < deadline, "the 202 was not recorded as job.dispatched"
        time.sleep(0.05)
    job = srv.get_job(jid, token="admin")
    assert job["state"] == "running" and job["attempt"] == 1, job
    assert job["waiting_for"] is None and job["step"] == "vm_created", job
    assert job["checkpoints"] == {"vm_created": {"vm_id": 1}}
    assert runner.count(jid) == 1
    j = applied(send_callback(srv, jid, cb(1, "succeeded", result=1), token), jid)
    assert j["state"] == "succeeded"

    # The runner finishes before the dispatch's answer arrives: the late 202
    # changes nothing and nothing is sent again.
    runner.hold()
    job2 = submit(srv, "race", vm="vm-2")
    d2 = runner.wait(1, job_id=job2["id"])[0]
    j = applied(send_callback(srv, job2["id"], cb(1, "succeeded", result={"fast": True}),
                              token_of(d2)), job2["id"])
    assert j["state"] == "succeeded" and j["waiting_for"] is None, j
    runner.release()
    runner.wait_answered(d2)
    time.sleep(0.5)  # let drover take the late answer in
    final = srv.get_job(job2["id"], token="admin")
    assert final["state"] == "succeeded" and final["result"] == {"fast": True}, final
    assert final["error"] is None, final
    assert runner.count(job2["id"]) == 1


# ------------------------------------------------------------------ dispatch failures


def test_dispatch_target_down_fails_with_dispatch_failed(srv, make_runner):
    """503 every time, a closed port, and a 302: five tries (after 1, 2, 4,
    8 s), then the attempt fails with dispatch_failed. Run side by side."""
    down = make_runner(default=503)
    body503 = b"runner overloaded; " + b"x" * 1000
    down.default = (503, {}, body503)
    redirect_target = make_runner()
    redir = make_runner(default=(302, {"Location": redirect_target.url + "/elsewhere"}, b"{}"))
    http_queue(srv, down, "down", max_attempts=1)
    put_queue(srv, "closed", mode="http", steps=STEPS, timeout_s=120, heartbeat_timeout_s=60,
              callback_secret=new_secret(),
              dispatch=template(f"http://127.0.0.1:{closed_port()}"))
    http_queue(srv, redir, "redir", max_attempts=1)
    # With max_attempts 2 the retry policy starts attempt 2, dispatched anew.
    recovers = make_runner()
    recovers.answer(None, *[503] * 5)
    http_queue(srv, recovers, "recovers", max_attempts=2,
               backoff={"initial_s": 0, "factor": 1, "max_s": 0, "jitter": 0})
    t0 = time.monotonic()
    j_down = submit(srv, "down")
    j_closed = submit(srv, "closed")
    j_redir = submit(srv, "redir")
    j_rec = submit(srv, "recovers")

    # While it retries the job stays running, waiting for the dispatch.
    down.wait(2, timeout=5, job_id=j_down["id"])
    mid = srv.get_job(j_down["id"], token="admin")
    assert mid["state"] == "running" and mid["waiting_for"] == "dispatch", mid

    def failed(j):
        return j["state"] == "failed"

    results = {}
    for name, j in (("down", j_down), ("closed", j_closed), ("redir", j_redir)):
        results[name] = poll_job(srv, j["id"], failed, timeout=max(1.0, 40 - (time.monotonic() - t0)),
                                 interval=0.2, what=f"{name}: dispatch_failed")
    elapsed = time.monotonic() - t0
    assert elapsed >= 14, f"gave up after {elapsed:.1f}s, before 1+2+4+8 s of retries"

    err = results["down"]["error"]
    assert err["kind"] == "dispatch_failed", err
    assert err["attempt"] == 1, err
    assert "503" in err["message"], err
    assert "runner overloaded" in err["message"], err
    assert "x" * 600 not in err["message"], "more than the first 512 bytes of the body"
    tries = down.wait(5, job_id=j_down["id"])
    assert len(tries) == 5, [t["at"] for t in tries]
    assert all(t["valid"] for t in tries)
    assert {t["headers"]["webhook-id"] for t in tries} == {f"dispatch_{j_down['id']}_1"}
    gaps = [b["at"] - a["at"] for a, b in zip(tries, tries[1:])]
    for gap, want in zip(gaps, (1, 2, 4, 8)):
        assert want - TOL <= gap <= want + 1.5, f"retry gaps {gaps}, want 1, 2, 4, 8"

    err = results["closed"]["error"]
    assert err["kind"] == "dispatch_failed" and err["message"], err

    err = results["redir"]["error"]
    assert err["kind"] == "dispatch_failed" and "302" in err["message"], err
    assert redir.count(j_redir["id"]) == 5
    assert redirect_target.count() == 0, "a redirect was followed"

    for j in results.values():
        evs = types(job_events(srv, j["id"]))
        assert "job.dispatched" not in evs, evs
        assert evs[-1] == "job.failed", evs

    d6 = dispatched(srv, recovers, j_rec["id"], n=6, timeout=max(1.0, 40 - (time.monotonic() - t0)))
    assert d6["valid"]
    assert d6["headers"]["webhook-id"] == f"dispatch_{j_rec['id']}_2", d6["headers"]
    assert d6["json"]["attempt"] == 2, d6["json"]
    job = srv.get_job(j_rec["id"], token="admin")
    assert job["state"] == "running" and job["attempt"] == 2, job
    running = [e["attempt"] for e in job_events(srv, j_rec["id"]) if e["type"] == "job.running"]
    assert running == [1, 2], running


def test_dispatch_retried_until_accepted(srv, runner):
    """503 with Retry-After: 3, 503, then 202: the job is dispatched on the
    third try; Retry-After replaces the first 1 s wait."""
    runner.answer(None, (503, {"Retry-After": "3"}, b'{"busy": true}'), 503)
    http_queue(srv, runner, "flaky")
    job = submit(srv, "flaky")
    jid = job["id"]
    d = dispatched(srv, runner, jid, n=3, timeout=15)
    tries = runner.wait(3, job_id=jid)
    gaps = [b["at"] - a["at"] for a, b in zip(tries, tries[1:])]
    assert gaps[0] >= 3 - TOL, f"Retry-After not honoured: {gaps}"
    assert 2 - TOL <= gaps[1] <= 2 + 1.5, f"second retry after {gaps[1]:.2f}s, want 2"
    assert {t["headers"]["webhook-id"] for t in tries} == {f"dispatch_{jid}_1"}
    assert all(t["valid"] for t in tries)
    assert [t["json"] for t in tries] == [d["json"]] * 3, "resends differ"
    job = srv.get_job(jid, token="admin")
    assert job["state"] == "running" and job["attempt"] == 1 and job["error"] is None, job
    disp = [e for e in job_events(srv, jid) if e["type"] == "job.dispatched"]
    assert len(disp) == 1 and disp[0]["data"]["status"] == 202, disp
    time.sleep(0.3)
    assert runner.count(jid) == 3


def test_unrenderable_template_fails_at_once(make_server, runner):
    secret_value = "agent-key-value-5e1f0c"
    srv = make_server(args=ALLOW, env={"RUNNER_TEST_AGENT_KEY": secret_value,
                                       "RUNNER_TEST_EMPTY": ""})
    assert not srv.env.get("RUNNER_TEST_UNSET_7F3A")
    cases = {
        "unset": ({"X-Agent-Key": "{{env.RUNNER_TEST_UNSET_7F3A}}"}, {"vm": "v"},
                  "RUNNER_TEST_UNSET_7F3A"),
        "empty": ({"X-Agent-Key": "{{env.RUNNER_TEST_EMPTY}}"}, {"vm": "v"},
                  "RUNNER_TEST_EMPTY"),
        "nopayload": ({}, {"other": 1}, "payload.vm"),
    }
    ids = {}
    for name, (headers, payload, _) in cases.items():
        put_queue(srv, name, mode="http", steps=STEPS, timeout_s=120, heartbeat_timeout_s=60,
                  callback_secret=runner.secret,
                  dispatch=template(runner.url, headers=headers))
        ids[name] = srv.submit(name, payload=payload)["id"]
    for name, (_, _, names) in cases.items():
        j = poll_job(srv, ids[name], lambda j: j["state"] == "failed", timeout=5,
                     what=f"{name}: failed at once")
        assert j["error"]["kind"] == "dispatch_failed", j
        assert names in j["error"]["message"], j["error"]
        assert runner.count(ids[name]) == 0, f"{name}: a dispatch with a hole was sent"

    # With the variable set, the header carries it; neither the value nor the
    # callback token shows up in drover's log.
    put_queue(srv, "withenv", mode="http", steps=STEPS, timeout_s=120, heartbeat_timeout_s=60,
              callback_secret=runner.secret,
              dispatch=template(runner.url, headers={"X-Agent-Key": "{{env.RUNNER_TEST_AGENT_KEY}}"}))
    job = srv.submit("withenv", payload={"vm": None})
    d = dispatched(srv, runner, job["id"])
    assert d["headers"].get("x-agent-key") == secret_value, d["headers"]
    assert d["json"]["vm"] is None, d["json"]
    log = srv.log()
    assert secret_value not in log, "an env value was logged"
    assert token_of(d) not in log, "the callback token was logged"


# ------------------------------------------------------------------ heartbeats, cancel


def test_heartbeats_keep_a_slow_run_alive_and_their_absence_fails_it(srv, runner):
    http_queue(srv, runner, "hb", heartbeat_timeout_s=2, timeout_s=120)
    job = submit(srv, "hb")
    jid = job["id"]
    token = token_of(dispatched(srv, runner, jid))
    keys = [(token, "standard"), (runner.secret, "drover"), (runner.secret, "standard"),
            (token, "drover")]
    end = time.monotonic() + 4
    i = 0
    while True:
        secret, scheme = keys[i % len(keys)]
        r = send_callback(srv, jid, cb(1, "heartbeat"), secret, scheme=scheme)
        last = time.monotonic()
        j = applied(r, jid)
        assert j["state"] == "running", j
        assert r.json["cancel_requested"] is False
        i += 1
        if last >= end:
            break
        time.sleep(0.5)
    assert srv.get_job(jid)["state"] == "running"

    j = poll_job(srv, jid, lambda j: j["state"] != "running", timeout=4, interval=0.05,
                 what="heartbeat timeout")
    gone = time.monotonic() - last
    assert j["state"] == "failed", j
    assert j["error"]["kind"] == "heartbeat_timeout", j
    assert 2 - TOL - 0.5 <= gone <= 3.2, f"failed {gone:.2f}s after the last heartbeat"

    before = snapshot(srv, jid)
    for body in (cb(1, "heartbeat"), cb(1, "succeeded", result=1),
                 cb(1, "running", step="vm_created")):
        not_applied(send_callback(srv, jid, body, token),
                    lambda s: "failed" in s and "heartbeat_timeout" in s)
    assert_unchanged(srv, jid, before, "callbacks after a heartbeat timeout")


def test_cancel_is_reported_then_failed_callback_cancels(srv, runner):
    http_queue(srv, runner, "cx")
    job = submit(srv, "cx")
    jid = job["id"]
    token = token_of(dispatched(srv, runner, jid))
    r = send_callback(srv, jid, cb(1, "heartbeat"), token)
    assert applied(r, jid) and r.json["cancel_requested"] is False

    c = srv.request("POST", f"/v1/jobs/{jid}/cancel", {"reason": "customer left"},
                    token="submit")
    assert c.status == 200, c
    assert c.json["state"] == "running" and c.json["cancel_requested"] is True, c.json

    for body, secret, scheme in ((cb(1, "heartbeat"), token, "standard"),
                                 (cb(1, "heartbeat"), runner.secret, "drover"),
                                 (cb(1, "running", step="vm_created"), token, "standard")):
        r = send_callback(srv, jid, body, secret, scheme=scheme)
        j = applied(r, jid)
        assert r.json["cancel_requested"] is True, r.json
        assert j["state"] == "running", j

    r = send_callback(srv, jid, cb(1, "failed", error={"message": "stopped on request"}), token)
    j = applied(r, jid)
    assert j["state"] == "canceled", j
    assert srv.get_job(jid)["state"] == "canceled"
    evs = types(job_events(srv, jid))
    assert_in_order(evs, ["job.running", "job.cancel_requested", "job.canceled"])

    before = snapshot(srv, jid)
    not_applied(send_callback(srv, jid, cb(1, "succeeded"), token),
                lambda s: s.startswith("job is canceled"))
    not_applied(send_callback(srv, jid, cb(1, "heartbeat"), runner.secret, scheme="drover"),
                lambda s: s.startswith("job is canceled"))
    assert_unchanged(srv, jid, before, "callbacks after a cancel")


def test_cancel_then_silence_cancels_at_the_heartbeat_deadline(srv, runner):
    http_queue(srv, runner, "cxs", heartbeat_timeout_s=2, timeout_s=120)
    job = submit(srv, "cxs")
    jid = job["id"]
    token = token_of(dispatched(srv, runner, jid))
    c = srv.request("POST", f"/v1/jobs/{jid}/cancel", token="submit")
    assert c.status == 200 and c.json["cancel_requested"] is True, c
    j = poll_job(srv, jid, lambda j: j["state"] != "running", timeout=5,
                 what="canceled at the heartbeat deadline")
    assert j["state"] == "canceled", j
    not_applied(send_callback(srv, jid, cb(1, "heartbeat"), token),
                lambda s: s.startswith("job is canceled"))


# ------------------------------------------------------------------ kill -9


def test_kill_9_between_dispatch_and_callback(srv, runner):
    http_queue(srv, runner, "crash")
    job = submit(srv, "crash")
    jid = job["id"]
    d = dispatched(srv, runner, jid)
    token = token_of(d)
    crash_and_restart(srv)

    j = srv.get_job(jid, token="admin")
    assert j["state"] == "running" and j["attempt"] == 1 and j["waiting_for"] is None, j
    j = applied(send_callback(srv, jid, cb(1, "running", step="vm_created", data={"v": 1}),
                              token), jid)
    assert j["step"] == "vm_created"
    j = applied(send_callback(srv, jid, cb(1, "succeeded", result="done"), runner.secret,
                              scheme="drover"), jid)
    assert j["state"] == "succeeded", j
    crash_and_restart(srv)
    final = srv.get_job(jid, token="admin")
    assert final["state"] == "succeeded" and final["result"] == "done", final
    assert final["checkpoints"] == {"vm_created": {"v": 1}}, final
    time.sleep(0.5)
    assert runner.count(jid) == 1, "a dispatched job was dispatched again after the restart"


def test_kill_9_while_dispatch_is_open_dispatches_again(srv, runner):
    http_queue(srv, runner, "crash2")
    runner.hold()
    job = submit(srv, "crash2")
    jid = job["id"]
    d1 = runner.wait(1, job_id=jid)[0]
    assert srv.get_job(jid)["waiting_for"] == "dispatch"
    crash_and_restart(srv)
    runner.release()  # its connection is gone; the answer goes nowhere

    d2 = dispatched(srv, runner, jid, n=2, timeout=10)
    assert d2["valid"]
    assert d2["headers"]["webhook-id"] == d1["headers"]["webhook-id"] == f"dispatch_{jid}_1"
    assert d2["json"] == d1["json"], "the resend differs from the first dispatch"
    j = srv.get_job(jid, token="admin")
    assert j["state"] == "running" and j["attempt"] == 1 and j["waiting_for"] is None, j
    assert [e["attempt"] for e in job_events(srv, jid) if e["type"] == "job.running"] == [1]
    j = applied(send_callback(srv, jid, cb(1, "succeeded", result=1), token_of(d2)), jid)
    assert j["state"] == "succeeded" and j["attempt"] == 1, j
