/*
 * outbound.h - the outbound HTTP engine: dispatches to external runners and
 * webhook deliveries leave drover through here.
 *
 * One thread runs a libcurl multi handle. outbound_send() may be called from
 * any thread: it queues the request and wakes the engine
 * (curl_multi_wakeup); the engine starts it when a connection slot is free
 * and calls the request's done() on the engine thread when it ends, however
 * it ends. Nothing here blocks the caller on the network.
 *
 * What every request gets, whatever the caller asks:
 * - the SSRF guard (net_guard.h) on each address actually connected to,
 *   after DNS, so a name that resolves to a private address is refused;
 * - http and https only; redirects are not followed (a 3xx is a result);
 *   proxies from the environment are ignored;
 * - a connect timeout and a total timeout per attempt;
 * - bounded concurrency: at most max_connections transfers at once, at most
 *   max_host_connections to one host and port; the rest wait in the
 *   engine's queue, one queue per host served in turn, so a slow endpoint
 *   holds only its own slots. Connections are kept and reused.
 *
 * No retries, no signing, no policy: a result says what happened to one
 * attempt, and the caller decides (success is 2xx, honour Retry-After
 * within its cap, back off, give up). Header values may hold secrets; the
 * engine never logs a request.
 *
 * Usage:
 *
 *     struct outbound_config oc;
 *     outbound_config_from(&oc, cfg, &err);     // or outbound_config_init + fields
 *     outbound_new(&oc, &engine);
 *     req->url = ...; req->done = on_done; req->data = me;
 *     if (outbound_send(engine, req) < 0) ...   // done() will not run
 *     ...
 *     outbound_free(engine);                    // every pending done() has run
 */
#ifndef DROVER_OUTBOUND_H
#define DROVER_OUTBOUND_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "net_guard.h"

/* Defaults of struct outbound_config. */
#define OUTBOUND_EXCERPT_DEFAULT 1024 /* bytes of response body kept */
#define OUTBOUND_STOP_DEFAULT_MS 2000 /* outbound_free()'s grace for transfers in flight */

#define OUTBOUND_EXCERPT_MAX     65536    /* most excerpt_max may be */
#define OUTBOUND_URL_MAX         8192     /* longest URL accepted */
#define OUTBOUND_HEADERS_MAX     64       /* most headers on one request */
#define OUTBOUND_HEADER_MAX      8192     /* longest "Name: value" accepted */
#define OUTBOUND_HOST_KEY_MAX    300      /* "host:port" of a URL, with its NUL */
#define OUTBOUND_ERROR_MAX       256      /* result.error, with its NUL */
#define OUTBOUND_RETRY_AFTER_MAX 31536000 /* a year: larger Retry-After values are cut to it */
#define OUTBOUND_IP_MAX          46       /* result.primary_ip, with its NUL (INET6_ADDRSTRLEN) */

struct outbound_config {
    struct net_guard guard;   /* addresses allowed past the SSRF guard; copied */
    int max_connections;      /* transfers in flight, all hosts; >= 1 */
    int max_host_connections; /* transfers in flight to one host:port; >= 1 (at most
                                 max_connections take effect) */
    int connect_timeout_ms;   /* for requests that leave theirs 0; >= 1 */
    int timeout_ms;           /* whole attempt, for requests that leave theirs 0; >= 1 */
    size_t excerpt_max;       /* response body bytes kept for the result, 0..OUTBOUND_EXCERPT_MAX */
    int stop_timeout_ms;      /* how long outbound_free() lets transfers in flight finish; >= 0 */
    int nice;                 /* the engine thread's nice value (util.h thread_nice()); 0: as is */
    const char *thread_name;  /* for top -H and perf, at most 15 bytes; NULL: "drover-outbound" */
};

/* The defaults: an empty allow-list, 64 / 8 connections, 5 s / 15 s, 1 KiB, 2 s. */
void outbound_config_init(struct outbound_config *oc);

/*
 * The defaults, then drover's [outbound] settings: allow_target entries,
 * max_connections, max_host_connections, connect_timeout_ms, timeout_ms.
 * -DRV_ECONFIG with err->text when an allow_target does not parse (a
 * validated config always does).
 */
int outbound_config_from(struct outbound_config *oc, const struct config *cfg, struct errmsg *err);

/*
 * What happened to one request, given to its done(). Only valid during the
 * call: copy what you keep.
 */
