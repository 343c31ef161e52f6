/* check_forward.c: the forward pass on the CPU backend (src/engine/forward.c)
 * against itself: prefill then decode == feeding the tokens one by one
 * (logits and states), several sequences in one step == each alone, prompt
 * chunks split at KV-block and tile boundaries == one prefill, and bad input
 * rejected without touching state. */
#include "engine/engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/synthetic.h"
#include "testutil.h"

static char dirs[3][256];
static const char *const presets[3] = {"tiny-linear", "tiny-hybrid", "tiny-teacher"};

static void setup(void)
{
    for (int p = 0; p < 3; p++)
        mm_test_synthetic_model(dirs[p], sizeof dirs[p], presets[p], 11);
}

static void teardown(void)
{
    for (int p = 0; p < 3; p++)
        mm_test_rmdir(dirs[p]);
}

static struct mm_engine *open_engine(int p, int32_t seqs)
{
    struct mm_engine_options o;
    mm_engine_options_default(&o);
    o.n_threads = 2;
    o.max_seqs = seqs;
    o.max_tokens = 1200;
    o.max_tiles = 2;
    o.max_context = 2048;
    struct mm_engine *e;
    struct mm_err err;
    ck_assert_msg(mm_engine_open(dirs[p], &o, &e, &err) == MM_OK, "%s", err.msg);
    return e;
}

/* A prompt of n ids: BOS, text, optionally one image of `tiles` tiles, text. */
static int32_t *make_prompt(const struct mm_config *cfg, int64_t n_text, int64_t tiles, int64_t *n,
                            uint32_t seed)
{
    const int64_t img = tiles * cfg->tokens_per_tile;
    *n = n_text + (img ? img + 2 : 0);
    int32_t *ids = malloc((size_t)*n * sizeof *ids);
    int64_t k = 0;
    uint32_t x = seed;
    for (int64_t i = 0; i < n_text; i++) {
        x = x * 1664525u + 1013904223u;
        ids[k++] = i == 0 ? 1 : (int32_t)(3 + (x >> 8) % 1000);
        if (i == n_text / 2 && img) {
            ids[k++] = (int32_t)cfg->llm_vocab_size; /* <img> */
            for (int64_t j = 0; j < img; j++)
                ids[k++] = (int32_t)cfg->img_context_token_id;
            ids[k++] = (int32_t)cfg->llm_vocab_size + 1; /* </img> */
        }
    }
    return ids;
}

static float *make_tiles(const struct mm_config *cfg, int64_t tiles)
{
    const size_t n = (size_t)tiles * 3 * (size_t)(cfg->force_image_size * cfg->force_image_size);
    float *t = malloc((n ? n : 1) * sizeof *t);
    for (size_t i = 0; i < n; i++)
        t[i] = (float)(sin(0.37 * (double)i) * cos(0.011 * (double)i) * 2.0);
    return t;
}

static double max_rel_diff(const float *a, const float *b, int64_t n)
{
    double mx = 0, scale = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - b[i]);
        mx = d > mx ? d : mx;
        scale = fabs(a[i]) > scale ? fabs(a[i]) : scale;
    }
    return mx / scale;
}

static int64_t state_elems(const struct mm_engine *e) { return mm_config_state_elems(&e->cfg) + 1; }

/* Prefill in chunks (each ≤ chunk ids, tiles whole), returning final logits. */
static void prefill_chunked(struct mm_engine *e, int32_t slot, const int32_t *ids, int64_t n,
                            const float *tiles, int64_t chunk, float *logits)
{
    const int64_t tpt = e->cfg.tokens_per_tile;
    const size_t tile_floats = 3 * (size_t)(e->cfg.force_image_size * e->cfg.force_image_size);
    int64_t used = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i + chunk < n ? i + chunk : n;
        /* never end inside a tile run */
        while (j < n && j > i && ids[j] == e->cfg.img_context_token_id &&
               ids[j - 1] == e->cfg.img_context_token_id)
            j++;
        int64_t img = 0;
        for (int64_t k = i; k < j; k++)
            img += ids[k] == e->cfg.img_context_token_id;
        struct mm_seq_step st = {
            slot,      ids + i, j - i, tiles ? tiles + used * tile_floats : NULL,
            img / tpt, j == n,  false};
        struct mm_err err;
        ck_assert_msg(mm_engine_forward(e, &st, 1, logits, &err) == MM_OK, "%s", err.msg);
        used += img / tpt;
        i = j;
    }
}

