/* response_store.c: response_store.h. A chained hash table of entries that
 * are also on one LRU list (head: most recently used); the byte count
 * charges each entry its own arrays and each image once, while at least one
 * stored entry holds it (`stored`, guarded by the store's mutex). */
#include "serve/response_store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/checked.h"
#include "model/image_preprocess.h"
#include "serve/state_cache.h"

enum mm_status mm_response_id_new(char out[MM_RESPONSE_ID_LEN + 1], struct mm_err *err)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[24];
    size_t got = 0;
    while (got < sizeof b) {
        const ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n <= 0)
            return mm_err_set(err, MM_ERR_IO, "no random bytes for a response id");
        got += (size_t)n;
    }
    memcpy(out, "resp_", 5);
    for (size_t i = 0; i < sizeof b; i++) {
        out[5 + 2 * i] = hex[b[i] >> 4];
        out[6 + 2 * i] = hex[b[i] & 15];
    }
    out[MM_RESPONSE_ID_LEN] = '\0';
    return MM_OK;
}

/* ---- images ---------------------------------------------------------------------- */

struct mm_response_image {
    atomic_long refs;
    int64_t n_tiles, tile_size;
    size_t bytes;      /* pixels */
    int64_t stored;    /* stored entries holding it (the store's mutex) */
    uint8_t *pixels;   /* [n_tiles][3][S][S] */
    uint64_t *digests; /* [n_tiles][2] mm_state_tile_digest of the unpacked tiles */
};

/* *out: a new image of n_tiles tiles of tile_size, its pixels not yet
 * filled in. */
static enum mm_status image_alloc(int64_t n_tiles, int64_t tile_size,
                                  struct mm_response_image **out, struct mm_err *err)
{
    size_t bytes;
    if (n_tiles < 1 || tile_size < 1 ||
        !mm_size_mul((size_t)n_tiles * 3, (size_t)tile_size * (size_t)tile_size, &bytes))
        return mm_err_set(err, MM_ERR_INVALID, "bad image size");
    struct mm_response_image *im = calloc(1, sizeof *im);
    if (!im || !(im->pixels = malloc(bytes))) {
        free(im);
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory for a stored image");
    }
    atomic_init(&im->refs, 1);
    im->n_tiles = n_tiles;
    im->tile_size = tile_size;
    im->bytes = bytes;
    *out = im;
    return MM_OK;
}

static void image_free(struct mm_response_image *im)
{
    free(im->digests);
    free(im->pixels);
    free(im);
}

/* Fills in the tiles' digests: of `tiles` when given (what was packed: they
 * unpack to the same floats), else of the pixels. Frees im on failure. */
static enum mm_status image_digest(struct mm_response_image *im, const float *tiles,
                                   struct mm_err *err)
{
    const size_t tile_floats = 3 * (size_t)im->tile_size * (size_t)im->tile_size;
    im->digests = malloc((size_t)im->n_tiles * 2 * sizeof *im->digests);
    if (!im->digests) {
        image_free(im);
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory for a stored image");
    }
    for (int64_t t = 0; t < im->n_tiles; t++) {
        if (tiles)
            mm_state_tile_digest(tiles + (size_t)t * tile_floats, (int64_t)tile_floats,
                                 im->digests + 2 * t);
        else
            mm_state_tile_digest_pixels(im->pixels + (size_t)t * tile_floats, (int64_t)tile_floats,
                                        im->digests + 2 * t);
    }
    return MM_OK;
}

enum mm_status mm_response_image_create(const float *tiles, int64_t n_tiles, int64_t tile_size,
                                        struct mm_response_image **out, struct mm_err *err)
{
    *out = NULL;
    struct mm_response_image *im;
    enum mm_status st = image_alloc(n_tiles, tile_size, &im, err);
    if (st != MM_OK)
        return st;
    st = mm_image_tiles_pack(tiles, n_tiles, tile_size, im->pixels, err);
    if (st != MM_OK) {
        image_free(im);
        return st;
    }
    if ((st = image_digest(im, tiles, err)) == MM_OK)
        *out = im;
    return st;
}

