/*
 * test_outbox.c - which events go out, and to whom (src/outbox.h): the
 * destinations of an event, and outbox_has_destination(), which the writer
 * asks of every event, agreeing with them in every case.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox.h"
#include "test_util.h"

#define ID_1 "01JD6Y5T2R6Q0M7S5V3QG1X8Z1"
#define ID_2 "01JD6Y5T2R6Q0M7S5V3QG1X8Z2"

static void put_sub(struct sub_cache *c, const char *id, const char *events, const char *queues,
                    bool enabled)
{
    struct sub s;
    sub_init(&s);
    snprintf(s.id, sizeof(s.id), "%s", id);
    s.url = strdup("https://example.com/hook");
    s.secret = strdup("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    s.events = events ? tu_json(events) : NULL;
    s.queues = queues ? tu_json(queues) : NULL;
    s.enabled = enabled;
    assert_int_equal(sub_cache_put(c, &s), 0);
    sub_release(&s);
}

/* outbox_has_destination() must say exactly whether outbox_destinations() finds any. */
static int destinations_checked(struct sub_cache *subs, const struct job *job,
                                const struct job_event *ev)
{
    static outbox_dest dests[OUTBOX_MAX_DESTS];
    int n = outbox_destinations(subs, job, ev, dests);
    if (outbox_has_destination(subs, job, ev) != (n > 0))
        fail_msg("%s in %s (webhook_url %s): %d destinations, has_destination says %s", ev->type,
                 job->queue, job->webhook_url ? "set" : "none", n, n > 0 ? "none" : "some");
    return n;
}

static void test_destinations(void **state)
{
    (void)state;
    struct sub_cache *c;
    assert_int_equal(sub_cache_new(&c), 0);
    struct job job;
    job_init(&job);
    job.queue = strdup("billing");
    struct job_event created = {.type = "job.created"};
    struct job_event failed = {.type = "job.failed"};
    struct job_event dead_hook = {.type = "job.delivery_dead"};
    struct job_event dead_sub = {.type = "job.delivery_dead"};
    dead_hook.data = tu_json("{\"destination\": \"webhook_url\"}");
    dead_sub.data = tu_json("{\"destination\": \"" ID_1 "\"}");

    /* No subscriptions, no webhook_url: nowhere. With no cache at all too. */
    assert_int_equal(destinations_checked(NULL, &job, &created), 0);
    assert_int_equal(destinations_checked(c, &job, &created), 0);

    /* The job's own URL hears of everything but its own dead deliveries. */
    job.webhook_url = strdup("https://example.com/job");
    assert_int_equal(destinations_checked(c, &job, &created), 1);
    assert_int_equal(destinations_checked(c, &job, &dead_hook), 0);
    assert_int_equal(destinations_checked(c, &job, &dead_sub), 1);
    free(job.webhook_url);
    job.webhook_url = NULL;

    /* Subscriptions by their filters; a disabled one hears nothing. */
    put_sub(c, ID_1, "[\"job.failed\", \"job.delivery_dead\"]", "[\"billing\"]", true);
    put_sub(c, ID_2, "[\"job.failed\"]", NULL, false);
    assert_int_equal(destinations_checked(c, &job, &created), 0);
    assert_int_equal(destinations_checked(c, &job, &failed), 1);
    assert_int_equal(destinations_checked(c, &job, &dead_sub), 0); /* not of its own death */
    assert_int_equal(destinations_checked(c, &job, &dead_hook), 1);
    free(job.queue);
    job.queue = strdup("other");
    assert_int_equal(destinations_checked(c, &job, &failed), 0);
    put_sub(c, ID_2, "[\"job.failed\"]", NULL, true);
    assert_int_equal(destinations_checked(c, &job, &failed), 1);
    job.webhook_url = strdup("https://example.com/job");
    assert_int_equal(destinations_checked(c, &job, &failed), 2);

    json_decref(dead_hook.data);
    json_decref(dead_sub.data);
    job_release(&job);
    sub_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_destinations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
