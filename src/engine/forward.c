/* forward.c: the forward pass of docs/model.md §3, written once against the
 * backend interface, for a step of several sequences (varlen batch).
 *
 *   ids → text/special embeddings, image tiles → patch embeddings
 *   (pixel shuffle "pre": shuffled + projected before the embedding stack)
 *   → embedding stack (8 layers, own positions)
 *   (pixel shuffle "post": applied to the image rows of its output)
 *   → optional x/‖x‖ → LLM stack (24 layers) → final norm → logits.
 *
 * Each layer is two residual blocks: x += Mixer(RMSNorm(x)); x += MLP(RMSNorm(x)).
 * Sequences are laid out one after another in the token batch; the backend's
 * mixers keep them apart by span. */
#include "engine/engine.h"

#include <string.h>

/* Is ids[i] an image position? Generated tokens never are (text_only). */
static bool is_image(const struct mm_engine *e, const struct mm_seq_step *st, int64_t i)
{
    return !st->text_only && st->ids[i] == e->cfg.img_context_token_id;
}

static enum mm_status validate(const struct mm_engine *e, const struct mm_seq_step *steps,
                               int n_steps, struct mm_err *err)
{
    const struct mm_config *cfg = &e->cfg;
    const int64_t n_special = e->w.special_emb ? e->w.special_emb->shape[0] : 0;
    const int64_t id_limit = cfg->llm_vocab_size + n_special;
    const int64_t tpt = cfg->tokens_per_tile;
    int64_t tokens = 0, tiles = 0, emb_rows = 0;
    if (n_steps < 1 || n_steps > e->opt.max_seqs)
        return mm_err_set(err, MM_ERR_INVALID, "a step holds 1..%d sequences", e->opt.max_seqs);
    for (int s = 0; s < n_steps; s++) {
        const struct mm_seq_step *st = &steps[s];
        if (st->slot < 0 || st->slot >= e->opt.max_seqs || !e->slots[st->slot].used)
            return mm_err_set(err, MM_ERR_INVALID, "slot %d is not acquired", st->slot);
        for (int o = 0; o < s; o++)
            if (steps[o].slot == st->slot)
                return mm_err_set(err, MM_ERR_INVALID, "slot %d appears twice in one step",
                                  st->slot);
        if (st->n < 1)
            return mm_err_set(err, MM_ERR_INVALID, "a sequence step needs at least one token");
        if (st->n > e->opt.max_tokens)
            return mm_err_set(err, MM_ERR_LIMIT, "step of %lld tokens exceeds the budget of %lld",
                              (long long)st->n, (long long)e->opt.max_tokens);
        int64_t img = 0, run = 0;
        for (int64_t i = 0; i < st->n; i++) {
            if (st->ids[i] < 0 || st->ids[i] >= id_limit)
                return mm_err_set(err, MM_ERR_INVALID,
                                  "token id %d outside the vocabulary (0..%lld)", st->ids[i],
                                  (long long)id_limit - 1);
            const bool img_here = is_image(e, st, i);
            img += img_here;
            run = img_here ? run + 1 : 0;
            /* image runs come in whole tiles: a run ends on a tile boundary */
            const bool run_ends = run > 0 && (i + 1 == st->n || !is_image(e, st, i + 1));
            if (run_ends && run % tpt != 0)
                return mm_err_set(
                    err, MM_ERR_INVALID,
                    "an image run of %lld tokens is not a whole number of %lld-token tiles",
                    (long long)run, (long long)tpt);
        }
        if (st->n_tiles < 0 || st->n_tiles > e->opt.max_tiles || img != st->n_tiles * tpt ||
            (st->n_tiles > 0 && !st->tiles))
            return mm_err_set(err, MM_ERR_INVALID,
                              "%lld image-context tokens but %lld tiles (%lld tokens per tile)",
                              (long long)img, (long long)st->n_tiles, (long long)tpt);
        const struct mm_engine_slot *sl = &e->slots[st->slot];
        if (sl->pos + st->n > e->opt.max_context)
            return mm_err_set(err, MM_ERR_LIMIT,
                              "sequence would exceed the context limit of %lld tokens",
                              (long long)e->opt.max_context);
        tokens += st->n;
        tiles += st->n_tiles;
        emb_rows += mm_engine_emb_rows(cfg, st->n, st->n_tiles);
    }
    if (tokens > e->opt.max_tokens)
        return mm_err_set(err, MM_ERR_LIMIT, "step of %lld tokens exceeds the budget of %lld",
                          (long long)tokens, (long long)e->opt.max_tokens);
    if (emb_rows > e->max_emb_tokens)
        return mm_err_set(err, MM_ERR_LIMIT,
                          "step of %lld embedding-stack rows exceeds the budget of %lld",
                          (long long)emb_rows, (long long)e->max_emb_tokens);
    if (tiles > e->opt.max_tiles)
        return mm_err_set(err, MM_ERR_LIMIT, "step of %lld tiles exceeds the limit of %lld",
                          (long long)tiles, (long long)e->opt.max_tiles);
    return MM_OK;
}

