/*
 * dispatch.c - lease the jobs of http queues and send them to their runners.
 */
#include "dispatch.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "job_ops.h"
#include "log.h"
#include "template.h"
#include "timeutil.h"
#include "util.h"

#define DISPATCH_CLAIM_MAX 16
#define DISPATCH_WORKER    "dispatch"
#define QUEUE_KEY_PREFIX   "q:"

/* The dispatcher's standing claim on one http queue. */
struct watch {
    struct job_claim_op claim;
    struct dispatcher *d;
    bool active; /* the claim is out: queued in the writer or waiting */
    struct watch *next;
};

/* One attempt's dispatch, from its first send to its last answer. */
struct dispatch {
    struct outbound_request req;
    struct dispatcher *d;
    char job_id[ULID_LEN + 1];
    char queue[JOB_QUEUE_NAME_MAX + 1];
    char lease[LEASE_TOKEN_LEN + 1];
    int attempt;
    int tries;
    char method[8];
    char webhook_id[64];
    struct sign_key key;
    char *url;
    char *body;
    size_t body_len;
    char *headers[OUTBOUND_HEADERS_MAX];
    size_t n_headers;    /* the template's, then ours (4) */
    size_t n_fixed;      /* the template's and Content-Type: kept across tries */
    char url_shown[160]; /* the template's URL, for messages (no filled-in values) */
    char last_error[640];
    struct dispatch *next; /* waiting for its retry */
};

struct dispatcher {
    struct dispatcher_config cfg;
    char public_url[1100]; /* set once by dispatcher_start(), before started */
    pthread_mutex_t lock;
    bool started;
    struct watch *watches;
    struct dispatch *retries; /* waiting for TIMER_DISPATCH */
};

int dispatch_callback_token(const struct sign_key *key, const char *job_id, int attempt, char *out)
{
    char context[ULID_LEN + 48];
    snprintf(context, sizeof(context), "drover-callback:%s:%d", job_id, attempt);
    return sign_secret_derive(key, context, out);
}

/* ---- the end of an attempt's dispatch: a lease op ---- */

static void lease_op_done(struct write_op *op)
{
    struct job_lease_op *l = container_of(op, struct job_lease_op, op);
    if (op->result < 0 && op->result != -DRV_ELEASE_LOST && op->result != -DRV_ESHUTTING_DOWN)
        log_printf(LOG_ERROR, "recording the dispatch of job '%s' failed: %s", l->id,
                   err_name(op->result));
    job_lease_op_release(l);
    free(l);
}

/*
 * Tell the writer how the dispatch went: LEASE_DISPATCHED with data, or
 * LEASE_FAIL (dispatch_failed) with message. A lease that moved on meanwhile
 * (a callback failed the job, a cancel) is refused there, harmlessly.
 */
static void record(struct dispatch *x, enum lease_action action, json_t *data, const char *message)
{
    struct job_lease_op *l = malloc(sizeof(*l));
    if (l == NULL) {
        json_decref(data);
        log_printf(LOG_ERROR, "out of memory recording the dispatch of job '%s'", x->job_id);
        return;
    }
    job_lease_op_init(l, action, lease_op_done);
    memcpy(l->id, x->job_id, sizeof(l->id));
    memcpy(l->token, x->lease, sizeof(l->token));
    l->data = data;
    if (action == LEASE_FAIL) {
        l->kind = "dispatch_failed";
        l->retryable = true;
        l->message = strdup(message);
    }
    if (writer_submit(x->d->cfg.writer, &l->op) < 0) {
        job_lease_op_release(l);
        free(l); /* closing: the job still waits for its dispatch, sent again at start */
    }
}

static void dispatch_free(struct dispatch *x)
{
    free(x->url);
    free(x->body);
    for (size_t i = 0; i < x->n_headers; i++)
        free(x->headers[i]);
    OPENSSL_cleanse(&x->key, sizeof(x->key));
    free(x);
}

