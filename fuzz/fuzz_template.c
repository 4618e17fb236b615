/*
 * fuzz_template.c - a queue's dispatch template (src/template.h): the
 * `dispatch` object of a PUT /v1/queues/{name} body, loaded as the server
 * loads it, checked by template_validate() and by policy_from_json(); a
 * valid one is rendered for a fixed job whose payload holds hostile values
 * and whose environment holds a line break.
 *
 * Invariants: the policy never accepts what template_validate() refuses;
 * every failure has a message, and message and field are UTF-8; a render
 * either succeeds or fails with a template error (never "internal"), and
 * its message never holds a secret; a rendered URL is http(s), within
 * JOB_URL_MAX, with the template's scheme, host and port; header values
 * hold no control character but tab; a body without "{{" renders as
 * itself; rendering twice gives the same; the redacted view works whenever
 * rendering does and holds no secret.
 */
#include <jansson.h>

#include "fuzz.h"
#include "job.h"
#include "job_json.h"
#include "policy.h"
#include "template.h"

#define ENV_SECRET "S3CRET-ENV-VALUE-7d1f"
#define CB_SECRET  "CB-TOKEN-S3CRET-91ab"

static const char *fake_getenv(const char *name)
{
    if (strcmp(name, "GITHUB_TOKEN") == 0 || strcmp(name, "TOKEN") == 0)
        return ENV_SECRET;
    if (strcmp(name, "CRLF") == 0)
        return ENV_SECRET "\r\nX-Injected: 1";
    if (strcmp(name, "EMPTY") == 0)
        return "";
    return NULL;
}

static const char payload_text[] =
    "{\"vm\": \"web-1\", \"n\": 3, \"r\": 0.25, \"t\": true, \"z\": null,"
    " \"cfg\": {\"region\": \"eu west/1\", \"size\": {\"cpu\": 4}, \"tags\": [\"a\", \"b\"]},"
    " \"hostile\": \"../x y?z#w%v/\\u00e9&q=1\", \"crlf\": \"v\\r\\nX-Injected: 1\","
    " \"nul\": \"a\\u0000b\", \"tab\": \"a\\tb\", \"list\": [1, {\"k\": \"v\"}, [2]]}";

static char *dump(const json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    FUZZ_CHECK(text != NULL, "json_dumps failed");
    return text;
}

static bool is_utf8(const char *s)
{
    json_t *v = json_string(s);
    json_decref(v);
    return v != NULL;
}

static void check_error(int rc, const struct errmsg *err)
{
    FUZZ_CHECK(err->text[0] != '\0', "error %d without a message", rc);
    FUZZ_CHECK(is_utf8(err->text) && is_utf8(err->field), "message or field not UTF-8: %s",
               err->text);
}

/* Where a URL's path starts: after scheme://authority (as template.c finds it). */
static size_t path_start(const char *url)
{
    const char *sep = strstr(url, "://");
    size_t start = sep ? (size_t)(sep - url) + 3 : 0;
    return start + strcspn(url + start, "/?#");
}

static void check_no_secret(const char *text, bool input_has_secret, const char *what)
{
    if (input_has_secret)
        return;
    FUZZ_CHECK(!strstr(text, ENV_SECRET) && !strstr(text, CB_SECRET), "a secret in %s: %s", what,
               text);
}

static void check_rendered(const json_t *dispatch, const struct template_request *r)
{
    const char *tmpl_url = json_string_value(json_object_get(dispatch, "url"));
    FUZZ_CHECK(r->url && url_is_http(r->url) && strlen(r->url) <= JOB_URL_MAX, "bad URL '%s'",
               r->url ? r->url : "(null)");
    size_t authority = path_start(tmpl_url);
    FUZZ_CHECK(strncmp(r->url, tmpl_url, authority) == 0 &&
                   (r->url[authority] == '\0' || strchr("/?#", r->url[authority])),
               "authority changed: '%s' from '%s'", r->url, tmpl_url);

    const json_t *tmpl_headers = json_object_get(dispatch, "headers");
    FUZZ_CHECK(json_object_size(r->headers) == json_object_size(tmpl_headers),
               "headers added or lost");
    const char *name;
    json_t *v;
    json_object_foreach(r->headers, name, v)
    {
        FUZZ_CHECK(json_object_get(tmpl_headers, name) != NULL, "header '%s' not in template",
                   name);
        const char *s = json_string_value(v);
        FUZZ_CHECK(s && strlen(s) == json_string_length(v), "header '%s' not a C string", name);
        for (const unsigned char *c = (const unsigned char *)s; *c; c++)
            FUZZ_CHECK((*c >= 0x20 || *c == '\t') && *c != 0x7f, "control character in '%s'", name);
    }

    const json_t *tmpl_body = json_object_get(dispatch, "body");
    FUZZ_CHECK((tmpl_body == NULL) == (r->body == NULL), "body appeared or vanished");
    if (tmpl_body) {
        char *t = dump(tmpl_body);
        if (!strstr(t, "{{"))
            FUZZ_CHECK(json_equal(tmpl_body, r->body), "a body without placeholders changed");
        free(t);
    }
}

