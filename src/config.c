/* config.c: the one table of daemon options (config.h) and the three things
 * made from it: the configuration file reader, the flag parser and the
 * help/example-file printers.
 *
 * Design: each row names a field of struct mm_daemon_config by offset, with
 * its type, default (as text, parsed by the same code as user input, so a
 * default can never be something a user could not write), range or choices,
 * units and the comment that goes into etc/mmmambad.conf. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

enum opt_type {
    OPT_STRING = 0,
    OPT_INT,  /* int64_t within [min, max] */
    OPT_SIZE, /* size_t bytes, suffixes k/m/g, within [min, max] */
    OPT_BOOL, /* yes|no */
    OPT_ENUM, /* a string from choices ("a|b|c") */
};

struct option_row {
    const char *name; /* file name; the flag is "--" + name with '_' -> '-' */
    enum opt_type type;
    size_t offset;
    const char *def;
    int64_t min, max;    /* OPT_INT, OPT_SIZE */
    const char *choices; /* OPT_ENUM */
    const char *units;   /* shown in help and in the file; NULL if none */
    const char *section; /* starts a new section in the file when set */
    const char *help;    /* one or more lines */
};

#define OFF(field) offsetof(struct mm_daemon_config, field)
#define KIB ((int64_t)1 << 10)
#define MIB ((int64_t)1 << 20)
#define GIB ((int64_t)1 << 30)

