/*
 * submit.c - `drover submit QUEUE`: POST /v1/jobs and print the new job's id
 * (so `id=$(drover submit q)` works), or the whole job with --json.
 */
#include "cli/common.h"

#include <stdlib.h>
#include <string.h>

enum submit_opt {
    SUBMIT_PAYLOAD = CLI_OPT_COMMAND,
    SUBMIT_PAYLOAD_FILE,
    SUBMIT_DEDUP_KEY,
    SUBMIT_CONCURRENCY_KEY,
    SUBMIT_LOCK,
    SUBMIT_RUN_AT,
    SUBMIT_WEBHOOK_URL,
};

#define SUBMIT_MAX_LOCKS 64 /* the server takes 16; more is surely a mistake */

struct submit_args {
    const char *payload;
    const char *payload_file;
    const char *dedup_key;
    const char *concurrency_key;
    const char *run_at;
    const char *webhook_url;
    const char *locks[SUBMIT_MAX_LOCKS];
    int n_locks;
};

static const struct option submit_options[] = {
    {"payload", required_argument, NULL, SUBMIT_PAYLOAD},
    {"payload-file", required_argument, NULL, SUBMIT_PAYLOAD_FILE},
    {"dedup-key", required_argument, NULL, SUBMIT_DEDUP_KEY},
    {"concurrency-key", required_argument, NULL, SUBMIT_CONCURRENCY_KEY},
    {"lock", required_argument, NULL, SUBMIT_LOCK},
    {"run-at", required_argument, NULL, SUBMIT_RUN_AT},
    {"webhook-url", required_argument, NULL, SUBMIT_WEBHOOK_URL},
    {NULL, 0, NULL, 0},
};

static int submit_on_option(void *ctx, int opt, const char *arg);

static const struct cli_command submit_command = {
    .name = "submit",
    .synopsis = "QUEUE [options]",
    .description = "Submit a job to QUEUE (POST /v1/jobs) and print its id on stdout.\n",
    .options_help = "  --payload JSON          the job's payload, a JSON object (default {})\n"
                    "  --payload-file FILE     read the payload from FILE ('-' = stdin)\n"
                    "  --dedup-key KEY         deduplication key\n"
                    "  --concurrency-key KEY   concurrency key\n"
                    "  --lock KEY              a lock the job holds while it runs (repeatable)\n"
                    "  --run-at TIME           start no earlier than TIME (RFC 3339 or Unix "
                    "seconds)\n"
                    "  --webhook-url URL       where to send the job's webhooks\n",
    .json_help = "print the whole job object as the server sent it",
    .options = submit_options,
    .arg_name = "QUEUE",
    .min_args = 1,
    .max_args = 1,
    .on_option = submit_on_option,
};

static int submit_on_option(void *ctx, int opt, const char *arg)
{
    struct submit_args *a = ctx;

    switch (opt) {
    case SUBMIT_PAYLOAD: a->payload = arg; break;
    case SUBMIT_PAYLOAD_FILE: a->payload_file = arg; break;
    case SUBMIT_DEDUP_KEY: a->dedup_key = arg; break;
    case SUBMIT_CONCURRENCY_KEY: a->concurrency_key = arg; break;
    case SUBMIT_RUN_AT: a->run_at = arg; break;
    case SUBMIT_WEBHOOK_URL: a->webhook_url = arg; break;
    case SUBMIT_LOCK:
        if (a->n_locks == SUBMIT_MAX_LOCKS)
            return cli_usage_error(&submit_command, "more than %d --lock options",
                                   SUBMIT_MAX_LOCKS);
        a->locks[a->n_locks++] = arg;
        break;
    default: return cli_usage_error(&submit_command, "unhandled option");
    }
    return 0;
}

/* body[key] = value as a JSON string; value NULL leaves the field out. */
static int submit_set_string(json_t *body, const char *key, const char *option, const char *value)
{
    if (!value)
        return 0;
    json_t *s = json_string(value);
    if (!s)
        return cli_usage_error(&submit_command, "%s is not valid UTF-8", option);
    if (json_object_set_new(body, key, s) < 0)
        return -DRV_ENOMEM;
    return 0;
}

