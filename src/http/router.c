/*
 * router.c - segment-by-segment matching of paths against patterns.
 */
#include "http/router.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <microhttpd.h>

/* Match path against pattern; captures go to params when not NULL. */
static bool match(const char *pattern, const char *path, char params[][ROUTER_PARAM_MAX + 1])
{
    int n_params = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p != '/' || *s != '/')
            return false;
        p++;
        s++;
        const char *pend = strchrnul(p, '/');
        const char *send = strchrnul(s, '/');
        size_t plen = (size_t)(pend - p), slen = (size_t)(send - s);
        if (*p == ':') {
            if (slen == 0 || slen > ROUTER_SEGMENT_MAX || n_params == HTTP_MAX_PARAMS)
                return false;
            /* Paths arrive still escaped, so "%2F" stays inside its segment;
             * the capture is decoded here. A decoded NUL cannot be a name:
             * such a path matches nothing (decoded even without params, so
             * routing and capturing agree). A capture that decodes to more
             * than ROUTER_PARAM_MAX bytes still matches, as "", which every
             * handler refuses with a 400 naming the parameter's kind. */
            char scratch[ROUTER_SEGMENT_MAX + 1];
            memcpy(scratch, s, slen);
            scratch[slen] = '\0';
            size_t decoded = MHD_http_unescape(scratch);
            if (decoded != strlen(scratch))
                return false;
            if (params) {
                size_t keep = decoded <= ROUTER_PARAM_MAX ? decoded : 0;
                memcpy(params[n_params], scratch, keep);
                params[n_params][keep] = '\0';
            }
            n_params++;
        } else if (plen != slen || memcmp(p, s, plen) != 0) {
            return false;
        }
        p = pend;
        s = send;
    }
    return *p == '\0' && *s == '\0';
}

enum router_match router_find(const struct route *routes, size_t n, const char *method,
                              const char *path, const struct route **route,
                              char params[][ROUTER_PARAM_MAX + 1])
{
    bool path_known = false;
    for (size_t i = 0; i < n; i++) {
        if (!match(routes[i].pattern, path, NULL))
            continue;
        path_known = true;
        if (strcmp(routes[i].method, method) == 0) {
            match(routes[i].pattern, path, params);
            *route = &routes[i];
            return ROUTER_FOUND;
        }
    }
    return path_known ? ROUTER_NO_METHOD : ROUTER_NO_PATH;
}

void router_allowed_methods(const struct route *routes, size_t n, const char *path, char *out,
                            size_t out_len)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && len < out_len; i++) {
        if (!match(routes[i].pattern, path, NULL))
            continue;
        len +=
            (size_t)snprintf(out + len, out_len - len, "%s%s", len ? ", " : "", routes[i].method);
    }
}
