/* check_state_cache.c: the state cache (src/serve/state_cache.c and its use
 * in src/serve/snapshots.c) with tiny models: a request that starts from a
 * snapshot gives exactly the greedy tokens of a cold run (a scheduler with
 * no cache on its own engine) for linear, hybrid (KV blocks shared with
 * copy-on-write) and teacher models; multi-turn continuations hit the
 * snapshot taken when the previous answer finished; hits at 1, 17 and 1000
 * tokens, inside and right after an image, never across different images
 * with the same ids; penalties after a hit; the host tier alone, eviction
 * from slots to host RAM and back, and a full miss; concurrent
 * continuations of one prefix; memory bounds under a flood; pinned entries
 * survive eviction pressure. On the CPU backend always; the same on the
 * CUDA backend (fp32, the exactness mode) when a GPU is present. */
#include "serve/state_cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/cuda_backend.h"
#include "model/image_preprocess.h"
#include "model/synthetic.h"
#include "serve/scheduler.h"
#include "testutil.h"

enum { LINEAR = 0, HYBRID = 1, TEACHER = 2 };
static char dirs[3][256];
static const char *const presets[3] = {"tiny-linear", "tiny-hybrid", "tiny-teacher"};
static enum mm_backend_kind backend = MM_BACKEND_CPU;

