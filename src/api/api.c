/*
 * api.c - the route table, and what handlers share.
 */
#include "api/api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idempotency.h"
#include "job_json.h"
#include "ulid.h"

/*
 * Every route, with the roles that may call it. ROLE_NONE marks a route open
 * without a token; only the probes are. tests/integration/test_auth.py walks
 * this list without a token.
 */
const struct route api_routes[] = {
    {"GET", "/healthz", ROLE_NONE, api_healthz},
    {"GET", "/readyz", ROLE_NONE, api_readyz},
    {"POST", "/v1/jobs", ROLE_SUBMIT, api_job_submit},
    {"GET", "/v1/jobs", ROLE_ANY, api_job_list},
    {"GET", "/v1/jobs/:id", ROLE_ANY, api_job_get},
    {"GET", "/v1/jobs/:id/events", ROLE_ANY, api_job_events},
    {"POST", "/v1/jobs/:id/cancel", ROLE_SUBMIT, api_job_cancel},
    {"POST", "/v1/jobs/:id/retry", ROLE_SUBMIT, api_job_retry},
    {"POST", "/v1/queues/:name/claim", ROLE_WORKER, api_claim},
    {"POST", "/v1/jobs/:id/heartbeat", ROLE_WORKER, api_heartbeat},
    {"POST", "/v1/jobs/:id/steps", ROLE_WORKER, api_step},
    {"POST", "/v1/jobs/:id/complete", ROLE_WORKER, api_complete},
    {"POST", "/v1/jobs/:id/fail", ROLE_WORKER, api_fail},
    {"POST", "/v1/callbacks/:id", ROLE_NONE, api_callback}, /* signed: checked by the handler */
    {"GET", "/v1/jobs/:id/deliveries", ROLE_ANY, api_job_deliveries},
    {"POST", "/v1/jobs/:id/deliveries/:n/redeliver", ROLE_ADMIN, api_redeliver},
    {"GET", "/v1/subscriptions/:id/deliveries", ROLE_ANY, api_subscription_deliveries},
    /* artifacts: by the job's worker (token and lease) or its runner (signed) */
    {"PUT", "/v1/jobs/:id/artifacts/:name", ROLE_WORKER | ROUTE_RAW_BODY | ROUTE_OR_SIGNED,
     api_artifact_put},
    {"GET", "/v1/jobs/:id/artifacts", ROLE_ANY, api_artifact_list},
    {"GET", "/v1/jobs/:id/artifacts/:name", ROLE_ANY, api_artifact_get},
    {"GET", "/v1/locks", ROLE_ANY, api_lock_list},
    {"PUT", "/v1/locks/:key", ROLE_ADMIN, api_lock_put},
    {"DELETE", "/v1/locks/:key", ROLE_ADMIN, api_lock_delete},
    {"GET", "/v1/queues/:name", ROLE_ANY, api_queue_get},
    {"PUT", "/v1/queues/:name", ROLE_ADMIN, api_queue_put},
    {"POST", "/v1/subscriptions", ROLE_ADMIN, api_sub_create},
    {"GET", "/v1/subscriptions", ROLE_ANY, api_sub_list},
    {"GET", "/v1/subscriptions/:id", ROLE_ANY, api_sub_get},
    {"PATCH", "/v1/subscriptions/:id", ROLE_ADMIN, api_sub_patch},
    {"DELETE", "/v1/subscriptions/:id", ROLE_ADMIN, api_sub_delete},
};
const size_t api_n_routes = sizeof(api_routes) / sizeof(api_routes[0]);

static void resume_owner(struct write_op *op)
{
    http_resume(op->owner);
}

/*
 * The Idempotency-Key of a POST, checked and fingerprinted, into op->idem.
 * Returns 0 (also when there is none) or a refusal with op->idem->err set.
 */
static int attach_idem(struct http_request *req, struct write_op *op, write_render_fn render)
{
    const char *key = http_header(req, "Idempotency-Key");
    if (key == NULL || strcmp(http_method(req), "POST") != 0)
        return 0;
    struct write_idem *idem = calloc(1, sizeof(*idem));
    if (idem == NULL)
        return -DRV_ENOMEM;
    op->idem = idem;
    idem->render = render;
    if (!idem_key_valid(key))
        return errmsg_set(&idem->err, -DRV_EBAD_REQUEST,
                          "'Idempotency-Key' must be 1 to %d visible ASCII characters",
                          IDEM_KEY_MAX);
    snprintf(idem->key, sizeof(idem->key), "%s", key);
    size_t len;
    const char *body = http_body(req, &len);
    return idem_fingerprint(http_method(req), http_path(req), body, len, idem->fingerprint);
}

void api_write(struct http_request *req, struct write_op *op, write_render_fn render,
               http_handler_fn finish)
{
    op->owner = req;
    if (op->done == NULL)
        op->done = resume_owner;
    http_suspend(req, finish);
    int rc = attach_idem(req, op, render);
    if (rc == 0)
        rc = writer_submit(api_app(req)->writer, op);
    if (rc < 0) {
        op->result = rc;
        http_resume(req);
    }
}

