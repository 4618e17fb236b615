/*
 * health.c - liveness and readiness probes (open without a token).
 */
#include "api/api.h"

void api_healthz(struct http_request *req)
{
    http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

void api_readyz(struct http_request *req)
{
    if (http_draining(http_server_of(req))) {
        http_reply_json(req, 503, json_pack("{s:s}", "status", "draining"));
        return;
    }
    if (store_ping(api_app(req)->store) < 0) {
        http_reply_json(req, 503, json_pack("{s:s}", "status", "store unavailable"));
        return;
    }
    http_reply_json(req, 200, json_pack("{s:s}", "status", "ready"));
}
