/* check_cuda_backend.c: the CUDA backend against the CPU reference backend.
 * GPU suite: exits 77 when there is no CUDA device; never forks (mm_test_run_nofork).
 *
 * Per op (fp32 mode): every mixer and MLP op of every layer on a ragged
 * varlen batch (lengths 1, 2, 127, 128, 129, 1000 in one batch, then a second
 * round carrying the states and KV in), KV blocks scattered over the cache,
 * GQA, head dims 16 and 128: all rows' logits and every slot's state within
 * 1e-4 relative of the CPU, with the Mamba-2 scan chunked (SSD) for every
 * span, token-sequential for every span, and split between the two in one
 * batch. The chunked scan in bf16 (tensor-core bf16 operands) per op against
 * the CPU. Whole model through the engine: fp32 logits within 1e-4 and
 * identical greedy tokens (text, images, prefill in pieces, also with the
 * chunked scan over pieces that do not align with its chunks); bf16 error
 * measured and bounded; batched == alone; prefill == stepping; decode steps
 * replayed from padded graph buckets == eager; slots sized from device
 * memory; slot copy / save / restore exact; the sticky status.
 *
 * Flash prefill attention (flash.cu, bf16 only), case "flash": every span on
 * it (MMMAMBA_CUDA_FLASH=1) against the CPU and against the split CUDA-core
 * kernel (MMMAMBA_CUDA_FLASH=0) on one ragged batch of lengths 1, 2, 63, 64,
 * 65, 127, 128, 129, 1000 over histories 0, 1 and 500 already in the cache,
 * reversed interleaved block tables, head dims 64 and 128, GQA ratios 1, 2,
 * 4; whole hybrid and teacher models with the default threshold against
 * the flash path turned off. */
#include "engine/cuda_backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cpu_backend.h"
#include "engine/engine.h"
#include "model/synthetic.h"
#include "testutil.h"

#define N_MODELS 4
static char dirs[N_MODELS][256];
static const char *const names[N_MODELS] = {"tiny-linear", "tiny-hybrid", "tiny-teacher",
                                            "wide-hybrid"};

/* "wide-hybrid": tiny-hybrid with the full model's head dim (128), 2 heads over 1 kv head */
static void make_models(void)
{
    for (int m = 0; m < N_MODELS; m++) {
        struct mm_config cfg;
        struct mm_err err;
        const struct mm_synthetic_options opt = {.seed = 5, .shards = 1};
        mm_test_tmpdir(dirs[m], sizeof dirs[m]);
        ck_assert_msg(mm_synthetic_preset(m == 3 ? "tiny-hybrid" : names[m], &cfg, &err) == MM_OK,
                      "%s", err.msg);
        if (m == 3)
            for (int s = 0; s < 2; s++) {
                struct mm_stack_config *sc = s ? &cfg.llm : &cfg.emb;
                sc->hidden = 256, sc->heads = 2, sc->kv_heads = 1, sc->head_dim = 128;
                sc->intermediate = 384;
            }
        ck_assert_msg(mm_synthetic_write(dirs[m], &cfg, &opt, &err) == MM_OK, "%s", err.msg);
    }
}

static void remove_models(void)
{
    for (int m = 0; m < N_MODELS; m++)
        mm_test_rmdir(dirs[m]);
}

static double rel_err(const float *a, const float *b, int64_t n)
{
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(b[i]))
            return INFINITY;
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)a[i]));
    }
    return m > 0 ? d / m : d;
}

static int argmax(const float *x, int64_t n)
{
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return (int)b;
}

static bool have_gpu(void)
{
    struct mm_backend b;
    struct mm_err err;
    if (mm_cuda_backend_create(true, &b, &err) != MM_OK)
        return false;
    b.ops->destroy(b.ctx);
    return true;
}

/* ---- per op, through the backend interface ------------------------------------- */

struct model {
    struct mm_config cfg;
    struct mm_safetensors *st;
    struct mm_weights w;
};

static void model_open(int m, struct model *md)
{
    struct mm_err err;
    ck_assert_msg(mm_config_load(dirs[m], &md->cfg, &err) == MM_OK &&
                      mm_safetensors_open_dir(dirs[m], &md->st, &err) == MM_OK &&
                      mm_weights_bind(&md->cfg, md->st, &md->w, &err) == MM_OK,
                  "%s", err.msg);
}

enum { SLOTS = 8, MAXTOK = 1400, CTX = 3000 };
#define BPT ((CTX + MM_KV_BLOCK - 1) / MM_KV_BLOCK)

static void limits_n(const struct model *md, bool state_fp32, int32_t slots,
                     struct mm_backend_limits *lim)
{
    *lim = (struct mm_backend_limits){.n_slots = slots,
                                      .max_tokens = MAXTOK,
                                      .max_tiles = 1,
                                      .max_context = CTX,
                                      .state_fp32 = state_fp32};
    for (int s = 0; s < 2; s++) {
        const struct mm_stack_config *sc = s ? &md->cfg.llm : &md->cfg.emb;
        bool mha = false;
        for (int64_t i = 0; i < sc->num_layers; i++)
            mha = mha || sc->kinds[i] == MM_LAYER_MHA;
        lim->n_kv_blocks[s] = mha ? (int64_t)slots * BPT : 0;
    }
}

static struct mm_backend open_backend_n(const struct model *md, int kind, bool state_fp32,
                                        int32_t slots)
{
    struct mm_backend b;
    struct mm_err err;
    struct mm_backend_limits lim;
    limits_n(md, state_fp32, slots, &lim);
    if (kind == 0)
        ck_assert_int_eq(mm_cpu_backend_create(2, &b, &err), MM_OK);
    else
        ck_assert_msg(mm_cuda_backend_create(kind == 1, &b, &err) == MM_OK, "%s", err.msg);
    ck_assert_msg(b.ops->load(b.ctx, &md->cfg, &md->w, &lim, &err) == MM_OK, "%s", err.msg);
    return b;
}

static struct mm_backend open_backend(const struct model *md, int kind, bool state_fp32)
{
    return open_backend_n(md, kind, state_fp32, SLOTS);
}

/* Which Mamba-2 scan the CUDA backends created from now on use
 * (cuda_backend.c reads MMMAMBA_CUDA_SCAN at creation): "chunked", "seq", a
 * span length from which spans are chunked, or NULL for the measured choice. */
static void scan_mode(const char *mode)
{
    if (mode)
        setenv("MMMAMBA_CUDA_SCAN", mode, 1);
    else
        unsetenv("MMMAMBA_CUDA_SCAN");
}

/* Every span chunked; every span sequential; 1, 2 and 127 sequential and
 * 128, 129 and 1000 chunked in the same batch. */
#define N_SCANS 3
static const char *const scans[N_SCANS] = {"chunked", "seq", "128"};

static void check_status(const struct mm_backend *b)
{
    struct mm_err err;
    if (b->ops->status)
        ck_assert_msg(b->ops->status(b->ctx, &err) == MM_OK, "%s", err.msg);
}

/* logits of rows [0, T) of both backends; returns the relative error */
static double compare_rows(const struct model *md, struct mm_backend *b[2], struct mm_act *x[2],
                           int64_t T, float *lc, float *lg)
{
    int64_t *rows = malloc((size_t)T * sizeof *rows);
    for (int64_t i = 0; i < T; i++)
        rows[i] = i;
    b[0]->ops->logits(b[0]->ctx, x[0], rows, (int)T, lc);
    b[1]->ops->logits(b[1]->ctx, x[1], rows, (int)T, lg);
    check_status(b[1]);
    free(rows);
    return rel_err(lc, lg, T * md->cfg.vocab_size);
}

static double compare_states(const struct model *md, struct mm_backend *b[2], const int *slots,
                             int n)
{
    const int64_t E = mm_config_state_elems(&md->cfg);
    float *a = malloc((size_t)(E ? E : 1) * sizeof *a),
          *g = malloc((size_t)(E ? E : 1) * sizeof *g);
    double worst = 0;
    for (int i = 0; i < n && E > 0; i++) {
        b[0]->ops->slot_read(b[0]->ctx, slots[i], a);
        b[1]->ops->slot_read(b[1]->ctx, slots[i], g);
        worst = fmax(worst, rel_err(a, g, E));
    }
    free(a);
    free(g);
    return worst;
}

