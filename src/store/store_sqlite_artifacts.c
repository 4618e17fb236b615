/*
 * store_sqlite_artifacts.c - the SQLite engine's artifacts and retention
 * (docs/adr/0013-artifacts.md): artifact rows (the bytes are files, see
 * artifacts.h), the retention sweep's search for expired jobs and its
 * prune of a job with its rows (retention.h), and the artifact trash that
 * carries a pruned job's directory removal across a crash. The tables and
 * the jobs_ended index are created by migrations 10 and 12 in
 * store_sqlite.c.
 */
#include "store/store_sqlite_internal.h"

#include <stdio.h>
#include <string.h>

#define ARTIFACT_COLUMNS "job_id, name, size, content_type, sha256, file, created_at"

const char *const sqlite_artifacts_writer_sql[W__COUNT] = {
    [W_ARTIFACT_FILE] = "SELECT file FROM artifacts WHERE job_id = ?1 AND name = ?2",
    [W_ARTIFACT_PUT] = ("INSERT OR REPLACE INTO artifacts (" ARTIFACT_COLUMNS ") VALUES "
                        "(?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
    /* JOB_ENDED is jobs_ended's WHERE, word for word, so the index applies. */
    [W_EXPIRED_IDS] = ("SELECT id FROM jobs WHERE queue = ?1 AND (" JOB_ENDED ") AND "
                       "updated_at < ?2 ORDER BY updated_at LIMIT ?3"),
    [W_PRUNE_EVENTS] = "DELETE FROM job_events WHERE job_id = ?1",
    [W_PRUNE_ARTIFACTS] = "DELETE FROM artifacts WHERE job_id = ?1",
    [W_PRUNE_JOB] = "DELETE FROM jobs WHERE id = ?1",
    [W_TRASH_ADD] = "INSERT OR REPLACE INTO artifact_trash (job_id, at) VALUES (?1, ?2)",
    [W_TRASH_FORGET] = "DELETE FROM artifact_trash WHERE job_id = ?1",
};

const char *const sqlite_artifacts_reader_sql[R__COUNT] = {
    [R_ARTIFACT_LIST] =
        "SELECT " ARTIFACT_COLUMNS " FROM artifacts WHERE job_id = ?1 ORDER BY name",
    [R_ARTIFACT_GET] = "SELECT " ARTIFACT_COLUMNS " FROM artifacts WHERE job_id = ?1 AND name = ?2",
    [R_TRASH_LIST] = "SELECT job_id FROM artifact_trash ORDER BY job_id LIMIT ?1",
};

static void read_artifact(sqlite3_stmt *stmt, struct artifact *a)
{
    const char *t;
    memset(a, 0, sizeof(*a));
    t = (const char *)sqlite3_column_text(stmt, 0);
    snprintf(a->job_id, sizeof(a->job_id), "%s", t ? t : "");
    t = (const char *)sqlite3_column_text(stmt, 1);
    snprintf(a->name, sizeof(a->name), "%s", t ? t : "");
    a->size = sqlite3_column_int64(stmt, 2);
    t = (const char *)sqlite3_column_text(stmt, 3);
    snprintf(a->content_type, sizeof(a->content_type), "%s", t ? t : "");
    t = (const char *)sqlite3_column_text(stmt, 4);
    snprintf(a->sha256, sizeof(a->sha256), "%s", t ? t : "");
    t = (const char *)sqlite3_column_text(stmt, 5);
    snprintf(a->file, sizeof(a->file), "%s", t ? t : "");
    a->created_at_ms = sqlite3_column_int64(stmt, 6);
}

int sqlite_artifact_put(struct store *st, const struct artifact *a, char *replaced)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_ARTIFACT_FILE];
    bind_text(stmt, 1, a->job_id);
    bind_text(stmt, 2, a->name);
    int rc = sqlite3_step(stmt);
    const char *old = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(stmt, 0) : NULL;
    snprintf(replaced, ARTIFACT_FILE_MAX + 1, "%s", old ? old : "");
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sqlite_fail(s->wdb, "artifact file");
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    if (rc < 0)
        return rc;
    stmt = s->wstmt[W_ARTIFACT_PUT];
    bind_text(stmt, 1, a->job_id);
    bind_text(stmt, 2, a->name);
    sqlite3_bind_int64(stmt, 3, a->size);
    bind_text(stmt, 4, a->content_type);
    bind_text(stmt, 5, a->sha256);
    bind_text(stmt, 6, a->file);
    sqlite3_bind_int64(stmt, 7, a->created_at_ms);
    return sqlite_step_done(s->wdb, stmt, "artifact put");
}

