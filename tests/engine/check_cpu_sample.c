/* check_cpu_sample.c: the reference sampler (src/engine/cpu_sample.c) and
 * Philox (src/engine/philox.c) against hand-computed cases, Random123's
 * known answers, and log_softmax written out in double here. */
#include "engine/cpu_sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/philox.h"
#include "testutil.h"

static struct mm_sample_params greedy_params(void)
{
    return (struct mm_sample_params){.temperature = 0,
                                     .top_k = 0,
                                     .top_p = 1,
                                     .min_p = 0,
                                     .repetition_penalty = 1,
                                     .presence_penalty = 0,
                                     .frequency_penalty = 0,
                                     .seed = 0,
                                     .n_logprobs = 0};
}

static struct mm_cpu_sampler make_sampler(int64_t V)
{
    struct mm_cpu_sampler s;
    struct mm_err err;
    ck_assert_int_eq(mm_cpu_sampler_init(&s, V, &err), MM_OK);
    return s;
}

START_TEST(test_philox_known_answers)
{
    /* Random123 tests/kat_vectors, the three "philox4x32 10" lines */
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        mm_philox4x32_10(kat[i], kat[i] + 4, out);
        for (int k = 0; k < 4; k++)
            ck_assert_uint_eq(out[k], kat[i][6 + k]);
    }
    /* the uniform: key = seed words (low, high), counter = {counter, stream, 0, 0} */
    const uint64_t seed = 0x299f31d0a4093822ull;
    const uint32_t ctr[4] = {7, 3, 0, 0}, key[2] = {0xa4093822, 0x299f31d0};
    uint32_t out[4];
    mm_philox4x32_10(ctr, key, out);
    const float u = mm_philox_uniform(seed, 7, 3);
    ck_assert(u == (float)(out[0] >> 8) / 16777216.0f);
    ck_assert(u >= 0 && u < 1);
}
END_TEST

START_TEST(test_penalties_hand_case)
{
    /* l = [2, -1, 0.5, 1, 3]; id 0 seen in the prompt, id 1 twice in the
     * output, id 3 once in the output and in the prompt, id 4 unseen.
     * r = 2, frequency 0.5, presence 0.25:
     *   id 0:  2 / 2                    =  1
     *   id 1: -1 * 2   - (0.5*2 + 0.25) = -3.25
     *   id 2:  0.5 (unseen)             =  0.5
     *   id 3:  1 / 2   - (0.5*1 + 0.25) = -0.25
     *   id 4:  3 (unseen)               =  3 */
    uint32_t counts[5] = {0};
    const int32_t prompt[] = {0, 3, 0}, output[] = {1, 3, 1};
    mm_cpu_count_tokens(counts, 5, prompt, 3, false);
    mm_cpu_count_tokens(counts, 5, output, 3, true);
    const int32_t bad[] = {-1, 5, 99};
    mm_cpu_count_tokens(counts, 5, bad, 3, true); /* ignored */
    ck_assert_uint_eq(counts[0], MM_COUNT_PROMPT);
    ck_assert_uint_eq(counts[1], 2);
    ck_assert_uint_eq(counts[2], 0);
    ck_assert_uint_eq(counts[3], MM_COUNT_PROMPT | 1);
    ck_assert_uint_eq(counts[4], 0);
    float l[5] = {2, -1, 0.5f, 1, 3};
    struct mm_sample_params p = greedy_params();
    p.repetition_penalty = 2;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    mm_cpu_apply_penalties(l, counts, 5, &p);
    const float want[5] = {1, -3.25f, 0.5f, -0.25f, 3};
    for (int i = 0; i < 5; i++)
        ck_assert_float_eq(l[i], want[i]);

    /* through the sampler: greedy follows the penalised logits and the
     * chosen id is counted; logprobs stay those of the raw logits */
    struct mm_cpu_sampler s = make_sampler(5);
    const float raw[5] = {2, 1.5f, 0.5f, 1, -3};
    uint32_t c2[5] = {0};
    mm_cpu_count_tokens(c2, 5, prompt, 1, false); /* id 0: 2 → 1 < 1.5 */
    p = greedy_params();
    p.repetition_penalty = 2;
    struct mm_sample_out out;
    mm_cpu_sample_row(&s, raw, c2, &p, 0, 0, &out);
    ck_assert_int_eq(out.id, 1);
    ck_assert_uint_eq(c2[1], 1);
    /* no repetition; frequency 0.2 on l = [1, 1.5, 0.5, 1.2, -3]: id 1 at
     * 1.5, then 1.5 − 0.2 = 1.3, then 1.1 < 1.2: id 3; with presence 0.5
     * too, id 1 is 1.5 − 0.4 − 0.5 = 0.6 and id 3 1.2 − 0.2 − 0.5 = 0.5: id 0 */
    const float raw2[5] = {1, 1.5f, 0.5f, 1.2f, -3};
    memset(c2, 0, sizeof c2);
    p.repetition_penalty = 1;
    p.frequency_penalty = 0.2f;
    const int32_t want_ids[3] = {1, 1, 3};
    for (int k = 0; k < 3; k++) {
        mm_cpu_sample_row(&s, raw2, c2, &p, 0, (uint32_t)k, &out);
        ck_assert_int_eq(out.id, want_ids[k]);
    }
    ck_assert_uint_eq(c2[1], 2);
    ck_assert_uint_eq(c2[3], 1);
    p.presence_penalty = 0.5f;
    mm_cpu_sample_row(&s, raw2, c2, &p, 0, 3, &out);
    ck_assert_int_eq(out.id, 0);
    double z = 0;
    for (int i = 0; i < 5; i++)
        z += exp((double)raw2[i]);
    ck_assert_double_eq_tol(out.logprob, (double)raw2[0] - log(z), 1e-6);
    mm_cpu_sampler_free(&s);
}
END_TEST

