/*
 * subscriptions.c - webhook subscriptions: the struct, its filters, its
 * JSON (the bodies of POST and PATCH /v1/subscriptions, and the object the
 * API shows), and the in-memory mirror the writer and the deliverer read.
 *
 * The mirror is a mutex-guarded array sorted by id. sub_cache_match() runs
 * for every job event while any subscription exists, so it is a plain scan:
 * expected are a handful to tens of subscriptions, SUB_COUNT_MAX at most,
 * each with at most SUB_FILTER_MAX events and queues — a few microseconds
 * under the lock, no allocation, no I/O. Writers (put, remove) copy outside
 * the lock and swap under it, so readers wait for a pointer move only.
 */
#include "subscriptions.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "job_json.h"
#include "log.h"
#include "sign.h"
#include "store/store.h"
#include "template.h"

/* ---- struct sub ---- */

void sub_init(struct sub *s)
{
    memset(s, 0, sizeof(*s));
    s->enabled = true;
}

void sub_release(struct sub *s)
{
    free(s->url);
    if (s->secret)
        OPENSSL_cleanse(s->secret, strlen(s->secret));
    free(s->secret);
    if (s->old_secret)
        OPENSSL_cleanse(s->old_secret, strlen(s->old_secret));
    free(s->old_secret);
    json_decref(s->events);
    json_decref(s->queues);
    free(s->disabled_reason);
    sub_init(s);
}

/* strdup that keeps NULL; *failed is set when a non-NULL src could not be copied. */
static char *dup_or_null(const char *src, bool *failed)
{
    if (src == NULL)
        return NULL;
    char *d = strdup(src);
    if (d == NULL)
        *failed = true;
    return d;
}

static json_t *copy_json_or_null(json_t *src, bool *failed)
{
    if (src == NULL)
        return NULL;
    json_t *d = json_deep_copy(src);
    if (d == NULL)
        *failed = true;
    return d;
}

int sub_copy(struct sub *dst, const struct sub *src)
{
    bool failed = false;
    sub_init(dst);
    memcpy(dst->id, src->id, sizeof(dst->id));
    dst->url = dup_or_null(src->url, &failed);
    dst->secret = dup_or_null(src->secret, &failed);
    dst->old_secret = dup_or_null(src->old_secret, &failed);
    dst->old_secret_until_ms = src->old_secret_until_ms;
    dst->events = copy_json_or_null(src->events, &failed);
    dst->queues = copy_json_or_null(src->queues, &failed);
    dst->enabled = src->enabled;
    dst->disabled_reason = dup_or_null(src->disabled_reason, &failed);
    dst->created_at_ms = src->created_at_ms;
    dst->updated_at_ms = src->updated_at_ms;
    if (failed) {
        sub_release(dst);
        return -DRV_ENOMEM;
    }
    return 0;
}

/* Is s one of the strings of filter (NULL = every value)? */
static bool filter_passes(const json_t *filter, const char *s)
{
    if (filter == NULL)
        return true;
    size_t i;
    json_t *v;
    json_array_foreach(filter, i, v)
    {
        const char *f = json_string_value(v);
        if (f && strcmp(f, s) == 0)
            return true;
    }
    return false;
}

bool sub_wants(const struct sub *s, const char *type, const char *queue)
{
    return s->enabled && filter_passes(s->events, type) && filter_passes(s->queues, queue);
}

/* docs/api.md "Subscriptions"; DESIGN.md §1 Events and webhooks. */
static const char *const event_types[] = {
    "job.created",  "job.queued",           "job.scheduled",     "job.running",
    "job.step",     "job.dispatched",       "job.succeeded",     "job.failed",
    "job.canceled", "job.cancel_requested", "job.delivery_dead",
};

bool sub_event_type_known(const char *type)
{
    for (size_t i = 0; i < sizeof(event_types) / sizeof(event_types[0]); i++) {
        if (strcmp(event_types[i], type) == 0)
            return true;
    }
    return false;
}

/* ---- JSON in ---- */

static int url_field(const json_t *v, char **out, struct errmsg *err)
{
    const char *s = json_text(v);
    if (s == NULL || strlen(s) > SUB_URL_MAX || !url_is_http(s))
        return errmsg_field(err, -DRV_EBAD_FIELD, "url",
                            "'url' must be an http:// or https:// URL of at most %d bytes",
                            SUB_URL_MAX);
    free(*out);
    *out = strdup(s);
    return *out ? 0 : -DRV_ENOMEM;
}

