/*
 * test_job_deadlines.c - a job's deadline timer follows it through the
 * writer's after-batch hook (job_ops.c): armed when a claim gives it a
 * lease, disarmed when it finishes, so no timer wakes later to check a job
 * that is done.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "job_json.h"
#include "job_ops.h"
#include "policy.h"
#include "policy_cache.h"
#include "timers.h"
#include "timeutil.h"
#include "test_writer.h"

struct fixture {
    struct tu_store ts;
    struct policy_cache *policies;
    struct job_env env;
    struct timers *timers;
};

static void on_timer(void *ctx, enum timer_kind kind, const char *key)
{
    (void)ctx, (void)kind, (void)key; /* leases here last a minute: nothing fires */
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    int n = snprintf(f->ts.dir, sizeof(f->ts.dir), "/tmp/drover-test-deadlines-XXXXXX");
    assert_true(n > 0 && (size_t)n < sizeof(f->ts.dir));
    assert_non_null(mkdtemp(f->ts.dir));
    struct store_options opt = {.data_dir = f->ts.dir, .readers = 1};
    assert_int_equal(store_open(&store_sqlite_engine, &opt, &f->ts.store), 0);
    assert_int_equal(policy_cache_new(&f->policies), 0);
    assert_int_equal(job_env_init(&f->env, f->policies), 0);
    assert_int_equal(timers_start(on_timer, NULL, &f->timers), 0);
    f->env.timers = f->timers;
    struct writer_hooks hooks = {
        .env = &f->env, .before_commit = job_env_before_commit, .after_batch = job_env_after_batch};
    assert_int_equal(writer_start(f->ts.store, 16, &hooks, &f->ts.writer), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    writer_stop(f->ts.writer);
    f->ts.writer = NULL;
    timers_free(f->timers);
    job_env_release(&f->env);
    policy_cache_free(f->policies);
    tu_store_close(&f->ts);
    free(f);
    return 0;
}

/* The hook runs after the op's done(): wait (bounded) for the count it leaves. */
static int pending_becomes(struct timers *t, int want)
{
    for (int i = 0; i < 200 && timers_pending(t) != want; i++)
        nanosleep(&(struct timespec){.tv_nsec = 5 * 1000 * 1000}, NULL);
    return timers_pending(t);
}

static void submit(struct fixture *f)
{
    struct job_submit_op s;
    job_submit_op_init(&s, tu_op_done);
    json_t *body = tu_json("{\"queue\": \"q\", \"payload\": {\"n\": 1}}");
    assert_int_equal(job_from_submit(body, time_now_ms(), &s.job, &s.err), 0);
    json_decref(body);
    assert_int_equal(tu_run_op(f->ts.writer, &s.op), 0);
    job_release(&s.job);
}

/* Claim one job; its id and lease token into id and token. */
static void claim(struct fixture *f, char *id, char *token)
{
    struct job_claim_op c;
    job_claim_op_init(&c, tu_op_done);
    snprintf(c.queue, sizeof(c.queue), "q");
    snprintf(c.worker, sizeof(c.worker), "w1");
    c.max = 1;
    assert_int_equal(tu_run_op(f->ts.writer, &c.op), 0);
    assert_int_equal(c.n, 1);
    memcpy(id, c.jobs[0].id, ULID_LEN + 1);
    snprintf(token, LEASE_TOKEN_LEN + 1, "%s", c.jobs[0].lease_token);
    job_claim_op_release(&c);
}

static void finish(struct fixture *f, const char *id, const char *token, enum lease_action a)
{
    struct job_lease_op l;
    job_lease_op_init(&l, a, tu_op_done);
    memcpy(l.id, id, ULID_LEN + 1);
    snprintf(l.token, sizeof(l.token), "%s", token);
    if (a == LEASE_COMPLETE)
        l.data = tu_json("{\"ok\": true}");
    else
        l.message = strdup("it broke");
    assert_int_equal(tu_run_op(f->ts.writer, &l.op), 0);
    job_lease_op_release(&l);
}

/* A job that goes back to wait in its queue (retry at once) has no deadline either. */
static void test_requeued_jobs_are_disarmed(void **state)
{
    struct fixture *f = *state;
    struct policy_put_op p;
    policy_put_op_init(&p, tu_op_done);
    snprintf(p.queue, sizeof(p.queue), "q");
    json_t *body = tu_json("{\"max_attempts\": 3, \"backoff\": {\"initial_s\": 0}}");
    assert_int_equal(policy_from_json(body, &p.policy, &p.err), 0);
    json_decref(body);
    assert_int_equal(tu_run_op(f->ts.writer, &p.op), 0);
    policy_put_op_release(&p);
    char id[ULID_LEN + 1], token[LEASE_TOKEN_LEN + 1];
    submit(f);
    claim(f, id, token);
    assert_int_equal(pending_becomes(f->timers, 1), 1);
    struct job_lease_op l;
    job_lease_op_init(&l, LEASE_FAIL, tu_op_done);
    memcpy(l.id, id, ULID_LEN + 1);
    snprintf(l.token, sizeof(l.token), "%s", token);
    l.message = strdup("try again");
    l.retryable = true;
    assert_int_equal(tu_run_op(f->ts.writer, &l.op), 0);
    assert_int_equal(l.job.state, JOB_QUEUED);
    job_lease_op_release(&l);
    assert_int_equal(pending_becomes(f->timers, 0), 0);
    /* Claimed again: armed again. */
    claim(f, id, token);
    assert_int_equal(pending_becomes(f->timers, 1), 1);
}

static void test_finished_jobs_are_disarmed(void **state)
{
    struct fixture *f = *state;
    char id[2][ULID_LEN + 1], token[2][LEASE_TOKEN_LEN + 1];
    submit(f);
    submit(f);
    assert_int_equal(pending_becomes(f->timers, 0), 0); /* queued: no deadline yet */
    claim(f, id[0], token[0]);
    claim(f, id[1], token[1]);
    assert_int_equal(pending_becomes(f->timers, 2), 2); /* each lease's deadline */
    finish(f, id[0], token[0], LEASE_COMPLETE);
    assert_int_equal(pending_becomes(f->timers, 1), 1);
    finish(f, id[1], token[1], LEASE_FAIL); /* failed for good (max_attempts 1) */
    assert_int_equal(pending_becomes(f->timers, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_finished_jobs_are_disarmed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requeued_jobs_are_disarmed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
