/* cuda_gemm.c: the CUDA backend's GEMMs (cuda_internal.h): y (+)= x W^T on
 * cuBLASLt, the CUDA-core skinny kernel or the tensor-core one, and the
 * load-time measurement that decides which serves each weight shape at each
 * decode size.
 *
 * Design: nothing is chosen per call. At load every weight shape of the model
 * is timed at M = 1, 2, 4, ..., 64 rows with its weights rotated over the
 * layers (so they come from HBM as in a step) and the fastest path is kept per
 * M bucket; cuBLASLt plans are cached per exact shape with their first 8
 * candidates, timed for every decode graph size where cuBLASLt serves. Prefill
 * sizes take the heuristic's first candidate (one-off token counts). */
#include "engine/cuda_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "base/log.h"
#include "kernels.h"

static struct gemm_plan *plan_for(struct cu_ctx *c, int64_t n, int64_t N, int64_t K, int64_t ldx,
                                  int64_t ldy, bool acc, bool y_f32)
{
    uint64_t h = (uint64_t)n * 1000003u ^ (uint64_t)N * 7919u ^ (uint64_t)K * 131u ^
                 (uint64_t)ldx * 31u ^ (uint64_t)ldy * 17u ^ (uint64_t)acc * 3u ^ (uint64_t)y_f32;
    struct gemm_plan *p = NULL;
    for (int i = 0; i < GEMM_PROBES; i++) {
        struct gemm_plan *q = &c->plans[(h + (uint64_t)i) % GEMM_PLANS];
        if (q->used && q->n == n && q->N == N && q->K == K && q->ldx == ldx && q->ldy == ldy &&
            q->acc == acc && q->y_f32 == y_f32)
            return q;
        if (!q->used && !p)
            p = q;
    }
    if (!p) /* all taken: the shape's first slot goes */
        p = &c->plans[h % GEMM_PLANS];
    if (p->used) { /* evict */
        cublasLtMatmulDescDestroy(p->op);
        cublasLtMatrixLayoutDestroy(p->a);
        cublasLtMatrixLayoutDestroy(p->b);
        cublasLtMatrixLayoutDestroy(p->c);
        p->used = false;
    }
    const cudaDataType_t et = c->f32 ? CUDA_R_32F : CUDA_R_16BF;
    const cudaDataType_t yt = y_f32 ? CUDA_R_32F : et;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    if (mm_cuda_lt_check(c, cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                         "gemm desc"))
        return NULL;
    cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    /* column-major view: y^T [N, n] = W [K, N]^T x^T [K, n] */
    if (mm_cuda_lt_check(c, cublasLtMatrixLayoutCreate(&p->a, et, (uint64_t)K, (uint64_t)N, K),
                         "gemm A") ||
        mm_cuda_lt_check(c, cublasLtMatrixLayoutCreate(&p->b, et, (uint64_t)K, (uint64_t)n, ldx),
                         "gemm B") ||
        mm_cuda_lt_check(c, cublasLtMatrixLayoutCreate(&p->c, yt, (uint64_t)N, (uint64_t)n, ldy),
                         "gemm C"))
        return NULL;
    cublasLtMatmulPreference_t pref;
    if (mm_cuda_lt_check(c, cublasLtMatmulPreferenceCreate(&pref), "gemm preference"))
        return NULL;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                         &c->lt_ws_bytes, sizeof c->lt_ws_bytes);
    cublasLtMatmulHeuristicResult_t res[8];
    int found = 0;
    const cublasStatus_t s =
        cublasLtMatmulAlgoGetHeuristic(c->lt, p->op, p->a, p->b, p->c, p->c, pref, 8, res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (mm_cuda_lt_check(c, s, "gemm heuristic"))
        return NULL;
    p->n_cand = 0;
    for (int i = 0; i < found; i++)
        if (res[i].state == CUBLAS_STATUS_SUCCESS)
            p->cand[p->n_cand++] = res[i].algo;
    if (p->n_cand < 1) {
        mm_cuda_fail(c, "gemm", "cuBLASLt has no algorithm for this shape");
        return NULL;
    }
    p->algo = p->cand[0]; /* the heuristic's first, until tune_plan times them */
    p->tuned = false;
    p->used = true;
    p->n = n, p->N = N, p->K = K, p->ldx = ldx, p->ldy = ldy, p->acc = acc, p->y_f32 = y_f32;
    return p;
}

