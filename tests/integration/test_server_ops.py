"""Operating the server: signals, logs, request ids, --check-config, the data
directory lock."""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import DROVER_BIN, REQUEST_ID_RE, TOKENS, Server, config_text

LEVELS = {"debug", "info", "warn", "warning", "error"}


def wait_for(pred, timeout=5.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def json_lines(path):
    out = []
    if not os.path.exists(path):
        return out
    with open(path, "rb") as f:
        for line in f.read().splitlines():
            if line.strip():
                out.append(line)
    return out


def records_with_value(lines, value):
    found = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and value in [v for v in rec.values() if isinstance(v, str)]:
            found.append(rec)
    return found


def run(args, timeout=15, env=None):
    e = dict(os.environ)
    e.pop("DROVER_ADMIN_TOKEN", None)
    if env:
        e.update(env)
    return subprocess.run([DROVER_BIN, *args], capture_output=True, timeout=timeout, env=e)


# ------------------------------------------------------------------ SIGTERM

def test_sigterm_exits_0_with_shutdown_line(tmp_path):
    s = Server(tmp_path).start()
    s.submit("x")
    n_before = len(s.log_records())
    rc = s.stop(timeout=20)
    assert rc == 0, s.log()[-2000:]
    after = s.log_records()[n_before:]
    assert any(re.search(r"shut|stop|drain|exit|bye", str(r.get("msg", "")), re.I)
               for r in after), f"no shutdown line after SIGTERM: {after}"


def test_sigint_exits_0(tmp_path):
    s = Server(tmp_path).start()
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(timeout=20) == 0
    s.proc = None


def test_readyz_and_new_requests_during_drain_keep_contract(tmp_path):
    # After SIGTERM the server finishes and exits 0; what it still answers is
    # either a normal answer or 503 shutting_down / draining.
    s = Server(tmp_path).start()
    s.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and s.proc.poll() is None:
        try:
            r = s.request("GET", "/readyz", token=None, timeout=2)
        except OSError:
            break
        assert r.status in (200, 503), r
        if r.status == 503:
            assert r.json == {"status": "draining"}, r
        time.sleep(0.02)
    assert s.proc.wait(timeout=20) == 0
    s.proc = None


def test_sigterm_ends_a_waiting_long_poll_promptly(tmp_path):
    # A worker parked in a long-poll claim must not hold the shutdown up: it
    # gets an answer ({"jobs": []} or 503 shutting_down) and drover exits 0.
    import threading
    s = Server(tmp_path).start()
    out = {}

    def claim():
        try:
            r = s.request("POST", "/v1/queues/idle/claim", {"worker": "w1", "wait_s": 30},
                          token="worker", timeout=40)
            out["r"] = r
        except OSError as e:
            out["exc"] = e
        out["t"] = time.monotonic()

    t = threading.Thread(target=claim, daemon=True)
    t.start()
    time.sleep(0.5)
    assert t.is_alive(), f"the claim did not wait: {out}"
    t0 = time.monotonic()
    rc = s.stop(timeout=30)
    took = time.monotonic() - t0
    t.join(timeout=40)
    assert rc == 0, s.log()[-2000:]
    assert took < 11, f"shutdown took {took:.1f}s with a long-poll waiting"
    assert "t" in out and out["t"] - t0 < 11, out
    if "r" in out:
        r = out["r"]
        assert (r.status == 200 and r.json == {"jobs": []}) or \
            (r.status == 503 and r.json.get("error") == "shutting_down"), r


# ------------------------------------------------------------------ event loop

@pytest.mark.parametrize("limit, loop", [(1024, "poll"), (2048, "epoll")])
def test_event_loop_follows_connection_limit(make_server, limit, loop):
    # Up to 1024 connections libmicrohttpd polls, above it uses epoll (ADR 18).
    # Both must carry what suspends a request: a long-poll claim woken by a
    # submit, and writes answered on a keep-alive connection, back to back.
    import http.client
    import threading
    s = make_server(f"[http]\nconnection_limit = {limit}\n")
    listening = [r for r in s.log_records() if r.get("msg") == "listening"]
    assert listening and listening[0].get("event_loop") == loop, listening

    woken = {}

    def claim():
        r = s.request("POST", "/v1/queues/loop/claim", {"worker": "w1", "wait_s": 10},
                      token="worker", timeout=20)
        woken["r"] = r
        woken["t"] = time.monotonic()

    t = threading.Thread(target=claim, daemon=True)
    t.start()
    time.sleep(0.3)
    assert t.is_alive(), woken
    job = s.submit("loop")
    sent = time.monotonic()
    t.join(timeout=15)
    assert not t.is_alive(), "the waiting claim was not woken"
    r = woken["r"]
    assert r.status == 200 and [j["id"] for j in r.json["jobs"]] == [job["id"]], r
    assert woken["t"] - sent < 2, woken["t"] - sent
    lease = r.json["jobs"][0]["lease"]["token"]

    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    try:
        def call(method, path, body, token):
            conn.request(method, path, body=json.dumps(body),
                         headers={"Authorization": "Bearer " + TOKENS[token],
                                  "Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())

        ids = []
        for i in range(20):
            status, body = call("POST", "/v1/jobs", {"queue": "loop", "payload": {"i": i}},
                                "submit")
            assert status == 202 and body["state"] == "queued", body
            ids.append(body["id"])
        status, body = call("POST", f"/v1/jobs/{job['id']}/complete", {"lease": lease}, "worker")
        assert status == 200 and body["state"] == "succeeded", body
        status, body = call("POST", "/v1/queues/loop/claim", {"worker": "w2", "max": 20},
                            "worker")
        assert status == 200 and [j["id"] for j in body["jobs"]] == ids, body
    finally:
        conn.close()


@pytest.mark.parametrize("limit", [1024, 2048], ids=["poll", "epoll"])
def test_clients_that_leave_before_their_reply(make_server, limit):
    # Submits whose clients hang up while the writer commits them: each is
    # stored or not, nothing of theirs is kept (the ASan run of the suite
    # reports leaks at exit), and the server goes on answering.
    import socket
    s = make_server(f"[http]\nconnection_limit = {limit}\n")
    body = json.dumps({"queue": "gone", "payload": {"n": 1}}).encode()
    request = (b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
               + TOKENS["submit"].encode() + b"\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    for _ in range(20):
        c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        c.sendall(request)
        c.close()
    time.sleep(0.3)
    job = s.submit("gone")
    r = s.request("GET", "/v1/jobs?queue=gone&limit=100", token="read")
    assert r.status == 200 and job["id"] in [j["id"] for j in r.json["jobs"]], r
    assert len(r.json["jobs"]) <= 21, r
    assert s.stop() == 0, s.log()[-4000:]


# ------------------------------------------------------------------ logs

def test_every_log_line_is_json_with_ts_level_msg(tmp_path):
    s = Server(tmp_path).start()
    s.submit("x")
    s.request("GET", "/v1/jobs", token="read")
    s.request("GET", "/nope", token="admin")
    s.request("POST", "/v1/jobs", raw=b"{bad", token="submit",
              headers={"Content-Type": "application/json"})
    s.request("GET", "/v1/jobs", token=None)
    s.request("GET", "/v1/jobs", token="read", headers={"X-Request-Id": 'quote"back\\slash'})
    assert s.stop() == 0
    lines = json_lines(s.log_path)
    assert lines, "nothing logged"
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            pytest.fail(f"log line is not JSON: {line[:300]!r}")
        assert isinstance(rec, dict), line
        assert isinstance(rec.get("ts"), str) and rec["ts"], line
        assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", rec["ts"]), line
        assert rec.get("level") in LEVELS, line
        assert isinstance(rec.get("msg"), str) and rec["msg"], line
    assert any(r.get("msg") == "listening" for r in map(json.loads, lines))


def test_request_log_lines_carry_the_sent_request_id(server):
    rid = "test-req.ABC_123-xyz"
    r = server.request("GET", "/v1/jobs", token="read", headers={"X-Request-Id": rid})
    assert r.status == 200
    assert r.headers.get("x-request-id") == rid
    recs = wait_for(lambda: records_with_value(json_lines(server.log_path), rid))
    assert recs, f"no log line carries request id {rid!r}:\n{server.log()[-2000:]}"
    # an error request is logged with its id too
    rid2 = "err-req-0001"
    r = server.request("GET", "/v1/jobs/123", token="read", headers={"X-Request-Id": rid2})
    assert r.status == 400 and r.headers.get("x-request-id") == rid2
    assert wait_for(lambda: records_with_value(json_lines(server.log_path), rid2)), \
        server.log()[-2000:]


def test_every_response_has_a_request_id(server):
    seen = set()
    for method, path, token in (("GET", "/healthz", None), ("GET", "/readyz", None),
                                ("GET", "/v1/jobs", "read"), ("GET", "/v1/jobs", None),
                                ("GET", "/nope", "admin"), ("DELETE", "/v1/jobs", "admin"),
                                ("GET", "/v1/jobs/123", "admin")):
        r = server.request(method, path, token=token)
        rid = r.headers.get("x-request-id", "")
        assert REQUEST_ID_RE.match(rid), (method, path, r.headers)
        seen.add(rid)
    assert len(seen) == 7, "request ids must differ between requests"


def test_insane_request_ids_are_replaced(server):
    for bad in ("x" * 65, "has space", "semi;colon", "<script>", "ü-id", ""):
        r = server.request("GET", "/healthz", token=None, headers={"X-Request-Id": bad})
        rid = r.headers.get("x-request-id", "")
        assert rid != bad and REQUEST_ID_RE.match(rid), (bad, rid)
    r = server.request("GET", "/healthz", token=None, headers={"X-Request-Id": "a" * 64})
    assert r.headers.get("x-request-id") == "a" * 64


def test_sighup_reopens_log_file(tmp_path):
    s = Server(tmp_path)
    # The harness reads the "listening" line from s.log_path, so the log file
    # drover opens itself is that same path (both append).
    s.args += ["--set", f"log.file={s.log_path}"]
    s.start()
    try:
        r = s.request("GET", "/v1/jobs", token="read", headers={"X-Request-Id": "before-hup"})
        assert r.status == 200
        assert wait_for(lambda: records_with_value(json_lines(s.log_path), "before-hup"))
        rotated = tmp_path / "server.log.1"
        os.rename(s.log_path, rotated)
        s.proc.send_signal(signal.SIGHUP)

        def new_lines():
            s.request("GET", "/v1/jobs", token="read", headers={"X-Request-Id": "after-hup"})
            return records_with_value(json_lines(s.log_path), "after-hup")

        assert wait_for(new_lines, timeout=5, step=0.1), \
            f"no new log file with new lines after SIGHUP; rotated has:\n" \
            f"{rotated.read_text(errors='replace')[-1500:]}"
        assert s.proc.poll() is None, "SIGHUP killed the server"
        assert records_with_value(json_lines(rotated), "before-hup")
        for line in json_lines(s.log_path):
            rec = json.loads(line)
            assert {"ts", "level", "msg"} <= set(rec), line
    finally:
        if s.proc is not None:
            assert s.stop() == 0


# ------------------------------------------------------------- check-config

def test_check_config_good(tmp_path):
    conf = tmp_path / "good.conf"
    conf.write_text(config_text("[http]\nmax_body_bytes = 4096\n"))
    p = run(["serve", "--check-config", "--config", str(conf), "--data", str(tmp_path / "d")])
    assert p.returncode == 0, (p.stdout, p.stderr)


@pytest.mark.parametrize("extra,field", [
    ("[http]\nmax_body_bytes = 12\n", "max_body_bytes"),
    ("[http]\nmax_body_bytes = lots\n", "max_body_bytes"),
    ("[http]\nmax_header_bytes = 999999999\n", "max_header_bytes"),
    ("[http]\nno_such_field = 1\n", "no_such_field"),
    ("[log]\nlevel = chatty\n", "level"),
    ("[server]\nthreads = 0\n", "threads"),
    ("[outbound]\nallow_target = 10.0.0.1/8\n", "allow_target"),
    ("[outbound]\nallow_target = example.com\n", "allow_target"),
    ("[outbound]\nmax_host_connections = 0\n", "max_host_connections"),
    ("[outbound]\ntimeout_ms = 15s\n", "timeout_ms"),
])
def test_check_config_bad_names_the_field(tmp_path, extra, field):
    conf = tmp_path / "bad.conf"
    conf.write_text(config_text(extra))
    p = run(["serve", "--check-config", "--config", str(conf), "--data", str(tmp_path / "d")])
    assert p.returncode != 0, (p.stdout, p.stderr)
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert field in out, out


def test_check_config_bad_env_and_flag_name_the_field(tmp_path):
    conf = tmp_path / "good.conf"
    conf.write_text(config_text())
    p = run(["serve", "--check-config", "--config", str(conf)],
            env={"DROVER_HTTP_MAX_BODY_BYTES": "12"})
    assert p.returncode != 0, (p.stdout, p.stderr)
    assert b"max_body_bytes" in p.stdout + p.stderr or \
        b"DROVER_HTTP_MAX_BODY_BYTES" in p.stdout + p.stderr, p
    p = run(["serve", "--check-config", "--config", str(conf), "--set", "http.nonsense=1"])
    assert p.returncode != 0, (p.stdout, p.stderr)
    assert b"nonsense" in p.stdout + p.stderr, p
    p = run(["serve", "--check-config", "--config", str(conf), "--set",
             "http.max_header_bytes=70000"])
    assert p.returncode != 0, (p.stdout, p.stderr)
    assert b"max_header_bytes" in p.stdout + p.stderr, p


def test_check_config_allow_target_flag(tmp_path):
    conf = tmp_path / "good.conf"
    conf.write_text(config_text("[outbound]\nallow_target = 10.0.0.0/8\n"))
    p = run(["serve", "--check-config", "--config", str(conf),
             "--allow-target", "127.0.0.0/8", "--allow-target", "::1"])
    assert p.returncode == 0, (p.stdout, p.stderr)
    p = run(["serve", "--check-config", "--config", str(conf), "--allow-target", "127.0.0.1/8"])
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert b"--allow-target: outbound.allow_target: '127.0.0.1/8' has bits set past the " \
        b"prefix; did you mean '127.0.0.0/8'" in p.stderr, p.stderr
    p = run(["serve", "--check-config", "--config", str(conf)],
            env={"DROVER_ALLOW_TARGET": "127.0.0.0/8, fe80::1%eth0"})
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert b"DROVER_ALLOW_TARGET: 'fe80::1%eth0' is not an IP address" in p.stderr, p.stderr


def test_check_config_missing_file(tmp_path):
    p = run(["serve", "--check-config", "--config", str(tmp_path / "nope.conf")])
    assert p.returncode != 0
    assert (p.stdout + p.stderr).strip()


def test_serve_refuses_bad_config(tmp_path):
    s = Server(tmp_path, config_extra="[http]\nmax_body_bytes = 12\n")
    with pytest.raises(RuntimeError, match="exited"):
        s.start()
    assert "max_body_bytes" in s.log()


def test_serve_help(tmp_path):
    p = run(["serve", "--help"])
    assert p.returncode == 0, p
    out = (p.stdout + p.stderr).decode(errors="replace")
    for flag in ("--listen", "--data", "--config", "--check-config"):
        assert flag in out, (flag, out)


# ------------------------------------------------------------- data dir lock

def test_second_server_on_same_data_dir_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Server(tmp_path / "a").start()
    b = Server(tmp_path / "b")
    b.data_dir = a.data_dir
    try:
        job = a.submit("x")
        with pytest.raises(RuntimeError, match="exited"):
            b.start()
        assert b.proc.returncode != 0
        assert b.log().strip(), "refused without a word"
        # the first server is unharmed
        assert a.get_job(job["id"])["state"] == "queued"
        a.submit("y")
    finally:
        if b.proc is not None and b.proc.poll() is None:
            b.stop()
        assert a.stop() == 0
    # once the first one stopped, a new one may use the directory
    (tmp_path / "c").mkdir()
    c = Server(tmp_path / "c")
    c.data_dir = a.data_dir
    c.start()
    try:
        assert c.get_job(job["id"])["queue"] == "x"
    finally:
        assert c.stop() == 0
