/* check_image_preprocess.c: grid choice, tiling, normalisation and tile
 * limits of model/image_preprocess.c. Pixel-exactness against Pillow itself
 * is the job of check_image_conformance.sh. */
#include "model/image_preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const struct mm_image_params P12 = {
    .tile_size = 448, .min_tiles = 1, .max_tiles = 12, .use_thumbnail = true};

START_TEST(test_candidates_python_order)
{
    /* sorted(set(...), key=i*j) as CPython 3.11 prints it for min 1, max 12 */
    static const int64_t want[][2] = {{1, 1},  {1, 2},  {2, 1}, {3, 1}, {1, 3},  {2, 2},  {4, 1},
                                      {1, 4},  {5, 1},  {1, 5}, {1, 6}, {6, 1},  {3, 2},  {2, 3},
                                      {7, 1},  {1, 7},  {4, 2}, {2, 4}, {1, 8},  {8, 1},  {1, 9},
                                      {3, 3},  {9, 1},  {2, 5}, {5, 2}, {10, 1}, {1, 10}, {11, 1},
                                      {1, 11}, {12, 1}, {3, 4}, {4, 3}, {1, 12}, {6, 2},  {2, 6}};
    struct mm_tile_grid g[64];
    const int64_t n = mm_image_grid_candidates(1, 12, g, 64);
    ck_assert_int_eq(n, (int64_t)(sizeof want / sizeof want[0]));
    for (int64_t i = 0; i < n; i++) {
        ck_assert_int_eq(g[i].cols, want[i][0]);
        ck_assert_int_eq(g[i].rows, want[i][1]);
    }
    ck_assert_int_eq(mm_image_grid_candidates(0, 12, g, 64), -1);
    ck_assert_int_eq(mm_image_grid_candidates(3, 2, g, 64), -1);
    ck_assert_int_eq(mm_image_grid_candidates(1, MM_IMAGE_MAX_TILES + 1, g, 64), -1);
    ck_assert_int_gt(mm_image_grid_candidates(1, MM_IMAGE_MAX_TILES, NULL, 0), 1000);
}
END_TEST

