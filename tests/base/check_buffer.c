/* check_buffer.c: mm_buffer_reserve grows by doubling, keeps contents, and
 * refuses sizes that would overflow without touching the buffer. */
#include "base/buffer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "testutil.h"

START_TEST(test_reserve)
{
    char *b = NULL;
    size_t cap = 0;
    ck_assert(mm_buffer_reserve(&b, &cap, 10, 256));
    ck_assert_uint_eq(cap, 256);
    memcpy(b, "abc", 3);
    ck_assert(mm_buffer_reserve(&b, &cap, 200, 256)); /* fits: unchanged */
    ck_assert_uint_eq(cap, 256);
    ck_assert(mm_buffer_reserve(&b, &cap, 257, 256));
    ck_assert_uint_eq(cap, 512);
    ck_assert(mm_buffer_reserve(&b, &cap, 3000, 256));
    ck_assert_uint_eq(cap, 4096);
    ck_assert_mem_eq(b, "abc", 3);
    char *const before = b;
    ck_assert(!mm_buffer_reserve(&b, &cap, SIZE_MAX, 256));
    ck_assert_ptr_eq(b, before);
    ck_assert_uint_eq(cap, 4096);
    free(b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("base/buffer");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_reserve);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
