/*
 * retention.c - the retention sweep (retention.h).
 */
#include "retention.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifacts.h"
#include "job_ops.h"
#include "log.h"
#include "policy_cache.h"
#include "timeutil.h"
#include "util.h"

struct retention_op {
    struct write_op op;
    struct timers *timers;
    /* The queues with a retention, as stored when the round began. */
    char (*queues)[JOB_QUEUE_NAME_MAX + 1];
    int n_queues, cap_queues;
    int first;               /* the queue to start with: rounds take turns */
    int64_t min_retention_s; /* the shortest of them, for the next round's wait */
    /* Pruned jobs whose artifact directories are gone now: forget them. */
    char trash[RETENTION_BATCH][ULID_LEN + 1];
    int n_trash;
    bool trash_left; /* directories this round had no time for */
    int pruned;      /* out */
    char pruned_ids[RETENTION_BATCH][ULID_LEN + 1];
    retention_pruned_fn on_pruned;
    void *on_pruned_arg;
    bool oom;
};

/*
 * HOOK: rows of other tables that belong to job_id and must go with it —
 * the outbox's deliveries, say. Runs inside the sweep's transaction, right
 * after store_job_prune(); a negative code fails (rolls back) the batch.
 */
static int retention_delete_extra(struct write_ctx *ctx, const char *job_id)
{
    return store_outbox_prune(ctx->store, job_id); /* its deliveries and their log */
}

/* How long a queue's ended jobs are kept, in ms; 0 = forever. */
static int64_t keep_ms(const struct policy *p)
{
    if (p->retention_s <= 0)
        return 0;
    int64_t s = p->retention_s > p->dedup_window_s ? p->retention_s : p->dedup_window_s;
    return s * 1000;
}

static int sweep_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct retention_op *r = container_of(op, struct retention_op, op);
    char ids[RETENTION_BATCH][ULID_LEN + 1];
    int rc = 0;
    /* Every step writes or may: any failure here is the store's, and fails the batch. */
    for (int i = 0; i < r->n_trash && rc == 0; i++)
        rc = store_artifact_trash_forget(ctx->store, r->trash[i]);
    for (int k = 0; k < r->n_queues && r->pruned < RETENTION_BATCH && rc == 0; k++) {
        const char *queue = r->queues[(r->first + k) % r->n_queues];
        int64_t keep = 0;
        if (ctx->env && ctx->env->policies) {
            /* The policy as it is now: a retention turned off since the round began counts. */
            const struct policy *p = policy_cache_acquire(ctx->env->policies, queue);
            keep = keep_ms(p);
            policy_cache_unref(ctx->env->policies, p);
        }
        if (keep == 0)
            continue;
        int got = 0;
        rc = store_job_expired_ids(ctx->store, queue, ctx->now_ms - keep,
                                   RETENTION_BATCH - r->pruned, ids, &got);
        for (int i = 0; i < got && rc == 0; i++) {
            rc = store_job_prune(ctx->store, ids[i], ctx->now_ms);
            if (rc == 0)
                rc = retention_delete_extra(ctx, ids[i]);
            memcpy(r->pruned_ids[r->pruned + i], ids[i], sizeof(ids[i]));
        }
        r->pruned += got;
    }
    if (rc == -DRV_ENOT_FOUND) /* the index named a job that is not there */
        rc = -DRV_ESTORE;
    return rc;
}

static int64_t next_round_ms(const struct retention_op *r)
{
    if (r->op.result == 0 && (r->pruned > 0 || r->trash_left))
        return RETENTION_BEHIND_MS; /* more to prune, or the pruned jobs' files to remove */
    int64_t wait = r->min_retention_s > 0 ? r->min_retention_s * 1000 : RETENTION_EVERY_MS;
    if (wait < RETENTION_MIN_MS)
        wait = RETENTION_MIN_MS;
    return wait > RETENTION_EVERY_MS ? RETENTION_EVERY_MS : wait;
}

static void retention_op_free(struct retention_op *r)
{
    free(r->queues);
    free(r);
}

static void sweep_done(struct write_op *op)
{
    struct retention_op *r = container_of(op, struct retention_op, op);
    if (op->result == 0 && r->pruned > 0) {
        log_printf(LOG_DEBUG, "retention: deleted %d ended jobs", r->pruned);
        if (r->on_pruned)
            r->on_pruned(r->on_pruned_arg, (const char(*)[ULID_LEN + 1]) r->pruned_ids, r->pruned);
    } else if (op->result < 0 && op->result != -DRV_ESHUTTING_DOWN)
        log_printf(LOG_ERROR, "retention sweep failed: %s", err_name(op->result));
    timers_add(r->timers, time_now_ms() + next_round_ms(r), TIMER_SWEEP, RETENTION_SWEEP_KEY);
    retention_op_free(r);
}

/* store_policy_list()'s callback: note the queues with a retention. */
static void collect_queue(void *arg, const char *queue, const struct policy *p)
{
    struct retention_op *r = arg;
    if (p->retention_s <= 0)
        return;
    if (r->n_queues == r->cap_queues) {
        int cap = r->cap_queues ? r->cap_queues * 2 : 16;
        void *q = realloc(r->queues, (size_t)cap * sizeof(r->queues[0]));
        if (q == NULL) {
            r->oom = true;
            return;
        }
        r->queues = q;
        r->cap_queues = cap;
    }
    snprintf(r->queues[r->n_queues++], sizeof(r->queues[0]), "%s", queue);
    if (r->min_retention_s == 0 || p->retention_s < r->min_retention_s)
        r->min_retention_s = p->retention_s;
}

/* Step 1 of a round: remove the directories in the trash, for a bounded time. */
static void empty_trash(struct retention_op *r, struct store *st, const char *data_dir)
{
    int n = 0;
    if (store_artifact_trash_list(st, RETENTION_BATCH, r->trash, &n) < 0)
        return;
    int64_t until = time_mono_ms() + RETENTION_FILES_MS;
    int i = 0;
    for (; i < n && time_mono_ms() < until; i++) {
        if (artifact_dir_remove(data_dir, r->trash[i]) == 0)
            memmove(r->trash[r->n_trash++], r->trash[i], sizeof(r->trash[0]));
    }
    r->trash_left = i < n;
    /* Forget them only once their removal is durable, or a crash could bring them back. */
    if (r->n_trash > 0 && artifact_root_sync(data_dir) < 0)
        r->n_trash = 0;
}

void retention_sweep_fire(struct writer *w, struct timers *t, struct store *st,
                          const char *data_dir, retention_pruned_fn pruned, void *pruned_arg)
{
    struct retention_op *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        timers_add(t, time_now_ms() + RETENTION_EVERY_MS, TIMER_SWEEP, RETENTION_SWEEP_KEY);
        return;
    }
    r->op.apply = sweep_apply;
    r->op.done = sweep_done;
    r->timers = t;
    r->on_pruned = pruned;
    r->on_pruned_arg = pruned_arg;
    empty_trash(r, st, data_dir);
    if (store_policy_list(st, collect_queue, r) < 0 || r->oom)
        r->n_queues = 0; /* this round only forgets the trash; the next one looks again */
    if (r->n_queues > 0)
        r->first = (int)((time_now_ms() / RETENTION_BEHIND_MS) % r->n_queues);
    if (writer_submit(w, &r->op) < 0)
        retention_op_free(r); /* closing: the next start sweeps */
}

void retention_sweep_soon(struct timers *t)
{
    timers_add(t, time_now_ms(), TIMER_SWEEP, RETENTION_SWEEP_KEY);
}
