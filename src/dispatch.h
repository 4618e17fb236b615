/*
 * dispatch.h - drover's own claimer for queues in http mode: it leases
 * their jobs like a worker would, then sends each one to its external
 * runner (docs/api.md "External runners"; docs/adr/0012-runner-callbacks.md).
 *
 * Per http queue one claim op (job_claim_op with .dispatcher set) waits in
 * the claims module like a worker's long-poll, so a job that becomes ready
 * is leased to it in the very transaction that made it ready: running,
 * attempt + 1, waiting_for "dispatch". After that commit the dispatcher
 * renders the queue's template, signs it (Standard Webhooks, with the
 * queue's callback_secret) and hands it to the outbound engine. A 2xx is
 * recorded (job.dispatched); anything else is tried again after 1, 2, 4
 * and 8 s, and then fails the attempt with dispatch_failed. Jobs still
 * waiting for their dispatch at start are sent again.
 *
 * Threads: claim answers arrive on the writer thread, results on the
 * outbound engine's, retries on the timers'; one mutex guards the lists.
 */
#ifndef DROVER_DISPATCH_H
#define DROVER_DISPATCH_H

#include "claims.h"
#include "outbound.h"
#include "policy_cache.h"
#include "sign.h"
#include "store/writer.h"
#include "timers.h"

#define DISPATCH_TRIES       5   /* sends per attempt before dispatch_failed */
#define DISPATCH_RETRY_MAX_S 60  /* the longest Retry-After honoured */
#define DISPATCH_EXCERPT_MAX 512 /* bytes of a failed answer kept in the error */

struct dispatcher_config {
    struct store *store;
    struct writer *writer;
    struct claims *claims;
    struct timers *timers;
    struct policy_cache *policies;
    struct outbound *outbound;
};

struct dispatcher;

/* A dispatcher that does nothing until dispatcher_start(). */
int dispatcher_new(const struct dispatcher_config *cfg, struct dispatcher **out);

/*
 * Start, once the server listens: callback URLs begin with public_url
 * ("http://127.0.0.1:8080"). Watches every queue in http mode and sends
 * again the dispatch of every job still waiting for it (after a restart).
 */
int dispatcher_start(struct dispatcher *d, const char *public_url);

/*
 * queue is (now) in http mode: make sure a claim of the dispatcher waits on
 * it. Any thread; ignored before dispatcher_start(), which reads every
 * stored policy after it is ready to watch.
 */
void dispatcher_watch(struct dispatcher *d, const char *queue);

/* A TIMER_DISPATCH fired: key is a job id (a retry is due) or "q:QUEUE" (claim again). */
void dispatcher_fire(struct dispatcher *d, const char *key);

/* After the outbound engine, the writer and the claims are stopped. */
void dispatcher_free(struct dispatcher *d);

/*
 * The callback token of one attempt: a whsec_ secret derived from the
 * queue's callback_secret key (sign_secret_derive of
 * "drover-callback:{job_id}:{attempt}"). out: SIGN_SECRET_GEN_LEN bytes.
 */
int dispatch_callback_token(const struct sign_key *key, const char *job_id, int attempt, char *out);

#endif
