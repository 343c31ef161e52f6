/* check_report.c: clients/loadgen/report.c: metrics from hand-made request
 * outcomes (throughputs, TPOT, error classes, peaks) and the JSON keys. */
#include "loadgen/report.h"

#include <math.h>
#include <string.h>

#include "testutil.h"

/* Three successes and two failures with known timings (seconds). */
static void make_results(struct mm_lg_result r[5])
{
    memset(r, 0, 5 * sizeof(*r));
    for (int i = 0; i < 3; i++) {
        r[i].success = true;
        r[i].http_status = 200;
        r[i].input_len = 100;
        r[i].output_len = 5;
        r[i].t_arrival = 0.1 * i;
        r[i].t_send = 0.1 * i + 0.05; /* 50 ms client queue each */
        r[i].ttft = 0.2 + 0.1 * i;    /* 200, 300, 400 ms */
        for (int k = 0; k < 4; k++)
            ck_assert_int_eq(mm_dvec_push(&r[i].itl, 0.01 * (k + 1)), MM_OK); /* 10..40 ms */
        r[i].latency = r[i].ttft + 0.1; /* 4 gaps summing to 100 ms */
    }
    r[3] = (struct mm_lg_result){.http_status = 429, .error_class = "429", .ttft = -1};
    r[4] = (struct mm_lg_result){.error_class = "transport", .ttft = -1};
}

START_TEST(test_metrics)
{
    struct mm_lg_result r[5];
    make_results(r);
    const double ps[] = {50, 99};
    struct mm_lg_metrics m;
    struct mm_err err;
    ck_assert_int_eq(mm_lg_metrics_compute(r, 5, 2.0, ps, 2, &m, &err), MM_OK);
    ck_assert_int_eq(m.completed, 3);
    ck_assert_int_eq(m.failed, 2);
    ck_assert_int_eq(m.total_input, 300);
    ck_assert_int_eq(m.total_output, 15);
    ck_assert_double_eq_tol(m.request_throughput, 1.5, 1e-12);
    ck_assert_double_eq_tol(m.output_throughput, 7.5, 1e-12);
    ck_assert_double_eq_tol(m.total_token_throughput, 157.5, 1e-12);
    ck_assert_double_eq_tol(m.ttft.mean, 0.3, 1e-12);
    ck_assert_double_eq_tol(m.ttft.value[1], 0.398, 1e-12); /* p99 of .2,.3,.4 */
    ck_assert_double_eq_tol(m.tpot.mean, 0.1 / 4, 1e-12);   /* (E2EL - TTFT) / (5 - 1) */
    ck_assert_uint_eq(m.itl.n, 12);
    ck_assert_double_eq_tol(m.itl.mean, 0.025, 1e-12);
    ck_assert_double_eq_tol(m.itl.median, 0.025, 1e-12);
    ck_assert_double_eq_tol(m.e2el.mean, 0.4, 1e-12);
    ck_assert_double_eq_tol(m.queue.mean, 0.05, 1e-12);
    /* All three overlap (sent at .05, .15, .25; each lasts >= .3 s). */
    ck_assert_int_eq(m.max_concurrent_requests, 3);
    ck_assert_double_eq(m.max_output_tokens_per_s, 15); /* all 15 chunks within 1 s */
    ck_assert_int_eq(m.n_error_classes, 2);
    ck_assert_str_eq(m.error_class[0], "429");
    ck_assert_int_eq(m.error_count[0], 1);
    ck_assert_str_eq(m.error_class[1], "transport");
    for (int i = 0; i < 5; i++)
        mm_dvec_free(&r[i].itl);
}
END_TEST

START_TEST(test_json_keys)
{
    struct mm_lg_result r[5];
    make_results(r);
    const double ps[] = {90, 99, 99.9};
    struct mm_lg_metrics m;
    struct mm_err err;
    ck_assert_int_eq(mm_lg_metrics_compute(r, 5, 2.0, ps, 3, &m, &err), MM_OK);
    struct mm_lg_info info = {.date = "20260101-000000",
                              .backend = "openai",
                              .endpoint = "/v1/completions",
                              .model = "m",
                              .base_url = "http://x",
                              .num_prompts = 5,
                              .request_rate = INFINITY,
                              .burstiness = 1,
                              .show = {true, true, true, true}};
    cJSON *j = mm_lg_report_json(&m, &info, r, 5, true);
    ck_assert_ptr_nonnull(j);
    static const char *const keys[] = {"completed",
                                       "failed",
                                       "total_input_tokens",
                                       "total_output_tokens",
                                       "request_throughput",
                                       "output_throughput",
                                       "total_token_throughput",
                                       "duration",
                                       "mean_ttft_ms",
                                       "median_ttft_ms",
                                       "std_ttft_ms",
                                       "p90_ttft_ms",
                                       "p99_ttft_ms",
                                       "p99.9_ttft_ms",
                                       "mean_tpot_ms",
                                       "p99_tpot_ms",
                                       "mean_itl_ms",
                                       "p99_itl_ms",
                                       "mean_e2el_ms",
                                       "p90_e2el_ms",
                                       "max_concurrency",
                                       "num_prompts",
                                       "burstiness",
                                       "ttfts",
                                       "itls",
                                       "input_lens",
                                       "output_lens",
                                       "errors",
                                       "errors_by_status"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        ck_assert_msg(cJSON_GetObjectItemCaseSensitive(j, keys[i]) != NULL, "no key %s", keys[i]);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "request_rate")->valuestring, "inf");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "max_concurrency")));
    ck_assert_double_eq_tol(cJSON_GetObjectItem(j, "mean_ttft_ms")->valuedouble, 300, 1e-9);
    ck_assert_int_eq(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "errors_by_status"), "429")->valueint, 1);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "itls")), 5);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "itls"), 3)), 0);
    cJSON_Delete(j);
    /* Without detail, no per-request arrays; unselected metrics are left out. */
    info.show[1] = false;
    j = mm_lg_report_json(&m, &info, r, 5, false);
    ck_assert_ptr_null(cJSON_GetObjectItem(j, "ttfts"));
    ck_assert_ptr_null(cJSON_GetObjectItem(j, "mean_tpot_ms"));
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(j, "mean_itl_ms"));
    cJSON_Delete(j);
    for (int i = 0; i < 5; i++)
        mm_dvec_free(&r[i].itl);
}
END_TEST

