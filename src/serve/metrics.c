/* metrics.c: the serving metrics (see metrics.h). One mutex guards one
 * snapshot-shaped struct; recording and reading both hold it briefly. */
#include "serve/metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct mm_metrics {
    pthread_mutex_t mu;
    struct mm_metrics_snapshot s;
};

/* vLLM's bounds (vllm/engine/metrics.py) */
static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                     0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                     20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
static const double itl_bounds[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                    0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
static const double latency_bounds[] = {0.3,  0.5,   0.8,   1.0,   1.5,   2.0,    2.5,
                                        5.0,  10.0,  15.0,  20.0,  30.0,  40.0,   50.0,
                                        60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};

static void set_bounds(struct mm_histogram *h, const double *b, int n)
{
    h->n_bounds = n;
    memcpy(h->bounds, b, (size_t)n * sizeof *b);
}

/* 1, 2, 5, 10, 20, 50, ... up to and including the first >= max (vLLM's
 * build_1_2_5_buckets stops at max; we keep the bound that covers it). */
static void set_125(struct mm_histogram *h, int64_t max)
{
    static const int mant[3] = {1, 2, 5};
    int n = 0;
    for (double dec = 1; n < MM_HIST_MAX_BOUNDS; dec *= 10)
        for (int k = 0; k < 3 && n < MM_HIST_MAX_BOUNDS; k++) {
            h->bounds[n++] = mant[k] * dec;
            if (mant[k] * dec >= (double)max) {
                h->n_bounds = n;
                return;
            }
        }
    h->n_bounds = n;
}

enum mm_status mm_metrics_create(int64_t max_model_len, struct mm_metrics **out, struct mm_err *err)
{
    struct mm_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return mm_err_set(err, MM_ERR_NOMEM, "metrics: cannot create a mutex");
    }
    struct mm_histogram *h = m->s.hist;
    set_bounds(&h[MM_HIST_QUEUE_TIME], latency_bounds,
               (int)(sizeof latency_bounds / sizeof *latency_bounds));
    set_bounds(&h[MM_HIST_TTFT], ttft_bounds, (int)(sizeof ttft_bounds / sizeof *ttft_bounds));
    set_bounds(&h[MM_HIST_ITL], itl_bounds, (int)(sizeof itl_bounds / sizeof *itl_bounds));
    set_bounds(&h[MM_HIST_E2E], latency_bounds,
               (int)(sizeof latency_bounds / sizeof *latency_bounds));
    set_125(&h[MM_HIST_PROMPT_TOKENS], max_model_len > 0 ? max_model_len : 1);
    set_125(&h[MM_HIST_GEN_TOKENS], max_model_len > 0 ? max_model_len : 1);
    *out = m;
    return MM_OK;
}

void mm_metrics_free(struct mm_metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void mm_metrics_snapshot(const struct mm_metrics *m, struct mm_metrics_snapshot *out)
{
    struct mm_metrics *w = (struct mm_metrics *)m; /* the lock is not part of the value */
    pthread_mutex_lock(&w->mu);
    *out = m->s;
    pthread_mutex_unlock(&w->mu);
}

void mm_metrics_snapshot_add(struct mm_metrics_snapshot *dst, const struct mm_metrics_snapshot *src)
{
    for (int f = 0; f <= MM_FINISH_ERROR; f++)
        dst->requests_finished[f] += src->requests_finished[f];
    dst->prompt_tokens += src->prompt_tokens;
    dst->generation_tokens += src->generation_tokens;
    dst->preemptions += src->preemptions;
    dst->steps += src->steps;
    dst->step_errors += src->step_errors;
    dst->running += src->running;
    dst->waiting += src->waiting;
    dst->slots_used += src->slots_used;
    dst->slots_total += src->slots_total;
    for (int s = 0; s < 2; s++) {
        dst->kv_blocks_used[s] += src->kv_blocks_used[s];
        dst->kv_blocks_total[s] += src->kv_blocks_total[s];
    }
    dst->cache_queries += src->cache_queries;
    dst->cache_hits += src->cache_hits;
    dst->cache_query_tokens += src->cache_query_tokens;
    dst->cache_hit_tokens += src->cache_hit_tokens;
    dst->cache_snapshots += src->cache_snapshots;
    dst->cache_gpu_evictions += src->cache_gpu_evictions;
    dst->cache_gpu_entries += src->cache_gpu_entries;
    dst->cache_gpu_bytes += src->cache_gpu_bytes;
    for (int h = 0; h < MM_HIST_COUNT; h++) {
        struct mm_histogram *d = &dst->hist[h];
        const struct mm_histogram *s = &src->hist[h];
        for (int b = 0; b <= d->n_bounds && b <= s->n_bounds; b++)
            d->buckets[b] += s->buckets[b];
        d->sum += s->sum;
        d->count += s->count;
    }
}

void mm_metrics_observe(struct mm_metrics *m, enum mm_hist h, double value)
{
    pthread_mutex_lock(&m->mu);
    struct mm_histogram *x = &m->s.hist[h];
    for (int b = x->n_bounds - 1; b >= 0 && value <= x->bounds[b]; b--)
        x->buckets[b]++; /* cumulative: every bucket whose bound covers it */
    x->buckets[x->n_bounds]++;
    x->sum += value;
    x->count++;
    pthread_mutex_unlock(&m->mu);
}

void mm_metrics_finished(struct mm_metrics *m, enum mm_finish_reason f)
{
    if ((int)f < 0 || f > MM_FINISH_ERROR)
        return;
    pthread_mutex_lock(&m->mu);
    m->s.requests_finished[f]++;
    pthread_mutex_unlock(&m->mu);
}

void mm_metrics_count(struct mm_metrics *m, uint64_t prompt_tokens, uint64_t generation_tokens,
                      uint64_t preemptions, uint64_t steps, uint64_t step_errors)
{
    pthread_mutex_lock(&m->mu);
    m->s.prompt_tokens += prompt_tokens;
    m->s.generation_tokens += generation_tokens;
    m->s.preemptions += preemptions;
    m->s.steps += steps;
    m->s.step_errors += step_errors;
    pthread_mutex_unlock(&m->mu);
}

void mm_metrics_gauges(struct mm_metrics *m, int64_t running, int64_t waiting, int64_t slots_used,
                       int64_t slots_total, const int64_t kv_used[2], const int64_t kv_total[2])
{
    pthread_mutex_lock(&m->mu);
    m->s.running = running;
    m->s.waiting = waiting;
    m->s.slots_used = slots_used;
    m->s.slots_total = slots_total;
    for (int s = 0; s < 2; s++) {
        m->s.kv_blocks_used[s] = kv_used[s];
        m->s.kv_blocks_total[s] = kv_total[s];
    }
    pthread_mutex_unlock(&m->mu);
}

void mm_metrics_cache(struct mm_metrics *m, uint64_t queries, uint64_t hits, uint64_t query_tokens,
                      uint64_t hit_tokens, uint64_t snapshots, uint64_t gpu_evictions,
                      int64_t gpu_entries, int64_t gpu_bytes)
{
    pthread_mutex_lock(&m->mu);
    m->s.cache_queries += queries;
    m->s.cache_hits += hits;
    m->s.cache_query_tokens += query_tokens;
    m->s.cache_hit_tokens += hit_tokens;
    m->s.cache_snapshots += snapshots;
    m->s.cache_gpu_evictions += gpu_evictions;
    m->s.cache_gpu_entries = gpu_entries;
    m->s.cache_gpu_bytes = gpu_bytes;
    pthread_mutex_unlock(&m->mu);
}