int sqlite_job_expired_ids(struct store *st, const char *queue, int64_t ended_before_ms, int max,
                           char (*ids)[ULID_LEN + 1], int *n_out)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_EXPIRED_IDS];
    bind_text(stmt, 1, queue);
    sqlite3_bind_int64(stmt, 2, ended_before_ms);
    sqlite3_bind_int(stmt, 3, max);
    return sqlite_collect_text(s, stmt, max, ids[0], sizeof(ids[0]), n_out, "expired ids");
}

int sqlite_job_prune(struct store *st, const char *job_id, int64_t at_ms)
{
    static const enum writer_stmt deletes[] = {W_PRUNE_EVENTS, W_LOCK_WAIT_REMOVE,
                                               W_PRUNE_ARTIFACTS, W_PRUNE_JOB};
    struct sqlite_store *s = sqlite_store(st);
    int rc = 0;
    for (size_t i = 0; i < sizeof(deletes) / sizeof(deletes[0]) && rc >= 0; i++)
        rc = sqlite_exec_text(s, deletes[i], job_id);
    if (rc <= 0) /* the job's own row was not there */
        return rc < 0 ? rc : -DRV_ENOT_FOUND;
    sqlite3_stmt *stmt = s->wstmt[W_TRASH_ADD];
    bind_text(stmt, 1, job_id);
    sqlite3_bind_int64(stmt, 2, at_ms);
    return sqlite_step_done(s->wdb, stmt, "artifact trash add");
}

int sqlite_artifact_trash_forget(struct store *st, const char *job_id)
{
    int rc = sqlite_exec_text(sqlite_store(st), W_TRASH_FORGET, job_id);
    return rc < 0 ? rc : 0;
}

int sqlite_artifact_list(struct store *st, const char *job_id, struct artifact_list *out)
{
    struct sqlite_store *s = sqlite_store(st);
    memset(out, 0, sizeof(*out));
    struct reader *r = sqlite_reader_acquire(s);
    sqlite3_stmt *stmt = r->stmt[R_ARTIFACT_LIST];
    bind_text(stmt, 1, job_id);
    int rc, cap = 0;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (out->n == cap) {
            cap = cap ? cap * 2 : 8;
            struct artifact *p = realloc(out->items, (size_t)cap * sizeof(*p));
            if (p == NULL) {
                rc = SQLITE_NOMEM;
                break;
            }
            out->items = p;
        }
        read_artifact(stmt, &out->items[out->n++]);
    }
    rc = rc == SQLITE_DONE    ? 0
         : rc == SQLITE_NOMEM ? -DRV_ENOMEM
                              : sqlite_fail(r->db, "artifact list");
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    sqlite_reader_release(s, r);
    if (rc < 0)
        artifact_list_release(out);
    return rc;
}

int sqlite_artifact_get(struct store *st, const char *job_id, const char *name,
                        struct artifact *out)
{
    struct sqlite_store *s = sqlite_store(st);
    struct reader *r = sqlite_reader_acquire(s);
    sqlite3_stmt *stmt = r->stmt[R_ARTIFACT_GET];
    bind_text(stmt, 1, job_id);
    bind_text(stmt, 2, name);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        read_artifact(stmt, out);
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? -DRV_ENOT_FOUND : sqlite_fail(r->db, "artifact get");
    }
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    sqlite_reader_release(s, r);
    return rc;
}

int sqlite_artifact_trash_list(struct store *st, int max, char (*ids)[ULID_LEN + 1], int *n_out)
{
    struct sqlite_store *s = sqlite_store(st);
    struct reader *r = sqlite_reader_acquire(s);
    sqlite3_stmt *stmt = r->stmt[R_TRASH_LIST];
    sqlite3_bind_int(stmt, 1, max);
    int rc = SQLITE_DONE, n = 0;
    while (n < max && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(stmt, 0);
        snprintf(ids[n++], ULID_LEN + 1, "%s", t ? t : "");
    }
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sqlite_fail(r->db, "artifact trash list");
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    sqlite_reader_release(s, r);
    *n_out = n;
    return rc;
}
