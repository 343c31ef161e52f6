/* kernels.h: the C interface of the CUDA kernels (the .cu files of kernels/), included by
 * the CUDA backend (src/engine/cuda_backend.c) alone.
 *
 * Design: each launcher enqueues on the given stream and returns the launch's
 * cudaError_t (never synchronises). Activations and weight matrices are of
 * one element type per backend, chosen at run time: `f32` true for float (the
 * exact mode), false for bf16 (serving); norms' weights, biases, conv
 * parameters, the scan's intermediates and attention partials are always
 * float. Row-major throughout; a weight W is [out, in] as in the checkpoint.
 * Each family's CPU twin is named in kernels/README.md. */
#ifndef MM_KERNELS_KERNELS_H
#define MM_KERNELS_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "base/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tokens per KV block: MM_KV_BLOCK of engine/backend.h (the backend checks they agree). */
#define MM_K_KV_BLOCK 16

/* One sequence of a varlen token batch, as the kernels see it (device copy
 * of struct mm_span plus where its KV block table starts in the flat table). */
struct mm_kspan {
    int64_t row; /* first row in the batch */
    int64_t n;   /* tokens */
    int64_t pos; /* position of the first token */
    int64_t blk; /* offset of its block table in the flat table (attention) */
    int32_t slot;
    int32_t pad;
};

/* Recurrent state of every slot: slot s, layer at element offset off:
 * base + s * slot_elems + off, float or bf16 (state_f32). */
struct mm_kstate {
    void *base;
    int64_t slot_elems;
    int64_t off;
    bool f32;
};

/* ---- launch.cu: how the launchers below enqueue ------------------------------------- */

/* Which kernels may start while the one before them in their stream ends (programmatic
 * dependent launch; each waits for that kernel's writes before touching activations), so
 * their launch and ramp-up hide behind the previous kernel's tail: none, the GEMMs that
 * stream weights (they fetch their first weights before that wait), or every kernel.
 * Needs sm_90 or later; returns the mode in force. Process-wide; set it while no work is
 * in flight. */
enum mm_k_overlap { MM_K_OVERLAP_NONE, MM_K_OVERLAP_GEMM, MM_K_OVERLAP_ALL };
enum mm_k_overlap mm_k_set_overlap(enum mm_k_overlap mode);

/* ---- embed.cu: conversion, gathers, vision front end ---------------------------- */

/* dst[i] = (float or bf16) src[i], src of type t (F32, F16 or BF16). */
cudaError_t mm_k_convert(cudaStream_t s, const void *src, enum mm_dtype t, void *dst, bool f32,
                         int64_t n);
/* x[i] = text[ids[i]] when ids[i] < Ve, else special[ids[i] - Ve]; rows of H. */
cudaError_t mm_k_embed(cudaStream_t s, bool f32, const int32_t *ids, int64_t n, const void *text,
                       int64_t Ve, const void *special, int64_t H, void *x);
/* im2col of n_tiles fp32 tiles [3, S, S] into rows [n*P*P, 3*p*p] (weight order ch, ki, kj). */
cudaError_t mm_k_im2col(cudaStream_t s, bool f32, const float *tiles, int64_t n_tiles, int64_t S,
                        int64_t p, void *out);
/* x[r][k] = act(x[r][k] + bias[k] + (pos ? pos[r % pos_rows][k] : 0)); act GELU (erf) if gelu. */
cudaError_t mm_k_bias_act(cudaStream_t s, bool f32, void *x, int64_t rows, int64_t cols,
                          const float *bias, const float *pos, int64_t pos_rows, bool gelu);
/* 2x2 pixel shuffle of n_tiles tiles of P*P rows (in) into n*(P/2)^2 rows of 4H (out). */
cudaError_t mm_k_shuffle_gather(cudaStream_t s, bool f32, const void *in, int64_t n_tiles,
                                int64_t P, int64_t H, void *out);

