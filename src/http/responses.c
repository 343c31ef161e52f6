/* responses.c: OpenAI's Responses API, the part that fits a text-and-image
 * model: POST /v1/responses (input as a string or messages with input_text
 * and input_image parts, instructions, max_output_tokens, the sampling
 * fields, store, previous_response_id, stream with the semantic events),
 * GET and DELETE /v1/responses/{id}.
 *
 * Design: a continuation is an ordinary request whose prompt is the stored
 * conversation's consumed ids followed by the new turn rendered as a
 * template continuation, with every image of the conversation as tiles, so
 * the scheduler's state cache can serve the stored prefix from the snapshot
 * taken when the previous response finished and prefill only the new turn;
 * without a snapshot the same ids are prefilled again (same answer, slower)
 * and the `x-mmmamba-state` header says which happened. A finished response
 * goes into the store (serve/response_store.h) before its last event or its
 * body is written, so a client may continue it the moment it has it. As in
 * openai.c, preparation (images, tokenizing) runs on a worker thread and the
 * pump turns engine events into the answer on the HTTP thread. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "base/buffer.h"
#include "base/json.h"
#include "base/log.h"
#include "http/exchange.h"
#include "http/request_parse.h"
#include "model/chat_template.h"
#include "serve/request.h"
#include "serve/dispatch.h"
#include "serve/response_store.h"
#include "serve/scheduler.h"

#define MAX_ITEMS 4096
#define MAX_PARTS 256
#define MAX_METADATA 16

static void reply_api_error(struct mm_http_exchange *ex, const struct mm_api_error *e)
{
    mm_http_reply_error(ex, e->status, e->param[0] ? e->param : NULL, e->code, "%s", e->message);
}

static void not_found(struct mm_http_exchange *ex, const char *param, const char *id)
{
    mm_http_reply_error(ex, 404, param, "response_not_found",
                        "no response with id '%.80s' is stored here (it may have been deleted or "
                        "evicted, made with another API key, or by another server or before a "
                        "restart: stored responses live in this server's memory)",
                        id);
}

/* ---- a prepared request ----------------------------------------------------------- */

/* Everything POST /v1/responses needs once parsed: the prompt, the images to
 * keep, and what the response object echoes back. */
struct prep {
    struct mm_http_app *app;
    const char *body; /* borrowed from the exchange */
    size_t len;
    const char *owner; /* the API key (borrowed from the app) */
    bool ok;
    struct mm_api_error e;
    cJSON *root;
    struct mm_api_params p;
    bool store, return_ids;
    char prev_id[MM_RESPONSE_ID_LEN + 1]; /* "" without previous_response_id */
    int64_t prev_consumed;                /* ids of the previous response's state */
    struct mm_api_prompt prompt;          /* ids and every tile of the conversation */
    struct mm_response_image **images;    /* [n_images] every image, for the store */
    int64_t n_images;
    cJSON *instructions; /* echo: a string or null */
    cJSON *metadata;     /* echo: an object */
    cJSON *max_output;   /* echo: a number or null */
    const char *tool_choice;
};

static void prep_free(struct prep *w)
{
    mm_api_prompt_free(&w->prompt);
    for (int64_t i = 0; i < w->n_images; i++)
        mm_response_image_release(w->images[i]);
    free(w->images);
    cJSON_Delete(w->instructions);
    cJSON_Delete(w->metadata);
    cJSON_Delete(w->max_output);
    cJSON_Delete(w->root);
    free(w);
}

static const cJSON *field(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* Fields of the Responses API this server has no use for, or cannot honour. */
static bool check_unsupported(const cJSON *root, struct mm_api_error *e)
{
    static const char *const absent[][2] = {
        {"conversation", "conversations are not stored here; use previous_response_id"},
        {"prompt", "prompt templates are not supported"},
        {"n", "a response has one output"},
        {"stop", "stop strings are not part of the Responses API"},
        {"logprobs", "logprobs are not supported by /v1/responses"},
    };
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++) {
        const cJSON *v = field(root, absent[i][0]);
        if (v && !(cJSON_IsNumber(v) && strcmp(absent[i][0], "n") == 0 && v->valuedouble == 1) &&
            !(cJSON_IsFalse(v) && strcmp(absent[i][0], "logprobs") == 0))
            return mm_api_fail(e, 400, absent[i][0], "unsupported_parameter", "%s: %s",
                               absent[i][0], absent[i][1]);
    }
    const cJSON *v;
    if ((v = field(root, "background")) && !cJSON_IsFalse(v))
        return mm_api_fail(e, 400, "background", "unsupported_parameter",
                           "background responses are not supported");
    if ((v = field(root, "top_logprobs")) && !(cJSON_IsNumber(v) && v->valuedouble == 0))
        return mm_api_fail(e, 400, "top_logprobs", "unsupported_parameter",
                           "top_logprobs is not supported by /v1/responses");
    if ((v = field(root, "truncation")) &&
        !(cJSON_IsString(v) && strcmp(v->valuestring, "disabled") == 0))
        return mm_api_fail(e, 400, "truncation", "unsupported_parameter",
                           "only truncation \"disabled\" is supported: a conversation past the "
                           "context is refused, never cut");
    if ((v = field(root, "text"))) {
        const cJSON *f = cJSON_IsObject(v) ? field(v, "format") : NULL;
        const cJSON *t = f && cJSON_IsObject(f) ? field(f, "type") : NULL;
        if (!cJSON_IsObject(v) ||
            (f && !(cJSON_IsString(t) && strcmp(t->valuestring, "text") == 0)))
            return mm_api_fail(e, 400, "text.format", "unsupported_parameter",
                               "only text.format {\"type\": \"text\"} is supported");
    }
    if ((v = field(root, "include")) && !(cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0))
        return mm_api_fail(e, 400, "include", "unsupported_parameter",
                           "include: no extra output data is available from this server");
    return true;
}

