/* check_image_source.c: data: URLs, the file:// allow-list (symlink escapes,
 * ../, prefix tricks) and refused remote URLs of model/image_source.c. */
#include "model/image_source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static enum mm_status load(const char *url, const struct mm_image_source_policy *pol,
                           struct mm_image_bytes *b, struct mm_err *err)
{
    memset(err, 0, sizeof *err);
    return mm_image_source_load(url, pol, b, err);
}

START_TEST(test_data_url)
{
    struct mm_image_bytes b;
    struct mm_err err;
    ck_assert_int_eq(load("data:image/png;base64,iVBORw0KGgo=", NULL, &b, &err), MM_OK);
    ck_assert_int_eq(b.kind, MM_IMAGE_SOURCE_DATA);
    ck_assert_uint_eq(b.len, 8);
    ck_assert(memcmp(b.data, "\x89PNG\r\n\x1a\n", 8) == 0);
    ck_assert_str_eq(b.media_type, "image/png");
    mm_image_bytes_free(&b);
    /* scheme, type and the base64 flag are case-insensitive; parameters allowed */
    ck_assert_int_eq(load("DATA:Image/JPEG;name=x.jpg;BASE64,/9j/", NULL, &b, &err), MM_OK);
    ck_assert_str_eq(b.media_type, "image/jpeg");
    ck_assert_uint_eq(b.len, 3);
    mm_image_bytes_free(&b);
    mm_image_bytes_free(&b);
}
END_TEST

START_TEST(test_data_url_errors)
{
    struct mm_image_bytes b;
    struct mm_err err;
    ck_assert_int_eq(load("data:text/plain;base64,aGk=", NULL, &b, &err), MM_ERR_UNSUPPORTED);
    ck_assert(strstr(err.msg, "image/") != NULL);
    ck_assert_int_eq(load("data:image/png,rawbytes", NULL, &b, &err), MM_ERR_UNSUPPORTED);
    ck_assert(strstr(err.msg, "base64") != NULL);
    ck_assert_int_eq(load("data:image/png;base64", NULL, &b, &err), MM_ERR_INVALID);
    ck_assert_int_eq(load("data:;base64,aGk=", NULL, &b, &err), MM_ERR_UNSUPPORTED);
    ck_assert_int_eq(load("data:image/png;base64,a$Gk=", NULL, &b, &err), MM_ERR_FORMAT);
    ck_assert(strstr(err.msg, "data URL") != NULL);
    ck_assert_ptr_null(b.data);
    ck_assert_int_eq(load("data:image/png;base64,", NULL, &b, &err), MM_ERR_FORMAT);
    const struct mm_image_source_policy small = {.max_bytes = 5};
    ck_assert_int_eq(load("data:image/png;base64,iVBORw0KGgo=", &small, &b, &err), MM_ERR_LIMIT);
    ck_assert_ptr_null(b.data);
}
END_TEST

START_TEST(test_remote_and_unknown_refused)
{
    struct mm_image_bytes b;
    struct mm_err err;
    ck_assert_int_eq(load("https://example.com/cat.png", NULL, &b, &err), MM_ERR_UNSUPPORTED);
    ck_assert(strstr(err.msg, "remote") != NULL);
    ck_assert_int_eq(load("HTTP://example.com/cat.png", NULL, &b, &err), MM_ERR_UNSUPPORTED);
    ck_assert_int_eq(load("ftp://example.com/cat.png", NULL, &b, &err), MM_ERR_UNSUPPORTED);
    ck_assert_int_eq(load("/etc/passwd", NULL, &b, &err), MM_ERR_UNSUPPORTED);
    ck_assert_int_eq(load("", NULL, &b, &err), MM_ERR_INVALID);
}
END_TEST

