/* dispatch.h: several engines behind one HTTP front (data parallel,
 * DESIGN.md "Scale"): one scheduler per engine (per GPU, or per share of
 * the CPU cores), and one object the HTTP layer submits to instead.
 *
 * Design: a request goes whole to one scheduler (its n > 1 choices share the
 * prompt's state), chosen by a pure function of each scheduler's live load
 * (mm_dispatch_pick, pinned by tests): a continuation goes to the engine
 * that keeps the longest prefix of its prompt (mm_scheduler_cached_prefix)
 * when that engine has a free slot, anything else to the least loaded one.
 * Placement and submission happen under one mutex, so a burst of requests
 * sees each earlier placement and spreads evenly. A scheduler whose backend
 * failed (a device fault) is out of rotation for good; its own requests were
 * failed by it, the others keep serving. Engines are never split or merged:
 * each holds a full copy of the weights.
 *
 * Threads: create/free from the controlling thread (the daemon's main);
 * everything else from any thread. */
#ifndef MM_SERVE_DISPATCH_H
#define MM_SERVE_DISPATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "serve/metrics.h"
#include "serve/request.h"
#include "serve/scheduler.h"

/* Engines one dispatcher holds at most (GPUs of one host, with room). */
#define MM_DISPATCH_MAX_ENGINES 64

/* One engine as the placement policy sees it. */
struct mm_dispatch_candidate {
    struct mm_scheduler_load load;
    int64_t cached_prefix; /* leading prompt tokens it keeps a state for (0: none) */
};

/* How loaded an engine is, as a fraction of its capacity (>= 1: full):
 * the larger of (sequences in flight + queued prefill tokens / its step
 * budget) / its slots, and each stack's KV blocks used / total. A step's
 * budget of queued prompt tokens weighs as much as one sequence. */
double mm_dispatch_pressure(const struct mm_scheduler_load *l);

/* Whether the engine could admit n_choices more sequences now (free slots,
 * and KV blocks left in every stack that has them). */
bool mm_dispatch_has_room(const struct mm_scheduler_load *l, int32_t n_choices);

/* The placement policy: the index of the engine for a request of n_choices
 * choices, or -1 when none is serving. Among serving engines: the longest
 * cached_prefix of those with room; else the lowest pressure. Ties go to
 * the first in the order start, start + 1, ... (mod n). */
int mm_dispatch_pick(const struct mm_dispatch_candidate *c, int n, int32_t n_choices, int start);

struct mm_dispatch;

/* Takes the n schedulers (1..MM_DISPATCH_MAX_ENGINES; they are freed by
 * mm_dispatch_free, even when this fails) and a name for each (copied; for
 * logs and metrics, e.g. "cuda:1"). Their engines stay the caller's. */
enum mm_status mm_dispatch_create(struct mm_scheduler *const *scheds, const char *const *names,
                                  int n, struct mm_dispatch **out, struct mm_err *err);

/* Drains every scheduler, waits up to timeout_ms (< 0: without limit) for
 * all their requests, cancels the rest and frees them (mm_scheduler_free),
 * then the dispatcher. Afterwards the engines are the caller's again. NULL
 * is a no-op. Controlling thread only. */
void mm_dispatch_free(struct mm_dispatch *d, int64_t timeout_ms);

/* Places r on one engine and submits it there (mm_scheduler_submit: the same
 * ownership and errors). An engine whose queue is full or which refuses for
 * being out of service is passed over for the next best; the error of the
 * last one tried comes back when none takes it (MM_ERR_UNAVAILABLE when no
 * engine is serving). *engine (may be NULL) receives the index chosen. */
enum mm_status mm_dispatch_submit(struct mm_dispatch *d, struct mm_request *r, int *engine,
                                  struct mm_err *err);

/* Every scheduler: mm_scheduler_drain, the sum of mm_scheduler_in_flight,
 * mm_scheduler_cancel_all. */
void mm_dispatch_drain(struct mm_dispatch *d);
int64_t mm_dispatch_in_flight(const struct mm_dispatch *d);
void mm_dispatch_cancel_all(struct mm_dispatch *d);

/* Engines, and those serving (not failed; draining ones count until they
 * are stopped). */
int mm_dispatch_count(const struct mm_dispatch *d);
int mm_dispatch_serving(const struct mm_dispatch *d);

/* Engine i (0 <= i < count): its scheduler (borrowed), its name, whether it
 * failed, and the requests placed on it since start. */
struct mm_scheduler *mm_dispatch_scheduler(const struct mm_dispatch *d, int i);
const char *mm_dispatch_name(const struct mm_dispatch *d, int i);
bool mm_dispatch_failed(const struct mm_dispatch *d, int i);
uint64_t mm_dispatch_placed(const struct mm_dispatch *d, int i);

/* The longest mm_scheduler_cached_prefix of r over the serving engines: what
 * r would not prefill if placed at once (placement prefers that engine). A
 * hint, like mm_scheduler_cached_prefix. Any thread; r is only read. */
int64_t mm_dispatch_cached_prefix(const struct mm_dispatch *d, const struct mm_request *r);

/* The smallest mm_scheduler_max_model_len of the engines. */
int64_t mm_dispatch_max_model_len(const struct mm_dispatch *d);

/* The metrics of all engines summed (mm_metrics_snapshot_add) into *sum;
 * per (may be NULL) receives each engine's own, [count]. */
void mm_dispatch_metrics(const struct mm_dispatch *d, struct mm_metrics_snapshot *sum,
                         struct mm_metrics_snapshot *per);

#endif
