/* check_log.c: level parsing and the skip-below-threshold rule of src/base/log.c. */
#include "base/log.h"

#include "testutil.h"

static int evaluated;

static int side_effect(void) { return ++evaluated; }

START_TEST(test_levels)
{
    ck_assert_int_eq(mm_log_parse_level("debug"), MM_LOG_DEBUG);
    ck_assert_int_eq(mm_log_parse_level("error"), MM_LOG_ERROR);
    ck_assert_int_eq(mm_log_parse_level("off"), MM_LOG_OFF);
    ck_assert_int_eq(mm_log_parse_level("loud"), -1);
    mm_log_set_level(MM_LOG_WARN);
    evaluated = 0;
    MM_DEBUG("never formatted %d", side_effect()); /* arguments not evaluated */
    MM_INFO("never formatted %d", side_effect());
    ck_assert_int_eq(evaluated, 0);
    mm_log_set_level(MM_LOG_OFF);
    MM_ERROR("off %d", side_effect());
    ck_assert_int_eq(evaluated, 0);
    mm_log_set_level(MM_LOG_ERROR);
    MM_ERROR("check_log: an expected test line %d", side_effect());
    ck_assert_int_eq(evaluated, 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("base/log");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_levels);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
