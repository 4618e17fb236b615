/*
 * deliveries.c - the delivery log: GET /v1/jobs/{id}/deliveries,
 * GET /v1/subscriptions/{id}/deliveries, and
 * POST /v1/jobs/{id}/deliveries/{n}/redeliver (docs/api.md "Events and webhooks").
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "deliver.h"
#include "job_json.h"
#include "outbox.h"
#include "subscriptions.h"
#include "timeutil.h"
#include "util.h"

#define LIST_MAX     200
#define ATTEMPTS_MAX 100

static json_t *attempt_json(const struct delivery_attempt *a)
{
    return json_pack("{s:i, s:o, s:o, s:I, s:o, s:o}", "n", a->n, "at", json_time_or_null(a->at_ms),
                     "status", a->status ? json_integer(a->status) : json_null(), "latency_ms",
                     (json_int_t)a->latency_ms, "error",
                     a->error ? json_string(a->error) : json_null(), "excerpt",
                     a->excerpt ? json_string(a->excerpt) : json_null());
}

/* One delivery with its attempts (a read of its log). */
static json_t *delivery_json(struct store *st, const struct outbox_row *r)
{
    bool own = strcmp(r->dest, OUTBOX_DEST_JOB) == 0;
    bool pending = strcmp(r->state, "pending") == 0;
    json_t *d = json_pack(
        "{s:I, s:s, s:I, s:s, s:o, s:s, s:i, s:o, s:o, s:o, s:o, s:o}", "id", (json_int_t)r->id,
        "job", r->job_id, "seq", (json_int_t)r->seq, "destination",
        own ? "webhook_url" : "subscription", "subscription",
        own ? json_null() : json_string(r->dest), "state", r->state, "attempts", r->attempts,
        "next_attempt_at", pending ? json_time_or_null(r->next_at_ms) : json_null(), "last_status",
        r->last_status ? json_integer(r->last_status) : json_null(), "last_error",
        r->last_error ? json_string(r->last_error) : json_null(), "created_at",
        json_time_or_null(r->created_at_ms), "updated_at", json_time_or_null(r->updated_at_ms));
    struct delivery_attempt *as = calloc(ATTEMPTS_MAX, sizeof(*as));
    int n = 0;
    json_t *log = json_array();
    if (as && store_delivery_attempts(st, r->id, ATTEMPTS_MAX, as, &n) == 0) {
        for (int i = 0; i < n; i++)
            json_array_append_new(log, attempt_json(&as[i]));
    }
    /* A successful try is not logged apart: the row holds it. */
    if (strcmp(r->state, "delivered") == 0 && (n == 0 || as[n - 1].n < r->attempts)) {
        struct delivery_attempt last = {.n = r->attempts,
                                        .at_ms = r->updated_at_ms,
                                        .status = r->last_status,
                                        .latency_ms = r->last_latency_ms};
        json_array_append_new(log, attempt_json(&last));
    }
    for (int i = 0; i < n; i++)
        delivery_attempt_release(&as[i]);
    free(as);
    if (d)
        json_object_set_new(d, "log", log);
    else
        json_decref(log);
    return d;
}

/* Reply with the rows of a job or a destination, paginated by ?after=ID. */
static void reply_list(struct http_request *req, const char *job_id, const char *dest)
{
    int64_t after, limit;
    if (!api_query_int(req, "after", 0, INT64_MAX, 0, &after) ||
        !api_query_int(req, "limit", 1, LIST_MAX, 50, &limit))
        return;
    struct outbox_row *rows = calloc((size_t)limit + 1, sizeof(*rows));
    int n = 0;
    struct store *st = api_app(req)->store;
    int rc =
        rows ? store_outbox_list(st, job_id, dest, after, (int)limit + 1, rows, &n) : -DRV_ENOMEM;
    if (rc < 0) {
        free(rows);
        http_reply_error(req, rc, NULL);
        return;
    }
    bool more = n > limit;
    json_t *list = json_array();
    for (int i = 0; i < n && i < limit; i++)
        json_array_append_new(list, delivery_json(st, &rows[i]));
    json_t *next = more ? json_integer(rows[limit - 1].id) : json_null();
    for (int i = 0; i < n; i++)
        outbox_row_release(&rows[i]);
    free(rows);
    http_reply_json(req, 200, json_pack("{s:o, s:o}", "deliveries", list, "next", next));
}

