/* ssd.cu: the Mamba-2 scan of prefill in chunked (SSD) form: the same
 * recurrence as scan.cu over a varlen batch, state read from and written back
 * to each span's slot, but chunks of L = 64 tokens at a time as small matrix
 * products on tensor cores instead of one token at a time.
 *
 * Design: one fused kernel, no intermediates in global memory. A block owns
 * P = 16 state rows p of one head of one sequence (so a long prompt's 16
 * heads x 128 rows give 128 blocks) and walks that sequence's chunks in order,
 * keeping its slice of the state as fp32 tensor-core accumulators in
 * registers. For a chunk with log-decays a_t = Δ_t·A, cumulative cs_t (inclusive):
 *   y_t[p]  = Σ_{s≤t} (C_t·B_s) e^{cs_t−cs_s} Δ_s x_s[p]  +  e^{cs_t} C_t·S[p]
 *   S'[p]   = e^{cs_L} S[p] + Σ_s e^{cs_L−cs_s} Δ_s x_s[p] B_s
 * i.e. G = C Bᵀ (lower tiles only), M = G ∘ decay ∘ Δ (masked), Y = M X +
 * (e^{cs} C) Sᵀ, S' = e^{cs_L} S + (w X)ᵀ B. Operands are bf16 in the serving
 * mode (as the reference's Triton SSD), or float split into two tf32 halves
 * with three products each (≈ fp32: the exact mode the tests compare with
 * the CPU). The next chunk's inputs are loaded into registers while the
 * current one is computed. Chunks start at each span's first token, so a
 * prompt prefilled in pieces across steps equals one pass (to rounding).
 * CPU twin: mm_cpu_ssm_scan (the sequential form of the same recurrence). */
#include <mma.h>

#include "common.cuh"

using namespace nvcuda;

#define SSD_L 64  /* tokens per chunk */
#define SSD_P 16  /* state rows per block */
#define SSD_NW 8  /* warps per block */
#define SSD_NT (32 * SSD_NW)
#define SSD_LOG2E 1.4426950408889634f

/* ---- tensor-core tile products from shared memory ----------------------------- */

template <typename OT> struct ssd_mma;

/* bf16 operands, fp32 accumulation: one mma per 16x16x16 step */
template <> struct ssd_mma<bf16> {
    static constexpr int K = 16;
    typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    template <typename LA, typename LB>
    static __device__ __forceinline__ void mma(acc &c, const bf16 *a, int lda, const bf16 *b,
                                               int ldb)
    {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, LA> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LB> fb;
        wmma::load_matrix_sync(fa, a, lda);
        wmma::load_matrix_sync(fb, b, ldb);
        wmma::mma_sync(c, fa, fb, c);
    }
};

/* float operands as hi + lo tf32 halves: a·b ≈ hi·hi + hi·lo + lo·hi (the
 * dropped lo·lo term is ~2^-22 relative), so the exact mode stays near fp32 */
template <> struct ssd_mma<float> {
    static constexpr int K = 8;
    typedef wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
    template <typename F> static __device__ __forceinline__ void split(F &hi, F &lo)
    {
#pragma unroll
        for (int i = 0; i < hi.num_elements; i++) {
            const float v = hi.x[i];
            hi.x[i] = wmma::__float_to_tf32(v);
            lo.x[i] = wmma::__float_to_tf32(v - hi.x[i]);
        }
    }
    template <typename LA, typename LB>
    static __device__ __forceinline__ void mma(acc &c, const float *a, int lda, const float *b,
                                               int ldb)
    {
        wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, LA> ah, al;
        wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, LB> bh, bl;
        wmma::load_matrix_sync(ah, a, lda);
        wmma::load_matrix_sync(bh, b, ldb);
        split(ah, al);
        split(bh, bl);
        wmma::mma_sync(c, al, bh, c);
        wmma::mma_sync(c, ah, bl, c);
        wmma::mma_sync(c, ah, bh, c);
    }
};

