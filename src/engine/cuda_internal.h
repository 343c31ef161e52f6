/* cuda_internal.h: the CUDA backend's private types and the functions its
 * files share (only cuda_backend.c and cuda_gemm.c include it; everyone else
 * goes through cuda_backend.h and backend.h).
 *
 * Design: one struct cu_ctx per backend, split by concept: cuda_backend.c
 * (memory, load, steps and graphs, the ops of backend.h) and cuda_gemm.c
 * (the GEMM paths and the load-time choice between them). Errors are sticky:
 * the first failure sets st and msg and every later op returns at once. */
#ifndef MM_ENGINE_CUDA_INTERNAL_H
#define MM_ENGINE_CUDA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "base/status.h"
#include "engine/backend.h"
#include "kernels.h"
#include "model/config.h"

struct mm_act {
    void *data; /* device, [rows, cols] of the backend's element type */
    int64_t rows, cols;
    struct mm_act *next;
};

struct cu_layer {
    enum mm_layer_kind kind;
    float *attn_norm, *ffn_norm; /* [H] */
    void *w13, *w2;              /* [2F, H] (w1 rows then w3 rows), [H, F] */
    /* mamba2 */
    void *wz;               /* [Z, H] */
    float *conv_w, *conv_b; /* [C, 2], [C] */
    float *dt_bias, *A;     /* [heads]; A = -exp(A_log) */
    float *gnorm;           /* [d] */
    void *o_proj;           /* [H, heads*d] */
    int64_t state_off;
    /* mha */
    void *wqkv, *wo;
    int64_t kv_off;
};

/* Span metadata of one stack for the current step (device copies + staging).
 * A decode step replayed from a graph is padded to its bucket with 1-token
 * spans on the pad slot (index n_slots, whose table is the pad KV block). */
struct cu_meta {
    struct mm_span *last; /* host copy of the spans it was built from */
    int n_real;           /* spans given (last); n_spans - n_real are pads */
    int n_spans;
    int64_t T;
    struct mm_kspan *h_spans, *d_spans; /* [n_slots + 1] */
    struct mm_kspan *h_part, *d_part;   /* the same spans, those for the chunked scan first */
    int n_long;                         /* spans for the chunked scan (cu_ctx.scan_min) */
    int32_t *h_tok, *d_tok;             /* [max_tokens] row -> span */
    int32_t *h_blk, *d_blk;             /* flat block tables */
    int64_t blk_cap;
    int64_t bpt;        /* block-table entries per slot: h_blk/d_blk mirror [n_slots + 1][bpt] */
    cudaEvent_t copied; /* the last upload from the host buffers */
    bool pending;
    int64_t max_kv; /* longest sequence in keys (pos + n) */
    bool prepared;  /* built by step_begin from `prep` for the current step */
    const struct mm_span *prep;
    /* tiles of mm_k_flash_attend: (span, first row) pairs of the spans of at
     * least cu_ctx.flash_min rows, longest first within a span */
    int32_t *h_ftile, *d_ftile; /* [2 * (max_tokens / MM_K_FLASH_ROWS + n_slots + 1)] */
    int n_ftiles;
    int64_t flash_rows; /* rows those spans cover */
};

struct cu_stack {
    const struct mm_stack_config *cfg;
    struct cu_layer layers[MM_MAX_LAYERS];
    float *inv_freq; /* [d/2] RoPE frequencies, computed as the CPU does */
    struct cu_meta meta;
};

/* One cached cuBLASLt plan: y[n, N] (+)= x[n, K] W[N, K]^T. */
struct gemm_plan {
    bool used;
    int64_t n, N, K, ldx, ldy;
    bool acc, y_f32;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
    /* cuBLASLt's first candidates; tune_plan times them and keeps the fastest in algo */
    cublasLtMatmulAlgo_t cand[8];
    int n_cand;
    bool tuned;
};
#define GEMM_PLANS 1024
#define GEMM_PROBES 8 /* slots a shape may take, from its hash on */

