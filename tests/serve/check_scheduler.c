/* check_scheduler.c: continuous batching (src/serve/scheduler.c) on the CPU
 * backend with tiny models: concurrent greedy requests (with images) give
 * exactly the tokens of one-at-a-time greedy decoding on a separate engine;
 * chunk budgets, preemption under KV exhaustion and batch composition do not
 * change outputs; long prefills do not stall decodes; cancellation frees
 * slots and blocks at once; full slots wait, a full queue is refused; n > 1;
 * stop ids, EOS and stop strings; UTF-8 never split; and a soak of random
 * requests with random cancellations (run it under ASan: no leak, every slot
 * and block free at the end). */
#include "serve/scheduler.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "model/image_preprocess.h"
#include "model/synthetic.h"
#include "serve/detokenizer.h"
#include "testutil.h"

enum { LINEAR = 0, HYBRID = 1, TEACHER = 2 };
static char dirs[3][256];
static const char *const presets[3] = {"tiny-linear", "tiny-hybrid", "tiny-teacher"};

static void setup(void)
{
    for (int p = 0; p < 3; p++)
        mm_test_synthetic_model(dirs[p], sizeof dirs[p], presets[p], 3);
}

static void teardown(void)
{
    for (int p = 0; p < 3; p++)
        mm_test_rmdir(dirs[p]);
}

static struct mm_engine *open_engine(int p, int32_t seqs, size_t kv_memory)
{
    struct mm_engine_options o;
    mm_engine_options_default(&o);
    o.n_threads = 2;
    o.max_seqs = seqs;
    o.max_tokens = 1024;
    o.max_tiles = 2;
    o.max_context = 2048;
    o.kv_memory = kv_memory;
    struct mm_engine *e;
    struct mm_err err;
    ck_assert_msg(mm_engine_open(dirs[p], &o, &e, &err) == MM_OK, "%s", err.msg);
    return e;
}

static struct mm_tokenizer *load_tok(int p)
{
    struct mm_tokenizer *tok;
    struct mm_err err;
    ck_assert_msg(mm_tokenizer_load_dir(dirs[p], &tok, &err) == MM_OK, "%s", err.msg);
    return tok;
}

static struct mm_scheduler *start(struct mm_engine *e, const struct mm_tokenizer *tok,
                                  int64_t budget, int64_t max_queue)
{
    struct mm_scheduler_options o;
    mm_scheduler_options_default(&o);
    o.max_batch_tokens = budget;
    o.max_queue = max_queue;
    struct mm_scheduler *s;
    struct mm_err err;
    ck_assert_msg(mm_scheduler_create(e, tok, &o, &s, &err) == MM_OK, "%s", err.msg);
    return s;
}

static uint32_t lcg(uint32_t *x)
{
    *x = *x * 1664525u + 1013904223u;
    return *x >> 8;
}

/* A prompt: BOS, text, optionally one image of `tiles` tiles in the middle. */
struct prompt {
    int32_t *ids;
    int64_t n;
    float *tiles;
    int64_t n_tiles;
};

static struct prompt make_prompt(const struct mm_config *cfg, int64_t n_text, int64_t tiles,
                                 uint32_t seed)
{
    struct prompt pr = {0};
    const int64_t img = tiles * cfg->tokens_per_tile;
    pr.n = n_text + (img ? img + 2 : 0);
    pr.ids = malloc((size_t)pr.n * sizeof *pr.ids);
    int64_t k = 0;
    uint32_t x = seed;
    for (int64_t i = 0; i < n_text; i++) {
        pr.ids[k++] = i == 0 ? 1 : (int32_t)(3 + lcg(&x) % 1000);
        if (i == n_text / 2 && img) {
            pr.ids[k++] = (int32_t)cfg->llm_vocab_size; /* <img> */
            for (int64_t j = 0; j < img; j++)
                pr.ids[k++] = (int32_t)cfg->img_context_token_id;
            pr.ids[k++] = (int32_t)cfg->llm_vocab_size + 1; /* </img> */
        }
    }
    pr.n_tiles = tiles;
    if (tiles) {
        const size_t nf =
            (size_t)tiles * 3 * (size_t)(cfg->force_image_size * cfg->force_image_size);
        pr.tiles = malloc(nf * sizeof *pr.tiles);
        for (size_t i = 0; i < nf; i++)
            pr.tiles[i] = (float)(sin(0.37 * (double)i + seed) * cos(0.011 * (double)i) * 2.0);
    }
    return pr;
}

/* Copies of a prompt for a request (which takes ownership). */
static struct mm_request *make_request(const struct prompt *pr, const struct mm_request_params *p)
{
    int32_t *ids = malloc((size_t)pr->n * sizeof *ids);
    memcpy(ids, pr->ids, (size_t)pr->n * sizeof *ids);
    float *tiles = NULL;
    if (pr->n_tiles) {
        const size_t nf = (size_t)pr->n_tiles * 3 * 448 * 448;
        tiles = malloc(nf * sizeof *tiles);
        memcpy(tiles, pr->tiles, nf * sizeof *tiles);
    }
    struct mm_request *r;
    struct mm_err err;
    ck_assert_msg(mm_request_create(p, ids, pr->n, tiles, pr->n_tiles, &r, &err) == MM_OK, "%s",
                  err.msg);
    return r;
}

static void free_prompt(struct prompt *pr)
{
    free(pr->ids);
    free(pr->tiles);
}

/* Strict UTF-8 validity (never a partial character). */
static bool valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        const unsigned c = s[i];
        size_t need;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF)
            need = 2;
        else if (c >= 0xE0 && c <= 0xEF)
            need = 3;
        else if (c >= 0xF0 && c <= 0xF4)
            need = 4;
        else
            return false;
        if (n - i < need)
            return false;
        for (size_t k = 1; k < need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
        i += need;
    }
    return true;
}

#define MAX_OUT 600
struct out_choice {
    int32_t ids[MAX_OUT];
    int n;
    char text[8192];
    size_t len;
    int n_events;
    enum mm_finish_reason finish;
    int64_t completion;
    float logprob[MAX_OUT];
};

struct result {
    struct out_choice ch[4];
    struct mm_request_times times;
};

