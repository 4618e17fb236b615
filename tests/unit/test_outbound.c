/*
 * test_outbound.c - unit tests for src/outbound.c against a tiny HTTP/1.1
 * responder that runs in the test (plain sockets on 127.0.0.1, one thread
 * per connection, keep-alive).
 *
 * The responder answers every request with the response the test scripted
 * (or holds it until the responder stops, for timeouts and shutdown), after
 * an optional delay that plays a slow server. It counts connections
 * accepted, connections open at once (and the most ever) and requests. The
 * tests wait on condition variables with a deadline, never on a sleep.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "outbound.h"
#include "timeutil.h"
#include "util.h"

/* How long a test waits for an event before it fails. */
#define WAIT_MS 5000

#define MAX_CONNS 256

/* ---- waiting with a deadline ---- */

static struct timespec deadline_in(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

/* ---- the responder ---- */

struct responder {
    int listen_fd;
    int port;
    pthread_t acceptor;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stopping;
    /* the script */
    char response[8192]; /* sent as is for every request */
    size_t response_len;
    bool hang;    /* hold every request until the responder stops */
    int delay_ms; /* before answering: a slow server */
    /* what it saw */
    int accepted, open, max_open, requests;
    char last_request[4096];
    /* the connections */
    int fds[MAX_CONNS];
    pthread_t threads[MAX_CONNS];
    int n_conns;
};

struct conn {
    struct responder *r;
    int fd;
};

/* How the responder behaves from its next request on. */
static void responder_behave(struct responder *r, bool hang, int delay_ms)
{
    pthread_mutex_lock(&r->lock);
    r->hang = hang;
    r->delay_ms = delay_ms;
    pthread_mutex_unlock(&r->lock);
}

static void responder_script(struct responder *r, const char *response)
{
    pthread_mutex_lock(&r->lock);
    r->response_len = strlen(response);
    assert_true(r->response_len < sizeof(r->response));
    memcpy(r->response, response, r->response_len);
    pthread_mutex_unlock(&r->lock);
}

/* A response with a body and Content-Length; extra holds header lines ending in CRLF. */
static void responder_answer(struct responder *r, int status, const char *extra, const char *body)
{
    char text[8192];
    int n = snprintf(text, sizeof(text), "HTTP/1.1 %d Scripted\r\n%sContent-Length: %zu\r\n\r\n%s",
                     status, extra, strlen(body), body);
    assert_true(n > 0 && (size_t)n < sizeof(text));
    responder_script(r, text);
}

/* Read one request (head and Content-Length body) into buf; false at EOF or error. */
static bool read_request(int fd, char *buf, size_t cap, size_t *len)
{
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        if (have + 1 >= cap)
            return false;
        ssize_t n = recv(fd, buf + have, cap - 1 - have, 0);
        if (n <= 0)
            return false;
        have += (size_t)n;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    size_t head = (size_t)(end + 4 - buf);
    size_t body = 0;
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    if (cl && cl < end)
        body = (size_t)strtoul(cl + 17, NULL, 10);
    while (have < head + body) {
        if (have + 1 >= cap)
            return false;
        ssize_t n = recv(fd, buf + have, cap - 1 - have, 0);
        if (n <= 0)
            return false;
        have += (size_t)n;
    }
    buf[have] = '\0';
    *len = have;
    return true;
}

static bool send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n <= 0)
            return false;
        data += n;
        len -= (size_t)n;
    }
    return true;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct responder *r = c->r;
    static __thread char buf[1 << 16];
    char response[sizeof(r->response)];
    size_t len;

    while (read_request(c->fd, buf, sizeof(buf), &len)) {
        pthread_mutex_lock(&r->lock);
        r->requests++;
        size_t keep = len < sizeof(r->last_request) ? len : sizeof(r->last_request) - 1;
        memcpy(r->last_request, buf, keep);
        r->last_request[keep] = '\0';
        pthread_cond_broadcast(&r->cond);
        while (r->hang && !r->stopping)
            pthread_cond_wait(&r->cond, &r->lock);
        bool stopping = r->stopping;
        int delay = r->delay_ms;
        size_t response_len = r->response_len;
        memcpy(response, r->response, response_len);
        pthread_mutex_unlock(&r->lock);
        if (stopping)
            break;
        if (delay > 0)
            sleep_ms(delay); /* a slow server, not synchronisation */
        if (!send_all(c->fd, response, response_len))
            break;
    }
    pthread_mutex_lock(&r->lock);
    r->open--;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    free(c);
    return NULL;
}

