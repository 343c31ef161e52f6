/* check_checked.c: overflow detection of base/checked.c. */
#include "base/checked.h"

#include "testutil.h"

START_TEST(test_size_mul)
{
    size_t r = 7;
    ck_assert(mm_size_mul(3, 5, &r));
    ck_assert_uint_eq(r, 15);
    ck_assert(!mm_size_mul(SIZE_MAX / 2 + 1, 2, &r));
    ck_assert_uint_eq(r, 15); /* untouched on overflow */
    ck_assert(mm_size_mul(0, SIZE_MAX, &r));
    ck_assert_uint_eq(r, 0);
}
END_TEST

START_TEST(test_size_add)
{
    size_t r;
    ck_assert(mm_size_add(SIZE_MAX - 1, 1, &r));
    ck_assert_uint_eq(r, SIZE_MAX);
    ck_assert(!mm_size_add(SIZE_MAX, 1, &r));
}
END_TEST

START_TEST(test_i64)
{
    int64_t r;
    ck_assert(mm_i64_mul(-4, 5, &r));
    ck_assert_int_eq(r, -20);
    ck_assert(!mm_i64_mul(INT64_MAX, 2, &r));
    ck_assert(!mm_i64_add(INT64_MAX, 1, &r));
    ck_assert(mm_i64_add(INT64_MIN, INT64_MAX, &r));
    ck_assert_int_eq(r, -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("base/checked");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_size_mul);
    tcase_add_test(tc, test_size_add);
    tcase_add_test(tc, test_i64);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
