/*
 * job_ops.h - the write operations on jobs and queues, run by the writer
 * (store/writer.h) inside its group transaction.
 *
 * Each op checks against the stored state first and writes last, so a
 * refused op changes nothing (the writer's contract). Each op embeds a
 * struct write_op: the caller fills the inputs and `op.done`, and reads the
 * outputs in done().
 *
 * Effects that must wait for the commit — arming a deadline, waking waiting
 * claims, publishing a new policy — are collected in the job_env during the
 * batch and carried out by job_env_after_batch() once it committed.
 */
#ifndef DROVER_JOB_OPS_H
#define DROVER_JOB_OPS_H

#include <stdbool.h>

#include "claims.h"
#include "error.h"
#include "job.h"
#include "policy.h"
#include "policy_cache.h"
#include "store/writer.h"
#include "timers.h"

#define CLAIM_MAX         100
#define LEASE_TOKEN_LEN   32
#define WORKER_NAME_MAX   128
#define STEP_NAME_MAX     64
#define ERROR_MESSAGE_MAX 4096

/* What ops need beyond the store. Owned by serve.c; used on the writer thread. */
struct job_env {
    struct policy_cache *policies;
    struct timers *timers;
    struct claims *claims;
    struct dispatcher *dispatcher; /* told when a queue's policy turns to http mode */
    struct deliverer *deliverer;   /* woken when events went into the outbox */
    struct sub_cache *subs;        /* who wants which events (outbox.h) */
    struct job_effects *effects;   /* this batch's, private */
};

int job_env_init(struct job_env *env, struct policy_cache *policies);
void job_env_release(struct job_env *env);

/* The writer's before-commit hook: keep the replies of claims handed jobs (idempotency.h). */
int job_env_before_commit(struct write_ctx *ctx);

/* The writer's after-batch hook: carry out (or drop) the batch's effects. */
void job_env_after_batch(struct job_env *env, bool committed);

/* A timer for a job fired: queue an op that checks its deadlines (any thread). */
void job_deadline_fire(struct writer *w, const char *job_id);

/*
 * For a write op on one job (on the writer thread): load job id into job;
 * on success the caller job_release()s it. A missing job is -DRV_ENOT_FOUND
 * with "no job 'ID'" in err; other errors are the store's.
 */
int job_op_load(struct write_ctx *ctx, const char *id, struct job *job, struct errmsg *err);

/*
 * Submit. In: job as job_from_submit() filled it. Out: the stored job (id,
 * times, seq) — or, when deduplicated is set, the earlier job with the same
 * dedup_key, and nothing was written. Refused past a concurrency limit in
 * reject mode with -DRV_ECONCURRENCY_LIMITED and active_job set.
 */
