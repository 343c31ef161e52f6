/* check_sentencepiece.c: the ModelProto reader of model/sentencepiece.c:
 * the shipped model parses as expected; malformed input of every kind
 * (truncation at every byte, bad varints, huge lengths, wrong wire types,
 * semantic errors, random corruption) is refused cleanly, never read out of
 * bounds (run under --enable-sanitizers to make that an assertion). */
#include "model/sentencepiece.h"

#include <stdlib.h>
#include <string.h>

#include "model/synthetic.h"
#include "model/tokenizer.h"
#include "testutil.h"

/* <unk> <s> </s> a b ab, BPE, optional extra trainer fields */
static void minimal_model(struct mm_test_pb *b, bool byte_fallback)
{
    b->n = 0;
    mm_test_pb_piece(b, "<unk>", 0, MM_SP_UNKNOWN);
    mm_test_pb_piece(b, "<s>", 0, MM_SP_CONTROL);
    mm_test_pb_piece(b, "</s>", 0, MM_SP_CONTROL);
    mm_test_pb_piece(b, "a", -1, 0);
    mm_test_pb_piece(b, "b", -2, 0);
    mm_test_pb_piece(b, "ab", -0.5f, 0);
    struct mm_test_pb t = {.n = 0};
    mm_test_pb_key(&t, 3, 0);
    mm_test_pb_varint(&t, MM_SP_BPE);
    mm_test_pb_key(&t, 43, 0); /* pad_id = -1: a 10-byte varint */
    mm_test_pb_varint(&t, (uint64_t)-1);
    if (byte_fallback) {
        mm_test_pb_key(&t, 35, 0);
        mm_test_pb_varint(&t, 1);
    }
    mm_test_pb_msg(b, 2, &t);
    struct mm_test_pb nm = {.n = 0};
    mm_test_pb_bytes(&nm, 1, "identity", 8);
    mm_test_pb_key(&nm, 3, 0);
    mm_test_pb_varint(&nm, 0); /* add_dummy_prefix false */
    mm_test_pb_msg(b, 3, &nm);
}

static enum mm_status parse(const struct mm_test_pb *b, struct mm_sp_model *m, struct mm_err *err)
{
    return mm_sp_model_parse(b->p, b->n, m, err);
}

START_TEST(test_synthetic_model)
{
    size_t len;
    const uint8_t *data = mm_synthetic_tokenizer(&len);
    struct mm_sp_model m;
    struct mm_err err;
    ck_assert_int_eq(mm_sp_model_parse(data, len, &m, &err), MM_OK);
    ck_assert_int_eq(m.n_pieces, MM_SYNTHETIC_SPM_PIECES);
    ck_assert_int_eq(m.model_type, MM_SP_BPE);
    ck_assert(m.byte_fallback);
    ck_assert_str_eq(m.normalizer.name, "identity");
    ck_assert(m.normalizer.add_dummy_prefix);
    ck_assert(!m.normalizer.remove_extra_whitespaces);
    ck_assert(m.normalizer.escape_whitespaces);
    ck_assert_ptr_null(m.normalizer.charsmap);
    ck_assert_int_eq(m.unk_id, 0);
    ck_assert_str_eq(m.pieces[1].text, "<s>");
    ck_assert_int_eq(m.pieces[1].type, MM_SP_CONTROL);
    ck_assert_int_eq(m.pieces[2].type, MM_SP_CONTROL);
    int bytes = 0;
    for (int32_t i = 0; i < m.n_pieces; i++)
        if (m.pieces[i].type == MM_SP_BYTE) {
            ck_assert_int_ge(m.pieces[i].byte, 0);
            bytes++;
        }
    ck_assert_int_eq(bytes, 256);
    ck_assert_str_eq(m.unk_surface, " \xE2\x81\x87 ");
    mm_sp_model_free(&m);
    mm_sp_model_free(&m); /* idempotent on a zeroed struct */
}
END_TEST

START_TEST(test_minimal_model)
{
    struct mm_test_pb b;
    minimal_model(&b, false);
    struct mm_sp_model m;
    struct mm_err err;
    ck_assert_int_eq(parse(&b, &m, &err), MM_OK);
    ck_assert_int_eq(m.n_pieces, 6);
    ck_assert(!m.normalizer.add_dummy_prefix);
    ck_assert(m.normalizer.remove_extra_whitespaces); /* proto default */
    ck_assert(m.pieces[5].score == -0.5f);
    ck_assert_str_eq(m.pieces[5].text, "ab");
    mm_sp_model_free(&m);
}
END_TEST

