/* backend.h: the interface between the forward pass and a compute backend
 * (CPU reference, CUDA).
 *
 * Design: a struct of function pointers plus an opaque context, with coarse
 * ops so a backend can fuse: a mixer op is the whole residual block
 * `x += Mixer(RMSNorm(x))` over a varlen token batch, reading and writing
 * recurrent state and KV blocks in place by slot id. Activations live in
 * backend-owned buffers (struct mm_act, opaque here) allocated once for the
 * largest batch; weights are uploaded once by `load`. All ops are called from
 * the one engine thread that owns the backend. */
#ifndef MM_ENGINE_BACKEND_H
#define MM_ENGINE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "model/config.h"
#include "model/weights.h"

enum mm_stack {
    MM_STACK_EMB = 0, /* the holistic-embedding layers */
    MM_STACK_LLM = 1, /* the language-model layers */
};

/* Tokens per KV block (attention layers only). */
#define MM_KV_BLOCK 16

/* One sequence's rows in a token batch of one stack. */
struct mm_span {
    int32_t slot; /* state slot (recurrent state, KV block table owner) */
    int64_t row;  /* first row of this sequence in the batch */
    int64_t n;    /* number of tokens */
    int64_t pos;  /* position of the first token in this stack's sequence */
    const int32_t
        *blocks; /* KV block table for this stack (covers pos + n tokens); NULL if unused */
};

struct mm_act; /* backend-owned activation buffer [rows, cols], backend dtype */

/* Most top logprobs a request may ask for (OpenAI's bound). */
#define MM_MAX_LOGPROBS 20

/* How to choose the next token of one sequence (docs/architecture.md, "Engine").
 * Defaults that switch a feature off: temperature 0 (greedy), top_k 0,
 * top_p 1, min_p 0, repetition_penalty 1, presence/frequency 0. */
struct mm_sample_params {
    float temperature;        /* <= 0: greedy */
    int32_t top_k;            /* <= 0: off; 1 is greedy */
    float top_p;              /* in (0, 1]; 1: off */
    float min_p;              /* in [0, 1]; 0: off */
    float repetition_penalty; /* > 0; 1: off */
    float presence_penalty;   /* 0: off */
    float frequency_penalty;  /* 0: off */
    uint64_t seed;            /* Philox key */
    int32_t n_logprobs;       /* top logprobs wanted, 0..MM_MAX_LOGPROBS */
};

/* One token to sample: the logits of batch row `row` of the final
 * activations, for sequence `slot`. The random draw is a pure function of
 * (seed, stream, counter), never of what else is in the batch: the serving
 * layer passes stream = choice index (n > 1) and counter = index of the token
 * in the choice's output. */
struct mm_sample_req {
    int64_t row;
    int32_t slot;
    uint32_t stream;
    uint32_t counter;
    struct mm_sample_params p;
};

struct mm_sample_out {
    int32_t id;      /* the chosen token */
    float logprob;   /* log_softmax of the raw logits at id */
    int32_t n_top;   /* = p.n_logprobs */
    int32_t top_ids[MM_MAX_LOGPROBS];
    float top_logprobs[MM_MAX_LOGPROBS]; /* descending; ties: lower id first */
};

/* Sizes fixed at start-up (docs/style.md rule 4: no allocation in the step loop). */
struct mm_backend_limits {
    int32_t n_slots;        /* recurrent-state slots */
    int64_t n_kv_blocks[2]; /* KV blocks per stack (enum mm_stack); 0 for a stack without
                               attention layers. Block ids are per stack; a block holds
                               K and V of MM_KV_BLOCK tokens for every attention layer
                               of its own stack only. */
    int64_t max_tokens;  /* rows of the largest token batch of either stack */
    int64_t max_tiles;   /* image tiles in one step */
    int64_t max_context; /* longest sequence (positions) an attention layer may see */
    bool state_fp32;     /* keep SSM state in fp32 between steps (else bf16, like the reference) */
    /* Sizing from device memory (a backend with `limits`; others ignore it):
     * when > 0, n_slots and n_kv_blocks are upper bounds and load takes as
     * many slots as fit in this fraction of the device memory left after the
     * weights and its scratch, each slot bringing kv_blocks_per_slot[s] KV
     * blocks of stack s (where that is 0, n_kv_blocks[s] are taken as given). */
    double mem_fraction;
    int64_t kv_blocks_per_slot[2];
};

