/* check_cpu_backend.c: the CPU backend's slot and sampling ops
 * (src/engine/cpu_backend.c): `sample` == `logits` + the reference sampler,
 * token counts, save/restore and slot/KV copies round-trip exactly, status. */
#include "engine/engine.h"

#include <stdlib.h>
#include <string.h>

#include "engine/cpu_sample.h"
#include "model/synthetic.h"
#include "testutil.h"

static char dirs[2][256];
static const char *const presets[2] = {"tiny-linear", "tiny-hybrid"};

static void setup(void)
{
    for (int p = 0; p < 2; p++)
        mm_test_synthetic_model(dirs[p], sizeof dirs[p], presets[p], 5);
}

static void teardown(void)
{
    for (int p = 0; p < 2; p++)
        mm_test_rmdir(dirs[p]);
}

static struct mm_engine *open_engine(int p)
{
    struct mm_engine_options o;
    mm_engine_options_default(&o);
    o.n_threads = 2;
    o.max_seqs = 40; /* more than the backend's 32-row sampling groups */
    o.max_tokens = 256;
    o.max_tiles = 0;
    o.max_context = 256;
    struct mm_engine *e;
    struct mm_err err;
    ck_assert_msg(mm_engine_open(dirs[p], &o, &e, &err) == MM_OK, "%s", err.msg);
    return e;
}

static struct mm_sample_params params(float temperature, uint64_t seed, int n_logprobs)
{
    return (struct mm_sample_params){.temperature = temperature,
                                     .top_k = 0,
                                     .top_p = 1,
                                     .min_p = 0,
                                     .repetition_penalty = 1,
                                     .presence_penalty = 0,
                                     .frequency_penalty = 0,
                                     .seed = seed,
                                     .n_logprobs = n_logprobs};
}

/* `sample` over 40 rows == `logits` of the rows + mm_cpu_sample_row with
 * a mirror of the counts, for greedy and seeded rows with penalties. */
START_TEST(test_sample_matches_logits_and_reference)
{
    struct mm_engine *e = open_engine(_i);
    const struct mm_backend_ops *ops = e->be.ops;
    void *ctx = e->be.ctx;
    const int64_t V = e->cfg.vocab_size;
    enum { N = 40 };
    int32_t ids[N];
    int64_t rows[N];
    struct mm_sample_req reqs[N];
    struct mm_sample_out out[N], want;
    uint32_t *mirror = calloc((size_t)(N * V), sizeof *mirror);
    float *logits = malloc((size_t)(N * V) * sizeof *logits);
    struct mm_cpu_sampler s;
    struct mm_err err;
    ck_assert_int_eq(mm_cpu_sampler_init(&s, V, &err), MM_OK);
    for (int i = 0; i < N; i++) {
        ids[i] = (int32_t)(5 + 23 * i);
        rows[i] = N - 1 - i; /* rows in any order */
        int32_t slot;
        ck_assert_int_eq(mm_engine_slot_acquire(e, &slot, &err), MM_OK);
        const int32_t seen[3] = {ids[i], 7, (int32_t)(V - 1)};
        ops->slot_count(ctx, slot, seen, 3, false);
        mm_cpu_count_tokens(mirror + (int64_t)slot * V, V, seen, 3, false);
        reqs[i] = (struct mm_sample_req){rows[i], slot, (uint32_t)(i % 4), (uint32_t)i,
                                         params(i % 3 ? 0.9f : 0, 1000 + (uint64_t)i, i % 6)};
        reqs[i].p.repetition_penalty = 1.2f;
        reqs[i].p.presence_penalty = 0.5f;
        reqs[i].p.top_k = i % 5 == 1 ? 7 : 0;
    }
    ops->embed_tokens(ctx, ids, N, e->x_llm, 0); /* any activations will do */
    for (int round = 0; round < 3; round++) {
        ops->sample(ctx, e->x_llm, reqs, N, out);
        ops->logits(ctx, e->x_llm, rows, N, logits);
        for (int i = 0; i < N; i++) {
            mm_cpu_sample_row(&s, logits + (int64_t)i * V, mirror + (int64_t)reqs[i].slot * V,
                              &reqs[i].p, reqs[i].stream, reqs[i].counter, &want);
            ck_assert_int_eq(out[i].id, want.id);
            ck_assert_float_eq(out[i].logprob, want.logprob);
            ck_assert_int_eq(out[i].n_top, reqs[i].p.n_logprobs);
            for (int k = 0; k < out[i].n_top; k++) {
                ck_assert_int_eq(out[i].top_ids[k], want.top_ids[k]);
                ck_assert_float_eq(out[i].top_logprobs[k], want.top_logprobs[k]);
            }
            reqs[i].counter++;
        }
    }
    /* the counts the op kept are the mirror's: a save holds them after the state */
    const size_t sb = ops->slot_bytes(ctx);
    const size_t state_b = sb - (size_t)V * sizeof(uint32_t);
    char *buf = malloc(sb);
    for (int i = 0; i < N; i++) {
        ops->slot_save(ctx, reqs[i].slot, buf);
        ck_assert_mem_eq(buf + state_b, mirror + (int64_t)reqs[i].slot * V,
                         (size_t)V * sizeof(uint32_t));
    }
    ck_assert_int_eq(ops->status(ctx, &err), MM_OK);
    free(buf);
    free(mirror);
    free(logits);
    mm_cpu_sampler_free(&s);
    mm_engine_close(e);
}
END_TEST

static void step(struct mm_engine *e, int32_t slot, const int32_t *ids, int64_t n, float *logits)
{
    struct mm_err err;
    const struct mm_seq_step st = {slot, ids, n, NULL, 0, true, false};
    ck_assert_msg(mm_engine_forward(e, &st, 1, logits, &err) == MM_OK, "%s", err.msg);
}