/* Every prefix of a valid model either parses or fails with FORMAT. */
START_TEST(test_truncated_everywhere)
{
    size_t len;
    const uint8_t *data = mm_synthetic_tokenizer(&len);
    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = malloc(n ? n : 1); /* exact-size copy: ASan sees any over-read */
        memcpy(copy, data, n);
        struct mm_sp_model m;
        struct mm_err err;
        const enum mm_status st = mm_sp_model_parse(copy, n, &m, &err);
        ck_assert_msg(st == MM_OK || st == MM_ERR_FORMAT, "len %zu: status %d", n, (int)st);
        if (st == MM_OK)
            mm_sp_model_free(&m);
        free(copy);
    }
}
END_TEST

static void expect_format(const uint8_t *p, size_t n, const char *needle)
{
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    struct mm_sp_model m;
    struct mm_err err;
    ck_assert_int_eq(mm_sp_model_parse(copy, n, &m, &err), MM_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, needle) != NULL, "\"%s\" not in \"%s\"", needle, err.msg);
    free(copy);
}

START_TEST(test_malformed)
{
    /* empty input: no trainer_spec */
    expect_format((const uint8_t *)"", 0, "trainer_spec");
    /* a varint that never ends / overflows */
    const uint8_t long_varint[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 0xff, 0x01};
    expect_format(long_varint, sizeof long_varint, "varint");
    const uint8_t overflow[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    expect_format(overflow, sizeof overflow, "64 bits");
    const uint8_t truncated_varint[] = {0x08, 0x80};
    expect_format(truncated_varint, sizeof truncated_varint, "truncated varint");
    /* a length far past the end (2^40) and one just past it */
    struct mm_test_pb b = {.n = 0};
    mm_test_pb_key(&b, 1, 2);
    mm_test_pb_varint(&b, (uint64_t)1 << 40);
    expect_format(b.p, b.n, "claims");
    b.n = 0;
    mm_test_pb_key(&b, 1, 2);
    mm_test_pb_varint(&b, 3);
    b.p[b.n++] = 0x0a;
    b.p[b.n++] = 0x01;
    expect_format(b.p, b.n, "claims");
    /* an inner length past its parent's end */
    b.n = 0;
    mm_test_pb_key(&b, 1, 2);
    mm_test_pb_varint(&b, 2);
    b.p[b.n++] = 0x0a;
    b.p[b.n++] = 0x05;
    b.p[b.n++] = 'x';
    expect_format(b.p, b.n, "claims");
    /* groups, field number 0, truncated fixed32 */
    const uint8_t group[] = {0x0b, 0x0c};
    expect_format(group, sizeof group, "wire type");
    const uint8_t field0[] = {0x00, 0x00};
    expect_format(field0, sizeof field0, "field number");
    const uint8_t fixed[] = {0x0a, 0x03, 0x15, 0x00, 0x00};
    expect_format(fixed, sizeof fixed, "fixed32");
    /* wrong wire type for a known field */
    const uint8_t wrong[] = {0x08, 0x01};
    expect_format(wrong, sizeof wrong, "pieces");
}
END_TEST

START_TEST(test_semantic_errors)
{
    struct mm_test_pb b, t;
    /* no unk */
    b.n = 0;
    mm_test_pb_piece(&b, "a", 0, 0);
    t.n = 0;
    mm_test_pb_key(&t, 3, 0);
    mm_test_pb_varint(&t, MM_SP_BPE);
    mm_test_pb_msg(&b, 2, &t);
    expect_format(b.p, b.n, "no <unk>");
    /* two unks */
    b.n = 0;
    mm_test_pb_piece(&b, "<unk>", 0, MM_SP_UNKNOWN);
    mm_test_pb_piece(&b, "<unk2>", 0, MM_SP_UNKNOWN);
    mm_test_pb_msg(&b, 2, &t);
    expect_format(b.p, b.n, "second <unk>");
    /* empty piece */
    b.n = 0;
    mm_test_pb_piece(&b, "", 0, MM_SP_UNKNOWN);
    mm_test_pb_msg(&b, 2, &t);
    expect_format(b.p, b.n, "empty piece");
    /* byte piece without byte_fallback */
    b.n = 0;
    mm_test_pb_piece(&b, "<unk>", 0, MM_SP_UNKNOWN);
    mm_test_pb_piece(&b, "<0x41>", 0, MM_SP_BYTE);
    mm_test_pb_msg(&b, 2, &t);
    expect_format(b.p, b.n, "byte_fallback is false");
    /* byte_fallback with a missing / malformed byte piece */
    minimal_model(&b, true);
    expect_format(b.p, b.n, "missing");
    b.n = 0;
    mm_test_pb_piece(&b, "<unk>", 0, MM_SP_UNKNOWN);
    mm_test_pb_piece(&b, "<0xZZ>", 0, MM_SP_BYTE);
    t.n = 0;
    mm_test_pb_key(&t, 35, 0);
    mm_test_pb_varint(&t, 1);
    mm_test_pb_msg(&b, 2, &t);
    expect_format(b.p, b.n, "not <0xXX>");
    /* unknown piece type */
    b.n = 0;
    mm_test_pb_piece(&b, "<unk>", 0, 9);
    expect_format(b.p, b.n, "type 9");
    /* charsmap whose trie size does not fit */
    minimal_model(&b, false);
    struct mm_test_pb nm = {.n = 0};
    const uint8_t cm[8] = {0x10, 0, 0, 0, 1, 2, 3, 4};
    mm_test_pb_bytes(&nm, 2, cm, sizeof cm);
    mm_test_pb_msg(&b, 3, &nm);
    expect_format(b.p, b.n, "trie size");
}
END_TEST

/* Non-BPE models parse but the tokenizer refuses them; duplicate pieces too. */
START_TEST(test_tokenizer_refusals)
{
    struct mm_test_pb b;
    minimal_model(&b, false);
    struct mm_test_pb t = {.n = 0};
    mm_test_pb_key(&t, 3, 0);
    mm_test_pb_varint(&t, MM_SP_UNIGRAM);
    mm_test_pb_msg(&b, 2, &t); /* later field wins, as in protobuf */
    struct mm_tokenizer *tok;
    struct mm_err err;
    ck_assert_int_eq(mm_tokenizer_load_memory(b.p, b.n, &tok, &err), MM_ERR_UNSUPPORTED);
    minimal_model(&b, false);
    mm_test_pb_piece(&b, "ab", 0, 0);
    ck_assert_int_eq(mm_tokenizer_load_memory(b.p, b.n, &tok, &err), MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "twice"));
}
END_TEST