template <typename Lay> struct is_row {
    static constexpr bool v = false;
};
template <> struct is_row<wmma::row_major> {
    static constexpr bool v = true;
};

/* c += A[16 x K] · B[K x 16]; a and b point at the tiles' first element in
 * their layouts (row-major: element (i, k) at i*ld + k; column-major: k*ld + i). */
template <typename OT, typename LA, typename LB>
static __device__ __forceinline__ void tile_mma(typename ssd_mma<OT>::acc &c, const OT *a, int lda,
                                                const OT *b, int ldb, int K)
{
    for (int k = 0; k < K; k += ssd_mma<OT>::K)
        ssd_mma<OT>::template mma<LA, LB>(c, a + (is_row<LA>::v ? k : k * lda), lda,
                                          b + (is_row<LB>::v ? k * ldb : k), ldb);
}

static __device__ __forceinline__ void to_op(float *p, float v) { *p = v; }
static __device__ __forceinline__ void to_op(bf16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* ---- shared memory of one block -------------------------------------------------- */

/* Rows padded by 16 bytes so the tile loads of consecutive rows hit different banks. */
template <int D, typename OT> struct ssd_smem {
    static constexpr int L = SSD_L, P = SSD_P, PAD = 16 / (int)sizeof(OT);
    static constexpr int LDD = D + PAD, LDL = L + PAD, LDP = P + PAD; /* operands */
    static constexpr int LDG = L + 4, LDY = P + 4, LDS = D + 4;       /* float staging */
    /* element offsets (each region a multiple of 32 bytes: wmma pointers need it) */
    static constexpr size_t oB = 0, oC = oB + L * LDD, oSt = oC + L * LDD, oM = oSt + P * LDD,
                            oXb = oM + L * LDL, oXw = oXb + L * LDP, n_op = oXw + L * LDP;
    static constexpr size_t fG = 0, fY1 = fG + L * LDG, fY2 = fY1 + L * LDY, fS = fY2 + L * LDY,
                            fX = fS + P * LDS, fdr = fX + L * P, fe = fdr + L,
                            fw = fe + SSD_NW * 2 * L, n_f = fw + SSD_NW * 2 * L;
    static constexpr size_t bytes = n_op * sizeof(OT) + n_f * sizeof(float);
};

/* ---- the kernel ------------------------------------------------------------------ */

/* Block (span, head h, row slice pb): rows p0 = pb*P .. p0+P of head h's state.
 * u: conv output [T][ldu] (x of kv head hk at hk*D, B at kvd + hk*D, C of
 * head h at 2kvd + h*D); dt raw at z[t][dt_off + h].
 *
 * Per chunk, three phases between block barriers: (A) every warp on its own:
 * the Δ / cumulative-decay scan (each warp redundantly, so none waits), its
 * tiles of G turned into M, its tile of the chunk-start state as an operand,
 * its rows of Xw; (B) Y1 = M X, Y2 = C Sᵀ and the state update on tensor
 * cores; (C) y = Y1 + e^{cs} Y2 out, the next chunk's inputs in. */
template <int D, typename OT, typename T, typename SF>
__global__ void __launch_bounds__(SSD_NT, 1)
    ssd_k(const float *__restrict__ u, int64_t ldu, const T *__restrict__ z, int64_t ldz,
          int64_t dt_off, const struct mm_kspan *spans, int64_t nh, int64_t kvh,
          const float *dt_bias, const float *A, SF *state, int64_t slot_elems, int64_t off,
          float *__restrict__ y)
{
    after_previous();
    typedef ssd_smem<D, OT> SM;
    typedef typename ssd_mma<OT>::acc acc_t;
    constexpr int L = SSD_L, P = SSD_P, NT = SSD_NT, NW = SSD_NW, NPB = D / P;
    constexpr int LDD = SM::LDD, LDL = SM::LDL, LDP = SM::LDP;
    constexpr int LDG = SM::LDG, LDY = SM::LDY, LDS = SM::LDS;
    constexpr int NB4 = L * D / 4 / NT; /* float4 of B (and of C) each thread loads per chunk */
    constexpr int RB = L / 16;          /* row blocks of a chunk */
    constexpr int NG = RB * (RB + 1) / 2; /* lower-triangular tiles of G */
    static_assert(D % 16 == 0 && D / 16 <= NW && NB4 >= 1 && L * P / 4 == NT && RB == 4 &&
                      L == 8 * NW && NW == 2 * RB,
                  "the work split below assumes these shapes");

    const int64_t span = blockIdx.x / (nh * NPB), h = (blockIdx.x / NPB) % nh;
    const int pb = (int)(blockIdx.x % NPB);
    const struct mm_kspan sp = spans[span];
    if (sp.n <= 0)
        return;
    extern __shared__ __align__(128) unsigned char ssd_raw[];
    OT *const op = (OT *)ssd_raw;
    float *const fl = (float *)(ssd_raw + SM::n_op * sizeof(OT));
    OT *sB = op + SM::oB, *sC = op + SM::oC, *sSt = op + SM::oSt;
    OT *sM = op + SM::oM, *sXb = op + SM::oXb, *sXw = op + SM::oXw;
    float *sG = fl + SM::fG, *sY1 = fl + SM::fY1, *sY2 = fl + SM::fY2, *sS = fl + SM::fS;
    float *sX = fl + SM::fX, *sdr = fl + SM::fdr;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    /* this warp's copy of the chunk's cs (log2 cumulative decay) and Δ, then
     * e^{cs} and w = e^{cs_L - cs} Δ (warp 0's copy serves phase C) */
    float *wcs = fl + SM::fe + warp * 2 * L, *wdt = wcs + L;
    float *wes = fl + SM::fw + warp * 2 * L, *ww = wes + L;
    const int64_t groups = nh / kvh, kvd = kvh * D, hk = h / groups, p0 = (int64_t)pb * P;
    const float a2 = A[h] * SSD_LOG2E, bias = dt_bias[h]; /* log-decays in base 2 */
    SF *S = state + sp.slot * slot_elems + off + ldu + h * D * D + p0 * D;

    /* the state slice into accumulators: warp w < D/16 holds columns [16w, 16w + 16) */
    for (int i = tid; i < P * D; i += NT)
        sS[(i / D) * LDS + i % D] = ldf(S + i);
    __syncthreads();
    acc_t accS;
    if (warp < D / 16)
        wmma::load_matrix_sync(accS, sS + 16 * warp, LDS, wmma::mem_row_major);

    /* next chunk's inputs in registers (zeros past the span) */
    float4 rB[NB4], rC[NB4], rX;
    float rdt = 0;
    auto load = [&](int64_t t0) {
        const int64_t nv = sp.n - t0 < L ? sp.n - t0 : L;
#pragma unroll
        for (int j = 0; j < NB4; j++) {
            const int i = tid + NT * j, t = i / (D / 4), q = i % (D / 4);
            rB[j] = rC[j] = make_float4(0, 0, 0, 0);
            if (t < nv) {
                const float *ur = u + (sp.row + t0 + t) * ldu;
                rB[j] = *(const float4 *)(ur + kvd + hk * D + 4 * q);
                rC[j] = *(const float4 *)(ur + 2 * kvd + h * D + 4 * q);
            }
        }
        const int t = tid / (P / 4), q = tid % (P / 4);
        rX = t < nv ? *(const float4 *)(u + (sp.row + t0 + t) * ldu + hk * D + p0 + 4 * q)
                    : make_float4(0, 0, 0, 0);
        if (tid < L)
            rdt = tid < nv ? ldf(z + (sp.row + t0 + tid) * ldz + dt_off + h) : 0.0f;
    };
    auto store = [&]() {
#pragma unroll
        for (int j = 0; j < NB4; j++) {
            const int i = tid + NT * j, t = i / (D / 4), q = i % (D / 4);
            st4(sB + t * LDD + 4 * q, rB[j]);
            st4(sC + t * LDD + 4 * q, rC[j]);
        }
        const int t = tid / (P / 4), q = tid % (P / 4);
        *(float4 *)(sX + t * P + 4 * q) = rX;
        st4(sXb + t * LDP + 4 * q, rX);
        if (tid < L)
            sdr[tid] = rdt;
    };
    load(0);
    store();
    __syncthreads();

    const int64_t ystride = nh * D;
    for (int64_t t0 = 0; t0 < sp.n; t0 += L) {
        const int nv = (int)(sp.n - t0 < L ? sp.n - t0 : L);
        const bool more = t0 + L < sp.n;
        if (more)
            load(t0 + L);

        /* A. Δ_t = softplus(dt + bias) (0 past the span), cs = inclusive
         *    prefix sum of Δ·A (base 2), in this warp's registers and copy */
        const float d0 = lane < nv ? softplus(sdr[lane] + bias) : 0.0f;
        const float d1 = lane + 32 < nv ? softplus(sdr[lane + 32] + bias) : 0.0f;
        float c0 = d0 * a2, c1 = d1 * a2;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const float v0 = __shfl_up_sync(0xffffffffu, c0, o);
            const float v1 = __shfl_up_sync(0xffffffffu, c1, o);
            if (lane >= o) {
                c0 += v0;
                c1 += v1;
            }
        }
        c1 += __shfl_sync(0xffffffffu, c0, 31);
        const float cl = __shfl_sync(0xffffffffu, c1, 31); /* cs at the chunk's end */
        wcs[lane] = c0;
        wcs[lane + 32] = c1;
        wdt[lane] = d0;
        wdt[lane + 32] = d1;
        wes[lane] = exp2f(c0);
        wes[lane + 32] = exp2f(c1);
        ww[lane] = exp2f(cl - c0) * d0;
        ww[lane + 32] = exp2f(cl - c1) * d1;
        __syncwarp();
        /*    G = C Bᵀ, lower tiles, each turned by its warp into
         *    M = G e^{cs_t - cs_s} Δ_s (s <= t) */
        for (int idx = warp; idx < NG; idx += NW) {
            int i = 0;
            while ((i + 1) * (i + 2) / 2 <= idx)
                i++;
            const int j = idx - i * (i + 1) / 2;
            acc_t g;
            wmma::fill_fragment(g, 0.0f);
            tile_mma<OT, wmma::row_major, wmma::col_major>(g, sC + 16 * i * LDD, LDD,
                                                           sB + 16 * j * LDD, LDD, D);
            float *gt = sG + 16 * i * LDG + 16 * j;
            wmma::store_matrix_sync(gt, g, LDG, wmma::mem_row_major);
            __syncwarp();
            for (int e = lane; e < 256; e += 32) {
                const int r = e >> 4, cc = e & 15, t = 16 * i + r, s = 16 * j + cc;
                const float v = s <= t ? gt[r * LDG + cc] * exp2f(wcs[t] - wcs[s]) * wdt[s] : 0.0f;
                to_op(sM + t * LDL + s, v);
            }
        }
        /*    the chunk-start state as an operand (its own tile) */
        if (warp < D / 16) {
            wmma::store_matrix_sync(sS + 16 * warp, accS, LDS, wmma::mem_row_major);
            __syncwarp();
            for (int e = lane; e < 256; e += 32)
                to_op(sSt + (e / 16) * LDD + 16 * warp + e % 16,
                      sS[(e / 16) * LDS + 16 * warp + e % 16]);
        }
        /*    Xw = w ∘ X, rows [8 warp, 8 warp + 8) */
        {
            const int s = 8 * warp + lane / 4, q = lane % 4;
            const float4 xv = *(const float4 *)(sX + s * P + 4 * q);
            const float wv = ww[s];
            st4(sXw + s * LDP + 4 * q, make_float4(wv * xv.x, wv * xv.y, wv * xv.z, wv * xv.w));
        }
        __syncthreads();

        /* B. Y1 = M X (warps 0-3, causal: row block i needs s < 16(i+1)),
         *    Y2 = C Sᵀ (warps 4-7); S = e^{cs_L} S + Xwᵀ B (state warps) */
        {
            acc_t yacc;
            wmma::fill_fragment(yacc, 0.0f);
            const int i = warp % RB;
            if (warp < RB) {
                tile_mma<OT, wmma::row_major, wmma::row_major>(yacc, sM + 16 * i * LDL, LDL, sXb,
                                                               LDP, 16 * (i + 1));
                wmma::store_matrix_sync(sY1 + 16 * i * LDY, yacc, LDY, wmma::mem_row_major);
            } else {
                tile_mma<OT, wmma::row_major, wmma::col_major>(yacc, sC + 16 * i * LDD, LDD, sSt,
                                                               LDD, D);
                wmma::store_matrix_sync(sY2 + 16 * i * LDY, yacc, LDY, wmma::mem_row_major);
            }
        }
        if (warp < D / 16) {
            const float dl = exp2f(cl);
#pragma unroll
            for (int i = 0; i < accS.num_elements; i++)
                accS.x[i] *= dl;
            tile_mma<OT, wmma::col_major, wmma::row_major>(accS, sXw, LDP, sB + 16 * warp, LDD, L);
        }
        __syncthreads();

        /* C. y rows of this chunk (e^{cs_t} scales the carried-in part); the
         *    next chunk's inputs into shared memory */
        {
            const float *es = fl + SM::fw; /* warp 0's e^{cs} */
            for (int e = tid; e < nv * (P / 4); e += NT) {
                const int t = e / (P / 4), q = e % (P / 4);
                const float4 a = *(const float4 *)(sY1 + t * LDY + 4 * q);
                const float4 b = *(const float4 *)(sY2 + t * LDY + 4 * q);
                const float f = es[t];
                *(float4 *)(y + (sp.row + t0 + t) * ystride + h * D + p0 + 4 * q) =
                    make_float4(a.x + f * b.x, a.y + f * b.y, a.z + f * b.z, a.w + f * b.w);
            }
        }
        if (more)
            store();
        __syncthreads();
    }

    if (warp < D / 16)
        wmma::store_matrix_sync(sS + 16 * warp, accS, LDS, wmma::mem_row_major);
    __syncthreads();
    for (int i = tid; i < P * D; i += NT)
        stf(S + i, sS[(i / D) * LDS + i % D]);
}

