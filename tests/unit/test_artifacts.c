/*
 * test_artifacts.c - artifact names, content types and files
 * (src/artifacts.h): names that are safe as file names, the durable write
 * with its SHA-256, reading back, and removing a job's directory; and the
 * artifacts as the job.succeeded event carries them (artifacts_event_json(),
 * on a SQLite store in a temporary directory): inline up to inline_max and
 * by url past it, the budget shared by a job's artifacts, base64 that
 * decodes to the exact bytes, and files that are gone or short.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "artifacts.h"
#include "timeutil.h"
#include "util.h"
#include "test_util.h"
#include "test_writer.h"

#define JOB "01ARZ3NDEKTSV4RRFFQ69G5FAV"

static char data_dir[] = "/tmp/drover-test-artifacts-XXXXXX";

static int group_setup(void **state)
{
    (void)state;
    return mkdtemp(data_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    artifact_dir_remove(data_dir, JOB);
    char root[512];
    snprintf(root, sizeof(root), "%s/%s", data_dir, ARTIFACTS_DIR);
    rmdir(root);
    return rmdir(data_dir);
}

static void test_names(void **state)
{
    (void)state;
    char longest[ARTIFACT_NAME_MAX + 2];
    memset(longest, 'n', sizeof(longest));
    longest[ARTIFACT_NAME_MAX] = '\0';
    const char *good[] = {"output", "completion", "a", "A.b_c-9", "x..y", "_", "-", longest};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!artifact_name_valid(good[i]))
            fail_msg("'%s' refused", good[i]);
    longest[ARTIFACT_NAME_MAX] = 'n';
    longest[ARTIFACT_NAME_MAX + 1] = '\0';
    const char *bad[] = {"",     ".",           "..",   ".hidden", "a/b", "a b",  "a@b",
                         "a\\b", "caf\xc3\xa9", "a\nb", "a:b",     "~x",  longest};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (artifact_name_valid(bad[i]))
            fail_msg("'%s' accepted", bad[i]);
}

static void test_content_types(void **state)
{
    (void)state;
    assert_true(artifact_content_type_valid("text/plain"));
    assert_true(artifact_content_type_valid("text/plain; charset=utf-8"));
    assert_false(artifact_content_type_valid(""));
    assert_false(artifact_content_type_valid("text/plain\r\nX-Evil: 1"));
    assert_false(artifact_content_type_valid("t\xc3\xa9xt/plain"));
    char big[ARTIFACT_TYPE_MAX + 2];
    memset(big, 'a', sizeof(big));
    big[ARTIFACT_TYPE_MAX] = '\0';
    assert_true(artifact_content_type_valid(big));
    big[ARTIFACT_TYPE_MAX] = 'a';
    big[ARTIFACT_TYPE_MAX + 1] = '\0';
    assert_false(artifact_content_type_valid(big));
}

static void test_path_too_long(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(artifact_path("/d", JOB, "f", out, sizeof(out)), -DRV_EIO);
    char ok[128];
    assert_int_equal(artifact_path("/d", JOB, "f", ok, sizeof(ok)), 0);
    assert_string_equal(ok, "/d/artifacts/" JOB "/f");
    assert_int_equal(artifact_path("/d", JOB, NULL, ok, sizeof(ok)), 0);
    assert_string_equal(ok, "/d/artifacts/" JOB);
}

static int count_files(void)
{
    char dir[512];
    assert_int_equal(artifact_path(data_dir, JOB, NULL, dir, sizeof(dir)), 0);
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_write_read_remove(void **state)
{
    (void)state;
    struct errmsg err = {0};
    static const char bytes[] = "bin\0ary\xff";
    struct artifact a = {.job_id = JOB, .name = "inventory"};
    /* The root may be missing: the first write makes it. */
    assert_int_equal(artifact_file_write(data_dir, &a, bytes, sizeof(bytes), &err), 0);
    assert_int_equal(a.size, (int64_t)sizeof(bytes));
    assert_int_equal(strncmp(a.file, "inventory@", 10), 0);
    assert_int_equal(strlen(a.file), strlen("inventory@") + 16);
    assert_int_equal(strlen(a.sha256), ARTIFACT_SHA256_HEX);

    /* SHA-256 of "" is well known: the hash is of the bytes, not of a name. */
    struct artifact empty = {.job_id = JOB, .name = "empty"};
    assert_int_equal(artifact_file_write(data_dir, &empty, "", 0, &err), 0);
    assert_string_equal(empty.sha256,
                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

    /* Another upload of the same name is another file. */
    struct artifact again = a;
    assert_int_equal(artifact_file_write(data_dir, &again, "x", 1, &err), 0);
    assert_string_not_equal(again.file, a.file);
    assert_int_equal(count_files(), 3);

    char *got;
    size_t len;
    assert_int_equal(artifact_read(data_dir, &a, 1024, &got, &len), 0);
    assert_int_equal(len, sizeof(bytes));
    assert_memory_equal(got, bytes, sizeof(bytes));
    free(got);
    assert_int_equal(artifact_read(data_dir, &a, sizeof(bytes) - 1, &got, &len), -DRV_ETOO_LARGE);
    assert_null(got);

    artifact_file_remove(data_dir, JOB, a.file);
    assert_int_equal(count_files(), 2);
    int fd;
    assert_int_equal(artifact_file_open(data_dir, &a, &fd), -DRV_ENOT_FOUND);
    assert_int_equal(artifact_read(data_dir, &a, 1024, &got, &len), -DRV_ENOT_FOUND);
    assert_int_equal(artifact_file_open(data_dir, &again, &fd), 0);
    close(fd);

    assert_int_equal(artifact_dir_remove(data_dir, JOB), 0);
    assert_int_equal(count_files(), -1);
    assert_int_equal(artifact_dir_remove(data_dir, JOB), 0); /* gone already: fine */
    assert_int_equal(artifact_root_sync(data_dir), 0);
}

