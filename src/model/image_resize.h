/* image_resize.h: Pillow's Image.resize(size, Image.BICUBIC) on 8-bit RGB,
 * bit for bit.
 *
 * Design: Pillow 9.4's ImagingResample reproduced in its own integer
 * arithmetic (separable, horizontal pass first over only the rows the
 * vertical pass reads, bicubic a = -0.5 with the support widened by the
 * downscale factor, weights normalised in double and rounded to 22-bit fixed
 * point, 8-bit rounding and clamping between the passes), so the output
 * equals Pillow's exactly. The fast path (SSE2) computes the same integer
 * sums; the plain loops stay as the oracle it is tested against.
 *
 * Thread contract: no shared state; any thread may resize concurrently. */
#ifndef MM_MODEL_IMAGE_RESIZE_H
#define MM_MODEL_IMAGE_RESIZE_H

#include <stdint.h>

#include "base/status.h"
#include "model/image_decode.h"

/* Pillow's Image.resize((width, height), Image.BICUBIC) on RGB. in is
 * borrowed; the caller owns *out (mm_image_free). */
enum mm_status mm_image_resize(const struct mm_image *in, int64_t width, int64_t height,
                               struct mm_image *out, struct mm_err *err);

/* Which implementation computes the (identical) result. */
enum mm_resize_kernel {
    MM_RESIZE_BEST = 0, /* the fastest available: what mm_image_resize uses */
    MM_RESIZE_PLAIN,    /* Pillow's loops in plain C: the oracle */
    MM_RESIZE_SSE2,     /* x86-64 baseline SIMD */
    MM_RESIZE_AVX2,     /* AVX2, when the CPU has it */
};

/* mm_image_resize with a chosen kernel, for tests and benchmarks.
 * MM_ERR_UNSUPPORTED if this build or CPU lacks it. */
enum mm_status mm_image_resize_with(const struct mm_image *in, int64_t width, int64_t height,
                                    enum mm_resize_kernel kern, struct mm_image *out,
                                    struct mm_err *err);

#endif
