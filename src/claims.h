/*
 * claims.h - long-poll claims that found nothing and wait for a job.
 *
 * A claim is a write op (it leases jobs). When it finds no ready job and
 * may wait, its done() parks it here — the HTTP request stays suspended,
 * holding no thread. When a commit makes jobs of that queue ready, the
 * writer's after-batch hook calls claims_notify(), which hands the oldest
 * waiting claims back to the writer, first come first served. Parking and
 * waking both run on the writer thread, after the batch's done() calls, so
 * a wake-up cannot slip between "found nothing" and "parked". A timer
 * answers a claim whose wait_s ran out.
 */
#ifndef DROVER_CLAIMS_H
#define DROVER_CLAIMS_H

#include <stdbool.h>
#include <stdint.h>

#include "job.h"
#include "store/writer.h"
#include "timers.h"

/* Embedded in a claim op. The claims module owns the links while it waits. */
struct claim_wait {
    struct claim_wait *prev, *next;
    uint64_t id;
    char queue[JOB_QUEUE_NAME_MAX + 1];
    int64_t deadline_ms;
    bool woken_before;   /* re-parked after losing a race: goes back to the front */
    struct write_op *op; /* resubmitted when a job is ready */
    void (*answer)(struct claim_wait *w); /* answer now with what it has (nothing) */
    /* Is the client still there? A claim whose client hung up is not handed a job. */
    bool (*alive)(struct claim_wait *w);
};

struct claims;

int claims_new(struct writer *w, struct timers *t, struct claims **out);
void claims_free(struct claims *c);

/*
 * Park w until a job of w->queue is ready or w->deadline_ms passes. Returns
 * false, without parking, when the deadline has passed or the server is
 * closing: then the caller answers at once.
 */
bool claims_wait(struct claims *c, struct claim_wait *w);

/*
 * n jobs of queue became ready: hand up to n waiting claims back to the
 * writer. Claims whose client hung up meanwhile are answered (and dropped)
 * instead, so no job is leased to a closed connection.
 */
void claims_notify(struct claims *c, const char *queue, int n);

/*
 * Take the oldest waiting claim of queue whose client is still there, or
 * NULL. The caller (the writer thread) now owns it: it hands it a job in the
 * current transaction and answers it after the commit, or parks it again
 * with claims_wait().
 */
struct claim_wait *claims_take(struct claims *c, const char *queue);

/* The timer for waiter `id` fired: answer it if it still waits. */
void claims_expire(struct claims *c, uint64_t id);

/* Closing: answer every waiting claim and refuse new waits. */
void claims_close(struct claims *c);

/* Claims waiting now. */
int claims_waiting(struct claims *c);

#endif
