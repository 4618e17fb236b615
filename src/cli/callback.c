/*
 * callback.c - `drover callback`: what an external runner's step (a CI
 * workflow, a VM agent's script) runs to report to drover, instead of
 * hand-rolled jq+openssl+curl. It builds the callback body, signs it the
 * Standard Webhooks way with a whsec_ secret taken from the environment
 * (src/sign.h), POSTs it to /v1/callbacks/{job} and retries within a bounded
 * time.
 *
 * Delivery is best effort by default: a runner's step should not fail because
 * drover was briefly unreachable (the job's own deadlines catch a runner that
 * went silent), so a callback that stays undelivered is a warning and exit 0,
 * unless --strict. A 4xx is a definite answer (bad signature, unknown job, an
 * attempt that is over) and always ends the command with its exit code.
 *
 * `heartbeat --every D -- CMD...` runs CMD and heartbeats while it lives: one
 * thread, poll() on a signalfd (SIGCHLD, SIGTERM, SIGINT) with the next
 * heartbeat as the deadline. A heartbeat's retries wait on the same signalfd,
 * so CMD's exit or a signal ends them at once; a single HTTP try is bounded
 * by CALLBACK_ATTEMPT_TIMEOUT_MS.
 */
#include "cli/common.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "cli/proc.h"
#include "sign.h"
#include "timeutil.h"
#include "util.h"

#define CALLBACK_DEFAULT_TIMEOUT_MS 60000
#define CALLBACK_MIN_TIMEOUT_MS     1000
#define CALLBACK_MIN_EVERY_MS       100
#define CALLBACK_MAX_DURATION_MS    (24LL * 3600 * 1000)
#define CALLBACK_CONNECT_TIMEOUT_MS 5000
#define CALLBACK_ATTEMPT_TIMEOUT_MS 15000 /* one try, at most */
#define CALLBACK_MIN_ATTEMPT_MS     1000  /* one try, at least, even near the deadline */
#define CALLBACK_BACKOFF_MIN_MS     250
#define CALLBACK_BACKOFF_MAX_MS     10000
#define CALLBACK_STEP_MAX           64   /* the server's limit on a step name, in bytes */
#define CALLBACK_MESSAGE_MAX        4096 /* and on error.message; longer is cut */
#define CALLBACK_MSG_ID_BYTES       16   /* random bytes in a webhook-id */
#define CALLBACK_MSG_ID_LEN         (3 + 2 * CALLBACK_MSG_ID_BYTES + 1) /* "cb_" + hex + NUL */
#define CALLBACK_EXIT_NOT_FOUND     127 /* CMD not found, as a shell says it */
#define CALLBACK_EXIT_CANNOT_RUN    126

enum callback_opt {
    CALLBACK_OPT_SECRET_ENV = CLI_OPT_COMMAND,
    CALLBACK_OPT_JOB,
    CALLBACK_OPT_ATTEMPT,
    CALLBACK_OPT_DATA,
    CALLBACK_OPT_RESULT,
    CALLBACK_OPT_MESSAGE,
    CALLBACK_OPT_STEP,
    CALLBACK_OPT_RUN_ID,
    CALLBACK_OPT_TIMEOUT,
    CALLBACK_OPT_STRICT,
    CALLBACK_OPT_EVERY,
};

/* What STATUS says, and the "status" the body carries for it. */
enum callback_status {
    CALLBACK_STEP,
    CALLBACK_HEARTBEAT,
    CALLBACK_RUNNING,
    CALLBACK_SUCCEEDED,
    CALLBACK_FAILED,
};

/* `step NAME` is a running runner that reached NAME: the body's status list
 * is heartbeat|running|succeeded|failed, and "step" says which one. */
static const struct {
    const char *word;
    const char *wire;
} callback_statuses[] = {
    [CALLBACK_STEP] = {"step", "running"},       [CALLBACK_HEARTBEAT] = {"heartbeat", "heartbeat"},
    [CALLBACK_RUNNING] = {"running", "running"}, [CALLBACK_SUCCEEDED] = {"succeeded", "succeeded"},
    [CALLBACK_FAILED] = {"failed", "failed"},
};

struct callback_args {
    const char *secret_env;
    const char *job;
    long attempt; /* 0: not given */
    const char *data;
    const char *result;
    const char *message;
    const char *step;
    const char *run_id;
    int64_t timeout_ms;
    int64_t every_ms; /* 0: not given */
    bool strict;
};

