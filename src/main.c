/*
 * main.c - the drover binary: `drover serve` runs the server, every other
 * command is a client of it (src/cli/).
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "serve.h"

#ifndef DROVER_VERSION
#define DROVER_VERSION "0.1.0"
#endif

struct command {
    const char *name;
    int (*main)(int argc, char **argv);
};

/* clang-format off */
static const struct command commands[] = {
    {"serve", serve_main},
    {"submit", cli_submit_main},
    {"get", cli_get_main},
    {"list", cli_list_main},
    {"cancel", cli_cancel_main},
    {"worker", cli_worker_main},
    {"watch", cli_watch_main},
    {"retry", cli_retry_main},
    {"callback", cli_callback_main},
};
/* clang-format on */

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        cli_usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("drover %s\n", DROVER_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].main(argc - 1, argv + 1);
    }
    fprintf(stderr, "drover: unknown command '%s' (try 'drover --help')\n", argv[1]);
    return 2;
}
