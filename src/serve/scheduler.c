/* scheduler.c: continuous batching over the engine's slots (see
 * scheduler.h).
 *
 * The engine thread keeps three lists: `waiting` (prefills not admitted:
 * new requests in submission order, preempted sequences put back at the
 * front), `pre` (admitted prefills, in admission order, advancing one chunk
 * per step) and `run` (choices decoding one token per step). A new request
 * is one prefill for all its choices; when it completes, the prompt's slot
 * is copied into the other choices' slots and each samples on its own
 * Philox stream. A preempted choice comes back as a prefill of prompt +
 * generated ids and samples its next token where it left off. Only the
 * engine thread touches the lists, the engine and the choices; `mu` guards
 * the submission queue and the counters other threads read.
 *
 * Admission and preemption are in admission.c, the state cache's GPU tier
 * (snapshots in free slots) in snapshots.c; the types the three files share
 * are in scheduler_internal.h. */
#include "serve/scheduler.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "serve/detokenizer.h"
#include "serve/request_engine.h"
#include "serve/scheduler_internal.h"
#include "serve/stops.h"

double mm_sched_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void mm_scheduler_options_default(struct mm_scheduler_options *o)
{
    memset(o, 0, sizeof *o);
    o->max_queue = 256;
    o->state_cache_gpu = true;
}

/* ---- bookkeeping ------------------------------------------------------------------ */

static void touch(struct mm_scheduler *s, struct job *j)
{
    if (j->touched)
        return;
    if (s->n_touched == s->cap_touched) {
        const int64_t cap = s->cap_touched ? 2 * s->cap_touched : 64;
        struct job **nt = realloc(s->touched, (size_t)cap * sizeof *nt);
        if (!nt) { /* tell its consumer now rather than never */
            mm_request_flush(j->r);
            return;
        }
        s->touched = nt;
        s->cap_touched = cap;
    }
    j->touched = true;
    s->touched[s->n_touched++] = j;
}

static bool is_eos(const struct mm_scheduler *s, int32_t id)
{
    for (int i = 0; i < s->n_eos; i++)
        if (s->eos[i] == id)
            return true;
    return false;
}

static bool is_stop_id(const struct job *j, int32_t id)
{
    for (int i = 0; i < j->p->n_stop_ids; i++)
        if (j->p->stop_ids[i] == id)
            return true;
    return false;
}

void mm_sched_remove_run(struct mm_scheduler *s, int idx)
{
    memmove(&s->run[idx], &s->run[idx + 1], (size_t)(s->n_run - idx - 1) * sizeof *s->run);
    s->n_run--;
}

void mm_sched_remove_pre(struct mm_scheduler *s, int idx)
{
    memmove(&s->pre[idx], &s->pre[idx + 1], (size_t)(s->n_pre - idx - 1) * sizeof *s->pre);
    s->n_pre--;
}

void mm_sched_remove_waiting(struct mm_scheduler *s, int64_t idx)
{
    memmove(&s->waiting[idx], &s->waiting[idx + 1],
            (size_t)(s->n_waiting - idx - 1) * sizeof *s->waiting);
    s->n_waiting--;
}

enum mm_status mm_sched_push_waiting(struct mm_scheduler *s, struct pf *pf, bool front)
{
    if (s->n_waiting == s->cap_waiting) {
        const int64_t cap = s->cap_waiting ? 2 * s->cap_waiting : 64;
        struct pf **nw = realloc(s->waiting, (size_t)cap * sizeof *nw);
        if (!nw)
            return MM_ERR_NOMEM;
        s->waiting = nw;
        s->cap_waiting = cap;
    }
    if (front) {
        memmove(&s->waiting[1], &s->waiting[0], (size_t)s->n_waiting * sizeof *s->waiting);
        s->waiting[0] = pf;
    } else {
        s->waiting[s->n_waiting] = pf;
    }
    s->n_waiting++;
    return MM_OK;
}

void mm_sched_release_slot(struct mm_scheduler *s, struct choice *c)
{
    if (c->slot < 0)
        return;
    mm_engine_slot_release(s->e, c->slot);
    c->slot = -1;
    s->free_slots++;
}

void mm_sched_free_prefill(struct pf *pf)
{
    if (pf->choice >= 0) { /* resumed ones are allocated; the first is in the job */
        free(pf->own);
        free(pf);
    }
}

/* Removes every waiting or admitted prefill of j (giving back its slots). */
static void drop_prefills(struct mm_scheduler *s, struct job *j)
{
    for (int64_t i = s->n_waiting - 1; i >= 0; i--)
        if (s->waiting[i]->job == j) {
            struct pf *pf = s->waiting[i];
            mm_sched_remove_waiting(s, i);
            if (pf->choice < 0 && !j->admitted_once) {
                pthread_mutex_lock(&s->mu);
                s->queued--;
                pthread_mutex_unlock(&s->mu);
            }
            mm_sched_free_prefill(pf);
        }
    for (int i = s->n_pre - 1; i >= 0; i--)
        if (s->pre[i]->job == j) {
            struct pf *pf = s->pre[i];
            mm_sched_remove_pre(s, i);
            mm_sched_free_prefill(pf);
        }
}

