/*
 * worker.c - `drover worker QUEUE -- CMD ARGS...`: a pull worker. It claims
 * jobs from QUEUE and runs CMD once per job (the child's plumbing is in
 * proc.c), holds each job's lease with heartbeats, turns `::step` and
 * `::result` lines into calls, and reports how CMD ended.
 *
 * One thread, one loop: poll() over a signalfd (SIGCHLD, SIGTERM, SIGINT) and
 * every child's stdout and stderr, sleeping until the next deadline (a
 * heartbeat, a kill escalation, the end of a child's output drain, a retry
 * after backoff, the next claim). HTTP goes through the blocking client
 * (client.c): each lease call is bounded by WORKER_CALL_TIMEOUT_MS, so the
 * loop never waits on one longer than that. The one long call is the claim
 * long-poll, which the worker makes only while it has no job at all (nothing
 * else needs the loop then); with jobs on hand it claims with wait_s 0, at
 * most once per WORKER_CLAIM_POLL_MS.
 *
 * A claim in flight is never abandoned: the server may have leased jobs to it,
 * which would then sit unstarted until their lease ran out. So an idle worker
 * notices SIGTERM when its claim returns, within --wait seconds.
 *
 * Calls for a job (steps, then its complete or fail) wait in that job's queue
 * and go out in order. No answer or a 5xx puts the whole worker in backoff
 * (WORKER_BACKOFF_MIN_MS doubling to WORKER_BACKOFF_MAX_MS): the server is
 * down or restarting, so every call waits, and the queues keep what is owed.
 */
#include "cli/common.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/proc.h"
#include "timeutil.h"
#include "util.h"

#define WORKER_MAX_CONCURRENCY    256
#define WORKER_MAX_CLAIM          100 /* the server's limit on one claim's "max" */
#define WORKER_MAX_WAIT_S         60  /* the server's limit on "wait_s" */
#define WORKER_DEFAULT_WAIT_S     30
#define WORKER_MAX_NAME_BYTES     128
#define WORKER_CONNECT_TIMEOUT_MS 3000L
#define WORKER_CALL_TIMEOUT_MS    5000L /* any call, beyond a claim's wait_s */
#define WORKER_CLAIM_POLL_MS      1000  /* with jobs on hand: claim (wait_s 0) at most this often */
#define WORKER_BACKOFF_MIN_MS     200
#define WORKER_BACKOFF_MAX_MS     5000
#define WORKER_HEARTBEAT_MIN_MS   200   /* never heartbeat more often than this */
#define WORKER_HEARTBEAT_DEF_MS   1000  /* when the lease's length cannot be told */
#define WORKER_KILL_GRACE_MS      5000  /* SIGTERM to the group, then SIGKILL after this */
#define WORKER_DRAIN_MS           1000  /* after CMD exits: wait this long for its pipes to close */
#define WORKER_STOP_REPORT_MS     10000 /* forced stop: give the server this long for the reports */
#define WORKER_MAX_QUEUED_CALLS   256   /* a job's unsent steps; past it CMD's stdout is not read */
#define WORKER_STEP_NAME_MAX      64    /* the server's limits: a step name, */
#define WORKER_MESSAGE_MAX        4096  /* and error.message, in bytes */
#define WORKER_OUTPUT_NAME        "output" /* the artifact CMD's stdout becomes */
#define WORKER_OUTPUT_TYPE        "text/plain"
#define WORKER_OUTPUT_DEFAULT     (16L * 1024 * 1024) /* the server's artifacts.max_bytes default */
#define WORKER_OUTPUT_MAX         (256L * 1024 * 1024) /* and its most */
#define WORKER_UPLOAD_MS_PER_MIB  1000L /* an upload's timeout grows with it: >= 1 MiB/s */

enum worker_opt {
    WORKER_OPT_CONCURRENCY = CLI_OPT_COMMAND,
    WORKER_OPT_WAIT,
    WORKER_OPT_NAME,
    WORKER_OPT_OUTPUT_MAX,
};

struct worker_args {
    int concurrency;
    int wait_s;
    const char *name;
    long output_max;
};

/* Why the worker signalled a job's process group. */
enum worker_kill {
    WORKER_KILL_NONE,
    WORKER_KILL_CANCELED,   /* its cancel was requested: report fail, the server cancels */
    WORKER_KILL_LEASE_LOST, /* not ours any more: report nothing */
    WORKER_KILL_STOPPED,    /* the worker was told twice to stop: report "worker stopped" */
};

enum worker_call_kind {
    WORKER_CALL_STEP,
    WORKER_CALL_COMPLETE,
    WORKER_CALL_FAIL,
    WORKER_CALL_OUTPUT, /* PUT the output artifact, before the complete or fail */
};

static const char *const worker_call_action[] = {
    [WORKER_CALL_STEP] = "steps",
    [WORKER_CALL_COMPLETE] = "complete",
    [WORKER_CALL_FAIL] = "fail",
    [WORKER_CALL_OUTPUT] = "output upload",
};

/* A lease call waiting to be sent. */
struct worker_call {
    struct worker_call *next;
    enum worker_call_kind kind;
    json_t *body; /* owned; the request body, "lease" is set when it is sent */
    char *raw;    /* owned; WORKER_CALL_OUTPUT: the bytes (body is NULL) */
    size_t raw_len;
};

/*
 * The tail of CMD's stdout, at most max bytes: a ring that grows up to max
 * as output comes, then keeps only the newest bytes.
 */
struct worker_output {
    char *buf; /* owned; cap bytes */
    size_t cap, start, len;
    uint64_t total; /* bytes CMD wrote in all */
};

struct worker;

struct worker_job {
    struct worker_job *next;
    struct worker *w;
    char *id;    /* owned */
    char *lease; /* owned; the current lease token, never printed */
    long attempt;
    int64_t heartbeat_ms;      /* the interval: a third of the lease */
    int64_t next_heartbeat_ms; /* monotonic */
    struct proc proc;
    enum worker_kill kill;
    int64_t kill_at_ms;  /* SIGKILL to the group then, if CMD still lives; 0 = none */
    int64_t drain_until; /* CMD exited: close its pipes then, even if still held open */
    bool ended;          /* CMD is gone and its pipes are closed (or it never started) */
    bool finished;       /* the outcome is decided: its report is queued, or there is none */
    char *step;          /* owned; the last step CMD reported, for error.step */
    json_t *result;      /* owned; the last ::result */
    struct worker_output output;
    struct worker_call *calls, **calls_tail;
    size_t n_calls;
};

struct worker {
    struct client client;
    const char *queue;
    char name[WORKER_MAX_NAME_BYTES + 1];
    int concurrency;
    int wait_s;
    size_t output_max; /* 0: no output artifact */
    char **cmd;        /* NULL-terminated, points into argv */
    bool json;
    int sigfd;
    struct worker_job *jobs;
    int n_jobs;
    int stopping;       /* 0 running; 1 draining (first signal); 2 killing (second) */
    int64_t give_up_at; /* forced stop: drop the reports still unsent then; 0 = not set */
    int exit_code;
    int64_t backoff_ms; /* the current backoff, 0 when the server answered last time */
    int64_t retry_at;   /* while in backoff: no call before this (monotonic) */
    int64_t next_claim_at;
    struct pollfd *pfds; /* owned; poll set, grown as needed */
    struct worker_job **pfd_jobs;
    size_t pfd_alloc;
};

static int worker_on_option(void *ctx, int opt, const char *arg);

