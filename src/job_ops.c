/*
 * job_ops.c - every change to a job, inside the group transaction: submit,
 * cancel, retries, deadlines, and policy writes, and the batch's effects
 * that wait for the commit. The claim and the calls under a lease are in
 * job_leases.c.
 *
 * The rules of an attempt's end live in one place, attempt_ended(): a
 * cancel request wins, then the retry policy (max_attempts, retry_cap,
 * backoff with jitter) decides between scheduled, queued and failed.
 */
#include "job_ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch.h"
#include "deliver.h"
#include "idempotency.h"
#include "outbox.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"
#include "job_ops_internal.h"

/* ---- effects that wait for the commit ---- */

struct due_effect {
    enum timer_kind kind;
    char key[TIMER_KEY_MAX + 1]; /* a job id, or a lock key */
    int64_t due_ms;              /* 0: no deadline left, disarm */
};

struct ready_effect {
    char queue[JOB_QUEUE_NAME_MAX + 1];
    int n;
};

struct policy_effect {
    char queue[JOB_QUEUE_NAME_MAX + 1];
    struct policy policy;
};

struct job_effects {
    struct claim_wait **handoffs; /* parked claims handed a job in this batch */
    int n_handoffs, cap_handoffs;
    struct due_effect *dues;
    int n_dues, cap_dues;
    struct ready_effect *ready;
    int n_ready, cap_ready;
    struct policy_effect *policies;
    int n_policies, cap_policies;
    bool outbox; /* rows were added: wake the deliverer */
};

/* Grow an effect array by one; NULL when out of memory. */
static void *grow(void **items, int *n, int *cap, size_t size)
{
    if (*n == *cap) {
        int ncap = *cap ? *cap * 2 : 64;
        void *p = realloc(*items, (size_t)ncap * size);
        if (p == NULL)
            return NULL;
        *items = p;
        *cap = ncap;
    }
    return (char *)*items + (size_t)(*n)++ * size;
}

/*
 * The job's next deadline, armed after the commit. A saved job with none
 * left (it finished, or went back to wait in its queue) is disarmed when
 * `saved`, so no timer wakes later to check it for nothing; a new job has
 * nothing armed to disarm.
 */
static int effect_due(struct job_env *env, const struct job *job, bool saved)
{
    if (env == NULL || (job->due_at_ms == 0 && !saved))
        return 0;
    struct job_effects *fx = env->effects;
    struct due_effect *d = grow((void **)&fx->dues, &fx->n_dues, &fx->cap_dues, sizeof(*d));
    if (d == NULL)
        return -DRV_ENOMEM;
    d->kind = TIMER_JOB;
    snprintf(d->key, sizeof(d->key), "%s", job->id);
    d->due_ms = job->due_at_ms;
    return 0;
}

int jobop_effect_lock_due(struct job_env *env, const struct lock *l)
{
    if (env == NULL || l->expires_at_ms == 0)
        return 0;
    struct job_effects *fx = env->effects;
    struct due_effect *d = grow((void **)&fx->dues, &fx->n_dues, &fx->cap_dues, sizeof(*d));
    if (d == NULL)
        return -DRV_ENOMEM;
    d->kind = TIMER_LOCK;
    snprintf(d->key, sizeof(d->key), "%s", l->key);
    d->due_ms = l->expires_at_ms;
    return 0;
}

static int effect_ready(struct job_env *env, const char *queue)
{
    if (env == NULL)
        return 0;
    struct job_effects *fx = env->effects;
    for (int i = 0; i < fx->n_ready; i++) {
        if (strcmp(fx->ready[i].queue, queue) == 0) {
            fx->ready[i].n++;
            return 0;
        }
    }
    struct ready_effect *r = grow((void **)&fx->ready, &fx->n_ready, &fx->cap_ready, sizeof(*r));
    if (r == NULL)
        return -DRV_ENOMEM;
    snprintf(r->queue, sizeof(r->queue), "%s", queue);
    r->n = 1;
    return 0;
}

