/* cuda_steps.c: a step of the CUDA backend (cuda_internal.h): the spans of
 * each stack as the kernels see them, and decode steps as CUDA graphs.
 *
 * Design: span metadata is built on the host into pinned buffers when a
 * stack's layer 0 runs (every step starts there) and uploaded once; its other
 * layers reuse it. A decode step is recorded as a CUDA graph per batch-size
 * bucket (mm_cuda_graph_bucket: at most 25 % padded rows) and replayed: pad
 * rows run on a pad slot and a pad KV block, so one graph serves every batch
 * size of its bucket; a capture that saw an op sized by the real batch
 * replays only for that exact size. */
#include "engine/cuda_internal.h"

#include <string.h>

#include <cuda_runtime_api.h>

#include "kernels.h"

/* Fills a stack's host metadata from its spans, padded with 1-token spans on
 * the pad slot up to n_pad (and uploads the block-table entries that changed
 * to the device mirror, slot s's table at s * bpt). */
static bool meta_fill(struct cu_ctx *c, struct cu_meta *m, const struct mm_span *spans, int n_spans,
                      int n_pad)
{
    if (n_spans < 1 || n_spans > c->lim.n_slots) {
        mm_cuda_fail(c, "spans", "span count out of range");
        return false;
    }
    if (m->pending && mm_cuda_check(c, cudaEventSynchronize(m->copied), "metadata"))
        return false;
    m->pending = false;
    int64_t row = 0, max_kv = 0;
    for (int s = 0; s < n_spans; s++) {
        const struct mm_span *sp = &spans[s];
        if (sp->row != row || sp->n < 0 || row + sp->n > c->lim.max_tokens || sp->slot < 0 ||
            sp->slot >= c->lim.n_slots || sp->pos < 0) {
            mm_cuda_fail(c, "spans", "spans must be contiguous from row 0, within the limits");
            return false;
        }
        const int64_t nb = (sp->pos + sp->n + MM_KV_BLOCK - 1) / MM_KV_BLOCK;
        m->h_spans[s] =
            (struct mm_kspan){sp->row, sp->n, sp->pos, (int64_t)sp->slot * m->bpt, sp->slot, 0};
        for (int64_t t = 0; t < sp->n; t++)
            m->h_tok[row + t] = s;
        if (sp->blocks && m->blk_cap > 0) {
            if (nb > m->bpt) {
                mm_cuda_fail(c, "spans", "a block table is longer than the context limit");
                return false;
            }
            int32_t *mir = m->h_blk + (int64_t)sp->slot * m->bpt;
            int64_t i0 = 0;
            while (i0 < nb && mir[i0] == sp->blocks[i0])
                i0++;
            if (i0 < nb) {
                memcpy(mir + i0, sp->blocks + i0, (size_t)(nb - i0) * sizeof *mir);
                if (mm_cuda_check(c,
                                  cudaMemcpyAsync(m->d_blk + (int64_t)sp->slot * m->bpt + i0,
                                                  mir + i0, (size_t)(nb - i0) * sizeof *mir,
                                                  cudaMemcpyHostToDevice, c->stream),
                                  "metadata"))
                    return false;
                m->pending = true;
            }
        }
        if (sp->pos + sp->n > max_kv)
            max_kv = sp->pos + sp->n;
        row += sp->n;
    }
    for (int s = n_spans; s < n_pad; s++) {
        const int32_t pad = c->lim.n_slots;
        m->h_spans[s] = (struct mm_kspan){row, 1, 0, (int64_t)pad * m->bpt, pad, 0};
        m->h_tok[row++] = s;
        if (max_kv < 1)
            max_kv = 1;
    }
    /* the chunked scan's spans first (order kept within each kind); an
     * empty span counts as 1 token, so the padded decode steps that share
     * a graph split alike */
    int k = 0;
    m->n_long = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int s = 0; s < n_pad; s++) {
            const bool is_long = (m->h_spans[s].n > 1 ? m->h_spans[s].n : 1) >= c->scan_min;
            if (is_long == (pass == 0)) {
                m->h_part[k++] = m->h_spans[s];
                m->n_long += is_long;
            }
        }
    /* the flash kernel's tiles, for eager steps only (the pads are decode rows: never) */
    m->n_ftiles = 0;
    m->flash_rows = 0;
    for (int s = 0; s < n_spans && !c->f32 && c->gmode == G_EAGER; s++)
        if (spans[s].n >= c->flash_min) {
            for (int64_t r = (spans[s].n - 1) / MM_K_FLASH_ROWS * MM_K_FLASH_ROWS; r >= 0;
                 r -= MM_K_FLASH_ROWS) {
                m->h_ftile[2 * m->n_ftiles] = s;
                m->h_ftile[2 * m->n_ftiles + 1] = (int32_t)r;
                m->n_ftiles++;
            }
            m->flash_rows += spans[s].n;
        }
    memcpy(m->last, spans, (size_t)n_spans * sizeof *spans);
    m->n_real = n_spans;
    m->n_spans = n_pad;
    m->T = row;
    m->max_kv = max_kv;
    return true;
}

