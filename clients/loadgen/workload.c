/* workload.c: schedule, lengths and request bodies of workload.h.
 *
 * Design: bodies are written straight into a byte buffer, not through a JSON
 * tree: a 100K-token prompt is one long array of small integers, and building
 * it as 100K cJSON nodes per request would cost more than sending it. */
#include "loadgen/workload.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"

/* ---- random source ------------------------------------------------------ */
void mm_rng_seed(struct mm_rng *r, uint64_t seed) { r->s = seed; }

uint64_t mm_rng_u64(struct mm_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double mm_rng_uniform(struct mm_rng *r) { return (double)(mm_rng_u64(r) >> 11) * 0x1.0p-53; }

int64_t mm_rng_int(struct mm_rng *r, int64_t lo, int64_t hi)
{
    const uint64_t span = (uint64_t)(hi - lo) + 1;
    return span == 0 ? (int64_t)mm_rng_u64(r) : lo + (int64_t)(mm_rng_u64(r) % span);
}

double mm_rng_normal(struct mm_rng *r)
{
    /* Box-Muller: sqrt(-2 ln u1) cos(2 pi u2), u1 in (0, 1] */
    const double u1 = 1.0 - mm_rng_uniform(r), u2 = mm_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

double mm_rng_gamma(struct mm_rng *r, double shape, double scale)
{
    if (shape < 1.0) { /* Gamma(a) = Gamma(a+1) * U^(1/a) */
        const double u = 1.0 - mm_rng_uniform(r);
        return mm_rng_gamma(r, shape + 1.0, scale) * pow(u, 1.0 / shape);
    }
    /* Marsaglia-Tsang: d = a - 1/3, c = 1/sqrt(9d); accept d*v with v = (1+cx)^3 */
    const double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        const double x = mm_rng_normal(r);
        double v = 1.0 + c * x;
        if (v <= 0)
            continue;
        v = v * v * v;
        const double u = 1.0 - mm_rng_uniform(r);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v))
            return d * v * scale;
    }
}

/* ---- schedule and lengths ----------------------------------------------- */
enum mm_status mm_workload_schedule(struct mm_rng *r, double rate, double burstiness, int64_t n,
                                    double *t, struct mm_err *err)
{
    if (n <= 0)
        return MM_OK;
    if (!(rate > 0) || isinf(rate)) {
        for (int64_t i = 0; i < n; i++)
            t[i] = 0;
        return MM_OK;
    }
    if (!(burstiness > 0))
        return mm_err_set(err, MM_ERR_INVALID, "--burstiness must be > 0, not %g", burstiness);
    double acc = 0;
    for (int64_t i = 0; i < n; i++) {
        acc +=
            isinf(burstiness) ? 1.0 / rate : mm_rng_gamma(r, burstiness, 1.0 / (rate * burstiness));
        t[i] = acc;
    }
    const double scale = acc > 0 ? ((double)n / rate) / acc : 1.0;
    for (int64_t i = 0; i < n; i++)
        t[i] *= scale;
    return MM_OK;
}

int64_t mm_workload_length(struct mm_rng *r, int64_t len, double ratio, int64_t min_len)
{
    int64_t lo = (int64_t)floor((double)len * (1.0 - ratio));
    int64_t hi = (int64_t)ceil((double)len * (1.0 + ratio));
    if (lo < min_len)
        lo = min_len;
    if (hi < lo)
        hi = lo;
    return mm_rng_int(r, lo, hi);
}

