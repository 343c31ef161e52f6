/* check_image_decode.c: JPEG/PNG decoding of model/image_decode.c on images
 * encoded here with libpng and libjpeg: colour conversions as Pillow does
 * them, limits checked before decoding, and corrupt data refused cleanly. */
#include "model/image_decode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>

#include "testutil.h"

/* ---- encoders -------------------------------------------------------------------- */

struct membuf {
    uint8_t *p;
    size_t n, cap;
};

static void png_write_mem(png_structp png, png_bytep data, png_size_t n)
{
    struct membuf *b = png_get_io_ptr(png);
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void png_flush_mem(png_structp png) { (void)png; }

/* Encodes rows of packed samples (rowbytes each) as a PNG in memory. */
static struct membuf encode_png(int w, int h, int depth, int ctype, int interlace,
                                const uint8_t *samples, size_t rowbytes, const png_color *pal,
                                int npal)
{
    struct membuf b = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    ck_assert(png && info);
    ck_assert_int_eq(setjmp(png_jmpbuf(png)), 0);
    png_set_write_fn(png, &b, png_write_mem, png_flush_mem);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, ctype,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (pal) {
        png_set_PLTE(png, info, pal, npal);
        png_set_check_for_invalid_index(png, 0); /* allow indices past a short palette */
    }
    png_write_info(png, info);
    png_bytep *rows = malloc(sizeof *rows * (size_t)h);
    for (int y = 0; y < h; y++)
        rows[y] = (png_bytep)(samples + (size_t)y * rowbytes);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    return b;
}

/* Encodes w x h samples of `comps` components in colour space cs as JPEG.
 * progressive: 0 baseline, 1 libjpeg's standard progression, 2 (one
 * component) a legal but long progression: DC + 63 single-coefficient scans. */
static struct membuf encode_jpeg(int w, int h, int comps, J_COLOR_SPACE in_cs,
                                 J_COLOR_SPACE jpeg_cs, int quality, int progressive,
                                 const uint8_t *samples)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    unsigned char *out = NULL;
    unsigned long n = 0;
    jpeg_mem_dest(&c, &out, &n);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = comps;
    c.in_color_space = in_cs;
    jpeg_set_defaults(&c);
    jpeg_set_colorspace(&c, jpeg_cs);
    jpeg_set_quality(&c, quality, TRUE);
    static jpeg_scan_info one_per_coefficient[64];
    if (progressive == 2) {
        for (int i = 0; i < 64; i++)
            one_per_coefficient[i] =
                (jpeg_scan_info){.comps_in_scan = 1, .component_index = {0}, .Ss = i, .Se = i};
        c.scan_info = one_per_coefficient;
        c.num_scans = 64;
    } else if (progressive) {
        jpeg_simple_progression(&c);
    }
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW r = (JSAMPROW)(samples + (size_t)c.next_scanline * (size_t)w * (size_t)comps);
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    struct membuf b = {.p = malloc(n), .n = n, .cap = n};
    memcpy(b.p, out, n);
    free(out);
    return b;
}

static uint8_t pattern(int x, int y, int ch)
{
    return (uint8_t)((x * 37 + y * 11 + ch * 85) & 255);
}

static void decode_ok(const struct membuf *b, int w, int h, struct mm_image *img)
{
    struct mm_err err = {0};
    ck_assert_msg(mm_image_decode(b->p, b->n, NULL, img, &err) == MM_OK, "%s", err.msg);
    ck_assert_int_eq(img->width, w);
    ck_assert_int_eq(img->height, h);
}

/* ---- PNG ------------------------------------------------------------------------- */

START_TEST(test_png_rgb_and_interlaced)
{
    const int w = 13, h = 9;
    uint8_t px[9][13 * 3];
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int ch = 0; ch < 3; ch++)
                px[y][3 * x + ch] = pattern(x, y, ch);
    for (int inter = 0; inter < 2; inter++) {
        struct membuf b =
            encode_png(w, h, 8, PNG_COLOR_TYPE_RGB, inter, &px[0][0], sizeof px[0], NULL, 0);
        ck_assert_int_eq(mm_image_sniff(b.p, b.n), MM_IMAGE_FORMAT_PNG);
        struct mm_image img;
        decode_ok(&b, w, h, &img);
        ck_assert(memcmp(img.rgb, px, sizeof px) == 0);
        mm_image_free(&img);
        mm_image_free(&img); /* twice is harmless */
        free(b.p);
    }
}
END_TEST

