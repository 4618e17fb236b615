/*
 * deliver.c - send the outbox.
 */
#include "deliver.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "job_json.h"
#include "job_ops_internal.h"
#include "log.h"
#include "outbox.h"
#include "sign.h"
#include "strset.h"
#include "sub_ops.h"
#include "subscriptions.h"
#include "timeutil.h"
#include "util.h"

#define SCAN_MAX        256
#define BREAKER_MAX_MS  (10 * 60 * 1000LL)
#define RETRY_AFTER_MAX (3600 * 1000LL) /* the longest Retry-After honoured */
#define KEY_MAX         (ULID_LEN + OUTBOX_DEST_MAX + 2)
#define ENDPOINT_MAX    OUTBOUND_HOST_KEY_MAX

/* An endpoint's circuit. */
struct circuit {
    char endpoint[ENDPOINT_MAX];
    int failures;        /* consecutive */
    int64_t open_until;  /* 0: closed */
    int64_t cooldown_ms; /* the last one */
    bool probing;        /* half open: one send is out */
    struct circuit *next;
};

struct deliverer {
    struct deliverer_config cfg;
    struct sign_key job_key; /* from webhook_secret */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool kicked, stopping;
    int64_t wake_at; /* the next retry's time; 0: none known */
    int in_flight;
    struct strset sending; /* "job|dest" with a send out */
    struct strset backoff; /* "job|dest" with a row waiting for its retry */
    struct strset rows;    /* outbox ids in flight, as text */
    /* Outbox ids answered since the last scan began, and during the one
     * before: a scan's read may predate the answer's commit, so it would
     * see the row still pending. Two generations are enough: a scan that
     * began after the commit reads the row as it is. */
    struct strset done_now, done_before;
    struct circuit *circuits;
};

/* One send. */
struct send {
    struct outbound_request req;
    struct deliverer *d;
    struct outbox_row row;
    char key[KEY_MAX];
    char endpoint[ENDPOINT_MAX];
    char *url;
    char *body;
    char *headers[4];
    size_t n_headers;
    bool is_sub;
};

/* The result of a send, applied by the writer. */
struct result_op {
    struct write_op op;
    struct deliverer *d;
    int64_t id;
    char key[KEY_MAX];
    char endpoint[ENDPOINT_MAX];
    struct delivery_attempt attempt;
    int retry_after_s;
    bool ok;
    bool dead_now; /* nowhere to send it: attempt.error says why */
    /* out: what the row became */
    bool scheduled, finished;
    int64_t next_at;
    struct sub disabled; /* a subscription this answer disabled (410), for the cache */
    bool has_disabled;
};

/* ---- small helpers ---- */

static void row_key(const struct outbox_row *r, char *out)
{
    snprintf(out, KEY_MAX, "%s|%s", r->job_id, r->dest);
}

static void id_text(int64_t id, char *out, size_t size)
{
    snprintf(out, size, "%lld", (long long)id);
}

/* scheme://host:port of url, for the circuit breaker. */
static void endpoint_of(const char *url, char *out)
{
    const char *p = strstr(url, "://");
    size_t n = p ? (size_t)(strcspn(p + 3, "/?#") + (size_t)(p + 3 - url)) : strlen(url);
    snprintf(out, ENDPOINT_MAX, "%.*s", (int)(n < ENDPOINT_MAX - 1 ? n : ENDPOINT_MAX - 1), url);
}

static double jitter(void)
{
    uint32_t r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
        return 1.0;
    return 0.8 + 0.4 * ((double)r / 4294967296.0); /* +-20% */
}

/* ---- circuits (called with d->lock held) ---- */

static struct circuit *circuit_of(struct deliverer *d, const char *endpoint, bool create)
{
    struct circuit *c = d->circuits;
    while (c && strcmp(c->endpoint, endpoint) != 0)
        c = c->next;
    if (c == NULL && create && (c = calloc(1, sizeof(*c))) != NULL) {
        snprintf(c->endpoint, sizeof(c->endpoint), "%s", endpoint);
        c->next = d->circuits;
        d->circuits = c;
    }
    return c;
}

/* May we send to endpoint now? A circuit past its cool-down lets one probe through. */
static bool circuit_allows(struct deliverer *d, const char *endpoint, int64_t now)
{
    struct circuit *c = circuit_of(d, endpoint, false);
    if (c == NULL || c->open_until == 0)
        return true;
    if (now < c->open_until || c->probing) {
        if (now < c->open_until && (d->wake_at == 0 || c->open_until < d->wake_at))
            d->wake_at = c->open_until;
        return false;
    }
    c->probing = true;
    return true;
}

