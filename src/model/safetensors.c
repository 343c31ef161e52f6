/* safetensors.c: validated mmap reader and streaming writer (see safetensors.h).
 *
 * File layout: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}, ...,
 * "__metadata__": {...}}, then the data area; offsets are relative to it. */
#include "model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/checked.h"
#include "base/json.h"
#include "base/log.h"

/* A header larger than this is refused before parsing (real ones are ~100 KB). */
#define MM_ST_MAX_HEADER (64u << 20)

struct st_file {
    char *path;
    const uint8_t *base; /* whole file */
    size_t len;
    int mapped; /* base is an mmap we must unmap */
};

struct mm_safetensors {
    struct st_file *files;
    int nfiles;
    struct mm_tensor *tensors; /* sorted by name */
    int64_t n;
};

static uint64_t read_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct mm_tensor *)a)->name, ((const struct mm_tensor *)b)->name);
}

static int cmp_offset(const void *a, const void *b)
{
    const struct mm_tensor *x = *(const struct mm_tensor *const *)a;
    const struct mm_tensor *y = *(const struct mm_tensor *const *)b;
    const uint8_t *px = x->data, *py = y->data;
    return px < py ? -1 : px > py ? 1 : 0;
}

/* Reads a JSON number that must be a non-negative integer <= 2^53. */
static int json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return 0;
    const double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != (double)(uint64_t)d)
        return 0;
    *out = (uint64_t)d;
    return 1;
}

static enum mm_status parse_entry(const cJSON *item, const uint8_t *data, size_t data_len,
                                  const char *fname, struct mm_tensor *t, struct mm_err *err)
{
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return mm_err_set(err, MM_ERR_FORMAT, "%s: tensor %s: entry is not an object", fname, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs))
        return mm_err_set(err, MM_ERR_FORMAT,
                          "%s: tensor %s: needs string dtype, array shape and array data_offsets",
                          fname, name);
    const int dtype = mm_dtype_parse(dt->valuestring);
    if (dtype < 0)
        return mm_err_set(err, MM_ERR_UNSUPPORTED, "%s: tensor %s: unknown dtype \"%s\"", fname,
                          name, dt->valuestring);
    t->dtype = (enum mm_dtype)dtype;
    const int ndim = cJSON_GetArraySize(shape);
    if (ndim > MM_TENSOR_MAX_DIMS)
        return mm_err_set(err, MM_ERR_UNSUPPORTED, "%s: tensor %s: %d dimensions (max %d)", fname,
                          name, ndim, MM_TENSOR_MAX_DIMS);
    t->ndim = ndim;
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        uint64_t dim;
        if (!json_uint(cJSON_GetArrayItem(shape, i), &dim))
            return mm_err_set(err, MM_ERR_FORMAT,
                              "%s: tensor %s: shape[%d] is not a non-negative integer", fname, name,
                              i);
        if (!mm_size_mul(numel, (size_t)dim, &numel) || numel > (size_t)INT64_MAX)
            return mm_err_set(err, MM_ERR_OVERFLOW, "%s: tensor %s: element count overflows", fname,
                              name);
        t->shape[i] = (int64_t)dim;
    }
    t->numel = (int64_t)numel;
    size_t nbytes;
    if (!mm_size_mul(numel, mm_dtype_size(t->dtype), &nbytes))
        return mm_err_set(err, MM_ERR_OVERFLOW, "%s: tensor %s: byte size overflows", fname, name);
    uint64_t b, e;
    if (cJSON_GetArraySize(offs) != 2 || !json_uint(cJSON_GetArrayItem(offs, 0), &b) ||
        !json_uint(cJSON_GetArrayItem(offs, 1), &e))
        return mm_err_set(err, MM_ERR_FORMAT, "%s: tensor %s: data_offsets must be two integers",
                          fname, name);
    if (b > e || e > data_len)
        return mm_err_set(
            err, MM_ERR_FORMAT,
            "%s: tensor %s: data_offsets [%llu, %llu] outside the data area (%zu bytes)", fname,
            name, (unsigned long long)b, (unsigned long long)e, data_len);
    if (e - b != nbytes)
        return mm_err_set(err, MM_ERR_FORMAT,
                          "%s: tensor %s: byte range is %llu bytes but shape x dtype needs %zu",
                          fname, name, (unsigned long long)(e - b), nbytes);
    t->data = data + b;
    t->nbytes = nbytes;
    t->name = strdup(name);
    if (!t->name)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    return MM_OK;
}

