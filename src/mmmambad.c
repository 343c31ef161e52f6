/* mmmambad.c: the daemon's main. Reads the options, loads and checks the
 * whole checkpoint (config, weights, tokenizer, chat template), starts the
 * engine thread (the scheduler) and the HTTP server, tells systemd it is
 * ready, then sleeps until SIGTERM/SIGINT; then drains: stops accepting,
 * lets running requests finish until the drain deadline, cancels the rest,
 * frees everything and exits 0. If every engine fails (a device fault that
 * no step recovers), it drains the same way and exits 1, so that systemd's
 * Restart=on-failure brings up a fresh process.
 *
 * Design: the signal handlers only set a flag. SIGTERM and SIGINT are
 * blocked in every thread but this one, which waits for them in ppoll()
 * with the signals unblocked only there, so a signal wakes it at once; it
 * also wakes twice a second to see whether any engine still serves. The
 * $NOTIFY_SOCKET protocol (READY=1, STATUS=, STOPPING=1, WATCHDOG=1) is a
 * datagram written here directly: no libsystemd. */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/status.h"
#include "config.h"
#include "engine/cuda_backend.h"
#include "engine/engine.h"
#include "http/app.h"
#include "http/server.h"
#include "model/chat_template.h"
#include "model/config.h"
#include "model/image_preprocess.h"
#include "model/tokenizer.h"
#include "serve/dispatch.h"
#include "serve/response_store.h"
#include "serve/scheduler.h"
#include "serve/state_cache.h"

_Static_assert(MM_MAX_DEVICES <= MM_DISPATCH_MAX_ENGINES, "config.h and dispatch.h disagree");

static volatile sig_atomic_t stop_signals;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_signals++;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- systemd notification ---------------------------------------------------------- */

/* Sends one state line to $NOTIFY_SOCKET (a unix datagram socket; a leading
 * '@' names an abstract one). Silently nothing when unset. */
static void sd_notify_line(const char *line)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !path[0])
        return;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    const size_t n = strlen(path);
    if (n >= sizeof sa.sun_path || (path[0] != '/' && path[0] != '@'))
        return;
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';
    const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    const socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    if (sendto(fd, line, strlen(line), MSG_NOSIGNAL, (const struct sockaddr *)&sa, len) < 0)
        MM_WARN("NOTIFY_SOCKET %s: %s", path, strerror(errno));
    close(fd);
}

/* Half of $WATCHDOG_USEC (for this process) in seconds, or 0. */
static double watchdog_interval(void)
{
    const char *usec = getenv("WATCHDOG_USEC");
    const char *pid = getenv("WATCHDOG_PID");
    if (!usec || (pid && strtol(pid, NULL, 10) != (long)getpid()))
        return 0;
    const double v = strtod(usec, NULL);
    return v > 0 ? v * 0.5e-6 : 0;
}

/* ---- loading --------------------------------------------------------------------- */

struct daemon {
    struct mm_daemon_config opt;
    struct mm_config cfg;
    struct mm_tokenizer *tok;
    struct mm_chat_template *tpl;
    int n_engines;
    struct mm_engine *engines[MM_MAX_DEVICES];
    struct mm_dispatch *dispatch;       /* owns one scheduler per engine */
    struct mm_state_cache *state_cache; /* the host tier, shared by every scheduler */
    char *responses_path;               /* with a disk tier: the stored responses at shutdown */
    uint64_t model_id;                  /* with a disk tier: what its files are of */
    struct mm_http_app app;
    bool sem_ready;
    char *model_name;
    struct mm_http_server *http;
};

/* 64-bit digest step over bytes (model_identity). */
static uint64_t id_mix(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001B3ull;
    return h;
}

/* The identity the disk tier files states under (a state is only ever
 * resumed by the checkpoint that made it): config.json in full, and per
 * *.safetensors file its name, size and 64 samples of 4 KiB spread over it
 * (checkpoints of one shape differ in their weights; reading them all would
 * cost seconds at start). Files are combined order-free. */