struct mm_backend_ops {
    const char *name;

    /* Uploads / converts the weights and allocates states and KV blocks.
     * cfg and w are borrowed for the duration of the call only. */
    enum mm_status (*load)(void *ctx, const struct mm_config *cfg, const struct mm_weights *w,
                           const struct mm_backend_limits *lim, struct mm_err *err);
    /* Frees the context and everything it owns (buffers included). */
    void (*destroy)(void *ctx);

    /* An activation buffer of rows x cols (owned by the backend); NULL on failure. */
    struct mm_act *(*act_alloc)(void *ctx, int64_t rows, int64_t cols);

    /* x[row0 + i] = embedding of ids[i] (text table below V_e, special table above). */
    void (*embed_tokens)(void *ctx, const int32_t *ids, int64_t n, struct mm_act *x, int64_t row0);
    /* Patch conv + position embedding of n_tiles normalised tiles (host fp32
     * [n_tiles, 3, S, S]) into out rows [0, n_tiles * P * P), P = S / patch. */
    void (*vision_embed)(void *ctx, const float *tiles, int64_t n_tiles, struct mm_act *out);
    /* 2x2 pixel shuffle + projection (Linear, GELU, Linear) of n_tiles tiles of
     * P*P rows starting at in_row0, into n_tiles * P*P/4 rows at out_row0. */
    void (*pixel_shuffle)(void *ctx, const struct mm_act *in, int64_t in_row0, int64_t n_tiles,
                          struct mm_act *out, int64_t out_row0);
    void (*copy_rows)(void *ctx, const struct mm_act *src, int64_t src_row, struct mm_act *dst,
                      int64_t dst_row, int64_t n);
    /* x <- x / ||x||_2 for rows [0, n). */
    void (*l2_normalize)(void *ctx, struct mm_act *x, int64_t n);

    /* Optional (NULL when unused): brackets one step's ops from the first
     * embedding to the last LLM-stack layer (logits and sampling come after
     * step_end), with both stacks' spans (valid until step_end). decode: each
     * of the n_spans sequences has one text token, so a backend may record the
     * step once per batch size and replay it (CUDA graphs). */
    void (*step_begin)(void *ctx, const struct mm_span *emb_spans, const struct mm_span *llm_spans,
                       int n_spans, bool decode);
    void (*step_end)(void *ctx);

    /* Residual blocks over the token batch described by spans (rows in x): */
    void (*mamba2)(void *ctx, enum mm_stack stack, int layer, struct mm_act *x,
                   const struct mm_span *spans, int n_spans);
    void (*attention)(void *ctx, enum mm_stack stack, int layer, struct mm_act *x,
                      const struct mm_span *spans, int n_spans);
    void (*mlp)(void *ctx, enum mm_stack stack, int layer, struct mm_act *x, int64_t n);

    /* Final norm + LM head for the given rows; writes n x vocab fp32 to host. */
    void (*logits)(void *ctx, const struct mm_act *x, const int64_t *rows, int n, float *out);

