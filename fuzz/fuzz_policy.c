/*
 * fuzz_policy.c - the PUT /v1/queues/{name} body: policy_from_json() on JSON
 * loaded as the server loads it, then policy_to_json() both ways (with and
 * without secrets).
 *
 * Invariants: an accepted policy can always be shown; what is shown to an
 * admin, read back, is accepted and shows the same (the policy survives
 * GET-then-PUT); a copy shows the same; the derived delays stay in range.
 */
#include <jansson.h>

#include "fuzz.h"
#include "policy.h"

static char *dump(const json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    FUZZ_CHECK(text != NULL, "json_dumps failed");
    return text;
}

/* p was accepted: check what can be derived from it. */
static void check_accepted(const struct policy *p)
{
    json_t *shown = policy_to_json(p, true);
    FUZZ_CHECK(shown != NULL, "policy_to_json failed for an accepted policy");
    char *text = dump(shown);

    json_t *redacted = policy_to_json(p, false);
    FUZZ_CHECK(redacted != NULL, "policy_to_json (redacted) failed");
    free(dump(redacted));
    json_decref(redacted);

    struct policy again;
    struct errmsg err = {0};
    policy_init(&again);
    int rc = policy_from_json(shown, &again, &err);
    FUZZ_CHECK(rc == 0, "shown policy refused: %s (%s)", err.text, text);
    json_t *shown_again = policy_to_json(&again, true);
    FUZZ_CHECK(shown_again != NULL, "policy_to_json failed on the round trip");
    char *text_again = dump(shown_again);
    FUZZ_CHECK(json_equal(shown, shown_again) && strcmp(text, text_again) == 0,
               "round trip changed the policy:\n  %s\n  %s", text, text_again);
    free(text_again);
    json_decref(shown_again);
    policy_release(&again);

    struct policy copy;
    FUZZ_CHECK(policy_copy(&copy, p) == 0, "policy_copy failed");
    json_t *shown_copy = policy_to_json(&copy, true);
    FUZZ_CHECK(shown_copy != NULL && json_equal(shown, shown_copy), "copy differs");
    json_decref(shown_copy);
    policy_release(&copy);

    /* Delays: never negative, never above max_s (UBSan watches the casts). */
    int64_t lease = policy_lease_ms(p);
    FUZZ_CHECK(lease > 0, "lease %lld ms", (long long)lease);
    for (int attempt = 1; attempt <= p->max_attempts; attempt++) {
        for (double u = 0.0; u < 1.0; u += 0.25) {
            int64_t d = policy_backoff_ms(p, attempt, u);
            FUZZ_CHECK(d >= 0 && d <= (int64_t)p->backoff.max_s * 1000,
                       "backoff %lld ms for attempt %d", (long long)d, attempt);
        }
    }

    free(text);
    json_decref(shown);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *body =
        json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (body == NULL)
        return 0;

    struct policy p;
    struct errmsg err = {0};
    policy_init(&p);
    if (policy_from_json(body, &p, &err) == 0)
        check_accepted(&p);
    policy_release(&p);
    json_decref(body);
    return 0;
}
