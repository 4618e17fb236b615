/*
 * ulid.c - ULID generation and parsing (https://github.com/ulid/spec).
 */
#include "ulid.h"

#include <string.h>

#include <openssl/rand.h>

#include "error.h"

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

void ulid_gen_init(struct ulid_gen *g)
{
    memset(g, 0, sizeof(*g));
    g->last_ms = -1;
}

void ulid_encode(int64_t ms, const uint8_t rand[10], char *out)
{
    uint8_t b[16];
    uint64_t t = (uint64_t)ms;
    for (int i = 5; i >= 0; i--) {
        b[i] = (uint8_t)(t & 0xff);
        t >>= 8;
    }
    memcpy(b + 6, rand, 10);
    /* 128 bits as 26 groups of 5, most significant first; the first group has 3 bits. */
    int bit = -2; /* position of the first group's top bit, relative to b's first bit */
    for (int i = 0; i < ULID_LEN; i++, bit += 5) {
        unsigned v = 0;
        for (int k = 0; k < 5; k++) {
            int pos = bit + k;
            unsigned on = pos < 0 ? 0 : (b[pos / 8] >> (7 - pos % 8)) & 1u;
            v = (v << 1) | on;
        }
        out[i] = crockford[v];
    }
    out[ULID_LEN] = '\0';
}

/* Add one to a big-endian 80-bit number; returns 1 on overflow. */
static int increment80(uint8_t r[10])
{
    for (int i = 9; i >= 0; i--) {
        if (++r[i] != 0)
            return 0;
    }
    return 1;
}

int ulid_generate(struct ulid_gen *g, int64_t now_ms, char *out)
{
    if (now_ms <= g->last_ms) {
        /* Same millisecond, or the clock stepped back: keep order by counting up. */
        if (increment80(g->last_rand))
            g->last_ms++;
    } else {
        if (RAND_bytes(g->last_rand, sizeof(g->last_rand)) != 1)
            return -DRV_EINTERNAL;
        /* Leave headroom so a burst in one ms cannot overflow the counter. */
        g->last_rand[0] &= 0x7f;
        g->last_ms = now_ms;
    }
    ulid_encode(g->last_ms, g->last_rand, out);
    return 0;
}

static int crockford_value(char c)
{
    if (c >= 'a' && c <= 'z')
        c = (char)(c - 'a' + 'A');
    const char *p = c ? strchr(crockford, c) : NULL;
    return p ? (int)(p - crockford) : -1;
}

bool ulid_parse(const char *s, char *canon)
{
    if (strlen(s) != ULID_LEN)
        return false;
    if (crockford_value(s[0]) < 0 || crockford_value(s[0]) > 7)
        return false; /* the first character holds only 3 bits */
    for (int i = 0; i < ULID_LEN; i++) {
        int v = crockford_value(s[i]);
        if (v < 0)
            return false;
        if (canon)
            canon[i] = crockford[v];
    }
    if (canon)
        canon[ULID_LEN] = '\0';
    return true;
}

int64_t ulid_time_ms(const char *s)
{
    /* The first 10 characters hold 50 bits whose low 48 are the time. */
    uint64_t t = 0;
    for (int i = 0; i < 10; i++)
        t = (t << 5) | (uint64_t)crockford_value(s[i]);
    return (int64_t)(t & 0xffffffffffffULL);
}
