/* testutil.h: small helpers shared by the Check suites: temporary
 * directories, whole-file writes, and the standard suite runner. */
#ifndef MM_TESTS_TESTUTIL_H
#define MM_TESTS_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include <check.h>

#include "model/image_decode.h"

/* Creates a fresh directory under $TMPDIR (or /tmp); writes its path to buf. */
void mm_test_tmpdir(char *buf, size_t cap);
/* Removes a directory tree created by mm_test_tmpdir. */
void mm_test_rmdir(const char *dir);
/* Writes the synthetic checkpoint of `preset` (mmmamba mkmodel's presets,
 * one shard, weights from `seed`) into a fresh mm_test_tmpdir; its path to
 * buf. Aborts the test on failure. */
void mm_test_synthetic_model(char *buf, size_t cap, const char *preset, uint64_t seed);
/* Writes len bytes to path (aborts the test on failure). */
void mm_test_write_file(const char *path, const void *data, size_t len);
/* Reads a whole file; caller frees. NULL if it cannot be read. */
char *mm_test_read_file(const char *path, size_t *len);
/* Source tree root ($top_srcdir from `make check`, else "."). */
const char *mm_test_srcdir(void);
/* Runs a suite with the normal runner; returns the process exit code. */
int mm_test_run(Suite *s);
/* The same without forking: a GPU suite initialises CUDA before its tests,
 * and a forked child cannot use the parent's CUDA context. */
int mm_test_run_nofork(Suite *s);

/* A w x h RGB test image: a smooth ramp plus noise plus occasional hard
 * 0/255 edges (to reach the resize clamps), deterministic from seed. The
 * caller frees it with mm_image_free. */
struct mm_image mm_test_image(int64_t w, int64_t h, uint32_t seed);

/* A tiny protobuf writer for hand-made SentencePiece models. */
struct mm_test_pb {
    uint8_t p[8192];
    size_t n;
};
void mm_test_pb_varint(struct mm_test_pb *b, uint64_t v);
void mm_test_pb_key(struct mm_test_pb *b, uint32_t field, uint32_t wire);
void mm_test_pb_bytes(struct mm_test_pb *b, uint32_t field, const void *s, size_t n);
void mm_test_pb_msg(struct mm_test_pb *b, uint32_t field, const struct mm_test_pb *m);
/* A ModelProto.SentencePiece (field 1): piece, score, type (omitted when 0). */
void mm_test_pb_piece(struct mm_test_pb *b, const char *text, float score, int type);

#endif
