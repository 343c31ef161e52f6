/* image_source.c: data:, file:// and remote image URLs (see image_source.h).
 *
 * Design: each URL form is one function; the allow-list check compares the
 * realpath of the target with the realpath of the root plus '/', opens the
 * resolved path with O_NOFOLLOW | O_NONBLOCK, checks again what the
 * descriptor really names (/proc/self/fd), and reads only a regular file. */
#include "model/image_source.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base64.h"
#include "model/image_decode.h"

void mm_image_bytes_free(struct mm_image_bytes *b)
{
    if (!b)
        return;
    free(b->data);
    memset(b, 0, sizeof *b);
}

static bool has_prefix_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* data:[<media type>][;param]*;base64,<data> with an image/ media type. */
static enum mm_status load_data_url(const char *url, size_t max_bytes, struct mm_image_bytes *out,
                                    struct mm_err *err)
{
    const char *meta = url + 5;
    const char *comma = strchr(meta, ',');
    if (!comma)
        return mm_err_set(err, MM_ERR_INVALID, "data URL: missing ',' before the data");
    const size_t meta_len = (size_t)(comma - meta);
    const char *semi = memchr(meta, ';', meta_len);
    const size_t type_len = semi ? (size_t)(semi - meta) : meta_len;
    if (type_len < 7 || strncasecmp(meta, "image/", 6) != 0)
        return mm_err_set(err, MM_ERR_UNSUPPORTED,
                          "data URL: media type must be image/... (e.g. image/png)");
    if (type_len >= sizeof out->media_type)
        return mm_err_set(err, MM_ERR_INVALID, "data URL: media type too long");
    bool base64 = false;
    for (const char *p = semi; p && p < comma;) {
        const char *next = memchr(p + 1, ';', (size_t)(comma - p - 1));
        const size_t plen = (size_t)((next ? next : comma) - (p + 1));
        if (plen == 6 && strncasecmp(p + 1, "base64", 6) == 0)
            base64 = true;
        p = next;
    }
    if (!base64)
        return mm_err_set(err, MM_ERR_UNSUPPORTED,
                          "data URL: only base64 data is supported (data:image/...;base64,...)");
    for (size_t i = 0; i < type_len; i++) {
        const char c = meta[i];
        out->media_type[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    out->media_type[type_len] = '\0';
    const char *b64 = comma + 1;
    const enum mm_status st =
        mm_base64_decode_alloc(b64, strlen(b64), max_bytes, &out->data, &out->len, err);
    if (st != MM_OK) {
        memset(out, 0, sizeof *out);
        return mm_err_prefix(err, "data URL");
    }
    if (out->len == 0) {
        mm_image_bytes_free(out);
        return mm_err_set(err, MM_ERR_FORMAT, "data URL: empty image");
    }
    out->kind = MM_IMAGE_SOURCE_DATA;
    return MM_OK;
}

/* Reads the open descriptor fd (regular file, at most max_bytes) into out. */
static enum mm_status read_fd(int fd, const char *name, size_t max_bytes,
                              struct mm_image_bytes *out, struct mm_err *err)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return mm_err_set(err, MM_ERR_IO, "%s: %s", name, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return mm_err_set(err, MM_ERR_INVALID, "%s: not a regular file", name);
    if (sb.st_size <= 0)
        return mm_err_set(err, MM_ERR_FORMAT, "%s: empty file", name);
    if ((uint64_t)sb.st_size > max_bytes)
        return mm_err_set(err, MM_ERR_LIMIT, "%s: %lld bytes, more than the limit of %zu", name,
                          (long long)sb.st_size, max_bytes);
    const size_t n = (size_t)sb.st_size;
    uint8_t *buf = malloc(n);
    if (!buf)
        return mm_err_set(err, MM_ERR_NOMEM, "%s: cannot allocate %zu bytes", name, n);
    size_t got = 0;
    while (got < n) {
        const ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            free(buf);
            return mm_err_set(err, MM_ERR_IO, "%s: read failed: %s", name,
                              r < 0 ? strerror(errno) : "file shrank");
        }
        got += (size_t)r;
    }
    out->data = buf;
    out->len = n;
    out->kind = MM_IMAGE_SOURCE_FILE;
    out->media_type[0] = '\0';
    return MM_OK;
}

/* real is root + '/' + ...; root "/" allows everything. */
static bool path_inside(const char *real, const char *root, size_t rl)
{
    return (rl == 1 && root[0] == '/') || (strncmp(real, root, rl) == 0 && real[rl] == '/');
}

enum mm_status mm_image_source_read_file(const char *path, size_t max_bytes,
                                         struct mm_image_bytes *out, struct mm_err *err)
{
    memset(out, 0, sizeof *out);
    if (!max_bytes)
        max_bytes = MM_IMAGE_DEFAULT_MAX_BYTES;
    /* O_NONBLOCK: a FIFO must not hang the caller (read_fd refuses non-regular files) */
    const int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return mm_err_set(err, errno == ENOENT ? MM_ERR_NOT_FOUND : MM_ERR_IO, "%s: %s", path,
                          strerror(errno));
    const enum mm_status st = read_fd(fd, path, max_bytes, out, err);
    close(fd);
    return st;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* file:///abs/path or file://localhost/abs/path, percent-decoded. */
static enum mm_status load_file_url(const char *url, const struct mm_image_source_policy *pol,
                                    size_t max_bytes, struct mm_image_bytes *out,
                                    struct mm_err *err)
{
    if (!pol || !pol->file_root || !*pol->file_root)
        return mm_err_set(err, MM_ERR_UNSUPPORTED,
                          "file:// image URLs are not enabled on this server");
    const char *p = url + 7;
    if (has_prefix_ci(p, "localhost/"))
        p += 9;
    if (*p != '/')
        return mm_err_set(err, MM_ERR_INVALID,
                          "file URL: expected file:///absolute/path (no remote host)");
    char path[PATH_MAX];
    size_t n = 0;
    for (; *p; p++) {
        char c = *p;
        if (c == '%') {
            const int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
            if (lo < 0 || (hi == 0 && lo == 0))
                return mm_err_set(err, MM_ERR_INVALID, "file URL: bad percent escape");
            c = (char)(hi << 4 | lo);
            p += 2;
        } else if (c == '?' || c == '#') {
            return mm_err_set(err, MM_ERR_INVALID, "file URL: query or fragment not allowed");
        }
        if (n + 1 >= sizeof path)
            return mm_err_set(err, MM_ERR_INVALID, "file URL: path too long");
        path[n++] = c;
    }
    path[n] = '\0';

