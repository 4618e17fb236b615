/*
 * locks.c - /v1/locks: maintenance locks, and the keys running jobs hold.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "job_json.h"
#include "job_ops.h"
#include "timeutil.h"

#define LOCK_OWNER_MAX  128
#define LOCK_REASON_MAX 1000
#define LOCK_TTL_MAX_S  604800

static json_t *lock_to_json(const struct lock *l)
{
    return json_pack("{s:s, s:o, s:o, s:o, s:o, s:o}", "key", l->key, "owner",
                     l->owner ? json_string(l->owner) : json_null(), "reason",
                     l->reason ? json_string(l->reason) : json_null(), "expires_at",
                     json_time_or_null(l->expires_at_ms), "created_at",
                     json_time_or_null(l->created_at_ms), "job",
                     l->job_id[0] ? json_string(l->job_id) : json_null());
}

/* A lock key in the path: 1..JOB_KEY_MAX bytes, no control characters. */
static bool key_param(struct http_request *req, const char **key)
{
    *key = http_param(req, 0);
    size_t n = strlen(*key);
    bool ok = n > 0 && n <= JOB_KEY_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = (unsigned char)(*key)[i] >= 0x20 && (*key)[i] != 0x7f;
    if (!ok)
        http_reply_errorf(req, -DRV_EBAD_REQUEST, "'%s' is not a lock key (1 to %d bytes)", *key,
                          JOB_KEY_MAX);
    return ok;
}

void api_lock_list(struct http_request *req)
{
    struct lock_list list;
    int rc = store_lock_list(api_app(req)->store, &list);
    if (rc < 0) {
        http_reply_error(req, rc, NULL);
        return;
    }
    json_t *locks = json_array();
    int64_t now = time_now_ms();
    for (int i = 0; i < list.n; i++) {
        /* An expired lock is gone even before its timer has removed the row. */
        if (!list.locks[i].job_id[0] && list.locks[i].expires_at_ms &&
            list.locks[i].expires_at_ms <= now)
            continue;
        json_array_append_new(locks, lock_to_json(&list.locks[i]));
    }
    lock_list_release(&list);
    http_reply_json(req, 200, json_pack("{s:o}", "locks", locks));
}

static void put_finish(struct http_request *req)
{
    struct lock_put_op *l = http_ctx(req);
    if (l->op.result == -DRV_ELOCKED)
        http_reply_error_extra(req, l->op.result, &l->err,
                               json_pack("{s:s}", "held_by", l->holder));
    else if (l->op.result < 0)
        http_reply_error(req, l->op.result, &l->err);
    else
        http_reply_json(req, 200, lock_to_json(&l->lock));
    lock_put_op_release(l);
    free(l);
}

void api_lock_put(struct http_request *req)
{
    const char *key;
    if (!key_param(req, &key))
        return;
    struct errmsg err = {.field = ""};
    json_t *body = NULL, *v;
    const char *name;
    const char *owner = NULL, *reason = NULL;
    int64_t ttl_s = 0;
    int rc = http_body_json(req, false, &body, &err);
    if (rc == 0 && !json_is_object(body))
        rc = errmsg_set(&err, -DRV_EBAD_FIELD, "the body must be a JSON object");
    if (rc == 0) {
        json_object_foreach(body, name, v)
        {
            if (strcmp(name, "owner") == 0) {
                owner = json_text(v);
                if (owner == NULL || !owner[0] || strlen(owner) > LOCK_OWNER_MAX)
                    rc = errmsg_field(&err, -DRV_EBAD_FIELD, name,
                                      "'owner' must be a string of 1 to %d bytes", LOCK_OWNER_MAX);
            } else if (strcmp(name, "reason") == 0) {
                reason = json_is_null(v) ? NULL : json_text(v);
                if (!json_is_null(v) && (reason == NULL || strlen(reason) > LOCK_REASON_MAX))
                    rc = errmsg_field(&err, -DRV_EBAD_FIELD, name,
                                      "'reason' must be a string of at most %d bytes",
                                      LOCK_REASON_MAX);
            } else if (strcmp(name, "ttl_s") == 0) {
                if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                    json_integer_value(v) > LOCK_TTL_MAX_S)
                    rc = errmsg_field(&err, -DRV_EBAD_FIELD, name,
                                      "'ttl_s' must be an integer from 1 to %d", LOCK_TTL_MAX_S);
                else
                    ttl_s = json_integer_value(v);
            } else {
                rc = errmsg_field(&err, -DRV_EBAD_FIELD, name, "unknown field '%s'", name);
            }
            if (rc < 0)
                break;
        }
    }
    if (rc == 0 && owner == NULL)
        rc = errmsg_field(&err, -DRV_EBAD_FIELD, "owner", "'owner' is required");
    struct lock_put_op *l = rc == 0 ? malloc(sizeof(*l)) : NULL;
    if (rc == 0 && l == NULL)
        rc = -DRV_ENOMEM;
    if (rc == 0) {
        lock_put_op_init(l, NULL);
        snprintf(l->lock.key, sizeof(l->lock.key), "%s", key);
        l->lock.owner = strdup(owner);
        l->lock.reason = reason ? strdup(reason) : NULL;
        l->lock.expires_at_ms = ttl_s ? time_now_ms() + ttl_s * 1000 : 0;
        if (l->lock.owner == NULL || (reason && l->lock.reason == NULL)) {
            lock_put_op_release(l);
            free(l);
            rc = -DRV_ENOMEM;
        }
    }
    json_decref(body);
    if (rc < 0) {
        http_reply_error(req, rc, &err);
        return;
    }
    http_set_ctx(req, l);
    api_write(req, &l->op, NULL, put_finish);
}

static void delete_finish(struct http_request *req)
{
    struct lock_delete_op *l = http_ctx(req);
    if (l->op.result < 0)
        http_reply_error(req, l->op.result, &l->err);
    else
        http_reply_json(req, 200, json_pack("{s:b}", "released", 1));
    free(l);
}

void api_lock_delete(struct http_request *req)
{
    const char *key;
    if (!key_param(req, &key))
        return;
    struct lock_delete_op *l = malloc(sizeof(*l));
    if (l == NULL) {
        http_reply_errorf(req, -DRV_ENOMEM, "out of memory");
        return;
    }
    lock_delete_op_init(l, NULL);
    snprintf(l->key, sizeof(l->key), "%s", key);
    http_set_ctx(req, l);
    api_write(req, &l->op, NULL, delete_finish);
}
