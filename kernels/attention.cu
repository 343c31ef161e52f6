/* attention.cu: softmax attention for the hybrid/teacher layers over the
 * paged KV cache: RoPE + KV write, then a flash-decoding style attention
 * (online softmax, never a T×T matrix) where each warp takes one (row, q
 * head, key range) and a second launch merges the key ranges; a long
 * sequence at small batch is split along its keys so the whole GPU works on
 * it. A batch of decode rows in bf16 takes attend_dec_k instead (one read of
 * a kv group's keys for all its q heads), merged by the same second launch.
 * CPU twins: mm_cpu_rope, mm_cpu_attend (via cpu_attention). */
#include "common.cuh"

#define ATT_WARPS 4
#define ATT_MAXD 128

/* ---- kernels ---------------------------------------------------------------------- */

template <typename T>
__global__ void rope_kv_k(T *qkv, const int32_t *tok_span, const struct mm_kspan *spans, int64_t nh,
                          int64_t kv, int64_t d, const float *inv_freq, struct mm_kkv cache)
{
    after_previous();
    const int64_t r = blockIdx.x, groups = nh / kv, half = d / 2, kvd = kv * d;
    const struct mm_kspan sp = spans[tok_span[r]];
    const int64_t pos = sp.pos + (r - sp.row);
    T *row = qkv + r * (nh + 2 * kv) * d;
    T *kdst = (T *)cache.base +
              (int64_t)cache.blocks[sp.blk + pos / MM_K_KV_BLOCK] * cache.block_elems + cache.off +
              (pos % MM_K_KV_BLOCK) * kvd;
    T *vdst = kdst + MM_K_KV_BLOCK * kvd;
    const int64_t n_rot = kv * (groups + 1) * half;
    for (int64_t idx = threadIdx.x; idx < n_rot; idx += blockDim.x) {
        const int64_t j = idx / ((groups + 1) * half), g = (idx / half) % (groups + 1),
                      i = idx % half;
        T *x = row + j * (groups + 2) * d + g * d;
        const float ang = (float)pos * inv_freq[i];
        const float c = cosf(ang), sn = sinf(ang);
        const float a = ldf(x + i), b = ldf(x + i + half);
        const float xa = a * c - b * sn, xb = b * c + a * sn;
        stf(x + i, xa);
        stf(x + i + half, xb);
        if (g == groups) {
            stf(kdst + j * d + i, xa);
            stf(kdst + j * d + i + half, xb);
        }
    }
    for (int64_t idx = threadIdx.x; idx < kvd; idx += blockDim.x) {
        const int64_t j = idx / d, i = idx % d;
        vdst[idx] = row[j * (groups + 2) * d + (groups + 1) * d + i];
    }
}

/* dot of a float vector in shared memory with d elements of a key row */
template <typename T>
static __device__ __forceinline__ float key_dot(const float *q, const T *k, int64_t d)
{
    float acc = 0;
    if constexpr (sizeof(T) == 2) {
        for (int64_t i = 0; i < d; i += 8) {
            const uint4 raw = *(const uint4 *)(k + i);
            const __nv_bfloat162 *h2 = (const __nv_bfloat162 *)&raw;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float2 f = __bfloat1622float2(h2[e]);
                acc += q[i + 2 * e] * f.x + q[i + 2 * e + 1] * f.y;
            }
        }
    } else {
        for (int64_t i = 0; i < d; i += 4) {
            const float4 f = *(const float4 *)(k + i);
            acc += q[i] * f.x + q[i + 1] * f.y + q[i + 2] * f.z + q[i + 3] * f.w;
        }
    }
    return acc;
}

