/* stops.h: stop strings matched on a choice's streamed text, across token
 * boundaries.
 *
 * Design: the matcher holds back the longest tail of the text that is still
 * the beginning of some stop string, and releases the rest; a completed
 * stop string ends the text right before it and is never released. The
 * text fed in is whole UTF-8 characters (the detokenizer's output) and stop
 * strings are valid UTF-8, so a hold-back never splits a character. Owned
 * by the engine thread (one per choice). */
#ifndef MM_SERVE_STOPS_H
#define MM_SERVE_STOPS_H

#include <stdbool.h>
#include <stddef.h>

#include "base/status.h"

struct mm_stops {
    const char *const *stop; /* borrowed (the request owns them) */
    size_t *stop_len;
    int n_stop;
    char *buf; /* held-back text at [released, len) */
    size_t len, cap, released;
};

/* stop (n_stop strings, each non-empty) is borrowed and must outlive m. */
enum mm_status mm_stops_init(struct mm_stops *m, const char *const *stop, int n_stop,
                             struct mm_err *err);
void mm_stops_free(struct mm_stops *m);

/* Appends text. *out (borrowed until the next call) receives the text now
 * safe to release; *matched is set when a stop string completed (the
 * released text then ends right before it, and the matcher is finished). */
enum mm_status mm_stops_feed(struct mm_stops *m, const char *text, size_t len, const char **out,
                             size_t *out_len, bool *matched, struct mm_err *err);

/* The last feed of a choice that ends without a stop id (max tokens, EOS):
 * like mm_stops_feed, but when no stop string completes, everything still
 * held back is released too. */
enum mm_status mm_stops_finish(struct mm_stops *m, const char *text, size_t len, const char **out,
                               size_t *out_len, bool *matched, struct mm_err *err);

#endif