/* Takes every event of r until its last FINISH. */
static void collect(struct mm_request *r, struct result *res)
{
    memset(res, 0, sizeof *res);
    struct mm_event ev;
    int finished = 0;
    while (finished < mm_request_n(r)) {
        ck_assert_msg(mm_request_wait(r, &ev, 60000), "no event within 60 s");
        struct out_choice *c = &res->ch[ev.choice];
        ck_assert_msg(valid_utf8((const unsigned char *)ev.text, ev.len), "split UTF-8");
        ck_assert_uint_le(c->len + ev.len, sizeof c->text);
        memcpy(c->text + c->len, ev.text, ev.len);
        c->len += ev.len;
        if (ev.kind == MM_EVENT_TOKEN) {
            ck_assert_int_eq(ev.index, c->n);
            ck_assert_int_lt(c->n, MAX_OUT);
            c->logprob[c->n] = ev.logprob;
            c->ids[c->n++] = ev.token;
            c->n_events++;
        } else {
            ck_assert_int_eq(c->finish, MM_FINISH_NONE);
            c->finish = ev.finish;
            c->completion = ev.completion_tokens;
            ck_assert_int_eq(ev.prompt_tokens, mm_request_prompt_tokens(r));
            res->times = ev.times;
            finished++;
        }
    }
    ck_assert(mm_request_done(r));
    ck_assert(!mm_request_poll(r, &ev)); /* nothing after the last FINISH */
}

/* One-at-a-time greedy decoding on a separate engine: the oracle. */
static int reference_greedy(struct mm_engine *e, const struct prompt *pr, int max_new, int32_t *out)
{
    const int64_t V = e->cfg.vocab_size;
    float *logits = malloc((size_t)V * sizeof *logits);
    int32_t slot;
    struct mm_err err;
    ck_assert_int_eq(mm_engine_slot_acquire(e, &slot, &err), MM_OK);
    struct mm_seq_step st = {slot, pr->ids, pr->n, pr->tiles, pr->n_tiles, true, false};
    ck_assert_msg(mm_engine_forward(e, &st, 1, logits, &err) == MM_OK, "%s", err.msg);
    int n = 0;
    for (;;) {
        int32_t best = 0;
        for (int64_t i = 1; i < V; i++)
            if (logits[i] > logits[best])
                best = (int32_t)i;
        out[n++] = best;
        if (n == max_new)
            break;
        st = (struct mm_seq_step){slot, &out[n - 1], 1, NULL, 0, true, true};
        ck_assert_msg(mm_engine_forward(e, &st, 1, logits, &err) == MM_OK, "%s", err.msg);
    }
    mm_engine_slot_release(e, slot);
    free(logits);
    return n;
}

static struct mm_request_params greedy(int64_t max_tokens)
{
    struct mm_request_params p;
    mm_request_params_default(&p);
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    return p;
}

static void wait_idle(struct mm_scheduler *s)
{
    for (int i = 0; i < 2000 && mm_scheduler_in_flight(s) > 0; i++)
        nanosleep(&(struct timespec){0, 5000000}, NULL);
    ck_assert_int_eq(mm_scheduler_in_flight(s), 0);
}

/* Every slot and block free (the gauges are published after each step). */
static void assert_all_free(struct mm_scheduler *s)
{
    wait_idle(s);
    struct mm_metrics_snapshot m;
    for (int i = 0; i < 400; i++) {
        mm_metrics_snapshot(mm_scheduler_metrics(s), &m);
        if (m.slots_used == 0 && m.kv_blocks_used[0] == 0 && m.kv_blocks_used[1] == 0 &&
            m.running == 0 && m.waiting == 0)
            return;
        nanosleep(&(struct timespec){0, 5000000}, NULL);
    }
    ck_abort_msg("slots %lld, blocks %lld/%lld, running %lld, waiting %lld still in use",
                 (long long)m.slots_used, (long long)m.kv_blocks_used[0],
                 (long long)m.kv_blocks_used[1], (long long)m.running, (long long)m.waiting);
}

/* N concurrent greedy requests of different lengths, some with an image,
 * through a scheduler of 8 slots and a given chunk budget == the oracle. */
static void run_against_reference(int p, int N, int64_t budget, size_t kv_memory,
                                  uint64_t *preemptions)
{
    struct mm_engine *ref = open_engine(p, 1, 0);
    struct mm_engine *e = open_engine(p, 8, kv_memory);
    struct mm_scheduler *s = start(e, NULL, budget, 64);
    struct prompt *pr = calloc((size_t)N, sizeof *pr);
    struct mm_request **r = calloc((size_t)N, sizeof *r);
    struct result *res = malloc(sizeof *res);
    int32_t want[128];
    struct mm_err err;
    for (int i = 0; i < N; i++) {
        pr[i] = make_prompt(&e->cfg, 5 + (i * 7) % 50, i % 5 == 2 ? 1 + (i % 2) : 0,
                            (uint32_t)(100 + i));
        const struct mm_request_params par = greedy(4 + i % 9 + (preemptions ? 100 : 0));
        r[i] = make_request(&pr[i], &par);
        ck_assert_msg(mm_scheduler_submit(s, r[i], &err) == MM_OK, "%s", err.msg);
    }
    for (int i = 0; i < N; i++) {
        collect(r[i], res);
        const int max_new = 4 + i % 9 + (preemptions ? 100 : 0);
        ck_assert_int_eq(res->ch[0].finish, MM_FINISH_LENGTH);
        ck_assert_int_eq(res->ch[0].n, max_new);
        ck_assert_int_eq(res->ch[0].completion, max_new);
        reference_greedy(ref, &pr[i], max_new, want);
        for (int k = 0; k < max_new; k++)
            ck_assert_msg(res->ch[0].ids[k] == want[k],
                          "%s N=%d budget %lld: request %d token %d: %d, alone %d", presets[p], N,
                          (long long)budget, i, k, res->ch[0].ids[k], want[k]);
        mm_request_release(r[i]);
        free_prompt(&pr[i]);
    }
    assert_all_free(s);
    struct mm_metrics_snapshot m;
    mm_metrics_snapshot(mm_scheduler_metrics(s), &m);
    ck_assert_uint_eq(m.requests_finished[MM_FINISH_LENGTH], (uint64_t)N);
    if (preemptions)
        *preemptions = m.preemptions;
    mm_scheduler_free(s, 1000);
    mm_engine_close(e);
    mm_engine_close(ref);
    free(pr);
    free(r);
    free(res);
}

/* Requests carrying 8-bit pixels (mm_request_create_pixels), several at
 * once so that one step normalises tiles of two prefills into the scratch
 * buffer, whole or in chunks: each == the oracle fed the floats
 * mm_image_tiles_unpack gives (what mm_image_preprocess would have made). */
