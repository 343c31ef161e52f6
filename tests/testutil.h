/* testutil.h: small helpers shared by the Check suites: temporary
 * directories, whole-file writes, and the standard suite runner. */
#ifndef MM_TESTS_TESTUTIL_H
#define MM_TESTS_TESTUTIL_H

#include <stddef.h>

#include <check.h>

/* Creates a fresh directory under $TMPDIR (or /tmp); writes its path to buf. */
void mm_test_tmpdir(char *buf, size_t cap);
/* Removes a directory tree created by mm_test_tmpdir. */
void mm_test_rmdir(const char *dir);
/* Writes len bytes to path (aborts the test on failure). */
void mm_test_write_file(const char *path, const void *data, size_t len);
/* Reads a whole file; caller frees. NULL if it cannot be read. */
char *mm_test_read_file(const char *path, size_t *len);
/* Source tree root ($top_srcdir from `make check`, else "."). */
const char *mm_test_srcdir(void);
/* Runs a suite with the normal runner; returns the process exit code. */
int mm_test_run(Suite *s);

#endif
