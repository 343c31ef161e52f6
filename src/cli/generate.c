/* generate.c: `mmmamba generate`, a thin client of the scheduler (the
 * daemon's sampler, stops and chunking): one prompt (a chat prompt with
 * images through the template, or ids as given) streamed as it completes,
 * or a file of token-id prompts run --concurrency at a time with throughput
 * and latency percentiles on stderr.
 *
 * Design: everything the daemon also needs (prompt checks, scheduling,
 * sampling, image loading, the fp32 file format) lives in the library; this
 * file only wires flags to it. */
#include <math.h>
#include <pthread.h>
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
#include "serve/scheduler.h"

#define MAX_IMAGES 16
#define MAX_PROMPT_BYTES ((size_t)64 << 20)

/* What `generate` was asked to do. */
struct gen_args {
    const char *model, *ids_arg, *ids_file, *prompt, *prompt_file, *system, *tiles_path, *dump,
        *dump_prompt;
    const char *backend, *state;
    const char *images[MAX_IMAGES];
    int n_images;
    const char *stops[MM_REQUEST_MAX_STOPS];
    int n_stops;
    const char *temperature, *top_p, *min_p, *rep_pen, *pres_pen, *freq_pen; /* floats */
    long long max_new, n_tiles, threads, chunk, top_k, seed, logprobs, n, concurrency, requests,
        kv_memory;
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

/* Flag combinations the option table cannot check one at a time; 2 after a message. */
static int check_args(const struct mm_cli_cmd *cmd, const struct gen_args *g)
{
    if (!g->model)
        return mm_cli_usage_error(cmd, "--model is required");
    if ((g->prompt != NULL) + (g->prompt_file != NULL) + (g->ids_arg != NULL) +
            (g->ids_file != NULL) !=
        1)
        return mm_cli_usage_error(
            cmd, "give one of --prompt, --prompt-file, --prompt-ids or --prompt-ids-file");
    if (g->system && (g->ids_arg || g->ids_file))
        return mm_cli_usage_error(cmd, "--system applies to --prompt/--prompt-file, not "
                                       "--prompt-ids (put the system turn in the ids)");
    if (!g->n_tiles != !g->tiles_path)
        return mm_cli_usage_error(cmd, "--tiles and --num-tiles go together");
    if (g->n_tiles && (!g->ids_arg || g->n_images))
        return mm_cli_usage_error(cmd, "--tiles goes with --prompt-ids (use --image with "
                                       "--prompt)");
    if (g->ids_file && (g->n_images || g->dump || g->dump_prompt))
        return mm_cli_usage_error(cmd, "--prompt-ids-file takes text-only prompts (no --image, "
                                       "--dump-logits, --dump-prompt-ids)");
    if ((g->concurrency > 1 || g->requests) && !g->ids_file)
        return mm_cli_usage_error(cmd, "--concurrency and --requests go with --prompt-ids-file");
    const char *const *floats[] = {&g->temperature, &g->top_p,    &g->min_p,
                                   &g->rep_pen,     &g->pres_pen, &g->freq_pen};
    const char *names[] = {
        "temperature",      "top-p", "min-p", "repetition-penalty", "presence-penalty",
        "frequency-penalty"};
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
        char *end;
        if (*floats[i] && (strtof(*floats[i], &end), end == *floats[i] || *end))
            return mm_cli_usage_error(cmd, "--%s: '%s' is not a number", names[i], *floats[i]);
    }
    return -1;
}

/* ---- prompts ---------------------------------------------------------------------- */

/* --prompt-ids-file: one prompt per non-empty line. */
static enum mm_status read_ids_file(const char *path, struct mm_tokens **out, int64_t *n,
                                    struct mm_err *err)
{
    char *text;
    size_t len;
    enum mm_status st = mm_file_read_all(strcmp(path, "-") == 0 ? "/dev/stdin" : path,
                                         MAX_PROMPT_BYTES, &text, &len, err);
    if (st != MM_OK)
        return st;
    *out = NULL;
    *n = 0;
    int64_t cap = 0;
    for (char *line = text, *next; st == MM_OK && line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (strspn(line, " \t\r,") == strlen(line))
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            struct mm_tokens *g = realloc(*out, (size_t)cap * sizeof *g);
            if (!g) {
                st = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
                break;
            }
            *out = g;
        }
        (*out)[*n] = (struct mm_tokens){0};
        st = parse_ids(line, &(*out)[*n], err);
        (*n)++;
        if (st != MM_OK)
            mm_err_prefix(err, "%s line %lld", path, (long long)*n);
    }
    free(text);
    if (st == MM_OK && *n == 0)
        st = mm_err_set(err, MM_ERR_INVALID, "%s: no prompts", path);
    return st;
}

