/*
 * admission.c - who may run, inside the writer's transaction (ADR 9):
 * dedup keys, concurrency slots (counted, handed on when a holder ends),
 * lock keys held with a lease, and maintenance locks.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job_ops_internal.h"
#include "log.h"
#include "util.h"

/* ---- admission: dedup and concurrency keys ---- */

/* The limit on (queue, key): the job's own, else the queue's; 0 = none. */
int admission_slot_limit(const struct job *job, const struct policy *p)
{
    return job->concurrency_limit ? job->concurrency_limit : p->concurrency_limit;
}

/*
 * Before a submit writes anything: a duplicate turns the op into a read of
 * the first job (s->deduplicated); a key at its limit either refuses the
 * submit (reject) or makes the new job wait for a slot (queue).
 */
int admission_admit(struct write_ctx *ctx, struct job_submit_op *s, const struct policy *p,
                    bool *wait_for_slot)
{
    struct job *job = &s->job;
    int rc;
    if (job->dedup_key) {
        char id[ULID_LEN + 1];
        enum job_state state;
        int64_t created;
        rc = store_job_dedup_find(ctx->store, job->queue, job->dedup_key, id, &state, &created);
        if (rc < 0 && rc != -DRV_ENOT_FOUND)
            return rc;
        bool within =
            p->dedup_window_s && created + (int64_t)p->dedup_window_s * 1000 > ctx->now_ms;
        if (rc == 0 && (!job_state_terminal(state) || within)) {
            job_release(job);
            rc = store_job_load(ctx->store, id, job);
            s->deduplicated = rc == 0;
            return rc == -DRV_ENOT_FOUND ? -DRV_ESTORE : rc;
        }
    }
    if (job->concurrency_key == NULL)
        return 0;
    if (job->concurrency_limit && p->concurrency_limit &&
        job->concurrency_limit > p->concurrency_limit)
        return errmsg_field(&s->err, -DRV_EBAD_FIELD, "concurrency_limit",
                            "'concurrency_limit' must not exceed the queue's (%d)",
                            p->concurrency_limit);
    int limit = admission_slot_limit(job, p), held;
    if (limit == 0)
        return 0;
    rc = store_job_slots_held(ctx->store, job->queue, job->concurrency_key, limit, &held,
                              s->active_job);
    if (rc < 0 || held < limit)
        return rc;
    if (p->on_limit == POLICY_LIMIT_REJECT)
        return errmsg_set(&s->err, -DRV_ECONCURRENCY_LIMITED,
                          "a job of queue '%s' for '%s' is already in progress: job %s", job->queue,
                          job->concurrency_key, s->active_job);
    *wait_for_slot = true;
    return 0;
}

/*
 * Give free slots of (queue, key) to the jobs waiting for one, oldest first,
 * each within its own limit (a waiting job never passes its limit, and a
 * newer one never overtakes it). A promoted job becomes queued, or stays
 * scheduled — now holding its slot — until its run_at.
 */
int admission_fill_slots(struct write_ctx *ctx, const char *queue, const char *key,
                         const struct policy *p, const char *cause)
{
    char ids[CLAIM_MAX][ULID_LEN + 1];
    int held, n = 0;
    /* No waiting job's limit passes the queue's (when it has one). */
    int bound = p->concurrency_limit ? p->concurrency_limit : INT_MAX;
    int rc = store_job_slots_held(ctx->store, queue, key, bound, &held, NULL);
    if (rc == 0)
        rc = store_job_waiting_ids(ctx->store, queue, key, CLAIM_MAX, ids, &n);
    for (int i = 0; i < n && rc == 0; i++) {
        struct job job;
        struct job_event ev;
        rc = store_job_load(ctx->store, ids[i], &job);
        if (rc < 0)
            return rc == -DRV_ENOT_FOUND ? -DRV_ESTORE : rc;
        int limit = admission_slot_limit(&job, p);
        if (limit && held >= limit) {
            job_release(&job);
            break;
        }
        free(job.waiting_for);
        job.waiting_for = NULL;
        held++;
        if (job.run_at_ms > ctx->now_ms) {
            job_note(&job, "job.scheduled", ctx->now_ms, &ev);
        } else {
            rc = job_transition(&job, JOB_QUEUED, "job.queued", ctx->now_ms, &ev);
            if (rc == -DRV_EILLEGAL_TRANSITION)
                rc = -DRV_EINTERNAL; /* writes happened: never half-apply */
        }
        if (rc == 0) {
            ev.data = json_pack("{s:s}", "slot", cause);
            job.due_at_ms = jobop_next_due(&job, p);
            rc = jobop_save(ctx, &job, &ev, p);
        }
        if (rc == 0 && job.state == JOB_QUEUED)
            rc = jobop_became_ready(ctx, &job, p);
        job_release(&job);
    }
    return rc;
}

