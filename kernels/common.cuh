/* common.cuh: what every kernel family shares: the two element types
 * (float in the exact mode, bf16 in the serving mode) read and written as
 * float, and the dispatch of a templated kernel on the run-time type. */
#ifndef MM_KERNELS_COMMON_CUH
#define MM_KERNELS_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels.h"

typedef __nv_bfloat16 bf16;

static __device__ __forceinline__ float ldf(const float *p) { return *p; }
static __device__ __forceinline__ float ldf(const bf16 *p) { return __bfloat162float(*p); }
static __device__ __forceinline__ void stf(float *p, float v) { *p = v; }
static __device__ __forceinline__ void stf(bf16 *p, float v) { *p = __float2bfloat16_rn(v); }

static __device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over a block of blockDim.x threads (a multiple of 32, at most 1024);
 * every thread gets the result. sh: 32 floats of shared memory. */
static __device__ __forceinline__ float block_sum(float v, float *sh)
{
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return warp_sum(v);
}

static __device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

/* softplus(x) = log(1 + e^x), = x above 20 (the CPU's mm_cpu_softplus) */
static __device__ __forceinline__ float softplus(float x)
{
    return x > 20.0f ? x : log1pf(expf(x));
}

/* 4 consecutive elements as a float4 (16 bytes of float, 8 of bf16; aligned) */
static __device__ __forceinline__ float4 ld4(const float *p) { return *(const float4 *)p; }
static __device__ __forceinline__ float4 ld4(const bf16 *p)
{
    const uint2 raw = *(const uint2 *)p;
    const float2 a = __bfloat1622float2(*(const __nv_bfloat162 *)&raw.x);
    const float2 b = __bfloat1622float2(*(const __nv_bfloat162 *)&raw.y);
    return make_float4(a.x, a.y, b.x, b.y);
}
static __device__ __forceinline__ void st4(float *p, float4 v) { *(float4 *)p = v; }
static __device__ __forceinline__ void st4(bf16 *p, float4 v)
{
    __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
    uint2 raw;
    raw.x = *(uint32_t *)&a;
    raw.y = *(uint32_t *)&b;
    *(uint2 *)p = raw;
}

/* 8 consecutive elements as floats: 16-byte accesses (one of 8 bf16, two
 * float4); p 16-byte aligned */
static __device__ __forceinline__ void ld8(const float *p, float v[8])
{
    const float4 a = *(const float4 *)p, b = *(const float4 *)(p + 4);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
static __device__ __forceinline__ void ld8(const bf16 *p, float v[8])
{
    const uint4 raw = *(const uint4 *)p;
    const __nv_bfloat162 *h2 = (const __nv_bfloat162 *)&raw;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 f = __bfloat1622float2(h2[i]);
        v[2 * i] = f.x;
        v[2 * i + 1] = f.y;
    }
}
static __device__ __forceinline__ void st8(float *p, const float v[8])
{
    *(float4 *)p = make_float4(v[0], v[1], v[2], v[3]);
    *(float4 *)(p + 4) = make_float4(v[4], v[5], v[6], v[7]);
}
static __device__ __forceinline__ void st8(bf16 *p, const float v[8])
{
    uint4 raw;
    __nv_bfloat162 *h2 = (__nv_bfloat162 *)&raw;
#pragma unroll
    for (int i = 0; i < 4; i++)
        h2[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
    *(uint4 *)p = raw;
}

/* c (16x8 fp32) += a (16x16 bf16, row) . b (16x8 bf16, col), one warp (sm_80+).
 * Fragments, g = lane / 4, t = lane % 4: a[0] rows g, k 2t..2t+1; a[1] row g + 8,
 * same k; a[2], a[3] as a[0], a[1] at k + 8; b0 k 2t..2t+1 of column g, b1 at
 * k + 8; c[0..1] row g, columns 2t, 2t + 1; c[2..3] row g + 8. */
static __device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0,
                                                uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static inline unsigned mm_blocks(int64_t n, int per) { return (unsigned)((n + per - 1) / per); }

/* ---- launches that overlap (programmatic dependent launch, sm_90 and later) ----
 * A kernel enqueued with launch() may be scheduled while the kernel before it
 * in the stream is still running (when mm_k_set_overlap turned it on), so that
 * its launch and ramp-up hide behind that kernel's tail. The contract: every
 * kernel launched with launch() calls after_previous() before it reads
 * anything an earlier kernel wrote or writes anything an earlier kernel reads;
 * only data that no step writes (weights) may be touched before it. The call
 * is a no-op in a plain launch and on older GPUs. */
extern int mm_k_overlap_mode; /* enum mm_k_overlap */

static __device__ __forceinline__ void after_previous()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    /* wait for the previous kernel to finish and its writes to show, then let
     * the next kernel of the stream launch (it waits in turn) */
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Ask L2 to fetch bytes (a multiple of 16) from p (16-byte aligned): weights a
 * kernel will read, fetched before after_previous(). No-op before sm_90. */
static __device__ __forceinline__ void prefetch_l2(const void *p, uint32_t bytes)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#else
    (void)p, (void)bytes;
#endif
}

/* k<<<g, b, smem, s>>>(args...), with the overlap attribute when the mode covers
 * the kernel (streaming: a GEMM that reads weights before after_previous). */
template <bool streaming = false, typename... P, typename... A>
static cudaError_t launch(cudaStream_t s, dim3 g, dim3 b, size_t smem, void (*k)(P...), A &&...args)
{
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = g;
    cfg.blockDim = b;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cfg.attrs = at;
    cfg.numAttrs = mm_k_overlap_mode == MM_K_OVERLAP_ALL ||
                           (streaming && mm_k_overlap_mode == MM_K_OVERLAP_GEMM)
                       ? 1
                       : 0;
    return cudaLaunchKernelEx(&cfg, k, static_cast<A &&>(args)...);
}

#endif
