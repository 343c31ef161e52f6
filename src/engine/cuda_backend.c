/* cuda_backend.c: the CUDA backend (see cuda_backend.h): the ops of
 * backend.h on one GPU, weights resident, kernels in kernels/, GEMMs through
 * cuBLASLt.
 *
 * Design: one element type per backend for weights and activations: bf16
 * (serving) or float (the exact mode the tests compare with the CPU
 * reference); norms, the conv, the scan and attention's softmax compute in
 * fp32 whatever that type. Everything is enqueued on one stream and nothing
 * synchronises inside a step except reading results (logits, samples, saved
 * slots). Host data a kernel needs (token ids, span metadata, tiles) is
 * staged through pinned buffers: a bump arena that is rewound only at a
 * synchronisation point, and per-stack span metadata rebuilt when a stack's
 * layer 0 runs (every step starts there) and reused by its other layers.
 *
 * Files (cuda_internal.h): this one (memory, load, the ops), cuda_gemm.c (the
 * GEMM paths and the load-time choice), cuda_steps.c (span metadata, graphs).
 *
 * Memory: per slot one contiguous block of recurrent state, the same layout
 * as the CPU backend (every mamba2 layer: conv [C] then ssm [heads][d][d]),
 * float or bf16 (state_fp32); KV blocks per stack in the CPU layout; scratch
 * sized once from the limits. */
#include "engine/cuda_backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "base/checked.h"
#include "base/dtype.h"
#include "base/log.h"
#include "engine/cpu_kernels.h"
#include "engine/cuda_internal.h"
#include "kernels.h"

_Static_assert(MM_K_KV_BLOCK == MM_KV_BLOCK, "kernels.h and backend.h disagree on the KV block");

void mm_cuda_prof_begin(struct cu_ctx *c)
{
    if (c->prof)
        cudaEventRecord(c->pe0, c->stream);
}

void mm_cuda_prof_end(struct cu_ctx *c, const char *name)
{
    if (!c->prof)
        return;
    float ms = 0;
    cudaEventRecord(c->pe1, c->stream);
    cudaEventSynchronize(c->pe1);
    cudaEventElapsedTime(&ms, c->pe0, c->pe1);
    int i = 0;
    while (i < c->n_prof && strcmp(c->prof_tab[i].name, name) != 0)
        i++;
    if (i == c->n_prof) {
        if (c->n_prof == 64)
            return;
        snprintf(c->prof_tab[c->n_prof++].name, sizeof c->prof_tab[0].name, "%s", name);
    }
    c->prof_tab[i].ms += ms;
    c->prof_tab[i].calls++;
}

static void prof_print(const struct cu_ctx *c)
{
    double total = 0;
    for (int i = 0; i < c->n_prof; i++)
        total += c->prof_tab[i].ms;
    fprintf(stderr, "cuda profile (GPU time per kernel group, %.1f ms in all):\n", total);
    for (int i = 0; i < c->n_prof; i++)
        fprintf(stderr, "  %-40s %10.3f ms %8lld calls %9.1f us/call %5.1f%%\n",
                c->prof_tab[i].name, c->prof_tab[i].ms, (long long)c->prof_tab[i].calls,
                c->prof_tab[i].ms * 1e3 / (double)c->prof_tab[i].calls,
                100 * c->prof_tab[i].ms / (total > 0 ? total : 1));
}

/* ---- errors -------------------------------------------------------------------------- */

void mm_cuda_fail(struct cu_ctx *c, const char *what, const char *why)
{
    if (c->st != MM_OK)
        return;
    c->st = MM_ERR_BACKEND;
    snprintf(c->msg, sizeof c->msg, "cuda backend: %s: %s", what, why);
}

/* Records the first CUDA failure; true when e is a failure. */
bool mm_cuda_check(struct cu_ctx *c, cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return false;
    mm_cuda_fail(c, what, cudaGetErrorName(e));
    return true;
}

bool mm_cuda_lt_check(struct cu_ctx *c, cublasStatus_t s, const char *what)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return false;
    char why[64];
    snprintf(why, sizeof why, "cuBLASLt status %d", (int)s);
    mm_cuda_fail(c, what, why);
    return true;
}

/* ---- device memory ------------------------------------------------------------------- */

static void *dev_alloc(struct cu_ctx *c, size_t bytes)
{
    if (c->n_allocs == c->cap_allocs) {
        const int ncap = c->cap_allocs ? 2 * c->cap_allocs : 512;
        void **na = realloc(c->allocs, (size_t)ncap * sizeof *na);
        if (!na)
            return NULL;
        c->allocs = na;
        c->cap_allocs = ncap;
    }
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        (void)cudaGetLastError(); /* out of memory is not sticky */
        return NULL;
    }
    c->allocs[c->n_allocs++] = p;
    return p;
}

/* rows x cols elements of esz bytes, zeroed; NULL on overflow or out of memory. */
static void *dev_array(struct cu_ctx *c, int64_t rows, int64_t cols, size_t esz)
{
    size_t n, bytes;
    if (rows < 0 || cols < 0 || !mm_size_mul((size_t)rows, (size_t)cols, &n) ||
        !mm_size_mul(n ? n : 1, esz, &bytes))
        return NULL;
    void *p = dev_alloc(c, bytes);
    if (p && (cudaMemsetAsync(p, 0, bytes, c->stream) != cudaSuccess ||
              cudaStreamSynchronize(c->stream) != cudaSuccess))
        return NULL;
    return p;
}

/* Copies tensor t (any float dtype) into dst as the element type (f32 or
 * bf16). Every copy is ordered on the backend's stream (a plain cudaMemcpy
 * may return before its DMA lands, and the stream does not wait for it). */
static bool upload_into(struct cu_ctx *c, const struct mm_tensor *t, void *dst, bool f32)
{
    if ((!f32 && t->dtype == MM_DTYPE_BF16) || (f32 && t->dtype == MM_DTYPE_F32))
        return cudaMemcpyAsync(dst, t->data, t->nbytes, cudaMemcpyHostToDevice, c->stream) ==
                   cudaSuccess &&
               cudaStreamSynchronize(c->stream) == cudaSuccess;
    /* raw bytes to the staging buffer, converted on the device */
    if ((int64_t)t->nbytes > c->stage_bytes) {
        void *p = NULL;
        if (cudaStreamSynchronize(c->stream) != cudaSuccess ||
            cudaMalloc(&p, t->nbytes) != cudaSuccess)
            return false;
        if (c->s_stage)
            cudaFree(c->s_stage);
        c->s_stage = p;
        c->stage_bytes = (int64_t)t->nbytes;
    }
    return cudaMemcpyAsync(c->s_stage, t->data, t->nbytes, cudaMemcpyHostToDevice, c->stream) ==
               cudaSuccess &&
           mm_k_convert(c->stream, c->s_stage, t->dtype, dst, f32, t->numel) == cudaSuccess &&
           cudaStreamSynchronize(c->stream) == cudaSuccess;
}

/* A weight matrix in the backend's element type. */
static void *up_matrix(struct cu_ctx *c, const struct mm_tensor *t)
{
    if (!t)
        return NULL;
    void *p = dev_alloc(c, (size_t)t->numel * c->esz);
    return p && upload_into(c, t, p, c->f32) ? p : NULL;
}

/* A small vector as float (converted on the host). */
static float *up_floats(struct cu_ctx *c, const float *h, int64_t n)
{
    float *p = dev_alloc(c, (size_t)n * sizeof(float));
    if (p && (cudaMemcpyAsync(p, h, (size_t)n * sizeof(float), cudaMemcpyHostToDevice, c->stream) !=
                  cudaSuccess ||
              cudaStreamSynchronize(c->stream) != cudaSuccess))
        return NULL;
    return p;
}

static float *up_vec(struct cu_ctx *c, const struct mm_tensor *t, bool neg_exp)
{
    if (!t)
        return NULL;
    float *h = malloc((size_t)t->numel * sizeof *h);
    if (!h)
        return NULL;
    mm_dtype_to_f32(t->dtype, t->data, h, t->numel);
    if (neg_exp)
        for (int64_t i = 0; i < t->numel; i++)
            h[i] = -expf(h[i]); /* A_h = -exp(A_log_bias_h) */
    float *p = up_floats(c, h, t->numel);
    free(h);
    return p;
}

/* ---- staging ------------------------------------------------------------------------- */

/* Copies bytes of host data to the device (stream-ordered); the returned
 * device pointer is valid for kernels enqueued after this call. NULL (and a
 * recorded failure) when it cannot fit. */
