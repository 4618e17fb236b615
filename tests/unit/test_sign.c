/*
 * test_sign.c - whsec_ secrets, Standard Webhooks and X-Drover signatures
 * (src/sign.h).
 *
 * The Standard Webhooks cases come from the published vectors in
 * tests/testdata/signature-vectors.json (a copy, see tests/testdata/README.md),
 * found through TESTDATA_DIR, which the Makefile sets to the absolute path of
 * tests/testdata so the binary runs from any directory. The "independent"
 * constants below were computed with openssl(1), not with drover:
 *
 *   printf '%s.%s' 1700000000 '{"job":"01J0","status":"succeeded"}' \
 *     | openssl dgst -sha256 -hmac whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw -r
 *   key=$(printf %s MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw | base64 -d | xxd -p -c 256)
 *   printf '%s.%s.%s' msg_test_1 1700000000 '{"job":"01J0","status":"succeeded"}' \
 *     | openssl dgst -sha256 -mac HMAC -macopt hexkey:$key -binary | base64
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "sign.h"
#include "test_util.h"

#ifndef TESTDATA_DIR
#define TESTDATA_DIR "tests/testdata"
#endif

#define VECTORS_PATH TESTDATA_DIR "/signature-vectors.json"

/* The first published vector, used by the hand-written cases. */
#define V_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define V_ID     "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define V_TS     1614265330
#define V_TS_S   "1614265330"
#define V_BODY   "{\"test\": 2432232314}"
#define V_SIG    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

#define OTHER_SECRET "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"

/* Computed with openssl (see the top of this file). */
#define IND_BODY    "{\"job\":\"01J0\",\"status\":\"succeeded\"}"
#define IND_TS      1700000000
#define IND_ID      "msg_test_1"
#define IND_WEBHOOK "v1,bML1Pol6fxBbIS+knZoV/BNDqe5f5LIpKdxRhrvZVEs="
#define IND_DROVER  "sha256=1fa325dbdef4d9496d2887408ec827e30b8cd5de492be323b98d84a1644de234"

static json_t *load_vectors(void)
{
    json_error_t jerr;
    json_t *v = json_load_file(VECTORS_PATH, 0, &jerr);
    if (!v)
        fail_msg("cannot load %s: %s (line %d)", VECTORS_PATH, jerr.text, jerr.line);
    return v;
}

static struct sign_key key_of(const char *secret)
{
    struct sign_key key;
    struct errmsg err;
    int rc = sign_secret_parse(secret, &key, &err);
    if (rc != 0)
        fail_msg("'%s' refused: %s", secret, err.text);
    return key;
}

static const char *str_field(const json_t *obj, const char *name)
{
    const char *s = json_string_value(json_object_get(obj, name));
    if (!s)
        fail_msg("vector without string '%s'", name);
    return s;
}

/* Verify a message of the first vector's shape with one key; returns rc, err filled. */
static int verify1(const char *secret, const char *id, const char *ts, const char *sig,
                   const char *body, int64_t now, struct errmsg *err)
{
    struct sign_key key = key_of(secret);
    err->text[0] = '\0';
    return sign_webhook_verify(&key, 1, id, ts, sig, body, body ? strlen(body) : 0, now,
                               SIGN_TOLERANCE_S, err);
}

#define expect_refused(rc, err, reason)                                                            \
    do {                                                                                           \
        if ((rc) != -DRV_EBAD_SIGNATURE)                                                           \
            fail_msg("rc %d, want -DRV_EBAD_SIGNATURE (%s)", (rc), (err)->text);                   \
        if (!strstr((err)->text, (reason)))                                                        \
            fail_msg("message '%s' does not say '%s'", (err)->text, (reason));                     \
    } while (0)

/* --- published vectors ---------------------------------------------------- */

static void test_vectors_pass(void **state)
{
    (void)state;
    json_t *all = load_vectors();
    json_t *list = json_object_get(all, "standard_webhooks");
    size_t i;
    json_t *v;
    assert_true(json_array_size(list) >= 2);
    json_array_foreach(list, i, v)
    {
        struct errmsg err;
        char ts[32], sig[SIGN_WEBHOOK_SIG_LEN];
        json_int_t t = json_integer_value(json_object_get(v, "timestamp"));
        const char *body = str_field(v, "body");
        struct sign_key key = key_of(str_field(v, "secret"));
        snprintf(ts, sizeof(ts), "%lld", (long long)t);

        int rc = sign_webhook_verify(&key, 1, str_field(v, "id"), ts, str_field(v, "signature"),
                                     body, strlen(body), t, SIGN_TOLERANCE_S, &err);
        if (rc != 0)
            fail_msg("vector %zu refused: %s", i, err.text);
        /* And signing gives the published value. */
        assert_int_equal(sign_webhook(&key, str_field(v, "id"), t, body, strlen(body), sig), 0);
        assert_string_equal(sig, str_field(v, "signature"));
    }
    json_decref(all);
}

