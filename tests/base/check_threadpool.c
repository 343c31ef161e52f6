/* check_threadpool.c: parallel-for coverage and worker ids (src/base/threadpool.c). */
#include "base/threadpool.h"

#include <stdatomic.h>
#include <string.h>

#include "testutil.h"

struct job {
    atomic_int hits[1000];
    int n_threads;
    atomic_int bad_worker;
};

static void body(void *arg, int64_t b, int64_t e, int worker)
{
    struct job *j = arg;
    if (worker < 0 || worker >= j->n_threads)
        atomic_fetch_add(&j->bad_worker, 1);
    for (int64_t i = b; i < e; i++)
        atomic_fetch_add(&j->hits[i], 1);
}

START_TEST(test_every_item_once)
{
    const int sizes[] = {1, 2, 3, 8};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        struct mm_threadpool *tp;
        struct mm_err err;
        ck_assert_int_eq(mm_threadpool_create(sizes[s], &tp, &err), MM_OK);
        ck_assert_int_eq(mm_threadpool_size(tp), sizes[s]);
        static struct job j;
        for (int n = 0; n < 1000; n += 97) {
            for (int grain = 1; grain < 300; grain += 120) {
                memset(&j, 0, sizeof j);
                j.n_threads = sizes[s];
                mm_threadpool_run(tp, n, grain, body, &j);
                for (int i = 0; i < 1000; i++)
                    ck_assert_int_eq(atomic_load(&j.hits[i]), i < n ? 1 : 0);
                ck_assert_int_eq(atomic_load(&j.bad_worker), 0);
            }
        }
        mm_threadpool_free(tp);
    }
    static struct job j;
    memset(&j, 0, sizeof j);
    j.n_threads = 1;
    mm_threadpool_run(NULL, 10, 1, body, &j); /* inline */
    ck_assert_int_eq(atomic_load(&j.hits[9]), 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("base/threadpool");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_every_item_once);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
