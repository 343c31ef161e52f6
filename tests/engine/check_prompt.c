/* check_prompt.c: the prompt rules shared by the CLI and the scheduler
 * (src/engine/prompt.c): image runs against tiles, chunking at tile
 * boundaries. */
#include "engine/prompt.h"

#include <string.h>

#include "testutil.h"

#define IMG 9
#define TPT 4

static struct mm_config cfg(void)
{
    return (struct mm_config){.img_context_token_id = IMG, .tokens_per_tile = TPT};
}

/* 1 2 [IMG x 8] 3 [IMG x 4] 5: two tiles, then one */
static const int32_t ids[] = {1,   2,   IMG, IMG, IMG, IMG, IMG, IMG,
                              IMG, IMG, 3,   IMG, IMG, IMG, IMG, 5};
#define N ((int64_t)(sizeof ids / sizeof ids[0]))

START_TEST(test_check_tiles)
{
    const struct mm_config c = cfg();
    struct mm_err err;
    ck_assert_int_eq(mm_prompt_image_tokens(&c, ids, N), 12);
    ck_assert_int_eq(mm_prompt_check_tiles(&c, ids, N, 3, &err), MM_OK);
    ck_assert_int_eq(mm_prompt_check_tiles(&c, ids, N, 2, &err), MM_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "12 image-context tokens but 2 tiles"));
    ck_assert_int_eq(mm_prompt_check_tiles(&c, ids, N, 4, &err), MM_ERR_INVALID);
    ck_assert_int_eq(mm_prompt_check_tiles(&c, ids, N, -1, &err), MM_ERR_INVALID);
    ck_assert_int_eq(mm_prompt_check_tiles(&c, ids, 2, 0, &err), MM_OK);
    /* runs of 6 and 2 add up to two tiles but split one: refused */
    const int32_t split[] = {1, IMG, IMG, IMG, IMG, IMG, IMG, 2, IMG, IMG};
    ck_assert_int_eq(mm_prompt_check_tiles(&c, split, 10, 2, &err), MM_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "position 1 has 6 tokens"));
    /* a stray image token */
    const int32_t stray[] = {1, IMG, 2};
    ck_assert_int_eq(mm_prompt_check_tiles(&c, stray, 3, 0, &err), MM_ERR_INVALID);
}
END_TEST

START_TEST(test_chunks)
{
    const struct mm_config c = cfg();
    /* whole prompt */
    struct mm_prompt_chunk k = mm_prompt_next_chunk(&c, ids, N, 0, 0);
    ck_assert_int_eq(k.begin, 0);
    ck_assert_int_eq(k.end, N);
    ck_assert_int_eq(k.n_tiles, 3);
    /* a cut before a run stays; a cut inside a tile grows to its end */
    k = mm_prompt_next_chunk(&c, ids, N, 0, 2);
    ck_assert_int_eq(k.end, 2);
    ck_assert_int_eq(k.n_tiles, 0);
    k = mm_prompt_next_chunk(&c, ids, N, 0, 3);
    ck_assert_int_eq(k.end, 6);
    ck_assert_int_eq(k.n_tiles, 1);
    k = mm_prompt_next_chunk(&c, ids, N, 0, 6); /* at a tile boundary inside the run */
    ck_assert_int_eq(k.end, 6);
    k = mm_prompt_next_chunk(&c, ids, N, 6, 1);
    ck_assert_int_eq(k.end, 10);
    ck_assert_int_eq(k.n_tiles, 1);
    /* the last chunk ends at n even when max_ids reaches past it */
    k = mm_prompt_next_chunk(&c, ids, N, 12, 100);
    ck_assert_int_eq(k.end, N);
    ck_assert_int_eq(k.n_tiles, 0); /* 3 image ids of a tile begun earlier: not a whole one */
    /* walking the prompt in chunks of every size covers it exactly, with
     * every tile in exactly one chunk */
    for (int64_t m = 1; m <= N + 1; m++) {
        int64_t tiles = 0, at = 0;
        while (at < N) {
            k = mm_prompt_next_chunk(&c, ids, N, at, m);
            ck_assert_int_eq(k.begin, at);
            ck_assert_int_gt(k.end, at);
            ck_assert_int_le(k.end - k.begin, m + TPT - 1);
            ck_assert_int_eq(mm_prompt_image_tokens(&c, ids + k.begin, k.end - k.begin),
                             k.n_tiles * TPT);
            tiles += k.n_tiles;
            at = k.end;
        }
        ck_assert_int_eq(at, N);
        ck_assert_int_eq(tiles, 3);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine/prompt");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_check_tiles);
    tcase_add_test(tc, test_chunks);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
