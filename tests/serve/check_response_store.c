/* check_response_store.c: src/serve/response_store.c: ids, put/get/delete,
 * owners, the count and byte bounds (LRU, a get refreshes), images shared by
 * a conversation's responses charged once and unpacked exactly, a response
 * too large for the store, and many threads at once. */
#include "serve/response_store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/image_preprocess.h"
#include "serve/state_cache.h"
#include "testutil.h"

enum { S = 8 }; /* tile size: small tiles keep the byte arithmetic readable */
#define TILE_BYTES (3 * S * S)

/* n normalised tiles made by the real preprocessing, so they pack */
static float *tiles_of(int64_t n, uint32_t seed)
{
    struct mm_image img = mm_test_image(S, S, seed);
    const struct mm_image_params p = {.tile_size = S, .min_tiles = 1, .max_tiles = 1};
    struct mm_image_tiles t;
    struct mm_err err;
    ck_assert_int_eq(mm_image_preprocess(&img, &p, &t, &err), MM_OK);
    float *out = malloc((size_t)n * TILE_BYTES * sizeof *out);
    for (int64_t i = 0; i < n; i++)
        memcpy(out + i * TILE_BYTES, t.data, TILE_BYTES * sizeof *out);
    mm_image_tiles_free(&t);
    mm_image_free(&img);
    return out;
}

static struct mm_response_image *image_of(int64_t n, uint32_t seed)
{
    float *t = tiles_of(n, seed);
    struct mm_response_image *im;
    struct mm_err err;
    ck_assert_int_eq(mm_response_image_create(t, n, S, &im, &err), MM_OK);
    free(t);
    return im;
}

/* A response with n_ids ids (i * 3 + k) and the given images (references taken). */
static void make(struct mm_response *r, const char *owner, int64_t n_ids, int k,
                 struct mm_response_image **images, int64_t n_images)
{
    struct mm_err err;
    memset(r, 0, sizeof *r);
    ck_assert_int_eq(mm_response_id_new(r->id, &err), MM_OK);
    r->owner = owner ? strdup(owner) : NULL;
    r->created_at = 100;
    r->completed_at = 101;
    r->ids = malloc((size_t)(n_ids ? n_ids : 1) * sizeof *r->ids);
    for (int64_t i = 0; i < n_ids; i++)
        r->ids[i] = (int32_t)(i * 3 + k);
    r->n_ids = n_ids;
    if (n_images) {
        r->images = malloc((size_t)n_images * sizeof *r->images);
        for (int64_t i = 0; i < n_images; i++) {
            mm_response_image_ref(images[i]);
            r->images[i] = images[i];
        }
        r->n_images = n_images;
    }
    char view[64];
    snprintf(view, sizeof view, "{\"k\":%d}", k);
    r->view = strdup(view);
    r->view_len = strlen(view);
}

static struct mm_response_store *store(int64_t max, size_t bytes)
{
    const struct mm_response_store_options o = {.max_responses = max, .max_bytes = bytes};
    struct mm_response_store *s;
    struct mm_err err;
    ck_assert_int_eq(mm_response_store_create(&o, &s, &err), MM_OK);
    return s;
}

static bool present(struct mm_response_store *s, const char *id, const char *owner)
{
    struct mm_response r;
    struct mm_err err;
    const enum mm_status st = mm_response_store_get(s, id, owner, MM_RESPONSE_VIEW, &r, &err);
    mm_response_free(&r);
    return st == MM_OK;
}

START_TEST(test_ids)
{
    char a[MM_RESPONSE_ID_LEN + 1], b[MM_RESPONSE_ID_LEN + 1];
    struct mm_err err;
    ck_assert_int_eq(mm_response_id_new(a, &err), MM_OK);
    ck_assert_int_eq(mm_response_id_new(b, &err), MM_OK);
    ck_assert_uint_eq(strlen(a), MM_RESPONSE_ID_LEN);
    ck_assert(strncmp(a, "resp_", 5) == 0);
    ck_assert_uint_eq(strspn(a + 5, "0123456789abcdef"), 48);
    ck_assert_str_ne(a, b);
}
END_TEST

