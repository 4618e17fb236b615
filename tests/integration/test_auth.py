"""Authentication and the role matrix over every route of docs/api.md.

ROUTES is the one table of routes: add each new route here (method, path
template, the roles that may use it, the status of a successful call, a body,
and what the call needs to exist first). {queue} is replaced by a queue name;
{id} by a job made for the call, as `prep` says:
  "job"    a fresh queued job
  "lease"  a job claimed by a worker; the body gets its "lease" token
  "ended"  a canceled job (for retry)
  "sub"    a webhook subscription ({id} is its id)
"""

import pytest

from conftest import TOKENS, assert_error

ALL = {"admin", "submit", "worker", "read"}
WORKER = {"admin", "worker"}
SUBMIT = {"admin", "submit"}

#  method  path template                roles   success  body                            prep
ROUTES = [
    ("POST", "/v1/jobs",                SUBMIT,  202, {"queue": "authq"},               None),
    ("GET",  "/v1/jobs",                ALL,     200, None,                             None),
    ("GET",  "/v1/jobs/{id}",           ALL,     200, None,                             "job"),
    ("GET",  "/v1/jobs/{id}/events",    ALL,     200, None,                             "job"),
    ("GET",  "/v1/jobs/{id}/artifacts", ALL,     200, None,                             "job"),
    ("POST", "/v1/jobs/{id}/cancel",    SUBMIT,  200, None,                             "job"),
    ("POST", "/v1/jobs/{id}/retry",     SUBMIT,  200, None,                             "ended"),
    ("GET",  "/v1/queues/{queue}",      ALL,     200, None,                             None),
    ("PUT",  "/v1/queues/{queue}",      {"admin"}, 200, {"max_attempts": 2, "retry_cap": 4},
     None),
    ("POST", "/v1/queues/{queue}/claim", WORKER, 200, {"worker": "w-auth"},            None),
    ("POST", "/v1/jobs/{id}/heartbeat", WORKER,  200, {},                               "lease"),
    ("POST", "/v1/jobs/{id}/steps",     WORKER,  200, {"step": "s1", "data": {"k": 1}}, "lease"),
    ("POST", "/v1/jobs/{id}/complete",  WORKER,  200, {"result": {"ok": True}},         "lease"),
    ("POST", "/v1/jobs/{id}/fail",      WORKER,  200, {"error": {"message": "boom"}},   "lease"),
    ("POST", "/v1/subscriptions",       {"admin"}, 201, {"url": "https://example.com/h"}, None),
    ("GET",  "/v1/subscriptions",       ALL,     200, None,                             None),
    ("GET",  "/v1/subscriptions/{id}",  ALL,     200, None,                             "sub"),
    ("PATCH", "/v1/subscriptions/{id}", {"admin"}, 200, {"enabled": False},             "sub"),
    ("DELETE", "/v1/subscriptions/{id}", {"admin"}, 200, None,                          "sub"),
]

# Routes open without a token.
OPEN_ROUTES = [
    ("GET", "/healthz", 200, {"status": "ok"}),
    ("GET", "/readyz", 200, {"status": "ready"}),
]

ROUTE_IDS = [f"{m} {p}" for m, p, *_ in ROUTES]

BAD_AUTH_HEADERS = [
    None,                                          # no Authorization at all
    "Bearer garbage-token-that-nobody-issued",
    "Bearer ",
    "Bearer",
    "Basic " + "YWRtaW46YWRtaW4=",                 # another scheme
    TOKENS["admin"],                               # token without the scheme
    "Bearer " + TOKENS["admin"][:-1],              # a prefix of a real token
    "Bearer " + TOKENS["admin"] + "x",             # a real token plus a byte
    "Bearer " + TOKENS["admin"].upper(),
]


def prepare(server, route, queue="authq"):
    """The concrete path and body for one call of route."""
    method, template, _roles, _ok, body, prep = route
    body = dict(body) if body is not None else None
    path = template.replace("{queue}", queue)
    if prep is None:
        return path, body
    if prep == "sub":
        r = server.request("POST", "/v1/subscriptions", {"url": "https://example.com/prep"},
                           token="admin")
        assert r.status == 201, r
        return path.replace("{id}", r.json["id"]), body
    job = server.submit("authq", token="admin")
    if prep == "ended":
        r = server.request("POST", f"/v1/jobs/{job['id']}/cancel", token="admin")
        assert r.status == 200, r
    elif prep == "lease":
        r = server.request("POST", "/v1/queues/authq/claim", {"worker": "w-prep"},
                           token="worker")
        assert r.status == 200, r
        (claimed,) = r.json["jobs"]
        assert claimed["id"] == job["id"], r.json
        body["lease"] = claimed["lease"]["token"]
    return path.replace("{id}", job["id"]), body


