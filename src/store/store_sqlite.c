/*
 * store_sqlite.c - the embedded SQLite engine, its core: the schema and its
 * migrations, opening and closing, the checkpointer, the reader pool, jobs
 * and their events (write and read side), queue policies, idempotency
 * records, runner callbacks' webhook-ids, locks, and the engine's vtable.
 * The outbox, webhook subscriptions, and artifacts with retention have
 * files of their own; store_sqlite_internal.h lists them and holds what
 * they share with this one.
 *
 * One database file (DATA_DIR/drover.db) in WAL mode with synchronous=FULL:
 * a COMMIT returns only after the WAL is fsync'ed, so whatever the writer
 * acknowledges survives kill -9 and power loss. The writer connection is
 * used only by the writer thread; readers take a connection of their own
 * from a small pool and see committed data only.
 *
 * Checkpoints (copying the WAL back into the database, with an fsync of
 * their own) run mostly off the writer's commit path: the writer connection
 * has auto-checkpoint off, and its WAL hook wakes a checkpointer thread with
 * a connection of its own each time the WAL has grown by checkpoint_pages
 * (store.checkpoint_pages, default CHECKPOINT_PAGES).
 * That one can never finish while the writer keeps committing, and the WAL
 * starts over only after a checkpoint that copied all of it: so once the
 * WAL is 2 x checkpoint_pages long, the writer finishes a checkpoint itself
 * between two transactions (most pages are already copied) and the next
 * transaction writes the WAL from its start again. Without it a busy
 * server's WAL grows without end.
 *
 * The schema is versioned with PRAGMA user_version and migrated forward at
 * open, each migration in its own transaction.
 */
#include "store/store_sqlite_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "log.h"
#include "util.h"

/* Each entry moves the schema from version i to i + 1. Never edit a shipped one. */
static const char *const migrations[] = {
    /* 1: jobs, their history, queue policies. */
    "CREATE TABLE jobs ("
    "  id TEXT NOT NULL UNIQUE,"
    "  queue TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  step TEXT,"
    "  attempt INTEGER NOT NULL DEFAULT 0,"
    "  payload TEXT NOT NULL,"
    "  dedup_key TEXT,"
    "  concurrency_key TEXT,"
    "  lock_keys TEXT,"
    "  webhook_url TEXT,"
    "  run_at INTEGER,"
    "  cancel_requested INTEGER NOT NULL DEFAULT 0,"
    "  result TEXT,"
    "  error TEXT,"
    "  checkpoints TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL"
    ");"
    /* Listing by queue / state / key, newest first by id (ULIDs sort by time). */
    "CREATE INDEX jobs_by_queue ON jobs(queue, id);"
    "CREATE INDEX jobs_by_state ON jobs(state, id);"
    /* A claim takes the oldest ready job of a queue: one descent of this index. */
    "CREATE INDEX jobs_ready ON jobs(queue, id) WHERE state = 'queued';"
    "CREATE TABLE job_events ("
    "  job_id TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  type TEXT NOT NULL,"
    "  at INTEGER NOT NULL,"
    "  state TEXT NOT NULL,"
    "  prev_state TEXT,"
    "  step TEXT,"
    "  attempt INTEGER NOT NULL,"
    "  data TEXT,"
    "  PRIMARY KEY (job_id, seq)"
    ") WITHOUT ROWID;"
    "CREATE TABLE queues ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  policy TEXT NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ") WITHOUT ROWID;",
    /* 2: leases and deadlines. due_at is the job's next deadline of any kind,
     * so the timers can be rebuilt after a restart from one index. */
    "ALTER TABLE jobs ADD COLUMN lease_token TEXT;"
    "ALTER TABLE jobs ADD COLUMN worker TEXT;"
    "ALTER TABLE jobs ADD COLUMN lease_expires_at INTEGER;"
    "ALTER TABLE jobs ADD COLUMN started_at INTEGER;"
    "ALTER TABLE jobs ADD COLUMN due_at INTEGER;"
    "CREATE INDEX jobs_due ON jobs(due_at) WHERE due_at IS NOT NULL;",
    /* 3: admission. A dedup check reads the newest job of (queue, key); a
     * concurrency check counts a key's unfinished jobs and finds its oldest
     * waiting one, each a short range of one index. jobs_slots also serves
     * GET /v1/jobs?key= (a key has few jobs; they are sorted by id after). */
    "ALTER TABLE jobs ADD COLUMN concurrency_limit INTEGER;"
    "ALTER TABLE jobs ADD COLUMN waiting_for TEXT;"
    "CREATE INDEX jobs_dedup ON jobs(queue, dedup_key, id) WHERE dedup_key IS NOT NULL;"
    "CREATE INDEX jobs_slots ON jobs(concurrency_key, queue, state, id)"
    "  WHERE concurrency_key IS NOT NULL;",
    /* 4: resource locks. A key is held by a running job (job_id) or by a
     * maintenance owner; lock_waits lists the jobs set aside for a key. */
    "CREATE TABLE locks ("
    "  key TEXT PRIMARY KEY NOT NULL,"
    "  job_id TEXT,"
    "  owner TEXT,"
    "  reason TEXT,"
    "  expires_at INTEGER,"
    "  created_at INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE INDEX locks_by_job ON locks(job_id) WHERE job_id IS NOT NULL;"
    "CREATE TABLE lock_waits ("
    "  key TEXT NOT NULL,"
    "  job_id TEXT NOT NULL,"
    "  PRIMARY KEY (key, job_id)"
    ") WITHOUT ROWID;"
    "CREATE INDEX lock_waits_by_job ON lock_waits(job_id);",
    /* 5: the first reply to each Idempotency-Key, swept by age. */
    "CREATE TABLE idempotency ("
    "  key TEXT PRIMARY KEY NOT NULL,"
    "  fingerprint BLOB NOT NULL,"
    "  status INTEGER NOT NULL,"
    "  location TEXT,"
    "  body TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL"
    ");"
    "CREATE INDEX idempotency_by_age ON idempotency(created_at);",
    /* 6: slot counts read the index alone: waiting_for joins jobs_slots, so
     * counting a key's holders no longer visits each job's row. */
    "DROP INDEX jobs_slots;"
    "CREATE INDEX jobs_slots ON jobs(concurrency_key, queue, state, waiting_for, id)"
    "  WHERE concurrency_key IS NOT NULL;",
    /* 7: external runners. run_id is the runner's id for the attempt;
     * callback_ids remembers signed callbacks' webhook-ids for an hour (a
     * replay older than the 5-minute signature tolerance is refused anyway). */
    "ALTER TABLE jobs ADD COLUMN run_id TEXT;"
    "CREATE TABLE callback_ids ("
    "  msg_id TEXT PRIMARY KEY NOT NULL,"
    "  job_id TEXT NOT NULL,"
    "  at INTEGER NOT NULL"
    ");"
    "CREATE INDEX callback_ids_by_age ON callback_ids(at);",
    /* 8: webhook subscriptions. events and queues are JSON arrays, NULL for
     * every value; old_secret signs beside secret until old_secret_until. */
    "CREATE TABLE subscriptions ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  url TEXT NOT NULL,"
    "  secret TEXT NOT NULL,"
    "  old_secret TEXT,"
    "  old_secret_until INTEGER,"
    "  events TEXT,"
    "  queues TEXT,"
    "  enabled INTEGER NOT NULL,"
    "  disabled_reason TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ") WITHOUT ROWID;",
    /* 9: the outbox — one row per event and destination, written with the
     * event — and each delivery attempt. outbox_due finds what to send;
     * outbox_by_job serves a job's delivery log, outbox_by_dest a
     * subscription's. */
    "CREATE TABLE outbox ("
    "  id INTEGER PRIMARY KEY,"
    "  job_id TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  dest TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_at INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  last_status INTEGER,"
    "  last_error TEXT,"
    "  last_latency_ms INTEGER"
    ");"
    "CREATE INDEX outbox_due ON outbox(next_at, id) WHERE state = 'pending';"
    "CREATE INDEX outbox_by_job ON outbox(job_id, id);"
    "CREATE INDEX outbox_by_dest ON outbox(dest, id);"
    "CREATE TABLE delivery_attempts ("
    "  outbox_id INTEGER NOT NULL,"
    "  n INTEGER NOT NULL,"
    "  at INTEGER NOT NULL,"
    "  status INTEGER,"
    "  latency_ms INTEGER,"
    "  error TEXT,"
    "  excerpt TEXT,"
    "  PRIMARY KEY (outbox_id, n)"
    ") WITHOUT ROWID;",
    /* 10: artifacts and retention (ADR 13). An artifact's bytes are the file
     * DATA_DIR/artifacts/<job_id>/<file>; artifact_trash holds the pruned
     * jobs whose directories may still be on disk, until they are removed.
     * jobs_ended holds terminal jobs only, by queue and end (updated_at):
     * the retention sweep takes a queue's oldest ended jobs in one range. */
    "CREATE TABLE artifacts ("
    "  job_id TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  content_type TEXT NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  file TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  PRIMARY KEY (job_id, name)"
    ") WITHOUT ROWID;"
    "CREATE TABLE artifact_trash ("
    "  job_id TEXT PRIMARY KEY NOT NULL,"
    "  at INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE INDEX jobs_ended ON jobs(queue, updated_at)"
    "  WHERE state IN ('succeeded', 'failed', 'canceled');",
    /* 11: the outbox becomes one row per event (outbox_events), written in
     * the event's transaction; the deliverer fans it out and writes the
     * per-destination rows of `outbox` itself once each has an outcome
     * (docs/adr/0015-outbox-one-row-per-event.md). outbox_pending_key keeps
     * a key's pending rows in seq order: only the first may be sent. */
    "CREATE TABLE outbox_events (" /* AUTOINCREMENT: ids never come back (the cursor) */
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  job_id TEXT NOT NULL,"
    "  seq INTEGER NOT NULL"
    ");"
    "CREATE INDEX outbox_pending_key ON outbox(job_id, dest, seq) WHERE state = 'pending';"
    /* A job's log in event order: its rows are no longer written in that order. */
    "DROP INDEX outbox_by_job;"
    "CREATE INDEX outbox_by_job ON outbox(job_id, seq, id);",
    /* 12: jobs_ended's condition as ORs. SQLite 3.40 tests an IN list in a
     * partial index's WHERE through an ephemeral table that it opens (and
     * allocates) on every insert and update of a job: about 6% of the
     * writer's time under load. The OR form is tested inline. */
    "DROP INDEX jobs_ended;"
    "CREATE INDEX jobs_ended ON jobs(queue, updated_at)"
    "  WHERE " JOB_ENDED ";",
};
#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

