/*
 * timeutil.h - clocks and timestamps.
 *
 * Deadlines use the monotonic clock; the wall clock is only for timestamps
 * that are stored or shown (milliseconds since the Unix epoch, UTC).
 */
#ifndef DROVER_TIMEUTIL_H
#define DROVER_TIMEUTIL_H

#include <stdint.h>

#define TIME_RFC3339_LEN 25 /* "2026-11-23T03:03:10.123Z" + NUL */

/* The instants an RFC 3339 timestamp can show: 0000-01-01 to 9999-12-31, UTC. */
#define TIME_MIN_MS (-62167219200000LL)
#define TIME_MAX_MS 253402300799999LL

/* Wall clock, ms since the epoch. */
int64_t time_now_ms(void);

/* Monotonic clock, ms since an arbitrary point. */
int64_t time_mono_ms(void);

/* Monotonic clock in ns, for measuring durations. */
int64_t time_mono_ns(void);

/* Format ms since the epoch as "YYYY-MM-DDTHH:MM:SS.mmmZ". out has TIME_RFC3339_LEN bytes. */
void time_format_rfc3339(int64_t ms, char *out);

/*
 * Parse an RFC 3339 timestamp ("2026-11-23T03:03:10Z", optional fraction,
 * "Z" or "+hh:mm"/"-hh:mm") into ms since the epoch. Returns 0, or
 * -DRV_EBAD_FIELD when the text is not one.
 */
int time_parse_rfc3339(const char *s, int64_t *out_ms);

#endif
