/*
 * test_job.c - the job state machine (src/job.h) against DESIGN.md §1.
 *
 * The expected transitions are written out here from DESIGN.md, edge by
 * edge, and never read from job.c: if the code's table drifts from the
 * design, test_transition_table fails and names the pair.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "job.h"
#include "test_util.h"

/* Every state, JOB_NONE included. */
static const enum job_state all_states[] = {JOB_NONE,      JOB_SCHEDULED, JOB_QUEUED,  JOB_RUNNING,
                                            JOB_SUCCEEDED, JOB_FAILED,    JOB_CANCELED};
#define N_STATES (sizeof(all_states) / sizeof(all_states[0]))

/*
 * DESIGN.md §1 "States", one edge per line:
 *   creation: none -> scheduled (run_at in the future) | queued;
 *   scheduled -> queued (run_at or backoff due), failed (queue timeout), canceled;
 *   queued -> running (claimed/dispatched), scheduled (waits again for a lock
 *     or slot), failed (queue timeout), canceled;
 *   running -> succeeded | failed | canceled, or back to queued/scheduled when
 *     the retry policy starts another attempt;
 *   succeeded: never changes again;
 *   failed, canceled: terminal except a manual retry -> queued | scheduled.
 * Nothing ever goes back to none, and no state "moves" to itself.
 */
static const struct {
    enum job_state from, to;
} design_edges[] = {
    {JOB_NONE, JOB_SCHEDULED},    {JOB_NONE, JOB_QUEUED},

    {JOB_SCHEDULED, JOB_QUEUED},  {JOB_SCHEDULED, JOB_FAILED},   {JOB_SCHEDULED, JOB_CANCELED},

    {JOB_QUEUED, JOB_RUNNING},    {JOB_QUEUED, JOB_SCHEDULED},   {JOB_QUEUED, JOB_FAILED},
    {JOB_QUEUED, JOB_CANCELED},

    {JOB_RUNNING, JOB_SUCCEEDED}, {JOB_RUNNING, JOB_FAILED},     {JOB_RUNNING, JOB_CANCELED},
    {JOB_RUNNING, JOB_QUEUED},    {JOB_RUNNING, JOB_SCHEDULED},

    {JOB_FAILED, JOB_QUEUED},     {JOB_FAILED, JOB_SCHEDULED},

    {JOB_CANCELED, JOB_QUEUED},   {JOB_CANCELED, JOB_SCHEDULED},
};

static bool design_allows(enum job_state from, enum job_state to)
{
    for (size_t i = 0; i < sizeof(design_edges) / sizeof(design_edges[0]); i++) {
        if (design_edges[i].from == from && design_edges[i].to == to)
            return true;
    }
    return false;
}

static const char *sname(enum job_state s)
{
    return s == JOB_NONE ? "none" : job_state_name(s);
}

/* A job with every field set, so that "untouched" means something. */
static void make_full_job(struct job *job, enum job_state state)
{
    job_init(job);
    memcpy(job->id, "01ARYZ6S41TSV4RRFFQ69G5FAV", ULID_LEN + 1);
    job->queue = strdup("provision");
    job->state = state;
    job->step = strdup("vm_created");
    job->attempt = 3;
    job->payload = strdup("{\"customer\":42}");
    job->dedup_key = strdup("order-1");
    job->concurrency_key = strdup("user:42");
    job->lock_keys = tu_json("[\"server:123\"]");
    job->webhook_url = strdup("https://example.com/hook");
    job->run_at_ms = 1700000000000;
    job->cancel_requested = true;
    job->result = tu_json("{\"ok\": true}");
    job->error = tu_json("{\"kind\": \"error\", \"message\": \"boom\"}");
    job->checkpoints = tu_json("{\"vm_created\": {\"vm\": 7}}");
    job->created_at_ms = 1700000000001;
    job->updated_at_ms = 1700000000002;
    job->seq = 41;
    assert_non_null(job->queue);
    assert_non_null(job->step);
}

