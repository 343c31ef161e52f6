/* check_kv_pool.c: block accounting of the paged KV cache (src/engine/kv_pool.c). */
#include "engine/kv_pool.h"

#include <string.h>

#include "engine/backend.h"
#include "testutil.h"

START_TEST(test_reserve_release)
{
    struct mm_kv_pool *p;
    struct mm_err err;
    ck_assert_int_eq(mm_kv_pool_create(10, 3, 2, 4, &p, &err), MM_OK);
    ck_assert_int_eq(mm_kv_blocks_for(0), 0);
    ck_assert_int_eq(mm_kv_blocks_for(1), 1);
    ck_assert_int_eq(mm_kv_blocks_for(MM_KV_BLOCK), 1);
    ck_assert_int_eq(mm_kv_blocks_for(MM_KV_BLOCK + 1), 2);
    ck_assert_int_eq(mm_kv_pool_reserve(p, 0, 0, 3 * MM_KV_BLOCK, &err), MM_OK);
    ck_assert_int_eq(mm_kv_pool_free_blocks(p), 7);
    ck_assert_int_eq(mm_kv_pool_reserve(p, 0, 0, 2, &err), MM_OK); /* already covered */
    ck_assert_int_eq(mm_kv_pool_free_blocks(p), 7);
    ck_assert_int_eq(mm_kv_pool_reserve(p, 1, 1, 4 * MM_KV_BLOCK, &err), MM_OK);
    /* per-table bound */
    ck_assert_int_eq(mm_kv_pool_reserve(p, 2, 0, 4 * MM_KV_BLOCK + 1, &err), MM_ERR_LIMIT);
    /* pool exhausted: 3 free, 4 wanted; nothing changes */
    ck_assert_int_eq(mm_kv_pool_reserve(p, 2, 0, 4 * MM_KV_BLOCK, &err), MM_ERR_LIMIT);
    ck_assert_ptr_nonnull(strstr(err.msg, "KV cache full"));
    ck_assert_int_eq(mm_kv_pool_free_blocks(p), 3);
    /* tables hold distinct blocks */
    const int32_t *a = mm_kv_pool_table(p, 0, 0), *b = mm_kv_pool_table(p, 1, 1);
    int seen[10] = {0};
    for (int i = 0; i < 3; i++)
        seen[a[i]]++;
    for (int i = 0; i < 4; i++)
        seen[b[i]]++;
    for (int i = 0; i < 10; i++)
        ck_assert_int_le(seen[i], 1);
    /* truncate gives back only the blocks beyond what n tokens need */
    mm_kv_pool_truncate(p, 1, 1, MM_KV_BLOCK + 1);
    ck_assert_int_eq(mm_kv_pool_free_blocks(p), 5);
    mm_kv_pool_truncate(p, 1, 1, 5 * MM_KV_BLOCK);
    ck_assert_int_eq(mm_kv_pool_free_blocks(p), 5);
    mm_kv_pool_release(p, 1);
    ck_assert_int_eq(mm_kv_pool_free_blocks(p), 7);
    ck_assert_int_eq(mm_kv_pool_reserve(p, 2, 0, 4 * MM_KV_BLOCK, &err), MM_OK);
    mm_kv_pool_release(p, 0);
    mm_kv_pool_release(p, 2);
    ck_assert_int_eq(mm_kv_pool_free_blocks(p), 10);
    mm_kv_pool_free(p);
    ck_assert_int_eq(mm_kv_pool_create(-1, 3, 2, 4, &p, &err), MM_ERR_INVALID);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine/kv_pool");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_reserve_release);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