/* Parses the header of files[fi] and appends its tensors to st->tensors. */
static enum mm_status parse_file(struct mm_safetensors *st, int fi, struct mm_err *err)
{
    const struct st_file *f = &st->files[fi];
    if (f->len < 8)
        return mm_err_set(err, MM_ERR_FORMAT, "%s: too short for a safetensors file (%zu bytes)",
                          f->path, f->len);
    const uint64_t hlen = read_le64(f->base);
    if (hlen > f->len - 8)
        return mm_err_set(err, MM_ERR_FORMAT,
                          "%s: header length %llu exceeds the file size %zu (truncated?)", f->path,
                          (unsigned long long)hlen, f->len);
    if (hlen > MM_ST_MAX_HEADER)
        return mm_err_set(err, MM_ERR_LIMIT, "%s: header of %llu bytes is too large", f->path,
                          (unsigned long long)hlen);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)f->base + 8, (size_t)hlen, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return mm_err_set(err, MM_ERR_FORMAT, "%s: header is not a JSON object", f->path);
    }
    const uint8_t *data = f->base + 8 + hlen;
    const size_t data_len = f->len - 8 - (size_t)hlen;
    enum mm_status s = MM_OK;
    const int64_t first = st->n;
    const cJSON *item;
    cJSON_ArrayForEach(item, root)
    {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(item)) {
                s = mm_err_set(err, MM_ERR_FORMAT, "%s: __metadata__ must be an object", f->path);
                goto out;
            }
            continue;
        }
        struct mm_tensor *nt = realloc(st->tensors, (size_t)(st->n + 1) * sizeof *nt);
        if (!nt) {
            s = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
            goto out;
        }
        st->tensors = nt;
        struct mm_tensor *t = &st->tensors[st->n];
        memset(t, 0, sizeof *t);
        t->shard = fi;
        if ((s = parse_entry(item, data, data_len, f->path, t, err)) != MM_OK)
            goto out;
        st->n++;
    }
    /* no two tensors of this file may share bytes */
    const int64_t cnt = st->n - first;
    if (cnt > 1) {
        const struct mm_tensor **byoff = malloc((size_t)cnt * sizeof *byoff);
        if (!byoff) {
            s = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (int64_t i = 0; i < cnt; i++)
            byoff[i] = &st->tensors[first + i];
        qsort(byoff, (size_t)cnt, sizeof *byoff, cmp_offset);
        for (int64_t i = 1; i < cnt; i++) {
            const uint8_t *prev_end = (const uint8_t *)byoff[i - 1]->data + byoff[i - 1]->nbytes;
            if ((const uint8_t *)byoff[i]->data < prev_end) {
                s = mm_err_set(err, MM_ERR_FORMAT, "%s: tensors %s and %s overlap", f->path,
                               byoff[i - 1]->name, byoff[i]->name);
                break;
            }
        }
        free(byoff);
    }
out:
    cJSON_Delete(root);
    return s;
}

/* Sorts by name and rejects duplicates (possible across shards). */
static enum mm_status finish_table(struct mm_safetensors *st, struct mm_err *err)
{
    if (st->n > 1)
        qsort(st->tensors, (size_t)st->n, sizeof *st->tensors, cmp_name);
    for (int64_t i = 1; i < st->n; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0)
            return mm_err_set(err, MM_ERR_FORMAT, "tensor %s appears in %s and %s",
                              st->tensors[i].name, st->files[st->tensors[i - 1].shard].path,
                              st->files[st->tensors[i].shard].path);
    return MM_OK;
}

