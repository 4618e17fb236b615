/*
 * job.h - the job model and its state machine.
 *
 * Every change of a job's state goes through job_transition(), which checks
 * it against the one transition table in job.c. A job carries the sequence
 * number of its latest event; each change appends an event (struct
 * job_event) with the next number, in the same transaction.
 */
#ifndef DROVER_JOB_H
#define DROVER_JOB_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "ulid.h"

enum job_state {
    JOB_NONE = 0, /* not yet created: the "from" of a job's first transition */
    JOB_SCHEDULED,
    JOB_QUEUED,
    JOB_RUNNING,
    JOB_SUCCEEDED,
    JOB_FAILED,
    JOB_CANCELED,
};
#define JOB_STATE_COUNT (JOB_CANCELED + 1)

/* Limits on what a submit may carry. */
#define JOB_QUEUE_NAME_MAX  64
#define JOB_KEY_MAX         200
#define JOB_LOCK_KEYS_MAX   16
#define JOB_URL_MAX         2048
#define JOB_CONCURRENCY_MAX 100000

/*
 * A job. Strings and JSON values are owned by the job and freed by
 * job_release(); NULL means absent (JSON null), but for the payload, which
 * is then {}.
 */
struct job {
    char id[ULID_LEN + 1];
    char *queue;
    enum job_state state;
    char *step;
    int attempt;   /* current or last attempt, 0 before the first */
    char *payload; /* object, as the compact JSON text stored (job_payload_set/parse) */
    char *dedup_key;
    char *concurrency_key;
    json_t *lock_keys; /* array of strings, NULL when none */
    char *webhook_url;
    int64_t run_at_ms; /* 0 when not given */
    bool cancel_requested;
    json_t *result;      /* any JSON, NULL until succeeded */
    json_t *error;       /* {kind, message, step, run_id, at} or NULL */
    json_t *checkpoints; /* object step -> data, NULL when none */
    /* The current attempt's lease, while running (NULL/0 otherwise). */
    char *lease_token; /* never shown: the worker's fencing token */
    char *worker;
    int64_t lease_expires_ms;
    int64_t started_at_ms; /* when the current attempt started */
    int64_t due_at_ms;     /* the next deadline to check (run_at, lease, timeouts); 0 = none */
    int concurrency_limit; /* the submit's own limit for its key; 0 = the queue's */
    char *waiting_for;     /* "concurrency" or "lock" while set aside, "dispatch" while
                              the runner has not taken the dispatch; else NULL */
    char *run_id;          /* the external runner's id for the current attempt, or NULL */
    int64_t created_at_ms;
    int64_t updated_at_ms;
    int64_t seq; /* sequence number of the latest event */
};

/* One entry of a job's history. Strings are owned; release with job_event_release(). */
struct job_event {
    char job_id[ULID_LEN + 1];
    int64_t seq;
    char *type; /* "job.created", "job.canceled", ... */
    int64_t at_ms;
    enum job_state state;      /* the state after the event */
    enum job_state prev_state; /* JOB_NONE for job.created */
    char *step;
    int attempt;
    json_t *data; /* event-specific, or NULL */
};

void job_init(struct job *job);
void job_release(struct job *job);

/*
 * The payload is kept as the text the store holds, so the hot paths store
 * and show it without a parse or a dump; the few readers of its members
 * (dispatch templates, cleanup jobs) parse it.
 *
 * job_payload_set: job->payload becomes payload's compact text (the old
 * text is freed). 0 or -DRV_ENOMEM.
 * job_payload_parse: *out is a new reference to the payload ({} when
 * there is none). 0, -DRV_ENOMEM, or -DRV_ESTORE when the text is not JSON
 * (a damaged store: job_payload_set never writes such text).
 */
int job_payload_set(struct job *job, const json_t *payload);
int job_payload_parse(const struct job *job, json_t **out);

void job_event_init(struct job_event *ev);
void job_event_release(struct job_event *ev);

/* "queued" etc.; JOB_NONE has no name (NULL). */
const char *job_state_name(enum job_state s);

/* Parse a state name; returns JOB_NONE when unknown. */
enum job_state job_state_parse(const char *name);

bool job_state_terminal(enum job_state s);

/* Does the transition table allow from -> to? (JOB_NONE -> s is creation.) */
bool job_transition_allowed(enum job_state from, enum job_state to);

/*
 * Move job to state `to` at now_ms and fill ev (the event the caller must
 * append) with the next sequence number. Returns 0, or
 * -DRV_EILLEGAL_TRANSITION and leaves the job untouched.
 */
int job_transition(struct job *job, enum job_state to, const char *event_type, int64_t now_ms,
                   struct job_event *ev);

/*
 * Record an event that does not change the state (a step, a cancel request):
 * bumps job->seq and updated_at and fills ev.
 */
void job_note(struct job *job, const char *event_type, int64_t now_ms, struct job_event *ev);

#endif
