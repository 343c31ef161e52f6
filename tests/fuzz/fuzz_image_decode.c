/* fuzz_image_decode.c: libFuzzer target for the JPEG and PNG decoders
 * (src/model/image_decode.c). Every input must be rejected with an error or
 * give an RGB image of exactly width x height x 3 bytes, which this target
 * reads end to end so ASan would see a short buffer. The limits are smaller
 * than the server's so each run stays fast.
 * Build and run: make fuzz-image-decode && ./fuzz-image-decode -max_total_time=60 */
#include <stddef.h>
#include <stdint.h>

#include "model/image_decode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct mm_image_decode_limits lim = {
        .max_bytes = (size_t)1 << 20, .max_pixels = (int64_t)1 << 20, .max_side = 4096};
    struct mm_image img;
    struct mm_err err;
    if (mm_image_decode(data, size, &lim, &img, &err) != MM_OK)
        return 0;
    volatile uint8_t sink = 0;
    const size_t n = (size_t)img.width * (size_t)img.height * 3;
    for (size_t k = 0; k < n; k++)
        sink ^= img.rgb[k];
    (void)sink;
    mm_image_free(&img);
    return 0;
}
