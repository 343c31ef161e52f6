/* detokenizer.h: incremental (streaming) decoding of generated token ids.
 *
 * Design: the decoder keeps the few bytes of a UTF-8 character that byte-
 * fallback pieces have only partly delivered, plus SentencePiece's "leading
 * space of the text" flag, so each step returns only complete characters and
 * the concatenation of all steps (and mm_detok_finish) equals
 * mm_tokenizer_decode of the whole sequence. Its output buffer is sized once
 * from the tokenizer's longest piece: feeding never allocates.
 *
 * Thread contract: one struct mm_detok per stream, used by one thread at a
 * time; many may share one tokenizer (which must outlive them). */
#ifndef MM_SERVE_DETOKENIZER_H
#define MM_SERVE_DETOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "model/tokenizer.h"

struct mm_detok;

/* Creates a decoder at the start of a text; tok is borrowed. */
enum mm_status mm_detok_create(const struct mm_tokenizer *tok, struct mm_detok **out,
                               struct mm_err *err);
void mm_detok_free(struct mm_detok *d);
/* Back to the start of a new text (drops any pending bytes). */
void mm_detok_reset(struct mm_detok *d);

/* Feeds one id. text and len receive the newly completed text (possibly empty),
 * borrowed from the decoder until its next call. It never ends inside a UTF-8
 * character. An id outside the vocabulary is MM_ERR_INVALID (state unchanged). */
enum mm_status mm_detok_feed(struct mm_detok *d, int32_t id, const char **text, size_t *len,
                             struct mm_err *err);

/* Ends the text: bytes of a character that never completed become U+FFFD
 * each, as one-shot decoding does. Returns borrowed text; the decoder is then
 * reset. */
const char *mm_detok_finish(struct mm_detok *d, size_t *len);

#endif
