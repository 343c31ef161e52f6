/* engine.c: opening a model onto a backend, and the slot table (see engine.h).
 * The step itself is in forward.c. */
#include "engine/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/log.h"
#include "engine/cpu_backend.h"
#include "engine/cuda_backend.h"

#ifndef MM_HAVE_CUDA
enum mm_status mm_cuda_backend_create(bool fp32, struct mm_backend *b, struct mm_err *err)
{
    (void)fp32;
    (void)b;
    return mm_err_set(err, MM_ERR_UNSUPPORTED,
                      "this build has no CUDA backend (no nvcc at configure); use --backend cpu");
}

enum mm_status mm_cuda_backend_create_on(int device, bool fp32, struct mm_backend *b,
                                         struct mm_err *err)
{
    (void)device;
    return mm_cuda_backend_create(fp32, b, err);
}

void mm_cuda_backend_use(const struct mm_backend *b) { (void)b; }

int mm_cuda_device_count(void) { return 0; }

enum mm_status mm_cuda_measure(double *read_tbs, double *gemm_tflops, struct mm_err *err)
{
    *read_tbs = *gemm_tflops = 0;
    return mm_err_set(err, MM_ERR_UNSUPPORTED, "this build has no CUDA backend");
}
#endif

static bool is_cuda(enum mm_backend_kind k)
{
    return k == MM_BACKEND_CUDA || k == MM_BACKEND_CUDA_FP32;
}

void mm_engine_bind_thread(struct mm_engine *e)
{
    if (is_cuda(e->opt.backend))
        mm_cuda_backend_use(&e->be);
}

void mm_engine_options_default(struct mm_engine_options *o)
{
    memset(o, 0, sizeof *o);
    o->backend = MM_BACKEND_CPU;
    o->max_seqs = 4;
    o->max_tokens = 4096;
    o->max_tiles = 13;
    o->max_context = 32768;
    o->state_fp32 = true;
}

static int64_t stack_mha_layers(const struct mm_stack_config *sc)
{
    int64_t n = 0;
    for (int64_t i = 0; i < sc->num_layers; i++)
        n += sc->kinds[i] == MM_LAYER_MHA;
    return n;
}

/* EOS ids from generation_config.json ("eos_token_id": a number or a list);
 * the file and the key are optional. */
static enum mm_status load_eos(struct mm_engine *e, const char *dir, struct mm_err *err)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/generation_config.json", dir) >= (int)sizeof path)
        return mm_err_set(err, MM_ERR_INVALID, "model path too long");
    cJSON *root;
    struct mm_err ignored;
    if (mm_json_read_file(path, 1 << 20, &root, &ignored) != MM_OK)
        return MM_OK; /* no generation config: no EOS beyond what the caller adds */
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    enum mm_status st = MM_OK;
    const cJSON *item = cJSON_IsArray(eos) ? eos->child : eos;
    for (; item && st == MM_OK; item = cJSON_IsArray(eos) ? item->next : NULL) {
        const double v = cJSON_IsNumber(item) ? item->valuedouble : -1;
        if (v < 0 || v >= (double)e->cfg.vocab_size || v != (double)(int32_t)v)
            st = mm_err_set(err, MM_ERR_FORMAT,
                            "generation_config.json: eos_token_id must be ids below %lld",
                            (long long)e->cfg.vocab_size);
        else if (e->n_eos < MM_ENGINE_MAX_EOS)
            e->eos_ids[e->n_eos++] = (int32_t)v;
    }
    cJSON_Delete(root);
    return st;
}

int64_t mm_engine_emb_rows(const struct mm_config *cfg, int64_t n, int64_t n_tiles)
{
    /* "post": each tile's tokens_per_tile ids stand for P² patch rows */
    if (cfg->shuffle_loc == MM_SHUFFLE_POST)
        return n + n_tiles * (cfg->patches_per_side * cfg->patches_per_side - cfg->tokens_per_tile);
    return n;
}

