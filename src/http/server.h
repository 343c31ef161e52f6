/* server.h: the HTTP front of the daemon: a libmicrohttpd server with the
 * OpenAI routes, limits, auth, access log and streaming.
 *
 * Design: a few event-loop threads (libmicrohttpd's thread pool, each on
 * epoll) hold every connection; none is ever given a thread of its own. A
 * request waiting for the engine is suspended (MHD_suspend_connection) and
 * resumed by the engine thread's notify hook when tokens arrive, so idle
 * and streaming connections cost no CPU. JSON lives only in this layer.
 *
 * Thread contract: create/start/drain/stop from the daemon's main thread
 * only; mm_http_server_draining may be read from anywhere. */
#ifndef MM_HTTP_SERVER_H
#define MM_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "http/app.h"

struct mm_http_options {
    const char *host; /* numeric IPv4/IPv6 address */
    uint16_t port;    /* 0: any free port (see mm_http_server_port) */
    int threads;
    unsigned max_connections;
    unsigned connection_timeout_s;
    size_t max_header_bytes;
    size_t max_body_bytes;
    bool access_log;
    int64_t ping_interval_ms;
};

struct mm_http_server;

/* Binds and starts serving. app is borrowed and must outlive the server.
 * *out is the caller's (mm_http_server_free). */
enum mm_status mm_http_server_start(const struct mm_http_options *opt, struct mm_http_app *app,
                                    struct mm_http_server **out, struct mm_err *err);

/* The bound port (useful with port 0). */
uint16_t mm_http_server_port(const struct mm_http_server *s);

/* Stops accepting connections; /health turns 503 and new requests on open
 * connections get 503. */
void mm_http_server_quiesce(struct mm_http_server *s);

/* Requests still being generated or streamed. */
int64_t mm_http_server_active(struct mm_http_server *s);

/* Cancels every request in flight (their streams end, their clients get
 * their answers cut short). */
void mm_http_server_cancel_all(struct mm_http_server *s);

/* Closes every connection and frees the server. NULL is fine. */
void mm_http_server_free(struct mm_http_server *s);

#endif
