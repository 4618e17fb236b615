/*
 * deliver.h - the deliverer: sends the outbox's rows as signed webhooks
 * (docs/api.md "Events and webhooks"; docs/adr/0014-outbox-and-delivery.md).
 *
 * One thread finds due rows (an index walk, woken by the writer after a
 * commit that added rows, or at the next retry's time — never by polling),
 * builds each body from the event and its job, signs it per Standard
 * Webhooks (webhook-id "{job}_{seq}", the same on every attempt and to
 * every destination) and hands it to the outbound engine. Each answer goes
 * back through the writer: the attempt is logged, the row is delivered,
 * scheduled again (the retry schedule with jitter, Retry-After on 429 and
 * 503) or dead — and a dead row becomes a job.delivery_dead event.
 *
 * Order per job and destination: a row is not sent while an earlier row
 * of the same job and destination is in flight or waiting for its retry.
 * A circuit breaker per endpoint (scheme, host, port) stops sending to one
 * that keeps failing and lets one probe through after a cool-down.
 */
#ifndef DROVER_DELIVER_H
#define DROVER_DELIVER_H

#include <stdint.h>

#include "outbound.h"
#include "store/writer.h"

#define DELIVER_SCHEDULE_MAX 32
#define DELIVER_EXCERPT_MAX  512 /* bytes of an answer kept per attempt */

struct sub_cache;

struct deliverer_config {
    struct store *store;
    struct writer *writer;
    struct outbound *outbound;
    struct sub_cache *subs;     /* NULL: only jobs' own webhook_url */
    const char *webhook_secret; /* whsec_: signs deliveries to jobs' own webhook_url */
    int64_t schedule_ms[DELIVER_SCHEDULE_MAX]; /* delay before try 2, 3, ...; the last repeats */
    int n_schedule;
    int64_t give_up_ms; /* a row older than this when a try fails is dead */
    int max_in_flight;  /* sends at once, all endpoints */
    int breaker_after;  /* consecutive failures that open an endpoint's circuit */
    int64_t breaker_ms; /* the first cool-down; doubles while probes fail, up to 10 min */
};

struct deliverer;

int deliverer_start(const struct deliverer_config *cfg, struct deliverer **out);

/* Rows were added or made due: look again (any thread). */
void deliverer_kick(struct deliverer *d);

/* Stop finding rows (sends in flight finish through the outbound engine). */
void deliverer_stop(struct deliverer *d);

/* After outbound_free() and writer_stop(). */
void deliverer_free(struct deliverer *d);

/*
 * Parse a retry schedule, "5s,30s,2m,10m" (ms, s, m, h), into cfg. -DRV_ECONFIG
 * with err when malformed.
 */
int deliverer_parse_schedule(const char *text, struct deliverer_config *cfg, struct errmsg *err);

/* Redeliver outbox row id (POST .../redeliver): a write op's apply helper. */
int deliver_requeue(struct write_ctx *ctx, int64_t id, struct errmsg *err);

#endif
