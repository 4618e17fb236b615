/*
 * test_writer.h - run write ops (store/writer.h) through a real writer from
 * a unit test and wait for each to finish.
 *
 * Include after <cmocka.h>. Everything here is static, as in test_util.h.
 * An op to run has tu_op_done as its done function; tu_run_op() submits it
 * and returns its result once done() ran.
 */
#ifndef DROVER_TEST_WRITER_H
#define DROVER_TEST_WRITER_H

#include <pthread.h>
#include <stdbool.h>

#include "store/writer.h"
#include "test_util.h"

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
