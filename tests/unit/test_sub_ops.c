/*
 * test_sub_ops.c - the writes of subscriptions (src/sub_ops.h) through a
 * real writer on a SQLite store in a temporary directory: create, patch,
 * delete, and disabling (as its own op, and from another op's apply() as
 * the deliverer will) — each followed in the cache only after the commit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store/store.h"
#include "store/writer.h"
#include "sub_ops.h"
#include "test_util.h"
#include "test_writer.h"

struct fixture {
    struct tu_store ts;
    struct sub_cache *cache;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    tu_store_open(&f->ts, "sub-ops", 1);
    assert_int_equal(sub_cache_new(&f->cache), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    tu_store_close(&f->ts);
    sub_cache_free(f->cache);
    free(f);
    return 0;
}

/* Create a subscription from a POST body; its id into id. */
static void create(struct fixture *f, const char *body_text, char *id)
{
    struct sub_put_op p;
    struct errmsg err = {0};
    sub_put_op_create(&p, f->cache, tu_op_done);
    json_t *body = tu_json(body_text);
    assert_int_equal(sub_from_json(body, &p.sub, &err), 0);
    json_decref(body);
    assert_int_equal(tu_run_op(f->ts.writer, &p.op), 0);
    assert_true(p.secret_changed);
    assert_int_equal(strlen(p.sub.id), SUB_ID_LEN);
    assert_true(p.sub.created_at_ms > 0 && p.sub.created_at_ms == p.sub.updated_at_ms);
    memcpy(id, p.sub.id, SUB_ID_LEN + 1);
    sub_put_op_release(&p);
}

static int patch(struct fixture *f, const char *id, const char *body_text, struct sub *out)
{
    struct sub_put_op p;
    struct errmsg err = {0};
    sub_put_op_patch(&p, f->cache, tu_op_done);
    memcpy(p.id, id, SUB_ID_LEN + 1);
    json_t *body = tu_json(body_text);
    assert_int_equal(sub_patch_from_json(body, &p.patch, &err), 0);
    json_decref(body);
    int rc = tu_run_op(f->ts.writer, &p.op);
    if (rc == 0 && out)
        assert_int_equal(sub_copy(out, &p.sub), 0);
    if (rc == -DRV_ENOT_FOUND)
        assert_true(p.err.text[0] != '\0');
    sub_put_op_release(&p);
    return rc;
}

/* The store's copy of id (read side), or -DRV_ENOT_FOUND. */
static int stored(struct fixture *f, const char *id, struct sub *out)
{
    struct sub_list list;
    assert_int_equal(store_sub_list(f->ts.store, &list), 0);
    int rc = -DRV_ENOT_FOUND;
    for (int i = 0; i < list.n; i++) {
        if (strcmp(list.subs[i].id, id) == 0) {
            assert_int_equal(sub_copy(out, &list.subs[i]), 0);
            rc = 0;
        }
    }
    sub_list_release(&list);
    return rc;
}

/* The cache and the store say the same about id. */
static void assert_mirrored(struct fixture *f, const char *id)
{
    struct sub a, b;
    int ra = sub_cache_get(f->cache, id, &a);
    int rb = stored(f, id, &b);
    assert_int_equal(ra, rb);
    if (ra == 0) {
        json_t *ja = sub_to_json(&a, true, 0), *jb = sub_to_json(&b, true, 0);
        assert_json_equal(ja, jb);
        assert_true((a.old_secret == NULL) == (b.old_secret == NULL));
        if (a.old_secret)
            assert_string_equal(a.old_secret, b.old_secret);
        assert_int_equal(a.old_secret_until_ms, b.old_secret_until_ms);
        json_decref(ja);
        json_decref(jb);
        sub_release(&a);
        sub_release(&b);
    }
}