/* Grows the KV tables of every step's slot (stacks with attention) to
 * cover the step. On failure every table is put back as it was (blocks
 * reserved ahead of time, e.g. at admission, stay), so nothing changes. */
static enum mm_status reserve_kv(struct mm_engine *e, const struct mm_seq_step *steps, int n_steps,
                                 struct mm_err *err)
{
    for (int k = 0; k < 2; k++) {
        if (!e->kv[k])
            continue;
        for (int s = 0; s < n_steps; s++) {
            const struct mm_engine_slot *sl = &e->slots[steps[s].slot];
            e->logit_rows[s] = mm_kv_pool_used(e->kv[k], steps[s].slot, 0); /* as scratch */
            /* copy-on-write first (a neutral change: nothing to roll back);
             * the scheduler reserves ahead, so this rarely has work */
            enum mm_status ust = mm_engine_kv_unshare(e, steps[s].slot, err);
            const int64_t end =
                k == MM_STACK_EMB
                    ? sl->emb_pos + mm_engine_emb_rows(&e->cfg, steps[s].n, steps[s].n_tiles)
                    : sl->pos + steps[s].n;
            enum mm_status st =
                ust != MM_OK ? ust : mm_kv_pool_reserve(e->kv[k], steps[s].slot, 0, end, err);
            if (st != MM_OK) {
                for (int r = 0; r <= s; r++)
                    mm_kv_pool_truncate(e->kv[k], steps[r].slot, 0, e->logit_rows[r] * MM_KV_BLOCK);
                if (k == MM_STACK_LLM && e->kv[MM_STACK_EMB]) /* the stack done before */
                    for (int r = 0; r < n_steps; r++)
                        mm_kv_pool_truncate(e->kv[MM_STACK_EMB], steps[r].slot, 0,
                                            e->last_rows[r] * MM_KV_BLOCK);
                return st;
            }
        }
        if (k == MM_STACK_EMB) /* remember the embedding stack's counts for a rollback */
            for (int s = 0; s < n_steps; s++)
                e->last_rows[s] = e->logit_rows[s];
    }
    return MM_OK;
}

/* Fills x_emb rows for one sequence starting at row; returns rows written. */
static int64_t embed_sequence(struct mm_engine *e, const struct mm_seq_step *st, int64_t row)
{
    const struct mm_backend_ops *ops = e->be.ops;
    void *ctx = e->be.ctx;
    const struct mm_config *cfg = &e->cfg;
    const int64_t P2 = cfg->patches_per_side * cfg->patches_per_side, tpt = cfg->tokens_per_tile;
    const bool post = cfg->shuffle_loc == MM_SHUFFLE_POST;
    if (st->n_tiles > 0) {
        /* patch conv + position embedding; "pre": shuffle + project now */
        ops->vision_embed(ctx, st->tiles, st->n_tiles, e->patches);
        if (!post)
            ops->pixel_shuffle(ctx, e->patches, 0, st->n_tiles, e->img, 0);
    }
    int64_t i = 0, out = row, img_tok = 0;
    while (i < st->n) {
        int64_t j = i;
        if (!is_image(e, st, i)) {
            while (j < st->n && !is_image(e, st, j))
                j++;
            ops->embed_tokens(ctx, st->ids + i, j - i, e->x_emb, out);
            out += j - i;
        } else {
            while (j < st->n && is_image(e, st, j))
                j++;
            if (post) { /* the embedding stack sees every patch of each tile */
                const int64_t tiles = (j - i) / tpt;
                ops->copy_rows(ctx, e->patches, (img_tok / tpt) * P2, e->x_emb, out, tiles * P2);
                out += tiles * P2;
            } else {
                ops->copy_rows(ctx, e->img, img_tok, e->x_emb, out, j - i);
                out += j - i;
            }
            img_tok += j - i;
        }
        i = j;
    }
    return out - row;
}

/* "post": x_llm rows of one sequence from its x_emb rows, shuffling each tile. */
static void contract_sequence(struct mm_engine *e, const struct mm_seq_step *st, int64_t emb_row,
                              int64_t llm_row)
{
    const struct mm_backend_ops *ops = e->be.ops;
    void *ctx = e->be.ctx;
    const struct mm_config *cfg = &e->cfg;
    const int64_t P2 = cfg->patches_per_side * cfg->patches_per_side, tpt = cfg->tokens_per_tile;
    int64_t i = 0;
    while (i < st->n) {
        int64_t j = i;
        const bool img = is_image(e, st, i);
        while (j < st->n && is_image(e, st, j) == img)
            j++;
        if (img) {
            const int64_t tiles = (j - i) / tpt;
            ops->pixel_shuffle(ctx, e->x_emb, emb_row, tiles, e->x_llm, llm_row);
            emb_row += tiles * P2;
        } else {
            ops->copy_rows(ctx, e->x_emb, emb_row, e->x_llm, llm_row, j - i);
            emb_row += j - i;
        }
        llm_row += j - i;
        i = j;
    }
}

