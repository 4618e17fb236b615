/*
 * sign.c - whsec_ secrets, Standard Webhooks and X-Drover signatures (see
 * sign.h).
 *
 * HMAC-SHA256 through OpenSSL's EVP_MAC, fed in parts ("id", ".", "ts", ".",
 * body) so a body is never copied to be signed. Base64 is checked here
 * (alphabet, padding, length) before EVP_DecodeBlock(), which on its own
 * skips white space and accepts '=' in odd places.
 */
#include "sign.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "util.h"

#define SIGN_MAC_LEN       32 /* SHA-256 */
#define SIGN_MAC_B64_LEN   44 /* base64 of SIGN_MAC_LEN bytes, with its one '=' */
#define SIGN_MAC_HEX_LEN   64
#define SIGN_SECRET_BYTES  32 /* what sign_secret_generate() draws */
#define SIGN_PREFIX_LEN    (sizeof(SIGN_SECRET_PREFIX) - 1)
#define SIGN_DROVER_PREFIX "sha256="

/* One piece of the signed content. */
struct sign_part {
    const void *data;
    size_t len;
};

/* The headers a verification names in its messages. */
struct sign_names {
    const char *timestamp;
    const char *signature;
};

/* A new HMAC context with SHA-256 chosen and no key yet; NULL on failure. */
static EVP_MAC_CTX *hmac_sha256_new(void)
{
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL; /* holds its own reference */
    EVP_MAC_free(mac);
    if (ctx && EVP_MAC_CTX_set_params(ctx, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        ctx = NULL;
    }
    return ctx;
}

/*
 * This file's one mutable global, on purpose: an HMAC context made once and
 * never changed after, which each signature duplicates and keys. Fetching
 * the MAC and its digest by name on every call cost more than hashing a
 * webhook's body (1.6 -> 1.1 us per signature). Concurrent
 * EVP_MAC_CTX_dup() calls only read their source.
 */
static EVP_MAC_CTX *hmac_template;

static void hmac_template_make(void)
{
    hmac_template = hmac_sha256_new();
}

/* HMAC-SHA256 of the parts under key. Returns 0 or -DRV_EINTERNAL. */
static int sign_hmac(const void *key, size_t key_len, const struct sign_part *parts, size_t n_parts,
                     unsigned char out[SIGN_MAC_LEN])
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, hmac_template_make);
    int rc = -DRV_EINTERNAL;
    size_t out_len = 0;
    EVP_MAC_CTX *ctx = hmac_template ? EVP_MAC_CTX_dup(hmac_template) : NULL;
    if (!ctx) /* OpenSSL 3.0.0 cannot duplicate a context before it has a key */
        ctx = hmac_sha256_new();

    if (!ctx || EVP_MAC_init(ctx, key, key_len, NULL) != 1)
        goto out;
    for (size_t i = 0; i < n_parts; i++)
        if (parts[i].len > 0 && EVP_MAC_update(ctx, parts[i].data, parts[i].len) != 1)
            goto out;
    if (EVP_MAC_final(ctx, out, &out_len, SIGN_MAC_LEN) != 1 || out_len != SIGN_MAC_LEN)
        goto out;
    rc = 0;
out:
    EVP_MAC_CTX_free(ctx);
    return rc;
}

static bool sign_b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/*
 * The number of bytes n characters of standard, padded base64 at s decode to,
 * or -1 when they are not that: length a multiple of 4, only the alphabet,
 * '=' only as the last one or two characters.
 */
static long sign_b64_length(const char *s, size_t n)
{
    if (n % 4 != 0)
        return -1;
    size_t pad = 0;
    if (n > 0 && s[n - 1] == '=')
        pad = s[n - 2] == '=' ? 2 : 1;
    for (size_t i = 0; i < n - pad; i++)
        if (!sign_b64_char(s[i]))
            return -1;
    return (long)(n / 4 * 3 - pad);
}

