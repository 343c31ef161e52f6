/* f32file.h: raw little-endian fp32 arrays in files (tiles, logits): the one
 * reader and writer of the format the README promises and the conformance
 * tools read.
 *
 * Design: the file is exactly the values, 4 bytes each, least significant
 * byte first, on every host. The reader checks the file's size against what
 * the caller expects before allocating anything, so a count taken from a
 * command line cannot ask for more memory than the file backs. */
#ifndef MM_BASE_F32FILE_H
#define MM_BASE_F32FILE_H

#include <stddef.h>

#include "base/status.h"

/* Writes v[0..n) to path (created or truncated). */
enum mm_status mm_f32_write_file(const char *path, const float *v, size_t n, struct mm_err *err);

/* Reads a file of exactly n values into a new array *out (the caller frees
 * it). A file of another size is MM_ERR_INVALID naming both sizes; nothing is
 * allocated then. n = 0 yields a non-NULL empty array. */
enum mm_status mm_f32_read_file(const char *path, size_t n, float **out, struct mm_err *err);

#endif
