/*
 * store.h - the store interface: one opaque handle, engines behind a
 * versioned table of operations (like sqlite3_io_methods).
 *
 * Two sides:
 *
 *  - Write side: called only from the store's writer thread (writer.h),
 *    always inside a transaction the writer opened with store_tx_begin().
 *    Many requests' operations share one transaction (group commit).
 *  - Read side: any thread, each call on a connection of its own from the
 *    engine's reader pool; sees only committed data.
 *
 * Ownership: outputs filled into caller structs (struct job, job_event,
 * policy, lists) become the caller's and are released with their
 * *_release() functions. Inputs are borrowed.
 */
#ifndef DROVER_STORE_H
#define DROVER_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "job.h"
#include "policy.h"

#define STORE_ENGINE_VERSION 1

struct store;

struct store_options {
    const char *data_dir; /* created if missing */
    int readers;          /* read connections */
    int checkpoint_pages; /* WAL growth that starts a checkpoint; 0: the engine's default */
};

/* Which jobs GET /v1/jobs wants. Strings borrowed; NULL = any. */
struct job_filter {
    const char *queue;
    enum job_state state; /* JOB_NONE = any */
    const char *concurrency_key;
    const char *before_id; /* cursor: only ids below this one (newest first) */
    int limit;
};

/* A held lock key: by a running job (job_id) or a maintenance owner. Strings owned. */
struct lock {
    char key[JOB_KEY_MAX + 1];
    char job_id[ULID_LEN + 1]; /* "" for a maintenance lock */
    char *owner;               /* maintenance locks */
    char *reason;
    int64_t expires_at_ms; /* 0 = no expiry */
    int64_t created_at_ms;
};
void lock_release(struct lock *l);

struct lock_list {
    struct lock *locks;
    int n;
};
void lock_list_release(struct lock_list *l);

/*
 * The first reply to a request that carried an Idempotency-Key, kept so a
 * repeat gets the same bytes. body is owned (release with idem_record_release).
 */
#define IDEM_KEY_MAX         255
#define IDEM_FINGERPRINT_LEN 32 /* SHA-256 of method, path and body */
#define IDEM_LOCATION_MAX    80
struct idem_record {
    char key[IDEM_KEY_MAX + 1];
    unsigned char fingerprint[IDEM_FINGERPRINT_LEN];
    int status;
    char location[IDEM_LOCATION_MAX]; /* "" when the reply had none */
    char *body;
    int64_t created_ms;
};
void idem_record_release(struct idem_record *r);

/* ---- webhook subscriptions (subscriptions.h) ---- */
struct sub;
/* Every subscription, ordered by id. Owned; sub_list_release(). */
struct sub_list {
    struct sub *subs;
    int n;
};
void sub_list_release(struct sub_list *l);
/*
 * A delivery: one row per event and destination, written by the deliverer
 * once the send has an outcome (deliver.h), or pending while it waits for a
 * retry or for an earlier event of its (job, dest). dest is "job" (the
 * job's webhook_url) or a subscription id. last_error is owned
 * (outbox_row_release).
 */
#define OUTBOX_DEST_MAX 40
struct outbox_row {
    int64_t id;
    char job_id[ULID_LEN + 1];
    int64_t seq;
    char dest[OUTBOX_DEST_MAX + 1];
    char state[12]; /* "pending", "delivered" or "dead" */
    int attempts;
    int64_t next_at_ms;
    int64_t created_at_ms;
    int64_t updated_at_ms;
    int last_status; /* of the last attempt; 0 for none or a network error */
    int64_t last_latency_ms;
    char *last_error;
};
void outbox_row_release(struct outbox_row *r);

/* One try of a delivery. Strings owned (delivery_attempt_release). */
struct delivery_attempt {
    int n; /* 1, 2, ... */
    int64_t at_ms;
    int status; /* 0: no answer */
    int64_t latency_ms;
    char *error;   /* network error, or NULL */
    char *excerpt; /* the answer's first bytes, or NULL */
};
void delivery_attempt_release(struct delivery_attempt *a);

/* A (job, dest) with n pending rows. */
typedef void (*outbox_pending_fn)(void *arg, const char *job_id, const char *dest, int n);

/*
 * An event waiting in the outbox (outbox.h): one row per event, written in
 * its transaction. Read with the event itself and the part of its job, as
 * it is now, that a delivery needs: job.id, queue, webhook_url,
 * created_at_ms and result (the other fields are unset). found is false
 * when the job is gone (retention). Owned: outbox_event_release().
 */
