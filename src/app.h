/*
 * app.h - what every handler shares: made in serve.c, passed down, never
 * global (so tests could run two servers in one process).
 */
#ifndef DROVER_APP_H
#define DROVER_APP_H

#include "config.h"
#include "store/store.h"
#include "store/writer.h"

struct app {
    const struct config *cfg;
    struct store *store;
    struct writer *writer;
};

#endif
