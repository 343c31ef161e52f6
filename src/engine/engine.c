/* engine.c: opening a model onto a backend, and the slot table (see engine.h).
 * The step itself is in forward.c. */
#include "engine/engine.h"

#include <stdlib.h>
#include <string.h>

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

enum mm_status mm_cuda_measure(double *read_tbs, double *gemm_tflops, struct mm_err *err)
{
    *read_tbs = *gemm_tflops = 0;
    return mm_err_set(err, MM_ERR_UNSUPPORTED, "this build has no CUDA backend");
}
#endif

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

static bool stack_has_mha(const struct mm_stack_config *sc)
{
    for (int64_t i = 0; i < sc->num_layers; i++)
        if (sc->kinds[i] == MM_LAYER_MHA)
            return true;
    return false;
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
    if (opt->backend == MM_BACKEND_CUDA || opt->backend == MM_BACKEND_CUDA_FP32)
        st = mm_cuda_backend_create(opt->backend == MM_BACKEND_CUDA_FP32, &e->be, err);
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
    struct mm_backend_limits lim = {
        .n_slots = opt->max_seqs,
        .max_tokens = max_rows,
        .max_tiles = opt->max_tiles,
        .max_context = emb_context,
        .state_fp32 = opt->state_fp32,
    };
    const bool has_mha = mm_config_count_layers(cfg, MM_LAYER_MHA) > 0;
    if (has_mha) {
        const int64_t per_seq = mm_kv_blocks_for(emb_context) + mm_kv_blocks_for(opt->max_context);
        /* one pool hands out block ids for both stacks (each stack's backend
         * storage has as many blocks; the scheduler issue splits the pools) */
        const int64_t n_blocks = per_seq * opt->max_seqs;
        for (int s = 0; s < 2; s++)
            lim.n_kv_blocks[s] =
                stack_has_mha(s == MM_STACK_EMB ? &cfg->emb : &cfg->llm) ? n_blocks : 0;
        if ((st = mm_kv_pool_create(n_blocks, opt->max_seqs, 2,
                                    mm_kv_blocks_for(emb_context), &e->kv, err)) != MM_OK)
            goto fail;
    }
    if ((st = e->be.ops->load(e->be.ctx, cfg, &e->w, &lim, err)) != MM_OK)
        goto fail;
    const int64_t H = cfg->llm.hidden;
    e->x_emb = e->be.ops->act_alloc(e->be.ctx, max_rows, H);
    e->x_llm = e->be.ops->act_alloc(e->be.ctx, opt->max_tokens, H);
    e->patches = e->be.ops->act_alloc(e->be.ctx, opt->max_tiles * P2, H);
    e->img = e->be.ops->act_alloc(e->be.ctx, opt->max_tiles * cfg->tokens_per_tile, H);
    e->slots = calloc((size_t)opt->max_seqs, sizeof *e->slots);
    e->spans_emb = calloc((size_t)opt->max_seqs, sizeof *e->spans_emb);
    e->spans_llm = calloc((size_t)opt->max_seqs, sizeof *e->spans_llm);
    e->logit_rows = calloc((size_t)opt->max_seqs, sizeof *e->logit_rows);
    if (!e->x_emb || !e->x_llm || !e->patches || !e->img || !e->slots || !e->spans_emb ||
        !e->spans_llm || !e->logit_rows) {
        st = mm_err_set(err, MM_ERR_NOMEM, "engine: out of memory for step buffers");
        goto fail;
    }
    MM_INFO("engine: %s backend, %d slots, %lld tokens/step, %.3f B parameters", e->be.ops->name,
            opt->max_seqs, (long long)opt->max_tokens, (double)e->w.n_params / 1e9);
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
    mm_kv_pool_free(e->kv);
    mm_safetensors_close(e->st);
    free(e->slots);
    free(e->spans_emb);
    free(e->spans_llm);
    free(e->logit_rows);
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
    if (e->kv)
        mm_kv_pool_release(e->kv, slot);
}
