/* stop-strings.h — private to the generate loop: holds back streamed text that could be
 * the start of a stop string, and cuts the text before a stop string once one appears. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef struct gm_stop_filter {
    char **stops;      /* copies, non-empty strings only */
    size_t *lens;
    size_t n_stops;
    char *buf;         /* held text, then (after a push) the text released by it */
    size_t n_buf, cap_buf;
    size_t n_emitted;  /* leading bytes of buf handed out by the last call */
    bool stopped;
} gm_stop_filter;

/* Copies the stop strings (empty ones are ignored). 0 or GM_ERR_NOMEM. */
int gm_stop_filter_init(gm_stop_filter *f, const char *const *stops, size_t n);
void gm_stop_filter_free(gm_stop_filter *f);

/* Feeds new text. *emit / *emit_len receive the text that can be shown now (valid until
 * the next call). Returns 1 when a stop string matched: *emit is then the text before it,
 * and the rest is dropped; 0 when streaming continues; GM_ERR_NOMEM on allocation failure.
 * After a match every further push returns 1 with nothing to emit. */
int gm_stop_filter_push(gm_stop_filter *f, const char *text, size_t len, const char **emit,
                        size_t *emit_len);

/* End of stream without a match: the text still held back. */
void gm_stop_filter_flush(gm_stop_filter *f, const char **emit, size_t *emit_len);
