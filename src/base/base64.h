/* base64.h: strict decoding of standard base64 (RFC 4648 §4), as used by
 * `data:` image URLs.
 *
 * Design: strict, so that a corrupted upload fails loudly instead of turning
 * into a subtly different image. The alphabet is A-Z a-z 0-9 + / only (no
 * URL-safe - _); the encoded length (whitespace excluded) must be a multiple
 * of 4; '=' may appear only as one or two final padding characters; the
 * unused bits before padding must be zero (canonical encoding).
 * Whitespace policy: ASCII space, tab, CR and LF are skipped anywhere (MIME
 * line wrapping); any other byte outside the alphabet is an error that
 * names its offset. Pure functions; callable from any thread. */
#ifndef MM_BASE_BASE64_H
#define MM_BASE_BASE64_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* An upper bound of the decoded size of n encoded characters (n / 4 * 3,
 * plus 3); never overflows. */
size_t mm_base64_decoded_max(size_t n);

/* Decodes in[0..n) into out (capacity cap bytes, caller-owned); writes the
 * decoded length to *out_len. MM_ERR_FORMAT on malformed input (message says
 * what and where), MM_ERR_LIMIT if the result would exceed cap. */
enum mm_status mm_base64_decode(const char *in, size_t n, uint8_t *out, size_t cap,
                                size_t *out_len, struct mm_err *err);

/* Like mm_base64_decode but allocates the output; refuses (MM_ERR_LIMIT,
 * before allocating) input whose decoded size could exceed max_out. On
 * success the caller owns *out (free()); on failure *out is NULL. */
enum mm_status mm_base64_decode_alloc(const char *in, size_t n, size_t max_out, uint8_t **out,
                                      size_t *out_len, struct mm_err *err);

#endif
