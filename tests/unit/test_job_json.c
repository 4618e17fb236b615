/*
 * test_job_json.c - the submit body and the job and event objects
 * (src/job_json.h) against docs/api.md.
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
#include "job_json.h"
#include "timeutil.h"
#include "test_util.h"

#define NOW 1795402990123LL /* 2026-11-23T03:03:10.123Z */

static int submit(const char *text, struct job *job, struct errmsg *err)
{
    json_t *body = tu_json(text);
    job_init(job);
    memset(err, 0, sizeof(*err));
    int rc = job_from_submit(body, NOW, job, err);
    json_decref(body);
    return rc;
}

static void expect_field_error(const char *text, const char *field)
{
    struct job job;
    struct errmsg err;
    int rc = submit(text, &job, &err);
    job_release(&job);
    tu_expect_field_error(text, rc, &err, field);
}

static void expect_ok(const char *text)
{
    struct job job;
    struct errmsg err;
    int rc = submit(text, &job, &err);
    job_release(&job);
    tu_expect_ok(text, rc, &err);
}

static void test_full_body(void **state)
{
    (void)state;
    struct job job;
    struct errmsg err;
    int rc = submit("{\"queue\": \"provision\", \"payload\": {\"customer\": 42, \"plan\": [1, 2]},"
                    " \"dedup_key\": \"order-9\", \"concurrency_key\": \"user:42\","
                    " \"lock_keys\": [\"server:123\", \"net:7\"],"
                    " \"webhook_url\": \"https://hooks.example.com/drover?x=1\","
                    " \"run_at\": null}",
                    &job, &err);
    if (rc != 0)
        fail_msg("refused: %s: %s", err.field, err.text);
    assert_string_equal(job.queue, "provision");
    /* Kept as the compact text the store holds and replies show. */
    assert_string_equal(job.payload, "{\"customer\":42,\"plan\":[1,2]}");
    json_t *want = tu_json("{\"customer\": 42, \"plan\": [1, 2]}");
    json_t *parsed;
    assert_int_equal(job_payload_parse(&job, &parsed), 0);
    assert_json_equal(parsed, want);
    json_decref(parsed);
    json_decref(want);
    assert_string_equal(job.dedup_key, "order-9");
    assert_string_equal(job.concurrency_key, "user:42");
    want = tu_json("[\"server:123\", \"net:7\"]");
    assert_json_equal(job.lock_keys, want);
    json_decref(want);
    assert_string_equal(job.webhook_url, "https://hooks.example.com/drover?x=1");
    assert_int_equal(job.run_at_ms, 0);
    assert_int_equal(job.state, JOB_QUEUED);
    /* Submit does not touch what the server assigns. */
    assert_int_equal(job.attempt, 0);
    assert_int_equal(job.seq, 0);
    assert_null(job.step);
    assert_null(job.result);
    assert_null(job.error);
    assert_false(job.cancel_requested);
    job_release(&job);
}

static void test_minimal_body(void **state)
{
    (void)state;
    struct job job;
    struct errmsg err;
    assert_int_equal(submit("{\"queue\": \"q\"}", &job, &err), 0);
    assert_string_equal(job.queue, "q");
    assert_string_equal(job.payload, "{}");
    assert_null(job.dedup_key);
    assert_null(job.concurrency_key);
    assert_null(job.lock_keys);
    assert_null(job.webhook_url);
    assert_int_equal(job.run_at_ms, 0);
    assert_int_equal(job.state, JOB_QUEUED);
    job_release(&job);

    /* Explicit nulls are the same as leaving the fields out. */
    assert_int_equal(submit("{\"queue\": \"q\", \"dedup_key\": null, \"concurrency_key\": null,"
                            " \"lock_keys\": null, \"webhook_url\": null, \"run_at\": null}",
                            &job, &err),
                     0);
    assert_null(job.dedup_key);
    assert_null(job.concurrency_key);
    assert_null(job.lock_keys);
    assert_null(job.webhook_url);
    assert_int_equal(job.state, JOB_QUEUED);
    job_release(&job);
}