/* One invocation's connection and key. */
struct callback {
    struct client client;
    struct client_path path; /* empty: the client's url is the whole callback url */
    struct sign_key key;     /* wiped at the end */
    int wake_fd;             /* readable: stop waiting between tries; -1 for none */
};

/* How one callback ended. */
enum callback_outcome {
    CALLBACK_DELIVERED, /* a 2xx */
    CALLBACK_REFUSED,   /* a definite answer that is not a 2xx: a 4xx, or a 1xx/3xx */
    CALLBACK_GAVE_UP,   /* no answer, 5xx or 429 until the time ran out (or we were woken) */
    CALLBACK_BROKEN,    /* could not even be sent: out of memory, no random bytes */
};

static int callback_on_option(void *ctx, int opt, const char *arg);

static const struct option callback_options[] = {
    {"secret-env", required_argument, NULL, CALLBACK_OPT_SECRET_ENV},
    {"job", required_argument, NULL, CALLBACK_OPT_JOB},
    {"attempt", required_argument, NULL, CALLBACK_OPT_ATTEMPT},
    {"data", required_argument, NULL, CALLBACK_OPT_DATA},
    {"result", required_argument, NULL, CALLBACK_OPT_RESULT},
    {"message", required_argument, NULL, CALLBACK_OPT_MESSAGE},
    {"step", required_argument, NULL, CALLBACK_OPT_STEP},
    {"run-id", required_argument, NULL, CALLBACK_OPT_RUN_ID},
    {"timeout", required_argument, NULL, CALLBACK_OPT_TIMEOUT},
    {"strict", no_argument, NULL, CALLBACK_OPT_STRICT},
    {"every", required_argument, NULL, CALLBACK_OPT_EVERY},
    {NULL, 0, NULL, 0},
};

/* clang-format off */
static const struct cli_command callback_command = {
    .name = "callback",
    .synopsis = "--secret-env NAME --job ID --attempt N STATUS [NAME] [options]\n"
                "       drover callback ... heartbeat --every D [options] -- CMD [ARGS...]",
    .description =
        "Report to drover from an external runner (a CI workflow step, a VM agent):\n"
        "POST a signed callback to /v1/callbacks/ID, retried until the server takes it\n"
        "or --timeout has passed.\n"
        "\n"
        "STATUS is one of:\n"
        "  step NAME [--data JSON]          the runner reached step NAME (sent as status\n"
        "                                   \"running\" with \"step\"); JSON, any value, is\n"
        "                                   the step's checkpoint data\n"
        "  heartbeat                        the runner is alive\n"
        "  running                          the runner has started\n"
        "  succeeded [--result JSON]        done; JSON, any value, is the job's result\n"
        "  failed --message M [--step S]    failed (in step S)\n"
        "--run-id R (the runner's own id for the run) goes with any status.\n"
        "\n"
        "The body is the JSON object {attempt, status, step, data, run_id, result,\n"
        "error: {message, step}}, without the fields not given, signed per Standard\n"
        "Webhooks (headers webhook-id, webhook-timestamp, webhook-signature) with the\n"
        "whsec_ secret held by the environment variable that --secret-env names. The\n"
        "secret is never taken from the command line and never printed. A callback's\n"
        "webhook-id is drawn once and kept on all its retries, so the server can drop\n"
        "duplicates.\n"
        "\n"
        "The url (--url, else $DROVER_URL; here there is no default) is either the\n"
        "server's base url, to which /v1/callbacks/ID is appended, or the whole\n"
        "callback url (its path ends in /v1/callbacks/SOMETHING), used as is. No bearer\n"
        "token is sent (--token and DROVER_TOKEN are ignored): the signature\n"
        "authenticates.\n"
        "\n"
        "No answer, a 5xx or a 429 is retried with exponential backoff and jitter\n"
        "(250 ms doubling up to 10 s, or longer when the server's Retry-After asks for\n"
        "it) until --timeout has passed; a Retry-After beyond that ends the retries. A\n"
        "callback still not delivered then is one 'drover: warning: ...' line on\n"
        "stderr and exit status 0, so that a network glitch does not fail the runner's\n"
        "step; with --strict the exit status is 7.\n"
        "A 4xx is a definite refusal (bad signature, unknown job, an attempt that is\n"
        "over): it is not retried, the server's message goes to stderr, and the exit\n"
        "status is 5 (401, 403), 3 (404), 4 (409) or 6 (other 4xx), with or without\n"
        "--strict.\n"
        "\n"
        "heartbeat --every D -- CMD [ARGS...] runs CMD (stdin, stdout and stderr\n"
        "shared, in a process group of its own) and sends a heartbeat right away and\n"
        "then every D while CMD runs, each a new callback retried for at most the\n"
        "shorter of --timeout and D. A heartbeat not delivered or refused is only a\n"
        "warning. SIGTERM and SIGINT are passed on to CMD's process group. The exit\n"
        "status is CMD's (128+N when signal N ended it; 127 when CMD is not found, 126\n"
        "when it cannot be run); --strict does not apply.\n"
        "\n"
        "Durations: a number and a unit, ms, s, m or h (200ms, 0.5s, 30s, 2m); a bare\n"
        "number is seconds.\n",
    .options_help =
        "  --secret-env NAME  the environment variable holding the whsec_ secret (required)\n"
        "  --job ID           the job's id (required)\n"
        "  --attempt N        the attempt reported on, from 1 (required)\n"
        "  --data JSON        step: the step's checkpoint data, any JSON value\n"
        "  --result JSON      succeeded: the job's result, any JSON value\n"
        "  --message M        failed: what went wrong (required; cut to 4096 bytes)\n"
        "  --step S           failed: the step that failed\n"
        "  --run-id R         the runner's id for this run, 1-256 bytes (any status)\n"
        "  --timeout D        stop retrying after D, 1s to 24h (default 60s)\n"
        "  --strict           exit 7, not 0, when the callback was not delivered\n"
        "  --every D          heartbeat: one every D while CMD runs, 100ms to 24h\n",
    .json_help = "print the server's reply on stdout (nothing is printed without it;\n"
                 "                 not with --every)",
    .options = callback_options,
    .arg_name = "STATUS",
    .min_args = 1,
    .max_args = 2,
    .on_option = callback_on_option,
};
/* clang-format on */

