/* scheduler.h: continuous batching of many requests over one engine
 * (DESIGN.md "Life of a request", layer 4).
 *
 * Design: one engine thread owns the engine (and so the backend and all
 * device state) from mm_scheduler_create to mm_scheduler_free. Other threads
 * only submit requests into a bounded FCFS queue and read events from the
 * requests (request.h). The engine thread loops: admit waiting requests while
 * a state slot and the prompt's KV blocks are free; build one step of every
 * running decode plus prefill chunks within the token budget (long prompts
 * are chunked across steps, at tile boundaries, so running streams keep
 * producing); run it; sample on the backend; detokenise, check stops and
 * deliver; retire finished or cancelled sequences at once. When the KV pool
 * runs dry mid-decode the most recently admitted sequence is preempted and
 * re-queued at the front with its prompt and generated tokens (its stream
 * continues seamlessly; greedy output is unchanged). With nothing to do it
 * sleeps on a condition variable. n > 1 prefills once and copies the state.
 * A step the backend fails fails the requests in it; when the backend still
 * reports the failure when asked again (a device fault: CUDA errors are
 * sticky), the scheduler is out of service for good: every request it holds
 * is failed (MM_ERR_BACKEND), submissions get MM_ERR_UNAVAILABLE, and
 * mm_scheduler_load says `failed` so a dispatcher stops placing work here.
 *
 * State cache (docs/architecture.md "State cache"): with a host tier in the
 * options, every prompt's state is kept as a snapshot once prefilled, and
 * every choice's when it finishes (under what it consumed: prompt + output
 * but the last sampled token), in a free state slot (KV blocks shared by
 * reference) or else in the host tier. An admitted prompt starts from the
 * longest snapshot that begins it and prefills only the rest; running
 * sequences always win a slot or KV blocks over snapshots (evicted least
 * recently used first, to the host tier when it has room). A hit never
 * changes the output.
 *
 * Threads: create/free from one controlling thread (the daemon's main
 * thread); submit, drain, in_flight, cancel_all, metrics and the getters from
 * any thread. */
#ifndef MM_SERVE_SCHEDULER_H
#define MM_SERVE_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "engine/engine.h"
#include "model/tokenizer.h"
#include "serve/metrics.h"
#include "serve/request.h"
#include "serve/state_cache.h"

struct mm_scheduler_options {
    int64_t max_queue;        /* waiting requests; submit beyond it: MM_ERR_LIMIT (1..) */
    int64_t max_batch_tokens; /* LLM-stack tokens in one step, decodes plus prefill chunks;
                                 0: the engine's max_tokens (and never more) */
    int64_t max_model_len;    /* prompt + output of one choice; 0: the engine's max_context */
    /* The state cache (state_cache.h): the host tier, borrowed (it must
     * outlive the scheduler; several schedulers may share one); NULL: no
     * state cache at all, in any tier. */
    struct mm_state_cache *state_cache;
    bool state_cache_gpu; /* with a state cache: also keep snapshots in free state slots */
};

/* max_queue 256, the engine's budget and context, no state cache
 * (state_cache_gpu true for when one is set). */
void mm_scheduler_options_default(struct mm_scheduler_options *o);

struct mm_scheduler;

/* Starts the engine thread on e. e and tok are borrowed and must outlive the
 * scheduler; from now until mm_scheduler_free returns, no other thread may
 * touch e. tok may be NULL (no text, no stop strings: events carry ids
 * only). EOS ids come from the checkpoint's generation config (e->eos_ids)
 * plus <|im_end|> when the tokenizer has it. *out is the caller's. */
enum mm_status mm_scheduler_create(struct mm_engine *e, const struct mm_tokenizer *tok,
                                   const struct mm_scheduler_options *o, struct mm_scheduler **out,
                                   struct mm_err *err);

/* Queues r (FCFS) and takes a reference to it for the engine; the caller
 * keeps its own. Fails without queuing (the caller still owns its
 * reference, no event is ever sent) with:
 *   MM_ERR_LIMIT        the queue is full (HTTP 429 with Retry-After);
 *   MM_ERR_UNAVAILABLE  draining, stopped or failed (HTTP 503);
 *   MM_ERR_INVALID      the request does not fit the model: an id outside the
 *                       vocabulary, image runs not matching the tiles, n above
 *                       the slots, a prompt (+ max_tokens) beyond the context
 *                       or beyond what the KV pool could ever hold (HTTP 400;
 *                       the message says which and gives the numbers);
 *   MM_ERR_NOMEM.
 * A request may be submitted once. Any thread. */
enum mm_status mm_scheduler_submit(struct mm_scheduler *s, struct mm_request *r,
                                   struct mm_err *err);

/* Stops intake (submit: MM_ERR_UNAVAILABLE from now on); queued and running
 * requests go on. Any thread, idempotent. */
void mm_scheduler_drain(struct mm_scheduler *s);
/* Requests submitted and not yet finished (queued + running). Any thread. */
int64_t mm_scheduler_in_flight(const struct mm_scheduler *s);
/* Cancels every queued and running request (each gets its FINISH events).
 * Any thread. */
void mm_scheduler_cancel_all(struct mm_scheduler *s);

/* Drains, waits up to timeout_ms (< 0: without limit) for in-flight
 * requests to finish, cancels what is left, and stops the engine thread
 * once every request has its FINISH events; then frees the scheduler.
 * Requests still referenced elsewhere stay valid. The engine is the
 * caller's again afterwards. NULL is a no-op. Controlling thread only. */
void mm_scheduler_free(struct mm_scheduler *s, int64_t timeout_ms);

/* Live metrics (borrowed; valid until mm_scheduler_free): read them with
 * mm_metrics_snapshot from any thread. */
const struct mm_metrics *mm_scheduler_metrics(const struct mm_scheduler *s);

/* How many leading prompt tokens of r a state-cache snapshot reachable by
 * this scheduler (its free slots, the host tier) covers now: what r would
 * not prefill if admitted at once (at most its prompt length - 1: the last
 * prompt token is always run, for its logits). A hint: snapshots come and
 * go. 0 without a state cache. r need not be submitted (it is only read).
 * Any thread; hashes r's image tiles, so it costs about what submitting does. */
int64_t mm_scheduler_cached_prefix(struct mm_scheduler *s, const struct mm_request *r);

/* Longest prompt + output of one choice the scheduler accepts. Any thread. */
int64_t mm_scheduler_max_model_len(const struct mm_scheduler *s);

/* What a dispatcher (dispatch.h) weighs to place a request: a consistent
 * snapshot of live counters (submissions count at once; the rest as of the
 * last step). */
struct mm_scheduler_load {
    bool serving;           /* accepts submissions: not draining, stopped or failed */
    bool failed;            /* the backend failed (a device fault): out of service for good;
                               its requests were failed with MM_ERR_BACKEND */
    int32_t slots;          /* state slots */
    int64_t budget;         /* tokens in one step */
    int64_t requests;       /* submitted and not finished (mm_scheduler_in_flight) */
    int64_t queued;         /* submitted and not yet admitted */
    int64_t seqs;           /* choices of those requests (each needs a slot) */
    int64_t prefill_tokens; /* prompt tokens waiting to be prefilled */
    int64_t kv_used[2], kv_total[2]; /* KV blocks per stack (0 total: no attention) */
};
/* Any thread. */
void mm_scheduler_load(const struct mm_scheduler *s, struct mm_scheduler_load *out);

#endif