void api_job_deliveries(struct http_request *req)
{
    char id[ULID_LEN + 1];
    if (!api_job_id_param(req, 0, id))
        return;
    struct job job;
    if (!api_job_load(req, id, &job))
        return;
    job_release(&job);
    reply_list(req, id, NULL);
}

void api_subscription_deliveries(struct http_request *req)
{
    char id[ULID_LEN + 1];
    struct sub sub;
    const char *raw = http_param(req, 0);
    if (!ulid_parse(raw, id)) {
        http_reply_errorf(req, -DRV_EBAD_REQUEST, "'%s' is not a subscription id", raw);
        return;
    }
    if (sub_cache_get(api_app(req)->subs, id, &sub) < 0) {
        http_reply_errorf(req, -DRV_ENOT_FOUND, "no subscription '%s'", id);
        return;
    }
    sub_release(&sub);
    reply_list(req, NULL, id);
}

/* ---- redeliver ---- */

struct redeliver_op {
    struct write_op op;
    char job_id[ULID_LEN + 1];
    int64_t id;
    struct deliverer *deliverer;
    char dest[OUTBOX_DEST_MAX + 1];     /* out: requeued to, or "" */
    bool was_pending;                   /* out: it was pending, and is due now */
    char row_dest[OUTBOX_DEST_MAX + 1]; /* out: the row's destination */
    struct errmsg err;
};

static int redeliver_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct redeliver_op *r = container_of(op, struct redeliver_op, op);
    struct outbox_row row;
    int rc = store_outbox_get(ctx->store, r->id, &row);
    if (rc == 0 && strcmp(row.job_id, r->job_id) != 0)
        rc = -DRV_ENOT_FOUND; /* not this job's */
    if (rc == 0) {
        memcpy(r->row_dest, row.dest, sizeof(r->row_dest));
        outbox_row_release(&row);
    }
    if (rc == -DRV_ENOT_FOUND)
        return errmsg_set(&r->err, rc, "job '%s' has no delivery %lld", r->job_id,
                          (long long)r->id);
    return rc < 0 ? rc : deliver_requeue(ctx, r->id, r->dest, &r->was_pending, &r->err);
}

static void redeliver_done(struct write_op *op)
{
    struct redeliver_op *r = container_of(op, struct redeliver_op, op);
    if (op->result == 0 && r->dest[0])
        deliverer_requeued(r->deliverer, r->job_id, r->dest);
    else if (op->result == 0 && r->was_pending)
        deliverer_rows_due(r->deliverer);
    http_resume(op->owner);
}

static void redeliver_finish(struct http_request *req)
{
    struct redeliver_op *r = http_ctx(req);
    if (r->op.result < 0) {
        http_reply_error(req, r->op.result, &r->err);
    } else {
        struct outbox_row row;
        struct outbox_row *rows = &row;
        int n = 0;
        int rc = store_outbox_list(api_app(req)->store, NULL, r->row_dest, r->id - 1, 1, rows, &n);
        if (rc == 0 && n == 1 && rows->id != r->id) {
            outbox_row_release(rows);
            n = 0;
        }
        if (rc < 0 || n != 1) {
            http_reply_error(req, rc < 0 ? rc : -DRV_EINTERNAL, NULL);
        } else {
            http_reply_json(req, 200, delivery_json(api_app(req)->store, &row));
            outbox_row_release(&row);
        }
    }
    free(r);
}

void api_redeliver(struct http_request *req)
{
    char id[ULID_LEN + 1];
    if (!api_job_id_param(req, 0, id))
        return;
    const char *n = http_param(req, 1);
    char *end;
    errno = 0;
    long long v = strtoll(n, &end, 10);
    if (errno || end == n || *end || v < 1) {
        http_reply_errorf(req, -DRV_EBAD_REQUEST, "'%s' is not a delivery id", n);
        return;
    }
    struct redeliver_op *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        http_reply_errorf(req, -DRV_ENOMEM, "out of memory");
        return;
    }
    r->op.apply = redeliver_apply;
    r->op.done = redeliver_done;
    memcpy(r->job_id, id, sizeof(r->job_id));
    r->id = v;
    r->deliverer = api_app(req)->deliverer;
    http_set_ctx(req, r);
    api_write(req, &r->op, NULL, redeliver_finish);
}
