/* context-internal.h — what the parts of gm_context share (private to decoder/):
 *   context.c   gm_context_new/free/eval, the layer forward pass and its row jobs;
 *   attention.c the tiled attention over the KV cache (AVX-512 / AVX2 / scalar);
 *   kv-cache.c  KV layout, ring growth, the undo log of an eval, truncate/clear;
 *   spans.c     span validation, row iteration, chunk planning, prefix hashing.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "context.h"
#include "core/cpu.h"
#include "core/gm-error.h"
#include "model.h"

#define ATTN_TILE 8 /* (row, head) pairs per attention work item */

/* ------------------------------------------------------------------ KV cache */

/* The KV cache of one layer. Keys are stored transposed, [n_kv][hd][kstride] with the
 * slot fastest, so Q·Kᵀ runs along keys with no horizontal sums; values are
 * [n_kv][cap][hd], so P·V runs along head_dim. kstride pads cap so that the hd rows
 * of a key block do not all fall into the same cache set. */
typedef struct kv_layer {
    float *k, *v;        /* NULL for KV-shared layers */
    int32_t cap;         /* slots */
    int32_t kstride;
    int32_t n_kv, hd;
    bool ring;           /* sliding layer (slot = pos % cap) */
} kv_layer;

/* Inline: kv_put runs for every (row, KV head) of a chunk. */
static inline void kv_put(kv_layer *kv, int32_t h, int32_t slot, const float *k, const float *v)
{
    const int32_t hd = kv->hd;
    float *kt = kv->k + (size_t)h * (size_t)hd * (size_t)kv->kstride + (size_t)slot;
    for (int32_t d = 0; d < hd; d++)
        kt[(size_t)d * (size_t)kv->kstride] = k[d];
    memcpy(kv->v + ((size_t)h * (size_t)kv->cap + (size_t)slot) * (size_t)hd, v, (size_t)hd * sizeof(float));
}

static inline void kv_get(const kv_layer *kv, int32_t h, int32_t slot, float *k, float *v)
{
    const int32_t hd = kv->hd;
    const float *kt = kv->k + (size_t)h * (size_t)hd * (size_t)kv->kstride + (size_t)slot;
    for (int32_t d = 0; d < hd; d++)
        k[d] = kt[(size_t)d * (size_t)kv->kstride];
    memcpy(v, kv->v + ((size_t)h * (size_t)kv->cap + (size_t)slot) * (size_t)hd, (size_t)hd * sizeof(float));
}

/* ------------------------------------------------------------------ context state */

/* One position of the chunk being evaluated. */
typedef struct row_info {
    const float *embd;   /* media row, or NULL for text */
    int32_t id;          /* embedding / PLE row (media and placeholder ids: the pad id 0) */
    int32_t blk_end;     /* exclusive end (absolute position) of its bidirectional block, or -1 */
    uint8_t type;
    uint64_t key;        /* for common_prefix */
} row_info;

/* A distinct RoPE inverse-frequency table (the model has one per layer type). */
typedef struct rope_table {
    const float *inv;
    int32_t half;
} rope_table;

/* Chunk scratch, sized for `rows` positions. */
typedef struct chunk_bufs {
    int32_t rows;
    float *x, *xn, *q, *k, *v, *att, *o, *gate, *up, *ple, *pg;
    float **cs;          /* per rope table: [rows][half][2] cos, sin */
    row_info *info;
} chunk_bufs;

struct gm_context {
    const gm_model *m;
    gm_pool *pool;
    int n_threads;
    int (*should_cancel)(void *ud);
    void *cancel_ud;

    int32_t n_ctx, n_batch;
    int32_t n_past;
    int32_t window;
    int32_t swa_cap;     /* ring slots of sliding layers */
    int32_t swa_oldest;  /* oldest position every ring still holds */
    bool has_ring;

    kv_layer *kv;        /* n_layer */
    int32_t *rope_of;    /* layer -> rope table */
    rope_table *rope;
    int n_rope;

    uint8_t *pos_type;   /* n_ctx: span type of each cached position */
    uint64_t *pos_key;   /* n_ctx: id or media hash */