static void circuit_record(struct deliverer *d, const char *endpoint, bool ok, int64_t now)
{
    if (endpoint[0] == '\0')
        return; /* never sent anywhere */
    struct circuit *c = circuit_of(d, endpoint, !ok);
    if (c == NULL)
        return;
    bool probe = c->probing;
    c->probing = false;
    if (ok) {
        c->failures = 0;
        c->open_until = 0;
        c->cooldown_ms = 0;
        return;
    }
    c->failures++;
    if (probe || (c->open_until == 0 && c->failures >= d->cfg.breaker_after)) {
        c->cooldown_ms = probe && c->cooldown_ms ? c->cooldown_ms * 2 : d->cfg.breaker_ms;
        if (c->cooldown_ms > BREAKER_MAX_MS)
            c->cooldown_ms = BREAKER_MAX_MS;
        c->open_until = now + c->cooldown_ms;
        log_printf(LOG_WARN, "webhook endpoint %s failed %d times in a row: paused for %lld ms",
                   endpoint, c->failures, (long long)c->cooldown_ms);
    }
}

/* ---- results, in the writer ---- */

/* A row died: record it on the job, as an event (outbox.h keeps it from its own destination). */
static int record_dead(struct write_ctx *ctx, const struct outbox_row *r, const char *why)
{
    struct job job;
    int rc = store_job_load(ctx->store, r->job_id, &job);
    if (rc == -DRV_ENOT_FOUND)
        return 0; /* the job is gone (retention) */
    if (rc < 0)
        return rc;
    struct job_event ev;
    job_note(&job, "job.delivery_dead", ctx->now_ms, &ev);
    bool own = strcmp(r->dest, OUTBOX_DEST_JOB) == 0;
    ev.data =
        json_pack("{s:s, s:I, s:I, s:s}", "destination", own ? "webhook_url" : r->dest, "event_seq",
                  (json_int_t)r->seq, "delivery", (json_int_t)r->id, "reason", why);
    struct policy fallback;
    const struct policy *p = jobop_policy_for(ctx, job.queue, &fallback);
    rc = jobop_save(ctx, &job, &ev, p);
    jobop_policy_done(ctx, p, &fallback);
    job_release(&job);
    return rc;
}

static int result_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct result_op *o = container_of(op, struct result_op, op);
    struct deliverer *d = o->d;
    struct outbox_row r;
    if (o->ok) {
        /* The common case, in one statement: the row itself logs its last attempt. */
        int rc = store_outbox_delivered(ctx->store, o->id, ctx->now_ms, o->attempt.status,
                                        o->attempt.latency_ms);
        o->finished = rc == 0;
        return rc == -DRV_ENOT_FOUND ? 0 : rc; /* redelivered and answered meanwhile, or gone */
    }
    int rc = store_outbox_get(ctx->store, o->id, &r);
    if (rc < 0)
        return rc == -DRV_ENOT_FOUND ? 0 : rc;
    if (strcmp(r.state, "pending") != 0) {
        outbox_row_release(&r);
        return 0; /* redelivered and answered meanwhile, or gone */
    }
    r.attempts++;
    o->attempt.n = r.attempts;
    o->attempt.at_ms = ctx->now_ms;
    r.updated_at_ms = ctx->now_ms;
    r.last_status = o->attempt.status;
    r.last_latency_ms = o->attempt.latency_ms;
    free(r.last_error);
    r.last_error = o->attempt.error ? strdup(o->attempt.error) : NULL;
    char why[160] = "";
    if (o->dead_now) {
        snprintf(why, sizeof(why), "%s", o->attempt.error ? o->attempt.error : "undeliverable");
    } else if (o->attempt.status == 410) {
        snprintf(why, sizeof(why), "the endpoint answered 410 Gone");
    } else if (ctx->now_ms - r.created_at_ms >= d->cfg.give_up_ms) {
        snprintf(why, sizeof(why), "undelivered after %d attempts over %lld s", r.attempts,
                 (long long)((ctx->now_ms - r.created_at_ms) / 1000));
    } else {
        int i = r.attempts - 1 < d->cfg.n_schedule ? r.attempts - 1 : d->cfg.n_schedule - 1;
        int64_t delay = (int64_t)((double)d->cfg.schedule_ms[i] * jitter());
        if ((o->attempt.status == 429 || o->attempt.status == 503) && o->retry_after_s >= 0) {
            int64_t ra = (int64_t)o->retry_after_s * 1000;
            delay = ra < RETRY_AFTER_MAX ? ra : RETRY_AFTER_MAX;
        }
        r.next_at_ms = ctx->now_ms + delay;
        o->scheduled = true;
        o->next_at = r.next_at_ms;
    }
    if (why[0])
        snprintf(r.state, sizeof(r.state), "dead");
    o->finished = !o->scheduled;
    rc = store_delivery_attempt_insert(ctx->store, r.id, &o->attempt);
    if (rc == 0)
        rc = store_outbox_update(ctx->store, &r);
    if (rc == 0 && why[0])
        rc = record_dead(ctx, &r, why);
    if (rc == 0 && o->attempt.status == 410 && !o->dead_now &&
        strcmp(r.dest, OUTBOX_DEST_JOB) != 0) {
        char reason[ENDPOINT_MAX + 32];
        snprintf(reason, sizeof(reason), "%s answered 410 Gone", o->endpoint);
        rc = sub_ops_disable(ctx, r.dest, reason, &o->disabled);
        o->has_disabled = rc == 0;
        if (rc == -DRV_ENOT_FOUND)
            rc = 0; /* deleted meanwhile */
    }
    outbox_row_release(&r);
    return rc < 0 && rc != -DRV_ENOMEM ? -DRV_ESTORE : rc;
}

