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

/* Embed in a larger struct; fill apply and done, then writer_submit(). */
struct write_op {
    struct write_op *next; /* the writer's */
    write_apply_fn apply;
    write_done_fn done;
    void *owner; /* the submitter's, e.g. the waiting HTTP request */
    int result;
};

struct writer_stats {
    uint64_t batches;
    uint64_t ops;
    uint64_t largest_batch;
};

struct writer;

/* Start the writer thread. batch_max caps the ops in one transaction; env and after may be NULL. */
int writer_start(struct store *st, int batch_max, struct job_env *env, write_after_batch_fn after,
                 struct writer **out);

/*
 * Queue op. Returns 0 (done() will be called exactly once, on the writer
 * thread, possibly before this returns) or -DRV_ESHUTTING_DOWN (done() is
 * never called).
 */
int writer_submit(struct writer *w, struct write_op *op);

/* Finish everything queued, stop the thread, free w. */
void writer_stop(struct writer *w);

void writer_get_stats(struct writer *w, struct writer_stats *out);

#endif
