/* prompt.c: prompt checks and prefill chunking at tile boundaries
 * (prompt.h). */
#include "engine/prompt.h"

int64_t mm_prompt_image_tokens(const struct mm_config *cfg, const int32_t *ids, int64_t n)
{
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        k += ids[i] == cfg->img_context_token_id;
    return k;
}

enum mm_status mm_prompt_check_tiles(const struct mm_config *cfg, const int32_t *ids, int64_t n,
                                     int64_t n_tiles, struct mm_err *err)
{
    const int64_t tpt = cfg->tokens_per_tile;
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        while (j < n && ids[j] == cfg->img_context_token_id)
            j++;
        if ((j - i) % tpt)
            return mm_err_set(err, MM_ERR_INVALID,
                              "the image-context run at position %lld has %lld tokens, not a "
                              "whole number of tiles (%lld tokens per tile)",
                              (long long)i, (long long)(j - i), (long long)tpt);
        i = j > i ? j : i + 1;
    }
    const int64_t img = mm_prompt_image_tokens(cfg, ids, n);
    if (n_tiles < 0 || img != n_tiles * tpt)
        return mm_err_set(err, MM_ERR_INVALID,
                          "the prompt has %lld image-context tokens but %lld tiles were given "
                          "(%lld tokens per tile)",
                          (long long)img, (long long)n_tiles, (long long)tpt);
    return MM_OK;
}

struct mm_prompt_chunk mm_prompt_next_chunk(const struct mm_config *cfg, const int32_t *ids,
                                            int64_t n, int64_t begin, int64_t max_ids)
{
    const int32_t img = (int32_t)cfg->img_context_token_id;
    const int64_t tpt = cfg->tokens_per_tile;
    int64_t end = max_ids > 0 && max_ids < n - begin ? begin + max_ids : n;
    if (end < n && ids[end] == img && ids[end - 1] == img) {
        /* inside a run: round up to the end of the tile being cut */
        int64_t run = end;
        while (run > 0 && ids[run - 1] == img)
            run--;
        const int64_t into = (end - run) % tpt;
        end += into ? tpt - into : 0;
        if (end > n)
            end = n;
    }
    const int64_t k = mm_prompt_image_tokens(cfg, ids + begin, end - begin);
    return (struct mm_prompt_chunk){begin, end, k / tpt};
}
