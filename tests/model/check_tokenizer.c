/* check_tokenizer.c: model/tokenizer.c on the shipped synthetic tokenizer
 * (golden ids from spm_encode), a hand-made model with a precompiled charsmap,
 * added tokens from a synthetic checkpoint directory, decoding rules,
 * concurrency and speed. Whole-corpus conformance with SentencePiece itself is
 * tests/model/check_tokenizer_conformance.sh. */
#include "model/tokenizer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/config.h"
#include "model/synthetic.h"
#include "testutil.h"

#define BYTE_ID(b) (3 + (b)) /* <0x00> is id 3 in the synthetic model */

static struct mm_tokenizer *synthetic(void)
{
    size_t len;
    const uint8_t *data = mm_synthetic_tokenizer(&len);
    struct mm_tokenizer *tok;
    struct mm_err err;
    ck_assert_int_eq(mm_tokenizer_load_memory(data, len, &tok, &err), MM_OK);
    return tok;
}

static void expect_ids(const struct mm_tokenizer *tok, const char *text, size_t len, unsigned flags,
                       const int32_t *want, int64_t n)
{
    struct mm_tokens t = {0};
    struct mm_err err;
    ck_assert_int_eq(mm_tokenizer_encode(tok, text, len, flags, &t, &err), MM_OK);
    ck_assert_msg(t.n == n, "\"%s\": %lld ids, want %lld", text, (long long)t.n, (long long)n);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(t.ids[i] == want[i], "\"%s\": id %lld is %d, want %d", text, (long long)i,
                      (int)t.ids[i], (int)want[i]);
    mm_tokens_free(&t);
}

#define EXPECT(tok, s, flags, ...)                                                                 \
    do {                                                                                           \
        const int32_t w_[] = {__VA_ARGS__};                                                        \
        expect_ids(tok, s, strlen(s), flags, w_, (int64_t)(sizeof w_ / sizeof w_[0]));             \
    } while (0)

static char *decode(const struct mm_tokenizer *tok, const int32_t *ids, int64_t n)
{
    char *text;
    size_t len;
    struct mm_err err;
    ck_assert_int_eq(mm_tokenizer_decode(tok, ids, n, &text, &len, &err), MM_OK);
    ck_assert_uint_eq(strlen(text), len);
    return text;
}

static char *roundtrip(const struct mm_tokenizer *tok, const char *s)
{
    struct mm_tokens t = {0};
    struct mm_err err;
    ck_assert_int_eq(mm_tokenizer_encode(tok, s, strlen(s), 0, &t, &err), MM_OK);
    char *text = decode(tok, t.ids, t.n);
    mm_tokens_free(&t);
    return text;
}

