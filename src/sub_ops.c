/*
 * sub_ops.c - create, patch, delete and disable webhook subscriptions inside
 * the writer's transaction; the cache follows in done(), after the commit.
 */
#include "sub_ops.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

#define SUB_REASON_MAX 1000 /* bytes of a disabled_reason */

/*
 * The reason kept: at most SUB_REASON_MAX bytes, cut at a character
 * boundary, and valid UTF-8 (it may quote an endpoint's answer; the API
 * shows it as a JSON string), else its non-ASCII bytes become '?'.
 */
static char *reason_copy(const char *reason)
{
    size_t n = strnlen(reason, SUB_REASON_MAX);
    if (reason[n] != '\0')
        while (n > 0 && ((unsigned char)reason[n] & 0xC0) == 0x80)
            n--; /* reason[n] continues a character: cut before it starts */
    char *r = strndup(reason, n);
    json_t *probe = r ? json_string(r) : NULL;
    if (r && probe == NULL) {
        for (char *c = r; *c; c++)
            if ((unsigned char)*c >= 0x80)
                *c = '?';
    }
    json_decref(probe);
    return r;
}

/* After a commit: make the cache say what the store says. */
static void cache_put(struct sub_cache *cache, const struct sub *s)
{
    if (cache && sub_cache_put(cache, s) < 0)
        log_printf(LOG_ERROR, "subscription %s: committed, but the cache could not be updated",
                   s->id);
}

/* ---- create and patch ---- */

static int put_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct sub_put_op *p = container_of(op, struct sub_put_op, op);
    int rc;
    if (p->create) {
        /* Counted in the cache: subscriptions created earlier in this batch are
         * not in it yet, so the cap may be passed by a batch's worth. */
        if (p->cache && sub_cache_count(p->cache) >= SUB_COUNT_MAX)
            return errmsg_set(&p->err, -DRV_ECONFLICT,
                              "there are %d subscriptions already, the most drover keeps",
                              SUB_COUNT_MAX);
        rc = ulid_generate(ctx->ulid, ctx->now_ms, p->sub.id);
        if (rc < 0)
            return rc;
        p->sub.created_at_ms = p->sub.updated_at_ms = ctx->now_ms;
        p->secret_changed = true;
        return store_sub_put(ctx->store, &p->sub);
    }
    sub_release(&p->sub);
    rc = store_sub_get(ctx->store, p->id, &p->sub);
    if (rc == -DRV_ENOT_FOUND)
        return errmsg_set(&p->err, rc, "no subscription %s", p->id);
    if (rc == 0)
        rc = sub_patch_apply(&p->sub, &p->patch, ctx->now_ms, &p->secret_changed);
    return rc ? rc : store_sub_put(ctx->store, &p->sub);
}

static void put_done(struct write_op *op)
{
    struct sub_put_op *p = container_of(op, struct sub_put_op, op);
    /* No id: apply() did not run (a replayed Idempotency-Key), nothing changed. */
    if (op->result == 0 && p->sub.id[0])
        cache_put(p->cache, &p->sub);
    if (p->then)
        p->then(op);
}

static void put_init(struct sub_put_op *p, struct sub_cache *cache, write_done_fn then)
{
    memset(p, 0, sizeof(*p));
    sub_init(&p->sub);
    sub_patch_init(&p->patch);
    p->cache = cache;
    p->then = then;
    p->op.apply = put_apply;
    p->op.done = put_done;
}

void sub_put_op_create(struct sub_put_op *p, struct sub_cache *cache, write_done_fn then)
{
    put_init(p, cache, then);
    p->create = true;
}

void sub_put_op_patch(struct sub_put_op *p, struct sub_cache *cache, write_done_fn then)
{
    put_init(p, cache, then);
}

void sub_put_op_release(struct sub_put_op *p)
{
    sub_release(&p->sub);
    sub_patch_release(&p->patch);
}

/* ---- delete ---- */

static int delete_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct sub_delete_op *d = container_of(op, struct sub_delete_op, op);
    int rc = store_sub_delete(ctx->store, d->id);
    if (rc == -DRV_ENOT_FOUND)
        return errmsg_set(&d->err, rc, "no subscription %s", d->id);
    return rc;
}

static void delete_done(struct write_op *op)
{
    struct sub_delete_op *d = container_of(op, struct sub_delete_op, op);
    if (op->result == 0 && d->cache)
        sub_cache_remove(d->cache, d->id);
    if (d->then)
        d->then(op);
}

void sub_delete_op_init(struct sub_delete_op *d, struct sub_cache *cache, write_done_fn then)
{
    memset(d, 0, sizeof(*d));
    d->cache = cache;
    d->then = then;
    d->op.apply = delete_apply;
    d->op.done = delete_done;
}

/* ---- disable (410 Gone) ---- */

int sub_ops_disable(struct write_ctx *ctx, const char *id, const char *reason, struct sub *out)
{
    struct sub s;
    int rc = store_sub_get(ctx->store, id, &s);
    if (rc < 0)
        return rc;
    if (s.enabled) {
        char *r = reason_copy(reason ? reason : "disabled by drover");
        if (r == NULL) {
            sub_release(&s);
            return -DRV_ENOMEM;
        }
        free(s.disabled_reason);
        s.disabled_reason = r;
        s.enabled = false;
        s.updated_at_ms = ctx->now_ms;
        rc = store_sub_put(ctx->store, &s);
    }
    if (rc == 0 && out) {
        *out = s;
        return 0;
    }
    sub_release(&s);
    return rc;
}

static int disable_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct sub_disable_op *d = container_of(op, struct sub_disable_op, op);
    sub_release(&d->sub);
    return sub_ops_disable(ctx, d->id, d->reason, &d->sub);
}

static void disable_done(struct write_op *op)
{
    struct sub_disable_op *d = container_of(op, struct sub_disable_op, op);
    if (op->result == 0)
        cache_put(d->cache, &d->sub);
    else if (op->result != -DRV_ENOT_FOUND && op->result != -DRV_ESHUTTING_DOWN)
        log_printf(LOG_ERROR, "cannot disable subscription %s: %s", d->id, err_name(op->result));
    if (d->then)
        d->then(op);
}

int sub_disable_op_init(struct sub_disable_op *d, struct sub_cache *cache, const char *id,
                        const char *reason, write_done_fn then)
{
    memset(d, 0, sizeof(*d));
    sub_init(&d->sub);
    d->cache = cache;
    d->then = then;
    snprintf(d->id, sizeof(d->id), "%s", id);
    d->reason = strdup(reason ? reason : "disabled by drover"); /* cut when applied */
    d->op.apply = disable_apply;
    d->op.done = disable_done;
    return d->reason ? 0 : -DRV_ENOMEM;
}

void sub_disable_op_release(struct sub_disable_op *d)
{
    sub_release(&d->sub);
    free(d->reason);
    d->reason = NULL;
}
