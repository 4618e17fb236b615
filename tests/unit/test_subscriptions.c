/*
 * test_subscriptions.c - webhook subscriptions (src/subscriptions.h): the
 * filters of sub_wants, the bodies of POST and PATCH with refusals naming
 * the field, secret rotation, the JSON shown, and the in-memory mirror
 * (put, remove, match, get; copies independent of the cache).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "sign.h"
#include "subscriptions.h"
#include "test_util.h"

/* whsec_ and base64 of 24 bytes; and of 8 bytes (too short). */
#define SECRET_A  "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SECRET_B  "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX"
#define SECRET_8B "whsec_AAECAwQFBgc="

#define ID_1 "01JD6Y5T2R6Q0M7S5V3QG1X8Z1"
#define ID_2 "01JD6Y5T2R6Q0M7S5V3QG1X8Z2"
#define ID_3 "01JD6Y5T2R6Q0M7S5V3QG1X8Z3"

/* tu_expect_* as functions: their macros take the names of their arguments literally. */
static void expect_ok(const char *what, int rc, const struct errmsg *err)
{
    if (rc != 0)
        fail_msg("%s: rc %d (%s: %s)", what, rc, err->field, err->text);
}

static void expect_field(const char *what, int rc, const struct errmsg *err, const char *field)
{
    if (rc != -DRV_EBAD_FIELD)
        fail_msg("%s: rc %d, want -DRV_EBAD_FIELD", what, rc);
    if (strcmp(err->field, field) != 0)
        fail_msg("%s: field '%s', want '%s' (message: %s)", what, err->field, field, err->text);
    if (err->text[0] == '\0')
        fail_msg("%s: no message", what);
}

/* A subscription with id, url and secret set, filters from JSON text (or NULL). */
static void make_sub(struct sub *s, const char *id, const char *events, const char *queues)
{
    sub_init(s);
    snprintf(s->id, sizeof(s->id), "%s", id);
    s->url = strdup("https://example.com/hook");
    s->secret = strdup(SECRET_A);
    s->events = events ? tu_json(events) : NULL;
    s->queues = queues ? tu_json(queues) : NULL;
    s->created_at_ms = s->updated_at_ms = 1700000000000;
}

/* ---- sub_wants ---- */

static void test_wants_no_filters(void **state)
{
    (void)state;
    struct sub s;
    make_sub(&s, ID_1, NULL, NULL);
    assert_true(sub_wants(&s, "job.failed", "q1"));
    assert_true(sub_wants(&s, "job.created", "anything"));
    s.enabled = false;
    assert_false(sub_wants(&s, "job.failed", "q1"));
    sub_release(&s);
}

static void test_wants_filters(void **state)
{
    (void)state;
    struct sub s;
    make_sub(&s, ID_1, "[\"job.failed\", \"job.succeeded\"]", "[\"billing\"]");
    assert_true(sub_wants(&s, "job.failed", "billing"));
    assert_true(sub_wants(&s, "job.succeeded", "billing"));
    assert_false(sub_wants(&s, "job.created", "billing"));
    assert_false(sub_wants(&s, "job.failed", "other"));
    assert_false(sub_wants(&s, "job.fail", "billing")); /* exact names, no prefixes */
    assert_false(sub_wants(&s, "job.failed", "billin"));
    s.enabled = false;
    assert_false(sub_wants(&s, "job.failed", "billing"));
    sub_release(&s);

    make_sub(&s, ID_1, "[\"job.step\"]", NULL); /* only events */
    assert_true(sub_wants(&s, "job.step", "x"));
    assert_false(sub_wants(&s, "job.failed", "x"));
    sub_release(&s);
    make_sub(&s, ID_1, NULL, "[\"a\", \"b\"]"); /* only queues */
    assert_true(sub_wants(&s, "job.failed", "b"));
    assert_false(sub_wants(&s, "job.failed", "c"));
    sub_release(&s);
}

