/* check_synthetic.c: synthetic checkpoints (src/model/synthetic.c):
 * deterministic from the seed, identical single-file and sharded, finite
 * and sensibly scaled, with the tokenizer files in place. */
#include "model/synthetic.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "model/safetensors.h"
#include "testutil.h"

static void make(const char *dir, const char *preset, uint64_t seed, int shards)
{
    struct mm_config cfg;
    struct mm_err err;
    const struct mm_synthetic_options opt = {.seed = seed, .shards = shards};
    ck_assert_int_eq(mm_synthetic_preset(preset, &cfg, &err), MM_OK);
    ck_assert_msg(mm_synthetic_write(dir, &cfg, &opt, &err) == MM_OK, "%s", err.msg);
}

static int same_tensors(const struct mm_safetensors *a, const struct mm_safetensors *b)
{
    if (mm_safetensors_count(a) != mm_safetensors_count(b))
        return 0;
    for (int64_t i = 0; i < mm_safetensors_count(a); i++) {
        const struct mm_tensor *x = mm_safetensors_at(a, i), *y = mm_safetensors_at(b, i);
        if (strcmp(x->name, y->name) || x->nbytes != y->nbytes ||
            memcmp(x->data, y->data, x->nbytes))
            return 0;
    }
    return 1;
}

START_TEST(test_deterministic_and_sharding)
{
    char d1[256], d2[256], d3[256];
    mm_test_tmpdir(d1, sizeof d1);
    mm_test_tmpdir(d2, sizeof d2);
    mm_test_tmpdir(d3, sizeof d3);
    make(d1, "tiny-linear", 7, 1);
    make(d2, "tiny-linear", 7, 3);
    make(d3, "tiny-linear", 8, 1);
    struct mm_safetensors *a, *b, *c;
    struct mm_err err;
    ck_assert_int_eq(mm_safetensors_open_dir(d1, &a, &err), MM_OK);
    ck_assert_msg(mm_safetensors_open_dir(d2, &b, &err) == MM_OK, "%s", err.msg);
    ck_assert_int_eq(mm_safetensors_open_dir(d3, &c, &err), MM_OK);
    ck_assert(same_tensors(a, b));  /* sharding does not change values */
    ck_assert(!same_tensors(a, c)); /* the seed does */
    char p[512];
    snprintf(p, sizeof p, "%s/model-00003-of-00003.safetensors", d2);
    FILE *f = fopen(p, "rb");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    mm_safetensors_close(a);
    mm_safetensors_close(b);
    mm_safetensors_close(c);
    mm_test_rmdir(d1);
    mm_test_rmdir(d2);
    mm_test_rmdir(d3);
}
END_TEST

/* A second checkpoint never lands on top of a first (a stale index would
 * win over the new weights), and every shard written holds tensors. */
START_TEST(test_fresh_directory_and_no_empty_shards)
{
    char d[256], d2[256], p[512];
    mm_test_tmpdir(d, sizeof d);
    mm_test_tmpdir(d2, sizeof d2);
    make(d, "tiny-linear", 1, 2);
    struct mm_config cfg;
    struct mm_err err;
    ck_assert_int_eq(mm_synthetic_preset("tiny-linear", &cfg, &err), MM_OK);
    const struct mm_synthetic_options one = {.seed = 2, .shards = 1};
    ck_assert_int_eq(mm_synthetic_write(d, &cfg, &one, &err), MM_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "is not empty"));
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    FILE *f = fopen(p, "rb");
    ck_assert_ptr_null(f); /* nothing was written */

    /* as many shards as tensors: each holds exactly one */
    struct mm_safetensors *st;
    ck_assert_int_eq(mm_safetensors_open_dir(d, &st, &err), MM_OK);
    const int64_t n = mm_safetensors_count(st);
    mm_safetensors_close(st);
    ck_assert_int_le(n, 999);
    make(d2, "tiny-linear", 1, (int)n);
    for (int64_t k = 1; k <= n; k++) {
        snprintf(p, sizeof p, "%s/model-%05lld-of-%05lld.safetensors", d2, (long long)k,
                 (long long)n);
        ck_assert_msg(mm_safetensors_open_file(p, &st, &err) == MM_OK, "%s", err.msg);
        ck_assert_int_eq(mm_safetensors_count(st), 1);
        mm_safetensors_close(st);
    }
    mm_test_rmdir(d);
    mm_test_rmdir(d2);
}
END_TEST

