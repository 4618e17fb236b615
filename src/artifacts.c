/*
 * artifacts.c - artifact names, files and the writer op that keeps their
 * rows (artifacts.h; docs/adr/0013-artifacts.md).
 */
#include "artifacts.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "job_json.h"
#include "log.h"
#include "util.h"

#define ARTIFACT_SUFFIX_BYTES 8 /* random bytes in a file name: 16 hex digits */

bool artifact_name_valid(const char *name)
{
    size_t n = 0;
    for (; name[n]; n++) {
        char c = name[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return n > 0 && n <= ARTIFACT_NAME_MAX && name[0] != '.';
}

bool artifact_content_type_valid(const char *content_type)
{
    size_t n = 0;
    for (; content_type[n]; n++) {
        if (content_type[n] < ' ' || content_type[n] > '~')
            return false;
    }
    return n > 0 && n <= ARTIFACT_TYPE_MAX;
}

/* ---- files ---- */

static int sync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -DRV_EIO;
    int rc = fsync(fd) == 0 ? 0 : -DRV_EIO;
    close(fd);
    return rc;
}

int artifact_path(const char *data_dir, const char *job_id, const char *file, char *out, size_t n)
{
    int len = file ? snprintf(out, n, "%s/%s/%s/%s", data_dir, ARTIFACTS_DIR, job_id, file)
                   : snprintf(out, n, "%s/%s/%s", data_dir, ARTIFACTS_DIR, job_id);
    return len > 0 && (size_t)len < n ? 0 : -DRV_EIO;
}

int artifact_root_sync(const char *data_dir)
{
    char root[PATH_MAX];
    int len = snprintf(root, sizeof(root), "%s/%s", data_dir, ARTIFACTS_DIR);
    if (len <= 0 || (size_t)len >= sizeof(root))
        return -DRV_EIO;
    return sync_dir(root);
}

/* mkdir path; when it was made, sync its parent so the new entry is durable. */
static int make_dir(const char *path, const char *parent)
{
    if (mkdir(path, 0700) < 0)
        return errno == EEXIST ? 0 : -errno;
    return sync_dir(parent) == 0 ? 0 : -EIO;
}

int artifact_root_init(const char *data_dir)
{
    char root[PATH_MAX];
    int len = snprintf(root, sizeof(root), "%s/%s", data_dir, ARTIFACTS_DIR);
    if (len <= 0 || (size_t)len >= sizeof(root))
        return -DRV_EIO;
    int rc = make_dir(root, data_dir);
    if (rc < 0) {
        log_printf(LOG_ERROR, "cannot create '%s': %s", root, strerror(-rc));
        return -DRV_EIO;
    }
    return 0;
}

/* The job's directory, made (with the root, should it be gone) if missing. */
static int job_dir(const char *data_dir, const char *job_id, char *dir, size_t n)
{
    char root[PATH_MAX];
    int len = snprintf(root, sizeof(root), "%s/%s", data_dir, ARTIFACTS_DIR);
    if (len <= 0 || (size_t)len >= sizeof(root) || artifact_path(data_dir, job_id, NULL, dir, n))
        return -ENAMETOOLONG;
    int rc = make_dir(dir, root);
    if (rc == -ENOENT && artifact_root_init(data_dir) == 0)
        rc = make_dir(dir, root);
    return rc;
}

static int sha256_hex(const void *data, size_t len, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1 || n * 2 != ARTIFACT_SHA256_HEX)
        return -DRV_EINTERNAL;
    for (unsigned int i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int artifact_file_write(const char *data_dir, struct artifact *a, const void *data, size_t len,
                        struct errmsg *err)
{
    char dir[PATH_MAX], path[PATH_MAX];
    unsigned char rnd[ARTIFACT_SUFFIX_BYTES];
    char suffix[2 * ARTIFACT_SUFFIX_BYTES + 1];
    if (sha256_hex(data, len, a->sha256) < 0 || RAND_bytes(rnd, sizeof(rnd)) != 1)
        return errmsg_set(err, -DRV_EINTERNAL, "cannot hash or name the artifact");
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(suffix + 2 * i, 3, "%02x", rnd[i]);
    snprintf(a->file, sizeof(a->file), "%s@%s", a->name, suffix);
    a->size = (int64_t)len;

    int rc = job_dir(data_dir, a->job_id, dir, sizeof(dir));
    if (rc < 0) {
        log_printf(LOG_ERROR, "cannot create the artifact directory of job '%s': %s", a->job_id,
                   strerror(-rc));
        return errmsg_set(err, -DRV_EIO, "cannot store the artifact");
    }
    if (artifact_path(data_dir, a->job_id, a->file, path, sizeof(path)) < 0)
        return errmsg_set(err, -DRV_EIO, "cannot store the artifact: path too long");
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        log_printf(LOG_ERROR, "cannot create '%s': %s", path, strerror(errno));
        return errmsg_set(err, -DRV_EIO, "cannot store the artifact");
    }
    /* The bytes and the file's entry are on disk before the row can name them. */
    bool ok = write_all(fd, data, len) == 0 && fsync(fd) == 0;
    int saved = errno;
    ok = close(fd) == 0 && ok;
    ok = ok && sync_dir(dir) == 0;
    if (!ok) {
        log_printf(LOG_ERROR, "cannot write '%s': %s", path, strerror(saved ? saved : errno));
        unlink(path);
        return errmsg_set(err, -DRV_EIO, "cannot store the artifact");
    }
    return 0;
}

int artifact_file_open(const char *data_dir, const struct artifact *a, int *fd)
{
    char path[PATH_MAX];
    if (artifact_path(data_dir, a->job_id, a->file, path, sizeof(path)) < 0)
        return -DRV_EIO;
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd >= 0)
        return 0;
    if (errno == ENOENT)
        return -DRV_ENOT_FOUND;
    log_printf(LOG_ERROR, "cannot open '%s': %s", path, strerror(errno));
    return -DRV_EIO;
}