/* Prefill == token-by-token stepping == any chunking, for logits and state. */
START_TEST(test_prefill_equals_stepping)
{
    const int p = _i;
    struct mm_engine *e = open_engine(p, 2);
    const int64_t V = e->cfg.vocab_size;
    int64_t n;
    int32_t *ids = make_prompt(&e->cfg, 40, 0, &n, 7);
    float *a = malloc((size_t)V * sizeof *a), *b = malloc((size_t)V * sizeof *b);
    float *sa = malloc((size_t)state_elems(e) * sizeof *sa),
          *sb = malloc((size_t)state_elems(e) * sizeof *sb);
    const int64_t chunks[] = {1, 15, 16, 17, 33, 40};
    int32_t s0, s1;
    struct mm_err err;
    ck_assert_int_eq(mm_engine_slot_acquire(e, &s0, &err), MM_OK);
    prefill_chunked(e, s0, ids, n, NULL, n, a);
    e->be.ops->slot_read(e->be.ctx, s0, sa);
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        ck_assert_int_eq(mm_engine_slot_acquire(e, &s1, &err), MM_OK);
        prefill_chunked(e, s1, ids, n, NULL, chunks[c], b);
        e->be.ops->slot_read(e->be.ctx, s1, sb);
        const double dl = max_rel_diff(a, b, V);
        const double ds = max_rel_diff(sa, sb, mm_config_state_elems(&e->cfg));
        ck_assert_msg(dl < 1e-5, "%s chunk %lld: logits rel diff %g", presets[p],
                      (long long)chunks[c], dl);
        ck_assert_msg(ds < 1e-5 || mm_config_state_elems(&e->cfg) == 0,
                      "%s chunk %lld: state rel diff %g", presets[p], (long long)chunks[c], ds);
        mm_engine_slot_release(e, s1);
    }
    /* decoding continues identically from either */
    ck_assert_int_eq(mm_engine_slot_acquire(e, &s1, &err), MM_OK);
    prefill_chunked(e, s1, ids, n, NULL, 1, b);
    for (int step = 0; step < 5; step++) {
        const int32_t next = (int32_t)(10 + step * 37);
        struct mm_seq_step st[2] = {{s0, &next, 1, NULL, 0, true, true},
                                    {s1, &next, 1, NULL, 0, true, true}};
        float both[2 * 1100];
        ck_assert_int_le(V, 1100);
        ck_assert_int_eq(mm_engine_forward(e, st, 2, both, &err), MM_OK);
        ck_assert_msg(max_rel_diff(both, both + V, V) < 1e-5, "%s decode step %d", presets[p],
                      step);
    }
    free(ids);
    free(a);
    free(b);
    free(sa);
    free(sb);
    mm_engine_close(e);
}
END_TEST

/* With an image: prefill whole == chunked around the image, and batched with
 * another sequence == alone. */