static void test_transition_table(void **state)
{
    (void)state;
    int mismatches = 0;
    for (size_t i = 0; i < N_STATES; i++) {
        for (size_t j = 0; j < N_STATES; j++) {
            enum job_state from = all_states[i], to = all_states[j];
            bool want = design_allows(from, to);
            bool got = job_transition_allowed(from, to);
            if (want != got) {
                print_error("%s -> %s: DESIGN.md says %s, job.c says %s\n", sname(from), sname(to),
                            want ? "allowed" : "illegal", got ? "allowed" : "illegal");
                mismatches++;
            }
        }
    }
    assert_int_equal(mismatches, 0);
}

static void test_transition_out_of_range(void **state)
{
    (void)state;
    enum job_state bad[] = {(enum job_state)JOB_STATE_COUNT, (enum job_state)(JOB_STATE_COUNT + 1),
                            (enum job_state)1000};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (size_t j = 0; j < N_STATES; j++) {
            assert_false(job_transition_allowed(bad[i], all_states[j]));
            assert_false(job_transition_allowed(all_states[j], bad[i]));
        }
        assert_null(job_state_name(bad[i]));
        assert_false(job_state_terminal(bad[i]));
    }
}

/* Every pair through job_transition(): legal ones change exactly state, seq and updated_at. */
static void test_transition_every_pair(void **state)
{
    (void)state;
    const int64_t now = 1800000000123;
    for (size_t i = 0; i < N_STATES; i++) {
        for (size_t j = 0; j < N_STATES; j++) {
            enum job_state from = all_states[i], to = all_states[j];
            struct job job, before;
            make_full_job(&job, from);
            memcpy(&before, &job, sizeof(job));
            struct job_event ev;
            job_event_init(&ev);

            int rc = job_transition(&job, to, "job.test", now, &ev);
            if (!design_allows(from, to)) {
                if (rc != -DRV_EILLEGAL_TRANSITION)
                    fail_msg("%s -> %s: rc %d, want -DRV_EILLEGAL_TRANSITION", sname(from),
                             sname(to), rc);
                /* Untouched: every field, pointer and byte as before. */
                assert_memory_equal(&job, &before, sizeof(job));
                assert_string_equal(job.queue, "provision");
                assert_string_equal(job.step, "vm_created");
            } else {
                if (rc != 0)
                    fail_msg("%s -> %s: rc %d, want 0", sname(from), sname(to), rc);
                assert_int_equal(job.state, to);
                assert_int_equal(job.seq, before.seq + 1);
                assert_int_equal(job.updated_at_ms, now);
                /* Nothing else moved. */
                struct job expect;
                memcpy(&expect, &before, sizeof(expect));
                expect.state = to;
                expect.seq = before.seq + 1;
                expect.updated_at_ms = now;
                assert_memory_equal(&job, &expect, sizeof(job));

                assert_string_equal(ev.job_id, job.id);
                assert_int_equal(ev.seq, job.seq);
                assert_non_null(ev.type);
                assert_string_equal(ev.type, "job.test");
                assert_int_equal(ev.at_ms, now);
                assert_int_equal(ev.state, to);
                assert_int_equal(ev.prev_state, from);
                assert_non_null(ev.step);
                assert_string_equal(ev.step, "vm_created");
                assert_ptr_not_equal(ev.step, job.step); /* the event owns its copy */
                assert_int_equal(ev.attempt, 3);
                assert_null(ev.data);
            }
            job_event_release(&ev);
            job_release(&job);
        }
    }
}

static void test_transition_event_without_step(void **state)
{
    (void)state;
    struct job job;
    job_init(&job);
    memcpy(job.id, "01ARYZ6S410000000000000000", ULID_LEN + 1);
    struct job_event ev;
    job_event_init(&ev);
    assert_int_equal(job_transition(&job, JOB_QUEUED, "job.created", 5000, &ev), 0);
    assert_int_equal(job.seq, 1); /* docs/api.md: a new job shows seq 1 */
    assert_int_equal(ev.seq, 1);
    assert_int_equal(ev.prev_state, JOB_NONE);
    assert_int_equal(ev.state, JOB_QUEUED);
    assert_null(ev.step);
    assert_int_equal(ev.attempt, 0);
    assert_string_equal(ev.type, "job.created");
    assert_string_equal(ev.job_id, "01ARYZ6S410000000000000000");
    job_event_release(&ev);
    job_release(&job);
}

