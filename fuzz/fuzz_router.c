/*
 * fuzz_router.c - request paths: router_find() and router_allowed_methods()
 * over drover's real route table (src/api/api.c).
 *
 * The first byte picks the method (byte % 6 over GET, POST, PUT, DELETE,
 * PATCH, HEAD: '0' is GET, '1' POST, ... '5' HEAD, which keeps the seed
 * files readable); the rest, up to a NUL, is the path as the server gets it,
 * still percent-encoded.
 *
 * Invariants: a found route has that method and one capture per ':'
 * segment, each the whole segment decoded, non-empty and without NUL
 * (router.h), and nothing is written past the params; a path answered 405
 * lists its methods, one answered 404 lists none; a short buffer for the
 * list stays terminated.
 */
#include <microhttpd.h>

#include "api/api.h"
#include "fuzz.h"
#include "http/router.h"

static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"};
#define N_METHODS (sizeof(methods) / sizeof(methods[0]))

/* The params with a guard row after them, as in tests/unit/test_router.c. */
struct params {
    char p[HTTP_MAX_PARAMS][ROUTER_PARAM_MAX + 1];
    char guard[ROUTER_PARAM_MAX + 1];
};
#define FILL 0x5a

/*
 * Check the captures of a route that matched path: one per ':' segment of
 * the pattern, each the whole of its path segment decoded, so a segment that
 * decodes to text with a NUL in it cannot have matched.
 */
static void check_captures(const struct route *route, const char *path,
                           char params[][ROUTER_PARAM_MAX + 1])
{
    const char *p = route->pattern, *s = path;
    int i = 0;
    while (*p && *s) {
        p++;
        s++;
        const char *pend = strchrnul(p, '/'), *send = strchrnul(s, '/');
        if (*p == ':') {
            size_t raw = (size_t)(send - s);
            FUZZ_CHECK(raw >= 1 && raw <= ROUTER_SEGMENT_MAX,
                       "'%s' matched %s: segment of %zu bytes", path, route->pattern, raw);
            char decoded[ROUTER_SEGMENT_MAX + 1];
            memcpy(decoded, s, raw);
            decoded[raw] = '\0';
            size_t len = MHD_http_unescape(decoded);
            /* A capture longer than ROUTER_PARAM_MAX once decoded comes back empty. */
            size_t want = len <= ROUTER_PARAM_MAX ? len : 0;
            FUZZ_CHECK(len >= 1 && strlen(params[i]) == want &&
                           memcmp(params[i], decoded, want) == 0,
                       "'%s' matched %s: capture %d is '%s', the segment decodes to %zu bytes",
                       path, route->pattern, i, params[i], len);
            i++;
        }
        p = pend;
        s = send;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *method = methods[data[0] % N_METHODS];
    char *path = fuzz_cstring(data + 1, size - 1);

    struct params ps;
    memset(&ps, FILL, sizeof(ps));
    const struct route *route = NULL;
    enum router_match m = router_find(api_routes, api_n_routes, method, path, &route, ps.p);
    for (size_t i = 0; i < sizeof(ps.guard); i++)
        FUZZ_CHECK((unsigned char)ps.guard[i] == FILL, "params overflowed for '%s'", path);

    if (m == ROUTER_FOUND) {
        FUZZ_CHECK(route >= api_routes && route < api_routes + api_n_routes, "route outside table");
        FUZZ_CHECK(strcmp(route->method, method) == 0, "%s '%s' matched %s %s", method, path,
                   route->method, route->pattern);
        check_captures(route, path, ps.p);
    } else {
        FUZZ_CHECK(m == ROUTER_NO_PATH || m == ROUTER_NO_METHOD, "result %d", (int)m);
    }

    char allow[128];
    router_allowed_methods(api_routes, api_n_routes, path, allow, sizeof(allow));
    FUZZ_CHECK(strlen(allow) < sizeof(allow), "allowed methods overflowed");
    if (m == ROUTER_NO_PATH)
        FUZZ_CHECK(allow[0] == '\0', "404 for '%s' yet it allows '%s'", path, allow);
    else
        FUZZ_CHECK(allow[0] != '\0', "'%s' is known yet allows nothing", path);

    /* A short buffer truncates the list and stays terminated. */
    char tiny[6];
    router_allowed_methods(api_routes, api_n_routes, path, tiny, sizeof(tiny));
    FUZZ_CHECK(strlen(tiny) < sizeof(tiny), "short allowed-methods buffer overflowed");

    free(path);
    return 0;
}
