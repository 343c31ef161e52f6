/* tokenizer.c: SentencePiece BPE encoding/decoding plus added tokens (see
 * tokenizer.h for the contract).
 *
 * Design: one SentencePiece call is normalise -> split into characters
 * (user-defined pieces as frozen units) -> BPE merges driven by a binary heap
 * of candidate pairs (highest score first, leftmost on ties; stale entries are
 * skipped by a size check, as bpe_model.cc does) -> ids with byte fallback.
 * Pieces are found through open-addressing hash tables built at load time;
 * the normaliser walks the model's own double-array trie in place, checking
 * every index against the blob so a corrupt charsmap cannot read out of
 * bounds. All per-call state lives in a struct scratch freed before return. */
#include "model/tokenizer.h"

#include "model/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/checked.h"
#include "base/json.h"
#include "base/log.h"
#include "model/sentencepiece.h"

#define MAX_MODEL_BYTES ((size_t)256 << 20)
#define MAX_JSON_BYTES ((size_t)64 << 20)
#define MAX_ADDED_ID (1 << 20) /* without a model to bound them (16 MiB of id table) */

static const char SPACE_SYMBOL[] = "\xe2\x96\x81"; /* U+2581, 3 bytes */
static const char REPLACEMENT[] = "\xef\xbf\xbd";  /* U+FFFD, 3 bytes */

/* Open-addressing table from piece text to id; slots hold id + 1 (0 = empty). */
struct ptable {
    int32_t *slot;
    uint32_t mask;
};

struct added_token {
    char *text;
    size_t len;
    int32_t id;
    bool special;
};

/* Per id, what decoding needs. */
struct id_entry {
    const char *text;
    uint32_t len;
    int8_t kind; /* enum mm_token_kind, or -1 for an unassigned id */
    int16_t byte;
};

struct mm_tokenizer {
    struct mm_sp_model sp;
    struct ptable normal;   /* NORMAL, USER_DEFINED, UNUSED pieces (BPE merges use these) */
    struct ptable reserved; /* CONTROL, UNKNOWN, BYTE pieces */
    int32_t byte_id[256];
    /* user-defined pieces, grouped by first byte: ids ud[ud_start[b] .. ud_start[b+1]) */
    int32_t *ud;
    int32_t ud_start[257];
    /* precompiled charsmap: the double-array trie and its string blob */
    const uint8_t *trie;
    size_t trie_units;
    const char *norm;
    size_t norm_len;
    /* added tokens; first_byte marks bytes that can start one */
    struct added_token *added;
    int n_added;
    bool first_byte[256];
    struct id_entry *ids;
    int32_t vocab_size;
    int32_t model_vocab;  /* ids below it decode (to nothing without a piece); 0: no model */
    int64_t max_added_id; /* added-token ids must be below it */
    int32_t bos_id, eos_id;
    size_t max_piece_len;
};

/* ---- small helpers ------------------------------------------------------------- */

struct sbuf {
    char *p;
    size_t n, cap;
};

static bool sb_put(struct sbuf *b, const void *s, size_t n)
{
    if (b->cap - b->n < n + 1) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->n < n + 1) {
            if (!mm_size_mul(cap, 2, &cap))
                return false;
        }
        char *p = realloc(b->p, cap);
        if (!p)
            return false;
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return true;
}

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h ^ (h >> 15);
}

static int32_t ptable_find(const struct ptable *t, const struct mm_sp_model *sp, const char *s,
                           size_t n)
{
    if (!t->slot)
        return -1;
    for (uint32_t i = hash_bytes(s, n) & t->mask;; i = (i + 1) & t->mask) {
        const int32_t v = t->slot[i];
        if (v == 0)
            return -1;
        const struct mm_sp_piece *p = &sp->pieces[v - 1];
        if (p->len == n && memcmp(p->text, s, n) == 0)
            return v - 1;
    }
}

/* Inserts id; false if the text is already present. */
static bool ptable_insert(struct ptable *t, const struct mm_sp_model *sp, int32_t id)
{
    const struct mm_sp_piece *p = &sp->pieces[id];
    for (uint32_t i = hash_bytes(p->text, p->len) & t->mask;; i = (i + 1) & t->mask) {
        const int32_t v = t->slot[i];
        if (v == 0) {
            t->slot[i] = id + 1;
            return true;
        }
        const struct mm_sp_piece *q = &sp->pieces[v - 1];
        if (q->len == p->len && memcmp(q->text, p->text, p->len) == 0)
            return false;
    }
}

static bool ptable_init(struct ptable *t, int32_t n)
{
    uint32_t cap = 16;
    while (cap < (uint32_t)n * 2u)
        cap *= 2;
    t->slot = calloc(cap, sizeof *t->slot);
    t->mask = cap - 1;
    return t->slot != NULL;
}

/* Length of the valid UTF-8 character at s (SentencePiece's DecodeUTF8:
 * no overlongs, no surrogates, nothing above U+10FFFF), or 0 if invalid. */
