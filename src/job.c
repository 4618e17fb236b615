/*
 * job.c - job states and the one transition table every change goes through.
 */
#include "job.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

static const char *const state_names[JOB_STATE_COUNT] = {
    [JOB_NONE] = NULL,           [JOB_SCHEDULED] = "scheduled", [JOB_QUEUED] = "queued",
    [JOB_RUNNING] = "running",   [JOB_SUCCEEDED] = "succeeded", [JOB_FAILED] = "failed",
    [JOB_CANCELED] = "canceled",
};

/*
 * The transition table: transitions[from][to]. Read a row as "from this
 * state a job may go to".
 *
 *  - A new job starts scheduled (run_at in the future) or queued.
 *  - scheduled -> queued when run_at or a retry backoff comes due;
 *    -> failed on queue_timeout_s; -> canceled.
 *  - queued -> running when claimed or dispatched; -> scheduled when a lock
 *    or concurrency slot makes it wait; -> failed on queue_timeout_s;
 *    -> canceled.
 *  - running -> succeeded | failed | canceled; -> scheduled or queued when the
 *    attempt failed and the retry policy starts another one.
 *  - failed and canceled are terminal, except a manual retry (-> queued, or
 *    -> scheduled when it has to wait). succeeded never changes again.
 */
static const bool transitions[JOB_STATE_COUNT][JOB_STATE_COUNT] = {
    [JOB_NONE] = {[JOB_SCHEDULED] = true, [JOB_QUEUED] = true},
    [JOB_SCHEDULED] = {[JOB_QUEUED] = true, [JOB_FAILED] = true, [JOB_CANCELED] = true},
    [JOB_QUEUED] =
        {[JOB_SCHEDULED] = true, [JOB_RUNNING] = true, [JOB_FAILED] = true, [JOB_CANCELED] = true},
    [JOB_RUNNING] = {[JOB_SCHEDULED] = true,
                     [JOB_QUEUED] = true,
                     [JOB_SUCCEEDED] = true,
                     [JOB_FAILED] = true,
                     [JOB_CANCELED] = true},
    [JOB_SUCCEEDED] = {0},
    [JOB_FAILED] = {[JOB_SCHEDULED] = true, [JOB_QUEUED] = true},
    [JOB_CANCELED] = {[JOB_SCHEDULED] = true, [JOB_QUEUED] = true},
};

const char *job_state_name(enum job_state s)
{
    return (unsigned)s < JOB_STATE_COUNT ? state_names[s] : NULL;
}

enum job_state job_state_parse(const char *name)
{
    for (int s = JOB_SCHEDULED; s < JOB_STATE_COUNT; s++) {
        if (strcmp(state_names[s], name) == 0)
            return (enum job_state)s;
    }
    return JOB_NONE;
}

bool job_state_terminal(enum job_state s)
{
    return s == JOB_SUCCEEDED || s == JOB_FAILED || s == JOB_CANCELED;
}

bool job_transition_allowed(enum job_state from, enum job_state to)
{
    if ((unsigned)from >= JOB_STATE_COUNT || (unsigned)to >= JOB_STATE_COUNT)
        return false;
    return transitions[from][to];
}

void job_init(struct job *job)
{
    memset(job, 0, sizeof(*job));
}

void job_release(struct job *job)
{
    free(job->queue);
    free(job->step);
    free(job->dedup_key);
    free(job->concurrency_key);
    free(job->webhook_url);
    free(job->lease_token);
    free(job->worker);
    free(job->waiting_for);
    free(job->run_id);
    free(job->payload);
    json_decref(job->lock_keys);
    json_decref(job->result);
    json_decref(job->error);
    json_decref(job->checkpoints);
    job_init(job);
}

int job_payload_set(struct job *job, const json_t *payload)
{
    /* The flags of every JSON column (bind_json): stored and shown alike. */
    char *text = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL)
        return -DRV_ENOMEM;
    free(job->payload);
    job->payload = text;
    return 0;
}

int job_payload_parse(const struct job *job, json_t **out)
{
    json_error_t err;
    *out = job->payload ? json_loads(job->payload, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err)
                        : json_object();
    if (*out)
        return 0;
    return job->payload && json_error_code(&err) != json_error_out_of_memory ? -DRV_ESTORE
                                                                             : -DRV_ENOMEM;
}

void job_event_init(struct job_event *ev)
{
    memset(ev, 0, sizeof(*ev));
}

void job_event_release(struct job_event *ev)
{
    free(ev->type);
    free(ev->step);
    json_decref(ev->data);
    job_event_init(ev);
}

static void fill_event(const struct job *job, enum job_state prev, const char *type, int64_t now_ms,
                       struct job_event *ev)
{
    job_event_init(ev);
    memcpy(ev->job_id, job->id, sizeof(ev->job_id));
    ev->seq = job->seq;
    ev->type = strdup(type);
    ev->at_ms = now_ms;
    ev->state = job->state;
    ev->prev_state = prev;
    ev->step = job->step ? strdup(job->step) : NULL;
    ev->attempt = job->attempt;
}

int job_transition(struct job *job, enum job_state to, const char *event_type, int64_t now_ms,
                   struct job_event *ev)
{
    enum job_state from = job->state;
    if (!job_transition_allowed(from, to))
        return -DRV_EILLEGAL_TRANSITION;
    job->state = to;
    job->seq++;
    job->updated_at_ms = now_ms;
    fill_event(job, from, event_type, now_ms, ev);
    return 0;
}

void job_note(struct job *job, const char *event_type, int64_t now_ms, struct job_event *ev)
{
    job->seq++;
    job->updated_at_ms = now_ms;
    fill_event(job, job->state, event_type, now_ms, ev);
}
