/*
 * config.c - drover's configuration, driven by one table of fields.
 *
 * Each row of config_fields[] gives a field's key, type, place in struct
 * config, default, range, environment variable and description. Loading the
 * INI file, environment overrides, config_set(), config_validate(),
 * config_release() and the example file all walk that table; a field's type
 * (struct field_type) says how its text is parsed, checked, released and
 * described. Adding a setting is adding a row.
 */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "deliver.h"
#include "net_guard.h"
#include "sign.h"

/* Why a value was refused; the caller prefixes where it came from. */
struct reason {
    char text[200];
};

/* At most this much of a refused value is quoted back in a message. */
#define QUOTE_MAX 64

struct field;

/* How one kind of value is parsed, checked, released and described. */
struct field_type {
    /* Parse text into cfg: replace the value, or add an entry to a list.
     * On failure cfg is unchanged. */
    int (*set)(struct config *cfg, const struct field *f, const char *text, struct reason *r);
    /* Check the value cfg holds now, however it got there. */
    int (*check)(const struct config *cfg, const struct field *f, struct reason *r);
    /* Free what the field owns and leave it empty; safe to repeat. */
    void (*release)(struct config *cfg, const struct field *f);
    /* Write the accepted form and range, for the example file. */
    void (*describe)(const struct field *f, FILE *out);
    /* Whether the key may repeat, each occurrence adding an entry. */
    bool repeats;
};

enum field_flags {
    FIELD_BYTES = 1 << 0,    /* an integer that also takes KiB and MiB suffixes */
    FIELD_ENV_LIST = 1 << 1, /* the environment value is a comma-separated list */
};

struct field {
    const char *key; /* "section.name" */
    const struct field_type *type;
    size_t offset;       /* of the value in struct config */
    size_t size;         /* of the value, for integers */
    size_t count_offset; /* lists: of the entry count */
    int cap;             /* lists: most entries */
    const char *def;     /* default, as text; NULL for lists (empty) */
    int64_t min, max;    /* integers: value range; strings, tokens: length range */
    enum auth_role role; /* tokens */
    unsigned flags;      /* enum field_flags */
    const char *env;     /* environment variable, or NULL */
    const char *help;    /* one line for the example file */
    const char *form;    /* replaces the type's describe() when set */
    const char *sample;  /* lists: the value shown in the example file */
    /* strings: a further rule on the value */
    int (*rule)(const char *text, struct reason *r);
};

static const struct field_type type_string, type_int, type_log_level, type_token, type_cidr;

/* offsetof(struct config, m), refusing to compile unless m has type T. */
#define MEMBER(m, T) _Generic(((struct config *)0)->m, T : offsetof(struct config, m))

/* Rows by type; the rest of a row (.env, .help, ...) follows as designators. */
#define STRING_FIELD(k, m, d, lo, hi, ...)                                                         \
    {                                                                                              \
        .key = k, .type = &type_string, .offset = MEMBER(m, char *), .def = d, .min = lo,          \
        .max = hi, __VA_ARGS__                                                                     \
    }
#define INT_FIELD(k, m, T, d, lo, hi, ...)                                                         \
    {                                                                                              \
        .key = k, .type = &type_int, .offset = MEMBER(m, T), .size = sizeof(T), .def = d,          \
        .min = lo, .max = hi, __VA_ARGS__                                                          \
    }
#define LOG_LEVEL_FIELD(k, m, d, ...)                                                              \
    {                                                                                              \
        .key = k, .type = &type_log_level, .offset = MEMBER(m, enum log_level), .def = d,          \
        __VA_ARGS__                                                                                \
    }
#define CIDR_FIELD(k, m, count, most, ...)                                                         \
    {                                                                                              \
        .key = k, .type = &type_cidr, .offset = MEMBER(m, char **),                                \
        .count_offset = MEMBER(count, int), .cap = most, __VA_ARGS__                               \
    }
#define TOKEN_FIELD(k, r, ...)                                                                     \
    {                                                                                              \
        .key = k, .type = &type_token, .offset = MEMBER(tokens, struct config_token *),            \
        .count_offset = MEMBER(n_tokens, int), .cap = CONFIG_MAX_TOKENS,                           \
        .min = CONFIG_TOKEN_MIN_LEN, .max = CONFIG_TOKEN_MAX_LEN, .role = r, .sample = "<secret>", \
        __VA_ARGS__                                                                                \
    }

static int rule_listen(const char *text, struct reason *r);
static int rule_engine(const char *text, struct reason *r);
static int rule_public_url(const char *text, struct reason *r);
static int rule_whsec(const char *text, struct reason *r);
static int rule_schedule(const char *text, struct reason *r);

