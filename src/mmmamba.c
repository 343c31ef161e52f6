/* mmmamba.c: the command-line tool. One function per subcommand, dispatched
 * from a table; each parses its own flags and returns an exit code (only
 * main exits). Subcommands are thin: the work lives in the library. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/json.h"
#include "base/log.h"
#include "base/status.h"
#include "engine/engine.h"
#include "model/chat_template.h"
#include "model/config.h"
#include "model/image_decode.h"
#include "model/image_preprocess.h"
#include "model/image_source.h"
#include "model/safetensors.h"
#include "model/synthetic.h"
#include "model/tokenizer.h"
#include "model/weights.h"
#include "serve/detokenizer.h"

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

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
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
           n_mha == 0     ? "linear"
           : n_mamba == 0 ? "all attention (teacher)"
                          : "hybrid",
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

struct image_timing {
    int64_t width, height;
    double decode_ms, tiles_ms;
};

/* Reads (a path or a data: URL), decodes and tiles one image, charging its
 * tiles to *used; *tiles is the caller's (mm_image_tiles_free), also on
 * failure. */
static enum mm_status load_image_tiles(const char *image, const struct mm_image_params *params,
                                       const struct mm_image_limits *lim, int64_t *used,
                                       struct mm_image_tiles *tiles, struct image_timing *tm,
                                       struct mm_err *err)
{
    memset(tiles, 0, sizeof *tiles);
    const double t0 = now_s();
    struct mm_image_bytes bytes;
    enum mm_status st = strncmp(image, "data:", 5) == 0
                            ? mm_image_source_load(image, NULL, &bytes, err)
                            : mm_image_source_read_file(image, 0, &bytes, err);
    if (st != MM_OK)
        return st;
    struct mm_image img;
    st = mm_image_decode(bytes.data, bytes.len, &lim->decode, &img, err);
    mm_image_bytes_free(&bytes);
    if (st != MM_OK)
        return st;
    const double t1 = now_s();
    st = mm_image_tiles_for_request(&img, params, lim, used, tiles, err);
    if (tm)
        *tm = (struct image_timing){img.width, img.height, (t1 - t0) * 1e3, (now_s() - t1) * 1e3};
    mm_image_free(&img);
    return st;
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
    struct mm_config cfg = {.force_image_size = 448,
                            .min_dynamic_patch = 1,
                            .max_dynamic_patch = 12,
                            .use_thumbnail = true};
    if (model && mm_config_load(model, &cfg, &err) != MM_OK)
        return fail(&err);
    /* one image: the per-request budget is the per-image ceiling */
    struct mm_image_limits lim = {.max_tiles_per_image = (int64_t)max_tiles,
                                  .max_tiles_per_request = MM_IMAGE_MAX_TILES + 1};
    if (max_tiles > (unsigned long long)cfg.max_dynamic_patch)
        cfg.max_dynamic_patch = (int64_t)max_tiles; /* the flag sets the max outright */
    struct mm_image_params params;
    if (mm_image_params_from_config(&cfg, &lim, &params, &err) != MM_OK)
        return fail(&err);

    struct mm_image_tiles tiles;
    struct image_timing tm;
    int64_t used = 0;
    enum mm_status st = load_image_tiles(image, &params, &lim, &used, &tiles, &tm, &err);
    if (st == MM_OK) {
        st = write_tiles(out, &tiles, &err);
        if (st == MM_OK)
            printf("%lld %lld %lld\n", (long long)tiles.grid.cols, (long long)tiles.grid.rows,
                   (long long)tiles.count);
        if (timing)
            fprintf(stderr, "image %lldx%lld: read+decode %.1f ms, tiles %.1f ms\n",
                    (long long)tm.width, (long long)tm.height, tm.decode_ms, tm.tiles_ms);
    }
    mm_image_tiles_free(&tiles);
    return st == MM_OK ? 0 : fail(&err);
}

/* ---- generate ------------------------------------------------------------------- */

