/*
 * test_config.c - unit tests for src/config.c: defaults, each field type's
 * parsing, ranges and their exact messages, unknown sections and keys, the
 * environment through a fake getenv, precedence, repeated tokens and
 * targets, release, and the example file against drover.conf.example.
 *
 * Run from the project root (make test-unit does): EXAMPLE_PATH is relative.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"

#ifndef EXAMPLE_PATH
#define EXAMPLE_PATH "drover.conf.example"
#endif

#define ADMIN_SECRET  "admin-secret-0123456789"
#define SUBMIT_SECRET "submit-secret-0123456789"
#define WORKER_SECRET "worker-secret-0123456789"
#define READ_SECRET   "read-secret-0123456789"

/* A scratch directory per run; each test rewrites drover.conf in it. */
static char conf_dir[] = "/tmp/drover-test-config-XXXXXX";
static char conf_path[sizeof(conf_dir) + sizeof("/drover.conf")];

static int group_setup(void **state)
{
    (void)state;
    if (!mkdtemp(conf_dir))
        return -1;
    snprintf(conf_path, sizeof(conf_path), "%s/drover.conf", conf_dir);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    unlink(conf_path);
    return rmdir(conf_dir);
}

static void write_conf_bytes(const char *text, size_t len)
{
    FILE *f = fopen(conf_path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void write_conf(const char *text)
{
    write_conf_bytes(text, strlen(text));
}

/* config_init(), then load text as the config file. */
static int load(struct config *cfg, const char *text, struct errmsg *err)
{
    config_init(cfg);
    write_conf(text);
    return config_load_file(cfg, conf_path, err);
}

/* Loading text fails with "<path>:" followed by want. */
static void assert_load_fails(const char *text, const char *want)
{
    struct config cfg;
    struct errmsg err = {0};
    char full[512];

    snprintf(full, sizeof(full), "%s:%s", conf_path, want);
    assert_int_equal(load(&cfg, text, &err), -DRV_ECONFIG);
    assert_string_equal(err.text, full);
    config_release(&cfg);
}

/* config_set(key, value) on defaults fails with exactly want. */
static void assert_set_fails(const char *key, const char *value, const char *want)
{
    struct config cfg;
    struct errmsg err = {0};

    config_init(&cfg);
    assert_int_equal(config_set(&cfg, key, value, NULL, &err), -DRV_ECONFIG);
    assert_string_equal(err.text, want);
    config_release(&cfg);
}

static void assert_defaults(const struct config *cfg)
{
    assert_string_equal(cfg->listen, "127.0.0.1:8080");
    assert_string_equal(cfg->data_dir, "./drover-data");
    assert_int_equal(cfg->threads, 2);
    assert_int_equal(cfg->drain_timeout_s, 10);
    assert_int_equal(cfg->max_body_bytes, 1048576);
    assert_int_equal(cfg->max_header_bytes, 8192);
    assert_int_equal(cfg->connection_limit, 1024);
    assert_int_equal(cfg->connection_timeout_s, 120);
    assert_int_equal(cfg->idempotency_ttl_s, 86400);
    assert_string_equal(cfg->engine, "sqlite");
    assert_int_equal(cfg->readers, 4);
    assert_int_equal(cfg->batch_max, 4096);
    assert_int_equal(cfg->checkpoint_pages, 4000);
    assert_string_equal(cfg->log_file, "-");
    assert_int_equal(cfg->log_level, LOG_INFO);
    assert_int_equal(cfg->outbound_max_connections, 64);
    assert_int_equal(cfg->outbound_max_host_connections, 8);
    assert_int_equal(cfg->outbound_connect_timeout_ms, 5000);
    assert_int_equal(cfg->outbound_timeout_ms, 15000);
    assert_int_equal(cfg->artifact_max_bytes, 16 * 1024 * 1024);
    assert_string_equal(cfg->webhook_secret, "");
    assert_string_equal(cfg->webhook_schedule, "5s,30s,2m,10m,30m,1h,3h,6h");
    assert_int_equal(cfg->webhook_give_up_s, 3 * 24 * 3600);
    assert_int_equal(cfg->webhook_max_in_flight, 256);
    assert_int_equal(cfg->webhook_breaker_after, 5);
    assert_int_equal(cfg->webhook_breaker_ms, 30000);
    assert_int_equal(cfg->webhook_nice, 10);
    assert_int_equal(cfg->webhook_rate_under_load, 6000);
}

/* ---- a fake environment: NULL-terminated name, value pairs ---- */

static const char *const *fake_env;

static const char *fake_getenv(const char *name)
{
    for (const char *const *p = fake_env; p && *p; p += 2)
        if (strcmp(p[0], name) == 0)
            return p[1];
    return NULL;
}

static int load_env(struct config *cfg, const char *const *env, struct errmsg *err)
{
    fake_env = env;
    return config_load_env(cfg, fake_getenv, err);
}

static void assert_env_fails(const char *const *env, const char *want)
{
    struct config cfg;
    struct errmsg err = {0};

    config_init(&cfg);
    assert_int_equal(load_env(&cfg, env, &err), -DRV_ECONFIG);
    assert_string_equal(err.text, want);
    config_release(&cfg);
}

/* ---- defaults and release ---- */

static void test_defaults(void **state)
{
    struct config cfg;
    struct errmsg err = {0};
    (void)state;

    config_init(&cfg);
    assert_defaults(&cfg);
    assert_int_equal(cfg.n_tokens, 0);
    assert_int_equal(cfg.n_allow_targets, 0);
    assert_int_equal(config_validate(&cfg, &err), 0);
    config_release(&cfg);
}

static void test_release_twice(void **state)
{
    struct config cfg;
    struct errmsg err;
    (void)state;

    config_init(&cfg);
    assert_int_equal(config_set(&cfg, "auth.admin_token", ADMIN_SECRET, NULL, &err), 0);
    assert_int_equal(config_set(&cfg, "auth.read_token", READ_SECRET, NULL, &err), 0);
    assert_int_equal(config_set(&cfg, "outbound.allow_target", "10.0.0.0/8", NULL, &err), 0);
    config_release(&cfg);
    assert_null(cfg.listen);
    assert_null(cfg.data_dir);
    assert_null(cfg.engine);
    assert_null(cfg.log_file);
    assert_int_equal(cfg.n_tokens, 0);
    assert_null(cfg.tokens[0].secret);
    assert_int_equal(cfg.n_allow_targets, 0);
    assert_null(cfg.allow_targets[0]);
    config_release(&cfg);

    /* A zeroed config, never initialised, releases cleanly too. */
    memset(&cfg, 0, sizeof(cfg));
    config_release(&cfg);
}

/* ---- the file, field type by field type ---- */

static void test_file_every_type(void **state)
{
    struct config cfg;
    struct errmsg err = {0};
    (void)state;

    assert_int_equal(load(&cfg,
                          "# a comment\n"
                          "; another comment\n"
                          "\n"
                          "[server]\n"
                          "listen = 0.0.0.0:9090\n"
                          "data=/var/lib/drover\n"
                          "    threads = 8\n"
                          "drain_timeout_s = 0\n"
                          "[http]\n"
                          "max_body_bytes = 2097152\n"
                          "max_header_bytes = 8KiB\n"
                          "connection_limit = 100000\n"
                          "connection_timeout_s = 1 ; an inline comment\n"
                          "[store]\n"
                          "engine = sqlite\n"
                          "readers = 1\n"
                          "batch_max = 65536\n"
                          "[log]\n"
                          "file = /var/log/drover.log\n"
                          "level = debug\n"
                          "[auth]\n"
                          "admin_token = " ADMIN_SECRET "\n"
                          "[outbound]\n"
                          "allow_target = 10.0.0.0/8\n"
                          "max_connections = 4096\n"
                          "max_host_connections = 1\n"
                          "connect_timeout_ms = 250\n"
                          "timeout_ms = 1000\n",
                          &err),
                     0);
    assert_string_equal(cfg.listen, "0.0.0.0:9090");
    assert_string_equal(cfg.data_dir, "/var/lib/drover");
    assert_int_equal(cfg.threads, 8);
    assert_int_equal(cfg.drain_timeout_s, 0);
    assert_int_equal(cfg.max_body_bytes, 2097152);
    assert_int_equal(cfg.max_header_bytes, 8192);
    assert_int_equal(cfg.connection_limit, 100000);
    assert_int_equal(cfg.connection_timeout_s, 1);
    assert_string_equal(cfg.engine, "sqlite");
    assert_int_equal(cfg.readers, 1);
    assert_int_equal(cfg.batch_max, 65536);
    assert_string_equal(cfg.log_file, "/var/log/drover.log");
    assert_int_equal(cfg.log_level, LOG_DEBUG);
    assert_int_equal(cfg.n_tokens, 1);
    assert_int_equal(cfg.tokens[0].role, ROLE_ADMIN);
    assert_string_equal(cfg.tokens[0].secret, ADMIN_SECRET);
    assert_int_equal(cfg.n_allow_targets, 1);
    assert_string_equal(cfg.allow_targets[0], "10.0.0.0/8");
    assert_int_equal(cfg.outbound_max_connections, 4096);
    assert_int_equal(cfg.outbound_max_host_connections, 1);
    assert_int_equal(cfg.outbound_connect_timeout_ms, 250);
    assert_int_equal(cfg.outbound_timeout_ms, 1000);
    assert_int_equal(config_validate(&cfg, &err), 0);
    config_release(&cfg);
}

static void test_file_bom_crlf_and_empty(void **state)
{
    struct config cfg;
    struct errmsg err = {0};
    (void)state;

    assert_int_equal(load(&cfg, "\xEF\xBB\xBF[server]\r\nthreads = 3\r\n\r\n", &err), 0);
    assert_int_equal(cfg.threads, 3);
    config_release(&cfg);

    assert_int_equal(load(&cfg, "", &err), 0);
    assert_defaults(&cfg);
    config_release(&cfg);

    /* A last line without its newline still counts. */
    assert_int_equal(load(&cfg, "[store]\nreaders = 9", &err), 0);
    assert_int_equal(cfg.readers, 9);
    config_release(&cfg);
}

static void test_listen_forms(void **state)
{
    static const char *const good[] = {"127.0.0.1:0", "localhost:8080", "[::1]:8080", "[::]:65535",
                                       "0.0.0.0:1"};
    struct config cfg;
    struct errmsg err = {0};
    (void)state;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        config_init(&cfg);
        assert_int_equal(config_set(&cfg, "server.listen", good[i], NULL, &err), 0);
        assert_string_equal(cfg.listen, good[i]);
        config_release(&cfg);
    }
    assert_set_fails("server.listen", "8080",
                     "server.listen: '8080' is not HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)");
    assert_set_fails("server.listen", ":8080",
                     "server.listen: ':8080' is not HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)");
    assert_set_fails("server.listen", "::1:8080",
                     "server.listen: '::1:8080' is not HOST:PORT (e.g. 127.0.0.1:8080 or "
                     "[::1]:8080)");
    assert_set_fails("server.listen", "[::1]x:8080",
                     "server.listen: '[::1]x:8080' is not HOST:PORT (e.g. 127.0.0.1:8080 or "
                     "[::1]:8080)");
    assert_set_fails("server.listen", "localhost:http",
                     "server.listen: 'localhost:http' is not HOST:PORT (e.g. 127.0.0.1:8080 or "
                     "[::1]:8080)");
    assert_set_fails("server.listen", "localhost:65536",
                     "server.listen: 'localhost:65536' has a port outside 0..65535");
    assert_set_fails("server.listen", "localhost:123456",
                     "server.listen: 'localhost:123456' has a port outside 0..65535");
    assert_set_fails("server.listen", "", "server.listen: must not be empty");
}

/* ---- ranges, with the exact messages ---- */

static void test_range_errors(void **state)
{
    (void)state;

    assert_load_fails("[http]\nmax_body_bytes = 99\n",
                      "2: http.max_body_bytes: 99 is below the minimum 1024");
    assert_load_fails("[http]\nmax_body_bytes = 67108865\n",
                      "2: http.max_body_bytes: 67108865 is above the maximum 67108864");
    assert_load_fails("[server]\nthreads = 0\n", "2: server.threads: 0 is below the minimum 1");
    assert_load_fails("[server]\nthreads = 65\n", "2: server.threads: 65 is above the maximum 64");
    assert_load_fails("[server]\ndrain_timeout_s = -1\n",
                      "2: server.drain_timeout_s: -1 is below the minimum 0");
    assert_load_fails("[server]\ndrain_timeout_s = 3601\n",
                      "2: server.drain_timeout_s: 3601 is above the maximum 3600");
    assert_load_fails("[http]\nmax_header_bytes = 1023\n",
                      "2: http.max_header_bytes: 1023 is below the minimum 1024");
    assert_load_fails("[http]\nmax_header_bytes = 65537\n",
                      "2: http.max_header_bytes: 65537 is above the maximum 65536");
    assert_load_fails("[http]\nconnection_limit = 100001\n",
                      "2: http.connection_limit: 100001 is above the maximum 100000");
    assert_load_fails("[http]\nconnection_timeout_s = 0\n",
                      "2: http.connection_timeout_s: 0 is below the minimum 1");
    assert_load_fails("[http]\nidempotency_ttl_s = 0\n",
                      "2: http.idempotency_ttl_s: 0 is below the minimum 1");
    assert_load_fails("[http]\nidempotency_ttl_s = 2592001\n",
                      "2: http.idempotency_ttl_s: 2592001 is above the maximum 2592000");
    assert_load_fails("[store]\nreaders = 65\n", "2: store.readers: 65 is above the maximum 64");
    assert_load_fails("[store]\nbatch_max = 65537\n",
                      "2: store.batch_max: 65537 is above the maximum 65536");
    assert_load_fails("[outbound]\nmax_connections = 0\n",
                      "2: outbound.max_connections: 0 is below the minimum 1");
    assert_load_fails("[outbound]\nmax_connections = 4097\n",
                      "2: outbound.max_connections: 4097 is above the maximum 4096");
    assert_load_fails("[outbound]\nmax_host_connections = 0\n",
                      "2: outbound.max_host_connections: 0 is below the minimum 1");
    assert_load_fails("[outbound]\nmax_host_connections = 1025\n",
                      "2: outbound.max_host_connections: 1025 is above the maximum 1024");
    assert_load_fails("[outbound]\nconnect_timeout_ms = 0\n",
                      "2: outbound.connect_timeout_ms: 0 is below the minimum 1");
    assert_load_fails("[outbound]\nconnect_timeout_ms = 600001\n",
                      "2: outbound.connect_timeout_ms: 600001 is above the maximum 600000");
    assert_load_fails("[outbound]\ntimeout_ms = 0\n",
                      "2: outbound.timeout_ms: 0 is below the minimum 1");
    assert_load_fails("[outbound]\ntimeout_ms = 3600001\n",
                      "2: outbound.timeout_ms: 3600001 is above the maximum 3600000");
    assert_load_fails("[outbound]\ntimeout_ms = 1s\n",
                      "2: outbound.timeout_ms: '1s' is not a whole number");
    assert_load_fails("[outbound]\ntimeout_ms = 100\ntimeout_ms = 200\n",
                      "3: outbound.timeout_ms: already set on line 2");
}

static void test_range_edges_accepted(void **state)
{
    struct config cfg;
    struct errmsg err = {0};
    (void)state;

    assert_int_equal(load(&cfg,
                          "[server]\nthreads = 64\ndrain_timeout_s = 3600\n"
                          "[http]\nmax_body_bytes = 1024\nmax_header_bytes = 65536\n"
                          "connection_limit = 1\nconnection_timeout_s = 3600\n"
                          "idempotency_ttl_s = 2592000\n"
                          "[store]\nreaders = 64\nbatch_max = 1\n"
                          "[outbound]\nmax_connections = 1\nmax_host_connections = 1024\n"
                          "connect_timeout_ms = 600000\ntimeout_ms = 1\n",
                          &err),
                     0);
    assert_int_equal(cfg.threads, 64);
    assert_int_equal(cfg.drain_timeout_s, 3600);
    assert_int_equal(cfg.max_body_bytes, 1024);
    assert_int_equal(cfg.max_header_bytes, 65536);
    assert_int_equal(cfg.connection_limit, 1);
    assert_int_equal(cfg.connection_timeout_s, 3600);
    assert_int_equal(cfg.idempotency_ttl_s, 2592000);
    assert_int_equal(cfg.readers, 64);
    assert_int_equal(cfg.batch_max, 1);
    assert_int_equal(cfg.outbound_max_connections, 1);
    assert_int_equal(cfg.outbound_max_host_connections, 1024);
    assert_int_equal(cfg.outbound_connect_timeout_ms, 600000);
    assert_int_equal(cfg.outbound_timeout_ms, 1);
    config_release(&cfg);
}

/* Comments and blank lines count: the message names the file's own line. */
static void test_line_numbers(void **state)
{
    struct config cfg;
    struct errmsg err = {0};
    (void)state;

    assert_load_fails("# drover.conf\n"
                      "\n"
                      "[server]\n"
                      "listen = 127.0.0.1:8080\n"
                      "; a comment\n"
                      "threads = 2\n"
                      "\n"
                      "[http]\n"
                      "   # indented comment\n"
                      "connection_limit = 10\n"
                      "\n"
                      "max_body_bytes = 99\n",
                      "12: http.max_body_bytes: 99 is below the minimum 1024");
    assert_int_equal(load(&cfg, "[http]\nmax_body_bytes = 99\n", &err), -DRV_ECONFIG);
    assert_string_equal(err.field, "http.max_body_bytes");
    config_release(&cfg);
}

/* ---- unknown sections and keys, syntax ---- */

static void test_unknown_section_and_key(void **state)
{
    struct config cfg;
    struct errmsg err = {0};
    char want[512];
    (void)state;

    assert_load_fails("[server]\n\nlisen = 127.0.0.1:8080\n", "3: unknown key 'server.lisen'");
    assert_load_fails("[serve]\nlisten = 127.0.0.1:8080\n", "2: unknown section '[serve]'");
    assert_load_fails("[SERVER]\nlisten = 127.0.0.1:8080\n", "2: unknown section '[SERVER]'");
    assert_load_fails("[http]\nlisten = 127.0.0.1:8080\n", "2: unknown key 'http.listen'");
    assert_load_fails("listen = 127.0.0.1:8080\n", "1: 'listen' is outside any [section]");
    assert_load_fails("[auth]\ntoken = " ADMIN_SECRET "\n", "2: unknown key 'auth.token'");

    /* A key set twice is a mistake; the repeatable lists are not. */
    assert_load_fails("[server]\nthreads = 2\n\nthreads = 3\n",
                      "4: server.threads: already set on line 2");
    assert_load_fails("[log]\nlevel = warn\n[log]\nlevel = info\n",
                      "4: log.level: already set on line 2");

    /* Missing file. */
    config_init(&cfg);
    assert_int_equal(config_load_file(&cfg, "/nonexistent/drover.conf", &err), -DRV_ECONFIG);
    assert_string_equal(err.text,
                        "cannot open '/nonexistent/drover.conf': No such file or directory");
    config_release(&cfg);

    /* A directory opens but does not read. */
    config_init(&cfg);
    assert_int_equal(config_load_file(&cfg, conf_dir, &err), -DRV_ECONFIG);
    snprintf(want, sizeof(want), "cannot read '%s': Is a directory", conf_dir);
    assert_string_equal(err.text, want);
    config_release(&cfg);
}

static void test_syntax_errors(void **state)
{
    char text[400];
    (void)state;

    assert_load_fails("[server\nthreads = 2\n", "1: expected '[section]' or 'name = value'");
    assert_load_fails("[server]\nthreads\n", "2: expected '[section]' or 'name = value'");
    /* The first error wins, whichever part finds it. */
    assert_load_fails("[server]\nthreads\nthreads = 0\n",
                      "2: expected '[section]' or 'name = value'");
    assert_load_fails("[server]\nthreads = 0\nthreads\n",
                      "2: server.threads: 0 is below the minimum 1");

    /* An indented line is a line of its own, not a continuation of the last value. */
    assert_load_fails("[server]\ndata = /srv/drover\n    /srv/other\n",
                      "3: expected '[section]' or 'name = value'");

    /* A line too long for the parser is refused, not split in two. */
    memset(text, 'x', sizeof(text));
    memcpy(text, "[auth]\nadmin_token = ", 21);
    memcpy(text + sizeof(text) - 2, "\n", 2);
    struct config cfg;
    struct errmsg err = {0};
    char want[512];
    snprintf(want, sizeof(want), "%s:2: line is longer than ", conf_path);
    assert_int_equal(load(&cfg, text, &err), -DRV_ECONFIG);
    assert_memory_equal(err.text, want, strlen(want));
    assert_int_equal(cfg.n_tokens, 0);
    config_release(&cfg);

    /* A NUL byte would end the line early; refuse it. */
    static const char nul[] = "[server]\nthreads = 2\0 junk\n";
    config_init(&cfg);
    write_conf_bytes(nul, sizeof(nul) - 1);
    assert_int_equal(config_load_file(&cfg, conf_path, &err), -DRV_ECONFIG);
    snprintf(want, sizeof(want), "%s:2: line holds a NUL byte", conf_path);
    assert_string_equal(err.text, want);
    config_release(&cfg);
}

/* ---- values of the wrong type ---- */

static void test_wrong_type(void **state)
{
    (void)state;

    assert_load_fails("[server]\nthreads = two\n",
                      "2: server.threads: 'two' is not a whole number");
    assert_load_fails("[server]\nthreads = 12abc\n",
                      "2: server.threads: '12abc' is not a whole number");
    assert_load_fails("[server]\nthreads = 4.0\n",
                      "2: server.threads: '4.0' is not a whole number");
    assert_load_fails("[server]\nthreads = +4\n", "2: server.threads: '+4' is not a whole number");
    assert_load_fails("[server]\nthreads = 0x10\n",
                      "2: server.threads: '0x10' is not a whole number");
    assert_load_fails("[server]\nthreads = -\n", "2: server.threads: '-' is not a whole number");
    assert_load_fails("[server]\nthreads =\n", "2: server.threads: '' is not a whole number");
    /* Only ';' starts an inline comment. */
    assert_load_fails("[server]\nthreads = 4 # four\n",
                      "2: server.threads: '4 # four' is not a whole number");
    assert_load_fails("[log]\nlevel = verbose\n",
                      "2: log.level: 'verbose' is not one of debug, info, warn, error");
    assert_load_fails("[store]\nengine = postgres\n",
                      "2: store.engine: 'postgres' is not supported yet; the only engine is "
                      "'sqlite'");
    assert_load_fails("[store]\nengine = mysql\n",
                      "2: store.engine: 'mysql' is not a known engine; the only engine is "
                      "'sqlite'");
    assert_load_fails("[server]\ndata =\n", "2: server.data: must not be empty");
    assert_load_fails("[log]\nfile =\n", "2: log.file: must not be empty");

    assert_set_fails("server.data", "/tmp/a\tb", "server.data: contains a control character");
    assert_set_fails("store.engine", "sqlitesqlitesqlitesqlitesqlitesql",
                     "store.engine: 'sqlitesqlitesqlitesqlitesqlitesql' is longer than 32 "
                     "characters");
}

static void test_log_level_parse(void **state)
{
    enum log_level level = LOG_ERROR;
    (void)state;

    assert_int_equal(config_parse_log_level("debug", &level), 0);
    assert_int_equal(level, LOG_DEBUG);
    assert_int_equal(config_parse_log_level("info", &level), 0);
    assert_int_equal(level, LOG_INFO);
    assert_int_equal(config_parse_log_level("warn", &level), 0);
    assert_int_equal(level, LOG_WARN);
    assert_int_equal(config_parse_log_level("error", &level), 0);
    assert_int_equal(level, LOG_ERROR);
    assert_int_equal(config_parse_log_level("INFO", &level), 0);
    assert_int_equal(level, LOG_INFO);
    assert_int_equal(config_parse_log_level("warning", &level), -DRV_EBAD_FIELD);
    assert_int_equal(config_parse_log_level("", &level), -DRV_EBAD_FIELD);
    assert_int_equal(config_parse_log_level("info ", &level), -DRV_EBAD_FIELD);
    assert_int_equal(level, LOG_INFO);
}

/* ---- byte suffixes and overflow ---- */

static void test_suffixes(void **state)
{
    struct config cfg;
    struct errmsg err = {0};
    (void)state;

    config_init(&cfg);
    assert_int_equal(config_set(&cfg, "http.max_body_bytes", "1KiB", NULL, &err), 0);
    assert_int_equal(cfg.max_body_bytes, 1024);
    assert_int_equal(config_set(&cfg, "http.max_body_bytes", "1MiB", NULL, &err), 0);
    assert_int_equal(cfg.max_body_bytes, 1048576);
    assert_int_equal(config_set(&cfg, "http.max_body_bytes", "64MiB", NULL, &err), 0);
    assert_int_equal(cfg.max_body_bytes, 67108864);
    assert_int_equal(config_set(&cfg, "http.max_body_bytes", "3000KiB", NULL, &err), 0);
    assert_int_equal(cfg.max_body_bytes, 3072000);
    assert_int_equal(config_set(&cfg, "http.max_header_bytes", "16KiB", NULL, &err), 0);
    assert_int_equal(cfg.max_header_bytes, 16384);
    assert_int_equal(config_set(&cfg, "http.max_header_bytes", "2048", NULL, &err), 0);
    assert_int_equal(cfg.max_header_bytes, 2048);
    config_release(&cfg);

    assert_set_fails("http.max_body_bytes", "65MiB",
                     "http.max_body_bytes: 68157440 is above the maximum 67108864");
    assert_set_fails("http.max_header_bytes", "1MiB",
                     "http.max_header_bytes: 1048576 is above the maximum 65536");
    assert_set_fails("http.max_body_bytes", "1kib",
                     "http.max_body_bytes: '1kib' is not a whole number of bytes (KiB and MiB "
                     "suffixes allowed)");
    assert_set_fails("http.max_body_bytes", "1 KiB",
                     "http.max_body_bytes: '1 KiB' is not a whole number of bytes (KiB and MiB "
                     "suffixes allowed)");
    assert_set_fails("http.max_body_bytes", "1.5MiB",
                     "http.max_body_bytes: '1.5MiB' is not a whole number of bytes (KiB and MiB "
                     "suffixes allowed)");
    assert_set_fails("http.max_body_bytes", "MiB",
                     "http.max_body_bytes: 'MiB' is not a whole number of bytes (KiB and MiB "
                     "suffixes allowed)");
    assert_set_fails("http.max_body_bytes", "1GiB",
                     "http.max_body_bytes: '1GiB' is not a whole number of bytes (KiB and MiB "
                     "suffixes allowed)");
    assert_set_fails("http.max_body_bytes", "1KB",
                     "http.max_body_bytes: '1KB' is not a whole number of bytes (KiB and MiB "
                     "suffixes allowed)");
    assert_set_fails("http.max_body_bytes", "1KiBKiB",
                     "http.max_body_bytes: '1KiBKiB' is not a whole number of bytes (KiB and MiB "
                     "suffixes allowed)");
    /* Only byte sizes take suffixes. */
    assert_set_fails("server.threads", "1KiB", "server.threads: '1KiB' is not a whole number");
}

static void test_overflow(void **state)
{
    (void)state;

    assert_set_fails("server.threads", "99999999999999999999",
                     "server.threads: '99999999999999999999' is above the maximum 64");
    /* Would wrap to a small int if narrowed before the range check. */
    assert_set_fails("server.threads", "4294967298",
                     "server.threads: 4294967298 is above the maximum 64");
    assert_set_fails("server.threads", "-4294967295",
                     "server.threads: -4294967295 is below the minimum 1");
    assert_set_fails("http.max_body_bytes", "9223372036854775807",
                     "http.max_body_bytes: 9223372036854775807 is above the maximum 67108864");
    assert_set_fails("http.max_body_bytes", "9223372036854775808",
                     "http.max_body_bytes: '9223372036854775808' is above the maximum 67108864");
    assert_set_fails("http.max_body_bytes", "-9223372036854775808",
                     "http.max_body_bytes: -9223372036854775808 is below the minimum 1024");
    assert_set_fails("http.max_body_bytes", "-9223372036854775809",
                     "http.max_body_bytes: '-9223372036854775809' is below the minimum 1024");
    /* The suffix's multiplication overflows, not the digits. */
    assert_set_fails("http.max_body_bytes", "9007199254740992KiB",
                     "http.max_body_bytes: '9007199254740992KiB' is above the maximum 67108864");
    assert_set_fails("http.max_body_bytes", "8796093022208MiB",
                     "http.max_body_bytes: '8796093022208MiB' is above the maximum 67108864");
}

/* ---- the environment ---- */

static void test_env_overrides(void **state)
{
    static const char *const env[] = {
        "DROVER_LISTEN",
        "0.0.0.0:7070",
        "DROVER_DATA",
        "/srv/drover",
        "DROVER_THREADS",
        "6",
        "DROVER_DRAIN_TIMEOUT_S",
        "30",
        "DROVER_HTTP_MAX_BODY_BYTES",
        "2MiB",
        "DROVER_HTTP_MAX_HEADER_BYTES",
        "32768",
        "DROVER_HTTP_CONNECTION_LIMIT",
        "50",
        "DROVER_HTTP_CONNECTION_TIMEOUT_S",
        "15",
        "DROVER_HTTP_IDEMPOTENCY_TTL_S",
        "3600",
        "DROVER_STORE_ENGINE",
        "sqlite",
        "DROVER_STORE_READERS",
        "8",
        "DROVER_STORE_BATCH_MAX",
        "128",
        "DROVER_LOG_FILE",
        "/tmp/drover.log",
        "DROVER_LOG_LEVEL",
        "error",
        "DROVER_ADMIN_TOKEN",
        ADMIN_SECRET,
        "DROVER_ALLOW_TARGET",
        " 10.0.0.0/8 , ::1,127.0.0.1",
        "DROVER_OUTBOUND_MAX_CONNECTIONS",
        "128",
        "DROVER_OUTBOUND_MAX_HOST_CONNECTIONS",
        "16",
        "DROVER_OUTBOUND_CONNECT_TIMEOUT_MS",
        "750",
        "DROVER_OUTBOUND_TIMEOUT_MS",
        "2500",
        NULL,
    };
    struct config cfg;
    struct errmsg err = {0};
    (void)state;

    config_init(&cfg);
    assert_int_equal(load_env(&cfg, env, &err), 0);
    assert_string_equal(cfg.listen, "0.0.0.0:7070");
    assert_string_equal(cfg.data_dir, "/srv/drover");
    assert_int_equal(cfg.threads, 6);
    assert_int_equal(cfg.drain_timeout_s, 30);
    assert_int_equal(cfg.max_body_bytes, 2097152);
    assert_int_equal(cfg.max_header_bytes, 32768);
    assert_int_equal(cfg.connection_limit, 50);
    assert_int_equal(cfg.connection_timeout_s, 15);
    assert_int_equal(cfg.idempotency_ttl_s, 3600);
    assert_string_equal(cfg.engine, "sqlite");
    assert_int_equal(cfg.readers, 8);
    assert_int_equal(cfg.batch_max, 128);
    assert_string_equal(cfg.log_file, "/tmp/drover.log");
    assert_int_equal(cfg.log_level, LOG_ERROR);
    assert_int_equal(cfg.n_tokens, 1);
    assert_int_equal(cfg.tokens[0].role, ROLE_ADMIN);
    assert_string_equal(cfg.tokens[0].secret, ADMIN_SECRET);
    assert_int_equal(cfg.n_allow_targets, 3);
    assert_string_equal(cfg.allow_targets[0], "10.0.0.0/8");
    assert_string_equal(cfg.allow_targets[1], "::1/128");
    assert_string_equal(cfg.allow_targets[2], "127.0.0.1/32");
    assert_int_equal(cfg.outbound_max_connections, 128);
    assert_int_equal(cfg.outbound_max_host_connections, 16);
    assert_int_equal(cfg.outbound_connect_timeout_ms, 750);
    assert_int_equal(cfg.outbound_timeout_ms, 2500);
    assert_int_equal(config_validate(&cfg, &err), 0);
    config_release(&cfg);
}

static void test_env_empty_and_unset(void **state)
{
    static const char *const env[] = {"DROVER_THREADS", "", "DROVER_ADMIN_TOKEN", "", NULL};
    struct config cfg;
    struct errmsg err = {0};
    (void)state;

    config_init(&cfg);
    assert_int_equal(load_env(&cfg, env, &err), 0);
    assert_int_equal(load_env(&cfg, NULL, &err), 0);
    assert_defaults(&cfg);
    assert_int_equal(cfg.n_tokens, 0);
    config_release(&cfg);
}

static void test_env_errors(void **state)
{
    struct config cfg;
    struct errmsg err = {0};
    (void)state;

    assert_env_fails((const char *const[]){"DROVER_THREADS", "abc", NULL},
                     "DROVER_THREADS: 'abc' is not a whole number");
    assert_env_fails((const char *const[]){"DROVER_THREADS", " 4", NULL},
                     "DROVER_THREADS: ' 4' is not a whole number");
    assert_env_fails((const char *const[]){"DROVER_HTTP_MAX_BODY_BYTES", "99", NULL},
                     "DROVER_HTTP_MAX_BODY_BYTES: 99 is below the minimum 1024");
    assert_env_fails((const char *const[]){"DROVER_LOG_LEVEL", "loud", NULL},
                     "DROVER_LOG_LEVEL: 'loud' is not one of debug, info, warn, error");
    assert_env_fails((const char *const[]){"DROVER_STORE_ENGINE", "postgres", NULL},
                     "DROVER_STORE_ENGINE: 'postgres' is not supported yet; the only engine is "
                     "'sqlite'");
    assert_env_fails((const char *const[]){"DROVER_ADMIN_TOKEN", "short", NULL},
                     "DROVER_ADMIN_TOKEN: a token needs at least 16 characters, this one has 5");
    assert_env_fails((const char *const[]){"DROVER_ALLOW_TARGET", "10.0.0.0/8,,::1", NULL},
                     "DROVER_ALLOW_TARGET: empty entry in '10.0.0.0/8,,::1'");
    assert_env_fails((const char *const[]){"DROVER_ALLOW_TARGET", "10.0.0.0/8,", NULL},
                     "DROVER_ALLOW_TARGET: empty entry in '10.0.0.0/8,'");
    assert_env_fails((const char *const[]){"DROVER_ALLOW_TARGET", "10.0.0.0/8, nope", NULL},
                     "DROVER_ALLOW_TARGET: 'nope' is not an IP address or CIDR (e.g. 10.0.0.0/8 "
                     "or ::1)");
    assert_env_fails((const char *const[]){"DROVER_OUTBOUND_MAX_CONNECTIONS", "0", NULL},
                     "DROVER_OUTBOUND_MAX_CONNECTIONS: 0 is below the minimum 1");
    assert_env_fails((const char *const[]){"DROVER_OUTBOUND_TIMEOUT_MS", "15s", NULL},
                     "DROVER_OUTBOUND_TIMEOUT_MS: '15s' is not a whole number");

    /* The field is named for whoever reports it. */
    config_init(&cfg);
    assert_int_equal(load_env(&cfg, (const char *const[]){"DROVER_STORE_READERS", "0", NULL}, &err),
                     -DRV_ECONFIG);
    assert_string_equal(err.field, "store.readers");
    config_release(&cfg);
}

static void test_env_process(void **state)
{
    struct config cfg;
    struct errmsg err = {0};
    (void)state;

    assert_int_equal(setenv("DROVER_STORE_READERS", "7", 1), 0);
    config_init(&cfg);
    int rc = config_load_env(&cfg, NULL, &err);
    unsetenv("DROVER_STORE_READERS");
    assert_int_equal(rc, 0);
    assert_int_equal(cfg.readers, 7);
    config_release(&cfg);
}

/* ---- precedence: defaults < file < environment < config_set ---- */

static void test_precedence(void **state)
{
    static const char *const env[] = {
        "DROVER_THREADS",
        "5",
        "DROVER_LISTEN",
        "127.0.0.1:7000",
        "DROVER_ADMIN_TOKEN",
        READ_SECRET "-env",
        "DROVER_ALLOW_TARGET",
        "192.168.0.0/16",
        NULL,
    };
    struct config cfg;
    struct errmsg err = {0};
    (void)state;

    assert_int_equal(load(&cfg,
                          "[server]\nthreads = 3\nlisten = 127.0.0.1:6000\n"
                          "[log]\nlevel = warn\n"
                          "[auth]\nadmin_token = " ADMIN_SECRET "\n"
                          "[outbound]\nallow_target = 10.0.0.0/8\n",
                          &err),
                     0);
    assert_int_equal(cfg.threads, 3);
    assert_string_equal(cfg.listen, "127.0.0.1:6000");
    assert_int_equal(cfg.readers, 4); /* untouched: the default */

    assert_int_equal(load_env(&cfg, env, &err), 0);
    assert_int_equal(cfg.threads, 5);
    assert_string_equal(cfg.listen, "127.0.0.1:7000");
    assert_int_equal(cfg.log_level, LOG_WARN); /* the file's, no variable set */

    assert_int_equal(config_set(&cfg, "server.threads", "7", "--set", &err), 0);
    assert_int_equal(config_set(&cfg, "server.listen", "127.0.0.1:0", "--listen", &err), 0);
    assert_int_equal(config_set(&cfg, "outbound.allow_target", "::1", "--allow-target", &err), 0);
    assert_int_equal(cfg.threads, 7);
    assert_string_equal(cfg.listen, "127.0.0.1:0");
    assert_int_equal(cfg.readers, 4);

    /* Lists gather from every source, in order. */
    assert_int_equal(cfg.n_tokens, 2);
    assert_string_equal(cfg.tokens[0].secret, ADMIN_SECRET);
    assert_string_equal(cfg.tokens[1].secret, READ_SECRET "-env");
    assert_int_equal(cfg.tokens[1].role, ROLE_ADMIN);
    assert_int_equal(cfg.n_allow_targets, 3);
    assert_string_equal(cfg.allow_targets[0], "10.0.0.0/8");
    assert_string_equal(cfg.allow_targets[1], "192.168.0.0/16");
    assert_string_equal(cfg.allow_targets[2], "::1/128");
    assert_int_equal(config_validate(&cfg, &err), 0);
    config_release(&cfg);
}

/* ---- config_set ---- */

static void test_config_set(void **state)
{
    struct config cfg;
    struct errmsg err = {0};
    (void)state;

    config_init(&cfg);
    /* Replacing a string frees the old one: LeakSanitizer would say otherwise. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(config_set(&cfg, "log.file", "/var/log/drover.log", NULL, &err), 0);
    assert_string_equal(cfg.log_file, "/var/log/drover.log");

    assert_int_equal(config_set(&cfg, "server.lisen", "x", "--set", &err), -DRV_ECONFIG);
    assert_string_equal(err.text, "--set: unknown key 'server.lisen'");
    assert_int_equal(config_set(&cfg, "listen", "x", NULL, &err), -DRV_ECONFIG);
    assert_string_equal(err.text, "unknown key 'listen'");

    /* A refused value leaves the field as it was. */
    assert_int_equal(config_set(&cfg, "server.threads", "0", "--threads", &err), -DRV_ECONFIG);
    assert_string_equal(err.text, "--threads: server.threads: 0 is below the minimum 1");
    assert_string_equal(err.field, "server.threads");
    assert_int_equal(cfg.threads, 2);
    assert_int_equal(config_set(&cfg, "server.listen", "nope", "--listen", &err), -DRV_ECONFIG);
    assert_string_equal(err.text, "--listen: server.listen: 'nope' is not HOST:PORT (e.g. "
                                  "127.0.0.1:8080 or [::1]:8080)");
    assert_string_equal(cfg.listen, "127.0.0.1:8080");
    assert_int_equal(config_set(&cfg, "log.level", "debug", "--set", &err), 0);
    assert_int_equal(config_set(&cfg, "log.level", "noisy", "--set", &err), -DRV_ECONFIG);
    assert_int_equal(cfg.log_level, LOG_DEBUG);
    config_release(&cfg);
}

/* ---- tokens ---- */

static void test_tokens_repeat_with_roles(void **state)
{
    struct config cfg;
    struct errmsg err = {0};
    (void)state;

    assert_int_equal(load(&cfg,
                          "[auth]\n"
                          "admin_token = " ADMIN_SECRET "\n"
                          "read_token = " READ_SECRET "\n"
                          "admin_token = " ADMIN_SECRET "-2\n"
                          "submit_token = " SUBMIT_SECRET "\n"
                          "worker_token = " WORKER_SECRET "\n",
                          &err),
                     0);
    assert_int_equal(cfg.n_tokens, 5);
    assert_int_equal(cfg.tokens[0].role, ROLE_ADMIN);
    assert_string_equal(cfg.tokens[0].secret, ADMIN_SECRET);
    assert_int_equal(cfg.tokens[1].role, ROLE_READ);
    assert_string_equal(cfg.tokens[1].secret, READ_SECRET);
    assert_int_equal(cfg.tokens[2].role, ROLE_ADMIN);
    assert_string_equal(cfg.tokens[2].secret, ADMIN_SECRET "-2");
    assert_int_equal(cfg.tokens[3].role, ROLE_SUBMIT);
    assert_string_equal(cfg.tokens[3].secret, SUBMIT_SECRET);
    assert_int_equal(cfg.tokens[4].role, ROLE_WORKER);
    assert_string_equal(cfg.tokens[4].secret, WORKER_SECRET);
    assert_int_equal(config_validate(&cfg, &err), 0);
    config_release(&cfg);
}

static void test_token_shapes(void **state)
{
    struct config cfg;
    struct errmsg err = {0};
    char longest[CONFIG_TOKEN_MAX_LEN + 2];
    (void)state;

    memset(longest, 'k', sizeof(longest) - 1);
    longest[CONFIG_TOKEN_MAX_LEN] = '\0';
    config_init(&cfg);
    assert_int_equal(config_set(&cfg, "auth.read_token", "0123456789abcdef", NULL, &err), 0);
    assert_int_equal(config_set(&cfg, "auth.read_token", longest, NULL, &err), 0);
    assert_int_equal(config_set(&cfg, "auth.read_token", "!\"#$%&'()*+,-./~", NULL, &err), 0);
    assert_int_equal(cfg.n_tokens, 3);
    assert_int_equal(strlen(cfg.tokens[1].secret), CONFIG_TOKEN_MAX_LEN);
    config_release(&cfg);

    longest[CONFIG_TOKEN_MAX_LEN] = 'k';
    longest[CONFIG_TOKEN_MAX_LEN + 1] = '\0';
    assert_set_fails("auth.read_token", longest,
                     "auth.read_token: a token may have at most 256 characters");
    assert_set_fails("auth.admin_token", "0123456789abcde",
                     "auth.admin_token: a token needs at least 16 characters, this one has 15");
    assert_set_fails("auth.admin_token", "",
                     "auth.admin_token: a token needs at least 16 "
                     "characters, this one has 0");
    static const char *const unprintable[] = {"0123456789 abcdef", "0123456789\tabcdef",
                                              "0123456789\x7f"
                                              "abcdef",
                                              "0123456789\xc3\xa9"
                                              "abcdef"};
    for (size_t i = 0; i < sizeof(unprintable) / sizeof(unprintable[0]); i++)
        assert_set_fails("auth.submit_token", unprintable[i],
                         "auth.submit_token: a token may hold only printable ASCII characters, "
                         "no spaces");

    /* A bad token in the file: the message never quotes the secret. */
    assert_load_fails("[auth]\nworker_token = tooshort-secret\n",
                      "2: auth.worker_token: a token needs at least 16 characters, this one "
                      "has 15");
}

static void test_token_cap(void **state)
{
    struct config cfg;
    struct errmsg err = {0};
    char secret[32];
    (void)state;

    config_init(&cfg);
    for (int i = 0; i < CONFIG_MAX_TOKENS; i++) {
        snprintf(secret, sizeof(secret), "token-secret-%08d", i);
        assert_int_equal(
            config_set(&cfg, i % 2 ? "auth.read_token" : "auth.worker_token", secret, NULL, &err),
            0);
    }
    assert_int_equal(cfg.n_tokens, CONFIG_MAX_TOKENS);
    assert_int_equal(config_set(&cfg, "auth.admin_token", ADMIN_SECRET, NULL, &err), -DRV_ECONFIG);
    assert_string_equal(err.text, "auth.admin_token: more than 64 tokens");
    assert_int_equal(cfg.n_tokens, CONFIG_MAX_TOKENS);
    assert_int_equal(config_validate(&cfg, &err), 0);
    config_release(&cfg);
}

/* ---- allow_target CIDRs ---- */

static void test_cidr_good(void **state)
{
    static const char *const cases[][2] = {
        {"127.0.0.0/8", "127.0.0.0/8"},
        {"10.0.0.1", "10.0.0.1/32"},
        {"10.0.0.1/32", "10.0.0.1/32"},
        {"192.168.1.0/24", "192.168.1.0/24"},
        {"0.0.0.0/0", "0.0.0.0/0"},
        {"::1", "::1/128"},
        {"::/0", "::/0"},
        {"fd00::/8", "fd00::/8"},
        {"2001:DB8:0:0::/32", "2001:db8::/32"},
        {"::ffff:10.0.0.0/104", "::ffff:10.0.0.0/104"},
        {"10.0.0.0/008", "10.0.0.0/8"},
    };
    struct config cfg;
    struct errmsg err = {0};
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        config_init(&cfg);
        assert_int_equal(config_set(&cfg, "outbound.allow_target", cases[i][0], NULL, &err), 0);
        assert_int_equal(cfg.n_allow_targets, 1);
        assert_string_equal(cfg.allow_targets[0], cases[i][1]);
        config_release(&cfg);
    }
}

