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

static inline unsigned mm_blocks(int64_t n, int per) { return (unsigned)((n + per - 1) / per); }

#endif