START_TEST(test_encode_golden)
{
    struct mm_tokenizer *tok = synthetic();
    /* ids from spm_encode --output_format=id on the same model */
    EXPECT(tok, "Hello world", 0, 503, 308, 323, 459, 694);
    EXPECT(tok, "Hello world", MM_TOKENIZE_BOS, 1, 503, 308, 323, 459, 694);
    EXPECT(tok, "  two  spaces", 0, 309, 569, 715, 709, 472);
    EXPECT(tok, "你好", 0, 709, 922, 826);
    EXPECT(tok, "state space model 2024", 0, 330, 640, 352, 709, 740, 736, 740, 743);
    /* byte fallback: a character with no piece becomes its UTF-8 bytes */
    EXPECT(tok, "\xf0\x9f\xa6\x80", 0, 709, BYTE_ID(0xf0), BYTE_ID(0x9f), BYTE_ID(0xa6),
           BYTE_ID(0x80));
    /* invalid UTF-8: each bad byte is U+FFFD (EF BF BD), which falls back to bytes */
    EXPECT(tok, "\xff", 0, 709, BYTE_ID(0xef), BYTE_ID(0xbf), BYTE_ID(0xbd));
    /* empty text: nothing (BOS alone with the flag) */
    expect_ids(tok, "", 0, 0, NULL, 0);
    EXPECT(tok, "", MM_TOKENIZE_BOS, 1);
    /* text that spells control pieces is plain text for SentencePiece */
    struct mm_tokens t = {0};
    struct mm_err err;
    ck_assert_int_eq(mm_tokenizer_encode(tok, "<s>", 3, MM_TOKENIZE_SPECIAL, &t, &err), MM_OK);
    for (int64_t i = 0; i < t.n; i++)
        ck_assert_int_ne(t.ids[i], 1);
    mm_tokens_free(&t);
    ck_assert_int_eq(mm_tokenizer_bos_id(tok), 1);
    ck_assert_int_eq(mm_tokenizer_eos_id(tok), 2);
    ck_assert_int_eq(mm_tokenizer_vocab_size(tok), MM_SYNTHETIC_SPM_PIECES);
    ck_assert_str_eq(mm_tokenizer_piece(tok, 503), "\xe2\x96\x81H");
    ck_assert_ptr_null(mm_tokenizer_piece(tok, -1));
    ck_assert_ptr_null(mm_tokenizer_piece(tok, MM_SYNTHETIC_SPM_PIECES));
    ck_assert_int_eq(mm_tokenizer_find(tok, "\xe2\x96\x81H"), 503);
    ck_assert_int_eq(mm_tokenizer_find(tok, "no such piece"), -1);
    mm_tokenizer_free(tok);
}
END_TEST

START_TEST(test_decode)
{
    struct mm_tokenizer *tok = synthetic();
    const char *cases[] = {"Hello world", "  two  spaces", "你好, 世界! 😀🦀", "a\tb\nc",
                           "x",           "trailing  ",    "state space model 2024"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = roundtrip(tok, cases[i]);
        ck_assert_str_eq(s, cases[i]); /* identity normaliser: lossless */
        free(s);
    }
    /* invalid UTF-8 comes back as U+FFFD */
    char *s = roundtrip(tok, "a\xffz");
    ck_assert_str_eq(s, "a\xef\xbf\xbdz");
    free(s);
    /* byte pieces fused across a run; invalid and truncated bytes become U+FFFD each */
    const int32_t crab[] = {BYTE_ID(0xf0), BYTE_ID(0x9f), BYTE_ID(0xa6), BYTE_ID(0x80)};
    s = decode(tok, crab, 4);
    ck_assert_str_eq(s, "\xf0\x9f\xa6\x80");
    free(s);
    const int32_t trunc[] = {BYTE_ID(0xe4), BYTE_ID(0xb8), 503, BYTE_ID(0x80)};
    s = decode(tok, trunc, 4);
    ck_assert_str_eq(s, "\xef\xbf\xbd\xef\xbf\xbd H\xef\xbf\xbd");
    free(s);
    /* BOS/EOS skipped; the leading dummy-prefix space dropped once, also after BOS */
    const int32_t bos[] = {1, 503, 308, 323, 2, 503};
    s = decode(tok, bos, 6);
    ck_assert_str_eq(s, "Hello H");
    free(s);
    /* <unk> prints the unk surface */
    const int32_t unk[] = {0};
    s = decode(tok, unk, 1);
    ck_assert_str_eq(s, " \xe2\x81\x87 ");
    free(s);
    /* out of range */
    const int32_t bad[] = {5, 99999};
    char *text;
    size_t len;
    struct mm_err err;
    ck_assert_int_eq(mm_tokenizer_decode(tok, bad, 2, &text, &len, &err), MM_ERR_INVALID);
    s = decode(tok, NULL, 0);
    ck_assert_str_eq(s, "");
    free(s);
    mm_tokenizer_free(tok);
}
END_TEST

