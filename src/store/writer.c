/*
 * writer.c - the group-commit writer thread.
 */
#include "store/writer.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "idempotency.h"
#include "log.h"
#include "timeutil.h"

struct writer {
    struct store *store;
    int batch_max;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct write_op *head, *tail;       /* FIFO of queued ops */
    struct write_op *bg_head, *bg_tail; /* background ops (writer_submit_background) */
    int64_t bg_due;                     /* when the oldest background op must go */
    int64_t fg_at;                      /* when the last batch of ordinary ops ended */
    bool stopping;
    struct ulid_gen ulid;
    struct writer_hooks hooks;
    struct writer_stats stats;
};

/* Take up to batch_max queued ops, oldest first. Called with the lock held. */
/*
 * The background ops, all of them, as one batch of their own once the
 * oldest has waited WRITER_BACKGROUND_DELAY_MS (or the writer stops); NULL
 * before. Called with the lock held.
 */
static struct write_op *take_background(struct writer *w, int *n_out)
{
    if (w->bg_head == NULL || (!w->stopping && time_now_ms() < w->bg_due))
        return NULL;
    struct write_op *batch = w->bg_head;
    int n = 0;
    for (struct write_op *op = batch; op; op = op->next)
        n++;
    w->bg_head = w->bg_tail = NULL;
    *n_out = n;
    return batch;
}

static struct write_op *take_batch(struct writer *w, int *n_out)
{
    struct write_op *batch = w->head, *last = NULL, *op = w->head;
    int n = 0;
    while (op && n < w->batch_max) {
        last = op;
        op = op->next;
        n++;
    }
    if (last)
        last->next = NULL;
    w->head = op;
    if (op == NULL)
        w->tail = NULL;
    *n_out = n;
    return batch;
}

/* A failure of the store itself, after which the transaction cannot be trusted. */
static bool store_failure(int rc)
{
    return rc == -DRV_ESTORE || rc == -DRV_ENOMEM || rc == -DRV_EIO || rc == -DRV_EINTERNAL;
}

static void run_batch(struct writer *w, struct write_op *batch)
{
    struct write_ctx ctx = {.store = w->store,
                            .ulid = &w->ulid,
                            .env = w->hooks.env,
                            .idem_ttl_ms = w->hooks.idem_ttl_ms};
    int rc = store_tx_begin(w->store);
    for (struct write_op *op = batch; op && rc == 0; op = op->next) {
        ctx.now_ms = time_now_ms();
        op->result = op->idem ? idem_apply(&ctx, op) : op->apply(&ctx, op);
        /* A refusal (bad state, not found...) wrote nothing: the batch goes on.
         * A store failure may have written half an op: the whole batch fails. */
        if (store_failure(op->result))
            rc = op->result;
    }
    if (rc == 0 && w->hooks.before_commit) {
        ctx.now_ms = time_now_ms();
        rc = w->hooks.before_commit(&ctx);
    }
    if (rc == 0)
        rc = store_tx_commit(w->store);
    if (rc < 0) {
        /* Nothing of this batch is durable: every op fails, none is acknowledged. */
        store_tx_rollback(w->store);
        for (struct write_op *op = batch; op; op = op->next)
            op->result = -DRV_ESTORE;
    }
    while (batch) {
        struct write_op *next = batch->next; /* done() may free the op */
        batch->done(batch);
        batch = next;
    }
    /* After the done() calls: a claim that found nothing has registered as
     * waiting by now, so a job this batch made ready wakes it. */
    if (w->hooks.after_batch)
        w->hooks.after_batch(w->hooks.env, rc == 0);
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (w->head == NULL && !w->stopping) {
            if (w->bg_head == NULL) {
                pthread_cond_wait(&w->cond, &w->lock);
                continue;
            }
            if (time_now_ms() >= w->bg_due)
                break;
            struct timespec until = {.tv_sec = w->bg_due / 1000,
                                     .tv_nsec = (w->bg_due % 1000) * 1000000};
            pthread_cond_timedwait(&w->cond, &w->lock, &until);
        }
        if (w->head == NULL && w->bg_head == NULL && w->stopping)
            break;
        int n;
        struct write_op *batch = take_background(w, &n);
        bool background = batch != NULL;
        if (batch == NULL)
            batch = take_batch(w, &n);
        pthread_mutex_unlock(&w->lock);

        run_batch(w, batch);

        pthread_mutex_lock(&w->lock);
        if (!background)
            w->fg_at = time_now_ms();
        w->stats.batches++;
        w->stats.ops += (uint64_t)n;
        if ((uint64_t)n > w->stats.largest_batch)
            w->stats.largest_batch = (uint64_t)n;
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int writer_start(struct store *st, int batch_max, const struct writer_hooks *hooks,
                 struct writer **out)
{
    struct writer *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -DRV_ENOMEM;
    w->store = st;
    w->batch_max = batch_max > 0 ? batch_max : 1;
    if (hooks)
        w->hooks = *hooks;
    ulid_gen_init(&w->ulid);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->cond);
        free(w);
        return -DRV_EINTERNAL;
    }
    pthread_setname_np(w->thread, "drover-writer"); /* for top -H and perf; best effort */
    *out = w;
    return 0;
}

int writer_submit(struct writer *w, struct write_op *op)
{
    op->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        pthread_mutex_unlock(&w->lock);
        return -DRV_ESHUTTING_DOWN;
    }
    if (w->tail)
        w->tail->next = op;
    else
        w->head = op;
    w->tail = op;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

int writer_submit_background(struct writer *w, struct write_op *op)
{
    op->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        pthread_mutex_unlock(&w->lock);
        return -DRV_ESHUTTING_DOWN;
    }
    if (w->bg_tail) {
        w->bg_tail->next = op;
    } else {
        w->bg_head = op;
        w->bg_due = time_now_ms() + WRITER_BACKGROUND_DELAY_MS;
        pthread_cond_signal(&w->cond); /* to sleep until bg_due */
    }
    w->bg_tail = op;
    pthread_mutex_unlock(&w->lock);
    return 0;
}

void writer_stop(struct writer *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    log_printf(LOG_INFO, "writer stopped after %llu ops in %llu batches (largest %llu)",
               (unsigned long long)w->stats.ops, (unsigned long long)w->stats.batches,
               (unsigned long long)w->stats.largest_batch);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    free(w);
}

int64_t writer_foreground_at(struct writer *w)
{
    pthread_mutex_lock(&w->lock);
    int64_t at = w->fg_at;
    pthread_mutex_unlock(&w->lock);
    return at;
}

void writer_get_stats(struct writer *w, struct writer_stats *out)
{
    pthread_mutex_lock(&w->lock);
    *out = w->stats;
    pthread_mutex_unlock(&w->lock);
}
