"""Contract tests for webhook subscriptions (docs/api.md "Subscriptions";
DESIGN.md §1 Events and webhooks, §2 CRUD /v1/subscriptions).

- POST / GET / PATCH / DELETE round trip, with the documented shape.
- Validation: every bad body is 400 invalid_field naming the field, and
  changes nothing.
- The secret: kept when given, generated when not; shown to admins only.
- Rotation: a new secret keeps the old one signing until
  `secret_rotating_until`; grace_s 0 drops it.
- Roles, 404s, Idempotency-Key on POST, concurrent PATCHes of different
  fields all landing.
- Everything survives kill -9; GET of one subscription answers from the
  in-memory mirror, which a restart refills from the store.

- A rotation's grace that runs out on its own, seen in the deliveries: the
  old secret stops signing at the deadline, retries of an earlier event too.

Other deliveries are tested in test_webhooks. Loopback only."""

import base64
import time

import pytest

from conftest import ULID_RE, UNKNOWN_ID, assert_error, run_threads, ts_parse
from webhook_receiver import create_sub, wh_server
from webhook_sig import new_secret, sw_verify

SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes
SECRET_B = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX"  # 24 bytes
SUB_FIELDS = {"id", "url", "secret", "events", "queues", "enabled", "disabled_reason",
              "secret_rotating_until", "created_at", "updated_at"}
DAY_S = 86400


# ------------------------------------------------------------------ helpers


def create_req(server, body, token="admin", headers=None):
    return server.request("POST", "/v1/subscriptions", body, token=token, headers=headers)


def create(server, url="https://hooks.example.com/drover", **fields):
    """POST /v1/subscriptions; assert 201, Location and the shape; return it."""
    r = create_req(server, {"url": url, **fields})
    assert r.status == 201, r
    sub = r.json
    check_shape(sub)
    assert r.headers.get("location") == f"/v1/subscriptions/{sub['id']}", r.headers
    assert sub["url"] == url
    assert sub["secret"].startswith("whsec_"), "POST shows the secret in full"
    assert sub["created_at"] == sub["updated_at"]
    return sub


def check_shape(sub):
    assert isinstance(sub, dict), sub
    assert set(sub) == SUB_FIELDS, sub
    assert ULID_RE.match(sub["id"]), sub
    ts_parse(sub["created_at"])
    ts_parse(sub["updated_at"])
    assert isinstance(sub["enabled"], bool), sub
    for f in ("events", "queues"):
        assert sub[f] is None or isinstance(sub[f], list), sub


def get(server, sub_id, token="admin"):
    r = server.request("GET", f"/v1/subscriptions/{sub_id}", token=token)
    assert r.status == 200, r
    check_shape(r.json)
    return r.json


def list_subs(server, token="admin"):
    r = server.request("GET", "/v1/subscriptions", token=token)
    assert r.status == 200, r
    assert set(r.json) == {"subscriptions"}, r.json
    for s in r.json["subscriptions"]:
        check_shape(s)
    return r.json["subscriptions"]


def patch_req(server, sub_id, body, token="admin"):
    return server.request("PATCH", f"/v1/subscriptions/{sub_id}", body, token=token)


def patch(server, sub_id, **body):
    r = patch_req(server, sub_id, body)
    assert r.status == 200, r
    check_shape(r.json)
    return r.json


def delete(server, sub_id, token="admin"):
    return server.request("DELETE", f"/v1/subscriptions/{sub_id}", token=token)


def secret_bytes(secret):
    assert secret.startswith("whsec_"), secret
    return base64.b64decode(secret[len("whsec_"):], validate=True)


# ------------------------------------------------------------------ CRUD


def test_round_trip(server):
    assert list_subs(server) == []
    t0 = time.time()
    sub = create(server, events=["job.failed", "job.succeeded"], queues=["billing"],
                 secret=SECRET_A)
    assert sub["secret"] == SECRET_A
    assert sub["events"] == ["job.failed", "job.succeeded"]
    assert sub["queues"] == ["billing"]
    assert sub["enabled"] is True
    assert sub["disabled_reason"] is None
    assert sub["secret_rotating_until"] is None
    assert abs(ts_parse(sub["created_at"]) - t0) < 60

    assert get(server, sub["id"]) == sub
    assert list_subs(server) == [sub]

    time.sleep(0.01)
    p = patch(server, sub["id"], url="http://10.1.2.3:8080/hook", events=None,
              queues=["billing", "payments"], enabled=False)
    assert p["url"] == "http://10.1.2.3:8080/hook"
    assert p["events"] is None, "null is every event type"
    assert p["queues"] == ["billing", "payments"]
    assert p["enabled"] is False
    assert p["disabled_reason"] is None, "disabled by hand: no reason of drover's"
    assert p["secret"] == SECRET_A, "the secret did not change"
    assert p["created_at"] == sub["created_at"]
    assert ts_parse(p["updated_at"]) > ts_parse(sub["updated_at"])
    assert get(server, sub["id"]) == p
    assert list_subs(server) == [p]

    p2 = patch(server, sub["id"], enabled=True)
    assert p2["enabled"] is True and p2["queues"] == p["queues"], p2

    r = delete(server, sub["id"])
    assert r.status == 200, r
    assert r.json == {"deleted": True}
    assert_error(server.request("GET", f"/v1/subscriptions/{sub['id']}"), 404, "not_found")
    assert_error(delete(server, sub["id"]), 404, "not_found")
    assert list_subs(server) == []


