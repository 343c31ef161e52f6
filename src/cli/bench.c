/* bench.c: `mmmamba bench`, a benchmark (never a test) of one model on one
 * backend: decode step time per batch size and context, prefill throughput,
 * memory per sequence and capacity, each figure next to the ceiling measured
 * in the same run (streaming read bandwidth, cuBLASLt bf16 GEMM rate).
 *
 * Design: it drives the engine as the server will: prefill steps that pack
 * several sequences up to the token budget, then decode steps of one token
 * per sequence whose next token is chosen by the backend's sampler (greedy),
 * so a step's time includes everything but the HTTP layer; only the chosen
 * ids cross to the host. Floors: decode = (weights streamed + SSM/conv state
 * read and written + KV read) / read bandwidth; prefill = GEMM FLOPs / GEMM
 * rate. */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "engine/cuda_backend.h"
#include "engine/engine.h"

struct bench {
    const char *model;
    enum mm_backend_kind backend;
    int device;    /* where single-engine figures run */
    int n_threads; /* CPU backend, per engine (0: all CPUs) */
    bool state_fp32;
    int64_t max_tokens, steps, max_prefill;
    double read_tbs, gemm_tflops;
    FILE *json;
    int n_json;
};

static int parse_list(const char *s, int64_t *out, int max)
{
    int n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && n < max;
         t = strtok_r(NULL, ",", &save)) {
        long long v;
        if (!mm_cli_parse_int(t, 1, 1LL << 24, &v))
            return -1;
        out[n++] = v;
    }
    return n;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Bytes one decode step streams whatever the batch: every layer's weights,
 * the final norm and the LM head, as bf16 (the embedding tables are
 * gathered row by row, the vision weights are not used). */
static double weight_bytes(const struct mm_engine *e)
{
    double n = (double)e->w.norm->numel + (double)e->w.output->numel;
    for (int s = 0; s < 2; s++) {
        const struct mm_stack_config *sc = s ? &e->cfg.llm : &e->cfg.emb;
        const struct mm_layer_weights *lw = s ? e->w.llm_layers : e->w.emb_layers;
        for (int64_t l = 0; l < sc->num_layers; l++) {
            const struct mm_tensor *t[] = {
                lw[l].attention_norm, lw[l].ffn_norm, lw[l].w1,     lw[l].w3,      lw[l].w2,
                lw[l].wvkqgdt,        lw[l].conv_w,   lw[l].conv_b, lw[l].dt_bias, lw[l].A_log,
                lw[l].gnorm,          lw[l].o_proj,   lw[l].wqkv,   lw[l].wo};
            for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
                n += t[i] ? (double)t[i]->numel : 0;
        }
    }
    return 2 * n;
}

/* Multiply-adds of the layer GEMMs per token (x2 = FLOPs), without the LM head. */
static double layer_flops(const struct mm_engine *e)
{
    double n = 0;
    for (int s = 0; s < 2; s++) {
        const struct mm_stack_config *sc = s ? &e->cfg.llm : &e->cfg.emb;
        const struct mm_layer_weights *lw = s ? e->w.llm_layers : e->w.emb_layers;
        for (int64_t l = 0; l < sc->num_layers; l++) {
            const struct mm_tensor *t[] = {lw[l].w1,     lw[l].w3,   lw[l].w2, lw[l].wvkqgdt,
                                           lw[l].o_proj, lw[l].wqkv, lw[l].wo};
            for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
                n += t[i] ? (double)t[i]->numel : 0;
        }
    }
    return 2 * n;
}

static struct mm_engine *open_engine(const struct bench *b, int32_t seqs, int64_t context,
                                     struct mm_err *err)
{
    struct mm_engine_options o;
    mm_engine_options_default(&o);
    o.backend = b->backend;
    o.device = b->device;
    o.n_threads = b->n_threads;
    o.max_seqs = seqs;
    o.max_tokens = b->max_tokens;
    o.max_tiles = 0;
    o.max_context = context;
    o.state_fp32 = b->state_fp32;
    struct mm_engine *e;
    return mm_engine_open(b->model, &o, &e, err) == MM_OK ? e : NULL;
}