/*
 * A duration: "200ms", "0.5s", "30s", "2m", "1h", or a bare number of
 * seconds, in ms (fractions below a millisecond are dropped). -1 when it is
 * none of these or outside [min_ms, CALLBACK_MAX_DURATION_MS].
 */
static int64_t callback_parse_duration(const char *s, int64_t min_ms)
{
    const char *p = s;
    int64_t whole = 0, frac = 0, frac_scale = 1;
    int digits = 0;

    for (; isdigit((unsigned char)*p); p++, digits++) {
        if (whole > 1000000000)
            return -1;
        whole = whole * 10 + (*p - '0');
    }
    if (*p == '.') {
        for (p++; isdigit((unsigned char)*p); p++, digits++) {
            if (frac_scale < 1000000) {
                frac = frac * 10 + (*p - '0');
                frac_scale *= 10;
            }
        }
    }
    if (digits == 0)
        return -1;

    int64_t unit;
    if (strcmp(p, "ms") == 0)
        unit = 1;
    else if (*p == '\0' || strcmp(p, "s") == 0)
        unit = 1000;
    else if (strcmp(p, "m") == 0)
        unit = 60 * 1000;
    else if (strcmp(p, "h") == 0)
        unit = 3600 * 1000;
    else
        return -1;

    int64_t ms = whole * unit + frac * unit / frac_scale;
    return ms < min_ms || ms > CALLBACK_MAX_DURATION_MS ? -1 : ms;
}

static int callback_on_option(void *ctx, int opt, const char *arg)
{
    struct callback_args *a = ctx;
    char *end;

    switch (opt) {
    case CALLBACK_OPT_SECRET_ENV: a->secret_env = arg; return 0;
    case CALLBACK_OPT_JOB: a->job = arg; return 0;
    case CALLBACK_OPT_DATA: a->data = arg; return 0;
    case CALLBACK_OPT_RESULT: a->result = arg; return 0;
    case CALLBACK_OPT_MESSAGE: a->message = arg; return 0;
    case CALLBACK_OPT_STEP: a->step = arg; return 0;
    case CALLBACK_OPT_RUN_ID: a->run_id = arg; return 0;
    case CALLBACK_OPT_STRICT: a->strict = true; return 0;
    case CALLBACK_OPT_ATTEMPT:
        errno = 0;
        a->attempt = strtol(arg, &end, 10);
        if (errno || end == arg || *end || !isdigit((unsigned char)*arg) || a->attempt < 1 ||
            a->attempt > INT32_MAX)
            return cli_usage_error(&callback_command, "--attempt must be a number from 1 to %d",
                                   INT32_MAX);
        return 0;
    case CALLBACK_OPT_TIMEOUT:
        if ((a->timeout_ms = callback_parse_duration(arg, CALLBACK_MIN_TIMEOUT_MS)) < 0)
            return cli_usage_error(&callback_command,
                                   "--timeout must be a duration from 1s to 24h, e.g. 30s or 2m");
        return 0;
    case CALLBACK_OPT_EVERY:
        if ((a->every_ms = callback_parse_duration(arg, CALLBACK_MIN_EVERY_MS)) < 0)
            return cli_usage_error(&callback_command,
                                   "--every must be a duration from 100ms to 24h, e.g. 30s");
        return 0;
    default: return cli_usage_error(&callback_command, "unhandled option");
    }
}

