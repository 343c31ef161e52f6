/* driver.h: runs one benchmark: sends the planned requests on libcurl's
 * multi interface and times every streamed token.
 *
 * Design: one thread, one curl multi handle, one easy handle per in-flight
 * request; poll() sleeps until the next byte or the next scheduled arrival.
 * Thousands of concurrent streams cost one socket and a few KiB each, not a
 * thread. Times are CLOCK_MONOTONIC seconds from the run's start, taken in the
 * write callback the moment bytes arrive. TTFT is from the request's send to
 * its first content token; ITL is the gap between content chunks (a chunk
 * that carries several tokens counts once, as in vLLM). */
#ifndef MM_LOADGEN_DRIVER_H
#define MM_LOADGEN_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "loadgen/stats.h"
#include "loadgen/workload.h"

/* One request's outcome. */
struct mm_lg_result {
    bool success;
    long http_status;        /* 0: no HTTP response (connection failed) */
    char *error;             /* NULL on success; owned, freed by mm_lg_results_free */
    const char *error_class; /* static: "429", "transport", "stream", ... (NULL on success) */
    int64_t input_len;       /* usage.prompt_tokens, else the planned prompt length */
    int64_t output_len;      /* usage.completion_tokens, else the number of content chunks */
    int64_t planned_input_len, planned_output_len;
    bool has_image;
    double t_arrival;   /* when the schedule released it (s from the start) */
    double t_send;      /* when it was handed to curl; t_send - t_arrival = client queue time */
    double ttft;        /* s; < 0 when the stream carried no content */
    double latency;     /* s, send to the last byte (E2EL) */
    struct mm_dvec itl; /* s between consecutive content chunks */
};

struct mm_lg_config {
    const char *url; /* the endpoint's full URL */
    struct mm_workload workload;
    const char *const *headers; /* "Name: value" lines added to every request */
    int n_headers;
    int64_t num_prompts;
    int64_t max_concurrency; /* 0: unlimited */
    double request_rate;     /* requests/s; inf or <= 0: all at once */
    double burstiness;
    int64_t input_len, output_len; /* the random length distributions */
    double range_ratio;
    double image_ratio;     /* fraction of requests that carry the image */
    double request_timeout; /* s per request; 0: none */
    int progress;           /* 0 none, 1 a \r-refreshed line (tty), 2 a line every 10 s */
    /* One extra long-prompt request sent long_at s after the start, outside
     * the schedule and the concurrency limit, to measure what its prefill does
     * to the other streams' ITL (0: none). */
    int64_t long_input_len, long_output_len;
    double long_at;
};

/* Runs the benchmark. results[0..num_prompts) are filled, and *long_result
 * when c->long_input_len > 0 (free both with mm_lg_results_free even on
 * failure); *duration is the wall time from the first send to the last
 * completion. Fails only on setup errors (curl, memory, a bad
 * configuration): request failures are results. Call curl_global_init first. */
enum mm_status mm_lg_run(const struct mm_lg_config *c, struct mm_lg_result *results,
                         struct mm_lg_result *long_result, double *duration, struct mm_err *err);

void mm_lg_results_free(struct mm_lg_result *results, int64_t n);

#endif
