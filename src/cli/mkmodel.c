/* mkmodel.c: `mmmamba mkmodel`, a synthetic checkpoint from a preset
 * (model/synthetic.h), optionally varied by a few config switches. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "model/config.h"
#include "model/synthetic.h"

int mm_cli_mkmodel(const struct mm_cli_cmd *cmd, int argc, char **argv)
{
    const char *preset = NULL, *out = NULL, *shuffle = NULL, *normalize = NULL;
    long long seed = 1, shards = 1, image_size = 0;
    const struct mm_cli_opt opts[] = {
        MM_CLI_OPT_STRING("preset", "NAME", "preset to write (required; see below)", &preset),
        MM_CLI_OPT_STRING("out", "DIR", "new or empty directory to write (required)", &out),
        MM_CLI_OPT_INT("seed", "S", "random seed of the weights", &seed, 0, INT64_MAX),
        MM_CLI_OPT_INT("shards", "N", "safetensors files (N > 1 adds the index)", &shards, 1, 999),
        MM_CLI_OPT_CHOICE("pixel-shuffle-loc", "pre|post", "override the preset's", &shuffle),
        MM_CLI_OPT_CHOICE("normalize-encoder-output", "0|1", "override the preset's", &normalize),
        MM_CLI_OPT_INT("image-size", "N",
                       "override the preset's (0: keep; a multiple of the patch)", &image_size, 0,
                       4096),
    };
    const char *pos[1];
    int n_pos;
    const int rc =
        mm_cli_parse(cmd, opts, sizeof opts / sizeof opts[0], argc, argv, pos, 0, 0, &n_pos);
    if (rc >= 0) {
        if (rc == 0)
            printf("\npresets: %s\n", mm_synthetic_preset_names());
        return rc;
    }
    if (!preset || !out)
        return mm_cli_usage_error(cmd, "--preset and --out are required (presets: %s)",
                                  mm_synthetic_preset_names());
    struct mm_err err;
    struct mm_config cfg;
    if (mm_synthetic_preset(preset, &cfg, &err) != MM_OK)
        return mm_cli_fail(&err);
    if (shuffle)
        cfg.shuffle_loc = strcmp(shuffle, "post") == 0 ? MM_SHUFFLE_POST : MM_SHUFFLE_PRE;
    if (normalize)
        cfg.normalize_encoder_output = normalize[0] == '1';
    if (image_size) {
        if (image_size < cfg.patch_size || image_size % cfg.patch_size)
            return mm_cli_usage_error(cmd, "--image-size must be a multiple of %lld",
                                      (long long)cfg.patch_size);
        cfg.image_size = image_size;
    }
    const struct mm_synthetic_options opt = {.seed = (uint64_t)seed, .shards = (int)shards};
    if (mm_synthetic_write(out, &cfg, &opt, &err) != MM_OK)
        return mm_cli_fail(&err);
    printf("wrote %s (preset %s, seed %llu, %d shard%s)\n", out, preset,
           (unsigned long long)opt.seed, opt.shards, opt.shards > 1 ? "s" : "");
    return 0;
}
