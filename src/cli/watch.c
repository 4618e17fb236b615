/*
 * watch.c - `drover watch ID`: follow one job until it ends, and exit with
 * what it ended as (0 succeeded, 1 failed or canceled).
 *
 * The job's events are followed with GET /v1/jobs/{id}/events?after=SEQ
 * every --interval. The readable view (job, queue, state, attempt, elapsed
 * time, and the queue's declared steps as done / active / error) is redrawn
 * in place on a terminal with nothing but ANSI cursor-up and clear-line
 * sequences, so there is no terminal mode to restore on any exit; anywhere
 * else each change appends a new snapshot. --json prints the events
 * themselves, one JSON object per line.
 */
#include "cli/common.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "timeutil.h"

enum watch_opt {
    WATCH_INTERVAL = CLI_OPT_COMMAND,
};

#define WATCH_DEFAULT_INTERVAL_MS 500L
#define WATCH_MIN_INTERVAL_MS     50L /* below this a watch is a busy loop against the server */
#define WATCH_MAX_INTERVAL_MS     3600000L
#define WATCH_EVENTS_PAGE         "1000" /* the server's largest page */
#define WATCH_MAX_STEPS           256    /* steps shown, declared and reported together */
#define WATCH_EXIT_INTERRUPTED    130    /* 128 + SIGINT, what shells expect */

/* Set by SIGINT or SIGTERM: finish the current request, then exit. */
static volatile sig_atomic_t watch_interrupted;

struct watch_args {
    long interval_ms;
};

/* One watch. Everything json_t here is owned. */
struct watch {
    struct client client;
    const char *id;    /* points into argv */
    bool json;         /* print events, not the view */
    bool tty;          /* redraw the view in place */
    json_int_t after;  /* seq of the latest event seen */
    int terminal_exit; /* --json: the exit code the latest event's state means, or -1 */
    json_t *job;       /* the job as last fetched (readable view only) */
    json_t *declared;  /* the queue's declared steps, an array */
    json_t *reported;  /* steps named by job.step events of reported_attempt, as keys */
    json_int_t reported_attempt;
    json_int_t shown_seq; /* plain view: the job seq of the latest snapshot, -1 before one */
    int drawn;            /* terminal view: lines of the frame on screen */
};

static int watch_on_option(void *ctx, int opt, const char *arg);

static const struct option watch_options[] = {
    {"interval", required_argument, NULL, WATCH_INTERVAL},
    {NULL, 0, NULL, 0},
};

static const struct cli_command watch_command = {
    .name = "watch",
    .synopsis = "ID [options]",
    .description = "Follow one job until it ends, then exit 0 if it succeeded and 1 if it failed\n"
                   "or was canceled (3 when there is no such job, 130 when interrupted).\n"
                   "\n"
                   "On a terminal the job's id, queue, state, attempt, elapsed time and steps are\n"
                   "redrawn in place; elsewhere each change appends a new snapshot. Steps are the\n"
                   "queue's declared steps, then any other reported ones, each marked done (✓),\n"
                   "active (▸, the next one while the job runs), error (✗, the step the job\n"
                   "failed at, with the error under it) or pending (·); without a terminal the\n"
                   "marks are the words done, active, error and pending.\n",
    .options_help =
        "  --interval S   seconds between checks for news (default 0.5, at least 0.05)\n",
    .json_help = "print each of the job's events as one JSON object per line, from the first",
    .options = watch_options,
    .arg_name = "ID",
    .min_args = 1,
    .max_args = 1,
    .on_option = watch_on_option,
};

static int watch_on_option(void *ctx, int opt, const char *arg)
{
    struct watch_args *a = ctx;
    char *end;

    if (opt != WATCH_INTERVAL)
        return cli_usage_error(&watch_command, "unhandled option");
    errno = 0;
    double s = strtod(arg, &end);
    if (errno || end == arg || *end || !isfinite(s) || s * 1000 < WATCH_MIN_INTERVAL_MS ||
        s * 1000 > WATCH_MAX_INTERVAL_MS)
        return cli_usage_error(&watch_command, "--interval wants seconds from %g to %g, not '%s'",
                               WATCH_MIN_INTERVAL_MS / 1000.0, WATCH_MAX_INTERVAL_MS / 1000.0, arg);
    a->interval_ms = (long)(s * 1000 + 0.5);
    return 0;
}

static void watch_on_signal(int sig)
{
    (void)sig;
    watch_interrupted = 1;
}

