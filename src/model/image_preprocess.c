/* image_preprocess.c: dynamic tiling, Pillow-exact bicubic resize and
 * normalisation (see image_preprocess.h; MODEL.md §4).
 *
 * Design: the resize follows Pillow's ImagingResample for 8-bit images:
 * per output coordinate, a window of source samples weighted by the bicubic
 * kernel (a = -0.5) stretched by the downscale factor, weights normalised to
 * sum 1 in double and rounded to 22-bit fixed point; the horizontal pass
 * runs first (only over the rows the vertical pass will read) and rounds to
 * 8 bits, then the vertical pass. Integer sums are exact, so the vertical
 * pass may accumulate a whole row per tap (vectorisable) and still equal
 * Pillow's per-pixel sums. */
#include "model/image_preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ---- parameters and limits ------------------------------------------------------- */

enum mm_status mm_image_params_from_config(const struct mm_config *cfg,
                                           const struct mm_image_limits *lim,
                                           struct mm_image_params *p, struct mm_err *err)
{
    p->tile_size = cfg->force_image_size;
    p->min_tiles = cfg->min_dynamic_patch;
    p->max_tiles = cfg->max_dynamic_patch;
    p->use_thumbnail = cfg->use_thumbnail;
    if (lim && lim->max_tiles_per_image > 0 && lim->max_tiles_per_image < p->max_tiles)
        p->max_tiles = lim->max_tiles_per_image;
    if (p->tile_size < 1 || p->tile_size > 4096)
        return mm_err_set(err, MM_ERR_INVALID, "image tile size %lld out of range 1..4096",
                          (long long)p->tile_size);
    if (p->min_tiles < 1 || p->max_tiles < p->min_tiles || p->max_tiles > MM_IMAGE_MAX_TILES)
        return mm_err_set(err, MM_ERR_INVALID,
                          "image tiles: need 1 <= min (%lld) <= max (%lld) <= %d",
                          (long long)p->min_tiles, (long long)p->max_tiles, MM_IMAGE_MAX_TILES);
    return MM_OK;
}

enum mm_status mm_image_request_add_tiles(const struct mm_image_limits *lim, int64_t *used,
                                          int64_t n, struct mm_err *err)
{
    const int64_t max = lim && lim->max_tiles_per_request > 0
                            ? lim->max_tiles_per_request
                            : MM_IMAGE_DEFAULT_MAX_TILES_PER_REQUEST;
    if (n < 0 || *used < 0 || n > max - *used)
        return mm_err_set(err, MM_ERR_LIMIT,
                          "images need %lld tiles, more than the limit of %lld per request",
                          (long long)(*used + n), (long long)max);
    *used += n;
    return MM_OK;
}

/* ---- candidate grids: the reference's sorted(set(...)) ----------------------------- */

/* CPython (3.8+, 64-bit) hash of the tuple (i, j) of small ints: xxHash-based
 * tuplehash, where hash(k) == k for small non-negative ints. */
static uint64_t py_tuple2_hash(uint64_t a, uint64_t b)
{
    const uint64_t p1 = 11400714785074694791ull, p2 = 14029467366897019727ull,
                   p5 = 2870177450012600261ull;
    uint64_t acc = p5;
    const uint64_t lanes[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        acc += lanes[k] * p2;
        acc = acc << 31 | acc >> 33;
        acc *= p1;
    }
    acc += 2 ^ (p5 ^ 3527539ull);
    if (acc == UINT64_MAX)
        return 1546275796;
    return acc;
}

struct py_slot {
    uint64_t hash;
    int32_t key; /* index into the grid list, -1 empty */
};

/* CPython's set insertion without the equality search (the caller already
 * knows the key is new): linear probes of 9, then perturbed jumps. */
