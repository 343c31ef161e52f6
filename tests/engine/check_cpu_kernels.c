/* check_cpu_kernels.c: the fp32 reference math (src/engine/cpu_kernels.c)
 * against closed forms and naive loops written independently here. */
#include "engine/cpu_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static float frand(uint32_t *x)
{
    *x = *x * 1664525u + 1013904223u;
    return ((float)(*x >> 8) / 16777216.0f) * 2.0f - 1.0f;
}

START_TEST(test_matmul_threads_and_shapes)
{
    struct mm_threadpool *tp;
    struct mm_err err;
    ck_assert_int_eq(mm_threadpool_create(3, &tp, &err), MM_OK);
    const int64_t shapes[][3] = {{1, 1, 1}, {1, 7, 5}, {3, 33, 17}, {17, 64, 129}, {40, 130, 9}};
    uint32_t seed = 1;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t n = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        float *x = malloc((size_t)(n * K) * sizeof *x), *W = malloc((size_t)(N * K) * sizeof *W);
        float *b = malloc((size_t)N * sizeof *b), *y = malloc((size_t)(n * N) * sizeof *y);
        for (int64_t i = 0; i < n * K; i++)
            x[i] = frand(&seed);
        for (int64_t i = 0; i < N * K; i++)
            W[i] = frand(&seed);
        for (int64_t i = 0; i < N; i++)
            b[i] = frand(&seed);
        for (int acc = 0; acc < 2; acc++) {
            for (int64_t i = 0; i < n * N; i++)
                y[i] = 0.5f;
            mm_cpu_matmul(acc ? tp : NULL, x, n, K, W, N, acc ? NULL : b, y, acc);
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < N; j++) {
                    double r = acc ? 0.5 : b[j];
                    for (int64_t k = 0; k < K; k++)
                        r += (double)x[i * K + k] * W[j * K + k];
                    ck_assert_msg(fabs(r - y[i * N + j]) < 1e-4 * (1 + fabs(r)),
                                  "matmul %lldx%lldx%lld", (long long)n, (long long)K,
                                  (long long)N);
                }
        }
        free(x);
        free(W);
        free(b);
        free(y);
    }
    mm_threadpool_free(tp);
}
END_TEST

START_TEST(test_scalar_functions)
{
    ck_assert(fabsf(mm_cpu_silu(1.0f) - 0.7310586f) < 1e-6f);
    ck_assert(fabsf(mm_cpu_gelu(1.0f) - 0.8413447f) < 1e-6f); /* exact erf form */
    ck_assert(fabsf(mm_cpu_gelu(-3.0f) + 0.0040497f) < 1e-6f);
    ck_assert(mm_cpu_softplus(25.0f) == 25.0f); /* threshold 20 */
    ck_assert(fabsf(mm_cpu_softplus(0.0f) - 0.6931472f) < 1e-6f);
    ck_assert(fabsf(mm_cpu_softplus(-30.0f)) < 1e-12f);
}
END_TEST

START_TEST(test_norms)
{
    const float x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 2, 0.5f};
    float o[4];
    mm_cpu_rmsnorm(x, 1, 4, w, 0.0f, o);
    const float r = 1.0f / sqrtf(30.0f / 4.0f);
    ck_assert(fabsf(o[2] - 3 * r * 2) < 1e-6f && fabsf(o[3] - 4 * r * 0.5f) < 1e-6f);
    const float g[4] = {0, 1, -1, 2};
    mm_cpu_gated_rmsnorm(x, g, w, 4, o);
    const float r2 = 1.0f / sqrtf(30.0f / 4.0f + 1e-5f);
    for (int k = 0; k < 4; k++)
        ck_assert(fabsf(o[k] - x[k] * r2 * w[k] * g[k] / (1 + expf(-g[k]))) < 1e-6f);
    float y[4] = {1, 2, 3, 4};
    mm_cpu_gated_rmsnorm(y, g, w, 4, y); /* in place */
    ck_assert_mem_eq(y, o, sizeof o);
}
END_TEST

START_TEST(test_conv_state_carries)
{
    /* two channels, 3 tokens at once == 1 + 2 tokens with the state carried */
    const float x[6] = {1, -1, 2, 0.5f, -3, 4}, w[4] = {0.5f, 2, -1, 1}, b[2] = {0.1f, -0.2f};
    float s1[2] = {0}, s2[2] = {0}, out1[6], out2[6];
    mm_cpu_conv2_silu(x, 2, 3, 2, w, b, s1, out1, 2);
    mm_cpu_conv2_silu(x, 2, 1, 2, w, b, s2, out2, 2);
    mm_cpu_conv2_silu(x + 2, 2, 2, 2, w, b, s2, out2 + 2, 2);
    ck_assert_mem_eq(out1, out2, sizeof out1);
    ck_assert_mem_eq(s1, s2, sizeof s1);
    ck_assert(s1[0] == -3 && s1[1] == 4); /* last pre-conv column */
    /* t=0: previous input is the zero state */
    ck_assert(fabsf(out1[0] - mm_cpu_silu(2 * 1 + 0.1f)) < 1e-6f);
    ck_assert(fabsf(out1[2] - mm_cpu_silu(0.5f * 1 + 2 * 2 + 0.1f)) < 1e-6f);
}
END_TEST