/* Random corruption: parse, and when it parses, tokenize; nothing may crash. */
START_TEST(test_random_corruption)
{
    size_t len;
    const uint8_t *data = mm_synthetic_tokenizer(&len);
    uint8_t *copy = malloc(len);
    uint64_t s = 12345;
    for (int round = 0; round < 300; round++) {
        memcpy(copy, data, len);
        for (int k = 0; k < 1 + round % 8; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            copy[(s >> 33) % len] = (uint8_t)(s >> 17);
        }
        struct mm_tokenizer *tok;
        struct mm_err err;
        if (mm_tokenizer_load_memory(copy, len, &tok, &err) != MM_OK)
            continue;
        struct mm_tokens ids = {0};
        const char text[] = "Hello wörld 你好 \xff\xfe 😀  x";
        ck_assert_int_eq(
            mm_tokenizer_encode(tok, text, sizeof text - 1, MM_TOKENIZE_BOS, &ids, &err), MM_OK);
        char *out;
        size_t n;
        ck_assert_int_eq(mm_tokenizer_decode(tok, ids.ids, ids.n, &out, &n, &err), MM_OK);
        free(out);
        mm_tokens_free(&ids);
        mm_tokenizer_free(tok);
    }
    free(copy);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("sentencepiece");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_synthetic_model);
    tcase_add_test(tc, test_minimal_model);
    tcase_add_test(tc, test_truncated_everywhere);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_semantic_errors);
    tcase_add_test(tc, test_tokenizer_refusals);
    tcase_add_test(tc, test_random_corruption);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return mm_test_run(suite()); }
