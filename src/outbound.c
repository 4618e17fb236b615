/*
 * outbound.c - the engine thread, its queues and its libcurl multi handle.
 *
 * Senders append to `incoming` under the lock and wake the thread through
 * an eventfd (only when the list was empty: the thread takes the whole
 * list at once). The thread alone touches everything else: it sorts
 * requests into one FIFO per "host:port", and a ready list of hosts that
 * have waiting requests and a free per-host slot is served round-robin
 * while a global slot is free. A started request gets a transfer (an easy
 * handle kept for reuse, its error buffer and excerpt buffer) and joins the
 * multi handle. The multi handle keeps the connection cache, so a host's
 * next request reuses its open connection.
 *
 * The thread drives curl with its "multi_socket" API: curl names the
 * sockets to watch (on_socket) and when its next timeout is due (on_timer),
 * the thread sleeps in epoll_wait() on them and the eventfd, and tells curl
 * which socket is ready. curl then touches only that transfer: with
 * curl_multi_perform() and curl_multi_poll() it made three poll() calls per
 * webhook sent, and makes two this way (docs/adr/0010-outbound-engine.md).
 *
 * The SSRF guard sits in CURLOPT_OPENSOCKETFUNCTION: curl asks for a socket
 * for each resolved address it tries, and gets CURL_SOCKET_BAD for a refused
 * one, so it never connects there; the guard's reason becomes the error when
 * no address was allowed.
 */
#include "outbound.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "timeutil.h"
#include "util.h"

/* Buckets of the host table (a power of two); chains stay short for the hosts in use. */
#define HOST_BUCKETS 256

/* The thread's longest sleep when curl has no timeout due: a wake-up comes first. */
#define IDLE_WAIT_MS (60 * 60 * 1000)

/* Socket events taken from epoll at once. */
#define EVENTS_MAX 64

_Static_assert(CONFIG_MAX_TARGETS <= NET_GUARD_MAX_ALLOW, "allow_target entries fit the guard");
_Static_assert(OUTBOUND_ERROR_MAX >= CURL_ERROR_SIZE, "curl's error text fits the result");

/* One "host:port" and the requests waiting for it. */
struct host {
    struct host *hash_next;
    struct host *ready_next;
    bool ready;    /* on the ready list */
    int in_flight; /* transfers started and not finished */
    struct outbound_request *head, *tail;
    uint64_t hash;
    char key[]; /* "host:port" */
};

/* A started request's state, and the easy handle kept between requests. */
struct transfer {
    struct outbound *o;
    CURL *easy;                   /* NULL until first used */
    struct outbound_request *req; /* NULL when free */
    struct host *host;
    struct curl_slist *headers;
    char *excerpt; /* excerpt_max + 1 bytes */
    size_t excerpt_len;
    char errbuf[CURL_ERROR_SIZE];
    struct errmsg refused; /* the guard's last reason */
    int n_refused, n_opened;
    int64_t started_ms;
    struct transfer *next_free;
};

struct outbound {
    struct outbound_config cfg;
    CURLM *multi;
    pthread_t thread;
    bool curl_ready; /* curl_global_init() succeeded */
    int epfd;        /* curl's sockets and wakefd; -1 until made */
    int wakefd;      /* an eventfd: senders wake the thread; -1 until made */

    pthread_mutex_t lock; /* guards incoming and stopping */
    struct outbound_request *in_head, *in_tail;
    bool stopping;

    /* The engine thread's alone. */
    struct host *hosts[HOST_BUCKETS];
    struct host *ready_head, *ready_tail;
    struct transfer *transfers; /* max_connections of them */
    struct transfer *free_transfers;
    int in_flight;
    int64_t timer_at_ms; /* when curl's timeout is due (monotonic); -1: none */
};

/* ---- configuration ---- */

void outbound_config_init(struct outbound_config *oc)
{
    memset(oc, 0, sizeof(*oc));
    net_guard_init(&oc->guard);
    oc->max_connections = 64;
    oc->max_host_connections = 8;
    oc->connect_timeout_ms = 5000;
    oc->timeout_ms = 15000;
    oc->excerpt_max = OUTBOUND_EXCERPT_DEFAULT;
    oc->stop_timeout_ms = OUTBOUND_STOP_DEFAULT_MS;
}