static int effect_policy(struct job_env *env, const char *queue, const struct policy *p)
{
    if (env == NULL)
        return 0;
    struct job_effects *fx = env->effects;
    struct policy_effect *e =
        grow((void **)&fx->policies, &fx->n_policies, &fx->cap_policies, sizeof(*e));
    if (e == NULL)
        return -DRV_ENOMEM;
    snprintf(e->queue, sizeof(e->queue), "%s", queue);
    if (policy_copy(&e->policy, p) < 0) {
        fx->n_policies--;
        return -DRV_ENOMEM;
    }
    return 0;
}

int job_env_init(struct job_env *env, struct policy_cache *policies)
{
    memset(env, 0, sizeof(*env));
    env->policies = policies;
    env->effects = calloc(1, sizeof(*env->effects));
    return env->effects ? 0 : -DRV_ENOMEM;
}

static void effects_clear(struct job_effects *fx)
{
    for (int i = 0; i < fx->n_policies; i++)
        policy_release(&fx->policies[i].policy);
    fx->n_dues = fx->n_ready = fx->n_policies = fx->n_handoffs = 0;
    fx->outbox = false;
}

void job_env_release(struct job_env *env)
{
    if (env->effects) {
        effects_clear(env->effects);
        free(env->effects->handoffs);
        free(env->effects->dues);
        free(env->effects->ready);
        free(env->effects->policies);
        free(env->effects);
    }
    memset(env, 0, sizeof(*env));
}

void job_env_after_batch(struct job_env *env, bool committed)
{
    struct job_effects *fx = env->effects;
    if (committed) {
        /* Policies first: a woken claim must see the queue's new policy. */
        for (int i = 0; i < fx->n_policies; i++) {
            policy_cache_put(env->policies, fx->policies[i].queue, &fx->policies[i].policy);
            if (env->dispatcher && fx->policies[i].policy.mode == POLICY_HTTP)
                dispatcher_watch(env->dispatcher, fx->policies[i].queue);
        }
        for (int i = 0; i < fx->n_dues; i++) {
            struct due_effect *d = &fx->dues[i];
            if (d->due_ms)
                timers_add(env->timers, d->due_ms, d->kind, d->key);
            else
                timers_remove(env->timers, d->kind, d->key);
        }
        for (int i = 0; i < fx->n_ready; i++) {
            if (env->claims)
                claims_notify(env->claims, fx->ready[i].queue, fx->ready[i].n);
        }
        if (fx->outbox && env->deliverer)
            deliverer_kick(env->deliverer);
    }
    for (int i = 0; i < fx->n_handoffs; i++) {
        struct claim_wait *w = fx->handoffs[i];
        if (committed) {
            w->answer(w); /* its jobs are leased and durable: reply */
        } else {
            /* Rolled back: the job is not theirs after all; wait again. */
            if (w->op->idem)
                idem_forget(w->op->idem);
            job_claim_op_release(container_of(w->op, struct job_claim_op, op));
            if (!claims_wait(env->claims, w))
                w->answer(w);
        }
    }
    effects_clear(fx);
}

