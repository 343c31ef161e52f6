/* image_decode.c: JPEG (libjpeg-turbo) and PNG (libpng) decoding into RGB,
 * following Pillow 9.4's conversions (see image_decode.h).
 *
 * Design: both libraries report errors by longjmp. Each decoder keeps all of
 * its state in a context struct owned by the caller of the function that
 * calls setjmp, so nothing the cleanup path needs lives in a local that
 * longjmp could leave indeterminate; one cleanup path frees everything. */
#include "model/image_decode.h"

#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "base/checked.h"

enum mm_image_format mm_image_sniff(const uint8_t *data, size_t len)
{
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
        return MM_IMAGE_FORMAT_JPEG;
    if (len >= 8 && memcmp(data, png_magic, 8) == 0)
        return MM_IMAGE_FORMAT_PNG;
    return MM_IMAGE_FORMAT_UNKNOWN;
}

const char *mm_image_format_name(enum mm_image_format f)
{
    switch (f) {
    case MM_IMAGE_FORMAT_JPEG:
        return "jpeg";
    case MM_IMAGE_FORMAT_PNG:
        return "png";
    case MM_IMAGE_FORMAT_UNKNOWN:
        break;
    }
    return "unknown";
}

void mm_image_free(struct mm_image *img)
{
    if (!img)
        return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}

/* Names a few formats we do not decode, for a helpful message. */
static const char *other_format_name(const uint8_t *d, size_t n)
{
    if (n >= 6 && (memcmp(d, "GIF87a", 6) == 0 || memcmp(d, "GIF89a", 6) == 0))
        return "GIF";
    if (n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0)
        return "WebP";
    if (n >= 2 && d[0] == 'B' && d[1] == 'M')
        return "BMP";
    if (n >= 4 && (memcmp(d, "II*\0", 4) == 0 || memcmp(d, "MM\0*", 4) == 0))
        return "TIFF";
    if (n >= 12 && memcmp(d + 4, "ftyp", 4) == 0)
        return "HEIF/AVIF";
    return NULL;
}

/* Checks header dimensions against the limits and allocates the RGB output. */
static enum mm_status check_and_alloc(const char *fmt, int64_t w, int64_t h,
                                      const struct mm_image_decode_limits *lim,
                                      struct mm_image *out, struct mm_err *err)
{
    if (w <= 0 || h <= 0)
        return mm_err_set(err, MM_ERR_FORMAT, "%s: invalid dimensions %lldx%lld", fmt, (long long)w,
                          (long long)h);
    if (w > lim->max_side || h > lim->max_side)
        return mm_err_set(err, MM_ERR_LIMIT,
                          "%s: image is %lldx%lld, larger than the limit of %lld "
                          "pixels per side",
                          fmt, (long long)w, (long long)h, (long long)lim->max_side);
    int64_t px;
    if (!mm_i64_mul(w, h, &px) || px > lim->max_pixels)
        return mm_err_set(err, MM_ERR_LIMIT,
                          "%s: image is %lldx%lld, more than the limit of %lld pixels", fmt,
                          (long long)w, (long long)h, (long long)lim->max_pixels);
    size_t bytes;
    if (!mm_size_mul((size_t)px, 3, &bytes))
        return mm_err_set(err, MM_ERR_OVERFLOW, "%s: image size overflows", fmt);
    out->rgb = malloc(bytes);
    if (!out->rgb)
        return mm_err_set(err, MM_ERR_NOMEM, "%s: cannot allocate %zu bytes for %lldx%lld pixels",
                          fmt, bytes, (long long)w, (long long)h);
    out->width = w;
    out->height = h;
    return MM_OK;
}

/* ---- JPEG ------------------------------------------------------------------------ */

/* A hostile progressive JPEG can hold thousands of tiny scans, each costing a
 * full pass over the coefficients; real encoders write about ten. Besides a
 * scan count, the work is bounded: scans x samples (width x height x
 * components) may not exceed JPEG_MAX_SCAN_WORK, which still allows ~13
 * scans of a 40-megapixel CMYK image and ~55 of a 12-megapixel photo. */
#define JPEG_MAX_SCANS 500
#define JPEG_MAX_SCAN_WORK 2000000000.0

struct jpeg_ctx {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr jerr;
    struct jpeg_progress_mgr progress;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
    bool created;
    uint8_t *row; /* one scanline of the library's output (CMYK: 4 bytes/px) */
};

static void jpeg_fail(j_common_ptr cinfo)
{
    struct jpeg_ctx *c = (struct jpeg_ctx *)cinfo->client_data;
    cinfo->err->format_message(cinfo, c->msg);
    longjmp(c->jb, 1);
}

