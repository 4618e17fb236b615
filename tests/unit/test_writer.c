/*
 * test_writer.c - the writer's background ops (store/writer.h): they never
 * join a batch of ordinary ops, they wait for their delay and go together,
 * and writer_stop() still commits them. On a SQLite store in a temporary
 * directory. Also the map the deliverer keeps its keys in (strmap.h).
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

#include "error.h"
#include "store/store.h"
#include "store/writer.h"
#include "strmap.h"
#include "test_util.h"
#include "test_writer.h"
#include "util.h"
#include "timeutil.h"

static int setup(void **state)
{
    return tu_store_setup(state, "writer", 1);
}

/* An op that notes when it was applied and done. */
struct note_op {
    struct write_op op;
    int64_t applied_at, done_at;
    pthread_mutex_t lock;
    pthread_cond_t cond;
};

static int note_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct note_op *n = container_of(op, struct note_op, op);
    n->applied_at = ctx->now_ms;
    return 0;
}

static void note_done(struct write_op *op)
{
    struct note_op *n = container_of(op, struct note_op, op);
    pthread_mutex_lock(&n->lock);
    n->done_at = time_now_ms();
    pthread_cond_signal(&n->cond);
    pthread_mutex_unlock(&n->lock);
}

static void note_init(struct note_op *n)
{
    memset(n, 0, sizeof(*n));
    n->op.apply = note_apply;
    n->op.done = note_done;
    pthread_mutex_init(&n->lock, NULL);
    pthread_cond_init(&n->cond, NULL);
}

static void note_wait(struct note_op *n)
{
    pthread_mutex_lock(&n->lock);
    while (n->done_at == 0)
        pthread_cond_wait(&n->cond, &n->lock);
    pthread_mutex_unlock(&n->lock);
}

static void note_release(struct note_op *n)
{
    pthread_mutex_destroy(&n->lock);
    pthread_cond_destroy(&n->cond);
}

/* Background ops go in a batch of their own, after their delay, together. */
static void test_background_ops_wait_and_go_alone(void **state)
{
    struct tu_store *f = *state;
    struct note_op bg[3], fg;
    int64_t t0 = time_now_ms();
    for (int i = 0; i < 3; i++) {
        note_init(&bg[i]);
        assert_int_equal(writer_submit_background(f->writer, &bg[i].op), 0);
    }
    note_init(&fg);
    assert_int_equal(writer_submit(f->writer, &fg.op), 0);
    for (int i = 0; i < 3; i++)
        note_wait(&bg[i]);
    note_wait(&fg);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(bg[i].op.result, 0);
        assert_true(bg[i].applied_at >= t0 + WRITER_BACKGROUND_DELAY_MS);
        note_release(&bg[i]);
    }
    note_release(&fg);
    /* One batch for fg, one for the three background ops: never mixed. */
    struct writer_stats st;
    writer_get_stats(f->writer, &st);
    assert_int_equal(st.ops, 4);
    assert_int_equal(st.batches, 2);
}

/* Stopping the writer commits the background ops still waiting. */
static void test_stop_commits_background_ops(void **state)
{
    struct tu_store *f = *state;
    struct note_op bg;
    note_init(&bg);
    assert_int_equal(writer_submit_background(f->writer, &bg.op), 0);
    writer_stop(f->writer);
    f->writer = NULL;
    assert_true(bg.done_at != 0);
    assert_int_equal(bg.op.result, 0);
    note_release(&bg);
}

/* ---- strmap ---- */

static void test_strmap_put_get_remove(void **state)
{
    (void)state;
    struct strmap m;
    strmap_init(&m);
    int values[2000];
    char key[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof(key), "job-%d|sub", i);
        assert_int_equal(strmap_put(&m, key, &values[i]), 0);
    }
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof(key), "job-%d|sub", i);
        assert_ptr_equal(strmap_get(&m, key), &values[i]);
        if (i % 2)
            assert_true(strmap_remove(&m, key));
    }
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof(key), "job-%d|sub", i);
        assert_int_equal(strmap_has(&m, key), i % 2 == 0);
        assert_ptr_equal(strmap_get(&m, key), i % 2 ? NULL : &values[i]);
    }
    /* Replace a value; put NULL: present, with no value (a set). */
    assert_int_equal(strmap_put(&m, "job-0|sub", &values[1]), 0);
    assert_ptr_equal(strmap_get(&m, "job-0|sub"), &values[1]);
    assert_int_equal(strmap_put(&m, "only-a-member", NULL), 0);
    assert_true(strmap_has(&m, "only-a-member"));
    assert_null(strmap_get(&m, "only-a-member"));
    assert_false(strmap_remove(&m, "never-there"));
    strmap_release(&m);
}

static bool starts_with_job_1(const char *key, void *arg)
{
    return strncmp(key, arg, strlen(arg)) == 0;
}

/* strmap_remove_if() removes exactly the matching keys; the map stays usable. */
static void test_strmap_remove_if(void **state)
{
    (void)state;
    struct strmap m;
    strmap_init(&m);
    char key[32];
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "job-%d|sub-%d", i / 10, i % 10);
        assert_int_equal(strmap_put(&m, key, NULL), 0);
    }
    /* "job-1|" and nothing else: not job-10.., job-11.. */
    assert_int_equal(strmap_remove_if(&m, starts_with_job_1, "job-1|"), 10);
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "job-%d|sub-%d", i / 10, i % 10);
        assert_int_equal(strmap_has(&m, key), i / 10 != 1);
    }
    assert_int_equal(strmap_remove_if(&m, starts_with_job_1, "job-1|"), 0);
    assert_int_equal(strmap_put(&m, "job-1|sub-0", NULL), 0);
    assert_true(strmap_has(&m, "job-1|sub-0"));
    strmap_release(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_background_ops_wait_and_go_alone, setup,
                                        tu_store_teardown),
        cmocka_unit_test_setup_teardown(test_stop_commits_background_ops, setup, tu_store_teardown),
        cmocka_unit_test(test_strmap_put_get_remove),
        cmocka_unit_test(test_strmap_remove_if),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
