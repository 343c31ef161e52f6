/* f32file.c: raw little-endian fp32 files (f32file.h). Values are converted
 * through their bit patterns so a big-endian host writes the same bytes. */
#include "base/f32file.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/checked.h"

#define BATCH 4096 /* values converted per write/read call */

enum mm_status mm_f32_write_file(const char *path, const float *v, size_t n, struct mm_err *err)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return mm_err_set(err, MM_ERR_IO, "%s: %s", path, strerror(errno));
    unsigned char buf[BATCH * 4];
    bool ok = true;
    for (size_t i = 0; ok && i < n; i += BATCH) {
        const size_t m = n - i < BATCH ? n - i : BATCH;
        for (size_t k = 0; k < m; k++) {
            uint32_t u;
            memcpy(&u, &v[i + k], 4);
            for (int b = 0; b < 4; b++)
                buf[4 * k + (size_t)b] = (unsigned char)(u >> (8 * b));
        }
        ok = fwrite(buf, 4, m, f) == m;
    }
    if (fclose(f) != 0 || !ok)
        return mm_err_set(err, MM_ERR_IO, "%s: write failed", path);
    return MM_OK;
}

enum mm_status mm_f32_read_file(const char *path, size_t n, float **out, struct mm_err *err)
{
    *out = NULL;
    size_t want;
    if (!mm_size_mul(n, 4, &want))
        return mm_err_set(err, MM_ERR_INVALID, "%s: %zu values is too many", path, n);
    FILE *f = fopen(path, "rb");
    if (!f)
        return mm_err_set(err, MM_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return mm_err_set(err, MM_ERR_IO, "%s: not a regular file", path);
    }
    if ((unsigned long long)sb.st_size != (unsigned long long)want) {
        fclose(f);
        return mm_err_set(err, MM_ERR_INVALID,
                          "%s: holds %lld bytes, expected %zu (%zu little-endian fp32 values)",
                          path, (long long)sb.st_size, want, n);
    }
    float *v = malloc(want ? want : 1);
    if (!v) {
        fclose(f);
        return mm_err_set(err, MM_ERR_NOMEM, "%s: out of memory for %zu bytes", path, want);
    }
    unsigned char buf[BATCH * 4];
    bool ok = true;
    for (size_t i = 0; ok && i < n; i += BATCH) {
        const size_t m = n - i < BATCH ? n - i : BATCH;
        ok = fread(buf, 4, m, f) == m;
        for (size_t k = 0; ok && k < m; k++) {
            const unsigned char *b = buf + 4 * k;
            const uint32_t u =
                (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
            memcpy(&v[i + k], &u, 4);
        }
    }
    fclose(f);
    if (!ok) {
        free(v);
        return mm_err_set(err, MM_ERR_IO, "%s: read failed", path);
    }
    *out = v;
    return MM_OK;
}