START_TEST(test_ops_vs_cpu)
{
    const int m = _i % N_MODELS;
    const char *scan = scans[_i / N_MODELS];
    struct model md;
    model_open(m, &md);
    struct mm_backend cpu = open_backend(&md, 0, true);
    scan_mode(scan);
    struct mm_backend gpu = open_backend(&md, 1, true);
    scan_mode(NULL);
    struct mm_backend *b[2] = {&cpu, &gpu};
    const int64_t H = md.cfg.llm.hidden, V = md.cfg.vocab_size;
    struct mm_act *x[2] = {cpu.ops->act_alloc(cpu.ctx, MAXTOK, H),
                           gpu.ops->act_alloc(gpu.ctx, MAXTOK, H)};
    ck_assert(x[0] && x[1]);
    float *lc = malloc((size_t)(MAXTOK * V) * sizeof *lc),
          *lg = malloc((size_t)(MAXTOK * V) * sizeof *lg);
    /* block tables: ids scattered over the whole cache, distinct per slot and stack */
    static int32_t tables[2][SLOTS][BPT];
    const int64_t total = (int64_t)SLOTS * BPT;
    for (int s = 0; s < 2; s++)
        for (int sl = 0; sl < SLOTS; sl++)
            for (int i = 0; i < BPT; i++)
                tables[s][sl][i] = (int32_t)((((int64_t)i * SLOTS + sl) * 7919 + s * 13) % total);
    const int64_t len[2][6] = {{1, 2, 127, 128, 129, 1000}, {3, 1, 1, 200, 17, 1}};
    const int slots[6] = {0, 2, 3, 5, 6, 7};
    int64_t pos[6] = {0};
    uint32_t seed = 1234u + (uint32_t)m;
    for (int s = 0; s < 2; s++)
        for (int sl = 0; sl < SLOTS; sl++) {
            cpu.ops->slot_reset(cpu.ctx, sl);
            gpu.ops->slot_reset(gpu.ctx, sl);
        }
    for (int round = 0; round < 2; round++) {
        struct mm_span spans[2][6];
        int64_t T = 0;
        for (int i = 0; i < 6; i++) {
            for (int s = 0; s < 2; s++)
                spans[s][i] =
                    (struct mm_span){slots[i], T, len[round][i], pos[i], tables[s][slots[i]]};
            T += len[round][i];
        }
        int32_t *ids = malloc((size_t)T * sizeof *ids);
        for (int64_t i = 0; i < T; i++) {
            seed = seed * 1664525u + 1013904223u;
            ids[i] = (int32_t)((seed >> 8) % (uint32_t)md.cfg.llm_vocab_size);
        }
        for (int k = 0; k < 2; k++)
            b[k]->ops->embed_tokens(b[k]->ctx, ids, T, x[k], 0);
        free(ids);
        double e = compare_rows(&md, b, x, T, lc, lg);
        ck_assert_msg(e <= 1e-4, "%s: embed: %.3g", names[m], e);
        for (int s = 0; s < 2; s++) {
            const struct mm_stack_config *sc = s ? &md.cfg.llm : &md.cfg.emb;
            for (int l = 0; l < (int)sc->num_layers; l++) {
                const bool mha = sc->kinds[l] == MM_LAYER_MHA;
                for (int k = 0; k < 2; k++) {
                    if (mha)
                        b[k]->ops->attention(b[k]->ctx, (enum mm_stack)s, l, x[k], spans[s], 6);
                    else
                        b[k]->ops->mamba2(b[k]->ctx, (enum mm_stack)s, l, x[k], spans[s], 6);
                }
                e = compare_rows(&md, b, x, T, lc, lg);
                ck_assert_msg(e <= 1e-4, "%s (scan %s) round %d stack %d layer %d %s: %.3g",
                              names[m], scan, round, s, l, mha ? "attention" : "mamba2", e);
                for (int k = 0; k < 2; k++)
                    b[k]->ops->mlp(b[k]->ctx, (enum mm_stack)s, l, x[k], T);
                e = compare_rows(&md, b, x, T, lc, lg);
                ck_assert_msg(e <= 1e-4, "%s round %d stack %d layer %d mlp: %.3g", names[m], round,
                              s, l, e);
            }
        }
        e = compare_states(&md, b, slots, 6);
        ck_assert_msg(e <= 1e-4, "%s (scan %s) round %d: states %.3g", names[m], scan, round, e);
        printf("%s (scan %s) round %d: ops within 1e-4 (last logits %.2e), states %.2e\n", names[m],
               scan, round, compare_rows(&md, b, x, T, lc, lg), e);
        for (int i = 0; i < 6; i++)
            pos[i] += len[round][i];
    }
    /* fork: slot 3 (128 tokens in) copied to the unused slot 1 with slot_copy
     * and kv_copy (into slot 1's own block ids), then 9 tokens on the copy */
    const int64_t nb = (pos[2] + MM_KV_BLOCK - 1) / MM_KV_BLOCK;
    for (int k = 0; k < 2; k++) {
        b[k]->ops->slot_copy(b[k]->ctx, 3, 1);
        for (int s = 0; s < 2; s++)
            b[k]->ops->kv_copy(b[k]->ctx, (enum mm_stack)s, tables[s][3], tables[s][1], nb);
    }
    int32_t fork_ids[9];
    for (int i = 0; i < 9; i++)
        fork_ids[i] = 11 + 57 * i;
    struct mm_span fork[2];
    for (int s = 0; s < 2; s++)
        fork[s] = (struct mm_span){1, 0, 9, pos[2], tables[s][1]};
    for (int k = 0; k < 2; k++)
        b[k]->ops->embed_tokens(b[k]->ctx, fork_ids, 9, x[k], 0);
    for (int s = 0; s < 2; s++) {
        const struct mm_stack_config *sc = s ? &md.cfg.llm : &md.cfg.emb;
        for (int l = 0; l < (int)sc->num_layers; l++)
            for (int k = 0; k < 2; k++) {
                if (sc->kinds[l] == MM_LAYER_MHA)
                    b[k]->ops->attention(b[k]->ctx, (enum mm_stack)s, l, x[k], &fork[s], 1);
                else
                    b[k]->ops->mamba2(b[k]->ctx, (enum mm_stack)s, l, x[k], &fork[s], 1);
                b[k]->ops->mlp(b[k]->ctx, (enum mm_stack)s, l, x[k], 9);
            }
    }
    const double ef = compare_rows(&md, b, x, 9, lc, lg);
    const int forked[2] = {1, 3};
    const double sf = compare_states(&md, b, forked, 2);
    ck_assert_msg(ef <= 1e-4 && sf <= 1e-4, "%s (scan %s) fork: logits %.3g, states %.3g", names[m],
                  scan, ef, sf);
    free(lc);
    free(lg);
    cpu.ops->destroy(cpu.ctx);
    gpu.ops->destroy(gpu.ctx);
    mm_safetensors_close(md.st);
}
END_TEST

/* Decode-sized batches in bf16 (the GEMMs of decode sizes, the 1-token scan
 * and the split attention), once per GEMM path (MMMAMBA_CUDA_SKINNY: 0
 * cuBLASLt, 1 the skinny kernel up to 8 rows, 2 the tensor-core one up to 64):
 * steps of 1, 3, 8, 13, 40 and 64 sequences, each op's output against the
 * CPU within bf16 rounding; the LM head runs at those sizes too. */