/* The order here is the order of the example file. */
static const struct field config_fields[] = {
    STRING_FIELD("server.listen", listen, "127.0.0.1:8080", 1, 255, .rule = rule_listen,
                 .env = "DROVER_LISTEN", .help = "Address to listen on; port 0 picks a free port.",
                 .form = "HOST:PORT; an IPv6 host goes in brackets, as in [::1]:8080."),
    STRING_FIELD("server.data", data_dir, "./drover-data", 1, 4095, .env = "DROVER_DATA",
                 .help = "Directory for the database and artifacts; created if missing.",
                 .form = "A directory path."),
    STRING_FIELD("server.public_url", public_url, "", 0, 1024, .rule = rule_public_url,
                 .env = "DROVER_PUBLIC_URL",
                 .help = "Base URL external runners use to reach drover's callbacks.",
                 .form =
                     "http(s)://HOST[:PORT][/PATH]; empty: http:// and the address listened on."),
    INT_FIELD("server.threads", threads, int, "2", 1, 64, .env = "DROVER_THREADS",
              .help = "HTTP worker threads."),
    INT_FIELD("server.drain_timeout_s", drain_timeout_s, int, "10", 0, 3600,
              .env = "DROVER_DRAIN_TIMEOUT_S",
              .help = "Seconds to let requests in flight finish after SIGTERM."),

    INT_FIELD("http.max_body_bytes", max_body_bytes, int64_t, "1048576", 1024, 67108864,
              .flags = FIELD_BYTES, .env = "DROVER_HTTP_MAX_BODY_BYTES",
              .help = "Largest request body accepted; a bigger one gets 413."),
    INT_FIELD("http.max_header_bytes", max_header_bytes, int, "8192", 1024, 65536,
              .flags = FIELD_BYTES, .env = "DROVER_HTTP_MAX_HEADER_BYTES",
              .help = "Largest request line and headers accepted; bigger gets 431."),
    INT_FIELD("http.connection_limit", connection_limit, int, "1024", 1, 100000,
              .env = "DROVER_HTTP_CONNECTION_LIMIT",
              .help = "Most client connections open at once (poll up to 1024, epoll above)."),
    INT_FIELD("http.connection_timeout_s", connection_timeout_s, int, "120", 1, 3600,
              .env = "DROVER_HTTP_CONNECTION_TIMEOUT_S",
              .help = "Seconds an idle keep-alive connection stays open."),
    INT_FIELD("http.idempotency_ttl_s", idempotency_ttl_s, int, "86400", 1, 2592000,
              .env = "DROVER_HTTP_IDEMPOTENCY_TTL_S",
              .help = "Seconds a reply is kept for repeats with the same Idempotency-Key."),

    STRING_FIELD("store.engine", engine, "sqlite", 1, 32, .rule = rule_engine,
                 .env = "DROVER_STORE_ENGINE", .help = "Storage engine.",
                 .form = "sqlite (the only engine so far; postgres is planned)."),
    INT_FIELD("store.readers", readers, int, "4", 1, 64, .env = "DROVER_STORE_READERS",
              .help = "Database connections for reads."),
    INT_FIELD("store.checkpoint_pages", checkpoint_pages, int, "4000", 100, 1000000,
              .env = "DROVER_STORE_CHECKPOINT_PAGES",
              .help = "WAL growth (4 KB pages) that starts a checkpoint; the WAL stays within "
                      "about twice this."),
    INT_FIELD("store.batch_max", batch_max, int, "4096", 1, 65536, .env = "DROVER_STORE_BATCH_MAX",
              .help = "Most operations written in one group commit."),

    STRING_FIELD("log.file", log_file, "-", 1, 4095, .env = "DROVER_LOG_FILE",
                 .help = "Where the log goes.", .form = "A file path, or - for standard error."),
    LOG_LEVEL_FIELD("log.level", log_level, "info", .env = "DROVER_LOG_LEVEL",
                    .help = "Least severe level logged."),

    TOKEN_FIELD("auth.admin_token", ROLE_ADMIN, .env = "DROVER_ADMIN_TOKEN",
                .help = "Bearer token with every right, including queue policy."),
    TOKEN_FIELD("auth.submit_token", ROLE_SUBMIT, .help = "Bearer token that may submit jobs."),
    TOKEN_FIELD("auth.worker_token", ROLE_WORKER,
                .help = "Bearer token for workers: claim, heartbeat, report steps and results."),
    TOKEN_FIELD("auth.read_token", ROLE_READ, .help = "Bearer token that may only read."),

    CIDR_FIELD("outbound.allow_target", allow_targets, n_allow_targets, CONFIG_MAX_TARGETS,
               .flags = FIELD_ENV_LIST, .env = "DROVER_ALLOW_TARGET", .sample = "127.0.0.0/8",
               .help = "Addresses outbound requests may reach though the SSRF guard blocks them."),
    INT_FIELD("outbound.max_connections", outbound_max_connections, int, "64", 1, 4096,
              .env = "DROVER_OUTBOUND_MAX_CONNECTIONS",
              .help = "Most outbound requests in flight at once, all hosts together; more wait."),
    INT_FIELD("outbound.max_host_connections", outbound_max_host_connections, int, "8", 1, 1024,
              .env = "DROVER_OUTBOUND_MAX_HOST_CONNECTIONS",
              .help = "Most outbound requests in flight at once to one host and port."),
    INT_FIELD("outbound.connect_timeout_ms", outbound_connect_timeout_ms, int, "5000", 1, 600000,
              .env = "DROVER_OUTBOUND_CONNECT_TIMEOUT_MS",
              .help = "Milliseconds an outbound request may take to connect."),
    INT_FIELD("outbound.timeout_ms", outbound_timeout_ms, int, "15000", 1, 3600000,
              .env = "DROVER_OUTBOUND_TIMEOUT_MS",
              .help = "Milliseconds an outbound request may take in all, connecting included."),

    STRING_FIELD("webhooks.secret", webhook_secret, "", 0, 200, .rule = rule_whsec,
                 .env = "DROVER_WEBHOOK_SECRET",
                 .help = "Signs deliveries to jobs' own webhook_url.",
                 .form = "whsec_ and base64 of 16 to 64 bytes; empty: one is generated into "
                         "DATA/webhook.secret."),
    STRING_FIELD("webhooks.retry_schedule", webhook_schedule, "5s,30s,2m,10m,30m,1h,3h,6h", 1, 400,
                 .rule = rule_schedule, .env = "DROVER_WEBHOOK_RETRY_SCHEDULE",
                 .help = "Delays before each retry of a delivery; the last one repeats.",
                 .form = "Comma-separated durations in ms, s, m or h, each up to a year."),
    INT_FIELD("webhooks.give_up_after_s", webhook_give_up_s, int64_t, "259200", 1, 31536000,
              .env = "DROVER_WEBHOOK_GIVE_UP_AFTER_S",
              .help = "Seconds after which a delivery that keeps failing is dead."),
    INT_FIELD("webhooks.max_in_flight", webhook_max_in_flight, int, "256", 1, 4096,
              .env = "DROVER_WEBHOOK_MAX_IN_FLIGHT", .help = "Most deliveries being sent at once."),
    INT_FIELD("webhooks.breaker_after", webhook_breaker_after, int, "5", 1, 1000,
              .env = "DROVER_WEBHOOK_BREAKER_AFTER",
              .help = "Consecutive failures that pause an endpoint (circuit breaker)."),
    INT_FIELD("webhooks.breaker_cooldown_ms", webhook_breaker_ms, int, "30000", 1, 600000,
              .env = "DROVER_WEBHOOK_BREAKER_COOLDOWN_MS",
              .help = "The first pause of a failing endpoint; doubles while probes fail."),
    INT_FIELD("webhooks.rate_under_load", webhook_rate_under_load, int, "6000", 0, 1000000,
              .env = "DROVER_WEBHOOK_RATE_UNDER_LOAD",
              .help = "Most webhook sends per second while the job path is busy (0: no limit); "
                      "when it is idle they go at full speed."),
    INT_FIELD("webhooks.nice", webhook_nice, int, "10", 0, 19, .env = "DROVER_WEBHOOK_NICE",
              .help = "Nice value of the threads that send webhooks: under load they yield "
                      "the CPU to the job path (0: same priority)."),
    INT_FIELD("artifacts.max_bytes", artifact_max_bytes, int64_t, "16777216", 1024, 268435456,
              .flags = FIELD_BYTES, .env = "DROVER_ARTIFACTS_MAX_BYTES",
              .help =
                  "Largest artifact upload; bigger gets 413 (http.max_body_bytes does not apply)."),
};

