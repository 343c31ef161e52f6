/* skinny.cu: GEMMs for decode-sized batches (M <= 8 rows), bf16 weights
 * streamed once at close to the read bandwidth, where cuBLAS leaves much of
 * it unused on our shapes (PERFORMANCE.md). The backend times these against
 * cuBLASLt per shape at load and keeps the faster.
 *
 * Design: one warp per two rows of W (for the fused w1+w3, the pair w1[j],
 * w3[j], with the SwiGLU in the epilogue); lanes walk K with 16-byte loads,
 * several in flight; x (M rows) comes through L1, shared by all warps of an
 * SM. fp32 accumulation, a warp reduction per output. CPU twin: mm_cpu_matmul
 * (and the SwiGLU loop of cpu_mlp). */
#include "common.cuh"

#define SK_WARPS 8
#define SK_UNROLL 4

static __device__ __forceinline__ void fma8(float &acc, uint4 w, uint4 x)
{
    const __nv_bfloat162 *wh = (const __nv_bfloat162 *)&w, *xh = (const __nv_bfloat162 *)&x;
#pragma unroll
    for (int e = 0; e < 4; e++) {
        const float2 a = __bfloat1622float2(wh[e]), b = __bfloat1622float2(xh[e]);
        acc = fmaf(a.x, b.x, acc);
        acc = fmaf(a.y, b.y, acc);
    }
}

template <int M, typename O>
__global__ void __launch_bounds__(32 * SK_WARPS)
    skinny_k(const bf16 *__restrict__ x, int64_t ldx, int mrows, const bf16 *__restrict__ W,
             int64_t N, int64_t K, O *y, int64_t ldy, bool acc, bool swiglu)
{
    const int lane = threadIdx.x & 31;
    const int64_t item = (int64_t)blockIdx.x * SK_WARPS + threadIdx.x / 32;
    /* plain: rows 2*item, 2*item + 1; swiglu: rows item (w1) and N + item (w3) */
    const int64_t r0 = swiglu ? item : 2 * item, r1 = swiglu ? N + item : 2 * item + 1;
    const bool live = swiglu ? item < N : r0 < N;
    const bool has1 = swiglu || r1 < N;
    const bf16 *w0 = W + (live ? r0 : 0) * K, *w1 = W + (live && has1 ? r1 : live ? r0 : 0) * K;
    constexpr int64_t PASS = 256 * SK_UNROLL; /* elements of K a warp reads per pass */
    /* The weights depend on no earlier kernel: the first pass comes into
     * registers and the rest of both rows into L2 while the kernel before
     * this one ends (common.cuh, launch()). */
    uint4 wv0[SK_UNROLL], wv1[SK_UNROLL];
#pragma unroll
    for (int u = 0; u < SK_UNROLL; u++) {
        const int64_t k = (int64_t)lane * 8 + 256 * u;
        if (live && k < K) {
            wv0[u] = __ldcs((const uint4 *)(w0 + k));
            wv1[u] = __ldcs((const uint4 *)(w1 + k));
        }
    }
    if (live && lane == 0 && K > PASS) {
        prefetch_l2(w0 + PASS, (uint32_t)((K - PASS) * 2));
        if (has1)
            prefetch_l2(w1 + PASS, (uint32_t)((K - PASS) * 2));
    }
    after_previous();
    if (!live)
        return;
    float a0[M], a1[M];
#pragma unroll
    for (int m = 0; m < M; m++)
        a0[m] = a1[m] = 0;
    for (int64_t k0 = (int64_t)lane * 8; k0 < K; k0 += PASS) {
        uint4 nv0[SK_UNROLL], nv1[SK_UNROLL]; /* the next pass, loading during this one */
#pragma unroll
        for (int u = 0; u < SK_UNROLL; u++) {
            const int64_t k = k0 + PASS + 256 * u;
            if (k < K) {
                nv0[u] = __ldcs((const uint4 *)(w0 + k));
                nv1[u] = __ldcs((const uint4 *)(w1 + k));
            }
        }
#pragma unroll
        for (int u = 0; u < SK_UNROLL; u++) {
            const int64_t k = k0 + 256 * u;
            if (k >= K)
                break;
#pragma unroll
            for (int m = 0; m < M; m++) {
                if (m >= mrows)
                    break;
                const uint4 xv = __ldg((const uint4 *)(x + m * ldx + k));
                fma8(a0[m], wv0[u], xv);
                fma8(a1[m], wv1[u], xv);
            }
        }
#pragma unroll
        for (int u = 0; u < SK_UNROLL; u++)
            wv0[u] = nv0[u], wv1[u] = nv1[u];
    }
#pragma unroll
    for (int m = 0; m < M; m++) {
        if (m >= mrows)
            break;
        const float s0 = warp_sum(a0[m]), s1 = warp_sum(a1[m]);
        if (lane != 0)
            continue;
        if (swiglu) {
            stf(y + m * ldy + item, silu(s0) * s1);
            continue;
        }
        O *y0 = y + m * ldy + r0;
        stf(y0, acc ? ldf(y0) + s0 : s0);
        if (has1)
            stf(y0 + 1, acc ? ldf(y0 + 1) + s1 : s1);
    }
}

template <typename O>
static void skinny_run(cudaStream_t s, const bf16 *x, int64_t ldx, int64_t M, const bf16 *W,
                       int64_t N, int64_t K, O *y, int64_t ldy, bool acc, bool swiglu)
{
    const int64_t items = swiglu ? N : (N + 1) / 2;
    const unsigned g = mm_blocks(items, SK_WARPS), b = 32 * SK_WARPS;
    const int m = (int)M;
    if (M <= 1)
        launch(s, g, b, 0, skinny_k<1, O>, x, ldx, m, W, N, K, y, ldy, acc, swiglu);
    else if (M <= 2)
        launch(s, g, b, 0, skinny_k<2, O>, x, ldx, m, W, N, K, y, ldy, acc, swiglu);
    else if (M <= 4)
        launch(s, g, b, 0, skinny_k<4, O>, x, ldx, m, W, N, K, y, ldy, acc, swiglu);
    else
        launch(s, g, b, 0, skinny_k<8, O>, x, ldx, m, W, N, K, y, ldy, acc, swiglu);
}

extern "C" cudaError_t mm_k_skinny(cudaStream_t s, const void *x, int64_t ldx, int64_t M,
                                   const void *W, int64_t N, int64_t K, void *y, int64_t ldy,
                                   bool acc, bool y_f32, bool swiglu)
{
    if (M <= 0)
        return cudaSuccess;
    if (M > MM_K_SKINNY_MAX_M || K % 8 != 0 || ldx % 8 != 0 || (swiglu && (y_f32 || acc)))
        return cudaErrorInvalidValue;
    if (y_f32)
        skinny_run(s, (const bf16 *)x, ldx, M, (const bf16 *)W, N, K, (float *)y, ldy, acc, false);
    else
        skinny_run(s, (const bf16 *)x, ldx, M, (const bf16 *)W, N, K, (bf16 *)y, ldy, acc, swiglu);
    return cudaGetLastError();
}
