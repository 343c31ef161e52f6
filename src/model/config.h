/* config.h: the typed form of a checkpoint's config.json (docs/model.md §1).
 *
 * Design: every hyper-parameter the forward pass uses is read here and
 * validated once (divisibility, list lengths, supported values), so later
 * layers can trust a struct mm_config without re-checking. Nothing about
 * sizes is hard-coded: tiny and full-size checkpoints parse the same way. */
#ifndef MM_MODEL_CONFIG_H
#define MM_MODEL_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "base/status.h"

enum mm_layer_kind {
    MM_LAYER_MAMBA2 = 0, /* "mamba2": Mamba-2 mixer, recurrent state */
    MM_LAYER_MHA,        /* "mha": softmax attention, KV cache */
};

enum mm_shuffle_loc {
    MM_SHUFFLE_PRE = 0, /* pixel shuffle before the embedding layers */
    MM_SHUFFLE_POST,    /* pixel shuffle after the embedding layers */
};

#define MM_MAX_LAYERS 256
#define MM_MAX_SPECIAL_TOKENS 64

/* One decoder stack: the 8 holistic-embedding layers or the 24 LLM layers. */
struct mm_stack_config {
    int64_t num_layers;
    int64_t hidden;       /* H */
    int64_t heads;        /* query heads (and Mamba-2 heads) */
    int64_t kv_heads;     /* key/value heads (GQA); heads % kv_heads == 0 */
    int64_t head_dim;     /* d = hidden / heads */
    int64_t intermediate; /* F, MLP width */
    double rms_norm_eps;
    double rope_theta;
    enum mm_layer_kind kinds[MM_MAX_LAYERS]; /* [num_layers], from layers_block_type */
};

struct mm_special_token {
    char name[32];
    int64_t id;
};

struct mm_config {
    /* top level: image pre-processing and chat wrapper */
    int64_t force_image_size; /* tile side in pixels (448) */
    double downsample_ratio;  /* 0.5: 2x2 pixel shuffle */
    char template_name[64];   /* "internlm2-chat" */
    bool normalize_encoder_output;
    bool use_thumbnail;
    int64_t min_dynamic_patch;
    int64_t max_dynamic_patch;
    bool dynamic_image_size;

    /* embedding_config */
    struct mm_stack_config emb;
    int64_t patch_size;     /* 14 */
    int64_t image_size;     /* position-embedding grid = image_size / patch_size */
    int64_t num_channels;   /* 3 */
    int64_t llm_vocab_size; /* V_e: rows of llm_text_embeddings */
    int64_t img_context_token_id;
    enum mm_shuffle_loc shuffle_loc;
    bool use_pixel_shuffle_proj;
    int n_special;
    struct mm_special_token special[MM_MAX_SPECIAL_TOKENS]; /* special_token_maps */

    /* llm_config */
    struct mm_stack_config llm;
    int64_t vocab_size; /* V_l: rows of the LM head */

    /* derived */
    int64_t patches_per_side; /* force_image_size / patch_size (32) */
    int64_t tokens_per_tile;  /* patches_per_side^2 * downsample_ratio^2 (256) */
};

/* Parses and validates a config.json tree. On failure the message names the
 * key (e.g. "config.json: llm_config: key \"hidden_size\" must be an integer"). */
enum mm_status mm_config_from_json(const cJSON *root, struct mm_config *cfg, struct mm_err *err);

/* Reads DIR/config.json. */
enum mm_status mm_config_load(const char *dir, struct mm_config *cfg, struct mm_err *err);

/* Serialises cfg to a new cJSON tree in the Hugging Face layout (used by
 * mkmodel). Caller owns the result (cJSON_Delete). NULL on allocation failure. */
cJSON *mm_config_to_json(const struct mm_config *cfg);

/* "mamba2" / "mha". */
const char *mm_layer_kind_name(enum mm_layer_kind k);

/* Counts layers of a kind over both stacks. */
int64_t mm_config_count_layers(const struct mm_config *cfg, enum mm_layer_kind k);

/* Per-sequence recurrent state in elements (conv + SSM of every mamba2 layer
 * of both stacks) and KV elements per token (every mha layer of both stacks). */
int64_t mm_config_state_elems(const struct mm_config *cfg);
int64_t mm_config_kv_elems_per_token(const struct mm_config *cfg);

#endif