static void *stage(struct cu_ctx *c, const void *h, size_t bytes)
{
    const size_t need = (bytes + 255) & ~(size_t)255;
    if (need > c->arena_cap) {
        mm_cuda_fail(c, "staging", "upload larger than the staging arena");
        return NULL;
    }
    if (c->arena_used + need > c->arena_cap) { /* rewind once the copies are done */
        if (mm_cuda_check(c, cudaStreamSynchronize(c->stream), "staging sync"))
            return NULL;
        c->arena_used = 0;
    }
    uint8_t *hp = c->h_arena + c->arena_used, *dp = c->d_arena + c->arena_used;
    c->arena_used += need;
    memcpy(hp, h, bytes);
    if (mm_cuda_check(c, cudaMemcpyAsync(dp, hp, bytes, cudaMemcpyHostToDevice, c->stream),
                      "upload"))
        return NULL;
    return dp;
}

/* Waits for the stream; everything staged is consumed, so the arena rewinds. */
static bool sync_stream(struct cu_ctx *c, const char *what)
{
    if (mm_cuda_check(c, cudaStreamSynchronize(c->stream), what))
        return false;
    c->arena_used = 0;
    return true;
}

/* ---- load ---------------------------------------------------------------------------- */

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

static bool load_layer(struct cu_ctx *c, const struct mm_stack_config *sc,
                       const struct mm_layer_weights *lw, struct cu_layer *l)
{
    const int64_t F = sc->intermediate, H = sc->hidden;
    l->kind = lw->kind;
    if (!(l->attn_norm = up_vec(c, lw->attention_norm, false)) ||
        !(l->ffn_norm = up_vec(c, lw->ffn_norm, false)) ||
        !(l->w13 = dev_alloc(c, (size_t)(2 * F * H) * c->esz)) ||
        !upload_into(c, lw->w1, l->w13, c->f32) ||
        !upload_into(c, lw->w3, (char *)l->w13 + (size_t)(F * H) * c->esz, c->f32) ||
        !(l->w2 = up_matrix(c, lw->w2)))
        return false;
    if (lw->kind == MM_LAYER_MHA)
        return (l->wqkv = up_matrix(c, lw->wqkv)) && (l->wo = up_matrix(c, lw->wo));
    return (l->wz = up_matrix(c, lw->wvkqgdt)) && (l->conv_w = up_vec(c, lw->conv_w, false)) &&
           (l->conv_b = up_vec(c, lw->conv_b, false)) &&
           (l->dt_bias = up_vec(c, lw->dt_bias, false)) && (l->A = up_vec(c, lw->A_log, true)) &&
           (l->gnorm = up_vec(c, lw->gnorm, false)) && (l->o_proj = up_matrix(c, lw->o_proj));
}

/* Position embedding [P*P, H] as float: the stored grid without slot 0,
 * bicubic-resized on the host by the CPU twin when it is not P x P. */
static bool load_pos(struct cu_ctx *c, const struct mm_weights *w)
{
    const int64_t H = c->cfg.llm.hidden, P = c->cfg.patches_per_side;
    float *grid = malloc((size_t)w->pos_emb->numel * sizeof *grid);
    float *resized = malloc((size_t)(P * P * H) * sizeof *resized);
    bool ok = grid && resized;
    if (ok) {
        mm_dtype_to_f32(w->pos_emb->dtype, w->pos_emb->data, grid, w->pos_emb->numel);
        if (w->pos_grid == P)
            memcpy(resized, grid + H, (size_t)(P * P * H) * sizeof *resized);
        else
            mm_cpu_bicubic_grid(grid + H, w->pos_grid, H, P, resized);
        ok = (c->pos = up_floats(c, resized, P * P * H)) != NULL;
    }
    free(grid);
    free(resized);
    return ok;
}

static bool alloc_meta(struct cu_ctx *c, struct cu_meta *m, int64_t bpt)
{
    const int64_t T = max64(c->lim.max_tokens, 1), S = c->lim.n_slots + 1; /* + the pad slot */
    const int64_t blk_cap = bpt * S;
    const int64_t F = T / MM_K_FLASH_ROWS + S; /* at most this many flash tiles */
    m->bpt = bpt;
    m->blk_cap = blk_cap;
    m->last = calloc((size_t)S, sizeof *m->last);
    return m->last && cudaMallocHost((void **)&m->h_spans, (size_t)S * sizeof *m->h_spans) == 0 &&
           cudaMallocHost((void **)&m->h_part, (size_t)S * sizeof *m->h_part) == 0 &&
           (m->d_part = dev_array(c, S, 1, sizeof *m->d_part)) &&
           cudaMallocHost((void **)&m->h_tok, (size_t)T * sizeof *m->h_tok) == 0 &&
           cudaMallocHost((void **)&m->h_ftile, (size_t)(2 * F) * sizeof *m->h_ftile) == 0 &&
           (m->d_ftile = dev_array(c, 2 * F, 1, sizeof *m->d_ftile)) &&
           cudaMallocHost((void **)&m->h_blk, (size_t)max64(blk_cap, 1) * sizeof *m->h_blk) == 0 &&
           (m->d_spans = dev_array(c, S, 1, sizeof *m->d_spans)) &&
           (m->d_tok = dev_array(c, T, 1, sizeof *m->d_tok)) &&
           (m->d_blk = dev_array(c, max64(blk_cap, 1), 1, sizeof *m->d_blk)) &&
           cudaEventCreateWithFlags(&m->copied, cudaEventDisableTiming) == 0;
}

/* Times the token-sequential scan against the chunked one on one sequence of
 * n tokens with the model's heads (inputs as they are: the time does not
 * depend on the values) and sets scan_min to the shortest n from which the
 * chunked scan is faster at every longer n measured. Uses slot 0's state and
 * zeroes it after. */
static void choose_scan(struct cu_ctx *c)
{
    c->scan_min = c->scan_force > 0 ? c->scan_force : INT64_MAX;
    const struct mm_stack_config *sc = NULL;
    const struct cu_layer *l = NULL;
    for (int s = 1; s >= 0 && !l; s--)
        for (int64_t i = 0; i < c->stacks[s].cfg->num_layers && !l; i++)
            if (c->stacks[s].layers[i].kind == MM_LAYER_MAMBA2) {
                sc = c->stacks[s].cfg;
                l = &c->stacks[s].layers[i];
            }
    /* the chunked kernels for the head dim of every stack with Mamba-2 layers, or none */
    c->ssd_ok = l != NULL;
    for (int s = 0; s < 2 && c->ssd_ok; s++) {
        bool mamba = false;
        for (int64_t i = 0; i < c->stacks[s].cfg->num_layers; i++)
            mamba = mamba || c->stacks[s].layers[i].kind == MM_LAYER_MAMBA2;
        c->ssd_ok = !mamba || mm_k_ssd_prepare(c->f32, c->stacks[s].cfg->head_dim) == cudaSuccess;
    }
    (void)cudaGetLastError();
    if (!c->ssd_ok) {
        c->scan_min = INT64_MAX;
        if (l)
            MM_INFO("cuda backend: scan: token-sequential only (no chunked kernel for head dim "
                    "%lld on this GPU)",
                    (long long)sc->head_dim);
        return;
    }
    if (c->scan_force > 0) {
        MM_INFO("cuda backend: scan: chunked from %lld tokens (MMMAMBA_CUDA_SCAN)",
                (long long)c->scan_min);
        return;
    }
    const int64_t d = sc->head_dim, nh = sc->heads, kvh = sc->kv_heads;
    const int64_t C = 2 * kvh * d + nh * d, Z = C + nh * d + nh;
    const struct mm_kstate st = {c->state, c->state_elems, l->state_off, c->lim.state_fp32};
    const int64_t lens[] = {16, 32, 64, 128, 256, 512, 1024};
    const int n_lens = (int)(sizeof lens / sizeof lens[0]), reps = 5;
    bool wins[sizeof lens / sizeof lens[0]] = {false};
    cudaEvent_t e0, e1;
    if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess)
        return;
    char line[384];
    int at = snprintf(line, sizeof line, "scan (sequential/chunked us per layer, one sequence):");
    int measured = 0;
    for (int i = 0; i < n_lens && lens[i] <= c->lim.max_tokens && c->st == MM_OK; i++) {
        const struct mm_kspan ks = {0, lens[i], 0, 0, 0, 0};
        const struct mm_kspan *dks = stage(c, &ks, sizeof ks);
        float t[2] = {0, 0};
        for (int impl = 0; impl < 2 && dks; impl++) {
            for (int r = 0; r < reps + 1; r++) {
                if (r == 1)
                    cudaEventRecord(e0, c->stream);
                mm_cuda_check(
                    c,
                    impl == 0
                        ? mm_k_ssm_scan(c->stream, c->s_conv, C, c->s_z, c->f32, Z, C + nh * d, dks,
                                        1, nh, kvh, d, l->dt_bias, l->A, st, c->s_y)
                        : mm_k_ssd_scan(c->stream, c->s_conv, C, c->s_z, c->f32, Z, C + nh * d, dks,
                                        1, nh, kvh, d, l->dt_bias, l->A, st, c->s_y),
                    "scan choice");
            }
            cudaEventRecord(e1, c->stream);
            cudaEventSynchronize(e1);
            cudaEventElapsedTime(&t[impl], e0, e1);
        }
        wins[i] = t[1] < t[0];
        measured = i + 1;
        at +=
            snprintf(line + at, sizeof line - (size_t)(at < (int)sizeof line ? at : 0),
                     " %lld: %.1f/%.1f", (long long)lens[i], t[0] * 1e3 / reps, t[1] * 1e3 / reps);
        if (at >= (int)sizeof line)
            at = (int)sizeof line - 1;
    }
    for (int i = measured - 1; i >= 0 && wins[i]; i--)
        c->scan_min = lens[i];
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    mm_cuda_check(c, cudaMemsetAsync(c->state, 0, (size_t)c->state_elems * c->state_esz, c->stream),
                  "scan choice");
    mm_cuda_check(c, cudaStreamSynchronize(c->stream), "scan choice");
    if (c->scan_min == INT64_MAX)
        MM_INFO("cuda backend: %s; chunked for no span", line);
    else
        MM_INFO("cuda backend: %s; chunked from %lld tokens", line, (long long)c->scan_min);
}

