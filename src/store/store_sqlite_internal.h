/*
 * store_sqlite_internal.h - what the files of the SQLite engine share. Only
 * src/store/store_sqlite*.c include it; everyone else uses store.h.
 *
 *   store_sqlite.c            the core: schema and migrations, open and close,
 *                             the checkpointer, the reader pool, jobs and their
 *                             events, queue policies, idempotency records,
 *                             callback ids, locks, and the engine's vtable
 *   store_sqlite_outbox.c     the outbox: outbox events, outbox rows, delivery
 *                             attempts (docs/adr/0014, 0015)
 *   store_sqlite_subs.c       webhook subscriptions
 *   store_sqlite_artifacts.c  artifacts, the artifact trash and the retention
 *                             sweep's prune (docs/adr/0013-artifacts.md)
 *
 * Statements: one enum per kind of connection (writer_stmt, reader_stmt),
 * here, so that each connection keeps one array of prepared statements; but
 * each file owns the SQL of its statements, in tables of its own indexed by
 * those enums and NULL for the other files' statements. sqlite_open()
 * prepares each statement from the one table that has its SQL. So a
 * statement's SQL sits beside the code that binds and reads it, which one
 * array per connection kind in the core would not give. The price: a
 * statement with no SQL, or SQL in two tables, shows at open (which then
 * fails, loudly), not at compile time.
 *
 * Names: the shared helpers and the vtable ops defined outside the core are
 * extern and prefixed sqlite_; the small bind_/column_ helpers are static
 * inline here, so their short names stay private to these files.
 */
#ifndef DROVER_STORE_SQLITE_INTERNAL_H
#define DROVER_STORE_SQLITE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store/store.h"

/* A terminal job: the WHERE of the jobs_ended index and of the queries that
 * use it (ORs, not an IN list: see migration 12). */
#define JOB_ENDED "state = 'succeeded' OR state = 'failed' OR state = 'canceled'"

/* The writer connection's statements, grouped by the file that owns their SQL. */
enum writer_stmt {
    /* store_sqlite.c */
    W_BEGIN,
    W_COMMIT,
    W_ROLLBACK,
    W_JOB_INSERT,
    W_JOB_UPDATE,
    W_JOB_LOAD,
    W_EVENT_INSERT,
    W_POLICY_PUT,
    W_READY_IDS,
    W_DEDUP_FIND,
    W_SLOTS_HELD,
    W_SLOTS_OLDEST,
    W_WAITING_IDS,
    W_WAITING_KEYS,
    W_LOCK_GET,
    W_LOCK_PUT,
    W_LOCK_DELETE,
    W_LOCKS_OF_JOB,
    W_LOCKS_DELETE_JOB,
    W_LOCK_WAIT_ADD,
    W_LOCK_WAITERS,
    W_LOCK_WAIT_REMOVE,
    W_IDEM_GET,
    W_IDEM_PUT,
    W_IDEM_SWEEP,
    W_CALLBACK_SEEN,
    W_CALLBACK_PUT,
    W_CALLBACK_SWEEP,
    /* store_sqlite_outbox.c */
    W_OUTBOX_INSERT,
    W_OUTBOX_EVENT_INSERT,
    W_OUTBOX_EVENT_DELETE,
    W_OUTBOX_GET,
    W_OUTBOX_UPDATE,
    W_OUTBOX_DUE_NOW,
    W_OUTBOX_DELIVERED,
    W_ATTEMPT_INSERT,
    W_OUTBOX_PRUNE_ATTEMPTS,
    W_OUTBOX_PRUNE,
    /* store_sqlite_subs.c */
    W_SUB_GET,
    W_SUB_PUT,
    W_SUB_DELETE,
    /* store_sqlite_artifacts.c */
    W_ARTIFACT_FILE,
    W_ARTIFACT_PUT,
    W_EXPIRED_IDS,
    W_PRUNE_EVENTS,
    W_PRUNE_ARTIFACTS,
    W_PRUNE_JOB,
    W_TRASH_ADD,
    W_TRASH_FORGET,
    W__COUNT
};

