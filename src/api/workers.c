/*
 * workers.c - the pull-worker API: claim (long-poll), and the calls made
 * under a lease: heartbeat, steps, complete, fail (docs/api.md "Workers").
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "claims.h"
#include "job_json.h"
#include "job_ops.h"
#include "timeutil.h"
#include "util.h"

#define CLAIM_WAIT_MAX_S 60

static void lease_write(struct json_writer *w, const struct job *job)
{
    json_writer_object_begin(w);
    json_writer_key(w, "token");
    json_writer_string(w, job->lease_token ? job->lease_token : "");
    json_writer_key(w, "expires_at");
    json_writer_time(w, job->lease_expires_ms);
    json_writer_object_end(w);
}

/* ---- claim ---- */

static void claim_answer(struct claim_wait *w)
{
    struct job_claim_op *c = container_of(w, struct job_claim_op, wait);
    http_resume(c->op.owner);
}

static bool claim_alive(struct claim_wait *w)
{
    struct job_claim_op *c = container_of(w, struct job_claim_op, wait);
    return !http_peer_closed(c->op.owner);
}

/* On the writer thread: found nothing and may wait? Park; else answer. */
static void claim_done(struct write_op *op)
{
    struct job_claim_op *c = container_of(op, struct job_claim_op, op);
    struct http_request *req = op->owner;
    bool replayed = op->idem && op->idem->replayed; /* answered with the first reply */
    if (op->result == 0 && c->n == 0 && !replayed && c->wait.deadline_ms > 0 &&
        claims_wait(api_app(req)->claims, &c->wait))
        return;
    http_resume(req);
}

/* The jobs with their leases; an empty claim changed nothing, so it is not kept (1). */
static int claim_render(const struct write_op *op, struct write_reply *out)
{
    const struct job_claim_op *c = container_of(op, struct job_claim_op, op);
    char stack[8192];
    struct json_writer w;
    json_writer_init(&w, stack, sizeof(stack));
    json_writer_object_begin(&w);
    json_writer_key(&w, "jobs");
    json_writer_array_begin(&w);
    for (int i = 0; i < c->n; i++) {
        json_writer_object_begin(&w);
        job_write_members(&w, &c->jobs[i]);
        json_writer_key(&w, "lease");
        lease_write(&w, &c->jobs[i]);
        json_writer_object_end(&w);
    }
    json_writer_array_end(&w);
    json_writer_object_end(&w);
    int rc = api_render_writer(out, 200, &w);
    return rc == 0 && c->n == 0 ? 1 : rc;
}

static void claim_finish(struct http_request *req)
{
    struct job_claim_op *c = http_ctx(req);
    api_reply_write(req, &c->op, &c->err, claim_render);
    job_claim_op_release(c);
    free(c);
}

void api_claim(struct http_request *req)
{
    static const char *const allowed[] = {"worker", "max", "wait_s", NULL};
    const char *queue = http_param(req, 0);
    if (!job_queue_name_valid(queue)) {
        http_reply_errorf(req, -DRV_EBAD_REQUEST, "'%s' is not a queue name", queue);
        return;
    }
    struct errmsg err = {.field = ""};
    json_t *body = NULL;
    const char *worker = NULL;
    int max = 1, wait_s = 0;
    int rc = api_object_body(req, false, allowed, &body, &err);
    if (rc == 0)
        rc = api_text_field(body, "worker", true, WORKER_NAME_MAX, &worker, &err);
    if (rc == 0)
        rc = api_int_field(body, "max", 1, CLAIM_MAX, 1, &max, &err);
    if (rc == 0)
        rc = api_int_field(body, "wait_s", 0, CLAIM_WAIT_MAX_S, 0, &wait_s, &err);
    struct job_claim_op *c = rc == 0 ? malloc(sizeof(*c)) : NULL;
    if (rc == 0 && c == NULL)
        rc = -DRV_ENOMEM;
    if (rc < 0) {
        json_decref(body);
        http_reply_error(req, rc, &err);
        return;
    }
    job_claim_op_init(c, claim_done);
    snprintf(c->queue, sizeof(c->queue), "%s", queue);
    snprintf(c->worker, sizeof(c->worker), "%s", worker);
    json_decref(body);
    c->max = max;
    snprintf(c->wait.queue, sizeof(c->wait.queue), "%s", queue);
    c->wait.deadline_ms = wait_s ? time_now_ms() + (int64_t)wait_s * 1000 : 0;
    c->wait.answer = claim_answer;
    c->wait.alive = claim_alive;
    http_set_ctx(req, c);
    api_write(req, &c->op, claim_render, claim_finish);
}

/* ---- lease calls ---- */