/* Ends one choice: its FINISH event, its slot and blocks freed at once. */
void mm_sched_finish_choice(struct mm_scheduler *s, struct job *j, int32_t c,
                            enum mm_finish_reason why, bool flush, enum mm_status status,
                            const char *message)
{
    struct choice *ch = &j->ch[c];
    if (ch->done)
        return;
    const char *text = "";
    size_t len = 0;
    if (flush && ch->detok) {
        /* the detokenizer's incomplete bytes, then whatever was held back */
        size_t dl;
        const char *rest = mm_detok_finish(ch->detok, &dl);
        bool matched;
        struct mm_err err;
        if (mm_stops_finish(&ch->stops, rest, dl, &text, &len, &matched, &err) != MM_OK)
            len = 0;
        else if (matched && why == MM_FINISH_LENGTH) /* the flushed bytes ended a stop string */
            why = MM_FINISH_STOP;
    }
    const double t = mm_sched_now();
    const struct mm_event ev = {
        .kind = MM_EVENT_FINISH,
        .choice = c,
        .text = text,
        .len = len,
        .finish = why,
        .prompt_tokens = j->n_prompt,
        .completion_tokens = ch->n_gen,
        .cached_tokens = j->cached,
        .status = status,
        .message = message ? message : "",
        .times = {j->admitted_once ? j->t_admit - j->t_submit : t - j->t_submit,
                  ch->n_gen > 0 ? ch->t_first - j->t_submit : 0, t - j->t_submit},
    };
    mm_request_push_finish(j->r, &ev);
    mm_metrics_finished(s->m, why);
    for (int i = 0; i < s->n_run; i++)
        if (s->run[i].job == j && s->run[i].choice == c) {
            mm_sched_remove_run(s, i);
            break;
        }
    const bool ok = status == MM_OK && (why == MM_FINISH_STOP || why == MM_FINISH_LENGTH);
    if (!(ok && ch->slot >= 0 && mm_sched_snapshot_finished(s, j, ch)))
        mm_sched_release_slot(s, ch);
    ch->done = true;
    j->n_done++;
    touch(s, j);
}

/* Ends every unfinished choice of j (cancellation, failures). */
void mm_sched_finish_job(struct mm_scheduler *s, struct job *j, enum mm_finish_reason why,
                         enum mm_status status, const char *message)
{
    drop_prefills(s, j);
    for (int32_t c = 0; c < j->p->n; c++)
        mm_sched_finish_choice(s, j, c, why, false, status, message);
}

static void free_job(struct job *j)
{
    free(j->own_keys);
    free(j->own_ph);
    for (int32_t c = 0; j->ch && c < j->p->n; c++) {
        free(j->ch[c].gen);
        mm_detok_free(j->ch[c].detok);
        mm_stops_free(&j->ch[c].stops);
    }
    free(j->ch);
    free(j);
}

/* After all its FINISH events: metrics, the engine's reference dropped. */
static void retire_job(struct mm_scheduler *s, struct job *j)
{
    int64_t gen = 0;
    for (int32_t c = 0; c < j->p->n; c++)
        gen += j->ch[c].n_gen;
    mm_metrics_observe(s->m, MM_HIST_E2E, mm_sched_now() - j->t_submit);
    mm_metrics_observe(s->m, MM_HIST_PROMPT_TOKENS, (double)j->n_prompt);
    mm_metrics_observe(s->m, MM_HIST_GEN_TOKENS, (double)gen);
    struct mm_request *r = j->r;
    const int32_t n = j->p->n;
    free_job(j); /* first: j->p lives in the request */
    mm_request_release(r);
    pthread_mutex_lock(&s->mu);
    s->in_flight--;
    s->seqs -= n;
    pthread_cond_broadcast(&s->finished);
    pthread_mutex_unlock(&s->mu);
}

/* ---- one step ------------------------------------------------------------------------ */

/* The next prefill chunk of pf: at most max_ids ids (a first chunk of the
 * step may take one whole tile beyond that, up to hard_left, so images
 * always progress), whole tiles only, at most tiles_left of them, never
 * crossing from prompt to generated ids (those are text_only). */
static int64_t plan_chunk(const struct mm_scheduler *s, const struct pf *pf, int64_t max_ids,
                          int64_t hard_left, int64_t tiles_left, bool first, int64_t *n_tiles)
{
    const int32_t img = (int32_t)s->e->cfg.img_context_token_id;
    const int64_t tpt = s->e->cfg.tokens_per_tile;
    *n_tiles = 0;
    if (max_ids > hard_left)
        max_ids = hard_left;
    if (pf->done >= pf->n_prompt) {
        const int64_t n = pf->n_ids - pf->done;
        return n < max_ids ? n : (max_ids > 0 ? max_ids : 0);
    }
    int64_t i = pf->done, t = 0;
    while (i < pf->n_prompt) {
        if (pf->ids[i] == img) { /* a tile starts here (chunks end on tile boundaries) */
            const bool room =
                i + tpt - pf->done <= max_ids || (first && i == pf->done && tpt <= hard_left);
            if (t + 1 > tiles_left || !room)
                break;
            i += tpt;
            t++;
        } else {
            if (i + 1 - pf->done > max_ids)
                break;
            i++;
        }
    }
    *n_tiles = t;
    return i - pf->done;
}

