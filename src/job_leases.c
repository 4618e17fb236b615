/*
 * job_leases.c - a job's lease, inside the group transaction: the claim
 * that grants it (and the lease token it hands out), and the calls a
 * worker or the dispatcher makes under it (heartbeat, step, complete,
 * fail, dispatched). Steps, heartbeats and success are shared with the
 * runner callbacks (runner_ops.c); how an attempt ends without success
 * is decided in job_ops.c (jobop_attempt_ended).
 */
#include "job_ops.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "util.h"
#include "job_ops_internal.h"

/* ---- lease tokens ---- */

/*
 * n random bytes from OpenSSL's generator, drawn a block at a time: a
 * RAND_bytes() call per lease token was 6% of the writer's time in the
 * end-to-end bench (its lock and DRBG set-up cost more than the bytes).
 * Per thread, so no lock; a byte handed out is wiped from the block. The
 * block is a cache of the generator's output, like OpenSSL's own
 * per-thread state, not state of drover's: nothing else reads it, and
 * drover starts children with posix_spawn(), so no fork copies it.
 */
int jobop_random_bytes(void *out, size_t n)
{
    static _Thread_local unsigned char block[512];
    static _Thread_local size_t left;
    if (n > sizeof(block))
        return RAND_bytes(out, (int)n) == 1 ? 0 : -DRV_EINTERNAL;
    if (left < n) {
        if (RAND_bytes(block, sizeof(block)) != 1)
            return -DRV_EINTERNAL;
        left = sizeof(block);
    }
    unsigned char *from = block + sizeof(block) - left;
    memcpy(out, from, n);
    OPENSSL_cleanse(from, n);
    left -= n;
    return 0;
}

static int new_lease_token(char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[LEASE_TOKEN_LEN / 2];
    if (jobop_random_bytes(raw, sizeof(raw)) < 0)
        return -DRV_EINTERNAL;
    for (size_t i = 0; i < sizeof(raw); i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[2 * sizeof(raw)] = '\0';
    return 0;
}

/* ---- claim ---- */

/* Lease a loaded, queued job to the claim c. */
static int claim_loaded(struct write_ctx *ctx, struct job_claim_op *c, const struct policy *p,
                        struct job *job)
{
    struct job_event ev;
    char token[LEASE_TOKEN_LEN + 1];
    int rc;
    if (new_lease_token(token) < 0)
        return -DRV_EINTERNAL;
    job->attempt++;
    rc = job_transition(job, JOB_RUNNING, "job.running", ctx->now_ms, &ev);
    if (rc < 0) {
        job->attempt--;
        return rc;
    }
    free(job->worker);
    free(job->lease_token);
    free(job->run_id); /* the last attempt's stays in its error */
    job->run_id = NULL;
    job->worker = strdup(c->worker);
    job->lease_token = strdup(token);
    if (c->dispatcher) {
        free(job->waiting_for);
        job->waiting_for = strdup("dispatch");
    }
    if (job->worker == NULL || job->lease_token == NULL || (c->dispatcher && !job->waiting_for)) {
        job_event_release(&ev);
        return -DRV_ENOMEM;
    }
    json_decref(job->error); /* the last attempt's error stays in its event */
    job->error = NULL;
    job->started_at_ms = ctx->now_ms;
    job->lease_expires_ms = ctx->now_ms + policy_lease_ms(p);
    job->due_at_ms = jobop_next_due(job, p);
    ev.data = json_pack("{s:s}", "worker", c->worker);
    return jobop_save(ctx, job, &ev, p);
}

int jobop_claim_one(struct write_ctx *ctx, struct job_claim_op *c, const struct policy *p,
                    const char *id, struct job *job)
{
    int rc = store_job_load(ctx->store, id, job);
    if (rc < 0)
        return rc == -DRV_ENOT_FOUND ? -DRV_ESTORE : rc; /* the index just named it */
    return claim_loaded(ctx, c, p, job);
}

/*
 * The oldest ready jobs of the queue, each leased with its lock keys taken;
 * a job whose keys are held is set aside and the claim looks further, a few
 * rounds at most.
 */
static int claim_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct job_claim_op *c = container_of(op, struct job_claim_op, op);
    char ids[CLAIM_MAX][ULID_LEN + 1];
    struct policy fallback;
    const struct policy *p = jobop_policy_for(ctx, c->queue, &fallback);
    int rc = 0;
    bool http = p->mode == POLICY_HTTP;
    if (http != c->dispatcher) {
        jobop_policy_done(ctx, p, &fallback);
        if (c->dispatcher)
            return 0; /* the queue left http mode: the dispatcher lets go of it */
        return errmsg_set(&c->err, -DRV_ECONFLICT,
                          "queue '%s' dispatches its jobs over HTTP (mode \"http\"); they "
                          "cannot be claimed",
                          c->queue);
    }
    for (int round = 0; round < 8 && c->n < c->max && rc == 0; round++) {
        int n = 0, set_aside_n = 0;
        rc = store_job_ready_ids(ctx->store, c->queue, c->max - c->n, ids, &n);
        if (rc < 0 || n == 0)
            break;
        for (int i = 0; i < n && rc == 0; i++) {
            struct job *job = &c->jobs[c->n];
            rc = store_job_load(ctx->store, ids[i], job);
            if (rc < 0) {
                rc = rc == -DRV_ENOT_FOUND ? -DRV_ESTORE : rc;
                break;
            }
            bool blocked = false;
            json_t *held = json_array();
            if (held == NULL)
                rc = -DRV_ENOMEM;
            if (rc == 0 && json_array_size(job->lock_keys) > 0)
                rc = admission_check_locks(ctx, job, held, &blocked);
            if (rc == 0 && blocked) {
                rc = admission_set_aside(ctx, job, p, held);
                set_aside_n++;
                job_release(job);
            } else if (rc == 0) {
                rc = claim_loaded(ctx, c, p, job);
                if (rc == 0)
                    rc = admission_take_locks(ctx, job);
                if (rc == 0)
                    c->n++;
                else
                    job_release(job);
            } else {
                job_release(job);
            }
            json_decref(held);
        }
        if (set_aside_n == 0)
            break; /* every ready job found was leased */
    }
    jobop_policy_done(ctx, p, &fallback);
    /* Writes happened before any refusal here: only store failures remain. */
    return rc < 0 && rc != -DRV_ENOMEM && rc != -DRV_ESTORE ? -DRV_EINTERNAL : rc;
}