int outbound_config_from(struct outbound_config *oc, const struct config *cfg, struct errmsg *err)
{
    outbound_config_init(oc);
    oc->max_connections = cfg->outbound_max_connections;
    oc->max_host_connections = cfg->outbound_max_host_connections;
    oc->connect_timeout_ms = cfg->outbound_connect_timeout_ms;
    oc->timeout_ms = cfg->outbound_timeout_ms;
    for (int i = 0; i < cfg->n_allow_targets; i++) {
        struct errmsg why;
        if (net_guard_allow(&oc->guard, cfg->allow_targets[i], &why) < 0)
            return errmsg_field(err, -DRV_ECONFIG, "outbound.allow_target",
                                "outbound.allow_target: %s", why.text);
    }
    return 0;
}

static bool config_ok(const struct outbound_config *oc)
{
    return oc->max_connections >= 1 && oc->max_host_connections >= 1 &&
           oc->connect_timeout_ms >= 1 && oc->timeout_ms >= 1 &&
           oc->excerpt_max <= OUTBOUND_EXCERPT_MAX && oc->stop_timeout_ms >= 0 &&
           oc->guard.n_allow >= 0 && oc->guard.n_allow <= NET_GUARD_MAX_ALLOW;
}

/* ---- checking a request (any thread) ---- */

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int check_method(const char *method, bool has_body, struct errmsg *err)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    for (size_t i = 0; i < ARRAY_SIZE(known); i++) {
        if (strcmp(method, known[i]) != 0)
            continue;
        if (has_body && strcmp(method, "HEAD") == 0)
            return errmsg_field(err, -DRV_EBAD_FIELD, "method", "a HEAD request has no body");
        return 0;
    }
    return errmsg_field(err, -DRV_EBAD_FIELD, "method",
                        "method must be GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS");
}

/* Header i: a token, a colon, a value without CR or LF. The value is never quoted. */
static int check_header(const char *line, size_t i, struct errmsg *err)
{
    size_t len = strnlen(line, OUTBOUND_HEADER_MAX + 1);
    size_t name_len = 0;
    if (len > OUTBOUND_HEADER_MAX)
        return errmsg_field(err, -DRV_EBAD_FIELD, "headers", "header %zu is longer than %d bytes",
                            i + 1, OUTBOUND_HEADER_MAX);
    while (is_tchar((unsigned char)line[name_len]))
        name_len++;
    if (name_len == 0 || line[name_len] != ':')
        return errmsg_field(err, -DRV_EBAD_FIELD, "headers",
                            "header %zu is not 'Name: value' with a token name", i + 1);
    if (strpbrk(line, "\r\n"))
        return errmsg_field(err, -DRV_EBAD_FIELD, "headers",
                            "header %zu ('%.*s') holds a line break", i + 1, (int)name_len, line);
    return 0;
}

/* The URL's scheme is http or https; its "host:port" goes to key. */
static int url_host_key(const char *url, char key[OUTBOUND_HOST_KEY_MAX], struct errmsg *err)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    int rc = 0;

    if (!u)
        return errmsg_set(err, -DRV_ENOMEM, "out of memory");
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        rc = errmsg_field(err, -DRV_EBAD_FIELD, "url", "url is not an absolute http(s) URL");
        goto out;
    }
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        rc = errmsg_field(err, -DRV_EBAD_FIELD, "url", "url scheme '%.16s' is not http or https",
                          scheme);
        goto out;
    }
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        rc = errmsg_field(err, -DRV_EBAD_FIELD, "url", "url has no host");
        goto out;
    }
    for (char *p = host; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    int n = snprintf(key, OUTBOUND_HOST_KEY_MAX, "%s:%s", host, port);
    if (n < 0 || n >= OUTBOUND_HOST_KEY_MAX)
        rc = errmsg_field(err, -DRV_EBAD_FIELD, "url", "url host is longer than %d bytes",
                          OUTBOUND_HOST_KEY_MAX - 8);
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}

