/*
 * router.h - match a method and path against the route table.
 *
 * Patterns are literal segments and ':name' captures ("/v1/jobs/:id/cancel").
 * A capture matches one non-empty segment of at most ROUTER_PARAM_MAX bytes.
 * Paths are matched still percent-encoded (so an encoded '/' stays inside
 * its segment); captures are decoded.
 */
#ifndef DROVER_ROUTER_H
#define DROVER_ROUTER_H

#include <stddef.h>

#include "http/http.h"

#define ROUTER_PARAM_MAX   200                    /* a capture, decoded */
#define ROUTER_SEGMENT_MAX (ROUTER_PARAM_MAX * 3) /* a capture, still %-escaped */

enum router_match {
    ROUTER_FOUND,
    ROUTER_NO_PATH,   /* 404 */
    ROUTER_NO_METHOD, /* 405: the path exists with other methods */
};

/* On ROUTER_FOUND, *route and params (HTTP_MAX_PARAMS of ROUTER_PARAM_MAX + 1) are set. */
enum router_match router_find(const struct route *routes, size_t n, const char *method,
                              const char *path, const struct route **route,
                              char params[][ROUTER_PARAM_MAX + 1]);

/* "GET, PUT": the methods that path allows. */
void router_allowed_methods(const struct route *routes, size_t n, const char *path, char *out,
                            size_t out_len);

#endif