START_TEST(test_put_get_delete)
{
    struct mm_response_store *s = store(10, 1 << 20);
    struct mm_response_image *im = image_of(2, 1);
    struct mm_response r, got;
    struct mm_err err;
    make(&r, NULL, 5, 1, &im, 1);
    char id[MM_RESPONSE_ID_LEN + 1];
    memcpy(id, r.id, sizeof id);
    ck_assert_int_eq(mm_response_store_put(s, &r, &err), MM_OK);
    ck_assert_ptr_null(r.ids); /* moved */
    /* the view only */
    ck_assert_int_eq(mm_response_store_get(s, id, NULL, MM_RESPONSE_VIEW, &got, &err), MM_OK);
    ck_assert_str_eq(got.view, "{\"k\":1}");
    ck_assert_int_eq(got.n_ids, 0);
    ck_assert_int_eq(got.completed_at, 101);
    mm_response_free(&got);
    /* the history: ids and the same image, unpacked to the same floats */
    ck_assert_int_eq(mm_response_store_get(s, id, NULL, MM_RESPONSE_HISTORY, &got, &err), MM_OK);
    ck_assert_int_eq(got.n_ids, 5);
    ck_assert_int_eq(got.ids[4], 13);
    ck_assert_ptr_null(got.view);
    ck_assert_int_eq(got.n_images, 1);
    ck_assert_int_eq(mm_response_tiles(&got), 2);
    float *want = tiles_of(2, 1), *back = malloc(2 * TILE_BYTES * sizeof *back);
    mm_response_image_unpack(got.images[0], back);
    ck_assert_int_eq(memcmp(want, back, 2 * TILE_BYTES * sizeof *back), 0);
    free(want);
    free(back);
    mm_response_free(&got);
    /* unknown ids, then delete */
    ck_assert_int_eq(mm_response_store_get(s, "resp_nothere", NULL, MM_RESPONSE_VIEW, &got, &err),
                     MM_ERR_NOT_FOUND);
    ck_assert(strstr(err.msg, "resp_nothere") != NULL);
    ck_assert_int_eq(mm_response_store_delete(s, id, NULL, &err), MM_OK);
    ck_assert(!present(s, id, NULL));
    ck_assert_int_eq(mm_response_store_delete(s, id, NULL, &err), MM_ERR_NOT_FOUND);
    struct mm_response_store_stats st;
    mm_response_store_stats(s, &st);
    ck_assert_int_eq(st.responses, 0);
    ck_assert_int_eq(st.images, 0);
    ck_assert_uint_eq(st.bytes, 0);
    /* the image outlives the store's references: ours is still good */
    ck_assert_int_eq(mm_response_image_tiles(im), 2);
    mm_response_image_release(im);
    mm_response_store_free(s);
}
END_TEST

START_TEST(test_owners)
{
    struct mm_response_store *s = store(10, 1 << 20);
    struct mm_response r;
    struct mm_err err;
    make(&r, "key-a", 3, 0, NULL, 0);
    char id[MM_RESPONSE_ID_LEN + 1];
    memcpy(id, r.id, sizeof id);
    ck_assert_int_eq(mm_response_store_put(s, &r, &err), MM_OK);
    ck_assert(present(s, id, "key-a"));
    ck_assert(!present(s, id, "key-b"));
    ck_assert(!present(s, id, NULL));
    ck_assert_int_eq(mm_response_store_delete(s, id, "key-b", &err), MM_ERR_NOT_FOUND);
    ck_assert(present(s, id, "key-a"));
    ck_assert_int_eq(mm_response_store_delete(s, id, "key-a", &err), MM_OK);
    /* and one made without keys is not anyone's */
    make(&r, NULL, 3, 0, NULL, 0);
    memcpy(id, r.id, sizeof id);
    ck_assert_int_eq(mm_response_store_put(s, &r, &err), MM_OK);
    ck_assert(!present(s, id, "key-a"));
    ck_assert(present(s, id, NULL));
    mm_response_store_free(s);
}
END_TEST

