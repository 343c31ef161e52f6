/* image_resize.c: Pillow-exact bicubic resize (see image_resize.h).
 *
 * Design: weights are computed once per resize, as Pillow computes them.
 * The SIMD kernels (SSE2, baseline on x86-64; AVX2 for the horizontal pass,
 * picked at run time) split each 22-bit weight as hi * 256 + lo so that
 * pmaddwd applies two taps per instruction in int16 while
 * hi_sum * 256 + lo_sum stays Pillow's exact int32 sum; integer sums do not
 * depend on order, so the result is identical. */
#include "model/image_resize.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h> /* AVX2 kernels, compiled with a target attribute */
#endif
#endif

/* ---- Pillow's bicubic resampling ------------------------------------------------- */

#define PRECISION_BITS (32 - 8 - 2) /* Pillow: 8 bits of result, 2 of headroom */

/* Bicubic convolution kernel with Pillow's a = -0.5, support 2. */
static double bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Fixed-point weights of one axis: output o reads source samples
 * bounds[2o] .. bounds[2o] + bounds[2o+1] - 1 with weights k[o * ksize + t]
 * (zero from bounds[2o+1] up to ksize).
 *
 * For SSE2 the weights are also kept split as k = hi * 256 + lo (lo in
 * 0..255, hi in int16 range) and packed in pairs of taps (t, t+1) as two
 * int16 in one int32, ready for pmaddwd: the sums of p * lo and of p * hi
 * are exact in int32, and hi_sum * 256 + lo_sum is Pillow's sum exactly. */
struct coeffs {
    int ksize, npairs; /* npairs = (ksize + 1) / 2 */
    bool split_ok;     /* every hi fits int16 and the lo sums fit int32 */
    int *bounds;
    int32_t *k;
    int32_t *pair_lo, *pair_hi; /* [out][npairs] */
};

static void coeffs_free(struct coeffs *c)
{
    free(c->bounds);
    free(c->k);
    free(c->pair_lo);
    free(c->pair_hi);
    memset(c, 0, sizeof *c);
}