static void test_create_patch_delete(void **state)
{
    struct fixture *f = *state;
    char id[SUB_ID_LEN + 1], id2[SUB_ID_LEN + 1];
    create(f, "{\"url\": \"https://e.com/a\", \"events\": [\"job.failed\"]}", id);
    create(f, "{\"url\": \"https://e.com/b\", \"enabled\": false}", id2);
    assert_true(strcmp(id, id2) < 0);
    assert_int_equal(sub_cache_count(f->cache), 2);
    assert_true(sub_cache_any(f->cache));
    assert_mirrored(f, id);
    assert_mirrored(f, id2);

    char ids[4][SUB_ID_LEN + 1];
    assert_int_equal(sub_cache_match(f->cache, "job.failed", "q", ids, 4), 1);
    assert_string_equal(ids[0], id);

    struct sub s;
    assert_int_equal(patch(f, id,
                           "{\"queues\": [\"q\"], \"secret\": "
                           "\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \"grace_s\": 60}",
                           &s),
                     0);
    assert_non_null(s.old_secret);
    assert_true(s.old_secret_until_ms > s.created_at_ms);
    assert_string_equal(s.secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    sub_release(&s);
    assert_mirrored(f, id);
    assert_int_equal(sub_cache_match(f->cache, "job.failed", "other", ids, 4), 0);

    assert_int_equal(patch(f, "01ARZ3NDEKTSV4RRFFQ69G5FAV", "{\"enabled\": true}", NULL),
                     -DRV_ENOT_FOUND);

    struct sub_delete_op d;
    sub_delete_op_init(&d, f->cache, tu_op_done);
    memcpy(d.id, id, sizeof(d.id));
    assert_int_equal(tu_run_op(f->ts.writer, &d.op), 0);
    assert_int_equal(sub_cache_get(f->cache, id, &s), -DRV_ENOT_FOUND);
    assert_mirrored(f, id);
    assert_false(sub_cache_any(f->cache)); /* the one left is disabled */
    sub_delete_op_init(&d, f->cache, tu_op_done);
    memcpy(d.id, id, sizeof(d.id));
    assert_int_equal(tu_run_op(f->ts.writer, &d.op), -DRV_ENOT_FOUND);
    assert_true(d.err.text[0] != '\0');
    assert_int_equal(sub_cache_count(f->cache), 1);
}

static void test_disable_op(void **state)
{
    struct fixture *f = *state;
    char id[SUB_ID_LEN + 1];
    create(f, "{\"url\": \"https://e.com/gone\"}", id);

    struct sub_disable_op d;
    assert_int_equal(
        sub_disable_op_init(&d, f->cache, id, "410 Gone from https://e.com/gone", tu_op_done), 0);
    assert_int_equal(tu_run_op(f->ts.writer, &d.op), 0);
    sub_disable_op_release(&d);
    struct sub s;
    assert_int_equal(sub_cache_get(f->cache, id, &s), 0);
    assert_false(s.enabled);
    assert_string_equal(s.disabled_reason, "410 Gone from https://e.com/gone");
    sub_release(&s);
    assert_mirrored(f, id);
    assert_false(sub_cache_any(f->cache));

    /* Disabled already: the first reason stays. */
    assert_int_equal(sub_disable_op_init(&d, f->cache, id, "another reason", tu_op_done), 0);
    assert_int_equal(tu_run_op(f->ts.writer, &d.op), 0);
    sub_disable_op_release(&d);
    assert_int_equal(sub_cache_get(f->cache, id, &s), 0);
    assert_string_equal(s.disabled_reason, "410 Gone from https://e.com/gone");
    sub_release(&s);

    /* Enabling by PATCH clears it. */
    assert_int_equal(patch(f, id, "{\"enabled\": true}", NULL), 0);
    assert_int_equal(sub_cache_get(f->cache, id, &s), 0);
    assert_true(s.enabled);
    assert_null(s.disabled_reason);
    sub_release(&s);
    assert_mirrored(f, id);

    /* Gone: -DRV_ENOT_FOUND, nothing in the cache. */
    assert_int_equal(
        sub_disable_op_init(&d, f->cache, "01ARZ3NDEKTSV4RRFFQ69G5FAV", NULL, tu_op_done), 0);
    assert_int_equal(tu_run_op(f->ts.writer, &d.op), -DRV_ENOT_FOUND);
    sub_disable_op_release(&d);
    assert_int_equal(sub_cache_count(f->cache), 1);
}

/* An op of the deliverer's kind: it disables inside its own apply(). */
struct gone_op {
    struct write_op op;
    struct sub_cache *cache;
    char id[SUB_ID_LEN + 1];
    const char *reason;
    struct sub sub;
    bool cache_before_commit; /* what the cache said during apply() */
    int put_rc;               /* sub_cache_put's in done() (cmocka asserts on the main thread) */
};

static int gone_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct gone_op *g = (struct gone_op *)op;
    int rc = sub_ops_disable(ctx, g->id, g->reason, &g->sub);
    struct sub seen;
    if (sub_cache_get(g->cache, g->id, &seen) == 0) {
        g->cache_before_commit = seen.enabled;
        sub_release(&seen);
    }
    return rc;
}

static void gone_done(struct write_op *op)
{
    struct gone_op *g = (struct gone_op *)op;
    if (op->result == 0) /* committed: now the cache may say so */
        g->put_rc = sub_cache_put(g->cache, &g->sub);
    tu_op_done(op);
}

