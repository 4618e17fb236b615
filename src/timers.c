/*
 * timers.c - the min-heap and its thread.
 *
 * Deadlines are stored as wall-clock ms (they survive restarts in the
 * store); the thread waits on the monotonic clock for the distance to the
 * earliest one, so a clock step cannot make it sleep for hours.
 */
#include "timers.h"

#include <pthread.h>
#include <stdbool.h>
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

struct timers {
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
        while (t->n > 0 && t->heap[0].when_ms <= now && n < FIRE_BATCH)
            due[n++] = pop(t);
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
    int n = t->n;
    pthread_mutex_unlock(&t->lock);
    return n;
}