enum mm_status mm_response_image_create_pixels(const uint8_t *pixels, int64_t n_tiles,
                                               int64_t tile_size, struct mm_response_image **out,
                                               struct mm_err *err)
{
    *out = NULL;
    struct mm_response_image *im;
    enum mm_status st = image_alloc(n_tiles, tile_size, &im, err);
    if (st != MM_OK)
        return st;
    memcpy(im->pixels, pixels, im->bytes);
    st = image_digest(im, NULL, err);
    if (st == MM_OK)
        *out = im;
    return st;
}

void mm_response_image_ref(struct mm_response_image *im) { atomic_fetch_add(&im->refs, 1); }

void mm_response_image_release(struct mm_response_image *im)
{
    if (im && atomic_fetch_sub(&im->refs, 1) == 1)
        image_free(im);
}

int64_t mm_response_image_tiles(const struct mm_response_image *im) { return im->n_tiles; }

const uint64_t *mm_response_image_digests(const struct mm_response_image *im)
{
    return im->digests;
}

void mm_response_image_unpack(const struct mm_response_image *im, float *out)
{
    mm_image_tiles_unpack(im->pixels, im->n_tiles, im->tile_size, out);
}

void mm_response_image_pixels(const struct mm_response_image *im, uint8_t *out)
{
    memcpy(out, im->pixels, im->bytes);
}

/* ---- responses -------------------------------------------------------------------- */

void mm_response_free(struct mm_response *r)
{
    if (!r)
        return;
    free(r->owner);
    free(r->ids);
    for (int64_t i = 0; i < r->n_images; i++)
        mm_response_image_release(r->images[i]);
    free(r->images);
    free(r->view);
    memset(r, 0, sizeof *r);
}

int64_t mm_response_tiles(const struct mm_response *r)
{
    int64_t n = 0;
    for (int64_t i = 0; i < r->n_images; i++)
        n += r->images[i]->n_tiles;
    return n;
}

/* ---- the store -------------------------------------------------------------------- */

struct entry {
    struct mm_response r;
    size_t bytes;                /* own arrays, images excluded */
    struct entry *chain;         /* hash bucket */
    struct entry *newer, *older; /* LRU list */
};

struct mm_response_store {
    pthread_mutex_t lock;
    struct mm_response_store_options opt;
    struct entry **buckets;
    size_t mask;
    struct entry *newest, *oldest;
    int64_t count, images, evictions;
    size_t bytes;
};

static size_t entry_bytes(const struct mm_response *r)
{
    return sizeof(struct entry) + (size_t)r->n_ids * sizeof *r->ids + r->view_len +
           (r->owner ? strlen(r->owner) + 1 : 0) + (size_t)r->n_images * sizeof *r->images;
}

static size_t hash_id(const char *id)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a; the ids are random already */
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ull;
    return (size_t)h;
}

