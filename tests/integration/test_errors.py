"""Every error status of docs/api.md with its JSON body, and the promise that
bad input changes nothing: after each refused request the job count is the
same and the server still answers."""

import json

import pytest

from conftest import (
    TOKENS,
    UNKNOWN_ID,
    assert_error,
    list_all_jobs,
    raw_exchange,
)

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def guarded(server):
    """The server with one job in it; check() asserts nothing changed."""
    job = server.submit("base", payload={"k": 1})

    def check():
        assert server.request("GET", "/healthz", token=None).status == 200
        jobs = list_all_jobs(server)
        assert [j["id"] for j in jobs] == [job["id"]], "a refused request changed the store"
        assert jobs[0]["state"] == "queued" and jobs[0]["seq"] == 1

    server.check = check
    server.base_job = job
    return server


def post_raw(server, body, headers=JSON, path="/v1/jobs", token="submit"):
    return server.request("POST", path, raw=body, token=token, headers=headers)


def head(method, path, headers, token="admin"):
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1",
             f"Authorization: Bearer {TOKENS[token]}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ------------------------------------------------------------------ 400 JSON

MALFORMED = [
    b"{",
    b'{"queue": "q",}',
    b'{"queue": "q"} trailing',
    b'{"queue": "q"}{"queue": "r"}',
    b"{'queue': 'q'}",
    b'{"queue": q}',
    b'{"queue": "q", "payload": {"a": NaN}}',
    b'{"queue": "q", "payload": {"a": 01}}',
    b'{"queue": "unterminated}',
    b'{"queue": "q\x01"}',  # raw control character inside a string
    b'{"queue": "q", "payload": {"a": "\\x"}}',  # bad escape
    b"nul",
]


def test_malformed_json(guarded):
    for body in MALFORMED:
        assert_error(post_raw(guarded, body), 400, "malformed_json")
    guarded.check()


INVALID_UTF8 = [
    b'{"queue": "q", "payload": {"s": "\xff\xfe"}}',
    b'{"queue": "q", "payload": {"s": "\xc0\xaf"}}',  # overlong '/'
    b'{"queue": "q", "payload": {"s": "\xed\xa0\x80"}}',  # encoded surrogate
    b'{"queue": "q", "payload": {"s": "\xe2\x82"}}',  # truncated sequence
    b'{"queue": "q", "payload": {"\xff": 1}}',  # in a key
    b'{"queue": "q\xf8\x88\x80\x80\x80"}',  # 5-byte form
]


def test_invalid_utf8_in_json_string(guarded):
    for body in INVALID_UTF8:
        assert_error(post_raw(guarded, body), 400, "malformed_json")
    guarded.check()


def test_non_object_body(guarded):
    for body in (b"[]", b'"queue"', b"42", b"null", b'[{"queue": "q"}]'):
        r = post_raw(guarded, body)
        assert_error(r, 400, {"invalid_field", "malformed_json", "bad_request"})
    guarded.check()


# ------------------------------------------------------------- 400 fields

BAD_FIELDS = [
    ({}, "queue"),
    ({"payload": {}}, "queue"),
    ({"queue": 5}, "queue"),
    ({"queue": None}, "queue"),
    ({"queue": ""}, "queue"),
    ({"queue": "x" * 65}, "queue"),
    ({"queue": "bad name"}, "queue"),
    ({"queue": "a/b"}, "queue"),
    ({"queue": "q\u00e9"}, "queue"),
    ({"queue": "q", "payload": [1, 2]}, "payload"),
    ({"queue": "q", "payload": "x"}, "payload"),
    ({"queue": "q", "payload": 3}, "payload"),
    ({"queue": "q", "lock_keys": "server:1"}, "lock_keys"),
    ({"queue": "q", "lock_keys": [1]}, "lock_keys"),
    ({"queue": "q", "lock_keys": ["ok", None]}, "lock_keys"),
    ({"queue": "q", "lock_keys": [""]}, "lock_keys"),
    ({"queue": "q", "lock_keys": ["x" * 201]}, "lock_keys"),
    ({"queue": "q", "lock_keys": ["k%d" % i for i in range(17)]}, "lock_keys"),
    ({"queue": "q", "lock_keys": {"a": "b"}}, "lock_keys"),
    ({"queue": "q", "dedup_key": ""}, "dedup_key"),
    ({"queue": "q", "dedup_key": "x" * 201}, "dedup_key"),
    ({"queue": "q", "dedup_key": 7}, "dedup_key"),
    ({"queue": "q", "concurrency_key": ["a"]}, "concurrency_key"),
    ({"queue": "q", "concurrency_key": ""}, "concurrency_key"),
    ({"queue": "q", "concurrency_key": "é" * 101}, "concurrency_key"),  # 202 bytes
    ({"queue": "q", "run_at": "tomorrow"}, "run_at"),
    ({"queue": "q", "run_at": "2030-13-45T99:00:00Z"}, "run_at"),
    ({"queue": "q", "run_at": True}, "run_at"),
    ({"queue": "q", "run_at": [1]}, "run_at"),
    ({"queue": "q", "webhook_url": "ftp://example.com/x"}, "webhook_url"),
    ({"queue": "q", "webhook_url": "not a url"}, "webhook_url"),
    ({"queue": "q", "webhook_url": 5}, "webhook_url"),
    ({"queue": "q", "webhook_url": "https://e.com/" + "x" * 2040}, "webhook_url"),
    ({"queue": "q", "colour": "blue"}, "colour"),
    ({"queue": "q", "state": "succeeded"}, "state"),
    ({"queue": "q", "id": UNKNOWN_ID}, "id"),
]


