/*
 * fuzz_subscription.c - the bodies of POST and PATCH /v1/subscriptions:
 * sub_from_json() and sub_patch_from_json() on the same input, loaded as the
 * server loads bodies; then sub_to_json() both ways, and the patch applied.
 *
 * Invariants: an accepted subscription is a valid one (http(s) URL within
 * SUB_URL_MAX, a secret of 16 to 64 bytes, filters null or 1 to
 * SUB_FILTER_MAX unique valid names); it can be shown; the redacted view
 * differs from the admin's by the secret alone; what an admin is shown,
 * read back as a POST body, is accepted and shows the same (a copy too). A
 * patch applied to a valid subscription leaves a valid one, keeps the
 * replaced secret exactly when it should, and clears disabled_reason when
 * it enables.
 */
#include <jansson.h>

#include "fuzz.h"
#include "job_json.h"
#include "sign.h"
#include "subscriptions.h"

#define NOW_MS  1800000000000LL
#define SECRET  "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SECRET2 "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX"

static char *dump(const json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    FUZZ_CHECK(text != NULL, "json_dumps failed");
    return text;
}

static void check_filter(const json_t *f, bool events)
{
    if (f == NULL)
        return;
    FUZZ_CHECK(json_is_array(f) && json_array_size(f) >= 1 && json_array_size(f) <= SUB_FILTER_MAX,
               "filter of %zu entries", json_array_size(f));
    for (size_t i = 0; i < json_array_size(f); i++) {
        const char *s = json_string_value(json_array_get(f, i));
        FUZZ_CHECK(s != NULL, "a filter entry that is not a string");
        FUZZ_CHECK(events ? sub_event_type_known(s) : job_queue_name_valid(s), "entry '%s'", s);
        for (size_t j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(s, json_string_value(json_array_get(f, j))) != 0, "'%s' twice", s);
    }
}

/* s is a subscription drover could store: check it, show it, read it back. */
static void check_valid(const struct sub *s)
{
    FUZZ_CHECK(s->url && strlen(s->url) <= SUB_URL_MAX && url_is_http(s->url), "url");
    struct sign_key key;
    struct errmsg err = {0};
    FUZZ_CHECK(s->secret && sign_secret_parse(s->secret, &key, &err) == 0 && key.len >= 16,
               "secret '%s'", s->secret ? s->secret : "(null)");
    check_filter(s->events, true);
    check_filter(s->queues, false);
    FUZZ_CHECK(s->disabled_reason == NULL || !s->enabled, "a reason on an enabled subscription");

    json_t *shown = sub_to_json(s, true, NOW_MS);
    FUZZ_CHECK(shown != NULL, "sub_to_json failed");
    char *text = dump(shown);
    json_t *redacted = sub_to_json(s, false, NOW_MS);
    FUZZ_CHECK(redacted != NULL, "sub_to_json (redacted) failed");
    /* Only the secret differs: other fields may hold any text (even the secret's). */
    FUZZ_CHECK(strcmp(json_string_value(json_object_get(redacted, "secret")), "<redacted>") == 0,
               "the redacted view shows the secret");
    json_object_set(redacted, "secret", json_object_get(shown, "secret"));
    FUZZ_CHECK(json_equal(redacted, shown), "the redacted view differs beyond the secret");
    json_decref(redacted);

    /* The shown subscription, as a POST body, is the same subscription. */
    json_t *body = json_deep_copy(shown);
    FUZZ_CHECK(body != NULL, "copy failed");
    const char *derived[] = {"id", "disabled_reason", "secret_rotating_until", "created_at",
                             "updated_at"};
    for (size_t i = 0; i < sizeof(derived) / sizeof(derived[0]); i++)
        json_object_del(body, derived[i]);
    struct sub again;
    sub_init(&again);
    int rc = sub_from_json(body, &again, &err);
    FUZZ_CHECK(rc == 0, "shown subscription refused: %s (%s)", err.text, text);
    memcpy(again.id, s->id, sizeof(again.id));
    again.created_at_ms = s->created_at_ms;
    again.updated_at_ms = s->updated_at_ms;
    again.disabled_reason = s->disabled_reason ? strdup(s->disabled_reason) : NULL;
    again.old_secret = s->old_secret ? strdup(s->old_secret) : NULL;
    again.old_secret_until_ms = s->old_secret_until_ms;
    json_t *shown_again = sub_to_json(&again, true, NOW_MS);
    FUZZ_CHECK(shown_again && json_equal(shown, shown_again), "round trip changed it: %s", text);
    json_decref(shown_again);
    sub_release(&again);
    json_decref(body);

    struct sub copy;
    FUZZ_CHECK(sub_copy(&copy, s) == 0, "sub_copy failed");
    json_t *shown_copy = sub_to_json(&copy, true, NOW_MS);
    FUZZ_CHECK(shown_copy && json_equal(shown, shown_copy), "copy differs");
    json_decref(shown_copy);
    sub_release(&copy);

    free(text);
    json_decref(shown);
}

