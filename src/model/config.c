/* config.c: config.json -> struct mm_config, with validation (see config.h).
 * Defaults are the reference's where it has one (docs/model.md §1); everything
 * that sizes a tensor is required. */
#include "model/config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/json.h"

const char *mm_layer_kind_name(enum mm_layer_kind k)
{
    return k == MM_LAYER_MHA ? "mha" : "mamba2";
}

static enum mm_status parse_kinds(const cJSON *obj, const char *ctx, struct mm_stack_config *s,
                                  struct mm_err *err)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(obj, "layers_block_type");
    if (!list || cJSON_IsNull(list)) /* a plain InternLM2 config: all attention */
        return mm_err_set(err, MM_ERR_NOT_FOUND,
                          "%s: required key \"layers_block_type\" is missing", ctx);
    if (!cJSON_IsArray(list))
        return mm_err_set(err, MM_ERR_FORMAT, "%s: key \"layers_block_type\" must be an array",
                          ctx);
    if (cJSON_GetArraySize(list) != s->num_layers)
        return mm_err_set(err, MM_ERR_FORMAT,
                          "%s: \"layers_block_type\" has %d entries but num_hidden_layers is %lld",
                          ctx, cJSON_GetArraySize(list), (long long)s->num_layers);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, list)
    {
        if (cJSON_IsString(it) && strcmp(it->valuestring, "mamba2") == 0)
            s->kinds[i] = MM_LAYER_MAMBA2;
        else if (cJSON_IsString(it) && strcmp(it->valuestring, "mha") == 0)
            s->kinds[i] = MM_LAYER_MHA;
        else
            return mm_err_set(err, MM_ERR_FORMAT,
                              "%s: layers_block_type[%d] must be \"mamba2\" or \"mha\"", ctx, i);
        i++;
    }
    return MM_OK;
}

static enum mm_status parse_stack(const cJSON *obj, const char *ctx, struct mm_stack_config *s,
                                  struct mm_err *err)
{
    enum mm_status st;
    s->rms_norm_eps = 1e-6;
    s->rope_theta = 10000.0;
    s->kv_heads = -1;
    if ((st = mm_json_get_i64(obj, "num_hidden_layers", true, &s->num_layers, ctx, err)) ||
        (st = mm_json_get_i64(obj, "hidden_size", true, &s->hidden, ctx, err)) ||
        (st = mm_json_get_i64(obj, "num_attention_heads", true, &s->heads, ctx, err)) ||
        (st = mm_json_get_i64(obj, "num_key_value_heads", false, &s->kv_heads, ctx, err)) ||
        (st = mm_json_get_i64(obj, "intermediate_size", true, &s->intermediate, ctx, err)) ||
        (st = mm_json_get_f64(obj, "rms_norm_eps", false, &s->rms_norm_eps, ctx, err)) ||
        (st = mm_json_get_f64(obj, "rope_theta", false, &s->rope_theta, ctx, err)))
        return st;
    if (s->kv_heads < 0)
        s->kv_heads = s->heads;
    if (s->num_layers < 1 || s->num_layers > MM_MAX_LAYERS)
        return mm_err_set(err, MM_ERR_UNSUPPORTED, "%s: num_hidden_layers %lld outside 1..%d", ctx,
                          (long long)s->num_layers, MM_MAX_LAYERS);
    if (s->hidden < 1 || s->hidden > (1 << 20) || s->heads < 1 || s->kv_heads < 1 ||
        s->intermediate < 1 || s->intermediate > (1 << 22))
        return mm_err_set(err, MM_ERR_FORMAT, "%s: sizes must be positive and sane", ctx);
    if (s->hidden % s->heads != 0)
        return mm_err_set(err, MM_ERR_FORMAT,
                          "%s: hidden_size %lld is not a multiple of num_attention_heads %lld", ctx,
                          (long long)s->hidden, (long long)s->heads);
    if (s->heads % s->kv_heads != 0)
        return mm_err_set(
            err, MM_ERR_FORMAT,
            "%s: num_attention_heads %lld is not a multiple of num_key_value_heads %lld", ctx,
            (long long)s->heads, (long long)s->kv_heads);
    if (!(s->rms_norm_eps > 0) || !(s->rope_theta > 0))
        return mm_err_set(err, MM_ERR_FORMAT, "%s: rms_norm_eps and rope_theta must be positive",
                          ctx);
    s->head_dim = s->hidden / s->heads;
    if (s->head_dim % 2 != 0)
        return mm_err_set(err, MM_ERR_UNSUPPORTED, "%s: head_dim %lld must be even (RoPE)", ctx,
                          (long long)s->head_dim);
    return parse_kinds(obj, ctx, s, err);
}