static bool owner_matches(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

enum mm_status mm_response_store_create(const struct mm_response_store_options *o,
                                        struct mm_response_store **out, struct mm_err *err)
{
    *out = NULL;
    if (o->max_responses < 0)
        return mm_err_set(err, MM_ERR_INVALID, "responses_max must be >= 0");
    struct mm_response_store *s = calloc(1, sizeof *s);
    if (!s)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    s->opt = *o;
    size_t n = 16;
    while (n < (size_t)o->max_responses && n < ((size_t)1 << 22))
        n *= 2;
    s->buckets = calloc(n, sizeof *s->buckets);
    if (!s->buckets) {
        free(s);
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    }
    s->mask = n - 1;
    pthread_mutex_init(&s->lock, NULL);
    *out = s;
    return MM_OK;
}

static struct entry **find_slot(struct mm_response_store *s, const char *id)
{
    struct entry **p = &s->buckets[hash_id(id) & s->mask];
    while (*p && strcmp((*p)->r.id, id) != 0)
        p = &(*p)->chain;
    return p;
}

static void lru_unlink(struct mm_response_store *s, struct entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        s->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        s->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void lru_push(struct mm_response_store *s, struct entry *e)
{
    e->older = s->newest;
    e->newer = NULL;
    if (s->newest)
        s->newest->newer = e;
    s->newest = e;
    if (!s->oldest)
        s->oldest = e;
}

/* Unlinks e everywhere, uncharges it and frees it. */
static void remove_entry(struct mm_response_store *s, struct entry *e)
{
    struct entry **p = find_slot(s, e->r.id);
    *p = e->chain;
    lru_unlink(s, e);
    s->bytes -= e->bytes;
    for (int64_t i = 0; i < e->r.n_images; i++) {
        struct mm_response_image *im = e->r.images[i];
        if (--im->stored == 0) {
            s->bytes -= im->bytes;
            s->images--;
        }
    }
    s->count--;
    mm_response_free(&e->r);
    free(e);
}

void mm_response_store_free(struct mm_response_store *s)
{
    if (!s)
        return;
    while (s->oldest)
        remove_entry(s, s->oldest);
    free(s->buckets);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

enum mm_status mm_response_store_put(struct mm_response_store *s, struct mm_response *r,
                                     struct mm_err *err)
{
    struct entry *e = calloc(1, sizeof *e);
    if (!e)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    e->bytes = entry_bytes(r);
    /* alone, with every image: does it fit at all? (images may repeat within r) */
    size_t alone = e->bytes;
    for (int64_t i = 0; i < r->n_images; i++)
        alone += r->images[i]->bytes;
    if (s->opt.max_responses < 1 || alone > s->opt.max_bytes) {
        free(e);
        return mm_err_set(err, MM_ERR_LIMIT,
                          "the response (%zu bytes with its images) exceeds the store's bounds "
                          "(%lld responses, %zu bytes)",
                          alone, (long long)s->opt.max_responses, s->opt.max_bytes);
    }
    pthread_mutex_lock(&s->lock);
    struct entry **slot = find_slot(s, r->id);
    if (*slot) {
        pthread_mutex_unlock(&s->lock);
        free(e);
        return mm_err_set(err, MM_ERR_INVALID, "response %s is stored already", r->id);
    }
    e->r = *r;
    memset(r, 0, sizeof *r);
    *slot = e;
    lru_push(s, e);
    s->count++;
    s->bytes += e->bytes;
    for (int64_t i = 0; i < e->r.n_images; i++) {
        struct mm_response_image *im = e->r.images[i];
        if (im->stored++ == 0) {
            s->bytes += im->bytes;
            s->images++;
        }
    }
    /* evict from the old end; e itself fits alone, so this stops before it */
    while ((s->count > s->opt.max_responses || s->bytes > s->opt.max_bytes) && s->oldest != e) {
        remove_entry(s, s->oldest);
        s->evictions++;
    }
    pthread_mutex_unlock(&s->lock);
    return MM_OK;
}

/* Copies what want names from e into out (under the lock). */
static enum mm_status copy_out(const struct entry *e, int want, struct mm_response *out,
                               struct mm_err *err)
{
    const struct mm_response *r = &e->r;
    memcpy(out->id, r->id, sizeof out->id);
    out->created_at = r->created_at;
    out->completed_at = r->completed_at;
    out->n_state = r->n_state;
    if (r->owner && !(out->owner = strdup(r->owner)))
        goto nomem;
    if (want & MM_RESPONSE_VIEW) {
        if (!(out->view = malloc(r->view_len + 1)))
            goto nomem;
        memcpy(out->view, r->view, r->view_len);
        out->view[r->view_len] = '\0';
        out->view_len = r->view_len;
    }
    if (want & MM_RESPONSE_HISTORY) {
        if (!(out->ids = malloc(((size_t)r->n_ids + 1) * sizeof *out->ids)))
            goto nomem;
        memcpy(out->ids, r->ids, (size_t)r->n_ids * sizeof *out->ids);
        out->n_ids = r->n_ids;
        if (r->n_images) {
            if (!(out->images = malloc((size_t)r->n_images * sizeof *out->images)))
                goto nomem;
            for (int64_t i = 0; i < r->n_images; i++) {
                mm_response_image_ref(r->images[i]);
                out->images[i] = r->images[i];
            }
            out->n_images = r->n_images;
        }
    }
    return MM_OK;
nomem:
    mm_response_free(out);
    return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
}

enum mm_status mm_response_store_get(struct mm_response_store *s, const char *id, const char *owner,
                                     int want, struct mm_response *out, struct mm_err *err)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->lock);
    struct entry *e = *find_slot(s, id);
    enum mm_status st;
    if (!e || !owner_matches(e->r.owner, owner)) {
        st = mm_err_set(err, MM_ERR_NOT_FOUND, "no response %.80s", id);
    } else {
        lru_unlink(s, e);
        lru_push(s, e);
        st = copy_out(e, want, out, err);
    }
    pthread_mutex_unlock(&s->lock);
    return st;
}

enum mm_status mm_response_store_delete(struct mm_response_store *s, const char *id,
                                        const char *owner, struct mm_err *err)
{
    pthread_mutex_lock(&s->lock);
    struct entry *e = *find_slot(s, id);
    enum mm_status st = MM_OK;
    if (!e || !owner_matches(e->r.owner, owner))
        st = mm_err_set(err, MM_ERR_NOT_FOUND, "no response %.80s", id);
    else
        remove_entry(s, e);
    pthread_mutex_unlock(&s->lock);
    return st;
}

void mm_response_store_stats(struct mm_response_store *s, struct mm_response_store_stats *out)
{
    pthread_mutex_lock(&s->lock);
    *out = (struct mm_response_store_stats){
        .responses = s->count, .images = s->images, .bytes = s->bytes, .evictions = s->evictions};
    pthread_mutex_unlock(&s->lock);
}

/* ---- saving and loading (the state cache's disk tier) ----------------------------------- */

/* The file: a header of RH_WORDS 64-bit words (native byte order), then the
 * images (n_tiles, tile_size, pixels) and the responses oldest first (fixed
 * fields, ids, image indices, owner, view). The header names the format
 * version and the model, and carries a digest of the payload and one of
 * itself: a damaged file, another model's or another format's is refused
 * whole. */
enum {
    RH_MAGIC,
    RH_VERSION,
    RH_MODEL,
    RH_IMAGES,
    RH_RESPONSES,
    RH_BYTES,
    RH_DIGEST,
    RH_CHECK,
    RH_WORDS
};
#define RFILE_MAGIC 0x000a505345522d4dull /* "M-RESP\n\0" */
#define RFILE_VERSION 1

static uint64_t rdigest(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001B3ull;
    return h ^ (h >> 31);
}

struct wbuf {
    unsigned char *p;
    size_t len, cap;
    bool failed;
};

static void put_bytes(struct wbuf *w, const void *p, size_t n)
{
    if (w->failed || n == 0)
        return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->len + n)
            cap *= 2;
        unsigned char *q = realloc(w->p, cap);
        if (!q) {
            w->failed = true;
            return;
        }
        w->p = q;
        w->cap = cap;
    }
    memcpy(w->p + w->len, p, n);
    w->len += n;
}