static enum mm_status add_file(struct mm_safetensors *st, const char *path, struct mm_err *err)
{
    struct st_file *nf = realloc(st->files, (size_t)(st->nfiles + 1) * sizeof *nf);
    if (!nf)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    st->files = nf;
    struct st_file *f = &st->files[st->nfiles];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    st->nfiles++;
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mm_err_set(err, MM_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return mm_err_set(err, MM_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_size < 8) {
        close(fd);
        return mm_err_set(err, MM_ERR_FORMAT, "%s: too short for a safetensors file (%lld bytes)",
                          path, (long long)sb.st_size);
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return mm_err_set(err, MM_ERR_IO, "%s: mmap: %s", path, strerror(errno));
    f->base = m;
    f->len = (size_t)sb.st_size;
    f->mapped = 1;
    return parse_file(st, st->nfiles - 1, err);
}

static struct mm_safetensors *st_new(void) { return calloc(1, sizeof(struct mm_safetensors)); }

enum mm_status mm_safetensors_open_file(const char *path, struct mm_safetensors **out,
                                        struct mm_err *err)
{
    struct mm_safetensors *st = st_new();
    if (!st)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    enum mm_status s = add_file(st, path, err);
    if (s == MM_OK)
        s = finish_table(st, err);
    if (s != MM_OK) {
        mm_safetensors_close(st);
        return s;
    }
    *out = st;
    return MM_OK;
}

enum mm_status mm_safetensors_open_buffer(const void *buf, size_t len, const char *name,
                                          struct mm_safetensors **out, struct mm_err *err)
{
    struct mm_safetensors *st = st_new();
    enum mm_status s;
    if (!st || !(st->files = calloc(1, sizeof *st->files)) || !(st->files[0].path = strdup(name))) {
        s = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    st->nfiles = 1;
    st->files[0].base = buf;
    st->files[0].len = len;
    if ((s = parse_file(st, 0, err)) != MM_OK || (s = finish_table(st, err)) != MM_OK)
        goto fail;
    *out = st;
    return MM_OK;
fail:
    mm_safetensors_close(st);
    return s;
}

/* A shard name from the index must be a plain file name inside the directory. */
static int safe_shard_name(const char *s)
{
    return s[0] != '\0' && s[0] != '.' && strchr(s, '/') == NULL;
}

static enum mm_status open_index(struct mm_safetensors *st, const char *dir, const char *index_path,
                                 struct mm_err *err)
{
    cJSON *root;
    enum mm_status s = mm_json_read_file(index_path, 64u << 20, &root, err);
    if (s != MM_OK)
        return s;
    const cJSON *map;
    if ((s = mm_json_get_obj(root, "weight_map", true, &map, index_path, err)) != MM_OK)
        goto out;
    /* open each distinct shard once, in order of first mention */
    const cJSON *it;
    cJSON_ArrayForEach(it, map)
    {
        if (!cJSON_IsString(it) || !safe_shard_name(it->valuestring)) {
            s = mm_err_set(err, MM_ERR_FORMAT, "%s: weight_map[\"%s\"] is not a shard file name",
                           index_path, it->string);
            goto out;
        }
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, it->valuestring) >= (int)sizeof path) {
            s = mm_err_set(err, MM_ERR_INVALID, "path too long");
            goto out;
        }
        int seen = 0;
        for (int i = 0; i < st->nfiles && !seen; i++)
            seen = strcmp(st->files[i].path, path) == 0;
        if (!seen && (s = add_file(st, path, err)) != MM_OK)
            goto out;
    }
    if ((s = finish_table(st, err)) != MM_OK)
        goto out;
    /* every mapped name lives where the map says; every stored tensor is mapped */
    cJSON_ArrayForEach(it, map)
    {
        const struct mm_tensor *t = mm_safetensors_find(st, it->string);
        if (!t) {
            s = mm_err_set(err, MM_ERR_NOT_FOUND, "%s: tensor %s is listed but not in %s",
                           index_path, it->string, it->valuestring);
            goto out;
        }
        const char *shard_path = st->files[t->shard].path;
        const char *base = strrchr(shard_path, '/');
        if (strcmp(base ? base + 1 : shard_path, it->valuestring) != 0) {
            s = mm_err_set(err, MM_ERR_FORMAT, "%s: tensor %s is listed in %s but stored in %s",
                           index_path, it->string, it->valuestring, shard_path);
            goto out;
        }
    }
    /* the other way round (a map may repeat a key, so counting is not enough) */
    for (int64_t i = 0; i < st->n; i++)
        if (!cJSON_GetObjectItemCaseSensitive(map, st->tensors[i].name)) {
            s = mm_err_set(err, MM_ERR_FORMAT, "%s: tensor %s is stored in %s but not listed",
                           index_path, st->tensors[i].name, st->files[st->tensors[i].shard].path);
            break;
        }

out:
    cJSON_Delete(root);
    return s;
}

enum mm_status mm_safetensors_open_dir(const char *dir, struct mm_safetensors **out,
                                       struct mm_err *err)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir) >= (int)sizeof path)
        return mm_err_set(err, MM_ERR_INVALID, "model path too long");
    char single[4096];
    snprintf(single, sizeof single, "%s/model.safetensors", dir);
    if (access(path, F_OK) != 0)
        return mm_safetensors_open_file(single, out, err);
    if (access(single, F_OK) == 0)
        MM_LOG(MM_LOG_WARN, "%s holds both model.safetensors and model.safetensors.index.json: "
                            "loading the shards the index names, not model.safetensors", dir);
    struct mm_safetensors *st = st_new();
    if (!st)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    enum mm_status s = open_index(st, dir, path, err);
    if (s != MM_OK) {
        mm_safetensors_close(st);
        return s;
    }
    *out = st;
    return MM_OK;
}

void mm_safetensors_close(struct mm_safetensors *st)
{
    if (!st)
        return;
    for (int64_t i = 0; i < st->n; i++)
        free((char *)st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->nfiles; i++) {
        if (st->files[i].mapped)
            munmap((void *)st->files[i].base, st->files[i].len);
        free(st->files[i].path);
    }
    free(st->files);
    free(st);
}