START_TEST(test_choose_grid)
{
    static const struct {
        int64_t w, h, max, cols, rows;
    } cases[] = {
        {448, 448, 12, 1, 1},   {1, 1, 12, 1, 1},       {900, 900, 12, 2, 2}, /* tie: area wins */
        {1400, 1400, 12, 3, 3}, {4000, 3000, 12, 4, 3}, {1, 2000, 12, 1, 12}, {3000, 5, 12, 12, 1},
        {1000, 333, 12, 3, 1},  {37, 53, 12, 2, 3},     {777, 333, 24, 7, 3}, {777, 333, 6, 2, 1},
        {640, 480, 12, 4, 3},   {2, 1, 12, 2, 1},       {777, 333, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct mm_image_params p = P12;
        p.max_tiles = cases[i].max;
        struct mm_tile_grid g;
        struct mm_err err;
        ck_assert_int_eq(mm_image_choose_grid(cases[i].w, cases[i].h, &p, &g, &err), MM_OK);
        ck_assert_msg(g.cols == cases[i].cols && g.rows == cases[i].rows,
                      "%lldx%lld: got %lldx%lld", (long long)cases[i].w, (long long)cases[i].h,
                      (long long)g.cols, (long long)g.rows);
    }
    int64_t count;
    struct mm_err err;
    ck_assert_int_eq(mm_image_count_tiles(4000, 3000, &P12, &count, &err), MM_OK);
    ck_assert_int_eq(count, 13);
    ck_assert_int_eq(mm_image_count_tiles(448, 448, &P12, &count, &err), MM_OK);
    ck_assert_int_eq(count, 1); /* no thumbnail for a single tile */
    struct mm_image_params nothumb = P12;
    nothumb.use_thumbnail = false;
    ck_assert_int_eq(mm_image_count_tiles(4000, 3000, &nothumb, &count, &err), MM_OK);
    ck_assert_int_eq(count, 12);
    struct mm_tile_grid g;
    ck_assert_int_eq(mm_image_choose_grid(0, 10, &P12, &g, &err), MM_ERR_INVALID);
}
END_TEST

START_TEST(test_params_and_limits)
{
    struct mm_config cfg = {.force_image_size = 448,
                            .min_dynamic_patch = 1,
                            .max_dynamic_patch = 12,
                            .use_thumbnail = true};
    struct mm_image_params p;
    struct mm_err err;
    ck_assert_int_eq(mm_image_params_from_config(&cfg, NULL, &p, &err), MM_OK);
    ck_assert_int_eq(p.max_tiles, 12);
    const struct mm_image_limits lim = {.max_tiles_per_image = 6, .max_tiles_per_request = 20};
    ck_assert_int_eq(mm_image_params_from_config(&cfg, &lim, &p, &err), MM_OK);
    ck_assert_int_eq(p.max_tiles, 6);
    cfg.min_dynamic_patch = 8; /* above the lowered max */
    ck_assert_int_eq(mm_image_params_from_config(&cfg, &lim, &p, &err), MM_ERR_INVALID);
    cfg.min_dynamic_patch = 1;
    cfg.max_dynamic_patch = MM_IMAGE_MAX_TILES + 1;
    ck_assert_int_eq(mm_image_params_from_config(&cfg, NULL, &p, &err), MM_ERR_INVALID);

    int64_t used = 0;
    ck_assert_int_eq(mm_image_request_add_tiles(&lim, &used, 13, &err), MM_OK);
    ck_assert_int_eq(mm_image_request_add_tiles(&lim, &used, 8, &err), MM_ERR_LIMIT);
    ck_assert_int_eq(used, 13);
    ck_assert(strstr(err.msg, "20") != NULL);
    ck_assert_int_eq(mm_image_request_add_tiles(&lim, &used, 7, &err), MM_OK);
    ck_assert_int_eq(used, 20);
    used = 0;
    ck_assert_int_eq(
        mm_image_request_add_tiles(NULL, &used, MM_IMAGE_DEFAULT_MAX_TILES_PER_REQUEST + 1, &err),
        MM_ERR_LIMIT);
}
END_TEST

START_TEST(test_preprocess_layout_and_normalisation)
{
    /* 896 x 448: a 2x1 grid, no resize needed, + thumbnail. Left half black,
     * right half (255, 128, 0): tile 0 is all black, tile 1 all colour. */
    struct mm_image img = {.width = 896, .height = 448, .rgb = malloc(896 * 448 * 3)};
    for (int y = 0; y < 448; y++)
        for (int x = 0; x < 896; x++) {
            uint8_t *p = img.rgb + (y * 896 + x) * 3;
            p[0] = x < 448 ? 0 : 255;
            p[1] = x < 448 ? 0 : 128;
            p[2] = 0;
        }
    struct mm_image_tiles t;
    struct mm_err err;
    ck_assert_int_eq(mm_image_preprocess(&img, &P12, &t, &err), MM_OK);
    ck_assert_int_eq(t.grid.cols, 2);
    ck_assert_int_eq(t.grid.rows, 1);
    ck_assert_int_eq(t.count, 3);
    ck_assert_int_eq(t.size, 448);
    const size_t plane = 448 * 448;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    const float black[3] = {-mean[0] / std[0], -mean[1] / std[1], -mean[2] / std[2]};
    const float col[3] = {(1.0f - mean[0]) / std[0], (128.0f / 255.0f - mean[1]) / std[1],
                          -mean[2] / std[2]};
    for (int c = 0; c < 3; c++) {
        ck_assert_float_eq_tol(t.data[c * plane + 1234], black[c], 1e-6);
        ck_assert_float_eq_tol(t.data[3 * plane + c * plane + 4321], col[c], 1e-6);
    }
    /* the thumbnail (last) sees both halves */
    const float *th = t.data + 6 * plane;
    ck_assert_float_eq_tol(th[100 * 448 + 10], black[0], 1e-6);
    ck_assert_float_eq_tol(th[100 * 448 + 440], col[0], 1e-6);
    mm_image_tiles_free(&t);
    mm_image_tiles_free(&t); /* twice is harmless */

    struct mm_image_params one = P12;
    one.max_tiles = 1;
    ck_assert_int_eq(mm_image_preprocess(&img, &one, &t, &err), MM_OK);
    ck_assert_int_eq(t.count, 1);
    mm_image_tiles_free(&t);
    mm_image_free(&img);
}
END_TEST

START_TEST(test_preprocess_small_tiles_extreme_aspect)
{
    struct mm_image img = mm_test_image(3, 900, 99);
    struct mm_image_params p = {
        .tile_size = 14, .min_tiles = 1, .max_tiles = 40, .use_thumbnail = true};
    struct mm_image_tiles t;
    struct mm_err err;
    ck_assert_int_eq(mm_image_preprocess(&img, &p, &t, &err), MM_OK);
    ck_assert_int_eq(t.grid.cols, 1);
    ck_assert_int_eq(t.grid.rows, 40);
    ck_assert_int_eq(t.count, 41);
    for (int64_t i = 0; i < t.count * 3 * 14 * 14; i++)
        ck_assert(isfinite(t.data[i]) && fabsf(t.data[i]) < 3.0f);
    mm_image_tiles_free(&t);
    mm_image_free(&img);
}
END_TEST

/* The request path charges tiles before allocating them. */
START_TEST(test_tiles_for_request_budget)
{
    struct mm_image img = mm_test_image(3, 900, 7); /* 1 x 40 grid + thumbnail = 41 tiles */
    const struct mm_image_params p = {
        .tile_size = 14, .min_tiles = 1, .max_tiles = 40, .use_thumbnail = true};
    const struct mm_image_limits lim = {.max_tiles_per_request = 64};
    struct mm_image_tiles t;
    struct mm_err err;
    int64_t used = 0;
    ck_assert_int_eq(mm_image_tiles_for_request(&img, &p, &lim, &used, false, &t, &err), MM_OK);
    ck_assert_int_eq(used, 41);
    ck_assert_int_eq(t.count, 41);
    mm_image_tiles_free(&t);
    /* a second such image would pass the budget: refused, nothing charged or allocated */
    ck_assert_int_eq(mm_image_tiles_for_request(&img, &p, &lim, &used, false, &t, &err),
                     MM_ERR_LIMIT);
    ck_assert_int_eq(used, 41);
    ck_assert_ptr_null(t.data);
    mm_image_tiles_free(&t);
    mm_image_free(&img);
}
END_TEST

/* Stored tiles: packing to 8-bit pixels and back gives the very same floats,
 * for every pixel value in every channel; foreign values are refused. */
START_TEST(test_tiles_pack_round_trip)
{
    struct mm_image img = mm_test_image(3, 900, 5);
    const struct mm_image_params p = {
        .tile_size = 16, .min_tiles = 1, .max_tiles = 6, .use_thumbnail = true};
    struct mm_image_tiles t;
    struct mm_err err;
    ck_assert_int_eq(mm_image_preprocess(&img, &p, &t, &err), MM_OK);
    /* make tile 0 hold every value 0..255 in each channel */
    struct mm_image all = {.width = 16, .height = 16, .rgb = malloc(16 * 16 * 3)};
    for (int i = 0; i < 256; i++)
        for (int c = 0; c < 3; c++)
            all.rgb[i * 3 + c] = (uint8_t)(c == 1 ? 255 - i : i);
    struct mm_image_params one = p;
    one.max_tiles = 1;
    struct mm_image_tiles t0;
    ck_assert_int_eq(mm_image_preprocess(&all, &one, &t0, &err), MM_OK);
    const size_t tile = 3 * 16 * 16;
    memcpy(t.data, t0.data, tile * sizeof(float));
    const size_t n = (size_t)t.count * tile;
    uint8_t *px = malloc(n);
    float *back = malloc(n * sizeof *back);
    ck_assert_int_eq(mm_image_tiles_pack(t.data, t.count, 16, px, &err), MM_OK);
    for (int i = 0; i < 256; i++)
        ck_assert_int_eq(px[256 + i], 255 - i); /* green plane of tile 0 */
    mm_image_tiles_unpack(px, t.count, 16, back);
    ck_assert_int_eq(memcmp(back, t.data, n * sizeof *back), 0);
    back[7] = 0.123456f;
    ck_assert_int_eq(mm_image_tiles_pack(back, t.count, 16, px, &err), MM_ERR_INVALID);
    back[7] = NAN;
    ck_assert_int_eq(mm_image_tiles_pack(back, t.count, 16, px, &err), MM_ERR_INVALID);
    free(px);
    free(back);
    mm_image_tiles_free(&t0);
    mm_image_tiles_free(&t);
    mm_image_free(&all);
    mm_image_free(&img);
}
END_TEST

/* The 8-bit form: the same tiles (grid, count, thumbnail) as their pixels,
 * which unpack to exactly the floats mm_image_preprocess writes, through
 * either entry point; the LUT is those floats. */
START_TEST(test_preprocess_pixels)
{
    struct mm_image img = mm_test_image(3, 900, 5);
    const struct mm_image_params p = {
        .tile_size = 16, .min_tiles = 1, .max_tiles = 6, .use_thumbnail = true};
    struct mm_image_tiles f, px, rq;
    struct mm_err err;
    ck_assert_int_eq(mm_image_preprocess(&img, &p, &f, &err), MM_OK);
    ck_assert_int_eq(mm_image_preprocess_pixels(&img, &p, &px, &err), MM_OK);
    ck_assert_ptr_null(px.data);
    ck_assert_int_eq(px.count, f.count);
    ck_assert_int_eq(px.grid.cols, f.grid.cols);
    ck_assert_int_eq(px.grid.rows, f.grid.rows);
    const size_t n = (size_t)f.count * 3 * 16 * 16;
    float *back = malloc(n * sizeof *back);
    mm_image_tiles_unpack(px.pixels, px.count, 16, back);
    ck_assert_int_eq(memcmp(back, f.data, n * sizeof *back), 0);
    int64_t used = 0;
    ck_assert_int_eq(mm_image_tiles_for_request(&img, &p, NULL, &used, true, &rq, &err), MM_OK);
    ck_assert_int_eq(used, f.count);
    ck_assert_ptr_null(rq.data);
    ck_assert_int_eq(memcmp(rq.pixels, px.pixels, n), 0);
    float lut[3][256];
    mm_image_norm_lut(lut);
    for (size_t i = 0; i < n; i++)
        ck_assert(lut[i / (16 * 16) % 3][px.pixels[i]] == f.data[i]);
    free(back);
    mm_image_tiles_free(&rq);
    mm_image_tiles_free(&px);
    mm_image_tiles_free(&f);
    mm_image_free(&img);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model/image_preprocess");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_candidates_python_order);
    tcase_add_test(tc, test_choose_grid);
    tcase_add_test(tc, test_params_and_limits);
    tcase_add_test(tc, test_preprocess_layout_and_normalisation);
    tcase_add_test(tc, test_preprocess_small_tiles_extreme_aspect);
    tcase_add_test(tc, test_tiles_for_request_budget);
    tcase_add_test(tc, test_tiles_pack_round_trip);
    tcase_add_test(tc, test_preprocess_pixels);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