static void py_set_insert_clean(struct py_slot *t, size_t mask, uint64_t hash, int32_t key)
{
    size_t perturb = hash, i = hash & mask;
    for (;;) {
        const size_t probes = i + 9 <= mask ? 9 : 0;
        for (size_t j = 0; j <= probes; j++)
            if (t[i + j].key < 0) {
                t[i + j].hash = hash;
                t[i + j].key = key;
                return;
            }
        perturb >>= 5;
        i = (i * 5 + 1 + perturb) & mask;
    }
}

int64_t mm_image_grid_candidates(int64_t min_tiles, int64_t max_tiles, struct mm_tile_grid *out,
                                 int64_t cap)
{
    if (min_tiles < 1 || max_tiles < min_tiles || max_tiles > MM_IMAGE_MAX_TILES)
        return -1;
    /* Distinct (i, j) with min <= i*j <= max, in generator order (n, i, j). */
    int64_t n_all = 0;
    for (int64_t i = 1; i <= max_tiles; i++)
        n_all += max_tiles / i;
    struct mm_tile_grid *g = malloc(sizeof *g * (size_t)n_all);
    size_t tsize = 8;
    while (tsize <= (size_t)n_all * 4)
        tsize <<= 1;
    tsize <<= 1;
    struct py_slot *table = malloc(sizeof *table * tsize);
    struct py_slot *fresh = malloc(sizeof *fresh * tsize);
    char *seen = calloc((size_t)(max_tiles + 1) * (size_t)(max_tiles + 1), 1);
    int64_t n = -1;
    if (!g || !table || !fresh || !seen)
        goto done;
    /* Replay set(genexpr): insertion with growth exactly as CPython does it
     * (fill*5 >= mask*3 triggers a resize to the next power of two above
     * 4*used, entries re-inserted in old slot order). */
    size_t mask = 7;
    int64_t used = 0;
    for (size_t s = 0; s <= mask; s++)
        table[s].key = -1;
    for (int64_t nn = min_tiles; nn <= max_tiles; nn++)
        for (int64_t i = 1; i <= nn; i++)
            for (int64_t j = 1; j <= nn; j++) {
                if (i * j > max_tiles || i * j < min_tiles)
                    continue;
                char *const s = &seen[i * (max_tiles + 1) + j];
                if (*s)
                    continue;
                *s = 1;
                g[used] = (struct mm_tile_grid){.cols = i, .rows = j};
                py_set_insert_clean(table, mask, py_tuple2_hash((uint64_t)i, (uint64_t)j),
                                    (int32_t)used);
                used++;
                if ((size_t)used * 5 < mask * 3)
                    continue;
                size_t newsize = 8;
                while (newsize <= (size_t)used * 4)
                    newsize <<= 1;
                for (size_t s2 = 0; s2 < newsize; s2++)
                    fresh[s2].key = -1;
                for (size_t s2 = 0; s2 <= mask; s2++)
                    if (table[s2].key >= 0)
                        py_set_insert_clean(fresh, newsize - 1, table[s2].hash, table[s2].key);
                memcpy(table, fresh, sizeof *table * newsize);
                mask = newsize - 1;
            }
    /* Iterate in slot order, then a stable sort by i*j (insertion sort:
     * at most a few thousand entries, and stability is the point). */
    int64_t k = 0;
    for (size_t s = 0; s <= mask; s++)
        if (table[s].key >= 0)
            fresh[k++].key = table[s].key;
    for (int64_t a = 1; a < k; a++) {
        const int32_t key = fresh[a].key;
        const int64_t area = g[key].cols * g[key].rows;
        int64_t b = a - 1;
        while (b >= 0 && g[fresh[b].key].cols * g[fresh[b].key].rows > area) {
            fresh[b + 1].key = fresh[b].key;
            b--;
        }
        fresh[b + 1].key = key;
    }
    for (int64_t a = 0; a < k && a < cap; a++)
        out[a] = g[fresh[a].key];
    n = k;
done:
    free(g);
    free(table);
    free(fresh);
    free(seen);
    return n;
}