int job_env_before_commit(struct write_ctx *ctx)
{
    struct job_effects *fx = ctx->env->effects;
    /* Claims handed jobs by other ops keep their replies now, with the lease. */
    for (int i = 0; i < fx->n_handoffs; i++) {
        struct write_op *op = fx->handoffs[i]->op;
        int rc = op->idem ? idem_keep(ctx, op) : 0;
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- shared rules ---- */

const struct policy *jobop_policy_for(struct write_ctx *ctx, const char *queue,
                                      struct policy *fallback)
{
    if (ctx->env && ctx->env->policies)
        return policy_cache_acquire(ctx->env->policies, queue);
    policy_init(fallback);
    return fallback;
}

void jobop_policy_done(struct write_ctx *ctx, const struct policy *p, struct policy *fallback)
{
    if (p == fallback)
        policy_release(fallback);
    else
        policy_cache_unref(ctx->env->policies, p);
}

static int64_t earliest(int64_t a, int64_t b)
{
    if (a == 0)
        return b;
    if (b == 0)
        return a;
    return a < b ? a : b;
}

/* When the first attempt must have started by (queue_timeout_s), or 0. */
static int64_t queue_deadline(const struct job *job, const struct policy *p)
{
    if (job->attempt > 0 || p->queue_timeout_s == 0)
        return 0;
    int64_t base = job->run_at_ms ? job->run_at_ms : job->created_at_ms;
    return base + (int64_t)p->queue_timeout_s * 1000;
}

/* When the attempt must have finished (timeout_s), or 0. */
static int64_t attempt_deadline(const struct job *job, const struct policy *p)
{
    return p->timeout_s ? job->started_at_ms + (int64_t)p->timeout_s * 1000 : 0;
}

bool jobop_waiting_for_dispatch(const struct job *job)
{
    return job->waiting_for && strcmp(job->waiting_for, "dispatch") == 0;
}

/* The job's next deadline of any kind, for due_at and the timers. */
int64_t jobop_next_due(const struct job *job, const struct policy *p)
{
    switch (job->state) {
    case JOB_SCHEDULED:
        /* Waiting for a slot: only its queue timeout can fire; the slot's
         * release decides the rest (fill_slots). */
        if (job->waiting_for)
            return queue_deadline(job, p);
        return earliest(job->run_at_ms, queue_deadline(job, p));
    case JOB_QUEUED: return queue_deadline(job, p);
    case JOB_RUNNING:
        /* Until its runner takes the dispatch, a job has nobody to hear from:
         * only timeout_s runs (the dispatch's own tries are bounded). */
        if (jobop_waiting_for_dispatch(job))
            return attempt_deadline(job, p);
        return earliest(job->lease_expires_ms, attempt_deadline(job, p));
    default: return 0;
    }
}

void jobop_clear_lease(struct job *job)
{
    free(job->lease_token);
    job->lease_token = NULL;
    job->lease_expires_ms = 0;
}

/* A uniform number in [0, 1) for backoff jitter. */
static double random_unit(void)
{
    uint32_t r = 0;
    if (jobop_random_bytes(&r, sizeof(r)) < 0)
        return 0.5;
    return (double)r / 4294967296.0;
}

static json_t *error_object(const char *kind, const char *message, const char *step,
                            const struct job *job, int64_t now_ms)
{
    char at[TIME_RFC3339_LEN];
    time_format_rfc3339(now_ms, at);
    return json_pack("{s:s, s:s, s:o, s:o, s:i, s:s}", "kind", kind, "message",
                     message ? message : "", "step", step ? json_string(step) : json_null(),
                     "run_id", job->run_id ? json_string(job->run_id) : json_null(), "attempt",
                     job->attempt, "at", at);
}

int jobop_event(struct write_ctx *ctx, const struct job *job, const struct job_event *ev)
{
    bool added = false;
    int rc = store_event_insert(ctx->store, ev);
    if (rc == 0)
        rc = outbox_enqueue(ctx, job, ev, &added);
    if (added && ctx->env)
        ctx->env->effects->outbox = true;
    return rc;
}

/*
 * A job ended failed in a queue with an on_failure queue: queue its cleanup
 * job there, in the same transaction, with what a cleanup needs to undo the
 * attempt's work: {"failed_job", "queue", "payload", "checkpoints", "error"}.
 * A queue that names itself gets no cleanup (it would clean up its cleanups).
 */
static int run_cleanup(struct write_ctx *ctx, const struct job *failed, const struct policy *p)
{
    if (strcmp(p->on_failure, failed->queue) == 0)
        return 0;
    struct job c;
    struct job_event ev;
    job_init(&c);
    c.queue = strdup(p->on_failure);
    json_t *failed_payload, *payload = NULL;
    int rc = job_payload_parse(failed, &failed_payload);
    if (rc == 0) {
        payload =
            json_pack("{s:s, s:s, s:o, s:o, s:o}", "failed_job", failed->id, "queue", failed->queue,
                      "payload", failed_payload, "checkpoints",
                      failed->checkpoints ? json_deep_copy(failed->checkpoints) : json_object(),
                      "error", failed->error ? json_deep_copy(failed->error) : json_null());
        rc = c.queue && payload ? job_payload_set(&c, payload) : -DRV_ENOMEM;
    }
    json_decref(payload);
    rc = rc ? rc : ulid_generate(ctx->ulid, ctx->now_ms, c.id);
    c.created_at_ms = ctx->now_ms;
    if (rc == 0)
        rc = job_transition(&c, JOB_QUEUED, "job.created", ctx->now_ms, &ev);
    if (rc < 0) {
        job_release(&c);
        return rc == -DRV_ENOMEM || rc == -DRV_ESTORE ? rc : -DRV_EINTERNAL;
    }
    ev.data = json_pack("{s:s}", "cleanup_of", failed->id);
    struct policy fallback;
    const struct policy *cp = jobop_policy_for(ctx, c.queue, &fallback);
    c.due_at_ms = jobop_next_due(&c, cp);
    rc = store_job_insert(ctx->store, &c);
    if (rc == 0)
        rc = jobop_event(ctx, &c, &ev);
    job_event_release(&ev);
    if (rc == 0)
        rc = effect_due(ctx->env, &c, false);
    if (rc == 0)
        rc = jobop_became_ready(ctx, &c, cp);
    jobop_policy_done(ctx, cp, &fallback);
    job_release(&c);
    return rc;
}

/*
 * Store the job and its event; the event is released either way. A job that
 * just ended gives up its concurrency slot (if it held one) here, so no path
 * to a terminal state can forget it.
 */
int jobop_save(struct write_ctx *ctx, struct job *job, struct job_event *ev, const struct policy *p)
{
    bool ended = ev && job_state_terminal(job->state) && !job_state_terminal(ev->prev_state);
    bool waiting_slot = job->waiting_for && strcmp(job->waiting_for, "concurrency") == 0;
    bool waiting_lock = job->waiting_for && strcmp(job->waiting_for, "lock") == 0;
    bool held_slot = ended && job->concurrency_key && !waiting_slot;
    /* A running attempt that ends in any way gives its lock keys back. */
    bool held_locks = ev && ev->prev_state == JOB_RUNNING && job->state != JOB_RUNNING &&
                      json_array_size(job->lock_keys) > 0;
    if (ended && job->waiting_for) {
        free(job->waiting_for);
        job->waiting_for = NULL;
    }
    int rc = store_job_update(ctx->store, job);
    if (rc == 0 && ev)
        rc = jobop_event(ctx, job, ev);
    if (ev)
        job_event_release(ev);
    if (rc == 0)
        rc = effect_due(ctx->env, job, true);
    if (rc == 0 && ended && waiting_lock)
        rc = store_lock_wait_remove_job(ctx->store, job->id);
    if (rc == 0 && held_locks)
        rc = admission_release_locks(ctx, job);
    if (rc == 0 && held_slot)
        rc = admission_release_slot(ctx, job, p);
    if (rc == 0 && ended && job->state == JOB_FAILED && p && p->on_failure)
        rc = run_cleanup(ctx, job, p);
    return rc;
}

/*
 * The running attempt ended without success (fail, timeout, lost lease).
 * Decide what follows and fill ev; nothing is written here.
 */
int jobop_attempt_ended(struct write_ctx *ctx, struct job *job, const struct policy *p,
                        const char *kind, const char *message, const char *step, bool retryable,
                        struct job_event *ev)
{
    int64_t now = ctx->now_ms;
    json_t *error =
        error_object(job->cancel_requested ? "canceled" : kind, message, step, job, now);
    if (error == NULL)
        return -DRV_ENOMEM;
    json_decref(job->error);
    job->error = error;
    jobop_clear_lease(job);

    int rc;
    if (job->cancel_requested) {
        rc = job_transition(job, JOB_CANCELED, "job.canceled", now, ev);
    } else if (retryable && job->attempt < p->max_attempts && job->attempt < p->retry_cap) {
        int64_t delay = policy_backoff_ms(p, job->attempt, random_unit());
        if (delay > 0) {
            job->run_at_ms = now + delay;
            rc = job_transition(job, JOB_SCHEDULED, "job.scheduled", now, ev);
        } else {
            rc = job_transition(job, JOB_QUEUED, "job.queued", now, ev);
            if (rc == 0)
                rc = effect_ready(ctx->env, job->queue);
        }
    } else {
        rc = job_transition(job, JOB_FAILED, "job.failed", now, ev);
    }
    if (rc < 0)
        return rc;
    ev->data = json_pack("{s:O}", "error", job->error);
    if (job->state == JOB_SCHEDULED && ev->data) {
        char at[TIME_RFC3339_LEN];
        time_format_rfc3339(job->run_at_ms, at);
        json_object_set_new(ev->data, "retry_at", json_string(at));
    }
    job->due_at_ms = jobop_next_due(job, p);
    return 0;
}

/*
 * The job (already saved) just became ready. If a claim of its queue is
 * parked, lease the job to it in this same transaction — the claim's reply
 * goes out with the commit that made the job ready, saving a commit and the
 * wake-up's latency. Otherwise note the queue so parked claims wake after
 * the commit.
 */
int jobop_became_ready(struct write_ctx *ctx, const struct job *job, const struct policy *p)
{
    struct job_env *env = ctx->env;
    /* A job with lock keys goes through a claim's lock check instead. */
    struct claim_wait *w = env && env->claims && json_array_size(job->lock_keys) == 0
                               ? claims_take(env->claims, job->queue)
                               : NULL;
    if (w == NULL)
        return effect_ready(env, job->queue);
    struct job_claim_op *c = container_of(w->op, struct job_claim_op, op);
    struct job_effects *fx = env->effects;
    struct claim_wait **slot =
        grow((void **)&fx->handoffs, &fx->n_handoffs, &fx->cap_handoffs, sizeof(*slot));
    if (slot == NULL) {
        if (!claims_wait(env->claims, w))
            w->answer(w);
        return effect_ready(env, job->queue);
    }
    *slot = w;
    int rc = jobop_claim_one(ctx, c, p, job->id, &c->jobs[c->n]);
    if (rc == 0) {
        c->n++;
        return 0;
    }
    job_release(&c->jobs[c->n]);
    /* The op that made the job ready has written already: whatever failed,
     * the batch must roll back (and the claim waits again), never half-apply. */
    return rc == -DRV_ENOMEM ? rc : -DRV_EINTERNAL;
}

/* ---- submit ---- */

static int submit_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct job_submit_op *s = container_of(op, struct job_submit_op, op);
    struct job *job = &s->job;
    struct job_event ev;
    int rc = ulid_generate(ctx->ulid, ctx->now_ms, job->id);
    if (rc < 0)
        return rc;
    struct policy fallback;
    const struct policy *p = jobop_policy_for(ctx, job->queue, &fallback);
    bool wait_for_slot = false;
    rc = admission_admit(ctx, s, p, &wait_for_slot);
    if (rc < 0 || s->deduplicated) {
        jobop_policy_done(ctx, p, &fallback);
        return rc;
    }
    enum job_state first =
        job->run_at_ms > ctx->now_ms || wait_for_slot ? JOB_SCHEDULED : JOB_QUEUED;
    if (wait_for_slot && (job->waiting_for = strdup("concurrency")) == NULL)
        rc = -DRV_ENOMEM;
    job->state = JOB_NONE;
    job->seq = 0;
    job->attempt = 0;
    job->created_at_ms = ctx->now_ms;
    if (rc == 0)
        rc = job_transition(job, first, "job.created", ctx->now_ms, &ev);
    if (rc < 0) {
        jobop_policy_done(ctx, p, &fallback);
        return rc;
    }
    job->due_at_ms = jobop_next_due(job, p);
    rc = store_job_insert(ctx->store, job);
    if (rc == 0)
        rc = jobop_event(ctx, job, &ev);
    job_event_release(&ev);
    if (rc == 0)
        rc = effect_due(ctx->env, job, false);
    if (rc == 0 && job->state == JOB_QUEUED)
        rc = jobop_became_ready(ctx, job, p);
    jobop_policy_done(ctx, p, &fallback);
    return rc;
}

/* ---- loading the job of an op ---- */

int job_op_load(struct write_ctx *ctx, const char *id, struct job *job, struct errmsg *err)
{
    int rc = store_job_load(ctx->store, id, job);
    return rc == -DRV_ENOT_FOUND ? errmsg_set(err, rc, "no job '%s'", id) : rc;
}

/* ---- cancel ---- */

static int cancel_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct job_cancel_op *c = container_of(op, struct job_cancel_op, op);
    struct job *job = &c->job;
    struct job_event ev;
    int rc = job_op_load(ctx, c->id, job, &c->err);
    if (rc < 0)
        return rc;
    if (job_state_terminal(job->state))
        return errmsg_set(&c->err, -DRV_EILLEGAL_TRANSITION, "job '%s' is already %s", c->id,
                          job_state_name(job->state));
    if (job->state == JOB_RUNNING) {
        if (job->cancel_requested)
            return 0; /* asked already: nothing new to record */
        job->cancel_requested = true;
        job_note(job, "job.cancel_requested", ctx->now_ms, &ev);
    } else {
        rc = job_transition(job, JOB_CANCELED, "job.canceled", ctx->now_ms, &ev);
        if (rc < 0)
            return errmsg_set(&c->err, rc, "job '%s' cannot be canceled while %s", c->id,
                              job_state_name(job->state));
        json_decref(job->error);
        job->error = error_object("canceled", c->reason ? c->reason : "canceled by request",
                                  job->step, job, ctx->now_ms);
        job->due_at_ms = 0;
    }
    if (job->state == JOB_CANCELED) /* its error, as every ending's event carries */
        ev.data = json_pack("{s:O}", "error", job->error);
    else if (c->reason)
        ev.data = json_object();
    if (c->reason && ev.data)
        json_object_set_new(ev.data, "reason", json_string(c->reason));
    struct policy fallback;
    const struct policy *p = jobop_policy_for(ctx, job->queue, &fallback);
    rc = jobop_save(ctx, job, &ev, p);
    jobop_policy_done(ctx, p, &fallback);
    return rc;
}

