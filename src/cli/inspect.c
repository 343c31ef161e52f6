/* inspect.c: `mmmamba inspect`, loads a checkpoint the way the server does
 * (config, every tensor bound and shape-checked) and reports what it is. */
#include <stdio.h>

#include "cli/cli.h"
#include "model/config.h"
#include "model/chat_template.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"
#include "model/weights.h"

static void print_stack(const char *name, const struct mm_stack_config *s)
{
    printf("%s: %lld layers, hidden %lld, heads %lld, kv heads %lld, head dim %lld, mlp %lld, "
           "eps %g, rope theta %g\n  kinds:",
           name, (long long)s->num_layers, (long long)s->hidden, (long long)s->heads,
           (long long)s->kv_heads, (long long)s->head_dim, (long long)s->intermediate,
           s->rms_norm_eps, s->rope_theta);
    for (int64_t i = 0; i < s->num_layers; i++)
        printf(" %s", mm_layer_kind_name(s->kinds[i]));
    printf("\n");
}

static void report(const char *dir, const struct mm_config *cfg, const struct mm_safetensors *st,
                   const struct mm_weights *w)
{
    const int64_t n_mamba = mm_config_count_layers(cfg, MM_LAYER_MAMBA2);
    const int64_t n_mha = mm_config_count_layers(cfg, MM_LAYER_MHA);
    printf("model: %s\n", dir);
    printf("layout: %s (%lld mamba2, %lld mha layers)\n",
           n_mha == 0     ? "linear"
           : n_mamba == 0 ? "all attention (teacher)"
                          : "hybrid",
           (long long)n_mamba, (long long)n_mha);
    printf("vocab: %lld (text embeddings %lld, special %lld), image context id %lld\n",
           (long long)cfg->vocab_size, (long long)cfg->llm_vocab_size,
           (long long)(w->special_emb ? w->special_emb->shape[0] : 0),
           (long long)cfg->img_context_token_id);
    printf("images: tile %lld px, patch %lld, %lld tokens/tile, position grid %lldx%lld, "
           "pixel shuffle %s, tiles %lld..%lld%s, normalize_encoder_output %s\n",
           (long long)cfg->force_image_size, (long long)cfg->patch_size,
           (long long)cfg->tokens_per_tile, (long long)w->pos_grid, (long long)w->pos_grid,
           cfg->shuffle_loc == MM_SHUFFLE_POST ? "post" : "pre", (long long)cfg->min_dynamic_patch,
           (long long)cfg->max_dynamic_patch, cfg->use_thumbnail ? " + thumbnail" : "",
           cfg->normalize_encoder_output ? "true" : "false");
    print_stack("embedding", &cfg->emb);
    print_stack("llm", &cfg->llm);
    printf("tensors: %lld stored, parameters %lld (%.3f B), %zu bytes (%.2f GiB)\n",
           (long long)mm_safetensors_count(st), (long long)w->n_params, (double)w->n_params / 1e9,
           w->n_bytes, (double)w->n_bytes / (1024.0 * 1024.0 * 1024.0));
    const int64_t state = mm_config_state_elems(cfg);
    const int64_t kv = mm_config_kv_elems_per_token(cfg);
    printf("per-sequence state: %lld values = %.2f MiB bf16, %.2f MiB fp32\n", (long long)state,
           (double)state * 2 / 1048576.0, (double)state * 4 / 1048576.0);
    printf("per-token KV cache: %lld values = %.2f KiB bf16\n", (long long)kv,
           (double)kv * 2 / 1024.0);
}

int mm_cli_inspect(const struct mm_cli_cmd *cmd, int argc, char **argv)
{
    const char *pos[1];
    int n_pos;
    const int rc = mm_cli_parse(cmd, NULL, 0, argc, argv, pos, 1, 1, &n_pos);
    if (rc >= 0)
        return rc;
    const char *dir = pos[0];
    struct mm_err err;
    struct mm_config cfg;
    if (mm_config_load(dir, &cfg, &err) != MM_OK)
        return mm_cli_fail(&err);
    struct mm_safetensors *st;
    if (mm_safetensors_open_dir(dir, &st, &err) != MM_OK)
        return mm_cli_fail(&err);
    struct mm_weights w;
    if (mm_weights_bind(&cfg, st, &w, &err) != MM_OK) {
        mm_safetensors_close(st);
        return mm_cli_fail(&err);
    }
    /* the tokenizer as generate and the server load it: checked before
     * anything is reported */
    struct mm_tokenizer *tok = NULL;
    struct mm_chat_template *tpl = NULL;
    if (mm_tokenizer_load_checkpoint(dir, &cfg, &tok, &err) != MM_OK ||
        mm_chat_template_create(tok, cfg.template_name, cfg.tokens_per_tile, &tpl, &err) != MM_OK) {
        mm_tokenizer_free(tok);
        mm_safetensors_close(st);
        return mm_cli_fail(&err);
    }
    report(dir, &cfg, st, &w);
    printf("tokenizer: %d ids (bos %d, eos %d, <|im_end|> %d), template %s\n",
           (int)mm_tokenizer_vocab_size(tok), (int)mm_tokenizer_bos_id(tok),
           (int)mm_tokenizer_eos_id(tok), (int)mm_tokenizer_find(tok, "<|im_end|>"),
           cfg.template_name);
    mm_chat_template_free(tpl);
    mm_tokenizer_free(tok);
    mm_safetensors_close(st);
    return 0;
}