static const struct option_row options[] = {
    {"host", OPT_STRING, OFF(host), "127.0.0.1", 0, 0, NULL, NULL, "Network",
     "Address to listen on (an IPv4 or IPv6 literal). 0.0.0.0 or :: listens on\n"
     "every interface: set api_keys or api_key_file first."},
    {"port", OPT_INT, OFF(port), "8000", 0, 65535, NULL, NULL, NULL,
     "TCP port (0: any free port; the chosen one is logged)."},
    {"http_threads", OPT_INT, OFF(http_threads), "4", 1, 256, NULL, "threads", NULL,
     "HTTP event-loop threads, each multiplexing many connections with epoll, and\n"
     "as many workers that parse requests, decode images and tokenize."},
    {"max_connections", OPT_INT, OFF(max_connections), "1024", 1, 1000000, NULL, "connections",
     NULL,
     "Open connections at most (idle, streaming and waiting alike); more are\n"
     "refused at accept. The systemd unit raises the file limit to match."},
    {"connection_timeout", OPT_INT, OFF(connection_timeout), "60", 1, 86400, NULL, "seconds", NULL,
     "A connection that sends nothing for this long while a request is being read,\n"
     "or idles between requests, is closed. Streams that are waiting for tokens do not\n"
     "time out."},
    {"max_header_bytes", OPT_SIZE, OFF(max_header_bytes), "32k", 4 * KIB, 16 * MIB, NULL, "bytes",
     NULL, "Request line plus headers at most; larger requests get 431."},
    {"max_body_bytes", OPT_SIZE, OFF(max_body_bytes), "32m", 1 * KIB, 4 * GIB, NULL, "bytes", NULL,
     "Request body at most (base64 images included); larger bodies get 413, from\n"
     "Content-Length before any of the body is read."},

    {"model", OPT_STRING, OFF(model), "", 0, 0, NULL, NULL, "Model and engine",
     "Checkpoint directory (config.json, safetensors, tokenizer). Required; the\n"
     "systemd unit expects it here."},
    {"served_model_name", OPT_STRING, OFF(served_model_name), "", 0, 0, NULL, NULL, NULL,
     "Model id clients send and /v1/models lists (empty: the directory's name)."},
    {"backend", OPT_ENUM, OFF(backend), "auto", 0, 0, "auto|cpu|cuda|cuda-fp32", NULL, NULL,
     "Compute backend; auto is cuda when this build has it, else cpu. cuda-fp32\n"
     "keeps fp32 weights and activations on the GPU (twice the memory, slower): a\n"
     "sequence's tokens then do not depend on what it is batched with, as on cpu."},
    {"devices", OPT_STRING, OFF(devices), "0", 0, 0, NULL, NULL, NULL,
     "GPUs to serve on: CUDA device indices (\"0,1\") or all. Each gets its own\n"
     "engine (a full copy of the weights, its own state slots, KV blocks and engine\n"
     "thread) behind the one HTTP front; each request runs whole on the least\n"
     "loaded one. max_seqs, kv_memory and max_queue are per engine. The CPU\n"
     "backend runs one engine per listed entry, or N for a single number N (0 is\n"
     "one), splitting `threads` between them."},
    {"threads", OPT_INT, OFF(threads), "0", 0, 4096, NULL, "threads", NULL,
     "CPU backend worker threads, shared by its engines (0: one per CPU)."},
    {"max_seqs", OPT_INT, OFF(max_seqs), "8", 1, 4096, NULL, "sequences", NULL,
     "State slots: sequences decoded together. Each holds a fixed-size recurrent\n"
     "state (and, for hybrid models, grows KV blocks)."},
    {"state_dtype", OPT_ENUM, OFF(state_dtype), "fp32", 0, 0, "fp32|bf16", NULL, NULL,
     "Precision of the recurrent state between steps (bf16 halves its memory)."},
    {"kv_memory", OPT_SIZE, OFF(kv_memory), "0", 0, (int64_t)1 << 40, NULL, "bytes", NULL,
     "Memory for the KV blocks of attention layers (hybrid and teacher\n"
     "checkpoints; a linear model has none). 0: enough for every slot to reach\n"
     "max_model_len. Less makes the scheduler wait or preempt when it runs dry."},
    {"gpu_memory_percent", OPT_INT, OFF(gpu_memory_percent), "0", 0, 100, NULL, "percent", NULL,
     "CUDA: share of the GPU memory left after the weights and scratch that the\n"
     "state slots (and, with kv_memory 0, their KV blocks) may take. 0: max_seqs\n"
     "slots exactly. Above 0, max_seqs (and max_batch_tokens) is an upper bound and\n"
     "the start-up log gives the number that fit."},
    {"max_batch_tokens", OPT_INT, OFF(max_batch_tokens), "2048", 16, 1 << 20, NULL, "tokens", NULL,
     "Tokens in one engine step: decodes plus prefill chunks. Long prompts are\n"
     "prefilled in chunks of this size so running streams keep flowing."},
    {"max_model_len", OPT_INT, OFF(max_model_len), "32768", 16, 1 << 24, NULL, "tokens", NULL,
     "Longest sequence, prompt plus completion. Longer prompts get 400."},
    {"max_queue", OPT_INT, OFF(max_queue), "256", 1, 1000000, NULL, "requests", NULL,
     "Requests waiting for a slot at most; more get 429 with Retry-After."},
    {"state_cache_bytes", OPT_SIZE, OFF(state_cache_bytes), "4g", 0, (int64_t)1 << 50, NULL,
     "bytes", NULL,
     "Host RAM for the state cache: the saved state (plus, for hybrid and teacher\n"
     "models, the KV blocks) of finished answers and prefilled prompts, so a\n"
     "request that begins with one (a multi-turn chat re-sending its history)\n"
     "prefills only the rest. Least recently used states go first. 0 keeps no\n"
     "states at all, in any tier."},
    {"state_cache_gpu", OPT_BOOL, OFF(state_cache_gpu), "yes", 0, 0, NULL, NULL, NULL,
     "With a state cache, also keep states in state slots no request is using\n"
     "(running requests always take them back first; an evicted state moves to\n"
     "host RAM)."},
    {"state_cache_dir", OPT_STRING, OFF(state_cache_dir), "", 0, 0, NULL, NULL, NULL,
     "A directory (created if missing) for the state cache's disk tier: states\n"
     "evicted from host RAM are written there, found again by the same lookup\n"
     "and read back on a hit, and on shutdown every kept state is written there,\n"
     "so conversations (stored /v1/responses too) resume after a restart. Files\n"
     "of another model, damaged or cut-short ones are never used. Empty: no\n"
     "disk tier (a restart forgets every state and stored response)."},
    {"state_cache_disk_bytes", OPT_SIZE, OFF(state_cache_disk_bytes), "16g", 1, (int64_t)1 << 50,
     NULL, "bytes", NULL,
     "Disk space the disk tier may use (with state_cache_dir); the least recently\n"
     "used files go first."},

    {"max_prompt_bytes", OPT_SIZE, OFF(max_prompt_bytes), "1m", 1 * KIB, 1 * GIB, NULL, "bytes",
     "Request limits",
     "Text of one request (all messages, or all prompts) at most, checked before\n"
     "tokenizing (the tokenizer needs ~45 bytes of scratch per input byte); more\n"
     "gets 413."},
    {"max_n", OPT_INT, OFF(max_n), "8", 1, 128, NULL, "choices", NULL,
     "Largest n (completions per request)."},
    {"max_images", OPT_INT, OFF(max_images), "8", 0, 256, NULL, "images", NULL,
     "Images in one request at most (0 refuses images)."},
    {"max_image_bytes", OPT_SIZE, OFF(max_image_bytes), "16m", 1 * KIB, 1 * GIB, NULL, "bytes",
     NULL, "One encoded image (after base64 decoding) at most."},
    {"max_image_pixels", OPT_INT, OFF(max_image_pixels), "16777216", 1, 400000000, NULL, "pixels",
     NULL,
     "Width x height from an image's header at most, checked before decoding (12\n"
     "tiles need ~2.4 Mpx; the default admits 4096x4096 photos)."},
    {"max_tiles_per_request", OPT_INT, OFF(max_tiles_per_request), "64", 1, 4096, NULL, "tiles",
     NULL, "448x448 tiles over all images of a request (thumbnails included)."},
    {"image_decoders", OPT_INT, OFF(image_decoders), "2", 1, 256, NULL, "images", NULL,
     "Images decoded and tiled at the same time at most (each can take ~100 MB and\n"
     "a CPU core for 0.1-1 s); further requests wait their turn."},
    {"file_root", OPT_STRING, OFF(file_root), "", 0, 0, NULL, NULL, NULL,
     "Directory that file:// image URLs may read from (after following every\n"
     "symlink). Empty refuses file:// URLs. Remote (http/https) URLs are always\n"
     "refused."},

    {"api_keys", OPT_STRING, OFF(api_keys), "", 0, 0, NULL, NULL, "Security",
     "Comma-separated API keys; clients send `Authorization: Bearer KEY`. With no\n"
     "keys (here or in api_key_file) every request is served. /health stays open."},
    {"api_key_file", OPT_STRING, OFF(api_key_file), "", 0, 0, NULL, NULL, NULL,
     "File with one API key per line (blank lines and # comments ignored), read\n"
     "at start; its keys add to api_keys."},

    {"responses_max", OPT_INT, OFF(responses_max), "10000", 0, 100000000, NULL, "responses",
     "Stored responses",
     "Finished /v1/responses answers kept for previous_response_id, GET and\n"
     "DELETE (store: true, the default), least recently used dropped first. Each\n"
     "keeps the token ids its conversation consumed and its images as 8-bit tiles\n"
     "(602 KB a tile), shared with the conversation's other responses. 0 keeps\n"
     "none. Kept in memory only: a restart forgets them."},
    {"responses_max_bytes", OPT_SIZE, OFF(responses_max_bytes), "1g", 0, (int64_t)1 << 40, NULL,
     "bytes", NULL, "Memory of the stored responses at most (ids, images and answers)."},

    {"log_level", OPT_ENUM, OFF(log_level), "info", 0, 0, "debug|info|warn|error", NULL,
     "Operations", "Diagnostics to stderr (the journal under systemd) at this level and above."},
    {"access_log", OPT_BOOL, OFF(access_log), "yes", 0, 0, NULL, NULL, NULL,
     "One line per request: id, method, path, status, prompt and completion\n"
     "tokens, time to first token, duration."},
    {"drain_timeout", OPT_INT, OFF(drain_timeout), "30", 0, 3600, NULL, "seconds", NULL,
     "On SIGTERM/SIGINT: stop accepting, let running requests finish for this\n"
     "long, then cancel the rest and exit. The systemd unit's stop timeout is\n"
     "longer."},
    {"ping_interval", OPT_INT, OFF(ping_interval), "5000", 100, 600000, NULL, "milliseconds", NULL,
     "A stream that produced nothing for this long (a long prompt being\n"
     "prefilled) gets an SSE comment (`: ping`) so proxies keep it open."},
};

