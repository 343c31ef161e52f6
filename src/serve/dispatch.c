/* dispatch.c: one HTTP front over several engines (see dispatch.h). The
 * policy is mm_dispatch_pick; the rest is bookkeeping over the schedulers. */
#include "serve/dispatch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "serve/request_engine.h" /* the choices a request asks for */

struct engine {
    struct mm_scheduler *s;
    char name[32];
    uint64_t placed;   /* under mu */
    bool out_reported; /* under mu: "out of rotation" logged */
};

struct mm_dispatch {
    pthread_mutex_t mu; /* placement + submission, the counters */
    int n;
    unsigned next; /* rotation start for ties */
    struct engine e[MM_DISPATCH_MAX_ENGINES];
};

/* ---- the policy -------------------------------------------------------------------- */

double mm_dispatch_pressure(const struct mm_scheduler_load *l)
{
    const double slots = l->slots > 0 ? (double)l->slots : 1.0;
    const double budget = l->budget > 0 ? (double)l->budget : 1.0;
    double p = ((double)l->seqs + (double)l->prefill_tokens / budget) / slots;
    for (int k = 0; k < 2; k++)
        if (l->kv_total[k] > 0) {
            const double kv = (double)l->kv_used[k] / (double)l->kv_total[k];
            p = kv > p ? kv : p;
        }
    return p;
}

bool mm_dispatch_has_room(const struct mm_scheduler_load *l, int32_t n_choices)
{
    if (l->seqs + n_choices > l->slots)
        return false;
    for (int k = 0; k < 2; k++)
        if (l->kv_total[k] > 0 && l->kv_used[k] >= l->kv_total[k])
            return false;
    return true;
}

int mm_dispatch_pick(const struct mm_dispatch_candidate *c, int n, int32_t n_choices, int start)
{
    if (n < 1)
        return -1;
    start = ((start % n) + n) % n;
    /* a continuation: the engine keeping the longest prefix, if it has room */
    int best = -1;
    double best_p = 0;
    for (int k = 0; k < n; k++) {
        const int i = (start + k) % n;
        if (!c[i].load.serving || c[i].cached_prefix <= 0 ||
            !mm_dispatch_has_room(&c[i].load, n_choices))
            continue;
        const double p = mm_dispatch_pressure(&c[i].load);
        if (best < 0 || c[i].cached_prefix > c[best].cached_prefix ||
            (c[i].cached_prefix == c[best].cached_prefix && p < best_p))
            best = i, best_p = p;
    }
    if (best >= 0)
        return best;
    /* anything else: the least loaded */
    for (int k = 0; k < n; k++) {
        const int i = (start + k) % n;
        if (!c[i].load.serving)
            continue;
        const double p = mm_dispatch_pressure(&c[i].load);
        if (best < 0 || p < best_p)
            best = i, best_p = p;
    }
    return best;
}

/* ---- the object ---------------------------------------------------------------------- */

enum mm_status mm_dispatch_create(struct mm_scheduler *const *scheds, const char *const *names,
                                  int n, struct mm_dispatch **out, struct mm_err *err)
{
    if (n < 1 || n > MM_DISPATCH_MAX_ENGINES) {
        for (int i = 0; i < n && i < MM_DISPATCH_MAX_ENGINES; i++)
            mm_scheduler_free(scheds[i], 0);
        return mm_err_set(err, MM_ERR_INVALID, "dispatch: %d engines (1..%d)", n,
                          MM_DISPATCH_MAX_ENGINES);
    }
    struct mm_dispatch *d = calloc(1, sizeof *d);
    if (!d || pthread_mutex_init(&d->mu, NULL) != 0) {
        free(d);
        for (int i = 0; i < n; i++)
            mm_scheduler_free(scheds[i], 0);
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    }
    d->n = n;
    for (int i = 0; i < n; i++) {
        d->e[i].s = scheds[i];
        snprintf(d->e[i].name, sizeof d->e[i].name, "%s", names && names[i] ? names[i] : "");
    }
    *out = d;
    return MM_OK;
}

void mm_dispatch_free(struct mm_dispatch *d, int64_t timeout_ms)
{
    if (!d)
        return;
    /* every engine drains at once; then each is waited for within what is left */
    mm_dispatch_drain(d);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < d->n; i++) {
        int64_t left = timeout_ms;
        if (timeout_ms > 0) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            const int64_t spent =
                (int64_t)(t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
            left = timeout_ms > spent ? timeout_ms - spent : 0;
        }
        mm_scheduler_free(d->e[i].s, left);
    }
    pthread_mutex_destroy(&d->mu);
    free(d);
}

