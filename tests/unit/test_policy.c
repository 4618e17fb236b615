/*
 * test_policy.c - queue policies (src/policy.h): defaults as docs/api.md
 * lists them, validation that names the field, the JSON round trip and
 * redaction of secrets.
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
#include "policy.h"
#include "test_util.h"

/* docs/api.md, "PUT /v1/queues/{name}", the default column, as JSON. */
static const char *const docs_defaults = "{"
                                         "\"mode\": \"pull\","
                                         "\"steps\": [],"
                                         "\"timeout_s\": 3600,"
                                         "\"heartbeat_timeout_s\": 60,"
                                         "\"queue_timeout_s\": 0,"
                                         "\"max_attempts\": 1,"
                                         "\"backoff\": {\"initial_s\": 5, \"factor\": 2.0,"
                                         "              \"max_s\": 600, \"jitter\": 0.2},"
                                         "\"retry_cap\": 5,"
                                         "\"concurrency_limit\": 0,"
                                         "\"on_limit\": \"queue\","
                                         "\"dedup_window_s\": 0,"
                                         "\"on_failure\": null,"
                                         "\"retention_s\": 0,"
                                         "\"artifact_inline_max\": 262144,"
                                         "\"dispatch\": null,"
                                         "\"callback_secret\": null"
                                         "}";

/* A valid callback_secret (whsec_ and base64 of 24 bytes), as a JSON member. */
#define TEST_SECRET "\"callback_secret\": \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\""

/* Every field set to something other than its default. */
static const char *const full_policy =
    "{"
    "\"mode\": \"http\","
    "\"steps\": [\"vm_created\", \"ansible_started\", \"ansible_complete\"],"
    "\"timeout_s\": 7200,"
    "\"heartbeat_timeout_s\": 30,"
    "\"queue_timeout_s\": 900,"
    "\"max_attempts\": 3,"
    "\"backoff\": {\"initial_s\": 10, \"factor\": 1.5, \"max_s\": 300, \"jitter\": 0.5},"
    "\"retry_cap\": 10,"
    "\"concurrency_limit\": 1,"
    "\"on_limit\": \"reject\","
    "\"dedup_window_s\": 3600,"
    "\"on_failure\": \"provision-cleanup\","
    "\"retention_s\": 2592000,"
    "\"artifact_inline_max\": 1024,"
    "\"dispatch\": {\"url\": \"https://api.example.com/repos/o/r/dispatches\","
    "               \"method\": \"POST\","
    "               \"headers\": {\"Authorization\": \"Bearer gh-s3cret-token\","
    "                           \"Accept\": \"application/json\"},"
    "               \"body\": {\"ref\": \"main\", \"inputs\": {\"job\": \"{{job.id}}\","
    "                        \"cb\": \"{{callback.url}}\"}}},"
    "\"callback_secret\": \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\""
    "}";

/* Parse text into a fresh default policy; returns rc, fills err. */
static int parse(const char *text, struct policy *p, struct errmsg *err)
{
    json_t *j = tu_json(text);
    policy_init(p);
    memset(err, 0, sizeof(*err));
    int rc = policy_from_json(j, p, err);
    json_decref(j);
    return rc;
}

static void expect_field_error(const char *text, const char *field)
{
    struct policy p;
    struct errmsg err;
    int rc = parse(text, &p, &err);
    policy_release(&p);
    tu_expect_field_error(text, rc, &err, field);
}

static void expect_ok(const char *text)
{
    struct policy p;
    struct errmsg err;
    int rc = parse(text, &p, &err);
    policy_release(&p);
    tu_expect_ok(text, rc, &err);
}

