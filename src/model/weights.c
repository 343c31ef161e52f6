/* weights.c: binds and shape-checks the tensors of docs/model.md §2 (see weights.h). */
#include "model/weights.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
}

/* Looks up `name` and checks dtype and shape (ndim dims given as varargs). */
static enum mm_status bind(const struct mm_safetensors *st, struct mm_weights *w, bool optional,
                           const struct mm_tensor **out, struct mm_err *err, const char *name,
                           int ndim, ...)
{
    const struct mm_tensor *t = mm_safetensors_find(st, name);
    *out = NULL;
    if (!t) {
        if (optional)
            return MM_OK;
        return mm_err_set(err, MM_ERR_NOT_FOUND, "tensor %s is missing from the checkpoint", name);
    }
    int64_t want[MM_TENSOR_MAX_DIMS];
    va_list ap;
    va_start(ap, ndim);
    for (int i = 0; i < ndim; i++)
        want[i] = va_arg(ap, int64_t);
    va_end(ap);
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = want[i] < 0 || t->shape[i] == want[i]; /* -1: any (checked by the caller) */
    if (!ok) {
        char a[128], b[128];
        fmt_shape(a, sizeof a, ndim, want);
        fmt_shape(b, sizeof b, t->ndim, t->shape);
        return mm_err_set(err, MM_ERR_FORMAT, "tensor %s has shape %s, expected %s", name, b, a);
    }
    if (!mm_dtype_is_float(t->dtype))
        return mm_err_set(err, MM_ERR_FORMAT, "tensor %s has dtype %s, expected BF16, F16 or F32",
                          name, mm_dtype_name(t->dtype));
    *out = t;
    w->n_params += t->numel;
    w->n_bytes += t->nbytes;
    return MM_OK;
}

#define I(x) ((int64_t)(x))

static enum mm_status bind_layer(const struct mm_safetensors *st, struct mm_weights *w,
                                 const char *prefix, const struct mm_stack_config *s,
                                 enum mm_layer_kind kind, struct mm_layer_weights *lw,
                                 struct mm_err *err)
{
    const int64_t H = s->hidden, F = s->intermediate, d = s->head_dim;
    const int64_t nh = s->heads, kv = s->kv_heads;
    char n[512];
    enum mm_status r;
    lw->kind = kind;
#define NAME(suffix) (snprintf(n, sizeof n, "%s.%s", prefix, suffix), n)
    if ((r = bind(st, w, false, &lw->attention_norm, err, NAME("attention_norm.weight"), 1, H)) ||
        (r = bind(st, w, false, &lw->ffn_norm, err, NAME("ffn_norm.weight"), 1, H)) ||
        (r = bind(st, w, false, &lw->w1, err, NAME("feed_forward.w1.weight"), 2, F, H)) ||
        (r = bind(st, w, false, &lw->w3, err, NAME("feed_forward.w3.weight"), 2, F, H)) ||
        (r = bind(st, w, false, &lw->w2, err, NAME("feed_forward.w2.weight"), 2, H, F)))
        return r;
    if (kind == MM_LAYER_MAMBA2) {
        const int64_t C = 2 * kv * d + nh * d;
        if ((r = bind(st, w, false, &lw->wvkqgdt, err, NAME("attention.wvkqgdt.weight"), 2,
                      C + nh * d + nh, H)) ||
            (r = bind(st, w, false, &lw->conv_w, err, NAME("attention.conv1d.weight"), 3, C, I(1),
                      I(2))) ||
            (r = bind(st, w, false, &lw->conv_b, err, NAME("attention.conv1d.bias"), 1, C)) ||
            (r = bind(st, w, false, &lw->dt_bias, err, NAME("attention.dt_bias"), 1, nh)) ||
            (r = bind(st, w, false, &lw->A_log, err, NAME("attention.A_log_bias"), 1, nh)) ||
            (r = bind(st, w, false, &lw->gnorm, err, NAME("attention.g_norm_swish_gate.weight"), 1,
                      d)) ||
            (r = bind(st, w, false, &lw->o_proj, err, NAME("attention.o_proj.weight"), 2, H,
                      nh * d)))
            return r;
    } else {
        if ((r = bind(st, w, false, &lw->wqkv, err, NAME("attention.wqkv.weight"), 2,
                      (nh + 2 * kv) * d, H)) ||
            (r = bind(st, w, false, &lw->wo, err, NAME("attention.wo.weight"), 2, H, nh * d)))
            return r;
    }
#undef NAME
    return MM_OK;
}