#define N_FIELDS (sizeof(config_fields) / sizeof(config_fields[0]))

static int reason_set(struct reason *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int reason_set(struct reason *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->text, sizeof(r->text), fmt, ap);
    va_end(ap);
    return -DRV_ECONFIG;
}

static int reason_nomem(struct reason *r)
{
    snprintf(r->text, sizeof(r->text), "out of memory");
    return -DRV_ENOMEM;
}

static void *field_ptr(struct config *cfg, const struct field *f)
{
    return (char *)cfg + f->offset;
}

static const void *field_cptr(const struct config *cfg, const struct field *f)
{
    return (const char *)cfg + f->offset;
}

static int *field_count(struct config *cfg, const struct field *f)
{
    return (int *)((char *)cfg + f->count_offset);
}

static int field_ccount(const struct config *cfg, const struct field *f)
{
    return *(const int *)((const char *)cfg + f->count_offset);
}

static const struct field *field_find(const char *key)
{
    for (size_t i = 0; i < N_FIELDS; i++)
        if (strcmp(config_fields[i].key, key) == 0)
            return &config_fields[i];
    return NULL;
}

/* Whether key is "<section>.<anything>". */
static bool key_in_section(const char *key, const char *section)
{
    size_t len = strlen(section);
    return strncmp(key, section, len) == 0 && key[len] == '.';
}

static const struct field *field_find_in(const char *section, const char *name)
{
    for (size_t i = 0; i < N_FIELDS; i++) {
        const char *key = config_fields[i].key;
        if (key_in_section(key, section) && strcmp(key + strlen(section) + 1, name) == 0)
            return &config_fields[i];
    }
    return NULL;
}

static bool section_known(const char *section)
{
    for (size_t i = 0; i < N_FIELDS; i++)
        if (key_in_section(config_fields[i].key, section))
            return true;
    return false;
}

/* ---- strings ---- */

static int string_check_text(const struct field *f, const char *text, struct reason *r)
{
    size_t len = strlen(text);
    if (len == 0 && f->min > 0)
        return reason_set(r, "must not be empty");
    if (len == 0)
        return 0; /* a field that may be empty means "not set" by it */
    if ((int64_t)len < f->min)
        return reason_set(r, "'%.*s' is shorter than %lld characters", QUOTE_MAX, text,
                          (long long)f->min);
    if ((int64_t)len > f->max)
        return reason_set(r, "'%.*s' is longer than %lld characters", QUOTE_MAX, text,
                          (long long)f->max);
    /* Not quoted back: it would put the control character in the message. */
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return reason_set(r, "contains a control character");
    return f->rule ? f->rule(text, r) : 0;
}

