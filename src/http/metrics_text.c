/* metrics_text.c: GET /metrics, the Prometheus text format (0.0.4).
 *
 * Design: vLLM's metric names with the `vllm:` prefix and a `model_name`
 * label, so existing dashboards and `vllm bench serve` read this server as
 * they read vLLM; what vLLM has no name for (state slots, KV blocks per
 * stack, engine steps) is under `mmmamba:`. One snapshot of the serve
 * metrics is taken per scrape. With several engines (dispatch.h) every
 * series above is their sum, and the `mmmamba:per_engine_*` families give each
 * engine's own under an `engine` label (its index; `device` names it), so
 * that summing a family never counts anything twice. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/exchange.h"
#include "serve/metrics.h"
#include "serve/dispatch.h"
#include "serve/response_store.h"
#include "serve/scheduler.h"
#include "serve/state_cache.h"

struct buf {
    char *s;
    size_t len, cap;
    bool failed;
};

static void out(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out(struct buf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        const int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        const size_t cap = b->cap * 2 + (size_t)n + 1;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
}

static void metric(struct buf *b, const char *name, const char *type, const char *help,
                   const char *label, double value)
{
    out(b, "# HELP %s %s\n# TYPE %s %s\n%s{%s} %.17g\n", name, help, name, type, name, label,
        value);
}

static void histogram(struct buf *b, const char *name, const char *help, const char *label,
                      const struct mm_histogram *h)
{
    out(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (int i = 0; i < h->n_bounds; i++)
        out(b, "%s_bucket{%s,le=\"%.17g\"} %llu\n", name, label, h->bounds[i],
            (unsigned long long)h->buckets[i]);
    out(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, label,
        (unsigned long long)h->buckets[h->n_bounds]);
    out(b, "%s_sum{%s} %.17g\n%s_count{%s} %llu\n", name, label, h->sum, name, label,
        (unsigned long long)h->count);
}

/* The state cache: vLLM's prefix-cache counters (in tokens, as vLLM
 * counts them), then ours per tier. */
