/*
 * client.c - drover's HTTP client on the libcurl easy interface.
 *
 * One easy handle per client, reset before each request (curl keeps its live
 * connections across a reset). Only http and https are allowed, redirects are
 * not followed, and the response body is collected into a buffer capped at
 * CLIENT_MAX_RESPONSE_BYTES. The token lives only in the Authorization header
 * string; it is never part of a message.
 */
#include "cli/client.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

#define CLIENT_USER_AGENT "drover-cli"

/* The response body as it arrives; growth stops at max. */
struct client_buf {
    char *data;
    size_t len;
    size_t alloc;
    size_t max;
    bool too_big;
    bool nomem;
};

static size_t client_on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct client_buf *b = userdata;
    size_t n = size * nmemb;

    if (n > b->max - b->len) {
        b->too_big = true;
        return 0; /* makes curl fail the transfer with CURLE_WRITE_ERROR */
    }
    if (b->len + n + 1 > b->alloc) {
        size_t want = b->alloc ? b->alloc : 4096;
        while (want < b->len + n + 1)
            want *= 2;
        if (want > b->max + 1)
            want = b->max + 1;
        char *grown = realloc(b->data, want);
        if (!grown) {
            b->nomem = true;
            return 0;
        }
        b->data = grown;
        b->alloc = want;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* A token goes into a header line: refuse anything that could break it. */
static bool client_token_ok(const char *token)
{
    for (const unsigned char *p = (const unsigned char *)token; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return false;
    return true;
}

/*
 * The url as it may appear in messages: without a "user:password@" part,
 * which is as secret as a token.
 */
static char *client_display_url(const char *url, size_t len)
{
    const char *host = strstr(url, "://") + 3; /* client_init checked the scheme */
    size_t authority = strcspn(host, "/?#");
    const char *at = memrchr(host, '@', authority);
    if (!at)
        return strndup(url, len);

    size_t scheme = (size_t)(host - url), rest = len - (size_t)(at + 1 - url);
    char *out = malloc(scheme + rest + 1);
    if (out) {
        memcpy(out, url, scheme);
        memcpy(out + scheme, at + 1, rest);
        out[scheme + rest] = '\0';
    }
    return out;
}

int client_init(struct client *c, const char *url, const char *token, struct errmsg *err)
{
    int rc = 0;

    memset(c, 0, sizeof(*c));
    c->connect_timeout_ms = CLIENT_CONNECT_TIMEOUT_MS;
    c->total_timeout_ms = CLIENT_TOTAL_TIMEOUT_MS;

    if (!url || !*url)
        url = CLIENT_DEFAULT_URL;
    size_t url_len = strlen(url);
    if (url_len > CLIENT_MAX_URL_BYTES)
        return errmsg_set(err, -DRV_EBAD_REQUEST, "server url is longer than %d bytes",
                          CLIENT_MAX_URL_BYTES);
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return errmsg_set(err, -DRV_EBAD_REQUEST, "server url must start with http:// or https://");
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return errmsg_set(err, -DRV_EBAD_REQUEST,
                              "server url holds a space or control character");

    if (token && *token) {
        size_t token_len = strlen(token);
        if (token_len > CLIENT_MAX_TOKEN_BYTES)
            return errmsg_set(err, -DRV_EBAD_REQUEST, "token is longer than %d bytes",
                              CLIENT_MAX_TOKEN_BYTES);
        if (!client_token_ok(token))
            return errmsg_set(err, -DRV_EBAD_REQUEST, "token holds a space or control character");
        static const char prefix[] = "Authorization: Bearer ";
        c->auth_header = malloc(sizeof(prefix) + token_len);
        if (!c->auth_header) {
            rc = errmsg_set(err, -DRV_ENOMEM, "out of memory");
            goto out;
        }
        memcpy(c->auth_header, prefix, sizeof(prefix) - 1);
        memcpy(c->auth_header + sizeof(prefix) - 1, token, token_len + 1);
    }

    /* Drop trailing slashes: paths start with one. */
    while (url_len > 0 && url[url_len - 1] == '/')
        url_len--;
    c->base_url = strndup(url, url_len);
    c->display_url = client_display_url(url, url_len);
    if (!c->base_url || !c->display_url) {
        rc = errmsg_set(err, -DRV_ENOMEM, "out of memory");
        goto out;
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        rc = errmsg_set(err, -DRV_EINTERNAL, "cannot initialize libcurl");
        goto out;
    }
    c->curl = curl_easy_init();
    if (!c->curl) {
        curl_global_cleanup();
        rc = errmsg_set(err, -DRV_ENOMEM, "cannot initialize libcurl");
        goto out;
    }

out:
    if (rc < 0) {
        if (c->auth_header)
            explicit_bzero(c->auth_header, strlen(c->auth_header));
        free(c->auth_header);
        free(c->base_url);
        free(c->display_url);
        memset(c, 0, sizeof(*c));
    }
    return rc;
}

void client_release(struct client *c)
{
    if (c->curl) {
        curl_easy_cleanup(c->curl);
        curl_global_cleanup();
    }
    if (c->auth_header)
        explicit_bzero(c->auth_header, strlen(c->auth_header));
    free(c->auth_header);
    free(c->base_url);
    free(c->display_url);
    memset(c, 0, sizeof(*c));
}

void client_path_init(struct client_path *p, const char *prefix)
{
    p->len = 0;
    p->has_query = false;
    p->overflow = false;
    p->buf[0] = '\0';
    size_t n = strlen(prefix);
    if (n >= sizeof(p->buf)) {
        p->overflow = true;
        return;
    }
    memcpy(p->buf, prefix, n + 1);
    p->len = n;
}

static void client_path_putc(struct client_path *p, char ch)
{
    if (p->overflow || p->len + 1 >= sizeof(p->buf)) {
        p->overflow = true;
        return;
    }
    p->buf[p->len++] = ch;
    p->buf[p->len] = '\0';
}

/* RFC 3986 unreserved characters pass; every other byte becomes %XX. */
static void client_path_escape(struct client_path *p, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";

    for (const unsigned char *u = (const unsigned char *)s; *u; u++) {
        if (isalnum(*u) || *u == '-' || *u == '.' || *u == '_' || *u == '~') {
            client_path_putc(p, (char)*u);
        } else {
            client_path_putc(p, '%');
            client_path_putc(p, hex[*u >> 4]);
            client_path_putc(p, hex[*u & 0xf]);
        }
    }
}

void client_path_segment(struct client_path *p, const char *segment)
{
    client_path_putc(p, '/');
    client_path_escape(p, segment);
}

void client_path_query(struct client_path *p, const char *name, const char *value)
{
    if (!value)
        return;
    client_path_putc(p, p->has_query ? '&' : '?');
    p->has_query = true;
    client_path_escape(p, name);
    client_path_putc(p, '=');
    client_path_escape(p, value);
}

void client_response_release(struct client_response *resp)
{
    free(resp->body);
    json_decref(resp->json);
    memset(resp, 0, sizeof(*resp));
}

/*
 * Copy src into dst (of size n) as one printable line: control characters
 * (newlines, escape sequences a hostile server could send to a terminal)
 * become spaces.
 */
static void client_copy_line(char *dst, size_t n, const char *src)
{
    size_t i = 0;
    for (; src[i] && i + 1 < n; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (ch < ' ' || ch == 0x7f) ? ' ' : (char)ch;
    }
    dst[i] = '\0';
}

/* The drover code for what the server said: its "error" name when the table
 * has it with this status, else one picked by status alone. */
static int client_code_for(long status, const char *name)
{
    if (name) {
        for (int code = 1; code < DRV__ERROR_COUNT; code++)
            if (err_http_status(-code) == status && strcmp(err_name(-code), name) == 0)
                return -code;
    }
    switch (status) {
    case 401: return -DRV_EUNAUTHORIZED;
    case 403: return -DRV_EFORBIDDEN;
    case 404: return -DRV_ENOT_FOUND;
    case 405: return -DRV_EMETHOD;
    case 409: return -DRV_ECONFLICT;
    case 413: return -DRV_ETOO_LARGE;
    case 415: return -DRV_EMEDIA_TYPE;
    case 431: return -DRV_EHEADERS_TOO_LARGE;
    case 503: return -DRV_EUNAVAILABLE;
    default: return (status >= 400 && status < 500) ? -DRV_EBAD_REQUEST : -DRV_EINTERNAL;
    }
}

/* A 4xx/5xx: turn its {"error","message","field"} body into err. */
static int client_server_error(const struct client_response *resp, struct errmsg *err)
{
    const char *name = NULL, *message = NULL, *field = NULL;
    char line[sizeof(err->text)];

    if (resp->json) {
        name = json_string_value(json_object_get(resp->json, "error"));
        message = json_string_value(json_object_get(resp->json, "message"));
        field = json_string_value(json_object_get(resp->json, "field"));
    }
    int rc = client_code_for(resp->status, name);

    if (name && message && field && !strstr(message, field))
        snprintf(line, sizeof(line), "%s: %s (field '%s')", name, message, field);
    else if (name && message)
        snprintf(line, sizeof(line), "%s: %s", name, message);
    else if (name)
        snprintf(line, sizeof(line), "%s (HTTP %ld)", name, resp->status);
    else
        snprintf(line, sizeof(line), "server answered HTTP %ld", resp->status);
    client_copy_line(err->text, sizeof(err->text), line);
    err->field[0] = '\0';
    if (field)
        client_copy_line(err->field, sizeof(err->field), field);
    return rc;
}

int client_request(struct client *c, const char *method, const struct client_path *path,
                   const json_t *body, struct client_response *resp, struct errmsg *err)
{
    char *body_text = NULL;

    memset(resp, 0, sizeof(*resp));
    resp->retry_after_s = -1;
    if (body && !(body_text = json_dumps(body, JSON_COMPACT)))
        return errmsg_set(err, -DRV_ENOMEM, "out of memory");
    struct client_raw raw = {
        .body = body_text,
        .body_len = body_text ? strlen(body_text) : 0,
        .content_type = body ? "application/json" : NULL,
    };
    int rc = client_request_raw(c, method, path, &raw, resp, err);
    free(body_text);
    return rc;
}

/* Append line to *headers; false when out of memory (*headers is kept either way). */
static bool client_add_header(struct curl_slist **headers, const char *line)
{
    struct curl_slist *grown = curl_slist_append(*headers, line);
    if (!grown)
        return false;
    *headers = grown;
    return true;
}

/* The answer's Retry-After in seconds, or -1 (see struct client_response). */
static long client_retry_after(CURL *h)
{
    struct curl_header *hdr = NULL;

    if (curl_easy_header(h, "Retry-After", 0, CURLH_HEADER, -1, &hdr) != CURLHE_OK || !hdr ||
        !hdr->value)
        return -1;
    /* delta-seconds, or an HTTP-date; 10 digits and more are past the cap anyway. */
    const char *v = hdr->value;
    size_t digits = strspn(v, "0123456789");
    long long seconds;
    if (digits > 0 && v[digits] == '\0') {
        seconds = digits > 9 ? CLIENT_MAX_RETRY_AFTER_S : strtoll(v, NULL, 10);
    } else {
        time_t when = curl_getdate(v, NULL);
        if (when == -1)
            return -1;
        seconds = (long long)when - (long long)time(NULL);
    }
    if (seconds < 0)
        return 0;
    return seconds > CLIENT_MAX_RETRY_AFTER_S ? CLIENT_MAX_RETRY_AFTER_S : (long)seconds;
}

int client_request_raw(struct client *c, const char *method, const struct client_path *path,
                       const struct client_raw *raw, struct client_response *resp,
                       struct errmsg *err)
{
    int rc = 0;
    CURL *h = c->curl;
    char *url = NULL;
    char *content_type = NULL;
    struct curl_slist *headers = NULL;
    struct client_buf buf = {.max = (size_t)CLIENT_MAX_RESPONSE_BYTES};
    char curl_error[CURL_ERROR_SIZE] = "";

    memset(resp, 0, sizeof(*resp));
    resp->retry_after_s = -1;
    if (path->overflow)
        return errmsg_set(err, -DRV_EBAD_REQUEST, "request path is longer than %d bytes",
                          CLIENT_MAX_PATH_BYTES);
    for (const char *const *line = raw->headers; line && *line; line++)
        if (strpbrk(*line, "\r\n"))
            return errmsg_set(err, -DRV_EBAD_REQUEST, "a request header holds a line break");
    if (raw->content_type && strpbrk(raw->content_type, "\r\n"))
        return errmsg_set(err, -DRV_EBAD_REQUEST, "the content type holds a line break");

    size_t url_len = strlen(c->base_url) + path->len + 1;
    url = malloc(url_len);
    if (!url) {
        rc = errmsg_set(err, -DRV_ENOMEM, "out of memory");
        goto out;
    }
    snprintf(url, url_len, "%s%s", c->base_url, path->buf);

    /* "Expect:" (empty) skips the 100-continue round trip curl makes for large bodies. */
    static const char *const fixed_headers[] = {"Accept: application/json", "Expect:"};
    for (size_t i = 0; i < ARRAY_SIZE(fixed_headers); i++)
        if (!client_add_header(&headers, fixed_headers[i]))
            goto nomem;
    if (c->auth_header && !client_add_header(&headers, c->auth_header))
        goto nomem;
    /* Without a body, "Content-Type:" stops curl from claiming a form on a POST. */
    if (raw->content_type) {
        size_t n = sizeof("Content-Type: ") + strlen(raw->content_type);
        if (!(content_type = malloc(n)))
            goto nomem;
        snprintf(content_type, n, "Content-Type: %s", raw->content_type);
    }
    if (!client_add_header(&headers, content_type ? content_type : "Content-Type:"))
        goto nomem;
    for (const char *const *line = raw->headers; line && *line; line++)
        if (!client_add_header(&headers, *line))
            goto nomem;

    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    /* An id of ".." must reach the server as an id, not climb a level. */
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_error);
    curl_easy_setopt(h, CURLOPT_USERAGENT, CLIENT_USER_AGENT);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->total_timeout_ms);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)CLIENT_MAX_RESPONSE_BYTES);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, client_on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &buf);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
        /* POST with an empty body when there is none: Content-Length: 0. */
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, raw->body ? raw->body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)(raw->body ? raw->body_len : 0));
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }

    CURLcode cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    if (resp->status >= 400)
        resp->retry_after_s = client_retry_after(h);
    resp->body = buf.data;
    resp->len = buf.len;
    buf.data = NULL;

    if (buf.nomem)
        goto nomem;
    if (buf.too_big || cc == CURLE_FILESIZE_EXCEEDED) {
        rc = errmsg_set(err, -DRV_ETOO_LARGE, "the response from %s is larger than %ld bytes",
                        c->display_url, CLIENT_MAX_RESPONSE_BYTES);
        goto out;
    }
    if (cc != CURLE_OK) {
        char detail[CURL_ERROR_SIZE];
        client_copy_line(detail, sizeof(detail),
                         curl_error[0] ? curl_error : curl_easy_strerror(cc));
        resp->status = 0;
        rc = errmsg_set(err, -DRV_EUNAVAILABLE, "cannot reach %s: %s", c->display_url, detail);
        goto out;
    }

    if (resp->body) {
        json_error_t jerr;
        json_t *parsed = json_loadb(resp->body, resp->len, 0, &jerr);
        if (json_is_object(parsed))
            resp->json = parsed;
        else
            json_decref(parsed);
    }

    if (resp->status >= 400 && resp->status < 600) {
        rc = client_server_error(resp, err);
        goto out;
    }
    if (resp->status < 200 || resp->status >= 300) {
        rc = errmsg_set(err, -DRV_EINTERNAL, "unexpected HTTP %ld from %s", resp->status,
                        c->display_url);
        goto out;
    }
    if (!resp->json) {
        rc = errmsg_set(err, -DRV_EINTERNAL, "the response from %s is not a JSON object",
                        c->display_url);
        goto out;
    }
    goto out;

nomem:
    rc = errmsg_set(err, -DRV_ENOMEM, "out of memory");
out:
    /* The handle points at this frame's buffers; forget them, keep the connection. */
    curl_easy_reset(h);
    free(buf.data);
    curl_slist_free_all(headers);
    free(content_type);
    free(url);
    return rc;
}
