/*
 * template.c - dispatch templates: find the {{placeholders}} in a queue's
 * dispatch {url, headers, body}, check them when the policy is set, and
 * fill them in for one job (template.h has the rules).
 *
 * One scanner splits a template string into literal pieces and
 * placeholders; validation and rendering both walk the dispatch with it,
 * keeping the location (`dispatch.body.inputs.job_id`) for messages.
 */
#include "template.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "job.h"
#include "job_json.h"

#define WHERE_MAX       256 /* bytes of a location such as dispatch.body.inputs.job_id */
#define QUOTE_MAX       64  /* bytes of a placeholder name quoted in a message */
#define WHERE_QUOTE_MAX 96  /* bytes of a location quoted in a message */
#define ENV_PREFIX      "DROVER_"

#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)

enum ph_kind {
    PH_JOB_ID,
    PH_JOB_ATTEMPT,
    PH_CHECKPOINTS,
    PH_CALLBACK_URL,
    PH_CALLBACK_TOKEN,
    PH_PAYLOAD,
    PH_ENV,
};

static const struct {
    const char *name;
    enum ph_kind kind;
} fixed_names[] = {
    {"job.id", PH_JOB_ID},
    {"job.attempt", PH_JOB_ATTEMPT},
    {"checkpoints", PH_CHECKPOINTS},
    {"callback.url", PH_CALLBACK_URL},
    {"callback.token", PH_CALLBACK_TOKEN},
    {"payload", PH_PAYLOAD},
};

/* A known placeholder; the pointers are into the template. */
struct placeholder {
    enum ph_kind kind;
    const char *name; /* between the braces, blanks trimmed */
    size_t name_len;
    const char *arg; /* the PATH of payload.PATH or the NAME of env.NAME; "" otherwise */
    size_t arg_len;
    bool as_string; /* `| string`: text even when it is a whole body string */
};

/* One piece of a template string: literal text, or a placeholder's name. */
struct piece {
    bool is_placeholder;
    const char *text;
    size_t len;
};

/* A template string being split into pieces. It may hold NUL bytes. */
struct scanner {
    const char *s;
    size_t len;
    size_t pos;
};

/* Text that can grow up to max bytes; always NUL-terminated once it has data. */
struct buf {
    char *data;
    size_t len, cap, max;
};

/* A walk over a dispatch: validating (ctx NULL) or rendering. */
struct walk {
    const struct template_ctx *ctx;
    bool redact; /* secrets render as TEMPLATE_REDACTED; env is not read */
    struct errmsg *err;
    char where[WHERE_MAX];
    size_t where_len;
};

enum text_mode { TEXT_BODY, TEXT_URL, TEXT_HEADER };

/* ---- locations and messages ---- */

/* The longest prefix of s (len bytes) of at most max bytes that ends on a character. */
static size_t utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

/* Drop a character that truncation cut short at the end of s. */
static void utf8_trim_tail(char *s)
{
    size_t n = strlen(s), lead = n;
    while (lead > 0 && n - lead < 3 && ((unsigned char)s[lead - 1] & 0xC0) == 0x80)
        lead--;
    if (lead == 0)
        return;
    unsigned char c = (unsigned char)s[lead - 1];
    size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (need > n - (lead - 1))
        s[lead - 1] = '\0';
}

static size_t where_vpush(struct walk *w, const char *fmt, va_list ap)
{
    size_t old = w->where_len;
    vsnprintf(w->where + old, sizeof(w->where) - old, fmt, ap);
    utf8_trim_tail(w->where);
    w->where_len = strlen(w->where);
    return old;
}

