/* driver.c: the request loop of driver.h.
 *
 * Design: the loop releases requests whose scheduled time has come while
 * fewer than max_concurrency are in flight, lets curl move bytes, retires the
 * finished ones, and sleeps in curl_multi_poll until the next arrival. All
 * per-stream work happens in two callbacks: bytes -> SSE parser -> one JSON
 * chunk at a time. */
#include "loadgen/driver.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loadgen/sse.h"

#define ERROR_BODY_MAX 4096
#define SSE_EVENT_MAX ((size_t)16 << 20)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One request in flight. */
struct live {
    struct live *prev, *next; /* the in-flight list (freed on a setup failure) */
    struct mm_lg_result *res;
    enum mm_api api;
    CURL *easy;
    struct mm_buf body;
    struct mm_sse sse;
    struct mm_buf err_body; /* the start of a non-200 body */
    char curl_err[CURL_ERROR_SIZE];
    double t0;          /* the run's start (absolute) */
    double t_now;       /* when the bytes being parsed arrived (relative) */
    double t_last;      /* the last content chunk (relative) */
    double t_last_byte; /* (relative) */
    long status;
    int64_t chunks;
    int64_t usage_prompt, usage_completion;
    bool done_marker;
    char *stream_error; /* an {"error":...} event, or a parse failure */
};

static char *dup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *dup_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* The message of an OpenAI error object {"error":{"message":...}} or NULL. */
static const char *error_message(const cJSON *j)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (!e)
        return NULL;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    if (cJSON_IsString(m))
        return m->valuestring;
    return cJSON_IsString(e) ? e->valuestring : "error event without a message";
}

static enum mm_status on_event(void *user, const char *data, size_t len)
{
    struct live *l = user;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        l->done_marker = true;
        return MM_OK;
    }
    cJSON *j = cJSON_ParseWithLength(data, len);
    if (!j) {
        l->stream_error = dup_printf("unparsable stream chunk: %.200s", data);
        return MM_ERR_FORMAT;
    }
    const char *emsg = error_message(j);
    if (emsg) {
        l->stream_error = dup_printf("error event in the stream: %s", emsg);
        cJSON_Delete(j);
        return MM_ERR_FORMAT;
    }
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
    const cJSON *c0 = cJSON_IsArray(choices) ? cJSON_GetArrayItem(choices, 0) : NULL;
    const cJSON *text = NULL;
    if (c0 && l->api == MM_API_COMPLETIONS)
        text = cJSON_GetObjectItemCaseSensitive(c0, "text");
    else if (c0)
        text = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c0, "delta"),
                                                "content");
    /* a token chunk: non-empty text, or (completions) an empty text that is
     * not the closing chunk: a token that released no text (a special token,
     * part of a character) still marks the stream's cadence, as in vLLM's bench */
    const cJSON *fin = c0 ? cJSON_GetObjectItemCaseSensitive(c0, "finish_reason") : NULL;
    const bool empty_token =
        l->api == MM_API_COMPLETIONS && !cJSON_IsString(fin) && cJSON_IsString(text);
    if (cJSON_IsString(text) && (text->valuestring[0] || empty_token)) {
        if (l->chunks == 0)
            l->res->ttft = l->t_now - l->res->t_send;
        else
            mm_dvec_push(&l->res->itl, l->t_now - l->t_last);
        l->t_last = l->t_now;
        l->chunks++;
    }
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(j, "usage");
    if (cJSON_IsObject(usage)) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens");
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens");
        if (cJSON_IsNumber(p))
            l->usage_prompt = (int64_t)p->valuedouble;
        if (cJSON_IsNumber(o))
            l->usage_completion = (int64_t)o->valuedouble;
    }
    cJSON_Delete(j);
    return MM_OK;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *user)
{
    struct live *l = user;
    const size_t n = size * nmemb;
    l->t_now = now_s() - l->t0;
    l->t_last_byte = l->t_now;
    if (l->status == 0)
        curl_easy_getinfo(l->easy, CURLINFO_RESPONSE_CODE, &l->status);
    if (l->status != 200) {
        const size_t room = ERROR_BODY_MAX - l->err_body.len;
        mm_buf_append(&l->err_body, ptr, n < room ? n : room);
        return n;
    }
    struct mm_err err;
    if (mm_sse_feed(&l->sse, ptr, n, &err) != MM_OK) {
        if (!l->stream_error)
            l->stream_error = dup_printf("%s", err.msg);
        return 0; /* aborts the transfer (CURLE_WRITE_ERROR) */
    }
    return n;
}