/* ---- launchers ------------------------------------------------------------------- */

template <int D, typename OT, typename T, typename SF> static cudaError_t ssd_prepare_one()
{
    return cudaFuncSetAttribute(ssd_k<D, OT, T, SF>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)ssd_smem<D, OT>::bytes);
}

template <int D> static cudaError_t ssd_prepare_d(bool f32)
{
    cudaError_t e;
    if (f32)
        return (e = ssd_prepare_one<D, float, float, float>()) != cudaSuccess
                   ? e
                   : ssd_prepare_one<D, float, float, bf16>();
    return (e = ssd_prepare_one<D, bf16, bf16, float>()) != cudaSuccess
               ? e
               : ssd_prepare_one<D, bf16, bf16, bf16>();
}

template <int D, typename OT, typename T>
static void ssd_run(cudaStream_t s, const float *u, int64_t ldu, const T *z, int64_t ldz,
                    int64_t dt_off, const struct mm_kspan *spans, int n_spans, int64_t nh,
                    int64_t kvh, const float *dt_bias, const float *A, struct mm_kstate st,
                    float *y)
{
    const unsigned grid = (unsigned)(n_spans * nh * (D / SSD_P));
    const size_t smem = ssd_smem<D, OT>::bytes;
    if (st.f32)
        launch(s, grid, SSD_NT, smem, ssd_k<D, OT, T, float>, u, ldu, z, ldz, dt_off, spans, nh, kvh, dt_bias, A,
                                                (float *)st.base, st.slot_elems, st.off, y);
    else
        launch(s, grid, SSD_NT, smem, ssd_k<D, OT, T, bf16>, u, ldu, z, ldz, dt_off, spans, nh, kvh, dt_bias, A,
                                                (bf16 *)st.base, st.slot_elems, st.off, y);
}

