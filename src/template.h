/*
 * template.h - dispatch templates (DESIGN.md §1 External runner): the
 * placeholders in a queue's `dispatch` {url, method, headers, body}, checked
 * when the policy is set and filled in for each dispatch.
 *
 * A placeholder is `{{NAME}}` (blanks inside the braces are allowed:
 * `{{ job.id }}`), NAME one of
 *
 *     job.id  job.attempt  checkpoints  callback.url  callback.token
 *     payload  payload.PATH  env.NAME
 *
 * PATH is dot-separated segments of [A-Za-z0-9_-]; a segment walks into an
 * object by key, or into an array when it is a decimal index (`hosts.0`).
 * An env NAME is [A-Za-z_][A-Za-z0-9_]* and must not start with DROVER_
 * (drover's own settings, such as DROVER_ADMIN_TOKEN, are not for
 * templates). `\{{` is a literal `{{`. A substituted value is never
 * scanned for placeholders again. One filter, `{{NAME | string}}`, asks
 * for the text form where a whole string would keep the value's type (a
 * GitHub workflow_dispatch input must be a string: "{{job.attempt|string}}").
 *
 * Where a value goes:
 *  - body: a string that is exactly one placeholder becomes the value with
 *    its JSON type (`"{{job.attempt}}"` -> 3, `"{{payload.cfg}}"` -> the
 *    object); inside longer text, strings go in as they are and everything
 *    else as compact JSON. Object keys are copied, never templated (a key
 *    is the receiver's schema, not data).
 *  - url: placeholders only in the path, query and fragment (the scheme,
 *    host and port are literal, so a submitter cannot send the request, and
 *    its credentials, elsewhere); each value is percent-encoded outside
 *    RFC 3986's unreserved characters.
 *  - headers: text; a value with a control character (CR, LF, NUL, ...)
 *    after substitution is refused.
 *
 * Rendering fails rather than send a request with a hole in it: a payload
 * field that is not there, or an env variable that is not set (a missing
 * token would otherwise go out as an unauthenticated request). A field that
 * is present and null renders as null (as "null" inside text).
 */
#ifndef DROVER_TEMPLATE_H
#define DROVER_TEMPLATE_H

#include <stdbool.h>

#include <jansson.h>

#include "error.h"

/* What secrets are shown as, in policies and in logged requests. */
#define TEMPLATE_REDACTED "<redacted>"

#define TEMPLATE_NAME_MAX   128       /* bytes between the braces */
#define TEMPLATE_PATH_DEPTH 16        /* segments in payload.PATH */
#define TEMPLATE_DEPTH_MAX  32        /* nesting of arrays and objects in the body */
#define TEMPLATE_HEADER_MAX 8192      /* bytes in one rendered header value */
#define TEMPLATE_STRING_MAX (1 << 20) /* bytes in one rendered body string */

/* What placeholders are filled from. Nothing here is owned or changed. */
struct template_ctx {
    const char *job_id;
    int attempt;
    const json_t *payload;     /* the job's payload; NULL counts as JSON null */
    const json_t *checkpoints; /* NULL renders as {} */
    const char *callback_url;
    const char *callback_token;
    /* Reads {{env.NAME}}; NULL means getenv(). Values must be UTF-8. */
    const char *(*getenv_fn)(const char *name);
};

/*
 * Check every placeholder in dispatch's url, header values and body strings:
 * well-formed, known, within the limits above, and none in the URL before
 * its path. Fails with -DRV_EBAD_FIELD naming where, such as
 * `dispatch.body.inputs.job_id` or `dispatch.headers.Authorization` (array
 * items as `dispatch.body.list[2]`). The rest of dispatch's shape (url is
 * http(s), the method, unknown fields) is policy_from_json()'s to check.
 */
int template_validate(const json_t *dispatch, struct errmsg *err);

/*
 * Render one part of a validated dispatch. On success *out is new (free()
 * the strings, json_decref() the body) and shares nothing with ctx.
 *
 * Errors, with err->field naming the template (`dispatch.url`, ...) and the
 * text naming the placeholder, never an env value:
 *   -DRV_EBAD_FIELD  a malformed placeholder (the template was not
 *                    validated), a payload field that is missing, a header
 *                    value that would hold a control character, a URL that
 *                    would not be an http(s) URL;
 *   -DRV_ECONFIG     an env variable that is not set, or not UTF-8;
 *   -DRV_ETOO_LARGE  a result past JOB_URL_MAX, TEMPLATE_HEADER_MAX or
 *                    TEMPLATE_STRING_MAX;
 *   -DRV_ENOMEM.
 * All but the last and env are the same every time for the same job:
 * retrying the dispatch does not help.
 */
int template_render_url(const char *tmpl, const struct template_ctx *ctx, char **out,
                        struct errmsg *err);
/* name is the header's name, for messages. */
int template_render_header(const char *name, const char *tmpl, const struct template_ctx *ctx,
                           char **out, struct errmsg *err);
int template_render_body(const json_t *tmpl, const struct template_ctx *ctx, json_t **out,
                         struct errmsg *err);

/* A rendered dispatch request. Owns everything; template_request_release(). */
struct template_request {
    char method[8]; /* from dispatch.method; "POST" when absent */
    char *url;
    json_t *headers; /* object: name -> rendered string value */
    json_t *body;    /* rendered body; NULL when dispatch has none */
};

/*
 * Render the whole dispatch (validated) for one job. On failure out holds
 * nothing and needs no release; errors as for the parts above.
 */
int template_render_request(const json_t *dispatch, const struct template_ctx *ctx,
                            struct template_request *out, struct errmsg *err);
void template_request_release(struct template_request *r);

/*
 * The request dispatch renders to for ctx, as it may be logged or shown in
 * an error: {"method", "url", "headers", "body"} (no "body" when there is
 * none). Env values and the callback token are TEMPLATE_REDACTED wherever
 * they go (the environment is not even read), and so is the whole value of
 * a header whose template uses one of them or whose name looks secret
 * (template_header_is_secret()). Payload values are shown. Returns 0 and a
 * new *out, or fails as rendering does.
 */
int template_request_redacted(const json_t *dispatch, const struct template_ctx *ctx, json_t **out,
                              struct errmsg *err);

/*
 * The dispatch template as non-admins see it in a policy: a deep copy with
 * every header value TEMPLATE_REDACTED (a template may hold a literal
 * secret under any name). New reference, NULL when out of memory.
 */
json_t *template_dispatch_redacted(const json_t *dispatch);

/*
 * Does a header of this name carry a secret? Authorization, Cookie, and any
 * name holding auth, token, secret, key, password, signature, credential or
 * session, case-insensitively.
 */
bool template_header_is_secret(const char *name);

#endif
