/* masks.h — which keys a query attends to in the Gemma 4 text decoder
 * (gemma4-model.md §3). Internal to decoder/; header-only.
 *
 * Every visible set is one contiguous range of positions:
 *  - full-attention layers: causal, [0, q];
 *  - sliding layers: k <= q and k > q - W, i.e. [q - W + 1, q];
 *  - sliding layers of a "vision" model, for a query inside an image/video block that
 *    ends (exclusive) at block_end: (k <= q OR same block) AND k > q - W, i.e.
 *    [q - W + 1, block_end - 1] (earlier block tokens only inside the window).
 * Full layers ignore blocks; audio never forms blocks (the caller passes block_end <= q).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* Visible keys of the query at position q: [*k0, *k1). block_end <= q means "no block". */
static inline void gm_mask_key_range(bool sliding, int32_t window, int32_t q, int32_t block_end,
                                     int32_t *k0, int32_t *k1)
{
    int32_t lo = 0, hi = q + 1;
    if (sliding) {
        lo = q - window + 1;
        if (lo < 0)
            lo = 0;
        if (block_end > hi)
            hi = block_end;
    }
    *k0 = lo;
    *k1 = hi;
}

/* The same rule as a predicate (tests and documentation). */
static inline bool gm_mask_visible(bool sliding, int32_t window, int32_t q, int32_t block_end, int32_t k)
{
    int32_t k0, k1;
    gm_mask_key_range(sliding, window, q, block_end, &k0, &k1);
    return k >= k0 && k < k1;
}
