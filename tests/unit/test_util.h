/*
 * test_util.h - small helpers shared by the cmocka unit tests.
 *
 * Include after <cmocka.h> (which needs <setjmp.h>, <stdarg.h>, <stddef.h>
 * and <stdint.h> first). Everything here is static so each test binary gets
 * its own copy; unused helpers are marked so -Wunused stays quiet.
 */
#ifndef DROVER_TEST_UTIL_H
#define DROVER_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define TU_UNUSED __attribute__((unused))

/* Parse JSON text or fail the test. New reference. */
TU_UNUSED static json_t *tu_json(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (v == NULL)
        fail_msg("bad JSON in test: %s (%s)", text, jerr.text);
    return v;
}

/*
 * What a parser of outside input answered for text: -DRV_EBAD_FIELD naming
 * `field` with a message (tu_expect_field_error), or success (tu_expect_ok).
 */
#define tu_expect_field_error(text, rc, err, field)                                                \
    do {                                                                                           \
        if ((rc) != -DRV_EBAD_FIELD)                                                               \
            fail_msg("%s: rc %d, want -DRV_EBAD_FIELD", (text), (rc));                             \
        if (strcmp((err)->field, (field)) != 0)                                                    \
            fail_msg("%s: field '%s', want '%s' (message: %s)", (text), (err)->field, (field),     \
                     (err)->text);                                                                 \
        if ((err)->text[0] == '\0')                                                                \
            fail_msg("%s: no message", (text));                                                    \
    } while (0)

#define tu_expect_ok(text, rc, err)                                                                \
    do {                                                                                           \
        if ((rc) != 0)                                                                             \
            fail_msg("%s: rc %d (%s: %s)", (text), (rc), (err)->field, (err)->text);               \
    } while (0)

/* Fail unless a and b are equal JSON values; show both on failure. */
#define assert_json_equal(a, b)                                                                    \
    do {                                                                                           \
        const json_t *tu_a_ = (a), *tu_b_ = (b);                                                   \
        if (!json_equal((json_t *)tu_a_, (json_t *)tu_b_)) {                                       \
            char *tu_sa_ = json_dumps(tu_a_, JSON_SORT_KEYS | JSON_ENCODE_ANY);                    \
            char *tu_sb_ = json_dumps(tu_b_, JSON_SORT_KEYS | JSON_ENCODE_ANY);                    \
            print_error("%s\n  != %s\n", tu_sa_ ? tu_sa_ : "(null)", tu_sb_ ? tu_sb_ : "(null)");  \
            free(tu_sa_);                                                                          \
            free(tu_sb_);                                                                          \
            fail_msg("JSON values differ: %s != %s", #a, #b);                                      \
        }                                                                                          \
    } while (0)

/* A malloc'd string of n copies of c. */
TU_UNUSED static char *tu_repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* Read a whole file (relative to the project root, where tests run) or fail. Free it. */
TU_UNUSED static char *tu_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open '%s' (tests run from the project root)", path);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            assert_non_null(nb);
            buf = nb;
        }
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

#endif