/* The final activations the sampler reads (forward.c: "post" runs the LLM
 * stack on x_llm, "pre" on x_emb). */
static const struct mm_act *final_x(const struct mm_engine *e)
{
    return e->cfg.shuffle_loc == MM_SHUFFLE_POST ? e->x_llm : e->x_emb;
}

/* Prefills n_seq sequences (slots) to `len` tokens each, packing steps up to
 * the token budget; want_logits on the last chunk of each when `sample`. */
static enum mm_status prefill(struct mm_engine *e, const int32_t *slots, int n_seq, int64_t len,
                              int32_t *ids, struct mm_err *err)
{
    const int64_t budget = e->opt.max_tokens;
    struct mm_seq_step *st = calloc((size_t)n_seq, sizeof *st);
    int64_t *done = calloc((size_t)n_seq, sizeof *done);
    enum mm_status rc = st && done ? MM_OK : mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    int next = 0;
    while (rc == MM_OK && next < n_seq) {
        int n = 0;
        int64_t used = 0;
        for (int s = next; s < n_seq && used < budget; s++) {
            const int64_t k = len - done[s] < budget - used ? len - done[s] : budget - used;
            st[n++] = (struct mm_seq_step){.slot = slots[s], .ids = ids + done[s], .n = k};
            done[s] += k;
            used += k;
        }
        rc = mm_engine_forward(e, st, n, NULL, err);
        while (next < n_seq && done[next] == len)
            next++;
    }
    free(st);
    free(done);
    return rc;
}

