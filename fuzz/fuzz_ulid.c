/*
 * fuzz_ulid.c - job ids as they arrive in paths: ulid_parse() on the input
 * as a C string.
 *
 * Invariants: the canonical form is 26 upper-case Crockford characters that
 * parse to themselves and carry the same time; decoding its 128 bits and
 * encoding them again with ulid_encode() gives it back.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "ulid.h"

static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* The 128 bits of a canonical ULID: 26 groups of 5, the first of 3. */
static void decode(const char *canon, uint8_t bits[16])
{
    memset(bits, 0, 16);
    int pos = -2; /* as in ulid_encode(): the first group's top bit lies before bit 0 */
    for (int i = 0; i < ULID_LEN; i++, pos += 5) {
        unsigned v = (unsigned)(strchr(alphabet, canon[i]) - alphabet);
        for (int k = 0; k < 5; k++) {
            if (pos + k >= 0 && (v >> (4 - k)) & 1u)
                bits[(pos + k) / 8] |= (uint8_t)(0x80u >> ((pos + k) % 8));
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstring(data, size);
    char canon[ULID_LEN + 1];
    if (ulid_parse(s, canon)) {
        FUZZ_CHECK(strlen(canon) == ULID_LEN, "canonical '%s' has the wrong length", canon);
        FUZZ_CHECK(strspn(canon, alphabet) == ULID_LEN, "canonical '%s' is not upper case", canon);
        char again[ULID_LEN + 1];
        FUZZ_CHECK(ulid_parse(canon, again) && strcmp(canon, again) == 0,
                   "canonical '%s' does not parse to itself", canon);
        int64_t ms = ulid_time_ms(s);
        FUZZ_CHECK(ms == ulid_time_ms(canon), "'%s' and '%s' differ in time", s, canon);
        FUZZ_CHECK(ms >= 0 && ms < (1LL << 48), "time %lld out of 48 bits", (long long)ms);

        uint8_t bits[16];
        decode(canon, bits);
        int64_t t = 0;
        for (int i = 0; i < 6; i++)
            t = t << 8 | bits[i];
        char encoded[ULID_LEN + 1];
        ulid_encode(t, bits + 6, encoded);
        FUZZ_CHECK(t == ms && strcmp(encoded, canon) == 0, "'%s' re-encodes as '%s'", canon,
                   encoded);
    }
    free(s);
    return 0;
}