/* Device bytes one slot takes: its state, token counts and metadata (span
 * entries, a row of each block table), and its KV blocks when they come
 * with it (kv_blocks_per_slot). */
static size_t slot_device_bytes(const struct cu_ctx *c)
{
    const int64_t bpt = (c->lim.max_context + MM_KV_BLOCK - 1) / MM_KV_BLOCK;
    size_t b = (size_t)c->state_elems * c->state_esz +
               (size_t)c->cfg.vocab_size * sizeof(uint32_t) + sizeof(int32_t);
    for (int s = 0; s < 2; s++) {
        b += 2 * sizeof(struct mm_kspan);
        if (c->lim.n_kv_blocks[s] > 0 && c->block_elems[s] > 0)
            b += (size_t)bpt * sizeof(int32_t) +
                 (size_t)c->lim.kv_blocks_per_slot[s] * (size_t)c->block_elems[s] * c->esz;
    }
    return b;
}

/* mem_fraction > 0: as many slots (at most the n_slots asked) as fit in
 * that fraction of the device memory left now (after the weights and the
 * scratch), with the KV blocks that come per slot; logged in one line. */
static enum mm_status size_slots(struct cu_ctx *c, struct mm_err *err)
{
    size_t free_b = 0, total = 0;
    if (cudaMemGetInfo(&free_b, &total) != cudaSuccess) {
        (void)cudaGetLastError();
        return mm_err_set(err, MM_ERR_BACKEND, "cuda backend: cannot read the free memory");
    }
    const double budget = c->lim.mem_fraction * (double)free_b;
    /* fixed: the pad slot, the KV blocks given outright, a pad block per stack */
    double fixed = (double)c->state_elems * (double)c->state_esz;
    for (int s = 0; s < 2; s++)
        if (c->lim.n_kv_blocks[s] > 0 && c->block_elems[s] > 0)
            fixed += (double)((c->lim.kv_blocks_per_slot[s] > 0 ? 0 : c->lim.n_kv_blocks[s]) + 1) *
                     (double)c->block_elems[s] * (double)c->esz;
    const size_t per = slot_device_bytes(c);
    const double fit = budget > fixed ? (budget - fixed) / (double)per : 0;
    const int32_t asked = c->lim.n_slots;
    const int32_t n = fit < (double)asked ? (int32_t)fit : asked;
    MM_INFO("cuda backend: memory: %.2f GB free after weights and scratch; %.0f %% of it holds "
            "%d slots of %.2f MB (asked at most %d)%s; KV %lld+%lld blocks",
            (double)free_b / 1e9, 100 * c->lim.mem_fraction, n, (double)per / 1e6, asked,
            n < asked ? "" : ", all of them",
            (long long)(c->lim.kv_blocks_per_slot[0] > 0 ? n * c->lim.kv_blocks_per_slot[0]
                                                         : c->lim.n_kv_blocks[0]),
            (long long)(c->lim.kv_blocks_per_slot[1] > 0 ? n * c->lim.kv_blocks_per_slot[1]
                                                         : c->lim.n_kv_blocks[1]));
    if (n < 1)
        return mm_err_set(err, MM_ERR_NOMEM,
                          "cuda backend: %.0f %% of the %.2f GB free after the weights and scratch "
                          "holds no sequence (one takes %.2f MB): raise the memory fraction or "
                          "lower max_tokens / max_context",
                          100 * c->lim.mem_fraction, (double)free_b / 1e9, (double)per / 1e6);
    c->lim.n_slots = n;
    for (int s = 0; s < 2; s++)
        if (c->lim.kv_blocks_per_slot[s] > 0)
            c->lim.n_kv_blocks[s] = (int64_t)n * c->lim.kv_blocks_per_slot[s];
    return MM_OK;
}

static void cu_limits(void *vctx, struct mm_backend_limits *out)
{
    const struct cu_ctx *c = vctx;
    *out = c->lim;
}