static void state_cache_metrics(struct buf *b, const char *label,
                                const struct mm_metrics_snapshot *m, struct mm_state_cache *host)
{
    struct mm_state_cache_stats hs;
    memset(&hs, 0, sizeof hs);
    if (host)
        mm_state_cache_stats(host, &hs);
    metric(b, "vllm:prefix_cache_queries_total", "counter",
           "Prompt tokens looked up in the state cache.", label, (double)m->cache_query_tokens);
    metric(b, "vllm:prefix_cache_hits_total", "counter",
           "Prompt tokens served from the state cache instead of prefilled.", label,
           (double)m->cache_hit_tokens);
    out(b, "# HELP mmmamba:state_cache_requests_total Requests looked up in the state cache, "
           "by result.\n# TYPE mmmamba:state_cache_requests_total counter\n");
    out(b, "mmmamba:state_cache_requests_total{%s,result=\"hit\"} %llu\n", label,
        (unsigned long long)m->cache_hits);
    out(b, "mmmamba:state_cache_requests_total{%s,result=\"miss\"} %llu\n", label,
        (unsigned long long)(m->cache_queries - m->cache_hits));
    metric(b, "mmmamba:state_cache_snapshots_total", "counter",
           "Sequence states kept (prompts prefilled, answers finished).", label,
           (double)m->cache_snapshots);
    out(b, "# HELP mmmamba:state_cache_evictions_total States given up by a tier (gpu: to "
           "host RAM when it has room).\n# TYPE mmmamba:state_cache_evictions_total counter\n");
    out(b, "mmmamba:state_cache_evictions_total{%s,tier=\"gpu\"} %llu\n", label,
        (unsigned long long)m->cache_gpu_evictions);
    out(b, "mmmamba:state_cache_evictions_total{%s,tier=\"host\"} %llu\n", label,
        (unsigned long long)hs.evictions);
    if (hs.disk)
        out(b, "mmmamba:state_cache_evictions_total{%s,tier=\"disk\"} %llu\n", label,
            (unsigned long long)hs.disk_evictions);
    metric(b, "mmmamba:state_cache_rejects_total", "counter",
           "States host RAM could not take (no room even after evicting).", label,
           (double)hs.rejects);
    out(b, "# HELP mmmamba:state_cache_entries States kept, per tier.\n"
           "# TYPE mmmamba:state_cache_entries gauge\n");
    out(b, "mmmamba:state_cache_entries{%s,tier=\"gpu\"} %lld\n", label,
        (long long)m->cache_gpu_entries);
    out(b, "mmmamba:state_cache_entries{%s,tier=\"host\"} %lld\n", label, (long long)hs.entries);
    if (hs.disk)
        out(b, "mmmamba:state_cache_entries{%s,tier=\"disk\"} %lld\n", label,
            (long long)hs.disk_entries);
    out(b, "# HELP mmmamba:state_cache_bytes Bytes of the states kept, per tier (gpu: state "
           "slots and the KV blocks they reference).\n# TYPE mmmamba:state_cache_bytes gauge\n");
    out(b, "mmmamba:state_cache_bytes{%s,tier=\"gpu\"} %lld\n", label,
        (long long)m->cache_gpu_bytes);
    out(b, "mmmamba:state_cache_bytes{%s,tier=\"host\"} %zu\n", label, hs.bytes);
    if (hs.disk)
        out(b, "mmmamba:state_cache_bytes{%s,tier=\"disk\"} %zu\n", label, hs.disk_bytes);
    metric(b, "mmmamba:state_cache_capacity_bytes", "gauge",
           "Host RAM the state cache may use (state_cache_bytes).", label, (double)hs.max_bytes);
    if (!hs.disk)
        return;
    metric(b, "mmmamba:state_cache_disk_capacity_bytes", "gauge",
           "Disk space the disk tier may use (state_cache_disk_bytes).", label,
           (double)hs.disk_max_bytes);
    metric(b, "mmmamba:state_cache_disk_writes_total", "counter",
           "States written to the disk tier.", label, (double)hs.disk_writes);
    metric(b, "mmmamba:state_cache_disk_hits_total", "counter",
           "States read back from the disk tier into host RAM.", label, (double)hs.disk_hits);
    metric(b, "mmmamba:state_cache_disk_damaged_total", "counter",
           "Damaged or cut-short files of the disk tier found and removed.", label,
           (double)hs.disk_bad);
    metric(b, "mmmamba:state_cache_disk_queue_entries", "gauge",
           "States evicted from host RAM waiting for the disk writer (still findable).", label,
           (double)hs.disk_queued);
    metric(b, "mmmamba:state_cache_disk_queue_bytes", "gauge",
           "Bytes of the states waiting for the disk writer (within state_cache_bytes).", label,
           (double)hs.disk_queued_bytes);
}