/* The payload from --payload or --payload-file; *payload NULL when neither. */
static int submit_load_payload(const struct submit_args *a, json_t **payload)
{
    json_error_t jerr;
    struct errmsg err;
    char *text = NULL;
    size_t len = 0;
    const char *what = a->payload ? "--payload" : "--payload-file";

    *payload = NULL;
    if (a->payload && a->payload_file)
        return cli_usage_error(&submit_command, "give --payload or --payload-file, not both");
    if (a->payload) {
        *payload = json_loads(a->payload, 0, &jerr);
    } else if (a->payload_file) {
        int rc = cli_read_file(a->payload_file, CLI_MAX_INPUT_BYTES, &text, &len, &err);
        if (rc < 0)
            return cli_usage_error(&submit_command, "%s", err.text);
        *payload = json_loadb(text, len, 0, &jerr);
        free(text);
    } else {
        return 0;
    }
    if (!*payload)
        return cli_usage_error(&submit_command, "%s is not valid JSON: %s (line %d)", what,
                               jerr.text, jerr.line);
    if (!json_is_object(*payload)) {
        json_decref(*payload);
        *payload = NULL;
        return cli_usage_error(&submit_command, "%s must be a JSON object", what);
    }
    return 0;
}

/* --run-at: all digits is Unix seconds, anything else goes as an RFC 3339 string. */
static int submit_set_run_at(json_t *body, const char *run_at)
{
    if (!run_at)
        return 0;
    if (strspn(run_at, "0123456789") != strlen(run_at))
        return submit_set_string(body, "run_at", "--run-at", run_at);

    char *end;
    long long seconds = strtoll(run_at, &end, 10);
    if (*end || seconds < 0 || seconds > 253402300799LL) /* 9999-12-31T23:59:59Z */
        return cli_usage_error(&submit_command, "--run-at '%s' is out of range", run_at);
    if (json_object_set_new(body, "run_at", json_integer(seconds)) < 0)
        return -DRV_ENOMEM;
    return 0;
}

/* The request body from the arguments; usage errors are reported here. */
static int submit_build_body(const struct submit_args *a, const char *queue, json_t **out)
{
    int rc;
    json_t *body = json_object();
    json_t *payload = NULL, *locks = NULL;

    *out = NULL;
    if (!body)
        return -DRV_ENOMEM;
    if ((rc = submit_set_string(body, "queue", "QUEUE", queue)) < 0)
        goto out;
    if ((rc = submit_load_payload(a, &payload)) < 0)
        goto out;
    if (payload && (rc = json_object_set_new(body, "payload", payload)) < 0) {
        rc = -DRV_ENOMEM;
        goto out;
    }
    if ((rc = submit_set_string(body, "dedup_key", "--dedup-key", a->dedup_key)) < 0 ||
        (rc = submit_set_string(body, "concurrency_key", "--concurrency-key", a->concurrency_key)) <
            0 ||
        (rc = submit_set_run_at(body, a->run_at)) < 0 ||
        (rc = submit_set_string(body, "webhook_url", "--webhook-url", a->webhook_url)) < 0)
        goto out;
    if (a->n_locks > 0) {
        if (!(locks = json_array()) || json_object_set_new(body, "lock_keys", locks) < 0) {
            rc = -DRV_ENOMEM;
            goto out;
        }
        for (int i = 0; i < a->n_locks; i++) {
            json_t *key = json_string(a->locks[i]);
            if (!key) {
                rc = cli_usage_error(&submit_command, "--lock is not valid UTF-8");
                goto out;
            }
            if (json_array_append_new(locks, key) < 0) {
                rc = -DRV_ENOMEM;
                goto out;
            }
        }
    }
    *out = body;
    body = NULL;
out:
    json_decref(body);
    return rc;
}

int cli_submit_main(int argc, char **argv)
{
    struct submit_args args = {0};
    struct cli_common common;
    struct client client = {0};
    struct client_response resp = {0};
    struct client_path path;
    struct errmsg err;
    json_t *body = NULL;
    int first, exit_code;

    if (cli_parse(&submit_command, argc, argv, &args, &common, &first) < 0)
        return CLI_EXIT_USAGE;
    if (common.help)
        return CLI_EXIT_OK;

    int rc = submit_build_body(&args, argv[first], &body);
    if (rc < 0) {
        if (rc == -DRV_EBAD_REQUEST)
            return CLI_EXIT_USAGE;
        fprintf(stderr, "drover: out of memory\n");
        return CLI_EXIT_SERVER;
    }
    if ((exit_code = cli_connect(&common, &client)) != CLI_EXIT_OK)
        goto out;

    client_path_init(&path, "/v1/jobs");
    rc = client_request(&client, "POST", &path, body, &resp, &err);
    if (rc < 0) {
        exit_code = cli_fail(rc, &resp, &err);
        goto out;
    }
    if (common.json) {
        cli_print_body(&resp, stdout);
        goto out;
    }
    const char *id = json_string_value(json_object_get(resp.json, "id"));
    if (!id) {
        fprintf(stderr, "drover: the server's answer has no job id\n");
        exit_code = CLI_EXIT_SERVER;
        goto out;
    }
    cli_print_value(json_object_get(resp.json, "id"), stdout);
    fputc('\n', stdout);
out:
    client_response_release(&resp);
    client_release(&client);
    json_decref(body);
    return exit_code;
}
