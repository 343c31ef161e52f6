/* kv_pool.h: bookkeeping of the paged KV cache (attention layers only): a
 * fixed number of blocks of MM_KV_BLOCK tokens, and per slot one block table
 * per stack.
 *
 * Design: pure host-side accounting; the backend stores K/V inside blocks
 * and reads the tables handed to it in struct mm_span. Running out of
 * blocks is an ordinary result (MM_ERR_LIMIT) the scheduler acts on, never a
 * crash. Used by the engine thread only. */
#ifndef MM_ENGINE_KV_POOL_H
#define MM_ENGINE_KV_POOL_H

#include <stdint.h>

#include "base/status.h"

struct mm_kv_pool;

/* max_blocks_per_table bounds one sequence's length per stack. */
enum mm_status mm_kv_pool_create(int64_t n_blocks, int32_t n_slots, int n_stacks,
                                 int64_t max_blocks_per_table, struct mm_kv_pool **out,
                                 struct mm_err *err);
void mm_kv_pool_free(struct mm_kv_pool *p);

/* Grows the table of (slot, stack) to cover n_tokens; MM_ERR_LIMIT when the
 * pool (or the per-table bound) is exhausted, in which case nothing changes. */
enum mm_status mm_kv_pool_reserve(struct mm_kv_pool *p, int32_t slot, int stack, int64_t n_tokens,
                                  struct mm_err *err);
/* Gives back the blocks of (slot, stack) beyond what n_tokens need. */
void mm_kv_pool_truncate(struct mm_kv_pool *p, int32_t slot, int stack, int64_t n_tokens);
/* Returns all blocks of a slot (both stacks) to the pool. */
void mm_kv_pool_release(struct mm_kv_pool *p, int32_t slot);
/* The table (borrowed; valid until the next reserve/release of that slot). */
const int32_t *mm_kv_pool_table(const struct mm_kv_pool *p, int32_t slot, int stack);
int64_t mm_kv_pool_free_blocks(const struct mm_kv_pool *p);
/* Blocks in the table of (slot, stack). */
int64_t mm_kv_pool_used(const struct mm_kv_pool *p, int32_t slot, int stack);
/* Blocks needed for n tokens. */
int64_t mm_kv_blocks_for(int64_t n_tokens);

#endif
