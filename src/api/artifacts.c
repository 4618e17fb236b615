/*
 * artifacts.c - /v1/jobs/{id}/artifacts: upload (PUT, by the job's worker
 * under its lease or by its runner, signed), list and download (GET)
 * (docs/api.md "Artifacts"; docs/adr/0013-artifacts.md).
 *
 * The route takes a raw body of any content type, capped by
 * artifacts.max_bytes (ROUTE_RAW_BODY), and a request without a bearer
 * token reaches the handler (ROUTE_OR_SIGNED), which then wants a runner's
 * signature. The bytes are written and synced here, on the HTTP thread;
 * only the small row goes through the writer (artifacts.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "artifacts.h"
#include "job_json.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"

#define ARTIFACT_URL_MAX    (ULID_LEN + ARTIFACT_NAME_MAX + 32)
#define ARTIFACT_OPEN_TRIES 3 /* a row replaced between reading it and opening its file */

static void artifact_url(const struct artifact *a, char *out, size_t n)
{
    /* Names are [A-Za-z0-9._-]: nothing to escape. */
    snprintf(out, n, "/v1/jobs/%s/artifacts/%s", a->job_id, a->name);
}

static json_t *artifact_json(const struct artifact *a)
{
    char url[ARTIFACT_URL_MAX];
    artifact_url(a, url, sizeof(url));
    return json_pack("{s:s, s:I, s:s, s:s, s:o, s:s}", "name", a->name, "size", (json_int_t)a->size,
                     "content_type", a->content_type, "sha256", a->sha256, "created_at",
                     json_time_or_null(a->created_at_ms), "url", url);
}

static bool valid_name_param(struct http_request *req, const char *name)
{
    if (artifact_name_valid(name))
        return true;
    http_reply_errorf(req, -DRV_EBAD_REQUEST,
                      "'%.*s' is not an artifact name: 1 to %d of A-Z a-z 0-9 . _ -, not "
                      "starting with '.'",
                      ARTIFACT_NAME_MAX, name, ARTIFACT_NAME_MAX);
    return false;
}

/* ---- PUT ---- */

static int put_render(const struct write_op *op, struct write_reply *out)
{
    const struct artifact_put_op *p = container_of(op, struct artifact_put_op, op);
    /* No Location: a long name would not fit a kept reply's; the body has the url. */
    return api_render_json(out, p->replaced_file[0] ? 200 : 201, artifact_json(&p->artifact));
}

static void put_finish(struct http_request *req)
{
    struct artifact_put_op *p = http_ctx(req);
    const char *data_dir = api_app(req)->cfg->data_dir;
    /* Step 3 (artifacts.h): only now may a file go. A job that is gone (pruned
     * meanwhile) never comes back: its directory goes, whatever it holds. */
    if (p->op.result == -DRV_ENOT_FOUND)
        artifact_dir_remove(data_dir, p->artifact.job_id);
    else if (p->op.result < 0)
        artifact_file_remove(data_dir, p->artifact.job_id, p->artifact.file);
    else if (p->replaced_file[0] && strcmp(p->replaced_file, p->artifact.file) != 0)
        artifact_file_remove(data_dir, p->artifact.job_id, p->replaced_file);
    api_reply_write(req, &p->op, &p->err, put_render);
    free(p);
}

/*
 * Who uploads: a worker (bearer token; the lease in X-Drover-Lease must be
 * the job's) or a runner (no token: the server let it through for its
 * signature, ROUTE_OR_SIGNED). Fills p->signer and p->lease, or replies
 * and returns false. A check here spares writing the file for nothing; the
 * writer checks again, against the job as it is then.
 */
static bool check_uploader(struct http_request *req, const struct job *job,
                           struct artifact_put_op *p)
{
    struct errmsg err = {.field = ""};
    if (http_role(req) != ROLE_NONE) {
        const char *lease = http_header(req, "X-Drover-Lease");
        if (lease == NULL || lease[0] == '\0') {
            http_reply_errorf(req, -DRV_EBAD_REQUEST,
                              "a worker's upload needs the job's lease token in the "
                              "X-Drover-Lease header");
            return false;
        }
        /* A token of another length cannot be the lease: refused like any stale one. */
        snprintf(p->lease, sizeof(p->lease), "%s", strlen(lease) == LEASE_TOKEN_LEN ? lease : "-");
        p->signer = ARTIFACT_SIGNER_WORKER;
        int rc = job_lease_check(job, p->lease, &err);
        if (rc < 0)
            http_reply_error(req, rc, &err);
        return rc == 0;
    }
    int rc = api_runner_verify(req, job, &p->signer, &err);
    if (rc == 0 && p->signer > 0 && p->signer != job->attempt)
        rc = errmsg_set(&err, -DRV_ESTALE_ATTEMPT,
                        "the callback token of attempt %d signs for that attempt only; job '%s' "
                        "is at attempt %d",
                        p->signer, job->id, job->attempt);
    if (rc < 0) {
        http_reply_error(req, rc, &err);
        return false;
    }
    return true;
}

