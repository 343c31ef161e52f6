/* cpu_sample.c: the reference sampler (see cpu_sample.h and backend.h
 * `sample`). Plain loops and qsort: it is the oracle, not the fast path. */
#include "engine/cpu_sample.h"

#include <math.h>
#include <stdlib.h>

#include "engine/philox.h"

void mm_cpu_count_tokens(uint32_t *counts, int64_t V, const int32_t *ids, int64_t n, bool output)
{
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= V)
            continue;
        uint32_t *c = &counts[ids[i]];
        if (!output)
            *c |= MM_COUNT_PROMPT;
        else if ((*c & MM_COUNT_OUTPUT) != MM_COUNT_OUTPUT) /* saturate */
            (*c)++;
    }
}

void mm_cpu_apply_penalties(float *l, const uint32_t *counts, int64_t V,
                            const struct mm_sample_params *p)
{
    const float r = p->repetition_penalty;
    const bool rep = r > 0 && r != 1.0f;
    for (int64_t i = 0; i < V; i++) {
        if (!counts[i])
            continue;
        const uint32_t out = counts[i] & MM_COUNT_OUTPUT;
        /* repetition: seen anywhere → l/r if positive, l·r otherwise (CTRL, HF) */
        if (rep)
            l[i] = l[i] > 0 ? l[i] / r : l[i] * r;
        /* OpenAI: l −= frequency·count + presence·[count > 0], output tokens only */
        if (out)
            l[i] -= p->frequency_penalty * (float)out + p->presence_penalty;
    }
}

enum mm_status mm_cpu_sampler_init(struct mm_cpu_sampler *s, int64_t V, struct mm_err *err)
{
    s->V = V;
    s->l = malloc((size_t)(V > 0 ? V : 1) * sizeof *s->l);
    s->cands = malloc((size_t)(V > 0 ? V : 1) * sizeof *s->cands);
    if (V < 1 || !s->l || !s->cands) {
        mm_cpu_sampler_free(s);
        return mm_err_set(err, MM_ERR_NOMEM, "sampler: cannot allocate scratch for %lld ids",
                          (long long)V);
    }
    return MM_OK;
}

void mm_cpu_sampler_free(struct mm_cpu_sampler *s)
{
    free(s->l);
    free(s->cands);
    s->l = NULL;
    s->cands = NULL;
}

/* p descending, then id ascending */
static int by_p_desc(const void *a, const void *b)
{
    const struct mm_cpu_cand *x = a, *y = b;
    if (x->p != y->p)
        return x->p > y->p ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int by_id(const void *a, const void *b)
{
    const struct mm_cpu_cand *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

/* Step 2: the raw log_softmax at the chosen id and the top n. */
static void fill_logprobs(const float *l, int64_t V, int32_t id, int n_top,
                          struct mm_sample_out *out)
{
    float mx = l[0];
    for (int64_t i = 1; i < V; i++)
        mx = l[i] > mx ? l[i] : mx;
    double sum = 0;
    for (int64_t i = 0; i < V; i++)
        sum += exp((double)l[i] - mx);
    const double logz = mx + log(sum); /* log Σ exp l */
    out->logprob = (float)((double)l[id] - logz);
    /* top n by insertion: a later id displaces only a strictly larger logit */
    int k = 0;
    for (int64_t i = 0; i < V && n_top > 0; i++) {
        if (k == n_top && !(l[i] > l[out->top_ids[k - 1]]))
            continue;
        int j = k < n_top ? k++ : k - 1;
        while (j > 0 && l[i] > l[out->top_ids[j - 1]]) {
            out->top_ids[j] = out->top_ids[j - 1];
            j--;
        }
        out->top_ids[j] = (int32_t)i;
    }
    out->n_top = k;
    for (int j = 0; j < k; j++)
        out->top_logprobs[j] = (float)((double)l[out->top_ids[j]] - logz);
}

void mm_cpu_sample_row(struct mm_cpu_sampler *s, const float *logits, uint32_t *counts,
                       const struct mm_sample_params *p, uint32_t stream, uint32_t counter,
                       struct mm_sample_out *out)
{
    const int64_t V = s->V;
    float *l = s->l;
    for (int64_t i = 0; i < V; i++)
        l[i] = logits[i];
    mm_cpu_apply_penalties(l, counts, V, p); /* 3 */

    int32_t id = 0;
    if (p->temperature <= 0 || p->top_k == 1) {
        /* 4. greedy: argmax, lowest id on ties */
        for (int64_t i = 1; i < V; i++)
            if (l[i] > l[id])
                id = (int32_t)i;
    } else {
        /* 5. p_i = exp((l_i − max l)/T), unnormalised */
        float mx = l[0];
        for (int64_t i = 1; i < V; i++)
            mx = l[i] > mx ? l[i] : mx;
        struct mm_cpu_cand *c = s->cands;
        for (int64_t i = 0; i < V; i++)
            c[i] = (struct mm_cpu_cand){expf((l[i] - mx) / p->temperature), (int32_t)i};
        int64_t n = V;
        const bool top_k = p->top_k > 0 && p->top_k < V, top_p = p->top_p < 1.0f;
        if (top_k || top_p) {
            qsort(c, (size_t)V, sizeof *c, by_p_desc);
            if (top_k)
                n = p->top_k;
            if (top_p) {
                double mass = 0, run = 0;
                for (int64_t i = 0; i < n; i++)
                    mass += c[i].p;
                for (int64_t i = 0; i < n; i++) {
                    run += c[i].p;
                    if (run >= (double)p->top_p * mass) {
                        n = i + 1;
                        break;
                    }
                }
            }
        }
        if (p->min_p > 0) {
            float pmax = 0;
            for (int64_t i = 0; i < n; i++)
                pmax = c[i].p > pmax ? c[i].p : pmax;
            /* min_p above 1 would keep nothing: the maximum always stays */
            const float thr = p->min_p < 1 ? p->min_p * pmax : pmax;
            int64_t k = 0;
            for (int64_t i = 0; i < n; i++)
                if (c[i].p >= thr)
                    c[k++] = c[i];
            n = k;
        }
        if (top_k || top_p)
            qsort(c, (size_t)n, sizeof *c, by_id);
        /* the draw: first kept id (ascending) whose running sum exceeds u·total */
        double total = 0;
        for (int64_t i = 0; i < n; i++)
            total += c[i].p;
        const double target = (double)mm_philox_uniform(p->seed, counter, stream) * total;
        double run = 0;
        id = c[n - 1].id; /* only if rounding leaves the target unreached */
        for (int64_t i = 0; i < n; i++) {
            run += c[i].p;
            if (run > target) {
                id = c[i].id;
                break;
            }
        }
    }
    out->id = id;
    int n_top = p->n_logprobs;
    n_top = n_top < 0 ? 0 : n_top > MM_MAX_LOGPROBS ? MM_MAX_LOGPROBS : n_top;
    if (n_top > V)
        n_top = (int)V;
    fill_logprobs(logits, V, id, n_top, out);     /* 2 */
    mm_cpu_count_tokens(counts, V, &id, 1, true); /* 6 */
}
