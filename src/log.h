/*
 * log.h - structured logging: one JSON object per line.
 *
 * Every line has "ts", "level" and "msg", then the caller's fields:
 *
 *     struct log_line l;
 *     if (log_begin(&l, LOG_INFO, "listening")) {
 *         log_str(&l, "addr", addr);
 *         log_end(&l);
 *     }
 *
 * A line is built on the stack (capped at LOG_LINE_MAX, truncated safely)
 * and written with one write(2), so lines from different threads never
 * interleave. The sink is process-wide: the one mutable global besides the
 * config and the shutdown flag.
 */
#ifndef DROVER_LOG_H
#define DROVER_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define LOG_LINE_MAX 2048

struct log_line {
    char buf[LOG_LINE_MAX];
    size_t len;
    bool truncated;
};

/* Log to path ("-" or NULL: stderr) from level up. Returns 0 or -DRV_EIO. */
int log_open(const char *path, enum log_level level);

/* Reopen the file (after rotation; SIGHUP). Returns 0 or -DRV_EIO, keeping the old fd. */
int log_reopen(void);

void log_close(void);

void log_set_level(enum log_level level);

bool log_enabled(enum log_level level);

/* Start a line; false when the level is filtered out (then skip the rest). */
bool log_begin(struct log_line *l, enum log_level level, const char *msg);
void log_str(struct log_line *l, const char *key, const char *value); /* NULL -> null */
void log_strn(struct log_line *l, const char *key, const char *value, size_t n);
void log_int(struct log_line *l, const char *key, int64_t value);
void log_double(struct log_line *l, const char *key, double value);
void log_end(struct log_line *l);

/* A line with only a formatted message. */
void log_printf(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

const char *log_level_name(enum log_level level);

#endif
