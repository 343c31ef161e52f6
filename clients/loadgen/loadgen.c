/* loadgen.c: `mmmamba-loadgen`, a load generator for OpenAI-compatible
 * servers (mmmambad first) modelled on vLLM's `vllm bench serve`: the same
 * flag names, metric definitions and JSON keys, so scripts carry over.
 *
 * Design: this file only parses flags, finds the model, waits for readiness
 * and writes the report; driver.c runs the requests, report.c does the
 * arithmetic. Exit status: 0 when the benchmark ran (failed requests are
 * results, counted in the report), 1 on a setup error, 2 on bad usage. */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "loadgen/driver.h"
#include "loadgen/report.h"
#include "loadgen/workload.h"

#define MAX_HEADERS 32

static void usage(FILE *f)
{
    fputs(
        "usage: mmmamba-loadgen [options]\n"
        "Benchmarks an OpenAI-compatible server with streamed requests (flags as vLLM's\n"
        "`vllm bench serve`).\n"
        "\n"
        "Target:\n"
        "  --base-url URL            server root (default http://HOST:PORT)\n"
        "  --host H / --port P       used when --base-url is absent (127.0.0.1, 8000)\n"
        "  --endpoint PATH           /v1/completions (default) or /v1/chat/completions\n"
        "  --backend B               openai (completions) or openai-chat; default from --endpoint\n"
        "  --model M                 model to request (default: the first of GET /v1/models)\n"
        "  --served-model-name M     name sent in requests when it differs from --model\n"
        "  --header 'K: V' | K=V     extra request header (repeatable); the API key comes from\n"
        "                            MMMAMBA_API_KEY or OPENAI_API_KEY\n"
        "  --ready-check-timeout-sec S  wait up to S s for GET /health to answer 200 (default 0)\n"
        "Load:\n"
        "  --num-prompts N           requests to send (default 1000)\n"
        "  --request-rate R          requests/s, Poisson arrivals (default inf: all at once)\n"
        "  --burstiness B            gamma shape of the arrival gaps (1 = Poisson; <1 burstier)\n"
        "  --max-concurrency C       at most C requests in flight (default: unlimited)\n"
        "  --request-timeout S       give up on a request after S s (default 21600)\n"
        "Requests (--dataset-name random):\n"
        "  --random-input-len N      prompt tokens (default 1024)\n"
        "  --random-output-len N     max tokens to generate (default 128)\n"
        "  --random-range-ratio R    lengths uniform in [N(1-R), N(1+R)] (default 0)\n"
        "  --random-prefix-len N     a prefix of N tokens shared by all prompts (default 0)\n"
        "  --random-prompt K         token-ids (exact lengths; /v1/completions only) or text\n"
        "                            (generated words; the server's usage gives the length);\n"
        "                            default token-ids for completions, text for chat\n"
        "  --vocab-size V            random token ids are drawn from [3, V) (default 1000)\n"
        "  --image FILE              attach FILE (PNG/JPEG/GIF/WebP) as a data: URL (chat)\n"
        "  --image-ratio F           fraction of requests with the image (default 1)\n"
        "  --ignore-eos              ask the server to ignore EOS so output lengths hold\n"
        "  --temperature T, --top-p P, --top-k K   sampling (default temperature 0)\n"
        "  --extra-body JSON         an object whose members are added to every request\n"
        "  --seed S                  random seed (default 0)\n"
        "  --long-prompt-len N       also send one request of N prompt tokens ...\n"
        "  --long-prompt-at S        ... S s after the start (default 5), outside the schedule\n"
        "  --long-prompt-output-len N  its max tokens (default 16); the report gives its TTFT and\n"
        "                            the other streams' ITL during its prefill\n"
        "Results:\n"
        "  --percentile-metrics L    of ttft,tpot,itl,e2el (default all four)\n"
        "  --metric-percentiles L    e.g. 50,90,99 (default 90,99)\n"
        "  --goodput K:MS ...        SLOs for request_goodput, K of ttft, tpot, e2el (e.g.\n"
        "                            --goodput ttft:500 tpot:50)\n"
        "  --save-result             write the JSON result file\n"
        "  --save-detailed           include per-request arrays (ttfts, itls, ...)\n"
        "  --result-dir DIR          where to write it (default .)\n"
        "  --result-filename F       its name (implies --save-result)\n"
        "  --label L                 a name for the run in the result\n"
        "  --metadata K=V            extra result keys (repeatable)\n"
        "  --disable-tqdm            no progress line\n",
        f);
}