static enum mm_status coeffs_build(int in_size, int out_size, struct coeffs *c, struct mm_err *err)
{
    memset(c, 0, sizeof *c);
    /* Pillow: box (0, in_size) as floats, scale = (in1 - in0) / out_size. */
    const double scale = (double)((float)in_size - 0.0f) / out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = 2.0 * filterscale;
    c->ksize = (int)ceil(support) * 2 + 1;
    c->npairs = (c->ksize + 1) / 2;
    const size_t nk = (size_t)c->ksize * (size_t)out_size;
    const size_t np = (size_t)c->npairs * (size_t)out_size;
    c->bounds = malloc(sizeof *c->bounds * 2 * (size_t)out_size);
    c->k = malloc(sizeof *c->k * nk);
    c->pair_lo = malloc(sizeof *c->pair_lo * np);
    c->pair_hi = malloc(sizeof *c->pair_hi * np);
    double *w = malloc(sizeof *w * (size_t)c->ksize);
    if (!c->bounds || !c->k || !c->pair_lo || !c->pair_hi || !w) {
        free(w);
        coeffs_free(c);
        return mm_err_set(err, MM_ERR_NOMEM, "resize: cannot allocate coefficients");
    }
    const double ss = 1.0 / filterscale;
    /* sum of p * lo <= 255 * 255 * ksize must stay below 2^31 */
    c->split_ok = c->ksize <= 30000;
    for (int o = 0; o < out_size; o++) {
        const double center = (o + 0.5) * scale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; x++) {
            w[x] = bicubic((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        int32_t *k = &c->k[(size_t)o * (size_t)c->ksize];
        for (int x = 0; x < c->ksize; x++) {
            double v = 0.0;
            if (x < xmax)
                v = ww != 0.0 ? w[x] / ww : w[x];
            k[x] = (int32_t)(v < 0 ? -0.5 + v * (1 << PRECISION_BITS)
                                   : 0.5 + v * (1 << PRECISION_BITS));
        }
        for (int j = 0; j < c->npairs; j++) {
            uint32_t lo[2], hi[2];
            for (int h = 0; h < 2; h++) {
                const int t = 2 * j + h;
                const int32_t kt = t < c->ksize ? k[t] : 0;
                const int32_t l = (int32_t)((uint32_t)kt & 255u), hv = (kt - l) / 256;
                if (hv < INT16_MIN || hv > INT16_MAX) /* a weight beyond +-2.0 */
                    c->split_ok = false;
                lo[h] = (uint32_t)l;
                hi[h] = (uint32_t)(uint16_t)hv;
            }
            c->pair_lo[(size_t)o * (size_t)c->npairs + (size_t)j] = (int32_t)(lo[0] | lo[1] << 16);
            c->pair_hi[(size_t)o * (size_t)c->npairs + (size_t)j] = (int32_t)(hi[0] | hi[1] << 16);
        }
        c->bounds[2 * o] = xmin;
        c->bounds[2 * o + 1] = xmax;
    }
    free(w);
    return MM_OK;
}

static inline uint8_t clip8(int32_t v)
{
    v >>= PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

#if defined(__SSE2__)
/* Rows resampled across together, sharing the coefficient loads. Each row is
 * first rewritten as int32 lanes holding the int16 pair (p[i], p[i+3]): byte
 * i and the same channel one pixel to the right. One unaligned load at pixel
 * x then gives R, G, B (and one unused lane) of two taps for pmaddwd. */
#define HSTRIP 4
#define STRIP_ROW(in_w) (((size_t)(in_w) + 2) * 3) /* int32 per row, with slack */

static void build_pairs(const uint8_t *src, int in_w, int32_t *dst)
{
    const size_t n = (size_t)in_w * 3;
    const __m128i zero = _mm_setzero_si128();
    size_t i = 0;
    for (; i + 19 <= n; i += 16) {
        const __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        const __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 3));
        const __m128i alo = _mm_unpacklo_epi8(a, zero), ahi = _mm_unpackhi_epi8(a, zero);
        const __m128i blo = _mm_unpacklo_epi8(b, zero), bhi = _mm_unpackhi_epi8(b, zero);
        _mm_storeu_si128((__m128i *)(dst + i), _mm_unpacklo_epi16(alo, blo));
        _mm_storeu_si128((__m128i *)(dst + i + 4), _mm_unpackhi_epi16(alo, blo));
        _mm_storeu_si128((__m128i *)(dst + i + 8), _mm_unpacklo_epi16(ahi, bhi));
        _mm_storeu_si128((__m128i *)(dst + i + 12), _mm_unpackhi_epi16(ahi, bhi));
    }
    for (; i < n; i++)
        dst[i] = (int32_t)(src[i] | (uint32_t)(i + 3 < n ? src[i + 3] : 0) << 16);
    for (; i < STRIP_ROW(in_w); i++)
        dst[i] = 0;
}

/* hi * 256 + lo + rounding, then Pillow's >> PRECISION_BITS (arithmetic). */
static inline __m128i finish(__m128i hi, __m128i lo)
{
    const __m128i half = _mm_set1_epi32(1 << (PRECISION_BITS - 1));
    return _mm_srai_epi32(_mm_add_epi32(_mm_add_epi32(_mm_slli_epi32(hi, 8), lo), half),
                          PRECISION_BITS);
}

static void resample_horizontal(const uint8_t *in, int in_w, int y0, int y1, uint8_t *out,
                                int out_w, const struct coeffs *c, int32_t *strip)
{
    const size_t srow = STRIP_ROW(in_w);
    for (int ys = y0; ys < y1; ys += HSTRIP) {
        const int rows = y1 - ys < HSTRIP ? y1 - ys : HSTRIP;
        for (int r = 0; r < HSTRIP; r++)
            build_pairs(in + (size_t)(ys + (r < rows ? r : 0)) * (size_t)in_w * 3, in_w,
                        strip + (size_t)r * srow);
        for (int o = 0; o < out_w; o++) {
            const int32_t *plo = &c->pair_lo[(size_t)o * (size_t)c->npairs];
            const int32_t *phi = &c->pair_hi[(size_t)o * (size_t)c->npairs];
            const int32_t *s = strip + (size_t)c->bounds[2 * o] * 3;
            const int np = (c->bounds[2 * o + 1] + 1) / 2;
            __m128i l0 = _mm_setzero_si128(), l1 = l0, l2 = l0, l3 = l0;
            __m128i h0 = l0, h1 = l0, h2 = l0, h3 = l0;
            for (int j = 0; j < np; j++) {
                const int32_t *v = s + (size_t)(6 * j);
                const __m128i v0 = _mm_loadu_si128((const __m128i *)v);
                const __m128i v1 = _mm_loadu_si128((const __m128i *)(v + srow));
                const __m128i v2 = _mm_loadu_si128((const __m128i *)(v + 2 * srow));
                const __m128i v3 = _mm_loadu_si128((const __m128i *)(v + 3 * srow));
                const __m128i kl = _mm_set1_epi32(plo[j]), kh = _mm_set1_epi32(phi[j]);
                l0 = _mm_add_epi32(l0, _mm_madd_epi16(v0, kl));
                l1 = _mm_add_epi32(l1, _mm_madd_epi16(v1, kl));
                l2 = _mm_add_epi32(l2, _mm_madd_epi16(v2, kl));
                l3 = _mm_add_epi32(l3, _mm_madd_epi16(v3, kl));
                h0 = _mm_add_epi32(h0, _mm_madd_epi16(v0, kh));
                h1 = _mm_add_epi32(h1, _mm_madd_epi16(v1, kh));
                h2 = _mm_add_epi32(h2, _mm_madd_epi16(v2, kh));
                h3 = _mm_add_epi32(h3, _mm_madd_epi16(v3, kh));
            }
            /* sums -> bytes in SIMD; row r's R, G, B land in bytes 4r .. 4r+2 */
            uint8_t px[16];
            _mm_storeu_si128((__m128i *)px,
                             _mm_packus_epi16(_mm_packs_epi32(finish(h0, l0), finish(h1, l1)),
                                              _mm_packs_epi32(finish(h2, l2), finish(h3, l3))));
            /* 4-byte stores: the spare byte is overwritten by the next pixel */
            const size_t nb = o + 1 < out_w ? 4 : 3;
            for (int r = 0; r < rows; r++)
                memcpy(out + ((size_t)(ys - y0 + r) * (size_t)out_w + (size_t)o) * 3, px + 4 * r,
                       nb);
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define MM_RESAMPLE_AVX2 1
/* ---- AVX2 (chosen at run time) ---- */

/* The same horizontal kernel with two rows per 256-bit register: half the
 * multiply-adds, and no register copies thanks to three-operand AVX. Built
 * with a target attribute and chosen at run time, so the binary still runs
 * on any x86-64. */
__attribute__((target("avx2"))) static void
resample_horizontal_avx2(const uint8_t *in, int in_w, int y0, int y1, uint8_t *out, int out_w,
                         const struct coeffs *c, int32_t *strip)
{
    const size_t srow = STRIP_ROW(in_w);
    const __m256i half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
    for (int ys = y0; ys < y1; ys += HSTRIP) {
        const int rows = y1 - ys < HSTRIP ? y1 - ys : HSTRIP;
        for (int r = 0; r < HSTRIP; r++)
            build_pairs(in + (size_t)(ys + (r < rows ? r : 0)) * (size_t)in_w * 3, in_w,
                        strip + (size_t)r * srow);
        for (int o = 0; o < out_w; o++) {
            const int32_t *plo = &c->pair_lo[(size_t)o * (size_t)c->npairs];
            const int32_t *phi = &c->pair_hi[(size_t)o * (size_t)c->npairs];
            const int32_t *s = strip + (size_t)c->bounds[2 * o] * 3;
            const int np = (c->bounds[2 * o + 1] + 1) / 2;
            __m256i l01 = _mm256_setzero_si256(), l23 = l01, h01 = l01, h23 = l01;
            for (int j = 0; j < np; j++) {
                const int32_t *v = s + (size_t)(6 * j);
                const __m256i v01 = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)v)),
                    _mm_loadu_si128((const __m128i *)(v + srow)), 1);
                const __m256i v23 = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(v + 2 * srow))),
                    _mm_loadu_si128((const __m128i *)(v + 3 * srow)), 1);
                const __m256i kl = _mm256_set1_epi32(plo[j]), kh = _mm256_set1_epi32(phi[j]);
                l01 = _mm256_add_epi32(l01, _mm256_madd_epi16(v01, kl));
                l23 = _mm256_add_epi32(l23, _mm256_madd_epi16(v23, kl));
                h01 = _mm256_add_epi32(h01, _mm256_madd_epi16(v01, kh));
                h23 = _mm256_add_epi32(h23, _mm256_madd_epi16(v23, kh));
            }
            const __m256i t01 = _mm256_srai_epi32(
                _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(h01, 8), l01), half),
                PRECISION_BITS);
            const __m256i t23 = _mm256_srai_epi32(
                _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(h23, 8), l23), half),
                PRECISION_BITS);
            /* rows 0..3 as four 128-bit halves, packed as in the SSE2 kernel */
            uint8_t px[16];
            _mm_storeu_si128(
                (__m128i *)px,
                _mm_packus_epi16(_mm_packs_epi32(_mm256_castsi256_si128(t01),
                                                 _mm256_extracti128_si256(t01, 1)),
                                 _mm_packs_epi32(_mm256_castsi256_si128(t23),
                                                 _mm256_extracti128_si256(t23, 1))));
            const size_t nb = o + 1 < out_w ? 4 : 3;
            for (int r = 0; r < rows; r++)
                memcpy(out + ((size_t)(ys - y0 + r) * (size_t)out_w + (size_t)o) * 3, px + 4 * r,
                       nb);
        }
    }
}