/* Decode n characters of checked base64 (sign_b64_length() >= 0) into out, of room for them. */
static int sign_b64_decode(const char *s, size_t n, unsigned char *out, size_t *out_len)
{
    unsigned char buf[SIGN_KEY_MAX + 3];
    long len = sign_b64_length(s, n);

    if (len < 0 || n / 4 * 3 > sizeof(buf))
        return -1;
    /* EVP_DecodeBlock() counts the padding as zero bytes: keep only len. */
    if (n > 0 && EVP_DecodeBlock(buf, (const unsigned char *)s, (int)n) < 0)
        return -1;
    memcpy(out, buf, (size_t)len);
    *out_len = (size_t)len;
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

int sign_secret_parse(const char *secret, struct sign_key *key, struct errmsg *err)
{
    memset(key, 0, sizeof(*key));
    if (!secret || strncmp(secret, SIGN_SECRET_PREFIX, SIGN_PREFIX_LEN) != 0)
        return errmsg_set(err, -DRV_EBAD_FIELD, "the secret does not start with \"%s\"",
                          SIGN_SECRET_PREFIX);
    const char *b64 = secret + SIGN_PREFIX_LEN;
    size_t n = strnlen(b64, 4 * SIGN_KEY_MAX); /* far past any valid length */
    if (n == 0)
        return errmsg_set(err, -DRV_EBAD_FIELD, "the secret is empty after \"%s\"",
                          SIGN_SECRET_PREFIX);
    long len = sign_b64_length(b64, n);
    if (len < 0)
        return errmsg_set(err, -DRV_EBAD_FIELD,
                          "the secret is not standard base64 (with '=' padding) after \"%s\"",
                          SIGN_SECRET_PREFIX);
    if (len == 0)
        return errmsg_set(err, -DRV_EBAD_FIELD, "the secret decodes to no bytes");
    if (len > SIGN_KEY_MAX || b64[n] != '\0')
        return errmsg_set(err, -DRV_EBAD_FIELD, "the secret is longer than %d bytes", SIGN_KEY_MAX);
    if (sign_b64_decode(b64, n, key->bytes, &key->len) < 0)
        return errmsg_set(err, -DRV_EBAD_FIELD, "the secret is not valid base64");
    return 0;
}

int sign_secret_generate(char *out)
{
    unsigned char raw[SIGN_SECRET_BYTES];

    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -DRV_EINTERNAL;
    memcpy(out, SIGN_SECRET_PREFIX, SIGN_PREFIX_LEN);
    EVP_EncodeBlock((unsigned char *)out + SIGN_PREFIX_LEN, raw, sizeof(raw));
    OPENSSL_cleanse(raw, sizeof(raw));
    return 0;
}

int sign_secret_derive(const struct sign_key *key, const char *context, char *out)
{
    unsigned char mac_out[SIGN_MAC_LEN];
    struct sign_part part = {context, strlen(context)};
    int rc = sign_hmac(key->bytes, key->len, &part, 1, mac_out);
    if (rc < 0)
        return rc;
    memcpy(out, SIGN_SECRET_PREFIX, SIGN_PREFIX_LEN);
    EVP_EncodeBlock((unsigned char *)out + SIGN_PREFIX_LEN, mac_out, sizeof(mac_out));
    OPENSSL_cleanse(mac_out, sizeof(mac_out));
    return 0;
}

/* A timestamp as decimal text; buf has room for 21 bytes. */
static size_t sign_format_timestamp(int64_t timestamp, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%lld", (long long)timestamp);
    return n > 0 ? (size_t)n : 0;
}

int sign_webhook(const struct sign_key *key, const char *msg_id, int64_t timestamp,
                 const void *body, size_t body_len, char *out)
{
    unsigned char mac_out[SIGN_MAC_LEN];
    char ts[24];

    if (timestamp < 0)
        return -DRV_EBAD_REQUEST;
    size_t ts_len = sign_format_timestamp(timestamp, ts, sizeof(ts));
    struct sign_part parts[] = {
        {msg_id, strlen(msg_id)}, {".", 1}, {ts, ts_len}, {".", 1}, {body, body_len},
    };
    int rc = sign_hmac(key->bytes, key->len, parts, ARRAY_SIZE(parts), mac_out);
    if (rc < 0)
        return rc;
    memcpy(out, "v1,", 3);
    EVP_EncodeBlock((unsigned char *)out + 3, mac_out, sizeof(mac_out));
    return 0;
}

int sign_drover(const char *secret, int64_t timestamp, const void *body, size_t body_len, char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char mac_out[SIGN_MAC_LEN];
    char ts[24];

    if (timestamp < 0 || !secret || !*secret)
        return -DRV_EBAD_REQUEST;
    size_t ts_len = sign_format_timestamp(timestamp, ts, sizeof(ts));
    struct sign_part parts[] = {{ts, ts_len}, {".", 1}, {body, body_len}};
    int rc = sign_hmac(secret, strlen(secret), parts, ARRAY_SIZE(parts), mac_out);
    if (rc < 0)
        return rc;
    size_t o = sizeof(SIGN_DROVER_PREFIX) - 1;
    memcpy(out, SIGN_DROVER_PREFIX, o);
    for (size_t i = 0; i < sizeof(mac_out); i++) {
        out[o++] = hex[mac_out[i] >> 4];
        out[o++] = hex[mac_out[i] & 0xf];
    }
    out[o] = '\0';
    return 0;
}

/*
 * Check a timestamp header against now: digits only, within tolerance.
 * OUT len: its length, for the signed content.
 */
static int sign_check_timestamp(const struct sign_names *names, const char *timestamp, int64_t now,
                                int64_t tolerance_s, size_t *len, struct errmsg *err)
{
    if (!timestamp || !*timestamp)
        return errmsg_set(err, -DRV_EBAD_SIGNATURE, "missing %s header", names->timestamp);
    size_t n = strnlen(timestamp, SIGN_TIMESTAMP_MAX + 1);
    if (n > SIGN_TIMESTAMP_MAX || strspn(timestamp, "0123456789") != n)
        return errmsg_set(err, -DRV_EBAD_SIGNATURE,
                          "malformed %s: want Unix seconds, at most %d digits", names->timestamp,
                          SIGN_TIMESTAMP_MAX);
    int64_t ts = 0;
    for (size_t i = 0; i < n; i++)
        ts = ts * 10 + (timestamp[i] - '0');
    if (now - ts > tolerance_s)
        return errmsg_set(err, -DRV_EBAD_SIGNATURE,
                          "%s too old: %lld s before now (tolerance %lld s)", names->timestamp,
                          (long long)(now - ts), (long long)tolerance_s);
    if (ts - now > tolerance_s)
        return errmsg_set(err, -DRV_EBAD_SIGNATURE,
                          "%s in the future: %lld s after now (tolerance %lld s)", names->timestamp,
                          (long long)(ts - now), (long long)tolerance_s);
    *len = n;
    return 0;
}

/* The arguments every verification shares, checked the same way. */
static int sign_check_common(size_t n_keys, const struct sign_names *names, const char *signature,
                             int64_t tolerance_s, struct errmsg *err)
{
    if (n_keys == 0 || n_keys > SIGN_MAX_KEYS || tolerance_s < 0)
        return errmsg_set(err, -DRV_EINTERNAL, "signature check misconfigured");
    if (!signature || !*signature)
        return errmsg_set(err, -DRV_EBAD_SIGNATURE, "missing %s header", names->signature);
    if (strnlen(signature, SIGN_MAX_HEADER + 1) > SIGN_MAX_HEADER)
        return errmsg_set(err, -DRV_EBAD_SIGNATURE, "%s is longer than %d bytes", names->signature,
                          SIGN_MAX_HEADER);
    return 0;
}

/* One offered signature, decoded; valid false when it could not be (it then never matches). */
struct sign_offer {
    unsigned char mac[SIGN_MAC_LEN];
    bool valid;
};

/*
 * Split a webhook-signature value into its v1 entries. Entries are separated
 * by spaces (runs of them are tolerated) and are "VERSION,SIGNATURE"; other
 * versions are skipped, a v1 whose signature is not 32 bytes of base64 is
 * kept but invalid.
 */
static int sign_parse_webhook_signatures(const char *value, struct sign_offer *offers,
                                         size_t *n_offers, struct errmsg *err)
{
    size_t n = 0, entries = 0;

    for (const char *p = value; *p;) {
        if (*p == ' ') {
            p++;
            continue;
        }
        size_t len = strcspn(p, " ");
        const char *comma = memchr(p, ',', len);
        if (!comma || comma == p)
            return errmsg_set(err, -DRV_EBAD_SIGNATURE,
                              "malformed webhook-signature: want \"v1,<base64>\" entries "
                              "separated by spaces");
        if (++entries > SIGN_MAX_SIGNATURES)
            return errmsg_set(err, -DRV_EBAD_SIGNATURE,
                              "webhook-signature has more than %d entries", SIGN_MAX_SIGNATURES);
        if (comma - p == 2 && memcmp(p, "v1", 2) == 0) {
            const char *b64 = comma + 1;
            size_t b64_len = len - 3, got = 0;
            struct sign_offer *o = &offers[n++];
            memset(o, 0, sizeof(*o));
            o->valid = b64_len == SIGN_MAC_B64_LEN &&
                       sign_b64_decode(b64, b64_len, o->mac, &got) == 0 && got == SIGN_MAC_LEN;
        }
        p += len;
    }
    if (n == 0)
        return errmsg_set(err, -DRV_EBAD_SIGNATURE, "webhook-signature has no v1 signature");
    *n_offers = n;
    return 0;
}

/*
 * True when some offer equals some expected MAC. Every pair is compared, in
 * constant time each, and the results are OR-ed without branching.
 */
static bool sign_any_match(const unsigned char (*expected)[SIGN_MAC_LEN], size_t n_expected,
                           const struct sign_offer *offers, size_t n_offers)
{
    unsigned match = 0;

    for (size_t i = 0; i < n_offers; i++)
        for (size_t k = 0; k < n_expected; k++)
            match |= (unsigned)(CRYPTO_memcmp(expected[k], offers[i].mac, SIGN_MAC_LEN) == 0) &
                     (unsigned)offers[i].valid;
    return match != 0;
}

int sign_webhook_verify(const struct sign_key *keys, size_t n_keys, const char *msg_id,
                        const char *timestamp, const char *signature, const void *body,
                        size_t body_len, int64_t now, int64_t tolerance_s, struct errmsg *err)
{
    static const struct sign_names names = {"webhook-timestamp", "webhook-signature"};
    struct sign_offer offers[SIGN_MAX_SIGNATURES];
    unsigned char expected[SIGN_MAX_KEYS][SIGN_MAC_LEN];
    size_t n_offers = 0, ts_len = 0;
    int rc;

    if ((rc = sign_check_common(n_keys, &names, signature, tolerance_s, err)) < 0)
        return rc;
    if (!msg_id || !*msg_id)
        return errmsg_set(err, -DRV_EBAD_SIGNATURE, "missing webhook-id header");
    size_t id_len = strnlen(msg_id, SIGN_MAX_ID + 1);
    if (id_len > SIGN_MAX_ID)
        return errmsg_set(err, -DRV_EBAD_SIGNATURE, "webhook-id is longer than %d bytes",
                          SIGN_MAX_ID);
    if ((rc = sign_check_timestamp(&names, timestamp, now, tolerance_s, &ts_len, err)) < 0)
        return rc;
    if ((rc = sign_parse_webhook_signatures(signature, offers, &n_offers, err)) < 0)
        return rc;

    struct sign_part parts[] = {
        {msg_id, id_len}, {".", 1}, {timestamp, ts_len}, {".", 1}, {body, body_len},
    };
    for (size_t k = 0; k < n_keys; k++) {
        if (sign_hmac(keys[k].bytes, keys[k].len, parts, ARRAY_SIZE(parts), expected[k]) < 0) {
            rc = errmsg_set(err, -DRV_EINTERNAL, "cannot compute HMAC-SHA256");
            goto out;
        }
    }
    if (!sign_any_match((const unsigned char(*)[SIGN_MAC_LEN])expected, n_keys, offers, n_offers))
        rc = errmsg_set(err, -DRV_EBAD_SIGNATURE, "no signature matched");
out:
    OPENSSL_cleanse(expected, sizeof(expected));
    return rc;
}

static int sign_hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "sha256=<64 hex digits>" into offer; -DRV_EBAD_SIGNATURE when it is not that. */
static int sign_parse_drover_signature(const char *value, struct sign_offer *offer,
                                       struct errmsg *err)
{
    size_t prefix = sizeof(SIGN_DROVER_PREFIX) - 1;

    if (strncmp(value, SIGN_DROVER_PREFIX, prefix) != 0 ||
        strlen(value + prefix) != SIGN_MAC_HEX_LEN)
        goto malformed;
    for (size_t i = 0; i < SIGN_MAC_LEN; i++) {
        int hi = sign_hex_value(value[prefix + 2 * i]),
            lo = sign_hex_value(value[prefix + 2 * i + 1]);
        if (hi < 0 || lo < 0)
            goto malformed;
        offer->mac[i] = (unsigned char)(hi << 4 | lo);
    }
    offer->valid = true;
    return 0;
malformed:
    return errmsg_set(err, -DRV_EBAD_SIGNATURE,
                      "malformed X-Drover-Signature: want \"sha256=\" and 64 hex digits");
}

int sign_drover_verify(const char *const *secrets, size_t n_secrets, const char *timestamp,
                       const char *signature, const void *body, size_t body_len, int64_t now,
                       int64_t tolerance_s, struct errmsg *err)
{
    static const struct sign_names names = {"X-Drover-Timestamp", "X-Drover-Signature"};
    struct sign_offer offer = {0};
    unsigned char expected[SIGN_MAX_KEYS][SIGN_MAC_LEN];
    size_t ts_len = 0;
    int rc;

    if ((rc = sign_check_common(n_secrets, &names, signature, tolerance_s, err)) < 0)
        return rc;
    if ((rc = sign_check_timestamp(&names, timestamp, now, tolerance_s, &ts_len, err)) < 0)
        return rc;
    if ((rc = sign_parse_drover_signature(signature, &offer, err)) < 0)
        return rc;

    struct sign_part parts[] = {{timestamp, ts_len}, {".", 1}, {body, body_len}};
    for (size_t k = 0; k < n_secrets; k++) {
        size_t key_len = secrets[k] ? strlen(secrets[k]) : 0;
        if (key_len == 0 ||
            sign_hmac(secrets[k], key_len, parts, ARRAY_SIZE(parts), expected[k]) < 0) {
            rc = errmsg_set(err, -DRV_EINTERNAL, "cannot compute HMAC-SHA256");
            goto out;
        }
    }
    if (!sign_any_match((const unsigned char(*)[SIGN_MAC_LEN])expected, n_secrets, &offer, 1))
        rc = errmsg_set(err, -DRV_EBAD_SIGNATURE, "no signature matched");
out:
    OPENSSL_cleanse(expected, sizeof(expected));
    return rc;
}
