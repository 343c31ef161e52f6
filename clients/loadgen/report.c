/* report.c: metrics, text summary and JSON of report.h. */
#include "loadgen/report.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static void count_error(struct mm_lg_metrics *m, const char *cls)
{
    if (!cls)
        cls = "unknown";
    for (int i = 0; i < m->n_error_classes; i++) {
        if (strcmp(m->error_class[i], cls) == 0) {
            m->error_count[i]++;
            return;
        }
    }
    if (m->n_error_classes < MM_LG_MAX_ERROR_CLASSES) {
        m->error_class[m->n_error_classes] = cls;
        m->error_count[m->n_error_classes++] = 1;
    }
}

struct edge {
    double t;
    int d; /* +1 start, -1 end */
};

static int cmp_edge(const void *a, const void *b)
{
    const struct edge *x = a, *y = b;
    if (x->t != y->t)
        return (x->t > y->t) - (x->t < y->t);
    return x->d - y->d; /* ends before starts at the same instant: [start, end) */
}

/* Peak output chunks in a one-second bucket, and peak concurrency. */
static enum mm_status peaks(const struct mm_lg_result *r, int64_t n, struct mm_lg_metrics *m)
{
    double lo = INFINITY, hi = -INFINITY;
    int64_t ok = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!r[i].success)
            continue;
        ok++;
        lo = fmin(lo, r[i].t_send);
        hi = fmax(hi, r[i].t_send + r[i].latency);
    }
    if (ok == 0)
        return MM_OK;
    const size_t nb = (size_t)ceil(hi - lo) + 1;
    double *bucket = calloc(nb, sizeof(double));
    struct edge *e = malloc((size_t)ok * 2 * sizeof(*e));
    if (!bucket || !e) {
        free(bucket);
        free(e);
        return MM_ERR_NOMEM;
    }
    size_t ne = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!r[i].success)
            continue;
        e[ne++] = (struct edge){r[i].t_send, +1};
        e[ne++] = (struct edge){r[i].t_send + r[i].latency, -1};
        if (r[i].ttft < 0)
            continue;
        double t = r[i].t_send + r[i].ttft;
        for (size_t k = 0;; k++) {
            const size_t b = (size_t)(t - lo);
            if (b < nb)
                bucket[b] += 1;
            if (k == r[i].itl.n)
                break;
            t += r[i].itl.v[k];
        }
    }
    for (size_t b = 0; b < nb; b++)
        m->max_output_tokens_per_s = fmax(m->max_output_tokens_per_s, bucket[b]);
    qsort(e, ne, sizeof(*e), cmp_edge);
    int64_t cur = 0;
    for (size_t k = 0; k < ne; k++) {
        cur += e[k].d;
        if (cur > m->max_concurrent_requests)
            m->max_concurrent_requests = cur;
    }
    free(bucket);
    free(e);
    return MM_OK;
}

enum mm_status mm_lg_metrics_compute(const struct mm_lg_result *r, int64_t n, double duration,
                                     const double *ps, int n_ps, struct mm_lg_metrics *m,
                                     struct mm_err *err)
{
    memset(m, 0, sizeof(*m));
    m->duration = duration;
    struct mm_dvec ttft = {0}, tpot = {0}, itl = {0}, e2el = {0}, queue = {0};
    enum mm_status st = MM_OK;
    for (int64_t i = 0; i < n && st == MM_OK; i++) {
        if (!r[i].success) {
            m->failed++;
            count_error(m, r[i].error_class);
            continue;
        }
        m->completed++;
        m->total_input += r[i].input_len;
        m->total_output += r[i].output_len;
        if (r[i].ttft >= 0)
            st = mm_dvec_push(&ttft, r[i].ttft);
        if (st == MM_OK && r[i].output_len > 1 && r[i].ttft >= 0)
            st = mm_dvec_push(&tpot, (r[i].latency - r[i].ttft) / (double)(r[i].output_len - 1));
        if (st == MM_OK)
            st = mm_dvec_extend(&itl, &r[i].itl);
        if (st == MM_OK)
            st = mm_dvec_push(&e2el, r[i].latency);
        if (st == MM_OK)
            st = mm_dvec_push(&queue, r[i].t_send - r[i].t_arrival);
    }
    if (st != MM_OK) {
        mm_err_set(err, st, "collecting samples");
        goto done;
    }
    if (duration > 0) {
        m->request_throughput = (double)m->completed / duration;
        m->output_throughput = (double)m->total_output / duration;
        m->total_token_throughput = (double)(m->total_input + m->total_output) / duration;
    }
    st = mm_stats_summarize(ttft.v, ttft.n, ps, n_ps, &m->ttft, err);
    if (st == MM_OK)
        st = mm_stats_summarize(tpot.v, tpot.n, ps, n_ps, &m->tpot, err);
    if (st == MM_OK)
        st = mm_stats_summarize(itl.v, itl.n, ps, n_ps, &m->itl, err);
    if (st == MM_OK)
        st = mm_stats_summarize(e2el.v, e2el.n, ps, n_ps, &m->e2el, err);
    if (st == MM_OK)
        st = mm_stats_summarize(queue.v, queue.n, ps, n_ps, &m->queue, err);
    if (st == MM_OK && peaks(r, n, m) != MM_OK)
        st = mm_err_set(err, MM_ERR_NOMEM, "peak throughput buckets");
done:
    mm_dvec_free(&ttft);
    mm_dvec_free(&tpot);
    mm_dvec_free(&itl);
    mm_dvec_free(&e2el);
    mm_dvec_free(&queue);
    return st;
}

