/* openai.c: the OpenAI routes (/v1/chat/completions, /v1/completions,
 * /v1/models) and vLLM's /tokenize and /detokenize.
 *
 * Design: a handler parses and checks everything (request_parse.h), makes one
 * serve request per prompt, submits them and becomes a job (exchange.h). The
 * engine's notify hook only wakes the exchange; the pump, on the HTTP
 * thread, takes the events and turns them into SSE chunks or, once every
 * choice has finished, into the whole response. Response shapes follow
 * OpenAI's openapi.yaml (chat.completion, chat.completion.chunk,
 * text_completion); the integration tests validate them against it. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "base/buffer.h"
#include "base/json.h"
#include "http/exchange.h"
#include "http/request_parse.h"
#include "serve/request.h"
#include "serve/dispatch.h"

static void reply_api_error(struct mm_http_exchange *ex, const struct mm_api_error *e)
{
    mm_http_reply_error(ex, e->status, e->param[0] ? e->param : NULL, e->code, "%s", e->message);
}

/* ---- token text for logprobs ------------------------------------------------------- */

/* The surface of one token: its piece with U+2581 as a space, a byte piece
 * as "<0xAB>" (not valid UTF-8 alone), and its bytes. */
static void token_surface(const struct mm_tokenizer *tok, int32_t id, char *out, size_t cap,
                          unsigned char *bytes, size_t *n_bytes)
{
    struct mm_token_info info;
    struct mm_err err;
    size_t n = 0, nb = 0;
    if (mm_tokenizer_id_info(tok, id, &info, &err) != MM_OK) {
        snprintf(out, cap, "<%d>", id);
        *n_bytes = 0;
        return;
    }
    if (info.kind == MM_TOKEN_BYTE) {
        snprintf(out, cap, "<0x%02X>", info.byte);
        bytes[0] = (unsigned char)info.byte;
        *n_bytes = 1;
        return;
    }
    for (size_t i = 0; i < info.len && n + 4 < cap; i++) {
        if (i + 2 < info.len && (unsigned char)info.text[i] == 0xE2 &&
            (unsigned char)info.text[i + 1] == 0x96 && (unsigned char)info.text[i + 2] == 0x81) {
            out[n++] = ' ';
            i += 2;
        } else {
            out[n++] = info.text[i];
        }
    }
    out[n] = '\0';
    for (size_t i = 0; i < n && nb < 256; i++)
        bytes[nb++] = (unsigned char)out[i];
    *n_bytes = nb;
}

static cJSON *bytes_array(const unsigned char *b, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(b[i]));
    return a;
}

static double finite_logprob(float lp) { return isfinite(lp) ? (double)lp : -9999.0; }

/* chat: one ChatCompletionTokenLogprob */
static cJSON *chat_logprob(const struct mm_tokenizer *tok, const struct mm_event *ev)
{
    char s[300];
    unsigned char b[256];
    size_t nb;
    cJSON *o = cJSON_CreateObject();
    token_surface(tok, ev->token, s, sizeof s, b, &nb);
    cJSON_AddStringToObject(o, "token", s);
    cJSON_AddNumberToObject(o, "logprob", finite_logprob(ev->logprob));
    cJSON_AddItemToObject(o, "bytes", bytes_array(b, nb));
    cJSON *top = cJSON_AddArrayToObject(o, "top_logprobs");
    for (int i = 0; i < ev->n_top; i++) {
        cJSON *t = cJSON_CreateObject();
        token_surface(tok, ev->top[i].id, s, sizeof s, b, &nb);
        cJSON_AddStringToObject(t, "token", s);
        cJSON_AddNumberToObject(t, "logprob", finite_logprob(ev->top[i].logprob));
        cJSON_AddItemToObject(t, "bytes", bytes_array(b, nb));
        cJSON_AddItemToArray(top, t);
    }
    return o;
}

/* ---- generation jobs ---------------------------------------------------------------- */

struct choice {
    char *text; /* buffered responses */
    size_t len, cap;
    cJSON *logprobs; /* chat: array of token logprobs; completions: the logprobs object */
    bool role_sent;  /* streams: the role delta went out */
    bool finished;
    enum mm_finish_reason finish;
    int64_t completion_tokens;
    int64_t text_offset; /* completions logprobs: bytes emitted so far */
};