/* Records the outcome of a finished transfer in l->res. */
static void retire(struct live *l, CURLcode code)
{
    struct mm_lg_result *r = l->res;
    if (l->status == 0)
        curl_easy_getinfo(l->easy, CURLINFO_RESPONSE_CODE, &l->status);
    r->http_status = l->status;
    r->latency = (l->t_last_byte > 0 ? l->t_last_byte : now_s() - l->t0) - r->t_send;
    r->input_len = l->usage_prompt > 0 ? l->usage_prompt : r->planned_input_len;
    r->output_len = l->usage_completion > 0 ? l->usage_completion : l->chunks;
    if (l->stream_error) {
        r->error = l->stream_error;
        l->stream_error = NULL;
        r->error_class = "stream";
    } else if (l->status != 200 && l->status != 0) {
        cJSON *j = cJSON_ParseWithLength(l->err_body.p ? l->err_body.p : "", l->err_body.len);
        const char *m = j ? error_message(j) : NULL;
        r->error =
            dup_printf("HTTP %ld: %.300s", l->status, m ? m : (l->err_body.p ? l->err_body.p : ""));
        cJSON_Delete(j);
        static char classes[600][4]; /* "100".."599": static names for the counters */
        if (l->status >= 100 && l->status < 600) {
            snprintf(classes[l->status], sizeof(classes[0]), "%ld", l->status);
            r->error_class = classes[l->status];
        } else {
            r->error_class = "http";
        }
    } else if (code != CURLE_OK) {
        r->error =
            dup_printf("transport: %s", l->curl_err[0] ? l->curl_err : curl_easy_strerror(code));
        r->error_class = code == CURLE_OPERATION_TIMEDOUT ? "timeout" : "transport";
    } else if (!l->done_marker) {
        r->error = dup_printf("the stream ended without data: [DONE]");
        r->error_class = "stream";
    } else {
        r->success = true;
    }
    if (!r->success && !r->error)
        r->error_class = "nomem";
}

static void live_free(struct live *l)
{
    if (!l)
        return;
    curl_easy_cleanup(l->easy);
    mm_buf_free(&l->body);
    mm_buf_free(&l->err_body);
    mm_sse_free(&l->sse);
    free(l->stream_error);
    free(l);
}

static void list_remove(struct live **head, struct live *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else
        *head = l->next;
    if (l->next)
        l->next->prev = l->prev;
}

static enum mm_status start_request(const struct mm_lg_config *c, struct curl_slist *headers,
                                    CURLM *multi, struct live **head, int64_t i,
                                    struct mm_lg_result *r, double t0, struct mm_err *err)
{
    struct live *l = calloc(1, sizeof(*l));
    if (!l)
        return mm_err_set(err, MM_ERR_NOMEM, "request %lld", (long long)i);
    l->res = r;
    l->api = c->workload.api;
    l->t0 = t0;
    mm_sse_init(&l->sse, SSE_EVENT_MAX, on_event, l);
    enum mm_status st = mm_workload_body(&c->workload, i, r->planned_input_len,
                                         r->planned_output_len, r->has_image, &l->body, err);
    if (st != MM_OK)
        goto fail;
    l->easy = curl_easy_init();
    if (!l->easy) {
        st = mm_err_set(err, MM_ERR_NOMEM, "curl_easy_init");
        goto fail;
    }
    CURL *e = l->easy;
    curl_easy_setopt(e, CURLOPT_URL, c->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, l->body.p);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)l->body.len);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, l);
    curl_easy_setopt(e, CURLOPT_PRIVATE, l);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, l->curl_err);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 30000L);
    if (c->request_timeout > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(c->request_timeout * 1000));
    r->t_send = now_s() - t0;
    if (curl_multi_add_handle(multi, e) != CURLM_OK) {
        st = mm_err_set(err, MM_ERR_IO, "curl_multi_add_handle");
        goto fail;
    }
    l->next = *head;
    if (*head)
        (*head)->prev = l;
    *head = l;
    return MM_OK;
fail:
    live_free(l);
    return st;
}

static void progress_line(const struct mm_lg_config *c, double t, int64_t sent, int64_t done,
                          int64_t failed, int64_t running, int64_t out_tokens, bool final)
{
    if (c->progress == 0)
        return;
    fprintf(stderr,
            "%s[%7.1fs] sent %lld/%lld  done %lld  failed %lld  running %lld  "
            "output %.1f tok/s%s",
            c->progress == 1 ? "\r" : "", t, (long long)sent, (long long)c->num_prompts,
            (long long)done, (long long)failed, (long long)running,
            t > 0 ? (double)out_tokens / t : 0.0, c->progress == 1 && !final ? "   " : "\n");
    fflush(stderr);
}

