/* request.c: requests and their event channels (see request.h).
 *
 * The channel is two event arrays with their text buffers: the engine
 * appends to `prod` under the request's mutex; the consumer reads `cons`
 * without the lock and, once it has read everything there, swaps the two
 * under the lock. Text and messages are referenced by offset until handed
 * out, so growing a buffer never invalidates anything the consumer holds. */
#include "serve/request_engine.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buffer.h"
#include "model/image_preprocess.h"
#include "serve/state_cache.h"

struct ev_buf {
    struct mm_event *ev; /* text holds an offset into `text` until handed out */
    int64_t n, cap;
    char *text;
    size_t text_len, text_cap;
};

struct mm_request {
    atomic_int refs;
    atomic_bool cancel;
    atomic_bool submitted;
    /* immutable after creation */
    char id[MM_REQUEST_MAX_ID_BYTES + 1];
    struct mm_request_params p; /* stop / stop_ids point at the copies below */
    char **stop;
    int32_t *stop_ids;
    int32_t *ids;
    int64_t n_ids;
    float *tiles;    /* [n_tiles][3][S][S] normalised, or NULL */
    uint8_t *pixels; /* [n_tiles][3][S][S] 8-bit, or NULL (one of the two with tiles) */
    int64_t n_tiles;
    /* channel */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct ev_buf prod, cons;
    int64_t cons_next;     /* consumer: next event of cons */
    int32_t finish_queued; /* FINISH events queued (engine) */
    int32_t finish_taken;  /* FINISH events handed out (consumer) */
    bool dirty;            /* events queued since the last notify */
    void (*notify)(void *user);
    void *user;
    bool in_notify;
    pthread_t notify_thread;
    char message[MM_ERR_MSG_MAX];
    bool has_message;
    /* the state-cache keys, computed once (mm_request_state_keys) */
    pthread_mutex_t keys_mu;
    bool keys_done;
    enum mm_status keys_status;
    uint64_t *keys, *ph;
    uint64_t *digests; /* [n_tiles][2] given by the caller, or NULL */
    int64_t digests_tile_floats;
    int64_t keys_tile_floats, keys_tpt;
    int32_t keys_img_id;
};

const char *mm_finish_reason_str(enum mm_finish_reason f)
{
    switch (f) {
    case MM_FINISH_STOP:
        return "stop";
    case MM_FINISH_LENGTH:
        return "length";
    case MM_FINISH_CANCELLED:
        return "cancelled";
    case MM_FINISH_ERROR:
        return "error";
    case MM_FINISH_NONE:
        break;
    }
    return "";
}

void mm_request_params_default(struct mm_request_params *p)
{
    memset(p, 0, sizeof *p);
    p->sample = (struct mm_sample_params){.temperature = 0,
                                          .top_k = 0,
                                          .top_p = 1,
                                          .min_p = 0,
                                          .repetition_penalty = 1,
                                          .presence_penalty = 0,
                                          .frequency_penalty = 0,
                                          .seed = 0,
                                          .n_logprobs = 0};
    p->n = 1;
}

/* Whether s[0..n) is well-formed UTF-8 (stop strings: see stops.h). */
static bool valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        const unsigned c = s[i];
        size_t k; /* continuation bytes */
        unsigned cp, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

