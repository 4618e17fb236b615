/*
 * jobs.c - /v1/jobs: submit, get, list, events, cancel.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "job_json.h"
#include "idempotency.h"
#include "job_ops.h"
#include "timeutil.h"
#include "util.h"

#define LIST_LIMIT_DEFAULT   50
#define LIST_LIMIT_MAX       500
#define EVENTS_LIMIT_DEFAULT 100
#define EVENTS_LIMIT_MAX     1000
#define CANCEL_REASON_MAX    1000

/* ---- submit ---- */

static int submit_render(const struct write_op *op, struct write_reply *out)
{
    const struct job_submit_op *s = container_of(op, struct job_submit_op, op);
    char stack[2048];
    struct json_writer w;
    json_writer_init(&w, stack, sizeof(stack));
    json_writer_object_begin(&w);
    job_write_members(&w, &s->job);
    if (s->deduplicated) {
        json_writer_key(&w, "deduplicated");
        json_writer_bool(&w, true);
    } else {
        snprintf(out->location, sizeof(out->location), "/v1/jobs/%s", s->job.id);
    }
    json_writer_object_end(&w);
    return api_render_writer(out, s->deduplicated ? 200 : 202, &w);
}

static void submit_finish(struct http_request *req)
{
    struct job_submit_op *s = http_ctx(req);
    if (s->op.result == -DRV_ECONCURRENCY_LIMITED) {
        json_t *extra = json_pack("{s:s}", "active_job", s->active_job);
        http_reply_error_extra(req, s->op.result, &s->err, extra);
        idem_free(s->op.idem);
    } else {
        api_reply_write(req, &s->op, &s->err, submit_render);
    }
    job_submit_op_release(s);
    free(s);
}

void api_job_submit(struct http_request *req)
{
    struct errmsg err = {.field = ""};
    json_t *body = NULL;
    struct job_submit_op *s = malloc(sizeof(*s));
    if (s == NULL) {
        http_reply_errorf(req, -DRV_ENOMEM, "out of memory");
        return;
    }
    job_submit_op_init(s, NULL);
    int rc = http_body_json(req, false, &body, &err);
    if (rc == 0)
        rc = job_from_submit(body, time_now_ms(), &s->job, &err);
    json_decref(body);
    if (rc < 0) {
        http_reply_error(req, rc, &err);
        job_submit_op_release(s);
        free(s);
        return;
    }
    http_set_ctx(req, s);
    api_write(req, &s->op, submit_render, submit_finish);
}

/* ---- get ---- */

void api_job_get(struct http_request *req)
{
    char id[ULID_LEN + 1];
    if (!api_job_id_param(req, 0, id))
        return;
    struct job job;
    if (!api_job_load(req, id, &job))
        return;
    struct write_reply out = {0};
    int rc = api_render_job(&out, 200, &job);
    job_release(&job);
    if (rc < 0)
        http_reply_error(req, rc, NULL);
    else
        http_reply_text(req, out.status, out.body);
}

/* ---- list ---- */

void api_job_list(struct http_request *req)
{
    struct job_filter f = {.queue = http_query(req, "queue"),
                           .concurrency_key = http_query(req, "key")};
    char cursor[ULID_LEN + 1];
    int64_t limit;
    if (!api_query_int(req, "limit", 1, LIST_LIMIT_MAX, LIST_LIMIT_DEFAULT, &limit))
        return;
    f.limit = (int)limit;
    const char *state = http_query(req, "state");
    if (state && (f.state = job_state_parse(state)) == JOB_NONE) {
        http_reply_errorf(req, -DRV_EBAD_REQUEST,
                          "query parameter 'state' must be one of scheduled, queued, running, "
                          "succeeded, failed, canceled");
        return;
    }
    const char *after = http_query(req, "after");
    if (after) {
        if (!ulid_parse(after, cursor)) {
            http_reply_errorf(req, -DRV_EBAD_REQUEST,
                              "query parameter 'after' must be a cursor from a previous page");
            return;
        }
        f.before_id = cursor;
    }
    struct job_list list;
    int rc = store_job_list(api_app(req)->store, &f, &list);
    if (rc < 0) {
        http_reply_error(req, rc, NULL);
        return;
    }
    struct json_writer w;
    json_writer_init(&w, NULL, 0);
    json_writer_object_begin(&w);
    json_writer_key(&w, "jobs");
    json_writer_array_begin(&w);
    for (int i = 0; i < list.n; i++)
        job_write(&w, &list.jobs[i]);
    json_writer_array_end(&w);
    json_writer_key(&w, "next");
    json_writer_string(&w, list.more && list.n ? list.jobs[list.n - 1].id : NULL);
    json_writer_object_end(&w);
    job_list_release(&list);
    http_reply_text(req, 200, json_writer_finish(&w, NULL));
}

/* ---- events ---- */