static void setup(void)
{
    for (int p = 0; p < 3; p++)
        mm_test_synthetic_model(dirs[p], sizeof dirs[p], presets[p], 5);
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
    o.backend = backend;
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

/* A scheduler; host NULL: no state cache (the cold reference). */
static struct mm_scheduler *start(struct mm_engine *e, struct mm_state_cache *host, bool gpu)
{
    struct mm_scheduler_options o;
    mm_scheduler_options_default(&o);
    o.max_queue = 256;
    o.state_cache = host;
    o.state_cache_gpu = gpu;
    struct mm_scheduler *s;
    struct mm_err err;
    ck_assert_msg(mm_scheduler_create(e, NULL, &o, &s, &err) == MM_OK, "%s", err.msg);
    return s;
}

static struct mm_state_cache *host_tier(size_t bytes)
{
    struct mm_state_cache *c;
    struct mm_err err;
    ck_assert_int_eq(mm_state_cache_create(bytes, &c, &err), MM_OK);
    return c;
}

static uint32_t lcg(uint32_t *x)
{
    *x = *x * 1664525u + 1013904223u;
    return *x >> 8;
}

/* A growable prompt: ids and the tiles of its image runs. */
struct prompt {
    int32_t ids[4096];
    int64_t n;
    float *tiles;
    int64_t n_tiles;
};

static size_t tile_floats(const struct mm_config *cfg)
{
    return 3 * (size_t)(cfg->force_image_size * cfg->force_image_size);
}

static void add_text(struct prompt *pr, int64_t n, uint32_t seed)
{
    uint32_t x = seed;
    for (int64_t i = 0; i < n; i++) {
        ck_assert_int_lt(pr->n, 4096);
        const int32_t id = pr->n == 0 ? 1 : (int32_t)(3 + lcg(&x) % 1000);
        pr->ids[pr->n++] = id;
    }
}

static void add_ids(struct prompt *pr, const int32_t *ids, int64_t n)
{
    ck_assert_int_le(pr->n + n, 4096);
    memcpy(pr->ids + pr->n, ids, (size_t)n * sizeof *ids);
    pr->n += n;
}

/* One tile's run of image-context ids, its pixels from seed. */
static void add_tile(struct prompt *pr, const struct mm_config *cfg, uint32_t seed)
{
    for (int64_t i = 0; i < cfg->tokens_per_tile; i++)
        pr->ids[pr->n++] = (int32_t)cfg->img_context_token_id;
    const size_t tf = tile_floats(cfg);
    pr->tiles = realloc(pr->tiles, (size_t)(pr->n_tiles + 1) * tf * sizeof *pr->tiles);
    float *t = pr->tiles + (size_t)pr->n_tiles * tf;
    uint32_t x = seed * 2654435761u + 7;
    for (size_t i = 0; i < tf; i++)
        t[i] = (float)((int32_t)(lcg(&x) % 2001) - 1000) / 500.0f;
    pr->n_tiles++;
}

static void copy_prompt(struct prompt *dst, const struct prompt *src, const struct mm_config *cfg)
{
    memcpy(dst->ids, src->ids, (size_t)src->n * sizeof *src->ids);
    dst->n = src->n;
    dst->n_tiles = src->n_tiles;
    dst->tiles = NULL;
    if (src->n_tiles) {
        const size_t nf = (size_t)src->n_tiles * tile_floats(cfg);
        dst->tiles = malloc(nf * sizeof *dst->tiles);
        memcpy(dst->tiles, src->tiles, nf * sizeof *dst->tiles);
    }
}

static struct mm_request *make_request(const struct prompt *pr, const struct mm_config *cfg,
                                       const struct mm_request_params *p)
{
    int32_t *ids = malloc((size_t)pr->n * sizeof *ids);
    memcpy(ids, pr->ids, (size_t)pr->n * sizeof *ids);
    float *tiles = NULL;
    if (pr->n_tiles) {
        const size_t nf = (size_t)pr->n_tiles * tile_floats(cfg);
        tiles = malloc(nf * sizeof *tiles);
        memcpy(tiles, pr->tiles, nf * sizeof *tiles);
    }
    struct mm_request *r;
    struct mm_err err;
    ck_assert_msg(mm_request_create(p, ids, pr->n, tiles, pr->n_tiles, &r, &err) == MM_OK, "%s",
                  err.msg);
    return r;
}

static struct mm_request_params greedy(int64_t max_tokens)
{
    struct mm_request_params p;
    mm_request_params_default(&p);
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    return p;
}

struct out {
    int32_t ids[256];
    int n;
    int64_t cached;
};

/* Takes every event of r (n = 1) until its FINISH. */
static void collect(struct mm_request *r, struct out *o)
{
    memset(o, 0, sizeof *o);
    struct mm_event ev;
    for (;;) {
        ck_assert_msg(mm_request_wait(r, &ev, 120000), "no event within 120 s");
        if (ev.kind == MM_EVENT_TOKEN) {
            ck_assert_int_lt(o->n, 256);
            o->ids[o->n++] = ev.token;
            continue;
        }
        ck_assert_msg(ev.finish == MM_FINISH_LENGTH, "finish %s: %s",
                      mm_finish_reason_str(ev.finish), ev.message);
        o->cached = ev.cached_tokens;
        break;
    }
}

static void run_params(struct mm_scheduler *s, const struct mm_config *cfg, const struct prompt *pr,
                       const struct mm_request_params *p, struct out *o)
{
    struct mm_request *r = make_request(pr, cfg, p);
    struct mm_err err;
    ck_assert_msg(mm_scheduler_submit(s, r, &err) == MM_OK, "%s", err.msg);
    collect(r, o);
    mm_request_release(r);
}

static void run(struct mm_scheduler *s, const struct mm_config *cfg, const struct prompt *pr,
                int64_t max_tokens, struct out *o)
{
    const struct mm_request_params p = greedy(max_tokens);
    run_params(s, cfg, pr, &p, o);
}

static int64_t cached_prefix(struct mm_scheduler *s, const struct mm_config *cfg,
                             const struct prompt *pr)
{
    const struct mm_request_params p = greedy(1);
    struct mm_request *r = make_request(pr, cfg, &p);
    const int64_t n = mm_scheduler_cached_prefix(s, r);
    mm_request_release(r);
    return n;
}

static void assert_same(const struct out *warm, const struct out *cold, const char *what)
{
    ck_assert_int_eq(warm->n, cold->n);
    for (int i = 0; i < cold->n; i++)
        ck_assert_msg(warm->ids[i] == cold->ids[i], "%s: token %d: %d with the cache, %d cold",
                      what, i, warm->ids[i], cold->ids[i]);
}

/* Whether generated ids can stand in a prompt as text (an image-context id
 * would be read as an image position there). */
static bool text_only(const struct mm_config *cfg, const struct out *o)
{
    for (int i = 0; i < o->n; i++)
        if (o->ids[i] == cfg->img_context_token_id)
            return false;
    return true;
}

/* Waits until the scheduler has no request and its gauges are published. */
static void wait_idle(struct mm_scheduler *s)
{
    for (int i = 0; i < 4000 && mm_scheduler_in_flight(s) > 0; i++)
        nanosleep(&(struct timespec){0, 5000000}, NULL);
    ck_assert_int_eq(mm_scheduler_in_flight(s), 0);
    nanosleep(&(struct timespec){0, 20000000}, NULL);
}

/* After the scheduler is gone every slot and KV block is free again. */
static void assert_engine_free(struct mm_engine *e)
{
    int64_t used[2], total[2];
    mm_engine_kv_usage(e, used, total);
    ck_assert_int_eq(used[0], 0);
    ck_assert_int_eq(used[1], 0);
    for (int32_t i = 0; i < e->opt.max_seqs; i++)
        ck_assert_msg(!e->slots[i].used, "slot %d still used", i);
}

/* Ends a test's warm (cache) and cold (reference) pair: both schedulers
 * stopped, the warm engine left with no slot or KV block in use, both
 * engines closed, then the host tier they shared. */
static void close_pair(struct mm_scheduler *ws, struct mm_scheduler *cs, struct mm_engine *we,
                       struct mm_engine *ce, struct mm_state_cache *host)
{
    mm_scheduler_free(ws, 1000);
    mm_scheduler_free(cs, 1000);
    assert_engine_free(we);
    mm_engine_close(we);
    mm_engine_close(ce);
    mm_state_cache_free(host);
}

/* ---- tests ----------------------------------------------------------------------------- */

/* Three turns: each re-sends the history (prompt + every generated id) and
 * a new message; from turn 2 on it starts from the snapshot taken when the
 * previous answer finished (all but its last token), and the tokens equal a
 * cold run's. With penalties: the token counts are the cold run's (the
 * snapshot's output ids are prompt ids now). */
static void conversation(int p, bool gpu, bool penalties)
{
    struct mm_engine *we = open_engine(p, 4, 0), *ce = open_engine(p, 2, 0);
    struct mm_state_cache *host = host_tier(64u << 20);
    struct mm_scheduler *ws = start(we, host, gpu), *cs = start(ce, NULL, true);
    const struct mm_config *cfg = &we->cfg;
    struct mm_request_params par = greedy(7);
    if (penalties) {
        /* negative: earlier output would be favoured, so counts left over
         * from the snapshot's own output would show */
        par.sample.repetition_penalty = 1.4f;
        par.sample.frequency_penalty = -2.0f;
        par.sample.presence_penalty = -1.5f;
    }
    static struct prompt pr;
    memset(&pr, 0, sizeof pr);
    add_text(&pr, 9, 11);
    pr.ids[pr.n++] = (int32_t)cfg->llm_vocab_size; /* <img> */
    add_tile(&pr, cfg, 1);
    pr.ids[pr.n++] = (int32_t)cfg->llm_vocab_size + 1;
    add_text(&pr, 12, 12);
    int64_t expect = 0;
    for (int turn = 0; turn < 3; turn++) {
        struct out w, c;
        ck_assert_int_eq(cached_prefix(ws, cfg, &pr), expect);
        run_params(ws, cfg, &pr, &par, &w);
        run_params(cs, cfg, &pr, &par, &c);
        assert_same(&w, &c, "conversation");
        ck_assert_int_eq(w.cached, expect);
        ck_assert_int_eq(c.cached, 0);
        if (!text_only(cfg, &w))
            break; /* (a random model may say <IMG_CONTEXT>: the history cannot be re-sent) */
        expect = pr.n + w.n - 1;
        add_ids(&pr, w.ids, w.n);
        add_text(&pr, 6 + turn, 20 + (uint32_t)turn);
    }
    wait_idle(ws);
    struct mm_metrics_snapshot m;
    mm_metrics_snapshot(mm_scheduler_metrics(ws), &m);
    ck_assert_uint_eq(m.cache_queries, 3);
    ck_assert_uint_ge(m.cache_hits, 1);
    ck_assert_uint_gt(m.cache_hit_tokens, 0);
    if (gpu)
        ck_assert_int_gt(m.cache_gpu_entries, 0);
    else {
        struct mm_state_cache_stats hs;
        mm_state_cache_stats(host, &hs);
        ck_assert_int_gt(hs.entries, 0);
        ck_assert_int_eq(m.cache_gpu_entries, 0);
    }
    close_pair(ws, cs, we, ce, host);
    free(pr.tiles);
}

START_TEST(test_conversation) { conversation(_i % 3, true, false); }
END_TEST

START_TEST(test_conversation_host_only) { conversation(_i % 3, false, false); }
END_TEST

START_TEST(test_conversation_penalties) { conversation(_i % 3, true, true); }
END_TEST

/* A prompt of L tokens (1, 17, 1000) is kept once prefilled; a longer one
 * starting with it prefills only the rest. */
START_TEST(test_odd_lengths)
{
    const int p = _i % 3;
    struct mm_engine *we = open_engine(p, 4, 0), *ce = open_engine(p, 2, 0);
    struct mm_state_cache *host = host_tier(64u << 20);
    struct mm_scheduler *ws = start(we, host, true), *cs = start(ce, NULL, true);
    const struct mm_config *cfg = &we->cfg;
    static const int64_t lens[3] = {1, 17, 1000};
    for (int k = 0; k < 3; k++) {
        static struct prompt pr;
        memset(&pr, 0, sizeof pr);
        add_text(&pr, lens[k], 40 + (uint32_t)k);
        struct out w, c;
        run(ws, cfg, &pr, 1, &w);
        add_text(&pr, 9, 50 + (uint32_t)k);
        ck_assert_int_eq(cached_prefix(ws, cfg, &pr), lens[k]);
        run(ws, cfg, &pr, 6, &w);
        run(cs, cfg, &pr, 6, &c);
        ck_assert_int_eq(w.cached, lens[k]);
        assert_same(&w, &c, "odd length");
    }
    close_pair(ws, cs, we, ce, host);
}
END_TEST

/* Snapshots right after an image's run and between the tiles of a
 * two-tile image are hit; the same ids with other pixels are not. */
START_TEST(test_images)
{
    const int p = _i % 3;
    struct mm_engine *we = open_engine(p, 4, 0), *ce = open_engine(p, 2, 0);
    struct mm_state_cache *host = host_tier(64u << 20);
    struct mm_scheduler *ws = start(we, host, true), *cs = start(ce, NULL, true);
    const struct mm_config *cfg = &we->cfg;
    const int32_t img_open = (int32_t)cfg->llm_vocab_size, img_close = img_open + 1;
    static struct prompt a, b, in, other;
    memset(&a, 0, sizeof a);
    add_text(&a, 5, 60);
    a.ids[a.n++] = img_open;
    add_tile(&a, cfg, 100); /* a ends right after the image run of tile 100 */
    struct out w, c;
    run(ws, cfg, &a, 1, &w);
    const int64_t la = a.n;

    copy_prompt(&b, &a, cfg); /* right after the image */
    b.ids[b.n++] = img_close;
    add_text(&b, 7, 61);
    ck_assert_int_eq(cached_prefix(ws, cfg, &b), la);
    run(ws, cfg, &b, 6, &w);
    run(cs, cfg, &b, 6, &c);
    ck_assert_int_eq(w.cached, la);
    assert_same(&w, &c, "after an image");

    copy_prompt(&in, &a, cfg); /* inside a two-tile image: tiles 100, 101 */
    add_tile(&in, cfg, 101);
    in.ids[in.n++] = img_close;
    add_text(&in, 4, 62);
    run(ws, cfg, &in, 6, &w);
    run(cs, cfg, &in, 6, &c);
    ck_assert_int_eq(w.cached, la);
    assert_same(&w, &c, "inside an image");

    memset(&other, 0, sizeof other); /* b's ids, another picture */
    add_text(&other, 5, 60);
    other.ids[other.n++] = img_open;
    add_tile(&other, cfg, 200);
    other.ids[other.n++] = img_close;
    add_text(&other, 7, 61);
    ck_assert_int_eq(other.n, b.n);
    ck_assert_mem_eq(other.ids, b.ids, (size_t)b.n * sizeof *b.ids);
    ck_assert_int_eq(cached_prefix(ws, cfg, &other), 0);
    run(ws, cfg, &other, 6, &w);
    run(cs, cfg, &other, 6, &c);
    ck_assert_int_eq(w.cached, 0);
    assert_same(&w, &c, "another image");

    close_pair(ws, cs, we, ce, host);
    free(a.tiles);
    free(b.tiles);
    free(in.tiles);
    free(other.tiles);
}
END_TEST

/* Two slots: other requests take both, so the finished answer's snapshot
 * leaves its slot for the host tier and comes back from there; with a
 * host tier too small for any snapshot (and no GPU tier) everything
 * misses; both give the cold tokens. */
START_TEST(test_eviction_and_miss)
{
    const int p = _i % 3;
    struct mm_engine *we = open_engine(p, 2, 0), *ce = open_engine(p, 2, 0);
    struct mm_state_cache *host = host_tier(64u << 20);
    struct mm_scheduler *ws = start(we, host, true), *cs = start(ce, NULL, true);
    const struct mm_config *cfg = &we->cfg;
    static struct prompt pr, busy[2];
    memset(&pr, 0, sizeof pr);
    add_text(&pr, 30, 70);
    struct out w, c;
    run(ws, cfg, &pr, 8, &w);
    if (!text_only(cfg, &w))
        goto out;
    const int64_t expect = pr.n + w.n - 1;
    add_ids(&pr, w.ids, w.n);
    add_text(&pr, 5, 71);
    /* two long requests at once: both slots, the snapshots evicted */
    struct mm_request *r[2];
    const struct mm_request_params bp = greedy(20);
    struct mm_err err;
    for (int i = 0; i < 2; i++) {
        memset(&busy[i], 0, sizeof busy[i]);
        add_text(&busy[i], 40, 80 + (uint32_t)i);
        r[i] = make_request(&busy[i], cfg, &bp);
        ck_assert_msg(mm_scheduler_submit(ws, r[i], &err) == MM_OK, "%s", err.msg);
    }
    for (int i = 0; i < 2; i++) {
        struct out o;
        collect(r[i], &o);
        mm_request_release(r[i]);
    }
    wait_idle(ws);
    struct mm_metrics_snapshot m;
    mm_metrics_snapshot(mm_scheduler_metrics(ws), &m);
    ck_assert_uint_ge(m.cache_gpu_evictions, 1);
    struct mm_state_cache_stats hs;
    mm_state_cache_stats(host, &hs);
    ck_assert_int_ge(hs.entries, 1);
    ck_assert_int_eq(cached_prefix(ws, cfg, &pr), expect);
    run(ws, cfg, &pr, 8, &w);
    run(cs, cfg, &pr, 8, &c);
    ck_assert_int_eq(w.cached, expect);
    assert_same(&w, &c, "back from host RAM");

    /* a full miss: no GPU tier, a host tier that holds nothing */
    struct mm_state_cache *tiny = host_tier(1);
    mm_scheduler_free(ws, 1000); /* one scheduler per engine at a time */
    ws = NULL;
    struct mm_scheduler *ms = start(we, tiny, false);
    run(ms, cfg, &pr, 8, &w);
    ck_assert_int_eq(w.cached, 0);
    run(ms, cfg, &pr, 8, &w);
    ck_assert_int_eq(w.cached, 0);
    assert_same(&w, &c, "full miss");
    mm_state_cache_stats(tiny, &hs);
    ck_assert_int_eq(hs.entries, 0);
    ck_assert_uint_ge(hs.rejects, 1);
    mm_scheduler_free(ms, 1000);
    mm_state_cache_free(tiny);
out:
    close_pair(ws, cs, we, ce, host);
}
END_TEST

/* Four continuations of one finished answer at once (two identical): each
 * gets its own copy; more requests than free slots push the snapshot being
 * restored to the host tier, never lose it. */
START_TEST(test_concurrent_continuations)
{
    const int p = _i % 3;
    struct mm_engine *we = open_engine(p, 4, 0), *ce = open_engine(p, 2, 0);
    struct mm_state_cache *host = host_tier(64u << 20);
    struct mm_scheduler *ws = start(we, host, true), *cs = start(ce, NULL, true);
    const struct mm_config *cfg = &we->cfg;
    static struct prompt base, pr[4];
    memset(&base, 0, sizeof base);
    add_text(&base, 21, 90);
    struct out w, c;
    run(ws, cfg, &base, 9, &w);
    if (!text_only(cfg, &w))
        goto out;
    const int64_t expect = base.n + w.n - 1;
    add_ids(&base, w.ids, w.n);
    struct mm_request *r[4];
    const struct mm_request_params par = greedy(10);
    struct mm_err err;
    for (int i = 0; i < 4; i++) {
        copy_prompt(&pr[i], &base, cfg);
        add_text(&pr[i], 3 + (i == 1 ? 0 : i), 91 + (uint32_t)(i == 1 ? 0 : i));
        r[i] = make_request(&pr[i], cfg, &par);
        ck_assert_msg(mm_scheduler_submit(ws, r[i], &err) == MM_OK, "%s", err.msg);
    }
    for (int i = 0; i < 4; i++) {
        collect(r[i], &w);
        mm_request_release(r[i]);
        ck_assert_int_eq(w.cached, expect);
        run(cs, cfg, &pr[i], 10, &c);
        assert_same(&w, &c, "concurrent continuation");
    }
out:
    close_pair(ws, cs, we, ce, host);
}
END_TEST

/* A flood of distinct long prompts: the host tier never holds more than
 * its bound (checked from another thread all along), the GPU tier never
 * more than the slots, and everything is free once the scheduler is. */
struct watch {
    struct mm_state_cache *host;
    atomic_bool stop;
    size_t peak;
};

static void *watcher(void *arg)
{
    struct watch *w = arg;
    while (!atomic_load(&w->stop)) {
        struct mm_state_cache_stats st;
        mm_state_cache_stats(w->host, &st);
        if (st.bytes > w->peak)
            w->peak = st.bytes;
        nanosleep(&(struct timespec){0, 200000}, NULL);
    }
    return NULL;
}

START_TEST(test_flood_bounds)
{
    const int p = _i % 3;
    struct mm_engine *we = open_engine(p, 4, 0);
    const size_t one = mm_engine_snapshot_bytes(we, 300, 300);
    const size_t bound = 3 * one + 3 * 300 * sizeof(uint64_t) + 1024;
    struct mm_state_cache *host = host_tier(bound);
    struct mm_scheduler *ws = start(we, host, true);
    const struct mm_config *cfg = &we->cfg;
    struct watch wt = {.host = host};
    pthread_t th;
    pthread_create(&th, NULL, watcher, &wt);
    enum { N = 24 };
    struct mm_request *r[N];
    const struct mm_request_params par = greedy(3);
    struct mm_err err;
    for (int i = 0; i < N; i++) {
        static struct prompt pr;
        memset(&pr, 0, sizeof pr);
        add_text(&pr, 200 + 7 * i, 300 + (uint32_t)i);
        r[i] = make_request(&pr, cfg, &par);
        ck_assert_msg(mm_scheduler_submit(ws, r[i], &err) == MM_OK, "%s", err.msg);
    }
    for (int i = 0; i < N; i++) {
        struct out o;
        collect(r[i], &o);
        mm_request_release(r[i]);
        struct mm_metrics_snapshot m;
        mm_metrics_snapshot(mm_scheduler_metrics(ws), &m);
        ck_assert_int_le(m.cache_gpu_entries, we->opt.max_seqs);
    }
    wait_idle(ws);
    atomic_store(&wt.stop, true);
    pthread_join(th, NULL);
    struct mm_state_cache_stats hs;
    mm_state_cache_stats(host, &hs);
    ck_assert_uint_le(wt.peak, bound);
    ck_assert_uint_le(hs.bytes, bound);
    ck_assert_uint_gt(hs.evictions, 0); /* it did fill up */
    struct mm_metrics_snapshot m;
    mm_metrics_snapshot(mm_scheduler_metrics(ws), &m);
    ck_assert_uint_eq(m.cache_queries, N);
    ck_assert_uint_eq(m.cache_hits, 0);
    mm_scheduler_free(ws, 1000);
    assert_engine_free(we);
    mm_engine_close(we);
    mm_state_cache_free(host);
}
END_TEST

/* ---- the host tier and the keys alone ---------------------------------------------------- */

static void put(struct mm_state_cache *c, const uint64_t *keys, int64_t n, size_t bytes,
                unsigned char fill)
{
    struct mm_state_entry *en = mm_state_cache_begin(c, 1, keys, n, n, n, bytes);
    ck_assert_ptr_nonnull(en);
    memset(mm_state_entry_buffer(en), fill, bytes);
    mm_state_cache_commit(c, en);
}

/* Longest exact match wins; a pinned entry (being restored) survives any
 * pressure with its bytes intact; the bound holds; duplicates are one. */
START_TEST(test_host_tier_pins_and_bounds)
{
    uint64_t keys[64], ph[64];
    for (int i = 0; i < 64; i++)
        keys[i] = (uint64_t)(i * 7 + 3);
    mm_state_prefix_hashes(keys, 64, ph);
    const size_t per = 1000 + 64 * 8 + 256;
    struct mm_state_cache *c = host_tier(4 * per);
    put(c, keys, 10, 1000, 0xAA);
    put(c, keys, 20, 1000, 0xBB);
    ck_assert_ptr_null(mm_state_cache_begin(c, 1, keys, 20, 20, 20, 1000));  /* kept already */
    ck_assert_ptr_null(mm_state_cache_begin(c, 1, keys, 5, 5, 5, 10 * per)); /* never fits */
    struct mm_state_entry *en;
    ck_assert_int_eq(mm_state_cache_find(c, 1, keys, ph, 64, &en), 20);
    ck_assert_int_eq(mm_state_cache_find(c, 2, keys, ph, 64, NULL), 0); /* another layout */
    ck_assert_int_eq(mm_state_cache_find(c, 1, keys, ph, 19, NULL), 10);
    uint64_t other[64];
    memcpy(other, keys, sizeof other);
    other[3] ^= 1;
    uint64_t oph[64];
    mm_state_prefix_hashes(other, 64, oph);
    ck_assert_int_eq(mm_state_cache_find(c, 1, other, oph, 64, NULL), 0);
    /* pressure: many new entries, each evicting; the pinned one stays */
    for (int i = 0; i < 40; i++) {
        uint64_t k[8] = {1000 + (uint64_t)i, 1, 2, 3, 4, 5, 6, 7};
        put(c, k, 8, 1000, (unsigned char)i);
        struct mm_state_cache_stats st;
        mm_state_cache_stats(c, &st);
        ck_assert_uint_le(st.bytes, 4 * per);
    }
    int64_t pos, emb;
    const unsigned char *d = mm_state_entry_data(en, &pos, &emb);
    ck_assert_int_eq(pos, 20);
    for (int i = 0; i < 1000; i++)
        ck_assert_uint_eq(d[i], 0xBB);
    ck_assert_int_eq(mm_state_cache_find(c, 1, keys, ph, 64, NULL), 20);
    ck_assert_int_eq(mm_state_cache_find(c, 1, keys, ph, 19, NULL), 0); /* 10 was evicted */
    mm_state_cache_unpin(c, en);
    for (int i = 0; i < 8; i++) {
        uint64_t k[8] = {2000 + (uint64_t)i, 1, 2, 3, 4, 5, 6, 7};
        put(c, k, 8, 1000, 0);
    }
    ck_assert_int_eq(mm_state_cache_find(c, 1, keys, ph, 64, NULL), 0); /* unpinned: gone */
    struct mm_state_cache_stats st;
    mm_state_cache_stats(c, &st);
    ck_assert_uint_gt(st.evictions, 30);
    mm_state_cache_free(c);
    /* an entry being filled counts; an aborted one gives its bytes back */
    c = host_tier(4 * per);
    en = mm_state_cache_begin(c, 1, keys, 3, 3, 3, 100);
    ck_assert_ptr_nonnull(en);
    mm_state_cache_stats(c, &st);
    ck_assert_uint_ge(st.bytes, 100 + 3 * 8);
    ck_assert_int_eq(mm_state_cache_find(c, 1, keys, ph, 64, NULL), 0); /* not yet visible */
    mm_state_cache_abort(c, en);
    mm_state_cache_stats(c, &st);
    ck_assert_uint_eq(st.bytes, 0);
    mm_state_cache_free(c);
}
END_TEST

/* ---- the disk tier ------------------------------------------------------------------------ */

static struct mm_state_cache *disk_cache(size_t host_bytes, const char *dir, size_t disk_bytes,
                                         uint64_t model)
{
    struct mm_state_cache *c = host_tier(host_bytes);
    struct mm_err err;
    ck_assert_msg(mm_state_cache_open_disk(c, dir, disk_bytes, model, &err) == MM_OK, "%s",
                  err.msg);
    return c;
}

static int count_files(const char *dir, const char *suffix)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -c -- '%s$'", dir, suffix);
    FILE *f = popen(cmd, "r");
    int n = -1;
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%d", &n), 1);
    pclose(f);
    return n;
}

