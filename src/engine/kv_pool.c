/* kv_pool.c: free-list block allocator with reference counts, and per-slot
 * block tables (see kv_pool.h). */
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
    int32_t *refs;   /* [n_blocks] tables holding each block; 0: free */
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
    p->refs = calloc((size_t)(n_blocks ? n_blocks : 1), sizeof *p->refs);
    if (!p->free_list || !p->tables || !p->used || !p->refs) {
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
    free(p->refs);
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
    while (*used < need) {
        const int32_t b = p->free_list[--p->n_free];
        p->refs[b] = 1;
        t[(*used)++] = b;
    }
    return MM_OK;
}

/* Drops one table's hold on block b. */
static void unref(struct mm_kv_pool *p, int32_t b)
{
    if (--p->refs[b] == 0)
        p->free_list[p->n_free++] = b;
}

void mm_kv_pool_truncate(struct mm_kv_pool *p, int32_t slot, int stack, int64_t n_tokens)
{
    int64_t *used = &p->used[(int64_t)slot * p->n_stacks + stack];
    const int32_t *t = table(p, slot, stack);
    const int64_t keep = mm_kv_blocks_for(n_tokens);
    while (*used > keep)
        unref(p, t[--(*used)]);
}

void mm_kv_pool_share(struct mm_kv_pool *p, int32_t src, int32_t dst, int stack, int64_t n_tokens)
{
    mm_kv_pool_truncate(p, dst, stack, 0);
    int64_t n = mm_kv_blocks_for(n_tokens);
    const int64_t have = p->used[(int64_t)src * p->n_stacks + stack];
    if (n > have)
        n = have;
    const int32_t *from = table(p, src, stack);
    int32_t *to = table(p, dst, stack);
    for (int64_t i = 0; i < n; i++) {
        to[i] = from[i];
        p->refs[from[i]]++;
    }
    p->used[(int64_t)dst * p->n_stacks + stack] = n;
}

int64_t mm_kv_pool_shared_from(const struct mm_kv_pool *p, int32_t slot, int stack, int64_t pos)
{
    const int64_t used = p->used[(int64_t)slot * p->n_stacks + stack];
    const int32_t *t = table(p, slot, stack);
    int64_t n = 0;
    for (int64_t i = pos / MM_KV_BLOCK; i < used; i++)
        n += p->refs[t[i]] > 1;
    return n;
}

enum mm_status mm_kv_pool_unshare(struct mm_kv_pool *p, int32_t slot, int stack, int64_t pos,
                                  int32_t *from, int32_t *to, int64_t *n, struct mm_err *err)
{
    *n = 0;
    const int64_t need = mm_kv_pool_shared_from(p, slot, stack, pos);
    if (need > p->n_free)
        return mm_err_set(err, MM_ERR_LIMIT, "KV cache full: %lld blocks needed, %lld free",
                          (long long)need, (long long)p->n_free);
    const int64_t used = p->used[(int64_t)slot * p->n_stacks + stack];
    int32_t *t = table(p, slot, stack);
    for (int64_t i = pos / MM_KV_BLOCK; i < used; i++)
        if (p->refs[t[i]] > 1) {
            const int32_t b = p->free_list[--p->n_free];
            p->refs[b] = 1;
            p->refs[t[i]]--;
            from[*n] = t[i];
            to[(*n)++] = b;
            t[i] = b;
        }
    return MM_OK;
}

int32_t mm_kv_pool_refs(const struct mm_kv_pool *p, int32_t block) { return p->refs[block]; }

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