int artifact_read(const char *data_dir, const struct artifact *a, size_t max, char **out,
                  size_t *len)
{
    *out = NULL;
    *len = 0;
    if (a->size < 0 || (uint64_t)a->size > max)
        return -DRV_ETOO_LARGE;
    int fd;
    int rc = artifact_file_open(data_dir, a, &fd);
    if (rc < 0)
        return rc;
    size_t size = (size_t)a->size, got = 0;
    char *buf = malloc(size + 1);
    rc = buf ? 0 : -DRV_ENOMEM;
    while (rc == 0 && got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            rc = -DRV_EIO; /* shorter than its row says */
        else
            got += (size_t)r;
    }
    close(fd);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    buf[size] = '\0';
    *out = buf;
    *len = size;
    return 0;
}

/* ---- the job.succeeded event ---- */

#define EVENT_LIST_READS 2 /* a file replaced while we read: the list once more */

/* What the API shows of an artifact, less its url. */
static json_t *event_item(const struct artifact *a)
{
    return json_pack("{s:s, s:I, s:s, s:s, s:o}", "name", a->name, "size", (json_int_t)a->size,
                     "content_type", a->content_type, "sha256", a->sha256, "created_at",
                     json_time_or_null(a->created_at_ms));
}

/* item's "content_base64": len (<= POLICY_ARTIFACT_INLINE_LIMIT) bytes of data. */
static int set_base64(json_t *item, const char *data, size_t len)
{
    size_t n = 4 * ((len + 2) / 3); /* padded, no line breaks; EVP_EncodeBlock adds a NUL */
    unsigned char *b64 = malloc(n + 1);
    if (b64 == NULL)
        return -DRV_ENOMEM;
    int rc = -DRV_ENOMEM;
    if (EVP_EncodeBlock(b64, (const unsigned char *)data, (int)len) == (int)n)
        rc =
            json_object_set_new(item, "content_base64", json_stringn_nocheck((const char *)b64, n));
    free(b64);
    return rc == 0 ? 0 : -DRV_ENOMEM;
}

/*
 * One read of the job's list into *out (artifacts.h). When a file to inline
 * is gone and this is not the last read, *again is set and *out is left
 * alone: the caller reads the list again. On the last read it goes by url.
 */
