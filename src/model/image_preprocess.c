/* image_preprocess.c: dynamic tiling and normalisation (see
 * image_preprocess.h; docs/model.md §4); the resizes are image_resize.c's.
 *
 * Design: the grid choice replays the reference's Python literally, down to
 * the iteration order of the set its candidate grids come from (CPython's
 * tuple hash and set probing, reproduced here), in double arithmetic; the
 * normalisation is a 256-entry fp32 table per channel, computed the way
 * torchvision computes it, so tiles are a table lookup per value. */
#include "model/image_preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "model/image_resize.h"

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

/* ---- tiles ----------------------------------------------------------------------- */

static const float norm_mean[3] = {0.485f, 0.456f, 0.406f};
static const float norm_std[3] = {0.229f, 0.224f, 0.225f};

/* value/255 then (x - mean) / std, in fp32 as torchvision computes it. */
void mm_image_norm_lut(float lut[3][256])
{
    const float *mean = norm_mean, *std = norm_std;
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++)
            lut[c][v] = ((float)v / 255.0f - mean[c]) / std[c];
}

/* Copies the S x S square at (x0, y0) of img into one CHW tile: normalised
 * through lut into fdst, or as its 8-bit pixels into pdst (fdst NULL). */
static void emit_tile(const struct mm_image *img, int64_t x0, int64_t y0, int64_t s,
                      const float lut[3][256], float *fdst, uint8_t *pdst)
{
    const size_t plane = (size_t)s * (size_t)s;
    for (int64_t y = 0; y < s; y++) {
        const uint8_t *src = img->rgb + ((size_t)(y0 + y) * (size_t)img->width + (size_t)x0) * 3;
        const size_t row = (size_t)y * (size_t)s;
        if (fdst) {
            float *r = fdst + row, *g = r + plane, *b = g + plane;
            for (int64_t x = 0; x < s; x++) {
                r[x] = lut[0][src[3 * x]];
                g[x] = lut[1][src[3 * x + 1]];
                b[x] = lut[2][src[3 * x + 2]];
            }
        } else {
            uint8_t *r = pdst + row, *g = r + plane, *b = g + plane;
            for (int64_t x = 0; x < s; x++) {
                r[x] = src[3 * x];
                g[x] = src[3 * x + 1];
                b[x] = src[3 * x + 2];
            }
        }
    }
}

static enum mm_status preprocess(const struct mm_image *img, const struct mm_image_params *p,
                                 bool pixels, struct mm_image_tiles *out, struct mm_err *err)
{
    memset(out, 0, sizeof *out);
    struct mm_tile_grid g;
    enum mm_status st = mm_image_choose_grid(img->width, img->height, p, &g, err);
    if (st != MM_OK)
        return st;
    const int64_t s = p->tile_size, n = g.cols * g.rows;
    const int64_t count = n + (p->use_thumbnail && n != 1);
    size_t bytes;
    if (!mm_size_mul((size_t)count * 3, (size_t)s * (size_t)s, &bytes) ||
        !mm_size_mul(bytes, pixels ? 1 : sizeof(float), &bytes))
        return mm_err_set(err, MM_ERR_OVERFLOW, "image: tile buffer size overflows");
    if (pixels)
        out->pixels = malloc(bytes);
    else
        out->data = malloc(bytes);
    if (!out->data && !out->pixels)
        return mm_err_set(err, MM_ERR_NOMEM, "image: cannot allocate %zu bytes of tiles", bytes);
    out->grid = g;
    out->count = count;
    out->size = s;
    float lut[3][256];
    mm_image_norm_lut(lut);
    const size_t tile_floats = 3 * (size_t)s * (size_t)s;

    struct mm_image resized;
    if ((st = mm_image_resize(img, s * g.cols, s * g.rows, &resized, err)) != MM_OK)
        goto fail;
    for (int64_t t = 0; t < n; t++)
        emit_tile(&resized, t % g.cols * s, t / g.cols * s, s, lut,
                  pixels ? NULL : out->data + (size_t)t * tile_floats,
                  pixels ? out->pixels + (size_t)t * tile_floats : NULL);
    mm_image_free(&resized);
    if (count > n) {
        struct mm_image thumb;
        if ((st = mm_image_resize(img, s, s, &thumb, err)) != MM_OK)
            goto fail;
        emit_tile(&thumb, 0, 0, s, lut, pixels ? NULL : out->data + (size_t)n * tile_floats,
                  pixels ? out->pixels + (size_t)n * tile_floats : NULL);
        mm_image_free(&thumb);
    }
    return MM_OK;
fail:
    mm_image_tiles_free(out);
    return st;
}