/* ---- norm.cu ---------------------------------------------------------------------- */

/* out[i] = x[rows ? rows[i] : i] * rsqrt(mean(x²) + eps) * w; out of type out_f32 ? float : act. */
cudaError_t mm_k_rmsnorm(cudaStream_t s, bool f32, const void *x, const int64_t *rows, int64_t n,
                         int64_t H, const float *w, float eps, void *out, bool out_f32);
/* x[i] /= max(||x[i]||, 1e-12). */
cudaError_t mm_k_l2norm(cudaStream_t s, bool f32, void *x, int64_t n, int64_t H);
/* out[t][h*d + k] = y * rsqrt(mean_k(y²) + 1e-5) * w[k] * silu(g), g = z[t][g_off + h*d + k]. */
cudaError_t mm_k_gated_rmsnorm(cudaStream_t s, bool f32, const float *y, const void *z, int64_t ldz,
                               int64_t g_off, int64_t T, int64_t nh, int64_t d, const float *w,
                               void *out);
/* out[t][j] = silu(h[t][j]) * h[t][F + j]. */
cudaError_t mm_k_swiglu(cudaStream_t s, bool f32, const void *h, int64_t T, int64_t F, void *out);

/* ---- conv.cu: the causal depthwise conv (kernel 2) + SiLU, varlen --------------- */

/* out[t][c] = silu(w[c][0] * prev + w[c][1] * z[t][c] + b[c]), prev = z[t-1][c] inside a
 * span and the slot's conv state at its first token. Reads state only. */
cudaError_t mm_k_conv2(cudaStream_t s, bool f32, const void *z, int64_t ldz, int64_t T, int64_t C,
                       const float *w, const float *b, const struct mm_kspan *spans,
                       const int32_t *tok_span, struct mm_kstate st, float *out);
/* state of each span's slot = z[last row of the span][0, C). After mm_k_conv2. */
cudaError_t mm_k_conv2_state(cudaStream_t s, bool f32, const void *z, int64_t ldz, int64_t C,
                             const struct mm_kspan *spans, int n_spans, struct mm_kstate st);

/* ---- scan.cu: the Mamba-2 recurrence, varlen, state in place by slot ------------ */

/* Per span and head h (kv head h / (nh / kvh)): S = slot state [d][d] (conv state of C
 * values first, so the SSM state is at st.off + C + h*d*d); for each token
 * dt = softplus(z[t][dt_off + h] + dt_bias[h]); S = exp(dt*A[h]) S + dt x ⊗ B;
 * y[t][h*d + p] = Σ_n C[n] S[p][n]; x = u[t][kvh_i*d..], B = u[t][kvd + kvh_i*d..],
 * C = u[t][2kvd + h*d..] (u: conv output, [T, C]). S written back at the end. */
cudaError_t mm_k_ssm_scan(cudaStream_t s, const float *u, int64_t C, const void *z, bool f32,
                          int64_t ldz, int64_t dt_off, const struct mm_kspan *spans, int n_spans,
                          int64_t nh, int64_t kvh, int64_t d, const float *dt_bias, const float *A,
                          struct mm_kstate st, float *y);

/* ---- ssd.cu: the same recurrence in chunked (SSD) form, for prefill spans --------- */

/* Same contract as mm_k_ssm_scan (results equal to rounding: bf16 tensor-core
 * operands in the serving mode, ~fp32 in the exact mode). Head dims 16, 32, 64,
 * 128. mm_k_ssd_prepare(f32, d) must have succeeded once before (at load, not
 * during a graph capture): it raises the kernel's shared-memory limit, and
 * fails (cudaErrorInvalidValue) for another head dim or a GPU with too
 * little shared memory per block (then use mm_k_ssm_scan). */
cudaError_t mm_k_ssd_prepare(bool f32, int64_t d);
cudaError_t mm_k_ssd_scan(cudaStream_t s, const float *u, int64_t C, const void *z, bool f32,
                          int64_t ldz, int64_t dt_off, const struct mm_kspan *spans, int n_spans,
                          int64_t nh, int64_t kvh, int64_t d, const float *dt_bias, const float *A,
                          struct mm_kstate st, float *y);