static enum mm_status check_params(const struct mm_request_params *p, struct mm_err *err)
{
    const struct mm_sample_params *s = &p->sample;
    if (p->n < 1 || p->n > MM_REQUEST_MAX_CHOICES)
        return mm_err_set(err, MM_ERR_INVALID, "n must be 1..%d", MM_REQUEST_MAX_CHOICES);
    if (p->max_tokens < 0)
        return mm_err_set(err, MM_ERR_INVALID, "max_tokens must be >= 0");
    if (!(s->temperature >= 0 && s->temperature <= 1e6f))
        return mm_err_set(err, MM_ERR_INVALID, "temperature must be a number >= 0");
    if (s->top_k < 0)
        return mm_err_set(err, MM_ERR_INVALID, "top_k must be >= 0 (0: off)");
    if (!(s->top_p > 0 && s->top_p <= 1))
        return mm_err_set(err, MM_ERR_INVALID, "top_p must be in (0, 1]");
    if (!(s->min_p >= 0 && s->min_p <= 1))
        return mm_err_set(err, MM_ERR_INVALID, "min_p must be in [0, 1]");
    if (!(s->repetition_penalty > 0 && s->repetition_penalty <= 100))
        return mm_err_set(err, MM_ERR_INVALID, "repetition_penalty must be in (0, 100]");
    if (!(s->presence_penalty >= -2 && s->presence_penalty <= 2) ||
        !(s->frequency_penalty >= -2 && s->frequency_penalty <= 2))
        return mm_err_set(err, MM_ERR_INVALID,
                          "presence_penalty and frequency_penalty must be in [-2, 2]");
    if (s->n_logprobs < 0 || s->n_logprobs > MM_MAX_LOGPROBS)
        return mm_err_set(err, MM_ERR_INVALID, "top_logprobs must be 0..%d", MM_MAX_LOGPROBS);
    if (p->n_stop < 0 || p->n_stop > MM_REQUEST_MAX_STOPS || (p->n_stop > 0 && !p->stop))
        return mm_err_set(err, MM_ERR_INVALID, "at most %d stop strings", MM_REQUEST_MAX_STOPS);
    for (int i = 0; i < p->n_stop; i++) {
        const size_t len = p->stop[i] ? strlen(p->stop[i]) : 0;
        if (len < 1 || len > MM_REQUEST_MAX_STOP_BYTES)
            return mm_err_set(err, MM_ERR_INVALID, "stop strings must be 1..%d bytes",
                              MM_REQUEST_MAX_STOP_BYTES);
        if (!valid_utf8((const unsigned char *)p->stop[i], len))
            return mm_err_set(err, MM_ERR_INVALID, "stop string %d is not valid UTF-8", i);
    }
    if (p->n_stop_ids < 0 || p->n_stop_ids > MM_REQUEST_MAX_STOP_IDS ||
        (p->n_stop_ids > 0 && !p->stop_ids))
        return mm_err_set(err, MM_ERR_INVALID, "at most %d stop token ids",
                          MM_REQUEST_MAX_STOP_IDS);
    return MM_OK;
}

static void free_request(struct mm_request *r)
{
    for (int i = 0; r->stop && i < r->p.n_stop; i++)
        free(r->stop[i]);
    free(r->stop);
    free(r->stop_ids);
    free(r->ids);
    free(r->tiles);
    free(r->pixels);
    free(r->prod.ev);
    free(r->prod.text);
    free(r->cons.ev);
    free(r->cons.text);
    free(r->keys);
    free(r->ph);
    free(r->digests);
    pthread_mutex_destroy(&r->keys_mu);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

/* Either form: tiles (floats) or pixels (8-bit), the other NULL. */
static enum mm_status create(const struct mm_request_params *p, int32_t *ids, int64_t n_ids,
                             float *tiles, uint8_t *pixels, int64_t n_tiles,
                             struct mm_request **out, struct mm_err *err)
{
    enum mm_status st = check_params(p, err);
    if (st == MM_OK && (n_ids < 1 || !ids || n_tiles < 0 || (n_tiles > 0 && !tiles && !pixels)))
        st = mm_err_set(err, MM_ERR_INVALID, "a request needs prompt ids (and tiles for images)");
    struct mm_request *r = st == MM_OK ? calloc(1, sizeof *r) : NULL;
    if (st == MM_OK && !r)
        st = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    if (st != MM_OK) {
        free(ids);
        free(tiles);
        free(pixels);
        return st;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->keys_mu, NULL);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&r->refs, 1);
    atomic_init(&r->cancel, false);
    atomic_init(&r->submitted, false);
    r->ids = ids;
    r->n_ids = n_ids;
    r->tiles = n_tiles > 0 ? tiles : NULL;
    r->pixels = n_tiles > 0 ? pixels : NULL;
    if (n_tiles == 0) {
        free(tiles);
        free(pixels);
    }
    r->n_tiles = n_tiles;
    r->p = *p;
    snprintf(r->id, sizeof r->id, "%s", p->id ? p->id : "");
    r->p.id = r->id;
    bool ok = true;
    if (p->n_stop > 0) {
        r->stop = calloc((size_t)p->n_stop, sizeof *r->stop);
        ok = r->stop != NULL;
        for (int i = 0; ok && i < p->n_stop; i++)
            ok = (r->stop[i] = strdup(p->stop[i])) != NULL;
    }
    if (ok && p->n_stop_ids > 0) {
        r->stop_ids = malloc((size_t)p->n_stop_ids * sizeof *r->stop_ids);
        ok = r->stop_ids != NULL;
        if (ok)
            memcpy(r->stop_ids, p->stop_ids, (size_t)p->n_stop_ids * sizeof *r->stop_ids);
    }
    r->p.stop = (const char *const *)r->stop;
    r->p.stop_ids = r->stop_ids;
    /* both event arrays start with room for every FINISH (request_engine.h) */
    const int64_t cap = p->n + 16;
    r->prod.ev = malloc((size_t)cap * sizeof *r->prod.ev);
    r->cons.ev = malloc((size_t)cap * sizeof *r->cons.ev);
    r->prod.cap = r->cons.cap = cap;
    if (!ok || !r->prod.ev || !r->cons.ev) {
        free_request(r);
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    }
    *out = r;
    return MM_OK;
}