/* ---- artifacts_event_json() ---- */

#define EV_JOB  "01JD6Y9Q3C8W0ZB1N4T6R2M5XA"
#define EV_BASE "https://drover.example.com"

static int event_setup(void **state)
{
    return tu_store_setup(state, "artifact-event", 2);
}

/* The row of an upload, committed as artifact_put_op would once it let the uploader in. */
struct row_op {
    struct write_op op;
    struct artifact artifact;
    char replaced[ARTIFACT_FILE_MAX + 1];
};

static int row_apply(struct write_ctx *ctx, struct write_op *op)
{
    struct row_op *r = container_of(op, struct row_op, op);
    r->artifact.created_at_ms = ctx->now_ms;
    return store_artifact_put(ctx->store, &r->artifact, r->replaced);
}

/* Upload len bytes of data as job's artifact name: the file, then its row. Its row into out. */
static void upload(struct tu_store *f, const char *job, const char *name, const char *type,
                   const void *data, size_t len, struct artifact *out)
{
    struct errmsg err = {0};
    struct row_op r = {.op = {.apply = row_apply, .done = tu_op_done}};
    snprintf(r.artifact.job_id, sizeof(r.artifact.job_id), "%s", job);
    snprintf(r.artifact.name, sizeof(r.artifact.name), "%s", name);
    snprintf(r.artifact.content_type, sizeof(r.artifact.content_type), "%s", type);
    assert_int_equal(artifact_file_write(f->dir, &r.artifact, data, len, &err), 0);
    assert_int_equal(tu_run_op(f->writer, &r.op), 0);
    if (out)
        *out = r.artifact;
}

static json_t *event_json(struct tu_store *f, const char *job, int64_t inline_max)
{
    json_t *out = (json_t *)1;
    assert_int_equal(artifacts_event_json(f->store, f->dir, EV_BASE, job, inline_max, &out), 0);
    assert_non_null(out);
    assert_true(json_is_array(out));
    return out;
}

