/* check_workload.c: clients/loadgen/workload.c: the random source's
 * distributions, the arrival schedule, lengths, and request bodies (parsed
 * back as JSON). */
#include "loadgen/workload.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* Sample mean and variance of n draws of Gamma(shape, scale). */
static void gamma_moments(double shape, double scale, int n, double *mean, double *var)
{
    struct mm_rng r;
    mm_rng_seed(&r, 42);
    double s = 0, ss = 0;
    for (int i = 0; i < n; i++) {
        const double x = mm_rng_gamma(&r, shape, scale);
        ck_assert(x >= 0);
        s += x;
        ss += x * x;
    }
    *mean = s / n;
    *var = ss / n - *mean * *mean;
}

START_TEST(test_gamma_moments)
{
    /* Gamma(k, theta): mean k*theta, variance k*theta^2 */
    const double shapes[] = {0.3, 1.0, 4.0};
    for (int i = 0; i < 3; i++) {
        const double k = shapes[i], theta = 0.25;
        double mean, var;
        gamma_moments(k, theta, 400000, &mean, &var);
        ck_assert_double_eq_tol(mean, k * theta, 0.02 * k * theta);
        ck_assert_double_eq_tol(var, k * theta * theta, 0.06 * k * theta * theta);
    }
}
END_TEST

START_TEST(test_uniform_and_int)
{
    struct mm_rng r;
    mm_rng_seed(&r, 1);
    int hits[5] = {0};
    for (int i = 0; i < 50000; i++) {
        const double u = mm_rng_uniform(&r);
        ck_assert(u >= 0 && u < 1);
        const int64_t k = mm_rng_int(&r, 10, 14);
        ck_assert(k >= 10 && k <= 14);
        hits[k - 10]++;
    }
    for (int i = 0; i < 5; i++)
        ck_assert_int_gt(hits[i], 9500); /* 10000 expected each */
    struct mm_rng a, b;
    mm_rng_seed(&a, 9);
    mm_rng_seed(&b, 9);
    ck_assert(mm_rng_u64(&a) == mm_rng_u64(&b));
}
END_TEST

START_TEST(test_schedule)
{
    struct mm_rng r;
    struct mm_err err;
    double t[1000];
    mm_rng_seed(&r, 3);
    ck_assert_int_eq(mm_workload_schedule(&r, 10.0, 1.0, 1000, t, &err), MM_OK);
    for (int i = 1; i < 1000; i++)
        ck_assert(t[i] >= t[i - 1]);
    ck_assert_double_eq_tol(t[999], 100.0, 1e-9); /* scaled so the mean rate is exact */
    /* Poisson gaps: coefficient of variation near 1. */
    double s = 0, ss = 0;
    for (int i = 1; i < 1000; i++) {
        const double g = t[i] - t[i - 1];
        s += g;
        ss += g * g;
    }
    const double m = s / 999, cv = sqrt(ss / 999 - m * m) / m;
    ck_assert(cv > 0.85 && cv < 1.15);
    /* Burstiness 4: gamma shape 4, CV 1/2. */
    ck_assert_int_eq(mm_workload_schedule(&r, 10.0, 4.0, 1000, t, &err), MM_OK);
    s = ss = 0;
    for (int i = 1; i < 1000; i++) {
        const double g = t[i] - t[i - 1];
        s += g;
        ss += g * g;
    }
    const double m4 = s / 999, cv4 = sqrt(ss / 999 - m4 * m4) / m4;
    ck_assert(cv4 > 0.42 && cv4 < 0.58);
    /* Infinite burstiness: a fixed gap. Infinite rate: all at once. */
    ck_assert_int_eq(mm_workload_schedule(&r, 4.0, INFINITY, 8, t, &err), MM_OK);
    for (int i = 0; i < 8; i++)
        ck_assert_double_eq_tol(t[i], (i + 1) / 4.0, 1e-12);
    ck_assert_int_eq(mm_workload_schedule(&r, INFINITY, 1.0, 8, t, &err), MM_OK);
    for (int i = 0; i < 8; i++)
        ck_assert_double_eq(t[i], 0);
    ck_assert_int_eq(mm_workload_schedule(&r, 4.0, 0.0, 8, t, &err), MM_ERR_INVALID);
}
END_TEST