/* ---- sampling and stops from the flags ---------------------------------------------- */

static void request_params(const struct gen_args *g, struct mm_request_params *p)
{
    mm_request_params_default(p);
    struct mm_sample_params *s = &p->sample;
    if (g->temperature)
        s->temperature = strtof(g->temperature, NULL);
    if (g->top_p)
        s->top_p = strtof(g->top_p, NULL);
    if (g->min_p)
        s->min_p = strtof(g->min_p, NULL);
    if (g->rep_pen)
        s->repetition_penalty = strtof(g->rep_pen, NULL);
    if (g->pres_pen)
        s->presence_penalty = strtof(g->pres_pen, NULL);
    if (g->freq_pen)
        s->frequency_penalty = strtof(g->freq_pen, NULL);
    s->top_k = (int32_t)g->top_k;
    s->seed = (uint64_t)g->seed;
    p->has_seed = g->seed >= 0;
    s->n_logprobs = (int32_t)g->logprobs;
    p->logprobs = g->logprobs > 0;
    p->n = (int32_t)g->n;
    p->max_tokens = g->max_new;
    p->ignore_eos = g->ignore_eos;
    p->stop = g->stops;
    p->n_stop = g->n_stops;
}

/* ---- one prompt, streamed ---------------------------------------------------------------- */

/* Last prompt position's logits, straight from the engine (--dump-logits). */
static enum mm_status dump_logits(struct mm_engine *e, const struct gen_args *g,
                                  const struct mm_tokens *p, const float *tiles, struct mm_err *err)
{
    const int64_t V = e->cfg.vocab_size;
    float *logits = malloc((size_t)V * sizeof *logits);
    int32_t slot = -1;
    enum mm_status st = logits ? mm_engine_slot_acquire(e, &slot, err)
                               : mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    const size_t tile_floats =
        3 * (size_t)e->cfg.force_image_size * (size_t)e->cfg.force_image_size;
    int64_t tiles_used = 0;
    for (int64_t i = 0; st == MM_OK && i < p->n;) {
        const struct mm_prompt_chunk c = mm_prompt_next_chunk(&e->cfg, p->ids, p->n, i, g->chunk);
        const struct mm_seq_step step = {
            .slot = slot,
            .ids = p->ids + c.begin,
            .n = c.end - c.begin,
            .tiles = tiles ? tiles + (size_t)tiles_used * tile_floats : NULL,
            .n_tiles = c.n_tiles,
            .want_logits = c.end == p->n,
        };
        st = mm_engine_forward(e, &step, 1, logits, err);
        tiles_used += c.n_tiles;
        i = c.end;
    }
    if (st == MM_OK)
        st = mm_f32_write_file(g->dump, logits, (size_t)V, err);
    if (slot >= 0)
        mm_engine_slot_release(e, slot);
    free(logits);
    return st;
}

/* Streams the choices of one request to stdout (text of choice 0 as it
 * comes when n = 1; otherwise each choice on its own line at the end). */
