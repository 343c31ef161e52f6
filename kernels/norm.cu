/* norm.cu: RMSNorm (optionally over a gathered row list, for the final norm),
 * L2 normalisation, the gated RMSNorm of the Mamba-2 output and SwiGLU.
 * fp32 math whatever the element type. CPU twins: mm_cpu_rmsnorm,
 * cpu_l2_normalize, mm_cpu_gated_rmsnorm, the SwiGLU loop of cpu_mlp. */
#include "common.cuh"

/* ---- kernels ---------------------------------------------------------------------- */

/* Each has a vector form (8 or 4 consecutive elements per thread, 16-byte
 * accesses) the launcher takes when the sizes and strides allow it. */

/* one block of 256 threads per row; the row is read once into registers
 * (RMS_REGS values per thread; H <= 256 * RMS_REGS) */
#define RMS_REGS 16
template <typename T, typename O>
__global__ void rmsnorm_k(const T *x, const int64_t *rows, int64_t H, const float *w, float eps,
                          O *out)
{
    after_previous();
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

/* vector form: a block of 32..256 threads per row, 8 elements per thread per
 * pass, two passes at most (H % 8 == 0, H <= 4096) */
template <typename T, typename O>
__global__ void rmsnorm8_k(const T *x, const int64_t *rows, int64_t H, const float *w, float eps,
                           O *out)
{
    after_previous();
    __shared__ float sh[32];
    const int64_t i = blockIdx.x, r = rows ? rows[i] : i;
    const T *xr = x + r * H;
    float v[2][8], ss = 0;
#pragma unroll
    for (int j = 0; j < 2; j++) {
        const int64_t k = (threadIdx.x + (int64_t)j * blockDim.x) * 8;
        if (k < H) {
            ld8(xr + k, v[j]);
#pragma unroll
            for (int e = 0; e < 8; e++)
                ss += v[j][e] * v[j][e];
        }
    }
    ss = block_sum(ss, sh);
    const float inv = 1.0f / sqrtf(ss / (float)H + eps);
#pragma unroll
    for (int j = 0; j < 2; j++) {
        const int64_t k = (threadIdx.x + (int64_t)j * blockDim.x) * 8;
        if (k < H) {
            float wv[8], o[8];
            ld8(w + k, wv);
#pragma unroll
            for (int e = 0; e < 8; e++)
                o[e] = v[j][e] * inv * wv[e];
            st8(out + i * H + k, o);
        }
    }
}

template <typename T> __global__ void l2norm_k(T *x, int64_t H)
{
    after_previous();
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
    after_previous();
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

/* vector form: 4 consecutive elements per lane (d % 4 == 0, 16-byte y, 8-
 * or 16-byte gate and output accesses) */
template <typename T>
__global__ void gated_rmsnorm4_k(const float *y, const T *z, int64_t ldz, int64_t g_off,
                                 int64_t T_, int64_t nh, int64_t d, const float *w, T *out)
{
    after_previous();
    const int64_t item = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    if (item >= T_ * nh)
        return;
    const int64_t t = item / nh, h = item % nh;
    const float *yr = y + t * nh * d + h * d;
    const T *g = z + t * ldz + g_off + h * d;
    float ss = 0;
    for (int64_t k = 4 * lane; k < d; k += 128) {
        const float4 v = *(const float4 *)(yr + k);
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    ss = warp_sum(ss);
    const float r = 1.0f / sqrtf(ss / (float)d + 1e-5f);
    for (int64_t k = 4 * lane; k < d; k += 128) {
        const float4 v = *(const float4 *)(yr + k), gv = ld4(g + k), wv = *(const float4 *)(w + k);
        st4(out + t * nh * d + h * d + k,
            make_float4(v.x * r * wv.x * silu(gv.x), v.y * r * wv.y * silu(gv.y),
                        v.z * r * wv.z * silu(gv.z), v.w * r * wv.w * silu(gv.w)));
    }
}

/* grid-stride over 8-element pieces of the output (F % 8 == 0) */
template <typename T> __global__ void swiglu8_k(const T *h, int64_t F, int64_t n8, T *out)
{
    after_previous();
    const int64_t per_row = F / 8;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / per_row, j = (i % per_row) * 8;
        float a[8], b[8], o[8];
        ld8(h + r * 2 * F + j, a);
        ld8(h + r * 2 * F + F + j, b);
#pragma unroll
        for (int e = 0; e < 8; e++)
            o[e] = silu(a[e]) * b[e];
        st8(out + r * F + j, o);
    }
}

/* one block per token row */
template <typename T> __global__ void swiglu_k(const T *h, int64_t F, T *out)
{
    after_previous();
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
    if (H % 8 == 0) {
        const int64_t v = H / 8;
        const unsigned bs = (unsigned)(v >= 256 ? 256 : (v + 31) / 32 * 32);
        if (f32)
            launch(s, g, bs, 0, rmsnorm8_k<float, float>, (const float *)x, rows, H, w, eps, (float *)out);
        else if (out_f32)
            launch(s, g, bs, 0, rmsnorm8_k<bf16, float>, (const bf16 *)x, rows, H, w, eps, (float *)out);
        else
            launch(s, g, bs, 0, rmsnorm8_k<bf16, bf16>, (const bf16 *)x, rows, H, w, eps, (bf16 *)out);
        return cudaGetLastError();
    }
    if (f32)
        launch(s, g, 256, 0, rmsnorm_k<float, float>, (const float *)x, rows, H, w, eps, (float *)out);
    else if (out_f32)
        launch(s, g, 256, 0, rmsnorm_k<bf16, float>, (const bf16 *)x, rows, H, w, eps, (float *)out);
    else
        launch(s, g, 256, 0, rmsnorm_k<bf16, bf16>, (const bf16 *)x, rows, H, w, eps, (bf16 *)out);
    return cudaGetLastError();
}

extern "C" cudaError_t mm_k_l2norm(cudaStream_t s, bool f32, void *x, int64_t n, int64_t H)
{
    if (n <= 0)
        return cudaSuccess;
    if (f32)
        launch(s, (unsigned)n, 256, 0, l2norm_k<float>, (float *)x, H);
    else
        launch(s, (unsigned)n, 256, 0, l2norm_k<bf16>, (bf16 *)x, H);
    return cudaGetLastError();
}

extern "C" cudaError_t mm_k_gated_rmsnorm(cudaStream_t s, bool f32, const float *y, const void *z,
                                          int64_t ldz, int64_t g_off, int64_t T, int64_t nh,
                                          int64_t d, const float *w, void *out)
{
    if (T <= 0)
        return cudaSuccess;
    const unsigned g = mm_blocks(T * nh, 8);
    if (d % 4 == 0 && ldz % 4 == 0 && g_off % 4 == 0) {
        if (f32)
            launch(s, g, 256, 0, gated_rmsnorm4_k<float>, y, (const float *)z, ldz, g_off, T, nh, d, w,
                                               (float *)out);
        else
            launch(s, g, 256, 0, gated_rmsnorm4_k<bf16>, y, (const bf16 *)z, ldz, g_off, T, nh, d, w,
                                               (bf16 *)out);
        return cudaGetLastError();
    }
    if (f32)
        launch(s, g, 256, 0, gated_rmsnorm_k<float>, y, (const float *)z, ldz, g_off, T, nh, d, w,
                                          (float *)out);
    else
        launch(s, g, 256, 0, gated_rmsnorm_k<bf16>, y, (const bf16 *)z, ldz, g_off, T, nh, d, w, (bf16 *)out);
    return cudaGetLastError();
}

extern "C" cudaError_t mm_k_swiglu(cudaStream_t s, bool f32, const void *h, int64_t T, int64_t F,
                                   void *out)
{
    if (T <= 0)
        return cudaSuccess;
    if (F % 8 == 0) {
        const int64_t n8 = T * F / 8;
        const unsigned g8 = mm_blocks(n8, 256);
        if (f32)
            launch(s, g8, 256, 0, swiglu8_k<float>, (const float *)h, F, n8, (float *)out);
        else
            launch(s, g8, 256, 0, swiglu8_k<bf16>, (const bf16 *)h, F, n8, (bf16 *)out);
        return cudaGetLastError();
    }
    const unsigned g = (unsigned)T;
    if (f32)
        launch(s, g, 512, 0, swiglu_k<float>, (const float *)h, F, (float *)out);
    else
        launch(s, g, 512, 0, swiglu_k<bf16>, (const bf16 *)h, F, (bf16 *)out);
    return cudaGetLastError();
}