static void result_done(struct write_op *op)
{
    struct result_op *o = container_of(op, struct result_op, op);
    struct deliverer *d = o->d;
    char id[24];
    id_text(o->id, id, sizeof(id));
    pthread_mutex_lock(&d->lock);
    strset_remove(&d->sending, o->key);
    strset_remove(&d->rows, id);
    if (strset_add(&d->done_now, id) < 0)
        log_printf(LOG_ERROR, "out of memory: delivery %s may be sent twice", id);
    d->in_flight--;
    if (op->result == 0 && o->scheduled) {
        if (strset_add(&d->backoff, o->key) < 0)
            log_printf(LOG_ERROR, "out of memory: webhook order may slip for %s", o->key);
        if (d->wake_at == 0 || o->next_at < d->wake_at)
            d->wake_at = o->next_at;
    } else if (op->result == 0 && o->finished) {
        strset_remove(&d->backoff, o->key);
    } else if (op->result < 0 && d->wake_at == 0) {
        d->wake_at = time_now_ms() + 1000; /* the store failed: the row is still due */
    }
    circuit_record(d, o->endpoint, o->ok, time_now_ms());
    if (op->result == 0 && o->has_disabled && d->cfg.subs &&
        sub_cache_put(d->cfg.subs, &o->disabled) < 0)
        log_printf(LOG_ERROR, "out of memory: subscription %s disabled in the store only",
                   o->disabled.id);
    d->kicked = true;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->lock);
    delivery_attempt_release(&o->attempt);
    if (o->has_disabled)
        sub_release(&o->disabled);
    free(o);
}

/* ---- sending ---- */

static void send_free(struct send *s)
{
    free(s->url);
    free(s->body);
    for (size_t i = 0; i < s->n_headers; i++)
        free(s->headers[i]);
    outbox_row_release(&s->row);
    free(s);
}

