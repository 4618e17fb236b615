/*
 * common.c - option parsing, help, exit codes and output helpers shared by
 * the client commands (see common.h).
 */
#include "cli/common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const struct option cli_common_options[] = {
    {"url", required_argument, NULL, CLI_OPT_URL},
    {"token", required_argument, NULL, CLI_OPT_TOKEN},
    {"json", no_argument, NULL, CLI_OPT_JSON},
    {"help", no_argument, NULL, CLI_OPT_HELP},
};

#define CLI_N_COMMON ARRAY_SIZE(cli_common_options)

static const struct {
    const char *name;
    const char *summary;
} cli_commands[] = {
    {"serve", "run the server"},
    {"submit", "submit a job and print its id"},
    {"get", "show one job"},
    {"list", "list jobs, newest first"},
    {"watch", "follow a job's steps until it ends"},
    {"cancel", "cancel a job"},
    {"retry", "start a new attempt of a failed or canceled job"},
    {"worker", "run a command for each job of a queue (pull worker)"},
    {"callback", "send a signed runner callback (step, heartbeat, succeeded, failed)"},
};

void cli_usage(FILE *out)
{
    fprintf(out, "usage: drover COMMAND [options] [args]\n\ncommands:\n");
    for (size_t i = 0; i < ARRAY_SIZE(cli_commands); i++)
        fprintf(out, "  %-8s %s\n", cli_commands[i].name, cli_commands[i].summary);
    fprintf(out, "\nRun 'drover COMMAND --help' for a command's options, environment and exit "
                 "codes.\n");
}

void cli_help(const struct cli_command *cmd, FILE *out)
{
    fprintf(out, "usage: drover %s %s\n\n%s", cmd->name, cmd->synopsis, cmd->description);
    if (cmd->options_help && *cmd->options_help)
        fprintf(out, "\noptions:\n%s", cmd->options_help);
    fprintf(out,
            "\ncommon options:\n"
            "  --url URL      the server (default $DROVER_URL, else %s)\n"
            "  --token TOKEN  bearer token (default $DROVER_TOKEN)\n"
            "  --json         %s\n"
            "  -h, --help     show this help and exit\n",
            CLIENT_DEFAULT_URL, cmd->json_help);
    fprintf(out, "\nenvironment:\n"
                 "  DROVER_URL     the server's base url, when --url is not given\n"
                 "  DROVER_TOKEN   the bearer token, when --token is not given\n");
    fprintf(out, "\nexit codes:\n");
#define X(sym, code, text) fprintf(out, "  %d  %s\n", code, text);
    CLI_EXIT_TABLE(X)
#undef X
}

int cli_usage_error(const struct cli_command *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "drover %s: ", cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'drover %s --help'.\n", cmd->name);
    return -DRV_EBAD_REQUEST;
}

/* Empty environment variables count as unset. */
static const char *cli_env(const char *name)
{
    const char *v = getenv(name);
    return (v && *v) ? v : NULL;
}

int cli_parse(const struct cli_command *cmd, int argc, char **argv, void *ctx,
              struct cli_common *common, int *first_arg)
{
    struct option options[CLI_MAX_OPTIONS + CLI_N_COMMON + 1];
    size_t n = 0;

    memset(common, 0, sizeof(*common));
    for (const struct option *o = cmd->options; o && o->name; o++) {
        if (n == CLI_MAX_OPTIONS) /* a programming error, caught by any test of cmd */
            return cli_usage_error(cmd, "internal error: more than %d options", CLI_MAX_OPTIONS);
        options[n++] = *o;
    }
    memcpy(options + n, cli_common_options, sizeof(cli_common_options));
    n += CLI_N_COMMON;
    memset(&options[n], 0, sizeof(options[n]));

    /* optind = 0 makes glibc start afresh, even if another parse ran before. */
    optind = 0;
    opterr = 0;
    for (;;) {
        int opt = getopt_long(argc, argv, ":h", options, NULL);
        if (opt == -1)
            break;
        switch (opt) {
        case CLI_OPT_URL: common->url = optarg; break;
        case CLI_OPT_TOKEN: common->token = optarg; break;
        case CLI_OPT_JSON: common->json = true; break;
        case CLI_OPT_HELP: common->help = true; break;
        case ':': return cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        case '?':
            /* optopt: the unknown short option, or the val of a long option
             * given a value it does not take (--json=1), or 0. */
            if (optopt > 0 && optopt < 0x80)
                return cli_usage_error(cmd, "unknown option '-%c'", optopt);
            if (optopt)
                return cli_usage_error(cmd, "option '%.*s' takes no value",
                                       (int)strcspn(argv[optind - 1], "="), argv[optind - 1]);
            return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        default:
            if (!cmd->on_option)
                return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
            int rc = cmd->on_option(ctx, opt, optarg);
            if (rc < 0)
                return rc;
        }
    }

    if (common->help) {
        cli_help(cmd, stdout);
        return 0;
    }

    int nargs = argc - optind;
    if (nargs < cmd->min_args)
        return cli_usage_error(cmd, "missing %s", cmd->arg_name);
    if (nargs > cmd->max_args)
        return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind + cmd->max_args]);
    for (int i = optind; i < argc; i++)
        if (!argv[i][0])
            return cli_usage_error(cmd, "empty %s", cmd->arg_name);

    if (!common->url)
        common->url = cli_env("DROVER_URL");
    if (!common->token)
        common->token = cli_env("DROVER_TOKEN");
    *first_arg = optind;
    return 0;
}

