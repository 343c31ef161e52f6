/* check_safetensors.c: the validated reader and the writer
 * (src/model/safetensors.c), including hostile files: truncated, corrupted,
 * overlapping and overflowing headers, and bad shard indexes. */
#include "model/safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* Builds a file image: 8-byte length, header text, data_len bytes of data. */
static uint8_t *make_image(const char *header, size_t data_len, size_t *len)
{
    const size_t h = strlen(header);
    *len = 8 + h + data_len;
    uint8_t *buf = calloc(1, *len);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    for (size_t i = 0; i < data_len; i++)
        buf[8 + h + i] = (uint8_t)i;
    return buf;
}

static enum mm_status open_header(const char *header, size_t data_len, struct mm_err *err)
{
    size_t len;
    uint8_t *buf = make_image(header, data_len, &len);
    struct mm_safetensors *st = NULL;
    enum mm_status s = mm_safetensors_open_buffer(buf, len, "mem", &st, err);
    mm_safetensors_close(st);
    free(buf);
    return s;
}

START_TEST(test_valid_buffer)
{
    size_t len;
    uint8_t *buf = make_image("{\"__metadata__\":{\"format\":\"pt\"},"
                              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
                              "\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                              "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[12,16]},"
                              "\"e\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[16,16]}}",
                              16, &len);
    struct mm_safetensors *st;
    struct mm_err err;
    ck_assert_int_eq(mm_safetensors_open_buffer(buf, len, "mem", &st, &err), MM_OK);
    ck_assert_int_eq(mm_safetensors_count(st), 4);
    ck_assert_str_eq(mm_safetensors_at(st, 0)->name, "a"); /* name order */
    const struct mm_tensor *b = mm_safetensors_find(st, "b");
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(b->dtype, MM_DTYPE_F32);
    ck_assert_int_eq(b->numel, 2);
    ck_assert_uint_eq(b->nbytes, 8);
    ck_assert_int_eq(((const uint8_t *)b->data)[0], 4);
    ck_assert_int_eq(mm_safetensors_find(st, "s")->ndim, 0);
    ck_assert_int_eq(mm_safetensors_find(st, "s")->numel, 1);
    ck_assert_int_eq(mm_safetensors_find(st, "e")->numel, 0);
    ck_assert_ptr_null(mm_safetensors_find(st, "zz"));
    mm_safetensors_close(st);
    free(buf);
}
END_TEST

START_TEST(test_bad_headers)
{
    struct mm_err err;
    /* not an object / not JSON */
    ck_assert_int_eq(open_header("[1,2]", 0, &err), MM_ERR_FORMAT);
    ck_assert_int_eq(open_header("{\"a\":", 0, &err), MM_ERR_FORMAT);
    /* entry fields */
    ck_assert_int_eq(open_header("{\"a\":5}", 0, &err), MM_ERR_FORMAT);
    ck_assert_int_eq(
        open_header("{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, &err),
        MM_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err.msg, "tensor a"));
    ck_assert_int_eq(
        open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, &err),
        MM_ERR_FORMAT);
    ck_assert_int_eq(
        open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, &err),
        MM_ERR_FORMAT);
    ck_assert_int_eq(
        open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, &err),
        MM_ERR_FORMAT);
    ck_assert_int_eq(
        open_header(
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
            &err),
        MM_ERR_UNSUPPORTED);
    /* size mismatch: shape says 8 bytes, range is 4 */
    ck_assert_int_eq(
        open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8, &err),
        MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "shape x dtype"));
    /* range outside the data area */
    ck_assert_int_eq(
        open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 7, &err),
        MM_ERR_FORMAT);
    ck_assert_int_eq(
        open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, &err),
        MM_ERR_FORMAT);
    /* overlapping tensors */
    ck_assert_int_eq(open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                 "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                                 8, &err),
                     MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "overlap"));
    /* element count and byte size overflows */
    ck_assert_int_eq(
        open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                    "\"data_offsets\":[0,4]}}",
                    4, &err),
        MM_ERR_OVERFLOW);
    ck_assert_int_eq(open_header("{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],"
                                 "\"data_offsets\":[0,4]}}",
                                 4, &err),
                     MM_ERR_FORMAT); /* > 2^53 */
    ck_assert_int_eq(open_header("{\"a\":{\"dtype\":\"F64\",\"shape\":[4503599627370496,4096],"
                                 "\"data_offsets\":[0,4]}}",
                                 4, &err),
                     MM_ERR_OVERFLOW);
    /* bad metadata */
    ck_assert_int_eq(open_header("{\"__metadata__\":3}", 0, &err), MM_ERR_FORMAT);
}
END_TEST

