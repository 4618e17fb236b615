/*
 * serve.c - `drover serve`: load the config, open the store, start the
 * writer and the HTTP server, then wait for signals.
 *
 * Signals are blocked in every thread and taken by the main thread with
 * sigwait(), so no handler runs in signal context: SIGHUP reopens the log,
 * SIGTERM and SIGINT drain (stop accepting, let requests in flight finish,
 * commit what the writer holds) and close the store cleanly.
 */
#include "serve.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "api/api.h"
#include "app.h"
#include "artifacts.h"
#include "auth.h"
#include "config.h"
#include "deliver.h"
#include "dispatch.h"
#include "http/http.h"
#include "idempotency.h"
#include "log.h"
#include "outbound.h"
#include "sign.h"
#include "retention.h"
#include "store/store.h"
#include "store/writer.h"
#include "timeutil.h"

#define EXIT_USAGE       2
#define ADMIN_TOKEN_FILE "admin.token"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: drover serve [options]\n"
            "\n"
            "Run the drover server.\n"
            "\n"
            "options:\n"
            "  --listen HOST:PORT      address to listen on (port 0: any free port,\n"
            "                          logged in the \"listening\" line) [server.listen]\n"
            "  --data DIR              data directory, created if missing [server.data]\n"
            "  --config FILE           INI config file (see drover.conf.example)\n"
            "  --log-level LEVEL       debug, info, warn or error [log.level]\n"
            "  --log-file PATH         log file, '-' for stderr; reopened on SIGHUP [log.file]\n"
            "  --allow-target CIDR     let outbound requests reach CIDR (repeatable)\n"
            "  --set KEY=VALUE         set any config field, e.g. --set http.max_body_bytes=2MiB\n"
            "  --check-config          validate the configuration and exit\n"
            "  --example-config        print a commented config file with every field\n"
            "  -h, --help              this help\n"
            "\n"
            "Precedence: defaults < config file < environment (DROVER_*) < flags.\n"
            "When no token is configured, an admin token is generated once and kept in\n"
            "DATA/admin.token.\n"
            "\n"
            "signals: SIGTERM/SIGINT drain and stop; SIGHUP reopens the log file.\n"
            "exit codes: 0 clean stop or valid config; 1 runtime failure; 2 usage or config "
            "error.\n");
}

struct serve_flags {
    const char *config_path;
    bool check_config;
    bool example_config;
};

/*
 * Parse flags in two passes: the first finds --config (the file loads before
 * the environment, flags after both); the second applies the rest.
 */
static int parse_flags(int argc, char **argv, struct config *cfg, struct serve_flags *flags)
{
    enum {
        OPT_LISTEN = 256,
        OPT_DATA,
        OPT_CONFIG,
        OPT_LOG_LEVEL,
        OPT_LOG_FILE,
        OPT_ALLOW,
        OPT_SET,
        OPT_CHECK,
        OPT_EXAMPLE
    };
    static const struct option options[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"data", required_argument, NULL, OPT_DATA},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"log-file", required_argument, NULL, OPT_LOG_FILE},
        {"allow-target", required_argument, NULL, OPT_ALLOW},
        {"set", required_argument, NULL, OPT_SET},
        {"check-config", no_argument, NULL, OPT_CHECK},
        {"example-config", no_argument, NULL, OPT_EXAMPLE},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct errmsg err;
    int c;
    for (int pass = 0; pass < 2; pass++) {
        optind = 1;
        opterr = pass == 0;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
            const char *key = NULL, *value = optarg, *origin = NULL;
            char buf[256];
            if (c == '?')
                return -1;
            if (pass == 0) {
                if (c == 'h') {
                    usage(stdout);
                    exit(0);
                }
                if (c == OPT_CONFIG)
                    flags->config_path = optarg;
                if (c == OPT_CHECK)
                    flags->check_config = true;
                if (c == OPT_EXAMPLE)
                    flags->example_config = true;
                continue;
            }
            switch (c) {
            case OPT_LISTEN: key = "server.listen", origin = "--listen"; break;
            case OPT_DATA: key = "server.data", origin = "--data"; break;
            case OPT_LOG_LEVEL: key = "log.level", origin = "--log-level"; break;
            case OPT_LOG_FILE: key = "log.file", origin = "--log-file"; break;
            case OPT_ALLOW: key = "outbound.allow_target", origin = "--allow-target"; break;
            case OPT_SET: {
                const char *eq = strchr(optarg, '=');
                if (eq == NULL || (size_t)(eq - optarg) >= sizeof(buf)) {
                    fprintf(stderr, "drover serve: --set takes KEY=VALUE, not '%s'\n", optarg);
                    return -1;
                }
                snprintf(buf, sizeof(buf), "%.*s", (int)(eq - optarg), optarg);
                key = buf;
                value = eq + 1;
                origin = "--set";
                break;
            }
            default: continue;
            }
            if (config_set(cfg, key, value, origin, &err) < 0) {
                fprintf(stderr, "drover serve: %s\n", err.text);
                return -1;
            }
        }
        if (pass == 0) {
            if (optind < argc) {
                fprintf(stderr, "drover serve: unexpected argument '%s'\n", argv[optind]);
                return -1;
            }
            if (flags->example_config)
                return 0;
            if (flags->config_path && config_load_file(cfg, flags->config_path, &err) < 0) {
                fprintf(stderr, "drover serve: %s\n", err.text);
                return -1;
            }
            if (config_load_env(cfg, NULL, &err) < 0) {
                fprintf(stderr, "drover serve: %s\n", err.text);
                return -1;
            }
        }
    }
    if (config_validate(cfg, &err) < 0) {
        fprintf(stderr, "drover serve: %s\n", err.text);
        return -1;
    }
    return 0;
}