/* --- arguments and body -------------------------------------------------- */

/* Refuse an option given with a status it does not go with. */
static int callback_only_with(const char *value, const char *option, enum callback_status want,
                              enum callback_status got)
{
    if (value && got != want)
        return cli_usage_error(&callback_command, "%s goes only with '%s'", option,
                               callback_statuses[want].word);
    return 0;
}

/*
 * Check the positional arguments (STATUS [NAME]) and the options against each
 * other. cmd: what followed "--", or NULL. OUT status, step_name.
 */
static int callback_check_args(const struct callback_args *a, char **args, int nargs, char **cmd,
                               enum callback_status *status, const char **step_name)
{
    size_t i = 0;
    int rc;

    while (i < ARRAY_SIZE(callback_statuses) && strcmp(args[0], callback_statuses[i].word) != 0)
        i++;
    if (i == ARRAY_SIZE(callback_statuses))
        return cli_usage_error(&callback_command,
                               "unknown STATUS '%s' (want step, heartbeat, running, succeeded or "
                               "failed)",
                               args[0]);
    *status = (enum callback_status)i;
    *step_name = NULL;
    if (*status == CALLBACK_STEP) {
        if (nargs < 2)
            return cli_usage_error(&callback_command, "'step' needs a step NAME");
        *step_name = args[1];
        if (strlen(*step_name) > CALLBACK_STEP_MAX)
            return cli_usage_error(&callback_command, "the step NAME is longer than %d bytes",
                                   CALLBACK_STEP_MAX);
    } else if (nargs > 1) {
        return cli_usage_error(&callback_command, "unexpected argument '%s'", args[1]);
    }

    if (!a->secret_env)
        return cli_usage_error(&callback_command, "missing --secret-env NAME");
    if (!a->job)
        return cli_usage_error(&callback_command, "missing --job ID");
    if (!*a->job)
        return cli_usage_error(&callback_command, "empty --job");
    if (!a->attempt)
        return cli_usage_error(&callback_command, "missing --attempt N");
    if ((rc = callback_only_with(a->data, "--data", CALLBACK_STEP, *status)) < 0 ||
        (rc = callback_only_with(a->result, "--result", CALLBACK_SUCCEEDED, *status)) < 0 ||
        (rc = callback_only_with(a->message, "--message", CALLBACK_FAILED, *status)) < 0 ||
        (rc = callback_only_with(a->step, "--step", CALLBACK_FAILED, *status)) < 0)
        return rc;
    if (*status == CALLBACK_FAILED && !a->message)
        return cli_usage_error(&callback_command, "'failed' needs --message M");
    if (a->step && (!*a->step || strlen(a->step) > CALLBACK_STEP_MAX))
        return cli_usage_error(&callback_command, "--step must be 1 to %d bytes",
                               CALLBACK_STEP_MAX);
    if (a->run_id && (!*a->run_id || strlen(a->run_id) > 256))
        return cli_usage_error(&callback_command, "--run-id must be 1 to 256 bytes");
    if (a->every_ms && *status != CALLBACK_HEARTBEAT)
        return cli_usage_error(&callback_command, "--every goes only with 'heartbeat'");
    if (a->every_ms && !cmd)
        return cli_usage_error(&callback_command, "--every needs '-- CMD [ARGS...]'");
    if (cmd && !a->every_ms)
        return cli_usage_error(&callback_command, "'-- CMD' goes only with heartbeat --every");
    return 0;
}

/* body[key] = the string value; a usage error when it is not UTF-8. */
static int callback_set_string(json_t *obj, const char *key, const char *what, const char *value,
                               size_t len)
{
    json_t *s = json_stringn(value, len);
    if (!s)
        return cli_usage_error(&callback_command, "%s is not valid UTF-8", what);
    return json_object_set_new(obj, key, s) < 0 ? -DRV_ENOMEM : 0;
}

/* body[key] = the JSON text parsed (any value); a usage error when it does not parse. */
static int callback_set_json(json_t *obj, const char *key, const char *what, const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!v)
        return cli_usage_error(&callback_command, "%s is not valid JSON: %s (line %d)", what,
                               jerr.text, jerr.line);
    return json_object_set_new(obj, key, v) < 0 ? -DRV_ENOMEM : 0;
}

