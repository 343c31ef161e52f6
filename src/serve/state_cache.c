/* state_cache.c: keys, prefix hashes, the host tier and the optional disk
 * tier (see state_cache.h).
 *
 * Entries sit on one doubly linked list in recency order (head: most
 * recently used); room is made from the tail, skipping pinned entries.
 * Bytes are counted when an entry is begun, so an entry being filled
 * already counts against the bound. With a disk tier, the entries room is
 * made from move to a write queue (a second list, still searched by
 * lookups) that the writer thread empties into files without the mutex
 * (file I/O never holds up a step loop or another engine's lookup); the disk
 * tier's index (layout, key hash, length per file) lives in memory, so a
 * lookup's hint costs no I/O, and a hit reads the file back into a new
 * host entry (promotion), verifying everything before it is used. */
#include "serve/state_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "model/image_preprocess.h"

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

/* The tile digest's two lanes over len more bytes: whole 8-byte words, then
 * single bytes (so a sequence of calls equals one call over their
 * concatenation while every call but the last is whole words). */
static void digest_bytes(uint64_t lane[2], const unsigned char *p, size_t len)
{
    uint64_t a = lane[0], b = lane[1];
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        a = (a ^ w) * 0x9E3779B97F4A7C15ull;
        a ^= a >> 29;
        b = (b + w) * 0xD6E8FEB86659FD93ull;
        b ^= b >> 31;
    }
    for (; i < len; i++) {
        a = (a ^ p[i]) * 0x9E3779B97F4A7C15ull;
        b = (b + p[i]) * 0xD6E8FEB86659FD93ull;
    }
    lane[0] = a;
    lane[1] = b;
}

static const uint64_t digest_seed[2] = {0x243F6A8885A308D3ull, 0x13198A2E03707344ull};

static void digest_end(const uint64_t lane[2], size_t bytes, uint64_t d[2])
{
    d[0] = fmix64(lane[0] ^ bytes);
    d[1] = fmix64(lane[1] + bytes);
}

/* 128 bits of a tile's pixels (two independent lanes over its bytes). */
void mm_state_tile_digest(const float *tile, int64_t n_floats, uint64_t d[2])
{
    uint64_t lane[2] = {digest_seed[0], digest_seed[1]};
    const size_t bytes = (size_t)n_floats * sizeof(float);
    digest_bytes(lane, (const unsigned char *)tile, bytes);
    digest_end(lane, bytes, d);
}

void mm_state_tile_digest_pixels(const uint8_t *pixels, int64_t n_values, uint64_t d[2])
{
    /* the very bytes mm_state_tile_digest reads from the normalised tile,
     * made a block at a time (blocks of whole 8-byte words) */
    float lut[3][256], block[1024];
    mm_image_norm_lut(lut);
    uint64_t lane[2] = {digest_seed[0], digest_seed[1]};
    const size_t n = (size_t)n_values, plane = n / 3, bytes = n * sizeof(float);
    size_t c = 0, next = plane; /* the channel of value at, where the next one starts */
    for (size_t at = 0; at < n; at += 1024) {
        const size_t m = n - at < 1024 ? n - at : 1024;
        for (size_t i = 0; i < m;) { /* runs of one channel */
            if (at + i >= next && c < 2) {
                c++;
                next += plane;
                continue;
            }
            const size_t run = c < 2 && next - (at + i) < m - i ? next - (at + i) : m - i;
            const float *l = lut[c];
            const uint8_t *src = pixels + at + i;
            for (size_t k = 0; k < run; k++)
                block[i + k] = l[src[k]];
            i += run;
        }
        digest_bytes(lane, (const unsigned char *)block, m * sizeof(float));
    }
    digest_end(lane, bytes, d);
}

enum mm_status mm_state_keys(const int32_t *ids, int64_t n_ids, const float *tiles, int64_t n_tiles,
                             int64_t tile_floats, int32_t img_id, int64_t tokens_per_tile,
                             uint64_t **out, struct mm_err *err)
{
    return mm_state_keys_digested(ids, n_ids, tiles, NULL, NULL, n_tiles, tile_floats, img_id,
                                  tokens_per_tile, out, err);
}