/* Refuse a second server on the same data directory. The lock dies with the process. */
static int lock_data_dir(const char *dir, int *fd_out)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/drover.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        log_printf(LOG_ERROR, "cannot open '%s': %s", path, strerror(errno));
        return -DRV_EIO;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        log_printf(LOG_ERROR, "another drover serve is using '%s'", dir);
        close(fd);
        return -DRV_EIO;
    }
    *fd_out = fd;
    return 0;
}

/*
 * With no token configured, the server would be unusable: make an admin
 * token once, keep it in DATA/admin.token (mode 0600) and reuse it later.
 */
static int ensure_admin_token(const char *dir, struct auth *auth)
{
    char path[4096], token[80];
    snprintf(path, sizeof(path), "%s/%s", dir, ADMIN_TOKEN_FILE);
    FILE *f = fopen(path, "r");
    if (f) {
        bool ok = fgets(token, sizeof(token), f) != NULL;
        fclose(f);
        token[strcspn(token, "\r\n")] = '\0';
        if (ok && strlen(token) >= 16)
            return auth_add(auth, ROLE_ADMIN, token);
    }
    unsigned char raw[24];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -DRV_EINTERNAL;
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(token + 2 * i, 3, "%02x", raw[i]);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || dprintf(fd, "%s\n", token) < 0 || fsync(fd) < 0) {
        log_printf(LOG_ERROR, "cannot write '%s': %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -DRV_EIO;
    }
    close(fd);
    struct log_line l;
    if (log_begin(&l, LOG_WARN, "no tokens configured: generated an admin token")) {
        log_str(&l, "file", path);
        log_str(&l, "hint", "export DROVER_TOKEN=$(cat <file>)");
        log_end(&l);
    }
    return auth_add(auth, ROLE_ADMIN, token);
}

/* A timer fired: check a job's deadlines, or answer a claim that waited long enough. */
static void on_timer(void *ctx, enum timer_kind kind, const char *key)
{
    struct app *app = ctx;
    switch (kind) {
    case TIMER_JOB: job_deadline_fire(app->writer, key); break;
    case TIMER_WAITER: claims_expire(app->claims, strtoull(key, NULL, 10)); break;
    case TIMER_LOCK: job_lock_expiry_fire(app->writer, key); break;
    case TIMER_SWEEP:
        if (strcmp(key, RETENTION_SWEEP_KEY) == 0)
            retention_sweep_fire(app->writer, app->timers, app->store, app->cfg->data_dir,
                                 deliverer_forget_jobs, app->deliverer);
        else
            idem_sweep_fire(app->writer, app->timers, app->cfg->idempotency_ttl_s * 1000LL);
        break;
    case TIMER_DISPATCH: dispatcher_fire(app->dispatcher, key); break;
    }
}