/* The length of s cut to at most max bytes, on a UTF-8 character boundary. */
static size_t callback_cut_utf8(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max)
        return n;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}

/* The body for status, as compact JSON text (caller frees). Usage errors are reported here. */
static int callback_build_body(const struct callback_args *a, enum callback_status status,
                               const char *step_name, char **out)
{
    json_t *body = json_object(), *error = NULL;
    int rc = -DRV_ENOMEM;

    *out = NULL;
    if (!body || json_object_set_new(body, "attempt", json_integer(a->attempt)) < 0 ||
        json_object_set_new(body, "status", json_string(callback_statuses[status].wire)) < 0)
        goto out;
    if ((step_name && (rc = callback_set_string(body, "step", "the step NAME", step_name,
                                                strlen(step_name))) < 0) ||
        (a->data && (rc = callback_set_json(body, "data", "--data", a->data)) < 0) ||
        (a->run_id && (rc = callback_set_string(body, "run_id", "--run-id", a->run_id,
                                                strlen(a->run_id))) < 0) ||
        (a->result && (rc = callback_set_json(body, "result", "--result", a->result)) < 0))
        goto out;
    if (status == CALLBACK_FAILED) {
        rc = -DRV_ENOMEM;
        if (!(error = json_object()) || json_object_set(body, "error", error) < 0)
            goto out;
        if ((rc = callback_set_string(error, "message", "--message", a->message,
                                      callback_cut_utf8(a->message, CALLBACK_MESSAGE_MAX))) < 0 ||
            (a->step &&
             (rc = callback_set_string(error, "step", "--step", a->step, strlen(a->step))) < 0))
            goto out;
    }
    rc = (*out = json_dumps(body, JSON_COMPACT)) ? 0 : -DRV_ENOMEM;
out:
    json_decref(error);
    json_decref(body);
    return rc;
}

/*
 * The callback url for job: url as is when its path already ends in
 * /v1/callbacks/SEGMENT, else /v1/callbacks/JOB (percent-encoded) put at the
 * end of its path, before any query. OUT out (caller frees).
 */
static int callback_url(const char *url, const char *job, char **out)
{
    static const char suffix[] = "/v1/callbacks";
    size_t suffix_len = sizeof(suffix) - 1;
    size_t path_end = strcspn(url, "?#"), end = path_end;
    struct client_path path;

    *out = NULL;
    while (end > 0 && url[end - 1] == '/')
        end--;
    const char *slash = memrchr(url, '/', end);
    if (slash && slash + 1 < url + end && (size_t)(slash - url) >= suffix_len &&
        memcmp(slash - suffix_len, suffix, suffix_len) == 0)
        return (*out = strdup(url)) ? 0 : -DRV_ENOMEM;

    client_path_init(&path, suffix);
    client_path_segment(&path, job);
    if (path.overflow)
        return cli_usage_error(&callback_command, "--job is too long");
    size_t rest = strlen(url + path_end), n = end + path.len + rest + 1;
    if (!(*out = malloc(n)))
        return -DRV_ENOMEM;
    snprintf(*out, n, "%.*s%s%s", (int)end, url, path.buf, url + path_end);
    return 0;
}

/* --- sending ------------------------------------------------------------- */

/* A webhook-id: "cb_" and 32 hex digits. OUT out: CALLBACK_MSG_ID_LEN bytes. */
static int callback_new_id(char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[CALLBACK_MSG_ID_BYTES];

    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -DRV_EINTERNAL;
    memcpy(out, "cb_", 3);
    for (size_t i = 0; i < sizeof(raw); i++) {
        out[3 + 2 * i] = hex[raw[i] >> 4];
        out[3 + 2 * i + 1] = hex[raw[i] & 0xf];
    }
    out[CALLBACK_MSG_ID_LEN - 1] = '\0';
    return 0;
}

/* A wait drawn from [backoff/2, backoff] (jitter spreads runners that failed together). */
static int64_t callback_jitter(int64_t backoff)
{
    uint32_t r;
    if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
        return backoff;
    return backoff / 2 + (int64_t)(r % (uint32_t)(backoff / 2 + 1));
}