/* A long option's parsed value as a number, or a usage error. */
static int parse_f64(const char *name, const char *s, double *out)
{
    char *end;
    errno = 0;
    const double v = strtod(s, &end);
    if (errno || end == s || *end) {
        fprintf(stderr, "mmmamba-loadgen: --%s: not a number: '%s'\n", name, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_i64(const char *name, const char *s, int64_t lo, int64_t *out)
{
    char *end;
    errno = 0;
    const long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo) {
        fprintf(stderr, "mmmamba-loadgen: --%s: want an integer >= %lld, not '%s'\n", name,
                (long long)lo, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* GETs url into *body (caller frees); returns the HTTP status or 0. */
static long http_get(const char *url, struct curl_slist *headers, long timeout_ms,
                     struct mm_buf *body)
{
    CURL *e = curl_easy_init();
    if (!e)
        return 0;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, (curl_write_callback)NULL);
    FILE *mem = NULL;
    char *buf = NULL;
    size_t len = 0;
    mem = open_memstream(&buf, &len);
    long status = 0;
    if (mem) {
        curl_easy_setopt(e, CURLOPT_WRITEDATA, mem);
        if (curl_easy_perform(e) == CURLE_OK)
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        fclose(mem);
        mm_buf_append(body, buf ? buf : "", len);
        free(buf);
    }
    curl_easy_cleanup(e);
    return status;
}

/* The id of the first model the server lists, or NULL (caller frees). */
static char *first_model(const char *base, struct curl_slist *headers)
{
    struct mm_buf url = {0}, body = {0};
    mm_buf_printf(&url, "%s/v1/models", base);
    char *id = NULL;
    if (http_get(url.p, headers, 30000, &body) == 200) {
        cJSON *j = cJSON_ParseWithLength(body.p ? body.p : "", body.len);
        const cJSON *m0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "data"), 0);
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(m0, "id");
        if (cJSON_IsString(s))
            id = strdup(s->valuestring);
        cJSON_Delete(j);
    }
    mm_buf_free(&url);
    mm_buf_free(&body);
    return id;
}

/* Polls GET /health until it answers 200 or timeout_s passes. */
static int wait_ready(const char *base, struct curl_slist *headers, double timeout_s)
{
    struct mm_buf url = {0};
    mm_buf_printf(&url, "%s/health", base);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int ok = -1;
    for (;;) {
        struct mm_buf body = {0};
        const long st = http_get(url.p, headers, 5000, &body);
        mm_buf_free(&body);
        if (st == 200) {
            ok = 0;
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) * 1e-9 > timeout_s)
            break;
        usleep(200 * 1000);
    }
    mm_buf_free(&url);
    return ok;
}

/* Parses "a,b,c" into up to cap doubles; -1 on a bad item. */
static int parse_list(const char *s, double *out, int cap)
{
    int n = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *end;
        const double v = strtod(tok, &end);
        if (end == tok || *end || n == cap || v < 0 || v > 100) {
            free(copy);
            return -1;
        }
        out[n++] = v;
    }
    free(copy);
    return n;
}

/* One "ttft:500"-style SLO (milliseconds) into slo (seconds); -1 when malformed. */
static int parse_slo(const char *item, struct mm_lg_slo *slo)
{
    const char *colon = strchr(item, ':');
    char *end;
    const double ms = colon ? strtod(colon + 1, &end) : 0;
    if (!colon || end == colon + 1 || *end || !(ms > 0))
        return -1;
    const size_t k = (size_t)(colon - item);
    if (k == 4 && strncmp(item, "ttft", 4) == 0)
        slo->ttft = ms / 1e3;
    else if (k == 4 && strncmp(item, "tpot", 4) == 0)
        slo->tpot = ms / 1e3;
    else if (k == 4 && strncmp(item, "e2el", 4) == 0)
        slo->e2el = ms / 1e3;
    else
        return -1;
    return 0;
}