struct gen_job {
    pthread_mutex_t lock;
    void *wake; /* the exchange's wake token; NULL once released */
    struct mm_http_app *app;
    bool chat, stream;
    struct mm_api_params p;
    char id[64];
    int64_t created;
    struct mm_request **reqs;
    int64_t n_reqs;
    struct choice *choices; /* [n_reqs * p.n] */
    int64_t n_choices, n_finished;
    int64_t prompt_tokens, completion_tokens;
    int64_t cached_tokens; /* prompt tokens served from the state cache */
    bool failed;           /* an engine error or a shutdown ended a choice */
    enum mm_finish_reason fail_reason;
    char fail_msg[256];
    bool saw_token;
};

static void job_notify(void *user)
{
    struct gen_job *j = user;
    pthread_mutex_lock(&j->lock);
    if (j->wake)
        mm_http_wake(j->wake);
    pthread_mutex_unlock(&j->lock);
}

static void job_cancel(void *job)
{
    struct gen_job *j = job;
    for (int64_t i = 0; i < j->n_reqs; i++)
        if (j->reqs[i])
            mm_request_cancel(j->reqs[i]);
}

static void job_free(struct gen_job *j)
{
    for (int64_t i = 0; i < j->n_reqs; i++) {
        if (!j->reqs[i])
            continue;
        mm_request_set_notify(j->reqs[i], NULL, NULL); /* no callback runs after this */
        mm_request_cancel(j->reqs[i]);
        mm_request_release(j->reqs[i]);
    }
    for (int64_t c = 0; c < j->n_choices; c++) {
        free(j->choices[c].text);
        cJSON_Delete(j->choices[c].logprobs);
    }
    free(j->choices);
    free(j->reqs);
    pthread_mutex_destroy(&j->lock);
    free(j);
}

static void job_release(void *job)
{
    struct gen_job *j = job;
    pthread_mutex_lock(&j->lock);
    j->wake = NULL;
    pthread_mutex_unlock(&j->lock);
    job_free(j);
}

static bool append(struct choice *c, const char *s, size_t n)
{
    if (!mm_buffer_reserve(&c->text, &c->cap, c->len + n + 1, 256))
        return false;
    memcpy(c->text + c->len, s, n);
    c->len += n;
    c->text[c->len] = '\0';
    return true;
}

static const char *finish_name(enum mm_finish_reason f)
{
    return f == MM_FINISH_LENGTH ? "length" : "stop";
}

static cJSON *chunk_base(const struct gen_job *j)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "object", j->chat ? "chat.completion.chunk" : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)j->created);
    cJSON_AddStringToObject(o, "model", j->app->model_name);
    return o;
}

static cJSON *usage_object(const struct gen_job *j)
{
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)j->prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)j->completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(j->prompt_tokens + j->completion_tokens));
    /* OpenAI's field for prompt tokens a cache served (not prefilled again) */
    cJSON *details = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    if (details)
        cJSON_AddNumberToObject(details, "cached_tokens", (double)j->cached_tokens);
    return u;
}

static void sse_send(struct mm_http_exchange *ex, cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        return;
    mm_http_stream_write(ex, "data: ", 6);
    mm_http_stream_write(ex, s, strlen(s));
    mm_http_stream_write(ex, "\n\n", 2);
    free(s);
}

/* One streamed chunk for choice `index`: chat deltas or completion text. */
static void stream_chunk(struct mm_http_exchange *ex, struct gen_job *j, int64_t index,
                         const char *role, const char *text, size_t len, cJSON *logprobs,
                         const char *finish)
{
    cJSON *o = chunk_base(j);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", (double)index);
    if (j->chat) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (role)
            cJSON_AddStringToObject(d, "role", role);
        if (text)
            cJSON_AddItemToObject(d, "content", mm_json_string_n(text, len));
    } else {
        cJSON_AddItemToObject(c, "text", mm_json_string_n(text ? text : "", text ? len : 0));
    }
    if (logprobs)
        cJSON_AddItemToObject(c, "logprobs", logprobs);
    else
        cJSON_AddNullToObject(c, "logprobs");
    if (finish)
        cJSON_AddStringToObject(c, "finish_reason", finish);
    else
        cJSON_AddNullToObject(c, "finish_reason");
    cJSON_AddItemToArray(choices, c);
    if (j->p.include_usage && j->chat) /* as OpenAI's chat chunks; its completion schema has none */
        cJSON_AddNullToObject(o, "usage");
    sse_send(ex, o);
}