static const struct option worker_options[] = {
    {"concurrency", required_argument, NULL, WORKER_OPT_CONCURRENCY},
    {"wait", required_argument, NULL, WORKER_OPT_WAIT},
    {"worker", required_argument, NULL, WORKER_OPT_NAME},
    {"output-max", required_argument, NULL, WORKER_OPT_OUTPUT_MAX},
    {NULL, 0, NULL, 0},
};

/* clang-format off */
static const struct cli_command worker_command = {
    .name = "worker",
    .synopsis = "QUEUE [options] -- CMD [ARGS...]",
    .description =
        "Claim jobs from QUEUE (POST /v1/queues/QUEUE/claim) and run CMD once per job,\n"
        "at most --concurrency at a time, each in a process group of its own. Everything\n"
        "after '--' is CMD and its arguments, run as given (searched in PATH).\n"
        "\n"
        "CMD's stdin is the job's payload (a JSON object and a newline), then end of\n"
        "file. While CMD runs, the worker heartbeats the job's lease (every third of the\n"
        "lease). When the job's cancel is requested, or its lease is lost, CMD's whole\n"
        "process group gets SIGTERM, then SIGKILL 5 s later.\n"
        "\n"
        "CMD's stdout, line by line (a line over 64 KiB is cut to its first 64 KiB):\n"
        "  ::step NAME [JSON]   report step NAME reached, JSON (any value) as its\n"
        "                       checkpoint data; kept even if the attempt fails later\n"
        "  ::result JSON        the job's result if CMD exits 0 (the last one counts)\n"
        "  any other line       printed on the worker's stdout as \"ID: LINE\"\n"
        "A ::step or ::result line that does not parse is logged and ignored.\n"
        "CMD's stderr is not printed; its last 4 KiB go into the error message.\n"
        "\n"
        "When CMD ends, its stdout (every line, ::step and ::result lines included) is\n"
        "uploaded as the job's artifact \"output\" (text/plain, PUT\n"
        "/v1/jobs/ID/artifacts/output under the lease), before the complete or fail.\n"
        "Only the last --output-max bytes are kept; should the server's limit\n"
        "(artifacts.max_bytes) be lower, the output is cut to it. A cut is logged.\n"
        "\n"
        "How a job ends:\n"
        "  exit status 0        complete, with the last ::result (if any)\n"
        "  any other status,    fail (retryable) with the message \"exit status N: TAIL\"\n"
        "  or a signal          (or \"killed by signal N (NAME): TAIL\"), TAIL being the\n"
        "                       end of its stderr, and the last step it reported\n"
        "  canceled             fail, which the server records as canceled\n"
        "  lease lost           nothing is reported: the job is no longer this worker's\n"
        "\n"
        "Environment of CMD: the worker's own (DROVER_TOKEN included, if set there), and\n"
        "  DROVER_JOB_ID        the job's id\n"
        "  DROVER_ATTEMPT       the attempt number, counting from 1\n"
        "  DROVER_CHECKPOINTS   the steps reported so far, earlier attempts included, as\n"
        "                       a JSON object {STEP: DATA}\n"
        "  DROVER_URL           the server's url (without any user:password)\n"
        "  DROVER_QUEUE         QUEUE\n"
        "\n"
        "Signals: SIGTERM or SIGINT stops claiming, lets the running commands finish\n"
        "and report, then exits 0. A second one sends their process groups SIGTERM\n"
        "(SIGKILL 5 s later), reports their jobs failed with \"worker stopped\", and\n"
        "exits. An idle worker sees the signal when its claim returns (--wait).\n"
        "\n"
        "Server unreachable or answering 5xx: every call is retried with backoff (up\n"
        "to 5 s apart) and logged on stderr; results wait until the server is back. A\n"
        "report answered 409 lease_lost is dropped with a message.\n"
        "\n"
        "Exit status of the worker: 0 once stopped by a signal; 2 for a usage error or\n"
        "a CMD not found; 3, 5 or 6 when the server refuses the claim (after the jobs on\n"
        "hand end); 7 when a forced stop had to drop reports the server did not take.\n",
    .options_help =
        "  --concurrency N   run at most N jobs at once, 1-256 (default 1)\n"
        "  --wait S          long-poll: a claim waits up to S seconds for a job, 0-60\n"
        "                    (default 30); also how long an idle worker takes to stop\n"
        "  --worker NAME     the name the server records for this worker, 1-128 bytes\n"
        "                    (default HOSTNAME:PID)\n"
        "  --output-max N    keep the last N bytes of CMD's stdout for the \"output\"\n"
        "                    artifact, 0-268435456 (default 16777216); 0: no artifact\n",
    .json_help = "log lines (stderr) and CMD's other stdout lines (stdout) as JSON objects,\n"
                 "                 one per line: {\"at\",\"job\",\"msg\"} and {\"job\",\"line\"}",
    .options = worker_options,
    .arg_name = "QUEUE",
    .min_args = 1,
    .max_args = 1,
    .on_option = worker_on_option,
};
/* clang-format on */

/* A whole decimal number from lo to hi, or -1. */
static long worker_parse_int(const char *arg, long lo, long hi)
{
    char *end;

    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || end == arg || *end || v < lo || v > hi)
        return -1;
    return v;
}

static int worker_on_option(void *ctx, int opt, const char *arg)
{
    struct worker_args *a = ctx;
    long v;

    switch (opt) {
    case WORKER_OPT_CONCURRENCY:
        if ((v = worker_parse_int(arg, 1, WORKER_MAX_CONCURRENCY)) < 0)
            return cli_usage_error(&worker_command, "--concurrency must be a number from 1 to %d",
                                   WORKER_MAX_CONCURRENCY);
        a->concurrency = (int)v;
        return 0;
    case WORKER_OPT_WAIT:
        if ((v = worker_parse_int(arg, 0, WORKER_MAX_WAIT_S)) < 0)
            return cli_usage_error(&worker_command, "--wait must be a number from 0 to %d",
                                   WORKER_MAX_WAIT_S);
        a->wait_s = (int)v;
        return 0;
    case WORKER_OPT_NAME:
        if (!*arg || strlen(arg) > WORKER_MAX_NAME_BYTES)
            return cli_usage_error(&worker_command, "--worker must be 1 to %d bytes",
                                   WORKER_MAX_NAME_BYTES);
        a->name = arg;
        return 0;
    case WORKER_OPT_OUTPUT_MAX:
        if ((v = worker_parse_int(arg, 0, WORKER_OUTPUT_MAX)) < 0)
            return cli_usage_error(&worker_command, "--output-max must be a number from 0 to %ld",
                                   WORKER_OUTPUT_MAX);
        a->output_max = v;
        return 0;
    default: return cli_usage_error(&worker_command, "unhandled option");
    }
}

/* --- text ---------------------------------------------------------------- */

/*
 * Copy len bytes of s into out (len + 1 bytes) as text fit for a JSON string
 * and a terminal: invalid UTF-8 and control characters other than newline and
 * tab (when keep_newlines) become '?'. Returns the length written.
 */
