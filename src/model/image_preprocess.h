/* image_preprocess.h: decoded RGB image -> normalised fp32 tiles, the
 * reference's dynamic tiling (docs/model.md §4).
 *
 * Design: the 8-bit pixels of every tile equal the reference's (Pillow 9.4):
 * grid choice as its Python does it, every resize Pillow's bicubic
 * (image_resize.h) straight from the source image, crops row-major,
 * thumbnail last; only the final value/255, mean/std step is floating point.
 * Callers count tiles first (mm_image_count_tiles, then
 * mm_image_request_add_tiles) so an over-budget image is refused before its
 * tiles are allocated.
 *
 * Thread contract: no shared state; HTTP threads may preprocess concurrently.
 * Each call allocates its own scratch and frees it before returning. */
#ifndef MM_MODEL_IMAGE_PREPROCESS_H
#define MM_MODEL_IMAGE_PREPROCESS_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "model/config.h"
#include "model/image_decode.h"

/* Hard ceiling on tiles per image whatever the configuration says: bounds
 * the candidate-grid search and the output size. */
#define MM_IMAGE_MAX_TILES 256

/* Operator limits for images (server configuration). 0 means "default". */
struct mm_image_limits {
    struct mm_image_decode_limits decode;
    int64_t max_tiles_per_image;   /* caps max_dynamic_patch (default: the config's value) */
    int64_t max_tiles_per_request; /* all images of one request, thumbnails included
                                      (default 64) */
};

#define MM_IMAGE_DEFAULT_MAX_TILES_PER_REQUEST 64

/* What the tiling needs, usually derived from the model config. */
struct mm_image_params {
    int64_t tile_size;  /* S: force_image_size (448) */
    int64_t min_tiles;  /* min_dynamic_patch (1) */
    int64_t max_tiles;  /* max_dynamic_patch (12), possibly lowered by the limits */
    bool use_thumbnail; /* append the whole image resized to S x S when tiles > 1 */
};

/* A tiling grid: cols (i, across) x rows (j, down). */
struct mm_tile_grid {
    int64_t cols, rows;
};

/* The preprocessed tiles of one image; owned by the caller, released with
 * mm_image_tiles_free. Tiles are row-major over the grid, thumbnail last. */
struct mm_image_tiles {
    struct mm_tile_grid grid;
    int64_t count;   /* cols * rows, + 1 with a thumbnail */
    int64_t size;    /* S */
    float *data;     /* [count][3][S][S], normalised (mm_image_preprocess), or NULL */
    uint8_t *pixels; /* [count][3][S][S], the 8-bit pixels data would be normalised
                        from (mm_image_preprocess_pixels), or NULL */
};

/* Fills *p from the config, with max_tiles lowered to lim->max_tiles_per_image
 * when that is set (lim may be NULL). Fails if the result is unusable
 * (min > max, max above MM_IMAGE_MAX_TILES, tile size < 1). */
enum mm_status mm_image_params_from_config(const struct mm_config *cfg,
                                           const struct mm_image_limits *lim,
                                           struct mm_image_params *p, struct mm_err *err);

/* The reference's candidate grids for min..max tiles, in the order its
 * find_closest_aspect_ratio visits them: sorted by cols*rows, ties in the
 * iteration order of the Python set they come from (CPython 3.8+ tuple
 * hashing and set probing, reproduced). Writes up to cap grids; returns
 * the number of candidates, or -1 on bad arguments or allocation failure. */
int64_t mm_image_grid_candidates(int64_t min_tiles, int64_t max_tiles, struct mm_tile_grid *out,
                                 int64_t cap);

/* docs/model.md §4 grid choice for a width x height image. */
enum mm_status mm_image_choose_grid(int64_t width, int64_t height, const struct mm_image_params *p,
                                    struct mm_tile_grid *grid, struct mm_err *err);

/* Number of tiles (thumbnail included) an image of this size will give. */
enum mm_status mm_image_count_tiles(int64_t width, int64_t height, const struct mm_image_params *p,
                                    int64_t *count, struct mm_err *err);

/* Tiles one decoded image: grid choice, resize, crops, thumbnail,
 * normalisation into fp32 CHW. img is borrowed; *out is the caller's. */
enum mm_status mm_image_preprocess(const struct mm_image *img, const struct mm_image_params *p,
                                   struct mm_image_tiles *out, struct mm_err *err);

/* The same, keeping the tiles as their 8-bit pixels (out->pixels; a
 * quarter of the memory): mm_image_tiles_unpack gives exactly the floats
 * mm_image_preprocess writes. */
enum mm_status mm_image_preprocess_pixels(const struct mm_image *img,
                                          const struct mm_image_params *p,
                                          struct mm_image_tiles *out, struct mm_err *err);

/* lut[c][v]: the normalised value of 8-bit value v in channel c (what
 * mm_image_preprocess writes for it). */
void mm_image_norm_lut(float lut[3][256]);

/* Per-request accounting: adds n tiles to *used, refusing (MM_ERR_LIMIT,
 * *used unchanged) past lim->max_tiles_per_request (lim may be NULL). */
enum mm_status mm_image_request_add_tiles(const struct mm_image_limits *lim, int64_t *used,
                                          int64_t n, struct mm_err *err);

/* The request path in one call: counts the tiles img will give, charges them
 * to the request (*used, MM_ERR_LIMIT past lim->max_tiles_per_request) before
 * anything is allocated, then preprocesses (pixels: into out->pixels, as
 * mm_image_preprocess_pixels; else out->data). On failure *used is
 * unchanged and *out holds nothing. */
enum mm_status mm_image_tiles_for_request(const struct mm_image *img,
                                          const struct mm_image_params *p,
                                          const struct mm_image_limits *lim, int64_t *used,
                                          bool pixels, struct mm_image_tiles *out,
                                          struct mm_err *err);

void mm_image_tiles_free(struct mm_image_tiles *t);

/* Tiles kept for later (a stored conversation) take a quarter of the
 * memory as the 8-bit pixels they were normalised from: every value
 * mm_image_preprocess writes is one of 256 per channel, so the round trip
 * is exact. n tiles of [3][S][S]; pack fails (MM_ERR_INVALID) on a value
 * no 8-bit pixel gives (tiles that did not come from here). */
enum mm_status mm_image_tiles_pack(const float *tiles, int64_t n, int64_t size, uint8_t *out,
                                   struct mm_err *err);
void mm_image_tiles_unpack(const uint8_t *pixels, int64_t n, int64_t size, float *out);

#endif
