/*
 * store_sqlite_outbox.c - the SQLite engine's outbox (outbox.h,
 * docs/adr/0014-outbox-and-delivery.md, 0015-outbox-one-row-per-event.md):
 * the outbox_events queue that job writes fill in the event's transaction,
 * the per-destination delivery rows (outbox) that the deliverer writes and
 * reads (due rows, pending keys, the next deadline), their delivery
 * attempts, and the delivery log read by job or by destination. The tables
 * are created by migrations 9 and 11 in store_sqlite.c.
 */
#include "store/store_sqlite_internal.h"

#include <stdio.h>
#include <string.h>

#define OUTBOX_COLUMNS                                                                             \
    "id, job_id, seq, dest, state, attempts, next_at, created_at, updated_at, last_status, "       \
    "last_error, last_latency_ms"

const char *const sqlite_outbox_writer_sql[W__COUNT] = {
    [W_OUTBOX_INSERT] = ("INSERT INTO outbox (job_id, seq, dest, state, attempts, next_at, "
                         "created_at, updated_at, last_status, last_error, last_latency_ms) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
    [W_OUTBOX_EVENT_INSERT] = "INSERT INTO outbox_events (job_id, seq) VALUES (?1, ?2)",
    [W_OUTBOX_EVENT_DELETE] = "DELETE FROM outbox_events WHERE id = ?1",
    [W_OUTBOX_GET] = "SELECT " OUTBOX_COLUMNS " FROM outbox WHERE id = ?1",
    [W_OUTBOX_UPDATE] = ("UPDATE outbox SET state = ?2, attempts = ?3, next_at = ?4, "
                         "updated_at = ?5, last_status = ?6, last_error = ?7, "
                         "last_latency_ms = ?8 WHERE id = ?1"),
    /* updated_at always moves forward: a try out now sees it changed. */
    [W_OUTBOX_DUE_NOW] = ("UPDATE outbox SET next_at = min(next_at, ?4), updated_at = "
                          "max(updated_at + 1, ?4) WHERE job_id = ?1 AND dest = ?2 AND "
                          "state = 'pending' AND seq <= ?3"),
    /* The common case in one statement: no read, and no attempt row (the row is its log). */
    [W_OUTBOX_DELIVERED] = ("UPDATE outbox SET state = 'delivered', attempts = attempts + 1, "
                            "updated_at = ?2, last_status = ?3, last_error = NULL, "
                            "last_latency_ms = ?4 WHERE id = ?1 AND state = 'pending'"),
    [W_ATTEMPT_INSERT] = ("INSERT OR REPLACE INTO delivery_attempts (outbox_id, n, at, status, "
                          "latency_ms, error, excerpt) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
    [W_OUTBOX_PRUNE_ATTEMPTS] = ("DELETE FROM delivery_attempts WHERE outbox_id IN (SELECT id "
                                 "FROM outbox WHERE job_id = ?1)"),
    [W_OUTBOX_PRUNE] = "DELETE FROM outbox WHERE job_id = ?1",
};

const char *const sqlite_outbox_reader_sql[R__COUNT] = {
    /* Only the first pending row of its (job, dest) may go: order per key. */
    [R_OUTBOX_DUE] = ("SELECT " OUTBOX_COLUMNS " FROM outbox o WHERE state = 'pending' AND "
                      "next_at <= ?1 AND NOT EXISTS (SELECT 1 FROM outbox p WHERE "
                      "p.job_id = o.job_id AND p.dest = o.dest AND p.state = 'pending' AND "
                      "p.seq < o.seq) ORDER BY next_at, id LIMIT ?2"),
    /* By (seq, id); ?2 is the id of the last row of the page before (0: none). */
    [R_OUTBOX_BY_JOB] = ("SELECT " OUTBOX_COLUMNS " FROM outbox WHERE job_id = ?1 AND (seq, id) > "
                         "(coalesce((SELECT seq FROM outbox WHERE id = ?2), -1), ?2) "
                         "ORDER BY seq, id LIMIT ?3"),
    [R_OUTBOX_BY_DEST] = ("SELECT " OUTBOX_COLUMNS " FROM outbox WHERE dest = ?1 AND id > ?2 "
                          "ORDER BY id LIMIT ?3"),
    [R_ATTEMPTS] = ("SELECT n, at, status, latency_ms, error, excerpt FROM delivery_attempts "
                    "WHERE outbox_id = ?1 ORDER BY n LIMIT ?2"),
    [R_OUTBOX_PENDING_KEYS] = ("SELECT job_id, dest, count(*) FROM outbox WHERE state = "
                               "'pending' GROUP BY job_id, dest"),
    /* The events waiting after id ?1, with the job's columns that an event's
     * body and destinations need (read_event_job_at()) and the event. */
    [R_OUTBOX_EVENTS] = ("SELECT o.id, o.job_id, o.seq, j.id IS NOT NULL AND e.seq IS NOT NULL, "
                         "j.id, j.queue, j.webhook_url, j.created_at, j.result, e.job_id, "
                         "e.seq, e.type, e.at, e.state, e.prev_state, e.step, e.attempt, e.data "
                         "FROM outbox_events o LEFT JOIN jobs j ON j.id = o.job_id "
                         "LEFT JOIN job_events e ON e.job_id = o.job_id AND e.seq = o.seq "
                         "WHERE o.id > ?1 ORDER BY o.id LIMIT ?2"),
    [R_OUTBOX_NEXT] = "SELECT min(next_at) FROM outbox WHERE state = 'pending' AND next_at > ?1",
};

/*
 * The part of a job that its outbox events need (struct outbox_event): id,
 * queue, webhook_url, created_at and result. The payload, checkpoints and
 * the rest are neither read nor parsed: the deliverer reads a job per
 * event it sends, and those can be large.
 */
static int read_event_job_at(sqlite3_stmt *s, int b, struct job *job)
{
    job_init(job);
    const char *id = (const char *)sqlite3_column_text(s, b);
    snprintf(job->id, sizeof(job->id), "%s", id ? id : "");
    job->queue = column_strdup(s, b + 1);
    job->webhook_url = column_strdup(s, b + 2);
    job->created_at_ms = sqlite3_column_int64(s, b + 3);
    job->result = column_json(s, b + 4);
    return job->queue ? 0 : -DRV_ENOMEM;
}

static void read_outbox(sqlite3_stmt *stmt, struct outbox_row *r)
{
    memset(r, 0, sizeof(*r));
    r->id = sqlite3_column_int64(stmt, 0);
    const char *job = (const char *)sqlite3_column_text(stmt, 1);
    const char *dest = (const char *)sqlite3_column_text(stmt, 3);
    const char *state = (const char *)sqlite3_column_text(stmt, 4);
    snprintf(r->job_id, sizeof(r->job_id), "%s", job ? job : "");
    r->seq = sqlite3_column_int64(stmt, 2);
    snprintf(r->dest, sizeof(r->dest), "%s", dest ? dest : "");
    snprintf(r->state, sizeof(r->state), "%s", state ? state : "");
    r->attempts = sqlite3_column_int(stmt, 5);
    r->next_at_ms = sqlite3_column_int64(stmt, 6);
    r->created_at_ms = sqlite3_column_int64(stmt, 7);
    r->updated_at_ms = sqlite3_column_int64(stmt, 8);
    r->last_status = sqlite3_column_int(stmt, 9);
    r->last_error = column_strdup(stmt, 10);
    r->last_latency_ms = sqlite3_column_int64(stmt, 11);
}

int sqlite_outbox_insert(struct store *st, struct outbox_row *r)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_OUTBOX_INSERT];
    bind_text(stmt, 1, r->job_id);
    sqlite3_bind_int64(stmt, 2, r->seq);
    bind_text(stmt, 3, r->dest);
    bind_text(stmt, 4, r->state);
    sqlite3_bind_int(stmt, 5, r->attempts);
    sqlite3_bind_int64(stmt, 6, r->next_at_ms);
    sqlite3_bind_int64(stmt, 7, r->created_at_ms);
    sqlite3_bind_int64(stmt, 8, r->updated_at_ms);
    bind_or_null(stmt, 9, r->last_status);
    bind_text(stmt, 10, r->last_error);
    sqlite3_bind_int64(stmt, 11, r->last_latency_ms);
    int rc = sqlite_step_done(s->wdb, stmt, "outbox insert");
    if (rc == 0)
        r->id = sqlite3_last_insert_rowid(s->wdb);
    return rc;
}

