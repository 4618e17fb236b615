"""Artifacts: PUT /v1/jobs/{id}/artifacts/{name} by the job's worker (bearer
token + X-Drover-Lease) or its runner (signed like a callback), GET the list
and the bytes (docs/api.md "Artifacts"; docs/adr/0013-artifacts.md).

Covered: a binary round trip of a few MiB (NULs included, bigger than
http.max_body_bytes) with its content type, ETag and sha256; replacing;
bad names; the size cap (declared and chunked); wrong, stale and missing
leases; missing and wrong tokens and roles; signed runner uploads with the
queue's secret and an attempt's token, and bad signatures; unknown jobs and
artifacts; the list; kill -9 right after a 2xx, then restart; concurrent
replaces; `drover worker` uploading its command's output; the job.succeeded
webhook carrying the artifacts, small ones inline (base64) and larger ones
as URLs that serve the same bytes (docs/api.md "Events and webhooks").
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import (
    DROVER_BIN,
    TOKENS,
    UNKNOWN_ID,
    assert_error,
    claim_one,
    job_events,
    lease_call,
    put_queue,
    run_threads,
    ts_parse,
)
from webhook_receiver import server_secret
from webhook_sig import sw_verify

MiB = 1024 * 1024


# ------------------------------------------------------------------ helpers


def put_artifact(server, job_id, name, data, lease=None, token="worker",
                 content_type="application/octet-stream", headers=None):
    h = {}
    if content_type is not None:
        h["Content-Type"] = content_type
    if lease is not None:
        h["X-Drover-Lease"] = lease
    if headers:
        h.update(headers)
    return server.request("PUT", f"/v1/jobs/{job_id}/artifacts/{name}", raw=data, token=token,
                          headers=h, timeout=30)


def get_artifact(server, job_id, name, token="read"):
    return server.request("GET", f"/v1/jobs/{job_id}/artifacts/{name}", token=token, timeout=30)


def list_artifacts(server, job_id, token="read"):
    r = server.request("GET", f"/v1/jobs/{job_id}/artifacts", token=token)
    assert r.status == 200, r
    return r.json["artifacts"]


def running_job(server, queue="art"):
    """A job claimed by a worker: (job id, lease token)."""
    sub = server.submit(queue)
    job = claim_one(server, queue)
    assert job["id"] == sub["id"], job
    return job["id"], job["lease"]["token"]


def job_files(server, job_id):
    d = server.data_dir / "artifacts" / job_id
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def blob(n, seed=b"drover"):
    """n bytes of binary data with NULs and every byte value in it."""
    out = bytearray(bytes(range(256)) + b"\x00" * 64)
    block = seed
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


# Runner signatures, as docs/api.md "POST /v1/callbacks/{id}" specifies.

def new_secret():
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def sw_key(secret):
    return base64.b64decode(secret[len("whsec_"):])


def callback_token(secret, job_id, attempt):
    mac = hmac.new(sw_key(secret), f"drover-callback:{job_id}:{attempt}".encode(),
                   hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(mac).decode()


def sw_headers(secret, body, msg_id="msg_art_1", ts=None):
    ts = int(time.time()) if ts is None else ts
    mac = hmac.new(sw_key(secret), f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts),
            "webhook-signature": "v1," + base64.b64encode(mac).decode()}


def drover_headers(secret, body, ts=None):
    ts = int(time.time()) if ts is None else ts
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Drover-Timestamp": str(ts), "X-Drover-Signature": "sha256=" + sig}


def http_queue(server, name, secret):
    """An http-mode queue whose dispatches go nowhere (a closed loopback port):
    its jobs sit at attempt 1, waiting for their dispatch, for a while."""
    put_queue(server, name, mode="http", callback_secret=secret,
              dispatch={"url": "http://127.0.0.1:9/run/{{job.id}}", "body": {}},
              timeout_s=600)


# ------------------------------------------------------------------ round trips


def test_binary_round_trip_bigger_than_the_json_body_cap(server):
    job_id, lease = running_job(server)
    data = blob(3 * MiB + 17)  # over http.max_body_bytes (1 MiB): artifacts have their own cap
    assert b"\x00" in data
    r = put_artifact(server, job_id, "inventory.bin", data, lease,
                     content_type="application/x-drover-test")
    assert r.status == 201, r
    sha = hashlib.sha256(data).hexdigest()
    a = r.json
    assert a["name"] == "inventory.bin" and a["size"] == len(data) and a["sha256"] == sha
    assert a["content_type"] == "application/x-drover-test"
    assert a["url"] == f"/v1/jobs/{job_id}/artifacts/inventory.bin"
    assert abs(ts_parse(a["created_at"]) - time.time()) < 60

    g = get_artifact(server, job_id, "inventory.bin")
    assert g.status == 200
    assert g.body == data
    assert g.headers["content-type"] == "application/x-drover-test"
    assert int(g.headers["content-length"]) == len(data)
    assert g.headers["etag"] == f'"{sha}"'
    assert g.headers["x-content-type-options"] == "nosniff"

    listed = list_artifacts(server, job_id)
    assert listed == [a]
    # Any role that reads may download.
    for role in ("admin", "submit", "worker"):
        assert get_artifact(server, job_id, "inventory.bin", token=role).body == data


def test_content_types_are_kept_and_default_to_octet_stream(server):
    job_id, lease = running_job(server)
    cases = {"log.txt": "text/plain; charset=utf-8", "result.json": "application/json",
             "page.html": "text/html", "raw": None}
    for name, ctype in cases.items():
        r = put_artifact(server, job_id, name, b"x" * 10, lease, content_type=ctype)
        assert r.status == 201, (name, r)
    for name, ctype in cases.items():
        g = get_artifact(server, job_id, name)
        assert g.status == 200 and g.body == b"x" * 10
        assert g.headers["content-type"] == (ctype or "application/octet-stream"), name
    # A JSON artifact is stored as bytes, not parsed: malformed JSON is fine.
    r = put_artifact(server, job_id, "broken.json", b"{not json", lease,
                     content_type="application/json")
    assert r.status == 201, r
    assert get_artifact(server, job_id, "broken.json").body == b"{not json"


def test_empty_artifact(server):
    job_id, lease = running_job(server)
    r = put_artifact(server, job_id, "empty", b"", lease)
    assert r.status == 201, r
    assert r.json["size"] == 0 and r.json["sha256"] == hashlib.sha256(b"").hexdigest()
    g = get_artifact(server, job_id, "empty")
    assert g.status == 200 and g.body == b"" and g.headers["content-length"] == "0"


def test_replace_keeps_one_row_and_one_file(server):
    job_id, lease = running_job(server)
    r1 = put_artifact(server, job_id, "completion", b"first", lease, content_type="text/plain")
    assert r1.status == 201, r1
    r2 = put_artifact(server, job_id, "completion", b"second, longer", lease,
                      content_type="application/octet-stream")
    assert r2.status == 200, r2
    assert r2.json["size"] == len(b"second, longer")
    assert r2.json["sha256"] == hashlib.sha256(b"second, longer").hexdigest()
    g = get_artifact(server, job_id, "completion")
    assert g.body == b"second, longer"
    assert g.headers["content-type"] == "application/octet-stream"
    assert [a["name"] for a in list_artifacts(server, job_id)] == ["completion"]
    assert len(job_files(server, job_id)) == 1, job_files(server, job_id)


def test_concurrent_replaces_end_consistent(server):
    job_id, lease = running_job(server)
    bodies = [blob(64 * 1024 + i, seed=bytes([i])) for i in range(8)]

    def put(i):
        return put_artifact(server, job_id, "race", bodies[i], lease).status

    statuses = run_threads(8, put)
    assert sorted(statuses) == [200] * 7 + [201], statuses
    g = get_artifact(server, job_id, "race")
    assert g.body in bodies
    assert g.headers["etag"] == '"%s"' % hashlib.sha256(g.body).hexdigest()
    assert len(job_files(server, job_id)) == 1, job_files(server, job_id)


def test_list_is_sorted_by_name_and_empty_for_a_job_without_artifacts(server):
    job_id, lease = running_job(server)
    assert list_artifacts(server, job_id) == []
    for name in ("zeta", "Alpha", "beta.log", "_x", "0-first"):
        assert put_artifact(server, job_id, name, name.encode(), lease).status == 201
    listed = list_artifacts(server, job_id)
    assert [a["name"] for a in listed] == sorted(["zeta", "Alpha", "beta.log", "_x", "0-first"])
    for a in listed:
        assert set(a) == {"name", "size", "content_type", "sha256", "created_at", "url"}
        assert a["size"] == len(a["name"])


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize("name", [
    ".hidden", "..", "a%2Fb", "a%20b", "x" * 129, "caf%C3%A9", "a:b", "semi%3Bcolon", "a%00b",
])
def test_bad_names_are_400_and_change_nothing(server, name):
    # A NUL never makes it past the router: no route (404) rather than 400.
    status, code = (404, "not_found") if "%00" in name else (400, "bad_request")
    job_id, lease = running_job(server)
    r = put_artifact(server, job_id, name, b"data", lease)
    assert_error(r, status, code)
    assert list_artifacts(server, job_id) == []
    assert job_files(server, job_id) == []
    assert_error(get_artifact(server, job_id, name), status, code)


def test_longest_name_is_fine(server):
    job_id, lease = running_job(server)
    name = "n" * 128
    assert put_artifact(server, job_id, name, b"ok", lease).status == 201
    assert get_artifact(server, job_id, name).body == b"ok"


def test_size_cap_is_413_with_the_limit(make_server):
    s = make_server(config_extra="[artifacts]\nmax_bytes = 64KiB\n")
    job_id, lease = running_job(s)
    r = put_artifact(s, job_id, "big", b"\x01" * (64 * 1024 + 1), lease)
    body = assert_error(r, 413, "payload_too_large")
    assert body["max_bytes"] == 64 * 1024
    # Chunked, so the server only learns the size as the bytes arrive.
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    try:
        conn.putrequest("PUT", f"/v1/jobs/{job_id}/artifacts/big")
        conn.putheader("Authorization", "Bearer " + TOKENS["worker"])
        conn.putheader("X-Drover-Lease", lease)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for _ in range(5):
            conn.send(b"4000\r\n" + b"\x02" * 0x4000 + b"\r\n")
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        assert resp.status == 413, resp.status
        assert json.loads(resp.read())["max_bytes"] == 64 * 1024
    finally:
        conn.close()
    assert list_artifacts(s, job_id) == []
    assert job_files(s, job_id) == []
    # Exactly the cap is fine.
    assert put_artifact(s, job_id, "big", b"\x03" * (64 * 1024), lease).status == 201


def test_wrong_stale_and_missing_leases(server):
    job_id, lease = running_job(server)
    for bad in ("0" * 32, lease[:-1] + ("0" if lease[-1] != "0" else "1"), "short", "x" * 200):
        r = put_artifact(server, job_id, "out", b"data", bad)
        assert_error(r, 409, "lease_lost")
    r = put_artifact(server, job_id, "out", b"data", None)
    assert_error(r, 400, "bad_request")
    # The lease of an attempt that ended is stale.
    assert lease_call(server, job_id, "complete", lease).status == 200
    r = put_artifact(server, job_id, "out", b"data", lease)
    assert_error(r, 409, "lease_lost")
    assert list_artifacts(server, job_id) == []
    assert job_files(server, job_id) == []
    # A lease of another job is no lease for this one.
    other_id, other_lease = running_job(server)
    sub = server.submit("art")
    r = put_artifact(server, sub["id"], "out", b"data", other_lease)
    assert_error(r, 409, "lease_lost")


def test_tokens_and_roles(server):
    job_id, lease = running_job(server)
    # No token at all (and no signature): 401 before anything is judged.
    for path_id in (job_id, "not-a-ulid"):
        r = put_artifact(server, path_id, "out", b"data", lease, token=None)
        assert_error(r, 401, "unauthorized")
        assert r.headers.get("www-authenticate", "").lower().startswith("bearer")
    r = put_artifact(server, job_id, "out", b"data", lease, token="garbage-token-0123456789")
    assert_error(r, 401, "unauthorized")
    for role in ("read", "submit"):
        assert_error(put_artifact(server, job_id, "out", b"data", lease, token=role), 403,
                     "forbidden")
    assert_error(server.request("GET", f"/v1/jobs/{job_id}/artifacts", token=None), 401,
                 "unauthorized")
    assert_error(get_artifact(server, job_id, "out", token=None), 401, "unauthorized")
    assert list_artifacts(server, job_id) == []
    # The worker and the admin may, with the lease.
    assert put_artifact(server, job_id, "out", b"w", lease, token="worker").status == 201
    assert put_artifact(server, job_id, "out", b"a", lease, token="admin").status == 200


def test_unknown_job_and_artifact_are_404(server):
    r = put_artifact(server, UNKNOWN_ID, "out", b"data", "0" * 32)
    assert_error(r, 404, "not_found")
    assert_error(server.request("GET", f"/v1/jobs/{UNKNOWN_ID}/artifacts", token="read"), 404,
                 "not_found")
    assert_error(get_artifact(server, UNKNOWN_ID, "out"), 404, "not_found")
    job_id, _ = running_job(server)
    assert_error(get_artifact(server, job_id, "nothing-here"), 404, "not_found")
    assert_error(server.request("GET", "/v1/jobs/not-a-ulid/artifacts", token="read"), 400,
                 "bad_request")
    assert not (server.data_dir / "artifacts" / UNKNOWN_ID).exists()


# ------------------------------------------------------------------ runners


def test_signed_runner_uploads(make_server):
    s = make_server(args=["--allow-target", "127.0.0.0/8"])
    secret = new_secret()
    http_queue(s, "runs", secret)
    job = s.submit("runs")
    job_id = job["id"]
    deadline = time.monotonic() + 10
    while s.get_job(job_id)["attempt"] != 1:
        assert time.monotonic() < deadline, s.get_job(job_id)
        time.sleep(0.05)

    # X-Drover-Signature with the queue's secret.
    data = blob(200 * 1024)
    r = put_artifact(s, job_id, "inventory", data, token=None, content_type="text/csv",
                     headers=drover_headers(secret, data))
    assert r.status == 201, r
    assert get_artifact(s, job_id, "inventory").body == data

    # Standard Webhooks with the attempt's callback token.
    token = callback_token(secret, job_id, 1)
    data2 = b"completion\x00bytes"
    r = put_artifact(s, job_id, "completion", data2, token=None,
                     headers=sw_headers(token, data2))
    assert r.status == 201, r
    assert get_artifact(s, job_id, "completion").body == data2

    refusals = [
        drover_headers(new_secret(), data2),                        # another secret
        drover_headers(secret, data2 + b"!"),                       # signed other bytes
        drover_headers(secret, data2, ts=int(time.time()) - 3600),  # too old
        sw_headers(callback_token(secret, job_id, 2), data2),       # a later attempt's token
        sw_headers(callback_token(secret, UNKNOWN_ID, 1), data2),   # another job's token
        {"webhook-signature": "v1,AAAA", "webhook-id": "x"},        # incomplete
    ]
    for headers in refusals:
        r = put_artifact(s, job_id, "evil", data2, token=None, headers=headers)
        assert_error(r, 401, "bad_signature")
    assert [a["name"] for a in list_artifacts(s, job_id)] == ["completion", "inventory"]
    assert sorted(f.split("@")[0] for f in job_files(s, job_id)) == ["completion", "inventory"]
    # A signed upload for an unknown job.
    r = put_artifact(s, UNKNOWN_ID, "x", data2, token=None, headers=drover_headers(secret, data2))
    assert_error(r, 404, "not_found")


def test_signature_on_a_pull_queue_is_refused(server):
    job_id, _ = running_job(server)
    r = put_artifact(server, job_id, "x", b"data", token=None,
                     headers=drover_headers(new_secret(), b"data"))
    assert_error(r, 401, "bad_signature")


# ------------------------------------------------------------------ durability


def test_kill_9_after_a_2xx_keeps_the_artifact(make_server):
    s = make_server()
    job_id, lease = running_job(s)
    data = blob(2 * MiB + 3, seed=b"kill")
    r = put_artifact(s, job_id, "state.tar", data, lease, content_type="application/x-tar")
    assert r.status == 201, r
    r2 = put_artifact(s, job_id, "small", b"tiny", lease)
    assert r2.status == 201, r2
    s.kill()
    s.start(listen=f"127.0.0.1:{s.port}")
    g = get_artifact(s, job_id, "state.tar")
    assert g.status == 200, g
    assert g.body == data
    assert g.headers["content-type"] == "application/x-tar"
    assert get_artifact(s, job_id, "small").body == b"tiny"
    assert {a["name"] for a in list_artifacts(s, job_id)} == {"state.tar", "small"}


# ------------------------------------------------------------------ drover worker


def worker_env(server):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROVER_")}
    env["DROVER_URL"] = server.url
    env["DROVER_TOKEN"] = TOKENS["worker"]
    return env


def run_worker_until(server, tmp_path, queue, script_body, job_id, *opts, timeout=20):
    script = tmp_path / "cmd.sh"
    script.write_text("#!/bin/sh\n" + script_body)
    script.chmod(0o755)
    err = open(tmp_path / "worker.err", "wb")
    p = subprocess.Popen([DROVER_BIN, "worker", queue, "--wait", "1", *opts, "--", str(script)],
                         stdout=subprocess.DEVNULL, stderr=err, env=worker_env(server))
    try:
        deadline = time.monotonic() + timeout
        while server.get_job(job_id)["state"] not in ("succeeded", "failed", "canceled"):
            assert time.monotonic() < deadline, (tmp_path / "worker.err").read_text()
            time.sleep(0.05)
    finally:
        p.terminate()
        p.wait(timeout=20)
        err.close()
    return server.get_job(job_id), (tmp_path / "worker.err").read_text()


def test_worker_uploads_the_command_output(server, tmp_path):
    job = server.submit("wout")
    done, log = run_worker_until(server, tmp_path, "wout", """
