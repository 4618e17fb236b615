/*
 * error.h - drover's one error convention.
 *
 * Functions return int: 0 on success, a negative DRV_E* code on failure.
 * One X-macro table yields, for each code, the machine name sent to clients
 * as {"error": NAME} and the HTTP status it maps to, so a handler never
 * chooses a status by hand.
 */
#ifndef DROVER_ERROR_H
#define DROVER_ERROR_H

#include <stddef.h>

/*    symbol              name                        status */
#define DRV_ERROR_TABLE(X)                                                                         \
    X(BAD_JSON, "malformed_json", 400)                                                             \
    X(BAD_FIELD, "invalid_field", 400)                                                             \
    X(BAD_REQUEST, "bad_request", 400)                                                             \
    X(UNAUTHORIZED, "unauthorized", 401)                                                           \
    X(BAD_SIGNATURE, "bad_signature", 401)                                                         \
    X(FORBIDDEN, "forbidden", 403)                                                                 \
    X(NOT_FOUND, "not_found", 404)                                                                 \
    X(METHOD, "method_not_allowed", 405)                                                           \
    X(ILLEGAL_TRANSITION, "illegal_transition", 409)                                               \
    X(LEASE_LOST, "lease_lost", 409)                                                               \
    X(RETRY_CAP, "retry_cap", 409)                                                                 \
    X(CONCURRENCY_LIMITED, "concurrency_limited", 409)                                             \
    X(LOCKED, "locked", 409)                                                                       \
    X(STALE_ATTEMPT, "stale_attempt", 409)                                                         \
    X(CONFLICT, "conflict", 409)                                                                   \
    X(TOO_LARGE, "payload_too_large", 413)                                                         \
    X(MEDIA_TYPE, "unsupported_media_type", 415)                                                   \
    X(IDEMPOTENCY_KEY_REUSED, "idempotency_key_reused", 422)                                       \
    X(HEADERS_TOO_LARGE, "header_fields_too_large", 431)                                           \
    X(NOMEM, "internal", 500)                                                                      \
    X(INTERNAL, "internal", 500)                                                                   \
    X(STORE, "store_error", 500)                                                                   \
    X(IO, "io_error", 500)                                                                         \
    X(CONFIG, "invalid_config", 500)                                                               \
    X(SHUTTING_DOWN, "shutting_down", 503)                                                         \
    X(UNAVAILABLE, "unavailable", 503)

enum drv_error {
    DRV_OK = 0,
#define X(sym, name, status) DRV_E##sym,
    DRV_ERROR_TABLE(X)
#undef X
        DRV__ERROR_COUNT
};

/* Codes are returned negated: return -DRV_ENOT_FOUND. */

/* The client-facing name of a (negative) code: "not_found". Unknown -> "internal". */
const char *err_name(int rc);

/* The HTTP status a (negative) code maps to. Unknown -> 500. */
int err_http_status(int rc);

/*
 * A human message that goes with an error: set by whoever detects the
 * problem, naming the field or subject, lowercase, no trailing period.
 */
struct errmsg {
    char text[256];
    char field[64]; /* "" when the error is not about one field */
};

/* Format into e->text; returns rc so callers can write `return errmsg_set(e, -X, ...)`. */
int errmsg_set(struct errmsg *e, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like errmsg_set, and records which field was wrong. */
int errmsg_field(struct errmsg *e, int rc, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