    /* dimensions */
    int64_t H, P, LP, max_q, max_kv, max_ff;
    int32_t max_hd;
    float ple_scale, ple_proj_scale, ple_comb_scale;

    chunk_bufs b;

    /* per-thread scratch */
    float *th_scores;    /* n_threads x ATTN_TILE x n_ctx */
    float *th_row;       /* n_threads x th_row_len */
    int64_t th_row_len;

    /* undo log for ring slots overwritten by a failing eval: positions [undo_p0, undo_p1) */
    float *undo;
    size_t undo_cap;     /* floats */
    int32_t undo_p0, undo_p1;

    /* the step being run (read by the pool jobs) */
    int32_t cur_layer, cur_p0, cur_n, out_first;
    atomic_int attn_next;
    int32_t attn_hb, attn_rb, attn_items; /* tile shape of the current layer */
    bool do_q, do_kv;                     /* job_qkv's parts */
    int32_t last_own;                     /* last layer that writes a KV cache */
    gm_isa isa;
    size_t kv_bytes;
};

/* ------------------------------------------------------------------ kv-cache.c */

/* Allocates k/v for kv->cap slots (n_kv, hd set); false when out of memory. */
bool gm_kv_alloc(kv_layer *kv);
size_t gm_kv_layer_bytes(const kv_layer *kv);
/* Frees every layer's cache and the undo log. */
void gm_kv_free(gm_context *c);
/* Before an eval of `total` positions whose largest chunk is max_chunk: grows the rings
 * to hold a chunk plus its window and saves the ring slots the eval will overwrite while
 * a truncate could still want them. On failure the cached positions are unchanged. */
int gm_kv_begin(gm_context *c, int64_t total, int64_t max_chunk, gm_error *err);
/* The eval failed: puts the saved ring slots back (the cache is as before gm_kv_begin). */
void gm_kv_rollback(gm_context *c);
/* The eval succeeded: makes its `total` positions visible. */
void gm_kv_commit(gm_context *c, int32_t total);

/* ------------------------------------------------------------------ spans.c */

/* Walks the rows of a span list (text ids / media rows) with their types, block ends
 * and prefix keys. */
typedef struct row_iter {
    const gm_span *spans;
    size_t n_spans;
    bool vision;
    int64_t H;
    const int32_t *media_ids; /* GM_N_MEDIA_PLACEHOLDERS ids (-1: none) embedded as the pad id */
    size_t si;           /* current span */
    int32_t off;         /* offset inside it */
    int64_t pos;         /* absolute position of the next row */
    /* current media unit */
    int64_t unit_left;
    int64_t unit_idx;
    int64_t unit_end;    /* absolute end position */
    uint64_t unit_hash;
    bool unit_block;
} row_iter;

void gm_row_iter_init(row_iter *it, const gm_context *c, const gm_span *spans, size_t n_spans, int64_t pos);
/* Next row; returns false at the end. */
bool gm_row_iter_next(row_iter *it, row_info *r);

/* Chunk planner: lengths only. Vision blocks are atomic; everything else splits freely. */
typedef struct planner {
    const gm_span *spans;
    size_t n_spans;
    bool vision;
    size_t si;
    int32_t off;
} planner;

void gm_planner_init(planner *p, const gm_context *c, const gm_span *spans, size_t n_spans);
/* Length of the next chunk (at most n_batch unless a vision block is longer); 0 at the end. */
int64_t gm_planner_next(planner *p, int32_t n_batch);

/* Checks the spans eval is given; *total = the positions they hold. */
int gm_spans_validate(const gm_context *c, const gm_span *spans, size_t n_spans, int64_t *total,
                      gm_error *err);

/* ------------------------------------------------------------------ attention.c */

/* Attention of the chunk's n rows (queries in c->b.q, written to c->b.att) for layer
 * c->cur_layer, whose hyper-parameters are lh, over the cache it reads. */
void gm_attention(gm_context *c, const gm_layer_hparams *lh, int32_t n);