/* Wait ms, or until wake_fd (when >= 0) is readable. Returns true when woken. */
static bool callback_sleep(int wake_fd, int64_t ms)
{
    int64_t until = time_mono_ms() + ms;
    struct pollfd pfd = {.fd = wake_fd, .events = POLLIN};

    for (;;) {
        int64_t left = until - time_mono_ms();
        if (left <= 0)
            return false;
        int n = poll(&pfd, wake_fd >= 0 ? 1 : 0, (int)left);
        if (n > 0)
            return true;
        if (n < 0 && errno != EINTR)
            return false; /* cannot wait: try again now rather than never */
    }
}

/* One signed POST of body, with a fresh webhook-timestamp. */
static int callback_post(struct callback *cb, const char *msg_id, const char *body, size_t len,
                         struct client_response *resp, struct errmsg *err)
{
    char sig[SIGN_WEBHOOK_SIG_LEN];
    char h_id[sizeof("webhook-id: ") + CALLBACK_MSG_ID_LEN];
    char h_ts[64];
    char h_sig[sizeof("webhook-signature: ") + SIGN_WEBHOOK_SIG_LEN];
    int64_t ts = time_now_ms() / 1000;

    if (sign_webhook(&cb->key, msg_id, ts, body, len, sig) < 0) {
        memset(resp, 0, sizeof(*resp));
        resp->retry_after_s = -1;
        return errmsg_set(err, -DRV_EINTERNAL, "cannot sign the callback");
    }
    snprintf(h_id, sizeof(h_id), "webhook-id: %s", msg_id);
    snprintf(h_ts, sizeof(h_ts), "webhook-timestamp: %lld", (long long)ts);
    snprintf(h_sig, sizeof(h_sig), "webhook-signature: %s", sig);
    const char *const headers[] = {h_id, h_ts, h_sig, NULL};
    struct client_raw raw = {
        .body = body,
        .body_len = len,
        .content_type = "application/json",
        .headers = headers,
    };
    return client_request_raw(&cb->client, "POST", &cb->path, &raw, resp, err);
}

/*
 * Deliver body: sign and POST it, retrying no answer, 5xx and 429 with
 * backoff until budget_ms has passed. OUT resp: the last answer (release it),
 * err: why it was not delivered, tries: how many POSTs were made.
 */
static enum callback_outcome callback_send(struct callback *cb, const char *body, int64_t budget_ms,
                                           struct client_response *resp, struct errmsg *err,
                                           int *tries)
{
    char msg_id[CALLBACK_MSG_ID_LEN];
    int64_t deadline = time_mono_ms() + budget_ms;
    int64_t backoff = CALLBACK_BACKOFF_MIN_MS;
    size_t len = strlen(body);

    *tries = 0;
    memset(resp, 0, sizeof(*resp));
    if (callback_new_id(msg_id) < 0) {
        errmsg_set(err, -DRV_EINTERNAL, "cannot draw random bytes for the webhook-id");
        return CALLBACK_BROKEN;
    }
    for (;;) {
        int64_t left = deadline - time_mono_ms();
        int64_t attempt_ms = left < CALLBACK_MIN_ATTEMPT_MS       ? CALLBACK_MIN_ATTEMPT_MS
                             : left > CALLBACK_ATTEMPT_TIMEOUT_MS ? CALLBACK_ATTEMPT_TIMEOUT_MS
                                                                  : left;
        cb->client.total_timeout_ms = attempt_ms;
        cb->client.connect_timeout_ms =
            attempt_ms < CALLBACK_CONNECT_TIMEOUT_MS ? attempt_ms : CALLBACK_CONNECT_TIMEOUT_MS;

        (*tries)++;
        int rc = callback_post(cb, msg_id, body, len, resp, err);
        long status = resp->status;
        if (status >= 200 && status < 300)
            return CALLBACK_DELIVERED;
        if (status == 0 && rc != -DRV_EUNAVAILABLE)
            return CALLBACK_BROKEN;
        if (status != 0 && status != 429 && (status < 500 || status > 599))
            return CALLBACK_REFUSED;

        int64_t wait = callback_jitter(backoff);
        backoff = backoff * 2 > CALLBACK_BACKOFF_MAX_MS ? CALLBACK_BACKOFF_MAX_MS : backoff * 2;
        if (resp->retry_after_s >= 0 && resp->retry_after_s * 1000 > wait)
            wait = resp->retry_after_s * 1000;
        if (time_mono_ms() + wait >= deadline)
            return CALLBACK_GAVE_UP;
        client_response_release(resp);
        resp->retry_after_s = -1;
        if (callback_sleep(cb->wake_fd, wait))
            return CALLBACK_GAVE_UP;
    }
}