enum mm_status mm_state_keys_digested(const int32_t *ids, int64_t n_ids, const float *tiles,
                                      const uint8_t *pixels, const uint64_t *digests,
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
            if (++tile >= n_tiles || (!tiles && !pixels && !digests)) {
                free(k);
                return mm_err_set(err, MM_ERR_INVALID, "state keys: more image runs than tiles");
            }
            if (digests) {
                d[0] = digests[2 * tile];
                d[1] = digests[2 * tile + 1];
            } else if (pixels) {
                mm_state_tile_digest_pixels(pixels + tile * tile_floats, tile_floats, d);
            } else {
                mm_state_tile_digest(tiles + tile * tile_floats, tile_floats, d);
            }
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
    bool queued;  /* on the write queue (evicted, waiting for the writer) */
    bool retired; /* written and off every list while pinned: the last unpin frees it */
    void *data;
};

/* One file of the disk tier (its name follows from layout and hash). */
struct disk_rec {
    struct disk_rec *prev, *next; /* recency list */
    uint64_t layout, hash;
    int64_t n;
    size_t bytes; /* the file's size */
    int busy;     /* being read back: not removed meanwhile */
};

struct mm_state_cache {
    pthread_mutex_t mu;
    struct mm_state_entry *head, *tail;
    size_t bytes, max_bytes;
    int64_t entries;
    uint64_t inserts, evictions, rejects;
    /* the disk tier (dir NULL: none) */
    char *dir;
    uint64_t model;
    struct disk_rec *dhead, *dtail;
    size_t dbytes, dmax_bytes;
    int64_t dentries;
    uint64_t dwrites, dreads, devictions, dbad;
    uint64_t tmp_ctr;
    /* the write queue (through prev/next: head newest, tail next to write)
     * and its writer thread */
    struct mm_state_entry *qhead, *qtail;
    size_t qbytes, qmax_bytes;
    int64_t qentries;
    pthread_cond_t qwork, qdone; /* an entry queued or stop; an entry written */
    pthread_t writer;
    bool writer_on, writer_stop;
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
    pthread_cond_init(&c->qwork, NULL);
    pthread_cond_init(&c->qdone, NULL);
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

static void disk_spill(struct mm_state_cache *c, struct mm_state_entry *victims);

void mm_state_cache_free(struct mm_state_cache *c)
{
    if (!c)
        return;
    if (c->writer_on) { /* it writes everything queued, then ends */
        pthread_mutex_lock(&c->mu);
        c->writer_stop = true;
        pthread_cond_signal(&c->qwork);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->writer, NULL);
        c->writer_on = false;
    }
    if (c->dir) { /* what host RAM holds goes to disk, oldest first (newest survive the bound) */
        struct mm_state_entry *list = NULL;
        for (struct mm_state_entry *en = c->head, *next; en; en = next) {
            next = en->next;
            en->next = list;
            list = en;
        }
        c->head = c->tail = NULL;
        disk_spill(c, list);
    }
    for (struct mm_state_entry *en = c->head, *next; en; en = next) {
        next = en->next;
        entry_free(en);
    }
    for (struct disk_rec *r = c->dhead, *next; r; r = next) {
        next = r->next;
        free(r);
    }
    free(c->dir);
    pthread_cond_destroy(&c->qwork);
    pthread_cond_destroy(&c->qdone);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void list_unlink(struct mm_state_entry **head, struct mm_state_entry **tail,
                        struct mm_state_entry *en)
{
    if (en->prev)
        en->prev->next = en->next;
    else
        *head = en->next;
    if (en->next)
        en->next->prev = en->prev;
    else
        *tail = en->prev;
    en->prev = en->next = NULL;
}

static void list_push_head(struct mm_state_entry **head, struct mm_state_entry **tail,
                           struct mm_state_entry *en)
{
    en->prev = NULL;
    en->next = *head;
    if (*head)
        (*head)->prev = en;
    else
        *tail = en;
    *head = en;
}

static void unlink_entry(struct mm_state_cache *c, struct mm_state_entry *en)
{
    list_unlink(&c->head, &c->tail, en);
}

static void push_head(struct mm_state_cache *c, struct mm_state_entry *en)
{
    list_push_head(&c->head, &c->tail, en);
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

/* The longest entry of this layout in host RAM (committed, or on the write
 * queue: not yet on disk) that begins keys and is at most max_len long, or
 * NULL. Under mu. */
static struct mm_state_entry *host_best(struct mm_state_cache *c, uint64_t layout,
                                        const uint64_t *keys, const uint64_t *ph, int64_t max_len)
{
    struct mm_state_entry *best = NULL;
    for (int q = 0; q < 2; q++)
        for (struct mm_state_entry *en = q ? c->qhead : c->head; en; en = en->next)
            if (en->n <= max_len && (!best || en->n > best->n) &&
                same_keys(en, layout, keys, en->n, ph[en->n - 1]))
                best = en;
    return best;
}

/* A found entry counts as used: a committed one moves to the head; a
 * queued one stays where it is (the writer has it). Under mu. */
static void touch_found(struct mm_state_cache *c, struct mm_state_entry *en)
{
    if (!en->queued)
        touch(c, en);
}

/* The longest file of this layout whose key hash is that of a prefix of at
 * most max_len keys and longer than `than` (its keys are compared once it
 * is read). Under mu. */
static struct disk_rec *disk_best(struct mm_state_cache *c, uint64_t layout, const uint64_t *ph,
                                  int64_t max_len, int64_t than)
{
    struct disk_rec *best = NULL;
    for (struct disk_rec *r = c->dhead; r; r = r->next)
        if (r->layout == layout && r->n <= max_len && r->n > than && (!best || r->n > best->n) &&
            r->hash == ph[r->n - 1])
            best = r;
    return best;
}

enum disk_load { LOAD_OK, LOAD_BAD, LOAD_SKIP };
static enum disk_load disk_load(struct mm_state_cache *c, const struct disk_rec *r,
                                const uint64_t *keys, struct mm_state_entry **out);
static void disk_drop(struct mm_state_cache *c, struct disk_rec *r);
static void disk_touch(struct mm_state_cache *c, struct disk_rec *r);
static struct mm_state_entry *commit_locked(struct mm_state_cache *c, struct mm_state_entry *en);

int64_t mm_state_cache_find(struct mm_state_cache *c, uint64_t layout, const uint64_t *keys,
                            const uint64_t *ph, int64_t max_len, struct mm_state_entry **out)
{
    if (out)
        *out = NULL;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        struct mm_state_entry *best = host_best(c, layout, keys, ph, max_len);
        const int64_t len = best ? best->n : 0;
        struct disk_rec *r = c->dir ? disk_best(c, layout, ph, max_len, len) : NULL;
        if (r && !out) { /* a hint: no I/O */
            const int64_t n = r->n;
            pthread_mutex_unlock(&c->mu);
            return n;
        }
        if (!r) {
            if (best) {
                touch_found(c, best);
                if (out) {
                    best->pins++;
                    *out = best;
                }
            }
            pthread_mutex_unlock(&c->mu);
            return len;
        }
        /* the disk has a longer one: read it back into host RAM (promotion) */
        r->busy++;
        pthread_mutex_unlock(&c->mu);
        struct mm_state_entry *en = NULL;
        const enum disk_load ld = disk_load(c, r, keys, &en);
        pthread_mutex_lock(&c->mu);
        r->busy--;
        if (ld == LOAD_OK) {
            en = commit_locked(c, en);
            en->pins++;
            *out = en;
            disk_touch(c, r);
            c->dreads++;
            pthread_mutex_unlock(&c->mu);
            return en->n;
        }
        if (ld == LOAD_BAD) { /* never trusted, and gone: look again */
            disk_drop(c, r);
            c->dbad++;
            pthread_mutex_unlock(&c->mu);
            continue;
        }
        /* no room in host RAM, or another stream with the same hash: the host's best */
        if (best && (best = host_best(c, layout, keys, ph, max_len)) != NULL) {
            touch_found(c, best);
            best->pins++;
            *out = best;
        }
        pthread_mutex_unlock(&c->mu);
        return best ? best->n : 0;
    }
}
bool mm_state_cache_has(struct mm_state_cache *c, uint64_t layout, const uint64_t *keys, int64_t n)
{
    const uint64_t h = mm_state_hash(keys, n);
    pthread_mutex_lock(&c->mu);
    struct mm_state_entry *en = c->head;
    while (en && !same_keys(en, layout, keys, n, h))
        en = en->next;
    if (en) {
        touch(c, en);
    } else { /* on its way to disk: kept too */
        en = c->qhead;
        while (en && !same_keys(en, layout, keys, n, h))
            en = en->next;
    }
    pthread_mutex_unlock(&c->mu);
    return en != NULL;
}

void mm_state_cache_unpin(struct mm_state_cache *c, struct mm_state_entry *en)
{
    if (!en)
        return;
    pthread_mutex_lock(&c->mu);
    const bool last = --en->pins == 0 && en->retired;
    pthread_mutex_unlock(&c->mu);
    if (last)
        entry_free(en);
}

const void *mm_state_entry_data(const struct mm_state_entry *en, int64_t *pos, int64_t *emb_pos)
{
    *pos = en->pos;
    *emb_pos = en->emb_pos;
    return en->data;
}

void *mm_state_entry_buffer(struct mm_state_entry *en) { return en->data; }

/* What the LRU list may hold: the whole bound, or with a disk tier the
 * bound less the write queue's share, so that entries waiting to be written
 * and entries kept together stay within state_cache_bytes. Under mu. */
static size_t host_limit(const struct mm_state_cache *c)
{
    return c->writer_on && c->qmax_bytes < c->max_bytes ? c->max_bytes - c->qmax_bytes
                                                        : c->max_bytes;
}

/* Evicts unpinned entries from the tail until `bytes` more fit; false when
 * they cannot. With a disk tier an evicted entry goes on the write queue
 * (still findable) for the writer thread; when the queue is full this
 * waits for the writer to make room (mu released meanwhile: the list is
 * walked again). Else it is freed. Under mu. */
static bool make_room(struct mm_state_cache *c, size_t bytes)
{
    const size_t limit = host_limit(c);
    if (bytes > limit)
        return false;
    struct mm_state_entry *en = c->tail;
    while (c->bytes + bytes > limit && en) {
        struct mm_state_entry *prev = en->prev;
        if (en->pins == 0 && c->writer_on && c->qhead && c->qbytes + en->bytes > c->qmax_bytes) {
            pthread_cond_wait(&c->qdone, &c->mu); /* the queue is full: the writer makes room */
            en = c->tail;
            continue;
        }
        if (en->pins == 0) {
            unlink_entry(c, en);
            c->bytes -= en->bytes;
            c->entries--;
            c->evictions++;
            if (c->writer_on) {
                en->queued = true;
                list_push_head(&c->qhead, &c->qtail, en);
                c->qbytes += en->bytes;
                c->qentries++;
                pthread_cond_signal(&c->qwork);
            } else {
                entry_free(en);
            }
        }
        en = prev;
    }
    return c->bytes + bytes <= limit;
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

/* Files en unless the same keys were kept meanwhile (by another scheduler,
 * or read back from disk): then en is freed. Returns the entry kept. Under mu. */
static struct mm_state_entry *commit_locked(struct mm_state_cache *c, struct mm_state_entry *en)
{
    struct mm_state_entry *dup = c->head;
    while (dup && !same_keys(dup, en->layout, en->keys, en->n, en->hash))
        dup = dup->next;
    if (dup) {
        c->bytes -= en->bytes;
        entry_free(en);
        return dup;
    }
    en->committed = true;
    push_head(c, en);
    c->entries++;
    c->inserts++;
    return en;
}

void mm_state_cache_commit(struct mm_state_cache *c, struct mm_state_entry *en)
{
    pthread_mutex_lock(&c->mu);
    commit_locked(c, en);
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
                                         .rejects = c->rejects,
                                         .disk = c->dir != NULL,
                                         .disk_bytes = c->dbytes,
                                         .disk_max_bytes = c->dmax_bytes,
                                         .disk_entries = c->dentries,
                                         .disk_writes = c->dwrites,
                                         .disk_hits = c->dreads,
                                         .disk_evictions = c->devictions,
                                         .disk_bad = c->dbad,
                                         .disk_queued = c->qentries,
                                         .disk_queued_bytes = c->qbytes,
                                         .disk_queue_max_bytes = c->qmax_bytes};
    pthread_mutex_unlock(&c->mu);
}

/* ---- the disk tier -------------------------------------------------------------------- */

/* A file: a header of H_WORDS 64-bit words (native byte order), the n keys,
 * then the saved bytes. The header names the format version and the model
 * (the daemon's identity of its checkpoint), and carries a digest of keys
 * and bytes and one of itself: a file of another model or format, cut
 * short or damaged is never used. Files are written under a temporary name
 * and renamed, so a reader (or a restart after a crash) never sees half of
 * one. */
enum {
    H_MAGIC,
    H_VERSION,
    H_MODEL,
    H_LAYOUT,
    H_HASH, /* mm_state_hash of the keys */
    H_N,
    H_POS,
    H_EMB_POS,
    H_DATA_BYTES,
    H_DIGEST, /* of the keys, then the data */
    H_CHECK,  /* of the words above */
    H_WORDS
};
#define FILE_MAGIC 0x0a45544154534d4dull /* "MMSTATE\n" */
#define FILE_VERSION 1
#define FILE_SUFFIX ".state"
#define TMP_PREFIX ".tmp-"

static uint64_t digest(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
    }
    for (; i < n; i++)
        h = (h ^ b[i]) * 0x9E3779B97F4A7C15ull;
    return fmix64(h ^ n);
}

