/* flash.cu: causal attention for prefill spans on tensor cores (bf16 serving
 * mode only), flash style: a block takes 64 query rows of one sequence and
 * one q head and sweeps that sequence's keys [0, last row's position] in
 * tiles of 64 from the paged KV cache (history and the span's own rows,
 * which mm_k_rope_kv has written), with an online softmax in fp32 so no
 * T×T matrix exists anywhere.
 *
 * Design: FlashAttention-2's warp split. Each of the 4 warps owns 16 query
 * rows and the whole key tile, so the softmax statistics of a row live in
 * the 4 lanes that hold it (two shuffles) and P goes from the S accumulator
 * straight into the A operand of P·V without shared memory (the m16n8k16
 * accumulator and A-operand layouts coincide). K and V tiles are staged in
 * shared memory with cp.async (16-byte chunks, one 16-token KV block is 16
 * rows, so a tile is 4 blocks looked up in the block table); V's copy
 * overlaps Q·Kᵀ and the next K's overlaps P·V. Rows padded by 8 elements so
 * ldmatrix and the fragment loads are free of bank conflicts.
 * CPU twin: mm_cpu_attend (via cpu_attention), as mm_k_attend's. */
#include "common.cuh"

#define FL_BM MM_K_FLASH_ROWS /* query rows per block: 4 warps x 16 (64) */
#define FL_BN 64              /* keys per tile */
#define FL_WARPS 4

/* ---- fragments -------------------------------------------------------------------- */

static __device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

/* four 8x8 bf16 matrices; lane l gives the address of row l % 8 of matrix l / 8 */
static __device__ __forceinline__ void ldsm_x4(uint32_t r[4], const bf16 *p)
{
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

static __device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], const bf16 *p)
{
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/* 16 bytes global -> shared; src_bytes 0 writes zeros (and reads nothing) */
static __device__ __forceinline__ void cp_async16(bf16 *dst, const bf16 *src, int src_bytes)
{
    const unsigned a = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(a), "l"(src),
                 "r"(src_bytes));
}

static __device__ __forceinline__ void cp_async_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::);
}