/* outbound_request_check(), and the host key when it passes. */
static int check_request(const struct outbound_request *req, char key[OUTBOUND_HOST_KEY_MAX],
                         struct errmsg *err)
{
    if (!req->done)
        return errmsg_field(err, -DRV_EBAD_FIELD, "done", "done callback is missing");
    if (req->method) {
        int rc = check_method(req->method, req->body_len > 0, err);
        if (rc)
            return rc;
    }
    if (!req->url || req->url[0] == '\0')
        return errmsg_field(err, -DRV_EBAD_FIELD, "url", "url is missing");
    if (strnlen(req->url, OUTBOUND_URL_MAX + 1) > OUTBOUND_URL_MAX)
        return errmsg_field(err, -DRV_EBAD_FIELD, "url", "url is longer than %d bytes",
                            OUTBOUND_URL_MAX);
    if (req->n_headers > OUTBOUND_HEADERS_MAX)
        return errmsg_field(err, -DRV_EBAD_FIELD, "headers", "more than %d headers",
                            OUTBOUND_HEADERS_MAX);
    if (req->n_headers > 0 && !req->headers)
        return errmsg_field(err, -DRV_EBAD_FIELD, "headers", "headers is NULL");
    for (size_t i = 0; i < req->n_headers; i++) {
        if (!req->headers[i])
            return errmsg_field(err, -DRV_EBAD_FIELD, "headers", "header %zu is NULL", i + 1);
        int rc = check_header(req->headers[i], i, err);
        if (rc)
            return rc;
    }
    if (req->body_len > 0 && !req->body)
        return errmsg_field(err, -DRV_EBAD_FIELD, "body", "body is NULL but body_len is %zu",
                            req->body_len);
    if (req->connect_timeout_ms < 0 || req->timeout_ms < 0)
        return errmsg_field(err, -DRV_EBAD_FIELD, "timeout", "timeouts must not be negative");
    return url_host_key(req->url, key, err);
}

int outbound_request_check(const struct outbound_request *req, struct errmsg *err)
{
    char key[OUTBOUND_HOST_KEY_MAX];
    return check_request(req, key, err);
}

/* ---- hosts and the ready list (engine thread) ---- */

static uint64_t key_hash(const char *key)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h;
}

static struct host *host_get(struct outbound *o, const char *key)
{
    uint64_t h = key_hash(key);
    struct host **bucket = &o->hosts[h & (HOST_BUCKETS - 1)];
    for (struct host *it = *bucket; it; it = it->hash_next)
        if (it->hash == h && strcmp(it->key, key) == 0)
            return it;
    size_t len = strlen(key);
    struct host *host = calloc(1, sizeof(*host) + len + 1);
    if (!host)
        return NULL;
    host->hash = h;
    memcpy(host->key, key, len + 1);
    host->hash_next = *bucket;
    *bucket = host;
    return host;
}

/* Free host once it has nothing queued, in flight or listed. */
static void host_release_if_idle(struct outbound *o, struct host *host)
{
    if (host->in_flight > 0 || host->head || host->ready)
        return;
    struct host **link = &o->hosts[host->hash & (HOST_BUCKETS - 1)];
    while (*link != host)
        link = &(*link)->hash_next;
    *link = host->hash_next;
    free(host);
}

static int host_limit(const struct outbound *o)
{
    return o->cfg.max_host_connections < o->cfg.max_connections ? o->cfg.max_host_connections
                                                                : o->cfg.max_connections;
}

/* List host as ready when it has a request waiting and a free slot. */
static void host_mark_ready(struct outbound *o, struct host *host)
{
    if (host->ready || !host->head || host->in_flight >= host_limit(o))
        return;
    host->ready = true;
    host->ready_next = NULL;
    if (o->ready_tail)
        o->ready_tail->ready_next = host;
    else
        o->ready_head = host;
    o->ready_tail = host;
}

static struct host *ready_pop(struct outbound *o)
{
    struct host *host = o->ready_head;
    o->ready_head = host->ready_next;
    if (!o->ready_head)
        o->ready_tail = NULL;
    host->ready = false;
    host->ready_next = NULL;
    return host;
}

static void host_push(struct host *host, struct outbound_request *req)
{
    req->priv_next = NULL;
    if (host->tail)
        host->tail->priv_next = req;
    else
        host->head = req;
    host->tail = req;
}

static struct outbound_request *host_pop(struct host *host)
{
    struct outbound_request *req = host->head;
    host->head = req->priv_next;
    if (!host->head)
        host->tail = NULL;
    req->priv_next = NULL;
    return req;
}

/* ---- results ---- */

/* End req without a transfer: rc and a message, nothing else known. */
static void complete_unsent(struct outbound_request *req, int rc, const char *error)
{
    struct outbound_result res = {.rc = rc, .excerpt = "", .retry_after_s = -1};
    snprintf(res.error, sizeof(res.error), "%s", error);
    req->done(req, &res);
}