static void put_i64(struct wbuf *w, int64_t v) { put_bytes(w, &v, sizeof v); }

enum mm_status mm_response_store_save(struct mm_response_store *s, const char *path, uint64_t model,
                                      struct mm_err *err)
{
    struct wbuf w = {0};
    uint64_t h[RH_WORDS] = {0};
    put_bytes(&w, h, sizeof h); /* filled in below */
    pthread_mutex_lock(&s->lock);
    /* images once each: their index is their first appearance, oldest first */
    struct mm_response_image **ims = malloc(((size_t)s->images + 1) * sizeof *ims);
    int64_t n_ims = 0;
    for (struct entry *e = s->oldest; ims && e; e = e->newer)
        for (int64_t i = 0; i < e->r.n_images; i++) {
            int64_t k = 0;
            while (k < n_ims && ims[k] != e->r.images[i])
                k++;
            if (k == n_ims && n_ims < s->images) {
                ims[n_ims++] = e->r.images[i];
                put_i64(&w, e->r.images[i]->n_tiles);
                put_i64(&w, e->r.images[i]->tile_size);
                put_bytes(&w, e->r.images[i]->pixels, e->r.images[i]->bytes);
            }
        }
    for (struct entry *e = s->oldest; ims && e; e = e->newer) {
        const struct mm_response *r = &e->r;
        put_bytes(&w, r->id, MM_RESPONSE_ID_LEN);
        put_i64(&w, r->created_at);
        put_i64(&w, r->completed_at);
        put_i64(&w, r->n_ids);
        put_i64(&w, r->n_state);
        put_i64(&w, r->n_images);
        put_i64(&w, r->owner ? (int64_t)strlen(r->owner) : -1);
        put_i64(&w, (int64_t)r->view_len);
        put_bytes(&w, r->ids, (size_t)r->n_ids * sizeof *r->ids);
        for (int64_t i = 0; i < r->n_images; i++) {
            int64_t k = 0;
            while (k < n_ims && ims[k] != r->images[i])
                k++;
            put_i64(&w, k);
        }
        if (r->owner)
            put_bytes(&w, r->owner, strlen(r->owner));
        put_bytes(&w, r->view, r->view_len);
    }
    h[RH_IMAGES] = (uint64_t)n_ims;
    h[RH_RESPONSES] = (uint64_t)s->count;
    pthread_mutex_unlock(&s->lock);
    enum mm_status st = MM_OK;
    if (!ims || w.failed) {
        st = mm_err_set(err, MM_ERR_NOMEM, "out of memory saving the responses");
        goto done;
    }
    h[RH_MAGIC] = RFILE_MAGIC;
    h[RH_VERSION] = RFILE_VERSION;
    h[RH_MODEL] = model;
    h[RH_BYTES] = w.len - sizeof h;
    h[RH_DIGEST] = rdigest(0xCBF29CE484222325ull, w.p + sizeof h, w.len - sizeof h);
    h[RH_CHECK] = rdigest(0x5245535053ull, h, RH_CHECK * 8);
    memcpy(w.p, h, sizeof h);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(tmp); /* a save cut short earlier */
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (fd >= 0 && !f)
        close(fd);
    bool ok = f && fwrite(w.p, 1, w.len, f) == w.len && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (f && fclose(f) != 0)
        ok = false;
    if (!ok || rename(tmp, path) != 0) {
        st = mm_err_set(err, MM_ERR_IO, "saving the responses to %s: %s", path, strerror(errno));
        unlink(tmp);
    }
done:
    free(ims);
    free(w.p);
    return st;
}

