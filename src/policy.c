/*
 * policy.c - queue policy: defaults, validation, JSON.
 */
#include "policy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "job_json.h"
#include "sign.h"
#include "template.h"

void policy_init(struct policy *p)
{
    memset(p, 0, sizeof(*p));
    p->mode = POLICY_PULL;
    p->steps = json_array();
    p->timeout_s = 3600;
    p->heartbeat_timeout_s = 60;
    p->queue_timeout_s = 0;
    p->max_attempts = 1;
    p->backoff =
        (struct policy_backoff){.initial_s = 5, .factor = 2.0, .max_s = 600, .jitter = 0.2};
    p->retry_cap = 5;
    p->concurrency_limit = 0;
    p->on_limit = POLICY_LIMIT_QUEUE;
    p->dedup_window_s = 0;
    p->retention_s = 0;
    p->artifact_inline_max = POLICY_ARTIFACT_INLINE_DEFAULT;
}

void policy_release(struct policy *p)
{
    json_decref(p->steps);
    json_decref(p->dispatch);
    free(p->on_failure);
    free(p->callback_secret);
    memset(p, 0, sizeof(*p));
}

int policy_copy(struct policy *dst, const struct policy *src)
{
    *dst = *src;
    dst->steps = src->steps ? json_deep_copy(src->steps) : NULL;
    dst->dispatch = src->dispatch ? json_deep_copy(src->dispatch) : NULL;
    dst->on_failure = src->on_failure ? strdup(src->on_failure) : NULL;
    dst->callback_secret = src->callback_secret ? strdup(src->callback_secret) : NULL;
    if ((src->steps && !dst->steps) || (src->dispatch && !dst->dispatch) ||
        (src->on_failure && !dst->on_failure) || (src->callback_secret && !dst->callback_secret)) {
        policy_release(dst);
        return -DRV_ENOMEM;
    }
    return 0;
}

int64_t policy_lease_ms(const struct policy *p)
{
    int s = p->heartbeat_timeout_s ? p->heartbeat_timeout_s
            : p->timeout_s         ? p->timeout_s
                                   : POLICY_LEASE_DEFAULT_S;
    return (int64_t)s * 1000;
}

int64_t policy_backoff_ms(const struct policy *p, int attempt, double u)
{
    double delay = p->backoff.initial_s;
    for (int i = 1; i < attempt && delay < p->backoff.max_s; i++)
        delay *= p->backoff.factor;
    if (delay > p->backoff.max_s)
        delay = p->backoff.max_s;
    delay *= 1.0 - p->backoff.jitter * u;
    return (int64_t)(delay * 1000.0);
}

static int int_field(const json_t *v, const char *field, int64_t min, int64_t max, int64_t *out,
                     struct errmsg *err)
{
    if (!json_is_integer(v))
        return errmsg_field(err, -DRV_EBAD_FIELD, field, "'%s' must be an integer", field);
    json_int_t n = json_integer_value(v);
    if (n < min || n > max)
        return errmsg_field(err, -DRV_EBAD_FIELD, field, "'%s' must be between %lld and %lld",
                            field, (long long)min, (long long)max);
    *out = n;
    return 0;
}

static int int32_field(const json_t *v, const char *field, int min, int max, int *out,
                       struct errmsg *err)
{
    int64_t n = 0;
    int rc = int_field(v, field, min, max, &n, err);
    if (rc == 0)
        *out = (int)n;
    return rc;
}

static int number_field(const json_t *v, const char *field, double min, double max, double *out,
                        struct errmsg *err)
{
    if (!json_is_number(v))
        return errmsg_field(err, -DRV_EBAD_FIELD, field, "'%s' must be a number", field);
    double d = json_number_value(v);
    if (!isfinite(d) || d < min || d > max)
        return errmsg_field(err, -DRV_EBAD_FIELD, field, "'%s' must be between %g and %g", field,
                            min, max);
    *out = d;
    return 0;
}

static bool step_name_valid(const json_t *v)
{
    if (!json_is_string(v))
        return false;
    size_t n = json_string_length(v);
    return n > 0 && n <= POLICY_STEP_MAX && json_text(v) != NULL;
}