/* Fails every request with a row in the step (the backend failed). */
static void fail_step(struct mm_scheduler *s, int n_steps, const struct mm_err *err)
{
    MM_ERROR("scheduler: step failed: %s", err->msg);
    /* collect the distinct jobs first: finishing them frees their prefills */
    const uint64_t mark = ++s->mark_ctr;
    int nj = 0;
    for (int k = 0; k < n_steps; k++) {
        struct job *j = s->owners[k].pf ? s->owners[k].pf->job : s->run[s->owners[k].idx].job;
        if (j->mark != mark) {
            j->mark = mark;
            s->fail_jobs[nj++] = j;
        }
    }
    for (int k = 0; k < nj; k++)
        mm_sched_finish_job(s, s->fail_jobs[k], MM_FINISH_ERROR, err->status, err->msg);
    struct mm_err again;
    if (err->status == MM_ERR_BACKEND && mm_engine_check(s->e, &again) != MM_OK) {
        /* the fault persists (a sticky CUDA error, a lost device): the
         * backend is unusable and every slot's state in doubt, so this engine
         * serves no more; a one-off failure failed only this step */
        pthread_mutex_lock(&s->mu);
        s->failed = true;
        snprintf(s->fail_msg, sizeof s->fail_msg, "%s", err->msg);
        pthread_mutex_unlock(&s->mu);
        MM_ERROR("scheduler: the engine is out of service: %s", err->msg);
    }
}

/* Fails every request the engine holds (it failed; see fail_step). */
static void fail_all(struct mm_scheduler *s, const char *msg)
{
    struct job *j;
    while ((j = s->n_waiting > 0 ? s->waiting[0]->job
                : s->n_pre > 0   ? s->pre[0]->job
                : s->n_run > 0   ? s->run[0].job
                                 : NULL))
        mm_sched_finish_job(s, j, MM_FINISH_ERROR, MM_ERR_BACKEND, msg);
}

/* A sampled token: event, stops, limits. */
static void handle_token(struct mm_scheduler *s, struct job *j, int32_t c,
                         const struct mm_sample_out *out)
{
    struct choice *ch = &j->ch[c];
    if (ch->n_gen == ch->cap_gen) {
        const int64_t cap = ch->cap_gen ? 2 * ch->cap_gen : 64;
        int32_t *ng = realloc(ch->gen, (size_t)cap * sizeof *ng);
        if (!ng) {
            mm_sched_finish_choice(s, j, c, MM_FINISH_ERROR, false, MM_ERR_NOMEM, "out of memory");
            return;
        }
        ch->gen = ng;
        ch->cap_gen = cap;
    }
    const int32_t id = out->id;
    ch->gen[ch->n_gen++] = id;
    s->gen_tokens++;
    const double t = mm_sched_now();
    if (ch->n_gen == 1) {
        ch->t_first = t;
        mm_metrics_observe(s->m, MM_HIST_TTFT, t - j->t_submit);
    } else {
        mm_metrics_observe(s->m, MM_HIST_ITL, t - ch->t_last);
    }
    ch->t_last = t;
    if ((!j->p->ignore_eos && is_eos(s, id)) || is_stop_id(j, id)) {
        mm_sched_finish_choice(s, j, c, MM_FINISH_STOP, true, MM_OK, NULL);
        return;
    }
    struct mm_event ev = {.kind = MM_EVENT_TOKEN,
                          .choice = c,
                          .token = id,
                          .index = (int32_t)(ch->n_gen - 1),
                          .text = "",
                          .len = 0};
    bool matched = false;
    struct mm_err err;
    if (ch->detok) {
        const char *piece;
        size_t plen;
        if (mm_detok_feed(ch->detok, id, &piece, &plen, &err) != MM_OK)
            plen = 0; /* an id without text (validated by the engine already) */
        if (mm_stops_feed(&ch->stops, plen ? piece : "", plen, &ev.text, &ev.len, &matched, &err) !=
            MM_OK) {
            mm_sched_finish_choice(s, j, c, MM_FINISH_ERROR, false, err.status, err.msg);
            return;
        }
    }
    if (j->p->logprobs) {
        ev.logprob = out->logprob;
        ev.n_top = out->n_top;
        for (int k = 0; k < out->n_top; k++)
            ev.top[k] = (struct mm_token_logprob){out->top_ids[k], out->top_logprobs[k]};
    }
    if (mm_request_push_token(j->r, &ev, &err) != MM_OK) {
        mm_sched_finish_choice(s, j, c, MM_FINISH_ERROR, false, err.status, err.msg);
        return;
    }
    touch(s, j);
    if (matched)
        mm_sched_finish_choice(s, j, c, MM_FINISH_STOP, false, MM_OK, NULL);
    else if (ch->n_gen >= j->max_gen)
        mm_sched_finish_choice(s, j, c, MM_FINISH_LENGTH, true, MM_OK, NULL);
}