static void json_row(struct bench *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void json_row(struct bench *b, const char *fmt, ...)
{
    if (!b->json)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(b->json, "%s\n    ", b->n_json++ ? "," : "");
    vfprintf(b->json, fmt, ap);
    va_end(ap);
}

/* Decode at batch B with every sequence at `ctx` tokens of context; the
 * median step time goes to *ms_out (may be NULL); printed and written to
 * the JSON only when `report`. */
static enum mm_status bench_decode(struct bench *b, struct mm_engine *e, int B, int64_t ctx,
                                   double *ms_out, bool report, struct mm_err *err)
{
    const int64_t V = e->cfg.llm_vocab_size;
    int32_t *slots = malloc((size_t)B * sizeof *slots);
    int32_t *prompt = malloc((size_t)ctx * sizeof *prompt),
            *next = malloc((size_t)B * sizeof *next);
    struct mm_seq_step *st = malloc((size_t)B * sizeof *st);
    struct mm_sample_req *req = malloc((size_t)B * sizeof *req);
    struct mm_sample_out *out = malloc((size_t)B * sizeof *out);
    double *t = malloc((size_t)(b->steps + 1) * sizeof *t);
    enum mm_status rc = MM_OK;
    int acquired = 0;
    if (!slots || !prompt || !next || !st || !req || !out || !t) {
        rc = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < ctx; i++)
        prompt[i] = (int32_t)(3 + (i * 7919) % (V - 3));
    for (; acquired < B; acquired++)
        if ((rc = mm_engine_slot_acquire(e, &slots[acquired], err)) != MM_OK)
            goto done;
    const double t0 = mm_cli_now();
    if ((rc = prefill(e, slots, B, ctx - 1, prompt, err)) != MM_OK)
        goto done;
    const double t_prefill = mm_cli_now() - t0;
    for (int s = 0; s < B; s++)
        next[s] = prompt[ctx - 1];
    const int warm = 3;
    for (int k = 0; k < warm + b->steps; k++) {
        for (int s = 0; s < B; s++) {
            st[s] =
                (struct mm_seq_step){.slot = slots[s], .ids = &next[s], .n = 1, .text_only = true};
            req[s] = (struct mm_sample_req){
                .row = s,
                .slot = slots[s],
                .counter = (uint32_t)k,
                .p = {.temperature = 0, .top_p = 1, .repetition_penalty = 1}};
        }
        const double a = mm_cli_now();
        if ((rc = mm_engine_forward(e, st, B, NULL, err)) != MM_OK)
            goto done;
        e->be.ops->sample(e->be.ctx, final_x(e), req, B, out);
        if (e->be.ops->status && (rc = e->be.ops->status(e->be.ctx, err)) != MM_OK)
            goto done;
        if (k >= warm)
            t[k - warm] = mm_cli_now() - a;
        for (int s = 0; s < B; s++)
            next[s] = out[s].id < V ? out[s].id : 3; /* keep it text */
    }
    const double ms = median(t, (int)b->steps) * 1e3;
    if (ms_out)
        *ms_out = ms;
    if (!report)
        goto done;
    const double wb = weight_bytes(e);
    const double sb = 2.0 * (double)B * (double)e->be.ops->slot_bytes(e->be.ctx);
    const double kvb = (double)B * (double)ctx * (double)mm_config_kv_elems_per_token(&e->cfg) * 2;
    const double floor_ms = (wb + sb + kvb) / (b->read_tbs * 1e12) * 1e3;
    printf("decode  B=%-5d ctx=%-7lld %9.3f ms/step %10.0f tok/s   floor %8.3f ms (w %.2f GB, "
           "state %.2f GB, KV %.2f GB)  %.2fx floor, %.0f%% of floor tok/s   [prefill %.1fs]\n",
           B, (long long)ctx, ms, B / ms * 1e3, floor_ms, wb / 1e9, sb / 1e9, kvb / 1e9,
           ms / floor_ms, floor_ms / ms * 100, t_prefill);
    fflush(stdout);
    json_row(b,
             "{\"kind\": \"decode\", \"batch\": %d, \"context\": %lld, \"ms_per_step\": %.4f, "
             "\"tok_per_s\": %.1f, \"floor_ms\": %.4f, \"ratio_to_floor\": %.3f, "
             "\"weight_bytes\": %.0f, \"state_bytes\": %.0f, \"kv_bytes\": %.0f}",
             B, (long long)ctx, ms, B / ms * 1e3, floor_ms, ms / floor_ms, wb, sb, kvb);
done:
    for (int s = 0; s < acquired; s++)
        mm_engine_slot_release(e, slots[s]);
    free(slots);
    free(prompt);
    free(next);
    free(st);
    free(req);
    free(out);
    free(t);
    return rc;
}

/* One sequence of len prompt tokens, in chunks of the token budget. */
static enum mm_status bench_prefill(struct bench *b, struct mm_engine *e, int64_t len,
                                    struct mm_err *err)
{
    const int64_t V = e->cfg.llm_vocab_size;
    int32_t *prompt = malloc((size_t)len * sizeof *prompt), slot;
    float *logits = malloc((size_t)e->cfg.vocab_size * sizeof *logits);
    enum mm_status rc = MM_OK;
    if (!prompt || !logits) {
        rc = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < len; i++)
        prompt[i] = (int32_t)(3 + (i * 104729) % (V - 3));
    double best = INFINITY;
    for (int rep = 0; rep < 2; rep++) { /* the first run warms up */
        if ((rc = mm_engine_slot_acquire(e, &slot, err)) != MM_OK)
            goto done;
        const double t0 = mm_cli_now();
        for (int64_t i = 0; i < len && rc == MM_OK; i += e->opt.max_tokens) {
            const int64_t k = len - i < e->opt.max_tokens ? len - i : e->opt.max_tokens;
            const struct mm_seq_step st = {
                .slot = slot, .ids = prompt + i, .n = k, .want_logits = i + k == len};
            rc = mm_engine_forward(e, &st, 1, logits, err);
        }
        const double dt = mm_cli_now() - t0;
        mm_engine_slot_release(e, slot);
        if (rc != MM_OK)
            goto done;
        best = dt < best ? dt : best;
    }
    const double tps = (double)len / best;
    const double fl = layer_flops(e);
    printf("prefill len=%-7lld %9.1f ms %10.0f tok/s   %.2f GFLOP/token (layer GEMMs)  %.1f%% of "
           "the GEMM rate\n",
           (long long)len, best * 1e3, tps, fl / 1e9, tps * fl / (b->gemm_tflops * 1e12) * 100);
    fflush(stdout);
    json_row(b,
             "{\"kind\": \"prefill\", \"tokens\": %lld, \"ms\": %.3f, \"tok_per_s\": %.1f, "
             "\"gflop_per_token\": %.3f, \"fraction_of_gemm_peak\": %.4f}",
             (long long)len, best * 1e3, tps, fl / 1e9, tps * fl / (b->gemm_tflops * 1e12));
done:
    free(prompt);
    free(logits);
    return rc;
}

/* One engine of the scaling run: opens its engine on its device from its
 * own thread (the thread that drives a GPU owns it), decodes, closes. */
struct scale_job {
    struct bench b; /* a copy with this device; no JSON */
    int32_t batch;
    int64_t ctx;
    double ms;
    enum mm_status st;
    struct mm_err err;
    pthread_t thread;
};

static void *scale_one(void *arg)
{
    struct scale_job *j = arg;
    struct mm_engine *e = open_engine(&j->b, j->batch, j->ctx + j->b.steps + 8, &j->err);
    j->st = e ? bench_decode(&j->b, e, j->batch, j->ctx, &j->ms, false, &j->err) : j->err.status;
    mm_engine_close(e);
    return NULL;
}

/* Data-parallel scaling: the same decode point on every device at once (one
 * engine and thread each, as the daemon runs them), against one device. */
static enum mm_status bench_scaling(struct bench *b, const int *devices, int n, int32_t batch,
                                    int64_t ctx, struct mm_err *err)
{
    struct scale_job *jobs = calloc((size_t)n, sizeof *jobs);
    if (!jobs)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    enum mm_status st = MM_OK;
    double one = 0, sum = 0, worst = 0;
    for (int round = 0; round < 2 && st == MM_OK; round++) { /* 0: the first device alone */
        const int k = round == 0 ? 1 : n;
        int started = 0;
        for (int i = 0; i < k; i++) {
            jobs[i] = (struct scale_job){.b = *b, .batch = batch, .ctx = ctx};
            jobs[i].b.json = NULL;
            jobs[i].b.device = devices[i];
            if (pthread_create(&jobs[i].thread, NULL, scale_one, &jobs[i]) != 0) {
                st = mm_err_set(err, MM_ERR_NOMEM, "cannot start a thread");
                break;
            }
            started++;
        }
        for (int i = 0; i < started; i++)
            pthread_join(jobs[i].thread, NULL);
        for (int i = 0; i < started && st == MM_OK; i++)
            if (jobs[i].st != MM_OK) {
                *err = jobs[i].err;
                st = jobs[i].st;
            }
        if (st != MM_OK)
            break;
        if (round == 0) {
            one = batch / jobs[0].ms * 1e3;
            continue;
        }
        for (int i = 0; i < n; i++) {
            sum += batch / jobs[i].ms * 1e3;
            worst = jobs[i].ms > worst ? jobs[i].ms : worst;
        }
    }
    if (st == MM_OK) {
        printf("scaling B=%-5d ctx=%-7lld 1 device %10.0f tok/s; %d devices at once %10.0f tok/s "
               "(slowest %.3f ms/step): %.2fx\n",
               batch, (long long)ctx, one, n, sum, worst, sum / one);
        json_row(b,
                 "{\"kind\": \"scaling\", \"batch\": %d, \"context\": %lld, \"devices\": %d, "
                 "\"tok_per_s_one\": %.1f, \"tok_per_s_all\": %.1f, \"speedup\": %.3f}",
                 batch, (long long)ctx, n, one, sum, sum / one);
    }
    free(jobs);
    return st;
}

int mm_cli_bench(const struct mm_cli_cmd *cmd, int argc, char **argv)
{
    const char *model = NULL, *backend = "cuda", *state = "bf16", *batches = "1,8,64,256",
               *contexts = "1024,100000", *prefills = "1024,8192,32768", *json = NULL,
               *devices = "0";
    long long steps = 20, max_tokens = 8192, max_prefill = 300000, capacity = 4096;
    const struct mm_cli_opt opts[] = {
        MM_CLI_OPT_STRING("model", "DIR", "checkpoint (required)", &model),
        MM_CLI_OPT_CHOICE("backend", "cuda|cuda-fp32|cpu", "compute backend", &backend),
        MM_CLI_OPT_CHOICE("state", "bf16|fp32", "SSM state precision", &state),
        MM_CLI_OPT_STRING("batches", "LIST", "decode batch sizes", &batches),
        MM_CLI_OPT_STRING("contexts", "LIST", "decode contexts (tokens per sequence)", &contexts),
        MM_CLI_OPT_INT("max-prefill", "N",
                       "skip a decode point whose batch x context exceeds N tokens", &max_prefill,
                       1, 1LL << 30),
        MM_CLI_OPT_STRING("prefill", "LIST", "prompt lengths for prefill throughput", &prefills),
        MM_CLI_OPT_INT("steps", "N", "timed decode steps (median)", &steps, 1, 10000),
        MM_CLI_OPT_INT("max-tokens", "N", "token budget of a step (prefill chunk)", &max_tokens, 1,
                       1 << 20),
        MM_CLI_OPT_INT("capacity", "N",
                       "sequences to open at once for the capacity check (0: skip)", &capacity, 0,
                       MM_ENGINE_MAX_SEQS),
        MM_CLI_OPT_STRING("json", "FILE", "also write the results as JSON", &json),
        MM_CLI_OPT_STRING("devices", "LIST",
                          "CUDA devices (the first runs the single-device figures); with two or "
                          "more, each decode point also runs on all at once (data-parallel "
                          "scaling). cpu: N engines sharing the cores",
                          &devices),
    };
    const char *pos[1];
    int n_pos;
    const int rc =
        mm_cli_parse(cmd, opts, sizeof opts / sizeof opts[0], argc, argv, pos, 0, 0, &n_pos);
    if (rc >= 0)
        return rc;
    if (!model)
        return mm_cli_usage_error(cmd, "--model is required");
    int64_t bl[16], cl[16], pl[16];
    const int nb = parse_list(batches, bl, 16), nc = parse_list(contexts, cl, 16),
              np = parse_list(prefills, pl, 16);
    if (nb < 0 || nc < 0 || np < 0)
        return mm_cli_usage_error(cmd, "lists are comma-separated positive integers");
    struct bench b = {.model = model,
                      .backend = strcmp(backend, "cuda") == 0        ? MM_BACKEND_CUDA
                                 : strcmp(backend, "cuda-fp32") == 0 ? MM_BACKEND_CUDA_FP32
                                                                     : MM_BACKEND_CPU,
                      .state_fp32 = strcmp(state, "fp32") == 0,
                      .max_tokens = max_tokens,
                      .steps = steps,
                      .max_prefill = max_prefill};
    int dev[16], n_dev = 0;
    {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", devices);
        for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            long long v;
            if (n_dev == 16 || !mm_cli_parse_int(t, 0, 1023, &v))
                return mm_cli_usage_error(cmd, "--devices is a comma-separated list of indices");
            dev[n_dev++] = (int)v;
        }
        if (n_dev == 0)
            return mm_cli_usage_error(cmd, "--devices is a comma-separated list of indices");
        if (b.backend == MM_BACKEND_CPU) { /* N engines sharing the cores */
            const int k = n_dev == 1 ? (dev[0] > 1 ? dev[0] : 1) : n_dev;
            for (int i = 0; i < k && i < 16; i++)
                dev[i] = i;
            n_dev = k < 16 ? k : 16;
            const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
            b.n_threads = n_dev > 1 ? (int)(cpus / n_dev > 0 ? cpus / n_dev : 1) : 0;
        }
        b.device = dev[0];
    }
    struct mm_err err;
    if (b.backend != MM_BACKEND_CPU && mm_cuda_measure(&b.read_tbs, &b.gemm_tflops, &err) != MM_OK)
        return mm_cli_fail(&err);
    if (b.backend == MM_BACKEND_CPU)
        b.read_tbs = 0.05, b.gemm_tflops = 1; /* nominal: the CPU has no measured ceilings here */
    printf("ceilings (measured now): read %.3f TB/s, bf16 GEMM %.1f TFLOP/s\n", b.read_tbs,
           b.gemm_tflops);
    if (json && !(b.json = fopen(json, "w"))) {
        mm_err_set(&err, MM_ERR_IO, "%s: cannot write", json);
        return mm_cli_fail(&err);
    }
    if (b.json)
        fprintf(b.json,
                "{\"model\": \"%s\", \"backend\": \"%s\", \"state\": \"%s\", "
                "\"read_tbs\": %.4f, \"gemm_tflops\": %.2f, \"results\": [",
                model, backend, state, b.read_tbs, b.gemm_tflops);
    int status = 0;
    /* prefill throughput, one sequence */
    int64_t longest = 1;
    for (int i = 0; i < np; i++)
        longest = pl[i] > longest ? pl[i] : longest;
    struct mm_engine *e = np > 0 ? open_engine(&b, 1, longest + 1, &err) : NULL;
    if (np > 0 && !e)
        status = mm_cli_fail(&err);
    for (int i = 0; e && i < np && !status; i++)
        if (bench_prefill(&b, e, pl[i], &err) != MM_OK)
            status = mm_cli_fail(&err);
    mm_engine_close(e);
    /* decode, per context: one engine sized for the largest batch that runs */
    for (int c = 0; c < nc && !status; c++) {
        int32_t maxb = 0;
        for (int i = 0; i < nb; i++)
            if (bl[i] * cl[c] <= b.max_prefill && bl[i] > maxb)
                maxb = (int32_t)bl[i];
        if (maxb == 0)
            continue;
        e = open_engine(&b, maxb, cl[c] + b.steps + 8, &err);
        if (!e) {
            status = mm_cli_fail(&err);
            break;
        }
        for (int i = 0; i < nb && !status; i++)
            if (bl[i] * cl[c] <= b.max_prefill &&
                bench_decode(&b, e, (int)bl[i], cl[c], NULL, true, &err) != MM_OK)
                status = mm_cli_fail(&err);
        mm_engine_close(e);
    }
    /* data-parallel scaling: every decode point on all devices at once */
    for (int c = 0; c < nc && !status && n_dev > 1; c++)
        for (int i = 0; i < nb && !status; i++)
            if (bl[i] * cl[c] <= b.max_prefill &&
                bench_scaling(&b, dev, n_dev, (int32_t)bl[i], cl[c], &err) != MM_OK)
                status = mm_cli_fail(&err);
    /* capacity: open `capacity` sequences at once and decode one step with all of them */
    if (capacity > 0 && !status) {
        e = open_engine(&b, (int32_t)capacity, 256, &err);
        if (!e) {
            printf("capacity: %lld sequences do not fit: %s\n", capacity, err.msg);
        } else {
            const double per = (double)e->be.ops->slot_bytes(e->be.ctx);
            const double formula = (double)mm_config_state_elems(&e->cfg) * (b.state_fp32 ? 4 : 2);
            printf("capacity: %lld sequences held at once; %.2f MB per sequence (state %.2f MB by "
                   "MODEL.md 3.6 + token counts)\n",
                   capacity, per / 1e6, formula / 1e6);
            json_row(&b,
                     "{\"kind\": \"capacity\", \"sequences\": %lld, \"bytes_per_sequence\": %.0f, "
                     "\"state_bytes_formula\": %.0f}",
                     capacity, per, formula);
            if (bench_decode(&b, e, (int)capacity, 16, NULL, true, &err) != MM_OK)
                status = mm_cli_fail(&err);
            mm_engine_close(e);
        }
    }
    if (b.json) {
        fprintf(b.json, "\n  ]}\n");
        fclose(b.json);
    }
    return status;
}