static int event_list_read(struct store *st, const char *data_dir, const char *public_url,
                           const char *job_id, int64_t inline_max, bool last, bool *again,
                           json_t **out)
{
    struct artifact_list list;
    int rc = store_artifact_list(st, job_id, &list);
    if (rc < 0)
        return rc;
    json_t *items = json_array();
    rc = items ? 0 : -DRV_ENOMEM;
    int64_t left = inline_max; /* of the bytes one body may carry inline */
    for (int i = 0; i < list.n && rc == 0; i++) {
        const struct artifact *a = &list.items[i];
        json_t *item = event_item(a);
        if (item == NULL || json_array_append_new(items, item) < 0) {
            rc = -DRV_ENOMEM;
            break;
        }
        bool inlined = false;
        if (inline_max > 0 && a->size <= left) {
            char *bytes;
            size_t len;
            rc = artifact_read(data_dir, a, (size_t)a->size, &bytes, &len);
            if (rc == 0) {
                rc = set_base64(item, bytes, len);
                free(bytes);
                inlined = true;
                left -= a->size;
            } else if (rc == -DRV_ENOT_FOUND && !last) {
                rc = 0;
                *again = true;
                break;
            } else if (rc == -DRV_ENOT_FOUND) {
                log_printf(LOG_WARN,
                           "the file of artifact '%s' of job '%s' is gone again (replaced "
                           "meanwhile?): job.succeeded carries it by url",
                           a->name, a->job_id);
                rc = 0;
            }
        }
        /* Names are [A-Za-z0-9._-] and ids ULIDs: nothing to escape. */
        if (rc == 0 && !inlined &&
            json_object_set_new(
                item, "url",
                json_sprintf("%s/v1/jobs/%s/artifacts/%s", public_url, a->job_id, a->name)) < 0)
            rc = -DRV_ENOMEM;
    }
    artifact_list_release(&list);
    if (rc < 0 || *again) {
        json_decref(items);
        return rc;
    }
    *out = items;
    return 0;
}

int artifacts_event_json(struct store *st, const char *data_dir, const char *public_url,
                         const char *job_id, int64_t inline_max, json_t **out)
{
    *out = NULL;
    if (inline_max > POLICY_ARTIFACT_INLINE_LIMIT)
        inline_max = POLICY_ARTIFACT_INLINE_LIMIT;
    bool again = true;
    int rc = 0;
    for (int i = 0; i < EVENT_LIST_READS && rc == 0 && again; i++) {
        again = false;
        rc = event_list_read(st, data_dir, public_url, job_id, inline_max,
                             i + 1 == EVENT_LIST_READS, &again, out);
    }
    return rc;
}

void artifact_file_remove(const char *data_dir, const char *job_id, const char *file)
{
    char path[PATH_MAX];
    if (artifact_path(data_dir, job_id, file, path, sizeof(path)) == 0 && unlink(path) < 0 &&
        errno != ENOENT)
        log_printf(LOG_WARN, "cannot remove '%s': %s", path, strerror(errno));
}

int artifact_dir_remove(const char *data_dir, const char *job_id)
{
    char dir[PATH_MAX];
    if (artifact_path(data_dir, job_id, NULL, dir, sizeof(dir)) < 0)
        return -DRV_EIO;
    DIR *d = opendir(dir);
    if (d == NULL)
        return errno == ENOENT ? 0 : -DRV_EIO;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
            rc = -DRV_EIO;
    }
    closedir(d);
    if (rmdir(dir) < 0 && errno != ENOENT)
        rc = -DRV_EIO;
    if (rc < 0)
        log_printf(LOG_WARN, "cannot remove '%s' entirely: %s", dir, strerror(errno));
    return rc;
}

/* ---- the writer op ---- */

static int put_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct artifact_put_op *p = container_of(op, struct artifact_put_op, op);
    struct job job;
    int rc = job_op_load(ctx, p->artifact.job_id, &job, &p->err);
    if (rc < 0)
        return rc;
    if (p->signer == ARTIFACT_SIGNER_WORKER)
        rc = job_lease_check(&job, p->lease, &p->err);
    else if (p->signer > 0 && p->signer != job.attempt)
        rc = errmsg_set(&p->err, -DRV_ESTALE_ATTEMPT,
                        "the callback token of attempt %d signs for that attempt only; job '%s' "
                        "is at attempt %d",
                        p->signer, job.id, job.attempt);
    job_release(&job);
    if (rc < 0)
        return rc;
    p->artifact.created_at_ms = ctx->now_ms;
    return store_artifact_put(ctx->store, &p->artifact, p->replaced_file);
}

void artifact_put_op_init(struct artifact_put_op *p, write_done_fn done)
{
    memset(p, 0, sizeof(*p));
    p->signer = ARTIFACT_SIGNER_WORKER;
    p->op.apply = put_apply;
    p->op.done = done;
}