static uint64_t header_check(const uint64_t *h) { return digest(0x5354415445ull, h, H_CHECK * 8); }

static void file_path(const struct mm_state_cache *c, uint64_t layout, uint64_t hash, char *out,
                      size_t size)
{
    snprintf(out, size, "%s/%016" PRIx64 "-%016" PRIx64 FILE_SUFFIX, c->dir, layout, hash);
}

static size_t file_bytes(int64_t n, size_t data_bytes)
{
    return H_WORDS * 8 + (size_t)n * 8 + data_bytes;
}

static bool write_all(int fd, const void *p, size_t n)
{
    const char *b = p;
    while (n > 0) {
        const ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        b += w;
        n -= (size_t)w;
    }
    return true;
}

static bool read_all(int fd, void *p, size_t n)
{
    char *b = p;
    while (n > 0) {
        const ssize_t r = read(fd, b, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        b += r;
        n -= (size_t)r;
    }
    return true;
}

static void disk_unlink_rec(struct mm_state_cache *c, struct disk_rec *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        c->dhead = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        c->dtail = r->prev;
    r->prev = r->next = NULL;
}

static void disk_push_head(struct mm_state_cache *c, struct disk_rec *r)
{
    r->prev = NULL;
    r->next = c->dhead;
    if (c->dhead)
        c->dhead->prev = r;
    else
        c->dtail = r;
    c->dhead = r;
}

static void disk_touch(struct mm_state_cache *c, struct disk_rec *r)
{
    disk_unlink_rec(c, r);
    disk_push_head(c, r);
}

/* Removes a file and its record (a damaged file too). Under mu; r not busy. */
static void disk_drop(struct mm_state_cache *c, struct disk_rec *r)
{
    char path[4200];
    file_path(c, r->layout, r->hash, path, sizeof path);
    if (unlink(path) != 0 && errno != ENOENT)
        MM_WARN("state cache: removing %s: %s", path, strerror(errno));
    disk_unlink_rec(c, r);
    c->dbytes -= r->bytes;
    c->dentries--;
    free(r);
}

/* Removes the oldest files that nobody is reading until the bound holds. Under mu. */
static void disk_trim(struct mm_state_cache *c)
{
    for (struct disk_rec *r = c->dtail, *prev; r && c->dbytes > c->dmax_bytes; r = prev) {
        prev = r->prev;
        if (r->busy == 0) {
            disk_drop(c, r);
            c->devictions++;
        }
    }
}

static struct disk_rec *disk_find(struct mm_state_cache *c, uint64_t layout, uint64_t hash,
                                  int64_t n)
{
    struct disk_rec *r = c->dhead;
    while (r && !(r->layout == layout && r->hash == hash && r->n == n))
        r = r->next;
    return r;
}

/* Writes one entry to a file (temporary name, then rename). */
static bool disk_write(struct mm_state_cache *c, const struct mm_state_entry *en)
{
    uint64_t h[H_WORDS] = {0};
    h[H_MAGIC] = FILE_MAGIC;
    h[H_VERSION] = FILE_VERSION;
    h[H_MODEL] = c->model;
    h[H_LAYOUT] = en->layout;
    h[H_HASH] = en->hash;
    h[H_N] = (uint64_t)en->n;
    h[H_POS] = (uint64_t)en->pos;
    h[H_EMB_POS] = (uint64_t)en->emb_pos;
    const size_t data_bytes = en->bytes - (size_t)en->n * 8 - sizeof *en;
    h[H_DATA_BYTES] = data_bytes;
    h[H_DIGEST] = digest(digest(0, en->keys, (size_t)en->n * 8), en->data, data_bytes);
    h[H_CHECK] = header_check(h);
    char tmp[4200], path[4200];
    snprintf(tmp, sizeof tmp, "%s/" TMP_PREFIX "%ld-%" PRIu64, c->dir, (long)getpid(),
             __atomic_fetch_add(&c->tmp_ctr, 1, __ATOMIC_RELAXED));
    file_path(c, en->layout, en->hash, path, sizeof path);
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && write_all(fd, h, sizeof h) && write_all(fd, en->keys, (size_t)en->n * 8) &&
              write_all(fd, en->data, data_bytes) && fdatasync(fd) == 0;
    if (fd >= 0 && close(fd) != 0)
        ok = false;
    if (ok && rename(tmp, path) != 0)
        ok = false;
    if (!ok) {
        MM_WARN("state cache: writing %s: %s", path, strerror(errno));
        if (fd >= 0)
            unlink(tmp);
    }
    return ok;
}

/* Writes one entry (out of the host list, nobody else frees it meanwhile)
 * to disk unless a file of the same keys is there, and files its record.
 * Not under mu. */
static void disk_store(struct mm_state_cache *c, const struct mm_state_entry *en)
{
    const size_t data_bytes = en->bytes - (size_t)en->n * 8 - sizeof *en;
    const size_t fb = file_bytes(en->n, data_bytes);
    pthread_mutex_lock(&c->mu);
    struct disk_rec *have = disk_find(c, en->layout, en->hash, en->n);
    if (have)
        disk_touch(c, have);
    pthread_mutex_unlock(&c->mu);
    if (have || fb > c->dmax_bytes || !disk_write(c, en))
        return;
    struct disk_rec *r = calloc(1, sizeof *r);
    pthread_mutex_lock(&c->mu);
    if (r && !disk_find(c, en->layout, en->hash, en->n)) {
        *r = (struct disk_rec){.layout = en->layout, .hash = en->hash, .n = en->n, .bytes = fb};
        disk_push_head(c, r);
        c->dbytes += fb;
        c->dentries++;
        c->dwrites++;
        r = NULL;
        disk_trim(c);
    }
    pthread_mutex_unlock(&c->mu);
    free(r);
}

/* Writes the entries (a list through `next`, already out of host RAM) to
 * disk, then frees them (at free, once the writer has ended). Not under mu. */
static void disk_spill(struct mm_state_cache *c, struct mm_state_entry *victims)
{
    for (struct mm_state_entry *en = victims, *next; en; en = next) {
        next = en->next;
        disk_store(c, en);
        entry_free(en);
    }
}

/* The writer thread: writes the queue's oldest entry while it stays on the
 * queue (findable in RAM until its file is recorded), then takes it off
 * and frees it, or leaves it to the last unpin of a reader holding it.
 * Ends when stopped with the queue empty. */
static void *disk_writer(void *arg)
{
    struct mm_state_cache *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->qtail && !c->writer_stop)
            pthread_cond_wait(&c->qwork, &c->mu);
        struct mm_state_entry *en = c->qtail;
        if (!en)
            break;
        pthread_mutex_unlock(&c->mu);
        disk_store(c, en);
        pthread_mutex_lock(&c->mu);
        list_unlink(&c->qhead, &c->qtail, en);
        c->qbytes -= en->bytes;
        c->qentries--;
        en->queued = false;
        en->retired = en->pins > 0;
        pthread_cond_broadcast(&c->qdone);
        if (!en->retired) {
            pthread_mutex_unlock(&c->mu);
            entry_free(en);
            pthread_mutex_lock(&c->mu);
        }
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

void mm_state_cache_flush(struct mm_state_cache *c)
{
    pthread_mutex_lock(&c->mu);
    while (c->qhead)
        pthread_cond_wait(&c->qdone, &c->mu);
    pthread_mutex_unlock(&c->mu);
}

/* Reads and checks a file's header. */
static bool read_header(int fd, uint64_t h[H_WORDS], size_t file_size)
{
    return read_all(fd, h, H_WORDS * 8) && h[H_MAGIC] == FILE_MAGIC &&
           h[H_VERSION] == FILE_VERSION && h[H_CHECK] == header_check(h) && h[H_N] >= 1 &&
           h[H_N] <= (uint64_t)1 << 40 && h[H_DATA_BYTES] <= SIZE_MAX / 4 &&
           file_size == file_bytes((int64_t)h[H_N], (size_t)h[H_DATA_BYTES]);
}

/* Reads file r back into a new host entry (not committed) if it is sound
 * and holds keys[0..r->n). LOAD_BAD: damaged (the caller removes it);
 * LOAD_SKIP: sound but not usable now (no room, other keys). Not under mu;
 * r is busy. */
static enum disk_load disk_load(struct mm_state_cache *c, const struct disk_rec *r,
                                const uint64_t *keys, struct mm_state_entry **out)
{
    char path[4200];
    file_path(c, r->layout, r->hash, path, sizeof path);
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    uint64_t h[H_WORDS];
    if (fd < 0 || fstat(fd, &sb) != 0 || !read_header(fd, h, (size_t)sb.st_size) ||
        h[H_MODEL] != c->model || h[H_LAYOUT] != r->layout || h[H_HASH] != r->hash ||
        (int64_t)h[H_N] != r->n) {
        MM_WARN("state cache: %s is damaged or not this model's; ignored and removed", path);
        if (fd >= 0)
            close(fd);
        return LOAD_BAD;
    }
    const size_t data_bytes = (size_t)h[H_DATA_BYTES];
    struct mm_state_entry *en = mm_state_cache_begin(c, r->layout, keys, r->n, (int64_t)h[H_POS],
                                                     (int64_t)h[H_EMB_POS], data_bytes);
    if (!en) {
        close(fd);
        return LOAD_SKIP;
    }
    uint64_t *fk = malloc((size_t)r->n * 8);
    enum disk_load ld = LOAD_BAD;
    if (!fk) {
        ld = LOAD_SKIP;
    } else if (read_all(fd, fk, (size_t)r->n * 8) && read_all(fd, en->data, data_bytes) &&
               digest(digest(0, fk, (size_t)r->n * 8), en->data, data_bytes) == h[H_DIGEST] &&
               mm_state_hash(fk, r->n) == r->hash) {
        ld = memcmp(fk, keys, (size_t)r->n * 8) == 0 ? LOAD_OK : LOAD_SKIP;
    }
    close(fd);
    free(fk);
    if (ld == LOAD_BAD)
        MM_WARN("state cache: %s is damaged; ignored and removed", path);
    if (ld != LOAD_OK) {
        mm_state_cache_abort(c, en);
        return ld;
    }
    *out = en;
    return LOAD_OK;
}

struct found {
    struct disk_rec *r;
    int64_t mtime;
};

static int by_mtime(const void *a, const void *b)
{
    const int64_t x = ((const struct found *)a)->mtime, y = ((const struct found *)b)->mtime;
    return x < y ? -1 : x > y;
}

/* Checks one file found at start; a record for it, or NULL (a damaged one
 * is removed; another model's is left alone and counted in *foreign). */
static struct disk_rec *disk_scan_one(struct mm_state_cache *c, const char *name, int *foreign,
                                      int64_t *mtime)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", c->dir, name);
    uint64_t layout, hash;
    char tail[16];
    if (strlen(name) != 33 + strlen(FILE_SUFFIX) ||
        sscanf(name, "%16" SCNx64 "-%16" SCNx64 "%15s", &layout, &hash, tail) != 3 ||
        strcmp(tail, FILE_SUFFIX) != 0)
        return NULL; /* not ours */
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    uint64_t h[H_WORDS];
    uint64_t *k = NULL;
    bool ok = fd >= 0 && fstat(fd, &sb) == 0 && read_header(fd, h, (size_t)sb.st_size);
    if (ok && h[H_MODEL] != c->model) {
        (*foreign)++;
        close(fd);
        return NULL;
    }
    ok = ok && h[H_LAYOUT] == layout && h[H_HASH] == hash &&
         (k = malloc((size_t)h[H_N] * 8)) != NULL && read_all(fd, k, (size_t)h[H_N] * 8) &&
         mm_state_hash(k, (int64_t)h[H_N]) == hash;
    free(k);
    if (fd >= 0)
        close(fd);
    struct disk_rec *r = ok ? calloc(1, sizeof *r) : NULL;
    if (!r) {
        MM_WARN("state cache: %s is damaged; ignored and removed", path);
        unlink(path);
        c->dbad++;
        return NULL;
    }
    *r = (struct disk_rec){
        .layout = layout, .hash = hash, .n = (int64_t)h[H_N], .bytes = (size_t)sb.st_size};
    *mtime = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
    return r;
}