/* A whsec_ secret that signing accepts, of 16 to SIGN_KEY_MAX bytes (as policy.c's). */
static int secret_field(const json_t *v, char **out, struct errmsg *err)
{
    const char *s = json_text(v);
    struct sign_key key;
    struct errmsg ignored;
    bool ok = s && strlen(s) <= SUB_SECRET_MAX && sign_secret_parse(s, &key, &ignored) == 0 &&
              key.len >= 16;
    OPENSSL_cleanse(&key, sizeof(key));
    if (!ok)
        return errmsg_field(err, -DRV_EBAD_FIELD, "secret",
                            "'secret' must be \"whsec_\" followed by base64 of 16 to %d bytes",
                            SIGN_KEY_MAX);
    free(*out);
    *out = strdup(s);
    return *out ? 0 : -DRV_ENOMEM;
}

static int generate_secret(char **out, struct errmsg *err)
{
    char secret[SIGN_SECRET_GEN_LEN];
    if (sign_secret_generate(secret) < 0)
        return errmsg_set(err, -DRV_EINTERNAL, "cannot generate a secret");
    free(*out);
    *out = strdup(secret);
    OPENSSL_cleanse(secret, sizeof(secret));
    return *out ? 0 : -DRV_ENOMEM;
}

/*
 * events or queues: null (every value: *out stays NULL) or a non-empty
 * array of at most SUB_FILTER_MAX unique valid entries.
 */
static int filter_field(const json_t *v, const char *name, json_t **out, struct errmsg *err)
{
    bool events = strcmp(name, "events") == 0;
    json_decref(*out);
    *out = NULL;
    if (json_is_null(v))
        return 0;
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > SUB_FILTER_MAX)
        return errmsg_field(err, -DRV_EBAD_FIELD, name,
                            "'%s' must be null (every %s) or an array of 1 to %d %s", name,
                            events ? "event type" : "queue", SUB_FILTER_MAX,
                            events ? "event types" : "queue names");
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        const char *s = json_text(e);
        if (events && (s == NULL || !sub_event_type_known(s)))
            return errmsg_field(err, -DRV_EBAD_FIELD, name,
                                "'events[%zu]' is not an event type (job.created, job.queued, "
                                "job.running, job.succeeded, job.failed, ... see docs/api.md)",
                                i);
        if (!events && (s == NULL || !job_queue_name_valid(s)))
            return errmsg_field(err, -DRV_EBAD_FIELD, name,
                                "'queues[%zu]' is not a queue name (1 to %d characters "
                                "[A-Za-z0-9._-])",
                                i, JOB_QUEUE_NAME_MAX);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(json_string_value(json_array_get(v, j)), s) == 0)
                return errmsg_field(err, -DRV_EBAD_FIELD, name, "'%s' names '%s' twice", name, s);
        }
    }
    *out = json_deep_copy(v);
    return *out ? 0 : -DRV_ENOMEM;
}

static int bool_field(const json_t *v, const char *name, bool *out, struct errmsg *err)
{
    if (!json_is_boolean(v))
        return errmsg_field(err, -DRV_EBAD_FIELD, name, "'%s' must be true or false", name);
    *out = json_is_true(v);
    return 0;
}

int sub_from_json(const json_t *body, struct sub *out, struct errmsg *err)
{
    if (!json_is_object(body))
        return errmsg_set(err, -DRV_EBAD_FIELD, "the body must be a JSON object");
    const char *name;
    json_t *v;
    int rc = 0;
    json_object_foreach((json_t *)body, name, v)
    {
        if (strcmp(name, "url") == 0)
            rc = url_field(v, &out->url, err);
        else if (strcmp(name, "secret") == 0)
            rc = secret_field(v, &out->secret, err);
        else if (strcmp(name, "events") == 0)
            rc = filter_field(v, name, &out->events, err);
        else if (strcmp(name, "queues") == 0)
            rc = filter_field(v, name, &out->queues, err);
        else if (strcmp(name, "enabled") == 0)
            rc = bool_field(v, name, &out->enabled, err);
        else
            rc = errmsg_field(err, -DRV_EBAD_FIELD, name, "unknown field '%s'", name);
        if (rc < 0)
            return rc;
    }
    if (out->url == NULL)
        return errmsg_field(err, -DRV_EBAD_FIELD, "url", "'url' is required");
    return out->secret ? 0 : generate_secret(&out->secret, err);
}

void sub_patch_init(struct sub_patch *p)
{
    memset(p, 0, sizeof(*p));
    p->grace_s = SUB_GRACE_DEFAULT;
}

void sub_patch_release(struct sub_patch *p)
{
    free(p->url);
    if (p->secret)
        OPENSSL_cleanse(p->secret, strlen(p->secret));
    free(p->secret);
    json_decref(p->events);
    json_decref(p->queues);
    sub_patch_init(p);
}

