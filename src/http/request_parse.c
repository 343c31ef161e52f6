/* request_parse.c: request_parse.h. Field by field, each check names the
 * JSON path at fault (`messages[2].content[0].image_url.url`), as OpenAI's
 * `param` does. */
#include "http/request_parse.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/chat_template.h"
#include "model/image_decode.h"
#include "model/image_preprocess.h"
#include "model/image_source.h"

#define MAX_MESSAGES 4096
#define MAX_PARTS 256

static bool fail(struct mm_api_error *e, int status, const char *param, const char *code,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static bool fail(struct mm_api_error *e, int status, const char *param, const char *code,
                 const char *fmt, ...)
{
    e->status = status;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return false;
}

bool mm_api_fail(struct mm_api_error *e, int status, const char *param, const char *code,
                 const char *fmt, ...)
{
    e->status = status;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return false;
}

void mm_api_prompt_free(struct mm_api_prompt *p)
{
    mm_tokens_free(&p->ids);
    free(p->tiles);
    p->tiles = NULL;
    p->n_tiles = 0;
}

void mm_api_prompts_free(struct mm_api_prompt *p, int64_t n)
{
    for (int64_t i = 0; p && i < n; i++)
        mm_api_prompt_free(&p[i]);
    free(p);
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
 * Returns the offset of the first bad byte, or len. */
static size_t utf8_check(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        const unsigned c = s[i];
        size_t n;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            if (c == 0xE0)
                lo = 0xA0;
            if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            if (c == 0xF0)
                lo = 0x90;
            if (c == 0xF4)
                hi = 0x8F;
        } else {
            return i;
        }
        if (i + n >= len)
            return i; /* truncated sequence */
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= n; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return i;
        i += n + 1;
    }
    return len;
}

bool mm_api_parse_body(const char *body, size_t len, cJSON **out, struct mm_api_error *e)
{
    *out = NULL;
    const size_t bad = utf8_check((const unsigned char *)body, len);
    if (bad != len)
        return fail(e, 400, "", "invalid_utf8", "the request body is not valid UTF-8 (byte %zu)",
                    bad);
    if (len == 0)
        return fail(e, 400, "", "invalid_json", "the request body is empty; send a JSON object");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (!root) {
        const size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        return fail(e, 400, "", "invalid_json",
                    "the request body is not valid JSON (near byte %zu)", at);
    }
    /* only blanks may follow the value */
    for (const char *p = end; p && p < body + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            cJSON_Delete(root);
            return fail(e, 400, "", "invalid_json",
                        "unexpected data after the JSON value (byte %zu)", (size_t)(p - body));
        }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return fail(e, 400, "", "invalid_json", "the request body must be a JSON object");
    }
    *out = root;
    return true;
}

bool mm_api_check_model(const struct mm_http_app *app, const cJSON *root, struct mm_api_error *e)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!m || cJSON_IsNull(m))
        return true;
    if (!cJSON_IsString(m))
        return fail(e, 400, "model", "invalid_type", "model must be a string");
    if (strcmp(m->valuestring, app->model_name) != 0)
        return fail(e, 404, "model", "model_not_found",
                    "the model `%.200s` does not exist; this server serves `%.200s`",
                    m->valuestring, app->model_name);
    return true;
}

/* ---- typed optional fields (absent or null keep the default) ------------------ */

