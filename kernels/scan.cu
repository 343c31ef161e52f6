/* scan.cu: the Mamba-2 recurrence over a varlen batch, state in place by
 * slot: prefill spans and 1-token decode spans alike, in one launch.
 *
 * Design: the recurrence is run token by token (no chunked SSD): each block
 * owns PR = 8 rows p of one head's d×d state for one sequence, KQ = 8
 * threads per row each holding d/8 columns in registers (as float4 chunks,
 * so shared-memory reads are 16 bytes and conflict-free), so a
 * sequence's 16 heads x 128 rows spread over 256 blocks and the state is read
 * once and written once per step. Inputs are staged in shared memory L tokens
 * at a time, the next L copied asynchronously while the current L are scanned.
 * CPU twin: mm_cpu_ssm_scan (+ the bf16 rounding of the state in cpu_mamba2). */
#include <cuda_pipeline.h>

#include "common.cuh"

#define SCAN_L 16
/* threads per state row: 8 (4 float4 chunks each at d = 128), 4 below d = 32 */
#define SCAN_KQ(D) ((D) >= 32 ? 8 : 4)
#define SCAN_PR 8 /* state rows per block: 256 blocks for one sequence of 16 heads */

/* Thread (pl, kq) owns row p = pb*PR + pl, column chunks q = kq + KQ*jj of 4 columns:
 * the KQ threads of a row read consecutive 16-byte chunks of shared memory. Inputs
 * of the next L tokens are copied (cp.async) while the current L are scanned. */