START_TEST(test_pixel_tiles)
{
    const int p = _i % 2 ? HYBRID : LINEAR;
    struct mm_engine *ref = open_engine(p, 1, 0);
    struct mm_engine *e = open_engine(p, 8, 0);
    const int64_t tpt = e->cfg.tokens_per_tile, side = e->cfg.force_image_size;
    struct mm_scheduler *s = start(e, NULL, _i / 2 ? tpt + 8 : 0, 64);
    enum { N = 6 };
    struct prompt pr[N];
    struct mm_request *r[N];
    struct result *res = malloc(sizeof *res);
    int32_t want[16];
    struct mm_err err;
    const size_t tile_px = 3 * (size_t)side * (size_t)side;
    for (int i = 0; i < N; i++) {
        pr[i] = make_prompt(&e->cfg, 5 + 3 * i, i % 3 == 2 ? 0 : 1 + i % 2, (uint32_t)(40 + i));
        uint8_t *px = NULL;
        if (pr[i].n_tiles) { /* pixels; the prompt's floats become what they normalise to */
            px = malloc((size_t)pr[i].n_tiles * tile_px);
            uint32_t x = (uint32_t)(7 + i);
            for (size_t k = 0; k < (size_t)pr[i].n_tiles * tile_px; k++)
                px[k] = (uint8_t)(lcg(&x) >> 4);
            mm_image_tiles_unpack(px, pr[i].n_tiles, side, pr[i].tiles);
        }
        int32_t *ids = malloc((size_t)pr[i].n * sizeof *ids);
        memcpy(ids, pr[i].ids, (size_t)pr[i].n * sizeof *ids);
        const struct mm_request_params par = greedy(6 + i);
        ck_assert_int_eq(
            mm_request_create_pixels(&par, ids, pr[i].n, px, pr[i].n_tiles, &r[i], &err), MM_OK);
        ck_assert_msg(mm_scheduler_submit(s, r[i], &err) == MM_OK, "%s", err.msg);
    }
    for (int i = 0; i < N; i++) {
        collect(r[i], res);
        ck_assert_int_eq(res->ch[0].n, 6 + i);
        reference_greedy(ref, &pr[i], 6 + i, want);
        ck_assert_mem_eq(res->ch[0].ids, want, (size_t)(6 + i) * sizeof *want);
        mm_request_release(r[i]);
        free_prompt(&pr[i]);
    }
    assert_all_free(s);
    mm_scheduler_free(s, 1000);
    mm_engine_close(e);
    mm_engine_close(ref);
    free(res);
}
END_TEST

START_TEST(test_concurrent_equals_sequential)
{
    const int p = _i % 2 ? HYBRID : LINEAR;
    const int Ns[3] = {1, 7, 32};
    run_against_reference(p, Ns[_i / 2], 0, 0, NULL);
}
END_TEST

START_TEST(test_chunk_budgets)
{
    const int p = _i % 3;
    const int64_t budgets[2] = {16, 64};
    run_against_reference(p, 7, budgets[_i / 3], 0, NULL);
}
END_TEST

/* A KV pool far too small for 8 long sequences: the latest admitted are
 * preempted and resumed, and every output is still exact. */
START_TEST(test_kv_exhaustion_preempts_exactly)
{
    const int p = _i ? TEACHER : HYBRID;
    struct mm_engine *probe = open_engine(p, 1, 0);
    /* bytes of one block of each stack: per token per attention layer K and V */
    size_t pair = 0;
    for (int st = 0; st < 2; st++) {
        const struct mm_stack_config *sc = st ? &probe->cfg.llm : &probe->cfg.emb;
        int64_t mha = 0;
        for (int64_t l = 0; l < sc->num_layers; l++)
            mha += sc->kinds[l] == MM_LAYER_MHA;
        pair += (size_t)(mha * 2 * MM_KV_BLOCK * sc->kv_heads * sc->head_dim) * 4;
    }
    mm_engine_close(probe);
    uint64_t pre = 0;
    /* the largest sequence fits alone (2 tiles and 112 tokens: ~139
     * embedding-stack blocks "post", ~43 "pre"), all of them together do not */
    run_against_reference(p, 12, 64, (p == HYBRID ? 140 : 45) * pair, &pre);
    ck_assert_uint_gt(pre, 0);
}
END_TEST

/* Same seed, same tokens, whatever else runs in the batch; top_k 1 is greedy. */
START_TEST(test_seeded_independent_of_batch)
{
    struct mm_engine *e = open_engine(HYBRID, 8, 0);
    struct mm_scheduler *s = start(e, NULL, 64, 64);
    struct prompt pr = make_prompt(&e->cfg, 20, 0, 7);
    struct mm_request_params p = greedy(24);
    p.sample.temperature = 0.9f;
    p.sample.top_p = 0.95f;
    p.sample.top_k = 50;
    p.sample.min_p = 0.01f;
    p.sample.frequency_penalty = 0.3f;
    p.sample.repetition_penalty = 1.1f;
    p.sample.seed = 1234;
    p.has_seed = true;
    p.logprobs = true;
    struct result *alone = malloc(sizeof *alone), *busy = malloc(sizeof *busy);
    struct mm_err err;
    struct mm_request *r = make_request(&pr, &p);
    ck_assert_int_eq(mm_scheduler_submit(s, r, &err), MM_OK);
    collect(r, alone);
    mm_request_release(r);
    /* again among 6 others of different lengths and parameters */
    struct mm_request *others[6];
    struct prompt op[6];
    for (int i = 0; i < 6; i++) {
        op[i] = make_prompt(&e->cfg, 10 + 9 * i, i == 3, (uint32_t)(50 + i));
        struct mm_request_params q = greedy(10 + i);
        q.sample.temperature = (float)i * 0.3f;
        q.n = 1 + i % 2;
        others[i] = make_request(&op[i], &q);
        ck_assert_int_eq(mm_scheduler_submit(s, others[i], &err), MM_OK);
    }
    r = make_request(&pr, &p);
    ck_assert_int_eq(mm_scheduler_submit(s, r, &err), MM_OK);
    collect(r, busy);
    ck_assert_int_eq(alone->ch[0].n, 24);
    ck_assert_int_eq(busy->ch[0].n, 24);
    ck_assert_mem_eq(alone->ch[0].ids, busy->ch[0].ids, 24 * sizeof(int32_t));
    for (int k = 0; k < 24; k++) {
        ck_assert(alone->ch[0].logprob[k] == busy->ch[0].logprob[k]);
        ck_assert(alone->ch[0].logprob[k] <= 0);
    }
    mm_request_release(r);
    for (int i = 0; i < 6; i++) {
        collect(others[i], busy);
        mm_request_release(others[i]);
        free_prompt(&op[i]);
    }
    /* top_k = 1 with a temperature is the greedy oracle */
    struct mm_engine *ref = open_engine(HYBRID, 1, 0);
    int32_t want[24];
    reference_greedy(ref, &pr, 24, want);
    p.sample.top_k = 1;
    p.sample.frequency_penalty = 0;
    p.sample.repetition_penalty = 1;
    r = make_request(&pr, &p);
    ck_assert_int_eq(mm_scheduler_submit(s, r, &err), MM_OK);
    collect(r, busy);
    ck_assert_mem_eq(busy->ch[0].ids, want, 24 * sizeof(int32_t));
    mm_request_release(r);
    assert_all_free(s);
    mm_scheduler_free(s, 1000);
    mm_engine_close(e);
    mm_engine_close(ref);
    free_prompt(&pr);
    free(alone);
    free(busy);
}
END_TEST