static void test_defaults_struct(void **state)
{
    (void)state;
    struct policy p;
    policy_init(&p);
    assert_int_equal(p.mode, POLICY_PULL);
    assert_true(json_is_array(p.steps));
    assert_int_equal(json_array_size(p.steps), 0);
    assert_int_equal(p.timeout_s, 3600);
    assert_int_equal(p.heartbeat_timeout_s, 60);
    assert_int_equal(p.queue_timeout_s, 0);
    assert_int_equal(p.max_attempts, 1);
    assert_int_equal(p.backoff.initial_s, 5);
    assert_true(p.backoff.factor == 2.0);
    assert_int_equal(p.backoff.max_s, 600);
    assert_true(p.backoff.jitter == 0.2);
    assert_int_equal(p.retry_cap, 5);
    assert_int_equal(p.concurrency_limit, 0);
    assert_int_equal(p.on_limit, POLICY_LIMIT_QUEUE);
    assert_int_equal(p.dedup_window_s, 0);
    assert_null(p.on_failure);
    assert_int_equal(p.retention_s, 0);
    assert_int_equal(p.artifact_inline_max, 262144);
    assert_null(p.dispatch);
    assert_null(p.callback_secret);
    policy_release(&p);
}

static void test_defaults_json(void **state)
{
    (void)state;
    json_t *want = tu_json(docs_defaults);
    struct policy p;
    policy_init(&p);
    json_t *got = policy_to_json(&p, true);
    assert_non_null(got);
    assert_json_equal(got, want);
    json_decref(got);
    got = policy_to_json(&p, false); /* nothing to redact */
    assert_json_equal(got, want);
    json_decref(got);
    policy_release(&p);

    /* An empty body is the default policy. */
    struct errmsg err;
    assert_int_equal(parse("{}", &p, &err), 0);
    got = policy_to_json(&p, true);
    assert_json_equal(got, want);
    json_decref(got);
    policy_release(&p);
    json_decref(want);
}

/* A field given changes only that field. */
static void test_partial_keeps_defaults(void **state)
{
    (void)state;
    struct policy p;
    struct errmsg err;
    assert_int_equal(parse("{\"timeout_s\": 10, \"backoff\": {\"jitter\": 0}}", &p, &err), 0);
    json_t *got = policy_to_json(&p, true);
    json_t *want = tu_json(docs_defaults);
    json_object_set_new(want, "timeout_s", json_integer(10));
    json_object_set_new(json_object_get(want, "backoff"), "jitter", json_real(0.0));
    assert_json_equal(got, want);
    json_decref(got);
    json_decref(want);
    policy_release(&p);
}