static enum mm_status model_identity(const char *dir, uint64_t *out, struct mm_err *err)
{
    DIR *dp = opendir(dir);
    if (!dp)
        return mm_err_set(err, MM_ERR_IO, "%s: %s", dir, strerror(errno));
    uint64_t id = 0;
    char path[4096];
    unsigned char buf[4096];
    for (struct dirent *de; (de = readdir(dp));) {
        const size_t len = strlen(de->d_name);
        const bool weights = len > 12 && strcmp(de->d_name + len - 12, ".safetensors") == 0;
        if (!weights && strcmp(de->d_name, "config.json") != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        struct stat sb;
        if (!f || fstat(fileno(f), &sb) != 0) {
            if (f)
                fclose(f);
            continue;
        }
        uint64_t h = id_mix(0xCBF29CE484222325ull, de->d_name, len);
        h = id_mix(h, &sb.st_size, sizeof sb.st_size);
        const int samples = weights ? 64 : 1 << 20;
        for (int k = 0; k < samples; k++) {
            if (weights && fseeko(f, (off_t)((double)sb.st_size * k / samples), SEEK_SET) != 0)
                break;
            const size_t got = fread(buf, 1, sizeof buf, f);
            h = id_mix(h, buf, got);
            if (got < sizeof buf && !weights)
                break;
        }
        fclose(f);
        id += h * 0x9E3779B97F4A7C15ull + (h >> 29); /* order-free */
    }
    closedir(dp);
    *out = id;
    return MM_OK;
}

/* The test hook $MMMAMBA_FAIL_ENGINE="E:N[,E:N...]": engine E reports a
 * device fault from its Nth step on (engine.h fail_at_step). 0 when unset or
 * not naming engine i. */
static int64_t fail_hook(int i)
{
    const char *v = getenv("MMMAMBA_FAIL_ENGINE");
    for (const char *p = v; p && *p;) {
        char *end;
        const long e = strtol(p, &end, 10);
        if (end == p || *end != ':')
            break;
        p = end + 1;
        const long long n = strtoll(p, &end, 10);
        if (end == p)
            break;
        if (e == i && n > 0)
            return n;
        p = *end == ',' ? end + 1 : end;
    }
    return 0;
}

struct opener {
    const char *dir;
    struct mm_engine_options eo;
    struct mm_engine *e;
    enum mm_status st;
    struct mm_err err;
    pthread_t thread;
};

static void *open_one(void *arg)
{
    struct opener *op = arg;
    op->st = mm_engine_open(op->dir, &op->eo, &op->e, &op->err);
    return NULL;
}

/* One engine per device of the `devices` option (the CPU backend: per
 * entry, or N for one number N), loaded in parallel; each a full copy of
 * the weights sized by the same per-engine options on its own device. */
static enum mm_status open_engines(struct daemon *d, const struct mm_engine_options *base,
                                   struct mm_err *err)
{
    int ids[MM_MAX_DEVICES], n;
    bool all;
    enum mm_status st = mm_parse_devices(d->opt.devices, ids, &n, &all, err);
    if (st != MM_OK)
        return st;
    const bool cpu = base->backend == MM_BACKEND_CPU;
    if (cpu) {
        const int count = all ? 1 : n == 1 ? (ids[0] > 1 ? ids[0] : 1) : n;
        for (int i = 0; i < count; i++)
            ids[i] = i;
        n = count;
    } else if (all) {
        n = mm_cuda_device_count();
        if (n < 1)
            return mm_err_set(err, MM_ERR_UNSUPPORTED, "devices all: no CUDA device found");
        n = n < MM_MAX_DEVICES ? n : MM_MAX_DEVICES;
        for (int i = 0; i < n; i++)
            ids[i] = i;
    }
    long threads = d->opt.threads;
    if (cpu && threads == 0)
        threads = sysconf(_SC_NPROCESSORS_ONLN);
    struct opener *ops = calloc((size_t)n, sizeof *ops);
    if (!ops)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    int started = 0;
    for (int i = 0; i < n; i++) {
        ops[i].dir = d->opt.model;
        ops[i].eo = *base;
        ops[i].eo.device = ids[i];
        ops[i].eo.n_threads = cpu ? (int)(threads / n > 0 ? threads / n : 1) : 0;
        ops[i].eo.fail_at_step = fail_hook(i);
        if (n == 1)
            open_one(&ops[i]);
        else if (pthread_create(&ops[i].thread, NULL, open_one, &ops[i]) == 0)
            started = i + 1;
        else {
            ops[i].st = mm_err_set(&ops[i].err, MM_ERR_NOMEM, "cannot start a loader thread");
            break;
        }
    }
    for (int i = 0; i < started; i++)
        pthread_join(ops[i].thread, NULL);
    st = MM_OK;
    for (int i = 0; i < n; i++)
        if (ops[i].st != MM_OK && st == MM_OK) {
            st = ops[i].st;
            *err = ops[i].err;
            if (n > 1)
                mm_err_prefix(err, "device %d", ids[i]);
            err->status = ops[i].err.status;
        }
    for (int i = 0; i < n; i++) {
        if (st == MM_OK)
            d->engines[i] = ops[i].e;
        else
            mm_engine_close(ops[i].e);
    }
    if (st == MM_OK)
        d->n_engines = n;
    free(ops);
    return st;
}

static enum mm_status load_model(struct daemon *d, struct mm_err *err)
{
    const struct mm_daemon_config *o = &d->opt;
    enum mm_status st = mm_config_load(o->model, &d->cfg, err);
    if (st != MM_OK)
        return st;
    /* the tokenizer is checked against the model (ids bounded by its vocabulary,
     * <IMG_CONTEXT> where the config says); errors name the file */
    st = mm_tokenizer_load_checkpoint(o->model, &d->cfg, &d->tok, err);
    if (st != MM_OK)
        return st;
    if (mm_tokenizer_find(d->tok, "<|im_end|>") < 0)
        return mm_err_set(err, MM_ERR_FORMAT,
                          "%s: the tokenizer has no <|im_end|> token (the chat template's end)",
                          o->model);
    st =
        mm_chat_template_create(d->tok, d->cfg.template_name, d->cfg.tokens_per_tile, &d->tpl, err);
    if (st != MM_OK)
        return mm_err_prefix(err, "%s: chat template", o->model);
    if (o->max_batch_tokens < d->cfg.tokens_per_tile)
        return mm_err_set(err, MM_ERR_INVALID,
                          "max_batch_tokens (%lld) must hold one image tile (%lld tokens)",
                          (long long)o->max_batch_tokens, (long long)d->cfg.tokens_per_tile);