enum mm_status mm_engine_open(const char *dir, const struct mm_engine_options *opt,
                              struct mm_engine **out, struct mm_err *err)
{
    if (opt->max_seqs < 1 || opt->max_seqs > MM_ENGINE_MAX_SEQS || opt->max_tokens < 1 ||
        opt->max_tokens > MM_ENGINE_MAX_TOKENS || opt->max_tiles < 0 ||
        opt->max_tiles > MM_ENGINE_MAX_TILES || opt->max_context < 1 ||
        opt->max_context > MM_ENGINE_MAX_CONTEXT)
        return mm_err_set(err, MM_ERR_INVALID,
                          "engine: limits out of range (slots 1..%d, tokens 1..%d, tiles 0..%d, "
                          "context 1..%d)",
                          MM_ENGINE_MAX_SEQS, MM_ENGINE_MAX_TOKENS, MM_ENGINE_MAX_TILES,
                          MM_ENGINE_MAX_CONTEXT);
    struct mm_engine *e = calloc(1, sizeof *e);
    if (!e)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    e->opt = *opt;
    enum mm_status st;
    if ((st = mm_config_load(dir, &e->cfg, err)) != MM_OK ||
        (st = mm_safetensors_open_dir(dir, &e->st, err)) != MM_OK ||
        (st = mm_weights_bind(&e->cfg, e->st, &e->w, err)) != MM_OK)
        goto fail;
    if (is_cuda(opt->backend))
        st = mm_cuda_backend_create_on(opt->device, opt->backend == MM_BACKEND_CUDA_FP32, &e->be,
                                       err);
    else
        st = mm_cpu_backend_create(opt->n_threads, &e->be, err);
    if (st != MM_OK)
        goto fail;