/* The decode step of a Mamba-2 layer when every span has one token, fused:
 * conv (reading the slot's conv state; mm_k_conv2_state writes it after), the
 * state update in place, y = C.S and the gated RMSNorm into out [n][nh*d].
 * Head dims 64 and 128 (else cudaErrorInvalidValue: use the general path). */
cudaError_t mm_k_ssm_decode(cudaStream_t s, bool f32, const void *z, int64_t ldz, int64_t C,
                            const float *conv_w, const float *conv_b, const struct mm_kspan *spans,
                            int n_spans, int64_t nh, int64_t kvh, int64_t d, const float *dt_bias,
                            const float *A, const float *gnorm, struct mm_kstate st, void *out);

/* ---- attention.cu: RoPE, paged KV, attention ------------------------------------- */

/* Paged KV cache of one stack: block b, layer at element offset off; K rows
 * [MM_K_KV_BLOCK][kvd] then V rows. */
struct mm_kkv {
    void *base;
    int64_t block_elems;
    int64_t off;
    const int32_t *blocks; /* flat block tables, span i's at spans[i].blk */
};

/* RoPE (rotate-half; angle pos * inv_freq[i] in fp32, inv_freq [d/2] computed on the
 * host as the CPU does) on the q heads and k of qkv rows [T][(nh + 2kv) d] (per kv
 * head j: q_{gj..gj+g-1}, k_j, v_j) in place, then k and v into the cache. */
cudaError_t mm_k_rope_kv(cudaStream_t s, bool f32, void *qkv, int64_t T, const int32_t *tok_span,
                         const struct mm_kspan *spans, int64_t nh, int64_t kv, int64_t d,
                         const float *inv_freq, struct mm_kkv cache);
/* Causal attention of every q head of every row against keys [0, pos] of its sequence in
 * the cache; keys split in n_split ranges (flash-decoding), partials in part
 * [T * nh * n_split * (d + 2)], merged into out [T][nh*d]. Rows of spans of at
 * least skip_n tokens are left alone (mm_k_flash_attend's; INT64_MAX: none). */
cudaError_t mm_k_attend(cudaStream_t s, bool f32, const void *qkv, int64_t T,
                        const int32_t *tok_span, const struct mm_kspan *spans, int64_t nh,
                        int64_t kv, int64_t d, struct mm_kkv cache, int n_split, int64_t skip_n,
                        float *part, void *out);

/* mm_k_attend for a batch of decode rows (row i is span i, one token each) in bf16:
 * every q head of a kv group scored from one read of its keys and values. Head dims
 * 64 and 128, nh / kv at most 8 (else cudaErrorInvalidValue: use mm_k_attend). */
cudaError_t mm_k_attend_decode(cudaStream_t s, const void *qkv, int64_t T,
                               const int32_t *tok_span, const struct mm_kspan *spans, int64_t nh,
                               int64_t kv, int64_t d, struct mm_kkv cache, int n_split,
                               float *part, void *out);

/* ---- flash.cu: prefill attention on tensor cores (bf16 only) ----------------------- */

/* Query rows per tile of mm_k_flash_attend. */
#define MM_K_FLASH_ROWS 64

/* mm_k_attend's result (same qkv, cache, out layouts; keys written by
 * mm_k_rope_kv) for the rows of n_tiles tiles: tile i is rows
 * [tiles[2i + 1], + MM_K_FLASH_ROWS) of span tiles[2i] (clipped to the span;
 * tiles[2i + 1] a multiple of MM_K_FLASH_ROWS). bf16 operands, fp32
 * accumulation and softmax. Head dims 64 and 128, nh a multiple of kv
 * (else cudaErrorInvalidValue: use mm_k_attend). */
