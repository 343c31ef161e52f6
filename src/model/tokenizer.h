/* tokenizer.h: text <-> token ids for mmMamba (docs/model.md §5): SentencePiece
 * BPE with byte fallback, plus the checkpoint's added/special tokens.
 *
 * Design: encoding reproduces SentencePiece 0.1.97 (normalizer.cc,
 * bpe_model.cc, sentencepiece_processor.cc) id for id, including the
 * precompiled charsmap (nmt_nfkc), whitespace handling, user-defined pieces,
 * unused-piece resegmentation and byte fallback; `make check` compares it
 * with spm_encode. Added tokens sit in a layer above: with
 * MM_TOKENIZE_SPECIAL they are matched first as literal strings (longest
 * match, never split) and each stretch of text between them is a separate
 * SentencePiece call, as Hugging Face's slow tokenizer does. Without that
 * flag text spelling an added token never yields its id: a SentencePiece
 * user-defined piece that is also a special added token is not matched as a
 * unit (the only deviation from plain SentencePiece, and only for such
 * pieces), so callers can tokenize untrusted text safely.
 *
 * Thread contract: a loaded struct mm_tokenizer is immutable. Every function
 * taking a const tokenizer may be called concurrently from any number of
 * threads; encode/decode keep their scratch on the stack or in per-call heap
 * memory (O(text length), freed before returning). Only load and free must
 * not race with other use. */
#ifndef MM_MODEL_TOKENIZER_H
#define MM_MODEL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

struct mm_tokenizer;

/* A growable id list. Zero-initialise; encode calls append to it. The caller
 * owns ids and releases it with mm_tokens_free. */
struct mm_tokens {
    int32_t *ids;
    int64_t n;
    int64_t cap;
};

void mm_tokens_free(struct mm_tokens *t);
/* Appends one id (grows the list); MM_ERR_NOMEM on failure. */
enum mm_status mm_tokens_push(struct mm_tokens *t, int32_t id, struct mm_err *err);

/* What an id is, for decoders (see mm_tokenizer_id_info). */
enum mm_token_kind {
    MM_TOKEN_TEXT = 0, /* a normal or user-defined piece: text with U+2581 for spaces */
    MM_TOKEN_BYTE,     /* byte-fallback piece <0xXX> */
    MM_TOKEN_UNKNOWN,  /* <unk>: decodes to the model's unk surface */
    MM_TOKEN_CONTROL,  /* control piece (<s>, </s>) or special added token: decodes to "" */
    MM_TOKEN_ADDED,    /* non-special added token: decodes to its literal content */
};

struct mm_token_info {
    enum mm_token_kind kind;
    const char *text; /* piece / added content / unk surface (borrowed, NUL-terminated) */
    size_t len;
    int byte; /* MM_TOKEN_BYTE: 0..255 */
};

/* Encode flags. */
#define MM_TOKENIZE_BOS 1u     /* prepend the BOS id once (if the model has <s>) */
#define MM_TOKENIZE_SPECIAL 2u /* match added tokens in the text as literals */

/* Loads tokenizer.model plus tokenizer_config.json (added_tokens_decoder),
 * added_tokens.json and special_tokens_map.json from a checkpoint directory
 * (the JSON files are optional). *out is owned by the caller. */
enum mm_status mm_tokenizer_load_dir(const char *dir, struct mm_tokenizer **out,
                                     struct mm_err *err);
struct mm_config;
/* The tokenizer of a checkpoint for its model (what generate and the server
 * load): as mm_tokenizer_load_dir, but every id is bounded by the model's
 * vocab_size (a tokenizer file naming an id the model does not have is
 * MM_ERR_FORMAT naming the file; a huge id cannot cost memory), the
 * tokenizer's <IMG_CONTEXT> must be the config's img_context_token_id, and
 * ids the model can emit that have no piece (real checkpoints pad
 * vocab_size) decode to nothing instead of failing. */
enum mm_status mm_tokenizer_load_checkpoint(const char *dir, const struct mm_config *cfg,
                                            struct mm_tokenizer **out, struct mm_err *err);
/* Loads a bare SentencePiece .model file (no added tokens). */
enum mm_status mm_tokenizer_load_model(const char *path, struct mm_tokenizer **out,
                                       struct mm_err *err);
/* Same from memory (data is copied; borrowed only during the call). */
enum mm_status mm_tokenizer_load_memory(const void *data, size_t len, struct mm_tokenizer **out,
                                        struct mm_err *err);
void mm_tokenizer_free(struct mm_tokenizer *tok);

/* Appends the ids of text[0..len) to *out (not cleared first). Invalid UTF-8
 * is accepted and treated as SentencePiece does (each bad byte becomes
 * U+FFFD, which then byte-falls back). On failure *out keeps what it had. */
enum mm_status mm_tokenizer_encode(const struct mm_tokenizer *tok, const char *text, size_t len,
                                   unsigned flags, struct mm_tokens *out, struct mm_err *err);

/* Decodes ids as SentencePiece's DecodeIds does: U+2581 becomes a space, the
 * leading space that add_dummy_prefix introduced is dropped, runs of byte
 * pieces are fused into UTF-8 (each invalid byte becomes U+FFFD), control
 * pieces and special added tokens are skipped. *text is a NUL-terminated heap
 * string the caller frees; ids out of range are MM_ERR_INVALID. */
enum mm_status mm_tokenizer_decode(const struct mm_tokenizer *tok, const int32_t *ids, int64_t n,
                                   char **text, size_t *len, struct mm_err *err);

/* Number of ids (SentencePiece pieces and added tokens; max id + 1). */
int32_t mm_tokenizer_vocab_size(const struct mm_tokenizer *tok);
/* BOS / EOS ids (pieces "<s>" / "</s>"), -1 if absent. */
int32_t mm_tokenizer_bos_id(const struct mm_tokenizer *tok);
int32_t mm_tokenizer_eos_id(const struct mm_tokenizer *tok);
/* Id of an added token or piece with exactly this text, else -1. */
int32_t mm_tokenizer_find(const struct mm_tokenizer *tok, const char *text);
/* The piece (or added token content) for an id, borrowed; NULL if out of range. */
const char *mm_tokenizer_piece(const struct mm_tokenizer *tok, int32_t id);
/* Fills *info for an id; MM_ERR_INVALID if out of range or unassigned
 * (for a checkpoint's tokenizer, ids below the model's vocab_size without a
 * piece are MM_TOKEN_CONTROL with empty text). */
enum mm_status mm_tokenizer_id_info(const struct mm_tokenizer *tok, int32_t id,
                                    struct mm_token_info *info, struct mm_err *err);
/* Whether decoding strips one leading U+2581 at the start of the text (the
 * model adds a dummy prefix or removes extra whitespace), and whether it
 * keeps stripping until text appears (remove_extra_whitespaces). */
bool mm_tokenizer_strips_leading_space(const struct mm_tokenizer *tok);
bool mm_tokenizer_strips_all_leading_spaces(const struct mm_tokenizer *tok);
/* Longest piece/added-token/unk-surface text in bytes (bounds one decode step). */
size_t mm_tokenizer_max_piece_len(const struct mm_tokenizer *tok);

#endif