START_TEST(test_lengths)
{
    struct mm_rng r;
    mm_rng_seed(&r, 5);
    bool seen_lo = false, seen_hi = false;
    for (int i = 0; i < 5000; i++) {
        const int64_t n = mm_workload_length(&r, 100, 0.25, 1);
        ck_assert(n >= 75 && n <= 125);
        seen_lo |= n == 75;
        seen_hi |= n == 125;
        ck_assert_int_eq(mm_workload_length(&r, 100, 0.0, 1), 100);
        ck_assert_int_ge(mm_workload_length(&r, 1, 0.9, 1), 1);
    }
    ck_assert(seen_lo && seen_hi);
}
END_TEST

static struct mm_workload base_workload(void)
{
    return (struct mm_workload){
        .api = MM_API_COMPLETIONS,
        .prompt_kind = MM_PROMPT_TOKEN_IDS,
        .model = "m\"odel",
        .vocab_lo = 3,
        .vocab_hi = 50,
        .ignore_eos = true,
        .temperature = 0,
        .top_p = -1,
        .top_k = -1,
        .seed = 11,
    };
}

static cJSON *body(const struct mm_workload *w, int64_t i, int64_t in, int64_t out, bool img)
{
    struct mm_buf b = {0};
    struct mm_err err;
    ck_assert_int_eq(mm_workload_body(w, i, in, out, img, &b, &err), MM_OK);
    cJSON *j = cJSON_Parse(b.p);
    ck_assert_msg(j != NULL, "not JSON: %.200s", b.p);
    mm_buf_free(&b);
    return j;
}

START_TEST(test_completions_body)
{
    struct mm_workload w = base_workload();
    w.prefix_len = 5;
    cJSON *a = body(&w, 0, 300, 7, false), *a2 = body(&w, 0, 300, 7, false);
    cJSON *b = body(&w, 1, 300, 7, false);
    ck_assert_str_eq(cJSON_GetObjectItem(a, "model")->valuestring, "m\"odel");
    const cJSON *p = cJSON_GetObjectItem(a, "prompt");
    ck_assert_int_eq(cJSON_GetArraySize(p), 300);
    for (const cJSON *it = p->child; it; it = it->next)
        ck_assert(it->valueint >= 3 && it->valueint < 50);
    ck_assert_int_eq(cJSON_GetObjectItem(a, "max_tokens")->valueint, 7);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(a, "stream")));
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(a, "ignore_eos")));
    ck_assert(cJSON_IsTrue(
        cJSON_GetObjectItem(cJSON_GetObjectItem(a, "stream_options"), "include_usage")));
    ck_assert_double_eq(cJSON_GetObjectItem(a, "temperature")->valuedouble, 0);
    ck_assert_ptr_null(cJSON_GetObjectItem(a, "top_p"));
    ck_assert(cJSON_Compare(a, a2, true)); /* deterministic */
    const cJSON *q = cJSON_GetObjectItem(b, "prompt");
    int same_prefix = 1, differ = 0;
    for (int k = 0; k < 300; k++) {
        const int x = cJSON_GetArrayItem(p, k)->valueint, y = cJSON_GetArrayItem(q, k)->valueint;
        if (k < 5)
            same_prefix &= x == y;
        else
            differ += x != y;
    }
    ck_assert(same_prefix);
    ck_assert_int_gt(differ, 200);
    cJSON_Delete(a);
    cJSON_Delete(a2);
    cJSON_Delete(b);
}
END_TEST