#define JOB_COLUMNS                                                                                \
    "id, queue, state, step, attempt, payload, dedup_key, concurrency_key, lock_keys, "            \
    "webhook_url, run_at, cancel_requested, result, error, checkpoints, created_at, "              \
    "updated_at, seq, lease_token, worker, lease_expires_at, started_at, due_at, "                 \
    "concurrency_limit, waiting_for, run_id"

#define EVENT_COLUMNS "job_id, seq, type, at, state, prev_state, step, attempt, data"

/* The jobs holding one of (queue ?1, key ?2)'s slots: unfinished and admitted. */
#define SLOT_HOLDERS                                                                               \
    "concurrency_key = ?2 AND queue = ?1 AND state IN ('scheduled', 'queued', 'running') AND "     \
    "(waiting_for IS NULL OR waiting_for <> 'concurrency')"

/* The core's statements; the other files' are in their own tables (store_sqlite_internal.h). */
static const char *const writer_sql[W__COUNT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_JOB_INSERT] = "INSERT INTO jobs (" JOB_COLUMNS ") VALUES "
                     "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, "
                     "?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)",
    /* The columns a transition can change (bind_job_changes()). Leaving the
     * submit-time ones out spares their indexes (jobs_by_queue, jobs_dedup)
     * and a copy of the payload on every transition. */
    [W_JOB_UPDATE] = "UPDATE jobs SET state = ?3, step = ?4, attempt = ?5, run_at = ?11, "
                     "cancel_requested = ?12, result = ?13, error = ?14, checkpoints = ?15, "
                     "updated_at = ?17, seq = ?18, lease_token = ?19, worker = ?20, "
                     "lease_expires_at = ?21, started_at = ?22, due_at = ?23, "
                     "waiting_for = ?25, run_id = ?26 WHERE id = ?1",
    [W_JOB_LOAD] = "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1",
    [W_EVENT_INSERT] = "INSERT INTO job_events (" EVENT_COLUMNS ") VALUES "
                       "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [W_POLICY_PUT] = "INSERT INTO queues (name, policy, updated_at) VALUES (?1, ?2, ?3) "
                     "ON CONFLICT (name) DO UPDATE SET policy = excluded.policy, "
                     "updated_at = excluded.updated_at",
    /* The oldest ready jobs of a queue: a walk of the jobs_ready index. */
    [W_READY_IDS] = ("SELECT id FROM jobs WHERE queue = ?1 AND state = 'queued' "
                     "ORDER BY id LIMIT ?2"),
    [W_DEDUP_FIND] = ("SELECT id, state, created_at FROM jobs WHERE queue = ?1 AND "
                      "dedup_key = ?2 ORDER BY id DESC LIMIT 1"),
    /* Unfinished and admitted: the jobs that hold the key's slots. */
    /* Counted up to a bound (the limit): a key with a long line costs no more. */
    [W_SLOTS_HELD] = ("SELECT count(*) FROM (SELECT 1 FROM jobs WHERE " SLOT_HOLDERS " LIMIT ?3)"),
    [W_SLOTS_OLDEST] = "SELECT min(id) FROM jobs WHERE " SLOT_HOLDERS,
    [W_LOCK_GET] = ("SELECT key, job_id, owner, reason, expires_at, created_at FROM locks "
                    "WHERE key = ?1"),
    [W_LOCK_PUT] = ("INSERT OR REPLACE INTO locks (key, job_id, owner, reason, expires_at, "
                    "created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
    [W_LOCK_DELETE] = "DELETE FROM locks WHERE key = ?1",
    [W_LOCKS_OF_JOB] = "SELECT key FROM locks WHERE job_id = ?1 LIMIT ?2",
    [W_LOCKS_DELETE_JOB] = "DELETE FROM locks WHERE job_id = ?1",
    [W_LOCK_WAIT_ADD] = "INSERT OR IGNORE INTO lock_waits (key, job_id) VALUES (?1, ?2)",
    [W_LOCK_WAITERS] = "SELECT job_id FROM lock_waits WHERE key = ?1 ORDER BY job_id LIMIT ?2",
    [W_LOCK_WAIT_REMOVE] = "DELETE FROM lock_waits WHERE job_id = ?1",
    [W_IDEM_GET] = ("SELECT key, fingerprint, status, location, body, created_at "
                    "FROM idempotency WHERE key = ?1"),
    /* A live record is never replaced; an expired one is (?7). */
    [W_IDEM_PUT] = ("INSERT INTO idempotency (key, fingerprint, status, location, body, "
                    "created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (key) DO UPDATE "
                    "SET fingerprint = excluded.fingerprint, status = excluded.status, "
                    "location = excluded.location, body = excluded.body, "
                    "created_at = excluded.created_at WHERE idempotency.created_at < ?7"),
    [W_IDEM_SWEEP] = ("DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency "
                      "WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)"),
    [W_CALLBACK_SEEN] = "SELECT 1 FROM callback_ids WHERE msg_id = ?1",
    [W_CALLBACK_PUT] =
        "INSERT OR IGNORE INTO callback_ids (msg_id, job_id, at) VALUES (?1, ?2, ?3)",
    [W_CALLBACK_SWEEP] = ("DELETE FROM callback_ids WHERE rowid IN (SELECT rowid FROM callback_ids "
                          "WHERE at < ?1 ORDER BY at LIMIT ?2)"),
    [W_WAITING_KEYS] = ("SELECT DISTINCT concurrency_key FROM jobs WHERE queue = ?1 AND "
                        "state = 'scheduled' AND waiting_for = 'concurrency' LIMIT ?2"),
    [W_WAITING_IDS] = ("SELECT id FROM jobs WHERE queue = ?1 AND concurrency_key = ?2 AND "
                       "state = 'scheduled' AND waiting_for = 'concurrency' ORDER BY id LIMIT ?3"),
};

