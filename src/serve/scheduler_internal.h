/* scheduler_internal.h: the scheduler's private types and the functions
 * its files share (internal to the scheduler: only scheduler.c,
 * admission.c and snapshots.c include it; everyone else goes through
 * scheduler.h).
 *
 * Design: one struct mm_scheduler, split by concept over three files:
 * scheduler.c (the lists, one step, the engine thread, the public side),
 * admission.c (slots and KV blocks for waiting prefills, preemption) and
 * snapshots.c (the state cache's GPU tier and hits). Every function here
 * runs on the engine thread unless it says otherwise. */
#ifndef MM_SERVE_SCHEDULER_INTERNAL_H
#define MM_SERVE_SCHEDULER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "engine/engine.h"
#include "serve/detokenizer.h"
#include "serve/metrics.h"
#include "serve/request.h"
#include "serve/scheduler.h"
#include "serve/state_cache.h"
#include "serve/stops.h"

struct job;

/* One choice of a request. */
struct choice {
    int32_t slot; /* -1 while it holds none */
    bool done;
    int32_t *gen; /* generated ids; the last one is fed by the next decode */
    int64_t n_gen, cap_gen;
    struct mm_detok *detok; /* NULL without a tokenizer */
    struct mm_stops stops;
    double t_first, t_last;
};

/* A prefill, waiting or admitted. */
struct pf {
    struct job *job;
    int32_t choice; /* -1: the prompt, for every choice; else one resumed choice */
    int32_t *own;   /* resumed: prompt + generated ids (owned) */
    const int32_t *ids;
    int64_t n_ids, n_prompt; /* ids past n_prompt are generated text */
    int64_t done, tiles_done;
    int64_t chunk, chunk_tiles; /* this step's */
    int32_t slot;               /* where it prefills */
    uint64_t admitted;          /* admission order (preemption picks the latest) */
};

struct job {
    struct mm_request *r;
    /* state cache: the prompt's keys and prefix hashes (NULL: off), the
     * request's (borrowed) unless own_keys / own_ph hold this engine's */
    const uint64_t *keys, *ph;
    uint64_t *own_keys, *own_ph;
    int64_t cached; /* prompt tokens the last admission restored from a snapshot */
    const struct mm_request_params *p;
    const int32_t *prompt;
    int64_t n_prompt;
    int64_t n_tiles;
    int64_t max_gen; /* per choice: max_tokens and the context */
    struct choice *ch;
    int32_t n_done;
    struct pf first;
    double t_submit, t_admit;
    bool admitted_once, touched;
    uint64_t mark;
    struct job *next; /* submission queue */
};

/* A decoding choice. */
struct run {
    struct job *job;
    int32_t choice;
    uint64_t admitted;
};

/* A snapshot in a state slot (GPU tier); keys NULL: the slot holds none. */
struct snap {
    uint64_t *keys;
    int64_t n;
    uint64_t hash, used; /* hash of the keys; recency (larger: more recent) */
    int pins;
};

/* Where an admission starts from: len prompt tokens (tiles of them) from
 * the snapshot in slot `slot`, or from host entry `en`, or from nothing. */
struct hit {
    int64_t len, tiles;
    int32_t slot;
    struct mm_state_entry *en;
};

/* What a step row belongs to. */
struct owner {
    struct pf *pf; /* NULL: run[idx] */
    int idx;
};

struct mm_scheduler {
    struct mm_engine *e;
    const struct mm_tokenizer *tok;
    struct mm_scheduler_options o;
    int64_t budget, hard, max_model_len, id_limit;
    int32_t eos[MM_ENGINE_MAX_EOS + 1];
    int n_eos;
    struct mm_metrics *m;
    pthread_t thread;
    bool started;
    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t wake;     /* the engine thread's */
    pthread_cond_t finished; /* in_flight went down */
    struct job *in_head, *in_tail;
    int64_t n_incoming, queued, in_flight;
    int64_t seqs;            /* choices of the requests in flight */
    int64_t incoming_tokens; /* prompt tokens of the requests in in_head */
    int64_t pending_tokens;  /* ids left to prefill in waiting and pre, as of the last step */
    int64_t kv_used[2];      /* as of the last step */
    bool draining, stopping;
    bool failed; /* the backend failed: out of service (mm_scheduler_load) */
    char fail_msg[MM_ERR_MSG_MAX];
    uint64_t cancel_gen, seed_ctr;
    /* engine thread only */
    uint64_t seen_cancel_gen, admit_ctr, mark_ctr;
    struct pf **waiting;
    int64_t n_waiting, cap_waiting;
    struct pf **pre;
    int n_pre;
    struct run *run;
    int n_run;
    int32_t free_slots;
    struct job **touched;
    int64_t n_touched, cap_touched;
    struct mm_seq_step *steps; /* [max_seqs] */
    float *tile_buf;           /* [opt.max_tiles][3][S][S]: a step's tiles normalised from pixels */
    struct owner *owners;      /* [max_seqs] */
    struct mm_engine_sample *samples;                /* [max_seqs] */
    struct run *sowners;                             /* [max_seqs]: job and choice of each sample */
    struct mm_sample_out *outs;                      /* [max_seqs] */
    struct job **fail_jobs;                          /* [max_seqs] */
    uint64_t gen_tokens, prompt_tokens, preemptions; /* since the last publish */
    /* state cache */
    struct mm_state_cache *host; /* NULL: no state cache */
    bool gpu_tier;
    uint64_t layout; /* this engine's snapshot format (state_cache.h) */
    pthread_mutex_t cache_mu;
    struct snap *snaps; /* [max_seqs] */
    int32_t n_snaps;
    uint64_t snap_clock;
    uint64_t c_queries, c_hits, c_query_tokens, c_hit_tokens, c_snapshots, c_evictions;
};