    struct mm_engine_options eo;
    mm_engine_options_default(&eo);
    const bool want_cuda = strcmp(o->backend, "cuda") == 0;
    const bool want_fp32 = strcmp(o->backend, "cuda-fp32") == 0;
#ifdef MM_HAVE_CUDA
    const bool auto_cuda = strcmp(o->backend, "auto") == 0;
#else
    const bool auto_cuda = false;
#endif
    eo.backend = want_fp32                ? MM_BACKEND_CUDA_FP32
                 : want_cuda || auto_cuda ? MM_BACKEND_CUDA
                                          : MM_BACKEND_CPU;
    eo.max_seqs = (int32_t)o->max_seqs;
    eo.max_tokens = o->max_batch_tokens;
    eo.max_tiles = d->cfg.max_dynamic_patch + 1;
    eo.max_context = o->max_model_len;
    eo.state_fp32 = strcmp(o->state_dtype, "fp32") == 0;
    eo.kv_memory = o->kv_memory;
    eo.mem_fraction = (double)o->gpu_memory_percent / 100.0;
    st = open_engines(d, &eo, err);
    if (st != MM_OK && auto_cuda) {
        MM_WARN("CUDA backend unavailable (%s); using the CPU backend", err->msg);
        eo.backend = MM_BACKEND_CPU;
        st = open_engines(d, &eo, err);
    }
    if (st != MM_OK)
        return st;
    /* one scheduler per engine, behind one dispatcher. (The state cache's
     * host tier, issue 13, is one object shared by all of them: created
     * here once and passed to each in `so`.) */
    struct mm_scheduler_options so;
    mm_scheduler_options_default(&so);
    so.max_queue = o->max_queue;
    so.max_batch_tokens = o->max_batch_tokens;
    so.max_model_len = o->max_model_len;
    if (o->state_cache_bytes > 0 &&
        (st = mm_state_cache_create(o->state_cache_bytes, &d->state_cache, err)) != MM_OK)
        return st;
    if (o->state_cache_dir[0] && !d->state_cache)
        MM_WARN("state_cache_dir is ignored: state_cache_bytes 0 keeps no states at all");
    if (o->state_cache_dir[0] && d->state_cache) {
        uint64_t id = 0;
        if ((st = model_identity(o->model, &id, err)) != MM_OK ||
            (st = mm_state_cache_open_disk(d->state_cache, o->state_cache_dir,
                                           o->state_cache_disk_bytes, id, err)) != MM_OK)
            return st;
        /* the stored responses come back with their states; the file is
         * removed once read, so a response deleted later stays deleted */
        if (asprintf(&d->responses_path, "%s/responses.store", o->state_cache_dir) < 0)
            return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        d->model_id = id;
        int64_t n = 0;
        struct mm_err e2;
        if (mm_response_store_load(d->app.responses, d->responses_path, id, &n, &e2) != MM_OK)
            MM_WARN("responses: %s", e2.msg);
        if (n > 0)
            MM_INFO("responses: %lld stored responses kept from before", (long long)n);
        unlink(d->responses_path);
    }
    so.state_cache = d->state_cache;
    so.state_cache_gpu = o->state_cache_gpu;
    struct mm_scheduler *scheds[MM_MAX_DEVICES];
    char names[MM_MAX_DEVICES][32];
    const char *name_ptrs[MM_MAX_DEVICES];
    for (int i = 0; i < d->n_engines; i++) {
        st = mm_scheduler_create(d->engines[i], d->tok, &so, &scheds[i], err);
        if (st != MM_OK) {
            while (i-- > 0)
                mm_scheduler_free(scheds[i], 0);
            return st;
        }
        const struct mm_engine *e = d->engines[i];
        if (e->opt.backend == MM_BACKEND_CPU)
            snprintf(names[i], sizeof names[i], "cpu:%d", i);
        else
            snprintf(names[i], sizeof names[i], "cuda:%d", e->opt.device);
        name_ptrs[i] = names[i];
        MM_INFO("engine %d (%s): %d slots, KV blocks %lld+%lld, %lld tokens/step%s", i, names[i],
                e->opt.max_seqs, (long long)(e->kv[0] ? e->kv_blocks[0] : 0),
                (long long)(e->kv[1] ? e->kv_blocks[1] : 0), (long long)e->opt.max_tokens,
                e->opt.fail_at_step > 0 ? " (MMMAMBA_FAIL_ENGINE: fails on purpose)" : "");
    }
    st = mm_dispatch_create(scheds, name_ptrs, d->n_engines, &d->dispatch, err);
    if (st != MM_OK)
        return st;
    MM_INFO("model %s: %lld layers, hidden %lld, vocab %lld; %d %s engine%s, %lld slots each, "
            "context %lld",
            o->model, (long long)d->cfg.llm.num_layers, (long long)d->cfg.llm.hidden,
            (long long)d->cfg.vocab_size, d->n_engines,
            eo.backend == MM_BACKEND_CPU         ? "cpu"
            : eo.backend == MM_BACKEND_CUDA_FP32 ? "cuda-fp32"
                                                 : "cuda",
            d->n_engines > 1 ? "s" : "", (long long)d->engines[0]->opt.max_seqs,
            (long long)mm_dispatch_max_model_len(d->dispatch));
    return MM_OK;
}

/* The model's served name: the option, else the directory's last component. */
static char *served_name(const struct mm_daemon_config *o)
{
    if (o->served_model_name[0])
        return strdup(o->served_model_name);
    size_t n = strlen(o->model);
    while (n > 1 && o->model[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && o->model[b - 1] != '/')
        b--;
    return strndup(o->model + b, n - b);
}

/* What the HTTP layer needs before the model is there: the name, the keys,
 * the limits that come from the options alone. */
static enum mm_status app_from_options(struct daemon *d, struct mm_err *err)
{
    const struct mm_daemon_config *o = &d->opt;
    struct mm_http_app *a = &d->app;
    atomic_init(&a->loading, 1);
    if (!(d->model_name = served_name(o)))
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    a->model_name = d->model_name;
    a->max_prompt_bytes = o->max_prompt_bytes;
    a->max_images = o->max_images;
    a->image_limits = (struct mm_image_limits){.decode = {.max_bytes = o->max_image_bytes,
                                                          .max_pixels = o->max_image_pixels,
                                                          .max_side = MM_IMAGE_DEFAULT_MAX_SIDE},
                                               .max_tiles_per_request = o->max_tiles_per_request};
    a->image_source = (struct mm_image_source_policy){
        .file_root = o->file_root[0] ? o->file_root : NULL, .max_bytes = o->max_image_bytes};
    if (sem_init(&a->image_slots, 0, (unsigned)o->image_decoders) != 0)
        return mm_err_set(err, MM_ERR_INVALID, "image_decoders: %s", strerror(errno));
    d->sem_ready = true;
    enum mm_status st = mm_http_keys_load(o->api_keys, o->api_key_file, &a->api_keys, err);
    if (st != MM_OK)
        return st;
    const struct mm_response_store_options ro = {.max_responses = o->responses_max,
                                                 .max_bytes = o->responses_max_bytes};
    if ((st = mm_response_store_create(&ro, &a->responses, err)) != MM_OK)
        return st;
    const bool open_host = strcmp(o->host, "127.0.0.1") != 0 && strcmp(o->host, "::1") != 0;
    if (open_host && !a->api_keys)
        MM_WARN("listening on %s without API keys: anyone who can reach it may use it", o->host);
    return MM_OK;
}

/* The rest, once the model is loaded; then the routes open. */
static enum mm_status app_from_model(struct daemon *d, struct mm_err *err)
{
    struct mm_http_app *a = &d->app;
    a->created = (int64_t)time(NULL);
    a->cfg = &d->cfg;
    a->tok = d->tok;
    a->tpl = d->tpl;
    a->dispatch = d->dispatch;
    a->state_cache = d->state_cache;
    a->max_model_len = mm_dispatch_max_model_len(d->dispatch);
    int64_t slots = d->engines[0]->opt.max_seqs; /* gpu_memory_percent may give fewer */
    for (int i = 1; i < d->n_engines; i++)
        slots = d->engines[i]->opt.max_seqs < slots ? d->engines[i]->opt.max_seqs : slots;
    a->max_n = d->opt.max_n < slots ? d->opt.max_n : slots;
    const enum mm_status st =
        mm_image_params_from_config(&d->cfg, &a->image_limits, &a->image_params, err);
    if (st != MM_OK)
        return st;
    atomic_store_explicit(&a->loading, 0, memory_order_release);
    return MM_OK;
}

static void free_daemon(struct daemon *d)
{
    mm_http_server_free(d->http);
    mm_dispatch_free(d->dispatch, 0);
    mm_state_cache_free(d->state_cache); /* after every scheduler using it */
    for (int i = 0; i < d->n_engines; i++)
        mm_engine_close(d->engines[i]);
    mm_chat_template_free(d->tpl);
    mm_tokenizer_free(d->tok);
    mm_http_keys_free(d->app.api_keys);
    if (d->responses_path && d->app.responses) {
        struct mm_err err;
        if (mm_response_store_save(d->app.responses, d->responses_path, d->model_id, &err) != MM_OK)
            MM_WARN("responses: %s", err.msg);
    }
    free(d->responses_path);
    mm_response_store_free(d->app.responses);
    if (d->sem_ready)
        sem_destroy(&d->app.image_slots);
    free(d->model_name);
    mm_daemon_config_free(&d->opt);
}

/* ---- running ----------------------------------------------------------------------- */

/* Sleeps until a stop signal (or the timeout, for the watchdog), with the
 * stop signals unblocked only while waiting. */
static void wait_for_signal(const sigset_t *unblocked, double timeout_s)
{
    struct timespec ts = {.tv_sec = (time_t)timeout_s,
                          .tv_nsec = (long)((timeout_s - (double)(time_t)timeout_s) * 1e9)};
    ppoll(NULL, 0, &ts, unblocked);
}

/* Drain: stop intake, wait for running requests up to the deadline (or a
 * second signal), cancel the rest, wait for their streams to end. */
static void drain(struct daemon *d, const sigset_t *unblocked)
{
    const int64_t deadline_s = d->opt.drain_timeout;
    sd_notify_line("STOPPING=1\nSTATUS=draining");
    MM_INFO("stopping: no new connections; %lld requests in flight get up to %lld s",
            (long long)mm_http_server_active(d->http), (long long)deadline_s);
    mm_http_server_quiesce(d->http);
    mm_dispatch_drain(d->dispatch);
    const int signals_at_start = stop_signals;
    const double t_end = now_s() + (double)deadline_s;
    while (mm_http_server_active(d->http) > 0 && now_s() < t_end &&
           stop_signals == signals_at_start)
        wait_for_signal(unblocked, 0.05);
    const int64_t left = mm_http_server_active(d->http);
    if (left > 0) {
        MM_WARN("drain: cancelling %lld requests still running", (long long)left);
        mm_http_server_cancel_all(d->http);
        mm_dispatch_cancel_all(d->dispatch);
        const double t_cut = now_s() + 5.0; /* each gets its final event within a step */
        while (mm_http_server_active(d->http) > 0 && now_s() < t_cut)
            wait_for_signal(unblocked, 0.02);
    }
}

int main(int argc, char **argv)
{
    struct daemon d;
    memset(&d, 0, sizeof d);
    struct mm_err err;
    if (mm_daemon_config_init(&d.opt, &err) != MM_OK) {
        fprintf(stderr, "mmmambad: %s\n", err.msg);
        return 1;
    }
    enum mm_config_action action;
    if (mm_daemon_config_parse_args(&d.opt, argc, argv, &action, &err) != MM_OK) {
        fprintf(stderr, "mmmambad: %s\n", err.msg);
        mm_daemon_config_free(&d.opt);
        return 2;
    }
    if (action != MM_CONFIG_RUN) {
        if (action == MM_CONFIG_HELP)
            mm_daemon_config_print_help(stdout, "mmmambad");
        else if (action == MM_CONFIG_VERSION)
            printf("mmmambad %s\n", PACKAGE_VERSION);
        else
            mm_daemon_config_print_file(stdout);
        mm_daemon_config_free(&d.opt);
        return 0;
    }
    if (mm_daemon_config_check(&d.opt, &err) != MM_OK) {
        fprintf(stderr, "mmmambad: %s\n", err.msg);
        mm_daemon_config_free(&d.opt);
        return 2;
    }
    mm_log_set_level((enum mm_log_level)mm_log_parse_level(d.opt.log_level));

    /* stop signals: handled by this thread only (threads inherit the mask) */
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigset_t stop_set, unblocked;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_set, &unblocked);
    sigdelset(&unblocked, SIGTERM);
    sigdelset(&unblocked, SIGINT);

    int rc = 1;
    if (app_from_options(&d, &err) != MM_OK) {
        MM_ERROR("cannot serve: %s", err.msg);
        goto done;
    }
    /* the port opens first: /health answers 503 while the model loads */
    const struct mm_http_options ho = {
        .host = d.opt.host,
        .port = (uint16_t)d.opt.port,
        .threads = (int)d.opt.http_threads,
        .max_connections = (unsigned)d.opt.max_connections,
        .connection_timeout_s = (unsigned)d.opt.connection_timeout,
        .max_header_bytes = d.opt.max_header_bytes,
        .max_body_bytes = d.opt.max_body_bytes,
        .access_log = d.opt.access_log,
        .ping_interval_ms = d.opt.ping_interval,
    };
    if (mm_http_server_start(&ho, &d.app, &d.http, &err) != MM_OK) {
        MM_ERROR("cannot serve: %s", err.msg);
        goto done;
    }
    sd_notify_line("STATUS=loading the model");
    MM_INFO("mmmambad %s: loading %s (port %u answers 503 until it is loaded)", PACKAGE_VERSION,
            d.opt.model, mm_http_server_port(d.http));
    const double t0 = now_s();
    if (load_model(&d, &err) != MM_OK || app_from_model(&d, &err) != MM_OK) {
        MM_ERROR("cannot serve: %s", err.msg);
        goto done;
    }
    char status[256];
    snprintf(status, sizeof status, "READY=1\nSTATUS=serving %s on %s port %u", d.model_name,
             d.opt.host, mm_http_server_port(d.http));
    MM_INFO("serving %s on http://%s%s%s:%u/ (loaded in %.2f s)", d.model_name,
            strchr(d.opt.host, ':') ? "[" : "", d.opt.host, strchr(d.opt.host, ':') ? "]" : "",
            mm_http_server_port(d.http), now_s() - t0);
    sd_notify_line(status);

    const double wd = watchdog_interval();
    double next_wd = now_s();
    bool engines_lost = false;
    while (!stop_signals) {
        if (mm_dispatch_serving(d.dispatch) == 0) {
            /* a device fault in every engine: nothing here can recover it (a
             * CUDA context stays broken), so stop and let the service
             * manager start a fresh process (Restart=on-failure) */
            MM_ERROR("every engine failed; stopping so that the daemon can be restarted");
            sd_notify_line("STATUS=every engine failed");
            engines_lost = true;
            break;
        }
        if (wd > 0 && now_s() >= next_wd) {
            sd_notify_line("WATCHDOG=1");
            next_wd = now_s() + wd;
        }
        const double until_wd = wd > 0 ? next_wd - now_s() : 1.0;
        wait_for_signal(&unblocked, until_wd < 0.5 ? (until_wd > 0 ? until_wd : 0) : 0.5);
    }
    drain(&d, &unblocked);
    rc = engines_lost ? 1 : 0;
done:
    free_daemon(&d);
    MM_INFO("mmmambad: exit %d", rc);
    return rc;
}
