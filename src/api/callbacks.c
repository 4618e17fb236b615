/*
 * callbacks.c - POST /v1/callbacks/{id}: an external runner reports on its
 * job (docs/api.md "External runners"; docs/adr/0012-runner-callbacks.md).
 *
 * No bearer token: the raw body is verified against the job's queue
 * secrets before it is parsed — Standard Webhooks headers, or
 * X-Drover-Signature for shell scripts. The keys are the queue's
 * callback_secret and the per-attempt callback tokens derived from it
 * (dispatch_callback_token()), for the current attempt and a few before it, so that a
 * late callback of an earlier attempt can be told "409 stale_attempt"
 * rather than "401". What the callback then does is runner_ops.c's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "api/api.h"
#include "job_json.h"
#include "job_ops.h"
#include "dispatch.h"
#include "sign.h"
#include "timeutil.h"
#include "util.h"

#define CALLBACK_MESSAGE_MAX ERROR_MESSAGE_MAX

/*
 * The keys that may sign a callback for job: the queue's (attempts[0] = 0),
 * then the tokens of the current attempt and those before it.
 */
struct callback_keys {
    struct sign_key keys[SIGN_MAX_KEYS];
    char secrets[SIGN_MAX_KEYS][SIGN_SECRET_GEN_LEN]; /* the same as written, for X-Drover */
    int attempts[SIGN_MAX_KEYS];
    size_t n;
};

static int callback_keys(const struct policy *p, const struct job *job, struct callback_keys *k,
                         struct errmsg *err)
{
    if (p->mode != POLICY_HTTP || p->callback_secret == NULL)
        return errmsg_set(err, -DRV_EBAD_SIGNATURE,
                          "queue '%s' takes no callbacks: it is not in http mode with a "
                          "callback_secret",
                          job->queue);
    int rc = sign_secret_parse(p->callback_secret, &k->keys[0], err);
    if (rc < 0)
        return errmsg_set(err, -DRV_EBAD_SIGNATURE, "queue '%s' has an unusable callback_secret",
                          job->queue);
    size_t cap = sizeof(k->secrets[0]);
    if (strlen(p->callback_secret) >= cap)
        return errmsg_set(err, -DRV_EINTERNAL, "callback_secret is too long");
    memcpy(k->secrets[0], p->callback_secret, strlen(p->callback_secret) + 1);
    k->attempts[0] = 0;
    k->n = 1;
    for (int a = job->attempt; a >= 1 && k->n < SIGN_MAX_KEYS; a--) {
        rc = dispatch_callback_token(&k->keys[0], job->id, a, k->secrets[k->n]);
        if (rc == 0)
            rc = sign_secret_parse(k->secrets[k->n], &k->keys[k->n], err);
        if (rc < 0)
            return -DRV_EINTERNAL;
        k->attempts[k->n++] = a;
    }
    return 0;
}

/* Check req's signature with key i alone. */
static int verify_with(struct http_request *req, const struct callback_keys *k, size_t i,
                       struct errmsg *err)
{
    size_t len;
    const char *body = http_body(req, &len);
    int64_t now = time_now_ms() / 1000;
    const char *secret = k->secrets[i];
    if (http_header(req, "webhook-signature") || http_header(req, "webhook-id"))
        return sign_webhook_verify(
            &k->keys[i], 1, http_header(req, "webhook-id"), http_header(req, "webhook-timestamp"),
            http_header(req, "webhook-signature"), body, len, now, SIGN_TOLERANCE_S, err);
    if (http_header(req, "x-drover-signature"))
        return sign_drover_verify(&secret, 1, http_header(req, "x-drover-timestamp"),
                                  http_header(req, "x-drover-signature"), body, len, now,
                                  SIGN_TOLERANCE_S, err);
    return errmsg_set(err, -DRV_EBAD_SIGNATURE,
                      "the callback is not signed: send webhook-id, webhook-timestamp and "
                      "webhook-signature (Standard Webhooks), or X-Drover-Timestamp and "
                      "X-Drover-Signature");
}

/*
 * Keys are tried one by one to learn which one signed; which key it was is
 * no secret, and each comparison is constant-time.
 */
int api_runner_verify(struct http_request *req, const struct job *job, int *attempt,
                      struct errmsg *err)
{
    struct callback_keys k;
    const struct policy *p = policy_cache_acquire(api_app(req)->policies, job->queue);
    int rc = callback_keys(p, job, &k, err);
    policy_cache_unref(api_app(req)->policies, p);
    for (size_t i = 0; rc == 0 && i < k.n; i++) {
        rc = verify_with(req, &k, i, err);
        if (rc == 0) {
            *attempt = k.attempts[i];
            break;
        }
        /* Only a signature that matched nothing may match the next key; missing
         * headers or a stale timestamp fail with every key. */
        if (i + 1 < k.n && strcmp(err->text, "no signature matched") == 0)
            rc = 0;
    }
    OPENSSL_cleanse(&k, sizeof(k));
    return rc;
}

static int status_parse(const char *s, enum callback_status *out)
{
    static const char *const names[] = {
        [CALLBACK_HEARTBEAT] = "heartbeat",
        [CALLBACK_RUNNING] = "running",
        [CALLBACK_SUCCEEDED] = "succeeded",
        [CALLBACK_FAILED] = "failed",
    };
    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum callback_status)i;
            return 0;
        }
    }
    return -1;
}

