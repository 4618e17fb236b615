/*
 * test_template.c - dispatch templates (src/template.h): what validation
 * refuses and names, and what a dispatch renders to — the GitHub
 * workflow_dispatch and VM agent examples end to end, value types, URL
 * encoding, header injection, missing values, and the redacted view.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "job.h"
#include "template.h"
#include "test_util.h"

#define JOB_ID   "01JD8X3Q4W5E6R7T8Y9U0I1O2P"
#define CB_URL   "https://drover.example.com/v1/callbacks/" JOB_ID
#define CB_TOKEN "cbtok-7f3a9e"
#define GH_TOKEN "ghp_s3cretT0ken"

/* Parse JSON as the server loads bodies (NUL allowed inside strings) or fail. */
static json_t *load(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (v == NULL)
        fail_msg("bad JSON in test: %s (%s)", text, jerr.text);
    return v;
}

/* ---- a fake environment: NULL-terminated name, value pairs ---- */

static const char *const default_env[] = {"GITHUB_TOKEN", GH_TOKEN, "AGENT_KEY", "k-123",
                                          "EMPTY",        "",       "BAD_UTF8",  "\xff\xfe",
                                          "CRLF",         "a\r\nb", NULL};

static const char *const *fake_env = default_env;

static const char *fake_getenv(const char *name)
{
    for (const char *const *p = fake_env; p && *p; p += 2) {
        if (strcmp(p[0], name) == 0)
            return p[1];
    }
    return NULL;
}

static const char *const payload_text =
    "{\"vm\": \"web-1\", \"count\": 2, \"ratio\": 0.5, \"on\": true, \"off\": false,"
    " \"nothing\": null, \"config\": {\"region\": \"eu-west\", \"size\": {\"cpu\": 4}},"
    " \"hosts\": [\"a.example\", \"b.example\"], \"hostile\": \"../x y?z#w%v/\\u00e9\","
    " \"crlf\": \"v\\r\\nX-Injected: 1\", \"tab\": \"a\\tb\", \"nul\": \"a\\u0000b\"}";

struct fixture {
    json_t *payload;
    json_t *checkpoints;
    struct template_ctx ctx;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->payload = load(payload_text);
    f->checkpoints = load("{\"vm_created\": {\"id\": \"i-42\"}}");
    f->ctx = (struct template_ctx){
        .job_id = JOB_ID,
        .attempt = 3,
        .payload = f->payload,
        .checkpoints = f->checkpoints,
        .callback_url = CB_URL,
        .callback_token = CB_TOKEN,
        .getenv_fn = fake_getenv,
    };
    fake_env = default_env;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    json_decref(f->payload);
    json_decref(f->checkpoints);
    free(f);
    return 0;
}

/* validate {"url": ..., dispatch fields...} given as text. */
static int validate(const char *text, struct errmsg *err)
{
    json_t *d = load(text);
    memset(err, 0, sizeof(*err));
    int rc = template_validate(d, err);
    json_decref(d);
    return rc;
}

static void expect_invalid(const char *text, const char *field, const char *in_message)
{
    struct errmsg err;
    int rc = validate(text, &err);
    tu_expect_field_error(text, rc, &err, field);
    if (in_message && !strstr(err.text, in_message))
        fail_msg("%s: message '%s' lacks '%s'", text, err.text, in_message);
}

static void expect_valid(const char *text)
{
    struct errmsg err;
    int rc = validate(text, &err);
    tu_expect_ok(text, rc, &err);
}

/* Render a body template given as JSON text; want is JSON text or NULL for an error. */
static void expect_body(const struct template_ctx *ctx, const char *tmpl, const char *want)
{
    json_t *t = load(tmpl);
    json_t *got = NULL;
    struct errmsg err = {0};
    int rc = template_render_body(t, ctx, &got, &err);
    if (rc != 0)
        fail_msg("%s: rc %d (%s: %s)", tmpl, rc, err.field, err.text);
    json_t *w = load(want);
    assert_json_equal(got, w);
    json_decref(w);
    json_decref(got);
    json_decref(t);
}

/* A body string rendered as text: tmpl and want are C strings (not JSON). */
static void expect_body_text(const struct template_ctx *ctx, const char *tmpl, const char *want)
{
    json_t *t = json_string(tmpl);
    json_t *got = NULL;
    struct errmsg err = {0};
    int rc = template_render_body(t, ctx, &got, &err);
    if (rc != 0)
        fail_msg("'%s': rc %d (%s: %s)", tmpl, rc, err.field, err.text);
    if (!json_is_string(got) || strcmp(json_string_value(got), want) != 0)
        fail_msg("'%s' rendered '%s', want '%s'", tmpl,
                 json_is_string(got) ? json_string_value(got) : "(not a string)", want);
    json_decref(got);
    json_decref(t);
}

static int body_error(const struct template_ctx *ctx, const char *tmpl, struct errmsg *err)
{
    json_t *t = load(tmpl);
    json_t *got = NULL;
    memset(err, 0, sizeof(*err));
    int rc = template_render_body(t, ctx, &got, err);
    assert_null(got);
    json_decref(t);
    return rc;
}

static void expect_url(const struct template_ctx *ctx, const char *tmpl, const char *want)
{
    char *got = NULL;
    struct errmsg err = {0};
    int rc = template_render_url(tmpl, ctx, &got, &err);
    if (rc != 0)
        fail_msg("%s: rc %d (%s: %s)", tmpl, rc, err.field, err.text);
    assert_string_equal(got, want);
    free(got);
}