static void step(struct mm_scheduler *s)
{
    struct mm_engine *e = s->e;
    mm_sched_grow_decodes(s);
    /* decodes first, then prefill chunks in admission order within the budget */
    int n = 0;
    int64_t tokens = 0, tiles = 0;
    for (int i = 0; i < s->n_run; i++) {
        struct choice *ch = &s->run[i].job->ch[s->run[i].choice];
        s->steps[n] = (struct mm_seq_step){
            .slot = ch->slot, .ids = &ch->gen[ch->n_gen - 1], .n = 1, .text_only = true};
        s->owners[n++] = (struct owner){NULL, i};
        tokens++;
    }
    const size_t tile_floats =
        3 * (size_t)e->cfg.force_image_size * (size_t)e->cfg.force_image_size;
    bool first = true;
    for (int i = 0; i < s->n_pre; i++) {
        struct pf *pf = s->pre[i];
        pf->chunk = plan_chunk(s, pf, s->budget - tokens, s->hard - tokens,
                               e->opt.max_tiles - tiles, first, &pf->chunk_tiles);
        if (pf->chunk == 0)
            break; /* FCFS: later prefills wait for this one's room */
        s->steps[n] = (struct mm_seq_step){
            .slot = pf->slot,
            .ids = pf->ids + pf->done,
            .n = pf->chunk,
            /* normalised here, from pixels: tiles a state-cache hit covers never are */
            .tiles = pf->chunk_tiles
                         ? mm_request_tiles_f32(pf->job->r, pf->tiles_done, pf->chunk_tiles,
                                                e->cfg.force_image_size,
                                                s->tile_buf + (size_t)tiles * tile_floats)
                         : NULL,
            .n_tiles = pf->chunk_tiles,
            .text_only = pf->done >= pf->n_prompt,
        };
        s->owners[n++] = (struct owner){pf, i};
        tokens += pf->chunk;
        tiles += pf->chunk_tiles;
        first = false;
    }
    if (n == 0)
        return;
    struct mm_err err;
    if (mm_engine_forward(e, s->steps, n, NULL, &err) != MM_OK) {
        mm_metrics_count(s->m, 0, 0, 0, 0, 1);
        fail_step(s, n, &err);
        return;
    }
    /* samples: decodes; completed prefills (forking n > 1 first) */
    int ns = 0;
    for (int k = 0; k < n; k++) {
        struct pf *pf = s->owners[k].pf;
        if (!pf) {
            const struct run *r = &s->run[s->owners[k].idx];
            const struct job *j = r->job;
            s->samples[ns] =
                (struct mm_engine_sample){k, j->ch[r->choice].slot, (uint32_t)r->choice,
                                          (uint32_t)j->ch[r->choice].n_gen, j->p->sample};
            s->sowners[ns++] = *r;
            continue;
        }
        pf->done += pf->chunk;
        pf->tiles_done += pf->chunk_tiles;
        if (pf->done < pf->n_ids)
            continue;
        struct job *j = pf->job;
        if (pf->choice < 0) {
            s->prompt_tokens += (uint64_t)j->n_prompt;
            for (int32_t c = 0; c < j->p->n; c++) {
                if (c > 0 && mm_engine_slot_copy(e, pf->slot, j->ch[c].slot, &err) != MM_OK) {
                    fail_step(s, n, &err);
                    return;
                }
                s->samples[ns] =
                    (struct mm_engine_sample){k, j->ch[c].slot, (uint32_t)c, 0, j->p->sample};
                s->sowners[ns++] = (struct run){j, c, pf->admitted};
            }
        } else {
            const struct choice *ch = &j->ch[pf->choice];
            s->samples[ns] = (struct mm_engine_sample){k, ch->slot, (uint32_t)pf->choice,
                                                       (uint32_t)ch->n_gen, j->p->sample};
            s->sowners[ns++] = (struct run){j, pf->choice, pf->admitted};
        }
    }
    if (mm_engine_sample(e, s->samples, ns, s->outs, &err) != MM_OK ||
        mm_engine_check(e, &err) != MM_OK) {
        mm_metrics_count(s->m, 0, 0, 0, 0, 1);
        fail_step(s, n, &err);
        return;
    }
    /* completed prefills become decodes */
    for (int i = s->n_pre - 1; i >= 0; i--) {
        struct pf *pf = s->pre[i];
        if (pf->done < pf->n_ids)
            continue;
        mm_sched_remove_pre(s, i);
        if (pf->choice < 0 && s->host)
            mm_sched_snapshot_running(s, pf->slot, pf->job->keys, pf->job->n_prompt);
        for (int32_t c = 0; c < pf->job->p->n; c++)
            if (pf->choice < 0 || pf->choice == c)
                s->run[s->n_run++] = (struct run){pf->job, c, pf->admitted};
        mm_sched_free_prefill(pf);
    }
    for (int i = 0; i < ns; i++)
        if (!s->sowners[i].job->ch[s->sowners[i].choice].done)
            handle_token(s, s->sowners[i].job, s->sowners[i].choice, &s->outs[i]);
    mm_metrics_count(s->m, 0, 0, 0, 1, 0);
}

/* ---- the engine thread --------------------------------------------------------------- */

static bool has_work(const struct mm_scheduler *s)
{
    return s->n_waiting > 0 || s->n_pre > 0 || s->n_run > 0;
}

/* The first job of any list whose request was cancelled, or NULL. */
static struct job *find_cancelled(const struct mm_scheduler *s)
{
    for (int64_t i = 0; i < s->n_waiting; i++)
        if (mm_request_cancelled(s->waiting[i]->job->r))
            return s->waiting[i]->job;
    for (int i = 0; i < s->n_pre; i++)
        if (mm_request_cancelled(s->pre[i]->job->r))
            return s->pre[i]->job;
    for (int i = 0; i < s->n_run; i++)
        if (mm_request_cancelled(s->run[i].job->r))
            return s->run[i].job;
    return NULL;
}

/* Metrics first (so a consumer woken by an event sees this step's gauges),
 * then the notifications, then the finished requests let go. */