/*
 * Retry-After: delta-seconds or an HTTP-date (RFC 9110 10.2.3), as seconds
 * from now_s; -1 when value is neither.
 */
static int retry_after_parse(const char *value, time_t now_s)
{
    while (*value == ' ' || *value == '\t')
        value++;
    size_t digits = strspn(value, "0123456789");
    if (digits > 0 && value[digits + strspn(value + digits, " \t")] == '\0') {
        long long s = 0;
        for (size_t i = 0; i < digits && s <= OUTBOUND_RETRY_AFTER_MAX; i++)
            s = s * 10 + (value[i] - '0');
        return s > OUTBOUND_RETRY_AFTER_MAX ? OUTBOUND_RETRY_AFTER_MAX : (int)s;
    }
    if (digits > 0)
        return -1;
    time_t when = curl_getdate(value, NULL);
    if (when == -1)
        return -1;
    if (when <= now_s)
        return 0;
    return when - now_s > OUTBOUND_RETRY_AFTER_MAX ? OUTBOUND_RETRY_AFTER_MAX : (int)(when - now_s);
}

static int result_retry_after(CURL *easy)
{
    struct curl_header *h;
    if (curl_easy_header(easy, "Retry-After", 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
        return -1;
    return retry_after_parse(h->value, time(NULL));
}

/* Fill res from a finished transfer t whose curl result is code. */
static void result_fill(struct transfer *t, CURLcode code, struct outbound_result *res)
{
    char *ip = NULL;
    long status = 0;

    memset(res, 0, sizeof(*res));
    res->latency_ms = time_mono_ms() - t->started_ms;
    t->excerpt[t->excerpt_len] = '\0';
    res->excerpt = t->excerpt;
    res->excerpt_len = t->excerpt_len;
    res->retry_after_s = -1;
    if (curl_easy_getinfo(t->easy, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK && ip)
        snprintf(res->primary_ip, sizeof(res->primary_ip), "%s", ip);

    if (code == CURLE_OK &&
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK) {
        res->status = (int)status;
        res->retry_after_s = result_retry_after(t->easy);
        return;
    }
    if (t->n_refused > 0 && t->n_opened == 0) {
        res->rc = -DRV_EFORBIDDEN;
        snprintf(res->error, sizeof(res->error), "%s", t->refused.text);
        return;
    }
    res->rc = code == CURLE_OUT_OF_MEMORY ? -DRV_ENOMEM : -DRV_EUNAVAILABLE;
    snprintf(res->error, sizeof(res->error), "%s",
             t->errbuf[0] ? t->errbuf : curl_easy_strerror(code));
}

/* ---- transfers (engine thread) ---- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    struct transfer *t = userp;
    size_t len = size * nmemb;
    size_t room = t->o->cfg.excerpt_max - t->excerpt_len;
    size_t keep = len < room ? len : room;
    memcpy(t->excerpt + t->excerpt_len, data, keep);
    t->excerpt_len += keep;
    return len; /* the rest is read and dropped, so the connection stays usable */
}

/* The SSRF guard, on each address curl is about to connect to. */
static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose,
                                    struct curl_sockaddr *address)
{
    struct transfer *t = clientp;
    struct sockaddr_storage ss;

    if (purpose != CURLSOCKTYPE_IPCXN || address->addrlen > sizeof(ss))
        return CURL_SOCKET_BAD;
    /* curl's address may be longer than the `struct sockaddr` it is declared as. */
    memcpy(&ss, (const char *)address + offsetof(struct curl_sockaddr, addr), address->addrlen);
    if (net_guard_check(&t->o->cfg.guard, (const struct sockaddr *)&ss, address->addrlen,
                        &t->refused) < 0) {
        t->n_refused++;
        return CURL_SOCKET_BAD;
    }
    t->n_opened++;
    return socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

static struct curl_slist *build_headers(const struct outbound_request *req)
{
    struct curl_slist *list = NULL;
    for (size_t i = 0; i < req->n_headers; i++) {
        struct curl_slist *more = curl_slist_append(list, req->headers[i]);
        if (!more)
            goto fail;
        list = more;
    }
    /* No "Expect: 100-continue" round trip before a body. */
    struct curl_slist *more = curl_slist_append(list, "Expect:");
    if (!more)
        goto fail;
    return more;
fail:
    curl_slist_free_all(list);
    return NULL;
}

/* The method and body options. */
static bool set_method(CURL *easy, const struct outbound_request *req)
{
    const char *method = req->method ? req->method : req->body_len ? "POST" : "GET";
    bool bad = false;

    if (req->body_len > 0 || strcmp(method, "POST") == 0) {
        bad |= curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len) !=
               CURLE_OK;
        bad |=
            curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body_len ? req->body : "") != CURLE_OK;
    } else if (strcmp(method, "HEAD") == 0) {
        bad |= curl_easy_setopt(easy, CURLOPT_NOBODY, 1L) != CURLE_OK;
    } else {
        bad |= curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L) != CURLE_OK;
    }
    if (strcmp(method, "POST") != 0 && strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        bad |= curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK;
    return !bad;
}