static enum mm_status cu_load(void *vctx, const struct mm_config *cfg, const struct mm_weights *w,
                              const struct mm_backend_limits *lim, struct mm_err *err)
{
    struct cu_ctx *c = vctx;
    cudaSetDevice(c->device);
    c->cfg = *cfg;
    c->lim = *lim;
    c->stacks[MM_STACK_EMB].cfg = &c->cfg.emb;
    c->stacks[MM_STACK_LLM].cfg = &c->cfg.llm;
    const int64_t H = cfg->llm.hidden, P = cfg->patches_per_side;
    size_t free0 = 0, total = 0;
    cudaMemGetInfo(&free0, &total);
    bool ok =
        (c->patch_w = up_matrix(c, w->patch_w)) && (c->patch_b = up_vec(c, w->patch_b, false)) &&
        (c->sh_w1 = up_matrix(c, w->shuffle_w1)) && (c->sh_b1 = up_vec(c, w->shuffle_b1, false)) &&
        (c->sh_w2 = up_matrix(c, w->shuffle_w2)) && (c->sh_b2 = up_vec(c, w->shuffle_b2, false)) &&
        (c->text_emb = up_matrix(c, w->text_emb)) && (c->norm = up_vec(c, w->norm, false)) &&
        (c->output = up_matrix(c, w->output)) && load_pos(c, w);
    if (ok && w->special_emb) {
        ok = (c->special_emb = up_matrix(c, w->special_emb)) != NULL;
        c->n_special = w->special_emb->shape[0];
    }
    c->state_esz = lim->state_fp32 ? sizeof(float) : 2;
    for (int s = 0; ok && s < 2; s++) {
        const struct mm_stack_config *sc = s == MM_STACK_EMB ? &cfg->emb : &cfg->llm;
        const struct mm_layer_weights *lws = s == MM_STACK_EMB ? w->emb_layers : w->llm_layers;
        int64_t kv_off = 0;
        for (int64_t i = 0; ok && i < sc->num_layers; i++) {
            struct cu_layer *l = &c->stacks[s].layers[i];
            ok = load_layer(c, sc, &lws[i], l);
            if (l->kind == MM_LAYER_MAMBA2) {
                const int64_t C = 2 * sc->kv_heads * sc->head_dim + sc->heads * sc->head_dim;
                l->state_off = c->state_elems;
                c->state_elems += C + sc->heads * sc->head_dim * sc->head_dim;
            } else {
                l->kv_off = kv_off;
                kv_off += 2 * MM_KV_BLOCK * sc->kv_heads * sc->head_dim;
            }
        }
        c->block_elems[s] = kv_off;
        /* RoPE frequencies exactly as mm_cpu_rope computes them */
        const int64_t half = sc->head_dim / 2;
        float *f = malloc((size_t)max64(half, 1) * sizeof *f);
        ok = ok && f;
        for (int64_t i = 0; ok && i < half; i++)
            f[i] = 1.0f / powf((float)sc->rope_theta, (float)(2 * i) / (float)sc->head_dim);
        ok = ok && (c->stacks[s].inv_freq = up_floats(c, f, max64(half, 1)));
        free(f);
    }
    if (!ok)
        return mm_err_set(err, MM_ERR_NOMEM,
                          "cuda backend: cannot upload the weights (GPU out of memory?)");
    size_t free1 = 0;
    cudaMemGetInfo(&free1, &total);

    /* states, KV, scratch and staging, sized once */
    int64_t maxZ = 0, maxC = 0, maxHD = 0, maxF = 0, maxNH = 1, maxD = 1;
    for (int s = 0; s < 2; s++) {
        const struct mm_stack_config *sc = s == MM_STACK_EMB ? &cfg->emb : &cfg->llm;
        const int64_t hd = sc->heads * sc->head_dim, kvd = sc->kv_heads * sc->head_dim;
        maxC = max64(maxC, 2 * kvd + hd);
        maxZ = max64(maxZ, max64(2 * kvd + 2 * hd + sc->heads, hd + 2 * kvd));
        maxHD = max64(maxHD, hd);
        maxF = max64(maxF, sc->intermediate);
        maxNH = max64(maxNH, sc->heads);
        maxD = max64(maxD, sc->head_dim);
    }
    const int64_t T = max64(lim->max_tokens, 1), tiles = max64(lim->max_tiles, 1);
    const int64_t patch_in = 3 * cfg->patch_size * cfg->patch_size;
    /* scratch first (its rows of logits for at most 256 of the slots asked) */
    c->part_items = max64(T * maxNH, 65536);
    c->logit_rows = lim->n_slots < 256 ? lim->n_slots : 256;
    c->s_u = dev_array(c, T, 4 * H, c->esz);
    c->s_z = dev_array(c, T, max64(maxZ, max64(2 * maxF, H)), c->esz);
    c->s_m = dev_array(c, T, max64(maxF, max64(maxHD, H)), c->esz);
    c->s_patch = dev_array(c, tiles * P * P, patch_in, c->esz);
    c->s_conv = dev_array(c, T, maxC, sizeof(float));
    c->s_y = dev_array(c, T, maxHD, sizeof(float));
    c->s_part = dev_array(c, c->part_items, maxD + 2, sizeof(float));
    c->s_logits = dev_array(c, max64(c->logit_rows, 1), cfg->vocab_size, sizeof(float));
    c->s_work = dev_array(c, max64(c->logit_rows, 1), cfg->vocab_size, sizeof(float));
    c->d_req = dev_array(c, max64(c->logit_rows, 1), 1, sizeof *c->d_req);
    c->d_out = dev_array(c, max64(c->logit_rows, 1), 1, sizeof *c->d_out);
    const size_t tile_bytes =
        (size_t)tiles * 3 * (size_t)(cfg->force_image_size * cfg->force_image_size) * sizeof(float);
    c->arena_cap = tile_bytes + (size_t)T * 16 + ((size_t)1 << 20);
    c->d_arena = dev_alloc(c, c->arena_cap);
    c->h_tmp = malloc((size_t)max64(c->state_elems, 1) * sizeof(float));
    ok = c->s_u && c->s_z && c->s_m && c->s_patch && c->s_conv && c->s_y && c->s_part &&
         c->s_logits && c->s_work && c->d_req && c->d_out && c->d_arena && c->h_tmp &&
         cudaEventCreateWithFlags(&c->g_done, cudaEventDisableTiming) == cudaSuccess &&
         cudaMallocHost((void **)&c->h_arena, c->arena_cap) == cudaSuccess &&
         cudaMallocHost((void **)&c->h_req, (size_t)max64(c->logit_rows, 1) * sizeof *c->h_req) ==
             cudaSuccess &&
         cudaMallocHost((void **)&c->h_out, (size_t)max64(c->logit_rows, 1) * sizeof *c->h_out) ==
             cudaSuccess;
    if (ok && lim->mem_fraction > 0 && size_slots(c, err) != MM_OK)
        return err->status;
    /* then per slot (one slot and one KV block per stack more than asked:
     * the pad slot and its block, which the padding rows of a graph step
     * write) */
    const int32_t S = c->lim.n_slots;
    c->state = ok ? dev_array(c, S + 1, max64(c->state_elems, 1), c->state_esz) : NULL;
    bool kv_ok = true;
    for (int s = 0; s < 2; s++) {
        c->kv[s] = ok && c->lim.n_kv_blocks[s] > 0 && c->block_elems[s] > 0
                       ? dev_array(c, c->lim.n_kv_blocks[s] + 1, c->block_elems[s], c->esz)
                       : NULL;
        kv_ok = kv_ok && (c->kv[s] || c->lim.n_kv_blocks[s] == 0 || c->block_elems[s] == 0);
    }
    c->counts = ok ? dev_array(c, S, cfg->vocab_size, sizeof(uint32_t)) : NULL;
    c->d_ids = ok ? dev_array(c, S, 1, sizeof(int32_t)) : NULL;
    ok = ok && c->state && kv_ok && c->counts && c->d_ids &&
         cudaMallocHost((void **)&c->h_ids, (size_t)S * sizeof(int32_t)) == cudaSuccess;
    if (ok)
        memset(c->h_ids, 0, (size_t)S * sizeof(int32_t));
    for (int s = 0; ok && s < 2; s++) {
        const int64_t bpt = (lim->max_context + MM_KV_BLOCK - 1) / MM_KV_BLOCK;
        ok = alloc_meta(c, &c->stacks[s].meta, c->lim.n_kv_blocks[s] > 0 ? bpt : 0);
        /* the mirror starts unlike any table, so the first use uploads it;
         * the pad slot's table is the pad block throughout */
        struct cu_meta *m = &c->stacks[s].meta;
        if (ok && m->blk_cap > 0) {
            memset(m->h_blk, 0xff, (size_t)m->blk_cap * sizeof(int32_t));
            int32_t *pad = m->h_blk + (int64_t)S * m->bpt;
            for (int64_t i = 0; i < m->bpt; i++)
                pad[i] = (int32_t)c->lim.n_kv_blocks[s];
            ok = cudaMemcpyAsync(m->d_blk + (int64_t)S * m->bpt, pad, (size_t)m->bpt * sizeof *pad,
                                 cudaMemcpyHostToDevice, c->stream) == cudaSuccess &&
                 cudaStreamSynchronize(c->stream) == cudaSuccess;
        }
    }
    if (!ok) {
        (void)cudaGetLastError();
        return mm_err_set(err, MM_ERR_NOMEM,
                          "cuda backend: cannot allocate state/KV/scratch for %d slots, %lld+%lld "
                          "KV blocks, %lld tokens (GPU out of memory: lower the limits)",
                          S, (long long)c->lim.n_kv_blocks[0], (long long)c->lim.n_kv_blocks[1],
                          (long long)lim->max_tokens);
    }
    mm_cuda_choose_gemms(c);
    if (c->st == MM_OK)
        choose_scan(c);
    if (c->st != MM_OK)
        return mm_err_set(err, MM_ERR_BACKEND, "%s", c->msg);
    c->n_prof = 0; /* the profile covers the steps, not the load-time measurements */
    size_t free2 = 0;
    cudaMemGetInfo(&free2, &total);
    MM_INFO("cuda backend: %s, weights %.2f GB, state %.1f MB/slot x %d slots (%s), KV %lld+%lld "
            "blocks, scratch+state %.2f GB; %.1f GB of %.1f GB free; launches %s",
            c->f32 ? "fp32" : "bf16", (double)(free0 - free1) / 1e9,
            (double)c->state_elems * (double)c->state_esz / 1e6, c->lim.n_slots,
            lim->state_fp32 ? "fp32" : "bf16", (long long)c->lim.n_kv_blocks[0],
            (long long)c->lim.n_kv_blocks[1], (double)(free1 - free2) / 1e9, (double)free2 / 1e9,
            (double)total / 1e9,
            c->overlap == MM_K_OVERLAP_ALL    ? "overlapped"
            : c->overlap == MM_K_OVERLAP_GEMM ? "overlapped for GEMMs"
                                              : "serial");
    return mm_cuda_check(c, cudaDeviceSynchronize(), "load")
               ? mm_err_set(err, MM_ERR_BACKEND, "%s", c->msg)
               : MM_OK;
}

static void cu_destroy(void *vctx)
{
    struct cu_ctx *c = vctx;
    if (!c)
        return;
    cudaSetDevice(c->device);
    if (c->stream)
        cudaStreamSynchronize(c->stream);
    if (c->prof) {
        prof_print(c);
        cudaEventDestroy(c->pe0);
        cudaEventDestroy(c->pe1);
    }
    mm_cuda_gemm_free(c);
    for (int s = 0; s < 2; s++) {
        struct cu_meta *m = &c->stacks[s].meta;
        free(m->last);
        cudaFreeHost(m->h_spans);
        cudaFreeHost(m->h_part);
        cudaFreeHost(m->h_tok);
        cudaFreeHost(m->h_ftile);
        cudaFreeHost(m->h_blk);
        if (m->copied)
            cudaEventDestroy(m->copied);
    }
    for (struct mm_act *a = c->acts, *n; a; a = n) {
        n = a->next;
        free(a);
    }
    for (int i = 0; i < c->n_allocs; i++)
        cudaFree(c->allocs[i]);
    free(c->allocs);
    if (c->s_stage)
        cudaFree(c->s_stage);
    cudaFreeHost(c->h_arena);
    cudaFreeHost(c->h_req);
    cudaFreeHost(c->h_out);
    cudaFreeHost(c->h_ids);
    for (int i = 0; i < c->n_graphs; i++)
        cudaGraphExecDestroy(c->graphs[i].exec);
    if (c->g_done)
        cudaEventDestroy(c->g_done);
    free(c->h_tmp);
    if (c->lt)
        cublasLtDestroy(c->lt);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    free(c);
}

