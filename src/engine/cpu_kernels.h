/* cpu_kernels.h: the plain-C fp32 math of the CPU reference backend. Each
 * function is the twin of a CUDA kernel and the spelled-out form of an
 * equation in docs/model.md; tests compare the CUDA kernels against these.
 *
 * Conventions: row-major; y = x·Wᵀ with W stored [out, in] as in the
 * checkpoint; no allocation; `tp` may be NULL (single-threaded). */
#ifndef MM_ENGINE_CPU_KERNELS_H
#define MM_ENGINE_CPU_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "base/threadpool.h"

/* y[n, N] (+)= x[n, K] · W[N, K]ᵀ (+ bias[N] when bias != NULL). */
void mm_cpu_matmul(struct mm_threadpool *tp, const float *x, int64_t n, int64_t K, const float *W,
                   int64_t N, const float *bias, float *y, bool accumulate);

/* out[i] = x[i] · rsqrt(mean(x[i]²) + eps) · w, rows of width H. */
void mm_cpu_rmsnorm(const float *x, int64_t n, int64_t H, const float *w, float eps, float *out);

float mm_cpu_silu(float x);
/* GELU, exact erf form: x/2 · (1 + erf(x/√2)). */
float mm_cpu_gelu(float x);
/* softplus(x) = log(1 + eˣ), = x for x > 20 (PyTorch's threshold). */
float mm_cpu_softplus(float x);

/* Depthwise causal conv, kernel 2, then SiLU, over T tokens of C channels:
 * out[t][c] = SiLU(w[c][0]·x[t−1][c] + w[c][1]·x[t][c] + b[c]), x[−1] = state.
 * Then state <- x[T−1] (the last pre-conv column). x and out have row
 * stride ld_x and ld_out. */
void mm_cpu_conv2_silu(const float *x, int64_t ld_x, int64_t T, int64_t C, const float *w,
                       const float *b, float *state, float *out, int64_t ld_out);

/* Mamba-2 recurrence for one head over T tokens (docs/model.md §3.3):
 *   S[t] = exp(Δ[t]·A)·S[t−1] + Δ[t]·x[t]⊗B[t];  y[t][p] = Σ_n C[t][n]·S[t][p,n]
 * with Δ[t] = softplus(dt_raw[t] + dt_bias). S is d×d (p rows, n columns),
 * updated in place. x, B, C, dt_raw, y are strided rows (ld_* elements). */
void mm_cpu_ssm_scan(int64_t T, int64_t d, const float *x, const float *B, const float *C,
                     int64_t ld_in, const float *dt_raw, int64_t ld_dt, float dt_bias, float A,
                     float *S, float *y, int64_t ld_y);

/* Gated RMSNorm of one head (eps 1e-5 fixed):
 * o = y·rsqrt(mean(y²) + 1e-5)·w·g·sigmoid(g), d values; o may alias y. */
void mm_cpu_gated_rmsnorm(const float *y, const float *g, const float *w, int64_t d, float *o);

/* RoPE, rotate-half over d dims at position pos: for i < d/2,
 * x'_i = x_i cos θ_i − x_{i+d/2} sin θ_i, x'_{i+d/2} = x_{i+d/2} cos θ_i + x_i sin θ_i,
 * θ_i = pos · base^(−2i/d) (fp32, as the reference tables). */
void mm_cpu_rope(float *x, int64_t d, int64_t pos, float base);

/* Causal softmax attention of one query head against n_kv cached keys and
 * values (rows of width d, located through get_kv): out = Σ softmax(q·k/√d) v. */
void mm_cpu_attend(const float *q, int64_t d, int64_t n_kv,
                   const float *(*get_k)(const void *arg, int64_t i),
                   const float *(*get_v)(const void *arg, int64_t i), const void *arg, float *out,
                   float *scores);

/* PyTorch bicubic resize (A = −0.75, align_corners=False, clamped borders)
 * of a g×g grid of H-vectors to P×P. in [g*g, H], out [P*P, H]. */
void mm_cpu_bicubic_grid(const float *in, int64_t g, int64_t H, int64_t P, float *out);

#endif