/*
 * Sleep until the monotonic deadline, or until SIGINT/SIGTERM. The signals
 * are blocked between the flag check and ppoll(), which unblocks them
 * atomically, so one that arrives just before the sleep still ends it.
 */
static void watch_sleep_until(int64_t deadline_ms)
{
    sigset_t block, old;

    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old);
    int64_t left = deadline_ms - time_mono_ms();
    if (!watch_interrupted && left > 0) {
        struct timespec ts = {.tv_sec = left / 1000, .tv_nsec = (left % 1000) * 1000000L};
        ppoll(NULL, 0, &ts, &old);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
}

/* The exit code a job state means when it is terminal, else -1. */
static int watch_terminal_exit(const char *state)
{
    if (!state)
        return -1;
    if (strcmp(state, "succeeded") == 0)
        return CLI_EXIT_OK;
    if (strcmp(state, "failed") == 0 || strcmp(state, "canceled") == 0)
        return CLI_EXIT_JOB_FAILED;
    return -1;
}

static int watch_bad_response(const struct watch *w, const char *what)
{
    fprintf(stderr, "drover: the %s from %s is malformed\n", what, w->client.display_url);
    return CLI_EXIT_SERVER;
}

/* GET path into resp; on failure report it and return the exit code. */
static int watch_get(struct watch *w, const struct client_path *path, struct client_response *resp)
{
    struct errmsg err;

    int rc = client_request(&w->client, "GET", path, NULL, resp, &err);
    return rc < 0 ? cli_fail(rc, resp, &err) : CLI_EXIT_OK;
}

static int watch_fetch_job(struct watch *w)
{
    struct client_response resp = {0};
    struct client_path path;

    client_path_init(&path, "/v1/jobs");
    client_path_segment(&path, w->id);
    int exit_code = watch_get(w, &path, &resp);
    if (exit_code != CLI_EXIT_OK)
        goto out;
    if (!json_is_string(json_object_get(resp.json, "state")) ||
        !json_is_string(json_object_get(resp.json, "queue"))) {
        exit_code = watch_bad_response(w, "job");
        goto out;
    }
    json_decref(w->job);
    w->job = resp.json;
    resp.json = NULL;
out:
    client_response_release(&resp);
    return exit_code;
}

/* The queue's declared steps (GET /v1/queues/QUEUE "steps"); names only. */
static int watch_fetch_steps(struct watch *w)
{
    struct client_response resp = {0};
    struct client_path path;
    size_t i;
    json_t *step;

    client_path_init(&path, "/v1/queues");
    client_path_segment(&path, json_string_value(json_object_get(w->job, "queue")));
    int exit_code = watch_get(w, &path, &resp);
    if (exit_code != CLI_EXIT_OK)
        goto out;
    json_array_foreach(json_object_get(resp.json, "steps"), i, step)
    {
        if (json_is_string(step) && json_array_size(w->declared) < WATCH_MAX_STEPS &&
            json_array_append(w->declared, step) < 0) {
            fprintf(stderr, "drover: out of memory\n");
            exit_code = CLI_EXIT_SERVER;
            goto out;
        }
    }
out:
    client_response_release(&resp);
    return exit_code;
}

/* One new event: print it (--json), or remember the step it reports. */
static int watch_on_event(struct watch *w, const json_t *ev)
{
    if (w->json) {
        char *line = json_dumps(ev, JSON_COMPACT);
        if (!line) {
            fprintf(stderr, "drover: out of memory\n");
            return CLI_EXIT_SERVER;
        }
        puts(line); /* json_dumps escapes every control character: one line */
        free(line);
        w->terminal_exit = watch_terminal_exit(json_string_value(json_object_get(ev, "state")));
        return CLI_EXIT_OK;
    }

    /*
     * Steps come from the job's checkpoints too; the events add the ones a
     * worker reported without data, in case the store keeps no checkpoint
     * for them. Only the current attempt's count: a queue that cleans up on
     * failure gives the next attempt a clean slate.
     */
    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *step = json_string_value(json_object_get(ev, "step"));
    json_int_t attempt = json_integer_value(json_object_get(ev, "attempt"));
    if (!type || strcmp(type, "job.step") != 0 || !step || !*step)
        return CLI_EXIT_OK;
    if (attempt != w->reported_attempt) {
        json_object_clear(w->reported);
        w->reported_attempt = attempt;
    }
    if (json_object_size(w->reported) < WATCH_MAX_STEPS)
        json_object_set_new(w->reported, step, json_true());
    return CLI_EXIT_OK;
}