START_TEST(test_chat_body_with_image)
{
    struct mm_workload w = base_workload();
    w.api = MM_API_CHAT;
    w.prompt_kind = MM_PROMPT_TEXT;
    w.image_data_url = "data:image/png;base64,AAAA";
    w.extra_body = "\"user\":\"x\",\"seed\":4";
    w.top_k = 5;
    cJSON *j = body(&w, 3, 40, 9, true);
    const cJSON *content =
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "messages"), 0), "content");
    ck_assert_int_eq(cJSON_GetArraySize(content), 2);
    const cJSON *img = cJSON_GetArrayItem(content, 0), *txt = cJSON_GetArrayItem(content, 1);
    ck_assert_str_eq(cJSON_GetObjectItem(img, "type")->valuestring, "image_url");
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(img, "image_url"), "url")->valuestring,
                     "data:image/png;base64,AAAA");
    const char *text = cJSON_GetObjectItem(txt, "text")->valuestring;
    int words = 1;
    for (const char *c = text; *c; c++)
        words += *c == ' ';
    ck_assert_int_eq(words, 40);
    ck_assert_int_eq(cJSON_GetObjectItem(j, "max_completion_tokens")->valueint, 9);
    ck_assert_int_eq(cJSON_GetObjectItem(j, "top_k")->valueint, 5);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "user")->valuestring, "x");
    ck_assert_int_eq(cJSON_GetObjectItem(j, "seed")->valueint, 4);
    cJSON_Delete(j);
    /* Without the image flag, only text. */
    j = body(&w, 3, 40, 9, false);
    content =
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "messages"), 0), "content");
    ck_assert_int_eq(cJSON_GetArraySize(content), 1);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_body_refusals)
{
    struct mm_workload w = base_workload();
    struct mm_buf b = {0};
    struct mm_err err;
    w.api = MM_API_CHAT; /* chat with token ids */
    ck_assert_int_eq(mm_workload_body(&w, 0, 4, 4, false, &b, &err), MM_ERR_INVALID);
    w = base_workload(); /* an image on /v1/completions */
    w.image_data_url = "data:image/png;base64,AAAA";
    ck_assert_int_eq(mm_workload_body(&w, 0, 4, 4, true, &b, &err), MM_ERR_INVALID);
    w = base_workload();
    w.vocab_hi = 3;
    ck_assert_int_eq(mm_workload_body(&w, 0, 4, 4, false, &b, &err), MM_ERR_INVALID);
    mm_buf_free(&b);
}
END_TEST

START_TEST(test_base64_and_escape)
{
    static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const out[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        struct mm_buf b = {0};
        mm_buf_base64(&b, (const uint8_t *)in[i], strlen(in[i]));
        ck_assert_str_eq(b.p ? b.p : "", out[i]);
        mm_buf_free(&b);
    }
    struct mm_buf b = {0};
    mm_buf_json_string(&b, "a\"b\\c\n\x01");
    ck_assert_str_eq(b.p, "\"a\\\"b\\\\c\\u000a\\u0001\"");
    mm_buf_free(&b);
}
END_TEST

START_TEST(test_image_url)
{
    char dir[256], path[300];
    mm_test_tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/x.png", dir);
    mm_test_write_file(path, "\x89PNG\r\n\x1a\n\0\0", 10);
    char *url = NULL;
    struct mm_err err;
    ck_assert_int_eq(mm_workload_image_url(path, &url, &err), MM_OK);
    ck_assert_str_eq(url, "data:image/png;base64,iVBORw0KGgoAAA==");
    free(url);
    snprintf(path, sizeof(path), "%s/x.txt", dir);
    mm_test_write_file(path, "hello", 5);
    ck_assert_int_eq(mm_workload_image_url(path, &url, &err), MM_ERR_FORMAT);
    ck_assert_ptr_null(url);
    mm_test_rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("clients/loadgen/workload");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_gamma_moments);
    tcase_add_test(tc, test_uniform_and_int);
    tcase_add_test(tc, test_schedule);
    tcase_add_test(tc, test_lengths);
    tcase_add_test(tc, test_completions_body);
    tcase_add_test(tc, test_chat_body_with_image);
    tcase_add_test(tc, test_body_refusals);
    tcase_add_test(tc, test_base64_and_escape);
    tcase_add_test(tc, test_image_url);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
