/*
 * outbox.h - every job event that someone wants goes into the outbox in the
 * event's own transaction (docs/adr/0014-outbox-and-delivery.md): one row
 * per destination, so a crash can never keep the change and lose its
 * webhook, nor the reverse. The deliverer (deliver.h) sends the rows.
 *
 * Destinations: the job's own webhook_url ("job") and every enabled
 * subscription whose filters take the event (its id). A job.delivery_dead
 * event goes to neither the job's own URL nor the subscription that died,
 * so a dead endpoint cannot feed itself.
 */
#ifndef DROVER_OUTBOX_H
#define DROVER_OUTBOX_H

#include <stdbool.h>

#include "job.h"
#include "store/writer.h"
#include "subscriptions.h"

#define OUTBOX_DEST_JOB "job"
#define OUTBOX_MAX_SUBS SUB_COUNT_MAX /* every subscription may want an event */

/*
 * On the writer thread, right after ev is stored: add the outbox rows.
 * *added tells whether any was (then wake the deliverer after the commit).
 */
int outbox_fanout(struct write_ctx *ctx, const struct job *job, const struct job_event *ev,
                  bool *added);

#endif