echo "hello from $DROVER_JOB_ID"
echo "::step built"
printf 'no newline at the end'
echo "to stderr" >&2
""", job["id"])
    assert done["state"] == "succeeded", (done, log)
    g = get_artifact(server, job["id"], "output")
    assert g.status == 200, (g, log)
    assert g.headers["content-type"] == "text/plain"
    assert g.body == (f"hello from {job['id']}\n::step built\nno newline at the end\n").encode()
    # Uploaded before the report, under the lease: the job ended after it.
    (a,) = list_artifacts(server, job["id"])
    assert ts_parse(a["created_at"]) <= ts_parse(done["updated_at"])


def test_worker_uploads_output_of_a_failing_command_too(server, tmp_path):
    job = server.submit("wfail")
    done, log = run_worker_until(server, tmp_path, "wfail", "echo partial work\nexit 3\n",
                                 job["id"])
    assert done["state"] == "failed", (done, log)
    assert get_artifact(server, job["id"], "output").body == b"partial work\n"


def test_worker_cuts_a_big_output_to_the_servers_cap_keeping_the_tail(make_server, tmp_path):
    s = make_server(config_extra="[artifacts]\nmax_bytes = 8KiB\n")
    job = s.submit("wbig")
    # 2,000 numbered lines of 8 bytes: 16,000 bytes, twice the cap.
    done, log = run_worker_until(s, tmp_path, "wbig",
                                 "i=0; while [ $i -lt 2000 ]; do printf 'l%06d\\n' $i; "
                                 "i=$((i+1)); done\n", job["id"])
    assert done["state"] == "succeeded", (done, log)
    body = get_artifact(s, job["id"], "output").body
    assert len(body) <= 8 * 1024
    assert body.endswith(b"l001999\n")
    assert b"l000000" not in body
    assert "output" in log and "last" in log, log


def test_worker_output_max_flag(server, tmp_path):
    job = server.submit("wflag")
    done, log = run_worker_until(server, tmp_path, "wflag", "echo 0123456789abcdef\n",
                                 job["id"], "--output-max", "4")
    assert done["state"] == "succeeded", (done, log)
    assert get_artifact(server, job["id"], "output").body == b"def\n"
    job2 = server.submit("wnone")
    done, log = run_worker_until(server, tmp_path, "wnone", "echo quiet\n", job2["id"],
                                 "--output-max", "0")
    assert done["state"] == "succeeded", (done, log)
    assert list_artifacts(server, job2["id"]) == []
    # Many lines through a small ring: it wraps around, again and again.
    job3 = server.submit("wring")
    done, log = run_worker_until(server, tmp_path, "wring",
                                 "i=0; while [ $i -lt 500 ]; do echo \"line $i\"; "
                                 "i=$((i+1)); done\n", job3["id"], "--output-max", "100")
    assert done["state"] == "succeeded", (done, log)
    full = "".join(f"line {i}\n" for i in range(500)).encode()
    assert get_artifact(server, job3["id"], "output").body == full[-100:]
    assert f"output was {len(full)} bytes; uploading its last 100" in log, log


def test_worker_help_and_usage_of_output_max():
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROVER_")}
    p = subprocess.run([DROVER_BIN, "worker", "--help"], capture_output=True, text=True,
                       env=env, timeout=10)
    assert p.returncode == 0, p.stderr
    for word in ("--output-max", '"output"', "artifacts.max_bytes"):
        assert word in p.stdout, word
    for bad in ("-1", "x", "268435457"):
        p = subprocess.run([DROVER_BIN, "worker", "q", "--output-max", bad, "--", "true"],
                           capture_output=True, text=True, env=env, timeout=10)
        assert p.returncode == 2 and "--output-max" in p.stderr, (bad, p.stderr)


# ------------------------------------------------------------------ the job.succeeded webhook

WEBHOOK_ARGS = ["--allow-target", "127.0.0.0/8"]  # the receiver is on loopback
EVENT_FIELDS = {"name", "size", "content_type", "sha256", "created_at"}


def succeeded_delivery(server, receiver, job_id):
    """The job.succeeded delivery of job_id, signed with the server's secret: its body."""
    (ev,) = [e for e in job_events(server, job_id) if e["type"] == "job.succeeded"]
    recs = receiver.wait_seqs(job_id, [ev["seq"]], timeout=10)
    (rec,) = [r for r in recs if r["seq"] == ev["seq"] and r["answer"] == 200]
    assert sw_verify(server_secret(server), rec["id"], rec["ts"], rec["body"], rec["sig"]), rec
    assert rec["json"]["type"] == "job.succeeded", rec["json"]
    return rec, rec["json"]["data"]["job"]