/* ---- scheduler.c: bookkeeping ---------------------------------------------------- */

/* Seconds on the monotonic clock (any thread). */
double mm_sched_now(void);
/* Remove one entry of run, pre or waiting (order kept). */
void mm_sched_remove_run(struct mm_scheduler *s, int idx);
void mm_sched_remove_pre(struct mm_scheduler *s, int idx);
void mm_sched_remove_waiting(struct mm_scheduler *s, int64_t idx);
/* Queues a prefill (at the front when front: a preempted one). */
enum mm_status mm_sched_push_waiting(struct mm_scheduler *s, struct pf *pf, bool front);
/* Gives a choice's slot (and its KV blocks) back, if it holds one. */
void mm_sched_release_slot(struct mm_scheduler *s, struct choice *c);
/* Frees a resumed prefill (the first one lives in its job: kept). */
void mm_sched_free_prefill(struct pf *pf);
/* Ends one choice: its FINISH event, its slot and blocks freed at once
 * (or kept as a snapshot). flush: emit the text held back. */
void mm_sched_finish_choice(struct mm_scheduler *s, struct job *j, int32_t c,
                            enum mm_finish_reason why, bool flush, enum mm_status status,
                            const char *message);
/* Ends every unfinished choice of j (cancellation, failures). */
void mm_sched_finish_job(struct mm_scheduler *s, struct job *j, enum mm_finish_reason why,
                         enum mm_status status, const char *message);

/* ---- admission.c ----------------------------------------------------------------- */

/* KV blocks a prefill of n ids with n_tiles tiles takes in stack st (any
 * thread: pool sizes are fixed at open). */
int64_t mm_sched_blocks_for_prefill(const struct mm_scheduler *s, int st, int64_t n,
                                    int64_t n_tiles);
/* Moves waiting prefills into pre, first come first served, while their
 * slots and KV blocks can be found (evicting snapshots first). */
void mm_sched_admit(struct mm_scheduler *s);
/* Reserves every decoding choice the block its next token needs,
 * evicting snapshots, then preempting the latest admitted. */
void mm_sched_grow_decodes(struct mm_scheduler *s);

/* ---- snapshots.c ----------------------------------------------------------------- */

/* The bytes a snapshot of `slot` takes in the host tier. */
size_t mm_sched_snapshot_bytes(const struct mm_scheduler *s, int32_t slot);
/* Gives up the snapshot in `slot` (to the host tier first when save). */
void mm_sched_drop_snapshot(struct mm_scheduler *s, int32_t slot, bool save);
/* The least recently used snapshot nobody is restoring from, or -1. */
int32_t mm_sched_lru_snapshot(const struct mm_scheduler *s);
/* Keeps the state of running `slot`, which consumed keys[0..n) (borrowed). */
void mm_sched_snapshot_running(struct mm_scheduler *s, int32_t slot, const uint64_t *keys,
                               int64_t n);
/* Keeps a finished choice's slot as a snapshot; false: the caller frees it. */
bool mm_sched_snapshot_finished(struct mm_scheduler *s, struct job *j, struct choice *ch);
/* The longest snapshot that begins j's prompt, pinned until
 * mm_sched_unpin_hit. */
void mm_sched_find_hit(struct mm_scheduler *s, const struct job *j, struct hit *h);
void mm_sched_unpin_hit(struct mm_scheduler *s, const struct hit *h);
/* Starts the acquired slot from the hit; false (the slot still fresh) when
 * that fails. */
bool mm_sched_restore_hit(struct mm_scheduler *s, const struct hit *h, int32_t slot);

#endif
