/*
 * idempotency.h - the Idempotency-Key request header (docs/api.md,
 * "Idempotent requests"; docs/adr/0011-idempotency-in-the-writer.md).
 *
 * A POST that carries Idempotency-Key: K goes to the writer with a
 * struct write_idem: K and a fingerprint of the request (SHA-256 of its
 * method, path and body). In the writer, inside the batch's transaction:
 *
 *   - K is kept already, with the same fingerprint: the op is not applied;
 *     it answers with the kept reply, byte for byte;
 *   - K is kept already, for another request: 422 idempotency_key_reused;
 *   - otherwise the op is applied and, when it succeeds, its reply is
 *     rendered and kept in the same transaction as the change, so a crash
 *     can never keep one without the other.
 *
 * Refusals (4xx) are not kept: a refused op changed nothing, so a repeat is
 * judged afresh. Kept replies expire after the configured TTL (default
 * 24 h): an expired key is a new key, and a sweep deletes old records in
 * small batches.
 */
#ifndef DROVER_IDEMPOTENCY_H
#define DROVER_IDEMPOTENCY_H

#include <stdbool.h>
#include <stddef.h>

#include "store/writer.h"
#include "timers.h"

#define IDEM_TTL_DEFAULT_S (24 * 3600)
#define IDEM_SWEEP_BATCH   1000
/* How long a runner callback's webhook-id is remembered: well past the
 * signature's 5-minute tolerance, after which a replay is refused anyway. */
#define CALLBACK_ID_KEEP_MS (3600 * 1000LL)

/* 1 to IDEM_KEY_MAX visible ASCII characters (no spaces, no controls). */
bool idem_key_valid(const char *key);

/* SHA-256 over method, path and body, each delimited. Returns 0 or -DRV_EINTERNAL. */
int idem_fingerprint(const char *method, const char *path, const char *body, size_t len,
                     unsigned char out[IDEM_FINGERPRINT_LEN]);

/*
 * The writer's apply for an op with op->idem: replay, refuse, or apply and
 * keep the reply (above). Same contract as write_apply_fn.
 */
int idem_apply(struct write_ctx *ctx, struct write_op *op);

/*
 * Keep the reply of an op that succeeded outside its own apply (a waiting
 * claim handed a job by another op). A live record of the same key — a
 * repeat that was handed jobs first — wins: then nothing is kept and the
 * op answers with its own reply.
 */
int idem_keep(struct write_ctx *ctx, struct write_op *op);

/* Drop a rendered reply that will not be sent (its batch rolled back). */
void idem_forget(struct write_idem *idem);

/* Free idem and its reply. */
void idem_free(struct write_idem *idem);

/* The sweep's timer fired: queue a sweep of expired records, which re-arms the timer. */
void idem_sweep_fire(struct writer *w, struct timers *t, int64_t ttl_ms);

#endif
