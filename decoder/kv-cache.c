/* kv-cache.c — the KV cache of a gm_context: layout, ring growth, the undo log that
 * makes a failed eval invisible, truncate and clear.
 *
 * F32, per layer that owns its KV (keys transposed, see kv_layer). Full layers hold
 * n_ctx slots (slot = position). Sliding layers hold a ring of swa_cap >= window - 1 +
 * chunk slots (slot = position % swa_cap): a chunk's queries need the window before the
 * chunk plus the chunk itself, all resident at once. (A vision block longer than n_batch
 * makes its chunk, and the rings, grow.)
 *
 * Failure atomicity: an eval only becomes visible when n_past is committed at its end.
 * Full-layer writes land past n_past and are harmless. Ring writes can overwrite old
 * positions that a later truncate might still want; those few slots are saved first
 * (at most one per new position) and put back if the eval fails or is cancelled.
 */
#include "context-internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int32_t kv_kstride(int32_t cap)
{
    return (cap + 15) / 16 * 16 + 16;
}

size_t gm_kv_layer_bytes(const kv_layer *kv)
{
    return ((size_t)kv->n_kv * (size_t)kv->hd * (size_t)kv->kstride +
            (size_t)kv->n_kv * (size_t)kv->cap * (size_t)kv->hd) * sizeof(float);
}

bool gm_kv_alloc(kv_layer *kv)
{
    kv->kstride = kv_kstride(kv->cap);
    /* calloc: the padding is read (masked off) by the vector kernels, keep it defined */
    kv->k = calloc((size_t)kv->n_kv * (size_t)kv->hd * (size_t)kv->kstride, sizeof(float));
    kv->v = malloc((size_t)kv->n_kv * (size_t)kv->cap * (size_t)kv->hd * sizeof(float));
    if (!kv->k || !kv->v) {
        free(kv->k);
        free(kv->v);
        kv->k = kv->v = NULL;
        return false;
    }
    return true;
}

void gm_kv_free(gm_context *c)
{
    if (c->kv)
        for (uint32_t l = 0; l < c->m->hp.n_layer; l++) {
            free(c->kv[l].k);
            free(c->kv[l].v);
        }
    free(c->kv);
    c->kv = NULL;
    free(c->undo);
    c->undo = NULL;
    c->undo_cap = 0;
}

/* Grows the sliding rings to `cap` slots, moving the positions they hold. */
static int grow_rings(gm_context *c, int32_t cap, gm_error *err)
{
    const gm_hparams *hp = &c->m->hp;
    kv_layer *nkv = calloc(hp->n_layer, sizeof *nkv);
    float *tk = malloc(2 * (size_t)c->max_hd * sizeof(float));
    bool ok = nkv && tk;
    for (uint32_t l = 0; ok && l < hp->n_layer; l++) {
        kv_layer *kv = &c->kv[l];
        if (!kv->k || !kv->ring)
            continue;
        nkv[l] = *kv;
        nkv[l].cap = cap;
        ok = gm_kv_alloc(&nkv[l]);
    }
    if (!ok) {
        for (uint32_t l = 0; nkv && l < hp->n_layer; l++)
            if (nkv[l].k != c->kv[l].k) {
                free(nkv[l].k);
                free(nkv[l].v);
            }
        free(nkv);
        free(tk);
        return gm_set_error(err, GM_ERR_NOMEM, "out of memory growing the sliding-window cache to %d slots",
                            cap);
    }
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        kv_layer *kv = &c->kv[l];
        if (!kv->k || !kv->ring)
            continue;
        for (int32_t h = 0; h < kv->n_kv; h++)
            for (int32_t p = c->swa_oldest; p < c->n_past; p++) {
                kv_get(kv, h, p % kv->cap, tk, tk + kv->hd);
                kv_put(&nkv[l], h, p % cap, tk, tk + kv->hd);
            }
        c->kv_bytes -= gm_kv_layer_bytes(kv);
        c->kv_bytes += gm_kv_layer_bytes(&nkv[l]);
        free(kv->k);
        free(kv->v);
        *kv = nkv[l];
    }
    free(nkv);
    free(tk);
    c->swa_cap = cap;
    return GM_OK;
}

