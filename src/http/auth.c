/* auth.c: bearer API keys (app.h): loading from the option list and the key
 * file, and a comparison whose time does not depend on where a guess first
 * differs from a key. */
#include "http/app.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KEY_LEN 512
#define MAX_KEYS 4096

/* Compares a and b in time that depends only on their lengths (and of the
 * longer one), never on their contents. */
static bool ct_equal(const char *a, size_t na, const char *b, size_t nb)
{
    const size_t n = na > nb ? na : nb;
    unsigned char diff = (unsigned char)(na != nb);
    for (size_t i = 0; i < n; i++) {
        const unsigned char x = i < na ? (unsigned char)a[i] : 0;
        const unsigned char y = i < nb ? (unsigned char)b[i] : 0;
        diff |= (unsigned char)(x ^ y);
    }
    return diff == 0;
}

const char *mm_http_auth_key(const struct mm_http_app *app, const char *authorization, bool *ok)
{
    *ok = false;
    if (!app->api_keys || !app->api_keys[0]) {
        *ok = true;
        return NULL;
    }
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return NULL;
    const char *key = authorization + 7;
    while (*key == ' ')
        key++;
    const size_t n = strlen(key);
    const char *match = NULL;
    for (char **k = app->api_keys; *k; k++) /* every key is compared: no early exit */
        if (ct_equal(key, n, *k, strlen(*k)))
            match = *k;
    *ok = match != NULL;
    return match;
}

bool mm_http_auth_ok(const struct mm_http_app *app, const char *authorization)
{
    bool ok;
    mm_http_auth_key(app, authorization, &ok);
    return ok;
}

static enum mm_status add_key(char ***keys, size_t *n, const char *s, size_t len, const char *where,
                              struct mm_err *err)
{
    while (len && (s[0] == ' ' || s[0] == '\t')) {
        s++;
        len--;
    }
    while (len &&
           (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\r' || s[len - 1] == '\n'))
        len--;
    if (len == 0)
        return MM_OK;
    if (len > MAX_KEY_LEN || *n >= MAX_KEYS)
        return mm_err_set(err, MM_ERR_LIMIT, "%s: keys are at most %d bytes and %d in number",
                          where, MAX_KEY_LEN, MAX_KEYS);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
            return mm_err_set(err, MM_ERR_INVALID,
                              "%s: a key may hold only printable ASCII without spaces", where);
    char **grown = realloc(*keys, (*n + 2) * sizeof *grown);
    if (!grown)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    *keys = grown;
    if (!(grown[*n] = strndup(s, len)))
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    grown[++*n] = NULL;
    return MM_OK;
}

enum mm_status mm_http_keys_load(const char *list, const char *file, char ***out,
                                 struct mm_err *err)
{
    char **keys = NULL;
    size_t n = 0;
    enum mm_status st = MM_OK;
    for (const char *p = list ? list : ""; st == MM_OK && *p;) {
        const char *comma = strchr(p, ',');
        const size_t len = comma ? (size_t)(comma - p) : strlen(p);
        st = add_key(&keys, &n, p, len, "api_keys", err);
        p += len + (comma != NULL);
    }
    if (st == MM_OK && file && file[0]) {
        FILE *f = fopen(file, "r");
        if (!f) {
            st = mm_err_set(err, MM_ERR_IO, "api_key_file %s: %s", file, strerror(errno));
        } else {
            char line[MAX_KEY_LEN + 64];
            while (st == MM_OK && fgets(line, sizeof line, f)) {
                const char *s = line;
                while (*s == ' ' || *s == '\t')
                    s++;
                if (*s != '#')
                    st = add_key(&keys, &n, s, strlen(s), file, err);
            }
            fclose(f);
        }
    }
    if (st != MM_OK) {
        mm_http_keys_free(keys);
        return st;
    }
    *out = keys;
    return MM_OK;
}

void mm_http_keys_free(char **keys)
{
    if (!keys)
        return;
    for (char **k = keys; *k; k++)
        free(*k);
    free(keys);
}
