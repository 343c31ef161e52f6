/* buffer.h: growing a heap byte buffer by doubling, the one way the request
 * channel, the HTTP bodies and replies and the response text grow.
 *
 * Design: the caller keeps its own (pointer, capacity) pair; this only makes
 * room, so each owner keeps its layout and its length counter. */
#ifndef MM_BASE_BUFFER_H
#define MM_BASE_BUFFER_H

#include <stdbool.h>
#include <stddef.h>

/* Makes *buf (capacity *cap bytes; NULL and 0 when empty) hold at least need
 * bytes: the capacity doubles from first_cap (or the current capacity) until
 * it fits. Contents are kept. false when out of memory or the size would
 * overflow, in which case *buf and *cap are unchanged. Any thread, on its own
 * buffer. */
bool mm_buffer_reserve(char **buf, size_t *cap, size_t need, size_t first_cap);

#endif