/* Who computes a decode-sized GEMM: cuBLASLt, the skinny kernel on CUDA cores
 * (M <= 8) or on tensor cores (M <= 64), per weight shape and M bucket (1, 2,
 * <=4, <=8, <=16, <=32, <=64), chosen at load by timing them (bf16 only). */
enum gemm_impl { GEMM_LT, GEMM_SKINNY, GEMM_TC };
#define GEMM_BUCKETS 7
struct gemm_choice {
    int64_t N, K;
    bool swiglu, y_f32;
    uint8_t impl[GEMM_BUCKETS]; /* enum gemm_impl */
};
#define GEMM_CHOICES 16

struct cu_ctx {
    int device; /* made current by create, load, destroy and mm_cuda_backend_use */
    int sms;    /* its multiprocessors */
    struct mm_config cfg;
    bool f32;   /* element type: float, else bf16 */
    size_t esz; /* its size */
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_ws;
    size_t lt_ws_bytes;
    struct gemm_plan plans[GEMM_PLANS];
    struct gemm_choice choices[GEMM_CHOICES];
    int n_choices;

    struct cu_stack stacks[2];
    /* Mamba-2 prefill: spans of at least scan_min tokens take the chunked
     * scan (ssd.cu), shorter ones the token-sequential one (scan.cu); the
     * crossover is measured at load unless MMMAMBA_CUDA_SCAN sets it: seq
     * (never chunked), chunked (always), or a token count */
    int64_t scan_min;
    int64_t scan_force; /* 0: measure */
    bool ssd_ok;        /* the chunked kernels are ready (mm_k_ssd_prepare) */
    /* attention prefill: in the bf16 mode, spans of at least flash_min rows
     * of an eagerly run step take the tensor-core kernel (flash.cu) when the
     * head dim is 64 or 128; MMMAMBA_CUDA_FLASH=0 never, =N from N rows */
    int64_t flash_min;
    void *patch_w, *sh_w1, *sh_w2, *text_emb, *special_emb, *output;
    float *patch_b, *pos, *sh_b1, *sh_b2, *norm;
    int64_t n_special;
    void **allocs; /* every device allocation, for destroy */
    int n_allocs, cap_allocs;
    struct mm_act *acts;

    struct mm_backend_limits lim;
    int64_t state_elems; /* per slot */
    size_t state_esz;
    void *state;
    int64_t block_elems[2];
    void *kv[2];
    uint32_t *counts; /* [n_slots][vocab] token counts for the penalties (cpu_sample.h) */

    /* scratch (device) */
    void *s_u, *s_z, *s_m, *s_patch, *s_stage;
    float *s_conv, *s_y, *s_part, *s_logits, *s_work;
    struct mm_ksample *h_req, *d_req;     /* [logit_rows] */
    struct mm_ksample_out *h_out, *d_out; /* [logit_rows] */
    int64_t part_items, logit_rows, stage_bytes;
    /* host <-> device staging arena */
    uint8_t *h_arena, *d_arena;
    size_t arena_cap, arena_used;
    float *h_tmp; /* slot_read conversion buffer */

    /* sticky status */
    enum mm_status st;
    char msg[256];

    /* decode steps as CUDA graphs, one per batch-size bucket (graph_bucket:
     * a step of n sequences runs padded to its bucket), recorded by
     * step_begin/step_end; a capture that saw an op whose size is not the
     * padded batch's (g_exact) replays only for its exact n */
    enum { G_EAGER, G_CAPTURE, G_REPLAY } gmode;
    bool graphs_on, g_launched, g_exact;
    enum mm_k_overlap overlap; /* which kernels launch overlapping their predecessor */
    int skinny_force;  /* -1: timed per shape; 0: cuBLASLt; 1: skinny (M <= 8); 2: tensor-core */
    bool tune;         /* time cuBLASLt's candidates per decode size (choose_shape) */
    int n_real, n_pad; /* sequences of the current graph step, and its bucket */
    struct {
        int n, exact; /* bucket; exact n or -1 */
        cudaGraphExec_t exec;
        uint64_t used;
    } graphs[64];
    int n_graphs, g_cur;
    uint64_t g_clock;
    cudaEvent_t g_done;
    /* embeddings of a graph step wait here until the first mixer (fixed buffers) */
    int32_t *h_ids, *d_ids; /* [n_slots], zeroed: pad rows embed id 0 */
    bool pend;
    struct mm_act *pend_x;
    int64_t pend_row0, pend_n;

