/*
 * list.c - `drover list`: GET /v1/jobs as a table (ID, QUEUE, STATE, STEP,
 * ATTEMPT, CREATED), newest first; --all follows the `next` cursors to the
 * last page; --json prints each page's response object on its own line.
 *
 * Pages are streamed, never collected: column widths come from the first
 * page, and a longer value on a later page pushes its row's remaining
 * columns right rather than making us hold every job in memory.
 */
#include "cli/common.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

enum list_opt {
    LIST_QUEUE = CLI_OPT_COMMAND,
    LIST_STATE,
    LIST_KEY,
    LIST_LIMIT,
    LIST_AFTER,
    LIST_ALL,
};

#define LIST_MAX_CURSOR_BYTES 1024 /* a `next` cursor longer than this is a broken server */

struct list_args {
    const char *queue;
    const char *state;
    const char *key;
    const char *limit;
    const char *after;
    bool all;
};

static const struct option list_options[] = {
    {"queue", required_argument, NULL, LIST_QUEUE},
    {"state", required_argument, NULL, LIST_STATE},
    {"key", required_argument, NULL, LIST_KEY},
    {"limit", required_argument, NULL, LIST_LIMIT},
    {"after", required_argument, NULL, LIST_AFTER},
    {"all", no_argument, NULL, LIST_ALL},
    {NULL, 0, NULL, 0},
};

static int list_on_option(void *ctx, int opt, const char *arg);

static const struct cli_command list_command = {
    .name = "list",
    .synopsis = "[options]",
    .description = "List jobs, newest first (GET /v1/jobs), as a table: ID, QUEUE, STATE, STEP,\n"
                   "ATTEMPT, CREATED. When more pages remain and --all is not given, the\n"
                   "cursor for the next one is printed on stderr.\n",
    .options_help = "  --queue QUEUE    only jobs of this queue\n"
                    "  --state STATE    only jobs in this state (scheduled, queued, running,\n"
                    "                   succeeded, failed, canceled)\n"
                    "  --key KEY        only jobs with this concurrency key\n"
                    "  --limit N        jobs per page (the server allows 1-500, default 50)\n"
                    "  --after CURSOR   start after this cursor (from a previous page)\n"
                    "  --all            follow the cursors through every page\n",
    .json_help = "print each page's response object {\"jobs\", \"next\"} on its own line",
    .options = list_options,
    .arg_name = "argument",
    .min_args = 0,
    .max_args = 0,
    .on_option = list_on_option,
};

static int list_on_option(void *ctx, int opt, const char *arg)
{
    struct list_args *a = ctx;

    switch (opt) {
    case LIST_QUEUE: a->queue = arg; break;
    case LIST_STATE: a->state = arg; break;
    case LIST_KEY: a->key = arg; break;
    case LIST_AFTER: a->after = arg; break;
    case LIST_ALL: a->all = true; break;
    case LIST_LIMIT:
        /* The range is the server's to enforce; here only "a positive number". */
        if (!*arg || strspn(arg, "0123456789") != strlen(arg) || strlen(arg) > 9 || atoi(arg) < 1)
            return cli_usage_error(&list_command, "--limit wants a positive number, not '%s'", arg);
        a->limit = arg;
        break;
    default: return cli_usage_error(&list_command, "unhandled option");
    }
    return 0;
}

/* The table's columns: header and the job field shown under it. */
static const struct {
    const char *header;
    const char *field;
} list_columns[] = {
    {"ID", "id"},     {"QUEUE", "queue"},     {"STATE", "state"},
    {"STEP", "step"}, {"ATTEMPT", "attempt"}, {"CREATED", "created_at"},
};

#define LIST_N_COLUMNS ARRAY_SIZE(list_columns)

static void list_measure(const json_t *jobs, int widths[LIST_N_COLUMNS])
{
    size_t i;
    const json_t *job;

    for (size_t c = 0; c < LIST_N_COLUMNS; c++)
        widths[c] = (int)strlen(list_columns[c].header);
    json_array_foreach(jobs, i, job) for (size_t c = 0; c < LIST_N_COLUMNS; c++)
    {
        int w = cli_value_width(json_object_get(job, list_columns[c].field));
        if (w > widths[c])
            widths[c] = w;
    }
}

static void list_print_header(const int widths[LIST_N_COLUMNS], FILE *out)
{
    for (size_t c = 0; c < LIST_N_COLUMNS; c++) {
        if (c + 1 < LIST_N_COLUMNS)
            fprintf(out, "%-*s  ", widths[c], list_columns[c].header);
        else
            fprintf(out, "%s\n", list_columns[c].header);
    }
}