static const cJSON *field(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static bool get_number(const cJSON *obj, const char *key, double lo, double hi, double *out,
                       struct mm_api_error *e)
{
    const cJSON *v = field(obj, key);
    if (!v)
        return true;
    if (!cJSON_IsNumber(v))
        return fail(e, 400, key, "invalid_type", "%s must be a number", key);
    if (!isfinite(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi)
        return fail(e, 400, key, "invalid_value", "%s must be between %g and %g, got %g", key, lo,
                    hi, v->valuedouble);
    *out = v->valuedouble;
    return true;
}

static bool is_integer(const cJSON *v, double lo, double hi)
{
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) &&
           v->valuedouble == floor(v->valuedouble) && v->valuedouble >= lo && v->valuedouble <= hi;
}

static bool get_int(const cJSON *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
                    struct mm_api_error *e)
{
    const cJSON *v = field(obj, key);
    if (!v)
        return true;
    if (!cJSON_IsNumber(v))
        return fail(e, 400, key, "invalid_type", "%s must be an integer", key);
    if (!is_integer(v, (double)lo, (double)hi))
        return fail(e, 400, key, "invalid_value", "%s must be an integer between %lld and %lld",
                    key, (long long)lo, (long long)hi);
    *out = (int64_t)v->valuedouble;
    return true;
}

bool mm_api_get_int(const cJSON *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
                    struct mm_api_error *e)
{
    return get_int(obj, key, lo, hi, out, e);
}

static bool get_bool(const cJSON *obj, const char *key, bool *out, struct mm_api_error *e)
{
    const cJSON *v = field(obj, key);
    if (!v)
        return true;
    if (!cJSON_IsBool(v))
        return fail(e, 400, key, "invalid_type", "%s must be true or false", key);
    *out = cJSON_IsTrue(v);
    return true;
}

bool mm_api_get_bool(const cJSON *obj, const char *key, bool *out, struct mm_api_error *e)
{
    return get_bool(obj, key, out, e);
}

static bool refuse_present(const cJSON *root, const char *key, const char *why,
                           struct mm_api_error *e)
{
    const cJSON *v = field(root, key);
    if (!v || (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0))
        return true;
    return fail(e, 400, key, "unsupported_parameter", "%s is not supported%s", key, why);
}

static bool parse_stop(const cJSON *root, struct mm_api_params *p, struct mm_api_error *e)
{
    const cJSON *v = field(root, "stop");
    if (!v)
        return true;
    if (cJSON_IsString(v)) {
        if (strlen(v->valuestring) == 0 || strlen(v->valuestring) > MM_API_MAX_STOP_LEN)
            return fail(e, 400, "stop", "invalid_value", "a stop string must have 1 to %d bytes",
                        MM_API_MAX_STOP_LEN);
        p->stop[p->n_stop++] = v->valuestring;
        return true;
    }
    if (!cJSON_IsArray(v))
        return fail(e, 400, "stop", "invalid_type", "stop must be a string or an array of strings");
    if (cJSON_GetArraySize(v) > MM_API_MAX_STOP)
        return fail(e, 400, "stop", "invalid_value", "at most %d stop strings", MM_API_MAX_STOP);
    const cJSON *s;
    cJSON_ArrayForEach(s, v)
    {
        if (!cJSON_IsString(s))
            return fail(e, 400, "stop", "invalid_type", "stop must be an array of strings");
        if (strlen(s->valuestring) == 0 || strlen(s->valuestring) > MM_API_MAX_STOP_LEN)
            return fail(e, 400, "stop", "invalid_value", "a stop string must have 1 to %d bytes",
                        MM_API_MAX_STOP_LEN);
        p->stop[p->n_stop++] = s->valuestring;
    }
    return true;
}

bool mm_api_parse_params(const struct mm_http_app *app, const cJSON *root, bool chat,
                         struct mm_api_params *p, struct mm_api_error *e)
{
    /* an unset max_tokens: 16 on /v1/completions (OpenAI's and vLLM's
     * default there), up to the context for chat (theirs too) */
    *p = (struct mm_api_params){.n = 1,
                                .max_tokens = -1,
                                .default_max_tokens = chat ? -1 : MM_API_COMPLETION_MAX_TOKENS,
                                .temperature = 1.0,
                                .top_p = 1.0,
                                .repetition_penalty = 1.0,
                                .top_k = -1};
    const double ctx = (double)app->max_model_len;
    if (!get_bool(root, "stream", &p->stream, e) ||
        !get_bool(root, "ignore_eos", &p->ignore_eos, e))
        return false;
    const cJSON *so = field(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so))
            return fail(e, 400, "stream_options", "invalid_type",
                        "stream_options must be an object");
        if (!p->stream)
            return fail(e, 400, "stream_options", "invalid_value",
                        "stream_options is only allowed when stream is true");
        const cJSON *iu = field(so, "include_usage");
        if (iu && !cJSON_IsBool(iu))
            return fail(e, 400, "stream_options.include_usage", "invalid_type",
                        "stream_options.include_usage must be true or false");
        p->include_usage = iu && cJSON_IsTrue(iu);
    }
    int64_t max_tokens = -1, max_completion = -1, seed = 0;
    if (!get_int(root, "n", 1, app->max_n, &p->n, e) ||
        !get_int(root, "max_tokens", 1, (int64_t)ctx, &max_tokens, e) ||
        (chat && !get_int(root, "max_completion_tokens", 1, (int64_t)ctx, &max_completion, e)) ||
        !get_number(root, "temperature", 0, 2, &p->temperature, e) ||
        !get_number(root, "top_p", 0, 1, &p->top_p, e) ||
        !get_number(root, "min_p", 0, 1, &p->min_p, e) ||
        !get_int(root, "top_k", -1, 1 << 30, &p->top_k, e) ||
        !get_number(root, "presence_penalty", -2, 2, &p->presence_penalty, e) ||
        !get_number(root, "frequency_penalty", -2, 2, &p->frequency_penalty, e) ||
        !get_number(root, "repetition_penalty", 0.01, 10, &p->repetition_penalty, e))
        return false;
    /* logit_bias would need the sampling kernels to take a bias list;
     * accepting it and ignoring it would silently change what a client
     * asked for, so a non-empty map is refused (an empty one asks for
     * nothing) */
    const cJSON *lb = field(root, "logit_bias");
    if (lb && !cJSON_IsObject(lb))
        return fail(e, 400, "logit_bias", "invalid_type",
                    "logit_bias must be an object mapping token ids to biases");
    if (lb && lb->child)
        return fail(e, 400, "logit_bias", "unsupported_parameter",
                    "logit_bias is not supported by this server; send an empty object or leave "
                    "it out");
    if (field(root, "top_p") && p->top_p <= 0)
        return fail(e, 400, "top_p", "invalid_value", "top_p must be greater than 0");
    /* seed: any integer a JSON double holds exactly */
    const cJSON *sv = field(root, "seed");
    if (sv) {
        if (!is_integer(sv, -9007199254740992.0, 9007199254740992.0))
            return fail(e, 400, "seed", "invalid_value",
                        "seed must be an integer between -2^53 and 2^53");
        seed = (int64_t)sv->valuedouble;
        p->has_seed = true;
        p->seed = (uint64_t)seed;
    }
    p->max_tokens = max_completion > 0 ? max_completion : max_tokens;
    if (chat) {
        if (!get_bool(root, "logprobs", &p->logprobs, e) ||
            !get_int(root, "top_logprobs", 0, MM_API_MAX_TOP_LOGPROBS, &p->top_logprobs, e))
            return false;
        if (p->top_logprobs > 0 && !p->logprobs)
            return fail(e, 400, "top_logprobs", "invalid_value",
                        "top_logprobs needs logprobs set to true");
        if (!refuse_present(root, "tools", ": this server has no tool calling", e) ||
            !refuse_present(root, "functions", ": this server has no function calling", e))
            return false;
        const cJSON *rf = field(root, "response_format");
        if (rf) {
            const cJSON *t = cJSON_IsObject(rf) ? field(rf, "type") : NULL;
            if (!t || !cJSON_IsString(t) || strcmp(t->valuestring, "text") != 0)
                return fail(e, 400, "response_format", "unsupported_parameter",
                            "only response_format {\"type\": \"text\"} is supported");
        }
    } else {
        int64_t lp = -1;
        if (!get_int(root, "logprobs", 0, MM_API_MAX_TOP_LOGPROBS, &lp, e) ||
            !get_bool(root, "echo", &p->echo, e))
            return false;
        if (lp >= 0) {
            p->logprobs = true;
            p->top_logprobs = lp;
        }
        if (p->echo)
            return fail(e, 400, "echo", "unsupported_parameter", "echo is not supported");
        int64_t best_of = p->n;
        if (!get_int(root, "best_of", 1, app->max_n, &best_of, e))
            return false;
        if (best_of != p->n)
            return fail(e, 400, "best_of", "unsupported_parameter", "best_of must equal n");
        const cJSON *suffix = field(root, "suffix");
        if (suffix && (!cJSON_IsString(suffix) || suffix->valuestring[0]))
            return fail(e, 400, "suffix", "unsupported_parameter", "suffix is not supported");
    }
    const cJSON *user = field(root, "user");
    if (user && !cJSON_IsString(user))
        return fail(e, 400, "user", "invalid_type", "user must be a string");
    return parse_stop(root, p, e);
}