    const struct mm_config *cfg = &e->cfg;
    const int64_t P2 = cfg->patches_per_side * cfg->patches_per_side;
    /* a step's image tiles must fit inside its token budget */
    e->max_emb_tokens = mm_engine_emb_rows(cfg, opt->max_tokens, opt->max_tiles);
    const int64_t max_rows =
        e->max_emb_tokens > P2 * opt->max_tiles ? e->max_emb_tokens : P2 * opt->max_tiles;
    const int64_t emb_context =
        mm_engine_emb_rows(cfg, opt->max_context, opt->max_context / cfg->tokens_per_tile);
    /* sized from device memory: max_seqs (at most one slot per token of a
     * step, which a decode step of every slot needs) is the upper bound */
    const bool sized = opt->mem_fraction > 0 && e->be.ops->limits;
    struct mm_backend_limits lim = {
        .n_slots =
            sized && opt->max_tokens < opt->max_seqs ? (int32_t)opt->max_tokens : opt->max_seqs,
        .max_tokens = max_rows,
        .max_tiles = opt->max_tiles,
        .max_context = emb_context,
        .state_fp32 = opt->state_fp32,
        .mem_fraction = sized ? opt->mem_fraction : 0,
    };
    e->emb_context = emb_context;
    /* KV pools, one per stack with attention: a block holds MM_KV_BLOCK
     * tokens of every attention layer of its stack (fp32 on the CPU, bf16
     * on CUDA); kv_memory buys the same number of blocks for each stack */
    const size_t elem = opt->backend == MM_BACKEND_CUDA ? 2 : 4;
    size_t block_bytes[2], pair_bytes = 0;
    const int64_t ctx_blocks[2] = {mm_kv_blocks_for(emb_context),
                                   mm_kv_blocks_for(opt->max_context)};
    for (int s = 0; s < 2; s++) {
        const struct mm_stack_config *sc = s == MM_STACK_EMB ? &cfg->emb : &cfg->llm;
        block_bytes[s] =
            (size_t)(stack_mha_layers(sc) * 2 * MM_KV_BLOCK * sc->kv_heads * sc->head_dim) * elem;
        pair_bytes += block_bytes[s];
    }
    for (int s = 0; s < 2 && pair_bytes > 0; s++) {
        if (block_bytes[s] == 0)
            continue;
        const int64_t full = ctx_blocks[s] * lim.n_slots;
        int64_t n = full;
        if (opt->kv_memory > 0) {
            const size_t fit = opt->kv_memory / pair_bytes;
            n = fit < (size_t)full ? (int64_t)fit : full;
        }
        if (n < 1 || n > INT32_MAX) {
            st = mm_err_set(err, MM_ERR_INVALID,
                            "engine: kv_memory of %zu bytes holds no KV block (one block of "
                            "each stack takes %zu bytes)",
                            opt->kv_memory, pair_bytes);
            goto fail;
        }
        lim.n_kv_blocks[s] = n;
        if (sized && opt->kv_memory == 0)
            lim.kv_blocks_per_slot[s] = ctx_blocks[s];
    }
    if (pair_bytes > 0) { /* copy-on-write pairs of one table (mm_kv_pool_unshare) */
        const int64_t nb = ctx_blocks[0] > ctx_blocks[1] ? ctx_blocks[0] : ctx_blocks[1];
        e->cow = malloc(2 * (size_t)nb * sizeof *e->cow);
        if (!e->cow) {
            st = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
            goto fail;
        }
        e->cow_cap = nb;
    }
    if ((st = load_eos(e, dir, err)) != MM_OK)
        goto fail;
    if ((st = e->be.ops->load(e->be.ctx, cfg, &e->w, &lim, err)) != MM_OK)
        goto fail;
    if (sized)
        e->be.ops->limits(e->be.ctx, &lim);
    e->opt.max_seqs = lim.n_slots;
    for (int s = 0; s < 2; s++) {
        if (block_bytes[s] == 0)
            continue;
        e->kv_blocks[s] = lim.n_kv_blocks[s];
        if ((st = mm_kv_pool_create(lim.n_kv_blocks[s], lim.n_slots, 1, ctx_blocks[s], &e->kv[s],
                                    err)) != MM_OK)
            goto fail;
    }
    const int64_t H = cfg->llm.hidden;
    e->x_emb = e->be.ops->act_alloc(e->be.ctx, max_rows, H);
    /* at least a row per slot: a backend may pad a decode step (CUDA graphs) */
    e->x_llm = e->be.ops->act_alloc(
        e->be.ctx, opt->max_tokens > opt->max_seqs ? opt->max_tokens : opt->max_seqs, H);
    e->patches = e->be.ops->act_alloc(e->be.ctx, opt->max_tiles * P2, H);
    e->img = e->be.ops->act_alloc(e->be.ctx, opt->max_tiles * cfg->tokens_per_tile, H);
    e->slots = calloc((size_t)e->opt.max_seqs, sizeof *e->slots);
    e->spans_emb = calloc((size_t)e->opt.max_seqs, sizeof *e->spans_emb);
    e->spans_llm = calloc((size_t)e->opt.max_seqs, sizeof *e->spans_llm);
    e->logit_rows = calloc((size_t)e->opt.max_seqs, sizeof *e->logit_rows);
    e->last_rows = calloc((size_t)e->opt.max_seqs, sizeof *e->last_rows);
    e->sample_reqs = calloc((size_t)e->opt.max_seqs, sizeof *e->sample_reqs);
    if (!e->x_emb || !e->x_llm || !e->patches || !e->img || !e->slots || !e->spans_emb ||
        !e->spans_llm || !e->logit_rows || !e->last_rows || !e->sample_reqs) {
        st = mm_err_set(err, MM_ERR_NOMEM, "engine: out of memory for step buffers");
        goto fail;
    }
    char where[32] = "";
    if (is_cuda(opt->backend))
        snprintf(where, sizeof where, " on device %d", opt->device);
    MM_INFO("engine: %s backend%s, %d slots, %lld tokens/step, %.3f B parameters", e->be.ops->name,
            where, e->opt.max_seqs, (long long)opt->max_tokens, (double)e->w.n_params / 1e9);
    *out = e;
    return MM_OK;
fail:
    mm_engine_close(e);
    return st;
}