/* Every option, from a reset handle: nothing of the previous request is left. */
static bool set_options(struct transfer *t, const struct outbound_request *req)
{
    const struct outbound_config *cfg = &t->o->cfg;
    CURL *easy = t->easy;
    long connect_ms = req->connect_timeout_ms ? req->connect_timeout_ms : cfg->connect_timeout_ms;
    long total_ms = req->timeout_ms ? req->timeout_ms : cfg->timeout_ms;
    bool bad = false;

    bad |= curl_easy_setopt(easy, CURLOPT_URL, req->url) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_PROXY, "") != CURLE_OK; /* not from the environment */
    bad |= curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, connect_ms) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, total_ms) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_USERAGENT, "drover") != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_HTTPHEADER, t->headers) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, on_open_socket) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, t) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_WRITEDATA, t) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_PRIVATE, t) != CURLE_OK;
    return !bad && set_method(easy, req);
}

/* A transfer for req, its easy handle reset or made; NULL when out of memory. */
static struct transfer *transfer_take(struct outbound *o)
{
    struct transfer *t = o->free_transfers;
    if (!t)
        return NULL;
    if (!t->excerpt) {
        t->excerpt = malloc(o->cfg.excerpt_max + 1);
        if (!t->excerpt)
            return NULL;
    }
    if (t->easy) {
        curl_easy_reset(t->easy);
    } else {
        t->easy = curl_easy_init();
        if (!t->easy)
            return NULL;
    }
    o->free_transfers = t->next_free;
    t->next_free = NULL;
    t->excerpt_len = 0;
    t->errbuf[0] = '\0';
    t->refused.text[0] = '\0';
    t->n_refused = t->n_opened = 0;
    return t;
}

static void transfer_put(struct outbound *o, struct transfer *t)
{
    curl_slist_free_all(t->headers);
    t->headers = NULL;
    t->req = NULL;
    t->host = NULL;
    t->next_free = o->free_transfers;
    o->free_transfers = t;
}

/* Start req on host; on failure it ends at once. */
static void transfer_start(struct outbound *o, struct host *host, struct outbound_request *req)
{
    struct transfer *t = transfer_take(o);
    if (!t) {
        complete_unsent(req, -DRV_ENOMEM, "out of memory");
        return;
    }
    t->req = req;
    t->host = host;
    t->headers = build_headers(req);
    if (!t->headers) {
        transfer_put(o, t);
        complete_unsent(req, -DRV_ENOMEM, "out of memory");
        return;
    }
    if (!set_options(t, req)) {
        transfer_put(o, t);
        complete_unsent(req, -DRV_EINTERNAL, "cannot set the request's curl options");
        return;
    }
    t->started_ms = time_mono_ms();
    CURLMcode mc = curl_multi_add_handle(o->multi, t->easy);
    if (mc != CURLM_OK) {
        transfer_put(o, t);
        complete_unsent(req, -DRV_EINTERNAL, curl_multi_strerror(mc));
        return;
    }
    host->in_flight++;
    o->in_flight++;
}

/* Take t out of the multi handle and its slots; its request is returned to finish. */
static struct outbound_request *transfer_end(struct outbound *o, struct transfer *t)
{
    struct outbound_request *req = t->req;
    struct host *host = t->host;

    (void)curl_multi_remove_handle(o->multi, t->easy); /* fails only for a handle not added */
    host->in_flight--;
    o->in_flight--;
    transfer_put(o, t);
    host_mark_ready(o, host);
    host_release_if_idle(o, host);
    return req;
}

