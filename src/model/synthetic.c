/* synthetic.c: presets and the random-weight checkpoint writer (see synthetic.h).
 *
 * Weight scales keep activations O(1) through every layer (docs/model.md §6):
 * projections ~ U with std 1/sqrt(fan_in), norms ~ 1 +- 0.1, embeddings std 1,
 * small dt (dt_bias around -3), A_log_bias around 0. Values are uniform
 * (cheap, bounded) rather than Gaussian; only their scale matters here. */
#include "model/synthetic.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>

#include "base/dtype.h"
#include "base/json.h"
#include "model/safetensors.h"

extern const uint8_t mm_synthetic_tokenizer_begin[];
extern const uint8_t mm_synthetic_tokenizer_end[];

const uint8_t *mm_synthetic_tokenizer(size_t *len)
{
    *len = (size_t)(mm_synthetic_tokenizer_end - mm_synthetic_tokenizer_begin);
    return mm_synthetic_tokenizer_begin;
}

/* ---- presets ----------------------------------------------------------------- */

/* InternLM2's added tokens, in id order after the SentencePiece pieces
 * (ids V_e-6 .. V_e-1), then the multimodal specials from V_e on. */
static const char *const added_base[] = {"<|plugin|>",       "<|interpreter|>", "<|action_end|>",
                                         "<|action_start|>", "<|im_end|>",      "<|im_start|>"};
static const char *const added_special[] = {"<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>",
                                            "<ref>", "</ref>", "<box>",         "</box>"};
#define N_ADDED_BASE 6
#define N_ADDED_SPECIAL 9

static void set_stack(struct mm_stack_config *s, int64_t layers, int64_t hidden, int64_t heads,
                      int64_t kv, int64_t inter, double eps, double theta)
{
    s->num_layers = layers;
    s->hidden = hidden;
    s->heads = heads;
    s->kv_heads = kv;
    s->head_dim = hidden / heads;
    s->intermediate = inter;
    s->rms_norm_eps = eps;
    s->rope_theta = theta;
    for (int64_t i = 0; i < layers; i++)
        s->kinds[i] = MM_LAYER_MAMBA2;
}

static const char preset_names[] = "tiny-linear tiny-hybrid tiny-teacher linear hybrid teacher";

const char *mm_synthetic_preset_names(void) { return preset_names; }

