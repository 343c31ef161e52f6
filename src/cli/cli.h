/* cli.h: what the `mmmamba` subcommands share. Each subcommand is one
 * function in its own file here, listed once in mmmamba.c's command table.
 *
 * Design: a subcommand declares its options as one table of struct
 * mm_cli_opt, each pointing at the variable it sets; mm_cli_parse runs
 * getopt_long over that table and prints --help from it, so the help text
 * lists exactly the options that exist, with the defaults the variables
 * start with. Numbers are decimal only and range-checked; messages say what
 * is wrong and where. */
#ifndef MM_CLI_CLI_H
#define MM_CLI_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"

enum mm_cli_kind {
    MM_CLI_FLAG,   /* bool *: set when given */
    MM_CLI_STRING, /* const char **: the value */
    MM_CLI_INT,    /* long long *: decimal, within [min, max] */
    MM_CLI_CHOICE, /* const char **: one of the '|'-separated words in metavar */
    MM_CLI_LIST,   /* const char **array: one entry per use, at most max; *count entries */
};

struct mm_cli_opt {
    const char *name; /* long name without the dashes */
    enum mm_cli_kind kind;
    const char *metavar; /* value name in the help ("N", "DIR"); the choices for MM_CLI_CHOICE */
    const char *help;    /* one line */
    void *dst;
    long long min, max; /* MM_CLI_INT bounds; MM_CLI_LIST: max = most entries */
    int *count;         /* MM_CLI_LIST: entries stored so far */
};

/* Table entries; each checks the type of the variable it points at. */
#define MM_CLI_OPT_(name, kind, metavar, help, dst, min, max, count)                               \
    {                                                                                              \
        name, kind, metavar, help, dst, min, max, count                                            \
    }
#define MM_CLI_OPT_FLAG(name, help, ptr)                                                           \
    MM_CLI_OPT_(name, MM_CLI_FLAG, "", help, (1 ? (ptr) : (bool *)0), 0, 0, NULL)
#define MM_CLI_OPT_STRING(name, metavar, help, ptr)                                                \
    MM_CLI_OPT_(name, MM_CLI_STRING, metavar, help, (1 ? (ptr) : (const char **)0), 0, 0, NULL)
#define MM_CLI_OPT_INT(name, metavar, help, ptr, min, max)                                         \
    MM_CLI_OPT_(name, MM_CLI_INT, metavar, help, (1 ? (ptr) : (long long *)0), min, max, NULL)
#define MM_CLI_OPT_CHOICE(name, choices, help, ptr)                                                \
    MM_CLI_OPT_(name, MM_CLI_CHOICE, choices, help, (1 ? (ptr) : (const char **)0), 0, 0, NULL)
#define MM_CLI_OPT_LIST(name, metavar, help, array, max, count)                                    \
    MM_CLI_OPT_(name, MM_CLI_LIST, metavar, help, (1 ? (array) : (const char **)0), 0, max,        \
                (1 ? (count) : (int *)0))

struct mm_cli_cmd {
    const char *name;
    const char *args;    /* the usage line after the name: what is required, what matters */
    const char *summary; /* one line for `mmmamba help` */
    int (*run)(const struct mm_cli_cmd *cmd, int argc, char **argv);
};

/* Parses argv[1..argc) (argv[0] is the subcommand name) against opts[0..n).
 * Positional arguments are stored in pos[0..*n_pos), between min_pos and
 * max_pos of them. Returns -1 to go on; otherwise the exit code to return
 * (0 after printing --help to stdout, 2 after a usage message on stderr). */
int mm_cli_parse(const struct mm_cli_cmd *cmd, const struct mm_cli_opt *opts, int n, int argc,
                 char **argv, const char **pos, int min_pos, int max_pos, int *n_pos);

/* Prints "mmmamba CMD: <message>" and a pointer to --help; returns 2. */
int mm_cli_usage_error(const struct mm_cli_cmd *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prints "mmmamba: <err->msg>"; returns 1. */
int mm_cli_fail(const struct mm_err *err);
/* Strict decimal parse of a whole string within [min, max]; false otherwise. */
bool mm_cli_parse_int(const char *s, long long min, long long max, long long *out);
/* Monotonic seconds. */
double mm_cli_now(void);

struct mm_image_params;
struct mm_image_limits;
struct mm_image_tiles;
struct mm_cli_image_timing {
    int64_t width, height;
    double decode_ms, tiles_ms;
};
/* Reads (a path or a data: URL), decodes and tiles one image, charging its
 * tiles to *used; *tiles is the caller's (mm_image_tiles_free), also on
 * failure. tm may be NULL. */
enum mm_status mm_cli_image_tiles(const char *image, const struct mm_image_params *params,
                                  const struct mm_image_limits *lim, int64_t *used,
                                  struct mm_image_tiles *tiles, struct mm_cli_image_timing *tm,
                                  struct mm_err *err);

/* The subcommands (one file each). */
int mm_cli_mkmodel(const struct mm_cli_cmd *cmd, int argc, char **argv);
int mm_cli_inspect(const struct mm_cli_cmd *cmd, int argc, char **argv);
int mm_cli_generate(const struct mm_cli_cmd *cmd, int argc, char **argv);
int mm_cli_tokenize(const struct mm_cli_cmd *cmd, int argc, char **argv);
int mm_cli_preprocess(const struct mm_cli_cmd *cmd, int argc, char **argv);

#endif
