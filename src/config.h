/*
 * config.h - drover's configuration: one declarative table of fields.
 *
 * Every field has a default, a range, a config-file key ("section.name"),
 * an environment variable and a description; the same table drives parsing,
 * validation, `drover serve --check-config` and the commented example file.
 * Precedence: defaults < config file < environment < command-line flags.
 *
 * The config file is INI (parsed with inih): `[section]` headers,
 * `name = value` lines, `#` or `;` comments. List fields (tokens,
 * allow_target) may repeat their key; each line adds one entry.
 */
#ifndef DROVER_CONFIG_H
#define DROVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

enum auth_role {
    ROLE_ADMIN = 1 << 0,
    ROLE_SUBMIT = 1 << 1,
    ROLE_WORKER = 1 << 2,
    ROLE_READ = 1 << 3,
};

#define CONFIG_MAX_TOKENS  64
#define CONFIG_MAX_TARGETS 32

/* A token secret: this many printable ASCII characters, no spaces. */
#define CONFIG_TOKEN_MIN_LEN 16
#define CONFIG_TOKEN_MAX_LEN 256

struct config_token {
    enum auth_role role;
    char *secret; /* owned */
};

struct config {
    /* [server] */
    char *listen;        /* "HOST:PORT"; port 0 picks a free one. default "127.0.0.1:8080" */
    char *data_dir;      /* default "./drover-data" */
    char *public_url;    /* callback URLs' base; "" = http:// + the bound address */
    int threads;         /* HTTP worker threads, 1..64, default 2 */
    int drain_timeout_s; /* SIGTERM drain budget, 0..3600, default 10 */
    /* [http] */
    int64_t max_body_bytes;   /* 1024..67108864, default 1048576 */
    int max_header_bytes;     /* 1024..65536, default 8192 */
    int connection_limit;     /* 1..100000, default 1024 */
    int connection_timeout_s; /* idle keep-alive timeout, 1..3600, default 120 */
    int idempotency_ttl_s;    /* kept replies, 1..2592000, default 86400 */
    /* [store] */
    char *engine;         /* "sqlite" (only one so far), default "sqlite" */
    int readers;          /* read connections, 1..64, default 4 */
    int batch_max;        /* most operations in one group commit, 1..65536, default 4096 */
    int checkpoint_pages; /* WAL growth that starts a checkpoint, default 4000 */
    /* [log] */
    char *log_file;           /* "-" = stderr (default) */
    enum log_level log_level; /* debug|info|warn|error, default info */
    /* [auth] admin_token / submit_token / worker_token / read_token (repeatable) */
    struct config_token tokens[CONFIG_MAX_TOKENS];
    int n_tokens;
    /* [outbound] allow_target (repeatable CIDR, e.g. 127.0.0.0/8); stored
     * normalized as "ADDRESS/PREFIX" (a bare 10.0.0.1 becomes 10.0.0.1/32),
     * so net_cidr_parse() reads every entry back */
    char *allow_targets[CONFIG_MAX_TARGETS];
    int n_allow_targets;
    int outbound_max_connections;      /* all hosts together, 1..4096, default 64 */
    int outbound_max_host_connections; /* per host and port, 1..1024, default 8 */
    int outbound_connect_timeout_ms;   /* per attempt, 1..600000, default 5000 */
    int outbound_timeout_ms;           /* whole attempt, 1..3600000, default 15000 */
    /* [webhooks] */
    char *webhook_secret;        /* whsec_ for jobs' own webhook_url; "" = generated in DATA */
    char *webhook_schedule;      /* retry delays, "5s,30s,2m,..." */
    int64_t webhook_give_up_s;   /* dead after, 1..31536000, default 259200 (3 days) */
    int webhook_max_in_flight;   /* 1..4096, default 256 */
    int webhook_breaker_after;   /* failures in a row that open a circuit, default 5 */
    int webhook_breaker_ms;      /* first cool-down, default 30000 */
    int webhook_nice;            /* the sending threads' nice value, default 10 */
    int webhook_rate_under_load; /* sends/s while the job path is busy, default 6000; 0: any */
    /* [artifacts] */
    int64_t artifact_max_bytes; /* one artifact's bytes, 1024..268435456, default 16 MiB */
};

/*
 * Fill every field with its default. Release with config_release(). Should
 * memory run out, a string stays NULL and config_validate() reports it.
 */
void config_init(struct config *cfg);

/*
 * Free what the config owns; cfg itself is the caller's. Afterwards the
 * strings are NULL and the lists empty, so releasing again is harmless.
 */
void config_release(struct config *cfg);

/*
 * Load the INI file at path into cfg (on top of what is there). A missing
 * file, an unknown section or key, a value of the wrong type or outside its
 * range fails with -DRV_ECONFIG and err->text such as
 * "drover.conf:12: http.max_body_bytes: 99 is below the minimum 1024".
 * A key set twice (other than the repeatable lists) is an error too.
 * Parsing stops at the first error; lines before it have been applied, so
 * on failure cfg is only fit for config_release().
 */
int config_load_file(struct config *cfg, const char *path, struct errmsg *err);

/*
 * Apply environment overrides: for every field whose variable is set
 * (DROVER_LISTEN, DROVER_DATA, DROVER_THREADS, DROVER_LOG_LEVEL,
 * DROVER_LOG_FILE, DROVER_ADMIN_TOKEN, DROVER_HTTP_MAX_BODY_BYTES, ... —
 * the table names them). getenv_fn lets tests supply their own environment;
 * pass NULL for getenv. A variable set to "" counts as unset.
 * DROVER_ADMIN_TOKEN adds one admin token; DROVER_ALLOW_TARGET adds each
 * entry of a comma-separated list. Errors name the variable:
 * "DROVER_THREADS: 'abc' is not a whole number".
 */
int config_load_env(struct config *cfg, const char *(*getenv_fn)(const char *name),
                    struct errmsg *err);

/*
 * Set one field by its key ("http.max_body_bytes") from text, validating as
 * the file does. Used by flags (--listen is server.listen, --set KEY=VALUE).
 * `origin` names where the value came from for the message ("--listen";
 * NULL for none). A string field is replaced (the old value freed); a list
 * field (tokens, allow_target) gains one entry. On failure cfg is unchanged.
 */
int config_set(struct config *cfg, const char *key, const char *value, const char *origin,
               struct errmsg *err);

/*
 * Check cfg as it stands, however it was filled: every field against its
 * type and range again, and checks that span fields (no token configured
 * twice). Tokens are not required: the server generates an admin token when
 * none is configured.
 */
int config_validate(const struct config *cfg, struct errmsg *err);

/* Write a commented INI file listing every field with its default, range, env var. */
void config_write_example(FILE *out);

/* Parse "debug|info|warn|error"; -DRV_EBAD_FIELD on anything else. */
int config_parse_log_level(const char *s, enum log_level *out);

#endif