void mm_engine_close(struct mm_engine *e)
{
    if (!e)
        return;
    if (e->be.ops)
        e->be.ops->destroy(e->be.ctx);
    mm_kv_pool_free(e->kv[0]);
    mm_kv_pool_free(e->kv[1]);
    mm_safetensors_close(e->st);
    free(e->slots);
    free(e->spans_emb);
    free(e->spans_llm);
    free(e->logit_rows);
    free(e->last_rows);
    free(e->sample_reqs);
    free(e->cow);
    free(e);
}

enum mm_status mm_engine_slot_acquire(struct mm_engine *e, int32_t *slot, struct mm_err *err)
{
    for (int32_t i = 0; i < e->opt.max_seqs; i++)
        if (!e->slots[i].used) {
            e->slots[i] = (struct mm_engine_slot){.used = true};
            e->be.ops->slot_reset(e->be.ctx, i);
            *slot = i;
            return MM_OK;
        }
    return mm_err_set(err, MM_ERR_LIMIT, "all %d sequence slots are busy", e->opt.max_seqs);
}

void mm_engine_slot_release(struct mm_engine *e, int32_t slot)
{
    if (slot < 0 || slot >= e->opt.max_seqs)
        return;
    e->slots[slot].used = false;
    for (int s = 0; s < 2; s++)
        if (e->kv[s])
            mm_kv_pool_release(e->kv[s], slot);
}

enum mm_status mm_engine_sample(struct mm_engine *e, const struct mm_engine_sample *reqs, int n,
                                struct mm_sample_out *out, struct mm_err *err)
{
    if (n < 0 || n > e->opt.max_seqs)
        return mm_err_set(err, MM_ERR_INVALID, "a step samples at most %d tokens", e->opt.max_seqs);
    for (int i = 0; i < n; i++) {
        const struct mm_engine_sample *r = &reqs[i];
        if (r->step < 0 || r->step >= e->n_last || r->slot < 0 || r->slot >= e->opt.max_seqs ||
            !e->slots[r->slot].used)
            return mm_err_set(err, MM_ERR_INVALID, "sample %d: no step %d or slot %d", i, r->step,
                              r->slot);
        e->sample_reqs[i] =
            (struct mm_sample_req){e->last_rows[r->step], r->slot, r->stream, r->counter, r->p};
    }
    if (n > 0)
        e->be.ops->sample(e->be.ctx, e->x_out, e->sample_reqs, n, out);
    return MM_OK;
}

enum mm_status mm_engine_check(struct mm_engine *e, struct mm_err *err)
{
    if (e->opt.fail_at_step > 0 && e->n_forward >= e->opt.fail_at_step)
        return mm_err_set(err, MM_ERR_BACKEND,
                          "%s backend: injected fault at step %lld (test hook fail_at_step)",
                          e->be.ops->name, (long long)e->opt.fail_at_step);
    if (e->be.ops->status(e->be.ctx, err) == MM_OK)
        return MM_OK;
    if (err)
        err->status = MM_ERR_BACKEND;
    mm_err_prefix(err, "%s backend", e->be.ops->name);
    return MM_ERR_BACKEND;
}

void mm_engine_slot_count(struct mm_engine *e, int32_t slot, const int32_t *ids, int64_t n,
                          bool output)
{
    e->be.ops->slot_count(e->be.ctx, slot, ids, n, output);
}

/* Copy-on-write: gives slot private copies of the shared KV blocks it
 * would write from its position on (stack s). */
static enum mm_status unshare(struct mm_engine *e, int32_t slot, int s, struct mm_err *err)
{
    const int64_t pos = s == MM_STACK_EMB ? e->slots[slot].emb_pos : e->slots[slot].pos;
    int64_t n;
    enum mm_status st =
        mm_kv_pool_unshare(e->kv[s], slot, 0, pos, e->cow, e->cow + e->cow_cap, &n, err);
    if (st == MM_OK && n > 0)
        e->be.ops->kv_copy(e->be.ctx, (enum mm_stack)s, e->cow, e->cow + e->cow_cap, n);
    return st;
}