struct rbuf {
    const unsigned char *p;
    size_t left;
};

static bool get_bytes(struct rbuf *r, void *out, size_t n)
{
    if (n > r->left)
        return false;
    memcpy(out, r->p, n);
    r->p += n;
    r->left -= n;
    return true;
}

static bool get_i64(struct rbuf *r, int64_t *v, int64_t lo, int64_t hi)
{
    return get_bytes(r, v, sizeof *v) && *v >= lo && *v <= hi;
}

/* One image from the file (bounds checked), holding one reference. */
static struct mm_response_image *read_image(struct rbuf *r)
{
    int64_t n, sz;
    size_t bytes;
    if (!get_i64(r, &n, 1, 1 << 20) || !get_i64(r, &sz, 1, 1 << 16) ||
        !mm_size_mul((size_t)n * 3, (size_t)sz * (size_t)sz, &bytes) || bytes > r->left)
        return NULL;
    struct mm_response_image *im = NULL;
    struct mm_err err;
    if (mm_response_image_create_pixels(r->p, n, sz, &im, &err) != MM_OK)
        return NULL;
    r->p += bytes;
    r->left -= bytes;
    return im;
}

/* One response from the file (bounds checked) into *out. */
static bool read_response(struct rbuf *r, struct mm_response_image **ims, int64_t n_ims,
                          struct mm_response *out)
{
    int64_t n_ids, n_images, owner_len, view_len;
    memset(out, 0, sizeof *out);
    if (!get_bytes(r, out->id, MM_RESPONSE_ID_LEN) || memcmp(out->id, "resp_", 5) != 0 ||
        memchr(out->id, 0, MM_RESPONSE_ID_LEN) || !get_i64(r, &out->created_at, 0, INT64_MAX) ||
        !get_i64(r, &out->completed_at, 0, INT64_MAX) ||
        !get_i64(r, &n_ids, 0, (int64_t)(r->left / 4)) || !get_i64(r, &out->n_state, 0, n_ids) ||
        !get_i64(r, &n_images, 0, n_ims) || !get_i64(r, &owner_len, -1, 4096) ||
        !get_i64(r, &view_len, 0, (int64_t)r->left))
        return false;
    out->id[MM_RESPONSE_ID_LEN] = '\0';
    out->ids = malloc(((size_t)n_ids + 1) * sizeof *out->ids);
    out->images = malloc(((size_t)n_images + 1) * sizeof *out->images);
    out->owner = owner_len >= 0 ? calloc(1, (size_t)owner_len + 1) : NULL;
    out->view = malloc((size_t)view_len + 1);
    bool ok = out->ids && out->images && (owner_len < 0 || out->owner) && out->view &&
              get_bytes(r, out->ids, (size_t)n_ids * sizeof *out->ids);
    out->n_ids = ok ? n_ids : 0;
    for (int64_t i = 0; ok && i < n_images; i++) {
        int64_t k;
        if ((ok = get_i64(r, &k, 0, n_ims - 1))) {
            mm_response_image_ref(ims[k]);
            out->images[out->n_images++] = ims[k];
        }
    }
    ok = ok && (owner_len < 0 || get_bytes(r, out->owner, (size_t)owner_len)) &&
         get_bytes(r, out->view, (size_t)view_len);
    out->view_len = ok ? (size_t)view_len : 0;
    if (ok)
        out->view[view_len] = '\0';
    return ok;
}

