/* state_cache.c: keys, prefix hashes and the host tier (see state_cache.h).
 *
 * Entries sit on one doubly linked list in recency order (head: most
 * recently used); room is made from the tail, skipping pinned entries.
 * Bytes are counted when an entry is begun, so an entry being filled
 * already counts against the bound. */
#include "serve/state_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Image keys carry the top bit; text keys are ids (< 2^31): never equal. */
#define IMAGE_KEY_BIT (1ull << 63)

static uint64_t fmix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ull;
    x ^= x >> 33;
    return x;
}

uint64_t mm_state_text_key(int32_t id) { return (uint64_t)(uint32_t)id; }

/* 128 bits of a tile's pixels (two independent lanes over its bytes). */
static void tile_digest(const float *tile, int64_t n_floats, uint64_t d[2])
{
    uint64_t a = 0x243F6A8885A308D3ull, b = 0x13198A2E03707344ull;
    const unsigned char *p = (const unsigned char *)tile;
    const size_t bytes = (size_t)n_floats * sizeof(float);
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        a = (a ^ w) * 0x9E3779B97F4A7C15ull;
        a ^= a >> 29;
        b = (b + w) * 0xD6E8FEB86659FD93ull;
        b ^= b >> 31;
    }
    for (; i < bytes; i++) {
        a = (a ^ p[i]) * 0x9E3779B97F4A7C15ull;
        b = (b + p[i]) * 0xD6E8FEB86659FD93ull;
    }
    d[0] = fmix64(a ^ bytes);
    d[1] = fmix64(b + bytes);
}

enum mm_status mm_state_keys(const int32_t *ids, int64_t n_ids, const float *tiles,
                             int64_t n_tiles, int64_t tile_floats, int32_t img_id,
                             int64_t tokens_per_tile, uint64_t **out, struct mm_err *err)
{
    uint64_t *k = malloc((size_t)(n_ids > 0 ? n_ids : 1) * sizeof *k);
    if (!k)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    int64_t tile = -1, off = tokens_per_tile;
    uint64_t d[2] = {0, 0};
    for (int64_t i = 0; i < n_ids; i++) {
        if (ids[i] != img_id || tokens_per_tile < 1) {
            k[i] = mm_state_text_key(ids[i]);
            continue;
        }
        if (off == tokens_per_tile) { /* the next tile starts here */
            if (++tile >= n_tiles || !tiles) {
                free(k);
                return mm_err_set(err, MM_ERR_INVALID, "state keys: more image runs than tiles");
            }
            tile_digest(tiles + tile * tile_floats, tile_floats, d);
            off = 0;
        }
        k[i] = (fmix64(d[0] ^ fmix64(d[1] + (uint64_t)off))) | IMAGE_KEY_BIT;
        off++;
    }
    *out = k;
    return MM_OK;
}

static uint64_t hash_step(uint64_t h, uint64_t key)
{
    return fmix64((h ^ key) * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull);
}

void mm_state_prefix_hashes(const uint64_t *keys, int64_t n, uint64_t *out)
{
    uint64_t h = 0xCBF29CE484222325ull;
    for (int64_t i = 0; i < n; i++)
        out[i] = h = hash_step(h, keys[i]);
}

uint64_t mm_state_hash(const uint64_t *keys, int64_t n)
{
    uint64_t h = 0xCBF29CE484222325ull;
    for (int64_t i = 0; i < n; i++)
        h = hash_step(h, keys[i]);
    return h;
}

/* ---- the host tier ------------------------------------------------------------------ */

struct mm_state_entry {
    struct mm_state_entry *prev, *next; /* recency list (committed entries only) */
    uint64_t layout, hash;
    uint64_t *keys;
    int64_t n, pos, emb_pos;
    size_t bytes; /* counted against the bound: data, keys, this struct */
    int pins;
    bool committed;
    void *data;
};

struct mm_state_cache {
    pthread_mutex_t mu;
    struct mm_state_entry *head, *tail;
    size_t bytes, max_bytes;
    int64_t entries;
    uint64_t inserts, evictions, rejects;
};

enum mm_status mm_state_cache_create(size_t max_bytes, struct mm_state_cache **out,
                                     struct mm_err *err)
{
    if (max_bytes < 1)
        return mm_err_set(err, MM_ERR_INVALID, "state cache: the size must be at least 1 byte");
    struct mm_state_cache *c = calloc(1, sizeof *c);
    if (!c)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&c->mu, NULL);
    c->max_bytes = max_bytes;
    *out = c;
    return MM_OK;
}

static void entry_free(struct mm_state_entry *en)
{
    free(en->keys);
    free(en->data);
    free(en);
}

