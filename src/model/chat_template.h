/* chat_template.h: OpenAI-style messages -> prompt token ids for the
 * "internlm2-chat" template (docs/model.md §5):
 *
 *   <s><|im_start|>system\n{SYSTEM}<|im_end|><|im_start|>user\n{USER}<|im_end|>
 *   <|im_start|>assistant\n{ASSISTANT}<|im_end|> ... <|im_start|>assistant\n
 *
 * (one line here; no newline after <|im_end|>). An image part becomes
 * <img> + <IMG_CONTEXT> x (tokens_per_tile * tiles) + </img> + "\n", all of a
 * message's images before its text, as the reference does; several text parts
 * are joined with "\n".
 *
 * Design: ids are produced directly. Template tokens are inserted by id and
 * the text between them is encoded by plain SentencePiece calls WITHOUT
 * added-token matching, so (1) <IMG_CONTEXT> runs are never tokenized from
 * text and (2) message content that literally contains "<|im_end|>",
 * "<|im_start|>" or "<img>" is tokenized as ordinary text and cannot inject
 * turns or image slots (prompt-injection safe, also when the SentencePiece
 * model itself lists those strings as user-defined pieces: see tokenizer.h).
 * Note Hugging Face / vLLM tokenize the rendered string and so do parse
 * special tokens inside content; we deliberately do not. For content without such
 * strings the ids equal tokenizing the rendered prompt with added-token
 * matching, which is what the reference does. No JSON in this layer.
 *
 * Thread contract: a struct mm_chat_template is immutable after creation and
 * may be used from many threads at once; it borrows the tokenizer. */
#ifndef MM_MODEL_CHAT_TEMPLATE_H
#define MM_MODEL_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "model/tokenizer.h"

/* More tiles than this in one image is refused (MM_ERR_LIMIT); real configs
 * use at most max_dynamic_patch + 1 (13). */
#define MM_CHAT_MAX_TILES 1024

/* The reference's default system message. */
extern const char mm_chat_default_system[];

enum mm_chat_role {
    MM_CHAT_SYSTEM = 0,
    MM_CHAT_USER,
    MM_CHAT_ASSISTANT,
};

enum mm_chat_part_kind {
    MM_CHAT_TEXT = 0,
    MM_CHAT_IMAGE,
};

/* One content part; text is borrowed (len bytes, need not be NUL-terminated). */
struct mm_chat_part {
    enum mm_chat_part_kind kind;
    const char *text; /* MM_CHAT_TEXT */
    size_t len;
    int64_t tiles; /* MM_CHAT_IMAGE: tiles after dynamic tiling (incl. thumbnail), >= 1 */
};

struct mm_chat_message {
    enum mm_chat_role role;
    const struct mm_chat_part *parts; /* [n_parts], borrowed */
    int64_t n_parts;
};

struct mm_chat_options {
    const char *system; /* used when messages carry no leading system message; NULL = default */
    bool add_generation_prompt; /* end with "<|im_start|>assistant\n" */
    bool add_bos;               /* prepend <s> (the reference does) */
    /* the messages continue an earlier prompt that ended after an <|im_end|> (a
     * stored conversation): no BOS and no default system message, whatever
     * add_bos and system say */
    bool continuation;
};

struct mm_chat_template;

/* Resolves the template's tokens in tok (borrowed; must outlive the template).
 * name must be "internlm2-chat" (MM_ERR_UNSUPPORTED otherwise); a missing
 * template token is MM_ERR_NOT_FOUND. tokens_per_tile is from the config. */
enum mm_status mm_chat_template_create(const struct mm_tokenizer *tok, const char *name,
                                       int64_t tokens_per_tile, struct mm_chat_template **out,
                                       struct mm_err *err);
void mm_chat_template_free(struct mm_chat_template *tpl);

/* Renders msgs[0..n). A prompt rendered in two parts, the second with
 * continuation set, has the ids of the whole rendered at once when the
 * split falls between two messages. Appends the prompt ids to *ids; when prompt is not NULL
 * also returns the rendered prompt text (heap, NUL-terminated, caller frees;
 * for debugging: it spells out every <IMG_CONTEXT>). Images in system or
 * assistant messages, or tiles < 1, are MM_ERR_INVALID; more than
 * MM_CHAT_MAX_TILES tiles is MM_ERR_LIMIT. On failure *ids is as it was. */
enum mm_status mm_chat_render(const struct mm_chat_template *tpl,
                              const struct mm_chat_message *msgs, int64_t n,
                              const struct mm_chat_options *opt, struct mm_tokens *ids,
                              char **prompt, size_t *prompt_len, struct mm_err *err);

#endif
