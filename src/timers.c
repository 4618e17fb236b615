/*
 * timers.c - the min-heap and its thread.
 *
 * Deadlines are stored as wall-clock ms (they survive restarts in the
 * store); the thread waits on the monotonic clock for the distance to the
 * earliest one, so a clock step cannot make it sleep for hours.
 *
 * At most one entry per (kind, key) is live: a small hash table remembers
 * the earliest time armed for each key. Arming a key later than that is a
 * no-op (the earlier entry fires, and its handler re-arms at the real
 * deadline); arming it earlier leaves the old heap entry stale, and a
 * stale entry is dropped when it reaches the top. Without this, every
 * heartbeat's save would add an entry that re-arms itself forever.
 */
#include "timers.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "log.h"
#include "timeutil.h"

#define FIRE_BATCH 256

struct timer_entry {
    int64_t when_ms;
    enum timer_kind kind;
    char key[TIMER_KEY_MAX + 1];
};

/* One armed key. hash 0 = empty slot, 1 = deleted; real hashes are >= 2. */
struct armed {
    uint64_t hash;
    int64_t when_ms;
    enum timer_kind kind;
    char *key;
};

struct timers {
    struct armed *armed;
    size_t armed_cap, armed_used, armed_live; /* used counts deleted slots too */
    timer_fire_fn fire;
    void *ctx;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stopping;
    struct timer_entry *heap;
    int n, cap;
};

static void swap(struct timer_entry *a, struct timer_entry *b)
{
    struct timer_entry t = *a;
    *a = *b;
    *b = t;
}

static void sift_up(struct timer_entry *h, int i)
{
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (h[parent].when_ms <= h[i].when_ms)
            break;
        swap(&h[parent], &h[i]);
        i = parent;
    }
}

static void sift_down(struct timer_entry *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, min = i;
        if (l < n && h[l].when_ms < h[min].when_ms)
            min = l;
        if (r < n && h[r].when_ms < h[min].when_ms)
            min = r;
        if (min == i)
            return;
        swap(&h[min], &h[i]);
        i = min;
    }
}

static uint64_t key_hash(enum timer_kind kind, const char *key)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)kind; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h < 2 ? h + 2 : h;
}

/* The slot of (kind, key), or NULL. */
static struct armed *armed_find(struct timers *t, enum timer_kind kind, const char *key, uint64_t h)
{
    if (t->armed_cap == 0)
        return NULL;
    for (size_t i = h & (t->armed_cap - 1);; i = (i + 1) & (t->armed_cap - 1)) {
        struct armed *a = &t->armed[i];
        if (a->hash == 0)
            return NULL;
        if (a->hash == h && a->kind == kind && strcmp(a->key, key) == 0)
            return a;
    }
}

/* Rehash into a table of twice the live entries' room (tombstones dropped). */
static int armed_grow(struct timers *t)
{
    size_t cap = t->armed_cap ? t->armed_cap : 1024;
    while (cap < (t->armed_live + 1) * 4)
        cap *= 2;
    struct armed *table = calloc(cap, sizeof(*table));
    if (table == NULL)
        return -DRV_ENOMEM;
    for (size_t j = 0; j < t->armed_cap; j++) {
        struct armed *a = &t->armed[j];
        if (a->hash < 2)
            continue;
        size_t i = a->hash & (cap - 1);
        while (table[i].hash != 0)
            i = (i + 1) & (cap - 1);
        table[i] = *a;
    }
    free(t->armed);
    t->armed = table;
    t->armed_cap = cap;
    t->armed_used = t->armed_live;
    return 0;
}

static int armed_insert(struct timers *t, enum timer_kind kind, const char *key, uint64_t h,
                        int64_t when_ms)
{
    if ((t->armed_used + 1) * 2 > t->armed_cap && armed_grow(t) < 0)
        return -DRV_ENOMEM;
    char *copy = strdup(key);
    if (copy == NULL)
        return -DRV_ENOMEM;
    size_t i = h & (t->armed_cap - 1);
    while (t->armed[i].hash >= 2)
        i = (i + 1) & (t->armed_cap - 1);
    if (t->armed[i].hash == 0)
        t->armed_used++;
    t->armed[i] = (struct armed){.hash = h, .when_ms = when_ms, .kind = kind, .key = copy};
    t->armed_live++;
    return 0;
}

static void armed_remove(struct timers *t, struct armed *a)
{
    free(a->key);
    a->key = NULL;
    a->hash = 1;
    t->armed_live--;
}