enum { DSLOTS = 64 };
START_TEST(test_decode_ops_bf16)
{
    const int m = _i / 3, path = _i % 3;
    const char *const path_names[3] = {"cuBLASLt", "skinny", "tensor-core skinny"};
    struct model md;
    model_open(m, &md);
    char force[2] = {(char)('0' + path), 0};
    setenv("MMMAMBA_CUDA_SKINNY", force, 1);
    struct mm_backend cpu = open_backend_n(&md, 0, true, DSLOTS),
                      gpu = open_backend_n(&md, 2, true, DSLOTS);
    unsetenv("MMMAMBA_CUDA_SKINNY");
    struct mm_backend *b[2] = {&cpu, &gpu};
    const int64_t H = md.cfg.llm.hidden, V = md.cfg.vocab_size;
    struct mm_act *x[2] = {cpu.ops->act_alloc(cpu.ctx, MAXTOK, H),
                           gpu.ops->act_alloc(gpu.ctx, MAXTOK, H)};
    float *lc = malloc((size_t)(DSLOTS * V) * sizeof *lc),
          *lg = malloc((size_t)(DSLOTS * V) * sizeof *lg);
    static int32_t tables[DSLOTS][BPT];
    for (int sl = 0; sl < DSLOTS; sl++)
        for (int i = 0; i < BPT; i++)
            tables[sl][i] =
                (int32_t)(((int64_t)i * DSLOTS + (DSLOTS - 1 - sl)) % ((int64_t)DSLOTS * BPT));
    for (int k = 0; k < 2; k++)
        for (int sl = 0; sl < DSLOTS; sl++)
            b[k]->ops->slot_reset(b[k]->ctx, sl);
    enum { STEPS = 6 };
    const int sizes[STEPS] = {1, 3, 8, 13, 40, 64};
    double worst = 0;
    for (int step = 0; step < STEPS; step++) {
        const int n = sizes[step];
        struct mm_span spans[DSLOTS];
        int32_t ids[DSLOTS];
        for (int i = 0; i < n; i++) {
            spans[i] = (struct mm_span){i, i, 1, step, tables[i]};
            ids[i] = (int32_t)((7 + 31 * i + step) % V);
        }
        for (int s = 0; s < 2; s++) {
            const struct mm_stack_config *sc = s ? &md.cfg.llm : &md.cfg.emb;
            for (int l = 0; l < (int)sc->num_layers; l++)
                for (int op = 0; op < 2; op++) {
                    /* fresh equal inputs for every op, so errors do not compound */
                    for (int k = 0; k < 2; k++)
                        b[k]->ops->embed_tokens(b[k]->ctx, ids, n, x[k], 0);
                    for (int k = 0; k < 2; k++) {
                        if (op == 1)
                            b[k]->ops->mlp(b[k]->ctx, (enum mm_stack)s, l, x[k], n);
                        else if (sc->kinds[l] == MM_LAYER_MHA)
                            b[k]->ops->attention(b[k]->ctx, (enum mm_stack)s, l, x[k], spans, n);
                        else
                            b[k]->ops->mamba2(b[k]->ctx, (enum mm_stack)s, l, x[k], spans, n);
                    }
                    const double e = compare_rows(&md, b, x, n, lc, lg);
                    ck_assert_msg(e <= 3e-2, "%s %s n=%d stack %d layer %d op %d: %.3g", names[m],
                                  path_names[path], n, s, l, op, e);
                    worst = fmax(worst, e);
                }
        }
    }
    printf("%s bf16 decode-sized ops (%s GEMMs): worst %.2e of the largest logit\n", names[m],
           path_names[path], worst);
    free(lc);
    free(lg);
    cpu.ops->destroy(cpu.ctx);
    gpu.ops->destroy(gpu.ctx);
    mm_safetensors_close(md.st);
}
END_TEST

/* The chunked scan in the serving mode (bf16 weights, bf16 tensor-core
 * operands in the scan, fp32 state) on the ragged batch, two rounds with the
 * states carried in: each op's output from equal inputs against the CPU
 * within bf16 rounding, and the states after each round. */
START_TEST(test_prefill_ops_bf16)
{
    const int m = _i;
    struct model md;
    model_open(m, &md);
    struct mm_backend cpu = open_backend(&md, 0, true);
    scan_mode("chunked");
    struct mm_backend gpu = open_backend(&md, 2, true);
    scan_mode(NULL);
    struct mm_backend *b[2] = {&cpu, &gpu};
    const int64_t H = md.cfg.llm.hidden, V = md.cfg.vocab_size;
    struct mm_act *x[2] = {cpu.ops->act_alloc(cpu.ctx, MAXTOK, H),
                           gpu.ops->act_alloc(gpu.ctx, MAXTOK, H)};
    float *lc = malloc((size_t)(MAXTOK * V) * sizeof *lc),
          *lg = malloc((size_t)(MAXTOK * V) * sizeof *lg);
    static int32_t tables[SLOTS][BPT];
    for (int sl = 0; sl < SLOTS; sl++)
        for (int i = 0; i < BPT; i++)
            tables[sl][i] = (int32_t)(((int64_t)i * SLOTS + sl) % ((int64_t)SLOTS * BPT));
    const int64_t len[2][6] = {{1, 2, 127, 128, 129, 1000}, {63, 65, 1, 200, 64, 130}};
    const int slots[6] = {0, 2, 3, 5, 6, 7};
    int64_t pos[6] = {0};
    for (int k = 0; k < 2; k++)
        for (int sl = 0; sl < SLOTS; sl++)
            b[k]->ops->slot_reset(b[k]->ctx, sl);
    double worst = 0, worst_state = 0;
    for (int round = 0; round < 2; round++) {
        struct mm_span spans[6];
        int64_t T = 0;
        for (int i = 0; i < 6; i++) {
            spans[i] = (struct mm_span){slots[i], T, len[round][i], pos[i], tables[slots[i]]};
            T += len[round][i];
        }
        int32_t *ids = malloc((size_t)T * sizeof *ids);
        for (int64_t i = 0; i < T; i++)
            ids[i] = (int32_t)((i * 7919 + round * 31) % md.cfg.llm_vocab_size);
        for (int s = 0; s < 2; s++) {
            const struct mm_stack_config *sc = s ? &md.cfg.llm : &md.cfg.emb;
            for (int l = 0; l < (int)sc->num_layers; l++) {
                if (sc->kinds[l] == MM_LAYER_MHA)
                    continue;
                /* fresh equal inputs for the op, so errors do not compound */
                for (int k = 0; k < 2; k++) {
                    b[k]->ops->embed_tokens(b[k]->ctx, ids, T, x[k], 0);
                    b[k]->ops->mamba2(b[k]->ctx, (enum mm_stack)s, l, x[k], spans, 6);
                }
                const double e = compare_rows(&md, b, x, T, lc, lg);
                ck_assert_msg(e <= 3e-2, "%s round %d stack %d layer %d: %.3g", names[m], round, s,
                              l, e);
                worst = fmax(worst, e);
            }
        }
        free(ids);
        const double es = compare_states(&md, b, slots, 6);
        ck_assert_msg(es <= 5e-2, "%s round %d: states %.3g", names[m], round, es);
        worst_state = fmax(worst_state, es);
        for (int i = 0; i < 6; i++)
            pos[i] += len[round][i];
    }
    printf("%s bf16 chunked-scan prefill ops: worst %.2e of the largest logit, states %.2e\n",
           names[m], worst, worst_state);
    free(lc);
    free(lg);
    cpu.ops->destroy(cpu.ctx);
    gpu.ops->destroy(gpu.ctx);
    mm_safetensors_close(md.st);
}
END_TEST

START_TEST(test_slots_and_status)
{
    struct model md;
    model_open(0, &md);
    for (int fp = 0; fp < 2; fp++) {
        struct mm_backend gpu = open_backend(&md, 2, fp == 1); /* bf16 weights */
        const int64_t H = md.cfg.llm.hidden, E = mm_config_state_elems(&md.cfg);
        struct mm_act *x = gpu.ops->act_alloc(gpu.ctx, MAXTOK, H);
        int32_t ids[50];
        for (int i = 0; i < 50; i++)
            ids[i] = 3 + 17 * i;
        gpu.ops->slot_reset(gpu.ctx, 3);
        gpu.ops->embed_tokens(gpu.ctx, ids, 50, x, 0);
        const struct mm_span sp = {3, 0, 50, 0, NULL};
        gpu.ops->mamba2(gpu.ctx, MM_STACK_LLM, 0, x, &sp, 1);
        check_status(&gpu);
        const size_t bytes = gpu.ops->slot_bytes(gpu.ctx);
        ck_assert_uint_gt(bytes, 0);
        unsigned char *saved = malloc(bytes), *again = malloc(bytes);
        float *a = malloc((size_t)E * sizeof *a), *c = malloc((size_t)E * sizeof *c);
        gpu.ops->slot_save(gpu.ctx, 3, saved);
        gpu.ops->slot_read(gpu.ctx, 3, a);
        gpu.ops->slot_copy(gpu.ctx, 3, 7);
        gpu.ops->slot_read(gpu.ctx, 7, c);
        ck_assert(memcmp(a, c, (size_t)E * sizeof *a) == 0);
        gpu.ops->slot_reset(gpu.ctx, 3);
        gpu.ops->slot_read(gpu.ctx, 3, c);
        for (int64_t i = 0; i < E; i++)
            ck_assert(c[i] == 0.0f);
        gpu.ops->slot_restore(gpu.ctx, 3, saved);
        gpu.ops->slot_save(gpu.ctx, 3, again);
        ck_assert(memcmp(saved, again, bytes) == 0);
        gpu.ops->slot_read(gpu.ctx, 3, c);
        ck_assert(memcmp(a, c, (size_t)E * sizeof *a) == 0);
        check_status(&gpu);
        /* a bad batch is refused, reported once, then cleared */
        const struct mm_span bad = {3, 5, 10, 50, NULL};
        gpu.ops->mamba2(gpu.ctx, MM_STACK_LLM, 1, x, &bad, 1);
        struct mm_err err;
        ck_assert_int_eq(gpu.ops->status(gpu.ctx, &err), MM_ERR_BACKEND);
        ck_assert_ptr_nonnull(strstr(err.msg, "spans"));
        ck_assert_int_eq(gpu.ops->status(gpu.ctx, &err), MM_OK);
        free(saved);
        free(again);
        free(a);
        free(c);
        gpu.ops->destroy(gpu.ctx);
    }
    mm_safetensors_close(md.st);
}
END_TEST