/* The M bucket of n rows (gemm_choice), -1 past the last. */
static int m_bucket(int64_t n)
{
    int b = 0;
    while (b < GEMM_BUCKETS && n > ((int64_t)1 << b))
        b++;
    return b < GEMM_BUCKETS ? b : -1;
}

/* Who serves this shape at n rows. */
static enum gemm_impl gemm_impl_for(const struct cu_ctx *c, int64_t n, int64_t N, int64_t K,
                                    bool swiglu, bool y_f32)
{
    const int b = m_bucket(n);
    if (c->f32 || b < 0)
        return GEMM_LT;
    for (int i = 0; i < c->n_choices; i++) {
        const struct gemm_choice *g = &c->choices[i];
        if (g->N == N && g->K == K && g->swiglu == swiglu && g->y_f32 == y_f32)
            return (enum gemm_impl)g->impl[b];
    }
    return GEMM_LT;
}

static void gemm_lt(struct cu_ctx *c, const void *x, int64_t ldx, int64_t n, int64_t K,
                    const void *W, int64_t N, void *y, int64_t ldy, bool acc, bool y_f32);

/* One of our decode-size kernels (im: GEMM_SKINNY or GEMM_TC), timed as `name`. */
static void skinny(struct cu_ctx *c, enum gemm_impl im, const void *x, int64_t ldx, int64_t n,
                   int64_t K, const void *W, int64_t N, void *y, int64_t ldy, bool acc, bool y_f32,
                   bool swiglu, const char *name)
{
    mm_cuda_prof_begin(c);
    mm_cuda_check(c,
                  (im == GEMM_TC ? mm_k_skinny_tc : mm_k_skinny)(c->stream, x, ldx, n, W, N, K, y,
                                                                 ldy, acc, y_f32, swiglu),
                  name);
    mm_cuda_prof_end(c, name);
}

/* y[n, N] (+)= x[n, K] . W[N, K]^T; x, W of the element type, y too unless y_f32. */
void mm_cuda_gemm(struct cu_ctx *c, const void *x, int64_t ldx, int64_t n, int64_t K, const void *W,
                  int64_t N, void *y, int64_t ldy, bool acc, bool y_f32)
{
    if (n <= 0 || c->st != MM_OK)
        return;
    const enum gemm_impl im = gemm_impl_for(c, n, N, K, false, y_f32);
    if (im == GEMM_SKINNY || im == GEMM_TC) {
        skinny(c, im, x, ldx, n, K, W, N, y, ldy, acc, y_f32, false,
               y_f32           ? "skinny head"
               : im == GEMM_TC ? "skinny gemm (tensor cores)"
                               : "skinny gemm");
        return;
    }
    gemm_lt(c, x, ldx, n, K, W, N, y, ldy, acc, y_f32);
}

/* h[n, F] = SiLU(u w1^T) * (u w3^T), w13 = [w1; w3] ([2F, K]); h13: scratch [n, 2F]. */
void mm_cuda_gemm_swiglu(struct cu_ctx *c, const void *u, int64_t n, int64_t K, const void *w13,
                         int64_t F, void *h13, void *h)
{
    if (n <= 0 || c->st != MM_OK)
        return;
    const enum gemm_impl im = gemm_impl_for(c, n, F, K, true, false);
    if (im == GEMM_SKINNY || im == GEMM_TC) {
        skinny(c, im, u, K, n, K, w13, F, h, F, false, false, true, "skinny w13 + swiglu");
        return;
    }
    gemm_lt(c, u, K, n, K, w13, 2 * F, h13, 2 * F, false, false);
    mm_cuda_prof_begin(c);
    if (c->st == MM_OK)
        mm_cuda_check(c, mm_k_swiglu(c->stream, c->f32, h13, n, F, h), "swiglu");
    mm_cuda_prof_end(c, "swiglu");
}