static enum mm_status parse_special(const cJSON *emb, struct mm_config *cfg, struct mm_err *err)
{
    const cJSON *maps = cJSON_GetObjectItemCaseSensitive(emb, "special_token_maps");
    if (!maps || cJSON_IsNull(maps))
        return MM_OK;
    if (!cJSON_IsObject(maps))
        return mm_err_set(
            err, MM_ERR_FORMAT,
            "config.json: embedding_config: \"special_token_maps\" must be an object");
    const cJSON *it;
    cJSON_ArrayForEach(it, maps)
    {
        /* range first: converting an out-of-range double is undefined */
        if (!cJSON_IsNumber(it) || !(it->valuedouble >= 0 && it->valuedouble < 2147483648.0) ||
            it->valuedouble != floor(it->valuedouble))
            return mm_err_set(err, MM_ERR_FORMAT,
                              "config.json: special_token_maps[\"%s\"] must be a token id",
                              it->string);
        if (cfg->n_special == MM_MAX_SPECIAL_TOKENS ||
            strlen(it->string) >= sizeof cfg->special[0].name)
            return mm_err_set(err, MM_ERR_UNSUPPORTED, "config.json: special_token_maps too large");
        struct mm_special_token *t = &cfg->special[cfg->n_special++];
        snprintf(t->name, sizeof t->name, "%s", it->string);
        t->id = (int64_t)it->valuedouble;
    }
    return MM_OK;
}

enum mm_status mm_config_from_json(const cJSON *root, struct mm_config *cfg, struct mm_err *err)
{
    static const char top[] = "config.json";
    static const char ectx[] = "config.json: embedding_config";
    static const char lctx[] = "config.json: llm_config";
    enum mm_status st;
    memset(cfg, 0, sizeof *cfg);
    if (!cJSON_IsObject(root))
        return mm_err_set(err, MM_ERR_FORMAT, "config.json: top level must be an object");

    /* top level, with the reference's defaults */
    cfg->force_image_size = 448;
    cfg->downsample_ratio = 0.5;
    cfg->use_thumbnail = true;
    cfg->min_dynamic_patch = 1;
    cfg->max_dynamic_patch = 12;
    cfg->dynamic_image_size = true;
    const char *tmpl = "internlm2-chat";
    if ((st = mm_json_get_i64(root, "force_image_size", false, &cfg->force_image_size, top, err)) ||
        (st = mm_json_get_f64(root, "downsample_ratio", false, &cfg->downsample_ratio, top, err)) ||
        (st = mm_json_get_str(root, "template", false, &tmpl, top, err)) ||
        (st = mm_json_get_bool(root, "normalize_encoder_output", false,
                               &cfg->normalize_encoder_output, top, err)) ||
        (st = mm_json_get_bool(root, "use_thumbnail", false, &cfg->use_thumbnail, top, err)) ||
        (st = mm_json_get_i64(root, "min_dynamic_patch", false, &cfg->min_dynamic_patch, top,
                              err)) ||
        (st = mm_json_get_i64(root, "max_dynamic_patch", false, &cfg->max_dynamic_patch, top,
                              err)) ||
        (st = mm_json_get_bool(root, "dynamic_image_size", false, &cfg->dynamic_image_size, top,
                               err)))
        return st;
    if (strlen(tmpl) >= sizeof cfg->template_name)
        return mm_err_set(err, MM_ERR_FORMAT, "config.json: \"template\" too long");
    snprintf(cfg->template_name, sizeof cfg->template_name, "%s", tmpl);

    const cJSON *emb, *llm;
    if ((st = mm_json_get_obj(root, "embedding_config", true, &emb, top, err)) ||
        (st = mm_json_get_obj(root, "llm_config", true, &llm, top, err)))
        return st;

    /* embedding_config */
    if ((st = parse_stack(emb, ectx, &cfg->emb, err)))
        return st;
    cfg->patch_size = 14;
    cfg->image_size = 448;
    cfg->num_channels = 3;
    cfg->use_pixel_shuffle_proj = true;
    const char *loc = "pre";
    if ((st = mm_json_get_i64(emb, "patch_size", false, &cfg->patch_size, ectx, err)) ||
        (st = mm_json_get_i64(emb, "image_size", false, &cfg->image_size, ectx, err)) ||
        (st = mm_json_get_i64(emb, "num_channels", false, &cfg->num_channels, ectx, err)) ||
        (st = mm_json_get_i64(emb, "llm_vocab_size", true, &cfg->llm_vocab_size, ectx, err)) ||
        (st = mm_json_get_i64(emb, "img_context_token_id", true, &cfg->img_context_token_id, ectx,
                              err)) ||
        (st = mm_json_get_str(emb, "pixel_shuffle_loc", false, &loc, ectx, err)) ||
        (st = mm_json_get_bool(emb, "use_pixel_shuffle_proj", false, &cfg->use_pixel_shuffle_proj,
                               ectx, err)) ||
        (st = parse_special(emb, cfg, err)))
        return st;
    if (strcmp(loc, "pre") == 0)
        cfg->shuffle_loc = MM_SHUFFLE_PRE;
    else if (strcmp(loc, "post") == 0)
        cfg->shuffle_loc = MM_SHUFFLE_POST;
    else
        return mm_err_set(err, MM_ERR_FORMAT,
                          "%s: \"pixel_shuffle_loc\" must be \"pre\" or \"post\"", ectx);

