/* skinny.cu: GEMMs for decode-sized batches (M <= 64 rows), bf16 weights
 * streamed once at close to the read bandwidth, where cuBLAS leaves much of
 * it unused on our shapes (PERFORMANCE.md). The backend times these against
 * cuBLASLt per shape and M at load and keeps the fastest.
 *
 * On CUDA cores (M <= 8): one warp per two rows of W (for the fused w1+w3,
 * the pair w1[j], w3[j], with the SwiGLU in the epilogue); lanes walk K with
 * 16-byte loads, several in flight; x (M rows) comes through L1, shared by
 * all warps of an SM; a warp reduction per output. On tensor cores (M <= 64):
 * see skinny_tc_k. fp32 accumulation in both. CPU twin: mm_cpu_matmul (and
 * the SwiGLU loop of cpu_mlp). */
#include "common.cuh"

#define SK_WARPS 8
#define SK_UNROLL 4

/* Slice `slice` of ks of [0, K) in whole 8-element chunks: [lo, hi). */
static __device__ __forceinline__ void k_slice(int64_t K, int ks, int slice, int64_t &lo,
                                               int64_t &hi)
{
    const int64_t len = (K / 8 + ks - 1) / ks * 8;
    lo = slice * len;
    hi = lo + len < K ? lo + len : K;
}

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
             int64_t N, int64_t K, int ks, O *y, int64_t ldy, bool acc, bool swiglu)
{
    __shared__ float red[SK_WARPS][M][2];
    const int w = threadIdx.x / 32, lane = threadIdx.x & 31, slice = w % ks;
    const int64_t item = (int64_t)blockIdx.x * (SK_WARPS / ks) + w / ks;
    /* plain: rows 2*item, 2*item + 1; swiglu: rows item (w1) and N + item (w3) */
    const int64_t r0 = swiglu ? item : 2 * item, r1 = swiglu ? N + item : 2 * item + 1;
    const bool live = swiglu ? item < N : r0 < N;
    const bool has1 = swiglu || r1 < N;
    const bf16 *w0 = W + (live ? r0 : 0) * K, *w1 = W + (live && has1 ? r1 : live ? r0 : 0) * K;
    int64_t k_lo, k_hi; /* this warp's slice of K (ks warps of the block share the two rows) */
    k_slice(K, ks, slice, k_lo, k_hi);
    constexpr int64_t PASS = 256 * SK_UNROLL; /* elements of K a warp reads per pass */
    /* The weights depend on no earlier kernel: the first pass comes into
     * registers and the rest of the slice of both rows into L2 while the
     * kernel before this one ends (common.cuh, launch()). */
    uint4 wv0[SK_UNROLL], wv1[SK_UNROLL];
#pragma unroll
    for (int u = 0; u < SK_UNROLL; u++) {
        const int64_t k = k_lo + (int64_t)lane * 8 + 256 * u;
        if (live && k < k_hi) {
            wv0[u] = __ldcs((const uint4 *)(w0 + k));
            wv1[u] = __ldcs((const uint4 *)(w1 + k));
        }
    }
    if (live && lane == 0 && k_hi - k_lo > PASS) {
        prefetch_l2(w0 + k_lo + PASS, (uint32_t)((k_hi - k_lo - PASS) * 2));
        if (has1)
            prefetch_l2(w1 + k_lo + PASS, (uint32_t)((k_hi - k_lo - PASS) * 2));
    }
    after_previous();
    float a0[M], a1[M];
#pragma unroll
    for (int m = 0; m < M; m++)
        a0[m] = a1[m] = 0;
    for (int64_t k0 = k_lo + (int64_t)lane * 8; live && k0 < k_hi; k0 += PASS) {
        if (k0 >= k_lo + PASS) {
#pragma unroll
            for (int u = 0; u < SK_UNROLL; u++) {
                const int64_t k = k0 + 256 * u;
                if (k < k_hi) {
                    wv0[u] = __ldcs((const uint4 *)(w0 + k));
                    wv1[u] = __ldcs((const uint4 *)(w1 + k));
                }
            }
        }
#pragma unroll
        for (int u = 0; u < SK_UNROLL; u++) {
            const int64_t k = k0 + 256 * u;
            if (k >= k_hi)
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
    }
#pragma unroll
    for (int m = 0; m < M; m++) {
        a0[m] = warp_sum(a0[m]);
        a1[m] = warp_sum(a1[m]);
    }
    if (ks > 1) { /* the slices of a row pair meet in shared memory */
        if (lane == 0)
#pragma unroll
            for (int m = 0; m < M; m++)
                red[w][m][0] = a0[m], red[w][m][1] = a1[m];
        __syncthreads();
        if (slice != 0)
            return;
        for (int o = 1; o < ks; o++)
#pragma unroll
            for (int m = 0; m < M; m++)
                a0[m] += red[w + o][m][0], a1[m] += red[w + o][m][1];
    }
    if (!live || lane != 0)
        return;
#pragma unroll
    for (int m = 0; m < M; m++) {
        if (m >= mrows)
            break;
        if (swiglu) {
            stf(y + m * ldy + item, silu(a0[m]) * a1[m]);
            continue;
        }
        O *y0 = y + m * ldy + r0;
        stf(y0, acc ? ldf(y0) + a0[m] : a0[m]);
        if (has1)
            stf(y0 + 1, acc ? ldf(y0 + 1) + a1[m] : a1[m]);
    }
}

/* ---- on tensor cores: M up to 64 ---------------------------------------------------
 * y^T = W x^T as mma.sync m16n8k16 tiles: 16 rows of W are the A operand, up to
 * 8 rows of x (columns of y^T) each B operand, NT of them for M <= 8 NT. A
 * thread loads 8 consecutive k of its rows (16 bytes) and the same 8 k of its
 * x row, and gives them to two k16 steps in one order for both operands (the
 * sum over k does not care which k sits where in a fragment). Swiglu tiles
 * are 8 rows of w1 over the matching 8 of w3, so silu(w1 x) * (w3 x) meets
 * in one thread's accumulators. A block's 8 warps take 8/KS tiles, KS warps
 * per tile splitting K, summed through shared memory; KS is chosen so that
 * a decode-sized matrix still puts enough loads in flight. */
#define TC_U 4              /* 32-k chunks a warp has in flight per pass */
#define TC_PASS (32 * TC_U) /* k per pass */

template <int NT, typename O>
__global__ void __launch_bounds__(32 * SK_WARPS, 2)
    skinny_tc_k(const bf16 *__restrict__ x, int64_t ldx, int mrows, const bf16 *__restrict__ W,
                int64_t N, int64_t K, int ks, O *y, int64_t ldy, bool acc, bool swiglu)
{
    __shared__ float red[SK_WARPS][NT * 4][32];
    const int w = threadIdx.x / 32, lane = threadIdx.x & 31, g = lane / 4, t = lane % 4;
    const int slice = w % ks;
    const int64_t tile = (int64_t)blockIdx.x * (SK_WARPS / ks) + w / ks;
    const int64_t f0 = tile * (swiglu ? 8 : 16); /* first output feature of the tile */
    const bool live = f0 < N;
    /* this thread's two rows of W (clamped into the matrix; results past N are dropped) */
    int64_t ra, rb;
    if (swiglu) {
        const int64_t j = f0 + g < N ? f0 + g : N - 1;
        ra = j, rb = N + j;
    } else {
        ra = f0 + g < N ? f0 + g : N - 1;
        rb = f0 + g + 8 < N ? f0 + g + 8 : N - 1;
    }
    int64_t k_lo, k_hi;
    k_slice(K, ks, slice, k_lo, k_hi);
    const bf16 *wa = W + ra * K, *wb = W + rb * K;
    /* the first pass of weights before the previous kernel ends (common.cuh);
     * the rest of the slice of the warp's 16 rows asked of L2 */
    uint4 A[TC_U][2];
#pragma unroll
    for (int u = 0; u < TC_U; u++) {
        const int64_t k = k_lo + 32 * u + 8 * t;
        const bool ok = live && k < k_hi;
        A[u][0] = ok ? __ldcs((const uint4 *)(wa + k)) : make_uint4(0, 0, 0, 0);
        A[u][1] = ok ? __ldcs((const uint4 *)(wb + k)) : make_uint4(0, 0, 0, 0);
    }
    if (live && lane < 16 && k_hi - k_lo > TC_PASS) { /* lane l: the tile's row l */
        const int64_t f = f0 + (swiglu ? lane % 8 : lane);
        if (f < N)
            prefetch_l2(W + (swiglu && lane >= 8 ? N + f : f) * K + k_lo + TC_PASS,
                        (uint32_t)((k_hi - k_lo - TC_PASS) * 2));
    }
    after_previous();
    float c[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++)
        c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0;
    for (int64_t k0 = k_lo; k0 < k_hi; k0 += TC_PASS) {
        if (k0 > k_lo) {
#pragma unroll
            for (int u = 0; u < TC_U; u++) {
                const int64_t k = k0 + 32 * u + 8 * t;
                const bool ok = live && k < k_hi;
                A[u][0] = ok ? __ldcs((const uint4 *)(wa + k)) : make_uint4(0, 0, 0, 0);
                A[u][1] = ok ? __ldcs((const uint4 *)(wb + k)) : make_uint4(0, 0, 0, 0);
            }
        }
#pragma unroll
        for (int u = 0; u < TC_U; u++) {
            const int64_t k = k0 + 32 * u + 8 * t;
            if (!live || k0 + 32 * u >= k_hi)
                break;
            const uint32_t a0[4] = {A[u][0].x, A[u][1].x, A[u][0].y, A[u][1].y};
            const uint32_t a1[4] = {A[u][0].z, A[u][1].z, A[u][0].w, A[u][1].w};
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const int n = 8 * j + g;
                const uint4 b = n < mrows && k < k_hi ? __ldg((const uint4 *)(x + n * ldx + k))
                                                      : make_uint4(0, 0, 0, 0);
                mma_bf16(c[j], a0, b.x, b.y);
                mma_bf16(c[j], a1, b.z, b.w);
            }
        }
    }
    if (ks > 1) {
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                red[w][j * 4 + e][lane] = c[j][e];
        __syncthreads();
        if (slice != 0)
            return;
        for (int o = 1; o < ks; o++)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    c[j][e] += red[w + o][j * 4 + e][lane];
    }
    if (!live)
        return;
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int h = 0; h < 2; h++) { /* columns 2t + h */
            const int n = 8 * j + 2 * t + h;
            if (n >= mrows)
                continue;
            O *yr = y + n * ldy;
            if (swiglu) {
                if (f0 + g < N)
                    stf(yr + f0 + g, silu(c[j][h]) * c[j][2 + h]);
                continue;
            }
            const int64_t r0 = f0 + g, r1 = f0 + g + 8;
            if (r0 < N)
                stf(yr + r0, acc ? ldf(yr + r0) + c[j][h] : c[j][h]);
            if (r1 < N)
                stf(yr + r1, acc ? ldf(yr + r1) + c[j][2 + h] : c[j][2 + h]);
        }
}