static const char *const reader_sql[R__COUNT] = {
    [R_JOB_GET] = "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1",
    [R_EVENTS] = "SELECT " EVENT_COLUMNS " FROM job_events WHERE job_id = ?1 AND seq > ?2 "
                 "ORDER BY seq LIMIT ?3",
    [R_POLICY_GET] = "SELECT policy FROM queues WHERE name = ?1",
    [R_PING] = "SELECT 1",
    [R_DUE_LIST] = "SELECT id, due_at FROM jobs WHERE due_at IS NOT NULL",
    [R_POLICY_LIST] = "SELECT name, policy FROM queues",
    [R_LOCK_LIST] = ("SELECT key, job_id, owner, reason, expires_at, created_at FROM locks "
                     "ORDER BY key"),
};

/* Every file's statement tables: each statement's SQL is in exactly one. */
static const char *const *const writer_tables[] = {
    writer_sql,
    sqlite_outbox_writer_sql,
    sqlite_subs_writer_sql,
    sqlite_artifacts_writer_sql,
};
static const char *const *const reader_tables[] = {
    reader_sql,
    sqlite_outbox_reader_sql,
    sqlite_subs_reader_sql,
    sqlite_artifacts_reader_sql,
};

#define CHECKPOINT_PAGES 4000 /* 16 MB of 4 KB pages */

static int checkpointer_start(struct sqlite_store *s);

/* Log an SQLite failure and map it to a drover code. */
int sqlite_fail(sqlite3 *db, const char *what)
{
    struct log_line l;
    if (log_begin(&l, LOG_ERROR, "sqlite error")) {
        log_str(&l, "op", what);
        log_str(&l, "error", sqlite3_errmsg(db));
        log_int(&l, "code", sqlite3_extended_errcode(db));
        log_end(&l);
    }
    int code = sqlite3_errcode(db);
    return code == SQLITE_NOMEM ? -DRV_ENOMEM : -DRV_ESTORE;
}

/* Run a statement that returns no rows, then reset it. */
int sqlite_step_done(sqlite3 *db, sqlite3_stmt *stmt, const char *what)
{
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc == SQLITE_DONE ? 0 : sqlite_fail(db, what);
}

static int exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        log_printf(LOG_ERROR, "sqlite: %s: %s", sql, msg ? msg : "?");
        sqlite3_free(msg);
        return -DRV_ESTORE;
    }
    return 0;
}

/* ---- binding and reading columns ---- */

static enum job_state column_state(sqlite3_stmt *s, int i)
{
    const char *t = (const char *)sqlite3_column_text(s, i);
    return t ? job_state_parse(t) : JOB_NONE;
}

/* The columns a transition can change, at their JOB_COLUMNS positions (W_JOB_UPDATE). */
static int bind_job_changes(sqlite3_stmt *s, const struct job *job)
{
    int rc = 0;
    bind_text(s, 1, job->id);
    bind_text(s, 3, job_state_name(job->state));
    bind_text(s, 4, job->step);
    sqlite3_bind_int(s, 5, job->attempt);
    bind_or_null(s, 11, job->run_at_ms);
    sqlite3_bind_int(s, 12, job->cancel_requested);
    rc = rc ? rc : bind_json(s, 13, job->result);
    rc = rc ? rc : bind_json(s, 14, job->error);
    rc = rc ? rc : bind_json(s, 15, job->checkpoints);
    sqlite3_bind_int64(s, 17, job->updated_at_ms);
    sqlite3_bind_int64(s, 18, job->seq);
    bind_text(s, 19, job->lease_token);
    bind_text(s, 20, job->worker);
    bind_or_null(s, 21, job->lease_expires_ms);
    bind_or_null(s, 22, job->started_at_ms);
    bind_or_null(s, 23, job->due_at_ms);
    bind_text(s, 25, job->waiting_for);
    bind_text(s, 26, job->run_id);
    return rc;
}

/* Every column of JOB_COLUMNS (W_JOB_INSERT). */
static int bind_job(sqlite3_stmt *s, const struct job *job)
{
    int rc = bind_job_changes(s, job);
    bind_text(s, 2, job->queue);
    bind_text(s, 6, job->payload ? job->payload : "{}");
    bind_text(s, 7, job->dedup_key);
    bind_text(s, 8, job->concurrency_key);
    rc = rc ? rc : bind_json(s, 9, job->lock_keys);
    bind_text(s, 10, job->webhook_url);
    sqlite3_bind_int64(s, 16, job->created_at_ms);
    bind_or_null(s, 24, job->concurrency_limit);
    return rc;
}

/* Fill job from a row of JOB_COLUMNS. */
static int read_job_at(sqlite3_stmt *s, int b, struct job *job)
{
    job_init(job);
    const char *id = (const char *)sqlite3_column_text(s, b);
    snprintf(job->id, sizeof(job->id), "%s", id ? id : "");
    job->queue = column_strdup(s, b + 1);
    job->state = column_state(s, b + 2);
    job->step = column_strdup(s, b + 3);
    job->attempt = sqlite3_column_int(s, b + 4);
    job->payload = column_strdup(s, b + 5);
    job->dedup_key = column_strdup(s, b + 6);
    job->concurrency_key = column_strdup(s, b + 7);
    job->lock_keys = column_json(s, b + 8);
    job->webhook_url = column_strdup(s, b + 9);
    job->run_at_ms = sqlite3_column_int64(s, b + 10);
    job->cancel_requested = sqlite3_column_int(s, b + 11) != 0;
    job->result = column_json(s, b + 12);
    job->error = column_json(s, b + 13);
    job->checkpoints = column_json(s, b + 14);
    job->created_at_ms = sqlite3_column_int64(s, b + 15);
    job->updated_at_ms = sqlite3_column_int64(s, b + 16);
    job->seq = sqlite3_column_int64(s, b + 17);
    job->lease_token = column_strdup(s, b + 18);
    job->worker = column_strdup(s, b + 19);
    job->lease_expires_ms = sqlite3_column_int64(s, b + 20);
    job->started_at_ms = sqlite3_column_int64(s, b + 21);
    job->due_at_ms = sqlite3_column_int64(s, b + 22);
    job->concurrency_limit = sqlite3_column_int(s, b + 23);
    job->waiting_for = column_strdup(s, b + 24);
    job->run_id = column_strdup(s, b + 25);
    if (job->queue == NULL || job->payload == NULL) {
        job_release(job);
        return -DRV_ENOMEM;
    }
    return 0;
}