static int header_error(const struct template_ctx *ctx, const char *tmpl, struct errmsg *err)
{
    char *got = NULL;
    memset(err, 0, sizeof(*err));
    int rc = template_render_header("X-Test", tmpl, ctx, &got, err);
    assert_null(got);
    return rc;
}

/* ---- the two examples ---- */

static const char *const github_dispatch =
    "{\"url\": \"https://api.github.com/repos/acme/infra/actions/workflows/provision.yml/"
    "dispatches\","
    " \"method\": \"POST\","
    " \"headers\": {\"Authorization\": \"Bearer {{env.GITHUB_TOKEN}}\","
    "               \"Accept\": \"application/vnd.github+json\","
    "               \"X-GitHub-Api-Version\": \"2022-11-28\"},"
    " \"body\": {\"ref\": \"main\","
    "            \"inputs\": {\"job_id\": \"{{job.id}}\","
    "                         \"attempt\": \"{{ job.attempt | string }}\","
    "                         \"callback_url\": \"{{callback.url}}\","
    "                         \"callback_token\": \"{{callback.token}}\","
    "                         \"vm\": \"{{payload.vm}}\","
    "                         \"config\": \"{{payload.config|string}}\"}}}";

static void test_github_workflow_dispatch(void **state)
{
    struct fixture *f = *state;
    expect_valid(github_dispatch);
    json_t *d = load(github_dispatch);
    struct template_request r;
    struct errmsg err = {0};
    int rc = template_render_request(d, &f->ctx, &r, &err);
    if (rc != 0)
        fail_msg("rc %d (%s: %s)", rc, err.field, err.text);
    assert_string_equal(r.method, "POST");
    assert_string_equal(
        r.url,
        "https://api.github.com/repos/acme/infra/actions/workflows/provision.yml/dispatches");
    json_t *want_headers = load("{\"Authorization\": \"Bearer " GH_TOKEN "\","
                                " \"Accept\": \"application/vnd.github+json\","
                                " \"X-GitHub-Api-Version\": \"2022-11-28\"}");
    assert_json_equal(r.headers, want_headers);
    /* workflow_dispatch inputs must all be strings: `| string` makes them so. */
    json_t *want_body =
        load("{\"ref\": \"main\", \"inputs\": {\"job_id\": \"" JOB_ID "\", \"attempt\": \"3\","
             " \"callback_url\": \"" CB_URL "\", \"callback_token\": \"" CB_TOKEN "\","
             " \"vm\": \"web-1\","
             " \"config\": \"{\\\"region\\\":\\\"eu-west\\\",\\\"size\\\":{\\\"cpu\\\":4}}\"}}");
    assert_json_equal(r.body, want_body);
    /* The inputs are strings, as GitHub requires. */
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(r.body, "inputs"), k, v)
    {
        if (!json_is_string(v))
            fail_msg("input '%s' is not a string", k);
    }
    template_request_release(&r);
    assert_null(r.url);
    json_decref(want_headers);
    json_decref(want_body);
    json_decref(d);
}

static const char *const agent_dispatch =
    "{\"url\": \"http://10.0.0.5:8080/v1/run/{{job.id}}?attempt={{job.attempt}}\","
    " \"method\": \"PUT\","
    " \"headers\": {\"X-Agent-Key\": \"{{env.AGENT_KEY}}\", \"Content-Type\": "
    "\"application/json\"},"
    " \"body\": {\"job\": \"{{job.id}}\", \"attempt\": \"{{job.attempt}}\","
    "            \"spec\": \"{{payload}}\", \"resume_from\": \"{{checkpoints}}\","
    "            \"callback\": {\"url\": \"{{callback.url}}\", \"token\": \"{{callback.token}}\"},"
    "            \"cpus\": \"{{payload.config.size.cpu}}\", \"first_host\": "
    "\"{{payload.hosts.0}}\","
    "            \"fixed\": [1, 2.5, true, null, \"plain\"]}}";

static void test_vm_agent(void **state)
{
    struct fixture *f = *state;
    expect_valid(agent_dispatch);
    json_t *d = load(agent_dispatch);
    struct template_request r;
    struct errmsg err = {0};
    int rc = template_render_request(d, &f->ctx, &r, &err);
    if (rc != 0)
        fail_msg("rc %d (%s: %s)", rc, err.field, err.text);
    assert_string_equal(r.method, "PUT");
    assert_string_equal(r.url, "http://10.0.0.5:8080/v1/run/" JOB_ID "?attempt=3");
    assert_string_equal(json_string_value(json_object_get(r.headers, "X-Agent-Key")), "k-123");
    assert_int_equal(json_integer_value(json_object_get(r.body, "attempt")), 3);
    assert_true(json_is_integer(json_object_get(r.body, "attempt")));
    assert_json_equal(json_object_get(r.body, "spec"), f->payload);
    assert_json_equal(json_object_get(r.body, "resume_from"), f->checkpoints);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r.body, "callback"), "token")), CB_TOKEN);
    assert_int_equal(json_integer_value(json_object_get(r.body, "cpus")), 4);
    assert_string_equal(json_string_value(json_object_get(r.body, "first_host")), "a.example");
    json_t *fixed = load("[1, 2.5, true, null, \"plain\"]");
    assert_json_equal(json_object_get(r.body, "fixed"), fixed);
    json_decref(fixed);
    /* The result shares nothing with the context. */
    assert_ptr_not_equal(json_object_get(r.body, "spec"), f->payload);
    json_object_set_new(json_object_get(r.body, "spec"), "vm", json_string("changed"));
    assert_string_equal(json_string_value(json_object_get(f->payload, "vm")), "web-1");
    template_request_release(&r);

    /* No method: POST. No headers: an empty object. No body: NULL. */
    json_t *bare = load("{\"url\": \"https://agent.example/run\"}");
    assert_int_equal(template_render_request(bare, &f->ctx, &r, &err), 0);
    assert_string_equal(r.method, "POST");
    assert_int_equal(json_object_size(r.headers), 0);
    assert_null(r.body);
    template_request_release(&r);
    json_decref(bare);
    json_decref(d);
}