/* The per-engine families: counters and gauges of each engine, labelled. */
static void per_engine(struct buf *b, const char *label, const struct mm_dispatch *d,
                       const struct mm_metrics_snapshot *per)
{
    const int n = mm_dispatch_count(d);
    char el[MM_DISPATCH_MAX_ENGINES][400];
    for (int i = 0; i < n; i++)
        snprintf(el[i], sizeof el[i], "%s,engine=\"%d\",device=\"%s\"", label, i,
                 mm_dispatch_name(d, i));
    out(b,
        "# HELP mmmamba:engines Engines (one per device) behind this server.\n"
        "# TYPE mmmamba:engines gauge\nmmmamba:engines{%s} %d\n",
        label, n);
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"mmmamba:per_engine_up", "gauge", "1 while the engine serves, 0 once it failed."},
        {"mmmamba:per_engine_requests_placed_total", "counter", "Requests placed on the engine."},
        {"mmmamba:per_engine_requests_running", "gauge", "Requests holding a state slot."},
        {"mmmamba:per_engine_requests_waiting", "gauge", "Requests waiting for a slot."},
        {"mmmamba:per_engine_state_slots_used", "gauge", "Recurrent-state slots in use."},
        {"mmmamba:per_engine_state_slots_total", "gauge", "Recurrent-state slots."},
        {"mmmamba:per_engine_kv_blocks_used", "gauge", "KV blocks in use, both stacks."},
        {"mmmamba:per_engine_kv_blocks_total", "gauge", "KV blocks, both stacks."},
        {"mmmamba:per_engine_prompt_tokens_total", "counter", "Prompt tokens prefilled."},
        {"mmmamba:per_engine_generation_tokens_total", "counter", "Tokens generated."},
        {"mmmamba:per_engine_request_errors_total", "counter", "Choices that finished in error."},
        {"mmmamba:per_engine_steps_total", "counter", "Engine steps run."},
        {"mmmamba:per_engine_step_errors_total", "counter", "Engine steps that failed."},
    };
    for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        out(b, "# HELP %s %s\n# TYPE %s %s\n", fam[f].name, fam[f].help, fam[f].name, fam[f].type);
        for (int i = 0; i < n; i++) {
            const struct mm_metrics_snapshot *m = &per[i];
            const double v[] = {
                mm_dispatch_failed(d, i) ? 0 : 1,
                (double)mm_dispatch_placed(d, i),
                (double)m->running,
                (double)m->waiting,
                (double)m->slots_used,
                (double)m->slots_total,
                (double)(m->kv_blocks_used[0] + m->kv_blocks_used[1]),
                (double)(m->kv_blocks_total[0] + m->kv_blocks_total[1]),
                (double)m->prompt_tokens,
                (double)m->generation_tokens,
                (double)m->requests_finished[MM_FINISH_ERROR],
                (double)m->steps,
                (double)m->step_errors,
            };
            out(b, "%s{%s} %.17g\n", fam[f].name, el[i], v[f]);
        }
    }
}

