/* sentencepiece.h: the parsed form of a SentencePiece `tokenizer.model`
 * (a protobuf ModelProto), holding only what encoding and decoding need.
 *
 * Design: a hand-written protobuf wire-format reader instead of a protobuf
 * dependency. Every varint, length and field is bounds-checked against the
 * buffer; unknown fields are skipped; anything malformed (truncated data,
 * overlong varints, lengths past the end, groups, wrong wire types for known
 * fields) is refused with MM_ERR_FORMAT and a message naming the byte offset.
 * Semantic checks mirror SentencePiece's own loader (one <unk>, non-empty
 * pieces, byte pieces only with byte_fallback and then all 256 of them). */
#ifndef MM_MODEL_SENTENCEPIECE_H
#define MM_MODEL_SENTENCEPIECE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* ModelProto.SentencePiece.Type, with the proto's numbering. */
enum mm_sp_type {
    MM_SP_NORMAL = 1,
    MM_SP_UNKNOWN = 2,
    MM_SP_CONTROL = 3,
    MM_SP_USER_DEFINED = 4,
    MM_SP_UNUSED = 5,
    MM_SP_BYTE = 6,
};

/* TrainerSpec.ModelType, with the proto's numbering. */
enum mm_sp_model_type {
    MM_SP_UNIGRAM = 1,
    MM_SP_BPE = 2,
    MM_SP_WORD = 3,
    MM_SP_CHAR = 4,
};

struct mm_sp_piece {
    const char *text; /* NUL-terminated copy inside the model's string arena */
    uint32_t len;     /* bytes, > 0 */
    float score;
    enum mm_sp_type type;
    int16_t byte; /* 0..255 for MM_SP_BYTE pieces ("<0xXX>"), else -1 */
};

struct mm_sp_normalizer {
    char *name;                    /* e.g. "identity", "nmt_nfkc"; "" when absent */
    bool add_dummy_prefix;         /* proto default true */
    bool remove_extra_whitespaces; /* proto default true */
    bool escape_whitespaces;       /* proto default true */
    uint8_t *charsmap;             /* precompiled_charsmap blob (owned); NULL if empty */
    size_t charsmap_len;
};

/* Owns all memory it points to; free with mm_sp_model_free. Read-only after
 * parsing, so any number of threads may read one concurrently. */
struct mm_sp_model {
    struct mm_sp_piece *pieces; /* [n_pieces], index = token id */
    int32_t n_pieces;
    char *arena; /* backing store of every piece text */
    enum mm_sp_model_type model_type;
    bool byte_fallback;
    bool treat_whitespace_as_suffix;
    char *unk_surface; /* what decoding prints for <unk>; default " \u2047 " */
    int32_t unk_id;    /* the one MM_SP_UNKNOWN piece */
    struct mm_sp_normalizer normalizer;
    bool has_denormalizer; /* denormalizer_spec with a non-empty charsmap (not applied) */
};

/* Parses a serialized ModelProto of len bytes (borrowed; nothing points into
 * it afterwards). On success *out owns its memory; on failure *out is zeroed
 * and err says what and where. */
enum mm_status mm_sp_model_parse(const void *data, size_t len, struct mm_sp_model *out,
                                 struct mm_err *err);

/* Releases everything *m owns and zeroes it; safe on a zeroed struct. */
void mm_sp_model_free(struct mm_sp_model *m);

#endif