static void list_print_rows(const json_t *jobs, const int widths[LIST_N_COLUMNS], FILE *out)
{
    size_t i;
    const json_t *job;

    json_array_foreach(jobs, i, job)
    {
        for (size_t c = 0; c < LIST_N_COLUMNS; c++) {
            const json_t *value = json_object_get(job, list_columns[c].field);
            if (c + 1 < LIST_N_COLUMNS) {
                cli_print_cell(value, widths[c], out);
                fputs("  ", out);
            } else {
                cli_print_value(value, out);
                fputc('\n', out);
            }
        }
    }
}

/*
 * The `next` cursor of a page as a string in buf: a string as is, an integer
 * in decimal. Returns 1 when there is one, 0 when it is null or absent, and
 * -1 when it is anything else (empty, too long, not printable ASCII).
 */
static int list_next_cursor(const json_t *page, char buf[LIST_MAX_CURSOR_BYTES])
{
    const json_t *next = json_object_get(page, "next");

    if (!next || json_is_null(next))
        return 0;
    if (json_is_integer(next)) {
        snprintf(buf, LIST_MAX_CURSOR_BYTES, "%" JSON_INTEGER_FORMAT, json_integer_value(next));
        return 1;
    }
    if (!json_is_string(next))
        return -1;
    /* Printable ASCII only: it is echoed on stderr and sent back in a query. */
    const char *text = json_string_value(next);
    size_t len = json_string_length(next);
    if (len == 0 || len >= LIST_MAX_CURSOR_BYTES)
        return -1;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)text[i] <= ' ' || (unsigned char)text[i] >= 0x7f)
            return -1;
    memcpy(buf, text, len + 1);
    return 1;
}

int cli_list_main(int argc, char **argv)
{
    struct list_args args = {0};
    struct cli_common common;
    struct client client = {0};
    struct client_response resp = {0};
    struct client_path path;
    struct errmsg err;
    char cursor[LIST_MAX_CURSOR_BYTES], next[LIST_MAX_CURSOR_BYTES];
    int widths[LIST_N_COLUMNS];
    bool have_cursor = false, first_page = true;
    int first, exit_code;

    if (cli_parse(&list_command, argc, argv, &args, &common, &first) < 0)
        return CLI_EXIT_USAGE;
    if (common.help)
        return CLI_EXIT_OK;
    if (args.after) {
        size_t len = strlen(args.after);
        if (len >= sizeof(cursor)) {
            cli_usage_error(&list_command, "--after is longer than %d bytes",
                            LIST_MAX_CURSOR_BYTES - 1);
            return CLI_EXIT_USAGE;
        }
        memcpy(cursor, args.after, len + 1);
        have_cursor = true;
    }
    if ((exit_code = cli_connect(&common, &client)) != CLI_EXIT_OK)
        goto out;

    for (;;) {
        client_path_init(&path, "/v1/jobs");
        client_path_query(&path, "queue", args.queue);
        client_path_query(&path, "state", args.state);
        client_path_query(&path, "key", args.key);
        client_path_query(&path, "limit", args.limit);
        client_path_query(&path, "after", have_cursor ? cursor : NULL);
        client_response_release(&resp);
        int rc = client_request(&client, "GET", &path, NULL, &resp, &err);
        if (rc < 0) {
            exit_code = cli_fail(rc, &resp, &err);
            goto out;
        }
        const json_t *jobs = json_object_get(resp.json, "jobs");
        int more = list_next_cursor(resp.json, next);
        if (!json_is_array(jobs) || more < 0) {
            fprintf(stderr, "drover: the server's answer is not a page of jobs\n");
            exit_code = CLI_EXIT_SERVER;
            goto out;
        }

        if (common.json) {
            cli_print_body_line(&resp, stdout);
        } else {
            if (first_page) {
                list_measure(jobs, widths);
                list_print_header(widths, stdout);
            }
            list_print_rows(jobs, widths, stdout);
        }
        first_page = false;

        if (!more)
            break;
        if (!args.all) {
            if (!common.json)
                fprintf(stderr, "drover: more jobs: --after %s\n", next);
            break;
        }
        if (have_cursor && strcmp(cursor, next) == 0) {
            fprintf(stderr, "drover: the server sent the same cursor twice\n");
            exit_code = CLI_EXIT_SERVER;
            goto out;
        }
        /* Show what we have so far while the next page is on its way. */
        fflush(stdout);
        memcpy(cursor, next, sizeof(cursor));
        have_cursor = true;
    }
out:
    client_response_release(&resp);
    client_release(&client);
    return exit_code;
}
