/* check_json.c: typed getters and file reading of base/json.c. */
#include "base/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

START_TEST(test_getters)
{
    cJSON *o = cJSON_Parse("{\"i\": 42, \"f\": 1.5, \"b\": true, \"s\": \"x\", \"o\": {}, "
                           "\"neg\": -3, \"frac\": 2.5, \"n\": null}");
    ck_assert_ptr_nonnull(o);
    struct mm_err err;
    int64_t i = -1;
    double f = 0;
    bool b = false;
    const char *s = NULL;
    const cJSON *sub = NULL;
    ck_assert_int_eq(mm_json_get_i64(o, "i", true, &i, "ctx", &err), MM_OK);
    ck_assert_int_eq(i, 42);
    ck_assert_int_eq(mm_json_get_i64(o, "neg", true, &i, "ctx", &err), MM_OK);
    ck_assert_int_eq(i, -3);
    ck_assert_int_eq(mm_json_get_f64(o, "f", true, &f, "ctx", &err), MM_OK);
    ck_assert(f == 1.5);
    ck_assert_int_eq(mm_json_get_bool(o, "b", true, &b, "ctx", &err), MM_OK);
    ck_assert(b);
    ck_assert_int_eq(mm_json_get_str(o, "s", true, &s, "ctx", &err), MM_OK);
    ck_assert_str_eq(s, "x");
    ck_assert_int_eq(mm_json_get_obj(o, "o", true, &sub, "ctx", &err), MM_OK);
    ck_assert_ptr_nonnull(sub);

    /* wrong types name the key */
    ck_assert_int_eq(mm_json_get_i64(o, "frac", true, &i, "cfg", &err), MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "\"frac\""));
    ck_assert_int_eq(mm_json_get_i64(o, "s", true, &i, "cfg", &err), MM_ERR_FORMAT);
    ck_assert_int_eq(mm_json_get_bool(o, "i", true, &b, "cfg", &err), MM_ERR_FORMAT);
    ck_assert_int_eq(mm_json_get_str(o, "i", true, &s, "cfg", &err), MM_ERR_FORMAT);
    ck_assert_int_eq(mm_json_get_obj(o, "s", true, &sub, "cfg", &err), MM_ERR_FORMAT);

    /* missing: required is an error, optional keeps the default; null = missing */
    i = 7;
    ck_assert_int_eq(mm_json_get_i64(o, "nope", false, &i, "cfg", &err), MM_OK);
    ck_assert_int_eq(i, 7);
    ck_assert_int_eq(mm_json_get_i64(o, "n", false, &i, "cfg", &err), MM_OK);
    ck_assert_int_eq(i, 7);
    ck_assert_int_eq(mm_json_get_i64(o, "nope", true, &i, "cfg", &err), MM_ERR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(err.msg, "cfg: required key \"nope\""));
    cJSON_Delete(o);
}
END_TEST

START_TEST(test_read_file)
{
    char dir[256], path[300];
    mm_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/a.json", dir);
    mm_test_write_file(path, "{\"k\": [1, 2]}", 13);
    struct mm_err err;
    cJSON *root;
    ck_assert_int_eq(mm_json_read_file(path, 1024, &root, &err), MM_OK);
    ck_assert(cJSON_IsArray(cJSON_GetObjectItem(root, "k")));
    cJSON_Delete(root);
    ck_assert_int_eq(mm_json_read_file(path, 5, &root, &err), MM_ERR_LIMIT);
    mm_test_write_file(path, "{\"k\": [1, 2}", 12);
    ck_assert_int_eq(mm_json_read_file(path, 1024, &root, &err), MM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "invalid JSON"));
    snprintf(path, sizeof path, "%s/missing.json", dir);
    ck_assert_int_eq(mm_json_read_file(path, 1024, &root, &err), MM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err.msg, "missing.json"));
    mm_test_rmdir(dir);
}
END_TEST

/* Text with NUL bytes, quotes, backslashes, controls and UTF-8 survives a
 * print and a parse whole (cJSON's own strings stop at the NUL). */
START_TEST(test_string_n)
{
    const char text[] = "a\0b\"c\\d\n\x01\x1f\xc3\xa9\0";
    const size_t n = sizeof text - 1; /* the trailing NUL is part of the text */
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "t", mm_json_string_n(text, n));
    char *out = cJSON_PrintUnformatted(o);
    ck_assert_str_eq(out, "{\"t\":\"a\\u0000b\\\"c\\\\d\\n\\u0001\\u001f\xc3\xa9\\u0000\"}");
    /* parsed back: the value runs to the first NUL in cJSON, so compare raw bytes */
    cJSON *back = cJSON_Parse(out);
    ck_assert_ptr_nonnull(back);
    ck_assert_str_eq(cJSON_GetObjectItem(back, "t")->valuestring, "a");
    cJSON_Delete(back);
    free(out);
    cJSON_Delete(o);
    cJSON *empty = mm_json_string_n("", 0);
    out = cJSON_PrintUnformatted(empty);
    ck_assert_str_eq(out, "\"\"");
    free(out);
    cJSON_Delete(empty);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("base/json");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_getters);
    tcase_add_test(tc, test_read_file);
    tcase_add_test(tc, test_string_n);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
