/* request.h: one generation request, travelling from the thread that made
 * it (an HTTP thread, `mmmamba generate`) to the engine thread, and its
 * results travelling back as a stream of events.
 *
 * Design: a request is a reference-counted object with two sides. The
 * caller's side fills it once (prompt, tiles, parameters), submits it to a
 * scheduler (scheduler.h) and then only reads events, sets the cancellation
 * flag, or drops its reference. The engine side appends events; it holds its
 * own reference until the last choice's final event is queued, so either
 * side may let go first (an HTTP connection that closes just cancels and
 * releases). Events carry text already detokenised (never ending inside a
 * UTF-8 character) and already checked for stop strings: text that might be
 * the start of a stop string is held back until it is known not to be one,
 * and a matched stop string is never emitted.
 *
 * Threads: mm_request_create/set_notify before submission on any thread;
 * afterwards one consumer thread at a time may take events (poll, take,
 * wait); mm_request_cancel, mm_request_ref/release, mm_request_done and the
 * getters are safe from any thread at any time. */
#ifndef MM_SERVE_REQUEST_H
#define MM_SERVE_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "engine/backend.h"

/* Bounds mm_request_create enforces (OpenAI allows 4 stop strings; vLLM more). */
#define MM_REQUEST_MAX_CHOICES 128
#define MM_REQUEST_MAX_STOPS 16
#define MM_REQUEST_MAX_STOP_BYTES 256
#define MM_REQUEST_MAX_STOP_IDS 64
#define MM_REQUEST_MAX_ID_BYTES 128

/* What the request asks for; mm_request_create copies everything it points to. */
struct mm_request_params {
    const char *id; /* for logs (copied, truncated to MM_REQUEST_MAX_ID_BYTES); NULL: "" */
    struct mm_sample_params sample; /* temperature, top_k/p, min_p, penalties, n_logprobs */
    bool has_seed;                  /* false: the scheduler draws sample.seed at submission */
    int32_t n;                      /* choices, 1..MM_REQUEST_MAX_CHOICES; choice i samples with
                                       Philox stream i, so seeded choices differ */
    int64_t max_tokens;             /* per choice; 0: until the context is full */
    const char *const *stop;        /* n_stop stop strings (UTF-8, 1..MAX_STOP_BYTES bytes each) */
    int32_t n_stop;
    const int32_t *stop_ids; /* n_stop_ids token ids that end a choice: like EOS, such an id
                                gets no TOKEN event but counts as a completion token */
    int32_t n_stop_ids;
    bool ignore_eos; /* do not stop at the model's EOS ids (stop ids and strings still apply) */
    bool logprobs;   /* fill logprob (and top, up to sample.n_logprobs) in token events */
};

/* Greedy, n = 1, no limits but the context, no stops, no logprobs. */
void mm_request_params_default(struct mm_request_params *p);

enum mm_finish_reason {
    MM_FINISH_NONE = 0,  /* (not finished) */
    MM_FINISH_STOP,      /* EOS, a stop token id or a stop string: OpenAI "stop" */
    MM_FINISH_LENGTH,    /* max_tokens or the context reached: OpenAI "length" */
    MM_FINISH_CANCELLED, /* mm_request_cancel, or the scheduler shut down */
    MM_FINISH_ERROR,     /* the engine failed; status and message say why */
};

/* Static name: "stop", "length", "cancelled", "error" ("" for NONE). */
const char *mm_finish_reason_str(enum mm_finish_reason f);

enum mm_event_kind {
    MM_EVENT_TOKEN = 1, /* one generated token of one choice */
    MM_EVENT_FINISH,    /* the last event of one choice */
};

struct mm_token_logprob {
    int32_t id;
    float logprob;
};

/* Per-request timings (seconds), filled in MM_EVENT_FINISH. */
struct mm_request_times {
    double queue_s; /* submission → first admitted into a slot */
    double ttft_s;  /* submission → this choice's first token (0 if none) */
    double total_s; /* submission → this finish */
};

struct mm_event {
    enum mm_event_kind kind;
    int32_t choice; /* 0..n-1 */
    /* Text released with this event (UTF-8, complete characters, not
     * NUL-terminated, possibly empty). Borrowed from the request: valid until
     * the next poll/take/wait on it or the consumer's release. For
     * MM_EVENT_FINISH: whatever was still held back when the choice ended
     * without a stop string (e.g. at max_tokens), possibly empty. */
    const char *text;
    size_t len;
    /* MM_EVENT_TOKEN: every generated token but a final EOS / stop id
     * (text may be empty while held back or inside a UTF-8 character) */
    int32_t token;
    int32_t index; /* position of the token in the choice's output, from 0 */
    float logprob; /* log_softmax of the raw logits; with params.logprobs */
    int32_t n_top; /* 0..sample.n_logprobs, with params.logprobs */
    struct mm_token_logprob top[MM_MAX_LOGPROBS]; /* descending */
    /* MM_EVENT_FINISH */
    enum mm_finish_reason finish;
    int64_t prompt_tokens;     /* the request's prompt (same in every choice) */
    int64_t completion_tokens; /* this choice's generated tokens */
    int64_t cached_tokens;     /* leading prompt tokens served from a state-cache snapshot
                                  instead of prefilled (same in every choice; 0: no hit) */
    enum mm_status status;     /* MM_FINISH_ERROR: the failure; else MM_OK */
    const char *message;       /* MM_FINISH_ERROR: why (borrowed like text); else "" */
    struct mm_request_times times;
};