static size_t worker_clean_text(const char *s, size_t len, char *out, bool keep_newlines)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0;

    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        size_t n = 0;
        if (c < 0x80) {
            bool ok = c >= ' ' ? c != 0x7f : (keep_newlines && (c == '\n' || c == '\t'));
            out[o++] = ok ? (char)c : '?';
            i++;
            continue;
        }
        /* Multi-byte: the lead byte says how many follow; each must be
         * 10xxxxxx and the code point neither overlong, a surrogate, nor past U+10FFFF. */
        unsigned min_second = 0x80, max_second = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 3;
            if (c == 0xe0)
                min_second = 0xa0;
            if (c == 0xed)
                max_second = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 4;
            if (c == 0xf0)
                min_second = 0x90;
            if (c == 0xf4)
                max_second = 0x8f;
        }
        bool ok = n > 0 && i + n <= len && u[i + 1] >= min_second && u[i + 1] <= max_second;
        for (size_t k = 2; ok && k < n; k++)
            ok = (u[i + k] & 0xc0) == 0x80;
        if (!ok) {
            out[o++] = '?';
            i++;
            continue;
        }
        memcpy(out + o, u + i, n);
        o += n;
        i += n;
    }
    out[o] = '\0';
    return o;
}

/* A JSON string of len bytes of s, cleaned as above; NULL when out of memory. */
static json_t *worker_json_text(const char *s, size_t len, bool keep_newlines)
{
    char *clean = malloc(len + 1);
    if (!clean)
        return NULL;
    size_t n = worker_clean_text(s, len, clean, keep_newlines);
    json_t *str = json_stringn(clean, n);
    free(clean);
    return str;
}

/*
 * A log line on stderr: "drover worker: [job ID: ]MESSAGE", or with --json
 * {"at", "job", "msg"}.
 */
__attribute__((format(printf, 3, 4))) static void
worker_log(const struct worker *w, const struct worker_job *job, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    if (!w->json) {
        char clean[sizeof(msg)];
        worker_clean_text(msg, strlen(msg), clean, false);
        if (job)
            fprintf(stderr, "drover worker: job %s: %s\n", job->id, clean);
        else
            fprintf(stderr, "drover worker: %s\n", clean);
        return;
    }
    char at[TIME_RFC3339_LEN];
    time_format_rfc3339(time_now_ms(), at);
    json_t *rec = json_pack("{s:s, s:o*, s:o*}", "at", at, "job",
                            job ? worker_json_text(job->id, strlen(job->id), false) : NULL, "msg",
                            worker_json_text(msg, strlen(msg), false));
    char *line = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    fprintf(stderr, "%s\n", line ? line : "{\"msg\":\"out of memory\"}");
    free(line);
    json_decref(rec);
}

/* --- jobs and their calls ------------------------------------------------ */

static void worker_drop_calls(struct worker_job *job)
{
    while (job->calls) {
        struct worker_call *c = job->calls;
        job->calls = c->next;
        json_decref(c->body);
        free(c->raw);
        free(c);
    }
    job->calls_tail = &job->calls;
    job->n_calls = 0;
}

/* Queue a call for job; takes body (a new reference), even on failure. */
static void worker_queue_call(struct worker_job *job, enum worker_call_kind kind, json_t *body)
{
    struct worker_call *c = body ? calloc(1, sizeof(*c)) : NULL;
    if (!c) {
        json_decref(body);
        worker_log(job->w, job, "out of memory: a %s call is lost", worker_call_action[kind]);
        return;
    }
    c->kind = kind;
    c->body = body;
    *job->calls_tail = c;
    job->calls_tail = &c->next;
    job->n_calls++;
}

/* --- CMD's output ------------------------------------------------------- */

/* Keep n more bytes of output, dropping the oldest past w->output_max. */
static void worker_output_add(struct worker_job *job, const char *data, size_t n)
{
    struct worker_output *o = &job->output;
    size_t max = job->w->output_max;

    o->total += n;
    if (max == 0)
        return;
    if (n > max) {
        data += n - max;
        n = max;
    }
    if (o->cap < max && o->len + n > o->cap) {
        /* Still linear (the ring wraps only at its full size): grow it. */
        size_t cap = o->cap ? o->cap * 2 : 4096;
        if (cap < o->len + n)
            cap = o->len + n;
        if (cap > max)
            cap = max;
        char *p = realloc(o->buf, cap);
        if (!p)
            return; /* this much output is lost; the rest is still kept */
        o->buf = p;
        o->cap = cap;
    }
    if (o->len + n > o->cap) {
        size_t drop = o->len + n - o->cap;
        o->start = (o->start + drop) % o->cap;
        o->len -= drop;
    }
    size_t at = (o->start + o->len) % o->cap;
    size_t first = n < o->cap - at ? n : o->cap - at;
    memcpy(o->buf + at, data, first);
    memcpy(o->buf, data + first, n - first);
    o->len += n;
}

/* The kept output in one new buffer (OUT *len bytes); NULL when out of memory. */
static char *worker_output_take(struct worker_job *job, size_t *len)
{
    struct worker_output *o = &job->output;
    char *out = malloc(o->len ? o->len : 1);
    if (!out)
        return NULL;
    size_t first = o->len < o->cap - o->start ? o->len : o->cap - o->start;
    if (o->len) {
        memcpy(out, o->buf + o->start, first);
        memcpy(out + first, o->buf, o->len - first);
    }
    *len = o->len;
    free(o->buf);
    memset(o, 0, sizeof(*o));
    return out;
}

/* Queue the upload of CMD's output, the first of the calls that end the attempt. */
static void worker_queue_output(struct worker_job *job)
{
    struct worker_call *c;
    uint64_t total = job->output.total;

    if (job->w->output_max == 0)
        return;
    if (!(c = calloc(1, sizeof(*c))) || !(c->raw = worker_output_take(job, &c->raw_len))) {
        free(c);
        worker_log(job->w, job, "out of memory: the output is not uploaded");
        return;
    }
    if (total > c->raw_len)
        worker_log(job->w, job, "output was %llu bytes; uploading its last %zu (--output-max)",
                   (unsigned long long)total, c->raw_len);
    c->kind = WORKER_CALL_OUTPUT;
    *job->calls_tail = c;
    job->calls_tail = &c->next;
    job->n_calls++;
}

static void worker_job_free(struct worker_job *job)
{
    worker_drop_calls(job);
    free(job->output.buf);
    proc_release(&job->proc);
    if (job->lease)
        explicit_bzero(job->lease, strlen(job->lease));
    free(job->lease);
    free(job->id);
    free(job->step);
    json_decref(job->result);
    free(job);
}

static bool worker_job_alive(const struct worker_job *job)
{
    return job->proc.pid > 0 && !job->proc.exited;
}

/* SIGTERM to job's process group now, SIGKILL after the grace, for reason. */
static void worker_kill_job(struct worker_job *job, enum worker_kill reason)
{
    if (job->kill == WORKER_KILL_NONE || reason == WORKER_KILL_LEASE_LOST)
        job->kill = reason;
    if (!worker_job_alive(job) || job->kill_at_ms)
        return;
    proc_signal(&job->proc, SIGTERM);
    job->kill_at_ms = time_mono_ms() + WORKER_KILL_GRACE_MS;
}

/* The job is no longer ours: stop CMD, forget what was still to be sent. */
static void worker_lease_lost(struct worker_job *job, const char *what)
{
    if (job->kill == WORKER_KILL_LEASE_LOST)
        return;
    worker_log(job->w, job, "%s: lease lost; %s", what,
               worker_job_alive(job) ? "stopping the command, reporting nothing"
                                     : "nothing more is reported");
    worker_kill_job(job, WORKER_KILL_LEASE_LOST);
    worker_drop_calls(job);
    job->finished = true;
}