void mm_http_handle_metrics(struct mm_http_exchange *ex)
{
    const struct mm_http_app *app = mm_http_app(ex);
    struct mm_metrics_snapshot m;
    memset(&m, 0, sizeof m);
    struct mm_metrics_snapshot *per = NULL;
    if (app->dispatch) {
        per = malloc((size_t)mm_dispatch_count(app->dispatch) * sizeof *per);
        if (!per) {
            mm_http_reply_error(ex, 503, NULL, "out_of_memory", "out of memory");
            return;
        }
        mm_dispatch_metrics(app->dispatch, &m, per);
    }
    struct buf b = {.s = malloc(16384), .cap = 16384};
    if (!b.s) {
        free(per);
        mm_http_reply_error(ex, 503, NULL, "out_of_memory", "out of memory");
        return;
    }
    b.s[0] = '\0';
    char label[300];
    /* the name is operator-chosen: escape what the text format needs escaped */
    size_t k = (size_t)snprintf(label, sizeof label, "model_name=\"");
    for (const char *p = app->model_name; *p && k + 4 < sizeof label; p++) {
        if (*p == '"' || *p == '\\')
            label[k++] = '\\';
        label[k++] = *p == '\n' ? ' ' : *p;
    }
    snprintf(label + k, sizeof label - k, "\"");

    metric(&b, "vllm:num_requests_running", "gauge", "Requests holding a state slot.", label,
           (double)m.running);
    metric(&b, "vllm:num_requests_waiting", "gauge", "Requests waiting for a slot.", label,
           (double)m.waiting);
    const double kv_used = (double)(m.kv_blocks_used[0] + m.kv_blocks_used[1]);
    const double kv_total = (double)(m.kv_blocks_total[0] + m.kv_blocks_total[1]);
    metric(&b, "vllm:gpu_cache_usage_perc", "gauge",
           "Fraction of KV blocks in use (0 for a model without attention layers).", label,
           kv_total > 0 ? kv_used / kv_total : 0.0);
    metric(&b, "vllm:prompt_tokens_total", "counter", "Prompt tokens prefilled.", label,
           (double)m.prompt_tokens);
    metric(&b, "vllm:generation_tokens_total", "counter", "Tokens generated.", label,
           (double)m.generation_tokens);
    metric(&b, "vllm:num_preemptions_total", "counter", "Sequences preempted (KV pool dry).", label,
           (double)m.preemptions);
    out(&b, "# HELP vllm:request_success_total Finished choices by finish reason.\n"
            "# TYPE vllm:request_success_total counter\n");
    static const struct {
        enum mm_finish_reason f;
        const char *name;
    } reasons[] = {{MM_FINISH_STOP, "stop"},
                   {MM_FINISH_LENGTH, "length"},
                   {MM_FINISH_CANCELLED, "abort"},
                   {MM_FINISH_ERROR, "error"}};
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        out(&b, "vllm:request_success_total{%s,finished_reason=\"%s\"} %llu\n", label,
            reasons[i].name, (unsigned long long)m.requests_finished[reasons[i].f]);
    histogram(&b, "vllm:time_to_first_token_seconds", "Time to first token.", label,
              &m.hist[MM_HIST_TTFT]);
    histogram(&b, "vllm:time_per_output_token_seconds", "Time between output tokens.", label,
              &m.hist[MM_HIST_ITL]);
    histogram(&b, "vllm:e2e_request_latency_seconds", "Submission to finish.", label,
              &m.hist[MM_HIST_E2E]);
    histogram(&b, "vllm:request_queue_time_seconds", "Submission to admission.", label,
              &m.hist[MM_HIST_QUEUE_TIME]);
    histogram(&b, "vllm:request_prompt_tokens", "Prompt tokens per request.", label,
              &m.hist[MM_HIST_PROMPT_TOKENS]);
    histogram(&b, "vllm:request_generation_tokens", "Generated tokens per request.", label,
              &m.hist[MM_HIST_GEN_TOKENS]);
    metric(&b, "mmmamba:state_slots_used", "gauge", "Recurrent-state slots in use.", label,
           (double)m.slots_used);
    metric(&b, "mmmamba:state_slots_total", "gauge", "Recurrent-state slots.", label,
           (double)m.slots_total);
    static const char *const stacks[2] = {"embedding", "llm"};
    out(&b, "# HELP mmmamba:kv_blocks_used KV blocks in use, per stack.\n"
            "# TYPE mmmamba:kv_blocks_used gauge\n");
    for (int s = 0; s < 2; s++)
        out(&b, "mmmamba:kv_blocks_used{%s,stack=\"%s\"} %lld\n", label, stacks[s],
            (long long)m.kv_blocks_used[s]);
    out(&b, "# HELP mmmamba:kv_blocks_total KV blocks, per stack.\n"
            "# TYPE mmmamba:kv_blocks_total gauge\n");
    for (int s = 0; s < 2; s++)
        out(&b, "mmmamba:kv_blocks_total{%s,stack=\"%s\"} %lld\n", label, stacks[s],
            (long long)m.kv_blocks_total[s]);
    metric(&b, "mmmamba:engine_steps_total", "counter", "Engine steps run.", label,
           (double)m.steps);
    metric(&b, "mmmamba:engine_step_errors_total", "counter", "Engine steps that failed.", label,
           (double)m.step_errors);
    state_cache_metrics(&b, label, &m, app->state_cache);
    if (app->dispatch)
        per_engine(&b, label, app->dispatch, per);
    free(per);
    if (app->responses) {
        struct mm_response_store_stats rs;
        mm_response_store_stats(app->responses, &rs);
        metric(&b, "mmmamba:responses_stored", "gauge", "Responses kept for previous_response_id.",
               label, (double)rs.responses);
        metric(&b, "mmmamba:responses_bytes", "gauge",
               "Memory of the stored responses (ids, images, answers).", label, (double)rs.bytes);
        metric(&b, "mmmamba:responses_evicted_total", "counter",
               "Stored responses dropped for the store's bounds.", label, (double)rs.evictions);
    }
    if (b.failed) {
        free(b.s);
        mm_http_reply_error(ex, 503, NULL, "out_of_memory", "out of memory");
        return;
    }
    mm_http_reply_text(ex, 200, "text/plain; version=0.0.4; charset=utf-8", b.s, b.len);
}
