/*
 * ulid.h - ULIDs: 128-bit ids, 48 bits of milliseconds then 80 random bits,
 * written as 26 Crockford base32 characters that sort by creation time.
 */
#ifndef DROVER_ULID_H
#define DROVER_ULID_H

#include <stdbool.h>
#include <stdint.h>

#define ULID_LEN 26

/*
 * A monotonic generator: ids made by one generator sort in the order they
 * were made, even within one millisecond or when the clock steps back (the
 * random part is incremented instead). Not thread-safe: one owner.
 */
struct ulid_gen {
    int64_t last_ms;
    uint8_t last_rand[10];
};

void ulid_gen_init(struct ulid_gen *g);

/* Write a new id (ULID_LEN chars + NUL) into out. Returns 0 or -DRV_EINTERNAL (no entropy). */
int ulid_generate(struct ulid_gen *g, int64_t now_ms, char *out);

/* Encode a timestamp and 10 random bytes (for tests and the generator). */
void ulid_encode(int64_t ms, const uint8_t rand[10], char *out);

/*
 * Is s a well-formed ULID? Accepts either case; when canon is not NULL,
 * writes the canonical upper-case form (ULID_LEN + 1 bytes) there.
 */
bool ulid_parse(const char *s, char *canon);

/* The millisecond timestamp of a well-formed ULID. */
int64_t ulid_time_ms(const char *s);

#endif
