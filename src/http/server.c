/* server.c: libmicrohttpd plumbing for server.h and exchange.h: routing,
 * body limits, auth, replies, suspend/resume for jobs, SSE, pings, the
 * access log.
 *
 * Design: every exchange lives in one struct from the first header to the
 * completion callback. An asynchronous job sleeps with its connection
 * suspended; mm_http_wake sets `pending` and resumes it under the
 * exchange's lock, and the pump loop re-checks `pending` under that lock
 * before suspending, so a wake can never be lost and nothing polls. A ticker
 * thread wakes quiet streams for `: ping` comments and notices buffered
 * requests whose client hung up (a zero-byte MSG_PEEK), which libmicrohttpd
 * cannot see while a connection is suspended. */
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "base/buffer.h"
#include "base/log.h"
#include "http/exchange.h"
#include "serve/dispatch.h"

struct route {
    const char *path;    /* ending in '/': that prefix plus one path segment (an id) */
    const char *methods; /* "GET", "POST", "GET, POST" (also the Allow header) */
    bool open;           /* served without an API key */
    void (*handler)(struct mm_http_exchange *ex);
};

static void handle_health(struct mm_http_exchange *ex);

static const struct route routes[] = {
    {"/v1/chat/completions", "POST", false, mm_http_handle_chat},
    {"/v1/completions", "POST", false, mm_http_handle_completions},
    {"/v1/models", "GET", false, mm_http_handle_models},
    {"/v1/responses", "POST", false, mm_http_handle_responses},
    {"/v1/responses/", "GET, DELETE", false, mm_http_handle_response_id},
    {"/tokenize", "POST", false, mm_http_handle_tokenize},
    {"/detokenize", "POST", false, mm_http_handle_detokenize},
    {"/health", "GET", true, handle_health},
    {"/metrics", "GET", false, mm_http_handle_metrics},
};

struct mm_http_server {
    struct MHD_Daemon *mhd;
    struct mm_http_options opt;
    struct mm_http_app *app;
    uint16_t port;
    atomic_bool draining;
    atomic_ullong next_id;
    /* active jobs, for the ticker, cancel_all and the drain */
    pthread_mutex_t lock;
    struct mm_http_exchange *jobs;
    int64_t n_jobs;
    pthread_t ticker;
    bool ticker_running;
    pthread_cond_t ticker_cond;
    bool stopping;
    /* workers for mm_http_offload: a FIFO of exchanges */
    pthread_t *workers;
    int n_workers;
    pthread_cond_t work_cond;
    struct mm_http_exchange *work_head, *work_tail;
    int64_t n_offloaded; /* exchanges being prepared (counted as active) */
    bool workers_stop;
    atomic_bool closing; /* freeing: jobs may no longer suspend */
};

struct mm_http_exchange {
    struct mm_http_server *srv;
    struct MHD_Connection *conn;
    const struct route *route;
    char method[16];
    char path[128];
    char id[40];
    const char *allow;   /* methods for a 405's Allow header */
    const char *api_key; /* the key the request authenticated with (app->api_keys); NULL */
    int n_headers;       /* extra response headers (mm_http_add_header) */
    char header[MM_HTTP_MAX_HEADERS][2][96];
    double t_start, t_first;
    int status;
    int64_t prompt_tokens, completion_tokens;
    /* body */
    char *body;
    size_t len, cap;
    bool too_large;
    size_t dropped; /* body bytes discarded past the limit */
    bool replied;
    /* job */
    const struct mm_http_job_ops *ops;
    void *job;
    bool stream;
    bool job_done;
    struct mm_http_exchange *prev, *next; /* in srv->jobs while a job runs */
    pthread_mutex_t lock;                 /* guards the fields below */
    bool pending, suspended, ping_due, cancelled;
    double t_output; /* last bytes produced, for pings */
    /* mm_http_offload: set by the handler, finished by a worker (under lock) */
    void (*off_work)(void *arg);
    void (*off_done)(struct mm_http_exchange *ex, void *arg);
    void *off_arg;
    bool off_active, off_finished;
    pthread_cond_t off_cond;
    struct mm_http_exchange *work_next;
    /* SSE bytes waiting for the socket */
    char *out;
    size_t out_len, out_off, out_cap;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- replies ------------------------------------------------------------------- */

static void queue(struct mm_http_exchange *ex, int status, struct MHD_Response *r)
{
    if (!r) {
        MM_ERROR("%s: cannot create a response", ex->id);
        return;
    }
    MHD_add_response_header(r, "X-Request-Id", ex->id);
    for (int i = 0; i < ex->n_headers; i++)
        MHD_add_response_header(r, ex->header[i][0], ex->header[i][1]);
    if (ex->allow)
        MHD_add_response_header(r, "Allow", ex->allow);
    if (MHD_queue_response(ex->conn, (unsigned)status, r) != MHD_YES)
        MM_DEBUG("%s: response not queued (connection closing)", ex->id);
    MHD_destroy_response(r);
    ex->status = status;
    ex->replied = true;
}

void mm_http_reply_text(struct mm_http_exchange *ex, int status, const char *content_type,
                        char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        body ? len : 0, body ? body : "", body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r)
        free(body);
    else
        MHD_add_response_header(r, "Content-Type", content_type);
    if (r && (status == 429 || status == 503))
        MHD_add_response_header(r, "Retry-After", "1");
    queue(ex, status, r);
}