/* Mutates the file of the entry with these keys: at byte `at` from its end,
 * or cut to `cut` bytes. */
static void damage(const char *dir, const uint64_t *keys, int64_t n, long at, long cut)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%016llx-%016llx.state", dir, 1ull,
             (unsigned long long)mm_state_hash(keys, n));
    if (cut >= 0) {
        ck_assert_int_eq(truncate(path, cut), 0);
        return;
    }
    FILE *f = fopen(path, "r+b");
    ck_assert_msg(f != NULL, "%s missing", path);
    ck_assert_int_eq(fseek(f, -at, SEEK_END), 0);
    const int ch = fgetc(f);
    ck_assert_int_eq(fseek(f, -at, SEEK_END), 0);
    fputc(ch ^ 0x40, f);
    fclose(f);
}

/* A lookup racing the writer thread: every state put is found, intact,
 * at every moment (in host RAM, on the write queue or on disk), while the
 * host bound, the queue's bound and the disk bound hold. */
enum { RACE_N = 120, RACE_KEYS = 8, RACE_BYTES = 4000 };

struct race {
    struct mm_state_cache *c;
    atomic_int published; /* states put so far */
    atomic_bool done;
    int lookups, misses, damaged;
};

static void race_keys(int i, uint64_t k[RACE_KEYS])
{
    for (int j = 0; j < RACE_KEYS; j++)
        k[j] = (uint64_t)(i * 131 + j * 7 + 1);
}