/* Completions logprobs object for the given tokens (streams: one token). */
static cJSON *completion_logprobs_new(void)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddArrayToObject(o, "tokens");
    cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON_AddArrayToObject(o, "top_logprobs");
    cJSON_AddArrayToObject(o, "text_offset");
    return o;
}

static void completion_logprobs_add(cJSON *o, const struct mm_tokenizer *tok,
                                    const struct mm_event *ev, int64_t offset)
{
    char s[300];
    unsigned char b[256];
    size_t nb;
    token_surface(tok, ev->token, s, sizeof s, b, &nb);
    cJSON_AddItemToArray(cJSON_GetObjectItem(o, "tokens"), cJSON_CreateString(s));
    cJSON_AddItemToArray(cJSON_GetObjectItem(o, "token_logprobs"),
                         cJSON_CreateNumber(finite_logprob(ev->logprob)));
    cJSON *top = cJSON_CreateObject();
    for (int i = 0; i < ev->n_top; i++) {
        token_surface(tok, ev->top[i].id, s, sizeof s, b, &nb);
        if (!cJSON_GetObjectItemCaseSensitive(top, s))
            cJSON_AddNumberToObject(top, s, finite_logprob(ev->top[i].logprob));
    }
    cJSON_AddItemToArray(cJSON_GetObjectItem(o, "top_logprobs"), top);
    cJSON_AddItemToArray(cJSON_GetObjectItem(o, "text_offset"), cJSON_CreateNumber((double)offset));
}

/* Applies one event to the job (and, streaming, writes its chunks). */
static void apply_event(struct mm_http_exchange *ex, struct gen_job *j, int64_t req,
                        const struct mm_event *ev)
{
    const int64_t index = req * j->p.n + ev->choice;
    if (index < 0 || index >= j->n_choices)
        return;
    struct choice *c = &j->choices[index];
    const struct mm_tokenizer *tok = j->app->tok;
    if (ev->kind == MM_EVENT_TOKEN) {
        if (!j->saw_token) {
            j->saw_token = true;
            mm_http_mark_first_token(ex);
        }
        cJSON *lp = NULL;
        if (j->p.logprobs) {
            if (j->chat) {
                cJSON *item = chat_logprob(tok, ev);
                if (j->stream) {
                    lp = cJSON_CreateObject();
                    cJSON *content = cJSON_AddArrayToObject(lp, "content");
                    cJSON_AddItemToArray(content, item);
                    cJSON_AddNullToObject(lp, "refusal");
                } else {
                    if (!c->logprobs)
                        c->logprobs = cJSON_CreateArray();
                    cJSON_AddItemToArray(c->logprobs, item);
                }
            } else if (j->stream) {
                lp = completion_logprobs_new();
                completion_logprobs_add(lp, tok, ev, c->text_offset);
            } else {
                if (!c->logprobs)
                    c->logprobs = completion_logprobs_new();
                completion_logprobs_add(c->logprobs, tok, ev, c->text_offset);
            }
        }
        c->text_offset += (int64_t)ev->len;
        if (j->stream) {
            if (j->chat && !c->role_sent) {
                c->role_sent = true;
                stream_chunk(ex, j, index, "assistant", "", 0, NULL, NULL);
            }
            /* one chunk per token, even when it releases no text (a special
             * token, part of a UTF-8 character, text held back for a stop
             * string): clients see the cadence, as vLLM's streams show it */
            stream_chunk(ex, j, index, NULL, ev->text, ev->len, lp, NULL);
        } else {
            append(c, ev->text, ev->len);
        }
        return;
    }
    /* MM_EVENT_FINISH */
    c->finished = true;
    c->finish = ev->finish;
    c->completion_tokens = ev->completion_tokens;
    j->completion_tokens += ev->completion_tokens;
    if (ev->choice == 0) {
        j->prompt_tokens += ev->prompt_tokens;
        j->cached_tokens += ev->cached_tokens;
    }
    j->n_finished++;
    if (ev->finish == MM_FINISH_ERROR || ev->finish == MM_FINISH_CANCELLED) {
        j->failed = true;
        j->fail_reason = ev->finish;
        snprintf(j->fail_msg, sizeof j->fail_msg, "%s",
                 ev->finish == MM_FINISH_ERROR
                     ? (ev->message ? ev->message : "engine error")
                     : "the request was cancelled: its client closed the connection (a buffered "
                       "answer counts a half-close, shutdown of the client's write side, as "
                       "one: stream it instead), or the server is shutting down");
    }
    if (j->stream) {
        if (j->chat && !c->role_sent) {
            c->role_sent = true;
            stream_chunk(ex, j, index, "assistant", "", 0, NULL, NULL);
        }
        if (ev->len)
            stream_chunk(ex, j, index, NULL, ev->text, ev->len, NULL, NULL);
        if (ev->finish == MM_FINISH_STOP || ev->finish == MM_FINISH_LENGTH) {
            if (j->chat)
                stream_chunk(ex, j, index, NULL, NULL, 0, NULL, finish_name(ev->finish));
            else
                stream_chunk(ex, j, index, NULL, "", 0, NULL, finish_name(ev->finish));
        }
    } else {
        append(c, ev->text, ev->len);
    }
}

