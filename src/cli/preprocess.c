/* preprocess.c: `mmmamba preprocess`, one image to normalised tiles as raw
 * little-endian fp32 (what the image conformance test compares with
 * Pillow). */
#include <stdio.h>

#include "base/f32file.h"
#include "cli/cli.h"
#include "model/config.h"
#include "model/image_preprocess.h"

int mm_cli_preprocess(const struct mm_cli_cmd *cmd, int argc, char **argv)
{
    const char *out = NULL, *model = NULL;
    long long max_tiles = 0;
    bool timing = false;
    const struct mm_cli_opt opts[] = {
        MM_CLI_OPT_STRING("out", "FILE", "where the tiles go (required)", &out),
        MM_CLI_OPT_STRING("model", "DIR", "take the tiling settings from DIR/config.json", &model),
        MM_CLI_OPT_INT("max-tiles", "N", "most tiles before the thumbnail (0: the config's)",
                       &max_tiles, 0, MM_IMAGE_MAX_TILES),
        MM_CLI_OPT_FLAG("time", "print decode and tiling times on stderr", &timing),
    };
    const char *pos[1];
    int n_pos;
    const int rc =
        mm_cli_parse(cmd, opts, sizeof opts / sizeof opts[0], argc, argv, pos, 1, 1, &n_pos);
    if (rc >= 0)
        return rc;
    if (!out)
        return mm_cli_usage_error(cmd, "--out is required");
    struct mm_err err;
    /* The reference defaults (448-pixel tiles, 1..12, thumbnail) unless a
     * model's config.json says otherwise. */
    struct mm_config cfg = {.force_image_size = 448,
                            .min_dynamic_patch = 1,
                            .max_dynamic_patch = 12,
                            .use_thumbnail = true};
    if (model && mm_config_load(model, &cfg, &err) != MM_OK)
        return mm_cli_fail(&err);
    /* one image: the per-request budget is the per-image ceiling */
    struct mm_image_limits lim = {.max_tiles_per_image = max_tiles,
                                  .max_tiles_per_request = MM_IMAGE_MAX_TILES + 1};
    if (max_tiles > cfg.max_dynamic_patch)
        cfg.max_dynamic_patch = max_tiles; /* the flag sets the max outright */
    struct mm_image_params params;
    if (mm_image_params_from_config(&cfg, &lim, &params, &err) != MM_OK)
        return mm_cli_fail(&err);

    struct mm_image_tiles tiles;
    struct mm_cli_image_timing tm;
    int64_t used = 0;
    enum mm_status st = mm_cli_image_tiles(pos[0], &params, &lim, &used, &tiles, &tm, &err);
    if (st == MM_OK) {
        st = mm_f32_write_file(out, tiles.data,
                               (size_t)tiles.count * 3 * (size_t)tiles.size * (size_t)tiles.size,
                               &err);
        if (st == MM_OK)
            printf("%lld %lld %lld\n", (long long)tiles.grid.cols, (long long)tiles.grid.rows,
                   (long long)tiles.count);
        if (timing)
            fprintf(stderr, "image %lldx%lld: read+decode %.1f ms, tiles %.1f ms\n",
                    (long long)tm.width, (long long)tm.height, tm.decode_ms, tm.tiles_ms);
    }
    mm_image_tiles_free(&tiles);
    return st == MM_OK ? 0 : mm_cli_fail(&err);
}