/* The sampler on the GPU against the CPU's (fp32 mode: the same logits up to
 * rounding): greedy, temperature, top-k, top-p, min-p, penalties from counts,
 * logprobs; 8 requests of different parameters in one call, 16 calls. */
START_TEST(test_sample_vs_cpu)
{
    struct model md;
    model_open(0, &md);
    struct mm_backend cpu = open_backend(&md, 0, true), gpu = open_backend(&md, 1, true);
    struct mm_backend *b[2] = {&cpu, &gpu};
    const int64_t H = md.cfg.llm.hidden;
    struct mm_act *x[2] = {cpu.ops->act_alloc(cpu.ctx, MAXTOK, H),
                           gpu.ops->act_alloc(gpu.ctx, MAXTOK, H)};
    int32_t ids[SLOTS], prompt[40];
    for (int i = 0; i < SLOTS; i++)
        ids[i] = 5 + 97 * i;
    for (int i = 0; i < 40; i++)
        prompt[i] = (i * 37) % 300;
    for (int k = 0; k < 2; k++) {
        b[k]->ops->embed_tokens(b[k]->ctx, ids, SLOTS, x[k], 0);
        for (int sl = 0; sl < SLOTS; sl++) {
            b[k]->ops->slot_reset(b[k]->ctx, sl);
            b[k]->ops->slot_count(b[k]->ctx, sl, prompt, 40, false);
            b[k]->ops->slot_count(b[k]->ctx, sl, prompt + sl, 5, true);
        }
    }
    const struct mm_sample_params ps[SLOTS] = {
        {.temperature = 0, .top_p = 1, .repetition_penalty = 1, .n_logprobs = 5},
        {.temperature = 1, .top_p = 1, .repetition_penalty = 1, .seed = 1, .n_logprobs = 20},
        {.temperature = 0.7f, .top_k = 20, .top_p = 1, .repetition_penalty = 1, .seed = 2},
        {.temperature = 1.3f, .top_p = 0.9f, .repetition_penalty = 1, .seed = 3, .n_logprobs = 1},
        {.temperature = 1, .top_p = 1, .min_p = 0.05f, .repetition_penalty = 1, .seed = 4},
        {.temperature = 0.9f,
         .top_k = 50,
         .top_p = 0.8f,
         .min_p = 0.02f,
         .repetition_penalty = 1.3f,
         .presence_penalty = 0.5f,
         .frequency_penalty = 0.3f,
         .seed = 5},
        {.temperature = 0, .top_p = 1, .repetition_penalty = 2.0f, .frequency_penalty = 1.0f},
        {.temperature = 2, .top_k = 1, .top_p = 1, .repetition_penalty = 1, .seed = 7}};
    struct mm_sample_req reqs[SLOTS];
    struct mm_sample_out oc[SLOTS], og[SLOTS];
    int same = 0, total = 0;
    for (int call = 0; call < 16; call++) {
        for (int i = 0; i < SLOTS; i++)
            reqs[i] = (struct mm_sample_req){.row = (i * 3) % SLOTS,
                                             .slot = i,
                                             .stream = (uint32_t)i,
                                             .counter = (uint32_t)call,
                                             .p = ps[i]};
        cpu.ops->sample(cpu.ctx, x[0], reqs, SLOTS, oc);
        gpu.ops->sample(gpu.ctx, x[1], reqs, SLOTS, og);
        check_status(&gpu);
        for (int i = 0; i < SLOTS; i++) {
            total++;
            same += oc[i].id == og[i].id;
            ck_assert_msg(oc[i].id == og[i].id, "call %d request %d: cpu %d gpu %d", call, i,
                          oc[i].id, og[i].id);
            ck_assert_msg(fabsf(oc[i].logprob - og[i].logprob) <= 1e-4f, "logprob %g vs %g",
                          oc[i].logprob, og[i].logprob);
            ck_assert_int_eq(oc[i].n_top, og[i].n_top);
            for (int j = 0; j < oc[i].n_top; j++) {
                ck_assert_int_eq(oc[i].top_ids[j], og[i].top_ids[j]);
                ck_assert(fabsf(oc[i].top_logprobs[j] - og[i].top_logprobs[j]) <= 1e-4f);
            }
        }
    }
    printf("sampler: %d of %d draws identical to the CPU\n", same, total);
    cpu.ops->destroy(cpu.ctx);
    gpu.ops->destroy(gpu.ctx);
    mm_safetensors_close(md.st);
}
END_TEST

/* ---- whole model, through the engine -------------------------------------------- */

static struct mm_engine *open_engine_dir(const char *dir, enum mm_backend_kind kind, int32_t seqs,
                                         int64_t max_tokens)
{
    struct mm_engine_options o;
    mm_engine_options_default(&o);
    o.backend = kind;
    o.n_threads = 2;
    o.max_seqs = seqs;
    o.max_tokens = max_tokens;
    o.max_tiles = 2;
    o.max_context = 2048;
    struct mm_engine *e;
    struct mm_err err;
    ck_assert_msg(mm_engine_open(dir, &o, &e, &err) == MM_OK, "%s", err.msg);
    return e;
}

static struct mm_engine *open_engine(int m, enum mm_backend_kind kind, int32_t seqs,
                                     int64_t max_tokens)
{
    return open_engine_dir(dirs[m], kind, seqs, max_tokens);
}

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
            ids[k++] = (int32_t)cfg->llm_vocab_size;
            for (int64_t j = 0; j < img; j++)
                ids[k++] = (int32_t)cfg->img_context_token_id;
            ids[k++] = (int32_t)cfg->llm_vocab_size + 1;
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

enum { GEN = 8 }; /* greedy tokens of the whole-model checks */

/* Index of the first greedy token where a and b differ (GEN: none). */
static int first_diff(const int32_t *a, const int32_t *b)
{
    int i = 0;
    while (i < GEN && a[i] == b[i])
        i++;
    return i;
}

/* (top - second) / the largest |logit|: how far a greedy choice is from a tie. */
static double top2_margin(const float *l, int64_t V)
{
    float top = -INFINITY, second = -INFINITY, mx = 0;
    for (int64_t i = 0; i < V; i++) {
        mx = fmaxf(mx, fabsf(l[i]));
        if (l[i] > top)
            second = top, top = l[i];
        else if (l[i] > second)
            second = l[i];
    }
    return (top - second) / mx;
}

/* Prefill (in chunks of `chunk` text tokens when > 0; images only when 0) then
 * n_gen greedy tokens; logits [(1 + n_gen) * V], tokens [n_gen]. */
static void run_greedy(struct mm_engine *e, const int32_t *ids, int64_t n, const float *tiles,
                       int64_t n_tiles, int64_t chunk, int n_gen, float *logits, int32_t *out)
{
    struct mm_err err;
    int32_t slot;
    const int64_t V = e->cfg.vocab_size;
    ck_assert_int_eq(mm_engine_slot_acquire(e, &slot, &err), MM_OK);
    const int64_t step = chunk > 0 ? chunk : n;
    for (int64_t i = 0; i < n; i += step) {
        const int64_t k = n - i < step ? n - i : step;
        const struct mm_seq_step st = {.slot = slot,
                                       .ids = ids + i,
                                       .n = k,
                                       .tiles = tiles,
                                       .n_tiles = i == 0 ? n_tiles : 0,
                                       .want_logits = i + k == n};
        ck_assert_msg(mm_engine_forward(e, &st, 1, logits, &err) == MM_OK, "%s", err.msg);
    }
    for (int g = 0; g < n_gen; g++) {
        out[g] = argmax(logits + g * V, V);
        const struct mm_seq_step st = {
            .slot = slot, .ids = &out[g], .n = 1, .want_logits = true, .text_only = true};
        ck_assert_msg(mm_engine_forward(e, &st, 1, logits + (g + 1) * V, &err) == MM_OK, "%s",
                      err.msg);
    }
    mm_engine_slot_release(e, slot);
}

