/*
 * e2e.c - end-to-end load generator for drover's pull workers: durable
 * submits, claims and completes (bench/run-e2e.sh drives it).
 *
 * It shares the machine's two cores with the server, so it is kept cheap:
 * HTTP/1.1 keep-alive connections, a hand-written request writer and
 * response reader (status line, Content-Length, body), and in e2e mode one
 * thread that drives every connection from one epoll set (a thread per
 * connection cost the server a third of a core in context switches). Only
 * claim replies are read on the hot path (scanned for each job's id and
 * lease token: claim_parse()); every other reply is judged by its status.
 *
 *   e2e [-s SUBMITTERS] [-w WORKERS] [-c CONCURRENCY] [-m MAX] [-d SECONDS] e2e URL
 *   e2e [-n ROUNDS] wake URL
 *
 * The token is DROVER_TOKEN (an admin token can use every route). URL is
 * http://HOST:PORT. Each mode prints what it measured and one
 * "RESULT key=value ..." line for scripts.
 *
 * e2e: SUBMITTERS connections POST /v1/jobs to queue "e2e" back to back.
 * Each of the WORKERS is what `drover worker --concurrency CONCURRENCY`
 * is: it keeps up to CONCURRENCY jobs at once, claims (wait_s 1, at most
 * MAX and at most its free slots) on a connection of its own whenever a
 * slot is free, and completes each job it holds on one of CONCURRENCY
 * connections. Rates are counted over SECONDS after a 1 s warm-up. At the
 * end the submitters stop, every worker completes what it holds and its
 * last claim's jobs, and then the jobs still queued in "e2e" are counted
 * through GET /v1/jobs.
 *
 * wake: one worker long-polls (wait_s 5) on the empty queue "wake"; once its
 * claim has been sent (plus 2 ms, so the server has parked it) the main
 * thread submits one job. Latency is claim reply - submit's 202 (and claim
 * reply - submit sent), on the monotonic clock of this one process.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define REQUEST_MAX     8192      /* one request, headers and body */
#define RESPONSE_HEAD   16384     /* a reply's status line and headers */
#define RESPONSE_MAX    (4 << 20) /* a whole reply; claim replies are the big ones */
#define RECV_TIMEOUT_S  30        /* longer than any wait_s used here */
#define JOB_ID_MAX      64
#define LEASE_TOKEN_MAX 128
#define CLAIM_MAX       100 /* the API's limit on "max" */
#define WARMUP_S        1
#define WAKE_PARK_NS    2000000 /* after the claim is sent, before the submit */
#define WAKE_WAIT_S     5
#define CONCURRENCY_MAX 256 /* per worker */
#define EVENTS_MAX      256

/* ---- clock ---- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ns(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- one keep-alive connection ---- */

struct target {
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char host[300]; /* the Host header: "host:port" */
    const char *token;
};

struct conn {
    const struct target *t;
    int fd; /* -1: connect on the next request */
    char out[REQUEST_MAX];
    char *in;      /* replies; grows up to RESPONSE_MAX */
    size_t in_cap; /* allocated */
    size_t in_len; /* bytes read */
    size_t in_off; /* start of the next reply (bytes past the last one) */
    int status;
    const char *body; /* the last reply's body, in `in`; valid until the next request */
    size_t body_len;
};

static void conn_init(struct conn *c, const struct target *t)
{
    memset(c, 0, sizeof(*c));
    c->t = t;
    c->fd = -1;
}

static void conn_close(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->in_len = c->in_off = 0;
}

static void conn_release(struct conn *c)
{
    conn_close(c);
    free(c->in);
    c->in = NULL;
}

static int conn_open(struct conn *c)
{
    int fd = socket(c->t->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    struct timeval tv = {.tv_sec = RECV_TIMEOUT_S};
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (const struct sockaddr *)&c->t->addr, c->t->addr_len) < 0) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->in_len = c->in_off = 0;
    return 0;
}