struct mm_request;

/* Makes a request holding one reference (the caller's). Takes ownership of
 * ids (n_ids prompt ids, malloc'ed, e.g. struct mm_tokens.ids) and tiles
 * (n_tiles normalised tiles [n][3][S][S], malloc'ed, in the order of the
 * prompt's image runs; NULL when n_tiles is 0) whether it succeeds or not.
 * Checks the parameters alone (ranges, counts, sizes: MM_ERR_INVALID); what
 * depends on the model (ids in the vocabulary, image runs against tiles,
 * the context) is checked by mm_scheduler_submit. */
/* Hands the request its tiles' pixel digests (digests [n_tiles][2], as
 * mm_state_tile_digest makes them from tiles of tile_floats floats; taken
 * over, malloc'ed): its state-cache keys are then made from them instead
 * of hashing the pixels again (a stored conversation's images). After
 * create, before the request is shared. */
void mm_request_set_tile_digests(struct mm_request *r, uint64_t *digests, int64_t tile_floats);
enum mm_status mm_request_create(const struct mm_request_params *p, int32_t *ids, int64_t n_ids,
                                 float *tiles, int64_t n_tiles, struct mm_request **out,
                                 struct mm_err *err);
/* The same with the tiles as their 8-bit pixels (pixels [n_tiles][3][S][S],
 * as mm_image_preprocess_pixels makes them; a quarter of the memory): the
 * scheduler normalises a prefill chunk's tiles just before the step that
 * embeds them (never those a state-cache hit covers), into exactly the
 * floats mm_image_preprocess would have given, and the state-cache keys
 * are the same. The HTTP layer's form; the float one is for tiles that are
 * not 8-bit pixels (`generate --tiles`, tests). */
enum mm_status mm_request_create_pixels(const struct mm_request_params *p, int32_t *ids,
                                        int64_t n_ids, uint8_t *pixels, int64_t n_tiles,
                                        struct mm_request **out, struct mm_err *err);

/* Reference counting; the last release frees everything (events not yet
 * taken included). Any thread. */
void mm_request_ref(struct mm_request *r);
void mm_request_release(struct mm_request *r);

/* Called on the engine thread, without any lock held, after new events were
 * queued (at most once per engine step per request, and once after the last
 * FINISH). It must not block; it may call any mm_request function (the HTTP
 * layer calls MHD_resume_connection from it). Set it before submission or
 * at any time after; after mm_request_set_notify returns, the previous
 * callback is not running and will not run again (unless set_notify is
 * called from inside that callback, which is allowed). fn NULL: none.
 * Events queued before a callback is set do not call it: poll after setting. */
void mm_request_set_notify(struct mm_request *r, void (*fn)(void *user), void *user);

/* Asks the engine to stop this request: any thread, any number of times.
 * Within one engine step its slot and KV blocks are freed and every choice
 * not yet finished gets MM_EVENT_FINISH with MM_FINISH_CANCELLED. */
void mm_request_cancel(struct mm_request *r);
bool mm_request_cancelled(const struct mm_request *r);

/* Consumer side (one thread at a time). Non-blocking: copies the next event
 * into *ev and returns true, or returns false when none is pending. */
bool mm_request_poll(struct mm_request *r, struct mm_event *ev);
/* Takes up to cap pending events in order; returns how many (0 if none).
 * Their text stays valid until the next poll/take/wait. */
int mm_request_take(struct mm_request *r, struct mm_event *evs, int cap);
/* Like poll, blocking up to timeout_ms (< 0: without limit) for an event;
 * false on timeout or when every choice's FINISH has already been taken. */
bool mm_request_wait(struct mm_request *r, struct mm_event *ev, int64_t timeout_ms);
/* True once every choice's FINISH has been queued (the engine is done with it). */
bool mm_request_done(const struct mm_request *r);

/* Getters (any thread). */
const char *mm_request_id(const struct mm_request *r);
int32_t mm_request_n(const struct mm_request *r);
int64_t mm_request_prompt_tokens(const struct mm_request *r);

#endif
