/*
 * strmap.c - a map from short strings to pointers.
 */
#include "strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* key NULL: empty; key == TOMBSTONE: deleted. */
struct strmap_slot {
    uint64_t hash;
    char *key;
    void *value;
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

void strmap_init(struct strmap *m)
{
    memset(m, 0, sizeof(*m));
}

void strmap_release(struct strmap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && m->slots[i].key != TOMBSTONE)
            free(m->slots[i].key);
    free(m->slots);
    strmap_init(m);
}

/* The slot holding key, or NULL. */
static struct strmap_slot *find(const struct strmap *m, const char *key, uint64_t h)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        struct strmap_slot *slot = &m->slots[i];
        if (slot->key == NULL)
            return NULL;
        if (slot->key != TOMBSTONE && slot->hash == h && strcmp(slot->key, key) == 0)
            return slot;
    }
}

bool strmap_has(const struct strmap *m, const char *key)
{
    return find(m, key, fnv1a(key)) != NULL;
}

void *strmap_get(const struct strmap *m, const char *key)
{
    struct strmap_slot *slot = find(m, key, fnv1a(key));
    return slot ? slot->value : NULL;
}

/* Place an owned key in a table with room (no tombstones needed). */
static void place(struct strmap_slot *slots, size_t cap, uint64_t h, char *key, void *value)
{
    size_t i = h & (cap - 1);
    while (slots[i].key)
        i = (i + 1) & (cap - 1);
    slots[i].hash = h;
    slots[i].key = key;
    slots[i].value = value;
}

static int grow(struct strmap *m)
{
    size_t cap = m->cap ? m->cap : 16;
    while (cap < 4 * (m->live + 1))
        cap *= 2;
    struct strmap_slot *slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return -DRV_ENOMEM;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && m->slots[i].key != TOMBSTONE)
            place(slots, cap, m->slots[i].hash, m->slots[i].key, m->slots[i].value);
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    m->used = m->live;
    return 0;
}

int strmap_put(struct strmap *m, const char *key, void *value)
{
    uint64_t h = fnv1a(key);
    struct strmap_slot *slot = find(m, key, h);
    if (slot) {
        slot->value = value;
        return 0;
    }
    if ((m->used + 1) * 2 > m->cap && grow(m) < 0) /* at most half full */
        return -DRV_ENOMEM;
    char *copy = strdup(key);
    if (copy == NULL)
        return -DRV_ENOMEM;
    place(m->slots, m->cap, h, copy, value);
    m->used++;
    m->live++;
    return 0;
}

static void remove_slot(struct strmap *m, struct strmap_slot *slot)
{
    free(slot->key);
    slot->key = TOMBSTONE;
    slot->value = NULL;
    m->live--;
}

bool strmap_remove(struct strmap *m, const char *key)
{
    struct strmap_slot *slot = find(m, key, fnv1a(key));
    if (slot == NULL)
        return false;
    remove_slot(m, slot);
    return true;
}

size_t strmap_remove_if(struct strmap *m, bool (*match)(const char *key, void *arg), void *arg)
{
    size_t n = 0;
    for (size_t i = 0; i < m->cap; i++) {
        struct strmap_slot *slot = &m->slots[i];
        if (slot->key && slot->key != TOMBSTONE && match(slot->key, arg)) {
            remove_slot(m, slot);
            n++;
        }
    }
    return n;
}