/* CMD is gone and its pipes are closed: queue the report that ends the attempt. */
static void worker_end_job(struct worker_job *job)
{
    struct proc *p = &job->proc;
    char status[96], tail[PROC_STDERR_TAIL + 1];
    json_t *body = NULL;

    job->ended = true;
    if (p->pid == 0)
        return; /* never started: the failure was queued then */
    if (job->kill != WORKER_KILL_NONE)
        proc_signal(p, SIGKILL); /* whatever CMD started and left behind in its group */
    proc_describe_status(p->status, status, sizeof(status));
    if (job->finished) {
        worker_log(job->w, job, "command ended (%s) after the lease was lost", status);
        return;
    }
    job->finished = true;
    worker_queue_output(job);
    if (job->kill == WORKER_KILL_NONE && WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0) {
        worker_log(job->w, job, "command succeeded");
        body = json_object();
        if (body && job->result)
            json_object_set(body, "result", job->result);
        worker_queue_call(job, WORKER_CALL_COMPLETE, body);
        return;
    }

    const char *why = job->kill == WORKER_KILL_CANCELED  ? "canceled"
                      : job->kill == WORKER_KILL_STOPPED ? "worker stopped"
                                                         : NULL;
    char message[WORKER_MESSAGE_MAX + 1];
    if (job->kill == WORKER_KILL_STOPPED) {
        snprintf(message, sizeof(message), "%s", why);
    } else if (why) {
        snprintf(message, sizeof(message), "%s (%s)", why, status);
    } else {
        /* "STATUS: TAIL", the tail shortened at its front to fit the server's limit. */
        char clean[PROC_STDERR_TAIL + 1];
        size_t tail_len = proc_stderr_tail(p, tail);
        size_t clean_len = worker_clean_text(tail, tail_len, clean, true);
        size_t room = WORKER_MESSAGE_MAX - strlen(status) - 2;
        const char *t = clean;
        if (clean_len > room) {
            t += clean_len - room;
            while ((*t & 0xc0) == 0x80) /* not in the middle of a character */
                t++;
        }
        size_t len = strlen(status), t_len = clean_len - (size_t)(t - clean);
        memcpy(message, status, len);
        if (t_len) {
            memcpy(message + len, ": ", 2);
            memcpy(message + len + 2, t, t_len);
            len += 2 + t_len;
        }
        message[len] = '\0';
    }
    worker_log(job->w, job, "command failed: %s", why ? why : status);

    json_t *error = json_object();
    if (error)
        json_object_set_new(error, "message", json_string(message));
    if (error && job->step)
        json_object_set_new(error, "step", json_string(job->step));
    if (error)
        json_object_set_new(error, "retryable", json_true());
    body = error ? json_pack("{s:o}", "error", error) : NULL;
    worker_queue_call(job, WORKER_CALL_FAIL, body);
}

/* --- CMD's stdout -------------------------------------------------------- */

/* The word after a "::name" directive, or NULL when line is not that directive. */
static char *worker_directive(char *line, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(line, name, n) != 0 || (line[n] && line[n] != ' ' && line[n] != '\t'))
        return NULL;
    line += n;
    while (*line == ' ' || *line == '\t')
        line++;
    return line;
}

/* Parse text as any JSON value; NULL (after a log line) when it is not one. */
static json_t *worker_parse_json(struct worker_job *job, const char *what, const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!v)
        worker_log(job->w, job, "%s: not valid JSON (%s); line ignored", what, jerr.text);
    return v;
}

static void worker_on_step(struct worker_job *job, char *args)
{
    char *end = args + strcspn(args, " \t");
    char *data_text = end;
    json_t *data = NULL, *name = NULL, *body = NULL;

    if (end == args) {
        worker_log(job->w, job, "::step without a name; line ignored");
        return;
    }
    if (*end) {
        *end = '\0';
        data_text = end + 1;
        while (*data_text == ' ' || *data_text == '\t')
            data_text++;
    }
    if (strlen(args) > WORKER_STEP_NAME_MAX) {
        worker_log(job->w, job, "::step name longer than %d bytes; line ignored",
                   WORKER_STEP_NAME_MAX);
        return;
    }
    if (!(name = json_string(args))) {
        worker_log(job->w, job, "::step name is not valid UTF-8; line ignored");
        return;
    }
    if (*data_text && !(data = worker_parse_json(job, "::step data", data_text))) {
        json_decref(name);
        return;
    }
    char *step = strdup(args);
    if (step) {
        free(job->step);
        job->step = step;
    }
    body = json_pack("{s:o, s:o*}", "step", name, "data", data);
    worker_queue_call(job, WORKER_CALL_STEP, body);
}

static void worker_on_line(void *ctx, char *line, size_t len, bool cut)
{
    struct worker_job *job = ctx;
    struct worker *w = job->w;
    char *args;

    /* The output artifact gets every line as CMD wrote it (a cut line: its start). */
    worker_output_add(job, line, len);
    worker_output_add(job, "\n", 1);
    if (len > 0 && line[len - 1] == '\r')
        line[--len] = '\0';
    /* A NUL inside the line would hide the rest from the directive parsers. */
    bool has_nul = memchr(line, '\0', len) != NULL;

    if ((args = worker_directive(line, "::step")) != NULL) {
        if (cut || has_nul)
            worker_log(w, job, "::step line over %d bytes or holding NUL; ignored", PROC_LINE_MAX);
        else if (job->kill != WORKER_KILL_LEASE_LOST)
            worker_on_step(job, args);
        return;
    }
    if ((args = worker_directive(line, "::result")) != NULL) {
        if (cut || has_nul) {
            worker_log(w, job, "::result line over %d bytes or holding NUL; ignored",
                       PROC_LINE_MAX);
            return;
        }
        json_t *result = worker_parse_json(job, "::result", args);
        if (result) {
            json_decref(job->result);
            job->result = result;
        }
        return;
    }

    if (w->json) {
        json_t *rec = json_pack("{s:s, s:o*, s:b}", "job", job->id, "line",
                                worker_json_text(line, len, true), "truncated", cut);
        char *text = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
        if (text)
            printf("%s\n", text);
        free(text);
        json_decref(rec);
    } else {
        printf("%s: ", job->id);
        fwrite(line, 1, len, stdout);
        fputs(cut ? " [line cut]\n" : "\n", stdout);
    }
}

/* --- HTTP ---------------------------------------------------------------- */

enum worker_outcome {
    WORKER_OK,
    WORKER_RETRY,      /* no answer, or a 5xx: the worker is in backoff now */
    WORKER_LEASE_LOST, /* 409 (lease_lost, or the job ended otherwise) or 404 */
    WORKER_REFUSED,    /* any other 4xx: err says why */
};

/* No answer or a 5xx: wait before the next call, longer each time. */
static void worker_backoff(struct worker *w, const char *what, const struct errmsg *err)
{
    w->backoff_ms = w->backoff_ms ? w->backoff_ms * 2 : WORKER_BACKOFF_MIN_MS;
    if (w->backoff_ms > WORKER_BACKOFF_MAX_MS)
        w->backoff_ms = WORKER_BACKOFF_MAX_MS;
    w->retry_at = time_mono_ms() + w->backoff_ms;
    worker_log(w, NULL, "%s: %s; retrying in %.1f s", what, err->text,
               (double)w->backoff_ms / 1000.0);
}

static bool worker_in_backoff(const struct worker *w, int64_t now)
{
    return w->backoff_ms && now < w->retry_at;
}

/*
 * What a call's answer means: OK (2xx); RETRY (no answer or a 5xx; the
 * backoff starts, logged naming what); LEASE_LOST (409 or 404); REFUSED.
 */
