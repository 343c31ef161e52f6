/* chat_template.c: the internlm2-chat template (see chat_template.h).
 *
 * Rendering walks the messages once and feeds a small builder two kinds of
 * things: literal text (collected into the current segment) and template
 * token ids (which first encode and flush the segment). The same walk writes
 * the debug prompt string, so the two can never disagree. */
#include "model/chat_template.h"

#include <stdlib.h>
#include <string.h>

#include "base/checked.h"

const char mm_chat_default_system[] =
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, "
    "是一个有用无害的人工智能助手。";

enum { TOK_IM_START, TOK_IM_END, TOK_IMG, TOK_IMG_END, TOK_IMG_CONTEXT, N_TOK };
static const char *const tok_names[N_TOK] = {"<|im_start|>", "<|im_end|>", "<img>", "</img>",
                                             "<IMG_CONTEXT>"};

struct mm_chat_template {
    const struct mm_tokenizer *tok;
    int64_t tokens_per_tile;
    int32_t id[N_TOK];
};

enum mm_status mm_chat_template_create(const struct mm_tokenizer *tok, const char *name,
                                       int64_t tokens_per_tile, struct mm_chat_template **out,
                                       struct mm_err *err)
{
    *out = NULL;
    if (!name || strcmp(name, "internlm2-chat") != 0)
        return mm_err_set(err, MM_ERR_UNSUPPORTED,
                          "chat template \"%s\" is not supported (only internlm2-chat)",
                          name ? name : "(null)");
    if (tokens_per_tile < 1)
        return mm_err_set(err, MM_ERR_INVALID, "tokens_per_tile must be >= 1");
    struct mm_chat_template *t = calloc(1, sizeof *t);
    if (!t)
        return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
    t->tok = tok;
    t->tokens_per_tile = tokens_per_tile;
    for (int k = 0; k < N_TOK; k++)
        if ((t->id[k] = mm_tokenizer_find(tok, tok_names[k])) < 0) {
            free(t);
            return mm_err_set(err, MM_ERR_NOT_FOUND, "chat template: the tokenizer has no %s token",
                              tok_names[k]);
        }
    *out = t;
    return MM_OK;
}

void mm_chat_template_free(struct mm_chat_template *tpl) { free(tpl); }

/* ---- builder ------------------------------------------------------------- */

struct text {
    char *p;
    size_t n, cap;
};

struct builder {
    const struct mm_chat_template *tpl;
    struct mm_tokens *ids;
    struct text seg;    /* text since the last template token */
    struct text prompt; /* whole rendered prompt, when wanted */
    bool want_prompt;
};

static enum mm_status text_put(struct text *t, const char *s, size_t n, struct mm_err *err)
{
    size_t need;
    if (!mm_size_add(t->n, n + 1, &need))
        return mm_err_set(err, MM_ERR_OVERFLOW, "prompt too long");
    if (need > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < need)
            if (!mm_size_mul(cap, 2, &cap))
                return mm_err_set(err, MM_ERR_OVERFLOW, "prompt too long");
        char *p = realloc(t->p, cap);
        if (!p)
            return mm_err_set(err, MM_ERR_NOMEM, "out of memory");
        t->p = p;
        t->cap = cap;
    }
    if (n)
        memcpy(t->p + t->n, s, n);
    t->n += n;
    t->p[t->n] = '\0';
    return MM_OK;
}

static enum mm_status put_text(struct builder *b, const char *s, size_t n, struct mm_err *err)
{
    enum mm_status st = text_put(&b->seg, s, n, err);
    if (st == MM_OK && b->want_prompt)
        st = text_put(&b->prompt, s, n, err);
    return st;
}

/* Encodes the pending segment as one SentencePiece call (no added-token matching). */
static enum mm_status flush(struct builder *b, struct mm_err *err)
{
    if (b->seg.n == 0)
        return MM_OK;
    enum mm_status st = mm_tokenizer_encode(b->tpl->tok, b->seg.p, b->seg.n, 0, b->ids, err);
    b->seg.n = 0;
    return st;
}

/* Appends count copies of template token k. */
static enum mm_status put_token(struct builder *b, int k, int64_t count, struct mm_err *err)
{
    enum mm_status st = flush(b, err);
    for (int64_t i = 0; i < count && st == MM_OK; i++) {
        st = mm_tokens_push(b->ids, b->tpl->id[k], err);
        if (st == MM_OK && b->want_prompt)
            st = text_put(&b->prompt, tok_names[k], strlen(tok_names[k]), err);
    }
    return st;
}

static const char *role_name(enum mm_chat_role r)
{
    return r == MM_CHAT_SYSTEM ? "system" : r == MM_CHAT_USER ? "user" : "assistant";
}

