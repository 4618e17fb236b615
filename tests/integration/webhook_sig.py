"""Standard Webhooks and X-Drover signatures, written for the tests from
the specs — independent of drover's own code (src/sign.c), which the tests
check against it. test_runners.py proves these helpers against the
published vectors before anything relies on them."""

import base64
import hashlib
import hmac
import os


def new_secret():
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def sw_key(secret):
    assert secret.startswith("whsec_"), secret
    return base64.b64decode(secret[len("whsec_"):], validate=True)


def sw_signature(secret, msg_id, ts, body):
    """Standard Webhooks: 'v1,' + base64 HMAC-SHA256 keyed with the decoded
    secret over '{id}.{timestamp}.{body}'."""
    signed = f"{msg_id}.{ts}.".encode() + body
    mac = hmac.new(sw_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def sw_verify(secret, msg_id, ts, body, header):
    """Any space-separated 'v1,' entry that matches passes; other versions are
    ignored."""
    if not (msg_id and ts and header):
        return False
    expected = sw_signature(secret, msg_id, ts, body)[len("v1,"):]
    for entry in header.split(" "):
        version, _, sig = entry.partition(",")
        if version == "v1" and sig and hmac.compare_digest(sig, expected):
            return True
    return False


def drover_signature(secret, ts, body):
    """X-Drover: 'sha256=' + hex HMAC-SHA256 keyed with the secret string as
    written (whsec_ prefix included) over '{timestamp}.{body}'."""
    return "sha256=" + hmac.new(secret.encode(), f"{ts}.".encode() + body,
                                hashlib.sha256).hexdigest()
