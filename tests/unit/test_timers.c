/*
 * test_timers.c - the deadline heap: one entry per key, earliest wins,
 * removal, order of firing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "timers.h"
#include "timeutil.h"

struct fired {
    pthread_mutex_t lock;
    int n;
    char keys[16][TIMER_KEY_MAX + 1];
    enum timer_kind kinds[16];
};

static void on_fire(void *ctx, enum timer_kind kind, const char *key)
{
    struct fired *f = ctx;
    pthread_mutex_lock(&f->lock);
    if (f->n < 16) {
        snprintf(f->keys[f->n], sizeof(f->keys[0]), "%s", key);
        f->kinds[f->n] = kind;
    }
    f->n++;
    pthread_mutex_unlock(&f->lock);
}

static int fired_count(struct fired *f)
{
    pthread_mutex_lock(&f->lock);
    int n = f->n;
    pthread_mutex_unlock(&f->lock);
    return n;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Wait (bounded) until at least n have fired. */
static void wait_fired(struct fired *f, int n)
{
    for (int i = 0; i < 200 && fired_count(f) < n; i++)
        sleep_ms(10);
}

static void test_one_live_entry_per_key(void **state)
{
    (void)state;
    struct fired f = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct timers *t;
    assert_int_equal(timers_start(on_fire, &f, &t), 0);
    int64_t now = time_now_ms();
    timers_add(t, now + 150, TIMER_JOB, "A");
    timers_add(t, now + 400, TIMER_JOB, "A"); /* later than armed: no-op */
    timers_add(t, now + 60, TIMER_JOB, "A");  /* earlier: moves it up, 150 is gone */
    for (int i = 0; i < 50; i++)
        timers_add(t, now + 100 + i, TIMER_JOB, "A"); /* a heartbeat storm: all no-ops */
    assert_int_equal(timers_pending(t), 1);
    wait_fired(&f, 1);
    sleep_ms(450); /* past every time armed above */
    assert_int_equal(fired_count(&f), 1);
    assert_string_equal(f.keys[0], "A");
    assert_int_equal(timers_pending(t), 0);
    /* Once fired, the key can be armed again. */
    timers_add(t, time_now_ms() + 10, TIMER_JOB, "A");
    wait_fired(&f, 2);
    assert_int_equal(fired_count(&f), 2);
    timers_free(t);
}

static void test_kinds_and_keys_are_separate_and_ordered(void **state)
{
    (void)state;
    struct fired f = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct timers *t;
    assert_int_equal(timers_start(on_fire, &f, &t), 0);
    int64_t now = time_now_ms();
    timers_add(t, now + 90, TIMER_JOB, "k");
    timers_add(t, now + 30, TIMER_LOCK, "k"); /* same key, other kind: its own entry */
    timers_add(t, now + 60, TIMER_WAITER, "7");
    timers_add(t, now - 1000, TIMER_JOB, "past"); /* passed already: fires at once */
    assert_int_equal(timers_pending(t), 4);
    wait_fired(&f, 4);
    assert_int_equal(fired_count(&f), 4);
    assert_string_equal(f.keys[0], "past");
    assert_int_equal(f.kinds[1], TIMER_LOCK);
    assert_int_equal(f.kinds[2], TIMER_WAITER);
    assert_int_equal(f.kinds[3], TIMER_JOB);
    timers_free(t);
}

static void test_many_keys_grow_the_table(void **state)
{
    (void)state;
    struct fired f = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct timers *t;
    assert_int_equal(timers_start(on_fire, &f, &t), 0);
    int64_t later = time_now_ms() + 60000;
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "job-%d", i);
        timers_add(t, later + i, TIMER_JOB, key);
        timers_add(t, later + i + 5, TIMER_JOB, key); /* no-op */
    }
    assert_int_equal(timers_pending(t), 5000);
    timers_stop(t);
    timers_add(t, later, TIMER_JOB, "after-stop"); /* ignored once stopped */
    assert_int_equal(timers_pending(t), 5000);
    assert_int_equal(fired_count(&f), 0);
    timers_free(t);
}

