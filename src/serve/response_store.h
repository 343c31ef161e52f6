/* response_store.h: finished responses of the Responses API, kept so that a
 * later request can continue one (`previous_response_id`), read it back or
 * delete it: the token ids the model consumed, the conversation's images,
 * the client's view of the response (opaque bytes here: JSON stays in the
 * HTTP layer), its owner and its times.
 *
 * Design: the ids are kept as consumed (prompt ids plus generated ids, then
 * the turn's closing <|im_end|>), never as text: re-tokenising generated
 * text need not give the same ids, and a continuation must extend exactly
 * the sequence a state snapshot was taken of. Images are kept as the 8-bit
 * pixels of their tiles (a quarter of the floats; unpacked exactly, no
 * decoding again) in reference-counted blobs that the responses of one
 * conversation share: turn N holds turn N-1's images plus its own, and the
 * byte bound counts each blob once. The store is a hash table with an LRU
 * list, bounded by a count and by bytes; the least recently used response
 * goes first. Ids are "resp_" and 48 hex digits from the kernel's CSPRNG
 * (192 bits): unguessable, so holding an id is the capability to read it
 * when no API keys are configured. With keys, the owner (the key that made
 * the response) must match, and another key finds nothing at all (the
 * HTTP layer answers 404, not 403).
 *
 * Thread contract: every store function may be called from any thread
 * (one mutex). Images are reference-counted atomically and immutable after
 * creation. A struct mm_response is a plain value owned by its holder. */
#ifndef MM_SERVE_RESPONSE_STORE_H
#define MM_SERVE_RESPONSE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* "resp_" + 48 hex digits */
#define MM_RESPONSE_ID_LEN 53

/* A new unguessable id (getrandom). MM_ERR_IO if the kernel has no entropy
 * to give (never in practice). */
enum mm_status mm_response_id_new(char out[MM_RESPONSE_ID_LEN + 1], struct mm_err *err);

/* ---- images ---------------------------------------------------------------------- */

struct mm_response_image;

/* Packs n_tiles normalised tiles [n][3][S][S] (as mm_image_preprocess made
 * them; anything else is MM_ERR_INVALID) into a new image holding one
 * reference, the caller's. tiles is only read. */
enum mm_status mm_response_image_create(const float *tiles, int64_t n_tiles, int64_t tile_size,
                                        struct mm_response_image **out, struct mm_err *err);
/* The same from the 8-bit pixels (pixels [n][3][S][S], as
 * mm_image_preprocess_pixels made them; copied). */
enum mm_status mm_response_image_create_pixels(const uint8_t *pixels, int64_t n_tiles,
                                               int64_t tile_size, struct mm_response_image **out,
                                               struct mm_err *err);
void mm_response_image_ref(struct mm_response_image *im);
void mm_response_image_release(struct mm_response_image *im); /* NULL is fine */
int64_t mm_response_image_tiles(const struct mm_response_image *im);
/* Writes its tiles, normalised again (the very floats it was made of), to
 * out [tiles][3][S][S]. */
/* Its tiles' pixel digests ([n_tiles][2], mm_state_tile_digest of the
 * unpacked tiles: computed once, when the image was made or read), for the
 * state-cache keys of a request carrying it (mm_request_set_tile_digests). */
const uint64_t *mm_response_image_digests(const struct mm_response_image *im);
void mm_response_image_unpack(const struct mm_response_image *im, float *out);
/* Copies its 8-bit pixels to out [tiles][3][S][S] (what unpack normalises). */
void mm_response_image_pixels(const struct mm_response_image *im, uint8_t *out);

/* ---- responses -------------------------------------------------------------------- */

/* One stored response. Owned by its holder: mm_response_free releases the
 * arrays and the image references. */
struct mm_response {
    char id[MM_RESPONSE_ID_LEN + 1];
    char *owner;          /* the API key that made it; NULL without keys */
    int64_t created_at;   /* unix seconds */
    int64_t completed_at; /* unix seconds */
    int32_t *ids;         /* [n_ids] every token the conversation consumed */
    int64_t n_ids;
    int64_t n_state; /* leading ids the model's state had taken in when it finished (the
                        last sampled token and the closing <|im_end|> are never fed back):
                        what a state snapshot taken then covers */
    struct mm_response_image **images; /* [n_images] the conversation's images, prompt order */
    int64_t n_images;
    char *view; /* [view_len] what the client reads back (GET) */
    size_t view_len;
};

void mm_response_free(struct mm_response *r);

/* All tiles of r's images, in order. */
int64_t mm_response_tiles(const struct mm_response *r);

/* ---- the store -------------------------------------------------------------------- */

struct mm_response_store_options {
    int64_t max_responses; /* 0: nothing is kept */
    size_t max_bytes;      /* ids, images and views together */
};

struct mm_response_store;

enum mm_status mm_response_store_create(const struct mm_response_store_options *o,
                                        struct mm_response_store **out, struct mm_err *err);
/* Frees the store and every response in it. NULL is fine. */
void mm_response_store_free(struct mm_response_store *s);

/* Moves *r into the store (on success *r is left empty), evicting the least
 * recently used responses until the bounds hold. Fails, keeping nothing and
 * leaving *r as it was, with MM_ERR_LIMIT when r alone exceeds a bound (or
 * the store keeps nothing), MM_ERR_INVALID for an id already there. */
enum mm_status mm_response_store_put(struct mm_response_store *s, struct mm_response *r,
                                     struct mm_err *err);

/* What mm_response_store_get copies out. */
enum {
    MM_RESPONSE_VIEW = 1,    /* view */
    MM_RESPONSE_HISTORY = 2, /* ids and images */
};

/* Copies the response id made by owner (NULL: made without keys) into *out
 * (the parts `want` names; the rest empty) and marks it recently used.
 * MM_ERR_NOT_FOUND when there is none, it was evicted or deleted, or
 * another owner made it. */
enum mm_status mm_response_store_get(struct mm_response_store *s, const char *id, const char *owner,
                                     int want, struct mm_response *out, struct mm_err *err);

/* Removes the response (MM_ERR_NOT_FOUND as for get). */
enum mm_status mm_response_store_delete(struct mm_response_store *s, const char *id,
                                        const char *owner, struct mm_err *err);

struct mm_response_store_stats {
    int64_t responses, images;
    size_t bytes;
    int64_t evictions; /* since creation */
};
void mm_response_store_stats(struct mm_response_store *s, struct mm_response_store_stats *out);

/* Writes every stored response (ids, images once each, views, owners, times;
 * least recently used first) to path, under a temporary name then renamed,
 * with a header naming the format version and `model` (the caller's
 * identity of its checkpoint: the state cache's disk tier uses the same)
 * and digests of the payload and of itself. The file holds the owners' API
 * keys: it is made 0600 (umask permitting) in the caller's private
 * directory. Any thread. */
enum mm_status mm_response_store_save(struct mm_response_store *s, const char *path, uint64_t model,
                                      struct mm_err *err);
/* Puts the responses of a file mm_response_store_save wrote (oldest first,
 * so the store's bounds keep the newest) and says how many in *loaded. No
 * file: MM_OK with 0. A damaged or cut-short file, another model's or
 * format's: MM_ERR_INVALID naming why; nothing of it is trusted beyond the
 * responses read before a damaged record (the payload digest is checked
 * first, so that takes a forged digest). Any thread. */
enum mm_status mm_response_store_load(struct mm_response_store *s, const char *path, uint64_t model,
                                      int64_t *loaded, struct mm_err *err);

#endif