static struct mm_act *cu_act_alloc(void *vctx, int64_t rows, int64_t cols)
{
    struct cu_ctx *c = vctx;
    struct mm_act *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->data = dev_array(c, rows, cols, c->esz);
    if (!a->data) {
        free(a);
        return NULL;
    }
    a->rows = rows;
    a->cols = cols;
    a->next = c->acts;
    c->acts = a;
    return a;
}

void *mm_cuda_row_ptr(const struct cu_ctx *c, const struct mm_act *a, int64_t row)
{
    return (char *)a->data + (size_t)(row * a->cols) * c->esz;
}

/* ---- front end ------------------------------------------------------------------------ */

static void cu_embed_tokens(void *vctx, const int32_t *ids, int64_t n, struct mm_act *x,
                            int64_t row0)
{
    struct cu_ctx *c = vctx;
    if (n <= 0 || c->st != MM_OK)
        return;
    if (c->gmode != G_EAGER) { /* fixed buffers, embedded at the first mixer */
        if (c->pend && (x != c->pend_x || row0 != c->pend_row0 + c->pend_n))
            mm_cuda_embed_flush(c);
        if (!c->pend) {
            c->pend = true;
            c->pend_x = x;
            c->pend_row0 = row0;
            c->pend_n = 0;
        }
        if (c->pend_n + n > c->lim.n_slots) {
            mm_cuda_fail(c, "embed", "a decode step holds more rows than slots");
            return;
        }
        memcpy(c->h_ids + c->pend_n, ids, (size_t)n * sizeof *ids);
        c->pend_n += n;
        return;
    }
    const int32_t *d_ids = stage(c, ids, (size_t)n * sizeof *ids);
    if (d_ids)
        mm_cuda_check(c,
                      mm_k_embed(c->stream, c->f32, d_ids, n, c->text_emb, c->cfg.llm_vocab_size,
                                 c->special_emb, c->cfg.llm.hidden, mm_cuda_row_ptr(c, x, row0)),
                      "embed");
}

static void cu_vision_embed(void *vctx, const float *tiles, int64_t n_tiles, struct mm_act *out)
{
    struct cu_ctx *c = vctx;
    if (n_tiles <= 0 || !mm_cuda_op_begin(c))
        return;
    c->g_exact = c->g_exact || c->gmode == G_CAPTURE; /* never in a decode step, as it is */
    const int64_t H = c->cfg.llm.hidden, p = c->cfg.patch_size, P = c->cfg.patches_per_side;
    const int64_t S = c->cfg.force_image_size, K = 3 * p * p, rows = n_tiles * P * P;
    const float *d_tiles = stage(c, tiles, (size_t)(n_tiles * 3 * S * S) * sizeof(float));
    if (!d_tiles ||
        mm_cuda_check(c, mm_k_im2col(c->stream, c->f32, d_tiles, n_tiles, S, p, c->s_patch),
                      "im2col"))
        return;
    /* Conv2d(k=p, stride=p) as a GEMM, then + bias + position embedding */
    mm_cuda_gemm(c, c->s_patch, K, rows, K, c->patch_w, H, out->data, H, false, false);
    mm_cuda_check(
        c, mm_k_bias_act(c->stream, c->f32, out->data, rows, H, c->patch_b, c->pos, P * P, false),
        "patch bias");
}

static void cu_pixel_shuffle(void *vctx, const struct mm_act *in, int64_t in_row0, int64_t n_tiles,
                             struct mm_act *out, int64_t out_row0)
{
    struct cu_ctx *c = vctx;
    if (n_tiles <= 0 || !mm_cuda_op_begin(c))
        return;
    c->g_exact = c->g_exact || c->gmode == G_CAPTURE;
    const int64_t H = c->cfg.llm.hidden, P = c->cfg.patches_per_side;
    const int64_t n_out = n_tiles * (P / 2) * (P / 2);
    if (mm_cuda_check(c,
                      mm_k_shuffle_gather(c->stream, c->f32, mm_cuda_row_ptr(c, in, in_row0),
                                          n_tiles, P, H, c->s_u),
                      "pixel shuffle"))
        return;
    /* Linear(4H -> H) -> GELU (erf) -> Linear(H -> H) */
    mm_cuda_gemm(c, c->s_u, 4 * H, n_out, 4 * H, c->sh_w1, H, c->s_m, H, false, false);
    mm_cuda_check(c, mm_k_bias_act(c->stream, c->f32, c->s_m, n_out, H, c->sh_b1, NULL, 1, true),
                  "shuffle gelu");
    void *dst = mm_cuda_row_ptr(c, out, out_row0);
    mm_cuda_gemm(c, c->s_m, H, n_out, H, c->sh_w2, H, dst, H, false, false);
    mm_cuda_check(c, mm_k_bias_act(c->stream, c->f32, dst, n_out, H, c->sh_b2, NULL, 1, false),
                  "shuffle bias");
}

static void cu_copy_rows(void *vctx, const struct mm_act *src, int64_t src_row, struct mm_act *dst,
                         int64_t dst_row, int64_t n)
{
    struct cu_ctx *c = vctx;
    if (n <= 0 || !mm_cuda_op_begin(c))
        return;
    /* per-sequence copies ("post" models) cover only the sequences at capture */
    c->g_exact = c->g_exact || (c->gmode == G_CAPTURE && c->n_pad != c->n_real);
    const size_t bytes = (size_t)(n * src->cols) * c->esz;
    const void *s = mm_cuda_row_ptr(c, src, src_row);
    void *d = mm_cuda_row_ptr(c, dst, dst_row);
    const bool overlap =
        src == dst && (char *)s < (char *)d + bytes && (char *)d < (char *)s + bytes;
    if (overlap) { /* memmove through scratch */
        if (!mm_cuda_check(c,
                           cudaMemcpyAsync(c->s_z, s, bytes, cudaMemcpyDeviceToDevice, c->stream),
                           "copy rows"))
            mm_cuda_check(c, cudaMemcpyAsync(d, c->s_z, bytes, cudaMemcpyDeviceToDevice, c->stream),
                          "copy rows");
        return;
    }
    mm_cuda_check(c, cudaMemcpyAsync(d, s, bytes, cudaMemcpyDeviceToDevice, c->stream),
                  "copy rows");
}

static void cu_l2_normalize(void *vctx, struct mm_act *x, int64_t n)
{
    struct cu_ctx *c = vctx;
    if (!mm_cuda_op_begin(c))
        return;
    n = mm_cuda_op_rows(c, n);
    if (n > x->rows)
        mm_cuda_fail(c, "l2 normalize", "more rows than the activation holds");
    else
        mm_cuda_check(c, mm_k_l2norm(c->stream, c->f32, x->data, n, x->cols), "l2 normalize");
}

/* ---- mixers and MLP ------------------------------------------------------------------ */