static void fail_now(struct dispatch *x, const char *why)
{
    char message[ERROR_MESSAGE_MAX];
    snprintf(message, sizeof(message), "dispatch to %s failed: %s", x->url_shown, why);
    record(x, LEASE_FAIL, NULL, message);
    dispatch_free(x);
}

/* ---- sending ---- */

static void on_answer(struct outbound_request *req, const struct outbound_result *res);

/* Sign for this try (a fresh timestamp) and hand to the engine. */
static void send_try(struct dispatch *x)
{
    char sig[SIGN_WEBHOOK_SIG_LEN], line[SIGN_WEBHOOK_SIG_LEN + 64];
    int64_t ts = time_now_ms() / 1000;
    for (size_t i = x->n_fixed; i < x->n_headers; i++)
        free(x->headers[i]);
    x->n_headers = x->n_fixed;
    int rc = sign_webhook(&x->key, x->webhook_id, ts, x->body, x->body_len, sig);
    snprintf(line, sizeof(line), "webhook-id: %s", x->webhook_id);
    if (rc == 0 && (x->headers[x->n_headers++] = strdup(line)) == NULL)
        rc = -DRV_ENOMEM;
    snprintf(line, sizeof(line), "webhook-timestamp: %lld", (long long)ts);
    if (rc == 0 && (x->headers[x->n_headers++] = strdup(line)) == NULL)
        rc = -DRV_ENOMEM;
    snprintf(line, sizeof(line), "webhook-signature: %s", sig);
    if (rc == 0 && (x->headers[x->n_headers++] = strdup(line)) == NULL)
        rc = -DRV_ENOMEM;
    memset(&x->req, 0, sizeof(x->req));
    x->req.method = x->method;
    x->req.url = x->url;
    x->req.headers = (const char *const *)x->headers;
    x->req.n_headers = x->n_headers;
    x->req.body = x->body;
    x->req.body_len = x->body_len;
    x->req.done = on_answer;
    x->req.data = x;
    x->tries++;
    if (rc == 0)
        rc = outbound_send(x->d->cfg.outbound, &x->req);
    if (rc < 0)
        fail_now(x, rc == -DRV_ESHUTTING_DOWN ? "drover is shutting down" : err_name(rc));
}

