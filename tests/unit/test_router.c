/*
 * test_router.c - path and method matching (src/http/router.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "http/router.h"
#include "test_util.h"

static const struct route routes[] = {
    {"GET", "/v1/jobs", 0, NULL},                     /* 0 */
    {"POST", "/v1/jobs", 0, NULL},                    /* 1 */
    {"GET", "/v1/jobs/:id", 0, NULL},                 /* 2 */
    {"POST", "/v1/jobs/:id/cancel", 0, NULL},         /* 3 */
    {"GET", "/v1/jobs/:id/events", 0, NULL},          /* 4 */
    {"GET", "/v1/queues/:name", 0, NULL},             /* 5 */
    {"PUT", "/v1/queues/:name", 0, NULL},             /* 6 */
    {"GET", "/v1/jobs/:id/artifacts/:name", 0, NULL}, /* 7 */
    {"PUT", "/v1/jobs/:id/artifacts/:name", 0, NULL}, /* 8 */
    {"GET", "/healthz", 0, NULL},                     /* 9 */
    {"GET", "/", 0, NULL},                            /* 10 */
    {"POST", "/v1/queues/:queue/claim", 0, NULL},     /* 11 */
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

/* Params with a guard row after the last one the router may use. */
struct params {
    char p[HTTP_MAX_PARAMS][ROUTER_PARAM_MAX + 1];
    char guard[ROUTER_PARAM_MAX + 1];
};

static void params_reset(struct params *ps)
{
    memset(ps, 0x5a, sizeof(*ps));
}

static void assert_guard(const struct params *ps)
{
    for (size_t i = 0; i < sizeof(ps->guard); i++)
        assert_int_equal((unsigned char)ps->guard[i], 0x5a);
}

static enum router_match find(const char *method, const char *path, const struct route **r,
                              struct params *ps)
{
    params_reset(ps);
    *r = NULL;
    enum router_match m = router_find(routes, N_ROUTES, method, path, r, ps->p);
    assert_guard(ps);
    return m;
}

static void test_literal(void **state)
{
    (void)state;
    struct params ps;
    const struct route *r;
    assert_int_equal(find("GET", "/v1/jobs", &r, &ps), ROUTER_FOUND);
    assert_ptr_equal(r, &routes[0]);
    assert_int_equal(find("POST", "/v1/jobs", &r, &ps), ROUTER_FOUND);
    assert_ptr_equal(r, &routes[1]);
    assert_int_equal(find("GET", "/healthz", &r, &ps), ROUTER_FOUND);
    assert_ptr_equal(r, &routes[9]);
    assert_int_equal(find("GET", "/", &r, &ps), ROUTER_FOUND);
    assert_ptr_equal(r, &routes[10]);
}

static void test_params(void **state)
{
    (void)state;
    struct params ps;
    const struct route *r;
    assert_int_equal(find("GET", "/v1/jobs/01ARYZ6S41TSV4RRFFQ69G5FAV", &r, &ps), ROUTER_FOUND);
    assert_ptr_equal(r, &routes[2]);
    assert_string_equal(ps.p[0], "01ARYZ6S41TSV4RRFFQ69G5FAV");

    assert_int_equal(find("POST", "/v1/jobs/abc/cancel", &r, &ps), ROUTER_FOUND);
    assert_ptr_equal(r, &routes[3]);
    assert_string_equal(ps.p[0], "abc");

    assert_int_equal(find("GET", "/v1/jobs/J1/events", &r, &ps), ROUTER_FOUND);
    assert_ptr_equal(r, &routes[4]);
    assert_string_equal(ps.p[0], "J1");

    /* Two captures, in the order they appear. */
    assert_int_equal(find("PUT", "/v1/jobs/J7/artifacts/log.txt", &r, &ps), ROUTER_FOUND);
    assert_ptr_equal(r, &routes[8]);
    assert_string_equal(ps.p[0], "J7");
    assert_string_equal(ps.p[1], "log.txt");

    assert_int_equal(find("POST", "/v1/queues/provision/claim", &r, &ps), ROUTER_FOUND);
    assert_ptr_equal(r, &routes[11]);
    assert_string_equal(ps.p[0], "provision");

    /* A capture is one segment: a literal in the pattern still has to match. */
    assert_int_equal(find("POST", "/v1/queues/provision/clam", &r, &ps), ROUTER_NO_PATH);
}