#define N_OPTIONS (sizeof options / sizeof options[0])

/* Options the example file sets (live lines); the rest are shown commented
 * out with their defaults. */
static const struct {
    const char *name, *value;
} file_examples[] = {{"model", "/var/lib/mmmambad/model"}};

static const char *file_example(const char *name)
{
    for (size_t i = 0; i < sizeof file_examples / sizeof file_examples[0]; i++)
        if (strcmp(file_examples[i].name, name) == 0)
            return file_examples[i].value;
    return NULL;
}

bool mm_parse_size(const char *s, size_t *out)
{
    if (!s || !isdigit((unsigned char)s[0]))
        return false;
    char *end;
    errno = 0;
    const unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return false;
    unsigned shift = 0;
    if (*end) {
        switch (tolower((unsigned char)*end)) {
        case 'k':
            shift = 10;
            break;
        case 'm':
            shift = 20;
            break;
        case 'g':
            shift = 30;
            break;
        default:
            return false;
        }
        end++;
        if (*end == 'b' || *end == 'B')
            end++;
        if (*end)
            return false;
    }
    if (v > (unsigned long long)SIZE_MAX >> shift)
        return false;
    *out = (size_t)v << shift;
    return true;
}

static bool parse_int(const char *s, int64_t *out)
{
    if (!s || !(isdigit((unsigned char)s[0]) || (s[0] == '-' && isdigit((unsigned char)s[1]))))
        return false;
    char *end;
    errno = 0;
    const long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

static bool in_choices(const char *choices, const char *v)
{
    const size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        const size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0 && n > 0)
            return true;
        p += len + (bar != NULL);
    }
    return false;
}