static void test_run_at(void **state)
{
    (void)state;
    struct job job;
    struct errmsg err;

    /* RFC 3339, one minute ahead. */
    assert_int_equal(
        submit("{\"queue\": \"q\", \"run_at\": \"2026-11-23T03:04:10.123Z\"}", &job, &err), 0);
    assert_int_equal(job.state, JOB_SCHEDULED);
    assert_int_equal(job.run_at_ms, NOW + 60000);
    job_release(&job);

    /* With an offset. */
    assert_int_equal(
        submit("{\"queue\": \"q\", \"run_at\": \"2026-11-23T05:04:10.123+02:00\"}", &job, &err), 0);
    assert_int_equal(job.state, JOB_SCHEDULED);
    assert_int_equal(job.run_at_ms, NOW + 60000);
    job_release(&job);

    /* Integer Unix seconds. */
    assert_int_equal(submit("{\"queue\": \"q\", \"run_at\": 1795403050}", &job, &err), 0);
    assert_int_equal(job.state, JOB_SCHEDULED);
    assert_int_equal(job.run_at_ms, 1795403050000LL);
    job_release(&job);

    /* In the past, or exactly now: ready at once, the time kept. */
    assert_int_equal(submit("{\"queue\": \"q\", \"run_at\": 1700000000}", &job, &err), 0);
    assert_int_equal(job.state, JOB_QUEUED);
    assert_int_equal(job.run_at_ms, 1700000000000LL);
    job_release(&job);
    assert_int_equal(
        submit("{\"queue\": \"q\", \"run_at\": \"2026-11-23T03:03:10.123Z\"}", &job, &err), 0);
    assert_int_equal(job.state, JOB_QUEUED);
    job_release(&job);
    /* One ms ahead is the future. */
    assert_int_equal(
        submit("{\"queue\": \"q\", \"run_at\": \"2026-11-23T03:03:10.124Z\"}", &job, &err), 0);
    assert_int_equal(job.state, JOB_SCHEDULED);
    job_release(&job);

    expect_field_error("{\"queue\": \"q\", \"run_at\": \"tomorrow\"}", "run_at");
    expect_field_error("{\"queue\": \"q\", \"run_at\": \"2026-11-23T03:04:10\"}", "run_at");
    expect_field_error("{\"queue\": \"q\", \"run_at\": 1795403050.5}", "run_at");
    expect_field_error("{\"queue\": \"q\", \"run_at\": -1}", "run_at");
    expect_field_error("{\"queue\": \"q\", \"run_at\": true}", "run_at");
    expect_field_error("{\"queue\": \"q\", \"run_at\": {}}", "run_at");
    expect_field_error("{\"queue\": \"q\", \"run_at\": \"1795403050\"}", "run_at");
    expect_field_error("{\"queue\": \"q\", \"run_at\": 9223372036854775807}", "run_at");
}

static void test_json_time_field(void **state)
{
    (void)state;
    struct errmsg err;
    int64_t ms = -1;
    json_t *v = json_integer(0);
    assert_int_equal(json_time_field(v, "at", &ms, &err), 0);
    assert_int_equal(ms, 0);
    json_decref(v);
    v = json_integer(253402300799LL); /* 9999-12-31T23:59:59Z */
    assert_int_equal(json_time_field(v, "at", &ms, &err), 0);
    assert_int_equal(ms, 253402300799000LL);
    json_decref(v);
    v = json_string("2016-07-30T22:36:16.385Z");
    assert_int_equal(json_time_field(v, "at", &ms, &err), 0);
    assert_int_equal(ms, 1469918176385LL);
    json_decref(v);

    const char *bad[] = {"253402300800", "-1", "1.5", "\"\"", "null", "[]", "false"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = tu_json(bad[i]);
        memset(&err, 0, sizeof(err));
        assert_int_equal(json_time_field(v, "not_before", &ms, &err), -DRV_EBAD_FIELD);
        assert_string_equal(err.field, "not_before");
        assert_non_null(strstr(err.text, "not_before"));
        json_decref(v);
    }
}

