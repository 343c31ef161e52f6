/* embed.cu: element-type conversion at load, the token-embedding gather and
 * the vision front end (im2col for the patch conv, bias + position add,
 * bias + GELU, the 2x2 pixel-shuffle gather). CPU twins: cpu_embed_tokens,
 * cpu_vision_embed and cpu_pixel_shuffle in src/engine/cpu_backend.c. */
#include "common.cuh"

/* ---- kernels ---------------------------------------------------------------------- */

template <typename S, typename T> __global__ void convert_k(const S *src, T *dst, int64_t n)
{
    after_previous();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v;
        if constexpr (sizeof(S) == 4)
            v = src[i];
        else if constexpr (std::is_same<S, __half>::value)
            v = __half2float(src[i]);
        else
            v = __bfloat162float(src[i]);
        stf(dst + i, v);
    }
}

template <typename T>
__global__ void embed_k(const int32_t *ids, const T *text, int64_t Ve, const T *special, int64_t H,
                        T *x)
{
    after_previous();
    const int64_t i = blockIdx.x;
    const int64_t id = ids[i];
    const T *src = id < Ve ? text + id * H : special + (id - Ve) * H;
    for (int64_t k = threadIdx.x; k < H; k += blockDim.x)
        x[i * H + k] = src[k];
}

/* one block per patch row: out[(n*P + r)*P + q][(ch*p + ki)*p + kj] */
template <typename T>
__global__ void im2col_k(const float *tiles, int64_t S, int64_t p, int64_t P, T *out)
{
    after_previous();
    const int64_t row = blockIdx.x, K = 3 * p * p;
    const int64_t n = row / (P * P), r = (row / P) % P, q = row % P;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
        const int64_t ch = k / (p * p), ki = (k / p) % p, kj = k % p;
        stf(out + row * K + k, tiles[((n * 3 + ch) * S + r * p + ki) * S + q * p + kj]);
    }
}

static __device__ __forceinline__ float gelu(float x)
{
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

template <typename T>
__global__ void bias_act_k(T *x, int64_t rows, int64_t cols, const float *bias, const float *pos,
                           int64_t pos_rows, bool use_gelu)
{
    after_previous();
    const int64_t r = blockIdx.x;
    for (int64_t k = threadIdx.x; k < cols; k += blockDim.x) {
        float v = ldf(x + r * cols + k) + bias[k];
        if (pos)
            v += pos[(r % pos_rows) * cols + k];
        stf(x + r * cols + k, use_gelu ? gelu(v) : v);
    }
    (void)rows;
}

/* out token t = R*P/2 + C of tile n <- [P(2R,2C), P(2R,2C+1), P(2R+1,2C), P(2R+1,2C+1)] */
template <typename T> __global__ void shuffle_k(const T *in, int64_t P, int64_t H, T *out)
{
    after_previous();
    const int64_t P2 = P / 2, o = blockIdx.x;
    const int64_t n = o / (P2 * P2), R = (o / P2) % P2, Cc = o % P2;
    const int64_t base = n * P * P;
    for (int64_t k = threadIdx.x; k < 4 * H; k += blockDim.x) {
        const int64_t part = k / H, j = k % H;
        const int64_t src = base + (2 * R + part / 2) * P + 2 * Cc + part % 2;
        out[o * 4 * H + k] = in[src * H + j];
    }
}

/* ---- launchers -------------------------------------------------------------------- */

template <typename T>
static void convert_from(cudaStream_t s, const void *src, enum mm_dtype t, T *dst, int64_t n)
{
    const unsigned g = (unsigned)(n < 65536 * 256 ? mm_blocks(n, 256) : 65536);
    if (t == MM_DTYPE_F32)
        launch(s, g, 256, 0, convert_k<float, T>, (const float *)src, dst, n);
    else if (t == MM_DTYPE_F16)
        launch(s, g, 256, 0, convert_k<__half, T>, (const __half *)src, dst, n);
    else
        launch(s, g, 256, 0, convert_k<bf16, T>, (const bf16 *)src, dst, n);
}

extern "C" cudaError_t mm_k_convert(cudaStream_t s, const void *src, enum mm_dtype t, void *dst,
                                    bool f32, int64_t n)
{
    if (n <= 0)
        return cudaSuccess;
    if (t != MM_DTYPE_F32 && t != MM_DTYPE_F16 && t != MM_DTYPE_BF16)
        return cudaErrorInvalidValue;
    if (f32)
        convert_from(s, src, t, (float *)dst, n);
    else
        convert_from(s, src, t, (bf16 *)dst, n);
    return cudaGetLastError();
}

extern "C" cudaError_t mm_k_embed(cudaStream_t s, bool f32, const int32_t *ids, int64_t n,
                                  const void *text, int64_t Ve, const void *special, int64_t H,
                                  void *x)
{
    if (n <= 0)
        return cudaSuccess;
    if (f32)
        launch(s, (unsigned)n, 256, 0, embed_k<float>, ids, (const float *)text, Ve, (const float *)special, H,
                                            (float *)x);
    else
        launch(s, (unsigned)n, 256, 0, embed_k<bf16>, ids, (const bf16 *)text, Ve, (const bf16 *)special, H,
                                            (bf16 *)x);
    return cudaGetLastError();
}

extern "C" cudaError_t mm_k_im2col(cudaStream_t s, bool f32, const float *tiles, int64_t n_tiles,
                                   int64_t S, int64_t p, void *out)
{
    const int64_t P = S / p, rows = n_tiles * P * P;
    if (rows <= 0)
        return cudaSuccess;
    if (f32)
        launch(s, (unsigned)rows, 256, 0, im2col_k<float>, tiles, S, p, P, (float *)out);
    else
        launch(s, (unsigned)rows, 256, 0, im2col_k<bf16>, tiles, S, p, P, (bf16 *)out);
    return cudaGetLastError();
}

extern "C" cudaError_t mm_k_bias_act(cudaStream_t s, bool f32, void *x, int64_t rows, int64_t cols,
                                     const float *bias, const float *pos, int64_t pos_rows,
                                     bool gelu)
{
    if (rows <= 0)
        return cudaSuccess;
    if (f32)
        launch(s, (unsigned)rows, 256, 0, bias_act_k<float>, (float *)x, rows, cols, bias, pos, pos_rows,
                                                  gelu);
    else
        launch(s, (unsigned)rows, 256, 0, bias_act_k<bf16>, (bf16 *)x, rows, cols, bias, pos, pos_rows, gelu);
    return cudaGetLastError();
}

extern "C" cudaError_t mm_k_shuffle_gather(cudaStream_t s, bool f32, const void *in,
                                           int64_t n_tiles, int64_t P, int64_t H, void *out)
{
    const int64_t rows = n_tiles * (P / 2) * (P / 2);
    if (rows <= 0)
        return cudaSuccess;
    if (f32)
        launch(s, (unsigned)rows, 256, 0, shuffle_k<float>, (const float *)in, P, H, (float *)out);
    else
        launch(s, (unsigned)rows, 256, 0, shuffle_k<bf16>, (const bf16 *)in, P, H, (bf16 *)out);
    return cudaGetLastError();
}