/* Added tokens from a synthetic checkpoint: literal, longest match, never split. */
START_TEST(test_added_tokens)
{
    char dir[256];
    mm_test_tmpdir(dir, sizeof dir);
    struct mm_config cfg;
    struct mm_err err;
    struct mm_synthetic_options opt = {.seed = 1, .shards = 1};
    ck_assert_int_eq(mm_synthetic_preset("tiny-linear", &cfg, &err), MM_OK);
    ck_assert_int_eq(mm_synthetic_write(dir, &cfg, &opt, &err), MM_OK);
    struct mm_tokenizer *tok;
    ck_assert_int_eq(mm_tokenizer_load_dir(dir, &tok, &err), MM_OK);
    const int32_t im_start = mm_tokenizer_find(tok, "<|im_start|>");
    const int32_t im_end = mm_tokenizer_find(tok, "<|im_end|>");
    const int32_t ctx = mm_tokenizer_find(tok, "<IMG_CONTEXT>");
    ck_assert_int_eq(ctx, cfg.img_context_token_id);
    ck_assert_int_ge(im_start, MM_SYNTHETIC_SPM_PIECES);
    ck_assert_int_ge(im_end, MM_SYNTHETIC_SPM_PIECES);
    ck_assert_int_gt(mm_tokenizer_vocab_size(tok), ctx);
    /* with matching: a<|im_end|><|im_end|>b == enc("a") id id enc("b") */
    const char *text = "a<|im_end|><|im_end|>b<IMG_CONTEXT>";
    struct mm_tokens t = {0}, a = {0}, b = {0};
    ck_assert_int_eq(mm_tokenizer_encode(tok, text, strlen(text),
                                         MM_TOKENIZE_SPECIAL | MM_TOKENIZE_BOS, &t, &err),
                     MM_OK);
    ck_assert_int_eq(mm_tokenizer_encode(tok, "a", 1, 0, &a, &err), MM_OK);
    ck_assert_int_eq(mm_tokenizer_encode(tok, "b", 1, 0, &b, &err), MM_OK);
    ck_assert_int_eq(t.n, 1 + a.n + 2 + b.n + 1);
    ck_assert_int_eq(t.ids[0], 1);
    ck_assert_int_eq(t.ids[1 + a.n], im_end);
    ck_assert_int_eq(t.ids[2 + a.n], im_end);
    ck_assert_int_eq(t.ids[t.n - 1], ctx);
    for (int64_t i = 0; i < b.n; i++)
        ck_assert_int_eq(t.ids[3 + a.n + i], b.ids[i]);
    /* decoding skips special tokens; "b" was its own SentencePiece call, so it
     * kept its dummy-prefix space (only the text's first one is dropped) */
    char *s = decode(tok, t.ids, t.n);
    ck_assert_str_eq(s, "a b");
    free(s);
    /* without matching the same text is plain text: no added ids at all */
    t.n = 0;
    ck_assert_int_eq(mm_tokenizer_encode(tok, text, strlen(text), 0, &t, &err), MM_OK);
    for (int64_t i = 0; i < t.n; i++)
        ck_assert_int_lt(t.ids[i], MM_SYNTHETIC_SPM_PIECES);
    /* a partial token is text; a token glued to text is still found */
    t.n = 0;
    ck_assert_int_eq(mm_tokenizer_encode(tok, "<|im_end|", 9, MM_TOKENIZE_SPECIAL, &t, &err),
                     MM_OK);
    for (int64_t i = 0; i < t.n; i++)
        ck_assert_int_ne(t.ids[i], im_end);
    t.n = 0;
    ck_assert_int_eq(mm_tokenizer_encode(tok, "x<|im_start|>y", 14, MM_TOKENIZE_SPECIAL, &t, &err),
                     MM_OK);
    int found = 0;
    for (int64_t i = 0; i < t.n; i++)
        found += t.ids[i] == im_start;
    ck_assert_int_eq(found, 1);
    mm_tokens_free(&t);
    mm_tokens_free(&a);
    mm_tokens_free(&b);
    mm_tokenizer_free(tok);

    /* longest match and a non-special added token, from hand-written JSON */
    char path[512];
    snprintf(path, sizeof path, "%s/added_tokens.json", dir);
    const char *json = "{\"<x>\": 2000, \"<x>y\": 2001, \"zz\": 2002}";
    mm_test_write_file(path, json, strlen(json));
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    const char *cfgjson =
        "{\"added_tokens_decoder\": {\"2000\": {\"content\": \"<x>\", \"special\": true}}}";
    mm_test_write_file(path, cfgjson, strlen(cfgjson));
    snprintf(path, sizeof path, "%s/special_tokens_map.json", dir);
    const char *smap =
        "{\"bos_token\": {\"content\": \"<s>\"}, \"additional_special_tokens\": [\"<x>y\"]}";
    mm_test_write_file(path, smap, strlen(smap));
    ck_assert_int_eq(mm_tokenizer_load_dir(dir, &tok, &err), MM_OK);
    EXPECT(tok, "<x>yzz", MM_TOKENIZE_SPECIAL, 2001, 2002);
    EXPECT(tok, "<x>zz", MM_TOKENIZE_SPECIAL, 2000, 2002);
    EXPECT(tok, "<s>", MM_TOKENIZE_SPECIAL, 1);
    ck_assert_int_eq(mm_tokenizer_vocab_size(tok), 2003);
    ck_assert_ptr_null(mm_tokenizer_piece(tok, 1500)); /* a gap */
    const int32_t ids[] = {2000, 2002, 2001};
    s = decode(tok, ids, 3);
    ck_assert_str_eq(s, "zz"); /* special ones skipped, plain added one printed */
    free(s);
    mm_tokenizer_free(tok);
    /* conflicting ids are refused */
    snprintf(path, sizeof path, "%s/added_tokens.json", dir);
    json = "{\"<x>\": 2005}";
    mm_test_write_file(path, json, strlen(json));
    ck_assert_int_eq(mm_tokenizer_load_dir(dir, &tok, &err), MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "<x>"));
    mm_test_write_file(path, "[1]", 3);
    ck_assert_int_eq(mm_tokenizer_load_dir(dir, &tok, &err), MM_ERR_FORMAT);
    mm_test_rmdir(dir);
    ck_assert_int_eq(mm_tokenizer_load_dir(dir, &tok, &err), MM_ERR_IO);
}
END_TEST

