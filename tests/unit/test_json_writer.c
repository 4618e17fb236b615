/*
 * test_json_writer.c - the one-pass JSON writer (src/json_writer.h): its
 * text against jansson's for the same values, escapes, growth off a small
 * buffer, and failure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_writer.h"
#include "test_util.h"

static char *written_string(const char *s)
{
    char stack[16];
    struct json_writer w;
    json_writer_init(&w, stack, sizeof(stack));
    json_writer_string(&w, s);
    char *text = json_writer_finish(&w, NULL);
    assert_non_null(text);
    return text;
}

/* A valid UTF-8 string is written exactly as jansson dumps it. */
static void expect_like_jansson(const char *s)
{
    json_t *v = json_string(s);
    assert_non_null(v);
    char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    char *got = written_string(s);
    if (strcmp(got, want) != 0)
        fail_msg("'%s': wrote %s, jansson %s", s, got, want);
    free(got);
    free(want);
    json_decref(v);
}

static void test_strings_like_jansson(void **state)
{
    (void)state;
    expect_like_jansson("");
    expect_like_jansson("plain ascii, with / and ~ and \x7f");
    expect_like_jansson("quote \" backslash \\ end");
    expect_like_jansson("\b\f\n\r\t \x01\x02\x1f");
    expect_like_jansson("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x9a\x80 \xed\x9f\xbf \xee\x80\x80");
    expect_like_jansson("\xf4\x8f\xbf\xbf"); /* U+10FFFF, the last code point */
    /* Every control character and every ASCII byte, one at a time and together. */
    char all[128];
    for (int c = 1; c < 128; c++) {
        char one[2] = {(char)c, '\0'};
        expect_like_jansson(one);
        all[c - 1] = (char)c;
    }
    all[127] = '\0';
    expect_like_jansson(all);
    /* Random valid UTF-8: ASCII, 2-, 3- and 4-byte sequences. */
    srand(7);
    for (int round = 0; round < 2000; round++) {
        char s[256];
        size_t n = 0;
        while (n < sizeof(s) - 5) {
            int kind = rand() % 4;
            if (kind == 0) {
                s[n++] = (char)(1 + rand() % 127);
            } else if (kind == 1) {
                s[n++] = (char)(0xC2 + rand() % 30);
                s[n++] = (char)(0x80 + rand() % 64);
            } else if (kind == 2) {
                s[n++] = (char)0xE1;
                s[n++] = (char)(0x80 + rand() % 64);
                s[n++] = (char)(0x80 + rand() % 64);
            } else {
                s[n++] = (char)0xF1;
                s[n++] = (char)(0x80 + rand() % 64);
                s[n++] = (char)(0x80 + rand() % 64);
                s[n++] = (char)(0x80 + rand() % 64);
            }
            if (rand() % 40 == 0)
                break;
        }
        s[n] = '\0';
        expect_like_jansson(s);
    }
}

/* jansson refuses these; the writer keeps the rest of the string and writes U+FFFD. */
static void test_invalid_utf8_becomes_replacement(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"a\x80z", "\"a\\uFFFDz\""},                                  /* a lone continuation byte */
        {"a\xc0\xafz", "\"a\\uFFFD\\uFFFDz\""},                       /* an overlong '/' */
        {"a\xed\xa0\x80z", "\"a\\uFFFD\\uFFFD\\uFFFDz\""},            /* a surrogate */
        {"a\xf4\x90\x80\x80z", "\"a\\uFFFD\\uFFFD\\uFFFD\\uFFFDz\""}, /* past U+10FFFF */
        {"a\xe2\x82", "\"a\\uFFFD\\uFFFD\""},                         /* cut short by the end */
        {"\xff", "\"\\uFFFD\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = written_string(cases[i].in);
        assert_string_equal(got, cases[i].out);
        json_t *v = tu_json(got); /* and it is JSON */
        json_decref(v);
        free(got);
    }
}

static void test_values_and_nesting(void **state)
{
    (void)state;
    char stack[8];
    struct json_writer w;
    json_writer_init(&w, stack, sizeof(stack)); /* grows at once */
    json_writer_object_begin(&w);
    json_writer_key(&w, "n");
    json_writer_int(&w, 0);
    json_writer_key(&w, "min");
    json_writer_int(&w, INT64_MIN);
    json_writer_key(&w, "max");
    json_writer_int(&w, INT64_MAX);
    json_writer_key(&w, "neg");
    json_writer_int(&w, -42);
    json_writer_key(&w, "t");
    json_writer_bool(&w, true);
    json_writer_key(&w, "f");
    json_writer_bool(&w, false);
    json_writer_key(&w, "z");
    json_writer_null(&w);
    json_writer_key(&w, "s");
    json_writer_string(&w, NULL);
    json_writer_key(&w, "at");
    json_writer_time(&w, 1795402990123);
    json_writer_key(&w, "never");
    json_writer_time(&w, 0);
    json_writer_key(&w, "empty");
    json_writer_array_begin(&w);
    json_writer_array_end(&w);
    json_writer_key(&w, "list");
    json_writer_array_begin(&w);
    json_writer_int(&w, 1);
    json_writer_object_begin(&w);
    json_writer_object_end(&w);
    json_writer_array_begin(&w);
    json_writer_string(&w, "x");
    json_writer_null(&w);
    json_writer_array_end(&w);
    json_writer_array_end(&w);
    json_writer_key(&w, "key \"quoted\"");
    json_writer_int(&w, 1);
    json_writer_object_end(&w);
    size_t len = 0;
    char *text = json_writer_finish(&w, &len);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    assert_string_equal(text, "{\"n\":0,\"min\":-9223372036854775808,\"max\":9223372036854775807,"
                              "\"neg\":-42,\"t\":true,\"f\":false,\"z\":null,\"s\":null,"
                              "\"at\":\"2026-11-23T03:03:10.123Z\",\"never\":null,\"empty\":[],"
                              "\"list\":[1,{},[\"x\",null]],\"key \\\"quoted\\\"\":1}");
    free(text);
}