static void test_vectors_must_fail(void **state)
{
    (void)state;
    json_t *all = load_vectors();
    json_t *list = json_object_get(all, "standard_webhooks_must_fail");
    size_t i;
    json_t *v;
    assert_true(json_array_size(list) >= 3);
    json_array_foreach(list, i, v)
    {
        struct errmsg err;
        char ts[32];
        json_int_t t = json_integer_value(json_object_get(v, "timestamp"));
        snprintf(ts, sizeof(ts), "%lld", (long long)t);
        int rc = verify1(str_field(v, "secret"), str_field(v, "id"), ts, str_field(v, "signature"),
                         str_field(v, "body"), t, &err);
        expect_refused(rc, &err, "no signature matched");
    }
    json_decref(all);
}

static void test_vectors_list_passes(void **state)
{
    (void)state;
    json_t *all = load_vectors();
    const char *list =
        str_field(json_object_get(all, "standard_webhooks_list_passes"), "signature");
    struct errmsg err;
    int rc = verify1(V_SECRET, V_ID, V_TS_S, list, V_BODY, V_TS, &err);
    if (rc != 0)
        fail_msg("list refused: %s", err.text);
    json_decref(all);
}

/* --- Standard Webhooks, by hand ------------------------------------------- */

static void test_webhook_independent_value(void **state)
{
    (void)state;
    struct sign_key key = key_of(V_SECRET);
    char sig[SIGN_WEBHOOK_SIG_LEN];
    struct errmsg err;

    assert_int_equal(sign_webhook(&key, IND_ID, IND_TS, IND_BODY, strlen(IND_BODY), sig), 0);
    assert_string_equal(sig, IND_WEBHOOK);
    assert_int_equal(verify1(V_SECRET, IND_ID, "1700000000", IND_WEBHOOK, IND_BODY, IND_TS, &err),
                     0);
}

/* The raw body counts to the byte: a re-serialized body does not verify. */
static void test_webhook_body_exact(void **state)
{
    (void)state;
    struct errmsg err;
    int rc = verify1(V_SECRET, V_ID, V_TS_S, V_SIG, "{\"test\":2432232314}", V_TS, &err);
    expect_refused(rc, &err, "no signature matched");
    rc = verify1(V_SECRET, V_ID "x", V_TS_S, V_SIG, V_BODY, V_TS, &err);
    expect_refused(rc, &err, "no signature matched");
    rc = verify1(V_SECRET, V_ID, "1614265331", V_SIG, V_BODY, V_TS, &err);
    expect_refused(rc, &err, "no signature matched");
}

static void test_webhook_rotation(void **state)
{
    (void)state;
    struct sign_key keys[2] = {key_of(OTHER_SECRET), key_of(V_SECRET)};
    struct errmsg err;
    size_t len = strlen(V_BODY);

    /* The second key matches. */
    int rc = sign_webhook_verify(keys, 2, V_ID, V_TS_S, V_SIG, V_BODY, len, V_TS, 300, &err);
    if (rc != 0)
        fail_msg("rotation refused: %s", err.text);
    /* The first one alone does not. */
    rc = sign_webhook_verify(keys, 1, V_ID, V_TS_S, V_SIG, V_BODY, len, V_TS, 300, &err);
    expect_refused(rc, &err, "no signature matched");
    /* Nor does a signature by the other key offered next to a broken one. */
    char other_sig[SIGN_WEBHOOK_SIG_LEN], both[2 * SIGN_WEBHOOK_SIG_LEN + 1];
    assert_int_equal(sign_webhook(&keys[0], V_ID, V_TS, V_BODY, len, other_sig), 0);
    snprintf(both, sizeof(both), "v1,bm9wZQ== %s", other_sig);
    rc = sign_webhook_verify(&keys[1], 1, V_ID, V_TS_S, both, V_BODY, len, V_TS, 300, &err);
    expect_refused(rc, &err, "no signature matched");
    rc = sign_webhook_verify(keys, 2, V_ID, V_TS_S, both, V_BODY, len, V_TS, 300, &err);
    assert_int_equal(rc, 0);
    /* Bounds on the key list. */
    rc = sign_webhook_verify(keys, 0, V_ID, V_TS_S, V_SIG, V_BODY, len, V_TS, 300, &err);
    assert_int_equal(rc, -DRV_EINTERNAL);
    rc = sign_webhook_verify(keys, SIGN_MAX_KEYS + 1, V_ID, V_TS_S, V_SIG, V_BODY, len, V_TS, 300,
                             &err);
    assert_int_equal(rc, -DRV_EINTERNAL);
}

