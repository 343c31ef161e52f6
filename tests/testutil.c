/* testutil.c: see testutil.h. */
#include "testutil.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/config.h"
#include "model/synthetic.h"

void mm_test_tmpdir(char *buf, size_t cap)
{
    const char *base = getenv("TMPDIR");
    snprintf(buf, cap, "%s/mmtest.XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(buf));
}

void mm_test_synthetic_model(char *buf, size_t cap, const char *preset, uint64_t seed)
{
    struct mm_config cfg;
    struct mm_err err;
    const struct mm_synthetic_options opt = {.seed = seed, .shards = 1};
    mm_test_tmpdir(buf, cap);
    ck_assert_msg(mm_synthetic_preset(preset, &cfg, &err) == MM_OK, "%s", err.msg);
    ck_assert_msg(mm_synthetic_write(buf, &cfg, &opt, &err) == MM_OK, "%s", err.msg);
}

void mm_test_rmdir(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

void mm_test_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

char *mm_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        if (len)
            *len = (size_t)n;
    }
    return buf;
}

const char *mm_test_srcdir(void)
{
    const char *s = getenv("top_srcdir");
    return s && *s ? s : ".";
}

static int run_suite(Suite *s, bool fork)
{
    SRunner *sr = srunner_create(s);
    if (!fork)
        srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}

int mm_test_run(Suite *s) { return run_suite(s, true); }

int mm_test_run_nofork(Suite *s) { return run_suite(s, false); }

struct mm_image mm_test_image(int64_t w, int64_t h, uint32_t seed)
{
    struct mm_image img = {.width = w, .height = h, .rgb = malloc((size_t)(w * h * 3))};
    ck_assert_ptr_nonnull(img.rgb);
    for (int64_t i = 0; i < w * h * 3; i++) {
        seed = seed * 1664525u + 1013904223u;
        const int64_t x = i / 3 % w;
        uint8_t v = (uint8_t)(x * 255 / (w > 1 ? w - 1 : 1) / 2 + (seed >> 26));
        if ((seed >> 8) % 17 == 0)
            v = (seed >> 16) & 1 ? 255 : 0;
        img.rgb[i] = v;
    }
    return img;
}

static void pb_put(struct mm_test_pb *b, const void *s, size_t n)
{
    ck_assert_uint_le(b->n + n, sizeof b->p);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

void mm_test_pb_varint(struct mm_test_pb *b, uint64_t v)
{
    do {
        const uint8_t c = (uint8_t)((v & 0x7f) | (v >> 7 ? 0x80 : 0));
        pb_put(b, &c, 1);
        v >>= 7;
    } while (v);
}

void mm_test_pb_key(struct mm_test_pb *b, uint32_t field, uint32_t wire)
{
    mm_test_pb_varint(b, (uint64_t)field << 3 | wire);
}

void mm_test_pb_bytes(struct mm_test_pb *b, uint32_t field, const void *s, size_t n)
{
    mm_test_pb_key(b, field, 2);
    mm_test_pb_varint(b, n);
    pb_put(b, s, n);
}

void mm_test_pb_msg(struct mm_test_pb *b, uint32_t field, const struct mm_test_pb *m)
{
    mm_test_pb_bytes(b, field, m->p, m->n);
}

void mm_test_pb_piece(struct mm_test_pb *b, const char *text, float score, int type)
{
    struct mm_test_pb m = {.n = 0};
    mm_test_pb_bytes(&m, 1, text, strlen(text));
    uint32_t bits;
    memcpy(&bits, &score, 4);
    mm_test_pb_key(&m, 2, 5);
    for (int i = 0; i < 4; i++) {
        const uint8_t c = (uint8_t)(bits >> (8 * i));
        pb_put(&m, &c, 1);
    }
    if (type) {
        mm_test_pb_key(&m, 3, 0);
        mm_test_pb_varint(&m, (uint64_t)type);
    }
    mm_test_pb_msg(b, 1, &m);
}