    /* llm_config */
    if ((st = parse_stack(llm, lctx, &cfg->llm, err)) ||
        (st = mm_json_get_i64(llm, "vocab_size", true, &cfg->vocab_size, lctx, err)))
        return st;

    /* cross-checks */
    int64_t llm_hidden = cfg->llm.hidden;
    if ((st = mm_json_get_i64(emb, "llm_hidden_size", false, &llm_hidden, ectx, err)))
        return st;
    if (cfg->emb.hidden != cfg->llm.hidden || llm_hidden != cfg->llm.hidden)
        return mm_err_set(err, MM_ERR_UNSUPPORTED,
                          "config.json: embedding hidden_size %lld must equal llm hidden_size %lld",
                          (long long)cfg->emb.hidden, (long long)cfg->llm.hidden);
    if (cfg->vocab_size < 1 || cfg->vocab_size > (1 << 24) || cfg->llm_vocab_size < 1 ||
        cfg->llm_vocab_size > cfg->vocab_size)
        return mm_err_set(err, MM_ERR_FORMAT,
                          "config.json: need 1 <= embedding llm_vocab_size <= llm vocab_size");
    if (cfg->img_context_token_id < 0 || cfg->img_context_token_id >= cfg->vocab_size)
        return mm_err_set(err, MM_ERR_FORMAT, "%s: img_context_token_id outside the vocabulary",
                          ectx);
    if (cfg->num_channels != 3)
        return mm_err_set(err, MM_ERR_UNSUPPORTED, "%s: num_channels must be 3", ectx);
    if (cfg->patch_size < 1 || cfg->image_size < cfg->patch_size ||
        cfg->image_size % cfg->patch_size != 0 || cfg->image_size > 4096 ||
        cfg->force_image_size < cfg->patch_size || cfg->force_image_size % cfg->patch_size != 0 ||
        cfg->force_image_size > 4096)
        return mm_err_set(err, MM_ERR_FORMAT,
                          "config.json: image_size and force_image_size must be multiples of "
                          "patch_size, at most 4096");
    if (cfg->downsample_ratio != 0.5)
        return mm_err_set(
            err, MM_ERR_UNSUPPORTED,
            "config.json: downsample_ratio %g (only 0.5, a 2x2 pixel shuffle, is supported)",
            cfg->downsample_ratio);
    if (!cfg->use_pixel_shuffle_proj)
        return mm_err_set(err, MM_ERR_UNSUPPORTED,
                          "%s: use_pixel_shuffle_proj=false is not supported", ectx);
    cfg->patches_per_side = cfg->force_image_size / cfg->patch_size;
    if (cfg->patches_per_side % 2 != 0)
        return mm_err_set(
            err, MM_ERR_FORMAT,
            "config.json: force_image_size/patch_size must be even for the pixel shuffle");
    cfg->tokens_per_tile = cfg->patches_per_side * cfg->patches_per_side / 4;
    if (cfg->min_dynamic_patch < 1 || cfg->max_dynamic_patch < cfg->min_dynamic_patch ||
        cfg->max_dynamic_patch > 64)
        return mm_err_set(err, MM_ERR_FORMAT,
                          "config.json: need 1 <= min_dynamic_patch <= max_dynamic_patch <= 64");
    return MM_OK;
}

enum mm_status mm_config_load(const char *dir, struct mm_config *cfg, struct mm_err *err)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path)
        return mm_err_set(err, MM_ERR_INVALID, "model path too long");
    cJSON *root;
    enum mm_status st = mm_json_read_file(path, 16u << 20, &root, err);
    if (st != MM_OK)
        return st;
    st = mm_config_from_json(root, cfg, err);
    cJSON_Delete(root);
    return st;
}

static cJSON *stack_to_json(const struct mm_stack_config *s)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "num_hidden_layers", (double)s->num_layers);
    cJSON_AddNumberToObject(o, "hidden_size", (double)s->hidden);
    cJSON_AddNumberToObject(o, "num_attention_heads", (double)s->heads);
    cJSON_AddNumberToObject(o, "num_key_value_heads", (double)s->kv_heads);
    cJSON_AddNumberToObject(o, "intermediate_size", (double)s->intermediate);
    cJSON_AddNumberToObject(o, "rms_norm_eps", s->rms_norm_eps);
    cJSON_AddNumberToObject(o, "rope_theta", s->rope_theta);
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    cJSON *kinds = cJSON_AddArrayToObject(o, "layers_block_type");
    for (int64_t i = 0; kinds && i < s->num_layers; i++)
        cJSON_AddItemToArray(kinds, cJSON_CreateString(mm_layer_kind_name(s->kinds[i])));
    return o;
}