/* Parses "1 2 3" into a new array; returns 0 on a malformed list. */
static int parse_ids(const char *s, int32_t **out, int64_t *n)
{
    int64_t cap = 64, len = 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    if (!ids)
        return 0;
    for (;;) {
        while (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n')
            s++;
        if (!*s)
            break;
        char *end;
        errno = 0;
        const long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX) {
            free(ids);
            return 0;
        }
        if (len == cap) {
            int32_t *nid = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            if (!nid) {
                free(ids);
                return 0;
            }
            ids = nid;
        }
        ids[len++] = (int32_t)v;
        s = end;
    }
    *out = ids;
    *n = len;
    return len > 0;
}

/* Greedy choice: the highest logit, lowest id among equal maxima (MODEL.md §3.7). */
static int32_t argmax(const float *v, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return (int32_t)best;
}

static float *read_tiles(const char *path, int64_t n_tiles, int64_t side, struct mm_err *err)
{
    const size_t want = (size_t)n_tiles * 3 * (size_t)side * (size_t)side;
    float *t = malloc((want ? want : 1) * sizeof *t);
    FILE *f = fopen(path, "rb");
    if (!t || !f || fread(t, sizeof *t, want, f) != want) {
        mm_err_set(err, MM_ERR_IO, "%s: cannot read %lld tiles of %lldx%lld fp32", path,
                   (long long)n_tiles, (long long)side, (long long)side);
        free(t);
        t = NULL;
    }
    if (f)
        fclose(f);
    return t;
}

/* Prompt end of the chunk starting at i: at most `chunk` ids, but never
 * inside an image tile run (the engine takes whole tiles). */
static int64_t chunk_end(const int32_t *ids, int64_t n, int64_t i, int64_t chunk, int32_t img,
                         int64_t tpt)
{
    int64_t j = i + chunk < n ? i + chunk : n;
    if (j < n && ids[j] == img && ids[j - 1] == img) {
        int64_t run_start = j;
        while (run_start > 0 && ids[run_start - 1] == img)
            run_start--;
        const int64_t into = (j - run_start) % tpt;
        j += into ? tpt - into : 0;
    }
    return j;
}

#define MAX_IMAGES 16

/* What `generate` was asked to do. */
struct gen_args {
    const char *model, *ids_arg, *prompt, *system, *tiles_path, *dump, *dump_prompt, *backend;
    const char *images[MAX_IMAGES];
    int n_images;
    unsigned long long max_new, n_tiles, threads, chunk;
    bool print_ids, state_bf16, ignore_eos;
};

