/*
 * retention.h - the retention sweep (docs/api.md "Retention"): a queue's
 * terminal jobs are deleted, with their events, lock waits and artifacts,
 * once they ended (updated_at) more than the queue's retention_s ago — and
 * more than its dedup_window_s ago, so that a pruned job never lets a
 * duplicate in. retention_s 0, the default, keeps jobs forever.
 *
 * A timer (TIMER_SWEEP, key RETENTION_SWEEP_KEY) drives it; each round:
 *
 *   1. on the timers thread: remove the artifact directories of the jobs
 *      pruned by earlier rounds (the store's artifact trash), for at most
 *      RETENTION_FILES_MS, then sync DATA_DIR/artifacts;
 *   2. one writer op forgets those trash entries and prunes up to
 *      RETENTION_BATCH expired jobs, taking the queues with a retention in
 *      turn (the jobs_ended index finds each queue's oldest ended jobs in
 *      one range scan), their directories going to the trash in the same
 *      transaction;
 *   3. its done() re-arms the timer: RETENTION_BEHIND_MS later while there
 *      is more to do (a full batch, or directories to remove), else after
 *      the shortest retention of any queue, bounded to [1 s, 10 s].
 *
 * So files go only after the commit that deleted their rows (a rolled-back
 * batch leaves no row without its file), and the trash carries the removal
 * across a crash. A small batch keeps the writer's transaction short: the
 * sweep never stalls the server.
 */
#ifndef DROVER_RETENTION_H
#define DROVER_RETENTION_H

#include "store/store.h"
#include "store/writer.h"
#include "timers.h"
#include "ulid.h"

#define RETENTION_SWEEP_KEY "retention"
#define RETENTION_BATCH     200   /* jobs pruned (and directories removed) per round */
#define RETENTION_EVERY_MS  10000 /* the longest wait between rounds */
#define RETENTION_MIN_MS    1000  /* the shortest, when nothing is behind */
#define RETENTION_BEHIND_MS 200   /* while behind */
#define RETENTION_FILES_MS  50    /* removing directories, per round, on the timers thread */

/*
 * Told, on the writer thread after a round's commit, which jobs it pruned
 * (ids[n]): the deliverer forgets what it kept in memory about them.
 */
typedef void (*retention_pruned_fn)(void *arg, const char (*ids)[ULID_LEN + 1], int n);

/*
 * The sweep's timer fired (on the timers thread): remove what the trash
 * holds and queue the round's op, which re-arms the timer. data_dir is
 * borrowed for the server's life; pruned may be NULL.
 */
void retention_sweep_fire(struct writer *w, struct timers *t, struct store *st,
                          const char *data_dir, retention_pruned_fn pruned, void *pruned_arg);

/* A queue just got a retention: sweep now rather than at the next round. */
void retention_sweep_soon(struct timers *t);

#endif