/* The vertical kernel on 32 bytes at a time. The unpacks and packs work
 * within each 128-bit half, and the packs undo the unpacks' order, so the
 * bytes come out in place. */
__attribute__((target("avx2"))) static void
resample_vertical_avx2(const uint8_t *in, int w, int first, uint8_t *out, int out_h,
                       const struct coeffs *c)
{
    const size_t row = (size_t)w * 3;
    const __m256i zero = _mm256_setzero_si256();
    const __m256i half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
    for (int o = 0; o < out_h; o++) {
        const int32_t *plo = &c->pair_lo[(size_t)o * (size_t)c->npairs];
        const int32_t *phi = &c->pair_hi[(size_t)o * (size_t)c->npairs];
        const int32_t *k = &c->k[(size_t)o * (size_t)c->ksize];
        const int y0 = c->bounds[2 * o] - first, n = c->bounds[2 * o + 1];
        const uint8_t *base = in + (size_t)y0 * row;
        uint8_t *dst = out + (size_t)o * row;
        size_t i = 0;
        for (; i + 32 <= row; i += 32) {
            __m256i l0 = zero, l1 = zero, l2 = zero, l3 = zero;
            __m256i h0 = zero, h1 = zero, h2 = zero, h3 = zero;
            for (int t = 0; t < n; t += 2) {
                const uint8_t *a = base + (size_t)t * row + i;
                const __m256i va = _mm256_loadu_si256((const __m256i *)a);
                const __m256i vb =
                    t + 1 < n ? _mm256_loadu_si256((const __m256i *)(a + row)) : zero;
                const __m256i alo = _mm256_unpacklo_epi8(va, zero);
                const __m256i ahi = _mm256_unpackhi_epi8(va, zero);
                const __m256i blo = _mm256_unpacklo_epi8(vb, zero);
                const __m256i bhi = _mm256_unpackhi_epi8(vb, zero);
                const __m256i p0 = _mm256_unpacklo_epi16(alo, blo);
                const __m256i p1 = _mm256_unpackhi_epi16(alo, blo);
                const __m256i p2 = _mm256_unpacklo_epi16(ahi, bhi);
                const __m256i p3 = _mm256_unpackhi_epi16(ahi, bhi);
                const __m256i kl = _mm256_set1_epi32(plo[t / 2]);
                const __m256i kh = _mm256_set1_epi32(phi[t / 2]);
                l0 = _mm256_add_epi32(l0, _mm256_madd_epi16(p0, kl));
                l1 = _mm256_add_epi32(l1, _mm256_madd_epi16(p1, kl));
                l2 = _mm256_add_epi32(l2, _mm256_madd_epi16(p2, kl));
                l3 = _mm256_add_epi32(l3, _mm256_madd_epi16(p3, kl));
                h0 = _mm256_add_epi32(h0, _mm256_madd_epi16(p0, kh));
                h1 = _mm256_add_epi32(h1, _mm256_madd_epi16(p1, kh));
                h2 = _mm256_add_epi32(h2, _mm256_madd_epi16(p2, kh));
                h3 = _mm256_add_epi32(h3, _mm256_madd_epi16(p3, kh));
            }
#define MM_FINISH256(hh, ll)                                                                       \
    _mm256_srai_epi32(_mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(hh, 8), ll), half),     \
                      PRECISION_BITS)
            const __m256i s01 = _mm256_packs_epi32(MM_FINISH256(h0, l0), MM_FINISH256(h1, l1));
            const __m256i s23 = _mm256_packs_epi32(MM_FINISH256(h2, l2), MM_FINISH256(h3, l3));
#undef MM_FINISH256
            _mm256_storeu_si256((__m256i *)(dst + i), _mm256_packus_epi16(s01, s23));
        }
        for (; i < row; i++) {
            int32_t acc = 1 << (PRECISION_BITS - 1);
            for (int t = 0; t < n; t++)
                acc += base[(size_t)t * row + i] * k[t];
            dst[i] = clip8(acc);
        }
    }
}
#endif