static int string_set(struct config *cfg, const struct field *f, const char *text, struct reason *r)
{
    char **slot = field_ptr(cfg, f);
    int rc = string_check_text(f, text, r);
    if (rc)
        return rc;
    char *copy = strdup(text);
    if (!copy)
        return reason_nomem(r);
    free(*slot);
    *slot = copy;
    return 0;
}

static int string_check(const struct config *cfg, const struct field *f, struct reason *r)
{
    const char *const *slot = field_cptr(cfg, f);
    if (!*slot)
        return reason_set(r, "has no value");
    return string_check_text(f, *slot, r);
}

static void string_release(struct config *cfg, const struct field *f)
{
    char **slot = field_ptr(cfg, f);
    free(*slot);
    *slot = NULL;
}

static void string_describe(const struct field *f, FILE *out)
{
    fprintf(out, "Text of %lld..%lld characters.", (long long)f->min, (long long)f->max);
}

static const struct field_type type_string = {
    .set = string_set,
    .check = string_check,
    .release = string_release,
    .describe = string_describe,
};

/* HOST:PORT, the host non-empty and bracketed when it holds colons (IPv6). */
static int rule_listen(const char *text, struct reason *r)
{
    const char *colon = strrchr(text, ':');
    if (!colon || colon == text || memchr(text, ' ', (size_t)(colon - text)))
        goto bad;
    if (text[0] == '[' ? strchr(text, ']') != colon - 1 || colon - text < 3
                       : memchr(text, ':', (size_t)(colon - text)) != NULL)
        goto bad;
    const char *port = colon + 1;
    size_t digits = strspn(port, "0123456789");
    if (digits == 0 || port[digits] != '\0')
        goto bad;
    if (digits > 5 || atoi(port) > 65535)
        return reason_set(r, "'%.*s' has a port outside 0..65535", QUOTE_MAX, text);
    return 0;
bad:
    return reason_set(r, "'%.*s' is not HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)", QUOTE_MAX,
                      text);
}

/* Empty, or an http(s) URL without a query, fragment, blanks or a trailing slash. */
static int rule_public_url(const char *text, struct reason *r)
{
    size_t scheme = strncmp(text, "https://", 8) == 0  ? 8
                    : strncmp(text, "http://", 7) == 0 ? 7
                                                       : 0;
    if (text[0] == '\0')
        return 0;
    if (scheme == 0 || text[scheme] == '\0' || text[scheme] == '/' || strpbrk(text, " ?#\t") ||
        text[strlen(text) - 1] == '/')
        return reason_set(r,
                          "'%.*s' is not a base URL such as https://drover.example.com (http or "
                          "https, no query, no trailing slash)",
                          QUOTE_MAX, text);
    return 0;
}

static int rule_whsec(const char *text, struct reason *r)
{
    struct sign_key key;
    struct errmsg err;
    int rc = text[0] == '\0' || sign_secret_parse(text, &key, &err) == 0 ? 0 : -1;
    if (rc == 0 && text[0] && key.len < 16)
        rc = -1;
    OPENSSL_cleanse(&key, sizeof(key));
    return rc == 0 ? 0 : reason_set(r, "is not whsec_ and base64 of 16 to 64 bytes");
}

static int rule_schedule(const char *text, struct reason *r)
{
    struct deliverer_config dc;
    struct errmsg err;
    if (deliverer_parse_schedule(text, &dc, &err) == 0)
        return 0;
    return reason_set(r, "%s", err.text);
}

static int rule_engine(const char *text, struct reason *r)
{
    if (strcmp(text, "sqlite") == 0)
        return 0;
    if (strcmp(text, "postgres") == 0)
        return reason_set(r, "'postgres' is not supported yet; the only engine is 'sqlite'");
    return reason_set(r, "'%.*s' is not a known engine; the only engine is 'sqlite'", QUOTE_MAX,
                      text);
}

/* ---- integers ---- */

/*
 * Plain decimal, an optional leading '-', and for byte sizes an optional
 * KiB or MiB suffix; strtoll() would also take spaces, '+' and "0x".
 */
static int int_parse(const struct field *f, const char *text, int64_t *out, struct reason *r)
{
    const char *p = text;
    bool negative = *p == '-';
    uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t magnitude = 0;
    bool overflow = false;

    if (negative)
        p++;
    if (*p < '0' || *p > '9')
        goto not_number;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned digit = (unsigned)(*p - '0');
        if (magnitude > (limit - digit) / 10)
            overflow = true;
        else
            magnitude = magnitude * 10 + digit;
    }

    uint64_t unit = 1;
    if (f->flags & FIELD_BYTES) {
        if (strcmp(p, "KiB") == 0)
            unit = 1024;
        else if (strcmp(p, "MiB") == 0)
            unit = 1024 * 1024;
        else if (*p)
            goto not_number;
    } else if (*p) {
        goto not_number;
    }
    if (overflow || magnitude > limit / unit) {
        if (negative)
            return reason_set(r, "'%.*s' is below the minimum %lld", QUOTE_MAX, text,
                              (long long)f->min);
        return reason_set(r, "'%.*s' is above the maximum %lld", QUOTE_MAX, text,
                          (long long)f->max);
    }
    magnitude *= unit;

    int64_t value;
    if (!negative)
        value = (int64_t)magnitude;
    else if (magnitude == 0)
        value = 0;
    else
        value = -(int64_t)(magnitude - 1) - 1; /* reaches INT64_MIN without overflow */
    *out = value;
    return 0;