static void publish(struct mm_scheduler *s)
{
    mm_metrics_count(s->m, s->prompt_tokens, s->gen_tokens, s->preemptions, 0, 0);
    s->prompt_tokens = s->gen_tokens = s->preemptions = 0;
    /* running: requests holding a slot */
    const uint64_t mark = ++s->mark_ctr;
    int64_t running = 0;
    for (int i = 0; i < s->n_pre; i++)
        if (s->pre[i]->job->mark != mark)
            s->pre[i]->job->mark = mark, running++;
    for (int i = 0; i < s->n_run; i++)
        if (s->run[i].job->mark != mark)
            s->run[i].job->mark = mark, running++;
    int64_t used[2], total[2], pending = 0;
    mm_engine_kv_usage(s->e, used, total);
    for (int64_t i = 0; i < s->n_waiting; i++)
        pending += s->waiting[i]->n_ids;
    for (int i = 0; i < s->n_pre; i++)
        pending += s->pre[i]->n_ids - s->pre[i]->done;
    pthread_mutex_lock(&s->mu);
    const int64_t waiting = s->n_waiting + s->n_incoming;
    s->pending_tokens = pending;
    s->kv_used[0] = used[0];
    s->kv_used[1] = used[1];
    pthread_mutex_unlock(&s->mu);
    mm_metrics_gauges(s->m, running, waiting, s->e->opt.max_seqs - s->free_slots - s->n_snaps,
                      s->e->opt.max_seqs, used, total);
    int64_t snap_bytes = 0;
    for (int32_t i = 0; i < s->e->opt.max_seqs && s->n_snaps > 0; i++)
        if (s->snaps[i].keys)
            snap_bytes += (int64_t)mm_sched_snapshot_bytes(s, i);
    mm_metrics_cache(s->m, s->c_queries, s->c_hits, s->c_query_tokens, s->c_hit_tokens,
                     s->c_snapshots, s->c_evictions, s->n_snaps, snap_bytes);
    s->c_queries = s->c_hits = s->c_query_tokens = s->c_hit_tokens = 0;
    s->c_snapshots = s->c_evictions = 0;
    for (int64_t i = 0; i < s->n_touched; i++) {
        struct job *j = s->touched[i];
        j->touched = false;
        mm_request_flush(j->r);
        if (j->n_done == j->p->n)
            retire_job(s, j);
    }
    s->n_touched = 0;
}

static void *engine_main(void *arg)
{
    struct mm_scheduler *s = arg;
    mm_engine_bind_thread(s->e);
    char fail_msg[sizeof s->fail_msg + 32];
    for (;;) {
        pthread_mutex_lock(&s->mu);
        for (;;) {
            while (s->in_head) { /* new requests join the queue's tail */
                struct job *j = s->in_head;
                if (mm_sched_push_waiting(s, &j->first, false) != MM_OK)
                    break; /* retried next round */
                s->in_head = j->next;
                s->n_incoming--;
                s->incoming_tokens -= j->n_prompt;
                s->pending_tokens += j->n_prompt;
            }
            if (!s->in_head)
                s->in_tail = NULL;
            if (s->cancel_gen != s->seen_cancel_gen) {
                s->seen_cancel_gen = s->cancel_gen;
                for (int64_t i = 0; i < s->n_waiting; i++)
                    mm_request_cancel(s->waiting[i]->job->r);
                for (int i = 0; i < s->n_pre; i++)
                    mm_request_cancel(s->pre[i]->job->r);
                for (int i = 0; i < s->n_run; i++)
                    mm_request_cancel(s->run[i].job->r);
            }
            if (has_work(s) || s->in_head)
                break;
            if (s->stopping) {
                const bool keep = !s->failed && s->host && mm_state_cache_persistent(s->host);
                pthread_mutex_unlock(&s->mu);
                /* with a disk tier the states in free slots outlive the process too */
                for (int32_t i = 0; keep && i < s->e->opt.max_seqs; i++)
                    if (s->snaps[i].keys)
                        mm_sched_drop_snapshot(s, i, true);
                return NULL;
            }
            pthread_cond_wait(&s->wake, &s->mu);
        }
        const bool failed = s->failed;
        if (failed)
            snprintf(fail_msg, sizeof fail_msg, "the engine failed: %s", s->fail_msg);
        pthread_mutex_unlock(&s->mu);
        for (struct job *j; (j = find_cancelled(s));)
            mm_sched_finish_job(s, j, MM_FINISH_CANCELLED, MM_OK, NULL);
        if (failed) {
            fail_all(s, fail_msg);
        } else {
            mm_sched_admit(s);
            step(s);
        }
        publish(s);
    }
}

/* ---- the public side ------------------------------------------------------------------ */

