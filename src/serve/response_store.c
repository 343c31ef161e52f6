/* response_store.c: response_store.h. A chained hash table of entries that
 * are also on one LRU list (head: most recently used); the byte count
 * charges each entry its own arrays and each image once, while at least one
 * stored entry holds it (`stored`, guarded by the store's mutex). */
#include "serve/response_store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "base/checked.h"
#include "model/image_preprocess.h"

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
    size_t bytes;    /* pixels */
    int64_t stored;  /* stored entries holding it (the store's mutex) */
    uint8_t *pixels; /* [n_tiles][3][S][S] */
};

enum mm_status mm_response_image_create(const float *tiles, int64_t n_tiles, int64_t tile_size,
                                        struct mm_response_image **out, struct mm_err *err)
{
    *out = NULL;
    size_t bytes;
    if (n_tiles < 1 || tile_size < 1 ||
        !mm_size_mul((size_t)n_tiles * 3, (size_t)tile_size * (size_t)tile_size, &bytes))
        return mm_err_set(err, MM_ERR_INVALID, "bad image size");
    struct mm_response_image *im = calloc(1, sizeof *im);
    if (!im || !(im->pixels = malloc(bytes))) {
        free(im);
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory for a stored image");
    }
    const enum mm_status st = mm_image_tiles_pack(tiles, n_tiles, tile_size, im->pixels, err);
    if (st != MM_OK) {
        free(im->pixels);
        free(im);
        return st;
    }
    atomic_init(&im->refs, 1);
    im->n_tiles = n_tiles;
    im->tile_size = tile_size;
    im->bytes = bytes;
    *out = im;
    return MM_OK;
}

void mm_response_image_ref(struct mm_response_image *im) { atomic_fetch_add(&im->refs, 1); }

void mm_response_image_release(struct mm_response_image *im)
{
    if (im && atomic_fetch_sub(&im->refs, 1) == 1) {
        free(im->pixels);
        free(im);
    }
}

int64_t mm_response_image_tiles(const struct mm_response_image *im) { return im->n_tiles; }

void mm_response_image_unpack(const struct mm_response_image *im, float *out)
{
    mm_image_tiles_unpack(im->pixels, im->n_tiles, im->tile_size, out);
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
