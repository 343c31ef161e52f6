/* engine.h: a loaded model on a backend, with its state slots: the object
 * the scheduler (and `mmmamba generate`) drives one step at a time.
 *
 * Design: a sequence lives in a slot; the engine keeps each slot's position
 * counters (one per stack: with "post" pixel shuffle the embedding stack sees
 * 1024 tokens per tile where the LLM sees 256) so callers only hand in new
 * token ids. A step may mix several sequences, each with any number of new
 * tokens (prefill chunks and single decode tokens alike). KV blocks
 * (attention layers only) come from one pool per stack, sized at open from
 * a memory budget; a slot's tables grow as it advances, or ahead of time
 * (mm_engine_kv_reserve: the scheduler reserves a prompt at admission).
 * The engine, its backend and all device state belong to one thread (the
 * engine thread); nothing here is thread-safe. */
#ifndef MM_ENGINE_ENGINE_H
#define MM_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "engine/backend.h"
#include "engine/kv_pool.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/weights.h"

enum mm_backend_kind {
    MM_BACKEND_CPU = 0,
    MM_BACKEND_CUDA,
    MM_BACKEND_CUDA_FP32, /* CUDA with fp32 weights and activations (exactness tests) */
};

struct mm_engine_options {
    enum mm_backend_kind backend;
    int device;           /* CUDA backends: the device index (0-based) */
    int n_threads;        /* CPU backend: 0 = all CPUs */
    int32_t max_seqs;     /* state slots */
    int64_t max_tokens;   /* LLM-stack tokens in one step (prefill chunk budget) */
    int64_t max_tiles;    /* image tiles in one step */
    int64_t max_context;  /* longest sequence (LLM positions) */
    bool state_fp32;      /* SSM state precision between steps */
    size_t kv_memory;     /* bytes for KV blocks (attention layers), shared by the stacks so
                             that each gets the same number of blocks; 0: enough for every
                             slot to reach max_context */
    int64_t fail_at_step; /* test hook, 0: off. From its Nth forward step on, every
                             mm_engine_check reports MM_ERR_BACKEND, as after a device
                             fault (the daemon sets it from $MMMAMBA_FAIL_ENGINE) */
    double mem_fraction;  /* > 0 (CUDA): max_seqs is an upper bound (so is max_tokens); the
                             slots, with their KV blocks when kv_memory is 0, are as many as
                             fit in this fraction of the device memory left after weights
                             and scratch; opt.max_seqs of the open engine says how many */
};

/* Defaults: CPU, 4 slots, 4096 tokens, 13 tiles, 32768 context, fp32 state. */
/* Upper bounds mm_engine_open accepts (they keep every buffer size in range). */
#define MM_ENGINE_MAX_SEQS 4096
#define MM_ENGINE_MAX_TOKENS (1 << 20)
#define MM_ENGINE_MAX_TILES 4096
#define MM_ENGINE_MAX_CONTEXT (1 << 24)
#define MM_ENGINE_MAX_EOS 8
void mm_engine_options_default(struct mm_engine_options *o);

/* New tokens of one sequence for one step. */
struct mm_seq_step {
    int32_t slot;
    const int32_t *ids; /* [n]; image positions hold img_context_token_id */
    int64_t n;
    const float *tiles; /* [n_tiles, 3, S, S] normalised, for the image runs in ids */
    int64_t n_tiles;
    bool want_logits; /* logits of the last token of this step */
    bool text_only;   /* every id is text (generated tokens): an <IMG_CONTEXT> id is
                         embedded like any special token, never an image (§3.6) */
};

struct mm_engine_slot {
    bool used;
    int64_t pos;     /* LLM-stack tokens consumed */
    int64_t emb_pos; /* embedding-stack tokens consumed */
};

struct mm_engine {
    struct mm_config cfg;
    struct mm_safetensors *st; /* owns the mapped weights */
    struct mm_weights w;       /* borrows from st */
    struct mm_backend be;
    struct mm_engine_options opt;
    struct mm_kv_pool *kv[2];     /* per stack (enum mm_stack); NULL without attention layers */
    int64_t kv_blocks[2];         /* blocks in each pool */
    struct mm_engine_slot *slots; /* [opt.max_seqs] */
    int64_t max_emb_tokens;       /* embedding-stack rows in one step */
    int64_t emb_context;          /* embedding-stack positions of a max_context sequence */
    int32_t eos_ids[MM_ENGINE_MAX_EOS]; /* generation_config.json eos_token_id (may be none) */
    int n_eos;
    /* step buffers, sized once */
    struct mm_act *x_emb, *x_llm, *patches, *img;
    struct mm_act *x_out;                  /* final activations of the last step */
    struct mm_span *spans_emb, *spans_llm; /* [max_seqs] */
    int64_t *logit_rows;                   /* [max_seqs] */
    int64_t *last_rows;                    /* [max_seqs] x_out row of each step's last token */
    int n_last;                            /* steps in the last forward */
    int64_t n_forward;                     /* forward steps begun (the fail_at_step hook) */
    struct mm_sample_req *sample_reqs;     /* [max_seqs] */
    int32_t *cow;                          /* [2][cow_cap] copy-on-write block pairs */
    int64_t cow_cap;
};

/* Loads DIR (config, weights, backend). *out is owned by the caller
 * (mm_engine_close). Engines on different devices may be opened from
 * different threads at once. */
enum mm_status mm_engine_open(const char *dir, const struct mm_engine_options *opt,
                              struct mm_engine **out, struct mm_err *err);