enum mm_status mm_request_create(const struct mm_request_params *p, int32_t *ids, int64_t n_ids,
                                 float *tiles, int64_t n_tiles, struct mm_request **out,
                                 struct mm_err *err)
{
    return create(p, ids, n_ids, tiles, NULL, n_tiles, out, err);
}

enum mm_status mm_request_create_pixels(const struct mm_request_params *p, int32_t *ids,
                                        int64_t n_ids, uint8_t *pixels, int64_t n_tiles,
                                        struct mm_request **out, struct mm_err *err)
{
    return create(p, ids, n_ids, NULL, pixels, n_tiles, out, err);
}

void mm_request_ref(struct mm_request *r) { atomic_fetch_add(&r->refs, 1); }

void mm_request_release(struct mm_request *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1)
        free_request(r);
}

void mm_request_set_notify(struct mm_request *r, void (*fn)(void *user), void *user)
{
    pthread_mutex_lock(&r->mu);
    /* wait out a callback running on another thread (never our own) */
    while (r->in_notify && !pthread_equal(r->notify_thread, pthread_self()))
        pthread_cond_wait(&r->cv, &r->mu);
    r->notify = fn;
    r->user = user;
    pthread_mutex_unlock(&r->mu);
}

void mm_request_cancel(struct mm_request *r) { atomic_store(&r->cancel, true); }

bool mm_request_cancelled(const struct mm_request *r)
{
    return atomic_load(&((struct mm_request *)r)->cancel);
}

/* Consumer: hands out cons events; when all are read, swaps in prod. */
int mm_request_take(struct mm_request *r, struct mm_event *evs, int cap)
{
    if (r->cons_next == r->cons.n) {
        pthread_mutex_lock(&r->mu);
        struct ev_buf t = r->cons;
        r->cons = r->prod;
        t.n = 0;
        t.text_len = 0;
        r->prod = t;
        r->cons_next = 0;
        pthread_mutex_unlock(&r->mu);
    }
    int k = 0;
    for (; k < cap && r->cons_next < r->cons.n; k++) {
        struct mm_event *e = &r->cons.ev[r->cons_next++];
        evs[k] = *e;
        evs[k].text = r->cons.text ? r->cons.text + (size_t)(uintptr_t)e->text : "";
        if (e->kind == MM_EVENT_FINISH) {
            evs[k].message = e->status != MM_OK ? r->message : "";
            r->finish_taken++;
        }
    }
    return k;
}

bool mm_request_poll(struct mm_request *r, struct mm_event *ev)
{
    return mm_request_take(r, ev, 1) == 1;
}