/* n = 4: one prefill, four choices; greedy ones agree, seeded ones differ. */
START_TEST(test_n_choices)
{
    struct mm_engine *e = open_engine(_i ? HYBRID : LINEAR, 8, 0);
    struct mm_engine *ref = open_engine(_i ? HYBRID : LINEAR, 1, 0);
    struct mm_scheduler *s = start(e, NULL, 0, 64);
    struct prompt pr = make_prompt(&e->cfg, 30, 1, 9);
    struct mm_request_params p = greedy(16);
    p.n = 4;
    struct result *res = malloc(sizeof *res);
    struct mm_err err;
    struct mm_request *r = make_request(&pr, &p);
    ck_assert_int_eq(mm_scheduler_submit(s, r, &err), MM_OK);
    collect(r, res);
    mm_request_release(r);
    int32_t want[16];
    reference_greedy(ref, &pr, 16, want);
    for (int c = 0; c < 4; c++) {
        ck_assert_int_eq(res->ch[c].n, 16);
        ck_assert_mem_eq(res->ch[c].ids, want, sizeof want);
    }
    struct mm_metrics_snapshot m;
    mm_metrics_snapshot(mm_scheduler_metrics(s), &m);
    ck_assert_uint_eq(m.prompt_tokens, (uint64_t)pr.n); /* prefilled once */
    p.sample.temperature = 1.0f;
    p.sample.seed = 99;
    p.has_seed = true;
    r = make_request(&pr, &p);
    ck_assert_int_eq(mm_scheduler_submit(s, r, &err), MM_OK);
    collect(r, res);
    mm_request_release(r);
    for (int a = 0; a < 4; a++)
        for (int b = a + 1; b < 4; b++)
            ck_assert_msg(memcmp(res->ch[a].ids, res->ch[b].ids, 16 * sizeof(int32_t)) != 0,
                          "choices %d and %d drew the same tokens", a, b);
    assert_all_free(s);
    mm_scheduler_free(s, 1000);
    mm_engine_close(e);
    mm_engine_close(ref);
    free_prompt(&pr);
    free(res);
}
END_TEST

/* The order in which the engine thread notified requests. */
struct notify_log {
    pthread_mutex_t mu;
    int who[20000];
    bool done[20000];
    int n;
};
struct notify_arg {
    struct notify_log *log;
    int idx;
    struct mm_request *r;
};

static void on_notify(void *user)
{
    struct notify_arg *a = user;
    pthread_mutex_lock(&a->log->mu);
    if (a->log->n < 20000) {
        a->log->who[a->log->n] = a->idx;
        a->log->done[a->log->n++] = mm_request_done(a->r);
    }
    pthread_mutex_unlock(&a->log->mu);
}

/* A 900-token prompt prefilled in 64-token chunks: a running stream keeps
 * getting a token every step meanwhile. */
START_TEST(test_long_prefill_does_not_stall_decodes)
{
    struct mm_engine *e = open_engine(HYBRID, 4, 0);
    struct mm_scheduler *s = start(e, NULL, 64, 64);
    static struct notify_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
    log.n = 0;
    struct prompt a = make_prompt(&e->cfg, 10, 0, 1), b = make_prompt(&e->cfg, 900, 0, 2);
    struct mm_request_params pa = greedy(1000), pb = greedy(5); /* a outlasts b's prefill */
    struct mm_request *ra = make_request(&a, &pa), *rb = make_request(&b, &pb);
    struct notify_arg na = {&log, 0, ra}, nb = {&log, 1, rb};
    mm_request_set_notify(ra, on_notify, &na);
    mm_request_set_notify(rb, on_notify, &nb);
    struct mm_err err;
    ck_assert_int_eq(mm_scheduler_submit(s, ra, &err), MM_OK);
    struct mm_event ev;
    ck_assert(mm_request_wait(ra, &ev, 60000)); /* a is decoding */
    ck_assert_int_eq(mm_scheduler_submit(s, rb, &err), MM_OK);
    struct result *res = malloc(sizeof *res);
    collect(rb, res);
    ck_assert_int_eq(res->ch[0].n, 5);
    /* a was notified (one token each time) on every step of b's prefill */
    pthread_mutex_lock(&log.mu);
    int first_b = -1, a_before = 0;
    for (int i = 0; i < log.n && first_b < 0; i++) {
        if (log.who[i] == 1)
            first_b = i;
        else
            a_before++;
    }
    pthread_mutex_unlock(&log.mu);
    ck_assert_int_ge(first_b, 0);
    ck_assert_msg(a_before >= 900 / 64, "only %d tokens of a during the prefill", a_before);
    mm_request_cancel(ra);
    while (mm_request_wait(ra, &ev, 60000))
        ;
    ck_assert(mm_request_done(ra));
    mm_request_set_notify(ra, NULL, NULL);
    mm_request_release(ra);
    mm_request_release(rb);
    assert_all_free(s);
    mm_scheduler_free(s, 1000);
    mm_engine_close(e);
    free_prompt(&a);
    free_prompt(&b);
    free(res);
}
END_TEST

/* Cancelled mid-decode and mid-prefill: FINISH "cancelled" within a step,
 * and the slot and blocks are free. */
