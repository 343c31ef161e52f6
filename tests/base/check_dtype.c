/* check_dtype.c: dtype table and bf16/f16 conversions of base/dtype.c. */
#include "base/dtype.h"

#include <math.h>
#include <string.h>

#include "testutil.h"

START_TEST(test_table)
{
    ck_assert_int_eq(mm_dtype_parse("BF16"), MM_DTYPE_BF16);
    ck_assert_int_eq(mm_dtype_parse("F32"), MM_DTYPE_F32);
    ck_assert_int_eq(mm_dtype_parse("bf16"), -1);
    ck_assert_int_eq(mm_dtype_parse(""), -1);
    ck_assert_uint_eq(mm_dtype_size(MM_DTYPE_BF16), 2);
    ck_assert_uint_eq(mm_dtype_size(MM_DTYPE_I64), 8);
    ck_assert_str_eq(mm_dtype_name(MM_DTYPE_F16), "F16");
    ck_assert(mm_dtype_is_float(MM_DTYPE_F16));
    ck_assert(!mm_dtype_is_float(MM_DTYPE_I32));
}
END_TEST

START_TEST(test_bf16_round_trip)
{
    /* exact values survive; rounding is to nearest even */
    const float exact[] = {0.0f, 1.0f, -2.5f, 0.15625f, 65536.0f, -1e-30f * 0};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        ck_assert(mm_bf16_to_f32(mm_f32_to_bf16(exact[i])) == exact[i]);
    ck_assert_uint_eq(mm_f32_to_bf16(1.0f), 0x3f80);
    /* 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties to even (1.0) */
    ck_assert_uint_eq(mm_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
    /* 1 + 3*2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6 (even) */
    ck_assert_uint_eq(mm_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
    ck_assert(isnan(mm_bf16_to_f32(mm_f32_to_bf16(NAN))));
    ck_assert(isinf(mm_bf16_to_f32(mm_f32_to_bf16(INFINITY))));
}
END_TEST

START_TEST(test_f16)
{
    ck_assert(mm_f16_to_f32(0x3c00) == 1.0f);
    ck_assert(mm_f16_to_f32(0xc000) == -2.0f);
    ck_assert(mm_f16_to_f32(0x0001) == 0x1p-24f); /* smallest subnormal */
    ck_assert(mm_f16_to_f32(0x7bff) == 65504.0f);
    ck_assert(isinf(mm_f16_to_f32(0x7c00)));
    ck_assert(isnan(mm_f16_to_f32(0x7e00)));
    ck_assert(signbit(mm_f16_to_f32(0x8000)));
}
END_TEST

START_TEST(test_to_f32_unaligned)
{
    unsigned char buf[7];
    const uint16_t a = mm_f32_to_bf16(3.0f), b = mm_f32_to_bf16(-0.5f);
    memcpy(buf + 1, &a, 2);
    memcpy(buf + 3, &b, 2);
    float out[2];
    mm_dtype_to_f32(MM_DTYPE_BF16, buf + 1, out, 2);
    ck_assert(out[0] == 3.0f && out[1] == -0.5f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("base/dtype");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_table);
    tcase_add_test(tc, test_bf16_round_trip);
    tcase_add_test(tc, test_f16);
    tcase_add_test(tc, test_to_f32_unaligned);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