/* Hand a send's outcome to the writer; frees s. */
static void finish(struct send *s, bool ok, bool dead_now, int status, int64_t latency_ms,
                   const char *error, const char *excerpt, size_t excerpt_len, int retry_after_s)
{
    struct deliverer *d = s->d;
    struct result_op *o = calloc(1, sizeof(*o));
    if (o == NULL) {
        log_printf(LOG_ERROR, "out of memory recording delivery %lld", (long long)s->row.id);
        pthread_mutex_lock(&d->lock);
        char id[24];
        id_text(s->row.id, id, sizeof(id));
        strset_remove(&d->sending, s->key);
        strset_remove(&d->rows, id);
        d->in_flight--;
        d->wake_at = time_now_ms() + 1000;
        pthread_mutex_unlock(&d->lock);
        send_free(s);
        return;
    }
    o->op.apply = result_apply;
    o->op.done = result_done;
    o->d = d;
    o->id = s->row.id;
    memcpy(o->key, s->key, sizeof(o->key));
    memcpy(o->endpoint, s->endpoint, sizeof(o->endpoint));
    o->ok = ok;
    o->dead_now = dead_now;
    o->retry_after_s = retry_after_s;
    o->attempt.status = status;
    o->attempt.latency_ms = latency_ms;
    o->attempt.error = error && error[0] ? strdup(error) : NULL;
    if (excerpt_len) {
        size_t n = excerpt_len < DELIVER_EXCERPT_MAX ? excerpt_len : DELIVER_EXCERPT_MAX;
        if ((o->attempt.excerpt = malloc(n + 1)) != NULL) {
            for (size_t i = 0; i < n; i++) /* text for the log: no NULs or controls */
                o->attempt.excerpt[i] = (unsigned char)excerpt[i] < 0x20 ? ' ' : excerpt[i];
            o->attempt.excerpt[n] = '\0';
        }
    }
    send_free(s);
    if (writer_submit(d->cfg.writer, &o->op) < 0) {
        /* closing: the row stays pending and is sent again at the next start */
        pthread_mutex_lock(&d->lock);
        d->in_flight--;
        pthread_mutex_unlock(&d->lock);
        delivery_attempt_release(&o->attempt);
        free(o);
    }
}

/* On the outbound engine's thread. */
static void on_answer(struct outbound_request *req, const struct outbound_result *res)
{
    struct send *s = req->data;
    bool ok = res->rc == 0 && res->status >= 200 && res->status < 300;
    finish(s, ok, false, res->status, res->latency_ms, res->rc ? res->error : NULL, res->excerpt,
           res->excerpt_len, res->retry_after_s);
}

/* The body of a delivery: the event with its job as it was then. */
static char *render_body(const struct job *job, const struct job_event *ev)
{
    char at[TIME_RFC3339_LEN], created[TIME_RFC3339_LEN];
    time_format_rfc3339(ev->at_ms, at);
    time_format_rfc3339(job->created_at_ms, created);
    json_t *error = json_object_get(ev->data, "error");
    bool succeeded = strcmp(ev->type, "job.succeeded") == 0;
    json_t *j = json_pack(
        "{s:s, s:s, s:s, s:o, s:o, s:i, s:O, s:O, s:s, s:s}", "id", job->id, "queue", job->queue,
        "state", job_state_name(ev->state) ? job_state_name(ev->state) : "", "previous_state",
        job_state_name(ev->prev_state) ? json_string(job_state_name(ev->prev_state)) : json_null(),
        "step", ev->step ? json_string(ev->step) : json_null(), "attempt", ev->attempt, "error",
        error ? error : json_null(), "result", succeeded && job->result ? job->result : json_null(),
        "created_at", created, "updated_at", at);
    json_t *body =
        json_pack("{s:s, s:s, s:{s:o, s:I, s:O}}", "type", ev->type, "timestamp", at, "data", "job",
                  j, "seq", (json_int_t)ev->seq, "event", ev->data ? ev->data : json_null());
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    return text;
}

/* Signing keys and URL of the row's destination; false when it is gone or off. */
static bool destination(struct deliverer *d, struct send *s, const struct job *job,
                        struct sign_key *keys, size_t *n_keys, char *why, size_t why_size)
{
    *n_keys = 0;
    if (strcmp(s->row.dest, OUTBOX_DEST_JOB) == 0) {
        if (job->webhook_url == NULL) {
            snprintf(why, why_size, "the job has no webhook_url");
            return false;
        }
        s->url = strdup(job->webhook_url);
        keys[(*n_keys)++] = d->job_key;
        return s->url != NULL;
    }
    struct sub sub;
    if (d->cfg.subs == NULL || sub_cache_get(d->cfg.subs, s->row.dest, &sub) < 0) {
        snprintf(why, why_size, "the subscription was deleted");
        return false;
    }
    bool ok = sub.enabled;
    struct errmsg err;
    if (!ok)
        snprintf(why, why_size, "the subscription is disabled");
    if (ok && sign_secret_parse(sub.secret, &keys[(*n_keys)], &err) == 0)
        (*n_keys)++;
    if (ok && sub.old_secret && sub.old_secret_until_ms > time_now_ms() &&
        sign_secret_parse(sub.old_secret, &keys[(*n_keys)], &err) == 0)
        (*n_keys)++;
    s->is_sub = true;
    if (ok)
        s->url = strdup(sub.url);
    sub_release(&sub);
    return ok && s->url && *n_keys > 0;
}

