/* json.c: typed cJSON getters and file reading (see json.h). */
#include "base/json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cJSON *lookup(const cJSON *obj, const char *key, bool required, const char *ctx,
                           struct mm_err *err, enum mm_status *st)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *st = MM_OK;
    if (!v || cJSON_IsNull(v)) {
        if (required)
            *st = mm_err_set(err, MM_ERR_NOT_FOUND, "%s: required key \"%s\" is missing", ctx, key);
        return NULL;
    }
    return v;
}

enum mm_status mm_json_get_i64(const cJSON *obj, const char *key, bool required, int64_t *out,
                               const char *ctx, struct mm_err *err)
{
    enum mm_status st;
    const cJSON *v = lookup(obj, key, required, ctx, err, &st);
    if (!v)
        return st;
    const double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || d != floor(d) || fabs(d) > 9.0e15)
        return mm_err_set(err, MM_ERR_FORMAT, "%s: key \"%s\" must be an integer", ctx, key);
    *out = (int64_t)d;
    return MM_OK;
}

enum mm_status mm_json_get_f64(const cJSON *obj, const char *key, bool required, double *out,
                               const char *ctx, struct mm_err *err)
{
    enum mm_status st;
    const cJSON *v = lookup(obj, key, required, ctx, err, &st);
    if (!v)
        return st;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return mm_err_set(err, MM_ERR_FORMAT, "%s: key \"%s\" must be a number", ctx, key);
    *out = v->valuedouble;
    return MM_OK;
}

enum mm_status mm_json_get_bool(const cJSON *obj, const char *key, bool required, bool *out,
                                const char *ctx, struct mm_err *err)
{
    enum mm_status st;
    const cJSON *v = lookup(obj, key, required, ctx, err, &st);
    if (!v)
        return st;
    if (!cJSON_IsBool(v))
        return mm_err_set(err, MM_ERR_FORMAT, "%s: key \"%s\" must be true or false", ctx, key);
    *out = cJSON_IsTrue(v);
    return MM_OK;
}

enum mm_status mm_json_get_str(const cJSON *obj, const char *key, bool required, const char **out,
                               const char *ctx, struct mm_err *err)
{
    enum mm_status st;
    const cJSON *v = lookup(obj, key, required, ctx, err, &st);
    if (!v)
        return st;
    if (!cJSON_IsString(v))
        return mm_err_set(err, MM_ERR_FORMAT, "%s: key \"%s\" must be a string", ctx, key);
    *out = v->valuestring;
    return MM_OK;
}

enum mm_status mm_json_get_obj(const cJSON *obj, const char *key, bool required, const cJSON **out,
                               const char *ctx, struct mm_err *err)
{
    enum mm_status st;
    const cJSON *v = lookup(obj, key, required, ctx, err, &st);
    if (!v)
        return st;
    if (!cJSON_IsObject(v))
        return mm_err_set(err, MM_ERR_FORMAT, "%s: key \"%s\" must be an object", ctx, key);
    *out = v;
    return MM_OK;
}

enum mm_status mm_file_read_all(const char *path, size_t max_bytes, char **out, size_t *len,
                                struct mm_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return mm_err_set(err, MM_ERR_IO, "%s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    enum mm_status st = MM_OK;
    for (;;) {
        if (n + 1 >= cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                st = mm_err_set(err, MM_ERR_NOMEM, "%s: out of memory", path);
                goto fail;
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n > max_bytes) {
            st = mm_err_set(err, MM_ERR_LIMIT, "%s: larger than %zu bytes", path, max_bytes);
            goto fail;
        }
        if (got == 0) {
            if (ferror(f)) {
                st = mm_err_set(err, MM_ERR_IO, "%s: read error", path);
                goto fail;
            }
            break;
        }
    }
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    if (len)
        *len = n;
    return MM_OK;
fail:
    fclose(f);
    free(buf);
    return st;
}

enum mm_status mm_json_read_file(const char *path, size_t max_bytes, cJSON **out,
                                 struct mm_err *err)
{
    char *text;
    size_t len;
    enum mm_status st = mm_file_read_all(path, max_bytes, &text, &len, err);
    if (st != MM_OK)
        return st;
    const char *end = NULL; /* thread-safe, unlike cJSON_GetErrorPtr */
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        long off = end ? (long)(end - text) : -1;
        free(text);
        return mm_err_set(err, MM_ERR_FORMAT, "%s: invalid JSON near byte %ld", path, off);
    }
    free(text);
    *out = root;
    return MM_OK;
}

cJSON *mm_json_string_n(const char *s, size_t n)
{
    if (n > (SIZE_MAX - 3) / 6)
        return NULL;
    char *buf = malloc(6 * n + 3); /* worst case: every byte as \u00XX */
    if (!buf)
        return NULL;
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    buf[k++] = '"';
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf[k++] = '\\';
            buf[k++] = (char)c;
        } else if (c < 0x20) {
            buf[k++] = '\\';
            switch (c) {
            case '\n': buf[k++] = 'n'; break;
            case '\r': buf[k++] = 'r'; break;
            case '\t': buf[k++] = 't'; break;
            case '\b': buf[k++] = 'b'; break;
            case '\f': buf[k++] = 'f'; break;
            default:
                buf[k++] = 'u';
                buf[k++] = '0';
                buf[k++] = '0';
                buf[k++] = hex[c >> 4];
                buf[k++] = hex[c & 15];
            }
        } else {
            buf[k++] = (char)c;
        }
    }
    buf[k++] = '"';
    buf[k] = '\0';
    cJSON *item = cJSON_CreateRaw(buf);
    free(buf);
    return item;
}
