/*
 * api.h - the /v1 HTTP API: the route table and its handlers (docs/api.md).
 */
#ifndef DROVER_API_H
#define DROVER_API_H

#include <stddef.h>

#include "app.h"
#include "http/http.h"
#include "job.h"
#include "json_writer.h"
#include "store/writer.h"

extern const struct route api_routes[];
extern const size_t api_n_routes;

/* Handlers, one module per resource. */
void api_healthz(struct http_request *req);
void api_readyz(struct http_request *req);
void api_job_submit(struct http_request *req);
void api_job_get(struct http_request *req);
void api_job_list(struct http_request *req);
void api_job_events(struct http_request *req);
void api_job_cancel(struct http_request *req);
void api_queue_get(struct http_request *req);
void api_queue_put(struct http_request *req);
void api_job_retry(struct http_request *req);
void api_claim(struct http_request *req);
void api_heartbeat(struct http_request *req);
void api_step(struct http_request *req);
void api_complete(struct http_request *req);
void api_fail(struct http_request *req);
void api_lock_list(struct http_request *req);
void api_lock_put(struct http_request *req);
void api_lock_delete(struct http_request *req);
void api_callback(struct http_request *req);
void api_sub_create(struct http_request *req);
void api_sub_list(struct http_request *req);
void api_sub_get(struct http_request *req);
void api_sub_patch(struct http_request *req);
void api_sub_delete(struct http_request *req);
void api_job_deliveries(struct http_request *req);
void api_subscription_deliveries(struct http_request *req);
void api_redeliver(struct http_request *req);
void api_artifact_put(struct http_request *req);
void api_artifact_list(struct http_request *req);
void api_artifact_get(struct http_request *req);

/* ---- shared by the handlers (api.c) ---- */

static inline struct app *api_app(struct http_request *req)
{
    return http_app(req);
}

/*
 * Hand op to the writer and suspend req until it has committed; then
 * finish(req) runs and replies with api_reply_write(). op->owner is set
 * here, and op->done too unless the op brought its own (which must end in
 * http_resume(op->owner)). render makes the reply to a success; a POST with
 * an Idempotency-Key has it rendered and kept by the writer (idempotency.h).
 */
void api_write(struct http_request *req, struct write_op *op, write_render_fn render,
               http_handler_fn finish);

/*
 * Reply to a write that has run: its error (err, may be NULL), the reply
 * the writer kept or replayed for its Idempotency-Key, or render's.
 */
void api_reply_write(struct http_request *req, struct write_op *op, const struct errmsg *err,
                     write_render_fn render);

/*
 * Check the signature of req's raw body as a runner's for job (callbacks.c):
 * Standard Webhooks or X-Drover headers, keyed with the queue's
 * callback_secret or an attempt's callback token. 0 and *attempt, the
 * attempt whose token signed it (0: the queue's secret), or
 * -DRV_EBAD_SIGNATURE with err.
 */
int api_runner_verify(struct http_request *req, const struct job *job, int *attempt,
                      struct errmsg *err);

/* ---- request bodies: each refusal is -DRV_EBAD_FIELD naming the field ---- */

/* Refuse any field of obj not in allowed (NULL-terminated). */
int api_only_fields(const json_t *obj, const char *const *allowed, struct errmsg *err);

/* A string field of 1..max bytes; absent (or null) gives NULL unless required. */
int api_text_field(const json_t *obj, const char *name, bool required, size_t max, const char **out,
                   struct errmsg *err);

/* An integer field in [min, max]; absent gives dflt. */
int api_int_field(const json_t *obj, const char *name, int min, int max, int dflt, int *out,
                  struct errmsg *err);

/* The body as an object with only `allowed` fields; an empty body is {} when allow_empty. */
int api_object_body(struct http_request *req, bool allow_empty, const char *const *allowed,
                    json_t **out, struct errmsg *err);

/* For render functions: out gets status and body as JSON text (body stolen). */
int api_render_json(struct write_reply *out, int status, json_t *body);

/* The same for a body written by w (finished here). */
int api_render_writer(struct write_reply *out, int status, struct json_writer *w);

/* A reply of one job as the API shows it (job_write()). */
int api_render_job(struct write_reply *out, int status, const struct job *job);

/*
 * Read path parameter i as a job id (canonical form into id, ULID_LEN + 1
 * bytes). Replies 400 and returns false when it is not one.
 */
bool api_job_id_param(struct http_request *req, int i, char *id);

/* Load job id (read side): true, or a 404 (or 500) reply and false. */
bool api_job_load(struct http_request *req, const char *id, struct job *job);

/*
 * Read an integer query parameter in [min, max]; absent gives dflt. Replies
 * 400 naming it and returns false when it is malformed or out of range.
 */
bool api_query_int(struct http_request *req, const char *name, int64_t min, int64_t max,
                   int64_t dflt, int64_t *out);

#endif
