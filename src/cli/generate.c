/* generate.c: `mmmamba generate`, one prompt through the engine with greedy
 * decoding: a chat prompt (text plus images through the template) or ids as
 * given, text streamed as it completes, timings on stderr.
 *
 * Design: everything the daemon also needs (prompt checks, prefill chunking
 * at tile boundaries, image loading, the fp32 file format) lives in the
 * library; this file only wires flags to it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/f32file.h"
#include "base/json.h"
#include "cli/cli.h"
#include "engine/engine.h"
#include "engine/prompt.h"
#include "model/chat_template.h"
#include "model/config.h"
#include "model/image_preprocess.h"
#include "model/tokenizer.h"
#include "serve/detokenizer.h"

#define MAX_IMAGES 16
#define MAX_PROMPT_BYTES ((size_t)64 << 20)

/* What `generate` was asked to do. */
struct gen_args {
    const char *model, *ids_arg, *prompt, *prompt_file, *system, *tiles_path, *dump, *dump_prompt;
    const char *backend, *state;
    const char *images[MAX_IMAGES];
    int n_images;
    long long max_new, n_tiles, threads, chunk;
    bool print_ids, ignore_eos;
};

/* Parses "1 2 3" (spaces, commas, tabs or newlines between decimal ids). */
static enum mm_status parse_ids(const char *s, struct mm_tokens *out, struct mm_err *err)
{
    for (;;) {
        while (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n' || *s == '\r')
            s++;
        if (!*s)
            break;
        const char *e = s;
        while (*e >= '0' && *e <= '9')
            e++;
        char word[16];
        long long v;
        if (e == s || (*e && !strchr(" ,\t\n\r", *e)) || (size_t)(e - s) >= sizeof word ||
            (memcpy(word, s, (size_t)(e - s)), word[e - s] = '\0',
             !mm_cli_parse_int(word, 0, INT32_MAX, &v)))
            return mm_err_set(err, MM_ERR_INVALID, "--prompt-ids: \"%.20s\" is not a token id", s);
        if (mm_tokens_push(out, (int32_t)v, err) != MM_OK)
            return err->status;
        s = e;
    }
    if (out->n == 0)
        return mm_err_set(err, MM_ERR_INVALID, "--prompt-ids: no token ids given");
    return MM_OK;
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
        st = mm_cli_image_tiles(g->images[i], &params, &lim, &total, &t, NULL, err);
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
 * the --image files, in order), or the prompt text through the chat
 * template as one user turn with the images first, as the reference places
 * them. */
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
        if ((st = parse_ids(g->ids_arg, ids, err)) != MM_OK)
            return st;
        if (g->n_tiles) {
            const size_t side = (size_t)cfg->force_image_size;
            if ((st = mm_f32_read_file(g->tiles_path, (size_t)g->n_tiles * 3 * side * side, tiles,
                                       err)) != MM_OK)
                return mm_err_prefix(err, "--tiles");
            *n_tiles = g->n_tiles;
        }
        return MM_OK;
    }
    char *text = NULL;
    size_t len = g->prompt ? strlen(g->prompt) : 0;
    if (g->prompt_file &&
        (st = mm_file_read_all(strcmp(g->prompt_file, "-") == 0 ? "/dev/stdin" : g->prompt_file,
                               MAX_PROMPT_BYTES, &text, &len, err)) != MM_OK)
        return st;
    struct mm_chat_template *tpl;
    st = mm_chat_template_create(tok, cfg->template_name, cfg->tokens_per_tile, &tpl, err);
    if (st == MM_OK) {
        struct mm_chat_part parts[MAX_IMAGES + 1];
        for (int i = 0; i < g->n_images; i++)
            parts[i] = (struct mm_chat_part){.kind = MM_CHAT_IMAGE, .tiles = counts[i]};
        parts[g->n_images] = (struct mm_chat_part){
            .kind = MM_CHAT_TEXT, .text = text ? text : g->prompt, .len = len};
        const struct mm_chat_message msg = {
            .role = MM_CHAT_USER, .parts = parts, .n_parts = g->n_images + 1};
        const struct mm_chat_options copt = {
            .system = g->system, .add_generation_prompt = true, .add_bos = true};
        st = mm_chat_render(tpl, &msg, 1, &copt, ids, NULL, NULL, err);
        mm_chat_template_free(tpl);
    }
    free(text);
    return st;
}