enum mm_status mm_state_cache_open_disk(struct mm_state_cache *c, const char *dir, size_t max_bytes,
                                        uint64_t model, struct mm_err *err)
{
    if (c->dir)
        return mm_err_set(err, MM_ERR_INVALID, "state cache: the disk tier is open already");
    if (!dir[0] || strlen(dir) > 4000 || max_bytes < 1)
        return mm_err_set(err, MM_ERR_INVALID,
                          "state_cache_dir: a directory (at most 4000 bytes) and a size >= 1");
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return mm_err_set(err, MM_ERR_IO, "state_cache_dir %s: %s", dir, strerror(errno));
    DIR *dp = opendir(dir);
    if (!dp)
        return mm_err_set(err, MM_ERR_IO, "state_cache_dir %s: %s", dir, strerror(errno));
    if (!(c->dir = strdup(dir))) {
        closedir(dp);
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    }
    c->model = model;
    c->dmax_bytes = max_bytes;
    c->qmax_bytes = c->max_bytes / 4 > 0 ? c->max_bytes / 4 : 1;
    if (pthread_create(&c->writer, NULL, disk_writer, c) != 0) {
        closedir(dp);
        free(c->dir);
        c->dir = NULL;
        return mm_err_set(err, MM_ERR_NOMEM, "state cache: cannot start the disk writer");
    }
    c->writer_on = true;
    struct found *f = NULL;
    size_t n = 0, cap = 0;
    int foreign = 0;
    for (struct dirent *de; (de = readdir(dp));) {
        if (strncmp(de->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0) {
            /* a write cut short (a crash): never renamed, never trusted */
            char path[4200];
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path);
            continue;
        }
        int64_t mtime = 0;
        struct disk_rec *r = disk_scan_one(c, de->d_name, &foreign, &mtime);
        if (!r)
            continue;
        if (n == cap) {
            struct found *g = realloc(f, (cap = cap ? 2 * cap : 64) * sizeof *f);
            if (!g) {
                free(r);
                break;
            }
            f = g;
        }
        f[n++] = (struct found){r, mtime};
    }
    closedir(dp);
    if (n > 0)
        qsort(f, n, sizeof *f, by_mtime);
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++) { /* oldest first: the newest ends at the head */
        disk_push_head(c, f[i].r);
        c->dbytes += f[i].r->bytes;
        c->dentries++;
    }
    disk_trim(c);
    const int64_t kept = c->dentries;
    const size_t bytes = c->dbytes;
    pthread_mutex_unlock(&c->mu);
    free(f);
    if (foreign)
        MM_WARN("state cache: %d file(s) in %s belong to another model or format; ignored", foreign,
                dir);
    MM_INFO("state cache: disk tier %s: %lld states (%zu bytes) kept from before", dir,
            (long long)kept, bytes);
    return MM_OK;
}

bool mm_state_cache_persistent(const struct mm_state_cache *c) { return c->dir != NULL; }