static void transfer_done(struct outbound *o, struct transfer *t, CURLcode code)
{
    struct outbound_result res;
    result_fill(t, code, &res);
    struct outbound_request *req = transfer_end(o, t);
    req->done(req, &res);
}

/* Start waiting requests while slots are free, one host after another. */
static void dispatch(struct outbound *o)
{
    while (o->in_flight < o->cfg.max_connections && o->ready_head) {
        struct host *host = ready_pop(o);
        transfer_start(o, host, host_pop(host));
        host_mark_ready(o, host);
        host_release_if_idle(o, host);
    }
}

/* Sort new requests into their hosts' queues; with no memory for a host, end it. */
static void enqueue(struct outbound *o, struct outbound_request *list)
{
    while (list) {
        struct outbound_request *req = list;
        list = req->priv_next;
        struct host *host = host_get(o, req->priv_host);
        if (!host) {
            complete_unsent(req, -DRV_ENOMEM, "out of memory");
            continue;
        }
        host_push(host, req);
        host_mark_ready(o, host);
    }
}

static void collect_done(struct outbound *o)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(o->multi, &left))) {
        char *priv = NULL;
        if (msg->msg != CURLMSG_DONE)
            continue;
        if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv) != CURLE_OK || !priv)
            continue; /* every handle added carries its transfer */
        transfer_done(o, (struct transfer *)(void *)priv, msg->data.result);
    }
}

/* ---- stopping ---- */

static void fail_list(struct outbound_request *list, const char *why)
{
    while (list) {
        struct outbound_request *req = list;
        list = req->priv_next;
        complete_unsent(req, -DRV_ESHUTTING_DOWN, why);
    }
}

/* End every request still queued: the engine is stopping. */
static void fail_queued(struct outbound *o)
{
    while (o->ready_head)
        ready_pop(o);
    for (size_t i = 0; i < HOST_BUCKETS; i++) {
        struct host *host = o->hosts[i];
        while (host) {
            struct host *next = host->hash_next;
            struct outbound_request *list = host->head;
            host->head = host->tail = NULL;
            fail_list(list, "the engine stopped before sending the request");
            host_release_if_idle(o, host);
            host = next;
        }
    }
}

/* End every transfer in flight: the stop timeout has passed. */
static void abort_in_flight(struct outbound *o)
{
    for (int i = 0; i < o->cfg.max_connections; i++) {
        struct transfer *t = &o->transfers[i];
        if (!t->req)
            continue;
        struct outbound_result res;
        result_fill(t, CURLE_ABORTED_BY_CALLBACK, &res);
        res.rc = -DRV_ESHUTTING_DOWN;
        snprintf(res.error, sizeof(res.error), "the engine stopped before the response arrived");
        struct outbound_request *req = transfer_end(o, t);
        req->done(req, &res);
    }
}

/* ---- the thread ---- */

/* Take what senders queued; true once outbound_free() has begun. */
static bool take_incoming(struct outbound *o, struct outbound_request **list)
{
    pthread_mutex_lock(&o->lock);
    *list = o->in_head;
    o->in_head = o->in_tail = NULL;
    bool stopping = o->stopping;
    pthread_mutex_unlock(&o->lock);
    return stopping;
}

/*
 * The thread's last act, on a stop or a broken multi handle: refuse later
 * sends and end every request it still has, so no done() is lost.
 */
static void engine_drain(struct outbound *o)
{
    struct outbound_request *list;
    pthread_mutex_lock(&o->lock);
    o->stopping = true;
    pthread_mutex_unlock(&o->lock);
    abort_in_flight(o);
    fail_queued(o);
    (void)take_incoming(o, &list);
    fail_list(list, "the engine stopped before sending the request");
}

/* ---- curl's sockets and timer ---- */

/* Watch fd for what curl asks (CURLMOPT_SOCKETFUNCTION); on the thread. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *arg, void *socketp)
{
    struct outbound *o = arg;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        /* curl may have closed it already, which took it out of the set. */
        (void)epoll_ctl(o->epfd, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    struct epoll_event ev = {
        .events = (what & CURL_POLL_IN ? EPOLLIN : 0u) | (what & CURL_POLL_OUT ? EPOLLOUT : 0u),
        .data.fd = fd,
    };
    int op = socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(o->epfd, op, fd, &ev) < 0 &&
        epoll_ctl(o->epfd, op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) < 0) {
        /* The transfer then ends by its own timeout, which curl's timer keeps. */
        log_printf(LOG_ERROR, "outbound: cannot watch a socket: %s", strerror(errno));
        return 0;
    }
    if (!socketp)
        (void)curl_multi_assign(o->multi, fd, o); /* any non-NULL mark: "in the set" */
    return 0;
}