static void test_webhook_tolerance(void **state)
{
    (void)state;
    struct errmsg err;

    assert_int_equal(verify1(V_SECRET, V_ID, V_TS_S, V_SIG, V_BODY, V_TS + 300, &err), 0);
    assert_int_equal(verify1(V_SECRET, V_ID, V_TS_S, V_SIG, V_BODY, V_TS - 300, &err), 0);
    int rc = verify1(V_SECRET, V_ID, V_TS_S, V_SIG, V_BODY, V_TS + 301, &err);
    expect_refused(rc, &err, "webhook-timestamp too old");
    rc = verify1(V_SECRET, V_ID, V_TS_S, V_SIG, V_BODY, V_TS - 301, &err);
    expect_refused(rc, &err, "webhook-timestamp in the future");

    /* A given tolerance, 0 included. */
    struct sign_key key = key_of(V_SECRET);
    size_t len = strlen(V_BODY);
    assert_int_equal(sign_webhook_verify(&key, 1, V_ID, V_TS_S, V_SIG, V_BODY, len, V_TS, 0, &err),
                     0);
    rc = sign_webhook_verify(&key, 1, V_ID, V_TS_S, V_SIG, V_BODY, len, V_TS + 1, 0, &err);
    expect_refused(rc, &err, "too old");
    rc = sign_webhook_verify(&key, 1, V_ID, V_TS_S, V_SIG, V_BODY, len, V_TS + 10, -1, &err);
    assert_int_equal(rc, -DRV_EINTERNAL);
}

static void test_webhook_missing_headers(void **state)
{
    (void)state;
    struct errmsg err;
    int rc;

    rc = verify1(V_SECRET, NULL, V_TS_S, V_SIG, V_BODY, V_TS, &err);
    expect_refused(rc, &err, "missing webhook-id header");
    rc = verify1(V_SECRET, "", V_TS_S, V_SIG, V_BODY, V_TS, &err);
    expect_refused(rc, &err, "missing webhook-id header");
    rc = verify1(V_SECRET, V_ID, NULL, V_SIG, V_BODY, V_TS, &err);
    expect_refused(rc, &err, "missing webhook-timestamp header");
    rc = verify1(V_SECRET, V_ID, "", V_SIG, V_BODY, V_TS, &err);
    expect_refused(rc, &err, "missing webhook-timestamp header");
    rc = verify1(V_SECRET, V_ID, V_TS_S, NULL, V_BODY, V_TS, &err);
    expect_refused(rc, &err, "missing webhook-signature header");
    rc = verify1(V_SECRET, V_ID, V_TS_S, "", V_BODY, V_TS, &err);
    expect_refused(rc, &err, "missing webhook-signature header");
}