static enum worker_outcome worker_outcome(struct worker *w, int rc, const char *what,
                                          const struct client_response *resp,
                                          const struct errmsg *err)
{
    if (rc == 0) {
        w->backoff_ms = 0;
        return WORKER_OK;
    }
    if (resp->status == 0 || resp->status >= 500 || resp->status < 400) {
        worker_backoff(w, what, err);
        return WORKER_RETRY;
    }
    w->backoff_ms = 0;
    if (resp->status == 409 || resp->status == 404)
        return WORKER_LEASE_LOST;
    return WORKER_REFUSED;
}

/* POST body to path, bounded by timeout_ms. OUT resp (release it); outcome as above. */
static enum worker_outcome worker_post(struct worker *w, const struct client_path *path,
                                       json_t *body, long timeout_ms, const char *what,
                                       struct client_response *resp, struct errmsg *err)
{
    w->client.connect_timeout_ms = WORKER_CONNECT_TIMEOUT_MS;
    w->client.total_timeout_ms = timeout_ms;
    int rc = client_request(&w->client, "POST", path, body, resp, err);
    return worker_outcome(w, rc, what, resp, err);
}

/* POST /v1/jobs/ID/ACTION with body, the job's lease added. */
static enum worker_outcome worker_lease_call(struct worker_job *job, const char *action,
                                             json_t *body, struct client_response *resp,
                                             struct errmsg *err)
{
    struct client_path path;
    char what[128];

    client_path_init(&path, "/v1/jobs");
    client_path_segment(&path, job->id);
    client_path_segment(&path, action);
    if (json_object_set_new(body, "lease", json_string(job->lease)) < 0) {
        memset(resp, 0, sizeof(*resp));
        errmsg_set(err, -DRV_ENOMEM, "out of memory");
        return WORKER_REFUSED;
    }
    snprintf(what, sizeof(what), "%s for job %s", action, job->id);
    return worker_post(job->w, &path, body, WORKER_CALL_TIMEOUT_MS, what, resp, err);
}

/*
 * PUT the output artifact (c->raw) under the lease, with a timeout that
 * grows with its size. OUT resp, as worker_post().
 */
static enum worker_outcome worker_put_output(struct worker_job *job, const struct worker_call *c,
                                             struct client_response *resp, struct errmsg *err)
{
    struct worker *w = job->w;
    struct client_path path;
    char lease_header[sizeof("X-Drover-Lease: ") + 256], what[128];

    client_path_init(&path, "/v1/jobs");
    client_path_segment(&path, job->id);
    client_path_segment(&path, "artifacts");
    client_path_segment(&path, WORKER_OUTPUT_NAME);
    snprintf(lease_header, sizeof(lease_header), "X-Drover-Lease: %s", job->lease);
    const char *headers[] = {lease_header, NULL};
    struct client_raw raw = {.body = c->raw,
                             .body_len = c->raw_len,
                             .content_type = WORKER_OUTPUT_TYPE,
                             .headers = headers};
    w->client.connect_timeout_ms = WORKER_CONNECT_TIMEOUT_MS;
    w->client.total_timeout_ms =
        WORKER_CALL_TIMEOUT_MS + (long)(c->raw_len / (1024 * 1024)) * WORKER_UPLOAD_MS_PER_MIB;
    snprintf(what, sizeof(what), "output upload for job %s", job->id);
    int rc = client_request_raw(&w->client, "PUT", &path, &raw, resp, err);
    explicit_bzero(lease_header, sizeof(lease_header));
    return worker_outcome(w, rc, what, resp, err);
}

/*
 * A 413 naming the server's limit: cut the output to its last max_bytes and
 * send it again. Returns false when that cannot help.
 */
static bool worker_cut_output(struct worker_job *job, struct worker_call *c,
                              const struct client_response *resp)
{
    json_t *max = json_object_get(resp->json, "max_bytes");
    if (resp->status != 413 || !json_is_integer(max) || json_integer_value(max) <= 0 ||
        (uint64_t)json_integer_value(max) >= c->raw_len)
        return false;
    size_t keep = (size_t)json_integer_value(max);
    worker_log(job->w, job,
               "output of %zu bytes is over the server's limit; uploading its last %zu", c->raw_len,
               keep);
    memmove(c->raw, c->raw + c->raw_len - keep, keep);
    c->raw_len = keep;
    return true;
}

/* A lease object from the server: keep its token, the one later calls present. */
static void worker_take_token(struct worker_job *job, const json_t *lease)
{
    const char *token = json_string_value(json_object_get(lease, "token"));
    char *copy;

    if (!token || strcmp(token, job->lease) == 0 || !(copy = strdup(token)))
        return;
    explicit_bzero(job->lease, strlen(job->lease));
    free(job->lease);
    job->lease = copy;
}

/*
 * The heartbeat interval for a claimed job: a third of its lease, the
 * lease's length being expires_at against the server's clock (the job's
 * updated_at, set by the claim) and against ours; the shorter one counts, so
 * a clock skewed either way cannot make us heartbeat too late. The length is
 * the queue's heartbeat timeout, the same for every renewal.
 */
static int64_t worker_heartbeat_interval(const json_t *claimed)
{
    const json_t *lease = json_object_get(claimed, "lease");
    const char *expires = json_string_value(json_object_get(lease, "expires_at"));
    const char *claimed_at = json_string_value(json_object_get(claimed, "updated_at"));
    int64_t expires_ms, claimed_ms, length = 0;

    if (!expires || time_parse_rfc3339(expires, &expires_ms) < 0)
        return WORKER_HEARTBEAT_DEF_MS;
    if (expires_ms > time_now_ms())
        length = expires_ms - time_now_ms();
    if (claimed_at && time_parse_rfc3339(claimed_at, &claimed_ms) == 0 && expires_ms > claimed_ms &&
        (length == 0 || expires_ms - claimed_ms < length))
        length = expires_ms - claimed_ms;
    if (length == 0)
        return WORKER_HEARTBEAT_DEF_MS;
    return length / 3 < WORKER_HEARTBEAT_MIN_MS ? WORKER_HEARTBEAT_MIN_MS : length / 3;
}

/* A job object answered by a step call may say its cancel was requested. */
static void worker_check_cancel(struct worker_job *job, const json_t *answer)
{
    if (json_is_true(json_object_get(answer, "cancel_requested")) && worker_job_alive(job) &&
        job->kill == WORKER_KILL_NONE) {
        worker_log(job->w, job, "cancel requested; stopping the command");
        worker_kill_job(job, WORKER_KILL_CANCELED);
    }
}

static int worker_heartbeat(struct worker_job *job)
{
    struct client_response resp = {0};
    struct errmsg err;
    json_t *body = json_object();
    enum worker_outcome o = WORKER_REFUSED;

    if (!body) {
        job->next_heartbeat_ms = time_mono_ms() + job->heartbeat_ms;
        return 0;
    }
    o = worker_lease_call(job, "heartbeat", body, &resp, &err);
    json_decref(body);
    /* Unanswered: due again as soon as the backoff ends. */
    if (o != WORKER_RETRY)
        job->next_heartbeat_ms = time_mono_ms() + job->heartbeat_ms;
    switch (o) {
    case WORKER_OK:
        worker_take_token(job, json_object_get(resp.json, "lease"));
        worker_check_cancel(job, resp.json);
        break;
    case WORKER_LEASE_LOST: worker_lease_lost(job, "heartbeat"); break;
    case WORKER_REFUSED: worker_log(job->w, job, "heartbeat refused: %s", err.text); break;
    case WORKER_RETRY: break;
    }
    client_response_release(&resp);
    return o == WORKER_RETRY ? -DRV_EUNAVAILABLE : 0;
}