enum mm_status mm_image_preprocess(const struct mm_image *img, const struct mm_image_params *p,
                                   struct mm_image_tiles *out, struct mm_err *err)
{
    return preprocess(img, p, false, out, err);
}

enum mm_status mm_image_preprocess_pixels(const struct mm_image *img,
                                          const struct mm_image_params *p,
                                          struct mm_image_tiles *out, struct mm_err *err)
{
    return preprocess(img, p, true, out, err);
}

enum mm_status mm_image_tiles_for_request(const struct mm_image *img,
                                          const struct mm_image_params *p,
                                          const struct mm_image_limits *lim, int64_t *used,
                                          bool pixels, struct mm_image_tiles *out,
                                          struct mm_err *err)
{
    memset(out, 0, sizeof *out);
    int64_t count, charged = *used;
    enum mm_status st = mm_image_count_tiles(img->width, img->height, p, &count, err);
    if (st == MM_OK)
        st = mm_image_request_add_tiles(lim, &charged, count, err);
    if (st == MM_OK)
        st = preprocess(img, p, pixels, out, err);
    if (st == MM_OK)
        *used = charged;
    return st;
}

void mm_image_tiles_free(struct mm_image_tiles *t)
{
    if (!t)
        return;
    free(t->data);
    free(t->pixels);
    memset(t, 0, sizeof *t);
}

enum mm_status mm_image_tiles_pack(const float *tiles, int64_t n, int64_t size, uint8_t *out,
                                   struct mm_err *err)
{
    float lut[3][256];
    mm_image_norm_lut(lut);
    const size_t plane = (size_t)size * (size_t)size, total = (size_t)n * 3 * plane;
    for (size_t i = 0; i < total; i++) {
        const int c = (int)(i / plane % 3);
        const float f = tiles[i];
        /* the LUT is increasing: invert it, then check the neighbours exactly */
        const float guess = (f * norm_std[c] + norm_mean[c]) * 255.0f;
        if (!(guess > -2.0f && guess < 257.0f))
            return mm_err_set(err, MM_ERR_INVALID, "tile value %g is not a normalised pixel",
                              (double)f);
        const int v0 = (int)lrintf(guess);
        int v = -1;
        for (int d = -1; d <= 1 && v < 0; d++)
            if (v0 + d >= 0 && v0 + d <= 255 && lut[c][v0 + d] == f)
                v = v0 + d;
        if (v < 0)
            return mm_err_set(err, MM_ERR_INVALID, "tile value %g is not a normalised pixel",
                              (double)f);
        out[i] = (uint8_t)v;
    }
    return MM_OK;
}

void mm_image_tiles_unpack(const uint8_t *pixels, int64_t n, int64_t size, float *out)
{
    float lut[3][256];
    mm_image_norm_lut(lut);
    const size_t plane = (size_t)size * (size_t)size;
    for (int64_t t = 0; t < n * 3; t++) {
        const float *l = lut[t % 3];
        const uint8_t *src = pixels + (size_t)t * plane;
        float *dst = out + (size_t)t * plane;
        for (size_t i = 0; i < plane; i++)
            dst[i] = l[src[i]];
    }
}