/* At most max_responses: the least recently used goes, and a get counts as a use. */
START_TEST(test_count_bound_lru)
{
    struct mm_response_store *s = store(3, 1 << 20);
    char ids[5][MM_RESPONSE_ID_LEN + 1];
    struct mm_err err;
    for (int i = 0; i < 3; i++) {
        struct mm_response r;
        make(&r, NULL, 4, i, NULL, 0);
        memcpy(ids[i], r.id, sizeof ids[i]);
        ck_assert_int_eq(mm_response_store_put(s, &r, &err), MM_OK);
    }
    ck_assert(present(s, ids[0], NULL)); /* 0 is now the most recent: 1 is the oldest */
    struct mm_response r;
    make(&r, NULL, 4, 3, NULL, 0);
    memcpy(ids[3], r.id, sizeof ids[3]);
    ck_assert_int_eq(mm_response_store_put(s, &r, &err), MM_OK);
    ck_assert(!present(s, ids[1], NULL));
    ck_assert(present(s, ids[0], NULL));
    ck_assert(present(s, ids[2], NULL));
    ck_assert(present(s, ids[3], NULL));
    struct mm_response_store_stats st;
    mm_response_store_stats(s, &st);
    ck_assert_int_eq(st.responses, 3);
    ck_assert_int_eq(st.evictions, 1);
    mm_response_store_free(s);
    /* a store that keeps nothing refuses, and the response stays the caller's */
    s = store(0, 1 << 20);
    make(&r, NULL, 4, 0, NULL, 0);
    ck_assert_int_eq(mm_response_store_put(s, &r, &err), MM_ERR_LIMIT);
    ck_assert_int_eq(r.n_ids, 4);
    mm_response_free(&r);
    mm_response_store_free(s);
}
END_TEST

/* A conversation's responses share images: charged once, freed with the last holder. */
START_TEST(test_bytes_and_shared_images)
{
    struct mm_response_store *s = store(100, 1 << 20);
    struct mm_response_image *a = image_of(3, 1), *b = image_of(1, 2);
    struct mm_response r;
    struct mm_err err;
    struct mm_response_store_stats st;
    make(&r, NULL, 10, 0, &a, 1);
    char first[MM_RESPONSE_ID_LEN + 1];
    memcpy(first, r.id, sizeof first);
    ck_assert_int_eq(mm_response_store_put(s, &r, &err), MM_OK);
    mm_response_store_stats(s, &st);
    const size_t one = st.bytes;
    ck_assert_uint_ge(one, 3 * TILE_BYTES + 10 * sizeof(int32_t));
    ck_assert_uint_lt(one, 3 * TILE_BYTES + 1024);
    struct mm_response_image *both[2] = {a, b};
    make(&r, NULL, 20, 1, both, 2);
    ck_assert_int_eq(mm_response_store_put(s, &r, &err), MM_OK);
    mm_response_store_stats(s, &st);
    ck_assert_int_eq(st.images, 2);
    /* the second adds b's tile and its own arrays, not a's tiles again */
    ck_assert_uint_lt(st.bytes, one + TILE_BYTES + 1024);
    ck_assert_uint_ge(st.bytes, one + TILE_BYTES);
    ck_assert_int_eq(mm_response_store_delete(s, first, NULL, &err), MM_OK);
    mm_response_store_stats(s, &st);
    ck_assert_int_eq(st.images, 2); /* a is still held by the second response */
    mm_response_image_release(a);
    mm_response_image_release(b);
    mm_response_store_free(s); /* frees a and b (ASan: no leak, no double free) */
}
END_TEST