static int read_job(sqlite3_stmt *s, struct job *job)
{
    return read_job_at(s, 0, job);
}

int sqlite_read_event_at(sqlite3_stmt *s, int b, struct job_event *ev)
{
    job_event_init(ev);
    const char *id = (const char *)sqlite3_column_text(s, b);
    snprintf(ev->job_id, sizeof(ev->job_id), "%s", id ? id : "");
    ev->seq = sqlite3_column_int64(s, b + 1);
    ev->type = column_strdup(s, b + 2);
    ev->at_ms = sqlite3_column_int64(s, b + 3);
    ev->state = column_state(s, b + 4);
    ev->prev_state = column_state(s, b + 5);
    ev->step = column_strdup(s, b + 6);
    ev->attempt = sqlite3_column_int(s, b + 7);
    ev->data = column_json(s, b + 8);
    if (ev->type == NULL) {
        job_event_release(ev);
        return -DRV_ENOMEM;
    }
    return 0;
}

static int read_event(sqlite3_stmt *s, struct job_event *ev)
{
    return sqlite_read_event_at(s, 0, ev);
}

/* ---- opening, migrating, closing ---- */

/* Process-wide settings, made once before SQLite initializes itself.
 * Memory statistics off: with them on, every allocation of every connection
 * takes one global mutex (the writer and the HTTP threads' readers meet
 * there), and drover never reads them. */
static void configure_sqlite(void)
{
    int rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (rc != SQLITE_OK) /* SQLite was initialized before: the statistics stay on */
        log_printf(LOG_WARN, "sqlite: cannot turn memory statistics off: %s", sqlite3_errstr(rc));
}

static int open_db(const char *path, int flags, sqlite3 **out)
{
    static pthread_once_t configured = PTHREAD_ONCE_INIT;
    pthread_once(&configured, configure_sqlite);

    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        log_printf(LOG_ERROR, "cannot open '%s': %s", path,
                   db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return -DRV_ESTORE;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, 5000);
    *out = db;
    return 0;
}

static int migrate(sqlite3 *db)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK)
        return sqlite_fail(db, "user_version");
    int version = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
    sqlite3_finalize(s);
    if (version < 0)
        return sqlite_fail(db, "user_version");
    if (version > SCHEMA_VERSION) {
        log_printf(LOG_ERROR, "the database has schema version %d; this drover knows up to %d",
                   version, SCHEMA_VERSION);
        return -DRV_ESTORE;
    }
    for (int v = version; v < SCHEMA_VERSION; v++) {
        char bump[64];
        snprintf(bump, sizeof(bump), "PRAGMA user_version = %d", v + 1);
        int rc = exec(db, "BEGIN IMMEDIATE");
        if (rc == 0)
            rc = exec(db, migrations[v]);
        if (rc == 0)
            rc = exec(db, bump);
        if (rc == 0)
            rc = exec(db, "COMMIT");
        if (rc < 0) {
            exec(db, "ROLLBACK");
            return rc;
        }
        log_printf(LOG_INFO, "migrated the store to schema version %d", v + 1);
    }
    return 0;
}

/*
 * Prepare each of the n statements on db from the one table of tables that
 * has its SQL (each file has a table: store_sqlite_internal.h). No SQL, or
 * SQL in two tables, is a mistake in the tables: refuse to open. kind
 * ("writer", "reader") names the enum in the log.
 */
static int prepare_all(sqlite3 *db, const char *kind, const char *const *const *tables,
                       size_t n_tables, sqlite3_stmt **stmt, int n)
{
    for (int i = 0; i < n; i++) {
        const char *text = NULL;
        int found = 0;
        for (size_t t = 0; t < n_tables; t++) {
            if (tables[t][i]) {
                text = tables[t][i];
                found++;
            }
        }
        if (found != 1) {
            log_printf(LOG_ERROR, "sqlite: %s statement %d has SQL in %d tables, not 1", kind, i,
                       found);
            return -DRV_EINTERNAL;
        }
        if (sqlite3_prepare_v3(db, text, -1, SQLITE_PREPARE_PERSISTENT, &stmt[i], NULL) !=
            SQLITE_OK)
            return sqlite_fail(db, text);
    }
    return 0;
}

static void finalize_all(sqlite3_stmt **stmt, int n)
{
    for (int i = 0; i < n; i++) {
        sqlite3_finalize(stmt[i]);
        stmt[i] = NULL;
    }
}

static void checkpointer_stop(struct checkpointer *c)
{
    if (c->running) {
        pthread_mutex_lock(&c->lock);
        c->stopping = true;
        pthread_cond_signal(&c->cond);
        pthread_mutex_unlock(&c->lock);
        pthread_join(c->thread, NULL);
        c->running = false;
    }
    sqlite3_close(c->db);
    c->db = NULL;
}

static void sqlite_close(struct store *st)
{
    struct sqlite_store *s = sqlite_store(st);
    checkpointer_stop(&s->ckpt);
    for (int i = 0; i < s->n_readers; i++) {
        finalize_all(s->readers[i].stmt, R__COUNT);
        sqlite3_close(s->readers[i].db);
    }
    free(s->readers);
    finalize_all(s->wstmt, W__COUNT);
    if (s->wdb) {
        /* Fold the WAL back into the database so a clean stop leaves one file. */
        sqlite3_wal_checkpoint_v2(s->wdb, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        sqlite3_close(s->wdb);
    }
    pthread_mutex_destroy(&s->pool_lock);
    pthread_cond_destroy(&s->pool_cond);
    pthread_mutex_destroy(&s->ckpt.lock);
    pthread_cond_destroy(&s->ckpt.cond);
    free(s->path);
    free(s);
}

static int sqlite_open(const struct store_options *opt, struct store **out)
{
    int rc = 0;
    struct sqlite_store *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -DRV_ENOMEM;
    s->base.engine = &store_sqlite_engine;
    pthread_mutex_init(&s->pool_lock, NULL);
    pthread_cond_init(&s->pool_cond, NULL);
    pthread_mutex_init(&s->ckpt.lock, NULL);
    pthread_cond_init(&s->ckpt.cond, NULL);

    if (mkdir(opt->data_dir, 0700) < 0 && errno != EEXIST) {
        log_printf(LOG_ERROR, "cannot create '%s': %s", opt->data_dir, strerror(errno));
        rc = -DRV_EIO;
        goto out;
    }
    if (asprintf(&s->path, "%s/drover.db", opt->data_dir) < 0) {
        s->path = NULL;
        rc = -DRV_ENOMEM;
        goto out;
    }
    rc = open_db(s->path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &s->wdb);
    if (rc < 0)
        goto out;
    /* WAL + synchronous=FULL: every COMMIT is on disk before it returns. */
    rc = exec(s->wdb, "PRAGMA journal_mode = WAL;"
                      "PRAGMA synchronous = FULL;"
                      "PRAGMA foreign_keys = OFF;"
                      "PRAGMA temp_store = MEMORY;"
                      "PRAGMA cache_size = -65536;"
                      "PRAGMA wal_autocheckpoint = 0;");
    if (rc == 0)
        rc = migrate(s->wdb);
    if (rc == 0)
        rc = prepare_all(s->wdb, "writer", writer_tables, ARRAY_SIZE(writer_tables), s->wstmt,
                         W__COUNT);
    if (rc < 0)
        goto out;

    s->n_readers = opt->readers > 0 ? opt->readers : 1;
    s->readers = calloc((size_t)s->n_readers, sizeof(*s->readers));
    if (s->readers == NULL) {
        s->n_readers = 0;
        rc = -DRV_ENOMEM;
        goto out;
    }
    for (int i = 0; i < s->n_readers; i++) {
        struct reader *r = &s->readers[i];
        rc = open_db(s->path, SQLITE_OPEN_READONLY, &r->db);
        if (rc == 0)
            rc = exec(r->db, "PRAGMA query_only = ON; PRAGMA cache_size = -16384;");
        if (rc == 0)
            rc = prepare_all(r->db, "reader", reader_tables, ARRAY_SIZE(reader_tables), r->stmt,
                             R__COUNT);
        if (rc < 0)
            goto out;
        r->next_free = s->free_readers;
        s->free_readers = r;
    }
    s->ckpt.pages = opt->checkpoint_pages > 0 ? opt->checkpoint_pages : CHECKPOINT_PAGES;
    rc = checkpointer_start(s);
    if (rc < 0)
        goto out;
    *out = &s->base;
    s = NULL;
out:
    if (s)
        sqlite_close(&s->base);
    return rc;
}

/* ---- the checkpointer ---- */

static void *checkpointer_main(void *arg)
{
    struct sqlite_store *s = arg;
    struct checkpointer *c = &s->ckpt;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (!c->wanted && !c->stopping)
            pthread_cond_wait(&c->cond, &c->lock);
        if (c->stopping)
            break;
        c->wanted = false;
        pthread_mutex_unlock(&c->lock);
        /* PASSIVE: copy what no reader still needs, never wait for anyone. */
        int log_frames = 0, done_frames = 0;
        int rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames,
                                           &done_frames);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            sqlite_fail(c->db, "checkpoint");
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* After each commit on the writer connection: wake the checkpointer when the WAL is long. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages)
{
    (void)name;
    struct checkpointer *c = arg;
    if (pages < c->next_pages - c->pages)
        c->next_pages = c->pages; /* the WAL started over */
    if (pages >= 2 * c->pages) {
        /* Between two transactions: nothing is added while this runs. BUSY
         * when the thread is checkpointing: the next commit tries again. */
        int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            log_printf(LOG_WARN, "checkpoint on the writer: %s", sqlite3_errstr(rc));
    } else if (pages >= c->next_pages) {
        c->next_pages = pages + c->pages / 2;
        pthread_mutex_lock(&c->lock);
        c->wanted = true;
        pthread_cond_signal(&c->cond);
        pthread_mutex_unlock(&c->lock);
    }
    return SQLITE_OK;
}

