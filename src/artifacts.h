/*
 * artifacts.h - named blobs attached to a job (docs/adr/0013-artifacts.md):
 * their names, their files under DATA_DIR/artifacts/, and the writer op
 * that keeps an upload's metadata row (struct artifact, store.h).
 *
 * An upload becomes durable in this order, so that no crash can leave a
 * row naming a missing file:
 *
 *   1. the HTTP thread writes the bytes to a new file,
 *      DATA_DIR/artifacts/<job id>/<name>@<16 random hex digits>, and
 *      fsyncs it and its directory (artifact_file_write());
 *   2. the writer checks the uploader's right (the job's current lease, or
 *      the runner's attempt) and commits the row (struct artifact_put_op);
 *   3. after the commit the file of the row it replaced is removed; after a
 *      refusal, the new file is.
 *
 * The big bytes never pass through the writer thread. A crash between 1
 * and 2, or 2 and 3, leaves an unreferenced file in the job's directory:
 * harmless, and removed with the directory when the job is pruned
 * (retention.h).
 */
#ifndef DROVER_ARTIFACTS_H
#define DROVER_ARTIFACTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "error.h"
#include "job_ops.h"
#include "store/store.h"
#include "store/writer.h"

#define ARTIFACTS_DIR          "artifacts" /* under the data directory */
#define ARTIFACT_DEFAULT_TYPE  "application/octet-stream"
#define ARTIFACT_SIGNER_WORKER (-1)

/* 1..ARTIFACT_NAME_MAX bytes of [A-Za-z0-9._-], not starting with '.': safe as a file name. */
bool artifact_name_valid(const char *name);

/* 1..ARTIFACT_TYPE_MAX printable ASCII characters (a Content-Type header value). */
bool artifact_content_type_valid(const char *content_type);

/* Create DATA_DIR/artifacts if missing (and make its entry durable). At start. */
int artifact_root_init(const char *data_dir);

/*
 * The path of a job's artifact file (or of the job's artifact directory
 * when file is NULL) into out (n bytes). -DRV_EIO when it does not fit.
 */
int artifact_path(const char *data_dir, const char *job_id, const char *file, char *out, size_t n);

/*
 * Step 1 above: len bytes of data as a new file for a->job_id and a->name,
 * durable when this returns 0. OUT: a->file, a->sha256, a->size. Fails with
 * -DRV_EIO (err says why; nothing is left behind) or -DRV_EINTERNAL.
 */
int artifact_file_write(const char *data_dir, struct artifact *a, const void *data, size_t len,
                        struct errmsg *err);

/*
 * Open a's bytes for reading (OUT fd, the caller's to close).
 * -DRV_ENOT_FOUND when the file is gone: a newer upload replaced the row
 * since it was read, so read the row again.
 */
int artifact_file_open(const char *data_dir, const struct artifact *a, int *fd);

/*
 * a's bytes in a new buffer (OUT *out, malloc'ed, NUL-terminated for
 * convenience, *len bytes), for a->size <= max only: -DRV_ETOO_LARGE
 * otherwise. For inlining small artifacts (webhooks). -DRV_ENOT_FOUND as
 * artifact_file_open().
 */
int artifact_read(const char *data_dir, const struct artifact *a, size_t max, char **out,
                  size_t *len);

/*
 * The artifacts of job_id as the job.succeeded event carries them
 * (docs/api.md "Events and webhooks"): a JSON array, by name, of
 *
 *   {"name", "size", "content_type", "sha256", "created_at" (RFC 3339),
 *    and either "content_base64": the bytes (standard base64, padded)
 *            or "url": public_url + "/v1/jobs/{id}/artifacts/{name}"}
 *
 * The url is GET /v1/jobs/{id}/artifacts/{name}: it needs a bearer token of
 * any role. public_url is the server's base as callback URLs have it
 * (server.public_url, or http:// and the bound address; no trailing slash).
 *
 * inline_max (the queue's artifact_inline_max) bounds each artifact carried
 * inline and their sum: in name order, an artifact goes inline when its size
 * is at most what is left of inline_max, else by url. So an artifact of
 * exactly inline_max bytes is inline when it is alone, and one body carries
 * at most inline_max bytes of artifacts (4/3 of that as base64) however
 * many the job has. inline_max <= 0 sends every artifact by url (an empty
 * one too); above POLICY_ARTIFACT_INLINE_LIMIT it counts as that limit.
 *
 * Read side only (the store's reader pool and the files): any thread, the
 * deliverer's for one; not the writer's, which must not wait on files.
 * When a file to inline is gone because a newer upload replaced its row
 * since the list was read (artifact_file_open()), the list is read once
 * more; a file gone again goes by url, described as that second read had
 * it (the url serves the newest bytes). A job without artifacts (or no such
 * job) gives an empty array.
 *
 * OUT: *out, a new reference (the caller's to json_decref()), NULL on
 * failure: -DRV_ENOMEM, -DRV_EIO (a file unreadable or shorter than its
 * row), or the store's error.
 */
int artifacts_event_json(struct store *st, const char *data_dir, const char *public_url,
                         const char *job_id, int64_t inline_max, json_t **out);

/* Remove one file of a job's artifact directory; a failure is only logged. */
void artifact_file_remove(const char *data_dir, const char *job_id, const char *file);

/*
 * Remove a job's artifact directory with everything in it. 0 when it is
 * gone (or never was), -DRV_EIO when something could not be removed (e.g.
 * a file appeared meanwhile).
 */
int artifact_dir_remove(const char *data_dir, const char *job_id);

/* Make removals in DATA_DIR/artifacts durable (fsync of the directory). */
int artifact_root_sync(const char *data_dir);

/*
 * Step 2 above. In: artifact (all but created_at_ms, set here); who
 * uploads: signer ARTIFACT_SIGNER_WORKER with the lease presented, or a
 * runner's signer (0: the queue's callback_secret, any attempt; N: attempt
 * N's callback token, which must be the job's current attempt). Out:
 * replaced_file, the file of the row replaced ("" for a new name).
 * Refusals: -DRV_ENOT_FOUND, -DRV_ELEASE_LOST, -DRV_ESTALE_ATTEMPT (err set).
 */
struct artifact_put_op {
    struct write_op op;
    struct artifact artifact;
    int signer;
    char lease[LEASE_TOKEN_LEN + 1];
    char replaced_file[ARTIFACT_FILE_MAX + 1];
    struct errmsg err;
};
void artifact_put_op_init(struct artifact_put_op *p, write_done_fn done);

#endif
