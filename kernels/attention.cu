/* attention.cu: softmax attention for the hybrid/teacher layers over the
 * paged KV cache: RoPE + KV write, then a flash-decoding style attention
 * (online softmax, never a T×T matrix) where each warp takes one (row, q
 * head, key range) and a second launch merges the key ranges. Prefill rows
 * and decode rows share the kernels; a long sequence at small batch is split
 * along its keys so the whole GPU works on it.
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

/* ---- launchers -------------------------------------------------------------------- */

extern "C" cudaError_t mm_k_rope_kv(cudaStream_t s, bool f32, void *qkv, int64_t T,
                                    const int32_t *tok_span, const struct mm_kspan *spans,
                                    int64_t nh, int64_t kv, int64_t d, const float *inv_freq,
                                    struct mm_kkv cache)
{
    if (T <= 0)
        return cudaSuccess;
    if (f32)
        launch(s, (unsigned)T, 128, 0, rope_kv_k<float>, (float *)qkv, tok_span, spans, nh, kv, d, inv_freq,
                                              cache);
    else
        launch(s, (unsigned)T, 128, 0, rope_kv_k<bf16>, (bf16 *)qkv, tok_span, spans, nh, kv, d, inv_freq,
                                              cache);
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
