/*
 * claims.c - per-queue FIFO lists of waiting claims.
 */
#include "claims.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "timeutil.h"

struct queue_waiters {
    struct queue_waiters *next;
    char queue[JOB_QUEUE_NAME_MAX + 1];
    struct claim_wait *head, *tail;
};

struct claims {
    struct writer *writer;
    struct timers *timers;
    pthread_mutex_t lock;
    struct queue_waiters *queues;
    uint64_t next_id;
    int waiting;
    bool closed;
};

int claims_new(struct writer *w, struct timers *t, struct claims **out)
{
    struct claims *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -DRV_ENOMEM;
    c->writer = w;
    c->timers = t;
    c->next_id = 1;
    pthread_mutex_init(&c->lock, NULL);
    *out = c;
    return 0;
}

void claims_free(struct claims *c)
{
    if (c == NULL)
        return;
    while (c->queues) {
        struct queue_waiters *q = c->queues;
        c->queues = q->next;
        free(q);
    }
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static struct queue_waiters *queue_find(struct claims *c, const char *queue, bool create)
{
    for (struct queue_waiters *q = c->queues; q; q = q->next) {
        if (strcmp(q->queue, queue) == 0)
            return q;
    }
    if (!create)
        return NULL;
    struct queue_waiters *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    snprintf(q->queue, sizeof(q->queue), "%s", queue);
    q->next = c->queues;
    c->queues = q;
    return q;
}

static void unlink_waiter(struct claims *c, struct queue_waiters *q, struct claim_wait *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->prev = w->next = NULL;
    c->waiting--;
}

/* Answer every claim of a detached list (linked by next), outside the lock. */
static void answer_all(struct claim_wait *list)
{
    while (list) {
        struct claim_wait *w = list;
        list = w->next;
        w->next = NULL;
        w->answer(w);
    }
}

bool claims_wait(struct claims *c, struct claim_wait *w)
{
    pthread_mutex_lock(&c->lock);
    struct queue_waiters *q = NULL;
    if (c->closed || time_now_ms() >= w->deadline_ms ||
        (q = queue_find(c, w->queue, true)) == NULL) {
        pthread_mutex_unlock(&c->lock);
        return false;
    }
    bool arm = w->id == 0; /* a claim parked again keeps its first timer */
    if (arm)
        w->id = c->next_id++;
    if (w->woken_before && q->head) {
        w->prev = NULL;
        w->next = q->head;
        q->head->prev = w;
        q->head = w;
    } else {
        w->next = NULL;
        w->prev = q->tail;
        if (q->tail)
            q->tail->next = w;
        else
            q->head = w;
        q->tail = w;
    }
    c->waiting++;
    uint64_t id = w->id;
    int64_t deadline = w->deadline_ms;
    pthread_mutex_unlock(&c->lock);
    if (arm) {
        char key[TIMER_KEY_MAX + 1];
        snprintf(key, sizeof(key), "%" PRIu64, id);
        timers_add(c->timers, deadline, TIMER_WAITER, key);
    }
    return true;
}

void claims_notify(struct claims *c, const char *queue, int n)
{
    struct claim_wait *woken = NULL, **tail = &woken, *gone = NULL;
    pthread_mutex_lock(&c->lock);
    struct queue_waiters *q = queue_find(c, queue, false);
    while (q && q->head && n > 0) {
        struct claim_wait *w = q->head;
        unlink_waiter(c, q, w);
        if (w->alive && !w->alive(w)) {
            w->next = gone;
            gone = w;
            continue;
        }
        w->woken_before = true;
        *tail = w;
        tail = &w->next;
        n--;
    }
    pthread_mutex_unlock(&c->lock);
    answer_all(gone);
    while (woken) {
        struct claim_wait *w = woken;
        woken = w->next;
        w->next = NULL;
        if (writer_submit(c->writer, w->op) < 0)
            w->answer(w);
    }
}

struct claim_wait *claims_take(struct claims *c, const char *queue)
{
    struct claim_wait *taken = NULL, *gone = NULL;
    pthread_mutex_lock(&c->lock);
    struct queue_waiters *q = queue_find(c, queue, false);
    while (q && q->head && taken == NULL) {
        struct claim_wait *w = q->head;
        unlink_waiter(c, q, w);
        if (w->alive && !w->alive(w)) {
            w->next = gone;
            gone = w;
        } else {
            w->woken_before = true;
            taken = w;
        }
    }
    pthread_mutex_unlock(&c->lock);
    answer_all(gone);
    return taken;
}

void claims_expire(struct claims *c, uint64_t id)
{
    struct claim_wait *found = NULL;
    pthread_mutex_lock(&c->lock);
    for (struct queue_waiters *q = c->queues; q && !found; q = q->next) {
        for (struct claim_wait *w = q->head; w; w = w->next) {
            if (w->id == id) {
                unlink_waiter(c, q, w);
                found = w;
                break;
            }
        }
    }
    pthread_mutex_unlock(&c->lock);
    /* Not found: it was woken and is in the writer's hands; its done() answers. */
    if (found)
        found->answer(found);
}

void claims_close(struct claims *c)
{
    struct claim_wait *all = NULL;
    pthread_mutex_lock(&c->lock);
    c->closed = true;
    for (struct queue_waiters *q = c->queues; q; q = q->next) {
        while (q->head) {
            struct claim_wait *w = q->head;
            unlink_waiter(c, q, w);
            w->next = all;
            all = w;
        }
    }
    pthread_mutex_unlock(&c->lock);
    answer_all(all);
}

int claims_waiting(struct claims *c)
{
    pthread_mutex_lock(&c->lock);
    int n = c->waiting;
    pthread_mutex_unlock(&c->lock);
    return n;
}
