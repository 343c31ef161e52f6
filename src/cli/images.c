/* images.c: one image from a path or a data: URL to tiles, as `generate`
 * and `preprocess` both take it (the daemon does the same through
 * image_source's URL rules). */
#include <string.h>
#include <strings.h>

#include "cli/cli.h"
#include "model/image_decode.h"
#include "model/image_preprocess.h"
#include "model/image_source.h"

enum mm_status mm_cli_image_tiles(const char *image, const struct mm_image_params *params,
                                  const struct mm_image_limits *lim, int64_t *used,
                                  struct mm_image_tiles *tiles, struct mm_cli_image_timing *tm,
                                  struct mm_err *err)
{
    memset(tiles, 0, sizeof *tiles);
    const double t0 = mm_cli_now();
    struct mm_image_bytes bytes;
    /* the scheme is case-insensitive, as the library reads it */
    enum mm_status st = strncasecmp(image, "data:", 5) == 0
                            ? mm_image_source_load(image, NULL, &bytes, err)
                            : mm_image_source_read_file(image, 0, &bytes, err);
    if (st != MM_OK)
        return st;
    struct mm_image img;
    st = mm_image_decode(bytes.data, bytes.len, &lim->decode, &img, err);
    mm_image_bytes_free(&bytes);
    if (st != MM_OK)
        return st;
    const double t1 = mm_cli_now();
    st = mm_image_tiles_for_request(&img, params, lim, used, false, tiles, err);
    if (tm)
        *tm = (struct mm_cli_image_timing){img.width, img.height, (t1 - t0) * 1e3,
                                           (mm_cli_now() - t1) * 1e3};
    mm_image_free(&img);
    return st;
}