static int checkpointer_start(struct sqlite_store *s)
{
    int rc = open_db(s->path, SQLITE_OPEN_READWRITE, &s->ckpt.db);
    /* A connection learns that the database is in WAL mode when it first
     * reads it; until then sqlite3_wal_checkpoint_v2() does nothing at all
     * (and says so only by setting its counts to -1). */
    if (rc == 0)
        rc = exec(s->ckpt.db, "SELECT count(*) FROM sqlite_schema;");
    if (rc < 0)
        return rc;
    if (pthread_create(&s->ckpt.thread, NULL, checkpointer_main, s) != 0)
        return -DRV_EINTERNAL;
    pthread_setname_np(s->ckpt.thread, "drover-ckpt"); /* for top -H and perf; best effort */
    s->ckpt.running = true;
    s->ckpt.next_pages = s->ckpt.pages;
    sqlite3_wal_hook(s->wdb, on_wal_commit, &s->ckpt);
    return 0;
}

/* ---- the reader pool ---- */

struct reader *sqlite_reader_acquire(struct sqlite_store *s)
{
    pthread_mutex_lock(&s->pool_lock);
    while (s->free_readers == NULL)
        pthread_cond_wait(&s->pool_cond, &s->pool_lock);
    struct reader *r = s->free_readers;
    s->free_readers = r->next_free;
    pthread_mutex_unlock(&s->pool_lock);
    return r;
}

void sqlite_reader_release(struct sqlite_store *s, struct reader *r)
{
    pthread_mutex_lock(&s->pool_lock);
    r->next_free = s->free_readers;
    s->free_readers = r;
    pthread_cond_signal(&s->pool_cond);
    pthread_mutex_unlock(&s->pool_lock);
}

/* ---- write side ---- */

static int run_writer(struct store *st, enum writer_stmt w)
{
    struct sqlite_store *s = sqlite_store(st);
    return sqlite_step_done(s->wdb, s->wstmt[w], writer_sql[w]);
}

static int sqlite_tx_begin(struct store *st)
{
    return run_writer(st, W_BEGIN);
}

static int sqlite_tx_commit(struct store *st)
{
    return run_writer(st, W_COMMIT);
}

static void sqlite_tx_rollback(struct store *st)
{
    struct sqlite_store *s = sqlite_store(st);
    if (!sqlite3_get_autocommit(s->wdb))
        run_writer(st, W_ROLLBACK);
}

static int sqlite_job_insert(struct store *st, const struct job *job)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_JOB_INSERT];
    int rc = bind_job(stmt, job);
    if (rc < 0) {
        sqlite3_clear_bindings(stmt);
        return rc;
    }
    return sqlite_step_done(s->wdb, stmt, "job insert");
}

static int sqlite_job_update(struct store *st, const struct job *job)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_JOB_UPDATE];
    int rc = bind_job_changes(stmt, job);
    if (rc < 0) {
        sqlite3_clear_bindings(stmt);
        return rc;
    }
    rc = sqlite_step_done(s->wdb, stmt, "job update");
    if (rc == 0 && sqlite3_changes(s->wdb) != 1)
        rc = -DRV_ENOT_FOUND;
    return rc;
}

/* Look one job up by id with stmt (bound at ?1). */
static int query_job(sqlite3 *db, sqlite3_stmt *stmt, const char *id, struct job *out)
{
    bind_text(stmt, 1, id);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        rc = read_job(stmt, out);
    else if (rc == SQLITE_DONE)
        rc = -DRV_ENOT_FOUND;
    else
        rc = sqlite_fail(db, "job get");
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc;
}

static int sqlite_job_load(struct store *st, const char *id, struct job *out)
{
    struct sqlite_store *s = sqlite_store(st);
    return query_job(s->wdb, s->wstmt[W_JOB_LOAD], id, out);
}

static int sqlite_event_insert(struct store *st, const struct job_event *ev)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_EVENT_INSERT];
    bind_text(stmt, 1, ev->job_id);
    sqlite3_bind_int64(stmt, 2, ev->seq);
    bind_text(stmt, 3, ev->type);
    sqlite3_bind_int64(stmt, 4, ev->at_ms);
    bind_text(stmt, 5, job_state_name(ev->state));
    bind_text(stmt, 6, job_state_name(ev->prev_state));
    bind_text(stmt, 7, ev->step);
    sqlite3_bind_int(stmt, 8, ev->attempt);
    int rc = bind_json(stmt, 9, ev->data);
    if (rc < 0) {
        sqlite3_clear_bindings(stmt);
        return rc;
    }
    return sqlite_step_done(s->wdb, stmt, "event insert");
}

static int sqlite_policy_put(struct store *st, const char *queue, const struct policy *p,
                             int64_t now_ms)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_POLICY_PUT];
    json_t *obj = policy_to_json(p, true);
    if (obj == NULL)
        return -DRV_ENOMEM;
    bind_text(stmt, 1, queue);
    int rc = bind_json(stmt, 2, obj);
    json_decref(obj);
    sqlite3_bind_int64(stmt, 3, now_ms);
    if (rc < 0) {
        sqlite3_clear_bindings(stmt);
        return rc;
    }
    return sqlite_step_done(s->wdb, stmt, "policy put");
}