struct job_submit_op {
    struct write_op op;
    struct job job;
    bool deduplicated;
    char active_job[ULID_LEN + 1];
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

/*
 * Claim up to max ready jobs of queue for worker. Out: jobs[0..n) running,
 * each with its new lease (job.lease_token, job.lease_expires_ms). The
 * caller decides in done() whether to wait (claims.h) when n is 0.
 */
struct job_claim_op {
    struct write_op op;
    char queue[JOB_QUEUE_NAME_MAX + 1];
    char worker[WORKER_NAME_MAX + 1];
    int max;
    /* drover's own dispatcher (dispatch.h): the only claimer of a queue in
     * http mode; its jobs wait for their dispatch (waiting_for "dispatch"). */
    bool dispatcher;
    struct claim_wait wait;
    struct job jobs[CLAIM_MAX];
    int n;
    struct errmsg err;
};
void job_claim_op_init(struct job_claim_op *c, write_done_fn done);

/* What a worker (or the dispatcher, for its leases) does with its lease. */
enum lease_action {
    LEASE_HEARTBEAT,
    LEASE_STEP,
    LEASE_COMPLETE,
    LEASE_FAIL,
    LEASE_DISPATCHED, /* the runner took the dispatch: data {status, latency_ms} */
};

/*
 * A call under a lease. In: id, token, action and its inputs (owned).
 * Out: the job after. A token that is not the running attempt's is
 * -DRV_ELEASE_LOST.
 */
struct job_lease_op {
    struct write_op op;
    char id[ULID_LEN + 1];
    char token[LEASE_TOKEN_LEN + 1];
    enum lease_action action;
    char *step;       /* LEASE_STEP: the step; LEASE_FAIL: the failed step or NULL */
    json_t *data;     /* LEASE_STEP: checkpoint data; LEASE_COMPLETE: result */
    char *message;    /* LEASE_FAIL */
    bool retryable;   /* LEASE_FAIL */
    const char *kind; /* LEASE_FAIL: error.kind, NULL for "error" (static string) */
    struct job job;
    struct errmsg err;
};
void job_lease_op_init(struct job_lease_op *l, enum lease_action action, write_done_fn done);

/* Is token the running attempt's lease? (Constant-time comparison.) */
bool job_lease_valid(const struct job *job, const char *token);

/* 0 when job_lease_valid(), else -DRV_ELEASE_LOST with why (state, attempt) in err. */
int job_lease_check(const struct job *job, const char *token, struct errmsg *err);

/* How a runner's callback reports (POST /v1/callbacks/{id}). */
enum callback_status { CALLBACK_HEARTBEAT, CALLBACK_RUNNING, CALLBACK_SUCCEEDED, CALLBACK_FAILED };

#define CALLBACK_MSG_ID_MAX 256
#define CALLBACK_RUN_ID_MAX 256
#define CALLBACK_REASON_MAX 160

/*
 * A verified runner callback (runner_ops.c). In: id, attempt, status and its
 * fields (owned), msg_id ("" for none). Out: applied, or why not (reason),
 * and the job after. An attempt other than the current one is
 * -DRV_ESTALE_ATTEMPT; a callback for a job that is no longer running, a
 * repeated msg_id or a repeated step changes nothing (applied false).
 */
struct job_callback_op {
    struct write_op op;
    char id[ULID_LEN + 1];
    char msg_id[CALLBACK_MSG_ID_MAX + 1];
    int attempt;
    enum callback_status status;
    char *step;
    json_t *data;   /* the step's checkpoint data */
    json_t *result; /* succeeded */
    char *run_id;
    char *message; /* failed */
    bool retryable;
    bool applied;
    char reason[CALLBACK_REASON_MAX];
    struct job job;
    struct errmsg err;
};
void job_callback_op_init(struct job_callback_op *c, write_done_fn done);
void job_callback_op_release(struct job_callback_op *c);

/* Manual retry of a failed or canceled job. force passes retry_cap (admins only). */
struct job_retry_op {
    struct write_op op;
    char id[ULID_LEN + 1];
    bool force;
    struct job job;
    struct errmsg err;
};
void job_retry_op_init(struct job_retry_op *r, write_done_fn done);

/* ---- maintenance locks (admission.c) ---- */

/*
 * Take, renew or refuse a maintenance lock. In: lock.key, owner, reason,
 * expires_at_ms (0 = none). Out: the lock as stored; -DRV_ELOCKED (with
 * holder set) when a running job or another owner holds the key.
 */
struct lock_put_op {
    struct write_op op;
    struct lock lock;
    char holder[WORKER_NAME_MAX + ULID_LEN + 16];
    struct errmsg err;
};
void lock_put_op_init(struct lock_put_op *l, write_done_fn done);
void lock_put_op_release(struct lock_put_op *l);

/* Release a maintenance lock; jobs waiting for it become queued. */
struct lock_delete_op {
    struct write_op op;
    char key[JOB_KEY_MAX + 1];
    struct errmsg err;
};
void lock_delete_op_init(struct lock_delete_op *l, write_done_fn done);

/* A lock's timer fired: release it if it expired (any thread). */
void job_lock_expiry_fire(struct writer *w, const char *key);

/* Release what the op owns (not the op itself). */
void job_submit_op_release(struct job_submit_op *s);
void job_cancel_op_release(struct job_cancel_op *c);
void policy_put_op_release(struct policy_put_op *p);
void job_claim_op_release(struct job_claim_op *c); /* also resets it for another run */
void job_lease_op_release(struct job_lease_op *l);
void job_retry_op_release(struct job_retry_op *r);

#endif
