/*
 * policy.h - a queue's policy (DESIGN.md §1 Queue): parsed, validated,
 * defaulted, and shown.
 *
 * A queue nobody configured has the default policy. PUT replaces the whole
 * policy; fields left out take their defaults. Issue by issue the server
 * enforces more of it; all of it is stored and validated now.
 */
#ifndef DROVER_POLICY_H
#define DROVER_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "error.h"

#define POLICY_STEPS_MAX   64
#define POLICY_STEP_MAX    64 /* bytes in one step name */
#define POLICY_HEADERS_MAX 32

/* artifact_inline_max: 0 .. 16 MiB (its default: 256 KiB). */
#define POLICY_ARTIFACT_INLINE_DEFAULT 262144
#define POLICY_ARTIFACT_INLINE_LIMIT   16777216

enum policy_mode { POLICY_PULL, POLICY_HTTP };
enum policy_on_limit { POLICY_LIMIT_QUEUE, POLICY_LIMIT_REJECT };

struct policy_backoff {
    int initial_s;
    double factor;
    int max_s;
    double jitter; /* 0..1, fraction of the delay drawn at random */
};

/* A queue policy. Owns its strings and JSON; release with policy_release(). */
struct policy {
    enum policy_mode mode;
    json_t *steps; /* array of unique step names (possibly empty) */
    int timeout_s;
    int heartbeat_timeout_s;
    int queue_timeout_s;
    int max_attempts;
    struct policy_backoff backoff;
    int retry_cap;
    int concurrency_limit;
    enum policy_on_limit on_limit;
    int dedup_window_s;
    char *on_failure; /* cleanup queue name or NULL */
    int64_t retention_s;
    /* bytes of artifacts job.succeeded carries inline (artifacts_event_json()) */
    int64_t artifact_inline_max;
    json_t *dispatch; /* {url, method, headers, body} or NULL; a template (template.h) */
    char *callback_secret;
};

/* The default policy. */
void policy_init(struct policy *p);
void policy_release(struct policy *p);

/*
 * Parse a whole policy from JSON: every field optional, unknown fields and
 * bad values refused with -DRV_EBAD_FIELD naming the field. On failure p
 * still needs policy_release().
 */
int policy_from_json(const json_t *obj, struct policy *p, struct errmsg *err);

/* Make dst (uninitialised) a deep copy of src. Returns 0 or -DRV_ENOMEM. */
int policy_copy(struct policy *dst, const struct policy *src);

/*
 * How long a lease lasts before it must be renewed: heartbeat_timeout_s, or
 * timeout_s when that is 0, or POLICY_LEASE_DEFAULT_S when both are.
 */
#define POLICY_LEASE_DEFAULT_S 600
int64_t policy_lease_ms(const struct policy *p);

/*
 * The delay before attempt n+1 after attempt n failed, in ms:
 * min(max_s, initial_s * factor^(n-1)), less a random fraction of at most
 * `jitter` of it. u is a uniform random number in [0, 1).
 */
int64_t policy_backoff_ms(const struct policy *p, int attempt, double u);

/* The full policy as JSON; secrets shown only when show_secrets. New reference. */
json_t *policy_to_json(const struct policy *p, bool show_secrets);

#endif