not_number:
    if (f->flags & FIELD_BYTES)
        return reason_set(r, "'%.*s' is not a whole number of bytes (KiB and MiB suffixes allowed)",
                          QUOTE_MAX, text);
    return reason_set(r, "'%.*s' is not a whole number", QUOTE_MAX, text);
}

static int int_check_range(const struct field *f, int64_t value, struct reason *r)
{
    if (value < f->min)
        return reason_set(r, "%lld is below the minimum %lld", (long long)value, (long long)f->min);
    if (value > f->max)
        return reason_set(r, "%lld is above the maximum %lld", (long long)value, (long long)f->max);
    return 0;
}

/* Fields narrower than int64_t have ranges that fit them, so the casts keep the value. */
static int int_set(struct config *cfg, const struct field *f, const char *text, struct reason *r)
{
    int64_t value = 0;
    int rc = int_parse(f, text, &value, r);
    if (!rc)
        rc = int_check_range(f, value, r);
    if (rc)
        return rc;
    if (f->size == sizeof(int64_t))
        *(int64_t *)field_ptr(cfg, f) = value;
    else
        *(int *)field_ptr(cfg, f) = (int)value;
    return 0;
}

static int int_check(const struct config *cfg, const struct field *f, struct reason *r)
{
    int64_t value;
    if (f->size == sizeof(int64_t))
        value = *(const int64_t *)field_cptr(cfg, f);
    else
        value = *(const int *)field_cptr(cfg, f);
    return int_check_range(f, value, r);
}

static void int_release(struct config *cfg, const struct field *f)
{
    (void)cfg;
    (void)f;
}

static void int_describe(const struct field *f, FILE *out)
{
    if (f->flags & FIELD_BYTES)
        fprintf(out, "A size in bytes, %lld..%lld; KiB and MiB suffixes allowed.",
                (long long)f->min, (long long)f->max);
    else
        fprintf(out, "A whole number, %lld..%lld.", (long long)f->min, (long long)f->max);
}

static const struct field_type type_int = {
    .set = int_set,
    .check = int_check,
    .release = int_release,
    .describe = int_describe,
};

/* ---- log level ---- */

static const char *const log_level_names[] = {
    [LOG_DEBUG] = "debug",
    [LOG_INFO] = "info",
    [LOG_WARN] = "warn",
    [LOG_ERROR] = "error",
};