static void test_wrong_types(void **state)
{
    (void)state;
    static const struct {
        const char *field, *value;
    } cases[] = {
        {"queue", "5"},           {"queue", "null"},         {"queue", "[\"q\"]"},
        {"queue", "true"},        {"payload", "[]"},         {"payload", "\"{}\""},
        {"payload", "5"},         {"payload", "true"},       {"dedup_key", "5"},
        {"dedup_key", "[]"},      {"dedup_key", "{}"},       {"dedup_key", "false"},
        {"concurrency_key", "5"}, {"concurrency_key", "[]"}, {"concurrency_key", "true"},
        {"lock_keys", "\"a\""},   {"lock_keys", "{}"},       {"lock_keys", "5"},
        {"lock_keys", "[5]"},     {"lock_keys", "[null]"},   {"lock_keys", "[[\"a\"]]"},
        {"webhook_url", "5"},     {"webhook_url", "{}"},     {"webhook_url", "true"},
        {"run_at", "[]"},         {"run_at", "false"},
    };
    char body[512];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (strcmp(cases[i].field, "queue") == 0)
            snprintf(body, sizeof(body), "{\"queue\": %s}", cases[i].value);
        else
            snprintf(body, sizeof(body), "{\"queue\": \"q\", \"%s\": %s}", cases[i].field,
                     cases[i].value);
        expect_field_error(body, cases[i].field);
    }
}

static void test_unknown_and_missing(void **state)
{
    (void)state;
    expect_field_error("{\"queue\": \"q\", \"priority\": 1}", "priority");
    expect_field_error("{\"queue\": \"q\", \"Queue\": \"q\"}", "Queue");
    expect_field_error("{\"queue\": \"q\", \"state\": \"running\"}", "state");
    expect_field_error("{\"queue\": \"q\", \"id\": \"01ARYZ6S410000000000000000\"}", "id");
    expect_field_error("{}", "queue");
    expect_field_error("{\"payload\": {}}", "queue");

    const char *not_objects[] = {"[]", "null", "\"q\"", "5"};
    for (size_t i = 0; i < sizeof(not_objects) / sizeof(not_objects[0]); i++) {
        struct job job;
        struct errmsg err;
        assert_int_equal(submit(not_objects[i], &job, &err), -DRV_EBAD_FIELD);
        assert_true(err.text[0] != '\0');
        job_release(&job);
    }
}

static void test_queue_names(void **state)
{
    (void)state;
    char *q64 = tu_repeat('q', JOB_QUEUE_NAME_MAX);
    char *q65 = tu_repeat('q', JOB_QUEUE_NAME_MAX + 1);
    assert_true(job_queue_name_valid("provision"));
    assert_true(job_queue_name_valid("a"));
    assert_true(job_queue_name_valid("Az09._-"));
    assert_true(job_queue_name_valid(q64));
    assert_false(job_queue_name_valid(q65));
    assert_false(job_queue_name_valid(""));
    const char *bad[] = {"a b", "a/b", "a:b", "a\tb", "é", "a\nb", "q?", "q#", "q%2F", "..ä"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (job_queue_name_valid(bad[i]))
            fail_msg("queue name '%s' accepted", bad[i]);
    }
    /* The same rule at submit. */
    char body[256];
    snprintf(body, sizeof(body), "{\"queue\": \"%s\"}", q64);
    expect_ok(body);
    snprintf(body, sizeof(body), "{\"queue\": \"%s\"}", q65);
    expect_field_error(body, "queue");
    expect_field_error("{\"queue\": \"\"}", "queue");
    expect_field_error("{\"queue\": \"has space\"}", "queue");
    expect_field_error("{\"queue\": \"a/b\"}", "queue");
    free(q64);
    free(q65);
}

