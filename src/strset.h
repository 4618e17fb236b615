/*
 * strset.h - a set of short strings (open addressing, FNV-1a, tombstones).
 *
 * Written here rather than taken from a library: the only candidate among
 * drover's Debian dependencies would be GLib's GHashTable, a large
 * dependency for one small set; POSIX hsearch cannot delete. Not
 * thread-safe: the owner locks.
 */
#ifndef DROVER_STRSET_H
#define DROVER_STRSET_H

#include <stdbool.h>
#include <stddef.h>

struct strset {
    struct strset_slot *slots;
    size_t cap;  /* a power of two, or 0 */
    size_t used; /* live + tombstones */
    size_t live;
};

void strset_init(struct strset *s);
void strset_release(struct strset *s);

bool strset_has(const struct strset *s, const char *key);

/* Add key (copied). Returns 0, or -DRV_ENOMEM. Adding a present key is a no-op. */
int strset_add(struct strset *s, const char *key);

/* Remove key; false when it was not there. */
bool strset_remove(struct strset *s, const char *key);

#endif