static void check_render(const json_t *dispatch, bool input_has_secret)
{
    json_t *payload = json_loads(payload_text, JSON_ALLOW_NUL, NULL);
    json_t *checkpoints = json_pack("{s:{s:s}}", "vm_created", "id", "i-42");
    FUZZ_CHECK(payload && checkpoints, "fixture JSON");
    struct template_ctx ctx = {
        .job_id = "01JD8X3Q4W5E6R7T8Y9U0I1O2P",
        .attempt = 2,
        .payload = payload,
        .checkpoints = checkpoints,
        .callback_url = "https://drover.example.com/v1/callbacks/01JD8X3Q4W5E6R7T8Y9U0I1O2P",
        .callback_token = CB_SECRET,
        .getenv_fn = fake_getenv,
    };
    struct template_request r, again;
    struct errmsg err = {0};
    int rc = template_render_request(dispatch, &ctx, &r, &err);
    if (rc < 0) {
        check_error(rc, &err);
        FUZZ_CHECK(rc == -DRV_EBAD_FIELD || rc == -DRV_ECONFIG || rc == -DRV_ETOO_LARGE,
                   "render failed with %d: %s", rc, err.text);
        check_no_secret(err.text, input_has_secret, "a render error");
        FUZZ_CHECK(r.url == NULL && r.headers == NULL && r.body == NULL, "failure left output");
    } else {
        check_rendered(dispatch, &r);
        FUZZ_CHECK(template_render_request(dispatch, &ctx, &again, &err) == 0,
                   "second render failed: %s", err.text);
        FUZZ_CHECK(strcmp(r.url, again.url) == 0 && strcmp(r.method, again.method) == 0 &&
                       json_equal(r.headers, again.headers) &&
                       (r.body == NULL ? again.body == NULL : json_equal(r.body, again.body)),
                   "rendering twice differs");
        template_request_release(&again);
    }

    json_t *shown = NULL;
    struct errmsg shown_err = {0};
    int shown_rc = template_request_redacted(dispatch, &ctx, &shown, &shown_err);
    if (rc == 0)
        FUZZ_CHECK(shown_rc == 0, "redacted view failed where rendering worked: %s",
                   shown_err.text);
    if (shown_rc == 0) {
        char *text = dump(shown);
        check_no_secret(text, input_has_secret, "the redacted view");
        free(text);
        json_decref(shown);
    } else {
        check_error(shown_rc, &shown_err);
    }
    if (rc == 0)
        template_request_release(&r);
    json_decref(payload);
    json_decref(checkpoints);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *dispatch =
        json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (dispatch == NULL)
        return 0;

    struct errmsg err = {0};
    int valid = template_validate(dispatch, &err);
    if (valid < 0)
        check_error(valid, &err);

    /* The same dispatch through PUT /v1/queues: never accepted when invalid. */
    json_t *body = json_pack("{s:s, s:O}", "mode", "http", "dispatch", dispatch);
    FUZZ_CHECK(body != NULL, "json_pack failed");
    struct policy p;
    struct errmsg perr = {0};
    policy_init(&p);
    int accepted = policy_from_json(body, &p, &perr);
    FUZZ_CHECK(!(accepted == 0 && valid < 0), "policy accepted a template refused with: %s",
               err.text);
    if (accepted < 0)
        check_error(accepted, &perr);

    /* Render what a policy would hold: a valid template the policy accepted. */
    if (accepted == 0) {
        char *text = dump(p.dispatch); /* decoded: "\u0053" is an S here */
        check_render(p.dispatch, strstr(text, "S3CRET") != NULL);
        free(text);
    }
    policy_release(&p);
    json_decref(body);
    json_decref(dispatch);
    return 0;
}