/* ---- lease calls ---- */

bool job_lease_valid(const struct job *job, const char *token)
{
    return job->state == JOB_RUNNING && job->lease_token &&
           strlen(job->lease_token) == strlen(token) &&
           CRYPTO_memcmp(job->lease_token, token, strlen(token)) == 0;
}

int job_lease_check(const struct job *job, const char *token, struct errmsg *err)
{
    if (job_lease_valid(job, token))
        return 0;
    return errmsg_set(err, -DRV_ELEASE_LOST, "the lease is not valid: job '%s' is %s%s, attempt %d",
                      job->id, job_state_name(job->state),
                      job->state == JOB_RUNNING ? " under another lease" : "", job->attempt);
}

/* The furthest reported step in the declared order; the latest one when none is declared. */
static void update_current_step(struct job *job, const struct policy *p, const char *reported)
{
    const char *best = NULL;
    size_t i;
    json_t *name;
    json_array_foreach(p->steps, i, name)
    {
        if (json_object_get(job->checkpoints, json_string_value(name)))
            best = json_string_value(name);
    }
    if (best == NULL && json_array_size(p->steps) == 0)
        best = reported;
    if (best && (job->step == NULL || strcmp(job->step, best) != 0)) {
        free(job->step);
        job->step = strdup(best);
    }
}

int jobop_record_step(struct write_ctx *ctx, struct job *job, const struct policy *p,
                      const char *step, json_t *data, bool *recorded)
{
    data = data ? data : json_null();
    json_t *old = job->checkpoints ? json_object_get(job->checkpoints, step) : NULL;
    job->lease_expires_ms = ctx->now_ms + policy_lease_ms(p);
    job->due_at_ms = jobop_next_due(job, p);
    *recorded = !(old && json_equal(old, data));
    if (!*recorded)
        return jobop_save(ctx, job, NULL, p); /* a repeat: only the lease moves */
    if (job->checkpoints == NULL && (job->checkpoints = json_object()) == NULL)
        return -DRV_ENOMEM;
    if (json_object_set(job->checkpoints, step, data) < 0)
        return -DRV_ENOMEM;
    update_current_step(job, p, step);
    struct job_event ev;
    job_note(job, "job.step", ctx->now_ms, &ev);
    free(ev.step);
    ev.step = strdup(step);
    ev.data = json_pack("{s:s, s:O}", "step", step, "data", data);
    return jobop_save(ctx, job, &ev, p);
}