static void test_round_trip(void **state)
{
    (void)state;
    json_t *full = tu_json(full_policy);
    struct policy p;
    struct errmsg err;
    policy_init(&p);
    int rc = policy_from_json(full, &p, &err);
    if (rc != 0)
        fail_msg("full policy refused: %s: %s", err.field, err.text);

    assert_int_equal(p.mode, POLICY_HTTP);
    assert_int_equal(json_array_size(p.steps), 3);
    assert_int_equal(p.timeout_s, 7200);
    assert_int_equal(p.heartbeat_timeout_s, 30);
    assert_int_equal(p.queue_timeout_s, 900);
    assert_int_equal(p.max_attempts, 3);
    assert_int_equal(p.backoff.initial_s, 10);
    assert_true(p.backoff.factor == 1.5);
    assert_int_equal(p.backoff.max_s, 300);
    assert_true(p.backoff.jitter == 0.5);
    assert_int_equal(p.retry_cap, 10);
    assert_int_equal(p.concurrency_limit, 1);
    assert_int_equal(p.on_limit, POLICY_LIMIT_REJECT);
    assert_int_equal(p.dedup_window_s, 3600);
    assert_string_equal(p.on_failure, "provision-cleanup");
    assert_int_equal(p.retention_s, 2592000);
    assert_int_equal(p.artifact_inline_max, 1024);
    assert_json_equal(p.dispatch, json_object_get(full, "dispatch"));
    assert_string_equal(p.callback_secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");

    /* to_json(from_json(x)) == x when x names every field ... */
    json_t *once = policy_to_json(&p, true);
    assert_json_equal(once, full);

    /* ... and from_json(to_json(p)) == p. */
    struct policy q;
    policy_init(&q);
    assert_int_equal(policy_from_json(once, &q, &err), 0);
    json_t *twice = policy_to_json(&q, true);
    assert_json_equal(twice, once);
    assert_int_equal(q.mode, p.mode);
    assert_json_equal(q.steps, p.steps);
    assert_int_equal(q.timeout_s, p.timeout_s);
    assert_int_equal(q.heartbeat_timeout_s, p.heartbeat_timeout_s);
    assert_int_equal(q.queue_timeout_s, p.queue_timeout_s);
    assert_int_equal(q.max_attempts, p.max_attempts);
    assert_memory_equal(&q.backoff, &p.backoff, sizeof(q.backoff));
    assert_int_equal(q.retry_cap, p.retry_cap);
    assert_int_equal(q.concurrency_limit, p.concurrency_limit);
    assert_int_equal(q.on_limit, p.on_limit);
    assert_int_equal(q.dedup_window_s, p.dedup_window_s);
    assert_string_equal(q.on_failure, p.on_failure);
    assert_int_equal(q.retention_s, p.retention_s);
    assert_int_equal(q.artifact_inline_max, p.artifact_inline_max);
    assert_json_equal(q.dispatch, p.dispatch);
    assert_string_equal(q.callback_secret, p.callback_secret);
    /* The policy owns copies, not the caller's JSON. */
    assert_ptr_not_equal(q.dispatch, json_object_get(once, "dispatch"));
    assert_ptr_not_equal(q.steps, json_object_get(once, "steps"));

    json_decref(twice);
    json_decref(once);
    json_decref(full);
    policy_release(&q);
    policy_release(&p);

    /* The defaults round-trip too. */
    policy_init(&p);
    once = policy_to_json(&p, true);
    policy_init(&q);
    assert_int_equal(policy_from_json(once, &q, &err), 0);
    twice = policy_to_json(&q, true);
    assert_json_equal(twice, once);
    json_decref(once);
    json_decref(twice);
    policy_release(&p);
    policy_release(&q);
}

/* Each integer field: wrong types, both ends of its range and one past each. */
static void test_integer_fields(void **state)
{
    (void)state;
    static const struct {
        const char *field;
        long long min, max;
    } ints[] = {
        {"timeout_s", 0, 604800},         {"heartbeat_timeout_s", 0, 86400},
        {"queue_timeout_s", 0, 604800},   {"max_attempts", 1, 100},
        {"retry_cap", 100, 1000}, /* must not be below max_attempts, so test from 100 up */
        {"concurrency_limit", 0, 100000}, {"dedup_window_s", 0, 31536000},
        {"retention_s", 0, 315360000},    {"artifact_inline_max", 0, 16777216},
    };
    char body[256];
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        const char *f = ints[i].field;
        /* max_attempts up to 100 needs retry_cap >= it. */
        const char *extra = strcmp(f, "max_attempts") == 0 ? ", \"retry_cap\": 1000" : "";
        snprintf(body, sizeof(body), "{\"%s\": %lld%s}", f, ints[i].min, extra);
        expect_ok(body);
        snprintf(body, sizeof(body), "{\"%s\": %lld%s}", f, ints[i].max, extra);
        expect_ok(body);
        snprintf(body, sizeof(body), "{\"%s\": %lld%s}", f, ints[i].max + 1, extra);
        expect_field_error(body, f);
        snprintf(body, sizeof(body), "{\"%s\": -1%s}", f, extra);
        expect_field_error(body, f);
        const char *wrong[] = {"\"10\"", "10.0", "1.5", "true",
                               "null",   "[]",   "{}",  "9223372036854775807"};
        for (size_t k = 0; k < sizeof(wrong) / sizeof(wrong[0]); k++) {
            snprintf(body, sizeof(body), "{\"%s\": %s%s}", f, wrong[k], extra);
            expect_field_error(body, f);
        }
    }
    /* The lower bounds that are not 0. */
    expect_field_error("{\"max_attempts\": 0}", "max_attempts");
    expect_field_error("{\"retry_cap\": 0}", "retry_cap");
    expect_ok("{\"retry_cap\": 1}");
}

static void test_enum_fields(void **state)
{
    (void)state;
    expect_ok("{\"mode\": \"pull\"}");
    expect_field_error("{\"mode\": \"push\"}", "mode");
    expect_field_error("{\"mode\": \"PULL\"}", "mode");
    expect_field_error("{\"mode\": 1}", "mode");
    expect_field_error("{\"mode\": null}", "mode");
    expect_ok("{\"on_limit\": \"queue\"}");
    expect_ok("{\"on_limit\": \"reject\"}");
    expect_field_error("{\"on_limit\": \"drop\"}", "on_limit");
    expect_field_error("{\"on_limit\": true}", "on_limit");
    expect_field_error("{\"on_limit\": null}", "on_limit");
}

