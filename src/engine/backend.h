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

/* Sizes fixed at start-up (STYLE rule 4: no allocation in the step loop). */
struct mm_backend_limits {
    int32_t n_slots;     /* recurrent-state slots */
    int64_t n_kv_blocks; /* KV blocks (0 when the model has no attention layer) */
    int64_t max_tokens;  /* rows of the largest token batch of either stack */
    int64_t max_tiles;   /* image tiles in one step */
    int64_t max_context; /* longest sequence (positions) an attention layer may see */
    bool state_fp32;     /* keep SSM state in fp32 between steps (else bf16, like the reference) */
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

    /* Residual blocks over the token batch described by spans (rows in x): */
    void (*mamba2)(void *ctx, enum mm_stack stack, int layer, struct mm_act *x,
                   const struct mm_span *spans, int n_spans);
    void (*attention)(void *ctx, enum mm_stack stack, int layer, struct mm_act *x,
                      const struct mm_span *spans, int n_spans);
    void (*mlp)(void *ctx, enum mm_stack stack, int layer, struct mm_act *x, int64_t n);

    /* Final norm + LM head for the given rows; writes n x vocab fp32 to host. */
    void (*logits)(void *ctx, const struct mm_act *x, const int64_t *rows, int n, float *out);

    /* Zeroes a slot's recurrent state (a new sequence starts from zero). */
    void (*slot_reset)(void *ctx, int32_t slot);
    /* Copies a slot's recurrent state to host fp32: for every mamba2 layer,
     * embedding stack first, conv [C] then ssm [heads, d, d]. For tests. */
    void (*slot_read)(void *ctx, int32_t slot, float *out);
};

struct mm_backend {
    const struct mm_backend_ops *ops;
    void *ctx;
};

#endif