void mm_http_reply_json(struct mm_http_exchange *ex, int status, cJSON *json)
{
    char *s = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!s) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
                                  "\"server_error\",\"param\":null,\"code\":null}}";
        struct MHD_Response *r =
            MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
        if (r)
            MHD_add_response_header(r, "Content-Type", "application/json");
        queue(ex, 500, r);
        return;
    }
    mm_http_reply_text(ex, status, "application/json", s, strlen(s));
}

static const char *error_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 404:
        return "not_found_error";
    case 429:
        return "rate_limit_error";
    case 500:
        return "server_error";
    case 503:
        return "service_unavailable";
    default:
        return "invalid_request_error";
    }
}

void mm_http_reply_error(struct mm_http_exchange *ex, int status, const char *param,
                         const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *root = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", error_type(status));
    if (param)
        cJSON_AddStringToObject(e, "param", param);
    else
        cJSON_AddNullToObject(e, "param");
    if (code)
        cJSON_AddStringToObject(e, "code", code);
    else
        cJSON_AddNullToObject(e, "code");
    if (status >= 500)
        MM_WARN("%s: %d %s", ex->id, status, msg);
    else
        MM_DEBUG("%s: %d %s", ex->id, status, msg);
    mm_http_reply_json(ex, status, root);
}

/* ---- accessors ---------------------------------------------------------------- */

const char *mm_http_method(const struct mm_http_exchange *ex) { return ex->method; }
const char *mm_http_path(const struct mm_http_exchange *ex) { return ex->path; }
const char *mm_http_request_id(const struct mm_http_exchange *ex) { return ex->id; }
const char *mm_http_api_key(const struct mm_http_exchange *ex) { return ex->api_key; }

void mm_http_add_header(struct mm_http_exchange *ex, const char *name, const char *value)
{
    if (ex->n_headers == MM_HTTP_MAX_HEADERS || strlen(name) >= sizeof ex->header[0][0] ||
        strlen(value) >= sizeof ex->header[0][1]) {
        MM_WARN("%s: response header %s dropped", ex->id, name);
        return;
    }
    snprintf(ex->header[ex->n_headers][0], sizeof ex->header[0][0], "%s", name);
    snprintf(ex->header[ex->n_headers][1], sizeof ex->header[0][1], "%s", value);
    ex->n_headers++;
}
struct mm_http_app *mm_http_app(const struct mm_http_exchange *ex) { return ex->srv->app; }
bool mm_http_draining(const struct mm_http_exchange *ex) { return atomic_load(&ex->srv->draining); }

const char *mm_http_body(const struct mm_http_exchange *ex, size_t *len)
{
    *len = ex->len;
    return ex->body ? ex->body : "";
}

void mm_http_set_usage(struct mm_http_exchange *ex, int64_t prompt_tokens,
                       int64_t completion_tokens)
{
    ex->prompt_tokens = prompt_tokens;
    ex->completion_tokens = completion_tokens;
}