START_TEST(test_images_batched_and_chunked)
{
    const int p = _i;
    struct mm_engine *e = open_engine(p, 3);
    const int64_t V = e->cfg.vocab_size;
    int64_t n, n2;
    int32_t *ids = make_prompt(&e->cfg, 20, 2, &n, 3);
    int32_t *ids2 = make_prompt(&e->cfg, 30, 0, &n2, 5);
    float *tiles = make_tiles(&e->cfg, 2);
    float *alone = malloc(2 * (size_t)V * sizeof *alone),
          *batched = malloc(2 * (size_t)V * sizeof *batched);
    float *chunked = malloc((size_t)V * sizeof *chunked);
    struct mm_err err;
    int32_t s0, s1, s2;
    ck_assert_int_eq(mm_engine_slot_acquire(e, &s0, &err), MM_OK);
    prefill_chunked(e, s0, ids, n, tiles, n, alone);
    ck_assert_int_eq(mm_engine_slot_acquire(e, &s1, &err), MM_OK);
    prefill_chunked(e, s1, ids2, n2, NULL, n2, alone + V);
    mm_engine_slot_release(e, s0);
    mm_engine_slot_release(e, s1);
    /* both sequences in one step */
    ck_assert_int_eq(mm_engine_slot_acquire(e, &s0, &err), MM_OK);
    ck_assert_int_eq(mm_engine_slot_acquire(e, &s1, &err), MM_OK);
    const struct mm_seq_step st[2] = {{s1, ids2, n2, NULL, 0, true, false},
                                      {s0, ids, n, tiles, 2, true, false}};
    ck_assert_msg(mm_engine_forward(e, st, 2, batched, &err) == MM_OK, "%s", err.msg);
    ck_assert_msg(max_rel_diff(alone, batched + V, V) < 1e-5, "%s: image seq batched != alone",
                  presets[p]);
    ck_assert_msg(max_rel_diff(alone + V, batched, V) < 1e-5, "%s: text seq batched != alone",
                  presets[p]);
    /* chunked so that the image starts a chunk and text chunks straddle it */
    ck_assert_int_eq(mm_engine_slot_acquire(e, &s2, &err), MM_OK);
    prefill_chunked(e, s2, ids, n, tiles, 7, chunked);
    ck_assert_msg(max_rel_diff(alone, chunked, V) < 1e-5, "%s: chunked image prompt", presets[p]);
    free(ids);
    free(ids2);
    free(tiles);
    free(alone);
    free(batched);
    free(chunked);
    mm_engine_close(e);
}
END_TEST

START_TEST(test_bad_input_rejected)
{
    struct mm_engine *e = open_engine(1, 2);
    struct mm_err err;
    int32_t s;
    float logits[1100];
    ck_assert_int_eq(mm_engine_slot_acquire(e, &s, &err), MM_OK);
    const int32_t bad_id[2] = {1, 5000};
    struct mm_seq_step st = {s, bad_id, 2, NULL, 0, true, false};
    ck_assert_int_eq(mm_engine_forward(e, &st, 1, logits, &err), MM_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "5000"));
    const int32_t neg[1] = {-1};
    st.ids = neg;
    st.n = 1;
    ck_assert_int_eq(mm_engine_forward(e, &st, 1, logits, &err), MM_ERR_INVALID);
    /* image tokens without tiles; a partial tile run */
    int32_t img[300];
    for (int i = 0; i < 300; i++)
        img[i] = (int32_t)e->cfg.img_context_token_id;
    st.ids = img;
    st.n = 256;
    ck_assert_int_eq(mm_engine_forward(e, &st, 1, logits, &err), MM_ERR_INVALID);
    float dummy_tile[1];
    st.tiles = dummy_tile;
    st.n_tiles = 1;
    st.n = 255;
    ck_assert_int_eq(mm_engine_forward(e, &st, 1, logits, &err), MM_ERR_INVALID);
    /* unacquired slot, duplicated slot, over budget */
    const int32_t one[1] = {7};
    struct mm_seq_step two[2] = {{s, one, 1, NULL, 0, true, false},
                                 {s, one, 1, NULL, 0, true, false}};
    ck_assert_int_eq(mm_engine_forward(e, two, 2, logits, &err), MM_ERR_INVALID);
    two[1].slot = 1;
    ck_assert_int_eq(mm_engine_forward(e, two, 2, logits, &err), MM_ERR_INVALID);
    int32_t *many = calloc(1300, sizeof *many);
    struct mm_seq_step big = {s, many, 1300, NULL, 0, true, false};
    ck_assert_int_eq(mm_engine_forward(e, &big, 1, logits, &err), MM_ERR_LIMIT);
    free(many);
    /* the slot was not advanced by any of these */
    ck_assert_int_eq(e->slots[s].pos, 0);
    ck_assert_int_eq(e->slots[s].emb_pos, 0);
    /* all slots busy */
    int32_t s2, s3;
    ck_assert_int_eq(mm_engine_slot_acquire(e, &s2, &err), MM_OK);
    ck_assert_int_eq(mm_engine_slot_acquire(e, &s3, &err), MM_ERR_LIMIT);
    mm_engine_close(e);
}
END_TEST