static bool parse_metadata(struct prep *w, struct mm_api_error *e)
{
    const cJSON *m = field(w->root, "metadata");
    if (!m) {
        w->metadata = cJSON_CreateObject();
        return true;
    }
    if (!cJSON_IsObject(m))
        return mm_api_fail(e, 400, "metadata", "invalid_type", "metadata must be an object");
    if (cJSON_GetArraySize(m) > MAX_METADATA)
        return mm_api_fail(e, 400, "metadata", "invalid_value", "metadata has at most %d keys",
                           MAX_METADATA);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, m)
    {
        if (!cJSON_IsString(kv) || strlen(kv->string) > 64 || strlen(kv->valuestring) > 512)
            return mm_api_fail(e, 400, "metadata", "invalid_value",
                               "metadata values are strings of at most 512 characters, keys at "
                               "most 64");
    }
    w->metadata = cJSON_Duplicate(m, true);
    return true;
}

static bool parse_role(const char *s, enum mm_chat_role *role)
{
    if (strcmp(s, "system") == 0 || strcmp(s, "developer") == 0)
        *role = MM_CHAT_SYSTEM;
    else if (strcmp(s, "user") == 0)
        *role = MM_CHAT_USER;
    else if (strcmp(s, "assistant") == 0)
        *role = MM_CHAT_ASSISTANT;
    else
        return false;
    return true;
}

/* The messages being rendered: parts borrow text from the JSON. */
struct turns {
    struct mm_chat_message *msgs;
    int64_t *first; /* [n_msgs] each message's first part (parts may still move) */
    int64_t n_msgs;
    struct mm_chat_part *parts;
    int64_t n_parts, cap_parts;
    const char **urls;   /* [n_parts] image URL of each image part, else NULL */
    char (*params)[112]; /* [n_parts] the JSON path of each image part */
    size_t text_bytes;
    int64_t images;
};

static void turns_free(struct turns *t)
{
    free(t->msgs);
    free(t->first);
    free(t->parts);
    free(t->urls);
    free(t->params);
}

static bool add_part(struct turns *t, struct mm_chat_part part, const char *url, const char *param,
                     struct mm_api_error *e)
{
    if (t->n_parts == t->cap_parts) {
        const int64_t cap = t->cap_parts ? 2 * t->cap_parts : 16;
        struct mm_chat_part *p = realloc(t->parts, (size_t)cap * sizeof *p);
        if (p)
            t->parts = p;
        const char **u = p ? realloc(t->urls, (size_t)cap * sizeof *u) : NULL;
        if (u)
            t->urls = u;
        char(*q)[112] = u ? realloc(t->params, (size_t)cap * sizeof *q) : NULL;
        if (!q)
            return mm_api_fail(e, 503, NULL, "out_of_memory", "out of memory");
        t->params = q;
        t->cap_parts = cap;
    }
    t->urls[t->n_parts] = url;
    snprintf(t->params[t->n_parts], sizeof t->params[0], "%s", param ? param : "");
    t->parts[t->n_parts++] = part;
    if (part.kind == MM_CHAT_TEXT)
        t->text_bytes += part.len;
    return true;
}

static bool add_text(struct turns *t, const char *s, struct mm_api_error *e)
{
    return add_part(t, (struct mm_chat_part){.kind = MM_CHAT_TEXT, .text = s, .len = strlen(s)},
                    NULL, NULL, e);
}

/* One message item's content into parts (images only in user messages). */
static bool parse_content(struct mm_http_app *app, const cJSON *content, enum mm_chat_role role,
                          const char *where, struct turns *t, struct mm_api_error *e)
{
    char param[96];
    snprintf(param, sizeof param, "%s.content", where);
    if (cJSON_IsString(content))
        return add_text(t, content->valuestring, e);
    if (!cJSON_IsArray(content))
        return mm_api_fail(e, 400, param, content ? "invalid_type" : "missing_required_parameter",
                           "%s must be a string or an array of content parts", param);
    const int np = cJSON_GetArraySize(content);
    if (np == 0 || np > MAX_PARTS)
        return mm_api_fail(e, 400, param, "invalid_value", "%s must have 1 to %d parts", param,
                           MAX_PARTS);
    int k = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        snprintf(param, sizeof param, "%s.content[%d]", where, k++);
        const cJSON *type = cJSON_IsObject(part) ? field(part, "type") : NULL;
        if (!cJSON_IsString(type))
            return mm_api_fail(e, 400, param, "invalid_type",
                               "%s must be an object with a string `type`", param);
        const char *ty = type->valuestring;
        if (strcmp(ty, "input_text") == 0 || strcmp(ty, "output_text") == 0) {
            const cJSON *text = field(part, "text");
            if (!cJSON_IsString(text))
                return mm_api_fail(e, 400, param, "invalid_type", "%s.text must be a string",
                                   param);
            if ((strcmp(ty, "output_text") == 0) != (role == MM_CHAT_ASSISTANT))
                return mm_api_fail(e, 400, param, "invalid_value",
                                   "%s: output_text parts belong to assistant messages, "
                                   "input_text parts to the others",
                                   param);
            if (!add_text(t, text->valuestring, e))
                return false;
        } else if (strcmp(ty, "input_image") == 0) {
            const cJSON *url = field(part, "image_url");
            if (field(part, "file_id"))
                return mm_api_fail(e, 400, param, "unsupported_parameter",
                                   "%s: file_id is not supported (no file store); send the "
                                   "image as a data: URL in image_url",
                                   param);
            if (!cJSON_IsString(url))
                return mm_api_fail(
                    e, 400, param, url ? "invalid_type" : "missing_required_parameter",
                    "%s.image_url must be a string (data:image/...;base64,...)", param);
            if (role != MM_CHAT_USER)
                return mm_api_fail(e, 400, param, "invalid_value",
                                   "images are only allowed in user messages");
            if (++t->images > app->max_images)
                return mm_api_fail(e, 400, param, "too_many_images",
                                   "at most %lld images per request", (long long)app->max_images);
            char iparam[112];
            snprintf(iparam, sizeof iparam, "%s.image_url", param);
            if (!add_part(t, (struct mm_chat_part){.kind = MM_CHAT_IMAGE}, url->valuestring, iparam,
                          e))
                return false;
        } else {
            return mm_api_fail(e, 400, param, "unsupported_content_type",
                               "content part type \"%.40s\" is not supported (input_text, "
                               "input_image, output_text)",
                               ty);
        }
    }
    return true;
}