/* Warnings are ignored (as Pillow does) except two: running out of data
 * (libjpeg would pad with gray, Pillow refuses a truncated file) and a bogus
 * progression (repeated refinement scans: corrupt, and a CPU amplifier). */
static void jpeg_message(j_common_ptr cinfo, int level)
{
    if (level >= 0)
        return;
    struct jpeg_ctx *c = (struct jpeg_ctx *)cinfo->client_data;
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
        snprintf(c->msg, sizeof c->msg, "truncated data (premature end of JPEG file)");
        longjmp(c->jb, 1);
    }
    if (cinfo->err->msg_code == JWRN_BOGUS_PROGRESSION) {
        snprintf(c->msg, sizeof c->msg, "invalid progressive scan sequence");
        longjmp(c->jb, 1);
    }
}

static void jpeg_progress(j_common_ptr cinfo)
{
    const j_decompress_ptr d = (j_decompress_ptr)cinfo;
    const double samples = (double)d->image_width * d->image_height * d->num_components;
    if (d->input_scan_number > JPEG_MAX_SCANS ||
        (double)d->input_scan_number * samples > JPEG_MAX_SCAN_WORK) {
        struct jpeg_ctx *c = (struct jpeg_ctx *)cinfo->client_data;
        snprintf(c->msg, sizeof c->msg, "too many progressive scans (%d) for a %ux%u image",
                 d->input_scan_number, (unsigned)d->image_width, (unsigned)d->image_height);
        longjmp(c->jb, 1);
    }
}