enum mm_status mm_synthetic_preset(const char *name, struct mm_config *cfg, struct mm_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    const int tiny = strncmp(name, "tiny-", 5) == 0;
    const char *layout = tiny ? name + 5 : name;
    int kind; /* 0 linear, 1 hybrid, 2 teacher */
    if (strcmp(layout, "linear") == 0)
        kind = 0;
    else if (strcmp(layout, "hybrid") == 0)
        kind = 1;
    else if (strcmp(layout, "teacher") == 0)
        kind = 2;
    else
        return mm_err_set(err, MM_ERR_INVALID, "unknown preset \"%s\" (one of: %s)", name,
                          preset_names);

    cfg->force_image_size = 448;
    cfg->downsample_ratio = 0.5;
    snprintf(cfg->template_name, sizeof cfg->template_name, "internlm2-chat");
    cfg->use_thumbnail = true;
    cfg->min_dynamic_patch = 1;
    cfg->max_dynamic_patch = 12;
    cfg->dynamic_image_size = true;
    cfg->patch_size = 14;
    cfg->num_channels = 3;
    cfg->use_pixel_shuffle_proj = true;
    if (tiny) {
        /* GQA (4 heads over 2 kv heads), per-stack eps and theta, a 16x16
         * position grid for the teacher so the bicubic resize path runs. */
        set_stack(&cfg->emb, 2, 64, 4, 2, 128, 1e-6, 10000.0);
        set_stack(&cfg->llm, 4, 64, 4, 2, 160, 1e-5, 1000000.0);
        cfg->llm_vocab_size = MM_SYNTHETIC_SPM_PIECES + N_ADDED_BASE;
        cfg->image_size = kind == 2 ? 224 : 448;
        cfg->shuffle_loc = kind == 1 ? MM_SHUFFLE_POST : MM_SHUFFLE_PRE;
        cfg->normalize_encoder_output = kind == 1;
    } else {
        set_stack(&cfg->emb, 8, 2048, 16, 8, 8192, 1e-6, 1000000.0);
        set_stack(&cfg->llm, 24, 2048, 16, 8, 8192, 1e-5, 1000000.0);
        cfg->llm_vocab_size = 92544;
        cfg->image_size = 448;
        cfg->shuffle_loc = MM_SHUFFLE_PRE;
    }
    cfg->vocab_size = cfg->llm_vocab_size + N_ADDED_SPECIAL;
    cfg->img_context_token_id = cfg->llm_vocab_size + 2;
    for (int i = 0; i < N_ADDED_SPECIAL; i++) {
        snprintf(cfg->special[i].name, sizeof cfg->special[i].name, "%s", added_special[i]);
        cfg->special[i].id = cfg->llm_vocab_size + i;
    }
    cfg->n_special = N_ADDED_SPECIAL;
    if (kind == 1) { /* the hybrid layout: every 4th layer keeps attention */
        for (int64_t i = 0; i < cfg->emb.num_layers; i += tiny ? 1 : 4)
            cfg->emb.kinds[i] = tiny && i % 2 ? MM_LAYER_MAMBA2 : MM_LAYER_MHA;
        for (int64_t i = 0; i < cfg->llm.num_layers; i += tiny ? 3 : 4)
            cfg->llm.kinds[i] = MM_LAYER_MHA;
    } else if (kind == 2) {
        for (int64_t i = 0; i < cfg->emb.num_layers; i++)
            cfg->emb.kinds[i] = MM_LAYER_MHA;
        for (int64_t i = 0; i < cfg->llm.num_layers; i++)
            cfg->llm.kinds[i] = MM_LAYER_MHA;
    }
    cfg->patches_per_side = cfg->force_image_size / cfg->patch_size;
    cfg->tokens_per_tile = cfg->patches_per_side * cfg->patches_per_side / 4;
    return MM_OK;
}

/* ---- tensor list ----------------------------------------------------------------- */

enum init_kind {
    INIT_LINEAR, /* std 1/sqrt(fan_in) (fan_in = last dim, or in*k*k for the conv) */
    INIT_NORM,   /* 1 +- 0.1 */
    INIT_EMBED,  /* std 1 */
    INIT_SMALL,  /* std 0.02 (biases, unused tensors) */
    INIT_POS,    /* std 0.5 */
    INIT_CONV1D, /* std 0.5 */
    INIT_DT,     /* -3 +- 1 */
    INIT_ALOG,   /* 0 +- 0.5 */
};

struct spec {
    char name[128];
    int ndim;
    int64_t shape[4];
    enum init_kind init;
};

struct spec_list {
    struct spec *v;
    int64_t n, cap;
};

static int add(struct spec_list *l, enum init_kind init, int ndim, int64_t a, int64_t b, int64_t c,
               int64_t d, const char *fmt, ...) __attribute__((format(printf, 8, 9)));