bool mm_request_wait(struct mm_request *r, struct mm_event *ev, int64_t timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    if (timeout_ms >= 0) {
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (timeout_ms % 1000) * 1000000;
        if (dl.tv_nsec >= 1000000000) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000;
        }
    }
    for (;;) {
        if (mm_request_take(r, ev, 1) == 1)
            return true;
        if (r->finish_taken >= r->p.n)
            return false;
        pthread_mutex_lock(&r->mu);
        int rc = 0;
        while (r->prod.n == 0 && rc == 0)
            rc = timeout_ms < 0 ? pthread_cond_wait(&r->cv, &r->mu)
                                : pthread_cond_timedwait(&r->cv, &r->mu, &dl);
        const bool any = r->prod.n > 0;
        pthread_mutex_unlock(&r->mu);
        if (!any)
            return false;
    }
}

bool mm_request_done(const struct mm_request *r)
{
    struct mm_request *w = (struct mm_request *)r;
    pthread_mutex_lock(&w->mu);
    const bool done = r->finish_queued >= r->p.n;
    pthread_mutex_unlock(&w->mu);
    return done;
}

const char *mm_request_id(const struct mm_request *r) { return r->id; }
int32_t mm_request_n(const struct mm_request *r) { return r->p.n; }
int64_t mm_request_prompt_tokens(const struct mm_request *r) { return r->n_ids; }

/* ---- engine side ---------------------------------------------------------------- */

bool mm_request_claim(struct mm_request *r)
{
    bool expected = false;
    return atomic_compare_exchange_strong(&r->submitted, &expected, true);
}

bool mm_request_submitted(const struct mm_request *r)
{
    return atomic_load(&((struct mm_request *)r)->submitted);
}

const struct mm_request_params *mm_request_params_of(const struct mm_request *r) { return &r->p; }

const int32_t *mm_request_prompt(const struct mm_request *r, int64_t *n)
{
    *n = r->n_ids;
    return r->ids;
}

const float *mm_request_tiles(const struct mm_request *r, int64_t *n_tiles)
{
    *n_tiles = r->n_tiles;
    return r->tiles;
}

const uint8_t *mm_request_pixels(const struct mm_request *r, int64_t *n_tiles)
{
    *n_tiles = r->n_tiles;
    return r->pixels;
}

const float *mm_request_tiles_f32(const struct mm_request *r, int64_t first, int64_t count,
                                  int64_t tile_size, float *scratch)
{
    const size_t tile_floats = 3 * (size_t)tile_size * (size_t)tile_size;
    if (r->tiles)
        return r->tiles + (size_t)first * tile_floats;
    mm_image_tiles_unpack(r->pixels + (size_t)first * tile_floats, count, tile_size, scratch);
    return scratch;
}

void mm_request_set_seed(struct mm_request *r, uint64_t seed) { r->p.sample.seed = seed; }

void mm_request_set_tile_digests(struct mm_request *r, uint64_t *digests, int64_t tile_floats)
{
    free(r->digests);
    r->digests = digests;
    r->digests_tile_floats = tile_floats;
}