/* Sixteen bytes of one output row at a time, two source rows per pmaddwd. */
static void resample_vertical(const uint8_t *in, int w, int first, uint8_t *out, int out_h,
                              const struct coeffs *c)
{
    const size_t row = (size_t)w * 3;
    const __m128i zero = _mm_setzero_si128();
    for (int o = 0; o < out_h; o++) {
        const int32_t *plo = &c->pair_lo[(size_t)o * (size_t)c->npairs];
        const int32_t *phi = &c->pair_hi[(size_t)o * (size_t)c->npairs];
        const int32_t *k = &c->k[(size_t)o * (size_t)c->ksize];
        const int y0 = c->bounds[2 * o] - first, n = c->bounds[2 * o + 1];
        const uint8_t *base = in + (size_t)y0 * row;
        uint8_t *dst = out + (size_t)o * row;
        size_t i = 0;
        for (; i + 16 <= row; i += 16) {
            __m128i l0 = zero, l1 = zero, l2 = zero, l3 = zero;
            __m128i h0 = zero, h1 = zero, h2 = zero, h3 = zero;
            for (int t = 0; t < n; t += 2) {
                const uint8_t *a = base + (size_t)t * row + i;
                const __m128i va = _mm_loadu_si128((const __m128i *)a);
                const __m128i vb =
                    t + 1 < n ? _mm_loadu_si128((const __m128i *)(a + row)) : zero;
                const __m128i alo = _mm_unpacklo_epi8(va, zero), ahi = _mm_unpackhi_epi8(va, zero);
                const __m128i blo = _mm_unpacklo_epi8(vb, zero), bhi = _mm_unpackhi_epi8(vb, zero);
                const __m128i p0 = _mm_unpacklo_epi16(alo, blo), p1 = _mm_unpackhi_epi16(alo, blo);
                const __m128i p2 = _mm_unpacklo_epi16(ahi, bhi), p3 = _mm_unpackhi_epi16(ahi, bhi);
                const __m128i kl = _mm_set1_epi32(plo[t / 2]), kh = _mm_set1_epi32(phi[t / 2]);
                l0 = _mm_add_epi32(l0, _mm_madd_epi16(p0, kl));
                l1 = _mm_add_epi32(l1, _mm_madd_epi16(p1, kl));
                l2 = _mm_add_epi32(l2, _mm_madd_epi16(p2, kl));
                l3 = _mm_add_epi32(l3, _mm_madd_epi16(p3, kl));
                h0 = _mm_add_epi32(h0, _mm_madd_epi16(p0, kh));
                h1 = _mm_add_epi32(h1, _mm_madd_epi16(p1, kh));
                h2 = _mm_add_epi32(h2, _mm_madd_epi16(p2, kh));
                h3 = _mm_add_epi32(h3, _mm_madd_epi16(p3, kh));
            }
            const __m128i s01 = _mm_packs_epi32(finish(h0, l0), finish(h1, l1));
            const __m128i s23 = _mm_packs_epi32(finish(h2, l2), finish(h3, l3));
            _mm_storeu_si128((__m128i *)(dst + i), _mm_packus_epi16(s01, s23));
        }
        for (; i < row; i++) {
            int32_t acc = 1 << (PRECISION_BITS - 1);
            for (int t = 0; t < n; t++)
                acc += base[(size_t)t * row + i] * k[t];
            dst[i] = clip8(acc);
        }
    }
}
#define MM_RESAMPLE_SSE2 1
#endif /* __SSE2__ */