/* Enqueues the copies of spans and the row -> span map (captured in a graph step). */
static bool meta_upload(struct cu_ctx *c, struct cu_meta *m)
{
    cudaStream_t st = c->stream;
    if (mm_cuda_check(c,
                      cudaMemcpyAsync(m->d_spans, m->h_spans,
                                      (size_t)m->n_spans * sizeof *m->h_spans,
                                      cudaMemcpyHostToDevice, st),
                      "metadata") ||
        mm_cuda_check(c,
                      cudaMemcpyAsync(m->d_part, m->h_part, (size_t)m->n_spans * sizeof *m->h_part,
                                      cudaMemcpyHostToDevice, st),
                      "metadata") ||
        (m->T > 0 &&
         mm_cuda_check(c,
                       cudaMemcpyAsync(m->d_tok, m->h_tok, (size_t)m->T * sizeof *m->h_tok,
                                       cudaMemcpyHostToDevice, st),
                       "metadata")) ||
        (m->n_ftiles > 0 &&
         mm_cuda_check(c,
                       cudaMemcpyAsync(m->d_ftile, m->h_ftile,
                                       (size_t)(2 * m->n_ftiles) * sizeof *m->h_ftile,
                                       cudaMemcpyHostToDevice, st),
                       "metadata")))
        return false;
    m->pending = true;
    return true;
}

/* The device metadata of a stack's spans: the step's (step_begin), or, for
 * ops called outside a step, rebuilt when layer 0 runs or the spans differ
 * from the last ones. NULL (failure recorded) on bad spans. */
struct cu_meta *mm_cuda_meta_for(struct cu_ctx *c, enum mm_stack stack, int layer,
                                 const struct mm_span *spans, int n_spans)
{
    struct cu_meta *m = &c->stacks[stack].meta;
    if (m->prepared && m->prep == spans && m->n_real == n_spans)
        return m;
    if (layer != 0 && n_spans == m->n_spans && n_spans == m->n_real &&
        memcmp(spans, m->last, (size_t)n_spans * sizeof *spans) == 0)
        return m;
    if (!meta_fill(c, m, spans, n_spans, n_spans) || !meta_upload(c, m) ||
        mm_cuda_check(c, cudaEventRecord(m->copied, c->stream), "metadata"))
        return NULL;
    return m;
}

/* ---- graph steps ---------------------------------------------------------------------- */

void mm_cuda_embed_flush(struct cu_ctx *c)
{
    if (!c->pend)
        return;
    c->pend = false;
    if (c->gmode != G_EAGER) { /* a graph step: the decode rows [0, n_real), padded */
        if (c->pend_row0 == 0 && c->pend_n == c->n_real) {
            memset(c->h_ids + c->pend_n, 0, (size_t)(c->n_pad - c->pend_n) * sizeof *c->h_ids);
            c->pend_n = c->n_pad;
        } else {
            c->g_exact = true;
        }
    }
    if (c->gmode == G_REPLAY || c->st != MM_OK) /* the graph copies h_ids itself */
        return;
    if (!mm_cuda_check(c,
                       cudaMemcpyAsync(c->d_ids, c->h_ids, (size_t)c->pend_n * sizeof *c->h_ids,
                                       cudaMemcpyHostToDevice, c->stream),
                       "embed"))
        mm_cuda_check(c,
                      mm_k_embed(c->stream, c->f32, c->d_ids, c->pend_n, c->text_emb,
                                 c->cfg.llm_vocab_size, c->special_emb, c->cfg.llm.hidden,
                                 mm_cuda_row_ptr(c, c->pend_x, c->pend_row0)),
                      "embed");
}

/* Every op but embed_tokens starts here: false when it must enqueue nothing
 * (a failure is pending, or a recorded graph replays this step). */
bool mm_cuda_op_begin(struct cu_ctx *c)
{
    mm_cuda_embed_flush(c);
    return c->st == MM_OK && c->gmode != G_REPLAY;
}

/* Rows an op over the first n rows covers: in a captured step, the padded
 * batch when n is the step's batch (else the graph is kept for this exact n). */
int64_t mm_cuda_op_rows(struct cu_ctx *c, int64_t n)
{
    if (c->gmode != G_CAPTURE || c->n_pad == c->n_real)
        return n;
    if (n == c->n_real)
        return c->n_pad;
    c->g_exact = true;
    return n;
}