static void reply_buffered(struct mm_http_exchange *ex, struct gen_job *j)
{
    if (j->failed) {
        if (j->fail_reason == MM_FINISH_CANCELLED)
            mm_http_reply_error(ex, 503, NULL, "cancelled", "%s", j->fail_msg);
        else
            mm_http_reply_error(ex, 500, NULL, "engine_error", "%s", j->fail_msg);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "object", j->chat ? "chat.completion" : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)j->created);
    cJSON_AddStringToObject(o, "model", j->app->model_name);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    for (int64_t i = 0; i < j->n_choices; i++) {
        struct choice *c = &j->choices[i];
        cJSON *co = cJSON_CreateObject();
        cJSON_AddNumberToObject(co, "index", (double)i);
        if (j->chat) {
            cJSON *m = cJSON_AddObjectToObject(co, "message");
            cJSON_AddStringToObject(m, "role", "assistant");
            cJSON_AddItemToObject(m, "content", mm_json_string_n(c->text ? c->text : "", c->len));
            cJSON_AddNullToObject(m, "refusal");
        } else {
            cJSON_AddItemToObject(co, "text", mm_json_string_n(c->text ? c->text : "", c->len));
        }
        if (j->p.logprobs) {
            if (j->chat) {
                cJSON *lp = cJSON_AddObjectToObject(co, "logprobs");
                cJSON_AddItemToObject(lp, "content",
                                      c->logprobs ? c->logprobs : cJSON_CreateArray());
                cJSON_AddNullToObject(lp, "refusal");
            } else {
                cJSON_AddItemToObject(co, "logprobs",
                                      c->logprobs ? c->logprobs : completion_logprobs_new());
            }
            c->logprobs = NULL;
        } else {
            cJSON_AddNullToObject(co, "logprobs");
        }
        cJSON_AddStringToObject(co, "finish_reason", finish_name(c->finish));
        cJSON_AddItemToArray(choices, co);
    }
    cJSON_AddItemToObject(o, "usage", usage_object(j));
    mm_http_set_usage(ex, j->prompt_tokens, j->completion_tokens);
    mm_http_reply_json(ex, 200, o);
}