int sqlite_outbox_event_insert(struct store *st, const char *job_id, int64_t seq)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_OUTBOX_EVENT_INSERT];
    bind_text(stmt, 1, job_id);
    sqlite3_bind_int64(stmt, 2, seq);
    return sqlite_step_done(s->wdb, stmt, "outbox event insert");
}

int sqlite_outbox_event_delete(struct store *st, int64_t id)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_OUTBOX_EVENT_DELETE];
    sqlite3_bind_int64(stmt, 1, id);
    return sqlite_step_done(s->wdb, stmt, "outbox event delete");
}

int sqlite_outbox_get(struct store *st, int64_t id, struct outbox_row *out)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_OUTBOX_GET];
    sqlite3_bind_int64(stmt, 1, id);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        read_outbox(stmt, out);
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? -DRV_ENOT_FOUND : sqlite_fail(s->wdb, "outbox get");
    }
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc;
}

int sqlite_outbox_update(struct store *st, const struct outbox_row *r)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_OUTBOX_UPDATE];
    sqlite3_bind_int64(stmt, 1, r->id);
    bind_text(stmt, 2, r->state);
    sqlite3_bind_int(stmt, 3, r->attempts);
    sqlite3_bind_int64(stmt, 4, r->next_at_ms);
    sqlite3_bind_int64(stmt, 5, r->updated_at_ms);
    bind_or_null(stmt, 6, r->last_status);
    bind_text(stmt, 7, r->last_error);
    sqlite3_bind_int64(stmt, 8, r->last_latency_ms);
    return sqlite_step_done(s->wdb, stmt, "outbox update");
}