/* Each reader connection's statements, grouped the same way. */
enum reader_stmt {
    /* store_sqlite.c */
    R_JOB_GET,
    R_EVENTS,
    R_POLICY_GET,
    R_PING,
    R_DUE_LIST,
    R_POLICY_LIST,
    R_LOCK_LIST,
    /* store_sqlite_outbox.c */
    R_OUTBOX_DUE,
    R_OUTBOX_BY_JOB,
    R_OUTBOX_BY_DEST,
    R_ATTEMPTS,
    R_OUTBOX_PENDING_KEYS,
    R_OUTBOX_EVENTS,
    R_OUTBOX_NEXT,
    /* store_sqlite_subs.c */
    R_SUB_LIST,
    /* store_sqlite_artifacts.c */
    R_ARTIFACT_LIST,
    R_ARTIFACT_GET,
    R_TRASH_LIST,
    R__COUNT
};

/* Each file's SQL by statement, NULL for the statements of the other files
 * (the core's own tables are static in store_sqlite.c). */
extern const char *const sqlite_outbox_writer_sql[W__COUNT];
extern const char *const sqlite_outbox_reader_sql[R__COUNT];
extern const char *const sqlite_subs_writer_sql[W__COUNT];
extern const char *const sqlite_subs_reader_sql[R__COUNT];
extern const char *const sqlite_artifacts_writer_sql[W__COUNT];
extern const char *const sqlite_artifacts_reader_sql[R__COUNT];

/* A read-only connection of the pool, with its prepared statements. */
struct reader {
    sqlite3 *db;
    sqlite3_stmt *stmt[R__COUNT];
    struct reader *next_free;
};

/* The thread that checkpoints the WAL off the writer's commit path (store_sqlite.c). */
struct checkpointer {
    sqlite3 *db;
    pthread_t thread;
    bool running;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool wanted;
    bool stopping;
    int pages;      /* the WAL growth that starts a checkpoint */
    int next_pages; /* the WAL length (pages) that wakes the thread next (writer's) */
};

struct sqlite_store {
    struct store base;
    char *path;
    struct checkpointer ckpt;
    sqlite3 *wdb;                  /* the writer connection: the writer thread's only */
    sqlite3_stmt *wstmt[W__COUNT]; /* prepared on wdb */
    struct reader *readers;
    int n_readers;
    struct reader *free_readers;
    pthread_mutex_t pool_lock;
    pthread_cond_t pool_cond;
};

static inline struct sqlite_store *sqlite_store(struct store *st)
{
    return (struct sqlite_store *)st;
}

/* ---- store_sqlite.c: helpers for every file ---- */

/* Log the failure of op what on db; -DRV_ENOMEM or -DRV_ESTORE. */
int sqlite_fail(sqlite3 *db, const char *what);

/* Run a statement that returns no rows, then reset it and clear its bindings. */
int sqlite_step_done(sqlite3 *db, sqlite3_stmt *stmt, const char *what);

/* Run writer statement w bound to one text (?1); the rows changed, or a negative code. */
int sqlite_exec_text(struct sqlite_store *s, enum writer_stmt w, const char *text);

/* Collect the first column (text) of writer stmt's rows into out[max][size]; resets stmt. */
int sqlite_collect_text(struct sqlite_store *s, sqlite3_stmt *stmt, int max, char *out, size_t size,
                        int *n_out, const char *what);

/* Take a reader from the pool, waiting for one; give it back with sqlite_reader_release(). */
struct reader *sqlite_reader_acquire(struct sqlite_store *s);
void sqlite_reader_release(struct sqlite_store *s, struct reader *r);

/* Fill ev from a job_events row read from column b on (job_id, seq, type, at, state,
 * prev_state, step, attempt, data: EVENT_COLUMNS); release with job_event_release(). */
int sqlite_read_event_at(sqlite3_stmt *s, int b, struct job_event *ev);

/* ---- binding and reading columns ---- */