def test_defaults_and_generated_secret(server):
    a = create(server)
    b = create(server)
    assert a["events"] is None and a["queues"] is None and a["enabled"] is True
    assert len(secret_bytes(a["secret"])) == 32
    assert a["secret"] != b["secret"], "each subscription gets a secret of its own"
    c = create(server, enabled=False)
    assert c["enabled"] is False
    assert [s["id"] for s in list_subs(server)] == sorted([a["id"], b["id"], c["id"]])


def test_list_is_ordered_by_id(server):
    ids = [create(server, url=f"https://h{i}.example.com/")["id"] for i in range(5)]
    assert [s["id"] for s in list_subs(server)] == sorted(ids)
    assert sorted(ids) == ids, "ULIDs in creation order"


def test_every_known_event_type_is_accepted(server):
    types = ["job.created", "job.queued", "job.scheduled", "job.running", "job.step",
             "job.dispatched", "job.succeeded", "job.failed", "job.canceled",
             "job.cancel_requested", "job.delivery_dead"]
    assert create(server, events=types)["events"] == types


# ------------------------------------------------------------------ validation

LONG_URL = "https://example.com/" + "a" * 2029  # 2049 bytes

POST_ERRORS = [
    ({}, "url"),
    ({"url": None}, "url"),
    ({"url": 42}, "url"),
    ({"url": ""}, "url"),
    ({"url": "ftp://example.com/x"}, "url"),
    ({"url": "example.com/hook"}, "url"),
    ({"url": "https://exa mple.com/"}, "url"),
    ({"url": LONG_URL}, "url"),
    ({"url": "https://e.com/", "secret": "hunter2"}, "secret"),
    ({"url": "https://e.com/", "secret": "whsec_AAECAwQFBgc="}, "secret"),  # 8 bytes
    ({"url": "https://e.com/", "secret": "whsec_" + "A" * 100}, "secret"),
    ({"url": "https://e.com/", "secret": None}, "secret"),
    ({"url": "https://e.com/", "events": "job.failed"}, "events"),
    ({"url": "https://e.com/", "events": []}, "events"),
    ({"url": "https://e.com/", "events": ["job.failed", "job.exploded"]}, "events"),
    ({"url": "https://e.com/", "events": ["job.*"]}, "events"),
    ({"url": "https://e.com/", "events": ["job.failed", "job.failed"]}, "events"),
    ({"url": "https://e.com/", "events": [7]}, "events"),
    ({"url": "https://e.com/", "queues": ["ok", "not ok"]}, "queues"),
    ({"url": "https://e.com/", "queues": ["q", "q"]}, "queues"),
    ({"url": "https://e.com/", "queues": [f"q{i}" for i in range(33)]}, "queues"),
    ({"url": "https://e.com/", "queues": "q"}, "queues"),
    ({"url": "https://e.com/", "enabled": "yes"}, "enabled"),
    ({"url": "https://e.com/", "enabled": None}, "enabled"),
    ({"url": "https://e.com/", "id": UNKNOWN_ID}, "id"),
    ({"url": "https://e.com/", "grace_s": 10}, "grace_s"),
    ({"url": "https://e.com/", "callback": "https://x/"}, "callback"),
]


@pytest.mark.parametrize("body,field", POST_ERRORS,
                         ids=[f"{f}-{i}" for i, (_, f) in enumerate(POST_ERRORS)])
def test_post_refuses_bad_fields(server, body, field):
    e = assert_error(create_req(server, body), 400, "invalid_field", field=field)
    if isinstance(body.get("secret"), str):
        assert body["secret"] not in e["message"], "a message never quotes a secret"
    assert list_subs(server) == [], "a refused POST creates nothing"