static enum mm_http_pump job_pump(struct mm_http_exchange *ex, void *job)
{
    struct gen_job *j = job;
    struct mm_event evs[32];
    for (int64_t r = 0; r < j->n_reqs; r++) {
        int n;
        while ((n = mm_request_take(j->reqs[r], evs, 32)) > 0)
            for (int k = 0; k < n; k++)
                apply_event(ex, j, r, &evs[k]);
    }
    if (j->n_finished < j->n_choices)
        return MM_HTTP_PUMP_WAIT;
    mm_http_set_usage(ex, j->prompt_tokens, j->completion_tokens);
    if (!j->stream) {
        reply_buffered(ex, j);
        return MM_HTTP_PUMP_DONE;
    }
    if (j->failed) {
        cJSON *o = cJSON_CreateObject();
        cJSON *e = cJSON_AddObjectToObject(o, "error");
        cJSON_AddStringToObject(e, "message", j->fail_msg);
        cJSON_AddStringToObject(e, "type", "server_error");
        cJSON_AddNullToObject(e, "param");
        cJSON_AddStringToObject(
            e, "code", j->fail_reason == MM_FINISH_CANCELLED ? "cancelled" : "engine_error");
        sse_send(ex, o);
    } else if (j->p.include_usage) {
        cJSON *o = chunk_base(j);
        cJSON_AddArrayToObject(o, "choices");
        cJSON_AddItemToObject(o, "usage", usage_object(j));
        sse_send(ex, o);
    }
    mm_http_stream_write(ex, "data: [DONE]\n\n", 14);
    return MM_HTTP_PUMP_DONE;
}

static const struct mm_http_job_ops gen_ops = {job_pump, job_cancel, job_release};

static void random_hex(char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[32];
    FILE *f = fopen("/dev/urandom", "rb");
    const size_t got = f ? fread(b, 1, sizeof b, f) : 0;
    if (f)
        fclose(f);
    for (size_t i = 0; i + 1 < n && i < 2 * sizeof b; i++) {
        const unsigned v = i / 2 < got ? b[i / 2] : (unsigned)rand();
        out[i] = hex[(i % 2 ? v : v >> 4) & 15];
        out[i + 1] = '\0';
    }
}

/* Submits every prompt (ownership of their ids and tiles moves to the
 * requests) and starts the job; on failure replies with the error. */
static void start_generation(struct mm_http_exchange *ex, bool chat, const struct mm_api_params *p,
                             struct mm_api_prompt *prompts, int64_t n_prompts)
{
    struct mm_http_app *app = mm_http_app(ex);
    struct gen_job *j = calloc(1, sizeof *j);
    struct mm_err err;
    if (j) {
        j->reqs = calloc((size_t)n_prompts, sizeof *j->reqs);
        j->choices = calloc((size_t)(n_prompts * p->n), sizeof *j->choices);
    }
    if (!j || !j->reqs || !j->choices) {
        if (j) {
            free(j->reqs);
            free(j->choices);
            free(j);
        }
        mm_http_reply_error(ex, 503, NULL, "out_of_memory", "out of memory");
        return;
    }
    pthread_mutex_init(&j->lock, NULL);
    j->app = app;
    j->chat = chat;
    j->stream = p->stream;
    j->p = *p;
    j->created = (int64_t)time(NULL);
    j->n_reqs = n_prompts;
    j->n_choices = n_prompts * p->n;
    char hex[33];
    random_hex(hex, sizeof hex);
    snprintf(j->id, sizeof j->id, "%s-%s", chat ? "chatcmpl" : "cmpl", hex);