struct outbox_event {
    int64_t id;
    char job_id[ULID_LEN + 1];
    int64_t seq;
    bool found;
    struct job job;
    struct job_event ev;
};
void outbox_event_release(struct outbox_event *e);
/*
 * An artifact's metadata (docs/adr/0013-artifacts.md). Its bytes are the
 * file DATA_DIR/artifacts/<job_id>/<file> (artifacts.h); a new upload of
 * the same name gets a new file, so a row never names a file being
 * rewritten. Fixed-size fields: nothing to release.
 */
#define ARTIFACT_NAME_MAX   128
#define ARTIFACT_TYPE_MAX   255
#define ARTIFACT_FILE_MAX   (ARTIFACT_NAME_MAX + 17) /* NAME "@" 16 hex digits */
#define ARTIFACT_SHA256_HEX 64
struct artifact {
    char job_id[ULID_LEN + 1];
    char name[ARTIFACT_NAME_MAX + 1];
    char content_type[ARTIFACT_TYPE_MAX + 1];
    char sha256[ARTIFACT_SHA256_HEX + 1]; /* lowercase hex of the bytes' SHA-256 */
    char file[ARTIFACT_FILE_MAX + 1];     /* in the job's artifact directory */
    int64_t size;
    int64_t created_at_ms;
};

struct artifact_list {
    struct artifact *items;
    int n;
};
void artifact_list_release(struct artifact_list *l);

struct job_list {
    struct job *jobs;
    int n;
    bool more; /* there is at least one more after the last */
};

struct event_list {
    struct job_event *events;
    int n;
    bool more;
};

struct store_engine {
    int version; /* STORE_ENGINE_VERSION */
    const char *name;

    int (*open)(const struct store_options *opt, struct store **out);
    void (*close)(struct store *st);

    /* Write side (the writer thread only). */
    int (*tx_begin)(struct store *st);
    int (*tx_commit)(struct store *st);
    void (*tx_rollback)(struct store *st);