enum mm_status mm_request_state_keys(const struct mm_request *cr, int64_t tile_floats,
                                     int32_t img_id, int64_t tokens_per_tile, const uint64_t **keys,
                                     const uint64_t **ph, struct mm_err *err)
{
    /* a memo: the request is logically unchanged (and was created writable) */
    struct mm_request *r = (struct mm_request *)cr;
    enum mm_status st = MM_OK;
    pthread_mutex_lock(&r->keys_mu);
    if (!r->keys_done) {
        const uint64_t *dg =
            r->digests && r->digests_tile_floats == tile_floats ? r->digests : NULL;
        st = mm_state_keys_digested(r->ids, r->n_ids, r->tiles, r->pixels, dg, r->n_tiles,
                                    tile_floats, img_id, tokens_per_tile, &r->keys, err);
        if (st == MM_OK && !(r->ph = malloc((size_t)r->n_ids * sizeof *r->ph))) {
            free(r->keys);
            r->keys = NULL;
            st = mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        }
        if (st == MM_OK)
            mm_state_prefix_hashes(r->keys, r->n_ids, r->ph);
        if (st != MM_ERR_NOMEM) { /* out of memory: the next call tries again */
            r->keys_done = true;
            r->keys_status = st;
            r->keys_tile_floats = tile_floats;
            r->keys_img_id = img_id;
            r->keys_tpt = tokens_per_tile;
        }
    } else if (r->keys_tile_floats != tile_floats || r->keys_img_id != img_id ||
               r->keys_tpt != tokens_per_tile) {
        st = mm_err_set(err, MM_ERR_INVALID, "state keys were computed for another model");
    } else if ((st = r->keys_status) != MM_OK) {
        mm_err_set(err, st, "state keys: the image positions do not match the tiles");
    }
    *keys = r->keys;
    *ph = r->ph;
    pthread_mutex_unlock(&r->keys_mu);
    return st;
}

/* Appends text to prod's buffer; false when it cannot grow. */
static bool put_text(struct ev_buf *b, const char *text, size_t len, size_t *off)
{
    if (!mm_buffer_reserve(&b->text, &b->text_cap, b->text_len + len, 256))
        return false;
    if (len)
        memcpy(b->text + b->text_len, text, len);
    *off = b->text_len;
    b->text_len += len;
    return true;
}

enum mm_status mm_request_push_token(struct mm_request *r, const struct mm_event *ev,
                                     struct mm_err *err)
{
    pthread_mutex_lock(&r->mu);
    struct ev_buf *b = &r->prod;
    /* keep room for every FINISH still to come */
    const int64_t need = b->n + 1 + (r->p.n - r->finish_queued);
    size_t off;
    bool ok = true;
    if (need > b->cap) {
        const int64_t cap = 2 * need;
        struct mm_event *ne = realloc(b->ev, (size_t)cap * sizeof *ne);
        ok = ne != NULL;
        if (ok) {
            b->ev = ne;
            b->cap = cap;
        }
    }
    ok = ok && put_text(b, ev->text, ev->len, &off);
    if (ok) {
        struct mm_event *e = &b->ev[b->n++];
        *e = *ev;
        e->kind = MM_EVENT_TOKEN;
        e->text = (const char *)(uintptr_t)off;
        e->message = "";
        r->dirty = true; /* waiters wake at mm_request_flush */
    }
    pthread_mutex_unlock(&r->mu);
    return ok ? MM_OK : mm_err_set(err, MM_ERR_NOMEM, "out of memory for the event channel");
}

void mm_request_push_finish(struct mm_request *r, const struct mm_event *ev)
{
    pthread_mutex_lock(&r->mu);
    struct ev_buf *b = &r->prod;
    size_t off = 0;
    struct mm_event *e = &b->ev[b->n++]; /* room reserved since creation */
    *e = *ev;
    e->kind = MM_EVENT_FINISH;
    e->len = put_text(b, ev->text, ev->len, &off) ? ev->len : 0;
    e->text = (const char *)(uintptr_t)off;
    if (ev->status != MM_OK && !r->has_message) {
        snprintf(r->message, sizeof r->message, "%s", ev->message ? ev->message : "");
        r->has_message = true;
    }
    e->message = NULL;
    r->finish_queued++;
    r->dirty = true;
    pthread_mutex_unlock(&r->mu);
}

void mm_request_flush(struct mm_request *r)
{
    pthread_mutex_lock(&r->mu);
    if (r->dirty)
        pthread_cond_broadcast(&r->cv); /* mm_request_wait */
    void (*fn)(void *) = r->dirty ? r->notify : NULL;
    void *user = r->user;
    r->dirty = false;
    if (fn) {
        r->in_notify = true;
        r->notify_thread = pthread_self();
    }
    pthread_mutex_unlock(&r->mu);
    if (!fn)
        return;
    fn(user);
    pthread_mutex_lock(&r->mu);
    r->in_notify = false;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}