static void test_cidr_bad(void **state)
{
    static const char *const not_cidr[] = {
        "300.0.0.1",   "10.0.0",
        "10.0.0.0/",   "10.0.0.0/8/8",
        "/8",          "10.0.0.0/-1",
        "10.0.0.0/ 8", "fe80::1%eth0",
        "example.com", "1.2.3.4 ",
        "010.0.0.1",   "10.0.0.0/1000",
        ":::1",        "",
    };
    char want[256];
    (void)state;

    for (size_t i = 0; i < sizeof(not_cidr) / sizeof(not_cidr[0]); i++) {
        snprintf(want, sizeof(want),
                 "outbound.allow_target: '%s' is not an IP address or CIDR (e.g. 10.0.0.0/8 or "
                 "::1)",
                 not_cidr[i]);
        assert_set_fails("outbound.allow_target", not_cidr[i], want);
    }
    assert_set_fails("outbound.allow_target", "10.0.0.0/33",
                     "outbound.allow_target: '10.0.0.0/33' has a prefix length above 32");
    assert_set_fails("outbound.allow_target", "::1/129",
                     "outbound.allow_target: '::1/129' has a prefix length above 128");
    assert_set_fails("outbound.allow_target", "10.0.0.1/8",
                     "outbound.allow_target: '10.0.0.1/8' has bits set past the prefix; did you "
                     "mean '10.0.0.0/8'");
    assert_set_fails("outbound.allow_target", "fd00::1/64",
                     "outbound.allow_target: 'fd00::1/64' has bits set past the prefix; did you "
                     "mean 'fd00::/64'");
    assert_load_fails("[outbound]\nallow_target = 127.0.0.0/8\nallow_target = 256.0.0.0/8\n",
                      "3: outbound.allow_target: '256.0.0.0/8' is not an IP address or CIDR "
                      "(e.g. 10.0.0.0/8 or ::1)");
}