/* Collect the first column (text) of stmt's rows into out[max][size]. */
int sqlite_collect_text(struct sqlite_store *s, sqlite3_stmt *stmt, int max, char *out, size_t size,
                        int *n_out, const char *what)
{
    int rc = SQLITE_DONE, n = 0;
    while (n < max && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(stmt, 0);
        snprintf(out + (size_t)n++ * size, size, "%s", t ? t : "");
    }
    rc = (rc == SQLITE_ROW || rc == SQLITE_DONE) ? 0 : sqlite_fail(s->wdb, what);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    *n_out = n;
    return rc;
}

static int sqlite_job_ready_ids(struct store *st, const char *queue, int max,
                                char (*ids)[ULID_LEN + 1], int *n_out)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_READY_IDS];
    bind_text(stmt, 1, queue);
    sqlite3_bind_int(stmt, 2, max);
    return sqlite_collect_text(s, stmt, max, ids[0], sizeof(ids[0]), n_out, "ready ids");
}

static int sqlite_job_dedup_find(struct store *st, const char *queue, const char *key, char *id_out,
                                 enum job_state *state, int64_t *created_ms)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_DEDUP_FIND];
    bind_text(stmt, 1, queue);
    bind_text(stmt, 2, key);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(stmt, 0);
        snprintf(id_out, ULID_LEN + 1, "%s", id ? id : "");
        *state = column_state(stmt, 1);
        *created_ms = sqlite3_column_int64(stmt, 2);
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? -DRV_ENOT_FOUND : sqlite_fail(s->wdb, "dedup find");
    }
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc;
}

static int sqlite_job_slots_held(struct store *st, const char *queue, const char *key, int bound,
                                 int *held, char *oldest_id)
{
    struct sqlite_store *s = sqlite_store(st);
    enum writer_stmt w = W_SLOTS_HELD;
    sqlite3_stmt *stmt = s->wstmt[w];
    bind_text(stmt, 1, queue);
    bind_text(stmt, 2, key);
    sqlite3_bind_int(stmt, 3, bound);
    int rc = sqlite3_step(stmt);
    *held = rc == SQLITE_ROW ? sqlite3_column_int(stmt, 0) : 0;
    if (rc == SQLITE_ROW && *held >= bound && oldest_id) {
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
        stmt = s->wstmt[w = W_SLOTS_OLDEST];
        bind_text(stmt, 1, queue);
        bind_text(stmt, 2, key);
        rc = sqlite3_step(stmt);
        const char *id = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(stmt, 0) : NULL;
        snprintf(oldest_id, ULID_LEN + 1, "%s", id ? id : "");
    }
    rc = rc == SQLITE_ROW ? 0 : sqlite_fail(s->wdb, writer_sql[w]);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc;
}

static int sqlite_job_waiting_ids(struct store *st, const char *queue, const char *key, int max,
                                  char (*ids)[ULID_LEN + 1], int *n_out)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_WAITING_IDS];
    bind_text(stmt, 1, queue);
    bind_text(stmt, 2, key);
    sqlite3_bind_int(stmt, 3, max);
    return sqlite_collect_text(s, stmt, max, ids[0], sizeof(ids[0]), n_out, "waiting ids");
}

static int sqlite_job_waiting_keys(struct store *st, const char *queue, int max,
                                   char (*keys)[JOB_KEY_MAX + 1], int *n_out)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_WAITING_KEYS];
    bind_text(stmt, 1, queue);
    sqlite3_bind_int(stmt, 2, max);
    return sqlite_collect_text(s, stmt, max, keys[0], sizeof(keys[0]), n_out, "waiting keys");
}

/* ---- idempotency records ---- */

static int sqlite_idem_get(struct store *st, const char *key, struct idem_record *out)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_IDEM_GET];
    bind_text(stmt, 1, key);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof(*out));
        const char *k = (const char *)sqlite3_column_text(stmt, 0);
        const char *loc = (const char *)sqlite3_column_text(stmt, 3);
        snprintf(out->key, sizeof(out->key), "%s", k ? k : "");
        if (sqlite3_column_bytes(stmt, 1) == IDEM_FINGERPRINT_LEN)
            memcpy(out->fingerprint, sqlite3_column_blob(stmt, 1), IDEM_FINGERPRINT_LEN);
        out->status = sqlite3_column_int(stmt, 2);
        snprintf(out->location, sizeof(out->location), "%s", loc ? loc : "");
        out->body = column_strdup(stmt, 4);
        out->created_ms = sqlite3_column_int64(stmt, 5);
        rc = out->body ? 0 : -DRV_ENOMEM;
    } else {
        rc = rc == SQLITE_DONE ? -DRV_ENOT_FOUND : sqlite_fail(s->wdb, "idempotency get");
    }
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc;
}

static int sqlite_idem_put(struct store *st, const struct idem_record *r, int64_t expired_ms)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_IDEM_PUT];
    bind_text(stmt, 1, r->key);
    sqlite3_bind_blob(stmt, 2, r->fingerprint, IDEM_FINGERPRINT_LEN, SQLITE_STATIC);
    sqlite3_bind_int(stmt, 3, r->status);
    bind_text(stmt, 4, r->location[0] ? r->location : NULL);
    bind_text(stmt, 5, r->body);
    sqlite3_bind_int64(stmt, 6, r->created_ms);
    sqlite3_bind_int64(stmt, 7, expired_ms);
    int rc = sqlite_step_done(s->wdb, stmt, "idempotency put");
    return rc < 0 ? rc : sqlite3_changes(s->wdb) == 0 ? -DRV_ECONFLICT : 0;
}

static int sqlite_idem_sweep(struct store *st, int64_t expired_ms, int limit, int *n_out)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_IDEM_SWEEP];
    sqlite3_bind_int64(stmt, 1, expired_ms);
    sqlite3_bind_int(stmt, 2, limit);
    int rc = sqlite_step_done(s->wdb, stmt, "idempotency sweep");
    *n_out = rc < 0 ? 0 : sqlite3_changes(s->wdb);
    return rc;
}

/* ---- runner callbacks' webhook-ids ---- */

static int sqlite_callback_id_seen(struct store *st, const char *msg_id)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_CALLBACK_SEEN];
    bind_text(stmt, 1, msg_id);
    int rc = sqlite3_step(stmt);
    rc = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : sqlite_fail(s->wdb, "callback id seen");
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc;
}

static int sqlite_callback_id_put(struct store *st, const char *msg_id, const char *job_id,
                                  int64_t at_ms)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_CALLBACK_PUT];
    bind_text(stmt, 1, msg_id);
    bind_text(stmt, 2, job_id);
    sqlite3_bind_int64(stmt, 3, at_ms);
    return sqlite_step_done(s->wdb, stmt, "callback id put");
}

static int sqlite_callback_id_sweep(struct store *st, int64_t before_ms, int limit, int *n_out)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_CALLBACK_SWEEP];
    sqlite3_bind_int64(stmt, 1, before_ms);
    sqlite3_bind_int(stmt, 2, limit);
    int rc = sqlite_step_done(s->wdb, stmt, "callback id sweep");
    *n_out = rc < 0 ? 0 : sqlite3_changes(s->wdb);
    return rc;
}

/* ---- locks ---- */