static int add(struct spec_list *l, enum init_kind init, int ndim, int64_t a, int64_t b, int64_t c,
               int64_t d, const char *fmt, ...)
{
    if (l->n == l->cap) {
        int64_t ncap = l->cap ? 2 * l->cap : 256;
        struct spec *nv = realloc(l->v, (size_t)ncap * sizeof *nv);
        if (!nv)
            return 0;
        l->v = nv;
        l->cap = ncap;
    }
    struct spec *s = &l->v[l->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
    s->ndim = ndim;
    s->shape[0] = a;
    s->shape[1] = b;
    s->shape[2] = c;
    s->shape[3] = d;
    s->init = init;
    return 1;
}

static int add_layer(struct spec_list *l, const char *p, const struct mm_stack_config *s, int64_t i)
{
    const int64_t H = s->hidden, F = s->intermediate, d = s->head_dim, nh = s->heads,
                  kv = s->kv_heads, C = 2 * kv * d + nh * d;
    int ok =
        add(l, INIT_NORM, 1, H, 0, 0, 0, "%s.%lld.attention_norm.weight", p, (long long)i) &&
        add(l, INIT_NORM, 1, H, 0, 0, 0, "%s.%lld.ffn_norm.weight", p, (long long)i) &&
        add(l, INIT_LINEAR, 2, F, H, 0, 0, "%s.%lld.feed_forward.w1.weight", p, (long long)i) &&
        add(l, INIT_LINEAR, 2, F, H, 0, 0, "%s.%lld.feed_forward.w3.weight", p, (long long)i) &&
        add(l, INIT_LINEAR, 2, H, F, 0, 0, "%s.%lld.feed_forward.w2.weight", p, (long long)i);
    if (!ok)
        return 0;
    if (s->kinds[i] == MM_LAYER_MAMBA2)
        return add(l, INIT_LINEAR, 2, C + nh * d + nh, H, 0, 0, "%s.%lld.attention.wvkqgdt.weight",
                   p, (long long)i) &&
               add(l, INIT_CONV1D, 3, C, 1, 2, 0, "%s.%lld.attention.conv1d.weight", p,
                   (long long)i) &&
               add(l, INIT_SMALL, 1, C, 0, 0, 0, "%s.%lld.attention.conv1d.bias", p,
                   (long long)i) &&
               add(l, INIT_DT, 1, nh, 0, 0, 0, "%s.%lld.attention.dt_bias", p, (long long)i) &&
               add(l, INIT_ALOG, 1, nh, 0, 0, 0, "%s.%lld.attention.A_log_bias", p, (long long)i) &&
               add(l, INIT_NORM, 1, d, 0, 0, 0, "%s.%lld.attention.g_norm_swish_gate.weight", p,
                   (long long)i) &&
               add(l, INIT_LINEAR, 2, H, nh * d, 0, 0, "%s.%lld.attention.o_proj.weight", p,
                   (long long)i);
    return add(l, INIT_LINEAR, 2, (nh + 2 * kv) * d, H, 0, 0, "%s.%lld.attention.wqkv.weight", p,
               (long long)i) &&
           add(l, INIT_LINEAR, 2, H, nh * d, 0, 0, "%s.%lld.attention.wo.weight", p, (long long)i);
}

static int build_specs(const struct mm_config *cfg, struct spec_list *l)
{
    const int64_t H = cfg->llm.hidden, p = cfg->patch_size, g = cfg->image_size / cfg->patch_size;
    const char *ve = "embedding_model.vision_embeddings";
    int ok =
        add(l, INIT_LINEAR, 4, H, 3, p, p, "%s.patch_embedding.weight", ve) &&
        add(l, INIT_SMALL, 1, H, 0, 0, 0, "%s.patch_embedding.bias", ve) &&
        add(l, INIT_POS, 3, 1, g * g + 1, H, 0, "%s.position_embedding", ve) &&
        add(l, INIT_SMALL, 3, 1, 1, H, 0, "%s.class_embedding", ve) &&
        add(l, INIT_EMBED, 2, cfg->llm_vocab_size, H, 0, 0,
            "embedding_model.llm_text_embeddings.weight") &&
        add(l, INIT_EMBED, 2, cfg->vocab_size - cfg->llm_vocab_size, H, 0, 0,
            "embedding_model.special_text_embeddings.weight") &&
        add(l, INIT_LINEAR, 2, H, 4 * H, 0, 0, "embedding_model.pixel_shuffle_proj.0.weight") &&
        add(l, INIT_SMALL, 1, H, 0, 0, 0, "embedding_model.pixel_shuffle_proj.0.bias") &&
        add(l, INIT_LINEAR, 2, H, H, 0, 0, "embedding_model.pixel_shuffle_proj.2.weight") &&
        add(l, INIT_SMALL, 1, H, 0, 0, 0, "embedding_model.pixel_shuffle_proj.2.bias");
    for (int64_t i = 0; ok && i < cfg->emb.num_layers; i++)
        ok = add_layer(l, "embedding_model.encoder", &cfg->emb, i);
    ok = ok && add(l, INIT_SMALL, 2, cfg->vocab_size, H, 0, 0,
                   "language_model.model.tok_embeddings.weight");
    for (int64_t i = 0; ok && i < cfg->llm.num_layers; i++)
        ok = add_layer(l, "language_model.model.layers", &cfg->llm, i);
    return ok && add(l, INIT_NORM, 1, H, 0, 0, 0, "language_model.model.norm.weight") &&
           add(l, INIT_LINEAR, 2, cfg->vocab_size, H, 0, 0, "language_model.output.weight");
}

static int64_t spec_numel(const struct spec *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++)
        n *= s->shape[i];
    return n;
}