void mm_lg_metrics_goodput(const struct mm_lg_result *r, int64_t n, double duration,
                           const struct mm_lg_slo *slo, struct mm_lg_metrics *m)
{
    int64_t good = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!r[i].success)
            continue;
        const double ttft = r[i].ttft >= 0 ? r[i].ttft : r[i].latency;
        const double tpot =
            r[i].output_len > 1 ? (r[i].latency - ttft) / (double)(r[i].output_len - 1) : 0.0;
        good += (slo->ttft <= 0 || ttft <= slo->ttft) && (slo->tpot <= 0 || tpot <= slo->tpot) &&
                (slo->e2el <= 0 || r[i].latency <= slo->e2el);
    }
    m->has_goodput = true;
    m->request_goodput = duration > 0 ? (double)good / duration : 0.0;
}

enum mm_status mm_lg_metrics_long(const struct mm_lg_result *r, int64_t n,
                                  const struct mm_lg_result *lr, const double *ps, int n_ps,
                                  struct mm_lg_metrics *m, struct mm_err *err)
{
    m->has_long = true;
    m->long_success = lr->success;
    m->long_input_len = lr->input_len;
    m->long_output_len = lr->output_len;
    m->long_ttft = lr->ttft;
    m->long_e2el = lr->latency;
    m->long_error = lr->error;
    /* The prefill window; without a first token, the whole request. */
    const double w0 = lr->t_send;
    const double w1 = lr->t_send + (lr->ttft >= 0 ? lr->ttft : lr->latency);
    struct mm_dvec during = {0}, outside = {0};
    enum mm_status st = MM_OK;
    for (int64_t i = 0; i < n && st == MM_OK; i++) {
        if (!r[i].success || r[i].ttft < 0)
            continue;
        double t = r[i].t_send + r[i].ttft; /* chunk k's arrival; gap k ends at chunk k+1 */
        for (size_t k = 0; k < r[i].itl.n && st == MM_OK; k++) {
            const double g = r[i].itl.v[k];
            st = mm_dvec_push(t < w1 && t + g > w0 ? &during : &outside, g);
            t += g;
        }
    }
    if (st != MM_OK)
        st = mm_err_set(err, st, "splitting ITL samples");
    if (st == MM_OK)
        st = mm_stats_summarize(during.v, during.n, ps, n_ps, &m->itl_during_long, err);
    if (st == MM_OK)
        st = mm_stats_summarize(outside.v, outside.n, ps, n_ps, &m->itl_outside_long, err);
    mm_dvec_free(&during);
    mm_dvec_free(&outside);
    return st;
}

static const char *const metric_key[4] = {"ttft", "tpot", "itl", "e2el"};
static const char *const metric_name[4] = {"TTFT", "TPOT", "ITL", "E2EL"};
static const char *const metric_header[4] = {"Time to First Token",
                                             "Time per Output Token (excl. 1st token)",
                                             "Inter-token Latency", "End-to-end Latency"};