/* Send job's queued calls in order. Returns -DRV_EUNAVAILABLE when the server is away. */
static int worker_send_calls(struct worker_job *job)
{
    while (job->calls) {
        struct worker_call *c = job->calls;
        struct client_response resp = {0};
        struct errmsg err;
        const char *action = worker_call_action[c->kind];
        enum worker_outcome o;

        if (c->kind == WORKER_CALL_OUTPUT) {
            o = worker_put_output(job, c, &resp, &err);
            if (o == WORKER_REFUSED && worker_cut_output(job, c, &resp)) {
                client_response_release(&resp);
                continue; /* again, shorter */
            }
        } else {
            o = worker_lease_call(job, action, c->body, &resp, &err);
        }
        if (o == WORKER_RETRY) {
            client_response_release(&resp);
            return -DRV_EUNAVAILABLE;
        }
        job->calls = c->next;
        if (!job->calls)
            job->calls_tail = &job->calls;
        job->n_calls--;

        const char *state = json_string_value(json_object_get(resp.json, "state"));
        if (o == WORKER_OK && c->kind == WORKER_CALL_STEP) {
            worker_check_cancel(job, resp.json);
        } else if (o == WORKER_OK && c->kind == WORKER_CALL_OUTPUT) {
            worker_log(job->w, job, "uploaded its output (%zu bytes)", c->raw_len);
        } else if (o == WORKER_OK) {
            worker_log(job->w, job, "reported %s; the job is %s", action, state ? state : "?");
        } else if (o == WORKER_REFUSED) {
            worker_log(job->w, job, "%s refused: %s; dropped", action, err.text);
        }
        enum worker_call_kind kind = c->kind;
        json_decref(c->body);
        free(c->raw);
        free(c);
        client_response_release(&resp);
        if (o == WORKER_LEASE_LOST) {
            worker_lease_lost(job, action); /* drops the rest of the queue */
            if (kind != WORKER_CALL_STEP)
                worker_log(job->w, job, "its %s report is dropped", action);
        }
    }
    return 0;
}

/* Every call that is due: heartbeats, then each job's queue. Stops at the first unanswered one. */
static void worker_send(struct worker *w, int64_t now)
{
    if (worker_in_backoff(w, now))
        return;
    for (struct worker_job *job = w->jobs; job; job = job->next) {
        if (!job->finished && worker_job_alive(job) && job->kill != WORKER_KILL_LEASE_LOST &&
            now >= job->next_heartbeat_ms && worker_heartbeat(job) < 0)
            return;
    }
    for (struct worker_job *job = w->jobs; job; job = job->next)
        if (worker_send_calls(job) < 0)
            return;
}

/* --- starting jobs ------------------------------------------------------- */

static const char *const worker_env_names[5] = {
    "DROVER_JOB_ID", "DROVER_ATTEMPT", "DROVER_CHECKPOINTS", "DROVER_URL", "DROVER_QUEUE",
};

/*
 * CMD's environment: ours without the names we set, then ours. OUT env
 * (free with worker_env_free(); its first ARRAY_SIZE(worker_env_names)
 * strings are owned).
 */
static int worker_env_build(const struct worker *w, const struct worker_job *job,
                            const json_t *checkpoints, char ***env)
{
    extern char **environ;
    size_t n_ours = ARRAY_SIZE(worker_env_names), n = 0;
    char **e;

    for (char **p = environ; *p; p++)
        n++;
    if (!(e = calloc(n + n_ours + 1, sizeof(*e))))
        return -DRV_ENOMEM;
    *env = e;

    char *cp = json_is_object(checkpoints) ? json_dumps(checkpoints, JSON_COMPACT) : strdup("{}");
    if (!cp)
        return -DRV_ENOMEM;
    char attempt[24];
    snprintf(attempt, sizeof(attempt), "%ld", job->attempt);
    const char *values[] = {job->id, attempt, cp, w->client.display_url, w->queue};
    int rc = 0;
    for (size_t i = 0; i < n_ours; i++) {
        size_t name_len = strlen(worker_env_names[i]), value_len = strlen(values[i]);
        if (!(e[i] = malloc(name_len + value_len + 2))) {
            rc = -DRV_ENOMEM;
            break;
        }
        memcpy(e[i], worker_env_names[i], name_len);
        e[i][name_len] = '=';
        memcpy(e[i] + name_len + 1, values[i], value_len + 1);
    }
    free(cp);
    if (rc < 0)
        return rc;

    size_t at = n_ours;
    for (char **p = environ; *p; p++) {
        bool ours = false;
        for (size_t i = 0; i < n_ours && !ours; i++) {
            size_t len = strlen(worker_env_names[i]);
            ours = strncmp(*p, worker_env_names[i], len) == 0 && (*p)[len] == '=';
        }
        if (!ours)
            e[at++] = *p;
    }
    return 0;
}

static void worker_env_free(char **env)
{
    if (!env)
        return;
    for (size_t i = 0; i < ARRAY_SIZE(worker_env_names); i++)
        free(env[i]); /* NULL when building it failed */
    free(env);
}

/* A printable id of sane length: it goes into paths, logs and the environment. */
static bool worker_id_ok(const char *id)
{
    size_t len = id ? strlen(id) : 0;
    if (len == 0 || len > 64)
        return false;
    for (const char *p = id; *p; p++)
        if (*p <= ' ' || *p > '~')
            return false;
    return true;
}

/* Start CMD for one claimed job (the job object plus its lease). */
static void worker_start_job(struct worker *w, const json_t *claimed)
{
    const char *id = json_string_value(json_object_get(claimed, "id"));
    const json_t *lease = json_object_get(claimed, "lease");
    const char *token = json_string_value(json_object_get(lease, "token"));
    struct worker_job *job = NULL;
    char **env = NULL;
    char *input = NULL;
    struct errmsg err;

    if (!worker_id_ok(id) || !token) {
        worker_log(w, NULL, "claim answered a job without a usable id or lease token; skipped");
        return;
    }
    job = calloc(1, sizeof(*job));
    if (!job || !(job->id = strdup(id)) || !(job->lease = strdup(token))) {
        worker_log(w, NULL, "out of memory: job %s not started", id);
        if (job) {
            free(job->id);
            free(job);
        }
        return;
    }
    job->w = w;
    job->calls_tail = &job->calls;
    proc_init(&job->proc);
    json_t *attempt = json_object_get(claimed, "attempt");
    job->attempt = json_is_integer(attempt) ? (long)json_integer_value(attempt) : 0;
    job->heartbeat_ms = worker_heartbeat_interval(claimed);
    job->next_heartbeat_ms = time_mono_ms() + job->heartbeat_ms;
    job->next = w->jobs;
    w->jobs = job;
    w->n_jobs++;

    json_t *payload = json_object_get(claimed, "payload");
    input = json_is_object(payload) ? json_dumps(payload, JSON_COMPACT) : strdup("{}");
    int rc = input ? worker_env_build(w, job, json_object_get(claimed, "checkpoints"), &env)
                   : -DRV_ENOMEM;
    if (rc == 0) {
        /* The payload line ends in a newline: `read` in a shell wants one. */
        size_t len = strlen(input);
        input[len] = '\n';
        rc = proc_spawn(&job->proc, w->cmd, env, input, len + 1, &err);
        input[len] = '\0';
    } else {
        errmsg_set(&err, rc, "out of memory");
    }
    free(input);
    worker_env_free(env);

    if (rc < 0) {
        worker_log(w, job, "attempt %ld: %s", job->attempt, err.text);
        json_t *body =
            json_pack("{s:{s:o, s:b}}", "error", "message",
                      worker_json_text(err.text, strlen(err.text), false), "retryable", 1);
        worker_queue_call(job, WORKER_CALL_FAIL, body);
        job->finished = true;
        return;
    }
    worker_log(w, job, "attempt %ld started (pid %d)", job->attempt, (int)job->proc.pid);
}