enum mm_status mm_dispatch_submit(struct mm_dispatch *d, struct mm_request *r, int *engine,
                                  struct mm_err *err)
{
    struct mm_dispatch_candidate c[MM_DISPATCH_MAX_ENGINES];
    const int32_t n_choices = mm_request_params_of(r)->n;
    enum mm_status st = mm_err_set(err, MM_ERR_UNAVAILABLE, "no engine is serving");
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < d->n; i++) {
        mm_scheduler_load(d->e[i].s, &c[i].load);
        c[i].cached_prefix = c[i].load.serving ? mm_scheduler_cached_prefix(d->e[i].s, r) : 0;
        if (c[i].load.failed && !d->e[i].out_reported) {
            d->e[i].out_reported = true;
            MM_ERROR("dispatch: engine %d (%s) failed and is out of rotation; %d of %d serve", i,
                     d->e[i].name, mm_dispatch_serving(d), d->n);
        }
    }
    const unsigned start = d->next++;
    for (int tries = 0; tries < d->n; tries++) {
        const int i = mm_dispatch_pick(c, d->n, n_choices, (int)(start % (unsigned)d->n));
        if (i < 0)
            break;
        st = mm_scheduler_submit(d->e[i].s, r, err);
        if (st == MM_OK) {
            d->e[i].placed++;
            if (engine)
                *engine = i;
            break;
        }
        if (st != MM_ERR_LIMIT && st != MM_ERR_UNAVAILABLE)
            break;                 /* the request itself: every engine would say the same */
        c[i].load.serving = false; /* full or out of service: the next best */
    }
    pthread_mutex_unlock(&d->mu);
    return st;
}

void mm_dispatch_drain(struct mm_dispatch *d)
{
    for (int i = 0; i < d->n; i++)
        mm_scheduler_drain(d->e[i].s);
}

int64_t mm_dispatch_in_flight(const struct mm_dispatch *d)
{
    int64_t n = 0;
    for (int i = 0; i < d->n; i++)
        n += mm_scheduler_in_flight(d->e[i].s);
    return n;
}

void mm_dispatch_cancel_all(struct mm_dispatch *d)
{
    for (int i = 0; i < d->n; i++)
        mm_scheduler_cancel_all(d->e[i].s);
}

int mm_dispatch_count(const struct mm_dispatch *d) { return d->n; }

bool mm_dispatch_failed(const struct mm_dispatch *d, int i)
{
    struct mm_scheduler_load l;
    mm_scheduler_load(d->e[i].s, &l);
    return l.failed;
}

int mm_dispatch_serving(const struct mm_dispatch *d)
{
    int n = 0;
    for (int i = 0; i < d->n; i++)
        n += !mm_dispatch_failed(d, i);
    return n;
}

struct mm_scheduler *mm_dispatch_scheduler(const struct mm_dispatch *d, int i) { return d->e[i].s; }

const char *mm_dispatch_name(const struct mm_dispatch *d, int i) { return d->e[i].name; }

uint64_t mm_dispatch_placed(const struct mm_dispatch *d, int i)
{
    struct mm_dispatch *w = (struct mm_dispatch *)d; /* the lock is not part of the value */
    pthread_mutex_lock(&w->mu);
    const uint64_t n = d->e[i].placed;
    pthread_mutex_unlock(&w->mu);
    return n;
}

int64_t mm_dispatch_cached_prefix(const struct mm_dispatch *d, const struct mm_request *r)
{
    int64_t best = 0;
    for (int i = 0; i < d->n; i++)
        if (!mm_dispatch_failed(d, i)) {
            const int64_t c = mm_scheduler_cached_prefix(d->e[i].s, r);
            best = c > best ? c : best;
        }
    return best;
}

int64_t mm_dispatch_max_model_len(const struct mm_dispatch *d)
{
    int64_t m = mm_scheduler_max_model_len(d->e[0].s);
    for (int i = 1; i < d->n; i++) {
        const int64_t v = mm_scheduler_max_model_len(d->e[i].s);
        m = v < m ? v : m;
    }
    return m;
}

void mm_dispatch_metrics(const struct mm_dispatch *d, struct mm_metrics_snapshot *sum,
                         struct mm_metrics_snapshot *per)
{
    for (int i = 0; i < d->n; i++) {
        struct mm_metrics_snapshot one;
        mm_metrics_snapshot(mm_scheduler_metrics(d->e[i].s), &one);
        if (i == 0)
            *sum = one; /* the histogram bounds come with the first */
        else
            mm_metrics_snapshot_add(sum, &one);
        if (per)
            per[i] = one;
    }
}
