/*
 * timeutil.c - clocks and RFC 3339 timestamps.
 */
#include "timeutil.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "error.h"

int64_t time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t time_mono_ms(void)
{
    return time_mono_ns() / 1000000;
}

int64_t time_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void time_format_rfc3339(int64_t ms, char *out)
{
    time_t secs = (time_t)(ms / 1000);
    int millis = (int)(ms % 1000);
    if (millis < 0) {
        millis += 1000;
        secs -= 1;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    /* The fields are in range by construction; the wide buffer only quiets the
     * compiler's worst-case estimate of %d. */
    char buf[64];
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (tm.tm_year + 1900) % 10000,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
    memcpy(out, buf, TIME_RFC3339_LEN - 1);
    out[TIME_RFC3339_LEN - 1] = '\0';
}

/* Read exactly n digits at *p into *out; advance p. */
static int read_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static int expect(const char **p, char c)
{
    if (**p != c)
        return -1;
    (*p)++;
    return 0;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return days[m - 1];
}

int time_parse_rfc3339(const char *s, int64_t *out_ms)
{
    const char *p = s;
    int y, mo, d, h, mi, sec, millis = 0;
    if (read_digits(&p, 4, &y) || expect(&p, '-') || read_digits(&p, 2, &mo) || expect(&p, '-') ||
        read_digits(&p, 2, &d))
        return -DRV_EBAD_FIELD;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -DRV_EBAD_FIELD;
    p++;
    if (read_digits(&p, 2, &h) || expect(&p, ':') || read_digits(&p, 2, &mi) || expect(&p, ':') ||
        read_digits(&p, 2, &sec))
        return -DRV_EBAD_FIELD;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (isdigit((unsigned char)*p)) {
            if (digits < 3)
                millis = millis * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0 || digits > 9)
            return -DRV_EBAD_FIELD;
        for (; digits < 3; digits++)
            millis *= 10;
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;
        p++;
        if (read_digits(&p, 2, &oh) || expect(&p, ':') || read_digits(&p, 2, &om) || oh > 23 ||
            om > 59)
            return -DRV_EBAD_FIELD;
        offset_min = sign * (oh * 60 + om);
    } else {
        return -DRV_EBAD_FIELD;
    }
    if (*p != '\0')
        return -DRV_EBAD_FIELD;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60)
        return -DRV_EBAD_FIELD;
    if (sec == 60)
        sec = 59; /* a leap second is read as :59 rather than refused */
    int64_t days = days_from_civil(y, mo, d);
    int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - (int64_t)offset_min * 60;
    int64_t ms = secs * 1000 + millis;
    /* An offset can push the instant out of the years 0000-9999 that
     * time_format_rfc3339() can show: refuse it rather than mis-show it. */
    if (ms < TIME_MIN_MS || ms > TIME_MAX_MS)
        return -DRV_EBAD_FIELD;
    *out_ms = ms;
    return 0;
}