/* A removed key does not fire; the rest still fire in order. */
static void test_remove(void **state)
{
    (void)state;
    struct fired f = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct timers *t;
    assert_int_equal(timers_start(on_fire, &f, &t), 0);
    int64_t now = time_now_ms();
    timers_add(t, now + 40, TIMER_JOB, "gone");
    timers_add(t, now + 60, TIMER_JOB, "stays");
    timers_add(t, now + 50, TIMER_LOCK, "gone"); /* same key, other kind: not removed */
    timers_remove(t, TIMER_JOB, "gone");
    timers_remove(t, TIMER_JOB, "never-armed"); /* a no-op */
    assert_int_equal(timers_pending(t), 2);
    wait_fired(&f, 2);
    sleep_ms(100);
    assert_int_equal(fired_count(&f), 2);
    assert_int_equal(f.kinds[0], TIMER_LOCK);
    assert_string_equal(f.keys[1], "stays");
    /* Removed, then armed again: it fires. */
    timers_add(t, time_now_ms() + 20, TIMER_JOB, "gone");
    wait_fired(&f, 3);
    assert_string_equal(f.keys[2], "gone");
    timers_free(t);
}

struct order {
    pthread_mutex_t lock;
    int n, out_of_order;
    int64_t last;
};

static void on_fire_order(void *ctx, enum timer_kind kind, const char *key)
{
    (void)kind;
    struct order *o = ctx;
    int64_t when = strtoll(key, NULL, 10); /* "deadline-index" */
    pthread_mutex_lock(&o->lock);
    if (when < o->last)
        o->out_of_order++;
    o->last = when;
    o->n++;
    pthread_mutex_unlock(&o->lock);
}

/*
 * The heap under random arms, earlier re-arms and removals: every key left
 * fires once, in deadline order (each key names its deadline, so a key
 * firing out of order shows a broken heap).
 */
static void test_random_arms_and_removals_keep_order(void **state)
{
    (void)state;
    struct order o = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct timers *t;
    assert_int_equal(timers_start(on_fire_order, &o, &t), 0);
    pthread_mutex_lock(&o.lock); /* hold the fires back until everything is armed */
    int64_t base = time_now_ms() + 300;
    enum { N = 3000 };
    static bool armed[N];
    int live = 0;
    char key[32];
    srand(11);
    for (int step = 0; step < 4 * N; step++) {
        int i = rand() % N;
        int64_t when = base + i / 20; /* 150 ms of deadlines, many alike */
        snprintf(key, sizeof(key), "%lld-%d", (long long)when, i);
        if (rand() % 3 == 0) {
            timers_remove(t, TIMER_JOB, key);
            live -= armed[i];
            armed[i] = false;
        } else {
            /* Its deadline is in its name; armed later first, then at it. */
            timers_add(t, when + 1000, TIMER_JOB, key);
            timers_add(t, when, TIMER_JOB, key);
            live += !armed[i];
            armed[i] = true;
        }
    }
    assert_int_equal(timers_pending(t), live);
    pthread_mutex_unlock(&o.lock);
    for (int i = 0; i < 200 && timers_pending(t) > 0; i++)
        sleep_ms(10);
    sleep_ms(100); /* the last batch taken is fired by now */
    pthread_mutex_lock(&o.lock);
    int n = o.n, bad = o.out_of_order;
    pthread_mutex_unlock(&o.lock);
    assert_int_equal(n, live);
    assert_int_equal(bad, 0);
    timers_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_live_entry_per_key),
        cmocka_unit_test(test_kinds_and_keys_are_separate_and_ordered),
        cmocka_unit_test(test_many_keys_grow_the_table),
        cmocka_unit_test(test_remove),
        cmocka_unit_test(test_random_arms_and_removals_keep_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
