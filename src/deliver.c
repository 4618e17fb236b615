/*
 * deliver.c - send the outbox.
 *
 * Two paths (docs/adr/0015-outbox-one-row-per-event.md):
 *
 * The event path carries nearly everything. Each queued event
 * (outbox_events) is read once, by id after a cursor kept in memory,
 * together with its job; its destinations are computed, its body rendered
 * once, and it goes to every destination at once. When each destination
 * has an outcome, one background write op settles the event: a row per
 * destination (delivered, pending for its retry, or dead) and the event's
 * row deleted. A crash before that sends the event again: at least once.
 *
 * The row path sends pending rows: retries, redeliveries, and event sends
 * that had to wait (below). It finds due rows by next_at, sends each, and
 * each answer goes through the writer as the next state of its row.
 *
 * Order per job and destination (a key): one send at a time. An event send
 * whose key has another event send out waits behind it in memory and goes
 * when that one is answered. A key with pending rows (`held`) sends its new
 * events through the row path instead: they are written as pending rows,
 * and the row path takes only the first pending row of a key, by seq.
 */
#include "deliver.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "artifacts.h"
#include "job_json.h"
#include "job_ops_internal.h"
#include "json_writer.h"
#include "log.h"
#include "outbox.h"
#include "policy_cache.h"
#include "sign.h"
#include "strmap.h"
#include "sub_ops.h"
#include "subscriptions.h"
#include "timeutil.h"
#include "util.h"

#define SCAN_MAX        256 /* pending rows read at once */
#define EVENTS_MAX      64  /* queued events read at once */
#define BUSY_WINDOW_MS  100 /* the job path is busy if it committed within this */
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
    bool events_kicked, rows_kicked, stopping;
    bool events_blocked; /* the event path stopped at max_in_flight */
    bool events_paced;   /* the event path waits for events_at (pacing, or a failure) */
    int64_t events_at;   /* when the event path may go again, while events_paced */
    double tokens;       /* the pace's bucket (the thread's own) */
    int64_t tokens_at;
    int64_t wake_at; /* the row path's next due time; 0: none known */
    int in_flight;
    int64_t cursor; /* the last queued event sent */
    bool rewound;   /* the cursor went back (an event's record failed): drop the batch */
    /* Queued events read but not sent yet (the thread's own): the pace and
     * max_in_flight stop a batch part-way, and its rest is sent from here
     * when they allow instead of being read again. */
    struct outbox_event batch[EVENTS_MAX];
    int batch_n, batch_i;
    struct strmap sending;   /* key -> its send out: an event send, or NULL for a row's */
    struct strmap held;      /* key -> how many pending rows it has (intptr_t) */
    struct strmap unwritten; /* key -> how many of those are not in the store yet */
    struct strmap rows;      /* outbox ids in flight on the row path, as text */
    /* Outbox ids answered since the last scan began, and during the one
     * before: a scan's read may predate the answer's commit, so it would
     * see the row still pending. Two generations are enough: a scan that
     * began after the commit reads the row as it is. */
    struct strmap done_now, done_before;
    /* Outbox ids whose answer the store failed to record: still pending
     * and due, but not sent again before stalled_until (then forgotten). */
    struct strmap stalled;
    int64_t stalled_until;
    struct circuit *circuits;
    char public_url[1100]; /* set once by deliverer_set_public_url(); "" until then */
};

/* How a send ended. */
struct answer {
    bool ok;
    bool dead_now; /* nowhere to send it: attempt.error says why */
    struct delivery_attempt attempt;
    int retry_after_s;
    char endpoint[ENDPOINT_MAX];
    /* out, from the writer: what the row became */
    bool scheduled;
    int64_t next_at;
    struct sub disabled; /* a subscription this answer disabled (410), for the cache */
    bool has_disabled;
};

/* One destination's outcome on the event path. */
enum outcome_kind { OUT_OPEN, OUT_DELIVERED, OUT_FAILED, OUT_DEFERRED };

struct outcome {
    enum outcome_kind kind;
    outbox_dest dest;
    int64_t at_ms;
    struct answer answer; /* OUT_DELIVERED and OUT_FAILED */
};

/* A queued event on its way to its destinations. */
struct event_send {
    struct deliverer *d;
    int64_t id; /* in outbox_events */
    char job_id[ULID_LEN + 1];
    int64_t seq;
    int64_t at_ms; /* the event's time: its rows' created_at */
    char *webhook_url;
    char *body;
    size_t body_len;
    int n, left; /* outcomes; still open (under d->lock) */
    struct outcome *out;
};

/* One send: of an event to one destination, or of a pending row. */
struct send {
    struct outbound_request req;
    struct deliverer *d;
    struct event_send *ev; /* the event path; NULL on the row path */
    int slot;              /* ev->out[slot] */
    struct outbox_row row; /* the row path's row; on the event path job_id, seq and dest */
    char key[KEY_MAX];
    char endpoint[ENDPOINT_MAX];
    char *url;
    char *body; /* the row path's; the event path's is ev->body */
    char *headers[4];
    size_t n_headers;
    struct send *next; /* event sends of the same key waiting behind this one */
};

/* A pending row's answer, applied by the writer. */
struct result_op {
    struct write_op op;
    struct deliverer *d;
    int64_t id;
    int64_t sent_updated_at; /* the row's updated_at when it was read to be sent */
    char key[KEY_MAX];
    struct answer a;
    bool finished; /* out: delivered or dead */
};

/* An event with every outcome, settled by the writer (in the background). */
struct settle_op {
    struct write_op op;
    struct event_send *ev;
};

/* ---- small helpers ---- */