/* save → run on → restore gives back the exact bytes and the exact
 * continuation; reset zeroes state and counts. */
START_TEST(test_save_restore_round_trip)
{
    struct mm_engine *e = open_engine(0); /* linear: the slot is the whole sequence */
    const struct mm_backend_ops *ops = e->be.ops;
    void *ctx = e->be.ctx;
    const int64_t V = e->cfg.vocab_size;
    const size_t sb = ops->slot_bytes(ctx);
    ck_assert_uint_eq(sb, (size_t)(mm_config_state_elems(&e->cfg) + V) * 4);
    char *a = malloc(sb), *b = malloc(sb), *c = malloc(sb);
    float *la = malloc((size_t)V * sizeof *la), *lb = malloc((size_t)V * sizeof *lb);
    struct mm_err err;
    int32_t s;
    ck_assert_int_eq(mm_engine_slot_acquire(e, &s, &err), MM_OK);
    const int32_t prompt[6] = {1, 40, 91, 388, 17, 5}, more[3] = {600, 601, 602};
    step(e, s, prompt, 6, la);
    ops->slot_count(ctx, s, prompt, 6, false);
    ops->slot_count(ctx, s, more, 2, true);
    ops->slot_save(ctx, s, a);
    const int64_t pos = e->slots[s].pos, emb_pos = e->slots[s].emb_pos;
    step(e, s, more, 3, la);
    ops->slot_count(ctx, s, more, 3, true);
    ops->slot_save(ctx, s, b);
    ck_assert(memcmp(a, b, sb) != 0);
    ops->slot_restore(ctx, s, a);
    ops->slot_save(ctx, s, c);
    ck_assert_mem_eq(a, c, sb);
    e->slots[s].pos = pos;
    e->slots[s].emb_pos = emb_pos;
    step(e, s, more, 3, lb);
    ck_assert_mem_eq(la, lb, (size_t)V * sizeof *la);
    /* restore into another slot, then reset it */
    int32_t s2;
    ck_assert_int_eq(mm_engine_slot_acquire(e, &s2, &err), MM_OK);
    ops->slot_restore(ctx, s2, b);
    ops->slot_save(ctx, s2, c);
    ck_assert_mem_eq(b, c, sb);
    ops->slot_reset(ctx, s2);
    ops->slot_save(ctx, s2, c);
    for (size_t i = 0; i < sb; i++)
        ck_assert_int_eq(c[i], 0);
    free(a);
    free(b);
    free(c);
    free(la);
    free(lb);
    mm_engine_close(e);
}
END_TEST

/* slot_copy + kv_copy: the copy continues exactly as the original. */
START_TEST(test_slot_and_kv_copy)
{
    struct mm_engine *e = open_engine(_i);
    const struct mm_backend_ops *ops = e->be.ops;
    void *ctx = e->be.ctx;
    const int64_t V = e->cfg.vocab_size;
    const size_t sb = ops->slot_bytes(ctx);
    char *a = malloc(sb), *b = malloc(sb);
    float *la = malloc((size_t)V * sizeof *la), *lb = malloc((size_t)V * sizeof *lb);
    struct mm_err err;
    int32_t s0, s1;
    ck_assert_int_eq(mm_engine_slot_acquire(e, &s0, &err), MM_OK);
    ck_assert_int_eq(mm_engine_slot_acquire(e, &s1, &err), MM_OK);
    int32_t prompt[37];
    for (int i = 0; i < 37; i++) /* 37 tokens: the last KV block is partly filled */
        prompt[i] = (int32_t)(1 + (i * 131) % 900);
    step(e, s0, prompt, 37, la);
    ops->slot_count(ctx, s0, prompt, 37, false);
    /* s1 runs something else first: the copy must overwrite all of it */
    step(e, s1, prompt + 5, 20, lb);
    ops->slot_count(ctx, s1, prompt + 5, 20, true);
    ops->slot_copy(ctx, s0, s1);
    for (int st = 0; st < 2; st++) {
        if (!e->kv[st])
            continue;
        const int64_t n = st == MM_STACK_EMB ? e->slots[s0].emb_pos : e->slots[s0].pos;
        ck_assert_int_eq(mm_kv_pool_reserve(e->kv[st], s1, 0, n, &err), MM_OK);
        ops->kv_copy(ctx, (enum mm_stack)st, mm_kv_pool_table(e->kv[st], s0, 0),
                     mm_kv_pool_table(e->kv[st], s1, 0), mm_kv_blocks_for(n));
    }
    e->slots[s1].pos = e->slots[s0].pos;
    e->slots[s1].emb_pos = e->slots[s0].emb_pos;
    ops->slot_save(ctx, s0, a);
    ops->slot_save(ctx, s1, b);
    ck_assert_mem_eq(a, b, sb);
    for (int k = 0; k < 20; k++) { /* 20 more: crosses into a new block */
        const int32_t next = (int32_t)(3 + 41 * k);
        step(e, s0, &next, 1, la);
        step(e, s1, &next, 1, lb);
        ck_assert_msg(memcmp(la, lb, (size_t)V * sizeof *la) == 0, "%s: step %d differs",
                      presets[_i], k);
    }
    ck_assert_int_eq(ops->status(ctx, &err), MM_OK);
    free(a);
    free(b);
    free(la);
    free(lb);
    mm_engine_close(e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine/cpu_backend");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_sample_matches_logits_and_reference, 0, 2);
    tcase_add_test(tc, test_save_restore_round_trip);
    tcase_add_loop_test(tc, test_slot_and_kv_copy, 0, 2);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