static void arm_job(void *arg, const char *id, int64_t due_ms)
{
    timers_add(arg, due_ms, TIMER_JOB, id);
}

/*
 * The secret that signs deliveries to jobs' own webhook_url: webhooks.secret,
 * else the one kept in DATA/webhook.secret, generated the first time.
 */
static int webhook_secret(const struct config *cfg, char *out, size_t size)
{
    char path[4096];
    if (cfg->webhook_secret && cfg->webhook_secret[0]) {
        snprintf(out, size, "%s", cfg->webhook_secret);
        return 0;
    }
    snprintf(path, sizeof(path), "%s/webhook.secret", cfg->data_dir);
    FILE *f = fopen(path, "r");
    if (f) {
        bool ok = fgets(out, (int)size, f) != NULL;
        fclose(f);
        out[strcspn(out, "\r\n")] = '\0';
        if (ok && out[0])
            return 0;
    }
    if (size < SIGN_SECRET_GEN_LEN || sign_secret_generate(out) < 0)
        return -DRV_EINTERNAL;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || dprintf(fd, "%s\n", out) < 0 || fsync(fd) < 0) {
        log_printf(LOG_ERROR, "cannot write '%s': %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -DRV_EIO;
    }
    close(fd);
    log_printf(LOG_INFO, "generated the webhook signing secret in %s", path);
    return 0;
}

/* The deliverer: after the writer (its results are ops) and the outbound engine. */
static int start_delivering(const struct config *cfg, struct app *app)
{
    char secret[256];
    struct errmsg err = {.field = ""};
    struct deliverer_config dc = {.store = app->store,
                                  .writer = app->writer,
                                  .outbound = app->webhooks_out,
                                  .subs = app->subs,
                                  .policies = app->policies,
                                  .data_dir = cfg->data_dir,
                                  .webhook_secret = secret,
                                  .give_up_ms = cfg->webhook_give_up_s * 1000,
                                  .max_in_flight = cfg->webhook_max_in_flight,
                                  .breaker_after = cfg->webhook_breaker_after,
                                  .breaker_ms = cfg->webhook_breaker_ms,
                                  .nice = cfg->webhook_nice,
                                  .rate_under_load = cfg->webhook_rate_under_load};
    int rc = webhook_secret(cfg, secret, sizeof(secret));
    if (rc == 0)
        rc = deliverer_parse_schedule(cfg->webhook_schedule, &dc, &err);
    if (rc == 0)
        rc = deliverer_start(&dc, &app->deliverer);
    OPENSSL_cleanse(secret, sizeof(secret));
    return rc;
}

/* The outbound engine and the dispatcher (not started: see start_dispatching()). */
static int start_outbound(const struct config *cfg, struct app *app)
{
    struct outbound_config oc;
    struct errmsg err = {.field = ""};
    int rc = outbound_config_from(&oc, cfg, &err);
    if (rc == 0)
        rc = outbound_new(&oc, &app->outbound);
    /* Webhooks are background work: their own engine, at the deliverer's priority. */
    oc.nice = cfg->webhook_nice;
    oc.thread_name = "drover-webhooks";
    if (rc == 0)
        rc = outbound_new(&oc, &app->webhooks_out);
    struct dispatcher_config dc = {.store = app->store,
                                   .writer = app->writer,
                                   .claims = app->claims,
                                   .timers = app->timers,
                                   .policies = app->policies,
                                   .outbound = app->outbound};
    if (rc == 0)
        rc = dispatcher_new(&dc, &app->dispatcher);
    if (rc < 0)
        log_printf(LOG_ERROR, "cannot start the outbound engine: %s",
                   err.text[0] ? err.text : err_name(rc));
    return rc;
}

/*
 * Once the server listens (its port is known): callback URLs, and artifact
 * URLs in job.succeeded webhooks, start with server.public_url, or http://
 * and the bound address.
 */