static void *race_reader(void *arg)
{
    struct race *rc = arg;
    for (unsigned x = 1; !atomic_load(&rc->done);) {
        const int n = atomic_load(&rc->published);
        if (n == 0)
            continue;
        x = x * 1103515245u + 12345u;
        const int back = (int)((x >> 12) % 10); /* the recent ones: just evicted, or queued */
        const int i =
            (x >> 8) % 2 ? (n - 1 - back > 0 ? n - 1 - back : 0) : (int)((x >> 16) % (unsigned)n);
        uint64_t k[RACE_KEYS], ph[RACE_KEYS];
        race_keys(i, k);
        mm_state_prefix_hashes(k, RACE_KEYS, ph);
        struct mm_state_entry *en;
        rc->lookups++;
        if (mm_state_cache_find(rc->c, 1, k, ph, RACE_KEYS, &en) != RACE_KEYS) {
            rc->misses++;
            continue;
        }
        int64_t pos, emb;
        const unsigned char *d = mm_state_entry_data(en, &pos, &emb);
        for (int b = 0; b < RACE_BYTES; b++)
            if (d[b] != (unsigned char)i) {
                rc->damaged++;
                break;
            }
        mm_state_cache_unpin(rc->c, en);
    }
    return NULL;
}

START_TEST(test_disk_writer_race)
{
    char dir[256];
    mm_test_tmpdir(dir, sizeof dir);
    const size_t per = RACE_BYTES + RACE_KEYS * 8 + 256;
    const size_t file = 11 * 8 + RACE_KEYS * 8 + RACE_BYTES;
    struct mm_state_cache *c = disk_cache(6 * per, dir, (RACE_N + 1) * file, 9);
    struct race rc = {.c = c};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, race_reader, &rc), 0);
    struct mm_state_cache_stats st;
    for (int i = 0; i < RACE_N; i++) {
        uint64_t k[RACE_KEYS];
        race_keys(i, k);
        struct mm_state_entry *en = NULL;
        while (!(en = mm_state_cache_begin(c, 1, k, RACE_KEYS, RACE_KEYS, 0, RACE_BYTES)))
            ; /* every room pinned by the reader this instant: again */
        memset(mm_state_entry_buffer(en), i, RACE_BYTES);
        mm_state_cache_commit(c, en);
        atomic_store(&rc.published, i + 1);
        mm_state_cache_stats(c, &st);
        ck_assert_uint_le(st.bytes, st.max_bytes);
        ck_assert(st.disk_queued <= 1 || st.disk_queued_bytes <= st.disk_queue_max_bytes);
        if (st.disk_queued_bytes <= st.disk_queue_max_bytes) /* kept + queued: the bound */
            ck_assert_uint_le(st.bytes + st.disk_queued_bytes, st.max_bytes);
        ck_assert_uint_le(st.disk_bytes, st.disk_max_bytes);
    }
    struct timespec t = {0, 20000000};
    nanosleep(&t, NULL); /* lookups while the queue drains */
    atomic_store(&rc.done, true);
    pthread_join(th, NULL);
    ck_assert_int_gt(rc.lookups, RACE_N);
    ck_assert_int_eq(rc.misses, 0);
    ck_assert_int_eq(rc.damaged, 0);
    mm_state_cache_flush(c);
    mm_state_cache_stats(c, &st);
    ck_assert_int_eq(st.disk_queued, 0);
    ck_assert_uint_ge(st.disk_writes, RACE_N - 6);
    ck_assert_uint_le(st.disk_bytes, st.disk_max_bytes);
    for (int i = 0; i < RACE_N; i++) { /* every one kept somewhere, intact */
        uint64_t k[RACE_KEYS], ph[RACE_KEYS];
        race_keys(i, k);
        mm_state_prefix_hashes(k, RACE_KEYS, ph);
        struct mm_state_entry *en;
        ck_assert_int_eq(mm_state_cache_find(c, 1, k, ph, RACE_KEYS, &en), RACE_KEYS);
        int64_t pos, emb;
        const unsigned char *d = mm_state_entry_data(en, &pos, &emb);
        ck_assert_uint_eq(d[RACE_BYTES - 1], (unsigned char)i);
        mm_state_cache_unpin(c, en);
    }
    mm_state_cache_free(c); /* drains the queue and writes host RAM: every file there */
    c = disk_cache(6 * per, dir, (RACE_N + 1) * file, 9);
    mm_state_cache_stats(c, &st);
    ck_assert_int_eq(st.disk_entries, RACE_N);
    ck_assert_int_eq(count_files(dir, ".state"), RACE_N);
    mm_state_cache_free(c);
    mm_test_rmdir(dir);
}
END_TEST