/* Finds a row by name, accepting dashes for underscores. */
static const struct option_row *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const char *o = options[i].name;
        if (strlen(o) != len)
            continue;
        size_t k = 0;
        for (; k < len; k++) {
            const char c = name[k] == '-' ? '_' : name[k];
            if (c != o[k])
                break;
        }
        if (k == len)
            return &options[i];
    }
    return NULL;
}

static enum mm_status set_row(struct mm_daemon_config *c, const struct option_row *o,
                              const char *value, struct mm_err *err)
{
    char *field = (char *)c + o->offset;
    switch (o->type) {
    case OPT_STRING:
    case OPT_ENUM: {
        if (o->type == OPT_ENUM && !in_choices(o->choices, value))
            return mm_err_set(err, MM_ERR_INVALID, "%s: \"%s\" is not one of %s", o->name, value,
                              o->choices);
        char *copy = strdup(value);
        if (!copy)
            return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        free(*(char **)field);
        *(char **)field = copy;
        return MM_OK;
    }
    case OPT_INT: {
        int64_t v;
        if (!parse_int(value, &v) || v < o->min || v > o->max)
            return mm_err_set(err, MM_ERR_INVALID, "%s: \"%s\" is not an integer in [%lld, %lld]",
                              o->name, value, (long long)o->min, (long long)o->max);
        *(int64_t *)field = v;
        return MM_OK;
    }
    case OPT_SIZE: {
        size_t v;
        if (!mm_parse_size(value, &v) || v < (size_t)o->min || v > (size_t)o->max)
            return mm_err_set(err, MM_ERR_INVALID,
                              "%s: \"%s\" is not a size in [%lld, %lld] bytes (suffixes k, m, g)",
                              o->name, value, (long long)o->min, (long long)o->max);
        *(size_t *)field = v;
        return MM_OK;
    }
    case OPT_BOOL:
        if (strcmp(value, "yes") == 0)
            *(bool *)field = true;
        else if (strcmp(value, "no") == 0)
            *(bool *)field = false;
        else
            return mm_err_set(err, MM_ERR_INVALID, "%s: \"%s\" is not yes or no", o->name, value);
        return MM_OK;
    }
    return mm_err_set(err, MM_ERR_INVALID, "%s: bad option type", o->name);
}

enum mm_status mm_daemon_config_init(struct mm_daemon_config *c, struct mm_err *err)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const enum mm_status st = set_row(c, &options[i], options[i].def, err);
        if (st != MM_OK) {
            mm_daemon_config_free(c);
            return st;
        }
    }
    return MM_OK;
}

void mm_daemon_config_free(struct mm_daemon_config *c)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (options[i].type == OPT_STRING || options[i].type == OPT_ENUM) {
            char **p = (char **)((char *)c + options[i].offset);
            free(*p);
            *p = NULL;
        }
    }
}

enum mm_status mm_daemon_config_set(struct mm_daemon_config *c, const char *name, const char *value,
                                    struct mm_err *err)
{
    const struct option_row *o = find_option(name, strlen(name));
    if (!o)
        return mm_err_set(err, MM_ERR_INVALID, "unknown option \"%s\"", name);
    return set_row(c, o, value, err);
}

/* Strips surrounding blanks in place; returns the start. */
static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

