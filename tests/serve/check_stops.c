/* check_stops.c: stop strings across token boundaries (src/serve/stops.c):
 * held back while they may still match, never released once matched,
 * released when they turn out not to match, and every split of a text
 * into pieces gives the same result as the whole. */
#include "serve/stops.h"

#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* Feeds pieces; returns the released text (and whether a stop matched). */
static size_t run(const char *const *stops, int n_stop, const char *const *pieces, int n,
                  bool finish, char *out, bool *matched)
{
    struct mm_stops m;
    struct mm_err err;
    ck_assert_int_eq(mm_stops_init(&m, stops, n_stop, &err), MM_OK);
    size_t len = 0;
    *matched = false;
    for (int i = 0; i < n && !*matched; i++) {
        const char *o;
        size_t ol;
        const bool last = finish && i == n - 1;
        ck_assert_int_eq((last ? mm_stops_finish : mm_stops_feed)(&m, pieces[i], strlen(pieces[i]),
                                                                  &o, &ol, matched, &err),
                         MM_OK);
        memcpy(out + len, o, ol);
        len += ol;
    }
    out[len] = 0;
    mm_stops_free(&m);
    return len;
}

START_TEST(test_split_stop_not_emitted)
{
    const char *stops[2] = {"STOP", "\xc3\xa9t\xc3\xa9"};
    char out[256];
    bool matched;
    const char *p1[] = {"Hello S", "TO", "P and more"};
    run(stops, 2, p1, 3, false, out, &matched);
    ck_assert(matched);
    ck_assert_str_eq(out, "Hello ");
    /* a held prefix that does not complete is released */
    const char *p2[] = {"a ST", "OCK b", "c"};
    run(stops, 2, p2, 3, false, out, &matched);
    ck_assert(!matched);
    ck_assert_str_eq(out, "a STOCK bc");
    /* a partial match at the end: held back, and released by finish */
    const char *p3[] = {"x", "yz ST"};
    run(stops, 2, p3, 2, false, out, &matched);
    ck_assert_str_eq(out, "xyz ");
    run(stops, 2, p3, 2, true, out, &matched);
    ck_assert(!matched);
    ck_assert_str_eq(out, "xyz ST");
    /* multi-byte stop string split inside its characters' sequence */
    const char *p4[] = {"l'\xc3\xa9", "t", "\xc3\xa9 fini"};
    run(stops, 2, p4, 3, false, out, &matched);
    ck_assert(matched);
    ck_assert_str_eq(out, "l'");
    /* the earliest of two matches wins; no stop strings: all released */
    const char *p5[] = {"ab\xc3\xa9t\xc3\xa9STOP"};
    run(stops, 2, p5, 1, false, out, &matched);
    ck_assert_str_eq(out, "ab");
    run(NULL, 0, p5, 1, false, out, &matched);
    ck_assert(!matched);
    ck_assert_str_eq(out, p5[0]);
}
END_TEST

/* Every way of cutting a text into pieces gives the one-piece answer. */
START_TEST(test_any_split)
{
    const char *stops[3] = {"aab", "ba", "xyzzy"};
    const char *texts[] = {"cccaaabcc", "xyzzxyzzy", "bbbbbba", "aaaaaaaa", "qxyzzaab"};
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        const size_t n = strlen(texts[t]);
        char want[64], got[64];
        bool wm, gm;
        const char *whole[1] = {texts[t]};
        run(stops, 3, whole, 1, true, want, &wm);
        for (unsigned mask = 0; mask < 1u << (n - 1); mask++) {
            char buf[64][64];
            const char *pieces[64];
            int np = 0;
            size_t start = 0;
            for (size_t i = 1; i <= n; i++)
                if (i == n || (mask >> (i - 1) & 1)) {
                    memcpy(buf[np], texts[t] + start, i - start);
                    buf[np][i - start] = 0;
                    pieces[np] = buf[np];
                    np++;
                    start = i;
                }
            run(stops, 3, pieces, np, true, got, &gm);
            ck_assert_str_eq(got, want);
            ck_assert_int_eq(gm, wm);
        }
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("serve/stops");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_split_stop_not_emitted);
    tcase_add_test(tc, test_any_split);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