static int steps_field(const json_t *v, json_t **out, struct errmsg *err)
{
    if (!json_is_array(v) || json_array_size(v) > POLICY_STEPS_MAX)
        return errmsg_field(err, -DRV_EBAD_FIELD, "steps",
                            "'steps' must be an array of at most %d step names", POLICY_STEPS_MAX);
    size_t i, j;
    json_t *s;
    json_array_foreach(v, i, s)
    {
        if (!step_name_valid(s))
            return errmsg_field(err, -DRV_EBAD_FIELD, "steps",
                                "'steps' must hold names of 1 to %d bytes", POLICY_STEP_MAX);
        for (j = 0; j < i; j++) {
            if (json_equal(s, json_array_get(v, j)))
                return errmsg_field(err, -DRV_EBAD_FIELD, "steps", "step '%s' appears twice",
                                    json_text(s));
        }
    }
    json_decref(*out);
    *out = json_deep_copy(v);
    return *out ? 0 : -DRV_ENOMEM;
}

static int backoff_field(const json_t *v, struct policy_backoff *b, struct errmsg *err)
{
    if (!json_is_object(v))
        return errmsg_field(err, -DRV_EBAD_FIELD, "backoff", "'backoff' must be an object");
    const char *name;
    json_t *f;
    int rc = 0;
    json_object_foreach((json_t *)v, name, f)
    {
        if (strcmp(name, "initial_s") == 0)
            rc = int32_field(f, "backoff.initial_s", 0, 86400, &b->initial_s, err);
        else if (strcmp(name, "factor") == 0)
            rc = number_field(f, "backoff.factor", 1.0, 10.0, &b->factor, err);
        else if (strcmp(name, "max_s") == 0)
            rc = int32_field(f, "backoff.max_s", 0, 604800, &b->max_s, err);
        else if (strcmp(name, "jitter") == 0)
            rc = number_field(f, "backoff.jitter", 0.0, 1.0, &b->jitter, err);
        else
            return errmsg_field(err, -DRV_EBAD_FIELD, "backoff", "unknown field 'backoff.%s'",
                                name);
        if (rc < 0)
            return rc;
    }
    if (b->max_s < b->initial_s)
        return errmsg_field(err, -DRV_EBAD_FIELD, "backoff.max_s",
                            "'backoff.max_s' must not be below 'backoff.initial_s'");
    return 0;
}

static int dispatch_field(const json_t *v, json_t **out, struct errmsg *err)
{
    if (!json_is_object(v))
        return errmsg_field(err, -DRV_EBAD_FIELD, "dispatch", "'dispatch' must be an object");
    const char *name;
    json_t *f;
    bool have_url = false;
    json_object_foreach((json_t *)v, name, f)
    {
        if (strcmp(name, "url") == 0) {
            if (!json_text(f) || json_string_length(f) > JOB_URL_MAX || !url_is_http(json_text(f)))
                return errmsg_field(err, -DRV_EBAD_FIELD, "dispatch.url",
                                    "'dispatch.url' must be an http:// or https:// URL");
            have_url = true;
        } else if (strcmp(name, "method") == 0) {
            const char *m = json_text(f);
            if (!m || (strcmp(m, "POST") && strcmp(m, "PUT") && strcmp(m, "PATCH")))
                return errmsg_field(err, -DRV_EBAD_FIELD, "dispatch.method",
                                    "'dispatch.method' must be POST, PUT or PATCH");
        } else if (strcmp(name, "headers") == 0) {
            if (!json_is_object(f) || json_object_size(f) > POLICY_HEADERS_MAX)
                return errmsg_field(err, -DRV_EBAD_FIELD, "dispatch.headers",
                                    "'dispatch.headers' must be an object of at most %d strings",
                                    POLICY_HEADERS_MAX);
            const char *hname;
            json_t *hv;
            json_object_foreach(f, hname, hv)
            {
                if (!json_text(hv) || strpbrk(json_text(hv), "\r\n") ||
                    strpbrk(hname, " :\r\n\t") || !hname[0])
                    return errmsg_field(err, -DRV_EBAD_FIELD, "dispatch.headers",
                                        "header '%s' must have a token name and a one-line "
                                        "string value",
                                        hname);
            }
        } else if (strcmp(name, "body") == 0) {
            /* Any JSON: a template whose strings may hold placeholders (checked below). */
        } else {
            return errmsg_field(err, -DRV_EBAD_FIELD, "dispatch", "unknown field 'dispatch.%s'",
                                name);
        }
    }
    if (!have_url)
        return errmsg_field(err, -DRV_EBAD_FIELD, "dispatch.url", "'dispatch.url' is required");
    int rc = template_validate(v, err);
    if (rc < 0)
        return rc;
    json_decref(*out);
    *out = json_deep_copy(v);
    return *out ? 0 : -DRV_ENOMEM;
}