    char root[PATH_MAX], real[PATH_MAX];
    if (!realpath(pol->file_root, root))
        return mm_err_set(err, MM_ERR_IO, "file URL: allowed directory %s: %s", pol->file_root,
                          strerror(errno));
    if (!realpath(path, real))
        return mm_err_set(err, errno == ENOENT ? MM_ERR_NOT_FOUND : MM_ERR_INVALID,
                          "file URL: %s: %s", path, strerror(errno));
    const size_t rl = strlen(root);
    if (!path_inside(real, root, rl))
        return mm_err_set(err, MM_ERR_INVALID,
                          "file URL: %s is outside the allowed image directory", path);
    /* O_NONBLOCK: a FIFO must not hang the request (read_fd refuses non-regular files) */
    const int fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return mm_err_set(err, MM_ERR_IO, "file URL: %s: %s", path, strerror(errno));
    /* what was opened, not what was checked: a directory swapped for a symlink
     * between realpath and open must not lead outside the root */
    char fdpath[64], opened[PATH_MAX];
    snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", fd);
    if (!realpath(fdpath, opened) || !path_inside(opened, root, rl)) {
        close(fd);
        return mm_err_set(err, MM_ERR_INVALID,
                          "file URL: %s is outside the allowed image directory", path);
    }
    const enum mm_status st = read_fd(fd, path, max_bytes, out, err);
    close(fd);
    return st;
}

enum mm_status mm_image_source_load(const char *url, const struct mm_image_source_policy *pol,
                                    struct mm_image_bytes *out, struct mm_err *err)
{
    memset(out, 0, sizeof *out);
    const size_t max_bytes = pol && pol->max_bytes ? pol->max_bytes : MM_IMAGE_DEFAULT_MAX_BYTES;
    if (!url || !*url)
        return mm_err_set(err, MM_ERR_INVALID, "image URL is empty");
    if (has_prefix_ci(url, "data:"))
        return load_data_url(url, max_bytes, out, err);
    if (has_prefix_ci(url, "file://"))
        return load_file_url(url, pol, max_bytes, out, err);
    if (has_prefix_ci(url, "http://") || has_prefix_ci(url, "https://"))
        return mm_err_set(err, MM_ERR_UNSUPPORTED,
                          "remote image URLs are not supported by this server; send the image "
                          "inline as a data:image/...;base64,... URL");
    return mm_err_set(err, MM_ERR_UNSUPPORTED,
                      "unsupported image URL (expected data:image/...;base64,...)");
}