START_TEST(test_cancellation)
{
    struct mm_engine *e = open_engine(HYBRID, 2, 0);
    struct mm_scheduler *s = start(e, NULL, 16, 64);
    struct prompt a = make_prompt(&e->cfg, 10, 0, 1), b = make_prompt(&e->cfg, 1300, 1, 2);
    struct mm_request_params p = greedy(1000);
    struct mm_request *r = make_request(&a, &p);
    struct mm_err err;
    ck_assert_int_eq(mm_scheduler_submit(s, r, &err), MM_OK);
    struct mm_event ev;
    int seen = 0;
    while (seen < 3 && mm_request_wait(r, &ev, 60000))
        seen++;
    struct mm_metrics_snapshot m0, m1;
    mm_request_cancel(r);
    mm_metrics_snapshot(mm_scheduler_metrics(s), &m0); /* steps published by the cancel, or more */
    mm_request_cancel(r);                              /* idempotent */
    int64_t completion = -1;
    while (mm_request_wait(r, &ev, 60000))
        if (ev.kind == MM_EVENT_FINISH) {
            ck_assert_int_eq(ev.finish, MM_FINISH_CANCELLED);
            completion = ev.completion_tokens;
        }
    mm_metrics_snapshot(mm_scheduler_metrics(s), &m1);
    ck_assert_int_ge(completion, 3);
    /* the step running at the cancel may finish (and be published late); no
     * later one includes it (nothing else runs: no later step at all) */
    ck_assert_uint_le(m1.steps, m0.steps + 2);
    mm_request_release(r);
    assert_all_free(s);
    /* mid-prefill: 1300 + 256 image tokens in 16-token chunks; the client
     * drops its reference right after cancelling */
    p.max_tokens = 100; /* ~100 prefill steps of 16 tokens */
    r = make_request(&b, &p);
    ck_assert_msg(mm_scheduler_submit(s, r, &err) == MM_OK, "%s", err.msg);
    for (int i = 0; i < 2000; i++) {
        mm_metrics_snapshot(mm_scheduler_metrics(s), &m0);
        if (m0.steps >= m1.steps + 5)
            break;
        nanosleep(&(struct timespec){0, 2000000}, NULL);
    }
    ck_assert_uint_eq(m0.generation_tokens, m1.generation_tokens); /* still prefilling */
    mm_request_cancel(r);
    ck_assert(mm_request_wait(r, &ev, 60000));
    ck_assert_int_eq(ev.kind, MM_EVENT_FINISH);
    ck_assert_int_eq(ev.finish, MM_FINISH_CANCELLED);
    ck_assert_int_eq(ev.completion_tokens, 0);
    mm_request_release(r);
    assert_all_free(s);
    /* cancelled before the engine saw it, released at once */
    r = make_request(&a, &p);
    ck_assert_int_eq(mm_scheduler_submit(s, r, &err), MM_OK);
    mm_request_cancel(r);
    mm_request_release(r);
    assert_all_free(s);
    mm_metrics_snapshot(mm_scheduler_metrics(s), &m1);
    ck_assert_uint_eq(m1.requests_finished[MM_FINISH_CANCELLED], 3);
    mm_scheduler_free(s, 1000);
    mm_engine_close(e);
    free_prompt(&a);
    free_prompt(&b);
}
END_TEST

/* Two slots, three requests: the third waits for a slot, then runs. A full
 * queue is refused with MM_ERR_LIMIT; a draining scheduler with
 * MM_ERR_UNAVAILABLE; impossible requests with MM_ERR_INVALID. */
START_TEST(test_full_slots_and_queue)
{
    struct mm_engine *e = open_engine(LINEAR, 2, 0);
    struct mm_engine *ref = open_engine(LINEAR, 1, 0);
    struct mm_scheduler *s = start(e, NULL, 0, 3);
    static struct notify_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
    log.n = 0;
    struct prompt pr[3];
    struct mm_request *r[3];
    struct notify_arg na[3];
    struct mm_err err;
    for (int i = 0; i < 3; i++) {
        pr[i] = make_prompt(&e->cfg, 8 + i, 0, (uint32_t)(30 + i));
        const struct mm_request_params p = greedy(20);
        r[i] = make_request(&pr[i], &p);
        na[i] = (struct notify_arg){&log, i, r[i]};
        mm_request_set_notify(r[i], on_notify, &na[i]);
        ck_assert_int_eq(mm_scheduler_submit(s, r[i], &err), MM_OK);
    }
    ck_assert_int_eq(mm_scheduler_submit(s, r[0], &err), MM_ERR_INVALID); /* twice */
    struct result *res = malloc(sizeof *res);
    int32_t want[20];
    for (int i = 0; i < 3; i++) {
        collect(r[i], res);
        reference_greedy(ref, &pr[i], 20, want);
        ck_assert_mem_eq(res->ch[0].ids, want, sizeof want);
    }
    /* request 2 heard nothing before 0 or 1 was done */
    int first_done = -1, first_2 = -1;
    for (int i = 0; i < log.n; i++) {
        if (first_done < 0 && log.who[i] != 2 && log.done[i])
            first_done = i;
        if (first_2 < 0 && log.who[i] == 2)
            first_2 = i;
    }
    ck_assert_int_ge(first_done, 0);
    ck_assert_int_gt(first_2, first_done);
    for (int i = 0; i < 3; i++) {
        mm_request_set_notify(r[i], NULL, NULL);
        mm_request_release(r[i]);
    }
    /* queue of 3: two slots busy (admitted), three queued, the next refused */
    struct prompt big = make_prompt(&e->cfg, 8, 0, 5);
    const struct mm_request_params p = greedy(2000);
    struct mm_request *q[6];
    struct mm_event ev;
    for (int i = 0; i < 2; i++) {
        q[i] = make_request(&big, &p);
        ck_assert_int_eq(mm_scheduler_submit(s, q[i], &err), MM_OK);
        ck_assert(mm_request_wait(q[i], &ev, 60000)); /* admitted and decoding */
    }
    for (int i = 2; i < 5; i++) {
        q[i] = make_request(&big, &p);
        ck_assert_int_eq(mm_scheduler_submit(s, q[i], &err), MM_OK);
    }
    q[5] = make_request(&big, &p);
    ck_assert_int_eq(mm_scheduler_submit(s, q[5], &err), MM_ERR_LIMIT);
    ck_assert_ptr_nonnull(strstr(err.msg, "queue is full"));
    struct mm_metrics_snapshot m;
    for (int i = 0; i < 400; i++) { /* the gauges follow within a step */
        mm_metrics_snapshot(mm_scheduler_metrics(s), &m);
        if (m.slots_used == 2 && m.running == 2 && m.waiting == 3)
            break;
        nanosleep(&(struct timespec){0, 5000000}, NULL);
    }
    ck_assert_int_eq(m.slots_used, 2);
    ck_assert_int_eq(m.running, 2);
    ck_assert_int_eq(m.waiting, 3);
    /* over-long and malformed requests */
    struct prompt huge = make_prompt(&e->cfg, 2048, 0, 6);
    struct mm_request *bad = make_request(&huge, &p);
    ck_assert_int_eq(mm_scheduler_submit(s, bad, &err), MM_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "maximum context length"));
    mm_request_release(bad);
    struct mm_request_params pn = greedy(4);
    pn.n = 3; /* more choices than slots */
    bad = make_request(&big, &pn);
    ck_assert_int_eq(mm_scheduler_submit(s, bad, &err), MM_ERR_INVALID);
    mm_request_release(bad);
    big.ids[3] = 100000;
    bad = make_request(&big, &pn);
    ck_assert_int_eq(mm_scheduler_submit(s, bad, &err), MM_ERR_INVALID);
    mm_request_release(bad);
    big.ids[3] = (int32_t)e->cfg.img_context_token_id; /* an image token without tiles */
    pn.n = 1;
    bad = make_request(&big, &pn);
    ck_assert_int_eq(mm_scheduler_submit(s, bad, &err), MM_ERR_INVALID);
    mm_request_release(bad);
    pn.n_stop = 1;
    const char *stop[1] = {"x"};
    pn.stop = stop; /* no tokenizer */
    big.ids[3] = 7;
    bad = make_request(&big, &pn);
    ck_assert_int_eq(mm_scheduler_submit(s, bad, &err), MM_ERR_INVALID);
    mm_request_release(bad);
    /* draining: new work is refused, the rest is cancelled by free */
    mm_scheduler_drain(s);
    ck_assert_int_eq(mm_scheduler_submit(s, q[5], &err), MM_ERR_UNAVAILABLE);
    mm_request_release(q[5]);
    ck_assert_int_eq(mm_scheduler_in_flight(s), 5);
    mm_scheduler_free(s, 50);
    for (int i = 0; i < 5; i++) {
        ck_assert(mm_request_done(q[i]));
        int finishes = 0;
        while (mm_request_poll(q[i], &ev))
            if (ev.kind == MM_EVENT_FINISH) {
                ck_assert_int_eq(ev.finish, MM_FINISH_CANCELLED);
                finishes++;
            }
        ck_assert_int_eq(finishes, 1);
        mm_request_release(q[i]);
    }
    mm_engine_close(e);
    mm_engine_close(ref);
    for (int i = 0; i < 3; i++)
        free_prompt(&pr[i]);
    free_prompt(&big);
    free_prompt(&huge);
    free(res);
}
END_TEST