/* whsec_ followed by standard base64 of at least 16 bytes. */
/* A whsec_ secret that signing accepts (sign.h), of at least 16 bytes. */
static bool whsec_valid(const char *s)
{
    struct sign_key key;
    struct errmsg ignored;
    bool ok = sign_secret_parse(s, &key, &ignored) == 0 && key.len >= 16;
    OPENSSL_cleanse(&key, sizeof(key));
    return ok;
}

static int string_field(const json_t *v, const char *field, char **out, struct errmsg *err)
{
    if (!json_text(v))
        return errmsg_field(err, -DRV_EBAD_FIELD, field, "'%s' must be a string without NUL",
                            field);
    free(*out);
    *out = strdup(json_text(v));
    return *out ? 0 : -DRV_ENOMEM;
}

int policy_from_json(const json_t *obj, struct policy *p, struct errmsg *err)
{
    if (!json_is_object(obj))
        return errmsg_set(err, -DRV_EBAD_FIELD, "the policy must be a JSON object");
    const char *name;
    json_t *v;
    int rc = 0;
    json_object_foreach((json_t *)obj, name, v)
    {
        if (strcmp(name, "mode") == 0) {
            const char *m = json_text(v);
            if (m && strcmp(m, "pull") == 0)
                p->mode = POLICY_PULL;
            else if (m && strcmp(m, "http") == 0)
                p->mode = POLICY_HTTP;
            else
                return errmsg_field(err, -DRV_EBAD_FIELD, name,
                                    "'mode' must be \"pull\" or \"http\"");
        } else if (strcmp(name, "steps") == 0) {
            rc = steps_field(v, &p->steps, err);
        } else if (strcmp(name, "timeout_s") == 0) {
            rc = int32_field(v, name, 0, 604800, &p->timeout_s, err);
        } else if (strcmp(name, "heartbeat_timeout_s") == 0) {
            rc = int32_field(v, name, 0, 86400, &p->heartbeat_timeout_s, err);
        } else if (strcmp(name, "queue_timeout_s") == 0) {
            rc = int32_field(v, name, 0, 604800, &p->queue_timeout_s, err);
        } else if (strcmp(name, "max_attempts") == 0) {
            rc = int32_field(v, name, 1, 100, &p->max_attempts, err);
        } else if (strcmp(name, "backoff") == 0) {
            rc = backoff_field(v, &p->backoff, err);
        } else if (strcmp(name, "retry_cap") == 0) {
            rc = int32_field(v, name, 1, 1000, &p->retry_cap, err);
        } else if (strcmp(name, "concurrency_limit") == 0) {
            rc = int32_field(v, name, 0, 100000, &p->concurrency_limit, err);
        } else if (strcmp(name, "on_limit") == 0) {
            const char *m = json_text(v);
            if (m && strcmp(m, "queue") == 0)
                p->on_limit = POLICY_LIMIT_QUEUE;
            else if (m && strcmp(m, "reject") == 0)
                p->on_limit = POLICY_LIMIT_REJECT;
            else
                return errmsg_field(err, -DRV_EBAD_FIELD, name,
                                    "'on_limit' must be \"queue\" or \"reject\"");
        } else if (strcmp(name, "dedup_window_s") == 0) {
            rc = int32_field(v, name, 0, 31536000, &p->dedup_window_s, err);
        } else if (strcmp(name, "on_failure") == 0) {
            if (json_is_null(v)) {
                free(p->on_failure);
                p->on_failure = NULL;
            } else if (!json_text(v) || !job_queue_name_valid(json_text(v))) {
                return errmsg_field(err, -DRV_EBAD_FIELD, name,
                                    "'on_failure' must be a queue name or null");
            } else {
                rc = string_field(v, name, &p->on_failure, err);
            }
        } else if (strcmp(name, "retention_s") == 0) {
            rc = int_field(v, name, 0, 315360000, &p->retention_s, err);
        } else if (strcmp(name, "artifact_inline_max") == 0) {
            rc = int_field(v, name, 0, POLICY_ARTIFACT_INLINE_LIMIT, &p->artifact_inline_max, err);
        } else if (strcmp(name, "dispatch") == 0) {
            if (json_is_null(v)) {
                json_decref(p->dispatch);
                p->dispatch = NULL;
            } else {
                rc = dispatch_field(v, &p->dispatch, err);
            }
        } else if (strcmp(name, "callback_secret") == 0) {
            if (json_is_null(v)) {
                free(p->callback_secret);
                p->callback_secret = NULL;
            } else if (!json_text(v) || !whsec_valid(json_text(v))) {
                return errmsg_field(err, -DRV_EBAD_FIELD, name,
                                    "'callback_secret' must be \"whsec_\" followed by base64 of "
                                    "16 to 64 bytes");
            } else {
                rc = string_field(v, name, &p->callback_secret, err);
            }
        } else {
            return errmsg_field(err, -DRV_EBAD_FIELD, name, "unknown field '%s'", name);
        }
        if (rc < 0)
            return rc;
    }
    if (p->mode == POLICY_HTTP && p->dispatch == NULL)
        return errmsg_field(err, -DRV_EBAD_FIELD, "dispatch",
                            "'dispatch' is required when 'mode' is \"http\"");
    if (p->mode == POLICY_HTTP && p->callback_secret == NULL)
        return errmsg_field(err, -DRV_EBAD_FIELD, "callback_secret",
                            "'callback_secret' is required when 'mode' is \"http\": it signs "
                            "the dispatch and the runner's callbacks");
    if (p->retry_cap < p->max_attempts)
        return errmsg_field(err, -DRV_EBAD_FIELD, "retry_cap",
                            "'retry_cap' must not be below 'max_attempts'");
    return 0;
}