static bool add_message(struct turns *t, enum mm_chat_role role, int64_t first,
                        struct mm_api_error *e)
{
    struct mm_chat_message *m = realloc(t->msgs, (size_t)(t->n_msgs + 1) * sizeof *m);
    if (m)
        t->msgs = m;
    int64_t *f = m ? realloc(t->first, (size_t)(t->n_msgs + 1) * sizeof *f) : NULL;
    if (!f)
        return mm_api_fail(e, 503, NULL, "out_of_memory", "out of memory");
    t->first = f;
    f[t->n_msgs] = first;
    m[t->n_msgs++] = (struct mm_chat_message){.role = role, .n_parts = t->n_parts - first};
    return true;
}

/* instructions (a system turn first) and input -> messages. */
static bool parse_input(struct prep *w, struct turns *t, struct mm_api_error *e)
{
    struct mm_http_app *app = w->app;
    const cJSON *ins = field(w->root, "instructions");
    if (ins && !cJSON_IsString(ins))
        return mm_api_fail(e, 400, "instructions", "invalid_type", "instructions must be a string");
    w->instructions = ins ? cJSON_CreateString(ins->valuestring) : cJSON_CreateNull();
    if (ins) {
        if (!add_text(t, ins->valuestring, e) || !add_message(t, MM_CHAT_SYSTEM, 0, e))
            return false;
    }
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(w->root, "input");
    if (!input || cJSON_IsNull(input))
        return mm_api_fail(e, 400, "input", "missing_required_parameter", "input is required");
    if (cJSON_IsString(input)) {
        const int64_t first = t->n_parts;
        if (!add_text(t, input->valuestring, e) || !add_message(t, MM_CHAT_USER, first, e))
            return false;
    } else if (cJSON_IsArray(input)) {
        const int n = cJSON_GetArraySize(input);
        if (n == 0 || n > MAX_ITEMS)
            return mm_api_fail(e, 400, "input", "invalid_value", "input must have 1 to %d items",
                               MAX_ITEMS);
        int i = 0;
        const cJSON *item;
        cJSON_ArrayForEach(item, input)
        {
            char where[48], param[96];
            snprintf(where, sizeof where, "input[%d]", i++);
            if (!cJSON_IsObject(item))
                return mm_api_fail(e, 400, where, "invalid_type", "%s must be an object", where);
            const cJSON *type = field(item, "type");
            if (type && !(cJSON_IsString(type) && strcmp(type->valuestring, "message") == 0))
                return mm_api_fail(e, 400, where, "unsupported_item_type",
                                   "%s: only message items are supported (type \"message\"), "
                                   "not \"%.40s\"",
                                   where, cJSON_IsString(type) ? type->valuestring : "?");
            const cJSON *role = field(item, "role");
            enum mm_chat_role r;
            snprintf(param, sizeof param, "%s.role", where);
            if (!cJSON_IsString(role))
                return mm_api_fail(e, 400, param,
                                   role ? "invalid_type" : "missing_required_parameter",
                                   "%s must be a string", param);
            if (!parse_role(role->valuestring, &r))
                return mm_api_fail(e, 400, param, "invalid_value",
                                   "unsupported role \"%.40s\" (user, system, developer or "
                                   "assistant)",
                                   role->valuestring);
            const int64_t first = t->n_parts;
            if (!parse_content(app, cJSON_GetObjectItemCaseSensitive(item, "content"), r, where, t,
                               e) ||
                !add_message(t, r, first, e))
                return false;
        }
    } else {
        return mm_api_fail(e, 400, "input", "invalid_type",
                           "input must be a string or an array of message items");
    }
    if (t->text_bytes > app->max_prompt_bytes)
        return mm_api_fail(e, 413, "input", "prompt_too_large",
                           "the input holds more than %zu bytes of text", app->max_prompt_bytes);
    for (int64_t k = 0; k < t->n_msgs; k++)
        t->msgs[k].parts = t->parts + t->first[k];
    return true;
}

/* The previous response's ids and images start the prompt. */
static bool load_previous(struct prep *w, int64_t *used, struct mm_api_error *e)
{
    const cJSON *prev = field(w->root, "previous_response_id");
    if (!prev)
        return true;
    if (!cJSON_IsString(prev))
        return mm_api_fail(e, 400, "previous_response_id", "invalid_type",
                           "previous_response_id must be a string");
    struct mm_response r;
    struct mm_err err;
    const enum mm_status st = mm_response_store_get(w->app->responses, prev->valuestring, w->owner,
                                                    MM_RESPONSE_HISTORY, &r, &err);
    if (st == MM_ERR_NOT_FOUND) {
        mm_api_fail(e, 404, "previous_response_id", "response_not_found",
                    "no response with id '%.80s' is stored here (it may have been deleted or "
                    "evicted, made with another API key, or by another server or before a "
                    "restart: stored responses live in this server's memory)",
                    prev->valuestring);
        return false;
    }
    if (st != MM_OK)
        return mm_api_fail(e, 503, NULL, "out_of_memory", "%s", err.msg);
    snprintf(w->prev_id, sizeof w->prev_id, "%s", r.id);
    /* the history's tiles count against this request's tile budget: it holds them all */
    const int64_t tiles = mm_response_tiles(&r);
    const struct mm_image_limits *lim = &w->app->image_limits;
    const int64_t cap = lim->max_tiles_per_request ? lim->max_tiles_per_request
                                                   : MM_IMAGE_DEFAULT_MAX_TILES_PER_REQUEST;
    bool ok = true;
    if (tiles > cap) {
        ok = mm_api_fail(e, 413, "previous_response_id", "image_too_large",
                         "the conversation holds %lld image tiles, more than the %lld a request "
                         "may carry (max_tiles_per_request)",
                         (long long)tiles, (long long)cap);
    }
    const size_t tile_floats =
        3 * (size_t)w->app->image_params.tile_size * (size_t)w->app->image_params.tile_size;
    if (ok && tiles > 0) {
        w->prompt.tiles = malloc((size_t)tiles * tile_floats * sizeof *w->prompt.tiles);
        if (!w->prompt.tiles)
            ok = mm_api_fail(e, 503, NULL, "out_of_memory", "no memory for the image tiles now");
    }
    for (int64_t i = 0; ok && i < r.n_images; i++) { /* pixels: normalised only when prefilled */
        mm_response_image_pixels(r.images[i],
                                 w->prompt.tiles + (size_t)w->prompt.n_tiles * tile_floats);
        w->prompt.n_tiles += mm_response_image_tiles(r.images[i]);
    }
    if (ok) {
        *used = tiles;
        w->prompt.ids = (struct mm_tokens){.ids = r.ids, .n = r.n_ids, .cap = r.n_ids};
        r.ids = NULL;
        w->images = r.images;
        w->n_images = r.n_images;
        r.images = NULL;
        r.n_images = 0;
        w->prev_consumed = r.n_state;
    }
    mm_response_free(&r);
    return ok;
}

