/* conv.cu: the Mamba-2 causal depthwise conv1d (kernel 2) + SiLU over a
 * varlen token batch, with each sequence's conv state (the last pre-conv
 * column) read from and written back to its slot. Two launches so that no
 * thread reads a state another thread of the same launch overwrites.
 * CPU twin: mm_cpu_conv2_silu. */
#include "common.cuh"

/* blocks (token row, 256 channels) */
template <typename T, typename SF>
__global__ void conv2_k(const T *z, int64_t ldz, int64_t C, const float *w, const float *b,
                        const struct mm_kspan *spans, const int32_t *tok_span, const SF *state,
                        int64_t slot_elems, int64_t off, float *out)
{
    after_previous();
    const int64_t r = blockIdx.x;
    const struct mm_kspan sp = spans[tok_span[r]];
    const bool first = r == sp.row;
    const T *cur = z + r * ldz, *prev = z + (r - 1) * ldz;
    const SF *st = state + sp.slot * slot_elems + off;
    const int64_t c = (int64_t)blockIdx.y * blockDim.x + threadIdx.x;
    if (c < C) {
        const float pv = first ? ldf(st + c) : ldf(prev + c);
        out[r * C + c] = silu(w[2 * c] * pv + w[2 * c + 1] * ldf(cur + c) + b[c]);
    }
}

/* vector form: 8 channels per thread (16-byte reads of z, C % 8 == 0, z's
 * rows 16-byte aligned); blocks (token row, 2048 channels) */
template <typename T, typename SF>
__global__ void conv2v_k(const T *z, int64_t ldz, int64_t C, const float *w, const float *b,
                         const struct mm_kspan *spans, const int32_t *tok_span, const SF *state,
                         int64_t slot_elems, int64_t off, float *out)
{
    after_previous();
    const int64_t r = blockIdx.x;
    const int64_t c = ((int64_t)blockIdx.y * blockDim.x + threadIdx.x) * 8;
    if (c >= C)
        return;
    const struct mm_kspan sp = spans[tok_span[r]];
    float cur[8], prev[8], wv[16], bv[8], o[8];
    ld8(z + r * ldz + c, cur);
    if (r == sp.row) {
        const SF *st = state + sp.slot * slot_elems + off + c;
#pragma unroll
        for (int e = 0; e < 8; e++)
            prev[e] = ldf(st + e);
    } else {
        ld8(z + (r - 1) * ldz + c, prev);
    }
    ld8(w + 2 * c, wv);
    ld8(w + 2 * c + 8, wv + 8);
    ld8(b + c, bv);
#pragma unroll
    for (int e = 0; e < 8; e++)
        o[e] = silu(wv[2 * e] * prev[e] + wv[2 * e + 1] * cur[e] + bv[e]);
    st8(out + r * C + c, o);
}

template <typename T, typename SF>
__global__ void conv2_state_k(const T *z, int64_t ldz, int64_t C, const struct mm_kspan *spans,
                              SF *state, int64_t slot_elems, int64_t off)
{
    after_previous();
    const struct mm_kspan sp = spans[blockIdx.y];
    if (sp.n <= 0)
        return;
    for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < C;
         c += (int64_t)gridDim.x * blockDim.x)
        stf(state + sp.slot * slot_elems + off + c, ldf(z + (sp.row + sp.n - 1) * ldz + c));
}

template <typename T>
static void conv2_run(cudaStream_t s, const T *z, int64_t ldz, int64_t T_, int64_t C,
                      const float *w, const float *b, const struct mm_kspan *spans,
                      const int32_t *tok_span, struct mm_kstate st, float *out)
{
    if (C % 8 == 0 && ldz % (16 / (int64_t)sizeof(T)) == 0) {
        const dim3 g((unsigned)T_, mm_blocks(C / 8, 256));
        if (st.f32)
            launch(s, g, 256, 0, conv2v_k<T, float>, z, ldz, C, w, b, spans, tok_span, (const float *)st.base,
                                       st.slot_elems, st.off, out);
        else
            launch(s, g, 256, 0, conv2v_k<T, bf16>, z, ldz, C, w, b, spans, tok_span, (const bf16 *)st.base,
                                       st.slot_elems, st.off, out);
        return;
    }
    const dim3 g((unsigned)T_, mm_blocks(C, 256));
    if (st.f32)
        launch(s, g, 256, 0, conv2_k<T, float>, z, ldz, C, w, b, spans, tok_span, (const float *)st.base,
                                  st.slot_elems, st.off, out);
    else
        launch(s, g, 256, 0, conv2_k<T, bf16>, z, ldz, C, w, b, spans, tok_span, (const bf16 *)st.base,
                                  st.slot_elems, st.off, out);
}

extern "C" cudaError_t mm_k_conv2(cudaStream_t s, bool f32, const void *z, int64_t ldz, int64_t T,
                                  int64_t C, const float *w, const float *b,
                                  const struct mm_kspan *spans, const int32_t *tok_span,
                                  struct mm_kstate st, float *out)
{
    if (T <= 0)
        return cudaSuccess;
    if (f32)
        conv2_run(s, (const float *)z, ldz, T, C, w, b, spans, tok_span, st, out);
    else
        conv2_run(s, (const bf16 *)z, ldz, T, C, w, b, spans, tok_span, st, out);
    return cudaGetLastError();
}

extern "C" cudaError_t mm_k_conv2_state(cudaStream_t s, bool f32, const void *z, int64_t ldz,
                                        int64_t C, const struct mm_kspan *spans, int n_spans,
                                        struct mm_kstate st)
{
    if (n_spans <= 0)
        return cudaSuccess;
    const dim3 g(mm_blocks(C, 256), (unsigned)n_spans);
    if (f32 && st.f32)
        launch(s, g, 256, 0, conv2_state_k<float, float>, (const float *)z, ldz, C, spans, (float *)st.base,
                                        st.slot_elems, st.off);
    else if (f32)
        launch(s, g, 256, 0, conv2_state_k<float, bf16>, (const float *)z, ldz, C, spans, (bf16 *)st.base,
                                        st.slot_elems, st.off);
    else if (st.f32)
        launch(s, g, 256, 0, conv2_state_k<bf16, float>, (const bf16 *)z, ldz, C, spans, (float *)st.base,
                                        st.slot_elems, st.off);
    else
        launch(s, g, 256, 0, conv2_state_k<bf16, bf16>, (const bf16 *)z, ldz, C, spans, (bf16 *)st.base,
                                        st.slot_elems, st.off);
    return cudaGetLastError();
}