def test_invalid_fields_name_the_field(guarded):
    for body, field in BAD_FIELDS:
        r = guarded.request("POST", "/v1/jobs", body, token="submit")
        assert r.status == 400, (body, r)
        assert_error(r, 400, "invalid_field", field=field)
    guarded.check()


def test_field_limits_accepted_at_the_boundary(server):
    # Positive controls for the limits above (so the refusals are not blanket).
    ok = [
        {"queue": "x" * 64},
        {"queue": "A-z_0.9"},
        {"queue": "q", "lock_keys": ["k%d" % i for i in range(16)]},
        {"queue": "q", "lock_keys": ["x" * 200]},
        {"queue": "q", "dedup_key": "d" * 200},
        {"queue": "q", "concurrency_key": "é" * 100},
        {"queue": "q", "webhook_url": "http://e.com/" + "x" * 2000},
        {"queue": "q", "payload": {}},
    ]
    for body in ok:
        r = server.request("POST", "/v1/jobs", body, token="submit")
        assert r.status == 202, (body, r)
    assert len(list_all_jobs(server)) == len(ok)


def test_cancel_body_validation(guarded):
    jid = guarded.base_job["id"]
    r = guarded.request("POST", f"/v1/jobs/{jid}/cancel", {"reason": 5}, token="submit")
    assert_error(r, 400, "invalid_field", field="reason")
    r = guarded.request("POST", f"/v1/jobs/{jid}/cancel", {"why": "x"}, token="submit")
    assert_error(r, 400, "invalid_field", field="why")
    r = guarded.request("POST", f"/v1/jobs/{jid}/cancel", raw=b"{oops", token="submit",
                        headers=JSON)
    assert_error(r, 400, "malformed_json")
    guarded.check()


# ------------------------------------------------------- 400 ids and names

MALFORMED_IDS = [
    "123",
    "01ARZ3NDEKTSV4RRFFQ69G5FA",  # 25 characters
    "01ARZ3NDEKTSV4RRFFQ69G5FAVX",  # 27 characters
    "01ARZ3NDEKTSV4RRFFQ69G5FAU",  # U is not Crockford base32
    "01ARZ3NDEKTSV4RRFFQ69G5FA!",
    "81ARZ3NDEKTSV4RRFFQ69G5FAV",  # overflows 128 bits
    "not-a-ulid-at-all-00000000",
]


def test_malformed_job_id_400(guarded):
    for bad in MALFORMED_IDS:
        for method, path in (("GET", f"/v1/jobs/{bad}"),
                             ("GET", f"/v1/jobs/{bad}/events"),
                             ("POST", f"/v1/jobs/{bad}/cancel")):
            r = guarded.request(method, path, token="admin")
            assert_error(r, 400, "bad_request")
    guarded.check()


def test_unknown_well_formed_id_404(guarded):
    for method, path in (("GET", f"/v1/jobs/{UNKNOWN_ID}"),
                         ("GET", f"/v1/jobs/{UNKNOWN_ID}/events"),
                         ("POST", f"/v1/jobs/{UNKNOWN_ID}/cancel")):
        assert_error(guarded.request(method, path, token="admin"), 404, "not_found")
    guarded.check()


