/* mmmamba.c: the command-line tool's main. The table below is the list of
 * subcommands: each is one function in src/cli/ (cli.h), which parses its
 * own options from a table and returns an exit code (only main exits).
 * Subcommands are thin: the work lives in the library. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "cli/cli.h"

static const struct mm_cli_cmd commands[] = {
    {"mkmodel", "--preset NAME --out DIR [OPTIONS]",
     "write a synthetic checkpoint (random weights) from a preset", mm_cli_mkmodel},
    {"inspect", "DIR", "load a checkpoint as the server would and describe it", mm_cli_inspect},
    {"generate",
     "--model DIR (--prompt TEXT | --prompt-file FILE | --prompt-ids IDS) [--image IMAGE]... "
     "[--system TEXT] [--ignore-eos] [OPTIONS]",
     "run one prompt (text, images or ids) with greedy decoding", mm_cli_generate},
    {"tokenize", "(--model DIR | --tokenizer FILE) [OPTIONS] (TEXT | --file PATH)",
     "text to token ids and pieces, or ids back to text", mm_cli_tokenize},
    {"preprocess", "IMAGE --out FILE [OPTIONS]", "decode and tile one image to raw fp32 tiles",
     mm_cli_preprocess},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: mmmamba COMMAND [OPTIONS] [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-12s %s\n      mmmamba %s %s\n", commands[i].name, commands[i].summary,
                commands[i].name, commands[i].args);
    fprintf(f, "  %-12s %s\n", "help", "this list; 'mmmamba help COMMAND' for its options");
    fprintf(f, "\n'mmmamba COMMAND --help' lists a command's options and their defaults.\n"
               "Environment: MMMAMBA_LOG=debug|info|warn|error|off sets the log level "
               "(default info).\n");
}

static const struct mm_cli_cmd *find(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(name, commands[i].name) == 0)
            return &commands[i];
    return NULL;
}

int main(int argc, char **argv)
{
    const char *lvl = getenv("MMMAMBA_LOG");
    if (lvl && *lvl) {
        const int l = mm_log_parse_level(lvl);
        if (l < 0) {
            fprintf(stderr, "mmmamba: MMMAMBA_LOG=%s is not one of debug, info, warn, error, off\n",
                    lvl);
            return 2;
        }
        mm_log_set_level((enum mm_log_level)l);
    }
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *a = argv[1];
    if (strcmp(a, "--version") == 0 || strcmp(a, "version") == 0) {
        printf("mmmamba (%s) %s\n", PACKAGE_NAME, PACKAGE_VERSION);
        return 0;
    }
    if (strcmp(a, "help") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
        if (argc == 2) {
            usage(stdout);
            return 0;
        }
        const struct mm_cli_cmd *c = find(argv[2]);
        if (!c || argc > 3) {
            fprintf(stderr, "mmmamba help: %s '%s'\n",
                    c ? "unexpected argument" : "unknown command", argv[c ? 3 : 2]);
            return 2;
        }
        char *help_argv[] = {argv[2], "--help", NULL};
        return c->run(c, 2, help_argv);
    }
    const struct mm_cli_cmd *c = find(a);
    if (!c) {
        fprintf(stderr, "mmmamba: unknown command '%s'\n\n", a);
        usage(stderr);
        return 2;
    }
    return c->run(c, argc - 1, argv + 1);
}
