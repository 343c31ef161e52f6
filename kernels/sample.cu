/* sample.cu: the sampler (backend.h `sample`, steps 2-6) on the GPU, one
 * block per request, so only ids and logprobs cross to the host. CPU twin:
 * mm_cpu_sample_row (src/engine/cpu_sample.c), whose rules this follows:
 *
 * Design: no sort. Every "keep the first k in the order (p descending, id
 * ascending)" is a threshold (a value tau and an id cut among the ties at
 * tau) found by bisection on the bits of non-negative floats with block-wide
 * counts or sums; the draw is a block-wide prefix sum over ids in ascending
 * order. Sums are in double as on the CPU; they differ from its sequential
 * sums only by rounding. */
#include "common.cuh"

#define SB 1024 /* threads per request */

static __device__ uint32_t philox_word0(uint64_t seed, uint32_t counter, uint32_t stream)
{
    uint32_t c0 = counter, c1 = stream, c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        const uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        const uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    return c0;
}

struct vi {
    float v;
    int32_t i;
};

/* (v desc, i asc): a ranks before b */
static __device__ __forceinline__ bool before(struct vi a, struct vi b)
{
    return a.i >= 0 && (b.i < 0 || a.v > b.v || (a.v == b.v && a.i < b.i));
}

static __device__ struct vi block_best(struct vi x, struct vi *sh)
{
    for (int o = 16; o > 0; o >>= 1) {
        struct vi y;
        y.v = __shfl_xor_sync(0xffffffffu, x.v, o);
        y.i = __shfl_xor_sync(0xffffffffu, x.i, o);
        if (before(y, x))
            x = y;
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0)
        sh[threadIdx.x >> 5] = x;
    __syncthreads();
    x = sh[0];
    for (int w = 1; w < SB / 32; w++)
        if (before(sh[w], x))
            x = sh[w];
    return x;
}

static __device__ double block_dsum(double v, double *sh)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0)
        sh[threadIdx.x >> 5] = v;
    __syncthreads();
    double t = 0;
    for (int w = 0; w < SB / 32; w++)
        t += sh[w];
    return t;
}

/* kept: p > tau, or p == tau and id <= cut */
struct keep {
    float tau;
    int64_t cut;
};

static __device__ __forceinline__ bool kept(float p, int64_t i, struct keep k)
{
    return p > k.tau || (p == k.tau && i <= k.cut);
}

/* Of the candidates that pass `prev` (and p >= floor), keeps the first ones in
 * rank order: the first `want` (by count) when mass < 0, else the shortest
 * prefix whose running sum reaches `mass`. */
static __device__ struct keep rank_cut(const float *p, int64_t V, struct keep prev, float floor_,
                                       int64_t want, double mass, double *sh)
{
    /* tau: the largest value whose "p >= tau" set reaches the goal */
    uint32_t lo = 0, hi = 0x7f800000u; /* p in [0, inf) */
    while (lo < hi) {
        const uint32_t mid = lo + (hi - lo + 1) / 2;
        const float t = __uint_as_float(mid);
        double acc = 0;
        for (int64_t i = threadIdx.x; i < V; i += SB)
            if (kept(p[i], i, prev) && p[i] >= floor_ && p[i] >= t)
                acc += mass < 0 ? 1.0 : (double)p[i];
        acc = block_dsum(acc, sh);
        if (mass < 0 ? acc >= (double)want : acc >= mass)
            lo = mid;
        else
            hi = mid - 1;
    }
    const float tau = __uint_as_float(lo);
    /* above tau, all; at tau, ids in ascending order until the goal */
    double above = 0;
    for (int64_t i = threadIdx.x; i < V; i += SB)
        if (kept(p[i], i, prev) && p[i] >= floor_ && p[i] > tau)
            above += mass < 0 ? 1.0 : (double)p[i];
    above = block_dsum(above, sh);
    int64_t clo = -1, chi = V - 1;
    while (clo < chi) { /* the smallest cut whose ties reach the goal */
        const int64_t mid = clo + (chi - clo) / 2;
        double acc = 0;
        for (int64_t i = threadIdx.x; i <= mid; i += SB)
            if (kept(p[i], i, prev) && p[i] >= floor_ && p[i] == tau)
                acc += mass < 0 ? 1.0 : (double)p[i];
        acc = above + block_dsum(acc, sh);
        if (mass < 0 ? acc >= (double)want : acc >= mass)
            chi = mid;
        else
            clo = mid + 1;
    }
    return (struct keep){tau, chi};
}