START_TEST(test_ssm_scan_matches_naive)
{
    const int64_t T = 9, d = 3;
    uint32_t seed = 5;
    float x[27], B[27], C[27], dt[9], S[9] = {0}, y[27];
    for (int i = 0; i < 27; i++) {
        x[i] = frand(&seed);
        B[i] = frand(&seed);
        C[i] = frand(&seed);
    }
    for (int i = 0; i < 9; i++)
        dt[i] = frand(&seed) * 3;
    const float dt_bias = -0.5f, A = -1.3f;
    mm_cpu_ssm_scan(T, d, x, B, C, d, dt, 1, dt_bias, A, S, y, d);
    double Sn[3][3] = {{0}};
    for (int t = 0; t < T; t++) {
        const double v = dt[t] + dt_bias;
        const double delta = v > 20 ? v : log1p(exp(v));
        for (int p = 0; p < 3; p++) {
            double acc = 0;
            for (int n = 0; n < 3; n++) {
                Sn[p][n] = exp(delta * A) * Sn[p][n] + delta * x[t * 3 + p] * B[t * 3 + n];
                acc += C[t * 3 + n] * Sn[p][n];
            }
            ck_assert_msg(fabs(acc - y[t * 3 + p]) < 1e-5, "t %d p %d", t, p);
        }
    }
    for (int p = 0; p < 3; p++)
        for (int n = 0; n < 3; n++)
            ck_assert(fabs(Sn[p][n] - S[p * 3 + n]) < 1e-5);
}
END_TEST

START_TEST(test_rope)
{
    float x[4] = {1, 0, 0, 1};
    mm_cpu_rope(x, 4, 0, 10000.0f); /* position 0: identity */
    ck_assert(x[0] == 1 && x[1] == 0 && x[2] == 0 && x[3] == 1);
    float y[4] = {1, 2, 3, 4};
    mm_cpu_rope(y, 4, 3, 100.0f);
    /* pairs (0,2) at θ = 3, (1,3) at θ = 3 * 100^(-1/2) */
    const double t0 = 3.0, t1 = 3.0 / 10.0;
    ck_assert(fabs(y[0] - (1 * cos(t0) - 3 * sin(t0))) < 1e-5);
    ck_assert(fabs(y[2] - (3 * cos(t0) + 1 * sin(t0))) < 1e-5);
    ck_assert(fabs(y[1] - (2 * cos(t1) - 4 * sin(t1))) < 1e-5);
    ck_assert(fabs(y[3] - (4 * cos(t1) + 2 * sin(t1))) < 1e-5);
}
END_TEST

static const float *row_of(const void *arg, int64_t i) { return (const float *)arg + i * 2; }

START_TEST(test_attend)
{
    const float kv[6] = {1, 0, 0, 1, 1, 1}; /* keys == values here */
    const float q[2] = {2, 0};
    float out[2], scores[3];
    mm_cpu_attend(q, 2, 3, row_of, row_of, kv, out, scores);
    const double s[3] = {2 / sqrt(2.0), 0, 2 / sqrt(2.0)};
    const double z = exp(s[0]) + exp(s[1]) + exp(s[2]);
    const double p0 = exp(s[0]) / z, p1 = exp(s[1]) / z, p2 = exp(s[2]) / z;
    ck_assert(fabs(out[0] - (p0 + p2)) < 1e-6 && fabs(out[1] - (p1 + p2)) < 1e-6);
}
END_TEST

START_TEST(test_bicubic_grid)
{
    /* same size: identity; a constant grid stays constant at any size */
    float in[9 * 2], out[16 * 2];
    for (int i = 0; i < 18; i++)
        in[i] = (float)i;
    float same[18];
    mm_cpu_bicubic_grid(in, 3, 2, 3, same);
    for (int i = 0; i < 18; i++)
        ck_assert(fabsf(same[i] - in[i]) < 1e-5f);
    for (int i = 0; i < 18; i++)
        in[i] = 2.5f;
    mm_cpu_bicubic_grid(in, 3, 2, 4, out);
    for (int i = 0; i < 32; i++)
        ck_assert(fabsf(out[i] - 2.5f) < 1e-5f);
    /* 2 -> 4 upsampling of a ramp along x, torch semantics: source x = (o + 0.5)/2 - 0.5 */
    const float ramp[4] = {0, 1, 0, 1}; /* rows [0 1], [0 1], H = 1 */
    float up[16];
    mm_cpu_bicubic_grid(ramp, 2, 1, 4, up);
    /* output x = 1 maps to source 0.25: weights of A=-0.75 cubic with clamping */
    const float t = 0.25f, A = -0.75f;
    const float w0 = ((A * (t + 1) - 5 * A) * (t + 1) + 8 * A) * (t + 1) - 4 * A;
    const float w1 = ((A + 2) * t - (A + 3)) * t * t + 1;
    const float w2 = ((A + 2) * (1 - t) - (A + 3)) * (1 - t) * (1 - t) + 1;
    const float w3 = ((A * (2 - t) - 5 * A) * (2 - t) + 8 * A) * (2 - t) - 4 * A;
    const float expect =
        w0 * 0 + w1 * 0 + w2 * 1 + w3 * 1; /* indices -1,0,1,2 clamped to 0,0,1,1 */
    ck_assert_msg(fabsf(up[1] - expect) < 1e-5f, "got %g want %g", up[1], expect);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine/cpu_kernels");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_matmul_threads_and_shapes);
    tcase_add_test(tc, test_scalar_functions);
    tcase_add_test(tc, test_norms);
    tcase_add_test(tc, test_conv_state_carries);
    tcase_add_test(tc, test_ssm_scan_matches_naive);
    tcase_add_test(tc, test_rope);
    tcase_add_test(tc, test_attend);
    tcase_add_test(tc, test_bicubic_grid);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