int config_parse_log_level(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(log_level_names) / sizeof(log_level_names[0]); i++) {
        if (strcasecmp(s, log_level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -DRV_EBAD_FIELD;
}

static int log_level_set(struct config *cfg, const struct field *f, const char *text,
                         struct reason *r)
{
    enum log_level level;
    if (config_parse_log_level(text, &level))
        return reason_set(r, "'%.*s' is not one of debug, info, warn, error", QUOTE_MAX, text);
    *(enum log_level *)field_ptr(cfg, f) = level;
    return 0;
}

static int log_level_check(const struct config *cfg, const struct field *f, struct reason *r)
{
    enum log_level level = *(const enum log_level *)field_cptr(cfg, f);
    if (level < LOG_DEBUG || level > LOG_ERROR)
        return reason_set(r, "%d is not a log level", (int)level);
    return 0;
}

static void log_level_describe(const struct field *f, FILE *out)
{
    (void)f;
    fputs("One of debug, info, warn, error.", out);
}

static const struct field_type type_log_level = {
    .set = log_level_set,
    .check = log_level_check,
    .release = int_release,
    .describe = log_level_describe,
};

/* ---- tokens: the four token fields share one list, each entry with its role ---- */

/* Never quotes the secret: messages end up in logs. */
static int token_check_secret(const struct field *f, const char *secret, struct reason *r)
{
    size_t len = strnlen(secret, (size_t)f->max + 1);
    if ((int64_t)len < f->min)
        return reason_set(r, "a token needs at least %lld characters, this one has %zu",
                          (long long)f->min, len);
    if ((int64_t)len > f->max)
        return reason_set(r, "a token may have at most %lld characters", (long long)f->max);
    for (const unsigned char *p = (const unsigned char *)secret; *p; p++)
        if (*p <= ' ' || *p >= 0x7f)
            return reason_set(r, "a token may hold only printable ASCII characters, no spaces");
    return 0;
}

static int token_set(struct config *cfg, const struct field *f, const char *text, struct reason *r)
{
    struct config_token *tokens = field_ptr(cfg, f);
    int *n = field_count(cfg, f);
    int rc = token_check_secret(f, text, r);
    if (rc)
        return rc;
    if (*n >= f->cap)
        return reason_set(r, "more than %d tokens", f->cap);
    char *copy = strdup(text);
    if (!copy)
        return reason_nomem(r);
    tokens[*n].role = f->role;
    tokens[*n].secret = copy;
    (*n)++;
    return 0;
}

static int token_check(const struct config *cfg, const struct field *f, struct reason *r)
{
    const struct config_token *tokens = field_cptr(cfg, f);
    int n = field_ccount(cfg, f);
    if (n < 0 || n > f->cap)
        return reason_set(r, "%d tokens, the limit is %d", n, f->cap);
    for (int i = 0; i < n; i++) {
        if (tokens[i].role != f->role)
            continue;
        if (!tokens[i].secret)
            return reason_set(r, "token %d has no secret", i + 1);
        int rc = token_check_secret(f, tokens[i].secret, r);
        if (rc)
            return rc;
    }
    return 0;
}

/* Frees the whole shared list: the first token field released empties it. */
static void token_release(struct config *cfg, const struct field *f)
{
    struct config_token *tokens = field_ptr(cfg, f);
    int *n = field_count(cfg, f);
    for (int i = 0; i < *n; i++) {
        if (tokens[i].secret) {
            explicit_bzero(tokens[i].secret, strlen(tokens[i].secret));
            free(tokens[i].secret);
        }
        tokens[i].secret = NULL;
    }
    *n = 0;
}

static void token_describe(const struct field *f, FILE *out)
{
    fprintf(out, "%lld..%lld printable ASCII characters, no spaces; may repeat; none by default.",
            (long long)f->min, (long long)f->max);
}

static const struct field_type type_token = {
    .set = token_set,
    .check = token_check,
    .release = token_release,
    .describe = token_describe,
    .repeats = true,
};

/* ---- CIDR list ---- */

/* net_guard owns the syntax; its message is the reason. */
static int cidr_parse(const char *text, struct net_cidr *out, struct reason *r)
{
    struct errmsg err;
    if (net_cidr_parse(text, out, &err) == 0)
        return 0;
    return reason_set(r, "%s", err.text);
}

static int cidr_set(struct config *cfg, const struct field *f, const char *text, struct reason *r)
{
    char **list = field_ptr(cfg, f);
    int *n = field_count(cfg, f);
    struct net_cidr c;
    int rc = cidr_parse(text, &c, r);
    if (rc)
        return rc;
    if (*n >= f->cap)
        return reason_set(r, "more than %d entries", f->cap);

    char normal[NET_CIDR_STRLEN];
    net_cidr_format(&c, normal);
    char *copy = strdup(normal);
    if (!copy)
        return reason_nomem(r);
    list[(*n)++] = copy;
    return 0;
}

static int cidr_check(const struct config *cfg, const struct field *f, struct reason *r)
{
    char *const *list = field_cptr(cfg, f);
    int n = field_ccount(cfg, f);
    if (n < 0 || n > f->cap)
        return reason_set(r, "%d entries, the limit is %d", n, f->cap);
    for (int i = 0; i < n; i++) {
        struct net_cidr c;
        if (!list[i])
            return reason_set(r, "entry %d has no value", i + 1);
        int rc = cidr_parse(list[i], &c, r);
        if (rc)
            return rc;
    }
    return 0;
}

static void cidr_release(struct config *cfg, const struct field *f)
{
    char **list = field_ptr(cfg, f);
    int *n = field_count(cfg, f);
    for (int i = 0; i < *n; i++) {
        free(list[i]);
        list[i] = NULL;
    }
    *n = 0;
}

static void cidr_describe(const struct field *f, FILE *out)
{
    (void)f;
    fputs("An IPv4 or IPv6 address or CIDR (10.0.0.0/8, ::1); may repeat; none by default.", out);
}

static const struct field_type type_cidr = {
    .set = cidr_set,
    .check = cidr_check,
    .release = cidr_release,
    .describe = cidr_describe,
    .repeats = true,
};

/* ---- the public entry points ---- */

void config_init(struct config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < N_FIELDS; i++) {
        const struct field *f = &config_fields[i];
        struct reason r;
        /* Defaults are valid (the unit tests hold them to it); what can fail
         * is memory, and config_validate() reports the string left NULL. */
        if (f->def)
            (void)f->type->set(cfg, f, f->def, &r);
    }
}

void config_release(struct config *cfg)
{
    for (size_t i = 0; i < N_FIELDS; i++)
        config_fields[i].type->release(cfg, &config_fields[i]);
}

/* What one config_load_file() call carries between inih's callbacks. */
struct file_parse {
    struct config *cfg;
    const char *path;
    FILE *fp;
    struct errmsg *err;
    int line;             /* lines read so far */
    int rc;               /* the first failure; reading stops there */
    int failed_line;      /* where it happened */
    int set_on[N_FIELDS]; /* line that set each field, to refuse a second */
};

static int file_fail(struct file_parse *p, int rc)
{
    p->rc = rc;
    p->failed_line = p->line;
    return 0; /* inih: the handler failed */
}

/*
 * inih's reader: hands over one whole line at a time, so inih's line
 * numbers are the file's. Indentation is dropped, which keeps inih from
 * taking an indented line as the continuation of the previous value. A line
 * that does not fit inih's buffer (with its newline) is refused here rather
 * than split in two.
 */
static char *file_read_line(char *buf, int size, void *stream)
{
    struct file_parse *p = stream;
    size_t room = size > 2 ? (size_t)size - 2 : 0;
    size_t len = 0;
    bool any = false, nul = false;
    int c;

    if (p->rc)
        return NULL;
    while ((c = getc(p->fp)) == ' ' || c == '\t')
        any = true;
    for (; c != EOF && c != '\n'; c = getc(p->fp)) {
        any = true;
        nul |= c == '\0';
        if (len < room)
            buf[len] = (char)c;
        len++;
    }
    if (ferror(p->fp)) {
        file_fail(
            p, errmsg_set(p->err, -DRV_ECONFIG, "cannot read '%s': %s", p->path, strerror(errno)));
        return NULL;
    }
    if (!any && c == EOF)
        return NULL;
    p->line++;
    if (len > room) {
        file_fail(p, errmsg_set(p->err, -DRV_ECONFIG, "%s:%d: line is longer than %zu characters",
                                p->path, p->line, room));
        return NULL;
    }
    if (nul) {
        file_fail(
            p, errmsg_set(p->err, -DRV_ECONFIG, "%s:%d: line holds a NUL byte", p->path, p->line));
        return NULL;
    }
    buf[len++] = '\n';
    buf[len] = '\0';
    return buf;
}

/* inih's handler: one `name = value` line of section `section`. */
static int file_on_value(void *user, const char *section, const char *name, const char *value)
{
    struct file_parse *p = user;
    struct reason r;

    if (p->rc)
        return 0;
    if (!value)
        return file_fail(p, errmsg_set(p->err, -DRV_ECONFIG, "%s:%d: '%.*s' has no value", p->path,
                                       p->line, QUOTE_MAX, name));
    const struct field *f = field_find_in(section, name);
    if (!f && !section[0])
        return file_fail(p,
                         errmsg_set(p->err, -DRV_ECONFIG, "%s:%d: '%.*s' is outside any [section]",
                                    p->path, p->line, QUOTE_MAX, name));
    if (!f && !section_known(section))
        return file_fail(p, errmsg_set(p->err, -DRV_ECONFIG, "%s:%d: unknown section '[%.*s]'",
                                       p->path, p->line, QUOTE_MAX, section));
    if (!f)
        return file_fail(p, errmsg_set(p->err, -DRV_ECONFIG, "%s:%d: unknown key '%s.%.*s'",
                                       p->path, p->line, section, QUOTE_MAX, name));

    size_t i = (size_t)(f - config_fields);
    if (!f->type->repeats && p->set_on[i])
        return file_fail(p, errmsg_field(p->err, -DRV_ECONFIG, f->key,
                                         "%s:%d: %s: already set on line %d", p->path, p->line,
                                         f->key, p->set_on[i]));
    int rc = f->type->set(p->cfg, f, value, &r);
    if (rc)
        return file_fail(
            p, errmsg_field(p->err, rc, f->key, "%s:%d: %s: %s", p->path, p->line, f->key, r.text));
    p->set_on[i] = p->line;
    return 1;
}

int config_load_file(struct config *cfg, const char *path, struct errmsg *err)
{
    struct file_parse p = {.cfg = cfg, .path = path, .err = err};

    p.fp = fopen(path, "r");
    if (!p.fp)
        return errmsg_set(err, -DRV_ECONFIG, "cannot open '%s': %s", path, strerror(errno));
    int bad_line = ini_parse_stream(file_read_line, &p, file_on_value, &p);
    fclose(p.fp);

    /* inih reports the first line it could not parse (no '=', no ']') without
     * calling us; it keeps reading after that, so a failure of ours may come
     * from a later line. */
    if (bad_line > 0 && (!p.rc || bad_line < p.failed_line))
        return errmsg_set(err, -DRV_ECONFIG, "%s:%d: expected '[section]' or 'name = value'", path,
                          bad_line);
    if (p.rc)
        return p.rc;
    if (bad_line < 0)
        return errmsg_set(err, -DRV_ENOMEM, "%s: out of memory", path);
    return 0;
}

static const char *process_getenv(const char *name)
{
    return getenv(name);
}

/* Each entry of a comma-separated value, blanks around it dropped. */
static int env_set_each(struct config *cfg, const struct field *f, const char *value,
                        struct reason *r)
{
    const char *p = value;
    for (;;) {
        size_t len = strcspn(p, ",");
        const char *start = p, *end = p + len;
        while (start < end && (*start == ' ' || *start == '\t'))
            start++;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (start == end)
            return reason_set(r, "empty entry in '%.*s'", QUOTE_MAX, value);
        char *item = strndup(start, (size_t)(end - start));
        if (!item)
            return reason_nomem(r);
        int rc = f->type->set(cfg, f, item, r);
        free(item);
        if (rc)
            return rc;
        if (!p[len])
            return 0;
        p += len + 1;
    }
}

int config_load_env(struct config *cfg, const char *(*getenv_fn)(const char *name),
                    struct errmsg *err)
{
    if (!getenv_fn)
        getenv_fn = process_getenv;
    for (size_t i = 0; i < N_FIELDS; i++) {
        const struct field *f = &config_fields[i];
        struct reason r;
        if (!f->env)
            continue;
        const char *value = getenv_fn(f->env);
        if (!value || !value[0])
            continue;
        int rc = f->flags & FIELD_ENV_LIST ? env_set_each(cfg, f, value, &r)
                                           : f->type->set(cfg, f, value, &r);
        if (rc)
            return errmsg_field(err, rc, f->key, "%s: %s", f->env, r.text);
    }
    return 0;
}

int config_set(struct config *cfg, const char *key, const char *value, const char *origin,
               struct errmsg *err)
{
    const struct field *f = field_find(key);
    struct reason r;

    if (!f && origin)
        return errmsg_set(err, -DRV_ECONFIG, "%s: unknown key '%.*s'", origin, QUOTE_MAX, key);
    if (!f)
        return errmsg_set(err, -DRV_ECONFIG, "unknown key '%.*s'", QUOTE_MAX, key);
    int rc = f->type->set(cfg, f, value, &r);
    if (rc && origin)
        return errmsg_field(err, rc, f->key, "%s: %s: %s", origin, f->key, r.text);
    if (rc)
        return errmsg_field(err, rc, f->key, "%s: %s", f->key, r.text);
    return 0;
}

static const char *token_key(enum auth_role role)
{
    for (size_t i = 0; i < N_FIELDS; i++)
        if (config_fields[i].type == &type_token && config_fields[i].role == role)
            return config_fields[i].key;
    return NULL;
}

/*
 * Every token has a known role, and no secret is given under two roles (which
 * would it have?). The same token twice with one role is harmless, e.g. in
 * both the file and DROVER_ADMIN_TOKEN.
 */
static int validate_tokens(const struct config *cfg, struct errmsg *err)
{
    for (int i = 0; i < cfg->n_tokens; i++) {
        const struct config_token *t = &cfg->tokens[i];
        if (!token_key(t->role))
            return errmsg_field(err, -DRV_ECONFIG, "auth", "auth: token %d has no known role",
                                i + 1);
        for (int j = 0; j < i; j++) {
            const struct config_token *u = &cfg->tokens[j];
            if (t->role != u->role && strcmp(t->secret, u->secret) == 0)
                return errmsg_field(err, -DRV_ECONFIG, token_key(t->role),
                                    "%s: the same token is also given as %s", token_key(t->role),
                                    token_key(u->role));
        }
    }
    return 0;
}

int config_validate(const struct config *cfg, struct errmsg *err)
{
    for (size_t i = 0; i < N_FIELDS; i++) {
        const struct field *f = &config_fields[i];
        struct reason r;
        int rc = f->type->check(cfg, f, &r);
        if (rc)
            return errmsg_field(err, rc, f->key, "%s: %s", f->key, r.text);
    }
    return validate_tokens(cfg, err);
}

static const char example_header[] =
    "# drover.conf.example - every setting drover reads, with its default.\n"
    "#\n"
    "# Settings come from four places, each overriding the ones before it:\n"
    "#   built-in defaults < this file (--config FILE) < environment variables\n"
    "#   < command-line flags (--listen, --data, --allow-target, --set KEY=VALUE).\n"
    "# An environment variable that is set but empty counts as unset.\n"
    "#\n"
    "# Each setting below is commented out and shows its default; uncomment a\n"
    "# line to change it. Lines starting with '#' or ';' are comments. Numbers\n"
    "# are plain decimal; byte sizes also take KiB and MiB (64KiB, 1MiB). A\n"
    "# setting given twice, an unknown section and an unknown key are errors.\n"
    "#\n"
    "# The token lines in [auth] and allow_target in [outbound] may repeat: each\n"
    "# line adds one entry, and entries from the environment and from flags are\n"
    "# added to those from this file. Make each token a long random secret, such\n"
    "# as the output of `openssl rand -hex 32`. When no admin token is\n"
    "# configured, drover serve generates one at start.\n";

void config_write_example(FILE *out)
{
    fputs(example_header, out);
    for (size_t i = 0; i < N_FIELDS; i++) {
        const struct field *f = &config_fields[i];
        const char *name = strchr(f->key, '.') + 1;
        int section_len = (int)(name - 1 - f->key);

        /* "section." compared, so [server] is not taken for [serverx] */
        if (i == 0 || strncmp(config_fields[i - 1].key, f->key, (size_t)section_len + 1) != 0)
            fprintf(out, "\n[%.*s]\n", section_len, f->key);
        fprintf(out, "\n# %s\n# ", f->help);
        if (f->form)
            fputs(f->form, out);
        else
            f->type->describe(f, out);
        if (!f->env)
            fputs("\n# No environment variable.\n", out);
        else if (f->type->repeats && (f->flags & FIELD_ENV_LIST))
            fprintf(out, "\n# Environment: %s, a comma-separated list added to these.\n", f->env);
        else if (f->type->repeats)
            fprintf(out, "\n# Environment: %s, one more added to these.\n", f->env);
        else
            fprintf(out, "\n# Environment: %s.\n", f->env);
        fprintf(out, "# %s = %s\n", name, f->def ? f->def : f->sample);
    }
}