/* ---- chat messages --------------------------------------------------------------- */

/* Parsed view of one message before rendering. */
struct msg_view {
    enum mm_chat_role role;
    int64_t first_part, n_parts;
};

bool mm_api_load_image(struct mm_http_app *app, const char *url, const char *param, int64_t *used,
                       uint8_t **tiles, int64_t *n_tiles, int64_t *count, struct mm_api_error *e)
{
    struct mm_err err;
    struct mm_image_bytes bytes;
    enum mm_status st = mm_image_source_load(url, &app->image_source, &bytes, &err);
    if (st != MM_OK) {
        const int status = st == MM_ERR_LIMIT ? 413 : 400;
        const char *code = st == MM_ERR_UNSUPPORTED ? "unsupported_image_url" : "invalid_image_url";
        if (st == MM_ERR_UNSUPPORTED &&
            (strncmp(url, "http:", 5) == 0 || strncmp(url, "https:", 6) == 0))
            return fail(e, 400, param, code,
                        "remote image URLs are not fetched by this server; send the image as a "
                        "data: URL (data:image/png;base64,...)");
        return fail(e, status, param, code, "%s", err.msg);
    }
    /* decoding and tiling are bounded in number: each can take ~100 MB */
    while (sem_wait(&app->image_slots) != 0) {
    }
    struct mm_image img;
    st = mm_image_decode(bytes.data, bytes.len, &app->image_limits.decode, &img, &err);
    mm_image_bytes_free(&bytes);
    struct mm_image_tiles t = {0};
    if (st == MM_OK) {
        st = mm_image_tiles_for_request(&img, &app->image_params, &app->image_limits, used, true,
                                        &t, &err);
        mm_image_free(&img);
    }
    sem_post(&app->image_slots);
    if (st != MM_OK) {
        if (st == MM_ERR_NOMEM)
            return fail(e, 503, param, "out_of_memory", "no memory to decode the image now");
        return fail(e, st == MM_ERR_LIMIT ? 413 : 400, param,
                    st == MM_ERR_LIMIT ? "image_too_large" : "invalid_image", "%s", err.msg);
    }
    const size_t tile_floats = 3 * (size_t)t.size * (size_t)t.size;
    uint8_t *grown = realloc(*tiles, (size_t)(*n_tiles + t.count) * tile_floats * sizeof **tiles);
    if (!grown) {
        mm_image_tiles_free(&t);
        return fail(e, 503, param, "out_of_memory", "no memory for the image tiles now");
    }
    memcpy(grown + (size_t)*n_tiles * tile_floats, t.pixels,
           (size_t)t.count * tile_floats * sizeof *grown);
    *tiles = grown;
    *n_tiles += t.count;
    *count = t.count;
    mm_image_tiles_free(&t);
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

bool mm_api_chat_prompt(struct mm_http_app *app, const cJSON *messages, bool add_generation_prompt,
                        struct mm_api_prompt *out, struct mm_api_error *e)
{
    memset(out, 0, sizeof *out);
    if (!messages)
        return fail(e, 400, "messages", "missing_required_parameter", "messages is required");
    if (!cJSON_IsArray(messages))
        return fail(e, 400, "messages", "invalid_type", "messages must be an array");
    const int n_msgs = cJSON_GetArraySize(messages);
    if (n_msgs == 0)
        return fail(e, 400, "messages", "invalid_value", "messages must not be empty");
    if (n_msgs > MAX_MESSAGES)
        return fail(e, 400, "messages", "invalid_value", "at most %d messages", MAX_MESSAGES);
    /* pass 1: structure, text size and image count, before any work */
    struct msg_view *views = calloc((size_t)n_msgs, sizeof *views);
    struct mm_chat_part *parts = NULL;
    struct mm_chat_message *msgs = calloc((size_t)n_msgs, sizeof *msgs);
    int64_t n_parts = 0, cap_parts = 0, images = 0;
    size_t text_bytes = 0;
    bool ok = views && msgs;
    if (!ok)
        fail(e, 503, "", "out_of_memory", "out of memory");
    char param[96];
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages)
    {
        if (!ok)
            break;
        snprintf(param, sizeof param, "messages[%d]", i);
        if (!cJSON_IsObject(m)) {
            ok = fail(e, 400, param, "invalid_type", "%s must be an object", param);
            break;
        }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        snprintf(param, sizeof param, "messages[%d].role", i);
        if (!cJSON_IsString(role)) {
            ok = fail(e, 400, param, role ? "invalid_type" : "missing_required_parameter",
                      "%s must be a string", param);
            break;
        }
        if (!parse_role(role->valuestring, &views[i].role)) {
            ok = fail(e, 400, param, "invalid_value",
                      "unsupported role \"%.40s\" (system, developer, user or assistant; "
                      "tool messages need tool calling, which this server does not have)",
                      role->valuestring);
            break;
        }
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        snprintf(param, sizeof param, "messages[%d].content", i);
        views[i].first_part = n_parts;
        if (cJSON_IsString(content)) {
            if (n_parts == cap_parts) {
                cap_parts = cap_parts ? cap_parts * 2 : 16;
                struct mm_chat_part *g = realloc(parts, (size_t)cap_parts * sizeof *g);
                if (!g) {
                    ok = fail(e, 503, "", "out_of_memory", "out of memory");
                    break;
                }
                parts = g;
            }
            const size_t len = strlen(content->valuestring);
            parts[n_parts++] = (struct mm_chat_part){
                .kind = MM_CHAT_TEXT, .text = content->valuestring, .len = len};
            text_bytes += len;
        } else if (cJSON_IsArray(content)) {
            const int np = cJSON_GetArraySize(content);
            if (np == 0 || np > MAX_PARTS) {
                ok = fail(e, 400, param, "invalid_value", "%s must have 1 to %d parts", param,
                          MAX_PARTS);
                break;
            }
            int k = 0;
            const cJSON *part;
            cJSON_ArrayForEach(part, content)
            {
                snprintf(param, sizeof param, "messages[%d].content[%d]", i, k);
                const cJSON *type =
                    cJSON_IsObject(part) ? cJSON_GetObjectItemCaseSensitive(part, "type") : NULL;
                if (!cJSON_IsString(type)) {
                    ok = fail(e, 400, param, "invalid_type",
                              "%s must be an object with a string `type`", param);
                    break;
                }
                if (n_parts == cap_parts) {
                    cap_parts = cap_parts ? cap_parts * 2 : 16;
                    struct mm_chat_part *g = realloc(parts, (size_t)cap_parts * sizeof *g);
                    if (!g) {
                        ok = fail(e, 503, "", "out_of_memory", "out of memory");
                        break;
                    }
                    parts = g;
                }
                if (strcmp(type->valuestring, "text") == 0) {
                    const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
                    if (!cJSON_IsString(text)) {
                        ok = fail(e, 400, param, "invalid_type", "%s.text must be a string", param);
                        break;
                    }
                    const size_t len = strlen(text->valuestring);
                    parts[n_parts++] = (struct mm_chat_part){
                        .kind = MM_CHAT_TEXT, .text = text->valuestring, .len = len};
                    text_bytes += len;
                } else if (strcmp(type->valuestring, "image_url") == 0) {
                    const cJSON *iu = cJSON_GetObjectItemCaseSensitive(part, "image_url");
                    const cJSON *url =
                        cJSON_IsObject(iu) ? cJSON_GetObjectItemCaseSensitive(iu, "url") : iu;
                    if (!cJSON_IsString(url)) {
                        ok = fail(e, 400, param, "invalid_type",
                                  "%s.image_url must be {\"url\": \"data:image/...;base64,...\"}",
                                  param);
                        break;
                    }
                    if (views[i].role != MM_CHAT_USER) {
                        ok = fail(e, 400, param, "invalid_value",
                                  "images are only allowed in user messages");
                        break;
                    }
                    if (++images > app->max_images) {
                        ok = fail(e, 400, param, "too_many_images",
                                  "at most %lld images per request", (long long)app->max_images);
                        break;
                    }
                    /* tiles are filled in pass 2; the part remembers its URL */
                    parts[n_parts++] = (struct mm_chat_part){
                        .kind = MM_CHAT_IMAGE, .text = url->valuestring, .tiles = 0};
                } else {
                    ok = fail(e, 400, param, "unsupported_content_type",
                              "content part type \"%.40s\" is not supported (text, image_url)",
                              type->valuestring);
                    break;
                }
                k++;
            }
            if (!ok)
                break;
        } else {
            ok = fail(e, 400, param, content ? "invalid_type" : "missing_required_parameter",
                      "%s must be a string or an array of content parts", param);
            break;
        }
        views[i].n_parts = n_parts - views[i].first_part;
        if (text_bytes > app->max_prompt_bytes) {
            ok = fail(e, 413, "messages", "prompt_too_large",
                      "the messages hold more than %zu bytes of text", app->max_prompt_bytes);
            break;
        }
        i++;
    }
    /* pass 2: images, in order */
    int64_t used = 0;
    for (int64_t k = 0; ok && k < n_parts; k++) {
        if (parts[k].kind != MM_CHAT_IMAGE)
            continue;
        int mi = 0;
        while (mi + 1 < n_msgs && views[mi].first_part + views[mi].n_parts <= k)
            mi++;
        snprintf(param, sizeof param, "messages[%d].content[%lld].image_url", mi,
                 (long long)(k - views[mi].first_part));
        int64_t count = 0;
        ok = mm_api_load_image(app, parts[k].text, param, &used, &out->tiles, &out->n_tiles, &count,
                               e);
        parts[k].tiles = count;
        parts[k].text = NULL;
    }
    if (ok) {
        for (int k = 0; k < n_msgs; k++)
            msgs[k] = (struct mm_chat_message){.role = views[k].role,
                                               .parts = parts + views[k].first_part,
                                               .n_parts = views[k].n_parts};
        const struct mm_chat_options copt = {
            .system = NULL, .add_generation_prompt = add_generation_prompt, .add_bos = true};
        struct mm_err err;
        const enum mm_status st =
            mm_chat_render(app->tpl, msgs, n_msgs, &copt, &out->ids, NULL, NULL, &err);
        if (st != MM_OK)
            ok = fail(e,
                      st == MM_ERR_LIMIT   ? 413
                      : st == MM_ERR_NOMEM ? 503
                                           : 400,
                      "messages", NULL, "%s", err.msg);
    }
    free(views);
    free(msgs);
    free(parts);
    if (!ok)
        mm_api_prompt_free(out);
    return ok;
}

