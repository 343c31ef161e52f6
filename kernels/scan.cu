/* scan.cu: the Mamba-2 recurrence over a varlen batch, state in place by
 * slot: prefill spans and 1-token decode spans alike, in one launch.
 *
 * Design: the recurrence is run token by token (no chunked SSD): each block
 * owns PR = 16 rows p of one head's d×d state for one sequence, KQ = 4
 * threads per row each holding NC = d/4 columns in registers (as float4
 * chunks, so shared-memory reads are 16 bytes and conflict-free), so a
 * sequence's 16 heads x 128 rows spread over 128 blocks and the state is read
 * once and written once per step. Inputs of L tokens are staged in shared
 * memory at a time.
 * CPU twin: mm_cpu_ssm_scan (+ the bf16 rounding of the state in cpu_mamba2). */
#include "common.cuh"

#define SCAN_KQ 4
#define SCAN_L 16

static __device__ __forceinline__ float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/* 4 state values of row p, columns [4q, 4q + 4) */
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

/* Thread (pl, kq) owns row p = pb*PR + pl, column chunks q = kq + 4*jj of 4 columns:
 * the 4 threads of a row read consecutive 16 bytes of shared memory. */
template <int NC, typename T, typename SF>
__global__ void ssm_scan_k(const float *u, int64_t C, const T *z, int64_t ldz, int64_t dt_off,
                           const struct mm_kspan *spans, int64_t nh, int64_t kvh, int64_t d,
                           const float *dt_bias, const float *A, SF *state, int64_t slot_elems,
                           int64_t off, float *y)
{
    constexpr int D = NC * SCAN_KQ, NQ = NC / 4; /* head dim; chunks per thread */
    const int PR = blockDim.x / SCAN_KQ;
    const int pb_per_head = D / PR;
    const int64_t span = blockIdx.x / (nh * pb_per_head);
    const int64_t h = (blockIdx.x / pb_per_head) % nh;
    const int pb = blockIdx.x % pb_per_head;
    const int pl = threadIdx.x / SCAN_KQ, kq = threadIdx.x % SCAN_KQ;
    const int64_t p = (int64_t)pb * PR + pl;
    const struct mm_kspan sp = spans[span];
    const int64_t groups = nh / kvh, kvd = kvh * d, hk = h / groups;
    __shared__ __align__(16) float sB[SCAN_L][D];
    __shared__ __align__(16) float sC[SCAN_L][D];
    __shared__ float sdt[SCAN_L], sdecay[SCAN_L];
    extern __shared__ float sx[]; /* [SCAN_L][PR] */

    SF *S = state + sp.slot * slot_elems + off + C + h * d * d + p * d;
    float4 reg[NQ];
#pragma unroll
    for (int j = 0; j < NQ; j++)
        reg[j] = ld4(S + 4 * (kq + 4 * j));
    const float a = A[h], bias = dt_bias[h];
    for (int64_t t0 = 0; t0 < sp.n; t0 += SCAN_L) {
        const int L = (int)(sp.n - t0 < SCAN_L ? sp.n - t0 : SCAN_L);
        __syncthreads();
        for (int i = threadIdx.x; i < L * D; i += blockDim.x) {
            const int tt = i / D, k = i % D;
            const float *ur = u + (sp.row + t0 + tt) * C;
            sB[tt][k] = ur[kvd + hk * d + k];
            sC[tt][k] = ur[2 * kvd + h * d + k];
        }
        for (int i = threadIdx.x; i < L * PR; i += blockDim.x) {
            const int tt = i / PR, pp = i % PR;
            sx[tt * PR + pp] = u[(sp.row + t0 + tt) * C + hk * d + (int64_t)pb * PR + pp];
        }
        if (threadIdx.x < L) {
            const float dt = softplus(ldf(z + (sp.row + t0 + threadIdx.x) * ldz + dt_off + h) + bias);
            sdt[threadIdx.x] = dt;
            sdecay[threadIdx.x] = expf(dt * a);
        }
        __syncthreads();
        for (int tt = 0; tt < L; tt++) {
            const float decay = sdecay[tt], dx = sdt[tt] * sx[tt * PR + pl];
            float acc = 0;
#pragma unroll
            for (int j = 0; j < NQ; j++) {
                const float4 b = *(const float4 *)&sB[tt][4 * (kq + 4 * j)];
                const float4 c = *(const float4 *)&sC[tt][4 * (kq + 4 * j)];
                reg[j].x = decay * reg[j].x + dx * b.x;
                reg[j].y = decay * reg[j].y + dx * b.y;
                reg[j].z = decay * reg[j].z + dx * b.z;
                reg[j].w = decay * reg[j].w + dx * b.w;
                acc += c.x * reg[j].x + c.y * reg[j].y + c.z * reg[j].z + c.w * reg[j].w;
            }
            acc += __shfl_xor_sync(0xffffffffu, acc, 1);
            acc += __shfl_xor_sync(0xffffffffu, acc, 2);
            if (kq == 0)
                y[(sp.row + t0 + tt) * nh * d + h * d + p] = acc;
        }
    }
    if (sp.n > 0) {
#pragma unroll
        for (int j = 0; j < NQ; j++)
            st4(S + 4 * (kq + 4 * j), reg[j]);
    }
}

