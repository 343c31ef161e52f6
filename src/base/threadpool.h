/* threadpool.h: a fixed pool of worker threads running parallel-for loops.
 *
 * Design: one job at a time, issued by one owner thread (the engine thread):
 * mm_threadpool_run splits [0, n) into contiguous ranges, runs them on the
 * workers and the caller, and returns when all are done. No allocation per
 * job, so it can sit in the per-step loop. */
#ifndef MM_BASE_THREADPOOL_H
#define MM_BASE_THREADPOOL_H

#include <stdint.h>

#include "base/status.h"

struct mm_threadpool;

/* fn(arg, begin, end, worker) processes items [begin, end); worker is the
 * index (0 .. size-1) of the thread running it, for per-thread scratch. */
typedef void (*mm_parallel_fn)(void *arg, int64_t begin, int64_t end, int worker);

/* n_threads total (including the caller); 0 = number of online CPUs.
 * *out is owned by the caller (mm_threadpool_free). */
enum mm_status mm_threadpool_create(int n_threads, struct mm_threadpool **out, struct mm_err *err);
void mm_threadpool_free(struct mm_threadpool *tp);
int mm_threadpool_size(const struct mm_threadpool *tp);

/* Runs fn over [0, n) in chunks of at least `grain` items. tp may be NULL
 * (runs inline). Not reentrant: call from one thread at a time. */
void mm_threadpool_run(struct mm_threadpool *tp, int64_t n, int64_t grain, mm_parallel_fn fn,
                       void *arg);

#endif
