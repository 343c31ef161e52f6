/* admission.c: which waiting prefills get a slot and KV blocks, and who
 * gives them back when the pool runs dry (engine thread; see scheduler.c).
 *
 * Design: first come first served. Snapshots of the state cache give way
 * before anyone waits or is preempted; preemption takes the most recently
 * admitted sequence, which comes back as a prefill at the queue's front. */
#include "serve/scheduler_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "serve/request_engine.h"

static int64_t kv_free(const struct mm_scheduler *s, int st)
{
    int64_t used[2], total[2];
    mm_engine_kv_usage(s->e, used, total);
    return total[st] - used[st];
}

/* KV blocks a prefill of n ids with n_tiles tiles takes in a stack. */
int64_t mm_sched_blocks_for_prefill(const struct mm_scheduler *s, int st, int64_t n,
                                    int64_t n_tiles)
{
    if (!s->e->kv[st])
        return 0;
    return mm_kv_blocks_for(st == MM_STACK_EMB ? mm_engine_emb_rows(&s->e->cfg, n, n_tiles) : n);
}

/* Evicts snapshots (least recently used first, never a pinned one) until
 * need_slots slots and need[] KV blocks are free; whether they are. */
static bool make_room(struct mm_scheduler *s, int32_t need_slots, const int64_t need[2])
{
    for (;;) {
        if (s->free_slots >= need_slots && kv_free(s, 0) >= need[0] && kv_free(s, 1) >= need[1])
            return true;
        if (s->free_slots + s->n_snaps < need_slots)
            return false; /* running sequences hold the rest: evicting cannot help */
        const int32_t v = mm_sched_lru_snapshot(s);
        if (v < 0)
            return false;
        mm_sched_drop_snapshot(s, v, true);
    }
}

void mm_sched_admit(struct mm_scheduler *s)
{
    while (s->n_waiting > 0) {
        struct pf *pf = s->waiting[0];
        struct job *j = pf->job;
        const int32_t n_slots = pf->choice < 0 ? j->p->n : 1;
        struct hit h = {0, 0, -1, NULL};
        if (pf->choice < 0)
            mm_sched_find_hit(s, j, &h);
        int64_t need[2];
        for (int st = 0; st < 2; st++) {
            need[st] = n_slots * mm_sched_blocks_for_prefill(s, st, pf->n_ids, j->n_tiles);
            if (h.slot >= 0 && s->e->kv[st]) { /* choice 0 shares the snapshot's blocks */
                const struct mm_engine_slot *sl = &s->e->slots[h.slot];
                const int64_t at = st == MM_STACK_EMB ? sl->emb_pos : sl->pos;
                need[st] -= mm_kv_blocks_for(at) - (at % MM_KV_BLOCK != 0); /* partial: COW */
            }
        }
        const bool fits = make_room(s, n_slots, need);
        if (!fits && h.slot >= 0) {
            /* the pinned snapshot itself is in the way (every other slot
             * runs): it goes to the host tier (or away) and admission retries */
            mm_sched_unpin_hit(s, &h);
            mm_sched_drop_snapshot(s, h.slot, true);
            continue;
        }
        if (!fits) {
            mm_sched_unpin_hit(s, &h);
            MM_DEBUG("admit: head %s needs %d slots (free %d), kv free %lld/%lld, pre %d run %d",
                     mm_request_id(j->r), n_slots, s->free_slots, (long long)kv_free(s, 0),
                     (long long)kv_free(s, 1), s->n_pre, s->n_run);
            if (s->n_pre > 0 || s->n_run > 0)
                return; /* FCFS: it waits for what the running ones free */
            /* alone and still too big: only a resumed sequence grown past the
             * pool can get here (submit refuses prompts that cannot fit) */
            mm_sched_remove_waiting(s, 0);
            if (pf->choice >= 0) {
                const int32_t c = pf->choice;
                mm_sched_free_prefill(pf);
                mm_sched_finish_choice(s, j, c, MM_FINISH_LENGTH, true, MM_OK, NULL);
            } else { /* (submit refuses these; kept for safety) */
                if (!j->admitted_once) {
                    pthread_mutex_lock(&s->mu);
                    s->queued--;
                    pthread_mutex_unlock(&s->mu);
                }
                mm_sched_finish_job(s, j, MM_FINISH_ERROR, MM_ERR_LIMIT,
                                    "the KV cache cannot hold it");
            }
            continue;
        }
        mm_sched_remove_waiting(s, 0);
        for (int32_t i = 0; i < n_slots; i++) {
            struct choice *ch = &j->ch[pf->choice < 0 ? i : pf->choice];
            struct mm_err err;
            /* all succeed: a free slot and blocks were counted above */
            if (mm_engine_slot_acquire(s->e, &ch->slot, &err) != MM_OK)
                MM_ERROR("scheduler: admission failed after the check: %s", err.msg);
            if (i == 0 && h.len > 0 && !mm_sched_restore_hit(s, &h, ch->slot))
                h.len = h.tiles = 0;
            const int64_t from = i == 0 ? h.len : 0, from_tiles = i == 0 ? h.tiles : 0;
            if (mm_engine_kv_reserve(s->e, ch->slot, pf->n_ids - from, j->n_tiles - from_tiles,
                                     &err) != MM_OK)
                MM_ERROR("scheduler: admission failed after the check: %s", err.msg);
            s->free_slots--;
        }
        mm_sched_unpin_hit(s, &h);
        if (pf->choice < 0) {
            if (!j->admitted_once) {
                s->c_queries++;
                s->c_query_tokens += (uint64_t)j->n_prompt;
                s->c_hits += h.len > 0;
                s->c_hit_tokens += (uint64_t)h.len;
            }
            j->cached = h.len;
        }
        pf->slot = j->ch[pf->choice < 0 ? 0 : pf->choice].slot;
        pf->done = h.len;
        pf->tiles_done = h.tiles;
        pf->admitted = ++s->admit_ctr;
        mm_engine_slot_count(s->e, pf->slot, j->prompt, j->n_prompt, false);
        if (pf->choice >= 0) /* a resumed choice re-counts its output */
            mm_engine_slot_count(s->e, pf->slot, pf->ids + j->n_prompt, pf->n_ids - j->n_prompt,
                                 true);
        s->pre[s->n_pre++] = pf;
        if (!j->admitted_once) {
            j->admitted_once = true;
            j->t_admit = mm_sched_now();
            mm_metrics_observe(s->m, MM_HIST_QUEUE_TIME, j->t_admit - j->t_submit);
            pthread_mutex_lock(&s->mu);
            s->queued--;
            pthread_mutex_unlock(&s->mu);
        }
    }
}