/* Write a POST with a JSON body, or a GET when body is NULL, into `out`. Its length, or -1. */
static int conn_format(struct conn *c, const char *path, const char *body)
{
    int n;
    if (body)
        n = snprintf(c->out, sizeof(c->out),
                     "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     path, c->t->host, c->t->token, strlen(body), body);
    else
        n = snprintf(c->out, sizeof(c->out),
                     "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", path,
                     c->t->host, c->t->token);
    return n < 0 || (size_t)n >= sizeof(c->out) ? -1 : n;
}

/* Send a request, blocking (conn_format()). 0 or -1 (then the socket is closed). */
static int conn_send(struct conn *c, const char *path, const char *body)
{
    int n = conn_format(c, path, body);
    if (n < 0)
        return -1;
    if (c->fd < 0 && conn_open(c) < 0)
        return -1;
    size_t sent = 0;
    while (sent < (size_t)n) {
        ssize_t w = send(c->fd, c->out + sent, (size_t)n - sent, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            conn_close(c);
            return -1;
        }
        sent += (size_t)w;
    }
    return 0;
}

static int conn_reserve(struct conn *c, size_t want);

/* Read until `in` holds `want` bytes. 0 or -1. */
static int conn_fill(struct conn *c, size_t want)
{
    if (conn_reserve(c, want) < 0)
        return -1;
    while (c->in_len < want) {
        size_t room = c->in_cap - c->in_len;
        ssize_t r = recv(c->fd, c->in + c->in_len, room, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c->in_len += (size_t)r;
    }
    return 0;
}

/* Does the header line [p, end) name `name` (case-insensitive)? Its value, or NULL. */
static const char *header_value(const char *p, const char *end, const char *name)
{
    size_t n = strlen(name);
    if ((size_t)(end - p) <= n || strncasecmp(p, name, n) != 0 || p[n] != ':')
        return NULL;
    p += n + 1;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

/* Make room in `in` for `want` bytes. 0 or -1. */
static int conn_reserve(struct conn *c, size_t want)
{
    if (want > RESPONSE_MAX)
        return -1;
    if (want > c->in_cap) {
        size_t cap = c->in_cap ? c->in_cap : 65536;
        while (cap < want)
            cap *= 2;
        char *in = realloc(c->in, cap);
        if (in == NULL)
            return -1;
        c->in = in;
        c->in_cap = cap;
    }
    return 0;
}

/*
 * Is a whole reply in `in`: the status line, the headers (Content-Length
 * is required, chunked bodies are not supported), the body? Its status
 * (then body and in_off are set), 0 when more bytes are needed, or -1 for
 * a reply this reader cannot take. *need says how many bytes `in` must
 * hold before it can tell more.
 */
static int conn_parse(struct conn *c, size_t *need)
{
    /* Bytes past the previous reply (none without pipelining) move to the front. */
    if (c->in_off > 0) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    char *e = c->in_len >= 4 ? memmem(c->in, c->in_len, "\r\n\r\n", 4) : NULL;
    if (e == NULL) {
        *need = c->in_len + 1;
        return c->in_len >= RESPONSE_HEAD ? -1 : 0;
    }
    size_t head = (size_t)(e - c->in) + 4;
    if (head < 16 || memcmp(c->in, "HTTP/1.", 7) != 0 || c->in[8] != ' ')
        return -1;
    int status = atoi(c->in + 9);
    long long length = -1;
    bool close_after = c->in[7] == '0'; /* HTTP/1.0 */
    const char *p = (const char *)memchr(c->in, '\n', head) + 1;
    const char *end_head = c->in + head - 2;
    while (p < end_head) {
        const char *eol = memchr(p, '\r', (size_t)(end_head - p));
        if (eol == NULL)
            eol = end_head;
        const char *v;
        if ((v = header_value(p, eol, "Content-Length")) != NULL)
            length = strtoll(v, NULL, 10);
        else if ((v = header_value(p, eol, "Connection")) != NULL)
            close_after = strncasecmp(v, "close", 5) == 0;
        else if (header_value(p, eol, "Transfer-Encoding") != NULL)
            return -1;
        p = eol + 2;
    }
    if (length < 0 || length > RESPONSE_MAX)
        return -1;
    if (c->in_len < head + (size_t)length) {
        *need = head + (size_t)length;
        return 0;
    }
    c->status = status;
    c->body = c->in + head;
    c->body_len = (size_t)length;
    c->in_off = head + (size_t)length;
    if (close_after) {
        /* The body stays readable: only the socket goes. */
        close(c->fd);
        c->fd = -1;
    }
    return status;
}

/* Read one reply, blocking. Returns the status, or -1 with the connection closed. */
static int conn_recv(struct conn *c)
{
    size_t need;
    int status;
    while ((status = conn_parse(c, &need)) == 0)
        if (conn_fill(c, need) < 0)
            break;
    if (status <= 0)
        conn_close(c);
    return status <= 0 ? -1 : status;
}

/* One request and its reply: the status, or -1. body NULL: a GET. */
static int conn_post(struct conn *c, const char *path, const char *body)
{
    if (conn_send(c, path, body) < 0)
        return -1;
    return conn_recv(c);
}

/* ---- claim replies ---- */

struct claimed {
    char id[JOB_ID_MAX + 1];
    char token[LEASE_TOKEN_MAX + 1];
};

/* The string value that starts right after `at`, into out[size]; the end of it, or NULL. */
static const char *string_after(const char *at, const char *end, char *out, size_t size)
{
    const char *close = memchr(at, '"', (size_t)(end - at));
    if (close == NULL || (size_t)(close - at) >= size)
        return NULL;
    memcpy(out, at, (size_t)(close - at));
    out[close - at] = '\0';
    return close;
}

/*
 * Read {"jobs":[{"id", ..., "lease":{"token"}}, ...]} into out[max]. The
 * count, or -1.
 *
 * By scanning, not parsing: jansson parsing the whole claim reply (each
 * job's payload and checkpoints included) was a quarter of this client's
 * CPU, taken from the server it measures on a 2-core machine. The scan
 * relies on drover writing a job's "id" first (json_writer order, see
 * src/job_json.c) and on this bench's payloads holding neither key; a
 * reply it misreads fails its completes with 409, counted as errors.
 */
static int claim_parse(const char *body, size_t len, struct claimed *out, int max)
{
    static const char id_key[] = "{\"id\":\"", token_key[] = "\"lease\":{\"token\":\"";
    const char *p = body, *end = body + len;
    int n = 0;
    if (len < 9 || memcmp(body, "{\"jobs\":[", 9) != 0)
        return -1;
    for (;;) {
        const char *id = memmem(p, (size_t)(end - p), id_key, sizeof(id_key) - 1);
        if (id == NULL)
            return n;
        if (n == max)
            return -1;
        p = string_after(id + sizeof(id_key) - 1, end, out[n].id, sizeof(out[n].id));
        const char *token =
            p ? memmem(p, (size_t)(end - p), token_key, sizeof(token_key) - 1) : NULL;
        if (token)
            p = string_after(token + sizeof(token_key) - 1, end, out[n].token,
                             sizeof(out[n].token));
        if (token == NULL || p == NULL)
            return -1;
        n++;
    }
}

/* POST /v1/jobs/ID/complete with the lease. The status, or -1. */
static int complete(struct conn *c, const struct claimed *job)
{
    char path[128], body[LEASE_TOKEN_MAX + 32];
    snprintf(path, sizeof(path), "/v1/jobs/%s/complete", job->id);
    snprintf(body, sizeof(body), "{\"lease\":\"%s\"}", job->token);
    return conn_post(c, path, body);
}

/*
 * Count the jobs of `queue` in state queued, a page of 500 at a time (GET
 * /v1/jobs, following "next"). The count, or -1. Runs after the measurement.
 */
static long long count_queued(const struct target *t, const char *queue)
{
    struct conn c;
    conn_init(&c, t);
    char path[256], cursor[128] = "";
    long long n = 0;
    for (int page = 0; page < 100000; page++) {
        snprintf(path, sizeof(path), "/v1/jobs?queue=%s&state=queued&limit=500%s%s", queue,
                 cursor[0] ? "&after=" : "", cursor);
        json_t *root = NULL;
        if (conn_post(&c, path, NULL) == 200)
            root = json_loadb(c.body, c.body_len, 0, NULL);
        json_t *jobs = json_object_get(root, "jobs"), *next = json_object_get(root, "next");
        if (!json_is_array(jobs)) {
            json_decref(root);
            n = -1;
            break;
        }
        size_t got = json_array_size(jobs);
        n += (long long)got;
        if (json_is_string(next) && json_string_length(next) < sizeof(cursor))
            snprintf(cursor, sizeof(cursor), "%s", json_string_value(next));
        else if (json_is_integer(next))
            snprintf(cursor, sizeof(cursor), "%lld", (long long)json_integer_value(next));
        else
            cursor[0] = '\0';
        json_decref(root);
        if (cursor[0] == '\0' || got == 0)
            break;
    }
    conn_release(&c);
    return n;
}

/* ---- errors: counted, and the first of each kind kept for the report ---- */

struct errors {
    pthread_mutex_t mu;
    atomic_uint_fast64_t n;
    char first[4][300]; /* submit, claim, complete, transport */
};

enum err_kind { ERR_SUBMIT, ERR_CLAIM, ERR_COMPLETE, ERR_TRANSPORT };

static void errors_note(struct errors *e, enum err_kind kind, const struct conn *c, int status)
{
    atomic_fetch_add_explicit(&e->n, 1, memory_order_relaxed);
    pthread_mutex_lock(&e->mu);
    if (e->first[kind][0] == '\0') {
        static const char *const names[] = {"submit", "claim", "complete", "transport"};
        if (status < 0)
            snprintf(e->first[kind], sizeof(e->first[kind]), "%s: connection failed (%s)",
                     names[kind], strerror(errno));
        else
            snprintf(e->first[kind], sizeof(e->first[kind]), "%s: %d %.*s", names[kind], status,
                     (int)(c->body_len < 200 ? c->body_len : 200), c->body);
    }
    pthread_mutex_unlock(&e->mu);
}

static void errors_print(struct errors *e)
{
    for (size_t i = 0; i < sizeof(e->first) / sizeof(e->first[0]); i++)
        if (e->first[i][0])
            fprintf(stderr, "first error: %s\n", e->first[i]);
}

/* ---- e2e mode: every connection on one epoll loop ---- */

struct counts {
    uint64_t submitted, claims, claimed, completed;
    uint64_t submit_ns, claim_ns, complete_ns; /* summed over those replies */
};

enum role { ROLE_SUBMIT, ROLE_CLAIM, ROLE_COMPLETE };

struct worker;

/* A connection of the loop and the request it has out (busy). */
struct lconn {
    struct conn c;
    enum role role;
    struct worker *w; /* NULL for submitters */
    bool busy;        /* a request is out: its reply is awaited */
    size_t out_len, out_sent;
    int64_t sent_ns;
    uint32_t watching; /* the epoll events registered for c.fd; 0: not registered */
};

/* A worker: up to `concurrency` jobs held, claimed on `claim`, completed on `completes`. */
struct worker {
    int index;
    struct lconn claim;
    struct lconn *completes; /* concurrency of them */
    struct claimed *held;    /* claimed, not yet being completed: a FIFO of concurrency */
    int held_head, held_n;
    int completing; /* completes out */
};

struct loop {
    const struct target *t;
    int epfd;
    int concurrency, max;
    bool stopping;    /* no new submits or claims */
    int64_t retry_ns; /* after a transport failure: restart idle connections then; 0: none */
    struct counts n;
    struct errors err;
};

/* Watch lc for events; no system call when they are the ones registered already. */
static int lconn_watch(struct loop *l, struct lconn *lc, uint32_t events)
{
    if (lc->watching == events)
        return 0;
    struct epoll_event ev = {.events = events, .data.ptr = lc};
    if (epoll_ctl(l->epfd, lc->watching ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, lc->c.fd, &ev) < 0)
        return -1;
    lc->watching = events;
    return 0;
}

/* Send what is left of the request; the rest waits for EPOLLOUT. 0 or -1. */
static int lconn_flush(struct loop *l, struct lconn *lc)
{
    while (lc->out_sent < lc->out_len) {
        ssize_t w =
            send(lc->c.fd, lc->c.out + lc->out_sent, lc->out_len - lc->out_sent, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return lconn_watch(l, lc, EPOLLIN | EPOLLOUT);
        if (w <= 0)
            return -1;
        lc->out_sent += (size_t)w;
    }
    return lconn_watch(l, lc, EPOLLIN);
}

/* Put a request out on lc, opening its socket first if needed. 0 or -1. */
static int lconn_start(struct loop *l, struct lconn *lc, const char *path, const char *body)
{
    int n = conn_format(&lc->c, path, body);
    if (n < 0)
        return -1;
    if (lc->c.fd < 0) {
        if (conn_open(&lc->c) < 0)
            return -1;
        int flags = 1;
        if (ioctl(lc->c.fd, FIONBIO, &flags) < 0)
            return -1;
    }
    lc->busy = true;
    lc->out_len = (size_t)n;
    lc->out_sent = 0;
    lc->sent_ns = now_ns();
    return lconn_flush(l, lc);
}

/* Drop lc's socket; the next request opens a new one. */
static void lconn_drop(struct loop *l, struct lconn *lc)
{
    if (lc->c.fd >= 0)
        (void)epoll_ctl(l->epfd, EPOLL_CTL_DEL, lc->c.fd, NULL);
    conn_close(&lc->c);
    lc->busy = false;
    lc->watching = 0;
}

/*
 * A transport failure: count it and drop the socket. lc stays idle until
 * the loop restarts idle connections, 10 ms later (no busy loop against a
 * server that is gone, and no sleep that would stall the others).
 */
static void lconn_failed(struct loop *l, struct lconn *lc, enum err_kind kind)
{
    errors_note(&l->err, kind, &lc->c, -1);
    lconn_drop(l, lc);
    if (l->retry_ns == 0)
        l->retry_ns = now_ns() + 10000000;
}

static void worker_claim(struct loop *l, struct worker *w)
{
    int free_slots = l->concurrency - w->held_n - w->completing;
    if (l->stopping || w->claim.busy || free_slots <= 0)
        return;
    char body[128];
    snprintf(body, sizeof(body), "{\"worker\":\"w%d\",\"max\":%d,\"wait_s\":1}", w->index,
             free_slots < l->max ? free_slots : l->max);
    if (lconn_start(l, &w->claim, "/v1/queues/e2e/claim", body) < 0)
        lconn_failed(l, &w->claim, ERR_TRANSPORT);
}

/* Give held jobs to idle complete connections. */
static void worker_complete(struct loop *l, struct worker *w)
{
    for (int i = 0; i < l->concurrency && w->held_n > 0; i++) {
        struct lconn *lc = &w->completes[i];
        if (lc->busy)
            continue;
        struct claimed *job = &w->held[w->held_head];
        char path[128], body[LEASE_TOKEN_MAX + 32];
        snprintf(path, sizeof(path), "/v1/jobs/%s/complete", job->id);
        snprintf(body, sizeof(body), "{\"lease\":\"%s\"}", job->token);
        if (lconn_start(l, lc, path, body) < 0) {
            lconn_failed(l, lc, ERR_TRANSPORT); /* the job stays held for the retry */
            return;
        }
        w->held_head = (w->held_head + 1) % l->concurrency;
        w->held_n--;
        w->completing++;
    }
}

static const char submit_body[] = "{\"queue\":\"e2e\",\"payload\":{\"customer\":42,\"plan\":\"vm."
                                  "small\",\"region\":\"fra1\"}}";

/* A whole reply arrived on lc: count it and put the next request out. */
static void on_reply(struct loop *l, struct lconn *lc, int status)
{
    int64_t ns = now_ns() - lc->sent_ns;
    struct worker *w = lc->w;
    lc->busy = false;
    switch (lc->role) {
    case ROLE_SUBMIT:
        if (status == 202) {
            l->n.submitted++;
            l->n.submit_ns += (uint64_t)ns;
        } else {
            errors_note(&l->err, ERR_SUBMIT, &lc->c, status);
        }
        if (!l->stopping && lconn_start(l, lc, "/v1/jobs", submit_body) < 0)
            lconn_failed(l, lc, ERR_TRANSPORT);
        return;
    case ROLE_CLAIM: {
        struct claimed got[CLAIM_MAX];
        int room = l->concurrency - w->held_n - w->completing;
        int n = status == 200 ? claim_parse(lc->c.body, lc->c.body_len, got,
                                            room < CLAIM_MAX ? room : CLAIM_MAX)
                              : -1;
        if (n < 0) {
            errors_note(&l->err, ERR_CLAIM, &lc->c, status);
        } else {
            l->n.claims++;
            l->n.claimed += (uint64_t)n;
            l->n.claim_ns += (uint64_t)ns;
            for (int i = 0; i < n; i++)
                w->held[(w->held_head + w->held_n++) % l->concurrency] = got[i];
        }
        worker_complete(l, w);
        worker_claim(l, w);
        return;
    }
    case ROLE_COMPLETE:
        w->completing--;
        if (status == 200) {
            l->n.completed++;
            l->n.complete_ns += (uint64_t)ns;
        } else {
            errors_note(&l->err, ERR_COMPLETE, &lc->c, status);
        }
        worker_complete(l, w);
        worker_claim(l, w);
        return;
    }
}

/* Read what lc's socket has; on a whole reply, go on. */
static void on_readable(struct loop *l, struct lconn *lc)
{
    if (lc->c.fd < 0)
        return;      /* dropped earlier in this batch of events */
    if (!lc->busy) { /* the server closed an idle keep-alive connection */
        lconn_drop(l, lc);
        return;
    }
    for (;;) {
        size_t need;
        int status = conn_parse(&lc->c, &need);
        if (status > 0) {
            on_reply(l, lc, status);
            return;
        }
        if (status < 0 ||
            conn_reserve(&lc->c, need > lc->c.in_len + 4096 ? need : lc->c.in_len + 4096) < 0)
            break;
        ssize_t r = recv(lc->c.fd, lc->c.in + lc->c.in_len, lc->c.in_cap - lc->c.in_len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r <= 0)
            break;
        lc->c.in_len += (size_t)r;
    }
    lconn_failed(l, lc, ERR_TRANSPORT);
    if (lc->role == ROLE_COMPLETE) /* its job's lease runs out: counted as an error, not done */
        lc->w->completing--;
}

/* After a failure: every idle connection puts its next request out again. */
static void restart_idle(struct loop *l, struct lconn *subs, int submitters, struct worker *ws,
                         int workers)
{
    l->retry_ns = 0;
    for (int i = 0; i < submitters && !l->stopping; i++)
        if (!subs[i].busy && lconn_start(l, &subs[i], "/v1/jobs", submit_body) < 0)
            lconn_failed(l, &subs[i], ERR_TRANSPORT);
    for (int i = 0; i < workers; i++) {
        worker_complete(l, &ws[i]);
        worker_claim(l, &ws[i]);
    }
}

static bool all_idle(const struct lconn *subs, int submitters, const struct worker *ws, int workers)
{
    for (int i = 0; i < submitters; i++)
        if (subs[i].busy)
            return false;
    for (int i = 0; i < workers; i++)
        if (ws[i].claim.busy || ws[i].completing > 0 || ws[i].held_n > 0)
            return false;
    return true;
}

static double mean_ms(uint64_t ns, uint64_t n)
{
    return n ? (double)ns / (double)n / 1e6 : 0;
}

static int run_e2e(const struct target *t, int submitters, int workers, int concurrency, int max,
                   int seconds)
{
    struct loop l = {.t = t,
                     .concurrency = concurrency,
                     .max = max,
                     .err = {.mu = PTHREAD_MUTEX_INITIALIZER},
                     .epfd = epoll_create1(EPOLL_CLOEXEC)};
    struct lconn *subs = calloc((size_t)submitters + 1, sizeof(*subs));
    struct worker *ws = calloc((size_t)workers + 1, sizeof(*ws));
    if (l.epfd < 0 || !subs || !ws)
        return 1;
    for (int i = 0; i < submitters; i++) {
        conn_init(&subs[i].c, t);
        subs[i].role = ROLE_SUBMIT;
        if (lconn_start(&l, &subs[i], "/v1/jobs", submit_body) < 0)
            lconn_failed(&l, &subs[i], ERR_TRANSPORT);
    }
    for (int i = 0; i < workers; i++) {
        struct worker *w = &ws[i];
        w->index = i;
        w->completes = calloc((size_t)concurrency, sizeof(*w->completes));
        w->held = calloc((size_t)concurrency, sizeof(*w->held));
        if (!w->completes || !w->held)
            return 1;
        conn_init(&w->claim.c, t);
        w->claim.role = ROLE_CLAIM;
        w->claim.w = w;
        for (int k = 0; k < concurrency; k++) {
            conn_init(&w->completes[k].c, t);
            w->completes[k].role = ROLE_COMPLETE;
            w->completes[k].w = w;
        }
        worker_claim(&l, w);
    }

    struct counts c0 = {0}, c1 = {0};
    int64_t start = now_ns(), t0 = 0, t1 = 0;
    int64_t warm_end = start + (int64_t)WARMUP_S * 1000000000;
    int64_t run_end = warm_end + (int64_t)seconds * 1000000000;
    int64_t give_up = run_end + (int64_t)RECV_TIMEOUT_S * 1000000000;
    struct epoll_event evs[EVENTS_MAX];
    for (;;) {
        int64_t now = now_ns();
        if (t0 == 0 && now >= warm_end) {
            t0 = now;
            c0 = l.n;
        }
        if (t1 == 0 && now >= run_end) {
            t1 = now;
            c1 = l.n;
            l.stopping = true; /* what is out finishes; the held jobs get completed */
        }
        if (l.stopping && (all_idle(subs, submitters, ws, workers) || now >= give_up))
            break;
        if (l.retry_ns && now >= l.retry_ns)
            restart_idle(&l, subs, submitters, ws, workers);
        int64_t until = t0 == 0 ? warm_end : t1 == 0 ? run_end : give_up;
        if (l.retry_ns && l.retry_ns < until)
            until = l.retry_ns;
        int wait = until > now ? (int)((until - now) / 1000000) + 1 : 0;
        int n = epoll_wait(l.epfd, evs, EVENTS_MAX, wait);
        for (int i = 0; i < n; i++) {
            struct lconn *lc = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT && lc->out_sent < lc->out_len) {
                if (lconn_flush(&l, lc) < 0) {
                    evs[i].events = EPOLLERR; /* read below, which ends it */
                }
            }
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_readable(&l, lc);
        }
    }
    struct counts end = l.n;
    for (int i = 0; i < submitters; i++)
        conn_release(&subs[i].c);
    for (int i = 0; i < workers; i++) {
        conn_release(&ws[i].claim.c);
        for (int k = 0; k < concurrency; k++)
            conn_release(&ws[i].completes[k].c);
        free(ws[i].completes);
        free(ws[i].held);
    }
    free(subs);
    free(ws);
    close(l.epfd);

    double secs = (double)(t1 - t0) / 1e9;
    double completes_s = (double)(c1.completed - c0.completed) / secs;
    double submits_s = (double)(c1.submitted - c0.submitted) / secs;
    double claims_s = (double)(c1.claims - c0.claims) / secs;
    double per_claim = c1.claims > c0.claims
                           ? (double)(c1.claimed - c0.claimed) / (double)(c1.claims - c0.claims)
                           : 0;
    /* Mean time per call in the window: a closed loop's rate is its connections / this. */
    double submit_ms = mean_ms(c1.submit_ns - c0.submit_ns, c1.submitted - c0.submitted);
    double claim_ms = mean_ms(c1.claim_ns - c0.claim_ns, c1.claims - c0.claims);
    double complete_ms = mean_ms(c1.complete_ns - c0.complete_ns, c1.completed - c0.completed);
    long long queued = count_queued(t, "e2e");
    uint64_t errors = atomic_load(&l.err.n);
    printf("e2e: %d submitters, %d workers x %d (max %d per claim), %.2f s measured after %d s "
           "warm-up\n",
           submitters, workers, concurrency, max, secs, WARMUP_S);
    printf("  completed   %10.0f jobs/s (end to end), %.2f ms per complete call\n", completes_s,
           complete_ms);
    printf("  submitted   %10.0f jobs/s, %.2f ms per submit\n", submits_s, submit_ms);
    printf("  claim calls %10.0f /s, %.2f jobs per claim, %.2f ms per claim (waits included)\n",
           claims_s, per_claim, claim_ms);
    printf("  totals: %llu submitted, %llu claimed, %llu completed, %llu errors\n",
           (unsigned long long)end.submitted, (unsigned long long)end.claimed,
           (unsigned long long)end.completed, (unsigned long long)errors);
    printf("  queued in \"e2e\" at the end: %lld (-1: cannot list)\n", queued);
    errors_print(&l.err);
    printf("RESULT mode=e2e submitters=%d workers=%d concurrency=%d max=%d seconds=%.2f "
           "completes_s=%.0f submits_s=%.0f claims_s=%.0f jobs_per_claim=%.2f submit_ms=%.3f "
           "claim_ms=%.3f complete_ms=%.3f submitted=%llu claimed=%llu completed=%llu "
           "queued_end=%lld errors=%llu\n",
           submitters, workers, concurrency, max, secs, completes_s, submits_s, claims_s, per_claim,
           submit_ms, claim_ms, complete_ms, (unsigned long long)end.submitted,
           (unsigned long long)end.claimed, (unsigned long long)end.completed, queued,
           (unsigned long long)errors);
    return errors || queued < 0 || end.claimed != end.completed ? 1 : 0;
}

/* ---- wake mode ---- */

struct wake {
    const struct target *t;
    int rounds;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int sent;         /* the round whose claim is on the wire, -1 before the first */
    int done;         /* rounds whose job was claimed and completed */
    bool failed;      /* either side gave up */
    int64_t *resp_ns; /* [round]: when the claim reply carrying the job arrived */
    struct errors err;
};

static void wake_set(struct wake *w, int *field, int value)
{
    pthread_mutex_lock(&w->mu);
    *field = value;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Either side gives up; the other stops waiting. */
static void wake_fail(struct wake *w)
{
    pthread_mutex_lock(&w->mu);
    w->failed = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Wait until *field >= value; false if the other side failed. */
static bool wake_wait(struct wake *w, const int *field, int value)
{
    pthread_mutex_lock(&w->mu);
    while (*field < value && !w->failed)
        pthread_cond_wait(&w->cv, &w->mu);
    bool ok = !w->failed;
    pthread_mutex_unlock(&w->mu);
    return ok;
}

static void *wake_worker(void *arg)
{
    struct wake *w = arg;
    struct conn c;
    conn_init(&c, w->t);
    char body[96];
    snprintf(body, sizeof(body), "{\"worker\":\"wake\",\"max\":1,\"wait_s\":%d}", WAKE_WAIT_S);
    struct claimed job;
    bool failed = false;
    for (int round = 0; round < w->rounds && !failed; round++) {
        int n = 0;
        int64_t at = 0;
        while (n == 0 && !failed) {
            int status = conn_send(&c, "/v1/queues/wake/claim", body);
            wake_set(w, &w->sent, round);
            if (status == 0)
                status = conn_recv(&c);
            at = now_ns();
            n = status == 200 ? claim_parse(c.body, c.body_len, &job, 1) : -1;
            if (n < 0) {
                errors_note(&w->err, status < 0 ? ERR_TRANSPORT : ERR_CLAIM, &c, status);
                failed = true;
            }
            /* n == 0: the wait ran out (the submit failed?); claim again unless told to stop. */
            pthread_mutex_lock(&w->mu);
            failed |= w->failed;
            pthread_mutex_unlock(&w->mu);
        }
        if (failed)
            break;
        w->resp_ns[round] = at;
        int status = complete(&c, &job);
        if (status != 200) {
            errors_note(&w->err, status < 0 ? ERR_TRANSPORT : ERR_COMPLETE, &c, status);
            failed = true;
        }
        if (!failed)
            wake_set(w, &w->done, round + 1);
    }
    if (failed)
        wake_fail(w);
    conn_release(&c);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[n]. */
static double percentile(const double *v, int n, double p)
{
    int rank = (int)ceil(p / 100.0 * n);
    return v[rank < 1 ? 0 : rank - 1];
}

static int run_wake(const struct target *t, int rounds)
{
    struct wake w = {
        .t = t,
        .rounds = rounds,
        .mu = PTHREAD_MUTEX_INITIALIZER,
        .cv = PTHREAD_COND_INITIALIZER,
        .sent = -1,
        .err = {.mu = PTHREAD_MUTEX_INITIALIZER},
    };
    w.resp_ns = calloc((size_t)rounds, sizeof(*w.resp_ns));
    int64_t *send_ns = calloc((size_t)rounds, sizeof(*send_ns));
    int64_t *accepted_ns = calloc((size_t)rounds, sizeof(*accepted_ns));
    double *after_202 = calloc((size_t)rounds, sizeof(double));
    double *after_send = calloc((size_t)rounds, sizeof(double));
    double *submit = calloc((size_t)rounds, sizeof(double));
    int rc = 1, done = 0;
    pthread_t worker;
    struct conn c;
    conn_init(&c, t);
    if (!w.resp_ns || !send_ns || !accepted_ns || !after_202 || !after_send || !submit ||
        pthread_create(&worker, NULL, wake_worker, &w) != 0)
        goto out_free;
    static const char body[] = "{\"queue\":\"wake\",\"payload\":{\"customer\":42}}";
    for (int round = 0; round < rounds; round++) {
        if (!wake_wait(&w, &w.sent, round))
            break;
        sleep_ns(WAKE_PARK_NS);
        send_ns[round] = now_ns();
        int status = conn_post(&c, "/v1/jobs", body);
        accepted_ns[round] = now_ns();
        if (status != 202) {
            errors_note(&w.err, status < 0 ? ERR_TRANSPORT : ERR_SUBMIT, &c, status);
            wake_fail(&w);
            break;
        }
        if (!wake_wait(&w, &w.done, round + 1))
            break;
        after_202[round] = (double)(w.resp_ns[round] - accepted_ns[round]) / 1e6;
        after_send[round] = (double)(w.resp_ns[round] - send_ns[round]) / 1e6;
        submit[round] = (double)(accepted_ns[round] - send_ns[round]) / 1e6;
        done++;
    }
    pthread_join(worker, NULL);
    errors_print(&w.err);
    if (done < rounds) {
        fprintf(stderr, "wake: stopped after %d of %d rounds\n", done, rounds);
        goto out_free;
    }
    qsort(after_202, (size_t)rounds, sizeof(double), cmp_double);
    qsort(after_send, (size_t)rounds, sizeof(double), cmp_double);
    qsort(submit, (size_t)rounds, sizeof(double), cmp_double);
    const double *sets[] = {after_202, after_send, submit};
    const char *names[] = {"claim reply - 202", "claim reply - submit sent", "submit (202 - sent)"};
    printf("wake: %d rounds, a claim parked %.1f ms before each submit\n", rounds,
           WAKE_PARK_NS / 1e6);
    printf("  %-28s %8s %8s %8s %8s %8s\n", "ms", "min", "p50", "p90", "p99", "max");
    for (int i = 0; i < 3; i++)
        printf("  %-28s %8.3f %8.3f %8.3f %8.3f %8.3f\n", names[i], sets[i][0],
               percentile(sets[i], rounds, 50), percentile(sets[i], rounds, 90),
               percentile(sets[i], rounds, 99), sets[i][rounds - 1]);
    printf("RESULT mode=wake rounds=%d min_ms=%.3f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f "
           "max_ms=%.3f send_p50_ms=%.3f send_p90_ms=%.3f send_p99_ms=%.3f send_max_ms=%.3f "
           "submit_p50_ms=%.3f\n",
           rounds, after_202[0], percentile(after_202, rounds, 50),
           percentile(after_202, rounds, 90), percentile(after_202, rounds, 99),
           after_202[rounds - 1], percentile(after_send, rounds, 50),
           percentile(after_send, rounds, 90), percentile(after_send, rounds, 99),
           after_send[rounds - 1], percentile(submit, rounds, 50));
    rc = 0;
out_free:
    conn_release(&c);
    free(w.resp_ns);
    free(send_ns);
    free(accepted_ns);
    free(after_202);
    free(after_send);
    free(submit);
    return rc;
}

/* ---- main ---- */

/* "http://HOST:PORT" into t. 0 or -1. */
static int target_init(struct target *t, const char *url, const char *token)
{
    memset(t, 0, sizeof(*t));
    t->token = token;
    if (strncmp(url, "http://", 7) == 0)
        url += 7;
    char host[256];
    snprintf(host, sizeof(host), "%s", url);
    char *slash = strchr(host, '/');
    if (slash)
        *slash = '\0';
    snprintf(t->host, sizeof(t->host), "%s", host);
    char *colon = strrchr(host, ':');
    if (colon == NULL)
        return -1;
    *colon = '\0';
    const char *port = colon + 1;
    char *name = host;
    if (name[0] == '[' && colon > host && colon[-1] == ']') { /* [::1]:port */
        colon[-1] = '\0';
        name++;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(name, port, &hints, &res) != 0)
        return -1;
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    t->addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: e2e [-s SUBMITTERS] [-w WORKERS] [-c CONCURRENCY] [-m MAX] "
                    "[-d SECONDS] e2e URL\n"
                    "       e2e [-n ROUNDS] wake URL\n"
                    "DROVER_TOKEN holds the bearer token; URL is http://HOST:PORT\n");
}

static bool int_arg(const char *s, int min, int max, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < min || v > max)
        return false;
    *out = (int)v;
    return true;
}

int main(int argc, char **argv)
{
    int submitters = 96, workers = 16, concurrency = 16, max = 16, seconds = 10, rounds = 1000;
    int opt;
    while ((opt = getopt(argc, argv, "s:w:c:m:d:n:h")) != -1) {
        bool ok = true;
        switch (opt) {
        case 's': ok = int_arg(optarg, 0, 1024, &submitters); break;
        case 'w': ok = int_arg(optarg, 0, 1024, &workers); break;
        case 'c': ok = int_arg(optarg, 1, CONCURRENCY_MAX, &concurrency); break;
        case 'm': ok = int_arg(optarg, 1, CLAIM_MAX, &max); break;
        case 'd': ok = int_arg(optarg, 1, 3600, &seconds); break;
        case 'n': ok = int_arg(optarg, 1, 10000000, &rounds); break;
        default: ok = false;
        }
        if (!ok) {
            usage();
            return 2;
        }
    }
    if (argc - optind != 2) {
        usage();
        return 2;
    }
    const char *mode = argv[optind], *token = getenv("DROVER_TOKEN");
    if (token == NULL || token[0] == '\0') {
        fprintf(stderr, "e2e: DROVER_TOKEN is not set\n");
        return 2;
    }
    struct target t;
    if (target_init(&t, argv[optind + 1], token) < 0) {
        fprintf(stderr, "e2e: cannot resolve '%s'\n", argv[optind + 1]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(mode, "e2e") == 0)
        return run_e2e(&t, submitters, workers, concurrency, max, seconds);
    if (strcmp(mode, "wake") == 0)
        return run_wake(&t, rounds);
    usage();
    return 2;
}
