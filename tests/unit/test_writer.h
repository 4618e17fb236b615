/*
 * test_writer.h - run write ops (store/writer.h) through a real writer from
 * a unit test and wait for each to finish; the SQLite store in a temporary
 * directory that the writer runs on.
 *
 * Include after <cmocka.h>. Everything here is static, as in test_util.h.
 * An op to run has tu_op_done as its done function; tu_run_op() submits it
 * and returns its result once done() ran. A test's store and writer come
 * from tu_store_setup() / tu_store_teardown() as its cmocka setup and
 * teardown, or from tu_store_open() / tu_store_close() inside a fixture of
 * its own.
 */
#ifndef DROVER_TEST_WRITER_H
#define DROVER_TEST_WRITER_H

#include <pthread.h>
#include <stdbool.h>

#include "store/store.h"
#include "store/writer.h"
#include "test_util.h"

/* A SQLite store in a directory of its own, with a writer on it. */
struct tu_store {
    char dir[64];
    struct store *store;
    struct writer *writer; /* a test that stops it itself sets it to NULL */
};

/*
 * Make the directory /tmp/drover-test-<name>-XXXXXX, open a store in it with
 * `readers` read connections, and start a writer on the store. Fails the
 * test on any error. tu_store_close() undoes it.
 */
TU_UNUSED static void tu_store_open(struct tu_store *ts, const char *name, int readers)
{
    int n = snprintf(ts->dir, sizeof(ts->dir), "/tmp/drover-test-%s-XXXXXX", name);
    assert_true(n > 0 && (size_t)n < sizeof(ts->dir));
    assert_non_null(mkdtemp(ts->dir));
    struct store_options opt = {.data_dir = ts->dir, .readers = readers};
    assert_int_equal(store_open(&store_sqlite_engine, &opt, &ts->store), 0);
    assert_int_equal(writer_start(ts->store, 16, NULL, &ts->writer), 0);
}

/* Stop the writer (unless the test did), close the store, remove its directory. */
TU_UNUSED static void tu_store_close(struct tu_store *ts)
{
    if (ts->writer)
        writer_stop(ts->writer);
    store_close(ts->store);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", ts->dir);
    assert_int_equal(system(cmd), 0);
}

/* A cmocka setup's body: *state becomes a new struct tu_store, opened as tu_store_open() does. */
TU_UNUSED static int tu_store_setup(void **state, const char *name, int readers)
{
    struct tu_store *ts = calloc(1, sizeof(*ts));
    assert_non_null(ts);
    tu_store_open(ts, name, readers);
    *state = ts;
    return 0;
}

/* The teardown that goes with tu_store_setup(): closes and frees *state. */
TU_UNUSED static int tu_store_teardown(void **state)
{
    tu_store_close(*state);
    free(*state);
    return 0;
}

/* An op signals its end here (op->owner points at one). */
struct tu_waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
};

TU_UNUSED static void tu_op_done(struct write_op *op)
{
    struct tu_waiter *w = op->owner;
    pthread_mutex_lock(&w->lock);
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

/* Submit op (its done() must be tu_op_done) and wait for it; returns op->result. */
TU_UNUSED static int tu_run_op(struct writer *writer, struct write_op *op)
{
    struct tu_waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
    op->owner = &w;
    assert_int_equal(writer_submit(writer, op), 0);
    pthread_mutex_lock(&w.lock);
    while (!w.done)
        pthread_cond_wait(&w.cond, &w.lock);
    pthread_mutex_unlock(&w.lock);
    return op->result;
}

#endif