def test_bad_queue_name_in_path(guarded):
    for name in ("bad%20name", "x" * 65, "%C3%A9", "a%21"):
        for method, body in (("GET", None), ("PUT", {"max_attempts": 2})):
            r = guarded.request(method, f"/v1/queues/{name}", body, token="admin")
            assert_error(r, 400, {"bad_request", "invalid_field"})
    # An encoded slash may be read as another path (404) or as a bad name (400).
    r = guarded.request("PUT", "/v1/queues/q%2Fr", {"max_attempts": 2}, token="admin")
    assert r.status in (400, 404), r
    assert_error(r, r.status, {"bad_request", "invalid_field", "not_found"})
    guarded.check()


def test_bad_query_parameters(guarded):
    for qs in ("limit=0", "limit=501", "limit=ten", "state=bogus"):
        assert_error(guarded.request("GET", "/v1/jobs?" + qs, token="read"), 400, "bad_request")
    guarded.check()


# ---------------------------------------------------------- 404, 405

def test_unknown_route_404(guarded):
    for method, path in (("GET", "/v1/nope"), ("GET", "/v2/jobs"), ("POST", "/v1/nope"),
                         ("GET", f"/v1/jobs/{UNKNOWN_ID}/nope"), ("GET", "/nope"),
                         ("GET", "/v1"), ("GET", "/V1/JOBS"),
                         ("GET", "/v1/queues/q/extra/parts")):
        assert_error(guarded.request(method, path, token="admin"), 404, "not_found")
    guarded.check()


WRONG_METHODS = [
    ("DELETE", "/v1/jobs", {"GET", "POST"}),
    ("PUT", "/v1/jobs", {"GET", "POST"}),
    ("PATCH", f"/v1/jobs/{UNKNOWN_ID}", {"GET"}),
    ("DELETE", f"/v1/jobs/{UNKNOWN_ID}", {"GET"}),
    ("POST", f"/v1/jobs/{UNKNOWN_ID}/events", {"GET"}),
    ("GET", f"/v1/jobs/{UNKNOWN_ID}/cancel", {"POST"}),
    ("POST", "/v1/queues/q", {"GET", "PUT"}),
    ("DELETE", "/v1/queues/q", {"GET", "PUT"}),
    ("GET", f"/v1/jobs/{UNKNOWN_ID}/retry", {"POST"}),
    ("GET", f"/v1/jobs/{UNKNOWN_ID}/heartbeat", {"POST"}),
    ("PUT", f"/v1/jobs/{UNKNOWN_ID}/steps", {"POST"}),
    ("GET", f"/v1/jobs/{UNKNOWN_ID}/complete", {"POST"}),
    ("DELETE", f"/v1/jobs/{UNKNOWN_ID}/fail", {"POST"}),
    ("GET", "/v1/queues/q/claim", {"POST"}),
    ("POST", "/healthz", {"GET"}),
    ("DELETE", "/readyz", {"GET"}),
]


def test_wrong_method_405_with_allow(guarded):
    for method, path, allowed in WRONG_METHODS:
        r = guarded.request(method, path, token="admin")
        assert_error(r, 405, "method_not_allowed")
        allow = {m.strip().upper() for m in r.headers.get("allow", "").split(",") if m.strip()}
        assert allowed <= allow, (method, path, r.headers.get("allow"))
        assert method not in allow, (method, path, r.headers.get("allow"))
    guarded.check()


# -------------------------------------------------------------------- 409

def test_illegal_transition_409(guarded):
    job = guarded.submit("x")
    assert guarded.request("POST", f"/v1/jobs/{job['id']}/cancel", token="submit").status == 200
    r = guarded.request("POST", f"/v1/jobs/{job['id']}/cancel", token="submit")
    assert_error(r, 409, "illegal_transition")
    assert guarded.get_job(job["id"])["state"] == "canceled"


# -------------------------------------------------------------- 401 / 403

def test_401_and_403_bodies(guarded):
    r = guarded.request("POST", "/v1/jobs", {"queue": "q"}, token=None)
    assert_error(r, 401, "unauthorized")
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer")
    r = guarded.request("POST", "/v1/jobs", {"queue": "q"}, token="read")
    assert_error(r, 403, "forbidden")
    guarded.check()


# -------------------------------------------------------------------- 413

SMALL = "[http]\nmax_body_bytes = 4096\n"


def job_body(size):
    """A valid submit body of exactly size bytes."""
    base = json.dumps({"queue": "big", "payload": {"pad": ""}}).encode()
    return json.dumps({"queue": "big", "payload": {"pad": "x" * (size - len(base))}}).encode()


