/* synthetic.h: project-made checkpoints with random weights (docs/model.md §6):
 * the presets, and a writer that produces a complete Hugging Face style
 * directory (config.json, bf16 safetensors, optional shards + index,
 * tokenizer.model and the added-token files).
 *
 * Design: every tensor's values depend only on (seed, tensor name), so a
 * checkpoint is identical whether written as one file or as shards, and a
 * test can regenerate any single tensor. */
#ifndef MM_MODEL_SYNTHETIC_H
#define MM_MODEL_SYNTHETIC_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "model/config.h"

/* Fills cfg with a named preset: tiny-linear, tiny-hybrid, tiny-teacher,
 * linear, hybrid, teacher (full size: 2048/16/8/8192, 8+24 layers). */
enum mm_status mm_synthetic_preset(const char *name, struct mm_config *cfg, struct mm_err *err);

/* Space-separated preset names, for usage messages. */
const char *mm_synthetic_preset_names(void);

struct mm_synthetic_options {
    uint64_t seed;
    int shards; /* 1: model.safetensors; >1: model-0000K-of-0000N + index */
};

/* Writes the checkpoint into dir, which must be new or empty (created if
 * missing; MM_ERR_INVALID naming a file when it is not empty, so no stale
 * index or shard of an earlier checkpoint survives). Every shard holds at
 * least one tensor; more shards than tensors is MM_ERR_INVALID. */
enum mm_status mm_synthetic_write(const char *dir, const struct mm_config *cfg,
                                  const struct mm_synthetic_options *opt, struct mm_err *err);

/* The embedded SentencePiece model shipped with synthetic checkpoints
 * (src/model/synthetic_tokenizer/tokenizer.model); borrowed, static. */
const uint8_t *mm_synthetic_tokenizer(size_t *len);

/* Number of pieces in the embedded tokenizer: synthetic configs put the
 * added tokens right after it. */
#define MM_SYNTHETIC_SPM_PIECES 1024

#endif