/* Puts a decoding choice back in the queue (front) as a prefill of its
 * prompt and generated ids. */
static void preempt_run(struct mm_scheduler *s, int idx)
{
    struct job *j = s->run[idx].job;
    const int32_t c = s->run[idx].choice;
    struct choice *ch = &j->ch[c];
    struct pf *pf = calloc(1, sizeof *pf);
    int32_t *own = malloc((size_t)(j->n_prompt + ch->n_gen) * sizeof *own);
    if (!pf || !own || mm_sched_push_waiting(s, pf, true) != MM_OK) {
        free(pf);
        free(own);
        mm_sched_finish_choice(s, j, c, MM_FINISH_ERROR, false, MM_ERR_NOMEM,
                               "out of memory preempting the sequence");
        return;
    }
    memcpy(own, j->prompt, (size_t)j->n_prompt * sizeof *own);
    memcpy(own + j->n_prompt, ch->gen, (size_t)ch->n_gen * sizeof *own);
    *pf = (struct pf){.job = j,
                      .choice = c,
                      .own = own,
                      .ids = own,
                      .n_ids = j->n_prompt + ch->n_gen,
                      .n_prompt = j->n_prompt,
                      .slot = -1};
    mm_sched_remove_run(s, idx);
    mm_sched_release_slot(s, ch);
    s->preemptions++;
    MM_DEBUG("scheduler: preempted request %s choice %d after %lld tokens", mm_request_id(j->r), c,
             (long long)ch->n_gen);
}

/* Puts an admitted prefill back in the queue (front), from its start. */
static void preempt_pre(struct mm_scheduler *s, int idx)
{
    struct pf *pf = s->pre[idx];
    struct job *j = pf->job;
    mm_sched_remove_pre(s, idx);
    if (mm_sched_push_waiting(s, pf, true) != MM_OK) {
        mm_sched_free_prefill(pf);
        mm_sched_finish_job(s, j, MM_FINISH_ERROR, MM_ERR_NOMEM,
                            "out of memory preempting the sequence");
        return;
    }
    if (pf->choice < 0)
        for (int32_t c = 0; c < j->p->n; c++)
            mm_sched_release_slot(s, &j->ch[c]);
    else
        mm_sched_release_slot(s, &j->ch[pf->choice]);
    pf->done = pf->tiles_done = 0;
    pf->slot = -1;
    s->preemptions++;
}

/* Every decoding choice gets the block its next token needs; when the pool
 * runs dry the most recently admitted sequence gives its blocks back. */
void mm_sched_grow_decodes(struct mm_scheduler *s)
{
    for (int i = 0; i < s->n_run; i++) {
        for (;;) {
            struct mm_err err;
            const int32_t slot = s->run[i].job->ch[s->run[i].choice].slot;
            if (mm_engine_kv_reserve(s->e, slot, 1, 0, &err) == MM_OK)
                break;
            const int32_t snap = mm_sched_lru_snapshot(s); /* snapshots give way first */
            if (snap >= 0) {
                mm_sched_drop_snapshot(s, snap, true);
                continue;
            }
            int vr = -1, vp = -1;
            uint64_t latest = 0;
            for (int k = 0; k < s->n_run; k++)
                if (s->run[k].admitted >= latest)
                    latest = s->run[k].admitted, vr = k, vp = -1;
            for (int k = 0; k < s->n_pre; k++)
                if (s->pre[k]->admitted >= latest)
                    latest = s->pre[k]->admitted, vp = k, vr = -1;
            if (vp >= 0) {
                preempt_pre(s, vp);
                continue;
            }
            if (vr == i) {
                if (s->n_run == 1 && s->n_pre == 0) /* alone: the pool is its limit */
                    mm_sched_finish_choice(s, s->run[i].job, s->run[i].choice, MM_FINISH_LENGTH,
                                           true, MM_OK, NULL);
                else
                    preempt_run(s, i);
                i--; /* run[i] went away: the next one moved here */
                break;
            }
            preempt_run(s, vr);
            if (vr < i)
                i--; /* run[i] moved down one; retry it */
        }
    }
}