/* ---- bodies ---- */

/* A string that is one placeholder takes the value with its type. */
static void test_whole_string_keeps_type(void **state)
{
    struct fixture *f = *state;
    expect_body(&f->ctx, "\"{{job.attempt}}\"", "3");
    expect_body(&f->ctx, "\"{{job.id}}\"", "\"" JOB_ID "\"");
    expect_body(&f->ctx, "\"{{payload.count}}\"", "2");
    expect_body(&f->ctx, "\"{{payload.ratio}}\"", "0.5");
    expect_body(&f->ctx, "\"{{payload.on}}\"", "true");
    expect_body(&f->ctx, "\"{{payload.off}}\"", "false");
    expect_body(&f->ctx, "\"{{payload.nothing}}\"", "null");
    expect_body(&f->ctx, "\"{{payload.config}}\"",
                "{\"region\": \"eu-west\", \"size\": {\"cpu\": 4}}");
    expect_body(&f->ctx, "\"{{payload.hosts}}\"", "[\"a.example\", \"b.example\"]");
    expect_body(&f->ctx, "\"{{checkpoints}}\"", "{\"vm_created\": {\"id\": \"i-42\"}}");
    expect_body(&f->ctx, "\"{{ payload.count }}\"", "2");
    expect_body(&f->ctx, "\"{{env.GITHUB_TOKEN}}\"", "\"" GH_TOKEN "\"");
    /* A payload string with a NUL inside stays whole. */
    expect_body(&f->ctx, "\"{{payload.nul}}\"", "\"a\\u0000b\"");
    /* `| string`: the text form instead. */
    expect_body(&f->ctx, "\"{{job.attempt | string}}\"", "\"3\"");
    expect_body(&f->ctx, "\"{{payload.hosts|string}}\"",
                "\"[\\\"a.example\\\",\\\"b.example\\\"]\"");
    expect_body(&f->ctx, "\"{{payload.vm | string}}\"", "\"web-1\"");
    /* No checkpoints: {}. */
    struct template_ctx c = f->ctx;
    c.checkpoints = NULL;
    expect_body(&c, "\"{{checkpoints}}\"", "{}");
}

/* Inside longer text every type is text: strings as is, the rest as compact JSON. */
static void test_text_interpolation(void **state)
{
    struct fixture *f = *state;
    expect_body_text(&f->ctx, "job {{job.id}}", "job " JOB_ID);
    expect_body_text(&f->ctx, "try {{job.attempt}}", "try 3");
    expect_body_text(&f->ctx, "n={{payload.count}}", "n=2");
    expect_body_text(&f->ctx, "r={{payload.ratio}}", "r=0.5");
    expect_body_text(&f->ctx, "{{payload.on}}/{{payload.off}}", "true/false");
    expect_body_text(&f->ctx, "x={{payload.nothing}}", "x=null");
    expect_body_text(&f->ctx, "cfg {{payload.config}}",
                     "cfg {\"region\":\"eu-west\",\"size\":{\"cpu\":4}}");
    expect_body_text(&f->ctx, "hosts {{payload.hosts}}", "hosts [\"a.example\",\"b.example\"]");
    expect_body_text(&f->ctx, "cp {{checkpoints}}", "cp {\"vm_created\":{\"id\":\"i-42\"}}");
    expect_body_text(&f->ctx, "{{callback.url}}?t={{callback.token}}", CB_URL "?t=" CB_TOKEN);
    expect_body_text(&f->ctx, "{{job.id}}{{job.attempt}}", JOB_ID "3");
    expect_body_text(&f->ctx, " {{job.attempt}}", " 3");
    /* Values are not scanned again, and body text is not encoded. */
    expect_body_text(&f->ctx, "h={{payload.hostile}}", "h=../x y?z#w%v/\xc3\xa9");
}

static void test_literal_text(void **state)
{
    struct fixture *f = *state;
    expect_body(&f->ctx, "{\"a\": \"plain\", \"b\": [\"\", \"}}\", \"{ {\", \"a}}b{\"]}",
                "{\"a\": \"plain\", \"b\": [\"\", \"}}\", \"{ {\", \"a}}b{\"]}");
    expect_body(&f->ctx, "42", "42");
    expect_body(&f->ctx, "null", "null");
    expect_body(&f->ctx, "\"\"", "\"\"");
    expect_body(&f->ctx, "\"caf\\u00e9 \\u2603\"", "\"caf\\u00e9 \\u2603\"");
    /* \{{ is a literal {{ and is not a placeholder. */
    expect_body_text(&f->ctx, "\\{{job.id}}", "{{job.id}}");
    expect_body_text(&f->ctx, "$\\{{ github.sha }}", "${{ github.sha }}");
    expect_body_text(&f->ctx, "a\\b", "a\\b");
    /* Object keys are copied, never templated. */
    expect_body(&f->ctx, "{\"{{job.id}}\": \"{{job.attempt}}\"}", "{\"{{job.id}}\": 3}");
    expect_valid("{\"url\": \"https://x/\", \"body\": {\"{{nope}}\": 1}}");
    /* A URL and a header without placeholders pass through. */
    expect_url(&f->ctx, "https://x.example/a%20b?c=d#e", "https://x.example/a%20b?c=d#e");
    char *h = NULL;
    struct errmsg err = {0};
    assert_int_equal(template_render_header("Accept", "application/json", &f->ctx, &h, &err), 0);
    assert_string_equal(h, "application/json");
    free(h);
    assert_int_equal(template_render_header("X-Empty", "", &f->ctx, &h, &err), 0);
    assert_string_equal(h, "");
    free(h);
}