static void gemm_lt(struct cu_ctx *c, const void *x, int64_t ldx, int64_t n, int64_t K,
                    const void *W, int64_t N, void *y, int64_t ldy, bool acc, bool y_f32)
{
    struct gemm_plan *p = plan_for(c, n, N, K, ldx, ldy, acc, y_f32);
    if (!p)
        return;
    const float alpha = 1.0f, beta = acc ? 1.0f : 0.0f;
    char name[48];
    if (c->prof)
        snprintf(name, sizeof name, "gemm %lldx%lld M%s", (long long)N, (long long)K,
                 n == 1     ? "=1"
                 : n <= 8   ? "<=8"
                 : n <= 64  ? "<=64"
                 : n <= 256 ? "<=256"
                            : ">256");
    mm_cuda_prof_begin(c);
    mm_cuda_lt_check(c,
                     cublasLtMatmul(c->lt, p->op, &alpha, W, p->a, x, p->b, &beta, y, p->c, y, p->c,
                                    &p->algo, c->lt_ws, c->lt_ws_bytes, c->stream),
                     "gemm");
    mm_cuda_prof_end(c, name);
}

/* ---- choosing at load ------------------------------------------------------------------- */

/* Times the first candidates cuBLASLt offers for plan p (x: K columns of
 * scratch, weights rotated over ws[0..nw) so they come from HBM as in a step)
 * and keeps the fastest; returns its time in us per call, or 0. */
static double tune_plan(struct cu_ctx *c, struct gemm_plan *p, void *const *ws, int nw,
                        cudaEvent_t e0, cudaEvent_t e1)
{
    if (p->tuned || p->n_cand < 2 || c->st != MM_OK)
        return 0;
    const void *x = p->K <= 4 * c->cfg.llm.hidden ? c->s_u : c->s_m;
    void *y = p->y_f32 ? (void *)c->s_logits : c->s_z;
    const float alpha = 1.0f, beta = p->acc ? 1.0f : 0.0f;
    const int reps = 6;
    float best = INFINITY;
    for (int a = 0; a < p->n_cand; a++) {
        bool ok = true;
        for (int r = 0; r < reps + 1 && ok; r++) {
            if (r == 1)
                cudaEventRecord(e0, c->stream);
            ok = cublasLtMatmul(c->lt, p->op, &alpha, ws[r % nw], p->a, x, p->b, &beta, y, p->c, y,
                                p->c, &p->cand[a], c->lt_ws, c->lt_ws_bytes,
                                c->stream) == CUBLAS_STATUS_SUCCESS;
        }
        float t = 0;
        cudaEventRecord(e1, c->stream);
        if (cudaEventSynchronize(e1) != cudaSuccess ||
            cudaEventElapsedTime(&t, e0, e1) != cudaSuccess)
            ok = false;
        if (ok && t < best) {
            best = t;
            p->algo = p->cand[a];
        }
    }
    (void)cudaGetLastError(); /* a candidate that cannot run is skipped, not an error */
    p->tuned = true;
    return isinf(best) ? 0 : best * 1e3 / reps;
}

/* The cuBLASLt plan a layer's GEMM of this shape uses at m rows: as
 * mm_cuda_gemm calls it, or for swiglu as mm_cuda_gemm_swiglu's w1+w3 GEMM. */
static struct gemm_plan *shape_plan(struct cu_ctx *c, int64_t m, int64_t N, int64_t K, bool swiglu,
                                    bool acc, bool y_f32)
{
    return swiglu ? plan_for(c, m, 2 * N, K, K, 2 * N, false, false)
                  : plan_for(c, m, N, K, K, N, acc, y_f32);
}