START_TEST(test_greedy_ties_and_top_k_one)
{
    struct mm_cpu_sampler s = make_sampler(6);
    const float l[6] = {0.5f, 2, -1, 2, 2, 1};
    uint32_t counts[6] = {0};
    struct mm_sample_params p = greedy_params();
    struct mm_sample_out out;
    mm_cpu_sample_row(&s, l, counts, &p, 0, 0, &out);
    ck_assert_int_eq(out.id, 1); /* lowest of the tied maxima 1, 3, 4 */
    /* top_k = 1 is greedy whatever the temperature and seed */
    p.temperature = 5;
    p.top_k = 1;
    for (uint32_t k = 0; k < 50; k++) {
        p.seed = 1000 + k;
        mm_cpu_sample_row(&s, l, counts, &p, k % 3, k, &out);
        ck_assert_int_eq(out.id, 1);
    }
    ck_assert_uint_eq(counts[1], 51);
    mm_cpu_sampler_free(&s);
}
END_TEST

/* log_softmax in double, written out here */
static double log_softmax(const float *l, int64_t V, int64_t i)
{
    double mx = l[0], z = 0;
    for (int64_t k = 1; k < V; k++)
        mx = l[k] > mx ? l[k] : mx;
    for (int64_t k = 0; k < V; k++)
        z += exp((double)l[k] - mx);
    return (double)l[i] - mx - log(z);
}