/* Decodes the new images (after the history's), keeps them for the store, renders. */
static bool build_prompt(struct prep *w, struct turns *t, int64_t used, struct mm_api_error *e)
{
    struct mm_http_app *app = w->app;
    const int64_t tile_size = app->image_params.tile_size;
    const size_t tile_floats = 3 * (size_t)tile_size * (size_t)tile_size;
    for (int64_t k = 0; k < t->n_parts; k++) {
        if (t->parts[k].kind != MM_CHAT_IMAGE)
            continue;
        int64_t count = 0;
        const int64_t at = w->prompt.n_tiles;
        if (!mm_api_load_image(app, t->urls[k], t->params[k], &used, &w->prompt.tiles,
                               &w->prompt.n_tiles, &count, e))
            return false;
        t->parts[k].tiles = count;
        if (!w->store)
            continue; /* kept only to be stored */
        struct mm_response_image **g = realloc(w->images, (size_t)(w->n_images + 1) * sizeof *g);
        if (!g)
            return mm_api_fail(e, 503, NULL, "out_of_memory", "out of memory");
        w->images = g;
        struct mm_err err;
        if (mm_response_image_create_pixels(w->prompt.tiles + (size_t)at * tile_floats, count,
                                            tile_size, &w->images[w->n_images], &err) != MM_OK)
            return mm_api_fail(e, 503, NULL, "out_of_memory", "%s", err.msg);
        w->n_images++;
    }
    const struct mm_chat_options copt = {
        .add_generation_prompt = true, .add_bos = true, .continuation = w->prev_id[0] != '\0'};
    struct mm_err err;
    const enum mm_status st =
        mm_chat_render(app->tpl, t->msgs, t->n_msgs, &copt, &w->prompt.ids, NULL, NULL, &err);
    if (st != MM_OK)
        return mm_api_fail(e,
                           st == MM_ERR_LIMIT   ? 413
                           : st == MM_ERR_NOMEM ? 503
                                                : 400,
                           "input", NULL, "%s", err.msg);
    return true;
}

static void prep_work(void *arg)
{
    struct prep *w = arg;
    struct mm_http_app *app = w->app;
    struct mm_api_error *e = &w->e;
    struct turns t = {0};
    int64_t max_output = -1, used = 0;
    w->store = true;
    w->ok = mm_api_parse_body(w->body, w->len, &w->root, e) &&
            mm_api_check_model(app, w->root, e) && check_unsupported(w->root, e) &&
            mm_api_parse_params(app, w->root, true, &w->p, e) &&
            mm_api_get_int(w->root, "max_output_tokens", 1, app->max_model_len, &max_output, e) &&
            mm_api_get_bool(w->root, "store", &w->store, e) &&
            mm_api_get_bool(w->root, "return_token_ids", &w->return_ids, e) && parse_metadata(w, e);
    if (w->ok) {
        const cJSON *tc = field(w->root, "tool_choice");
        w->tool_choice = "auto";
        if (tc && !(cJSON_IsString(tc) &&
                    (strcmp(tc->valuestring, "auto") == 0 || strcmp(tc->valuestring, "none") == 0)))
            w->ok = mm_api_fail(e, 400, "tool_choice", "unsupported_parameter",
                                "tool_choice: this server has no tools (\"auto\" or \"none\")");
        else if (tc)
            w->tool_choice = tc->valuestring;
    }
    w->p.max_tokens = max_output; /* the chat spellings (max_tokens, ...) do not apply */
    w->max_output = max_output > 0 ? cJSON_CreateNumber((double)max_output) : cJSON_CreateNull();
    w->ok = w->ok && parse_input(w, &t, e) && load_previous(w, &used, e) &&
            build_prompt(w, &t, used, e);
    turns_free(&t);
}

/* ---- the job: engine events -> the response -------------------------------------------- */

enum resp_status { RS_IN_PROGRESS, RS_COMPLETED, RS_INCOMPLETE, RS_FAILED };

struct resp_job {
    pthread_mutex_t lock;
    void *wake; /* the exchange's wake token; NULL once released */
    struct mm_http_app *app;
    struct mm_request *req;
    bool stream, store, started;
    bool return_ids; /* vLLM's return_token_ids: the ids in the response object */
    int64_t n_prompt;
    char id[MM_RESPONSE_ID_LEN + 1];
    char msg_id[MM_RESPONSE_ID_LEN + 1];
    char prev_id[MM_RESPONSE_ID_LEN + 1];
    int64_t prev_consumed;
    char *owner;
    int64_t created_at;
    double temperature, top_p;
    cJSON *instructions, *metadata, *max_output;
    const char *tool_choice; /* static */
    /* what the model consumed: the prompt, then every emitted token */
    int32_t *ids;
    int64_t n_ids, cap_ids;
    struct mm_response_image **images;
    int64_t n_images;
    /* the answer */
    char *text;
    size_t len, cap;
    enum resp_status status;
    char error[256];
    const char *error_code;
    int64_t prompt_tokens, completion_tokens, cached_tokens;
    int64_t seq; /* stream sequence_number */
};

