/* cpu_backend.c: the fp32 reference backend (see cpu_backend.h). Each op is
 * the residual block of docs/model.md §3 written out over the varlen batch; the
 * math lives in cpu_kernels.c.
 *
 * Memory: weights as fp32 copies; per slot one contiguous block of recurrent
 * state (every mamba2 layer: conv [C] then ssm [heads][d][d]); KV blocks of
 * MM_KV_BLOCK tokens holding, per attention layer of a stack, K then V rows of
 * kv_heads*d values; per slot one word of token counts per vocabulary id
 * (cpu_sample.h), saved and copied with the state; scratch sized once from
 * the limits. */
#include "engine/cpu_backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/dtype.h"
#include "base/threadpool.h"
#include "engine/cpu_kernels.h"
#include "engine/cpu_sample.h"

struct mm_act {
    float *data;
    int64_t rows, cols;
    struct mm_act *next; /* owner's list, for destroy */
};

struct cpu_layer {
    enum mm_layer_kind kind;
    float *attn_norm, *ffn_norm; /* [H] */
    float *w1, *w3, *w2;         /* [F,H], [F,H], [H,F] */
    /* mamba2 */
    float *wz;         /* [Z, H], Z = C + heads*d + heads */
    float *conv_w;     /* [C, 2] */
    float *conv_b;     /* [C] */
    float *dt_bias;    /* [heads] */
    float *A;          /* [heads], A = -exp(A_log_bias) */
    float *gnorm;      /* [d] */
    float *o_proj;     /* [H, heads*d] */
    int64_t state_off; /* offset of this layer's state inside a slot */
    /* mha */
    float *wqkv;    /* [(heads + 2 kv) d, H] */
    float *wo;      /* [H, heads*d] */
    int64_t kv_off; /* offset of this layer's K/V inside a block */
};

struct cpu_stack {
    const struct mm_stack_config *cfg; /* points into ctx->cfg */
    struct cpu_layer layers[MM_MAX_LAYERS];
};

struct cpu_ctx {
    struct mm_config cfg;
    struct mm_threadpool *tp;
    int n_threads;
    struct cpu_stack stacks[2];
    float *patch_w, *patch_b; /* [H, 3*p*p], [H] */
    float *pos;               /* [P*P, H], resized when the stored grid is not P×P */
    float *sh_w1, *sh_b1, *sh_w2, *sh_b2;
    float *text_emb, *special_emb; /* [V_e, H], [n_special, H] */
    int64_t n_special;
    float *norm, *output;
    float **allocs; /* every weight array, for destroy */
    int n_allocs, cap_allocs;
    struct mm_act *acts;
    /* state and KV */
    struct mm_backend_limits lim;
    int64_t state_elems; /* per slot */
    float *state;
    int64_t block_elems[2]; /* per stack: K and V of MM_KV_BLOCK tokens, every attention layer */
    float *kv[2];           /* per stack: [n_kv_blocks[s], block_elems[s]] */
    uint32_t *counts;       /* [n_slots, vocab] token counts for the penalties */
    /* scratch */
    float *s_u, *s_z, *s_y, *s_m, *s_patch, *s_scores;
    float *s_norm, *s_logits; /* [SAMPLE_ROWS, H], [SAMPLE_ROWS, vocab] */
    struct mm_cpu_sampler sampler;
};

/* Rows whose logits `sample` computes at once (bounds its scratch). */
#define SAMPLE_ROWS 32

/* ---- load ------------------------------------------------------------------------ */

static float *to_f32(struct cpu_ctx *c, const struct mm_tensor *t)
{
    if (!t)
        return NULL;
    float *p = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *p);
    if (!p)
        return NULL;
    if (c->n_allocs == c->cap_allocs) {
        const int ncap = c->cap_allocs ? 2 * c->cap_allocs : 256;
        float **na = realloc(c->allocs, (size_t)ncap * sizeof *na);
        if (!na) {
            free(p);
            return NULL;
        }
        c->allocs = na;
        c->cap_allocs = ncap;
    }
    c->allocs[c->n_allocs++] = p;
    mm_dtype_to_f32(t->dtype, t->data, p, t->numel);
    return p;
}