static void run_stack(struct mm_engine *e, enum mm_stack stack, struct mm_act *x,
                      const struct mm_span *spans, int n_spans, int64_t rows)
{
    const struct mm_backend_ops *ops = e->be.ops;
    const struct mm_stack_config *sc = stack == MM_STACK_EMB ? &e->cfg.emb : &e->cfg.llm;
    for (int64_t l = 0; l < sc->num_layers; l++) {
        /* h = h + Mixer(RMSNorm(h)); h = h + MLP(RMSNorm(h)) */
        if (sc->kinds[l] == MM_LAYER_MAMBA2)
            ops->mamba2(e->be.ctx, stack, (int)l, x, spans, n_spans);
        else
            ops->attention(e->be.ctx, stack, (int)l, x, spans, n_spans);
        ops->mlp(e->be.ctx, stack, (int)l, x, rows);
    }
}

enum mm_status mm_engine_forward(struct mm_engine *e, const struct mm_seq_step *steps, int n_steps,
                                 float *logits, struct mm_err *err)
{
    enum mm_status st;
    e->n_last = 0; /* a failed step leaves nothing to sample */
    if ((st = validate(e, steps, n_steps, err)) != MM_OK ||
        (st = reserve_kv(e, steps, n_steps, err)) != MM_OK)
        return st;
    e->n_forward++;
    const struct mm_backend_ops *ops = e->be.ops;
    const bool post = e->cfg.shuffle_loc == MM_SHUFFLE_POST;

    /* 1. embeddings and the embedding stack, over the (expanded) token batch */
    int64_t emb_rows = 0, llm_rows = 0;
    bool decode = true; /* one text token per sequence */
    for (int s = 0; s < n_steps; s++) {
        const struct mm_engine_slot *sl = &e->slots[steps[s].slot];
        const int64_t n = mm_engine_emb_rows(&e->cfg, steps[s].n, steps[s].n_tiles);
        e->spans_emb[s] = (struct mm_span){
            steps[s].slot, emb_rows, n, sl->emb_pos,
            e->kv[MM_STACK_EMB] ? mm_kv_pool_table(e->kv[MM_STACK_EMB], steps[s].slot, 0) : NULL};
        e->spans_llm[s] = (struct mm_span){
            steps[s].slot, llm_rows, steps[s].n, sl->pos,
            e->kv[MM_STACK_LLM] ? mm_kv_pool_table(e->kv[MM_STACK_LLM], steps[s].slot, 0) : NULL};
        emb_rows += n;
        llm_rows += steps[s].n;
        decode = decode && steps[s].n == 1 && steps[s].n_tiles == 0;
    }
    if (ops->step_begin)
        ops->step_begin(e->be.ctx, e->spans_emb, e->spans_llm, n_steps, decode);
    for (int s = 0; s < n_steps; s++)
        embed_sequence(e, &steps[s], e->spans_emb[s].row);
    run_stack(e, MM_STACK_EMB, e->x_emb, e->spans_emb, n_steps, emb_rows);

    /* 2. "post": shuffle the image rows of the embedding output; the LLM
     *    batch is the contracted sequence. "pre": the same rows go on. */
    struct mm_act *x = e->x_emb;
    if (post) {
        for (int s = 0; s < n_steps; s++)
            contract_sequence(e, &steps[s], e->spans_emb[s].row, e->spans_llm[s].row);
        x = e->x_llm;
    }
    if (e->cfg.normalize_encoder_output) /* x ← x/‖x‖₂ per token */
        ops->l2_normalize(e->be.ctx, x, llm_rows);

    /* 3. the LLM stack, final norm and LM head */
    run_stack(e, MM_STACK_LLM, x, e->spans_llm, n_steps, llm_rows);
    if (ops->step_end)
        ops->step_end(e->be.ctx);
    int n_logits = 0;
    for (int s = 0; s < n_steps; s++) {
        e->last_rows[s] = e->spans_llm[s].row + steps[s].n - 1;
        if (steps[s].want_logits)
            e->logit_rows[n_logits++] = e->last_rows[s];
    }
    if (n_logits > 0 && logits)
        ops->logits(e->be.ctx, x, e->logit_rows, n_logits, logits);
    /* a failed launch or device fault fails the step (backend.h: status) */
    if ((st = mm_engine_check(e, err)) != MM_OK)
        return st;
    e->x_out = x; /* for mm_engine_sample */
    e->n_last = n_steps;

    for (int s = 0; s < n_steps; s++) {
        e->slots[steps[s].slot].pos += steps[s].n;
        e->slots[steps[s].slot].emb_pos += e->spans_emb[s].n;
    }
    return MM_OK;
}