/* The item of the artifact named name in an event's array. */
static json_t *item_named(json_t *items, const char *name)
{
    size_t i;
    json_t *item;
    json_array_foreach(items, i, item)
    {
        if (strcmp(json_string_value(json_object_get(item, "name")), name) == 0)
            return item;
    }
    fail_msg("no artifact '%s' in the event", name);
    return NULL;
}

/* content_base64 decoded by OpenSSL's decoder into out (cap bytes); returns the length. */
static size_t decode_base64(const char *text, unsigned char *out, size_t cap)
{
    size_t n = strlen(text);
    assert_int_equal(n % 4, 0);
    assert_true(n / 4 * 3 <= cap);
    int got = EVP_DecodeBlock(out, (const unsigned char *)text, (int)n);
    assert_true(got >= 0);
    /* EVP_DecodeBlock counts the bytes of the padding too. */
    size_t pad = (n > 0 && text[n - 1] == '=') + (n > 1 && text[n - 2] == '=');
    return (size_t)got - pad;
}

/* item carries a's bytes inline: exactly the five fields and content_base64. */
static void assert_inline(json_t *item, const struct artifact *a, const void *bytes)
{
    char created[TIME_RFC3339_LEN];
    time_format_rfc3339(a->created_at_ms, created);
    json_t *b64 = json_object_get(item, "content_base64");
    assert_true(json_is_string(b64));
    json_t *want = json_pack("{s:s, s:I, s:s, s:s, s:s, s:O}", "name", a->name, "size",
                             (json_int_t)a->size, "content_type", a->content_type, "sha256",
                             a->sha256, "created_at", created, "content_base64", b64);
    assert_json_equal(item, want);
    json_decref(want);
    unsigned char *got = malloc((size_t)a->size + 3);
    assert_non_null(got);
    assert_int_equal(decode_base64(json_string_value(b64), got, (size_t)a->size + 3), a->size);
    assert_memory_equal(got, bytes, (size_t)a->size);
    free(got);
}

/* item carries a by url: exactly the five fields and the url of GET .../artifacts/{name}. */
static void assert_by_url(json_t *item, const struct artifact *a)
{
    char created[TIME_RFC3339_LEN], url[512];
    time_format_rfc3339(a->created_at_ms, created);
    snprintf(url, sizeof(url), EV_BASE "/v1/jobs/%s/artifacts/%s", a->job_id, a->name);
    json_t *want = json_pack("{s:s, s:I, s:s, s:s, s:s, s:s}", "name", a->name, "size",
                             (json_int_t)a->size, "content_type", a->content_type, "sha256",
                             a->sha256, "created_at", created, "url", url);
    assert_json_equal(item, want);
    json_decref(want);
}

static void test_event_inline_up_to_the_threshold_then_by_url(void **state)
{
    struct tu_store *f = *state;
    char bytes[100];
    memset(bytes, 'x', sizeof(bytes));
    struct artifact a;
    upload(f, EV_JOB, "report.txt", "text/plain", bytes, sizeof(bytes), &a);
    assert_true(a.created_at_ms > 0);

    json_t *items = event_json(f, EV_JOB, 100); /* size == inline_max: inline */
    assert_int_equal(json_array_size(items), 1);
    assert_inline(json_array_get(items, 0), &a, bytes);
    json_decref(items);

    items = event_json(f, EV_JOB, 99); /* one byte more than inline_max: by url */
    assert_int_equal(json_array_size(items), 1);
    assert_by_url(json_array_get(items, 0), &a);
    json_decref(items);

    /* Past the policy's limit inline_max counts as the limit: still inline. */
    items = event_json(f, EV_JOB, POLICY_ARTIFACT_INLINE_LIMIT * 4LL);
    assert_inline(json_array_get(items, 0), &a, bytes);
    json_decref(items);
}