static void test_cidr_cap(void **state)
{
    struct config cfg;
    struct errmsg err = {0};
    char target[32];
    (void)state;

    config_init(&cfg);
    for (int i = 0; i < CONFIG_MAX_TARGETS; i++) {
        snprintf(target, sizeof(target), "10.%d.0.0/16", i);
        assert_int_equal(config_set(&cfg, "outbound.allow_target", target, NULL, &err), 0);
    }
    assert_int_equal(config_set(&cfg, "outbound.allow_target", "::1", NULL, &err), -DRV_ECONFIG);
    assert_string_equal(err.text, "outbound.allow_target: more than 32 entries");
    assert_int_equal(cfg.n_allow_targets, CONFIG_MAX_TARGETS);
    config_release(&cfg);
}

/* ---- config_validate ---- */

static void test_validate(void **state)
{
    struct config cfg;
    struct errmsg err = {0};
    (void)state;

    /* No token at all is fine: the server generates an admin token. */
    config_init(&cfg);
    assert_int_equal(config_validate(&cfg, &err), 0);

    /* Fields set by hand are held to the same ranges as parsed ones. */
    cfg.threads = 0;
    assert_int_equal(config_validate(&cfg, &err), -DRV_ECONFIG);
    assert_string_equal(err.text, "server.threads: 0 is below the minimum 1");
    assert_string_equal(err.field, "server.threads");
    cfg.threads = 2;
    cfg.max_body_bytes = INT64_MAX;
    assert_int_equal(config_validate(&cfg, &err), -DRV_ECONFIG);
    assert_string_equal(err.text,
                        "http.max_body_bytes: 9223372036854775807 is above the maximum 67108864");
    cfg.max_body_bytes = 1048576;
    cfg.log_level = (enum log_level)7;
    assert_int_equal(config_validate(&cfg, &err), -DRV_ECONFIG);
    assert_string_equal(err.text, "log.level: 7 is not a log level");
    cfg.log_level = LOG_INFO;
    cfg.outbound_max_host_connections = 0;
    assert_int_equal(config_validate(&cfg, &err), -DRV_ECONFIG);
    assert_string_equal(err.text, "outbound.max_host_connections: 0 is below the minimum 1");
    assert_string_equal(err.field, "outbound.max_host_connections");
    cfg.outbound_max_host_connections = 8;

    /* An allow_target stored by hand is parsed again: --check-config reports it. */
    cfg.allow_targets[cfg.n_allow_targets++] = strdup("10.0.0.1/8");
    assert_non_null(cfg.allow_targets[0]);
    assert_int_equal(config_validate(&cfg, &err), -DRV_ECONFIG);
    assert_string_equal(err.text, "outbound.allow_target: '10.0.0.1/8' has bits set past the "
                                  "prefix; did you mean '10.0.0.0/8'");
    free(cfg.allow_targets[0]);
    cfg.allow_targets[0] = strdup("10.0.0.0/8");
    assert_non_null(cfg.allow_targets[0]);
    assert_int_equal(config_validate(&cfg, &err), 0);

    /* A string left NULL (config_init out of memory) is reported. */
    free(cfg.listen);
    cfg.listen = NULL;
    assert_int_equal(config_validate(&cfg, &err), -DRV_ECONFIG);
    assert_string_equal(err.text, "server.listen: has no value");
    free(cfg.engine);
    cfg.engine = strdup("postgres");
    assert_non_null(cfg.engine);
    assert_int_equal(config_set(&cfg, "server.listen", "127.0.0.1:1", NULL, &err), 0);
    assert_int_equal(config_validate(&cfg, &err), -DRV_ECONFIG);
    assert_string_equal(err.text,
                        "store.engine: 'postgres' is not supported yet; the only engine is "
                        "'sqlite'");
    assert_int_equal(config_set(&cfg, "store.engine", "sqlite", NULL, &err), 0);
    assert_int_equal(config_validate(&cfg, &err), 0);
    config_release(&cfg);
}

