/*
 * server.c - libmicrohttpd glue: limits, routing, auth, bodies, replies,
 * suspend/resume and request logs.
 *
 * MHD runs a listener thread pool (http.threads threads) that polls its
 * connections, or uses epoll above 1,024 of them (ADR 18). Every
 * check that can refuse a request without its body — route, method, auth,
 * content type, declared length, header size, duplicate Content-Length —
 * runs on MHD's first call, before any body byte is read.
 */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "http/router.h"
#include "log.h"
#include "timeutil.h"

#define HTTP_MAX_EXTRA_HEADERS 4
#define HTTP_MAX_QUERY_VALUES  8
#define REQUEST_ID_MAX         64
#define POLL_MAX_CONNECTIONS   1024 /* see http_start() */

struct http_server {
    struct MHD_Daemon *daemon;
    const struct route *routes;
    size_t n_routes;
    const struct auth *auth;
    void *app;
    int64_t max_body_bytes;
    int64_t max_upload_bytes;
    int max_header_bytes;
    char bound[80];
    const char *event_loop; /* "poll" or "epoll" */
    atomic_int inflight;
    atomic_bool draining;
    atomic_uint_fast64_t next_request;
};

struct http_request {
    struct http_server *srv;
    struct MHD_Connection *conn;
    const char *method; /* MHD's, valid for the request's life */
    char path[1024];    /* fits every route with captures of ROUTER_SEGMENT_MAX bytes */
    char request_id[REQUEST_ID_MAX + 1];
    int64_t start_ns;

    const struct route *route;
    char params[HTTP_MAX_PARAMS][ROUTER_PARAM_MAX + 1];
    enum auth_role role;

    char *body;
    size_t body_len, body_cap;
    size_t body_expected; /* an upload's Content-Length: its buffer's bound */
    bool body_too_large;

    struct {
        char name[32];
        char value[256];
    } extra[HTTP_MAX_EXTRA_HEADERS];
    int n_extra;

    char *query_values[HTTP_MAX_QUERY_VALUES]; /* decoded copies, freed with the request */
    int n_query_values;

    bool replied;
    int status;
    http_handler_fn finish; /* set while suspended */
    atomic_bool resumed;    /* http_resume() was called (by any thread) */
    bool gone;              /* the connection is closing: replies go nowhere */
    void *ctx;
};

/* ---- replies ---- */

static void add_common_headers(struct http_request *req, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "X-Request-Id", req->request_id);
    for (int i = 0; i < req->n_extra; i++)
        MHD_add_response_header(resp, req->extra[i].name, req->extra[i].value);
}

void http_add_header(struct http_request *req, const char *name, const char *value)
{
    if (req->n_extra == HTTP_MAX_EXTRA_HEADERS)
        return;
    snprintf(req->extra[req->n_extra].name, sizeof(req->extra[0].name), "%s", name);
    snprintf(req->extra[req->n_extra].value, sizeof(req->extra[0].value), "%s", value);
    req->n_extra++;
}

void http_reply_json(struct http_request *req, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(body);
    http_reply_text(req, status, text);
}

