/*
 * json_writer.h - JSON text written in one pass into a growing buffer, for
 * the replies on the hot paths (a job as the API shows it: submit, claim,
 * complete; docs/adr/0017-json-writer-for-hot-replies.md).
 *
 * jansson builds a tree of allocated values, and its dump checks every
 * object and array for cycles with a pointer formatted by snprintf into a
 * hash table: for a job that was about a quarter of an HTTP thread's time.
 * This writes the same text directly. Values that are JSON already (a
 * payload, a result) are dumped by jansson straight into the buffer.
 *
 *     char stack[2048];
 *     struct json_writer w;
 *     jw_init(&w, stack, sizeof(stack));
 *     jw_object_begin(&w);
 *     jw_key(&w, "id");
 *     jw_string(&w, id);
 *     jw_object_end(&w);
 *     char *text = jw_finish(&w, NULL); // malloc'd, or NULL when out of memory
 *
 * Calls after an allocation failed do nothing; jw_finish() reports it.
 * Strings are written as UTF-8 with the escapes jansson uses (", \ and
 * control characters); an invalid UTF-8 sequence becomes U+FFFD, where
 * jansson would refuse the whole dump.
 */
#ifndef DROVER_JSON_WRITER_H
#define DROVER_JSON_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define JW_DEPTH_MAX 32

struct json_writer {
    char *buf;
    size_t len, cap;
    bool heap;   /* buf is ours (grown off the caller's) */
    bool failed; /* out of memory, or nesting past JW_DEPTH_MAX */
    bool after_key;
    int depth;
    bool has_member[JW_DEPTH_MAX]; /* the container at each depth has one already */
};

void jw_init(struct json_writer *w, char *buf, size_t cap);
void jw_object_begin(struct json_writer *w);
void jw_object_end(struct json_writer *w);
void jw_array_begin(struct json_writer *w);
void jw_array_end(struct json_writer *w);
/* An object's member name; its value is the next call. */
void jw_key(struct json_writer *w, const char *key);
/* A string; NULL writes null. */
void jw_string(struct json_writer *w, const char *s);
void jw_int(struct json_writer *w, int64_t v);
void jw_bool(struct json_writer *w, bool v);
void jw_null(struct json_writer *w);
/* A stored time (ms since the epoch) as RFC 3339; 0 writes null. */
void jw_time(struct json_writer *w, int64_t ms);
/* A jansson value as it is; NULL writes the text of dflt ("null", "{}", "[]"). */
void jw_json(struct json_writer *w, const json_t *v, const char *dflt);

/* The text, NUL-terminated, malloc'd; *len (if given) its length. NULL when a write failed. */
char *jw_finish(struct json_writer *w, size_t *len);
/* Drop what was written (after jw_finish() not needed). */
void jw_release(struct json_writer *w);

#endif