static void test_validate_tokens(void **state)
{
    struct config cfg;
    struct errmsg err = {0};
    (void)state;

    /* The same secret under two roles: which role would it have? */
    config_init(&cfg);
    assert_int_equal(config_set(&cfg, "auth.admin_token", ADMIN_SECRET, NULL, &err), 0);
    assert_int_equal(config_set(&cfg, "auth.submit_token", SUBMIT_SECRET, NULL, &err), 0);
    assert_int_equal(config_set(&cfg, "auth.read_token", ADMIN_SECRET, NULL, &err), 0);
    assert_int_equal(config_validate(&cfg, &err), -DRV_ECONFIG);
    assert_string_equal(err.text, "auth.read_token: the same token is also given as "
                                  "auth.admin_token");
    assert_null(strstr(err.text, ADMIN_SECRET));
    config_release(&cfg);

    /* The same secret twice under one role (file and environment) is harmless. */
    config_init(&cfg);
    assert_int_equal(config_set(&cfg, "auth.admin_token", ADMIN_SECRET, NULL, &err), 0);
    assert_int_equal(
        load_env(&cfg, (const char *const[]){"DROVER_ADMIN_TOKEN", ADMIN_SECRET, NULL}, &err), 0);
    assert_int_equal(cfg.n_tokens, 2);
    assert_int_equal(config_validate(&cfg, &err), 0);
    config_release(&cfg);

    /* Tokens pushed by hand are checked like parsed ones. */
    config_init(&cfg);
    cfg.tokens[0].role = ROLE_WORKER;
    cfg.tokens[0].secret = strdup("short");
    cfg.n_tokens = 1;
    assert_int_equal(config_validate(&cfg, &err), -DRV_ECONFIG);
    assert_string_equal(err.text,
                        "auth.worker_token: a token needs at least 16 characters, this one has 5");
    cfg.tokens[0].role = (enum auth_role)0;
    assert_int_equal(config_set(&cfg, "auth.admin_token", ADMIN_SECRET, NULL, &err), 0);
    free(cfg.tokens[0].secret);
    cfg.tokens[0].secret = strdup(WORKER_SECRET);
    assert_int_equal(config_validate(&cfg, &err), -DRV_ECONFIG);
    assert_string_equal(err.text, "auth: token 1 has no known role");
    config_release(&cfg);
}