static void test_disable_from_another_apply(void **state)
{
    struct fixture *f = *state;
    char id[SUB_ID_LEN + 1];
    create(f, "{\"url\": \"https://e.com/x\", \"queues\": [\"q\"]}", id);

    /* 1001 bytes, the last character (é) straddling the cut at 1000. */
    char reason[1002];
    memset(reason, 'a', 999);
    memcpy(reason + 999, "\xc3\xa9", 3);
    struct gone_op g = {
        .op = {.apply = gone_apply, .done = gone_done}, .cache = f->cache, .reason = reason};
    memcpy(g.id, id, sizeof(g.id));
    sub_init(&g.sub);
    assert_int_equal(tu_run_op(f->ts.writer, &g.op), 0);
    assert_int_equal(g.put_rc, 0);
    assert_true(g.cache_before_commit); /* sub_ops_disable leaves the cache alone */
    assert_false(g.sub.enabled);
    assert_int_equal(strlen(g.sub.disabled_reason), 999); /* cut before the é */
    sub_release(&g.sub);

    struct sub s;
    assert_int_equal(sub_cache_get(f->cache, id, &s), 0);
    assert_false(s.enabled);
    json_t *j = sub_to_json(&s, false, 0); /* the reason is valid UTF-8: it can be shown */
    assert_non_null(j);
    json_decref(j);
    sub_release(&s);
    assert_mirrored(f, id);

    /* Bytes that are not UTF-8 are not kept as such. */
    create(f, "{\"url\": \"https://e.com/y\"}", id);
    struct gone_op g2 = {.op = {.apply = gone_apply, .done = gone_done},
                         .cache = f->cache,
                         .reason = "410 Gone: \xff\xfe body"};
    memcpy(g2.id, id, sizeof(g2.id));
    sub_init(&g2.sub);
    assert_int_equal(tu_run_op(f->ts.writer, &g2.op), 0);
    assert_int_equal(g2.put_rc, 0);
    assert_string_equal(g2.sub.disabled_reason, "410 Gone: ?? body");
    sub_release(&g2.sub);
    assert_mirrored(f, id);
}

/* SUB_COUNT_MAX subscriptions (counted in the cache): the next create is refused, writing nothing.
 */
static void test_count_max(void **state)
{
    struct fixture *f = *state;
    struct sub s;
    sub_init(&s);
    s.url = strdup("https://e.com/");
    s.secret = strdup("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    for (int i = 0; i < SUB_COUNT_MAX - 1; i++) {
        snprintf(s.id, sizeof(s.id), "00000000000000000000%06d", i);
        assert_int_equal(sub_cache_put(f->cache, &s), 0);
    }
    sub_release(&s);
    char id[SUB_ID_LEN + 1];
    create(f, "{\"url\": \"https://e.com/last\"}", id); /* the 1000th */
    assert_int_equal(sub_cache_count(f->cache), SUB_COUNT_MAX);

    struct sub_put_op p;
    struct errmsg err = {0};
    sub_put_op_create(&p, f->cache, tu_op_done);
    json_t *body = tu_json("{\"url\": \"https://e.com/one-too-many\"}");
    assert_int_equal(sub_from_json(body, &p.sub, &err), 0);
    json_decref(body);
    assert_int_equal(tu_run_op(f->ts.writer, &p.op), -DRV_ECONFLICT);
    assert_non_null(strstr(p.err.text, "1000"));
    sub_put_op_release(&p);
    assert_int_equal(sub_cache_count(f->cache), SUB_COUNT_MAX);
    struct sub_list list;
    assert_int_equal(store_sub_list(f->ts.store, &list), 0);
    assert_int_equal(list.n, 1); /* only the one created through the store */
    sub_list_release(&list);
}

/* A restart: a new cache filled from the store says what the old one said. */
static void test_fill(void **state)
{
    struct fixture *f = *state;
    char a[SUB_ID_LEN + 1], b[SUB_ID_LEN + 1];
    create(f, "{\"url\": \"https://e.com/a\", \"events\": [\"job.step\"]}", a);
    create(f, "{\"url\": \"https://e.com/b\", \"enabled\": false}", b);
    assert_int_equal(patch(f, a, "{\"rotate_secret\": true}", NULL), 0);

    struct sub_cache *fresh;
    assert_int_equal(sub_cache_new(&fresh), 0);
    assert_int_equal(sub_cache_fill(fresh, f->ts.store), 0);
    assert_int_equal(sub_cache_count(fresh), 2);
    const char *ids[] = {a, b};
    for (int i = 0; i < 2; i++) {
        struct sub x, y;
        assert_int_equal(sub_cache_get(f->cache, ids[i], &x), 0);
        assert_int_equal(sub_cache_get(fresh, ids[i], &y), 0);
        json_t *jx = sub_to_json(&x, true, 0), *jy = sub_to_json(&y, true, 0);
        assert_json_equal(jx, jy);
        json_decref(jx);
        json_decref(jy);
        assert_true((x.old_secret == NULL) == (y.old_secret == NULL));
        sub_release(&x);
        sub_release(&y);
    }
    sub_cache_free(fresh);
}

int main(void)
{
    log_set_level(LOG_WARN); /* the store's migrations and the writer's stop are noise here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_patch_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disable_op, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disable_from_another_apply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_count_max, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
