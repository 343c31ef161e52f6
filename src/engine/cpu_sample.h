/* cpu_sample.h: the reference sampler (the CPU twin of the CUDA sampling
 * kernel): backend.h's `sample` steps 2-6 on one row of logits.
 *
 * Design: one 32-bit word of token counts per vocabulary id and slot, so a
 * penalty kernel reads one word per logit: the top bit marks "seen in the
 * prompt", the low 31 bits count the id in the output (saturating). A slot
 * of the full-size model (~92.5K ids) carries ~370 KB of counts next to its
 * ~16 MiB of recurrent state. No allocation per call: scratch is sized once
 * for the vocabulary. */
#ifndef MM_ENGINE_CPU_SAMPLE_H
#define MM_ENGINE_CPU_SAMPLE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "engine/backend.h"

#define MM_COUNT_PROMPT 0x80000000u /* id seen in the prompt */
#define MM_COUNT_OUTPUT 0x7fffffffu /* mask of the output count */

/* Adds ids to one slot's counts [V]: output ? count += 1 : mark prompt.
 * Ids outside [0, V) are ignored (the engine validated them already). */
void mm_cpu_count_tokens(uint32_t *counts, int64_t V, const int32_t *ids, int64_t n, bool output);

/* Step 3 in place: l = l > 0 ? l / r : l * r for every id seen in the
 * prompt or output; then l -= frequency * out_count + presence * (out_count > 0). */
void mm_cpu_apply_penalties(float *l, const uint32_t *counts, int64_t V,
                            const struct mm_sample_params *p);

/* A candidate of step 5: its unnormalised probability and id. */
struct mm_cpu_cand {
    float p;
    int32_t id;
};

/* Scratch for one row at a time. Owned by the caller (free with _free). */
struct mm_cpu_sampler {
    int64_t V;
    float *l;                  /* [V] penalised logits */
    struct mm_cpu_cand *cands; /* [V] */
};

enum mm_status mm_cpu_sampler_init(struct mm_cpu_sampler *s, int64_t V, struct mm_err *err);
void mm_cpu_sampler_free(struct mm_cpu_sampler *s);

/* backend.h `sample` steps 2-6 for one row: logits [V] (raw, not changed),
 * counts [V] of the row's slot (the chosen id is added as output), the
 * request's stream and counter for the Philox draw.
 *
 * Step 5 spelled out (what a backend twin must do): p_i = exp((l_i - max l) / T)
 * unnormalised (every rule is scale-free); candidates ranked by p descending,
 * ties lower id first; top_k keeps the first k; top_p then keeps the shortest
 * prefix whose running sum reaches top_p times the candidates' sum (i.e. on
 * the distribution renormalised after top_k, as vLLM does); min_p keeps
 * p >= min_p * max p; the draw sums the kept p in ascending id order, in
 * double. */
void mm_cpu_sample_row(struct mm_cpu_sampler *s, const float *logits, uint32_t *counts,
                       const struct mm_sample_params *p, uint32_t stream, uint32_t counter,
                       struct mm_sample_out *out);

#endif
