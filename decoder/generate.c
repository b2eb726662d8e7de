/* generate.c — prefill (reusing the cached common prefix when asked), then sample, stream
 * and feed back one token at a time until EOG, a stop string, max tokens, a full context
 * or cancellation. */
#include "generate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stop-strings.h"

const char *gm_stop_reason_name(gm_stop_reason r)
{
    switch (r) {
    case GM_STOP_EOG: return "eog";
    case GM_STOP_STRING: return "stop_string";
    case GM_STOP_MAX_TOKENS: return "max_tokens";
    case GM_STOP_CANCELLED: return "cancelled";
    case GM_STOP_CONTEXT_FULL: return "context_full";
    case GM_STOP_ERROR: return "error";
    }
    return "unknown";
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Where prefill may start: at most n_prompt - 1 (the last position is always evaluated to
 * get its logits), and never inside a media span (a media block is evaluated whole). */
static int32_t clamp_keep(const gm_prompt *p, int32_t keep)
{
    if (keep > p->n_positions - 1)
        keep = p->n_positions - 1;
    if (keep < 0)
        keep = 0;
    int32_t pos = 0;
    for (size_t i = 0; i < p->n_spans; i++) {
        const gm_span *s = &p->spans[i];
        if (s->type != GM_SPAN_TEXT && pos < keep && keep < pos + s->n)
            return pos;
        pos += s->n;
    }
    return keep;
}

/* The spans of p from position `from` on, into out (p->n_spans entries). */
static size_t suffix_spans(const gm_prompt *p, int32_t from, gm_span *out)
{
    size_t n = 0;
    int32_t pos = 0;
    for (size_t i = 0; i < p->n_spans; i++) {
        gm_span s = p->spans[i];
        int32_t end = pos + s.n;
        if (end > from) {
            if (pos < from) {  /* only text spans can start before `from` (clamp_keep) */
                int32_t skip = from - pos;
                s.ids += skip;
                s.n -= skip;
            }
            out[n++] = s;
        }
        pos = end;
    }
    return n;
}

typedef struct emitter {
    gm_piece_fn on_piece;
    void *ud;
    gm_stop_filter stop;
} emitter;

/* Passes text through the stop filter to on_piece. Returns 1 on a stop string, 2 when
 * on_piece cancels, 0 to go on, < 0 on error. */
static int emit_text(emitter *e, const char *text, size_t len)
{
    if (len == 0)
        return 0;
    const char *out;
    size_t n;
    int m = gm_stop_filter_push(&e->stop, text, len, &out, &n);
    if (m < 0)
        return m;
    if (n && e->on_piece && e->on_piece(e->ud, out, n))
        return m == 1 ? 1 : 2;
    return m;
}

int gm_generate(gm_context *ctx, const gm_tokenizer *tok, const gm_prompt *prompt,
                const gm_generate_params *params, gm_piece_fn on_piece, gm_token_fn on_token,
                void *ud, gm_generate_result *result, gm_error *err)
{
    gm_generate_result res;
    memset(&res, 0, sizeof res);
    res.stop_reason = GM_STOP_ERROR;
    if (result)
        *result = res;
    if (!ctx || !tok || !prompt || !params)
        return gm_set_error(err, GM_ERR_INVALID, "generate: NULL argument");
    const int32_t n_prompt = prompt->n_positions;
    const int32_t n_ctx = gm_context_n_ctx(ctx);
    res.n_prompt = n_prompt;
    if (result)
        *result = res;
    if (n_prompt <= 0 || prompt->n_spans == 0)
        return gm_set_error(err, GM_ERR_INVALID, "generate: empty prompt");
    for (size_t i = 0; i < prompt->n_spans; i++)
        if (prompt->spans[i].type == GM_SPAN_TEXT && !prompt->spans[i].ids)
            return gm_set_error(err, GM_ERR_INVALID, "generate: prompt span %zu has no ids "
                                "(gm_prompt_finish not called?)", i);
    if (n_prompt > n_ctx)
        return gm_set_error(err, GM_ERR_RANGE, "generate: the prompt has %d positions but the context "
                            "holds %d", n_prompt, n_ctx);
    const int32_t n_vocab = (int32_t)gm_context_model(ctx)->hp.n_vocab;

    int rc = GM_OK;
    gm_stop_reason stop = GM_STOP_ERROR;
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    gm_span *spans = malloc(prompt->n_spans * sizeof *spans);
    size_t piece_cap = 1024;
    char *piece = malloc(piece_cap);
    gm_sampler *smp = gm_sampler_new(&params->sampling, n_vocab);
    emitter em = {on_piece, ud, {0}};
    if (!logits || !spans || !piece || !smp ||
        gm_stop_filter_init(&em.stop, params->stop_strings, params->n_stop_strings)) {
        rc = gm_set_error(err, GM_ERR_NOMEM, "generate: out of memory");
        goto done;
    }

    /* ---- prefill ---- */
    double t0 = now_s();
    int32_t keep = 0;
    if (params->reuse_prefix) {
        int32_t n_past = gm_context_n_past(ctx);
        keep = clamp_keep(prompt, gm_context_common_prefix(ctx, prompt->spans, prompt->n_spans));
        if (keep > n_past) {
            keep = 0;  /* cannot happen with a consistent cache: start over */
            gm_context_clear(ctx);
        } else if (keep < n_past && gm_context_truncate(ctx, keep, NULL) != GM_OK) {
            /* the sliding-window caches no longer hold what position `keep` needs */
            gm_context_clear(ctx);
            keep = 0;
        }
    } else {
        gm_context_clear(ctx);
    }
    res.n_prompt_reused = keep;
    size_t ns = suffix_spans(prompt, keep, spans);
    rc = gm_context_eval(ctx, spans, ns, GM_LOGITS_LAST, logits, err);
    double t1 = now_s();
    res.prefill_seconds = t1 - t0;
    if (rc == GM_ERR_CANCELLED) {
        rc = GM_OK;
        stop = GM_STOP_CANCELLED;
        goto done;
    }
    if (rc)
        goto done;

    /* prompt tokens count for the repetition penalties, as in the reference samplers */
    for (size_t i = 0; i < prompt->n_spans; i++)
        if (prompt->spans[i].type == GM_SPAN_TEXT)
            for (int32_t k = 0; k < prompt->spans[i].n; k++)
                gm_sampler_accept(smp, prompt->spans[i].ids[k]);

    /* ---- decode ---- */
    gm_detok dt;
    gm_detok_init(&dt, params->render_special);
    for (;;) {
        int32_t id = gm_sampler_sample(smp, logits);
        gm_sampler_accept(smp, id);
        res.n_generated++;
        if (on_token && on_token(ud, id)) {
            stop = GM_STOP_CANCELLED;
            break;
        }
        if (gm_tokenizer_is_eog(tok, id)) {
            stop = GM_STOP_EOG;
            break;
        }
        int k;
        while ((k = gm_detok_push(&dt, tok, id, piece, piece_cap)) < 0) {
            char *np = piece_cap < (1u << 24) ? realloc(piece, piece_cap * 2) : NULL;
            if (!np) {
                rc = gm_set_error(err, GM_ERR_NOMEM, "generate: out of memory for the text of token %d", id);
                goto done;
            }
            piece = np;
            piece_cap *= 2;
        }
        int m = emit_text(&em, piece, (size_t)k);
        if (m < 0) {
            rc = gm_set_error(err, GM_ERR_NOMEM, "generate: out of memory");
            goto done;
        }
        if (m == 1) {
            stop = GM_STOP_STRING;
            break;
        }
        if (m == 2) {
            stop = GM_STOP_CANCELLED;
            break;
        }
        if (params->max_tokens > 0 && res.n_generated >= params->max_tokens) {
            stop = GM_STOP_MAX_TOKENS;
            break;
        }
        if (gm_context_n_past(ctx) >= n_ctx) {
            stop = GM_STOP_CONTEXT_FULL;
            break;
        }
        gm_span one = {GM_SPAN_TEXT, 1, &id, NULL};
        rc = gm_context_eval(ctx, &one, 1, GM_LOGITS_LAST, logits, err);
        if (rc == GM_ERR_CANCELLED) {
            rc = GM_OK;
            stop = GM_STOP_CANCELLED;
            break;
        }
        if (rc)
            goto done;
    }

    /* a normal end releases what was held back: a partial character, then any text that
     * only looked like the start of a stop string */
    if (stop == GM_STOP_EOG || stop == GM_STOP_MAX_TOKENS || stop == GM_STOP_CONTEXT_FULL) {
        int k = gm_detok_flush(&dt, piece, piece_cap);
        int m = k > 0 ? emit_text(&em, piece, (size_t)k) : 0;
        if (m == 1) {
            stop = GM_STOP_STRING;
        } else if (m == 2) {
            stop = GM_STOP_CANCELLED;
        } else if (m == 0) {
            const char *out;
            size_t n;
            gm_stop_filter_flush(&em.stop, &out, &n);
            if (n && on_piece && on_piece(ud, out, n))
                stop = GM_STOP_CANCELLED;
        }
    }
    res.decode_seconds = now_s() - t1;

done:
    if (rc)
        stop = GM_STOP_ERROR;
    res.stop_reason = stop;
    if (result)
        *result = res;
    gm_stop_filter_free(&em.stop);
    gm_sampler_free(smp);
    free(piece);
    free(spans);
    free(logits);
    return rc;
}