/* Host evictions go to files, come back intact (promoted) on a hit, the
 * bound holds; a restart over the directory finds them; another model's
 * files are ignored and kept, damaged or cut-short ones and leftover
 * temporary files removed. */
START_TEST(test_disk_tier)
{
    char dir[256];
    mm_test_tmpdir(dir, sizeof dir);
    uint64_t keys[64], ph[64];
    for (int i = 0; i < 64; i++)
        keys[i] = (uint64_t)(i * 7 + 3);
    mm_state_prefix_hashes(keys, 64, ph);
    const size_t per = 1000 + 64 * 8 + 256;
    const size_t file = 11 * 8 + 20 * 8 + 1000; /* header, keys, data of the 20-key entry */
    struct mm_state_cache *c = disk_cache(2 * per, dir, 8 * file, 77);
    put(c, keys, 20, 1000, 0xBB);
    put(c, keys, 10, 1000, 0xAA);
    for (int i = 0; i < 3; i++) { /* push both out of host RAM */
        uint64_t k[8] = {1000 + (uint64_t)i, 1, 2, 3, 4, 5, 6, 7};
        put(c, k, 8, 1000, (unsigned char)i);
    }
    struct mm_state_cache_stats st;
    mm_state_cache_flush(c); /* the writer thread has written them */
    mm_state_cache_stats(c, &st);
    ck_assert(st.disk);
    ck_assert_int_eq(st.disk_queued, 0);
    ck_assert_uint_ge(st.disk_writes, 2);
    ck_assert_int_eq(st.disk_entries, (int64_t)st.disk_writes);
    ck_assert_int_eq(count_files(dir, ".state"), (int)st.disk_entries);
    ck_assert_int_eq(mm_state_cache_find(c, 1, keys, ph, 64, NULL), 20); /* the hint: the index */
    ck_assert_int_eq(mm_state_cache_find(c, 1, keys, ph, 19, NULL), 10);
    ck_assert_int_eq(mm_state_cache_find(c, 2, keys, ph, 64, NULL), 0); /* another layout */
    struct mm_state_entry *en;
    ck_assert_int_eq(mm_state_cache_find(c, 1, keys, ph, 64, &en), 20);
    int64_t pos, emb;
    const unsigned char *d = mm_state_entry_data(en, &pos, &emb);
    ck_assert_int_eq(pos, 20);
    for (int i = 0; i < 1000; i++)
        ck_assert_uint_eq(d[i], 0xBB);
    mm_state_cache_unpin(c, en);
    mm_state_cache_stats(c, &st);
    ck_assert_uint_eq(st.disk_hits, 1);
    /* the bound: many more evictions, oldest files go */
    for (int i = 0; i < 40; i++) {
        uint64_t k[8] = {3000 + (uint64_t)i, 1, 2, 3, 4, 5, 6, 7};
        put(c, k, 8, 1000, (unsigned char)i);
        mm_state_cache_stats(c, &st);
        ck_assert_uint_le(st.disk_bytes, 8 * file);
    }
    mm_state_cache_flush(c);
    mm_state_cache_stats(c, &st);
    ck_assert_uint_le(st.disk_bytes, 8 * file);
    ck_assert_uint_gt(st.disk_evictions, 20);
    ck_assert_int_eq(count_files(dir, ".state"), (int)st.disk_entries);
    ck_assert_int_eq(mm_state_cache_find(c, 1, keys, ph, 19, NULL), 0); /* 10 aged out */
    put(c, keys, 12, 1000, 0xCC);
    put(c, keys, 14, 1000, 0xDD);
    put(c, keys, 16, 1000, 0xEE);
    mm_state_cache_free(c); /* host RAM goes to disk */

    /* a restart: the same model finds them */
    FILE *t = fopen(strcat(strcpy((char[300]){0}, dir), "/.tmp-1-1"), "w");
    ck_assert_ptr_nonnull(t);
    fputs("half a write", t);
    fclose(t);
    c = disk_cache(2 * per, dir, 8 * file, 77);
    ck_assert_int_eq(count_files(dir, "tmp-1-1"), 0); /* the leftover is gone */
    ck_assert_int_eq(mm_state_cache_find(c, 1, keys, ph, 13, &en), 12);
    d = mm_state_entry_data(en, &pos, &emb);
    ck_assert_uint_eq(d[999], 0xCC);
    mm_state_cache_unpin(c, en);
    mm_state_cache_free(c);

    /* another model: nothing found, nothing removed */
    const int files = count_files(dir, ".state");
    c = disk_cache(2 * per, dir, 8 * file, 78);
    ck_assert_int_eq(mm_state_cache_find(c, 1, keys, ph, 64, NULL), 0);
    mm_state_cache_stats(c, &st);
    ck_assert_int_eq(st.disk_entries, 0);
    mm_state_cache_free(c);
    ck_assert_int_eq(count_files(dir, ".state"), files);

    /* a flipped data byte is found at read time, a cut file at start */
    damage(dir, keys, 14, 10, -1);
    damage(dir, keys, 12, 0, 50);
    c = disk_cache(2 * per, dir, 8 * file, 77);
    mm_state_cache_stats(c, &st);
    ck_assert_uint_eq(st.disk_bad, 1); /* the cut one, at start */
    ck_assert_int_eq(mm_state_cache_find(c, 1, keys, ph, 64, NULL), 16);
    ck_assert_int_eq(mm_state_cache_find(c, 1, keys, ph, 15, NULL), 14); /* the index says so */
    ck_assert_int_eq(mm_state_cache_find(c, 1, keys, ph, 15, &en), 0);   /* the read refuses */
    ck_assert_ptr_null(en);
    mm_state_cache_stats(c, &st);
    ck_assert_uint_eq(st.disk_bad, 2);
    ck_assert_int_eq(mm_state_cache_find(c, 1, keys, ph, 15, NULL), 0); /* and it is gone */
    ck_assert_int_eq(mm_state_cache_find(c, 1, keys, ph, 64, &en), 16); /* the sound one reads */
    d = mm_state_entry_data(en, &pos, &emb);
    ck_assert_uint_eq(d[0], 0xEE);
    mm_state_cache_unpin(c, en);
    mm_state_cache_free(c);
    mm_test_rmdir(dir);
}
END_TEST

