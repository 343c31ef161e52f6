/* sse.c: the text/event-stream parser of sse.h.
 *
 * Design: bytes go into a line buffer; each complete line (ended by \n, \r or
 * \r\n) is interpreted by the spec's field rules, and a blank line dispatches
 * the event. Only "data" matters to an OpenAI client; "event", "id" and
 * "retry" are accepted and ignored. */
#include "loadgen/sse.h"

#include <stdlib.h>
#include <string.h>

void mm_sse_init(struct mm_sse *p, size_t max_event_bytes, mm_sse_event_fn on_event, void *user)
{
    memset(p, 0, sizeof(*p));
    p->max_event_bytes = max_event_bytes;
    p->on_event = on_event;
    p->user = user;
}

void mm_sse_free(struct mm_sse *p)
{
    free(p->line);
    free(p->data);
    p->line = p->data = NULL;
    p->line_len = p->line_cap = p->data_len = p->data_cap = 0;
}

/* Makes room for `extra` more bytes plus a NUL in *buf, within max. */
static enum mm_status reserve(char **buf, size_t *cap, size_t len, size_t extra, size_t max,
                              struct mm_err *err)
{
    if (extra > max || len > max - extra)
        return mm_err_set(err, MM_ERR_LIMIT, "SSE event larger than %zu bytes", max);
    const size_t need = len + extra + 1;
    if (need <= *cap)
        return MM_OK;
    size_t cap2 = *cap ? *cap : 256;
    while (cap2 < need)
        cap2 = cap2 > max ? need : cap2 * 2;
    char *b = realloc(*buf, cap2);
    if (!b)
        return mm_err_set(err, MM_ERR_NOMEM, "SSE buffer of %zu bytes", cap2);
    *buf = b;
    *cap = cap2;
    return MM_OK;
}

static enum mm_status dispatch(struct mm_sse *p, struct mm_err *err)
{
    if (!p->has_data)
        return MM_OK; /* a blank line after comments or other fields only */
    p->has_data = false;
    const size_t len = p->data_len;
    p->data_len = 0;
    p->n_events++;
    p->data[len] = '\0';
    const enum mm_status st = p->on_event(p->user, p->data, len);
    if (st != MM_OK)
        mm_err_set(err, st, "the SSE event handler stopped the stream");
    return st;
}

/* One complete line, without its terminator, sits in p->line. */
static enum mm_status process_line(struct mm_sse *p, struct mm_err *err)
{
    const char *line = p->line ? p->line : "";
    const size_t len = p->line_len;
    p->line_len = 0;
    if (len == 0)
        return dispatch(p, err);
    if (line[0] == ':') {
        p->n_comments++;
        return MM_OK;
    }
    const char *colon = memchr(line, ':', len);
    const size_t name_len = colon ? (size_t)(colon - line) : len;
    if (name_len != 4 || memcmp(line, "data", 4) != 0)
        return MM_OK; /* event:, id:, retry: and unknown fields */
    const char *value = colon ? colon + 1 : line + len;
    size_t value_len = (size_t)(line + len - value);
    if (value_len > 0 && value[0] == ' ') {
        value++;
        value_len--;
    }
    const size_t sep = p->has_data ? 1 : 0;
    enum mm_status st =
        reserve(&p->data, &p->data_cap, p->data_len, value_len + sep, p->max_event_bytes, err);
    if (st != MM_OK)
        return st;
    if (sep)
        p->data[p->data_len++] = '\n';
    memcpy(p->data + p->data_len, value, value_len);
    p->data_len += value_len;
    p->has_data = true;
    return MM_OK;
}

enum mm_status mm_sse_feed(struct mm_sse *p, const char *buf, size_t n, struct mm_err *err)
{
    size_t i = 0;
    while (i < n) {
        if (p->after_cr && buf[i] == '\n') { /* the \n of a \r\n split across feeds */
            p->after_cr = false;
            i++;
            continue;
        }
        p->after_cr = false;
        /* Copy the run up to the next line terminator in one go. */
        size_t j = i;
        while (j < n && buf[j] != '\n' && buf[j] != '\r')
            j++;
        if (j > i) {
            enum mm_status st =
                reserve(&p->line, &p->line_cap, p->line_len, j - i, p->max_event_bytes, err);
            if (st != MM_OK)
                return st;
            memcpy(p->line + p->line_len, buf + i, j - i);
            p->line_len += j - i;
        }
        if (j == n)
            break;
        p->after_cr = buf[j] == '\r';
        i = j + 1;
        const enum mm_status st = process_line(p, err);
        if (st != MM_OK)
            return st;
    }
    return MM_OK;
}