void api_job_events(struct http_request *req)
{
    char id[ULID_LEN + 1];
    int64_t after, limit;
    if (!api_job_id_param(req, 0, id) || !api_query_int(req, "after", 0, INT64_MAX, 0, &after) ||
        !api_query_int(req, "limit", 1, EVENTS_LIMIT_MAX, EVENTS_LIMIT_DEFAULT, &limit))
        return;
    struct app *app = api_app(req);
    struct event_list list;
    int rc = store_event_list(app->store, id, after, (int)limit, &list);
    if (rc == 0 && list.n == 0) {
        /* No events: tell an unknown job from one with nothing after `after`. */
        struct job job;
        rc = store_job_get(app->store, id, &job);
        if (rc == 0)
            job_release(&job);
        else
            event_list_release(&list);
    }
    if (rc == -DRV_ENOT_FOUND) {
        http_reply_errorf(req, rc, "no job '%s'", id);
        return;
    }
    if (rc < 0) {
        http_reply_error(req, rc, NULL);
        return;
    }
    json_t *events = json_array();
    for (int i = 0; i < list.n; i++)
        json_array_append_new(events, job_event_to_json(&list.events[i]));
    json_t *next = list.more && list.n ? json_integer(list.events[list.n - 1].seq) : json_null();
    event_list_release(&list);
    http_reply_json(req, 200, json_pack("{s:o, s:o}", "events", events, "next", next));
}

/* ---- retry ---- */

static int retry_render(const struct write_op *op, struct write_reply *out)
{
    return api_render_job(out, 200, &container_of(op, struct job_retry_op, op)->job);
}

static void retry_finish(struct http_request *req)
{
    struct job_retry_op *r = http_ctx(req);
    api_reply_write(req, &r->op, &r->err, retry_render);
    job_retry_op_release(r);
    free(r);
}

void api_job_retry(struct http_request *req)
{
    char id[ULID_LEN + 1];
    if (!api_job_id_param(req, 0, id))
        return;
    struct errmsg err = {.field = ""};
    json_t *body = NULL;
    bool force = false;
    int rc = http_body_json(req, true, &body, &err);
    if (rc == 0 && body) {
        const char *name;
        json_t *v;
        if (!json_is_object(body))
            rc = errmsg_set(&err, -DRV_EBAD_FIELD, "the body must be a JSON object");
        json_object_foreach(body, name, v)
        {
            if (rc < 0)
                break;
            if (strcmp(name, "force") != 0)
                rc = errmsg_field(&err, -DRV_EBAD_FIELD, name, "unknown field '%s'", name);
            else if (!json_is_boolean(v))
                rc = errmsg_field(&err, -DRV_EBAD_FIELD, name, "'force' must be true or false");
            else
                force = json_is_true(v);
        }
    }
    json_decref(body);
    if (rc == 0 && force && http_role(req) != ROLE_ADMIN)
        rc = errmsg_set(&err, -DRV_EFORBIDDEN, "only an admin may force a retry past retry_cap");
    struct job_retry_op *r = rc == 0 ? malloc(sizeof(*r)) : NULL;
    if (rc == 0 && r == NULL)
        rc = -DRV_ENOMEM;
    if (rc < 0) {
        http_reply_error(req, rc, &err);
        return;
    }
    job_retry_op_init(r, NULL);
    memcpy(r->id, id, sizeof(r->id));
    r->force = force;
    http_set_ctx(req, r);
    api_write(req, &r->op, retry_render, retry_finish);
}

/* ---- cancel ---- */

static int cancel_render(const struct write_op *op, struct write_reply *out)
{
    return api_render_job(out, 200, &container_of(op, struct job_cancel_op, op)->job);
}

static void cancel_finish(struct http_request *req)
{
    struct job_cancel_op *c = http_ctx(req);
    api_reply_write(req, &c->op, &c->err, cancel_render);
    job_cancel_op_release(c);
    free(c);
}

/* The optional body: {"reason": string}. */
static int cancel_body(struct http_request *req, char **reason, struct errmsg *err)
{
    json_t *body;
    int rc = http_body_json(req, true, &body, err);
    if (rc < 0 || body == NULL)
        return rc;
    const char *name;
    json_t *v;
    if (!json_is_object(body))
        rc = errmsg_set(err, -DRV_EBAD_FIELD, "the body must be a JSON object");
    json_object_foreach(body, name, v)
    {
        if (rc < 0)
            break;
        if (strcmp(name, "reason") != 0)
            rc = errmsg_field(err, -DRV_EBAD_FIELD, name, "unknown field '%s'", name);
        else if (!json_text(v) || json_string_length(v) > CANCEL_REASON_MAX)
            rc = errmsg_field(err, -DRV_EBAD_FIELD, name,
                              "'reason' must be a string of at most %d bytes", CANCEL_REASON_MAX);
        else if ((*reason = strdup(json_text(v))) == NULL)
            rc = -DRV_ENOMEM;
    }
    json_decref(body);
    return rc;
}

void api_job_cancel(struct http_request *req)
{
    struct errmsg err = {.field = ""};
    struct job_cancel_op *c = malloc(sizeof(*c));
    if (c == NULL) {
        http_reply_errorf(req, -DRV_ENOMEM, "out of memory");
        return;
    }
    job_cancel_op_init(c, NULL);
    int rc;
    if (!api_job_id_param(req, 0, c->id)) {
        free(c);
        return;
    }
    rc = cancel_body(req, &c->reason, &err);
    if (rc < 0) {
        http_reply_error(req, rc, &err);
        job_cancel_op_release(c);
        free(c);
        return;
    }
    http_set_ctx(req, c);
    api_write(req, &c->op, cancel_render, cancel_finish);
}
