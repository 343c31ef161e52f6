/* check_dispatch.c: several engines behind one front (src/serve/dispatch.c).
 * The placement policy on hand-made loads (least loaded, ties in rotation,
 * queued prefill and KV pressure, continuations to the engine keeping their
 * prefix when it has room, failed engines skipped); then two CPU engines on
 * a tiny model: 32 concurrent greedy requests give exactly the tokens of one
 * engine decoding them one at a time and spread over both; an engine whose
 * backend keeps failing (the fail_at_step hook) fails only its own requests,
 * leaves rotation, and the other serves on; with every engine failed,
 * submissions are refused as unavailable. */
#include "serve/dispatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/synthetic.h"
#include "testutil.h"

/* ---- the policy ------------------------------------------------------------------ */

static struct mm_dispatch_candidate idle(int32_t slots)
{
    struct mm_dispatch_candidate c;
    memset(&c, 0, sizeof c);
    c.load.serving = true;
    c.load.slots = slots;
    c.load.budget = 2048;
    return c;
}

START_TEST(test_pick_least_loaded)
{
    struct mm_dispatch_candidate c[3] = {idle(8), idle(8), idle(8)};
    c[0].load.seqs = 3;
    c[1].load.seqs = 1;
    c[2].load.seqs = 2;
    ck_assert_int_eq(mm_dispatch_pick(c, 3, 1, 0), 1);
    ck_assert_int_eq(mm_dispatch_pick(c, 3, 1, 2), 1);
    /* relative to each engine's size: 4 of 16 is less loaded than 3 of 8 */
    c[1] = idle(16);
    c[1].load.seqs = 4;
    c[2].load.seqs = 3;
    ck_assert_int_eq(mm_dispatch_pick(c, 3, 1, 0), 1);
    /* queued prompt tokens weigh: 4096 tokens at a budget of 2048 = two sequences */
    c[0].load.seqs = 4;
    c[1] = idle(8);
    c[1].load.seqs = 1;
    c[1].load.prefill_tokens = 4096; /* 3 of 8 with it, 1 of 8 without */
    c[2].load.seqs = 2;
    ck_assert_int_eq(mm_dispatch_pick(c, 3, 1, 0), 2);
    ck_assert(mm_dispatch_pressure(&c[1].load) > mm_dispatch_pressure(&c[2].load));
    /* KV pressure: a hybrid engine with its blocks nearly gone */
    c[1] = idle(8);
    c[1].load.kv_total[1] = 100;
    c[1].load.kv_used[1] = 90;
    ck_assert_int_eq(mm_dispatch_pick(c, 3, 1, 0), 2);
    ck_assert(!mm_dispatch_has_room(
        &(struct mm_scheduler_load){.slots = 8, .kv_used = {0, 100}, .kv_total = {0, 100}}, 1));
}
END_TEST

START_TEST(test_pick_ties_rotate)
{
    struct mm_dispatch_candidate c[3] = {idle(8), idle(8), idle(8)};
    for (int start = 0; start < 7; start++)
        ck_assert_int_eq(mm_dispatch_pick(c, 3, 1, start), start % 3);
    ck_assert_int_eq(mm_dispatch_pick(c, 3, 1, -1), 2);
    ck_assert_int_eq(mm_dispatch_pick(c, 0, 1, 0), -1);
}
END_TEST

START_TEST(test_pick_skips_failed)
{
    struct mm_dispatch_candidate c[2] = {idle(8), idle(8)};
    c[1].load.seqs = 8; /* full, but serving */
    c[0].load.serving = false;
    c[0].load.failed = true;
    ck_assert_int_eq(mm_dispatch_pick(c, 2, 1, 0), 1);
    c[0].cached_prefix = 1000; /* a failed engine's cache is no reason to go there */
    ck_assert_int_eq(mm_dispatch_pick(c, 2, 1, 0), 1);
    c[1].load.serving = false;
    ck_assert_int_eq(mm_dispatch_pick(c, 2, 1, 0), -1);
}
END_TEST

START_TEST(test_pick_continuation)
{
    struct mm_dispatch_candidate c[3] = {idle(8), idle(8), idle(8)};
    c[0].load.seqs = 0;
    c[1].load.seqs = 5;
    c[1].cached_prefix = 300;
    c[2].load.seqs = 6;
    c[2].cached_prefix = 500;
    /* the longest prefix wins over the least loaded while it has room */
    ck_assert_int_eq(mm_dispatch_pick(c, 3, 1, 0), 2);
    /* n = 3 does not fit in engine 2's two free slots: engine 1 (3 free) keeps 300 */
    ck_assert_int_eq(mm_dispatch_pick(c, 3, 3, 0), 1);
    /* no engine with the prefix has room: the least loaded */
    c[1].load.seqs = 8;
    c[2].load.seqs = 8;
    ck_assert_int_eq(mm_dispatch_pick(c, 3, 1, 1), 0);
    /* equal prefixes: the less loaded of the two */
    c[1].load.seqs = 2;
    c[2].load.seqs = 1;
    c[1].cached_prefix = c[2].cached_prefix = 400;
    ck_assert_int_eq(mm_dispatch_pick(c, 3, 1, 0), 2);
}
END_TEST