START_TEST(test_png_alpha_dropped_16bit_high_byte)
{
    const int w = 5, h = 4;
    uint8_t rgba[4][5 * 4], rgba16[4][5 * 8], ga16[4][5 * 4];
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            for (int ch = 0; ch < 4; ch++) {
                const uint8_t v = ch == 3 ? (uint8_t)(x * 60) : pattern(x, y, ch);
                rgba[y][4 * x + ch] = v;
                rgba16[y][8 * x + 2 * ch] = v;                      /* high byte */
                rgba16[y][8 * x + 2 * ch + 1] = (uint8_t)(255 - v); /* low byte: ignored */
            }
            ga16[y][4 * x] = pattern(x, y, 0);
            ga16[y][4 * x + 1] = 0xff;
            ga16[y][4 * x + 2] = 0;
            ga16[y][4 * x + 3] = 7;
        }
    const uint8_t *src[3] = {&rgba[0][0], &rgba16[0][0], &ga16[0][0]};
    const size_t rb[3] = {sizeof rgba[0], sizeof rgba16[0], sizeof ga16[0]};
    const int depth[3] = {8, 16, 16};
    const int ctype[3] = {PNG_COLOR_TYPE_RGB_ALPHA, PNG_COLOR_TYPE_RGB_ALPHA,
                          PNG_COLOR_TYPE_GRAY_ALPHA};
    for (int k = 0; k < 3; k++) {
        struct membuf b = encode_png(w, h, depth[k], ctype[k], 0, src[k], rb[k], NULL, 0);
        struct mm_image img;
        decode_ok(&b, w, h, &img);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int ch = 0; ch < 3; ch++) {
                    const uint8_t want = k == 2 ? pattern(x, y, 0) : pattern(x, y, ch);
                    ck_assert_uint_eq(img.rgb[(y * w + x) * 3 + ch], want);
                }
        mm_image_free(&img);
        free(b.p);
    }
}
END_TEST

START_TEST(test_png_gray_depths)
{
    /* 2-bit gray scales by 85; 16-bit gray keeps its high byte (not Pillow's clip) */
    const int w = 4, h = 1;
    const uint8_t g2[1] = {0x1b}; /* 0,1,2,3 */
    struct membuf b = encode_png(w, h, 2, PNG_COLOR_TYPE_GRAY, 0, g2, 1, NULL, 0);
    struct mm_image img;
    decode_ok(&b, w, h, &img);
    for (int x = 0; x < 4; x++)
        for (int ch = 0; ch < 3; ch++)
            ck_assert_uint_eq(img.rgb[3 * x + ch], 85 * x);
    mm_image_free(&img);
    free(b.p);

    const uint8_t g16[8] = {0x00, 0xc8, 0x00, 0xff, 0x01, 0x2c, 0xff, 0xff}; /* 200 255 300 65535 */
    b = encode_png(w, h, 16, PNG_COLOR_TYPE_GRAY, 0, g16, 8, NULL, 0);
    decode_ok(&b, w, h, &img);
    const uint8_t want[4] = {0, 0, 1, 255};
    for (int x = 0; x < 4; x++)
        ck_assert_uint_eq(img.rgb[3 * x], want[x]);
    mm_image_free(&img);
    free(b.p);
}
END_TEST

START_TEST(test_png_palette_short)
{
    /* Indices past a short PLTE take Pillow's initial gray ramp. */
    const png_color pal[2] = {{10, 20, 30}, {40, 50, 60}};
    const uint8_t idx[4] = {0, 1, 7, 200};
    struct membuf b = encode_png(4, 1, 8, PNG_COLOR_TYPE_PALETTE, 0, idx, 4, pal, 2);
    struct mm_image img;
    decode_ok(&b, 4, 1, &img);
    const uint8_t want[12] = {10, 20, 30, 40, 50, 60, 7, 7, 7, 200, 200, 200};
    ck_assert(memcmp(img.rgb, want, 12) == 0);
    mm_image_free(&img);
    free(b.p);
}
END_TEST

/* ---- JPEG ------------------------------------------------------------------------ */

static int max_abs_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        const int d = abs((int)a[i] - (int)b[i]);
        m = d > m ? d : m;
    }
    return m;
}