/* ---- deterministic values -------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

static void init_params(const struct spec *s, float *center, float *std)
{
    const int64_t fan_in =
        s->init == INIT_LINEAR
            ? (s->ndim == 4 ? s->shape[1] * s->shape[2] * s->shape[3] : s->shape[s->ndim - 1])
            : 1;
    *center = 0.0f;
    *std = 0.02f;
    switch (s->init) {
    case INIT_LINEAR:
        *std = 1.0f / sqrtf((float)fan_in);
        break;
    case INIT_NORM:
        *center = 1.0f;
        *std = 0.1f;
        break;
    case INIT_EMBED:
        *std = 1.0f;
        break;
    case INIT_SMALL:
        *std = 0.02f;
        break;
    case INIT_POS:
        *std = 0.5f;
        break;
    case INIT_CONV1D:
        *std = 0.5f;
        break;
    case INIT_DT:
        *center = -3.0f;
        *std = 0.6f;
        break;
    case INIT_ALOG:
        *std = 0.3f;
        break;
    }
}

/* ---- writing ---------------------------------------------------------------------- */

static enum mm_status write_tensor_data(struct mm_st_writer *w, const struct spec *s, uint64_t seed,
                                        uint16_t *buf, size_t buf_elems, struct mm_err *err)
{
    float center, std;
    init_params(s, &center, &std);
    const float half_width = std * 1.7320508f; /* uniform(-a, a) has std a/sqrt(3) */
    uint64_t state = seed ^ name_hash(s->name);
    int64_t left = spec_numel(s);
    while (left > 0) {
        const size_t n = left < (int64_t)buf_elems ? (size_t)left : buf_elems;
        for (size_t i = 0; i < n; i++) {
            const double u = (double)(splitmix64(&state) >> 11) * 0x1.0p-53; /* [0,1) */
            buf[i] = mm_f32_to_bf16(center + half_width * (float)(2.0 * u - 1.0));
        }
        enum mm_status st = mm_st_writer_write(w, buf, n * sizeof *buf, err);
        if (st != MM_OK)
            return st;
        left -= (int64_t)n;
    }
    return MM_OK;
}

static enum mm_status write_text(const char *dir, const char *file, const char *text, size_t len,
                                 struct mm_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "wb");
    if (!f)
        return mm_err_set(err, MM_ERR_IO, "%s: %s", path, strerror(errno));
    const int ok = fwrite(text, 1, len, f) == len;
    if (fclose(f) != 0 || !ok)
        return mm_err_set(err, MM_ERR_IO, "%s: write failed", path);
    return MM_OK;
}

static enum mm_status write_json(const char *dir, const char *file, cJSON *root, struct mm_err *err)
{
    char *text = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    enum mm_status st = write_text(dir, file, text, strlen(text), err);
    free(text);
    return st;
}

