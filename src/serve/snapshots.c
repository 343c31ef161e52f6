/* snapshots.c: how the scheduler keeps and reuses prefix snapshots: the
 * state cache's GPU tier, and hits from it and from the host tier of
 * state_cache.c (engine thread; see scheduler.c).
 *
 * The state cache's GPU tier is `snaps`, indexed by slot: a slot that holds
 * a snapshot is neither free nor running (free_slots + n_snaps + running
 * slots = max_seqs). Its keys are read by mm_scheduler_cached_prefix from
 * other threads, so the engine thread changes them under `cache_mu`. Pins
 * keep the snapshot an admission is restoring from out of eviction. */
#include "serve/scheduler_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

size_t mm_sched_snapshot_bytes(const struct mm_scheduler *s, int32_t slot)
{
    const struct mm_engine_slot *sl = &s->e->slots[slot];
    return mm_engine_snapshot_bytes(s->e, sl->pos, sl->emb_pos);
}

/* Saves a slot into the host tier under keys[0..n) unless it is kept
 * there already or there is no room. */
static void save_to_host(struct mm_scheduler *s, int32_t slot, const uint64_t *keys, int64_t n)
{
    const struct mm_engine_slot *sl = &s->e->slots[slot];
    struct mm_state_entry *en = mm_state_cache_begin(s->host, s->layout, keys, n, sl->pos,
                                                     sl->emb_pos, mm_sched_snapshot_bytes(s, slot));
    if (!en)
        return;
    mm_engine_slot_save(s->e, slot, mm_state_entry_buffer(en));
    struct mm_err err;
    if (mm_engine_check(s->e, &err) != MM_OK) {
        MM_ERROR("state cache: saving a snapshot failed: %s", err.msg);
        mm_state_cache_abort(s->host, en);
        return;
    }
    mm_state_cache_commit(s->host, en);
}

/* Files the snapshot held by `slot` (keys owned from now on). */
static void add_snap(struct mm_scheduler *s, int32_t slot, uint64_t *keys, int64_t n)
{
    pthread_mutex_lock(&s->cache_mu);
    s->snaps[slot] = (struct snap){keys, n, mm_state_hash(keys, n), ++s->snap_clock, 0};
    s->n_snaps++;
    pthread_mutex_unlock(&s->cache_mu);
    s->c_snapshots++;
}

/* Gives up the snapshot in `slot` (to the host tier first when save). */
void mm_sched_drop_snapshot(struct mm_scheduler *s, int32_t slot, bool save)
{
    struct snap *sn = &s->snaps[slot];
    if (save && s->host)
        save_to_host(s, slot, sn->keys, sn->n);
    pthread_mutex_lock(&s->cache_mu);
    uint64_t *keys = sn->keys;
    *sn = (struct snap){0};
    s->n_snaps--;
    pthread_mutex_unlock(&s->cache_mu);
    free(keys);
    mm_engine_slot_release(s->e, slot);
    s->free_slots++;
    s->c_evictions++;
}

/* The least recently used snapshot nobody is restoring from, or -1. */
int32_t mm_sched_lru_snapshot(const struct mm_scheduler *s)
{
    int32_t v = -1;
    for (int32_t i = 0; i < s->e->opt.max_seqs; i++)
        if (s->snaps[i].keys && s->snaps[i].pins == 0 &&
            (v < 0 || s->snaps[i].used < s->snaps[v].used))
            v = i;
    return v;
}

/* The slot whose snapshot has exactly keys[0..n), or -1. */
static int32_t find_snap(const struct mm_scheduler *s, const uint64_t *keys, int64_t n,
                         uint64_t hash)
{
    for (int32_t i = 0; i < s->e->opt.max_seqs; i++) {
        const struct snap *sn = &s->snaps[i];
        if (sn->keys && sn->n == n && sn->hash == hash &&
            memcmp(sn->keys, keys, (size_t)n * sizeof *keys) == 0)
            return i;
    }
    return -1;
}

/* Keeps the state of running `slot` (it consumed keys[0..n), borrowed):
 * copied into a free slot (one is made by demoting the oldest snapshot),
 * else saved to the host tier. */