enum mm_status mm_daemon_config_load_file(struct mm_daemon_config *c, const char *path,
                                          struct mm_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return mm_err_set(err, MM_ERR_IO, "%s: %s", path, strerror(errno));
    char line[8192];
    int lineno = 0;
    enum mm_status st = MM_OK;
    while (st == MM_OK && fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            st = mm_err_set(err, MM_ERR_FORMAT, "%s:%d: line too long", path, lineno);
            break;
        }
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char *sp = s;
        while (*sp && *sp != ' ' && *sp != '\t')
            sp++;
        const size_t name_len = (size_t)(sp - s);
        char *value = trim(sp);
        /* a value may be quoted to hold blanks or be empty */
        const size_t vlen = strlen(value);
        if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
            value[vlen - 1] = '\0';
            value++;
        }
        const struct option_row *o = find_option(s, name_len);
        if (!o) {
            st = mm_err_set(err, MM_ERR_INVALID, "%s:%d: unknown option \"%.*s\"", path, lineno,
                            (int)name_len, s);
            break;
        }
        st = set_row(c, o, value, err);
        if (st != MM_OK)
            mm_err_prefix(err, "%s:%d", path, lineno);
    }
    if (st == MM_OK && ferror(f))
        st = mm_err_set(err, MM_ERR_IO, "%s: read error", path);
    fclose(f);
    return st;
}

/* Splits "--name=value" / "--name value"; returns the row or NULL. */
static const struct option_row *flag_row(const char *arg, const char **inline_value)
{
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    *inline_value = eq ? eq + 1 : NULL;
    return find_option(name, eq ? (size_t)(eq - name) : strlen(name));
}

enum mm_status mm_daemon_config_parse_args(struct mm_daemon_config *c, int argc, char **argv,
                                           enum mm_config_action *action, struct mm_err *err)
{
    *action = MM_CONFIG_RUN;
    /* pass 1: the configuration file and the actions */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *action = MM_CONFIG_HELP;
            return MM_OK;
        }
        if (strcmp(a, "--version") == 0) {
            *action = MM_CONFIG_VERSION;
            return MM_OK;
        }
        if (strcmp(a, "--print-config") == 0) {
            *action = MM_CONFIG_PRINT;
            continue;
        }
        if (strncmp(a, "--config", 8) == 0 && (a[8] == '\0' || a[8] == '=')) {
            const char *path = a[8] == '=' ? a + 9 : (i + 1 < argc ? argv[++i] : NULL);
            if (!path)
                return mm_err_set(err, MM_ERR_INVALID, "--config needs a file name");
            const enum mm_status st = mm_daemon_config_load_file(c, path, err);
            if (st != MM_OK)
                return st;
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0')
            return mm_err_set(err, MM_ERR_INVALID, "unexpected argument \"%s\" (see --help)", a);
        const char *inline_value;
        if (!flag_row(a, &inline_value))
            return mm_err_set(err, MM_ERR_INVALID, "unknown option \"%s\" (see --help)", a);
        if (!inline_value && ++i >= argc)
            return mm_err_set(err, MM_ERR_INVALID, "%s needs a value", a);
    }
    /* pass 2: every other flag, in order, over the file */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--print-config") == 0)
            continue;
        if (strncmp(a, "--config", 8) == 0 && (a[8] == '\0' || a[8] == '=')) {
            i += a[8] == '\0';
            continue;
        }
        const char *value;
        const struct option_row *o = flag_row(a, &value);
        if (!value)
            value = argv[++i];
        const enum mm_status st = set_row(c, o, value, err);
        if (st != MM_OK)
            return mm_err_prefix(err, "--%s", a + 2);
    }
    return MM_OK;
}

enum mm_status mm_daemon_config_check(const struct mm_daemon_config *c, struct mm_err *err)
{
    if (!c->model[0])
        return mm_err_set(err, MM_ERR_INVALID,
                          "no model: set `model` in the configuration file or pass --model DIR");
    if (c->max_tiles_per_request < 1)
        return mm_err_set(err, MM_ERR_INVALID, "max_tiles_per_request must be at least 1");
    int ids[MM_MAX_DEVICES], n;
    bool all;
    return mm_parse_devices(c->devices, ids, &n, &all, err);
}