template <int D, typename T, typename SF>
__global__ void __launch_bounds__(64)
    ssm_scan_k(const float *__restrict__ u, int64_t C, const T *__restrict__ z, int64_t ldz,
               int64_t dt_off, const struct mm_kspan *spans, int64_t nh, int64_t kvh, int64_t d,
               const float *dt_bias, const float *A, SF *state, int64_t slot_elems, int64_t off,
               float *__restrict__ y)
{
    after_previous();
    constexpr int KQ = SCAN_KQ(D), NQ = D / KQ / 4; /* threads per row; chunks per thread */
    constexpr int PR = D < SCAN_PR ? D : SCAN_PR, NT = PR * KQ;
    constexpr int pb_per_head = D / PR;
    const int64_t span = blockIdx.x / (nh * pb_per_head);
    const int64_t h = (blockIdx.x / pb_per_head) % nh;
    const int pb = blockIdx.x % pb_per_head;
    const int tid = threadIdx.x, pl = tid / KQ, kq = tid % KQ;
    const int64_t p = (int64_t)pb * PR + pl;
    const struct mm_kspan sp = spans[span];
    const int64_t groups = nh / kvh, kvd = kvh * d, hk = h / groups;
    __shared__ __align__(16) float sB[2][SCAN_L][D];
    __shared__ __align__(16) float sC[2][SCAN_L][D];
    __shared__ __align__(16) float sx[2][SCAN_L][PR];
    __shared__ float sdt[2][SCAN_L], sdecay[2][SCAN_L];

    SF *S = state + sp.slot * slot_elems + off + C + h * d * d + p * d;
    float4 reg[NQ];
#pragma unroll
    for (int j = 0; j < NQ; j++)
        reg[j] = ld4(S + 4 * (kq + KQ * j));
    const float a = A[h], bias = dt_bias[h];
    /* async copies of tokens [t0, t0 + L) into buffer b */
    auto stage = [&](int b, int64_t t0) {
        const int L = (int)(sp.n - t0 < SCAN_L ? sp.n - t0 : SCAN_L);
        for (int i = tid; i < L * (D / 4); i += NT) {
            const int tt = i / (D / 4), k4 = i % (D / 4);
            const float *ur = u + (sp.row + t0 + tt) * C;
            __pipeline_memcpy_async(&sB[b][tt][4 * k4], ur + kvd + hk * d + 4 * k4, 16);
            __pipeline_memcpy_async(&sC[b][tt][4 * k4], ur + 2 * kvd + h * d + 4 * k4, 16);
        }
        for (int i = tid; i < L * (PR / 4); i += NT) {
            const int tt = i / (PR / 4), q = i % (PR / 4);
            __pipeline_memcpy_async(&sx[b][tt][4 * q],
                                    u + (sp.row + t0 + tt) * C + hk * d + (int64_t)pb * PR + 4 * q,
                                    16);
        }
    };
    auto dt_raw = [&](int64_t t) { return ldf(z + (sp.row + t) * ldz + dt_off + h); };
    if (sp.n > 0) {
        stage(0, 0);
        __pipeline_commit();
        if (tid < SCAN_L && tid < sp.n) {
            const float dt = softplus(dt_raw(tid) + bias);
            sdt[0][tid] = dt;
            sdecay[0][tid] = expf(dt * a);
        }
    }
    for (int64_t t0 = 0, c = 0; t0 < sp.n; t0 += SCAN_L, c++) {
        const int b = (int)(c & 1);
        const int L = (int)(sp.n - t0 < SCAN_L ? sp.n - t0 : SCAN_L);
        const bool more = t0 + SCAN_L < sp.n;
        float dtn = 0;
        if (more) {
            stage(b ^ 1, t0 + SCAN_L);
            if (tid < SCAN_L && t0 + SCAN_L + tid < sp.n)
                dtn = dt_raw(t0 + SCAN_L + tid);
        }
        __pipeline_commit();
        __pipeline_wait_prior(1); /* this chunk has landed */
        __syncthreads();
        const float *sBb = &sB[b][0][0], *sCb = &sC[b][0][0], *sxb = &sx[b][0][pl];
        float *yp = y + (sp.row + t0) * nh * d + h * d + p;
        const int64_t ystride = nh * d;
        for (int tt = 0; tt < L; tt++, sBb += D, sCb += D, sxb += PR, yp += ystride) {
            const float decay = sdecay[b][tt], dx = sdt[b][tt] * *sxb;
            float acc0 = 0, acc1 = 0;
#pragma unroll
            for (int j = 0; j < NQ; j++) {
                const float4 bb = *(const float4 *)(sBb + 4 * (kq + KQ * j));
                const float4 cc = *(const float4 *)(sCb + 4 * (kq + KQ * j));
                reg[j].x = decay * reg[j].x + dx * bb.x;
                reg[j].y = decay * reg[j].y + dx * bb.y;
                reg[j].z = decay * reg[j].z + dx * bb.z;
                reg[j].w = decay * reg[j].w + dx * bb.w;
                acc0 += cc.x * reg[j].x + cc.y * reg[j].y;
                acc1 += cc.z * reg[j].z + cc.w * reg[j].w;
            }
            float acc = acc0 + acc1;
#pragma unroll
            for (int o = 1; o < KQ; o <<= 1)
                acc += __shfl_xor_sync(0xffffffffu, acc, o);
            if (kq == 0)
                *yp = acc;
        }
        if (more && tid < SCAN_L && t0 + SCAN_L + tid < sp.n) {
            const float dt = softplus(dtn + bias);
            sdt[b ^ 1][tid] = dt;
            sdecay[b ^ 1][tid] = expf(dt * a);
        }
        __syncthreads(); /* buffer b is free for the copy two chunks ahead */
    }
    if (sp.n > 0) {
#pragma unroll
        for (int j = 0; j < NQ; j++)
            st4(S + 4 * (kq + KQ * j), reg[j]);
    }
}

template <int D, typename T>
static void scan_run(cudaStream_t s, const float *u, int64_t C, const T *z, int64_t ldz,
                     int64_t dt_off, const struct mm_kspan *spans, int n_spans, int64_t nh,
                     int64_t kvh, int64_t d, const float *dt_bias, const float *A,
                     struct mm_kstate st, float *y)
{
    constexpr int PR = D < SCAN_PR ? D : SCAN_PR, NT = PR * SCAN_KQ(D);
    const unsigned grid = (unsigned)(n_spans * nh * (D / PR));
    if (st.f32)
        launch(s, grid, NT, 0, ssm_scan_k<D, T, float>, u, C, z, ldz, dt_off, spans, nh, kvh, d, dt_bias, A,
                                          (float *)st.base, st.slot_elems, st.off, y);
    else
        launch(s, grid, NT, 0, ssm_scan_k<D, T, bf16>, u, C, z, ldz, dt_off, spans, nh, kvh, d, dt_bias, A,
                                          (bf16 *)st.base, st.slot_elems, st.off, y);
}

