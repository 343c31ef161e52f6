/* check_metrics.c: histogram bucketing, counters, gauges and snapshots
 * (src/serve/metrics.c), including concurrent recording and reading. */
#include "serve/metrics.h"

#include <pthread.h>

#include "testutil.h"

START_TEST(test_buckets_cumulative)
{
    struct mm_metrics *m;
    struct mm_err err;
    ck_assert_int_eq(mm_metrics_create(4096, &m, &err), MM_OK);
    const double ttft[] = {0.0005, 0.001, 0.0011, 0.3, 1e6};
    for (int i = 0; i < 5; i++)
        mm_metrics_observe(m, MM_HIST_TTFT, ttft[i]);
    struct mm_metrics_snapshot s;
    mm_metrics_snapshot(m, &s);
    const struct mm_histogram *h = &s.hist[MM_HIST_TTFT];
    ck_assert_int_eq(h->n_bounds, 22);
    ck_assert(h->bounds[0] == 0.001 && h->bounds[21] == 2560.0);
    ck_assert_uint_eq(h->buckets[0], 2); /* le 0.001: 0.0005 and 0.001 (inclusive) */
    ck_assert_uint_eq(h->buckets[1], 3); /* le 0.005 */
    ck_assert_uint_eq(h->buckets[8], 3); /* le 0.25 */
    ck_assert_uint_eq(h->buckets[9], 4); /* le 0.5 */
    ck_assert_uint_eq(h->buckets[21], 4);
    ck_assert_uint_eq(h->buckets[22], 5); /* +Inf */
    ck_assert_uint_eq(h->count, 5);
    ck_assert_double_eq_tol(h->sum, 0.0005 + 0.001 + 0.0011 + 0.3 + 1e6, 1e-9);
    for (int b = 1; b <= h->n_bounds; b++)
        ck_assert_uint_ge(h->buckets[b], h->buckets[b - 1]);
    /* token histograms: 1, 2, 5, ..., 5000 (the first bound covering 4096) */
    const struct mm_histogram *p = &s.hist[MM_HIST_PROMPT_TOKENS];
    ck_assert_int_eq(p->n_bounds, 12);
    ck_assert(p->bounds[0] == 1 && p->bounds[2] == 5 && p->bounds[11] == 5000);
    ck_assert_int_eq(s.hist[MM_HIST_ITL].n_bounds, 19);
    ck_assert_int_eq(s.hist[MM_HIST_E2E].n_bounds, 21);
    mm_metrics_free(m);
}
END_TEST

START_TEST(test_counters_gauges_and_add)
{
    struct mm_metrics *m;
    struct mm_err err;
    ck_assert_int_eq(mm_metrics_create(100, &m, &err), MM_OK);
    mm_metrics_count(m, 10, 3, 1, 7, 0);
    mm_metrics_count(m, 5, 2, 0, 1, 1);
    mm_metrics_finished(m, MM_FINISH_STOP);
    mm_metrics_finished(m, MM_FINISH_LENGTH);
    mm_metrics_finished(m, MM_FINISH_STOP);
    const int64_t used[2] = {3, 4}, total[2] = {10, 20};
    mm_metrics_gauges(m, 2, 5, 2, 8, used, total);
    mm_metrics_observe(m, MM_HIST_GEN_TOKENS, 17);
    struct mm_metrics_snapshot s, sum;
    mm_metrics_snapshot(m, &s);
    ck_assert_uint_eq(s.prompt_tokens, 15);
    ck_assert_uint_eq(s.generation_tokens, 5);
    ck_assert_uint_eq(s.preemptions, 1);
    ck_assert_uint_eq(s.steps, 8);
    ck_assert_uint_eq(s.step_errors, 1);
    ck_assert_uint_eq(s.requests_finished[MM_FINISH_STOP], 2);
    ck_assert_uint_eq(s.requests_finished[MM_FINISH_LENGTH], 1);
    ck_assert_int_eq(s.running, 2);
    ck_assert_int_eq(s.waiting, 5);
    ck_assert_int_eq(s.kv_blocks_used[1], 4);
    ck_assert_int_eq(s.kv_blocks_total[0], 10);
    sum = s;
    mm_metrics_snapshot_add(&sum, &s);
    ck_assert_uint_eq(sum.prompt_tokens, 30);
    ck_assert_int_eq(sum.slots_total, 16);
    ck_assert_uint_eq(sum.hist[MM_HIST_GEN_TOKENS].count, 2);
    ck_assert_uint_eq(sum.hist[MM_HIST_GEN_TOKENS].buckets[3], 0); /* le 10 */
    ck_assert_uint_eq(sum.hist[MM_HIST_GEN_TOKENS].buckets[4], 2); /* le 20 */
    mm_metrics_free(m);
}
END_TEST

static void *recorder(void *arg)
{
    for (int i = 0; i < 20000; i++) {
        mm_metrics_observe(arg, MM_HIST_ITL, 0.02);
        mm_metrics_count(arg, 1, 1, 0, 1, 0);
    }
    return NULL;
}

/* Snapshots taken while another thread records are each consistent. */
START_TEST(test_concurrent_snapshots)
{
    struct mm_metrics *m;
    struct mm_err err;
    ck_assert_int_eq(mm_metrics_create(100, &m, &err), MM_OK);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, recorder, m), 0);
    uint64_t last = 0;
    for (int i = 0; i < 2000; i++) {
        struct mm_metrics_snapshot s;
        mm_metrics_snapshot(m, &s);
        const struct mm_histogram *h = &s.hist[MM_HIST_ITL];
        ck_assert_uint_eq(h->buckets[h->n_bounds], h->count);
        ck_assert_uint_eq(h->buckets[1], h->count); /* all 0.02 <= 0.025 */
        ck_assert_uint_ge(h->count, last);
        last = h->count;
    }
    pthread_join(t, NULL);
    struct mm_metrics_snapshot s;
    mm_metrics_snapshot(m, &s);
    ck_assert_uint_eq(s.hist[MM_HIST_ITL].count, 20000);
    ck_assert_uint_eq(s.steps, 20000);
    mm_metrics_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("serve/metrics");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_buckets_cumulative);
    tcase_add_test(tc, test_counters_gauges_and_add);
    tcase_add_test(tc, test_concurrent_snapshots);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