    /* MMMAMBA_CUDA_PROFILE=1: GPU time per kernel group (synchronises after
     * each; a diagnosis tool for `mmmamba bench`, printed at destroy) */
    bool prof;
    cudaEvent_t pe0, pe1;
    struct {
        char name[48];
        double ms;
        int64_t calls;
    } prof_tab[64];
    int n_prof;
};

/* ---- cuda_backend.c ---- */

/* The first failure of a backend: st = MM_ERR_BACKEND with "what: why". */
void mm_cuda_fail(struct cu_ctx *c, const char *what, const char *why);
/* e != cudaSuccess: mm_cuda_fail with the error's name; returns whether it failed. */
bool mm_cuda_check(struct cu_ctx *c, cudaError_t e, const char *what);
/* The same for a cuBLASLt status. */
bool mm_cuda_lt_check(struct cu_ctx *c, cublasStatus_t s, const char *what);
/* MMMAMBA_CUDA_PROFILE: GPU time of the kernels enqueued between begin and end, added to name. */
void mm_cuda_prof_begin(struct cu_ctx *c);
void mm_cuda_prof_end(struct cu_ctx *c, const char *name);
/* Row `row` of activation a on the device. */
void *mm_cuda_row_ptr(const struct cu_ctx *c, const struct mm_act *a, int64_t row);

/* ---- cuda_steps.c ---- */

/* backend.h step_begin / step_end: a decode step with graphs on is captured or replayed. */
void mm_cuda_step_begin(void *vctx, const struct mm_span *emb, const struct mm_span *llm,
                        int n_spans, bool decode);
void mm_cuda_step_end(void *vctx);
/* The padded batch size a decode graph of n sequences runs at (at most cap). */
int mm_cuda_graph_bucket(int n, int cap);
/* The span metadata of a stack for this step (built at layer 0, reused after), or NULL
 * on failure (sticky). */
struct cu_meta *mm_cuda_meta_for(struct cu_ctx *c, enum mm_stack stack, int layer,
                                 const struct mm_span *spans, int n_spans);
/* Enqueues the embedding a graph step held back until the first mixer. */
void mm_cuda_embed_flush(struct cu_ctx *c);
/* Every op but embed_tokens starts here (after flushing a held embedding): false when it
 * must enqueue nothing (a failure is pending, or a recorded graph replays this step). */
bool mm_cuda_op_begin(struct cu_ctx *c);
/* The rows an op runs on: n, or a graph step's padded batch. */
int64_t mm_cuda_op_rows(struct cu_ctx *c, int64_t n);

/* ---- cuda_gemm.c ---- */

/* y[n, N] (+)= x[n, K] . W[N, K]^T; x, W of the element type, y too unless y_f32. */
void mm_cuda_gemm(struct cu_ctx *c, const void *x, int64_t ldx, int64_t n, int64_t K, const void *W,
                  int64_t N, void *y, int64_t ldy, bool acc, bool y_f32);
/* h[n, F] = SiLU(u w1^T) * (u w3^T), w13 = [w1; w3] ([2F, K]); h13: scratch [n, 2F]. */
void mm_cuda_gemm_swiglu(struct cu_ctx *c, const void *u, int64_t n, int64_t K, const void *w13,
                         int64_t F, void *h13, void *h);
/* At load (weights and scratch in place): which path serves each weight shape at each
 * decode size, logged (bf16 only; the exact mode always takes cuBLASLt). */
void mm_cuda_choose_gemms(struct cu_ctx *c);
/* Frees the cached cuBLASLt plans. */
void mm_cuda_gemm_free(struct cu_ctx *c);

#endif
