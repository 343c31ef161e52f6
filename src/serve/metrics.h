/* metrics.h: the serving counters, gauges and histograms behind GET /metrics
 * (DESIGN.md "HTTP API"), modelled on vLLM's (names for the Prometheus text,
 * given per field, are the HTTP layer's to print).
 *
 * Design: the engine thread records; any thread copies a consistent snapshot
 * under one short mutex (a few hundred bytes copied, no allocation).
 * Histogram buckets use vLLM's bounds; a snapshot's buckets are cumulative,
 * as Prometheus "le" buckets are, the last one being +Inf (= count). */
#ifndef MM_SERVE_METRICS_H
#define MM_SERVE_METRICS_H

#include <stdint.h>

#include "base/status.h"
#include "serve/request.h"

enum mm_hist {
    MM_HIST_QUEUE_TIME = 0, /* vllm:request_queue_time_seconds: submission → admission */
    MM_HIST_TTFT,           /* vllm:time_to_first_token_seconds */
    MM_HIST_ITL,            /* vllm:time_per_output_token_seconds: between tokens of a choice */
    MM_HIST_E2E,            /* vllm:e2e_request_latency_seconds: submission → finish */
    MM_HIST_PROMPT_TOKENS,  /* vllm:request_prompt_tokens, per request */
    MM_HIST_GEN_TOKENS,     /* vllm:request_generation_tokens, per request (all choices) */
    MM_HIST_COUNT
};

#define MM_HIST_MAX_BOUNDS 24

struct mm_histogram {
    int n_bounds;                             /* finite upper bounds */
    double bounds[MM_HIST_MAX_BOUNDS];        /* ascending */
    uint64_t buckets[MM_HIST_MAX_BOUNDS + 1]; /* cumulative: observations <= bounds[i];
                                                 [n_bounds] is +Inf */
    double sum;
    uint64_t count;
};

struct mm_metrics_snapshot {
    /* counters (since start) */
    uint64_t
        requests_finished[MM_FINISH_ERROR + 1]; /* per finish reason of each choice:
                                                   vllm:request_success_total{finished_reason} */
    uint64_t prompt_tokens;     /* vllm:prompt_tokens_total (prefilled once per request) */
    uint64_t generation_tokens; /* vllm:generation_tokens_total */
    uint64_t preemptions;       /* vllm:num_preemptions_total */
    uint64_t steps;             /* engine steps run */
    uint64_t step_errors;       /* steps the backend failed */
    /* gauges (as of the last step) */
    int64_t running; /* vllm:num_requests_running: requests holding a slot */
    int64_t waiting; /* vllm:num_requests_waiting: queued, preempted included */
    int64_t slots_used, slots_total;
    int64_t kv_blocks_used[2], kv_blocks_total[2]; /* per stack (enum mm_stack); vllm:
                                                      gpu_cache_usage_perc = used / total */
    struct mm_histogram hist[MM_HIST_COUNT];
    /* the state cache (scheduler.h), this engine's side: counters */
    uint64_t cache_queries;      /* requests looked up (vllm:prefix_cache_queries counts tokens:
                                    cache_query_tokens) */
    uint64_t cache_hits;         /* requests that started from a snapshot */
    uint64_t cache_query_tokens; /* vllm:prefix_cache_queries_total: prompt tokens looked up */
    uint64_t cache_hit_tokens;   /* vllm:prefix_cache_hits_total: prompt tokens not prefilled */
    uint64_t cache_snapshots;    /* snapshots taken (into a free slot or straight to host) */
    uint64_t cache_gpu_evictions; /* snapshots given up by their slot (saved to host or not) */
    /* gauges: snapshots in this engine's free state slots, and their size
     * (state + counts + the KV blocks they reference, shared ones included) */
    int64_t cache_gpu_entries, cache_gpu_bytes;
};

struct mm_metrics;

/* max_model_len bounds the token-count histograms (1-2-5 series up to it). */
enum mm_status mm_metrics_create(int64_t max_model_len, struct mm_metrics **out,
                                 struct mm_err *err);
void mm_metrics_free(struct mm_metrics *m);

/* Copies the current values (any thread). */
void mm_metrics_snapshot(const struct mm_metrics *m, struct mm_metrics_snapshot *out);
/* dst += src: counters, gauges and histograms (same bounds) of several
 * engines behind one HTTP front. */
void mm_metrics_snapshot_add(struct mm_metrics_snapshot *dst,
                             const struct mm_metrics_snapshot *src);

/* Recording (the engine thread; the tests). */
void mm_metrics_observe(struct mm_metrics *m, enum mm_hist h, double value);
void mm_metrics_finished(struct mm_metrics *m, enum mm_finish_reason f);
/* Adds to the token, preemption, step and error counters. */
void mm_metrics_count(struct mm_metrics *m, uint64_t prompt_tokens, uint64_t generation_tokens,
                      uint64_t preemptions, uint64_t steps, uint64_t step_errors);
/* Adds to the state cache's counters and sets its gauges. */
void mm_metrics_cache(struct mm_metrics *m, uint64_t queries, uint64_t hits, uint64_t query_tokens,
                      uint64_t hit_tokens, uint64_t snapshots, uint64_t gpu_evictions,
                      int64_t gpu_entries, int64_t gpu_bytes);
/* Sets the gauges. */
void mm_metrics_gauges(struct mm_metrics *m, int64_t running, int64_t waiting, int64_t slots_used,
                       int64_t slots_total, const int64_t kv_used[2], const int64_t kv_total[2]);

#endif
