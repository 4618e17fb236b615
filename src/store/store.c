/*
 * store.c - engine lookup and the engine-independent parts of the store.
 */
#include "store/store.h"

#include <stdlib.h>
#include <string.h>

#include "subscriptions.h"

static const struct store_engine *const engines[] = {
    &store_sqlite_engine,
};

const struct store_engine *store_engine_find(const char *name)
{
    for (size_t i = 0; i < sizeof(engines) / sizeof(engines[0]); i++) {
        if (strcmp(engines[i]->name, name) == 0)
            return engines[i];
    }
    return NULL;
}

int store_open(const struct store_engine *engine, const struct store_options *opt,
               struct store **out)
{
    if (engine->version != STORE_ENGINE_VERSION)
        return -DRV_EINTERNAL;
    return engine->open(opt, out);
}

void store_close(struct store *st)
{
    if (st)
        st->engine->close(st);
}

void outbox_event_release(struct outbox_event *e)
{
    if (e->found) {
        job_release(&e->job);
        job_event_release(&e->ev);
    }
    e->found = false;
}

void outbox_row_release(struct outbox_row *r)
{
    free(r->last_error);
    r->last_error = NULL;
}

void delivery_attempt_release(struct delivery_attempt *a)
{
    free(a->error);
    free(a->excerpt);
    a->error = a->excerpt = NULL;
}

void idem_record_release(struct idem_record *r)
{
    free(r->body);
    r->body = NULL;
}

void lock_release(struct lock *l)
{
    free(l->owner);
    free(l->reason);
    l->owner = l->reason = NULL;
}

void lock_list_release(struct lock_list *l)
{
    for (int i = 0; i < l->n; i++)
        lock_release(&l->locks[i]);
    free(l->locks);
    memset(l, 0, sizeof(*l));
}

void job_list_release(struct job_list *l)
{
    for (int i = 0; i < l->n; i++)
        job_release(&l->jobs[i]);
    free(l->jobs);
    memset(l, 0, sizeof(*l));
}

void event_list_release(struct event_list *l)
{
    for (int i = 0; i < l->n; i++)
        job_event_release(&l->events[i]);
    free(l->events);
    memset(l, 0, sizeof(*l));
}

void sub_list_release(struct sub_list *l)
{
    for (int i = 0; i < l->n; i++)
        sub_release(&l->subs[i]);
    free(l->subs);
    memset(l, 0, sizeof(*l));
}

void artifact_list_release(struct artifact_list *l)
{
    free(l->items);
    memset(l, 0, sizeof(*l));
}
