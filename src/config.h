/* config.h: the daemon's settings, from one table of options that serves
 * the configuration file (etc/mmmambad.conf, redis.conf style: `name value`
 * lines, `#` comments), the command-line flags (each option is a flag of the
 * same name with dashes: max_seqs -> --max-seqs) and --help.
 *
 * Design: the table (config.c) is the only list of options. The example
 * file is generated from it (`mmmambad --print-config`) and a test checks
 * that etc/mmmambad.conf is exactly that output, so names, defaults, units
 * and comments cannot drift apart. Flags override the file: the file named
 * by --config is read first, then every other flag is applied.
 *
 * Thread contract: filled once by the daemon's main before any thread
 * starts; read-only afterwards. */
#ifndef MM_CONFIG_H
#define MM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/status.h"

/* Every setting. Strings are heap-owned by the struct (mm_daemon_config_free);
 * an empty string means "not set". */
struct mm_daemon_config {
    /* network */
    char *host;
    int64_t port;
    int64_t http_threads;
    int64_t max_connections;
    int64_t connection_timeout; /* seconds */
    size_t max_header_bytes;
    size_t max_body_bytes;
    /* model and engine */
    char *model;
    char *served_model_name;
    char *backend; /* "cpu" | "cuda" */
    char *devices; /* "all" or indices "0,1" (mm_parse_devices) */
    int64_t threads;
    int64_t max_seqs;
    char *state_dtype; /* "fp32" | "bf16" */
    size_t kv_memory;
    int64_t gpu_memory_percent; /* 0: max_seqs as given */
    int64_t max_batch_tokens;
    int64_t max_model_len;
    int64_t max_queue;
    size_t state_cache_bytes; /* host tier of the state cache; 0: no state cache */
    bool state_cache_gpu;     /* snapshots in free state slots too */
    char *state_cache_dir;    /* disk tier of the state cache; "": none */
    size_t state_cache_disk_bytes; /* its bound */
    /* request limits */
    size_t max_prompt_bytes;
    int64_t max_tokens_limit;
    int64_t max_n;
    int64_t max_images;
    size_t max_image_bytes;
    int64_t max_image_pixels;
    int64_t max_tiles_per_request;
    int64_t image_decoders;
    char *file_root;
    /* security */
    char *api_keys;
    char *api_key_file;
    /* stored responses */
    int64_t responses_max;
    size_t responses_max_bytes;
    /* operations */
    char *log_level;
    bool access_log;
    int64_t drain_timeout; /* seconds */
    int64_t ping_interval; /* milliseconds */
};

/* What the command line asked for besides settings. */
enum mm_config_action {
    MM_CONFIG_RUN = 0,
    MM_CONFIG_HELP,
    MM_CONFIG_VERSION,
    MM_CONFIG_PRINT, /* --print-config: the commented example file */
};

/* Fills *c with every option's default. MM_ERR_NOMEM only. */
enum mm_status mm_daemon_config_init(struct mm_daemon_config *c, struct mm_err *err);
void mm_daemon_config_free(struct mm_daemon_config *c);

/* Sets one option by name (underscores or dashes) from its text value,
 * validated (type, range, choices); the message names the option. */
enum mm_status mm_daemon_config_set(struct mm_daemon_config *c, const char *name, const char *value,
                                    struct mm_err *err);

/* Reads a configuration file; errors name the file and line. */
enum mm_status mm_daemon_config_load_file(struct mm_daemon_config *c, const char *path,
                                          struct mm_err *err);

/* Parses argv[1..argc): `--config FILE` first (wherever it appears), then the
 * other flags in order (`--name value` or `--name=value`), so flags override
 * the file. --help, --version and --print-config set *action. Positional
 * arguments are refused. */
enum mm_status mm_daemon_config_parse_args(struct mm_daemon_config *c, int argc, char **argv,
                                           enum mm_config_action *action, struct mm_err *err);

/* Validates the combination (model set, key file readable, ...). */
enum mm_status mm_daemon_config_check(const struct mm_daemon_config *c, struct mm_err *err);

/* --help text: every flag with its default and units. */
void mm_daemon_config_print_help(FILE *f, const char *prog);
/* The commented example configuration file (etc/mmmambad.conf). */
void mm_daemon_config_print_file(FILE *f);

/* Engines one daemon runs at most (the dispatcher's bound). */
#define MM_MAX_DEVICES 64

/* Parses the devices option: "all" (*all, *n = 0) or a comma-separated list
 * of distinct indices 0..1023, at most MM_MAX_DEVICES (ids[0..*n)). */
enum mm_status mm_parse_devices(const char *s, int ids[MM_MAX_DEVICES], int *n, bool *all,
                                struct mm_err *err);

/* Parses "123", "64k", "16m", "2g" (binary multiples) into bytes. */
bool mm_parse_size(const char *s, size_t *out);

#endif