/* Portable versions, Pillow's loops as they are: also the fallback when a
 * kernel is too wide for the split sums. */
static void resample_horizontal_generic(const uint8_t *in, int in_w, int y0, int y1, uint8_t *out,
                                        int out_w, const struct coeffs *c)
{
    for (int y = y0; y < y1; y++) {
        const uint8_t *src = in + (size_t)y * (size_t)in_w * 3;
        uint8_t *dst = out + (size_t)(y - y0) * (size_t)out_w * 3;
        for (int o = 0; o < out_w; o++) {
            const int32_t *k = &c->k[(size_t)o * (size_t)c->ksize];
            const uint8_t *s = src + (size_t)c->bounds[2 * o] * 3;
            const int n = c->bounds[2 * o + 1];
            int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int t = 0; t < n; t++) {
                s0 += s[3 * t] * k[t];
                s1 += s[3 * t + 1] * k[t];
                s2 += s[3 * t + 2] * k[t];
            }
            dst[3 * o] = clip8(s0);
            dst[3 * o + 1] = clip8(s1);
            dst[3 * o + 2] = clip8(s2);
        }
    }
}

static void resample_vertical_generic(const uint8_t *in, int w, int first, uint8_t *out,
                                      int out_h, const struct coeffs *c)
{
    const size_t row = (size_t)w * 3;
    for (int o = 0; o < out_h; o++) {
        const int32_t *k = &c->k[(size_t)o * (size_t)c->ksize];
        const uint8_t *base = in + (size_t)(c->bounds[2 * o] - first) * row;
        const int n = c->bounds[2 * o + 1];
        for (size_t i = 0; i < row; i++) {
            int32_t acc = 1 << (PRECISION_BITS - 1);
            for (int t = 0; t < n; t++)
                acc += base[(size_t)t * row + i] * k[t];
            out[(size_t)o * row + i] = clip8(acc);
        }
    }
}