def test_post_body_must_be_an_object(server):
    assert_error(create_req(server, ["https://e.com/"]), 400, "invalid_field")
    r = server.request("POST", "/v1/subscriptions", raw=b"{not json",
                       headers={"Content-Type": "application/json"})
    assert_error(r, 400, "malformed_json")
    assert list_subs(server) == []


PATCH_ERRORS = [
    ({"url": None}, "url"),
    ({"url": "mailto:a@b.c"}, "url"),
    ({"secret": "whsec_"}, "secret"),
    ({"secret": None}, "secret"),
    ({"secret": SECRET_B, "rotate_secret": True}, "rotate_secret"),
    ({"rotate_secret": 1}, "rotate_secret"),
    ({"grace_s": -1}, "grace_s"),
    ({"grace_s": 604801}, "grace_s"),
    ({"grace_s": "60"}, "grace_s"),
    ({"events": []}, "events"),
    ({"events": ["job.nope"]}, "events"),
    ({"queues": ["a/b"]}, "queues"),
    ({"enabled": 0}, "enabled"),
    ({"id": UNKNOWN_ID}, "id"),
    ({"created_at": "2026-01-01T00:00:00.000Z"}, "created_at"),
]


@pytest.mark.parametrize("body,field", PATCH_ERRORS,
                         ids=[f"{f}-{i}" for i, (_, f) in enumerate(PATCH_ERRORS)])
def test_patch_refuses_bad_fields(server, body, field):
    sub = create(server, secret=SECRET_A, events=["job.failed"])
    assert_error(patch_req(server, sub["id"], body), 400, "invalid_field", field=field)
    assert get(server, sub["id"]) == sub, "a refused PATCH changes nothing"


# ------------------------------------------------------------------ the secret


@pytest.mark.parametrize("role", ["read", "submit", "worker"])
def test_secret_redacted_for_non_admins(server, role):
    sub = create(server, secret=SECRET_A)
    for body in (get(server, sub["id"], token=role), list_subs(server, token=role)[0]):
        assert body["secret"] == "<redacted>", body
        assert body["id"] == sub["id"] and body["url"] == sub["url"]
    r = server.request("GET", "/v1/subscriptions", token=role)
    assert b"whsec_" not in r.body
    assert get(server, sub["id"], token="admin")["secret"] == SECRET_A


def test_rotation_keeps_the_old_secret_until_its_deadline(server):
    sub = create(server, secret=SECRET_A)
    t0 = time.time()
    p = patch(server, sub["id"], secret=SECRET_B, grace_s=3600)
    assert p["secret"] == SECRET_B
    until = ts_parse(p["secret_rotating_until"])
    assert abs(until - (t0 + 3600)) < 30, (t0, p)
    assert get(server, sub["id"]) == p

    # The same secret again is no rotation: the deadline stays.
    assert patch(server, sub["id"], secret=SECRET_B)["secret_rotating_until"] == \
        p["secret_rotating_until"]

    # grace_s alone moves the deadline of the rotation under way...
    q = patch(server, sub["id"], grace_s=60)
    assert abs(ts_parse(q["secret_rotating_until"]) - (time.time() + 60)) < 30, q
    # ... and 0 drops the old secret now.
    z = patch(server, sub["id"], grace_s=0)
    assert z["secret_rotating_until"] is None and z["secret"] == SECRET_B, z
    assert get(server, sub["id"])["secret_rotating_until"] is None


def test_rotation_default_grace_and_grace_zero(server):
    sub = create(server, secret=SECRET_A)
    t0 = time.time()
    p = patch(server, sub["id"], secret=SECRET_B)
    assert abs(ts_parse(p["secret_rotating_until"]) - (t0 + DAY_S)) < 30, p

    z = patch(server, sub["id"], secret=SECRET_A, grace_s=0)
    assert z["secret"] == SECRET_A and z["secret_rotating_until"] is None, z


def test_rotate_secret_generates_one(server):
    sub = create(server, secret=SECRET_A)
    p = patch(server, sub["id"], rotate_secret=True, grace_s=120)
    assert p["secret"] not in (SECRET_A, None)
    assert len(secret_bytes(p["secret"])) == 32
    assert abs(ts_parse(p["secret_rotating_until"]) - (time.time() + 120)) < 30, p
    q = patch(server, sub["id"], rotate_secret=True)
    assert q["secret"] != p["secret"]


def test_rotation_with_grace_expires(server):
    sub = create(server, secret=SECRET_A)
    p = patch(server, sub["id"], secret=SECRET_B, grace_s=1)
    assert p["secret_rotating_until"] is not None
    time.sleep(1.2)
    assert get(server, sub["id"])["secret_rotating_until"] is None, "past its deadline"


