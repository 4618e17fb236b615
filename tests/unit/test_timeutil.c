/*
 * test_timeutil.c - RFC 3339 formatting and parsing, and the clocks
 * (src/timeutil.h). Calendar arithmetic is checked against glibc's timegm().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "timeutil.h"
#include "test_util.h"

static int64_t parse_ok(const char *s)
{
    int64_t ms = -12345;
    int rc = time_parse_rfc3339(s, &ms);
    if (rc != 0)
        fail_msg("'%s' refused (rc %d)", s, rc);
    return ms;
}

static void expect_refused(const char *s)
{
    int64_t ms = 0;
    int rc = time_parse_rfc3339(s, &ms);
    if (rc != -DRV_EBAD_FIELD)
        fail_msg("'%s': rc %d, want -DRV_EBAD_FIELD (got %lld ms)", s, rc, (long long)ms);
}

static void test_format_known(void **state)
{
    (void)state;
    char out[TIME_RFC3339_LEN];
    time_format_rfc3339(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    time_format_rfc3339(1469918176385, out);
    assert_string_equal(out, "2016-07-30T22:36:16.385Z");
    time_format_rfc3339(1709164800000, out);
    assert_string_equal(out, "2024-02-29T00:00:00.000Z");
    time_format_rfc3339(253402300799999, out);
    assert_string_equal(out, "9999-12-31T23:59:59.999Z");
    time_format_rfc3339(999, out);
    assert_string_equal(out, "1970-01-01T00:00:00.999Z");
    assert_int_equal(strlen(out), TIME_RFC3339_LEN - 1);
}

/* Negative values (before the epoch) keep the milliseconds positive. */
static void test_format_negative(void **state)
{
    (void)state;
    char out[TIME_RFC3339_LEN];
    time_format_rfc3339(-1, out);
    assert_string_equal(out, "1969-12-31T23:59:59.999Z");
    time_format_rfc3339(-1000, out);
    assert_string_equal(out, "1969-12-31T23:59:59.000Z");
    time_format_rfc3339(-1001, out);
    assert_string_equal(out, "1969-12-31T23:59:58.999Z");
    /* No minus sign anywhere but the two date separators. */
    for (int i = 0; out[i]; i++)
        assert_true(out[i] != '-' || i == 4 || i == 7);
}

static void test_format_does_not_overrun(void **state)
{
    (void)state;
    struct {
        char out[TIME_RFC3339_LEN];
        char guard[16];
    } b;
    memset(&b, 0x5a, sizeof(b));
    time_format_rfc3339(1700000000123, b.out);
    assert_string_equal(b.out, "2023-11-14T22:13:20.123Z");
    for (size_t i = 0; i < sizeof(b.guard); i++)
        assert_int_equal((unsigned char)b.guard[i], 0x5a);
}

/* The arithmetic formatter against gmtime_r() over every year drover accepts (0000-9999). */
static void test_format_against_gmtime(void **state)
{
    (void)state;
    for (int64_t ms = TIME_MIN_MS; ms <= TIME_MAX_MS; ms += 86399999LL * 37 + 7919) {
        time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        char want[64], out[TIME_RFC3339_LEN];
        snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (int)(ms - (int64_t)secs * 1000));
        time_format_rfc3339(ms, out);
        if (strcmp(out, want) != 0)
            fail_msg("%lld: %s, gmtime_r says %s", (long long)ms, out, want);
    }
}

static void test_parse_known(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(parse_ok("1970-01-01T00:00:00.000Z"), 0);
    assert_int_equal(parse_ok("2016-07-30T22:36:16.385Z"), 1469918176385);
    assert_int_equal(parse_ok("2026-11-23T03:03:10.123Z"), 1795402990123);
    assert_int_equal(parse_ok("2000-01-01T00:00:00Z"), 946684800000);
    /* RFC 3339 §5.6 allows lower-case t and z. */
    assert_int_equal(parse_ok("2016-07-30t22:36:16.385z"), 1469918176385);
}