static enum mm_status stream_one(struct mm_scheduler *s, const struct gen_args *g,
                                 struct mm_tokens *prompt, float *tiles, int64_t n_tiles,
                                 struct mm_err *err)
{
    struct mm_request_params p;
    request_params(g, &p);
    struct mm_request *r;
    const int64_t n_prompt = prompt->n;
    enum mm_status st = mm_request_create(&p, prompt->ids, prompt->n, tiles, n_tiles, &r, err);
    *prompt = (struct mm_tokens){0}; /* the request owns the ids (and tiles) now */
    if (st != MM_OK)
        return st;
    if ((st = mm_scheduler_submit(s, r, err)) != MM_OK) {
        mm_request_release(r);
        return st;
    }
    const int32_t n = p.n;
    struct mm_tokens *ids = calloc((size_t)n, sizeof *ids);
    char **text = calloc((size_t)n, sizeof *text);
    size_t *len = calloc((size_t)n, sizeof *len);
    struct mm_event ev;
    struct mm_request_times times = {0};
    int64_t generated = 0;
    while (st == MM_OK && ids && text && len && mm_request_wait(r, &ev, -1)) {
        if (ev.kind == MM_EVENT_TOKEN)
            st = mm_tokens_push(&ids[ev.choice], ev.token, err);
        if (n == 1 && !g->print_ids) {
            fwrite(ev.text, 1, ev.len, stdout);
            fflush(stdout);
        } else if (ev.len) {
            char *t = realloc(text[ev.choice], len[ev.choice] + ev.len);
            if (!t) {
                st = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
                break;
            }
            memcpy(t + len[ev.choice], ev.text, ev.len);
            text[ev.choice] = t;
            len[ev.choice] += ev.len;
        }
        if (ev.kind == MM_EVENT_FINISH) {
            if (ev.finish == MM_FINISH_ERROR)
                st = mm_err_set(err, ev.status, "%s", ev.message);
            generated += ev.completion_tokens;
            times = ev.times;
            /* a final stop id / EOS has no token event: print it as --print-ids did */
            if (ev.finish == MM_FINISH_STOP && ev.completion_tokens > ids[ev.choice].n &&
                st == MM_OK)
                st = mm_tokens_push(&ids[ev.choice], -1, err);
        }
    }
    if (st == MM_OK && !ids)
        st = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    for (int32_t c = 0; st == MM_OK && c < n; c++) {
        if (g->print_ids) {
            for (int64_t i = 0; i < ids[c].n; i++)
                if (ids[c].ids[i] >= 0)
                    printf("%s%d", i ? " " : "", ids[c].ids[i]);
            printf("\n");
        } else if (n > 1) {
            printf("[%d] %.*s\n", c, (int)len[c], text[c] ? text[c] : "");
        } else {
            printf("\n");
        }
    }
    fflush(stdout); /* the text ends its line before the stats start theirs */
    if (st == MM_OK) {
        const double prefill = times.ttft_s, decode = times.total_s - times.ttft_s;
        const int64_t steps = generated / n > 0 ? generated / n - 1 : 0;
        fprintf(stderr,
                "prefill: %lld tokens in %.3f s (%.1f tok/s); generated %lld tokens "
                "(the first from the prefill); decode: %lld steps in %.3f s (%.1f tok/s)\n",
                (long long)n_prompt, prefill, prefill > 0 ? (double)n_prompt / prefill : 0.0,
                (long long)generated, (long long)steps, decode,
                steps && decode > 0 ? (double)steps / decode : 0.0);
    }
    for (int32_t c = 0; ids && c < n; c++)
        mm_tokens_free(&ids[c]);
    for (int32_t c = 0; text && c < n; c++)
        free(text[c]);
    free(ids);
    free(text);
    free(len);
    mm_request_release(r);
    return st;
}

/* ---- many prompts, concurrently ------------------------------------------------------ */

struct waker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool ready;
};

static void wake(void *user)
{
    struct waker *w = user;
    pthread_mutex_lock(&w->mu);
    w->ready = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

struct live {
    struct mm_request *r;
    int64_t prompt; /* index into the prompts */
    int finishes;
    double t_last;
};

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n). */
static double pct(const double *v, int64_t n, double q)
{
    if (n == 0)
        return 0;
    int64_t k = (int64_t)ceil(q / 100.0 * (double)n) - 1;
    return v[k < 0 ? 0 : k >= n ? n - 1 : k];
}

static void print_dist(const char *name, double *v, int64_t n, double scale, const char *unit)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += v[i];
    fprintf(stderr, "%-14s mean %8.2f  p50 %8.2f  p90 %8.2f  p99 %8.2f  max %8.2f %s\n", name,
            n ? sum / (double)n * scale : 0.0, pct(v, n, 50) * scale, pct(v, n, 90) * scale,
            pct(v, n, 99) * scale, n ? v[n - 1] * scale : 0.0, unit);
}

/* --requests R prompts from the file (cycled), --concurrency C at a time;
 * ids per request in input order with --print-ids; throughput and latency
 * percentiles on stderr. */
