/* kv_pool.c: free-list block allocator and per-slot block tables (see kv_pool.h). */
#include "engine/kv_pool.h"

#include <stdlib.h>

#include "engine/backend.h"

struct mm_kv_pool {
    int64_t n_blocks;
    int32_t *free_list; /* stack of free block ids */
    int64_t n_free;
    int32_t n_slots;
    int n_stacks;
    int64_t max_per_table;
    int32_t *tables; /* [n_slots][n_stacks][max_per_table] */
    int64_t *used;   /* [n_slots][n_stacks] blocks in each table */
};

int64_t mm_kv_blocks_for(int64_t n_tokens) { return (n_tokens + MM_KV_BLOCK - 1) / MM_KV_BLOCK; }

enum mm_status mm_kv_pool_create(int64_t n_blocks, int32_t n_slots, int n_stacks,
                                 int64_t max_blocks_per_table, struct mm_kv_pool **out,
                                 struct mm_err *err)
{
    if (n_blocks < 0 || n_blocks > INT32_MAX || n_slots < 1 || n_stacks < 1 ||
        max_blocks_per_table < 1)
        return mm_err_set(err, MM_ERR_INVALID, "kv pool: bad sizes");
    struct mm_kv_pool *p = calloc(1, sizeof *p);
    if (!p)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    p->n_blocks = n_blocks;
    p->n_slots = n_slots;
    p->n_stacks = n_stacks;
    p->max_per_table = max_blocks_per_table;
    p->free_list = malloc((size_t)(n_blocks ? n_blocks : 1) * sizeof *p->free_list);
    p->tables = malloc((size_t)n_slots * (size_t)n_stacks * (size_t)max_blocks_per_table *
                       sizeof *p->tables);
    p->used = calloc((size_t)n_slots * (size_t)n_stacks, sizeof *p->used);
    if (!p->free_list || !p->tables || !p->used) {
        mm_kv_pool_free(p);
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    }
    for (int64_t i = 0; i < n_blocks; i++)
        p->free_list[i] = (int32_t)(n_blocks - 1 - i); /* hand out low ids first */
    p->n_free = n_blocks;
    *out = p;
    return MM_OK;
}

void mm_kv_pool_free(struct mm_kv_pool *p)
{
    if (!p)
        return;
    free(p->free_list);
    free(p->tables);
    free(p->used);
    free(p);
}

static int32_t *table(const struct mm_kv_pool *p, int32_t slot, int stack)
{
    return p->tables + ((int64_t)slot * p->n_stacks + stack) * p->max_per_table;
}

enum mm_status mm_kv_pool_reserve(struct mm_kv_pool *p, int32_t slot, int stack, int64_t n_tokens,
                                  struct mm_err *err)
{
    int64_t *used = &p->used[(int64_t)slot * p->n_stacks + stack];
    const int64_t need = mm_kv_blocks_for(n_tokens);
    if (need <= *used)
        return MM_OK;
    if (need > p->max_per_table)
        return mm_err_set(err, MM_ERR_LIMIT, "sequence of %lld tokens exceeds the KV limit of %lld",
                          (long long)n_tokens, (long long)(p->max_per_table * MM_KV_BLOCK));
    if (need - *used > p->n_free)
        return mm_err_set(err, MM_ERR_LIMIT, "KV cache full: %lld blocks needed, %lld free",
                          (long long)(need - *used), (long long)p->n_free);
    int32_t *t = table(p, slot, stack);
    while (*used < need)
        t[(*used)++] = p->free_list[--p->n_free];
    return MM_OK;
}

void mm_kv_pool_truncate(struct mm_kv_pool *p, int32_t slot, int stack, int64_t n_tokens)
{
    int64_t *used = &p->used[(int64_t)slot * p->n_stacks + stack];
    const int32_t *t = table(p, slot, stack);
    const int64_t keep = mm_kv_blocks_for(n_tokens);
    while (*used > keep)
        p->free_list[p->n_free++] = t[--(*used)];
}

void mm_kv_pool_release(struct mm_kv_pool *p, int32_t slot)
{
    for (int s = 0; s < p->n_stacks; s++)
        mm_kv_pool_truncate(p, slot, s, 0);
}

const int32_t *mm_kv_pool_table(const struct mm_kv_pool *p, int32_t slot, int stack)
{
    return table(p, slot, stack);
}

int64_t mm_kv_pool_free_blocks(const struct mm_kv_pool *p) { return p->n_free; }

int64_t mm_kv_pool_used(const struct mm_kv_pool *p, int32_t slot, int stack)
{
    return p->used[(int64_t)slot * p->n_stacks + stack];
}
