/*
 * test_ulid.c - ULID encoding, parsing and monotonic generation (src/ulid.h)
 * against the spec (https://github.com/ulid/spec) and an independent
 * 128-bit reference encoder written here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "ulid.h"
#include "test_util.h"

static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* The reference: 48-bit time then 80 random bits as one 128-bit number, 5 bits a character. */
static void ref_encode(uint64_t ms, const uint8_t r[10], char *out)
{
    unsigned __int128 v = (unsigned __int128)(ms & 0xffffffffffffULL);
    for (int i = 0; i < 10; i++)
        v = (v << 8) | r[i];
    for (int i = ULID_LEN - 1; i >= 0; i--) {
        out[i] = alphabet[(unsigned)(v & 31)];
        v >>= 5;
    }
    out[ULID_LEN] = '\0';
}

/* A small deterministic PRNG so failures reproduce. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_spec_vector(void **state)
{
    (void)state;
    char out[ULID_LEN + 1];
    uint8_t zeros[10] = {0}, ones[10];
    memset(ones, 0xff, sizeof(ones));

    ulid_encode(1469918176385, zeros, out);
    assert_string_equal(out, "01ARYZ6S410000000000000000");
    ulid_encode(1469918176385, ones, out);
    assert_string_equal(out, "01ARYZ6S41ZZZZZZZZZZZZZZZZ");

    ulid_encode(0, zeros, out);
    assert_string_equal(out, "00000000000000000000000000");
    /* The largest time the spec allows: 2^48 - 1. */
    ulid_encode(281474976710655LL, ones, out);
    assert_string_equal(out, "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
    ulid_encode(281474976710655LL, zeros, out);
    assert_string_equal(out, "7ZZZZZZZZZ0000000000000000");

    uint8_t one[10] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    ulid_encode(1, one, out);
    assert_string_equal(out, "00000000010000000000000001");
}

static void test_encode_matches_reference(void **state)
{
    (void)state;
    for (int n = 0; n < 20000; n++) {
        uint8_t r[10];
        for (int i = 0; i < 10; i++)
            r[i] = (uint8_t)rng();
        uint64_t ms = rng() & 0xffffffffffffULL;
        char got[ULID_LEN + 1], want[ULID_LEN + 1];
        ulid_encode((int64_t)ms, r, got);
        ref_encode(ms, r, want);
        assert_string_equal(got, want);
        assert_int_equal(ulid_time_ms(got), (int64_t)ms);
        char canon[ULID_LEN + 1];
        assert_true(ulid_parse(got, canon));
        assert_string_equal(canon, got);
    }
}

static void test_time_round_trip(void **state)
{
    (void)state;
    const int64_t times[] = {
        0, 1, 999, 1469918176385, 1700000000000, 4102444800000, 281474976710655LL};
    uint8_t r[10];
    memset(r, 0xa5, sizeof(r));
    for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
        char out[ULID_LEN + 1];
        ulid_encode(times[i], r, out);
        assert_int_equal(ulid_time_ms(out), times[i]);
    }
    /* Lower case reads the same. */
    assert_int_equal(ulid_time_ms("01aryz6s410000000000000000"), 1469918176385);
}

static void test_generate_same_ms(void **state)
{
    (void)state;
    enum { N = 100000 };
    struct ulid_gen g;
    ulid_gen_init(&g);
    const int64_t now = 1700000000000;
    char prev[ULID_LEN + 1], cur[ULID_LEN + 1];
    assert_int_equal(ulid_generate(&g, now, prev), 0);
    assert_true(ulid_parse(prev, NULL));
    assert_int_equal(ulid_time_ms(prev), now);
    for (int i = 1; i < N; i++) {
        assert_int_equal(ulid_generate(&g, now, cur), 0);
        if (strcmp(prev, cur) >= 0)
            fail_msg("id %d not above the one before: %s then %s", i, prev, cur);
        assert_int_equal(strlen(cur), ULID_LEN);
        assert_int_equal(ulid_time_ms(cur), now);
        memcpy(prev, cur, sizeof(prev));
    }
    assert_true(ulid_parse(cur, NULL));
}

static void test_generate_clock_backwards(void **state)
{
    (void)state;
    struct ulid_gen g;
    ulid_gen_init(&g);
    const int64_t clock[] = {5000, 5000, 4999, 1000, 0, 5000, 4000, 6000, 6000, 5999, 7000};
    char prev[ULID_LEN + 1] = "", cur[ULID_LEN + 1];
    int64_t high = 0;
    for (size_t i = 0; i < sizeof(clock) / sizeof(clock[0]); i++) {
        assert_int_equal(ulid_generate(&g, clock[i], cur), 0);
        assert_true(ulid_parse(cur, NULL));
        if (i > 0 && strcmp(prev, cur) >= 0)
            fail_msg("clock %lld: %s not above %s", (long long)clock[i], cur, prev);
        if (clock[i] > high)
            high = clock[i];
        /* The time part never goes back with the clock. */
        assert_int_equal(ulid_time_ms(cur), high);
        memcpy(prev, cur, sizeof(prev));
    }
}

/* When the 80-bit counter runs out within one ms, the id moves to the next ms, still larger. */
static void test_generate_counter_overflow(void **state)
{
    (void)state;
    struct ulid_gen g;
    ulid_gen_init(&g);
    char first[ULID_LEN + 1], next[ULID_LEN + 1];
    assert_int_equal(ulid_generate(&g, 5000, first), 0);
    memset(g.last_rand, 0xff, sizeof(g.last_rand));
    ulid_encode(5000, g.last_rand, first);
    assert_int_equal(ulid_generate(&g, 5000, next), 0);
    assert_true(strcmp(first, next) < 0);
    assert_true(ulid_parse(next, NULL));
    assert_true(ulid_time_ms(next) > 5000);
}

