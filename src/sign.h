/*
 * sign.h - webhook signatures: `whsec_` secrets, Standard Webhooks
 * signatures (what drover sends and what runner callbacks carry) and the
 * simpler X-Drover-Signature for shell scripts. Pure functions: no I/O, no
 * clock (callers pass `now`), no allocation.
 *
 * Standard Webhooks (https://www.standardwebhooks.com/):
 *   webhook-id:        the message id, the same on every retry of a message
 *   webhook-timestamp: Unix seconds, as decimal digits
 *   webhook-signature: "v1,<base64 HMAC-SHA256>", several separated by spaces
 * The HMAC key is the secret's base64 part decoded; the signed content is
 * "{webhook-id}.{webhook-timestamp}.{raw body}".
 *
 * X-Drover-Signature (DECISION, for a shell with only openssl at hand):
 *   X-Drover-Timestamp: Unix seconds, as decimal digits
 *   X-Drover-Signature: sha256=<hex HMAC-SHA256>
 * The HMAC key is the secret text exactly as configured, the whole "whsec_..."
 * string (not its decoded bytes), so a script can pass it to openssl as is;
 * the signed content is "{X-Drover-Timestamp}.{raw body}". The timestamp is
 * inside the HMAC because a signature of the body alone would let a captured
 * request be replayed forever with a fresh timestamp. In a shell:
 *
 *     ts=$(date +%s)
 *     sig=$(printf '%s.%s' "$ts" "$body" | openssl dgst -sha256 -hmac "$SECRET" -r | cut -d' ' -f1)
 *     curl -H "X-Drover-Timestamp: $ts" -H "X-Drover-Signature: sha256=$sig" \
 *          -H 'Content-Type: application/json' --data-raw "$body" "$URL"
 *
 * Verification, for both schemes: the raw body is checked before anyone
 * parses it; the timestamp must be within tolerance_s of now in either
 * direction (|now - timestamp| <= tolerance_s passes); every candidate key is
 * compared against every offered signature with CRYPTO_memcmp() and no early
 * exit, so the timing tells neither which key matched nor how much of a
 * signature was right. Every failure is -DRV_EBAD_SIGNATURE (HTTP 401) with
 * the reason in err->text (never any secret or expected signature).
 */
#ifndef DROVER_SIGN_H
#define DROVER_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define SIGN_SECRET_PREFIX  "whsec_"
#define SIGN_KEY_MAX        64   /* bytes of a decoded whsec_ secret, at most */
#define SIGN_TOLERANCE_S    300  /* the default: 5 minutes either way */
#define SIGN_MAX_KEYS       8    /* candidate keys for one verification (rotation) */
#define SIGN_MAX_SIGNATURES 16   /* entries in one webhook-signature header */
#define SIGN_MAX_HEADER     2048 /* bytes of any one header value checked here */
#define SIGN_MAX_ID         256  /* bytes of a webhook-id */
#define SIGN_TIMESTAMP_MAX  12   /* digits of a timestamp (up to year 33658) */

/* "whsec_" + base64 of 32 random bytes + NUL: what sign_secret_generate() writes. */
#define SIGN_SECRET_GEN_LEN (sizeof(SIGN_SECRET_PREFIX) - 1 + 44 + 1)
/* "v1," + base64 of a SHA-256 MAC + NUL: one signature from sign_webhook(). */
#define SIGN_WEBHOOK_SIG_LEN (3 + 44 + 1)
/* "sha256=" + 64 hex digits + NUL: a value from sign_drover(). */
#define SIGN_DROVER_SIG_LEN (7 + 64 + 1)

/* A decoded whsec_ secret: the HMAC key of Standard Webhooks. Wipe it when done. */
struct sign_key {
    unsigned char bytes[SIGN_KEY_MAX];
    size_t len; /* 1..SIGN_KEY_MAX */
};

/*
 * Decode "whsec_<base64>" into key. The base64 is the standard alphabet with
 * its '=' padding (length a multiple of 4), nothing else, not even spaces.
 * Fails with -DRV_EBAD_FIELD and err naming the problem (never quoting the
 * secret): no prefix, malformed base64, empty, longer than SIGN_KEY_MAX bytes.
 */
int sign_secret_parse(const char *secret, struct sign_key *key, struct errmsg *err);

/*
 * A new secret: "whsec_" + base64 of 32 bytes from RAND_bytes().
 * OUT out: SIGN_SECRET_GEN_LEN bytes. Returns 0, or -DRV_EINTERNAL when the
 * random generator fails.
 */
int sign_secret_generate(char *out);

/*
 * A whsec_ secret derived from key for one purpose (context), e.g. one
 * attempt of one job: "whsec_" + base64(HMAC-SHA256(key, context)). Whoever
 * holds it can sign for that purpose alone; whoever holds key can recompute
 * it. out has room for SIGN_SECRET_GEN_LEN bytes.
 */
int sign_secret_derive(const struct sign_key *key, const char *context, char *out);

/*
 * The webhook-signature value for one message: "v1,<base64>".
 * OUT out: SIGN_WEBHOOK_SIG_LEN bytes. timestamp is what the
 * webhook-timestamp header carries (Unix seconds, >= 0). Returns 0, or
 * -DRV_EINTERNAL when OpenSSL fails, -DRV_EBAD_REQUEST for a negative timestamp.
 */
int sign_webhook(const struct sign_key *key, const char *msg_id, int64_t timestamp,
                 const void *body, size_t body_len, char *out);

/*
 * Check a Standard Webhooks message. msg_id, timestamp and signature are the
 * three header values as received (NULL when absent); body the raw body.
 * Passes when some "v1," entry of signature is the HMAC under one of keys
 * (n_keys from 1 to SIGN_MAX_KEYS); entries of other versions are ignored.
 * The timestamp text is signed as received, digits only.
 *
 * Returns 0, or -DRV_EBAD_SIGNATURE with err->text one of:
 * "missing webhook-id header" (likewise -timestamp, -signature), "malformed
 * webhook-timestamp", "webhook-timestamp too old", "webhook-timestamp in the
 * future", "malformed webhook-signature", "no signature matched" (and a few
 * more about lengths); -DRV_EINTERNAL when n_keys is out of range or
 * OpenSSL fails.
 */
int sign_webhook_verify(const struct sign_key *keys, size_t n_keys, const char *msg_id,
                        const char *timestamp, const char *signature, const void *body,
                        size_t body_len, int64_t now, int64_t tolerance_s, struct errmsg *err);

/*
 * The X-Drover-Signature value: "sha256=<lowercase hex>" of the HMAC keyed by
 * secret's text over "{timestamp}.{body}". OUT out: SIGN_DROVER_SIG_LEN bytes.
 * Returns 0, -DRV_EBAD_REQUEST (negative timestamp, empty secret) or
 * -DRV_EINTERNAL.
 */
int sign_drover(const char *secret, int64_t timestamp, const void *body, size_t body_len,
                char *out);

/*
 * Check X-Drover-Timestamp / X-Drover-Signature (values as received, NULL
 * when absent) against each of secrets (n_secrets from 1 to SIGN_MAX_KEYS,
 * rotation as above). The hex may be upper or lower case. Same errors as
 * sign_webhook_verify(), naming the X-Drover-* headers.
 */
int sign_drover_verify(const char *const *secrets, size_t n_secrets, const char *timestamp,
                       const char *signature, const void *body, size_t body_len, int64_t now,
                       int64_t tolerance_s, struct errmsg *err);

#endif