template <typename T>
static cudaError_t scan_dispatch(cudaStream_t s, const float *u, int64_t C, const T *z, int64_t ldz,
                                 int64_t dt_off, const struct mm_kspan *spans, int n_spans,
                                 int64_t nh, int64_t kvh, int64_t d, const float *dt_bias,
                                 const float *A, struct mm_kstate st, float *y)
{
    switch (d) {
    case 16:
        scan_run<16>(s, u, C, z, ldz, dt_off, spans, n_spans, nh, kvh, d, dt_bias, A, st, y);
        break;
    case 32:
        scan_run<32>(s, u, C, z, ldz, dt_off, spans, n_spans, nh, kvh, d, dt_bias, A, st, y);
        break;
    case 64:
        scan_run<64>(s, u, C, z, ldz, dt_off, spans, n_spans, nh, kvh, d, dt_bias, A, st, y);
        break;
    case 128:
        scan_run<128>(s, u, C, z, ldz, dt_off, spans, n_spans, nh, kvh, d, dt_bias, A, st, y);
        break;
    default:
        return cudaErrorInvalidValue; /* head dims the model family uses */
    }
    return cudaGetLastError();
}

/* ---- decode: one token per span, conv + update + gated norm fused ------------------- */

/* one block of D threads per (span, head); 8 lanes per state row, each with
 * D/8 columns (16-byte loads), 4 rows per warp per pass */
template <int D, typename T, typename SF>
__global__ void __launch_bounds__(D)
    ssm_decode_k(const T *__restrict__ z, int64_t ldz, int64_t C, const float *conv_w,
                 const float *conv_b, const struct mm_kspan *spans, int64_t nh, int64_t kvh,
                 const float *dt_bias, const float *A, const float *gnorm, SF *state,
                 int64_t slot_elems, int64_t off, T *out)
{
    after_previous();
    constexpr int E = D / 8; /* columns per lane */
    __shared__ __align__(16) float sB[D], sC[D], sx[D], sy[D];
    __shared__ float sh[32];
    const int64_t span = blockIdx.x / nh, h = blockIdx.x % nh;
    const int tid = threadIdx.x;
    const struct mm_kspan sp = spans[span];
    const int64_t d = D, groups = nh / kvh, kvd = kvh * d, hk = h / groups;
    const T *zr = z + sp.row * ldz;
    const SF *cs = state + sp.slot * slot_elems + off; /* conv state [C] */
    auto conv = [&](int64_t c) {
        return silu(conv_w[2 * c] * ldf(cs + c) + conv_w[2 * c + 1] * ldf(zr + c) + conv_b[c]);
    };
    sx[tid] = conv(hk * d + tid);
    sB[tid] = conv(kvd + hk * d + tid);
    sC[tid] = conv(2 * kvd + h * d + tid);
    const float dt = softplus(ldf(zr + C + nh * d + h) + dt_bias[h]);
    const float decay = expf(dt * A[h]);
    __syncthreads();
    const int lane8 = tid & 7, row0 = tid >> 3; /* D/8 rows per pass */
    SF *S = state + sp.slot * slot_elems + off + C + h * d * d;
    for (int p = row0; p < D; p += D / 8) {
        SF *row = S + (int64_t)p * d + lane8 * E;
        const float dx = dt * sx[p];
        float acc = 0;
#pragma unroll
        for (int q = 0; q < E; q += 4) {
            float4 v = ld4(row + q);
            const float4 b = *(const float4 *)&sB[lane8 * E + q];
            const float4 c = *(const float4 *)&sC[lane8 * E + q];
            v.x = decay * v.x + dx * b.x;
            v.y = decay * v.y + dx * b.y;
            v.z = decay * v.z + dx * b.z;
            v.w = decay * v.w + dx * b.w;
            acc += c.x * v.x + c.y * v.y + c.z * v.z + c.w * v.w;
            st4(row + q, v);
        }
        acc += __shfl_xor_sync(0xffffffffu, acc, 1);
        acc += __shfl_xor_sync(0xffffffffu, acc, 2);
        acc += __shfl_xor_sync(0xffffffffu, acc, 4);
        if (lane8 == 0)
            sy[p] = acc;
    }
    __syncthreads();
    /* gated RMSNorm of the head: y * rsqrt(mean y^2 + 1e-5) * w * silu(g) */
    const float yv = sy[tid];
    const float ss = block_sum(yv * yv, sh);
    const float r = 1.0f / sqrtf(ss / (float)D + 1e-5f);
    const float g = ldf(zr + C + h * d + tid);
    stf(out + span * nh * d + h * d + tid, yv * r * gnorm[tid] * silu(g));
}