static void test_keys(void **state)
{
    (void)state;
    const char *fields[] = {"dedup_key", "concurrency_key"};
    char body[1024];
    for (size_t f = 0; f < 2; f++) {
        char *k200 = tu_repeat('k', JOB_KEY_MAX);
        char *k201 = tu_repeat('k', JOB_KEY_MAX + 1);
        snprintf(body, sizeof(body), "{\"queue\": \"q\", \"%s\": \"%s\"}", fields[f], k200);
        expect_ok(body);
        snprintf(body, sizeof(body), "{\"queue\": \"q\", \"%s\": \"%s\"}", fields[f], k201);
        expect_field_error(body, fields[f]);
        snprintf(body, sizeof(body), "{\"queue\": \"q\", \"%s\": \"\"}", fields[f]);
        expect_field_error(body, fields[f]);
        snprintf(body, sizeof(body), "{\"queue\": \"q\", \"%s\": \"x\"}", fields[f]);
        expect_ok(body);
        free(k200);
        free(k201);

        /* An embedded NUL is refused (only reachable through a JSON \u0000). */
        json_t *b = json_pack("{s:s, s:o}", "queue", "q", fields[f], json_stringn("a\0b", 3));
        struct job job;
        job_init(&job);
        struct errmsg err;
        memset(&err, 0, sizeof(err));
        assert_int_equal(job_from_submit(b, NOW, &job, &err), -DRV_EBAD_FIELD);
        assert_string_equal(err.field, fields[f]);
        job_release(&job);
        json_decref(b);
    }
}

static void test_lock_keys(void **state)
{
    (void)state;
    char body[8192];
    /* Up to JOB_LOCK_KEYS_MAX keys. */
    for (int count = 0; count <= JOB_LOCK_KEYS_MAX + 1; count++) {
        size_t len = (size_t)snprintf(body, sizeof(body), "{\"queue\": \"q\", \"lock_keys\": [");
        for (int i = 0; i < count; i++)
            len += (size_t)snprintf(body + len, sizeof(body) - len, "%s\"server:%d\"", i ? "," : "",
                                    i);
        snprintf(body + len, sizeof(body) - len, "]}");
        if (count <= JOB_LOCK_KEYS_MAX) {
            struct job job;
            struct errmsg err;
            int rc = submit(body, &job, &err);
            if (rc != 0)
                fail_msg("%d lock keys refused: %s", count, err.text);
            assert_int_equal(json_array_size(job.lock_keys), count);
            job_release(&job);
        } else {
            expect_field_error(body, "lock_keys");
        }
    }
    char *k200 = tu_repeat('k', JOB_KEY_MAX);
    char *k201 = tu_repeat('k', JOB_KEY_MAX + 1);
    snprintf(body, sizeof(body), "{\"queue\": \"q\", \"lock_keys\": [\"%s\"]}", k200);
    expect_ok(body);
    snprintf(body, sizeof(body), "{\"queue\": \"q\", \"lock_keys\": [\"a\", \"%s\"]}", k201);
    expect_field_error(body, "lock_keys");
    free(k200);
    free(k201);
    expect_field_error("{\"queue\": \"q\", \"lock_keys\": [\"a\", \"\"]}", "lock_keys");

    /* The job keeps its own copy. */
    json_t *b = tu_json("{\"queue\": \"q\", \"lock_keys\": [\"server:1\"]}");
    struct job job;
    job_init(&job);
    struct errmsg err;
    assert_int_equal(job_from_submit(b, NOW, &job, &err), 0);
    json_array_set_new(json_object_get(b, "lock_keys"), 0, json_string("changed"));
    assert_string_equal(json_string_value(json_array_get(job.lock_keys, 0)), "server:1");
    job_release(&job);
    json_decref(b);
}

static void test_webhook_url(void **state)
{
    (void)state;
    expect_ok("{\"queue\": \"q\", \"webhook_url\": \"http://hooks.local/x\"}");
    expect_ok("{\"queue\": \"q\", \"webhook_url\": \"https://hooks.example.com\"}");
    expect_field_error("{\"queue\": \"q\", \"webhook_url\": \"ftp://hooks.example.com\"}",
                       "webhook_url");
    expect_field_error("{\"queue\": \"q\", \"webhook_url\": \"hooks.example.com\"}", "webhook_url");
    expect_field_error("{\"queue\": \"q\", \"webhook_url\": \"\"}", "webhook_url");
    expect_field_error("{\"queue\": \"q\", \"webhook_url\": \"https://a b\"}", "webhook_url");
    expect_field_error("{\"queue\": \"q\", \"webhook_url\": \"https://a\\r\\nX: y\"}",
                       "webhook_url");

    char body[4096];
    char *host = tu_repeat('h', JOB_URL_MAX - strlen("https://"));
    snprintf(body, sizeof(body), "{\"queue\": \"q\", \"webhook_url\": \"https://%s\"}", host);
    expect_ok(body);
    free(host);
    host = tu_repeat('h', JOB_URL_MAX + 1 - strlen("https://"));
    snprintf(body, sizeof(body), "{\"queue\": \"q\", \"webhook_url\": \"https://%s\"}", host);
    expect_field_error(body, "webhook_url");
    free(host);
}