/* A whole life: created, run, failed, retried by hand, run again, succeeded, then frozen. */
static void test_lifecycle(void **state)
{
    (void)state;
    struct job job;
    job_init(&job);
    static const struct {
        enum job_state to;
        const char *type;
    } walk[] = {
        {JOB_SCHEDULED, "job.created"},   {JOB_QUEUED, "job.due"},     {JOB_RUNNING, "job.started"},
        {JOB_FAILED, "job.failed"},       {JOB_QUEUED, "job.retried"}, {JOB_RUNNING, "job.started"},
        {JOB_SUCCEEDED, "job.succeeded"},
    };
    enum job_state prev = JOB_NONE;
    for (size_t i = 0; i < sizeof(walk) / sizeof(walk[0]); i++) {
        struct job_event ev;
        job_event_init(&ev);
        int64_t now = 1000 + (int64_t)i;
        assert_int_equal(job_transition(&job, walk[i].to, walk[i].type, now, &ev), 0);
        assert_int_equal(ev.seq, (int64_t)i + 1);
        assert_int_equal(ev.prev_state, prev);
        assert_int_equal(ev.state, walk[i].to);
        assert_string_equal(ev.type, walk[i].type);
        assert_int_equal(job.updated_at_ms, now);
        prev = walk[i].to;
        job_event_release(&ev);
    }
    /* succeeded is final: nothing, not even a retry, moves it. */
    for (size_t j = 0; j < N_STATES; j++) {
        struct job_event ev;
        job_event_init(&ev);
        assert_int_equal(job_transition(&job, all_states[j], "job.x", 9999, &ev),
                         -DRV_EILLEGAL_TRANSITION);
        job_event_release(&ev);
    }
    assert_int_equal(job.state, JOB_SUCCEEDED);
    assert_int_equal(job.seq, 7);
    assert_int_equal(job.updated_at_ms, 1006);
    job_release(&job);
}

static void test_note(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_STATES; i++) {
        struct job job, before;
        make_full_job(&job, all_states[i]);
        memcpy(&before, &job, sizeof(job));
        struct job_event ev;
        job_event_init(&ev);
        job_note(&job, "job.step", 1900000000000, &ev);

        struct job expect;
        memcpy(&expect, &before, sizeof(expect));
        expect.seq = before.seq + 1;
        expect.updated_at_ms = 1900000000000;
        assert_memory_equal(&job, &expect, sizeof(job));

        assert_string_equal(ev.job_id, job.id);
        assert_int_equal(ev.seq, before.seq + 1);
        assert_string_equal(ev.type, "job.step");
        assert_int_equal(ev.at_ms, 1900000000000);
        assert_int_equal(ev.state, all_states[i]);
        assert_int_equal(ev.prev_state, all_states[i]);
        assert_string_equal(ev.step, "vm_created");
        assert_int_equal(ev.attempt, 3);
        job_event_release(&ev);
        job_release(&job);
    }
}