enum mm_status mm_scheduler_create(struct mm_engine *e, const struct mm_tokenizer *tok,
                                   const struct mm_scheduler_options *o, struct mm_scheduler **out,
                                   struct mm_err *err)
{
    if (o->max_queue < 1)
        return mm_err_set(err, MM_ERR_INVALID, "scheduler: max_queue must be >= 1");
    if (e->opt.max_tokens < e->opt.max_seqs)
        return mm_err_set(err, MM_ERR_INVALID,
                          "scheduler: the engine's step (%lld tokens) must hold a decode token "
                          "of every slot (%d)",
                          (long long)e->opt.max_tokens, e->opt.max_seqs);
    struct mm_scheduler *s = calloc(1, sizeof *s);
    if (!s)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    s->e = e;
    s->tok = tok;
    s->o = *o;
    s->hard = e->opt.max_tokens;
    s->budget =
        o->max_batch_tokens > 0 && o->max_batch_tokens < s->hard ? o->max_batch_tokens : s->hard;
    s->max_model_len = o->max_model_len > 0 && o->max_model_len < e->opt.max_context
                           ? o->max_model_len
                           : e->opt.max_context;
    s->id_limit = e->cfg.llm_vocab_size + (e->w.special_emb ? e->w.special_emb->shape[0] : 0);
    for (int i = 0; i < e->n_eos; i++)
        s->eos[s->n_eos++] = e->eos_ids[i];
    const int32_t im_end = tok ? mm_tokenizer_find(tok, "<|im_end|>") : -1;
    if (im_end >= 0 && !is_eos(s, im_end))
        s->eos[s->n_eos++] = im_end;
    s->free_slots = e->opt.max_seqs;
    /* the address too: engines started in the same second draw different seeds */
    s->seed_ctr = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)s;
    const size_t ms = (size_t)e->opt.max_seqs;
    s->pre = calloc(ms, sizeof *s->pre);
    s->run = calloc(ms, sizeof *s->run);
    s->steps = calloc(ms, sizeof *s->steps);
    s->owners = calloc(ms, sizeof *s->owners);
    s->samples = calloc(ms, sizeof *s->samples);
    s->sowners = calloc(ms, sizeof *s->sowners);
    s->outs = calloc(ms, sizeof *s->outs);
    s->fail_jobs = calloc(ms, sizeof *s->fail_jobs);
    s->snaps = calloc(ms, sizeof *s->snaps);
    const size_t side = (size_t)e->cfg.force_image_size;
    if (e->opt.max_tiles > 0) /* pages are touched by the first step with pixels */
        s->tile_buf = malloc((size_t)e->opt.max_tiles * 3 * side * side * sizeof *s->tile_buf);
    s->host = o->state_cache;
    s->gpu_tier = o->state_cache_gpu;
    { /* the snapshot format: two engines agreeing on these read each other's */
        const struct mm_backend_ops *ops = e->be.ops;
        uint64_t f[8] = {ops->slot_bytes(e->be.ctx),
                         ops->kv_block_bytes(e->be.ctx, MM_STACK_EMB),
                         ops->kv_block_bytes(e->be.ctx, MM_STACK_LLM),
                         (uint64_t)e->cfg.vocab_size,
                         (uint64_t)e->cfg.llm.num_layers,
                         (uint64_t)e->cfg.emb.num_layers,
                         (uint64_t)e->cfg.llm.hidden,
                         0};
        for (const char *c = ops->name; *c; c++)
            f[7] = f[7] * 131 + (unsigned char)*c;
        s->layout = mm_state_hash(f, 8);
    }
    enum mm_status st = MM_OK;
    if (!s->pre || !s->run || !s->steps || !s->owners || !s->samples || !s->sowners || !s->outs ||
        !s->fail_jobs || !s->snaps || (e->opt.max_tiles > 0 && !s->tile_buf))
        st = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    if (st == MM_OK)
        st = mm_metrics_create(s->max_model_len, &s->m, err);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->cache_mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    pthread_cond_init(&s->finished, &ca);
    pthread_condattr_destroy(&ca);
    if (st == MM_OK && pthread_create(&s->thread, NULL, engine_main, s) != 0)
        st = mm_err_set(err, MM_ERR_NOMEM, "scheduler: cannot start the engine thread");
    if (st != MM_OK) {
        mm_scheduler_free(s, 0);
        return st;
    }
    s->started = true;
    /* the gauges' totals before the first step */
    const int64_t zero[2] = {0, 0};
    int64_t used[2], total[2];
    mm_engine_kv_usage(e, used, total);
    mm_metrics_gauges(s->m, 0, 0, 0, e->opt.max_seqs, zero, total);
    *out = s;
    return MM_OK;
}

/* What only the model can tell: ids, image runs, lengths, KV capacity. */
static enum mm_status check_request(const struct mm_scheduler *s, const struct mm_request *r,
                                    struct mm_err *err)
{
    const struct mm_config *cfg = &s->e->cfg;
    const struct mm_request_params *p = mm_request_params_of(r);
    int64_t n, n_tiles;
    const int32_t *ids = mm_request_prompt(r, &n);
    mm_request_tiles(r, &n_tiles);
    const int64_t tpt = cfg->tokens_per_tile;
    int64_t run = 0, img = 0;
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= s->id_limit)
            return mm_err_set(err, MM_ERR_INVALID, "token id %d outside the vocabulary (0..%lld)",
                              ids[i], (long long)s->id_limit - 1);
        const bool is_img = ids[i] == cfg->img_context_token_id;
        img += is_img;
        run = is_img ? run + 1 : 0;
        if (run > 0 && (i + 1 == n || ids[i + 1] != cfg->img_context_token_id) && run % tpt)
            return mm_err_set(err, MM_ERR_INVALID,
                              "an image run of %lld tokens is not a whole number of %lld-token "
                              "tiles",
                              (long long)run, (long long)tpt);
    }
    if (img != n_tiles * tpt)
        return mm_err_set(err, MM_ERR_INVALID,
                          "%lld image-context tokens but %lld tiles (%lld tokens per tile)",
                          (long long)img, (long long)n_tiles, (long long)tpt);
    if (n_tiles > 0 && (s->e->opt.max_tiles < 1 || s->hard < tpt))
        return mm_err_set(err, MM_ERR_INVALID, "this engine was started without image support");
    if (p->n > s->e->opt.max_seqs)
        return mm_err_set(err, MM_ERR_INVALID, "n = %d exceeds the %d sequence slots", p->n,
                          s->e->opt.max_seqs);
    if (n >= s->max_model_len || (p->max_tokens > 0 && n + p->max_tokens > s->max_model_len))
        return mm_err_set(err, MM_ERR_INVALID,
                          "this model's maximum context length is %lld tokens; the request has "
                          "%lld prompt tokens and asks for %lld more",
                          (long long)s->max_model_len, (long long)n,
                          (long long)(p->max_tokens > 0 ? p->max_tokens : 1));
    for (int st = 0; st < 2; st++) { /* (pool sizes are fixed at open: no race) */
        const int64_t need = p->n * mm_sched_blocks_for_prefill(s, st, n, n_tiles);
        const int64_t total = s->e->kv[st] ? s->e->kv_blocks[st] : 0;
        if (need > total)
            return mm_err_set(err, MM_ERR_INVALID,
                              "the prompt needs %lld KV blocks, more than the cache holds (%lld)",
                              (long long)need, (long long)total);
    }
    if (p->n_stop > 0 && !s->tok)
        return mm_err_set(err, MM_ERR_INVALID, "stop strings need the model's tokenizer");
    return MM_OK;
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* The state-cache keys of r's prompt and their prefix hashes: the
 * request's own (computed once per request, request_engine.h), or, for a
 * request whose keys were computed with another model's parameters, new
 * ones in *own_keys / *own_ph (malloc'ed, the caller's; else NULL). */