/* curl's next timeout (CURLMOPT_TIMERFUNCTION): -1 cancels it. */
static int on_timer(CURLM *multi, long timeout_ms, void *arg)
{
    struct outbound *o = arg;
    (void)multi;
    o->timer_at_ms = timeout_ms < 0 ? -1 : time_mono_ms() + timeout_ms;
    return 0;
}

/* How long the thread may sleep: until curl's timeout, or the stop deadline. */
static int wait_ms(const struct outbound *o, int64_t deadline_ms)
{
    int64_t now = time_mono_ms();
    int64_t until = o->timer_at_ms >= 0 ? o->timer_at_ms : now + IDLE_WAIT_MS;
    if (deadline_ms && deadline_ms < until)
        until = deadline_ms;
    return until <= now ? 0 : until - now > INT_MAX ? INT_MAX : (int)(until - now);
}

/* Hand curl what epoll saw, then its timeout if due. */
static CURLMcode run_curl(struct outbound *o, const struct epoll_event *evs, int n)
{
    CURLMcode mc = CURLM_OK;
    int running;
    for (int i = 0; i < n && mc == CURLM_OK; i++) {
        if (evs[i].data.fd == o->wakefd) {
            eventfd_t count;
            (void)eventfd_read(o->wakefd, &count);
            continue;
        }
        int mask = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                   (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                   (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
        mc = curl_multi_socket_action(o->multi, evs[i].data.fd, mask, &running);
    }
    if (mc == CURLM_OK && o->timer_at_ms >= 0 && time_mono_ms() >= o->timer_at_ms) {
        o->timer_at_ms = -1; /* curl sets the next one as it runs */
        mc = curl_multi_socket_action(o->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    return mc;
}

static void *engine_main(void *arg)
{
    struct outbound *o = arg;
    thread_nice(o->cfg.nice);
    bool stopping = false;
    int64_t stop_deadline = 0;

    for (;;) {
        struct outbound_request *list;
        if (take_incoming(o, &list) && !stopping) {
            stopping = true;
            stop_deadline = time_mono_ms() + o->cfg.stop_timeout_ms;
            fail_queued(o);
        }
        if (stopping) {
            fail_list(list, "the engine stopped before sending the request");
            if (o->in_flight == 0 || time_mono_ms() >= stop_deadline)
                break;
        } else {
            enqueue(o, list);
            dispatch(o); /* a handle added sets curl's timer to 0: it starts below */
        }

        struct epoll_event evs[EVENTS_MAX];
        int n = epoll_wait(o->epfd, evs, EVENTS_MAX, wait_ms(o, stop_deadline));
        if (n < 0 && errno != EINTR) {
            log_printf(LOG_ERROR, "outbound: epoll_wait: %s", strerror(errno));
            break;
        }
        CURLMcode mc = run_curl(o, evs, n < 0 ? 0 : n);
        if (mc != CURLM_OK) {
            log_printf(LOG_ERROR, "outbound: curl_multi_socket_action: %s",
                       curl_multi_strerror(mc));
            break;
        }
        collect_done(o);
        if (!stopping)
            dispatch(o);
    }
    engine_drain(o);
    return NULL;
}

/* ---- the public entry points ---- */

static void engine_release(struct outbound *o)
{
    for (int i = 0; o->transfers && i < o->cfg.max_connections; i++) {
        if (o->transfers[i].easy)
            curl_easy_cleanup(o->transfers[i].easy);
        free(o->transfers[i].excerpt);
    }
    free(o->transfers);
    if (o->multi)
        curl_multi_cleanup(o->multi); /* may still name sockets to on_socket() */
    if (o->curl_ready)
        curl_global_cleanup();
    if (o->wakefd >= 0)
        close(o->wakefd);
    if (o->epfd >= 0)
        close(o->epfd);
    pthread_mutex_destroy(&o->lock);
    free(o);
}

static int multi_setup(struct outbound *o)
{
    bool bad = false;
    o->epfd = epoll_create1(EPOLL_CLOEXEC);
    o->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event wake = {.events = EPOLLIN, .data.fd = o->wakefd};
    if (o->epfd < 0 || o->wakefd < 0 || epoll_ctl(o->epfd, EPOLL_CTL_ADD, o->wakefd, &wake) < 0) {
        log_printf(LOG_ERROR, "outbound: cannot set up epoll: %s", strerror(errno));
        return -DRV_EINTERNAL;
    }
    o->timer_at_ms = -1;
    o->multi = curl_multi_init();
    if (!o->multi)
        return -DRV_ENOMEM;
    bad |= curl_multi_setopt(o->multi, CURLMOPT_SOCKETFUNCTION, on_socket) != CURLM_OK;
    bad |= curl_multi_setopt(o->multi, CURLMOPT_SOCKETDATA, o) != CURLM_OK;
    bad |= curl_multi_setopt(o->multi, CURLMOPT_TIMERFUNCTION, on_timer) != CURLM_OK;
    bad |= curl_multi_setopt(o->multi, CURLMOPT_TIMERDATA, o) != CURLM_OK;
    bad |= curl_multi_setopt(o->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                             (long)o->cfg.max_connections) != CURLM_OK;
    bad |=
        curl_multi_setopt(o->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)host_limit(o)) != CURLM_OK;
    bad |=
        curl_multi_setopt(o->multi, CURLMOPT_MAXCONNECTS, (long)o->cfg.max_connections) != CURLM_OK;
    return bad ? -DRV_EINTERNAL : 0;
}

int outbound_new(const struct outbound_config *oc, struct outbound **out)
{
    int rc;
    if (!config_ok(oc))
        return -DRV_ECONFIG;
    struct outbound *o = calloc(1, sizeof(*o));
    if (!o)
        return -DRV_ENOMEM;
    o->cfg = *oc;
    o->epfd = o->wakefd = -1;
    if (pthread_mutex_init(&o->lock, NULL) != 0) {
        free(o);
        return -DRV_EINTERNAL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        rc = -DRV_EINTERNAL;
        goto fail;
    }
    o->curl_ready = true;
    o->transfers = calloc((size_t)oc->max_connections, sizeof(*o->transfers));
    if (!o->transfers) {
        rc = -DRV_ENOMEM;
        goto fail;
    }
    for (int i = oc->max_connections - 1; i >= 0; i--) {
        o->transfers[i].o = o;
        o->transfers[i].next_free = o->free_transfers;
        o->free_transfers = &o->transfers[i];
    }
    rc = multi_setup(o);
    if (rc)
        goto fail;
    if (pthread_create(&o->thread, NULL, engine_main, o) != 0) {
        rc = -DRV_EINTERNAL;
        goto fail;
    }
    pthread_setname_np(o->thread, oc->thread_name ? oc->thread_name : "drover-outbound");
    *out = o;
    return 0;
fail:
    engine_release(o);
    return rc;
}

int outbound_send(struct outbound *o, struct outbound_request *req)
{
    struct errmsg err;
    int rc = check_request(req, req->priv_host, &err);
    if (rc)
        return rc;
    req->priv_next = NULL;

    pthread_mutex_lock(&o->lock);
    if (o->stopping) {
        pthread_mutex_unlock(&o->lock);
        return -DRV_ESHUTTING_DOWN;
    }
    bool was_empty = o->in_head == NULL;
    if (o->in_tail)
        o->in_tail->priv_next = req;
    else
        o->in_head = req;
    o->in_tail = req;
    /*
     * An empty list means the thread took everything before: it may be
     * asleep. Woken under the lock, so outbound_free() cannot close the
     * eventfd in between. A write fails only when the count is at its
     * maximum, which wakes the thread anyway.
     */
    if (was_empty)
        (void)eventfd_write(o->wakefd, 1);
    pthread_mutex_unlock(&o->lock);
    return 0;
}

void outbound_free(struct outbound *o)
{
    if (!o)
        return;
    pthread_mutex_lock(&o->lock);
    o->stopping = true;
    pthread_mutex_unlock(&o->lock);
    (void)eventfd_write(o->wakefd, 1); /* see outbound_send() */
    pthread_join(o->thread, NULL);
    engine_release(o);
}