static void test_nested_payload_paths(void **state)
{
    struct fixture *f = *state;
    expect_body(&f->ctx, "\"{{payload.config.region}}\"", "\"eu-west\"");
    expect_body(&f->ctx, "\"{{payload.config.size}}\"", "{\"cpu\": 4}");
    expect_body(&f->ctx, "\"{{payload.config.size.cpu}}\"", "4");
    expect_body(&f->ctx, "\"{{payload.hosts.1}}\"", "\"b.example\"");
    expect_body(&f->ctx, "\"{{payload}}\"", payload_text);

    /* Missing fields are errors naming the field, the placeholder and where. */
    const char *missing[] = {
        "{\"a\": [\"{{payload.absent}}\"]}",
        "{\"a\": [\"{{payload.config.zone}}\"]}",
        "{\"a\": [\"{{payload.vm.name}}\"]}",
        "{\"a\": [\"{{payload.hosts.2}}\"]}",
        "{\"a\": [\"{{payload.hosts.x}}\"]}",
        "{\"a\": [\"{{payload.count.0}}\"]}",
        "{\"a\": [\"x {{payload.absent}}\"]}",
        "{\"a\": [\"{{payload.hosts.99999999999999999999}}\"]}",
    };
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
        struct errmsg err;
        int rc = body_error(&f->ctx, missing[i], &err);
        /* Variables: the macro substitutes `text` and `field` into err->text, err->field. */
        const char *text = missing[i], *field = "dispatch.body.a[0]";
        tu_expect_field_error(text, rc, &err, field);
        if (!strstr(err.text, "{{payload."))
            fail_msg("%s: message '%s' does not name the placeholder", missing[i], err.text);
    }
    struct errmsg err;
    body_error(&f->ctx, "{\"a\": \"{{payload.config.zone}}\"}", &err);
    assert_non_null(strstr(err.text, "'config.zone'"));

    /* No payload at all: only {{payload}} itself (null) renders. */
    struct template_ctx c = f->ctx;
    c.payload = NULL;
    expect_body(&c, "\"{{payload}}\"", "null");
    assert_int_equal(body_error(&c, "\"{{payload.vm}}\"", &err), -DRV_EBAD_FIELD);
}

static void test_deep_nesting(void **state)
{
    struct fixture *f = *state;
    /* TEMPLATE_DEPTH_MAX levels of arrays and objects, a placeholder at the bottom. */
    char tmpl[1024], want[1024];
    size_t t = 0, w = 0;
    for (int i = 0; i < TEMPLATE_DEPTH_MAX; i++) {
        const char *open = i % 2 ? "[" : "{\"k\":";
        t += (size_t)snprintf(tmpl + t, sizeof(tmpl) - t, "%s", open);
        w += (size_t)snprintf(want + w, sizeof(want) - w, "%s", open);
    }
    t += (size_t)snprintf(tmpl + t, sizeof(tmpl) - t, "\"{{job.attempt}}\"");
    w += (size_t)snprintf(want + w, sizeof(want) - w, "3");
    for (int i = TEMPLATE_DEPTH_MAX - 1; i >= 0; i--) {
        const char *close = i % 2 ? "]" : "}";
        t += (size_t)snprintf(tmpl + t, sizeof(tmpl) - t, "%s", close);
        w += (size_t)snprintf(want + w, sizeof(want) - w, "%s", close);
    }
    expect_body(&f->ctx, tmpl, want);
    char dispatch[2048];
    snprintf(dispatch, sizeof(dispatch), "{\"url\": \"https://x/\", \"body\": %s}", tmpl);
    expect_valid(dispatch);
    /* One level more is refused, by validation and by rendering. */
    snprintf(dispatch, sizeof(dispatch), "{\"url\": \"https://x/\", \"body\": [%s]}", tmpl);
    struct errmsg err;
    assert_int_equal(validate(dispatch, &err), -DRV_EBAD_FIELD);
    assert_non_null(strstr(err.text, "deeper"));
    char deeper[1100];
    snprintf(deeper, sizeof(deeper), "[%s]", tmpl);
    assert_int_equal(body_error(&f->ctx, deeper, &err), -DRV_EBAD_FIELD);

    /* Arrays of objects of arrays: every string found. */
    expect_body(&f->ctx, "[[{\"a\": [\"{{job.attempt}}\", {\"b\": \"id={{job.id}}\"}]}], []]",
                "[[{\"a\": [3, {\"b\": \"id=" JOB_ID "\"}]}], []]");
}

/* ---- URLs ---- */