/* Horizontal pass over rows [y0, y1) of in into out ((y1 - y0) x out_w). */
static enum mm_status pass_horizontal(const uint8_t *in, int in_w, int y0, int y1, uint8_t *out,
                                      int out_w, const struct coeffs *c,
                                      enum mm_resize_kernel kern, struct mm_err *err)
{
#ifdef MM_RESAMPLE_SSE2
    if (kern != MM_RESIZE_PLAIN && c->split_ok) {
        int32_t *strip = malloc(sizeof *strip * STRIP_ROW(in_w) * HSTRIP);
        if (!strip)
            return mm_err_set(err, MM_ERR_NOMEM, "resize: cannot allocate scratch");
#ifdef MM_RESAMPLE_AVX2
        if (kern == MM_RESIZE_AVX2)
            resample_horizontal_avx2(in, in_w, y0, y1, out, out_w, c, strip);
        else
#endif
            resample_horizontal(in, in_w, y0, y1, out, out_w, c, strip);
        free(strip);
        return MM_OK;
    }
#endif
    (void)err;
    (void)kern;
    resample_horizontal_generic(in, in_w, y0, y1, out, out_w, c);
    return MM_OK;
}

static void pass_vertical(const uint8_t *in, int w, int first, uint8_t *out, int out_h,
                          const struct coeffs *c, enum mm_resize_kernel kern)
{
#ifdef MM_RESAMPLE_SSE2
    if (kern != MM_RESIZE_PLAIN && c->split_ok) {
#ifdef MM_RESAMPLE_AVX2
        if (kern == MM_RESIZE_AVX2) {
            resample_vertical_avx2(in, w, first, out, out_h, c);
            return;
        }
#endif
        resample_vertical(in, w, first, out, out_h, c);
        return;
    }
#endif
    (void)kern;
    resample_vertical_generic(in, w, first, out, out_h, c);
}

