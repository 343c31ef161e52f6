/* threadpool.c: condition-variable worker pool (see threadpool.h). Workers
 * sleep between jobs; a job is published with a generation counter. */
#include "base/threadpool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct mm_threadpool {
    int n; /* threads including the caller */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    uint64_t generation;
    int pending; /* workers still running the current job */
    int stop;
    /* current job */
    mm_parallel_fn fn;
    void *arg;
    int64_t total, chunk;
};

static void run_share(struct mm_threadpool *tp, int idx)
{
    const int64_t begin = (int64_t)idx * tp->chunk;
    int64_t end = begin + tp->chunk;
    if (end > tp->total)
        end = tp->total;
    if (begin < end)
        tp->fn(tp->arg, begin, end, idx);
}

static void *worker(void *p)
{
    struct mm_threadpool *tp = ((void **)p)[0];
    const int idx = (int)(intptr_t)((void **)p)[1];
    free(p);
    uint64_t seen = 0;
    pthread_mutex_lock(&tp->mu);
    for (;;) {
        while (!tp->stop && tp->generation == seen)
            pthread_cond_wait(&tp->wake, &tp->mu);
        if (tp->stop)
            break;
        seen = tp->generation;
        pthread_mutex_unlock(&tp->mu);
        run_share(tp, idx);
        pthread_mutex_lock(&tp->mu);
        if (--tp->pending == 0)
            pthread_cond_signal(&tp->done);
    }
    pthread_mutex_unlock(&tp->mu);
    return NULL;
}

enum mm_status mm_threadpool_create(int n_threads, struct mm_threadpool **out, struct mm_err *err)
{
    if (n_threads <= 0) {
        const long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    if (n_threads > 256)
        n_threads = 256;
    struct mm_threadpool *tp = calloc(1, sizeof *tp);
    if (!tp)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    tp->n = n_threads;
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->wake, NULL);
    pthread_cond_init(&tp->done, NULL);
    tp->threads = calloc((size_t)n_threads, sizeof *tp->threads);
    if (!tp->threads) {
        tp->n = 1; /* no workers to join */
        mm_threadpool_free(tp);
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    }
    for (int i = 1; i < n_threads; i++) {
        void **arg = malloc(2 * sizeof *arg);
        if (!arg) {
            tp->n = i;
            mm_threadpool_free(tp);
            return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        }
        arg[0] = tp;
        arg[1] = (void *)(intptr_t)i;
        if (pthread_create(&tp->threads[i], NULL, worker, arg) != 0) {
            free(arg);
            tp->n = i;
            mm_threadpool_free(tp);
            return mm_err_set(err, MM_ERR_NOMEM, "cannot start worker thread");
        }
    }
    *out = tp;
    return MM_OK;
}

void mm_threadpool_free(struct mm_threadpool *tp)
{
    if (!tp)
        return;
    pthread_mutex_lock(&tp->mu);
    tp->stop = 1;
    pthread_cond_broadcast(&tp->wake);
    pthread_mutex_unlock(&tp->mu);
    for (int i = 1; i < tp->n; i++)
        pthread_join(tp->threads[i], NULL);
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->wake);
    pthread_cond_destroy(&tp->done);
    free(tp->threads);
    free(tp);
}

int mm_threadpool_size(const struct mm_threadpool *tp) { return tp ? tp->n : 1; }

void mm_threadpool_run(struct mm_threadpool *tp, int64_t n, int64_t grain, mm_parallel_fn fn,
                       void *arg)
{
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    int parts = tp ? tp->n : 1;
    if ((n + grain - 1) / grain < parts)
        parts = (int)((n + grain - 1) / grain);
    if (parts <= 1) {
        fn(arg, 0, n, 0);
        return;
    }
    pthread_mutex_lock(&tp->mu);
    tp->fn = fn;
    tp->arg = arg;
    tp->total = n;
    tp->chunk = (n + tp->n - 1) / tp->n;
    if (tp->chunk < grain)
        tp->chunk = grain;
    tp->pending = tp->n - 1;
    tp->generation++;
    pthread_cond_broadcast(&tp->wake);
    pthread_mutex_unlock(&tp->mu);
    run_share(tp, 0);
    pthread_mutex_lock(&tp->mu);
    while (tp->pending > 0)
        pthread_cond_wait(&tp->done, &tp->mu);
    pthread_mutex_unlock(&tp->mu);
}
