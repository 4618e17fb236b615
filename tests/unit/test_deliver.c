/*
 * test_deliver.c - the webhook retry schedule (deliverer_parse_schedule(),
 * src/deliver.h): the default parses to the delays DESIGN.md names, units
 * and fractions convert exactly, and anything else is refused with the
 * config error rather than half read.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "deliver.h"
#include "error.h"
#include "test_util.h"

#define MIN  (60 * 1000LL)
#define HOUR (60 * MIN)

static void test_default_schedule(void **state)
{
    (void)state;
    struct deliverer_config cfg;
    struct errmsg err;
    assert_int_equal(deliverer_parse_schedule("5s,30s,2m,10m,30m,1h,3h,6h", &cfg, &err), 0);
    const int64_t want[] = {5000, 30000, 2 * MIN, 10 * MIN, 30 * MIN, HOUR, 3 * HOUR, 6 * HOUR};
    assert_int_equal(cfg.n_schedule, 8);
    for (int i = 0; i < 8; i++)
        assert_int_equal(cfg.schedule_ms[i], want[i]);
}

static void test_units_and_fractions(void **state)
{
    (void)state;
    struct deliverer_config cfg;
    struct errmsg err;
    assert_int_equal(deliverer_parse_schedule("200ms,1.5s,0.5m,0s", &cfg, &err), 0);
    assert_int_equal(cfg.n_schedule, 4);
    assert_int_equal(cfg.schedule_ms[0], 200);
    assert_int_equal(cfg.schedule_ms[1], 1500);
    assert_int_equal(cfg.schedule_ms[2], 30000);
    assert_int_equal(cfg.schedule_ms[3], 0);
    assert_int_equal(deliverer_parse_schedule("8784h", &cfg, &err), 0); /* a leap year */
    assert_int_equal(cfg.schedule_ms[0], 8784 * HOUR);
    /* Blanks around the delays, as a hand-written config has them. */
    assert_int_equal(deliverer_parse_schedule(" 5s, 30s ,\t2m ", &cfg, &err), 0);
    assert_int_equal(cfg.n_schedule, 3);
    assert_int_equal(cfg.schedule_ms[2], 2 * MIN);
}

static void test_refused(void **state)
{
    (void)state;
    const char *bad[] = {"",      "5",   "5x",    "5s,",   "5s, ",   "1s,,2s", "1s, ,2s", ",1s",
                         "-1s",   "+5s", "5s 6s", "s",     "nans",   "infs",   "1e300h",  "8785h",
                         "5ms5s", "5 s", "1s;2s", "0x10s", "1.2.3s", " "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct deliverer_config cfg = {.n_schedule = -1};
        struct errmsg err = {0};
        int rc = deliverer_parse_schedule(bad[i], &cfg, &err);
        if (rc != -DRV_ECONFIG)
            fail_msg("'%s': rc %d, want -DRV_ECONFIG", bad[i], rc);
        if (strstr(err.text, "retry schedule") == NULL)
            fail_msg("'%s': message '%s'", bad[i], err.text);
        assert_int_equal(cfg.n_schedule, -1); /* untouched */
    }
}

static void test_at_most_schedule_max(void **state)
{
    (void)state;
    char text[DELIVER_SCHEDULE_MAX * 4 + 8] = "";
    for (int i = 0; i < DELIVER_SCHEDULE_MAX; i++)
        strcat(text, i ? ",1s" : "1s");
    struct deliverer_config cfg;
    struct errmsg err;
    assert_int_equal(deliverer_parse_schedule(text, &cfg, &err), 0);
    assert_int_equal(cfg.n_schedule, DELIVER_SCHEDULE_MAX);
    strcat(text, ",1s");
    assert_int_equal(deliverer_parse_schedule(text, &cfg, &err), -DRV_ECONFIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_schedule),
        cmocka_unit_test(test_units_and_fractions),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_at_most_schedule_max),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