/* Copies ring slots of positions [p0, p1) of every sliding layer to/from the undo log. */
static void undo_copy(gm_context *c, int32_t p0, int32_t p1, bool save)
{
    const gm_hparams *hp = &c->m->hp;
    float *u = c->undo;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        kv_layer *kv = &c->kv[l];
        if (!kv->k || !kv->ring)
            continue;
        size_t hd = (size_t)kv->hd;
        for (int32_t h = 0; h < kv->n_kv; h++)
            for (int32_t p = p0; p < p1; p++) {
                if (save)
                    kv_get(kv, h, p % kv->cap, u, u + hd);
                else
                    kv_put(kv, h, p % kv->cap, u, u + hd);
                u += 2 * hd;
            }
    }
}

static size_t undo_floats(const gm_context *c, int32_t n_pos)
{
    size_t per = 0;
    const gm_hparams *hp = &c->m->hp;
    for (uint32_t l = 0; l < hp->n_layer; l++)
        if (c->kv[l].k && c->kv[l].ring)
            per += 2 * (size_t)c->kv[l].n_kv * (size_t)c->kv[l].hd;
    return per * (size_t)n_pos;
}


int gm_kv_begin(gm_context *c, int64_t total, int64_t max_chunk, gm_error *err)
{
    int rc;
    c->undo_p0 = c->undo_p1 = 0;
    if (c->has_ring) {
        int64_t need = (int64_t)c->window - 1 + max_chunk;
        if (need > c->n_ctx)
            need = c->n_ctx;
        if (need > c->swa_cap && (rc = grow_rings(c, (int32_t)need, err)))
            return rc;
    }

    /* Ring slots this eval overwrites while a truncate could still want them. */
    int32_t u0 = c->swa_oldest, u1 = 0;
    if (c->has_ring) {
        int64_t last = (int64_t)c->n_past + total - 1;
        int64_t end = last - c->swa_cap + 1;
        u1 = (int32_t)(end < c->n_past ? end : c->n_past);
    }
    if (u1 > u0) {
        size_t need = undo_floats(c, u1 - u0);
        if (need > c->undo_cap) {
            float *u = realloc(c->undo, need * sizeof(float));
            if (!u)
                return gm_set_error(err, GM_ERR_NOMEM, "out of memory for the cache undo log");
            c->undo = u;
            c->undo_cap = need;
        }
        undo_copy(c, u0, u1, true);
        c->undo_p0 = u0;
        c->undo_p1 = u1;
    }
    return GM_OK;
}

void gm_kv_rollback(gm_context *c)
{
    if (c->undo_p1 > c->undo_p0)
        undo_copy(c, c->undo_p0, c->undo_p1, false);
}

void gm_kv_commit(gm_context *c, int32_t total)
{
    c->n_past += total;
    if (c->has_ring && c->n_past - c->swa_cap > c->swa_oldest)
        c->swa_oldest = c->n_past - c->swa_cap;
}

int gm_context_truncate(gm_context *c, int32_t n_keep, gm_error *err)
{
    if (!c)
        return gm_set_error(err, GM_ERR_INVALID, "gm_context_truncate: no context");
    if (n_keep < 0 || n_keep > c->n_past)
        return gm_set_error(err, GM_ERR_INVALID, "cannot keep %d positions: the cache holds %d", n_keep,
                            c->n_past);
    if (n_keep == c->n_past)
        return GM_OK;
    if (n_keep == 0) {
        gm_context_clear(c);
        return GM_OK;
    }
    /* The next query (position n_keep) needs keys from n_keep - window + 1 on. */
    int64_t need = (int64_t)n_keep - c->window + 1;
    if (need < 0)
        need = 0;
    if (c->has_ring && need < c->swa_oldest)
        return gm_set_error(err, GM_ERR_RANGE, "cannot truncate to %d: the sliding-window cache no longer "
                            "holds position %lld (oldest kept: %d)", n_keep, (long long)need, c->swa_oldest);
    c->n_past = n_keep;
    return GM_OK;
}

void gm_context_clear(gm_context *c)
{
    if (!c)
        return;
    c->n_past = 0;
    c->swa_oldest = 0;
}