/* NULL binds SQL NULL. */
static inline void bind_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, i);
}

/* Bind a JSON value as compact text; NULL binds SQL NULL. */
static inline int bind_json(sqlite3_stmt *s, int i, const json_t *v)
{
    if (v == NULL) {
        sqlite3_bind_null(s, i);
        return 0;
    }
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL)
        return -DRV_ENOMEM;
    sqlite3_bind_text(s, i, text, -1, free);
    return 0;
}

/* A number whose 0 means none (a time in ms, an HTTP status, a limit): 0 binds SQL NULL. */
static inline void bind_or_null(sqlite3_stmt *s, int i, int64_t v)
{
    if (v)
        sqlite3_bind_int64(s, i, v);
    else
        sqlite3_bind_null(s, i);
}

static inline char *column_strdup(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? strdup((const char *)t) : NULL;
}

static inline json_t *column_json(sqlite3_stmt *s, int i)
{
    const char *t = (const char *)sqlite3_column_text(s, i);
    if (t == NULL)
        return NULL;
    return json_loadb(t, (size_t)sqlite3_column_bytes(s, i), JSON_DECODE_ANY | JSON_ALLOW_NUL,
                      NULL);
}

/* ---- the engine's ops defined outside the core (contracts: store.h) ---- */

/* store_sqlite_outbox.c */
int sqlite_outbox_insert(struct store *st, struct outbox_row *r);
int sqlite_outbox_event_insert(struct store *st, const char *job_id, int64_t seq);
int sqlite_outbox_event_delete(struct store *st, int64_t id);
int sqlite_outbox_get(struct store *st, int64_t id, struct outbox_row *out);
int sqlite_outbox_update(struct store *st, const struct outbox_row *r);
int sqlite_outbox_due_now(struct store *st, const char *job_id, const char *dest, int64_t seq,
                          int64_t now_ms);
int sqlite_outbox_delivered(struct store *st, int64_t id, int64_t now_ms, int status,
                            int64_t latency_ms);
int sqlite_delivery_attempt_insert(struct store *st, int64_t outbox_id,
                                   const struct delivery_attempt *a);
int sqlite_outbox_prune(struct store *st, const char *job_id);
int sqlite_outbox_due(struct store *st, int64_t now_ms, int max, struct outbox_row *rows,
                      int *n_out);
int sqlite_outbox_list(struct store *st, const char *job_id, const char *dest, int64_t after_id,
                       int max, struct outbox_row *rows, int *n_out);
int sqlite_delivery_attempts(struct store *st, int64_t outbox_id, int max,
                             struct delivery_attempt *out, int *n_out);
int sqlite_outbox_pending_keys(struct store *st, outbox_pending_fn each, void *arg);
int sqlite_outbox_events(struct store *st, int64_t after_id, int max, struct outbox_event *out,
                         int *n_out);
int sqlite_outbox_next(struct store *st, int64_t after_ms, int64_t *next_ms);

/* store_sqlite_subs.c */
int sqlite_sub_get(struct store *st, const char *id, struct sub *out);
int sqlite_sub_put(struct store *st, const struct sub *sub);
int sqlite_sub_delete(struct store *st, const char *id);
int sqlite_sub_list(struct store *st, struct sub_list *out);

/* store_sqlite_artifacts.c */
int sqlite_artifact_put(struct store *st, const struct artifact *a, char *replaced);
int sqlite_job_expired_ids(struct store *st, const char *queue, int64_t ended_before_ms, int max,
                           char (*ids)[ULID_LEN + 1], int *n_out);
int sqlite_job_prune(struct store *st, const char *job_id, int64_t at_ms);
int sqlite_artifact_trash_forget(struct store *st, const char *job_id);
int sqlite_artifact_list(struct store *st, const char *job_id, struct artifact_list *out);
int sqlite_artifact_get(struct store *st, const char *job_id, const char *name,
                        struct artifact *out);
int sqlite_artifact_trash_list(struct store *st, int max, char (*ids)[ULID_LEN + 1], int *n_out);

#endif