int sub_patch_from_json(const json_t *body, struct sub_patch *p, struct errmsg *err)
{
    if (!json_is_object(body))
        return errmsg_set(err, -DRV_EBAD_FIELD, "the body must be a JSON object");
    const char *name;
    json_t *v;
    int rc = 0;
    bool rotate = false;
    json_object_foreach((json_t *)body, name, v)
    {
        if (strcmp(name, "url") == 0) {
            rc = url_field(v, &p->url, err);
        } else if (strcmp(name, "secret") == 0) {
            rc = secret_field(v, &p->secret, err);
        } else if (strcmp(name, "rotate_secret") == 0) {
            rc = bool_field(v, name, &rotate, err);
        } else if (strcmp(name, "grace_s") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > SUB_GRACE_MAX)
                rc = errmsg_field(err, -DRV_EBAD_FIELD, name,
                                  "'grace_s' must be an integer from 0 to %d", SUB_GRACE_MAX);
            else
                p->grace_s = json_integer_value(v);
            p->set_grace = true;
        } else if (strcmp(name, "events") == 0) {
            rc = filter_field(v, name, &p->events, err);
            p->set_events = true;
        } else if (strcmp(name, "queues") == 0) {
            rc = filter_field(v, name, &p->queues, err);
            p->set_queues = true;
        } else if (strcmp(name, "enabled") == 0) {
            rc = bool_field(v, name, &p->enabled, err);
            p->set_enabled = true;
        } else {
            rc = errmsg_field(err, -DRV_EBAD_FIELD, name, "unknown field '%s'", name);
        }
        if (rc < 0)
            return rc;
    }
    if (rotate && p->secret)
        return errmsg_field(err, -DRV_EBAD_FIELD, "rotate_secret",
                            "'rotate_secret' and 'secret' exclude each other");
    return rotate ? generate_secret(&p->secret, err) : 0;
}

/* Replace *dst by a copy of src (NULL allowed). */
static int set_json(json_t **dst, json_t *src)
{
    json_t *copy = src ? json_deep_copy(src) : NULL;
    if (src && copy == NULL)
        return -DRV_ENOMEM;
    json_decref(*dst);
    *dst = copy;
    return 0;
}

static void drop_old_secret(struct sub *s)
{
    if (s->old_secret)
        OPENSSL_cleanse(s->old_secret, strlen(s->old_secret));
    free(s->old_secret);
    s->old_secret = NULL;
    s->old_secret_until_ms = 0;
}

int sub_patch_apply(struct sub *s, const struct sub_patch *p, int64_t now_ms, bool *secret_changed)
{
    bool changed = p->secret && strcmp(p->secret, s->secret ? s->secret : "") != 0;
    if (secret_changed)
        *secret_changed = changed;
    if (s->old_secret && s->old_secret_until_ms <= now_ms)
        drop_old_secret(s);
    if (p->url) {
        char *url = strdup(p->url);
        if (url == NULL)
            return -DRV_ENOMEM;
        free(s->url);
        s->url = url;
    }
    if (changed) {
        char *secret = strdup(p->secret);
        if (secret == NULL)
            return -DRV_ENOMEM;
        drop_old_secret(s);
        if (p->grace_s > 0 && s->secret) {
            s->old_secret = s->secret;
            s->old_secret_until_ms = now_ms + p->grace_s * 1000;
        } else if (s->secret) {
            OPENSSL_cleanse(s->secret, strlen(s->secret));
            free(s->secret);
        }
        s->secret = secret;
    } else if (p->set_grace && s->old_secret) {
        if (p->grace_s > 0)
            s->old_secret_until_ms = now_ms + p->grace_s * 1000;
        else
            drop_old_secret(s);
    }
    if (p->set_events && set_json(&s->events, p->events) < 0)
        return -DRV_ENOMEM;
    if (p->set_queues && set_json(&s->queues, p->queues) < 0)
        return -DRV_ENOMEM;
    if (p->set_enabled) {
        s->enabled = p->enabled;
        if (s->enabled) {
            free(s->disabled_reason);
            s->disabled_reason = NULL;
        }
    }
    s->updated_at_ms = now_ms;
    return 0;
}

/* ---- JSON out ---- */

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

json_t *sub_to_json(const struct sub *s, bool show_secret, int64_t now_ms)
{
    bool rotating = s->old_secret && s->old_secret_until_ms > now_ms;
    const char *secret = show_secret ? s->secret : TEMPLATE_REDACTED;
    return json_pack("{s:s, s:o, s:o, s:o, s:o, s:b, s:o, s:o, s:o, s:o}", "id", s->id, "url",
                     str_or_null(s->url), "secret", str_or_null(s->secret ? secret : NULL),
                     "events", s->events ? json_deep_copy(s->events) : json_null(), "queues",
                     s->queues ? json_deep_copy(s->queues) : json_null(), "enabled", s->enabled,
                     "disabled_reason", str_or_null(s->disabled_reason), "secret_rotating_until",
                     json_time_or_null(rotating ? s->old_secret_until_ms : 0), "created_at",
                     json_time_or_null(s->created_at_ms), "updated_at",
                     json_time_or_null(s->updated_at_ms));
}