START_TEST(test_model_vs_cpu)
{
    const int m = _i;
    struct mm_engine *cpu = open_engine(m, MM_BACKEND_CPU, 2, 1200);
    struct mm_engine *f32 = open_engine(m, MM_BACKEND_CUDA_FP32, 2, 1200);
    struct mm_engine *b16 = open_engine(m, MM_BACKEND_CUDA, 2, 1200);
    scan_mode("chunked");
    struct mm_engine *f32c = open_engine(m, MM_BACKEND_CUDA_FP32, 2, 1200);
    struct mm_engine *b16c = open_engine(m, MM_BACKEND_CUDA, 2, 1200);
    scan_mode(NULL);
    const int64_t V = cpu->cfg.vocab_size;
    float *lc = malloc((size_t)((GEN + 1) * V) * sizeof *lc);
    float *lg = malloc((size_t)((GEN + 1) * V) * sizeof *lg);
    int32_t tc[GEN], tg[GEN];
    for (int variant = 0; variant < 4; variant++) {
        /* text; text + 2-tile image; text in pieces of 16; with the chunked
         * scan forced, 300 tokens of text in pieces of 37 (its chunks of 64
         * then straddle the steps) */
        const int64_t tiles = variant == 1 ? 2 : 0;
        const int64_t chunk = variant == 2 ? 16 : variant == 3 ? 37 : 0;
        struct mm_engine *g32 = variant == 3 ? f32c : f32, *g16 = variant == 3 ? b16c : b16;
        int64_t n;
        int32_t *ids =
            make_prompt(&cpu->cfg, variant == 3 ? 300 : 100, tiles, &n, 77u + (uint32_t)variant);
        float *t = make_tiles(&cpu->cfg, tiles);
        run_greedy(cpu, ids, n, t, tiles, 0, GEN, lc, tc);
        run_greedy(g32, ids, n, t, tiles, chunk, GEN, lg, tg);
        const double e32 = rel_err(lc, lg, (GEN + 1) * V);
        ck_assert_msg(e32 <= 1e-4, "%s variant %d fp32: %.3g", names[m], variant, e32);
        ck_assert_msg(memcmp(tc, tg, sizeof tc) == 0, "%s variant %d fp32: greedy tokens differ",
                      names[m], variant);
        /* bf16: the prompt's logits within a measured tolerance (random tiny
         * models: 0.6-7 % of the largest logit, the hybrid's the most); greedy
         * tokens equal until a step where the CPU's top-2 margin is inside it */
        run_greedy(g16, ids, n, t, tiles, chunk, GEN, lg, tg);
        const double tol = 1e-1;
        const double e = rel_err(lc, lg, V);
        const int agree = first_diff(tc, tg);
        if (agree < GEN)
            ck_assert_msg(top2_margin(lc + agree * V, V) <= 2 * tol,
                          "%s variant %d bf16: token %d differs with a margin of %.3g", names[m],
                          variant, agree, top2_margin(lc + agree * V, V));
        printf("%s variant %d: fp32 logits %.2e (tokens equal); bf16 logits %.2e, %d/%d greedy "
               "tokens agree\n",
               names[m], variant, e32, e, agree, GEN);
        ck_assert_msg(e <= tol, "%s variant %d bf16: %.3g", names[m], variant, e);
        free(ids);
        free(t);
    }
    free(lc);
    free(lg);
    mm_engine_close(cpu);
    mm_engine_close(f32);
    mm_engine_close(b16);
    mm_engine_close(f32c);
    mm_engine_close(b16c);
}
END_TEST

/* 64 sequences of different lengths in one step, then decode together ==
 * each alone; and prefill == token-by-token stepping. */
START_TEST(test_batched_equals_alone)
{
    const int m = _i;
    enum { B = 64, STEPS = 4 };
    for (int kind = 0; kind < 2; kind++) {
        struct mm_engine *e =
            open_engine(m, kind ? MM_BACKEND_CUDA : MM_BACKEND_CUDA_FP32, B, 4096);
        const int64_t V = e->cfg.vocab_size;
        int32_t *prompts[B], slots[B], batched[B][STEPS], alone[B][STEPS];
        int64_t lens[B];
        float *logits = malloc((size_t)(B * V) * sizeof *logits);
        float *lb = malloc((size_t)(B * V) * sizeof *lb);
        struct mm_err err;
        struct mm_seq_step st[B];
        for (int i = 0; i < B; i++) {
            prompts[i] = make_prompt(&e->cfg, 1 + (i * 37) % 60, 0, &lens[i], 500u + (uint32_t)i);
            ck_assert_int_eq(mm_engine_slot_acquire(e, &slots[i], &err), MM_OK);
            st[i] = (struct mm_seq_step){
                .slot = slots[i], .ids = prompts[i], .n = lens[i], .want_logits = true};
        }
        ck_assert_msg(mm_engine_forward(e, st, B, lb, &err) == MM_OK, "%s", err.msg);
        for (int s = 0; s < STEPS; s++) {
            for (int i = 0; i < B; i++) {
                batched[i][s] = argmax(lb + i * V, V);
                st[i] = (struct mm_seq_step){.slot = slots[i],
                                             .ids = &batched[i][s],
                                             .n = 1,
                                             .want_logits = true,
                                             .text_only = true};
            }
            ck_assert_msg(mm_engine_forward(e, st, B, lb, &err) == MM_OK, "%s", err.msg);
        }
        for (int i = 0; i < B; i++)
            mm_engine_slot_release(e, slots[i]);
        int diverged = 0;
        double worst = 0;
        for (int i = 0; i < B; i++) {
            int32_t slot;
            ck_assert_int_eq(mm_engine_slot_acquire(e, &slot, &err), MM_OK);
            /* alone: prefill token by token for the first sequences (prefill == stepping) */
            const int64_t step = i < 8 ? 1 : lens[i];
            for (int64_t k = 0; k < lens[i]; k += step) {
                const struct mm_seq_step one = {.slot = slot,
                                                .ids = prompts[i] + k,
                                                .n = step,
                                                .want_logits = k + step == lens[i]};
                ck_assert_msg(mm_engine_forward(e, &one, 1, logits, &err) == MM_OK, "%s", err.msg);
            }
            for (int s = 0; s < STEPS; s++) {
                alone[i][s] = argmax(logits, V);
                const struct mm_seq_step one = {.slot = slot,
                                                .ids = &alone[i][s],
                                                .n = 1,
                                                .want_logits = true,
                                                .text_only = true};
                ck_assert_msg(mm_engine_forward(e, &one, 1, logits, &err) == MM_OK, "%s", err.msg);
            }
            if (memcmp(alone[i], batched[i], sizeof alone[i]) == 0)
                worst = fmax(worst, rel_err(lb + i * V, logits, V));
            else
                diverged++;
            mm_engine_slot_release(e, slot);
        }
        printf("%s %s: batched vs alone: %d of %d diverge; last logits of the others within "
               "%.2e\n",
               names[m], kind ? "bf16" : "fp32", diverged, B, worst);
        if (kind == 0) {
            ck_assert_msg(diverged == 0, "%s fp32: %d sequences diverge", names[m], diverged);
            ck_assert_msg(worst <= 1e-4, "%s fp32: %.3g", names[m], worst);
        }
        for (int i = 0; i < B; i++)
            free(prompts[i]);
        free(logits);
        free(lb);
        mm_engine_close(e);
    }
}
END_TEST

/* Decode steps of changing batch sizes, replayed from CUDA graphs recorded
 * per padded bucket (13 -> 14, 11 and 12 -> 12, 9 and 10 -> 10, ...; "post"
 * models keep exact-size graphs), against the same steps run eagerly: fp32
 * logits within 1e-4 (the padded GEMMs may pick other algorithms). */