/* <|im_start|>ROLE\n [images] text <|im_end|> */
static enum mm_status render_message(struct builder *b, const struct mm_chat_message *m,
                                     int64_t index, struct mm_err *err)
{
    if (m->role != MM_CHAT_SYSTEM && m->role != MM_CHAT_USER && m->role != MM_CHAT_ASSISTANT)
        return mm_err_set(err, MM_ERR_INVALID, "message %lld: unknown role", (long long)index);
    if (m->n_parts < 0 || (m->n_parts > 0 && !m->parts))
        return mm_err_set(err, MM_ERR_INVALID, "message %lld: bad parts", (long long)index);
    const char *role = role_name(m->role);
    enum mm_status st;
    if ((st = put_token(b, TOK_IM_START, 1, err)) != MM_OK ||
        (st = put_text(b, role, strlen(role), err)) != MM_OK ||
        (st = put_text(b, "\n", 1, err)) != MM_OK)
        return st;
    for (int64_t i = 0; i < m->n_parts; i++) {
        const struct mm_chat_part *p = &m->parts[i];
        if (p->kind != MM_CHAT_IMAGE)
            continue;
        if (m->role != MM_CHAT_USER)
            return mm_err_set(err, MM_ERR_INVALID,
                              "message %lld: images are only allowed in user messages",
                              (long long)index);
        int64_t count;
        if (p->tiles < 1)
            return mm_err_set(err, MM_ERR_INVALID, "message %lld: bad tile count %lld",
                              (long long)index, (long long)p->tiles);
        if (p->tiles > MM_CHAT_MAX_TILES || !mm_i64_mul(p->tiles, b->tpl->tokens_per_tile, &count))
            return mm_err_set(err, MM_ERR_LIMIT, "message %lld: %lld tiles in one image (max %d)",
                              (long long)index, (long long)p->tiles, MM_CHAT_MAX_TILES);
        if ((st = put_token(b, TOK_IMG, 1, err)) != MM_OK ||
            (st = put_token(b, TOK_IMG_CONTEXT, count, err)) != MM_OK ||
            (st = put_token(b, TOK_IMG_END, 1, err)) != MM_OK ||
            (st = put_text(b, "\n", 1, err)) != MM_OK)
            return st;
    }
    bool first = true;
    for (int64_t i = 0; i < m->n_parts; i++) {
        const struct mm_chat_part *p = &m->parts[i];
        if (p->kind == MM_CHAT_IMAGE)
            continue;
        if (p->kind != MM_CHAT_TEXT || (!p->text && p->len))
            return mm_err_set(err, MM_ERR_INVALID, "message %lld: bad content part",
                              (long long)index);
        if ((!first && (st = put_text(b, "\n", 1, err)) != MM_OK) ||
            (st = put_text(b, p->text, p->len, err)) != MM_OK)
            return st;
        first = false;
    }
    return put_token(b, TOK_IM_END, 1, err);
}

enum mm_status mm_chat_render(const struct mm_chat_template *tpl,
                              const struct mm_chat_message *msgs, int64_t n,
                              const struct mm_chat_options *opt, struct mm_tokens *ids,
                              char **prompt, size_t *prompt_len, struct mm_err *err)
{
    if (!tpl || !ids || !opt || n < 0 || (n > 0 && !msgs))
        return mm_err_set(err, MM_ERR_INVALID, "mm_chat_render: bad arguments");
    const int64_t n0 = ids->n;
    struct builder b = {.tpl = tpl, .ids = ids, .want_prompt = prompt != NULL};
    enum mm_status st = MM_OK;
    const int32_t bos = mm_tokenizer_bos_id(tpl->tok);
    if (opt->add_bos && !opt->continuation && bos >= 0) {
        if ((st = mm_tokens_push(ids, bos, err)) != MM_OK)
            goto fail;
        if (b.want_prompt && (st = text_put(&b.prompt, "<s>", 3, err)) != MM_OK)
            goto fail;
    }
    if (!opt->continuation && (n == 0 || msgs[0].role != MM_CHAT_SYSTEM)) {
        const char *sys = opt->system ? opt->system : mm_chat_default_system;
        const struct mm_chat_part part = {.kind = MM_CHAT_TEXT, .text = sys, .len = strlen(sys)};
        const struct mm_chat_message m = {.role = MM_CHAT_SYSTEM, .parts = &part, .n_parts = 1};
        if ((st = render_message(&b, &m, -1, err)) != MM_OK)
            goto fail;
    }
    for (int64_t i = 0; i < n; i++)
        if ((st = render_message(&b, &msgs[i], i, err)) != MM_OK)
            goto fail;
    if (opt->add_generation_prompt &&
        ((st = put_token(&b, TOK_IM_START, 1, err)) != MM_OK ||
         (st = put_text(&b, "assistant\n", 10, err)) != MM_OK || (st = flush(&b, err)) != MM_OK))
        goto fail;
    if ((st = flush(&b, err)) != MM_OK)
        goto fail;
    free(b.seg.p);
    if (prompt) {
        if (!b.prompt.p && (st = text_put(&b.prompt, "", 0, err)) != MM_OK)
            goto fail;
        *prompt = b.prompt.p;
        if (prompt_len)
            *prompt_len = b.prompt.n;
    }
    return MM_OK;
fail:
    free(b.seg.p);
    free(b.prompt.p);
    ids->n = n0;
    return st;
}
