/*
 * test_store.c - the store's job writes (store/store.h), on a SQLite store
 * in a temporary directory: an update writes what a transition can change
 * and leaves the fields written at submit alone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "error.h"
#include "job.h"
#include "store/store.h"
#include "store/writer.h"
#include "test_util.h"
#include "test_writer.h"
#include "util.h"

#define JOB_ID "01JD0000000000000000000000"

static int setup(void **state)
{
    return tu_store_setup(state, "store", 1);
}

/* An op that runs fn(ctx->store, job) on the writer thread. */
struct job_op {
    struct write_op op;
    int (*fn)(struct store *st, struct job *job);
    struct job *job;
};

static int job_op_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct job_op *j = container_of(op, struct job_op, op);
    return j->fn(ctx->store, j->job);
}

static int run(struct tu_store *ts, int (*fn)(struct store *, struct job *), struct job *job)
{
    struct job_op j = {.op = {.apply = job_op_apply, .done = tu_op_done}, .fn = fn, .job = job};
    return tu_run_op(ts->writer, &j.op);
}

static int insert(struct store *st, struct job *job)
{
    return store_job_insert(st, job);
}

static int update(struct store *st, struct job *job)
{
    return store_job_update(st, job);
}

static int load(struct store *st, struct job *job)
{
    return store_job_load(st, JOB_ID, job);
}

/* A job as submitted: every submit-time field set. */
static void submitted(struct job *job)
{
    job_init(job);
    snprintf(job->id, sizeof(job->id), "%s", JOB_ID);
    job->queue = strdup("vms");
    job->state = JOB_QUEUED;
    job->attempt = 1;
    job->payload = strdup("{\"customer\":42}");
    job->dedup_key = strdup("order-7");
    job->concurrency_key = strdup("user:42");
    job->lock_keys = json_pack("[s]", "server:1");
    job->webhook_url = strdup("https://example.com/hook");
    job->concurrency_limit = 2;
    job->created_at_ms = 1000;
    job->updated_at_ms = 1000;
    job->seq = 2;
}

static void replace(char **field, const char *value)
{
    free(*field);
    *field = strdup(value);
}

/* An update changes the transition's fields, never what was written at submit. */
static void test_update_keeps_submit_fields(void **state)
{
    struct tu_store *ts = *state;
    struct job job, got;
    submitted(&job);
    assert_int_equal(run(ts, insert, &job), 0);

    /* A transition, and submit-time fields changed in memory as no op does. */
    job.state = JOB_SUCCEEDED;
    replace(&job.step, "vm_created");
    job.result = json_pack("{s:s}", "vm", "vm-9");
    job.updated_at_ms = 2000;
    job.seq = 5;
    replace(&job.lease_token, "lease-1");
    replace(&job.queue, "other");
    replace(&job.payload, "{\"customer\":7}");
    replace(&job.dedup_key, "changed");
    replace(&job.concurrency_key, "changed");
    replace(&job.webhook_url, "https://example.com/changed");
    job.concurrency_limit = 9;
    job.created_at_ms = 3000;
    assert_int_equal(run(ts, update, &job), 0);

    assert_int_equal(run(ts, load, &got), 0);
    assert_int_equal(got.state, JOB_SUCCEEDED);
    assert_string_equal(got.step, "vm_created");
    assert_string_equal(json_string_value(json_object_get(got.result, "vm")), "vm-9");
    assert_int_equal(got.updated_at_ms, 2000);
    assert_int_equal(got.seq, 5);
    assert_string_equal(got.lease_token, "lease-1");
    assert_string_equal(got.queue, "vms");
    assert_string_equal(got.payload, "{\"customer\":42}"); /* the text as stored */
    assert_string_equal(got.dedup_key, "order-7");
    assert_string_equal(got.concurrency_key, "user:42");
    assert_string_equal(json_string_value(json_array_get(got.lock_keys, 0)), "server:1");
    assert_string_equal(got.webhook_url, "https://example.com/hook");
    assert_int_equal(got.concurrency_limit, 2);
    assert_int_equal(got.created_at_ms, 1000);
    job_release(&got);
    job_release(&job);
}

/* An update of a job that is not there fails with not found. */
static void test_update_unknown_job(void **state)
{
    struct tu_store *ts = *state;
    struct job job;
    submitted(&job);
    assert_int_equal(run(ts, update, &job), -DRV_ENOT_FOUND);
    job_release(&job);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_update_keeps_submit_fields, setup, tu_store_teardown),
        cmocka_unit_test_setup_teardown(test_update_unknown_job, setup, tu_store_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