/* ---- completion prompts ----------------------------------------------------------- */

static bool token_prompt(const struct mm_http_app *app, const cJSON *arr, const char *param,
                         struct mm_api_prompt *out, struct mm_api_error *e)
{
    const int n = cJSON_GetArraySize(arr);
    if (n == 0)
        return fail(e, 400, param, "invalid_value", "a token prompt must not be empty");
    if (n > app->max_model_len)
        return fail(e, 400, param, "context_length_exceeded",
                    "the prompt has %d tokens; this model's maximum context length is %lld", n,
                    (long long)app->max_model_len);
    const int64_t vocab = app->cfg->vocab_size;
    const cJSON *t;
    cJSON_ArrayForEach(t, arr)
    {
        if (!is_integer(t, 0, (double)vocab - 1))
            return fail(e, 400, param, "invalid_value",
                        "%s must hold token ids, integers in [0, %lld)", param, (long long)vocab);
        const int32_t id = (int32_t)t->valuedouble;
        if (id == app->cfg->img_context_token_id)
            return fail(e, 400, param, "invalid_value",
                        "token %d is the image-context token; send images through "
                        "/v1/chat/completions",
                        id);
        struct mm_err err;
        if (mm_tokens_push(&out->ids, id, &err) != MM_OK)
            return fail(e, 503, "", "out_of_memory", "out of memory");
    }
    return true;
}