void mm_http_mark_first_token(struct mm_http_exchange *ex)
{
    if (ex->t_first == 0)
        ex->t_first = now_s();
}

/* ---- jobs ---------------------------------------------------------------------- */

void *mm_http_job_token(struct mm_http_exchange *ex) { return ex; }

void mm_http_wake(void *token)
{
    struct mm_http_exchange *ex = token;
    pthread_mutex_lock(&ex->lock);
    ex->pending = true;
    if (ex->suspended) {
        ex->suspended = false;
        MHD_resume_connection(ex->conn);
    }
    pthread_mutex_unlock(&ex->lock);
}

bool mm_http_stream_write(struct mm_http_exchange *ex, const char *data, size_t len)
{
    if (ex->out_off == ex->out_len) {
        ex->out_off = ex->out_len = 0;
    } else if (ex->out_off > ex->out_cap / 2) { /* a slow reader: keep the buffer compact */
        memmove(ex->out, ex->out + ex->out_off, ex->out_len - ex->out_off);
        ex->out_len -= ex->out_off;
        ex->out_off = 0;
    }
    if (!mm_buffer_reserve(&ex->out, &ex->out_cap, ex->out_len + len, 4096))
        return false;
    memcpy(ex->out + ex->out_len, data, len);
    ex->out_len += len;
    pthread_mutex_lock(&ex->lock);
    ex->t_output = now_s();
    pthread_mutex_unlock(&ex->lock);
    return true;
}

static void jobs_add(struct mm_http_exchange *ex)
{
    struct mm_http_server *s = ex->srv;
    pthread_mutex_lock(&s->lock);
    ex->next = s->jobs;
    if (s->jobs)
        s->jobs->prev = ex;
    s->jobs = ex;
    s->n_jobs++;
    pthread_mutex_unlock(&s->lock);
}

static void jobs_remove(struct mm_http_exchange *ex)
{
    struct mm_http_server *s = ex->srv;
    pthread_mutex_lock(&s->lock);
    if (ex->prev)
        ex->prev->next = ex->next;
    else if (s->jobs == ex)
        s->jobs = ex->next;
    if (ex->next)
        ex->next->prev = ex->prev;
    ex->prev = ex->next = NULL;
    s->n_jobs--;
    pthread_mutex_unlock(&s->lock);
}

void mm_http_offload(struct mm_http_exchange *ex, void (*work)(void *arg),
                     void (*done)(struct mm_http_exchange *ex, void *arg), void *arg)
{
    struct mm_http_server *s = ex->srv;
    ex->off_work = work;
    ex->off_done = done;
    ex->off_arg = arg;
    ex->off_active = true;
    ex->off_finished = false;
    pthread_mutex_lock(&s->lock);
    ex->work_next = NULL;
    if (s->work_tail)
        s->work_tail->work_next = ex;
    else
        s->work_head = ex;
    s->work_tail = ex;
    s->n_offloaded++;
    pthread_cond_signal(&s->work_cond);
    pthread_mutex_unlock(&s->lock);
    /* sleep until the worker is done (unless it already is) */
    pthread_mutex_lock(&ex->lock);
    const bool finished = ex->off_finished;
    if (!finished) {
        ex->suspended = true;
        MHD_suspend_connection(ex->conn);
    }
    pthread_mutex_unlock(&ex->lock);
    if (finished) {
        ex->off_active = false;
        done(ex, arg);
    }
}