# ------------------------------------------------------------------ roles and 404s


def test_roles(server):
    sub = create(server)
    for role in ("submit", "worker", "read"):
        assert_error(create_req(server, {"url": "https://e.com/"}, token=role), 403, "forbidden")
        assert_error(patch_req(server, sub["id"], {"enabled": False}, token=role), 403,
                     "forbidden")
        assert_error(delete(server, sub["id"], token=role), 403, "forbidden")
        assert get(server, sub["id"], token=role)["enabled"] is True
    assert_error(server.request("GET", "/v1/subscriptions", token=None), 401, "unauthorized")
    assert [s["id"] for s in list_subs(server)] == [sub["id"]]
    assert get(server, sub["id"]) == sub, "a forbidden request changed nothing"


def test_unknown_and_malformed_ids(server):
    for method, body in (("GET", None), ("PATCH", {"enabled": False}), ("DELETE", None)):
        r = server.request(method, f"/v1/subscriptions/{UNKNOWN_ID}", body)
        assert_error(r, 404, "not_found")
        assert UNKNOWN_ID in r.json["message"]
        assert_error(server.request(method, "/v1/subscriptions/not-a-ulid", body), 400,
                     "bad_request")
    assert_error(server.request("PUT", "/v1/subscriptions", {"url": "https://e.com/"}), 405,
                 "method_not_allowed")
    assert list_subs(server) == []


# ------------------------------------------------------------------ writes


def test_idempotency_key_on_post(server):
    h = {"Idempotency-Key": "sub-create-1"}
    r1 = create_req(server, {"url": "https://e.com/a"}, headers=h)
    r2 = create_req(server, {"url": "https://e.com/a"}, headers=h)
    assert r1.status == r2.status == 201, (r1, r2)
    assert r1.body == r2.body
    assert r2.headers.get("idempotent-replayed") == "true"
    assert r2.headers.get("location") == r1.headers.get("location")
    assert [s["id"] for s in list_subs(server)] == [r1.json["id"]]
    assert get(server, r1.json["id"])["url"] == "https://e.com/a"
    assert_error(create_req(server, {"url": "https://e.com/b"}, headers=h), 422,
                 "idempotency_key_reused")


def test_concurrent_patches_keep_every_field(server):
    # Each thread changes its own field, many times over: the patch is
    # applied to the stored subscription inside the writer's transaction, so
    # no PATCH undoes another's field with a stale copy.
    sub = create(server, secret=SECRET_A)
    rounds = 15

    def work(i):
        for n in range(rounds):
            if i == 0:
                body = {"url": f"https://e.com/{n}"}
            elif i == 1:
                body = {"queues": [f"q{n}"]}
            elif i == 2:
                body = {"events": ["job.failed"] if n % 2 else ["job.succeeded"]}
            else:
                body = {"enabled": n % 2 == 0}
            r = patch_req(server, sub["id"], body)
            assert r.status == 200, r

    run_threads(4, work)
    last = rounds - 1
    final = get(server, sub["id"])
    assert final["url"] == f"https://e.com/{last}", final
    assert final["queues"] == [f"q{last}"], final
    assert final["events"] == (["job.failed"] if last % 2 else ["job.succeeded"]), final
    assert final["enabled"] is (last % 2 == 0), final
    assert list_subs(server) == [final], "the store and the mirror agree"


# ------------------------------------------------------------------ durability


def test_survives_kill_9_and_the_mirror_is_refilled(server):
    a = create(server, secret=SECRET_A, events=["job.failed"], queues=["billing"])
    b = create(server, enabled=False)
    c = create(server)
    rotated = patch(server, a["id"], secret=SECRET_B, grace_s=3600)
    gone = create(server)
    assert delete(server, gone["id"]).status == 200
    before = list_subs(server)
    assert [s["id"] for s in before] == sorted([a["id"], b["id"], c["id"]])

    port = server.port
    server.kill()
    server.start(listen=f"127.0.0.1:{port}")

    after = list_subs(server)
    assert after == before
    # GET of one answers from the in-memory mirror: refilled from the store.
    for s in before:
        assert get(server, s["id"]) == s
    assert get(server, a["id"])["secret_rotating_until"] == rotated["secret_rotating_until"]
    assert get(server, a["id"])["secret"] == SECRET_B
    assert_error(server.request("GET", f"/v1/subscriptions/{gone['id']}"), 404, "not_found")

    # And it goes on working after the restart.
    p = patch(server, b["id"], enabled=True, events=["job.step"])
    assert get(server, b["id"]) == p
    d = create(server)
    assert d["id"] > c["id"]


