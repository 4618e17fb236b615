/*
 * common.h - what every client command shares: option parsing with the
 * common options (--url, --token, --json, --help), the --help text, the
 * mapping from a failed request to an exit code and its stderr line, and
 * small output and input helpers.
 *
 * A command describes itself in a struct cli_command (its synopsis, its own
 * getopt_long options and their help) and hands its options to
 * cli_parse(), so no command parses or documents the common options itself.
 */
#ifndef DROVER_CLI_COMMON_H
#define DROVER_CLI_COMMON_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include <jansson.h>

#include "cli/cli.h"
#include "cli/client.h"

/* Option ids: commands number their own long options from CLI_OPT_COMMAND up. */
enum cli_opt {
    CLI_OPT_HELP = 'h',
    CLI_OPT_URL = 0x100,
    CLI_OPT_TOKEN,
    CLI_OPT_JSON,
    CLI_OPT_COMMAND = 0x200,
};

#define CLI_MAX_OPTIONS     32                  /* a command's own options, at most */
#define CLI_MAX_INPUT_BYTES (64L * 1024 * 1024) /* a file read as a request field */

/* The common options after parsing. Strings point into argv or environ. */
struct cli_common {
    const char *url;   /* --url, else $DROVER_URL, else NULL (the client's default) */
    const char *token; /* --token, else $DROVER_TOKEN, else NULL; never print it */
    bool json;         /* --json */
    bool help;         /* --help: the help was printed, the command should exit 0 */
};

struct cli_command {
    const char *name;             /* "submit" */
    const char *synopsis;         /* "QUEUE [options]", after "drover NAME " */
    const char *description;      /* what the command does and prints; lines end in '\n' */
    const char *options_help;     /* the command's own options, one "  --x  text\n" per line */
    const char *json_help;        /* what --json prints */
    const struct option *options; /* own long options, {0}-terminated; NULL for none */
    const char *arg_name;         /* the positional argument for messages: "QUEUE", "ID" */
    int min_args, max_args;       /* positional arguments allowed */
    /*
     * Called for each of the command's own options, in order. Returns 0, or
     * a negative code after reporting a usage error with cli_usage_error().
     */
    int (*on_option)(void *ctx, int opt, const char *arg);
};

/*
 * Parse argv (argv[0] is the command name) for cmd: the common options into
 * common, the command's own through cmd->on_option(ctx, ...).
 *
 * OUT first_arg: index in argv of the first positional argument; there are
 * argc - *first_arg of them, between min_args and max_args, none empty.
 *
 * Returns 0 to go on, with common->help set when --help was given (the help
 * is printed to stdout already and the command should return CLI_EXIT_OK).
 * Returns -DRV_EBAD_REQUEST after printing a usage error to stderr: the
 * command should return CLI_EXIT_USAGE.
 */
int cli_parse(const struct cli_command *cmd, int argc, char **argv, void *ctx,
              struct cli_common *common, int *first_arg);

/* Print cmd's --help to out: synopsis, options, environment, exit codes. */
void cli_help(const struct cli_command *cmd, FILE *out);

/*
 * Report a usage error for cmd on stderr ("drover submit: MESSAGE" and a
 * pointer to --help). Returns -DRV_EBAD_REQUEST.
 */
int cli_usage_error(const struct cli_command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Set up c from common. On failure prints the reason and returns the exit
 * code to end with (CLI_EXIT_USAGE for a bad url or token); 0 on success.
 */
int cli_connect(const struct cli_common *common, struct client *c);

/*
 * After client_request() failed with rc: print "drover: " and err's line to
 * stderr and return the exit code for it (from resp->status when the server
 * answered).
 */
int cli_fail(int rc, const struct client_response *resp, const struct errmsg *err);

/* The exit code for an HTTP status (0 = no answer): 2xx -> 0, 404 -> 3, ... */
int cli_exit_for_status(long status);

/* Write the response body exactly as received, ending with one newline. */
void cli_print_body(const struct client_response *resp, FILE *out);

/*
 * POST /v1/jobs/ID/ACTION with body (borrowed, may be NULL), connecting as
 * common says. On success resp holds the answer (with --json it has been
 * printed already). Returns the exit code; release resp either way.
 */
int cli_job_action(const struct cli_common *common, const char *id, const char *action,
                   const json_t *body, struct client_response *resp);

/*
 * Write the response body on one line: its CR and LF bytes become spaces,
 * which keeps a valid JSON document valid and equal (JSON strings cannot hold
 * raw newlines), so several responses make JSON Lines.
 */
void cli_print_body_line(const struct client_response *resp, FILE *out);

/*
 * Print a JSON value for a human: strings bare, null as "-", anything else
 * as compact JSON. Control characters become '?', so a value cannot move the
 * cursor or start an escape sequence.
 */
void cli_print_value(const json_t *value, FILE *out);

/* Like cli_print_value() padded with spaces to width columns (bytes). */
void cli_print_cell(const json_t *value, int width, FILE *out);

/* The width cli_print_value() would use for value, in bytes. */
int cli_value_width(const json_t *value);

/*
 * Read the file at path ("-" = stdin) into a NUL-terminated buffer of at
 * most max bytes. OUT data (caller frees), OUT len. Fails with -DRV_EIO
 * (cannot read), -DRV_ETOO_LARGE or -DRV_ENOMEM and err set.
 */
int cli_read_file(const char *path, size_t max, char **data, size_t *len, struct errmsg *err);

#endif