int cli_connect(const struct cli_common *common, struct client *c)
{
    struct errmsg err;

    int rc = client_init(c, common->url, common->token, &err);
    if (rc < 0) {
        fprintf(stderr, "drover: %s\n", err.text);
        return rc == -DRV_EBAD_REQUEST ? CLI_EXIT_USAGE : CLI_EXIT_SERVER;
    }
    return CLI_EXIT_OK;
}

int cli_exit_for_status(long status)
{
    if (status >= 200 && status < 300)
        return CLI_EXIT_OK;
    switch (status) {
    case 401:
    case 403: return CLI_EXIT_AUTH;
    case 404: return CLI_EXIT_NOT_FOUND;
    case 409: return CLI_EXIT_CONFLICT;
    default: return (status >= 400 && status < 500) ? CLI_EXIT_REFUSED : CLI_EXIT_SERVER;
    }
}

int cli_fail(int rc, const struct client_response *resp, const struct errmsg *err)
{
    fprintf(stderr, "drover: %s\n", err->text);
    if (resp && resp->status >= 400)
        return cli_exit_for_status(resp->status);
    /* A request we could not even form is the caller's input; anything else
     * (no answer, a 2xx we cannot use, a redirect) is the server's side. */
    if (rc == -DRV_EBAD_REQUEST && (!resp || resp->status == 0))
        return CLI_EXIT_USAGE;
    return CLI_EXIT_SERVER;
}

int cli_job_action(const struct cli_common *common, const char *id, const char *action,
                   const json_t *body, struct client_response *resp)
{
    struct client client = {0};
    struct client_path path;
    struct errmsg err;
    int exit_code = cli_connect(common, &client);
    if (exit_code == CLI_EXIT_OK) {
        client_path_init(&path, "/v1/jobs");
        client_path_segment(&path, id);
        client_path_segment(&path, action);
        int rc = client_request(&client, "POST", &path, body, resp, &err);
        if (rc < 0)
            exit_code = cli_fail(rc, resp, &err);
        else if (common->json)
            cli_print_body(resp, stdout);
    }
    client_release(&client);
    return exit_code;
}

void cli_print_body(const struct client_response *resp, FILE *out)
{
    if (resp->len)
        fwrite(resp->body, 1, resp->len, out);
    if (!resp->len || resp->body[resp->len - 1] != '\n')
        fputc('\n', out);
}

void cli_print_body_line(const struct client_response *resp, FILE *out)
{
    for (size_t i = 0; i < resp->len; i++)
        fputc((resp->body[i] == '\n' || resp->body[i] == '\r') ? ' ' : resp->body[i], out);
    fputc('\n', out);
}

/* The text cli_print_value() shows; *owned is set when the caller must free it. */
static const char *cli_value_text(const json_t *value, char **owned)
{
    *owned = NULL;
    if (!value || json_is_null(value))
        return "-";
    if (json_is_string(value))
        return json_string_value(value);
    *owned = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    return *owned ? *owned : "?";
}

void cli_print_value(const json_t *value, FILE *out)
{
    char *owned;
    const char *text = cli_value_text(value, &owned);

    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        fputc((*p < ' ' || *p == 0x7f) ? '?' : *p, out);
    free(owned);
}

int cli_value_width(const json_t *value)
{
    char *owned;
    size_t len = strlen(cli_value_text(value, &owned));

    free(owned);
    return len > 4096 ? 4096 : (int)len;
}

void cli_print_cell(const json_t *value, int width, FILE *out)
{
    cli_print_value(value, out);
    for (int pad = width - cli_value_width(value); pad > 0; pad--)
        fputc(' ', out);
}

int cli_read_file(const char *path, size_t max, char **data, size_t *len, struct errmsg *err)
{
    int rc = 0;
    bool is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    char *buf = NULL;
    size_t used = 0, alloc = 0;

    *data = NULL;
    *len = 0;
    if (!f)
        return errmsg_set(err, -DRV_EIO, "cannot open '%s': %s", path, strerror(errno));

    for (;;) {
        if (alloc - used < 2) {
            size_t want = alloc ? alloc * 2 : 65536;
            if (want > max + 2)
                want = max + 2; /* room for one byte past max (detects too large) + NUL */
            char *grown = realloc(buf, want);
            if (!grown) {
                rc = errmsg_set(err, -DRV_ENOMEM, "out of memory");
                goto out;
            }
            buf = grown;
            alloc = want;
        }
        size_t got = fread(buf + used, 1, alloc - used - 1, f);
        used += got;
        if (used > max) {
            rc = errmsg_set(err, -DRV_ETOO_LARGE, "'%s' is larger than %zu bytes", path, max);
            goto out;
        }
        if (got == 0) {
            if (ferror(f)) {
                rc = errmsg_set(err, -DRV_EIO, "cannot read '%s': %s", path, strerror(errno));
                goto out;
            }
            break;
        }
    }
    buf[used] = '\0';
    *data = buf;
    *len = used;
    buf = NULL;

out:
    free(buf);
    if (!is_stdin)
        fclose(f);
    return rc;
}
