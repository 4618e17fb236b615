/*
 * job_json.c - the submit body, the job object and the event object.
 */
#include "job_json.h"

#include <stdlib.h>
#include <string.h>

#include "timeutil.h"

const char *json_text(const json_t *v)
{
    const char *s = json_string_value(v);
    return s && strlen(s) == json_string_length(v) ? s : NULL;
}

bool url_is_http(const char *s)
{
    size_t scheme = strncmp(s, "http://", 7) == 0 ? 7 : strncmp(s, "https://", 8) == 0 ? 8 : 0;
    if (scheme == 0 || s[scheme] == '\0' || s[scheme] == '/')
        return false;
    return strpbrk(s, " \t\r\n") == NULL;
}

bool job_queue_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > JOB_QUEUE_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

int json_time_field(const json_t *v, const char *field, int64_t *out_ms, struct errmsg *err)
{
    if (json_is_integer(v)) {
        json_int_t secs = json_integer_value(v);
        if (secs < 0 || secs > 253402300799LL) /* through year 9999 */
            return errmsg_field(err, -DRV_EBAD_FIELD, field, "'%s' is out of range", field);
        *out_ms = (int64_t)secs * 1000;
        return 0;
    }
    if (json_text(v) && time_parse_rfc3339(json_text(v), out_ms) == 0)
        return 0;
    return errmsg_field(err, -DRV_EBAD_FIELD, field,
                        "'%s' must be an RFC 3339 time or integer Unix seconds", field);
}

/* A key: a string of 1..JOB_KEY_MAX bytes. */
static int key_field(const json_t *v, const char *field, char **out, struct errmsg *err)
{
    if (!json_is_string(v))
        return errmsg_field(err, -DRV_EBAD_FIELD, field, "'%s' must be a string", field);
    size_t n = json_string_length(v);
    if (n == 0 || n > JOB_KEY_MAX)
        return errmsg_field(err, -DRV_EBAD_FIELD, field, "'%s' must be 1 to %d bytes", field,
                            JOB_KEY_MAX);
    if (json_text(v) == NULL)
        return errmsg_field(err, -DRV_EBAD_FIELD, field, "'%s' must not contain NUL", field);
    *out = strdup(json_text(v));
    return *out ? 0 : -DRV_ENOMEM;
}

static int lock_keys_field(const json_t *v, json_t **out, struct errmsg *err)
{
    if (!json_is_array(v))
        return errmsg_field(err, -DRV_EBAD_FIELD, "lock_keys",
                            "'lock_keys' must be an array of strings");
    if (json_array_size(v) > JOB_LOCK_KEYS_MAX)
        return errmsg_field(err, -DRV_EBAD_FIELD, "lock_keys", "'lock_keys' holds at most %d keys",
                            JOB_LOCK_KEYS_MAX);
    size_t i;
    json_t *k;
    json_array_foreach(v, i, k)
    {
        size_t n = json_is_string(k) ? json_string_length(k) : 0;
        if (json_text(k) == NULL || n == 0 || n > JOB_KEY_MAX)
            return errmsg_field(err, -DRV_EBAD_FIELD, "lock_keys",
                                "'lock_keys' must hold strings of 1 to %d bytes", JOB_KEY_MAX);
    }
    *out = json_deep_copy(v);
    return *out ? 0 : -DRV_ENOMEM;
}

static int url_field(const json_t *v, const char *field, char **out, struct errmsg *err)
{
    if (!json_is_string(v))
        return errmsg_field(err, -DRV_EBAD_FIELD, field, "'%s' must be a string", field);
    const char *s = json_text(v);
    if (s == NULL || strlen(s) > JOB_URL_MAX || !url_is_http(s))
        return errmsg_field(err, -DRV_EBAD_FIELD, field,
                            "'%s' must be an http:// or https:// URL of at most %d bytes", field,
                            JOB_URL_MAX);
    *out = strdup(s);
    return *out ? 0 : -DRV_ENOMEM;
}

