/* report.h: turns request outcomes into the benchmark's metrics and prints
 * them and writes them as JSON, with vLLM `bench serve`'s definitions and
 * key names so results and scripts carry over:
 *   request_throughput = completed / duration
 *   output_throughput = sum(output_len) / duration; total_token_throughput adds inputs
 *   TTFT = first content token - send; ITL = gaps between content chunks;
 *   TPOT = (E2EL - TTFT) / (output_len - 1) for requests with output_len > 1;
 *   E2EL = last byte - send. Only successful requests enter the statistics.
 * Not thread-safe; pure functions of their inputs. */
#ifndef MM_LOADGEN_REPORT_H
#define MM_LOADGEN_REPORT_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "loadgen/driver.h"
#include "loadgen/stats.h"

#define MM_LG_MAX_ERROR_CLASSES 32

struct mm_lg_metrics {
    int64_t completed, failed;
    int64_t total_input, total_output;
    double duration; /* s */
    double request_throughput, output_throughput, total_token_throughput;
    struct mm_stats_summary ttft, tpot, itl, e2el; /* in seconds */
    struct mm_stats_summary queue;                 /* client queue time (arrival to send), s */
    double max_output_tokens_per_s;  /* the busiest one-second bucket of content chunks */
    int64_t max_concurrent_requests; /* peak overlap of successful requests */
    bool has_goodput;
    double request_goodput; /* requests/s that met every SLO of mm_lg_metrics_goodput */
    /* The long-prompt request (driver.h), when there was one. */
    bool has_long;
    bool long_success;
    int64_t long_input_len, long_output_len;
    double long_ttft, long_e2el; /* s */
    const char *long_error;      /* borrowed from the result */
    /* The other streams' ITL gaps overlapping the long prompt's prefill window
     * [its send, its first token], and all the others. */
    struct mm_stats_summary itl_during_long, itl_outside_long;
    int n_error_classes;
    const char *error_class[MM_LG_MAX_ERROR_CLASSES]; /* "429", "transport", ... (static) */
    int64_t error_count[MM_LG_MAX_ERROR_CLASSES];
};

/* The run's parameters, echoed in the report. Borrowed strings. */
struct mm_lg_info {
    const char *date; /* "YYYYMMDD-HHMMSS" */
    const char *backend, *endpoint, *label, *model, *base_url;
    int64_t num_prompts;
    double request_rate; /* inf: as fast as allowed */
    double burstiness;
    int64_t max_concurrency; /* 0: none */
    int64_t random_input_len, random_output_len;
    double random_range_ratio;
    bool ignore_eos;
    bool show[4];          /* ttft, tpot, itl, e2el: which go into the percentile output */
    const cJSON *metadata; /* an object whose members are added to the JSON, or NULL */
};

enum mm_status mm_lg_metrics_compute(const struct mm_lg_result *r, int64_t n, double duration,
                                     const double *ps, int n_ps, struct mm_lg_metrics *m,
                                     struct mm_err *err);

/* Service-level objectives in seconds; <= 0 leaves one out. */
struct mm_lg_slo {
    double ttft, tpot, e2el;
};

/* Sets m->request_goodput: successful requests whose TTFT, TPOT (0 for a
 * single output token) and E2EL are all within slo, per second of duration
 * (vLLM's --goodput). */
void mm_lg_metrics_goodput(const struct mm_lg_result *r, int64_t n, double duration,
                           const struct mm_lg_slo *slo, struct mm_lg_metrics *m);

/* Adds the long-prompt request's numbers to m (computed by mm_lg_metrics_compute). */
enum mm_status mm_lg_metrics_long(const struct mm_lg_result *r, int64_t n,
                                  const struct mm_lg_result *long_result, const double *ps,
                                  int n_ps, struct mm_lg_metrics *m, struct mm_err *err);

/* The human summary, laid out like vLLM's "Serving Benchmark Result". */
void mm_lg_report_print(FILE *f, const struct mm_lg_metrics *m, const struct mm_lg_info *info);

/* The result object (caller frees with cJSON_Delete); NULL when out of memory.
 * With detailed, the per-request arrays (input_lens, output_lens, ttfts, itls,
 * start_times, latencies, errors) are included. */
cJSON *mm_lg_report_json(const struct mm_lg_metrics *m, const struct mm_lg_info *info,
                         const struct mm_lg_result *r, int64_t n, bool detailed);

#endif
