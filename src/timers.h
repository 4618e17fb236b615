/*
 * timers.h - deadlines: a min-heap and one thread that sleeps until the
 * earliest one (as beanstalkd's loop does), never scanning the jobs table.
 *
 * An entry is (when, kind, key). When it comes due the thread calls the
 * fire function given at creation. Entries are hints, not truths: the fire
 * function re-reads the job and re-arms if the deadline moved (a heartbeat
 * extends a lease without touching the heap), so an early or needless
 * fire is harmless. A key is armed once, at its earliest time.
 */
#ifndef DROVER_TIMERS_H
#define DROVER_TIMERS_H

#include <stdint.h>

#define TIMER_KEY_MAX 200 /* a lock key's length (JOB_KEY_MAX) */

enum timer_kind {
    TIMER_JOB,      /* key: a job id; check its deadlines */
    TIMER_WAITER,   /* key: a waiting claim's id; it has waited long enough */
    TIMER_LOCK,     /* key: a maintenance lock's key; it may have expired */
    TIMER_SWEEP,    /* key: what to sweep ("idempotency") */
    TIMER_DISPATCH, /* key: a job id (retry its dispatch) or "q:QUEUE" (claim again) */
};

typedef void (*timer_fire_fn)(void *ctx, enum timer_kind kind, const char *key);

struct timers;

int timers_start(timer_fire_fn fire, void *ctx, struct timers **out);

/*
 * Stop the thread; entries not yet due are dropped and later timers_add()
 * calls are ignored (the store keeps every job's due_at for the next start).
 * Safe to call with NULL.
 */
void timers_stop(struct timers *t);

/* Free a stopped t. */
void timers_free(struct timers *t);

/* Arm: call fire(kind, key) at wall-clock when_ms (at once if it has passed). */
void timers_add(struct timers *t, int64_t when_ms, enum timer_kind kind, const char *key);

/* Disarm (kind, key) if it is armed: a job that finished has no deadline left. */
void timers_remove(struct timers *t, enum timer_kind kind, const char *key);

/* Keys armed now, one per (kind, key) (for logs and metrics). */
int timers_pending(struct timers *t);

#endif