static int start_dispatching(const struct config *cfg, struct app *app, const char *bound)
{
    char url[1100];
    if (cfg->public_url && cfg->public_url[0])
        snprintf(url, sizeof(url), "%s", cfg->public_url);
    else
        snprintf(url, sizeof(url), "http://%s", bound);
    deliverer_set_public_url(app->deliverer, url);
    return dispatcher_start(app->dispatcher, url);
}

/*
 * The store, the policy and subscription caches, the writer, the timers and the waiting
 * claims, in dependency order. Deadlines are re-armed from the store, so
 * those that passed while the server was down fire at once.
 */
static int start_core(const struct config *cfg, struct app *app)
{
    const struct store_engine *engine = store_engine_find(cfg->engine);
    struct store_options sopt = {.data_dir = cfg->data_dir,
                                 .readers = cfg->readers,
                                 .checkpoint_pages = cfg->checkpoint_pages};
    int rc = engine ? store_open(engine, &sopt, &app->store) : -DRV_ECONFIG;
    if (rc == 0)
        rc = artifact_root_init(cfg->data_dir);
    if (rc == 0)
        rc = policy_cache_new(&app->policies);
    if (rc == 0)
        rc = policy_cache_fill(app->policies, app->store);
    if (rc == 0)
        rc = sub_cache_new(&app->subs);
    if (rc == 0)
        rc = sub_cache_fill(app->subs, app->store);
    if (rc == 0)
        rc = job_env_init(&app->env, app->policies);
    if (rc == 0)
        rc = writer_start(app->store, cfg->batch_max,
                          &(struct writer_hooks){.env = &app->env,
                                                 .before_commit = job_env_before_commit,
                                                 .after_batch = job_env_after_batch,
                                                 .idem_ttl_ms = cfg->idempotency_ttl_s * 1000LL},
                          &app->writer);
    if (rc == 0)
        rc = timers_start(on_timer, app, &app->timers);
    if (rc == 0)
        rc = claims_new(app->writer, app->timers, &app->claims);
    if (rc == 0)
        rc = start_outbound(cfg, app);
    if (rc == 0)
        rc = start_delivering(cfg, app);
    if (rc < 0)
        return rc;
    /* Published to the writer thread through its queue's lock with the first op. */
    app->env.timers = app->timers;
    app->env.claims = app->claims;
    app->env.dispatcher = app->dispatcher;
    app->env.deliverer = app->deliverer;
    app->env.subs = app->subs;
    rc = store_due_list(app->store, arm_job, app->timers);
    struct lock_list locks = {0};
    if (rc == 0)
        rc = store_lock_list(app->store, &locks);
    for (int i = 0; i < locks.n; i++) {
        if (locks.locks[i].expires_at_ms)
            timers_add(app->timers, locks.locks[i].expires_at_ms, TIMER_LOCK, locks.locks[i].key);
    }
    lock_list_release(&locks);
    if (rc == 0) {
        log_printf(LOG_INFO, "armed %d deadlines from the store", timers_pending(app->timers));
        timers_add(app->timers, time_now_ms(), TIMER_SWEEP, "idempotency");
        timers_add(app->timers, time_now_ms(), TIMER_SWEEP, RETENTION_SWEEP_KEY);
    }
    return rc;
}

static void stop_core(struct app *app)
{
    timers_stop(app->timers);
    deliverer_stop(app->deliverer);
    /* Dispatch and delivery results still arriving become ops: the writer is still up. */
    outbound_free(app->outbound);
    app->outbound = NULL;
    outbound_free(app->webhooks_out);
    app->webhooks_out = NULL;
    writer_stop(app->writer);
    app->writer = NULL;
    timers_free(app->timers);
    claims_free(app->claims);
    dispatcher_free(app->dispatcher);
    deliverer_free(app->deliverer);
    job_env_release(&app->env);
    policy_cache_free(app->policies);
    sub_cache_free(app->subs);
    store_close(app->store);
}