static void key_of(const char *job_id, const char *dest, char *out)
{
    snprintf(out, KEY_MAX, "%s|%s", job_id, dest);
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

static void answer_release(struct answer *a)
{
    delivery_attempt_release(&a->attempt);
    if (a->has_disabled)
        sub_release(&a->disabled);
    a->has_disabled = false;
}

/* Wake the thread's row path at at (with d->lock held). */
static void wake_at_locked(struct deliverer *d, int64_t at)
{
    if (d->wake_at == 0 || at < d->wake_at)
        d->wake_at = at;
    pthread_cond_signal(&d->cond);
}

/* The event path goes again at at, not before (with d->lock held). */
static void events_wait_locked(struct deliverer *d, int64_t at)
{
    if (!d->events_paced || at < d->events_at)
        d->events_at = at;
    d->events_paced = true;
    pthread_cond_signal(&d->cond);
}

/*
 * A send is over (with d->lock held). An event path stopped at
 * max_in_flight reads on once half the room is free again.
 */
static void in_flight_end_locked(struct deliverer *d)
{
    if (--d->in_flight < d->cfg.max_in_flight / 2 + 1 && d->events_blocked) {
        d->events_blocked = false;
        d->events_kicked = true;
        pthread_cond_signal(&d->cond);
    }
}

/* ---- held keys (called with d->lock held) ---- */

static int count_of(struct strmap *m, const char *key)
{
    return (int)(intptr_t)strmap_get(m, key);
}

static void count_add(struct strmap *m, const char *key, int delta)
{
    int n = count_of(m, key) + delta;
    if (n <= 0)
        strmap_remove(m, key);
    else if (strmap_put(m, key, (void *)(intptr_t)n) < 0)
        log_printf(LOG_ERROR, "out of memory: webhook order may slip for %s", key);
}

static int held_count(struct deliverer *d, const char *key)
{
    return count_of(&d->held, key);
}

static void held_add(struct deliverer *d, const char *key, int delta)
{
    count_add(&d->held, key, delta);
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
    if (probe) { /* rows held back for the probe may go, or learn the new pause */
        d->rows_kicked = true;
        pthread_cond_signal(&d->cond);
    }
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

/* ---- bodies ---- */

/* The body of a delivery: the event with its job as it was then. */
static char *render_body(struct deliverer *d, const struct job *job, const struct job_event *ev,
                         size_t *len)
{
    json_t *error = json_object_get(ev->data, "error");
    bool succeeded = strcmp(ev->type, "job.succeeded") == 0;
    const char *state = job_state_name(ev->state);
    char stack[2048];
    struct json_writer w;
    json_writer_init(&w, stack, sizeof(stack));
    json_writer_object_begin(&w);
    json_writer_key(&w, "type");
    json_writer_string(&w, ev->type);
    json_writer_key(&w, "timestamp");
    json_writer_time(&w, ev->at_ms);
    json_writer_key(&w, "data");
    json_writer_object_begin(&w);
    json_writer_key(&w, "job");
    json_writer_object_begin(&w);
    json_writer_key(&w, "id");
    json_writer_string(&w, job->id);
    json_writer_key(&w, "queue");
    json_writer_string(&w, job->queue);
    json_writer_key(&w, "state");
    json_writer_string(&w, state ? state : "");
    json_writer_key(&w, "previous_state");
    json_writer_string(&w, job_state_name(ev->prev_state));
    json_writer_key(&w, "step");
    json_writer_string(&w, ev->step);
    json_writer_key(&w, "attempt");
    json_writer_int(&w, ev->attempt);
    json_writer_key(&w, "error");
    json_writer_json(&w, error, "null");
    json_writer_key(&w, "result");
    json_writer_json(&w, succeeded ? job->result : NULL, "null");
    json_writer_key(&w, "created_at");
    json_writer_time(&w, job->created_at_ms);
    json_writer_key(&w, "updated_at");
    json_writer_time(&w, ev->at_ms);
    if (succeeded) {
        /* Its artifacts as they are now (artifacts.h: inline up to the queue's budget). */
        const struct policy *p = policy_cache_acquire(d->cfg.policies, job->queue);
        json_t *artifacts = NULL;
        int rc = artifacts_event_json(d->cfg.store, d->cfg.data_dir, d->public_url, job->id,
                                      p->artifact_inline_max, &artifacts);
        policy_cache_unref(d->cfg.policies, p);
        if (rc < 0) /* a damaged file must not hold the whole outbox back */
            log_printf(LOG_WARN, "job %s: its artifacts are missing from job.succeeded: %s",
                       job->id, err_name(rc));
        json_writer_key(&w, "artifacts");
        json_writer_json(&w, rc < 0 ? NULL : artifacts, "null");
        json_decref(artifacts);
    }
    json_writer_object_end(&w);
    json_writer_key(&w, "seq");
    json_writer_int(&w, ev->seq);
    json_writer_key(&w, "event");
    json_writer_json(&w, ev->data, "null");
    json_writer_object_end(&w);
    json_writer_object_end(&w);
    return json_writer_finish(&w, len);
}

/* ---- results ---- */

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

/*
 * A failed try of r, a pending row in the store, answered at at_ms: log it,
 * then schedule the next try or let the row die (dead rows become
 * job.delivery_dead events; a 410 disables its subscription). again_now: a
 * redeliver came while the try was out, so the next try is now, not the
 * schedule's (the endpoint's Retry-After still wins).
 */
static int record_failure(struct write_ctx *ctx, struct deliverer *d, struct outbox_row *r,
                          struct answer *a, int64_t at_ms, bool again_now)
{
    r->attempts++;
    a->attempt.n = r->attempts;
    a->attempt.at_ms = at_ms;
    r->updated_at_ms = at_ms;
    r->last_status = a->attempt.status;
    r->last_latency_ms = a->attempt.latency_ms;
    free(r->last_error);
    r->last_error = a->attempt.error ? strdup(a->attempt.error) : NULL;
    char why[160] = "";
    if (a->dead_now) {
        snprintf(why, sizeof(why), "%s", a->attempt.error ? a->attempt.error : "undeliverable");
    } else if (a->attempt.status == 410) {
        snprintf(why, sizeof(why), "the endpoint answered 410 Gone");
    } else if (at_ms - r->created_at_ms >= d->cfg.give_up_ms) {
        snprintf(why, sizeof(why), "undelivered after %d attempts over %lld s", r->attempts,
                 (long long)((at_ms - r->created_at_ms) / 1000));
    } else {
        int i = r->attempts - 1 < d->cfg.n_schedule ? r->attempts - 1 : d->cfg.n_schedule - 1;
        int64_t delay = again_now ? 0 : (int64_t)((double)d->cfg.schedule_ms[i] * jitter());
        if ((a->attempt.status == 429 || a->attempt.status == 503) && a->retry_after_s >= 0) {
            int64_t ra = (int64_t)a->retry_after_s * 1000;
            delay = ra < RETRY_AFTER_MAX ? ra : RETRY_AFTER_MAX;
        }
        r->next_at_ms = at_ms + delay;
        a->scheduled = true;
        a->next_at = r->next_at_ms;
    }
    if (why[0])
        snprintf(r->state, sizeof(r->state), "dead");
    int rc = store_delivery_attempt_insert(ctx->store, r->id, &a->attempt);
    if (rc == 0)
        rc = store_outbox_update(ctx->store, r);
    if (rc == 0 && why[0])
        rc = record_dead(ctx, r, why);
    if (rc == 0 && a->attempt.status == 410 && !a->dead_now &&
        strcmp(r->dest, OUTBOX_DEST_JOB) != 0) {
        char reason[ENDPOINT_MAX + 32];
        snprintf(reason, sizeof(reason), "%s answered 410 Gone", a->endpoint);
        rc = sub_ops_disable(ctx, r->dest, reason, &a->disabled);
        a->has_disabled = rc == 0;
        if (rc == -DRV_ENOT_FOUND)
            rc = 0; /* deleted meanwhile */
    }
    return rc < 0 && rc != -DRV_ENOMEM ? -DRV_ESTORE : rc;
}

/* A disabled subscription goes into the cache too (after the commit). */
static void note_disabled(struct deliverer *d, struct answer *a)
{
    if (a->has_disabled && d->cfg.subs && sub_cache_put(d->cfg.subs, &a->disabled) < 0)
        log_printf(LOG_ERROR, "out of memory: subscription %s disabled in the store only",
                   a->disabled.id);
}

/* The row path: the answer to a pending row. */
static int result_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct result_op *o = container_of(op, struct result_op, op);
    if (o->a.ok) {
        /* The common case, in one statement: the row itself logs its last attempt. */
        int rc = store_outbox_delivered(ctx->store, o->id, ctx->now_ms, o->a.attempt.status,
                                        o->a.attempt.latency_ms);
        o->finished = rc == 0;
        return rc == -DRV_ENOT_FOUND ? 0 : rc; /* redelivered and answered meanwhile, or gone */
    }
    struct outbox_row r;
    int rc = store_outbox_get(ctx->store, o->id, &r);
    if (rc < 0)
        return rc == -DRV_ENOT_FOUND ? 0 : rc;
    if (strcmp(r.state, "pending") == 0) {
        /* deliver_requeue() touched it while it was out: asked for again. */
        bool again_now = r.updated_at_ms != o->sent_updated_at;
        rc = record_failure(ctx, o->d, &r, &o->a, ctx->now_ms, again_now);
        o->finished = !o->a.scheduled;
    } /* else redelivered and answered meanwhile, or gone */
    outbox_row_release(&r);
    return rc;
}

static void result_done(struct write_op *op)
{
    struct result_op *o = container_of(op, struct result_op, op);
    struct deliverer *d = o->d;
    char id[24];
    id_text(o->id, id, sizeof(id));
    pthread_mutex_lock(&d->lock);
    strmap_remove(&d->sending, o->key);
    strmap_remove(&d->rows, id);
    if (op->result < 0) { /* not recorded: the row is as it was, and due */
        d->stalled_until = time_now_ms() + 1000;
        if (strmap_put(&d->stalled, id, NULL) < 0)
            log_printf(LOG_ERROR, "out of memory: delivery %s may be sent again at once", id);
    } else if (strmap_put(&d->done_now, id, NULL) < 0) {
        /* A scan that read the row before this commit must not send it again. */
        log_printf(LOG_ERROR, "out of memory: delivery %s may be sent twice", id);
    }
    in_flight_end_locked(d);
    if (op->result == 0 && o->finished)
        held_add(d, o->key, -1);
    if (op->result == 0 && o->a.scheduled)
        wake_at_locked(d, o->a.next_at);
    else if (op->result < 0)
        wake_at_locked(d, time_now_ms() + 1000); /* the store failed: the row is still due */
    circuit_record(d, o->a.endpoint, o->a.ok, time_now_ms());
    if (op->result == 0)
        note_disabled(d, &o->a);
    d->rows_kicked = true;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->lock);
    answer_release(&o->a);
    free(o);
}