static void cu_mamba2(void *vctx, enum mm_stack stack, int layer, struct mm_act *x,
                      const struct mm_span *spans, int n_spans)
{
    struct cu_ctx *c = vctx;
    if (!mm_cuda_op_begin(c))
        return;
    const struct mm_stack_config *sc = c->stacks[stack].cfg;
    const struct cu_layer *l = &c->stacks[stack].layers[layer];
    const int64_t H = sc->hidden, d = sc->head_dim, nh = sc->heads, kvh = sc->kv_heads;
    const int64_t C = 2 * kvh * d + nh * d, Z = C + nh * d + nh;
    const struct cu_meta *m = mm_cuda_meta_for(c, stack, layer, spans, n_spans);
    if (!m || m->T == 0)
        return;
    const int64_t T = m->T;
    const int ns = m->n_spans; /* with a graph step's pads */
    if (T > x->rows) {
        mm_cuda_fail(c, "spans", "more rows than the activation holds");
        return;
    }
    const struct mm_kstate st = {c->state, c->state_elems, l->state_off, c->lim.state_fp32};
    cudaStream_t s = c->stream;
    /* u = RMSNorm(x); z = u W^T = [vkq | g | dt] */
    mm_cuda_prof_begin(c);
    if (mm_cuda_check(c,
                      mm_k_rmsnorm(s, c->f32, x->data, NULL, T, H, l->attn_norm,
                                   (float)sc->rms_norm_eps, c->s_u, false),
                      "rmsnorm"))
        return;
    mm_cuda_prof_end(c, "rmsnorm");
    mm_cuda_gemm(c, c->s_u, H, T, H, l->wz, Z, c->s_z, Z, false, false);
    /* decode (one token per span, head dim 64/128): conv + update + gated
     * norm in one launch, then the conv states */
    if (T == ns && (d == 128 || d == 64) && c->st == MM_OK) {
        mm_cuda_prof_begin(c);
        if (mm_cuda_check(c,
                          mm_k_ssm_decode(s, c->f32, c->s_z, Z, C, l->conv_w, l->conv_b, m->d_spans,
                                          ns, nh, kvh, d, l->dt_bias, l->A, l->gnorm, st, c->s_m),
                          "decode scan") ||
            mm_cuda_check(c, mm_k_conv2_state(s, c->f32, c->s_z, Z, C, m->d_spans, ns, st),
                          "conv state"))
            return;
        mm_cuda_prof_end(c, "decode conv+scan+gated norm");
        mm_cuda_gemm(c, c->s_m, nh * d, T, nh * d, l->o_proj, H, x->data, H, true, false);
        return;
    }
    /* causal conv + SiLU (state read, then written), scan, gated norm */
    mm_cuda_prof_begin(c);
    if (c->st != MM_OK ||
        mm_cuda_check(c,
                      mm_k_conv2(s, c->f32, c->s_z, Z, T, C, l->conv_w, l->conv_b, m->d_spans,
                                 m->d_tok, st, c->s_conv),
                      "conv") ||
        mm_cuda_check(c, mm_k_conv2_state(s, c->f32, c->s_z, Z, C, m->d_spans, ns, st),
                      "conv state"))
        return;
    mm_cuda_prof_end(c, "conv");
    const int n_long = c->ssd_ok ? m->n_long : 0;
    mm_cuda_prof_begin(c);
    if (n_long > 0 &&
        mm_cuda_check(c,
                      mm_k_ssd_scan(s, c->s_conv, C, c->s_z, c->f32, Z, C + nh * d, m->d_part,
                                    n_long, nh, kvh, d, l->dt_bias, l->A, st, c->s_y),
                      "chunked scan"))
        return;
    if (ns > n_long && mm_cuda_check(c,
                                     mm_k_ssm_scan(s, c->s_conv, C, c->s_z, c->f32, Z, C + nh * d,
                                                   m->d_part + n_long, ns - n_long, nh, kvh, d,
                                                   l->dt_bias, l->A, st, c->s_y),
                                     "scan"))
        return;
    mm_cuda_prof_end(c, n_long == 0 ? "scan" : n_long == ns ? "chunked scan" : "scan, both kinds");
    mm_cuda_prof_begin(c);
    if (mm_cuda_check(
            c, mm_k_gated_rmsnorm(s, c->f32, c->s_y, c->s_z, Z, C, T, nh, d, l->gnorm, c->s_m),
            "gated rmsnorm"))
        return;
    mm_cuda_prof_end(c, "gated rmsnorm");
    /* x += o_proj(y) */
    mm_cuda_gemm(c, c->s_m, nh * d, T, nh * d, l->o_proj, H, x->data, H, true, false);
}

/* Key ranges for flash-decoding attention: `warps` ranges (warps a launch
 * wants in flight) over `items` (row, head) items, each of at least 64 keys of
 * kv_bound, and no more partials than the scratch holds for `rows` (row, q
 * head) outputs; at least 1. */
static int key_split(const struct cu_ctx *c, int64_t warps, int64_t items, int64_t rows,
                     int64_t kv_bound)
{
    int64_t split = (warps + items - 1) / items;
    const int64_t ranges = (kv_bound + 63) / 64;
    split = split < ranges ? split : ranges;
    if (split * rows > c->part_items)
        split = c->part_items / rows;
    return split < 1 ? 1 : (int)split;
}

static void cu_attention(void *vctx, enum mm_stack stack, int layer, struct mm_act *x,
                         const struct mm_span *spans, int n_spans)
{
    struct cu_ctx *c = vctx;
    if (!mm_cuda_op_begin(c))
        return;
    const struct mm_stack_config *sc = c->stacks[stack].cfg;
    const struct cu_layer *l = &c->stacks[stack].layers[layer];
    const int64_t H = sc->hidden, d = sc->head_dim, nh = sc->heads, kv = sc->kv_heads;
    const int64_t QKV = (nh + 2 * kv) * d;
    const struct cu_meta *m = mm_cuda_meta_for(c, stack, layer, spans, n_spans);
    if (!m || m->T == 0)
        return;
    if (!c->kv[stack]) {
        mm_cuda_fail(c, "attention", "no KV blocks for this stack");
        return;
    }
    const int64_t T = m->T;
    const int ns = m->n_spans; /* with a graph step's pads */
    if (T > x->rows) {
        mm_cuda_fail(c, "spans", "more rows than the activation holds");
        return;
    }
    cudaStream_t s = c->stream;
    const struct mm_kkv cache = {c->kv[stack], c->block_elems[stack], l->kv_off, m->d_blk};
    if (mm_cuda_check(c,
                      mm_k_rmsnorm(s, c->f32, x->data, NULL, T, H, l->attn_norm,
                                   (float)sc->rms_norm_eps, c->s_u, false),
                      "rmsnorm"))
        return;
    mm_cuda_gemm(c, c->s_u, H, T, H, l->wqkv, QKV, c->s_z, QKV, false, false);
    const int64_t kv_bound =
        c->gmode == G_EAGER ? m->max_kv : c->lim.max_context; /* graphs: fixed */
    mm_cuda_prof_begin(c);
    if (c->st != MM_OK || mm_cuda_check(c,
                                        mm_k_rope_kv(s, c->f32, c->s_z, T, m->d_tok, m->d_spans, nh,
                                                     kv, d, c->stacks[stack].inv_freq, cache),
                                        "rope"))
        return;
    mm_cuda_prof_end(c, "rope + kv write");
    /* a batch of decode rows: every q head of a kv group from one read of its
     * keys (bf16; MMMAMBA_CUDA_FLASH=0 keeps the split kernel for comparison),
     * about 4 blocks of 4 warps per SM; otherwise prefill spans on tensor cores
     * (flash.cu) and the rest on the split kernel, about 16 warps per SM.
     * Graph steps never take flash.cu: its tile count would be baked in. */
    const bool grouped = T == ns && !c->f32 && (d == 64 || d == 128) && nh % kv == 0 &&
                         nh / kv <= 8 && c->flash_min != INT64_MAX;
    const bool flash = !grouped && m->n_ftiles > 0 && c->gmode == G_EAGER && (d == 64 || d == 128);
    if (grouped) {
        mm_cuda_prof_begin(c);
        if (mm_cuda_check(c,
                          mm_k_attend_decode(s, c->s_z, T, m->d_tok, m->d_spans, nh, kv, d, cache,
                                             key_split(c, c->sms * 4, T * kv, T * nh, kv_bound),
                                             c->s_part, c->s_m),
                          "attention"))
            return;
        mm_cuda_prof_end(c, "attention (decode, grouped)");
    } else if (!flash || m->flash_rows < T) {
        mm_cuda_prof_begin(c);
        if (mm_cuda_check(c,
                          mm_k_attend(s, c->f32, c->s_z, T, m->d_tok, m->d_spans, nh, kv, d, cache,
                                      key_split(c, c->sms * 16, T * nh, T * nh, kv_bound),
                                      flash ? c->flash_min : INT64_MAX, c->s_part, c->s_m),
                          "attention"))
            return;
        mm_cuda_prof_end(c, T == ns ? "attention (decode)" : "attention (prefill)");
    }
    if (flash) {
        mm_cuda_prof_begin(c);
        if (mm_cuda_check(c,
                          mm_k_flash_attend(s, c->s_z, m->d_spans, m->d_ftile, m->n_ftiles, nh, kv,
                                            d, cache, c->s_m),
                          "flash attention"))
            return;
        mm_cuda_prof_end(c, "attention (prefill, flash)");
    }
    mm_cuda_gemm(c, c->s_m, nh * d, T, nh * d, l->wo, H, x->data, H, true, false);
}

static void cu_mlp(void *vctx, enum mm_stack stack, int layer, struct mm_act *x, int64_t n)
{
    struct cu_ctx *c = vctx;
    if (!mm_cuda_op_begin(c) || n <= 0)
        return;
    const struct mm_stack_config *sc = c->stacks[stack].cfg;
    const struct cu_layer *l = &c->stacks[stack].layers[layer];
    const int64_t H = sc->hidden, F = sc->intermediate;
    n = mm_cuda_op_rows(c, n);
    if (n > x->rows) {
        mm_cuda_fail(c, "mlp", "more rows than the activation holds");
        return;
    }
    /* x += w2( SiLU(w1 u) * (w3 u) ), u = RMSNorm(x) */
    mm_cuda_prof_begin(c);
    if (mm_cuda_check(c,
                      mm_k_rmsnorm(c->stream, c->f32, x->data, NULL, n, H, l->ffn_norm,
                                   (float)sc->rms_norm_eps, c->s_u, false),
                      "rmsnorm"))
        return;
    mm_cuda_prof_end(c, "rmsnorm");
    mm_cuda_gemm_swiglu(c, c->s_u, n, H, l->w13, F, c->s_z, c->s_m);
    mm_cuda_gemm(c, c->s_m, F, n, F, l->w2, H, x->data, H, true, false);
}

