/* tokenize.c: `mmmamba tokenize`, text to ids and pieces (or ids back to
 * text) with a checkpoint's tokenizer or a bare SentencePiece model; the
 * tokenizer conformance test drives it line by line against spm_encode. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "cli/cli.h"
#include "model/config.h"
#include "model/tokenizer.h"

/* Prints ids (and pieces unless only_ids) of one encoded text. */
static void print_tokens(const struct mm_tokenizer *tok, const struct mm_tokens *t, bool only_ids)
{
    for (int64_t i = 0; i < t->n; i++)
        printf(i ? " %d" : "%d", (int)t->ids[i]);
    printf("\n");
    if (only_ids)
        return;
    for (int64_t i = 0; i < t->n; i++) {
        const char *p = mm_tokenizer_piece(tok, t->ids[i]);
        printf(i ? " %s" : "%s", p ? p : "?");
    }
    printf("\n");
}

/* --decode: one line of space-separated ids in, one line of text out. */
static bool decode_line(const struct mm_tokenizer *tok, const char *line, size_t n,
                        struct mm_tokens *t, struct mm_err *err)
{
    t->n = 0;
    for (size_t i = 0; i < n;) {
        if (line[i] == ' ' || line[i] == '\t' || line[i] == '\r') {
            i++;
            continue;
        }
        size_t e = i;
        while (e < n && line[e] != ' ' && line[e] != '\t' && line[e] != '\r')
            e++;
        char word[24];
        long long v;
        if (e - i >= sizeof word || (memcpy(word, line + i, e - i), word[e - i] = '\0',
                                     !mm_cli_parse_int(word, 0, INT32_MAX, &v))) {
            mm_err_set(err, MM_ERR_INVALID, "not a token id: \"%.*s\"", (int)(e - i), line + i);
            return false;
        }
        if (mm_tokens_push(t, (int32_t)v, err) != MM_OK)
            return false;
        i = e;
    }
    char *text;
    size_t len;
    if (mm_tokenizer_decode(tok, t->ids, t->n, &text, &len, err) != MM_OK)
        return false;
    fwrite(text, 1, len, stdout);
    putchar('\n');
    free(text);
    return true;
}

int mm_cli_tokenize(const struct mm_cli_cmd *cmd, int argc, char **argv)
{
    const char *model = NULL, *file = NULL, *path = NULL;
    bool no_bos = false, lines = false, decode = false, bench = false;
    const struct mm_cli_opt opts[] = {
        MM_CLI_OPT_STRING("model", "DIR", "a checkpoint's tokenizer, added tokens included",
                          &model),
        MM_CLI_OPT_STRING("tokenizer", "FILE", "a bare SentencePiece .model instead", &file),
        MM_CLI_OPT_STRING("file", "PATH", "read the text from PATH ('-': stdin) instead of TEXT",
                          &path),
        MM_CLI_OPT_FLAG("no-bos", "do not prepend <s>", &no_bos),
        MM_CLI_OPT_FLAG("lines", "one line of ids per input line (like spm_encode)", &lines),
        MM_CLI_OPT_FLAG("decode", "input lines are ids: print their text", &decode),
        MM_CLI_OPT_FLAG("bench", "time encoding the whole input (best of 5)", &bench),
    };
    const char *pos[1];
    int n_pos;
    const int rc0 =
        mm_cli_parse(cmd, opts, sizeof opts / sizeof opts[0], argc, argv, pos, 0, 1, &n_pos);
    if (rc0 >= 0)
        return rc0;
    if (!model == !file)
        return mm_cli_usage_error(cmd, "give one of --model or --tokenizer");
    if (!n_pos == !path)
        return mm_cli_usage_error(cmd, "give one of TEXT or --file");
    const char *text = n_pos ? pos[0] : NULL;
    struct mm_err err;
    struct mm_tokenizer *tok;
    struct mm_config cfg;
    if (model && mm_config_load(model, &cfg, &err) != MM_OK)
        return mm_cli_fail(&err);
    if ((model ? mm_tokenizer_load_checkpoint(model, &cfg, &tok, &err)
               : mm_tokenizer_load_model(file, &tok, &err)) != MM_OK)
        return mm_cli_fail(&err);
    char *buf = NULL;
    size_t len = text ? strlen(text) : 0;
    if (path && mm_file_read_all(strcmp(path, "-") == 0 ? "/dev/stdin" : path, (size_t)1 << 30,
                                 &buf, &len, &err) != MM_OK) {
        mm_tokenizer_free(tok);
        return mm_cli_fail(&err);
    }
    const char *in = path ? buf : text;
    const unsigned flags = (no_bos ? 0 : MM_TOKENIZE_BOS) | (model ? MM_TOKENIZE_SPECIAL : 0);
    struct mm_tokens t = {0};
    int rc = 0;
    if (bench) {
        double best = 1e30;
        for (int r = 0; r < 5 && rc == 0; r++) {
            t.n = 0;
            const double t0 = mm_cli_now();
            if (mm_tokenizer_encode(tok, in, len, flags, &t, &err) != MM_OK)
                rc = mm_cli_fail(&err);
            const double dt = mm_cli_now() - t0;
            best = dt < best ? dt : best;
        }
        if (rc == 0)
            printf("%zu bytes -> %lld tokens in %.2f ms (%.0f tokens/s, %.1f MB/s)\n", len,
                   (long long)t.n, best * 1e3, (double)t.n / best, (double)len / best / 1e6);
    } else if (lines || decode) {
        /* one output line per input line (split on '\n', like spm_encode) */
        for (size_t s = 0; s < len && rc == 0;) {
            const char *nl = memchr(in + s, '\n', len - s);
            const size_t e = nl ? (size_t)(nl - in) : len;
            if (decode) {
                if (!decode_line(tok, in + s, e - s, &t, &err))
                    rc = mm_cli_fail(&err);
            } else {
                t.n = 0;
                if (mm_tokenizer_encode(tok, in + s, e - s, flags, &t, &err) != MM_OK)
                    rc = mm_cli_fail(&err);
                else
                    print_tokens(tok, &t, true);
            }
            s = e + 1;
        }
    } else if (mm_tokenizer_encode(tok, in, len, flags, &t, &err) != MM_OK) {
        rc = mm_cli_fail(&err);
    } else {
        print_tokens(tok, &t, false);
    }
    mm_tokens_free(&t);
    free(buf);
    mm_tokenizer_free(tok);
    return rc;
}