enum mm_status mm_lg_run(const struct mm_lg_config *c, struct mm_lg_result *results,
                         struct mm_lg_result *long_result, double *duration, struct mm_err *err)
{
    const int64_t n = c->num_prompts;
    enum mm_status st = MM_OK;
    struct curl_slist *headers = NULL;
    CURLM *multi = NULL;
    double *sched = NULL;
    struct live *live = NULL;
    *duration = 0;
    memset(results, 0, (size_t)n * sizeof(*results));
    const bool with_long = c->long_input_len > 0 && long_result;
    if (with_long) {
        memset(long_result, 0, sizeof(*long_result));
        long_result->planned_input_len = c->long_input_len;
        long_result->planned_output_len = c->long_output_len > 0 ? c->long_output_len : 1;
        long_result->ttft = -1;
    }
    bool long_pending = with_long;
    const int64_t total = n + (with_long ? 1 : 0);
    if (n <= 0)
        return mm_err_set(err, MM_ERR_INVALID, "--num-prompts must be positive");
    if (c->max_concurrency < 0)
        return mm_err_set(err, MM_ERR_INVALID, "--max-concurrency must be >= 0");

    /* Plan: lengths, images and arrival times, all from the seed. */
    struct mm_rng rng;
    mm_rng_seed(&rng, c->workload.seed);
    for (int64_t i = 0; i < n; i++) {
        struct mm_lg_result *r = &results[i];
        r->planned_input_len = mm_workload_length(&rng, c->input_len, c->range_ratio, 1);
        r->planned_output_len = mm_workload_length(&rng, c->output_len, c->range_ratio, 1);
        r->has_image = c->workload.image_data_url && mm_rng_uniform(&rng) < c->image_ratio;
        r->ttft = -1;
    }
    sched = malloc((size_t)n * sizeof(double));
    if (!sched)
        return mm_err_set(err, MM_ERR_NOMEM, "schedule of %lld requests", (long long)n);
    st = mm_workload_schedule(&rng, c->request_rate, c->burstiness, n, sched, err);
    if (st != MM_OK)
        goto done;

    const char *fixed[] = {"Content-Type: application/json", "Accept: text/event-stream",
                           "Expect:"}; /* no 100-continue round trip for large bodies */
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        headers = curl_slist_append(headers, fixed[i]);
    for (int i = 0; i < c->n_headers; i++)
        headers = curl_slist_append(headers, c->headers[i]);
    multi = curl_multi_init();
    if (!headers || !multi) {
        st = mm_err_set(err, MM_ERR_NOMEM, "curl setup");
        goto done;
    }
    const int64_t conc = c->max_concurrency > 0 ? c->max_concurrency : n;
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)(conc < 100000 ? conc : 100000));

    const double t0 = now_s();
    int64_t next = 0, running = 0, finished = 0, failed = 0, out_tokens = 0;
    double last_progress = 0;
    while (finished < total) {
        const double t = now_s() - t0;
        if (long_pending && t >= c->long_at) {
            long_result->t_arrival = c->long_at;
            st = start_request(c, headers, multi, &live, n, long_result, t0, err);
            if (st != MM_OK)
                goto done;
            long_pending = false;
        }
        while (next < n && sched[next] <= t &&
               (c->max_concurrency == 0 || running < c->max_concurrency)) {
            results[next].t_arrival = sched[next];
            st = start_request(c, headers, multi, &live, next, &results[next], t0, err);
            if (st != MM_OK)
                goto done;
            next++;
            running++;
        }
        int still = 0;
        curl_multi_perform(multi, &still);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            struct live *l = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&l);
            retire(l, msg->data.result);
            curl_multi_remove_handle(multi, l->easy);
            list_remove(&live, l);
            finished++;
            const bool counted = l->res != long_result;
            running -= counted;
            failed += counted && !l->res->success;
            out_tokens += counted && l->res->success ? l->res->output_len : 0;
            live_free(l);
        }
        const double tn = now_s() - t0;
        const double every = c->progress == 1 ? 0.5 : 10.0;
        if (tn - last_progress >= every) {
            last_progress = tn;
            progress_line(c, tn, next, finished, failed, running, out_tokens, false);
        }
        if (finished == total)
            break;
        /* Sleep until bytes arrive, the next arrival is due, or the progress line. */
        double wait = 0.5;
        if (next < n && (c->max_concurrency == 0 || running < c->max_concurrency))
            wait = fmin(wait, fmax(0.0, sched[next] - tn));
        if (long_pending)
            wait = fmin(wait, fmax(0.0, c->long_at - tn));
        curl_multi_poll(multi, NULL, 0, (int)ceil(wait * 1000), NULL);
    }
    *duration = now_s() - t0;
    progress_line(c, *duration, next, finished, failed, running, out_tokens, true);
done:
    while (live) { /* on a setup failure, abandon what is in flight */
        struct live *l = live;
        live = l->next;
        curl_multi_remove_handle(multi, l->easy);
        live_free(l);
    }
    if (multi)
        curl_multi_cleanup(multi);
    curl_slist_free_all(headers);
    free(sched);
    return st;
}

void mm_lg_results_free(struct mm_lg_result *results, int64_t n)
{
    for (int64_t i = 0; results && i < n; i++) {
        free(results[i].error);
        results[i].error = NULL;
        mm_dvec_free(&results[i].itl);
    }
}
