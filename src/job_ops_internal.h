/*
 * job_ops_internal.h - what the write ops on jobs share: job_ops.c (the job
 * lifecycle), job_leases.c (claims and the calls under a lease),
 * runner_ops.c (external runners' callbacks), admission.c (dedup,
 * concurrency slots, locks) and deliver.c (a dead delivery's event). Not
 * for other modules: they use job_ops.h.
 */
#ifndef DROVER_JOB_OPS_INTERNAL_H
#define DROVER_JOB_OPS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "job_ops.h"

/* ---- job_ops.c ---- */

/* The queue's policy for this op; release with jobop_policy_done(). */
const struct policy *jobop_policy_for(struct write_ctx *ctx, const char *queue,
                                      struct policy *fallback);
void jobop_policy_done(struct write_ctx *ctx, const struct policy *p, struct policy *fallback);

/* The job's next deadline of any kind (for due_at and the timers). */
int64_t jobop_next_due(const struct job *job, const struct policy *p);

/* Is the running job still waiting for its runner to take the dispatch? */
bool jobop_waiting_for_dispatch(const struct job *job);

/*
 * Store the job and its event (released either way). A job that just ended
 * gives up its concurrency slot and lock keys here, so no path to a
 * terminal state can forget them.
 */
int jobop_save(struct write_ctx *ctx, struct job *job, struct job_event *ev,
               const struct policy *p);

/* The (saved) job became ready: hand it to a parked claim, or note the queue. */
int jobop_became_ready(struct write_ctx *ctx, const struct job *job, const struct policy *p);

/* Store a job event and its outbox rows (outbox.h). */
int jobop_event(struct write_ctx *ctx, const struct job *job, const struct job_event *ev);

/* Forget the attempt's lease (token and expiry). */
void jobop_clear_lease(struct job *job);

/*
 * The running attempt ended without success (fail, timeout, lost lease,
 * dispatch failure): record the error (with the job's run_id) and let the
 * cancel request or the retry policy decide the state; fills ev, writes nothing.
 */
int jobop_attempt_ended(struct write_ctx *ctx, struct job *job, const struct policy *p,
                        const char *kind, const char *message, const char *step, bool retryable,
                        struct job_event *ev);

/* Arm a maintenance lock's expiry after the commit. */
int jobop_effect_lock_due(struct job_env *env, const struct lock *l);

/* ---- job_leases.c ---- */

/* n random bytes (OpenSSL's generator, a per-thread block at a time) into out. */
int jobop_random_bytes(void *out, size_t n);

/*
 * Load the ready job id into *job and lease it to the claim c (the handoff
 * to a parked claim); c->n is the caller's to advance.
 */
int jobop_claim_one(struct write_ctx *ctx, struct job_claim_op *c, const struct policy *p,
                    const char *id, struct job *job);

/*
 * Record a step's checkpoint and move the lease (a step is also a sign of
 * life), then save. *recorded is false when the same step with the same
 * data was there already (then only the lease moved).
 */
int jobop_record_step(struct write_ctx *ctx, struct job *job, const struct policy *p,
                      const char *step, json_t *data, bool *recorded);

/* The attempt succeeded with result (borrowed): save it. */
int jobop_succeed(struct write_ctx *ctx, struct job *job, const struct policy *p, json_t *result);

/* Move the lease of a running job (a heartbeat) and save. */
int jobop_heartbeat(struct write_ctx *ctx, struct job *job, const struct policy *p);

/* ---- admission.c ---- */

/* The limit on the job's (queue, key): its own, else the queue's; 0 = none. */
int admission_slot_limit(const struct job *job, const struct policy *p);

/*
 * Before a submit writes: a duplicate turns it into a read of the first job
 * (s->deduplicated); a key at its limit refuses it (reject) or sets
 * *wait_for_slot (queue).
 */
int admission_admit(struct write_ctx *ctx, struct job_submit_op *s, const struct policy *p,
                    bool *wait_for_slot);

/* Give (queue, key)'s free slots to the jobs waiting for one, oldest first. */
int admission_fill_slots(struct write_ctx *ctx, const char *queue, const char *key,
                         const struct policy *p, const char *cause);

/* A job that held a slot ended: hand the slot on. */
int admission_release_slot(struct write_ctx *ctx, const struct job *ended, const struct policy *p);

/* Which of the job's lock keys are held by others? Appends them to held. */
int admission_check_locks(struct write_ctx *ctx, const struct job *job, json_t *held,
                          bool *blocked);

/* Set a job whose keys are held aside: scheduled, waiting for them. */
int admission_set_aside(struct write_ctx *ctx, struct job *job, const struct policy *p,
                        json_t *held);

/* The claimed job takes its lock keys. */
int admission_take_locks(struct write_ctx *ctx, const struct job *job);

/* A running attempt ended: give its keys back and wake who waits for them. */
int admission_release_locks(struct write_ctx *ctx, const struct job *job);

#endif