START_TEST(test_graph_buckets)
{
    const int m = _i;
    enum { NS = 13, STEPS = 10 };
    struct mm_engine *eng[2];
    eng[0] = open_engine(m, MM_BACKEND_CUDA_FP32, NS, 1024);
    setenv("MMMAMBA_CUDA_GRAPHS", "0", 1);
    eng[1] = open_engine(m, MM_BACKEND_CUDA_FP32, NS, 1024);
    unsetenv("MMMAMBA_CUDA_GRAPHS");
    const int64_t V = eng[0]->cfg.vocab_size;
    float *lg[2] = {malloc((size_t)(NS * V) * sizeof(float)),
                    malloc((size_t)(NS * V) * sizeof(float))};
    int32_t *prompts[NS], slots[2][NS], next[NS];
    int64_t lens[NS];
    struct mm_seq_step st[NS];
    struct mm_err err;
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < NS; i++) {
            if (k == 0)
                prompts[i] = make_prompt(&eng[0]->cfg, 5 + 3 * i, 0, &lens[i], 900u + (uint32_t)i);
            ck_assert_int_eq(mm_engine_slot_acquire(eng[k], &slots[k][i], &err), MM_OK);
            st[i] = (struct mm_seq_step){
                .slot = slots[k][i], .ids = prompts[i], .n = lens[i], .want_logits = true};
        }
        ck_assert_msg(mm_engine_forward(eng[k], st, NS, lg[k], &err) == MM_OK, "%s", err.msg);
    }
    for (int i = 0; i < NS; i++)
        next[i] = argmax(lg[1] + i * V, V);
    const int sizes[STEPS] = {13, 11, 12, 9, 10, 5, 7, 6, 1, 13};
    double worst = 0;
    for (int step = 0; step < STEPS; step++) {
        const int n = sizes[step];
        for (int k = 0; k < 2; k++) {
            for (int i = 0; i < n; i++)
                st[i] = (struct mm_seq_step){.slot = slots[k][i],
                                             .ids = &next[i],
                                             .n = 1,
                                             .want_logits = true,
                                             .text_only = true};
            ck_assert_msg(mm_engine_forward(eng[k], st, n, lg[k], &err) == MM_OK, "%s", err.msg);
        }
        const double e = rel_err(lg[1], lg[0], n * V);
        ck_assert_msg(e <= 1e-4, "%s step %d (batch %d): graph vs eager %.3g", names[m], step, n,
                      e);
        worst = fmax(worst, e);
        for (int i = 0; i < n; i++)
            next[i] = argmax(lg[1] + i * V, V);
    }
    printf("%s: padded graph buckets vs eager: logits within %.2e\n", names[m], worst);
    for (int i = 0; i < NS; i++)
        free(prompts[i]);
    free(lg[0]);
    free(lg[1]);
    mm_engine_close(eng[0]);
    mm_engine_close(eng[1]);
}
END_TEST

/* Overlapping launches (kernels.h mm_k_set_overlap: each kernel may start
 * before the previous one ends and waits for its writes) change when kernels
 * run, never what they compute: a prefill and decode steps of 6, 1, 4, 6, 2
 * sequences (graph-replayed), with every kernel overlapped, only the GEMMs
 * (the default) and none, give bit-identical logits, in both modes; the scan
 * and GEMM choices are pinned (no timing) and in bf16 the skinny GEMMs (which
 * read weights before that wait) are forced on. */
START_TEST(test_overlap)
{
    const int m = _i / 2;
    const bool f32 = _i % 2;
    enum { NS = 6, STEPS = 5 };
    const int sizes[STEPS] = {6, 1, 4, 6, 2};
    const char *const modes[3] = {"all", "gemm", "0"};
    float *lg[3] = {NULL, NULL, NULL};
    int64_t V = 0, rows = 0;
    setenv("MMMAMBA_CUDA_SCAN", "chunked", 1);
    setenv("MMMAMBA_CUDA_SKINNY", m % 2 ? "2" : "1", 1); /* CUDA-core or tensor-core skinny */
    setenv("MMMAMBA_CUDA_TUNE", "0", 1);
    for (int k = 0; k < 3; k++) {
        setenv("MMMAMBA_CUDA_OVERLAP", modes[k], 1);
        struct mm_engine *e =
            open_engine(m, f32 ? MM_BACKEND_CUDA_FP32 : MM_BACKEND_CUDA, NS, 1024);
        V = e->cfg.vocab_size;
        lg[k] = malloc((size_t)((STEPS + 1) * NS * V) * sizeof(float));
        int32_t *prompts[NS], slots[NS], next[NS];
        int64_t lens[NS];
        struct mm_seq_step st[NS];
        struct mm_err err;
        float *tiles = make_tiles(&e->cfg, 1); /* sequence 2 has a picture */
        for (int i = 0; i < NS; i++) {
            prompts[i] = make_prompt(&e->cfg, 3 + 7 * i, i == 2, &lens[i], 700u + (uint32_t)i);
            ck_assert_int_eq(mm_engine_slot_acquire(e, &slots[i], &err), MM_OK);
            st[i] = (struct mm_seq_step){.slot = slots[i],
                                         .ids = prompts[i],
                                         .n = lens[i],
                                         .tiles = i == 2 ? tiles : NULL,
                                         .n_tiles = i == 2,
                                         .want_logits = true};
        }
        ck_assert_msg(mm_engine_forward(e, st, NS, lg[k], &err) == MM_OK, "%s", err.msg);
        free(tiles);
        int64_t at = NS * V;
        for (int i = 0; i < NS; i++)
            next[i] = argmax(lg[k] + i * V, V);
        for (int step = 0; step < STEPS; step++) {
            const int n = sizes[step];
            for (int i = 0; i < n; i++)
                st[i] = (struct mm_seq_step){.slot = slots[i],
                                             .ids = &next[i],
                                             .n = 1,
                                             .want_logits = true,
                                             .text_only = true};
            ck_assert_msg(mm_engine_forward(e, st, n, lg[k] + at, &err) == MM_OK, "%s", err.msg);
            for (int i = 0; i < n; i++)
                next[i] = argmax(lg[k] + at + i * V, V);
            at += n * V;
        }
        rows = at / V;
        for (int i = 0; i < NS; i++)
            free(prompts[i]);
        mm_engine_close(e);
    }
    unsetenv("MMMAMBA_CUDA_OVERLAP");
    unsetenv("MMMAMBA_CUDA_SKINNY");
    unsetenv("MMMAMBA_CUDA_TUNE");
    unsetenv("MMMAMBA_CUDA_SCAN");
    for (int k = 0; k < 2; k++) {
        int64_t diff = 0;
        for (int64_t i = 0; i < rows * V; i++)
            diff += memcmp(&lg[k][i], &lg[2][i], sizeof(float)) != 0;
        ck_assert_msg(diff == 0, "%s %s: %lld of %lld logits differ, overlap %s vs none", names[m],
                      f32 ? "fp32" : "bf16", (long long)diff, (long long)(rows * V), modes[k]);
    }
    printf("%s %s: overlap all, GEMMs only and none: %lld logits over %lld rows bit-identical\n",
           names[m], f32 ? "fp32" : "bf16", (long long)(rows * V), (long long)rows);
    for (int k = 0; k < 3; k++)
        free(lg[k]);
}
END_TEST

/* Slots sized from device memory (mem_fraction): a sliver of the free memory
 * holds a few tiny-linear slots (at least 1, fewer than asked), every one
 * usable and no more; a large share gives all that were asked; the
 * hybrid's slots bring their KV blocks; the CPU backend ignores it. */
static struct mm_engine *open_sized(int m, enum mm_backend_kind kind, int32_t seqs, double frac)
{
    struct mm_engine_options o;
    mm_engine_options_default(&o);
    o.backend = kind;
    o.n_threads = 2;
    o.max_seqs = seqs;
    o.max_tokens = 4096;
    o.max_tiles = 0;
    o.max_context = 256;
    o.mem_fraction = frac;
    struct mm_engine *e;
    struct mm_err err;
    ck_assert_msg(mm_engine_open(dirs[m], &o, &e, &err) == MM_OK, "%s", err.msg);
    return e;
}