static __device__ __forceinline__ void cp_async_wait_all(void)
{
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

/* ---- kernel ----------------------------------------------------------------------- */

/* Stages keys [k0, k0 + FL_BN) of kv head kvh (K rows, or V rows when v) into
 * tile [FL_BN][D + 8]; keys at or past kend become zeros (finite, so a
 * masked p = 0 times them stays 0). */
template <int D>
static __device__ __forceinline__ void
stage_tile(bf16 *tile, const bf16 *kvbase, const int32_t *tab, const struct mm_kkv &cache,
           int64_t kvd, int64_t kvh, int64_t k0, int64_t kend, bool v)
{
    constexpr int CH = D / 8; /* 16-byte chunks per row */
    for (int i = threadIdx.x; i < FL_BN * CH; i += FL_WARPS * 32) {
        const int key = i / CH, col = (i % CH) * 8;
        const int64_t kk = k0 + key;
        const bf16 *src = kvbase;
        if (kk < kend)
            src = kvbase + (int64_t)tab[kk / MM_K_KV_BLOCK] * cache.block_elems + cache.off +
                  ((v ? MM_K_KV_BLOCK : 0) + kk % MM_K_KV_BLOCK) * kvd + kvh * D + col;
        cp_async16(tile + key * (D + 8) + col, src, kk < kend ? 16 : 0);
    }
}

/* grid (n_tiles, nh), FL_WARPS * 32 threads; tile i: span tiles[2i], rows
 * [tiles[2i + 1], + FL_BM) of it */
template <int D>
__global__ void __launch_bounds__(FL_WARPS * 32)
    flash_k(const bf16 *qkv, const struct mm_kspan *spans, const int32_t *tiles, int64_t nh,
            int64_t kv, struct mm_kkv cache, bf16 *out)
{
    after_previous();
    __shared__ __align__(16) bf16 sk[FL_BN * (D + 8)];
    __shared__ __align__(16) bf16 sv[FL_BN * (D + 8)];
    const int w = threadIdx.x / 32, lane = threadIdx.x & 31, g = lane / 4, t = lane % 4;
    const struct mm_kspan sp = spans[tiles[2 * blockIdx.x]];
    const int64_t row0 = tiles[2 * blockIdx.x + 1];
    const int64_t h = blockIdx.y, groups = nh / kv, kvh = h / groups, kvd = kv * D;
    const int64_t ld = (nh + 2 * kv) * D;
    /* keys [0, kend): up to the position of the tile's last row */
    const int64_t last = (row0 + FL_BM < sp.n ? row0 + FL_BM : sp.n) - 1;
    const int64_t kend = sp.pos + last + 1;
    const int n_kt = (int)((kend + FL_BN - 1) / FL_BN);
    const bf16 *kvbase = (const bf16 *)cache.base;
    const int32_t *tab = cache.blocks + sp.blk;

    stage_tile<D>(sk, kvbase, tab, cache, kvd, kvh, 0, kend, false);
    cp_async_commit();

    /* this lane's two rows (span-local): r_lo and r_lo + 8 */
    const int64_t r_lo = row0 + w * 16 + g, r_hi = r_lo + 8;
    const int64_t p_lo = sp.pos + r_lo, p_hi = sp.pos + r_hi; /* their positions */
    /* Q as A fragments, straight from global (rows past the span are zeros) */
    uint32_t qa[D / 16][4];
    {
        const int64_t qoff = kvh * (groups + 2) * D + (h % groups) * D;
        const bf16 *qlo = qkv + (sp.row + r_lo) * ld + qoff,
                   *qhi = qkv + (sp.row + r_hi) * ld + qoff;
        const bool ok_lo = r_lo < sp.n, ok_hi = r_hi < sp.n;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const int c = kk * 16 + 2 * t;
            qa[kk][0] = ok_lo ? *(const uint32_t *)(qlo + c) : 0u;
            qa[kk][1] = ok_hi ? *(const uint32_t *)(qhi + c) : 0u;
            qa[kk][2] = ok_lo ? *(const uint32_t *)(qlo + c + 8) : 0u;
            qa[kk][3] = ok_hi ? *(const uint32_t *)(qhi + c + 8) : 0u;
        }
    }
    /* softmax in base 2: s2 = q.k * log2(e) / sqrt(D) */
    const float sl2 = 1.4426950408889634f * rsqrtf((float)D);
    float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0, l_hi = 0;
    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++)
        o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0;
    /* ldmatrix lane roles: row l % 8 of matrix l / 8 */
    const int lm_r = lane & 7, lm_m = lane >> 3;

    for (int kt = 0; kt < n_kt; kt++) {
        const int64_t k0 = (int64_t)kt * FL_BN;
        cp_async_wait_all(); /* K tile kt */
        __syncthreads();     /* ... visible to all; every warp done with V of kt - 1 */
        stage_tile<D>(sv, kvbase, tab, cache, kvd, kvh, k0, kend, true);
        cp_async_commit();

        /* S = Q Kᵀ: 8 n-tiles of 8 keys */
        float s[FL_BN / 8][4];
#pragma unroll
        for (int j = 0; j < FL_BN / 8; j++)
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
            for (int j = 0; j < FL_BN / 8; j += 2) {
                /* matrices: keys 8j.. dims lo, hi; keys 8(j+1).. dims lo, hi */
                uint32_t b[4];
                ldsm_x4(b,
                        sk + (8 * (j + (lm_m >> 1)) + lm_r) * (D + 8) + kk * 16 + (lm_m & 1) * 8);
                mma_bf16(s[j], qa[kk], b[0], b[1]);
                mma_bf16(s[j + 1], qa[kk], b[2], b[3]);
            }
        /* causal mask where the tile reaches past the first row's position */
        const bool mask = k0 + FL_BN - 1 > sp.pos + row0;
        float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
        for (int j = 0; j < FL_BN / 8; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int64_t key = k0 + 8 * j + 2 * t + e;
                s[j][e] = mask && key > p_lo ? -INFINITY : s[j][e] * sl2;
                s[j][2 + e] = mask && key > p_hi ? -INFINITY : s[j][2 + e] * sl2;
                mx_lo = fmaxf(mx_lo, s[j][e]);
                mx_hi = fmaxf(mx_hi, s[j][2 + e]);
            }
        /* the 4 lanes of a row (same g) */
        mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 1));
        mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 2));
        mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 1));
        mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 2));
        /* key 0 is never masked, so from tile 0 on every row's max is finite */
        const float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
        const float c_lo = exp2f(m_lo - mn_lo), c_hi = exp2f(m_hi - mn_hi);
        m_lo = mn_lo;
        m_hi = mn_hi;
        /* P = exp2(S - m) as bf16 A fragments of P·V (4 k-steps of 16 keys);
         * the row sums stay per lane until the end */
        uint32_t pa[FL_BN / 16][4];
        float sum_lo = 0, sum_hi = 0;