/* A generated <IMG_CONTEXT> id is text (docs/model.md §3.6): a text_only step
 * embeds it through the special table, in both pixel-shuffle modes. */
START_TEST(test_generated_image_id_is_text)
{
    const int p = _i; /* tiny-linear: pre, tiny-hybrid: post */
    struct mm_engine *e = open_engine(p, 1);
    struct mm_err err;
    int32_t s;
    float logits[1100];
    ck_assert_int_eq(mm_engine_slot_acquire(e, &s, &err), MM_OK);
    const int32_t ids[3] = {1, 40, (int32_t)e->cfg.img_context_token_id};
    struct mm_seq_step st = {s, ids, 2, NULL, 0, true, false};
    ck_assert_int_eq(mm_engine_forward(e, &st, 1, logits, &err), MM_OK);
    /* as a prompt token without tiles it is refused; as generated text it runs */
    st.ids = ids + 2;
    st.n = 1;
    ck_assert_int_eq(mm_engine_forward(e, &st, 1, logits, &err), MM_ERR_INVALID);
    st.text_only = true;
    ck_assert_msg(mm_engine_forward(e, &st, 1, logits, &err) == MM_OK, "%s", err.msg);
    ck_assert_int_eq(e->slots[s].pos, 3);
    ck_assert_int_eq(e->slots[s].emb_pos, 3);
    for (int64_t i = 0; i < e->cfg.vocab_size; i++)
        ck_assert(isfinite(logits[i]));
    mm_engine_close(e);
}
END_TEST

/* bf16 state between steps stays close to fp32 state (the reference's choice
 * vs the server's more accurate option). */
START_TEST(test_state_bf16_close)
{
    struct mm_engine_options o;
    mm_engine_options_default(&o);
    o.max_seqs = 1;
    o.max_tokens = 64;
    o.max_tiles = 0;
    o.max_context = 256;
    struct mm_engine *e32, *e16;
    struct mm_err err;
    ck_assert_int_eq(mm_engine_open(dirs[0], &o, &e32, &err), MM_OK);
    o.state_fp32 = false;
    ck_assert_int_eq(mm_engine_open(dirs[0], &o, &e16, &err), MM_OK);
    int64_t n;
    int32_t *ids = make_prompt(&e32->cfg, 30, 0, &n, 9);
    const int64_t V = e32->cfg.vocab_size;
    float *a = malloc((size_t)V * sizeof *a), *b = malloc((size_t)V * sizeof *b);
    int32_t s;
    ck_assert_int_eq(mm_engine_slot_acquire(e32, &s, &err), MM_OK);
    ck_assert_int_eq(mm_engine_slot_acquire(e16, &s, &err), MM_OK);
    prefill_chunked(e32, s, ids, n, NULL, 1, a);
    prefill_chunked(e16, s, ids, n, NULL, 1, b);
    const double d = max_rel_diff(a, b, V);
    ck_assert_msg(d > 0 && d < 0.05, "bf16 vs fp32 state rel diff %g", d);
    free(ids);
    free(a);
    free(b);
    mm_engine_close(e32);
    mm_engine_close(e16);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine/forward");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_prefill_equals_stepping, 0, 3);
    tcase_add_loop_test(tc, test_images_batched_and_chunked, 0, 3);
    tcase_add_test(tc, test_bad_input_rejected);
    tcase_add_test(tc, test_state_bf16_close);
    tcase_add_loop_test(tc, test_generated_image_id_is_text, 0, 2);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
