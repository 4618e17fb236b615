/*
 * fuzz_submit.c - the POST /v1/jobs body: JSON as the server loads it
 * (src/http/server.c), then job_from_submit() and, when it is accepted,
 * job_to_json() and a dump, as the 202 reply does.
 *
 * Invariant: an accepted submit can always be shown (job_to_json() fails
 * only when out of memory).
 */
#include <jansson.h>

#include "fuzz.h"
#include "job_json.h"

/* A fixed "now" keeps runs reproducible: 2026-11-23T03:03:10.123Z. */
#define FUZZ_NOW_MS 1795402990123LL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *body =
        json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (body == NULL)
        return 0;

    struct job job;
    struct errmsg err = {0};
    job_init(&job);
    int rc = job_from_submit(body, FUZZ_NOW_MS, &job, &err);
    if (rc == 0) {
        FUZZ_CHECK(job.queue != NULL && job.payload != NULL, "accepted without queue or payload");
        FUZZ_CHECK(job.state == JOB_QUEUED || job.state == JOB_SCHEDULED, "state %d", job.state);
        json_t *shown = job_to_json(&job);
        FUZZ_CHECK(shown != NULL, "job_to_json failed for an accepted submit");
        char *text = json_dumps(shown, JSON_COMPACT);
        FUZZ_CHECK(text != NULL, "json_dumps failed");
        free(text);
        json_decref(shown);
    }
    job_release(&job);
    json_decref(body);
    return 0;
}