/* ---- the in-memory mirror ---- */

struct sub_cache {
    pthread_mutex_t lock;
    struct sub *subs; /* sorted by id */
    int n, cap;
    int n_enabled;
};

int sub_cache_new(struct sub_cache **out)
{
    struct sub_cache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -DRV_ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    *out = c;
    return 0;
}

void sub_cache_free(struct sub_cache *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < c->n; i++)
        sub_release(&c->subs[i]);
    free(c->subs);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* The index of id, or where it would go (*found false). Under the lock. */
static int find(const struct sub_cache *c, const char *id, bool *found)
{
    int lo = 0, hi = c->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int cmp = strcmp(c->subs[mid].id, id);
        if (cmp == 0) {
            *found = true;
            return mid;
        }
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

int sub_cache_put(struct sub_cache *c, const struct sub *s)
{
    struct sub copy, old;
    int rc = sub_copy(&copy, s);
    if (rc < 0)
        return rc;
    sub_init(&old);
    pthread_mutex_lock(&c->lock);
    bool found;
    int i = find(c, s->id, &found);
    if (found) {
        old = c->subs[i];
        c->n_enabled += (int)copy.enabled - (int)old.enabled;
        c->subs[i] = copy;
    } else {
        if (c->n == c->cap) {
            int cap = c->cap ? c->cap * 2 : 16;
            struct sub *p = realloc(c->subs, (size_t)cap * sizeof(*p));
            if (p == NULL) {
                pthread_mutex_unlock(&c->lock);
                sub_release(&copy);
                return -DRV_ENOMEM;
            }
            c->subs = p;
            c->cap = cap;
        }
        memmove(&c->subs[i + 1], &c->subs[i], (size_t)(c->n - i) * sizeof(*c->subs));
        c->subs[i] = copy;
        c->n++;
        c->n_enabled += copy.enabled;
    }
    pthread_mutex_unlock(&c->lock);
    sub_release(&old);
    return 0;
}

void sub_cache_remove(struct sub_cache *c, const char *id)
{
    struct sub old;
    sub_init(&old);
    pthread_mutex_lock(&c->lock);
    bool found;
    int i = find(c, id, &found);
    if (found) {
        old = c->subs[i];
        c->n_enabled -= old.enabled;
        memmove(&c->subs[i], &c->subs[i + 1], (size_t)(c->n - i - 1) * sizeof(*c->subs));
        c->n--;
    }
    pthread_mutex_unlock(&c->lock);
    sub_release(&old);
}

int sub_cache_match(struct sub_cache *c, const char *type, const char *queue,
                    char (*ids)[SUB_ID_LEN + 1], int max)
{
    int n = 0;
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < c->n && n < max; i++) {
        if (sub_wants(&c->subs[i], type, queue))
            memcpy(ids[n++], c->subs[i].id, SUB_ID_LEN + 1);
    }
    pthread_mutex_unlock(&c->lock);
    return n;
}

bool sub_cache_wanted(struct sub_cache *c, const char *type, const char *queue, const char *except)
{
    bool wanted = false;
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < c->n && !wanted; i++)
        wanted =
            sub_wants(&c->subs[i], type, queue) && !(except && strcmp(except, c->subs[i].id) == 0);
    pthread_mutex_unlock(&c->lock);
    return wanted;
}

int sub_cache_get(struct sub_cache *c, const char *id, struct sub *out)
{
    pthread_mutex_lock(&c->lock);
    bool found;
    int i = find(c, id, &found);
    int rc = found ? sub_copy(out, &c->subs[i]) : -DRV_ENOT_FOUND;
    pthread_mutex_unlock(&c->lock);
    return rc;
}

bool sub_cache_any(struct sub_cache *c)
{
    pthread_mutex_lock(&c->lock);
    bool any = c->n_enabled > 0;
    pthread_mutex_unlock(&c->lock);
    return any;
}

int sub_cache_count(struct sub_cache *c)
{
    pthread_mutex_lock(&c->lock);
    int n = c->n;
    pthread_mutex_unlock(&c->lock);
    return n;
}

int sub_cache_fill(struct sub_cache *c, struct store *st)
{
    struct sub_list list; /* zeroed by store_sub_list() on failure too */
    int rc = store_sub_list(st, &list);
    for (int i = 0; rc == 0 && i < list.n; i++)
        rc = sub_cache_put(c, &list.subs[i]);
    if (rc == 0 && list.n > 0)
        log_printf(LOG_INFO, "loaded %d webhook subscriptions", list.n);
    sub_list_release(&list);
    return rc;
}