static void job_notify(void *user)
{
    struct resp_job *j = user;
    pthread_mutex_lock(&j->lock);
    if (j->wake)
        mm_http_wake(j->wake);
    pthread_mutex_unlock(&j->lock);
}

static void job_cancel(void *job)
{
    struct resp_job *j = job;
    if (j->req)
        mm_request_cancel(j->req);
}

static void job_free(struct resp_job *j)
{
    if (j->req) {
        mm_request_set_notify(j->req, NULL, NULL);
        mm_request_cancel(j->req);
        mm_request_release(j->req);
    }
    for (int64_t i = 0; i < j->n_images; i++)
        mm_response_image_release(j->images[i]);
    free(j->images);
    free(j->ids);
    free(j->text);
    free(j->owner);
    cJSON_Delete(j->instructions);
    cJSON_Delete(j->metadata);
    cJSON_Delete(j->max_output);
    pthread_mutex_destroy(&j->lock);
    free(j);
}

static void job_release(void *job)
{
    struct resp_job *j = job;
    pthread_mutex_lock(&j->lock);
    j->wake = NULL;
    pthread_mutex_unlock(&j->lock);
    job_free(j);
}

static bool push_id(struct resp_job *j, int32_t id)
{
    if (j->n_ids == j->cap_ids) {
        const int64_t cap = j->cap_ids ? 2 * j->cap_ids : 256;
        int32_t *g = realloc(j->ids, (size_t)cap * sizeof *g);
        if (!g)
            return false;
        j->ids = g;
        j->cap_ids = cap;
    }
    j->ids[j->n_ids++] = id;
    return true;
}

static const char *status_name(enum resp_status s)
{
    switch (s) {
    case RS_COMPLETED:
        return "completed";
    case RS_INCOMPLETE:
        return "incomplete";
    case RS_FAILED:
        return "failed";
    default:
        return "in_progress";
    }
}

static cJSON *text_part(const struct resp_job *j, bool with_text)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "type", "output_text");
    cJSON_AddItemToObject(
        p, "text", mm_json_string_n(with_text && j->text ? j->text : "", with_text ? j->len : 0));
    cJSON_AddArrayToObject(p, "annotations");
    cJSON_AddArrayToObject(p, "logprobs");
    return p;
}

/* The output message; done: with its text and final status. */
static cJSON *message_item(const struct resp_job *j, bool done)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", j->msg_id);
    cJSON_AddStringToObject(m, "type", "message");
    cJSON_AddStringToObject(m, "status",
                            !done                        ? "in_progress"
                            : j->status == RS_INCOMPLETE ? "incomplete"
                                                         : "completed");
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON *content = cJSON_AddArrayToObject(m, "content");
    if (done)
        cJSON_AddItemToArray(content, text_part(j, true));
    return m;
}

/* The Response object as it stands. */
static cJSON *response_object(const struct resp_job *j)
{
    const bool done = j->status != RS_IN_PROGRESS;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "object", "response");
    cJSON_AddNumberToObject(o, "created_at", (double)j->created_at);
    cJSON_AddStringToObject(o, "status", status_name(j->status));
    if (j->status == RS_COMPLETED)
        cJSON_AddNumberToObject(o, "completed_at", (double)time(NULL));
    else
        cJSON_AddNullToObject(o, "completed_at");
    cJSON_AddFalseToObject(o, "background");
    if (j->status == RS_FAILED) {
        cJSON *e = cJSON_AddObjectToObject(o, "error");
        cJSON_AddStringToObject(e, "code", "server_error");
        cJSON_AddStringToObject(e, "message", j->error);
    } else {
        cJSON_AddNullToObject(o, "error");
    }
    if (j->status == RS_INCOMPLETE) {
        cJSON *d = cJSON_AddObjectToObject(o, "incomplete_details");
        cJSON_AddStringToObject(d, "reason", "max_output_tokens");
    } else {
        cJSON_AddNullToObject(o, "incomplete_details");
    }
    cJSON_AddItemToObject(o, "instructions", cJSON_Duplicate(j->instructions, true));
    cJSON_AddItemToObject(o, "max_output_tokens", cJSON_Duplicate(j->max_output, true));
    cJSON_AddStringToObject(o, "model", j->app->model_name);
    cJSON *output = cJSON_AddArrayToObject(o, "output");
    if (done && j->status != RS_FAILED)
        cJSON_AddItemToArray(output, message_item(j, true));
    cJSON_AddTrueToObject(o, "parallel_tool_calls");
    if (j->prev_id[0])
        cJSON_AddStringToObject(o, "previous_response_id", j->prev_id);
    else
        cJSON_AddNullToObject(o, "previous_response_id");
    cJSON *r = cJSON_AddObjectToObject(o, "reasoning");
    cJSON_AddNullToObject(r, "effort");
    cJSON_AddNullToObject(r, "summary");
    cJSON_AddBoolToObject(o, "store", j->store);
    cJSON_AddNumberToObject(o, "temperature", j->temperature);
    cJSON *text = cJSON_AddObjectToObject(o, "text");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(text, "format"), "type", "text");
    cJSON_AddStringToObject(o, "tool_choice", j->tool_choice);
    cJSON_AddArrayToObject(o, "tools");
    cJSON_AddNumberToObject(o, "top_p", j->top_p);
    cJSON_AddStringToObject(o, "truncation", "disabled");
    if (done && j->status != RS_FAILED) {
        cJSON *u = cJSON_AddObjectToObject(o, "usage");
        cJSON_AddNumberToObject(u, "input_tokens", (double)j->prompt_tokens);
        cJSON *d = cJSON_AddObjectToObject(u, "input_tokens_details");
        cJSON_AddNumberToObject(d, "cached_tokens", (double)j->cached_tokens);
        cJSON_AddNumberToObject(d, "cache_write_tokens", 0);
        cJSON_AddNumberToObject(u, "output_tokens", (double)j->completion_tokens);
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(u, "output_tokens_details"),
                                "reasoning_tokens", 0);
        cJSON_AddNumberToObject(u, "total_tokens",
                                (double)(j->prompt_tokens + j->completion_tokens));
    } /* else none: the schema's usage is an object when present */
    cJSON_AddItemToObject(o, "metadata", cJSON_Duplicate(j->metadata, true));
    if (j->return_ids && done) {
        cJSON *p = cJSON_AddArrayToObject(o, "prompt_token_ids");
        for (int64_t i = 0; i < j->n_prompt; i++)
            cJSON_AddItemToArray(p, cJSON_CreateNumber(j->ids[i]));
        cJSON *g = cJSON_AddArrayToObject(o, "output_token_ids");
        for (int64_t i = j->n_prompt; i < j->n_ids; i++)
            cJSON_AddItemToArray(g, cJSON_CreateNumber(j->ids[i]));
    }
    return o;
}