static void test_backoff(void **state)
{
    (void)state;
    expect_ok("{\"backoff\": {}}");
    expect_ok("{\"backoff\": {\"initial_s\": 0, \"max_s\": 0, \"factor\": 1, \"jitter\": 0}}");
    expect_ok("{\"backoff\": {\"initial_s\": 86400, \"max_s\": 604800, \"factor\": 10, "
              "\"jitter\": 1}}");
    expect_field_error("{\"backoff\": 5}", "backoff");
    expect_field_error("{\"backoff\": []}", "backoff");
    expect_field_error("{\"backoff\": null}", "backoff");
    expect_field_error("{\"backoff\": {\"initial_s\": -1}}", "backoff.initial_s");
    expect_field_error("{\"backoff\": {\"initial_s\": 86401, \"max_s\": 604800}}",
                       "backoff.initial_s");
    expect_field_error("{\"backoff\": {\"initial_s\": \"5\"}}", "backoff.initial_s");
    expect_field_error("{\"backoff\": {\"initial_s\": 2.5}}", "backoff.initial_s");
    expect_field_error("{\"backoff\": {\"factor\": 0.99}}", "backoff.factor");
    expect_field_error("{\"backoff\": {\"factor\": 10.01}}", "backoff.factor");
    expect_field_error("{\"backoff\": {\"factor\": \"2\"}}", "backoff.factor");
    expect_field_error("{\"backoff\": {\"max_s\": -1}}", "backoff.max_s");
    expect_field_error("{\"backoff\": {\"max_s\": 604801}}", "backoff.max_s");
    expect_field_error("{\"backoff\": {\"jitter\": -0.01}}", "backoff.jitter");
    expect_field_error("{\"backoff\": {\"jitter\": 1.01}}", "backoff.jitter");
    expect_field_error("{\"backoff\": {\"jitter\": null}}", "backoff.jitter");
    /* max must not be below initial, whichever was given. */
    expect_field_error("{\"backoff\": {\"initial_s\": 100, \"max_s\": 50}}", "backoff.max_s");
    expect_field_error("{\"backoff\": {\"initial_s\": 700}}", "backoff.max_s");
    expect_field_error("{\"backoff\": {\"max_s\": 4}}", "backoff.max_s");

    /* An integer factor is a number like any other. */
    struct policy p;
    struct errmsg err;
    assert_int_equal(parse("{\"backoff\": {\"factor\": 3}}", &p, &err), 0);
    assert_true(p.backoff.factor == 3.0);
    policy_release(&p);

    /* An unknown backoff field is refused and named. */
    memset(&err, 0, sizeof(err));
    assert_int_equal(parse("{\"backoff\": {\"base_s\": 1}}", &p, &err), -DRV_EBAD_FIELD);
    assert_true(strncmp(err.field, "backoff", 7) == 0);
    assert_non_null(strstr(err.text, "base_s"));
    policy_release(&p);
}

static void test_steps(void **state)
{
    (void)state;
    expect_ok("{\"steps\": []}");
    expect_ok("{\"steps\": [\"a\"]}");
    expect_field_error("{\"steps\": \"a\"}", "steps");
    expect_field_error("{\"steps\": {}}", "steps");
    expect_field_error("{\"steps\": null}", "steps");
    expect_field_error("{\"steps\": [1]}", "steps");
    expect_field_error("{\"steps\": [\"\"]}", "steps");
    expect_field_error("{\"steps\": [\"a\", null]}", "steps");
    expect_field_error("{\"steps\": [\"vm_created\", \"ansible\", \"vm_created\"]}", "steps");

    /* Names up to POLICY_STEP_MAX bytes; at most POLICY_STEPS_MAX of them. */
    char body[8192];
    char *name = tu_repeat('s', POLICY_STEP_MAX);
    snprintf(body, sizeof(body), "{\"steps\": [\"%s\"]}", name);
    expect_ok(body);
    free(name);
    name = tu_repeat('s', POLICY_STEP_MAX + 1);
    snprintf(body, sizeof(body), "{\"steps\": [\"%s\"]}", name);
    expect_field_error(body, "steps");
    free(name);

    for (int count = POLICY_STEPS_MAX; count <= POLICY_STEPS_MAX + 1; count++) {
        size_t len = (size_t)snprintf(body, sizeof(body), "{\"steps\": [");
        for (int i = 0; i < count; i++)
            len +=
                (size_t)snprintf(body + len, sizeof(body) - len, "%s\"step%d\"", i ? "," : "", i);
        snprintf(body + len, sizeof(body) - len, "]}");
        if (count <= POLICY_STEPS_MAX)
            expect_ok(body);
        else
            expect_field_error(body, "steps");
    }
}