void api_artifact_put(struct http_request *req)
{
    struct app *app = api_app(req);
    struct errmsg err = {.field = ""};
    char id[ULID_LEN + 1];
    const char *name = http_param(req, 1);

    if (!api_job_id_param(req, 0, id) || !valid_name_param(req, name))
        return;
    const char *type = http_header(req, "Content-Type");
    if (type == NULL || type[0] == '\0')
        type = ARTIFACT_DEFAULT_TYPE;
    if (!artifact_content_type_valid(type)) {
        http_reply_errorf(req, -DRV_EBAD_REQUEST,
                          "Content-Type must be 1 to %d printable ASCII characters",
                          ARTIFACT_TYPE_MAX);
        return;
    }
    struct artifact_put_op *p = malloc(sizeof(*p));
    if (p == NULL) {
        http_reply_errorf(req, -DRV_ENOMEM, "out of memory");
        return;
    }
    artifact_put_op_init(p, NULL);
    struct job job;
    if (!api_job_load(req, id, &job)) {
        free(p);
        return;
    }
    bool allowed = check_uploader(req, &job, p);
    job_release(&job);
    if (!allowed) {
        free(p);
        return;
    }
    memcpy(p->artifact.job_id, id, sizeof(p->artifact.job_id));
    snprintf(p->artifact.name, sizeof(p->artifact.name), "%s", name);
    snprintf(p->artifact.content_type, sizeof(p->artifact.content_type), "%s", type);
    size_t len;
    const char *body = http_body(req, &len);
    int rc = artifact_file_write(app->cfg->data_dir, &p->artifact, body, len, &err);
    if (rc < 0) {
        http_reply_error(req, rc, &err);
        free(p);
        return;
    }
    http_set_ctx(req, p);
    api_write(req, &p->op, put_render, put_finish);
}

/* ---- GET ---- */

void api_artifact_list(struct http_request *req)
{
    char id[ULID_LEN + 1];
    if (!api_job_id_param(req, 0, id))
        return;
    struct store *st = api_app(req)->store;
    struct artifact_list list;
    int rc = store_artifact_list(st, id, &list);
    if (rc < 0) {
        http_reply_error(req, rc, NULL);
        return;
    }
    if (list.n == 0) { /* an unknown job, or one without artifacts? */
        struct job job;
        if (!api_job_load(req, id, &job))
            return;
        job_release(&job);
    }
    json_t *items = json_array();
    for (int i = 0; i < list.n; i++)
        json_array_append_new(items, artifact_json(&list.items[i]));
    artifact_list_release(&list);
    http_reply_json(req, 200, json_pack("{s:o}", "artifacts", items));
}

void api_artifact_get(struct http_request *req)
{
    char id[ULID_LEN + 1];
    const char *name = http_param(req, 1);
    if (!api_job_id_param(req, 0, id) || !valid_name_param(req, name))
        return;
    struct app *app = api_app(req);
    struct artifact a;
    int fd = -1, rc = -DRV_ENOT_FOUND;
    for (int i = 0; i < ARTIFACT_OPEN_TRIES && rc == -DRV_ENOT_FOUND; i++) {
        rc = store_artifact_get(app->store, id, name, &a);
        if (rc == -DRV_ENOT_FOUND) {
            struct job job;
            if (!api_job_load(req, id, &job))
                return;
            job_release(&job);
            http_reply_errorf(req, rc, "job '%s' has no artifact '%s'", id, name);
            return;
        }
        if (rc == 0)
            rc = artifact_file_open(app->cfg->data_dir, &a, &fd);
    }
    struct stat st;
    if (rc == 0 && (fstat(fd, &st) < 0 || st.st_size != a.size)) {
        log_printf(LOG_ERROR,
                   "artifact '%s' of job '%s': the file does not have the %lld bytes "
                   "its row says",
                   name, id, (long long)a.size);
        rc = -DRV_EIO;
    }
    if (rc < 0) {
        if (fd >= 0)
            close(fd);
        http_reply_errorf(req, rc == -DRV_ENOT_FOUND ? -DRV_EIO : rc,
                          "cannot read artifact '%s' of job '%s'", name, id);
        return;
    }
    char etag[ARTIFACT_SHA256_HEX + 3];
    snprintf(etag, sizeof(etag), "\"%s\"", a.sha256);
    http_add_header(req, "ETag", etag);
    /* Served as uploaded: never sniffed, never run as a page of ours. */
    http_add_header(req, "X-Content-Type-Options", "nosniff");
    http_add_header(req, "Content-Security-Policy", "sandbox");
    http_reply_file(req, 200, fd, (uint64_t)a.size, a.content_type);
}