static void test_webhook_malformed(void **state)
{
    (void)state;
    struct errmsg err;
    int rc;

    static const char *const bad_ts[] = {
        "abc",         "-1614265330", "+1614265330",   "1614265330.5", " 1614265330",
        "1614265330 ", "0x60380f72",  "1614265330000", "1e9",
    };
    for (size_t i = 0; i < sizeof(bad_ts) / sizeof(bad_ts[0]); i++) {
        rc = verify1(V_SECRET, V_ID, bad_ts[i], V_SIG, V_BODY, V_TS, &err);
        if (rc != -DRV_EBAD_SIGNATURE || !strstr(err.text, "malformed webhook-timestamp"))
            fail_msg("timestamp '%s': rc %d, '%s'", bad_ts[i], rc, err.text);
    }

    static const char *const bad_sig[] = {
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "v1g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ",g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        V_SIG " v1",
    };
    for (size_t i = 0; i < sizeof(bad_sig) / sizeof(bad_sig[0]); i++) {
        rc = verify1(V_SECRET, V_ID, V_TS_S, bad_sig[i], V_BODY, V_TS, &err);
        if (rc != -DRV_EBAD_SIGNATURE || !strstr(err.text, "malformed webhook-signature"))
            fail_msg("signature '%s': rc %d, '%s'", bad_sig[i], rc, err.text);
    }

    /* Only other versions: nothing to check. */
    rc = verify1(V_SECRET, V_ID, V_TS_S, "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", V_BODY,
                 V_TS, &err);
    expect_refused(rc, &err, "no v1 signature");
    rc = verify1(V_SECRET, V_ID, V_TS_S, "   ", V_BODY, V_TS, &err);
    expect_refused(rc, &err, "no v1 signature");

    /* v1 entries that are not 32 bytes of base64 never match, even when they
     * decode to the right bytes in a sloppy way. */
    static const char *const never[] = {
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",   /* no padding */
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE==", /* too much */
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1O=E",  /* '=' inside */
        "v1,g0hM9SsE-OTPJTGt_tmIKtSyZlE3uFJELVlNIOLJ1OE=",  /* URL alphabet */
        "v1,g0hM9SsE+OTPJTGt/tmIKtSy\tlE3uFJELVlNIOLJ1OE=", /* a tab */
        "V1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1,AAAA",
    };
    for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++) {
        rc = verify1(V_SECRET, V_ID, V_TS_S, never[i], V_BODY, V_TS, &err);
        if (rc != -DRV_EBAD_SIGNATURE || !strstr(err.text, "no signature matched"))
            fail_msg("signature '%s': rc %d, '%s'", never[i], rc, err.text);
    }

    /* Runs of spaces between entries are fine. */
    assert_int_equal(
        verify1(V_SECRET, V_ID, V_TS_S, "  v1,bm9wZQ==   " V_SIG "  ", V_BODY, V_TS, &err), 0);

    /* Too many entries, too long a header, too long an id. */
    char many[SIGN_MAX_HEADER + 2] = "";
    for (int i = 0; i < SIGN_MAX_SIGNATURES; i++)
        strcat(many, "v1,bm9wZQ== ");
    strcat(many, V_SIG);
    rc = verify1(V_SECRET, V_ID, V_TS_S, many, V_BODY, V_TS, &err);
    expect_refused(rc, &err, "more than");

    char *long_sig = tu_repeat('A', SIGN_MAX_HEADER + 1);
    memcpy(long_sig, "v1,", 3);
    rc = verify1(V_SECRET, V_ID, V_TS_S, long_sig, V_BODY, V_TS, &err);
    expect_refused(rc, &err, "longer than");
    free(long_sig);

    char *long_id = tu_repeat('i', SIGN_MAX_ID + 1);
    rc = verify1(V_SECRET, long_id, V_TS_S, V_SIG, V_BODY, V_TS, &err);
    expect_refused(rc, &err, "webhook-id is longer than");
    free(long_id);
}

/* An empty body is a body like any other. */
static void test_webhook_empty_body(void **state)
{
    (void)state;
    struct sign_key key = key_of(V_SECRET);
    char sig[SIGN_WEBHOOK_SIG_LEN];
    struct errmsg err;

    assert_int_equal(sign_webhook(&key, "m", 5, "", 0, sig), 0);
    assert_int_equal(sign_webhook_verify(&key, 1, "m", "5", sig, NULL, 0, 5, 300, &err), 0);
    assert_int_equal(sign_webhook(&key, "m", -1, "", 0, sig), -DRV_EBAD_REQUEST);
}

/* --- secrets -------------------------------------------------------------- */