void mm_state_cache_free(struct mm_state_cache *c)
{
    if (!c)
        return;
    for (struct mm_state_entry *en = c->head, *next; en; en = next) {
        next = en->next;
        entry_free(en);
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void unlink_entry(struct mm_state_cache *c, struct mm_state_entry *en)
{
    if (en->prev)
        en->prev->next = en->next;
    else
        c->head = en->next;
    if (en->next)
        en->next->prev = en->prev;
    else
        c->tail = en->prev;
    en->prev = en->next = NULL;
}

static void push_head(struct mm_state_cache *c, struct mm_state_entry *en)
{
    en->prev = NULL;
    en->next = c->head;
    if (c->head)
        c->head->prev = en;
    else
        c->tail = en;
    c->head = en;
}

static void touch(struct mm_state_cache *c, struct mm_state_entry *en)
{
    unlink_entry(c, en);
    push_head(c, en);
}

static bool same_keys(const struct mm_state_entry *en, uint64_t layout, const uint64_t *keys,
                      int64_t n, uint64_t hash)
{
    return en->layout == layout && en->n == n && en->hash == hash &&
           memcmp(en->keys, keys, (size_t)n * sizeof *keys) == 0;
}

int64_t mm_state_cache_find(struct mm_state_cache *c, uint64_t layout, const uint64_t *keys,
                            const uint64_t *ph, int64_t max_len, struct mm_state_entry **out)
{
    if (out)
        *out = NULL;
    pthread_mutex_lock(&c->mu);
    struct mm_state_entry *best = NULL;
    for (struct mm_state_entry *en = c->head; en; en = en->next)
        if (en->n <= max_len && (!best || en->n > best->n) &&
            same_keys(en, layout, keys, en->n, ph[en->n - 1]))
            best = en;
    const int64_t len = best ? best->n : 0;
    if (best) {
        touch(c, best);
        if (out) {
            best->pins++;
            *out = best;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return len;
}

bool mm_state_cache_has(struct mm_state_cache *c, uint64_t layout, const uint64_t *keys,
                        int64_t n)
{
    const uint64_t h = mm_state_hash(keys, n);
    pthread_mutex_lock(&c->mu);
    struct mm_state_entry *en = c->head;
    while (en && !same_keys(en, layout, keys, n, h))
        en = en->next;
    if (en)
        touch(c, en);
    pthread_mutex_unlock(&c->mu);
    return en != NULL;
}

void mm_state_cache_unpin(struct mm_state_cache *c, struct mm_state_entry *en)
{
    if (!en)
        return;
    pthread_mutex_lock(&c->mu);
    en->pins--;
    pthread_mutex_unlock(&c->mu);
}

const void *mm_state_entry_data(const struct mm_state_entry *en, int64_t *pos, int64_t *emb_pos)
{
    *pos = en->pos;
    *emb_pos = en->emb_pos;
    return en->data;
}

void *mm_state_entry_buffer(struct mm_state_entry *en) { return en->data; }

/* Evicts unpinned entries from the tail until `bytes` more fit; false when
 * they cannot. Under mu. */
static bool make_room(struct mm_state_cache *c, size_t bytes)
{
    if (bytes > c->max_bytes)
        return false;
    struct mm_state_entry *en = c->tail;
    while (c->bytes + bytes > c->max_bytes && en) {
        struct mm_state_entry *prev = en->prev;
        if (en->pins == 0) {
            unlink_entry(c, en);
            c->bytes -= en->bytes;
            c->entries--;
            c->evictions++;
            entry_free(en);
        }
        en = prev;
    }
    return c->bytes + bytes <= c->max_bytes;
}

struct mm_state_entry *mm_state_cache_begin(struct mm_state_cache *c, uint64_t layout,
                                            const uint64_t *keys, int64_t n, int64_t pos,
                                            int64_t emb_pos, size_t data_bytes)
{
    if (n < 1)
        return NULL;
    const uint64_t h = mm_state_hash(keys, n);
    const size_t key_bytes = (size_t)n * sizeof *keys;
    if (data_bytes > SIZE_MAX / 2 || key_bytes > SIZE_MAX / 4)
        return NULL;
    const size_t bytes = data_bytes + key_bytes + sizeof(struct mm_state_entry);
    pthread_mutex_lock(&c->mu);
    struct mm_state_entry *en = c->head;
    while (en && !same_keys(en, layout, keys, n, h))
        en = en->next;
    bool ok = !en;
    if (en)
        touch(c, en);
    if (ok && !(ok = make_room(c, bytes)))
        c->rejects++;
    if (ok)
        c->bytes += bytes; /* counted now: the buffers below are part of the bound */
    pthread_mutex_unlock(&c->mu);
    if (!ok)
        return NULL;
    en = calloc(1, sizeof *en);
    void *data = malloc(data_bytes ? data_bytes : 1);
    uint64_t *k = malloc(key_bytes);
    if (!en || !data || !k) {
        free(en);
        free(data);
        free(k);
        pthread_mutex_lock(&c->mu);
        c->bytes -= bytes;
        c->rejects++;
        pthread_mutex_unlock(&c->mu);
        return NULL;
    }
    memcpy(k, keys, key_bytes);
    *en = (struct mm_state_entry){.layout = layout,
                                  .hash = h,
                                  .keys = k,
                                  .n = n,
                                  .pos = pos,
                                  .emb_pos = emb_pos,
                                  .bytes = bytes,
                                  .data = data};
    return en;
}

void mm_state_cache_commit(struct mm_state_cache *c, struct mm_state_entry *en)
{
    pthread_mutex_lock(&c->mu);
    /* another scheduler may have kept the same keys meanwhile: keep one */
    struct mm_state_entry *dup = c->head;
    while (dup && !same_keys(dup, en->layout, en->keys, en->n, en->hash))
        dup = dup->next;
    if (dup) {
        c->bytes -= en->bytes;
        pthread_mutex_unlock(&c->mu);
        entry_free(en);
        return;
    }
    en->committed = true;
    push_head(c, en);
    c->entries++;
    c->inserts++;
    pthread_mutex_unlock(&c->mu);
}

void mm_state_cache_abort(struct mm_state_cache *c, struct mm_state_entry *en)
{
    if (!en)
        return;
    pthread_mutex_lock(&c->mu);
    c->bytes -= en->bytes;
    pthread_mutex_unlock(&c->mu);
    entry_free(en);
}

void mm_state_cache_stats(struct mm_state_cache *c, struct mm_state_cache_stats *out)
{
    pthread_mutex_lock(&c->mu);
    *out = (struct mm_state_cache_stats){.bytes = c->bytes,
                                         .max_bytes = c->max_bytes,
                                         .entries = c->entries,
                                         .inserts = c->inserts,
                                         .evictions = c->evictions,
                                         .rejects = c->rejects};
    pthread_mutex_unlock(&c->mu);
}