START_TEST(test_logprobs_are_raw_log_softmax)
{
    enum { V = 300 };
    float l[V];
    uint32_t x = 5, counts[V] = {0};
    for (int i = 0; i < V; i++) {
        x = x * 1664525u + 1013904223u;
        l[i] = (float)((x >> 8) % 1000) / 100.0f - 5.0f; /* coarse: many ties */
    }
    l[17] = l[250] = 9.5f; /* a tie at the top */
    struct mm_cpu_sampler s = make_sampler(V);
    struct mm_sample_params p = greedy_params();
    p.temperature = 0.7f;
    p.repetition_penalty = 1.3f; /* penalties must not change the logprobs */
    p.frequency_penalty = 0.4f;
    p.n_logprobs = MM_MAX_LOGPROBS;
    p.seed = 42;
    const int32_t seen[] = {17, 3, 4, 5};
    mm_cpu_count_tokens(counts, V, seen, 4, false);
    struct mm_sample_out out;
    mm_cpu_sample_row(&s, l, counts, &p, 0, 0, &out);
    ck_assert_int_eq(out.n_top, MM_MAX_LOGPROBS);
    ck_assert_double_eq_tol(out.logprob, log_softmax(l, V, out.id), 1e-5);
    ck_assert_int_eq(out.top_ids[0], 17);
    ck_assert_int_eq(out.top_ids[1], 250);
    for (int j = 0; j < out.n_top; j++) {
        ck_assert_double_eq_tol(out.top_logprobs[j], log_softmax(l, V, out.top_ids[j]), 1e-5);
        if (j > 0) { /* descending; ties lower id first */
            const float a = l[out.top_ids[j - 1]], b = l[out.top_ids[j]];
            ck_assert(a > b || (a == b && out.top_ids[j - 1] < out.top_ids[j]));
        }
    }
    /* nothing outside the top 20 beats the 20th */
    const float last = l[out.top_ids[MM_MAX_LOGPROBS - 1]];
    for (int i = 0; i < V; i++) {
        bool in = false;
        for (int j = 0; j < out.n_top; j++)
            in = in || out.top_ids[j] == i;
        ck_assert(in || l[i] < last || (l[i] == last && i > out.top_ids[MM_MAX_LOGPROBS - 1]));
    }
    /* fewer asked, fewer given; out-of-range asks are clamped */
    p.n_logprobs = 3;
    mm_cpu_sample_row(&s, l, counts, &p, 0, 1, &out);
    ck_assert_int_eq(out.n_top, 3);
    p.n_logprobs = 0;
    mm_cpu_sample_row(&s, l, counts, &p, 0, 2, &out);
    ck_assert_int_eq(out.n_top, 0);
    mm_cpu_sampler_free(&s);
}
END_TEST

/* The choice the rules dictate for a kept set (ascending ids) of the
 * probabilities q, at draw u. */
static int32_t expected_choice(const double *q, const int32_t *kept, int n_kept, double u)
{
    double total = 0, run = 0;
    for (int i = 0; i < n_kept; i++)
        total += q[kept[i]];
    for (int i = 0; i < n_kept; i++) {
        run += q[kept[i]];
        if (run > u * total)
            return kept[i];
    }
    return kept[n_kept - 1];
}

START_TEST(test_filters_hand_case)
{
    /* q = [0.05, 0.5, 0.1, 0.2, 0.15] as logits log q (T = 1); ranked
     * 1 (0.5), 3 (0.2), 4 (0.15), 2 (0.1), 0 (0.05). */
    const double q[5] = {0.05, 0.5, 0.1, 0.2, 0.15};
    float l[5];
    for (int i = 0; i < 5; i++)
        l[i] = (float)log(q[i]);
    struct {
        int32_t top_k;
        float top_p, min_p;
        int n;
        int32_t kept[5];
    } cases[] = {
        {0, 1, 0, 5, {0, 1, 2, 3, 4}},
        {3, 1, 0, 3, {1, 3, 4}},
        {0, 0.6f, 0, 2, {1, 3}},     /* 0.5 < 0.6 ≤ 0.7 */
        {0, 0.8f, 0, 3, {1, 3, 4}},  /* 0.7 < 0.8 ≤ 0.85 */
        {0, 0.3f, 0, 1, {1}},        /* the top alone reaches it */
        {0, 1, 0.35f, 2, {1, 3}},    /* p ≥ 0.175 */
        {0, 1, 0.25f, 3, {1, 3, 4}}, /* p ≥ 0.125 */
        {0, 1, 1.5f, 1, {1}},        /* above 1: the maximum stays */
        /* top_p on the distribution renormalised after top_k:
         * k = 3 leaves 0.85; 0.55·0.85 = 0.4675 ≤ 0.5 → the top alone
         * (without the renormalisation it would keep two) */
        {3, 0.55f, 0, 1, {1}},
        {4, 0.9f, 0.25f, 3, {1, 3, 4}}, /* k 4: 1,3,4,2; p 0.9·0.95 → 1,3,4,2; min_p drops 2 */
    };
    struct mm_cpu_sampler s = make_sampler(5);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct mm_sample_params p = greedy_params();
        p.temperature = 1;
        p.top_k = cases[c].top_k;
        p.top_p = cases[c].top_p;
        p.min_p = cases[c].min_p;
        p.seed = 0x1234567890abcdefull + c;
        int hits[5] = {0};
        for (uint32_t k = 0; k < 400; k++) {
            uint32_t counts[5] = {0};
            struct mm_sample_out out;
            mm_cpu_sample_row(&s, l, counts, &p, 1, k, &out);
            const double u = mm_philox_uniform(p.seed, k, 1);
            ck_assert_msg(out.id == expected_choice(q, cases[c].kept, cases[c].n, u),
                          "case %zu draw %u: got %d", c, k, out.id);
            hits[out.id]++;
        }
        for (int i = 0; i < cases[c].n; i++) /* every kept id shows up */
            ck_assert_int_gt(hits[cases[c].kept[i]], 0);
    }
    mm_cpu_sampler_free(&s);
}
END_TEST