/* A single callback: the exit code of `drover callback STATUS` without --every. */
static int callback_once(struct callback *cb, const struct callback_args *a, const char *body,
                         const char *status_word, bool json)
{
    struct client_response resp;
    struct errmsg err;
    int tries, exit_code = CLI_EXIT_OK;
    int64_t started = time_mono_ms();

    switch (callback_send(cb, body, a->timeout_ms, &resp, &err, &tries)) {
    case CALLBACK_DELIVERED:
        if (json && resp.len > 0)
            cli_print_body(&resp, stdout);
        break;
    case CALLBACK_REFUSED:
        fprintf(stderr, "drover: %s callback refused: %s\n", status_word, err.text);
        exit_code = cli_exit_for_status(resp.status);
        break;
    case CALLBACK_GAVE_UP:
        fprintf(stderr, "drover: %s%s callback not delivered after %d %s in %.1f s: %s\n",
                a->strict ? "" : "warning: ", status_word, tries, tries == 1 ? "try" : "tries",
                (double)(time_mono_ms() - started) / 1000.0, err.text);
        exit_code = a->strict ? CLI_EXIT_SERVER : CLI_EXIT_OK;
        break;
    case CALLBACK_BROKEN:
        fprintf(stderr, "drover: %s\n", err.text);
        exit_code = CLI_EXIT_SERVER;
        break;
    }
    client_response_release(&resp);
    return exit_code;
}

/* --- heartbeat --every --------------------------------------------------- */

/* One heartbeat while CMD runs: delivered or a warning. */
static void callback_heartbeat(struct callback *cb, const char *body, int64_t budget_ms)
{
    struct client_response resp;
    struct errmsg err;
    int tries;

    switch (callback_send(cb, body, budget_ms, &resp, &err, &tries)) {
    case CALLBACK_DELIVERED: break;
    case CALLBACK_REFUSED:
        fprintf(stderr, "drover: warning: heartbeat refused: %s\n", err.text);
        break;
    case CALLBACK_GAVE_UP:
    case CALLBACK_BROKEN:
        fprintf(stderr, "drover: warning: heartbeat not delivered: %s\n", err.text);
        break;
    }
    client_response_release(&resp);
}

/* Take what the signalfd holds: reap CMD, pass SIGTERM and SIGINT on to its group. */
static void callback_on_signals(int sigfd, struct proc *child)
{
    struct signalfd_siginfo si;

    while (read(sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo != SIGCHLD) {
            proc_signal(child, (int)si.ssi_signo);
            continue;
        }
        int status;
        pid_t pid;
        while (!child->exited && (pid = waitpid(child->pid, &status, WNOHANG)) != 0) {
            if (pid == child->pid)
                proc_set_exited(child, status);
            else if (pid < 0 && errno != EINTR)
                break;
        }
    }
}

/* The exit status that tells how CMD ended. */
static int callback_child_exit(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return CLI_EXIT_SERVER;
}

/* Run cmd and heartbeat every a->every_ms while it lives; returns CMD's exit status. */
static int callback_every(struct callback *cb, const struct callback_args *a, const char *body,
                          char **cmd)
{
    extern char **environ;
    sigset_t block, old_mask;
    struct proc child;
    struct errmsg err;
    int sigfd = -1, exit_code;
    int64_t budget = a->timeout_ms < a->every_ms ? a->timeout_ms : a->every_ms;

    proc_init(&child);
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    if (sigprocmask(SIG_BLOCK, &block, &old_mask) < 0) {
        fprintf(stderr, "drover: cannot set up signals: %s\n", strerror(errno));
        return CLI_EXIT_SERVER;
    }
    if ((sigfd = signalfd(-1, &block, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
        fprintf(stderr, "drover: cannot set up signals: %s\n", strerror(errno));
        exit_code = CLI_EXIT_SERVER;
        goto out;
    }
    if (proc_spawn_inherit(&child, cmd, environ, &err) < 0) {
        exit_code = errno == ENOENT ? CALLBACK_EXIT_NOT_FOUND : CALLBACK_EXIT_CANNOT_RUN;
        fprintf(stderr, "drover: %s\n", err.text);
        goto out;
    }
    cb->wake_fd = sigfd;

    /* The first heartbeat right away, even for a CMD that is over at once. */
    int64_t next = time_mono_ms() + a->every_ms;
    callback_heartbeat(cb, body, budget);
    for (;;) {
        int64_t wait = next - time_mono_ms();
        struct pollfd pfd = {.fd = sigfd, .events = POLLIN};
        int n = poll(&pfd, 1, wait > 0 ? (int)wait : 0);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "drover: poll: %s\n", strerror(errno));
            break;
        }
        if (n > 0)
            callback_on_signals(sigfd, &child);
        if (child.exited)
            break;
        if (time_mono_ms() >= next) {
            next = time_mono_ms() + a->every_ms;
            callback_heartbeat(cb, body, budget);
        }
    }
    if (!child.exited) {
        /* poll() failed: wait for CMD the blocking way, it decides the exit status. */
        int status = 0;
        pid_t pid;
        while ((pid = waitpid(child.pid, &status, 0)) < 0 && errno == EINTR)
            ;
        proc_set_exited(&child, pid == child.pid ? status : W_EXITCODE(CLI_EXIT_SERVER, 0));
    }
    exit_code = callback_child_exit(child.status);
out:
    cb->wake_fd = -1;
    if (sigfd >= 0)
        close(sigfd);
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    proc_release(&child);
    return exit_code;
}

