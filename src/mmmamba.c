/* mmmamba.c: the command-line tool. One function per subcommand, dispatched
 * from a table; each parses its own flags and returns an exit code (only
 * main exits). Subcommands are thin: the work lives in the library. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/status.h"
#include "model/config.h"
#include "model/image_decode.h"
#include "model/image_preprocess.h"
#include "model/image_source.h"
#include "model/safetensors.h"
#include "model/synthetic.h"
#include "model/weights.h"

struct command {
    const char *name;
    const char *usage;
    int (*run)(int argc, char **argv);
};

static int fail(const struct mm_err *err)
{
    fprintf(stderr, "mmmamba: %s\n", err->msg);
    return 1;
}

/* Parses a non-negative integer flag value; returns 0 on error. */
static int parse_u64(const char *s, unsigned long long *out)
{
    char *end;
    errno = 0;
    const unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || s[0] == '-')
        return 0;
    *out = v;
    return 1;
}

/* ---- mkmodel -------------------------------------------------------------------- */

static int cmd_mkmodel(int argc, char **argv)
{
    const char *preset = NULL, *out = NULL;
    struct mm_synthetic_options opt = {.seed = 1, .shards = 1};
    const char *shuffle = NULL, *normalize = NULL, *image_size = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        unsigned long long u;
        if (!v) {
            fprintf(stderr, "mmmamba mkmodel: %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "--preset") == 0)
            preset = v;
        else if (strcmp(a, "--out") == 0)
            out = v;
        else if (strcmp(a, "--seed") == 0 && parse_u64(v, &u))
            opt.seed = u;
        else if (strcmp(a, "--shards") == 0 && parse_u64(v, &u) && u >= 1 && u <= 999)
            opt.shards = (int)u;
        else if (strcmp(a, "--pixel-shuffle-loc") == 0)
            shuffle = v;
        else if (strcmp(a, "--normalize-encoder-output") == 0)
            normalize = v;
        else if (strcmp(a, "--image-size") == 0)
            image_size = v;
        else {
            fprintf(stderr, "mmmamba mkmodel: bad option %s %s\n", a, v);
            return 2;
        }
        i++;
    }
    if (!preset || !out) {
        fprintf(stderr, "mmmamba mkmodel: --preset and --out are required (presets: %s)\n",
                mm_synthetic_preset_names());
        return 2;
    }
    struct mm_err err;
    struct mm_config cfg;
    if (mm_synthetic_preset(preset, &cfg, &err) != MM_OK)
        return fail(&err);
    if (shuffle) {
        if (strcmp(shuffle, "pre") && strcmp(shuffle, "post")) {
            fprintf(stderr, "mmmamba mkmodel: --pixel-shuffle-loc is pre or post\n");
            return 2;
        }
        cfg.shuffle_loc = strcmp(shuffle, "post") == 0 ? MM_SHUFFLE_POST : MM_SHUFFLE_PRE;
    }
    if (normalize) {
        if (strcmp(normalize, "0") && strcmp(normalize, "1")) {
            fprintf(stderr, "mmmamba mkmodel: --normalize-encoder-output is 0 or 1\n");
            return 2;
        }
        cfg.normalize_encoder_output = normalize[0] == '1';
    }
    if (image_size) {
        unsigned long long u;
        if (!parse_u64(image_size, &u) || u < (unsigned long long)cfg.patch_size || u > 4096 ||
            u % (unsigned long long)cfg.patch_size) {
            fprintf(stderr, "mmmamba mkmodel: --image-size must be a multiple of %lld\n",
                    (long long)cfg.patch_size);
            return 2;
        }
        cfg.image_size = (int64_t)u;
    }
    if (mm_synthetic_write(out, &cfg, &opt, &err) != MM_OK)
        return fail(&err);
    printf("wrote %s (preset %s, seed %llu, %d shard%s)\n", out, preset,
           (unsigned long long)opt.seed, opt.shards, opt.shards > 1 ? "s" : "");
    return 0;
}

/* ---- inspect -------------------------------------------------------------------- */

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

static int cmd_inspect(int argc, char **argv)
{
    if (argc != 1) {
        fprintf(stderr, "usage: mmmamba inspect DIR\n");
        return 2;
    }
    const char *dir = argv[0];
    struct mm_err err;
    struct mm_config cfg;
    if (mm_config_load(dir, &cfg, &err) != MM_OK)
        return fail(&err);
    struct mm_safetensors *st;
    if (mm_safetensors_open_dir(dir, &st, &err) != MM_OK)
        return fail(&err);
    struct mm_weights w;
    if (mm_weights_bind(&cfg, st, &w, &err) != MM_OK) {
        mm_safetensors_close(st);
        return fail(&err);
    }
    const int64_t n_mamba = mm_config_count_layers(&cfg, MM_LAYER_MAMBA2);
    const int64_t n_mha = mm_config_count_layers(&cfg, MM_LAYER_MHA);
    printf("model: %s\n", dir);
    printf("layout: %s (%lld mamba2, %lld mha layers)\n",
           n_mha == 0 ? "linear" : n_mamba == 0 ? "all attention (teacher)" : "hybrid",
           (long long)n_mamba, (long long)n_mha);
    printf("vocab: %lld (text embeddings %lld, special %lld), image context id %lld\n",
           (long long)cfg.vocab_size, (long long)cfg.llm_vocab_size,
           (long long)(w.special_emb ? w.special_emb->shape[0] : 0),
           (long long)cfg.img_context_token_id);
    printf("images: tile %lld px, patch %lld, %lld tokens/tile, position grid %lldx%lld, "
           "pixel shuffle %s, tiles %lld..%lld%s, normalize_encoder_output %s\n",
           (long long)cfg.force_image_size, (long long)cfg.patch_size,
           (long long)cfg.tokens_per_tile, (long long)w.pos_grid, (long long)w.pos_grid,
           cfg.shuffle_loc == MM_SHUFFLE_POST ? "post" : "pre", (long long)cfg.min_dynamic_patch,
           (long long)cfg.max_dynamic_patch, cfg.use_thumbnail ? " + thumbnail" : "",
           cfg.normalize_encoder_output ? "true" : "false");
    print_stack("embedding", &cfg.emb);
    print_stack("llm", &cfg.llm);
    printf("tensors: %lld stored, parameters %lld (%.3f B), %zu bytes (%.2f GiB)\n",
           (long long)mm_safetensors_count(st), (long long)w.n_params, (double)w.n_params / 1e9,
           w.n_bytes, (double)w.n_bytes / (1024.0 * 1024.0 * 1024.0));
    const int64_t state = mm_config_state_elems(&cfg);
    const int64_t kv = mm_config_kv_elems_per_token(&cfg);
    printf("per-sequence state: %lld values = %.2f MiB bf16, %.2f MiB fp32\n", (long long)state,
           (double)state * 2 / 1048576.0, (double)state * 4 / 1048576.0);
    printf("per-token KV cache: %lld values = %.2f KiB bf16\n", (long long)kv,
           (double)kv * 2 / 1024.0);
    mm_safetensors_close(st);
    return 0;
}

/* ---- preprocess ----------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Writes the tiles as raw little-endian fp32 (conformance tools read it). */
static enum mm_status write_tiles(const char *path, const struct mm_image_tiles *t,
                                  struct mm_err *err)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return mm_err_set(err, MM_ERR_IO, "%s: %s", path, strerror(errno));
    const size_t n = (size_t)t->count * 3 * (size_t)t->size * (size_t)t->size;
    const unsigned probe = 1;
    size_t done = 0;
    if (*(const unsigned char *)&probe == 1) {
        done = fwrite(t->data, sizeof(float), n, f);
    } else {
        for (; done < n; done++) {
            uint32_t u;
            unsigned char b[4];
            memcpy(&u, &t->data[done], 4);
            for (int i = 0; i < 4; i++)
                b[i] = (unsigned char)(u >> (8 * i));
            if (fwrite(b, 1, 4, f) != 4)
                break;
        }
    }
    if (fclose(f) != 0 || done != n)
        return mm_err_set(err, MM_ERR_IO, "%s: write failed", path);
    return MM_OK;
}