START_TEST(test_values_finite_and_scaled)
{
    char dir[256];
    mm_test_tmpdir(dir, sizeof dir);
    make(dir, "tiny-teacher", 1, 1);
    struct mm_safetensors *st;
    struct mm_err err;
    ck_assert_int_eq(mm_safetensors_open_dir(dir, &st, &err), MM_OK);
    for (int64_t i = 0; i < mm_safetensors_count(st); i++) {
        const struct mm_tensor *t = mm_safetensors_at(st, i);
        ck_assert_int_eq(t->dtype, MM_DTYPE_BF16);
        float *v = malloc((size_t)t->numel * sizeof *v);
        mm_dtype_to_f32(t->dtype, t->data, v, t->numel);
        double sum = 0, sq = 0;
        for (int64_t k = 0; k < t->numel; k++) {
            ck_assert(isfinite(v[k]));
            sum += v[k];
            sq += (double)v[k] * v[k];
        }
        const double mean = sum / (double)t->numel;
        const double sd = sqrt(sq / (double)t->numel - mean * mean);
        if (strstr(t->name, "norm.weight")) /* norms around 1 */
            ck_assert_msg(fabs(mean - 1.0) < 0.05 && sd < 0.2, "%s", t->name);
        if (strstr(t->name, "wqkv.weight")) /* std 1/sqrt(H) = 0.125 */
            ck_assert_msg(fabs(sd - 0.125) < 0.01, "%s sd %g", t->name, sd);
        free(v);
    }
    mm_safetensors_close(st);
    mm_test_rmdir(dir);
}
END_TEST

START_TEST(test_tokenizer_files)
{
    char dir[256], p[512];
    mm_test_tmpdir(dir, sizeof dir);
    make(dir, "tiny-hybrid", 1, 1);
    size_t len, emb_len;
    const uint8_t *emb = mm_synthetic_tokenizer(&emb_len);
    ck_assert_uint_gt(emb_len, 1000);
    snprintf(p, sizeof p, "%s/tokenizer.model", dir);
    char *tok = mm_test_read_file(p, &len);
    ck_assert_ptr_nonnull(tok);
    ck_assert_uint_eq(len, emb_len);
    ck_assert_mem_eq(tok, emb, len);
    free(tok);
    /* the added tokens sit where the config says */
    struct mm_config cfg;
    struct mm_err err;
    ck_assert_int_eq(mm_config_load(dir, &cfg, &err), MM_OK);
    cJSON *added;
    snprintf(p, sizeof p, "%s/added_tokens.json", dir);
    ck_assert_int_eq(mm_json_read_file(p, 1 << 20, &added, &err), MM_OK);
    ck_assert_int_eq(cJSON_GetObjectItem(added, "<IMG_CONTEXT>")->valueint,
                     cfg.img_context_token_id);
    ck_assert_int_eq(cJSON_GetObjectItem(added, "<img>")->valueint, cfg.llm_vocab_size);
    ck_assert_int_eq(cJSON_GetObjectItem(added, "<|im_end|>")->valueint, cfg.llm_vocab_size - 2);
    ck_assert_int_eq(cJSON_GetObjectItem(added, "<|im_start|>")->valueint, cfg.llm_vocab_size - 1);
    ck_assert_int_ge(cfg.llm_vocab_size - 6, MM_SYNTHETIC_SPM_PIECES);
    cJSON_Delete(added);
    cJSON *tcfg;
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    ck_assert_int_eq(mm_json_read_file(p, 1 << 20, &tcfg, &err), MM_OK);
    const cJSON *dec = cJSON_GetObjectItem(tcfg, "added_tokens_decoder");
    ck_assert_int_eq(cJSON_GetArraySize(dec), 18);
    cJSON_Delete(tcfg);
    mm_test_rmdir(dir);
}
END_TEST

START_TEST(test_presets_shapes)
{
    struct mm_config cfg;
    struct mm_err err;
    ck_assert_int_eq(mm_synthetic_preset("hybrid", &cfg, &err), MM_OK);
    ck_assert_int_eq(cfg.llm.hidden, 2048);
    ck_assert_int_eq(cfg.llm.num_layers, 24);
    ck_assert_int_eq(cfg.emb.num_layers, 8);
    ck_assert_int_eq(cfg.vocab_size, 92553);
    ck_assert_int_eq(cfg.img_context_token_id, 92546);
    /* docs/model.md: embedding layers 0 and 4, LLM layers 0,4,...,20 keep attention */
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(cfg.emb.kinds[i], i % 4 == 0 ? MM_LAYER_MHA : MM_LAYER_MAMBA2);
    for (int i = 0; i < 24; i++)
        ck_assert_int_eq(cfg.llm.kinds[i], i % 4 == 0 ? MM_LAYER_MHA : MM_LAYER_MAMBA2);
    ck_assert_int_eq(mm_synthetic_preset("tiny-linear", &cfg, &err), MM_OK);
    ck_assert_int_ne(cfg.llm.heads, cfg.llm.kv_heads); /* GQA */
    ck_assert_int_eq(cfg.shuffle_loc, MM_SHUFFLE_PRE);
    ck_assert_int_eq(mm_synthetic_preset("tiny-hybrid", &cfg, &err), MM_OK);
    ck_assert_int_eq(cfg.shuffle_loc, MM_SHUFFLE_POST);
    ck_assert_int_gt(cfg.img_context_token_id, cfg.llm_vocab_size - 1); /* special id >= V_e */
    ck_assert_int_eq(mm_synthetic_preset("tiny-teacher", &cfg, &err), MM_OK);
    ck_assert_int_ne(cfg.image_size, cfg.force_image_size); /* position grid resize */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model/synthetic");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_deterministic_and_sharding);
    tcase_add_test(tc, test_values_finite_and_scaled);
    tcase_add_test(tc, test_fresh_directory_and_no_empty_shards);
    tcase_add_test(tc, test_tokenizer_files);
    tcase_add_test(tc, test_presets_shapes);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