/* ---- policy ---- */

static int policy_put_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct policy_put_op *p = container_of(op, struct policy_put_op, op);
    int rc = store_policy_put(ctx->store, p->queue, &p->policy, ctx->now_ms);
    if (rc == 0)
        rc = effect_policy(ctx->env, p->queue, &p->policy);
    /* A raised (or removed) limit lets waiting jobs start now. */
    char keys[CLAIM_MAX][JOB_KEY_MAX + 1];
    int n = 0;
    if (rc == 0)
        rc = store_job_waiting_keys(ctx->store, p->queue, CLAIM_MAX, keys, &n);
    for (int i = 0; i < n && rc == 0; i++)
        rc = admission_fill_slots(ctx, p->queue, keys[i], &p->policy, "queue limit changed");
    return rc;
}

/* ---- manual retry ---- */

static int retry_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct job_retry_op *r = container_of(op, struct job_retry_op, op);
    struct job *job = &r->job;
    struct job_event ev;
    int rc = job_op_load(ctx, r->id, job, &r->err);
    if (rc < 0)
        return rc;
    if (job->state != JOB_FAILED && job->state != JOB_CANCELED)
        return errmsg_set(&r->err, -DRV_EILLEGAL_TRANSITION,
                          "job '%s' is %s; only failed or canceled jobs can be retried", r->id,
                          job_state_name(job->state));
    struct policy fallback;
    const struct policy *p = jobop_policy_for(ctx, job->queue, &fallback);
    int cap = p->retry_cap;
    if (job->attempt >= cap && !r->force) {
        jobop_policy_done(ctx, p, &fallback);
        return errmsg_set(&r->err, -DRV_ERETRY_CAP,
                          "job '%s' has used %d of its %d attempts (retry_cap); an admin may "
                          "force another with {\"force\": true}",
                          r->id, job->attempt, cap);
    }
    /* A failed job whose cleanup ran (run_cleanup) starts again from a clean slate. */
    bool cleaned = job->state == JOB_FAILED && p->on_failure && strcmp(p->on_failure, job->queue);
    /* Back in line for its key's slots: wait when they are all held. */
    int held = 0, limit = job->concurrency_key ? admission_slot_limit(job, p) : 0;
    if (limit)
        rc = store_job_slots_held(ctx->store, job->queue, job->concurrency_key, limit, &held, NULL);
    bool wait_for_slot = limit && held >= limit;
    if (rc == 0 && wait_for_slot && (job->waiting_for = strdup("concurrency")) == NULL)
        rc = -DRV_ENOMEM;
    if (rc == 0)
        rc = job_transition(job, wait_for_slot ? JOB_SCHEDULED : JOB_QUEUED,
                            wait_for_slot ? "job.scheduled" : "job.queued", ctx->now_ms, &ev);
    if (rc == 0 && cleaned) {
        json_decref(job->checkpoints);
        job->checkpoints = NULL;
        free(job->step);
        job->step = NULL;
    }
    if (rc == 0) {
        job->run_at_ms = wait_for_slot ? 0 : job->run_at_ms;
        job->cancel_requested = false;
        json_decref(job->error);
        job->error = NULL;
        job->due_at_ms = jobop_next_due(job, p);
        ev.data = json_pack("{s:b, s:b}", "manual", 1, "forced", job->attempt >= cap);
        rc = jobop_save(ctx, job, &ev, p);
    }
    if (rc == 0 && !wait_for_slot)
        rc = jobop_became_ready(ctx, job, p);
    jobop_policy_done(ctx, p, &fallback);
    return rc;
}