static void test_url_encoding(void **state)
{
    struct fixture *f = *state;
    expect_url(&f->ctx, "https://x.example/vms/{{payload.hostile}}/start",
               "https://x.example/vms/..%2Fx%20y%3Fz%23w%25v%2F%C3%A9/start");
    expect_url(
        &f->ctx, "https://x.example/run?cb={{callback.url}}&job={{job.id}}#{{job.attempt}}",
        "https://x.example/run?cb=https%3A%2F%2Fdrover.example.com%2Fv1%2Fcallbacks%2F" JOB_ID
        "&job=" JOB_ID "#3");
    expect_url(
        &f->ctx, "https://x.example/{{payload.config}}",
        "https://x.example/%7B%22region%22%3A%22eu-west%22%2C%22size%22%3A%7B%22cpu%22%3A4%7D%7D");
    expect_url(&f->ctx, "https://x.example/{{payload.nul}}/{{payload.crlf}}",
               "https://x.example/a%00b/v%0D%0AX-Injected%3A%201");
    expect_url(&f->ctx, "https://x.example/{{payload.ratio}}/{{payload.nothing}}/{{payload.on}}",
               "https://x.example/0.5/null/true");
    /* Unreserved characters stay. */
    fake_env = (const char *const[]){"V", "aZ09-._~", NULL};
    expect_url(&f->ctx, "https://x.example/{{env.V}}", "https://x.example/aZ09-._~");
    fake_env = (const char *const[]){"V", "a b+c&d=e@f:g;h,i!j'k(l)m*n[o]p$q", NULL};
    expect_url(
        &f->ctx, "https://x.example/?q={{env.V}}",
        "https://x.example/?q=a%20b%2Bc%26d%3De%40f%3Ag%3Bh%2Ci%21j%27k%28l%29m%2An%5Bo%5Dp%24q");
    fake_env = default_env;

    /* The rendered URL is capped at JOB_URL_MAX. */
    json_t *big = json_object();
    char *long_value = tu_repeat('a', JOB_URL_MAX);
    json_object_set_new(big, "v", json_string(long_value));
    struct template_ctx c = f->ctx;
    c.payload = big;
    char *got = NULL;
    struct errmsg err = {0};
    assert_int_equal(template_render_url("https://x/{{payload.v}}", &c, &got, &err),
                     -DRV_ETOO_LARGE);
    assert_null(got);
    assert_string_equal(err.field, "dispatch.url");
    free(long_value);
    json_decref(big);
}

static void test_url_host_is_literal(void **state)
{
    (void)state;
    const char *bad[] = {
        "https://{{payload.host}}/run",
        "https://{{env.AGENT_HOST}}/run",
        "https://agent.example:{{payload.port}}/run",
        "https://user:{{env.PASSWORD}}@agent.example/run",
        "{{payload.url}}",
        "https://a.example{{job.id}}",
    };
    char text[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "{\"url\": \"%s\"}", bad[i]);
        expect_invalid(text, "dispatch.url", "path, query or fragment");
    }
    expect_valid("{\"url\": \"https://agent.example:8080/{{payload.vm}}\"}");
    expect_valid("{\"url\": \"https://agent.example?id={{job.id}}\"}");
    expect_valid("{\"url\": \"https://agent.example#{{job.id}}\"}");
}

/* ---- headers ---- */

static void test_header_injection(void **state)
{
    struct fixture *f = *state;
    struct errmsg err;
    assert_int_equal(header_error(&f->ctx, "x {{payload.crlf}}", &err), -DRV_EBAD_FIELD);
    assert_string_equal(err.field, "dispatch.headers.X-Test");
    assert_non_null(strstr(err.text, "{{payload.crlf}}"));
    assert_int_equal(header_error(&f->ctx, "{{payload.nul}}", &err), -DRV_EBAD_FIELD);
    assert_int_equal(header_error(&f->ctx, "{{env.CRLF}}", &err), -DRV_EBAD_FIELD);
    assert_null(strstr(err.text, "a\r\nb"));
    fake_env = (const char *const[]){"V", "a\nb", NULL};
    assert_int_equal(header_error(&f->ctx, "{{env.V}}", &err), -DRV_EBAD_FIELD);
    fake_env = (const char *const[]){"V", "a\rb", NULL};
    assert_int_equal(header_error(&f->ctx, "{{env.V}}", &err), -DRV_EBAD_FIELD);
    fake_env = (const char *const[]){"V", "a\x7f", NULL};
    assert_int_equal(header_error(&f->ctx, "{{env.V}}", &err), -DRV_EBAD_FIELD);
    fake_env = default_env;
    /* A literal control character in the template itself. */
    assert_int_equal(header_error(&f->ctx, "a\x01{{job.id}}", &err), -DRV_EBAD_FIELD);
    expect_invalid("{\"url\": \"https://x/\", \"headers\": {\"A\": \"a\\u0001b\"}}",
                   "dispatch.headers.A", NULL);
    /* A tab is allowed; an object goes in as compact JSON on one line. */
    char *h = NULL;
    err = (struct errmsg){0};
    assert_int_equal(
        template_render_header("X", "{{payload.tab}} {{payload.config}}", &f->ctx, &h, &err), 0);
    assert_string_equal(h, "a\tb {\"region\":\"eu-west\",\"size\":{\"cpu\":4}}");
    free(h);

    /* A whole request fails as its header does. */
    json_t *d = load("{\"url\": \"https://x/\", \"headers\": {\"X-Vm\": \"{{payload.crlf}}\"}}");
    struct template_request r;
    assert_int_equal(template_render_request(d, &f->ctx, &r, &err), -DRV_EBAD_FIELD);
    assert_string_equal(err.field, "dispatch.headers.X-Vm");
    assert_null(r.url);
    assert_null(r.headers);
    json_decref(d);
}

/* ---- env ---- */

