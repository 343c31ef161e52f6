/* stats.h: the summary statistics the load generator reports, defined as
 * vLLM's `bench serve` defines them (numpy semantics) so numbers compare:
 * mean, median, population standard deviation, and percentiles by linear
 * interpolation between the closest ranks.
 *
 * Design: samples collect in a growable vector (struct mm_dvec); a summary
 * sorts a copy once and reads every percentile from it. An empty sample set
 * summarises to zeros, as vLLM's `np.mean(x or 0)` does. Not thread-safe. */
#ifndef MM_LOADGEN_STATS_H
#define MM_LOADGEN_STATS_H

#include <stddef.h>

#include "base/status.h"

/* A growable array of doubles; zero-initialise, then push. Owns v. */
struct mm_dvec {
    double *v;
    size_t n, cap;
};

enum mm_status mm_dvec_push(struct mm_dvec *d, double x);
/* Appends all of src to d. */
enum mm_status mm_dvec_extend(struct mm_dvec *d, const struct mm_dvec *src);
void mm_dvec_free(struct mm_dvec *d);

#define MM_STATS_MAX_PERCENTILES 16

struct mm_stats_summary {
    size_t n;
    double mean, median, std, min, max;
    int n_percentiles;
    double percentile[MM_STATS_MAX_PERCENTILES]; /* which, in 0..100 */
    double value[MM_STATS_MAX_PERCENTILES];      /* its value */
};

/* The p-th percentile (0..100) of n ascending values, interpolating linearly
 * between closest ranks (numpy's default). 0 for n == 0. */
double mm_stats_percentile_sorted(const double *sorted, size_t n, double p);

/* Summarises x[0..n) and the percentiles ps[0..n_ps) (n_ps at most
 * MM_STATS_MAX_PERCENTILES). Borrows x; allocates and frees a sorted copy. */
enum mm_status mm_stats_summarize(const double *x, size_t n, const double *ps, int n_ps,
                                  struct mm_stats_summary *out, struct mm_err *err);

#endif