/* --- entry point ----------------------------------------------------------- */

/*
 * Connect cb to the callback url for a->job and load the secret. Returns 0,
 * or the exit code after reporting the problem.
 */
static int callback_setup(struct callback *cb, const struct callback_args *a,
                          const struct cli_common *common)
{
    struct errmsg err;
    char *url = NULL;
    int rc;

    if (!common->url) {
        cli_usage_error(&callback_command, "no url: give --url or set DROVER_URL");
        return CLI_EXIT_USAGE;
    }
    const char *secret = getenv(a->secret_env);
    if (!secret || !*secret) {
        cli_usage_error(&callback_command, "the environment variable %s (--secret-env) is not set",
                        a->secret_env);
        return CLI_EXIT_USAGE;
    }
    if (sign_secret_parse(secret, &cb->key, &err) < 0) {
        /* err never quotes the secret */
        cli_usage_error(&callback_command, "$%s: %s", a->secret_env, err.text);
        return CLI_EXIT_USAGE;
    }
    if ((rc = callback_url(common->url, a->job, &url)) < 0) {
        if (rc == -DRV_ENOMEM)
            fprintf(stderr, "drover: out of memory\n");
        return rc == -DRV_ENOMEM ? CLI_EXIT_SERVER : CLI_EXIT_USAGE;
    }
    rc = client_init(&cb->client, url, NULL, &err);
    free(url);
    if (rc < 0) {
        fprintf(stderr, "drover: %s\n", err.text);
        return rc == -DRV_EBAD_REQUEST ? CLI_EXIT_USAGE : CLI_EXIT_SERVER;
    }
    client_path_init(&cb->path, "");
    return CLI_EXIT_OK;
}

int cli_callback_main(int argc, char **argv)
{
    struct callback_args args = {.timeout_ms = CALLBACK_DEFAULT_TIMEOUT_MS};
    struct callback cb = {.wake_fd = -1};
    struct cli_common common;
    enum callback_status status = CALLBACK_HEARTBEAT;
    const char *step_name = NULL;
    char *body = NULL;
    int first, exit_code;

    /* Our options end at the first "--"; what follows is CMD, untouched. */
    int dashes = 1;
    while (dashes < argc && strcmp(argv[dashes], "--") != 0)
        dashes++;
    if (cli_parse(&callback_command, dashes, argv, &args, &common, &first) < 0)
        return CLI_EXIT_USAGE;
    if (common.help)
        return CLI_EXIT_OK;
    char **cmd = dashes < argc ? argv + dashes + 1 : NULL; /* argv[argc] is NULL */
    if (cmd && !*cmd) {
        cli_usage_error(&callback_command, "missing CMD after '--'");
        return CLI_EXIT_USAGE;
    }
    if (callback_check_args(&args, argv + first, dashes - first, cmd, &status, &step_name) < 0)
        return CLI_EXIT_USAGE;

    int rc = callback_build_body(&args, status, step_name, &body);
    if (rc < 0) {
        if (rc == -DRV_EBAD_REQUEST)
            return CLI_EXIT_USAGE;
        fprintf(stderr, "drover: out of memory\n");
        return CLI_EXIT_SERVER;
    }
    if ((exit_code = callback_setup(&cb, &args, &common)) != CLI_EXIT_OK)
        goto out;

    if (args.every_ms)
        exit_code = callback_every(&cb, &args, body, cmd);
    else
        exit_code = callback_once(&cb, &args, body, callback_statuses[status].word, common.json);
out:
    OPENSSL_cleanse(&cb.key, sizeof(cb.key));
    client_release(&cb.client);
    free(body);
    fflush(stdout);
    return exit_code;
}
