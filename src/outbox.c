/*
 * outbox.c - fan job events out into the outbox.
 */
#include "outbox.h"

#include <string.h>

#include "job_ops.h"
#include "subscriptions.h"

/* The destination a job.delivery_dead event is about (it must not go there). */
static const char *dead_dest(const struct job_event *ev)
{
    if (strcmp(ev->type, "job.delivery_dead") != 0)
        return NULL;
    const char *dest = json_string_value(json_object_get(ev->data, "destination"));
    return dest ? dest : "";
}

int outbox_fanout(struct write_ctx *ctx, const struct job *job, const struct job_event *ev,
                  bool *added)
{
    const char *skip = dead_dest(ev); /* "webhook_url" or a subscription id */
    int rc = 0;
    *added = false;
    if (job->webhook_url && !(skip && strcmp(skip, "webhook_url") == 0)) {
        rc = store_outbox_insert(ctx->store, job->id, ev->seq, OUTBOX_DEST_JOB, ctx->now_ms);
        *added = rc == 0;
    }
    struct sub_cache *subs = ctx->env ? ctx->env->subs : NULL;
    if (rc < 0 || subs == NULL || !sub_cache_any(subs))
        return rc;
    static _Thread_local char ids[OUTBOX_MAX_SUBS][SUB_ID_LEN + 1]; /* 27 KB: off the stack */
    int n = sub_cache_match(subs, ev->type, job->queue, ids, OUTBOX_MAX_SUBS);
    for (int i = 0; i < n && rc == 0; i++) {
        if (skip && strcmp(skip, ids[i]) == 0)
            continue; /* a dead subscription does not hear of its own death */
        rc = store_outbox_insert(ctx->store, job->id, ev->seq, ids[i], ctx->now_ms);
        *added = *added || rc == 0;
    }
    return rc;
}