enum mm_status mm_engine_kv_unshare(struct mm_engine *e, int32_t slot, struct mm_err *err)
{
    for (int s = 0; s < 2; s++) {
        enum mm_status st = e->kv[s] ? unshare(e, slot, s, err) : MM_OK;
        if (st != MM_OK)
            return st;
    }
    return MM_OK;
}

/* Tokens a slot's table of one stack must cover after n more ids. */
static int64_t kv_end(const struct mm_engine *e, int32_t slot, int s, int64_t n, int64_t n_tiles)
{
    const struct mm_engine_slot *sl = &e->slots[slot];
    return s == MM_STACK_EMB ? sl->emb_pos + mm_engine_emb_rows(&e->cfg, n, n_tiles) : sl->pos + n;
}

void mm_engine_kv_need(const struct mm_engine *e, int32_t slot, int64_t n, int64_t n_tiles,
                       int64_t need[2])
{
    for (int s = 0; s < 2; s++) {
        need[s] = 0;
        if (e->kv[s]) {
            const int64_t want = mm_kv_blocks_for(kv_end(e, slot, s, n, n_tiles));
            const int64_t have = mm_kv_pool_used(e->kv[s], slot, 0);
            const int64_t pos = s == MM_STACK_EMB ? e->slots[slot].emb_pos : e->slots[slot].pos;
            need[s] =
                (want > have ? want - have : 0) + mm_kv_pool_shared_from(e->kv[s], slot, 0, pos);
        }
    }
}

enum mm_status mm_engine_kv_reserve(struct mm_engine *e, int32_t slot, int64_t n, int64_t n_tiles,
                                    struct mm_err *err)
{
    if (slot < 0 || slot >= e->opt.max_seqs || !e->slots[slot].used)
        return mm_err_set(err, MM_ERR_INVALID, "slot %d is not acquired", slot);
    int64_t need[2];
    mm_engine_kv_need(e, slot, n, n_tiles, need);
    for (int s = 0; s < 2; s++)
        if (e->kv[s] && need[s] > mm_kv_pool_free_blocks(e->kv[s]))
            return mm_err_set(err, MM_ERR_LIMIT, "KV cache full: %lld blocks needed, %lld free",
                              (long long)need[s], (long long)mm_kv_pool_free_blocks(e->kv[s]));
    enum mm_status ust = mm_engine_kv_unshare(e, slot, err); /* fits: counted in need */
    if (ust != MM_OK)
        return ust;
    const int64_t had = e->kv[MM_STACK_EMB] ? mm_kv_pool_used(e->kv[MM_STACK_EMB], slot, 0) : 0;
    for (int s = 0; s < 2; s++) {
        if (!e->kv[s])
            continue;
        enum mm_status st =
            mm_kv_pool_reserve(e->kv[s], slot, 0, kv_end(e, slot, s, n, n_tiles), err);
        if (st != MM_OK) {
            if (s == MM_STACK_LLM && e->kv[MM_STACK_EMB]) /* give back what the first took */
                mm_kv_pool_truncate(e->kv[MM_STACK_EMB], slot, 0, had * MM_KV_BLOCK);
            return st;
        }
    }
    return MM_OK;
}

void mm_engine_kv_usage(const struct mm_engine *e, int64_t used[2], int64_t total[2])
{
    for (int s = 0; s < 2; s++) {
        total[s] = e->kv[s] ? e->kv_blocks[s] : 0;
        used[s] = e->kv[s] ? e->kv_blocks[s] - mm_kv_pool_free_blocks(e->kv[s]) : 0;
    }
}

enum mm_status mm_engine_slot_copy(struct mm_engine *e, int32_t src, int32_t dst,
                                   struct mm_err *err)
{
    if (src < 0 || src >= e->opt.max_seqs || dst < 0 || dst >= e->opt.max_seqs ||
        !e->slots[src].used || !e->slots[dst].used || src == dst)
        return mm_err_set(err, MM_ERR_INVALID, "slot copy %d -> %d: slots not acquired", src, dst);
    const struct mm_engine_slot *from = &e->slots[src];
    for (int s = 0; s < 2; s++) /* by reference: a write copies first (unshare) */
        if (e->kv[s])
            mm_kv_pool_share(e->kv[s], src, dst, 0, s == MM_STACK_EMB ? from->emb_pos : from->pos);
    e->be.ops->slot_copy(e->be.ctx, src, dst);
    e->slots[dst].pos = from->pos;
    e->slots[dst].emb_pos = from->emb_pos;
    return MM_OK;
}

