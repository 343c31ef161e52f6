/* safetensors.h: a validated, memory-mapped reader for safetensors files
 * (single file or sharded with model.safetensors.index.json), and a writer.
 *
 * Design: everything is checked once at open (header length vs file size,
 * JSON shape, dtype, shape x dtype size == byte range, ranges inside the data
 * area, no overlaps, no duplicate names across shards), so a struct
 * mm_tensor handed out afterwards can be read without further checks. Tensor
 * data stays in the mapping: nothing is copied. */
#ifndef MM_MODEL_SAFETENSORS_H
#define MM_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/dtype.h"
#include "base/status.h"

#define MM_TENSOR_MAX_DIMS 8

/* A view of one stored tensor; data points into a read-only mapping owned
 * by the struct mm_safetensors it came from. */
struct mm_tensor {
    const char *name;
    enum mm_dtype dtype;
    int ndim;
    int64_t shape[MM_TENSOR_MAX_DIMS];
    int64_t numel;
    const void *data;
    size_t nbytes;
    int shard; /* index of the file it lives in */
};

struct mm_safetensors; /* opaque: the mapped files and the tensor table */

/* Opens one .safetensors file. *out is owned by the caller
 * (mm_safetensors_close). */
enum mm_status mm_safetensors_open_file(const char *path, struct mm_safetensors **out,
                                        struct mm_err *err);

/* Opens a checkpoint directory: DIR/model.safetensors.index.json when it
 * exists (every shard its weight_map names, and each name must be in the
 * shard the map says), else DIR/model.safetensors. When both exist the
 * index wins and a warning is logged. */
enum mm_status mm_safetensors_open_dir(const char *dir, struct mm_safetensors **out,
                                       struct mm_err *err);

/* Validates a header held in memory (the fuzz target's entry point): buf is
 * the whole file content. */
enum mm_status mm_safetensors_open_buffer(const void *buf, size_t len, const char *name,
                                          struct mm_safetensors **out, struct mm_err *err);

void mm_safetensors_close(struct mm_safetensors *st);

/* Lookup by name; NULL when absent. The result is borrowed from st. */
const struct mm_tensor *mm_safetensors_find(const struct mm_safetensors *st, const char *name);

int64_t mm_safetensors_count(const struct mm_safetensors *st);
/* i-th tensor in name order (borrowed). */
const struct mm_tensor *mm_safetensors_at(const struct mm_safetensors *st, int64_t i);

/* ---- writer ---------------------------------------------------------------
 * Writes a file in two phases: declare every tensor (name, dtype, shape), then
 * write their bytes in declaration order. The header is padded with spaces to
 * a multiple of 8 bytes, as the reference writer does. */
struct mm_st_writer;

enum mm_status mm_st_writer_create(const char *path, struct mm_st_writer **out, struct mm_err *err);
/* name is copied. */
enum mm_status mm_st_writer_declare(struct mm_st_writer *w, const char *name, enum mm_dtype dtype,
                                    int ndim, const int64_t *shape, struct mm_err *err);
/* Writes the header; call once after all declarations. */
enum mm_status mm_st_writer_begin_data(struct mm_st_writer *w, struct mm_err *err);
/* Appends bytes of the current tensor; a tensor may be written in pieces. */
enum mm_status mm_st_writer_write(struct mm_st_writer *w, const void *data, size_t n,
                                  struct mm_err *err);
/* Checks that exactly the declared bytes were written, closes the file, frees w. */
enum mm_status mm_st_writer_finish(struct mm_st_writer *w, struct mm_err *err);
/* Abandons a writer (on an error path): closes and frees. */
void mm_st_writer_abort(struct mm_st_writer *w);

#endif
