/* state_cache.h: the host-RAM tier of the state cache, and the keys every
 * tier files snapshots under (docs/architecture.md "State cache").
 *
 * Design: a snapshot is a saved sequence (engine.h mm_engine_slot_save: the
 * recurrent state, the token counts and, for a model with attention layers,
 * its KV blocks) filed under the exact stream of keys it consumed: one
 * 64-bit key per position, the token id for text and, for an image
 * position, a hash of its tile's pixels and the offset inside the tile, so
 * two different images never share a key even with equal token ids. A
 * request starts from the longest snapshot whose keys begin its own. This
 * object is the host tier: one per daemon, shared by every scheduler (one
 * per GPU) behind one mutex, bounded in bytes (keys and bookkeeping
 * included), evicting the least recently used entry that nobody is reading.
 * The GPU tier (snapshots left in free state slots) is each scheduler's own
 * (snapshots.c). A lookup is a scan of the entries comparing one prefix
 * hash each, then the keys of the candidate: token-exact at any length, no
 * block alignment, and cheap for the thousands of entries host memory can
 * hold (a radix tree would pay off only far beyond that).
 *
 * With a disk tier (mm_state_cache_open_disk) the entries evicted from host
 * RAM go to files in a directory instead of away (written by a writer
 * thread the cache owns, from a bounded queue whose entries stay findable),
 * are found by the same lookup and read back on a hit, and survive a restart.
 * The queue's bound (a quarter of max_bytes) is taken out of what host RAM
 * keeps, so the two together never exceed max_bytes.
 *
 * Threads: every function is safe from any thread (open_disk before the
 * cache is shared). An entry handed out by
 * mm_state_cache_find (pinned) or mm_state_cache_begin stays valid and is
 * never evicted until mm_state_cache_unpin / commit / abort. */
#ifndef MM_SERVE_STATE_CACHE_H
#define MM_SERVE_STATE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* ---- keys ------------------------------------------------------------------------- */

/* Keys of a prompt: n_ids ids, image positions (id == img_id) in runs of
 * tokens_per_tile per tile, tiles [n_tiles][tile_floats] in the order of
 * the runs. *out (malloc'ed, n_ids keys) is the caller's. MM_ERR_INVALID
 * when the image positions do not match the tiles. */
enum mm_status mm_state_keys(const int32_t *ids, int64_t n_ids, const float *tiles, int64_t n_tiles,
                             int64_t tile_floats, int32_t img_id, int64_t tokens_per_tile,
                             uint64_t **out, struct mm_err *err);
/* The same with each tile's pixel digest given (digests [n_tiles][2], as
 * mm_state_tile_digest makes them; tiles is then not read): for a caller
 * that keeps the digests of images it has seen before. NULL: hashed, from
 * tiles, or from pixels (tiles NULL: the 8-bit pixels the tiles are
 * normalised from, mm_image_preprocess_pixels; the same keys). */
enum mm_status mm_state_keys_digested(const int32_t *ids, int64_t n_ids, const float *tiles,
                                      const uint8_t *pixels, const uint64_t *digests,
                                      int64_t n_tiles, int64_t tile_floats, int32_t img_id,
                                      int64_t tokens_per_tile, uint64_t **out, struct mm_err *err);
/* The 128-bit digest of one tile's pixels that image keys are made from. */
void mm_state_tile_digest(const float *tile, int64_t n_floats, uint64_t d[2]);
/* The same digest from the tile's 8-bit pixels (n_values = 3 * S * S, CHW):
 * equal to mm_state_tile_digest of the tile mm_image_tiles_unpack makes. */
void mm_state_tile_digest_pixels(const uint8_t *pixels, int64_t n_values, uint64_t d[2]);
/* The key of a text position (also generated ids: always text). */
uint64_t mm_state_text_key(int32_t id);
/* out[i] = hash of keys[0..i] (n hashes). */
void mm_state_prefix_hashes(const uint64_t *keys, int64_t n, uint64_t *out);
/* The hash of keys[0..n) (n >= 1), equal to mm_state_prefix_hashes' out[n-1]. */
uint64_t mm_state_hash(const uint64_t *keys, int64_t n);

/* ---- the host tier ------------------------------------------------------------------ */

struct mm_state_cache;
struct mm_state_entry;

