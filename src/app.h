/*
 * app.h - what every handler shares: made in serve.c, passed down, never
 * global (so tests could run two servers in one process).
 */
#ifndef DROVER_APP_H
#define DROVER_APP_H

#include "claims.h"
#include "config.h"
#include "job_ops.h"
#include "policy_cache.h"
#include "store/store.h"
#include "store/writer.h"
#include "subscriptions.h"
#include "timers.h"

struct app {
    const struct config *cfg;
    struct store *store;
    struct writer *writer;
    struct policy_cache *policies;
    struct timers *timers;
    struct claims *claims;
    struct job_env env;
    struct outbound *outbound;     /* dispatches leave through it */
    struct outbound *webhooks_out; /* webhooks leave through it, at a lower priority */
    struct dispatcher *dispatcher; /* claims and dispatches http-mode queues' jobs */
    struct sub_cache *subs;        /* webhook subscriptions, mirrored from the store */
    struct deliverer *deliverer;   /* sends the outbox */
};

#endif
