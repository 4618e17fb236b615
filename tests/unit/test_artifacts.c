/*
 * test_artifacts.c - artifact names, content types and files
 * (src/artifacts.h): names that are safe as file names, the durable write
 * with its SHA-256, reading back, and removing a job's directory.
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

#include "artifacts.h"
#include "test_util.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_content_types),
        cmocka_unit_test(test_path_too_long),
        cmocka_unit_test(test_write_read_remove),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
