/* check_detokenizer.c: serve/detokenizer.c. Streaming the ids one at a time
 * must give exactly mm_tokenizer_decode's text, every chunk must be valid
 * UTF-8 (never a partial character), over random id sequences rich in byte
 * pieces, control and added tokens, and over real encoded text. */
#include "serve/detokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/config.h"
#include "model/synthetic.h"
#include "testutil.h"

/* Strict UTF-8 validity of a whole chunk. */
static int valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        const unsigned c = s[i];
        size_t need;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF)
            need = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 3;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 4;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else
            return 0;
        if (n - i < need || s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k < need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        i += need;
    }
    return 1;
}

/* Streams ids through d and checks against the one-shot decode. */
static void check_stream(const struct mm_tokenizer *tok, struct mm_detok *d, const int32_t *ids,
                         int64_t n)
{
    struct mm_err err;
    char *want;
    size_t want_len;
    ck_assert_int_eq(mm_tokenizer_decode(tok, ids, n, &want, &want_len, &err), MM_OK);
    char *got = malloc(want_len + 64);
    size_t got_len = 0;
    for (int64_t i = 0; i < n; i++) {
        const char *chunk;
        size_t len;
        ck_assert_int_eq(mm_detok_feed(d, ids[i], &chunk, &len, &err), MM_OK);
        ck_assert_msg(valid_utf8((const unsigned char *)chunk, len), "chunk %lld not UTF-8",
                      (long long)i);
        ck_assert_uint_le(got_len + len, want_len);
        memcpy(got + got_len, chunk, len);
        got_len += len;
    }
    size_t len;
    const char *tail = mm_detok_finish(d, &len);
    ck_assert(valid_utf8((const unsigned char *)tail, len));
    ck_assert_uint_le(got_len + len, want_len);
    memcpy(got + got_len, tail, len);
    got_len += len;
    ck_assert_uint_eq(got_len, want_len);
    ck_assert(memcmp(got, want, want_len) == 0);
    free(got);
    free(want);
}

static struct mm_tokenizer *load_checkpoint_tokenizer(char *dir, size_t cap)
{
    mm_test_tmpdir(dir, cap);
    struct mm_config cfg;
    struct mm_err err;
    struct mm_synthetic_options opt = {.seed = 1, .shards = 1};
    ck_assert_int_eq(mm_synthetic_preset("tiny-linear", &cfg, &err), MM_OK);
    ck_assert_int_eq(mm_synthetic_write(dir, &cfg, &opt, &err), MM_OK);
    struct mm_tokenizer *tok;
    ck_assert_int_eq(mm_tokenizer_load_dir(dir, &tok, &err), MM_OK);
    return tok;
}

START_TEST(test_random_sequences)
{
    char dir[256];
    struct mm_tokenizer *tok = load_checkpoint_tokenizer(dir, sizeof dir);
    struct mm_detok *d;
    struct mm_err err;
    ck_assert_int_eq(mm_detok_create(tok, &d, &err), MM_OK);
    const int32_t vocab = mm_tokenizer_vocab_size(tok);
    uint64_t s = 99;
    int32_t ids[64];
    for (int round = 0; round < 3000; round++) {
        const int n = 1 + round % 64;
        for (int i = 0; i < n; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            const uint32_t r = (uint32_t)(s >> 33);
            const int kind = (int)(r % 10);
            if (kind < 5) /* byte piece, biased to UTF-8 lead/continuation bytes */
                ids[i] = 3 + (int32_t)((r >> 8) % 2 ? 0x80 + (r >> 12) % 0x80 : (r >> 12) % 256);
            else if (kind < 6) /* <unk>, <s>, </s> */
                ids[i] = (int32_t)((r >> 8) % 3);
            else if (kind < 7) /* added tokens */
                ids[i] = MM_SYNTHETIC_SPM_PIECES +
                         (int32_t)((r >> 8) % (uint32_t)(vocab - MM_SYNTHETIC_SPM_PIECES));
            else
                ids[i] = (int32_t)((r >> 8) % MM_SYNTHETIC_SPM_PIECES);
        }
        check_stream(tok, d, ids, n);
    }
    /* every pair and triple of interesting bytes after a text piece */
    const int bytes[] = {0x41, 0xC2, 0xC3, 0xA9, 0xE0, 0xA0, 0xED, 0x9F, 0xA0, 0xF0,
                         0x90, 0x9F, 0xF4, 0x8F, 0x90, 0x80, 0xBF, 0xFF, 0xC0};
    const int nb = (int)(sizeof bytes / sizeof bytes[0]);
    for (int a = 0; a < nb; a++)
        for (int b = 0; b < nb; b++)
            for (int c = 0; c < nb; c++) {
                const int32_t seq[5] = {503, 3 + bytes[a], 3 + bytes[b], 3 + bytes[c], 503};
                check_stream(tok, d, seq, 5);
                check_stream(tok, d, seq + 1, 3);
            }
    /* an id out of range is refused and changes nothing */
    const char *chunk;
    size_t len;
    ck_assert_int_eq(mm_detok_feed(d, vocab, &chunk, &len, &err), MM_ERR_INVALID);
    ck_assert_int_eq(mm_detok_feed(d, -1, &chunk, &len, &err), MM_ERR_INVALID);
    mm_detok_free(d);
    mm_tokenizer_free(tok);
    mm_test_rmdir(dir);
}
END_TEST

/* Real text: encode the test corpus line by line, stream it back. */
START_TEST(test_corpus)
{
    size_t len;
    const uint8_t *data = mm_synthetic_tokenizer(&len);
    struct mm_tokenizer *tok;
    struct mm_err err;
    ck_assert_int_eq(mm_tokenizer_load_memory(data, len, &tok, &err), MM_OK);
    struct mm_detok *d;
    ck_assert_int_eq(mm_detok_create(tok, &d, &err), MM_OK);
    char path[512];
    snprintf(path, sizeof path, "%s/tests/data/tokenizer_test.txt", mm_test_srcdir());
    char *text = mm_test_read_file(path, &len);
    ck_assert_ptr_nonnull(text);
    struct mm_tokens t = {0};
    for (size_t s = 0; s < len;) {
        const char *nl = memchr(text + s, '\n', len - s);
        const size_t e = nl ? (size_t)(nl - text) : len;
        t.n = 0;
        ck_assert_int_eq(mm_tokenizer_encode(tok, text + s, e - s, MM_TOKENIZE_BOS, &t, &err),
                         MM_OK);
        check_stream(tok, d, t.ids, t.n);
        s = e + 1;
    }
    /* reset mid-character drops the pending bytes */
    const char *chunk;
    ck_assert_int_eq(mm_detok_feed(d, 3 + 0xE4, &chunk, &len, &err), MM_OK);
    ck_assert_uint_eq(len, 0);
    mm_detok_reset(d);
    chunk = mm_detok_finish(d, &len);
    ck_assert_uint_eq(len, 0);
    mm_tokens_free(&t);
    free(text);
    mm_detok_free(d);
    mm_tokenizer_free(tok);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("detokenizer");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_random_sequences);
    tcase_add_test(tc, test_corpus);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return mm_test_run(suite()); }