template <typename OT, typename T>
static cudaError_t ssd_dispatch(cudaStream_t s, const float *u, int64_t ldu, const T *z,
                                int64_t ldz, int64_t dt_off, const struct mm_kspan *spans,
                                int n_spans, int64_t nh, int64_t kvh, int64_t d,
                                const float *dt_bias, const float *A, struct mm_kstate st, float *y)
{
    switch (d) {
    case 16:
        ssd_run<16, OT>(s, u, ldu, z, ldz, dt_off, spans, n_spans, nh, kvh, dt_bias, A, st, y);
        break;
    case 32:
        ssd_run<32, OT>(s, u, ldu, z, ldz, dt_off, spans, n_spans, nh, kvh, dt_bias, A, st, y);
        break;
    case 64:
        ssd_run<64, OT>(s, u, ldu, z, ldz, dt_off, spans, n_spans, nh, kvh, dt_bias, A, st, y);
        break;
    case 128:
        ssd_run<128, OT>(s, u, ldu, z, ldz, dt_off, spans, n_spans, nh, kvh, dt_bias, A, st, y);
        break;
    default:
        return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

extern "C" cudaError_t mm_k_ssd_prepare(bool f32, int64_t d)
{
    int dev = 0, max_smem = 0;
    cudaError_t e;
    if ((e = cudaGetDevice(&dev)) != cudaSuccess ||
        (e = cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)) !=
            cudaSuccess)
        return e;
    const size_t need = d == 16    ? (f32 ? ssd_smem<16, float>::bytes : ssd_smem<16, bf16>::bytes)
                        : d == 32  ? (f32 ? ssd_smem<32, float>::bytes : ssd_smem<32, bf16>::bytes)
                        : d == 64  ? (f32 ? ssd_smem<64, float>::bytes : ssd_smem<64, bf16>::bytes)
                        : d == 128 ? (f32 ? ssd_smem<128, float>::bytes : ssd_smem<128, bf16>::bytes)
                                   : 0;
    if (need == 0 || need > (size_t)max_smem)
        return cudaErrorInvalidValue; /* a head dim it has no kernel for, or too little smem */
    switch (d) {
    case 16:
        return ssd_prepare_d<16>(f32);
    case 32:
        return ssd_prepare_d<32>(f32);
    case 64:
        return ssd_prepare_d<64>(f32);
    default:
        return ssd_prepare_d<128>(f32);
    }
}

extern "C" cudaError_t mm_k_ssd_scan(cudaStream_t s, const float *u, int64_t C, const void *z,
                                     bool f32, int64_t ldz, int64_t dt_off,
                                     const struct mm_kspan *spans, int n_spans, int64_t nh,
                                     int64_t kvh, int64_t d, const float *dt_bias, const float *A,
                                     struct mm_kstate st, float *y)
{
    if (n_spans <= 0)
        return cudaSuccess;
    if (f32)
        return ssd_dispatch<float>(s, u, C, (const float *)z, ldz, dt_off, spans, n_spans, nh, kvh,
                                   d, dt_bias, A, st, y);
    return ssd_dispatch<bf16>(s, u, C, (const bf16 *)z, ldz, dt_off, spans, n_spans, nh, kvh, d,
                              dt_bias, A, st, y);
}