/* The event path: every destination has its outcome; write them, forget the event. */
static int settle_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct event_send *ev = container_of(op, struct settle_op, op)->ev;
    int rc = 0;
    for (int i = 0; i < ev->n && rc == 0; i++) {
        struct outcome *o = &ev->out[i];
        struct outbox_row r = {.seq = ev->seq,
                               .next_at_ms = o->at_ms,
                               .created_at_ms = ev->at_ms,
                               .updated_at_ms = o->at_ms};
        snprintf(r.job_id, sizeof(r.job_id), "%s", ev->job_id);
        snprintf(r.dest, sizeof(r.dest), "%s", o->dest);
        snprintf(r.state, sizeof(r.state), "%s",
                 o->kind == OUT_DELIVERED ? "delivered" : "pending");
        if (o->kind == OUT_DELIVERED) {
            r.attempts = 1;
            r.last_status = o->answer.attempt.status;
            r.last_latency_ms = o->answer.attempt.latency_ms;
        }
        rc = store_outbox_insert(ctx->store, &r);
        if (rc == 0 && o->kind == OUT_FAILED)
            rc = record_failure(ctx, ev->d, &r, &o->answer, o->at_ms, false);
        outbox_row_release(&r);
    }
    if (rc == 0)
        rc = store_outbox_event_delete(ctx->store, ev->id);
    return rc < 0 && rc != -DRV_ENOMEM ? -DRV_ESTORE : rc;
}

/* Does outcome o leave a pending row (counted in held when it was decided)? */
static bool leaves_pending(const struct outcome *o)
{
    return o->kind == OUT_DEFERRED ||
           (o->kind == OUT_FAILED && !o->answer.dead_now && o->answer.attempt.status != 410);
}

static void event_send_free(struct event_send *ev)
{
    for (int i = 0; i < ev->n; i++)
        answer_release(&ev->out[i].answer);
    free(ev->out);
    free(ev->body);
    free(ev->webhook_url);
    free(ev);
}

static void settle_done(struct write_op *op)
{
    struct settle_op *so = container_of(op, struct settle_op, op);
    struct event_send *ev = so->ev;
    struct deliverer *d = ev->d;
    pthread_mutex_lock(&d->lock);
    bool rows = false;
    for (int i = 0; i < ev->n; i++) {
        struct outcome *o = &ev->out[i];
        char key[KEY_MAX];
        key_of(ev->job_id, o->dest, key);
        if (leaves_pending(o)) {
            count_add(&d->unwritten, key, -1);
            rows = rows || count_of(&d->unwritten, key) == 0; /* its rows may go now */
        }
        if (op->result < 0) {
            if (leaves_pending(o))
                held_add(d, key, -1); /* its row was not written */
            continue;
        }
        if (leaves_pending(o) && o->kind == OUT_FAILED && !o->answer.scheduled)
            held_add(d, key, -1); /* it died at once after all */
        if (o->kind == OUT_DEFERRED)
            rows = true;
        if (o->answer.scheduled)
            wake_at_locked(d, o->answer.next_at);
        note_disabled(d, &o->answer);
    }
    if (op->result < 0) {
        /* Nothing was written: the event is still queued; read it again. */
        log_printf(LOG_ERROR,
                   "cannot record the deliveries of %s event %lld: %s (sending it "
                   "again)",
                   ev->job_id, (long long)ev->seq, err_name(op->result));
        /* Also when the pump has not moved the cursor past it yet: it must not now. */
        if (ev->id <= d->cursor)
            d->cursor = ev->id - 1;
        d->rewound = true;
        events_wait_locked(d, time_now_ms() + 1000);
    }
    if (rows) {
        d->rows_kicked = true;
        pthread_cond_signal(&d->cond);
    }
    pthread_mutex_unlock(&d->lock);
    event_send_free(ev);
    free(so);
}