int job_from_submit(const json_t *body, int64_t now_ms, struct job *job, struct errmsg *err)
{
    if (!json_is_object(body))
        return errmsg_set(err, -DRV_EBAD_FIELD, "the body must be a JSON object");
    const char *name;
    json_t *v;
    int rc = 0;
    job->state = JOB_QUEUED;
    json_object_foreach((json_t *)body, name, v)
    {
        if (strcmp(name, "queue") == 0) {
            if (!json_text(v) || !job_queue_name_valid(json_text(v)))
                return errmsg_field(err, -DRV_EBAD_FIELD, "queue",
                                    "'queue' must be a name of 1 to %d characters [A-Za-z0-9._-]",
                                    JOB_QUEUE_NAME_MAX);
            job->queue = strdup(json_text(v));
        } else if (strcmp(name, "payload") == 0) {
            if (!json_is_object(v))
                return errmsg_field(err, -DRV_EBAD_FIELD, "payload",
                                    "'payload' must be a JSON object");
            rc = job_payload_set(job, v);
        } else if (strcmp(name, "dedup_key") == 0) {
            rc = json_is_null(v) ? 0 : key_field(v, name, &job->dedup_key, err);
        } else if (strcmp(name, "concurrency_key") == 0) {
            rc = json_is_null(v) ? 0 : key_field(v, name, &job->concurrency_key, err);
        } else if (strcmp(name, "lock_keys") == 0) {
            rc = json_is_null(v) ? 0 : lock_keys_field(v, &job->lock_keys, err);
        } else if (strcmp(name, "webhook_url") == 0) {
            rc = json_is_null(v) ? 0 : url_field(v, name, &job->webhook_url, err);
        } else if (strcmp(name, "concurrency_limit") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                json_integer_value(v) > JOB_CONCURRENCY_MAX)
                return errmsg_field(err, -DRV_EBAD_FIELD, name,
                                    "'concurrency_limit' must be an integer from 1 to %d",
                                    JOB_CONCURRENCY_MAX);
            job->concurrency_limit = (int)json_integer_value(v);
        } else if (strcmp(name, "run_at") == 0) {
            rc = json_is_null(v) ? 0 : json_time_field(v, name, &job->run_at_ms, err);
        } else {
            return errmsg_field(err, -DRV_EBAD_FIELD, name, "unknown field '%s'", name);
        }
        if (rc < 0)
            return rc;
    }
    if (job->queue == NULL)
        return errmsg_field(err, -DRV_EBAD_FIELD, "queue", "'queue' is required");
    if (job->concurrency_limit && job->concurrency_key == NULL)
        return errmsg_field(err, -DRV_EBAD_FIELD, "concurrency_limit",
                            "'concurrency_limit' needs a 'concurrency_key'");
    if (job->payload == NULL)
        job->payload = strdup("{}");
    if (job->run_at_ms > now_ms)
        job->state = JOB_SCHEDULED;
    return job->payload ? 0 : -DRV_ENOMEM;
}

json_t *json_time_or_null(int64_t ms)
{
    if (ms == 0)
        return json_null();
    char buf[TIME_RFC3339_LEN];
    time_format_rfc3339(ms, buf);
    return json_string(buf);
}

void job_write_members(struct json_writer *w, const struct job *job)
{
    const char *state = job_state_name(job->state);
    json_writer_key(w, "id");
    json_writer_string(w, job->id);
    json_writer_key(w, "queue");
    json_writer_string(w, job->queue ? job->queue : "");
    json_writer_key(w, "state");
    json_writer_string(w, state ? state : "");
    json_writer_key(w, "step");
    json_writer_string(w, job->step);
    json_writer_key(w, "attempt");
    json_writer_int(w, job->attempt);
    json_writer_key(w, "payload");
    json_writer_raw(w, job->payload, "{}");
    json_writer_key(w, "dedup_key");
    json_writer_string(w, job->dedup_key);
    json_writer_key(w, "concurrency_key");
    json_writer_string(w, job->concurrency_key);
    json_writer_key(w, "lock_keys");
    json_writer_json(w, job->lock_keys, "[]");
    json_writer_key(w, "webhook_url");
    json_writer_string(w, job->webhook_url);
    json_writer_key(w, "run_at");
    json_writer_time(w, job->run_at_ms);
    json_writer_key(w, "cancel_requested");
    json_writer_bool(w, job->cancel_requested);
    json_writer_key(w, "result");
    json_writer_json(w, job->result, "null");
    json_writer_key(w, "error");
    json_writer_json(w, job->error, "null");
    json_writer_key(w, "checkpoints");
    json_writer_json(w, job->checkpoints, "{}");
    json_writer_key(w, "created_at");
    json_writer_time(w, job->created_at_ms);
    json_writer_key(w, "updated_at");
    json_writer_time(w, job->updated_at_ms);
    json_writer_key(w, "seq");
    json_writer_int(w, job->seq);
    /* Who holds it and until when; the lease token itself is never shown. */
    json_writer_key(w, "worker");
    json_writer_string(w, job->worker);
    json_writer_key(w, "started_at");
    json_writer_time(w, job->started_at_ms);
    json_writer_key(w, "lease_expires_at");
    json_writer_time(w, job->lease_expires_ms);
    json_writer_key(w, "waiting_for");
    json_writer_string(w, job->waiting_for);
    json_writer_key(w, "run_id");
    json_writer_string(w, job->run_id);
}

void job_write(struct json_writer *w, const struct job *job)
{
    json_writer_object_begin(w);
    job_write_members(w, job);
    json_writer_object_end(w);
}

json_t *job_to_json(const struct job *job)
{
    char stack[2048];
    struct json_writer w;
    json_writer_init(&w, stack, sizeof(stack));
    job_write(&w, job);
    /* Payloads may hold "\u0000" inside their strings. */
    json_t *obj = w.failed ? NULL : json_loadb(w.buf, w.len, JSON_ALLOW_NUL, NULL);
    json_writer_release(&w);
    return obj;
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *json_or(json_t *v, json_t *dflt)
{
    if (v == NULL)
        return dflt;
    json_decref(dflt);
    return json_incref(v);
}

json_t *job_event_to_json(const struct job_event *ev)
{
    const char *prev = job_state_name(ev->prev_state);
    return json_pack("{s:I, s:s, s:o, s:s, s:o, s:o, s:i, s:o}", "seq", (json_int_t)ev->seq, "type",
                     ev->type ? ev->type : "", "at", json_time_or_null(ev->at_ms), "state",
                     job_state_name(ev->state) ? job_state_name(ev->state) : "", "prev_state",
                     str_or_null(prev), "step", str_or_null(ev->step), "attempt", ev->attempt,
                     "data", json_or(ev->data, json_null()));
}
