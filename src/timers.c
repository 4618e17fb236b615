/*
 * timers.c - the min-heap and its thread.
 *
 * Deadlines are stored as wall-clock ms (they survive restarts in the
 * store); the thread waits on the monotonic clock for the distance to the
 * earliest one, so a clock step cannot make it sleep for hours.
 *
 * One node per (kind, key), in a hash table and in the heap at once, with
 * the earliest time armed for the key. Arming a key later than that is a
 * no-op (the earlier deadline fires, and its handler re-arms at the real
 * one); arming it earlier moves the node up the heap. Without this, every
 * heartbeat's save would add an entry that re-arms itself forever.
 *
 * timers_remove() takes a key out of both at once: a job that finished
 * drops its deadline, so the heap holds only live keys and the thread does
 * not wake, seconds later, to check a job that is long done (before it
 * did, with a writer op per finished job; ADR 7).
 */
#include "timers.h"

#include <limits.h>
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

/*
 * One armed key: its earliest deadline and its place in the heap. The heap
 * and the hash table hold the same nodes, so a key's deadline can be moved
 * earlier or dropped in O(log n), and the heap holds live keys only.
 */
struct timer {
    int64_t when_ms;
    uint64_t hash;
    enum timer_kind kind;
    int heap_i;
    char key[]; /* NUL-terminated */
};

struct timers {
    struct timer **table;               /* open addressing: NULL empty, &tombstone deleted */
    size_t table_cap, table_used, live; /* used counts tombstones too */
    struct timer **heap;
    int n, cap;
    timer_fire_fn fire;
    void *ctx;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stopping;
};

static struct timer tombstone;

/* ---- the heap (min by when_ms), each node knowing its index ---- */

static void heap_set(struct timers *t, int i, struct timer *x)
{
    t->heap[i] = x;
    x->heap_i = i;
}

static void sift_up(struct timers *t, int i)
{
    struct timer *x = t->heap[i];
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (t->heap[parent]->when_ms <= x->when_ms)
            break;
        heap_set(t, i, t->heap[parent]);
        i = parent;
    }
    heap_set(t, i, x);
}

static void sift_down(struct timers *t, int i)
{
    struct timer *x = t->heap[i];
    for (;;) {
        int l = 2 * i + 1, r = l + 1, min = l;
        if (l >= t->n)
            break;
        if (r < t->n && t->heap[r]->when_ms < t->heap[l]->when_ms)
            min = r;
        if (x->when_ms <= t->heap[min]->when_ms)
            break;
        heap_set(t, i, t->heap[min]);
        i = min;
    }
    heap_set(t, i, x);
}

static void heap_remove(struct timers *t, struct timer *x)
{
    int i = x->heap_i;
    struct timer *last = t->heap[--t->n];
    if (i == t->n)
        return;
    heap_set(t, i, last);
    if (i > 0 && t->heap[(i - 1) / 2]->when_ms > last->when_ms)
        sift_up(t, i);
    else
        sift_down(t, i);
}

/* ---- the table: (kind, key) to its node ---- */

static uint64_t key_hash(enum timer_kind kind, const char *key)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)kind; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h;
}

/* The slot holding (kind, key), or NULL. */
static struct timer **table_find(struct timers *t, enum timer_kind kind, const char *key,
                                 uint64_t h)
{
    if (t->table_cap == 0)
        return NULL;
    for (size_t i = h & (t->table_cap - 1);; i = (i + 1) & (t->table_cap - 1)) {
        struct timer *x = t->table[i];
        if (x == NULL)
            return NULL;
        if (x != &tombstone && x->hash == h && x->kind == kind && strcmp(x->key, key) == 0)
            return &t->table[i];
    }
}

/* Rehash into a table with room for four times the live keys (tombstones dropped). */
static int table_grow(struct timers *t)
{
    size_t cap = 1024;
    while (cap < (t->live + 1) * 4)
        cap *= 2;
    struct timer **table = calloc(cap, sizeof(*table));
    if (table == NULL)
        return -DRV_ENOMEM;
    for (size_t j = 0; j < t->table_cap; j++) {
        struct timer *x = t->table[j];
        if (x == NULL || x == &tombstone)
            continue;
        size_t i = x->hash & (cap - 1);
        while (table[i] != NULL)
            i = (i + 1) & (cap - 1);
        table[i] = x;
    }
    free(t->table);
    t->table = table;
    t->table_cap = cap;
    t->table_used = t->live;
    return 0;
}