int sqlite_outbox_due_now(struct store *st, const char *job_id, const char *dest, int64_t seq,
                          int64_t now_ms)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_OUTBOX_DUE_NOW];
    bind_text(stmt, 1, job_id);
    bind_text(stmt, 2, dest);
    sqlite3_bind_int64(stmt, 3, seq);
    sqlite3_bind_int64(stmt, 4, now_ms);
    return sqlite_step_done(s->wdb, stmt, "outbox due now");
}

int sqlite_outbox_delivered(struct store *st, int64_t id, int64_t now_ms, int status,
                            int64_t latency_ms)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_OUTBOX_DELIVERED];
    sqlite3_bind_int64(stmt, 1, id);
    sqlite3_bind_int64(stmt, 2, now_ms);
    sqlite3_bind_int(stmt, 3, status);
    sqlite3_bind_int64(stmt, 4, latency_ms);
    int rc = sqlite_step_done(s->wdb, stmt, "outbox delivered");
    return rc < 0 ? rc : sqlite3_changes(s->wdb) ? 0 : -DRV_ENOT_FOUND;
}

int sqlite_delivery_attempt_insert(struct store *st, int64_t outbox_id,
                                   const struct delivery_attempt *a)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_ATTEMPT_INSERT];
    sqlite3_bind_int64(stmt, 1, outbox_id);
    sqlite3_bind_int(stmt, 2, a->n);
    sqlite3_bind_int64(stmt, 3, a->at_ms);
    bind_or_null(stmt, 4, a->status);
    sqlite3_bind_int64(stmt, 5, a->latency_ms);
    bind_text(stmt, 6, a->error);
    bind_text(stmt, 7, a->excerpt);
    return sqlite_step_done(s->wdb, stmt, "delivery attempt insert");
}

int sqlite_outbox_prune(struct store *st, const char *job_id)
{
    struct sqlite_store *s = sqlite_store(st);
    int rc = sqlite_exec_text(s, W_OUTBOX_PRUNE_ATTEMPTS, job_id);
    if (rc >= 0)
        rc = sqlite_exec_text(s, W_OUTBOX_PRUNE, job_id);
    return rc < 0 ? rc : 0;
}

/* Run a read statement already bound, collecting up to max outbox rows. */
static int collect_outbox(struct sqlite_store *s, struct reader *r, sqlite3_stmt *stmt, int max,
                          struct outbox_row *rows, int *n_out)
{
    int rc, n = 0;
    while (n < max && (rc = sqlite3_step(stmt)) == SQLITE_ROW)
        read_outbox(stmt, &rows[n++]);
    rc = n == max || rc == SQLITE_DONE ? 0 : sqlite_fail(r->db, "outbox read");
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    sqlite_reader_release(s, r);
    *n_out = n;
    return rc;
}

int sqlite_outbox_due(struct store *st, int64_t now_ms, int max, struct outbox_row *rows,
                      int *n_out)
{
    struct sqlite_store *s = sqlite_store(st);
    struct reader *r = sqlite_reader_acquire(s);
    sqlite3_stmt *stmt = r->stmt[R_OUTBOX_DUE];
    sqlite3_bind_int64(stmt, 1, now_ms);
    sqlite3_bind_int(stmt, 2, max);
    return collect_outbox(s, r, stmt, max, rows, n_out);
}

