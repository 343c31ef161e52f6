/* request_engine.h: the engine side of a request (request.h), for the
 * scheduler only: reading what was asked, and queuing events.
 *
 * Design: the producer functions run on the engine thread. Room for every
 * choice's FINISH event is kept in reserve from creation on, so finishing
 * a request never fails for want of memory (only a token event can). */
#ifndef MM_SERVE_REQUEST_ENGINE_H
#define MM_SERVE_REQUEST_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "serve/request.h"

/* Marks the request submitted; false if it already was (a second submit). */
bool mm_request_claim(struct mm_request *r);
/* Whether it was claimed (any thread). */
bool mm_request_submitted(const struct mm_request *r);

/* What was asked (borrowed from the request, immutable after creation; the
 * stop strings and ids point into the request's own copies). */
const struct mm_request_params *mm_request_params_of(const struct mm_request *r);
const int32_t *mm_request_prompt(const struct mm_request *r, int64_t *n);
/* Its tiles in the form they were given: floats (mm_request_create) or
 * 8-bit pixels (mm_request_create_pixels); the other is NULL. */
const float *mm_request_tiles(const struct mm_request *r, int64_t *n_tiles);
const uint8_t *mm_request_pixels(const struct mm_request *r, int64_t *n_tiles);
/* Tiles first..first+count-1 as normalised floats: the request's own when
 * it holds floats, else scratch (room for count tiles of S = tile_size)
 * filled from the pixels. */
const float *mm_request_tiles_f32(const struct mm_request *r, int64_t first, int64_t count,
                                  int64_t tile_size, float *scratch);
/* The seed the engine draws with (params' when has_seed, else set at submission). */
void mm_request_set_seed(struct mm_request *r, uint64_t seed);

/* The state-cache keys of the prompt (mm_state_keys with these parameters)
 * and their prefix hashes (mm_state_prefix_hashes), n keys each: computed
 * by the first call and kept in the request, so that every cache query of
 * a request (dispatch, placement, admission) hashes its tiles once. Any
 * thread (a mutex guards the first computation); *keys and *ph are
 * borrowed, valid while the request is. MM_ERR_INVALID when the image
 * positions do not match the tiles, or for parameters other than the first
 * call's (then the caller computes its own). */
enum mm_status mm_request_state_keys(const struct mm_request *r, int64_t tile_floats,
                                     int32_t img_id, int64_t tokens_per_tile, const uint64_t **keys,
                                     const uint64_t **ph, struct mm_err *err);

/* Queues a token event (its text and top list are copied). MM_ERR_NOMEM
 * when the channel cannot grow (then nothing was queued). */
enum mm_status mm_request_push_token(struct mm_request *r, const struct mm_event *ev,
                                     struct mm_err *err);
/* Queues a FINISH event (text copied when memory allows; message copied
 * into the request when it carries the first error). Never fails. */
void mm_request_push_finish(struct mm_request *r, const struct mm_event *ev);
/* Wakes mm_request_wait and calls the notify callback if events were
 * queued since the last call (events become visible to waiters then, so
 * the engine publishes its step first). */
void mm_request_flush(struct mm_request *r);

#endif
