/*
 * store_sqlite_subs.c - the SQLite engine's webhook subscriptions
 * (subscriptions.h): one row per subscription, its event and queue filters
 * as JSON arrays (NULL for every value). The table is created by migration
 * 8 in store_sqlite.c.
 */
#include "store/store_sqlite_internal.h"

#include <stdio.h>
#include <string.h>

#include "log.h"
#include "subscriptions.h"

#define SUB_COLUMNS                                                                                \
    "id, url, secret, old_secret, old_secret_until, events, queues, enabled, disabled_reason, "    \
    "created_at, updated_at"

const char *const sqlite_subs_writer_sql[W__COUNT] = {
    [W_SUB_GET] = "SELECT " SUB_COLUMNS " FROM subscriptions WHERE id = ?1",
    [W_SUB_PUT] = ("INSERT OR REPLACE INTO subscriptions (" SUB_COLUMNS ") VALUES "
                   "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
    [W_SUB_DELETE] = "DELETE FROM subscriptions WHERE id = ?1",
};

const char *const sqlite_subs_reader_sql[R__COUNT] = {
    [R_SUB_LIST] = "SELECT " SUB_COLUMNS " FROM subscriptions ORDER BY id",
};

static int read_sub(sqlite3_stmt *stmt, struct sub *out)
{
    sub_init(out);
    const char *id = (const char *)sqlite3_column_text(stmt, 0);
    snprintf(out->id, sizeof(out->id), "%s", id ? id : "");
    out->url = column_strdup(stmt, 1);
    out->secret = column_strdup(stmt, 2);
    out->old_secret = column_strdup(stmt, 3);
    out->old_secret_until_ms = sqlite3_column_int64(stmt, 4);
    out->events = column_json(stmt, 5);
    out->queues = column_json(stmt, 6);
    out->enabled = sqlite3_column_int(stmt, 7) != 0;
    out->disabled_reason = column_strdup(stmt, 8);
    out->created_at_ms = sqlite3_column_int64(stmt, 9);
    out->updated_at_ms = sqlite3_column_int64(stmt, 10);
    bool missing = out->url == NULL || out->secret == NULL ||
                   (sqlite3_column_type(stmt, 3) != SQLITE_NULL && out->old_secret == NULL) ||
                   (sqlite3_column_type(stmt, 5) != SQLITE_NULL && out->events == NULL) ||
                   (sqlite3_column_type(stmt, 6) != SQLITE_NULL && out->queues == NULL) ||
                   (sqlite3_column_type(stmt, 8) != SQLITE_NULL && out->disabled_reason == NULL);
    if (missing) {
        sub_release(out);
        return -DRV_ENOMEM; /* or a filter that is not JSON: never widen it to "every" */
    }
    return 0;
}

int sqlite_sub_get(struct store *st, const char *id, struct sub *out)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_SUB_GET];
    bind_text(stmt, 1, id);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        rc = read_sub(stmt, out);
    else
        rc = rc == SQLITE_DONE ? -DRV_ENOT_FOUND : sqlite_fail(s->wdb, "subscription get");
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc;
}

int sqlite_sub_put(struct store *st, const struct sub *sub)
{
    struct sqlite_store *s = sqlite_store(st);
    sqlite3_stmt *stmt = s->wstmt[W_SUB_PUT];
    bind_text(stmt, 1, sub->id);
    bind_text(stmt, 2, sub->url);
    bind_text(stmt, 3, sub->secret);
    bind_text(stmt, 4, sub->old_secret);
    bind_or_null(stmt, 5, sub->old_secret ? sub->old_secret_until_ms : 0);
    int rc = bind_json(stmt, 6, sub->events);
    rc = rc ? rc : bind_json(stmt, 7, sub->queues);
    sqlite3_bind_int(stmt, 8, sub->enabled);
    bind_text(stmt, 9, sub->disabled_reason);
    sqlite3_bind_int64(stmt, 10, sub->created_at_ms);
    sqlite3_bind_int64(stmt, 11, sub->updated_at_ms);
    if (rc < 0) {
        sqlite3_clear_bindings(stmt);
        return rc;
    }
    return sqlite_step_done(s->wdb, stmt, "subscription put");
}

int sqlite_sub_delete(struct store *st, const char *id)
{
    int rc = sqlite_exec_text(sqlite_store(st), W_SUB_DELETE, id);
    return rc < 0 ? rc : rc == 0 ? -DRV_ENOT_FOUND : 0;
}

int sqlite_sub_list(struct store *st, struct sub_list *out)
{
    struct sqlite_store *s = sqlite_store(st);
    memset(out, 0, sizeof(*out));
    struct reader *r = sqlite_reader_acquire(s);
    sqlite3_stmt *stmt = r->stmt[R_SUB_LIST];
    int rc, cap = 0;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (out->n == cap) {
            cap = cap ? cap * 2 : 16;
            struct sub *p = realloc(out->subs, (size_t)cap * sizeof(*p));
            if (p == NULL) {
                rc = SQLITE_NOMEM;
                break;
            }
            out->subs = p;
        }
        if (read_sub(stmt, &out->subs[out->n]) < 0) {
            log_printf(LOG_ERROR, "stored subscription '%s' does not load",
                       (const char *)sqlite3_column_text(stmt, 0));
            rc = SQLITE_NOMEM;
            break;
        }
        out->n++;
    }
    rc = rc == SQLITE_DONE    ? 0
         : rc == SQLITE_NOMEM ? -DRV_ENOMEM
                              : sqlite_fail(r->db, "subscription list");
    sqlite3_reset(stmt);
    sqlite_reader_release(s, r);
    if (rc < 0)
        sub_list_release(out);
    return rc;
}