static struct timer_entry pop(struct timers *t)
{
    struct timer_entry top = t->heap[0];
    t->heap[0] = t->heap[--t->n];
    sift_down(t->heap, t->n, 0);
    return top;
}

static void *timers_main(void *arg)
{
    struct timers *t = arg;
    struct timer_entry due[FIRE_BATCH];
    pthread_mutex_lock(&t->lock);
    while (!t->stopping) {
        int64_t now = time_now_ms();
        if (t->n == 0) {
            pthread_cond_wait(&t->cond, &t->lock);
            continue;
        }
        if (t->heap[0].when_ms > now) {
            /* Sleep exactly until the earliest deadline (or a new earlier one). */
            int64_t wait_ms = t->heap[0].when_ms - now;
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += wait_ms / 1000;
            ts.tv_nsec += (wait_ms % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&t->cond, &t->lock, &ts);
            continue;
        }
        int n = 0;
        while (t->n > 0 && t->heap[0].when_ms <= now && n < FIRE_BATCH) {
            struct timer_entry e = pop(t);
            struct armed *a = armed_find(t, e.kind, e.key, key_hash(e.kind, e.key));
            if (a == NULL || a->when_ms != e.when_ms)
                continue; /* stale: the key was re-armed earlier, or fired already */
            armed_remove(t, a);
            due[n++] = e;
        }
        pthread_mutex_unlock(&t->lock);
        for (int i = 0; i < n; i++)
            t->fire(t->ctx, due[i].kind, due[i].key);
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

int timers_start(timer_fire_fn fire, void *ctx, struct timers **out)
{
    struct timers *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -DRV_ENOMEM;
    t->fire = fire;
    t->ctx = ctx;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&t->lock, NULL);
    if (pthread_create(&t->thread, NULL, timers_main, t) != 0) {
        pthread_cond_destroy(&t->cond);
        pthread_mutex_destroy(&t->lock);
        free(t);
        return -DRV_EINTERNAL;
    }
    pthread_setname_np(t->thread, "drover-timers"); /* for top -H and perf; best effort */
    *out = t;
    return 0;
}

void timers_stop(struct timers *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->lock);
    bool was_stopping = t->stopping;
    t->stopping = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    if (!was_stopping)
        pthread_join(t->thread, NULL);
}

void timers_free(struct timers *t)
{
    if (t == NULL)
        return;
    timers_stop(t);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
    for (size_t i = 0; i < t->armed_cap; i++)
        free(t->armed[i].key);
    free(t->armed);
    free(t->heap);
    free(t);
}

void timers_add(struct timers *t, int64_t when_ms, enum timer_kind kind, const char *key)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->lock);
    if (t->stopping) {
        pthread_mutex_unlock(&t->lock);
        return;
    }
    uint64_t hash = key_hash(kind, key);
    struct armed *a = armed_find(t, kind, key, hash);
    if (a && a->when_ms <= when_ms) {
        pthread_mutex_unlock(&t->lock); /* an earlier check is armed; it re-arms as needed */
        return;
    }
    if (t->n == t->cap) {
        int cap = t->cap ? t->cap * 2 : 1024;
        struct timer_entry *h = realloc(t->heap, (size_t)cap * sizeof(*h));
        if (h == NULL) {
            pthread_mutex_unlock(&t->lock);
            /* The store keeps due_at: the next restart re-arms it. */
            log_printf(LOG_ERROR, "out of memory arming a timer for '%s'", key);
            return;
        }
        t->heap = h;
        t->cap = cap;
    }
    if (a) {
        a->when_ms = when_ms; /* the old, later heap entry is stale now */
    } else if (armed_insert(t, kind, key, hash, when_ms) < 0) {
        pthread_mutex_unlock(&t->lock);
        log_printf(LOG_ERROR, "out of memory arming a timer for '%s'", key);
        return;
    }
    struct timer_entry *e = &t->heap[t->n];
    e->when_ms = when_ms;
    e->kind = kind;
    snprintf(e->key, sizeof(e->key), "%s", key);
    sift_up(t->heap, t->n++);
    /* Wake the thread only when the earliest deadline changed. */
    if (t->heap[0].when_ms == when_ms)
        pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
}

int timers_pending(struct timers *t)
{
    pthread_mutex_lock(&t->lock);
    int n = (int)t->armed_live;
    pthread_mutex_unlock(&t->lock);
    return n;
}