    struct mm_request_params rp;
    mm_request_params_default(&rp);
    rp.id = mm_http_request_id(ex);
    rp.sample.temperature = (float)p->temperature;
    rp.sample.top_k = (int32_t)(p->top_k > 0 ? p->top_k : 0);
    rp.sample.top_p = (float)p->top_p;
    rp.sample.min_p = (float)p->min_p;
    rp.sample.repetition_penalty = (float)p->repetition_penalty;
    rp.sample.presence_penalty = (float)p->presence_penalty;
    rp.sample.frequency_penalty = (float)p->frequency_penalty;
    rp.sample.seed = p->seed;
    rp.sample.n_logprobs = (int32_t)p->top_logprobs;
    rp.has_seed = p->has_seed;
    rp.n = (int32_t)p->n;
    rp.stop = p->stop;
    rp.n_stop = p->n_stop;
    rp.ignore_eos = p->ignore_eos;
    rp.logprobs = p->logprobs;
    int status = 0;
    const char *code = NULL;
    char engines[96] = ""; /* x-mmmamba-engine: each prompt's engine, in prompt order */
    size_t engines_len = 0;
    for (int64_t i = 0; i < n_prompts && !status; i++) {
        int64_t max_tokens = p->max_tokens;
        struct mm_api_error ae;
        if (!mm_api_check_length(app, prompts[i].ids.n, p->default_max_tokens, &max_tokens, &ae)) {
            reply_api_error(ex, &ae);
            status = -1;
            break;
        }
        rp.max_tokens = max_tokens;
        struct mm_request *r;
        enum mm_status st =
            mm_request_create_pixels(&rp, prompts[i].ids.ids, prompts[i].ids.n, prompts[i].tiles,
                                     prompts[i].n_tiles, &r, &err);
        prompts[i].ids = (struct mm_tokens){0}; /* owned by the request now */
        prompts[i].tiles = NULL;
        prompts[i].n_tiles = 0;
        if (st == MM_OK) {
            mm_request_set_notify(r, job_notify, j);
            int engine = -1;
            st = app->dispatch ? mm_dispatch_submit(app->dispatch, r, &engine, &err)
                               : mm_err_set(&err, MM_ERR_UNAVAILABLE, "no engine");
            if (st != MM_OK) {
                mm_request_set_notify(r, NULL, NULL);
                mm_request_release(r);
            } else {
                j->reqs[i] = r;
                const int w = snprintf(engines + engines_len, sizeof engines - engines_len,
                                       i ? ",%d" : "%d", engine);
                engines_len = w > 0 && (size_t)w < sizeof engines - engines_len
                                  ? engines_len + (size_t)w
                                  : sizeof engines; /* too many prompts: no header */
            }
        }
        if (st != MM_OK) {
            status = st == MM_ERR_LIMIT         ? 429
                     : st == MM_ERR_UNAVAILABLE ? 503
                     : st == MM_ERR_NOMEM       ? 503
                     : st == MM_ERR_INVALID     ? 400
                                                : 500;
            code = st == MM_ERR_LIMIT     ? "queue_full"
                   : st == MM_ERR_INVALID ? "invalid_value"
                                          : NULL;
            if (st == MM_ERR_LIMIT)
                mm_http_reply_error(ex, 429, NULL, code,
                                    "the server is busy (request queue full); retry later");
            else
                mm_http_reply_error(ex, status,
                                    status == 400 ? (chat ? "messages" : "prompt") : NULL, code,
                                    "%s", err.msg);
        }
    }
    if (status) {
        j->n_reqs = n_prompts; /* job_free walks every slot; unset ones are NULL */
        job_free(j);
        return;
    }
    if (engines_len < sizeof engines)
        mm_http_add_header(ex, "x-mmmamba-engine", engines);
    pthread_mutex_lock(&j->lock);
    j->wake = mm_http_job_token(ex);
    pthread_mutex_unlock(&j->lock);
    mm_http_start_job(ex, &gen_ops, j, p->stream);
}

/* ---- handlers ---------------------------------------------------------------------- */

/* A generation request being prepared on a worker thread (mm_http_offload):
 * parsing, image decoding and tokenizing happen there; submitting and
 * replying back on the connection's HTTP thread. */
struct prep {
    struct mm_http_app *app;
    bool chat;
    const char *body; /* borrowed from the exchange, which outlives the prep */
    size_t len;
    cJSON *root; /* kept until submission: the stop strings point into it */
    struct mm_api_params p;
    struct mm_api_prompt *prompts;
    int64_t n;
    bool ok;
    struct mm_api_error e;
};

static void prep_work(void *arg)
{
    struct prep *w = arg;
    struct mm_http_app *app = w->app;
    w->ok = mm_api_parse_body(w->body, w->len, &w->root, &w->e) &&
            mm_api_check_model(app, w->root, &w->e) &&
            mm_api_parse_params(app, w->root, w->chat, &w->p, &w->e);
    if (!w->ok)
        return;
    if (w->chat) {
        w->prompts = calloc(1, sizeof *w->prompts);
        if (!w->prompts) {
            w->ok = false;
            w->e = (struct mm_api_error){.status = 503, .code = "out_of_memory"};
            snprintf(w->e.message, sizeof w->e.message, "out of memory");
            return;
        }
        w->n = 1;
        w->ok = mm_api_chat_prompt(app, cJSON_GetObjectItemCaseSensitive(w->root, "messages"), true,
                                   &w->prompts[0], &w->e);
    } else {
        w->ok = mm_api_completion_prompts(app, cJSON_GetObjectItemCaseSensitive(w->root, "prompt"),
                                          true, &w->prompts, &w->n, &w->e);
    }
}