json_t *policy_to_json(const struct policy *p, bool show_secrets)
{
    json_t *dispatch = p->dispatch == NULL ? json_null()
                       : show_secrets      ? json_incref(p->dispatch)
                                           : template_dispatch_redacted(p->dispatch);
    json_t *secret = p->callback_secret == NULL
                         ? json_null()
                         : json_string(show_secrets ? p->callback_secret : TEMPLATE_REDACTED);
    return json_pack(
        "{s:s, s:O, s:i, s:i, s:i, s:i, s:{s:i, s:f, s:i, s:f}, s:i, s:i, s:s, s:i, "
        "s:o, s:I, s:I, s:o, s:o}",
        "mode", p->mode == POLICY_HTTP ? "http" : "pull", "steps", p->steps, "timeout_s",
        p->timeout_s, "heartbeat_timeout_s", p->heartbeat_timeout_s, "queue_timeout_s",
        p->queue_timeout_s, "max_attempts", p->max_attempts, "backoff", "initial_s",
        p->backoff.initial_s, "factor", p->backoff.factor, "max_s", p->backoff.max_s, "jitter",
        p->backoff.jitter, "retry_cap", p->retry_cap, "concurrency_limit", p->concurrency_limit,
        "on_limit", p->on_limit == POLICY_LIMIT_REJECT ? "reject" : "queue", "dedup_window_s",
        p->dedup_window_s, "on_failure", p->on_failure ? json_string(p->on_failure) : json_null(),
        "retention_s", (json_int_t)p->retention_s, "artifact_inline_max",
        (json_int_t)p->artifact_inline_max, "dispatch", dispatch, "callback_secret", secret);
}