const struct mm_tensor *mm_safetensors_find(const struct mm_safetensors *st, const char *name)
{
    int64_t lo = 0, hi = st->n - 1;
    while (lo <= hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        const int c = strcmp(name, st->tensors[mid].name);
        if (c == 0)
            return &st->tensors[mid];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

int64_t mm_safetensors_count(const struct mm_safetensors *st) { return st->n; }

const struct mm_tensor *mm_safetensors_at(const struct mm_safetensors *st, int64_t i)
{
    return i >= 0 && i < st->n ? &st->tensors[i] : NULL;
}

/* ---- writer ---------------------------------------------------------------- */

struct st_decl {
    char *name;
    enum mm_dtype dtype;
    int ndim;
    int64_t shape[MM_TENSOR_MAX_DIMS];
    size_t nbytes;
};

struct mm_st_writer {
    FILE *f;
    char *path;
    struct st_decl *decls;
    int64_t n;
    size_t written, expected; /* data bytes */
};

enum mm_status mm_st_writer_create(const char *path, struct mm_st_writer **out, struct mm_err *err)
{
    struct mm_st_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    }
    w->f = fopen(path, "wb");
    if (!w->f) {
        enum mm_status s = mm_err_set(err, MM_ERR_IO, "%s: %s", path, strerror(errno));
        free(w->path);
        free(w);
        return s;
    }
    *out = w;
    return MM_OK;
}

enum mm_status mm_st_writer_declare(struct mm_st_writer *w, const char *name, enum mm_dtype dtype,
                                    int ndim, const int64_t *shape, struct mm_err *err)
{
    if (ndim < 0 || ndim > MM_TENSOR_MAX_DIMS)
        return mm_err_set(err, MM_ERR_INVALID, "%s: bad rank %d", name, ndim);
    struct st_decl *nd = realloc(w->decls, (size_t)(w->n + 1) * sizeof *nd);
    if (!nd)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    w->decls = nd;
    struct st_decl *d = &w->decls[w->n];
    memset(d, 0, sizeof *d);
    size_t bytes = mm_dtype_size(dtype);
    for (int i = 0; i < ndim; i++) {
        d->shape[i] = shape[i];
        if (shape[i] < 0 || !mm_size_mul(bytes, (size_t)shape[i], &bytes))
            return mm_err_set(err, MM_ERR_OVERFLOW, "%s: bad shape", name);
    }
    d->name = strdup(name);
    if (!d->name)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    d->dtype = dtype;
    d->ndim = ndim;
    d->nbytes = bytes;
    w->n++;
    return mm_size_add(w->expected, bytes, &w->expected)
               ? MM_OK
               : mm_err_set(err, MM_ERR_OVERFLOW, "%s: total size overflows", name);
}

enum mm_status mm_st_writer_begin_data(struct mm_st_writer *w, struct mm_err *err)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    size_t off = 0;
    for (int64_t i = 0; i < w->n; i++) {
        const struct st_decl *d = &w->decls[i];
        cJSON *e = cJSON_AddObjectToObject(root, d->name);
        cJSON_AddStringToObject(e, "dtype", mm_dtype_name(d->dtype));
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (int k = 0; k < d->ndim; k++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)d->shape[k]));
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        off += d->nbytes;
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    const size_t len = strlen(text);
    const size_t padded = (len + 7) & ~(size_t)7;
    uint8_t hdr[8];
    for (int i = 0; i < 8; i++)
        hdr[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int ok = fwrite(hdr, 1, 8, w->f) == 8 && fwrite(text, 1, len, w->f) == len;
    for (size_t i = len; ok && i < padded; i++)
        ok = fputc(' ', w->f) != EOF;
    free(text);
    return ok ? MM_OK : mm_err_set(err, MM_ERR_IO, "%s: write failed", w->path);
}

enum mm_status mm_st_writer_write(struct mm_st_writer *w, const void *data, size_t n,
                                  struct mm_err *err)
{
    if (n > w->expected - w->written)
        return mm_err_set(err, MM_ERR_INVALID, "%s: more data than declared", w->path);
    if (fwrite(data, 1, n, w->f) != n)
        return mm_err_set(err, MM_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
    w->written += n;
    return MM_OK;
}

static void writer_free(struct mm_st_writer *w)
{
    for (int64_t i = 0; i < w->n; i++)
        free(w->decls[i].name);
    free(w->decls);
    free(w->path);
    free(w);
}

enum mm_status mm_st_writer_finish(struct mm_st_writer *w, struct mm_err *err)
{
    enum mm_status s = MM_OK;
    if (w->written != w->expected)
        s = mm_err_set(err, MM_ERR_INVALID, "%s: wrote %zu of %zu declared bytes", w->path,
                       w->written, w->expected);
    if (fclose(w->f) != 0 && s == MM_OK)
        s = mm_err_set(err, MM_ERR_IO, "%s: close failed", w->path);
    writer_free(w);
    return s;
}

void mm_st_writer_abort(struct mm_st_writer *w)
{
    if (!w)
        return;
    fclose(w->f);
    writer_free(w);
}
