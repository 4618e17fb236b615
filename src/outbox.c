/*
 * outbox.c - which events go out, and to whom.
 */
#include "outbox.h"

#include <stdio.h>
#include <string.h>

#include "job_ops.h"

/* The destination a job.delivery_dead event is about (it must not go there). */
static const char *dead_dest(const struct job_event *ev)
{
    if (strcmp(ev->type, "job.delivery_dead") != 0)
        return NULL;
    const char *dest = json_string_value(json_object_get(ev->data, "destination"));
    return dest ? dest : "";
}

/* Does the job's own webhook_url hear of ev? skip: dead_dest(ev). */
static bool job_url_wants(const struct job *job, const char *skip)
{
    return job->webhook_url && !(skip && strcmp(skip, "webhook_url") == 0);
}

int outbox_destinations(struct sub_cache *subs, const struct job *job, const struct job_event *ev,
                        outbox_dest *dests)
{
    const char *skip = dead_dest(ev); /* "webhook_url" or a subscription id */
    int n = 0;
    if (job_url_wants(job, skip))
        snprintf(dests[n++], sizeof(dests[0]), "%s", OUTBOX_DEST_JOB);
    if (subs == NULL || !sub_cache_any(subs))
        return n;
    static _Thread_local char ids[SUB_COUNT_MAX][SUB_ID_LEN + 1]; /* 27 KB: off the stack */
    int m = sub_cache_match(subs, ev->type, job->queue, ids, SUB_COUNT_MAX);
    for (int i = 0; i < m; i++) {
        if (skip && strcmp(skip, ids[i]) == 0)
            continue; /* a dead subscription does not hear of its own death */
        memcpy(dests[n++], ids[i], SUB_ID_LEN + 1); /* fits: SUB_ID_LEN < OUTBOX_DEST_MAX */
    }
    return n;
}

bool outbox_has_destination(struct sub_cache *subs, const struct job *job,
                            const struct job_event *ev)
{
    const char *skip = dead_dest(ev);
    return job_url_wants(job, skip) || (subs && sub_cache_wanted(subs, ev->type, job->queue, skip));
}

int outbox_enqueue(struct write_ctx *ctx, const struct job *job, const struct job_event *ev,
                   bool *added)
{
    *added = false;
    struct sub_cache *subs = ctx->env ? ctx->env->subs : NULL;
    if (!outbox_has_destination(subs, job, ev))
        return 0;
    int rc = store_outbox_event_insert(ctx->store, job->id, ev->seq);
    *added = rc == 0;
    return rc;
}