/* Pillow's MULDIV255: a * b / 255 rounded, in integers. */
static inline int muldiv255(int a, int b)
{
    const int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

static inline uint8_t clip8(int v) { return (uint8_t)(v <= 0 ? 0 : v < 256 ? v : 255); }

/* Pillow reads CMYK JPEGs with rawmode "CMYK;I" (every channel inverted,
 * Adobe convention) and converts with cmyk2rgb: nk = 255 - K,
 * R = nk - C * nk / 255 (same for G, B). */
static void cmyk_row_to_rgb(const uint8_t *in, uint8_t *out, int64_t w)
{
    for (int64_t x = 0; x < w; x++, in += 4, out += 3) {
        const int nk = in[3]; /* 255 - (255 - stored K) */
        for (int ch = 0; ch < 3; ch++)
            out[ch] = clip8(nk - muldiv255(255 - in[ch], nk));
    }
}

/* Everything between jpeg_create and the last scanline; returns 0 or, after a
 * longjmp, 1 with c->msg set. Only c (not a local) carries state across. */
static int jpeg_run(struct jpeg_ctx *c, const uint8_t *data, size_t len,
                    const struct mm_image_decode_limits *lim, struct mm_image *out,
                    struct mm_err *err, enum mm_status *st)
{
    if (setjmp(c->jb))
        return 1;
    c->cinfo.err = jpeg_std_error(&c->jerr);
    c->jerr.error_exit = jpeg_fail;
    c->jerr.emit_message = jpeg_message;
    c->cinfo.client_data = c;
    jpeg_create_decompress(&c->cinfo);
    c->created = true;
    c->progress.progress_monitor = jpeg_progress;
    c->cinfo.progress = &c->progress;
    jpeg_mem_src(&c->cinfo, data, (unsigned long)len);
    jpeg_read_header(&c->cinfo, TRUE);

    const int nc = c->cinfo.num_components;
    switch (c->cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
        c->cinfo.out_color_space = JCS_GRAYSCALE;
        break;
    case JCS_YCbCr:
    case JCS_RGB:
        c->cinfo.out_color_space = JCS_RGB;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        c->cinfo.out_color_space = JCS_CMYK;
        break;
    default:
        *st = mm_err_set(err, MM_ERR_UNSUPPORTED, "jpeg: unsupported colour layout (%d components)",
                         nc);
        return 0;
    }
    *st = check_and_alloc("jpeg", c->cinfo.image_width, c->cinfo.image_height, lim, out, err);
    if (*st != MM_OK)
        return 0;
    jpeg_start_decompress(&c->cinfo);
    const int64_t w = out->width;
    if ((int64_t)c->cinfo.output_width != w || (int64_t)c->cinfo.output_height != out->height) {
        *st = mm_err_set(err, MM_ERR_FORMAT, "jpeg: output size differs from the header");
        return 0;
    }
    const int comps = c->cinfo.output_components;
    c->row = malloc((size_t)w * 4);
    if (!c->row) {
        *st = mm_err_set(err, MM_ERR_NOMEM, "jpeg: cannot allocate a scanline");
        return 0;
    }
    while (c->cinfo.output_scanline < c->cinfo.output_height) {
        const int64_t y = c->cinfo.output_scanline;
        uint8_t *dst = out->rgb + (size_t)y * (size_t)w * 3;
        JSAMPROW r = comps == 3 ? dst : c->row;
        if (jpeg_read_scanlines(&c->cinfo, &r, 1) != 1) {
            *st = mm_err_set(err, MM_ERR_FORMAT, "jpeg: truncated data");
            return 0;
        }
        if (comps == 1) {
            for (int64_t x = 0; x < w; x++)
                dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = c->row[x];
        } else if (comps == 4) {
            cmyk_row_to_rgb(c->row, dst, w);
        }
    }
    *st = MM_OK;
    return 0;
}

static enum mm_status decode_jpeg(const uint8_t *data, size_t len,
                                  const struct mm_image_decode_limits *lim, struct mm_image *out,
                                  struct mm_err *err)
{
    struct jpeg_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return mm_err_set(err, MM_ERR_NOMEM, "jpeg: cannot allocate the decoder");
    enum mm_status st = MM_ERR_FORMAT;
    if (jpeg_run(c, data, len, lim, out, err, &st))
        st = mm_err_set(err, MM_ERR_FORMAT, "jpeg: %s", c->msg);
    if (c->created)
        jpeg_destroy_decompress(&c->cinfo);
    free(c->row);
    free(c);
    return st;
}

/* ---- PNG ------------------------------------------------------------------------- */

struct png_ctx {
    png_structp png;
    png_infop info;
    const uint8_t *data;
    size_t len, pos;
    char msg[256];
    uint8_t *raw; /* palette indices, for the manual conversion */
    png_bytep *rows;
};

static void png_fail(png_structp png, png_const_charp msg)
{
    struct png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_warn(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static void png_read_mem(png_structp png, png_bytep dst, png_size_t n)
{
    struct png_ctx *c = png_get_io_ptr(png);
    if (n > c->len - c->pos)
        png_error(png, "truncated data (unexpected end of file)");
    memcpy(dst, c->data + c->pos, n);
    c->pos += n;
}

/* How the rows libpng hands back become RGB. */
enum png_layout {
    PNG_AS_RGB,     /* libpng transforms already give packed RGB8 */
    PNG_AS_PALETTE, /* 1 byte per pixel: palette index */
};

static int png_run(struct png_ctx *c, const struct mm_image_decode_limits *lim,
                   struct mm_image *out, struct mm_err *err, enum mm_status *st)
{
    if (setjmp(png_jmpbuf(c->png)))
        return 1;
    png_set_read_fn(c->png, c, png_read_mem);
    /* Our own limits give the clearer message; keep libpng's out of the way
     * except the per-chunk allocation cap, which bounds ancillary chunks. */
    png_set_user_limits(c->png, 0x7fffffff, 0x7fffffff);
    png_set_chunk_malloc_max(c->png, 16u << 20);
    png_read_info(c->png, c->info);
    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(c->png, c->info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    *st = check_and_alloc("png", w, h, lim, out, err);
    if (*st != MM_OK)
        return 0;

    enum png_layout layout = PNG_AS_RGB;
    size_t want_rowbytes = (size_t)w * 3;
    uint8_t pal[256][3];
    switch (ctype) {
    case PNG_COLOR_TYPE_PALETTE: {
        layout = PNG_AS_PALETTE;
        want_rowbytes = w;
        if (depth < 8)
            png_set_packing(c->png);
        /* Pillow's palette starts as a gray ramp; PLTE overwrites its head. */
        for (int i = 0; i < 256; i++)
            pal[i][0] = pal[i][1] = pal[i][2] = (uint8_t)i;
        png_colorp plte = NULL;
        int n = 0;
        if (png_get_PLTE(c->png, c->info, &plte, &n) & PNG_INFO_PLTE)
            for (int i = 0; i < n && i < 256; i++) {
                pal[i][0] = plte[i].red;
                pal[i][1] = plte[i].green;
                pal[i][2] = plte[i].blue;
            }
        break;
    }
    case PNG_COLOR_TYPE_GRAY:
        /* 16-bit gray keeps its high byte like every other 16-bit type (Pillow
         * instead opens it as mode "I" and clips it to white: not copied) */
        png_set_strip_16(c->png);
        png_set_gray_to_rgb(c->png); /* also scales 1/2/4-bit gray to 8 bits */
        break;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
        png_set_strip_16(c->png); /* keeps the high byte */
        png_set_strip_alpha(c->png);
        png_set_gray_to_rgb(c->png);
        break;
    case PNG_COLOR_TYPE_RGB:
    case PNG_COLOR_TYPE_RGB_ALPHA:
        png_set_strip_16(c->png);
        png_set_strip_alpha(c->png);
        break;
    default:
        *st = mm_err_set(err, MM_ERR_FORMAT, "png: unknown colour type %d", ctype);
        return 0;
    }
    png_set_interlace_handling(c->png);
    png_read_update_info(c->png, c->info);
    if (png_get_rowbytes(c->png, c->info) != want_rowbytes) {
        *st = mm_err_set(err, MM_ERR_FORMAT, "png: unexpected row size %zu (want %zu)",
                         (size_t)png_get_rowbytes(c->png, c->info), want_rowbytes);
        return 0;
    }
    uint8_t *base = out->rgb;
    if (layout != PNG_AS_RGB) {
        c->raw = malloc(want_rowbytes * h); /* 1 byte/px < the checked 3 bytes/px */
        if (!c->raw) {
            *st =
                mm_err_set(err, MM_ERR_NOMEM, "png: cannot allocate %zu bytes", want_rowbytes * h);
            return 0;
        }
        base = c->raw;
    }
    c->rows = malloc(sizeof *c->rows * h);
    if (!c->rows) {
        *st = mm_err_set(err, MM_ERR_NOMEM, "png: cannot allocate row pointers");
        return 0;
    }
    for (png_uint_32 y = 0; y < h; y++)
        c->rows[y] = base + (size_t)y * want_rowbytes;
    png_read_image(c->png, c->rows);

    const size_t n = (size_t)w * h;
    if (layout == PNG_AS_PALETTE) {
        for (size_t i = 0; i < n; i++)
            memcpy(out->rgb + 3 * i, pal[c->raw[i]], 3);
    }
    *st = MM_OK;
    return 0;
}

static enum mm_status decode_png(const uint8_t *data, size_t len,
                                 const struct mm_image_decode_limits *lim, struct mm_image *out,
                                 struct mm_err *err)
{
    struct png_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return mm_err_set(err, MM_ERR_NOMEM, "png: cannot allocate the decoder");
    c->data = data;
    c->len = len;
    enum mm_status st = MM_ERR_FORMAT;
    c->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, png_fail, png_warn);
    if (c->png)
        c->info = png_create_info_struct(c->png);
    if (!c->png || !c->info)
        st = mm_err_set(err, MM_ERR_NOMEM, "png: cannot create the decoder");
    else if (png_run(c, lim, out, err, &st))
        st = mm_err_set(err, MM_ERR_FORMAT, "png: %s", c->msg);
    if (c->png)
        png_destroy_read_struct(&c->png, c->info ? &c->info : NULL, NULL);
    free(c->raw);
    free(c->rows);
    free(c);
    return st;
}

/* ---- entry point ----------------------------------------------------------------- */

enum mm_status mm_image_decode(const uint8_t *data, size_t len,
                               const struct mm_image_decode_limits *lim, struct mm_image *out,
                               struct mm_err *err)
{
    memset(out, 0, sizeof *out);
    struct mm_image_decode_limits l = {
        .max_bytes = lim && lim->max_bytes ? lim->max_bytes : MM_IMAGE_DEFAULT_MAX_BYTES,
        .max_pixels = lim && lim->max_pixels > 0 ? lim->max_pixels : MM_IMAGE_DEFAULT_MAX_PIXELS,
        .max_side = lim && lim->max_side > 0 ? lim->max_side : MM_IMAGE_DEFAULT_MAX_SIDE,
    };
    if (len == 0)
        return mm_err_set(err, MM_ERR_FORMAT, "image: empty data");
    if (len > l.max_bytes)
        return mm_err_set(err, MM_ERR_LIMIT, "image: %zu bytes, more than the limit of %zu", len,
                          l.max_bytes);
    enum mm_status st;
    switch (mm_image_sniff(data, len)) {
    case MM_IMAGE_FORMAT_JPEG:
        st = decode_jpeg(data, len, &l, out, err);
        break;
    case MM_IMAGE_FORMAT_PNG:
        st = decode_png(data, len, &l, out, err);
        break;
    default: {
        const char *other = other_format_name(data, len);
        if (other)
            return mm_err_set(err, MM_ERR_UNSUPPORTED,
                              "image: %s is not supported (send JPEG or PNG)", other);
        return mm_err_set(err, MM_ERR_UNSUPPORTED, "image: unrecognised format (not JPEG or PNG)");
    }
    }
    if (st != MM_OK)
        mm_image_free(out);
    return st;
}