def call(server, method, path, body, auth_header):
    headers = {}
    if auth_header is not None:
        headers["Authorization"] = auth_header
    return server.request(method, path, body, token=None, headers=headers)


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_bad_or_missing_token_is_401(server, route):
    method, template = route[0], route[1]
    path, body = prepare(server, route)
    before = server.request("GET", "/v1/jobs?limit=500", token="admin").json
    for auth in BAD_AUTH_HEADERS:
        r = call(server, method, path, body, auth)
        assert_error(r, 401, "unauthorized")
        www = r.headers.get("www-authenticate", "")
        assert www.lower().startswith("bearer"), (auth, r.headers)
    after = server.request("GET", "/v1/jobs?limit=500", token="admin").json
    assert after == before, "an unauthenticated request changed something"
    if template == "/v1/queues/{queue}":
        g = server.request("GET", path, token="admin").json
        assert g["max_attempts"] == 1, "an unauthenticated PUT changed the policy"


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_401_comes_before_validation(server, route):
    method, template = route[0], route[1]
    # A malformed body or id still gets 401 without a token: nothing about
    # the request is judged before its caller is known.
    path = template.replace("{id}", "not-a-ulid").replace("{queue}", "bad%20name")
    raw = b"{not json" if method in ("POST", "PUT") else None
    headers = {"Content-Type": "application/json"} if raw else None
    r = server.request(method, path, raw=raw, token=None, headers=headers)
    assert_error(r, 401, "unauthorized")


@pytest.mark.parametrize("role", sorted(ALL))
@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_role_matrix(server, route, role):
    method, template, roles, ok, _body, _prep = route
    path, body = prepare(server, route, queue=f"q-{role}")
    before = server.request("GET", "/v1/jobs?limit=500", token="admin").json
    r = server.request(method, path, body, token=role)
    if role in roles:
        assert r.status == ok, (role, method, path, r)
        return
    assert_error(r, 403, "forbidden")
    # and nothing happened
    after = server.request("GET", "/v1/jobs?limit=500", token="admin").json
    assert after == before, "a forbidden request changed a job"
    if method == "PUT" and template == "/v1/queues/{queue}":
        g = server.request("GET", path, token="admin").json
        assert g["max_attempts"] == 1 and g["retry_cap"] == 5, g


def test_read_role_cannot_write(server):
    job = server.submit("w")
    assert_error(server.request("POST", "/v1/jobs", {"queue": "w"}, token="read"), 403,
                 "forbidden")
    assert_error(server.request("POST", f"/v1/jobs/{job['id']}/cancel", token="read"), 403,
                 "forbidden")
    assert_error(server.request("PUT", "/v1/queues/w", {"max_attempts": 2}, token="read"), 403,
                 "forbidden")
    assert server.get_job(job["id"])["state"] == "queued"


def test_submit_role_cannot_put_queue(server):
    r = server.request("PUT", "/v1/queues/w", {"max_attempts": 2}, token="submit")
    assert_error(r, 403, "forbidden")
    assert server.request("GET", "/v1/queues/w", token="admin").json["max_attempts"] == 1


def test_worker_can_read(server):
    job = server.submit("w")
    assert server.request("GET", f"/v1/jobs/{job['id']}", token="worker").status == 200
    assert server.request("GET", f"/v1/jobs/{job['id']}/events", token="worker").status == 200
    assert server.request("GET", "/v1/jobs", token="worker").status == 200
    assert server.request("GET", "/v1/queues/w", token="worker").status == 200
    assert_error(server.request("POST", "/v1/jobs", {"queue": "w"}, token="worker"), 403,
                 "forbidden")


def test_admin_can_do_everything(server):
    r = server.request("POST", "/v1/jobs", {"queue": "a"}, token="admin")
    assert r.status == 202, r
    jid = r.json["id"]
    assert server.request("GET", f"/v1/jobs/{jid}", token="admin").status == 200
    assert server.request("GET", f"/v1/jobs/{jid}/events", token="admin").status == 200
    assert server.request("GET", "/v1/jobs", token="admin").status == 200
    assert server.request("POST", f"/v1/jobs/{jid}/cancel", token="admin").status == 200
    assert server.request("PUT", "/v1/queues/a", {"max_attempts": 2}, token="admin").status == 200
    assert server.request("GET", "/v1/queues/a", token="admin").status == 200


@pytest.mark.parametrize("method,path,status,body", OPEN_ROUTES)
def test_open_routes_need_no_token(server, method, path, status, body):
    r = server.request(method, path, token=None)
    assert r.status == status and r.json == body, r
    # a garbage token does not turn an open route into a 401
    r = server.request(method, path, token="garbage-token")
    assert r.status == status, r


def test_env_admin_token(make_server):
    s = make_server(env={"DROVER_ADMIN_TOKEN": "env-admin-token-abcdef0123"})
    r = s.request("PUT", "/v1/queues/e", {"max_attempts": 2},
                  token="env-admin-token-abcdef0123")
    assert r.status == 200, r
    r = s.request("POST", "/v1/jobs", {"queue": "e"}, token="env-admin-token-abcdef0123")
    assert r.status == 202, r
    # the config's tokens still work alongside it
    assert s.request("GET", "/v1/jobs", token="read").status == 200


def test_tokens_do_not_leak_into_logs(server):
    server.request("GET", "/v1/jobs", token="admin")
    server.request("GET", "/v1/jobs", token="wrong-token-zzzzzzzz")
    log = server.log()
    for t in TOKENS.values():
        assert t not in log, "a token appeared in the log"
    assert "wrong-token-zzzzzzzz" not in log