/* Append to the location (cut short when long); returns the length to restore. */
static size_t where_push(struct walk *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static size_t where_push(struct walk *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t old = where_vpush(w, fmt, ap);
    va_end(ap);
    return old;
}

static void where_pop(struct walk *w, size_t old)
{
    w->where_len = old;
    w->where[old] = '\0';
}

static void where_set(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void where_set(struct walk *w, const char *fmt, ...)
{
    where_pop(w, 0);
    va_list ap;
    va_start(ap, fmt);
    where_vpush(w, fmt, ap);
    va_end(ap);
}

/*
 * Fail with rc, the location as the field and "'location': message" as the
 * text, both valid UTF-8 however they were cut (they go out in JSON).
 */
static int fail(struct walk *w, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(struct walk *w, int rc, const char *fmt, ...)
{
    char msg[sizeof(w->err->text)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* Cut a long location so the reason still fits. */
    int n = (int)utf8_cut(w->where, w->where_len, WHERE_QUOTE_MAX);
    errmsg_field(w->err, rc, w->where, "'%.*s%s': %s", n, w->where,
                 (size_t)n < w->where_len ? "..." : "", msg);
    utf8_trim_tail(w->err->text);
    utf8_trim_tail(w->err->field);
    return rc;
}

/* ---- the scanner ---- */

static bool opens_at(const char *s, size_t left)
{
    return left >= 2 && s[0] == '{' && s[1] == '{';
}

static bool escape_at(const char *s, size_t left)
{
    return left >= 3 && s[0] == '\\' && opens_at(s + 1, left - 1);
}

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

/*
 * The next piece: 1, or 0 at the end, or -1 for a `{{` that is never closed
 * (then p->text is where it opened).
 */
static int scan_next(struct scanner *sc, struct piece *p)
{
    const char *s = sc->s + sc->pos;
    size_t left = sc->len - sc->pos;
    if (left == 0)
        return 0;
    if (escape_at(s, left)) {
        *p = (struct piece){.is_placeholder = false, .text = s + 1, .len = 2};
        sc->pos += 3;
        return 1;
    }
    if (opens_at(s, left)) {
        size_t close = 2;
        while (close + 1 < left && !(s[close] == '}' && s[close + 1] == '}'))
            close++;
        if (close + 1 >= left) {
            *p = (struct piece){.is_placeholder = true, .text = s, .len = left};
            return -1;
        }
        size_t a = 2, b = close;
        while (a < b && blank(s[a]))
            a++;
        while (b > a && blank(s[b - 1]))
            b--;
        *p = (struct piece){.is_placeholder = true, .text = s + a, .len = b - a};
        sc->pos += close + 2;
        return 1;
    }
    size_t n = 1;
    while (n < left && !opens_at(s + n, left - n) && !escape_at(s + n, left - n))
        n++;
    *p = (struct piece){.is_placeholder = false, .text = s, .len = n};
    sc->pos += n;
    return 1;
}

/* ---- placeholder names ---- */

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool path_char(char c)
{
    return is_alpha(c) || is_digit(c) || c == '_' || c == '-';
}

/* Dot-separated non-empty segments of [A-Za-z0-9_-], at most TEMPLATE_PATH_DEPTH. */
static bool payload_path_valid(const char *p, size_t n)
{
    size_t segments = 1, seg_len = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '.') {
            if (seg_len == 0 || ++segments > TEMPLATE_PATH_DEPTH)
                return false;
            seg_len = 0;
        } else if (path_char(p[i])) {
            seg_len++;
        } else {
            return false;
        }
    }
    return seg_len > 0;
}

static bool env_name_valid(const char *p, size_t n)
{
    if (n == 0 || !(is_alpha(p[0]) || p[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++) {
        if (!(is_alpha(p[i]) || is_digit(p[i]) || p[i] == '_'))
            return false;
    }
    return true;
}

static bool has_prefix(const char *s, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    return n >= k && memcmp(s, prefix, k) == 0;
}

/* Is text (blanks around it allowed) exactly word? */
static bool is_word(const char *text, size_t len, const char *word)
{
    while (len > 0 && blank(text[0]))
        text++, len--;
    while (len > 0 && blank(text[len - 1]))
        len--;
    return len == strlen(word) && memcmp(text, word, len) == 0;
}

/* Parse what is between the braces (blanks trimmed); NULL, or why it is refused. */
static const char *placeholder_parse(const char *text, size_t len, struct placeholder *ph)
{
    *ph = (struct placeholder){.name = text, .name_len = len, .arg = ""};
    if (len > TEMPLATE_NAME_MAX)
        return "placeholder longer than " STRINGIFY(TEMPLATE_NAME_MAX) " bytes";
    const char *bar = memchr(text, '|', len);
    if (bar) {
        if (!is_word(bar + 1, len - (size_t)(bar + 1 - text), "string"))
            return "unknown filter (the one filter is '| string')";
        ph->as_string = true;
        len = (size_t)(bar - text);
        while (len > 0 && blank(text[len - 1]))
            len--;
        ph->name_len = len;
    }
    const char *name = text;
    if (len == 0)
        return "empty placeholder";
    for (size_t i = 0; i < sizeof(fixed_names) / sizeof(fixed_names[0]); i++) {
        if (strlen(fixed_names[i].name) == len && memcmp(fixed_names[i].name, name, len) == 0) {
            ph->kind = fixed_names[i].kind;
            return NULL;
        }
    }
    if (has_prefix(name, len, "payload.")) {
        ph->kind = PH_PAYLOAD;
        ph->arg = name + 8;
        ph->arg_len = len - 8;
        return payload_path_valid(ph->arg, ph->arg_len)
                   ? NULL
                   : "malformed payload path (dot-separated names of A-Z a-z 0-9 _ -)";
    }
    if (has_prefix(name, len, "env.")) {
        ph->kind = PH_ENV;
        ph->arg = name + 4;
        ph->arg_len = len - 4;
        if (!env_name_valid(ph->arg, ph->arg_len))
            return "malformed env variable name";
        if (has_prefix(ph->arg, ph->arg_len, ENV_PREFIX))
            return "drover's own " ENV_PREFIX "* variables are not available to templates";
        return NULL;
    }
    return "unknown placeholder";
}

static int placeholder_error(struct walk *w, const struct piece *p, const char *why)
{
    int n = (int)utf8_cut(p->text, p->len, QUOTE_MAX);
    return fail(w, -DRV_EBAD_FIELD, "%s '{{%.*s%s}}'", why, n, p->text,
                (size_t)n < p->len ? "..." : "");
}

static int unclosed_error(struct walk *w, const struct piece *p)
{
    int n = (int)utf8_cut(p->text, p->len, QUOTE_MAX);
    return fail(w, -DRV_EBAD_FIELD, "'{{' is never closed in '%.*s%s'", n, p->text,
                (size_t)n < p->len ? "..." : "");
}

/* The next piece, with its placeholder parsed: 1, 0 at the end, or an error. */
static int next_piece(struct walk *w, struct scanner *sc, struct piece *p, struct placeholder *ph)
{
    int got = scan_next(sc, p);
    if (got < 0)
        return unclosed_error(w, p);
    if (got > 0 && p->is_placeholder) {
        const char *why = placeholder_parse(p->text, p->len, ph);
        if (why)
            return placeholder_error(w, p, why);
    }
    return got;
}

/* ---- validation ---- */

/* Can a header value carry this: no control characters but tab? */
static bool header_text_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

static int check_text(struct walk *w, const char *s, size_t len)
{
    struct scanner sc = {.s = s, .len = len};
    struct piece p;
    struct placeholder ph;
    int got;
    while ((got = next_piece(w, &sc, &p, &ph)) > 0)
        ;
    return got;
}

/* Where the URL's path begins: after "scheme://authority". */
static size_t url_path_start(const char *url)
{
    const char *sep = strstr(url, "://");
    size_t start = sep ? (size_t)(sep - url) + 3 : 0;
    return start + strcspn(url + start, "/?#");
}

static int check_url(struct walk *w, const char *url)
{
    size_t path = url_path_start(url);
    for (size_t i = 0; i + 1 < path; i++) {
        if (opens_at(url + i, path - i))
            return fail(w, -DRV_EBAD_FIELD,
                        "placeholders may only be in the path, query or fragment, "
                        "not in the scheme, host or port");
    }
    return check_text(w, url, strlen(url));
}

static int check_value(struct walk *w, const json_t *v, int depth)
{
    if (json_is_string(v))
        return check_text(w, json_string_value(v), json_string_length(v));
    if (!json_is_array(v) && !json_is_object(v))
        return 0;
    if (depth >= TEMPLATE_DEPTH_MAX)
        return fail(w, -DRV_EBAD_FIELD, "nests deeper than %d arrays and objects",
                    TEMPLATE_DEPTH_MAX);
    int rc = 0;
    size_t old;
    if (json_is_array(v)) {
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item)
        {
            old = where_push(w, "[%zu]", i);
            rc = check_value(w, item, depth + 1);
            where_pop(w, old);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    const char *key;
    json_t *item;
    json_object_foreach((json_t *)v, key, item)
    {
        old = where_push(w, ".%s", key);
        rc = check_value(w, item, depth + 1);
        where_pop(w, old);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int template_validate(const json_t *dispatch, struct errmsg *err)
{
    struct walk w = {.err = err};
    where_set(&w, "dispatch");
    if (!json_is_object(dispatch))
        return fail(&w, -DRV_EBAD_FIELD, "must be an object");
    const json_t *url = json_object_get(dispatch, "url");
    if (url) {
        where_set(&w, "dispatch.url");
        if (!json_text(url))
            return fail(&w, -DRV_EBAD_FIELD, "must be a string");
        int rc = check_url(&w, json_text(url));
        if (rc < 0)
            return rc;
    }
    const json_t *headers = json_object_get(dispatch, "headers");
    if (headers) {
        where_set(&w, "dispatch.headers");
        if (!json_is_object(headers))
            return fail(&w, -DRV_EBAD_FIELD, "must be an object");
        const char *name;
        size_t name_len;
        json_t *value;
        json_object_keylen_foreach((json_t *)headers, name, name_len, value)
        {
            where_set(&w, "dispatch.headers.%s", name);
            const char *t = json_text(value);
            if (name_len != strlen(name) || !t || !header_text_ok(t, strlen(t)))
                return fail(&w, -DRV_EBAD_FIELD,
                            "must be a one-line string without control characters, under a "
                            "name without NUL");
            int rc = check_text(&w, t, strlen(t));
            if (rc < 0)
                return rc;
        }
    }
    const json_t *body = json_object_get(dispatch, "body");
    where_set(&w, "dispatch.body");
    return body ? check_value(&w, body, 0) : 0;
}

/* ---- values ---- */

static const char *process_getenv(const char *name)
{
    return getenv(name);
}

/* The value at a payload path, or NULL when it is not there. */
static const json_t *payload_walk(const json_t *v, const char *path, size_t len)
{
    size_t pos = 0;
    while (v && pos < len) {
        size_t n = 0;
        while (pos + n < len && path[pos + n] != '.')
            n++;
        const char *seg = path + pos;
        if (json_is_object(v)) {
            v = json_object_getn(v, seg, n);
        } else if (json_is_array(v)) {
            size_t index = 0;
            for (size_t i = 0; i < n; i++) {
                if (!is_digit(seg[i]) || index > SIZE_MAX / 10 - 1)
                    return NULL;
                index = index * 10 + (size_t)(seg[i] - '0');
            }
            v = json_array_get(v, index);
        } else {
            return NULL;
        }
        pos += n + 1;
    }
    return v;
}

static int no_value_error(struct walk *w, const struct placeholder *ph)
{
    return fail(w, -DRV_EINTERNAL, "'{{%.*s}}' has no value here", (int)ph->name_len, ph->name);
}

/* A string from the context as JSON; -DRV_EINTERNAL when the caller gave none. */
static int ctx_string(struct walk *w, const struct placeholder *ph, const char *s, json_t **out)
{
    if (s == NULL)
        return no_value_error(w, ph);
    *out = json_string(s);
    return *out ? 0 : -DRV_ENOMEM;
}

static int env_value(struct walk *w, const struct placeholder *ph, json_t **out)
{
    char name[TEMPLATE_NAME_MAX + 1];
    snprintf(name, sizeof(name), "%.*s", (int)ph->arg_len, ph->arg);
    const char *(*get)(const char *) = w->ctx->getenv_fn ? w->ctx->getenv_fn : process_getenv;
    const char *value = get(name);
    /* Like config_load_env(): empty is unset; an empty token is no token. */
    if (value == NULL || value[0] == '\0')
        return fail(w, -DRV_ECONFIG, "env variable '%s' is not set in drover's environment", name);
    *out = json_string(value);
    if (*out == NULL) /* the value is not shown: it is a secret */
        return fail(w, -DRV_ECONFIG, "env variable '%s' is not valid UTF-8", name);
    return 0;
}

/*
 * The value of ph as JSON (a new reference; it may be shared with ctx, so
 * never change it) and whether it is a secret.
 */
static int resolve(struct walk *w, const struct placeholder *ph, json_t **out, bool *secret)
{
    const struct template_ctx *ctx = w->ctx;
    *out = NULL;
    *secret = ph->kind == PH_ENV || ph->kind == PH_CALLBACK_TOKEN;
    if (*secret && w->redact) {
        *out = json_string(TEMPLATE_REDACTED);
        return *out ? 0 : -DRV_ENOMEM;
    }
    switch (ph->kind) {
    case PH_JOB_ID: return ctx_string(w, ph, ctx->job_id, out);
    case PH_CALLBACK_URL: return ctx_string(w, ph, ctx->callback_url, out);
    case PH_CALLBACK_TOKEN: return ctx_string(w, ph, ctx->callback_token, out);
    case PH_JOB_ATTEMPT: *out = json_integer(ctx->attempt); break;
    case PH_CHECKPOINTS:
        *out = ctx->checkpoints ? json_incref((json_t *)ctx->checkpoints) : json_object();
        break;
    case PH_PAYLOAD: {
        const json_t *payload = ctx->payload ? ctx->payload : json_null();
        const json_t *v = payload_walk(payload, ph->arg, ph->arg_len);
        if (v == NULL)
            return fail(w, -DRV_EBAD_FIELD, "the job's payload has no field '%.*s' for '{{%.*s}}'",
                        (int)ph->arg_len, ph->arg, (int)ph->name_len, ph->name);
        *out = json_incref((json_t *)v);
        break;
    }
    case PH_ENV: return env_value(w, ph, out);
    }
    return *out ? 0 : -DRV_ENOMEM;
}

/* ---- text ---- */

static int buf_add(struct buf *b, const char *s, size_t n)
{
    if (n > b->max - b->len)
        return -DRV_ETOO_LARGE;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (data == NULL)
            return -DRV_ENOMEM;
        b->data = data;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static bool unreserved(unsigned char c)
{
    return is_alpha((char)c) || is_digit((char)c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* Add s percent-encoded outside RFC 3986's unreserved characters. */
static int buf_add_encoded(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
        int rc = unreserved(c) ? buf_add(b, s + i, 1) : buf_add(b, esc, 3);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Add a value as text: strings as they are, the rest as compact JSON. */
static int add_value_text(struct walk *w, const struct placeholder *ph, const json_t *v,
                          bool secret, enum text_mode mode, struct buf *out)
{
    char *dumped = NULL;
    const char *s;
    size_t n;
    if (json_is_string(v)) {
        s = json_string_value(v);
        n = json_string_length(v);
    } else {
        dumped = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (dumped == NULL)
            return -DRV_ENOMEM;
        s = dumped;
        n = strlen(dumped);
    }
    int rc;
    if (mode == TEXT_HEADER && !header_text_ok(s, n))
        rc = fail(w, -DRV_EBAD_FIELD,
                  "the value of '{{%.*s}}' holds a line break or another control "
                  "character, which a header cannot carry",
                  (int)ph->name_len, ph->name);
    else if (mode == TEXT_URL && !(secret && w->redact))
        rc = buf_add_encoded(out, s, n);
    else
        rc = buf_add(out, s, n);
    free(dumped);
    return rc;
}

static int too_large_error(struct walk *w, size_t max)
{
    return fail(w, -DRV_ETOO_LARGE, "would be longer than %zu bytes", max);
}

/* Render template text s into out (empty, with its cap set). */
static int render_text(struct walk *w, const char *s, size_t len, enum text_mode mode,
                       struct buf *out)
{
    struct scanner sc = {.s = s, .len = len};
    struct piece p;
    struct placeholder ph;
    int rc;
    while ((rc = next_piece(w, &sc, &p, &ph)) > 0) {
        if (!p.is_placeholder) {
            if (mode == TEXT_HEADER && !header_text_ok(p.text, p.len))
                return fail(w, -DRV_EBAD_FIELD, "holds a line break or another control character");
            rc = buf_add(out, p.text, p.len);
        } else {
            json_t *v;
            bool secret;
            rc = resolve(w, &ph, &v, &secret);
            if (rc < 0)
                return rc;
            rc = add_value_text(w, &ph, v, secret, mode, out);
            json_decref(v);
        }
        if (rc == -DRV_ETOO_LARGE)
            return too_large_error(w, out->max);
        if (rc < 0)
            return rc;
    }
    if (rc == 0 && out->data == NULL) /* an empty template renders as "" */
        rc = buf_add(out, "", 0);
    return rc;
}

static int render_string(struct walk *w, const char *s, size_t len, enum text_mode mode, size_t max,
                         char **out)
{
    struct buf b = {.max = max};
    int rc = render_text(w, s, len, mode, &b);
    if (rc < 0) {
        free(b.data);
        return rc;
    }
    *out = b.data;
    return 0;
}

static int render_url(struct walk *w, const char *tmpl, char **out)
{
    char *url = NULL;
    int rc = render_string(w, tmpl, strlen(tmpl), TEXT_URL, JOB_URL_MAX, &url);
    if (rc < 0)
        return rc;
    if (!url_is_http(url)) {
        free(url);
        return fail(w, -DRV_EBAD_FIELD, "does not render to an http:// or https:// URL");
    }
    *out = url;
    return 0;
}

/* ---- body ---- */

static int render_node(struct walk *w, const json_t *t, int depth, json_t **out);

/* A body string: one whole placeholder keeps its value's type; else text. */
static int render_body_string(struct walk *w, const json_t *t, json_t **out)
{
    const char *s = json_string_value(t);
    size_t len = json_string_length(t);
    struct scanner sc = {.s = s, .len = len};
    struct piece p;
    struct placeholder ph;
    bool whole = scan_next(&sc, &p) == 1 && p.is_placeholder && sc.pos == len;
    if (whole) {
        const char *why = placeholder_parse(p.text, p.len, &ph);
        if (why)
            return placeholder_error(w, &p, why);
    }
    if (whole && !ph.as_string) {
        json_t *v;
        bool secret;
        int rc = resolve(w, &ph, &v, &secret);
        if (rc < 0)
            return rc;
        *out = json_deep_copy(v); /* the result shares nothing with ctx */
        json_decref(v);
        return *out ? 0 : -DRV_ENOMEM;
    }
    struct buf b = {.max = TEMPLATE_STRING_MAX};
    int rc = render_text(w, s, len, TEXT_BODY, &b);
    if (rc == 0) {
        *out = json_stringn(b.data, b.len);
        rc = *out ? 0 : -DRV_ENOMEM; /* the pieces are UTF-8, so the whole is */
    }
    free(b.data);
    return rc;
}

static int render_array(struct walk *w, const json_t *t, int depth, json_t **out)
{
    json_t *arr = json_array();
    if (arr == NULL)
        return -DRV_ENOMEM;
    size_t i;
    json_t *item;
    json_array_foreach(t, i, item)
    {
        json_t *v = NULL;
        size_t old = where_push(w, "[%zu]", i);
        int rc = render_node(w, item, depth + 1, &v);
        where_pop(w, old);
        if (rc == 0 && json_array_append_new(arr, v) < 0)
            rc = -DRV_ENOMEM;
        if (rc < 0) {
            json_decref(arr);
            return rc;
        }
    }
    *out = arr;
    return 0;
}

static int render_object(struct walk *w, const json_t *t, int depth, json_t **out)
{
    json_t *obj = json_object();
    if (obj == NULL)
        return -DRV_ENOMEM;
    const char *key;
    size_t key_len;
    json_t *item;
    json_object_keylen_foreach((json_t *)t, key, key_len, item)
    {
        json_t *v = NULL;
        size_t old = where_push(w, ".%s", key);
        int rc = render_node(w, item, depth + 1, &v);
        where_pop(w, old);
        if (rc == 0 && json_object_setn_new(obj, key, key_len, v) < 0)
            rc = -DRV_ENOMEM;
        if (rc < 0) {
            json_decref(obj);
            return rc;
        }
    }
    *out = obj;
    return 0;
}

static int render_node(struct walk *w, const json_t *t, int depth, json_t **out)
{
    if (json_is_string(t))
        return render_body_string(w, t, out);
    if (json_is_array(t) || json_is_object(t)) {
        /* Validation refused deeper bodies; a body that skipped it stops here too. */
        if (depth >= TEMPLATE_DEPTH_MAX)
            return fail(w, -DRV_EBAD_FIELD, "nests deeper than %d arrays and objects",
                        TEMPLATE_DEPTH_MAX);
        return json_is_array(t) ? render_array(w, t, depth, out) : render_object(w, t, depth, out);
    }
    *out = json_deep_copy(t);
    return *out ? 0 : -DRV_ENOMEM;
}

/* ---- public rendering ---- */

int template_render_url(const char *tmpl, const struct template_ctx *ctx, char **out,
                        struct errmsg *err)
{
    struct walk w = {.ctx = ctx, .err = err};
    where_set(&w, "dispatch.url");
    return render_url(&w, tmpl, out);
}

int template_render_header(const char *name, const char *tmpl, const struct template_ctx *ctx,
                           char **out, struct errmsg *err)
{
    struct walk w = {.ctx = ctx, .err = err};
    where_set(&w, "dispatch.headers.%s", name);
    return render_string(&w, tmpl, strlen(tmpl), TEXT_HEADER, TEMPLATE_HEADER_MAX, out);
}

int template_render_body(const json_t *tmpl, const struct template_ctx *ctx, json_t **out,
                         struct errmsg *err)
{
    struct walk w = {.ctx = ctx, .err = err};
    where_set(&w, "dispatch.body");
    return render_node(&w, tmpl, 0, out);
}

/* Does the template text use an env variable or the callback token? */
static bool text_uses_secret(const char *s)
{
    struct scanner sc = {.s = s, .len = strlen(s)};
    struct piece p;
    struct placeholder ph;
    while (scan_next(&sc, &p) > 0) {
        if (p.is_placeholder && placeholder_parse(p.text, p.len, &ph) == NULL &&
            (ph.kind == PH_ENV || ph.kind == PH_CALLBACK_TOKEN))
            return true;
    }
    return false;
}

static int render_headers(struct walk *w, const json_t *tmpl, json_t **out)
{
    json_t *headers = json_object();
    if (headers == NULL)
        return -DRV_ENOMEM;
    const char *name;
    json_t *value;
    json_object_foreach((json_t *)tmpl, name, value)
    {
        where_set(w, "dispatch.headers.%s", name);
        const char *t = json_text(value);
        char *text = NULL;
        int rc = 0;
        if (t == NULL)
            rc = fail(w, -DRV_EBAD_FIELD, "must be a string");
        else if (w->redact && (template_header_is_secret(name) || text_uses_secret(t)))
            rc = (text = strdup(TEMPLATE_REDACTED)) ? 0 : -DRV_ENOMEM;
        else
            rc = render_string(w, t, strlen(t), TEXT_HEADER, TEMPLATE_HEADER_MAX, &text);
        if (rc == 0 && json_object_set_new(headers, name, json_string(text)) < 0)
            rc = -DRV_ENOMEM;
        free(text);
        if (rc < 0) {
            json_decref(headers);
            return rc;
        }
    }
    *out = headers;
    return 0;
}

static int render_request(struct walk *w, const json_t *dispatch, struct template_request *out)
{
    memset(out, 0, sizeof(*out));
    const char *method = json_text(json_object_get(dispatch, "method"));
    snprintf(out->method, sizeof(out->method), "%s", method ? method : "POST");
    const char *url = json_text(json_object_get(dispatch, "url"));
    const json_t *headers = json_object_get(dispatch, "headers");
    const json_t *body = json_object_get(dispatch, "body");
    int rc;
    where_set(w, "dispatch.url");
    if (url == NULL)
        rc = fail(w, -DRV_EBAD_FIELD, "must be a string");
    else
        rc = render_url(w, url, &out->url);
    if (rc == 0 && headers)
        rc = render_headers(w, headers, &out->headers);
    else if (rc == 0)
        rc = (out->headers = json_object()) ? 0 : -DRV_ENOMEM;
    if (rc == 0 && body) {
        where_set(w, "dispatch.body");
        rc = render_node(w, body, 0, &out->body);
    }
    if (rc < 0)
        template_request_release(out);
    return rc;
}

int template_render_request(const json_t *dispatch, const struct template_ctx *ctx,
                            struct template_request *out, struct errmsg *err)
{
    struct walk w = {.ctx = ctx, .err = err};
    return render_request(&w, dispatch, out);
}

void template_request_release(struct template_request *r)
{
    free(r->url);
    json_decref(r->headers);
    json_decref(r->body);
    memset(r, 0, sizeof(*r));
}

int template_request_redacted(const json_t *dispatch, const struct template_ctx *ctx, json_t **out,
                              struct errmsg *err)
{
    struct walk w = {.ctx = ctx, .redact = true, .err = err};
    struct template_request r;
    int rc = render_request(&w, dispatch, &r);
    if (rc < 0)
        return rc;
    *out = json_pack("{s:s, s:s, s:O}", "method", r.method, "url", r.url, "headers", r.headers);
    if (*out && r.body && json_object_set(*out, "body", r.body) < 0) {
        json_decref(*out);
        *out = NULL;
    }
    template_request_release(&r);
    return *out ? 0 : -DRV_ENOMEM;
}

/* ---- redaction ---- */

json_t *template_dispatch_redacted(const json_t *dispatch)
{
    json_t *copy = json_deep_copy(dispatch);
    json_t *headers = json_object_get(copy, "headers");
    for (void *it = json_object_iter(headers); it; it = json_object_iter_next(headers, it)) {
        if (json_object_iter_set_new(headers, it, json_string(TEMPLATE_REDACTED)) < 0) {
            json_decref(copy);
            return NULL;
        }
    }
    return copy;
}

bool template_header_is_secret(const char *name)
{
    static const char *const words[] = {"auth",     "cookie", "token",     "secret",     "key",
                                        "password", "passwd", "signature", "credential", "session"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        size_t n = strlen(words[i]);
        for (const char *p = name; *p; p++) {
            if (strncasecmp(p, words[i], n) == 0)
                return true;
        }
    }
    return false;
}
