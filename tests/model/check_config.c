/* check_config.c: config.json parsing and validation (src/model/config.c). */
#include "model/config.h"

#include <stdio.h>
#include <string.h>

#include "model/synthetic.h"
#include "testutil.h"

static const char *const valid_json =
    "{\"force_image_size\": 448, \"downsample_ratio\": 0.5, \"template\": \"internlm2-chat\","
    " \"normalize_encoder_output\": true,"
    " \"embedding_config\": {\"num_hidden_layers\": 2, \"hidden_size\": 64,"
    "   \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"intermediate_size\": 128,"
    "   \"rms_norm_eps\": 1e-6, \"rope_theta\": 10000, \"patch_size\": 14, \"image_size\": 224,"
    "   \"llm_vocab_size\": 100, \"llm_hidden_size\": 64, \"img_context_token_id\": 102,"
    "   \"pixel_shuffle_loc\": \"post\", \"special_token_maps\": {\"<img>\": 100},"
    "   \"layers_block_type\": [\"mha\", \"mamba2\"]},"
    " \"llm_config\": {\"num_hidden_layers\": 3, \"hidden_size\": 64, \"num_attention_heads\": 4,"
    "   \"num_key_value_heads\": 2, \"intermediate_size\": 96, \"rms_norm_eps\": 1e-5,"
    "   \"rope_theta\": 1000000, \"vocab_size\": 110, \"rope_scaling\": {\"type\": \"dynamic\"},"
    "   \"layers_block_type\": [\"mamba2\", \"mha\", \"mamba2\"]}}";

static enum mm_status parse(const char *text, struct mm_config *cfg, struct mm_err *err)
{
    cJSON *root = cJSON_Parse(text);
    ck_assert_ptr_nonnull(root);
    enum mm_status st = mm_config_from_json(root, cfg, err);
    cJSON_Delete(root);
    return st;
}

/* Parses valid_json with one substring replaced; returns the status. */
static enum mm_status parse_edited(const char *from, const char *to, struct mm_err *err)
{
    char buf[4096];
    const char *at = strstr(valid_json, from);
    ck_assert_msg(at != NULL, "pattern %s not in the test config", from);
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - valid_json), valid_json, to,
             at + strlen(from));
    struct mm_config cfg;
    return parse(buf, &cfg, err);
}

START_TEST(test_valid)
{
    struct mm_config cfg;
    struct mm_err err;
    ck_assert_int_eq(parse(valid_json, &cfg, &err), MM_OK);
    ck_assert_int_eq(cfg.emb.num_layers, 2);
    ck_assert_int_eq(cfg.emb.head_dim, 16);
    ck_assert_int_eq(cfg.emb.kinds[0], MM_LAYER_MHA);
    ck_assert_int_eq(cfg.emb.kinds[1], MM_LAYER_MAMBA2);
    ck_assert_int_eq(cfg.llm.kinds[1], MM_LAYER_MHA);
    ck_assert(cfg.llm.rms_norm_eps == 1e-5 && cfg.emb.rms_norm_eps == 1e-6);
    ck_assert(cfg.llm.rope_theta == 1e6);
    ck_assert(cfg.normalize_encoder_output);
    ck_assert_int_eq(cfg.shuffle_loc, MM_SHUFFLE_POST);
    ck_assert_int_eq(cfg.vocab_size, 110);
    ck_assert_int_eq(cfg.llm_vocab_size, 100);
    ck_assert_int_eq(cfg.image_size, 224);
    ck_assert_int_eq(cfg.patches_per_side, 32);
    ck_assert_int_eq(cfg.tokens_per_tile, 256);
    ck_assert_int_eq(cfg.n_special, 1);
    ck_assert_str_eq(cfg.special[0].name, "<img>");
    /* defaults of keys the file leaves out */
    ck_assert(cfg.use_thumbnail);
    ck_assert_int_eq(cfg.max_dynamic_patch, 12);
    ck_assert_int_eq(cfg.min_dynamic_patch, 1);
    /* state: 2 mamba2 layers (llm 0, 2) + 1 (emb 1): conv C = 2*2*16 + 4*16 = 128, ssm 4*16*16 */
    ck_assert_int_eq(mm_config_state_elems(&cfg), 3 * (128 + 1024));
    ck_assert_int_eq(mm_config_kv_elems_per_token(&cfg), 2 * (2 * 2 * 16));
    ck_assert_int_eq(mm_config_count_layers(&cfg, MM_LAYER_MHA), 2);
}
END_TEST

