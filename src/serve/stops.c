/* stops.c: stop strings across token boundaries (see stops.h). */
#include "serve/stops.h"

#include <stdlib.h>
#include <string.h>

enum mm_status mm_stops_init(struct mm_stops *m, const char *const *stop, int n_stop,
                             struct mm_err *err)
{
    memset(m, 0, sizeof *m);
    m->stop = stop;
    m->n_stop = n_stop;
    size_t longest = 0;
    if (n_stop > 0) {
        m->stop_len = malloc((size_t)n_stop * sizeof *m->stop_len);
        if (!m->stop_len)
            return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        for (int i = 0; i < n_stop; i++) {
            m->stop_len[i] = strlen(stop[i]);
            longest = m->stop_len[i] > longest ? m->stop_len[i] : longest;
        }
    }
    m->cap = 2 * longest + 64; /* grows if a token's text is longer */
    m->buf = malloc(m->cap);
    if (!m->buf) {
        mm_stops_free(m);
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    }
    return MM_OK;
}

void mm_stops_free(struct mm_stops *m)
{
    free(m->stop_len);
    free(m->buf);
    m->stop_len = NULL;
    m->buf = NULL;
}

/* Length of the longest tail of buf[0..len) that begins a stop string
 * (shorter than that string: a whole one is a match, found before). */
static size_t held_tail(const struct mm_stops *m)
{
    size_t best = 0;
    for (int i = 0; i < m->n_stop; i++) {
        const size_t sl = m->stop_len[i];
        for (size_t k = (sl - 1 < m->len ? sl - 1 : m->len); k > best; k--)
            if (memcmp(m->buf + m->len - k, m->stop[i], k) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

enum mm_status mm_stops_feed(struct mm_stops *m, const char *text, size_t len, const char **out,
                             size_t *out_len, bool *matched, struct mm_err *err)
{
    *matched = false;
    /* drop what the previous call released */
    memmove(m->buf, m->buf + m->released, m->len - m->released);
    m->len -= m->released;
    m->released = 0;
    if (m->len + len > m->cap) {
        size_t cap = 2 * (m->len + len);
        char *nb = realloc(m->buf, cap);
        if (!nb)
            return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        m->buf = nb;
        m->cap = cap;
    }
    memcpy(m->buf + m->len, text, len);
    m->len += len;
    /* the earliest complete stop string wins */
    size_t at = m->len;
    for (int i = 0; i < m->n_stop; i++) {
        const char *p = memmem(m->buf, m->len, m->stop[i], m->stop_len[i]);
        if (p && (size_t)(p - m->buf) < at) {
            at = (size_t)(p - m->buf);
            *matched = true;
        }
    }
    if (*matched) {
        m->len = at; /* the stop string and anything after it are dropped */
        m->released = at;
    } else {
        m->released = m->len - held_tail(m);
    }
    *out = m->buf;
    *out_len = m->released;
    return MM_OK;
}

enum mm_status mm_stops_finish(struct mm_stops *m, const char *text, size_t len, const char **out,
                               size_t *out_len, bool *matched, struct mm_err *err)
{
    enum mm_status st = mm_stops_feed(m, text, len, out, out_len, matched, err);
    if (st == MM_OK && !*matched)
        *out_len = m->released = m->len;
    return st;
}