/* Greedy text with its per-token pieces, from a run without stops. */
static void greedy_text(struct mm_scheduler *s, const struct prompt *pr, int n, struct result *res)
{
    const struct mm_request_params p = greedy(n);
    struct mm_request *r = make_request(pr, &p);
    struct mm_err err;
    ck_assert_int_eq(mm_scheduler_submit(s, r, &err), MM_OK);
    collect(r, res);
    mm_request_release(r);
}

/* Stops: a stop string spanning two tokens ends the text right before it
 * and is never emitted; a stop id and EOS end a choice without text;
 * streamed text == one-shot decoding of the ids, never split UTF-8. */
START_TEST(test_stops_and_text)
{
    struct mm_engine *e = open_engine(LINEAR, 4, 0);
    struct mm_tokenizer *tok = load_tok(LINEAR);
    struct mm_scheduler *s = start(e, tok, 0, 64);
    struct result *res = malloc(sizeof *res), *got = malloc(sizeof *got);
    struct mm_err err;
    int tested_split = 0;
    for (uint32_t seed = 1; seed <= 12; seed++) {
        struct prompt pr = make_prompt(&e->cfg, 12, 0, seed);
        greedy_text(s, &pr, 60, res);
        const struct out_choice *c = &res->ch[0];
        char *want;
        size_t want_len;
        ck_assert_int_eq(mm_tokenizer_decode(tok, c->ids, c->n, &want, &want_len, &err), MM_OK);
        ck_assert_uint_eq(c->len, want_len);
        ck_assert_mem_eq(c->text, want, want_len);
        /* a stop string made of the end of one token's text and the start
         * of the next: decode prefixes to find where token k's text ends */
        for (int k = 5; k + 1 < c->n; k++) {
            char *a, *b;
            size_t al, bl;
            mm_tokenizer_decode(tok, c->ids, k, &a, &al, &err);
            mm_tokenizer_decode(tok, c->ids, k + 1, &b, &bl, &err);
            const bool boundary = al >= 2 && bl > al + 1 && strncmp(a, want, al) == 0 &&
                                  (unsigned char)want[al - 1] < 0x80 &&
                                  (unsigned char)want[al] < 0x80;
            free(a);
            free(b);
            if (!boundary)
                continue;
            char stop[3] = {want[al - 1], want[al], 0};
            const char *stops[1] = {stop};
            struct mm_request_params p = greedy(60);
            p.stop = stops;
            p.n_stop = 1;
            struct mm_request *r = make_request(&pr, &p);
            ck_assert_int_eq(mm_scheduler_submit(s, r, &err), MM_OK);
            collect(r, got);
            mm_request_release(r);
            const char *at = memmem(want, want_len, stop, 2);
            ck_assert_ptr_nonnull(at);
            ck_assert_int_eq(got->ch[0].finish, MM_FINISH_STOP);
            ck_assert_uint_eq(got->ch[0].len, (size_t)(at - want));
            ck_assert_mem_eq(got->ch[0].text, want, got->ch[0].len);
            tested_split++;
            break;
        }
        /* stop id: the 4th token; EOS = <|im_end|> unless ignore_eos */
        struct mm_request_params p = greedy(60);
        const int32_t sid = c->ids[3];
        int first = 0;
        while (c->ids[first] != sid)
            first++;
        p.stop_ids = &sid;
        p.n_stop_ids = 1;
        struct mm_request *r = make_request(&pr, &p);
        ck_assert_int_eq(mm_scheduler_submit(s, r, &err), MM_OK);
        collect(r, got);
        mm_request_release(r);
        ck_assert_int_eq(got->ch[0].finish, MM_FINISH_STOP);
        ck_assert_int_eq(got->ch[0].completion, first + 1);
        ck_assert_int_eq(got->ch[0].n, first); /* no TOKEN event for the stop id */
        free(want);
        free_prompt(&pr);
    }
    ck_assert_int_ge(tested_split, 3);
    /* the checkpoint's EOS (generation_config.json) is <|im_end|> */
    const int32_t im_end = mm_tokenizer_find(tok, "<|im_end|>");
    ck_assert_int_ge(im_end, 0);
    ck_assert(e->n_eos >= 1 && e->eos_ids[0] == im_end);
    mm_scheduler_free(s, 1000);
    mm_engine_close(e);
    mm_tokenizer_free(tok);
    free(res);
    free(got);
}
END_TEST

/* EOS ends a choice (its id counted, not emitted) unless ignore_eos: the
 * engine's EOS list is pointed at a token greedy decoding is known to
 * produce. */