/* The fastest kernel this build and CPU have. */
static enum mm_resize_kernel best_kernel(void)
{
#ifdef MM_RESAMPLE_AVX2
    if (__builtin_cpu_supports("avx2"))
        return MM_RESIZE_AVX2;
#endif
#ifdef MM_RESAMPLE_SSE2
    return MM_RESIZE_SSE2;
#else
    return MM_RESIZE_PLAIN;
#endif
}

enum mm_status mm_image_resize_with(const struct mm_image *in, int64_t width, int64_t height,
                                    enum mm_resize_kernel kern, struct mm_image *out,
                                    struct mm_err *err)
{
    memset(out, 0, sizeof *out);
    if (kern == MM_RESIZE_BEST)
        kern = best_kernel();
    if (kern > best_kernel())
        return mm_err_set(err, MM_ERR_UNSUPPORTED, "resize: kernel %d not available here",
                          (int)kern);
    /* Sizes here are bounded by the decode limits and the tile count; keep
     * everything comfortably inside int, as Pillow's arithmetic is. */
    const int64_t lim = 1 << 20;
    if (!in->rgb || in->width < 1 || in->height < 1 || width < 1 || height < 1 ||
        in->width > lim || in->height > lim || width > lim || height > lim)
        return mm_err_set(err, MM_ERR_INVALID, "resize: bad size %lldx%lld -> %lldx%lld",
                          (long long)in->width, (long long)in->height, (long long)width,
                          (long long)height);
    const int iw = (int)in->width, ih = (int)in->height, ow = (int)width, oh = (int)height;
    size_t out_bytes, tmp_bytes = 0;
    if (!mm_size_mul((size_t)ow * 3, (size_t)oh, &out_bytes))
        return mm_err_set(err, MM_ERR_OVERFLOW, "resize: output size overflows");
    struct coeffs ch = {0}, cv = {0};
    uint8_t *tmp = NULL;
    enum mm_status st;
    if ((st = coeffs_build(iw, ow, &ch, err)) != MM_OK ||
        (st = coeffs_build(ih, oh, &cv, err)) != MM_OK)
        goto fail;
    out->rgb = malloc(out_bytes);
    if (!out->rgb) {
        st = mm_err_set(err, MM_ERR_NOMEM, "resize: cannot allocate %zu bytes", out_bytes);
        goto fail;
    }
    out->width = width;
    out->height = height;
    /* As Pillow: a pass runs only if its axis changes size; the horizontal
     * pass covers just the source rows the vertical pass will read. */
    const bool need_h = ow != iw, need_v = oh != ih;
    const int first = cv.bounds[0];
    const int last = cv.bounds[2 * oh - 2] + cv.bounds[2 * oh - 1];
    if (need_h && need_v) {
        if (!mm_size_mul((size_t)ow * 3, (size_t)(last - first), &tmp_bytes) ||
            !(tmp = malloc(tmp_bytes))) {
            st = mm_err_set(err, MM_ERR_NOMEM, "resize: cannot allocate the intermediate");
            goto fail;
        }
        if ((st = pass_horizontal(in->rgb, iw, first, last, tmp, ow, &ch, kern, err)) != MM_OK)
            goto fail;
        pass_vertical(tmp, ow, first, out->rgb, oh, &cv, kern);
    } else if (need_h) {
        if ((st = pass_horizontal(in->rgb, iw, 0, ih, out->rgb, ow, &ch, kern, err)) != MM_OK)
            goto fail;
    } else if (need_v) {
        pass_vertical(in->rgb, iw, 0, out->rgb, oh, &cv, kern);
    } else {
        memcpy(out->rgb, in->rgb, out_bytes);
    }
    coeffs_free(&ch);
    coeffs_free(&cv);
    free(tmp);
    return MM_OK;
fail:
    coeffs_free(&ch);
    coeffs_free(&cv);
    free(tmp);
    mm_image_free(out);
    return st;
}

enum mm_status mm_image_resize(const struct mm_image *in, int64_t width, int64_t height,
                               struct mm_image *out, struct mm_err *err)
{
    return mm_image_resize_with(in, width, height, MM_RESIZE_BEST, out, err);
}