/* A stored subscription for the patch to change: disabled, mid-rotation, with filters. */
static void base_sub(struct sub *s)
{
    sub_init(s);
    memcpy(s->id, "01JD6Y5T2R6Q0M7S5V3QG1X8Z1", SUB_ID_LEN + 1);
    s->url = strdup("https://hooks.example.com/drover");
    s->secret = strdup(SECRET);
    s->old_secret = strdup(SECRET2);
    s->old_secret_until_ms = NOW_MS + 60000;
    s->events = json_pack("[s]", "job.failed");
    s->queues = json_pack("[s, s]", "billing", "payments");
    s->enabled = false;
    s->disabled_reason = strdup("410 Gone from https://hooks.example.com/drover");
    s->created_at_ms = s->updated_at_ms = NOW_MS - 1000;
    FUZZ_CHECK(s->url && s->secret && s->old_secret && s->events && s->queues && s->disabled_reason,
               "out of memory");
}

static void check_patch(const struct sub_patch *p)
{
    struct sub s;
    base_sub(&s);
    bool changed = false;
    FUZZ_CHECK(sub_patch_apply(&s, p, NOW_MS, &changed) == 0, "sub_patch_apply failed");
    FUZZ_CHECK(changed == (p->secret && strcmp(p->secret, SECRET) != 0), "secret_changed");
    if (changed) {
        FUZZ_CHECK(strcmp(s.secret, p->secret) == 0, "the new secret is not in place");
        FUZZ_CHECK(p->grace_s > 0 ? s.old_secret && strcmp(s.old_secret, SECRET) == 0 &&
                                        s.old_secret_until_ms == NOW_MS + p->grace_s * 1000
                                  : s.old_secret == NULL && s.old_secret_until_ms == 0,
                   "the replaced secret (grace_s %lld)", (long long)p->grace_s);
    } else {
        FUZZ_CHECK(strcmp(s.secret, SECRET) == 0, "the secret changed");
    }
    if (p->set_enabled)
        FUZZ_CHECK(s.enabled == p->enabled && (s.disabled_reason == NULL) == p->enabled,
                   "enabled / disabled_reason");
    FUZZ_CHECK(s.updated_at_ms == NOW_MS && s.created_at_ms == NOW_MS - 1000, "times");
    check_valid(&s);
    sub_release(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *body =
        json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (body == NULL)
        return 0;

    struct sub s;
    struct errmsg err = {0};
    sub_init(&s);
    int rc = sub_from_json(body, &s, &err);
    if (rc == 0) {
        memcpy(s.id, "01JD6Y5T2R6Q0M7S5V3QG1X8Z2", SUB_ID_LEN + 1);
        s.created_at_ms = s.updated_at_ms = NOW_MS;
        check_valid(&s);
    } else {
        FUZZ_CHECK(rc == -DRV_EBAD_FIELD && err.text[0], "POST refusal %d without a message", rc);
    }
    sub_release(&s);

    struct sub_patch p;
    struct errmsg perr = {0};
    sub_patch_init(&p);
    rc = sub_patch_from_json(body, &p, &perr);
    if (rc == 0)
        check_patch(&p);
    else
        FUZZ_CHECK(rc == -DRV_EBAD_FIELD && perr.text[0], "PATCH refusal %d without a message", rc);
    sub_patch_release(&p);
    json_decref(body);
    return 0;
}
