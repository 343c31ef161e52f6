/* check_request.c: the request object and its event channel
 * (src/serve/request.c): parameter checks, ownership, events in order with
 * their text, poll/take/wait, notify and its detach guarantee, reference
 * counting from two threads. */
#include "serve/request_engine.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "serve/state_cache.h"
#include "testutil.h"

static int32_t *ids_of(int n)
{
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    for (int i = 0; i < n; i++)
        ids[i] = 5 + i;
    return ids;
}

START_TEST(test_params_checked)
{
    struct mm_request_params p;
    struct mm_request *r;
    struct mm_err err;
    mm_request_params_default(&p);
    ck_assert_int_eq(mm_request_create(&p, ids_of(3), 3, NULL, 0, &r, &err), MM_OK);
    ck_assert_int_eq(mm_request_n(r), 1);
    ck_assert_int_eq(mm_request_prompt_tokens(r), 3);
    ck_assert_str_eq(mm_request_id(r), "");
    mm_request_release(r);
    /* each bad field is refused, and the ids are freed anyway (ASan) */
    struct mm_request_params bad[9];
    for (int i = 0; i < 9; i++)
        mm_request_params_default(&bad[i]);
    bad[0].n = 0;
    bad[1].sample.top_p = 0;
    bad[2].sample.temperature = -1;
    bad[3].sample.n_logprobs = MM_MAX_LOGPROBS + 1;
    bad[4].sample.repetition_penalty = 0;
    bad[5].max_tokens = -2;
    const char *empty[1] = {""}, *broken[1] = {"\xc3("};
    bad[6].stop = empty;
    bad[6].n_stop = 1;
    bad[7].stop = broken;
    bad[7].n_stop = 1;
    bad[8].sample.min_p = 1.5f;
    for (int i = 0; i < 9; i++)
        ck_assert_msg(mm_request_create(&bad[i], ids_of(3), 3, NULL, 0, &r, &err) == MM_ERR_INVALID,
                      "case %d accepted", i);
    ck_assert_int_eq(mm_request_create(&p, ids_of(3), 0, NULL, 0, &r, &err), MM_ERR_INVALID);
    /* parameters are copied */
    char stop[8] = "abc";
    const char *stops[1] = {stop};
    const int32_t sid[2] = {7, 8};
    p.id = "req-1";
    p.stop = stops;
    p.n_stop = 1;
    p.stop_ids = sid;
    p.n_stop_ids = 2;
    p.n = 3;
    ck_assert_int_eq(mm_request_create(&p, ids_of(4), 4, NULL, 0, &r, &err), MM_OK);
    stop[0] = 'X';
    const struct mm_request_params *q = mm_request_params_of(r);
    ck_assert_str_eq(q->stop[0], "abc");
    ck_assert_int_eq(q->stop_ids[1], 8);
    ck_assert_str_eq(mm_request_id(r), "req-1");
    ck_assert(mm_request_claim(r));
    ck_assert(!mm_request_claim(r));
    mm_request_release(r);
}
END_TEST

static void push_token(struct mm_request *r, int choice, int index, const char *text)
{
    struct mm_event ev = {.choice = choice,
                          .token = 100 + index,
                          .index = index,
                          .text = text,
                          .len = strlen(text),
                          .logprob = -0.5f,
                          .n_top = 1};
    ev.top[0] = (struct mm_token_logprob){100 + index, -0.5f};
    struct mm_err err;
    ck_assert_int_eq(mm_request_push_token(r, &ev, &err), MM_OK);
}

static void push_finish(struct mm_request *r, int choice, enum mm_finish_reason f, const char *msg)
{
    struct mm_event ev = {.choice = choice,
                          .finish = f,
                          .text = "",
                          .len = 0,
                          .completion_tokens = 2,
                          .prompt_tokens = 3,
                          .status = msg ? MM_ERR_BACKEND : MM_OK,
                          .message = msg};
    mm_request_push_finish(r, &ev);
}