/* One SSE event: `event: TYPE` and the object with its type and sequence number. */
static void send_event(struct mm_http_exchange *ex, struct resp_job *j, const char *type, cJSON *o)
{
    cJSON *out = cJSON_CreateObject(); /* "type" first, as OpenAI's events read */
    cJSON_AddStringToObject(out, "type", type);
    for (cJSON *c; (c = o->child) != NULL;)
        cJSON_AddItemToObject(out, c->string, cJSON_DetachItemViaPointer(o, c));
    cJSON_AddNumberToObject(out, "sequence_number", (double)j->seq++);
    cJSON_Delete(o);
    char *s = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
    if (!s)
        return;
    char head[96];
    const int n = snprintf(head, sizeof head, "event: %s\ndata: ", type);
    mm_http_stream_write(ex, head, (size_t)n);
    mm_http_stream_write(ex, s, strlen(s));
    mm_http_stream_write(ex, "\n\n", 2);
    free(s);
}

static cJSON *with_response(const struct resp_job *j)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "response", response_object(j));
    return o;
}

static cJSON *item_event(const struct resp_job *j, bool done)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "output_index", 0);
    cJSON_AddItemToObject(o, "item", message_item(j, done));
    return o;
}

static cJSON *part_event(const struct resp_job *j, bool done)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "item_id", j->msg_id);
    cJSON_AddNumberToObject(o, "output_index", 0);
    cJSON_AddNumberToObject(o, "content_index", 0);
    cJSON_AddItemToObject(o, "part", text_part(j, done));
    return o;
}

static cJSON *text_event(const struct resp_job *j, const char *key, const char *s, size_t n)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "item_id", j->msg_id);
    cJSON_AddNumberToObject(o, "output_index", 0);
    cJSON_AddNumberToObject(o, "content_index", 0);
    cJSON_AddItemToObject(o, key, mm_json_string_n(s ? s : "", n));
    cJSON_AddArrayToObject(o, "logprobs");
    return o;
}

static bool append_text(struct resp_job *j, const char *s, size_t n)
{
    if (!mm_buffer_reserve(&j->text, &j->cap, j->len + n + 1, 256))
        return false;
    memcpy(j->text + j->len, s, n);
    j->len += n;
    j->text[j->len] = '\0';
    return true;
}

static void apply_event(struct mm_http_exchange *ex, struct resp_job *j, const struct mm_event *ev)
{
    if (ev->kind == MM_EVENT_TOKEN) {
        if (j->completion_tokens++ == 0)
            mm_http_mark_first_token(ex);
        if (!push_id(j, ev->token) || !append_text(j, ev->text, ev->len)) {
            mm_request_cancel(j->req); /* ends with a FINISH that says so */
            snprintf(j->error, sizeof j->error, "out of memory");
            return;
        }
        if (j->stream) /* one event per token, as the chat streams (docs/http.md) */
            send_event(ex, j, "response.output_text.delta",
                       text_event(j, "delta", ev->text, ev->len));
        return;
    }
    /* MM_EVENT_FINISH */
    j->prompt_tokens = ev->prompt_tokens;
    j->completion_tokens = ev->completion_tokens;
    j->cached_tokens = ev->cached_tokens;
    if (ev->len && append_text(j, ev->text, ev->len) && j->stream)
        send_event(ex, j, "response.output_text.delta", text_event(j, "delta", ev->text, ev->len));
    switch (ev->finish) {
    case MM_FINISH_STOP:
        j->status = RS_COMPLETED;
        break;
    case MM_FINISH_LENGTH:
        j->status = RS_INCOMPLETE;
        break;
    default:
        j->status = RS_FAILED;
        if (!j->error[0])
            snprintf(
                j->error, sizeof j->error, "%s",
                ev->finish == MM_FINISH_ERROR
                    ? (ev->message && ev->message[0] ? ev->message : "engine error")
                    : "the response was cancelled: its client closed the connection (a buffered "
                      "answer counts a half-close, shutdown of the client's write side, as "
                      "one: stream it instead), or the server is shutting down");
        j->error_code = ev->finish == MM_FINISH_ERROR ? "engine_error" : "cancelled";
    }
}

/* Keeps a finished response: the ids the model consumed (prompt, emitted
 * tokens, and the turn's <|im_end|>, which the chat template writes after an
 * answer whichever way it ended), its images, and its JSON. */
static void store_response(struct resp_job *j, const cJSON *view)
{
    struct mm_err err;
    const int32_t im_end = mm_tokenizer_find(j->app->tok, "<|im_end|>");
    if (im_end < 0 || !push_id(j, im_end)) {
        MM_WARN("%s: not stored: %s", j->id, im_end < 0 ? "no <|im_end|> token" : "out of memory");
        return;
    }
    struct mm_response r = {0};
    memcpy(r.id, j->id, sizeof r.id);
    r.created_at = j->created_at;
    r.completed_at = (int64_t)time(NULL);
    r.view = cJSON_PrintUnformatted(view);
    if (!r.view || (j->owner && !(r.owner = strdup(j->owner)))) {
        mm_response_free(&r);
        MM_WARN("%s: not stored: out of memory", j->id);
        return;
    }
    r.view_len = strlen(r.view);
    /* the last sampled token was never fed back */
    r.n_state = j->prompt_tokens + (j->completion_tokens > 0 ? j->completion_tokens - 1 : 0);
    if (r.n_state > j->n_ids)
        r.n_state = j->n_ids;
    r.ids = j->ids;
    r.n_ids = j->n_ids;
    r.images = j->images;
    r.n_images = j->n_images;
    if (mm_response_store_put(j->app->responses, &r, &err) != MM_OK) {
        MM_WARN("%s: not stored: %s", j->id, err.msg);
        r.ids = NULL; /* still the job's */
        r.images = NULL;
        r.n_images = 0;
        mm_response_free(&r);
        return;
    }
    j->ids = NULL; /* the store's now */
    j->n_ids = j->cap_ids = 0;
    j->images = NULL;
    j->n_images = 0;
}