void api_reply_write(struct http_request *req, struct write_op *op, const struct errmsg *err,
                     write_render_fn render)
{
    struct write_idem *idem = op->idem;
    struct write_reply r = {0};
    op->idem = NULL;
    if (op->result < 0) {
        http_reply_error(req, op->result, idem && idem->err.text[0] ? &idem->err : err);
        idem_free(idem);
        return;
    }
    if (idem && idem->reply.body) {
        r = idem->reply; /* the bytes kept, or the first request's */
        idem->reply.body = NULL;
        if (idem->replayed)
            http_add_header(req, "Idempotent-Replayed", "true");
    } else if (render(op, &r) < 0) {
        free(r.body);
        r = (struct write_reply){.status = 500};
    }
    idem_free(idem);
    if (r.location[0])
        http_add_header(req, "Location", r.location);
    http_reply_text(req, r.status, r.body);
}

/*
 * body as compact text, malloc'ed. json_dumps() grows its buffer from 16
 * bytes by doubling; a reply (a job is about 1 KB) is written into a stack
 * buffer first and copied once; a larger one is written again, straight
 * into a buffer of the size the first pass reported.
 */
static char *render_text(const json_t *body)
{
    char stack[4096];
    size_t n = json_dumpb(body, stack, sizeof(stack), JSON_COMPACT);
    char *text = n ? malloc(n + 1) : NULL;
    if (text == NULL)
        return NULL;
    if (n <= sizeof(stack)) {
        memcpy(text, stack, n);
    } else if (json_dumpb(body, text, n, JSON_COMPACT) != n) {
        free(text);
        return NULL;
    }
    text[n] = '\0';
    return text;
}

int api_render_json(struct write_reply *out, int status, json_t *body)
{
    out->status = status;
    out->body = body ? render_text(body) : NULL;
    json_decref(body);
    return out->body ? 0 : -DRV_ENOMEM;
}

int api_render_writer(struct write_reply *out, int status, struct json_writer *w)
{
    out->status = status;
    out->body = json_writer_finish(w, NULL);
    return out->body ? 0 : -DRV_ENOMEM;
}

int api_render_job(struct write_reply *out, int status, const struct job *job)
{
    char stack[2048];
    struct json_writer w;
    json_writer_init(&w, stack, sizeof(stack));
    job_write(&w, job);
    return api_render_writer(out, status, &w);
}

bool api_job_id_param(struct http_request *req, int i, char *id)
{
    const char *raw = http_param(req, i);
    if (ulid_parse(raw, id))
        return true;
    http_reply_errorf(req, -DRV_EBAD_REQUEST, "'%s' is not a job id (a 26-character ULID)", raw);
    return false;
}

bool api_job_load(struct http_request *req, const char *id, struct job *job)
{
    int rc = store_job_get(api_app(req)->store, id, job);
    if (rc == 0)
        return true;
    if (rc == -DRV_ENOT_FOUND)
        http_reply_errorf(req, rc, "no job '%s'", id);
    else
        http_reply_error(req, rc, NULL);
    return false;
}

bool api_query_int(struct http_request *req, const char *name, int64_t min, int64_t max,
                   int64_t dflt, int64_t *out)
{
    const char *v = http_query(req, name);
    if (v == NULL) {
        *out = dflt;
        return true;
    }
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || *end || n < min || n > max) {
        http_reply_errorf(req, -DRV_EBAD_REQUEST,
                          "query parameter '%s' must be a whole number from %lld to %lld", name,
                          (long long)min, (long long)max);
        return false;
    }
    *out = n;
    return true;
}

/* ---- request bodies ---- */

/* Refuse any field of obj not in allowed (NULL-terminated). */
int api_only_fields(const json_t *obj, const char *const *allowed, struct errmsg *err)
{
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)obj, name, v)
    {
        const char *const *a = allowed;
        while (*a && strcmp(*a, name) != 0)
            a++;
        if (*a == NULL)
            return errmsg_field(err, -DRV_EBAD_FIELD, name, "unknown field '%s'", name);
    }
    return 0;
}

/* A string field of 1..max bytes; absent gives NULL unless required. */
int api_text_field(const json_t *obj, const char *name, bool required, size_t max, const char **out,
                   struct errmsg *err)
{
    json_t *v = json_object_get(obj, name);
    *out = NULL;
    if (v == NULL || json_is_null(v)) {
        if (required)
            return errmsg_field(err, -DRV_EBAD_FIELD, name, "'%s' is required", name);
        return 0;
    }
    const char *s = json_text(v);
    if (s == NULL || s[0] == '\0' || strlen(s) > max)
        return errmsg_field(err, -DRV_EBAD_FIELD, name, "'%s' must be a string of 1 to %zu bytes",
                            name, max);
    *out = s;
    return 0;
}

int api_int_field(const json_t *obj, const char *name, int min, int max, int dflt, int *out,
                  struct errmsg *err)
{
    json_t *v = json_object_get(obj, name);
    if (v == NULL) {
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return errmsg_field(err, -DRV_EBAD_FIELD, name, "'%s' must be an integer from %d to %d",
                            name, min, max);
    *out = (int)json_integer_value(v);
    return 0;
}

/* Parse the body as an object with only `allowed` fields. */
int api_object_body(struct http_request *req, bool allow_empty, const char *const *allowed,
                    json_t **out, struct errmsg *err)
{
    int rc = http_body_json(req, allow_empty, out, err);
    if (rc < 0)
        return rc;
    if (*out == NULL) {
        *out = json_object();
        return *out ? 0 : -DRV_ENOMEM;
    }
    if (!json_is_object(*out))
        return errmsg_set(err, -DRV_EBAD_FIELD, "the body must be a JSON object");
    return api_only_fields(*out, allowed, err);
}