/* Build and send row (claimed: in the sending sets). Runs on the deliverer thread. */
static void send_row(struct deliverer *d, struct send *s)
{
    struct job job;
    struct event_list events = {0};
    char why[128] = "";
    int rc = store_job_get(d->cfg.store, s->row.job_id, &job);
    if (rc == 0)
        rc = store_event_list(d->cfg.store, s->row.job_id, s->row.seq - 1, 1, &events);
    if (rc == 0 && (events.n != 1 || events.events[0].seq != s->row.seq))
        rc = -DRV_ENOT_FOUND;
    struct sign_key keys[2];
    size_t n_keys = 0;
    bool ok = rc == 0 && destination(d, s, &job, keys, &n_keys, why, sizeof(why));
    if (ok)
        s->body = render_body(&job, &events.events[0]);
    if (rc == 0)
        job_release(&job);
    event_list_release(&events);
    if (!ok || s->body == NULL) {
        /* Nowhere to send it: the row is dead at once (its log says why). */
        if (why[0] == '\0')
            snprintf(why, sizeof(why), "%s",
                     rc == -DRV_ENOT_FOUND ? "the job is gone" : err_name(rc ? rc : -DRV_ENOMEM));
        s->endpoint[0] = '\0';
        finish(s, false, true, 0, 0, why, NULL, 0, -1);
        return;
    }
    endpoint_of(s->url, s->endpoint);
    pthread_mutex_lock(&d->lock);
    bool allowed = circuit_allows(d, s->endpoint, time_now_ms());
    if (!allowed) {
        /* The endpoint's circuit is open: the row waits, due, for the probe's outcome. */
        char id[24];
        id_text(s->row.id, id, sizeof(id));
        strset_remove(&d->sending, s->key);
        strset_remove(&d->rows, id);
        d->in_flight--;
    }
    pthread_mutex_unlock(&d->lock);
    if (!allowed) {
        OPENSSL_cleanse(keys, sizeof(keys));
        send_free(s);
        return;
    }
    char msg_id[64], line[400], sig[2][SIGN_WEBHOOK_SIG_LEN];
    int64_t ts = time_now_ms() / 1000;
    snprintf(msg_id, sizeof(msg_id), "%s_%lld", s->row.job_id, (long long)s->row.seq);
    size_t len = strlen(s->body);
    for (size_t i = 0; i < n_keys && rc == 0; i++)
        rc = sign_webhook(&keys[i], msg_id, ts, s->body, len, sig[i]);
    OPENSSL_cleanse(keys, sizeof(keys));
    const char *lines[4];
    snprintf(line, sizeof(line), "webhook-signature: %s%s%s", sig[0], n_keys > 1 ? " " : "",
             n_keys > 1 ? sig[1] : "");
    lines[0] = "Content-Type: application/json";
    lines[1] = line;
    char id_line[96], ts_line[48];
    snprintf(id_line, sizeof(id_line), "webhook-id: %s", msg_id);
    snprintf(ts_line, sizeof(ts_line), "webhook-timestamp: %lld", (long long)ts);
    lines[2] = id_line;
    lines[3] = ts_line;
    for (size_t i = 0; i < 4; i++) {
        if ((s->headers[s->n_headers] = strdup(lines[i])) == NULL)
            rc = -DRV_ENOMEM;
        else
            s->n_headers++;
    }
    s->req.method = "POST";
    s->req.url = s->url;
    s->req.headers = (const char *const *)s->headers;
    s->req.n_headers = s->n_headers;
    s->req.body = s->body;
    s->req.body_len = len;
    s->req.done = on_answer;
    s->req.data = s;
    if (rc == 0)
        rc = outbound_send(d->cfg.outbound, &s->req);
    if (rc < 0)
        finish(s, false, false, 0, 0, err_name(rc), NULL, 0, -1);
}

/* ---- the thread ---- */