cudaError_t mm_k_flash_attend(cudaStream_t s, const void *qkv, const struct mm_kspan *spans,
                              const int32_t *tiles, int n_tiles, int64_t nh, int64_t kv, int64_t d,
                              struct mm_kkv cache, void *out);

/* ---- sample.cu: the sampler of backend.h `sample`, one block per request ---------- */

#define MM_K_MAX_LOGPROBS 20 /* MM_MAX_LOGPROBS */
#define MM_K_COUNT_PROMPT 0x80000000u
#define MM_K_COUNT_OUTPUT 0x7fffffffu

/* One request: row i of the logits; the slot's counts; struct mm_sample_params. */
struct mm_ksample {
    uint64_t seed;
    int32_t slot;
    uint32_t stream, counter;
    float temperature;
    int32_t top_k;
    float top_p, min_p, repetition, presence, frequency;
    int32_t n_logprobs;
};

struct mm_ksample_out {
    int32_t id;
    float logprob;
    int32_t n_top;
    int32_t top_ids[MM_K_MAX_LOGPROBS];
    float top_logprobs[MM_K_MAX_LOGPROBS];
};

/* For each of n requests: logits row i [V] (raw, kept), work row i [V]
 * (scratch), counts [n_slots][V] (the chosen id counted as output). */
cudaError_t mm_k_sample(cudaStream_t s, const float *logits, float *work, int64_t V,
                        const struct mm_ksample *reqs, int n, uint32_t *counts,
                        struct mm_ksample_out *out);
/* counts[slot][ids[i]]: output ? += 1 (saturating) : |= MM_K_COUNT_PROMPT; ids outside
 * [0, V) ignored. */
cudaError_t mm_k_count(cudaStream_t s, uint32_t *counts, int64_t V, int32_t slot,
                       const int32_t *ids, int64_t n, bool output);

/* ---- skinny.cu: GEMMs of decode-sized batches (bf16 only) ----------------------------- */

/* Most rows of x the skinny kernels take. */
#define MM_K_SKINNY_MAX_M 8

/* y[m][j] (+)= x[m] . W[j] for m < M <= MM_K_SKINNY_MAX_M, j < N, one warp per two
 * rows of W streamed with 16-byte loads; y bf16, or fp32 when y_f32 (the LM head).
 * K and ldx must be multiples of 8. swiglu: W is [2F, K] (w1 rows then w3 rows),
 * N = F and y[m][j] = silu(x.w1[j]) * (x.w3[j]) (never accumulated). */
cudaError_t mm_k_skinny(cudaStream_t s, const void *x, int64_t ldx, int64_t M, const void *W,
                        int64_t N, int64_t K, void *y, int64_t ldy, bool acc, bool y_f32,
                        bool swiglu);

/* Most rows of x the tensor-core skinny kernels take. */
#define MM_K_SKINNY_TC_MAX_M 64

/* As mm_k_skinny, on tensor cores (mma.sync, fp32 accumulation) for M <= 64: 16 rows
 * of W (8 of w1 over 8 of w3 for swiglu) per warp against all M rows of x, K split
 * over up to 8 warps when the matrix is small. */
cudaError_t mm_k_skinny_tc(cudaStream_t s, const void *x, int64_t ldx, int64_t M, const void *W,
                           int64_t N, int64_t K, void *y, int64_t ldy, bool acc, bool y_f32,
                           bool swiglu);

/* ---- bench.cu: the device's ceilings, measured by `mmmamba bench` --------------------- */

/* Reads n16 16-byte words (a streaming read; the sum goes to *sink). */
cudaError_t mm_k_read_stream(cudaStream_t s, const void *p, int64_t n16, float *sink);
/* p[i] = a bf16 pseudo-random value in [-1, 1) from (seed, i). */
cudaError_t mm_k_fill_random(cudaStream_t s, void *p, int64_t n, uint32_t seed);

#ifdef __cplusplus
}
#endif

#endif