static int read_lock(sqlite3_stmt *stmt, struct lock *l)
{
    memset(l, 0, sizeof(*l));
    const char *key = (const char *)sqlite3_column_text(stmt, 0);
    const char *job = (const char *)sqlite3_column_text(stmt, 1);
    snprintf(l->key, sizeof(l->key), "%s", key ? key : "");
    snprintf(l->job_id, sizeof(l->job_id), "%s", job ? job : "");
    l->owner = column_strdup(stmt, 2);
    l->reason = column_strdup(stmt, 3);
    l->expires_at_ms = sqlite3_column_int64(stmt, 4);
    l->created_at_ms = sqlite3_column_int64(stmt, 5);
    return 0;
}

static int sqlite_lock_get(struct store *st, const char *key, struct lock *out)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_LOCK_GET];
    bind_text(stmt, 1, key);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        rc = read_lock(stmt, out);
    else
        rc = rc == SQLITE_DONE ? -DRV_ENOT_FOUND : sqlite_fail(s->wdb, "lock get");
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc;
}

static int sqlite_lock_put(struct store *st, const struct lock *l)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_LOCK_PUT];
    bind_text(stmt, 1, l->key);
    bind_text(stmt, 2, l->job_id[0] ? l->job_id : NULL);
    bind_text(stmt, 3, l->owner);
    bind_text(stmt, 4, l->reason);
    bind_or_null(stmt, 5, l->expires_at_ms);
    sqlite3_bind_int64(stmt, 6, l->created_at_ms);
    return sqlite_step_done(s->wdb, stmt, "lock put");
}

/* Run a writer statement bound to one text and report rows changed. w may
 * be another file's statement: its SQL comes from the statement itself. */
int sqlite_exec_text(struct sqlite_store *s, enum writer_stmt w, const char *text)
{
    sqlite3_stmt *stmt = s->wstmt[w];
    bind_text(stmt, 1, text);
    int rc = sqlite_step_done(s->wdb, stmt, sqlite3_sql(stmt));
    return rc < 0 ? rc : sqlite3_changes(s->wdb);
}

static int sqlite_lock_delete(struct store *st, const char *key)
{
    int rc = sqlite_exec_text(sqlite_store(st), W_LOCK_DELETE, key);
    return rc < 0 ? rc : rc == 0 ? -DRV_ENOT_FOUND : 0;
}

static int sqlite_locks_of_job(struct store *st, const char *job_id, int max,
                               char (*keys)[JOB_KEY_MAX + 1], int *n_out)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_LOCKS_OF_JOB];
    bind_text(stmt, 1, job_id);
    sqlite3_bind_int(stmt, 2, max);
    int rc = sqlite_collect_text(s, stmt, max, keys[0], sizeof(keys[0]), n_out, "locks of job");
    if (rc == 0 && *n_out > 0)
        rc = sqlite_exec_text(s, W_LOCKS_DELETE_JOB, job_id) < 0 ? -DRV_ESTORE : 0;
    return rc;
}

static int sqlite_lock_wait_add(struct store *st, const char *key, const char *job_id)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_LOCK_WAIT_ADD];
    bind_text(stmt, 1, key);
    bind_text(stmt, 2, job_id);
    return sqlite_step_done(s->wdb, stmt, "lock wait add");
}

static int sqlite_lock_waiters(struct store *st, const char *key, int max,
                               char (*ids)[ULID_LEN + 1], int *n_out)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_LOCK_WAITERS];
    bind_text(stmt, 1, key);
    sqlite3_bind_int(stmt, 2, max);
    return sqlite_collect_text(s, stmt, max, ids[0], sizeof(ids[0]), n_out, "lock waiters");
}

static int sqlite_lock_wait_remove_job(struct store *st, const char *job_id)
{
    int rc = sqlite_exec_text(sqlite_store(st), W_LOCK_WAIT_REMOVE, job_id);
    return rc < 0 ? rc : 0;
}

static int sqlite_lock_list(struct store *st, struct lock_list *out)
{
    struct sqlite_store *s = sqlite_store(st);
    memset(out, 0, sizeof(*out));
    struct reader *r = sqlite_reader_acquire(s);
    sqlite3_stmt *stmt = r->stmt[R_LOCK_LIST];
    int rc, cap = 0;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (out->n == cap) {
            cap = cap ? cap * 2 : 16;
            struct lock *p = realloc(out->locks, (size_t)cap * sizeof(*p));
            if (p == NULL) {
                rc = SQLITE_NOMEM;
                break;
            }
            out->locks = p;
        }
        read_lock(stmt, &out->locks[out->n++]);
    }
    rc = rc == SQLITE_DONE ? 0 : rc == SQLITE_NOMEM ? -DRV_ENOMEM : sqlite_fail(r->db, "lock list");
    sqlite3_reset(stmt);
    sqlite_reader_release(s, r);
    if (rc < 0)
        lock_list_release(out);
    return rc;
}

/* ---- read side ---- */

static int sqlite_job_get(struct store *st, const char *id, struct job *out)
{
    struct sqlite_store *s = sqlite_store(st);
    struct reader *r = sqlite_reader_acquire(s);
    int rc = query_job(r->db, r->stmt[R_JOB_GET], id, out);
    sqlite_reader_release(s, r);
    return rc;
}

static int sqlite_job_list(struct store *st, const struct job_filter *f, struct job_list *out)
{
    struct sqlite_store *s = sqlite_store(st);
    char sql[512];
    int n = snprintf(sql, sizeof(sql), "SELECT " JOB_COLUMNS " FROM jobs WHERE 1");
    /* Only the filters given appear in the SQL, so SQLite can pick the matching index. */
    if (f->queue)
        n += snprintf(sql + n, sizeof(sql) - (size_t)n, " AND queue = ?1");
    if (f->state != JOB_NONE)
        n += snprintf(sql + n, sizeof(sql) - (size_t)n, " AND state = ?2");
    if (f->concurrency_key)
        n += snprintf(sql + n, sizeof(sql) - (size_t)n, " AND concurrency_key = ?3");
    if (f->before_id)
        n += snprintf(sql + n, sizeof(sql) - (size_t)n, " AND id < ?4");
    snprintf(sql + n, sizeof(sql) - (size_t)n, " ORDER BY id DESC LIMIT ?5");

    memset(out, 0, sizeof(*out));
    out->jobs = calloc((size_t)f->limit + 1, sizeof(*out->jobs));
    if (out->jobs == NULL)
        return -DRV_ENOMEM;

    struct reader *r = sqlite_reader_acquire(s);
    sqlite3_stmt *stmt = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(r->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        rc = sqlite_fail(r->db, "job list");
        goto out;
    }
    if (f->queue)
        bind_text(stmt, 1, f->queue);
    if (f->state != JOB_NONE)
        bind_text(stmt, 2, job_state_name(f->state));
    if (f->concurrency_key)
        bind_text(stmt, 3, f->concurrency_key);
    if (f->before_id)
        bind_text(stmt, 4, f->before_id);
    sqlite3_bind_int(stmt, 5, f->limit + 1); /* one more tells whether there is a next page */
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (out->n == f->limit) {
            out->more = true;
            break;
        }
        rc = read_job(stmt, &out->jobs[out->n]);
        if (rc < 0)
            goto out;
        out->n++;
    }
    rc = (rc == SQLITE_ROW || rc == SQLITE_DONE) ? 0 : sqlite_fail(r->db, "job list");
out:
    sqlite3_finalize(stmt);
    sqlite_reader_release(s, r);
    if (rc < 0)
        job_list_release(out);
    return rc;
}

