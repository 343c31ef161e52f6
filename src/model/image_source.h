/* image_source.h: where an image's bytes come from, given the URL string a
 * client sent: `data:image/...;base64,...`, `file://` (only inside a
 * directory the operator allow-listed), or http(s) (refused).
 *
 * Design: the URL is untrusted. data: URLs are decoded strictly and bounded
 * before allocating; file:// paths are resolved with realpath and must stay
 * under the allow-listed directory after every symlink is followed, so a
 * link cannot escape it; remote URLs are refused outright, since the server
 * has no fetcher (fetching arbitrary URLs would also make it an SSRF proxy).
 * No JSON here: plain C strings in, bytes out.
 *
 * Thread contract: no shared state; callable from any thread. */
#ifndef MM_MODEL_IMAGE_SOURCE_H
#define MM_MODEL_IMAGE_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* Operator policy (server configuration). Borrowed for the call. */
struct mm_image_source_policy {
    const char *file_root; /* directory file:// URLs may read from; NULL refuses file:// */
    size_t max_bytes;      /* encoded image size limit (0: MM_IMAGE_DEFAULT_MAX_BYTES) */
};

enum mm_image_source_kind {
    MM_IMAGE_SOURCE_DATA = 0, /* data:image/...;base64,... */
    MM_IMAGE_SOURCE_FILE,     /* file:///path */
};

/* The encoded image bytes; owned by the caller, released with
 * mm_image_bytes_free. */
struct mm_image_bytes {
    enum mm_image_source_kind kind;
    uint8_t *data;
    size_t len;
    char media_type[64]; /* from a data: URL ("image/png"), else "" */
};

/* Fetches the bytes that url names, under policy pol (NULL: defaults, no
 * file://). Errors: MM_ERR_UNSUPPORTED (remote or unknown scheme, non-base64
 * data URL, file:// not enabled), MM_ERR_INVALID (malformed URL, path outside
 * the allowed directory), MM_ERR_FORMAT (bad base64), MM_ERR_NOT_FOUND,
 * MM_ERR_IO, MM_ERR_LIMIT (too large). On failure *out owns nothing. */
enum mm_status mm_image_source_load(const char *url, const struct mm_image_source_policy *pol,
                                    struct mm_image_bytes *out, struct mm_err *err);

/* Reads a whole local file named by the operator (no allow-list; for the
 * CLI), at most max_bytes (0: default). */
enum mm_status mm_image_source_read_file(const char *path, size_t max_bytes,
                                         struct mm_image_bytes *out, struct mm_err *err);

void mm_image_bytes_free(struct mm_image_bytes *b);

#endif