template <int NC, typename T>
static void scan_run(cudaStream_t s, const float *u, int64_t C, const T *z, int64_t ldz,
                     int64_t dt_off, const struct mm_kspan *spans, int n_spans, int64_t nh,
                     int64_t kvh, int64_t d, const float *dt_bias, const float *A,
                     struct mm_kstate st, float *y)
{
    constexpr int D = NC * SCAN_KQ;
    const int PR = D < 16 ? D : 16; /* a sequence's head spreads over D/16 blocks */
    const unsigned grid = (unsigned)(n_spans * nh * (D / PR));
    const size_t shmem = (size_t)SCAN_L * PR * sizeof(float);
    if (st.f32)
        ssm_scan_k<NC><<<grid, PR * SCAN_KQ, shmem, s>>>(u, C, z, ldz, dt_off, spans, nh, kvh, d,
                                                         dt_bias, A, (float *)st.base,
                                                         st.slot_elems, st.off, y);
    else
        ssm_scan_k<NC><<<grid, PR * SCAN_KQ, shmem, s>>>(u, C, z, ldz, dt_off, spans, nh, kvh, d,
                                                         dt_bias, A, (bf16 *)st.base,
                                                         st.slot_elems, st.off, y);
}

template <typename T>
static cudaError_t scan_dispatch(cudaStream_t s, const float *u, int64_t C, const T *z,
                                 int64_t ldz, int64_t dt_off, const struct mm_kspan *spans,
                                 int n_spans, int64_t nh, int64_t kvh, int64_t d,
                                 const float *dt_bias, const float *A, struct mm_kstate st,
                                 float *y)
{
    switch (d) {
    case 16:
        scan_run<4>(s, u, C, z, ldz, dt_off, spans, n_spans, nh, kvh, d, dt_bias, A, st, y);
        break;
    case 32:
        scan_run<8>(s, u, C, z, ldz, dt_off, spans, n_spans, nh, kvh, d, dt_bias, A, st, y);
        break;
    case 64:
        scan_run<16>(s, u, C, z, ldz, dt_off, spans, n_spans, nh, kvh, d, dt_bias, A, st, y);
        break;
    case 128:
        scan_run<32>(s, u, C, z, ldz, dt_off, spans, n_spans, nh, kvh, d, dt_bias, A, st, y);
        break;
    default:
        return cudaErrorInvalidValue; /* head dims the model family uses */
    }
    return cudaGetLastError();
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
    return scan_dispatch(s, u, C, (const bf16 *)z, ldz, dt_off, spans, n_spans, nh, kvh, d,
                         dt_bias, A, st, y);
}
