/* fuzz_tokenizer.c: libFuzzer target for the tokenizer.model parser and the
 * tokenizer built from it (src/model/sentencepiece.c, src/model/tokenizer.c).
 * Every input must be rejected with an error or give a tokenizer that can
 * encode and decode: the tail of the input is encoded as text and the ids
 * decoded again, and every id is looked up, so ASan sees any bad table.
 * Build and run: make fuzz-tokenizer && ./fuzz-tokenizer -max_total_time=60 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "model/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mm_tokenizer *tok;
    struct mm_err err;
    if (mm_tokenizer_load_memory(data, size, &tok, &err) != MM_OK)
        return 0;
    const size_t n = size < 64 ? size : 64;
    struct mm_tokens t = {0};
    if (mm_tokenizer_encode(tok, (const char *)data + size - n, n, MM_TOKENIZE_BOS, &t, &err) ==
        MM_OK) {
        char *text;
        size_t len;
        if (mm_tokenizer_decode(tok, t.ids, t.n, &text, &len, &err) == MM_OK)
            free(text);
    }
    mm_tokens_free(&t);
    volatile size_t sink = 0;
    for (int32_t id = 0; id < mm_tokenizer_vocab_size(tok); id++) {
        struct mm_token_info info;
        if (mm_tokenizer_id_info(tok, id, &info, &err) == MM_OK)
            for (size_t k = 0; k < info.len; k++)
                sink += (unsigned char)info.text[k];
    }
    (void)sink;
    mm_tokenizer_free(tok);
    return 0;
}