cJSON *mm_config_to_json(const struct mm_config *cfg)
{
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return NULL;
    cJSON *arch = cJSON_AddArrayToObject(root, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("mmMambaChatModel"));
    cJSON_AddStringToObject(root, "model_type", "mmMamba_chat");
    cJSON_AddNumberToObject(root, "force_image_size", (double)cfg->force_image_size);
    cJSON_AddNumberToObject(root, "downsample_ratio", cfg->downsample_ratio);
    cJSON_AddStringToObject(root, "template", cfg->template_name);
    cJSON_AddBoolToObject(root, "normalize_encoder_output", cfg->normalize_encoder_output);
    cJSON_AddBoolToObject(root, "use_thumbnail", cfg->use_thumbnail);
    cJSON_AddNumberToObject(root, "min_dynamic_patch", (double)cfg->min_dynamic_patch);
    cJSON_AddNumberToObject(root, "max_dynamic_patch", (double)cfg->max_dynamic_patch);
    cJSON_AddBoolToObject(root, "dynamic_image_size", cfg->dynamic_image_size);
    cJSON_AddStringToObject(root, "torch_dtype", "bfloat16");

    cJSON *emb = stack_to_json(&cfg->emb);
    if (emb) {
        cJSON_AddNumberToObject(emb, "patch_size", (double)cfg->patch_size);
        cJSON_AddNumberToObject(emb, "image_size", (double)cfg->image_size);
        cJSON_AddNumberToObject(emb, "num_channels", (double)cfg->num_channels);
        cJSON_AddNumberToObject(emb, "llm_vocab_size", (double)cfg->llm_vocab_size);
        cJSON_AddNumberToObject(emb, "llm_hidden_size", (double)cfg->llm.hidden);
        cJSON_AddNumberToObject(emb, "img_context_token_id", (double)cfg->img_context_token_id);
        cJSON_AddStringToObject(emb, "pixel_shuffle_loc",
                                cfg->shuffle_loc == MM_SHUFFLE_POST ? "post" : "pre");
        cJSON_AddBoolToObject(emb, "use_pixel_shuffle_proj", cfg->use_pixel_shuffle_proj);
        cJSON *maps = cJSON_AddObjectToObject(emb, "special_token_maps");
        for (int i = 0; maps && i < cfg->n_special; i++)
            cJSON_AddNumberToObject(maps, cfg->special[i].name, (double)cfg->special[i].id);
        cJSON_AddItemToObject(root, "embedding_config", emb);
    }
    cJSON *llm = stack_to_json(&cfg->llm);
    if (llm) {
        cJSON_AddNumberToObject(llm, "vocab_size", (double)cfg->vocab_size);
        cJSON_AddNullToObject(llm, "rope_scaling");
        cJSON_AddItemToObject(root, "llm_config", llm);
    }
    if (!emb || !llm) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

int64_t mm_config_count_layers(const struct mm_config *cfg, enum mm_layer_kind k)
{
    int64_t n = 0;
    for (int64_t i = 0; i < cfg->emb.num_layers; i++)
        n += cfg->emb.kinds[i] == k;
    for (int64_t i = 0; i < cfg->llm.num_layers; i++)
        n += cfg->llm.kinds[i] == k;
    return n;
}

static int64_t stack_state_elems(const struct mm_stack_config *s)
{
    /* conv state: one column of C = 2*kv*d + heads*d channels (kernel 2);
     * SSM state: heads x d x d. */
    const int64_t conv = 2 * s->kv_heads * s->head_dim + s->heads * s->head_dim;
    const int64_t ssm = s->heads * s->head_dim * s->head_dim;
    int64_t n = 0;
    for (int64_t i = 0; i < s->num_layers; i++)
        if (s->kinds[i] == MM_LAYER_MAMBA2)
            n += conv + ssm;
    return n;
}

static int64_t stack_kv_elems(const struct mm_stack_config *s)
{
    int64_t n = 0;
    for (int64_t i = 0; i < s->num_layers; i++)
        if (s->kinds[i] == MM_LAYER_MHA)
            n += 2 * s->kv_heads * s->head_dim;
    return n;
}

int64_t mm_config_state_elems(const struct mm_config *cfg)
{
    return stack_state_elems(&cfg->emb) + stack_state_elems(&cfg->llm);
}

int64_t mm_config_kv_elems_per_token(const struct mm_config *cfg)
{
    return stack_kv_elems(&cfg->emb) + stack_kv_elems(&cfg->llm);
}
