/* check_f32file.c: the raw little-endian fp32 file format
 * (src/base/f32file.c). */
#include "base/f32file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

START_TEST(test_bytes_are_little_endian)
{
    char dir[256], path[300];
    mm_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/v.f32", dir);
    const float v[3] = {1.0f, -2.5f, 0.0f};
    struct mm_err err;
    ck_assert_int_eq(mm_f32_write_file(path, v, 3, &err), MM_OK);
    size_t len;
    unsigned char *b = (unsigned char *)mm_test_read_file(path, &len);
    ck_assert_uint_eq(len, 12);
    const unsigned char want[12] = {0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0, 0, 0, 0, 0};
    ck_assert_mem_eq(b, want, 12);
    free(b);
    float *r;
    ck_assert_int_eq(mm_f32_read_file(path, 3, &r, &err), MM_OK);
    ck_assert_mem_eq(r, v, sizeof v);
    free(r);
    mm_test_rmdir(dir);
}
END_TEST

START_TEST(test_size_checked_before_allocating)
{
    char dir[256], path[300];
    mm_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/v.f32", dir);
    mm_test_write_file(path, "abcdefgh", 8);
    struct mm_err err;
    float *r = (float *)1;
    /* a count far past any memory: refused by the size, not by malloc */
    ck_assert_int_eq(mm_f32_read_file(path, (size_t)1 << 40, &r, &err), MM_ERR_INVALID);
    ck_assert_ptr_null(r);
    ck_assert_ptr_nonnull(strstr(err.msg, "holds 8 bytes, expected 4398046511104"));
    ck_assert_int_eq(mm_f32_read_file(path, 3, &r, &err), MM_ERR_INVALID);
    ck_assert_int_eq(mm_f32_read_file(path, SIZE_MAX / 2, &r, &err), MM_ERR_INVALID);
    ck_assert_int_eq(mm_f32_read_file(path, 2, &r, &err), MM_OK);
    free(r);
    ck_assert_int_eq(mm_f32_read_file(dir, 2, &r, &err), MM_ERR_IO); /* a directory */
    snprintf(path, sizeof path, "%s/none", dir);
    ck_assert_int_eq(mm_f32_read_file(path, 2, &r, &err), MM_ERR_IO);
    ck_assert_int_eq(mm_f32_write_file(dir, (const float[]){1}, 1, &err), MM_ERR_IO);
    /* empty is fine */
    snprintf(path, sizeof path, "%s/empty", dir);
    ck_assert_int_eq(mm_f32_write_file(path, NULL, 0, &err), MM_OK);
    ck_assert_int_eq(mm_f32_read_file(path, 0, &r, &err), MM_OK);
    ck_assert_ptr_nonnull(r);
    free(r);
    mm_test_rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("base/f32file");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_bytes_are_little_endian);
    tcase_add_test(tc, test_size_checked_before_allocating);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