struct outbound_result {
    /*
     * 0: a whole response arrived, whatever its status.
     * -DRV_EFORBIDDEN: the SSRF guard refused every address of the host.
     * -DRV_EUNAVAILABLE: no whole response: DNS, connect, TLS, reset, a
     *   timeout (error says which).
     * -DRV_ESHUTTING_DOWN: outbound_free() ended it, sent or not.
     * -DRV_ENOMEM, -DRV_EINTERNAL: the engine could not start it.
     */
    int rc;
    /* The HTTP status when rc == 0, else 0. */
    int status;
    /* "" when rc == 0; else curl's error text or the guard's reason
     * ("127.0.0.1 is a loopback address; allow it with --allow-target"). */
    char error[OUTBOUND_ERROR_MAX];
    /* From the transfer's start to its end; time spent queued is not counted. */
    int64_t latency_ms;
    /* The first excerpt_max bytes of the body, NUL-terminated (the body may
     * hold NULs itself: use excerpt_len); never NULL. */
    const char *excerpt;
    size_t excerpt_len;
    /* Retry-After in seconds from now, from delta-seconds or an HTTP-date (a
     * date already past gives 0), cut to OUTBOUND_RETRY_AFTER_MAX; -1 when
     * the header is absent or unreadable. */
    int retry_after_s;
    /* The address connected to; "" when there was none. */
    char primary_ip[OUTBOUND_IP_MAX];
};

struct outbound_request;

/* Runs on the engine thread, once per request sent; the request is the caller's again. */
typedef void (*outbound_done_fn)(struct outbound_request *req, const struct outbound_result *res);

/*
 * One HTTP request. The caller allocates it (often inside a struct of its
 * own; see container_of in util.h) and fills the fields above the line.
 * From outbound_send() until done() runs, the engine owns the request: the
 * caller must not change or free it, nor anything it points to (url,
 * headers, body). Then it is the caller's again, to free or send anew.
 */
struct outbound_request {
    /* GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS; NULL means GET
     * without a body, POST with one. */
    const char *method;
    /* http:// or https://, at most OUTBOUND_URL_MAX bytes. */
    const char *url;
    /* n_headers (at most OUTBOUND_HEADERS_MAX) lines "Name: value", without
     * CR or LF; "Name:" removes a header curl would send. Set Content-Type
     * yourself: curl's default for a body is a form type. */
    const char *const *headers;
    size_t n_headers;
    /* Sent as is; may be NULL when body_len is 0. */
    const void *body;
    size_t body_len;
    /* Per attempt; 0 takes the engine's. */
    int connect_timeout_ms;
    int timeout_ms;
    /* Required. */
    outbound_done_fn done;
    /* The caller's. */
    void *data;

    /* ---- the engine's; leave alone ---- */
    struct outbound_request *priv_next;
    char priv_host[OUTBOUND_HOST_KEY_MAX]; /* "host:port", the per-host queue's key */
};

struct outbound;

/*
 * Start the engine thread. Returns 0 and *out, -DRV_ECONFIG when a number
 * in oc is out of range, -DRV_ENOMEM or -DRV_EINTERNAL (libcurl or thread).
 */
int outbound_new(const struct outbound_config *oc, struct outbound **out);

/*
 * Check a request without sending it: the method, the URL (http or https,
 * a host, at most OUTBOUND_URL_MAX bytes), the headers (count, length,
 * "Name: value" with a token name, no CR or LF), the timeouts (>= 0), the
 * body and done. 0, or -DRV_EBAD_FIELD with err->text, which never quotes a
 * header value.
 */
int outbound_request_check(const struct outbound_request *req, struct errmsg *err);

/*
 * Queue req; any thread, including a done() callback. Returns 0 and done()
 * runs later, exactly once. On failure done() is never called and the
 * request is the caller's again: -DRV_EBAD_FIELD when
 * outbound_request_check() refuses it, -DRV_ESHUTTING_DOWN once
 * outbound_free() has begun.
 */
int outbound_send(struct outbound *o, struct outbound_request *req);

/*
 * Stop and free. Requests not yet started end at once with
 * -DRV_ESHUTTING_DOWN; transfers in flight get stop_timeout_ms to finish,
 * then are aborted with -DRV_ESHUTTING_DOWN. Every done() has run when this
 * returns. Not from a done() callback (it waits for the engine thread).
 * Safe with NULL.
 */
void outbound_free(struct outbound *o);

#endif