__global__ void __launch_bounds__(SB)
    sample_k(const float *__restrict__ logits, float *__restrict__ work, int64_t V,
             const struct mm_ksample *reqs, uint32_t *__restrict__ counts,
             struct mm_ksample_out *out)
{
    after_previous();
    __shared__ struct vi shv[SB / 32];
    __shared__ double shd[SB / 32];
    const struct mm_ksample r = reqs[blockIdx.x];
    const float *raw = logits + blockIdx.x * V;
    float *l = work + blockIdx.x * V;
    uint32_t *cnt = counts + (int64_t)r.slot * V;
    struct mm_ksample_out *o = out + blockIdx.x;

    /* 3. penalties, and in the same pass the argmax of the raw and the
     * penalised logits (4 loads in flight per thread) */
    const bool rep = r.repetition > 0 && r.repetition != 1.0f;
    struct vi best = {-INFINITY, -1}, m = {-INFINITY, -1};
    for (int64_t base = threadIdx.x; base < V; base += 4 * SB) {
        float rv[4];
        uint32_t cv[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int64_t i = base + u * SB;
            rv[u] = i < V ? __ldg(raw + i) : 0.0f;
            cv[u] = i < V ? __ldg(cnt + i) : 0u;
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int64_t i = base + u * SB;
            if (i >= V)
                break;
            float v = rv[u];
            if (cv[u]) {
                const uint32_t n_out = cv[u] & MM_K_COUNT_OUTPUT;
                if (rep)
                    v = v > 0 ? v / r.repetition : v * r.repetition;
                if (n_out)
                    v -= r.frequency * (float)n_out + r.presence;
            }
            l[i] = v;
            const struct vi c = {v, (int32_t)i}, cr = {rv[u], (int32_t)i};
            if (before(c, best))
                best = c;
            if (before(cr, m))
                m = cr;
        }
    }
    best = block_best(best, shv);
    m = block_best(m, shv);
    __syncthreads();
    int32_t id = best.i;
    if (!(r.temperature <= 0 || r.top_k == 1)) {
        /* 5. p_i = exp((l_i - max l) / T), unnormalised */
        const float mx = best.v;
        __syncthreads();
        for (int64_t i = threadIdx.x; i < V; i += SB)
            l[i] = expf((l[i] - mx) / r.temperature);
        __syncthreads();
        struct keep k = {-1.0f, V}; /* everything */
        if (r.top_k > 0 && r.top_k < V)
            k = rank_cut(l, V, k, 0.0f, r.top_k, -1.0, shd);
        if (r.top_p < 1.0f) {
            double mass = 0;
            for (int64_t i = threadIdx.x; i < V; i += SB)
                if (kept(l[i], i, k))
                    mass += l[i];
            mass = block_dsum(mass, shd);
            k = rank_cut(l, V, k, 0.0f, 0, (double)r.top_p * mass, shd);
        }
        /* min_p: the top candidate always stays (its p is the maximum, 1) */
        float floor_ = 0.0f;
        if (r.min_p > 0) {
            float pmax = 0;
            for (int64_t i = threadIdx.x; i < V; i += SB)
                if (kept(l[i], i, k))
                    pmax = fmaxf(pmax, l[i]);
            struct vi pm = {pmax, 0};
            pm = block_best(pm, shv);
            floor_ = r.min_p < 1 ? r.min_p * pm.v : pm.v;
        }
        /* the draw: running sum in ascending id order, each thread a contiguous range */
        const int64_t per = (V + SB - 1) / SB, i0 = threadIdx.x * per;
        const int64_t i1 = i0 + per < V ? i0 + per : V;
        double mine = 0;
        int64_t last = -1;
        for (int64_t i = i0; i < i1; i++)
            if (kept(l[i], i, k) && l[i] >= floor_) {
                mine += l[i];
                last = i;
            }
        /* exclusive prefix over threads through shared memory */
        __shared__ double pref[SB];
        __shared__ int64_t lastk[SB];
        __shared__ int32_t chosen;
        __syncthreads();
        pref[threadIdx.x] = mine;
        lastk[threadIdx.x] = last;
        if (threadIdx.x == 0)
            chosen = -1;
        __syncthreads();
        if (threadIdx.x == 0) {
            double run = 0;
            for (int t = 0; t < SB; t++) {
                const double v = pref[t];
                pref[t] = run;
                run += v;
            }
            shd[0] = run; /* total */
            int64_t lk = -1;
            for (int t = SB - 1; t >= 0 && lk < 0; t--)
                lk = lastk[t];
            lastk[0] = lk; /* the last kept id, if rounding leaves the target unreached */
        }
        __syncthreads();
        const double total = shd[0];
        const double target = (double)((float)(philox_word0(r.seed, r.counter, r.stream) >> 8) *
                                       (1.0f / 16777216.0f)) *
                              total;
        double run = pref[threadIdx.x];
        if (run <= target && run + mine > target)
            for (int64_t i = i0; i < i1; i++)
                if (kept(l[i], i, k) && l[i] >= floor_) {
                    run += l[i];
                    if (run > target) {
                        chosen = (int32_t)i;
                        break;
                    }
                }
        __syncthreads();
        id = chosen >= 0 ? chosen : (int32_t)lastk[0];
    }