static void test_on_failure(void **state)
{
    (void)state;
    expect_ok("{\"on_failure\": null}");
    expect_ok("{\"on_failure\": \"cleanup.v2_A-z\"}");
    expect_field_error("{\"on_failure\": 5}", "on_failure");
    expect_field_error("{\"on_failure\": \"\"}", "on_failure");
    expect_field_error("{\"on_failure\": \"has space\"}", "on_failure");
    expect_field_error("{\"on_failure\": \"a/b\"}", "on_failure");
    char body[256];
    char *q = tu_repeat('q', 65);
    snprintf(body, sizeof(body), "{\"on_failure\": \"%s\"}", q);
    expect_field_error(body, "on_failure");
    q[64] = '\0';
    snprintf(body, sizeof(body), "{\"on_failure\": \"%s\"}", q);
    expect_ok(body);
    free(q);
}

static void test_dispatch(void **state)
{
    (void)state;
    expect_ok("{\"dispatch\": null}");
    expect_ok("{\"dispatch\": {\"url\": \"http://runner.local/go\"}}");
    expect_ok("{\"dispatch\": {\"url\": \"https://x.example/{{job.id}}\", \"method\": \"PATCH\","
              " \"headers\": {}, \"body\": [1, \"{{payload.vm}}\"]}}");
    expect_field_error("{\"dispatch\": \"https://x\"}", "dispatch");
    expect_field_error("{\"dispatch\": []}", "dispatch");
    expect_field_error("{\"dispatch\": {}}", "dispatch.url");
    expect_field_error("{\"dispatch\": {\"method\": \"POST\"}}", "dispatch.url");
    expect_field_error("{\"dispatch\": {\"url\": 5}}", "dispatch.url");
    expect_field_error("{\"dispatch\": {\"url\": \"ftp://x/y\"}}", "dispatch.url");
    expect_field_error("{\"dispatch\": {\"url\": \"http://\"}}", "dispatch.url");
    expect_field_error("{\"dispatch\": {\"url\": \"runner.local\"}}", "dispatch.url");
    expect_field_error("{\"dispatch\": {\"url\": \"https://x\", \"method\": \"GET\"}}",
                       "dispatch.method");
    expect_field_error("{\"dispatch\": {\"url\": \"https://x\", \"method\": \"post\"}}",
                       "dispatch.method");
    expect_field_error("{\"dispatch\": {\"url\": \"https://x\", \"method\": 1}}",
                       "dispatch.method");
    expect_field_error("{\"dispatch\": {\"url\": \"https://x\", \"headers\": []}}",
                       "dispatch.headers");
    expect_field_error("{\"dispatch\": {\"url\": \"https://x\", \"headers\": {\"A\": 5}}}",
                       "dispatch.headers");
    expect_field_error("{\"dispatch\": {\"url\": \"https://x\", "
                       "\"headers\": {\"A\": \"v\\r\\nInjected: 1\"}}}",
                       "dispatch.headers");
    expect_field_error("{\"dispatch\": {\"url\": \"https://x\", \"headers\": {\"A B\": \"v\"}}}",
                       "dispatch.headers");
    expect_field_error("{\"dispatch\": {\"url\": \"https://x\", \"headers\": {\"A:\": \"v\"}}}",
                       "dispatch.headers");
    expect_field_error("{\"dispatch\": {\"url\": \"https://x\", \"headers\": {\"\": \"v\"}}}",
                       "dispatch.headers");

    /* URL up to JOB_URL_MAX bytes. */
    char body[4096];
    char *host = tu_repeat('h', 2048 - strlen("https://"));
    snprintf(body, sizeof(body), "{\"dispatch\": {\"url\": \"https://%s\"}}", host);
    expect_ok(body);
    free(host);
    host = tu_repeat('h', 2049 - strlen("https://"));
    snprintf(body, sizeof(body), "{\"dispatch\": {\"url\": \"https://%s\"}}", host);
    expect_field_error(body, "dispatch.url");
    free(host);

    /* At most POLICY_HEADERS_MAX headers. */
    for (int count = POLICY_HEADERS_MAX; count <= POLICY_HEADERS_MAX + 1; count++) {
        size_t len = (size_t)snprintf(body, sizeof(body),
                                      "{\"dispatch\": {\"url\": \"https://x\", \"headers\": {");
        for (int i = 0; i < count; i++)
            len += (size_t)snprintf(body + len, sizeof(body) - len, "%s\"X-H%d\": \"v\"",
                                    i ? "," : "", i);
        snprintf(body + len, sizeof(body) - len, "}}}");
        if (count <= POLICY_HEADERS_MAX)
            expect_ok(body);
        else
            expect_field_error(body, "dispatch.headers");
    }

    /* An unknown dispatch field is refused and named. */
    struct policy p;
    struct errmsg err;
    assert_int_equal(parse("{\"dispatch\": {\"url\": \"https://x\", \"timeout\": 5}}", &p, &err),
                     -DRV_EBAD_FIELD);
    assert_true(strncmp(err.field, "dispatch", 8) == 0);
    assert_non_null(strstr(err.text, "timeout"));
    policy_release(&p);
}