/* ---- byte buffer -------------------------------------------------------- */
static bool buf_reserve(struct mm_buf *b, size_t extra)
{
    if (b->failed)
        return false;
    if (extra >= SIZE_MAX / 2 - b->len) {
        b->failed = true;
        return false;
    }
    const size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void mm_buf_append(struct mm_buf *b, const char *s, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void mm_buf_puts(struct mm_buf *b, const char *s) { mm_buf_append(b, s, strlen(s)); }

void mm_buf_printf(struct mm_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_reserve(b, (size_t)n)) {
        b->failed = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void mm_buf_json_string(struct mm_buf *b, const char *s)
{
    mm_buf_append(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            const char esc[2] = {'\\', (char)*c};
            mm_buf_append(b, esc, 2);
        } else if (*c < 0x20) {
            mm_buf_printf(b, "\\u%04x", *c);
        } else {
            mm_buf_append(b, (const char *)c, 1);
        }
    }
    mm_buf_append(b, "\"", 1);
}

void mm_buf_free(struct mm_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

void mm_buf_base64(struct mm_buf *b, const uint8_t *in, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (n > SIZE_MAX / 4 * 3 - 3 || !buf_reserve(b, (n + 2) / 3 * 4))
        return;
    char *o = b->p + b->len;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        const uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (i < n) {
        const uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    b->len = (size_t)(o - b->p);
    b->p[b->len] = '\0';
}

/* ---- prompts and bodies ------------------------------------------------- */
/* Common short English words: most are one token for a BPE vocabulary, so a
 * text prompt of N words lands near N tokens (usage reports the truth). */
static const char *const words[] = {
    "the",   "of",    "and",   "to",     "in",   "is",   "you",   "that",   "it",    "he",
    "was",   "for",   "on",    "are",    "as",   "with", "his",   "they",   "at",    "be",
    "this",  "have",  "from",  "or",     "one",  "had",  "by",    "word",   "but",   "not",
    "what",  "all",   "were",  "we",     "when", "your", "can",   "said",   "there", "use",
    "an",    "each",  "which", "she",    "do",   "how",  "their", "if",     "will",  "up",
    "other", "about", "out",   "many",   "then", "them", "these", "so",     "some",  "her",
    "would", "make",  "like",  "him",    "into", "time", "has",   "look",   "two",   "more",
    "write", "go",    "see",   "number", "no",   "way",  "could", "people", "my",    "than",
    "first", "water", "been",  "call",   "who",  "oil",  "its",   "now",    "find",  "long",
    "down",  "day",   "did",   "get",    "come", "made", "may",   "part",   "cat",   "sun",
};
#define N_WORDS ((int64_t)(sizeof(words) / sizeof(words[0])))

/* Appends n prompt units (token ids or words) from r, comma- or space-separated. */
static void append_units(const struct mm_workload *w, struct mm_rng *r, int64_t n, bool first,
                         struct mm_buf *b)
{
    for (int64_t i = 0; i < n && !b->failed; i++) {
        if (w->prompt_kind == MM_PROMPT_TOKEN_IDS) {
            mm_buf_printf(b, first && i == 0 ? "%lld" : ",%lld",
                          (long long)mm_rng_int(r, w->vocab_lo, w->vocab_hi - 1));
        } else {
            if (!(first && i == 0))
                mm_buf_append(b, " ", 1);
            mm_buf_puts(b, words[mm_rng_int(r, 0, N_WORDS - 1)]);
        }
    }
}

/* The prompt: the shared prefix (same for every request), then the request's own units. */
static void append_prompt(const struct mm_workload *w, int64_t index, int64_t input_len,
                          struct mm_buf *b)
{
    struct mm_rng r;
    const int64_t prefix = w->prefix_len < input_len ? w->prefix_len : input_len;
    mm_rng_seed(&r, w->seed ^ 0x5bd1e995ULL);
    append_units(w, &r, prefix, true, b);
    mm_rng_seed(&r, w->seed * 0x9e3779b97f4a7c15ULL + (uint64_t)index + 1);
    append_units(w, &r, input_len - prefix, prefix == 0, b);
}

enum mm_status mm_workload_body(const struct mm_workload *w, int64_t index, int64_t input_len,
                                int64_t output_len, bool with_image, struct mm_buf *b,
                                struct mm_err *err)
{
    b->len = 0;
    b->failed = false;
    if (w->api == MM_API_CHAT && w->prompt_kind == MM_PROMPT_TOKEN_IDS)
        return mm_err_set(err, MM_ERR_INVALID, "chat requests take text prompts, not token ids");
    if (w->api == MM_API_COMPLETIONS && w->prompt_kind == MM_PROMPT_TOKEN_IDS &&
        w->vocab_hi <= w->vocab_lo)
        return mm_err_set(err, MM_ERR_INVALID, "empty token-id range [%lld, %lld)",
                          (long long)w->vocab_lo, (long long)w->vocab_hi);
    if (with_image && (w->api != MM_API_CHAT || !w->image_data_url))
        return mm_err_set(err, MM_ERR_INVALID, "images go with chat requests and an image file");
    mm_buf_puts(b, "{\"model\":");
    mm_buf_json_string(b, w->model);
    if (w->api == MM_API_COMPLETIONS) {
        const bool ids = w->prompt_kind == MM_PROMPT_TOKEN_IDS;
        mm_buf_puts(b, ids ? ",\"prompt\":[" : ",\"prompt\":\"");
        append_prompt(w, index, input_len, b);
        mm_buf_puts(b, ids ? "]" : "\"");
        mm_buf_printf(b, ",\"max_tokens\":%lld", (long long)output_len);
    } else {
        mm_buf_puts(b, ",\"messages\":[{\"role\":\"user\",\"content\":[");
        if (with_image) {
            mm_buf_puts(b, "{\"type\":\"image_url\",\"image_url\":{\"url\":");
            mm_buf_json_string(b, w->image_data_url);
            mm_buf_puts(b, "}},");
        }
        mm_buf_puts(b, "{\"type\":\"text\",\"text\":\"");
        append_prompt(w, index, input_len, b);
        mm_buf_puts(b, "\"}]}]");
        mm_buf_printf(b, ",\"max_completion_tokens\":%lld", (long long)output_len);
    }
    mm_buf_puts(b, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    if (w->ignore_eos)
        mm_buf_puts(b, ",\"ignore_eos\":true");
    if (w->temperature >= 0)
        mm_buf_printf(b, ",\"temperature\":%.17g", w->temperature);
    if (w->top_p >= 0)
        mm_buf_printf(b, ",\"top_p\":%.17g", w->top_p);
    if (w->top_k >= 0)
        mm_buf_printf(b, ",\"top_k\":%lld", (long long)w->top_k);
    if (w->extra_body && w->extra_body[0]) {
        mm_buf_append(b, ",", 1);
        mm_buf_puts(b, w->extra_body);
    }
    mm_buf_puts(b, "}");
    if (b->failed)
        return mm_err_set(err, MM_ERR_NOMEM, "request body of %lld prompt tokens",
                          (long long)input_len);
    return MM_OK;
}

static const char *image_mime(const uint8_t *p, size_t n)
{
    if (n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
        return "image/png";
    if (n >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff)
        return "image/jpeg";
    if (n >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0))
        return "image/gif";
    if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return "image/webp";
    return NULL;
}

enum mm_status mm_workload_image_url(const char *path, char **out, struct mm_err *err)
{
    char *data = NULL;
    size_t n = 0;
    *out = NULL;
    enum mm_status st = mm_file_read_all(path, (size_t)64 << 20, &data, &n, err);
    if (st != MM_OK)
        return st;
    const char *mime = image_mime((const uint8_t *)data, n);
    if (!mime) {
        free(data);
        return mm_err_set(err, MM_ERR_FORMAT, "%s: not a PNG, JPEG, GIF or WebP file", path);
    }
    struct mm_buf b = {0};
    mm_buf_printf(&b, "data:%s;base64,", mime);
    mm_buf_base64(&b, (const uint8_t *)data, n);
    free(data);
    if (b.failed) {
        mm_buf_free(&b);
        return mm_err_set(err, MM_ERR_NOMEM, "%s: base64 of %zu bytes", path, n);
    }
    *out = b.p;
    return MM_OK;
}