START_TEST(test_seeded_reproducible_and_distributed)
{
    enum { V = 50, DRAWS = 20000 };
    float l[V];
    double q[V], z = 0;
    for (int i = 0; i < V; i++) {
        l[i] = (float)(0.15 * i - 0.002 * i * i);
        z += exp(l[i] / 0.8);
    }
    for (int i = 0; i < V; i++)
        q[i] = exp(l[i] / 0.8) / z;
    struct mm_cpu_sampler s = make_sampler(V);
    struct mm_sample_params p = greedy_params();
    p.temperature = 0.8f;
    p.seed = 77;
    int32_t a[64], b[64];
    uint32_t counts[V] = {0};
    struct mm_sample_out out;
    for (int run = 0; run < 2; run++)
        for (uint32_t k = 0; k < 64; k++) {
            mm_cpu_sample_row(&s, l, counts, &p, 2, k, &out);
            (run ? b : a)[k] = out.id;
        }
    ck_assert_mem_eq(a, b, sizeof a); /* same (seed, stream, counter), same ids */
    int differ_stream = 0, differ_seed = 0;
    for (uint32_t k = 0; k < 64; k++) {
        mm_cpu_sample_row(&s, l, counts, &p, 3, k, &out);
        differ_stream += out.id != a[k];
        p.seed = 78;
        mm_cpu_sample_row(&s, l, counts, &p, 2, k, &out);
        differ_seed += out.id != a[k];
        p.seed = 77;
    }
    ck_assert_int_gt(differ_stream, 32);
    ck_assert_int_gt(differ_seed, 32);
    /* frequencies follow softmax(l/T): chi-square over 50 cells */
    int hits[V] = {0};
    for (uint32_t k = 0; k < DRAWS; k++) {
        memset(counts, 0, sizeof counts);
        mm_cpu_sample_row(&s, l, counts, &p, 0, k, &out);
        hits[out.id]++;
    }
    double chi2 = 0;
    for (int i = 0; i < V; i++) {
        const double e = q[i] * DRAWS;
        chi2 += (hits[i] - e) * (hits[i] - e) / e;
    }
    ck_assert_msg(chi2 < 100, "chi2 = %.1f over %d cells", chi2, V); /* 49 dof: p < 1e-4 */
    mm_cpu_sampler_free(&s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine/cpu_sample");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_philox_known_answers);
    tcase_add_test(tc, test_penalties_hand_case);
    tcase_add_test(tc, test_greedy_ties_and_top_k_one);
    tcase_add_test(tc, test_logprobs_are_raw_log_softmax);
    tcase_add_test(tc, test_filters_hand_case);
    tcase_add_test(tc, test_seeded_reproducible_and_distributed);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