static void test_secret_parse(void **state)
{
    (void)state;
    struct sign_key key;
    struct errmsg err;

    /* "AAECAwQ=" is the bytes 0 1 2 3 4. */
    assert_int_equal(sign_secret_parse("whsec_AAECAwQ=", &key, &err), 0);
    assert_int_equal(key.len, 5);
    assert_memory_equal(key.bytes, "\x00\x01\x02\x03\x04", 5);

    key = key_of(V_SECRET);
    assert_int_equal(key.len, 24);

    /* Exactly SIGN_KEY_MAX bytes, and one more. */
    char secret[6 + 92 + 1] = "whsec_";
    char *b64 = tu_repeat('A', 88); /* 66 bytes */
    memcpy(secret + 6, b64, 84);    /* 63 bytes */
    memcpy(secret + 6 + 84, "AA==", 5);
    assert_int_equal(sign_secret_parse(secret, &key, &err), 0);
    assert_int_equal(key.len, 64);
    memcpy(secret + 6 + 84, "AAA=", 5);
    assert_int_equal(sign_secret_parse(secret, &key, &err), -DRV_EBAD_FIELD);
    assert_non_null(strstr(err.text, "longer than 64 bytes"));
    free(b64);

    static const struct {
        const char *secret;
        const char *reason;
    } bad[] = {
        {"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "does not start with"},
        {"WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "does not start with"},
        {"", "does not start with"},
        {"whsec_", "empty"},
        {"whsec_====", "not standard base64"},
        {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "not standard base64"},
        {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS=w", "not standard base64"},
        {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZ Io2LaLaSw", "not standard base64"},
        {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw ", "not standard base64"},
        {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa-w", "not standard base64"},
        {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS\n", "not standard base64"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = sign_secret_parse(bad[i].secret, &key, &err);
        if (rc != -DRV_EBAD_FIELD || !strstr(err.text, bad[i].reason))
            fail_msg("secret '%s': rc %d, '%s', want '%s'", bad[i].secret, rc, err.text,
                     bad[i].reason);
        /* The message never quotes the secret. */
        if (strlen(bad[i].secret) > 8 && strstr(err.text, bad[i].secret + 6))
            fail_msg("message '%s' quotes the secret", err.text);
    }
    assert_int_equal(sign_secret_parse(NULL, &key, &err), -DRV_EBAD_FIELD);

    /* Far too long, not even base64: still refused, without reading it all. */
    char *huge = tu_repeat('A', 100000);
    memcpy(huge, "whsec_", 6);
    assert_int_equal(sign_secret_parse(huge, &key, &err), -DRV_EBAD_FIELD);
    free(huge);
}

static void test_secret_generate(void **state)
{
    (void)state;
    char a[SIGN_SECRET_GEN_LEN], b[SIGN_SECRET_GEN_LEN];
    struct sign_key key;
    struct errmsg err;

    assert_int_equal(sign_secret_generate(a), 0);
    assert_int_equal(sign_secret_generate(b), 0);
    assert_int_equal(strlen(a), SIGN_SECRET_GEN_LEN - 1);
    assert_int_equal(strncmp(a, "whsec_", 6), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(sign_secret_parse(a, &key, &err), 0);
    assert_int_equal(key.len, 32);
}

/* --- X-Drover-Signature --------------------------------------------------- */

static int verify_drover(const char *secret, const char *ts, const char *sig, const char *body,
                         int64_t now, struct errmsg *err)
{
    const char *secrets[] = {secret};
    err->text[0] = '\0';
    return sign_drover_verify(secrets, 1, ts, sig, body, strlen(body), now, SIGN_TOLERANCE_S, err);
}

static void test_drover_independent_value(void **state)
{
    (void)state;
    char sig[SIGN_DROVER_SIG_LEN];
    struct errmsg err;

    assert_int_equal(sign_drover(V_SECRET, IND_TS, IND_BODY, strlen(IND_BODY), sig), 0);
    assert_string_equal(sig, IND_DROVER);
    assert_int_equal(verify_drover(V_SECRET, "1700000000", IND_DROVER, IND_BODY, IND_TS, &err), 0);
}

static void test_drover_roundtrip(void **state)
{
    (void)state;
    char sig[SIGN_DROVER_SIG_LEN], ts[32];
    struct errmsg err;
    const char *body = "{\"attempt\":1,\"status\":\"heartbeat\"}";
    int64_t now = 1800000000;
    int rc;

    snprintf(ts, sizeof(ts), "%lld", (long long)now);
    assert_int_equal(sign_drover(OTHER_SECRET, now, body, strlen(body), sig), 0);
    assert_int_equal(strlen(sig), SIGN_DROVER_SIG_LEN - 1);
    assert_int_equal(verify_drover(OTHER_SECRET, ts, sig, body, now, &err), 0);

    /* The timestamp is signed: the same signature with another one fails. */
    rc = verify_drover(OTHER_SECRET, "1800000001", sig, body, now, &err);
    expect_refused(rc, &err, "no signature matched");
    rc = verify_drover(OTHER_SECRET, ts, sig, "{\"attempt\":1}", now, &err);
    expect_refused(rc, &err, "no signature matched");
    rc = verify_drover(V_SECRET, ts, sig, body, now, &err);
    expect_refused(rc, &err, "no signature matched");

    /* Upper-case hex is the same signature. */
    char upper[SIGN_DROVER_SIG_LEN];
    strcpy(upper, sig);
    for (char *p = upper + 7; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    assert_int_equal(verify_drover(OTHER_SECRET, ts, upper, body, now, &err), 0);

    /* Rotation: the second secret matches. */
    const char *both[] = {V_SECRET, OTHER_SECRET};
    assert_int_equal(
        sign_drover_verify(both, 2, ts, sig, body, strlen(body), now, SIGN_TOLERANCE_S, &err), 0);
    rc = sign_drover_verify(both, 1, ts, sig, body, strlen(body), now, SIGN_TOLERANCE_S, &err);
    expect_refused(rc, &err, "no signature matched");

    /* Tolerance, both ways. */
    assert_int_equal(verify_drover(OTHER_SECRET, ts, sig, body, now + 300, &err), 0);
    assert_int_equal(verify_drover(OTHER_SECRET, ts, sig, body, now - 300, &err), 0);
    rc = verify_drover(OTHER_SECRET, ts, sig, body, now + 301, &err);
    expect_refused(rc, &err, "X-Drover-Timestamp too old");
    rc = verify_drover(OTHER_SECRET, ts, sig, body, now - 301, &err);
    expect_refused(rc, &err, "X-Drover-Timestamp in the future");

    assert_int_equal(sign_drover("", now, body, strlen(body), sig), -DRV_EBAD_REQUEST);
    assert_int_equal(sign_drover(V_SECRET, -5, body, strlen(body), sig), -DRV_EBAD_REQUEST);
}

static void test_drover_malformed(void **state)
{
    (void)state;
    struct errmsg err;
    const char *body = IND_BODY;
    int rc;

    rc = verify_drover(V_SECRET, NULL, IND_DROVER, body, IND_TS, &err);
    assert_int_equal(rc, -DRV_EBAD_SIGNATURE);
    rc = verify_drover(V_SECRET, "1700000000", NULL, body, IND_TS, &err);
    expect_refused(rc, &err, "missing X-Drover-Signature header");
    rc = verify_drover(V_SECRET, "", IND_DROVER, body, IND_TS, &err);
    expect_refused(rc, &err, "missing X-Drover-Timestamp header");
    rc = verify_drover(V_SECRET, "17e8", IND_DROVER, body, IND_TS, &err);
    expect_refused(rc, &err, "malformed X-Drover-Timestamp");

    static const char *const bad[] = {
        "1fa325dbdef4d9496d2887408ec827e30b8cd5de492be323b98d84a1644de234",
        "sha1=1fa325dbdef4d9496d2887408ec827e30b8cd5de492be323b98d84a1644de234",
        "sha256=1fa325dbdef4d9496d2887408ec827e30b8cd5de492be323b98d84a1644de23",
        "sha256=1fa325dbdef4d9496d2887408ec827e30b8cd5de492be323b98d84a1644de2344",
        "sha256=1fa325dbdef4d9496d2887408ec827e30b8cd5de492be323b98d84a1644de23g",
        "sha256= 1fa325dbdef4d9496d2887408ec827e30b8cd5de492be323b98d84a1644de234",
        "SHA256=1fa325dbdef4d9496d2887408ec827e30b8cd5de492be323b98d84a1644de234",
        "sha256=",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rc = verify_drover(V_SECRET, "1700000000", bad[i], body, IND_TS, &err);
        if (rc != -DRV_EBAD_SIGNATURE || !strstr(err.text, "malformed X-Drover-Signature"))
            fail_msg("signature '%s': rc %d, '%s'", bad[i], rc, err.text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors_pass),
        cmocka_unit_test(test_vectors_must_fail),
        cmocka_unit_test(test_vectors_list_passes),
        cmocka_unit_test(test_webhook_independent_value),
        cmocka_unit_test(test_webhook_body_exact),
        cmocka_unit_test(test_webhook_rotation),
        cmocka_unit_test(test_webhook_tolerance),
        cmocka_unit_test(test_webhook_missing_headers),
        cmocka_unit_test(test_webhook_malformed),
        cmocka_unit_test(test_webhook_empty_body),
        cmocka_unit_test(test_secret_parse),
        cmocka_unit_test(test_secret_generate),
        cmocka_unit_test(test_drover_independent_value),
        cmocka_unit_test(test_drover_roundtrip),
        cmocka_unit_test(test_drover_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
