/* sse.h: an incremental parser for text/event-stream bodies (the WHATWG
 * "server-sent events" framing OpenAI-style servers stream with).
 *
 * Design: the parser is fed whatever bytes the transport hands over, split
 * anywhere (inside a line, between \r and \n), and calls back once per
 * complete event with its data lines joined by '\n'. Comment lines (": ping")
 * are counted, not delivered. Memory is bounded: an event or line longer than
 * max_event_bytes fails the feed instead of growing without limit. One parser
 * per stream; not thread-safe (one thread drives a stream). */
#ifndef MM_LOADGEN_SSE_H
#define MM_LOADGEN_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* Called once per dispatched event. `data` is NUL-terminated, borrowed for the
 * call only. Return MM_OK to go on; anything else stops the feed with it. */
typedef enum mm_status (*mm_sse_event_fn)(void *user, const char *data, size_t len);

struct mm_sse {
    char *line; /* the current, unterminated line */
    size_t line_len, line_cap;
    char *data; /* data lines of the event being assembled, '\n'-joined */
    size_t data_len, data_cap;
    bool has_data; /* at least one data: line since the last dispatch */
    bool after_cr; /* the previous byte was '\r' (a following '\n' is skipped) */
    size_t max_event_bytes;
    int64_t n_events;   /* events dispatched */
    int64_t n_comments; /* comment lines seen (keep-alive pings) */
    mm_sse_event_fn on_event;
    void *user;
};

/* Prepares an empty parser; allocates nothing until bytes arrive. */
void mm_sse_init(struct mm_sse *p, size_t max_event_bytes, mm_sse_event_fn on_event, void *user);

/* Parses n more bytes. Returns MM_OK, MM_ERR_LIMIT when an event outgrows
 * max_event_bytes, MM_ERR_NOMEM, or the status a callback returned (the
 * parser must not be fed again after a failure). */
enum mm_status mm_sse_feed(struct mm_sse *p, const char *buf, size_t n, struct mm_err *err);

/* Frees the buffers; the struct may be init'ed again. */
void mm_sse_free(struct mm_sse *p);

#endif