static int sqlite_event_list(struct store *st, const char *job_id, int64_t after_seq, int limit,
                             struct event_list *out)
{
    struct sqlite_store *s = sqlite_store(st);
    memset(out, 0, sizeof(*out));
    out->events = calloc((size_t)limit + 1, sizeof(*out->events));
    if (out->events == NULL)
        return -DRV_ENOMEM;
    struct reader *r = sqlite_reader_acquire(s);
    sqlite3_stmt *stmt = r->stmt[R_EVENTS];
    bind_text(stmt, 1, job_id);
    sqlite3_bind_int64(stmt, 2, after_seq);
    sqlite3_bind_int(stmt, 3, limit + 1);
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (out->n == limit) {
            out->more = true;
            break;
        }
        rc = read_event(stmt, &out->events[out->n]);
        if (rc < 0)
            break;
        out->n++;
    }
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        rc = 0;
    else if (rc > 0)
        rc = sqlite_fail(r->db, "event list");
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    sqlite_reader_release(s, r);
    if (rc < 0)
        event_list_release(out);
    return rc;
}

static int sqlite_policy_get(struct store *st, const char *queue, struct policy *out)
{
    struct sqlite_store *s = sqlite_store(st);
    struct reader *r = sqlite_reader_acquire(s);
    sqlite3_stmt *stmt = r->stmt[R_POLICY_GET];
    bind_text(stmt, 1, queue);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(stmt, 0);
        json_t *obj = text ? json_loads(text, 0, NULL) : NULL;
        struct errmsg err;
        policy_init(out);
        rc = obj ? policy_from_json(obj, out, &err) : -DRV_ESTORE;
        json_decref(obj);
        if (rc < 0) {
            log_printf(LOG_ERROR, "stored policy of queue '%s' does not parse", queue);
            policy_release(out);
            rc = -DRV_ESTORE;
        }
    } else if (rc == SQLITE_DONE) {
        rc = -DRV_ENOT_FOUND;
    } else {
        rc = sqlite_fail(r->db, "policy get");
    }
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    sqlite_reader_release(s, r);
    return rc;
}

static int sqlite_due_list(struct store *st,
                           void (*each)(void *arg, const char *id, int64_t due_ms), void *arg)
{
    struct sqlite_store *s = sqlite_store(st);
    struct reader *r = sqlite_reader_acquire(s);
    sqlite3_stmt *stmt = r->stmt[R_DUE_LIST];
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
        each(arg, (const char *)sqlite3_column_text(stmt, 0), sqlite3_column_int64(stmt, 1));
    rc = rc == SQLITE_DONE ? 0 : sqlite_fail(r->db, "due list");
    sqlite3_reset(stmt);
    sqlite_reader_release(s, r);
    return rc;
}

static int sqlite_policy_list(struct store *st,
                              void (*each)(void *arg, const char *queue, const struct policy *p),
                              void *arg)
{
    struct sqlite_store *s = sqlite_store(st);
    struct reader *r = sqlite_reader_acquire(s);
    sqlite3_stmt *stmt = r->stmt[R_POLICY_LIST];
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(stmt, 0);
        const char *text = (const char *)sqlite3_column_text(stmt, 1);
        json_t *obj = text ? json_loads(text, 0, NULL) : NULL;
        struct policy p;
        struct errmsg err;
        policy_init(&p);
        if (obj && name && policy_from_json(obj, &p, &err) == 0)
            each(arg, name, &p);
        else
            log_printf(LOG_ERROR, "stored policy of queue '%s' does not parse", name ? name : "?");
        policy_release(&p);
        json_decref(obj);
    }
    rc = rc == SQLITE_DONE ? 0 : sqlite_fail(r->db, "policy list");
    sqlite3_reset(stmt);
    sqlite_reader_release(s, r);
    return rc;
}

static int sqlite_ping(struct store *st)
{
    struct sqlite_store *s = sqlite_store(st);
    struct reader *r = sqlite_reader_acquire(s);
    sqlite3_stmt *stmt = r->stmt[R_PING];
    int rc = sqlite3_step(stmt) == SQLITE_ROW ? 0 : sqlite_fail(r->db, "ping");
    sqlite3_reset(stmt);
    sqlite_reader_release(s, r);
    return rc;
}

const struct store_engine store_sqlite_engine = {
    .version = STORE_ENGINE_VERSION,
    .name = "sqlite",
    .open = sqlite_open,
    .close = sqlite_close,
    .tx_begin = sqlite_tx_begin,
    .tx_commit = sqlite_tx_commit,
    .tx_rollback = sqlite_tx_rollback,
    .job_insert = sqlite_job_insert,
    .job_update = sqlite_job_update,
    .job_load = sqlite_job_load,
    .event_insert = sqlite_event_insert,
    .policy_put = sqlite_policy_put,
    .job_ready_ids = sqlite_job_ready_ids,
    .job_dedup_find = sqlite_job_dedup_find,
    .job_slots_held = sqlite_job_slots_held,
    .job_waiting_ids = sqlite_job_waiting_ids,
    .job_waiting_keys = sqlite_job_waiting_keys,
    .idem_get = sqlite_idem_get,
    .idem_put = sqlite_idem_put,
    .idem_sweep = sqlite_idem_sweep,
    /* the outbox (store_sqlite_outbox.c) */
    .outbox_insert = sqlite_outbox_insert,
    .outbox_get = sqlite_outbox_get,
    .outbox_update = sqlite_outbox_update,
    .outbox_due_now = sqlite_outbox_due_now,
    .outbox_delivered = sqlite_outbox_delivered,
    .delivery_attempt_insert = sqlite_delivery_attempt_insert,
    .outbox_due = sqlite_outbox_due,
    .outbox_list = sqlite_outbox_list,
    .delivery_attempts = sqlite_delivery_attempts,
    .outbox_pending_keys = sqlite_outbox_pending_keys,
    .outbox_events = sqlite_outbox_events,
    .outbox_event_insert = sqlite_outbox_event_insert,
    .outbox_event_delete = sqlite_outbox_event_delete,
    .outbox_prune = sqlite_outbox_prune,
    .outbox_next = sqlite_outbox_next,
    /* runner callbacks' webhook-ids, locks, the read side (this file) */
    .callback_id_seen = sqlite_callback_id_seen,
    .callback_id_put = sqlite_callback_id_put,
    .callback_id_sweep = sqlite_callback_id_sweep,
    .lock_get = sqlite_lock_get,
    .lock_put = sqlite_lock_put,
    .lock_delete = sqlite_lock_delete,
    .locks_of_job = sqlite_locks_of_job,
    .lock_wait_add = sqlite_lock_wait_add,
    .lock_waiters = sqlite_lock_waiters,
    .lock_wait_remove_job = sqlite_lock_wait_remove_job,
    .lock_list = sqlite_lock_list,
    .job_get = sqlite_job_get,
    .job_list = sqlite_job_list,
    .event_list = sqlite_event_list,
    .policy_get = sqlite_policy_get,
    .ping = sqlite_ping,
    .due_list = sqlite_due_list,
    .policy_list = sqlite_policy_list,
    /* webhook subscriptions (store_sqlite_subs.c) */
    .sub_get = sqlite_sub_get,
    .sub_put = sqlite_sub_put,
    .sub_delete = sqlite_sub_delete,
    .sub_list = sqlite_sub_list,
    /* artifacts and retention (store_sqlite_artifacts.c) */
    .artifact_put = sqlite_artifact_put,
    .job_expired_ids = sqlite_job_expired_ids,
    .job_prune = sqlite_job_prune,
    .artifact_trash_forget = sqlite_artifact_trash_forget,
    .artifact_list = sqlite_artifact_list,
    .artifact_get = sqlite_artifact_get,
    .artifact_trash_list = sqlite_artifact_trash_list,
};