START_TEST(test_memory_sizing)
{
    struct mm_err err;
    struct mm_engine *e = open_sized(0, MM_BACKEND_CUDA_FP32, 4096, 2e-6);
    const int32_t n = e->opt.max_seqs;
    ck_assert_msg(n >= 1 && n < 4096, "%d slots", n);
    int32_t *slots = malloc((size_t)n * sizeof *slots);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    struct mm_seq_step *st = malloc((size_t)n * sizeof *st);
    for (int32_t i = 0; i < n; i++) {
        ck_assert_int_eq(mm_engine_slot_acquire(e, &slots[i], &err), MM_OK);
        ids[i] = 5 + i % 100;
        st[i] = (struct mm_seq_step){.slot = slots[i], .ids = &ids[i], .n = 1};
    }
    int32_t extra;
    ck_assert_int_eq(mm_engine_slot_acquire(e, &extra, &err), MM_ERR_LIMIT);
    ck_assert_msg(mm_engine_forward(e, st, n, NULL, &err) == MM_OK, "%s", err.msg);
    ck_assert_msg(mm_engine_forward(e, st, n, NULL, &err) == MM_OK, "%s", err.msg);
    printf("memory sizing: 2e-6 of the free memory holds %d tiny-linear slots\n", n);
    free(slots);
    free(ids);
    free(st);
    mm_engine_close(e);

    e = open_sized(0, MM_BACKEND_CUDA, 16, 0.5);
    ck_assert_int_eq(e->opt.max_seqs, 16);
    mm_engine_close(e);

    e = open_sized(1, MM_BACKEND_CUDA_FP32, 4096, 2e-5);
    const int32_t nh = e->opt.max_seqs;
    ck_assert_msg(nh >= 1 && nh < 4096, "%d hybrid slots", nh);
    for (int s = 0; s < 2; s++)
        if (e->kv[s])
            ck_assert_msg(e->kv_blocks[s] > 0 && e->kv_blocks[s] % nh == 0,
                          "stack %d: %lld blocks for %d slots", s, (long long)e->kv_blocks[s], nh);
    printf("memory sizing: 2e-5 holds %d tiny-hybrid slots, KV %lld+%lld blocks\n", nh,
           (long long)e->kv_blocks[0], (long long)e->kv_blocks[1]);
    mm_engine_close(e);

    e = open_sized(0, MM_BACKEND_CPU, 3, 1e-9);
    ck_assert_int_eq(e->opt.max_seqs, 3);
    mm_engine_close(e);
}
END_TEST

/* ---- flash prefill attention (flash.cu) --------------------------------------------- */

/* Shapes for the tensor-core kernel: head dim, heads, kv heads (GQA ratio
 * heads / kv), on a tiny preset's layout (both stacks; hidden = heads * d). */
#define N_FLASH 8
static const struct {
    const char *preset;
    int64_t d, nh, kv;
} flash_cfg[N_FLASH] = {
    {"tiny-teacher", 64, 4, 4},  {"tiny-teacher", 64, 8, 4},  {"tiny-teacher", 64, 8, 2},
    {"tiny-teacher", 128, 2, 2}, {"tiny-teacher", 128, 4, 2}, {"tiny-teacher", 128, 4, 1},
    {"tiny-hybrid", 128, 4, 2},  {"tiny-hybrid", 64, 8, 2},
};
static char flash_dirs[N_FLASH][256];

static void make_flash_models(void)
{
    for (int m = 0; m < N_FLASH; m++) {
        struct mm_config cfg;
        struct mm_err err;
        const struct mm_synthetic_options opt = {.seed = 11 + (uint64_t)m, .shards = 1};
        mm_test_tmpdir(flash_dirs[m], sizeof flash_dirs[m]);
        ck_assert_msg(mm_synthetic_preset(flash_cfg[m].preset, &cfg, &err) == MM_OK, "%s", err.msg);
        for (int s = 0; s < 2; s++) {
            struct mm_stack_config *sc = s ? &cfg.llm : &cfg.emb;
            sc->heads = flash_cfg[m].nh, sc->kv_heads = flash_cfg[m].kv;
            sc->head_dim = flash_cfg[m].d, sc->hidden = sc->heads * sc->head_dim;
            sc->intermediate = 256;
        }
        ck_assert_msg(mm_synthetic_write(flash_dirs[m], &cfg, &opt, &err) == MM_OK, "%s", err.msg);
    }
}

static void remove_flash_models(void)
{
    for (int m = 0; m < N_FLASH; m++)
        mm_test_rmdir(flash_dirs[m]);
}

/* The ragged batch: 9 sequences (one slot each) of these lengths, over these histories. */
enum { FL_SEQS = 9, FL_TOK = 1600, FL_CTX = 1600 };
#define FL_BPT ((FL_CTX + MM_KV_BLOCK - 1) / MM_KV_BLOCK)
static const int64_t flash_len[FL_SEQS] = {1, 2, 63, 64, 65, 127, 128, 129, 1000};
static const int64_t flash_hist[3] = {0, 1, 500};

/* kind 0: CPU; 1: CUDA bf16 with every span on flash.cu; 2: CUDA bf16 without it */
static struct mm_backend open_flash_backend(const struct model *md, int kind)
{
    struct mm_backend b;
    struct mm_err err;
    struct mm_backend_limits lim = {.n_slots = FL_SEQS,
                                    .max_tokens = FL_TOK,
                                    .max_tiles = 1,
                                    .max_context = FL_CTX,
                                    .state_fp32 = true};
    lim.n_kv_blocks[0] = lim.n_kv_blocks[1] = (int64_t)FL_SEQS * FL_BPT;
    if (kind == 0) {
        ck_assert_int_eq(mm_cpu_backend_create(2, &b, &err), MM_OK);
    } else {
        setenv("MMMAMBA_CUDA_FLASH", kind == 1 ? "1" : "0", 1);
        ck_assert_msg(mm_cuda_backend_create(false, &b, &err) == MM_OK, "%s", err.msg);
        unsetenv("MMMAMBA_CUDA_FLASH");
    }
    ck_assert_msg(b.ops->load(b.ctx, &md->cfg, &md->w, &lim, &err) == MM_OK, "%s", err.msg);
    return b;
}

/* The first attention layer of each stack on the ragged batch, after a
 * round that writes the histories (its spans of 1 and 500 rows also go
 * through the kernel), all rows' logits; then a decode step of every
 * sequence (one token each over 2 to 1,501 keys: mm_k_attend_decode with
 * flash on, the split kernel with it off). Tolerances, of the largest logit:
 * 3e-2 against the CPU (every bf16 op's bound in this suite: bf16 weights
 * and activations, 8 significant bits, through the q/k/v and o
 * projections, RMSNorm and the LM head); 1e-2 against the split kernel,
 * which shares every rounding but flash's own: P rounded to bf16 before
 * P.V (relative 2^-9 per weight, averaging out over the keys) and the order
 * of the fp32 sums. */