static const struct mm_stats_summary *metric(const struct mm_lg_metrics *m, int k)
{
    const struct mm_stats_summary *s[4] = {&m->ttft, &m->tpot, &m->itl, &m->e2el};
    return s[k];
}

/* "99" for 99.0, "99.9" for 99.9: the key suffix vLLM uses. */
static void pct_word(double p, char *out, size_t cap)
{
    if (p == floor(p))
        snprintf(out, cap, "%d", (int)p);
    else
        snprintf(out, cap, "%g", p);
}

static void rule(FILE *f, const char *title, char c)
{
    const int n = (int)strlen(title), left = (50 - n) / 2, right = 50 - n - left;
    for (int i = 0; i < left; i++)
        fputc(c, f);
    fputs(title, f);
    for (int i = 0; i < right; i++)
        fputc(c, f);
    fputc('\n', f);
}

void mm_lg_report_print(FILE *f, const struct mm_lg_metrics *m, const struct mm_lg_info *info)
{
    rule(f, " Serving Benchmark Result ", '=');
    fprintf(f, "%-40s %-10lld\n", "Successful requests:", (long long)m->completed);
    fprintf(f, "%-40s %-10lld\n", "Failed requests:", (long long)m->failed);
    for (int i = 0; i < m->n_error_classes; i++) {
        char label[64];
        snprintf(label, sizeof(label), "  errors %s:", m->error_class[i]);
        fprintf(f, "%-40s %-10lld\n", label, (long long)m->error_count[i]);
    }
    if (info->max_concurrency > 0)
        fprintf(f, "%-40s %-10lld\n",
                "Maximum request concurrency:", (long long)info->max_concurrency);
    if (!isinf(info->request_rate) && info->request_rate > 0)
        fprintf(f, "%-40s %-10.2f\n", "Request rate configured (RPS):", info->request_rate);
    fprintf(f, "%-40s %-10.2f\n", "Benchmark duration (s):", m->duration);
    fprintf(f, "%-40s %-10lld\n", "Total input tokens:", (long long)m->total_input);
    fprintf(f, "%-40s %-10lld\n", "Total generated tokens:", (long long)m->total_output);
    fprintf(f, "%-40s %-10.2f\n", "Request throughput (req/s):", m->request_throughput);
    if (m->has_goodput)
        fprintf(f, "%-40s %-10.2f\n", "Request goodput (req/s):", m->request_goodput);
    fprintf(f, "%-40s %-10.2f\n", "Output token throughput (tok/s):", m->output_throughput);
    fprintf(f, "%-40s %-10.2f\n",
            "Peak output token throughput (tok/s):", m->max_output_tokens_per_s);
    fprintf(f, "%-40s %-10lld\n",
            "Peak concurrent requests:", (long long)m->max_concurrent_requests);
    fprintf(f, "%-40s %-10.2f\n", "Total token throughput (tok/s):", m->total_token_throughput);
    for (int k = 0; k < 4; k++) {
        if (!info->show[k])
            continue;
        const struct mm_stats_summary *s = metric(m, k);
        char label[64], w[16];
        rule(f, metric_header[k], '-');
        snprintf(label, sizeof(label), "Mean %s (ms):", metric_name[k]);
        fprintf(f, "%-40s %-10.2f\n", label, s->mean * 1e3);
        snprintf(label, sizeof(label), "Median %s (ms):", metric_name[k]);
        fprintf(f, "%-40s %-10.2f\n", label, s->median * 1e3);
        for (int i = 0; i < s->n_percentiles; i++) {
            pct_word(s->percentile[i], w, sizeof(w));
            snprintf(label, sizeof(label), "P%s %s (ms):", w, metric_name[k]);
            fprintf(f, "%-40s %-10.2f\n", label, s->value[i] * 1e3);
        }
    }
    if (m->has_long) {
        rule(f, "Long prompt", '-');
        fprintf(f, "%-40s %-10lld\n", "Long prompt input tokens:", (long long)m->long_input_len);
        if (!m->long_success)
            fprintf(f, "%-40s %s\n", "Long prompt failed:", m->long_error ? m->long_error : "");
        fprintf(f, "%-40s %-10.2f\n", "Long prompt TTFT (ms):", m->long_ttft * 1e3);
        fprintf(f, "%-40s %-10.2f\n", "Long prompt E2EL (ms):", m->long_e2el * 1e3);
        const struct mm_stats_summary *d = &m->itl_during_long, *o = &m->itl_outside_long;
        fprintf(f, "%-40s %-10zu\n", "ITL gaps during its prefill:", d->n);
        fprintf(f, "%-40s %-10.2f\n", "Mean ITL during its prefill (ms):", d->mean * 1e3);
        fprintf(f, "%-40s %-10.2f\n", "Max ITL during its prefill (ms):", d->max * 1e3);
        fprintf(f, "%-40s %-10.2f\n", "Mean ITL otherwise (ms):", o->mean * 1e3);
    }
    rule(f, "", '=');
}