static void test_env(void **state)
{
    struct fixture *f = *state;
    struct errmsg err;
    assert_int_equal(header_error(&f->ctx, "Bearer {{env.UNSET_TOKEN}}", &err), -DRV_ECONFIG);
    assert_string_equal(err.field, "dispatch.headers.X-Test");
    assert_non_null(strstr(err.text, "'UNSET_TOKEN'"));
    assert_non_null(strstr(err.text, "not set"));
    /* Set but empty counts as unset: an empty token is no token. */
    assert_int_equal(header_error(&f->ctx, "Bearer {{env.EMPTY}}", &err), -DRV_ECONFIG);
    assert_int_equal(body_error(&f->ctx, "{\"t\": \"{{env.UNSET}}\"}", &err), -DRV_ECONFIG);
    assert_string_equal(err.field, "dispatch.body.t");
    /* A value that is not UTF-8 is refused, and not shown. */
    assert_int_equal(body_error(&f->ctx, "{\"t\": \"{{env.BAD_UTF8}}\"}", &err), -DRV_ECONFIG);
    assert_null(strstr(err.text, "\xff"));
    /* A missing env variable fails the whole request, naming it. */
    json_t *d = load(github_dispatch);
    fake_env = (const char *const[]){NULL};
    struct template_request r;
    assert_int_equal(template_render_request(d, &f->ctx, &r, &err), -DRV_ECONFIG);
    assert_string_equal(err.field, "dispatch.headers.Authorization");
    assert_non_null(strstr(err.text, "GITHUB_TOKEN"));
    fake_env = default_env;
    json_decref(d);
    /* A NULL getenv_fn reads the process environment. */
    struct template_ctx c = f->ctx;
    c.getenv_fn = NULL;
    assert_int_equal(setenv("DRV_TEMPLATE_TEST_VAR", "from-process", 1), 0);
    expect_body(&c, "\"{{env.DRV_TEMPLATE_TEST_VAR}}\"", "\"from-process\"");
    assert_int_equal(unsetenv("DRV_TEMPLATE_TEST_VAR"), 0);
    assert_int_equal(body_error(&c, "\"{{env.DRV_TEMPLATE_TEST_VAR}}\"", &err), -DRV_ECONFIG);
}

/* ---- validation ---- */

static void test_validate_refuses(void **state)
{
    (void)state;
    static const struct {
        const char *dispatch, *field, *in_message;
    } cases[] = {
        {"{\"url\": \"https://x/\", \"body\": {\"inputs\": {\"job_id\": \"{{job.name}}\"}}}",
         "dispatch.body.inputs.job_id", "unknown placeholder '{{job.name}}'"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{job.id\"}}", "dispatch.body.a",
         "never closed"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"x {{job.id} y\"}}", "dispatch.body.a",
         "never closed"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{\"}}", "dispatch.body.a", "never closed"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{}}\"}}", "dispatch.body.a", "empty"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{  }}\"}}", "dispatch.body.a", "empty"},
        {"{\"url\": \"https://x/\", \"body\": [\"ok\", \"{{payload.}}\"]}", "dispatch.body[1]",
         "payload path"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{payload..a}}\"}}", "dispatch.body.a",
         "payload path"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{payload.a.}}\"}}", "dispatch.body.a",
         "payload path"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{payload.a b}}\"}}", "dispatch.body.a",
         "payload path"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{payload.a/b}}\"}}", "dispatch.body.a",
         "payload path"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": "
         "\"{{payload.a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q}}\"}}",
         "dispatch.body.a", "payload path"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{env.}}\"}}", "dispatch.body.a", "env"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{env.1X}}\"}}", "dispatch.body.a", "env"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{env.A-B}}\"}}", "dispatch.body.a", "env"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{env.DROVER_ADMIN_TOKEN}}\"}}",
         "dispatch.body.a", "DROVER_"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{env}}\"}}", "dispatch.body.a", "unknown"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{JOB.ID}}\"}}", "dispatch.body.a",
         "unknown"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{job.id | upper}}\"}}", "dispatch.body.a",
         "filter"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{job.id |}}\"}}", "dispatch.body.a",
         "filter"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{ | string}}\"}}", "dispatch.body.a",
         "empty"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"{{{job.id}}}\"}}", "dispatch.body.a",
         "unknown"},
        {"{\"url\": \"https://x/\", \"body\": {\"a\": \"ok {{job.id}} then {{job.idd}}\"}}",
         "dispatch.body.a", "job.idd"},
        {"{\"url\": \"https://x/{{job.nope}}\"}", "dispatch.url", "unknown"},
        {"{\"url\": \"https://x/{{job.id\"}", "dispatch.url", "never closed"},
        {"{\"url\": 5}", "dispatch.url", "string"},
        {"{\"url\": \"https://x/\", \"headers\": {\"Authorization\": \"Bearer {{env.GH TOKEN}}\"}}",
         "dispatch.headers.Authorization", "env"},
        {"{\"url\": \"https://x/\", \"headers\": {\"A\": \"{{job.id\"}}", "dispatch.headers.A",
         "never closed"},
        {"{\"url\": \"https://x/\", \"headers\": {\"A\": 1}}", "dispatch.headers.A", "string"},
        {"{\"url\": \"https://x/\", \"headers\": []}", "dispatch.headers", "object"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_invalid(cases[i].dispatch, cases[i].field, cases[i].in_message);

    /* A name longer than TEMPLATE_NAME_MAX. */
    char text[512];
    char *name = tu_repeat('a', TEMPLATE_NAME_MAX);
    snprintf(text, sizeof(text), "{\"url\": \"https://x/\", \"body\": \"{{payload.%s}}\"}", name);
    expect_invalid(text, "dispatch.body", "longer");
    name[TEMPLATE_NAME_MAX - strlen("payload.")] = '\0';
    snprintf(text, sizeof(text), "{\"url\": \"https://x/\", \"body\": \"{{payload.%s}}\"}", name);
    expect_valid(text);
    free(name);

    struct errmsg err;
    json_t *not_object = json_array();
    assert_int_equal(template_validate(not_object, &err), -DRV_EBAD_FIELD);
    json_decref(not_object);
}