template <typename T>
__global__ void attend_k(const T *qkv, int64_t T_, const int32_t *tok_span,
                         const struct mm_kspan *spans, int64_t nh, int64_t kv, int64_t d,
                         struct mm_kkv cache, int n_split, int64_t skip_n, float *part)
{
    after_previous();
    __shared__ float sq[ATT_WARPS][ATT_MAXD];
    const int w = threadIdx.x / 32, lane = threadIdx.x & 31;
    const int64_t item = (int64_t)blockIdx.x * ATT_WARPS + w;
    if (item >= T_ * nh * n_split)
        return;
    const int64_t r = item / (nh * n_split), h = (item / n_split) % nh;
    const int sidx = (int)(item % n_split);
    const int64_t groups = nh / kv, kvh = h / groups, kvd = kv * d;
    const struct mm_kspan sp = spans[tok_span[r]];
    if (sp.n >= skip_n)
        return; /* mm_k_flash_attend's row */
    const int64_t n_kv = sp.pos + (r - sp.row) + 1;
    const int64_t chunk = ((n_kv + n_split - 1) / n_split + 31) / 32 * 32;
    const int64_t k0 = sidx * chunk, k1 = k0 + chunk < n_kv ? k0 + chunk : n_kv;
    const T *q = qkv + r * (nh + 2 * kv) * d + kvh * (groups + 2) * d + (h % groups) * d;
    for (int64_t i = lane; i < d; i += 32)
        sq[w][i] = ldf(q + i);
    __syncwarp();
    const float scale = 1.0f / sqrtf((float)d);
    const T *kvbase = (const T *)cache.base;
    const int32_t *tab = cache.blocks + sp.blk;
    float m = -INFINITY, l = 0, acc[ATT_MAXD / 32];
#pragma unroll
    for (int i = 0; i < ATT_MAXD / 32; i++)
        acc[i] = 0;
    for (int64_t base = k0; base < k1; base += 32) {
        const int64_t kk = base + lane;
        float sc = -INFINITY;
        if (kk < k1) {
            const T *krow = kvbase + (int64_t)tab[kk / MM_K_KV_BLOCK] * cache.block_elems +
                            cache.off + (kk % MM_K_KV_BLOCK) * kvd + kvh * d;
            sc = key_dot(sq[w], krow, d) * scale;
        }
        const float mn = fmaxf(m, warp_max(sc));
        const float corr = expf(m - mn);
        const float p = kk < k1 ? expf(sc - mn) : 0.0f;
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int i = 0; i < ATT_MAXD / 32; i++)
            acc[i] *= corr;
        const int nk = (int)(k1 - base < 32 ? k1 - base : 32);
        for (int j = 0; j < nk; j++) {
            const float pj = __shfl_sync(0xffffffffu, p, j);
            const int64_t kj = base + j;
            const T *vrow = kvbase + (int64_t)tab[kj / MM_K_KV_BLOCK] * cache.block_elems +
                            cache.off + (MM_K_KV_BLOCK + kj % MM_K_KV_BLOCK) * kvd + kvh * d;
#pragma unroll
            for (int i = 0; i < ATT_MAXD / 32; i++)
                if (lane + 32 * i < d)
                    acc[i] += pj * ldf(vrow + lane + 32 * i);
        }
        m = mn;
    }
    float *o = part + item * (d + 2);
#pragma unroll
    for (int i = 0; i < ATT_MAXD / 32; i++)
        if (lane + 32 * i < d)
            o[lane + 32 * i] = acc[i];
    if (lane == 0) {
        o[d] = m;
        o[d + 1] = l;
    }
}

/* one warp per (row, head): merge the key ranges */
template <typename T>
__global__ void attend_merge_k(const float *part, int64_t T_, const int32_t *tok_span,
                               const struct mm_kspan *spans, int64_t nh, int64_t d, int n_split,
                               int64_t skip_n, T *out)
{
    after_previous();
    const int64_t item = (int64_t)blockIdx.x * ATT_WARPS + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    if (item >= T_ * nh || spans[tok_span[item / nh]].n >= skip_n)
        return;
    const float *p = part + item * n_split * (d + 2);
    float M = -INFINITY;
    for (int s = 0; s < n_split; s++)
        M = fmaxf(M, p[s * (d + 2) + d]);
    float L = 0;
    for (int s = 0; s < n_split; s++) {
        const float ms = p[s * (d + 2) + d];
        L += ms == -INFINITY ? 0.0f : expf(ms - M) * p[s * (d + 2) + d + 1];
    }
    for (int64_t k = lane; k < d; k += 32) {
        float a = 0;
        for (int s = 0; s < n_split; s++) {
            const float ms = p[s * (d + 2) + d];
            if (ms != -INFINITY)
                a += expf(ms - M) * p[s * (d + 2) + k];
        }
        stf(out + item * d + k, a / L);
    }
}

/* Decode rows (one token per span) in bf16: a block of DEC_WARPS warps per
 * (row, kv head, key range) scores every q head of the group at once, so K
 * and V cross the memory system once per group, not once per q head. The
 * warps take the range's KV blocks (16 keys) in turn: two lanes per key
 * split its D elements (16-byte loads), then each lane keeps D/32 output
 * dims of every head (V rows read whole by the warp). Warps merge in shared
 * memory and write one partial per (row, q head, range) in attend_k's layout,
 * which attend_merge_k merges across ranges. Scores and softmax in fp32. */
#define DEC_WARPS 4
#define DEC_MAXG 8