static void *acceptor_main(void *arg)
{
    struct responder *r = arg;
    for (;;) {
        int fd = accept4(r->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL; /* shutdown() of the listening socket: stopping */
        }
        struct conn *c = malloc(sizeof(*c));
        pthread_mutex_lock(&r->lock);
        if (!c || r->stopping || r->n_conns == MAX_CONNS) {
            pthread_mutex_unlock(&r->lock);
            free(c);
            close(fd);
            continue;
        }
        c->r = r;
        c->fd = fd;
        r->fds[r->n_conns] = fd;
        r->accepted++;
        r->open++;
        if (r->open > r->max_open)
            r->max_open = r->open;
        if (pthread_create(&r->threads[r->n_conns], NULL, conn_main, c) != 0) {
            r->accepted--;
            r->open--;
            pthread_mutex_unlock(&r->lock);
            free(c);
            close(fd);
            continue;
        }
        r->n_conns++;
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
    }
}

static int listen_loopback(int *port, bool do_listen)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    if (do_listen)
        assert_int_equal(listen(fd, 512), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    *port = ntohs(addr.sin_port);
    return fd;
}

static struct responder *responder_start(void)
{
    struct responder *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    r->listen_fd = listen_loopback(&r->port, true);
    responder_answer(r, 200, "", "ok");
    assert_int_equal(pthread_create(&r->acceptor, NULL, acceptor_main, r), 0);
    return r;
}

static void responder_stop(struct responder *r)
{
    pthread_mutex_lock(&r->lock);
    r->stopping = true;
    pthread_cond_broadcast(&r->cond);
    for (int i = 0; i < r->n_conns; i++)
        shutdown(r->fds[i], SHUT_RDWR);
    pthread_mutex_unlock(&r->lock);
    shutdown(r->listen_fd, SHUT_RDWR);
    pthread_join(r->acceptor, NULL);
    for (int i = 0; i < r->n_conns; i++) {
        pthread_join(r->threads[i], NULL);
        close(r->fds[i]);
    }
    close(r->listen_fd);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* Wait until the responder has seen at least n requests, or fail. */
static void responder_wait_requests(struct responder *r, int n)
{
    struct timespec until = deadline_in(WAIT_MS);
    pthread_mutex_lock(&r->lock);
    while (r->requests < n)
        if (pthread_cond_timedwait(&r->cond, &r->lock, &until) == ETIMEDOUT)
            break;
    int got = r->requests;
    pthread_mutex_unlock(&r->lock);
    if (got < n)
        fail_msg("the responder saw %d requests, want %d", got, n);
}

static int responder_count(struct responder *r, const int *field)
{
    pthread_mutex_lock(&r->lock);
    int v = *field;
    pthread_mutex_unlock(&r->lock);
    return v;
}

/* ---- requests and their results ---- */

/* One request and what its done() saw. */
struct call {
    struct outbound_request req;
    struct tally *tally;
    bool done;
    int rc, status, retry_after_s;
    int64_t latency_ms;
    char error[OUTBOUND_ERROR_MAX];
    char excerpt[OUTBOUND_EXCERPT_MAX + 1];
    size_t excerpt_len;
    char primary_ip[OUTBOUND_IP_MAX];
    char url[128];
    int passes; /* test_send_from_done */
};

/* Completions counted, for waiting. */
struct tally {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done, twice;
};

static void tally_init(struct tally *t)
{
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->cond, NULL);
    t->done = t->twice = 0;
}

static void tally_destroy(struct tally *t)
{
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
}

static void on_done(struct outbound_request *req, const struct outbound_result *res)
{
    struct call *c = container_of(req, struct call, req);
    struct tally *t = c->tally;

    pthread_mutex_lock(&t->lock);
    if (c->done)
        t->twice++;
    c->done = true;
    c->rc = res->rc;
    c->status = res->status;
    c->retry_after_s = res->retry_after_s;
    c->latency_ms = res->latency_ms;
    snprintf(c->error, sizeof(c->error), "%s", res->error);
    memcpy(c->excerpt, res->excerpt, res->excerpt_len + 1);
    c->excerpt_len = res->excerpt_len;
    snprintf(c->primary_ip, sizeof(c->primary_ip), "%s", res->primary_ip);
    t->done++;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->lock);
}

static void call_init(struct call *c, struct tally *t, const char *host, int port)
{
    memset(c, 0, sizeof(*c));
    c->tally = t;
    snprintf(c->url, sizeof(c->url), "http://%s:%d/hook", host, port);
    c->req.url = c->url;
    c->req.done = on_done;
}

static void tally_wait(struct tally *t, int n)
{
    struct timespec until = deadline_in(WAIT_MS);
    pthread_mutex_lock(&t->lock);
    while (t->done < n)
        if (pthread_cond_timedwait(&t->cond, &t->lock, &until) == ETIMEDOUT)
            break;
    int got = t->done, twice = t->twice;
    pthread_mutex_unlock(&t->lock);
    if (got < n)
        fail_msg("%d of %d requests completed", got, n);
    assert_int_equal(twice, 0);
}