/* A job that held one of its key's slots ended: hand the slot on. */
int admission_release_slot(struct write_ctx *ctx, const struct job *ended, const struct policy *p)
{
    char cause[64];
    snprintf(cause, sizeof(cause), "freed by %s", ended->id);
    return admission_fill_slots(ctx, ended->queue, ended->concurrency_key, p, cause);
}

/* ---- lock keys ---- */

/*
 * Is key held by anyone but job_id? An expired maintenance lock found here
 * is dropped (its timer may not have fired yet).
 */
static int lock_held(struct write_ctx *ctx, const char *key, const char *job_id, bool *held)
{
    struct lock l;
    int rc = store_lock_get(ctx->store, key, &l);
    *held = false;
    if (rc == -DRV_ENOT_FOUND)
        return 0;
    if (rc < 0)
        return rc;
    if (l.job_id[0])
        *held = strcmp(l.job_id, job_id) != 0;
    else if (l.expires_at_ms && l.expires_at_ms <= ctx->now_ms)
        rc = store_lock_delete(ctx->store, key);
    else
        *held = true;
    lock_release(&l);
    return rc;
}

/* Wake the jobs set aside for key, oldest first: they become queued again. */
static int wake_lock_waiters(struct write_ctx *ctx, const char *key)
{
    char ids[CLAIM_MAX][ULID_LEN + 1];
    int n = 0;
    int rc = store_lock_waiters(ctx->store, key, CLAIM_MAX, ids, &n);
    for (int i = 0; i < n && rc == 0; i++) {
        struct job job;
        struct job_event ev;
        rc = store_job_load(ctx->store, ids[i], &job);
        if (rc == -DRV_ENOT_FOUND) {
            rc = store_lock_wait_remove_job(ctx->store, ids[i]);
            continue;
        }
        if (rc == 0)
            rc = store_lock_wait_remove_job(ctx->store, ids[i]);
        if (rc == 0 && job.state == JOB_SCHEDULED && job.waiting_for &&
            strcmp(job.waiting_for, "lock") == 0) {
            struct policy fallback;
            const struct policy *p = jobop_policy_for(ctx, job.queue, &fallback);
            free(job.waiting_for);
            job.waiting_for = NULL;
            rc = job_transition(&job, JOB_QUEUED, "job.queued", ctx->now_ms, &ev);
            if (rc == 0) {
                ev.data = json_pack("{s:s}", "lock_released", key);
                job.due_at_ms = jobop_next_due(&job, p);
                rc = jobop_save(ctx, &job, &ev, p);
            }
            if (rc == 0)
                rc = jobop_became_ready(ctx, &job, p);
            if (rc == -DRV_EILLEGAL_TRANSITION)
                rc = -DRV_EINTERNAL;
            jobop_policy_done(ctx, p, &fallback);
        }
        job_release(&job);
    }
    return rc;
}

/* A running attempt ended: give its keys back and wake who waits for them. */
int admission_release_locks(struct write_ctx *ctx, const struct job *job)
{
    char keys[JOB_LOCK_KEYS_MAX][JOB_KEY_MAX + 1];
    int n = 0;
    int rc = store_locks_of_job(ctx->store, job->id, JOB_LOCK_KEYS_MAX, keys, &n);
    for (int i = 0; i < n && rc == 0; i++)
        rc = wake_lock_waiters(ctx, keys[i]);
    return rc;
}

/*
 * A claim met a job whose keys are held: set it aside — scheduled, waiting
 * for the keys — so the claim goes on to the next ready job.
 */
int admission_set_aside(struct write_ctx *ctx, struct job *job, const struct policy *p,
                        json_t *held)
{
    struct job_event ev;
    if ((job->waiting_for = strdup("lock")) == NULL)
        return -DRV_ENOMEM;
    int rc = job_transition(job, JOB_SCHEDULED, "job.scheduled", ctx->now_ms, &ev);
    if (rc < 0)
        return rc;
    ev.data = json_pack("{s:s, s:O}", "waiting_for", "lock", "keys", held);
    job->due_at_ms = jobop_next_due(job, p);
    rc = jobop_save(ctx, job, &ev, p);
    size_t i;
    json_t *k;
    json_array_foreach(held, i, k)
    {
        if (rc == 0)
            rc = store_lock_wait_add(ctx->store, json_string_value(k), job->id);
    }
    return rc;
}

/* Before leasing job: which of its keys are held? Sets *blocked and fills held. */
int admission_check_locks(struct write_ctx *ctx, const struct job *job, json_t *held, bool *blocked)
{
    size_t i;
    json_t *k;
    *blocked = false;
    json_array_foreach(job->lock_keys, i, k)
    {
        bool is_held;
        int rc = lock_held(ctx, json_string_value(k), job->id, &is_held);
        if (rc < 0)
            return rc;
        if (is_held) {
            *blocked = true;
            json_array_append(held, k);
        }
    }
    return 0;
}