START_TEST(test_truncated_and_lying_length)
{
    struct mm_err err;
    struct mm_safetensors *st;
    uint8_t small[5] = {1, 2, 3, 4, 5};
    ck_assert_int_eq(mm_safetensors_open_buffer(small, sizeof small, "mem", &st, &err),
                     MM_ERR_FORMAT);
    size_t len;
    uint8_t *buf =
        make_image("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, &len);
    /* every truncation is rejected, none crashes */
    for (size_t cut = 0; cut < len; cut++) {
        st = NULL;
        ck_assert_int_ne(mm_safetensors_open_buffer(buf, cut, "mem", &st, &err), MM_OK);
        ck_assert_ptr_null(st);
    }
    /* header length larger than the file */
    buf[7] = 0x7f;
    ck_assert_int_eq(mm_safetensors_open_buffer(buf, len, "mem", &st, &err), MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "exceeds the file size"));
    free(buf);
}
END_TEST

/* Random byte flips over a valid image never crash (a poor man's fuzzer;
 * run under ASan in the sanitizer build). */
START_TEST(test_mutations_do_not_crash)
{
    size_t len;
    uint8_t *orig =
        make_image("{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}",
                   16, &len);
    uint8_t *buf = malloc(len);
    uint64_t x = 12345;
    int ok = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(buf, orig, len);
        const int flips = 1 + (int)(x % 4);
        for (int f = 0; f < flips; f++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            const size_t at = (size_t)(x >> 33) % len;
            buf[at] = (uint8_t)(x >> 17);
        }
        struct mm_safetensors *st = NULL;
        struct mm_err err;
        if (mm_safetensors_open_buffer(buf, len, "mem", &st, &err) == MM_OK) {
            ok++;
            for (int64_t i = 0; i < mm_safetensors_count(st); i++) {
                const struct mm_tensor *t = mm_safetensors_at(st, i);
                volatile uint8_t sink = 0;
                for (size_t k = 0; k < t->nbytes; k++)
                    sink ^= ((const uint8_t *)t->data)[k]; /* ASan checks the bounds */
                (void)sink;
            }
        }
        mm_safetensors_close(st);
    }
    ck_assert_int_gt(ok, 0); /* some mutations only touch data bytes */
    free(buf);
    free(orig);
}
END_TEST

static void write_small(const char *path, const char *name, float value)
{
    struct mm_st_writer *w;
    struct mm_err err;
    const int64_t shape[2] = {1, 2};
    const float data[2] = {value, -value};
    ck_assert_int_eq(mm_st_writer_create(path, &w, &err), MM_OK);
    ck_assert_int_eq(mm_st_writer_declare(w, name, MM_DTYPE_F32, 2, shape, &err), MM_OK);
    ck_assert_int_eq(mm_st_writer_begin_data(w, &err), MM_OK);
    ck_assert_int_eq(mm_st_writer_write(w, data, sizeof data, &err), MM_OK);
    ck_assert_int_eq(mm_st_writer_finish(w, &err), MM_OK);
}

START_TEST(test_writer_round_trip_and_file)
{
    char dir[256], path[512];
    mm_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    write_small(path, "w", 2.5f);
    size_t len;
    char *raw = mm_test_read_file(path, &len);
    ck_assert_ptr_nonnull(raw);
    uint64_t hlen = 0;
    memcpy(&hlen, raw, 8);
    ck_assert_uint_eq(hlen % 8, 0); /* padded like the reference writer */
    free(raw);
    struct mm_safetensors *st;
    struct mm_err err;
    ck_assert_int_eq(mm_safetensors_open_file(path, &st, &err), MM_OK);
    const struct mm_tensor *t = mm_safetensors_find(st, "w");
    ck_assert_ptr_nonnull(t);
    float v[2];
    memcpy(v, t->data, sizeof v);
    ck_assert(v[0] == 2.5f && v[1] == -2.5f);
    ck_assert_int_eq(t->shape[1], 2);
    mm_safetensors_close(st);

    /* writer refuses more or less data than declared */
    struct mm_st_writer *w;
    const int64_t shape[1] = {2};
    const float d[3] = {0};
    ck_assert_int_eq(mm_st_writer_create(path, &w, &err), MM_OK);
    ck_assert_int_eq(mm_st_writer_declare(w, "a", MM_DTYPE_F32, 1, shape, &err), MM_OK);
    ck_assert_int_eq(mm_st_writer_begin_data(w, &err), MM_OK);
    ck_assert_int_eq(mm_st_writer_write(w, d, sizeof d, &err), MM_ERR_INVALID);
    ck_assert_int_eq(mm_st_writer_write(w, d, 4, &err), MM_OK);
    ck_assert_int_eq(mm_st_writer_finish(w, &err), MM_ERR_INVALID);

    /* missing file, empty file */
    snprintf(path, sizeof path, "%s/none.safetensors", dir);
    ck_assert_int_eq(mm_safetensors_open_file(path, &st, &err), MM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err.msg, "none.safetensors"));
    mm_test_write_file(path, "", 0);
    ck_assert_int_eq(mm_safetensors_open_file(path, &st, &err), MM_ERR_FORMAT);
    mm_test_rmdir(dir);
}
END_TEST

