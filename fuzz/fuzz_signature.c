/*
 * fuzz_signature.c - signed callbacks as the server receives them: the header
 * values of Standard Webhooks and X-Drover-Signature, checked by
 * sign_webhook_verify() and sign_drover_verify() (src/sign.h), and whsec_
 * secrets by sign_secret_parse().
 *
 * Input: four parts split at the first three newlines,
 *     ID \n TIMESTAMP \n SIGNATURE \n BODY...
 * (a missing part is an absent header; a NUL ends a header's C string, as an
 * HTTP library would hand it over). The clock is fixed at FUZZ_NOW, the
 * timestamp of the published vectors, so the seeds get past the tolerance
 * check. The first part is also parsed as a whsec_ secret.
 *
 * Invariants: the answer is 0 or -DRV_EBAD_SIGNATURE, the latter with a
 * message; a secret that parses has 1 to SIGN_KEY_MAX bytes; a pass needs a
 * timestamp of digits within the tolerance; and the same ID, TIMESTAMP and
 * BODY with a signature made by sign_webhook() (sign_drover()) pass exactly
 * when the headers are well-formed and in time.
 */
#include "fuzz.h"
#include "sign.h"

#include <stdbool.h>

#define FUZZ_NOW 1614265330LL

/* The published vectors' secrets: the second is the current one, the first is being rotated. */
static const char *const fuzz_secrets[] = {
    "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
};

/* The next part of the input, up to a newline; NULL when the input has ended. */
static char *fuzz_part(char **cursor, char *end)
{
    char *start = *cursor;
    if (start > end)
        return NULL;
    char *nl = memchr(start, '\n', (size_t)(end - start));
    if (!nl) {
        *cursor = end + 1;
        return start; /* the copy is NUL-terminated at end */
    }
    *nl = '\0';
    *cursor = nl + 1;
    return start;
}

/*
 * The timestamp as sign_webhook() would write it, when the text is that (digits,
 * no leading zero, short enough); -1 otherwise.
 */
static long long fuzz_canonical_ts(const char *ts)
{
    size_t n = ts ? strlen(ts) : 0;
    if (n == 0 || n > SIGN_TIMESTAMP_MAX || strspn(ts, "0123456789") != n ||
        (ts[0] == '0' && n > 1))
        return -1;
    return strtoll(ts, NULL, 10);
}

static bool fuzz_in_time(long long ts)
{
    return ts >= 0 && ts - FUZZ_NOW <= SIGN_TOLERANCE_S && FUZZ_NOW - ts <= SIGN_TOLERANCE_S;
}

static void fuzz_check_answer(int rc, const struct errmsg *err, const char *what)
{
    FUZZ_CHECK(rc == 0 || rc == -DRV_EBAD_SIGNATURE, "%s: rc %d", what, rc);
    FUZZ_CHECK(rc == 0 || err->text[0] != '\0', "%s: refused without a message", what);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = fuzz_cstring(data, size);
    char *cursor = copy, *end = copy + size;
    const char *id = fuzz_part(&cursor, end);
    const char *ts = fuzz_part(&cursor, end);
    const char *sig = fuzz_part(&cursor, end);
    const char *body = cursor <= end ? cursor : "";
    size_t body_len = cursor <= end ? (size_t)(end - cursor) : 0;
    struct sign_key keys[2];
    struct errmsg err;
    int rc;

    for (size_t i = 0; i < 2; i++)
        FUZZ_CHECK(sign_secret_parse(fuzz_secrets[i], &keys[i], &err) == 0, "%s", err.text);

    /* The first part as a secret. */
    struct sign_key parsed;
    err.text[0] = '\0';
    rc = sign_secret_parse(id, &parsed, &err);
    FUZZ_CHECK(rc == 0 || (rc == -DRV_EBAD_FIELD && err.text[0]), "secret: rc %d", rc);
    FUZZ_CHECK(rc != 0 || (parsed.len >= 1 && parsed.len <= SIGN_KEY_MAX), "secret of %zu bytes",
               parsed.len);

    /* The headers as received. */
    err.text[0] = '\0';
    rc =
        sign_webhook_verify(keys, 2, id, ts, sig, body, body_len, FUZZ_NOW, SIGN_TOLERANCE_S, &err);
    fuzz_check_answer(rc, &err, "webhook");
    FUZZ_CHECK(rc != 0 || (ts && strspn(ts, "0123456789") == strlen(ts) &&
                           strlen(ts) <= SIGN_TIMESTAMP_MAX && fuzz_in_time(strtoll(ts, NULL, 10))),
               "webhook: passed with timestamp '%s'", ts ? ts : "(none)");

    err.text[0] = '\0';
    rc = sign_drover_verify(fuzz_secrets, 2, ts, sig, body, body_len, FUZZ_NOW, SIGN_TOLERANCE_S,
                            &err);
    fuzz_check_answer(rc, &err, "x-drover");

    /* The same message signed for real: passes exactly when id and timestamp are fine. */
    long long t = fuzz_canonical_ts(ts);
    if (t >= 0) {
        bool id_ok = id && *id && strlen(id) <= SIGN_MAX_ID;
        char good[SIGN_WEBHOOK_SIG_LEN], good_drover[SIGN_DROVER_SIG_LEN];
        if (id) {
            FUZZ_CHECK(sign_webhook(&keys[1], id, t, body, body_len, good) == 0, "sign_webhook");
            rc = sign_webhook_verify(keys, 2, id, ts, good, body, body_len, FUZZ_NOW,
                                     SIGN_TOLERANCE_S, &err);
            FUZZ_CHECK((rc == 0) == (id_ok && fuzz_in_time(t)),
                       "webhook: genuine signature for id '%s' ts %lld: rc %d (%s)", id, t, rc,
                       err.text);
        }
        FUZZ_CHECK(sign_drover(fuzz_secrets[0], t, body, body_len, good_drover) == 0,
                   "sign_drover");
        rc = sign_drover_verify(fuzz_secrets, 2, ts, good_drover, body, body_len, FUZZ_NOW,
                                SIGN_TOLERANCE_S, &err);
        FUZZ_CHECK((rc == 0) == fuzz_in_time(t), "x-drover: genuine signature ts %lld: rc %d (%s)",
                   t, rc, err.text);
    }
    free(copy);
    return 0;
}