    int (*job_insert)(struct store *st, const struct job *job);
    /* Writes what a transition can change. The submit-time fields (queue,
     * payload, dedup_key, concurrency_key, lock_keys, webhook_url,
     * concurrency_limit, created_at) are written once, by job_insert. */
    int (*job_update)(struct store *st, const struct job *job);
    /* Load a job inside the transaction (for update). -DRV_ENOT_FOUND if absent. */
    int (*job_load)(struct store *st, const char *id, struct job *out);
    int (*event_insert)(struct store *st, const struct job_event *ev);
    int (*policy_put)(struct store *st, const char *queue, const struct policy *p, int64_t now_ms);
    /* Up to max ids of the queue's ready jobs, oldest first (O(log n) per claim). */
    int (*job_ready_ids)(struct store *st, const char *queue, int max, char (*ids)[ULID_LEN + 1],
                         int *n_out);
    /* The newest job of queue with dedup_key key; -DRV_ENOT_FOUND if none. */
    int (*job_dedup_find)(struct store *st, const char *queue, const char *key, char *id_out,
                          enum job_state *state, int64_t *created_ms);
    /* How many unfinished, admitted jobs hold (queue, key)'s slots, counted up
     * to bound; when there are bound or more, the oldest of them too
     * (oldest_id may be NULL). */
    int (*job_slots_held)(struct store *st, const char *queue, const char *key, int bound,
                          int *held, char *oldest_id);
    /* Locks (write side). lock_get: -DRV_ENOT_FOUND when the key is free. */
    int (*lock_get)(struct store *st, const char *key, struct lock *out);
    int (*lock_put)(struct store *st, const struct lock *l);
    int (*lock_delete)(struct store *st, const char *key);
    /* The keys a job holds, then forget them. */
    int (*locks_of_job)(struct store *st, const char *job_id, int max,
                        char (*keys)[JOB_KEY_MAX + 1], int *n_out);
    int (*lock_wait_add)(struct store *st, const char *key, const char *job_id);
    int (*lock_waiters)(struct store *st, const char *key, int max, char (*ids)[ULID_LEN + 1],
                        int *n_out);
    int (*lock_wait_remove_job)(struct store *st, const char *job_id);
    /* Up to max distinct concurrency keys of queue with jobs waiting for a slot. */
    int (*job_waiting_keys)(struct store *st, const char *queue, int max,
                            char (*keys)[JOB_KEY_MAX + 1], int *n_out);
    /* Up to max ids of jobs waiting for one of (queue, key)'s slots, oldest first. */
    int (*job_waiting_ids)(struct store *st, const char *queue, const char *key, int max,
                           char (*ids)[ULID_LEN + 1], int *n_out);
    /* Idempotency records. idem_get: -DRV_ENOT_FOUND when the key is unknown. */
    int (*idem_get)(struct store *st, const char *key, struct idem_record *out);
    /* Keep r, replacing a record of its key created before expired_ms;
     * -DRV_ECONFLICT when a live record of the key exists. */
    int (*idem_put)(struct store *st, const struct idem_record *r, int64_t expired_ms);
    /* Delete up to limit records created before expired_ms; *n_out says how many. */
    int (*idem_sweep)(struct store *st, int64_t expired_ms, int limit, int *n_out);
    /* The outbox (write side): queue an event; forget one the deliverer settled. */
    int (*outbox_event_insert)(struct store *st, const char *job_id, int64_t seq);
    int (*outbox_event_delete)(struct store *st, int64_t id);
    /* Deliveries: add a row (r->id is set), read one for update, write it back. */
    int (*outbox_insert)(struct store *st, struct outbox_row *r);
    int (*outbox_get)(struct store *st, int64_t id, struct outbox_row *out);
    int (*outbox_update)(struct store *st, const struct outbox_row *r);
    /* (job_id, dest)'s pending rows up to seq: due by now_ms, updated_at moved past its value. */
    int (*outbox_due_now)(struct store *st, const char *job_id, const char *dest, int64_t seq,
                          int64_t now_ms);
    /* A pending row's send succeeded; -DRV_ENOT_FOUND when it is not pending (any more). */
    int (*outbox_delivered)(struct store *st, int64_t id, int64_t now_ms, int status,
                            int64_t latency_ms);
    int (*delivery_attempt_insert)(struct store *st, int64_t outbox_id,
                                   const struct delivery_attempt *a);
    /* Forget a pruned job's outbox rows and delivery attempts. */
    int (*outbox_prune)(struct store *st, const char *job_id);
    /* Runner callbacks' webhook-ids: seen (1) or not (0); remember one; forget old ones. */
    int (*callback_id_seen)(struct store *st, const char *msg_id);
    int (*callback_id_put)(struct store *st, const char *msg_id, const char *job_id, int64_t at_ms);
    int (*callback_id_sweep)(struct store *st, int64_t before_ms, int limit, int *n_out);
    /* Webhook subscriptions (write side). sub_put inserts or replaces by id;
     * sub_get and sub_delete: -DRV_ENOT_FOUND when there is none. */
    int (*sub_get)(struct store *st, const char *id, struct sub *out);
    int (*sub_put)(struct store *st, const struct sub *s);
    int (*sub_delete)(struct store *st, const char *id);

    /* Read side (any thread). */
    int (*job_get)(struct store *st, const char *id, struct job *out);
    int (*job_list)(struct store *st, const struct job_filter *f, struct job_list *out);
    int (*event_list)(struct store *st, const char *job_id, int64_t after_seq, int limit,
                      struct event_list *out);
    /* -DRV_ENOT_FOUND when the queue has no stored policy. */
    int (*policy_get)(struct store *st, const char *queue, struct policy *out);
    /* A cheap round trip to the database, for /readyz. */
    int (*ping)(struct store *st);
    /* Every job with a deadline (due_at), for rebuilding the timers at start. */
    int (*due_list)(struct store *st, void (*each)(void *arg, const char *id, int64_t due_ms),
                    void *arg);
    /* Every lock, for GET /v1/locks and for arming expiries at start. */
    int (*lock_list)(struct store *st, struct lock_list *out);
    /* The outbox (read side): pending rows due by now_ms, by (next_at, id). */
    int (*outbox_due)(struct store *st, int64_t now_ms, int max, struct outbox_row *rows,
                      int *n_out);
    /* Rows of a job (by seq, then id) or of a destination (by id), after the row after_id. */
    int (*outbox_list)(struct store *st, const char *job_id, const char *dest, int64_t after_id,
                       int max, struct outbox_row *rows, int *n_out);
    int (*delivery_attempts)(struct store *st, int64_t outbox_id, int max,
                             struct delivery_attempt *out, int *n_out);
    /* The earliest next_at of a pending row after after_ms; 0 when none. */
    int (*outbox_next)(struct store *st, int64_t after_ms, int64_t *next_ms);
    /* Every (job, dest) with pending rows and how many, for the deliverer's start. */
    int (*outbox_pending_keys)(struct store *st, outbox_pending_fn each, void *arg);
    /* Up to max queued events after after_id, by id. */
    int (*outbox_events)(struct store *st, int64_t after_id, int max, struct outbox_event *out,
                         int *n_out);
    /* Every stored queue policy, for filling the policy cache at start. */
    int (*policy_list)(struct store *st,
                       void (*each)(void *arg, const char *queue, const struct policy *p),
                       void *arg);
    /* Every subscription, ordered by id: for GET and for filling the cache at start. */
    int (*sub_list)(struct store *st, struct sub_list *out);

