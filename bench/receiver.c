/*
 * receiver.c - a webhook receiver for bench/run-webhooks.sh: answers every
 * POST with 204 as fast as libmicrohttpd can (epoll, one thread per core),
 * and counts what it got. It checks nothing but the presence of the
 * Standard Webhooks headers: the bench measures drover's sending, and
 * tests/integration/test_webhooks.py checks the signatures.
 *
 *   receiver PORT COUNT_FILE
 *
 * PORT 0 picks a free port. Every 100 ms it writes "requests
 * signed_requests port" to COUNT_FILE; it runs until SIGTERM or SIGINT.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>

static atomic_ulong requests, signed_requests;
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *data,
                              size_t *size, void **state)
{
    (void)cls, (void)url, (void)method, (void)version, (void)data;
    if (*state == NULL) { /* headers arrived: wait for the body */
        *state = conn;
        return MHD_YES;
    }
    if (*size) { /* a piece of the body: drop it */
        *size = 0;
        return MHD_YES;
    }
    atomic_fetch_add(&requests, 1);
    if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "webhook-signature") &&
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "webhook-id"))
        atomic_fetch_add(&signed_requests, 1);
    struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    enum MHD_Result rc = MHD_queue_response(conn, 204, r);
    MHD_destroy_response(r);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: receiver PORT COUNT_FILE\n");
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG, (uint16_t)atoi(argv[1]), NULL, NULL,
        answer, NULL, MHD_OPTION_THREAD_POOL_SIZE, 2, MHD_OPTION_CONNECTION_LIMIT, 4096,
        MHD_OPTION_CONNECTION_TIMEOUT, 60, MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "receiver: cannot listen on port %s\n", argv[1]);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    unsigned port = info ? info->port : 0;
    /* Written beside and renamed over: a reader never sees the file half written. */
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", argv[2]);
    while (!stop) {
        struct timespec ts = {.tv_nsec = 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        FILE *f = fopen(tmp, "w");
        if (f) {
            fprintf(f, "%lu %lu %u\n", atomic_load(&requests), atomic_load(&signed_requests), port);
            if (fclose(f) == 0)
                rename(tmp, argv[2]);
        }
    }
    MHD_stop_daemon(d);
    return 0;
}
