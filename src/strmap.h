/*
 * strmap.h - a map from short strings to pointers (open addressing, FNV-1a,
 * tombstones); with NULL values, a set.
 *
 * Written here rather than taken from a library: the only candidate among
 * drover's Debian dependencies would be GLib's GHashTable, a large
 * dependency for one small map; POSIX hsearch cannot delete. Not
 * thread-safe: the owner locks.
 */
#ifndef DROVER_STRMAP_H
#define DROVER_STRMAP_H

#include <stdbool.h>
#include <stddef.h>

struct strmap {
    struct strmap_slot *slots;
    size_t cap;  /* a power of two, or 0 */
    size_t used; /* live + tombstones */
    size_t live;
};

void strmap_init(struct strmap *m);
void strmap_release(struct strmap *m); /* the values are the caller's */

bool strmap_has(const struct strmap *m, const char *key);

/* key's value; NULL when absent (or when NULL was put). */
void *strmap_get(const struct strmap *m, const char *key);

/* Map key (copied) to value, replacing its value when present. 0 or -DRV_ENOMEM. */
int strmap_put(struct strmap *m, const char *key, void *value);

/* Remove key; false when it was not there. */
bool strmap_remove(struct strmap *m, const char *key);

/* Remove every key for which match(key, arg) is true, in one pass; how many went. */
size_t strmap_remove_if(struct strmap *m, bool (*match)(const char *key, void *arg), void *arg);

#endif