static int lease_render(const struct write_op *op, struct write_reply *out)
{
    const struct job_lease_op *l = container_of(op, struct job_lease_op, op);
    if (l->action != LEASE_HEARTBEAT)
        return api_render_job(out, 200, &l->job);
    char stack[256];
    struct json_writer w;
    json_writer_init(&w, stack, sizeof(stack));
    json_writer_object_begin(&w);
    json_writer_key(&w, "cancel_requested");
    json_writer_bool(&w, l->job.cancel_requested);
    json_writer_key(&w, "lease");
    lease_write(&w, &l->job);
    json_writer_object_end(&w);
    return api_render_writer(out, 200, &w);
}

static void lease_finish(struct http_request *req)
{
    struct job_lease_op *l = http_ctx(req);
    api_reply_write(req, &l->op, &l->err, lease_render);
    job_lease_op_release(l);
    free(l);
}

/* Parse the "error" object of a fail call into l. */
static int fail_fields(const json_t *body, struct job_lease_op *l, struct errmsg *err)
{
    static const char *const allowed[] = {"message", "step", "retryable", NULL};
    json_t *e = json_object_get(body, "error");
    if (!json_is_object(e))
        return errmsg_field(err, -DRV_EBAD_FIELD, "error",
                            "'error' must be an object {message, step, retryable}");
    const char *message, *step;
    int rc = api_only_fields(e, allowed, err);
    if (rc == 0)
        rc = api_text_field(e, "message", true, ERROR_MESSAGE_MAX, &message, err);
    if (rc == 0)
        rc = api_text_field(e, "step", false, STEP_NAME_MAX, &step, err);
    if (rc < 0) {
        char inner[sizeof(err->field)];
        memcpy(inner, err->field, sizeof(inner));
        snprintf(err->field, sizeof(err->field), "error.%.50s", inner);
        return rc;
    }
    json_t *retryable = json_object_get(e, "retryable");
    if (retryable && !json_is_boolean(retryable))
        return errmsg_field(err, -DRV_EBAD_FIELD, "error.retryable",
                            "'error.retryable' must be true or false");
    l->retryable = retryable ? json_is_true(retryable) : true;
    l->message = strdup(message);
    l->step = step ? strdup(step) : NULL;
    return l->message && (step == NULL || l->step) ? 0 : -DRV_ENOMEM;
}

static void lease_call(struct http_request *req, enum lease_action action)
{
    static const char *const allowed[][5] = {
        [LEASE_HEARTBEAT] = {"lease", NULL},
        [LEASE_STEP] = {"lease", "step", "data", NULL},
        [LEASE_COMPLETE] = {"lease", "result", NULL},
        [LEASE_FAIL] = {"lease", "error", NULL},
    };
    struct errmsg err = {.field = ""};
    struct job_lease_op *l = malloc(sizeof(*l));
    if (l == NULL) {
        http_reply_errorf(req, -DRV_ENOMEM, "out of memory");
        return;
    }
    job_lease_op_init(l, action, NULL);
    json_t *body = NULL;
    const char *token = NULL, *step = NULL;
    int rc = api_job_id_param(req, 0, l->id) ? 0 : 1;
    if (rc == 0)
        rc = api_object_body(req, false, allowed[action], &body, &err);
    if (rc == 0)
        rc = api_text_field(body, "lease", true, 128, &token, &err);
    if (rc == 0 && action == LEASE_STEP) {
        rc = api_text_field(body, "step", true, STEP_NAME_MAX, &step, &err);
        if (rc == 0 && (l->step = strdup(step)) == NULL)
            rc = -DRV_ENOMEM;
        l->data = json_incref(json_object_get(body, "data"));
    }
    if (rc == 0 && action == LEASE_COMPLETE)
        l->data = json_incref(json_object_get(body, "result"));
    if (rc == 0 && action == LEASE_FAIL)
        rc = fail_fields(body, l, &err);
    if (rc == 0) {
        /* A token of another length cannot be the lease: refused in apply like any stale one. */
        snprintf(l->token, sizeof(l->token), "%s", strlen(token) == LEASE_TOKEN_LEN ? token : "-");
    }
    json_decref(body);
    if (rc != 0) {
        if (rc < 0) /* rc 1: api_job_id_param replied already */
            http_reply_error(req, rc, &err);
        job_lease_op_release(l);
        free(l);
        return;
    }
    http_set_ctx(req, l);
    api_write(req, &l->op, lease_render, lease_finish);
}

void api_heartbeat(struct http_request *req)
{
    lease_call(req, LEASE_HEARTBEAT);
}

void api_step(struct http_request *req)
{
    lease_call(req, LEASE_STEP);
}

void api_complete(struct http_request *req)
{
    lease_call(req, LEASE_COMPLETE);
}

void api_fail(struct http_request *req)
{
    lease_call(req, LEASE_FAIL);
}