static void test_validate_accepts(void **state)
{
    (void)state;
    expect_valid(github_dispatch);
    expect_valid(agent_dispatch);
    expect_valid("{}");
    expect_valid("{\"url\": \"https://x/\", \"body\": null}");
    expect_valid("{\"url\": \"https://x/\", \"body\": \"{{payload}}\"}");
    expect_valid("{\"url\": \"https://x/\", \"body\": [\"{{ job.id }}\", \"{{\\tjob.id\\t}}\"]}");
    expect_valid("{\"url\": \"https://x/\", \"body\": \"{{payload.a-b.c_d.0.E9}}\"}");
    expect_valid("{\"url\": \"https://x/\", \"body\": \"{{env._lower_ok_1}}\"}");
    expect_valid("{\"url\": \"https://x/\", \"body\": \"{{env.DROVERX}}\"}");
    expect_valid("{\"url\": \"https://x/\", \"body\": \"\\\\{{not a placeholder\"}");
    expect_valid("{\"url\": \"https://x/\", \"body\": \"}} {{job.id}} }}\"}");
    /* Every known name, in every part. */
    const char *names[] = {"job.id",         "job.attempt", "checkpoints", "callback.url",
                           "callback.token", "payload",     "payload.a.b", "env.GITHUB_TOKEN"};
    char text[512];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(text, sizeof(text),
                 "{\"url\": \"https://x/{{%s}}\", \"headers\": {\"H\": \"{{%s}}\"},"
                 " \"body\": {\"a\": \"{{%s}}\", \"b\": \"{{%s | string}}\"}}",
                 names[i], names[i], names[i], names[i]);
        expect_valid(text);
    }
}

/* Keys and names are quoted in messages; however they are cut, the text stays UTF-8. */
static void test_messages_stay_utf8(void **state)
{
    (void)state;
    const char *chars[] = {"\xc3\xa9", "\xe2\x98\x83", "\xf0\x9f\x98\x80"}; /* é ☃ 😀 */
    for (size_t c = 0; c < sizeof(chars) / sizeof(chars[0]); c++) {
        for (size_t shift = 0; shift < 4; shift++) {
            char key[512] = "", name[256] = "";
            memset(key, 'k', shift);
            memset(name, 'n', shift);
            for (int i = 0; i < 60; i++)
                strcat(key, chars[c]);
            for (int i = 0; i < 20; i++)
                strcat(name, chars[c]);
            json_t *d =
                json_pack("{s:s, s:{s:{s:s}}}", "url", "https://x/", "body", key, key, name);
            /* name is not a known placeholder: wrap it in braces. */
            char tmpl[300];
            snprintf(tmpl, sizeof(tmpl), "{{%s}}", name);
            json_object_set_new(json_object_get(json_object_get(d, "body"), key), key,
                                json_string(tmpl));
            struct errmsg err = {0};
            assert_int_equal(template_validate(d, &err), -DRV_EBAD_FIELD);
            json_t *text = json_string(err.text), *field = json_string(err.field);
            if (text == NULL || field == NULL)
                fail_msg("message or field is not UTF-8 (char %zu, shift %zu): %s", c, shift,
                         err.text);
            assert_non_null(strstr(err.text, "unknown placeholder"));
            json_decref(text);
            json_decref(field);
            json_decref(d);
        }
    }
}

/* ---- redaction ---- */

static void test_redacted_request(void **state)
{
    struct fixture *f = *state;
    json_t *d =
        load("{\"url\": "
             "\"https://x.example/run/{{payload.vm}}?k={{env.AGENT_KEY}}&t={{callback.token}}\","
             " \"headers\": {\"Authorization\": \"Bearer {{env.GITHUB_TOKEN}}\","
             "               \"X-Api-Key\": \"literal-key\","
             "               \"X-Callback\": \"{{callback.token}}\","
             "               \"X-Mixed\": \"id {{job.id}} {{env.AGENT_KEY}}\","
             "               \"Accept\": \"application/json\","
             "               \"X-Job\": \"{{job.id}}\"},"
             " \"body\": {\"token\": \"{{callback.token}}\", \"key\": \"{{env.AGENT_KEY}}\","
             "            \"text\": \"k={{env.AGENT_KEY}}\", \"vm\": \"{{payload.vm}}\"}}");
    json_t *shown = NULL;
    struct errmsg err = {0};
    int rc = template_request_redacted(d, &f->ctx, &shown, &err);
    if (rc != 0)
        fail_msg("rc %d (%s: %s)", rc, err.field, err.text);
    json_t *want =
        load("{\"method\": \"POST\","
             " \"url\": \"https://x.example/run/web-1?k=<redacted>&t=<redacted>\","
             " \"headers\": {\"Authorization\": \"<redacted>\", \"X-Api-Key\": \"<redacted>\","
             "               \"X-Callback\": \"<redacted>\", \"X-Mixed\": \"<redacted>\","
             "               \"Accept\": \"application/json\", \"X-Job\": \"" JOB_ID "\"},"
             " \"body\": {\"token\": \"<redacted>\", \"key\": \"<redacted>\","
             "            \"text\": \"k=<redacted>\", \"vm\": \"web-1\"}}");
    assert_json_equal(shown, want);
    char *text = json_dumps(shown, 0);
    assert_null(strstr(text, GH_TOKEN));
    assert_null(strstr(text, "k-123"));
    assert_null(strstr(text, CB_TOKEN));
    free(text);
    json_decref(want);
    json_decref(shown);

    /* The environment is not read at all: an unset variable still shows. */
    fake_env = (const char *const[]){NULL};
    assert_int_equal(template_request_redacted(d, &f->ctx, &shown, &err), 0);
    json_decref(shown);
    fake_env = default_env;

    /* A request without a body shows none. */
    json_t *bare = load("{\"url\": \"https://x.example/\", \"method\": \"PATCH\"}");
    assert_int_equal(template_request_redacted(bare, &f->ctx, &shown, &err), 0);
    want = load("{\"method\": \"PATCH\", \"url\": \"https://x.example/\", \"headers\": {}}");
    assert_json_equal(shown, want);
    json_decref(want);
    json_decref(shown);
    json_decref(bare);
    json_decref(d);
}