def fetch(url, token):
    """GET an absolute URL; (status, body)."""
    headers = {"Authorization": "Bearer " + TOKENS[token]} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_succeeded_webhook_carries_small_artifacts_inline_and_large_ones_as_urls(
        make_server, receiver):
    s = make_server(args=WEBHOOK_ARGS)
    put_queue(s, "art-hook", artifact_inline_max=1024)
    job = s.submit("art-hook", webhook_url=receiver.url + "/hooks/art")
    c = claim_one(s, "art-hook")
    assert c["id"] == job["id"], c
    job_id, lease = job["id"], c["lease"]["token"]
    small = blob(1000, seed=b"small")  # every byte value, NULs included
    large = blob(64 * 1024 + 1, seed=b"large")
    assert b"\x00" in small and len(small) <= 1024 < len(large)
    assert put_artifact(s, job_id, "completion", small, lease,
                        content_type="application/x-completion").status == 201
    assert put_artifact(s, job_id, "inventory.bin", large, lease).status == 201
    assert lease_call(s, job_id, "complete", lease, result={"ok": True}).status == 200

    rec, j = succeeded_delivery(s, receiver, job_id)
    assert j["result"] == {"ok": True}, j
    listed = {a["name"]: a for a in list_artifacts(s, job_id)}
    inline, by_url = j["artifacts"]  # by name
    # The small one: its bytes, base64, exactly.
    assert set(inline) == EVENT_FIELDS | {"content_base64"}, inline
    assert base64.b64decode(inline["content_base64"], validate=True) == small
    assert inline["name"] == "completion" and inline["size"] == len(small)
    assert inline["content_type"] == "application/x-completion"
    assert inline["sha256"] == hashlib.sha256(small).hexdigest()
    assert inline["created_at"] == listed["completion"]["created_at"]
    # The large one: an absolute URL on this server that serves the same bytes,
    # to a token (any role that reads), not without one.
    assert set(by_url) == EVENT_FIELDS | {"url"}, by_url
    assert by_url["name"] == "inventory.bin" and by_url["size"] == len(large)
    assert by_url["content_type"] == "application/octet-stream"
    assert by_url["sha256"] == hashlib.sha256(large).hexdigest()
    assert by_url["created_at"] == listed["inventory.bin"]["created_at"]
    assert by_url["url"] == f"{s.url}/v1/jobs/{job_id}/artifacts/inventory.bin", by_url
    assert fetch(by_url["url"], "read") == (200, large)
    assert fetch(by_url["url"], None)[0] == 401
    # Only job.succeeded carries them.
    for r in receiver.got(job_id=job_id):
        if r["type"] != "job.succeeded":
            assert "artifacts" not in r["json"]["data"]["job"], r["json"]