START_TEST(test_jpeg_rgb_gray_progressive)
{
    const int w = 24, h = 16;
    uint8_t rgb[16 * 24 * 3], gray[16 * 24];
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            for (int ch = 0; ch < 3; ch++)
                rgb[(y * w + x) * 3 + ch] = (uint8_t)(40 + x * 4 + ch * 30 + y);
            gray[y * w + x] = (uint8_t)(x * 8 + y);
        }
    for (int prog = 0; prog < 2; prog++) {
        struct membuf b = encode_jpeg(w, h, 3, JCS_RGB, JCS_YCbCr, 100, prog, rgb);
        ck_assert_int_eq(mm_image_sniff(b.p, b.n), MM_IMAGE_FORMAT_JPEG);
        struct mm_image img;
        decode_ok(&b, w, h, &img);
        ck_assert_int_le(max_abs_diff(img.rgb, rgb, sizeof rgb), 4);
        mm_image_free(&img);
        free(b.p);

        b = encode_jpeg(w, h, 1, JCS_GRAYSCALE, JCS_GRAYSCALE, 100, prog, gray);
        decode_ok(&b, w, h, &img);
        for (int i = 0; i < w * h; i++) {
            ck_assert_uint_eq(img.rgb[3 * i], img.rgb[3 * i + 1]);
            ck_assert_uint_eq(img.rgb[3 * i], img.rgb[3 * i + 2]);
            ck_assert_int_le(abs((int)img.rgb[3 * i] - gray[i]), 2);
        }
        mm_image_free(&img);
        free(b.p);
    }
}
END_TEST

START_TEST(test_jpeg_cmyk_and_ycck)
{
    /* Stored (Adobe-inverted) CMYK s: Pillow gives R = sK - (255 - sC) * sK / 255. */
    const int w = 16, h = 16;
    uint8_t cmyk[16 * 16 * 4];
    const uint8_t s[4] = {200, 100, 30, 180};
    for (int i = 0; i < w * h; i++)
        memcpy(cmyk + 4 * i, s, 4);
    const J_COLOR_SPACE spaces[2] = {JCS_CMYK, JCS_YCCK};
    for (int k = 0; k < 2; k++) {
        struct membuf b = encode_jpeg(w, h, 4, JCS_CMYK, spaces[k], 100, 0, cmyk);
        struct mm_image img;
        decode_ok(&b, w, h, &img);
        for (int ch = 0; ch < 3; ch++) {
            const int want = s[3] - ((255 - s[ch]) * s[3] + 127) / 255;
            ck_assert_int_le(abs((int)img.rgb[ch] - want), 3);
        }
        mm_image_free(&img);
        free(b.p);
    }
}
END_TEST

/* ---- limits and bad input -------------------------------------------------------- */

START_TEST(test_limits_before_decoding)
{
    uint8_t rgb[8 * 8 * 3] = {0};
    struct membuf png = encode_png(8, 8, 8, PNG_COLOR_TYPE_RGB, 0, rgb, 24, NULL, 0);
    struct membuf jpg = encode_jpeg(8, 8, 3, JCS_RGB, JCS_YCbCr, 90, 0, rgb);
    const struct membuf *bufs[2] = {&png, &jpg};
    for (int k = 0; k < 2; k++) {
        struct mm_image img;
        struct mm_err err;
        struct mm_image_decode_limits lim = {.max_pixels = 63};
        ck_assert_int_eq(mm_image_decode(bufs[k]->p, bufs[k]->n, &lim, &img, &err), MM_ERR_LIMIT);
        ck_assert_ptr_null(img.rgb);
        ck_assert(strstr(err.msg, "8x8") != NULL);
        lim = (struct mm_image_decode_limits){.max_side = 7};
        ck_assert_int_eq(mm_image_decode(bufs[k]->p, bufs[k]->n, &lim, &img, &err), MM_ERR_LIMIT);
        lim = (struct mm_image_decode_limits){.max_bytes = bufs[k]->n - 1};
        ck_assert_int_eq(mm_image_decode(bufs[k]->p, bufs[k]->n, &lim, &img, &err), MM_ERR_LIMIT);
        lim = (struct mm_image_decode_limits){.max_pixels = 64, .max_side = 8};
        ck_assert_int_eq(mm_image_decode(bufs[k]->p, bufs[k]->n, &lim, &img, &err), MM_OK);
        mm_image_free(&img);
    }
    free(png.p);
    free(jpg.p);
}
END_TEST

START_TEST(test_bad_input)
{
    struct mm_image img;
    struct mm_err err;
    const uint8_t one = 0;
    ck_assert_int_eq(mm_image_decode(&one, 0, NULL, &img, &err), MM_ERR_FORMAT);
    ck_assert_int_eq(mm_image_decode((const uint8_t *)"GIF89a....", 10, NULL, &img, &err),
                     MM_ERR_UNSUPPORTED);
    ck_assert(strstr(err.msg, "GIF") != NULL);
    ck_assert_int_eq(mm_image_decode((const uint8_t *)"hello world", 11, NULL, &img, &err),
                     MM_ERR_UNSUPPORTED);
    ck_assert_int_eq(mm_image_decode((const uint8_t *)"\xff\xd8\xff", 3, NULL, &img, &err),
                     MM_ERR_FORMAT);
    ck_assert(strstr(err.msg, "jpeg") != NULL);
}
END_TEST

