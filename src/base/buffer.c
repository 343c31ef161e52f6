/* buffer.c: see buffer.h. */
#include "base/buffer.h"

#include <stdint.h>
#include <stdlib.h>

bool mm_buffer_reserve(char **buf, size_t *cap, size_t need, size_t first_cap)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap : (first_cap ? first_cap : 1);
    while (n < need) {
        if (n > SIZE_MAX / 2)
            return false;
        n *= 2;
    }
    char *p = realloc(*buf, n);
    if (!p)
        return false;
    *buf = p;
    *cap = n;
    return true;
}
