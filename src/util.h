/*
 * util.h - tiny helpers used everywhere.
 */
#ifndef DROVER_UTIL_H
#define DROVER_UTIL_H

#include <stddef.h>
#include <sys/resource.h>
#include <unistd.h>

/* The struct that embeds member `member` at ptr. */
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Give the calling thread nice value n (0: leave it). Background threads
 * (the webhook deliverer and its outbound engine) yield the CPU to the job
 * path under load. On Linux nice is per thread; best effort: a failure
 * only costs the priority.
 */
static inline void thread_nice(int n)
{
    if (n > 0)
        (void)setpriority(PRIO_PROCESS, (id_t)gettid(), n);
}

#endif
