/*
 * policy_cache.c - a mutex-guarded list of (queue, shared policy). Queues
 * number in the tens and a lookup is a few string compares; a hash table can
 * come when someone runs thousands of queues.
 */
#include "policy_cache.h"

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct shared_policy {
    int refs; /* guarded by the cache's lock */
    struct policy policy;
};

struct cache_entry {
    struct cache_entry *next;
    char *queue;
    struct shared_policy *shared;
};

struct policy_cache {
    pthread_mutex_t lock;
    struct cache_entry *head;
    struct shared_policy defaults; /* never freed while the cache lives */
};

int policy_cache_new(struct policy_cache **out)
{
    struct policy_cache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -DRV_ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    policy_init(&c->defaults.policy);
    c->defaults.refs = 1;
    *out = c;
    return 0;
}

/* Drop one reference; called with the lock held. */
static void unref_locked(struct policy_cache *c, struct shared_policy *s)
{
    if (--s->refs == 0 && s != &c->defaults) {
        policy_release(&s->policy);
        free(s);
    }
}

void policy_cache_free(struct policy_cache *c)
{
    if (c == NULL)
        return;
    while (c->head) {
        struct cache_entry *e = c->head;
        c->head = e->next;
        unref_locked(c, e->shared);
        free(e->queue);
        free(e);
    }
    policy_release(&c->defaults.policy);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static struct cache_entry *find(struct policy_cache *c, const char *queue)
{
    for (struct cache_entry *e = c->head; e; e = e->next) {
        if (strcmp(e->queue, queue) == 0)
            return e;
    }
    return NULL;
}

const struct policy *policy_cache_acquire(struct policy_cache *c, const char *queue)
{
    pthread_mutex_lock(&c->lock);
    struct cache_entry *e = find(c, queue);
    struct shared_policy *s = e ? e->shared : &c->defaults;
    s->refs++;
    pthread_mutex_unlock(&c->lock);
    return &s->policy;
}

void policy_cache_unref(struct policy_cache *c, const struct policy *p)
{
    struct shared_policy *s = container_of(p, struct shared_policy, policy);
    pthread_mutex_lock(&c->lock);
    unref_locked(c, s);
    pthread_mutex_unlock(&c->lock);
}

int policy_cache_put(struct policy_cache *c, const char *queue, const struct policy *p)
{
    struct shared_policy *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -DRV_ENOMEM;
    if (policy_copy(&s->policy, p) < 0) {
        free(s);
        return -DRV_ENOMEM;
    }
    s->refs = 1;
    int rc = 0;
    pthread_mutex_lock(&c->lock);
    struct cache_entry *e = find(c, queue);
    if (e == NULL && (e = calloc(1, sizeof(*e))) != NULL) {
        if ((e->queue = strdup(queue)) == NULL) {
            free(e);
            e = NULL;
        } else {
            e->shared = NULL;
            e->next = c->head;
            c->head = e;
        }
    }
    if (e) {
        if (e->shared)
            unref_locked(c, e->shared);
        e->shared = s;
    } else {
        unref_locked(c, s);
        rc = -DRV_ENOMEM;
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static void fill_one(void *arg, const char *queue, const struct policy *p)
{
    policy_cache_put(arg, queue, p);
}

int policy_cache_fill(struct policy_cache *c, struct store *st)
{
    return store_policy_list(st, fill_one, c);
}