/* Times the skinny kernels (CUDA cores up to M = 8, tensor cores up to 64)
 * against cuBLASLt for one weight shape at M = 1, 2, 4, ..., 64 rows, rotating
 * over the layers' matrices (ws[0..nw)) so they come from HBM as in a step,
 * and records the fastest per M bucket (cuBLASLt with its candidates timed
 * first); then, unless MMMAMBA_CUDA_TUNE=0, times cuBLASLt's candidates at
 * every other decode-step size the graphs use where cuBLASLt serves (acc, ldx
 * and ldy as the layer calls it) and keeps the fastest per size. */
static void choose_shape(struct cu_ctx *c, void *const *ws, int nw, int64_t N, int64_t K,
                         bool swiglu, bool acc, bool y_f32, const char *label)
{
    if (c->n_choices == GEMM_CHOICES || nw == 0)
        return;
    struct gemm_choice *g = &c->choices[c->n_choices++];
    *g = (struct gemm_choice){.N = N, .K = K, .swiglu = swiglu, .y_f32 = y_f32};
    cudaEvent_t e0, e1;
    if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess)
        return;
    const int reps = 12;
    char line[640];
    int at = snprintf(line, sizeof line, "gemm %s %lldx%lld:", label, (long long)N, (long long)K);
    /* rows the scratch holds: the token budget; the LM head's: logit_rows */
    const int64_t cap = y_f32 ? c->logit_rows : c->lim.max_tokens;
    for (int b = 0; b < GEMM_BUCKETS; b++) {
        const int m = 1 << b;
        float t[3] = {INFINITY, INFINITY, INFINITY}; /* by enum gemm_impl */
        if (m > cap)
            break;
        if (c->tune) {
            struct gemm_plan *p = shape_plan(c, m, N, K, swiglu, acc, y_f32);
            if (p)
                tune_plan(c, p, ws, nw, e0, e1);
        }
        for (int im = GEMM_LT; im <= GEMM_TC; im++) {
            if (im == GEMM_SKINNY && m > MM_K_SKINNY_MAX_M)
                continue;
            g->impl[b] = (uint8_t)im;
            for (int r = 0; r < reps + 2; r++) {
                if (r == 2)
                    cudaEventRecord(e0, c->stream);
                void *W = ws[r % nw];
                if (swiglu)
                    mm_cuda_gemm_swiglu(c, c->s_u, m, K, W, N, c->s_z, c->s_m);
                else
                    mm_cuda_gemm(c, c->s_u, K, m, K, W, N, y_f32 ? (void *)c->s_logits : c->s_z, N,
                                 acc, y_f32);
            }
            cudaEventRecord(e1, c->stream);
            cudaEventSynchronize(e1);
            cudaEventElapsedTime(&t[im], e0, e1);
        }
        int best = GEMM_LT;
        for (int im = GEMM_SKINNY; im <= GEMM_TC; im++)
            if (t[im] < t[best])
                best = im;
        if (c->skinny_force == 0 || (c->skinny_force == 1 && m > MM_K_SKINNY_MAX_M))
            best = GEMM_LT;
        else if (c->skinny_force == 1)
            best = GEMM_SKINNY;
        else if (c->skinny_force == 2)
            best = GEMM_TC;
        g->impl[b] = (uint8_t)best;
        const double bytes = (double)(swiglu ? 2 * N : N) * (double)K * 2;
        if (at < (int)sizeof line)
            at +=
                snprintf(line + at, sizeof line - (size_t)at, " M=%d %.1f/%.1f/%.1f us (%.2f TB/s)",
                         m, t[GEMM_SKINNY] * 1e3 / reps, t[GEMM_TC] * 1e3 / reps,
                         t[GEMM_LT] * 1e3 / reps, bytes / (t[best] * 1e-3 / reps) / 1e12);
    }
    MM_INFO("cuda backend: %s (skinny/tensor-core skinny/cuBLASLt, best's bandwidth)", line);
    if (c->tune) {
        /* decode steps' rows: graph buckets up to the slots (cu_step_begin) */
        const int64_t slots =
            c->lim.n_slots < c->lim.max_tokens ? c->lim.n_slots : c->lim.max_tokens;
        const int64_t tcap = slots < cap ? slots : cap;
        at = snprintf(line, sizeof line, "gemm %s tuned:", label);
        int last = 0;
        for (int m = 1; m <= tcap; m++) {
            const int b = mm_cuda_graph_bucket(m, (int)tcap);
            if (b == last)
                continue;
            last = b;
            if (gemm_impl_for(c, b, N, K, swiglu, y_f32) != GEMM_LT)
                continue;
            struct gemm_plan *p = shape_plan(c, b, N, K, swiglu, acc, y_f32);
            if (!p)
                break;
            const double us = tune_plan(c, p, ws, nw, e0, e1);
            if (us > 0 && memcmp(&p->cand[0], &p->algo, sizeof p->algo) != 0 &&
                at < (int)sizeof line)
                at += snprintf(line + at, sizeof line - (size_t)at, " M=%d %.1f us", b, us);
        }
        MM_INFO("cuda backend: %s (sizes where cuBLASLt's first candidate was not the fastest)",
                line);
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
}

