/* app.h: what the HTTP handlers serve: the model's tokenizer, template and
 * image settings, the request limits, the API keys and the dispatcher
 * (the engines' schedulers).
 *
 * Design: the daemon's main fills one struct mm_http_app from its
 * configuration and the loaded checkpoint; the HTTP layer only borrows it,
 * so this layer never reads the option table (config.h sits above it).
 *
 * Thread contract: the server may start while the model loads (`loading`
 * set): then only /health is served, and the main thread fills the model
 * fields before clearing `loading` (release; HTTP threads read it with
 * acquire). Immutable after that, except the counting semaphore
 * (image_slots) and what the dispatcher guards itself. */
#ifndef MM_HTTP_APP_H
#define MM_HTTP_APP_H

#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/chat_template.h"
#include "model/config.h"
#include "model/image_preprocess.h"
#include "model/image_source.h"
#include "model/tokenizer.h"

struct mm_state_cache;
struct mm_dispatch;
struct mm_response_store;

struct mm_http_app {
    const char *model_name; /* the id /v1/models lists and requests must name */
    int64_t created;        /* unix time the model was loaded (for /v1/models) */
    const struct mm_config *cfg;
    const struct mm_tokenizer *tok;
    const struct mm_chat_template *tpl;
    struct mm_state_cache *state_cache; /* the state cache's host tier (for /metrics); NULL: none */
    struct mm_dispatch *dispatch;       /* every submission goes through it (serve/dispatch.h) */
    struct mm_response_store *responses; /* /v1/responses (thread-safe itself) */
    /* request limits */
    int64_t max_model_len;
    size_t max_prompt_bytes;
    int64_t max_n;
    int64_t max_images;
    struct mm_image_params image_params;
    struct mm_image_limits image_limits;
    struct mm_image_source_policy image_source;
    sem_t image_slots; /* concurrent image decodes */
    /* API keys: NULL-terminated array, NULL or empty = no auth */
    char **api_keys;
    /* set while the model loads: /health 503, every other route 503 */
    atomic_int loading;
};

/* Constant-time check of an Authorization header value against the keys.
 * True when no keys are configured. */
bool mm_http_auth_ok(const struct mm_http_app *app, const char *authorization);

/* The same check, answering with the key that matched (borrowed from
 * app->api_keys), or NULL: no keys configured (*ok true) or no match (*ok
 * false). */
const char *mm_http_auth_key(const struct mm_http_app *app, const char *authorization, bool *ok);

/* Reads api_keys (comma separated) plus the key file (one per line, #
 * comments); *out is a NULL-terminated heap array (mm_http_keys_free). */
enum mm_status mm_http_keys_load(const char *list, const char *file, char ***out,
                                 struct mm_err *err);
void mm_http_keys_free(char **keys);

#endif