def test_413_with_content_length(make_server):
    s = make_server(SMALL)
    r = s.request("POST", "/v1/jobs", raw=job_body(4096), token="submit", headers=JSON)
    assert r.status == 202, f"a body of exactly max_body_bytes must be accepted: {r!r}"
    for size in (4097, 6000, 100_000):
        r = s.request("POST", "/v1/jobs", raw=job_body(size), token="submit", headers=JSON)
        assert_error(r, 413, "payload_too_large")
    # PUT a queue policy too
    big_policy = json.dumps({"steps": ["s" * 100] * 60}).encode()
    assert len(big_policy) > 4096
    r = s.request("PUT", "/v1/queues/q", raw=big_policy, token="admin", headers=JSON)
    assert_error(r, 413, "payload_too_large")
    assert len(list_all_jobs(s)) == 1
    assert s.request("GET", "/healthz", token=None).status == 200


def test_413_declared_length_answered_without_the_body(make_server):
    s = make_server(SMALL)
    r = raw_exchange(s, head("POST", "/v1/jobs", [("Content-Type", "application/json"),
                                                  ("Content-Length", "100000000")],
                             token="submit"), timeout=5)
    assert r is not None, "no answer to a declared 100 MB body"
    assert_error(r, 413, "payload_too_large")
    assert list_all_jobs(s) == []
    assert s.request("GET", "/healthz", token=None).status == 200


def chunked(body, size=1000):
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
             for i in range(0, len(body), size)]
    return parts + [b"0\r\n\r\n"]


def test_413_with_chunked_transfer_encoding(make_server):
    s = make_server(SMALL)
    h = head("POST", "/v1/jobs", [("Content-Type", "application/json"),
                                  ("Transfer-Encoding", "chunked")], token="submit")
    # positive control: a chunked body under the limit is a normal submit
    r = raw_exchange(s, h, chunked(job_body(3000)))
    assert r is not None and r.status == 202, r
    for size in (4097, 20_000):
        r = raw_exchange(s, h, chunked(job_body(size)))
        assert r is not None, f"no answer to a chunked body of {size} bytes"
        assert_error(r, 413, "payload_too_large")
    jobs = list_all_jobs(s)
    assert len(jobs) == 1 and len(jobs[0]["payload"]["pad"]) > 2900
    assert s.request("GET", "/healthz", token=None).status == 200


# -------------------------------------------------------------------- 415

