/* detokenizer.c: streaming decode (see detokenizer.h).
 *
 * Byte pieces are held while they are a proper prefix of some valid UTF-8
 * character (the exact RFC 3629 ranges, e.g. E0 needs A0..BF next); a byte
 * that cannot start or continue one is emitted at once as U+FFFD, which is
 * what one-shot decoding decides for it whatever follows. */
#include "serve/detokenizer.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const char SPACE_SYMBOL[] = "\xe2\x96\x81";
static const char REPLACEMENT[] = "\xef\xbf\xbd";

struct mm_detok {
    const struct mm_tokenizer *tok;
    bool strip, strip_all; /* tokenizer's leading-space rules */
    bool is_bos_ws;        /* still at the start: a leading U+2581 is dropped */
    bool bos_ws_seen;      /* the previous piece's leading U+2581 was dropped */
    bool emitted;          /* any text produced so far */
    uint8_t pending[4];    /* bytes of an incomplete character */
    int n_pending;
    char *out; /* [cap + 1] */
    size_t n, cap;
};

static void put(struct mm_detok *d, const void *s, size_t n)
{
    memcpy(d->out + d->n, s, n); /* cap is sized for the largest step */
    d->n += n;
}

/* Length of a valid UTF-8 character at s (strict), 0 if invalid or incomplete. */
static size_t char_len(const uint8_t *s, size_t n)
{
    const uint8_t c = s[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0x80)
        return 1;
    else if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else
        return 0;
    if (n < need || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return need;
}

/* Whether s[0..n) (n short of a whole character) can still become one. */
static bool can_complete(const uint8_t *s, size_t n)
{
    uint8_t probe[4] = {s[0], 0, 0, 0};
    memcpy(probe, s, n);
    /* complete with the smallest allowed bytes and ask char_len */
    const uint8_t c = s[0];
    const uint8_t second = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
    for (size_t i = n; i < 4; i++)
        probe[i] = i == 1 ? second : 0x80;
    return char_len(probe, 4) > n;
}

/* Emits what the pending bytes decide; keeps a completable tail unless final. */
static void drain(struct mm_detok *d, bool final)
{
    int i = 0;
    while (i < d->n_pending) {
        const size_t left = (size_t)(d->n_pending - i);
        const size_t m = char_len(d->pending + i, left);
        if (m) {
            put(d, d->pending + i, m);
            i += (int)m;
        } else if (!final && can_complete(d->pending + i, left)) {
            break;
        } else {
            put(d, REPLACEMENT, 3);
            i++;
        }
    }
    memmove(d->pending, d->pending + i, (size_t)(d->n_pending - i));
    d->n_pending -= i;
}

void mm_detok_reset(struct mm_detok *d)
{
    d->is_bos_ws = true;
    d->bos_ws_seen = false;
    d->emitted = false;
    d->n_pending = 0;
    d->n = 0;
}

enum mm_status mm_detok_create(const struct mm_tokenizer *tok, struct mm_detok **out,
                               struct mm_err *err)
{
    *out = NULL;
    struct mm_detok *d = calloc(1, sizeof *d);
    if (!d)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    d->tok = tok;
    d->strip = mm_tokenizer_strips_leading_space(tok);
    d->strip_all = mm_tokenizer_strips_all_leading_spaces(tok);
    /* worst step: 3 pending bytes as U+FFFD each, then the longest piece */
    d->cap = mm_tokenizer_max_piece_len(tok) + 16;
    d->out = malloc(d->cap + 1);
    if (!d->out) {
        free(d);
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    }
    mm_detok_reset(d);
    *out = d;
    return MM_OK;
}

void mm_detok_free(struct mm_detok *d)
{
    if (!d)
        return;
    free(d->out);
    free(d);
}

enum mm_status mm_detok_feed(struct mm_detok *d, int32_t id, const char **text, size_t *len,
                             struct mm_err *err)
{
    struct mm_token_info info;
    d->n = 0;
    d->out[0] = '\0';
    *text = d->out;
    *len = 0;
    enum mm_status st = mm_tokenizer_id_info(d->tok, id, &info, err);
    if (st != MM_OK)
        return st;
    if (info.kind == MM_TOKEN_BYTE) {
        d->pending[d->n_pending++] = (uint8_t)info.byte;
        drain(d, false);
    } else {
        drain(d, true);
        if (d->bos_ws_seen || d->emitted || d->n > 0)
            d->is_bos_ws = false;
        d->bos_ws_seen = false;
        if (info.kind == MM_TOKEN_UNKNOWN || info.kind == MM_TOKEN_ADDED) {
            put(d, info.text, info.len);
        } else if (info.kind == MM_TOKEN_TEXT) {
            const char *p = info.text;
            size_t n = info.len;
            if (d->is_bos_ws && d->strip && n >= 3 && memcmp(p, SPACE_SYMBOL, 3) == 0) {
                p += 3;
                n -= 3;
                d->bos_ws_seen = !d->strip_all;
            }
            for (size_t k = 0; k < n; k++) {
                if (k + 3 <= n && memcmp(p + k, SPACE_SYMBOL, 3) == 0) {
                    put(d, " ", 1);
                    k += 2;
                } else {
                    put(d, p + k, 1);
                }
            }
        } /* MM_TOKEN_CONTROL: nothing */
    }
    d->emitted |= d->n > 0;
    d->out[d->n] = '\0';
    *len = d->n;
    return MM_OK;
}

const char *mm_detok_finish(struct mm_detok *d, size_t *len)
{
    d->n = 0;
    drain(d, true);
    d->out[d->n] = '\0';
    *len = d->n;
    /* reset everything but the output we are returning */
    d->is_bos_ws = true;
    d->bos_ws_seen = false;
    d->emitted = false;
    return d->out;
}
