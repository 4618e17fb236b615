/*
 * sub_ops.h - the writes of webhook subscriptions, run by the group-commit
 * writer (store/writer.h: check first, write last).
 *
 * The in-memory mirror (struct sub_cache, subscriptions.h) changes only
 * after a commit: each op's own done() updates the cache when op->result is
 * 0 (the batch is durable), then calls the `then` function its submitter
 * gave (e.g. resume the waiting HTTP request). So a subscription receives
 * events from the batch after the one that created or enabled it, and never
 * one it would have seen only in a rolled-back batch.
 */
#ifndef DROVER_SUB_OPS_H
#define DROVER_SUB_OPS_H

#include <stdbool.h>

#include "error.h"
#include "store/writer.h"
#include "subscriptions.h"

/*
 * Create or patch a subscription.
 *
 * Create (sub_put_op_create): in: sub as sub_from_json() filled it; the op
 * gives it a new id and its times. Refused with -DRV_ECONFLICT when
 * SUB_COUNT_MAX subscriptions exist (counted in the cache).
 *
 * Patch (sub_put_op_patch): in: id and patch. The patch is applied to the
 * stored subscription inside the transaction (sub_patch_apply), so two
 * concurrent PATCHes of one subscription both land, neither losing the
 * other's fields. -DRV_ENOT_FOUND when there is no such subscription.
 *
 * Out, either way: sub as stored; secret_changed when the secret is new
 * (the reply shows it in full then).
 */
struct sub_put_op {
    struct write_op op;
    struct sub_cache *cache; /* updated after commit; may be NULL */
    write_done_fn then;      /* called at the end of done(); may be NULL */
    bool create;
    char id[SUB_ID_LEN + 1];
    struct sub_patch patch;
    struct sub sub;
    bool secret_changed;
    struct errmsg err;
};

/* Each init takes ownership of nothing; fill sub (create) or id and patch (patch) after. */
void sub_put_op_create(struct sub_put_op *p, struct sub_cache *cache, write_done_fn then);
void sub_put_op_patch(struct sub_put_op *p, struct sub_cache *cache, write_done_fn then);
void sub_put_op_release(struct sub_put_op *p);

/* Delete subscription id; -DRV_ENOT_FOUND when there is none. */
struct sub_delete_op {
    struct write_op op;
    struct sub_cache *cache;
    write_done_fn then;
    char id[SUB_ID_LEN + 1];
    struct errmsg err;
};
void sub_delete_op_init(struct sub_delete_op *d, struct sub_cache *cache, write_done_fn then);

/*
 * For another op's apply() (the deliverer's, on a 410 Gone): set
 * subscription id disabled with reason (copied; at most 1000 bytes kept),
 * in the caller's transaction. out (may be NULL) gets the subscription as
 * stored; sub_release() it.
 *
 * The cache is NOT touched here (the batch may still roll back): the caller
 * calls sub_cache_put(cache, out) from its done() when op->result == 0.
 *
 * Returns 0; 0 without a write when it is disabled already (its first
 * reason stays); -DRV_ENOT_FOUND, having written nothing, when the
 * subscription is gone (deleted meanwhile: a caller that has written
 * already treats that as done); a store failure.
 */
int sub_ops_disable(struct write_ctx *ctx, const char *id, const char *reason, struct sub *out);

/* The same as an op of its own, with the cache updated in its done(). */
struct sub_disable_op {
    struct write_op op;
    struct sub_cache *cache;
    write_done_fn then; /* may be NULL; may free the op */
    char id[SUB_ID_LEN + 1];
    char *reason;   /* owned */
    struct sub sub; /* out */
};
/* reason is copied; -DRV_ENOMEM when it cannot be. */
int sub_disable_op_init(struct sub_disable_op *d, struct sub_cache *cache, const char *id,
                        const char *reason, write_done_fn then);
void sub_disable_op_release(struct sub_disable_op *d);

#endif