START_TEST(test_eos)
{
    struct mm_engine *e = open_engine(LINEAR, 2, 0);
    struct mm_engine *ref = open_engine(LINEAR, 1, 0);
    struct prompt pr = make_prompt(&e->cfg, 12, 0, 4);
    int32_t want[30];
    reference_greedy(ref, &pr, 30, want);
    /* pretend the checkpoint's EOS is the greedy 6th token */
    e->eos_ids[0] = want[5];
    e->n_eos = 1;
    struct mm_scheduler *s = start(e, NULL, 0, 8);
    int first = 0;
    while (want[first] != want[5])
        first++;
    struct result *res = malloc(sizeof *res);
    struct mm_err err;
    struct mm_request_params p = greedy(30);
    p.ignore_eos = false;
    struct mm_request *r = make_request(&pr, &p);
    ck_assert_int_eq(mm_scheduler_submit(s, r, &err), MM_OK);
    collect(r, res);
    mm_request_release(r);
    ck_assert_int_eq(res->ch[0].finish, MM_FINISH_STOP);
    ck_assert_int_eq(res->ch[0].completion, first + 1);
    p.ignore_eos = true;
    r = make_request(&pr, &p);
    ck_assert_int_eq(mm_scheduler_submit(s, r, &err), MM_OK);
    collect(r, res);
    mm_request_release(r);
    ck_assert_int_eq(res->ch[0].finish, MM_FINISH_LENGTH);
    ck_assert_mem_eq(res->ch[0].ids, want, sizeof want);
    mm_scheduler_free(s, 1000);
    mm_engine_close(e);
    mm_engine_close(ref);
    free_prompt(&pr);
    free(res);
}
END_TEST

/* A backend whose status reports a failure when asked to: the CPU ops with
 * `status` replaced. */
static struct mm_backend_ops failing_ops;
static enum mm_status (*real_status)(void *ctx, struct mm_err *err);
static atomic_int fail_next;

static enum mm_status failing_status(void *ctx, struct mm_err *err)
{
    if (atomic_exchange(&fail_next, 0))
        return mm_err_set(err, MM_ERR_BACKEND, "injected device fault");
    return real_status(ctx, err);
}

/* A failed step fails its requests (FINISH "error" with the message), frees
 * their slots and blocks, and the engine goes on serving. */
START_TEST(test_backend_failure)
{
    struct mm_engine *e = open_engine(HYBRID, 4, 0);
    failing_ops = *e->be.ops;
    real_status = failing_ops.status;
    failing_ops.status = failing_status;
    e->be.ops = &failing_ops;
    struct mm_scheduler *s = start(e, NULL, 0, 8);
    struct prompt pr = make_prompt(&e->cfg, 20, 0, 3);
    const struct mm_request_params p = greedy(2000); /* long: still running at the fault */
    struct mm_request *a = make_request(&pr, &p), *b = make_request(&pr, &p);
    struct mm_err err;
    ck_assert_int_eq(mm_scheduler_submit(s, a, &err), MM_OK);
    ck_assert_int_eq(mm_scheduler_submit(s, b, &err), MM_OK);
    struct mm_event ev;
    struct mm_metrics_snapshot m;
    for (int i = 0; i < 10000; i++) { /* both decoding, then the fault */
        mm_metrics_snapshot(mm_scheduler_metrics(s), &m);
        if (m.running == 2 && m.generation_tokens >= 2)
            break;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    ck_assert_int_eq(m.running, 2);
    atomic_store(&fail_next, 1);
    for (int k = 0; k < 2; k++) {
        struct mm_request *r = k ? b : a;
        bool finished = false;
        while (mm_request_wait(r, &ev, 60000))
            if (ev.kind == MM_EVENT_FINISH) {
                ck_assert_int_eq(ev.finish, MM_FINISH_ERROR);
                ck_assert_int_eq(ev.status, MM_ERR_BACKEND);
                ck_assert_ptr_nonnull(strstr(ev.message, "injected device fault"));
                finished = true;
            }
        ck_assert(finished);
        mm_request_release(r);
    }
    assert_all_free(s);
    mm_metrics_snapshot(mm_scheduler_metrics(s), &m);
    ck_assert_uint_eq(m.step_errors, 1);
    ck_assert_uint_eq(m.requests_finished[MM_FINISH_ERROR], 2);
    /* and it still serves */
    struct result *res = malloc(sizeof *res);
    const struct mm_request_params q = greedy(5);
    a = make_request(&pr, &q);
    ck_assert_int_eq(mm_scheduler_submit(s, a, &err), MM_OK);
    collect(a, res);
    ck_assert_int_eq(res->ch[0].finish, MM_FINISH_LENGTH);
    mm_request_release(a);
    mm_scheduler_free(s, 1000);
    mm_engine_close(e);
    free_prompt(&pr);
    free(res);
}
END_TEST

struct soak_waker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool ready;
};