static size_t utf8_char_len(const uint8_t *s, size_t n)
{
    const uint32_t c = s[0];
    if (c < 0x80)
        return 1;
#define TRAIL(x) (((x)&0xC0) == 0x80)
    if (n >= 2 && (c & 0xE0) == 0xC0 && TRAIL(s[1])) {
        const uint32_t cp = (c & 0x1F) << 6 | (s[1] & 0x3F);
        return cp >= 0x80 ? 2 : 0;
    }
    if (n >= 3 && (c & 0xF0) == 0xE0 && TRAIL(s[1]) && TRAIL(s[2])) {
        const uint32_t cp = (c & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
        return cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF) ? 3 : 0;
    }
    if (n >= 4 && (c & 0xF8) == 0xF0 && TRAIL(s[1]) && TRAIL(s[2]) && TRAIL(s[3])) {
        const uint32_t cp = (c & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
                            (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
        return cp >= 0x10000 && cp <= 0x10FFFF ? 4 : 0;
    }
#undef TRAIL
    return 0;
}

/* SentencePiece's OneCharLen: the length the lead byte announces (no validation). */
static size_t one_char_len(uint8_t c)
{
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[c >> 4];
}

/* ---- normalisation ------------------------------------------------------------ */

/* Longest user-defined piece that prefixes s, or 0. */
static size_t match_user_defined(const struct mm_tokenizer *t, const char *s, size_t n)
{
    const uint8_t b = (uint8_t)s[0];
    size_t best = 0;
    for (int32_t k = t->ud_start[b]; k < t->ud_start[b + 1]; k++) {
        const struct mm_sp_piece *p = &t->sp.pieces[t->ud[k]];
        if (p->len > best && p->len <= n && memcmp(p->text, s, p->len) == 0)
            best = p->len;
    }
    return best;
}

static uint32_t trie_unit(const struct mm_tokenizer *t, size_t i)
{
    const uint8_t *u = t->trie + 4 * i;
    return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}

/* darts-clone unit fields */
static uint32_t unit_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
static bool unit_has_leaf(uint32_t u) { return (u >> 8) & 1; }
static uint32_t unit_label(uint32_t u) { return u & ((1u << 31) | 0xFF); }
static uint32_t unit_value(uint32_t u) { return u & ((1u << 31) - 1); }

/* Longest charsmap rule prefixing s: returns its source length (0 if none)
 * and its replacement through rep and rep_len. */
static size_t match_charsmap(const struct mm_tokenizer *t, const char *s, size_t n,
                             const char **rep, size_t *rep_len)
{
    if (!t->trie)
        return 0;
    size_t best = 0;
    uint32_t best_value = 0;
    size_t pos = unit_offset(trie_unit(t, 0));
    for (size_t i = 0; i < n; i++) {
        const uint8_t c = (uint8_t)s[i];
        pos ^= c;
        if (pos >= t->trie_units)
            break;
        const uint32_t u = trie_unit(t, pos);
        if (unit_label(u) != c)
            break;
        pos ^= unit_offset(u);
        if (pos >= t->trie_units)
            break;
        if (unit_has_leaf(u)) {
            best = i + 1;
            best_value = unit_value(trie_unit(t, pos));
        }
    }
    if (best == 0 || best_value >= t->norm_len)
        return 0; /* no rule (or a corrupt one: treat the text as unmapped) */
    *rep = t->norm + best_value;
    *rep_len = strnlen(*rep, t->norm_len - best_value);
    return best;
}

/* SentencePiece's NormalizePrefix: the normalised form of the first unit of
 * s (a user-defined piece, a charsmap rule, or one UTF-8 character, an
 * invalid byte becoming U+FFFD) and the input bytes it consumed. */
static size_t normalize_prefix(const struct mm_tokenizer *t, const char *s, size_t n,
                               const char **out, size_t *out_len)
{
    size_t m = match_user_defined(t, s, n);
    if (m) {
        *out = s;
        *out_len = m;
        return m;
    }
    if ((m = match_charsmap(t, s, n, out, out_len)) != 0)
        return m;
    m = utf8_char_len((const uint8_t *)s, n);
    if (m == 0) {
        *out = REPLACEMENT;
        *out_len = 3;
        return 1;
    }
    *out = s;
    *out_len = m;
    return m;
}

static bool put_ws(const struct mm_tokenizer *t, struct sbuf *b)
{
    return t->sp.normalizer.escape_whitespaces ? sb_put(b, SPACE_SYMBOL, 3) : sb_put(b, " ", 1);
}

/* normalizer.cc Normalize: rules, extra-whitespace removal, dummy prefix, escaping. */
static bool normalize(const struct mm_tokenizer *t, const char *s, size_t n, struct sbuf *b)
{
    const struct mm_sp_normalizer *nm = &t->sp.normalizer;
    const bool rmws = nm->remove_extra_whitespaces;
    const bool suffix = t->sp.treat_whitespace_as_suffix;
    const char *rep;
    size_t rep_len, i = 0;
    b->n = 0;
    if (n == 0)
        return true;
    if (rmws) /* leading whitespace (anything normalising to one space) */
        while (i < n) {
            const size_t used = normalize_prefix(t, s + i, n - i, &rep, &rep_len);
            if (rep_len != 1 || rep[0] != ' ')
                break;
            i += used;
        }
    if (i == n)
        return true;
    if (!suffix && nm->add_dummy_prefix && !put_ws(t, b))
        return false;
    bool prev_space = rmws;
    while (i < n) {
        i += normalize_prefix(t, s + i, n - i, &rep, &rep_len);
        if (prev_space)
            while (rep_len > 0 && rep[0] == ' ')
                rep++, rep_len--;
        if (rep_len > 0) {
            size_t run = 0; /* copy non-space runs in one go */
            for (size_t k = 0; k < rep_len; k++) {
                if (rep[k] == ' ' && nm->escape_whitespaces) {
                    if (!sb_put(b, rep + run, k - run) || !sb_put(b, SPACE_SYMBOL, 3))
                        return false;
                    run = k + 1;
                }
            }
            if (!sb_put(b, rep + run, rep_len - run))
                return false;
            prev_space = rep[rep_len - 1] == ' ';
        }
        if (!rmws)
            prev_space = false;
    }
    if (rmws) {
        const char *sp = nm->escape_whitespaces ? SPACE_SYMBOL : " ";
        const size_t sl = nm->escape_whitespaces ? 3 : 1;
        while (b->n >= sl && memcmp(b->p + b->n - sl, sp, sl) == 0)
            b->n -= sl;
        if (b->p)
            b->p[b->n] = '\0';
    }
    if (suffix && nm->add_dummy_prefix && !put_ws(t, b))
        return false;
    return true;
}

/* ---- BPE ------------------------------------------------------------------------- */

struct symbol {
    uint32_t start, len; /* span of the normalised text; len 0 once merged away */
    int32_t prev, next;  /* neighbours in the live list, -1 at the ends */
    bool freeze;         /* user-defined piece: never merged */
};

struct pair {
    float score;
    int32_t left, right;
    uint32_t size; /* bytes of the merged piece; detects stale entries */
};

struct rev_merge {
    int32_t id;     /* an UNUSED piece produced by a merge */
    uint32_t split; /* bytes of its left part */
};

/* Per-call state (one per encode call; never shared). */
struct scratch {
    struct sbuf norm;
    struct symbol *sym;
    size_t sym_cap;
    struct pair *heap;
    size_t heap_n, heap_cap;
    struct rev_merge *rev;
    size_t rev_n, rev_cap;
    bool prev_unk;
};

static void scratch_free(struct scratch *s)
{
    free(s->norm.p);
    free(s->sym);
    free(s->heap);
    free(s->rev);
}

/* a pops before b: higher score, then further left */
static bool pair_before(const struct pair *a, const struct pair *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static bool heap_push(struct scratch *s, struct pair p)
{
    if (s->heap_n == s->heap_cap) {
        size_t cap = s->heap_cap ? s->heap_cap * 2 : 256;
        struct pair *h = realloc(s->heap, cap * sizeof *h);
        if (!h)
            return false;
        s->heap = h;
        s->heap_cap = cap;
    }
    size_t i = s->heap_n++;
    while (i > 0) {
        const size_t up = (i - 1) / 2;
        if (!pair_before(&p, &s->heap[up]))
            break;
        s->heap[i] = s->heap[up];
        i = up;
    }
    s->heap[i] = p;
    return true;
}

static struct pair heap_pop(struct scratch *s)
{
    const struct pair top = s->heap[0];
    const struct pair last = s->heap[--s->heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->heap_n)
            break;
        if (c + 1 < s->heap_n && pair_before(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!pair_before(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->heap_n > 0)
        s->heap[i] = last;
    return top;
}

/* bpe_model.cc MaybeAddNewSymbolPair */
static bool add_pair(const struct mm_tokenizer *t, struct scratch *s, int32_t l, int32_t r)
{
    if (l < 0 || r < 0 || s->sym[l].freeze || s->sym[r].freeze)
        return true;
    const uint32_t size = s->sym[l].len + s->sym[r].len;
    const int32_t id = ptable_find(&t->normal, &t->sp, s->norm.p + s->sym[l].start, size);
    if (id < 0 ||
        t->ids[id].kind == MM_TOKEN_CONTROL) /* special added tokens never come from text */
        return true;
    if (!heap_push(s, (struct pair){t->sp.pieces[id].score, l, r, size}))
        return false;
    if (t->sp.pieces[id].type == MM_SP_UNUSED) {
        size_t k = 0;
        while (k < s->rev_n && s->rev[k].id != id)
            k++;
        if (k == s->rev_n) {
            if (s->rev_n == s->rev_cap) {
                size_t cap = s->rev_cap ? s->rev_cap * 2 : 16;
                struct rev_merge *n = realloc(s->rev, cap * sizeof *n);
                if (!n)
                    return false;
                s->rev = n;
                s->rev_cap = cap;
            }
            s->rev_n++;
        }
        s->rev[k] = (struct rev_merge){id, s->sym[l].len};
    }
    return true;
}

static int32_t piece_to_id(const struct mm_tokenizer *t, const char *p, size_t n)
{
    int32_t id = ptable_find(&t->reserved, &t->sp, p, n);
    if (id < 0)
        id = ptable_find(&t->normal, &t->sp, p, n);
    return id < 0 ? t->sp.unk_id : id;
}

/* sentencepiece_processor.cc: byte fallback, or runs of <unk> merged into one. */
static bool emit_id(const struct mm_tokenizer *t, struct scratch *s, const char *p, size_t n,
                    int32_t id, struct mm_tokens *out)
{
    const bool unk = t->sp.pieces[id].type == MM_SP_UNKNOWN;
    bool ok = true;
    if (unk && t->sp.byte_fallback) {
        for (size_t i = 0; i < n && ok; i++)
            ok = mm_tokens_push(out, t->byte_id[(uint8_t)p[i]], NULL) == MM_OK;
    } else if (!(unk && s->prev_unk)) {
        ok = mm_tokens_push(out, id, NULL) == MM_OK;
    }
    s->prev_unk = unk;
    return ok;
}

/* bpe_model.cc resegment: UNUSED pieces are split back into what formed them. */
static bool emit_piece(const struct mm_tokenizer *t, struct scratch *s, const char *p, size_t n,
                       struct mm_tokens *out)
{
    const int32_t id = piece_to_id(t, p, n);
    if (t->sp.pieces[id].type == MM_SP_UNUSED) {
        for (size_t k = 0; k < s->rev_n; k++)
            if (s->rev[k].id == id) {
                const size_t split = s->rev[k].split;
                return emit_piece(t, s, p, split, out) &&
                       emit_piece(t, s, p + split, n - split, out);
            }
    }
    return emit_id(t, s, p, n, id, out);
}

/* One SentencePiece Encode call on text[0..len). */
static enum mm_status sp_encode(const struct mm_tokenizer *t, struct scratch *s, const char *text,
                                size_t len, struct mm_tokens *out, struct mm_err *err)
{
    if (len == 0)
        return MM_OK;
    if (len > UINT32_MAX / 8)
        return mm_err_set(err, MM_ERR_LIMIT, "text of %zu bytes is too long to tokenize", len);
    if (!normalize(t, text, len, &s->norm))
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    const size_t n = s->norm.n;
    if (n == 0)
        return MM_OK;
    if (n > UINT32_MAX / 2)
        return mm_err_set(err, MM_ERR_LIMIT, "normalised text too long");
    if (s->sym_cap < n) {
        struct symbol *sym = realloc(s->sym, n * sizeof *sym);
        if (!sym)
            return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        s->sym = sym;
        s->sym_cap = n;
    }
    /* split into characters; user-defined pieces are frozen units */
    int32_t count = 0;
    for (size_t i = 0; i < n;) {
        size_t m = match_user_defined(t, s->norm.p + i, n - i);
        const bool freeze = m > 0;
        if (!m) {
            m = one_char_len((uint8_t)s->norm.p[i]);
            if (m > n - i)
                m = n - i;
        }
        s->sym[count] = (struct symbol){(uint32_t)i, (uint32_t)m, count - 1,
                                        i + m < n ? count + 1 : -1, freeze};
        count++;
        i += m;
    }
    s->heap_n = 0;
    s->rev_n = 0;
    s->prev_unk = false;
    for (int32_t i = 1; i < count; i++)
        if (!add_pair(t, s, i - 1, i))
            return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    while (s->heap_n > 0) {
        const struct pair top = heap_pop(s);
        struct symbol *l = &s->sym[top.left], *r = &s->sym[top.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != top.size)
            continue; /* stale */
        l->len += r->len;
        l->next = r->next;
        if (r->next >= 0)
            s->sym[r->next].prev = top.left;
        r->len = 0;
        if (!add_pair(t, s, l->prev, top.left) || !add_pair(t, s, top.left, l->next))
            return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    }
    for (int32_t i = 0; i >= 0; i = s->sym[i].next)
        if (!emit_piece(t, s, s->norm.p + s->sym[i].start, s->sym[i].len, out))
            return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    return MM_OK;
}

/* ---- public encode ---------------------------------------------------------------- */

void mm_tokens_free(struct mm_tokens *t)
{
    if (!t)
        return;
    free(t->ids);
    memset(t, 0, sizeof *t);
}

enum mm_status mm_tokens_push(struct mm_tokens *t, int32_t id, struct mm_err *err)
{
    if (t->n == t->cap) {
        const int64_t cap = t->cap ? t->cap * 2 : 64;
        size_t bytes;
        if (cap > INT64_MAX / 2 || !mm_size_mul((size_t)cap, sizeof *t->ids, &bytes))
            return mm_err_set(err, MM_ERR_OVERFLOW, "token list too long");
        int32_t *ids = realloc(t->ids, bytes);
        if (!ids)
            return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        t->ids = ids;
        t->cap = cap;
    }
    t->ids[t->n++] = id;
    return MM_OK;
}

/* Longest added token at s, or NULL. */
static const struct added_token *match_added(const struct mm_tokenizer *t, const char *s, size_t n)
{
    const struct added_token *best = NULL;
    for (int k = 0; k < t->n_added; k++) {
        const struct added_token *a = &t->added[k];
        if (a->len <= n && (!best || a->len > best->len) && memcmp(a->text, s, a->len) == 0)
            best = a;
    }
    return best;
}

enum mm_status mm_tokenizer_encode(const struct mm_tokenizer *tok, const char *text, size_t len,
                                   unsigned flags, struct mm_tokens *out, struct mm_err *err)
{
    if (!tok || !out || (!text && len))
        return mm_err_set(err, MM_ERR_INVALID, "mm_tokenizer_encode: NULL argument");
    const int64_t n0 = out->n;
    struct scratch s = {0};
    enum mm_status st = MM_OK;
    if ((flags & MM_TOKENIZE_BOS) && tok->bos_id >= 0 &&
        (st = mm_tokens_push(out, tok->bos_id, err)) != MM_OK)
        goto done;
    size_t start = 0;
    if ((flags & MM_TOKENIZE_SPECIAL) && tok->n_added > 0) {
        for (size_t i = 0; i < len;) {
            const struct added_token *a =
                tok->first_byte[(uint8_t)text[i]] ? match_added(tok, text + i, len - i) : NULL;
            if (!a) {
                i++;
                continue;
            }
            if ((st = sp_encode(tok, &s, text + start, i - start, out, err)) != MM_OK ||
                (st = mm_tokens_push(out, a->id, err)) != MM_OK)
                goto done;
            i += a->len;
            start = i;
        }
    }
    st = sp_encode(tok, &s, text + start, len - start, out, err);
done:
    scratch_free(&s);
    if (st != MM_OK)
        out->n = n0;
    return st;
}

/* ---- decode ------------------------------------------------------------------------- */

/* Appends the bytes of a byte-piece run, one U+FFFD per invalid byte. */
static bool flush_bytes(struct sbuf *b, const uint8_t *bytes, size_t n)
{
    for (size_t i = 0; i < n;) {
        const size_t m = utf8_char_len(bytes + i, n - i);
        if (m == 0) {
            if (!sb_put(b, REPLACEMENT, 3))
                return false;
            i++;
        } else {
            if (!sb_put(b, bytes + i, m))
                return false;
            i += m;
        }
    }
    return true;
}

/* Appends piece text with U+2581 replaced by spaces. */
static bool put_unescaped(struct sbuf *b, const char *p, size_t n)
{
    size_t run = 0;
    for (size_t k = 0; k + 3 <= n; k++)
        if (memcmp(p + k, SPACE_SYMBOL, 3) == 0) {
            if (!sb_put(b, p + run, k - run) || !sb_put(b, " ", 1))
                return false;
            k += 2;
            run = k + 1;
        }
    return sb_put(b, p + run, n - run);
}

enum mm_status mm_tokenizer_decode(const struct mm_tokenizer *tok, const int32_t *ids, int64_t n,
                                   char **text, size_t *len, struct mm_err *err)
{
    struct sbuf b = {0}, bytes = {0};
    bool is_bos_ws = true, bos_ws_seen = false;
    const bool strip = mm_tokenizer_strips_leading_space(tok);
    const bool strip_all = mm_tokenizer_strips_all_leading_spaces(tok);
    enum mm_status st = MM_OK;
    if (!sb_put(&b, "", 0))
        goto nomem;
    for (int64_t i = 0; i < n; i++) {
        struct mm_token_info info;
        if ((st = mm_tokenizer_id_info(tok, ids[i], &info, err)) != MM_OK)
            goto fail;
        if (info.kind == MM_TOKEN_BYTE) {
            const uint8_t c = (uint8_t)info.byte;
            if (!sb_put(&bytes, &c, 1))
                goto nomem;
            continue;
        }
        if (!flush_bytes(&b, (const uint8_t *)bytes.p, bytes.n))
            goto nomem;
        bytes.n = 0;
        if (bos_ws_seen || b.n > 0)
            is_bos_ws = false;
        bos_ws_seen = false;
        if (info.kind == MM_TOKEN_CONTROL)
            continue;
        if (info.kind == MM_TOKEN_UNKNOWN || info.kind == MM_TOKEN_ADDED) {
            if (!sb_put(&b, info.text, info.len))
                goto nomem;
            continue;
        }
        const char *p = info.text;
        size_t pl = info.len;
        if (is_bos_ws && strip && pl >= 3 && memcmp(p, SPACE_SYMBOL, 3) == 0) {
            p += 3;
            pl -= 3;
            bos_ws_seen = !strip_all;
        }
        if (!put_unescaped(&b, p, pl))
            goto nomem;
    }
    if (!flush_bytes(&b, (const uint8_t *)bytes.p, bytes.n))
        goto nomem;
    free(bytes.p);
    *text = b.p;
    *len = b.n;
    return MM_OK;
nomem:
    st = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
fail:
    free(b.p);
    free(bytes.p);
    return st;
}

/* ---- queries -------------------------------------------------------------------------- */

int32_t mm_tokenizer_vocab_size(const struct mm_tokenizer *tok) { return tok->vocab_size; }
int32_t mm_tokenizer_bos_id(const struct mm_tokenizer *tok) { return tok->bos_id; }
int32_t mm_tokenizer_eos_id(const struct mm_tokenizer *tok) { return tok->eos_id; }
size_t mm_tokenizer_max_piece_len(const struct mm_tokenizer *tok) { return tok->max_piece_len; }

bool mm_tokenizer_strips_leading_space(const struct mm_tokenizer *tok)
{
    return tok->sp.normalizer.add_dummy_prefix || tok->sp.normalizer.remove_extra_whitespaces;
}

bool mm_tokenizer_strips_all_leading_spaces(const struct mm_tokenizer *tok)
{
    return tok->sp.normalizer.remove_extra_whitespaces;
}

int32_t mm_tokenizer_find(const struct mm_tokenizer *tok, const char *text)
{
    const size_t n = strlen(text);
    for (int k = 0; k < tok->n_added; k++)
        if (tok->added[k].len == n && memcmp(tok->added[k].text, text, n) == 0)
            return tok->added[k].id;
    int32_t id = ptable_find(&tok->normal, &tok->sp, text, n);
    if (id < 0)
        id = ptable_find(&tok->reserved, &tok->sp, text, n);
    return id;
}

const char *mm_tokenizer_piece(const struct mm_tokenizer *tok, int32_t id)
{
    if (id < 0 || id >= tok->vocab_size || tok->ids[id].kind < 0)
        return NULL;
    return id < tok->sp.n_pieces && tok->ids[id].kind == MM_TOKEN_UNKNOWN ? tok->sp.pieces[id].text
                                                                          : tok->ids[id].text;
}

enum mm_status mm_tokenizer_id_info(const struct mm_tokenizer *tok, int32_t id,
                                    struct mm_token_info *info, struct mm_err *err)
{
    if (id < 0 || id >= tok->vocab_size || tok->ids[id].kind < 0) {
        /* a checkpoint pads its vocabulary past the tokenizer's: those ids
         * are the model's to emit and decode to nothing */
        if (id >= 0 && id < tok->model_vocab) {
            *info = (struct mm_token_info){MM_TOKEN_CONTROL, "", 0, -1};
            return MM_OK;
        }
        return mm_err_set(err, MM_ERR_INVALID, "token id %d is not in the vocabulary (0..%d)",
                          (int)id,
                          (int)(tok->model_vocab ? tok->model_vocab : tok->vocab_size) - 1);
    }
    const struct id_entry *e = &tok->ids[id];
    *info = (struct mm_token_info){(enum mm_token_kind)e->kind, e->text, e->len, e->byte};
    return MM_OK;
}

/* ---- loading ---------------------------------------------------------------------------- */

void mm_tokenizer_free(struct mm_tokenizer *tok)
{
    if (!tok)
        return;
    mm_sp_model_free(&tok->sp);
    free(tok->normal.slot);
    free(tok->reserved.slot);
    free(tok->ud);
    for (int k = 0; k < tok->n_added; k++)
        free(tok->added[k].text);
    free(tok->added);
    free(tok->ids);
    free(tok);
}

/* Builds the lookup structures over a parsed model. */
static enum mm_status build(struct mm_tokenizer *t, struct mm_err *err)
{
    const struct mm_sp_model *sp = &t->sp;
    if (sp->model_type != MM_SP_BPE)
        return mm_err_set(err, MM_ERR_UNSUPPORTED,
                          "SentencePiece model type %d is not BPE (only BPE is supported)",
                          (int)sp->model_type);
    if (sp->has_denormalizer)
        MM_LOG(MM_LOG_WARN, "tokenizer: denormalizer_spec rules are ignored when decoding");
    if (!ptable_init(&t->normal, sp->n_pieces) || !ptable_init(&t->reserved, sp->n_pieces))
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = sp->unk_id;
    for (int32_t i = 0; i < sp->n_pieces; i++) {
        const struct mm_sp_piece *p = &sp->pieces[i];
        const bool normal =
            p->type == MM_SP_NORMAL || p->type == MM_SP_USER_DEFINED || p->type == MM_SP_UNUSED;
        if (!ptable_insert(normal ? &t->normal : &t->reserved, sp, i))
            return mm_err_set(err, MM_ERR_FORMAT, "piece \"%s\" (id %d) is defined twice", p->text,
                              (int)i);
        if (p->type == MM_SP_BYTE)
            t->byte_id[p->byte] = i;
        if (p->len > t->max_piece_len)
            t->max_piece_len = p->len;
    }
    if (sp->normalizer.charsmap) {
        const uint8_t *c = sp->normalizer.charsmap;
        const size_t trie =
            (size_t)c[0] | (size_t)c[1] << 8 | (size_t)c[2] << 16 | (size_t)c[3] << 24;
        t->trie = c + 4;
        t->trie_units = trie / 4;
        t->norm = (const char *)c + 4 + trie;
        t->norm_len = sp->normalizer.charsmap_len - 4 - trie;
    }
    const size_t unk_len = strlen(sp->unk_surface);
    if (unk_len > t->max_piece_len)
        t->max_piece_len = unk_len;
    t->bos_id = ptable_find(&t->reserved, sp, "<s>", 3);
    if (t->bos_id < 0)
        t->bos_id = ptable_find(&t->normal, sp, "<s>", 3);
    t->eos_id = ptable_find(&t->reserved, sp, "</s>", 4);
    if (t->eos_id < 0)
        t->eos_id = ptable_find(&t->normal, sp, "</s>", 4);
    return MM_OK;
}

/* Fills the per-id table once the added tokens are known. */
static enum mm_status build_ids(struct mm_tokenizer *t, struct mm_err *err)
{
    int32_t v = t->sp.n_pieces;
    for (int k = 0; k < t->n_added; k++)
        if (t->added[k].id >= v)
            v = t->added[k].id + 1;
    t->vocab_size = v;
    t->ids = calloc((size_t)v, sizeof *t->ids);
    if (!t->ids)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    for (int32_t i = 0; i < v; i++)
        t->ids[i].kind = -1;
    for (int32_t i = 0; i < t->sp.n_pieces; i++) {
        const struct mm_sp_piece *p = &t->sp.pieces[i];
        struct id_entry *e = &t->ids[i];
        e->text = p->text;
        e->len = p->len;
        e->byte = -1;
        switch (p->type) {
        case MM_SP_BYTE:
            e->kind = MM_TOKEN_BYTE;
            e->byte = p->byte;
            break;
        case MM_SP_UNKNOWN:
            e->kind = MM_TOKEN_UNKNOWN;
            e->text = t->sp.unk_surface;
            e->len = (uint32_t)strlen(t->sp.unk_surface);
            break;
        case MM_SP_CONTROL:
            e->kind = MM_TOKEN_CONTROL;
            break;
        default:
            e->kind = MM_TOKEN_TEXT;
        }
    }
    for (int k = 0; k < t->n_added; k++) {
        const struct added_token *a = &t->added[k];
        struct id_entry *e = &t->ids[a->id];
        e->text = a->text;
        e->len = (uint32_t)a->len;
        e->byte = -1;
        e->kind = a->special ? MM_TOKEN_CONTROL : MM_TOKEN_ADDED;
        t->first_byte[(uint8_t)a->text[0]] = true;
        if (a->len > t->max_piece_len)
            t->max_piece_len = a->len;
    }
    /* User-defined pieces, grouped by first byte. One that is also a special
     * added token is left out: it is matched only by the added-token layer
     * (MM_TOKENIZE_SPECIAL), so text spelling it stays text otherwise. */
    int32_t n_ud = 0;
    memset(t->ud_start, 0, sizeof t->ud_start);
    for (int32_t i = 0; i < t->sp.n_pieces; i++)
        if (t->sp.pieces[i].type == MM_SP_USER_DEFINED && t->ids[i].kind != MM_TOKEN_CONTROL) {
            n_ud++;
            t->ud_start[(uint8_t)t->sp.pieces[i].text[0] + 1]++;
        }
    for (int b = 0; b < 256; b++)
        t->ud_start[b + 1] += t->ud_start[b];
    if (n_ud) {
        t->ud = malloc((size_t)n_ud * sizeof *t->ud);
        if (!t->ud)
            return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        int32_t fill[256];
        memcpy(fill, t->ud_start, sizeof fill);
        for (int32_t i = 0; i < t->sp.n_pieces; i++)
            if (t->sp.pieces[i].type == MM_SP_USER_DEFINED && t->ids[i].kind != MM_TOKEN_CONTROL)
                t->ud[fill[(uint8_t)t->sp.pieces[i].text[0]]++] = i;
    }
    return MM_OK;
}

enum mm_status mm_tokenizer_load_memory(const void *data, size_t len, struct mm_tokenizer **out,
                                        struct mm_err *err)
{
    *out = NULL;
    struct mm_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    enum mm_status st;
    if ((st = mm_sp_model_parse(data, len, &t->sp, err)) != MM_OK ||
        (st = build(t, err)) != MM_OK || (st = build_ids(t, err)) != MM_OK) {
        mm_tokenizer_free(t);
        return st;
    }
    *out = t;
    return MM_OK;
}

enum mm_status mm_tokenizer_load_model(const char *path, struct mm_tokenizer **out,
                                       struct mm_err *err)
{
    char *data;
    size_t len;
    *out = NULL;
    enum mm_status st = mm_file_read_all(path, MAX_MODEL_BYTES, &data, &len, err);
    if (st != MM_OK)
        return st;
    st = mm_tokenizer_load_memory(data, len, out, err);
    free(data);
    if (st != MM_OK)
        mm_err_prefix(err, "%s", path);
    return st;
}

/* ---- added tokens from the checkpoint's JSON files ------------------------------------- */

static int find_added(const struct mm_tokenizer *t, const char *s, size_t n)
{
    for (int k = 0; k < t->n_added; k++)
        if (t->added[k].len == n && memcmp(t->added[k].text, s, n) == 0)
            return k;
    return -1;
}

/* Records content -> id; special < 0 keeps an existing flag (or false). */
static enum mm_status add_token(struct mm_tokenizer *t, const char *content, int64_t id,
                                int special, const char *file, struct mm_err *err)
{
    const size_t n = strlen(content);
    if (n == 0)
        return mm_err_set(err, MM_ERR_FORMAT, "%s: empty added token", file);
    if (id < 0 || id >= t->max_added_id)
        return mm_err_set(
            err, MM_ERR_FORMAT, "%s: added token \"%s\" has id %lld, outside the %s (0..%lld)",
            file, content, (long long)id, t->model_vocab ? "model's vocabulary" : "id range",
            (long long)t->max_added_id - 1);
    for (int k = 0; k < t->n_added; k++) {
        struct added_token *a = &t->added[k];
        const bool same_text = a->len == n && memcmp(a->text, content, n) == 0;
        if (same_text && a->id != id)
            return mm_err_set(err, MM_ERR_FORMAT,
                              "%s: added token \"%s\" has id %lld, elsewhere %d", file, content,
                              (long long)id, (int)a->id);
        if (!same_text && a->id == id)
            return mm_err_set(err, MM_ERR_FORMAT, "%s: id %lld is both \"%s\" and \"%s\"", file,
                              (long long)id, a->text, content);
        if (same_text) {
            if (special >= 0)
                a->special = special;
            return MM_OK;
        }
    }
    struct added_token *n2 = realloc(t->added, (size_t)(t->n_added + 1) * sizeof *n2);
    if (!n2)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    t->added = n2;
    char *text = strdup(content);
    if (!text)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    t->added[t->n_added++] = (struct added_token){text, n, (int32_t)id, special > 0};
    return MM_OK;
}

/* Reads dir/file if it exists; *root NULL when absent. */
static enum mm_status read_optional_json(const char *dir, const char *file, cJSON **root,
                                         struct mm_err *err)
{
    char path[4096];
    *root = NULL;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, file) >= sizeof path)
        return mm_err_set(err, MM_ERR_INVALID, "path too long: %s", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return MM_OK;
    fclose(f);
    return mm_json_read_file(path, MAX_JSON_BYTES, root, err);
}

static enum mm_status load_added_tokens(struct mm_tokenizer *t, const char *dir, struct mm_err *err)
{
    cJSON *cfg = NULL, *added = NULL, *smap = NULL;
    enum mm_status st;
    if ((st = read_optional_json(dir, "tokenizer_config.json", &cfg, err)) != MM_OK ||
        (st = read_optional_json(dir, "added_tokens.json", &added, err)) != MM_OK ||
        (st = read_optional_json(dir, "special_tokens_map.json", &smap, err)) != MM_OK)
        goto done;
    const cJSON *dec = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder") : NULL;
    if (dec && !cJSON_IsObject(dec)) {
        st = mm_err_set(err, MM_ERR_FORMAT,
                        "tokenizer_config.json: added_tokens_decoder is not an object");
        goto done;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, dec)
    {
        char *end;
        const long long id = strtoll(e->string, &end, 10);
        const char *content = NULL;
        bool special = false;
        if (*end || end == e->string || !cJSON_IsObject(e)) {
            st = mm_err_set(err, MM_ERR_FORMAT,
                            "tokenizer_config.json: bad added_tokens_decoder entry \"%s\"",
                            e->string);
            goto done;
        }
        if ((st = mm_json_get_str(e, "content", true, &content,
                                  "tokenizer_config.json: added token", err)) != MM_OK ||
            (st = mm_json_get_bool(e, "special", false, &special,
                                   "tokenizer_config.json: added token", err)) != MM_OK ||
            (st = add_token(t, content, id, special, "tokenizer_config.json", err)) != MM_OK)
            goto done;
    }
    if (added && !cJSON_IsObject(added)) {
        st = mm_err_set(err, MM_ERR_FORMAT, "added_tokens.json is not an object");
        goto done;
    }
    cJSON_ArrayForEach(e, added)
    {
        /* range first: casting an out-of-range double is undefined */
        if (!cJSON_IsNumber(e) || !(e->valuedouble >= 0 && e->valuedouble < 2147483648.0) ||
            e->valuedouble != (double)(int64_t)e->valuedouble) {
            st = mm_err_set(err, MM_ERR_FORMAT, "added_tokens.json: \"%s\" is not an integer id",
                            e->string);
            goto done;
        }
        if ((st = add_token(t, e->string, (int64_t)e->valuedouble, -1, "added_tokens.json", err)) !=
            MM_OK)
            goto done;
    }
    /* special_tokens_map.json marks tokens special; values are strings or {"content": ...} */
    const cJSON *v;
    cJSON_ArrayForEach(v, smap)
    {
        const cJSON *items = v;
        const bool list = cJSON_IsArray(v);
        for (int i = 0; list ? i < cJSON_GetArraySize(items) : i < 1; i++) {
            const cJSON *x = list ? cJSON_GetArrayItem(items, i) : v;
            const cJSON *c = cJSON_IsObject(x) ? cJSON_GetObjectItemCaseSensitive(x, "content") : x;
            if (!cJSON_IsString(c))
                continue;
            const int k = find_added(t, c->valuestring, strlen(c->valuestring));
            if (k >= 0) {
                t->added[k].special = true;
                continue;
            }
            const size_t cl = strlen(c->valuestring);
            int32_t id = ptable_find(&t->reserved, &t->sp, c->valuestring, cl);
            if (id < 0)
                id = ptable_find(&t->normal, &t->sp, c->valuestring, cl);
            if (id < 0) {
                MM_LOG(MM_LOG_WARN, "tokenizer: special token \"%s\" has no id; ignored",
                       c->valuestring);
                continue;
            }
            if ((st = add_token(t, c->valuestring, id, 1, "special_tokens_map.json", err)) != MM_OK)
                goto done;
        }
    }
    st = MM_OK;
done:
    cJSON_Delete(cfg);
    cJSON_Delete(added);
    cJSON_Delete(smap);
    return st;
}

/* tokenizer.model plus the added tokens of dir; model_vocab > 0 bounds the
 * ids by the model's vocabulary. */
static enum mm_status load_dir(const char *dir, int32_t model_vocab, struct mm_tokenizer **out,
                               struct mm_err *err)
{
    char path[4096];
    char *data;
    size_t len;
    *out = NULL;
    if ((size_t)snprintf(path, sizeof path, "%s/tokenizer.model", dir) >= sizeof path)
        return mm_err_set(err, MM_ERR_INVALID, "path too long: %s", dir);
    enum mm_status st = mm_file_read_all(path, MAX_MODEL_BYTES, &data, &len, err);
    if (st != MM_OK)
        return st;
    struct mm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        free(data);
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    }
    t->model_vocab = model_vocab;
    t->max_added_id = model_vocab > 0 ? model_vocab : MAX_ADDED_ID;
    st = mm_sp_model_parse(data, len, &t->sp, err);
    free(data);
    if (st != MM_OK) {
        mm_err_prefix(err, "%s", path);
        goto fail;
    }
    if (model_vocab > 0 && t->sp.n_pieces > model_vocab) {
        st = mm_err_set(err, MM_ERR_FORMAT,
                        "%s has %d pieces, more than the model's vocabulary of %d", path,
                        (int)t->sp.n_pieces, (int)model_vocab);
        goto fail;
    }
    if ((st = build(t, err)) != MM_OK || (st = load_added_tokens(t, dir, err)) != MM_OK ||
        (st = build_ids(t, err)) != MM_OK)
        goto fail;
    *out = t;
    return MM_OK;
fail:
    mm_tokenizer_free(t);
    return st;
}

enum mm_status mm_tokenizer_load_dir(const char *dir, struct mm_tokenizer **out, struct mm_err *err)
{
    return load_dir(dir, 0, out, err);
}

enum mm_status mm_tokenizer_load_checkpoint(const char *dir, const struct mm_config *cfg,
                                            struct mm_tokenizer **out, struct mm_err *err)
{
    if (cfg->vocab_size < 1 || cfg->vocab_size > INT32_MAX)
        return mm_err_set(err, MM_ERR_INVALID, "vocab_size %lld out of range",
                          (long long)cfg->vocab_size);
    enum mm_status st = load_dir(dir, (int32_t)cfg->vocab_size, out, err);
    if (st != MM_OK)
        return st;
    /* the template writes the tokenizer's image-context id; the engine
     * embeds images at the config's */
    const int32_t img = mm_tokenizer_find(*out, "<IMG_CONTEXT>");
    if (img >= 0 && img != cfg->img_context_token_id) {
        mm_tokenizer_free(*out);
        *out = NULL;
        return mm_err_set(err, MM_ERR_FORMAT,
                          "%s: the tokenizer's <IMG_CONTEXT> is id %d but config.json says %lld",
                          dir, (int)img, (long long)cfg->img_context_token_id);
    }
    return MM_OK;
}
