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
 *
 * Threads: create/free from one controlling thread (the daemon's main
 * thread); submit, drain, in_flight, cancel_all, metrics and the getters from
 * any thread. */
#ifndef MM_SERVE_SCHEDULER_H
#define MM_SERVE_SCHEDULER_H

#include <stdint.h>

#include "base/status.h"
#include "engine/engine.h"
#include "model/tokenizer.h"
#include "serve/metrics.h"
#include "serve/request.h"

struct mm_scheduler_options {
    int64_t max_queue;        /* waiting requests; submit beyond it: MM_ERR_LIMIT (1..) */
    int64_t max_batch_tokens; /* LLM-stack tokens in one step, decodes plus prefill chunks;
                                 0: the engine's max_tokens (and never more) */
    int64_t max_model_len;    /* prompt + output of one choice; 0: the engine's max_context */
};

/* max_queue 256, the engine's budget and context. */
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
 *   MM_ERR_UNAVAILABLE  draining or stopped (HTTP 503);
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

/* Longest prompt + output of one choice the scheduler accepts. Any thread. */
int64_t mm_scheduler_max_model_len(const struct mm_scheduler *s);

#endif