static enum mm_status run_many(struct mm_scheduler *s, const struct gen_args *g,
                               const struct mm_tokens *prompts, int64_t n_prompts,
                               struct mm_err *err)
{
    const int64_t total = g->requests ? g->requests : n_prompts;
    const int64_t C = g->concurrency;
    struct waker w = {.ready = false};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    struct live *live = calloc((size_t)C, sizeof *live);
    double *ttft = calloc((size_t)total * (size_t)g->n, sizeof *ttft);
    double *e2e = calloc((size_t)total, sizeof *e2e);
    double *queue = calloc((size_t)total, sizeof *queue);
    double *itl = NULL;
    int64_t n_itl = 0, cap_itl = 0, n_ttft = 0, n_done = 0, next = 0, prompt_tokens = 0,
            gen_tokens = 0;
    struct mm_tokens *out = g->print_ids ? calloc((size_t)total, sizeof *out) : NULL;
    enum mm_status st = live && ttft && e2e && queue && (out || !g->print_ids)
                            ? MM_OK
                            : mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    struct mm_request_params p;
    request_params(g, &p);
    struct mm_event evs[64];
    const double t0 = mm_cli_now();
    while (st == MM_OK && n_done < total) {
        for (int64_t i = 0; st == MM_OK && i < C; i++) {
            struct live *l = &live[i];
            if (!l->r && next < total) { /* start the next request */
                const struct mm_tokens *pr = &prompts[next % n_prompts];
                int32_t *ids = malloc((size_t)pr->n * sizeof *ids);
                if (!ids) {
                    st = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
                    break;
                }
                memcpy(ids, pr->ids, (size_t)pr->n * sizeof *ids);
                if ((st = mm_request_create(&p, ids, pr->n, NULL, 0, &l->r, err)) != MM_OK)
                    break;
                mm_request_set_notify(l->r, wake, &w);
                if ((st = mm_scheduler_submit(s, l->r, err)) != MM_OK) {
                    mm_err_prefix(err, "request %lld", (long long)next);
                    mm_request_release(l->r);
                    l->r = NULL;
                    break;
                }
                l->prompt = next++;
                l->finishes = 0;
                l->t_last = mm_cli_now();
                prompt_tokens += pr->n;
            }
            if (!l->r)
                continue;
            const int k = mm_request_take(l->r, evs, 64);
            const double now = mm_cli_now();
            for (int j = 0; j < k && st == MM_OK; j++) {
                const struct mm_event *ev = &evs[j];
                if (ev->kind == MM_EVENT_TOKEN) {
                    if (ev->index > 0) { /* inter-token gaps as the client sees them */
                        if (n_itl == cap_itl) {
                            cap_itl = cap_itl ? 2 * cap_itl : 4096;
                            double *ni = realloc(itl, (size_t)cap_itl * sizeof *ni);
                            if (!ni) {
                                st = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
                                break;
                            }
                            itl = ni;
                        }
                        itl[n_itl++] = now - l->t_last;
                    }
                    l->t_last = now;
                    if (out && ev->choice == 0)
                        st = mm_tokens_push(&out[l->prompt], ev->token, err);
                    continue;
                }
                if (ev->finish == MM_FINISH_ERROR)
                    st = mm_err_set(err, ev->status, "request %lld: %s", (long long)l->prompt,
                                    ev->message);
                gen_tokens += ev->completion_tokens;
                if (ev->completion_tokens > 0)
                    ttft[n_ttft++] = ev->times.ttft_s;
                if (++l->finishes == p.n) {
                    e2e[n_done] = ev->times.total_s;
                    queue[n_done] = ev->times.queue_s;
                    n_done++;
                }
            }
            if (l->r && l->finishes == p.n) {
                mm_request_set_notify(l->r, NULL, NULL);
                mm_request_release(l->r);
                l->r = NULL;
            }
        }
        /* sleep until the engine has news for someone (unless a request can start) */
        bool can_start = false;
        for (int64_t i = 0; i < C; i++)
            can_start = can_start || (!live[i].r && next < total);
        pthread_mutex_lock(&w.mu);
        if (!w.ready && !can_start && st == MM_OK && n_done < total)
            pthread_cond_wait(&w.cv, &w.mu);
        w.ready = false;
        pthread_mutex_unlock(&w.mu);
    }
    const double wall = mm_cli_now() - t0;
    for (int64_t i = 0; i < C; i++)
        if (live[i].r) {
            mm_request_set_notify(live[i].r, NULL, NULL);
            mm_request_cancel(live[i].r);
            mm_request_release(live[i].r);
        }
    if (st == MM_OK) {
        for (int64_t i = 0; out && i < total; i++) {
            for (int64_t k = 0; k < out[i].n; k++)
                printf("%s%d", k ? " " : "", out[i].ids[k]);
            printf("\n");
        }
        fflush(stdout);
        fprintf(stderr,
                "%lld requests (concurrency %lld, n %lld): %lld prompt + %lld generated tokens "
                "in %.3f s\n",
                (long long)total, (long long)C, (long long)g->n, (long long)prompt_tokens,
                (long long)gen_tokens, wall);
        fprintf(stderr, "throughput: %.2f requests/s, %.1f generated tok/s, %.1f total tok/s\n",
                (double)total / wall, (double)gen_tokens / wall,
                (double)(prompt_tokens + gen_tokens) / wall);
        print_dist("TTFT", ttft, n_ttft, 1e3, "ms");
        print_dist("inter-token", itl, n_itl, 1e3, "ms");
        print_dist("end-to-end", e2e, n_done, 1e3, "ms");
        print_dist("queue", queue, n_done, 1e3, "ms");
    }
    for (int64_t i = 0; out && i < total; i++)
        mm_tokens_free(&out[i]);
    free(out);
    free(live);
    free(ttft);
    free(e2e);
    free(queue);
    free(itl);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return st;
}