enum mm_status mm_weights_bind(const struct mm_config *cfg, const struct mm_safetensors *st,
                               struct mm_weights *w, struct mm_err *err)
{
    memset(w, 0, sizeof *w);
    const int64_t H = cfg->llm.hidden, p = cfg->patch_size;
    const int64_t g = cfg->image_size / cfg->patch_size;
    enum mm_status r;
    w->pos_grid = g;
    if ((r = bind(st, w, false, &w->patch_w, err,
                  "embedding_model.vision_embeddings.patch_embedding.weight", 4, H, I(3), p, p)) ||
        (r = bind(st, w, false, &w->patch_b, err,
                  "embedding_model.vision_embeddings.patch_embedding.bias", 1, H)) ||
        (r = bind(st, w, false, &w->pos_emb, err,
                  "embedding_model.vision_embeddings.position_embedding", 3, I(1), g * g + 1, H)) ||
        (r = bind(st, w, false, &w->text_emb, err, "embedding_model.llm_text_embeddings.weight", 2,
                  cfg->llm_vocab_size, H)) ||
        (r = bind(st, w, true, &w->special_emb, err,
                  "embedding_model.special_text_embeddings.weight", 2, I(-1), H)) ||
        (r = bind(st, w, false, &w->shuffle_w1, err, "embedding_model.pixel_shuffle_proj.0.weight",
                  2, H, 4 * H)) ||
        (r = bind(st, w, false, &w->shuffle_b1, err, "embedding_model.pixel_shuffle_proj.0.bias", 1,
                  H)) ||
        (r = bind(st, w, false, &w->shuffle_w2, err, "embedding_model.pixel_shuffle_proj.2.weight",
                  2, H, H)) ||
        (r = bind(st, w, false, &w->shuffle_b2, err, "embedding_model.pixel_shuffle_proj.2.bias", 1,
                  H)) ||
        (r = bind(st, w, false, &w->norm, err, "language_model.model.norm.weight", 1, H)) ||
        (r = bind(st, w, false, &w->output, err, "language_model.output.weight", 2, cfg->vocab_size,
                  H)))
        return r;
    /* every id the LM head can produce must be embeddable when fed back */
    const int64_t n_special = w->special_emb ? w->special_emb->shape[0] : 0;
    if (cfg->llm_vocab_size + n_special < cfg->vocab_size)
        return mm_err_set(
            err, MM_ERR_FORMAT,
            "text (%lld) + special (%lld) embedding rows do not cover vocab_size %lld",
            (long long)cfg->llm_vocab_size, (long long)n_special, (long long)cfg->vocab_size);
    char prefix[128];
    for (int64_t i = 0; i < cfg->emb.num_layers; i++) {
        snprintf(prefix, sizeof prefix, "embedding_model.encoder.%lld", (long long)i);
        if ((r = bind_layer(st, w, prefix, &cfg->emb, cfg->emb.kinds[i], &w->emb_layers[i], err)))
            return r;
    }
    for (int64_t i = 0; i < cfg->llm.num_layers; i++) {
        snprintf(prefix, sizeof prefix, "language_model.model.layers.%lld", (long long)i);
        if ((r = bind_layer(st, w, prefix, &cfg->llm, cfg->llm.kinds[i], &w->llm_layers[i], err)))
            return r;
    }
    /* stored but unused: counted so `inspect` reports the file's true size */
    const struct mm_tensor *t;
    if ((t = mm_safetensors_find(st, "language_model.model.tok_embeddings.weight"))) {
        w->n_params += t->numel;
        w->n_bytes += t->nbytes;
    }
    if ((t = mm_safetensors_find(st, "embedding_model.vision_embeddings.class_embedding"))) {
        w->n_params += t->numel;
        w->n_bytes += t->nbytes;
    }
    return MM_OK;
}