def test_succeeded_webhook_with_inline_max_0_and_a_public_url(make_server, receiver):
    s = make_server(args=WEBHOOK_ARGS,
                    config_extra="[server]\npublic_url = https://drover.example.com\n")
    put_queue(s, "art-urls", artifact_inline_max=0)
    job = s.submit("art-urls", webhook_url=receiver.url + "/hooks/urls")
    c = claim_one(s, "art-urls")
    lease = c["lease"]["token"]
    assert put_artifact(s, job["id"], "tiny", b"x", lease).status == 201
    assert put_artifact(s, job["id"], "empty", b"", lease).status == 201
    assert lease_call(s, job["id"], "complete", lease).status == 200
    _, j = succeeded_delivery(s, receiver, job["id"])
    assert [a["name"] for a in j["artifacts"]] == ["empty", "tiny"]
    for a in j["artifacts"]:
        assert set(a) == EVENT_FIELDS | {"url"}, a
        assert a["url"] == f"https://drover.example.com/v1/jobs/{job['id']}/artifacts/{a['name']}"
        # The same path on this server serves the bytes.
        g = get_artifact(s, job["id"], a["name"])
        assert g.status == 200 and len(g.body) == a["size"]


def test_succeeded_webhook_of_a_job_without_artifacts(make_server, receiver):
    s = make_server(args=WEBHOOK_ARGS)
    job = s.submit("art-none", webhook_url=receiver.url + "/hooks/none")
    c = claim_one(s, "art-none")
    assert lease_call(s, job["id"], "complete", c["lease"]["token"]).status == 200
    _, j = succeeded_delivery(s, receiver, job["id"])
    assert j["artifacts"] == [], j