static void settle(struct event_send *ev)
{
    struct settle_op *so = calloc(1, sizeof(*so));
    if (so) {
        so->op.apply = settle_apply;
        so->op.done = settle_done;
        so->ev = ev;
        if (writer_submit_background(ev->d->cfg.writer, &so->op) == 0)
            return;
    }
    /* Out of memory, or closing: the event stays queued and goes again at the next start. */
    log_printf(so ? LOG_INFO : LOG_ERROR, "deliveries of %s event %lld not recorded: %s",
               ev->job_id, (long long)ev->seq, so ? "shutting down" : "out of memory");
    free(so);
    event_send_free(ev);
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

/* An answer's text for the log: the first bytes, no NULs or controls. */
static char *excerpt_of(const char *excerpt, size_t len)
{
    size_t n = len < DELIVER_EXCERPT_MAX ? len : DELIVER_EXCERPT_MAX;
    char *text = len ? malloc(n + 1) : NULL;
    if (text == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        text[i] = (unsigned char)excerpt[i] < 0x20 ? ' ' : excerpt[i];
    text[n] = '\0';
    return text;
}

static void answer_fill(struct answer *a, const struct send *s, bool ok, bool dead_now, int status,
                        int64_t latency_ms, const char *error, const char *excerpt,
                        size_t excerpt_len, int retry_after_s)
{
    a->ok = ok;
    a->dead_now = dead_now;
    a->retry_after_s = retry_after_s;
    a->attempt.status = status;
    a->attempt.latency_ms = latency_ms;
    a->attempt.error = error && error[0] ? strdup(error) : NULL;
    a->attempt.excerpt = excerpt_of(excerpt, excerpt_len);
    memcpy(a->endpoint, s->endpoint, sizeof(a->endpoint));
}

/* The row path: hand a send's answer to the writer; frees s. */
static void finish_row(struct send *s, bool ok, bool dead_now, int status, int64_t latency_ms,
                       const char *error, const char *excerpt, size_t excerpt_len,
                       int retry_after_s)
{
    struct deliverer *d = s->d;
    struct result_op *o = calloc(1, sizeof(*o));
    if (o) {
        o->op.apply = result_apply;
        o->op.done = result_done;
        o->d = d;
        o->id = s->row.id;
        o->sent_updated_at = s->row.updated_at_ms;
        memcpy(o->key, s->key, sizeof(o->key));
        answer_fill(&o->a, s, ok, dead_now, status, latency_ms, error, excerpt, excerpt_len,
                    retry_after_s);
    }
    char id[24];
    id_text(s->row.id, id, sizeof(id));
    char key[KEY_MAX];
    memcpy(key, s->key, sizeof(key));
    send_free(s);
    if (o && writer_submit(d->cfg.writer, &o->op) == 0)
        return;
    /* Out of memory or closing: the row stays pending, and goes again later. */
    if (o == NULL)
        log_printf(LOG_ERROR, "out of memory recording delivery %s", id);
    pthread_mutex_lock(&d->lock);
    strmap_remove(&d->sending, key);
    strmap_remove(&d->rows, id);
    in_flight_end_locked(d);
    if (o == NULL)
        wake_at_locked(d, time_now_ms() + 1000);
    pthread_mutex_unlock(&d->lock);
    if (o) {
        answer_release(&o->a);
        free(o);
    }
}

static void send_event(struct deliverer *d, struct send *s);

/*
 * The event path: s has its outcome. The next event send of its key goes
 * when this one is delivered or dead; when it must be retried, the sends
 * waiting behind it become pending rows behind its own. Frees s.
 */
static void finish_event(struct send *s, enum outcome_kind kind, bool dead_now, int status,
                         int64_t latency_ms, const char *error, const char *excerpt,
                         size_t excerpt_len, int retry_after_s)
{
    struct deliverer *d = s->d;
    struct event_send *ev = s->ev;
    struct outcome *o = &ev->out[s->slot];
    o->at_ms = time_now_ms();
    if (kind != OUT_DEFERRED)
        answer_fill(&o->answer, s, kind == OUT_DELIVERED, dead_now, status, latency_ms, error,
                    excerpt, excerpt_len, retry_after_s);
    struct event_send *settled = NULL;
    struct send *next, *go = NULL;
    pthread_mutex_lock(&d->lock);
    /* Read under the lock: dispatch_event() appends to a key's chain while
     * holding it, and a send appended after an unlocked read was lost. */
    next = s->next;
    o->kind = kind;
    bool pending = leaves_pending(o);
    if (pending) { /* a pending row, written when the event settles */
        held_add(d, s->key, +1);
        count_add(&d->unwritten, s->key, +1);
    }
    if (kind != OUT_DEFERRED)
        circuit_record(d, s->endpoint, kind == OUT_DELIVERED, o->at_ms);
    if (--ev->left == 0)
        settled = ev;
    in_flight_end_locked(d);
    if (strmap_get(&d->sending, s->key) == s) { /* else it never went (deferred) */
        if (next && !pending) {
            strmap_put(&d->sending, s->key, next); /* replaces: cannot fail */
            go = next;
        } else {
            strmap_remove(&d->sending, s->key);
            if (!pending && held_count(d, s->key) > 0) { /* its pending rows may go now */
                d->rows_kicked = true;
                pthread_cond_signal(&d->cond);
            }
        }
    }
    pthread_mutex_unlock(&d->lock);
    send_free(s);
    /* Settled before the sends behind it: background ops are written in the
     * order they are queued, so a job's delivery ids follow its events. */
    if (settled)
        settle(settled);
    /* The sends behind a row that now waits for its retry wait as rows too. */
    while (next && pending) {
        struct send *w = next;
        next = w->next;
        w->next = NULL;
        finish_event(w, OUT_DEFERRED, false, 0, 0, NULL, NULL, 0, -1);
    }
    if (go)
        send_event(d, go);
}

/* On the outbound engine's thread. */
static void on_answer(struct outbound_request *req, const struct outbound_result *res)
{
    struct send *s = req->data;
    bool ok = res->rc == 0 && res->status >= 200 && res->status < 300;
    const char *error = res->rc ? res->error : NULL;
    if (s->ev)
        finish_event(s, ok ? OUT_DELIVERED : OUT_FAILED, false, res->status, res->latency_ms, error,
                     res->excerpt, res->excerpt_len, res->retry_after_s);
    else
        finish_row(s, ok, false, res->status, res->latency_ms, error, res->excerpt,
                   res->excerpt_len, res->retry_after_s);
}

/* Signing keys and URL of s's destination; false (why says why) when it is gone or off. */
static bool destination(struct deliverer *d, struct send *s, const char *webhook_url,
                        struct sign_key *keys, size_t *n_keys, char *why, size_t why_size)
{
    *n_keys = 0;
    if (strcmp(s->row.dest, OUTBOX_DEST_JOB) == 0) {
        if (webhook_url == NULL) {
            snprintf(why, why_size, "the job has no webhook_url");
            return false;
        }
        s->url = strdup(webhook_url);
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
    if (ok)
        s->url = strdup(sub.url);
    sub_release(&sub);
    return ok && s->url && *n_keys > 0;
}

/* Sign body per Standard Webhooks with keys and hand s to the outbound engine. */
static int sign_and_send(struct deliverer *d, struct send *s, const char *body, size_t len,
                         const struct sign_key *keys, size_t n_keys)
{
    char msg_id[64], line[400], sig[2][SIGN_WEBHOOK_SIG_LEN];
    int64_t ts = time_now_ms() / 1000;
    int rc = 0;
    snprintf(msg_id, sizeof(msg_id), "%s_%lld", s->row.job_id, (long long)s->row.seq);
    for (size_t i = 0; i < n_keys && rc == 0; i++)
        rc = sign_webhook(&keys[i], msg_id, ts, body, len, sig[i]);
    snprintf(line, sizeof(line), "webhook-signature: %s%s%s", sig[0], n_keys > 1 ? " " : "",
             n_keys > 1 ? sig[1] : "");
    char id_line[96], ts_line[48];
    snprintf(id_line, sizeof(id_line), "webhook-id: %s", msg_id);
    snprintf(ts_line, sizeof(ts_line), "webhook-timestamp: %lld", (long long)ts);
    const char *lines[4] = {"Content-Type: application/json", line, id_line, ts_line};
    for (size_t i = 0; i < 4 && rc == 0; i++) {
        if ((s->headers[s->n_headers] = strdup(lines[i])) == NULL)
            rc = -DRV_ENOMEM;
        else
            s->n_headers++;
    }
    s->req.method = "POST";
    s->req.url = s->url;
    s->req.headers = (const char *const *)s->headers;
    s->req.n_headers = s->n_headers;
    s->req.body = body;
    s->req.body_len = len;
    s->req.done = on_answer;
    s->req.data = s;
    return rc == 0 ? outbound_send(d->cfg.outbound, &s->req) : rc;
}

/* May s's endpoint be sent to now (its circuit)? */
static bool endpoint_allows(struct deliverer *d, struct send *s)
{
    endpoint_of(s->url, s->endpoint);
    pthread_mutex_lock(&d->lock);
    bool allowed = circuit_allows(d, s->endpoint, time_now_ms());
    pthread_mutex_unlock(&d->lock);
    return allowed;
}

/* The event path: send s (its key's turn). Any thread. */
static void send_event(struct deliverer *d, struct send *s)
{
    struct event_send *ev = s->ev;
    struct sign_key keys[2];
    size_t n_keys = 0;
    char why[128] = "";
    if (!destination(d, s, ev->webhook_url, keys, &n_keys, why, sizeof(why))) {
        /* Nowhere to send it: dead at once (its log says why). */
        s->endpoint[0] = '\0';
        finish_event(s, OUT_FAILED, true, 0, 0, why[0] ? why : "out of memory", NULL, 0, -1);
        return;
    }
    if (!endpoint_allows(d, s)) {
        /* The endpoint's circuit is open: the send waits as a pending row. */
        OPENSSL_cleanse(keys, sizeof(keys));
        finish_event(s, OUT_DEFERRED, false, 0, 0, NULL, NULL, 0, -1);
        return;
    }
    int rc = sign_and_send(d, s, ev->body, ev->body_len, keys, n_keys);
    OPENSSL_cleanse(keys, sizeof(keys));
    if (rc < 0)
        finish_event(s, OUT_FAILED, false, 0, 0, err_name(rc), NULL, 0, -1);
}

/* The row path: build and send s's row (claimed: in the sending sets). */
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
    bool ok = rc == 0 && destination(d, s, job.webhook_url, keys, &n_keys, why, sizeof(why));
    if (ok)
        s->body = render_body(d, &job, &events.events[0], NULL);
    if (rc == 0)
        job_release(&job);
    event_list_release(&events);
    if (!ok || s->body == NULL) {
        /* Nowhere to send it: the row is dead at once (its log says why). */
        if (why[0] == '\0')
            snprintf(why, sizeof(why), "%s",
                     rc == -DRV_ENOT_FOUND ? "the job is gone" : err_name(rc ? rc : -DRV_ENOMEM));
        OPENSSL_cleanse(keys, sizeof(keys));
        s->endpoint[0] = '\0';
        finish_row(s, false, true, 0, 0, why, NULL, 0, -1);
        return;
    }
    if (!endpoint_allows(d, s)) {
        /* The endpoint's circuit is open: the row waits, due, for the probe's outcome. */
        OPENSSL_cleanse(keys, sizeof(keys));
        char id[24];
        id_text(s->row.id, id, sizeof(id));
        pthread_mutex_lock(&d->lock);
        strmap_remove(&d->sending, s->key);
        strmap_remove(&d->rows, id);
        in_flight_end_locked(d);
        pthread_mutex_unlock(&d->lock);
        send_free(s);
        return;
    }
    rc = sign_and_send(d, s, s->body, strlen(s->body), keys, n_keys);
    OPENSSL_cleanse(keys, sizeof(keys));
    if (rc < 0)
        finish_row(s, false, false, 0, 0, err_name(rc), NULL, 0, -1);
}

/* ---- the event path ---- */

/*
 * Send queued event e to its n destinations. False when out of memory
 * (read it again later).
 */
static bool dispatch_event(struct deliverer *d, struct outbox_event *e, const outbox_dest *dests,
                           int n)
{
    struct event_send *ev = calloc(1, sizeof(*ev));
    struct send **sends = n ? calloc((size_t)n, sizeof(*sends)) : NULL;
    struct send **waits = n ? calloc((size_t)n, sizeof(*waits)) : NULL;
    if (ev && n)
        ev->out = calloc((size_t)n, sizeof(*ev->out));
    if (ev == NULL || (n && (sends == NULL || waits == NULL || ev->out == NULL))) {
        free(sends);
        free(waits);
        if (ev)
            free(ev->out);
        free(ev);
        return false;
    }
    ev->d = d;
    ev->id = e->id;
    snprintf(ev->job_id, sizeof(ev->job_id), "%s", e->job_id);
    ev->seq = e->seq;
    ev->n = n;
    if (n) {
        ev->at_ms = e->ev.at_ms;
        ev->webhook_url = e->job.webhook_url ? strdup(e->job.webhook_url) : NULL;
        ev->body = render_body(d, &e->job, &e->ev, &ev->body_len);
    }
    bool ok = n == 0 || (ev->body && (ev->webhook_url || e->job.webhook_url == NULL));
    for (int i = 0; i < n && ok; i++) {
        memcpy(ev->out[i].dest, dests[i], sizeof(ev->out[i].dest));
        if ((sends[i] = calloc(1, sizeof(*sends[i]))) == NULL)
            ok = false;
    }
    if (!ok) {
        for (int i = 0; i < n; i++)
            free(sends[i]);
        free(sends);
        free(waits);
        event_send_free(ev);
        return false;
    }
    if (n == 0) { /* the job is gone, or nobody wants the event now */
        settle(ev);
        return true;
    }
    /* Each send goes now, waits behind its key's send, or waits as a pending row. */
    int n_go = 0, n_wait = 0;
    pthread_mutex_lock(&d->lock);
    ev->left = n + 1; /* + 1: not settled before every send has been started */
    for (int i = 0; i < n; i++) {
        struct send *s = sends[i];
        s->d = d;
        s->ev = ev;
        s->slot = i;
        snprintf(s->row.job_id, sizeof(s->row.job_id), "%s", ev->job_id);
        s->row.seq = ev->seq;
        snprintf(s->row.dest, sizeof(s->row.dest), "%s", ev->out[i].dest);
        key_of(ev->job_id, s->row.dest, s->key);
        d->in_flight++;
        bool held = held_count(d, s->key) > 0;
        struct send *head = strmap_get(&d->sending, s->key);
        if (!held && head) {
            while (head->next)
                head = head->next;
            head->next = s;
        } else if (!held && !strmap_has(&d->sending, s->key) &&
                   strmap_put(&d->sending, s->key, s) == 0) {
            sends[n_go++] = s;
        } else {
            waits[n_wait++] = s; /* behind pending rows (or a row's send) */
        }
    }
    pthread_mutex_unlock(&d->lock);
    for (int i = 0; i < n_wait; i++)
        finish_event(waits[i], OUT_DEFERRED, false, 0, 0, NULL, NULL, 0, -1);
    for (int i = 0; i < n_go; i++)
        send_event(d, sends[i]);
    free(waits);
    free(sends);
    pthread_mutex_lock(&d->lock);
    bool settled = --ev->left == 0;
    pthread_mutex_unlock(&d->lock);
    if (settled)
        settle(ev);
    return true;
}

/*
 * The pace: while the job path is busy (it committed within BUSY_WINDOW_MS),
 * at most rate_under_load sends per second start, so webhooks — background
 * work — cannot take the CPU the job path needs; when it is idle they go at
 * full speed. A token bucket holding 20 ms of sends. May n sends start now,
 * busy telling whether the job path is (job_path_busy())? If not, *until
 * says when: once the bucket holds 5 ms of sends or more, so that the thread
 * wakes for a handful of events at a time, not for each.
 */
static bool pace(struct deliverer *d, bool busy, int n, int64_t *until)
{
    double rate = d->cfg.rate_under_load, burst = rate / 50 > 1 ? rate / 50 : 1;
    int64_t now = time_now_ms();
    if (rate <= 0 || !busy) {
        d->tokens = burst;
        d->tokens_at = now;
        return true;
    }
    d->tokens += (double)(now - d->tokens_at) * rate / 1000;
    if (d->tokens > burst)
        d->tokens = burst;
    d->tokens_at = now;
    double need = n < burst ? n : burst; /* a wide event goes once the bucket is full */
    if (d->tokens >= need) {
        d->tokens -= n;
        return true;
    }
    if (need < burst / 4)
        need = burst / 4;
    *until = now + 1 + (int64_t)((need - d->tokens) * 1000 / rate);
    return false;
}

/* Did the job path commit within BUSY_WINDOW_MS? Asked once per batch of events read. */
static bool job_path_busy(struct deliverer *d)
{
    return time_now_ms() - writer_foreground_at(d->cfg.writer) <= BUSY_WINDOW_MS;
}

static void batch_release(struct deliverer *d)
{
    for (int i = 0; i < d->batch_n; i++)
        outbox_event_release(&d->batch[i]);
    d->batch_n = d->batch_i = 0;
}

/*
 * Send queued events after the cursor while there is room and pace: the
 * rest of the batch read before, then batches read anew until one comes
 * back short.
 */
static void pump_events(struct deliverer *d)
{
    static _Thread_local outbox_dest dests[OUTBOX_MAX_DESTS]; /* 41 KB: off the stack */
    bool busy = d->cfg.rate_under_load > 0 && job_path_busy(d);
    bool read_short = false;
    for (;;) {
        pthread_mutex_lock(&d->lock);
        bool room = d->in_flight < d->cfg.max_in_flight;
        d->events_blocked = !room;
        bool rewound = d->rewound;
        d->rewound = false;
        int64_t after = d->cursor;
        pthread_mutex_unlock(&d->lock);
        if (rewound) {
            batch_release(d); /* read again from the cursor */
            read_short = false;
        }
        if (!room)
            return; /* an answer kicks us when there is room again */
        if (d->batch_i == d->batch_n) {
            batch_release(d);
            if (read_short)
                return; /* a submit kicks us */
            if (store_outbox_events(d->cfg.store, after, EVENTS_MAX, d->batch, &d->batch_n) < 0) {
                pthread_mutex_lock(&d->lock);
                events_wait_locked(d, time_now_ms() + 1000); /* again in a second */
                pthread_mutex_unlock(&d->lock);
                return;
            }
            read_short = d->batch_n < EVENTS_MAX;
            if (d->batch_n == 0)
                return;
            busy = d->cfg.rate_under_load > 0 && job_path_busy(d);
        }
        struct outbox_event *e = &d->batch[d->batch_i];
        int n_dests = e->found ? outbox_destinations(d->cfg.subs, &e->job, &e->ev, dests) : 0;
        int64_t until = 0;
        bool held_by_pace = !pace(d, busy, n_dests, &until);
        if (held_by_pace || !dispatch_event(d, e, dests, n_dests)) {
            if (!held_by_pace)
                log_printf(LOG_ERROR, "out of memory sending webhooks: retrying in a second");
            pthread_mutex_lock(&d->lock);
            events_wait_locked(d, held_by_pace ? until : time_now_ms() + 1000);
            pthread_mutex_unlock(&d->lock);
            return; /* the batch's rest waits for then */
        }
        d->batch_i++;
        pthread_mutex_lock(&d->lock);
        if (!d->rewound && e->id > d->cursor)
            d->cursor = e->id;
        pthread_mutex_unlock(&d->lock);
    }
}

/* ---- the row path ---- */

/* Send the pending rows that are due; returns after one pass. */
static void scan_rows(struct deliverer *d)
{
    struct outbox_row rows[SCAN_MAX];
    int n = 0;
    int64_t now = time_now_ms();
    pthread_mutex_lock(&d->lock);
    strmap_release(&d->done_before);
    d->done_before = d->done_now; /* answered before this scan's read: still guard this once */
    strmap_init(&d->done_now);
    if (d->stalled_until <= now) { /* their pause is over */
        strmap_release(&d->stalled);
        strmap_init(&d->stalled);
    }
    pthread_mutex_unlock(&d->lock);
    if (store_outbox_due(d->cfg.store, now, SCAN_MAX, rows, &n) < 0) {
        pthread_mutex_lock(&d->lock);
        wake_at_locked(d, now + 1000); /* again in a second, not at once */
        pthread_mutex_unlock(&d->lock);
        return;
    }
    bool guarded = false;
    for (int i = 0; i < n; i++) {
        struct outbox_row *r = &rows[i];
        char key[KEY_MAX], id[24];
        key_of(r->job_id, r->dest, key);
        id_text(r->id, id, sizeof(id));
        pthread_mutex_lock(&d->lock);
        /* Answered since just before this read: what we read may be stale.
         * The next scan reads it as it is (and is asked for below). */
        bool answered = strmap_has(&d->done_now, id) || strmap_has(&d->done_before, id);
        guarded = guarded || answered;
        /* Its answer was not recorded: again after the pause, woken for. */
        if (strmap_has(&d->stalled, id)) {
            answered = true;
            wake_at_locked(d, d->stalled_until);
        }
        /* Not while an earlier send of its key is out, or its pending row is
         * not written yet (it may be of an earlier event: seq order). */
        bool go = d->in_flight < d->cfg.max_in_flight && !strmap_has(&d->rows, id) && !answered &&
                  !strmap_has(&d->sending, key) && count_of(&d->unwritten, key) == 0;
        if (go && (strmap_put(&d->sending, key, NULL) < 0 || strmap_put(&d->rows, id, NULL) < 0)) {
            strmap_remove(&d->sending, key);
            go = false;
        }
        if (go)
            d->in_flight++;
        pthread_mutex_unlock(&d->lock);
        struct send *s = go ? calloc(1, sizeof(*s)) : NULL;
        if (go && s == NULL) {
            pthread_mutex_lock(&d->lock);
            strmap_remove(&d->sending, key);
            strmap_remove(&d->rows, id);
            in_flight_end_locked(d);
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
    /* A row due but skipped as just answered (due again at once: a
     * redeliver, or a zero delay) has no wake-up of its own: scan again. */
    if (guarded) {
        pthread_mutex_lock(&d->lock);
        d->rows_kicked = true;
        pthread_mutex_unlock(&d->lock);
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

/* ---- the thread ---- */

static void *deliverer_main(void *arg)
{
    struct deliverer *d = arg;
    thread_nice(d->cfg.nice);
    pthread_mutex_lock(&d->lock);
    while (!d->stopping) {
        if (d->public_url[0] == '\0') { /* the server does not listen yet */
            pthread_cond_wait(&d->cond, &d->lock);
            continue;
        }
        int64_t now = time_now_ms();
        bool due = d->wake_at && d->wake_at <= now;
        /* A kick while the event path waits for its pace is kept for then. */
        bool events = d->events_paced ? d->events_at <= now : d->events_kicked;
        bool rows = d->rows_kicked || due;
        if (!events && !rows) {
            int64_t at = d->wake_at;
            if (d->events_paced && (at == 0 || d->events_at < at))
                at = d->events_at;
            if (at) {
                struct timespec ts = {.tv_sec = at / 1000, .tv_nsec = (at % 1000) * 1000000};
                pthread_cond_timedwait(&d->cond, &d->lock, &ts);
            } else {
                pthread_cond_wait(&d->cond, &d->lock);
            }
            continue;
        }
        if (events)
            d->events_kicked = d->events_paced = false;
        d->rows_kicked = false;
        if (due)
            d->wake_at = 0;
        pthread_mutex_unlock(&d->lock);
        if (events)
            pump_events(d);
        if (rows)
            scan_rows(d);
        pthread_mutex_lock(&d->lock);
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

/* ---- start and stop ---- */

static void add_held(void *arg, const char *job_id, const char *dest, int n)
{
    struct deliverer *d = arg; /* the thread is not running yet */
    char key[KEY_MAX];
    key_of(job_id, dest, key);
    held_add(d, key, n);
}

static void deliverer_release(struct deliverer *d)
{
    batch_release(d);
    while (d->circuits) {
        struct circuit *c = d->circuits;
        d->circuits = c->next;
        free(c);
    }
    strmap_release(&d->sending);
    strmap_release(&d->held);
    strmap_release(&d->unwritten);
    strmap_release(&d->rows);
    strmap_release(&d->done_now);
    strmap_release(&d->done_before);
    strmap_release(&d->stalled);
    OPENSSL_cleanse(&d->job_key, sizeof(d->job_key));
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->cond);
    free(d);
}

int deliverer_start(const struct deliverer_config *cfg, struct deliverer **out)
{
    struct deliverer *d = calloc(1, sizeof(*d));
    struct errmsg err = {.field = ""};
    if (d == NULL)
        return -DRV_ENOMEM;
    d->cfg = *cfg;
    int rc = sign_secret_parse(cfg->webhook_secret, &d->job_key, &err);
    strmap_init(&d->sending);
    strmap_init(&d->held);
    strmap_init(&d->unwritten);
    strmap_init(&d->rows);
    strmap_init(&d->done_now);
    strmap_init(&d->done_before);
    strmap_init(&d->stalled);
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->cond, NULL);
    /* Keys with pending rows send new events behind them, also after a restart. */
    if (rc == 0)
        rc = store_outbox_pending_keys(cfg->store, add_held, d);
    d->events_kicked = d->rows_kicked = true; /* a first look at what is queued and due */
    if (rc == 0 && pthread_create(&d->thread, NULL, deliverer_main, d) != 0)
        rc = -DRV_EINTERNAL;
    if (rc < 0) {
        log_printf(LOG_ERROR, "cannot start the deliverer: %s",
                   err.text[0] ? err.text : err_name(rc));
        deliverer_release(d);
        return rc;
    }
    pthread_setname_np(d->thread, "drover-deliver");
    *out = d;
    return 0;
}

void deliverer_set_public_url(struct deliverer *d, const char *public_url)
{
    pthread_mutex_lock(&d->lock);
    snprintf(d->public_url, sizeof(d->public_url), "%s", public_url);
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

void deliverer_kick(struct deliverer *d)
{
    pthread_mutex_lock(&d->lock);
    d->events_kicked = true;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

void deliverer_requeued(struct deliverer *d, const char *job_id, const char *dest)
{
    char key[KEY_MAX];
    key_of(job_id, dest, key);
    pthread_mutex_lock(&d->lock);
    held_add(d, key, +1);
    d->rows_kicked = true;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

void deliverer_rows_due(struct deliverer *d)
{
    pthread_mutex_lock(&d->lock);
    d->rows_kicked = true;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

/* The pruned ids, sorted, that forget_key() looks a key's job up in. */
struct pruned {
    const char (*ids)[ULID_LEN + 1];
    int n;
};

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Is key ("job_id|dest") a key of a pruned job? */
static bool forget_key(const char *key, void *arg)
{
    const struct pruned *p = arg;
    char id[ULID_LEN + 1];
    size_t len = strcspn(key, "|");
    if (len != ULID_LEN)
        return false;
    memcpy(id, key, len);
    id[len] = '\0';
    return bsearch(id, p->ids, (size_t)p->n, sizeof(p->ids[0]), cmp_id) != NULL;
}

void deliverer_forget_jobs(void *arg, const char (*ids)[ULID_LEN + 1], int n)
{
    struct deliverer *d = arg;
    if (d == NULL || n <= 0)
        return;
    char(*sorted)[ULID_LEN + 1] = malloc((size_t)n * sizeof(*sorted));
    if (sorted == NULL)
        return; /* out of memory: the counts stay (a small leak, no harm) */
    memcpy(sorted, ids, (size_t)n * sizeof(*sorted));
    qsort(sorted, (size_t)n, sizeof(*sorted), cmp_id);
    struct pruned p = {(const char(*)[ULID_LEN + 1]) sorted, n};
    pthread_mutex_lock(&d->lock);
    strmap_remove_if(&d->held, forget_key, &p);
    pthread_mutex_unlock(&d->lock);
    free(sorted);
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
    deliverer_release(d);
}

/* ---- the schedule ---- */

int deliverer_parse_schedule(const char *text, struct deliverer_config *cfg, struct errmsg *err)
{
    int n = 0;
    const char *p = text + strspn(text, " \t");
    while (*p) {
        /* Digits and a point only: no sign, exponent, hex, inf or nan. */
        size_t digits = strspn(p, "0123456789.");
        char *end;
        double v = strtod(p, &end);
        int64_t unit = 0;
        if (digits == 0 || end != p + digits)
            break;
        if (strncmp(end, "ms", 2) == 0)
            unit = 1, end += 2;
        else if (*end == 's')
            unit = 1000, end++;
        else if (*end == 'm')
            unit = 60000, end++;
        else if (*end == 'h')
            unit = 3600000, end++;
        end += strspn(end, " \t"); /* "5s, 30s" */
        const char *next = *end == ',' ? end + 1 + strspn(end + 1, " \t") : end;
        if (unit == 0 || n == DELIVER_SCHEDULE_MAX || (*end != ',' && *end != '\0') ||
            (*end == ',' && *next == '\0') || v * (double)unit > DELIVER_DELAY_MAX_MS)
            return errmsg_set(err, -DRV_ECONFIG,
                              "'%.60s' is not a retry schedule such as 5s,30s,2m,10m (at most %d "
                              "delays of ms, s, m or h, each up to a year)",
                              text, DELIVER_SCHEDULE_MAX);
        cfg->schedule_ms[n++] = (int64_t)(v * (double)unit);
        p = next;
    }
    if (n == 0 || *p)
        return errmsg_set(err, -DRV_ECONFIG, "'%.60s' is not a retry schedule such as 5s,30s,2m",
                          text);
    cfg->n_schedule = n;
    return 0;
}

/* ---- redelivery ---- */

int deliver_requeue(struct write_ctx *ctx, int64_t id, char *dest, bool *was_pending,
                    struct errmsg *err)
{
    dest[0] = '\0';
    *was_pending = false;
    struct outbox_row r;
    int rc = store_outbox_get(ctx->store, id, &r);
    if (rc == -DRV_ENOT_FOUND)
        return errmsg_set(err, rc, "no delivery %lld", (long long)id);
    if (rc < 0)
        return rc;
    /* Due now: the row if pending (it is counted among its key's pending
     * rows already), and its key's earlier pending rows, which go first.
     * Their new updated_at tells a try that is out right now, should it
     * fail, to go again at once (result_apply()). */
    bool pending = strcmp(r.state, "pending") == 0;
    rc = store_outbox_due_now(ctx->store, r.job_id, r.dest, pending ? r.seq : r.seq - 1,
                              ctx->now_ms);
    if (pending) {
        *was_pending = rc == 0;
        outbox_row_release(&r);
        return rc;
    }
    if (rc == 0 && strcmp(r.state, "delivered") == 0 && r.attempts > 0) {
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
    if (rc == 0)
        snprintf(dest, OUTBOX_DEST_MAX + 1, "%s", r.dest);
    outbox_row_release(&r);
    return rc;
}
