/* prompt.h: the rules a prompt of token ids and image tiles must follow
 * before it reaches mm_engine_forward, shared by `mmmamba generate` and the
 * scheduler: the image-context positions must match the tiles given, and a
 * prompt split into prefill chunks is split only at tile boundaries.
 *
 * Design: an image is a run of img_context_token_id positions, tokens_per_tile
 * per tile (docs/model.md §3.1); the engine embeds whole tiles, so
 * a chunk that would end inside a tile grows to the end of that tile. These
 * are pure functions of the ids and the config. */
#ifndef MM_ENGINE_PROMPT_H
#define MM_ENGINE_PROMPT_H

#include <stdint.h>

#include "base/status.h"
#include "model/config.h"

/* Number of image-context ids in ids[0..n). */
int64_t mm_prompt_image_tokens(const struct mm_config *cfg, const int32_t *ids, int64_t n);

/* Checks that every run of image-context ids is whole tiles and that they
 * add up to exactly n_tiles tiles (tokens_per_tile each); MM_ERR_INVALID
 * naming the counts otherwise. The engine trusts a step's tile buffer to hold what its image
 * runs need: check a prompt with this before prefilling it. */
enum mm_status mm_prompt_check_tiles(const struct mm_config *cfg, const int32_t *ids, int64_t n,
                                     int64_t n_tiles, struct mm_err *err);

/* One prefill chunk: ids[begin..end) holding n_tiles whole tiles. */
struct mm_prompt_chunk {
    int64_t begin, end;
    int64_t n_tiles;
};

/* The chunk of at most max_ids ids that starts at begin (max_ids <= 0: the
 * rest of the prompt), grown to the end of a tile it would split; so a chunk
 * holds at most max_ids + tokens_per_tile - 1 ids. begin < n. */
struct mm_prompt_chunk mm_prompt_next_chunk(const struct mm_config *cfg, const int32_t *ids,
                                            int64_t n, int64_t begin, int64_t max_ids);

#endif