void mm_cuda_choose_gemms(struct cu_ctx *c)
{
    void *ws[MM_MAX_LAYERS];
    const int64_t n_u = (c->lim.max_tokens > 1 ? c->lim.max_tokens : 1) * 4 * c->cfg.llm.hidden;
    if (c->f32 ||
        mm_k_fill_random(c->stream, c->s_u, n_u < 16 * 16384 ? n_u : 16 * 16384, 7) != cudaSuccess)
        return;
    const struct mm_stack_config *sc = &c->cfg.llm;
    const struct cu_layer *L = c->stacks[MM_STACK_LLM].layers;
    const int64_t H = sc->hidden, d = sc->head_dim, nh = sc->heads, kv = sc->kv_heads;
    const int64_t C = 2 * kv * d + nh * d, Z = C + nh * d + nh, F = sc->intermediate;
    int n;
#define COLLECT(want, field)                                                                       \
    n = 0;                                                                                         \
    for (int64_t i = 0; i < sc->num_layers; i++)                                                   \
        if ((int)L[i].kind == (want) || (want) < 0)                                                \
            ws[n++] = L[i].field;
    COLLECT((int)MM_LAYER_MAMBA2, wz);
    choose_shape(c, ws, n, Z, H, false, false, false, "in_proj");
    COLLECT((int)MM_LAYER_MAMBA2, o_proj);
    choose_shape(c, ws, n, H, nh * d, false, true, false, "o_proj");
    COLLECT((int)MM_LAYER_MHA, wqkv);
    choose_shape(c, ws, n, (nh + 2 * kv) * d, H, false, false, false, "wqkv");
    COLLECT((int)MM_LAYER_MHA, wo);
    if (nh * d != H || n == 0 || gemm_impl_for(c, 1, H, nh * d, false, false) == GEMM_LT)
        choose_shape(c, ws, n, H, nh * d, false, true, false, "wo");
    COLLECT(-1, w13);
    choose_shape(c, ws, n, F, H, true, false, false, "w1+w3+swiglu");
    COLLECT(-1, w2);
    choose_shape(c, ws, n, H, F, false, true, false, "w2");
#undef COLLECT
    ws[0] = c->output;
    choose_shape(c, ws, 1, c->cfg.vocab_size, H, false, false, true, "lm_head");
    (void)cudaGetLastError();
}

void mm_cuda_gemm_free(struct cu_ctx *c)
{
    for (int i = 0; i < GEMM_PLANS; i++)
        if (c->plans[i].used) {
            cublasLtMatmulDescDestroy(c->plans[i].op);
            cublasLtMatrixLayoutDestroy(c->plans[i].a);
            cublasLtMatrixLayoutDestroy(c->plans[i].b);
            cublasLtMatrixLayoutDestroy(c->plans[i].c);
            c->plans[i].used = false;
        }
}