def test_415_not_json(guarded):
    body = json.dumps({"queue": "q"}).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/xml",
                  "application/jsonx"):
        r = post_raw(guarded, body, headers={"Content-Type": ctype})
        assert_error(r, 415, "unsupported_media_type")
    r = guarded.request("PUT", "/v1/queues/q", raw=b'{"max_attempts": 2}', token="admin",
                        headers={"Content-Type": "text/plain"})
    assert_error(r, 415, "unsupported_media_type")
    guarded.check()
    # positive control: parameters on the media type are fine
    r = post_raw(guarded, body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status == 202, r


# -------------------------------------------------------------------- 431

def test_431_huge_header(guarded):
    # Over the default limit (8 KiB) but within what MHD buffers: drover's JSON 431.
    r = guarded.request("GET", "/v1/jobs", token="read",
                        headers={"Cookie": "c=" + "x" * 12 * 1024})
    assert_error(r, 431, "header_fields_too_large")
    r = guarded.request("POST", "/v1/jobs", {"queue": "q"}, token="submit",
                        headers={"X-Filler": "y" * 12 * 1024})
    assert_error(r, 431, "header_fields_too_large")
    # many small headers adding up over the limit
    many = {f"X-H{i}": "z" * 200 for i in range(60)}
    r = guarded.request("GET", "/v1/jobs", token="read", headers=many)
    assert_error(r, 431, "header_fields_too_large")
    guarded.check()
    # positive control: a 4 KiB cookie is fine
    r = guarded.request("GET", "/v1/jobs", token="read", headers={"Cookie": "c=" + "x" * 4096})
    assert r.status == 200, r


def test_431_header_past_the_buffer(guarded):
    # Far past the limit, the header overflows MHD's connection buffer and MHD
    # refuses it itself with 431 and closes. The close can reach the client as
    # a reset while it is still sending (the rest of its header is unread), so
    # a reset is a refusal too; either way nothing changes and the server
    # still answers.
    before = guarded.request("GET", "/v1/jobs?limit=500", token="read").json["jobs"]
    try:
        r = guarded.request("POST", "/v1/jobs", {"queue": "q"}, token="submit",
                            headers={"X-Filler": "y" * 100 * 1024})
        assert r.status == 431, r
    except (ConnectionResetError, BrokenPipeError):
        pass
    after = guarded.request("GET", "/v1/jobs?limit=500", token="read").json["jobs"]
    assert before == after


# ------------------------------------------- duplicate / conflicting lengths

def test_duplicate_content_length_400(guarded):
    body = json.dumps({"queue": "dup"}).encode()
    n = len(body)
    cases = [
        [("Content-Length", str(n)), ("Content-Length", str(n))],
        [("Content-Length", str(n)), ("Content-Length", str(n + 5))],
        [("Content-Length", str(n + 5)), ("Content-Length", str(n))],
    ]
    for lengths in cases:
        h = head("POST", "/v1/jobs", [("Content-Type", "application/json"), *lengths],
                 token="submit")
        r = raw_exchange(guarded, h, [body + b"     "])
        assert r is not None, f"no answer for {lengths}"
        assert_error(r, 400, "bad_request")
    guarded.check()
    # positive control: a single Content-Length over the same raw path works
    h = head("POST", "/v1/jobs", [("Content-Type", "application/json"),
                                  ("Content-Length", str(n))], token="submit")
    r = raw_exchange(guarded, h, [body])
    assert r is not None and r.status == 202, r


def test_server_still_answers_after_garbage(guarded):
    for junk in (b"\x00\x01\x02\r\n\r\n", b"GET\r\n\r\n", b"HELLO / HTTP/9.9\r\n\r\n",
                 b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n"):
        r = raw_exchange(guarded, junk, timeout=3)
        if r is not None:
            assert 400 <= r.status < 600, r
    guarded.check()


# ------------------------------------------------------- Expect: 100-continue

def test_expect_100_continue(make_server):
    # curl sends "Expect: 100-continue" before bodies over 1 KiB.
    s = make_server(SMALL)
    body = job_body(2000)
    h = head("POST", "/v1/jobs", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body))),
                                  ("Expect", "100-continue")], token="submit")
    sock = __import__("socket").create_connection(("127.0.0.1", s.port), timeout=5)
    try:
        sock.sendall(h)
        interim = sock.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(body)
        buf = interim.split(b"\r\n\r\n", 1)[1]
        from conftest import parse_http_response
        for _ in range(100):
            r, done = parse_http_response(buf)
            if done:
                break
            c = sock.recv(65536)
            if not c:
                break
            buf += c
        assert r is not None and r.status == 202, (buf[:300])
    finally:
        sock.close()
    # over the limit: refused at once, without asking for the body
    h = head("POST", "/v1/jobs", [("Content-Type", "application/json"),
                                  ("Content-Length", "5000"),
                                  ("Expect", "100-continue")], token="submit")
    r = raw_exchange(s, h, timeout=5)
    assert r is not None, "no answer"
    assert_error(r, 413, "payload_too_large")
    assert len(list_all_jobs(s)) == 1


# ------------------------------------------------------------ hostile JSON

def _plain(server, method, path, body=None, token="submit"):
    """(status, body bytes) without parsing JSON (Python's parser would hit
    its recursion limit on the bodies below)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={
            "Authorization": "Bearer " + TOKENS[token], "Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_deeply_nested_json_does_not_crash(server):
    # Valid but hostile: accepted whole, or refused with a 400; never a crash.
    import re
    for depth in (10_000, 100_000):
        nest = b"[" * depth + b"]" * depth
        status, body = _plain(server, "POST", "/v1/jobs",
                              b'{"queue": "q", "payload": {"a": ' + nest + b"}}")
        if status == 202:
            job_id = re.search(rb'"id":\s*"([0-9A-Z]{26})"', body).group(1).decode()
            st, got = _plain(server, "GET", "/v1/jobs/" + job_id, token="read")
            assert st == 200 and nest in got
        else:
            assert status == 400, (status, body[:300])
            err = json.loads(body)
            assert err["error"] in ("malformed_json", "invalid_field") and err["message"], err
        assert server.request("GET", "/healthz", token=None).status == 200


def test_integers_beyond_64_bits_are_exact_or_refused(server):
    for text in (b"18446744073709551616", b"-9223372036854775809",
                 b"123456789012345678901234567890"):
        body = b'{"queue": "q", "payload": {"n": ' + text + b"}}"
        r = post_raw(server, body)
        if r.status == 202:
            got = server.request("GET", f"/v1/jobs/{r.json['id']}", token="read")
            assert text in got.body, "a big integer was silently changed"
        else:
            assert_error(r, 400, {"malformed_json", "invalid_field"})