template <int D, typename T>
static void decode_run(cudaStream_t s, const T *z, int64_t ldz, int64_t C, const float *cw,
                       const float *cb, const struct mm_kspan *spans, int n_spans, int64_t nh,
                       int64_t kvh, const float *dt_bias, const float *A, const float *gnorm,
                       struct mm_kstate st, T *out)
{
    const unsigned grid = (unsigned)(n_spans * nh);
    if (st.f32)
        launch(s, grid, D, 0, ssm_decode_k<D, T, float>, z, ldz, C, cw, cb, spans, nh, kvh, dt_bias, A, gnorm,
                                           (float *)st.base, st.slot_elems, st.off, out);
    else
        launch(s, grid, D, 0, ssm_decode_k<D, T, bf16>, z, ldz, C, cw, cb, spans, nh, kvh, dt_bias, A, gnorm,
                                           (bf16 *)st.base, st.slot_elems, st.off, out);
}

template <typename T>
static cudaError_t decode_dispatch(cudaStream_t s, const T *z, int64_t ldz, int64_t C,
                                   const float *cw, const float *cb, const struct mm_kspan *spans,
                                   int n_spans, int64_t nh, int64_t kvh, int64_t d,
                                   const float *dt_bias, const float *A, const float *gnorm,
                                   struct mm_kstate st, T *out)
{
    if (d == 128)
        decode_run<128>(s, z, ldz, C, cw, cb, spans, n_spans, nh, kvh, dt_bias, A, gnorm, st, out);
    else if (d == 64)
        decode_run<64>(s, z, ldz, C, cw, cb, spans, n_spans, nh, kvh, dt_bias, A, gnorm, st, out);
    else
        return cudaErrorInvalidValue;
    return cudaGetLastError();
}

extern "C" cudaError_t mm_k_ssm_decode(cudaStream_t s, bool f32, const void *z, int64_t ldz,
                                       int64_t C, const float *conv_w, const float *conv_b,
                                       const struct mm_kspan *spans, int n_spans, int64_t nh,
                                       int64_t kvh, int64_t d, const float *dt_bias, const float *A,
                                       const float *gnorm, struct mm_kstate st, void *out)
{
    if (n_spans <= 0)
        return cudaSuccess;
    if (f32)
        return decode_dispatch(s, (const float *)z, ldz, C, conv_w, conv_b, spans, n_spans, nh, kvh,
                               d, dt_bias, A, gnorm, st, (float *)out);
    return decode_dispatch(s, (const bf16 *)z, ldz, C, conv_w, conv_b, spans, n_spans, nh, kvh, d,
                           dt_bias, A, gnorm, st, (bf16 *)out);
}

extern "C" cudaError_t mm_k_ssm_scan(cudaStream_t s, const float *u, int64_t C, const void *z,
                                     bool f32, int64_t ldz, int64_t dt_off,
                                     const struct mm_kspan *spans, int n_spans, int64_t nh,
                                     int64_t kvh, int64_t d, const float *dt_bias, const float *A,
                                     struct mm_kstate st, float *y)
{
    if (n_spans <= 0)
        return cudaSuccess;
    if (f32)
        return scan_dispatch(s, u, C, (const float *)z, ldz, dt_off, spans, n_spans, nh, kvh, d,
                             dt_bias, A, st, y);
    return scan_dispatch(s, u, C, (const bf16 *)z, ldz, dt_off, spans, n_spans, nh, kvh, d, dt_bias,
                         A, st, y);
}