/* ---- deadlines ---- */

struct deadline_op {
    struct write_op op;
    char id[ULID_LEN + 1];
};

static int deadline_check(struct write_ctx *ctx, struct job *job, const struct policy *p)
{
    int64_t now = ctx->now_ms;
    struct job_event ev;
    char message[256];
    int rc;
    int64_t qd = queue_deadline(job, p);
    if ((job->state == JOB_QUEUED || job->state == JOB_SCHEDULED) && qd && qd <= now) {
        snprintf(message, sizeof(message), "not started within queue_timeout_s (%d s)",
                 p->queue_timeout_s);
        rc = job_transition(job, JOB_FAILED, "job.failed", now, &ev);
        if (rc < 0)
            return rc;
        json_decref(job->error);
        job->error = error_object("queue_timeout", message, NULL, job, now);
        ev.data = json_pack("{s:O}", "error", job->error);
        job->due_at_ms = 0;
        return jobop_save(ctx, job, &ev, p);
    }
    if (job->state == JOB_SCHEDULED && job->waiting_for == NULL && job->run_at_ms <= now) {
        rc = job_transition(job, JOB_QUEUED, "job.queued", now, &ev);
        if (rc < 0)
            return rc;
        job->due_at_ms = jobop_next_due(job, p);
        rc = jobop_save(ctx, job, &ev, p);
        return rc ? rc : jobop_became_ready(ctx, job, p);
    }
    if (job->state == JOB_RUNNING) {
        int64_t ad = attempt_deadline(job, p);
        if (ad && ad <= now) {
            snprintf(message, sizeof(message), "attempt %d did not finish within timeout_s (%d s)",
                     job->attempt, p->timeout_s);
            rc = jobop_attempt_ended(ctx, job, p, "timeout", message, job->step, true, &ev);
            return rc ? rc : jobop_save(ctx, job, &ev, p);
        }
        if (job->lease_expires_ms && job->lease_expires_ms <= now &&
            !jobop_waiting_for_dispatch(job)) {
            if (p->mode == POLICY_HTTP)
                snprintf(message, sizeof(message), "no callback from the runner within %lld s",
                         (long long)(policy_lease_ms(p) / 1000));
            else
                snprintf(message, sizeof(message),
                         "no heartbeat or step from worker '%s' within %lld s", job->worker,
                         (long long)(policy_lease_ms(p) / 1000));
            rc = jobop_attempt_ended(ctx, job, p, "heartbeat_timeout", message, job->step, true,
                                     &ev);
            return rc ? rc : jobop_save(ctx, job, &ev, p);
        }
    }
    /* Nothing due yet (a heartbeat moved the lease, or the policy changed): re-arm. */
    int64_t due = jobop_next_due(job, p);
    if (due != job->due_at_ms) {
        job->due_at_ms = due;
        return jobop_save(ctx, job, NULL, p);
    }
    return effect_due(ctx->env, job, true);
}