/* ---- two CPU engines --------------------------------------------------------------- */

static char dir[256];

static void setup(void) { mm_test_synthetic_model(dir, sizeof dir, "tiny-linear", 3); }

static void teardown(void) { mm_test_rmdir(dir); }

static struct mm_engine *open_engine(int32_t seqs, int64_t fail_at_step)
{
    struct mm_engine_options o;
    mm_engine_options_default(&o);
    o.n_threads = 1;
    o.max_seqs = seqs;
    o.max_tokens = 512;
    o.max_tiles = 0;
    o.max_context = 1024;
    o.fail_at_step = fail_at_step;
    struct mm_engine *e;
    struct mm_err err;
    ck_assert_msg(mm_engine_open(dir, &o, &e, &err) == MM_OK, "%s", err.msg);
    return e;
}

/* Two engines (the second failing from its step fail1 on when > 0) and a
 * dispatcher over their schedulers. */
static struct mm_dispatch *start(struct mm_engine *e[2], int32_t seqs, int64_t fail0, int64_t fail1)
{
    e[0] = open_engine(seqs, fail0);
    e[1] = open_engine(seqs, fail1);
    struct mm_scheduler_options o;
    mm_scheduler_options_default(&o);
    struct mm_scheduler *s[2];
    struct mm_err err;
    for (int i = 0; i < 2; i++)
        ck_assert_msg(mm_scheduler_create(e[i], NULL, &o, &s[i], &err) == MM_OK, "%s", err.msg);
    const char *names[2] = {"cpu:0", "cpu:1"};
    struct mm_dispatch *d;
    ck_assert_msg(mm_dispatch_create(s, names, 2, &d, &err) == MM_OK, "%s", err.msg);
    ck_assert_int_eq(mm_dispatch_count(d), 2);
    ck_assert_str_eq(mm_dispatch_name(d, 1), "cpu:1");
    return d;
}

#define N_REQ 32
#define MAX_NEW 24

static int64_t make_ids(int k, int32_t *ids)
{
    const int64_t n = 5 + (k * 7) % 40;
    uint32_t x = 1234u + (uint32_t)k * 77u;
    ids[0] = 1;
    for (int64_t i = 1; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        ids[i] = (int32_t)(3 + (x >> 8) % 1000);
    }
    return n;
}

static struct mm_request *make_request(int k, int64_t max_tokens)
{
    int32_t *ids = malloc(64 * sizeof *ids);
    const int64_t n = make_ids(k, ids);
    struct mm_request_params p;
    mm_request_params_default(&p);
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    struct mm_request *r;
    struct mm_err err;
    ck_assert_msg(mm_request_create(&p, ids, n, NULL, 0, &r, &err) == MM_OK, "%s", err.msg);
    return r;
}

/* Every event of r until its FINISH: the ids, the finish reason and status. */
static int collect(struct mm_request *r, int32_t *ids, enum mm_finish_reason *why,
                   enum mm_status *status)
{
    struct mm_event ev;
    int n = 0;
    for (;;) {
        ck_assert_msg(mm_request_wait(r, &ev, 60000), "no event within 60 s");
        if (ev.kind == MM_EVENT_TOKEN) {
            if (n < MAX_NEW * 4)
                ids[n] = ev.token;
            n++;
            continue;
        }
        *why = ev.finish;
        *status = ev.status;
        return n;
    }
}

/* Waits (up to 10 s) until every request has been let go by its engine
 * (its FINISH reaches the consumer just before). */
static void wait_idle(const struct mm_dispatch *d)
{
    for (int i = 0; i < 10000 && mm_dispatch_in_flight(d) > 0; i++)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    ck_assert_int_eq(mm_dispatch_in_flight(d), 0);
}

