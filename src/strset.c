/*
 * strset.c - a set of short strings.
 */
#include "strset.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* key NULL: empty; key == TOMBSTONE: deleted. */
struct strset_slot {
    uint64_t hash;
    char *key;
};

static char tombstone[1];
#define TOMBSTONE tombstone

static uint64_t fnv1a(const char *key)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h;
}

void strset_init(struct strset *s)
{
    memset(s, 0, sizeof(*s));
}

void strset_release(struct strset *s)
{
    for (size_t i = 0; i < s->cap; i++)
        if (s->slots[i].key && s->slots[i].key != TOMBSTONE)
            free(s->slots[i].key);
    free(s->slots);
    strset_init(s);
}

/* The slot holding key, or NULL. */
static struct strset_slot *find(const struct strset *s, const char *key, uint64_t h)
{
    if (s->cap == 0)
        return NULL;
    for (size_t i = h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        struct strset_slot *slot = &s->slots[i];
        if (slot->key == NULL)
            return NULL;
        if (slot->key != TOMBSTONE && slot->hash == h && strcmp(slot->key, key) == 0)
            return slot;
    }
}

bool strset_has(const struct strset *s, const char *key)
{
    return find(s, key, fnv1a(key)) != NULL;
}

/* Place an owned key in a table with room (no tombstones needed). */
static void place(struct strset_slot *slots, size_t cap, uint64_t h, char *key)
{
    size_t i = h & (cap - 1);
    while (slots[i].key)
        i = (i + 1) & (cap - 1);
    slots[i].hash = h;
    slots[i].key = key;
}

static int grow(struct strset *s)
{
    size_t cap = s->cap ? s->cap : 16;
    while (cap < 4 * (s->live + 1))
        cap *= 2;
    struct strset_slot *slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return -DRV_ENOMEM;
    for (size_t i = 0; i < s->cap; i++)
        if (s->slots[i].key && s->slots[i].key != TOMBSTONE)
            place(slots, cap, s->slots[i].hash, s->slots[i].key);
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    s->used = s->live;
    return 0;
}

int strset_add(struct strset *s, const char *key)
{
    uint64_t h = fnv1a(key);
    if (find(s, key, h))
        return 0;
    if ((s->used + 1) * 2 > s->cap && grow(s) < 0) /* at most half full */
        return -DRV_ENOMEM;
    char *copy = strdup(key);
    if (copy == NULL)
        return -DRV_ENOMEM;
    place(s->slots, s->cap, h, copy);
    s->used++;
    s->live++;
    return 0;
}

bool strset_remove(struct strset *s, const char *key)
{
    struct strset_slot *slot = find(s, key, fnv1a(key));
    if (slot == NULL)
        return false;
    free(slot->key);
    slot->key = TOMBSTONE;
    s->live--;
    return true;
}