START_TEST(test_flash_ops)
{
    const int m = _i;
    struct model md;
    struct mm_err err;
    ck_assert_msg(mm_config_load(flash_dirs[m], &md.cfg, &err) == MM_OK &&
                      mm_safetensors_open_dir(flash_dirs[m], &md.st, &err) == MM_OK &&
                      mm_weights_bind(&md.cfg, md.st, &md.w, &err) == MM_OK,
                  "%s", err.msg);
    struct mm_backend be[3] = {open_flash_backend(&md, 0), open_flash_backend(&md, 1),
                               open_flash_backend(&md, 2)};
    const int64_t H = md.cfg.llm.hidden, V = md.cfg.vocab_size;
    struct mm_act *x[3];
    float *lg[3];
    for (int k = 0; k < 3; k++) {
        x[k] = be[k].ops->act_alloc(be[k].ctx, FL_TOK, H);
        lg[k] = malloc((size_t)(FL_TOK * V) * sizeof *lg[k]);
    }
    int64_t *rows = malloc((size_t)FL_TOK * sizeof *rows);
    for (int64_t i = 0; i < FL_TOK; i++)
        rows[i] = i;
    /* block tables back to front and interleaved across slots */
    static int32_t tables[FL_SEQS][FL_BPT];
    for (int sl = 0; sl < FL_SEQS; sl++)
        for (int i = 0; i < FL_BPT; i++)
            tables[sl][i] = (int32_t)((FL_BPT - 1 - i) * FL_SEQS + sl);
    for (int k = 0; k < 3; k++)
        for (int sl = 0; sl < FL_SEQS; sl++)
            be[k].ops->slot_reset(be[k].ctx, sl);
    double worst_cpu = 0, worst_split = 0;
    for (int round = 0; round < 3; round++) {
        struct mm_span spans[FL_SEQS];
        int n = 0;
        int64_t T = 0;
        for (int i = 0; i < FL_SEQS; i++) {
            const int64_t hist = flash_hist[i % 3];
            /* round 2: one decode token per sequence after both */
            const int64_t len = round == 0 ? hist : round == 1 ? flash_len[i] : 1;
            const int64_t pos = round == 0 ? 0 : round == 1 ? hist : hist + flash_len[i];
            if (len == 0)
                continue;
            spans[n++] = (struct mm_span){i, T, len, pos, tables[i]};
            T += len;
        }
        int32_t *ids = malloc((size_t)T * sizeof *ids);
        for (int64_t i = 0; i < T; i++)
            ids[i] = (int32_t)((i * 7919 + round * 31) % md.cfg.llm_vocab_size);
        for (int s = 0; s < 2; s++) {
            const struct mm_stack_config *sc = s ? &md.cfg.llm : &md.cfg.emb;
            int l = 0;
            while (l < (int)sc->num_layers && sc->kinds[l] != MM_LAYER_MHA)
                l++;
            if (l == (int)sc->num_layers)
                continue;
            for (int k = 0; k < 3; k++) {
                be[k].ops->embed_tokens(be[k].ctx, ids, T, x[k], 0);
                be[k].ops->attention(be[k].ctx, (enum mm_stack)s, l, x[k], spans, n);
                be[k].ops->logits(be[k].ctx, x[k], rows, (int)T, lg[k]);
                check_status(&be[k]);
            }
            const double ec = rel_err(lg[0], lg[1], T * V), es = rel_err(lg[2], lg[1], T * V);
            ck_assert_msg(ec <= 3e-2, "d %lld heads %lld/%lld round %d stack %d: vs CPU %.3g",
                          (long long)flash_cfg[m].d, (long long)flash_cfg[m].nh,
                          (long long)flash_cfg[m].kv, round, s, ec);
            ck_assert_msg(es <= 1e-2, "d %lld heads %lld/%lld round %d stack %d: vs split %.3g",
                          (long long)flash_cfg[m].d, (long long)flash_cfg[m].nh,
                          (long long)flash_cfg[m].kv, round, s, es);
            worst_cpu = fmax(worst_cpu, ec);
            worst_split = fmax(worst_split, es);
        }
        free(ids);
    }
    printf("flash %s d=%lld heads %lld/%lld: bf16 op vs CPU %.2e, vs the split kernel %.2e of "
           "the largest logit\n",
           flash_cfg[m].preset, (long long)flash_cfg[m].d, (long long)flash_cfg[m].nh,
           (long long)flash_cfg[m].kv, worst_cpu, worst_split);
    for (int k = 0; k < 3; k++) {
        free(lg[k]);
        be[k].ops->destroy(be[k].ctx);
    }
    free(rows);
    mm_safetensors_close(md.st);
}
END_TEST

/* Whole model in bf16 through the engine, with the default threshold (spans
 * of 64 rows and more on flash.cu) and with MMMAMBA_CUDA_FLASH=0, both against
 * the CPU backend (fp32): a 700-token prompt in one piece and in pieces of 150
 * (a history under each piece), then greedy decoding. Random tiny models
 * amplify bf16 rounding over their layers (flash rounds P to bf16 for the
 * tensor cores, the split kernel keeps it fp32), so the bound is relative to
 * the serving path without flash: flash's prompt logits within twice the split
 * path's error against the CPU (or 2e-2 of the largest logit, whichever is
 * larger), and its greedy tokens equal the CPU's until a step whose top-2
 * margin is inside twice that bound. */
START_TEST(test_flash_model)
{
    const int m = _i == 0 ? 6 : _i == 1 ? 7 : 2; /* hybrid d=128, hybrid d=64, teacher d=64 */
    struct mm_engine *cpu = open_engine_dir(flash_dirs[m], MM_BACKEND_CPU, 2, 1200);
    struct mm_engine *on = open_engine_dir(flash_dirs[m], MM_BACKEND_CUDA, 2, 1200);
    setenv("MMMAMBA_CUDA_FLASH", "0", 1);
    struct mm_engine *off = open_engine_dir(flash_dirs[m], MM_BACKEND_CUDA, 2, 1200);
    unsetenv("MMMAMBA_CUDA_FLASH");
    const int64_t V = on->cfg.vocab_size;
    float *lg[3];
    int32_t tk[3][GEN];
    for (int k = 0; k < 3; k++)
        lg[k] = malloc((size_t)((GEN + 1) * V) * sizeof(float));
    for (int variant = 0; variant < 2; variant++) {
        int64_t n;
        int32_t *ids = make_prompt(&on->cfg, 700, 0, &n, 901u + (uint32_t)variant);
        struct mm_engine *eng[3] = {cpu, on, off};
        for (int k = 0; k < 3; k++)
            run_greedy(eng[k], ids, n, NULL, 0, variant ? 150 : 0, GEN, lg[k], tk[k]);
        const double e_on = rel_err(lg[0], lg[1], V), e_off = rel_err(lg[0], lg[2], V);
        const double bound = fmax(2 * e_off, 2e-2);
        const int a_on = first_diff(tk[0], tk[1]), a_off = first_diff(tk[0], tk[2]);
        printf("flash model %s d=%lld variant %d: prompt logits vs CPU: flash %.2e, split %.2e; "
               "greedy tokens equal to the CPU's: flash %d/%d, split %d/%d\n",
               flash_cfg[m].preset, (long long)flash_cfg[m].d, variant, e_on, e_off, a_on, GEN,
               a_off, GEN);
        ck_assert_msg(e_on <= bound, "%s d=%lld variant %d: flash %.3g vs CPU, split %.3g",
                      flash_cfg[m].preset, (long long)flash_cfg[m].d, variant, e_on, e_off);
        if (a_on < GEN) {
            const double margin = top2_margin(lg[0] + (int64_t)a_on * V, V);
            ck_assert_msg(margin <= 2 * bound,
                          "%s d=%lld variant %d: token %d differs from the CPU's with a margin of "
                          "%.3g",
                          flash_cfg[m].preset, (long long)flash_cfg[m].d, variant, a_on, margin);
        }
        free(ids);
    }
    for (int k = 0; k < 3; k++)
        free(lg[k]);
    mm_engine_close(cpu);
    mm_engine_close(on);
    mm_engine_close(off);
}
END_TEST

int main(void)
{
    if (!have_gpu()) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    Suite *s = suite_create("cuda_backend");
    /* three cases, so CK_RUN_CASE=ops|model|flash can pick one (compute-sanitizer runs) */
    TCase *ops = tcase_create("ops"), *model = tcase_create("model"),
          *flash = tcase_create("flash");
    tcase_add_unchecked_fixture(ops, make_models, remove_models);
    tcase_add_unchecked_fixture(model, make_models, remove_models);
    tcase_set_timeout(ops, 600);
    tcase_set_timeout(model, 600);
    tcase_add_loop_test(ops, test_ops_vs_cpu, 0, N_MODELS * N_SCANS);
    tcase_add_loop_test(ops, test_decode_ops_bf16, 0, 3 * N_MODELS);
    tcase_add_loop_test(ops, test_prefill_ops_bf16, 0, N_MODELS);
    tcase_add_test(ops, test_slots_and_status);
    tcase_add_test(ops, test_sample_vs_cpu);
    tcase_add_loop_test(model, test_model_vs_cpu, 0, N_MODELS);
    tcase_add_loop_test(model, test_batched_equals_alone, 0, N_MODELS);
    tcase_add_loop_test(model, test_graph_buckets, 0, N_MODELS);
    tcase_add_loop_test(model, test_overlap, 0, 2 * N_MODELS);
    tcase_add_test(model, test_memory_sizing);
    tcase_add_unchecked_fixture(flash, make_flash_models, remove_flash_models);
    tcase_set_timeout(flash, 600);
    tcase_add_loop_test(flash, test_flash_ops, 0, N_FLASH);
    tcase_add_loop_test(flash, test_flash_model, 0, 3);
    suite_add_tcase(s, ops);
    suite_add_tcase(s, model);
    suite_add_tcase(s, flash);
    return mm_test_run_nofork(s);
}
