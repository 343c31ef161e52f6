/* sentencepiece.c: minimal protobuf reader for SentencePiece's ModelProto
 * (see sentencepiece.h).
 *
 * Wire format: a message is a sequence of (key varint = field << 3 | wire
 * type, value); wire 0 varint, 1 fixed 8 bytes, 2 length-delimited, 5 fixed
 * 4 bytes. Embedded messages are length-delimited and parsed by a reader
 * restricted to their bytes, so no read can leave its parent's span. */
#include "model/sentencepiece.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"

/* More pieces than this is not a tokenizer we serve (InternLM2 has 92544). */
#define MM_SP_MAX_PIECES (1 << 24)

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

struct pb {
    const uint8_t *base; /* start of the whole file, for offsets in messages */
    const uint8_t *p;
    const uint8_t *end;
};

/* One decoded field; for WIRE_LEN, data/len is the payload. */
struct pb_field {
    uint32_t num;
    uint32_t wire;
    uint64_t v; /* varint value, or the fixed32/fixed64 bits */
    const uint8_t *data;
    size_t len;
};

static enum mm_status pb_varint(struct pb *r, uint64_t *out, struct mm_err *err)
{
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end)
            return mm_err_set(err, MM_ERR_FORMAT, "truncated varint at byte %td", r->p - r->base);
        const uint8_t b = *r->p++;
        if (i == 9 && b > 1)
            return mm_err_set(err, MM_ERR_FORMAT, "varint overflows 64 bits at byte %td",
                              r->p - 1 - r->base);
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return MM_OK;
        }
    }
    return mm_err_set(err, MM_ERR_FORMAT, "varint longer than 10 bytes at byte %td",
                      r->p - r->base);
}

/* Reads the next field; the caller has checked r->p < r->end. */
static enum mm_status pb_next(struct pb *r, struct pb_field *f, struct mm_err *err)
{
    const ptrdiff_t at = r->p - r->base;
    uint64_t key;
    enum mm_status st = pb_varint(r, &key, err);
    if (st != MM_OK)
        return st;
    f->num = (uint32_t)(key >> 3);
    f->wire = (uint32_t)(key & 7);
    if (f->num == 0 || key >> 32)
        return mm_err_set(err, MM_ERR_FORMAT, "bad field number at byte %td", at);
    f->data = NULL;
    f->len = 0;
    f->v = 0;
    const size_t left = (size_t)(r->end - r->p);
    switch (f->wire) {
    case WIRE_VARINT:
        return pb_varint(r, &f->v, err);
    case WIRE_I64:
    case WIRE_I32: {
        const size_t n = f->wire == WIRE_I64 ? 8 : 4;
        if (left < n)
            return mm_err_set(err, MM_ERR_FORMAT, "truncated fixed%zu field %u at byte %td", n * 8,
                              f->num, at);
        for (size_t i = 0; i < n; i++)
            f->v |= (uint64_t)r->p[i] << (8 * i);
        r->p += n;
        return MM_OK;
    }
    case WIRE_LEN: {
        uint64_t n;
        if ((st = pb_varint(r, &n, err)) != MM_OK)
            return st;
        if (n > (uint64_t)(r->end - r->p))
            return mm_err_set(err, MM_ERR_FORMAT,
                              "field %u at byte %td claims %llu bytes, only %td left", f->num, at,
                              (unsigned long long)n, r->end - r->p);
        f->data = r->p;
        f->len = (size_t)n;
        r->p += n;
        return MM_OK;
    }
    default:
        return mm_err_set(err, MM_ERR_FORMAT, "unsupported wire type %u (field %u) at byte %td",
                          f->wire, f->num, at);
    }
}

static struct pb pb_sub(const struct pb *parent, const struct pb_field *f)
{
    return (struct pb){.base = parent->base, .p = f->data, .end = f->data + f->len};
}

static enum mm_status want_wire(const struct pb *r, const struct pb_field *f, uint32_t wire,
                                const char *what, struct mm_err *err)
{
    if (f->wire == wire)
        return MM_OK;
    return mm_err_set(err, MM_ERR_FORMAT,
                      "%s (field %u) has wire type %u, expected %u (near byte %td)", what, f->num,
                      f->wire, wire, r->p - r->base);
}

