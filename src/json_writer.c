/*
 * json_writer.c - JSON text in one pass (json_writer.h).
 */
#include "json_writer.h"

#include <stdlib.h>
#include <string.h>

#include "timeutil.h"

void json_writer_init(struct json_writer *w, char *buf, size_t cap)
{
    memset(w, 0, sizeof(*w));
    w->buf = buf;
    w->cap = cap;
}

/* Room for n more bytes and a NUL; false (and failed) when it cannot grow. */
static bool reserve(struct json_writer *w, size_t n)
{
    if (w->failed)
        return false;
    if (w->len + n + 1 <= w->cap)
        return true;
    size_t cap = w->cap ? w->cap * 2 : 256;
    while (cap < w->len + n + 1)
        cap *= 2;
    char *buf = w->heap ? realloc(w->buf, cap) : malloc(cap);
    if (buf == NULL) {
        w->failed = true;
        return false;
    }
    if (!w->heap && w->len)
        memcpy(buf, w->buf, w->len);
    w->buf = buf;
    w->cap = cap;
    w->heap = true;
    return true;
}

static void put(struct json_writer *w, const char *s, size_t n)
{
    if (reserve(w, n)) {
        memcpy(w->buf + w->len, s, n);
        w->len += n;
    }
}

/* Before a value: the comma between an array's members (an object's come with the key). */
static void value_begin(struct json_writer *w)
{
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (w->depth > 0) {
        if (w->has_member[w->depth - 1])
            put(w, ",", 1);
        w->has_member[w->depth - 1] = true;
    }
}

static void container_open(struct json_writer *w, char c)
{
    value_begin(w);
    if (w->depth == JSON_WRITER_DEPTH_MAX) {
        w->failed = true;
        return;
    }
    w->has_member[w->depth++] = false;
    put(w, &c, 1);
}

static void container_close(struct json_writer *w, char c)
{
    if (w->depth > 0)
        w->depth--;
    put(w, &c, 1);
}

void json_writer_object_begin(struct json_writer *w)
{
    container_open(w, '{');
}

void json_writer_object_end(struct json_writer *w)
{
    container_close(w, '}');
}

void json_writer_array_begin(struct json_writer *w)
{
    container_open(w, '[');
}

void json_writer_array_end(struct json_writer *w)
{
    container_close(w, ']');
}

/* The length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no surrogates), or 0. */
static size_t utf8_valid(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c >= 0xC2 && c <= 0xDF)
        return (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80 ? 4 : 0;
    }
    return 0; /* a continuation byte, C0, C1 or F5..FF */
}

/* s quoted, with jansson's escapes. A NUL ends the string, so no check reads past it. */
static void quoted(struct json_writer *w, const char *s)
{
    static const char hex[] = "0123456789ABCDEF"; /* upper case, as jansson writes it */
    const unsigned char *p = (const unsigned char *)s;
    put(w, "\"", 1);
    for (;;) {
        const unsigned char *run = p;
        while (*p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
            p++;
        put(w, (const char *)run, (size_t)(p - run));
        unsigned char c = *p;
        if (c == '\0')
            break;
        if (c >= 0x80) {
            size_t n = utf8_valid(p);
            if (n) {
                put(w, (const char *)p, n);
                p += n;
            } else {
                put(w, "\\uFFFD", 6);
                p++;
            }
            continue;
        }
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        const char *short_esc = c == '"'    ? "\\\""
                                : c == '\\' ? "\\\\"
                                : c == '\b' ? "\\b"
                                : c == '\f' ? "\\f"
                                : c == '\n' ? "\\n"
                                : c == '\r' ? "\\r"
                                : c == '\t' ? "\\t"
                                            : NULL;
        if (short_esc)
            put(w, short_esc, 2);
        else
            put(w, esc, sizeof(esc));
        p++;
    }
    put(w, "\"", 1);
}

void json_writer_key(struct json_writer *w, const char *key)
{
    if (w->depth > 0) {
        if (w->has_member[w->depth - 1])
            put(w, ",", 1);
        w->has_member[w->depth - 1] = true;
    }
    quoted(w, key);
    put(w, ":", 1);
    w->after_key = true;
}

void json_writer_string(struct json_writer *w, const char *s)
{
    value_begin(w);
    if (s)
        quoted(w, s);
    else
        put(w, "null", 4);
}

void json_writer_int(struct json_writer *w, int64_t v)
{
    value_begin(w);
    char digits[24], *end = digits + sizeof(digits), *p = end;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    put(w, p, (size_t)(end - p));
}

void json_writer_bool(struct json_writer *w, bool v)
{
    value_begin(w);
    put(w, v ? "true" : "false", v ? 4 : 5);
}

void json_writer_null(struct json_writer *w)
{
    value_begin(w);
    put(w, "null", 4);
}

void json_writer_time(struct json_writer *w, int64_t ms)
{
    value_begin(w);
    if (ms == 0) {
        put(w, "null", 4);
        return;
    }
    char text[TIME_RFC3339_LEN + 2];
    text[0] = '"';
    time_format_rfc3339(ms, text + 1);
    text[TIME_RFC3339_LEN] = '"';
    put(w, text, TIME_RFC3339_LEN + 1);
}

void json_writer_json(struct json_writer *w, const json_t *v, const char *dflt)
{
    value_begin(w);
    if (v == NULL) {
        put(w, dflt, strlen(dflt));
        return;
    }
    const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
    bool any = !w->failed && w->buf && w->cap > w->len + 1;
    size_t room = any ? w->cap - w->len - 1 : 0;
    size_t n = json_dumpb(v, any ? w->buf + w->len : NULL, room, flags);
    if (n == 0) {
        w->failed = true; /* out of memory, or a value jansson refuses */
    } else if (n <= room) {
        w->len += n;
    } else if (reserve(w, n)) {
        if (json_dumpb(v, w->buf + w->len, n, flags) == n)
            w->len += n;
        else
            w->failed = true;
    }
}

void json_writer_raw(struct json_writer *w, const char *text, const char *dflt)
{
    value_begin(w);
    const char *t = text ? text : dflt;
    put(w, t, strlen(t));
}

char *json_writer_finish(struct json_writer *w, size_t *len)
{
    char *text = NULL;
    if (!w->failed && w->heap) {
        text = w->buf; /* handed over */
        w->heap = false;
    } else if (!w->failed) {
        text = malloc(w->len + 1);
        if (text && w->len)
            memcpy(text, w->buf, w->len);
    }
    if (text) {
        text[w->len] = '\0';
        if (len)
            *len = w->len;
    }
    json_writer_release(w);
    return text;
}

void json_writer_release(struct json_writer *w)
{
    if (w->heap)
        free(w->buf);
    json_writer_init(w, NULL, 0);
}
