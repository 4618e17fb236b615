/*
 * get.c - `drover get ID`: GET /v1/jobs/{id} and show the job as aligned
 * "key  value" lines, or with --json the job object as the server sent it.
 *
 * The readable view walks the object's keys in the order the server sent
 * them, so a field added to the API shows up without a change here.
 */
#include "cli/common.h"

#include <string.h>

static const struct cli_command get_command = {
    .name = "get",
    .synopsis = "ID [options]",
    .description = "Show one job (GET /v1/jobs/ID): one field per line, null shown as '-'.\n",
    .options_help = "",
    .json_help = "print the job object exactly as the server sent it",
    .options = NULL,
    .arg_name = "ID",
    .min_args = 1,
    .max_args = 1,
    .on_option = NULL,
};

static void get_print_job(json_t *job, FILE *out)
{
    const char *key;
    const json_t *value;
    size_t width = 0;

    json_object_foreach(job, key, value) if (strlen(key) > width) width = strlen(key);
    json_object_foreach(job, key, value)
    {
        fputs(key, out);
        for (size_t pad = strlen(key); pad < width + 2; pad++)
            fputc(' ', out);
        cli_print_value(value, out);
        fputc('\n', out);
    }
}

int cli_get_main(int argc, char **argv)
{
    struct cli_common common;
    struct client client = {0};
    struct client_response resp = {0};
    struct client_path path;
    struct errmsg err;
    int first, exit_code;

    if (cli_parse(&get_command, argc, argv, NULL, &common, &first) < 0)
        return CLI_EXIT_USAGE;
    if (common.help)
        return CLI_EXIT_OK;
    if ((exit_code = cli_connect(&common, &client)) != CLI_EXIT_OK)
        goto out;

    client_path_init(&path, "/v1/jobs");
    client_path_segment(&path, argv[first]);
    int rc = client_request(&client, "GET", &path, NULL, &resp, &err);
    if (rc < 0) {
        exit_code = cli_fail(rc, &resp, &err);
        goto out;
    }
    if (common.json)
        cli_print_body(&resp, stdout);
    else
        get_print_job(resp.json, stdout);
out:
    client_response_release(&resp);
    client_release(&client);
    return exit_code;
}