/* PUT /v1/queues/{q} refuses a dispatch whose placeholders are bad, naming where. */
static void test_dispatch_templates(void **state)
{
    (void)state;
    expect_ok("{\"mode\": \"http\", " TEST_SECRET ", \"dispatch\": {"
              "\"url\": \"https://api.github.com/repos/o/r/actions/workflows/w.yml/dispatches\","
              "\"headers\": {\"Authorization\": \"Bearer {{env.GITHUB_TOKEN}}\"},"
              "\"body\": {\"ref\": \"main\", \"inputs\": {\"job_id\": \"{{job.id}}\","
              "\"attempt\": \"{{job.attempt | string}}\", \"cb\": \"{{callback.url}}\","
              "\"tok\": \"{{callback.token}}\", \"cfg\": \"{{payload.config.region}}\","
              "\"cp\": \"{{checkpoints}}\"}}}}");
    expect_field_error("{\"dispatch\": {\"url\": \"https://x/\","
                       "\"body\": {\"inputs\": {\"job_id\": \"{{job.name}}\"}}}}",
                       "dispatch.body.inputs.job_id");
    expect_field_error("{\"dispatch\": {\"url\": \"https://x/\", \"body\": [\"{{job.id\"]}}",
                       "dispatch.body[0]");
    expect_field_error("{\"dispatch\": {\"url\": \"https://x/\", \"body\": \"{{}}\"}}",
                       "dispatch.body");
    expect_field_error("{\"dispatch\": {\"url\": \"https://x/\", \"body\": \"{{payload.}}\"}}",
                       "dispatch.body");
    expect_field_error("{\"dispatch\": {\"url\": \"https://x/{{nope}}\"}}", "dispatch.url");
    expect_field_error("{\"dispatch\": {\"url\": \"https://{{payload.host}}/run\"}}",
                       "dispatch.url");
    expect_field_error("{\"dispatch\": {\"url\": \"https://x/\","
                       "\"headers\": {\"Authorization\": \"Bearer {{env.bad-name}}\"}}}",
                       "dispatch.headers.Authorization");
    expect_field_error("{\"dispatch\": {\"url\": \"https://x/\","
                       "\"headers\": {\"X-Token\": \"{{env.DROVER_ADMIN_TOKEN}}\"}}}",
                       "dispatch.headers.X-Token");
    /* A refused template leaves the policy's dispatch as it was. */
    struct policy p;
    struct errmsg err;
    assert_int_equal(parse("{\"dispatch\": {\"url\": \"https://x/{{job.nope}}\"}}", &p, &err),
                     -DRV_EBAD_FIELD);
    assert_null(p.dispatch);
    assert_non_null(strstr(err.text, "job.nope"));
    policy_release(&p);
}

