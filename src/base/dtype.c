/* dtype.c: dtype table and scalar conversions of dtype.h. */
#include "base/dtype.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtypes[MM_DTYPE_COUNT] = {
    [MM_DTYPE_F32] = {"F32", 4},   [MM_DTYPE_F16] = {"F16", 2}, [MM_DTYPE_BF16] = {"BF16", 2},
    [MM_DTYPE_F64] = {"F64", 8},   [MM_DTYPE_I64] = {"I64", 8}, [MM_DTYPE_I32] = {"I32", 4},
    [MM_DTYPE_I16] = {"I16", 2},   [MM_DTYPE_I8] = {"I8", 1},   [MM_DTYPE_U8] = {"U8", 1},
    [MM_DTYPE_BOOL] = {"BOOL", 1},
};

size_t mm_dtype_size(enum mm_dtype t) { return dtypes[t].size; }
const char *mm_dtype_name(enum mm_dtype t) { return dtypes[t].name; }

int mm_dtype_parse(const char *name)
{
    for (int i = 0; i < MM_DTYPE_COUNT; i++)
        if (strcmp(name, dtypes[i].name) == 0)
            return i;
    return -1;
}

int mm_dtype_is_float(enum mm_dtype t)
{
    return t == MM_DTYPE_F32 || t == MM_DTYPE_F16 || t == MM_DTYPE_BF16;
}

float mm_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t mm_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a quiet NaN */
        return (uint16_t)((u >> 16) | 0x40);
    /* round to nearest, ties to even */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float mm_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1f;
    const uint32_t man = h & 0x3ff;
    float f;
    if (exp == 0) {
        f = ldexpf((float)man, -24); /* zero or subnormal */
    } else if (exp == 31) {
        f = man ? NAN : INFINITY;
    } else {
        f = ldexpf((float)(man | 0x400), (int)exp - 25);
    }
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u |= sign;
    memcpy(&f, &u, sizeof f);
    return f;
}

void mm_dtype_to_f32(enum mm_dtype t, const void *src, float *dst, int64_t n)
{
    if (t == MM_DTYPE_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2); /* unaligned-safe */
        dst[i] = t == MM_DTYPE_BF16 ? mm_bf16_to_f32(h) : mm_f16_to_f32(h);
    }
}
