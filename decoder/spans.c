/* spans.c — the span lists gm_context_eval takes: validation, iteration row by row,
 * chunk planning that never splits a vision block, and the per-position keys that
 * gm_context_common_prefix compares (token ids, hashes of media embeddings).
 */
#include "context-internal.h"

#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ hashing */

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ------------------------------------------------------------------ span iteration */

static bool is_block_type(gm_span_type t)
{
    return t == GM_SPAN_IMAGE || t == GM_SPAN_VIDEO;
}

/* A media "unit" is what is hashed (and, for vision blocks, never split): in a vision
 * model a maximal run of image/video spans (one bidirectional block, §3.2), otherwise
 * one span. Returns the index one past the unit's last span and its length. */
static size_t unit_extent(const gm_span *spans, size_t n_spans, size_t i, bool vision, int64_t *len)
{
    *len = spans[i].n;
    size_t j = i + 1;
    if (vision && is_block_type(spans[i].type)) {
        for (; j < n_spans; j++) {
            if (spans[j].n == 0)
                continue;
            if (!is_block_type(spans[j].type))
                break;
            *len += spans[j].n;
        }
        /* trailing empty spans belong to nobody */
        while (j > i + 1 && spans[j - 1].n == 0)
            j--;
    }
    return j;
}

void gm_row_iter_init(row_iter *it, const gm_context *c, const gm_span *spans, size_t n_spans, int64_t pos)
{
    memset(it, 0, sizeof *it);
    it->spans = spans;
    it->n_spans = n_spans;
    it->vision = c->m->hp.bidir == GM_BIDIR_VISION;
    it->H = c->H;
    it->media_ids = c->m->hp.media_placeholder_ids;
    it->pos = pos;
}

static void iter_start_unit(row_iter *it)
{
    int64_t len;
    size_t end = unit_extent(it->spans, it->n_spans, it->si, it->vision, &len);
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t j = it->si; j < end; j++) {
        const gm_span *s = &it->spans[j];
        if (s->n > 0 && s->embd) /* (common_prefix may see spans eval would reject) */
            h = fnv1a(h, s->embd, (size_t)s->n * (size_t)it->H * sizeof(float));
        else
            h = mix64(h ^ (uint64_t)s->n);
    }
    h = mix64(h ^ mix64((uint64_t)len) ^ ((uint64_t)it->spans[it->si].type << 56));
    it->unit_hash = h;
    it->unit_left = len;
    it->unit_idx = 0;
    it->unit_end = it->pos + len;
    it->unit_block = it->vision && is_block_type(it->spans[it->si].type);
}

/* transformers embeds every image/video/audio placeholder id as the pad id 0, also where
 * it is plain text (e.g. generated): the row's embedding and PLE identity row are row 0. */
static int32_t embed_id(const row_iter *it, int32_t id)
{
    for (int i = 0; i < GM_N_MEDIA_PLACEHOLDERS; i++)
        if (id == it->media_ids[i])
            return 0;
    return id;
}

bool gm_row_iter_next(row_iter *it, row_info *r)
{
    while (it->si < it->n_spans && it->off >= it->spans[it->si].n) {
        it->si++;
        it->off = 0;
    }
    if (it->si >= it->n_spans)
        return false;
    const gm_span *s = &it->spans[it->si];
    r->type = (uint8_t)s->type;
    if (s->type == GM_SPAN_TEXT) {
        r->embd = NULL;
        int32_t id = s->ids[it->off];
        r->id = embed_id(it, id);
        r->blk_end = -1;
        r->key = (uint64_t)(uint32_t)id;
        it->unit_left = 0;
    } else {
        if (it->unit_left == 0)
            iter_start_unit(it);
        r->embd = s->embd + (size_t)it->off * (size_t)it->H;
        r->id = 0; /* soft tokens use the pad row of the PLE table (§2.3, §6.4) */
        r->blk_end = it->unit_block ? (int32_t)it->unit_end : -1;
        r->key = mix64(it->unit_hash + (uint64_t)it->unit_idx * 0x9e3779b97f4a7c15ull);
        it->unit_idx++;
        it->unit_left--;
    }
    it->off++;
    it->pos++;
    return true;
}