/* A checkpoint's tokenizer is loaded against its model: ids bounded by the
 * model's vocabulary (a huge id costs no memory), padded ids decode to
 * nothing, the image-context id agrees with the config. */
START_TEST(test_load_checkpoint)
{
    char dir[256], path[300];
    mm_test_tmpdir(dir, sizeof dir);
    struct mm_config cfg;
    struct mm_err err;
    const struct mm_synthetic_options opt = {.seed = 1, .shards = 1};
    ck_assert_int_eq(mm_synthetic_preset("tiny-linear", &cfg, &err), MM_OK);
    ck_assert_int_eq(mm_synthetic_write(dir, &cfg, &opt, &err), MM_OK);
    struct mm_tokenizer *tok;
    ck_assert_int_eq(mm_tokenizer_load_checkpoint(dir, &cfg, &tok, &err), MM_OK);
    const int32_t vocab = mm_tokenizer_vocab_size(tok);
    ck_assert_int_eq(vocab, cfg.vocab_size);
    mm_tokenizer_free(tok);

    /* the model pads its vocabulary past the tokenizer's last id */
    struct mm_config padded = cfg;
    padded.vocab_size = cfg.vocab_size + 20;
    ck_assert_int_eq(mm_tokenizer_load_checkpoint(dir, &padded, &tok, &err), MM_OK);
    const int32_t ids[] = {BYTE_ID('h'), (int32_t)cfg.vocab_size + 5, BYTE_ID('i')};
    char *s = decode(tok, ids, 3);
    ck_assert_str_eq(s, "hi");
    free(s);
    struct mm_token_info info;
    ck_assert_int_eq(mm_tokenizer_id_info(tok, (int32_t)padded.vocab_size, &info, &err),
                     MM_ERR_INVALID);
    mm_tokenizer_free(tok);
    /* without the model the same id is not in the vocabulary */
    ck_assert_int_eq(mm_tokenizer_load_dir(dir, &tok, &err), MM_OK);
    char *text;
    size_t len;
    ck_assert_int_eq(mm_tokenizer_decode(tok, ids, 3, &text, &len, &err), MM_ERR_INVALID);
    mm_tokenizer_free(tok);

    /* the config's image-context id must be the tokenizer's */
    struct mm_config other = cfg;
    other.img_context_token_id = cfg.img_context_token_id - 1;
    ck_assert_int_eq(mm_tokenizer_load_checkpoint(dir, &other, &tok, &err), MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "<IMG_CONTEXT>"));
    /* a model smaller than the SentencePiece model */
    other = cfg;
    other.vocab_size = 500;
    ck_assert_int_eq(mm_tokenizer_load_checkpoint(dir, &other, &tok, &err), MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "more than the model's vocabulary of 500"));

    /* an added id past the model's vocabulary names the file; a huge one is
     * refused before any table is sized by it, also without a model */
    snprintf(path, sizeof path, "%s/added_tokens.json", dir);
    const char *json = "{\"<x>\": 16777215}";
    mm_test_write_file(path, json, strlen(json));
    ck_assert_int_eq(mm_tokenizer_load_checkpoint(dir, &cfg, &tok, &err), MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(
        strstr(err.msg, "added_tokens.json: added token \"<x>\" has id 16777215, outside the "
                        "model's vocabulary"));
    ck_assert_int_eq(mm_tokenizer_load_dir(dir, &tok, &err), MM_ERR_FORMAT);
    json = "{\"<x>\": 1039}"; /* one past the tiny model */
    mm_test_write_file(path, json, strlen(json));
    ck_assert_int_eq(mm_tokenizer_load_checkpoint(dir, &cfg, &tok, &err), MM_ERR_FORMAT);
    ck_assert_int_eq(mm_tokenizer_load_dir(dir, &tok, &err), MM_OK);
    mm_tokenizer_free(tok);
    mm_test_rmdir(dir);
}
END_TEST

