/* check_base64.c: strict base64 decoding of base/base64.c. */
#include "base/base64.h"

#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* Decodes a C string; returns the status and leaves the output in buf. */
static enum mm_status dec(const char *s, uint8_t *buf, size_t cap, size_t *n, struct mm_err *err)
{
    return mm_base64_decode(s, strlen(s), buf, cap, n, err);
}

START_TEST(test_vectors)
{
    /* RFC 4648 §10 */
    static const char *const in[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
                                     "Zm9vYmFy"};
    static const char *const out[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        uint8_t buf[16];
        size_t n = 99;
        struct mm_err err;
        ck_assert_int_eq(dec(in[i], buf, sizeof buf, &n, &err), MM_OK);
        ck_assert_uint_eq(n, strlen(out[i]));
        ck_assert(memcmp(buf, out[i], n) == 0);
    }
}
END_TEST

START_TEST(test_whitespace_skipped)
{
    uint8_t buf[16];
    size_t n;
    struct mm_err err;
    ck_assert_int_eq(dec(" Zm9v\r\nYm\tFy\n", buf, sizeof buf, &n, &err), MM_OK);
    ck_assert_uint_eq(n, 6);
    ck_assert(memcmp(buf, "foobar", 6) == 0);
    ck_assert_int_eq(dec("Zg=\n=", buf, sizeof buf, &n, &err), MM_OK);
    ck_assert_uint_eq(n, 1);
}
END_TEST

START_TEST(test_malformed)
{
    static const char *const bad[] = {
        "Zg",       /* missing padding */
        "Zg=",      /* incomplete padding */
        "Z===",     /* too much padding */
        "=Zg=",     /* padding first */
        "Zg==Zg==", /* data after padding */
        "Zm9v=",    /* padding after a full quad */
        "Zh==",     /* non-zero bits before padding */
        "Zm9=",     /* non-zero bits before padding (2 bytes) */
        "Zm9-",     /* URL-safe alphabet */
        "Zm9_",     /* URL-safe alphabet */
        "Zm9v.",    /* punctuation */
        "Zm\xc3\xa9v", /* non-ASCII */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t buf[16];
        size_t n;
        struct mm_err err = {0};
        ck_assert_msg(dec(bad[i], buf, sizeof buf, &n, &err) == MM_ERR_FORMAT, "accepted %s",
                      bad[i]);
        ck_assert(strstr(err.msg, "base64") != NULL);
    }
    /* an embedded NUL is an invalid byte, not an end */
    uint8_t buf[8];
    size_t n;
    struct mm_err err;
    ck_assert_int_eq(mm_base64_decode("Zm9v\0Zm9v", 9, buf, sizeof buf, &n, &err),
                     MM_ERR_FORMAT);
    ck_assert(strstr(err.msg, "offset 4") != NULL);
}
END_TEST

START_TEST(test_capacity)
{
    uint8_t buf[5];
    size_t n;
    struct mm_err err;
    ck_assert_int_eq(dec("Zm9vYmFy", buf, 5, &n, &err), MM_ERR_LIMIT);
    ck_assert_int_eq(dec("Zm9vYmE=", buf, 5, &n, &err), MM_OK);
    ck_assert_int_eq(dec("Zm9vYg==", buf, 3, &n, &err), MM_ERR_LIMIT);
    ck_assert_uint_ge(mm_base64_decoded_max(8), 6);
    ck_assert_uint_ge(mm_base64_decoded_max(SIZE_MAX), SIZE_MAX / 4 * 3);
}
END_TEST

/* Reference encoder for the round trip. */
static char *encode(const uint8_t *p, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
    for (size_t i = 0; i < n; i += 3) {
        const uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                           (i + 2 < n ? p[i + 2] : 0);
        *o++ = a[v >> 18];
        *o++ = a[v >> 12 & 63];
        *o++ = i + 1 < n ? a[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? a[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

START_TEST(test_round_trip_alloc)
{
    uint8_t data[300];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7 + 3);
    for (size_t len = 0; len <= sizeof data; len += 1 + len / 8) {
        char *s = encode(data, len);
        uint8_t *out;
        size_t n;
        struct mm_err err;
        ck_assert_int_eq(mm_base64_decode_alloc(s, strlen(s), 1000, &out, &n, &err), MM_OK);
        ck_assert_uint_eq(n, len);
        ck_assert(memcmp(out, data, len) == 0);
        free(out);
        if (len >= 6) { /* the limit is checked before allocating */
            ck_assert_int_eq(mm_base64_decode_alloc(s, strlen(s), len - 6, &out, &n, &err),
                             MM_ERR_LIMIT);
            ck_assert_ptr_null(out);
        }
        free(s);
    }
    uint8_t *out;
    size_t n;
    struct mm_err err;
    ck_assert_int_eq(mm_base64_decode_alloc("Zm9v!", 5, 100, &out, &n, &err), MM_ERR_FORMAT);
    ck_assert_ptr_null(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("base/base64");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_vectors);
    tcase_add_test(tc, test_whitespace_skipped);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_capacity);
    tcase_add_test(tc, test_round_trip_alloc);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
