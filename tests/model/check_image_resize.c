/* check_image_resize.c: model/image_resize.c: the SIMD path against the
 * plain Pillow loops on many shapes, identity and constant images. Equality
 * with Pillow itself is checked by check_image_conformance.sh. */
#include "model/image_resize.h"

#include <stdlib.h>
#include <string.h>

#include "testutil.h"

START_TEST(test_resize_fast_equals_plain)
{
    static const int64_t sz[][4] = {
        {4000, 30, 1792, 7}, {1, 1, 448, 448},       {37, 53, 896, 1344}, {1000, 333, 448, 448},
        {2, 700, 448, 448},  {640, 480, 1792, 1344}, {17, 3, 5, 2},       {300, 300, 300, 97},
        {301, 7, 96, 7},     {1, 2000, 448, 5376},
    };
    for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++) {
        struct mm_image src = mm_test_image(sz[i][0], sz[i][1], (uint32_t)i + 1);
        struct mm_image a, b;
        struct mm_err err;
        ck_assert_int_eq(mm_image_resize_with(&src, sz[i][2], sz[i][3], MM_RESIZE_PLAIN, &b, &err),
                         MM_OK);
        ck_assert_int_eq(b.width, sz[i][2]);
        ck_assert_int_eq(b.height, sz[i][3]);
        const enum mm_resize_kernel fast[3] = {MM_RESIZE_BEST, MM_RESIZE_SSE2, MM_RESIZE_AVX2};
        for (int k = 0; k < 3; k++) {
            const enum mm_status st =
                mm_image_resize_with(&src, sz[i][2], sz[i][3], fast[k], &a, &err);
            if (st == MM_ERR_UNSUPPORTED)
                continue; /* not on this CPU or build */
            ck_assert_int_eq(st, MM_OK);
            ck_assert_msg(memcmp(a.rgb, b.rgb, (size_t)(b.width * b.height * 3)) == 0,
                          "case %zu differs with kernel %d", i, (int)fast[k]);
            mm_image_free(&a);
        }
        mm_image_free(&b);
        mm_image_free(&src);
    }
}
END_TEST

START_TEST(test_resize_identity_and_constant)
{
    struct mm_image src = mm_test_image(31, 17, 7), out;
    struct mm_err err;
    ck_assert_int_eq(mm_image_resize(&src, 31, 17, &out, &err), MM_OK);
    ck_assert(memcmp(src.rgb, out.rgb, 31 * 17 * 3) == 0);
    mm_image_free(&out);
    /* a constant image stays constant at any scale (weights sum to one) */
    memset(src.rgb, 93, 31 * 17 * 3);
    ck_assert_int_eq(mm_image_resize(&src, 5, 300, &out, &err), MM_OK);
    for (int i = 0; i < 5 * 300 * 3; i++)
        ck_assert_uint_eq(out.rgb[i], 93);
    mm_image_free(&out);
    ck_assert_int_eq(mm_image_resize(&src, 0, 3, &out, &err), MM_ERR_INVALID);
    mm_image_free(&src);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model/image_resize");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_resize_fast_equals_plain);
    tcase_add_test(tc, test_resize_identity_and_constant);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
