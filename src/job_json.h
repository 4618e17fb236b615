/*
 * job_json.h - jobs and events to and from their JSON form (docs/api.md).
 */
#ifndef DROVER_JOB_JSON_H
#define DROVER_JOB_JSON_H

#include <jansson.h>

#include "error.h"
#include "job.h"
#include "json_writer.h"

/*
 * Validate a submit body and fill job (queue, payload, keys, run_at,
 * webhook_url; state is set to queued or scheduled against now_ms). Unknown
 * fields and wrong types fail with -DRV_EBAD_FIELD naming the field. On
 * failure the job holds nothing that needs releasing beyond job_release().
 */
int job_from_submit(const json_t *body, int64_t now_ms, struct job *job, struct errmsg *err);

/* The job as the API shows it, written into w: the object, or its members only. */
void job_write(struct json_writer *w, const struct job *job);
void job_write_members(struct json_writer *w, const struct job *job);

/* The same, as a jansson value (for bodies that embed it). New reference, NULL on OOM. */
json_t *job_to_json(const struct job *job);

/* The event as the API shows it. Returns a new reference, NULL on OOM. */
json_t *job_event_to_json(const struct job_event *ev);

/*
 * The value of a JSON string that holds no NUL byte, else NULL. Bodies may
 * carry "\u0000" inside payloads; drover's own fields are C strings and
 * refuse it through this.
 */
const char *json_text(const json_t *v);

/* A stored time (ms) as an RFC 3339 string, or JSON null for 0. New reference. */
json_t *json_time_or_null(int64_t ms);

/* Is s an http:// or https:// URL with a host, and no whitespace? */
bool url_is_http(const char *s);

/* Is s a valid queue name: [A-Za-z0-9._-]{1,64}? */
bool job_queue_name_valid(const char *s);

/*
 * Read a time field: an RFC 3339 string or integer Unix seconds. Returns 0
 * or -DRV_EBAD_FIELD naming `field`.
 */
int json_time_field(const json_t *v, const char *field, int64_t *out_ms, struct errmsg *err);

#endif