enum mm_status mm_parse_devices(const char *s, int ids[MM_MAX_DEVICES], int *n, bool *all,
                                struct mm_err *err)
{
    *n = 0;
    *all = strcmp(s, "all") == 0;
    if (*all)
        return MM_OK;
    for (const char *p = s;;) {
        int64_t v;
        char num[24];
        const size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof num)
            break;
        memcpy(num, p, len);
        num[len] = '\0';
        if (!parse_int(num, &v) || v < 0 || v > 1023 || *n == MM_MAX_DEVICES)
            break;
        for (int i = 0; i < *n; i++)
            if (ids[i] == (int)v)
                return mm_err_set(err, MM_ERR_INVALID, "devices: \"%s\" names device %d twice", s,
                                  (int)v);
        ids[(*n)++] = (int)v;
        if (!p[len])
            return MM_OK;
        p += len + 1;
    }
    return mm_err_set(err, MM_ERR_INVALID,
                      "devices: \"%s\" is not `all` or a comma-separated list of at most %d "
                      "device indices (0..1023)",
                      s, MM_MAX_DEVICES);
}

static void flag_name(const char *name, char *out, size_t cap)
{
    size_t i = 0;
    for (; name[i] && i + 1 < cap; i++)
        out[i] = name[i] == '_' ? '-' : name[i];
    out[i] = '\0';
}

static const char *value_hint(const struct option_row *o)
{
    switch (o->type) {
    case OPT_INT:
        return "N";
    case OPT_SIZE:
        return "BYTES";
    case OPT_BOOL:
        return "yes|no";
    case OPT_ENUM:
        return o->choices;
    default:
        return "TEXT";
    }
}

void mm_daemon_config_print_help(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [--config FILE] [--OPTION VALUE]...\n"
            "\n"
            "Serves an mmMamba checkpoint over an OpenAI-compatible HTTP API.\n"
            "Options come from the configuration file, then the flags (flags win);\n"
            "each file option NAME is the flag --NAME with '_' written '-'.\n"
            "\n"
            "  --config FILE        read options from FILE (see etc/mmmambad.conf)\n"
            "  --print-config       print the commented configuration file with every default\n"
            "  --help, --version\n",
            prog);
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct option_row *o = &options[i];
        if (o->section)
            fprintf(f, "\n%s:\n", o->section);
        char flag[64];
        flag_name(o->name, flag, sizeof flag);
        char left[128];
        snprintf(left, sizeof left, "--%s %s", flag, value_hint(o));
        fprintf(f, "  %-34s ", left);
        /* the first help line, then the default */
        const char *nl = strchr(o->help, '\n');
        fprintf(f, "%.*s\n", nl ? (int)(nl - o->help) : (int)strlen(o->help), o->help);
        for (const char *p = nl; p; p = nl) {
            p++;
            nl = strchr(p, '\n');
            fprintf(f, "  %-34s %.*s\n", "", nl ? (int)(nl - p) : (int)strlen(p), p);
        }
        fprintf(f, "  %-34s (default: %s%s%s)\n", "", o->def[0] ? o->def : "\"\"",
                o->units ? " " : "", o->units ? o->units : "");
    }
}

void mm_daemon_config_print_file(FILE *f)
{
    fputs("# mmmambad.conf: configuration of the mmmambad daemon.\n"
          "#\n"
          "# One option per line: NAME VALUE. Blank lines and lines starting with #\n"
          "# are ignored; a value may be quoted (\"\" for empty). Sizes take the\n"
          "# suffixes k, m and g (binary: 1k = 1024 bytes). Every option can also be\n"
          "# given as a flag, --NAME VALUE with '_' written '-', which overrides this\n"
          "# file. Each option below is shown commented out with its default.\n"
          "#\n"
          "# Generated by `mmmambad --print-config`; the test suite checks that this\n"
          "# file and the program agree.\n",
          f);
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct option_row *o = &options[i];
        if (o->section)
            fprintf(f, "\n################################ %s ################################\n",
                    o->section);
        fputc('\n', f);
        for (const char *p = o->help; p;) {
            const char *nl = strchr(p, '\n');
            fprintf(f, "# %.*s\n", nl ? (int)(nl - p) : (int)strlen(p), p);
            p = nl ? nl + 1 : NULL;
        }
        if (o->type == OPT_ENUM)
            fprintf(f, "# One of: %s.\n", o->choices);
        if (o->units)
            fprintf(f, "# Units: %s.\n", o->units);
        if (file_example(o->name))
            fprintf(f, "%s %s\n", o->name, file_example(o->name));
        else if (o->def[0])
            fprintf(f, "# %s %s\n", o->name, o->def);
        else
            fprintf(f, "# %s \"\"\n", o->name);
    }
}