/* ---- head ------------------------------------------------------------------------------ */

/* s_logits rows [0, k) = LM head (final norm (x[rows[i]])), fp32. */
static bool head(struct cu_ctx *c, const struct mm_act *x, const int64_t *rows, int k)
{
    const int64_t H = c->cfg.llm.hidden, V = c->cfg.vocab_size;
    const int64_t *d_rows = stage(c, rows, (size_t)k * sizeof *rows);
    if (!d_rows || mm_cuda_check(c,
                                 mm_k_rmsnorm(c->stream, c->f32, x->data, d_rows, k, H, c->norm,
                                              (float)c->cfg.llm.rms_norm_eps, c->s_u, false),
                                 "final norm"))
        return false;
    mm_cuda_gemm(c, c->s_u, H, k, H, c->output, V, c->s_logits, V, false, true);
    return c->st == MM_OK;
}

static void cu_logits(void *vctx, const struct mm_act *x, const int64_t *rows, int n, float *out)
{
    struct cu_ctx *c = vctx;
    const int64_t V = c->cfg.vocab_size;
    for (int i0 = 0; i0 < n && c->st == MM_OK; i0 += (int)c->logit_rows) {
        const int k = n - i0 < c->logit_rows ? n - i0 : (int)c->logit_rows;
        if (!head(c, x, rows + i0, k) ||
            mm_cuda_check(c,
                          cudaMemcpyAsync(out + (int64_t)i0 * V, c->s_logits,
                                          (size_t)(k * V) * sizeof(float), cudaMemcpyDeviceToHost,
                                          c->stream),
                          "logits"))
            return;
        sync_stream(c, "logits");
    }
}

static void cu_sample(void *vctx, const struct mm_act *x, const struct mm_sample_req *reqs, int n,
                      struct mm_sample_out *out)
{
    struct cu_ctx *c = vctx;
    const int64_t V = c->cfg.vocab_size;
    int64_t rows[256];
    for (int i0 = 0; i0 < n && c->st == MM_OK; i0 += (int)c->logit_rows) {
        const int k = n - i0 < c->logit_rows ? n - i0 : (int)c->logit_rows;
        for (int i = 0; i < k; i++) {
            const struct mm_sample_req *r = &reqs[i0 + i];
            rows[i] = r->row;
            c->h_req[i] = (struct mm_ksample){
                .seed = r->p.seed,
                .slot = r->slot,
                .stream = r->stream,
                .counter = r->counter,
                .temperature = r->p.temperature,
                .top_k = r->p.top_k,
                .top_p = r->p.top_p,
                .min_p = r->p.min_p,
                .repetition = r->p.repetition_penalty,
                .presence = r->p.presence_penalty,
                .frequency = r->p.frequency_penalty,
                .n_logprobs = r->p.n_logprobs,
            };
        }
        if (!head(c, x, rows, k) ||
            mm_cuda_check(c,
                          cudaMemcpyAsync(c->d_req, c->h_req, (size_t)k * sizeof *c->h_req,
                                          cudaMemcpyHostToDevice, c->stream),
                          "sample") ||
            (mm_cuda_prof_begin(c), false) ||
            mm_cuda_check(
                c,
                mm_k_sample(c->stream, c->s_logits, c->s_work, V, c->d_req, k, c->counts, c->d_out),
                "sample") ||
            (mm_cuda_prof_end(c, "sample"), false) ||
            mm_cuda_check(c,
                          cudaMemcpyAsync(c->h_out, c->d_out, (size_t)k * sizeof *c->h_out,
                                          cudaMemcpyDeviceToHost, c->stream),
                          "sample") ||
            !sync_stream(c, "sample"))
            return;
        for (int i = 0; i < k; i++) {
            const struct mm_ksample_out *o = &c->h_out[i];
            struct mm_sample_out *d = &out[i0 + i];
            d->id = o->id;
            d->logprob = o->logprob;
            d->n_top = o->n_top;
            for (int j = 0; j < o->n_top && j < MM_MAX_LOGPROBS; j++) {
                d->top_ids[j] = o->top_ids[j];
                d->top_logprobs[j] = o->top_logprobs[j];
            }
        }
    }
}

static void cu_slot_count(void *vctx, int32_t slot, const int32_t *ids, int64_t n, bool output)
{
    struct cu_ctx *c = vctx;
    if (n <= 0 || c->st != MM_OK)
        return;
    const int32_t *d_ids = stage(c, ids, (size_t)n * sizeof *ids);
    if (d_ids)
        mm_cuda_check(c,
                      mm_k_count(c->stream, c->counts, c->cfg.vocab_size, slot, d_ids, n, output),
                      "slot count");
}

/* ---- slots ----------------------------------------------------------------------------- */

static size_t slot_state_bytes(const struct cu_ctx *c)
{
    return (size_t)c->state_elems * c->state_esz;
}

static void *slot_ptr(const struct cu_ctx *c, int32_t slot)
{
    return (char *)c->state + (size_t)slot * slot_state_bytes(c);
}

static size_t counts_bytes(const struct cu_ctx *c)
{
    return (size_t)c->cfg.vocab_size * sizeof(uint32_t);
}

static uint32_t *slot_counts(const struct cu_ctx *c, int32_t slot)
{
    return c->counts + (int64_t)slot * c->cfg.vocab_size;
}

static void cu_slot_reset(void *vctx, int32_t slot)
{
    struct cu_ctx *c = vctx;
    if (!mm_cuda_check(c, cudaMemsetAsync(slot_ptr(c, slot), 0, slot_state_bytes(c), c->stream),
                       "slot reset"))
        mm_cuda_check(c, cudaMemsetAsync(slot_counts(c, slot), 0, counts_bytes(c), c->stream),
                      "slot reset");
}

static void cu_slot_copy(void *vctx, int32_t src, int32_t dst)
{
    struct cu_ctx *c = vctx;
    if (src != dst &&
        !mm_cuda_check(c,
                       cudaMemcpyAsync(slot_ptr(c, dst), slot_ptr(c, src), slot_state_bytes(c),
                                       cudaMemcpyDeviceToDevice, c->stream),
                       "slot copy"))
        mm_cuda_check(c,
                      cudaMemcpyAsync(slot_counts(c, dst), slot_counts(c, src), counts_bytes(c),
                                      cudaMemcpyDeviceToDevice, c->stream),
                      "slot copy");
}

/* A saved slot: the state in its own dtype, then the counts (vocab words). */
static size_t cu_slot_bytes(void *vctx) { return slot_state_bytes(vctx) + counts_bytes(vctx); }

static void cu_slot_save(void *vctx, int32_t slot, void *host)
{
    struct cu_ctx *c = vctx;
    const size_t sb = slot_state_bytes(c);
    if (!mm_cuda_check(
            c, cudaMemcpyAsync(host, slot_ptr(c, slot), sb, cudaMemcpyDeviceToHost, c->stream),
            "slot save") &&
        !mm_cuda_check(c,
                       cudaMemcpyAsync((char *)host + sb, slot_counts(c, slot), counts_bytes(c),
                                       cudaMemcpyDeviceToHost, c->stream),
                       "slot save"))
        sync_stream(c, "slot save");
}

static void cu_slot_restore(void *vctx, int32_t slot, const void *host)
{
    struct cu_ctx *c = vctx;
    const size_t sb = slot_state_bytes(c);
    if (!mm_cuda_check(
            c, cudaMemcpyAsync(slot_ptr(c, slot), host, sb, cudaMemcpyHostToDevice, c->stream),
            "slot restore") &&
        !mm_cuda_check(c,
                       cudaMemcpyAsync(slot_counts(c, slot), (const char *)host + sb,
                                       counts_bytes(c), cudaMemcpyHostToDevice, c->stream),
                       "slot restore"))
        sync_stream(c, "slot restore"); /* the host buffer is the caller's after return */
}

static void cu_kv_copy(void *vctx, enum mm_stack stack, const int32_t *src, const int32_t *dst,
                       int64_t n)
{
    struct cu_ctx *c = vctx;
    if (!c->kv[stack] || n <= 0)
        return;
    const size_t bytes = (size_t)c->block_elems[stack] * c->esz;
    for (int64_t i = 0; i < n; i++)
        if (mm_cuda_check(c,
                          cudaMemcpyAsync((char *)c->kv[stack] + (size_t)dst[i] * bytes,
                                          (char *)c->kv[stack] + (size_t)src[i] * bytes, bytes,
                                          cudaMemcpyDeviceToDevice, c->stream),
                          "kv copy"))
            return;
}

static void cu_slot_clear_counts(void *vctx, int32_t slot)
{
    struct cu_ctx *c = vctx;
    mm_cuda_check(c, cudaMemsetAsync(slot_counts(c, slot), 0, counts_bytes(c), c->stream),
                  "slot clear counts");
}

