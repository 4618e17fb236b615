/*
 * outbox.h - every job event that someone wants goes into the outbox in the
 * event's own transaction, one row per event, so a crash can never keep
 * the change and lose its webhook, nor the reverse
 * (docs/adr/0014-outbox-and-delivery.md, docs/adr/0015-outbox-one-row-per-event.md).
 * The deliverer (deliver.h) fans each event out to its destinations when
 * it sends it: a subscriber more costs the job path nothing.
 *
 * Destinations: the job's own webhook_url ("job") and every enabled
 * subscription whose filters take the event (its id), as they are when the
 * event is sent. A job.delivery_dead event goes to neither the job's own
 * URL nor the subscription that died, so a dead endpoint cannot feed
 * itself.
 */
#ifndef DROVER_OUTBOX_H
#define DROVER_OUTBOX_H

#include <stdbool.h>

#include "job.h"
#include "store/writer.h"
#include "subscriptions.h"

#define OUTBOX_DEST_JOB  "job"
#define OUTBOX_MAX_DESTS (SUB_COUNT_MAX + 1) /* every subscription, and the job's own URL */

/* A destination: OUTBOX_DEST_JOB or a subscription id. */
typedef char outbox_dest[OUTBOX_DEST_MAX + 1];

/*
 * The destinations of ev of job (subs may be NULL) into dests (room for
 * OUTBOX_MAX_DESTS); returns how many.
 */
int outbox_destinations(struct sub_cache *subs, const struct job *job, const struct job_event *ev,
                        outbox_dest *dests);

/* Has ev of job any destination? (outbox_destinations() > 0, without the list.) */
bool outbox_has_destination(struct sub_cache *subs, const struct job *job,
                            const struct job_event *ev);

/*
 * On the writer thread, right after ev is stored: queue it when it has a
 * destination. *added tells whether it was (then wake the deliverer after
 * the commit).
 */
int outbox_enqueue(struct write_ctx *ctx, const struct job *job, const struct job_event *ev,
                   bool *added);

#endif