struct mm_state_cache_stats {
    size_t bytes, max_bytes; /* held now (entries being filled included), bound */
    int64_t entries;         /* committed entries */
    uint64_t inserts;        /* entries committed since creation */
    uint64_t evictions;      /* entries evicted to make room */
    uint64_t rejects;        /* snapshots not kept (no room even after evicting) */
    /* the disk tier (all 0 without one) */
    bool disk;
    size_t disk_bytes, disk_max_bytes; /* files kept now, bound */
    int64_t disk_entries;
    uint64_t disk_writes;    /* entries written (evicted from host RAM, or at free) */
    uint64_t disk_hits;      /* entries read back into host RAM */
    uint64_t disk_evictions; /* files removed to keep the bound */
    uint64_t disk_bad;       /* damaged files found and removed */
    int64_t disk_queued;     /* evicted entries waiting for the writer thread */
    size_t disk_queued_bytes, disk_queue_max_bytes; /* their bytes, the queue's bound */
};

/* max_bytes >= 1. *out is the caller's (mm_state_cache_free). */
enum mm_status mm_state_cache_create(size_t max_bytes, struct mm_state_cache **out,
                                     struct mm_err *err);
/* Frees every entry; no entry may be pinned or being filled. With a disk
 * tier, the entries are written to it first (oldest first, so the newest
 * are kept within its bound): they survive a restart. NULL: no-op. */
void mm_state_cache_free(struct mm_state_cache *c);

/* The disk tier (optional; before the cache is shared): entries evicted
 * from host RAM are written to files in dir (created if missing), at most
 * max_bytes of them (the least recently used file goes first), each under
 * a temporary name then renamed, with a header naming the format version
 * and `model` (the caller's identity of its checkpoint) and digests of the
 * keys, the data and the header itself. mm_state_cache_find looks there
 * too (the index is in memory: a hint costs no I/O) and reads a hit back
 * into host RAM, checked in full first; the file stays until the bound
 * removes it. The files found in dir at open are the tier's from the
 * start (a restart resumes them): a damaged or cut-short file is removed
 * with a warning, another model's (or format's) ignored with a warning and
 * left alone, a leftover temporary file removed. MM_ERR_IO when dir cannot
 * be made or read. */
enum mm_status mm_state_cache_open_disk(struct mm_state_cache *c, const char *dir, size_t max_bytes,
                                        uint64_t model, struct mm_err *err);
/* Waits until every entry evicted so far is written (the write queue is
 * empty). No-op without a disk tier. */
void mm_state_cache_flush(struct mm_state_cache *c);
/* Whether a disk tier is open (what is kept may outlive the process). */
bool mm_state_cache_persistent(const struct mm_state_cache *c);

/* The longest committed entry of this layout (an engine's snapshot format:
 * entries of another are never returned) whose keys are keys[0..len) with
 * 1 <= len <= max_len; ph = mm_state_prefix_hashes(keys) (at least max_len).
 * Returns len (0: none). With out non-NULL the entry is pinned and *out set
 * (mm_state_cache_unpin); it counts as used (LRU). */
int64_t mm_state_cache_find(struct mm_state_cache *c, uint64_t layout, const uint64_t *keys,
                            const uint64_t *ph, int64_t max_len, struct mm_state_entry **out);
/* Whether an entry with exactly these n keys exists (it counts as used). */
bool mm_state_cache_has(struct mm_state_cache *c, uint64_t layout, const uint64_t *keys, int64_t n);
void mm_state_cache_unpin(struct mm_state_cache *c, struct mm_state_entry *en);

/* A pinned entry's saved bytes and positions (engine.h: LLM and embedding
 * stack positions the snapshot has consumed). */
const void *mm_state_entry_data(const struct mm_state_entry *en, int64_t *pos, int64_t *emb_pos);

/* Starts an entry of data_bytes bytes under keys[0..n) (copied): makes room
 * by evicting unpinned entries (least recently used first) and returns it
 * for the caller to fill (mm_state_entry_buffer), or NULL when the entry
 * could never fit, no room can be made, or these keys are kept already.
 * Then exactly one of commit (findable from now on) or abort. */
struct mm_state_entry *mm_state_cache_begin(struct mm_state_cache *c, uint64_t layout,
                                            const uint64_t *keys, int64_t n, int64_t pos,
                                            int64_t emb_pos, size_t data_bytes);
void *mm_state_entry_buffer(struct mm_state_entry *en);
void mm_state_cache_commit(struct mm_state_cache *c, struct mm_state_entry *en);
void mm_state_cache_abort(struct mm_state_cache *c, struct mm_state_entry *en);

void mm_state_cache_stats(struct mm_state_cache *c, struct mm_state_cache_stats *out);

#endif