static enum mm_status prompt_keys(const struct mm_scheduler *s, const struct mm_request *r,
                                  const uint64_t **keys, const uint64_t **ph, uint64_t **own_keys,
                                  uint64_t **own_ph, struct mm_err *err)
{
    const struct mm_config *cfg = &s->e->cfg;
    const int64_t tile_floats = 3 * cfg->force_image_size * cfg->force_image_size;
    const int32_t img_id = (int32_t)cfg->img_context_token_id;
    *own_keys = *own_ph = NULL;
    enum mm_status st =
        mm_request_state_keys(r, tile_floats, img_id, cfg->tokens_per_tile, keys, ph, err);
    if (st != MM_ERR_INVALID || !*keys)
        return st;
    int64_t n, n_tiles; /* computed for other parameters: this engine's own */
    const int32_t *ids = mm_request_prompt(r, &n);
    const float *tiles = mm_request_tiles(r, &n_tiles);
    const uint8_t *pixels = mm_request_pixels(r, &n_tiles);
    if ((st = mm_state_keys_digested(ids, n, tiles, pixels, NULL, n_tiles, tile_floats, img_id,
                                     cfg->tokens_per_tile, own_keys, err)) != MM_OK)
        return st;
    if (!(*own_ph = malloc((size_t)(n > 0 ? n : 1) * sizeof **own_ph))) {
        free(*own_keys);
        *own_keys = NULL;
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    }
    mm_state_prefix_hashes(*own_keys, n, *own_ph);
    *keys = *own_keys;
    *ph = *own_ph;
    return MM_OK;
}

int64_t mm_scheduler_cached_prefix(struct mm_scheduler *s, const struct mm_request *r)
{
    int64_t n;
    mm_request_prompt(r, &n);
    const uint64_t *keys, *ph;
    uint64_t *own_keys, *own_ph;
    struct mm_err err;
    if (!s->host || n < 2 || prompt_keys(s, r, &keys, &ph, &own_keys, &own_ph, &err) != MM_OK)
        return 0;
    const int64_t max = n - 1;
    int64_t best = 0;
    pthread_mutex_lock(&s->cache_mu);
    for (int32_t i = 0; i < s->e->opt.max_seqs; i++) {
        const struct snap *sn = &s->snaps[i];
        if (sn->keys && sn->n <= max && sn->n > best && sn->hash == ph[sn->n - 1] &&
            memcmp(sn->keys, keys, (size_t)sn->n * sizeof *keys) == 0)
            best = sn->n;
    }
    pthread_mutex_unlock(&s->cache_mu);
    const int64_t host = mm_state_cache_find(s->host, s->layout, keys, ph, max, NULL);
    free(own_keys);
    free(own_ph);
    return host > best ? host : best;
}

