/*
 * policy_cache.h - every queue's policy in memory, so the writer's ops do
 * not read the queues table on each claim or step.
 *
 * Filled from the store at start; set after a policy write commits. Any
 * thread may read it. A policy handed out is immutable and reference
 * counted: a PUT swaps in a new one while ops keep using the one they hold.
 * A queue nobody configured reads as the defaults.
 */
#ifndef DROVER_POLICY_CACHE_H
#define DROVER_POLICY_CACHE_H

#include "policy.h"
#include "store/store.h"

struct policy_cache;

int policy_cache_new(struct policy_cache **out);
void policy_cache_free(struct policy_cache *c);

/* Load every stored policy. */
int policy_cache_fill(struct policy_cache *c, struct store *st);

/* The queue's policy, held until policy_cache_unref(). Never NULL. */
const struct policy *policy_cache_acquire(struct policy_cache *c, const char *queue);
void policy_cache_unref(struct policy_cache *c, const struct policy *p);

/* Set queue's policy to a copy of p. */
int policy_cache_put(struct policy_cache *c, const char *queue, const struct policy *p);

#endif
