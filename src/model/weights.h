/* weights.h: the model's tensors bound by name (docs/model.md §2) and checked
 * against the config.
 *
 * Design: binding is pure bookkeeping: each field borrows a struct mm_tensor
 * (and through it the mmap) from the struct mm_safetensors it was bound
 * from, which must outlive the struct mm_weights. Backends convert/upload
 * from these views once at load. Every expected shape is derived from the
 * config, so a mismatch is reported with the tensor name and both shapes. */
#ifndef MM_MODEL_WEIGHTS_H
#define MM_MODEL_WEIGHTS_H

#include <stdint.h>

#include "base/status.h"
#include "model/config.h"
#include "model/safetensors.h"

/* One layer of either stack. Only the mixer fields of its kind are set. */
struct mm_layer_weights {
    enum mm_layer_kind kind;
    const struct mm_tensor *attention_norm; /* [H] */
    const struct mm_tensor *ffn_norm;       /* [H] */
    const struct mm_tensor *w1;             /* [F, H] gate */
    const struct mm_tensor *w3;             /* [F, H] up */
    const struct mm_tensor *w2;             /* [H, F] down */
    /* mamba2 */
    const struct mm_tensor *wvkqgdt; /* [2*kv*d + 2*heads*d + heads, H]: v,k,q,g,dt rows */
    const struct mm_tensor *conv_w;  /* [C, 1, 2], C = 2*kv*d + heads*d (v,k,q) */
    const struct mm_tensor *conv_b;  /* [C] */
    const struct mm_tensor *dt_bias; /* [heads] */
    const struct mm_tensor *A_log;   /* [heads] (A_log_bias) */
    const struct mm_tensor *gnorm;   /* [d] gated-norm weight, shared by heads */
    const struct mm_tensor *o_proj;  /* [H, heads*d] */
    /* mha */
    const struct mm_tensor *wqkv; /* [(heads + 2*kv)*d, H], per kv head: q.., k, v */
    const struct mm_tensor *wo;   /* [H, heads*d] */
};

struct mm_weights {
    /* vision front end */
    const struct mm_tensor *patch_w;    /* [H, 3, p, p] */
    const struct mm_tensor *patch_b;    /* [H] */
    const struct mm_tensor *pos_emb;    /* [1, g*g + 1, H] (slot 0 unused) */
    const struct mm_tensor *shuffle_w1; /* [H, 4H] pixel_shuffle_proj.0 */
    const struct mm_tensor *shuffle_b1; /* [H] */
    const struct mm_tensor *shuffle_w2; /* [H, H] pixel_shuffle_proj.2 */
    const struct mm_tensor *shuffle_b2; /* [H] */
    /* text */
    const struct mm_tensor *text_emb;    /* [V_e, H] */
    const struct mm_tensor *special_emb; /* [n_special, H] or NULL */
    int64_t pos_grid;                    /* g: side of the stored position grid */
    /* stacks */
    struct mm_layer_weights emb_layers[MM_MAX_LAYERS]; /* [cfg.emb.num_layers] */
    struct mm_layer_weights llm_layers[MM_MAX_LAYERS]; /* [cfg.llm.num_layers] */
    /* head */
    const struct mm_tensor *norm;   /* [H] final RMSNorm */
    const struct mm_tensor *output; /* [V_l, H] LM head */

    int64_t n_params; /* elements over all bound tensors */
    size_t n_bytes;   /* stored bytes over all bound tensors */
};

/* Binds every tensor the forward pass needs. Errors name the tensor and the
 * expected vs found shape or dtype. w borrows from st. */
enum mm_status mm_weights_bind(const struct mm_config *cfg, const struct mm_safetensors *st,
                               struct mm_weights *w, struct mm_err *err);

#endif