/* Any thread (the one that drives e now; see mm_engine_bind_thread). */
void mm_engine_close(struct mm_engine *e);

/* Prepares the calling thread to drive e (a CUDA backend's device becomes
 * the thread's current one). A thread other than the one that opened e calls
 * it before its first step. */
void mm_engine_bind_thread(struct mm_engine *e);

/* Takes a free slot with zeroed state; MM_ERR_LIMIT when none is free. */
enum mm_status mm_engine_slot_acquire(struct mm_engine *e, int32_t *slot, struct mm_err *err);
/* Frees a slot and its KV blocks. */
void mm_engine_slot_release(struct mm_engine *e, int32_t slot);

/* Runs one step. logits receives vocab_size floats per step with
 * want_logits, in order (logits may be NULL: nothing goes to the host; the
 * final activations stay for mm_engine_sample). Input is validated (ids in range, image runs
 * matching n_tiles, limits) before anything runs; on error no state changes
 * (KV blocks reserved for the step are given back too). Two steps may not
 * name the same slot. Each step's tiles must hold n_tiles tiles: the caller
 * guarantees the buffer size. */
enum mm_status mm_engine_forward(struct mm_engine *e, const struct mm_seq_step *steps, int n_steps,
                                 float *logits, struct mm_err *err);

/* Embedding-stack rows a step of n ids with n_tiles tiles occupies. */
int64_t mm_engine_emb_rows(const struct mm_config *cfg, int64_t n, int64_t n_tiles);

/* One token to draw from the last mm_engine_forward: the logits of the last
 * token of steps[step] (any slot may sample them: n > 1 forks sample the
 * prompt's last row once per choice, each into its own slot's counts). */
struct mm_engine_sample {
    int step;
    int32_t slot;
    uint32_t stream, counter; /* Philox stream (choice) and counter (output index) */
    struct mm_sample_params p;
};

/* Samples on the backend (backend.h `sample`): only ids and logprobs come
 * back. At most max_seqs requests; steps and slots must be valid. */
enum mm_status mm_engine_sample(struct mm_engine *e, const struct mm_engine_sample *reqs, int n,
                                struct mm_sample_out *out, struct mm_err *err);

/* The backend's sticky status since the last check: MM_ERR_BACKEND with the
 * backend's message when any op failed. Call it once per step. */
enum mm_status mm_engine_check(struct mm_engine *e, struct mm_err *err);

/* Adds ids to a slot's token counts (penalties): prompt (output false) or
 * output (a resumed sequence re-counts what it generated). */
void mm_engine_slot_count(struct mm_engine *e, int32_t slot, const int32_t *ids, int64_t n,
                          bool output);

/* Copies slot src (state, token counts, positions) into the acquired slot
 * dst; dst's own KV blocks are let go and src's are shared by reference
 * (copied on write: the next reserve or step of either slot gives it
 * private copies of the shared blocks it would write, which takes a free
 * block per stack when the position is inside a block). Takes no block and
 * does not fail for want of blocks. */
enum mm_status mm_engine_slot_copy(struct mm_engine *e, int32_t src, int32_t dst,
                                   struct mm_err *err);

/* The state cache's snapshots (serve/state_cache.h). A saved slot is the
 * backend's slot_save bytes, then for each stack with attention layers its
 * KV blocks covering the positions (mm_kv_blocks_for(pos) blocks), in
 * table order: mm_engine_snapshot_bytes bytes for those positions. */
size_t mm_engine_snapshot_bytes(const struct mm_engine *e, int64_t pos, int64_t emb_pos);
/* Saves an acquired slot (state, counts, KV) into host (the caller's,
 * mm_engine_snapshot_bytes(e, its pos, its emb_pos) bytes). */
void mm_engine_slot_save(struct mm_engine *e, int32_t slot, void *host);
/* Restores such a save into the acquired slot, with fresh KV blocks for
 * the positions; MM_ERR_LIMIT when blocks run out (the slot is then empty,
 * still acquired). */
enum mm_status mm_engine_slot_restore(struct mm_engine *e, int32_t slot, int64_t pos,
                                      int64_t emb_pos, const void *host, struct mm_err *err);
/* Zeroes the slot's token counts (penalties), keeping its state. */
void mm_engine_slot_clear_counts(struct mm_engine *e, int32_t slot);
/* Gives back the slot's KV blocks beyond its position (reserved ahead). */
void mm_engine_kv_trim(struct mm_engine *e, int32_t slot);
/* Copy-on-write now (mm_engine_kv_reserve and steps do it too);
 * MM_ERR_LIMIT when blocks run out. */
enum mm_status mm_engine_kv_unshare(struct mm_engine *e, int32_t slot, struct mm_err *err);

/* KV blocks per stack that n more ids (n_tiles of them in tiles) would need
 * in slot beyond the blocks it holds (copy-on-write copies included). */
void mm_engine_kv_need(const struct mm_engine *e, int32_t slot, int64_t n, int64_t n_tiles,
                       int64_t need[2]);
/* Grows slot's tables to cover n more ids (n_tiles tiles) past its
 * position; MM_ERR_LIMIT (nothing changed) when blocks run out. */
enum mm_status mm_engine_kv_reserve(struct mm_engine *e, int32_t slot, int64_t n, int64_t n_tiles,
                                    struct mm_err *err);
/* Blocks in use and in total per stack (0 for a stack without attention). */
void mm_engine_kv_usage(const struct mm_engine *e, int64_t used[2], int64_t total[2]);

#endif