static void *worker_main(void *arg)
{
    struct mm_http_server *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->work_head && !s->workers_stop)
            pthread_cond_wait(&s->work_cond, &s->lock);
        struct mm_http_exchange *ex = s->work_head;
        if (!ex)
            break; /* stopping, and the queue is empty */
        s->work_head = ex->work_next;
        if (!s->work_head)
            s->work_tail = NULL;
        pthread_mutex_unlock(&s->lock);
        ex->off_work(ex->off_arg);
        pthread_mutex_lock(&s->lock);
        s->n_offloaded--;
        pthread_mutex_lock(&ex->lock);
        ex->off_finished = true;
        pthread_cond_broadcast(&ex->off_cond);
        if (ex->suspended) {
            ex->suspended = false;
            MHD_resume_connection(ex->conn);
        }
        pthread_mutex_unlock(&ex->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Pumps until the job is done or has nothing to give; in the second case the
 * connection is suspended unless a wake came in meanwhile. Returns true when
 * done. Must run on the connection's HTTP thread, inside a callback. */
static bool pump_or_suspend(struct mm_http_exchange *ex, bool want_output)
{
    for (;;) {
        pthread_mutex_lock(&ex->lock);
        ex->pending = false;
        pthread_mutex_unlock(&ex->lock);
        if (ex->ops->pump(ex, ex->job) == MM_HTTP_PUMP_DONE) {
            ex->job_done = true;
            return true;
        }
        if (want_output && ex->out_off < ex->out_len)
            return false;
        pthread_mutex_lock(&ex->lock);
        if (ex->ping_due && want_output) {
            ex->ping_due = false;
            pthread_mutex_unlock(&ex->lock);
            mm_http_stream_write(ex, ": ping\n\n", 8);
            return false;
        }
        if (ex->pending) {
            pthread_mutex_unlock(&ex->lock);
            continue;
        }
        if (atomic_load(&ex->srv->closing)) {
            /* the server is going away with this job unfinished: end it here */
            pthread_mutex_unlock(&ex->lock);
            ex->job_done = true;
            if (!want_output)
                mm_http_reply_error(ex, 503, NULL, "shutting_down", "the server is shutting down");
            return true;
        }
        ex->suspended = true;
        MHD_suspend_connection(ex->conn);
        pthread_mutex_unlock(&ex->lock);
        return false;
    }
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct mm_http_exchange *ex = cls;
    if (ex->out_off == ex->out_len && !ex->job_done)
        pump_or_suspend(ex, true);
    if (ex->out_off < ex->out_len) {
        size_t n = ex->out_len - ex->out_off;
        if (n > max)
            n = max;
        memcpy(buf, ex->out + ex->out_off, n);
        ex->out_off += n;
        return (ssize_t)n;
    }
    return ex->job_done ? MHD_CONTENT_READER_END_OF_STREAM : 0;
}

void mm_http_start_job(struct mm_http_exchange *ex, const struct mm_http_job_ops *ops, void *job,
                       bool stream)
{
    ex->ops = ops;
    ex->job = job;
    ex->stream = stream;
    ex->t_output = now_s();
    jobs_add(ex);
    if (!stream) {
        pump_or_suspend(ex, false);
        return;
    }
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, ex, NULL);
    if (r) {
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        MHD_add_response_header(r, "X-Accel-Buffering", "no");
    }
    queue(ex, 200, r);
}

/* ---- health ---------------------------------------------------------------------- */

static void handle_health(struct mm_http_exchange *ex)
{
    if (atomic_load_explicit(&ex->srv->app->loading, memory_order_acquire))
        mm_http_reply_error(ex, 503, NULL, "loading", "the model is loading");
    else if (atomic_load(&ex->srv->draining))
        mm_http_reply_error(ex, 503, NULL, "draining", "the server is shutting down");
    else if (ex->srv->app->dispatch && mm_dispatch_serving(ex->srv->app->dispatch) == 0)
        mm_http_reply_error(ex, 503, NULL, "engine_failed", "every engine has failed");
    else
        mm_http_reply_text(ex, 200, "application/json", strdup("{\"status\":\"ok\"}"), 15);
}

/* ---- libmicrohttpd callbacks ------------------------------------------------------ */

static const struct route *find_route(const char *path)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const char *rp = routes[i].path;
        const size_t n = strlen(rp);
        if (strcmp(rp, path) == 0)
            return &routes[i];
        if (rp[n - 1] == '/' && strncmp(rp, path, n) == 0 && path[n] && !strchr(path + n, '/'))
            return &routes[i];
    }
    return NULL;
}

static bool method_allowed(const struct route *r, const char *method)
{
    const size_t n = strlen(method);
    for (const char *p = r->methods; (p = strstr(p, method)) != NULL; p += n)
        if ((p == r->methods || p[-1] == ' ') && (p[n] == '\0' || p[n] == ','))
            return true;
    return false;
}