/* Through the scheduler: a host tier that holds one state, so a finished
 * answer's state is pushed to disk by later requests; the continuation
 * comes back from the file, and again after a "restart" (a new host tier
 * and scheduler over the same directory), with the cold tokens. */
START_TEST(test_disk_tier_scheduler)
{
    const int p = _i % 3;
    char dir[256];
    mm_test_tmpdir(dir, sizeof dir);
    struct mm_engine *we = open_engine(p, 2, 0), *ce = open_engine(p, 2, 0);
    const struct mm_config *cfg = &we->cfg;
    /* an upper bound of every state below (at most 64 positions): host RAM holds one or two */
    const size_t one = mm_engine_snapshot_bytes(we, 64, 64) + 64 * 8 + 512;
    struct mm_state_cache *host = disk_cache(one + one / 2, dir, (size_t)64 << 20, 5);
    struct mm_scheduler *ws = start(we, host, false), *cs = start(ce, NULL, true);
    static struct prompt pr, other;
    memset(&pr, 0, sizeof pr);
    add_text(&pr, 30, 90);
    struct out w, c;
    run(ws, cfg, &pr, 8, &w);
    if (!text_only(cfg, &w))
        goto out;
    const int64_t expect = pr.n + w.n - 1;
    add_ids(&pr, w.ids, w.n);
    add_text(&pr, 5, 91);
    for (int i = 0; i < 2; i++) { /* other states take host RAM */
        memset(&other, 0, sizeof other);
        add_text(&other, 40, 92 + (uint32_t)i);
        run(ws, cfg, &other, 4, &c);
    }
    struct mm_state_cache_stats hs;
    mm_state_cache_flush(host);
    mm_state_cache_stats(host, &hs);
    ck_assert_uint_ge(hs.disk_writes, 2);
    run(cs, cfg, &pr, 8, &c);
    run(ws, cfg, &pr, 8, &w);
    ck_assert_int_eq(w.cached, expect);
    assert_same(&w, &c, "back from disk");
    mm_state_cache_stats(host, &hs);
    ck_assert_uint_ge(hs.disk_hits, 1);
    /* a restart over the same directory */
    mm_scheduler_free(ws, 1000);
    mm_state_cache_free(host);
    host = disk_cache(one + one / 2, dir, (size_t)64 << 20, 5);
    ws = start(we, host, true);
    ck_assert_int_eq(cached_prefix(ws, cfg, &pr), expect);
    run(ws, cfg, &pr, 8, &w);
    ck_assert_int_eq(w.cached, expect);
    assert_same(&w, &c, "after a restart");
out:
    mm_scheduler_free(ws, 1000);
    mm_scheduler_free(cs, 1000);
    mm_engine_close(we);
    mm_engine_close(ce);
    mm_state_cache_free(host);
    mm_test_rmdir(dir);
}
END_TEST