int sqlite_outbox_list(struct store *st, const char *job_id, const char *dest, int64_t after_id,
                       int max, struct outbox_row *rows, int *n_out)
{
    struct sqlite_store *s = sqlite_store(st);
    struct reader *r = sqlite_reader_acquire(s);
    sqlite3_stmt *stmt = r->stmt[job_id ? R_OUTBOX_BY_JOB : R_OUTBOX_BY_DEST];
    bind_text(stmt, 1, job_id ? job_id : dest);
    sqlite3_bind_int64(stmt, 2, after_id);
    sqlite3_bind_int(stmt, 3, max);
    return collect_outbox(s, r, stmt, max, rows, n_out);
}

int sqlite_delivery_attempts(struct store *st, int64_t outbox_id, int max,
                             struct delivery_attempt *out, int *n_out)
{
    struct sqlite_store *s = sqlite_store(st);
    struct reader *r = sqlite_reader_acquire(s);
    sqlite3_stmt *stmt = r->stmt[R_ATTEMPTS];
    sqlite3_bind_int64(stmt, 1, outbox_id);
    sqlite3_bind_int(stmt, 2, max);
    int rc, n = 0;
    while (n < max && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct delivery_attempt *a = &out[n++];
        a->n = sqlite3_column_int(stmt, 0);
        a->at_ms = sqlite3_column_int64(stmt, 1);
        a->status = sqlite3_column_int(stmt, 2);
        a->latency_ms = sqlite3_column_int64(stmt, 3);
        a->error = column_strdup(stmt, 4);
        a->excerpt = column_strdup(stmt, 5);
    }
    rc = n == max || rc == SQLITE_DONE ? 0 : sqlite_fail(r->db, "delivery attempts");
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    sqlite_reader_release(s, r);
    *n_out = n;
    return rc;
}

int sqlite_outbox_pending_keys(struct store *st, outbox_pending_fn each, void *arg)
{
    struct sqlite_store *s = sqlite_store(st);
    struct reader *r = sqlite_reader_acquire(s);
    sqlite3_stmt *stmt = r->stmt[R_OUTBOX_PENDING_KEYS];
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
        each(arg, (const char *)sqlite3_column_text(stmt, 0),
             (const char *)sqlite3_column_text(stmt, 1), sqlite3_column_int(stmt, 2));
    rc = rc == SQLITE_DONE ? 0 : sqlite_fail(r->db, "outbox pending keys");
    sqlite3_reset(stmt);
    sqlite_reader_release(s, r);
    return rc;
}

int sqlite_outbox_events(struct store *st, int64_t after_id, int max, struct outbox_event *out,
                         int *n_out)
{
    struct sqlite_store *s = sqlite_store(st);
    struct reader *r = sqlite_reader_acquire(s);
    sqlite3_stmt *stmt = r->stmt[R_OUTBOX_EVENTS];
    sqlite3_bind_int64(stmt, 1, after_id);
    sqlite3_bind_int(stmt, 2, max);
    int rc = 0, step, n = 0;
    while (n < max && (step = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct outbox_event *e = &out[n];
        memset(e, 0, sizeof(*e));
        e->id = sqlite3_column_int64(stmt, 0);
        const char *job = (const char *)sqlite3_column_text(stmt, 1);
        snprintf(e->job_id, sizeof(e->job_id), "%s", job ? job : "");
        e->seq = sqlite3_column_int64(stmt, 2);
        if (sqlite3_column_int(stmt, 3)) {
            rc = read_event_job_at(stmt, 4, &e->job);
            if (rc == 0 && (rc = sqlite_read_event_at(stmt, 9, &e->ev)) < 0)
                job_release(&e->job);
            if (rc < 0)
                break;
            e->found = true;
        }
        n++;
    }
    if (rc == 0 && n < max && step != SQLITE_DONE)
        rc = sqlite_fail(r->db, "outbox events");
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    sqlite_reader_release(s, r);
    if (rc < 0) {
        for (int i = 0; i < n; i++)
            outbox_event_release(&out[i]);
        n = 0;
    }
    *n_out = n;
    return rc;
}

int sqlite_outbox_next(struct store *st, int64_t after_ms, int64_t *next_ms)
{
    struct sqlite_store *s = sqlite_store(st);
    struct reader *r = sqlite_reader_acquire(s);
    sqlite3_stmt *stmt = r->stmt[R_OUTBOX_NEXT];
    sqlite3_bind_int64(stmt, 1, after_ms);
    int rc = sqlite3_step(stmt);
    *next_ms = rc == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : 0; /* NULL reads as 0 */
    rc = rc == SQLITE_ROW ? 0 : sqlite_fail(r->db, "outbox next");
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    sqlite_reader_release(s, r);
    return rc;
}