/* First call for a request: everything decidable from the headers. Returns
 * true if a reply was queued already. */
static bool check_headers(struct mm_http_exchange *ex)
{
    struct mm_http_server *s = ex->srv;
    if (!ex->route) {
        mm_http_reply_error(ex, 404, NULL, "not_found", "no route %s %s", ex->method, ex->path);
        return true;
    }
    if (!method_allowed(ex->route, ex->method)) {
        ex->allow = ex->route->methods;
        mm_http_reply_error(ex, 405, NULL, "method_not_allowed", "%s does not accept %s; use %s",
                            ex->path, ex->method, ex->route->methods);
        return true;
    }
    if (!ex->route->open) {
        const char *auth =
            MHD_lookup_connection_value(ex->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        bool ok;
        ex->api_key = mm_http_auth_key(s->app, auth, &ok);
        if (!ok) {
            mm_http_reply_error(ex, 401, NULL, "invalid_api_key",
                                auth ? "incorrect API key provided"
                                     : "missing API key: send `Authorization: Bearer KEY`");
            return true;
        }
    }
    const char *cl =
        MHD_lookup_connection_value(ex->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        const unsigned long long n = strtoull(cl, &end, 10);
        if (errno || *end || n > s->opt.max_body_bytes) {
            mm_http_reply_error(ex, 413, NULL, "body_too_large",
                                "request body larger than %zu bytes", s->opt.max_body_bytes);
            return true;
        }
    }
    return false;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    struct mm_http_server *s = cls;
    struct mm_http_exchange *ex = *con_cls;
    if (!ex) {
        ex = calloc(1, sizeof *ex);
        if (!ex)
            return MHD_NO;
        pthread_mutex_init(&ex->lock, NULL);
        pthread_cond_init(&ex->off_cond, NULL);
        ex->srv = s;
        ex->conn = conn;
        ex->t_start = now_s();
        snprintf(ex->method, sizeof ex->method, "%s", method);
        snprintf(ex->path, sizeof ex->path, "%s", url);
        snprintf(ex->id, sizeof ex->id, "%llx%08llx", (unsigned long long)time(NULL),
                 (unsigned long long)atomic_fetch_add(&s->next_id, 1));
        ex->route = strlen(url) < sizeof ex->path ? find_route(url) : NULL;
        *con_cls = ex;
        check_headers(ex);
        return MHD_YES;
    }
    if (ex->replied && !ex->ops)
        return MHD_YES; /* refused from the headers: the body is dropped */
    if (*upload_data_size) {
        const size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (ex->too_large || ex->len + n > s->opt.max_body_bytes) {
            /* a chunked body past the limit (libmicrohttpd 0.9 cannot answer
             * before the body ends): dropped, then 413; one that goes on past
             * twice the limit is cut by closing the connection */
            ex->too_large = true;
            ex->dropped += n;
            return ex->dropped > s->opt.max_body_bytes ? MHD_NO : MHD_YES;
        }
        if (!mm_buffer_reserve(&ex->body, &ex->cap, ex->len + n + 1, 4096))
            return MHD_NO;
        memcpy(ex->body + ex->len, upload_data, n);
        ex->len += n;
        ex->body[ex->len] = '\0';
        return MHD_YES;
    }
    (void)upload_data;
    if (ex->off_active) { /* resumed by its worker */
        pthread_mutex_lock(&ex->lock);
        const bool finished = ex->off_finished;
        if (!finished) {
            ex->suspended = true;
            MHD_suspend_connection(ex->conn);
        }
        pthread_mutex_unlock(&ex->lock);
        if (finished) {
            ex->off_active = false;
            ex->off_done(ex, ex->off_arg);
            if (!ex->replied && !ex->ops)
                mm_http_reply_error(ex, 500, NULL, NULL, "internal error: no response");
        }
        return MHD_YES;
    }
    if (ex->too_large) {
        mm_http_reply_error(ex, 413, NULL, "body_too_large", "request body larger than %zu bytes",
                            s->opt.max_body_bytes);
        return MHD_YES;
    }
    if (ex->ops) { /* resumed buffered job */
        if (!ex->job_done)
            pump_or_suspend(ex, false);
        return MHD_YES;
    }
    if (ex->route->handler != handle_health) {
        if (atomic_load_explicit(&s->app->loading, memory_order_acquire)) {
            mm_http_reply_error(ex, 503, NULL, "loading", "the model is loading; retry shortly");
            return MHD_YES;
        }
        if (atomic_load(&s->draining)) {
            mm_http_reply_error(ex, 503, NULL, "draining", "the server is shutting down");
            return MHD_YES;
        }
    }
    ex->route->handler(ex);
    if (!ex->replied && !ex->ops && !ex->off_active)
        mm_http_reply_error(ex, 500, NULL, NULL, "internal error: no response");
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    struct mm_http_server *s = cls;
    struct mm_http_exchange *ex = *con_cls;
    if (!ex)
        return;
    *con_cls = NULL;
    if (ex->off_active) { /* closed while its worker runs: wait, then let done free it */
        pthread_mutex_lock(&ex->lock);
        while (!ex->off_finished)
            pthread_cond_wait(&ex->off_cond, &ex->lock);
        pthread_mutex_unlock(&ex->lock);
        ex->off_active = false;
        ex->off_done(NULL, ex->off_arg);
    }
    if (ex->ops) {
        jobs_remove(ex); /* first: then the ticker and cancel_all cannot reach it */
        if (!ex->job_done)
            ex->ops->cancel(ex->job);
        ex->ops->release(ex->job); /* after this no wake can reach ex */
    }
    if (s->opt.access_log) {
        const double t = now_s();
        char ttft[32] = "-";
        if (ex->t_first > 0)
            snprintf(ttft, sizeof ttft, "%.1f", (ex->t_first - ex->t_start) * 1e3);
        MM_INFO("access id=%s %s %s status=%d prompt_tokens=%lld completion_tokens=%lld "
                "ttft_ms=%s duration_ms=%.1f%s",
                ex->id, ex->method, ex->path, ex->status, (long long)ex->prompt_tokens,
                (long long)ex->completion_tokens, ttft, (t - ex->t_start) * 1e3,
                toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed early)");
    }
    pthread_cond_destroy(&ex->off_cond);
    pthread_mutex_destroy(&ex->lock);
    free(ex->body);
    free(ex->out);
    free(ex);
}

static void on_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    if (MM_LOG_DEBUG < mm_log_threshold)
        return;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    const size_t n = strlen(line);
    if (n && line[n - 1] == '\n')
        line[n - 1] = '\0';
    MM_DEBUG("libmicrohttpd: %s", line);
}