/* A failed answer as text for the error: "HTTP 503: <excerpt>" or the network error. */
static void describe(const struct outbound_result *res, char *out, size_t size)
{
    if (res->rc != 0) {
        snprintf(out, size, "%s", res->error[0] ? res->error : err_name(res->rc));
        return;
    }
    int n = snprintf(out, size, "HTTP %d", res->status);
    size_t len = res->excerpt_len < DISPATCH_EXCERPT_MAX ? res->excerpt_len : DISPATCH_EXCERPT_MAX;
    if (len == 0 || n < 0 || (size_t)n + 3 >= size)
        return;
    memcpy(out + n, ": ", 2);
    size_t at = (size_t)n + 2;
    for (size_t i = 0; i < len && at + 1 < size; i++) {
        unsigned char ch = (unsigned char)res->excerpt[i];
        out[at++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch; /* keep it one line */
    }
    out[at] = '\0';
}

/* On the engine's thread. */
static void on_answer(struct outbound_request *req, const struct outbound_result *res)
{
    struct dispatch *x = req->data;
    struct dispatcher *d = x->d;
    if (res->rc == 0 && res->status >= 200 && res->status < 300) {
        record(x, LEASE_DISPATCHED,
               json_pack("{s:i, s:I, s:i}", "status", res->status, "latency_ms",
                         (json_int_t)res->latency_ms, "tries", x->tries),
               NULL);
        dispatch_free(x);
        return;
    }
    describe(res, x->last_error, sizeof(x->last_error));
    if (res->rc == -DRV_ESHUTTING_DOWN) {
        dispatch_free(x); /* still waiting for its dispatch: sent again at start */
        return;
    }
    if (x->tries >= DISPATCH_TRIES || res->rc == -DRV_EFORBIDDEN) {
        char message[ERROR_MESSAGE_MAX];
        snprintf(message, sizeof(message), "dispatch to %s failed after %d tr%s: %s", x->url_shown,
                 x->tries, x->tries == 1 ? "y" : "ies", x->last_error);
        record(x, LEASE_FAIL, NULL, message);
        dispatch_free(x);
        return;
    }
    int64_t delay = 1000LL << (x->tries - 1);
    if ((res->status == 429 || res->status == 503) && res->retry_after_s >= 0)
        delay = (res->retry_after_s < DISPATCH_RETRY_MAX_S ? res->retry_after_s
                                                           : DISPATCH_RETRY_MAX_S) *
                1000LL;
    pthread_mutex_lock(&d->lock);
    x->next = d->retries;
    d->retries = x;
    pthread_mutex_unlock(&d->lock);
    timers_add(d->cfg.timers, time_now_ms() + delay, TIMER_DISPATCH, x->job_id);
}

/* Render job's dispatch and send it; on a render error the attempt fails at once. */
static void dispatch_job(struct dispatcher *d, const struct job *job)
{
    struct dispatch *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        log_printf(LOG_ERROR, "out of memory dispatching job '%s'", job->id);
        return;
    }
    x->d = d;
    x->attempt = job->attempt;
    memcpy(x->job_id, job->id, sizeof(x->job_id));
    snprintf(x->queue, sizeof(x->queue), "%s", job->queue);
    snprintf(x->lease, sizeof(x->lease), "%s", job->lease_token ? job->lease_token : "");
    snprintf(x->webhook_id, sizeof(x->webhook_id), "dispatch_%s_%d", job->id, job->attempt);

    struct errmsg err = {.field = ""};
    const struct policy *p = policy_cache_acquire(d->cfg.policies, job->queue);
    const char *url = json_string_value(json_object_get(p->dispatch, "url"));
    snprintf(x->url_shown, sizeof(x->url_shown), "%s", url ? url : "?");
    char token[SIGN_SECRET_GEN_LEN] = "", callback_url[sizeof(d->public_url) + 64];
    snprintf(callback_url, sizeof(callback_url), "%s/v1/callbacks/%s", d->public_url, job->id);
    int rc = p->mode == POLICY_HTTP && p->dispatch && p->callback_secret
                 ? sign_secret_parse(p->callback_secret, &x->key, &err)
                 : errmsg_set(&err, -DRV_ECONFIG, "queue '%s' is not set up for http dispatch",
                              job->queue);
    if (rc == 0)
        rc = dispatch_callback_token(&x->key, job->id, job->attempt, token);
    json_t *payload = NULL;
    if (rc == 0 && (rc = job_payload_parse(job, &payload)) < 0)
        rc = errmsg_set(&err, rc, "%s",
                        rc == -DRV_ENOMEM ? "out of memory" : "the stored payload is not JSON");
    struct template_ctx ctx = {.job_id = job->id,
                               .attempt = job->attempt,
                               .payload = payload,
                               .checkpoints = job->checkpoints,
                               .callback_url = callback_url,
                               .callback_token = token};
    struct template_request treq = {0};
    if (rc == 0)
        rc = template_render_request(p->dispatch, &ctx, &treq, &err);
    json_decref(payload);
    policy_cache_unref(d->cfg.policies, p);
    OPENSSL_cleanse(token, sizeof(token));
    if (rc < 0) {
        fail_now(x, err.text[0] ? err.text : err_name(rc));
        return;
    }
    const char *name;
    json_t *value;
    json_object_foreach(treq.headers, name, value)
    {
        if (x->n_headers >= OUTBOUND_HEADERS_MAX - 4)
            break;
        if (asprintf(&x->headers[x->n_headers], "%s: %s", name, json_string_value(value)) < 0)
            rc = -DRV_ENOMEM;
        else
            x->n_headers++;
    }
    if (rc == 0 && (x->headers[x->n_headers++] = strdup("Content-Type: application/json")) == NULL)
        rc = -DRV_ENOMEM;
    x->n_fixed = x->n_headers;
    x->url = treq.url;
    treq.url = NULL;
    x->body = treq.body ? json_dumps(treq.body, JSON_COMPACT) : strdup("");
    x->body_len = x->body ? strlen(x->body) : 0;
    snprintf(x->method, sizeof(x->method), "%s", treq.method[0] ? treq.method : "POST");
    template_request_release(&treq);
    if (rc < 0 || x->body == NULL) {
        fail_now(x, "out of memory");
        return;
    }
    send_try(x);
}

