/*
 * fuzz_time.c - RFC 3339 timestamps as clients send them (run_at, and any
 * other time field): time_parse_rfc3339() on the input as a C string.
 *
 * Invariant: a time that parses is shown by time_format_rfc3339() as text
 * that parses back to the same millisecond. The text may differ (offsets
 * become "Z", fractions are cut to milliseconds, ":60" reads as ":59"), the
 * instant may not.
 */
#include "fuzz.h"
#include "timeutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstring(data, size);
    int64_t ms = 0;
    if (time_parse_rfc3339(s, &ms) == 0) {
        char shown[TIME_RFC3339_LEN];
        int64_t again = 0;
        time_format_rfc3339(ms, shown);
        FUZZ_CHECK(strlen(shown) == TIME_RFC3339_LEN - 1, "'%s' has the wrong length", shown);
        FUZZ_CHECK(time_parse_rfc3339(shown, &again) == 0, "'%s' (from '%s', %lld ms) is refused",
                   shown, s, (long long)ms);
        FUZZ_CHECK(again == ms, "'%s' -> %lld ms -> '%s' -> %lld ms", s, (long long)ms, shown,
                   (long long)again);
    }
    free(s);
    return 0;
}