static size_t cu_kv_block_bytes(void *vctx, enum mm_stack stack)
{
    const struct cu_ctx *c = vctx;
    return c->kv[stack] ? (size_t)c->block_elems[stack] * c->esz : 0;
}

/* One copy per block (block ids are scattered); one sync at the end. */
static void kv_host_copy(struct cu_ctx *c, enum mm_stack stack, const int32_t *blocks, int64_t n,
                         char *host, bool save)
{
    if (!c->kv[stack] || n <= 0 || c->st != MM_OK)
        return;
    const size_t bytes = (size_t)c->block_elems[stack] * c->esz;
    for (int64_t i = 0; i < n; i++) {
        char *dev = (char *)c->kv[stack] + (size_t)blocks[i] * bytes;
        char *h = host + (size_t)i * bytes;
        if (mm_cuda_check(c,
                          save ? cudaMemcpyAsync(h, dev, bytes, cudaMemcpyDeviceToHost, c->stream)
                               : cudaMemcpyAsync(dev, h, bytes, cudaMemcpyHostToDevice, c->stream),
                          save ? "kv save" : "kv restore"))
            return;
    }
    sync_stream(c, save ? "kv save" : "kv restore");
}

static void cu_kv_save(void *vctx, enum mm_stack stack, const int32_t *blocks, int64_t n,
                       void *host)
{
    kv_host_copy(vctx, stack, blocks, n, host, true);
}

static void cu_kv_restore(void *vctx, enum mm_stack stack, const int32_t *blocks, int64_t n,
                          const void *host)
{
    kv_host_copy(vctx, stack, blocks, n, (char *)(uintptr_t)host, false);
}

static void cu_slot_read(void *vctx, int32_t slot, float *out)
{
    struct cu_ctx *c = vctx;
    void *dst = c->lim.state_fp32 ? (void *)out : (void *)c->h_tmp;
    if (mm_cuda_check(c,
                      cudaMemcpyAsync(dst, slot_ptr(c, slot), slot_state_bytes(c),
                                      cudaMemcpyDeviceToHost, c->stream),
                      "slot read") ||
        !sync_stream(c, "slot read"))
        return;
    if (!c->lim.state_fp32) {
        const uint16_t *h = (const uint16_t *)c->h_tmp;
        for (int64_t i = c->state_elems - 1; i >= 0; i--)
            out[i] = mm_bf16_to_f32(h[i]);
    }
}

static enum mm_status cu_status(void *vctx, struct mm_err *err)
{
    struct cu_ctx *c = vctx;
    if (c->st == MM_OK) {
        /* an asynchronous fault shows up here without waiting for the GPU */
        const cudaError_t e = cudaPeekAtLastError();
        if (e != cudaSuccess && e != cudaErrorNotReady)
            mm_cuda_check(c, e, "device");
    }
    const enum mm_status st = c->st;
    if (st != MM_OK)
        mm_err_set(err, st, "%s", c->msg);
    c->st = MM_OK;
    c->msg[0] = '\0';
    return st;
}

static const struct mm_backend_ops cuda_ops = {
    .name = "cuda",
    .load = cu_load,
    .destroy = cu_destroy,
    .act_alloc = cu_act_alloc,
    .embed_tokens = cu_embed_tokens,
    .vision_embed = cu_vision_embed,
    .pixel_shuffle = cu_pixel_shuffle,
    .copy_rows = cu_copy_rows,
    .l2_normalize = cu_l2_normalize,
    .step_begin = mm_cuda_step_begin,
    .step_end = mm_cuda_step_end,
    .mamba2 = cu_mamba2,
    .attention = cu_attention,
    .mlp = cu_mlp,
    .logits = cu_logits,
    .sample = cu_sample,
    .slot_count = cu_slot_count,
    .slot_reset = cu_slot_reset,
    .slot_copy = cu_slot_copy,
    .slot_bytes = cu_slot_bytes,
    .slot_save = cu_slot_save,
    .slot_restore = cu_slot_restore,
    .kv_copy = cu_kv_copy,
    .slot_clear_counts = cu_slot_clear_counts,
    .kv_block_bytes = cu_kv_block_bytes,
    .kv_save = cu_kv_save,
    .kv_restore = cu_kv_restore,
    .status = cu_status,
    .slot_read = cu_slot_read,
    .limits = cu_limits,
};

int mm_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

void mm_cuda_backend_use(const struct mm_backend *b)
{
    cudaSetDevice(((const struct cu_ctx *)b->ctx)->device);
}

enum mm_status mm_cuda_backend_create(bool fp32, struct mm_backend *b, struct mm_err *err)
{
    return mm_cuda_backend_create_on(0, fp32, b, err);
}

enum mm_status mm_cuda_backend_create_on(int device, bool fp32, struct mm_backend *b,
                                         struct mm_err *err)
{
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1) {
        (void)cudaGetLastError();
        return mm_err_set(err, MM_ERR_UNSUPPORTED, "no CUDA device (%s)",
                          e != cudaSuccess ? cudaGetErrorName(e) : "none found");
    }
    if (device < 0 || device >= n)
        return mm_err_set(err, MM_ERR_INVALID, "CUDA device %d does not exist (%d found: 0..%d)",
                          device, n, n - 1);
    if (cudaSetDevice(device) != cudaSuccess) {
        const char *why = cudaGetErrorName(cudaGetLastError());
        return mm_err_set(err, MM_ERR_BACKEND, "cuda backend: cannot use device %d (%s)", device,
                          why);
    }
    struct cu_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    c->device = device;
    if (cudaDeviceGetAttribute(&c->sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        c->sms < 1)
        c->sms = 132;
    c->f32 = fp32;
    c->esz = fp32 ? sizeof(float) : 2;
    c->lt_ws_bytes = (size_t)32 << 20;
    if (cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking) != cudaSuccess ||
        cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS ||
        !(c->lt_ws = dev_alloc(c, c->lt_ws_bytes))) {
        const char *why = cudaGetErrorName(cudaGetLastError());
        cu_destroy(c);
        return mm_err_set(err, MM_ERR_BACKEND, "cuda backend: cannot start (%s)", why);
    }
    const char *prof = getenv("MMMAMBA_CUDA_PROFILE");
    c->prof = prof && prof[0] == '1' && cudaEventCreate(&c->pe0) == cudaSuccess &&
              cudaEventCreate(&c->pe1) == cudaSuccess;
    const char *graphs = getenv("MMMAMBA_CUDA_GRAPHS"); /* 0: every step eager */
    c->graphs_on = !c->prof && !(graphs && graphs[0] == '0');
    /* 0: cuBLASLt; 1: the skinny kernel up to M = 8; 2: the tensor-core one; else timed */
    const char *skinny = getenv("MMMAMBA_CUDA_SKINNY");
    c->skinny_force = skinny && skinny[0] >= '0' && skinny[0] <= '2' ? skinny[0] - '0' : -1;
    const char *tune = getenv("MMMAMBA_CUDA_TUNE"); /* 0: cuBLASLt's first candidate */
    c->tune = !(tune && tune[0] == '0');
    const char *overlap = getenv("MMMAMBA_CUDA_OVERLAP"); /* 0: no overlapping launches */
    /* 0: none; all: every kernel; else (default) the weight-streaming GEMMs: measured
     * on the H200, every kernel overlapped made batch-1 decode 1.6x slower than none */
    c->overlap = mm_k_set_overlap(c->prof || (overlap && overlap[0] == '0') ? MM_K_OVERLAP_NONE
                                  : overlap && strcmp(overlap, "all") == 0  ? MM_K_OVERLAP_ALL
                                                                            : MM_K_OVERLAP_GEMM);
    const char *scan = getenv("MMMAMBA_CUDA_SCAN"); /* seq | chunked | N; else measured */
    if (scan && strcmp(scan, "seq") == 0)
        c->scan_force = INT64_MAX;
    else if (scan && strcmp(scan, "chunked") == 0)
        c->scan_force = 1;
    else if (scan && atoll(scan) > 0)
        c->scan_force = atoll(scan);
    const char *flash = getenv("MMMAMBA_CUDA_FLASH"); /* 0: never | N: from N rows */
    c->flash_min = 64;
    if (flash && (strcmp(flash, "0") == 0 || atoll(flash) > 0)) {
        c->flash_min = atoll(flash) > 0 ? atoll(flash) : INT64_MAX;
        if (c->flash_min == INT64_MAX)
            MM_INFO("cuda backend: flash prefill attention off (MMMAMBA_CUDA_FLASH)");
        else
            MM_INFO("cuda backend: flash prefill attention from %lld rows (MMMAMBA_CUDA_FLASH)",
                    (long long)c->flash_min);
    }
    b->ops = &cuda_ops;
    b->ctx = c;
    return MM_OK;
}