void http_reply_text(struct http_request *req, int status, char *text)
{
    if (text == NULL) {
        status = 500;
        text = strdup("{\"error\":\"internal\",\"message\":\"out of memory\"}");
        if (text == NULL)
            return; /* MHD will close the connection */
    }
    if (req->gone) {
        free(text);
        req->replied = true;
        req->status = status;
        return;
    }
    size_t len = strlen(text);
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(len, text, free);
    if (resp == NULL) {
        free(text);
        return;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    add_common_headers(req, resp);
    MHD_queue_response(req->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    req->replied = true;
    req->status = status;
}

void http_reply_file(struct http_request *req, int status, int fd, uint64_t size,
                     const char *content_type)
{
    struct MHD_Response *resp;
    if (req->gone) {
        close(fd);
        req->replied = true;
        req->status = status;
        return;
    }
    if (size == 0) {
        close(fd);
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_fd64(size, fd); /* MHD closes fd with resp */
        if (resp == NULL)
            close(fd);
    }
    if (resp == NULL) {
        http_reply_errorf(req, -DRV_ENOMEM, "out of memory");
        return;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    add_common_headers(req, resp);
    MHD_queue_response(req->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    req->replied = true;
    req->status = status;
}

void http_reply_error_extra(struct http_request *req, int rc, const struct errmsg *err,
                            json_t *extra)
{
    const char *message = err && err->text[0] ? err->text : err_name(rc);
    json_t *body = json_pack("{s:s, s:s}", "error", err_name(rc), "message", message);
    if (body && err && err->field[0])
        json_object_set_new(body, "field", json_string(err->field));
    if (body && extra)
        json_object_update(body, extra);
    json_decref(extra);
    http_reply_json(req, err_http_status(rc), body);
}

void http_reply_error(struct http_request *req, int rc, const struct errmsg *err)
{
    http_reply_error_extra(req, rc, err, NULL);
}

void http_reply_errorf(struct http_request *req, int rc, const char *fmt, ...)
{
    struct errmsg err = {.field = ""};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.text, sizeof(err.text), fmt, ap);
    va_end(ap);
    http_reply_error(req, rc, &err);
}

/* ---- accessors ---- */

void *http_app(const struct http_request *req)
{
    return req->srv->app;
}

struct http_server *http_server_of(const struct http_request *req)
{
    return req->srv;
}

const char *http_param(const struct http_request *req, int i)
{
    return i >= 0 && i < HTTP_MAX_PARAMS ? req->params[i] : "";
}

/*
 * MHD leaves URLs escaped (see keep_escaped()), so decode the value here:
 * '+' is a space, then %XX. A value that decodes to a NUL, or one past the
 * per-request cap, comes back as "\x7f", which no parameter accepts.
 */
const char *http_query(const struct http_request *req, const char *name)
{
    struct http_request *r = (struct http_request *)req;
    const char *raw = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
    if (raw == NULL || r->n_query_values == HTTP_MAX_QUERY_VALUES)
        return raw == NULL ? NULL : "\x7f";
    char *v = strdup(raw);
    if (v == NULL)
        return "\x7f";
    for (char *p = v; *p; p++) {
        if (*p == '+')
            *p = ' ';
    }
    size_t len = MHD_http_unescape(v);
    r->query_values[r->n_query_values++] = v;
    return len == strlen(v) ? v : "\x7f";
}

const char *http_header(const struct http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_method(const struct http_request *req)
{
    return req->method;
}

const char *http_path(const struct http_request *req)
{
    return req->path;
}

enum auth_role http_role(const struct http_request *req)
{
    return req->role;
}

const char *http_request_id(const struct http_request *req)
{
    return req->request_id;
}

const char *http_body(const struct http_request *req, size_t *len)
{
    *len = req->body_len;
    return req->body ? req->body : "";
}

int http_body_json(const struct http_request *req, bool allow_empty, json_t **out,
                   struct errmsg *err)
{
    *out = NULL;
    if (req->body_len == 0) {
        if (allow_empty)
            return 0;
        return errmsg_set(err, -DRV_EBAD_JSON, "the request needs a JSON body");
    }
    json_error_t jerr;
    *out = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (*out == NULL)
        return errmsg_set(err, -DRV_EBAD_JSON, "malformed JSON at line %d column %d: %s", jerr.line,
                          jerr.column, jerr.text);
    return 0;
}

void http_set_ctx(struct http_request *req, void *ctx)
{
    req->ctx = ctx;
}

void *http_ctx(const struct http_request *req)
{
    return req->ctx;
}

void http_suspend(struct http_request *req, http_handler_fn finish)
{
    req->finish = finish;
    MHD_suspend_connection(req->conn);
}

void http_resume(struct http_request *req)
{
    atomic_store(&req->resumed, true);
    MHD_resume_connection(req->conn);
}

bool http_peer_closed(const struct http_request *req)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (info == NULL)
        return false;
    char c;
    ssize_t n = recv(info->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    /* 0: orderly shutdown; an error other than "nothing to read": reset. */
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* ---- the first call: everything that can refuse before the body ---- */

struct header_scan {
    size_t bytes;
    int content_lengths;
    const char *content_length;
    bool conflicting_length;
};

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    struct header_scan *scan = cls;
    scan->bytes += strlen(key) + (value ? strlen(value) : 0) + 4;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (scan->content_lengths++ > 0 && value && scan->content_length &&
            strcmp(value, scan->content_length) != 0)
            scan->conflicting_length = true;
        scan->content_length = value;
    }
    return MHD_YES;
}

static bool request_id_sane(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool is_json_type(const char *ct)
{
    if (ct == NULL)
        return false;
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* Does the request announce a body (a non-zero length, or chunked)? */
static bool has_body(struct http_request *req, const char *content_length)
{
    const char *te = http_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    if (te && strcasestr(te, "chunked"))
        return true;
    return content_length && strtoull(content_length, NULL, 10) > 0;
}

static void allow_header(struct http_request *req)
{
    char allow[128];
    router_allowed_methods(req->srv->routes, req->srv->n_routes, req->path, allow, sizeof(allow));
    http_add_header(req, "Allow", allow);
}

static unsigned route_roles(const struct route *r)
{
    return r->roles & ROUTE_ROLE_MASK;
}

/* The cap on req's body: its route's kind decides. */
static int64_t body_limit(const struct http_request *req)
{
    if (req->route && (req->route->roles & ROUTE_RAW_BODY))
        return req->srv->max_upload_bytes;
    return req->srv->max_body_bytes;
}

/* 413, with the limit as "max_bytes" so a client can cut its body to fit. */
static void reply_too_large(struct http_request *req)
{
    int64_t limit = body_limit(req);
    struct errmsg err = {.field = ""};
    errmsg_set(&err, -DRV_ETOO_LARGE, "the body is over the limit of %lld bytes", (long long)limit);
    http_reply_error_extra(req, -DRV_ETOO_LARGE, &err,
                           json_pack("{s:I}", "max_bytes", (json_int_t)limit));
}

/* Returns true when the request was answered (refused) already. */
static bool refuse_early(struct http_request *req)
{
    struct http_server *srv = req->srv;
    struct header_scan scan = {0};
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, scan_header, &scan);

    const char *rid = http_header(req, "X-Request-Id");
    if (rid && request_id_sane(rid))
        snprintf(req->request_id, sizeof(req->request_id), "%s", rid);

    if (scan.bytes > (size_t)srv->max_header_bytes) {
        http_reply_errorf(req, -DRV_EHEADERS_TOO_LARGE,
                          "request headers are over the limit of %d bytes", srv->max_header_bytes);
        return true;
    }
    if (scan.content_lengths > 1) {
        http_reply_errorf(req, -DRV_EBAD_REQUEST, "%s Content-Length headers are refused",
                          scan.conflicting_length ? "conflicting" : "duplicate");
        return true;
    }
    const char *te = http_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    if (te && scan.content_length) {
        http_reply_errorf(req, -DRV_EBAD_REQUEST,
                          "Content-Length together with Transfer-Encoding is refused");
        return true;
    }

    enum router_match m =
        router_find(srv->routes, srv->n_routes, req->method, req->path, &req->route, req->params);
    if (m == ROUTER_NO_PATH) {
        http_reply_errorf(req, -DRV_ENOT_FOUND, "no route for '%s'", req->path);
        return true;
    }
    if (m == ROUTER_NO_METHOD) {
        allow_header(req);
        http_reply_errorf(req, -DRV_EMETHOD, "'%s' does not allow %s", req->path, req->method);
        return true;
    }
    unsigned roles = route_roles(req->route);
    /* Draining: probes still answer (readyz says so); everything else is refused. */
    if (atomic_load(&srv->draining) && roles != ROLE_NONE) {
        http_add_header(req, "Connection", "close");
        http_reply_errorf(req, -DRV_ESHUTTING_DOWN, "the server is shutting down");
        return true;
    }
    /* Signed instead of a token: the handler verifies the signature over the body. */
    bool signed_instead = (req->route->roles & ROUTE_OR_SIGNED) &&
                          http_header(req, MHD_HTTP_HEADER_AUTHORIZATION) == NULL &&
                          (http_header(req, "webhook-signature") != NULL ||
                           http_header(req, "x-drover-signature") != NULL);
    if (roles != ROLE_NONE && !signed_instead) {
        req->role = auth_check(srv->auth, http_header(req, MHD_HTTP_HEADER_AUTHORIZATION));
        if (req->role == ROLE_NONE) {
            http_add_header(req, "WWW-Authenticate", "Bearer realm=\"drover\"");
            http_reply_errorf(req, -DRV_EUNAUTHORIZED,
                              http_header(req, MHD_HTTP_HEADER_AUTHORIZATION)
                                  ? "the bearer token is not valid"
                              : req->route->roles & ROUTE_OR_SIGNED
                                  ? "this route needs a bearer token or a signature"
                                  : "this route needs a bearer token");
            return true;
        }
        if (!auth_allows(req->role, roles)) {
            http_reply_errorf(req, -DRV_EFORBIDDEN, "the %s role may not %s %s",
                              auth_role_name(req->role), req->method, req->route->pattern);
            return true;
        }
    }
    if (has_body(req, scan.content_length)) {
        bool raw = req->route->roles & ROUTE_RAW_BODY;
        if (!raw && !is_json_type(http_header(req, MHD_HTTP_HEADER_CONTENT_TYPE))) {
            http_reply_errorf(req, -DRV_EMEDIA_TYPE, "the body must be application/json");
            return true;
        }
        unsigned long long declared =
            scan.content_length ? strtoull(scan.content_length, NULL, 10) : 0;
        if (declared > (unsigned long long)body_limit(req)) {
            reply_too_large(req);
            return true;
        }
        if (raw)
            req->body_expected = (size_t)declared;
    }
    return false;
}

/* ---- body ---- */

static int body_append(struct http_request *req, const char *data, size_t n)
{
    if (req->body_len + n > (size_t)body_limit(req)) {
        req->body_too_large = true;
        return -DRV_ETOO_LARGE;
    }
    if (req->body_len + n + 1 > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap * 2 : 1024;
        while (cap < req->body_len + n + 1)
            cap *= 2;
        /* An upload of known length: never more than it declared (not 32 MiB for
         * 16), and still only as much as has arrived, give or take a doubling. */
        if (req->body_expected >= req->body_len + n && cap > req->body_expected + 1)
            cap = req->body_expected + 1;
        char *p = realloc(req->body, cap);
        if (p == NULL)
            return -DRV_ENOMEM;
        req->body = p;
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, data, n);
    req->body_len += n;
    req->body[req->body_len] = '\0';
    return 0;
}

/* ---- MHD callbacks ---- */

static struct http_request *request_new(struct http_server *srv, struct MHD_Connection *conn,
                                        const char *url, const char *method)
{
    struct http_request *req = calloc(1, sizeof(*req));
    if (req == NULL)
        return NULL;
    req->srv = srv;
    req->conn = conn;
    req->method = method;
    req->start_ns = time_mono_ns();
    snprintf(req->path, sizeof(req->path), "%s", url);
    uint64_t n = atomic_fetch_add(&srv->next_request, 1);
    snprintf(req->request_id, sizeof(req->request_id), "r%llx", (unsigned long long)n);
    atomic_fetch_add(&srv->inflight, 1);
    return req;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    (void)version;
    struct http_server *srv = cls;
    struct http_request *req = *con_cls;

    if (req == NULL) {
        req = request_new(srv, conn, url, method);
        if (req == NULL)
            return MHD_NO;
        *con_cls = req;
        if (strlen(url) >= sizeof(req->path)) {
            http_reply_errorf(req, -DRV_EBAD_REQUEST, "the path is over %zu bytes",
                              sizeof(req->path) - 1);
            return MHD_YES;
        }
        refuse_early(req);
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!req->replied && !req->body_too_large)
            body_append(req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->replied)
        return MHD_YES;
    if (req->finish) {
        http_handler_fn finish = req->finish;
        req->finish = NULL;
        finish(req);
    } else if (req->body_too_large) {
        reply_too_large(req);
    } else {
        req->route->handler(req);
    }
    if (!req->replied && !req->finish) {
        log_printf(LOG_ERROR, "handler for %s %s did not reply", req->method, req->path);
        http_reply_errorf(req, -DRV_EINTERNAL, "no reply");
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    struct http_server *srv = cls;
    struct http_request *req = *con_cls;
    if (req == NULL)
        return;
    if (req->finish) {
        if (!atomic_load(&req->resumed)) {
            /* Closed while suspended: what holds req still uses it. Keep it. */
            log_printf(LOG_ERROR, "%s %s closed while suspended", req->method, req->path);
            *con_cls = NULL;
            atomic_fetch_sub(&srv->inflight, 1);
            return;
        }
        /*
         * Resumed, but its client had gone: libmicrohttpd closes such a
         * connection without calling on_access again (ADR 18). finish()
         * still runs, to free what the request held; its reply goes nowhere.
         */
        req->gone = true;
        http_handler_fn finish = req->finish;
        req->finish = NULL;
        finish(req);
    }
    struct log_line l;
    enum log_level level = req->status >= 500 ? LOG_WARN : LOG_INFO;
    if (log_begin(&l, level, "request")) {
        log_str(&l, "req", req->request_id);
        log_str(&l, "method", req->method);
        log_str(&l, "path", req->path);
        log_int(&l, "status", req->status);
        log_double(&l, "ms", (double)(time_mono_ns() - req->start_ns) / 1e6);
        if (req->role != ROLE_NONE)
            log_str(&l, "role", auth_role_name(req->role));
        if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
            log_int(&l, "aborted", (int64_t)toe);
        log_end(&l);
    }
    for (int i = 0; i < req->n_query_values; i++)
        free(req->query_values[i]);
    free(req->body);
    free(req);
    *con_cls = NULL;
    atomic_fetch_sub(&srv->inflight, 1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    struct log_line l;
    if (log_begin(&l, LOG_WARN, "http")) {
        log_str(&l, "detail", msg);
        log_end(&l);
    }
}

/*
 * Leave the URL and its arguments escaped: routing must see "%2F" as part of
 * a segment, not as a separator. Captures and query values are decoded on
 * their own (router.c, http_query()).
 */
static size_t keep_escaped(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    return strlen(s);
}

/* ---- lifecycle ---- */

/* Split "HOST:PORT" / "[V6]:PORT" and resolve numerically. */
static int resolve_listen(const char *listen, struct sockaddr_storage *addr, socklen_t *len)
{
    char host[128], port[16];
    const char *colon;
    if (listen[0] == '[') {
        const char *end = strchr(listen, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - listen - 1) >= sizeof(host))
            return -DRV_ECONFIG;
        snprintf(host, sizeof(host), "%.*s", (int)(end - listen - 1), listen + 1);
        colon = end + 1;
    } else {
        colon = strrchr(listen, ':');
        if (colon == NULL || (size_t)(colon - listen) >= sizeof(host))
            return -DRV_ECONFIG;
        snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
    }
    snprintf(port, sizeof(port), "%s", colon + 1);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res) != 0 || res == NULL)
        return -DRV_ECONFIG;
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void format_bound(struct http_server *srv)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (info && getsockname(info->listen_fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
            port = ntohs(a->sin6_port);
            snprintf(srv->bound, sizeof(srv->bound), "[%s]:%d", host, port);
            return;
        }
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
    }
    snprintf(srv->bound, sizeof(srv->bound), "%s:%d", host, port);
}

int http_start(const struct http_options *opt, const struct route *routes, size_t n_routes,
               const struct auth *auth, void *app, struct http_server **out)
{
    struct sockaddr_storage addr;
    socklen_t addr_len;
    if (resolve_listen(opt->listen, &addr, &addr_len) < 0) {
        log_printf(LOG_ERROR, "cannot parse listen address '%s'", opt->listen);
        return -DRV_ECONFIG;
    }
    struct http_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return -DRV_ENOMEM;
    srv->routes = routes;
    srv->n_routes = n_routes;
    srv->auth = auth;
    srv->app = app;
    srv->max_body_bytes = opt->max_body_bytes;
    srv->max_upload_bytes = opt->max_upload_bytes ? opt->max_upload_bytes : opt->max_body_bytes;
    srv->max_header_bytes = opt->max_header_bytes;

    /*
     * The event loop (ADR 18). Every request that waits for the writer is
     * suspended and resumed. In epoll mode libmicrohttpd takes a suspended
     * socket out of its epoll set and puts it back on resume: two epoll_ctl
     * calls per request, 14% of the HTTP threads' time under load. In poll
     * mode a suspended connection is only left out of the next poll set,
     * but every wait scans all of the thread's connections. Measured on the
     * 2-core VM (bench/README.md), poll is 8-15% ahead with ~370 busy
     * connections and on par with ~1,000; so poll up to POLL_MAX_CONNECTIONS
     * (the default connection_limit), epoll for servers allowed more.
     */
    bool use_poll = opt->connection_limit <= POLL_MAX_CONNECTIONS;
    srv->event_loop = use_poll ? "poll" : "epoll";
    unsigned flags = (use_poll ? MHD_USE_POLL_INTERNAL_THREAD : MHD_USE_EPOLL_INTERNAL_THREAD) |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_TURBO;
    if (addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /*
     * MHD's per-connection pool holds the request headers, so it must exceed
     * our limit for the limit check (and its JSON 431) to be ours. Headers
     * past twice the limit overflow the pool and MHD answers 431 itself, with
     * its own HTML body. The pool is cleared for every request on a
     * keep-alive connection, so it is kept small: 64 KiB pools cost ~3% of
     * the submit path in memset alone.
     */
    size_t pool = (size_t)opt->max_header_bytes * 2 + 16 * 1024;
    srv->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_access, srv, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)opt->threads, MHD_OPTION_CONNECTION_LIMIT, (unsigned)opt->connection_limit,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)opt->connection_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL, MHD_OPTION_STRICT_FOR_CLIENT, (int)1,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_END);
    if (srv->daemon == NULL) {
        log_printf(LOG_ERROR, "cannot listen on '%s'", opt->listen);
        free(srv);
        return -DRV_EIO;
    }
    format_bound(srv);
    *out = srv;
    return 0;
}

const char *http_bound_address(const struct http_server *srv)
{
    return srv->bound;
}

const char *http_event_loop(const struct http_server *srv)
{
    return srv->event_loop;
}

void http_quiesce(struct http_server *srv)
{
    /*
     * Only a flag: new requests get 503 + Connection: close (refuse_early)
     * and /readyz turns 503. MHD_quiesce_daemon() would also close the
     * listening socket, but in libmicrohttpd 0.9.75's epoll thread-pool mode
     * it can abort the process ("Failed to remove listen FD from epoll set"),
     * as seen about once in a hundred stops; the socket closes at http_stop().
     */
    atomic_store(&srv->draining, true);
}

bool http_draining(const struct http_server *srv)
{
    return atomic_load(&((struct http_server *)srv)->draining);
}

int http_inflight(const struct http_server *srv)
{
    return atomic_load(&((struct http_server *)srv)->inflight);
}

void http_stop(struct http_server *srv)
{
    if (srv == NULL)
        return;
    MHD_stop_daemon(srv->daemon);
    free(srv);
}