template <int D>
__global__ void __launch_bounds__(32 * DEC_WARPS, 4)
    attend_dec_k(const bf16 *qkv, const struct mm_kspan *spans, int64_t nh, int64_t kv,
                 struct mm_kkv cache, int n_split, float *part)
{
    after_previous();
    constexpr int KL = D / 2, KV4 = KL / 8, VL = D / 32;
    __shared__ float sq[DEC_MAXG][D];
    __shared__ float sacc[DEC_WARPS][DEC_MAXG][D];
    __shared__ float sml[DEC_WARPS][DEC_MAXG][2];
    const int w = threadIdx.x / 32, lane = threadIdx.x & 31, key = lane / 2, half = lane % 2;
    const int sidx = blockIdx.x, kvh = blockIdx.y;
    const int64_t r = blockIdx.z, kvd = kv * D;
    const int G = (int)(nh / kv);
    const struct mm_kspan sp = spans[r]; /* decode: row r is span r */
    const int64_t n_kv = sp.pos + 1, nblk = (n_kv + MM_K_KV_BLOCK - 1) / MM_K_KV_BLOCK;
    const int64_t per = (nblk + n_split - 1) / n_split, b0 = sidx * per;
    const int64_t b1 = b0 + per < nblk ? b0 + per : nblk;
    const bf16 *qrow = qkv + r * (nh + 2 * kv) * D + kvh * (G + 2) * D; /* the group's q heads */
    const float scale = 1.0f / sqrtf((float)D);
    for (int i = threadIdx.x; i < G * D; i += blockDim.x)
        sq[i / D][i % D] = __bfloat162float(qrow[i]) * scale;
    __syncthreads();
    float m[DEC_MAXG], l[DEC_MAXG], acc[DEC_MAXG][VL];
#pragma unroll
    for (int g = 0; g < DEC_MAXG; g++) {
        m[g] = -INFINITY, l[g] = 0;
#pragma unroll
        for (int e = 0; e < VL; e++)
            acc[g][e] = 0;
    }
    const bf16 *base = (const bf16 *)cache.base + cache.off + kvh * D;
    const int32_t *tab = cache.blocks + sp.blk;
    for (int64_t b = b0 + w; b < b1; b += DEC_WARPS) {
        const bf16 *blk = base + (int64_t)tab[b] * cache.block_elems;
        const bool valid = b * MM_K_KV_BLOCK + key < n_kv;
        uint4 kr[KV4];
        const bf16 *krow = blk + key * kvd + half * KL;
#pragma unroll
        for (int i = 0; i < KV4; i++)
            kr[i] = valid ? *(const uint4 *)(krow + 8 * i) : make_uint4(0, 0, 0, 0);
        /* scores of every head, then the softmax update, then V once for all heads */
        float p[DEC_MAXG];
#pragma unroll
        for (int g = 0; g < DEC_MAXG; g++) {
            p[g] = 0;
            if (g >= G)
                continue;
            float dot = 0;
            const float *q = sq[g] + half * KL;
#pragma unroll
            for (int i = 0; i < KV4; i++) {
                const __nv_bfloat162 *h2 = (const __nv_bfloat162 *)&kr[i];
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float2 f = __bfloat1622float2(h2[e]);
                    dot += q[8 * i + 2 * e] * f.x + q[8 * i + 2 * e + 1] * f.y;
                }
            }
            dot += __shfl_xor_sync(0xffffffffu, dot, 1);
            const float sc = valid ? dot : -INFINITY;
            const float mn = fmaxf(m[g], warp_max(sc)); /* finite: key 0 of the block is valid */
            const float corr = expf(m[g] - mn);
            p[g] = valid ? expf(sc - mn) : 0.0f;
            l[g] = l[g] * corr + warp_sum(half == 0 ? p[g] : 0.0f);
            m[g] = mn;
#pragma unroll
            for (int e = 0; e < VL; e++)
                acc[g][e] *= corr;
        }
#pragma unroll
        for (int j = 0; j < MM_K_KV_BLOCK; j++) {
            if (b * MM_K_KV_BLOCK + j >= n_kv) /* warp-uniform */
                break;
            const uint32_t *vrow = (const uint32_t *)(blk + (MM_K_KV_BLOCK + j) * kvd + lane * VL);
            float v[VL];
#pragma unroll
            for (int e = 0; e < VL / 2; e++) {
                const float2 f = __bfloat1622float2(*(const __nv_bfloat162 *)&vrow[e]);
                v[2 * e] = f.x, v[2 * e + 1] = f.y;
            }
#pragma unroll
            for (int g = 0; g < DEC_MAXG; g++) {
                if (g >= G)
                    break;
                const float pj = __shfl_sync(0xffffffffu, p[g], 2 * j);
#pragma unroll
                for (int e = 0; e < VL; e++)
                    acc[g][e] += pj * v[e];
            }
        }
    }