/* ---- a hand-made model with a one-rule charsmap ("A" -> "b") ---- */
static void le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* value: where rule "A"'s replacement starts in the string blob */
static void charsmap_model(struct mm_test_pb *b, uint32_t value)
{
    enum { UNITS = 0x42 };
    uint8_t cm[4 + UNITS * 4 + 2] = {0};
    le32(cm, UNITS * 4);
    le32(cm + 4 + 4 * 0x00, 1u << 10);                  /* root: children at 1 ^ c */
    le32(cm + 4 + 4 * 0x40, 1u << 10 | 1u << 8 | 0x41); /* 'A', has a leaf at 0x40 ^ 1 */
    le32(cm + 4 + 4 * 0x41, 1u << 31 | value);          /* the leaf: offset into strings */
    memcpy(cm + 4 + UNITS * 4, "b", 2);
    b->n = 0;
    mm_test_pb_piece(b, "<unk>", 0, 2);
    mm_test_pb_piece(b, "<s>", 0, 3);
    mm_test_pb_piece(b, "</s>", 0, 3);
    mm_test_pb_piece(b, "b", -1, 1);
    mm_test_pb_piece(b, "x", -2, 1);
    mm_test_pb_piece(b, "bb", -0.5f, 1);
    struct mm_test_pb t = {.n = 0};
    mm_test_pb_varint(&t, 3 << 3);
    mm_test_pb_varint(&t, 2); /* BPE */
    mm_test_pb_bytes(b, 2, t.p, t.n);
    struct mm_test_pb nm = {.n = 0};
    mm_test_pb_bytes(&nm, 1, "custom", 6);
    mm_test_pb_bytes(&nm, 2, cm, sizeof cm);
    mm_test_pb_varint(&nm, 3 << 3);
    mm_test_pb_varint(&nm, 0); /* no dummy prefix */
    mm_test_pb_bytes(b, 3, nm.p, nm.n);
}