/* Send what is due; returns after one pass. */
static void scan(struct deliverer *d)
{
    struct outbox_row rows[SCAN_MAX];
    int n = 0;
    int64_t now = time_now_ms();
    pthread_mutex_lock(&d->lock);
    strset_release(&d->done_before);
    d->done_before = d->done_now; /* answered before this scan's read: still guard this once */
    strset_init(&d->done_now);
    pthread_mutex_unlock(&d->lock);
    if (store_outbox_due(d->cfg.store, now, SCAN_MAX, rows, &n) < 0) {
        pthread_mutex_lock(&d->lock);
        d->wake_at = now + 1000;
        pthread_mutex_unlock(&d->lock);
        return;
    }
    for (int i = 0; i < n; i++) {
        struct outbox_row *r = &rows[i];
        char key[KEY_MAX], id[24];
        row_key(r, key);
        id_text(r->id, id, sizeof(id));
        pthread_mutex_lock(&d->lock);
        bool go = d->in_flight < d->cfg.max_in_flight && !strset_has(&d->rows, id) &&
                  !strset_has(&d->done_now, id) && !strset_has(&d->done_before, id) &&
                  !strset_has(&d->sending, key) &&
                  (r->attempts > 0 || !strset_has(&d->backoff, key));
        if (go && (strset_add(&d->sending, key) < 0 || strset_add(&d->rows, id) < 0)) {
            strset_remove(&d->sending, key);
            go = false;
        }
        if (go)
            d->in_flight++;
        pthread_mutex_unlock(&d->lock);
        struct send *s = go ? calloc(1, sizeof(*s)) : NULL;
        if (go && s == NULL) {
            pthread_mutex_lock(&d->lock);
            strset_remove(&d->sending, key);
            strset_remove(&d->rows, id);
            d->in_flight--;
            pthread_mutex_unlock(&d->lock);
        }
        if (s) {
            s->d = d;
            s->row = *r;
            r->last_error = NULL; /* moved into s */
            memcpy(s->key, key, sizeof(s->key));
            send_row(d, s);
        }
        outbox_row_release(r);
    }
    /* Rows not due yet: wake for the earliest (rows due but held back wake
     * us themselves: an answer, a retry coming due, a circuit's pause). */
    int64_t next = 0;
    if (store_outbox_next(d->cfg.store, now, &next) == 0 && next > 0) {
        pthread_mutex_lock(&d->lock);
        if (d->wake_at == 0 || next < d->wake_at)
            d->wake_at = next;
        pthread_mutex_unlock(&d->lock);
    }
}

/* Circuits are checked where the URL is known: a row to an open endpoint waits. */
static void *deliverer_main(void *arg)
{
    struct deliverer *d = arg;
    pthread_mutex_lock(&d->lock);
    while (!d->stopping) {
        int64_t now = time_now_ms();
        bool due = d->wake_at && d->wake_at <= now;
        if (!d->kicked && !due) {
            if (d->wake_at) {
                struct timespec ts = {.tv_sec = d->wake_at / 1000,
                                      .tv_nsec = (d->wake_at % 1000) * 1000000};
                pthread_cond_timedwait(&d->cond, &d->lock, &ts);
            } else {
                pthread_cond_wait(&d->cond, &d->lock);
            }
            continue;
        }
        d->kicked = false;
        if (due)
            d->wake_at = 0;
        pthread_mutex_unlock(&d->lock);
        scan(d);
        pthread_mutex_lock(&d->lock);
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

/* ---- start and stop ---- */

static void add_backoff(void *arg, const char *job_id, const char *dest, int64_t next_at_ms)
{
    struct deliverer *d = arg;
    if (d->wake_at == 0 || next_at_ms < d->wake_at)
        d->wake_at = next_at_ms; /* the thread is not running yet */
    char key[KEY_MAX];
    snprintf(key, sizeof(key), "%s|%s", job_id, dest);
    if (strset_add(&d->backoff, key) < 0)
        log_printf(LOG_ERROR, "out of memory: webhook order may slip for %s", key);
}

int deliverer_start(const struct deliverer_config *cfg, struct deliverer **out)
{
    struct deliverer *d = calloc(1, sizeof(*d));
    struct errmsg err = {.field = ""};
    if (d == NULL)
        return -DRV_ENOMEM;
    d->cfg = *cfg;
    int rc = sign_secret_parse(cfg->webhook_secret, &d->job_key, &err);
    strset_init(&d->sending);
    strset_init(&d->backoff);
    strset_init(&d->rows);
    strset_init(&d->done_now);
    strset_init(&d->done_before);
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->cond, NULL);
    /* Rows waiting for a retry hold back their successors, also after a restart. */
    if (rc == 0)
        rc = store_outbox_backoff(cfg->store, add_backoff, d);
    d->kicked = true; /* a first look at what is due */
    if (rc == 0 && pthread_create(&d->thread, NULL, deliverer_main, d) != 0)
        rc = -DRV_EINTERNAL;
    if (rc < 0) {
        log_printf(LOG_ERROR, "cannot start the deliverer: %s",
                   err.text[0] ? err.text : err_name(rc));
        strset_release(&d->sending);
        strset_release(&d->backoff);
        strset_release(&d->rows);
        strset_release(&d->done_now);
        strset_release(&d->done_before);
        pthread_mutex_destroy(&d->lock);
        pthread_cond_destroy(&d->cond);
        free(d);
        return rc;
    }
    pthread_setname_np(d->thread, "drover-deliver");
    *out = d;
    return 0;
}

void deliverer_kick(struct deliverer *d)
{
    pthread_mutex_lock(&d->lock);
    d->kicked = true;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

void deliverer_stop(struct deliverer *d)
{
    if (d == NULL)
        return;
    pthread_mutex_lock(&d->lock);
    bool running = !d->stopping;
    d->stopping = true;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->lock);
    if (running)
        pthread_join(d->thread, NULL);
}

void deliverer_free(struct deliverer *d)
{
    if (d == NULL)
        return;
    deliverer_stop(d);
    while (d->circuits) {
        struct circuit *c = d->circuits;
        d->circuits = c->next;
        free(c);
    }
    strset_release(&d->sending);
    strset_release(&d->backoff);
    strset_release(&d->rows);
    strset_release(&d->done_now);
    strset_release(&d->done_before);
    OPENSSL_cleanse(&d->job_key, sizeof(d->job_key));
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->cond);
    free(d);
}