static enum mm_status write_tokenizer_files(const char *dir, const struct mm_config *cfg,
                                            struct mm_err *err)
{
    size_t len;
    const uint8_t *model = mm_synthetic_tokenizer(&len);
    enum mm_status st = write_text(dir, "tokenizer.model", (const char *)model, len, err);
    if (st != MM_OK)
        return st;
    /* added tokens: InternLM2's six just below V_e, the multimodal ones from V_e */
    cJSON *added = cJSON_CreateObject();
    cJSON *tcfg = cJSON_CreateObject();
    cJSON *decoder = cJSON_AddObjectToObject(tcfg, "added_tokens_decoder");
    cJSON *smap = cJSON_CreateObject();
    cJSON *extra = cJSON_AddArrayToObject(smap, "additional_special_tokens");
    const char *core[3] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3 + N_ADDED_BASE + N_ADDED_SPECIAL; i++) {
        const char *content;
        int64_t id;
        if (i < 3) {
            content = core[i];
            id = i;
        } else if (i < 3 + N_ADDED_BASE) {
            content = added_base[i - 3];
            id = cfg->llm_vocab_size - N_ADDED_BASE + (i - 3);
        } else {
            content = added_special[i - 3 - N_ADDED_BASE];
            id = cfg->llm_vocab_size + (i - 3 - N_ADDED_BASE);
        }
        char key[32];
        snprintf(key, sizeof key, "%lld", (long long)id);
        cJSON *e = cJSON_AddObjectToObject(decoder, key);
        cJSON_AddStringToObject(e, "content", content);
        cJSON_AddBoolToObject(e, "lstrip", 0);
        cJSON_AddBoolToObject(e, "normalized", 0);
        cJSON_AddBoolToObject(e, "rstrip", 0);
        cJSON_AddBoolToObject(e, "single_word", 0);
        cJSON_AddBoolToObject(e, "special", 1);
        if (i >= 3) {
            cJSON_AddNumberToObject(added, content, (double)id);
            cJSON_AddItemToArray(extra, cJSON_CreateString(content));
        }
    }
    cJSON_AddStringToObject(tcfg, "bos_token", "<s>");
    cJSON_AddStringToObject(tcfg, "eos_token", "</s>");
    cJSON_AddStringToObject(tcfg, "unk_token", "<unk>");
    cJSON_AddNullToObject(tcfg, "pad_token");
    cJSON_AddBoolToObject(tcfg, "add_bos_token", 1);
    cJSON_AddBoolToObject(tcfg, "add_eos_token", 0);
    cJSON_AddStringToObject(tcfg, "tokenizer_class", "InternLM2Tokenizer");
    cJSON_AddNumberToObject(tcfg, "model_max_length", 1000000);
    cJSON_AddStringToObject(smap, "bos_token", "<s>");
    cJSON_AddStringToObject(smap, "eos_token", "</s>");
    cJSON_AddStringToObject(smap, "unk_token", "<unk>");
    if ((st = write_json(dir, "added_tokens.json", added, err)) != MM_OK) {
        cJSON_Delete(tcfg);
        cJSON_Delete(smap);
        return st;
    }
    if ((st = write_json(dir, "tokenizer_config.json", tcfg, err)) != MM_OK) {
        cJSON_Delete(smap);
        return st;
    }
    if ((st = write_json(dir, "special_tokens_map.json", smap, err)) != MM_OK)
        return st;
    cJSON *gen = cJSON_CreateObject();
    cJSON_AddNumberToObject(gen, "bos_token_id", 1);
    cJSON *eos = cJSON_AddArrayToObject(gen, "eos_token_id");
    cJSON_AddItemToArray(eos, cJSON_CreateNumber((double)(cfg->llm_vocab_size - 2)));
    return write_json(dir, "generation_config.json", gen, err);
}

/* Writes specs [first, last) into one safetensors file. */
static enum mm_status write_shard(const char *path, const struct spec_list *l, int64_t first,
                                  int64_t last, uint64_t seed, uint16_t *buf, size_t buf_elems,
                                  struct mm_err *err)
{
    struct mm_st_writer *w;
    enum mm_status st = mm_st_writer_create(path, &w, err);
    if (st != MM_OK)
        return st;
    for (int64_t i = first; i < last && st == MM_OK; i++)
        st = mm_st_writer_declare(w, l->v[i].name, MM_DTYPE_BF16, l->v[i].ndim, l->v[i].shape, err);
    if (st == MM_OK)
        st = mm_st_writer_begin_data(w, err);
    for (int64_t i = first; i < last && st == MM_OK; i++)
        st = write_tensor_data(w, &l->v[i], seed, buf, buf_elems, err);
    if (st != MM_OK) {
        mm_st_writer_abort(w);
        return st;
    }
    return mm_st_writer_finish(w, err);
}