/* Room in the table and the heap for one more key. */
static int reserve_one(struct timers *t)
{
    if ((t->table_used + 1) * 2 > t->table_cap && table_grow(t) < 0)
        return -DRV_ENOMEM;
    if (t->n == t->cap) {
        if (t->cap > INT_MAX / 2)
            return -DRV_ENOMEM; /* a billion armed keys: refuse rather than overflow */
        int cap = t->cap ? t->cap * 2 : 1024;
        struct timer **heap = realloc(t->heap, (size_t)cap * sizeof(*heap));
        if (heap == NULL)
            return -DRV_ENOMEM;
        t->heap = heap;
        t->cap = cap;
    }
    return 0;
}

static void table_insert(struct timers *t, struct timer *x)
{
    size_t i = x->hash & (t->table_cap - 1);
    while (t->table[i] != NULL && t->table[i] != &tombstone)
        i = (i + 1) & (t->table_cap - 1);
    if (t->table[i] == NULL)
        t->table_used++;
    t->table[i] = x;
    t->live++;
}

/* Take the node in slot out of the table and the heap; the caller frees it. */
static struct timer *take(struct timers *t, struct timer **slot)
{
    struct timer *x = *slot;
    *slot = &tombstone;
    t->live--;
    heap_remove(t, x);
    return x;
}

static void *timers_main(void *arg)
{
    struct timers *t = arg;
    struct timer *due[FIRE_BATCH];
    pthread_mutex_lock(&t->lock);
    while (!t->stopping) {
        int64_t now = time_now_ms();
        if (t->n == 0) {
            pthread_cond_wait(&t->cond, &t->lock);
            continue;
        }
        if (t->heap[0]->when_ms > now) {
            /* Sleep exactly until the earliest deadline (or a new earlier one). */
            int64_t wait_ms = t->heap[0]->when_ms - now;
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
        while (t->n > 0 && t->heap[0]->when_ms <= now && n < FIRE_BATCH) {
            struct timer *x = t->heap[0];
            due[n++] = take(t, table_find(t, x->kind, x->key, x->hash));
        }
        pthread_mutex_unlock(&t->lock);
        for (int i = 0; i < n; i++) {
            t->fire(t->ctx, due[i]->kind, due[i]->key);
            free(due[i]);
        }
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
    for (int i = 0; i < t->n; i++)
        free(t->heap[i]);
    free(t->table);
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
    struct timer **slot = table_find(t, kind, key, hash), *x = slot ? *slot : NULL;
    if (x && x->when_ms <= when_ms) {
        pthread_mutex_unlock(&t->lock); /* an earlier check is armed; it re-arms as needed */
        return;
    }
    if (x) {
        x->when_ms = when_ms; /* earlier: up the heap */
        sift_up(t, x->heap_i);
    } else {
        size_t len = strlen(key); /* kept whole: lookups compare the whole key */
        x = reserve_one(t) == 0 ? malloc(sizeof(*x) + len + 1) : NULL;
        if (x == NULL) {
            pthread_mutex_unlock(&t->lock);
            /* The store keeps due_at: the next restart re-arms it. */
            log_printf(LOG_ERROR, "out of memory arming a timer for '%s'", key);
            return;
        }
        *x = (struct timer){.when_ms = when_ms, .hash = hash, .kind = kind};
        memcpy(x->key, key, len);
        x->key[len] = '\0';
        table_insert(t, x);
        heap_set(t, t->n++, x);
        sift_up(t, x->heap_i);
    }
    /* Wake the thread only when the earliest deadline changed. */
    if (t->heap[0] == x)
        pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
}

void timers_remove(struct timers *t, enum timer_kind kind, const char *key)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->lock);
    struct timer **slot = table_find(t, kind, key, key_hash(kind, key));
    struct timer *x = slot ? take(t, slot) : NULL;
    pthread_mutex_unlock(&t->lock);
    free(x); /* the thread may wake for it early and sleep again: harmless */
}

int timers_pending(struct timers *t)
{
    pthread_mutex_lock(&t->lock);
    int n = (int)t->live;
    pthread_mutex_unlock(&t->lock);
    return n;
}