static void test_http_mode_needs_dispatch(void **state)
{
    (void)state;
    expect_field_error("{\"mode\": \"http\", " TEST_SECRET "}", "dispatch");
    expect_field_error("{\"mode\": \"http\", \"dispatch\": null}", "dispatch");
    expect_field_error("{\"dispatch\": null, \"mode\": \"http\"}", "dispatch");
    /* The secret signs dispatches and callbacks: http mode cannot go without it. */
    expect_field_error("{\"mode\": \"http\", \"dispatch\": {\"url\": \"https://r.example/run\"}}",
                       "callback_secret");
    struct policy p;
    struct errmsg err;
    assert_int_equal(parse("{\"mode\": \"http\", " TEST_SECRET
                           ", \"dispatch\": {\"url\": \"https://r.example/run\"}}",
                           &p, &err),
                     0);
    assert_int_equal(p.mode, POLICY_HTTP);
    assert_non_null(p.dispatch);
    assert_string_equal(json_string_value(json_object_get(p.dispatch, "url")),
                        "https://r.example/run");
    policy_release(&p);
}

static void test_retry_cap_vs_max_attempts(void **state)
{
    (void)state;
    /* The default retry_cap is 5: six automatic attempts would pass it. */
    expect_field_error("{\"max_attempts\": 6}", "retry_cap");
    expect_ok("{\"max_attempts\": 5}");
    expect_field_error("{\"max_attempts\": 3, \"retry_cap\": 2}", "retry_cap");
    expect_field_error("{\"retry_cap\": 2, \"max_attempts\": 3}", "retry_cap");
    expect_ok("{\"retry_cap\": 3, \"max_attempts\": 3}");
    expect_ok("{\"max_attempts\": 3, \"retry_cap\": 3}");
}

static void test_unknown_fields(void **state)
{
    (void)state;
    expect_field_error("{\"color\": \"blue\"}", "color");
    expect_field_error("{\"Mode\": \"pull\"}", "Mode");
    expect_field_error("{\"timeout_s\": 10, \"timeouts\": 10}", "timeouts");
    expect_field_error("{\"name\": null}", "name");

    const char *not_objects[] = {"[]", "null", "\"pull\"", "5", "true"};
    for (size_t i = 0; i < sizeof(not_objects) / sizeof(not_objects[0]); i++) {
        struct policy p;
        struct errmsg err;
        assert_int_equal(parse(not_objects[i], &p, &err), -DRV_EBAD_FIELD);
        assert_true(err.text[0] != '\0');
        policy_release(&p);
    }
}

/* base64 of 16 bytes ("0123456789abcdef") and of 32, and the Standard Webhooks example. */
static void test_whsec(void **state)
{
    (void)state;
    const char *good[] = {
        "whsec_MDEyMzQ1Njc4OWFiY2RlZg==",                     /* 16 bytes */
        "whsec_MDEyMzQ1Njc4OWFiY2RlZmc=",                     /* 17 bytes */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",             /* 24 bytes */
        "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", /* 32 bytes */
        "whsec_+/+/+/+/+/+/+/+/+/+/+/+/",                     /* 18 bytes, + and / */
    };
    char body[512];
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(body, sizeof(body), "{\"callback_secret\": \"%s\"}", good[i]);
        expect_ok(body);
    }
    expect_ok("{\"callback_secret\": null}");
    const char *bad[] = {
        "",
        "secret",
        "whsec_",
        "WHSEC_MDEyMzQ1Njc4OWFiY2RlZg==",
        "MDEyMzQ1Njc4OWFiY2RlZg==",        /* no prefix */
        "whsec_MDEyMzQ1Njc4OWFiY2Rl",      /* 15 bytes */
        "whsec_MDEyMzQ1Njc4OWFiY2RlZg",    /* padding missing: not a multiple of 4 */
        "whsec_MDEyMzQ1Njc4OWFiY2RlZg=",   /* bad length */
        "whsec_MDEyMzQ1Njc4OWFiY2Rl!!!!",  /* not base64 */
        "whsec_MDEyMzQ1Njc4OW FiY2RlZg==", /* space inside */
        "whsec_MDEyMzQ1Njc4OWFiY2RlZg== ", /* trailing space */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(body, sizeof(body), "{\"callback_secret\": \"%s\"}", bad[i]);
        expect_field_error(body, "callback_secret");
    }
    expect_field_error("{\"callback_secret\": 5}", "callback_secret");
    char *huge = tu_repeat('A', 260);
    snprintf(body, sizeof(body), "{\"callback_secret\": \"whsec_%s\"}", huge);
    expect_field_error(body, "callback_secret");
    free(huge);
}

