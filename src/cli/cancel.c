/*
 * cancel.c - `drover cancel ID`: POST /v1/jobs/{id}/cancel. A queued or
 * scheduled job is canceled at once; a running one is marked
 * cancel_requested and ends when its worker gives up. Prints "ID STATE"
 * (the job with --json).
 */
#include "cli/common.h"

#include <string.h>

enum cancel_opt {
    CANCEL_REASON = CLI_OPT_COMMAND,
};

struct cancel_args {
    const char *reason;
};

static const struct option cancel_options[] = {
    {"reason", required_argument, NULL, CANCEL_REASON},
    {NULL, 0, NULL, 0},
};

static int cancel_on_option(void *ctx, int opt, const char *arg);

static const struct cli_command cancel_command = {
    .name = "cancel",
    .synopsis = "ID [options]",
    .description = "Cancel a job (POST /v1/jobs/ID/cancel) and print \"ID canceled\", or\n"
                   "\"ID cancel_requested\" for a running job that stops when its worker does.\n"
                   "A job that already ended cannot be canceled (exit 4).\n",
    .options_help = "  --reason TEXT   why, recorded with the cancellation\n",
    .json_help = "print the job object as the server sent it",
    .options = cancel_options,
    .arg_name = "ID",
    .min_args = 1,
    .max_args = 1,
    .on_option = cancel_on_option,
};

static int cancel_on_option(void *ctx, int opt, const char *arg)
{
    struct cancel_args *a = ctx;

    if (opt != CANCEL_REASON)
        return cli_usage_error(&cancel_command, "unhandled option");
    a->reason = arg;
    return 0;
}

int cli_cancel_main(int argc, char **argv)
{
    struct cancel_args args = {0};
    struct cli_common common;
    struct client_response resp = {0};
    json_t *body = NULL;
    int first;

    if (cli_parse(&cancel_command, argc, argv, &args, &common, &first) < 0)
        return CLI_EXIT_USAGE;
    if (common.help)
        return CLI_EXIT_OK;
    if (args.reason) {
        json_t *reason = json_string(args.reason);
        if (!reason) {
            cli_usage_error(&cancel_command, "--reason is not valid UTF-8");
            return CLI_EXIT_USAGE;
        }
        body = json_pack("{s:o}", "reason", reason);
        if (!body) {
            fprintf(stderr, "drover: out of memory\n");
            return CLI_EXIT_SERVER;
        }
    }
    int exit_code = cli_job_action(&common, argv[first], "cancel", body, &resp);
    if (exit_code == CLI_EXIT_OK && !common.json) {
        json_t *state = json_object_get(resp.json, "state");
        bool requested = json_is_true(json_object_get(resp.json, "cancel_requested"));
        cli_print_value(json_object_get(resp.json, "id"), stdout);
        fputc(' ', stdout);
        if (requested && json_is_string(state) && strcmp(json_string_value(state), "canceled") != 0)
            fputs("cancel_requested", stdout);
        else
            cli_print_value(state, stdout);
        fputc('\n', stdout);
    }
    client_response_release(&resp);
    json_decref(body);
    return exit_code;
}