    /* 2. raw logprobs: log_softmax of the raw logits at id (exp in float,
     * summed in double), and the top n */
    double sum = 0;
    for (int64_t base = threadIdx.x; base < V; base += 4 * SB) {
        float rv[4];
#pragma unroll
        for (int u = 0; u < 4; u++)
            rv[u] = base + u * SB < V ? __ldg(raw + base + u * SB) : -INFINITY;
#pragma unroll
        for (int u = 0; u < 4; u++)
            sum += (double)expf(rv[u] - m.v);
    }
    sum = block_dsum(sum, shd);
    const double logz = m.v + log(sum);
    int n_top = r.n_logprobs < 0                   ? 0
                : r.n_logprobs > MM_K_MAX_LOGPROBS ? MM_K_MAX_LOGPROBS
                                                   : r.n_logprobs;
    if (n_top > V)
        n_top = (int)V;
    struct vi prev = m;
    for (int j = 0; j < n_top; j++) {
        if (j > 0) { /* the next after prev in rank order */
            struct vi b = {-INFINITY, -1};
            for (int64_t i = threadIdx.x; i < V; i += SB) {
                const struct vi c = {raw[i], (int32_t)i};
                if (!before(prev, c))
                    continue;
                if (before(c, b))
                    b = c;
            }
            prev = block_best(b, shv);
        }
        if (threadIdx.x == 0) {
            o->top_ids[j] = prev.i;
            o->top_logprobs[j] = (float)((double)prev.v - logz);
        }
    }
    if (threadIdx.x == 0) {
        o->id = id;
        o->n_top = n_top;
        o->logprob = (float)((double)raw[id] - logz);
        /* 6. count the chosen id as output (saturating) */
        if ((cnt[id] & MM_K_COUNT_OUTPUT) != MM_K_COUNT_OUTPUT)
            cnt[id]++;
    }
}

__global__ void count_k(uint32_t *counts, int64_t V, const int32_t *ids, int64_t n, bool output)
{
    after_previous();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int32_t id = ids[i];
        if (id < 0 || id >= V)
            continue;
        if (!output) {
            atomicOr(&counts[id], MM_K_COUNT_PROMPT);
            continue;
        }
        uint32_t old = counts[id], seen;
        do { /* saturating increment of the low 31 bits */
            if ((old & MM_K_COUNT_OUTPUT) == MM_K_COUNT_OUTPUT)
                break;
            seen = old;
            old = atomicCAS(&counts[id], seen, seen + 1);
        } while (old != seen);
    }
}

extern "C" cudaError_t mm_k_sample(cudaStream_t s, const float *logits, float *work, int64_t V,
                                   const struct mm_ksample *reqs, int n, uint32_t *counts,
                                   struct mm_ksample_out *out)
{
    if (n <= 0)
        return cudaSuccess;
    launch(s, (unsigned)n, SB, 0, sample_k, logits, work, V, reqs, counts, out);
    return cudaGetLastError();
}

extern "C" cudaError_t mm_k_count(cudaStream_t s, uint32_t *counts, int64_t V, int32_t slot,
                                  const int32_t *ids, int64_t n, bool output)
{
    if (n <= 0)
        return cudaSuccess;
    const unsigned g = (unsigned)(n < 4096 * 256 ? mm_blocks(n, 256) : 4096);
    launch(s, g, 256, 0, count_k, counts + (int64_t)slot * V, V, ids, n, output);
    return cudaGetLastError();
}