static void soak_wake(void *user)
{
    struct soak_waker *w = user;
    pthread_mutex_lock(&w->mu);
    w->ready = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Random requests with random parameters, cancellations and releases,
 * under KV pressure: every request ends with one FINISH per choice, and
 * at the end every slot and block is free (ASan: nothing leaks). */
START_TEST(test_soak)
{
    const int total = getenv("MM_SOAK_REQUESTS") ? atoi(getenv("MM_SOAK_REQUESTS")) : 2000;
    struct mm_engine *e;
    struct mm_tokenizer *tok = load_tok(HYBRID);
    /* a small pool: preemptions happen */
    struct mm_engine_options o;
    mm_engine_options_default(&o);
    o.n_threads = 1; /* sanitizer builds: no pool wake-ups per matmul */
    o.max_seqs = 8;
    o.max_tokens = 512;
    o.max_tiles = 1;
    o.max_context = 512;
    struct mm_err err;
    size_t pair = 0;
    {
        struct mm_config cfg;
        mm_synthetic_preset("tiny-hybrid", &cfg, &err);
        for (int st = 0; st < 2; st++) {
            const struct mm_stack_config *sc = st ? &cfg.llm : &cfg.emb;
            int64_t mha = 0;
            for (int64_t l = 0; l < sc->num_layers; l++)
                mha += sc->kinds[l] == MM_LAYER_MHA;
            pair += (size_t)(mha * 2 * MM_KV_BLOCK * sc->kv_heads * sc->head_dim) * 4;
        }
    }
    o.kv_memory = 72 * pair; /* an image prompt takes 65 embedding-stack blocks */
    ck_assert_int_eq(mm_engine_open(dirs[HYBRID], &o, &e, &err), MM_OK);
    struct mm_scheduler *s = start(e, tok, 48, 12);
    enum { LIVE = 24 }; /* 8 running, 12 queued, the rest refused now and then */
    static struct soak_waker w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
    struct mm_request *live[LIVE] = {0};
    int finishes[LIVE] = {0}, events[LIVE] = {0}, cancel_at[LIVE] = {0};
    int submitted = 0, done = 0, refused = 0, cancelled = 0;
    uint32_t x = 12345;
    const char *stop_pool[4] = {"a", "e ", "th", "\xc3\xa9"};
    struct mm_event evs[16];
    struct prompt img = make_prompt(&e->cfg, 6, 1, 77);
    while (done < total) {
        bool full = false; /* after a refusal, no more tries this round */
        for (int i = 0; i < LIVE; i++) {
            if (!live[i] && submitted < total && !full) {
                struct prompt pr;
                const bool with_img = lcg(&x) % 50 == 0;
                if (with_img)
                    pr = img;
                else
                    pr = make_prompt(&e->cfg, 2 + lcg(&x) % 40, 0, lcg(&x));
                struct mm_request_params p;
                mm_request_params_default(&p);
                p.max_tokens = 1 + lcg(&x) % 16;
                p.n = with_img ? 1 : 1 + (lcg(&x) % 4 == 0) * (int32_t)(lcg(&x) % 3);
                p.ignore_eos = lcg(&x) % 2;
                if (lcg(&x) % 2) {
                    p.sample.temperature = 0.5f + (float)(lcg(&x) % 100) / 100.0f;
                    p.sample.top_k = (int32_t)(lcg(&x) % 40);
                    p.sample.top_p = 0.5f + (float)(lcg(&x) % 50) / 100.0f;
                    p.sample.presence_penalty = 0.5f;
                }
                p.logprobs = lcg(&x) % 2;
                p.sample.n_logprobs = p.logprobs ? (int32_t)(lcg(&x) % 6) : 0;
                const char *stops[2] = {stop_pool[lcg(&x) % 4], stop_pool[lcg(&x) % 4]};
                p.stop = stops;
                p.n_stop = (int32_t)(lcg(&x) % 3);
                struct mm_request *r = make_request(&pr, &p);
                if (!with_img)
                    free_prompt(&pr);
                mm_request_set_notify(r, soak_wake, &w);
                const enum mm_status st = mm_scheduler_submit(s, r, &err);
                if (st == MM_ERR_LIMIT) {
                    refused++;
                    full = true;
                    mm_request_release(r);
                    continue;
                }
                ck_assert_msg(st == MM_OK, "%s", err.msg);
                submitted++;
                live[i] = r;
                finishes[i] = events[i] = 0;
                /* one in ten is cancelled at once (half of those also dropped
                 * at once, as a client that disconnects), one in ten after a
                 * few events */
                const uint32_t fate = lcg(&x) % 20;
                cancel_at[i] = fate < 2 ? 0 : fate < 4 ? 1 + (int)(lcg(&x) % 8) : -1;
                if (cancel_at[i] == 0) {
                    mm_request_cancel(r);
                    if (fate == 0) {
                        mm_request_release(r);
                        live[i] = NULL;
                        done++;
                        continue;
                    }
                }
            }
            if (!live[i])
                continue;
            const int k = mm_request_take(live[i], evs, 16);
            for (int j = 0; j < k; j++) {
                ck_assert(valid_utf8((const unsigned char *)evs[j].text, evs[j].len));
                if (evs[j].kind == MM_EVENT_FINISH) {
                    finishes[i]++;
                    ck_assert(evs[j].finish != MM_FINISH_ERROR);
                    cancelled += evs[j].finish == MM_FINISH_CANCELLED;
                }
            }
            events[i] += k;
            if (cancel_at[i] > 0 && events[i] >= cancel_at[i])
                mm_request_cancel(live[i]);
            if (finishes[i] == mm_request_n(live[i])) {
                ck_assert(!mm_request_poll(live[i], evs));
                mm_request_release(live[i]);
                live[i] = NULL;
                done++;
            }
        }
        /* until the engine has news (or a while, to retry a refused submission) */
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_nsec += 20000000;
        if (dl.tv_nsec >= 1000000000)
            dl.tv_sec++, dl.tv_nsec -= 1000000000;
        pthread_mutex_lock(&w.mu);
        if (!w.ready)
            pthread_cond_timedwait(&w.cv, &w.mu, &dl);
        w.ready = false;
        pthread_mutex_unlock(&w.mu);
    }
    assert_all_free(s);
    struct mm_metrics_snapshot m;
    mm_metrics_snapshot(mm_scheduler_metrics(s), &m);
    fprintf(stderr,
            "soak: %d requests, %d refused (queue full), %d cancelled, %llu preemptions, "
            "%llu steps, %llu tokens\n",
            total, refused, cancelled, (unsigned long long)m.preemptions,
            (unsigned long long)m.steps, (unsigned long long)m.generation_tokens);
    /* (preemptions depend on timing here; test_kv_exhaustion_preempts_exactly
     * forces them) */
    mm_scheduler_free(s, 1000);
    mm_engine_close(e);
    mm_tokenizer_free(tok);
    free_prompt(&img);
}
END_TEST

int main(void)
{
    const char *lvl = getenv("MMMAMBA_LOG");
    if (lvl && mm_log_parse_level(lvl) >= 0)
        mm_log_set_level((enum mm_log_level)mm_log_parse_level(lvl));
    Suite *s = suite_create("serve/scheduler");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_unchecked_fixture(tc, setup, teardown);
    if (getenv("MM_SOAK_ONLY")) {
        tcase_add_test(tc, test_soak);
        suite_add_tcase(s, tc);
        return mm_test_run(s);
    }
    tcase_add_loop_test(tc, test_concurrent_equals_sequential, 0, 6);
    tcase_add_loop_test(tc, test_chunk_budgets, 0, 6);
    tcase_add_loop_test(tc, test_kv_exhaustion_preempts_exactly, 0, 2);
    tcase_add_test(tc, test_seeded_independent_of_batch);
    tcase_add_loop_test(tc, test_n_choices, 0, 2);
    tcase_add_test(tc, test_long_prefill_does_not_stall_decodes);
    tcase_add_test(tc, test_cancellation);
    tcase_add_loop_test(tc, test_pixel_tiles, 0, 4);
    tcase_add_test(tc, test_full_slots_and_queue);
    tcase_add_test(tc, test_stops_and_text);
    tcase_add_test(tc, test_eos);
    tcase_add_test(tc, test_backend_failure);
    tcase_add_test(tc, test_soak);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
