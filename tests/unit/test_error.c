/*
 * test_error.c - error names, HTTP statuses and messages (src/error.h).
 *
 * The table is walked through the same X-macro the library uses, so a code
 * added there is checked here without editing this file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "test_util.h"

struct expected {
    int code;
    const char *sym;
    const char *name;
    int status;
};

static const struct expected table[] = {
#define X(sym, name, status) {DRV_E##sym, #sym, name, status},
    DRV_ERROR_TABLE(X)
#undef X
};
#define N_CODES (sizeof(table) / sizeof(table[0]))

static void test_every_code(void **state)
{
    (void)state;
    assert_int_equal(N_CODES, DRV__ERROR_COUNT - 1);
    for (size_t i = 0; i < N_CODES; i++) {
        const struct expected *e = &table[i];
        /* Codes are 1, 2, 3, ... in table order: DRV_OK is 0 and nothing else is. */
        assert_int_equal(e->code, (int)i + 1);
        const char *name = err_name(-e->code);
        assert_non_null(name);
        if (strcmp(name, e->name) != 0)
            fail_msg("DRV_E%s: name '%s', want '%s'", e->sym, name, e->name);
        if (err_http_status(-e->code) != e->status)
            fail_msg("DRV_E%s: status %d, want %d", e->sym, err_http_status(-e->code), e->status);
    }
}

/* The names are wire format: lowercase snake case, 4xx or 5xx. */
static void test_table_shape(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_CODES; i++) {
        const char *n = table[i].name;
        assert_true(strlen(n) > 0);
        for (const char *c = n; *c; c++) {
            if (!((*c >= 'a' && *c <= 'z') || *c == '_'))
                fail_msg("DRV_E%s: name '%s' is not snake case", table[i].sym, n);
        }
        assert_in_range(table[i].status, 400, 599);
    }
    /* The statuses docs/api.md promises for a few codes. */
    assert_int_equal(err_http_status(-DRV_EBAD_JSON), 400);
    assert_string_equal(err_name(-DRV_EBAD_FIELD), "invalid_field");
    assert_int_equal(err_http_status(-DRV_ENOT_FOUND), 404);
    assert_int_equal(err_http_status(-DRV_EMETHOD), 405);
    assert_string_equal(err_name(-DRV_EILLEGAL_TRANSITION), "illegal_transition");
    assert_int_equal(err_http_status(-DRV_EILLEGAL_TRANSITION), 409);
    assert_string_equal(err_name(-DRV_ELEASE_LOST), "lease_lost");
    assert_int_equal(err_http_status(-DRV_ETOO_LARGE), 413);
    assert_int_equal(err_http_status(-DRV_EHEADERS_TOO_LARGE), 431);
    assert_int_equal(err_http_status(-DRV_ESHUTTING_DOWN), 503);
}

static void test_unknown_codes(void **state)
{
    (void)state;
    const int unknown[] = {-DRV__ERROR_COUNT, -(DRV__ERROR_COUNT + 1), -1000,
                           -INT_MAX,          DRV__ERROR_COUNT,        INT_MAX};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        assert_string_equal(err_name(unknown[i]), "internal");
        assert_int_equal(err_http_status(unknown[i]), 500);
    }
}

/*
 * INT_MIN is a negative int whose negation overflows: err_name() must still
 * say "internal" rather than index the table with it.
 */
static void test_unknown_int_min(void **state)
{
    (void)state;
    assert_string_equal(err_name(INT_MIN), "internal");
    assert_int_equal(err_http_status(INT_MIN), 500);
}

static void test_errmsg_set(void **state)
{
    (void)state;
    struct errmsg e;
    memset(&e, 'x', sizeof(e));
    e.field[sizeof(e.field) - 1] = '\0';
    int rc = errmsg_set(&e, -DRV_ENOT_FOUND, "job '%s' not found (%d)", "01ARYZ", 7);
    assert_int_equal(rc, -DRV_ENOT_FOUND);
    assert_string_equal(e.text, "job '01ARYZ' not found (7)");
    assert_string_equal(e.field, ""); /* not about a field: cleared */

    rc = errmsg_set(&e, 0, "%s", "");
    assert_int_equal(rc, 0);
    assert_string_equal(e.text, "");
}

static void test_errmsg_field(void **state)
{
    (void)state;
    struct errmsg e;
    memset(&e, 0, sizeof(e));
    int rc = errmsg_field(&e, -DRV_EBAD_FIELD, "timeout_s", "'%s' must be between %d and %d",
                          "timeout_s", 0, 604800);
    assert_int_equal(rc, -DRV_EBAD_FIELD);
    assert_string_equal(e.text, "'timeout_s' must be between 0 and 604800");
    assert_string_equal(e.field, "timeout_s");

    /* A later errmsg_set forgets the field. */
    errmsg_set(&e, -DRV_EBAD_JSON, "bad");
    assert_string_equal(e.field, "");
    assert_string_equal(e.text, "bad");

    /* A later errmsg_field replaces both. */
    errmsg_field(&e, -DRV_EBAD_FIELD, "backoff.max_s", "short");
    assert_string_equal(e.field, "backoff.max_s");
    assert_string_equal(e.text, "short");
}

/* Long messages and field names are cut, NUL-terminated, and nothing around them is touched. */
static void test_errmsg_truncation(void **state)
{
    (void)state;
    struct {
        unsigned char before[32];
        struct errmsg e;
        unsigned char after[32];
    } guarded;
    memset(&guarded, 0xa5, sizeof(guarded));

    char *longtext = tu_repeat('m', 5000);
    char *longfield = tu_repeat('f', 500);
    int rc = errmsg_field(&guarded.e, -DRV_EBAD_FIELD, longfield, "%s:%s", longtext, "tail");
    assert_int_equal(rc, -DRV_EBAD_FIELD);

    assert_int_equal(strlen(guarded.e.text), sizeof(guarded.e.text) - 1);
    assert_memory_equal(guarded.e.text, longtext, sizeof(guarded.e.text) - 1);
    assert_int_equal(strlen(guarded.e.field), sizeof(guarded.e.field) - 1);
    assert_memory_equal(guarded.e.field, longfield, sizeof(guarded.e.field) - 1);
    for (size_t i = 0; i < sizeof(guarded.before); i++) {
        assert_int_equal(guarded.before[i], 0xa5);
        assert_int_equal(guarded.after[i], 0xa5);
    }

    memset(&guarded, 0xa5, sizeof(guarded));
    rc = errmsg_set(&guarded.e, -DRV_EINTERNAL, "%s", longtext);
    assert_int_equal(rc, -DRV_EINTERNAL);
    assert_int_equal(strlen(guarded.e.text), sizeof(guarded.e.text) - 1);
    assert_string_equal(guarded.e.field, "");
    for (size_t i = 0; i < sizeof(guarded.before); i++) {
        assert_int_equal(guarded.before[i], 0xa5);
        assert_int_equal(guarded.after[i], 0xa5);
    }

    /* Exactly at the limit: 255 characters fit whole. */
    longtext[255] = '\0';
    errmsg_set(&guarded.e, -DRV_EINTERNAL, "%s", longtext);
    assert_string_equal(guarded.e.text, longtext);

    free(longtext);
    free(longfield);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code),      cmocka_unit_test(test_table_shape),
        cmocka_unit_test(test_unknown_codes),   cmocka_unit_test(test_errmsg_set),
        cmocka_unit_test(test_errmsg_field),    cmocka_unit_test(test_errmsg_truncation),
        cmocka_unit_test(test_unknown_int_min),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
