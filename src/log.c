/*
 * log.c - the log sink: JSON lines, one write(2) each, reopened on SIGHUP.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "timeutil.h"

static struct {
    _Atomic int fd;
    _Atomic int level;
    char path[4096]; /* "" for stderr */
} sink = {.fd = 2, .level = LOG_INFO};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

const char *log_level_name(enum log_level level)
{
    return level >= LOG_DEBUG && level <= LOG_ERROR ? level_names[level] : "info";
}

int log_open(const char *path, enum log_level level)
{
    atomic_store(&sink.level, (int)level);
    if (path == NULL || strcmp(path, "-") == 0) {
        sink.path[0] = '\0';
        atomic_store(&sink.fd, 2);
        return 0;
    }
    if (strlen(path) >= sizeof(sink.path))
        return -DRV_EIO;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        return -DRV_EIO;
    snprintf(sink.path, sizeof(sink.path), "%s", path);
    atomic_store(&sink.fd, fd);
    return 0;
}

int log_reopen(void)
{
    if (sink.path[0] == '\0')
        return 0;
    int fd = open(sink.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        return -DRV_EIO;
    /* dup2 swaps the file under the same descriptor number atomically, so a
     * writer on another thread writes either to the old file or the new one. */
    int old = atomic_load(&sink.fd);
    if (dup2(fd, old) < 0) {
        close(fd);
        return -DRV_EIO;
    }
    close(fd);
    return 0;
}

void log_close(void)
{
    int fd = atomic_exchange(&sink.fd, 2);
    if (fd > 2)
        close(fd);
    sink.path[0] = '\0';
}

void log_set_level(enum log_level level)
{
    atomic_store(&sink.level, (int)level);
}

bool log_enabled(enum log_level level)
{
    return (int)level >= atomic_load(&sink.level);
}

/*
 * Lines are capped: a string value that does not fit is cut (and closed, so
 * the line stays valid JSON); a field that does not fit at all is dropped.
 * LOG_RESERVE bytes are always kept for closing quotes and the tail.
 */
#define LOG_RESERVE 40

static bool room(const struct log_line *l, size_t n)
{
    return l->len + n + LOG_RESERVE <= sizeof(l->buf);
}

static void put(struct log_line *l, const char *s, size_t n)
{
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void append_escaped(struct log_line *l, const char *s, size_t n)
{
    put(l, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        size_t k = 1;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            k = 2;
        } else if (c == '\n') {
            memcpy(esc, "\\n", 2);
            k = 2;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            k = 6;
        } else {
            esc[0] = (char)c;
        }
        if (!room(l, k)) {
            l->truncated = true;
            break;
        }
        put(l, esc, k);
    }
    put(l, "\"", 1);
}

/* Writes `,"key":` and returns true, or returns false when the field cannot fit. */
static bool append_key(struct log_line *l, const char *key)
{
    size_t n = strlen(key);
    if (l->truncated || !room(l, n + 8)) {
        l->truncated = true;
        return false;
    }
    put(l, ",\"", 2);
    put(l, key, n); /* keys are the program's own identifiers: no escaping needed */
    put(l, "\":", 2);
    return true;
}

bool log_begin(struct log_line *l, enum log_level level, const char *msg)
{
    if (!log_enabled(level))
        return false;
    char ts[TIME_RFC3339_LEN];
    time_format_rfc3339(time_now_ms(), ts);
    const char *name = log_level_name(level);
    l->len = 0;
    l->truncated = false;
    put(l, "{\"ts\":\"", 7);
    put(l, ts, strlen(ts));
    put(l, "\",\"level\":\"", 11);
    put(l, name, strlen(name));
    put(l, "\",\"msg\":", 8);
    append_escaped(l, msg, strlen(msg));
    return true;
}

void log_strn(struct log_line *l, const char *key, const char *value, size_t n)
{
    if (!append_key(l, key))
        return;
    if (value == NULL)
        put(l, "null", 4);
    else
        append_escaped(l, value, n);
}

void log_str(struct log_line *l, const char *key, const char *value)
{
    log_strn(l, key, value, value ? strlen(value) : 0);
}

void log_int(struct log_line *l, const char *key, int64_t value)
{
    char num[32];
    int n = snprintf(num, sizeof(num), "%lld", (long long)value);
    if (append_key(l, key) && room(l, (size_t)n))
        put(l, num, (size_t)n);
    else if (!l->truncated)
        put(l, "null", 4);
}

void log_double(struct log_line *l, const char *key, double value)
{
    char num[48];
    int n = snprintf(num, sizeof(num), "%.3f", value);
    if (append_key(l, key) && room(l, (size_t)n))
        put(l, num, (size_t)n);
    else if (!l->truncated)
        put(l, "null", 4);
}

void log_end(struct log_line *l)
{
    if (l->truncated)
        put(l, ",\"truncated\":true", 17);
    put(l, "}\n", 2);
    ssize_t left = (ssize_t)l->len;
    const char *p = l->buf;
    int fd = atomic_load(&sink.fd);
    while (left > 0) {
        ssize_t w = write(fd, p, (size_t)left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* nowhere left to report a failing log */
        p += w;
        left -= w;
    }
}

void log_printf(enum log_level level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct log_line l;
    if (log_begin(&l, level, msg))
        log_end(&l);
}