static void test_state_names(void **state)
{
    (void)state;
    /* The names of DESIGN.md §1 and docs/api.md. */
    static const struct {
        enum job_state s;
        const char *name;
    } names[] = {
        {JOB_SCHEDULED, "scheduled"}, {JOB_QUEUED, "queued"}, {JOB_RUNNING, "running"},
        {JOB_SUCCEEDED, "succeeded"}, {JOB_FAILED, "failed"}, {JOB_CANCELED, "canceled"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        assert_non_null(job_state_name(names[i].s));
        assert_string_equal(job_state_name(names[i].s), names[i].name);
        assert_int_equal(job_state_parse(names[i].name), names[i].s);
    }
    /* Round trip over every named state. */
    for (size_t i = 0; i < N_STATES; i++) {
        const char *n = job_state_name(all_states[i]);
        if (all_states[i] == JOB_NONE) {
            assert_null(n);
            continue;
        }
        assert_non_null(n);
        assert_int_equal(job_state_parse(n), all_states[i]);
    }
    const char *unknown[] = {"",        "none",      "queue", "queued ",
                             " queued", "cancelled", "done",  "succeeded\n"};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
        assert_int_equal(job_state_parse(unknown[i]), JOB_NONE);
}

static void test_state_terminal(void **state)
{
    (void)state;
    assert_false(job_state_terminal(JOB_NONE));
    assert_false(job_state_terminal(JOB_SCHEDULED));
    assert_false(job_state_terminal(JOB_QUEUED));
    assert_false(job_state_terminal(JOB_RUNNING));
    assert_true(job_state_terminal(JOB_SUCCEEDED));
    assert_true(job_state_terminal(JOB_FAILED));
    assert_true(job_state_terminal(JOB_CANCELED));
    /* Terminal states leave only by a retry (to queued or scheduled). */
    for (size_t i = 0; i < N_STATES; i++) {
        if (!job_state_terminal(all_states[i]))
            continue;
        for (size_t j = 0; j < N_STATES; j++) {
            enum job_state to = all_states[j];
            if (to != JOB_QUEUED && to != JOB_SCHEDULED)
                assert_false(job_transition_allowed(all_states[i], to));
        }
    }
}

static void test_release_resets(void **state)
{
    (void)state;
    struct job job;
    make_full_job(&job, JOB_RUNNING);
    job_release(&job);
    struct job zero;
    memset(&zero, 0, sizeof(zero));
    assert_memory_equal(&job, &zero, sizeof(job));
    job_release(&job); /* releasing twice is harmless after a reset */

    struct job_event ev;
    job_event_init(&ev);
    ev.type = strdup("x");
    ev.step = strdup("y");
    ev.data = json_object();
    job_event_release(&ev);
    assert_null(ev.type);
    assert_null(ev.step);
    assert_null(ev.data);
}

/*
 * The payload as text: set writes exactly what jansson's compact dump of the
 * value is (what stored rows have always held), so replies that copy the
 * text are byte for byte what dumping a parsed tree gave before; parse gives
 * the value back, {} for none, and a store error for text that is not JSON.
 */
static void test_payload_text(void **state)
{
    (void)state;
    static const char *const values[] = {
        "{}",
        "{\"b\": 1, \"a\": 2}", /* key order kept */
        "{\"r\": [1.0, 1e300, -0.0, 0.1, 1E2, 9223372036854775807, -9223372036854775808]}",
        "{\"s\": \"a\\u0000b\\u001f/\\ud83d\\ude00\\\"\\\\ caf\u00e9\"}",
        "{\"deep\": {\"x\": [[], {}, null, true, false]}}",
    };
    struct job job;
    job_init(&job);
    json_t *none;
    assert_int_equal(job_payload_parse(&job, &none), 0); /* no payload: {} */
    assert_true(json_is_object(none) && json_object_size(none) == 0);
    json_decref(none);
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        json_t *v = json_loads(values[i], JSON_ALLOW_NUL, NULL);
        assert_non_null(v);
        assert_int_equal(job_payload_set(&job, v), 0); /* replaces the one before */
        char *dumped = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        assert_string_equal(job.payload, dumped);
        json_t *back;
        assert_int_equal(job_payload_parse(&job, &back), 0);
        assert_true(json_equal(back, v));
        char *again = json_dumps(back, JSON_COMPACT | JSON_ENCODE_ANY);
        assert_string_equal(again, job.payload); /* parse + dump gives the same bytes */
        free(again);
        free(dumped);
        json_decref(back);
        json_decref(v);
    }
    free(job.payload);
    job.payload = strdup("{\"cut\": ");
    json_t *bad = (json_t *)1;
    assert_int_equal(job_payload_parse(&job, &bad), -DRV_ESTORE);
    assert_null(bad);
    job_release(&job);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transition_table),
        cmocka_unit_test(test_transition_out_of_range),
        cmocka_unit_test(test_transition_every_pair),
        cmocka_unit_test(test_transition_event_without_step),
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_note),
        cmocka_unit_test(test_state_names),
        cmocka_unit_test(test_state_terminal),
        cmocka_unit_test(test_release_resets),
        cmocka_unit_test(test_payload_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
