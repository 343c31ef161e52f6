/* checked.h: overflow-checked size arithmetic for sizes that come from files
 * or requests (docs/style.md rule 3). Each returns false on overflow and leaves
 * *out untouched. Pure functions; callable from any thread. */
#ifndef MM_BASE_CHECKED_H
#define MM_BASE_CHECKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

bool mm_size_mul(size_t a, size_t b, size_t *out);
bool mm_size_add(size_t a, size_t b, size_t *out);
bool mm_i64_mul(int64_t a, int64_t b, int64_t *out);
bool mm_i64_add(int64_t a, int64_t b, int64_t *out);

#endif
