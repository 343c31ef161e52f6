/* stats.c: the summary statistics of stats.h. Two-pass mean and variance
 * (samples are latencies of similar size, so no compensation is needed). */
#include "loadgen/stats.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum mm_status mm_dvec_push(struct mm_dvec *d, double x)
{
    if (d->n == d->cap) {
        const size_t cap = d->cap ? d->cap * 2 : 64;
        if (cap > SIZE_MAX / sizeof(double))
            return MM_ERR_OVERFLOW;
        double *v = realloc(d->v, cap * sizeof(double));
        if (!v)
            return MM_ERR_NOMEM;
        d->v = v;
        d->cap = cap;
    }
    d->v[d->n++] = x;
    return MM_OK;
}

enum mm_status mm_dvec_extend(struct mm_dvec *d, const struct mm_dvec *src)
{
    for (size_t i = 0; i < src->n; i++) {
        const enum mm_status st = mm_dvec_push(d, src->v[i]);
        if (st != MM_OK)
            return st;
    }
    return MM_OK;
}

void mm_dvec_free(struct mm_dvec *d)
{
    free(d->v);
    memset(d, 0, sizeof(*d));
}

double mm_stats_percentile_sorted(const double *sorted, size_t n, double p)
{
    if (n == 0)
        return 0.0;
    if (p <= 0)
        return sorted[0];
    if (p >= 100)
        return sorted[n - 1];
    /* rank = p/100 * (n-1); value = s[lo] + (s[hi] - s[lo]) * frac(rank) */
    const double rank = p / 100.0 * (double)(n - 1);
    const size_t lo = (size_t)floor(rank);
    const size_t hi = lo + 1 < n ? lo + 1 : lo;
    const double frac = rank - (double)lo;
    return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

enum mm_status mm_stats_summarize(const double *x, size_t n, const double *ps, int n_ps,
                                  struct mm_stats_summary *out, struct mm_err *err)
{
    memset(out, 0, sizeof(*out));
    if (n_ps < 0 || n_ps > MM_STATS_MAX_PERCENTILES)
        return mm_err_set(err, MM_ERR_INVALID, "%d percentiles (at most %d)", n_ps,
                          MM_STATS_MAX_PERCENTILES);
    out->n = n;
    out->n_percentiles = n_ps;
    for (int i = 0; i < n_ps; i++)
        out->percentile[i] = ps[i];
    if (n == 0)
        return MM_OK;
    if (n > SIZE_MAX / sizeof(double))
        return mm_err_set(err, MM_ERR_OVERFLOW, "%zu samples", n);
    double *s = malloc(n * sizeof(double));
    if (!s)
        return mm_err_set(err, MM_ERR_NOMEM, "sorting %zu samples", n);
    memcpy(s, x, n * sizeof(double));
    qsort(s, n, sizeof(double), cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += s[i];
    out->mean = sum / (double)n;
    double ss = 0; /* population variance: sum (x - mean)^2 / n */
    for (size_t i = 0; i < n; i++)
        ss += (s[i] - out->mean) * (s[i] - out->mean);
    out->std = sqrt(ss / (double)n);
    out->median = mm_stats_percentile_sorted(s, n, 50);
    out->min = s[0];
    out->max = s[n - 1];
    for (int i = 0; i < n_ps; i++)
        out->value[i] = mm_stats_percentile_sorted(s, n, ps[i]);
    free(s);
    return MM_OK;
}