/* jansson values go in as jansson dumps them, defaults where there is none. */
static void test_embedded_json(void **state)
{
    (void)state;
    json_t *payload =
        json_loads("{\"a\":[1,2.5,\"\\u0000x\"],\"b\":{\"c\":null}}", JSON_ALLOW_NUL, NULL);
    assert_non_null(payload);
    json_t *str = json_string("just a string");
    struct json_writer w;
    json_writer_init(&w, NULL, 0); /* no buffer at all to start with */
    json_writer_array_begin(&w);
    json_writer_json(&w, payload, "{}");
    json_writer_json(&w, NULL, "{}");
    json_writer_json(&w, NULL, "[]");
    json_writer_json(&w, NULL, "null");
    json_writer_json(&w, str, "null");
    json_writer_array_end(&w);
    char *text = json_writer_finish(&w, NULL);
    assert_non_null(text);
    assert_string_equal(text, "[{\"a\":[1,2.5,\"\\u0000x\"],\"b\":{\"c\":null}},{},[],null,"
                              "\"just a string\"]");
    free(text);
    /* A large value grows the buffer and is dumped again into it. */
    json_t *big = json_array();
    for (int i = 0; i < 5000; i++)
        json_array_append_new(big, json_integer(i));
    char stack[64];
    json_writer_init(&w, stack, sizeof(stack));
    json_writer_object_begin(&w);
    json_writer_key(&w, "big");
    json_writer_json(&w, big, "[]");
    json_writer_object_end(&w);
    text = json_writer_finish(&w, NULL);
    assert_non_null(text);
    json_t *back = tu_json(text);
    assert_true(json_equal(json_object_get(back, "big"), big));
    json_decref(back);
    free(text);
    json_decref(big);
    json_decref(payload);
    json_decref(str);
}

/* Text that is JSON already goes in as it is, with the separators around it. */
static void test_raw_text(void **state)
{
    (void)state;
    char stack[8]; /* too small: the raw text grows the buffer */
    struct json_writer w;
    json_writer_init(&w, stack, sizeof(stack));
    json_writer_object_begin(&w);
    json_writer_key(&w, "payload");
    json_writer_raw(&w, "{\"customer\":42,\"tags\":[\"a\",\"b\"]}", "{}");
    json_writer_key(&w, "none");
    json_writer_raw(&w, NULL, "{}");
    json_writer_key(&w, "list");
    json_writer_array_begin(&w);
    json_writer_raw(&w, "1", "null");
    json_writer_raw(&w, NULL, "null");
    json_writer_raw(&w, "\"x\"", "null");
    json_writer_array_end(&w);
    json_writer_object_end(&w);
    char *text = json_writer_finish(&w, NULL);
    assert_non_null(text);
    assert_string_equal(text, "{\"payload\":{\"customer\":42,\"tags\":[\"a\",\"b\"]},"
                              "\"none\":{},\"list\":[1,null,\"x\"]}");
    free(text);
}

/* Nesting past JSON_WRITER_DEPTH_MAX fails the whole text instead of writing a wrong one. */
static void test_too_deep_fails(void **state)
{
    (void)state;
    struct json_writer w;
    json_writer_init(&w, NULL, 0);
    for (int i = 0; i <= JSON_WRITER_DEPTH_MAX; i++)
        json_writer_array_begin(&w);
    for (int i = 0; i <= JSON_WRITER_DEPTH_MAX; i++)
        json_writer_array_end(&w);
    assert_null(json_writer_finish(&w, NULL));
    /* Exactly JSON_WRITER_DEPTH_MAX is fine. */
    json_writer_init(&w, NULL, 0);
    for (int i = 0; i < JSON_WRITER_DEPTH_MAX; i++)
        json_writer_array_begin(&w);
    for (int i = 0; i < JSON_WRITER_DEPTH_MAX; i++)
        json_writer_array_end(&w);
    char *text = json_writer_finish(&w, NULL);
    assert_non_null(text);
    assert_int_equal(strlen(text), 2 * JSON_WRITER_DEPTH_MAX);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strings_like_jansson),
        cmocka_unit_test(test_invalid_utf8_becomes_replacement),
        cmocka_unit_test(test_values_and_nesting),
        cmocka_unit_test(test_embedded_json),
        cmocka_unit_test(test_raw_text),
        cmocka_unit_test(test_too_deep_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
