/*
 * job_ops.h - the write operations on jobs and queues, run by the writer
 * (store/writer.h) inside its group transaction.
 *
 * Each op validates against the stored state first and writes only when it
 * will succeed, so a refused op changes nothing; the writer's savepoint
 * covers the rest. Each op embeds a struct write_op: the caller fills its
 * inputs and `op.done`, sets nothing else, and reads the outputs in done().
 */
#ifndef DROVER_JOB_OPS_H
#define DROVER_JOB_OPS_H

#include "error.h"
#include "job.h"
#include "policy.h"
#include "store/writer.h"

/* Submit. In: job as job_from_submit() filled it. Out: the stored job (id, times, seq). */
struct job_submit_op {
    struct write_op op;
    struct job job;
    struct errmsg err;
};
void job_submit_op_init(struct job_submit_op *s, write_done_fn done);

/*
 * Cancel. In: id, reason (owned, may be NULL). Out: the job after. A queued
 * or scheduled job is canceled; a running one gets cancel_requested (once);
 * a terminal one is -DRV_EILLEGAL_TRANSITION.
 */
struct job_cancel_op {
    struct write_op op;
    char id[ULID_LEN + 1];
    char *reason;
    struct job job;
    struct errmsg err;
};
void job_cancel_op_init(struct job_cancel_op *c, write_done_fn done);

/* Set a queue's policy. In: queue, policy (owned). */
struct policy_put_op {
    struct write_op op;
    char queue[JOB_QUEUE_NAME_MAX + 1];
    struct policy policy;
    struct errmsg err;
};
void policy_put_op_init(struct policy_put_op *p, write_done_fn done);

/* Release what the op owns (not the op itself). */
void job_submit_op_release(struct job_submit_op *s);
void job_cancel_op_release(struct job_cancel_op *c);
void policy_put_op_release(struct policy_put_op *p);

#endif