enum mm_status mm_image_choose_grid(int64_t width, int64_t height, const struct mm_image_params *p,
                                    struct mm_tile_grid *grid, struct mm_err *err)
{
    if (width < 1 || height < 1)
        return mm_err_set(err, MM_ERR_INVALID, "image: invalid size %lldx%lld", (long long)width,
                          (long long)height);
    const int64_t n = mm_image_grid_candidates(p->min_tiles, p->max_tiles, NULL, 0);
    struct mm_tile_grid *cand = n > 0 ? malloc(sizeof *cand * (size_t)n) : NULL;
    if (n < 1)
        return mm_err_set(err, MM_ERR_INVALID, "image: bad tile range %lld..%lld",
                          (long long)p->min_tiles, (long long)p->max_tiles);
    if (!cand || mm_image_grid_candidates(p->min_tiles, p->max_tiles, cand, n) != n) {
        free(cand);
        return mm_err_set(err, MM_ERR_NOMEM, "image: cannot list tile grids");
    }
    /* find_closest_aspect_ratio, in the reference's double arithmetic. */
    const double aspect = (double)width / (double)height;
    const double area = (double)width * (double)height;
    const double s = (double)p->tile_size;
    double best_diff = INFINITY;
    struct mm_tile_grid best = {1, 1};
    for (int64_t k = 0; k < n; k++) {
        const double target = (double)cand[k].cols / (double)cand[k].rows;
        const double diff = fabs(aspect - target);
        if (diff < best_diff) {
            best_diff = diff;
            best = cand[k];
        } else if (diff == best_diff &&
                   area > 0.5 * s * s * (double)cand[k].cols * (double)cand[k].rows) {
            best = cand[k];
        }
    }
    free(cand);
    *grid = best;
    return MM_OK;
}

enum mm_status mm_image_count_tiles(int64_t width, int64_t height, const struct mm_image_params *p,
                                    int64_t *count, struct mm_err *err)
{
    struct mm_tile_grid g;
    const enum mm_status st = mm_image_choose_grid(width, height, p, &g, err);
    if (st != MM_OK)
        return st;
    const int64_t n = g.cols * g.rows;
    *count = n + (p->use_thumbnail && n != 1);
    return MM_OK;
}

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
                const int32_t l = (int32_t)((uint32_t)kt & 255u);
                lo[h] = (uint32_t)l;
                hi[h] = (uint32_t)(uint16_t)(int16_t)((kt - l) / 256);
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

/* The split sums stay exact in int32 while taps * 255 * 255 < 2^31. */
#define SPLIT_MAX_TAPS 30000

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
                                      int out_w, const struct coeffs *c, bool simd,
                                      struct mm_err *err)
{
#ifdef MM_RESAMPLE_SSE2
    if (simd && c->ksize <= SPLIT_MAX_TAPS) {
        int32_t *strip = malloc(sizeof *strip * STRIP_ROW(in_w) * HSTRIP);
        if (!strip)
            return mm_err_set(err, MM_ERR_NOMEM, "resize: cannot allocate scratch");
        resample_horizontal(in, in_w, y0, y1, out, out_w, c, strip);
        free(strip);
        return MM_OK;
    }
#endif
    (void)err;
    (void)simd;
    resample_horizontal_generic(in, in_w, y0, y1, out, out_w, c);
    return MM_OK;
}

static void pass_vertical(const uint8_t *in, int w, int first, uint8_t *out, int out_h,
                          const struct coeffs *c, bool simd)
{
#ifdef MM_RESAMPLE_SSE2
    if (simd && c->ksize <= SPLIT_MAX_TAPS) {
        resample_vertical(in, w, first, out, out_h, c);
        return;
    }
#endif
    (void)simd;
    resample_vertical_generic(in, w, first, out, out_h, c);
}

