/*
 * queues.c - /v1/queues/{name}: a queue's policy.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "job_json.h"
#include "job_ops.h"
#include "retention.h"

static bool queue_param(struct http_request *req, const char **name)
{
    *name = http_param(req, 0);
    if (job_queue_name_valid(*name))
        return true;
    http_reply_errorf(req, -DRV_EBAD_REQUEST,
                      "'%s' is not a queue name (1 to %d characters [A-Za-z0-9._-])", *name,
                      JOB_QUEUE_NAME_MAX);
    return false;
}

void api_queue_get(struct http_request *req)
{
    const char *name;
    if (!queue_param(req, &name))
        return;
    struct policy p;
    int rc = store_policy_get(api_app(req)->store, name, &p);
    if (rc == -DRV_ENOT_FOUND) {
        policy_init(&p); /* a queue nobody configured has the defaults */
        rc = 0;
    }
    if (rc < 0) {
        http_reply_error(req, rc, NULL);
        return;
    }
    json_t *body = policy_to_json(&p, http_role(req) == ROLE_ADMIN);
    if (body)
        json_object_set_new(body, "name", json_string(name));
    policy_release(&p);
    http_reply_json(req, 200, body);
}

static void put_finish(struct http_request *req)
{
    struct policy_put_op *p = http_ctx(req);
    if (p->op.result < 0) {
        http_reply_error(req, p->op.result, &p->err);
    } else {
        json_t *body = policy_to_json(&p->policy, true);
        if (body)
            json_object_set_new(body, "name", json_string(p->queue));
        /* A retention takes effect now, not at the sweep's next round. */
        if (p->policy.retention_s > 0)
            retention_sweep_soon(api_app(req)->timers);
        http_reply_json(req, 200, body);
    }
    policy_put_op_release(p);
    free(p);
}

void api_queue_put(struct http_request *req)
{
    const char *name;
    if (!queue_param(req, &name))
        return;
    struct errmsg err = {.field = ""};
    struct policy_put_op *p = malloc(sizeof(*p));
    if (p == NULL) {
        http_reply_errorf(req, -DRV_ENOMEM, "out of memory");
        return;
    }
    policy_put_op_init(p, NULL);
    snprintf(p->queue, sizeof(p->queue), "%s", name);
    json_t *body = NULL;
    int rc = http_body_json(req, false, &body, &err);
    if (rc == 0) {
        /* "name" may be echoed back from a GET; it must match the path. */
        json_t *echoed = json_object_get(body, "name");
        if (echoed && !(json_text(echoed) && strcmp(json_text(echoed), name) == 0))
            rc = errmsg_field(&err, -DRV_EBAD_FIELD, "name",
                              "'name' must match the queue in the path");
        else if (echoed)
            json_object_del(body, "name");
    }
    if (rc == 0)
        rc = policy_from_json(body, &p->policy, &err);
    json_decref(body);
    if (rc < 0) {
        http_reply_error(req, rc, &err);
        policy_put_op_release(p);
        free(p);
        return;
    }
    http_set_ctx(req, p);
    api_write(req, &p->op, NULL, put_finish);
}