    /* ---- artifacts and retention (docs/adr/0013-artifacts.md) ---- */
    /* Write side. Keep a's row in place of its (job_id, name)'s; replaced gets
     * the file of the row it replaced, or "" (ARTIFACT_FILE_MAX + 1 bytes). */
    int (*artifact_put)(struct store *st, const struct artifact *a, char *replaced);
    /* Up to max ids of queue's terminal jobs whose updated_at (their end) is
     * before ended_before_ms, the longest ended first. */
    int (*job_expired_ids)(struct store *st, const char *queue, int64_t ended_before_ms, int max,
                           char (*ids)[ULID_LEN + 1], int *n_out);
    /* Delete a job with its events, lock waits and artifact rows, and put its
     * artifact directory in the trash (at_ms). -DRV_ENOT_FOUND if absent. */
    int (*job_prune)(struct store *st, const char *job_id, int64_t at_ms);
    /* The job's artifact directory is gone from the disk: take it out of the trash. */
    int (*artifact_trash_forget)(struct store *st, const char *job_id);
    /* Read side. The job's artifacts by name; none is not an error. */
    int (*artifact_list)(struct store *st, const char *job_id, struct artifact_list *out);
    /* -DRV_ENOT_FOUND when the job has no artifact of that name (or no such job). */
    int (*artifact_get)(struct store *st, const char *job_id, const char *name,
                        struct artifact *out);
    /* Up to max ids of pruned jobs whose artifact directories may still exist. */
    int (*artifact_trash_list)(struct store *st, int max, char (*ids)[ULID_LEN + 1], int *n_out);
};

/* Every engine's handle starts with this. */
struct store {
    const struct store_engine *engine;
};

extern const struct store_engine store_sqlite_engine;

/* Find an engine by name ("sqlite"); NULL if unknown. */
const struct store_engine *store_engine_find(const char *name);

int store_open(const struct store_engine *engine, const struct store_options *opt,
               struct store **out);
void store_close(struct store *st);