static int deadline_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct deadline_op *d = container_of(op, struct deadline_op, op);
    struct job job;
    int rc = store_job_load(ctx->store, d->id, &job);
    if (rc == -DRV_ENOT_FOUND)
        return 0; /* gone (retention): nothing to do */
    if (rc < 0)
        return rc;
    if (!job_state_terminal(job.state)) {
        struct policy fallback;
        const struct policy *p = jobop_policy_for(ctx, job.queue, &fallback);
        rc = deadline_check(ctx, &job, p);
        jobop_policy_done(ctx, p, &fallback);
    }
    job_release(&job);
    return rc;
}

static void deadline_done(struct write_op *op)
{
    struct deadline_op *d = container_of(op, struct deadline_op, op);
    if (op->result < 0 && op->result != -DRV_ESHUTTING_DOWN)
        log_printf(LOG_ERROR, "deadline check of job '%s' failed: %s", d->id, err_name(op->result));
    free(d);
}

void job_deadline_fire(struct writer *w, const char *job_id)
{
    struct deadline_op *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        log_printf(LOG_ERROR, "out of memory checking job '%s'", job_id);
        return;
    }
    snprintf(d->id, sizeof(d->id), "%s", job_id);
    d->op.apply = deadline_apply;
    d->op.done = deadline_done;
    if (writer_submit(w, &d->op) < 0)
        free(d); /* stopping: the store keeps due_at for the next start */
}

