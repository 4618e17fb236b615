/*
 * writer.h - group commit: one thread owns the store's write side.
 *
 * Requests queue a write_op and wait (an HTTP request is suspended, holding
 * no thread). The writer takes everything queued, runs each op's apply()
 * inside one transaction, commits once — one fsync for the whole batch —
 * and then calls every op's done(). Nothing is acknowledged before its
 * commit is on disk; throughput comes from batching, not from weaker
 * durability (docs/adr/0002-write-path-group-commit.md).
 *
 * The contract of apply(): check first, write last. It may refuse (return a
 * negative code such as -DRV_EILLEGAL_TRANSITION) only before its first
 * write, so a refused op leaves no trace and the batch goes on. A store
 * failure (-DRV_ESTORE, -DRV_ENOMEM, -DRV_EIO, -DRV_EINTERNAL) may come at
 * any point: then the whole batch is rolled back and every op in it fails
 * with -DRV_ESTORE. (Per-op savepoints would allow more, but cost SQLite a
 * statement journal per op: 70% more writer CPU per submit, measured.)
 */
#ifndef DROVER_WRITER_H
#define DROVER_WRITER_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "store/store.h"
#include "ulid.h"

/* What the ops need beyond the store (job_ops.h); opaque to the writer. */
struct job_env;

/* What apply() gets besides its op: the store's write side and the batch's clock. */
struct write_ctx {
    struct store *store;
    struct ulid_gen *ulid; /* monotonic ids in commit order */
    int64_t now_ms;        /* wall clock, read once per op */
    struct job_env *env;
    int64_t idem_ttl_ms;
};

/*
 * Runs on the writer thread after every batch, after the done() calls:
 * committed tells whether the batch's writes are durable. Effects that must
 * wait for the commit (arming timers, waking waiting claims) happen here.
 */
typedef void (*write_after_batch_fn)(struct job_env *env, bool committed);

struct write_op;

/* Runs on the writer thread inside the transaction: check first, write last (above). */
typedef int (*write_apply_fn)(struct write_ctx *ctx, struct write_op *op);

/*
 * Runs on the writer thread after the batch committed (or failed): op->result
 * holds apply()'s code, or -DRV_ESTORE when the commit failed. Must be quick
 * (typically: resume the waiting request). The op may be freed inside it.
 */
typedef void (*write_done_fn)(struct write_op *op);

/*
 * An op's reply as the client will see it: rendered on the writer thread
 * when the op carries an Idempotency-Key, so it can be kept in the same
 * transaction as the change it reports.
 */
struct write_reply {
    int status;
    char location[IDEM_LOCATION_MAX]; /* a Location header, or "" */
    char *body;                       /* JSON text, owned */
};

/*
 * What the writer needs to keep an op's reply (idempotency.h). Returns 0
 * (keep it), 1 (the reply is filled, but the op changed nothing worth
 * keeping, e.g. an empty claim) or -DRV_ENOMEM.
 */
typedef int (*write_render_fn)(const struct write_op *op, struct write_reply *out);

/* An op sent with an Idempotency-Key (idempotency.h). */
struct write_idem {
    char key[IDEM_KEY_MAX + 1];
    unsigned char fingerprint[IDEM_FINGERPRINT_LEN];
    write_render_fn render;
    /* Out: the kept or replayed reply; replayed when an earlier request's. */
    struct write_reply reply;
    bool replayed;
    struct errmsg err; /* why a repeat was refused */
};

/* Embed in a larger struct; fill apply and done, then writer_submit(). */
struct write_op {
    struct write_op *next; /* the writer's */
    write_apply_fn apply;
    write_done_fn done;
    void *owner; /* the submitter's, e.g. the waiting HTTP request */
    int result;
    struct write_idem *idem; /* NULL unless the request had an Idempotency-Key */
};

struct writer_stats {
    uint64_t batches;
    uint64_t ops;
    uint64_t largest_batch;
};

/*
 * Runs on the writer thread after the last op of a batch, inside its
 * transaction: writes that belong to the batch as a whole (the kept replies
 * of claims handed a job by another op). A negative code fails the batch.
 */
typedef int (*write_before_commit_fn)(struct write_ctx *ctx);

/* What the writer runs beside the ops; every field may be 0. */
struct writer_hooks {
    struct job_env *env;
    write_before_commit_fn before_commit;
    write_after_batch_fn after_batch;
    int64_t idem_ttl_ms; /* how long a kept reply answers repeats */
};

struct writer;

/* Start the writer thread. batch_max caps the ops in one transaction. */
int writer_start(struct store *st, int batch_max, const struct writer_hooks *hooks,
                 struct writer **out);

/*
 * Queue op. Returns 0 (done() will be called exactly once, on the writer
 * thread, possibly before this returns) or -DRV_ESHUTTING_DOWN (done() is
 * never called).
 */
int writer_submit(struct writer *w, struct write_op *op);

/*
 * Queue an op whose commit may wait: bookkeeping that no request waits
 * for, such as the deliverer's record of answered webhooks. Background ops
 * never join a batch of ordinary ops; they go together, as a batch of
 * their own, WRITER_BACKGROUND_DELAY_MS after the oldest was queued. A
 * busy job path thus keeps its short commits, and background work is
 * written in few large ones (measured in bench/README.md "Webhooks").
 * Returns as writer_submit().
 */
#define WRITER_BACKGROUND_DELAY_MS 50
int writer_submit_background(struct writer *w, struct write_op *op);

/* Finish everything queued, stop the thread, free w. */
void writer_stop(struct writer *w);

void writer_get_stats(struct writer *w, struct writer_stats *out);

/* When the last batch of ordinary (not background) ops ended; 0: none yet. */
int64_t writer_foreground_at(struct writer *w);

#endif