/* The oracle: one engine, one sequence at a time, greedy. */
static void reference(struct mm_engine *e, int k, int32_t *out)
{
    int32_t ids[64];
    const int64_t n = make_ids(k, ids);
    const int64_t V = e->cfg.vocab_size;
    float *logits = malloc((size_t)V * sizeof *logits);
    int32_t slot;
    struct mm_err err;
    ck_assert_int_eq(mm_engine_slot_acquire(e, &slot, &err), MM_OK);
    struct mm_seq_step st = {slot, ids, n, NULL, 0, true, false};
    ck_assert_msg(mm_engine_forward(e, &st, 1, logits, &err) == MM_OK, "%s", err.msg);
    for (int t = 0;;) {
        int32_t best = 0;
        for (int64_t i = 1; i < V; i++)
            if (logits[i] > logits[best])
                best = (int32_t)i;
        out[t++] = best;
        if (t == MAX_NEW)
            break;
        st = (struct mm_seq_step){slot, &out[t - 1], 1, NULL, 0, true, true};
        ck_assert_msg(mm_engine_forward(e, &st, 1, logits, &err) == MM_OK, "%s", err.msg);
    }
    mm_engine_slot_release(e, slot);
    free(logits);
}

START_TEST(test_two_engines_exact)
{
    struct mm_engine *e[2];
    struct mm_dispatch *d = start(e, 8, 0, 0);
    struct mm_request *r[N_REQ];
    int where[N_REQ];
    struct mm_err err;
    for (int k = 0; k < N_REQ; k++) { /* 32 at once: 16 run, 16 queue */
        r[k] = make_request(k, MAX_NEW);
        ck_assert_msg(mm_dispatch_submit(d, r[k], &where[k], &err) == MM_OK, "%s", err.msg);
    }
    int on[2] = {0, 0};
    for (int k = 0; k < N_REQ; k++)
        on[where[k]]++;
    ck_assert_int_gt(on[0], 8); /* spread: neither takes everything */
    ck_assert_int_gt(on[1], 8);
    struct mm_engine *ref = open_engine(1, 0);
    for (int k = 0; k < N_REQ; k++) {
        int32_t got[MAX_NEW * 4], want[MAX_NEW];
        enum mm_finish_reason why;
        enum mm_status status;
        ck_assert_int_eq(collect(r[k], got, &why, &status), MAX_NEW);
        ck_assert_int_eq(why, MM_FINISH_LENGTH);
        reference(ref, k, want);
        ck_assert_msg(memcmp(got, want, sizeof want) == 0, "request %d (engine %d) differs", k,
                      where[k]);
        mm_request_release(r[k]);
    }
    mm_engine_close(ref);
    /* visible per engine: placements and generated tokens */
    struct mm_metrics_snapshot sum, per[2];
    mm_dispatch_metrics(d, &sum, per);
    for (int i = 0; i < 2; i++) {
        ck_assert_uint_eq(mm_dispatch_placed(d, i), (uint64_t)on[i]);
        ck_assert_uint_eq(per[i].generation_tokens, (uint64_t)on[i] * MAX_NEW);
    }
    ck_assert_uint_eq(sum.generation_tokens, (uint64_t)N_REQ * MAX_NEW);
    ck_assert_uint_eq(sum.hist[MM_HIST_TTFT].count, N_REQ);
    ck_assert_int_eq(sum.slots_total, 16);
    wait_idle(d);
    ck_assert_int_eq(mm_dispatch_serving(d), 2);
    mm_dispatch_free(d, 1000);
    mm_engine_close(e[0]);
    mm_engine_close(e[1]);
}
END_TEST

