/*
 * json_writer.h - JSON text written in one pass into a growing buffer, for
 * the replies on the hot paths (a job as the API shows it: submit, claim,
 * complete; docs/adr/0017-json-writer-for-hot-replies.md).
 *
 * jansson builds a tree of allocated values, and its dump checks every
 * object and array for cycles with a pointer formatted by snprintf into a
 * hash table: for a job that was about a quarter of an HTTP thread's time.
 * This writes the same text directly. Values held as jansson trees (a
 * result, checkpoints) are dumped by jansson straight into the buffer;
 * values held as JSON text (a payload) are copied as they are.
 *
 *     char stack[2048];
 *     struct json_writer w;
 *     json_writer_init(&w, stack, sizeof(stack));
 *     json_writer_object_begin(&w);
 *     json_writer_key(&w, "id");
 *     json_writer_string(&w, id);
 *     json_writer_object_end(&w);
 *     char *text = json_writer_finish(&w, NULL); // malloc'd, or NULL when out of memory
 *
 * Calls after an allocation failed do nothing; json_writer_finish() reports it.
 * The text is as large as what is written into it: callers write values
 * whose sizes the API caps already (a job, a page of a list).
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

#define JSON_WRITER_DEPTH_MAX 32

struct json_writer {
    char *buf;
    size_t len, cap;
    bool heap;   /* buf is ours (grown off the caller's) */
    bool failed; /* out of memory, or nesting past JSON_WRITER_DEPTH_MAX */
    bool after_key;
    int depth;
    bool has_member[JSON_WRITER_DEPTH_MAX]; /* the container at each depth has one already */
};

void json_writer_init(struct json_writer *w, char *buf, size_t cap);
void json_writer_object_begin(struct json_writer *w);
void json_writer_object_end(struct json_writer *w);
void json_writer_array_begin(struct json_writer *w);
void json_writer_array_end(struct json_writer *w);
/* An object's member name; its value is the next call. */
void json_writer_key(struct json_writer *w, const char *key);
/* A string; NULL writes null. */
void json_writer_string(struct json_writer *w, const char *s);
void json_writer_int(struct json_writer *w, int64_t v);
void json_writer_bool(struct json_writer *w, bool v);
void json_writer_null(struct json_writer *w);
/* A stored time (ms since the epoch) as RFC 3339; 0 writes null. */
void json_writer_time(struct json_writer *w, int64_t ms);
/* A jansson value as it is; NULL writes the text of dflt ("null", "{}", "[]"). */
void json_writer_json(struct json_writer *w, const json_t *v, const char *dflt);
/*
 * JSON text as it is (a stored payload: compact text jansson wrote); NULL
 * writes dflt. The caller vouches that text is one valid JSON value.
 */
void json_writer_raw(struct json_writer *w, const char *text, const char *dflt);

/*
 * The text, NUL-terminated, malloc'd (the caller frees it); *len (if
 * given) its length. NULL when a write failed. Either way w is released.
 */
char *json_writer_finish(struct json_writer *w, size_t *len);
/* Drop what was written; w is then empty, without a buffer, and may be used again. */
void json_writer_release(struct json_writer *w);

#endif