/* ---- the ticker: pings and hang-up detection ---------------------------------------- */

static void *ticker_main(void *arg)
{
    struct mm_http_server *s = arg;
    const double interval = (double)s->opt.ping_interval_ms * 1e-3;
    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        const double step = interval / 4 < 0.5 ? interval / 4 : 0.5;
        ts.tv_nsec += (long)(step * 1e9);
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&s->ticker_cond, &s->lock, &ts);
        const double t = now_s();
        for (struct mm_http_exchange *ex = s->jobs; ex; ex = ex->next) {
            bool hung_up = false;
            pthread_mutex_lock(&ex->lock);
            if (ex->suspended && ex->stream && t - ex->t_output >= interval) {
                ex->ping_due = true;
                ex->t_output = t;
                ex->suspended = false;
                MHD_resume_connection(ex->conn);
            } else if (ex->suspended && !ex->stream && !ex->cancelled) {
                const union MHD_ConnectionInfo *ci =
                    MHD_get_connection_info(ex->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
                char c;
                if (ci && recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0)
                    hung_up = ex->cancelled = true;
            }
            pthread_mutex_unlock(&ex->lock);
            /* outside ex->lock: the job's lock comes before it (its notify wakes ex) */
            if (hung_up)
                ex->ops->cancel(ex->job);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- server ---------------------------------------------------------------------- */

enum mm_status mm_http_server_start(const struct mm_http_options *opt, struct mm_http_app *app,
                                    struct mm_http_server **out, struct mm_err *err)
{
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_PASSIVE, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    char port[8];
    snprintf(port, sizeof port, "%u", opt->port);
    const int gai = getaddrinfo(opt->host, port, &hints, &ai);
    if (gai != 0)
        return mm_err_set(err, MM_ERR_INVALID, "host \"%s\" is not a numeric IPv4/IPv6 address: %s",
                          opt->host, gai_strerror(gai));
    struct mm_http_server *s = calloc(1, sizeof *s);
    if (!s) {
        freeaddrinfo(ai);
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    }
    s->opt = *opt;
    s->app = app;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->ticker_cond, NULL);
    pthread_cond_init(&s->work_cond, NULL);
    s->workers = calloc((size_t)opt->threads, sizeof *s->workers);
    for (int i = 0; s->workers && i < opt->threads; i++) {
        if (pthread_create(&s->workers[i], NULL, worker_main, s) != 0)
            break;
        s->n_workers++;
    }
    if (s->n_workers < 1) {
        mm_http_server_free(s);
        return mm_err_set(err, MM_ERR_NOMEM, "cannot start the HTTP worker threads");
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    s->mhd = MHD_start_daemon(
        flags, opt->port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, on_log, s,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)opt->threads,
        MHD_OPTION_CONNECTION_LIMIT, opt->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        opt->connection_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, opt->max_header_bytes,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_LISTEN_BACKLOG_SIZE,
        (unsigned)1024, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->mhd) {
        mm_err_set(err, MM_ERR_IO, "cannot listen on %s port %u: %s", opt->host, opt->port,
                   errno ? strerror(errno) : "libmicrohttpd refused the options");
        mm_http_server_free(s);
        return err->status;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : opt->port;
    if (pthread_create(&s->ticker, NULL, ticker_main, s) != 0) {
        mm_http_server_free(s);
        return mm_err_set(err, MM_ERR_NOMEM, "cannot start the HTTP ticker thread");
    }
    s->ticker_running = true;
    *out = s;
    return MM_OK;
}

uint16_t mm_http_server_port(const struct mm_http_server *s) { return s->port; }

void mm_http_server_quiesce(struct mm_http_server *s)
{
    atomic_store(&s->draining, true);
    const MHD_socket fd = MHD_quiesce_daemon(s->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

int64_t mm_http_server_active(struct mm_http_server *s)
{
    pthread_mutex_lock(&s->lock);
    const int64_t n = s->n_jobs + s->n_offloaded;
    pthread_mutex_unlock(&s->lock);
    return n;
}

void mm_http_server_cancel_all(struct mm_http_server *s)
{
    pthread_mutex_lock(&s->lock);
    for (struct mm_http_exchange *ex = s->jobs; ex; ex = ex->next) {
        pthread_mutex_lock(&ex->lock);
        ex->cancelled = true;
        pthread_mutex_unlock(&ex->lock);
        ex->ops->cancel(ex->job);
    }
    pthread_mutex_unlock(&s->lock);
}

void mm_http_server_free(struct mm_http_server *s)
{
    if (!s)
        return;
    if (s->ticker_running) {
        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        pthread_cond_broadcast(&s->ticker_cond);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->ticker, NULL);
    }
    /* workers finish what is queued (each resumes its connection), then stop */
    pthread_mutex_lock(&s->lock);
    s->workers_stop = true;
    pthread_cond_broadcast(&s->work_cond);
    pthread_mutex_unlock(&s->lock);
    for (int i = 0; i < s->n_workers; i++)
        pthread_join(s->workers[i], NULL);
    free(s->workers);
    if (s->mhd) {
        /* libmicrohttpd must not be stopped with suspended connections */
        atomic_store(&s->closing, true);
        pthread_mutex_lock(&s->lock);
        for (struct mm_http_exchange *ex = s->jobs; ex; ex = ex->next) {
            pthread_mutex_lock(&ex->lock);
            if (ex->suspended) {
                ex->suspended = false;
                MHD_resume_connection(ex->conn);
            }
            pthread_mutex_unlock(&ex->lock);
        }
        pthread_mutex_unlock(&s->lock);
        MHD_stop_daemon(s->mhd);
    }
    pthread_cond_destroy(&s->work_cond);
    pthread_cond_destroy(&s->ticker_cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
