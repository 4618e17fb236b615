/*
 * serve.h - `drover serve`: the server's life from config to clean stop.
 */
#ifndef DROVER_SERVE_H
#define DROVER_SERVE_H

/* argv[0] is "serve". Returns the process exit code. */
int serve_main(int argc, char **argv);

#endif