START_TEST(test_events_in_order)
{
    struct mm_request_params p;
    mm_request_params_default(&p);
    p.n = 2;
    struct mm_request *r;
    struct mm_err err;
    ck_assert_int_eq(mm_request_create(&p, ids_of(3), 3, NULL, 0, &r, &err), MM_OK);
    struct mm_event ev, evs[8];
    ck_assert(!mm_request_poll(r, &ev));
    ck_assert(!mm_request_wait(r, &ev, 10)); /* timeout */
    /* many events with text: the channel grows; texts stay valid until the
     * next take */
    char buf[32];
    for (int i = 0; i < 300; i++) {
        snprintf(buf, sizeof buf, "t%d;", i);
        push_token(r, i % 2, i / 2, buf);
    }
    mm_request_flush(r);
    ck_assert(!mm_request_done(r));
    int got = 0;
    for (int k; (k = mm_request_take(r, evs, 8)) > 0;)
        for (int j = 0; j < k; j++, got++) {
            snprintf(buf, sizeof buf, "t%d;", got);
            ck_assert_int_eq(evs[j].kind, MM_EVENT_TOKEN);
            ck_assert_int_eq(evs[j].choice, got % 2);
            ck_assert_uint_eq(evs[j].len, strlen(buf));
            ck_assert(memcmp(evs[j].text, buf, evs[j].len) == 0);
            ck_assert_int_eq(evs[j].top[0].id, 100 + got / 2);
        }
    ck_assert_int_eq(got, 300);
    push_finish(r, 0, MM_FINISH_LENGTH, NULL);
    push_finish(r, 1, MM_FINISH_ERROR, "device lost");
    mm_request_flush(r);
    ck_assert(mm_request_done(r));
    ck_assert(mm_request_wait(r, &ev, -1));
    ck_assert_int_eq(ev.kind, MM_EVENT_FINISH);
    ck_assert_int_eq(ev.finish, MM_FINISH_LENGTH);
    ck_assert_str_eq(ev.message, "");
    ck_assert(mm_request_wait(r, &ev, -1));
    ck_assert_int_eq(ev.finish, MM_FINISH_ERROR);
    ck_assert_int_eq(ev.status, MM_ERR_BACKEND);
    ck_assert_str_eq(ev.message, "device lost");
    ck_assert_str_eq(mm_finish_reason_str(ev.finish), "error");
    ck_assert(!mm_request_wait(r, &ev, -1)); /* all FINISH taken: no blocking */
    mm_request_release(r);
}
END_TEST

struct notify_state {
    atomic_int calls;
    atomic_int running;
};

static void slow_notify(void *user)
{
    struct notify_state *n = user;
    atomic_store(&n->running, 1);
    nanosleep(&(struct timespec){0, 50000000}, NULL);
    atomic_fetch_add(&n->calls, 1);
    atomic_store(&n->running, 0);
}

struct producer {
    struct mm_request *r;
    struct notify_state *n;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    push_token(p->r, 0, 0, "x");
    mm_request_flush(p->r); /* runs slow_notify for 50 ms */
    push_finish(p->r, 0, MM_FINISH_STOP, NULL);
    mm_request_flush(p->r);
    mm_request_release(p->r); /* the engine's reference */
    return NULL;
}

/* Clearing the callback waits out a running one; after it, no call. The
 * consumer may drop its reference before the producer is done. */
START_TEST(test_notify_detach_and_refs)
{
    struct mm_request_params p;
    mm_request_params_default(&p);
    struct mm_request *r;
    struct mm_err err;
    ck_assert_int_eq(mm_request_create(&p, ids_of(2), 2, NULL, 0, &r, &err), MM_OK);
    static struct notify_state n;
    atomic_store(&n.calls, 0);
    mm_request_set_notify(r, slow_notify, &n);
    mm_request_flush(r); /* nothing queued: no call */
    ck_assert_int_eq(atomic_load(&n.calls), 0);
    mm_request_ref(r);
    struct producer pr = {r, &n};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, produce, &pr), 0);
    while (atomic_load(&n.calls) == 0 && !atomic_load(&n.running))
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    mm_request_set_notify(r, NULL, NULL);
    ck_assert_int_eq(atomic_load(&n.running), 0); /* not running after the detach */
    const int calls = atomic_load(&n.calls);      /* 1, or 2 if the second flush won the lock */
    ck_assert(calls == 1 || calls == 2);
    mm_request_cancel(r);
    ck_assert(mm_request_cancelled(r));
    mm_request_release(r); /* the consumer goes first */
    pthread_join(t, NULL);
    ck_assert_int_eq(atomic_load(&n.calls), calls); /* none after the detach */
}
END_TEST

/* The state-cache keys are computed once and kept: the same arrays on
 * every call (from several threads), equal to mm_state_keys'. */
struct keys_call {
    struct mm_request *r;
    const uint64_t *keys, *ph;
    enum mm_status st;
};

