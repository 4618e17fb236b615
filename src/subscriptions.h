/*
 * subscriptions.h - webhook subscriptions: who wants which job events
 * (docs/api.md "Subscriptions"; DESIGN.md §1 Events and webhooks).
 *
 * A subscription is {id, url, secret, events, queues, enabled}. The secret
 * is a whsec_ secret, generated when not given; replacing it keeps the old
 * one valid for a grace period, during which deliveries are signed with
 * both. Stored in the store; mirrored in memory by a struct sub_cache that
 * the writer thread reads on every event (fan-out into the outbox) and the
 * deliverer reads on every send, so neither touches the database for it.
 */
#ifndef DROVER_SUBSCRIPTIONS_H
#define DROVER_SUBSCRIPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "error.h"
#include "ulid.h"

#define SUB_ID_LEN        ULID_LEN /* subscriptions have ULID ids */
#define SUB_URL_MAX       2048
#define SUB_FILTER_MAX    32 /* entries in events / queues */
#define SUB_SECRET_MAX    100
#define SUB_GRACE_DEFAULT (24 * 3600) /* seconds an old secret stays valid */

/* One subscription. Owns its strings and JSON; sub_release(). */
struct sub {
    char id[SUB_ID_LEN + 1];
    char *url;
    char *secret;            /* whsec_... */
    char *old_secret;        /* the one before a rotation, or NULL */
    int64_t old_secret_until_ms; /* when old_secret stops signing; 0 = none */
    json_t *events;          /* array of event types ("job.failed"), NULL = every type */
    json_t *queues;          /* array of queue names, NULL = every queue */
    bool enabled;
    char *disabled_reason;   /* why it was disabled (e.g. "410 Gone from ..."), or NULL */
    int64_t created_at_ms;
    int64_t updated_at_ms;
};

void sub_init(struct sub *s);
void sub_release(struct sub *s);
int sub_copy(struct sub *dst, const struct sub *src);

/* Does s want an event of type in queue (enabled, and both filters pass)? */
bool sub_wants(const struct sub *s, const char *type, const char *queue);

/* ---- the in-memory mirror ---- */

struct sub_cache;

int sub_cache_new(struct sub_cache **out);
void sub_cache_free(struct sub_cache *c);

/* Replace the entry with s's id by a copy of s (insert when new). */
int sub_cache_put(struct sub_cache *c, const struct sub *s);
void sub_cache_remove(struct sub_cache *c, const char *id);

/*
 * The ids of the subscriptions that want (type, queue), at most max, into
 * ids. Returns how many. Any thread; never blocks on I/O.
 */
int sub_cache_match(struct sub_cache *c, const char *type, const char *queue,
                    char (*ids)[SUB_ID_LEN + 1], int max);

/* A copy of subscription id into out (sub_release it); -DRV_ENOT_FOUND when gone. */
int sub_cache_get(struct sub_cache *c, const char *id, struct sub *out);

/* Are there any enabled subscriptions at all? (The writer skips fan-out when not.) */
bool sub_cache_any(struct sub_cache *c);

#endif