/* Lets one process hold thousands of sockets. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

enum {
    OPT_BASE_URL = 256,
    OPT_HOST,
    OPT_PORT,
    OPT_ENDPOINT,
    OPT_BACKEND,
    OPT_MODEL,
    OPT_SERVED,
    OPT_HEADER,
    OPT_READY,
    OPT_NUM_PROMPTS,
    OPT_RATE,
    OPT_BURST,
    OPT_CONC,
    OPT_TIMEOUT,
    OPT_DATASET,
    OPT_IN,
    OPT_OUT,
    OPT_RATIO,
    OPT_PREFIX,
    OPT_PROMPT,
    OPT_VOCAB,
    OPT_IMAGE,
    OPT_IMAGE_RATIO,
    OPT_IGNORE_EOS,
    OPT_TEMP,
    OPT_TOP_P,
    OPT_TOP_K,
    OPT_EXTRA,
    OPT_SEED,
    OPT_PCT_METRICS,
    OPT_PCTS,
    OPT_SAVE,
    OPT_DETAILED,
    OPT_DIR,
    OPT_FILE,
    OPT_LABEL,
    OPT_METADATA,
    OPT_NO_TQDM,
    OPT_HELP,
    OPT_LONG_LEN,
    OPT_LONG_AT,
    OPT_LONG_OUT,
    OPT_GOODPUT,
};

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"base-url", 1, 0, OPT_BASE_URL},
        {"host", 1, 0, OPT_HOST},
        {"port", 1, 0, OPT_PORT},
        {"endpoint", 1, 0, OPT_ENDPOINT},
        {"backend", 1, 0, OPT_BACKEND},
        {"model", 1, 0, OPT_MODEL},
        {"served-model-name", 1, 0, OPT_SERVED},
        {"header", 1, 0, OPT_HEADER},
        {"ready-check-timeout-sec", 1, 0, OPT_READY},
        {"num-prompts", 1, 0, OPT_NUM_PROMPTS},
        {"request-rate", 1, 0, OPT_RATE},
        {"burstiness", 1, 0, OPT_BURST},
        {"max-concurrency", 1, 0, OPT_CONC},
        {"request-timeout", 1, 0, OPT_TIMEOUT},
        {"dataset-name", 1, 0, OPT_DATASET},
        {"random-input-len", 1, 0, OPT_IN},
        {"random-output-len", 1, 0, OPT_OUT},
        {"random-range-ratio", 1, 0, OPT_RATIO},
        {"random-prefix-len", 1, 0, OPT_PREFIX},
        {"random-prompt", 1, 0, OPT_PROMPT},
        {"vocab-size", 1, 0, OPT_VOCAB},
        {"image", 1, 0, OPT_IMAGE},
        {"image-ratio", 1, 0, OPT_IMAGE_RATIO},
        {"ignore-eos", 0, 0, OPT_IGNORE_EOS},
        {"temperature", 1, 0, OPT_TEMP},
        {"top-p", 1, 0, OPT_TOP_P},
        {"top-k", 1, 0, OPT_TOP_K},
        {"extra-body", 1, 0, OPT_EXTRA},
        {"seed", 1, 0, OPT_SEED},
        {"percentile-metrics", 1, 0, OPT_PCT_METRICS},
        {"metric-percentiles", 1, 0, OPT_PCTS},
        {"save-result", 0, 0, OPT_SAVE},
        {"save-detailed", 0, 0, OPT_DETAILED},
        {"result-dir", 1, 0, OPT_DIR},
        {"result-filename", 1, 0, OPT_FILE},
        {"label", 1, 0, OPT_LABEL},
        {"metadata", 1, 0, OPT_METADATA},
        {"disable-tqdm", 0, 0, OPT_NO_TQDM},
        {"help", 0, 0, OPT_HELP},
        {"goodput", 1, 0, OPT_GOODPUT},
        {"long-prompt-len", 1, 0, OPT_LONG_LEN},
        {"long-prompt-at", 1, 0, OPT_LONG_AT},
        {"long-prompt-output-len", 1, 0, OPT_LONG_OUT},
        {0, 0, 0, 0},
    };
    const char *base_url = NULL, *host = "127.0.0.1", *endpoint = "/v1/completions";
    const char *backend = NULL, *model = NULL, *served = NULL, *label = NULL;
    const char *image = NULL, *extra_body = NULL, *result_dir = ".", *result_file = NULL;
    const char *prompt_kind = NULL;
    const char *pct_metrics = "ttft,tpot,itl,e2el", *pcts = "90,99";
    int64_t port = 8000, vocab = 1000, top_k = -1, seed = 0;
    double ready_timeout = 0, top_p = -1, temperature = 0, image_ratio = 1;
    bool save = false, detailed = false, no_tqdm = false;
    const char *headers_in[MAX_HEADERS];
    int n_headers_in = 0;
    struct mm_lg_config c = {
        .num_prompts = 1000,
        .request_rate = INFINITY,
        .burstiness = 1.0,
        .input_len = 1024,
        .output_len = 128,
        .request_timeout = 21600,
        .long_at = 5,
        .long_output_len = 16,
    };
    int64_t prefix = 0;
    struct mm_lg_slo slo = {0};
    bool goodput = false;
    cJSON *metadata = cJSON_CreateObject();
    int rc = 1;

    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int bad = 0;
        switch (o) {
        case OPT_BASE_URL:
            base_url = optarg;
            break;
        case OPT_HOST:
            host = optarg;
            break;
        case OPT_PORT:
            bad = parse_i64("port", optarg, 1, &port);
            break;
        case OPT_ENDPOINT:
            endpoint = optarg;
            break;
        case OPT_BACKEND:
            backend = optarg;
            break;
        case OPT_MODEL:
            model = optarg;
            break;
        case OPT_SERVED:
            served = optarg;
            break;
        case OPT_HEADER:
            if (n_headers_in == MAX_HEADERS) {
                fprintf(stderr, "mmmamba-loadgen: at most %d --header\n", MAX_HEADERS);
                bad = -1;
            } else {
                headers_in[n_headers_in++] = optarg;
            }
            break;
        case OPT_READY:
            bad = parse_f64("ready-check-timeout-sec", optarg, &ready_timeout);
            break;
        case OPT_NUM_PROMPTS:
            bad = parse_i64("num-prompts", optarg, 1, &c.num_prompts);
            break;
        case OPT_RATE:
            bad = parse_f64("request-rate", optarg, &c.request_rate);
            break;
        case OPT_BURST:
            bad = parse_f64("burstiness", optarg, &c.burstiness);
            break;
        case OPT_CONC:
            bad = parse_i64("max-concurrency", optarg, 1, &c.max_concurrency);
            break;
        case OPT_TIMEOUT:
            bad = parse_f64("request-timeout", optarg, &c.request_timeout);
            break;
        case OPT_DATASET:
            if (strcmp(optarg, "random") != 0) {
                fprintf(stderr, "mmmamba-loadgen: only --dataset-name random is built in\n");
                bad = -1;
            }
            break;
        case OPT_IN:
            bad = parse_i64("random-input-len", optarg, 1, &c.input_len);
            break;
        case OPT_OUT:
            bad = parse_i64("random-output-len", optarg, 1, &c.output_len);
            break;
        case OPT_RATIO:
            bad = parse_f64("random-range-ratio", optarg, &c.range_ratio);
            break;
        case OPT_PREFIX:
            bad = parse_i64("random-prefix-len", optarg, 0, &prefix);
            break;
        case OPT_PROMPT:
            prompt_kind = optarg;
            break;
        case OPT_VOCAB:
            bad = parse_i64("vocab-size", optarg, 4, &vocab);
            break;
        case OPT_IMAGE:
            image = optarg;
            break;
        case OPT_IMAGE_RATIO:
            bad = parse_f64("image-ratio", optarg, &image_ratio);
            break;
        case OPT_IGNORE_EOS:
            c.workload.ignore_eos = true;
            break;
        case OPT_TEMP:
            bad = parse_f64("temperature", optarg, &temperature);
            break;
        case OPT_TOP_P:
            bad = parse_f64("top-p", optarg, &top_p);
            break;
        case OPT_TOP_K:
            bad = parse_i64("top-k", optarg, 0, &top_k);
            break;
        case OPT_EXTRA:
            extra_body = optarg;
            break;
        case OPT_SEED:
            bad = parse_i64("seed", optarg, 0, &seed);
            break;
        case OPT_PCT_METRICS:
            pct_metrics = optarg;
            break;
        case OPT_PCTS:
            pcts = optarg;
            break;
        case OPT_SAVE:
            save = true;
            break;
        case OPT_DETAILED:
            detailed = save = true;
            break;
        case OPT_DIR:
            result_dir = optarg;
            break;
        case OPT_FILE:
            result_file = optarg;
            save = true;
            break;
        case OPT_LABEL:
            label = optarg;
            break;
        case OPT_METADATA: {
            const char *eq = strchr(optarg, '=');
            if (!eq) {
                fprintf(stderr, "mmmamba-loadgen: --metadata wants KEY=VALUE\n");
                bad = -1;
                break;
            }
            char *key = strndup(optarg, (size_t)(eq - optarg));
            cJSON_AddStringToObject(metadata, key, eq + 1);
            free(key);
            break;
        }
        case OPT_NO_TQDM:
            no_tqdm = true;
            break;
        case OPT_GOODPUT:
            goodput = true;
            if (parse_slo(optarg, &slo) != 0) {
                fprintf(stderr, "mmmamba-loadgen: --goodput wants ttft:MS, tpot:MS or e2el:MS\n");
                bad = -1;
            }
            break;
        case OPT_LONG_LEN:
            bad = parse_i64("long-prompt-len", optarg, 1, &c.long_input_len);
            break;
        case OPT_LONG_AT:
            bad = parse_f64("long-prompt-at", optarg, &c.long_at);
            break;
        case OPT_LONG_OUT:
            bad = parse_i64("long-prompt-output-len", optarg, 1, &c.long_output_len);
            break;
        case OPT_HELP:
        case 'h':
            usage(stdout);
            cJSON_Delete(metadata);
            return 0;
        default:
            bad = -1;
            break;
        }
        if (bad) {
            usage(stderr);
            cJSON_Delete(metadata);
            return 2;
        }
    }
    for (; optind < argc; optind++) { /* --goodput ttft:500 tpot:50: the later items */
        if (!goodput || parse_slo(argv[optind], &slo) != 0) {
            fprintf(stderr, "mmmamba-loadgen: unexpected argument '%s'\n", argv[optind]);
            cJSON_Delete(metadata);
            return 2;
        }
    }
    if (!(c.range_ratio >= 0 && c.range_ratio < 1) || !(image_ratio >= 0 && image_ratio <= 1) ||
        !(c.burstiness > 0) || c.request_timeout < 0) {
        fprintf(stderr, "mmmamba-loadgen: want 0 <= --random-range-ratio < 1, 0 <= --image-ratio "
                        "<= 1, --burstiness > 0, --request-timeout >= 0\n");
        cJSON_Delete(metadata);
        return 2;
    }

    /* What kind of API: from --backend, else from the endpoint's path. */
    const bool chat = backend ? strcmp(backend, "openai-chat") == 0
                              : strstr(endpoint, "chat/completions") != NULL;
    if (backend && !chat && strcmp(backend, "openai") != 0 && strcmp(backend, "vllm") != 0) {
        fprintf(stderr, "mmmamba-loadgen: --backend is openai, vllm or openai-chat\n");
        cJSON_Delete(metadata);
        return 2;
    }
    struct mm_workload *w = &c.workload;
    w->api = chat ? MM_API_CHAT : MM_API_COMPLETIONS;
    w->prompt_kind = chat ? MM_PROMPT_TEXT : MM_PROMPT_TOKEN_IDS;
    if (prompt_kind && strcmp(prompt_kind, "text") == 0) {
        w->prompt_kind = MM_PROMPT_TEXT;
    } else if (prompt_kind && strcmp(prompt_kind, "token-ids") == 0) {
        if (chat) {
            fprintf(stderr, "mmmamba-loadgen: chat requests take text prompts\n");
            cJSON_Delete(metadata);
            return 2;
        }
    } else if (prompt_kind) {
        fprintf(stderr, "mmmamba-loadgen: --random-prompt is token-ids or text\n");
        cJSON_Delete(metadata);
        return 2;
    }
    if (image && !chat) {
        fprintf(stderr, "mmmamba-loadgen: --image needs --endpoint /v1/chat/completions\n");
        cJSON_Delete(metadata);
        return 2;
    }
    double ps[MM_STATS_MAX_PERCENTILES];
    const int n_ps = parse_list(pcts, ps, MM_STATS_MAX_PERCENTILES);
    if (n_ps < 0) {
        fprintf(stderr, "mmmamba-loadgen: --metric-percentiles: a list of 0..100, e.g. 90,99\n");
        cJSON_Delete(metadata);
        return 2;
    }
    struct mm_lg_info info = {.show = {false, false, false, false}};
    static const char *const names[4] = {"ttft", "tpot", "itl", "e2el"};
    for (int k = 0; k < 4; k++) {
        const char *p = strstr(pct_metrics, names[k]);
        const size_t len = strlen(names[k]);
        info.show[k] = p && (p == pct_metrics || p[-1] == ',') && (p[len] == ',' || !p[len]);
    }

    curl_global_init(CURL_GLOBAL_DEFAULT);
    raise_fd_limit();
    struct mm_buf base = {0}, url = {0}, auth = {0};
    char *model_found = NULL, *image_url = NULL;
    struct curl_slist *get_headers = NULL;
    struct mm_lg_result *results = NULL;
    struct mm_lg_result long_result = {0};
    cJSON *extra = NULL;
    const char *headers[MAX_HEADERS + 1];
    char *owned[MAX_HEADERS] = {0};
    int n_headers = 0;

    if (base_url)
        mm_buf_puts(&base, base_url);
    else
        mm_buf_printf(&base, "http://%s:%lld", host, (long long)port);
    while (base.len > 0 && base.p[base.len - 1] == '/')
        base.p[--base.len] = '\0';
    mm_buf_printf(&url, "%s%s%s", base.p, endpoint[0] == '/' ? "" : "/", endpoint);
    const char *key = getenv("MMMAMBA_API_KEY");
    if (!key || !key[0])
        key = getenv("OPENAI_API_KEY");
    if (key && key[0]) {
        mm_buf_printf(&auth, "Authorization: Bearer %s", key);
        headers[n_headers++] = auth.p;
        get_headers = curl_slist_append(get_headers, auth.p);
    }
    for (int i = 0; i < n_headers_in; i++) { /* K=V (vLLM) or K: V */
        const char *h = headers_in[i];
        if (!strchr(h, ':') && strchr(h, '=')) {
            char *copy = owned[i] = strdup(h);
            if (!copy)
                goto done;
            *strchr(copy, '=') = ':';
            headers_in[i] = copy;
        }
        headers[n_headers++] = headers_in[i];
        get_headers = curl_slist_append(get_headers, headers_in[i]);
    }
    if (base.failed || url.failed || auth.failed) {
        fprintf(stderr, "mmmamba-loadgen: out of memory\n");
        goto done;
    }
    if (ready_timeout > 0 && wait_ready(base.p, get_headers, ready_timeout) != 0) {
        fprintf(stderr, "mmmamba-loadgen: %s/health did not answer 200 within %g s\n", base.p,
                ready_timeout);
        goto done;
    }
    if (!model) {
        model = model_found = first_model(base.p, get_headers);
        if (!model) {
            fprintf(stderr,
                    "mmmamba-loadgen: could not read a model from %s/v1/models; "
                    "pass --model\n",
                    base.p);
            goto done;
        }
    }
    if (extra_body) {
        extra = cJSON_Parse(extra_body);
        if (!cJSON_IsObject(extra)) {
            fprintf(stderr, "mmmamba-loadgen: --extra-body must be a JSON object\n");
            goto done;
        }
        char *s = cJSON_PrintUnformatted(extra);
        /* Keep the members only: "{...}" -> "...". */
        const size_t len = s ? strlen(s) : 0;
        if (len >= 2) {
            memmove(s, s + 1, len - 2);
            s[len - 2] = '\0';
        }
        w->extra_body = s;
    }
    if (image) {
        struct mm_err err;
        if (mm_workload_image_url(image, &image_url, &err) != MM_OK) {
            fprintf(stderr, "mmmamba-loadgen: %s\n", err.msg);
            goto done;
        }
        w->image_data_url = image_url;
        c.image_ratio = image_ratio;
    }
    w->model = served ? served : model;
    w->vocab_lo = 3; /* past <unk>, <s>, </s> */
    w->vocab_hi = vocab;
    w->prefix_len = prefix;
    w->temperature = temperature;
    w->top_p = top_p;
    w->top_k = top_k;
    w->seed = (uint64_t)seed;
    c.url = url.p;
    c.headers = headers;
    c.n_headers = n_headers;
    c.progress = no_tqdm ? 0 : isatty(2) ? 1 : 2;

    results = calloc((size_t)c.num_prompts, sizeof(*results));
    if (!results) {
        fprintf(stderr, "mmmamba-loadgen: out of memory for %lld results\n",
                (long long)c.num_prompts);
        goto done;
    }
    fprintf(stderr,
            "Traffic request rate: %g\nBurstiness factor: %g%s\nMaximum request "
            "concurrency: %s%lld\n",
            c.request_rate, c.burstiness, c.burstiness == 1 ? " (Poisson process)" : "",
            c.max_concurrency ? "" : "unlimited ", (long long)c.max_concurrency);
    struct mm_err err;
    double duration = 0;
    if (mm_lg_run(&c, results, &long_result, &duration, &err) != MM_OK) {
        fprintf(stderr, "mmmamba-loadgen: %s\n", err.msg);
        goto done;
    }
    struct mm_lg_metrics m;
    if (mm_lg_metrics_compute(results, c.num_prompts, duration, ps, n_ps, &m, &err) != MM_OK ||
        (c.long_input_len > 0 &&
         mm_lg_metrics_long(results, c.num_prompts, &long_result, ps, n_ps, &m, &err) != MM_OK)) {
        fprintf(stderr, "mmmamba-loadgen: %s\n", err.msg);
        goto done;
    }
    char date[32];
    const time_t now = time(NULL);
    struct tm tm;
    strftime(date, sizeof(date), "%Y%m%d-%H%M%S", localtime_r(&now, &tm));
    info.date = date;
    info.backend = chat ? "openai-chat" : "openai";
    info.endpoint = endpoint;
    info.label = label;
    info.model = model;
    info.base_url = base.p;
    info.num_prompts = c.num_prompts;
    info.request_rate = c.request_rate;
    info.burstiness = c.burstiness;
    info.max_concurrency = c.max_concurrency;
    info.random_input_len = c.input_len;
    info.random_output_len = c.output_len;
    info.random_range_ratio = c.range_ratio;
    info.ignore_eos = w->ignore_eos;
    info.metadata = metadata;
    for (int64_t i = 0, shown = 0; i < c.num_prompts && shown < 10; i++) {
        if (results[i].error) {
            fprintf(stderr, "Error %lld: %s\n", (long long)shown++, results[i].error);
        }
    }
    if (goodput)
        mm_lg_metrics_goodput(results, c.num_prompts, duration, &slo, &m);
    if (long_result.error)
        fprintf(stderr, "Long prompt error: %s\n", long_result.error);
    mm_lg_report_print(stdout, &m, &info);
    if (save) {
        cJSON *j = mm_lg_report_json(&m, &info, results, c.num_prompts, detailed);
        char *text = j ? cJSON_Print(j) : NULL;
        cJSON_Delete(j);
        struct mm_buf path = {0};
        if (result_file && result_file[0] == '/')
            mm_buf_puts(&path, result_file);
        else if (result_file)
            mm_buf_printf(&path, "%s/%s", result_dir, result_file);
        else
            mm_buf_printf(&path, "%s/%s-%sqps-concurrency%lld-%s.json", result_dir,
                          label ? label : info.backend, isinf(c.request_rate) ? "inf" : "r",
                          (long long)c.max_concurrency, date);
        FILE *f = text && !path.failed ? fopen(path.p, "w") : NULL;
        const bool ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
        if (f && fclose(f) != 0)
            f = NULL;
        if (!ok || !f) {
            fprintf(stderr, "mmmamba-loadgen: could not write %s\n", path.p ? path.p : "");
            free(text);
            mm_buf_free(&path);
            goto done;
        }
        fprintf(stderr, "Results written to %s\n", path.p);
        free(text);
        mm_buf_free(&path);
    }
    rc = 0;
done:
    mm_lg_results_free(&long_result, 1);
    for (int i = 0; i < MAX_HEADERS; i++)
        free(owned[i]);
    if (results)
        mm_lg_results_free(results, c.num_prompts);
    free(results);
    free(model_found);
    free(image_url);
    free((char *)w->extra_body);
    cJSON_Delete(extra);
    cJSON_Delete(metadata);
    curl_slist_free_all(get_headers);
    mm_buf_free(&base);
    mm_buf_free(&url);
    mm_buf_free(&auth);
    curl_global_cleanup();
    return rc;
}