static void test_event_inline_max_0_sends_everything_by_url(void **state)
{
    struct tu_store *f = *state;
    struct artifact empty, one;
    upload(f, EV_JOB, "empty", ARTIFACT_DEFAULT_TYPE, "", 0, &empty);
    upload(f, EV_JOB, "one", ARTIFACT_DEFAULT_TYPE, "1", 1, &one);
    json_t *items = event_json(f, EV_JOB, 0);
    assert_int_equal(json_array_size(items), 2);
    assert_by_url(item_named(items, "empty"), &empty);
    assert_by_url(item_named(items, "one"), &one);
    json_decref(items);
    items = event_json(f, EV_JOB, -1);
    assert_by_url(item_named(items, "empty"), &empty);
    json_decref(items);
    /* Any room at all, and the empty one is inline as "". */
    items = event_json(f, EV_JOB, 1);
    assert_inline(item_named(items, "empty"), &empty, "");
    assert_string_equal(
        json_string_value(json_object_get(item_named(items, "empty"), "content_base64")), "");
    assert_inline(item_named(items, "one"), &one, "1");
    json_decref(items);
}

static void test_event_base64_round_trips_every_byte(void **state)
{
    struct tu_store *f = *state;
    /* Known answers (RFC 4648 alphabet, padded) for every padding case. */
    static const struct {
        const char *name, *bytes;
        size_t len;
        const char *b64;
    } known[] = {
        {"k1", "\0", 1, "AA=="},           {"k2", "\0\xff", 2, "AP8="},
        {"k3", "\xff\xfe\xfd", 3, "//79"}, {"k4", "\0\0\0\0", 4, "AAAAAA=="},
        {"k5", "f\0o\0b", 5, "ZgBvAGI="},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        upload(f, EV_JOB, known[i].name, ARTIFACT_DEFAULT_TYPE, known[i].bytes, known[i].len, NULL);
    /* Every byte value, NULs among them, at a length that is no multiple of 3. */
    unsigned char all[256 * 3 + 64 + 1];
    for (size_t i = 0; i < sizeof(all); i++)
        all[i] = (unsigned char)(i < 256 * 3 ? i : 0);
    struct artifact blob;
    upload(f, EV_JOB, "blob.bin", "application/x-test", all, sizeof(all), &blob);

    json_t *items = event_json(f, EV_JOB, 1 << 20);
    assert_int_equal(json_array_size(items), 6);
    /* By name. */
    assert_string_equal(json_string_value(json_object_get(json_array_get(items, 0), "name")),
                        "blob.bin");
    assert_inline(item_named(items, "blob.bin"), &blob, all);
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        json_t *item = item_named(items, known[i].name);
        assert_string_equal(json_string_value(json_object_get(item, "content_base64")),
                            known[i].b64);
        assert_int_equal(json_integer_value(json_object_get(item, "size")), known[i].len);
    }
    json_decref(items);
}