int admission_take_locks(struct write_ctx *ctx, const struct job *job)
{
    size_t i;
    json_t *k;
    json_array_foreach(job->lock_keys, i, k)
    {
        struct lock l = {.created_at_ms = ctx->now_ms};
        snprintf(l.key, sizeof(l.key), "%s", json_string_value(k));
        memcpy(l.job_id, job->id, sizeof(l.job_id));
        int rc = store_lock_put(ctx->store, &l);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- maintenance locks ---- */

static int lock_put_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct lock_put_op *l = container_of(op, struct lock_put_op, op);
    struct lock old;
    int rc = store_lock_get(ctx->store, l->lock.key, &old);
    if (rc < 0 && rc != -DRV_ENOT_FOUND)
        return rc;
    if (rc == 0) {
        bool expired = !old.job_id[0] && old.expires_at_ms && old.expires_at_ms <= ctx->now_ms;
        bool same_owner = !old.job_id[0] && old.owner && strcmp(old.owner, l->lock.owner) == 0;
        if (old.job_id[0]) {
            snprintf(l->holder, sizeof(l->holder), "job %s", old.job_id);
            rc = errmsg_set(&l->err, -DRV_ELOCKED, "'%s' is held by running job %s", l->lock.key,
                            old.job_id);
        } else if (!expired && !same_owner) {
            snprintf(l->holder, sizeof(l->holder), "%s", old.owner ? old.owner : "");
            rc = errmsg_set(&l->err, -DRV_ELOCKED, "'%s' is held by '%s'", l->lock.key,
                            old.owner ? old.owner : "");
        } else {
            l->lock.created_at_ms = same_owner && !expired ? old.created_at_ms : ctx->now_ms;
        }
        lock_release(&old);
        if (rc < 0)
            return rc;
    } else {
        l->lock.created_at_ms = ctx->now_ms;
    }
    rc = store_lock_put(ctx->store, &l->lock);
    return rc ? rc : jobop_effect_lock_due(ctx->env, &l->lock);
}

static int lock_delete_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct lock_delete_op *l = container_of(op, struct lock_delete_op, op);
    struct lock old;
    int rc = store_lock_get(ctx->store, l->key, &old);
    if (rc == 0 && old.job_id[0])
        rc = -DRV_ENOT_FOUND; /* a job's key goes with its attempt, not by hand */
    if (rc == 0)
        lock_release(&old);
    if (rc == -DRV_ENOT_FOUND)
        return errmsg_set(&l->err, rc, "no maintenance lock '%s'", l->key);
    if (rc < 0)
        return rc;
    rc = store_lock_delete(ctx->store, l->key);
    return rc ? rc : wake_lock_waiters(ctx, l->key);
}

struct lock_expiry_op {
    struct write_op op;
    char key[JOB_KEY_MAX + 1];
};

static int lock_expiry_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct lock_expiry_op *e = container_of(op, struct lock_expiry_op, op);
    struct lock l;
    int rc = store_lock_get(ctx->store, e->key, &l);
    if (rc == -DRV_ENOT_FOUND)
        return 0;
    if (rc < 0)
        return rc;
    if (!l.job_id[0] && l.expires_at_ms && l.expires_at_ms <= ctx->now_ms) {
        rc = store_lock_delete(ctx->store, e->key);
        if (rc == 0)
            rc = wake_lock_waiters(ctx, e->key);
    } else if (!l.job_id[0]) {
        rc = jobop_effect_lock_due(ctx->env, &l); /* renewed meanwhile: check again then */
    }
    lock_release(&l);
    return rc;
}

static void lock_expiry_done(struct write_op *op)
{
    struct lock_expiry_op *e = container_of(op, struct lock_expiry_op, op);
    if (op->result < 0 && op->result != -DRV_ESHUTTING_DOWN)
        log_printf(LOG_ERROR, "expiry check of lock '%s' failed: %s", e->key, err_name(op->result));
    free(e);
}

void job_lock_expiry_fire(struct writer *w, const char *key)
{
    struct lock_expiry_op *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return;
    snprintf(e->key, sizeof(e->key), "%s", key);
    e->op.apply = lock_expiry_apply;
    e->op.done = lock_expiry_done;
    if (writer_submit(w, &e->op) < 0)
        free(e);
}

void lock_put_op_init(struct lock_put_op *l, write_done_fn done)
{
    memset(l, 0, sizeof(*l));
    l->op.apply = lock_put_apply;
    l->op.done = done;
}

void lock_put_op_release(struct lock_put_op *l)
{
    lock_release(&l->lock);
}

void lock_delete_op_init(struct lock_delete_op *l, write_done_fn done)
{
    memset(l, 0, sizeof(*l));
    l->op.apply = lock_delete_apply;
    l->op.done = done;
}
