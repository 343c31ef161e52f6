/* request_parse.h: OpenAI / vLLM request bodies -> plain C (internal to
 * src/http/): sampling fields, stops, chat messages rendered to prompt ids
 * with their image tiles, completion prompts (text or token ids).
 *
 * Design: every check a client can fail happens here, before anything is
 * submitted, and produces the status, the offending `param` and a message
 * (struct mm_api_error); nothing below this layer sees JSON. Text is capped
 * before it is tokenized, images are counted, decoded under the app's
 * decode semaphore and charged to the request's tile budget before their
 * tiles are allocated.
 *
 * Thread contract: any HTTP thread; the app is only read (and its
 * semaphore taken). */
#ifndef MM_HTTP_REQUEST_PARSE_H
#define MM_HTTP_REQUEST_PARSE_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "http/app.h"
#include "model/tokenizer.h"

#define MM_API_MAX_STOP 16
#define MM_API_MAX_STOP_LEN 256
#define MM_API_MAX_PROMPTS 64
#define MM_API_MAX_TOP_LOGPROBS 20
/* max_tokens when a /v1/completions request leaves it unset (OpenAI's
 * CreateCompletionRequest default, and vLLM's) */
#define MM_API_COMPLETION_MAX_TOKENS 16

/* A client error: HTTP status, the request field at fault (may be ""), an
 * OpenAI `code` (may be NULL) and the message. */
struct mm_api_error {
    int status;
    char param[96];
    const char *code;
    char message[700];
};

/* Sampling and output fields shared by both endpoints. */
struct mm_api_params {
    bool stream, include_usage, ignore_eos, logprobs, echo;
    int64_t top_logprobs;       /* 0..20 */
    int64_t n;                  /* choices per prompt */
    int64_t max_tokens;         /* -1: unset (default_max_tokens applies) */
    int64_t default_max_tokens; /* for an unset max_tokens; -1: up to the context */
    double temperature, top_p, min_p;
    double presence_penalty, frequency_penalty, repetition_penalty;
    int64_t top_k; /* <= 0: off */
    bool has_seed;
    uint64_t seed;
    const char *stop[MM_API_MAX_STOP]; /* borrowed from the JSON */
    int n_stop;
};

/* One prompt: ids, plus the tiles its image runs need (chat only). Owned;
 * released with mm_api_prompt_free. */
struct mm_api_prompt {
    struct mm_tokens ids;
    uint8_t *tiles; /* [n_tiles][3][S][S] 8-bit pixels (mm_request_create_pixels) */
    int64_t n_tiles;
};

void mm_api_prompt_free(struct mm_api_prompt *p);

/* Fills *e (param and code may be NULL) and returns false, for `return
 * mm_api_fail(e, 400, "input", "invalid_type", "...")`. */
bool mm_api_fail(struct mm_api_error *e, int status, const char *param, const char *code,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Optional typed fields: absent or null keep *out; a wrong type or a value
 * outside [lo, hi] is a 400 naming key. */
bool mm_api_get_int(const cJSON *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
                    struct mm_api_error *e);
bool mm_api_get_bool(const cJSON *obj, const char *key, bool *out, struct mm_api_error *e);

/* Loads, decodes and tiles one image URL (param names it in errors) under
 * the app's limits, charging its tiles to *used (the request's tile budget,
 * 413 past it); appends them to *tiles (realloc'ed, *n_tiles grows) and
 * sets *count to how many: 8-bit pixels (mm_image_preprocess_pixels). */
bool mm_api_load_image(struct mm_http_app *app, const char *url, const char *param, int64_t *used,
                       uint8_t **tiles, int64_t *n_tiles, int64_t *count, struct mm_api_error *e);

/* Parses the body into a JSON object: invalid UTF-8, bad JSON or a
 * non-object are 400. *out is the caller's (cJSON_Delete). */
bool mm_api_parse_body(const char *body, size_t len, cJSON **out, struct mm_api_error *e);

/* `model`: absent or the served name; anything else is 404. */
bool mm_api_check_model(const struct mm_http_app *app, const cJSON *root, struct mm_api_error *e);

/* Sampling/output fields. chat selects /v1/chat/completions' spelling
 * (logprobs bool + top_logprobs, max_completion_tokens) over
 * /v1/completions' (logprobs integer, echo). */
bool mm_api_parse_params(const struct mm_http_app *app, const cJSON *root, bool chat,
                         struct mm_api_params *p, struct mm_api_error *e);

/* `messages` -> one prompt through the chat template (images decoded and
 * tiled). add_generation_prompt ends it with the assistant header. */
bool mm_api_chat_prompt(struct mm_http_app *app, const cJSON *messages, bool add_generation_prompt,
                        struct mm_api_prompt *out, struct mm_api_error *e);

/* `prompt` of /v1/completions: a string, an array of strings, an array of
 * token ids or an array of such arrays. *out is a heap array of *n prompts
 * (mm_api_prompts_free). add_bos: prepend BOS to text prompts. */
bool mm_api_completion_prompts(const struct mm_http_app *app, const cJSON *prompt, bool add_bos,
                               struct mm_api_prompt **out, int64_t *n, struct mm_api_error *e);
void mm_api_prompts_free(struct mm_api_prompt *p, int64_t n);

/* Context check: prompt + max_tokens within max_model_len. When the client
 * left *max_tokens unset (< 0) it becomes default_max (-1: no default),
 * capped at the room the context leaves. */
bool mm_api_check_length(const struct mm_http_app *app, int64_t prompt_tokens, int64_t default_max,
                         int64_t *max_tokens, struct mm_api_error *e);

#endif