/* ---- the standing claims ---- */

static void watch_submit(struct watch *w);

/* The claim is back (writer thread): send what it leased, then claim again or wait. */
static void watch_back(struct watch *w)
{
    struct dispatcher *d = w->d;
    struct job_claim_op *c = &w->claim;
    int n = c->n, result = c->op.result;
    for (int i = 0; i < n; i++)
        dispatch_job(d, &c->jobs[i]);
    job_claim_op_release(c);
    if (result < 0 && result != -DRV_ESHUTTING_DOWN) {
        /* The store failed: try again in a second rather than spin. */
        char key[JOB_QUEUE_NAME_MAX + 8];
        snprintf(key, sizeof(key), QUEUE_KEY_PREFIX "%s", c->queue);
        timers_add(d->cfg.timers, time_now_ms() + 1000, TIMER_DISPATCH, key);
        return;
    }
    const struct policy *p = policy_cache_acquire(d->cfg.policies, c->queue);
    bool http = p->mode == POLICY_HTTP;
    policy_cache_unref(d->cfg.policies, p);
    if (result == 0 && http && n > 0) {
        watch_submit(w); /* there may be more */
        return;
    }
    if (result == 0 && http && claims_wait(d->cfg.claims, &c->wait))
        return;
    pthread_mutex_lock(&d->lock);
    w->active = false; /* closing, or the queue left http mode */
    pthread_mutex_unlock(&d->lock);
}

static void watch_done(struct write_op *op)
{
    watch_back(container_of(op, struct watch, claim.op));
}

static void watch_answer(struct claim_wait *cw)
{
    watch_back(container_of(cw, struct watch, claim.wait));
}

static bool watch_alive(struct claim_wait *cw)
{
    (void)cw;
    return true;
}

static void watch_submit(struct watch *w)
{
    w->claim.n = 0;
    w->claim.op.result = 0;
    w->claim.wait.deadline_ms = TIME_MAX_MS; /* it waits until a job comes */
    if (writer_submit(w->d->cfg.writer, &w->claim.op) < 0) {
        pthread_mutex_lock(&w->d->lock);
        w->active = false;
        pthread_mutex_unlock(&w->d->lock);
    }
}

void dispatcher_watch(struct dispatcher *d, const char *queue)
{
    pthread_mutex_lock(&d->lock);
    if (!d->started) {
        pthread_mutex_unlock(&d->lock);
        return;
    }
    struct watch *w = d->watches;
    while (w && strcmp(w->claim.queue, queue) != 0)
        w = w->next;
    if (w && w->active) {
        pthread_mutex_unlock(&d->lock);
        return;
    }
    if (w == NULL && (w = calloc(1, sizeof(*w))) != NULL) {
        job_claim_op_init(&w->claim, watch_done);
        snprintf(w->claim.queue, sizeof(w->claim.queue), "%s", queue);
        snprintf(w->claim.worker, sizeof(w->claim.worker), DISPATCH_WORKER);
        snprintf(w->claim.wait.queue, sizeof(w->claim.wait.queue), "%s", queue);
        w->claim.max = DISPATCH_CLAIM_MAX;
        w->claim.dispatcher = true;
        w->claim.wait.answer = watch_answer;
        w->claim.wait.alive = watch_alive;
        w->d = d;
        w->next = d->watches;
        d->watches = w;
    }
    if (w)
        w->active = true;
    pthread_mutex_unlock(&d->lock);
    if (w == NULL)
        log_printf(LOG_ERROR, "out of memory watching queue '%s'", queue);
    else
        watch_submit(w);
}