static void test_dispatch_redacted(void **state)
{
    (void)state;
    json_t *d = load(github_dispatch);
    json_t *shown = template_dispatch_redacted(d);
    assert_non_null(shown);
    const char *name;
    json_t *v;
    json_object_foreach(json_object_get(shown, "headers"), name, v)
    {
        assert_string_equal(json_string_value(v), TEMPLATE_REDACTED);
    }
    assert_int_equal(json_object_size(json_object_get(shown, "headers")), 3);
    assert_json_equal(json_object_get(shown, "body"), json_object_get(d, "body"));
    /* The template itself is untouched. */
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(d, "headers"), "Authorization")),
        "Bearer {{env.GITHUB_TOKEN}}");
    json_decref(shown);
    json_decref(d);
}

static void test_header_is_secret(void **state)
{
    (void)state;
    const char *secret[] = {"Authorization", "authorization",       "Proxy-Authorization",
                            "X-Auth-Token",  "X-API-Key",           "Cookie",
                            "X-Secret",      "X-Hub-Signature-256", "X-Password",
                            "Private-Token", "X-Session-Id"};
    const char *plain[] = {"Accept", "Content-Type", "X-GitHub-Api-Version", "User-Agent", "X-Job"};
    for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++) {
        if (!template_header_is_secret(secret[i]))
            fail_msg("'%s' not treated as secret", secret[i]);
    }
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        if (template_header_is_secret(plain[i]))
            fail_msg("'%s' treated as secret", plain[i]);
    }
}

/* Rendering an unvalidated template still refuses what validation would. */
static void test_render_unvalidated(void **state)
{
    struct fixture *f = *state;
    struct errmsg err;
    assert_int_equal(body_error(&f->ctx, "{\"a\": \"{{nope}}\"}", &err), -DRV_EBAD_FIELD);
    assert_string_equal(err.field, "dispatch.body.a");
    assert_int_equal(body_error(&f->ctx, "{\"a\": \"x {{job.id\"}", &err), -DRV_EBAD_FIELD);
    assert_int_equal(header_error(&f->ctx, "{{job.attempt", &err), -DRV_EBAD_FIELD);
    char *got = NULL;
    assert_int_equal(template_render_url("ftp://x/{{job.id}}", &f->ctx, &got, &err),
                     -DRV_EBAD_FIELD);
    assert_null(got);
    /* A context without a callback token cannot fill {{callback.token}}. */
    struct template_ctx c = f->ctx;
    c.callback_token = NULL;
    assert_int_equal(body_error(&c, "\"{{callback.token}}\"", &err), -DRV_EINTERNAL);
    assert_non_null(strstr(err.text, "callback.token"));
}

static void test_body_string_cap(void **state)
{
    struct fixture *f = *state;
    json_t *big = json_object();
    char *value = tu_repeat('v', TEMPLATE_STRING_MAX / 2 + 1);
    json_object_set_new(big, "v", json_string(value));
    struct template_ctx c = f->ctx;
    c.payload = big;
    struct errmsg err;
    /* A whole value is not capped (the payload's own limit applies) ... */
    json_t *t = json_string("{{payload.v}}");
    json_t *got = NULL;
    assert_int_equal(template_render_body(t, &c, &got, &err), 0);
    assert_int_equal(json_string_length(got), TEMPLATE_STRING_MAX / 2 + 1);
    json_decref(got);
    json_decref(t);
    /* ... text built from it is. */
    assert_int_equal(body_error(&c, "\"{{payload.v}}{{payload.v}}\"", &err), -DRV_ETOO_LARGE);
    assert_string_equal(err.field, "dispatch.body");
    free(value);
    json_decref(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_github_workflow_dispatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vm_agent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_whole_string_keeps_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text_interpolation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_literal_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nested_payload_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deep_nesting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_url_encoding, setup, teardown),
        cmocka_unit_test(test_url_host_is_literal),
        cmocka_unit_test_setup_teardown(test_header_injection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env, setup, teardown),
        cmocka_unit_test(test_validate_refuses),
        cmocka_unit_test(test_validate_accepts),
        cmocka_unit_test(test_messages_stay_utf8),
        cmocka_unit_test_setup_teardown(test_redacted_request, setup, teardown),
        cmocka_unit_test(test_dispatch_redacted),
        cmocka_unit_test(test_header_is_secret),
        cmocka_unit_test_setup_teardown(test_render_unvalidated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_string_cap, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