START_TEST(test_charsmap)
{
    struct mm_test_pb b;
    charsmap_model(&b, 0);
    struct mm_tokenizer *tok;
    struct mm_err err;
    ck_assert_int_eq(mm_tokenizer_load_memory(b.p, b.n, &tok, &err), MM_OK);
    EXPECT(tok, "AxA", 0, 3, 4, 3);
    EXPECT(tok, "AA", 0, 5);
    EXPECT(tok, "bA", 0, 5);
    EXPECT(tok, "y", 0, 0);          /* no piece, no byte fallback: <unk> */
    EXPECT(tok, "yyAy", 0, 0, 3, 0); /* runs of <unk> merge into one */
    char *s = roundtrip(tok, "AxA");
    ck_assert_str_eq(s, "bxb");
    free(s);
    mm_tokenizer_free(tok);
    /* a rule pointing past the string blob is ignored, not followed */
    charsmap_model(&b, 1000);
    ck_assert_int_eq(mm_tokenizer_load_memory(b.p, b.n, &tok, &err), MM_OK);
    EXPECT(tok, "AxA", 0, 0, 4, 0);
    mm_tokenizer_free(tok);
}
END_TEST

/* A user-defined piece that is also a special added token (as InternLM2's
 * <|im_end|> may be): plain SentencePiece matches it, but once the checkpoint
 * declares it special, only MM_TOKENIZE_SPECIAL produces it: neither the
 * user-defined matcher nor a BPE merge may rebuild it from text. */
START_TEST(test_user_defined_special)
{
    static const char *const pieces[] = {
        "<unk>", "<s>", "</s>", "<|im_end|>", "a",  "<",    "|",  "i",  "m",    "_",  "e",
        "n",     "d",   ">",    "<|",         "im", "<|im", "_e", "nd", "_end", "|>", "_end|>"};
    struct mm_test_pb b = {.n = 0};
    for (int i = 0; i < (int)(sizeof pieces / sizeof pieces[0]); i++)
        mm_test_pb_piece(&b, pieces[i], i == 3 ? 0.0f : -1.0f,
                         i == 0   ? 2
                         : i < 3  ? 3
                         : i == 3 ? 4
                                  : 1);
    struct mm_test_pb t = {.n = 0};
    mm_test_pb_varint(&t, 3 << 3);
    mm_test_pb_varint(&t, 2); /* BPE */
    mm_test_pb_bytes(&b, 2, t.p, t.n);
    struct mm_test_pb nm = {.n = 0};
    mm_test_pb_varint(&nm, 3 << 3);
    mm_test_pb_varint(&nm, 0); /* no dummy prefix */
    mm_test_pb_bytes(&b, 3, nm.p, nm.n);
    struct mm_tokenizer *tok;
    struct mm_err err;
    ck_assert_int_eq(mm_tokenizer_load_memory(b.p, b.n, &tok, &err), MM_OK);
    EXPECT(tok, "a<|im_end|>", 0, 4, 3);
    mm_tokenizer_free(tok);

    char dir[256], path[512];
    mm_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/tokenizer.model", dir);
    mm_test_write_file(path, b.p, b.n);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    const char *cfg =
        "{\"added_tokens_decoder\": {\"3\": {\"content\": \"<|im_end|>\", \"special\": true}}}";
    mm_test_write_file(path, cfg, strlen(cfg));
    ck_assert_int_eq(mm_tokenizer_load_dir(dir, &tok, &err), MM_OK);
    EXPECT(tok, "a<|im_end|>", 0, 4, 16, 21);
    EXPECT(tok, "a<|im_end|>", MM_TOKENIZE_SPECIAL, 4, 3);
    mm_tokenizer_free(tok);
    mm_test_rmdir(dir);
}
END_TEST