enum mm_status mm_response_store_load(struct mm_response_store *s, const char *path, uint64_t model,
                                      int64_t *loaded, struct mm_err *err)
{
    *loaded = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT ? MM_OK
                               : mm_err_set(err, MM_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    uint64_t h[RH_WORDS];
    unsigned char *payload = NULL;
    const char *why = NULL;
    if (fstat(fileno(f), &sb) != 0 || fread(h, 1, sizeof h, f) != sizeof h ||
        h[RH_MAGIC] != RFILE_MAGIC || h[RH_VERSION] != RFILE_VERSION ||
        h[RH_CHECK] != rdigest(0x5245535053ull, h, RH_CHECK * 8) ||
        (uint64_t)sb.st_size != sizeof h + h[RH_BYTES])
        why = "damaged, cut short or of another format";
    else if (h[RH_MODEL] != model)
        why = "another model's";
    else if (!(payload = malloc(h[RH_BYTES] + 1)) ||
             fread(payload, 1, h[RH_BYTES], f) != h[RH_BYTES] ||
             rdigest(0xCBF29CE484222325ull, payload, h[RH_BYTES]) != h[RH_DIGEST])
        why = "damaged";
    fclose(f);
    if (why) {
        free(payload);
        return mm_err_set(err, MM_ERR_INVALID, "%s is %s; ignored", path, why);
    }
    struct rbuf r = {payload, h[RH_BYTES]};
    const int64_t n_ims = h[RH_IMAGES] <= (uint64_t)r.left ? (int64_t)h[RH_IMAGES] : -1;
    struct mm_response_image **ims = n_ims >= 0 ? calloc((size_t)n_ims + 1, sizeof *ims) : NULL;
    bool ok = ims != NULL;
    for (int64_t i = 0; ok && i < n_ims; i++)
        ok = (ims[i] = read_image(&r)) != NULL;
    for (uint64_t i = 0; ok && i < h[RH_RESPONSES]; i++) {
        struct mm_response resp;
        struct mm_err e2;
        ok = read_response(&r, ims, n_ims, &resp);
        if (ok && mm_response_store_put(s, &resp, &e2) == MM_OK)
            (*loaded)++;
        mm_response_free(&resp);
    }
    ok = ok && r.left == 0;
    for (int64_t i = 0; ims && i < n_ims; i++)
        mm_response_image_release(ims[i]); /* the stored responses keep theirs */
    free(ims);
    free(payload);
    if (!ok)
        return mm_err_set(err, MM_ERR_INVALID, "%s is damaged (read %lld responses of it)", path,
                          (long long)*loaded);
    return MM_OK;
}