/* ---- the schedule ---- */

int deliverer_parse_schedule(const char *text, struct deliverer_config *cfg, struct errmsg *err)
{
    int n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        double v = strtod(p, &end);
        int64_t unit = 0;
        if (end == p || v < 0)
            break;
        if (strncmp(end, "ms", 2) == 0)
            unit = 1, end += 2;
        else if (*end == 's')
            unit = 1000, end++;
        else if (*end == 'm')
            unit = 60000, end++;
        else if (*end == 'h')
            unit = 3600000, end++;
        if (unit == 0 || n == DELIVER_SCHEDULE_MAX || (*end != ',' && *end != '\0'))
            return errmsg_set(err, -DRV_ECONFIG,
                              "'%.60s' is not a retry schedule such as 5s,30s,2m,10m (at most %d "
                              "delays of ms, s, m or h)",
                              text, DELIVER_SCHEDULE_MAX);
        cfg->schedule_ms[n++] = (int64_t)(v * (double)unit);
        p = *end == ',' ? end + 1 : end;
    }
    if (n == 0 || *p)
        return errmsg_set(err, -DRV_ECONFIG, "'%.60s' is not a retry schedule such as 5s,30s,2m",
                          text);
    cfg->n_schedule = n;
    return 0;
}

/* ---- redelivery ---- */

int deliver_requeue(struct write_ctx *ctx, int64_t id, struct errmsg *err)
{
    struct outbox_row r;
    int rc = store_outbox_get(ctx->store, id, &r);
    if (rc == -DRV_ENOT_FOUND)
        return errmsg_set(err, rc, "no delivery %lld", (long long)id);
    if (rc < 0)
        return rc;
    if (strcmp(r.state, "pending") == 0) {
        outbox_row_release(&r);
        return 0; /* already on its way; it goes now */
    }
    if (strcmp(r.state, "delivered") == 0 && r.attempts > 0) {
        /* Its successful try lived in the row: log it before the row moves on. */
        struct delivery_attempt last = {.n = r.attempts,
                                        .at_ms = r.updated_at_ms,
                                        .status = r.last_status,
                                        .latency_ms = r.last_latency_ms};
        rc = store_delivery_attempt_insert(ctx->store, r.id, &last);
    }
    snprintf(r.state, sizeof(r.state), "pending");
    r.next_at_ms = ctx->now_ms;
    r.updated_at_ms = ctx->now_ms;
    if (rc == 0)
        rc = store_outbox_update(ctx->store, &r);
    outbox_row_release(&r);
    return rc;
}
