/*
 * runner_ops.c - what an external runner's signed callback does to its job,
 * inside the writer's transaction (docs/adr/0012-runner-callbacks.md).
 *
 * The race rules, checked in this order, first match wins:
 *
 *   1. a webhook-id seen before                     -> applied false, "duplicate"
 *   2. an attempt other than the job's current one  -> 409 stale_attempt
 *   3. a job that is no longer running               -> applied false, why
 *   4. the same step with the same data again        -> applied false, "duplicate"
 *   5. otherwise the callback advances the job.
 *
 * Only 5 writes (besides moving the heartbeat deadline for 4), so a
 * callback that is refused or ignored changes nothing. Any callback of the
 * current attempt shows the runner has its dispatch: waiting_for "dispatch"
 * is cleared even if the dispatch's own answer has not arrived yet.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job_ops_internal.h"
#include "util.h"

/* Why a job that is not running ignores callbacks: "job is failed (heartbeat_timeout)". */
static void not_running_reason(const struct job *job, char *out, size_t size)
{
    const char *kind = json_string_value(json_object_get(job->error, "kind"));
    if (kind && job->state != JOB_SUCCEEDED)
        snprintf(out, size, "job is %s (%s)", job_state_name(job->state), kind);
    else
        snprintf(out, size, "job is %s", job_state_name(job->state));
}

static int set_run_id(struct job *job, const char *run_id)
{
    if (run_id == NULL || (job->run_id && strcmp(job->run_id, run_id) == 0))
        return 0;
    free(job->run_id);
    job->run_id = strdup(run_id);
    return job->run_id ? 0 : -DRV_ENOMEM;
}

/* Step 5: advance the running job. */
static int advance(struct write_ctx *ctx, struct job_callback_op *c, const struct policy *p)
{
    struct job *job = &c->job;
    struct job_event ev;
    bool recorded = true;
    int rc = set_run_id(job, c->run_id);
    if (rc == 0 && job->waiting_for && strcmp(job->waiting_for, "dispatch") == 0) {
        free(job->waiting_for); /* the runner evidently has its dispatch */
        job->waiting_for = NULL;
    }
    if (rc < 0)
        return rc;
    switch (c->status) {
    case CALLBACK_HEARTBEAT: return jobop_heartbeat(ctx, job, p);
    case CALLBACK_RUNNING:
        if (c->step == NULL)
            return jobop_heartbeat(ctx, job, p);
        rc = jobop_record_step(ctx, job, p, c->step, c->data, &recorded);
        if (rc == 0 && !recorded) {
            c->applied = false;
            snprintf(c->reason, sizeof(c->reason), "duplicate"); /* that step, those data */
        }
        return rc;
    case CALLBACK_SUCCEEDED:
        if (c->step)
            rc = jobop_record_step(ctx, job, p, c->step, c->data, &recorded);
        return rc ? rc : jobop_succeed(ctx, job, p, c->result);
    case CALLBACK_FAILED:
        rc = jobop_attempt_ended(ctx, job, p, "error",
                                 c->message ? c->message : "the runner reported a failure",
                                 c->step ? c->step : job->step, c->retryable, &ev);
        return rc ? rc : jobop_save(ctx, job, &ev, p);
    }
    return -DRV_EINTERNAL;
}

static int callback_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct job_callback_op *c = container_of(op, struct job_callback_op, op);
    struct job *job = &c->job;
    int rc = job_op_load(ctx, c->id, job, &c->err);
    if (rc < 0)
        return rc;
    c->applied = false;
    if (c->msg_id[0] && (rc = store_callback_id_seen(ctx->store, c->msg_id)) != 0) {
        if (rc < 0)
            return rc;
        snprintf(c->reason, sizeof(c->reason), "duplicate"); /* that webhook-id */
        return 0;
    }
    if (c->attempt != job->attempt)
        return errmsg_set(&c->err, -DRV_ESTALE_ATTEMPT,
                          "the callback is for attempt %d, but job '%s' is on attempt %d",
                          c->attempt, c->id, job->attempt);
    if (job->state != JOB_RUNNING) {
        not_running_reason(job, c->reason, sizeof(c->reason));
        return 0;
    }
    struct policy fallback;
    const struct policy *p = jobop_policy_for(ctx, job->queue, &fallback);
    c->applied = true;
    rc = advance(ctx, c, p);
    jobop_policy_done(ctx, p, &fallback);
    if (rc == 0 && c->applied && c->msg_id[0])
        rc = store_callback_id_put(ctx->store, c->msg_id, c->id, ctx->now_ms);
    /* Past the checks every failure is the store's, and may follow a write. */
    return rc < 0 && rc != -DRV_ENOMEM ? -DRV_ESTORE : rc;
}

void job_callback_op_init(struct job_callback_op *c, write_done_fn done)
{
    memset(c, 0, sizeof(*c));
    c->op.apply = callback_apply;
    c->op.done = done;
    c->err.field[0] = '\0';
    c->retryable = true;
}

void job_callback_op_release(struct job_callback_op *c)
{
    job_release(&c->job);
    free(c->step);
    free(c->run_id);
    free(c->message);
    json_decref(c->data);
    json_decref(c->result);
    c->step = c->run_id = c->message = NULL;
    c->data = c->result = NULL;
}
