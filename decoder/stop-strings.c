/* stop-strings.c — stop-string matching over streamed text.
 *
 * Everything emitted is known not to be part of a stop string: the filter keeps the
 * longest tail of the text that is a proper prefix of some stop string and releases the
 * rest. A match is searched only inside the held text plus the new piece, which is enough
 * because any match must start in what was held back. */
#include "stop-strings.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/gm-error.h"

int gm_stop_filter_init(gm_stop_filter *f, const char *const *stops, size_t n)
{
    memset(f, 0, sizeof *f);
    if (n == 0 || !stops)
        return GM_OK;
    f->stops = calloc(n, sizeof *f->stops);
    f->lens = calloc(n, sizeof *f->lens);
    if (!f->stops || !f->lens) {
        gm_stop_filter_free(f);
        return GM_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (!stops[i] || !stops[i][0])
            continue;
        size_t l = strlen(stops[i]);
        char *c = malloc(l + 1);
        if (!c) {
            gm_stop_filter_free(f);
            return GM_ERR_NOMEM;
        }
        memcpy(c, stops[i], l + 1);
        f->stops[f->n_stops] = c;
        f->lens[f->n_stops] = l;
        f->n_stops++;
    }
    return GM_OK;
}

void gm_stop_filter_free(gm_stop_filter *f)
{
    if (f->stops)
        for (size_t i = 0; i < f->n_stops; i++)
            free(f->stops[i]);
    free(f->stops);
    free(f->lens);
    free(f->buf);
    memset(f, 0, sizeof *f);
}

/* Longest h < len(stop) such that the last h bytes of s are a prefix of some stop string. */
static size_t held_tail(const gm_stop_filter *f, const char *s, size_t n)
{
    size_t best = 0;
    for (size_t k = 0; k < f->n_stops; k++) {
        size_t max = f->lens[k] - 1 < n ? f->lens[k] - 1 : n;
        for (size_t h = max; h > best; h--) {
            if (memcmp(s + n - h, f->stops[k], h) == 0) {
                best = h;
                break;
            }
        }
    }
    return best;
}

int gm_stop_filter_push(gm_stop_filter *f, const char *text, size_t len, const char **emit,
                        size_t *emit_len)
{
    *emit = "";
    *emit_len = 0;
    if (f->stopped)
        return 1;
    /* drop what the previous call released */
    if (f->n_emitted) {
        memmove(f->buf, f->buf + f->n_emitted, f->n_buf - f->n_emitted);
        f->n_buf -= f->n_emitted;
        f->n_emitted = 0;
    }
    if (f->n_stops == 0) {
        *emit = text;
        *emit_len = len;
        return 0;
    }
    if (f->n_buf + len > f->cap_buf) {
        size_t nc = f->cap_buf ? f->cap_buf : 256;
        while (nc < f->n_buf + len)
            nc *= 2;
        char *b = realloc(f->buf, nc);
        if (!b)
            return GM_ERR_NOMEM;
        f->buf = b;
        f->cap_buf = nc;
    }
    if (len)
        memcpy(f->buf + f->n_buf, text, len);
    f->n_buf += len;

    /* earliest match of any stop string */
    size_t at = SIZE_MAX;
    for (size_t k = 0; k < f->n_stops; k++) {
        if (f->lens[k] > f->n_buf)
            continue;
        const char *m = memmem(f->buf, f->n_buf, f->stops[k], f->lens[k]);
        if (m && (size_t)(m - f->buf) < at)
            at = (size_t)(m - f->buf);
    }
    if (at != SIZE_MAX) {
        f->stopped = true;
        *emit = f->buf;
        *emit_len = at;
        f->n_emitted = 0;
        f->n_buf = at;
        return 1;
    }
    size_t hold = held_tail(f, f->buf, f->n_buf);
    f->n_emitted = f->n_buf - hold;
    *emit = f->buf;
    *emit_len = f->n_emitted;
    return 0;
}

void gm_stop_filter_flush(gm_stop_filter *f, const char **emit, size_t *emit_len)
{
    *emit = "";
    *emit_len = 0;
    if (f->stopped || !f->buf)
        return;
    *emit = f->buf + f->n_emitted;
    *emit_len = f->n_buf - f->n_emitted;
    f->n_emitted = f->n_buf;
}