static void test_round_trip(void **state)
{
    (void)state;
    /* From 1970 to past 2100 in uneven steps, so every month, ms and hour shows up. */
    for (int64_t ms = 0; ms < 4200000000000; ms += 7777777777 + 13) {
        char out[TIME_RFC3339_LEN];
        time_format_rfc3339(ms, out);
        int64_t back = parse_ok(out);
        if (back != ms)
            fail_msg("%lld -> %s -> %lld", (long long)ms, out, (long long)back);
    }
}

/* Every day from 1970 through 2100 against timegm(). */
static void test_calendar_against_timegm(void **state)
{
    (void)state;
    struct tm tm = {
        .tm_year = 70, .tm_mon = 0, .tm_mday = 1, .tm_hour = 12, .tm_min = 34, .tm_sec = 56};
    for (int day = 0; day < 47847; day++) {
        struct tm t = tm;
        t.tm_mday += day;
        time_t secs = timegm(&t); /* normalises t */
        char s[64];
        snprintf(s, sizeof(s), "%04d-%02d-%02dT%02d:%02d:%02dZ", t.tm_year + 1900, t.tm_mon + 1,
                 t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec);
        int64_t ms = parse_ok(s);
        if (ms != (int64_t)secs * 1000)
            fail_msg("%s: %lld, timegm says %lld", s, (long long)ms, (long long)secs * 1000);
        char out[TIME_RFC3339_LEN];
        time_format_rfc3339(ms, out);
        assert_memory_equal(out, s, 19);
    }
}

static void test_offsets(void **state)
{
    (void)state;
    const int64_t utc = parse_ok("2026-11-23T03:03:10Z");
    assert_int_equal(parse_ok("2026-11-23T05:03:10+02:00"), utc);
    assert_int_equal(parse_ok("2026-11-22T21:33:10-05:30"), utc);
    assert_int_equal(parse_ok("2026-11-23T03:03:10+00:00"), utc);
    assert_int_equal(parse_ok("2026-11-23T03:03:10-00:00"), utc);
    assert_int_equal(parse_ok("2026-11-24T02:48:10+23:45"), utc);
    /* Crossing the epoch and a year boundary. */
    assert_int_equal(parse_ok("1970-01-01T01:00:00+01:00"), 0);
    assert_int_equal(parse_ok("1969-12-31T19:00:00-05:00"), 0);
    assert_int_equal(parse_ok("2025-01-01T00:30:00.250+01:00"),
                     parse_ok("2024-12-31T23:30:00.250Z"));
}

static void test_fractions(void **state)
{
    (void)state;
    const int64_t base = parse_ok("2026-11-23T03:03:10Z");
    static const struct {
        const char *frac;
        int ms;
    } cases[] = {
        {".1", 100},         {".12", 120},      {".123", 123},       {".1234", 123},
        {".12345", 123},     {".123456", 123},  {".1234567", 123},   {".12345678", 123},
        {".123456789", 123}, {".000000001", 0}, {".999999999", 999}, {".5", 500},
        {".05", 50},         {".007", 7},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char s[64];
        snprintf(s, sizeof(s), "2026-11-23T03:03:10%sZ", cases[i].frac);
        int64_t ms = parse_ok(s);
        if (ms != base + cases[i].ms)
            fail_msg("%s: %lld, want %lld", s, (long long)ms, (long long)(base + cases[i].ms));
        /* With an offset too. */
        snprintf(s, sizeof(s), "2026-11-23T05:03:10%s+02:00", cases[i].frac);
        assert_int_equal(parse_ok(s), base + cases[i].ms);
    }
    expect_refused("2026-11-23T03:03:10.Z");
    expect_refused("2026-11-23T03:03:10.1234567890Z"); /* 10 digits */
    expect_refused("2026-11-23T03:03:10.12aZ");
    expect_refused("2026-11-23T03:03:10,123Z");
}

static void test_leap_years(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("2024-02-29T00:00:00Z"), 1709164800000);
    assert_int_equal(parse_ok("2000-02-29T00:00:00Z"), 951782400000);
    expect_refused("2023-02-29T00:00:00Z");
    expect_refused("1900-02-29T00:00:00Z");
    expect_refused("2100-02-29T00:00:00Z");
    expect_refused("2024-02-30T00:00:00Z");
    assert_int_equal(parse_ok("2024-03-01T00:00:00Z") - parse_ok("2024-02-28T00:00:00Z"),
                     2 * 86400000LL);
    assert_int_equal(parse_ok("2023-03-01T00:00:00Z") - parse_ok("2023-02-28T00:00:00Z"),
                     86400000LL);
}