/* Prefill in chunks that keep image tiles whole; logits of the last token. */
static enum mm_status prefill(struct mm_engine *e, int32_t slot, const struct mm_tokens *p,
                              const float *tiles, int64_t chunk, float *logits, struct mm_err *err)
{
    const size_t tile_floats =
        3 * (size_t)e->cfg.force_image_size * (size_t)e->cfg.force_image_size;
    int64_t tiles_used = 0;
    for (int64_t i = 0; i < p->n;) {
        const struct mm_prompt_chunk c = mm_prompt_next_chunk(&e->cfg, p->ids, p->n, i, chunk);
        const struct mm_seq_step st = {
            .slot = slot,
            .ids = p->ids + c.begin,
            .n = c.end - c.begin,
            .tiles = tiles ? tiles + (size_t)tiles_used * tile_floats : NULL,
            .n_tiles = c.n_tiles,
            .want_logits = c.end == p->n,
        };
        enum mm_status s = mm_engine_forward(e, &st, 1, logits, err);
        if (s != MM_OK)
            return s;
        tiles_used += c.n_tiles;
        i = c.end;
    }
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

/* Greedy choice: the highest logit, lowest id among equal maxima (docs/model.md §3.7). */
static int32_t argmax(const float *v, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return (int32_t)best;
}

/* Flag combinations the option table cannot check one at a time; 2 after a message. */
static int check_args(const struct mm_cli_cmd *cmd, const struct gen_args *g)
{
    if (!g->model)
        return mm_cli_usage_error(cmd, "--model is required");
    if ((g->prompt != NULL) + (g->prompt_file != NULL) + (g->ids_arg != NULL) != 1)
        return mm_cli_usage_error(cmd, "give one of --prompt, --prompt-file or --prompt-ids");
    if (g->system && g->ids_arg)
        return mm_cli_usage_error(cmd, "--system applies to --prompt/--prompt-file, not "
                                       "--prompt-ids (put the system turn in the ids)");
    if (!g->n_tiles != !g->tiles_path)
        return mm_cli_usage_error(cmd, "--tiles and --num-tiles go together");
    if (g->n_tiles && (!g->ids_arg || g->n_images))
        return mm_cli_usage_error(cmd, "--tiles goes with --prompt-ids (use --image with "
                                       "--prompt)");
    return -1;
}

static int run(const struct gen_args *g)
{
    struct mm_err err;
    struct mm_config cfg;
    struct mm_tokenizer *tok = NULL;
    struct mm_detok *detok = NULL;
    struct mm_engine *e = NULL;
    struct mm_tokens prompt = {0};
    float *tiles = NULL, *logits = NULL;
    int32_t *out_ids = NULL;
    int rc = 1;
    if (mm_config_load(g->model, &cfg, &err) != MM_OK)
        goto done;
    /* a checkpoint that cannot be tokenized, or lacks the template's tokens,
     * is broken even for --prompt-ids: its output could not be read */
    struct mm_chat_template *tpl = NULL;
    if (mm_tokenizer_load_checkpoint(g->model, &cfg, &tok, &err) != MM_OK ||
        mm_chat_template_create(tok, cfg.template_name, cfg.tokens_per_tile, &tpl, &err) != MM_OK)
        goto done;
    mm_chat_template_free(tpl);
    int64_t n_tiles;
    if (build_prompt(g, &cfg, tok, &prompt, &tiles, &n_tiles, &err) != MM_OK)
        goto done;
    if (g->dump_prompt && write_ids(g->dump_prompt, &prompt, &err) != MM_OK)
        goto done;
    if (mm_prompt_check_tiles(&cfg, prompt.ids, prompt.n, n_tiles, &err) != MM_OK)
        goto done;

    struct mm_engine_options opt;
    mm_engine_options_default(&opt);
    opt.backend = strcmp(g->backend, "cuda") == 0 ? MM_BACKEND_CUDA : MM_BACKEND_CPU;
    opt.n_threads = (int)g->threads;
    opt.max_seqs = 1;
    opt.state_fp32 = strcmp(g->state, "fp32") == 0;
    opt.max_tiles = n_tiles > 0 ? n_tiles : 1;
    opt.max_context = prompt.n + g->max_new + 1;
    /* the prompt goes in one step unless chunked; a chunk that would end
     * inside an image grows to the end of that tile */
    opt.max_tokens = g->chunk ? g->chunk + (n_tiles ? cfg.tokens_per_tile : 0) : prompt.n;
    if (mm_engine_open(g->model, &opt, &e, &err) != MM_OK)
        goto done;
    const int64_t V = e->cfg.vocab_size;
    logits = malloc((size_t)V * sizeof *logits);
    out_ids = malloc((size_t)(g->max_new ? g->max_new : 1) * sizeof *out_ids);
    int32_t slot;
    if (!logits || !out_ids) {
        mm_err_set(&err, MM_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (mm_engine_slot_acquire(e, &slot, &err) != MM_OK)
        goto done;
    const double t0 = mm_cli_now();
    if (prefill(e, slot, &prompt, tiles, g->chunk, logits, &err) != MM_OK)
        goto done;
    const double t1 = mm_cli_now();
    if (g->dump && mm_f32_write_file(g->dump, logits, (size_t)V, &err) != MM_OK)
        goto done;
    /* greedy decode; text streams out as it completes unless ids were asked for */
    const int32_t stop = !g->ignore_eos ? mm_tokenizer_find(tok, "<|im_end|>") : -1;
    if (!g->print_ids && mm_detok_create(tok, &detok, &err) != MM_OK)
        goto done;
    int64_t produced = 0, steps = 0;
    while (produced < g->max_new) {
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
        if (produced == g->max_new)
            break;
        const struct mm_seq_step st = {
            .slot = slot, .ids = &next, .n = 1, .want_logits = true, .text_only = true};
        if (mm_engine_forward(e, &st, 1, logits, &err) != MM_OK)
            goto done;
        steps++;
    }
    const double t2 = mm_cli_now();
    if (detok) {
        size_t len;
        const char *rest = mm_detok_finish(detok, &len);
        fwrite(rest, 1, len, stdout);
        printf("\n");
    }
    if (g->print_ids) {
        for (int64_t i = 0; i < produced; i++)
            printf("%s%d", i ? " " : "", out_ids[i]);
        printf("\n");
    }
    fflush(stdout); /* the text ends its line before the stats start theirs */
    fprintf(stderr,
            "prefill: %lld tokens in %.3f s (%.1f tok/s); generated %lld tokens "
            "(the first from the prefill); decode: %lld steps in %.3f s (%.1f tok/s)\n",
            (long long)prompt.n, t1 - t0, (double)prompt.n / (t1 - t0), (long long)produced,
            (long long)steps, t2 - t1, steps ? (double)steps / (t2 - t1) : 0.0);
    rc = 0;
done:
    if (rc)
        mm_cli_fail(&err);
    mm_detok_free(detok);
    mm_engine_close(e);
    mm_tokenizer_free(tok);
    mm_tokens_free(&prompt);
    free(tiles);
    free(logits);
    free(out_ids);
    return rc;
}

int mm_cli_generate(const struct mm_cli_cmd *cmd, int argc, char **argv)
{
    struct gen_args g = {.backend = "cpu", .state = "fp32", .max_new = 16};
    const struct mm_cli_opt opts[] = {
        MM_CLI_OPT_STRING("model", "DIR", "checkpoint directory (required)", &g.model),
        MM_CLI_OPT_STRING("prompt", "TEXT", "user message, through the chat template", &g.prompt),
        MM_CLI_OPT_STRING("prompt-file", "FILE", "the same, read from FILE ('-': stdin)",
                          &g.prompt_file),
        MM_CLI_OPT_STRING("system", "TEXT", "system message (default: the template's)", &g.system),
        MM_CLI_OPT_LIST("image", "IMAGE", "image file or data: URL, placed before the text",
                        g.images, MAX_IMAGES, &g.n_images),
        MM_CLI_OPT_FLAG("ignore-eos", "do not stop at <|im_end|>", &g.ignore_eos),
        MM_CLI_OPT_STRING("prompt-ids", "\"1 2 3\"", "token ids as given (no template)",
                          &g.ids_arg),
        MM_CLI_OPT_STRING("tiles", "FILE", "preprocessed tiles for --prompt-ids (raw LE fp32)",
                          &g.tiles_path),
        MM_CLI_OPT_INT("num-tiles", "N", "tiles in --tiles", &g.n_tiles, 0, MM_ENGINE_MAX_TILES),
        MM_CLI_OPT_INT("max-tokens", "N", "most tokens to generate", &g.max_new, 0, 1000000),
        MM_CLI_OPT_FLAG("print-ids", "print the generated ids instead of text", &g.print_ids),
        MM_CLI_OPT_STRING("dump-logits", "FILE", "write the last prompt logits (raw LE fp32)",
                          &g.dump),
        MM_CLI_OPT_STRING("dump-prompt-ids", "FILE", "write the prompt ids", &g.dump_prompt),
        MM_CLI_OPT_CHOICE("backend", "cpu|cuda", "compute backend", &g.backend),
        MM_CLI_OPT_INT("threads", "N", "CPU threads (0: all CPUs)", &g.threads, 0, 256),
        MM_CLI_OPT_INT("prefill-chunk", "N", "prefill in steps of N tokens (0: one step)", &g.chunk,
                       0, MM_ENGINE_MAX_TOKENS / 2),
        MM_CLI_OPT_CHOICE("state", "fp32|bf16", "recurrent-state precision", &g.state),
    };
    const char *pos[1];
    int n_pos;
    int rc = mm_cli_parse(cmd, opts, sizeof opts / sizeof opts[0], argc, argv, pos, 0, 0, &n_pos);
    if (rc < 0)
        rc = check_args(cmd, &g);
    return rc >= 0 ? rc : run(&g);
}