static void prep_done(struct mm_http_exchange *ex, void *arg)
{
    struct prep *w = arg;
    if (!ex) {
        /* the client left while its request was being prepared */
    } else if (!w->ok) {
        reply_api_error(ex, &w->e);
    } else if (w->n * w->p.n > MM_REQUEST_MAX_CHOICES) {
        mm_http_reply_error(ex, 400, "n", "invalid_value", "prompts x n is at most %d per request",
                            MM_REQUEST_MAX_CHOICES);
    } else {
        int64_t total = 0;
        for (int64_t i = 0; i < w->n; i++)
            total += w->prompts[i].ids.n;
        mm_http_set_usage(ex, total, 0);
        start_generation(ex, w->chat, &w->p, w->prompts, w->n);
    }
    mm_api_prompts_free(w->prompts, w->n);
    cJSON_Delete(w->root); /* the serve requests copied the stop strings */
    free(w);
}

static void handle_generation(struct mm_http_exchange *ex, bool chat)
{
    struct prep *w = calloc(1, sizeof *w);
    if (!w) {
        mm_http_reply_error(ex, 503, NULL, "out_of_memory", "out of memory");
        return;
    }
    w->app = mm_http_app(ex);
    w->chat = chat;
    w->body = mm_http_body(ex, &w->len);
    mm_http_offload(ex, prep_work, prep_done, w);
}

void mm_http_handle_chat(struct mm_http_exchange *ex) { handle_generation(ex, true); }

void mm_http_handle_completions(struct mm_http_exchange *ex) { handle_generation(ex, false); }

void mm_http_handle_models(struct mm_http_exchange *ex)
{
    const struct mm_http_app *app = mm_http_app(ex);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", app->model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)app->created);
    cJSON_AddStringToObject(m, "owned_by", "mmmambad");
    cJSON_AddStringToObject(m, "root", app->model_name);
    cJSON_AddNumberToObject(m, "max_model_len", (double)app->max_model_len);
    cJSON_AddItemToArray(data, m);
    mm_http_reply_json(ex, 200, o);
}

/* vLLM: {"prompt": "..."} or {"messages": [...]} -> {count, max_model_len,
 * tokens}. Its images are decoded and tiled exactly as for a chat (the count
 * must match the chat's usage), so like the generation endpoints it is
 * prepared on a worker (mm_http_offload): a large image must not stall the
 * other connections of the event loop. */
struct tokenize_prep {
    struct mm_http_app *app;
    const char *body; /* borrowed from the exchange, which outlives the prep */
    size_t len;
    struct mm_api_prompt prompt;
    bool ok;
    struct mm_api_error e;
};

static void tokenize_work(void *arg)
{
    struct tokenize_prep *w = arg;
    struct mm_http_app *app = w->app;
    struct mm_api_error *e = &w->e;
    cJSON *root = NULL;
    w->ok = mm_api_parse_body(w->body, w->len, &root, e) && mm_api_check_model(app, root, e);
    if (w->ok) {
        const cJSON *messages = cJSON_GetObjectItemCaseSensitive(root, "messages");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "prompt");
        const cJSON *special = cJSON_GetObjectItemCaseSensitive(root, "add_special_tokens");
        const cJSON *gen = cJSON_GetObjectItemCaseSensitive(root, "add_generation_prompt");
        if ((special && !cJSON_IsBool(special)) || (gen && !cJSON_IsBool(gen))) {
            const char *key =
                special && !cJSON_IsBool(special) ? "add_special_tokens" : "add_generation_prompt";
            w->ok = mm_api_fail(e, 400, key, "invalid_type", "%s must be true or false", key);
        } else if (messages && !cJSON_IsNull(messages)) {
            w->ok = mm_api_chat_prompt(app, messages, !gen || cJSON_IsTrue(gen), &w->prompt, e);
        } else if (cJSON_IsString(text)) {
            struct mm_api_prompt *ps = NULL;
            int64_t n = 0;
            w->ok =
                mm_api_completion_prompts(app, text, !special || cJSON_IsTrue(special), &ps, &n, e);
            if (w->ok) {
                w->prompt = ps[0];
                free(ps);
            }
        } else {
            w->ok = mm_api_fail(e, 400, "prompt", "missing_required_parameter",
                                "send `prompt` (a string) or `messages` (a chat)");
        }
    }
    cJSON_Delete(root);
}