/* A scheme with nothing after it names no host to deliver to (policy's dispatch.url refuses it). */
static void test_webhook_url_needs_host(void **state)
{
    (void)state;
    expect_field_error("{\"queue\": \"q\", \"webhook_url\": \"http://\"}", "webhook_url");
    expect_field_error("{\"queue\": \"q\", \"webhook_url\": \"https://\"}", "webhook_url");
}

/* Keys of the job object in docs/api.md's example, read from the file itself. */
static json_t *docs_job_example(void)
{
    char *doc = tu_read_file("docs/api.md");
    const char *sec = strstr(doc, "## Job object");
    assert_non_null(sec);
    const char *start = strstr(sec, "```json\n");
    assert_non_null(start);
    start += strlen("```json\n");
    const char *end = strstr(start, "\n```");
    assert_non_null(end);
    json_error_t jerr;
    json_t *ex = json_loadb(start, (size_t)(end - start), 0, &jerr);
    if (ex == NULL)
        fail_msg("docs/api.md job example is not JSON: %s", jerr.text);
    free(doc);
    return ex;
}

static void make_full_job(struct job *job)
{
    job_init(job);
    memcpy(job->id, "01JD6Y5T2R6Q0M7S5V3QG1X8ZC", ULID_LEN + 1);
    job->queue = strdup("provision");
    job->state = JOB_RUNNING;
    job->step = strdup("vm_created");
    job->attempt = 2;
    job->payload = strdup("{\"customer\":42}");
    job->dedup_key = strdup("order-9");
    job->concurrency_key = strdup("user:42");
    job->lock_keys = tu_json("[\"server:123\"]");
    job->webhook_url = strdup("https://hooks.example.com/x");
    job->run_at_ms = NOW + 60000;
    job->cancel_requested = true;
    job->result = tu_json("{\"vm\": 7}");
    job->error =
        tu_json("{\"kind\": \"timeout\", \"message\": \"too slow\", \"step\": "
                "\"vm_created\", \"run_id\": \"r1\", \"at\": \"2026-11-23T03:03:10.123Z\"}");
    job->checkpoints = tu_json("{\"vm_created\": {\"vm\": 7}}");
    job->created_at_ms = NOW;
    job->updated_at_ms = NOW + 5;
    job->seq = 9;
}

static void test_to_json_full(void **state)
{
    (void)state;
    struct job job;
    make_full_job(&job);
    json_t *j = job_to_json(&job);
    assert_non_null(j);
    json_t *want = tu_json(
        "{\"id\": \"01JD6Y5T2R6Q0M7S5V3QG1X8ZC\", \"queue\": \"provision\", \"state\": "
        "\"running\", \"step\": \"vm_created\", \"attempt\": 2, \"payload\": {\"customer\": 42},"
        " \"dedup_key\": \"order-9\", \"concurrency_key\": \"user:42\", \"lock_keys\": "
        "[\"server:123\"], \"webhook_url\": \"https://hooks.example.com/x\", \"run_at\": "
        "\"2026-11-23T03:04:10.123Z\", \"cancel_requested\": true, \"result\": {\"vm\": 7},"
        " \"error\": {\"kind\": \"timeout\", \"message\": \"too slow\", \"step\": "
        "\"vm_created\", \"run_id\": \"r1\", \"at\": \"2026-11-23T03:03:10.123Z\"},"
        " \"checkpoints\": {\"vm_created\": {\"vm\": 7}}, \"created_at\": "
        "\"2026-11-23T03:03:10.123Z\", \"updated_at\": \"2026-11-23T03:03:10.128Z\", \"seq\": 9,"
        " \"worker\": null, \"started_at\": null, \"lease_expires_at\": null,"
        " \"waiting_for\": null, \"run_id\": null}");
    assert_json_equal(j, want);
    json_decref(want);

    /* Same keys as the docs, and where the docs' example shows a non-null value, the same type. */
    json_t *ex = docs_job_example();
    const char *key;
    json_t *v;
    json_object_foreach(ex, key, v)
    {
        json_t *got = json_object_get(j, key);
        if (got == NULL)
            fail_msg("job_to_json lacks docs key '%s'", key);
        if (!json_is_null(v) && json_typeof(v) != json_typeof(got) &&
            !(json_is_boolean(v) && json_is_boolean(got)))
            fail_msg("key '%s': type %d, docs show %d", key, json_typeof(got), json_typeof(v));
    }
    json_object_foreach(j, key, v)
    {
        if (json_object_get(ex, key) == NULL)
            fail_msg("job_to_json has key '%s' that docs/api.md does not list", key);
    }
    assert_int_equal(json_object_size(j), json_object_size(ex));
    json_decref(ex);
    json_decref(j);
    job_release(&job);
}