/* ---- the example file ---- */

static char *example_text(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    config_write_example(out);
    assert_int_equal(fclose(out), 0);
    return text;
}

static void test_example_matches_file(void **state)
{
    char *want = example_text();
    FILE *f = fopen(EXAMPLE_PATH, "r");
    char *got;
    long len;
    (void)state;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    len = ftell(f);
    assert_true(len > 0);
    rewind(f);
    got = calloc(1, (size_t)len + 1);
    assert_non_null(got);
    assert_int_equal(fread(got, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    /* On a mismatch: regenerate the file from config_write_example(). */
    assert_string_equal(got, want);
    free(got);
    free(want);
}

static void test_example_lists_everything(void **state)
{
    static const char *const lines[] = {
        "# listen = 127.0.0.1:8080\n",
        "# data = ./drover-data\n",
        "# threads = 2\n",
        "# drain_timeout_s = 10\n",
        "# max_body_bytes = 1048576\n",
        "# max_header_bytes = 8192\n",
        "# connection_limit = 1024\n",
        "# connection_timeout_s = 120\n",
        "# idempotency_ttl_s = 86400\n",
        "# engine = sqlite\n",
        "# readers = 4\n",
        "# batch_max = 4096\n",
        "# file = -\n",
        "# level = info\n",
        "# admin_token = ",
        "# submit_token = ",
        "# worker_token = ",
        "# read_token = ",
        "# allow_target = ",
        "# max_connections = 64\n",
        "# max_host_connections = 8\n",
        "# connect_timeout_ms = 5000\n",
        "# timeout_ms = 15000\n",
        "[server]\n",
        "[http]\n",
        "[store]\n",
        "[log]\n",
        "[auth]\n",
        "[outbound]\n",
        "DROVER_LISTEN.",
        "DROVER_DATA.",
        "DROVER_THREADS.",
        "DROVER_DRAIN_TIMEOUT_S.",
        "DROVER_HTTP_MAX_BODY_BYTES.",
        "DROVER_HTTP_MAX_HEADER_BYTES.",
        "DROVER_HTTP_CONNECTION_LIMIT.",
        "DROVER_HTTP_CONNECTION_TIMEOUT_S.",
        "DROVER_STORE_ENGINE.",
        "DROVER_STORE_READERS.",
        "DROVER_STORE_BATCH_MAX.",
        "DROVER_LOG_FILE.",
        "DROVER_LOG_LEVEL.",
        "DROVER_ADMIN_TOKEN,",
        "DROVER_ALLOW_TARGET,",
        "DROVER_OUTBOUND_MAX_CONNECTIONS.",
        "DROVER_OUTBOUND_MAX_HOST_CONNECTIONS.",
        "DROVER_OUTBOUND_CONNECT_TIMEOUT_MS.",
        "DROVER_OUTBOUND_TIMEOUT_MS.",
        "# A whole number, 1..64.\n",
        "# A size in bytes, 1024..67108864; KiB and MiB suffixes allowed.\n",
        "defaults < this file",
        "environment variables\n#   < command-line flags",
    };
    char *text = example_text();
    (void)state;

    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        if (!strstr(text, lines[i]))
            fail_msg("the example lacks \"%s\"", lines[i]);
    }
    free(text);
}

/*
 * Uncomment every "# name = value" line of the example and load it: the
 * defaults it shows must load and equal the real ones. The token lines
 * (<secret>) stay commented; the allow_target sample adds one entry.
 */
static void test_example_defaults_load(void **state)
{
    char *text = example_text();
    struct config cfg;
    struct errmsg err = {0};
    int uncommented = 0;
    (void)state;

    for (char *line = text; *line; line = strchr(line, '\n') + 1) {
        size_t name_len = strspn(line + 2, "abcdefghijklmnopqrstuvwxyz_");
        if (strncmp(line, "# ", 2) == 0 && name_len > 0 &&
            strncmp(line + 2 + name_len, " = ", 3) == 0 &&
            strncmp(line + 2 + name_len + 3, "<secret>", 8) != 0) {
            line[0] = ' ';
            uncommented++;
        }
    }
    assert_int_equal(uncommented, 30);
    assert_int_equal(load(&cfg, text, &err), 0);
    assert_defaults(&cfg);
    assert_int_equal(cfg.n_tokens, 0);
    assert_int_equal(cfg.n_allow_targets, 1);
    assert_string_equal(cfg.allow_targets[0], "127.0.0.0/8");
    config_release(&cfg);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_release_twice),
        cmocka_unit_test(test_file_every_type),
        cmocka_unit_test(test_file_bom_crlf_and_empty),
        cmocka_unit_test(test_listen_forms),
        cmocka_unit_test(test_range_errors),
        cmocka_unit_test(test_range_edges_accepted),
        cmocka_unit_test(test_line_numbers),
        cmocka_unit_test(test_unknown_section_and_key),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_log_level_parse),
        cmocka_unit_test(test_suffixes),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_env_overrides),
        cmocka_unit_test(test_env_empty_and_unset),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_env_process),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_config_set),
        cmocka_unit_test(test_tokens_repeat_with_roles),
        cmocka_unit_test(test_token_shapes),
        cmocka_unit_test(test_token_cap),
        cmocka_unit_test(test_cidr_good),
        cmocka_unit_test(test_cidr_bad),
        cmocka_unit_test(test_cidr_cap),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_validate_tokens),
        cmocka_unit_test(test_example_matches_file),
        cmocka_unit_test(test_example_lists_everything),
        cmocka_unit_test(test_example_defaults_load),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
