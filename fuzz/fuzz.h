/*
 * fuzz.h - what every fuzz target shares.
 *
 * A target is one file that defines LLVMFuzzerTestOneInput() for one parser
 * of outside input. Linked with -fsanitize=fuzzer it is a libFuzzer binary
 * (make fuzz); linked with replay.c it replays a corpus as a regression test
 * (make test-fuzz-replay). A target returns 0 for every input it handles,
 * valid or not; a broken invariant is a bug and ends the process through
 * FUZZ_CHECK, so both drivers see it as a crash.
 */
#ifndef DROVER_FUZZ_H
#define DROVER_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Report a broken invariant and abort(): libFuzzer saves the input. */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__, #cond);           \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/*
 * A NUL-terminated copy of the input (which may itself hold NUL bytes, so the
 * C string can be shorter than size). Never NULL: aborts when out of memory,
 * which at fuzzing sizes is a harness fault, not a finding. free() it.
 */
static inline char *fuzz_cstring(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL)
        abort();
    if (size > 0) /* data may be NULL for an empty input */
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

#endif