/* mean/median/std/max and the percentiles of s under "<stat>_<name>_ms" keys. */
static void add_summary(cJSON *j, const char *name, const struct mm_stats_summary *s)
{
    char key[96], w[16];
    snprintf(key, sizeof(key), "num_%s", name);
    cJSON_AddNumberToObject(j, key, (double)s->n);
    const char *stat[4] = {"mean", "median", "std", "max"};
    const double v[4] = {s->mean, s->median, s->std, s->max};
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof(key), "%s_%s_ms", stat[i], name);
        cJSON_AddNumberToObject(j, key, v[i] * 1e3);
    }
    for (int i = 0; i < s->n_percentiles; i++) {
        pct_word(s->percentile[i], w, sizeof(w));
        snprintf(key, sizeof(key), "p%s_%s_ms", w, name);
        cJSON_AddNumberToObject(j, key, s->value[i] * 1e3);
    }
}

static cJSON *i64_array(const struct mm_lg_result *r, int64_t n, size_t off)
{
    cJSON *a = cJSON_CreateArray();
    for (int64_t i = 0; a && i < n; i++)
        cJSON_AddItemToArray(
            a, cJSON_CreateNumber((double)*(const int64_t *)((const char *)&r[i] + off)));
    return a;
}

cJSON *mm_lg_report_json(const struct mm_lg_metrics *m, const struct mm_lg_info *info,
                         const struct mm_lg_result *r, int64_t n, bool detailed)
{
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    cJSON_AddStringToObject(j, "date", info->date);
    cJSON_AddStringToObject(j, "backend", info->backend);
    cJSON_AddStringToObject(j, "endpoint_type", info->backend);
    cJSON_AddStringToObject(j, "endpoint", info->endpoint);
    cJSON_AddStringToObject(j, "base_url", info->base_url);
    cJSON_AddStringToObject(j, "label", info->label ? info->label : info->backend);
    cJSON_AddStringToObject(j, "model_id", info->model);
    cJSON_AddNullToObject(j, "tokenizer_id");
    cJSON_AddNumberToObject(j, "num_prompts", (double)info->num_prompts);
    if (isinf(info->request_rate) || info->request_rate <= 0)
        cJSON_AddStringToObject(j, "request_rate", "inf");
    else
        cJSON_AddNumberToObject(j, "request_rate", info->request_rate);
    if (isinf(info->burstiness))
        cJSON_AddStringToObject(j, "burstiness", "inf");
    else
        cJSON_AddNumberToObject(j, "burstiness", info->burstiness);
    if (info->max_concurrency > 0)
        cJSON_AddNumberToObject(j, "max_concurrency", (double)info->max_concurrency);
    else
        cJSON_AddNullToObject(j, "max_concurrency");
    cJSON_AddNumberToObject(j, "random_input_len", (double)info->random_input_len);
    cJSON_AddNumberToObject(j, "random_output_len", (double)info->random_output_len);
    cJSON_AddNumberToObject(j, "random_range_ratio", info->random_range_ratio);
    cJSON_AddBoolToObject(j, "ignore_eos", info->ignore_eos);
    cJSON_AddNumberToObject(j, "duration", m->duration);
    cJSON_AddNumberToObject(j, "completed", (double)m->completed);
    cJSON_AddNumberToObject(j, "failed", (double)m->failed);
    cJSON_AddNumberToObject(j, "total_input_tokens", (double)m->total_input);
    cJSON_AddNumberToObject(j, "total_output_tokens", (double)m->total_output);
    cJSON_AddNumberToObject(j, "request_throughput", m->request_throughput);
    if (m->has_goodput)
        cJSON_AddNumberToObject(j, "request_goodput", m->request_goodput);
    else
        cJSON_AddNullToObject(j, "request_goodput");
    cJSON_AddNumberToObject(j, "output_throughput", m->output_throughput);
    cJSON_AddNumberToObject(j, "total_token_throughput", m->total_token_throughput);
    cJSON_AddNumberToObject(j, "max_output_tokens_per_s", m->max_output_tokens_per_s);
    cJSON_AddNumberToObject(j, "max_concurrent_requests", (double)m->max_concurrent_requests);
    cJSON *errs = cJSON_AddObjectToObject(j, "errors_by_status");
    for (int i = 0; errs && i < m->n_error_classes; i++)
        cJSON_AddNumberToObject(errs, m->error_class[i], (double)m->error_count[i]);
    for (int k = 0; k < 4; k++) {
        if (!info->show[k])
            continue;
        const struct mm_stats_summary *s = metric(m, k);
        char key[64], w[16];
        snprintf(key, sizeof(key), "mean_%s_ms", metric_key[k]);
        cJSON_AddNumberToObject(j, key, s->mean * 1e3);
        snprintf(key, sizeof(key), "median_%s_ms", metric_key[k]);
        cJSON_AddNumberToObject(j, key, s->median * 1e3);
        snprintf(key, sizeof(key), "std_%s_ms", metric_key[k]);
        cJSON_AddNumberToObject(j, key, s->std * 1e3);
        for (int i = 0; i < s->n_percentiles; i++) {
            pct_word(s->percentile[i], w, sizeof(w));
            snprintf(key, sizeof(key), "p%s_%s_ms", w, metric_key[k]);
            cJSON_AddNumberToObject(j, key, s->value[i] * 1e3);
        }
    }
    if (info->max_concurrency > 0) {
        cJSON_AddNumberToObject(j, "mean_client_queue_time_ms", m->queue.mean * 1e3);
        cJSON_AddNumberToObject(j, "median_client_queue_time_ms", m->queue.median * 1e3);
    }
    if (m->has_long) {
        cJSON_AddBoolToObject(j, "long_prompt_success", m->long_success);
        cJSON_AddNumberToObject(j, "long_prompt_input_tokens", (double)m->long_input_len);
        cJSON_AddNumberToObject(j, "long_prompt_output_tokens", (double)m->long_output_len);
        cJSON_AddNumberToObject(j, "long_prompt_ttft_ms", m->long_ttft * 1e3);
        cJSON_AddNumberToObject(j, "long_prompt_e2el_ms", m->long_e2el * 1e3);
        add_summary(j, "itl_during_long_prefill", &m->itl_during_long);
        add_summary(j, "itl_outside_long_prefill", &m->itl_outside_long);
    }
    if (detailed) {
        cJSON_AddItemToObject(j, "input_lens",
                              i64_array(r, n, offsetof(struct mm_lg_result, input_len)));
        cJSON_AddItemToObject(j, "output_lens",
                              i64_array(r, n, offsetof(struct mm_lg_result, output_len)));
        cJSON *ttfts = cJSON_AddArrayToObject(j, "ttfts");
        cJSON *itls = cJSON_AddArrayToObject(j, "itls");
        cJSON *lat = cJSON_AddArrayToObject(j, "latencies");
        cJSON *starts = cJSON_AddArrayToObject(j, "start_times");
        cJSON *errors = cJSON_AddArrayToObject(j, "errors");
        for (int64_t i = 0; i < n && ttfts && itls && lat && starts && errors; i++) {
            cJSON_AddItemToArray(ttfts, cJSON_CreateNumber(r[i].ttft > 0 ? r[i].ttft : 0));
            cJSON_AddItemToArray(itls, r[i].itl.n
                                           ? cJSON_CreateDoubleArray(r[i].itl.v, (int)r[i].itl.n)
                                           : cJSON_CreateArray());
            cJSON_AddItemToArray(lat, cJSON_CreateNumber(r[i].latency));
            cJSON_AddItemToArray(starts, cJSON_CreateNumber(r[i].t_send));
            cJSON_AddItemToArray(errors, cJSON_CreateString(r[i].error ? r[i].error : ""));
        }
    }
    for (const cJSON *it = info->metadata ? info->metadata->child : NULL; it; it = it->next)
        cJSON_AddItemToObject(j, it->string, cJSON_Duplicate(it, true));
    return j;
}