/* Warps per SM the skinny launchers aim to keep busy, and the SM count (cached). */
#define SK_TARGET_WARPS 24
static int sk_sms(void)
{
    static int sms = 0;
    if (sms == 0) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
            sms = 132;
    }
    return sms;
}

/* K split over ks warps (a power of two up to a block) while items * ks warps
 * stay within the target and every slice keeps at least `pass` elements. */
static int sk_split(int64_t items, int64_t K, int64_t pass)
{
    int ks = 1;
    while (ks < SK_WARPS && items * ks * 2 <= (int64_t)sk_sms() * SK_TARGET_WARPS &&
           K / (ks * 2) >= pass)
        ks *= 2;
    return ks;
}

template <typename O>
static void skinny_tc_run(cudaStream_t s, const bf16 *x, int64_t ldx, int64_t M, const bf16 *W,
                          int64_t N, int64_t K, O *y, int64_t ldy, bool acc, bool swiglu)
{
    const int64_t tiles = swiglu ? (N + 7) / 8 : (N + 15) / 16;
    const int ks = sk_split(tiles, K, TC_PASS);
    const unsigned g = mm_blocks(tiles, SK_WARPS / ks), b = 32 * SK_WARPS;
    const int m = (int)M;
    if (M <= 8)
        launch<true>(s, g, b, 0, skinny_tc_k<1, O>, x, ldx, m, W, N, K, ks, y, ldy, acc, swiglu);
    else if (M <= 16)
        launch<true>(s, g, b, 0, skinny_tc_k<2, O>, x, ldx, m, W, N, K, ks, y, ldy, acc, swiglu);
    else if (M <= 32)
        launch<true>(s, g, b, 0, skinny_tc_k<4, O>, x, ldx, m, W, N, K, ks, y, ldy, acc, swiglu);
    else
        launch<true>(s, g, b, 0, skinny_tc_k<8, O>, x, ldx, m, W, N, K, ks, y, ldy, acc, swiglu);
}