size_t mm_engine_snapshot_bytes(const struct mm_engine *e, int64_t pos, int64_t emb_pos)
{
    size_t n = e->be.ops->slot_bytes(e->be.ctx);
    for (int s = 0; s < 2; s++)
        if (e->kv[s])
            n += (size_t)mm_kv_blocks_for(s == MM_STACK_EMB ? emb_pos : pos) *
                 e->be.ops->kv_block_bytes(e->be.ctx, (enum mm_stack)s);
    return n;
}

void mm_engine_slot_save(struct mm_engine *e, int32_t slot, void *host)
{
    const struct mm_engine_slot *sl = &e->slots[slot];
    e->be.ops->slot_save(e->be.ctx, slot, host);
    char *p = (char *)host + e->be.ops->slot_bytes(e->be.ctx);
    for (int s = 0; s < 2; s++) {
        if (!e->kv[s])
            continue;
        const int64_t nb = mm_kv_blocks_for(s == MM_STACK_EMB ? sl->emb_pos : sl->pos);
        e->be.ops->kv_save(e->be.ctx, (enum mm_stack)s, mm_kv_pool_table(e->kv[s], slot, 0), nb, p);
        p += (size_t)nb * e->be.ops->kv_block_bytes(e->be.ctx, (enum mm_stack)s);
    }
}

enum mm_status mm_engine_slot_restore(struct mm_engine *e, int32_t slot, int64_t pos,
                                      int64_t emb_pos, const void *host, struct mm_err *err)
{
    if (slot < 0 || slot >= e->opt.max_seqs || !e->slots[slot].used)
        return mm_err_set(err, MM_ERR_INVALID, "slot %d is not acquired", slot);
    if (pos < 0 || pos > e->opt.max_context || emb_pos < 0 || emb_pos > e->emb_context)
        return mm_err_set(err, MM_ERR_INVALID, "restore: positions out of range");
    for (int s = 0; s < 2; s++) {
        if (!e->kv[s])
            continue;
        mm_kv_pool_truncate(e->kv[s], slot, 0, 0);
        enum mm_status st =
            mm_kv_pool_reserve(e->kv[s], slot, 0, s == MM_STACK_EMB ? emb_pos : pos, err);
        if (st != MM_OK) {
            mm_engine_slot_release(e, slot);
            e->slots[slot].used = true; /* still the caller's, now empty */
            e->be.ops->slot_reset(e->be.ctx, slot);
            return st;
        }
    }
    e->be.ops->slot_restore(e->be.ctx, slot, host);
    const char *p = (const char *)host + e->be.ops->slot_bytes(e->be.ctx);
    for (int s = 0; s < 2; s++) {
        if (!e->kv[s])
            continue;
        const int64_t nb = mm_kv_blocks_for(s == MM_STACK_EMB ? emb_pos : pos);
        e->be.ops->kv_restore(e->be.ctx, (enum mm_stack)s, mm_kv_pool_table(e->kv[s], slot, 0), nb,
                              p);
        p += (size_t)nb * e->be.ops->kv_block_bytes(e->be.ctx, (enum mm_stack)s);
    }
    e->slots[slot].pos = pos;
    e->slots[slot].emb_pos = emb_pos;
    return MM_OK;
}

void mm_engine_slot_clear_counts(struct mm_engine *e, int32_t slot)
{
    e->be.ops->slot_clear_counts(e->be.ctx, slot);
}

void mm_engine_kv_trim(struct mm_engine *e, int32_t slot)
{
    for (int s = 0; s < 2; s++)
        if (e->kv[s])
            mm_kv_pool_truncate(e->kv[s], slot, 0,
                                s == MM_STACK_EMB ? e->slots[slot].emb_pos : e->slots[slot].pos);
}
