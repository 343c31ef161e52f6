/* norm.cu: RMSNorm (optionally over a gathered row list, for the final norm),
 * L2 normalisation, the gated RMSNorm of the Mamba-2 output and SwiGLU.
 * fp32 math whatever the element type. CPU twins: mm_cpu_rmsnorm,
 * cpu_l2_normalize, mm_cpu_gated_rmsnorm, the SwiGLU loop of cpu_mlp. */
#include "common.cuh"

/* ---- kernels ---------------------------------------------------------------------- */

/* one block of 256 threads per row; the row is read once into registers
 * (RMS_REGS values per thread; H <= 256 * RMS_REGS) */
#define RMS_REGS 16
template <typename T, typename O>
__global__ void rmsnorm_k(const T *x, const int64_t *rows, int64_t H, const float *w, float eps,
                          O *out)
{
    __shared__ float sh[32];
    const int64_t i = blockIdx.x, r = rows ? rows[i] : i;
    const T *xr = x + r * H;
    float v[RMS_REGS], ss = 0;
#pragma unroll
    for (int j = 0; j < RMS_REGS; j++) {
        const int64_t k = threadIdx.x + (int64_t)j * blockDim.x;
        v[j] = k < H ? ldf(xr + k) : 0.0f;
        ss += v[j] * v[j];
    }
    ss = block_sum(ss, sh);
    const float inv = 1.0f / sqrtf(ss / (float)H + eps);
#pragma unroll
    for (int j = 0; j < RMS_REGS; j++) {
        const int64_t k = threadIdx.x + (int64_t)j * blockDim.x;
        if (k < H)
            stf(out + i * H + k, v[j] * inv * w[k]);
    }
}

template <typename T> __global__ void l2norm_k(T *x, int64_t H)
{
    __shared__ float sh[32];
    T *xr = x + blockIdx.x * H;
    float ss = 0;
    for (int64_t k = threadIdx.x; k < H; k += blockDim.x) {
        const float v = ldf(xr + k);
        ss += v * v;
    }
    ss = block_sum(ss, sh);
    const float norm = fmaxf(sqrtf(ss), 1e-12f);
    for (int64_t k = threadIdx.x; k < H; k += blockDim.x)
        stf(xr + k, ldf(xr + k) / norm);
}

/* one warp per (token, head) */
template <typename T>
__global__ void gated_rmsnorm_k(const float *y, const T *z, int64_t ldz, int64_t g_off, int64_t T_,
                                int64_t nh, int64_t d, const float *w, T *out)
{
    const int64_t item = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    if (item >= T_ * nh)
        return;
    const int64_t t = item / nh, h = item % nh;
    const float *yr = y + t * nh * d + h * d;
    const T *g = z + t * ldz + g_off + h * d;
    float ss = 0;
    for (int64_t k = lane; k < d; k += 32)
        ss += yr[k] * yr[k];
    ss = warp_sum(ss);
    const float r = 1.0f / sqrtf(ss / (float)d + 1e-5f);
    for (int64_t k = lane; k < d; k += 32)
        stf(out + t * nh * d + h * d + k, yr[k] * r * w[k] * silu(ldf(g + k)));
}

/* one block per token row */
template <typename T> __global__ void swiglu_k(const T *h, int64_t F, T *out)
{
    const T *hr = h + blockIdx.x * 2 * F;
    T *o = out + blockIdx.x * F;
    for (int64_t j = threadIdx.x; j < F; j += blockDim.x)
        stf(o + j, silu(ldf(hr + j)) * ldf(hr + F + j));
}

/* ---- launchers -------------------------------------------------------------------- */

extern "C" cudaError_t mm_k_rmsnorm(cudaStream_t s, bool f32, const void *x, const int64_t *rows,
                                    int64_t n, int64_t H, const float *w, float eps, void *out,
                                    bool out_f32)
{
    if (n <= 0)
        return cudaSuccess;
    if (H > 256 * RMS_REGS)
        return cudaErrorInvalidValue; /* hidden sizes up to 4096 */
    const unsigned g = (unsigned)n;
    if (f32)
        rmsnorm_k<<<g, 256, 0, s>>>((const float *)x, rows, H, w, eps, (float *)out);
    else if (out_f32)
        rmsnorm_k<<<g, 256, 0, s>>>((const bf16 *)x, rows, H, w, eps, (float *)out);
    else
        rmsnorm_k<<<g, 256, 0, s>>>((const bf16 *)x, rows, H, w, eps, (bf16 *)out);
    return cudaGetLastError();
}

extern "C" cudaError_t mm_k_l2norm(cudaStream_t s, bool f32, void *x, int64_t n, int64_t H)
{
    if (n <= 0)
        return cudaSuccess;
    if (f32)
        l2norm_k<<<(unsigned)n, 256, 0, s>>>((float *)x, H);
    else
        l2norm_k<<<(unsigned)n, 256, 0, s>>>((bf16 *)x, H);
    return cudaGetLastError();
}

extern "C" cudaError_t mm_k_gated_rmsnorm(cudaStream_t s, bool f32, const float *y, const void *z,
                                          int64_t ldz, int64_t g_off, int64_t T, int64_t nh,
                                          int64_t d, const float *w, void *out)
{
    if (T <= 0)
        return cudaSuccess;
    const unsigned g = mm_blocks(T * nh, 8);
    if (f32)
        gated_rmsnorm_k<<<g, 256, 0, s>>>(y, (const float *)z, ldz, g_off, T, nh, d, w,
                                          (float *)out);
    else
        gated_rmsnorm_k<<<g, 256, 0, s>>>(y, (const bf16 *)z, ldz, g_off, T, nh, d, w, (bf16 *)out);
    return cudaGetLastError();
}

extern "C" cudaError_t mm_k_swiglu(cudaStream_t s, bool f32, const void *h, int64_t T, int64_t F,
                                   void *out)
{
    if (T <= 0)
        return cudaSuccess;
    const unsigned g = (unsigned)T;
    if (f32)
        swiglu_k<<<g, 512, 0, s>>>((const float *)h, F, (float *)out);
    else
        swiglu_k<<<g, 512, 0, s>>>((const bf16 *)h, F, (bf16 *)out);
    return cudaGetLastError();
}
