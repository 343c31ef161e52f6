/* kv_pool.h: bookkeeping of the paged KV cache (attention layers only): a
 * fixed number of blocks of MM_KV_BLOCK tokens, and per slot one block table
 * per stack.
 *
 * Design: pure host-side accounting; the backend stores K/V inside blocks
 * and reads the tables handed to it in struct mm_span. A block may sit in
 * several tables (a forked sequence, a state-cache snapshot share their
 * prefix): it carries a reference count and returns to the free list when
 * the last table lets go. A shared block is never written: before a slot
 * writes from position pos, mm_kv_pool_unshare gives it private copies of
 * the shared blocks it would write (copy-on-write; the engine copies the
 * data). Running out of
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
/* Gives back the blocks of (slot, stack) beyond what n_tokens need (a shared
 * block returns to the pool when no other table holds it). */
void mm_kv_pool_truncate(struct mm_kv_pool *p, int32_t slot, int stack, int64_t n_tokens);
/* Makes dst's table of a stack hold src's first blocks for n_tokens tokens
 * (dst's own blocks are let go first), by reference: nothing is copied and
 * no block is taken. */
void mm_kv_pool_share(struct mm_kv_pool *p, int32_t src, int32_t dst, int stack, int64_t n_tokens);
/* Blocks of (slot, stack) from the one holding token pos on that other
 * tables also hold (what a write from pos would have to copy first). */
int64_t mm_kv_pool_shared_from(const struct mm_kv_pool *p, int32_t slot, int stack, int64_t pos);
/* Copy-on-write: replaces each such block in the table by a fresh private
 * one, writing the pairs to from/to (room for the count above; *n pairs)
 * for the caller to copy the data; MM_ERR_LIMIT (nothing changed) when the
 * pool has too few free blocks. */
enum mm_status mm_kv_pool_unshare(struct mm_kv_pool *p, int32_t slot, int stack, int64_t pos,
                                  int32_t *from, int32_t *to, int64_t *n, struct mm_err *err);
/* Tables holding a block (0: free). For tests. */
int32_t mm_kv_pool_refs(const struct mm_kv_pool *p, int32_t block);
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
