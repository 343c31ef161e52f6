/* cpu_kernels.c: fp32 reference math (see cpu_kernels.h). Clarity first;
 * the matmul is blocked and threaded because everything else is cheap. */
#include "engine/cpu_kernels.h"

#include <math.h>
#include <string.h>

/* ---- matmul --------------------------------------------------------------------- */

struct matmul_job {
    const float *x, *W, *bias;
    float *y;
    int64_t n, K, N;
    bool accumulate;
};

static float dot(const float *a, const float *b, int64_t K)
{
    float acc[8] = {0};
    int64_t k = 0;
    for (; k + 8 <= K; k += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += a[k + l] * b[k + l];
    float s = 0;
    for (; k < K; k++)
        s += a[k] * b[k];
    return s + ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static void matmul_cols(void *arg, int64_t j0, int64_t j1, int worker)
{
    (void)worker;
    const struct matmul_job *m = arg;
    /* blocks of rows keep a panel of W in cache while x rows stream */
    const int64_t RB = 16, CB = 64;
    for (int64_t i0 = 0; i0 < m->n; i0 += RB) {
        const int64_t i1 = i0 + RB < m->n ? i0 + RB : m->n;
        for (int64_t jb = j0; jb < j1; jb += CB) {
            const int64_t je = jb + CB < j1 ? jb + CB : j1;
            for (int64_t i = i0; i < i1; i++) {
                const float *xi = m->x + i * m->K;
                float *yi = m->y + i * m->N;
                for (int64_t j = jb; j < je; j++) {
                    float v = dot(xi, m->W + j * m->K, m->K);
                    if (m->bias)
                        v += m->bias[j];
                    yi[j] = m->accumulate ? yi[j] + v : v;
                }
            }
        }
    }
}

void mm_cpu_matmul(struct mm_threadpool *tp, const float *x, int64_t n, int64_t K, const float *W,
                   int64_t N, const float *bias, float *y, bool accumulate)
{
    struct matmul_job m = {x, W, bias, y, n, K, N, accumulate};
    /* grain: enough columns that a share is worth a wake-up */
    const int64_t work_per_col = n * K;
    int64_t grain = work_per_col > 0 ? 65536 / work_per_col : N;
    if (grain < 1)
        grain = 1;
    mm_threadpool_run(tp, N, grain, matmul_cols, &m);
}

/* ---- elementwise and norms ------------------------------------------------------ */

void mm_cpu_rmsnorm(const float *x, int64_t n, int64_t H, const float *w, float eps, float *out)
{
    for (int64_t i = 0; i < n; i++) {
        const float *xi = x + i * H;
        float ss = 0;
        for (int64_t k = 0; k < H; k++)
            ss += xi[k] * xi[k];
        const float r = 1.0f / sqrtf(ss / (float)H + eps);
        for (int64_t k = 0; k < H; k++)
            out[i * H + k] = xi[k] * r * w[k];
    }
}

float mm_cpu_silu(float x) { return x / (1.0f + expf(-x)); }

float mm_cpu_gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

float mm_cpu_softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/* ---- Mamba-2 pieces ------------------------------------------------------------- */

void mm_cpu_conv2_silu(const float *x, int64_t ld_x, int64_t T, int64_t C, const float *w,
                       const float *b, float *state, float *out, int64_t ld_out)
{
    for (int64_t t = 0; t < T; t++) {
        const float *prev = t == 0 ? state : x + (t - 1) * ld_x;
        const float *cur = x + t * ld_x;
        for (int64_t c = 0; c < C; c++)
            out[t * ld_out + c] = mm_cpu_silu(w[2 * c] * prev[c] + w[2 * c + 1] * cur[c] + b[c]);
    }
    if (T > 0)
        memcpy(state, x + (T - 1) * ld_x, (size_t)C * sizeof *state);
}

void mm_cpu_ssm_scan(int64_t T, int64_t d, const float *x, const float *B, const float *C,
                     int64_t ld_in, const float *dt_raw, int64_t ld_dt, float dt_bias, float A,
                     float *S, float *y, int64_t ld_y)
{
    for (int64_t t = 0; t < T; t++) {
        const float dt = mm_cpu_softplus(dt_raw[t * ld_dt] + dt_bias);
        const float decay = expf(dt * A);
        const float *xt = x + t * ld_in, *Bt = B + t * ld_in, *Ct = C + t * ld_in;
        for (int64_t p = 0; p < d; p++) {
            float *Sp = S + p * d;
            const float dx = dt * xt[p];
            float acc = 0;
            for (int64_t k = 0; k < d; k++) {
                Sp[k] = decay * Sp[k] + dx * Bt[k];
                acc += Ct[k] * Sp[k];
            }
            y[t * ld_y + p] = acc;
        }
    }
}

void mm_cpu_gated_rmsnorm(const float *y, const float *g, const float *w, int64_t d, float *o)
{
    float ss = 0;
    for (int64_t k = 0; k < d; k++)
        ss += y[k] * y[k];
    const float r = 1.0f / sqrtf(ss / (float)d + 1e-5f);
    for (int64_t k = 0; k < d; k++)
        o[k] = y[k] * r * w[k] * mm_cpu_silu(g[k]);
}

/* ---- attention pieces ----------------------------------------------------------- */

void mm_cpu_rope(float *x, int64_t d, int64_t pos, float base)
{
    const int64_t half = d / 2;
    for (int64_t i = 0; i < half; i++) {
        const float inv_freq = 1.0f / powf(base, (float)(2 * i) / (float)d);
        const float theta = (float)pos * inv_freq;
        const float c = cosf(theta), s = sinf(theta);
        const float a = x[i], b = x[i + half];
        x[i] = a * c - b * s;
        x[i + half] = b * c + a * s;
    }
}

void mm_cpu_attend(const float *q, int64_t d, int64_t n_kv,
                   const float *(*get_k)(const void *arg, int64_t i),
                   const float *(*get_v)(const void *arg, int64_t i), const void *arg, float *out,
                   float *scores)
{
    const float scale = 1.0f / sqrtf((float)d);
    float mx = -INFINITY;
    for (int64_t i = 0; i < n_kv; i++) {
        scores[i] = dot(q, get_k(arg, i), d) * scale;
        if (scores[i] > mx)
            mx = scores[i];
    }
    float sum = 0;
    for (int64_t i = 0; i < n_kv; i++) {
        scores[i] = expf(scores[i] - mx);
        sum += scores[i];
    }
    memset(out, 0, (size_t)d * sizeof *out);
    for (int64_t i = 0; i < n_kv; i++) {
        const float p = scores[i] / sum;
        const float *v = get_v(arg, i);
        for (int64_t k = 0; k < d; k++)
            out[k] += p * v[k];
    }
}

/* ---- vision --------------------------------------------------------------------- */

static float cubic_near(float t, float A) { return ((A + 2) * t - (A + 3)) * t * t + 1; }
static float cubic_far(float t, float A) { return ((A * t - 5 * A) * t + 8 * A) * t - 4 * A; }

static void cubic_weights(float t, float w[4])
{
    const float A = -0.75f;
    w[0] = cubic_far(t + 1.0f, A);
    w[1] = cubic_near(t, A);
    w[2] = cubic_near(1.0f - t, A);
    w[3] = cubic_far(2.0f - t, A);
}

static int64_t clampi(int64_t v, int64_t hi) { return v < 0 ? 0 : v > hi ? hi : v; }

void mm_cpu_bicubic_grid(const float *in, int64_t g, int64_t H, int64_t P, float *out)
{
    const float scale = (float)g / (float)P;
    for (int64_t oy = 0; oy < P; oy++) {
        /* source coordinate, align_corners=False, not clamped for cubic */
        const float sy = scale * ((float)oy + 0.5f) - 0.5f;
        const int64_t iy = (int64_t)floorf(sy);
        float wy[4];
        cubic_weights(sy - (float)iy, wy);
        for (int64_t ox = 0; ox < P; ox++) {
            const float sx = scale * ((float)ox + 0.5f) - 0.5f;
            const int64_t ix = (int64_t)floorf(sx);
            float wx[4];
            cubic_weights(sx - (float)ix, wx);
            float *o = out + (oy * P + ox) * H;
            for (int64_t k = 0; k < H; k++) {
                float acc = 0;
                for (int a = 0; a < 4; a++) {
                    const int64_t yy = clampi(iy - 1 + a, g - 1);
                    float row = 0;
                    for (int b = 0; b < 4; b++) {
                        const int64_t xx = clampi(ix - 1 + b, g - 1);
                        row += wx[b] * in[(yy * g + xx) * H + k];
                    }
                    acc += wy[a] * row;
                }
                o[k] = acc;
            }
        }
    }
}
