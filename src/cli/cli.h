/*
 * cli.h - the client commands of the drover binary: submit, get, list, cancel,
 * watch, retry, worker, callback.
 *
 * main() dispatches `drover CMD ...` here with argv starting at the command
 * name (argv[0] is "submit"), and returns what the entry point returns as the
 * process exit code. Every command takes --url/--token/--json/--help (parsed
 * once, in common.c), reads DROVER_URL and DROVER_TOKEN, prints its result on
 * stdout and a single `drover: ...` line on stderr when something goes wrong.
 */
#ifndef DROVER_CLI_H
#define DROVER_CLI_H

#include <stdio.h>

/*
 * Exit codes, one table for the enum and for every --help. Scripts rely on
 * these numbers: never renumber, only add.
 *
 *    symbol       code  meaning
 */
#define CLI_EXIT_TABLE(X)                                                                          \
    X(OK, 0, "ok")                                                                                 \
    X(JOB_FAILED, 1, "the job ended failed or canceled (commands that wait for a job)")            \
    X(USAGE, 2, "usage error: unknown option, missing or malformed argument")                      \
    X(NOT_FOUND, 3, "not found (HTTP 404)")                                                        \
    X(CONFLICT, 4, "conflict: the job's state does not allow it (HTTP 409)")                       \
    X(AUTH, 5, "missing, unknown or insufficient token (HTTP 401, 403)")                           \
    X(REFUSED, 6, "request refused (any other HTTP 4xx)")                                          \
    X(SERVER, 7, "server error or unreachable (HTTP 5xx, network, bad response)")

enum cli_exit {
#define X(sym, code, text) CLI_EXIT_##sym = code,
    CLI_EXIT_TABLE(X)
#undef X
};

/* Print the list of commands (and where to get more help) to out. */
void cli_usage(FILE *out);

/* drover submit QUEUE [options]: print the new job's id (the job with --json). */
int cli_submit_main(int argc, char **argv);

/* drover get ID [options]: show one job. */
int cli_get_main(int argc, char **argv);

/* drover list [options]: a table of jobs, newest first. */
int cli_list_main(int argc, char **argv);

/* drover cancel ID [options]: cancel a job. */
int cli_cancel_main(int argc, char **argv);

/* drover worker QUEUE [options] -- CMD [ARGS...]: claim jobs and run CMD for each. */
int cli_worker_main(int argc, char **argv);

/* drover watch ID [options]: follow a job until it ends; exit 0 succeeded, 1 failed/canceled. */
int cli_watch_main(int argc, char **argv);

/* drover retry ID [options]: start a new attempt of a failed or canceled job. */
int cli_retry_main(int argc, char **argv);

/*
 * drover callback --secret-env NAME --job ID --attempt N STATUS [options]: a
 * signed, retried runner callback (POST /v1/callbacks/ID); with heartbeat
 * --every D -- CMD, heartbeats while CMD runs and returns CMD's exit status.
 */
int cli_callback_main(int argc, char **argv);

#endif