# ------------------------------------------------------------------ rotation at signing time
#
# The deliveries themselves (webhook_receiver.py: a receiver on 127.0.0.1;
# signatures checked with webhook_sig.py, never with drover's code): a
# rotation's grace that runs out on its own, with no PATCH to end it, ends
# the old secret's signatures from that moment on. test_webhooks covers two
# signatures during the grace and grace_s 0.


def sig_entries(rec):
    entries = rec["sig"].split(" ")
    for e in entries:
        assert e.startswith("v1,") and len(base64.b64decode(e[3:])) == 32, rec["sig"]
    return entries


def test_grace_that_ran_out_signs_with_the_new_secret_only(make_server, receiver):
    srv = wh_server(make_server)
    old, new = new_secret(), new_secret()
    sub = create_sub(srv, url=receiver.url + "/expired", secret=old, queues=["rot-exp"],
                     events=["job.created"])
    t0 = time.time()
    p = patch(srv, sub["id"], secret=new, grace_s=1)
    assert p["secret"] == new, p
    until = ts_parse(p["secret_rotating_until"])
    assert t0 + 1 - 0.05 <= until <= time.time() + 1 + 0.05, (t0, p)
    time.sleep(max(0.0, until - time.time()) + 0.5)

    jid = srv.submit("rot-exp")["id"]
    rec = receiver.wait(1, path="/expired")[0]
    assert rec["id"] == f"{jid}_1" and rec["type"] == "job.created", rec["id"]
    assert int(rec["ts"]) >= int(until), (rec["ts"], until)
    # One signature, by the new secret; the old one no longer verifies.
    entries = sig_entries(rec)
    assert len(entries) == 1, rec["sig"]
    assert sw_verify(new, rec["id"], rec["ts"], rec["body"], rec["sig"]), rec["sig"]
    assert not sw_verify(old, rec["id"], rec["ts"], rec["body"], rec["sig"]), \
        "the old secret still signs after its grace ran out"
    assert get(srv, sub["id"])["secret_rotating_until"] is None


def test_retry_after_the_grace_ran_out_drops_the_old_signature(make_server, receiver):
    """Each attempt is signed when it is sent: an event committed during the
    grace whose first attempt failed is retried, after the deadline, with
    the new secret's signature alone. (breaker_after 100: the endpoint's
    circuit must not pause the retries.)"""
    srv = wh_server(make_server, "breaker_after = 100\n")
    old, new = new_secret(), new_secret()
    sub = create_sub(srv, url=receiver.url + "/retry-rot", secret=old, queues=["rot-retry"],
                     events=["job.created"])
    p = patch(srv, sub["id"], secret=new, grace_s=2)
    until = ts_parse(p["secret_rotating_until"])
    receiver.set_default("/retry-rot", (500, {}, "not yet"))
    jid = srv.submit("rot-retry")["id"]
    first = receiver.wait(1, path="/retry-rot")[0]
    assert first["wall"] < until, "the first attempt came after the grace: too slow to tell"
    # Fail every attempt until a whole second past the deadline, then take it.
    time.sleep(max(0.0, until + 1.0 - time.time()))
    receiver.set_default("/retry-rot", 200)
    recs = receiver.wait_for(lambda got: any(r["answer"] == 200 for r in got),
                             what="the retry that is answered 200")
    recs = [r for r in recs if r["path"] == "/retry-rot"]
    assert all(r["id"] == f"{jid}_1" for r in recs), [r["id"] for r in recs]
    assert [r["answer"] for r in recs].count(200) == 1, [r["answer"] for r in recs]

    checked_before = checked_after = 0
    for r in recs:
        entries = sig_entries(r)
        assert sw_verify(new, r["id"], r["ts"], r["body"], r["sig"]), r["sig"]
        if r["wall"] < until:  # sent during the grace: both secrets sign
            assert len(entries) == 2, r["sig"]
            assert sw_verify(old, r["id"], r["ts"], r["body"], r["sig"]), r["sig"]
            checked_before += 1
        elif int(r["ts"]) > until:  # signed after the deadline: the new one alone
            assert len(entries) == 1, (r["sig"], r["ts"], until)
            assert not sw_verify(old, r["id"], r["ts"], r["body"], r["sig"]), \
                f"an attempt signed {int(r['ts']) - until:.1f}s after the grace has the old secret"
            checked_after += 1
    assert checked_before >= 1 and recs[-1]["answer"] == 200, recs
    assert int(recs[-1]["ts"]) > until and checked_after >= 1, (recs[-1]["ts"], until)