static inline int store_tx_begin(struct store *st)
{
    return st->engine->tx_begin(st);
}
static inline int store_tx_commit(struct store *st)
{
    return st->engine->tx_commit(st);
}
static inline void store_tx_rollback(struct store *st)
{
    st->engine->tx_rollback(st);
}
static inline int store_job_insert(struct store *st, const struct job *job)
{
    return st->engine->job_insert(st, job);
}
static inline int store_job_update(struct store *st, const struct job *job)
{
    return st->engine->job_update(st, job);
}
static inline int store_job_load(struct store *st, const char *id, struct job *out)
{
    return st->engine->job_load(st, id, out);
}
static inline int store_event_insert(struct store *st, const struct job_event *ev)
{
    return st->engine->event_insert(st, ev);
}
static inline int store_policy_put(struct store *st, const char *queue, const struct policy *p,
                                   int64_t now_ms)
{
    return st->engine->policy_put(st, queue, p, now_ms);
}
static inline int store_job_ready_ids(struct store *st, const char *queue, int max,
                                      char (*ids)[ULID_LEN + 1], int *n_out)
{
    return st->engine->job_ready_ids(st, queue, max, ids, n_out);
}
static inline int store_job_dedup_find(struct store *st, const char *queue, const char *key,
                                       char *id_out, enum job_state *state, int64_t *created_ms)
{
    return st->engine->job_dedup_find(st, queue, key, id_out, state, created_ms);
}
static inline int store_job_slots_held(struct store *st, const char *queue, const char *key,
                                       int bound, int *held, char *oldest_id)
{
    return st->engine->job_slots_held(st, queue, key, bound, held, oldest_id);
}
static inline int store_idem_get(struct store *st, const char *key, struct idem_record *out)
{
    return st->engine->idem_get(st, key, out);
}
static inline int store_idem_put(struct store *st, const struct idem_record *r, int64_t expired_ms)
{
    return st->engine->idem_put(st, r, expired_ms);
}
static inline int store_idem_sweep(struct store *st, int64_t expired_ms, int limit, int *n_out)
{
    return st->engine->idem_sweep(st, expired_ms, limit, n_out);
}
static inline int store_outbox_event_insert(struct store *st, const char *job_id, int64_t seq)
{
    return st->engine->outbox_event_insert(st, job_id, seq);
}
static inline int store_outbox_event_delete(struct store *st, int64_t id)
{
    return st->engine->outbox_event_delete(st, id);
}
static inline int store_outbox_events(struct store *st, int64_t after_id, int max,
                                      struct outbox_event *out, int *n_out)
{
    return st->engine->outbox_events(st, after_id, max, out, n_out);
}
static inline int store_outbox_insert(struct store *st, struct outbox_row *r)
{
    return st->engine->outbox_insert(st, r);
}
static inline int store_outbox_get(struct store *st, int64_t id, struct outbox_row *out)
{
    return st->engine->outbox_get(st, id, out);
}
static inline int store_outbox_update(struct store *st, const struct outbox_row *r)
{
    return st->engine->outbox_update(st, r);
}
static inline int store_outbox_due_now(struct store *st, const char *job_id, const char *dest,
                                       int64_t seq, int64_t now_ms)
{
    return st->engine->outbox_due_now(st, job_id, dest, seq, now_ms);
}
static inline int store_outbox_delivered(struct store *st, int64_t id, int64_t now_ms, int status,
                                         int64_t latency_ms)
{
    return st->engine->outbox_delivered(st, id, now_ms, status, latency_ms);
}
static inline int store_delivery_attempt_insert(struct store *st, int64_t outbox_id,
                                                const struct delivery_attempt *a)
{
    return st->engine->delivery_attempt_insert(st, outbox_id, a);
}
static inline int store_outbox_due(struct store *st, int64_t now_ms, int max,
                                   struct outbox_row *rows, int *n_out)
{
    return st->engine->outbox_due(st, now_ms, max, rows, n_out);
}
static inline int store_outbox_list(struct store *st, const char *job_id, const char *dest,
                                    int64_t after_id, int max, struct outbox_row *rows, int *n_out)
{
    return st->engine->outbox_list(st, job_id, dest, after_id, max, rows, n_out);
}
static inline int store_delivery_attempts(struct store *st, int64_t outbox_id, int max,
                                          struct delivery_attempt *out, int *n_out)
{
    return st->engine->delivery_attempts(st, outbox_id, max, out, n_out);
}
static inline int store_outbox_pending_keys(struct store *st, outbox_pending_fn each, void *arg)
{
    return st->engine->outbox_pending_keys(st, each, arg);
}
static inline int store_outbox_next(struct store *st, int64_t after_ms, int64_t *next_ms)
{
    return st->engine->outbox_next(st, after_ms, next_ms);
}
static inline int store_outbox_prune(struct store *st, const char *job_id)
{
    return st->engine->outbox_prune(st, job_id);
}
static inline int store_callback_id_seen(struct store *st, const char *msg_id)
{
    return st->engine->callback_id_seen(st, msg_id);
}
static inline int store_callback_id_put(struct store *st, const char *msg_id, const char *job_id,
                                        int64_t at_ms)
{
    return st->engine->callback_id_put(st, msg_id, job_id, at_ms);
}
static inline int store_callback_id_sweep(struct store *st, int64_t before_ms, int limit,
                                          int *n_out)
{
    return st->engine->callback_id_sweep(st, before_ms, limit, n_out);
}
static inline int store_lock_get(struct store *st, const char *key, struct lock *out)
{
    return st->engine->lock_get(st, key, out);
}
static inline int store_lock_put(struct store *st, const struct lock *l)
{
    return st->engine->lock_put(st, l);
}
static inline int store_lock_delete(struct store *st, const char *key)
{
    return st->engine->lock_delete(st, key);
}
static inline int store_locks_of_job(struct store *st, const char *job_id, int max,
                                     char (*keys)[JOB_KEY_MAX + 1], int *n_out)
{
    return st->engine->locks_of_job(st, job_id, max, keys, n_out);
}
static inline int store_lock_wait_add(struct store *st, const char *key, const char *job_id)
{
    return st->engine->lock_wait_add(st, key, job_id);
}
static inline int store_lock_waiters(struct store *st, const char *key, int max,
                                     char (*ids)[ULID_LEN + 1], int *n_out)
{
    return st->engine->lock_waiters(st, key, max, ids, n_out);
}
static inline int store_lock_wait_remove_job(struct store *st, const char *job_id)
{
    return st->engine->lock_wait_remove_job(st, job_id);
}
static inline int store_lock_list(struct store *st, struct lock_list *out)
{
    return st->engine->lock_list(st, out);
}
static inline int store_job_waiting_keys(struct store *st, const char *queue, int max,
                                         char (*keys)[JOB_KEY_MAX + 1], int *n_out)
{
    return st->engine->job_waiting_keys(st, queue, max, keys, n_out);
}
static inline int store_job_waiting_ids(struct store *st, const char *queue, const char *key,
                                        int max, char (*ids)[ULID_LEN + 1], int *n_out)
{
    return st->engine->job_waiting_ids(st, queue, key, max, ids, n_out);
}
static inline int store_job_get(struct store *st, const char *id, struct job *out)
{
    return st->engine->job_get(st, id, out);
}
static inline int store_job_list(struct store *st, const struct job_filter *f, struct job_list *out)
{
    return st->engine->job_list(st, f, out);
}
static inline int store_event_list(struct store *st, const char *job_id, int64_t after_seq,
                                   int limit, struct event_list *out)
{
    return st->engine->event_list(st, job_id, after_seq, limit, out);
}
static inline int store_policy_get(struct store *st, const char *queue, struct policy *out)
{
    return st->engine->policy_get(st, queue, out);
}
static inline int store_ping(struct store *st)
{
    return st->engine->ping(st);
}
static inline int store_due_list(struct store *st,
                                 void (*each)(void *arg, const char *id, int64_t due_ms), void *arg)
{
    return st->engine->due_list(st, each, arg);
}
static inline int
store_policy_list(struct store *st,
                  void (*each)(void *arg, const char *queue, const struct policy *p), void *arg)
{
    return st->engine->policy_list(st, each, arg);
}