static char *dup_bytes(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        if (n)
            memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

/* Parses "<0xXX>" (upper-case hex, as SentencePiece writes it); -1 if not. */
static int parse_byte_piece(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        const char c = s[i];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Piece text spans into the file until all pieces are known; copied after. */
struct raw_piece {
    const uint8_t *text;
    size_t len;
    float score;
    enum mm_sp_type type;
};

static enum mm_status parse_piece(const struct pb *parent, const struct pb_field *f,
                                  struct raw_piece *out, struct mm_err *err)
{
    struct pb r = pb_sub(parent, f);
    *out = (struct raw_piece){.type = MM_SP_NORMAL};
    bool have_text = false;
    while (r.p < r.end) {
        struct pb_field g;
        enum mm_status st = pb_next(&r, &g, err);
        if (st != MM_OK)
            return st;
        if (g.num == 1) {
            if ((st = want_wire(&r, &g, WIRE_LEN, "piece", err)) != MM_OK)
                return st;
            out->text = g.data;
            out->len = g.len;
            have_text = true;
        } else if (g.num == 2) {
            if ((st = want_wire(&r, &g, WIRE_I32, "score", err)) != MM_OK)
                return st;
            const uint32_t bits = (uint32_t)g.v;
            memcpy(&out->score, &bits, sizeof bits);
        } else if (g.num == 3) {
            if ((st = want_wire(&r, &g, WIRE_VARINT, "type", err)) != MM_OK)
                return st;
            if (g.v < MM_SP_NORMAL || g.v > MM_SP_BYTE)
                return mm_err_set(err, MM_ERR_FORMAT, "piece type %llu unknown (near byte %td)",
                                  (unsigned long long)g.v, r.p - r.base);
            out->type = (enum mm_sp_type)g.v;
        }
    }
    if (!have_text || out->len == 0)
        return mm_err_set(err, MM_ERR_FORMAT, "empty piece (near byte %td)", r.p - r.base);
    if (out->len > UINT32_MAX / 2)
        return mm_err_set(err, MM_ERR_FORMAT, "piece too long");
    return MM_OK;
}

static enum mm_status parse_trainer(const struct pb *parent, const struct pb_field *f,
                                    struct mm_sp_model *m, struct mm_err *err)
{
    struct pb r = pb_sub(parent, f);
    while (r.p < r.end) {
        struct pb_field g;
        enum mm_status st = pb_next(&r, &g, err);
        if (st != MM_OK)
            return st;
        if (g.num == 3) { /* model_type */
            if ((st = want_wire(&r, &g, WIRE_VARINT, "model_type", err)) != MM_OK)
                return st;
            if (g.v < MM_SP_UNIGRAM || g.v > MM_SP_CHAR)
                return mm_err_set(err, MM_ERR_FORMAT, "unknown model_type %llu",
                                  (unsigned long long)g.v);
            m->model_type = (enum mm_sp_model_type)g.v;
        } else if (g.num == 35 || g.num == 24) { /* byte_fallback, treat_whitespace_as_suffix */
            if ((st = want_wire(&r, &g, WIRE_VARINT, "trainer flag", err)) != MM_OK)
                return st;
            if (g.num == 35)
                m->byte_fallback = g.v != 0;
            else
                m->treat_whitespace_as_suffix = g.v != 0;
        } else if (g.num == 44) { /* unk_surface */
            if ((st = want_wire(&r, &g, WIRE_LEN, "unk_surface", err)) != MM_OK)
                return st;
            char *s = dup_bytes(g.data, g.len);
            if (!s)
                return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
            free(m->unk_surface);
            m->unk_surface = s;
        }
    }
    return MM_OK;
}

/* Checks the charsmap blob's framing: u32 trie size, trie (whole u32 units), strings. */
static enum mm_status check_charsmap(const uint8_t *b, size_t n, struct mm_err *err)
{
    if (n <= 4)
        return mm_err_set(err, MM_ERR_FORMAT, "precompiled_charsmap: %zu bytes is too short", n);
    const uint32_t trie =
        (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    if (trie >= n - 4 || trie % 4 != 0 || trie == 0)
        return mm_err_set(err, MM_ERR_FORMAT,
                          "precompiled_charsmap: trie size %u does not fit a %zu-byte blob", trie,
                          n);
    return MM_OK;
}

static enum mm_status parse_normalizer(const struct pb *parent, const struct pb_field *f,
                                       struct mm_sp_normalizer *nm, bool keep, bool *has_charsmap,
                                       struct mm_err *err)
{
    struct pb r = pb_sub(parent, f);
    while (r.p < r.end) {
        struct pb_field g;
        enum mm_status st = pb_next(&r, &g, err);
        if (st != MM_OK)
            return st;
        if (g.num == 1 || g.num == 2) {
            if ((st = want_wire(&r, &g, WIRE_LEN, g.num == 1 ? "name" : "precompiled_charsmap",
                                err)) != MM_OK)
                return st;
            if (g.num == 2 && g.len > 0) {
                *has_charsmap = true;
                if ((st = check_charsmap(g.data, g.len, err)) != MM_OK)
                    return st;
            }
            if (!keep)
                continue;
            char *s = dup_bytes(g.data, g.len);
            if (!s)
                return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
            if (g.num == 1) {
                free(nm->name);
                nm->name = s;
            } else {
                free(nm->charsmap);
                nm->charsmap = g.len ? (uint8_t *)s : NULL;
                nm->charsmap_len = g.len;
                if (!g.len)
                    free(s);
            }
        } else if (g.num >= 3 && g.num <= 5) {
            if ((st = want_wire(&r, &g, WIRE_VARINT, "normalizer flag", err)) != MM_OK)
                return st;
            const bool v = g.v != 0;
            if (g.num == 3)
                nm->add_dummy_prefix = v;
            else if (g.num == 4)
                nm->remove_extra_whitespaces = v;
            else
                nm->escape_whitespaces = v;
        }
    }
    return MM_OK;
}

void mm_sp_model_free(struct mm_sp_model *m)
{
    if (!m)
        return;
    free(m->pieces);
    free(m->arena);
    free(m->unk_surface);
    free(m->normalizer.name);
    free(m->normalizer.charsmap);
    memset(m, 0, sizeof *m);
}

/* SentencePiece's own loader checks (model_interface.cc InitializePieces). */
static enum mm_status check_pieces(struct mm_sp_model *m, struct mm_err *err)
{
    bool byte_seen[256] = {false};
    m->unk_id = -1;
    for (int32_t i = 0; i < m->n_pieces; i++) {
        struct mm_sp_piece *p = &m->pieces[i];
        p->byte = -1;
        if (p->type == MM_SP_UNKNOWN) {
            if (m->unk_id >= 0)
                return mm_err_set(err, MM_ERR_FORMAT, "second <unk> piece at id %d", (int)i);
            m->unk_id = i;
        } else if (p->type == MM_SP_BYTE) {
            if (!m->byte_fallback)
                return mm_err_set(err, MM_ERR_FORMAT,
                                  "byte piece %s (id %d) although byte_fallback is false", p->text,
                                  (int)i);
            const int b = parse_byte_piece(p->text, p->len);
            if (b < 0)
                return mm_err_set(err, MM_ERR_FORMAT, "byte piece \"%s\" (id %d) is not <0xXX>",
                                  p->text, (int)i);
            p->byte = (int16_t)b;
            byte_seen[b] = true;
        }
    }
    if (m->unk_id < 0)
        return mm_err_set(err, MM_ERR_FORMAT, "no <unk> piece");
    if (m->byte_fallback)
        for (int b = 0; b < 256; b++)
            if (!byte_seen[b])
                return mm_err_set(err, MM_ERR_FORMAT,
                                  "byte_fallback is set but byte piece <0x%02X> is missing", b);
    return MM_OK;
}

enum mm_status mm_sp_model_parse(const void *data, size_t len, struct mm_sp_model *out,
                                 struct mm_err *err)
{
    memset(out, 0, sizeof *out);
    struct mm_sp_model m = {
        .model_type = MM_SP_UNIGRAM,
        .normalizer = {.add_dummy_prefix = true,
                       .remove_extra_whitespaces = true,
                       .escape_whitespaces = true},
    };
    struct raw_piece *raw = NULL;
    size_t n_raw = 0, cap_raw = 0;
    struct mm_sp_normalizer denorm = {0};
    enum mm_status st = MM_OK;
    if (!data && len)
        return mm_err_set(err, MM_ERR_INVALID, "NULL model data");
    struct pb r = {.base = data, .p = data, .end = (const uint8_t *)data + len};
    bool have_trainer = false;
    while (r.p < r.end) {
        struct pb_field f;
        if ((st = pb_next(&r, &f, err)) != MM_OK)
            goto fail;
        if (f.num == 1) {
            if ((st = want_wire(&r, &f, WIRE_LEN, "pieces", err)) != MM_OK)
                goto fail;
            if (n_raw == cap_raw) {
                if (n_raw >= MM_SP_MAX_PIECES) {
                    st = mm_err_set(err, MM_ERR_LIMIT, "more than %d pieces", MM_SP_MAX_PIECES);
                    goto fail;
                }
                cap_raw = cap_raw ? cap_raw * 2 : 1024;
                struct raw_piece *n = realloc(raw, cap_raw * sizeof *raw);
                if (!n) {
                    st = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
                    goto fail;
                }
                raw = n;
            }
            if ((st = parse_piece(&r, &f, &raw[n_raw], err)) != MM_OK)
                goto fail;
            n_raw++;
        } else if (f.num == 2) {
            if ((st = want_wire(&r, &f, WIRE_LEN, "trainer_spec", err)) != MM_OK ||
                (st = parse_trainer(&r, &f, &m, err)) != MM_OK)
                goto fail;
            have_trainer = true;
        } else if (f.num == 3 || f.num == 5) {
            bool has_charsmap = false;
            if ((st = want_wire(&r, &f, WIRE_LEN, "normalizer_spec", err)) != MM_OK ||
                (st = parse_normalizer(&r, &f, f.num == 3 ? &m.normalizer : &denorm, f.num == 3,
                                       &has_charsmap, err)) != MM_OK)
                goto fail;
            if (f.num == 5 && has_charsmap)
                m.has_denormalizer = true;
        }
    }
    if (!have_trainer) {
        st = mm_err_set(err, MM_ERR_FORMAT, "no trainer_spec (not a SentencePiece model?)");
        goto fail;
    }
    if (n_raw == 0) {
        st = mm_err_set(err, MM_ERR_FORMAT, "no pieces");
        goto fail;
    }
    /* copy piece texts into one arena, each NUL-terminated */
    size_t total = 0;
    for (size_t i = 0; i < n_raw; i++)
        if (!mm_size_add(total, raw[i].len + 1, &total)) {
            st = mm_err_set(err, MM_ERR_OVERFLOW, "piece texts too large");
            goto fail;
        }
    m.arena = malloc(total);
    m.pieces = calloc(n_raw, sizeof *m.pieces);
    if (!m.arena || !m.pieces) {
        st = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    char *a = m.arena;
    for (size_t i = 0; i < n_raw; i++) {
        memcpy(a, raw[i].text, raw[i].len);
        a[raw[i].len] = '\0';
        m.pieces[i] = (struct mm_sp_piece){
            .text = a, .len = (uint32_t)raw[i].len, .score = raw[i].score, .type = raw[i].type};
        a += raw[i].len + 1;
    }
    m.n_pieces = (int32_t)n_raw;
    if ((st = check_pieces(&m, err)) != MM_OK)
        goto fail;
    if (!m.normalizer.name && !(m.normalizer.name = dup_bytes(NULL, 0))) {
        st = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (!m.unk_surface && !(m.unk_surface = dup_bytes((const uint8_t *)" \xE2\x81\x87 ", 5))) {
        st = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    free(raw);
    free(denorm.name);
    free(denorm.charsmap);
    *out = m;
    return MM_OK;
fail:
    free(raw);
    free(denorm.name);
    free(denorm.charsmap);
    mm_sp_model_free(&m);
    return st;
}