static void test_invalid(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "2026-11-23T03:03:10",        /* no zone */
        "2026-11-23T03:03:10.123",    /* no zone */
        "2026-11-23",                 /* date only */
        "03:03:10Z",                  /* time only */
        "2026-13-01T00:00:00Z",       /* month 13 */
        "2026-00-01T00:00:00Z",       /* month 0 */
        "2026-11-00T00:00:00Z",       /* day 0 */
        "2026-11-31T00:00:00Z",       /* November has 30 */
        "2026-04-31T00:00:00Z",       /* April has 30 */
        "2026-11-23T24:00:00Z",       /* hour 24 */
        "2026-11-23T23:60:00Z",       /* minute 60 */
        "2026-11-23T23:59:61Z",       /* second 61 */
        "2026-11-23T03:03:10Z ",      /* garbage after */
        "2026-11-23T03:03:10Zx",      /* garbage after */
        "2026-11-23T03:03:10ZZ",      /* garbage after */
        "2026-11-23T03:03:10+02:00x", /* garbage after the offset */
        "2026-11-23T03:03:10+02:00Z", /* both */
        " 2026-11-23T03:03:10Z",      /* garbage before */
        "2026-11-23T03:03:10+02",     /* offset without minutes */
        "2026-11-23T03:03:10+0200",   /* offset without colon */
        "2026-11-23T03:03:10+24:00",  /* offset hour 24 */
        "2026-11-23T03:03:10+02:60",  /* offset minute 60 */
        "2026-11-23X03:03:10Z",       /* bad separator */
        "2026/11/23T03:03:10Z",       /* bad date separators */
        "2026-11-23T03-03-10Z",       /* bad time separators */
        "2026-1-23T03:03:10Z",        /* one-digit month */
        "2026-11-3T03:03:10Z",        /* one-digit day */
        "26-11-23T03:03:10Z",         /* two-digit year */
        "+2026-11-23T03:03:10Z",      /* signed year */
        "2026-11-23T3:03:10Z",        /* one-digit hour */
        "2026-11-23T03:03Z",          /* no seconds */
        "1700000000",                 /* Unix seconds are not RFC 3339 */
        "2026-11-23T03:03:10z+02:00", /* trailing offset after z */
        "２026-11-23T03:03:10Z",      /* non-ASCII digit */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_refused(bad[i]);
}

/* A leap second is accepted and lands within the minute it ends. */
static void test_leap_second(void **state)
{
    (void)state;
    int64_t ms = parse_ok("2016-12-31T23:59:60Z");
    assert_true(ms >= parse_ok("2016-12-31T23:59:59Z"));
    assert_true(ms < parse_ok("2017-01-01T00:00:00Z"));
}

static void test_clocks(void **state)
{
    (void)state;
    int64_t now = time_now_ms();
    int64_t sys = (int64_t)time(NULL) * 1000;
    assert_true(now > 1577836800000); /* after 2020-01-01 */
    assert_true(now >= sys - 2000 && now <= sys + 2000);

    int64_t m1 = time_mono_ms(), n1 = time_mono_ns();
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 20 * 1000000};
    nanosleep(&ts, NULL);
    int64_t m2 = time_mono_ms(), n2 = time_mono_ns();
    assert_true(m2 >= m1 + 19);
    assert_true(n2 - n1 >= 19000000);
    /* ms and ns read the same clock. */
    assert_true(n2 / 1000000 >= m2 && n2 / 1000000 - m2 < 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_known),
        cmocka_unit_test(test_format_negative),
        cmocka_unit_test(test_format_does_not_overrun),
        cmocka_unit_test(test_format_against_gmtime),
        cmocka_unit_test(test_parse_known),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_calendar_against_timegm),
        cmocka_unit_test(test_offsets),
        cmocka_unit_test(test_fractions),
        cmocka_unit_test(test_leap_years),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_leap_second),
        cmocka_unit_test(test_clocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
