/* image_decode.h: JPEG and PNG bytes in memory -> 8-bit RGB pixels, exactly
 * as the reference gets them from Pillow's Image.open(f).convert("RGB").
 *
 * Design: the output matches Pillow 9.4 bit for bit (the conformance test
 * compares against it), including its quirks: alpha is dropped, not
 * composited; palette and gray are expanded. One quirk is not copied: every
 * 16-bit type keeps its high byte, where Pillow opens 16-bit gray as mode "I"
 * and clips it to white (the test expects the high byte there); CMYK/YCCK JPEGs are always read with Adobe (inverted) polarity and
 * converted with Pillow's cmyk2rgb. Limits on the encoded size and on the
 * header's dimensions are checked before any pixel is decoded, so
 * decompression bombs cost nothing.
 *
 * Thread contract: no shared state; any thread may decode concurrently. */
#ifndef MM_MODEL_IMAGE_DECODE_H
#define MM_MODEL_IMAGE_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* Bounds applied before decoding; a field of 0 means "use the default". */
struct mm_image_decode_limits {
    size_t max_bytes;   /* encoded size (default 32 MiB) */
    int64_t max_pixels; /* width * height from the header (default 40,000,000) */
    int64_t max_side;   /* width and height each (default 16384) */
};

#define MM_IMAGE_DEFAULT_MAX_BYTES ((size_t)32 << 20)
#define MM_IMAGE_DEFAULT_MAX_PIXELS ((int64_t)40000000)
#define MM_IMAGE_DEFAULT_MAX_SIDE ((int64_t)16384)

enum mm_image_format {
    MM_IMAGE_FORMAT_UNKNOWN = 0,
    MM_IMAGE_FORMAT_JPEG,
    MM_IMAGE_FORMAT_PNG,
};

/* A decoded image. Owned by whoever filled it; release with mm_image_free. */
struct mm_image {
    int64_t width, height;
    uint8_t *rgb; /* [height][width][3], rows packed */
};

/* Sniffs the format from the first bytes (magic numbers). */
enum mm_image_format mm_image_sniff(const uint8_t *data, size_t len);

/* "jpeg", "png", "unknown". */
const char *mm_image_format_name(enum mm_image_format f);

/* Decodes data[0..len) (borrowed) into *out (which the caller then owns).
 * lim may be NULL for the defaults. Errors: MM_ERR_LIMIT (too many bytes or
 * pixels), MM_ERR_UNSUPPORTED (not JPEG/PNG, or an unsupported JPEG colour
 * layout), MM_ERR_FORMAT (corrupt or truncated data; the message carries the
 * library's text), MM_ERR_NOMEM. On failure *out is zeroed and owns nothing. */
enum mm_status mm_image_decode(const uint8_t *data, size_t len,
                               const struct mm_image_decode_limits *lim, struct mm_image *out,
                               struct mm_err *err);

/* Frees img->rgb and zeroes *img; NULL or an already freed image is fine. */
void mm_image_free(struct mm_image *img);

#endif