#pragma unroll
        for (int j = 0; j < FL_BN / 8; j++) {
            const float a0 = exp2f(s[j][0] - mn_lo), a1 = exp2f(s[j][1] - mn_lo);
            const float a2 = exp2f(s[j][2] - mn_hi), a3 = exp2f(s[j][3] - mn_hi);
            sum_lo += a0 + a1;
            sum_hi += a2 + a3;
            pa[j / 2][(j & 1) * 2] = pack_bf16(a0, a1);
            pa[j / 2][(j & 1) * 2 + 1] = pack_bf16(a2, a3);
        }
        l_lo = l_lo * c_lo + sum_lo;
        l_hi = l_hi * c_hi + sum_hi;
#pragma unroll
        for (int i = 0; i < D / 8; i++) {
            o[i][0] *= c_lo;
            o[i][1] *= c_lo;
            o[i][2] *= c_hi;
            o[i][3] *= c_hi;
        }

        cp_async_wait_all(); /* V tile kt */
        __syncthreads();     /* ... visible to all; every warp done with K of kt */
        if (kt + 1 < n_kt) {
            stage_tile<D>(sk, kvbase, tab, cache, kvd, kvh, k0 + FL_BN, kend, false);
            cp_async_commit();
        }
        /* O += P V: V tile rows are keys (k), columns dims (n): transposed loads */
#pragma unroll
        for (int kk = 0; kk < FL_BN / 16; kk++)
#pragma unroll
            for (int i = 0; i < D / 8; i += 2) {
                /* matrices: keys 16kk.. and 16kk+8.. of dims 8i..; the same of dims 8(i+1).. */
                uint32_t b[4];
                ldsm_x4_trans(b, sv + (16 * kk + (lm_m & 1) * 8 + lm_r) * (D + 8) +
                                     8 * (i + (lm_m >> 1)));
                mma_bf16(o[i], pa[kk], b[0], b[1]);
                mma_bf16(o[i + 1], pa[kk], b[2], b[3]);
            }
    }

    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 1);
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 2);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 1);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 2);
    const float inv_lo = 1.0f / l_lo, inv_hi = 1.0f / l_hi;
    const int64_t ldo = nh * D;
    bf16 *olo = out + (sp.row + r_lo) * ldo + h * D + 2 * t,
         *ohi = out + (sp.row + r_hi) * ldo + h * D + 2 * t;
#pragma unroll
    for (int i = 0; i < D / 8; i++) {
        if (r_lo < sp.n)
            *(__nv_bfloat162 *)(olo + 8 * i) =
                __floats2bfloat162_rn(o[i][0] * inv_lo, o[i][1] * inv_lo);
        if (r_hi < sp.n)
            *(__nv_bfloat162 *)(ohi + 8 * i) =
                __floats2bfloat162_rn(o[i][2] * inv_hi, o[i][3] * inv_hi);
    }
}

/* ---- launcher --------------------------------------------------------------------- */

extern "C" cudaError_t mm_k_flash_attend(cudaStream_t s, const void *qkv,
                                         const struct mm_kspan *spans, const int32_t *tiles,
                                         int n_tiles, int64_t nh, int64_t kv, int64_t d,
                                         struct mm_kkv cache, void *out)
{
    if (n_tiles <= 0)
        return cudaSuccess;
    if (kv <= 0 || nh % kv != 0 || nh > 65535)
        return cudaErrorInvalidValue;
    const dim3 grid((unsigned)n_tiles, (unsigned)nh);
    if (d == 64)
        launch(s, grid, FL_WARPS * 32, 0, flash_k<64>, (const bf16 *)qkv, spans, tiles, nh, kv,
               cache, (bf16 *)out);
    else if (d == 128)
        launch(s, grid, FL_WARPS * 32, 0, flash_k<128>, (const bf16 *)qkv, spans, tiles, nh, kv,
               cache, (bf16 *)out);
    else
        return cudaErrorInvalidValue;
    return cudaGetLastError();
}