START_TEST(test_goodput)
{
    struct mm_lg_result r[5];
    make_results(r); /* TTFT .2/.3/.4 s, TPOT .025 s, E2EL .3/.4/.5 s */
    struct mm_lg_metrics m;
    struct mm_err err;
    const double p = 50;
    ck_assert_int_eq(mm_lg_metrics_compute(r, 5, 2.0, &p, 1, &m, &err), MM_OK);
    struct mm_lg_slo slo = {.ttft = 0.35};
    mm_lg_metrics_goodput(r, 5, 2.0, &slo, &m);
    ck_assert(m.has_goodput);
    ck_assert_double_eq_tol(m.request_goodput, 1.0, 1e-12); /* 2 good / 2 s */
    slo = (struct mm_lg_slo){.ttft = 1, .tpot = 0.02};
    mm_lg_metrics_goodput(r, 5, 2.0, &slo, &m);
    ck_assert_double_eq(m.request_goodput, 0);
    slo = (struct mm_lg_slo){.e2el = 0.45, .tpot = 0.03};
    mm_lg_metrics_goodput(r, 5, 2.0, &slo, &m);
    ck_assert_double_eq_tol(m.request_goodput, 1.0, 1e-12);
    for (int i = 0; i < 5; i++)
        mm_dvec_free(&r[i].itl);
}
END_TEST

START_TEST(test_long_prompt_window)
{
    /* One stream: chunks at 0.1, 0.2, ..., 1.1 s. The long prompt is sent at
     * 0.35 s with TTFT 0.3 s: its prefill window [0.35, 0.65] overlaps the gaps
     * ending at 0.4, 0.5, 0.6 and 0.7 s. */
    struct mm_lg_result r = {.success = true, .output_len = 11, .ttft = 0.1, .latency = 1.1};
    for (int k = 0; k < 10; k++)
        ck_assert_int_eq(mm_dvec_push(&r.itl, 0.1), MM_OK);
    const struct mm_lg_result lr = {.success = true,
                                    .input_len = 100000,
                                    .output_len = 4,
                                    .t_send = 0.35,
                                    .ttft = 0.3,
                                    .latency = 0.5};
    const double ps[] = {99};
    struct mm_lg_metrics m;
    struct mm_err err;
    ck_assert_int_eq(mm_lg_metrics_compute(&r, 1, 2.0, ps, 1, &m, &err), MM_OK);
    ck_assert_int_eq(mm_lg_metrics_long(&r, 1, &lr, ps, 1, &m, &err), MM_OK);
    ck_assert(m.has_long && m.long_success);
    ck_assert_uint_eq(m.itl_during_long.n, 4);
    ck_assert_uint_eq(m.itl_outside_long.n, 6);
    ck_assert_double_eq_tol(m.long_ttft, 0.3, 1e-12);
    struct mm_lg_info info = {.date = "d",
                              .backend = "openai",
                              .endpoint = "/v1/completions",
                              .model = "m",
                              .base_url = "u",
                              .request_rate = INFINITY,
                              .burstiness = 1};
    cJSON *j = mm_lg_report_json(&m, &info, &r, 1, false);
    ck_assert_int_eq(cJSON_GetObjectItem(j, "num_itl_during_long_prefill")->valueint, 4);
    ck_assert_double_eq_tol(cJSON_GetObjectItem(j, "long_prompt_ttft_ms")->valuedouble, 300, 1e-9);
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(j, "p99_itl_during_long_prefill_ms"));
    cJSON_Delete(j);
    /* A long prompt that never produced a token: its whole life is the window. */
    const struct mm_lg_result failed = {.t_send = 0.0, .ttft = -1, .latency = 0.25};
    ck_assert_int_eq(mm_lg_metrics_long(&r, 1, &failed, ps, 1, &m, &err), MM_OK);
    ck_assert(!m.long_success);
    ck_assert_uint_eq(m.itl_during_long.n, 2); /* gaps ending at 0.2 and 0.3 */
    mm_dvec_free(&r.itl);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("clients/loadgen/report");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_metrics);
    tcase_add_test(tc, test_json_keys);
    tcase_add_test(tc, test_long_prompt_window);
    tcase_add_test(tc, test_goodput);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