static void test_event_types(void **state)
{
    (void)state;
    const char *known[] = {"job.created",          "job.queued",       "job.scheduled",
                           "job.running",          "job.step",         "job.dispatched",
                           "job.succeeded",        "job.failed",       "job.canceled",
                           "job.cancel_requested", "job.delivery_dead"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        assert_true(sub_event_type_known(known[i]));
    assert_false(sub_event_type_known("job.*"));
    assert_false(sub_event_type_known("job.FAILED"));
    assert_false(sub_event_type_known("failed"));
    assert_false(sub_event_type_known(""));
}

/* ---- POST body ---- */

static void test_from_json_minimal(void **state)
{
    (void)state;
    json_t *body = tu_json("{\"url\": \"https://example.com/hook\"}");
    struct sub s;
    struct errmsg err = {0};
    sub_init(&s);
    int rc = sub_from_json(body, &s, &err);
    expect_ok("minimal", rc, &err);
    assert_string_equal(s.url, "https://example.com/hook");
    assert_true(s.enabled);
    assert_null(s.events);
    assert_null(s.queues);
    assert_null(s.old_secret);
    /* A generated secret: whsec_ and 32 random bytes, different each time. */
    assert_non_null(s.secret);
    struct sign_key key;
    assert_int_equal(sign_secret_parse(s.secret, &key, &err), 0);
    assert_int_equal(key.len, 32);
    struct sub t;
    sub_init(&t);
    assert_int_equal(sub_from_json(body, &t, &err), 0);
    assert_string_not_equal(s.secret, t.secret);
    sub_release(&t);
    sub_release(&s);
    json_decref(body);
}

static void test_from_json_full(void **state)
{
    (void)state;
    json_t *body = tu_json("{\"url\": \"http://10.0.0.1:8080/x\", \"secret\": \"" SECRET_A "\","
                           " \"events\": [\"job.failed\", \"job.delivery_dead\"],"
                           " \"queues\": [\"billing\", \"a.b-c_d\"], \"enabled\": false}");
    struct sub s;
    struct errmsg err = {0};
    sub_init(&s);
    expect_ok("full", sub_from_json(body, &s, &err), &err);
    assert_string_equal(s.secret, SECRET_A);
    assert_false(s.enabled);
    json_t *want = json_pack("[s, s]", "job.failed", "job.delivery_dead");
    assert_json_equal(s.events, want);
    json_decref(want);
    assert_int_equal(json_array_size(s.queues), 2);
    sub_release(&s);
    json_decref(body);
}

static void expect_post_error(const char *text, const char *field)
{
    json_t *body = json_loads(text, JSON_ALLOW_NUL, NULL); /* as the server reads bodies */
    assert_non_null(body);
    struct sub s;
    struct errmsg err = {0};
    sub_init(&s);
    int rc = sub_from_json(body, &s, &err);
    expect_field(text, rc, &err, field);
    sub_release(&s);
    json_decref(body);
}

static void test_from_json_errors(void **state)
{
    (void)state;
    char *long_url = tu_repeat('a', SUB_URL_MAX + 1);
    memcpy(long_url, "https://", 8);
    char text[SUB_URL_MAX + 64];
    snprintf(text, sizeof(text), "{\"url\": \"%s\"}", long_url);
    expect_post_error(text, "url");
    long_url[SUB_URL_MAX] = '\0'; /* SUB_URL_MAX bytes: fine */
    snprintf(text, sizeof(text), "{\"url\": \"%s\"}", long_url);
    json_t *ok = tu_json(text);
    struct sub s;
    struct errmsg err = {0};
    sub_init(&s);
    expect_ok("url of SUB_URL_MAX bytes", sub_from_json(ok, &s, &err), &err);
    sub_release(&s);
    json_decref(ok);
    free(long_url);

    expect_post_error("{}", "url");
    expect_post_error("{\"url\": null}", "url");
    expect_post_error("{\"url\": 5}", "url");
    expect_post_error("{\"url\": \"ftp://example.com\"}", "url");
    expect_post_error("{\"url\": \"https://\"}", "url");
    expect_post_error("{\"url\": \"https://exa mple.com\"}", "url");
    expect_post_error("{\"url\": \"https://example.com/\\u0000x\"}", "url");
    expect_post_error("{\"url\": \"https://e.com\", \"secret\": \"nope\"}", "secret");
    expect_post_error("{\"url\": \"https://e.com\", \"secret\": \"" SECRET_8B "\"}", "secret");
    expect_post_error("{\"url\": \"https://e.com\", \"secret\": null}", "secret");
    expect_post_error("{\"url\": \"https://e.com\", \"events\": \"job.failed\"}", "events");
    expect_post_error("{\"url\": \"https://e.com\", \"events\": []}", "events");
    expect_post_error("{\"url\": \"https://e.com\", \"events\": [\"job.nope\"]}", "events");
    expect_post_error("{\"url\": \"https://e.com\", \"events\": [1]}", "events");
    expect_post_error("{\"url\": \"https://e.com\", \"events\": [\"job.failed\", \"job.failed\"]}",
                      "events");
    expect_post_error("{\"url\": \"https://e.com\", \"queues\": [\"bad name\"]}", "queues");
    expect_post_error("{\"url\": \"https://e.com\", \"queues\": [\"q\", \"q\"]}", "queues");
    expect_post_error("{\"url\": \"https://e.com\", \"queues\": {}}", "queues");
    expect_post_error("{\"url\": \"https://e.com\", \"enabled\": 1}", "enabled");
    expect_post_error("{\"url\": \"https://e.com\", \"enabled\": null}", "enabled");
    expect_post_error("{\"url\": \"https://e.com\", \"id\": \"" ID_1 "\"}", "id");
    expect_post_error("{\"url\": \"https://e.com\", \"rotate_secret\": true}", "rotate_secret");

    /* SUB_FILTER_MAX queues pass, one more does not. */
    json_t *body = json_pack("{s:s, s:[]}", "url", "https://e.com", "queues");
    for (int i = 0; i < SUB_FILTER_MAX; i++) {
        char q[16];
        snprintf(q, sizeof(q), "q%d", i);
        json_array_append_new(json_object_get(body, "queues"), json_string(q));
    }
    sub_init(&s);
    expect_ok("SUB_FILTER_MAX queues", sub_from_json(body, &s, &err), &err);
    sub_release(&s);
    json_array_append_new(json_object_get(body, "queues"), json_string("one-more"));
    sub_init(&s);
    expect_field("too many queues", sub_from_json(body, &s, &err), &err, "queues");
    sub_release(&s);
    json_decref(body);

    /* Not an object. */
    json_t *arr = tu_json("[]");
    sub_init(&s);
    assert_int_equal(sub_from_json(arr, &s, &err), -DRV_EBAD_FIELD);
    sub_release(&s);
    json_decref(arr);
}

/* ---- PATCH ---- */

static void expect_patch_error(const char *text, const char *field)
{
    json_t *body = tu_json(text);
    struct sub_patch p;
    struct errmsg err = {0};
    sub_patch_init(&p);
    int rc = sub_patch_from_json(body, &p, &err);
    expect_field(text, rc, &err, field);
    sub_patch_release(&p);
    json_decref(body);
}

static void test_patch_from_json(void **state)
{
    (void)state;
    struct sub_patch p;
    struct errmsg err = {0};
    json_t *body = tu_json("{\"events\": null, \"queues\": [\"q\"], \"enabled\": true}");
    sub_patch_init(&p);
    expect_ok("patch", sub_patch_from_json(body, &p, &err), &err);
    assert_true(p.set_events);
    assert_null(p.events);
    assert_true(p.set_queues);
    assert_non_null(p.queues);
    assert_true(p.set_enabled && p.enabled);
    assert_null(p.url);
    assert_null(p.secret);
    assert_false(p.set_grace);
    assert_int_equal(p.grace_s, SUB_GRACE_DEFAULT);
    sub_patch_release(&p);
    json_decref(body);

    body = tu_json("{\"rotate_secret\": true, \"grace_s\": 60}");
    sub_patch_init(&p);
    expect_ok("rotate", sub_patch_from_json(body, &p, &err), &err);
    assert_non_null(p.secret);
    assert_int_equal(strncmp(p.secret, "whsec_", 6), 0);
    assert_true(p.set_grace);
    assert_int_equal(p.grace_s, 60);
    sub_patch_release(&p);
    json_decref(body);

    body = tu_json("{\"rotate_secret\": false}");
    sub_patch_init(&p);
    expect_ok("no rotate", sub_patch_from_json(body, &p, &err), &err);
    assert_null(p.secret);
    sub_patch_release(&p);
    json_decref(body);

    expect_patch_error("{\"url\": null}", "url");
    expect_patch_error("{\"url\": \"gopher://x\"}", "url");
    expect_patch_error("{\"secret\": \"whsec_\"}", "secret");
    expect_patch_error("{\"secret\": \"" SECRET_A "\", \"rotate_secret\": true}", "rotate_secret");
    expect_patch_error("{\"rotate_secret\": \"yes\"}", "rotate_secret");
    expect_patch_error("{\"grace_s\": -1}", "grace_s");
    expect_patch_error("{\"grace_s\": 604801}", "grace_s");
    expect_patch_error("{\"grace_s\": 1.5}", "grace_s");
    expect_patch_error("{\"events\": [\"job.failed\", \"job.nope\"]}", "events");
    expect_patch_error("{\"queues\": []}", "queues");
    expect_patch_error("{\"enabled\": \"true\"}", "enabled");
    expect_patch_error("{\"created_at\": 1}", "created_at");
}

/* Apply a PATCH body (JSON text) to s at now_ms. */
static bool apply_text(struct sub *s, const char *text, int64_t now_ms)
{
    json_t *body = tu_json(text);
    struct sub_patch p;
    struct errmsg err = {0};
    bool changed = false;
    sub_patch_init(&p);
    expect_ok(text, sub_patch_from_json(body, &p, &err), &err);
    assert_int_equal(sub_patch_apply(s, &p, now_ms, &changed), 0);
    sub_patch_release(&p);
    json_decref(body);
    return changed;
}

static void test_patch_rotation(void **state)
{
    (void)state;
    struct sub s;
    make_sub(&s, ID_1, NULL, NULL);
    int64_t now = 1800000000000;

    /* A new secret: the old one signs for grace_s more seconds. */
    assert_true(apply_text(&s, "{\"secret\": \"" SECRET_B "\", \"grace_s\": 3600}", now));
    assert_string_equal(s.secret, SECRET_B);
    assert_string_equal(s.old_secret, SECRET_A);
    assert_int_equal(s.old_secret_until_ms, now + 3600 * 1000);
    assert_int_equal(s.updated_at_ms, now);
    json_t *j = sub_to_json(&s, true, now);
    assert_string_equal(json_string_value(json_object_get(j, "secret_rotating_until")),
                        "2027-01-15T09:00:00.000Z");
    json_decref(j);

    /* The same secret again changes nothing about the rotation. */
    assert_false(apply_text(&s, "{\"secret\": \"" SECRET_B "\"}", now + 1));
    assert_string_equal(s.old_secret, SECRET_A);
    assert_int_equal(s.old_secret_until_ms, now + 3600 * 1000);

    /* grace_s alone moves the deadline; 0 ends it. */
    assert_false(apply_text(&s, "{\"grace_s\": 60}", now + 1000));
    assert_int_equal(s.old_secret_until_ms, now + 1000 + 60 * 1000);
    assert_false(apply_text(&s, "{\"grace_s\": 0}", now + 2000));
    assert_null(s.old_secret);
    assert_int_equal(s.old_secret_until_ms, 0);

    /* Without grace_s: SUB_GRACE_DEFAULT. */
    assert_true(apply_text(&s, "{\"secret\": \"" SECRET_A "\"}", now));
    assert_string_equal(s.old_secret, SECRET_B);
    assert_int_equal(s.old_secret_until_ms, now + (int64_t)SUB_GRACE_DEFAULT * 1000);

    /* grace_s 0 with a new secret: no old secret at all. */
    assert_true(apply_text(&s, "{\"secret\": \"" SECRET_B "\", \"grace_s\": 0}", now));
    assert_string_equal(s.secret, SECRET_B);
    assert_null(s.old_secret);

    /* An old secret past its deadline is dropped by any patch, and not shown. */
    assert_true(apply_text(&s, "{\"secret\": \"" SECRET_A "\", \"grace_s\": 10}", now));
    j = sub_to_json(&s, true, now + 10 * 1000);
    assert_true(json_is_null(json_object_get(j, "secret_rotating_until")));
    json_decref(j);
    assert_false(apply_text(&s, "{\"enabled\": true}", now + 10 * 1000));
    assert_null(s.old_secret);
    sub_release(&s);
}

static void test_patch_fields(void **state)
{
    (void)state;
    struct sub s;
    make_sub(&s, ID_1, "[\"job.failed\"]", "[\"q\"]");
    s.enabled = false;
    s.disabled_reason = strdup("410 Gone from https://example.com/hook");

    /* enabled=false leaves the reason; enabled=true clears it. */
    apply_text(&s, "{\"enabled\": false}", 2);
    assert_non_null(s.disabled_reason);
    apply_text(&s, "{\"url\": \"https://other.example/h\", \"enabled\": true}", 3);
    assert_true(s.enabled);
    assert_null(s.disabled_reason);
    assert_string_equal(s.url, "https://other.example/h");
    assert_non_null(s.events); /* untouched */

    apply_text(&s, "{\"events\": null}", 4);
    assert_null(s.events);
    assert_non_null(s.queues);
    assert_true(sub_wants(&s, "job.created", "q"));
    apply_text(&s, "{\"queues\": null, \"events\": [\"job.step\"]}", 5);
    assert_null(s.queues);
    assert_true(sub_wants(&s, "job.step", "anything"));
    assert_false(sub_wants(&s, "job.failed", "anything"));
    assert_int_equal(s.updated_at_ms, 5);
    assert_int_equal(s.created_at_ms, 1700000000000);
    sub_release(&s);
}

/* ---- JSON out ---- */

static void test_to_json(void **state)
{
    (void)state;
    struct sub s;
    make_sub(&s, ID_1, "[\"job.failed\"]", NULL);
    json_t *j = sub_to_json(&s, true, 0);
    json_t *want = tu_json("{\"id\": \"" ID_1 "\", \"url\": \"https://example.com/hook\","
                           " \"secret\": \"" SECRET_A "\", \"events\": [\"job.failed\"],"
                           " \"queues\": null, \"enabled\": true, \"disabled_reason\": null,"
                           " \"secret_rotating_until\": null,"
                           " \"created_at\": \"2023-11-14T22:13:20.000Z\","
                           " \"updated_at\": \"2023-11-14T22:13:20.000Z\"}");
    assert_json_equal(j, want);
    json_decref(j);
    json_decref(want);

    j = sub_to_json(&s, false, 0);
    assert_string_equal(json_string_value(json_object_get(j, "secret")), "<redacted>");
    char *text = json_dumps(j, 0);
    assert_null(strstr(text, "whsec_"));
    free(text);
    json_decref(j);
    sub_release(&s);
}

/* ---- the cache ---- */

static void test_cache_put_get_remove(void **state)
{
    (void)state;
    struct sub_cache *c;
    assert_int_equal(sub_cache_new(&c), 0);
    assert_false(sub_cache_any(c));
    assert_int_equal(sub_cache_count(c), 0);

    struct sub a, b, out;
    make_sub(&a, ID_2, "[\"job.failed\"]", NULL);
    make_sub(&b, ID_1, NULL, "[\"q\"]");
    b.enabled = false;
    assert_int_equal(sub_cache_put(c, &a), 0);
    assert_int_equal(sub_cache_put(c, &b), 0);
    assert_int_equal(sub_cache_count(c), 2);
    assert_true(sub_cache_any(c));

    /* The cache holds copies: changing (or freeing) the original changes nothing. */
    free(a.url);
    a.url = strdup("https://changed.example/");
    json_array_append_new(a.events, json_string("job.created"));
    assert_int_equal(sub_cache_get(c, ID_2, &out), 0);
    assert_string_equal(out.url, "https://example.com/hook");
    assert_int_equal(json_array_size(out.events), 1);
    /* ... and so does what get hands out. */
    free(out.url);
    out.url = strdup("https://mine.example/");
    json_array_clear(out.events);
    sub_release(&out);
    assert_int_equal(sub_cache_get(c, ID_2, &out), 0);
    assert_string_equal(out.url, "https://example.com/hook");
    assert_int_equal(json_array_size(out.events), 1);
    assert_string_equal(out.secret, SECRET_A);
    assert_int_equal(out.created_at_ms, 1700000000000);
    sub_release(&out);

    assert_int_equal(sub_cache_get(c, ID_3, &out), -DRV_ENOT_FOUND);

    /* Replace: the new version, not a second entry. */
    assert_int_equal(sub_cache_put(c, &a), 0);
    assert_int_equal(sub_cache_count(c), 2);
    assert_int_equal(sub_cache_get(c, ID_2, &out), 0);
    assert_string_equal(out.url, "https://changed.example/");
    sub_release(&out);

    /* Disabling the only enabled one: none left. */
    a.enabled = false;
    assert_int_equal(sub_cache_put(c, &a), 0);
    assert_false(sub_cache_any(c));
    a.enabled = true;
    assert_int_equal(sub_cache_put(c, &a), 0);
    assert_true(sub_cache_any(c));

    sub_cache_remove(c, ID_2);
    assert_int_equal(sub_cache_get(c, ID_2, &out), -DRV_ENOT_FOUND);
    assert_int_equal(sub_cache_count(c), 1);
    assert_false(sub_cache_any(c)); /* b is disabled */
    sub_cache_remove(c, ID_2);      /* absent: nothing happens */
    sub_cache_remove(c, ID_1);
    assert_int_equal(sub_cache_count(c), 0);

    sub_release(&a);
    sub_release(&b);
    sub_cache_free(c);
}

static void test_cache_match(void **state)
{
    (void)state;
    struct sub_cache *c;
    assert_int_equal(sub_cache_new(&c), 0);
    char ids[4][SUB_ID_LEN + 1];
    assert_int_equal(sub_cache_match(c, "job.failed", "q", ids, 4), 0);

    struct sub s1, s2, s3;
    make_sub(&s3, ID_3, NULL, NULL);                          /* everything */
    make_sub(&s1, ID_1, "[\"job.failed\"]", "[\"billing\"]"); /* failures of billing */
    make_sub(&s2, ID_2, "[\"job.failed\", \"job.succeeded\"]", NULL);
    assert_int_equal(sub_cache_put(c, &s3), 0);
    assert_int_equal(sub_cache_put(c, &s1), 0);
    assert_int_equal(sub_cache_put(c, &s2), 0);

    /* Ids come in id order. */
    assert_int_equal(sub_cache_match(c, "job.failed", "billing", ids, 4), 3);
    assert_string_equal(ids[0], ID_1);
    assert_string_equal(ids[1], ID_2);
    assert_string_equal(ids[2], ID_3);
    assert_int_equal(sub_cache_match(c, "job.failed", "other", ids, 4), 2);
    assert_string_equal(ids[0], ID_2);
    assert_string_equal(ids[1], ID_3);
    assert_int_equal(sub_cache_match(c, "job.created", "billing", ids, 4), 1);
    assert_string_equal(ids[0], ID_3);
    /* At most max. */
    assert_int_equal(sub_cache_match(c, "job.failed", "billing", ids, 2), 2);
    assert_string_equal(ids[1], ID_2);
    /* Wanted at all, by anyone but one. */
    assert_true(sub_cache_wanted(c, "job.failed", "billing", NULL));
    assert_true(sub_cache_wanted(c, "job.created", "billing", ID_1));
    assert_false(sub_cache_wanted(c, "job.created", "billing", ID_3)); /* only s3 wants it */
    assert_true(sub_cache_wanted(c, "job.failed", "other", ID_3));     /* s2 does too */
    /* A disabled one matches nothing. */
    s3.enabled = false;
    assert_int_equal(sub_cache_put(c, &s3), 0);
    assert_int_equal(sub_cache_match(c, "job.created", "billing", ids, 4), 0);
    assert_false(sub_cache_wanted(c, "job.created", "billing", NULL));

    sub_release(&s1);
    sub_release(&s2);
    sub_release(&s3);
    sub_cache_free(c);
}

static void test_copy(void **state)
{
    (void)state;
    struct sub s, d;
    make_sub(&s, ID_1, "[\"job.failed\"]", "[\"q\"]");
    s.old_secret = strdup(SECRET_B);
    s.old_secret_until_ms = 42;
    s.disabled_reason = strdup("gone");
    assert_int_equal(sub_copy(&d, &s), 0);
    sub_release(&s);
    assert_string_equal(d.id, ID_1);
    assert_string_equal(d.secret, SECRET_A);
    assert_string_equal(d.old_secret, SECRET_B);
    assert_int_equal(d.old_secret_until_ms, 42);
    assert_string_equal(d.disabled_reason, "gone");
    assert_true(sub_wants(&d, "job.failed", "q"));
    sub_release(&d);
    /* sub_release leaves an empty subscription: releasing twice is fine. */
    sub_release(&d);
    assert_null(d.url);
}

/* Puts and removes on one thread, matches and gets on another (run under ASan/TSan). */
struct race {
    struct sub_cache *c;
    atomic_int stop;
    atomic_int bad; /* copies seen without a url (cmocka asserts only on the main thread) */
};

static void *race_reader(void *arg)
{
    struct race *r = arg;
    char ids[8][SUB_ID_LEN + 1];
    while (!atomic_load(&r->stop)) {
        int n = sub_cache_match(r->c, "job.failed", "q", ids, 8);
        for (int i = 0; i < n; i++) {
            struct sub s;
            if (sub_cache_get(r->c, ids[i], &s) == 0) {
                if (s.url == NULL || strcmp(s.id, ids[i]) != 0)
                    atomic_fetch_add(&r->bad, 1);
                sub_release(&s);
            }
        }
    }
    return NULL;
}

static void test_cache_threads(void **state)
{
    (void)state;
    struct race r = {.c = NULL};
    assert_int_equal(sub_cache_new(&r.c), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, race_reader, &r), 0);
    struct sub s;
    make_sub(&s, ID_1, "[\"job.failed\"]", NULL);
    for (int i = 0; i < 2000; i++) {
        s.id[SUB_ID_LEN - 1] = "0123456789ABCDEF"[i % 16];
        assert_int_equal(sub_cache_put(r.c, &s), 0);
        if (i % 3 == 0)
            sub_cache_remove(r.c, s.id);
    }
    atomic_store(&r.stop, 1);
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&r.bad), 0);
    assert_true(sub_cache_count(r.c) <= 16);
    sub_release(&s);
    sub_cache_free(r.c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wants_no_filters),
        cmocka_unit_test(test_wants_filters),
        cmocka_unit_test(test_event_types),
        cmocka_unit_test(test_from_json_minimal),
        cmocka_unit_test(test_from_json_full),
        cmocka_unit_test(test_from_json_errors),
        cmocka_unit_test(test_patch_from_json),
        cmocka_unit_test(test_patch_rotation),
        cmocka_unit_test(test_patch_fields),
        cmocka_unit_test(test_to_json),
        cmocka_unit_test(test_cache_put_get_remove),
        cmocka_unit_test(test_cache_match),
        cmocka_unit_test(test_copy),
        cmocka_unit_test(test_cache_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
