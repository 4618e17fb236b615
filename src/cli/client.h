/*
 * client.h - the HTTP client every drover command uses to talk to a server.
 *
 * A thin layer on one libcurl easy handle (so consecutive requests, e.g. the
 * pages of `list --all`, reuse the connection): JSON request bodies, parsed
 * JSON responses, a bearer token, connect and total timeouts, and a hard cap
 * on what the server may send back. Server error bodies
 * {"error": CODE, "message": TEXT} become one printable line in an errmsg.
 *
 * Not thread-safe: one struct client per thread, and since client_init()
 * calls curl_global_init(), make the first client before starting threads.
 */
#ifndef DROVER_CLI_CLIENT_H
#define DROVER_CLI_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>
#include <jansson.h>

#include "error.h"

#define CLIENT_DEFAULT_URL        "http://127.0.0.1:8080"
#define CLIENT_MAX_RESPONSE_BYTES (16L * 1024 * 1024) /* a bigger response is an error */
#define CLIENT_MAX_TOKEN_BYTES    4096
#define CLIENT_MAX_URL_BYTES      2048 /* the base URL given by the user */
#define CLIENT_MAX_PATH_BYTES     4096 /* path and query of one request */
#define CLIENT_CONNECT_TIMEOUT_MS 10000L
#define CLIENT_TOTAL_TIMEOUT_MS   60000L
#define CLIENT_MAX_RETRY_AFTER_S  86400L /* a longer Retry-After reads as this */

struct client {
    char *base_url;          /* owned; "http(s)://host[:port][/prefix]", no trailing '/' */
    char *display_url;       /* owned; base_url without any "user:password@", for messages */
    char *auth_header;       /* owned; "Authorization: Bearer ..." or NULL. Never printed */
    long connect_timeout_ms; /* callers may change these between requests; 0 = none */
    long total_timeout_ms;
    CURL *curl; /* owned */
};

/* What came back from one request. Release with client_response_release(). */
struct client_response {
    long status;  /* HTTP status; 0 when no response arrived */
    char *body;   /* owned, NUL-terminated (NULL when empty) */
    size_t len;   /* bytes in body, without the NUL */
    json_t *json; /* owned; the parsed body when it is a JSON object, else NULL */
    /*
     * The answer's Retry-After in seconds (delta-seconds, or an HTTP-date
     * turned into seconds from now, 0 when past), capped at
     * CLIENT_MAX_RETRY_AFTER_S; -1 when there was none.
     */
    long retry_after_s;
};

/*
 * A request body sent as given, with extra header lines: for callers that
 * sign the exact bytes they send (drover callback). Borrowed, not copied.
 */
struct client_raw {
    const char *body; /* body_len bytes, any content; NULL for none */
    size_t body_len;
    const char *content_type;   /* "application/json"; NULL for none */
    const char *const *headers; /* "Name: value" lines, NULL-terminated; NULL for none */
};

/*
 * A request path built into a fixed buffer: segments and query values are
 * percent-encoded, so an id typed by a user cannot escape its path segment.
 * Overflowing the buffer is remembered and reported by client_request().
 */
struct client_path {
    char buf[CLIENT_MAX_PATH_BYTES];
    size_t len;
    bool has_query;
    bool overflow;
};

/*
 * Set up c for the server at url with token (NULL or "" for none). Both are
 * copied. Fails with -DRV_EBAD_REQUEST when url is not http(s):// or too long,
 * or the token is too long or holds control characters or spaces;
 * -DRV_ENOMEM otherwise. On failure c needs no release.
 */
int client_init(struct client *c, const char *url, const char *token, struct errmsg *err);

/* Free what c owns (wiping the token copy); c itself is the caller's. */
void client_release(struct client *c);

/* Start a path: prefix is used verbatim ("/v1/jobs"). */
void client_path_init(struct client_path *p, const char *prefix);

/* Append "/" and segment, percent-encoded. */
void client_path_segment(struct client_path *p, const char *segment);

/* Append "?name=value" or "&name=value", value percent-encoded; nothing when value is NULL. */
void client_path_query(struct client_path *p, const char *name, const char *value);

/*
 * Send method (GET, POST, PUT, ...) to base_url + path, with body serialized
 * as the JSON request body when not NULL (body is not consumed).
 *
 * OUT resp: always filled (release it even on failure), status 0 when no
 * response arrived.
 *
 * Returns 0 for a 2xx response whose body is a JSON object (in resp->json).
 * Otherwise a negative code and err->text set to one printable line:
 *   - the server answered 4xx/5xx: the code for that status (-DRV_ENOT_FOUND,
 *     -DRV_ECONFLICT for any 409, ...) and "CODE: MESSAGE" from its error body;
 *   - no answer (refused, timeout, DNS): -DRV_EUNAVAILABLE;
 *   - a response over CLIENT_MAX_RESPONSE_BYTES: -DRV_ETOO_LARGE;
 *   - a 2xx that is not a JSON object, or any other status: -DRV_EINTERNAL;
 *   - out of memory, or path overflowed: -DRV_ENOMEM / -DRV_EBAD_REQUEST.
 */
int client_request(struct client *c, const char *method, const struct client_path *path,
                   const json_t *body, struct client_response *resp, struct errmsg *err);

/*
 * Like client_request(), with raw's bytes as the body (for a method other
 * than GET), raw's content type and raw's extra headers, each a single line
 * (one holding CR or LF fails with -DRV_EBAD_REQUEST before anything is sent).
 */
int client_request_raw(struct client *c, const char *method, const struct client_path *path,
                       const struct client_raw *raw, struct client_response *resp,
                       struct errmsg *err);

/* Free what resp owns and zero it. */
void client_response_release(struct client_response *resp);

#endif
