/*
 * deliver.h - the deliverer: sends the outbox's events as signed webhooks
 * (docs/api.md "Events and webhooks"; docs/adr/0014-outbox-and-delivery.md,
 * docs/adr/0015-outbox-one-row-per-event.md).
 *
 * One thread reads the queued events (woken by the writer after a commit
 * that queued one, never by polling), builds each body once from the event
 * and its job, signs it per Standard Webhooks (webhook-id "{job}_{seq}",
 * the same on every attempt and to every destination) for each
 * destination and hands it to the outbound engine. When every destination
 * has answered, the outcomes are written in the background (one row per
 * destination) and the event leaves the queue. A failed send becomes a
 * pending row, tried again on the retry schedule (jitter; Retry-After on
 * 429 and 503) until it is delivered or dead — and a dead row becomes a
 * job.delivery_dead event.
 *
 * Order per job and destination: a send does not go while an earlier one
 * of the same job and destination is in flight or pending. A circuit
 * breaker per endpoint (scheme, host, port) stops sending to one that
 * keeps failing and lets one probe through after a cool-down.
 */
#ifndef DROVER_DELIVER_H
#define DROVER_DELIVER_H

#include <stdint.h>

#include "outbound.h"
#include "ulid.h"
#include "store/writer.h"

#define DELIVER_SCHEDULE_MAX 32
#define DELIVER_DELAY_MAX_MS (366 * 24 * 3600 * 1000.0) /* one retry delay at most: a year */
#define DELIVER_EXCERPT_MAX  512                        /* bytes of an answer kept per attempt */

struct policy_cache;
struct sub_cache;

struct deliverer_config {
    struct store *store;
    struct writer *writer;
    struct outbound *outbound;
    struct sub_cache *subs;        /* NULL: only jobs' own webhook_url */
    struct policy_cache *policies; /* queues' artifact_inline_max (job.succeeded) */
    const char *data_dir;          /* artifacts' files (job.succeeded) */
    const char *webhook_secret;    /* whsec_: signs deliveries to jobs' own webhook_url */
    int64_t schedule_ms[DELIVER_SCHEDULE_MAX]; /* delay before try 2, 3, ...; the last repeats */
    int n_schedule;
    int64_t give_up_ms;  /* a row older than this when a try fails is dead */
    int max_in_flight;   /* sends at once, all endpoints */
    int breaker_after;   /* consecutive failures that open an endpoint's circuit */
    int64_t breaker_ms;  /* the first cool-down; doubles while probes fail, up to 10 min */
    int nice;            /* the thread's nice value (util.h thread_nice()) */
    int rate_under_load; /* sends per second while the job path is busy; 0: no limit */
};

struct deliverer;

int deliverer_start(const struct deliverer_config *cfg, struct deliverer **out);

/*
 * Once the server listens: artifact URLs in job.succeeded bodies begin with
 * public_url (artifacts.h). Nothing is sent before.
 */
void deliverer_set_public_url(struct deliverer *d, const char *public_url);

/* Events were queued: look again (any thread). */
void deliverer_kick(struct deliverer *d);

/* deliver_requeue() made (job_id, dest)'s row pending again: it goes now, after its key's
 * earlier rows. */
void deliverer_requeued(struct deliverer *d, const char *job_id, const char *dest);

/* deliver_requeue() made pending rows due now: the row path looks again. */
void deliverer_rows_due(struct deliverer *d);

/*
 * Retention deleted these jobs with their outbox rows (retention.h's
 * retention_pruned_fn, arg d): forget the pending-row counts of their keys,
 * which no answer will bring down any more.
 */
void deliverer_forget_jobs(void *d, const char (*ids)[ULID_LEN + 1], int n);

/* Stop finding rows (sends in flight finish through the outbound engine). */
void deliverer_stop(struct deliverer *d);

/* After outbound_free() and writer_stop(). */
void deliverer_free(struct deliverer *d);

/*
 * Parse a retry schedule, "5s,30s,2m,10m" (ms, s, m, h), into cfg. -DRV_ECONFIG
 * with err when malformed.
 */
int deliverer_parse_schedule(const char *text, struct deliverer_config *cfg, struct errmsg *err);

/*
 * Redeliver delivery id (POST .../redeliver): a write op's apply helper.
 * A delivered or dead row becomes pending, due now: OUT dest
 * (OUTBOX_DEST_MAX + 1 bytes) is its destination, for deliverer_requeued().
 * A pending row becomes due now: dest is "" and OUT *was_pending true, for
 * deliverer_rows_due(); if a try of it is out and fails, the next is at
 * once. Either way the earlier pending rows of its job and destination,
 * which go before it, become due now too.
 */
int deliver_requeue(struct write_ctx *ctx, int64_t id, char *dest, bool *was_pending,
                    struct errmsg *err);

#endif