/* Graph bucket of a decode step of n sequences: n up to 4, then 4 buckets per
 * doubling (5..8, 10..16 by 2, 20..32 by 4, ...: at most 25 % padded rows),
 * at most cap (the slots; the rows the scratch holds). */
int mm_cuda_graph_bucket(int n, int cap)
{
    int b = n;
    if (n > 4) {
        int p = 4;
        while (2 * p < n)
            p *= 2; /* p < n <= 2p */
        const int step = p / 4;
        b = p + (n - p + step - 1) / step * step;
    }
    return b < cap ? b : cap;
}

void mm_cuda_step_begin(void *vctx, const struct mm_span *emb, const struct mm_span *llm,
                        int n_spans, bool decode)
{
    struct cu_ctx *c = vctx;
    c->gmode = G_EAGER;
    int n_pad = n_spans;
    if (c->st != MM_OK)
        return;
    if (c->graphs_on && decode) {
        /* the last graph step has finished reading the fixed host buffers */
        if (c->g_launched && mm_cuda_check(c, cudaEventSynchronize(c->g_done), "graph"))
            return;
        const int64_t cap = c->lim.n_slots < c->lim.max_tokens ? c->lim.n_slots : c->lim.max_tokens;
        n_pad = mm_cuda_graph_bucket(n_spans, (int)cap);
        c->g_cur = -1;
        for (int i = 0; i < c->n_graphs; i++)
            if (c->graphs[i].n == n_pad &&
                (c->graphs[i].exact < 0 || c->graphs[i].exact == n_spans))
                c->g_cur = i;
        c->gmode = c->g_cur >= 0 ? G_REPLAY : G_CAPTURE;
    }
    c->n_real = n_spans;
    c->n_pad = n_pad;
    c->g_exact = false;
    const struct mm_span *sp[2] = {emb, llm};
    for (int s = 0; s < 2; s++) {
        struct cu_meta *m = &c->stacks[s].meta;
        if (!meta_fill(c, m, sp[s], n_spans, n_pad)) {
            c->gmode = G_EAGER;
            return;
        }
        m->prepared = true;
        m->prep = sp[s];
    }
    if (c->gmode == G_CAPTURE &&
        mm_cuda_check(c, cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal),
                      "graph capture")) {
        c->gmode = G_EAGER;
        return;
    }
    for (int s = 0; s < 2 && c->gmode != G_REPLAY; s++)
        if (!meta_upload(c, &c->stacks[s].meta))
            return;
    for (int s = 0; s < 2 && c->gmode == G_EAGER; s++)
        mm_cuda_check(c, cudaEventRecord(c->stacks[s].meta.copied, c->stream), "metadata");
}

void mm_cuda_step_end(void *vctx)
{
    struct cu_ctx *c = vctx;
    mm_cuda_embed_flush(c);
    if (c->gmode == G_CAPTURE) {
        cudaGraph_t g = NULL;
        const cudaError_t e = cudaStreamEndCapture(c->stream, &g);
        cudaGraphExec_t exec = NULL;
        if (!mm_cuda_check(c, e, "graph capture") && c->st == MM_OK &&
            !mm_cuda_check(c, cudaGraphInstantiate(&exec, g, 0), "graph instantiate")) {
            int i = c->n_graphs;
            if (i == 64) { /* evict the least recently used */
                i = 0;
                for (int k = 1; k < 64; k++)
                    if (c->graphs[k].used < c->graphs[i].used)
                        i = k;
                cudaGraphExecDestroy(c->graphs[i].exec);
            } else {
                c->n_graphs++;
            }
            c->graphs[i].n = c->n_pad;
            c->graphs[i].exact = c->g_exact ? c->n_real : -1;
            c->graphs[i].exec = exec;
            c->g_cur = i;
        }
        if (g)
            cudaGraphDestroy(g);
        if (c->st != MM_OK)
            c->graphs_on = false; /* go on eagerly; this step failed */
    }
    if (c->gmode != G_EAGER && c->st == MM_OK) {
        c->graphs[c->g_cur].used = ++c->g_clock;
        if (!mm_cuda_check(c, cudaGraphLaunch(c->graphs[c->g_cur].exec, c->stream),
                           "graph launch") &&
            !mm_cuda_check(c, cudaEventRecord(c->g_done, c->stream), "graph"))
            c->g_launched = true;
        for (int s = 0; s < 2; s++)
            mm_cuda_check(c, cudaEventRecord(c->stacks[s].meta.copied, c->stream), "metadata");
    }
    for (int s = 0; s < 2; s++)
        c->stacks[s].meta.prepared = false;
    c->gmode = G_EAGER;
}
