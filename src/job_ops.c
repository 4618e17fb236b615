/*
 * job_ops.c - submit, cancel and policy writes, inside the group transaction.
 */
#include "job_ops.h"

#include <stdlib.h>
#include <string.h>

#include "timeutil.h"
#include "util.h"

static int submit_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct job_submit_op *s = container_of(op, struct job_submit_op, op);
    struct job *job = &s->job;
    struct job_event ev;
    int rc = ulid_generate(ctx->ulid, ctx->now_ms, job->id);
    if (rc < 0)
        return rc;
    enum job_state first = job->run_at_ms > ctx->now_ms ? JOB_SCHEDULED : JOB_QUEUED;
    job->state = JOB_NONE;
    job->seq = 0;
    job->attempt = 0;
    job->created_at_ms = ctx->now_ms;
    rc = job_transition(job, first, "job.created", ctx->now_ms, &ev);
    if (rc < 0)
        return rc;
    rc = store_job_insert(ctx->store, job);
    if (rc == 0)
        rc = store_event_insert(ctx->store, &ev);
    job_event_release(&ev);
    return rc;
}

static json_t *cancel_error(const struct job *job, const char *reason, int64_t now_ms)
{
    char at[TIME_RFC3339_LEN];
    time_format_rfc3339(now_ms, at);
    return json_pack("{s:s, s:s, s:o, s:n, s:s}", "kind", "canceled", "message",
                     reason ? reason : "canceled by request", "step",
                     job->step ? json_string(job->step) : json_null(), "run_id", "at", at);
}

static int cancel_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct job_cancel_op *c = container_of(op, struct job_cancel_op, op);
    struct job *job = &c->job;
    struct job_event ev;
    int rc = store_job_load(ctx->store, c->id, job);
    if (rc == -DRV_ENOT_FOUND)
        return errmsg_set(&c->err, rc, "no job '%s'", c->id);
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
        job->error = cancel_error(job, c->reason, ctx->now_ms);
    }
    if (c->reason)
        ev.data = json_pack("{s:s}", "reason", c->reason);
    rc = store_job_update(ctx->store, job);
    if (rc == 0)
        rc = store_event_insert(ctx->store, &ev);
    job_event_release(&ev);
    return rc;
}

static int policy_put_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct policy_put_op *p = container_of(op, struct policy_put_op, op);
    return store_policy_put(ctx->store, p->queue, &p->policy, ctx->now_ms);
}

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