/* Wait until no request is in flight, up to timeout_ms. */
static void wait_idle(struct http_server *http, int64_t timeout_ms)
{
    int64_t deadline = time_mono_ms() + timeout_ms;
    while (http_inflight(http) > 0 && time_mono_ms() < deadline) {
        struct timespec ts = {.tv_nsec = 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static int run(const struct config *cfg)
{
    int rc, lock_fd = -1;
    struct auth *auth = NULL;
    struct app app = {.cfg = cfg};
    struct http_server *http = NULL;
    sigset_t signals;

    /* Block before any thread starts, so every thread inherits the mask. */
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (mkdir(cfg->data_dir, 0700) < 0 && errno != EEXIST) {
        log_printf(LOG_ERROR, "cannot create '%s': %s", cfg->data_dir, strerror(errno));
        return 1;
    }
    rc = lock_data_dir(cfg->data_dir, &lock_fd);
    if (rc < 0)
        goto out;
    rc = auth_new(cfg, &auth);
    if (rc == 0 && auth_count(auth) == 0)
        rc = ensure_admin_token(cfg->data_dir, auth);
    if (rc < 0)
        goto out;

    rc = start_core(cfg, &app);
    if (rc < 0)
        goto out;

    struct http_options hopt = {
        .listen = cfg->listen,
        .threads = cfg->threads,
        .connection_limit = cfg->connection_limit,
        .connection_timeout_s = cfg->connection_timeout_s,
        .max_body_bytes = cfg->max_body_bytes,
        .max_upload_bytes = cfg->artifact_max_bytes,
        .max_header_bytes = cfg->max_header_bytes,
    };
    rc = http_start(&hopt, api_routes, api_n_routes, auth, &app, &http);
    if (rc == 0)
        rc = start_dispatching(cfg, &app, http_bound_address(http));
    if (rc < 0)
        goto out;

    struct log_line l;
    if (log_begin(&l, LOG_INFO, "listening")) {
        char url[128];
        snprintf(url, sizeof(url), "http://%s", http_bound_address(http));
        log_str(&l, "addr", http_bound_address(http));
        log_str(&l, "url", url);
        log_str(&l, "data", cfg->data_dir);
        log_str(&l, "store", cfg->engine);
        log_str(&l, "event_loop", http_event_loop(http));
        log_end(&l);
    }

    for (;;) {
        int sig;
        if (sigwait(&signals, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            int r = log_reopen();
            log_printf(r == 0 ? LOG_INFO : LOG_ERROR,
                       r == 0 ? "log reopened" : "log reopen failed");
            continue;
        }
        if (log_begin(&l, LOG_INFO, "shutting down")) {
            log_str(&l, "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            log_int(&l, "inflight", http_inflight(http));
            log_end(&l);
        }
        break;
    }

    /* Drain: no new connections or requests; waiting claims answer empty;
     * let requests in flight finish. */
    http_quiesce(http);
    claims_close(app.claims);
    wait_idle(http, (int64_t)cfg->drain_timeout_s * 1000);
    /* No more deadlines fire (the store keeps them for the next start); the
     * writer commits what it still holds and its requests resume and reply. */
    timers_stop(app.timers);
    deliverer_stop(app.deliverer);
    outbound_free(app.outbound);
    app.outbound = NULL;
    outbound_free(app.webhooks_out);
    app.webhooks_out = NULL;
    writer_stop(app.writer);
    app.writer = NULL;
    wait_idle(http, 2000);
    rc = 0;
out:
    http_stop(http);
    stop_core(&app);
    auth_free(auth);
    if (lock_fd >= 0)
        close(lock_fd);
    log_printf(rc == 0 ? LOG_INFO : LOG_ERROR, rc == 0 ? "stopped" : "failed to start: %s",
               err_name(rc));
    return rc == 0 ? 0 : 1;
}

int serve_main(int argc, char **argv)
{
    struct config cfg;
    struct serve_flags flags = {0};
    config_init(&cfg);
    if (parse_flags(argc, argv, &cfg, &flags) < 0) {
        config_release(&cfg);
        return EXIT_USAGE;
    }
    if (flags.example_config) {
        config_write_example(stdout);
        config_release(&cfg);
        return 0;
    }
    if (flags.check_config) {
        printf("config ok\n");
        config_release(&cfg);
        return 0;
    }
    if (log_open(cfg.log_file, cfg.log_level) < 0) {
        fprintf(stderr, "drover serve: cannot open log file '%s'\n", cfg.log_file);
        config_release(&cfg);
        return 1;
    }
    int rc = run(&cfg);
    log_close();
    config_release(&cfg);
    return rc;
}
