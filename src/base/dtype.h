/* dtype.h: element types of stored tensors and the bf16/f16 <-> f32
 * conversions. bf16 rounding is round-to-nearest-even, as PyTorch does. */
#ifndef MM_BASE_DTYPE_H
#define MM_BASE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

enum mm_dtype {
    MM_DTYPE_F32 = 0,
    MM_DTYPE_F16,
    MM_DTYPE_BF16,
    MM_DTYPE_F64,
    MM_DTYPE_I64,
    MM_DTYPE_I32,
    MM_DTYPE_I16,
    MM_DTYPE_I8,
    MM_DTYPE_U8,
    MM_DTYPE_BOOL,
    MM_DTYPE_COUNT
};

/* Bytes per element. */
size_t mm_dtype_size(enum mm_dtype t);
/* The safetensors spelling ("BF16", ...). */
const char *mm_dtype_name(enum mm_dtype t);
/* Parses a safetensors dtype string; returns -1 when unknown. */
int mm_dtype_parse(const char *name);
/* True for F32, F16, BF16: the types weights may be stored in. */
int mm_dtype_is_float(enum mm_dtype t);

float mm_bf16_to_f32(uint16_t h);
uint16_t mm_f32_to_bf16(float f);
float mm_f16_to_f32(uint16_t h);

/* Converts n elements of a float-typed buffer (F32/F16/BF16) to f32. */
void mm_dtype_to_f32(enum mm_dtype t, const void *src, float *dst, int64_t n);

#endif