/* Image keys depend on the pixels and the offset in the tile; text keys
 * on the id; the two never meet. */
START_TEST(test_keys)
{
    enum { TPT = 4, TF = 48 };
    const int32_t img = 9;
    const int32_t ids[] = {1, 2, img, img, img, img, img, img, img, img, 3};
    float tiles[2 * TF], tiles2[2 * TF];
    for (int i = 0; i < 2 * TF; i++)
        tiles[i] = tiles2[i] = (float)i * 0.25f;
    tiles2[TF + 5] += 1.0f; /* the second tile differs in one pixel */
    uint64_t *a, *b;
    struct mm_err err;
    ck_assert_int_eq(mm_state_keys(ids, 11, tiles, 2, TF, img, TPT, &a, &err), MM_OK);
    ck_assert_int_eq(mm_state_keys(ids, 11, tiles2, 2, TF, img, TPT, &b, &err), MM_OK);
    ck_assert_uint_eq(a[0], mm_state_text_key(1));
    ck_assert_uint_eq(a[10], mm_state_text_key(3));
    for (int i = 0; i < 6; i++)
        ck_assert_uint_eq(a[i], b[i]); /* text and the first tile agree */
    for (int i = 6; i < 10; i++)
        ck_assert_uint_ne(a[i], b[i]);
    for (int i = 2; i < 10; i++) {
        ck_assert_uint_ne(a[i], mm_state_text_key(img));
        for (int k = i + 1; k < 10; k++)
            ck_assert_uint_ne(a[i], a[k]);
    }
    ck_assert_uint_eq(a[10], b[10]);
    ck_assert_uint_ne(mm_state_hash(a, 11), mm_state_hash(b, 11));
    free(a);
    free(b);
    ck_assert_int_eq(mm_state_keys(ids, 11, tiles, 1, TF, img, TPT, &a, &err), MM_ERR_INVALID);
}
END_TEST