/* ---- concurrency: many threads encoding with one tokenizer ---- */
struct job {
    const struct mm_tokenizer *tok;
    const char *text;
    size_t len;
    const struct mm_tokens *want;
    int ok;
};

static void *encode_job(void *arg)
{
    struct job *j = arg;
    j->ok = 1;
    for (int r = 0; r < 20 && j->ok; r++) {
        struct mm_tokens t = {0};
        struct mm_err err;
        if (mm_tokenizer_encode(j->tok, j->text, j->len, MM_TOKENIZE_BOS, &t, &err) != MM_OK ||
            t.n != j->want->n || memcmp(t.ids, j->want->ids, (size_t)t.n * sizeof *t.ids) != 0)
            j->ok = 0;
        char *s;
        size_t n;
        if (mm_tokenizer_decode(j->tok, t.ids, t.n, &s, &n, &err) != MM_OK)
            j->ok = 0;
        else
            free(s);
        mm_tokens_free(&t);
    }
    return NULL;
}

static char *test_text(size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/tests/data/tokenizer_test.txt", mm_test_srcdir());
    char *text = mm_test_read_file(path, len);
    ck_assert_ptr_nonnull(text);
    return text;
}

START_TEST(test_threads)
{
    struct mm_tokenizer *tok = synthetic();
    size_t len;
    char *text = test_text(&len);
    len = len > 20000 ? 20000 : len;
    struct mm_tokens want = {0};
    struct mm_err err;
    ck_assert_int_eq(mm_tokenizer_encode(tok, text, len, MM_TOKENIZE_BOS, &want, &err), MM_OK);
    pthread_t th[4];
    struct job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (struct job){tok, text, len, &want, 0};
        ck_assert_int_eq(pthread_create(&th[i], NULL, encode_job, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert(jobs[i].ok);
    }
    mm_tokens_free(&want);
    free(text);
    mm_tokenizer_free(tok);
}
END_TEST

/* 100K+ tokens well under a second (loose bound: sanitizer builds are slower). */
START_TEST(test_speed)
{
    struct mm_tokenizer *tok = synthetic();
    size_t len;
    char *text = test_text(&len);
    struct mm_tokens t = {0};
    struct mm_err err;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    ck_assert_int_eq(mm_tokenizer_encode(tok, text, len, 0, &t, &err), MM_OK);
    clock_gettime(CLOCK_MONOTONIC, &b);
    const double dt = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
    ck_assert_int_gt(t.n, 100000);
    ck_assert_msg(dt < 2.0, "%lld tokens took %.3f s", (long long)t.n, dt);
    /* a long run of one character: merges stay near linear */
    char *run = malloc(200000);
    memset(run, 'a', 200000);
    t.n = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    ck_assert_int_eq(mm_tokenizer_encode(tok, run, 200000, 0, &t, &err), MM_OK);
    clock_gettime(CLOCK_MONOTONIC, &b);
    ck_assert((double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9 < 2.0);
    free(run);
    mm_tokens_free(&t);
    free(text);
    mm_tokenizer_free(tok);
}
END_TEST

START_TEST(test_load_errors)
{
    struct mm_tokenizer *tok;
    struct mm_err err;
    ck_assert_int_eq(mm_tokenizer_load_model("/nonexistent/tokenizer.model", &tok, &err),
                     MM_ERR_IO);
    ck_assert_ptr_null(tok);
    ck_assert_int_eq(mm_tokenizer_load_memory("\x0a\x05", 2, &tok, &err), MM_ERR_FORMAT);
    ck_assert_ptr_null(tok);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_encode_golden);
    tcase_add_test(tc, test_decode);
    tcase_add_test(tc, test_added_tokens);
    tcase_add_test(tc, test_load_checkpoint);
    tcase_add_test(tc, test_charsmap);
    tcase_add_test(tc, test_user_defined_special);
    tcase_add_test(tc, test_threads);
    tcase_add_test(tc, test_speed);
    tcase_add_test(tc, test_load_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return mm_test_run(suite()); }
