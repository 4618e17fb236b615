/*
 * util.h - tiny helpers used everywhere.
 */
#ifndef DROVER_UTIL_H
#define DROVER_UTIL_H

#include <stddef.h>

/* The struct that embeds member `member` at ptr. */
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
