/* cli.c: the option parser and helpers the subcommands share (cli.h).
 * getopt_long does the scanning (so --name=value, abbreviations and
 * argument permutation work as in other GNU tools); the table gives each
 * value its type, bounds and help line. */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define VAL_BASE 1000 /* getopt values of table entries: VAL_BASE + index */
#define MAX_OPTS 64

int mm_cli_usage_error(const struct mm_cli_cmd *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mmmamba %s: ", cmd->name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see 'mmmamba %s --help')\n", cmd->name);
    va_end(ap);
    return 2;
}

int mm_cli_fail(const struct mm_err *err)
{
    fprintf(stderr, "mmmamba: %s\n", err->msg);
    return 1;
}

bool mm_cli_parse_int(const char *s, long long min, long long max, long long *out)
{
    const char *p = s[0] == '-' ? s + 1 : s;
    if (!*p)
        return false;
    for (; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    char *end;
    errno = 0;
    const long long v = strtoll(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

double mm_cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static bool is_choice(const char *choices, const char *v)
{
    const size_t n = strlen(v);
    for (const char *c = choices; *c;) {
        const char *bar = strchr(c, '|');
        const size_t len = bar ? (size_t)(bar - c) : strlen(c);
        if (len == n && strncmp(c, v, n) == 0)
            return true;
        c += len + (bar != NULL);
    }
    return false;
}

static void print_help(const struct mm_cli_cmd *cmd, const struct mm_cli_opt *opts, int n)
{
    printf("usage: mmmamba %s %s\n%s\n\noptions:\n", cmd->name, cmd->args, cmd->summary);
    for (int i = 0; i < n; i++) {
        const struct mm_cli_opt *o = &opts[i];
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->kind == MM_CLI_FLAG ? "" : " ",
                 o->kind == MM_CLI_FLAG ? "" : o->metavar);
        printf("  %-30s %s", left, o->help);
        if (o->kind == MM_CLI_INT)
            printf(" (default %lld)", *(const long long *)o->dst);
        else if ((o->kind == MM_CLI_STRING || o->kind == MM_CLI_CHOICE) && *(const char **)o->dst)
            printf(" (default %s)", *(const char **)o->dst);
        else if (o->kind == MM_CLI_LIST)
            printf(" (repeatable, at most %lld)", o->max);
        printf("\n");
    }
    printf("  %-30s %s\n", "--help", "show this help");
}

/* Stores one option's value; returns -1 or an exit code. */
static int store(const struct mm_cli_cmd *cmd, const struct mm_cli_opt *o, const char *v)
{
    long long x;
    switch (o->kind) {
    case MM_CLI_FLAG:
        *(bool *)o->dst = true;
        return -1;
    case MM_CLI_STRING:
        *(const char **)o->dst = v;
        return -1;
    case MM_CLI_INT:
        if (!mm_cli_parse_int(v, o->min, o->max, &x))
            return mm_cli_usage_error(cmd, "--%s: '%s' is not a decimal number from %lld to %lld",
                                      o->name, v, o->min, o->max);
        *(long long *)o->dst = x;
        return -1;
    case MM_CLI_CHOICE:
        if (!is_choice(o->metavar, v))
            return mm_cli_usage_error(cmd, "--%s: '%s' is not one of %s", o->name, v, o->metavar);
        *(const char **)o->dst = v;
        return -1;
    case MM_CLI_LIST:
        if (*o->count >= o->max)
            return mm_cli_usage_error(cmd, "at most %lld %ss", o->max, o->name);
        ((const char **)o->dst)[(*o->count)++] = v;
        return -1;
    }
    return -1;
}

int mm_cli_parse(const struct mm_cli_cmd *cmd, const struct mm_cli_opt *opts, int n, int argc,
                 char **argv, const char **pos, int min_pos, int max_pos, int *n_pos)
{
    struct option lo[MAX_OPTS + 2];
    if (n > MAX_OPTS) /* a table in the code, not input: say so plainly */
        return mm_cli_usage_error(cmd, "internal error: more than %d options", MAX_OPTS);
    for (int i = 0; i < n; i++)
        lo[i] = (struct option){opts[i].name,
                                opts[i].kind == MM_CLI_FLAG ? no_argument : required_argument, NULL,
                                VAL_BASE + i};
    lo[n] = (struct option){"help", no_argument, NULL, 'h'};
    lo[n + 1] = (struct option){0};
    optind = 0; /* glibc: start afresh */
    opterr = 0; /* our messages, not getopt's */
    for (;;) {
        const int c = getopt_long(argc, argv, ":h", lo, NULL);
        if (c == -1)
            break;
        if (c == 'h') {
            print_help(cmd, opts, n);
            return 0;
        }
        if (c == ':')
            return mm_cli_usage_error(cmd, "%s needs a value", argv[optind - 1]);
        if (c == '?') {
            if (optopt >= VAL_BASE)
                return mm_cli_usage_error(cmd, "--%s takes no value", opts[optopt - VAL_BASE].name);
            if (optopt)
                return mm_cli_usage_error(cmd, "unknown option '-%c'", optopt);
            return mm_cli_usage_error(cmd, "unknown or ambiguous option '%s'", argv[optind - 1]);
        }
        const int rc = store(cmd, &opts[c - VAL_BASE], optarg);
        if (rc >= 0)
            return rc;
    }
    *n_pos = 0;
    for (int i = optind; i < argc; i++) {
        if (*n_pos == max_pos)
            return mm_cli_usage_error(cmd, "unexpected argument '%s'", argv[i]);
        pos[(*n_pos)++] = argv[i];
    }
    if (*n_pos < min_pos)
        return mm_cli_usage_error(cmd, "missing an argument (usage: mmmamba %s %s)", cmd->name,
                                  cmd->args);
    return -1;
}