int jobop_heartbeat(struct write_ctx *ctx, struct job *job, const struct policy *p)
{
    job->lease_expires_ms = ctx->now_ms + policy_lease_ms(p);
    job->due_at_ms = jobop_next_due(job, p);
    return jobop_save(ctx, job, NULL, p);
}

int jobop_succeed(struct write_ctx *ctx, struct job *job, const struct policy *p, json_t *result)
{
    struct job_event ev;
    int rc = job_transition(job, JOB_SUCCEEDED, "job.succeeded", ctx->now_ms, &ev);
    if (rc < 0)
        return rc;
    json_decref(job->result);
    job->result = result ? json_incref(result) : NULL;
    json_decref(job->error);
    job->error = NULL;
    jobop_clear_lease(job);
    job->due_at_ms = 0;
    return jobop_save(ctx, job, &ev, p);
}

/* The dispatcher's request was taken (2xx): the job waits for its runner now. */
static int dispatched(struct write_ctx *ctx, struct job *job, const struct policy *p, json_t *data)
{
    struct job_event ev;
    if (jobop_waiting_for_dispatch(job)) {
        free(job->waiting_for);
        job->waiting_for = NULL;
        /* The runner has it: from now on it must be heard from. */
        job->lease_expires_ms = ctx->now_ms + policy_lease_ms(p);
        job->due_at_ms = jobop_next_due(job, p);
    }
    job_note(job, "job.dispatched", ctx->now_ms, &ev);
    ev.data = data ? json_incref(data) : NULL;
    return jobop_save(ctx, job, &ev, p);
}

static int lease_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct job_lease_op *l = container_of(op, struct job_lease_op, op);
    struct job *job = &l->job;
    struct job_event ev;
    int rc = job_op_load(ctx, l->id, job, &l->err);
    if (rc == 0)
        rc = job_lease_check(job, l->token, &l->err);
    if (rc < 0)
        return rc;
    struct policy fallback;
    const struct policy *p = jobop_policy_for(ctx, job->queue, &fallback);
    bool recorded;
    switch (l->action) {
    case LEASE_HEARTBEAT: rc = jobop_heartbeat(ctx, job, p); break;
    case LEASE_STEP: rc = jobop_record_step(ctx, job, p, l->step, l->data, &recorded); break;
    case LEASE_COMPLETE: rc = jobop_succeed(ctx, job, p, l->data); break;
    case LEASE_FAIL:
        rc = jobop_attempt_ended(ctx, job, p, l->kind ? l->kind : "error", l->message, l->step,
                                 l->retryable, &ev);
        if (rc == 0)
            rc = jobop_save(ctx, job, &ev, p);
        break;
    case LEASE_DISPATCHED: rc = dispatched(ctx, job, p, l->data); break;
    }
    jobop_policy_done(ctx, p, &fallback);
    return rc;
}

/* ---- init and release ---- */

void job_claim_op_init(struct job_claim_op *c, write_done_fn done)
{
    memset(c, 0, sizeof(*c));
    c->op.apply = claim_apply;
    c->op.done = done;
    c->wait.op = &c->op;
}

void job_lease_op_init(struct job_lease_op *l, enum lease_action action, write_done_fn done)
{
    memset(l, 0, sizeof(*l));
    job_init(&l->job);
    l->action = action;
    l->retryable = true;
    l->op.apply = lease_apply;
    l->op.done = done;
}

void job_claim_op_release(struct job_claim_op *c)
{
    for (int i = 0; i < c->n; i++)
        job_release(&c->jobs[i]);
    c->n = 0;
}

void job_lease_op_release(struct job_lease_op *l)
{
    job_release(&l->job);
    free(l->step);
    free(l->message);
    json_decref(l->data);
    l->step = l->message = NULL;
    l->data = NULL;
}