/*
 * Padding is not key material: these carry fewer than 16 real bytes (or are
 * not base64 at all, with '=' before the end) and must be refused.
 */
static void test_whsec_padding(void **state)
{
    (void)state;
    const char *bad[] = {
        "whsec_========================", /* 0 bytes */
        "whsec_MDEyMzQ1Njc4OWFiY2Rl====", /* 15 bytes and 4 '=' */
        "whsec_MDEy====Njc4OWFiY2RlZg==", /* '=' in the middle */
    };
    char body[256];
    int accepted = 0;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(body, sizeof(body), "{\"callback_secret\": \"%s\"}", bad[i]);
        struct policy p;
        struct errmsg err;
        int rc = parse(body, &p, &err);
        policy_release(&p);
        if (rc != -DRV_EBAD_FIELD || strcmp(err.field, "callback_secret") != 0) {
            print_error("callback_secret '%s' accepted (rc %d)\n", bad[i], rc);
            accepted++;
        }
    }
    assert_int_equal(accepted, 0);
}

static void test_redaction(void **state)
{
    (void)state;
    json_t *full = tu_json(full_policy);
    struct policy p;
    struct errmsg err;
    policy_init(&p);
    assert_int_equal(policy_from_json(full, &p, &err), 0);

    json_t *shown = policy_to_json(&p, false);
    assert_non_null(shown);
    assert_string_equal(json_string_value(json_object_get(shown, "callback_secret")), "<redacted>");
    json_t *headers = json_object_get(json_object_get(shown, "dispatch"), "headers");
    assert_int_equal(json_object_size(headers), 2);
    assert_string_equal(json_string_value(json_object_get(headers, "Authorization")), "<redacted>");
    assert_string_equal(json_string_value(json_object_get(headers, "Accept")), "<redacted>");
    /* The rest of dispatch is shown as is. */
    assert_json_equal(json_object_get(json_object_get(shown, "dispatch"), "url"),
                      json_object_get(json_object_get(full, "dispatch"), "url"));
    assert_json_equal(json_object_get(json_object_get(shown, "dispatch"), "body"),
                      json_object_get(json_object_get(full, "dispatch"), "body"));
    /* And nowhere in the text. */
    char *text = json_dumps(shown, 0);
    assert_non_null(text);
    assert_null(strstr(text, "gh-s3cret-token"));
    assert_null(strstr(text, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    free(text);
    /* Everything but the secrets matches the admin view. */
    json_t *admin = policy_to_json(&p, true);
    json_object_del(shown, "callback_secret");
    json_object_del(shown, "dispatch");
    json_object_del(admin, "callback_secret");
    json_object_del(admin, "dispatch");
    assert_json_equal(shown, admin);
    json_decref(admin);
    json_decref(shown);

    /* Redacting did not touch the policy itself. */
    assert_string_equal(p.callback_secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(p.dispatch, "headers"), "Authorization")),
        "Bearer gh-s3cret-token");
    admin = policy_to_json(&p, true);
    assert_json_equal(json_object_get(admin, "dispatch"), json_object_get(full, "dispatch"));
    json_decref(admin);

    json_decref(full);
    policy_release(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_struct),
        cmocka_unit_test(test_defaults_json),
        cmocka_unit_test(test_partial_keeps_defaults),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_integer_fields),
        cmocka_unit_test(test_enum_fields),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_steps),
        cmocka_unit_test(test_on_failure),
        cmocka_unit_test(test_dispatch),
        cmocka_unit_test(test_dispatch_templates),
        cmocka_unit_test(test_http_mode_needs_dispatch),
        cmocka_unit_test(test_retry_cap_vs_max_attempts),
        cmocka_unit_test(test_unknown_fields),
        cmocka_unit_test(test_whsec),
        cmocka_unit_test(test_whsec_padding),
        cmocka_unit_test(test_redaction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