/* A fresh submit shows nulls, empty collections and the right JSON types throughout. */
static void test_to_json_fresh(void **state)
{
    (void)state;
    struct job job;
    struct errmsg err;
    assert_int_equal(submit("{\"queue\": \"provision\"}", &job, &err), 0);
    memcpy(job.id, "01JD6Y5T2R6Q0M7S5V3QG1X8ZC", ULID_LEN + 1);
    job.created_at_ms = job.updated_at_ms = NOW;
    job.seq = 1;
    json_t *j = job_to_json(&job);
    assert_non_null(j);

    static const struct {
        const char *key;
        json_type type;
    } types[] = {
        {"id", JSON_STRING},
        {"queue", JSON_STRING},
        {"state", JSON_STRING},
        {"step", JSON_NULL},
        {"attempt", JSON_INTEGER},
        {"payload", JSON_OBJECT},
        {"dedup_key", JSON_NULL},
        {"concurrency_key", JSON_NULL},
        {"lock_keys", JSON_ARRAY},
        {"webhook_url", JSON_NULL},
        {"run_at", JSON_NULL},
        {"cancel_requested", JSON_FALSE},
        {"result", JSON_NULL},
        {"error", JSON_NULL},
        {"checkpoints", JSON_OBJECT},
        {"created_at", JSON_STRING},
        {"updated_at", JSON_STRING},
        {"seq", JSON_INTEGER},
        {"worker", JSON_NULL},
        {"started_at", JSON_NULL},
        {"lease_expires_at", JSON_NULL},
        {"waiting_for", JSON_NULL},
        {"run_id", JSON_NULL},
    };
    assert_int_equal(json_object_size(j), sizeof(types) / sizeof(types[0]));
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        json_t *v = json_object_get(j, types[i].key);
        if (v == NULL)
            fail_msg("key '%s' missing", types[i].key);
        if (json_typeof(v) != types[i].type)
            fail_msg("key '%s': type %d, want %d", types[i].key, json_typeof(v), types[i].type);
    }
    assert_string_equal(json_string_value(json_object_get(j, "state")), "queued");
    assert_int_equal(json_integer_value(json_object_get(j, "attempt")), 0);
    assert_int_equal(json_object_size(json_object_get(j, "payload")), 0);
    assert_int_equal(json_array_size(json_object_get(j, "lock_keys")), 0);
    assert_int_equal(json_object_size(json_object_get(j, "checkpoints")), 0);
    assert_string_equal(json_string_value(json_object_get(j, "created_at")),
                        "2026-11-23T03:03:10.123Z");
    assert_int_equal(json_integer_value(json_object_get(j, "seq")), 1);
    json_decref(j);

    /* A scheduled one shows its run_at. */
    job_release(&job);
    assert_int_equal(submit("{\"queue\": \"q\", \"run_at\": 1795403050}", &job, &err), 0);
    j = job_to_json(&job);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "scheduled");
    assert_string_equal(json_string_value(json_object_get(j, "run_at")),
                        "2026-11-23T03:04:10.000Z");
    json_decref(j);
    job_release(&job);
}