static void tokenize_done(struct mm_http_exchange *ex, void *arg)
{
    struct tokenize_prep *w = arg;
    if (!ex) {
        /* the client left while its prompt was being tokenized */
    } else if (!w->ok) {
        reply_api_error(ex, &w->e);
    } else {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "count", (double)w->prompt.ids.n);
        cJSON_AddNumberToObject(o, "max_model_len", (double)w->app->max_model_len);
        cJSON *t = cJSON_AddArrayToObject(o, "tokens");
        for (int64_t i = 0; i < w->prompt.ids.n; i++)
            cJSON_AddItemToArray(t, cJSON_CreateNumber(w->prompt.ids.ids[i]));
        cJSON_AddNullToObject(o, "token_strs");
        mm_http_reply_json(ex, 200, o);
    }
    mm_api_prompt_free(&w->prompt);
    free(w);
}

void mm_http_handle_tokenize(struct mm_http_exchange *ex)
{
    struct tokenize_prep *w = calloc(1, sizeof *w);
    if (!w) {
        mm_http_reply_error(ex, 503, NULL, "out_of_memory", "out of memory");
        return;
    }
    w->app = mm_http_app(ex);
    w->body = mm_http_body(ex, &w->len);
    mm_http_offload(ex, tokenize_work, tokenize_done, w);
}

/* vLLM: {"tokens": [ids]} -> {"prompt": "text"} */
void mm_http_handle_detokenize(struct mm_http_exchange *ex)
{
    struct mm_http_app *app = mm_http_app(ex);
    struct mm_api_error e;
    size_t len;
    const char *body = mm_http_body(ex, &len);
    cJSON *root = NULL;
    if (!mm_api_parse_body(body, len, &root, &e) || !mm_api_check_model(app, root, &e)) {
        reply_api_error(ex, &e);
        cJSON_Delete(root);
        return;
    }
    const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(root, "tokens");
    if (!cJSON_IsArray(tokens)) {
        mm_http_reply_error(ex, 400, "tokens",
                            tokens ? "invalid_type" : "missing_required_parameter",
                            "tokens must be an array of token ids");
        cJSON_Delete(root);
        return;
    }
    const int n = cJSON_GetArraySize(tokens);
    int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
    const int64_t vocab = mm_tokenizer_vocab_size(app->tok);
    int i = 0;
    const cJSON *t;
    bool ok = ids != NULL;
    cJSON_ArrayForEach(t, tokens)
    {
        if (!ok)
            break;
        if (!cJSON_IsNumber(t) || t->valuedouble != floor(t->valuedouble) || t->valuedouble < 0 ||
            t->valuedouble >= (double)vocab) {
            mm_http_reply_error(ex, 400, "tokens", "invalid_value",
                                "tokens[%d] is not a token id in [0, %lld)", i, (long long)vocab);
            ok = false;
            break;
        }
        ids[i++] = (int32_t)t->valuedouble;
    }
    char *text = NULL;
    size_t tlen = 0;
    struct mm_err err;
    if (ok && mm_tokenizer_decode(app->tok, ids, n, &text, &tlen, &err) != MM_OK) {
        mm_http_reply_error(ex, 400, "tokens", "invalid_value", "%s", err.msg);
        ok = false;
    }
    if (ok) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "prompt", mm_json_string_n(text, tlen));
        mm_http_reply_json(ex, 200, o);
    } else if (!ids) {
        mm_http_reply_error(ex, 503, NULL, "out_of_memory", "out of memory");
    }
    free(text);
    free(ids);
    cJSON_Delete(root);
}