static void test_event_inline_bytes_share_one_budget(void **state)
{
    struct tu_store *f = *state;
    char a60[60], b50[50], c40[40];
    memset(a60, 'a', sizeof(a60));
    memset(b50, 'b', sizeof(b50));
    memset(c40, 'c', sizeof(c40));
    struct artifact a, b, c;
    upload(f, EV_JOB, "c", "text/plain", c40, sizeof(c40), &c); /* uploaded out of order */
    upload(f, EV_JOB, "a", "text/plain", a60, sizeof(a60), &a);
    upload(f, EV_JOB, "b", "text/plain", b50, sizeof(b50), &b);

    /* In name order: a (60) fits, b (60 + 50) does not, c (60 + 40) does. */
    json_t *items = event_json(f, EV_JOB, 100);
    assert_int_equal(json_array_size(items), 3);
    assert_inline(json_array_get(items, 0), &a, a60);
    assert_by_url(json_array_get(items, 1), &b);
    assert_inline(json_array_get(items, 2), &c, c40);
    json_decref(items);

    items = event_json(f, EV_JOB, 150); /* all of them, exactly */
    assert_inline(json_array_get(items, 0), &a, a60);
    assert_inline(json_array_get(items, 1), &b, b50);
    assert_inline(json_array_get(items, 2), &c, c40);
    json_decref(items);

    items = event_json(f, EV_JOB, 149);
    assert_inline(json_array_get(items, 0), &a, a60);
    assert_inline(json_array_get(items, 1), &b, b50);
    assert_by_url(json_array_get(items, 2), &c);
    json_decref(items);

    items = event_json(f, EV_JOB, 59); /* a is too big alone; b fits, then c no longer */
    assert_by_url(json_array_get(items, 0), &a);
    assert_inline(json_array_get(items, 1), &b, b50);
    assert_by_url(json_array_get(items, 2), &c);
    json_decref(items);

    items = event_json(f, EV_JOB, 39); /* none is small enough */
    assert_by_url(json_array_get(items, 0), &a);
    assert_by_url(json_array_get(items, 1), &b);
    assert_by_url(json_array_get(items, 2), &c);
    json_decref(items);
}

static void test_event_replaced_artifact_carries_the_newest_bytes(void **state)
{
    struct tu_store *f = *state;
    struct artifact first, second;
    upload(f, EV_JOB, "completion", "text/plain", "first", 5, &first);
    upload(f, EV_JOB, "completion", "application/json", "{\"v\": 2}", 8, &second);
    artifact_file_remove(f->dir, EV_JOB, first.file); /* as the PUT does after its commit */
    json_t *items = event_json(f, EV_JOB, 1024);
    assert_int_equal(json_array_size(items), 1);
    assert_inline(json_array_get(items, 0), &second, "{\"v\": 2}");
    json_decref(items);
}

/*
 * A store whose reader races a PUT: right after each of the next `left`
 * reads of the artifact list, a newer upload replaces RACE_NAME (a new file,
 * its row, then the old file removed, as api/artifacts.c does), so the list
 * just read names a file that is gone. Test-only state: the engine's
 * functions see nothing but the store.
 */
#define RACE_NAME "completion"
static struct {
    struct tu_store *f;
    struct store_engine engine; /* store_sqlite_engine with racing_artifact_list */
    int left, reads, version;
    struct artifact seen; /* RACE_NAME as the last read listed it */
    char bytes[32];       /* the newest upload's */
} race;

static int racing_artifact_list(struct store *st, const char *job_id, struct artifact_list *out)
{
    int rc = store_sqlite_engine.artifact_list(st, job_id, out);
    race.reads++;
    if (rc == 0 && race.left > 0) {
        race.left--;
        assert_int_equal(store_sqlite_engine.artifact_get(st, job_id, RACE_NAME, &race.seen), 0);
        snprintf(race.bytes, sizeof(race.bytes), "version %d", ++race.version);
        upload(race.f, job_id, RACE_NAME, "text/plain", race.bytes, strlen(race.bytes), NULL);
        artifact_file_remove(race.f->dir, job_id, race.seen.file);
    }
    return rc;
}