START_TEST(test_file_allow_list)
{
    char dir[512], root[600], outside[600], path[1200], url[1400];
    mm_test_tmpdir(dir, sizeof dir);
    snprintf(root, sizeof root, "%s/images", dir);
    snprintf(outside, sizeof outside, "%s/images-private", dir); /* shares the prefix */
    ck_assert_int_eq(mkdir(root, 0700), 0);
    ck_assert_int_eq(mkdir(outside, 0700), 0);
    snprintf(path, sizeof path, "%s/a b.png", root);
    mm_test_write_file(path, "inside", 6);
    snprintf(path, sizeof path, "%s/secret.png", outside);
    mm_test_write_file(path, "secret", 6);
    snprintf(path, sizeof path, "%s/escape.png", root); /* symlink out of the root */
    char target[1200];
    snprintf(target, sizeof target, "%s/secret.png", outside);
    ck_assert_int_eq(symlink(target, path), 0);
    snprintf(path, sizeof path, "%s/alias.png", root); /* symlink within the root */
    ck_assert_int_eq(symlink("a b.png", path), 0);
    snprintf(path, sizeof path, "%s/sub", root);
    ck_assert_int_eq(mkdir(path, 0700), 0);

    const struct mm_image_source_policy pol = {.file_root = root};
    struct mm_image_bytes b;
    struct mm_err err;

    snprintf(url, sizeof url, "file://%s/a%%20b.png", root);
    ck_assert_int_eq(load(url, NULL, &b, &err), MM_ERR_UNSUPPORTED); /* not enabled */
    ck_assert(strstr(err.msg, "not enabled") != NULL);
    ck_assert_msg(load(url, &pol, &b, &err) == MM_OK, "%s", err.msg);
    ck_assert_int_eq(b.kind, MM_IMAGE_SOURCE_FILE);
    ck_assert_uint_eq(b.len, 6);
    ck_assert(memcmp(b.data, "inside", 6) == 0);
    mm_image_bytes_free(&b);

    snprintf(url, sizeof url, "file://localhost%s/alias.png", root);
    ck_assert_msg(load(url, &pol, &b, &err) == MM_OK, "%s", err.msg);
    mm_image_bytes_free(&b);

    const char *refused[] = {"%s/escape.png", "%s/../images-private/secret.png",
                             "%s-private/secret.png", "%s/sub/../../images-private/secret.png"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char p[1300];
        snprintf(p, sizeof p, refused[i], root);
        snprintf(url, sizeof url, "file://%s", p);
        ck_assert_int_eq(load(url, &pol, &b, &err), MM_ERR_INVALID);
        ck_assert_msg(strstr(err.msg, "outside") != NULL, "%s", err.msg);
        ck_assert_ptr_null(b.data);
    }
    snprintf(url, sizeof url, "file://%s/missing.png", root);
    ck_assert_int_eq(load(url, &pol, &b, &err), MM_ERR_NOT_FOUND);
    snprintf(url, sizeof url, "file://%s/sub", root);
    ck_assert_int_eq(load(url, &pol, &b, &err), MM_ERR_INVALID); /* a directory */
    ck_assert_int_eq(load("file://example.com/x.png", &pol, &b, &err), MM_ERR_INVALID);
    ck_assert_int_eq(load("file://relative.png", &pol, &b, &err), MM_ERR_INVALID);
    snprintf(url, sizeof url, "file://%s/a%%00b.png", root);
    ck_assert_int_eq(load(url, &pol, &b, &err), MM_ERR_INVALID);
    snprintf(url, sizeof url, "file://%s/a%%2", root);
    ck_assert_int_eq(load(url, &pol, &b, &err), MM_ERR_INVALID);
    const struct mm_image_source_policy tiny = {.file_root = root, .max_bytes = 5};
    snprintf(url, sizeof url, "file://%s/a%%20b.png", root);
    ck_assert_int_eq(load(url, &tiny, &b, &err), MM_ERR_LIMIT);
    mm_test_rmdir(dir);
}
END_TEST

START_TEST(test_read_file)
{
    char dir[512], path[600];
    mm_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/x.bin", dir);
    mm_test_write_file(path, "0123456789", 10);
    struct mm_image_bytes b;
    struct mm_err err;
    ck_assert_int_eq(mm_image_source_read_file(path, 0, &b, &err), MM_OK);
    ck_assert_uint_eq(b.len, 10);
    mm_image_bytes_free(&b);
    ck_assert_int_eq(mm_image_source_read_file(path, 9, &b, &err), MM_ERR_LIMIT);
    snprintf(path, sizeof path, "%s/empty.bin", dir);
    mm_test_write_file(path, "", 0);
    ck_assert_int_eq(mm_image_source_read_file(path, 0, &b, &err), MM_ERR_FORMAT);
    ck_assert_int_eq(mm_image_source_read_file(dir, 0, &b, &err), MM_ERR_INVALID);
    snprintf(path, sizeof path, "%s/none", dir);
    ck_assert_int_eq(mm_image_source_read_file(path, 0, &b, &err), MM_ERR_NOT_FOUND);
    mm_test_rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model/image_source");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_data_url);
    tcase_add_test(tc, test_data_url_errors);
    tcase_add_test(tc, test_remote_and_unknown_refused);
    tcase_add_test(tc, test_file_allow_list);
    tcase_add_test(tc, test_read_file);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