START_TEST(test_sharded_index)
{
    char dir[256], path[512];
    mm_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", dir);
    write_small(path, "a", 1.0f);
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    write_small(path, "b", 2.0f);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    const char *good =
        "{\"metadata\":{},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
        "\"b\":\"model-00002-of-00002.safetensors\"}}";
    mm_test_write_file(path, good, strlen(good));
    struct mm_safetensors *st;
    struct mm_err err;
    ck_assert_int_eq(mm_safetensors_open_dir(dir, &st, &err), MM_OK);
    ck_assert_int_eq(mm_safetensors_count(st), 2);
    ck_assert_int_eq(mm_safetensors_find(st, "b")->shard, 1);
    mm_safetensors_close(st);

    const char *wrong_shard = "{\"weight_map\":{\"a\":\"model-00002-of-00002.safetensors\","
                              "\"b\":\"model-00002-of-00002.safetensors\"}}";
    mm_test_write_file(path, wrong_shard, strlen(wrong_shard));
    ck_assert_int_ne(mm_safetensors_open_dir(dir, &st, &err), MM_OK);
    ck_assert_ptr_nonnull(strstr(err.msg, "tensor a"));

    const char *escape = "{\"weight_map\":{\"a\":\"../model-00001-of-00002.safetensors\"}}";
    mm_test_write_file(path, escape, strlen(escape));
    ck_assert_int_eq(mm_safetensors_open_dir(dir, &st, &err), MM_ERR_FORMAT);

    const char *missing = "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                          "\"c\":\"model-00002-of-00002.safetensors\"}}";
    mm_test_write_file(path, missing, strlen(missing));
    ck_assert_int_ne(mm_safetensors_open_dir(dir, &st, &err), MM_OK);

    /* a repeated key cannot hide an unlisted tensor */
    const char *repeated = "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                           "\"a\":\"model-00002-of-00002.safetensors\"}}";
    mm_test_write_file(path, repeated, strlen(repeated));
    ck_assert_int_eq(mm_safetensors_open_dir(dir, &st, &err), MM_ERR_FORMAT);

    /* a shard holding a tensor the map does not list */
    {
        char shard[600];
        snprintf(shard, sizeof shard, "%s/model-00001-of-00002.safetensors", dir);
        struct mm_st_writer *w;
        const int64_t one[1] = {1};
        const float v[2] = {1, 2};
        ck_assert_int_eq(mm_st_writer_create(shard, &w, &err), MM_OK);
        ck_assert_int_eq(mm_st_writer_declare(w, "a", MM_DTYPE_F32, 1, one, &err), MM_OK);
        ck_assert_int_eq(mm_st_writer_declare(w, "hidden", MM_DTYPE_F32, 1, one, &err), MM_OK);
        ck_assert_int_eq(mm_st_writer_begin_data(w, &err), MM_OK);
        ck_assert_int_eq(mm_st_writer_write(w, v, sizeof v, &err), MM_OK);
        ck_assert_int_eq(mm_st_writer_finish(w, &err), MM_OK);
        const char *only_a = "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\"}}";
        mm_test_write_file(path, only_a, strlen(only_a));
        ck_assert_int_eq(mm_safetensors_open_dir(dir, &st, &err), MM_ERR_FORMAT);
        ck_assert_ptr_nonnull(strstr(err.msg, "tensor hidden is stored"));
        write_small(shard, "a", 1.0f);
    }

    const char *absent_file = "{\"weight_map\":{\"a\":\"model-00009-of-00009.safetensors\"}}";
    mm_test_write_file(path, absent_file, strlen(absent_file));
    ck_assert_int_eq(mm_safetensors_open_dir(dir, &st, &err), MM_ERR_IO);

    /* the same name in two shards */
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    write_small(path, "a", 3.0f);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    const char *dup = "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                      "\"b\":\"model-00002-of-00002.safetensors\"}}";
    mm_test_write_file(path, dup, strlen(dup));
    ck_assert_int_eq(mm_safetensors_open_dir(dir, &st, &err), MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "appears in"));
    mm_test_rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model/safetensors");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_valid_buffer);
    tcase_add_test(tc, test_bad_headers);
    tcase_add_test(tc, test_truncated_and_lying_length);
    tcase_add_test(tc, test_mutations_do_not_crash);
    tcase_add_test(tc, test_writer_round_trip_and_file);
    tcase_add_test(tc, test_sharded_index);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
