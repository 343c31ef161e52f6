/* check_status.c: status names and the error record (src/base/status.c). */
#include "base/status.h"

#include <string.h>

#include "testutil.h"

START_TEST(test_set_and_prefix)
{
    struct mm_err err;
    ck_assert_int_eq(mm_err_set(&err, MM_ERR_IO, "inner %d", 1), MM_ERR_IO);
    ck_assert_int_eq(err.status, MM_ERR_IO);
    ck_assert_int_eq(mm_err_prefix(&err, "outer"), MM_ERR_IO);
    ck_assert_str_eq(err.msg, "outer: inner 1");
    ck_assert_int_eq(mm_err_set(NULL, MM_ERR_FORMAT, "ignored"), MM_ERR_FORMAT);
}
END_TEST

START_TEST(test_truncation)
{
    struct mm_err err;
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    mm_err_set(&err, MM_ERR_INVALID, "%s", big);
    ck_assert_uint_eq(strlen(err.msg), MM_ERR_MSG_MAX - 1);
    mm_err_prefix(&err, "%s", big);
    ck_assert_uint_eq(strlen(err.msg), MM_ERR_MSG_MAX - 1);
}
END_TEST

START_TEST(test_names)
{
    for (int s = MM_OK; s <= MM_ERR_UNAVAILABLE; s++)
        ck_assert_ptr_nonnull(mm_status_str((enum mm_status)s));
    ck_assert_str_eq(mm_status_str(MM_ERR_NOMEM), "out of memory");
    ck_assert_str_eq(mm_status_str(MM_OK), "ok");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("base/status");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_set_and_prefix);
    tcase_add_test(tc, test_truncation);
    tcase_add_test(tc, test_names);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
