/*
 * http.h - drover's HTTP front: libmicrohttpd underneath, a route table on
 * top, JSON in and out.
 *
 * Request path: MHD parses headers -> http checks limits, route, auth and
 * content type (answering 4xx without reading the body when they fail) ->
 * the body is read up to its cap -> the route's handler runs on an MHD
 * thread. A handler either replies at once (reads) or defers: it suspends
 * the connection, queues a write op with the writer and returns; when the
 * write has committed, the op's done() calls http_resume() and the
 * handler's finish function builds the reply. A deferred request holds no
 * thread while it waits (docs/adr/0002-write-path-group-commit.md).
 */
#ifndef DROVER_HTTP_H
#define DROVER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "auth.h"
#include "error.h"

struct http_server;
struct http_request;

typedef void (*http_handler_fn)(struct http_request *req);

#define HTTP_MAX_PARAMS 2

/* One entry of the route table. */
struct route {
    const char *method;  /* "GET", "POST", ... */
    const char *pattern; /* "/v1/jobs/:id/events": ':' segments capture */
    unsigned roles;      /* roles that may call it (ROLE_NONE = open), | ROUTE_* flags */
    http_handler_fn handler;
};

/*
 * Route flags, OR'ed into a route's roles above the role bits (so route
 * tables keep their four fields):
 *
 *  - ROUTE_RAW_BODY: the body may have any content type and is capped by
 *    http_options.max_upload_bytes instead of max_body_bytes (uploads);
 *  - ROUTE_OR_SIGNED: a request without an Authorization header but with a
 *    webhook-signature or X-Drover-Signature header reaches the handler
 *    unauthenticated (http_role() is ROLE_NONE), which must then verify the
 *    signature over the raw body or refuse with 401. Any other request is
 *    checked against the roles as usual.
 */
#define ROUTE_RAW_BODY  (1u << 16)
#define ROUTE_OR_SIGNED (1u << 17)
#define ROUTE_ROLE_MASK 0xffffu

struct http_options {
    const char *listen; /* "HOST:PORT", port 0 = any free one */
    int threads;
    int connection_limit;
    int connection_timeout_s;
    int64_t max_body_bytes;
    int64_t max_upload_bytes; /* bodies of ROUTE_RAW_BODY routes */
    int max_header_bytes;
};

/*
 * Start serving routes with the handlers' shared context app. Returns 0 and
 * the server, or a negative code (cannot bind: -DRV_EIO).
 */
int http_start(const struct http_options *opt, const struct route *routes, size_t n_routes,
               const struct auth *auth, void *app, struct http_server **out);

/* The address actually bound ("127.0.0.1:40123"). */
const char *http_bound_address(const struct http_server *srv);

/* "poll" or "epoll": the event loop chosen for http_options.connection_limit. */
const char *http_event_loop(const struct http_server *srv);

/*
 * Start draining: answer every new request (but the probes) with 503 and
 * Connection: close, and /readyz with 503. Requests in flight go on.
 */
void http_quiesce(struct http_server *srv);

bool http_draining(const struct http_server *srv);

/* Requests that have begun and not yet completed. */
int http_inflight(const struct http_server *srv);

/* Stop the daemon and free srv. No request may be suspended. */
void http_stop(struct http_server *srv);

/* ---- for handlers ---- */

void *http_app(const struct http_request *req);
struct http_server *http_server_of(const struct http_request *req);
const char *http_param(const struct http_request *req, int i); /* path captures, in order */
const char *http_query(const struct http_request *req, const char *name);
const char *http_header(const struct http_request *req, const char *name);
const char *http_method(const struct http_request *req);
const char *http_path(const struct http_request *req); /* without the query */
enum auth_role http_role(const struct http_request *req);
const char *http_request_id(const struct http_request *req);

/* The raw body (NUL-terminated for convenience) and its length; len 0 when none. */
const char *http_body(const struct http_request *req, size_t *len);

/*
 * Parse the body as JSON. An empty body gives NULL with rc 0 when
 * allow_empty. Malformed JSON (including bad UTF-8 and duplicate keys) is
 * -DRV_EBAD_JSON with err set.
 */
int http_body_json(const struct http_request *req, bool allow_empty, json_t **out,
                   struct errmsg *err);

/* Add a header to the coming reply (copied; at most a few per reply). */
void http_add_header(struct http_request *req, const char *name, const char *value);

/* Reply with JSON (steals body). */
void http_reply_json(struct http_request *req, int status, json_t *body);

/* Reply with JSON text (steals text; NULL replies 500 "out of memory"). */
void http_reply_text(struct http_request *req, int status, char *text);

/*
 * Reply with the size bytes of the open file fd (taken: closed when sent or on
 * failure) as content_type, sent from the file (sendfile) without copying.
 */
void http_reply_file(struct http_request *req, int status, int fd, uint64_t size,
                     const char *content_type);

/* Reply {"error": err_name(rc), "message": ..., ["field": ...]} with err_http_status(rc). */
void http_reply_error(struct http_request *req, int rc, const struct errmsg *err);
/* Like http_reply_error, with the fields of extra (stolen) added to the body. */
void http_reply_error_extra(struct http_request *req, int rc, const struct errmsg *err,
                            json_t *extra);
void http_reply_errorf(struct http_request *req, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Suspend the request until http_resume(); then finish(req) runs on an MHD
 * thread and must reply. If the client has hung up by then, finish(req)
 * still runs, as the connection closes, and its reply is dropped: finish
 * frees what the request holds either way. Call it before handing work to
 * another thread, so the resume can never come first:
 *
 *     http_suspend(req, finish_submit);
 *     if (writer_submit(w, &op->op) < 0) {
 *         op->op.result = -DRV_ESHUTTING_DOWN;
 *         http_resume(req);
 *     }
 */
void http_suspend(struct http_request *req, http_handler_fn finish);

/* Wake a suspended request (any thread, exactly once per suspend). */
void http_resume(struct http_request *req);

/*
 * Has the client of a suspended request hung up? (MHD does not watch a
 * suspended connection; this peeks at its socket.) Any thread.
 */
bool http_peer_closed(const struct http_request *req);

/* A pointer the handler keeps across a deferral (freed by the handler in finish). */
void http_set_ctx(struct http_request *req, void *ctx);
void *http_ctx(const struct http_request *req);

#endif