/* The byte bound evicts the oldest; a response larger than the bound is refused. */
START_TEST(test_byte_bound)
{
    /* one response of 8 ids and a 2-tile image weighs `one`: room for two and a half */
    struct mm_err err;
    struct mm_response_store_stats st;
    struct mm_response_store *s = store(100, 1 << 20);
    struct mm_response_image *im0 = image_of(2, 0);
    struct mm_response r0;
    make(&r0, NULL, 8, 0, &im0, 1);
    ck_assert_int_eq(mm_response_store_put(s, &r0, &err), MM_OK);
    mm_response_image_release(im0);
    mm_response_store_stats(s, &st);
    const size_t cap = st.bytes * 5 / 2;
    mm_response_store_free(s);
    s = store(100, cap);
    char ids[4][MM_RESPONSE_ID_LEN + 1];
    for (int i = 0; i < 4; i++) {
        struct mm_response_image *im = image_of(2, (uint32_t)i);
        struct mm_response r;
        make(&r, NULL, 8, i, &im, 1);
        memcpy(ids[i], r.id, sizeof ids[i]);
        ck_assert_int_eq(mm_response_store_put(s, &r, &err), MM_OK);
        mm_response_image_release(im);
        mm_response_store_stats(s, &st);
        ck_assert_uint_le(st.bytes, cap);
    }
    ck_assert(!present(s, ids[0], NULL));
    ck_assert(!present(s, ids[1], NULL));
    ck_assert(present(s, ids[2], NULL));
    ck_assert(present(s, ids[3], NULL));
    struct mm_response_image *big = image_of(12, 9);
    struct mm_response r;
    make(&r, NULL, 8, 9, &big, 1);
    ck_assert_int_eq(mm_response_store_put(s, &r, &err), MM_ERR_LIMIT);
    ck_assert_int_eq(r.n_images, 1);
    ck_assert(present(s, ids[3], NULL)); /* nothing was evicted for it */
    mm_response_free(&r);
    mm_response_image_release(big);
    /* tiles that did not come from the preprocessing are refused */
    float junk[TILE_BYTES] = {0.5f};
    struct mm_response_image *im;
    ck_assert_int_eq(mm_response_image_create(junk, 1, S, &im, &err), MM_ERR_INVALID);
    mm_response_store_free(s);
}
END_TEST

/* Writers, readers and deleters at once, against a small bound. */
/* Saved and loaded: every field back, shared images still shared, owners
 * kept; another model's file, a damaged or a cut one is refused whole. */
START_TEST(test_save_load)
{
    char dir[256], path[300];
    mm_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/responses.store", dir);
    struct mm_response_store *s = store(16, 1 << 20);
    struct mm_response_image *im = image_of(2, 5);
    struct mm_response r[3];
    char ids[3][MM_RESPONSE_ID_LEN + 1];
    struct mm_err err;
    make(&r[0], NULL, 10, 1, &im, 1);
    make(&r[1], "key-a", 20, 2, &im, 1);
    make(&r[2], NULL, 5, 3, NULL, 0);
    r[1].n_state = 17;
    for (int i = 0; i < 3; i++) {
        memcpy(ids[i], r[i].id, sizeof ids[i]);
        ck_assert_int_eq(mm_response_store_put(s, &r[i], &err), MM_OK);
    }
    ck_assert_int_eq(mm_response_store_save(s, path, 42, &err), MM_OK);
    struct mm_response_store_stats a, b;
    mm_response_store_stats(s, &a);
    mm_response_store_free(s);
    s = store(16, 1 << 20);
    int64_t n;
    ck_assert_int_eq(mm_response_store_load(s, path, 42, &n, &err), MM_OK);
    ck_assert_int_eq(n, 3);
    mm_response_store_stats(s, &b);
    ck_assert_int_eq(b.images, 1); /* shared still */
    ck_assert_uint_eq(b.bytes, a.bytes);
    struct mm_response got;
    ck_assert_int_eq(mm_response_store_get(s, ids[1], NULL, MM_RESPONSE_VIEW, &got, &err),
                     MM_ERR_NOT_FOUND); /* the owner came back too */
    ck_assert_int_eq(mm_response_store_get(s, ids[1], "key-a",
                                           MM_RESPONSE_VIEW | MM_RESPONSE_HISTORY, &got, &err),
                     MM_OK);
    ck_assert_int_eq(got.n_ids, 20);
    ck_assert_int_eq(got.ids[19], 19 * 3 + 2);
    ck_assert_int_eq(got.n_state, 17);
    ck_assert_int_eq(got.created_at, 100);
    ck_assert_str_eq(got.view, "{\"k\":2}");
    ck_assert_int_eq(got.n_images, 1);
    ck_assert_int_eq(mm_response_tiles(&got), 2);
    float *want = tiles_of(2, 5), *back = malloc(2 * TILE_BYTES * sizeof *back);
    mm_response_image_unpack(got.images[0], back);
    ck_assert_mem_eq(back, want, 2 * TILE_BYTES * sizeof *back);
    /* the tiles' digests: made when stored and when read back, equal to the pixels' */
    uint64_t d[4];
    for (int t = 0; t < 2; t++)
        mm_state_tile_digest(want + t * TILE_BYTES, TILE_BYTES, d + 2 * t);
    ck_assert_mem_eq(mm_response_image_digests(got.images[0]), d, sizeof d);
    ck_assert_mem_eq(mm_response_image_digests(im), d, sizeof d);
    free(want);
    free(back);
    mm_response_free(&got);
    mm_response_store_free(s);
    /* another model */
    s = store(16, 1 << 20);
    ck_assert_int_eq(mm_response_store_load(s, path, 43, &n, &err), MM_ERR_INVALID);
    ck_assert_int_eq(n, 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "another model"));
    /* one byte changed in the payload */
    FILE *f = fopen(path, "r+b");
    ck_assert_int_eq(fseek(f, -3, SEEK_END), 0);
    const int ch = fgetc(f);
    ck_assert_int_eq(fseek(f, -3, SEEK_END), 0);
    fputc(ch ^ 1, f);
    fclose(f);
    ck_assert_int_eq(mm_response_store_load(s, path, 42, &n, &err), MM_ERR_INVALID);
    ck_assert_int_eq(n, 0);
    /* cut short */
    ck_assert_int_eq(truncate(path, 200), 0);
    ck_assert_int_eq(mm_response_store_load(s, path, 42, &n, &err), MM_ERR_INVALID);
    mm_response_store_stats(s, &b);
    ck_assert_int_eq(b.responses, 0);
    /* no file: nothing, no error */
    unlink(path);
    ck_assert_int_eq(mm_response_store_load(s, path, 42, &n, &err), MM_OK);
    ck_assert_int_eq(n, 0);
    mm_response_store_free(s);
    mm_response_image_release(im);
    mm_test_rmdir(dir);
}
END_TEST