/* Two generators a ms apart: the later one's ids are larger (the time part leads). */
static void test_generate_fresh_ms(void **state)
{
    (void)state;
    struct ulid_gen g;
    ulid_gen_init(&g);
    char a[ULID_LEN + 1], b[ULID_LEN + 1];
    assert_int_equal(ulid_generate(&g, 1700000000000, a), 0);
    assert_int_equal(ulid_generate(&g, 1700000000001, b), 0);
    assert_true(strcmp(a, b) < 0);
    assert_int_equal(ulid_time_ms(b), 1700000000001);
    assert_memory_equal(a, "01HF7YAT00", 10);
    assert_memory_equal(b, "01HF7YAT01", 10);
}

static void test_parse_case(void **state)
{
    (void)state;
    char canon[ULID_LEN + 1];
    assert_true(ulid_parse("01aryz6s41tsv4rrffq69g5fav", canon));
    assert_string_equal(canon, "01ARYZ6S41TSV4RRFFQ69G5FAV");
    memset(canon, 'x', sizeof(canon));
    assert_true(ulid_parse("01ArYz6S41tSv4RrFfQ69G5fAv", canon));
    assert_string_equal(canon, "01ARYZ6S41TSV4RRFFQ69G5FAV");
    assert_true(ulid_parse("01ARYZ6S41TSV4RRFFQ69G5FAV", NULL));
    assert_true(ulid_parse("7ZZZZZZZZZZZZZZZZZZZZZZZZZ", NULL));
    assert_true(ulid_parse("00000000000000000000000000", NULL));
}

static void test_parse_length(void **state)
{
    (void)state;
    char canon[ULID_LEN + 1];
    assert_false(ulid_parse("", canon));
    assert_false(ulid_parse("01ARYZ6S41TSV4RRFFQ69G5FA", canon));   /* 25 */
    assert_false(ulid_parse("01ARYZ6S41TSV4RRFFQ69G5FAVX", canon)); /* 27 */
    assert_false(ulid_parse("01ARYZ6S41TSV4RRFFQ69G5FAV ", canon));
    assert_false(ulid_parse(" 01ARYZ6S41TSV4RRFFQ69G5FAV", canon));
    char *longid = tu_repeat('0', 1000);
    assert_false(ulid_parse(longid, canon));
    free(longid);
}

static void test_parse_bad_chars(void **state)
{
    (void)state;
    const char *base = "01ARYZ6S41TSV4RRFFQ69G5FAV";
    const char bad[] = {'U', 'u', '!', ' ', '-', '_', '=', '/', '\x80', '\xff', '\t', '{'};
    for (size_t k = 0; k < sizeof(bad); k++) {
        for (int pos = 0; pos < ULID_LEN; pos++) {
            char s[ULID_LEN + 1];
            memcpy(s, base, sizeof(s));
            s[pos] = bad[k];
            if (ulid_parse(s, NULL))
                fail_msg("accepted 0x%02x at %d: %s", (unsigned char)bad[k], pos, s);
        }
    }
}

/*
 * Crockford decoding maps I and L to 1 and O to 0; drover may refuse them
 * instead. Whatever it accepts must come out as a canonical id that parses
 * to itself.
 */
static void test_parse_crockford_aliases(void **state)
{
    (void)state;
    const struct {
        char c, means;
    } alias[] = {{'I', '1'}, {'i', '1'}, {'L', '1'}, {'l', '1'}, {'O', '0'}, {'o', '0'}};
    const char *base = "01ARYZ6S41TSV4RRFFQ69G5FAV";
    for (size_t k = 0; k < sizeof(alias) / sizeof(alias[0]); k++) {
        for (int pos = 1; pos < ULID_LEN; pos++) {
            char s[ULID_LEN + 1], canon[ULID_LEN + 1], again[ULID_LEN + 1];
            memcpy(s, base, sizeof(s));
            s[pos] = alias[k].c;
            if (!ulid_parse(s, canon))
                continue;
            assert_int_equal(canon[pos], alias[k].means);
            for (int i = 0; i < ULID_LEN; i++)
                assert_non_null(strchr(alphabet, canon[i]));
            assert_true(ulid_parse(canon, again));
            assert_string_equal(again, canon);
        }
    }
}

static void test_parse_first_char(void **state)
{
    (void)state;
    char s[ULID_LEN + 1];
    memcpy(s, "01ARYZ6S41TSV4RRFFQ69G5FAV", sizeof(s));
    for (const char *c = alphabet; *c; c++) {
        s[0] = *c;
        bool ok = *c >= '0' && *c <= '7';
        if (ulid_parse(s, NULL) != ok)
            fail_msg("first char '%c': want %s", *c, ok ? "accepted" : "refused");
    }
    s[0] = '8';
    assert_false(ulid_parse(s, NULL));
    s[0] = 'z';
    assert_false(ulid_parse(s, NULL));
    assert_false(ulid_parse("8ZZZZZZZZZZZZZZZZZZZZZZZZZ", NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_vector),
        cmocka_unit_test(test_encode_matches_reference),
        cmocka_unit_test(test_time_round_trip),
        cmocka_unit_test(test_generate_same_ms),
        cmocka_unit_test(test_generate_clock_backwards),
        cmocka_unit_test(test_generate_counter_overflow),
        cmocka_unit_test(test_generate_fresh_ms),
        cmocka_unit_test(test_parse_case),
        cmocka_unit_test(test_parse_length),
        cmocka_unit_test(test_parse_bad_chars),
        cmocka_unit_test(test_parse_crockford_aliases),
        cmocka_unit_test(test_parse_first_char),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