    /* Samples one token for each req (final norm + LM head + the sampler):
     * only the results cross to the host. Per request, in this order:
     *  1. l = logits (fp32) of row req.row of x.
     *  2. logprobs (chosen id and the top p.n_logprobs) = log_softmax(l): the
     *     raw distribution, before penalties and temperature (vLLM's default).
     *  3. penalties from the slot's token counts (see slot_count):
     *     repetition r for every id seen in the prompt or the output:
     *     l = l > 0 ? l / r : l * r; then l -= frequency * out_count +
     *     presence * (out_count > 0).
     *  4. greedy (temperature <= 0 or top_k == 1): the argmax of l, lowest id
     *     on ties.
     *  5. otherwise p = softmax(l / temperature); keep the top_k highest
     *     (ties: lower id first), then the smallest set of highest p whose sum
     *     reaches top_p, then those with p >= min_p * max p; renormalise; draw
     *     u in [0, 1) from Philox4x32-10 (key = seed, counter = {counter,
     *     stream, 0, 0}, u = (first word >> 8) * 2^-24) and choose the kept id
     *     whose cumulative probability, summed in ascending id order, first
     *     exceeds u * total.
     *  6. the chosen id is counted as output in the slot's counts.
     * The CPU backend is the reference; backends agree exactly on greedy and
     * up to float rounding of the cumulative sums otherwise. */
    void (*sample)(void *ctx, const struct mm_act *x, const struct mm_sample_req *reqs, int n,
                   struct mm_sample_out *out);
    /* Counts tokens for a slot's penalties: prompt ids (output=false) mark
     * "seen in the prompt"; output=true adds to the output counts (a resumed
     * sequence re-counts the tokens it had generated). */
    void (*slot_count)(void *ctx, int32_t slot, const int32_t *ids, int64_t n, bool output);

    /* Zeroes a slot's recurrent state and token counts (a new sequence starts from zero). */
    void (*slot_reset)(void *ctx, int32_t slot);
    /* Copies slot src's recurrent state and token counts to slot dst (n > 1,
     * prefix reuse). KV blocks are copied with kv_copy. */
    void (*slot_copy)(void *ctx, int32_t src, int32_t dst);
    /* Bytes of a saved slot (recurrent state and token counts, the backend's
     * own layout and dtype); constant after load. */
    size_t (*slot_bytes)(void *ctx);
    /* Saves a slot into host memory of slot_bytes bytes (the caller's; pinned
     * or not), and restores it. A restore of a save gives back exactly the
     * same state. Synchronous: the host buffer is complete on return. */
    void (*slot_save)(void *ctx, int32_t slot, void *host);
    void (*slot_restore)(void *ctx, int32_t slot, const void *host);
    /* Copies n KV blocks of one stack, src[i] -> dst[i] (copy-on-write, n > 1). */
    void (*kv_copy)(void *ctx, enum mm_stack stack, const int32_t *src, const int32_t *dst,
                    int64_t n);
    /* The state cache (docs/architecture.md "State cache"): zeroes a slot's
     * token counts and keeps its state (a restored snapshot is re-counted
     * as the new request's prompt); bytes of one KV block of a stack (0 for
     * a stack without attention layers); and n blocks of a stack saved to /
     * restored from host memory of n * kv_block_bytes bytes (the caller's),
     * synchronous like slot_save. */
    void (*slot_clear_counts)(void *ctx, int32_t slot);
    size_t (*kv_block_bytes)(void *ctx, enum mm_stack stack);
    void (*kv_save)(void *ctx, enum mm_stack stack, const int32_t *blocks, int64_t n, void *host);
    void (*kv_restore)(void *ctx, enum mm_stack stack, const int32_t *blocks, int64_t n,
                       const void *host);

    /* The first failure of any op since the last call (a failed launch, a
     * device fault, out of memory), naming the cause; MM_OK when all went
     * well. Clears it. The engine calls it once per step and turns a failure
     * into MM_ERR_BACKEND for that step. */
    enum mm_status (*status)(void *ctx, struct mm_err *err);
    /* Copies a slot's recurrent state to host fp32: for every mamba2 layer,
     * embedding stack first, conv [C] then ssm [heads, d, d]. For tests. */
    void (*slot_read)(void *ctx, int32_t slot, float *out);
    /* Optional (NULL: exactly the limits given to load): the limits load
     * allocated, which differ from those given when mem_fraction > 0. */
    void (*limits)(void *ctx, struct mm_backend_limits *out);
};

struct mm_backend {
    const struct mm_backend_ops *ops;
    void *ctx;
};

#endif