static struct mm_response_store *shared;
static struct mm_response_image *shared_im;

static void *hammer(void *arg)
{
    const int k = (int)(intptr_t)arg;
    struct mm_err err;
    for (int i = 0; i < 300; i++) {
        struct mm_response r;
        make(&r, k % 2 ? "odd" : "even", 16, k, &shared_im, 1);
        char id[MM_RESPONSE_ID_LEN + 1];
        memcpy(id, r.id, sizeof id);
        ck_assert_int_eq(mm_response_store_put(shared, &r, &err), MM_OK);
        struct mm_response got;
        if (mm_response_store_get(shared, id, k % 2 ? "odd" : "even", MM_RESPONSE_HISTORY, &got,
                                  &err) == MM_OK) {
            ck_assert_int_eq(got.n_ids, 16);
            ck_assert_int_eq(got.ids[1], 3 + k);
            mm_response_free(&got);
        }
        if (i % 3 == 0)
            mm_response_store_delete(shared, id, k % 2 ? "odd" : "even", &err);
    }
    return NULL;
}

START_TEST(test_threads)
{
    shared = store(20, 1 << 20);
    shared_im = image_of(1, 3);
    pthread_t t[6];
    for (int i = 0; i < 6; i++)
        pthread_create(&t[i], NULL, hammer, (void *)(intptr_t)i);
    for (int i = 0; i < 6; i++)
        pthread_join(t[i], NULL);
    struct mm_response_store_stats st;
    mm_response_store_stats(shared, &st);
    ck_assert_int_le(st.responses, 20);
    ck_assert_int_eq(st.images, 1);
    mm_response_store_free(shared);
    mm_response_image_release(shared_im);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("serve/response_store");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_ids);
    tcase_add_test(tc, test_put_get_delete);
    tcase_add_test(tc, test_owners);
    tcase_add_test(tc, test_count_bound_lru);
    tcase_add_test(tc, test_bytes_and_shared_images);
    tcase_add_test(tc, test_byte_bound);
    tcase_add_test(tc, test_threads);
    tcase_add_test(tc, test_save_load);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