/* mkdir -p */
static enum mm_status make_dirs(const char *dir, struct mm_err *err)
{
    char path[4096];
    if (dir[0] == '\0' || snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return mm_err_set(err, MM_ERR_INVALID, "output directory name empty or too long");
    for (char *p = path + 1;; p++) {
        const char c = *p;
        if (c == '/' || c == '\0') {
            *p = '\0';
            if (mkdir(path, 0755) != 0 && errno != EEXIST)
                return mm_err_set(err, MM_ERR_IO, "%s: %s", path, strerror(errno));
            *p = c;
        }
        if (c == '\0')
            return MM_OK;
    }
}

/* A checkpoint is written whole into a new or empty directory: files left
 * from an earlier one (an index naming old shards, say) would be loaded in
 * place of the new weights. */
static enum mm_status check_empty(const char *dir, struct mm_err *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return mm_err_set(err, MM_ERR_IO, "%s: %s", dir, strerror(errno));
    const struct dirent *e;
    const char *found = NULL;
    while (!found && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            found = e->d_name;
    enum mm_status st = MM_OK;
    if (found)
        st = mm_err_set(err, MM_ERR_INVALID,
                        "%s is not empty (it holds %s): a checkpoint is written into a new or "
                        "empty directory",
                        dir, found);
    closedir(d);
    return st;
}

enum mm_status mm_synthetic_write(const char *dir, const struct mm_config *cfg,
                                  const struct mm_synthetic_options *opt, struct mm_err *err)
{
    if (opt->shards < 1 || opt->shards > 999)
        return mm_err_set(err, MM_ERR_INVALID, "shards must be 1..999");
    enum mm_status st = make_dirs(dir, err);
    if (st != MM_OK || (st = check_empty(dir, err)) != MM_OK)
        return st;
    struct spec_list l = {0};
    const size_t buf_elems = 1u << 20;
    uint16_t *buf = malloc(buf_elems * sizeof *buf);
    cJSON *index = NULL;
    if (!buf || !build_specs(cfg, &l)) {
        st = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (opt->shards > l.n) {
        st = mm_err_set(err, MM_ERR_INVALID, "%d shards for %lld tensors", opt->shards,
                        (long long)l.n);
        goto out;
    }
    if ((st = write_json(dir, "config.json", mm_config_to_json(cfg), err)) != MM_OK ||
        (st = write_tokenizer_files(dir, cfg, err)) != MM_OK)
        goto out;
    char path[4096];
    if (opt->shards == 1) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        st = write_shard(path, &l, 0, l.n, opt->seed, buf, buf_elems, err);
        goto out;
    }
    /* split by bytes: shard k takes tensors until it holds ~total/shards */
    int64_t total = 0;
    for (int64_t i = 0; i < l.n; i++)
        total += spec_numel(&l.v[i]) * 2;
    index = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(index, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)total);
    cJSON *map = cJSON_AddObjectToObject(index, "weight_map");
    int64_t first = 0, acc = 0;
    for (int k = 0; k < opt->shards; k++) {
        int64_t last = first;
        const int64_t target = total * (k + 1) / opt->shards;
        /* at least one tensor per shard: leave one for each shard after this */
        const int64_t stop = l.n - (opt->shards - 1 - k);
        while (last < stop && (k == opt->shards - 1 || acc < target || last == first)) {
            acc += spec_numel(&l.v[last]) * 2;
            last++;
        }
        char file[64];
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", k + 1, opt->shards);
        snprintf(path, sizeof path, "%s/%s", dir, file);
        if ((st = write_shard(path, &l, first, last, opt->seed, buf, buf_elems, err)) != MM_OK)
            goto out;
        for (int64_t i = first; i < last; i++)
            cJSON_AddStringToObject(map, l.v[i].name, file);
        first = last;
    }
    st = write_json(dir, "model.safetensors.index.json", index, err);
    index = NULL;
out:
    cJSON_Delete(index);
    free(l.v);
    free(buf);
    return st;
}