static void test_not_found(void **state)
{
    (void)state;
    struct params ps;
    const struct route *r;
    const char *paths[] = {
        "/v1/nope",
        "/v1",
        "/v1/job",
        "/v1/jobsx",
        "/v1/jobs/x/nope",
        "/v1/jobs/x/cancel/extra",
        "/healthz/x",
        "/healthzz",
        "",
        "v1/jobs",
        "/V1/JOBS",
        "/v1/jobs/x/artifacts",
        "/v1/jobs/x/artifacts/a/b",
    };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        enum router_match m = find("GET", paths[i], &r, &ps);
        if (m != ROUTER_NO_PATH)
            fail_msg("GET '%s': %d, want ROUTER_NO_PATH", paths[i], m);
        /* Any method: still 404, never 405. */
        assert_int_equal(find("DELETE", paths[i], &r, &ps), ROUTER_NO_PATH);
    }
}

static void test_method_not_allowed(void **state)
{
    (void)state;
    struct params ps;
    const struct route *r;
    assert_int_equal(find("DELETE", "/v1/jobs", &r, &ps), ROUTER_NO_METHOD);
    assert_int_equal(find("PUT", "/v1/jobs", &r, &ps), ROUTER_NO_METHOD);
    assert_int_equal(find("GET", "/v1/jobs/x/cancel", &r, &ps), ROUTER_NO_METHOD);
    assert_int_equal(find("POST", "/v1/queues/q", &r, &ps), ROUTER_NO_METHOD);
    assert_int_equal(find("POST", "/healthz", &r, &ps), ROUTER_NO_METHOD);
    /* Methods are case-sensitive (RFC 9110 §9.1). */
    assert_int_equal(find("get", "/v1/jobs", &r, &ps), ROUTER_NO_METHOD);
    assert_int_equal(find("", "/v1/jobs", &r, &ps), ROUTER_NO_METHOD);
}

static void test_allow_list(void **state)
{
    (void)state;
    char out[128];
    router_allowed_methods(routes, N_ROUTES, "/v1/jobs", out, sizeof(out));
    assert_string_equal(out, "GET, POST");
    router_allowed_methods(routes, N_ROUTES, "/v1/jobs/x/cancel", out, sizeof(out));
    assert_string_equal(out, "POST");
    router_allowed_methods(routes, N_ROUTES, "/v1/queues/provision", out, sizeof(out));
    assert_string_equal(out, "GET, PUT");
    router_allowed_methods(routes, N_ROUTES, "/v1/jobs/a/artifacts/b", out, sizeof(out));
    assert_string_equal(out, "GET, PUT");
    router_allowed_methods(routes, N_ROUTES, "/v1/jobs/x", out, sizeof(out));
    assert_string_equal(out, "GET");
    memset(out, 'x', sizeof(out));
    router_allowed_methods(routes, N_ROUTES, "/nowhere", out, sizeof(out));
    assert_string_equal(out, "");
}

/* A small buffer is cut short, stays terminated, and nothing past it is written. */
static void test_allow_list_truncated(void **state)
{
    (void)state;
    for (size_t len = 1; len <= 10; len++) {
        struct {
            char out[10];
            char guard[16];
        } b;
        memset(&b, 0x5a, sizeof(b));
        router_allowed_methods(routes, N_ROUTES, "/v1/jobs", b.out, len);
        assert_true(strlen(b.out) < len);
        assert_memory_equal(b.out, "GET, POST", strlen(b.out));
        for (size_t i = len; i < sizeof(b.out); i++)
            assert_int_equal((unsigned char)b.out[i], 0x5a);
        for (size_t i = 0; i < sizeof(b.guard); i++)
            assert_int_equal((unsigned char)b.guard[i], 0x5a);
    }
}

static void test_trailing_slash(void **state)
{
    (void)state;
    struct params ps;
    const struct route *r;
    /* Neither the literal nor an empty capture. */
    assert_int_equal(find("GET", "/v1/jobs/", &r, &ps), ROUTER_NO_PATH);
    assert_int_equal(find("GET", "/healthz/", &r, &ps), ROUTER_NO_PATH);
    assert_int_equal(find("GET", "/v1/jobs/x/", &r, &ps), ROUTER_NO_PATH);
    assert_int_equal(find("POST", "/v1/jobs/x/cancel/", &r, &ps), ROUTER_NO_PATH);
    /* Empty segments never match a capture or a literal. */
    assert_int_equal(find("POST", "/v1/jobs//cancel", &r, &ps), ROUTER_NO_PATH);
    assert_int_equal(find("GET", "//v1/jobs", &r, &ps), ROUTER_NO_PATH);
    assert_int_equal(find("GET", "/v1//jobs", &r, &ps), ROUTER_NO_PATH);
    assert_int_equal(find("GET", "//", &r, &ps), ROUTER_NO_PATH);
}