/* "resumed": the previous response's state was kept and served; "rebuilt":
 * its ids were prefilled again. */
static const char *state_name(const struct resp_job *j, int64_t covered)
{
    return covered >= j->prev_consumed ? "resumed" : "rebuilt";
}

static enum mm_http_pump job_pump(struct mm_http_exchange *ex, void *job)
{
    struct resp_job *j = job;
    if (j->stream && !j->started) {
        j->started = true;
        send_event(ex, j, "response.created", with_response(j));
        send_event(ex, j, "response.in_progress", with_response(j));
        send_event(ex, j, "response.output_item.added", item_event(j, false));
        send_event(ex, j, "response.content_part.added", part_event(j, false));
    }
    struct mm_event evs[32];
    int n;
    while (j->status == RS_IN_PROGRESS && (n = mm_request_take(j->req, evs, 32)) > 0)
        for (int k = 0; k < n; k++)
            apply_event(ex, j, &evs[k]);
    if (j->status == RS_IN_PROGRESS)
        return MM_HTTP_PUMP_WAIT;
    mm_http_set_usage(ex, j->prompt_tokens, j->completion_tokens);
    cJSON *resp = response_object(j);
    if (j->store && j->status != RS_FAILED && resp)
        store_response(j, resp);
    if (!j->stream) {
        if (j->status == RS_FAILED) {
            cJSON_Delete(resp);
            mm_http_reply_error(ex, strcmp(j->error_code, "cancelled") == 0 ? 503 : 500, NULL,
                                j->error_code, "%s", j->error);
        } else {
            if (j->prev_id[0])
                mm_http_add_header(ex, "x-mmmamba-state", state_name(j, j->cached_tokens));
            mm_http_reply_json(ex, 200, resp);
        }
        return MM_HTTP_PUMP_DONE;
    }
    if (j->status == RS_FAILED) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "response", resp);
        send_event(ex, j, "response.failed", o);
        return MM_HTTP_PUMP_DONE;
    }
    send_event(ex, j, "response.output_text.done", text_event(j, "text", j->text, j->len));
    send_event(ex, j, "response.content_part.done", part_event(j, true));
    send_event(ex, j, "response.output_item.done", item_event(j, true));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "response", resp);
    send_event(ex, j, j->status == RS_COMPLETED ? "response.completed" : "response.incomplete", o);
    return MM_HTTP_PUMP_DONE;
}

static const struct mm_http_job_ops resp_ops = {job_pump, job_cancel, job_release};

/* Submits the prepared request and becomes its job (on the HTTP thread). */
/* The prompt's tile digests from its images' (each computed once, when the
 * image was stored or read back), when the images cover every tile in
 * prompt order (a request that stores nothing keeps no new images: then
 * NULL, and the keys hash the pixels). Malloc'ed, or NULL. */
static uint64_t *image_digests(const struct prep *w)
{
    int64_t n = 0;
    for (int64_t i = 0; i < w->n_images; i++)
        n += mm_response_image_tiles(w->images[i]);
    if (n == 0 || n != w->prompt.n_tiles)
        return NULL;
    uint64_t *d = malloc((size_t)n * 2 * sizeof *d);
    for (int64_t i = 0, at = 0; d && i < w->n_images; i++) {
        const int64_t k = mm_response_image_tiles(w->images[i]);
        memcpy(d + 2 * at, mm_response_image_digests(w->images[i]), (size_t)k * 2 * sizeof *d);
        at += k;
    }
    return d;
}