static int parse_gen_args(int argc, char **argv, struct gen_args *g)
{
    *g = (struct gen_args){.backend = "cpu", .max_new = 16};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--print-ids") == 0 || strcmp(a, "--ignore-eos") == 0) {
            *(a[2] == 'p' ? &g->print_ids : &g->ignore_eos) = true;
            continue;
        }
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        int ok = v != NULL;
        if (!ok)
            ;
        else if (strcmp(a, "--model") == 0)
            g->model = v;
        else if (strcmp(a, "--prompt-ids") == 0)
            g->ids_arg = v;
        else if (strcmp(a, "--prompt") == 0)
            g->prompt = v;
        else if (strcmp(a, "--system") == 0)
            g->system = v;
        else if (strcmp(a, "--tiles") == 0)
            g->tiles_path = v;
        else if (strcmp(a, "--image") == 0 && g->n_images < MAX_IMAGES)
            g->images[g->n_images++] = v;
        else if (strcmp(a, "--num-tiles") == 0)
            ok = parse_u64(v, &g->n_tiles) && g->n_tiles <= 4096;
        else if (strcmp(a, "--max-tokens") == 0)
            ok = parse_u64(v, &g->max_new) && g->max_new <= 1000000;
        else if (strcmp(a, "--dump-logits") == 0)
            g->dump = v;
        else if (strcmp(a, "--dump-prompt-ids") == 0)
            g->dump_prompt = v;
        else if (strcmp(a, "--backend") == 0)
            ok = strcmp(v, "cpu") == 0 || strcmp(v, "cuda") == 0 || strcmp(v, "cuda-fp32") == 0,
            g->backend = v;
        else if (strcmp(a, "--threads") == 0)
            ok = parse_u64(v, &g->threads) && g->threads <= 256;
        else if (strcmp(a, "--prefill-chunk") == 0)
            ok = parse_u64(v, &g->chunk) && g->chunk <= MM_ENGINE_MAX_TOKENS / 2;
        else if (strcmp(a, "--state") == 0 && (strcmp(v, "fp32") == 0 || strcmp(v, "bf16") == 0))
            g->state_bf16 = strcmp(v, "bf16") == 0;
        else
            ok = 0;
        if (!ok) {
            fprintf(stderr, "mmmamba generate: bad option %s%s%s\n", a, v ? " " : "", v ? v : "");
            return 0;
        }
    }
    if (!g->model || !g->ids_arg == !g->prompt) {
        fprintf(stderr,
                "mmmamba generate: --model and one of --prompt-ids or --prompt are required\n");
        return 0;
    }
    if (!g->n_tiles != !g->tiles_path || (g->n_tiles && (!g->ids_arg || g->n_images))) {
        fprintf(stderr, "mmmamba generate: --num-tiles goes with --tiles and --prompt-ids "
                        "(not --image)\n");
        return 0;
    }
    return 1;
}

/* Tiles of every --image, concatenated in order (thumbnails included);
 * counts[i] = tiles of image i. *tiles is the caller's. */
static enum mm_status load_images(const struct gen_args *g, const struct mm_config *cfg,
                                  float **tiles, int64_t *counts, struct mm_err *err)
{
    const struct mm_image_limits lim = {0}; /* defaults: the config's tiling, 64 per request */
    struct mm_image_params params;
    enum mm_status st = mm_image_params_from_config(cfg, &lim, &params, err);
    const size_t tile_floats = 3 * (size_t)cfg->force_image_size * (size_t)cfg->force_image_size;
    int64_t total = 0;
    *tiles = NULL;
    for (int i = 0; st == MM_OK && i < g->n_images; i++) {
        struct mm_image_tiles t;
        st = load_image_tiles(g->images[i], &params, &lim, &total, &t, NULL, err);
        float *grown =
            st == MM_OK ? realloc(*tiles, (size_t)total * tile_floats * sizeof **tiles) : NULL;
        if (st == MM_OK && !grown)
            st = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        if (st == MM_OK) {
            *tiles = grown;
            memcpy(*tiles + (size_t)(total - t.count) * tile_floats, t.data,
                   (size_t)t.count * tile_floats * sizeof **tiles);
            counts[i] = t.count;
        }
        mm_image_tiles_free(&t);
        if (st != MM_OK)
            mm_err_prefix(err, "%s", g->images[i]);
    }
    return st;
}

/* The prompt as ids plus tiles: --prompt-ids as given (tiles from --tiles or
 * the --image files, in order), or --prompt through the chat template as
 * one user turn with the images first, as the reference places them. */
