/* workload.h: what the load generator sends and when: a seeded random
 * source, the arrival schedule (Poisson or gamma-bursty, as vLLM's
 * `bench serve` draws it), per-request input/output lengths, and the JSON
 * bodies of /v1/completions and /v1/chat/completions requests.
 *
 * Design: everything about request i is a pure function of the seed and i
 * (plan first, build a body only when the request is sent and free it when it
 * ends), so a 1,000-request run of 100K-token prompts never holds more than
 * max-concurrency bodies. Not thread-safe; the one driver thread owns it. */
#ifndef MM_LOADGEN_WORKLOAD_H
#define MM_LOADGEN_WORKLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* ---- random source (splitmix64: tiny, seedable, good enough for load) ---- */
struct mm_rng {
    uint64_t s;
};
void mm_rng_seed(struct mm_rng *r, uint64_t seed);
uint64_t mm_rng_u64(struct mm_rng *r);
double mm_rng_uniform(struct mm_rng *r);                      /* [0, 1) */
int64_t mm_rng_int(struct mm_rng *r, int64_t lo, int64_t hi); /* [lo, hi], lo <= hi */
double mm_rng_normal(struct mm_rng *r);                       /* N(0, 1) */
/* Gamma(shape, scale) by Marsaglia and Tsang; shape > 0, scale > 0. */
double mm_rng_gamma(struct mm_rng *r, double shape, double scale);

/* ---- arrival schedule -------------------------------------------------- */
/* Fills t[0..n) with send times in seconds from the start. rate <= 0 or
 * infinite: all zero (send as fast as the concurrency allows). Otherwise the
 * gaps are Gamma(burstiness, 1/(rate*burstiness)) (burstiness 1 = Poisson,
 * < 1 burstier, > 1 more regular, infinite = fixed 1/rate), and the times are
 * scaled so the last one falls at n/rate, as vLLM does, which keeps the mean
 * rate exact across seeds. */
enum mm_status mm_workload_schedule(struct mm_rng *r, double rate, double burstiness, int64_t n,
                                    double *t, struct mm_err *err);

/* A length uniform in [floor(len*(1-ratio)), ceil(len*(1+ratio))], at least
 * min_len (vLLM's --random-range-ratio). ratio in [0, 1). */
int64_t mm_workload_length(struct mm_rng *r, int64_t len, double ratio, int64_t min_len);

/* ---- request bodies ----------------------------------------------------- */
/* A growable NUL-terminated byte string. Zero-initialise; owns p. */
struct mm_buf {
    char *p;
    size_t len, cap;
    bool failed; /* an append ran out of memory; the contents are truncated */
};
void mm_buf_append(struct mm_buf *b, const char *s, size_t n);
void mm_buf_puts(struct mm_buf *b, const char *s);
void mm_buf_printf(struct mm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s as a JSON string literal, quotes included. */
void mm_buf_json_string(struct mm_buf *b, const char *s);
void mm_buf_free(struct mm_buf *b);

/* Standard base64 (RFC 4648, padded) of n bytes, appended to b. */
void mm_buf_base64(struct mm_buf *b, const uint8_t *in, size_t n);

enum mm_prompt_kind {
    MM_PROMPT_TOKEN_IDS, /* /v1/completions with a token-id array: exact lengths */
    MM_PROMPT_TEXT,      /* generated words; the server's usage says the length */
};

enum mm_api {
    MM_API_COMPLETIONS, /* /v1/completions: "prompt", "choices[].text" */
    MM_API_CHAT,        /* /v1/chat/completions: "messages", "choices[].delta.content" */
};

/* What every request of a run shares. Borrowed strings outlive the run. */
struct mm_workload {
    enum mm_api api;
    enum mm_prompt_kind prompt_kind;
    const char *model;
    int64_t vocab_lo, vocab_hi; /* random token ids are drawn from [vocab_lo, vocab_hi) */
    int64_t prefix_len;         /* a shared prefix of this many tokens/words on every prompt */
    bool ignore_eos;
    double temperature;         /* < 0: leave out */
    double top_p;               /* < 0: leave out */
    int64_t top_k;              /* < 0: leave out */
    const char *image_data_url; /* the data: URL for requests with an image, or NULL */
    const char *extra_body; /* a JSON object's members ("\"a\":1,\"b\":2") spliced in, or NULL */
    uint64_t seed;
};

/* Writes request `index`'s JSON body into b (emptied first): input_len prompt
 * tokens (or words), max_tokens output_len, streaming with usage, and the
 * image when with_image (chat only). Deterministic in (w->seed, index). */
enum mm_status mm_workload_body(const struct mm_workload *w, int64_t index, int64_t input_len,
                                int64_t output_len, bool with_image, struct mm_buf *b,
                                struct mm_err *err);

/* Reads a file and returns "data:<mime>;base64,<...>" (caller frees), the
 * MIME type from the file's magic bytes (PNG, JPEG, GIF, WebP). */
enum mm_status mm_workload_image_url(const char *path, char **out, struct mm_err *err);

#endif