enum mm_status mm_scheduler_submit(struct mm_scheduler *s, struct mm_request *r, struct mm_err *err)
{
    enum mm_status st = check_request(s, r, err);
    if (st != MM_OK)
        return st;
    pthread_mutex_lock(&s->mu); /* refuse early what the checks below would refuse */
    const bool closed = s->draining || s->stopping, full = s->queued >= s->o.max_queue;
    const bool failed = s->failed;
    pthread_mutex_unlock(&s->mu);
    if (failed)
        return mm_err_set(err, MM_ERR_UNAVAILABLE, "the engine is out of service after a failure");
    if (closed)
        return mm_err_set(err, MM_ERR_UNAVAILABLE, "the server is shutting down");
    if (full && !mm_request_submitted(r))
        return mm_err_set(err, MM_ERR_LIMIT, "the queue is full (%lld requests waiting)",
                          (long long)s->o.max_queue);
    const struct mm_request_params *p = mm_request_params_of(r);
    struct job *j = calloc(1, sizeof *j);
    if (!j || !(j->ch = calloc((size_t)p->n, sizeof *j->ch))) {
        free(j);
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    }
    j->r = r;
    j->p = p;
    j->prompt = mm_request_prompt(r, &j->n_prompt);
    mm_request_tiles(r, &j->n_tiles);
    if (s->host &&
        (st = prompt_keys(s, r, &j->keys, &j->ph, &j->own_keys, &j->own_ph, err)) != MM_OK) {
        free_job(j);
        return st;
    }
    j->max_gen = s->max_model_len - j->n_prompt;
    if (p->max_tokens > 0 && p->max_tokens < j->max_gen)
        j->max_gen = p->max_tokens;
    j->first = (struct pf){.job = j,
                           .choice = -1,
                           .ids = j->prompt,
                           .n_ids = j->n_prompt,
                           .n_prompt = j->n_prompt,
                           .slot = -1};
    for (int32_t c = 0; c < p->n && st == MM_OK; c++) {
        j->ch[c].slot = -1;
        if (s->tok && (st = mm_detok_create(s->tok, &j->ch[c].detok, err)) == MM_OK)
            st = mm_stops_init(&j->ch[c].stops, p->stop, p->n_stop, err);
    }
    if (st != MM_OK) {
        free_job(j);
        return st;
    }
    pthread_mutex_lock(&s->mu);
    if (mm_request_submitted(r))
        st = mm_err_set(err, MM_ERR_INVALID, "request %s was submitted already", mm_request_id(r));
    else if (s->failed)
        st = mm_err_set(err, MM_ERR_UNAVAILABLE, "the engine is out of service after a failure");
    else if (s->draining || s->stopping)
        st = mm_err_set(err, MM_ERR_UNAVAILABLE, "the server is shutting down");
    else if (s->queued >= s->o.max_queue)
        st = mm_err_set(err, MM_ERR_LIMIT, "the queue is full (%lld requests waiting)",
                        (long long)s->queued);
    else if (!mm_request_claim(r))
        st = mm_err_set(err, MM_ERR_INVALID, "request %s was submitted already", mm_request_id(r));
    if (st != MM_OK) {
        pthread_mutex_unlock(&s->mu);
        free_job(j);
        return st;
    }
    if (!p->has_seed)
        mm_request_set_seed(r, splitmix64(s->seed_ctr++));
    mm_request_ref(r);
    j->t_submit = mm_sched_now();
    if (s->in_tail)
        s->in_tail->next = j;
    else
        s->in_head = j;
    s->in_tail = j;
    s->n_incoming++;
    s->queued++;
    s->in_flight++;
    s->seqs += p->n;
    s->incoming_tokens += j->n_prompt;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
    return MM_OK;
}

void mm_scheduler_drain(struct mm_scheduler *s)
{
    pthread_mutex_lock(&s->mu);
    s->draining = true;
    pthread_mutex_unlock(&s->mu);
}

int64_t mm_scheduler_in_flight(const struct mm_scheduler *s)
{
    struct mm_scheduler *w = (struct mm_scheduler *)s;
    pthread_mutex_lock(&w->mu);
    const int64_t n = s->in_flight;
    pthread_mutex_unlock(&w->mu);
    return n;
}

void mm_scheduler_cancel_all(struct mm_scheduler *s)
{
    pthread_mutex_lock(&s->mu);
    s->cancel_gen++;
    for (struct job *j = s->in_head; j; j = j->next)
        mm_request_cancel(j->r);
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

void mm_scheduler_free(struct mm_scheduler *s, int64_t timeout_ms)
{
    if (!s)
        return;
    if (s->started) {
        mm_scheduler_drain(s);
        struct timespec dl;
        clock_gettime(CLOCK_MONOTONIC, &dl);
        if (timeout_ms > 0) {
            dl.tv_sec += timeout_ms / 1000;
            dl.tv_nsec += (timeout_ms % 1000) * 1000000;
            if (dl.tv_nsec >= 1000000000)
                dl.tv_sec++, dl.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&s->mu);
        int rc = 0;
        while (s->in_flight > 0 && timeout_ms != 0 && rc == 0)
            rc = timeout_ms < 0 ? pthread_cond_wait(&s->finished, &s->mu)
                                : pthread_cond_timedwait(&s->finished, &s->mu, &dl);
        pthread_mutex_unlock(&s->mu);
        mm_scheduler_cancel_all(s);
        pthread_mutex_lock(&s->mu);
        s->stopping = true;
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    for (int32_t i = 0; s->snaps && i < s->e->opt.max_seqs; i++)
        if (s->snaps[i].keys) { /* the engine goes back to its owner with every slot free */
            free(s->snaps[i].keys);
            mm_engine_slot_release(s->e, i);
        }
    free(s->snaps);
    pthread_mutex_destroy(&s->cache_mu);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->finished);
    mm_metrics_free(s->m);
    free(s->waiting);
    free(s->pre);
    free(s->run);
    free(s->touched);
    free(s->steps);
    free(s->tile_buf);
    free(s->owners);
    free(s->samples);
    free(s->sowners);
    free(s->outs);
    free(s->fail_jobs);
    free(s);
}

const struct mm_metrics *mm_scheduler_metrics(const struct mm_scheduler *s) { return s->m; }

int64_t mm_scheduler_max_model_len(const struct mm_scheduler *s) { return s->max_model_len; }

void mm_scheduler_load(const struct mm_scheduler *s, struct mm_scheduler_load *out)
{
    struct mm_scheduler *w = (struct mm_scheduler *)s; /* the lock is not part of the value */
    pthread_mutex_lock(&w->mu);
    out->serving = !s->failed && !s->draining && !s->stopping;
    out->failed = s->failed;
    out->requests = s->in_flight;
    out->queued = s->queued;
    out->seqs = s->seqs;
    out->prefill_tokens = s->pending_tokens + s->incoming_tokens;
    for (int k = 0; k < 2; k++)
        out->kv_used[k] = s->kv_used[k];
    pthread_mutex_unlock(&w->mu);
    /* fixed at create */
    out->slots = s->e->opt.max_seqs;
    out->budget = s->budget;
    for (int k = 0; k < 2; k++)
        out->kv_total[k] = s->e->kv[k] ? s->e->kv_blocks[k] : 0;
}