/* ---- timers ---- */

void dispatcher_fire(struct dispatcher *d, const char *key)
{
    if (strncmp(key, QUEUE_KEY_PREFIX, strlen(QUEUE_KEY_PREFIX)) == 0) {
        const char *queue = key + strlen(QUEUE_KEY_PREFIX);
        pthread_mutex_lock(&d->lock);
        struct watch *w = d->watches;
        while (w && strcmp(w->claim.queue, queue) != 0)
            w = w->next;
        if (w)
            w->active = false;
        pthread_mutex_unlock(&d->lock);
        dispatcher_watch(d, queue);
        return;
    }
    pthread_mutex_lock(&d->lock);
    struct dispatch **pp = &d->retries, *x;
    while ((x = *pp) && strcmp(x->job_id, key) != 0)
        pp = &x->next;
    if (x)
        *pp = x->next;
    pthread_mutex_unlock(&d->lock);
    if (x == NULL)
        return;
    /* Still the same attempt under the same lease? A cancel or a callback may have ended it. */
    struct job job;
    int rc = store_job_get(d->cfg.store, x->job_id, &job);
    bool current = rc == 0 && job.state == JOB_RUNNING && job.attempt == x->attempt &&
                   job.lease_token && strcmp(job.lease_token, x->lease) == 0;
    if (rc == 0)
        job_release(&job);
    if (current)
        send_try(x);
    else
        dispatch_free(x);
}

/* ---- start and stop ---- */

int dispatcher_new(const struct dispatcher_config *cfg, struct dispatcher **out)
{
    struct dispatcher *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return -DRV_ENOMEM;
    d->cfg = *cfg;
    pthread_mutex_init(&d->lock, NULL);
    *out = d;
    return 0;
}

static void watch_if_http(void *arg, const char *queue, const struct policy *p)
{
    if (p->mode == POLICY_HTTP)
        dispatcher_watch(arg, queue);
}

int dispatcher_start(struct dispatcher *d, const char *public_url)
{
    pthread_mutex_lock(&d->lock);
    snprintf(d->public_url, sizeof(d->public_url), "%s", public_url);
    d->started = true;
    pthread_mutex_unlock(&d->lock);
    /* After started: a policy committed from here on is watched by its own
     * batch; one committed before is in the store's list. */
    int rc = store_policy_list(d->cfg.store, watch_if_http, d);
    struct job_filter f = {.state = JOB_RUNNING, .limit = 500};
    char cursor[ULID_LEN + 1];
    int resent = 0;
    while (rc == 0) {
        struct job_list list;
        rc = store_job_list(d->cfg.store, &f, &list);
        if (rc < 0)
            break;
        for (int i = 0; i < list.n; i++) {
            const struct job *job = &list.jobs[i];
            if (job->waiting_for && strcmp(job->waiting_for, "dispatch") == 0) {
                dispatch_job(d, job);
                resent++;
            }
        }
        bool more = list.more && list.n > 0;
        if (more) {
            memcpy(cursor, list.jobs[list.n - 1].id, sizeof(cursor));
            f.before_id = cursor;
        }
        job_list_release(&list);
        if (!more)
            break;
    }
    if (resent)
        log_printf(LOG_INFO, "sending %d dispatches again after the restart", resent);
    return rc;
}

void dispatcher_free(struct dispatcher *d)
{
    if (d == NULL)
        return;
    while (d->watches) {
        struct watch *w = d->watches;
        d->watches = w->next;
        job_claim_op_release(&w->claim);
        free(w);
    }
    while (d->retries) {
        struct dispatch *x = d->retries;
        d->retries = x->next;
        dispatch_free(x);
    }
    pthread_mutex_destroy(&d->lock);
    free(d);
}