static int load_layer(struct cpu_ctx *c, const struct mm_layer_weights *lw, struct cpu_layer *l)
{
    l->kind = lw->kind;
    if (!(l->attn_norm = to_f32(c, lw->attention_norm)) ||
        !(l->ffn_norm = to_f32(c, lw->ffn_norm)) || !(l->w1 = to_f32(c, lw->w1)) ||
        !(l->w3 = to_f32(c, lw->w3)) || !(l->w2 = to_f32(c, lw->w2)))
        return 0;
    if (lw->kind == MM_LAYER_MHA)
        return (l->wqkv = to_f32(c, lw->wqkv)) && (l->wo = to_f32(c, lw->wo));
    if (!(l->wz = to_f32(c, lw->wvkqgdt)) || !(l->conv_w = to_f32(c, lw->conv_w)) ||
        !(l->conv_b = to_f32(c, lw->conv_b)) || !(l->dt_bias = to_f32(c, lw->dt_bias)) ||
        !(l->A = to_f32(c, lw->A_log)) || !(l->gnorm = to_f32(c, lw->gnorm)) ||
        !(l->o_proj = to_f32(c, lw->o_proj)))
        return 0;
    for (int64_t h = 0; h < lw->A_log->numel; h++)
        l->A[h] = -expf(l->A[h]); /* A_h = −exp(A_log_bias_h) */
    return 1;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* rows x cols floats (zeroed if asked); NULL when the size overflows or
 * memory runs out (docs/style.md rule 3: sizes come from files and options). */
static float *alloc_floats(int64_t rows, int64_t cols, bool zero)
{
    size_t n, bytes;
    if (rows < 0 || cols < 0 || !mm_size_mul((size_t)rows, (size_t)cols, &n) ||
        !mm_size_mul(n ? n : 1, sizeof(float), &bytes))
        return NULL;
    return zero ? calloc(1, bytes) : malloc(bytes);
}

static enum mm_status cpu_load(void *vctx, const struct mm_config *cfg, const struct mm_weights *w,
                               const struct mm_backend_limits *lim, struct mm_err *err)
{
    struct cpu_ctx *c = vctx;
    c->cfg = *cfg;
    c->lim = *lim;
    c->stacks[MM_STACK_EMB].cfg = &c->cfg.emb;
    c->stacks[MM_STACK_LLM].cfg = &c->cfg.llm;
    const int64_t H = cfg->llm.hidden, P = cfg->patches_per_side;
    int ok = (c->patch_w = to_f32(c, w->patch_w)) && (c->patch_b = to_f32(c, w->patch_b)) &&
             (c->sh_w1 = to_f32(c, w->shuffle_w1)) && (c->sh_b1 = to_f32(c, w->shuffle_b1)) &&
             (c->sh_w2 = to_f32(c, w->shuffle_w2)) && (c->sh_b2 = to_f32(c, w->shuffle_b2)) &&
             (c->text_emb = to_f32(c, w->text_emb)) && (c->norm = to_f32(c, w->norm)) &&
             (c->output = to_f32(c, w->output));
    if (ok && w->special_emb) {
        ok = (c->special_emb = to_f32(c, w->special_emb)) != NULL;
        c->n_special = w->special_emb->shape[0];
    }
    /* position embedding: drop slot 0 (cls); resize the g×g grid to P×P if needed */
    float *grid = ok ? to_f32(c, w->pos_emb) : NULL;
    ok = ok && grid;
    if (ok) {
        if (w->pos_grid == P) {
            c->pos = grid + H;
        } else {
            float *resized = malloc((size_t)(P * P * H) * sizeof *resized);
            ok = resized != NULL;
            if (ok) {
                mm_cpu_bicubic_grid(grid + H, w->pos_grid, H, P, resized);
                /* it replaces the stored grid (the last allocation) on the list */
                c->allocs[c->n_allocs - 1] = resized;
                free(grid);
                c->pos = resized;
            }
        }
    }
    for (int s = 0; ok && s < 2; s++) {
        const struct mm_stack_config *sc = s == MM_STACK_EMB ? &cfg->emb : &cfg->llm;
        const struct mm_layer_weights *lws = s == MM_STACK_EMB ? w->emb_layers : w->llm_layers;
        int64_t kv_off = 0;
        for (int64_t i = 0; ok && i < sc->num_layers; i++) {
            struct cpu_layer *l = &c->stacks[s].layers[i];
            ok = load_layer(c, &lws[i], l);
            if (l->kind == MM_LAYER_MAMBA2) {
                const int64_t C = 2 * sc->kv_heads * sc->head_dim + sc->heads * sc->head_dim;
                l->state_off = c->state_elems;
                c->state_elems += C + sc->heads * sc->head_dim * sc->head_dim;
            } else {
                l->kv_off = kv_off;
                kv_off += 2 * MM_KV_BLOCK * sc->kv_heads * sc->head_dim;
            }
        }
        c->block_elems[s] = kv_off;
    }
    if (!ok)
        return mm_err_set(err, MM_ERR_NOMEM, "cpu backend: out of memory converting weights");

    /* states, KV and scratch, sized once */
    int64_t maxZ = 0, maxHD = 0, maxF = 0;
    for (int s = 0; s < 2; s++) {
        const struct mm_stack_config *sc = s == MM_STACK_EMB ? &cfg->emb : &cfg->llm;
        const int64_t hd = sc->heads * sc->head_dim, kvd = sc->kv_heads * sc->head_dim;
        maxZ = max64(maxZ, max64(2 * kvd + 2 * hd + sc->heads, hd + 2 * kvd));
        maxHD = max64(maxHD, max64(hd, 2 * kvd + hd));
        maxF = max64(maxF, sc->intermediate);
    }
    const int64_t T = max64(lim->max_tokens, 1);
    const int64_t patch_in = 3 * cfg->patch_size * cfg->patch_size;
    c->state = alloc_floats(lim->n_slots, max64(c->state_elems, 1), true);
    bool kv_ok = true;
    for (int s = 0; s < 2; s++) {
        c->kv[s] = lim->n_kv_blocks[s] > 0 && c->block_elems[s] > 0
                       ? alloc_floats(lim->n_kv_blocks[s], c->block_elems[s], true)
                       : NULL;
        kv_ok = kv_ok && (c->kv[s] || lim->n_kv_blocks[s] == 0 || c->block_elems[s] == 0);
    }
    c->s_u = alloc_floats(T, 4 * H, false);
    c->s_z = alloc_floats(T, max64(maxZ, 2 * maxF), false);
    c->s_y = alloc_floats(T, max64(maxHD, maxF), false);
    c->s_m = alloc_floats(T, max64(maxF, H), false);
    c->s_patch = alloc_floats(max64(lim->max_tiles, 1) * P * P, patch_in, false);
    c->s_scores = alloc_floats(c->n_threads, max64(lim->max_context, 1), false);
    c->s_norm = alloc_floats(SAMPLE_ROWS, H, false);
    c->s_logits = alloc_floats(SAMPLE_ROWS, cfg->vocab_size, false);
    /* token counts: one uint32 per (slot, id), same size as a float */
    c->counts = (uint32_t *)alloc_floats(lim->n_slots, cfg->vocab_size, true);
    if (!c->counts || mm_cpu_sampler_init(&c->sampler, cfg->vocab_size, err) != MM_OK)
        return mm_err_set(err, MM_ERR_NOMEM, "cpu backend: cannot allocate the sampler");
    if (!c->state || !kv_ok || !c->s_u || !c->s_z || !c->s_y || !c->s_m || !c->s_patch ||
        !c->s_scores || !c->s_norm || !c->s_logits)
        return mm_err_set(
            err, MM_ERR_NOMEM,
            "cpu backend: cannot allocate state/KV/scratch (too large or out of memory)");
    return MM_OK;
}

static void cpu_destroy(void *vctx)
{
    struct cpu_ctx *c = vctx;
    if (!c)
        return;
    for (int i = 0; i < c->n_allocs; i++)
        free(c->allocs[i]);
    free(c->allocs);
    for (struct mm_act *a = c->acts, *n; a; a = n) {
        n = a->next;
        free(a->data);
        free(a);
    }
    free(c->state);
    free(c->kv[0]);
    free(c->kv[1]);
    free(c->s_u);
    free(c->s_z);
    free(c->s_y);
    free(c->s_m);
    free(c->s_patch);
    free(c->s_scores);
    free(c->s_norm);
    free(c->s_logits);
    free(c->counts);
    mm_cpu_sampler_free(&c->sampler);
    mm_threadpool_free(c->tp);
    free(c);
}

static struct mm_act *cpu_act_alloc(void *vctx, int64_t rows, int64_t cols)
{
    struct cpu_ctx *c = vctx;
    struct mm_act *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->data = alloc_floats(rows, cols, true);
    if (!a->data) {
        free(a);
        return NULL;
    }
    a->rows = rows;
    a->cols = cols;
    a->next = c->acts;
    c->acts = a;
    return a;
}

/* ---- front end ------------------------------------------------------------------- */

static void cpu_embed_tokens(void *vctx, const int32_t *ids, int64_t n, struct mm_act *x,
                             int64_t row0)
{
    struct cpu_ctx *c = vctx;
    const int64_t H = c->cfg.llm.hidden, Ve = c->cfg.llm_vocab_size;
    for (int64_t i = 0; i < n; i++) {
        /* id < V_e: text table; id ≥ V_e: special table row id − V_e (ids validated upstream) */
        const float *src = ids[i] < Ve ? c->text_emb + (int64_t)ids[i] * H
                                       : c->special_emb + ((int64_t)ids[i] - Ve) * H;
        memcpy(x->data + (row0 + i) * H, src, (size_t)H * sizeof(float));
    }
}

static void cpu_vision_embed(void *vctx, const float *tiles, int64_t n_tiles, struct mm_act *out)
{
    struct cpu_ctx *c = vctx;
    const int64_t H = c->cfg.llm.hidden, p = c->cfg.patch_size, P = c->cfg.patches_per_side;
    const int64_t S = c->cfg.force_image_size, K = 3 * p * p;
    /* im2col: patch (r, c) of tile n → row n·P² + r·P + c, values in weight order [ch][ki][kj] */
    for (int64_t n = 0; n < n_tiles; n++)
        for (int64_t r = 0; r < P; r++)
            for (int64_t q = 0; q < P; q++) {
                float *row = c->s_patch + ((n * P + r) * P + q) * K;
                for (int64_t ch = 0; ch < 3; ch++)
                    for (int64_t ki = 0; ki < p; ki++)
                        memcpy(row + (ch * p + ki) * p,
                               tiles + ((n * 3 + ch) * S + r * p + ki) * S + q * p,
                               (size_t)p * sizeof(float));
            }
    /* Conv2d(k=p, stride=p, bias) as a matmul, then + position embedding */
    mm_cpu_matmul(c->tp, c->s_patch, n_tiles * P * P, K, c->patch_w, H, c->patch_b, out->data,
                  false);
    for (int64_t n = 0; n < n_tiles; n++)
        for (int64_t t = 0; t < P * P; t++) {
            float *o = out->data + (n * P * P + t) * H;
            const float *pe = c->pos + t * H;
            for (int64_t k = 0; k < H; k++)
                o[k] += pe[k];
        }
}

static void cpu_pixel_shuffle(void *vctx, const struct mm_act *in, int64_t in_row0, int64_t n_tiles,
                              struct mm_act *out, int64_t out_row0)
{
    struct cpu_ctx *c = vctx;
    const int64_t H = c->cfg.llm.hidden, P = c->cfg.patches_per_side, P2 = P / 2;
    const int64_t n_out = n_tiles * P2 * P2;
    /* token t = R·P/2 + C ← [P(2R,2C), P(2R,2C+1), P(2R+1,2C), P(2R+1,2C+1)] (4H) */
    for (int64_t n = 0; n < n_tiles; n++)
        for (int64_t R = 0; R < P2; R++)
            for (int64_t C = 0; C < P2; C++) {
                float *dst = c->s_u + ((n * P2 + R) * P2 + C) * 4 * H;
                const int64_t base = in_row0 + n * P * P;
                const int64_t src[4] = {base + (2 * R) * P + 2 * C, base + (2 * R) * P + 2 * C + 1,
                                        base + (2 * R + 1) * P + 2 * C,
                                        base + (2 * R + 1) * P + 2 * C + 1};
                for (int k = 0; k < 4; k++)
                    memcpy(dst + k * H, in->data + src[k] * H, (size_t)H * sizeof(float));
            }
    /* Linear(4H→H) → GELU (erf) → Linear(H→H) */
    mm_cpu_matmul(c->tp, c->s_u, n_out, 4 * H, c->sh_w1, H, c->sh_b1, c->s_m, false);
    for (int64_t i = 0; i < n_out * H; i++)
        c->s_m[i] = mm_cpu_gelu(c->s_m[i]);
    mm_cpu_matmul(c->tp, c->s_m, n_out, H, c->sh_w2, H, c->sh_b2, out->data + out_row0 * H, false);
}

static void cpu_copy_rows(void *vctx, const struct mm_act *src, int64_t src_row, struct mm_act *dst,
                          int64_t dst_row, int64_t n)
{
    (void)vctx;
    memmove(dst->data + dst_row * dst->cols, src->data + src_row * src->cols,
            (size_t)(n * src->cols) * sizeof(float));
}

static void cpu_l2_normalize(void *vctx, struct mm_act *x, int64_t n)
{
    (void)vctx;
    for (int64_t i = 0; i < n; i++) {
        float *r = x->data + i * x->cols;
        float ss = 0;
        for (int64_t k = 0; k < x->cols; k++)
            ss += r[k] * r[k];
        /* x / max(||x||, 1e-12), as torch.nn.functional.normalize */
        const float norm = sqrtf(ss) > 1e-12f ? sqrtf(ss) : 1e-12f;
        for (int64_t k = 0; k < x->cols; k++)
            r[k] /= norm;
    }
}

/* ---- mamba2 ---------------------------------------------------------------------- */

struct scan_job {
    struct cpu_ctx *c;
    const struct mm_stack_config *sc;
    const struct cpu_layer *l;
    const struct mm_span *spans;
    int64_t Z, C;
};

/* One (span, head) pair per item: conv is done, s_y gets the gated output. */
static void scan_items(void *arg, int64_t i0, int64_t i1, int worker)
{
    const struct scan_job *j = arg;
    const struct mm_stack_config *sc = j->sc;
    const int64_t d = sc->head_dim, nh = sc->heads, groups = sc->heads / sc->kv_heads;
    const int64_t kvd = sc->kv_heads * d;
    (void)worker;
    for (int64_t it = i0; it < i1; it++) {
        const struct mm_span *sp = &j->spans[it / nh];
        const int64_t h = it % nh;
        float *S = j->c->state + (int64_t)sp->slot * j->c->state_elems + j->l->state_off + j->C +
                   h * d * d;
        /* conv outputs (s_u, stride C): v | k | q; head h reads x = v[h/g], B = k[h/g], C = q[h] */
        const float *base = j->c->s_u + sp->row * j->C;
        const float *x = base + (h / groups) * d;
        const float *B = base + kvd + (h / groups) * d;
        const float *Cq = base + 2 * kvd + h * d;
        const float *dt = j->c->s_z + sp->row * j->Z + j->C + nh * d + h;
        float *y = j->c->s_m + sp->row * nh * d + h * d;
        mm_cpu_ssm_scan(sp->n, d, x, B, Cq, j->C, dt, j->Z, j->l->dt_bias[h], j->l->A[h], S, y,
                        nh * d);
        if (!j->c->lim.state_fp32) /* the reference keeps S in bf16 between steps */
            for (int64_t k = 0; k < d * d; k++)
                S[k] = mm_bf16_to_f32(mm_f32_to_bf16(S[k]));
        /* gated RMSNorm per token, gate g = z[.., C + h·d ..] */
        for (int64_t t = 0; t < sp->n; t++) {
            const float *g = j->c->s_z + (sp->row + t) * j->Z + j->C + h * d;
            float *yt = y + t * nh * d;
            mm_cpu_gated_rmsnorm(yt, g, j->l->gnorm, d, yt); /* in place */
        }
    }
}

static void cpu_mamba2(void *vctx, enum mm_stack stack, int layer, struct mm_act *x,
                       const struct mm_span *spans, int n_spans)
{
    struct cpu_ctx *c = vctx;
    const struct mm_stack_config *sc = c->stacks[stack].cfg;
    const struct cpu_layer *l = &c->stacks[stack].layers[layer];
    const int64_t H = sc->hidden, d = sc->head_dim, nh = sc->heads;
    const int64_t C = 2 * sc->kv_heads * d + nh * d, Z = C + nh * d + nh;
    const int64_t T = spans[n_spans - 1].row + spans[n_spans - 1].n;
    /* u = RMSNorm(x); z = u·Wᵀ = [vkq | g | dt] */
    mm_cpu_rmsnorm(x->data, T, H, l->attn_norm, (float)sc->rms_norm_eps, c->s_y);
    mm_cpu_matmul(c->tp, c->s_y, T, H, l->wz, Z, NULL, c->s_z, false);
    /* causal conv (kernel 2) + SiLU per sequence, from and into the slot's conv state */
    for (int s = 0; s < n_spans; s++) {
        float *conv_state = c->state + (int64_t)spans[s].slot * c->state_elems + l->state_off;
        mm_cpu_conv2_silu(c->s_z + spans[s].row * Z, Z, spans[s].n, C, l->conv_w, l->conv_b,
                          conv_state, c->s_u + spans[s].row * C, C);
        if (!c->lim.state_fp32)
            for (int64_t k = 0; k < C; k++)
                conv_state[k] = mm_bf16_to_f32(mm_f32_to_bf16(conv_state[k]));
    }
    /* scan + gated norm, one (sequence, head) per item */
    struct scan_job job = {c, sc, l, spans, Z, C};
    mm_threadpool_run(c->tp, (int64_t)n_spans * nh, 1, scan_items, &job);
    /* x += o_proj(y) */
    mm_cpu_matmul(c->tp, c->s_m, T, nh * d, l->o_proj, H, NULL, x->data, true);
}

/* ---- attention ------------------------------------------------------------------- */

struct kv_view {
    const float *kv;
    const int32_t *blocks;
    int64_t block_elems, off, kvd, head_off;
};

static const float *kv_k(const void *arg, int64_t i)
{
    const struct kv_view *v = arg;
    return v->kv + (int64_t)v->blocks[i / MM_KV_BLOCK] * v->block_elems + v->off +
           (i % MM_KV_BLOCK) * v->kvd + v->head_off;
}

static const float *kv_v(const void *arg, int64_t i)
{
    const struct kv_view *v = arg;
    return v->kv + (int64_t)v->blocks[i / MM_KV_BLOCK] * v->block_elems + v->off +
           (MM_KV_BLOCK + i % MM_KV_BLOCK) * v->kvd + v->head_off;
}

struct attn_job {
    struct cpu_ctx *c;
    const struct mm_stack_config *sc;
    const struct cpu_layer *l;
    const struct mm_span *spans;
    enum mm_stack stack;
};

static void attn_items(void *arg, int64_t i0, int64_t i1, int worker)
{
    const struct attn_job *j = arg;
    const struct mm_stack_config *sc = j->sc;
    const int64_t d = sc->head_dim, nh = sc->heads, groups = nh / sc->kv_heads;
    const int64_t kvd = sc->kv_heads * d, QKV = (nh + 2 * sc->kv_heads) * d;
    float *scores = j->c->s_scores + (int64_t)worker * j->c->lim.max_context; /* private */
    for (int64_t it = i0; it < i1; it++) {
        const struct mm_span *sp = &j->spans[it / nh];
        const int64_t h = it % nh, kvh = h / groups;
        struct kv_view v = {j->c->kv[j->stack], sp->blocks, j->c->block_elems[j->stack],
                           j->l->kv_off, kvd, kvh * d};
        for (int64_t t = 0; t < sp->n; t++) {
            /* q of head h: kv group kvh, member h % groups (packed (h gs d)) */
            const float *q =
                j->c->s_z + (sp->row + t) * QKV + kvh * (groups + 2) * d + (h % groups) * d;
            mm_cpu_attend(q, d, sp->pos + t + 1, kv_k, kv_v, &v,
                          j->c->s_y + (sp->row + t) * nh * d + h * d, scores);
        }
    }
}

static void cpu_attention(void *vctx, enum mm_stack stack, int layer, struct mm_act *x,
                          const struct mm_span *spans, int n_spans)
{
    struct cpu_ctx *c = vctx;
    const struct mm_stack_config *sc = c->stacks[stack].cfg;
    const struct cpu_layer *l = &c->stacks[stack].layers[layer];
    const int64_t H = sc->hidden, d = sc->head_dim, nh = sc->heads, kv = sc->kv_heads;
    const int64_t groups = nh / kv, kvd = kv * d, QKV = (nh + 2 * kv) * d;
    const int64_t T = spans[n_spans - 1].row + spans[n_spans - 1].n;
    const float theta = (float)sc->rope_theta;
    /* u = RMSNorm(x); qkv = u·wqkvᵀ, per kv head j: [q_{g·j} … q_{g·j+g−1}, k_j, v_j] */
    mm_cpu_rmsnorm(x->data, T, H, l->attn_norm, (float)sc->rms_norm_eps, c->s_u);
    mm_cpu_matmul(c->tp, c->s_u, T, H, l->wqkv, QKV, NULL, c->s_z, false);
    /* RoPE on q and k at absolute positions; store k (after RoPE) and v in the KV blocks */
    for (int s = 0; s < n_spans; s++) {
        const struct mm_span *sp = &spans[s];
        for (int64_t t = 0; t < sp->n; t++) {
            const int64_t pos = sp->pos + t;
            float *row = c->s_z + (sp->row + t) * QKV;
            float *kdst = c->kv[stack] +
                          (int64_t)sp->blocks[pos / MM_KV_BLOCK] * c->block_elems[stack] +
                          l->kv_off + (pos % MM_KV_BLOCK) * kvd;
            float *vdst = kdst + MM_KV_BLOCK * kvd;
            for (int64_t j = 0; j < kv; j++) {
                float *grp = row + j * (groups + 2) * d;
                for (int64_t g = 0; g < groups + 1; g++) /* q heads and k */
                    mm_cpu_rope(grp + g * d, d, pos, theta);
                memcpy(kdst + j * d, grp + groups * d, (size_t)d * sizeof(float));
                memcpy(vdst + j * d, grp + (groups + 1) * d, (size_t)d * sizeof(float));
            }
        }
    }
    /* causal softmax attention per (sequence, head); heads concatenated → wo */
    struct attn_job job = {c, sc, l, spans, stack};
    mm_threadpool_run(c->tp, (int64_t)n_spans * nh, 1, attn_items, &job);
    mm_cpu_matmul(c->tp, c->s_y, T, nh * d, l->wo, H, NULL, x->data, true);
}

/* ---- mlp, logits, slots ------------------------------------------------------------ */

static void cpu_mlp(void *vctx, enum mm_stack stack, int layer, struct mm_act *x, int64_t n)
{
    struct cpu_ctx *c = vctx;
    const struct mm_stack_config *sc = c->stacks[stack].cfg;
    const struct cpu_layer *l = &c->stacks[stack].layers[layer];
    const int64_t H = sc->hidden, F = sc->intermediate;
    /* x += w2( SiLU(w1·u) ⊙ (w3·u) ), u = RMSNorm(x) */
    mm_cpu_rmsnorm(x->data, n, H, l->ffn_norm, (float)sc->rms_norm_eps, c->s_u);
    mm_cpu_matmul(c->tp, c->s_u, n, H, l->w1, F, NULL, c->s_z, false);
    mm_cpu_matmul(c->tp, c->s_u, n, H, l->w3, F, NULL, c->s_y, false);
    for (int64_t i = 0; i < n * F; i++)
        c->s_m[i] = mm_cpu_silu(c->s_z[i]) * c->s_y[i];
    mm_cpu_matmul(c->tp, c->s_m, n, F, l->w2, H, NULL, x->data, true);
}

static void cpu_logits(void *vctx, const struct mm_act *x, const int64_t *rows, int n, float *out)
{
    struct cpu_ctx *c = vctx;
    const int64_t H = c->cfg.llm.hidden;
    for (int i = 0; i < n; i++)
        mm_cpu_rmsnorm(x->data + rows[i] * H, 1, H, c->norm, (float)c->cfg.llm.rms_norm_eps,
                       c->s_u + (int64_t)i * H);
    mm_cpu_matmul(c->tp, c->s_u, n, H, c->output, c->cfg.vocab_size, NULL, out, false);
}

/* ---- sampling -------------------------------------------------------------------- */

static uint32_t *slot_counts(const struct cpu_ctx *c, int32_t slot)
{
    return c->counts + (int64_t)slot * c->cfg.vocab_size;
}

static void cpu_sample(void *vctx, const struct mm_act *x, const struct mm_sample_req *reqs, int n,
                       struct mm_sample_out *out)
{
    struct cpu_ctx *c = vctx;
    const int64_t H = c->cfg.llm.hidden, V = c->cfg.vocab_size;
    for (int i0 = 0; i0 < n; i0 += SAMPLE_ROWS) {
        const int m = n - i0 < SAMPLE_ROWS ? n - i0 : SAMPLE_ROWS;
        /* 1. l = output · RMSNorm(x[row]) for a group of rows at once */
        for (int i = 0; i < m; i++)
            mm_cpu_rmsnorm(x->data + reqs[i0 + i].row * H, 1, H, c->norm,
                           (float)c->cfg.llm.rms_norm_eps, c->s_norm + (int64_t)i * H);
        mm_cpu_matmul(c->tp, c->s_norm, m, H, c->output, V, NULL, c->s_logits, false);
        /* 2-6 one row at a time (in request order: two requests of one slot see
         * each other's counts in that order) */
        for (int i = 0; i < m; i++) {
            const struct mm_sample_req *r = &reqs[i0 + i];
            mm_cpu_sample_row(&c->sampler, c->s_logits + (int64_t)i * V, slot_counts(c, r->slot),
                              &r->p, r->stream, r->counter, &out[i0 + i]);
        }
    }
}

static void cpu_slot_count(void *vctx, int32_t slot, const int32_t *ids, int64_t n, bool output)
{
    struct cpu_ctx *c = vctx;
    mm_cpu_count_tokens(slot_counts(c, slot), c->cfg.vocab_size, ids, n, output);
}

/* ---- slots and KV blocks ----------------------------------------------------------- */

static void cpu_slot_reset(void *vctx, int32_t slot)
{
    struct cpu_ctx *c = vctx;
    memset(c->state + (int64_t)slot * c->state_elems, 0, (size_t)c->state_elems * sizeof(float));
    memset(slot_counts(c, slot), 0, (size_t)c->cfg.vocab_size * sizeof(uint32_t));
}

static void cpu_slot_copy(void *vctx, int32_t src, int32_t dst)
{
    struct cpu_ctx *c = vctx;
    if (src == dst)
        return;
    memcpy(c->state + (int64_t)dst * c->state_elems, c->state + (int64_t)src * c->state_elems,
           (size_t)c->state_elems * sizeof(float));
    memcpy(slot_counts(c, dst), slot_counts(c, src), (size_t)c->cfg.vocab_size * sizeof(uint32_t));
}

/* A saved slot: the fp32 state (state_elems floats), then the counts (vocab words). */
static size_t cpu_slot_bytes(void *vctx)
{
    const struct cpu_ctx *c = vctx;
    return (size_t)c->state_elems * sizeof(float) + (size_t)c->cfg.vocab_size * sizeof(uint32_t);
}

static void cpu_slot_save(void *vctx, int32_t slot, void *host)
{
    struct cpu_ctx *c = vctx;
    const size_t sb = (size_t)c->state_elems * sizeof(float);
    memcpy(host, c->state + (int64_t)slot * c->state_elems, sb);
    memcpy((char *)host + sb, slot_counts(c, slot), (size_t)c->cfg.vocab_size * sizeof(uint32_t));
}

static void cpu_slot_restore(void *vctx, int32_t slot, const void *host)
{
    struct cpu_ctx *c = vctx;
    const size_t sb = (size_t)c->state_elems * sizeof(float);
    memcpy(c->state + (int64_t)slot * c->state_elems, host, sb);
    memcpy(slot_counts(c, slot), (const char *)host + sb,
           (size_t)c->cfg.vocab_size * sizeof(uint32_t));
}

static void cpu_kv_copy(void *vctx, enum mm_stack stack, const int32_t *src, const int32_t *dst,
                        int64_t n)
{
    struct cpu_ctx *c = vctx;
    const int64_t be = c->block_elems[stack];
    for (int64_t i = 0; i < n; i++)
        if (src[i] != dst[i])
            memcpy(c->kv[stack] + (int64_t)dst[i] * be, c->kv[stack] + (int64_t)src[i] * be,
                   (size_t)be * sizeof(float));
}

static void cpu_slot_clear_counts(void *vctx, int32_t slot)
{
    struct cpu_ctx *c = vctx;
    memset(slot_counts(c, slot), 0, (size_t)c->cfg.vocab_size * sizeof(uint32_t));
}

static size_t cpu_kv_block_bytes(void *vctx, enum mm_stack stack)
{
    const struct cpu_ctx *c = vctx;
    return c->kv[stack] ? (size_t)c->block_elems[stack] * sizeof(float) : 0;
}

static void cpu_kv_save(void *vctx, enum mm_stack stack, const int32_t *blocks, int64_t n,
                        void *host)
{
    struct cpu_ctx *c = vctx;
    const int64_t be = c->block_elems[stack];
    for (int64_t i = 0; c->kv[stack] && i < n; i++)
        memcpy((float *)host + i * be, c->kv[stack] + (int64_t)blocks[i] * be,
               (size_t)be * sizeof(float));
}

static void cpu_kv_restore(void *vctx, enum mm_stack stack, const int32_t *blocks, int64_t n,
                           const void *host)
{
    struct cpu_ctx *c = vctx;
    const int64_t be = c->block_elems[stack];
    for (int64_t i = 0; c->kv[stack] && i < n; i++)
        memcpy(c->kv[stack] + (int64_t)blocks[i] * be, (const float *)host + i * be,
               (size_t)be * sizeof(float));
}

/* Plain C ops cannot fail after load: nothing to report. */
static enum mm_status cpu_status(void *vctx, struct mm_err *err)
{
    (void)vctx;
    (void)err;
    return MM_OK;
}

static void cpu_slot_read(void *vctx, int32_t slot, float *out)
{
    struct cpu_ctx *c = vctx;
    memcpy(out, c->state + (int64_t)slot * c->state_elems, (size_t)c->state_elems * sizeof(float));
}

static const struct mm_backend_ops cpu_ops = {
    .name = "cpu",
    .load = cpu_load,
    .destroy = cpu_destroy,
    .act_alloc = cpu_act_alloc,
    .embed_tokens = cpu_embed_tokens,
    .vision_embed = cpu_vision_embed,
    .pixel_shuffle = cpu_pixel_shuffle,
    .copy_rows = cpu_copy_rows,
    .l2_normalize = cpu_l2_normalize,
    .mamba2 = cpu_mamba2,
    .attention = cpu_attention,
    .mlp = cpu_mlp,
    .logits = cpu_logits,
    .sample = cpu_sample,
    .slot_count = cpu_slot_count,
    .slot_reset = cpu_slot_reset,
    .slot_copy = cpu_slot_copy,
    .slot_bytes = cpu_slot_bytes,
    .slot_save = cpu_slot_save,
    .slot_restore = cpu_slot_restore,
    .kv_copy = cpu_kv_copy,
    .slot_clear_counts = cpu_slot_clear_counts,
    .kv_block_bytes = cpu_kv_block_bytes,
    .kv_save = cpu_kv_save,
    .kv_restore = cpu_kv_restore,
    .status = cpu_status,
    .slot_read = cpu_slot_read,
};

enum mm_status mm_cpu_backend_create(int n_threads, struct mm_backend *b, struct mm_err *err)
{
    struct cpu_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    enum mm_status st = mm_threadpool_create(n_threads, &c->tp, err);
    if (st != MM_OK) {
        free(c);
        return st;
    }
    c->n_threads = mm_threadpool_size(c->tp);
    b->ops = &cpu_ops;
    b->ctx = c;
    return MM_OK;
}