/* POST /v1/queues/QUEUE/claim for the free slots; start what comes back. */
static void worker_claim(struct worker *w)
{
    struct client_path path;
    struct client_response resp = {0};
    struct errmsg err;
    int slots = w->concurrency - w->n_jobs;
    int wait_s = w->n_jobs ? 0 : w->wait_s;
    char what[96];

    if (slots > WORKER_MAX_CLAIM)
        slots = WORKER_MAX_CLAIM;
    client_path_init(&path, "/v1/queues");
    client_path_segment(&path, w->queue);
    client_path_segment(&path, "claim");
    json_t *body = json_pack("{s:s, s:i, s:i}", "worker", w->name, "max", slots, "wait_s", wait_s);
    if (!body) {
        worker_log(w, NULL, "out of memory");
        w->next_claim_at = time_mono_ms() + WORKER_CLAIM_POLL_MS;
        return;
    }
    snprintf(what, sizeof(what), "claim from queue %.64s", w->queue);
    enum worker_outcome o =
        worker_post(w, &path, body, wait_s * 1000L + WORKER_CALL_TIMEOUT_MS, what, &resp, &err);
    json_decref(body);

    size_t n = 0;
    if (o == WORKER_OK) {
        const json_t *jobs = json_object_get(resp.json, "jobs");
        const json_t *claimed;
        size_t i;
        json_array_foreach(jobs, i, claimed) worker_start_job(w, claimed);
        n = json_array_size(jobs);
    } else if (o != WORKER_RETRY) {
        /* The server will not give us jobs (bad token, role, queue name):
         * retrying cannot help. Finish what we hold, then exit. */
        worker_log(w, NULL, "claim refused: %s; stopping", err.text);
        w->exit_code = cli_exit_for_status(resp.status);
        if (w->stopping == 0)
            w->stopping = 1;
    }
    client_response_release(&resp);
    /* After an empty answer that did not wait, do not ask again at once. */
    w->next_claim_at = time_mono_ms() + (n == 0 && wait_s == 0 ? WORKER_CLAIM_POLL_MS : 0);
}

/* --- the loop ------------------------------------------------------------ */

static void worker_reap(struct worker *w)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (struct worker_job *job = w->jobs; job; job = job->next) {
            if (job->proc.pid == pid && !job->proc.exited) {
                proc_set_exited(&job->proc, status);
                job->drain_until = time_mono_ms() + WORKER_DRAIN_MS;
                break;
            }
        }
    }
}

static void worker_on_signals(struct worker *w)
{
    struct signalfd_siginfo si;

    while (read(w->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGCHLD) {
            worker_reap(w);
            continue;
        }
        if (w->stopping >= 2)
            continue;
        w->stopping++;
        if (w->stopping == 1) {
            worker_log(w, NULL,
                       "%s: no more claims; waiting for %d job(s) to end (again to kill them)",
                       sigabbrev_np((int)si.ssi_signo), w->n_jobs);
            continue;
        }
        worker_log(w, NULL, "%s again: stopping the running commands",
                   sigabbrev_np((int)si.ssi_signo));
        for (struct worker_job *job = w->jobs; job; job = job->next)
            if (worker_job_alive(job))
                worker_kill_job(job, WORKER_KILL_STOPPED);
        w->give_up_at = time_mono_ms() + WORKER_KILL_GRACE_MS + WORKER_STOP_REPORT_MS;
    }
}

/* Kill escalations, drains that ran out, finished commands, and jobs with nothing left to do. */
static void worker_tend(struct worker *w, int64_t now)
{
    struct worker_job **link = &w->jobs;

    while (*link) {
        struct worker_job *job = *link;
        if (job->kill_at_ms && worker_job_alive(job) && now >= job->kill_at_ms) {
            worker_log(w, job, "still running %d s after SIGTERM; SIGKILL",
                       WORKER_KILL_GRACE_MS / 1000);
            proc_signal(&job->proc, SIGKILL);
            job->kill_at_ms = 0;
        }
        if (job->proc.exited && !proc_done(&job->proc) && now >= job->drain_until) {
            worker_log(w, job, "command exited but its output is still held open; closing it");
            proc_close_pipes(&job->proc, worker_on_line, job);
        }
        if (proc_done(&job->proc) && !job->ended)
            worker_end_job(job);
        if (job->ended && job->finished && !job->calls) {
            *link = job->next;
            w->n_jobs--;
            worker_job_free(job);
            w->next_claim_at = now; /* a free slot: claim for it at once */
            continue;
        }
        link = &job->next;
    }
}

static bool worker_may_claim(const struct worker *w, int64_t now)
{
    return w->stopping == 0 && w->n_jobs < w->concurrency && now >= w->next_claim_at &&
           !worker_in_backoff(w, now);
}

/* Milliseconds until the next thing to do, for poll(); -1 for none. */
static int worker_timeout(const struct worker *w, int64_t now)
{
    int64_t local = INT64_MAX; /* deadlines of our own: kills, drains, giving up */
    int64_t http = INT64_MAX;  /* calls to the server: held back while in backoff */

    for (const struct worker_job *job = w->jobs; job; job = job->next) {
        if (job->kill_at_ms && worker_job_alive(job) && job->kill_at_ms < local)
            local = job->kill_at_ms;
        if (job->proc.exited && !proc_done(&job->proc) && job->drain_until < local)
            local = job->drain_until;
        if (job->calls)
            http = now;
        if (!job->finished && worker_job_alive(job) && job->kill != WORKER_KILL_LEASE_LOST &&
            job->next_heartbeat_ms < http)
            http = job->next_heartbeat_ms;
    }
    if (w->stopping == 0 && w->n_jobs < w->concurrency && w->next_claim_at < http)
        http = w->next_claim_at;
    if (w->give_up_at && w->give_up_at < local)
        local = w->give_up_at;
    if (http != INT64_MAX && worker_in_backoff(w, now) && http < w->retry_at)
        http = w->retry_at;

    int64_t next = local < http ? local : http;
    if (next == INT64_MAX)
        return -1;
    if (next <= now)
        return 0;
    return next - now > INT_MAX ? INT_MAX : (int)(next - now);
}

/* Forced stop ran out of time: what the server did not take is lost. */
static int worker_give_up(struct worker *w)
{
    for (struct worker_job *job = w->jobs; job; job = job->next) {
        if (job->calls) {
            worker_log(w, job, "the server did not take the report in time; dropped");
            w->exit_code = CLI_EXIT_SERVER;
        }
        if (worker_job_alive(job))
            worker_log(w, job, "command (pid %d) still alive; left behind", (int)job->proc.pid);
    }
    return w->exit_code;
}