/* Strings that need escapes, and a payload holding "\u0000", come out intact. */
static void test_to_json_escapes(void **state)
{
    (void)state;
    struct job job;
    make_full_job(&job);
    free(job.step);
    job.step = strdup("say \"hi\"\n\\ caf\xc3\xa9");
    json_t *payload =
        json_loads("{\"nul\": \"a\\u0000b\", \"tab\": \"\\t\"}", JSON_ALLOW_NUL, NULL);
    assert_non_null(payload);
    assert_int_equal(job_payload_set(&job, payload), 0);
    json_t *j = job_to_json(&job);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "step")), job.step);
    assert_true(json_equal(json_object_get(j, "payload"), payload));
    /* The writer's text is the same value. */
    struct json_writer w;
    json_writer_init(&w, NULL, 0);
    job_write(&w, &job);
    char *text = json_writer_finish(&w, NULL);
    assert_non_null(text);
    json_t *back = json_loads(text, JSON_ALLOW_NUL, NULL);
    assert_true(json_equal(back, j));
    json_decref(back);
    free(text);
    json_decref(j);
    json_decref(payload);
    job_release(&job);
}

/* Every state name comes out as docs/api.md spells it. */
static void test_to_json_states(void **state)
{
    (void)state;
    const char *names[] = {NULL,        "scheduled", "queued",  "running",
                           "succeeded", "failed",    "canceled"};
    for (int s = JOB_SCHEDULED; s < JOB_STATE_COUNT; s++) {
        struct job job;
        make_full_job(&job);
        job.state = (enum job_state)s;
        json_t *j = job_to_json(&job);
        assert_string_equal(json_string_value(json_object_get(j, "state")), names[s]);
        json_decref(j);
        job_release(&job);
    }
}

static void test_event_to_json(void **state)
{
    (void)state;
    struct job_event ev;
    job_event_init(&ev);
    memcpy(ev.job_id, "01JD6Y5T2R6Q0M7S5V3QG1X8ZC", ULID_LEN + 1);
    ev.seq = 1;
    ev.type = strdup("job.created");
    ev.at_ms = NOW;
    ev.state = JOB_QUEUED;
    ev.prev_state = JOB_NONE;
    json_t *j = job_event_to_json(&ev);
    json_t *want = tu_json("{\"seq\": 1, \"type\": \"job.created\", \"at\": "
                           "\"2026-11-23T03:03:10.123Z\", \"state\": \"queued\", \"prev_state\": "
                           "null, \"step\": null, \"attempt\": 0, \"data\": null}");
    assert_json_equal(j, want);
    json_decref(j);
    json_decref(want);
    job_event_release(&ev);

    job_event_init(&ev);
    ev.seq = 4;
    ev.type = strdup("job.canceled");
    ev.at_ms = NOW + 1;
    ev.state = JOB_CANCELED;
    ev.prev_state = JOB_RUNNING;
    ev.step = strdup("vm_created");
    ev.attempt = 2;
    ev.data = tu_json("{\"reason\": \"customer left\"}");
    j = job_event_to_json(&ev);
    want = tu_json("{\"seq\": 4, \"type\": \"job.canceled\", \"at\": "
                   "\"2026-11-23T03:03:10.124Z\", \"state\": \"canceled\", \"prev_state\": "
                   "\"running\", \"step\": \"vm_created\", \"attempt\": 2, \"data\": "
                   "{\"reason\": \"customer left\"}}");
    assert_json_equal(j, want);
    json_decref(j);
    json_decref(want);
    job_event_release(&ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_body),
        cmocka_unit_test(test_minimal_body),
        cmocka_unit_test(test_run_at),
        cmocka_unit_test(test_json_time_field),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_unknown_and_missing),
        cmocka_unit_test(test_queue_names),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_lock_keys),
        cmocka_unit_test(test_webhook_url),
        cmocka_unit_test(test_webhook_url_needs_host),
        cmocka_unit_test(test_to_json_full),
        cmocka_unit_test(test_to_json_fresh),
        cmocka_unit_test(test_to_json_states),
        cmocka_unit_test(test_to_json_escapes),
        cmocka_unit_test(test_event_to_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
