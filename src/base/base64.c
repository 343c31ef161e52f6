/* base64.c: strict base64 decoding (see base64.h for the accepted syntax).
 *
 * Design: one pass over the input with a 256-entry lookup table; quads are
 * decoded as soon as four alphabet characters have been seen, so whitespace
 * can sit anywhere without a copy. */
#include "base/base64.h"

#include <stdlib.h>

enum { B64_BAD = -1, B64_WS = -2, B64_PAD = -3 };

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    if (c == '=')
        return B64_PAD;
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
        return B64_WS;
    return B64_BAD;
}

size_t mm_base64_decoded_max(size_t n)
{
    return n / 4 * 3 + 3;
}

enum mm_status mm_base64_decode(const char *in, size_t n, uint8_t *out, size_t cap,
                                size_t *out_len, struct mm_err *err)
{
    uint32_t quad = 0; /* up to four 6-bit values, most significant first */
    int nq = 0;        /* alphabet characters in the current quad */
    int npad = 0;      /* '=' seen (only at the end) */
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)in[i];
        const int v = b64_value(c);
        if (v == B64_WS)
            continue;
        if (v == B64_BAD) {
            if (c >= 0x20 && c < 0x7f)
                return mm_err_set(err, MM_ERR_FORMAT,
                                  "base64: invalid character '%c' at offset %zu", c, i);
            return mm_err_set(err, MM_ERR_FORMAT, "base64: invalid byte 0x%02x at offset %zu", c,
                              i);
        }
        if (v == B64_PAD) {
            if (nq < 2 || nq + npad >= 4)
                return mm_err_set(err, MM_ERR_FORMAT, "base64: misplaced '=' at offset %zu", i);
            npad++;
            continue;
        }
        if (npad)
            return mm_err_set(err, MM_ERR_FORMAT, "base64: data after '=' padding at offset %zu",
                              i);
        quad = quad << 6 | (uint32_t)v;
        if (++nq == 4) {
            if (cap - len < 3)
                return mm_err_set(err, MM_ERR_LIMIT, "base64: decoded data exceeds %zu bytes",
                                  cap);
            out[len++] = (uint8_t)(quad >> 16);
            out[len++] = (uint8_t)(quad >> 8);
            out[len++] = (uint8_t)quad;
            quad = 0;
            nq = 0;
        }
    }
    if (npad) {
        if (nq + npad != 4)
            return mm_err_set(err, MM_ERR_FORMAT, "base64: incomplete padding at the end");
        /* nq == 2: 12 bits, 1 byte + 4 zero bits; nq == 3: 18 bits, 2 bytes + 2 zero bits */
        const int extra_bits = nq == 2 ? 4 : 2;
        if (quad & ((1u << extra_bits) - 1))
            return mm_err_set(err, MM_ERR_FORMAT,
                              "base64: non-zero bits before padding (not canonical)");
        quad >>= extra_bits;
        const size_t nbytes = nq == 2 ? 1 : 2;
        if (cap - len < nbytes)
            return mm_err_set(err, MM_ERR_LIMIT, "base64: decoded data exceeds %zu bytes", cap);
        if (nbytes == 2)
            out[len++] = (uint8_t)(quad >> 8);
        out[len++] = (uint8_t)quad;
    } else if (nq != 0) {
        return mm_err_set(err, MM_ERR_FORMAT,
                          "base64: length is not a multiple of 4 (missing '=' padding?)");
    }
    *out_len = len;
    return MM_OK;
}

enum mm_status mm_base64_decode_alloc(const char *in, size_t n, size_t max_out, uint8_t **out,
                                      size_t *out_len, struct mm_err *err)
{
    *out = NULL;
    /* Whitespace makes the real size smaller, so bound by the non-space count. */
    size_t chars = 0;
    for (size_t i = 0; i < n; i++)
        chars += b64_value((unsigned char)in[i]) != B64_WS;
    const size_t need = chars / 4 * 3;
    if (need > max_out)
        return mm_err_set(err, MM_ERR_LIMIT,
                          "base64: decoded data would be %zu bytes, more than the limit of %zu",
                          need, max_out);
    uint8_t *buf = malloc(need ? need : 1);
    if (!buf)
        return mm_err_set(err, MM_ERR_NOMEM, "base64: cannot allocate %zu bytes", need);
    const enum mm_status st = mm_base64_decode(in, n, buf, need, out_len, err);
    if (st != MM_OK) {
        free(buf);
        return st;
    }
    *out = buf;
    return MM_OK;
}