static bool text_prompt(const struct mm_http_app *app, const char *text, bool add_bos,
                        struct mm_api_prompt *out, struct mm_api_error *e)
{
    struct mm_err err;
    unsigned flags = MM_TOKENIZE_SPECIAL | (add_bos ? MM_TOKENIZE_BOS : 0);
    if (mm_tokenizer_encode(app->tok, text, strlen(text), flags, &out->ids, &err) != MM_OK)
        return fail(e, 503, "prompt", "out_of_memory", "%s", err.msg);
    for (int64_t i = 0; i < out->ids.n; i++)
        if (out->ids.ids[i] == app->cfg->img_context_token_id)
            return fail(e, 400, "prompt", "invalid_value",
                        "the prompt spells the image-context token; send images through "
                        "/v1/chat/completions");
    if (out->ids.n == 0)
        return fail(e, 400, "prompt", "invalid_value", "the prompt is empty");
    return true;
}

bool mm_api_completion_prompts(const struct mm_http_app *app, const cJSON *prompt, bool add_bos,
                               struct mm_api_prompt **out, int64_t *n, struct mm_api_error *e)
{
    *out = NULL;
    *n = 0;
    if (!prompt || cJSON_IsNull(prompt))
        return fail(e, 400, "prompt", "missing_required_parameter", "prompt is required");
    /* shape: "s" | ["s", ...] | [1, 2, ...] | [[1, 2], ...] */
    int count = 1;
    bool ok = true;
    if (cJSON_IsArray(prompt)) {
        const cJSON *first = prompt->child;
        if (!first)
            return fail(e, 400, "prompt", "invalid_value", "prompt must not be empty");
        if (cJSON_IsString(first) || cJSON_IsArray(first))
            count = cJSON_GetArraySize(prompt);
    } else if (!cJSON_IsString(prompt)) {
        return fail(e, 400, "prompt", "invalid_type",
                    "prompt must be a string, an array of strings, an array of token ids or an "
                    "array of token-id arrays");
    }
    if (count > MM_API_MAX_PROMPTS)
        return fail(e, 400, "prompt", "invalid_value", "at most %d prompts per request",
                    MM_API_MAX_PROMPTS);
    /* text size before any tokenizing */
    size_t bytes = 0;
    if (cJSON_IsString(prompt)) {
        bytes = strlen(prompt->valuestring);
    } else if (cJSON_IsString(prompt->child)) {
        const cJSON *s;
        cJSON_ArrayForEach(s, prompt) bytes += cJSON_IsString(s) ? strlen(s->valuestring) : 0;
    }
    if (bytes > app->max_prompt_bytes)
        return fail(e, 413, "prompt", "prompt_too_large", "the prompt holds more than %zu bytes",
                    app->max_prompt_bytes);
    struct mm_api_prompt *p = calloc((size_t)count, sizeof *p);
    if (!p)
        return fail(e, 503, "", "out_of_memory", "out of memory");
    char param[48];
    if (cJSON_IsString(prompt)) {
        ok = text_prompt(app, prompt->valuestring, add_bos, &p[0], e);
    } else if (count == 1 && !cJSON_IsString(prompt->child) && !cJSON_IsArray(prompt->child)) {
        ok = token_prompt(app, prompt, "prompt", &p[0], e);
    } else {
        const bool strings = cJSON_IsString(prompt->child);
        int i = 0;
        const cJSON *item;
        cJSON_ArrayForEach(item, prompt)
        {
            snprintf(param, sizeof param, "prompt[%d]", i);
            if (strings ? !cJSON_IsString(item) : !cJSON_IsArray(item)) {
                ok = fail(e, 400, param, "invalid_type",
                          "prompt arrays must be all strings or all token-id arrays");
                break;
            }
            ok = strings ? text_prompt(app, item->valuestring, add_bos, &p[i], e)
                         : token_prompt(app, item, param, &p[i], e);
            if (!ok)
                break;
            i++;
        }
    }
    if (!ok) {
        mm_api_prompts_free(p, count);
        return false;
    }
    *out = p;
    *n = count;
    return true;
}

bool mm_api_check_length(const struct mm_http_app *app, int64_t prompt_tokens, int64_t default_max,
                         int64_t *max_tokens, struct mm_api_error *e)
{
    const int64_t ctx = app->max_model_len;
    if (prompt_tokens >= ctx)
        return fail(e, 400, "messages", "context_length_exceeded",
                    "this model's maximum context length is %lld tokens; the prompt has %lld "
                    "tokens, leaving no room for a completion",
                    (long long)ctx, (long long)prompt_tokens);
    if (*max_tokens < 0) {
        /* a default never makes a request fail: it shrinks to the room left */
        *max_tokens = ctx - prompt_tokens;
        if (default_max > 0 && default_max < *max_tokens)
            *max_tokens = default_max;
    } else if (prompt_tokens + *max_tokens > ctx) {
        return fail(e, 400, "max_tokens", "context_length_exceeded",
                    "this model's maximum context length is %lld tokens; the prompt has %lld "
                    "tokens and %lld more were asked for",
                    (long long)ctx, (long long)prompt_tokens, (long long)*max_tokens);
    }
    return true;
}