template <typename O>
static void skinny_run(cudaStream_t s, const bf16 *x, int64_t ldx, int64_t M, const bf16 *W,
                       int64_t N, int64_t K, O *y, int64_t ldy, bool acc, bool swiglu)
{
    const int64_t items = swiglu ? N : (N + 1) / 2;
    const int ks = sk_split(items, K, 256 * SK_UNROLL);
    const unsigned g = mm_blocks(items, SK_WARPS / ks), b = 32 * SK_WARPS;
    const int m = (int)M;
    if (M <= 1)
        launch<true>(s, g, b, 0, skinny_k<1, O>, x, ldx, m, W, N, K, ks, y, ldy, acc, swiglu);
    else if (M <= 2)
        launch<true>(s, g, b, 0, skinny_k<2, O>, x, ldx, m, W, N, K, ks, y, ldy, acc, swiglu);
    else if (M <= 4)
        launch<true>(s, g, b, 0, skinny_k<4, O>, x, ldx, m, W, N, K, ks, y, ldy, acc, swiglu);
    else
        launch<true>(s, g, b, 0, skinny_k<8, O>, x, ldx, m, W, N, K, ks, y, ldy, acc, swiglu);
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

extern "C" cudaError_t mm_k_skinny_tc(cudaStream_t s, const void *x, int64_t ldx, int64_t M,
                                      const void *W, int64_t N, int64_t K, void *y, int64_t ldy,
                                      bool acc, bool y_f32, bool swiglu)
{
    if (M <= 0)
        return cudaSuccess;
    if (M > MM_K_SKINNY_TC_MAX_M || K % 8 != 0 || ldx % 8 != 0 || (swiglu && (y_f32 || acc)))
        return cudaErrorInvalidValue;
    if (y_f32)
        skinny_tc_run(s, (const bf16 *)x, ldx, M, (const bf16 *)W, N, K, (float *)y, ldy, acc,
                      false);
    else
        skinny_tc_run(s, (const bf16 *)x, ldx, M, (const bf16 *)W, N, K, (bf16 *)y, ldy, acc,
                      swiglu);
    return cudaGetLastError();
}