static enum mm_status build_prompt(const struct gen_args *g, const struct mm_config *cfg,
                                   const struct mm_tokenizer *tok, struct mm_tokens *ids,
                                   float **tiles, int64_t *n_tiles, struct mm_err *err)
{
    int64_t counts[MAX_IMAGES];
    enum mm_status st = load_images(g, cfg, tiles, counts, err);
    *n_tiles = 0;
    for (int i = 0; st == MM_OK && i < g->n_images; i++)
        *n_tiles += counts[i];
    if (st != MM_OK)
        return st;
    if (g->ids_arg) {
        int32_t *v;
        int64_t n;
        if (!parse_ids(g->ids_arg, &v, &n))
            return mm_err_set(err, MM_ERR_INVALID, "--prompt-ids must be a list of token ids");
        ids->ids = v;
        ids->n = ids->cap = n;
        if (g->n_tiles) {
            if (!(*tiles =
                      read_tiles(g->tiles_path, (int64_t)g->n_tiles, cfg->force_image_size, err)))
                return err->status;
            *n_tiles = (int64_t)g->n_tiles;
        }
        return MM_OK;
    }
    if (!tok)
        return mm_err_set(err, MM_ERR_NOT_FOUND, "--prompt needs the model's tokenizer files");
    struct mm_chat_template *tpl;
    st = mm_chat_template_create(tok, cfg->template_name, cfg->tokens_per_tile, &tpl, err);
    if (st != MM_OK)
        return st;
    struct mm_chat_part parts[MAX_IMAGES + 1];
    for (int i = 0; i < g->n_images; i++)
        parts[i] = (struct mm_chat_part){.kind = MM_CHAT_IMAGE, .tiles = counts[i]};
    parts[g->n_images] =
        (struct mm_chat_part){.kind = MM_CHAT_TEXT, .text = g->prompt, .len = strlen(g->prompt)};
    const struct mm_chat_message msg = {
        .role = MM_CHAT_USER, .parts = parts, .n_parts = g->n_images + 1};
    const struct mm_chat_options copt = {
        .system = g->system, .add_generation_prompt = true, .add_bos = true};
    st = mm_chat_render(tpl, &msg, 1, &copt, ids, NULL, NULL, err);
    mm_chat_template_free(tpl);
    return st;
}

/* Prefill in chunks that keep image tiles whole; logits of the last token. */
static enum mm_status prefill(struct mm_engine *e, int32_t slot, const struct mm_tokens *p,
                              const float *tiles, int64_t chunk, float *logits, struct mm_err *err)
{
    const int64_t tpt = e->cfg.tokens_per_tile;
    const int32_t img_id = (int32_t)e->cfg.img_context_token_id;
    const size_t tile_floats =
        3 * (size_t)e->cfg.force_image_size * (size_t)e->cfg.force_image_size;
    int64_t tiles_used = 0;
    for (int64_t i = 0; i < p->n;) {
        const int64_t j = chunk ? chunk_end(p->ids, p->n, i, chunk, img_id, tpt) : p->n;
        int64_t img = 0;
        for (int64_t k = i; k < j; k++)
            img += p->ids[k] == img_id;
        const struct mm_seq_step st = {
            .slot = slot,
            .ids = p->ids + i,
            .n = j - i,
            .tiles = tiles ? tiles + (size_t)tiles_used * tile_floats : NULL,
            .n_tiles = img / tpt,
            .want_logits = j == p->n,
        };
        enum mm_status s = mm_engine_forward(e, &st, 1, logits, err);
        if (s != MM_OK)
            return s;
        tiles_used += img / tpt;
        i = j;
    }
    return MM_OK;
}

static enum mm_status write_floats(const char *path, const float *v, int64_t n, struct mm_err *err)
{
    FILE *f = fopen(path, "wb");
    const int ok = f && fwrite(v, sizeof *v, (size_t)n, f) == (size_t)n;
    if ((f && fclose(f) != 0) || !ok)
        return mm_err_set(err, MM_ERR_IO, "%s: cannot write logits", path);
    return MM_OK;
}

static enum mm_status write_ids(const char *path, const struct mm_tokens *t, struct mm_err *err)
{
    FILE *f = fopen(path, "w");
    int ok = f != NULL;
    for (int64_t i = 0; ok && i < t->n; i++)
        ok = fprintf(f, i ? " %d" : "%d", t->ids[i]) > 0;
    ok = ok && fputc('\n', f) != EOF;
    if ((f && fclose(f) != 0) || !ok)
        return mm_err_set(err, MM_ERR_IO, "%s: cannot write the prompt ids", path);
    return MM_OK;
}