static int cmd_preprocess(int argc, char **argv)
{
    const char *image = NULL, *out = NULL, *model = NULL;
    unsigned long long max_tiles = 0;
    int timing = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--time") == 0) {
            timing = 1;
            continue;
        }
        if (a[0] != '-' || strncmp(a, "data:", 5) == 0) {
            if (image) {
                fprintf(stderr, "mmmamba preprocess: one IMAGE only\n");
                return 2;
            }
            image = a;
            continue;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "mmmamba preprocess: %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "--out") == 0)
            out = v;
        else if (strcmp(a, "--model") == 0)
            model = v;
        else if (strcmp(a, "--max-tiles") == 0 && parse_u64(v, &max_tiles) && max_tiles >= 1 &&
                 max_tiles <= MM_IMAGE_MAX_TILES)
            ;
        else {
            fprintf(stderr, "mmmamba preprocess: bad option %s %s\n", a, v);
            return 2;
        }
        i++;
    }
    if (!image || !out) {
        fprintf(stderr, "usage: mmmamba preprocess IMAGE [--max-tiles N] [--model DIR] "
                        "--out FILE\n");
        return 2;
    }
    struct mm_err err;
    /* The reference defaults (448-pixel tiles, 1..12, thumbnail) unless a
     * model's config.json says otherwise. */
    struct mm_config cfg = {.force_image_size = 448, .min_dynamic_patch = 1,
                            .max_dynamic_patch = 12, .use_thumbnail = true};
    if (model && mm_config_load(model, &cfg, &err) != MM_OK)
        return fail(&err);
    struct mm_image_limits lim = {.max_tiles_per_image = (int64_t)max_tiles};
    if (max_tiles > (unsigned long long)cfg.max_dynamic_patch)
        cfg.max_dynamic_patch = (int64_t)max_tiles; /* the flag sets the max outright */
    struct mm_image_params params;
    if (mm_image_params_from_config(&cfg, &lim, &params, &err) != MM_OK)
        return fail(&err);

    const double t0 = now_ms();
    struct mm_image_bytes bytes;
    enum mm_status st = strncmp(image, "data:", 5) == 0
                            ? mm_image_source_load(image, NULL, &bytes, &err)
                            : mm_image_source_read_file(image, 0, &bytes, &err);
    if (st != MM_OK)
        return fail(&err);
    struct mm_image img;
    st = mm_image_decode(bytes.data, bytes.len, &lim.decode, &img, &err);
    mm_image_bytes_free(&bytes);
    if (st != MM_OK)
        return fail(&err);
    const double t1 = now_ms();
    struct mm_image_tiles tiles;
    st = mm_image_preprocess(&img, &params, &tiles, &err);
    const double t2 = now_ms();
    if (st == MM_OK) {
        st = write_tiles(out, &tiles, &err);
        if (st == MM_OK)
            printf("%lld %lld %lld\n", (long long)tiles.grid.cols, (long long)tiles.grid.rows,
                   (long long)tiles.count);
        if (timing)
            fprintf(stderr, "image %lldx%lld: read+decode %.1f ms, tiles %.1f ms\n",
                    (long long)img.width, (long long)img.height, t1 - t0, t2 - t1);
    }
    mm_image_tiles_free(&tiles);
    mm_image_free(&img);
    return st == MM_OK ? 0 : fail(&err);
}

static const struct command commands[] = {
    {"mkmodel", "--preset P --out DIR [--seed S] [--shards N] [--pixel-shuffle-loc pre|post] "
                "[--normalize-encoder-output 0|1] [--image-size N]",
     cmd_mkmodel},
    {"inspect", "DIR", cmd_inspect},
    {"preprocess", "IMAGE [--max-tiles N] [--model DIR] [--time] --out FILE", cmd_preprocess},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: mmmamba COMMAND [ARGS]\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  mmmamba %s %s\n", commands[i].name, commands[i].usage);
}

int main(int argc, char **argv)
{
    const char *lvl = getenv("MMMAMBA_LOG");
    if (lvl && mm_log_parse_level(lvl) >= 0)
        mm_log_set_level((enum mm_log_level)mm_log_parse_level(lvl));
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "mmmamba: unknown command \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