/* Keys from 8-bit pixels are the keys of the floats they normalise to:
 * the digest over every size (odd planes, words across channels, a last
 * partial block), and whole prompts. */
START_TEST(test_keys_from_pixels)
{
    const int64_t sides[] = {1, 3, 5, 16, 19, 37, 448};
    for (size_t k = 0; k < sizeof sides / sizeof *sides; k++) {
        const int64_t S = sides[k], n = 3 * S * S;
        uint8_t *px = malloc((size_t)n);
        float *f = malloc((size_t)n * sizeof *f);
        for (int64_t i = 0; i < n; i++)
            px[i] = (uint8_t)(i * 131 + k * 7 + (i >> 9));
        mm_image_tiles_unpack(px, 1, S, f);
        uint64_t a[2], b[2];
        mm_state_tile_digest(f, n, a);
        mm_state_tile_digest_pixels(px, n, b);
        ck_assert_msg(a[0] == b[0] && a[1] == b[1], "tile side %lld", (long long)S);
        free(px);
        free(f);
    }
    enum { S = 4, TF = 3 * S * S, TPT = 4 };
    const int32_t img = 9;
    const int32_t ids[] = {1, 2, img, img, img, img, img, img, img, img, 3};
    uint8_t px[2 * TF];
    float f[2 * TF];
    for (int i = 0; i < 2 * TF; i++)
        px[i] = (uint8_t)(i * 37);
    mm_image_tiles_unpack(px, 2, S, f);
    uint64_t *a, *b;
    struct mm_err err;
    ck_assert_int_eq(mm_state_keys(ids, 11, f, 2, TF, img, TPT, &a, &err), MM_OK);
    ck_assert_int_eq(mm_state_keys_digested(ids, 11, NULL, px, NULL, 2, TF, img, TPT, &b, &err),
                     MM_OK);
    ck_assert_mem_eq(a, b, 11 * sizeof *a);
    free(a);
    free(b);
}
END_TEST

static bool have_gpu(void)
{
    struct mm_backend b;
    struct mm_err err;
    if (mm_cuda_backend_create(true, &b, &err) != MM_OK)
        return false;
    b.ops->destroy(b.ctx);
    return true;
}

START_TEST(test_use_cuda) { backend = MM_BACKEND_CUDA_FP32; }
END_TEST

int main(void)
{
    const bool gpu = have_gpu();
    Suite *s = suite_create("serve/state_cache");
    TCase *tc = tcase_create("cpu");
    tcase_set_timeout(tc, 900);
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_keys);
    tcase_add_test(tc, test_keys_from_pixels);
    tcase_add_test(tc, test_host_tier_pins_and_bounds);
    tcase_add_test(tc, test_disk_tier);
    tcase_add_test(tc, test_disk_writer_race);
    tcase_add_loop_test(tc, test_disk_tier_scheduler, 0, 3);
    tcase_add_loop_test(tc, test_conversation, 0, 3);
    tcase_add_loop_test(tc, test_conversation_host_only, 0, 3);
    tcase_add_loop_test(tc, test_conversation_penalties, 0, 1);
    tcase_add_loop_test(tc, test_odd_lengths, 0, 3);
    tcase_add_loop_test(tc, test_images, 0, 3);
    tcase_add_loop_test(tc, test_eviction_and_miss, 0, 3);
    tcase_add_loop_test(tc, test_concurrent_continuations, 0, 3);
    tcase_add_loop_test(tc, test_flood_bounds, 0, 2);
    suite_add_tcase(s, tc);
    if (gpu) { /* the same on the CUDA backend (fp32: exact); CK_FORK=no */
        TCase *tg = tcase_create("cuda");
        tcase_set_timeout(tg, 900);
        tcase_add_unchecked_fixture(tg, setup, teardown);
        tcase_add_test(tg, test_use_cuda);
        tcase_add_loop_test(tg, test_conversation, 0, 3);
        tcase_add_loop_test(tg, test_conversation_host_only, 0, 3);
        tcase_add_loop_test(tg, test_odd_lengths, 0, 3);
        tcase_add_loop_test(tg, test_images, 0, 3);
        tcase_add_loop_test(tg, test_eviction_and_miss, 0, 3);
        tcase_add_loop_test(tg, test_concurrent_continuations, 0, 3);
        tcase_add_loop_test(tg, test_flood_bounds, 0, 2);
        suite_add_tcase(s, tg);
        return mm_test_run_nofork(s);
    }
    printf("note: no CUDA device: the CUDA part is skipped\n");
    return mm_test_run(s);
}