START_TEST(test_errors_name_the_key)
{
    struct mm_err err;
    ck_assert_int_eq(parse_edited("\"num_hidden_layers\": 3, \"hidden_size\": 64",
                                  "\"num_hidden_layers\": 3, \"hidden_size\": \"64\"", &err),
                     MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "llm_config: key \"hidden_size\" must be an integer"));
    ck_assert_int_eq(parse_edited("\"vocab_size\": 110,", "", &err), MM_ERR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(err.msg, "\"vocab_size\""));
    ck_assert_int_eq(parse_edited("\"llm_vocab_size\": 100,", "\"llm_vocab_size\": 1.5,", &err),
                     MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "embedding_config: key \"llm_vocab_size\""));
    ck_assert_int_eq(
        parse_edited("\"normalize_encoder_output\": true", "\"normalize_encoder_output\": 1", &err),
        MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "normalize_encoder_output"));
    ck_assert_int_eq(
        parse_edited("\"pixel_shuffle_loc\": \"post\"", "\"pixel_shuffle_loc\": \"mid\"", &err),
        MM_ERR_FORMAT);
    /* ids past int32 are refused before any conversion (1e300 to int64 is undefined) */
    ck_assert_int_eq(parse_edited("{\"<img>\": 100}", "{\"<img>\": 1e300}", &err), MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "special_token_maps[\"<img>\"] must be a token id"));
    ck_assert_int_eq(parse_edited("{\"<img>\": 100}", "{\"<img>\": 2147483648}", &err),
                     MM_ERR_FORMAT);
    ck_assert_int_eq(parse_edited("{\"<img>\": 100}", "{\"<img>\": 2147483647}", &err), MM_OK);
    ck_assert_int_eq(parse_edited("[\"mha\", \"mamba2\"]", "[\"mha\"]", &err), MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "layers_block_type"));
    ck_assert_int_eq(parse_edited("[\"mha\", \"mamba2\"]", "[\"mha\", \"rwkv\"]", &err),
                     MM_ERR_FORMAT);
    ck_assert_int_eq(parse_edited("[\"mha\", \"mamba2\"]", "\"mha\"", &err), MM_ERR_FORMAT);
    ck_assert_int_eq(
        parse_edited("\"embedding_config\": {", "\"embedding_config\": [], \"x\": {", &err),
        MM_ERR_FORMAT);
}
END_TEST

START_TEST(test_inconsistent_sizes)
{
    struct mm_err err;
    /* heads not a multiple of kv heads */
    ck_assert_int_eq(parse_edited("\"num_key_value_heads\": 2, \"intermediate_size\": 96",
                                  "\"num_key_value_heads\": 3, \"intermediate_size\": 96", &err),
                     MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "num_key_value_heads"));
    /* hidden not a multiple of heads */
    ck_assert_int_eq(
        parse_edited(
            "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"intermediate_size\": 128",
            "\"num_attention_heads\": 5, \"num_key_value_heads\": 1, \"intermediate_size\": 128",
            &err),
        MM_ERR_FORMAT);
    /* stacks of different widths */
    ck_assert_int_eq(parse_edited("\"llm_hidden_size\": 64", "\"llm_hidden_size\": 32", &err),
                     MM_ERR_UNSUPPORTED);
    /* vocab: text embeddings larger than the LM head */
    ck_assert_int_eq(parse_edited("\"vocab_size\": 110", "\"vocab_size\": 90", &err),
                     MM_ERR_FORMAT);
    ck_assert_int_eq(
        parse_edited("\"img_context_token_id\": 102", "\"img_context_token_id\": 500", &err),
        MM_ERR_FORMAT);
    ck_assert_int_eq(parse_edited("\"downsample_ratio\": 0.5", "\"downsample_ratio\": 0.25", &err),
                     MM_ERR_UNSUPPORTED);
    ck_assert_int_eq(parse_edited("\"image_size\": 224", "\"image_size\": 225", &err),
                     MM_ERR_FORMAT);
    ck_assert_int_eq(parse_edited("\"num_hidden_layers\": 3", "\"num_hidden_layers\": 0", &err),
                     MM_ERR_UNSUPPORTED);
    ck_assert_int_eq(parse_edited("\"num_hidden_layers\": 3", "\"num_hidden_layers\": -3", &err),
                     MM_ERR_UNSUPPORTED);
    ck_assert_int_eq(parse_edited("\"num_hidden_layers\": 3, \"hidden_size\": 64",
                                  "\"num_hidden_layers\": 3, \"hidden_size\": 1e300", &err),
                     MM_ERR_FORMAT);
}
END_TEST

START_TEST(test_presets_round_trip)
{
    const char *presets[] = {"tiny-linear", "tiny-hybrid", "tiny-teacher",
                             "linear",      "hybrid",      "teacher"};
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        struct mm_config a, b;
        struct mm_err err;
        ck_assert_int_eq(mm_synthetic_preset(presets[i], &a, &err), MM_OK);
        cJSON *j = mm_config_to_json(&a);
        ck_assert_ptr_nonnull(j);
        ck_assert_int_eq(mm_config_from_json(j, &b, &err), MM_OK);
        cJSON_Delete(j);
        ck_assert_mem_eq(&a, &b, sizeof a);
    }
    struct mm_config c;
    struct mm_err err;
    ck_assert_int_eq(mm_synthetic_preset("tiny-nope", &c, &err), MM_ERR_INVALID);
}
END_TEST

START_TEST(test_load_missing_file)
{
    struct mm_config cfg;
    struct mm_err err;
    ck_assert_int_eq(mm_config_load("/nonexistent-dir", &cfg, &err), MM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent-dir/config.json"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model/config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_valid);
    tcase_add_test(tc, test_errors_name_the_key);
    tcase_add_test(tc, test_inconsistent_sizes);
    tcase_add_test(tc, test_presets_round_trip);
    tcase_add_test(tc, test_load_missing_file);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
