/* exchange.h: one HTTP request and its response, as the route handlers see
 * it (internal to src/http/).
 *
 * Design: server.c owns the libmicrohttpd side (body, limits, auth, access
 * log, suspend/resume); handlers get the method, path and body and answer
 * with one of the reply calls, or go asynchronous: they hand the exchange a
 * job (a pump function plus state) and the server calls the pump on an
 * HTTP thread whenever the job is woken (mm_http_wake, callable from any
 * thread: the engine's notify hook), to move engine output into the
 * response. A streaming job writes SSE bytes with mm_http_stream_write; a
 * buffered job finishes with a reply call.
 *
 * Thread contract: handlers and pumps run on HTTP threads, one at a time per
 * exchange; mm_http_wake may be called from any thread until the job's
 * release callback ran. */
#ifndef MM_HTTP_EXCHANGE_H
#define MM_HTTP_EXCHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "http/app.h"

struct mm_http_exchange;

/* What a job's pump reports. */
enum mm_http_pump {
    MM_HTTP_PUMP_WAIT = 0, /* nothing more now: sleep until the next wake */
    MM_HTTP_PUMP_DONE,     /* the response is complete (stream ended or reply queued) */
};

struct mm_http_job_ops {
    /* Moves available output into the response. Runs on an HTTP thread. */
    enum mm_http_pump (*pump)(struct mm_http_exchange *ex, void *job);
    /* The client went away or the server is shutting down: stop the work
     * (idempotent; any thread). */
    void (*cancel)(void *job);
    /* The exchange is finished with the job; free it once the engine is
     * done with it too. Called exactly once. */
    void (*release)(void *job);
};

/* Request accessors. */
const char *mm_http_method(const struct mm_http_exchange *ex);
const char *mm_http_path(const struct mm_http_exchange *ex);
const char *mm_http_body(const struct mm_http_exchange *ex, size_t *len);
const char *mm_http_request_id(const struct mm_http_exchange *ex);
/* The API key the request authenticated with (borrowed from the app; it
 * lives as long as the server), or NULL when no keys are configured. */
const char *mm_http_api_key(const struct mm_http_exchange *ex);
struct mm_http_app *mm_http_app(const struct mm_http_exchange *ex);
bool mm_http_draining(const struct mm_http_exchange *ex);

/* Adds a header to the response this exchange will queue (before the reply
 * call, or before mm_http_start_job for a stream); at most
 * MM_HTTP_MAX_HEADERS, names under 96 bytes, values under 96 bytes (longer
 * ones are dropped with a warning). */
#define MM_HTTP_MAX_HEADERS 4
void mm_http_add_header(struct mm_http_exchange *ex, const char *name, const char *value);

/* Replies (each queues the whole response; call at most one). The JSON is
 * printed and then deleted. */
void mm_http_reply_json(struct mm_http_exchange *ex, int status, cJSON *json);
void mm_http_reply_text(struct mm_http_exchange *ex, int status, const char *content_type,
                        char *body, size_t len); /* takes body (malloc'd) */
/* An OpenAI error object {"error":{"message","type","param","code"}};
 * param and code may be NULL. 429/503 carry Retry-After. */
void mm_http_reply_error(struct mm_http_exchange *ex, int status, const char *param,
                         const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Goes asynchronous with job; stream selects an SSE response (headers sent
 * at once) over a buffered one. The pump runs once straight away. */
void mm_http_start_job(struct mm_http_exchange *ex, const struct mm_http_job_ops *ops, void *job,
                       bool stream);
/* SSE bytes for a streaming job (copied). */
bool mm_http_stream_write(struct mm_http_exchange *ex, const char *data, size_t len);
/* Marks output as produced (for pings) and records time to first token. */
void mm_http_mark_first_token(struct mm_http_exchange *ex);
/* Token counts for the access log. */
void mm_http_set_usage(struct mm_http_exchange *ex, int64_t prompt_tokens,
                       int64_t completion_tokens);

/* Runs work(arg) on one of the server's worker threads, with the connection
 * suspended, so slow request preparation (image decoding, tokenizing) never
 * stalls the other connections of this event loop. Then done(ex, arg) runs
 * back on the connection's HTTP thread, where it may reply or start a job;
 * if the connection went away meanwhile, done(NULL, arg) runs instead (to
 * free arg). Call from a handler, as its last action. */
void mm_http_offload(struct mm_http_exchange *ex, void (*work)(void *arg),
                     void (*done)(struct mm_http_exchange *ex, void *arg), void *arg);

/* Wakes the exchange that owns token (from mm_http_start_job's job); any
 * thread. token is what mm_http_job_token returned. */
void mm_http_wake(void *token);
/* A wake token for the exchange, valid until the job's release callback. */
void *mm_http_job_token(struct mm_http_exchange *ex);

/* Route handlers (openai.c, metrics.c). */
void mm_http_handle_chat(struct mm_http_exchange *ex);
void mm_http_handle_completions(struct mm_http_exchange *ex);
void mm_http_handle_models(struct mm_http_exchange *ex);
void mm_http_handle_responses(struct mm_http_exchange *ex);   /* POST /v1/responses */
void mm_http_handle_response_id(struct mm_http_exchange *ex); /* GET, DELETE /v1/responses/ID */
void mm_http_handle_tokenize(struct mm_http_exchange *ex);
void mm_http_handle_detokenize(struct mm_http_exchange *ex);
void mm_http_handle_metrics(struct mm_http_exchange *ex);

#endif
