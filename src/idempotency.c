/*
 * idempotency.c - kept replies for the Idempotency-Key header.
 */
#include "idempotency.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "log.h"
#include "timeutil.h"

#define SWEEP_KEY         "idempotency"
#define SWEEP_EVERY_MS    60000
#define SWEEP_BEHIND_MS   1000 /* a full batch: more are expired, go on soon */
#define IDEM_FP_DELIMITER "\n"

bool idem_key_valid(const char *key)
{
    size_t n = 0;
    for (; key[n]; n++) {
        if (key[n] <= ' ' || key[n] > '~')
            return false;
    }
    return n > 0 && n <= IDEM_KEY_MAX;
}

int idem_fingerprint(const char *method, const char *path, const char *body, size_t len,
                     unsigned char out[IDEM_FINGERPRINT_LEN])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int n = 0;
    /* The delimiter cannot occur in a method or a path: no two requests share a digest input. */
    int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(md, method, strlen(method)) &&
             EVP_DigestUpdate(md, IDEM_FP_DELIMITER, 1) &&
             EVP_DigestUpdate(md, path, strlen(path)) &&
             EVP_DigestUpdate(md, IDEM_FP_DELIMITER, 1) && EVP_DigestUpdate(md, body, len) &&
             EVP_DigestFinal_ex(md, out, &n) && n == IDEM_FINGERPRINT_LEN;
    EVP_MD_CTX_free(md);
    return ok ? 0 : -DRV_EINTERNAL;
}

void idem_forget(struct write_idem *idem)
{
    free(idem->reply.body);
    idem->reply.body = NULL;
    idem->replayed = false;
}

void idem_free(struct write_idem *idem)
{
    if (idem) {
        idem_forget(idem);
        free(idem);
    }
}

/* A record of the key that has not expired: 1 (into *rec), 0 none, or a store failure. */
static int find_live(struct write_ctx *ctx, const char *key, struct idem_record *rec)
{
    int rc = store_idem_get(ctx->store, key, rec);
    if (rc == -DRV_ENOT_FOUND)
        return 0;
    if (rc < 0)
        return rc;
    if (rec->created_ms >= ctx->now_ms - ctx->idem_ttl_ms)
        return 1;
    idem_record_release(rec);
    return 0;
}

/* 1 when op answers with the kept reply, 0 when it runs, or a refusal / store failure. */
static int replay(struct write_ctx *ctx, struct write_op *op)
{
    struct write_idem *idem = op->idem;
    struct idem_record rec;
    int rc = find_live(ctx, idem->key, &rec);
    if (rc <= 0)
        return rc;
    if (memcmp(rec.fingerprint, idem->fingerprint, IDEM_FINGERPRINT_LEN) != 0) {
        idem_record_release(&rec);
        return errmsg_set(&idem->err, -DRV_EIDEMPOTENCY_KEY_REUSED,
                          "Idempotency-Key '%.64s' was first used with another request "
                          "(method, path or body differ)",
                          idem->key);
    }
    idem->reply.status = rec.status;
    memcpy(idem->reply.location, rec.location, sizeof(rec.location));
    idem->reply.body = rec.body; /* taken */
    idem->replayed = true;
    return 1;
}

int idem_keep(struct write_ctx *ctx, struct write_op *op)
{
    struct write_idem *idem = op->idem;
    idem_forget(idem);
    int rc = idem->render(op, &idem->reply);
    if (rc != 0) {
        if (rc > 0) /* nothing worth keeping: answer it all the same */
            return 0;
        idem_forget(idem);
        return rc;
    }
    struct idem_record rec = {
        .status = idem->reply.status, .body = idem->reply.body, .created_ms = ctx->now_ms};
    memcpy(rec.key, idem->key, sizeof(rec.key));
    memcpy(rec.fingerprint, idem->fingerprint, IDEM_FINGERPRINT_LEN);
    memcpy(rec.location, idem->reply.location, sizeof(rec.location));
    rc = store_idem_put(ctx->store, &rec, ctx->now_ms - ctx->idem_ttl_ms);
    return rc == -DRV_ECONFLICT ? 0 : rc;
}

int idem_apply(struct write_ctx *ctx, struct write_op *op)
{
    int rc = replay(ctx, op);
    if (rc != 0)
        return rc > 0 ? 0 : rc;
    rc = op->apply(ctx, op);
    if (rc < 0)
        return rc; /* refused: nothing written, nothing kept */
    int kept = idem_keep(ctx, op);
    /* The op has written: failing to keep its reply must fail the batch. */
    return kept == 0 ? 0 : kept == -DRV_ENOMEM ? kept : -DRV_ESTORE;
}

/* ---- the sweep ---- */

struct sweep_op {
    struct write_op op;
    struct timers *timers;
    int64_t ttl_ms;
    int deleted;
};

static int sweep_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct sweep_op *s = (struct sweep_op *)op;
    int callbacks = 0;
    int rc = store_idem_sweep(ctx->store, ctx->now_ms - s->ttl_ms, IDEM_SWEEP_BATCH, &s->deleted);
    /* Runner callbacks' webhook-ids go the same way, after an hour (runner_ops.c). */
    if (rc == 0)
        rc = store_callback_id_sweep(ctx->store, ctx->now_ms - CALLBACK_ID_KEEP_MS,
                                     IDEM_SWEEP_BATCH, &callbacks);
    if (callbacks > s->deleted)
        s->deleted = callbacks;
    return rc;
}

static void sweep_done(struct write_op *op)
{
    struct sweep_op *s = (struct sweep_op *)op;
    if (op->result == 0 && s->deleted > 0)
        log_printf(LOG_DEBUG, "swept %d expired idempotency keys", s->deleted);
    int64_t next = s->deleted == IDEM_SWEEP_BATCH ? SWEEP_BEHIND_MS : SWEEP_EVERY_MS;
    timers_add(s->timers, time_now_ms() + next, TIMER_SWEEP, SWEEP_KEY);
    free(s);
}

void idem_sweep_fire(struct writer *w, struct timers *t, int64_t ttl_ms)
{
    struct sweep_op *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        timers_add(t, time_now_ms() + SWEEP_EVERY_MS, TIMER_SWEEP, SWEEP_KEY);
        return;
    }
    s->op.apply = sweep_apply;
    s->op.done = sweep_done;
    s->timers = t;
    s->ttl_ms = ttl_ms;
    if (writer_submit(w, &s->op) < 0)
        free(s); /* closing: the next start sweeps */
}