static void test_param_length(void **state)
{
    (void)state;
    struct params ps;
    const struct route *r;
    char path[1100];

    char *id = tu_repeat('a', ROUTER_PARAM_MAX);
    snprintf(path, sizeof(path), "/v1/jobs/%s", id);
    assert_int_equal(find("GET", path, &r, &ps), ROUTER_FOUND);
    assert_string_equal(ps.p[0], id);
    free(id);

    /* One byte over, decoded: the route still matches (so the handler can
     * answer 400 for its kind of id), with an empty capture. */
    id = tu_repeat('a', ROUTER_PARAM_MAX + 1);
    snprintf(path, sizeof(path), "/v1/jobs/%s", id);
    assert_int_equal(find("GET", path, &r, &ps), ROUTER_FOUND);
    assert_string_equal(ps.p[0], "");
    free(id);

    /* Escapes count once decoded: 200 "%2F" (600 bytes) is a 200-byte capture. */
    char big[1024];
    size_t n = 0;
    for (int i = 0; i < ROUTER_PARAM_MAX; i++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "%%2F");
    snprintf(path, sizeof(path), "/v1/jobs/%s", big);
    assert_int_equal(find("GET", path, &r, &ps), ROUTER_FOUND);
    assert_int_equal(strlen(ps.p[0]), ROUTER_PARAM_MAX);

    /* Over the escaped segment limit: no route matches it at all. */
    id = tu_repeat('a', ROUTER_SEGMENT_MAX + 1);
    char longpath[ROUTER_SEGMENT_MAX + 64];
    snprintf(longpath, sizeof(longpath), "/v1/jobs/%s", id);
    assert_int_equal(find("GET", longpath, &r, &ps), ROUTER_NO_PATH);
    free(id);

    /* Second capture at the limit. */
    char *name = tu_repeat('n', ROUTER_PARAM_MAX);
    snprintf(path, sizeof(path), "/v1/jobs/J/artifacts/%s", name);
    assert_int_equal(find("GET", path, &r, &ps), ROUTER_FOUND);
    assert_string_equal(ps.p[0], "J");
    assert_string_equal(ps.p[1], name);
    free(name);
}

/* A pattern with more captures than HTTP_MAX_PARAMS can never write past the params array. */
static void test_too_many_captures(void **state)
{
    (void)state;
    static const struct route three[] = {{"GET", "/a/:x/:y/:z", 0, NULL}};
    struct params ps;
    params_reset(&ps);
    const struct route *r = NULL;
    enum router_match m = router_find(three, 1, "GET", "/a/1/2/3", &r, ps.p);
    assert_int_not_equal(m, ROUTER_FOUND);
    assert_guard(&ps);
}

static void test_first_match_wins(void **state)
{
    (void)state;
    /* When two routes fit, the earlier one in the table is chosen. */
    static const struct route t[] = {
        {"GET", "/v1/jobs/stats", 0, NULL},
        {"GET", "/v1/jobs/:id", 0, NULL},
    };
    struct params ps;
    params_reset(&ps);
    const struct route *r = NULL;
    assert_int_equal(router_find(t, 2, "GET", "/v1/jobs/stats", &r, ps.p), ROUTER_FOUND);
    assert_ptr_equal(r, &t[0]);
    assert_int_equal(router_find(t, 2, "GET", "/v1/jobs/other", &r, ps.p), ROUTER_FOUND);
    assert_ptr_equal(r, &t[1]);
    assert_string_equal(ps.p[0], "other");
    /* An empty table knows no path. */
    assert_int_equal(router_find(t, 0, "GET", "/v1/jobs/stats", &r, ps.p), ROUTER_NO_PATH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literal),           cmocka_unit_test(test_params),
        cmocka_unit_test(test_not_found),         cmocka_unit_test(test_method_not_allowed),
        cmocka_unit_test(test_allow_list),        cmocka_unit_test(test_allow_list_truncated),
        cmocka_unit_test(test_trailing_slash),    cmocka_unit_test(test_param_length),
        cmocka_unit_test(test_too_many_captures), cmocka_unit_test(test_first_match_wins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