static int cmd_generate(int argc, char **argv)
{
    struct gen_args g;
    if (!parse_gen_args(argc, argv, &g))
        return 2;
    struct mm_err err;
    struct mm_config cfg;
    struct mm_tokenizer *tok = NULL;
    struct mm_detok *detok = NULL;
    struct mm_engine *e = NULL;
    struct mm_tokens prompt = {0};
    float *tiles = NULL, *logits = NULL;
    int32_t *out_ids = NULL;
    int rc = 1;
    if (mm_config_load(g.model, &cfg, &err) != MM_OK)
        goto done;
    /* the tokenizer is needed for --prompt and for printing text */
    struct mm_err tok_err;
    if (mm_tokenizer_load_dir(g.model, &tok, &tok_err) != MM_OK) {
        tok = NULL;
        if (g.prompt) {
            err = tok_err;
            goto done;
        }
    }
    int64_t n_tiles;
    if (build_prompt(&g, &cfg, tok, &prompt, &tiles, &n_tiles, &err) != MM_OK)
        goto done;
    if (g.dump_prompt && write_ids(g.dump_prompt, &prompt, &err) != MM_OK)
        goto done;
    /* the engine trusts the tile buffer to hold what the image runs need */
    int64_t img_tokens = 0;
    for (int64_t i = 0; i < prompt.n; i++)
        img_tokens += prompt.ids[i] == cfg.img_context_token_id;
    if (img_tokens != n_tiles * cfg.tokens_per_tile) {
        mm_err_set(&err, MM_ERR_INVALID,
                   "the prompt has %lld image-context tokens but %lld tiles were given "
                   "(%lld tokens per tile)",
                   (long long)img_tokens, (long long)n_tiles, (long long)cfg.tokens_per_tile);
        goto done;
    }

    struct mm_engine_options opt;
    mm_engine_options_default(&opt);
    opt.backend = strcmp(g.backend, "cuda") == 0        ? MM_BACKEND_CUDA
                  : strcmp(g.backend, "cuda-fp32") == 0 ? MM_BACKEND_CUDA_FP32
                                                        : MM_BACKEND_CPU;
    opt.n_threads = (int)g.threads;
    opt.max_seqs = 1;
    opt.state_fp32 = !g.state_bf16;
    opt.max_tiles = n_tiles > 0 ? n_tiles : 1;
    opt.max_context = prompt.n + (int64_t)g.max_new + 1;
    /* the prompt goes in one step unless chunked; a chunk that would end
     * inside an image grows to the end of that tile */
    opt.max_tokens = g.chunk ? (int64_t)g.chunk + (n_tiles ? cfg.tokens_per_tile : 0) : prompt.n;
    if (mm_engine_open(g.model, &opt, &e, &err) != MM_OK)
        goto done;
    const int64_t V = e->cfg.vocab_size;
    logits = malloc((size_t)V * sizeof *logits);
    out_ids = malloc((size_t)(g.max_new ? g.max_new : 1) * sizeof *out_ids);
    int32_t slot;
    if (!logits || !out_ids) {
        mm_err_set(&err, MM_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (mm_engine_slot_acquire(e, &slot, &err) != MM_OK)
        goto done;
    const double t0 = now_s();
    if (prefill(e, slot, &prompt, tiles, (int64_t)g.chunk, logits, &err) != MM_OK)
        goto done;
    const double t1 = now_s();
    if (g.dump && write_floats(g.dump, logits, V, &err) != MM_OK)
        goto done;
    /* greedy decode; text streams out as it completes unless ids were asked for */
    const int32_t stop = tok && !g.ignore_eos ? mm_tokenizer_find(tok, "<|im_end|>") : -1;
    if (tok && !g.print_ids && mm_detok_create(tok, &detok, &err) != MM_OK)
        goto done;
    int64_t produced = 0;
    while (produced < (int64_t)g.max_new) {
        const int32_t next = argmax(logits, V);
        out_ids[produced++] = next;
        if (next == stop)
            break;
        if (detok) {
            const char *text;
            size_t len;
            if (mm_detok_feed(detok, next, &text, &len, &err) != MM_OK)
                goto done;
            fwrite(text, 1, len, stdout);
            fflush(stdout);
        }
        if (produced == (int64_t)g.max_new)
            break;
        const struct mm_seq_step st = {
            .slot = slot, .ids = &next, .n = 1, .want_logits = true, .text_only = true};
        if (mm_engine_forward(e, &st, 1, logits, &err) != MM_OK)
            goto done;
    }
    const double t2 = now_s();
    if (detok) {
        size_t len;
        const char *rest = mm_detok_finish(detok, &len);
        fwrite(rest, 1, len, stdout);
        printf("\n");
    }
    if (g.print_ids) {
        for (int64_t i = 0; i < produced; i++)
            printf("%s%d", i ? " " : "", out_ids[i]);
        printf("\n");
    }
    const int64_t decoded = produced > 0 ? produced - 1 : 0;
    fprintf(stderr,
            "prefill: %lld tokens in %.3f s (%.1f tok/s); decode: %lld tokens in %.3f s "
            "(%.1f tok/s)\n",
            (long long)prompt.n, t1 - t0, (double)prompt.n / (t1 - t0), (long long)decoded, t2 - t1,
            decoded ? (double)decoded / (t2 - t1) : 0.0);
    rc = 0;
done:
    if (rc)
        fail(&err);
    mm_detok_free(detok);
    mm_engine_close(e);
    mm_tokenizer_free(tok);
    mm_tokens_free(&prompt);
    free(tiles);
    free(logits);
    free(out_ids);
    return rc;
}

/* ---- tokenize ------------------------------------------------------------------- */

/* Prints ids (and pieces unless only_ids) of one encoded text. */
static void print_tokens(const struct mm_tokenizer *tok, const struct mm_tokens *t, bool only_ids)
{
    for (int64_t i = 0; i < t->n; i++)
        printf(i ? " %d" : "%d", (int)t->ids[i]);
    printf("\n");
    if (only_ids)
        return;
    for (int64_t i = 0; i < t->n; i++) {
        const char *p = mm_tokenizer_piece(tok, t->ids[i]);
        printf(i ? " %s" : "%s", p ? p : "?");
    }
    printf("\n");
}

/* --decode: one line of space-separated ids in, one line of text out. */
static int decode_line(const struct mm_tokenizer *tok, const char *line, size_t n,
                       struct mm_tokens *t, struct mm_err *err)
{
    t->n = 0;
    for (size_t i = 0; i < n;) {
        if (line[i] == ' ' || line[i] == '\t' || line[i] == '\r') {
            i++;
            continue;
        }
        char *end;
        const long v = strtol(line + i, &end, 10);
        if (end == line + i || v < INT32_MIN || v > INT32_MAX) {
            mm_err_set(err, MM_ERR_INVALID, "not a token id: \"%.*s\"", (int)(n - i), line + i);
            return 0;
        }
        if (mm_tokens_push(t, (int32_t)v, err) != MM_OK)
            return 0;
        i = (size_t)(end - line);
    }
    char *text;
    size_t len;
    if (mm_tokenizer_decode(tok, t->ids, t->n, &text, &len, err) != MM_OK)
        return 0;
    fwrite(text, 1, len, stdout);
    putchar('\n');
    free(text);
    return 1;
}

static int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *file = NULL, *path = NULL, *text = NULL;
    bool bos = true, lines = false, decode = false, bench = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--no-bos") == 0)
            bos = false;
        else if (strcmp(a, "--lines") == 0)
            lines = true;
        else if (strcmp(a, "--decode") == 0)
            decode = true;
        else if (strcmp(a, "--bench") == 0)
            bench = true;
        else if ((strcmp(a, "--model") == 0 || strcmp(a, "--tokenizer") == 0 ||
                  strcmp(a, "--file") == 0) &&
                 v) {
            if (a[2] == 'm')
                model = v;
            else if (a[2] == 't')
                file = v;
            else
                path = v;
            i++;
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "mmmamba tokenize: bad option %s\n", a);
            return 2;
        } else if (!text)
            text = a;
        else {
            fprintf(stderr, "mmmamba tokenize: one TEXT only (quote it)\n");
            return 2;
        }
    }
    if (!model == !file || !text == !path) {
        fprintf(stderr, "usage: mmmamba tokenize (--model DIR | --tokenizer FILE) [--no-bos] "
                        "[--lines] [--decode] [--bench] (TEXT | --file PATH)\n");
        return 2;
    }
    struct mm_err err;
    struct mm_tokenizer *tok;
    if ((model ? mm_tokenizer_load_dir(model, &tok, &err)
               : mm_tokenizer_load_model(file, &tok, &err)) != MM_OK)
        return fail(&err);
    char *buf = NULL;
    size_t len = text ? strlen(text) : 0;
    if (path && mm_file_read_all(path, (size_t)1 << 30, &buf, &len, &err) != MM_OK) {
        mm_tokenizer_free(tok);
        return fail(&err);
    }
    const char *in = path ? buf : text;
    const unsigned flags = (bos ? MM_TOKENIZE_BOS : 0) | (model ? MM_TOKENIZE_SPECIAL : 0);
    struct mm_tokens t = {0};
    int rc = 0;
    if (bench) {
        /* best of a few runs over the whole input */
        double best = 1e30;
        for (int r = 0; r < 5 && rc == 0; r++) {
            t.n = 0;
            const double t0 = now_s();
            if (mm_tokenizer_encode(tok, in, len, flags, &t, &err) != MM_OK)
                rc = fail(&err);
            const double dt = now_s() - t0;
            best = dt < best ? dt : best;
        }
        if (rc == 0)
            printf("%zu bytes -> %lld tokens in %.2f ms (%.0f tokens/s, %.1f MB/s)\n", len,
                   (long long)t.n, best * 1e3, (double)t.n / best, (double)len / best / 1e6);
    } else if (lines || decode) {
        /* one output line per input line (split on '\n', like spm_encode) */
        for (size_t s = 0; s < len && rc == 0;) {
            const char *nl = memchr(in + s, '\n', len - s);
            const size_t e = nl ? (size_t)(nl - in) : len;
            if (decode) {
                if (!decode_line(tok, in + s, e - s, &t, &err))
                    rc = fail(&err);
            } else {
                t.n = 0;
                if (mm_tokenizer_encode(tok, in + s, e - s, flags, &t, &err) != MM_OK)
                    rc = fail(&err);
                else
                    print_tokens(tok, &t, true);
            }
            s = e + 1;
        }
    } else if (mm_tokenizer_encode(tok, in, len, flags, &t, &err) != MM_OK) {
        rc = fail(&err);
    } else {
        print_tokens(tok, &t, false);
    }
    mm_tokens_free(&t);
    free(buf);
    mm_tokenizer_free(tok);
    return rc;
}

static const struct command commands[] = {
    {"mkmodel",
     "--preset P --out DIR [--seed S] [--shards N] [--pixel-shuffle-loc pre|post] "
     "[--normalize-encoder-output 0|1] [--image-size N]",
     cmd_mkmodel},
    {"inspect", "DIR", cmd_inspect},
    {"generate",
     "--model DIR --prompt-ids \"1 2 3\" [--tiles FILE --num-tiles N] [--max-tokens N] "
     "[--backend cpu|cuda|cuda-fp32] [--print-ids] [--dump-logits FILE] [--dump-prompt-ids FILE] [--threads "
     "N] "
     "[--prefill-chunk N] [--state fp32|bf16]",
     cmd_generate},
    {"tokenize",
     "(--model DIR | --tokenizer FILE) [--no-bos] [--lines] [--decode] [--bench] "
     "(TEXT | --file PATH)",
     cmd_tokenize},
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
