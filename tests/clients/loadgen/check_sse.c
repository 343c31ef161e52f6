/* check_sse.c: the text/event-stream parser of clients/loadgen/sse.c: events
 * survive any split of the byte stream, every line-ending style, multi-line
 * data, comments, and the size limit holds. */
#include "loadgen/sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

struct sink {
    char got[16][128];
    int n;
    int stop_after; /* > 0: return MM_ERR_INVALID on that event */
};

static enum mm_status collect(void *user, const char *data, size_t len)
{
    struct sink *s = user;
    ck_assert_uint_eq(strlen(data), len);
    if (s->n < 16)
        snprintf(s->got[s->n], sizeof(s->got[0]), "%s", data);
    s->n++;
    return s->stop_after && s->n == s->stop_after ? MM_ERR_INVALID : MM_OK;
}

static const char stream[] = "data: {\"a\":1}\n\n"
                             ": ping\n\n"
                             "data:{\"b\":2}\r\n\r\n"
                             "event: message\rdata: x\rdata: y\r\r"
                             "id: 7\n\n"
                             "data\n\n"
                             "data: [DONE]\n\n";

static void check_events(const struct sink *s)
{
    ck_assert_int_eq(s->n, 5);
    ck_assert_str_eq(s->got[0], "{\"a\":1}");
    ck_assert_str_eq(s->got[1], "{\"b\":2}");
    ck_assert_str_eq(s->got[2], "x\ny");
    ck_assert_str_eq(s->got[3], ""); /* a bare "data" line is an empty data value */
    ck_assert_str_eq(s->got[4], "[DONE]");
}

START_TEST(test_whole_and_every_split)
{
    const size_t n = strlen(stream);
    for (size_t cut = 0; cut <= n; cut++) {
        struct sink s = {0};
        struct mm_sse p;
        struct mm_err err;
        mm_sse_init(&p, 1024, collect, &s);
        ck_assert_int_eq(mm_sse_feed(&p, stream, cut, &err), MM_OK);
        ck_assert_int_eq(mm_sse_feed(&p, stream + cut, n - cut, &err), MM_OK);
        check_events(&s);
        ck_assert_int_eq(p.n_comments, 1);
        ck_assert_int_eq(p.n_events, 5);
        mm_sse_free(&p);
    }
}
END_TEST

START_TEST(test_byte_at_a_time)
{
    struct sink s = {0};
    struct mm_sse p;
    struct mm_err err;
    mm_sse_init(&p, 1024, collect, &s);
    for (size_t i = 0; stream[i]; i++)
        ck_assert_int_eq(mm_sse_feed(&p, stream + i, 1, &err), MM_OK);
    check_events(&s);
    mm_sse_free(&p);
}
END_TEST

START_TEST(test_unterminated_event_not_dispatched)
{
    struct sink s = {0};
    struct mm_sse p;
    struct mm_err err;
    mm_sse_init(&p, 1024, collect, &s);
    ck_assert_int_eq(mm_sse_feed(&p, "data: a\n\ndata: b\n", 17, &err), MM_OK);
    ck_assert_int_eq(s.n, 1);
    ck_assert_int_eq(mm_sse_feed(&p, "\n", 1, &err), MM_OK);
    ck_assert_int_eq(s.n, 2);
    ck_assert_str_eq(s.got[1], "b");
    mm_sse_free(&p);
}
END_TEST

START_TEST(test_limit)
{
    struct sink s = {0};
    struct mm_sse p;
    struct mm_err err;
    mm_sse_init(&p, 32, collect, &s);
    char big[100];
    memset(big, 'x', sizeof(big));
    ck_assert_int_eq(mm_sse_feed(&p, "data: ", 6, &err), MM_OK);
    ck_assert_int_eq(mm_sse_feed(&p, big, sizeof(big), &err), MM_ERR_LIMIT);
    mm_sse_free(&p);
    /* Many small data lines add up to the same limit. */
    mm_sse_init(&p, 32, collect, &s);
    enum mm_status st = MM_OK;
    for (int i = 0; i < 20 && st == MM_OK; i++)
        st = mm_sse_feed(&p, "data: abc\n", 10, &err);
    ck_assert_int_eq(st, MM_ERR_LIMIT);
    ck_assert_int_eq(s.n, 0);
    mm_sse_free(&p);
}
END_TEST

START_TEST(test_callback_stops)
{
    struct sink s = {.stop_after = 1};
    struct mm_sse p;
    struct mm_err err;
    mm_sse_init(&p, 1024, collect, &s);
    ck_assert_int_eq(mm_sse_feed(&p, "data: a\n\ndata: b\n\n", 18, &err), MM_ERR_INVALID);
    ck_assert_int_eq(s.n, 1);
    mm_sse_free(&p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("clients/loadgen/sse");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_whole_and_every_split);
    tcase_add_test(tc, test_byte_at_a_time);
    tcase_add_test(tc, test_unterminated_event_not_dispatched);
    tcase_add_test(tc, test_limit);
    tcase_add_test(tc, test_callback_stops);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