static enum mm_status resize(const struct mm_image *in, int64_t width, int64_t height, bool simd,
                             struct mm_image *out, struct mm_err *err)
{
    memset(out, 0, sizeof *out);
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
        if ((st = pass_horizontal(in->rgb, iw, first, last, tmp, ow, &ch, simd, err)) != MM_OK)
            goto fail;
        pass_vertical(tmp, ow, first, out->rgb, oh, &cv, simd);
    } else if (need_h) {
        if ((st = pass_horizontal(in->rgb, iw, 0, ih, out->rgb, ow, &ch, simd, err)) != MM_OK)
            goto fail;
    } else if (need_v) {
        pass_vertical(in->rgb, iw, 0, out->rgb, oh, &cv, simd);
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
    return resize(in, width, height, true, out, err);
}

enum mm_status mm_image_resize_plain(const struct mm_image *in, int64_t width, int64_t height,
                                     struct mm_image *out, struct mm_err *err)
{
    return resize(in, width, height, false, out, err);
}

/* ---- tiles ----------------------------------------------------------------------- */

/* value/255 then (x - mean) / std, in fp32 as torchvision computes it. */
static void build_lut(float lut[3][256])
{
    static const float mean[3] = {0.485f, 0.456f, 0.406f};
    static const float std[3] = {0.229f, 0.224f, 0.225f};
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++)
            lut[c][v] = ((float)v / 255.0f - mean[c]) / std[c];
}

/* Copies the S x S square at (x0, y0) of img into one CHW tile. */
static void emit_tile(const struct mm_image *img, int64_t x0, int64_t y0, int64_t s,
                      const float lut[3][256], float *dst)
{
    const size_t plane = (size_t)s * (size_t)s;
    for (int64_t y = 0; y < s; y++) {
        const uint8_t *src = img->rgb + ((size_t)(y0 + y) * (size_t)img->width + (size_t)x0) * 3;
        float *r = dst + (size_t)y * (size_t)s, *g = r + plane, *b = g + plane;
        for (int64_t x = 0; x < s; x++) {
            r[x] = lut[0][src[3 * x]];
            g[x] = lut[1][src[3 * x + 1]];
            b[x] = lut[2][src[3 * x + 2]];
        }
    }
}

enum mm_status mm_image_preprocess(const struct mm_image *img, const struct mm_image_params *p,
                                   struct mm_image_tiles *out, struct mm_err *err)
{
    memset(out, 0, sizeof *out);
    struct mm_tile_grid g;
    enum mm_status st = mm_image_choose_grid(img->width, img->height, p, &g, err);
    if (st != MM_OK)
        return st;
    const int64_t s = p->tile_size, n = g.cols * g.rows;
    const int64_t count = n + (p->use_thumbnail && n != 1);
    size_t floats;
    if (!mm_size_mul((size_t)count * 3, (size_t)s * (size_t)s, &floats) ||
        !mm_size_mul(floats, sizeof(float), &floats))
        return mm_err_set(err, MM_ERR_OVERFLOW, "image: tile buffer size overflows");
    out->data = malloc(floats);
    if (!out->data)
        return mm_err_set(err, MM_ERR_NOMEM, "image: cannot allocate %zu bytes of tiles", floats);
    out->grid = g;
    out->count = count;
    out->size = s;
    float lut[3][256];
    build_lut(lut);
    const size_t tile_floats = 3 * (size_t)s * (size_t)s;

    struct mm_image resized;
    if ((st = mm_image_resize(img, s * g.cols, s * g.rows, &resized, err)) != MM_OK)
        goto fail;
    for (int64_t t = 0; t < n; t++)
        emit_tile(&resized, t % g.cols * s, t / g.cols * s, s, lut,
                  out->data + (size_t)t * tile_floats);
    mm_image_free(&resized);
    if (count > n) {
        struct mm_image thumb;
        if ((st = mm_image_resize(img, s, s, &thumb, err)) != MM_OK)
            goto fail;
        emit_tile(&thumb, 0, 0, s, lut, out->data + (size_t)n * tile_floats);
        mm_image_free(&thumb);
    }
    return MM_OK;
fail:
    mm_image_tiles_free(out);
    return st;
}

void mm_image_tiles_free(struct mm_image_tiles *t)
{
    if (!t)
        return;
    free(t->data);
    memset(t, 0, sizeof *t);
}