/* The "error" object of a failed callback: {message, step, retryable}. */
static int error_fields(const json_t *e, struct job_callback_op *c, const char **step,
                        struct errmsg *err)
{
    static const char *const allowed[] = {"message", "step", "retryable", NULL};
    const char *message = NULL;
    if (!json_is_object(e))
        return errmsg_field(err, -DRV_EBAD_FIELD, "error",
                            "'error' must be an object {message, step, retryable}");
    int rc = api_only_fields(e, allowed, err);
    if (rc == 0)
        rc = api_text_field(e, "message", false, CALLBACK_MESSAGE_MAX, &message, err);
    if (rc == 0 && *step == NULL)
        rc = api_text_field(e, "step", false, STEP_NAME_MAX, step, err);
    json_t *retryable = json_object_get(e, "retryable");
    if (rc == 0 && retryable && !json_is_boolean(retryable))
        rc = errmsg_field(err, -DRV_EBAD_FIELD, "error.retryable",
                          "'error.retryable' must be true or false");
    if (rc < 0) {
        if (strncmp(err->field, "error", 5) != 0) {
            char inner[sizeof(err->field)];
            memcpy(inner, err->field, sizeof(inner));
            snprintf(err->field, sizeof(err->field), "error.%.50s", inner);
        }
        return rc;
    }
    c->retryable = retryable ? json_is_true(retryable) : true;
    if (message && (c->message = strdup(message)) == NULL)
        return -DRV_ENOMEM;
    return 0;
}

/* The verified body into c. */
static int parse_body(struct http_request *req, struct job_callback_op *c, struct errmsg *err)
{
    static const char *const allowed[] = {"attempt", "status", "step",  "data",
                                          "run_id",  "result", "error", NULL};
    json_t *body = NULL;
    const char *status = NULL, *step = NULL, *run_id = NULL;
    int rc = api_object_body(req, false, allowed, &body, err);
    if (rc == 0)
        rc = api_int_field(body, "attempt", 1, 1000000, 0, &c->attempt, err);
    if (rc == 0 && c->attempt == 0)
        rc = errmsg_field(err, -DRV_EBAD_FIELD, "attempt", "'attempt' is required");
    if (rc == 0)
        rc = api_text_field(body, "status", true, 16, &status, err);
    if (rc == 0 && status_parse(status, &c->status) < 0)
        rc = errmsg_field(err, -DRV_EBAD_FIELD, "status",
                          "'status' must be heartbeat, running, succeeded or failed");
    if (rc == 0)
        rc = api_text_field(body, "step", false, STEP_NAME_MAX, &step, err);
    if (rc == 0)
        rc = api_text_field(body, "run_id", false, CALLBACK_RUN_ID_MAX, &run_id, err);
    json_t *e = json_object_get(body, "error");
    if (rc == 0 && e && !json_is_null(e)) {
        if (c->status != CALLBACK_FAILED)
            rc = errmsg_field(err, -DRV_EBAD_FIELD, "error",
                              "'error' goes with status \"failed\" only");
        else
            rc = error_fields(e, c, &step, err);
    }
    if (rc == 0 && json_object_get(body, "result") && c->status != CALLBACK_SUCCEEDED)
        rc = errmsg_field(err, -DRV_EBAD_FIELD, "result",
                          "'result' goes with status \"succeeded\" only");
    if (rc == 0 && json_object_get(body, "data") && step == NULL)
        rc = errmsg_field(err, -DRV_EBAD_FIELD, "data", "'data' goes with a 'step'");
    if (rc == 0 && ((step && (c->step = strdup(step)) == NULL) ||
                    (run_id && (c->run_id = strdup(run_id)) == NULL)))
        rc = -DRV_ENOMEM;
    if (rc == 0) {
        c->data = json_incref(json_object_get(body, "data"));
        c->result = json_incref(json_object_get(body, "result"));
    }
    json_decref(body);
    return rc;
}

static int callback_render(const struct write_op *op, struct write_reply *out)
{
    const struct job_callback_op *c = container_of(op, struct job_callback_op, op);
    json_t *body = json_pack("{s:b, s:b, s:o}", "applied", c->applied, "cancel_requested",
                             c->job.cancel_requested, "job", job_to_json(&c->job));
    if (body && !c->applied)
        json_object_set_new(body, "reason", json_string(c->reason));
    int rc = api_render_json(out, 200, body);
    /* An ignored callback changed nothing: a repeat is judged afresh. */
    return rc == 0 && !c->applied ? 1 : rc;
}

static void callback_finish(struct http_request *req)
{
    struct job_callback_op *c = http_ctx(req);
    api_reply_write(req, &c->op, &c->err, callback_render);
    job_callback_op_release(c);
    free(c);
}

void api_callback(struct http_request *req)
{
    struct errmsg err = {.field = ""};
    char id[ULID_LEN + 1];
    if (!api_job_id_param(req, 0, id))
        return;
    struct job job;
    if (!api_job_load(req, id, &job))
        return;
    int signer = 0;
    int rc = api_runner_verify(req, &job, &signer, &err);
    job_release(&job);
    struct job_callback_op *c = rc == 0 ? malloc(sizeof(*c)) : NULL;
    if (rc == 0 && c == NULL)
        rc = errmsg_set(&err, -DRV_ENOMEM, "out of memory");
    if (rc == 0) {
        job_callback_op_init(c, NULL);
        memcpy(c->id, id, sizeof(c->id));
        const char *msg_id = http_header(req, "webhook-id");
        snprintf(c->msg_id, sizeof(c->msg_id), "%s", msg_id ? msg_id : "");
        rc = parse_body(req, c, &err);
    }
    if (rc == 0 && signer && c->attempt != signer)
        rc = errmsg_set(&err, -DRV_EBAD_SIGNATURE,
                        "the callback token of attempt %d signs for that attempt only, not for "
                        "attempt %d",
                        signer, c->attempt);
    if (rc < 0) {
        http_reply_error(req, rc, &err);
        if (c) {
            job_callback_op_release(c);
            free(c);
        }
        return;
    }
    http_set_ctx(req, c);
    api_write(req, &c->op, callback_render, callback_finish);
}