static void *keys_thread(void *arg)
{
    struct keys_call *k = arg;
    struct mm_err err;
    k->st = mm_request_state_keys(k->r, 12, 9, 2, &k->keys, &k->ph, &err);
    return NULL;
}

START_TEST(test_state_keys_once)
{
    struct mm_request_params p;
    mm_request_params_default(&p);
    struct mm_err err;
    struct mm_request *r;
    int32_t *ids = malloc(7 * sizeof *ids);
    const int32_t want_ids[7] = {1, 9, 9, 2, 9, 9, 3}; /* two tiles of 2 tokens */
    memcpy(ids, want_ids, sizeof want_ids);
    float *tiles = malloc(2 * 12 * sizeof *tiles);
    for (int i = 0; i < 24; i++)
        tiles[i] = (float)i * 0.25f;
    ck_assert_int_eq(mm_request_create(&p, ids, 7, tiles, 2, &r, &err), MM_OK);
    struct keys_call calls[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        calls[i] = (struct keys_call){.r = r};
        ck_assert_int_eq(pthread_create(&th[i], NULL, keys_thread, &calls[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    int64_t n, n_tiles;
    const int32_t *rid = mm_request_prompt(r, &n);
    const float *rt = mm_request_tiles(r, &n_tiles);
    uint64_t *want, ph[7];
    ck_assert_int_eq(mm_state_keys(rid, n, rt, n_tiles, 12, 9, 2, &want, &err), MM_OK);
    mm_state_prefix_hashes(want, n, ph);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(calls[i].st, MM_OK);
        ck_assert_ptr_eq(calls[i].keys, calls[0].keys); /* one computation, kept */
        ck_assert_ptr_eq(calls[i].ph, calls[0].ph);
    }
    ck_assert_mem_eq(calls[0].keys, want, sizeof ph);
    ck_assert_mem_eq(calls[0].ph, ph, sizeof ph);
    ck_assert_uint_ne(want[1], want[4]); /* different tiles, different keys */
    const uint64_t *k, *h;
    ck_assert_int_eq(mm_request_state_keys(r, 12, 9, 2, &k, &h, &err), MM_OK);
    ck_assert_ptr_eq(k, calls[0].keys);
    /* other parameters: refused (the caller computes its own) */
    ck_assert_int_eq(mm_request_state_keys(r, 6, 9, 2, &k, &h, &err), MM_ERR_INVALID);
    mm_request_release(r);

    /* given tile digests (a stored conversation's): the keys are made from them */
    for (int wrong = 0; wrong < 3; wrong++) {
        ids = malloc(7 * sizeof *ids);
        memcpy(ids, want_ids, sizeof want_ids);
        tiles = malloc(2 * 12 * sizeof *tiles);
        for (int i = 0; i < 24; i++)
            tiles[i] = (float)i * 0.25f;
        uint64_t *dg = malloc(4 * sizeof *dg);
        mm_state_tile_digest(tiles, 12, dg);
        mm_state_tile_digest(tiles + 12, 12, dg + 2);
        dg[2] ^= wrong == 1; /* a digest of other pixels: other keys, so they are used */
        ck_assert_int_eq(mm_request_create(&p, ids, 7, tiles, 2, &r, &err), MM_OK);
        mm_request_set_tile_digests(r, dg, wrong == 2 ? 6 : 12); /* 2: for other tiles */
        ck_assert_int_eq(mm_request_state_keys(r, 12, 9, 2, &k, &h, &err), MM_OK);
        if (wrong == 1) {
            ck_assert_mem_eq(k, want, 4 * sizeof *k); /* the first tile's are the same */
            ck_assert_uint_ne(k[4], want[4]);
        } else {
            ck_assert_mem_eq(k, want, 7 * sizeof *k);
        }
        mm_request_release(r);
    }
    free(want);

    /* image positions that do not match the tiles: refused, every time */
    ids = malloc(3 * sizeof *ids);
    ids[0] = 9, ids[1] = 9, ids[2] = 9;
    ck_assert_int_eq(mm_request_create(&p, ids, 3, NULL, 0, &r, &err), MM_OK);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(mm_request_state_keys(r, 12, 9, 2, &k, &h, &err), MM_ERR_INVALID);
    mm_request_release(r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("serve/request");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_params_checked);
    tcase_add_test(tc, test_events_in_order);
    tcase_add_test(tc, test_notify_detach_and_refs);
    tcase_add_test(tc, test_state_keys_once);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