START_TEST(test_failed_engine)
{
    struct mm_engine *e[2];
    /* engine 1 faults at its 5th step and stays faulted, like a lost GPU */
    struct mm_dispatch *d = start(e, 4, 0, 5);
    enum { N = 8, LONG = 60 };
    struct mm_request *r[N];
    int where[N];
    struct mm_err err;
    for (int k = 0; k < N; k++) {
        r[k] = make_request(k, LONG);
        ck_assert_msg(mm_dispatch_submit(d, r[k], &where[k], &err) == MM_OK, "%s", err.msg);
    }
    int failed = 0;
    for (int k = 0; k < N; k++) {
        int32_t got[MAX_NEW * 4];
        enum mm_finish_reason why;
        enum mm_status status;
        const int n = collect(r[k], got, &why, &status);
        if (where[k] == 0) { /* the healthy engine's requests are untouched */
            ck_assert_int_eq(why, MM_FINISH_LENGTH);
            ck_assert_int_eq(n, LONG);
        } else {
            ck_assert_int_eq(why, MM_FINISH_ERROR);
            ck_assert_int_eq(status, MM_ERR_BACKEND);
            ck_assert_int_lt(n, LONG);
            failed++;
        }
        mm_request_release(r[k]);
    }
    ck_assert_int_ge(failed, 1); /* its first request was running at the fault */
    ck_assert(mm_dispatch_failed(d, 1));
    ck_assert(!mm_dispatch_failed(d, 0));
    ck_assert_int_eq(mm_dispatch_serving(d), 1);
    /* what comes next goes to engine 0 and succeeds */
    struct mm_engine *ref = open_engine(1, 0);
    for (int k = 0; k < 6; k++) {
        struct mm_request *q = make_request(100 + k, MAX_NEW);
        int at = -1;
        ck_assert_msg(mm_dispatch_submit(d, q, &at, &err) == MM_OK, "%s", err.msg);
        ck_assert_int_eq(at, 0);
        int32_t got[MAX_NEW * 4], want[MAX_NEW];
        enum mm_finish_reason why;
        enum mm_status status;
        ck_assert_int_eq(collect(q, got, &why, &status), MAX_NEW);
        reference(ref, 100 + k, want);
        ck_assert(memcmp(got, want, sizeof want) == 0);
        mm_request_release(q);
    }
    mm_engine_close(ref);
    struct mm_metrics_snapshot sum, per[2];
    mm_dispatch_metrics(d, &sum, per);
    ck_assert_uint_eq(per[0].requests_finished[MM_FINISH_ERROR], 0);
    ck_assert_uint_eq(per[1].requests_finished[MM_FINISH_ERROR], (uint64_t)failed);
    ck_assert_uint_ge(per[1].step_errors, 1);
    mm_dispatch_free(d, 1000);
    mm_engine_close(e[0]);
    mm_engine_close(e[1]);
}
END_TEST

START_TEST(test_all_failed)
{
    struct mm_engine *e[2];
    struct mm_dispatch *d = start(e, 4, 1, 1);
    struct mm_err err;
    for (int k = 0; k < 2; k++) { /* one lands on each and fails it */
        struct mm_request *r = make_request(k, 8);
        ck_assert_int_eq(mm_dispatch_submit(d, r, NULL, &err), MM_OK);
        int32_t got[MAX_NEW * 4];
        enum mm_finish_reason why;
        enum mm_status status;
        collect(r, got, &why, &status);
        ck_assert_int_eq(why, MM_FINISH_ERROR);
        mm_request_release(r);
    }
    ck_assert_int_eq(mm_dispatch_serving(d), 0);
    struct mm_request *r = make_request(5, 8);
    ck_assert_int_eq(mm_dispatch_submit(d, r, NULL, &err), MM_ERR_UNAVAILABLE);
    mm_request_release(r);
    wait_idle(d);
    mm_dispatch_free(d, 1000);
    mm_engine_close(e[0]);
    mm_engine_close(e[1]);
}
END_TEST

/* A draining engine takes nothing new; with all draining, 503-style refusal. */
START_TEST(test_draining)
{
    struct mm_engine *e[2];
    struct mm_dispatch *d = start(e, 4, 0, 0);
    mm_scheduler_drain(mm_dispatch_scheduler(d, 0));
    struct mm_err err;
    for (int k = 0; k < 4; k++) {
        struct mm_request *r = make_request(k, 4);
        int at = -1;
        ck_assert_msg(mm_dispatch_submit(d, r, &at, &err) == MM_OK, "%s", err.msg);
        ck_assert_int_eq(at, 1);
        int32_t got[MAX_NEW * 4];
        enum mm_finish_reason why;
        enum mm_status status;
        ck_assert_int_eq(collect(r, got, &why, &status), 4);
        mm_request_release(r);
    }
    mm_dispatch_drain(d);
    struct mm_request *r = make_request(9, 4);
    ck_assert_int_eq(mm_dispatch_submit(d, r, NULL, &err), MM_ERR_UNAVAILABLE);
    mm_request_release(r);
    ck_assert_int_eq(mm_dispatch_serving(d), 2); /* draining is not failing */
    mm_dispatch_free(d, 1000);
    mm_engine_close(e[0]);
    mm_engine_close(e[1]);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("dispatch");
    TCase *p = tcase_create("policy");
    tcase_add_test(p, test_pick_least_loaded);
    tcase_add_test(p, test_pick_ties_rotate);
    tcase_add_test(p, test_pick_skips_failed);
    tcase_add_test(p, test_pick_continuation);
    suite_add_tcase(s, p);
    TCase *e = tcase_create("engines");
    tcase_add_checked_fixture(e, setup, teardown);
    tcase_set_timeout(e, 300);
    tcase_add_test(e, test_two_engines_exact);
    tcase_add_test(e, test_failed_engine);
    tcase_add_test(e, test_all_failed);
    tcase_add_test(e, test_draining);
    suite_add_tcase(s, e);
    return s;
}

int main(void) { return mm_test_run(suite()); }