/* ---- init and release ---- */

void job_submit_op_init(struct job_submit_op *s, write_done_fn done)
{
    memset(s, 0, sizeof(*s));
    job_init(&s->job);
    s->op.apply = submit_apply;
    s->op.done = done;
}

void job_cancel_op_init(struct job_cancel_op *c, write_done_fn done)
{
    memset(c, 0, sizeof(*c));
    job_init(&c->job);
    c->op.apply = cancel_apply;
    c->op.done = done;
}

void policy_put_op_init(struct policy_put_op *p, write_done_fn done)
{
    memset(p, 0, sizeof(*p));
    policy_init(&p->policy);
    p->op.apply = policy_put_apply;
    p->op.done = done;
}

void job_retry_op_init(struct job_retry_op *r, write_done_fn done)
{
    memset(r, 0, sizeof(*r));
    job_init(&r->job);
    r->op.apply = retry_apply;
    r->op.done = done;
}

void job_submit_op_release(struct job_submit_op *s)
{
    job_release(&s->job);
}

void job_cancel_op_release(struct job_cancel_op *c)
{
    job_release(&c->job);
    free(c->reason);
    c->reason = NULL;
}

void policy_put_op_release(struct policy_put_op *p)
{
    policy_release(&p->policy);
}

void job_retry_op_release(struct job_retry_op *r)
{
    job_release(&r->job);
}