/*
 * Fetch the events after w->after, following the `next` cursors until the
 * last page. OUT n_new: how many there were. Returns an exit code,
 * CLI_EXIT_OK to go on.
 */
static int watch_poll_events(struct watch *w, size_t *n_new)
{
    int exit_code = CLI_EXIT_OK;

    *n_new = 0;
    for (;;) {
        struct client_response resp = {0};
        struct client_path path;
        char after[32];
        size_t i;
        json_t *ev;

        snprintf(after, sizeof(after), "%" JSON_INTEGER_FORMAT, w->after);
        client_path_init(&path, "/v1/jobs");
        client_path_segment(&path, w->id);
        client_path_segment(&path, "events");
        client_path_query(&path, "after", after);
        client_path_query(&path, "limit", WATCH_EVENTS_PAGE);
        exit_code = watch_get(w, &path, &resp);
        if (exit_code != CLI_EXIT_OK) {
            client_response_release(&resp);
            break;
        }

        json_t *events = json_object_get(resp.json, "events");
        json_t *next = json_object_get(resp.json, "next");
        if (!json_is_array(events) || (next && !json_is_null(next) && !json_is_integer(next)))
            exit_code = watch_bad_response(w, "events");
        json_array_foreach(events, i, ev)
        {
            if (exit_code != CLI_EXIT_OK)
                break;
            /* Strictly increasing seqs are what keeps this loop finite. */
            json_t *seq = json_object_get(ev, "seq");
            if (!json_is_integer(seq) || json_integer_value(seq) <= w->after) {
                exit_code = watch_bad_response(w, "events");
                break;
            }
            w->after = json_integer_value(seq);
            (*n_new)++;
            exit_code = watch_on_event(w, ev);
        }
        /* `next` is the seq to continue after, which is the page's last one. */
        bool more = json_is_integer(next) && json_array_size(events) > 0;
        client_response_release(&resp);
        if (exit_code != CLI_EXIT_OK || !more)
            break;
    }
    if (w->json)
        fflush(stdout);
    return exit_code;
}

/* "12.3s", "4m05s", "2h07m", "3d04h". */
static void watch_format_elapsed(int64_t ms, char *buf, size_t size)
{
    if (ms < 0)
        ms = 0;
    int64_t s = ms / 1000;
    if (s < 60)
        snprintf(buf, size, "%.1fs", (double)ms / 1000);
    else if (s < 3600)
        snprintf(buf, size, "%dm%02ds", (int)(s / 60), (int)(s % 60));
    else if (s < 86400)
        snprintf(buf, size, "%dh%02dm", (int)(s / 3600), (int)(s % 3600 / 60));
    else
        snprintf(buf, size, "%lldd%02dh", (long long)(s / 86400), (int)(s % 86400 / 3600));
}

static bool watch_str_eq(const json_t *value, const char *s)
{
    return json_is_string(value) && strcmp(json_string_value(value), s) == 0;
}

static void watch_add_name(json_t *names, const char *name)
{
    size_t i;
    json_t *v;

    if (!name || !*name || json_array_size(names) >= WATCH_MAX_STEPS)
        return;
    json_array_foreach(names, i, v)
    {
        if (strcmp(json_string_value(v), name) == 0)
            return;
    }
    json_array_append_new(names, json_string(name)); /* invalid UTF-8: NULL, not added */
}

/* Whether name was reported in the job's current attempt (or carried over in its checkpoints). */
static bool watch_step_done(const struct watch *w, const char *name)
{
    json_t *attempt = json_object_get(w->job, "attempt");

    if (json_object_get(json_object_get(w->job, "checkpoints"), name))
        return true;
    if (watch_str_eq(json_object_get(w->job, "step"), name))
        return true;
    return json_integer_value(attempt) == w->reported_attempt &&
           json_object_get(w->reported, name) != NULL;
}

enum watch_mark { WATCH_PENDING, WATCH_DONE, WATCH_ACTIVE, WATCH_ERROR };

static void watch_print_mark(const struct watch *w, enum watch_mark mark, FILE *m)
{
    static const char *const symbols[] = {"·", "✓", "▸", "✗"};
    static const char *const words[] = {"pending", "done", "active", "error"};

    if (w->tty)
        fprintf(m, "  %s ", symbols[mark]);
    else
        fprintf(m, "  %-7s  ", words[mark]);
}

static void watch_print_error(const json_t *error, FILE *m)
{
    cli_print_value(json_object_get(error, "kind"), m);
    fputs(": ", m);
    cli_print_value(json_object_get(error, "message"), m);
    fputc('\n', m);
}