/* ---- the command ------------------------------------------------------------------------ */

static int run(const struct gen_args *g)
{
    struct mm_err err;
    struct mm_config cfg;
    struct mm_tokenizer *tok = NULL;
    struct mm_engine *e = NULL;
    struct mm_scheduler *s = NULL;
    struct mm_tokens prompt = {0}, *prompts = NULL;
    int64_t n_prompts = 0;
    float *tiles = NULL;
    int64_t n_tiles = 0;
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
    if (g->ids_file) {
        if (read_ids_file(g->ids_file, &prompts, &n_prompts, &err) != MM_OK)
            goto done;
    } else {
        if (build_prompt(g, &cfg, tok, &prompt, &tiles, &n_tiles, &err) != MM_OK)
            goto done;
        if (g->dump_prompt && write_ids(g->dump_prompt, &prompt, &err) != MM_OK)
            goto done;
        if (mm_prompt_check_tiles(&cfg, prompt.ids, prompt.n, n_tiles, &err) != MM_OK)
            goto done;
        prompts = &prompt;
        n_prompts = 1;
    }
    int64_t longest = 0;
    for (int64_t i = 0; i < n_prompts; i++)
        longest = prompts[i].n > longest ? prompts[i].n : longest;

    /* the engine: a slot per concurrent choice; positions for the longest
     * prompt plus the output; KV blocks from --kv-memory (0: every slot can
     * reach that length); steps of --prefill-chunk tokens (+ one tile, so an
     * image always fits, + a decode token per slot) */
    struct mm_engine_options opt;
    mm_engine_options_default(&opt);
    opt.backend = strcmp(g->backend, "cuda") == 0 ? MM_BACKEND_CUDA : MM_BACKEND_CPU;
    opt.n_threads = (int)g->threads;
    opt.max_seqs = (int32_t)(g->concurrency * g->n);
    opt.state_fp32 = strcmp(g->state, "fp32") == 0;
    opt.max_tiles = n_tiles > 0 ? n_tiles : 1;
    opt.max_context = longest + g->max_new + 1;
    opt.kv_memory = (size_t)g->kv_memory;
    /* a step: every running decode plus up to --prefill-chunk prompt tokens */
    const int64_t budget = (g->chunk ? g->chunk : longest) + opt.max_seqs;
    opt.max_tokens = budget + (n_tiles ? cfg.tokens_per_tile : 0);
    if (opt.max_seqs > MM_ENGINE_MAX_SEQS) {
        mm_err_set(&err, MM_ERR_INVALID, "--concurrency x --n must be at most %d",
                   MM_ENGINE_MAX_SEQS);
        goto done;
    }
    if (mm_engine_open(g->model, &opt, &e, &err) != MM_OK)
        goto done;
    if (g->dump && dump_logits(e, g, &prompt, tiles, &err) != MM_OK)
        goto done;
    struct mm_scheduler_options so;
    mm_scheduler_options_default(&so);
    so.max_queue = g->concurrency;
    so.max_batch_tokens = budget;
    if (mm_scheduler_create(e, tok, &so, &s, &err) != MM_OK)
        goto done;
    if (g->ids_file) {
        if (run_many(s, g, prompts, n_prompts, &err) != MM_OK)
            goto done;
    } else {
        float *t = tiles;
        tiles = NULL; /* the request takes the ids and tiles, even when it fails */
        if (stream_one(s, g, &prompt, t, n_tiles, &err) != MM_OK)
            goto done;
    }
    rc = 0;
done:
    if (rc)
        mm_cli_fail(&err);
    mm_scheduler_free(s, 0);
    mm_engine_close(e);
    mm_tokenizer_free(tok);
    mm_tokens_free(&prompt);
    for (int64_t i = 0; g->ids_file && i < n_prompts; i++)
        mm_tokens_free(&prompts[i]);
    if (g->ids_file)
        free(prompts);
    free(tiles);
    return rc;
}