#pragma unroll
    for (int g = 0; g < DEC_MAXG; g++) {
        if (g >= G)
            break;
#pragma unroll
        for (int e = 0; e < VL; e++)
            sacc[w][g][lane * VL + e] = acc[g][e];
        if (lane == 0)
            sml[w][g][0] = m[g], sml[w][g][1] = l[g];
    }
    __syncthreads();
    /* thread t: dims of every head, merged over the warps */
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
        const int g = i / D, dim = i % D;
        float M = -INFINITY;
        for (int v = 0; v < DEC_WARPS; v++)
            M = fmaxf(M, sml[v][g][0]);
        float a = 0, L = 0;
        for (int v = 0; v < DEC_WARPS; v++) {
            const float f = sml[v][g][0] == -INFINITY ? 0.0f : expf(sml[v][g][0] - M);
            a += f * sacc[v][g][dim];
            L += f * sml[v][g][1];
        }
        float *o = part + ((r * nh + kvh * G + g) * n_split + sidx) * (D + 2);
        o[dim] = a;
        if (dim == 0)
            o[D] = M, o[D + 1] = L;
    }
}

/* ---- launchers -------------------------------------------------------------------- */

extern "C" cudaError_t mm_k_rope_kv(cudaStream_t s, bool f32, void *qkv, int64_t T,
                                    const int32_t *tok_span, const struct mm_kspan *spans,
                                    int64_t nh, int64_t kv, int64_t d, const float *inv_freq,
                                    struct mm_kkv cache)
{
    if (T <= 0)
        return cudaSuccess;
    if (f32)
        launch(s, (unsigned)T, 128, 0, rope_kv_k<float>, (float *)qkv, tok_span, spans, nh, kv, d,
               inv_freq, cache);
    else
        launch(s, (unsigned)T, 128, 0, rope_kv_k<bf16>, (bf16 *)qkv, tok_span, spans, nh, kv, d,
               inv_freq, cache);
    return cudaGetLastError();
}

extern "C" cudaError_t mm_k_attend(cudaStream_t s, bool f32, const void *qkv, int64_t T,
                                   const int32_t *tok_span, const struct mm_kspan *spans,
                                   int64_t nh, int64_t kv, int64_t d, struct mm_kkv cache,
                                   int n_split, int64_t skip_n, float *part, void *out)
{
    if (T <= 0)
        return cudaSuccess;
    if (d > ATT_MAXD || d % 8 != 0 || n_split < 1)
        return cudaErrorInvalidValue;
    const unsigned g1 = mm_blocks(T * nh * n_split, ATT_WARPS);
    const unsigned g2 = mm_blocks(T * nh, ATT_WARPS);
    if (f32) {
        launch(s, g1, 32 * ATT_WARPS, 0, attend_k<float>, (const float *)qkv, T, tok_span, spans,
               nh, kv, d, cache, n_split, skip_n, part);
        launch(s, g2, 32 * ATT_WARPS, 0, attend_merge_k<float>, part, T, tok_span, spans, nh, d,
               n_split, skip_n, (float *)out);
    } else {
        launch(s, g1, 32 * ATT_WARPS, 0, attend_k<bf16>, (const bf16 *)qkv, T, tok_span, spans, nh,
               kv, d, cache, n_split, skip_n, part);
        launch(s, g2, 32 * ATT_WARPS, 0, attend_merge_k<bf16>, part, T, tok_span, spans, nh, d,
               n_split, skip_n, (bf16 *)out);
    }
    return cudaGetLastError();
}

extern "C" cudaError_t mm_k_attend_decode(cudaStream_t s, const void *qkv, int64_t T,
                                          const int32_t *tok_span, const struct mm_kspan *spans,
                                          int64_t nh, int64_t kv, int64_t d, struct mm_kkv cache,
                                          int n_split, float *part, void *out)
{
    if (T <= 0)
        return cudaSuccess;
    if ((d != 64 && d != 128) || kv <= 0 || nh % kv != 0 || nh / kv > DEC_MAXG || n_split < 1 ||
        kv > 65535 || T > 65535)
        return cudaErrorInvalidValue;
    const dim3 g1((unsigned)n_split, (unsigned)kv, (unsigned)T);
    if (d == 64)
        launch(s, g1, 32 * DEC_WARPS, 0, attend_dec_k<64>, (const bf16 *)qkv, spans, nh, kv, cache,
               n_split, part);
    else
        launch(s, g1, 32 * DEC_WARPS, 0, attend_dec_k<128>, (const bf16 *)qkv, spans, nh, kv, cache,
               n_split, part);
    launch(s, mm_blocks(T * nh, ATT_WARPS), 32 * ATT_WARPS, 0, attend_merge_k<bf16>, part, T,
           tok_span, spans, nh, d, n_split, (int64_t)INT64_MAX, (bf16 *)out);
    return cudaGetLastError();
}