/* Chunk planner: lengths only. Vision blocks are atomic; everything else splits freely. */
void gm_planner_init(planner *p, const gm_context *c, const gm_span *spans, size_t n_spans)
{
    *p = (planner){ spans, n_spans, c->m->hp.bidir == GM_BIDIR_VISION, 0, 0 };
}

int64_t gm_planner_next(planner *p, int32_t n_batch)
{
    int64_t len = 0;
    for (;;) {
        while (p->si < p->n_spans && p->off >= p->spans[p->si].n) {
            p->si++;
            p->off = 0;
        }
        if (p->si >= p->n_spans || len >= n_batch)
            break;
        const gm_span *s = &p->spans[p->si];
        if (p->vision && is_block_type(s->type) && p->off == 0) {
            int64_t ulen;
            size_t end = unit_extent(p->spans, p->n_spans, p->si, p->vision, &ulen);
            if (len > 0 && len + ulen > n_batch)
                break;
            len += ulen;
            p->si = end;
            p->off = 0;
        } else {
            int64_t take = s->n - p->off;
            if (take > n_batch - len)
                take = n_batch - len;
            len += take;
            p->off += (int32_t)take;
        }
    }
    return len;
}

int gm_spans_validate(const gm_context *c, const gm_span *spans, size_t n_spans, int64_t *total,
                      gm_error *err)
{
    const gm_model *m = c->m;
    int64_t n = 0;
    int64_t ple_rows = c->P > 0 ? m->ple_tok_embd.rows : INT64_MAX;
    if (n_spans && !spans)
        return gm_set_error(err, GM_ERR_INVALID, "no spans given");
    for (size_t i = 0; i < n_spans; i++) {
        const gm_span *s = &spans[i];
        if (s->n < 0)
            return gm_set_error(err, GM_ERR_INVALID, "span %zu has a negative length", i);
        if (s->type != GM_SPAN_TEXT && s->type != GM_SPAN_IMAGE && s->type != GM_SPAN_VIDEO &&
            s->type != GM_SPAN_AUDIO)
            return gm_set_error(err, GM_ERR_INVALID, "span %zu has unknown type %d", i, (int)s->type);
        if (s->n == 0)
            continue;
        if (s->type == GM_SPAN_TEXT) {
            if (!s->ids)
                return gm_set_error(err, GM_ERR_INVALID, "text span %zu has no ids", i);
            for (int32_t j = 0; j < s->n; j++)
                if (s->ids[j] < 0 || (uint32_t)s->ids[j] >= m->hp.n_vocab || s->ids[j] >= ple_rows)
                    return gm_set_error(err, GM_ERR_INVALID, "span %zu: token id %d at %d is outside the "
                                        "vocabulary (%u)", i, s->ids[j], j, m->hp.n_vocab);
        } else if (!s->embd) {
            return gm_set_error(err, GM_ERR_INVALID, "media span %zu has no embeddings", i);
        }
        n += s->n;
    }
    *total = n;
    return GM_OK;
}

int32_t gm_context_common_prefix(const gm_context *c, const gm_span *spans, size_t n_spans)
{
    if (!c || (!spans && n_spans))
        return 0;
    row_iter it;
    gm_row_iter_init(&it, c, spans, n_spans, 0);
    int32_t n = 0, span_start = 0;
    size_t cur_span = (size_t)-1;
    row_info r;
    for (;;) {
        if (n >= c->n_past)
            break;
        /* validate lazily: stop at anything eval would reject */
        while (it.si < n_spans && it.off >= spans[it.si].n) {
            it.si++;
            it.off = 0;
        }
        if (it.si >= n_spans)
            break;
        const gm_span *s = &spans[it.si];
        if (s->type == GM_SPAN_TEXT ? !s->ids : !s->embd)
            break;
        if (it.si != cur_span) {
            cur_span = it.si;
            span_start = n;
        }
        gm_row_iter_next(&it, &r);
        if (c->pos_type[n] != r.type || c->pos_key[n] != r.key)
            break;
        n++;
    }
    /* Never end inside a media span: its rows are evaluated (and hashed) together. */
    if (cur_span != (size_t)-1 && cur_span < n_spans && spans[cur_span].type != GM_SPAN_TEXT &&
        n < span_start + spans[cur_span].n)
        n = span_start;
    return n;
}