static inline int store_sub_get(struct store *st, const char *id, struct sub *out)
{
    return st->engine->sub_get(st, id, out);
}
static inline int store_sub_put(struct store *st, const struct sub *s)
{
    return st->engine->sub_put(st, s);
}
static inline int store_sub_delete(struct store *st, const char *id)
{
    return st->engine->sub_delete(st, id);
}
static inline int store_sub_list(struct store *st, struct sub_list *out)
{
    return st->engine->sub_list(st, out);
}
/* ---- artifacts and retention ---- */
static inline int store_artifact_put(struct store *st, const struct artifact *a, char *replaced)
{
    return st->engine->artifact_put(st, a, replaced);
}
static inline int store_job_expired_ids(struct store *st, const char *queue,
                                        int64_t ended_before_ms, int max, char (*ids)[ULID_LEN + 1],
                                        int *n_out)
{
    return st->engine->job_expired_ids(st, queue, ended_before_ms, max, ids, n_out);
}
static inline int store_job_prune(struct store *st, const char *job_id, int64_t at_ms)
{
    return st->engine->job_prune(st, job_id, at_ms);
}
static inline int store_artifact_trash_forget(struct store *st, const char *job_id)
{
    return st->engine->artifact_trash_forget(st, job_id);
}
static inline int store_artifact_list(struct store *st, const char *job_id,
                                      struct artifact_list *out)
{
    return st->engine->artifact_list(st, job_id, out);
}
static inline int store_artifact_get(struct store *st, const char *job_id, const char *name,
                                     struct artifact *out)
{
    return st->engine->artifact_get(st, job_id, name, out);
}
static inline int store_artifact_trash_list(struct store *st, int max, char (*ids)[ULID_LEN + 1],
                                            int *n_out)
{
    return st->engine->artifact_trash_list(st, max, ids, n_out);
}

void job_list_release(struct job_list *l);
void event_list_release(struct event_list *l);

#endif