/* The view of the job, as lines. */
static void watch_render(const struct watch *w, FILE *m)
{
    json_t *job = w->job;
    const char *state = json_string_value(json_object_get(job, "state"));
    json_t *error = json_object_get(job, "error");
    json_t *error_step = json_object_get(error, "step");
    bool failed = strcmp(state, "failed") == 0, running = strcmp(state, "running") == 0;
    bool error_shown = false;
    int64_t created, until;
    char elapsed[32] = "-";
    size_t i;
    json_t *v;

    if (!json_is_object(error))
        error = NULL;
    if (json_is_string(json_object_get(job, "created_at")) &&
        time_parse_rfc3339(json_string_value(json_object_get(job, "created_at")), &created) == 0) {
        /* A job that ended took until its last update; one that runs is still going. */
        const char *updated = json_string_value(json_object_get(job, "updated_at"));
        if (watch_terminal_exit(state) < 0 || !updated || time_parse_rfc3339(updated, &until) < 0)
            until = time_now_ms();
        watch_format_elapsed(until - created, elapsed, sizeof(elapsed));
    }

    fputs("job      ", m);
    cli_print_value(json_object_get(job, "id"), m);
    fputs("\nqueue    ", m);
    cli_print_value(json_object_get(job, "queue"), m);
    fputs("\nstate    ", m);
    cli_print_value(json_object_get(job, "state"), m);
    if (json_is_true(json_object_get(job, "cancel_requested")) && watch_terminal_exit(state) < 0)
        fputs(" (cancel requested)", m);
    fputs("\nattempt  ", m);
    cli_print_value(json_object_get(job, "attempt"), m);
    fprintf(m, "\nelapsed  %s\n", elapsed);

    /* Declared steps first, in order, then any others the job reported. */
    json_t *names = json_array();
    json_t *checkpoints = json_object_get(job, "checkpoints");
    if (names) {
        const char *key;
        json_array_foreach(w->declared, i, v) watch_add_name(names, json_string_value(v));
        json_object_foreach(checkpoints, key, v) watch_add_name(names, key);
        if (json_integer_value(json_object_get(job, "attempt")) == w->reported_attempt) {
            json_object_foreach(w->reported, key, v) watch_add_name(names, key);
        }
        watch_add_name(names, json_string_value(json_object_get(job, "step")));
        if (failed)
            watch_add_name(names, json_string_value(error_step));
    }

    /* While the job runs, the declared step after the furthest done one is under way. */
    size_t active = SIZE_MAX;
    if (running) {
        active = 0;
        json_array_foreach(w->declared, i, v)
        {
            if (watch_step_done(w, json_string_value(v)))
                active = i + 1;
        }
        if (active >= json_array_size(w->declared))
            active = SIZE_MAX; /* every declared step is done */
    }

    if (json_array_size(names) > 0)
        fputs("steps\n", m);
    json_array_foreach(names, i, v)
    {
        const char *name = json_string_value(v);
        enum watch_mark mark = WATCH_PENDING;
        bool is_error_step = failed && error && watch_str_eq(error_step, name);

        if (is_error_step)
            mark = WATCH_ERROR;
        else if (watch_step_done(w, name))
            mark = WATCH_DONE;
        else if (i == active)
            mark = WATCH_ACTIVE;
        watch_print_mark(w, mark, m);
        cli_print_value(v, m);
        fputc('\n', m);
        if (is_error_step) {
            fputs(w->tty ? "      " : "             ", m);
            watch_print_error(error, m);
            error_shown = true;
        }
    }
    json_decref(names);

    if (error && !error_shown) {
        /* An error the job still carries while a new attempt is on its way is the last one's. */
        fputs(watch_terminal_exit(state) < 0 ? "last error  " : "error    ", m);
        watch_print_error(error, m);
    }
}

/*
 * Put a rendered frame on a terminal: back up over the previous frame,
 * rewrite each line (clearing what the old one left), clear below. Lines
 * are cut at the terminal's width, and the frame at its height, since a
 * line that wraps or scrolls away would throw the cursor-up count off.
 */
static void watch_redraw(struct watch *w, const char *frame, size_t len)
{
    struct winsize ws;
    int cols = 80, rows = 24, lines = 0;
    const char *p = frame, *end = frame + len;

    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && ws.ws_row > 1) {
        cols = ws.ws_col;
        rows = ws.ws_row;
    }
    if (w->drawn > 0)
        printf("\033[%dA", w->drawn);
    fputc('\r', stdout);
    while (p < end && lines < rows - 1) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            nl = end;
        int col = 0;
        for (const char *q = p; q < nl; q++) {
            /* One column per character: count the bytes that start one. */
            if (((unsigned char)*q & 0xC0) != 0x80 && ++col > cols - 1)
                break;
            fputc(*q, stdout);
        }
        fputs("\033[K\n", stdout);
        lines++;
        p = nl + 1;
    }
    fputs("\033[J", stdout);
    w->drawn = lines;
}

