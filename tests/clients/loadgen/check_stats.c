/* check_stats.c: clients/loadgen/stats.c against values numpy gives
 * (np.mean, np.median, np.std, np.percentile with linear interpolation). */
#include "loadgen/stats.h"

#include <math.h>

#include "testutil.h"

START_TEST(test_numpy_values)
{
    /* np.percentile([15, 20, 35, 40, 50], [40, 90, 99]) = [29, 46, 49.6] */
    const double x[] = {50, 15, 40, 20, 35}; /* unsorted on purpose */
    const double ps[] = {40, 90, 99, 0, 100};
    struct mm_stats_summary s;
    struct mm_err err;
    ck_assert_int_eq(mm_stats_summarize(x, 5, ps, 5, &s, &err), MM_OK);
    ck_assert_double_eq_tol(s.mean, 32.0, 1e-12);
    ck_assert_double_eq_tol(s.median, 35.0, 1e-12);
    ck_assert_double_eq_tol(s.std, sqrt(166.0), 1e-12); /* population std */
    ck_assert_double_eq_tol(s.value[0], 29.0, 1e-12);
    ck_assert_double_eq_tol(s.value[1], 46.0, 1e-12);
    ck_assert_double_eq_tol(s.value[2], 49.6, 1e-12);
    ck_assert_double_eq_tol(s.value[3], 15.0, 1e-12);
    ck_assert_double_eq_tol(s.value[4], 50.0, 1e-12);
    ck_assert_double_eq(s.min, 15.0);
    ck_assert_double_eq(s.max, 50.0);
    /* An even count: the median interpolates. [1,2,3,4]: 2.5, p90 3.7, std sqrt(1.25) */
    const double y[] = {4, 1, 3, 2};
    const double p90 = 90;
    ck_assert_int_eq(mm_stats_summarize(y, 4, &p90, 1, &s, &err), MM_OK);
    ck_assert_double_eq_tol(s.median, 2.5, 1e-12);
    ck_assert_double_eq_tol(s.value[0], 3.7, 1e-12);
    ck_assert_double_eq_tol(s.std, sqrt(1.25), 1e-12);
}
END_TEST

START_TEST(test_empty_and_single)
{
    const double p = 99;
    struct mm_stats_summary s;
    struct mm_err err;
    ck_assert_int_eq(mm_stats_summarize(NULL, 0, &p, 1, &s, &err), MM_OK);
    ck_assert_double_eq(s.mean, 0);
    ck_assert_double_eq(s.value[0], 0);
    const double one = 7.5;
    ck_assert_int_eq(mm_stats_summarize(&one, 1, &p, 1, &s, &err), MM_OK);
    ck_assert_double_eq(s.mean, 7.5);
    ck_assert_double_eq(s.median, 7.5);
    ck_assert_double_eq(s.std, 0);
    ck_assert_double_eq(s.value[0], 7.5);
}
END_TEST

START_TEST(test_too_many_percentiles)
{
    double ps[MM_STATS_MAX_PERCENTILES + 1] = {0};
    struct mm_stats_summary s;
    struct mm_err err;
    ck_assert_int_eq(mm_stats_summarize(ps, 1, ps, MM_STATS_MAX_PERCENTILES + 1, &s, &err),
                     MM_ERR_INVALID);
}
END_TEST

START_TEST(test_dvec)
{
    struct mm_dvec a = {0}, b = {0};
    for (int i = 0; i < 1000; i++)
        ck_assert_int_eq(mm_dvec_push(&a, i), MM_OK);
    ck_assert_int_eq(mm_dvec_push(&b, -1), MM_OK);
    ck_assert_int_eq(mm_dvec_extend(&b, &a), MM_OK);
    ck_assert_uint_eq(b.n, 1001);
    ck_assert_double_eq(b.v[0], -1);
    ck_assert_double_eq(b.v[1000], 999);
    mm_dvec_free(&a);
    mm_dvec_free(&b);
    ck_assert_uint_eq(a.n, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("clients/loadgen/stats");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_numpy_values);
    tcase_add_test(tc, test_empty_and_single);
    tcase_add_test(tc, test_too_many_percentiles);
    tcase_add_test(tc, test_dvec);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