static void start_response(struct mm_http_exchange *ex, struct prep *w)
{
    struct mm_http_app *app = w->app;
    struct mm_err err;
    struct mm_api_error ae;
    int64_t max_tokens = w->p.max_tokens;
    if (!mm_api_check_length(app, w->prompt.ids.n, w->p.default_max_tokens, &max_tokens, &ae)) {
        if (strcmp(ae.param, "messages") == 0)
            snprintf(ae.param, sizeof ae.param, "input");
        else if (strcmp(ae.param, "max_tokens") == 0)
            snprintf(ae.param, sizeof ae.param, "max_output_tokens");
        reply_api_error(ex, &ae);
        return;
    }
    struct resp_job *j = calloc(1, sizeof *j);
    int32_t *prompt_copy = malloc(((size_t)w->prompt.ids.n + 1) * sizeof *prompt_copy);
    if (!j || !prompt_copy || (w->owner && !(j->owner = strdup(w->owner)))) {
        if (j)
            free(j->owner);
        free(j);
        free(prompt_copy);
        mm_http_reply_error(ex, 503, NULL, "out_of_memory", "out of memory");
        return;
    }
    pthread_mutex_init(&j->lock, NULL);
    j->app = app;
    j->stream = w->p.stream;
    j->store = w->store;
    j->return_ids = w->return_ids;
    j->n_prompt = w->prompt.ids.n;
    j->created_at = (int64_t)time(NULL);
    j->temperature = w->p.temperature;
    j->top_p = w->p.top_p;
    j->tool_choice = strcmp(w->tool_choice, "none") == 0 ? "none" : "auto";
    j->instructions = w->instructions;
    j->metadata = w->metadata;
    j->max_output = w->max_output;
    w->instructions = w->metadata = w->max_output = NULL;
    memcpy(j->prev_id, w->prev_id, sizeof j->prev_id);
    j->prev_consumed = w->prev_consumed;
    j->images = w->images;
    j->n_images = w->n_images;
    w->images = NULL;
    w->n_images = 0;
    memcpy(prompt_copy, w->prompt.ids.ids, (size_t)w->prompt.ids.n * sizeof *prompt_copy);
    j->ids = prompt_copy;
    j->n_ids = j->cap_ids = w->prompt.ids.n;
    if (mm_response_id_new(j->id, &err) != MM_OK || mm_response_id_new(j->msg_id, &err) != MM_OK) {
        job_free(j);
        mm_http_reply_error(ex, 503, NULL, NULL, "%s", err.msg);
        return;
    }
    memcpy(j->msg_id, "msg_", 4); /* "msg_" + the rest of a second random id */
    memmove(j->msg_id + 4, j->msg_id + 5, MM_RESPONSE_ID_LEN - 4);

    struct mm_request_params rp;
    mm_request_params_default(&rp);
    rp.id = mm_http_request_id(ex);
    rp.sample.temperature = (float)w->p.temperature;
    rp.sample.top_k = (int32_t)(w->p.top_k > 0 ? w->p.top_k : 0);
    rp.sample.top_p = (float)w->p.top_p;
    rp.sample.min_p = (float)w->p.min_p;
    rp.sample.repetition_penalty = (float)w->p.repetition_penalty;
    rp.sample.presence_penalty = (float)w->p.presence_penalty;
    rp.sample.frequency_penalty = (float)w->p.frequency_penalty;
    rp.sample.seed = w->p.seed;
    rp.has_seed = w->p.has_seed;
    rp.ignore_eos = w->p.ignore_eos;
    rp.max_tokens = max_tokens;
    uint64_t *digests = image_digests(w); /* before the tiles are the request's */
    const int64_t digest_floats = 3 * app->image_params.tile_size * app->image_params.tile_size;
    enum mm_status st = mm_request_create_pixels(&rp, w->prompt.ids.ids, w->prompt.ids.n,
                                                 w->prompt.tiles, w->prompt.n_tiles, &j->req, &err);
    if (st == MM_OK && digests)
        mm_request_set_tile_digests(j->req, digests, digest_floats);
    else
        free(digests);
    w->prompt.ids = (struct mm_tokens){0}; /* the request's now */
    w->prompt.tiles = NULL;
    w->prompt.n_tiles = 0;
    int64_t covered = 0;
    int engine = -1;
    if (st == MM_OK) {
        mm_request_set_notify(j->req, job_notify, j);
        if (!app->dispatch) {
            st = mm_err_set(&err, MM_ERR_UNAVAILABLE, "no engine");
        } else {
            covered = mm_dispatch_cached_prefix(app->dispatch, j->req);
            st = mm_dispatch_submit(app->dispatch, j->req, &engine, &err);
        }
        if (st != MM_OK) {
            mm_request_set_notify(j->req, NULL, NULL);
            mm_request_release(j->req);
            j->req = NULL;
        }
    }
    if (st != MM_OK) {
        job_free(j);
        if (st == MM_ERR_LIMIT)
            mm_http_reply_error(ex, 429, NULL, "queue_full",
                                "the server is busy (request queue full); retry later");
        else
            mm_http_reply_error(ex,
                                st == MM_ERR_UNAVAILABLE || st == MM_ERR_NOMEM ? 503
                                : st == MM_ERR_INVALID                         ? 400
                                                                               : 500,
                                st == MM_ERR_INVALID ? "input" : NULL,
                                st == MM_ERR_INVALID ? "invalid_value" : NULL, "%s", err.msg);
        return;
    }
    mm_http_set_usage(ex, j->n_ids, 0);
    char engine_name[16];
    snprintf(engine_name, sizeof engine_name, "%d", engine);
    mm_http_add_header(ex, "x-mmmamba-engine", engine_name);
    if (j->stream && j->prev_id[0]) /* a stream's headers go now: the hint decides */
        mm_http_add_header(ex, "x-mmmamba-state", state_name(j, covered));
    pthread_mutex_lock(&j->lock);
    j->wake = mm_http_job_token(ex);
    pthread_mutex_unlock(&j->lock);
    mm_http_start_job(ex, &resp_ops, j, j->stream);
}

static void prep_done(struct mm_http_exchange *ex, void *arg)
{
    struct prep *w = arg;
    if (ex) {
        if (!w->ok)
            reply_api_error(ex, &w->e);
        else
            start_response(ex, w);
    }
    prep_free(w);
}

void mm_http_handle_responses(struct mm_http_exchange *ex)
{
    struct prep *w = calloc(1, sizeof *w);
    if (!w) {
        mm_http_reply_error(ex, 503, NULL, "out_of_memory", "out of memory");
        return;
    }
    w->app = mm_http_app(ex);
    w->owner = mm_http_api_key(ex);
    w->body = mm_http_body(ex, &w->len);
    mm_http_offload(ex, prep_work, prep_done, w);
}

/* ---- GET and DELETE /v1/responses/{id} ---------------------------------------------- */

void mm_http_handle_response_id(struct mm_http_exchange *ex)
{
    struct mm_http_app *app = mm_http_app(ex);
    const char *id = mm_http_path(ex) + strlen("/v1/responses/");
    const char *owner = mm_http_api_key(ex);
    struct mm_err err;
    if (strcmp(mm_http_method(ex), "DELETE") == 0) {
        const enum mm_status st = mm_response_store_delete(app->responses, id, owner, &err);
        if (st == MM_ERR_NOT_FOUND) {
            not_found(ex, NULL, id);
            return;
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "object", "response.deleted");
        cJSON_AddTrueToObject(o, "deleted");
        mm_http_reply_json(ex, 200, o);
        return;
    }
    struct mm_response r;
    const enum mm_status st =
        mm_response_store_get(app->responses, id, owner, MM_RESPONSE_VIEW, &r, &err);
    if (st == MM_ERR_NOT_FOUND) {
        not_found(ex, NULL, id);
        return;
    }
    if (st != MM_OK) {
        mm_http_reply_error(ex, 503, NULL, "out_of_memory", "%s", err.msg);
        return;
    }
    mm_http_reply_text(ex, 200, "application/json", r.view, r.view_len);
    r.view = NULL; /* the reply's now */
    mm_response_free(&r);
}