static int worker_grow_pollset(struct worker *w, size_t want)
{
    if (want <= w->pfd_alloc)
        return 0;
    size_t n = want * 2;
    struct pollfd *pfds = realloc(w->pfds, n * sizeof(*pfds));
    if (!pfds)
        return -DRV_ENOMEM;
    w->pfds = pfds;
    struct worker_job **jobs = realloc(w->pfd_jobs, n * sizeof(*jobs));
    if (!jobs)
        return -DRV_ENOMEM;
    w->pfd_jobs = jobs;
    w->pfd_alloc = n;
    return 0;
}

/* One wait: poll() until a descriptor is ready or the next deadline, then handle what is ready. */
static int worker_wait(struct worker *w, int timeout_ms)
{
    size_t n = 0;

    if (worker_grow_pollset(w, 1 + 2 * (size_t)w->n_jobs) < 0)
        return -DRV_ENOMEM;
    w->pfds[n] = (struct pollfd){.fd = w->sigfd, .events = POLLIN};
    w->pfd_jobs[n++] = NULL;
    for (struct worker_job *job = w->jobs; job; job = job->next) {
        /* Too many unsent steps: stop reading, CMD blocks on its stdout. Once
         * it exited, read anyway (the pipe holds at most its capacity). */
        bool backpressure = job->n_calls >= WORKER_MAX_QUEUED_CALLS && !job->proc.exited;
        if (job->proc.out_fd >= 0 && !backpressure) {
            w->pfds[n] = (struct pollfd){.fd = job->proc.out_fd, .events = POLLIN};
            w->pfd_jobs[n++] = job;
        }
        if (job->proc.err_fd >= 0) {
            w->pfds[n] = (struct pollfd){.fd = job->proc.err_fd, .events = POLLIN};
            w->pfd_jobs[n++] = job;
        }
    }

    int ready = poll(w->pfds, n, timeout_ms);
    if (ready < 0)
        return errno == EINTR ? 0 : -DRV_EIO;
    for (size_t i = 1; i < n && ready > 0; i++) {
        if (!w->pfds[i].revents)
            continue;
        struct worker_job *job = w->pfd_jobs[i];
        if (w->pfds[i].fd == job->proc.out_fd)
            proc_read_stdout(&job->proc, worker_on_line, job);
        else if (w->pfds[i].fd == job->proc.err_fd)
            proc_read_stderr(&job->proc);
    }
    if (w->pfds[0].revents)
        worker_on_signals(w);
    return 0;
}

static int worker_run(struct worker *w)
{
    for (;;) {
        int64_t now = time_mono_ms();
        if (w->give_up_at && now >= w->give_up_at)
            return worker_give_up(w);
        worker_tend(w, now);
        worker_send(w, now);
        worker_tend(w, time_mono_ms());
        if (w->stopping && !w->jobs)
            return w->exit_code;
        now = time_mono_ms();
        if (worker_may_claim(w, now)) {
            worker_claim(w);
            /* The claim may have taken a while: look at signals before anything else. */
            if (worker_wait(w, 0) < 0)
                return CLI_EXIT_SERVER;
            continue;
        }
        fflush(stdout);
        if (worker_wait(w, worker_timeout(w, now)) < 0) {
            worker_log(w, NULL, "poll: %s", strerror(errno));
            return CLI_EXIT_SERVER;
        }
    }
}

/* Whether cmd can be run: a path to an executable file, or one found in PATH. */
static bool worker_command_found(const char *cmd)
{
    struct stat st;

    if (strchr(cmd, '/'))
        return access(cmd, X_OK) == 0 && stat(cmd, &st) == 0 && S_ISREG(st.st_mode);
    const char *path = getenv("PATH");
    if (!path)
        path = "/bin:/usr/bin"; /* what posix_spawnp() searches without PATH */
    for (;;) {
        size_t len = strcspn(path, ":");
        char file[PATH_MAX];
        int n = snprintf(file, sizeof(file), "%.*s%s%s", (int)len, path, len ? "/" : "", cmd);
        if (n > 0 && (size_t)n < sizeof(file) && access(file, X_OK) == 0 && stat(file, &st) == 0 &&
            S_ISREG(st.st_mode))
            return true;
        if (!path[len])
            return false;
        path += len + 1;
    }
}

int cli_worker_main(int argc, char **argv)
{
    struct worker_args args = {
        .concurrency = 1, .wait_s = WORKER_DEFAULT_WAIT_S, .output_max = WORKER_OUTPUT_DEFAULT};
    struct worker w = {.sigfd = -1};
    struct cli_common common;
    sigset_t block, old_mask;
    struct sigaction ignore = {.sa_handler = SIG_IGN}, old_pipe;
    bool masked = false, pipe_ignored = false;
    int first, exit_code;

    /* Our options end at the first "--"; what follows is CMD, untouched. */
    int dashes = 1;
    while (dashes < argc && strcmp(argv[dashes], "--") != 0)
        dashes++;
    if (cli_parse(&worker_command, dashes, argv, &args, &common, &first) < 0)
        return CLI_EXIT_USAGE;
    if (common.help)
        return CLI_EXIT_OK;
    if (dashes >= argc - 1) {
        cli_usage_error(&worker_command,
                        dashes == argc ? "missing '-- CMD'" : "missing CMD after '--'");
        return CLI_EXIT_USAGE;
    }
    w.cmd = argv + dashes + 1; /* argv[argc] is NULL */
    if (!worker_command_found(w.cmd[0])) {
        cli_usage_error(&worker_command, "cannot run '%s': not an executable file", w.cmd[0]);
        return CLI_EXIT_USAGE;
    }
    w.queue = argv[first];
    w.concurrency = args.concurrency;
    w.wait_s = args.wait_s;
    w.output_max = (size_t)args.output_max;
    w.json = common.json;
    if (args.name) {
        snprintf(w.name, sizeof(w.name), "%s", args.name);
    } else {
        char host[WORKER_MAX_NAME_BYTES - 16] = "worker";
        gethostname(host, sizeof(host));
        host[sizeof(host) - 1] = '\0';
        snprintf(w.name, sizeof(w.name), "%s:%d", host, (int)getpid());
    }

    if ((exit_code = cli_connect(&common, &w.client)) != CLI_EXIT_OK)
        return exit_code;

    /* Signals arrive through the signalfd only, read by the loop. */
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    if (sigprocmask(SIG_BLOCK, &block, &old_mask) < 0 ||
        (masked = true, w.sigfd = signalfd(-1, &block, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
        fprintf(stderr, "drover: cannot set up signals: %s\n", strerror(errno));
        exit_code = CLI_EXIT_SERVER;
        goto out;
    }
    /* A write to a gone reader (our stdout, a socket) is an error, not death. */
    pipe_ignored = sigaction(SIGPIPE, &ignore, &old_pipe) == 0;
    /* Output of several commands interleaves by whole lines. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    worker_log(&w, NULL, "%s claiming from queue %s at %s (concurrency %d)", w.name, w.queue,
               w.client.display_url, w.concurrency);
    exit_code = worker_run(&w);
    worker_log(&w, NULL, "stopped");

out:
    while (w.jobs) {
        struct worker_job *job = w.jobs;
        w.jobs = job->next;
        worker_job_free(job);
    }
    free(w.pfds);
    free(w.pfd_jobs);
    if (w.sigfd >= 0)
        close(w.sigfd);
    if (pipe_ignored)
        sigaction(SIGPIPE, &old_pipe, NULL);
    if (masked)
        sigprocmask(SIG_SETMASK, &old_mask, NULL);
    client_release(&w.client);
    fflush(stdout);
    return exit_code;
}