void mm_sched_snapshot_running(struct mm_scheduler *s, int32_t slot, const uint64_t *keys,
                               int64_t n)
{
    const uint64_t hash = mm_state_hash(keys, n);
    const int32_t have = find_snap(s, keys, n, hash);
    if (have >= 0) {
        s->snaps[have].used = ++s->snap_clock;
        return;
    }
    if (s->gpu_tier && s->free_slots == 0) {
        const int32_t v = mm_sched_lru_snapshot(s);
        if (v >= 0)
            mm_sched_drop_snapshot(s, v, true);
    }
    struct mm_err err;
    int32_t dst;
    uint64_t *own = NULL;
    if (s->gpu_tier && s->free_slots > 0 && (own = malloc((size_t)n * sizeof *own)) &&
        mm_engine_slot_acquire(s->e, &dst, &err) == MM_OK) {
        s->free_slots--;
        if (mm_engine_slot_copy(s->e, slot, dst, &err) == MM_OK) {
            memcpy(own, keys, (size_t)n * sizeof *own);
            add_snap(s, dst, own, n);
            return;
        }
        mm_engine_slot_release(s->e, dst);
        s->free_slots++;
    }
    free(own);
    save_to_host(s, slot, keys, n);
    s->c_snapshots++;
}

/* A choice finished: keeps its slot as a snapshot of what it consumed
 * (prompt and output but the last sampled token, never fed) instead of
 * freeing it. False: the caller frees the slot. */
bool mm_sched_snapshot_finished(struct mm_scheduler *s, struct job *j, struct choice *ch)
{
    const int64_t n = j->n_prompt + ch->n_gen - 1;
    if (!s->host || ch->n_gen < 1 || s->e->slots[ch->slot].pos != n)
        return false;
    uint64_t *keys = malloc((size_t)n * sizeof *keys);
    if (!keys)
        return false;
    memcpy(keys, j->keys, (size_t)j->n_prompt * sizeof *keys);
    for (int64_t i = 0; i < ch->n_gen - 1; i++)
        keys[j->n_prompt + i] = mm_state_text_key(ch->gen[i]);
    const int32_t have = find_snap(s, keys, n, mm_state_hash(keys, n));
    if (have >= 0 || !s->gpu_tier) {
        if (have >= 0)
            s->snaps[have].used = ++s->snap_clock;
        else
            save_to_host(s, ch->slot, keys, n), s->c_snapshots++;
        free(keys);
        return false;
    }
    mm_engine_kv_trim(s->e, ch->slot); /* blocks reserved ahead go back */
    add_snap(s, ch->slot, keys, n);
    ch->slot = -1; /* the slot is the snapshot's now: neither free nor running */
    return true;
}

/* The longest snapshot that begins j's prompt (pinned), leaving at least
 * the last prompt token to run. */
void mm_sched_find_hit(struct mm_scheduler *s, const struct job *j, struct hit *h)
{
    *h = (struct hit){0, 0, -1, NULL};
    const int64_t max = j->n_prompt - 1;
    if (!s->host || max < 1)
        return;
    for (int32_t i = 0; i < s->e->opt.max_seqs; i++) {
        const struct snap *sn = &s->snaps[i];
        if (sn->keys && sn->n <= max && sn->n > h->len && sn->hash == j->ph[sn->n - 1] &&
            memcmp(sn->keys, j->keys, (size_t)sn->n * sizeof *sn->keys) == 0)
            h->len = sn->n, h->slot = i;
    }
    struct mm_state_entry *en;
    const int64_t len = mm_state_cache_find(s->host, s->layout, j->keys, j->ph, max, &en);
    if (len > h->len)
        h->len = len, h->slot = -1, h->en = en;
    else
        mm_state_cache_unpin(s->host, en);
    if (h->slot >= 0) {
        s->snaps[h->slot].pins++;
        s->snaps[h->slot].used = ++s->snap_clock;
    }
    int64_t img = 0;
    for (int64_t i = 0; i < h->len; i++)
        img += j->prompt[i] == s->e->cfg.img_context_token_id;
    h->tiles = img / s->e->cfg.tokens_per_tile;
}

void mm_sched_unpin_hit(struct mm_scheduler *s, const struct hit *h)
{
    if (h->slot >= 0)
        s->snaps[h->slot].pins--;
    if (h->en)
        mm_state_cache_unpin(s->host, h->en);
}

/* Starts the acquired slot from the hit (state, positions, KV) with clean
 * token counts; false (the slot still fresh) when that fails. */
bool mm_sched_restore_hit(struct mm_scheduler *s, const struct hit *h, int32_t slot)
{
    struct mm_err err;
    enum mm_status st;
    if (h->slot >= 0) {
        st = mm_engine_slot_copy(s->e, h->slot, slot, &err);
    } else {
        int64_t pos, emb_pos;
        const void *data = mm_state_entry_data(h->en, &pos, &emb_pos);
        st = mm_engine_slot_restore(s->e, slot, pos, emb_pos, data, &err);
    }
    if (st != MM_OK) {
        MM_ERROR("state cache: restoring a snapshot failed: %s", err.msg);
        return false;
    }
    mm_engine_slot_clear_counts(s->e, slot); /* admission counts the whole prompt */
    return true;
}