int mm_cli_generate(const struct mm_cli_cmd *cmd, int argc, char **argv)
{
    struct gen_args g = {
        .backend = "cpu", .state = "fp32", .max_new = 16, .seed = -1, .n = 1, .concurrency = 1};
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
        MM_CLI_OPT_INT("prefill-chunk", "N",
                       "prefill N prompt tokens a step besides the decodes (0: a whole prompt)",
                       &g.chunk, 0, MM_ENGINE_MAX_TOKENS / 2),
        MM_CLI_OPT_CHOICE("state", "fp32|bf16", "recurrent-state precision", &g.state),
        MM_CLI_OPT_STRING("temperature", "T", "sampling temperature (default 0: greedy)",
                          &g.temperature),
        MM_CLI_OPT_INT("top-k", "K", "keep the K likeliest tokens (0: off)", &g.top_k, 0,
                       INT32_MAX),
        MM_CLI_OPT_STRING("top-p", "P", "nucleus: keep the likeliest tokens up to mass P",
                          &g.top_p),
        MM_CLI_OPT_STRING("min-p", "P", "keep tokens with p >= P x the likeliest's", &g.min_p),
        MM_CLI_OPT_STRING("repetition-penalty", "R", "divide seen tokens' logits by R", &g.rep_pen),
        MM_CLI_OPT_STRING("presence-penalty", "X", "subtract X from generated tokens' logits",
                          &g.pres_pen),
        MM_CLI_OPT_STRING("frequency-penalty", "X", "subtract X per use of a generated token",
                          &g.freq_pen),
        MM_CLI_OPT_INT("seed", "N", "sampling seed (-1: random)", &g.seed, -1, INT64_MAX),
        MM_CLI_OPT_INT("n", "N", "choices per prompt (prefilled once)", &g.n, 1,
                       MM_REQUEST_MAX_CHOICES),
        MM_CLI_OPT_LIST("stop", "TEXT", "stop string (not printed)", g.stops, MM_REQUEST_MAX_STOPS,
                        &g.n_stops),
        MM_CLI_OPT_INT("logprobs", "N", "compute the top N logprobs too (0..20)", &g.logprobs, 0,
                       MM_MAX_LOGPROBS),
        MM_CLI_OPT_STRING("prompt-ids-file", "FILE", "token-id prompts, one per line ('-': stdin)",
                          &g.ids_file),
        MM_CLI_OPT_INT("concurrency", "N", "requests in flight at once (--prompt-ids-file)",
                       &g.concurrency, 1, MM_ENGINE_MAX_SEQS),
        MM_CLI_OPT_INT("requests", "N", "requests to run (default: one per line, cycled)",
                       &g.requests, 0, 100000000),
        MM_CLI_OPT_INT("kv-memory", "BYTES",
                       "KV cache bytes (attention layers; 0: room for every sequence)",
                       &g.kv_memory, 0, INT64_MAX),
    };
    const char *pos[1];
    int n_pos;
    int rc = mm_cli_parse(cmd, opts, sizeof opts / sizeof opts[0], argc, argv, pos, 0, 0, &n_pos);
    if (rc < 0)
        rc = check_args(cmd, &g);
    return rc >= 0 ? rc : run(&g);
}