/* Every prefix and many single-byte corruptions: never a crash or a leak
 * (the sanitizer build checks), and a prefix that lost pixel data fails. */
START_TEST(test_truncation_and_corruption)
{
    const int w = 20, h = 12;
    uint8_t rgb[12 * 20 * 3];
    for (int i = 0; i < (int)sizeof rgb; i++)
        rgb[i] = (uint8_t)(i * 13);
    struct membuf enc[4] = {
        encode_png(w, h, 8, PNG_COLOR_TYPE_RGB, 0, rgb, (size_t)w * 3, NULL, 0),
        encode_png(w, h, 8, PNG_COLOR_TYPE_RGB, 1, rgb, (size_t)w * 3, NULL, 0),
        encode_jpeg(w, h, 3, JCS_RGB, JCS_YCbCr, 90, 0, rgb),
        encode_jpeg(w, h, 3, JCS_RGB, JCS_YCbCr, 90, 1, rgb),
    };
    for (int k = 0; k < 4; k++) {
        for (size_t n = 0; n < enc[k].n; n++) {
            struct mm_image img;
            struct mm_err err;
            const enum mm_status st = mm_image_decode(enc[k].p, n, NULL, &img, &err);
            /* Every pixel is there when only the trailer is cut: the JPEG EOI
             * marker (2 bytes) or the PNG IEND chunk (12 bytes). */
            if (st == MM_OK)
                ck_assert_msg(n + (k >= 2 ? 2 : 12) >= enc[k].n, "prefix %zu of %zu accepted", n,
                              enc[k].n);
            else
                ck_assert(err.msg[0] != '\0');
            mm_image_free(&img);
        }
        uint8_t *copy = malloc(enc[k].n);
        uint32_t seed = 12345u + (uint32_t)k;
        for (int trial = 0; trial < 400; trial++) {
            memcpy(copy, enc[k].p, enc[k].n);
            for (int f = 0; f < 1 + trial % 4; f++) {
                seed = seed * 1664525u + 1013904223u;
                const size_t at = 3 + (seed >> 8) % (enc[k].n - 3); /* keep the magic */
                copy[at] ^= (uint8_t)(1u << (seed >> 4 & 7));
            }
            struct mm_image img;
            struct mm_err err;
            if (mm_image_decode(copy, enc[k].n, NULL, &img, &err) == MM_OK) {
                ck_assert_int_eq(img.width * img.height > 0, 1);
                mm_image_free(&img);
            }
        }
        free(copy);
        free(enc[k].p);
    }
}
END_TEST

/* Scans x samples is bounded: 64 legal scans are fine on a small image and
 * refused on a 6000 x 6000 one (64 x 36 M samples > the work budget). */
START_TEST(test_jpeg_scan_work_budget)
{
    uint8_t *gray = malloc(6000 * 6000);
    for (int i = 0; i < 6000 * 6000; i++)
        gray[i] = (uint8_t)(i % 6000 * 7);
    struct membuf b = encode_jpeg(64, 48, 1, JCS_GRAYSCALE, JCS_GRAYSCALE, 90, 2, gray);
    struct mm_image img;
    decode_ok(&b, 64, 48, &img);
    mm_image_free(&img);
    free(b.p);
    b = encode_jpeg(6000, 6000, 1, JCS_GRAYSCALE, JCS_GRAYSCALE, 90, 2, gray);
    struct mm_err err = {0};
    ck_assert_int_ne(mm_image_decode(b.p, b.n, NULL, &img, &err), MM_OK);
    ck_assert_msg(strstr(err.msg, "too many progressive scans") != NULL, "%s", err.msg);
    free(b.p);
    free(gray);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model/image_decode");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_png_rgb_and_interlaced);
    tcase_add_test(tc, test_png_alpha_dropped_16bit_high_byte);
    tcase_add_test(tc, test_png_gray_depths);
    tcase_add_test(tc, test_png_palette_short);
    tcase_add_test(tc, test_jpeg_rgb_gray_progressive);
    tcase_add_test(tc, test_jpeg_cmyk_and_ycck);
    tcase_add_test(tc, test_limits_before_decoding);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_truncation_and_corruption);
    tcase_add_test(tc, test_jpeg_scan_work_budget);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
