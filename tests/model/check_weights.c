/* check_weights.c: binding tensors by name with shape checks
 * (src/model/weights.c): every preset binds; a missing, misshaped or
 * wrongly typed tensor is reported by name. */
#include "model/weights.h"

#include <stdio.h>
#include <string.h>

#include "model/synthetic.h"
#include "testutil.h"

/* Rewrites dir/model.safetensors from `src` with one tensor changed:
 * mode 0 drops it, 1 adds a row to its first dim, 2 stores it as I32. */
static void rewrite_with(const char *dir, const struct mm_safetensors *src, const char *victim,
                         int mode)
{
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct mm_st_writer *w;
    struct mm_err err;
    ck_assert_int_eq(mm_st_writer_create(path, &w, &err), MM_OK);
    for (int64_t i = 0; i < mm_safetensors_count(src); i++) {
        const struct mm_tensor *t = mm_safetensors_at(src, i);
        int64_t shape[MM_TENSOR_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        enum mm_dtype dt = t->dtype;
        if (strcmp(t->name, victim) == 0) {
            if (mode == 0)
                continue;
            if (mode == 1)
                shape[0] += 1;
            if (mode == 2) {
                dt = MM_DTYPE_I32;
                shape[0] = (shape[0] + 1) / 2; /* keep byte counts simple: any size works */
            }
        }
        ck_assert_int_eq(mm_st_writer_declare(w, t->name, dt, t->ndim, shape, &err), MM_OK);
    }
    ck_assert_int_eq(mm_st_writer_begin_data(w, &err), MM_OK);
    static const uint8_t zeros[1 << 16];
    for (int64_t i = 0; i < mm_safetensors_count(src); i++) {
        const struct mm_tensor *t = mm_safetensors_at(src, i);
        size_t n = t->nbytes;
        if (strcmp(t->name, victim) == 0) {
            if (mode == 0)
                continue;
            const size_t row = t->nbytes / (size_t)t->shape[0];
            n = mode == 1 ? t->nbytes + row : (size_t)((t->shape[0] + 1) / 2) * row * 2;
        }
        while (n > 0) {
            const size_t k = n < sizeof zeros ? n : sizeof zeros;
            ck_assert_int_eq(mm_st_writer_write(w, zeros, k, &err), MM_OK);
            n -= k;
        }
    }
    ck_assert_int_eq(mm_st_writer_finish(w, &err), MM_OK);
}

static enum mm_status bind_dir(const char *dir, struct mm_err *err)
{
    struct mm_config cfg;
    struct mm_safetensors *st;
    enum mm_status s = mm_config_load(dir, &cfg, err);
    if (s != MM_OK)
        return s;
    if ((s = mm_safetensors_open_dir(dir, &st, err)) != MM_OK)
        return s;
    struct mm_weights w;
    s = mm_weights_bind(&cfg, st, &w, err);
    mm_safetensors_close(st);
    return s;
}

START_TEST(test_presets_bind)
{
    const char *presets[] = {"tiny-linear", "tiny-hybrid", "tiny-teacher"};
    for (size_t p = 0; p < 3; p++) {
        char dir[256];
        mm_test_tmpdir(dir, sizeof dir);
        struct mm_config cfg;
        struct mm_err err;
        const struct mm_synthetic_options opt = {.seed = 3, .shards = 1};
        ck_assert_int_eq(mm_synthetic_preset(presets[p], &cfg, &err), MM_OK);
        ck_assert_int_eq(mm_synthetic_write(dir, &cfg, &opt, &err), MM_OK);
        struct mm_safetensors *st;
        ck_assert_int_eq(mm_safetensors_open_dir(dir, &st, &err), MM_OK);
        struct mm_weights w;
        ck_assert_msg(mm_weights_bind(&cfg, st, &w, &err) == MM_OK, "%s", err.msg);
        ck_assert_ptr_nonnull(w.special_emb);
        ck_assert_int_eq(w.pos_grid, cfg.image_size / cfg.patch_size);
        for (int64_t i = 0; i < cfg.llm.num_layers; i++) {
            const struct mm_layer_weights *l = &w.llm_layers[i];
            ck_assert_int_eq(l->kind, cfg.llm.kinds[i]);
            ck_assert(l->kind == MM_LAYER_MAMBA2 ? l->wvkqgdt && !l->wqkv : l->wqkv && !l->wvkqgdt);
        }
        /* every stored tensor is bound or one of the two known-unused ones */
        int64_t stored = 0;
        for (int64_t i = 0; i < mm_safetensors_count(st); i++)
            stored += mm_safetensors_at(st, i)->numel;
        ck_assert_int_eq(w.n_params, stored);
        mm_safetensors_close(st);
        mm_test_rmdir(dir);
    }
}
END_TEST

START_TEST(test_missing_misshaped_mistyped)
{
    char dir[256];
    mm_test_tmpdir(dir, sizeof dir);
    struct mm_config cfg;
    struct mm_err err;
    const struct mm_synthetic_options opt = {.seed = 1, .shards = 1};
    ck_assert_int_eq(mm_synthetic_preset("tiny-hybrid", &cfg, &err), MM_OK);
    ck_assert_int_eq(mm_synthetic_write(dir, &cfg, &opt, &err), MM_OK);
    char orig_path[512], path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(orig_path, sizeof orig_path, "%s/orig.safetensors", dir);
    ck_assert_int_eq(rename(path, orig_path), 0);
    struct mm_safetensors *orig;
    ck_assert_int_eq(mm_safetensors_open_file(orig_path, &orig, &err), MM_OK);

    static const char *const victims[] = {
        "language_model.model.layers.1.attention.wvkqgdt.weight",
        "language_model.model.layers.0.attention.wqkv.weight",
        "embedding_model.encoder.1.attention.conv1d.weight",
        "embedding_model.vision_embeddings.position_embedding",
        "language_model.output.weight",
        "language_model.model.layers.3.feed_forward.w2.weight",
    };
    for (size_t i = 0; i < sizeof victims / sizeof victims[0]; i++) {
        rewrite_with(dir, orig, victims[i], 0);
        ck_assert_int_eq(bind_dir(dir, &err), MM_ERR_NOT_FOUND);
        ck_assert_msg(strstr(err.msg, victims[i]) && strstr(err.msg, "missing"), "%s", err.msg);
        rewrite_with(dir, orig, victims[i], 1);
        ck_assert_int_eq(bind_dir(dir, &err), MM_ERR_FORMAT);
        ck_assert_msg(strstr(err.msg, victims[i]) && strstr(err.msg, "expected"), "%s", err.msg);
        rewrite_with(dir, orig, victims[i], 2);
        ck_assert_int_eq(bind_dir(dir, &err), MM_ERR_FORMAT);
        ck_assert_msg(strstr(err.msg, victims[i]) != NULL, "%s", err.msg);
    }
    /* the special embeddings are optional, but must then not be needed */
    rewrite_with(dir, orig, "embedding_model.special_text_embeddings.weight", 0);
    ck_assert_int_eq(bind_dir(dir, &err), MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "vocab_size"));
    mm_safetensors_close(orig);
    mm_test_rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model/weights");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_presets_bind);
    tcase_add_test(tc, test_missing_misshaped_mistyped);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