/* An engine that may reach 127.0.0.0/8, with short timeouts. */
static struct outbound *engine_loopback(int max_host, int stop_ms)
{
    struct outbound_config oc;
    struct errmsg err;
    struct outbound *o = NULL;
    outbound_config_init(&oc);
    assert_int_equal(net_guard_allow(&oc.guard, "127.0.0.0/8", &err), 0);
    oc.max_host_connections = max_host;
    oc.connect_timeout_ms = 2000;
    oc.timeout_ms = 4000;
    oc.stop_timeout_ms = stop_ms;
    assert_int_equal(outbound_new(&oc, &o), 0);
    return o;
}

/* Send one request and wait for its result. */
static void send_one(struct outbound *o, struct call *c)
{
    struct tally *t = c->tally;
    int before;
    pthread_mutex_lock(&t->lock);
    before = t->done;
    pthread_mutex_unlock(&t->lock);
    assert_int_equal(outbound_send(o, &c->req), 0);
    tally_wait(t, before + 1);
    assert_true(c->done);
}

/* ---- tests ---- */

static void test_ok_with_excerpt(void **state)
{
    struct responder *r = responder_start();
    struct outbound *o = engine_loopback(8, 1000);
    struct tally t;
    struct call c;
    char big[3001];
    static const char *const headers[] = {"Content-Type: application/json",
                                          "Webhook-Signature: v1,c2VjcmV0"};
    (void)state;

    tally_init(&t);
    memset(big, 'a', sizeof(big) - 1);
    for (size_t i = 0; i < sizeof(big) - 1; i++)
        big[i] = (char)('a' + i % 26);
    big[sizeof(big) - 1] = '\0';
    responder_answer(r, 200, "", big);

    call_init(&c, &t, "127.0.0.1", r->port);
    c.req.headers = headers;
    c.req.n_headers = ARRAY_SIZE(headers);
    c.req.body = "{\"id\":1}";
    c.req.body_len = 8;
    send_one(o, &c);
    assert_int_equal(c.rc, 0);
    assert_int_equal(c.status, 200);
    assert_string_equal(c.error, "");
    assert_int_equal(c.excerpt_len, OUTBOUND_EXCERPT_DEFAULT);
    assert_memory_equal(c.excerpt, big, OUTBOUND_EXCERPT_DEFAULT);
    assert_int_equal(c.excerpt[OUTBOUND_EXCERPT_DEFAULT], '\0');
    assert_int_equal(c.retry_after_s, -1);
    assert_string_equal(c.primary_ip, "127.0.0.1");
    assert_true(c.latency_ms >= 0 && c.latency_ms < WAIT_MS);

    /* What arrived: a POST with the body as given, the headers, no Expect. */
    pthread_mutex_lock(&r->lock);
    assert_non_null(strstr(r->last_request, "POST /hook HTTP/1.1\r\n"));
    assert_non_null(strstr(r->last_request, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strstr(r->last_request, "\r\nWebhook-Signature: v1,c2VjcmV0\r\n"));
    assert_non_null(strstr(r->last_request, "\r\nContent-Length: 8\r\n"));
    assert_null(strcasestr(r->last_request, "\r\nExpect:"));
    assert_non_null(strstr(r->last_request, "\r\n\r\n{\"id\":1}"));
    pthread_mutex_unlock(&r->lock);

    /* A short body is kept whole; a PUT goes out as a PUT; the connection is reused. */
    responder_answer(r, 204, "", "");
    call_init(&c, &t, "127.0.0.1", r->port);
    c.req.method = "PUT";
    c.req.body = "x";
    c.req.body_len = 1;
    send_one(o, &c);
    assert_int_equal(c.status, 204);
    assert_int_equal(c.excerpt_len, 0);
    assert_string_equal(c.excerpt, "");
    pthread_mutex_lock(&r->lock);
    assert_non_null(strstr(r->last_request, "PUT /hook HTTP/1.1\r\n"));
    pthread_mutex_unlock(&r->lock);

    responder_answer(r, 200, "", "hello");
    call_init(&c, &t, "127.0.0.1", r->port);
    send_one(o, &c);
    assert_int_equal(c.status, 200);
    assert_int_equal(c.excerpt_len, 5);
    assert_string_equal(c.excerpt, "hello");
    pthread_mutex_lock(&r->lock);
    assert_non_null(strstr(r->last_request, "GET /hook HTTP/1.1\r\n"));
    pthread_mutex_unlock(&r->lock);
    call_init(&c, &t, "127.0.0.1", r->port);
    c.req.method = "DELETE";
    send_one(o, &c);
    assert_int_equal(c.status, 200);
    pthread_mutex_lock(&r->lock);
    assert_non_null(strstr(r->last_request, "DELETE /hook HTTP/1.1\r\n"));
    assert_null(strcasestr(r->last_request, "\r\nContent-Length:"));
    pthread_mutex_unlock(&r->lock);
    assert_int_equal(responder_count(r, &r->accepted), 1);

    outbound_free(o);
    responder_stop(r);
    tally_destroy(&t);
}

static void test_excerpt_configurable(void **state)
{
    struct responder *r = responder_start();
    struct outbound_config oc;
    struct outbound *o;
    struct errmsg err;
    struct tally t;
    struct call c;
    (void)state;

    tally_init(&t);
    outbound_config_init(&oc);
    assert_int_equal(net_guard_allow(&oc.guard, "127.0.0.1", &err), 0);
    oc.excerpt_max = 4;
    assert_int_equal(outbound_new(&oc, &o), 0);
    responder_answer(r, 200, "", "0123456789");
    call_init(&c, &t, "127.0.0.1", r->port);
    send_one(o, &c);
    assert_int_equal(c.status, 200);
    assert_int_equal(c.excerpt_len, 4);
    assert_string_equal(c.excerpt, "0123");
    outbound_free(o);

    oc.excerpt_max = 0;
    assert_int_equal(outbound_new(&oc, &o), 0);
    call_init(&c, &t, "127.0.0.1", r->port);
    send_one(o, &c);
    assert_int_equal(c.status, 200);
    assert_int_equal(c.excerpt_len, 0);
    assert_string_equal(c.excerpt, "");
    outbound_free(o);

    responder_stop(r);
    tally_destroy(&t);
}

static void test_server_error(void **state)
{
    struct responder *r = responder_start();
    struct outbound *o = engine_loopback(8, 1000);
    struct tally t;
    struct call c;
    (void)state;

    tally_init(&t);
    responder_answer(r, 500, "", "{\"error\":\"boom\"}");
    call_init(&c, &t, "127.0.0.1", r->port);
    send_one(o, &c);
    assert_int_equal(c.rc, 0);
    assert_int_equal(c.status, 500);
    assert_string_equal(c.error, "");
    assert_string_equal(c.excerpt, "{\"error\":\"boom\"}");
    assert_int_equal(c.retry_after_s, -1);

    outbound_free(o);
    responder_stop(r);
    tally_destroy(&t);
}

static void test_retry_after(void **state)
{
    struct responder *r = responder_start();
    struct outbound *o = engine_loopback(8, 1000);
    struct tally t;
    struct call c;
    char extra[128], date[64];
    (void)state;

    tally_init(&t);

    /* delta-seconds */
    responder_answer(r, 429, "Retry-After: 120\r\n", "slow down");
    call_init(&c, &t, "127.0.0.1", r->port);
    send_one(o, &c);
    assert_int_equal(c.status, 429);
    assert_int_equal(c.retry_after_s, 120);

    /* an HTTP-date 90 s from now */
    time_t when = time(NULL) + 90;
    struct tm tm;
    gmtime_r(&when, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    snprintf(extra, sizeof(extra), "Retry-After: %s\r\n", date);
    responder_answer(r, 503, extra, "");
    call_init(&c, &t, "127.0.0.1", r->port);
    send_one(o, &c);
    assert_int_equal(c.status, 503);
    if (c.retry_after_s < 88 || c.retry_after_s > 90)
        fail_msg("Retry-After '%s' gave %d s, want about 90", date, c.retry_after_s);

    /* a date past is 0; nonsense is -1; a huge delta is cut to the cap */
    responder_answer(r, 503, "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n", "");
    call_init(&c, &t, "127.0.0.1", r->port);
    send_one(o, &c);
    assert_int_equal(c.retry_after_s, 0);
    responder_answer(r, 429, "Retry-After: soon\r\n", "");
    call_init(&c, &t, "127.0.0.1", r->port);
    send_one(o, &c);
    assert_int_equal(c.retry_after_s, -1);
    responder_answer(r, 429, "Retry-After: 12x\r\n", "");
    call_init(&c, &t, "127.0.0.1", r->port);
    send_one(o, &c);
    assert_int_equal(c.retry_after_s, -1);
    responder_answer(r, 429, "Retry-After: 99999999999999999999\r\n", "");
    call_init(&c, &t, "127.0.0.1", r->port);
    send_one(o, &c);
    assert_int_equal(c.retry_after_s, OUTBOUND_RETRY_AFTER_MAX);
    responder_answer(r, 429, "Retry-After: 0\r\n", "");
    call_init(&c, &t, "127.0.0.1", r->port);
    send_one(o, &c);
    assert_int_equal(c.retry_after_s, 0);

    outbound_free(o);
    responder_stop(r);
    tally_destroy(&t);
}

static void test_redirect_not_followed(void **state)
{
    struct responder *r = responder_start();
    struct outbound *o = engine_loopback(8, 1000);
    struct tally t;
    struct call c;
    char extra[128];
    (void)state;

    tally_init(&t);
    snprintf(extra, sizeof(extra), "Location: http://127.0.0.1:%d/elsewhere\r\n", r->port);
    responder_answer(r, 302, extra, "moved");
    call_init(&c, &t, "127.0.0.1", r->port);
    send_one(o, &c);
    assert_int_equal(c.rc, 0);
    assert_int_equal(c.status, 302);
    assert_string_equal(c.excerpt, "moved");
    assert_int_equal(responder_count(r, &r->requests), 1);

    outbound_free(o);
    responder_stop(r);
    tally_destroy(&t);
}

static void test_connect_refused(void **state)
{
    struct outbound *o = engine_loopback(8, 1000);
    struct tally t;
    struct call c;
    int port;
    /* Bound but not listening: a connection is refused at once. */
    int fd = listen_loopback(&port, false);
    (void)state;

    tally_init(&t);
    call_init(&c, &t, "127.0.0.1", port);
    send_one(o, &c);
    assert_int_equal(c.rc, -DRV_EUNAVAILABLE);
    assert_int_equal(c.status, 0);
    assert_true(c.error[0] != '\0');
    assert_int_equal(c.retry_after_s, -1);
    assert_string_equal(c.excerpt, "");

    close(fd);
    outbound_free(o);
    tally_destroy(&t);
}

static void test_total_timeout(void **state)
{
    struct responder *r = responder_start();
    struct outbound *o = engine_loopback(8, 1000);
    struct tally t;
    struct call c;
    (void)state;

    tally_init(&t);
    responder_behave(r, true, 0);
    call_init(&c, &t, "127.0.0.1", r->port);
    c.req.timeout_ms = 300;
    int64_t start = time_mono_ms();
    send_one(o, &c);
    int64_t took = time_mono_ms() - start;
    assert_int_equal(c.rc, -DRV_EUNAVAILABLE);
    assert_int_equal(c.status, 0);
    if (!strstr(c.error, "timed out"))
        fail_msg("error '%s' does not say timed out", c.error);
    assert_string_equal(c.primary_ip, "127.0.0.1");
    if (c.latency_ms < 300 || took > 5000) /* the upper bound only catches a hang */
        fail_msg("latency %lld ms, took %lld ms, want about 300", (long long)c.latency_ms,
                 (long long)took);
    assert_int_equal(responder_count(r, &r->requests), 1);

    outbound_free(o);
    responder_stop(r);
    tally_destroy(&t);
}

static void test_guard(void **state)
{
    struct responder *r = responder_start();
    struct outbound_config oc;
    struct outbound *o;
    struct errmsg err;
    struct tally t;
    struct call c;
    (void)state;

    tally_init(&t);
    outbound_config_init(&oc);
    assert_int_equal(outbound_new(&oc, &o), 0);

    /* Refused by default, and never connected. */
    call_init(&c, &t, "127.0.0.1", r->port);
    send_one(o, &c);
    assert_int_equal(c.rc, -DRV_EFORBIDDEN);
    assert_int_equal(c.status, 0);
    assert_string_equal(c.error, "127.0.0.1 is a loopback address; allow it with --allow-target");
    assert_string_equal(c.primary_ip, "");

    /* The address connected to is what counts, whatever the URL's form. */
    call_init(&c, &t, "[::ffff:127.0.0.1]", r->port);
    send_one(o, &c);
    assert_int_equal(c.rc, -DRV_EFORBIDDEN);
    assert_string_equal(c.error, "::ffff:127.0.0.1 carries 127.0.0.1, a loopback address; allow it "
                                 "with --allow-target");
    call_init(&c, &t, "2130706433", r->port); /* 127.0.0.1 as one number */
    send_one(o, &c);
    assert_int_equal(c.rc, -DRV_EFORBIDDEN);
    call_init(&c, &t, "0.0.0.0", r->port);
    send_one(o, &c);
    assert_int_equal(c.rc, -DRV_EFORBIDDEN);
    assert_string_equal(c.error, "0.0.0.0 is an unspecified address; allow it with --allow-target");
    outbound_free(o);

    /* Allowed, it gets through; the responder sees only this connection (accept is FIFO). */
    assert_int_equal(net_guard_allow(&oc.guard, "127.0.0.0/8", &err), 0);
    assert_int_equal(outbound_new(&oc, &o), 0);
    call_init(&c, &t, "127.0.0.1", r->port);
    send_one(o, &c);
    assert_int_equal(c.rc, 0);
    assert_int_equal(c.status, 200);
    assert_int_equal(responder_count(r, &r->accepted), 1);
    assert_int_equal(responder_count(r, &r->requests), 1);

    /* An allow-list entry elsewhere does not open loopback. */
    outbound_free(o);
    outbound_config_init(&oc);
    assert_int_equal(net_guard_allow(&oc.guard, "10.0.0.0/8", &err), 0);
    assert_int_equal(outbound_new(&oc, &o), 0);
    call_init(&c, &t, "127.0.0.2", r->port);
    send_one(o, &c);
    assert_int_equal(c.rc, -DRV_EFORBIDDEN);
    assert_string_equal(c.error, "127.0.0.2 is a loopback address; allow it with --allow-target");
    assert_int_equal(responder_count(r, &r->accepted), 1);

    outbound_free(o);
    responder_stop(r);
    tally_destroy(&t);
}

#define N_CONCURRENT 200

static void test_concurrency_bound(void **state)
{
    struct responder *r = responder_start();
    struct outbound *o = engine_loopback(4, 1000);
    struct tally t;
    struct call *calls = calloc(N_CONCURRENT, sizeof(*calls));
    (void)state;

    assert_non_null(calls);
    tally_init(&t);
    responder_answer(r, 200, "", "ok");
    responder_behave(r, false, 2);
    for (int i = 0; i < N_CONCURRENT; i++) {
        call_init(&calls[i], &t, "127.0.0.1", r->port);
        calls[i].req.body = "{}";
        calls[i].req.body_len = 2;
        assert_int_equal(outbound_send(o, &calls[i].req), 0);
    }
    tally_wait(&t, N_CONCURRENT);
    for (int i = 0; i < N_CONCURRENT; i++) {
        assert_int_equal(calls[i].rc, 0);
        assert_int_equal(calls[i].status, 200);
    }
    assert_int_equal(responder_count(r, &r->requests), N_CONCURRENT);
    int max_open = responder_count(r, &r->max_open);
    int accepted = responder_count(r, &r->accepted);
    if (max_open > 4 || max_open < 2)
        fail_msg("the responder saw %d connections at once, want 2..4", max_open);
    /* Kept alive and reused: four connections carried all 200 requests. */
    if (accepted > 4)
        fail_msg("%d connections for %d requests, want at most 4", accepted, N_CONCURRENT);

    outbound_free(o);
    responder_stop(r);
    tally_destroy(&t);
    free(calls);
}

/* Two hosts: one that never answers holds only its own slots. */
static void test_slow_host_does_not_block_others(void **state)
{
    struct responder *slow = responder_start();
    struct responder *fast = responder_start();
    struct outbound_config oc;
    struct outbound *o;
    struct errmsg err;
    struct tally t;
    struct call slow_calls[6], fast_call;
    (void)state;

    tally_init(&t);
    outbound_config_init(&oc);
    assert_int_equal(net_guard_allow(&oc.guard, "127.0.0.0/8", &err), 0);
    oc.max_connections = 3;
    oc.max_host_connections = 2;
    oc.stop_timeout_ms = 0;
    assert_int_equal(outbound_new(&oc, &o), 0);
    responder_behave(slow, true, 0);
    for (size_t i = 0; i < ARRAY_SIZE(slow_calls); i++) {
        call_init(&slow_calls[i], &t, "127.0.0.1", slow->port);
        assert_int_equal(outbound_send(o, &slow_calls[i].req), 0);
    }
    responder_wait_requests(slow, 2);
    call_init(&fast_call, &t, "127.0.0.1", fast->port);
    send_one(o, &fast_call);
    assert_int_equal(fast_call.status, 200);
    assert_int_equal(responder_count(slow, &slow->requests), 2);

    outbound_free(o);
    tally_wait(&t, 1 + (int)ARRAY_SIZE(slow_calls));
    for (size_t i = 0; i < ARRAY_SIZE(slow_calls); i++)
        assert_int_equal(slow_calls[i].rc, -DRV_ESHUTTING_DOWN);
    responder_stop(slow);
    responder_stop(fast);
    tally_destroy(&t);
}

/* outbound_free() with requests in flight and queued: every done() runs, soon. */
static void test_free_in_flight(void **state)
{
    struct responder *r = responder_start();
    struct outbound *o = engine_loopback(4, 100);
    struct tally t;
    struct call calls[10];
    (void)state;

    tally_init(&t);
    responder_behave(r, true, 0);
    for (size_t i = 0; i < ARRAY_SIZE(calls); i++) {
        call_init(&calls[i], &t, "127.0.0.1", r->port);
        calls[i].req.timeout_ms = 60000;
        assert_int_equal(outbound_send(o, &calls[i].req), 0);
    }
    responder_wait_requests(r, 4);
    int64_t start = time_mono_ms();
    outbound_free(o);
    int64_t took = time_mono_ms() - start;
    pthread_mutex_lock(&t.lock);
    assert_int_equal(t.done, (int)ARRAY_SIZE(calls));
    assert_int_equal(t.twice, 0);
    pthread_mutex_unlock(&t.lock);
    if (took < 90 || took > 1500)
        fail_msg("outbound_free took %lld ms, want about the 100 ms stop timeout", (long long)took);
    int aborted = 0, unsent = 0;
    for (size_t i = 0; i < ARRAY_SIZE(calls); i++) {
        assert_int_equal(calls[i].rc, -DRV_ESHUTTING_DOWN);
        assert_int_equal(calls[i].status, 0);
        if (strcmp(calls[i].error, "the engine stopped before the response arrived") == 0)
            aborted++;
        else if (strcmp(calls[i].error, "the engine stopped before sending the request") == 0)
            unsent++;
        else
            fail_msg("unexpected error '%s'", calls[i].error);
    }
    assert_int_equal(aborted, 4);
    assert_int_equal(unsent, 6);

    responder_stop(r);
    tally_destroy(&t);
}

/* Within the stop timeout, a transfer in flight finishes normally. */
static void test_free_lets_in_flight_finish(void **state)
{
    struct responder *r = responder_start();
    struct outbound *o = engine_loopback(1, 3000);
    struct tally t;
    struct call calls[3];
    (void)state;

    tally_init(&t);
    responder_behave(r, false, 100);
    for (size_t i = 0; i < ARRAY_SIZE(calls); i++) {
        call_init(&calls[i], &t, "127.0.0.1", r->port);
        assert_int_equal(outbound_send(o, &calls[i].req), 0);
    }
    responder_wait_requests(r, 1);
    outbound_free(o);
    assert_int_equal(t.done, 3);
    assert_int_equal(calls[0].rc, 0);
    assert_int_equal(calls[0].status, 200);
    assert_int_equal(calls[1].rc, -DRV_ESHUTTING_DOWN);
    assert_int_equal(calls[2].rc, -DRV_ESHUTTING_DOWN);
    assert_int_equal(responder_count(r, &r->requests), 1);

    responder_stop(r);
    tally_destroy(&t);
}

/* A done() may send again: the engine's lock is not held while it runs. */
static struct outbound *resend_engine;

static void on_done_resend(struct outbound_request *req, const struct outbound_result *res)
{
    struct call *c = container_of(req, struct call, req);
    if (c->passes++ == 0 && outbound_send(resend_engine, req) == 0)
        return;
    req->done = on_done;
    on_done(req, res);
}

static void test_send_from_done(void **state)
{
    struct responder *r = responder_start();
    struct tally t;
    struct call c;
    (void)state;

    tally_init(&t);
    resend_engine = engine_loopback(8, 1000);
    call_init(&c, &t, "127.0.0.1", r->port);
    c.req.done = on_done_resend;
    send_one(resend_engine, &c);
    assert_int_equal(c.status, 200);
    assert_int_equal(responder_count(r, &r->requests), 2);
    outbound_free(resend_engine);
    resend_engine = NULL;
    responder_stop(r);
    tally_destroy(&t);
}

static void test_send_refuses_bad_requests(void **state)
{
    struct outbound *o = engine_loopback(8, 1000);
    struct tally t;
    struct call c;
    struct errmsg err;
    static const char *const crlf[] = {"X-Ok: 1", "X-Evil: a\r\nHost: other"};
    static const char *const no_colon[] = {"X-Nothing"};
    static const char *const bad_name[] = {"X Bad: 1"};
    (void)state;

    tally_init(&t);
    struct {
        const char *url, *method;
        const char *const *headers;
        size_t n_headers;
        int timeout_ms;
        const char *field, *text;
    } cases[] = {
        {"ftp://127.0.0.1/", NULL, NULL, 0, 0, "url", "url scheme 'ftp' is not http or https"},
        {"file:///etc/passwd", NULL, NULL, 0, 0, "url", "url scheme 'file' is not http or https"},
        {"not a url", NULL, NULL, 0, 0, "url", "url is not an absolute http(s) URL"},
        {"/relative", NULL, NULL, 0, 0, "url", "url is not an absolute http(s) URL"},
        {"", NULL, NULL, 0, 0, "url", "url is missing"},
        {"http://127.0.0.1/", "get", NULL, 0, 0, "method",
         "method must be GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS"},
        {"http://127.0.0.1/", "CONNECT", NULL, 0, 0, "method",
         "method must be GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS"},
        {"http://127.0.0.1/", "", NULL, 0, 0, "method",
         "method must be GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS"},
        {"http://127.0.0.1/", NULL, crlf, 2, 0, "headers",
         "header 2 ('X-Evil') holds a line break"},
        {"http://127.0.0.1/", NULL, no_colon, 1, 0, "headers",
         "header 1 is not 'Name: value' with a token name"},
        {"http://127.0.0.1/", NULL, bad_name, 1, 0, "headers",
         "header 1 is not 'Name: value' with a token name"},
        {"http://127.0.0.1/", NULL, NULL, 0, -1, "timeout", "timeouts must not be negative"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        call_init(&c, &t, "127.0.0.1", 1);
        c.req.url = cases[i].url;
        c.req.method = cases[i].method;
        c.req.headers = cases[i].headers;
        c.req.n_headers = cases[i].n_headers;
        c.req.timeout_ms = cases[i].timeout_ms;
        memset(&err, 0, sizeof(err));
        assert_int_equal(outbound_request_check(&c.req, &err), -DRV_EBAD_FIELD);
        assert_string_equal(err.field, cases[i].field);
        assert_string_equal(err.text, cases[i].text);
        assert_int_equal(outbound_send(o, &c.req), -DRV_EBAD_FIELD);
    }
    /* A header's value is never quoted back. */
    assert_null(strstr(err.text, "other"));

    call_init(&c, &t, "127.0.0.1", 1);
    c.req.done = NULL;
    assert_int_equal(outbound_send(o, &c.req), -DRV_EBAD_FIELD);
    call_init(&c, &t, "127.0.0.1", 1);
    c.req.body_len = 3;
    assert_int_equal(outbound_send(o, &c.req), -DRV_EBAD_FIELD);
    call_init(&c, &t, "127.0.0.1", 1);
    c.req.method = "HEAD";
    c.req.body = "x";
    c.req.body_len = 1;
    assert_int_equal(outbound_request_check(&c.req, &err), -DRV_EBAD_FIELD);
    assert_string_equal(err.text, "a HEAD request has no body");
    call_init(&c, &t, "127.0.0.1", 1);
    c.req.n_headers = OUTBOUND_HEADERS_MAX + 1;
    c.req.headers = crlf;
    assert_int_equal(outbound_send(o, &c.req), -DRV_EBAD_FIELD);

    /* Upper-case scheme and host are fine. */
    call_init(&c, &t, "127.0.0.1", 1);
    c.req.url = "HTTPS://Example.COM:8443/x";
    assert_int_equal(outbound_request_check(&c.req, &err), 0);

    outbound_free(o);
    /* None of the refused requests completed. */
    assert_int_equal(t.done, 0);
    tally_destroy(&t);
}

static void test_config(void **state)
{
    struct config cfg;
    struct outbound_config oc;
    struct outbound *o = NULL;
    struct errmsg err = {0};
    (void)state;

    config_init(&cfg);
    assert_int_equal(config_set(&cfg, "outbound.allow_target", "127.0.0.0/8", NULL, &err), 0);
    assert_int_equal(config_set(&cfg, "outbound.allow_target", "::1", NULL, &err), 0);
    assert_int_equal(config_set(&cfg, "outbound.max_host_connections", "3", NULL, &err), 0);
    assert_int_equal(config_set(&cfg, "outbound.timeout_ms", "700", NULL, &err), 0);
    assert_int_equal(outbound_config_from(&oc, &cfg, &err), 0);
    assert_int_equal(oc.guard.n_allow, 2);
    assert_int_equal(oc.max_connections, 64);
    assert_int_equal(oc.max_host_connections, 3);
    assert_int_equal(oc.connect_timeout_ms, 5000);
    assert_int_equal(oc.timeout_ms, 700);
    assert_int_equal(oc.excerpt_max, OUTBOUND_EXCERPT_DEFAULT);

    /* A list entry that does not parse (set by hand) is reported. */
    free(cfg.allow_targets[1]);
    cfg.allow_targets[1] = strdup("::1/129");
    assert_non_null(cfg.allow_targets[1]);
    assert_int_equal(outbound_config_from(&oc, &cfg, &err), -DRV_ECONFIG);
    assert_string_equal(err.text, "outbound.allow_target: '::1/129' has a prefix length above 128");
    config_release(&cfg);

    /* Out-of-range numbers are refused. */
    outbound_config_init(&oc);
    oc.max_connections = 0;
    assert_int_equal(outbound_new(&oc, &o), -DRV_ECONFIG);
    outbound_config_init(&oc);
    oc.excerpt_max = OUTBOUND_EXCERPT_MAX + 1;
    assert_int_equal(outbound_new(&oc, &o), -DRV_ECONFIG);
    outbound_config_init(&oc);
    oc.stop_timeout_ms = -1;
    assert_int_equal(outbound_new(&oc, &o), -DRV_ECONFIG);
    assert_null(o);
    outbound_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_with_excerpt),
        cmocka_unit_test(test_excerpt_configurable),
        cmocka_unit_test(test_server_error),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_redirect_not_followed),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_total_timeout),
        cmocka_unit_test(test_guard),
        cmocka_unit_test(test_concurrency_bound),
        cmocka_unit_test(test_slow_host_does_not_block_others),
        cmocka_unit_test(test_free_in_flight),
        cmocka_unit_test(test_free_lets_in_flight_finish),
        cmocka_unit_test(test_send_from_done),
        cmocka_unit_test(test_send_refuses_bad_requests),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