/* Show the job: redrawn on a terminal, else a new snapshot when it changed. */
static int watch_show(struct watch *w)
{
    json_int_t seq = json_integer_value(json_object_get(w->job, "seq"));
    char *frame = NULL;
    size_t len = 0;

    if (!w->tty && seq == w->shown_seq)
        return CLI_EXIT_OK;
    FILE *m = open_memstream(&frame, &len);
    if (!m) {
        fprintf(stderr, "drover: out of memory\n");
        return CLI_EXIT_SERVER;
    }
    watch_render(w, m);
    if (fclose(m) != 0) {
        free(frame);
        fprintf(stderr, "drover: out of memory\n");
        return CLI_EXIT_SERVER;
    }
    if (w->tty) {
        watch_redraw(w, frame, len);
    } else {
        if (w->shown_seq >= 0)
            fputc('\n', stdout);
        fwrite(frame, 1, len, stdout);
        w->shown_seq = seq;
    }
    fflush(stdout);
    free(frame);
    return CLI_EXIT_OK;
}

/*
 * Follow the job until it ends. Each tick asks for the events after the
 * latest one seen; the readable view fetches the job again only when there
 * were some. This is polling because there is no push endpoint yet: when
 * GET /v1/events (Server-Sent Events) exists, this loop becomes a read of
 * that stream, with the poll kept as the fallback.
 */
static int watch_follow(struct watch *w, long interval_ms)
{
    bool first = true;

    for (;;) {
        int64_t next_tick = time_mono_ms() + interval_ms;
        size_t n_new;
        int exit_code = watch_poll_events(w, &n_new);
        if (exit_code != CLI_EXIT_OK)
            return exit_code;

        int terminal = w->terminal_exit;
        if (!w->json) {
            if ((n_new > 0 || first) && (exit_code = watch_fetch_job(w)) != CLI_EXIT_OK)
                return exit_code;
            if ((exit_code = watch_show(w)) != CLI_EXIT_OK)
                return exit_code;
            terminal = watch_terminal_exit(json_string_value(json_object_get(w->job, "state")));
        }
        if (terminal >= 0)
            return terminal;
        first = false;
        watch_sleep_until(next_tick);
        if (watch_interrupted)
            return WATCH_EXIT_INTERRUPTED;
    }
}

int cli_watch_main(int argc, char **argv)
{
    struct watch_args args = {.interval_ms = WATCH_DEFAULT_INTERVAL_MS};
    struct watch w = {.terminal_exit = -1, .shown_seq = -1};
    struct cli_common common;
    struct sigaction sa, old_int, old_term;
    int first, exit_code;

    if (cli_parse(&watch_command, argc, argv, &args, &common, &first) < 0)
        return CLI_EXIT_USAGE;
    if (common.help)
        return CLI_EXIT_OK;
    if ((exit_code = cli_connect(&common, &w.client)) != CLI_EXIT_OK)
        return exit_code;
    w.id = argv[first];
    w.json = common.json;
    if (!w.json) {
        const char *term = getenv("TERM");
        w.tty = isatty(STDOUT_FILENO) && !(term && strcmp(term, "dumb") == 0);
        /* A frame reaches the terminal in one write, not line by line: no flicker. */
        if (w.tty)
            setvbuf(stdout, NULL, _IOFBF, 0);
        w.declared = json_array();
        w.reported = json_object();
        if (!w.declared || !w.reported) {
            fprintf(stderr, "drover: out of memory\n");
            exit_code = CLI_EXIT_SERVER;
            goto out;
        }
        /* The job first: an unknown id exits 3 before anything is drawn. */
        if ((exit_code = watch_fetch_job(&w)) != CLI_EXIT_OK ||
            (exit_code = watch_fetch_steps(&w)) != CLI_EXIT_OK)
            goto out;
    }

    /* SA_RESETHAND: a second ^C while a request hangs kills at once, as usual. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = watch_on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    exit_code = watch_follow(&w, args.interval_ms);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
out:
    json_decref(w.job);
    json_decref(w.declared);
    json_decref(w.reported);
    client_release(&w.client);
    return exit_code;
}
