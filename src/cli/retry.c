/*
 * retry.c - `drover retry ID`: POST /v1/jobs/{id}/retry. A failed or
 * canceled job gets a new attempt (queued, keeping its checkpoints); past
 * the queue's retry_cap only an admin's --force gets one. Prints "ID STATE"
 * (the job with --json).
 */
#include "cli/common.h"

enum retry_opt {
    RETRY_FORCE = CLI_OPT_COMMAND,
};

struct retry_args {
    bool force;
};

static const struct option retry_options[] = {
    {"force", no_argument, NULL, RETRY_FORCE},
    {NULL, 0, NULL, 0},
};

static int retry_on_option(void *ctx, int opt, const char *arg);

static const struct cli_command retry_command = {
    .name = "retry",
    .synopsis = "ID [options]",
    .description = "Start a new attempt of a failed or canceled job (POST /v1/jobs/ID/retry) and\n"
                   "print \"ID queued\". The job keeps its checkpoints. A job that has not\n"
                   "ended, or that succeeded, cannot be retried (exit 4); past its queue's\n"
                   "retry_cap a retry is refused (exit 4, the server's reason on stderr)\n"
                   "unless an admin forces it.\n",
    .options_help = "  --force   retry even past the queue's retry_cap (needs an admin token)\n",
    .json_help = "print the job object as the server sent it",
    .options = retry_options,
    .arg_name = "ID",
    .min_args = 1,
    .max_args = 1,
    .on_option = retry_on_option,
};

static int retry_on_option(void *ctx, int opt, const char *arg)
{
    struct retry_args *a = ctx;

    (void)arg;
    if (opt != RETRY_FORCE)
        return cli_usage_error(&retry_command, "unhandled option");
    a->force = true;
    return 0;
}

int cli_retry_main(int argc, char **argv)
{
    struct retry_args args = {0};
    struct cli_common common;
    struct client_response resp = {0};
    json_t *body = NULL;
    int first;

    if (cli_parse(&retry_command, argc, argv, &args, &common, &first) < 0)
        return CLI_EXIT_USAGE;
    if (common.help)
        return CLI_EXIT_OK;
    /* Without --force no body at all: the field is optional and false by default. */
    if (args.force && !(body = json_pack("{s:b}", "force", 1))) {
        fprintf(stderr, "drover: out of memory\n");
        return CLI_EXIT_SERVER;
    }
    int exit_code = cli_job_action(&common, argv[first], "retry", body, &resp);
    if (exit_code == CLI_EXIT_OK && !common.json) {
        cli_print_value(json_object_get(resp.json, "id"), stdout);
        fputc(' ', stdout);
        cli_print_value(json_object_get(resp.json, "state"), stdout);
        fputc('\n', stdout);
    }
    client_response_release(&resp);
    json_decref(body);
    return exit_code;
}