static void test_event_reads_the_list_again_once_when_a_file_was_replaced(void **state)
{
    struct tu_store *f = *state;
    upload(f, EV_JOB, RACE_NAME, "text/plain", "version 1", 9, NULL);
    race.f = f;
    race.version = 1;
    race.engine = store_sqlite_engine;
    race.engine.artifact_list = racing_artifact_list;
    f->store->engine = &race.engine;

    /* Replaced once: the second read has the newest bytes. */
    race.left = 1;
    race.reads = 0;
    json_t *items = event_json(f, EV_JOB, 1024);
    assert_int_equal(race.reads, 2);
    struct artifact now;
    assert_int_equal(store_artifact_get(f->store, EV_JOB, RACE_NAME, &now), 0);
    assert_inline(json_array_get(items, 0), &now, "version 2");
    json_decref(items);

    /* Replaced after each read: no third read; by url, as the second read had it
     * ("version 3"), while the url serves what is there now ("version 4"). */
    race.left = 2;
    race.reads = 0;
    items = event_json(f, EV_JOB, 1024);
    assert_int_equal(race.reads, 2);
    assert_int_not_equal(race.seen.created_at_ms, 0);
    assert_by_url(json_array_get(items, 0), &race.seen);
    json_decref(items);
    assert_string_equal(race.bytes, "version 4");
    f->store->engine = &store_sqlite_engine;
}

static void test_event_gone_file_goes_by_url_and_short_file_fails(void **state)
{
    struct tu_store *f = *state;
    struct artifact gone, kept;
    upload(f, EV_JOB, "gone", ARTIFACT_DEFAULT_TYPE, "bytes", 5, &gone);
    upload(f, EV_JOB, "kept", ARTIFACT_DEFAULT_TYPE, "kept", 4, &kept);
    /* Its file is gone on every read of the list: by url, which serves what is there. */
    artifact_file_remove(f->dir, EV_JOB, gone.file);
    json_t *items = event_json(f, EV_JOB, 1024);
    assert_int_equal(json_array_size(items), 2);
    assert_by_url(json_array_get(items, 0), &gone);
    assert_inline(json_array_get(items, 1), &kept, "kept");
    json_decref(items);

    /* A file shorter than its row says is an error, not a silent cut. */
    char path[512];
    assert_int_equal(artifact_path(f->dir, EV_JOB, kept.file, path, sizeof(path)), 0);
    assert_int_equal(truncate(path, 2), 0);
    json_t *out = (json_t *)1;
    assert_int_equal(artifacts_event_json(f->store, f->dir, EV_BASE, EV_JOB, 1024, &out), -DRV_EIO);
    assert_null(out);
    /* By url it needs no file. */
    items = event_json(f, EV_JOB, 0);
    assert_by_url(json_array_get(items, 1), &kept);
    json_decref(items);
}

static void test_event_without_artifacts_is_an_empty_array(void **state)
{
    struct tu_store *f = *state;
    upload(f, EV_JOB, "other-job", ARTIFACT_DEFAULT_TYPE, "x", 1, NULL);
    json_t *items = event_json(f, JOB, 1024);
    assert_int_equal(json_array_size(items), 0);
    json_decref(items);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_content_types),
        cmocka_unit_test(test_path_too_long),
        cmocka_unit_test(test_write_read_remove),
        cmocka_unit_test_setup_teardown(test_event_inline_up_to_the_threshold_then_by_url,
                                        event_setup, tu_store_teardown),
        cmocka_unit_test_setup_teardown(test_event_inline_max_0_sends_everything_by_url,
                                        event_setup, tu_store_teardown),
        cmocka_unit_test_setup_teardown(test_event_base64_round_trips_every_byte, event_setup,
                                        tu_store_teardown),
        cmocka_unit_test_setup_teardown(test_event_inline_bytes_share_one_budget, event_setup,
                                        tu_store_teardown),
        cmocka_unit_test_setup_teardown(test_event_replaced_artifact_carries_the_newest_bytes,
                                        event_setup, tu_store_teardown),
        cmocka_unit_test_setup_teardown(
            test_event_reads_the_list_again_once_when_a_file_was_replaced, event_setup,
            tu_store_teardown),
        cmocka_unit_test_setup_teardown(test_event_gone_file_goes_by_url_and_short_file_fails,
                                        event_setup, tu_store_teardown),
        cmocka_unit_test_setup_teardown(test_event_without_artifacts_is_an_empty_array, event_setup,
                                        tu_store_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
