/* fuzz_safetensors.c: libFuzzer target for the safetensors header parser
 * (src/model/safetensors.c). Every input must either be rejected with an
 * error or yield tensors whose byte ranges lie inside the input, which this
 * target reads end to end so ASan would see any escape.
 * Build and run: make fuzz-safetensors && ./fuzz-safetensors -max_total_time=60 */
#include <stddef.h>
#include <stdint.h>

#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mm_safetensors *st;
    struct mm_err err;
    if (mm_safetensors_open_buffer(data, size, "fuzz", &st, &err) != MM_OK)
        return 0;
    volatile uint8_t sink = 0;
    for (int64_t i = 0; i < mm_safetensors_count(st); i++) {
        const struct mm_tensor *t = mm_safetensors_at(st, i);
        for (size_t k = 0; k < t->nbytes; k++)
            sink ^= ((const uint8_t *)t->data)[k];
        (void)mm_safetensors_find(st, t->name);
    }
    (void)sink;
    mm_safetensors_close(st);
    return 0;
}
