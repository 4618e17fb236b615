/*
 * subscriptions.c - /v1/subscriptions: who gets which job events as
 * webhooks (docs/api.md "Subscriptions"). Writes go through sub_ops.h; GET
 * of one subscription answers from the in-memory mirror the deliverer uses,
 * so it shows exactly what deliveries see.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "sub_ops.h"
#include "timeutil.h"
#include "ulid.h"
#include "util.h"

/* The secret is shown to admins only (as a queue's callback_secret); others see "<redacted>". */
static bool shows_secret(struct http_request *req)
{
    return http_role(req) == ROLE_ADMIN;
}

/* Path parameter 0 as a subscription id; replies 400 and returns false when it is not one. */
static bool sub_id_param(struct http_request *req, char *id)
{
    const char *raw = http_param(req, 0);
    if (ulid_parse(raw, id))
        return true;
    http_reply_errorf(req, -DRV_EBAD_REQUEST, "'%s' is not a subscription id (a 26-character ULID)",
                      raw);
    return false;
}

/* The ops bring their own done(), which ends here. */
static void resume_owner(struct write_op *op)
{
    http_resume(op->owner);
}

void api_sub_list(struct http_request *req)
{
    struct sub_list list;
    int rc = store_sub_list(api_app(req)->store, &list);
    if (rc < 0) {
        http_reply_error(req, rc, NULL);
        return;
    }
    json_t *subs = json_array();
    int64_t now = time_now_ms();
    for (int i = 0; i < list.n; i++)
        json_array_append_new(subs, sub_to_json(&list.subs[i], shows_secret(req), now));
    sub_list_release(&list);
    http_reply_json(req, 200, json_pack("{s:o}", "subscriptions", subs));
}

void api_sub_get(struct http_request *req)
{
    char id[ULID_LEN + 1];
    if (!sub_id_param(req, id))
        return;
    struct sub s;
    int rc = sub_cache_get(api_app(req)->subs, id, &s);
    if (rc == -DRV_ENOT_FOUND) {
        http_reply_errorf(req, rc, "no subscription %s", id);
        return;
    }
    if (rc < 0) {
        http_reply_error(req, rc, NULL);
        return;
    }
    http_reply_json(req, 200, sub_to_json(&s, shows_secret(req), time_now_ms()));
    sub_release(&s);
}

/* ---- create ---- */

/* On the writer thread when the POST has an Idempotency-Key; the route is admin-only. */
static int create_render(const struct write_op *op, struct write_reply *out)
{
    const struct sub_put_op *p = container_of(op, struct sub_put_op, op);
    snprintf(out->location, sizeof(out->location), "/v1/subscriptions/%s", p->sub.id);
    return api_render_json(out, 201, sub_to_json(&p->sub, true, time_now_ms()));
}

static void create_finish(struct http_request *req)
{
    struct sub_put_op *p = http_ctx(req);
    api_reply_write(req, &p->op, &p->err, create_render);
    sub_put_op_release(p);
    free(p);
}

void api_sub_create(struct http_request *req)
{
    struct errmsg err = {.field = ""};
    json_t *body = NULL;
    struct sub_put_op *p = malloc(sizeof(*p));
    if (p == NULL) {
        http_reply_errorf(req, -DRV_ENOMEM, "out of memory");
        return;
    }
    sub_put_op_create(p, api_app(req)->subs, resume_owner);
    int rc = http_body_json(req, false, &body, &err);
    if (rc == 0)
        rc = sub_from_json(body, &p->sub, &err);
    json_decref(body);
    if (rc < 0) {
        http_reply_error(req, rc, &err);
        sub_put_op_release(p);
        free(p);
        return;
    }
    http_set_ctx(req, p);
    api_write(req, &p->op, create_render, create_finish);
}

/* ---- patch ---- */

static void patch_finish(struct http_request *req)
{
    struct sub_put_op *p = http_ctx(req);
    if (p->op.result < 0)
        http_reply_error(req, p->op.result, &p->err);
    else
        http_reply_json(req, 200, sub_to_json(&p->sub, shows_secret(req), time_now_ms()));
    sub_put_op_release(p);
    free(p);
}

void api_sub_patch(struct http_request *req)
{
    char id[ULID_LEN + 1];
    if (!sub_id_param(req, id))
        return;
    struct errmsg err = {.field = ""};
    json_t *body = NULL;
    struct sub_put_op *p = malloc(sizeof(*p));
    if (p == NULL) {
        http_reply_errorf(req, -DRV_ENOMEM, "out of memory");
        return;
    }
    sub_put_op_patch(p, api_app(req)->subs, resume_owner);
    memcpy(p->id, id, sizeof(p->id));
    int rc = http_body_json(req, false, &body, &err);
    if (rc == 0)
        rc = sub_patch_from_json(body, &p->patch, &err);
    json_decref(body);
    if (rc < 0) {
        http_reply_error(req, rc, &err);
        sub_put_op_release(p);
        free(p);
        return;
    }
    http_set_ctx(req, p);
    api_write(req, &p->op, NULL, patch_finish);
}

/* ---- delete ---- */

static void delete_finish(struct http_request *req)
{
    struct sub_delete_op *d = http_ctx(req);
    if (d->op.result < 0)
        http_reply_error(req, d->op.result, &d->err);
    else
        http_reply_json(req, 200, json_pack("{s:b}", "deleted", 1));
    free(d);
}

void api_sub_delete(struct http_request *req)
{
    char id[ULID_LEN + 1];
    if (!sub_id_param(req, id))
        return;
    struct sub_delete_op *d = malloc(sizeof(*d));
    if (d == NULL) {
        http_reply_errorf(req, -DRV_ENOMEM, "out of memory");
        return;
    }
    sub_delete_op_init(d, api_app(req)->subs, resume_owner);
    memcpy(d->id, id, sizeof(d->id));
    http_set_ctx(req, d);
    api_write(req, &d->op, NULL, delete_finish);
}
