/* context.c — KV cache and forward pass of the Gemma 4 text decoder
 * (gemma4-model.md §2-3, §6.4).
 *
 * Evaluation runs in prefill chunks of at most n_batch positions; every weight matrix is
 * applied to the whole chunk with one gm_matmul call, so a weight is read once per chunk
 * (once per token when decoding). Element-wise steps run over rows on the thread pool,
 * attention over tiles of (query, head) pairs that share a KV head.
 *
 * KV cache: F32, per layer that owns its KV (keys transposed, see kv_layer). Full
 * layers hold n_ctx slots (slot = position). Sliding layers hold a ring of
 * swa_cap >= window - 1 + chunk slots (slot = position % swa_cap): a chunk's queries
 * need the window before the chunk plus the chunk itself, all resident at once.
 * (A vision block longer than n_batch makes its chunk, and the rings, grow.)
 *
 * Rows that need no logits stop after the last layer that writes a KV cache: what
 * follows (KV-shared layers, the rest of that layer) only feeds their logits.
 *
 * Failure atomicity: an eval only becomes visible when n_past is committed at its end.
 * Full-layer writes land past n_past and are harmless. Ring writes can overwrite old
 * positions that a later truncate might still want; those few slots are saved first
 * (at most one per new position) and put back if the eval fails or is cancelled.
 */
#include "context.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/kernels.h"
#include "core/ops.h"
#include "core/quant.h"
#include "masks.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#define ATTN_TILE 8 /* (row, head) pairs per attention work item */

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

static int32_t kv_kstride(int32_t cap)
{
    return (cap + 15) / 16 * 16 + 16;
}

static size_t kv_layer_bytes(const kv_layer *kv)
{
    return ((size_t)kv->n_kv * (size_t)kv->hd * (size_t)kv->kstride +
            (size_t)kv->n_kv * (size_t)kv->cap * (size_t)kv->hd) * sizeof(float);
}

/* Allocates k/v for kv->cap slots (n_kv, hd set); false when out of memory. */
static bool kv_alloc(kv_layer *kv)
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

static void kv_put(kv_layer *kv, int32_t h, int32_t slot, const float *k, const float *v)
{
    const int32_t hd = kv->hd;
    float *kt = kv->k + (size_t)h * (size_t)hd * (size_t)kv->kstride + (size_t)slot;
    for (int32_t d = 0; d < hd; d++)
        kt[(size_t)d * (size_t)kv->kstride] = k[d];
    memcpy(kv->v + ((size_t)h * (size_t)kv->cap + (size_t)slot) * (size_t)hd, v, (size_t)hd * sizeof(float));
}

static void kv_get(const kv_layer *kv, int32_t h, int32_t slot, float *k, float *v)
{
    const int32_t hd = kv->hd;
    const float *kt = kv->k + (size_t)h * (size_t)hd * (size_t)kv->kstride + (size_t)slot;
    for (int32_t d = 0; d < hd; d++)
        k[d] = kt[(size_t)d * (size_t)kv->kstride];
    memcpy(v, kv->v + ((size_t)h * (size_t)kv->cap + (size_t)slot) * (size_t)hd, (size_t)hd * sizeof(float));
}

/* One position of the chunk being evaluated. */
typedef struct row_info {
    const float *embd;   /* media row, or NULL for text */
    int32_t id;          /* text id (media: the pad id 0, for PLE) */
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

    /* undo log for ring slots overwritten by a failing eval */
    float *undo;
    size_t undo_cap;     /* floats */

    /* the step being run (read by the pool jobs) */
    int32_t cur_layer, cur_p0, cur_n, out_first;
    atomic_int attn_next;
    int32_t attn_hb, attn_rb, attn_items; /* tile shape of the current layer */
    bool do_q, do_kv;                     /* job_qkv's parts */
    int32_t last_own;                     /* last layer that writes a KV cache */
    gm_isa isa;
    size_t kv_bytes;
};

/* ------------------------------------------------------------------ row jobs */

typedef void (*rows_fn)(gm_context *c, int32_t r0, int32_t r1, int ith);

typedef struct rows_call {
    gm_context *c;
    rows_fn fn;
    int32_t n;
} rows_call;

static void rows_tramp(void *arg, int ith, int nth)
{
    rows_call *rc = arg;
    long b, e;
    gm_pool_range(rc->n, ith, nth, &b, &e);
    if (b < e)
        rc->fn(rc->c, (int32_t)b, (int32_t)e, ith);
}

/* Runs fn over rows [0, n) split across the pool; a single row runs inline. */
static void run_rows(gm_context *c, int32_t n, rows_fn fn)
{
    if (!c->pool || n < 2) {
        fn(c, 0, n, 0);
        return;
    }
    rows_call rc = { c, fn, n };
    gm_pool_run(c->pool, rows_tramp, &rc);
}

static void matmul(gm_context *c, const gm_matrix *w, const float *x, int32_t n, int64_t ldx, float *y,
                   int64_t ldy)
{
    gm_matmul(c->pool, w, x, n, ldx, y, ldy);
}

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

typedef struct row_iter {
    const gm_span *spans;
    size_t n_spans;
    bool vision;
    int64_t H;
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

static void iter_init(row_iter *it, const gm_span *spans, size_t n_spans, bool vision, int64_t H, int64_t pos)
{
    memset(it, 0, sizeof *it);
    it->spans = spans;
    it->n_spans = n_spans;
    it->vision = vision;
    it->H = H;
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

/* Next row; returns false at the end. */
static bool iter_next(row_iter *it, row_info *r)
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
        r->id = s->ids[it->off];
        r->blk_end = -1;
        r->key = (uint64_t)(uint32_t)r->id;
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
typedef struct planner {
    const gm_span *spans;
    size_t n_spans;
    bool vision;
    size_t si;
    int32_t off;
} planner;

static int64_t plan_next(planner *p, int32_t n_batch)
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

/* ------------------------------------------------------------------ allocation */

static void free_bufs(chunk_bufs *b, int n_rope)
{
    free(b->x);
    free(b->xn);
    free(b->q);
    free(b->k);
    free(b->v);
    free(b->att);
    free(b->o);
    free(b->gate);
    free(b->up);
    free(b->ple);
    free(b->pg);
    free(b->info);
    if (b->cs)
        for (int t = 0; t < n_rope; t++)
            free(b->cs[t]);
    free(b->cs);
    memset(b, 0, sizeof *b);
}

static float *alloc_f(size_t rows, int64_t width)
{
    return width > 0 ? malloc(rows * (size_t)width * sizeof(float)) : NULL;
}

/* (Re)allocates the chunk scratch for `rows` positions; on failure the old one stays. */
static int alloc_bufs(gm_context *c, int32_t rows, gm_error *err)
{
    size_t R = (size_t)rows;
    chunk_bufs n = { .rows = rows };
    n.x = alloc_f(R, c->H);
    n.xn = alloc_f(R, c->H);
    n.q = alloc_f(R, c->max_q);
    n.k = alloc_f(R, c->max_kv);
    n.v = alloc_f(R, c->max_kv);
    n.att = alloc_f(R, c->max_q);
    n.o = alloc_f(R, c->H);
    n.gate = alloc_f(R, c->max_ff);
    n.up = alloc_f(R, c->max_ff);
    n.ple = alloc_f(R, c->LP);
    n.pg = alloc_f(R, c->P);
    n.info = malloc(R * sizeof(row_info));
    n.cs = calloc((size_t)c->n_rope, sizeof *n.cs);
    bool ok = n.x && n.xn && n.q && (n.k || !c->max_kv) && (n.v || !c->max_kv) && n.att && n.o && n.gate &&
              n.up && (n.ple || !c->LP) && (n.pg || !c->P) && n.info && n.cs;
    for (int t = 0; ok && t < c->n_rope; t++)
        ok = (n.cs[t] = alloc_f(R, 2 * (int64_t)c->rope[t].half)) != NULL;
    if (!ok) {
        free_bufs(&n, c->n_rope);
        return gm_set_error(err, GM_ERR_NOMEM, "out of memory for a chunk of %d positions", rows);
    }
    free_bufs(&c->b, c->n_rope);
    c->b = n;
    return GM_OK;
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
        ok = kv_alloc(&nkv[l]);
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
        c->kv_bytes -= kv_layer_bytes(kv);
        c->kv_bytes += kv_layer_bytes(&nkv[l]);
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

/* ------------------------------------------------------------------ context */

const gm_model *gm_context_model(const gm_context *ctx)
{
    return ctx ? ctx->m : NULL;
}

int32_t gm_context_n_past(const gm_context *ctx)
{
    return ctx ? ctx->n_past : 0;
}

int32_t gm_context_n_ctx(const gm_context *ctx)
{
    return ctx ? ctx->n_ctx : 0;
}

size_t gm_context_kv_bytes(const gm_context *ctx)
{
    return ctx ? ctx->kv_bytes : 0;
}

void gm_context_free(gm_context *c)
{
    if (!c)
        return;
    if (c->kv)
        for (uint32_t l = 0; l < c->m->hp.n_layer; l++) {
            free(c->kv[l].k);
            free(c->kv[l].v);
        }
    free(c->kv);
    free_bufs(&c->b, c->n_rope);
    free(c->rope);
    free(c->rope_of);
    free(c->pos_type);
    free(c->pos_key);
    free(c->th_scores);
    free(c->th_row);
    free(c->undo);
    free(c);
}

gm_context *gm_context_new(const gm_model *model, const gm_context_params *params, gm_error *err)
{
    if (!model) {
        gm_set_error(err, GM_ERR_INVALID, "gm_context_new: no model");
        return NULL;
    }
    const gm_hparams *hp = &model->hp;
    gm_context_params pr = { 0 };
    if (params)
        pr = *params;
    int64_t n_ctx = pr.n_ctx;
    if (n_ctx <= 0) {
        n_ctx = hp->n_ctx_train ? hp->n_ctx_train : 4096;
        if (n_ctx > 4096)
            n_ctx = 4096;
    }
    if (n_ctx > (1 << 28)) {
        gm_set_error(err, GM_ERR_RANGE, "context size %lld is too large", (long long)n_ctx);
        return NULL;
    }
    int32_t n_batch = pr.n_batch > 0 ? pr.n_batch : 512;
    if (n_batch > n_ctx)
        n_batch = (int32_t)n_ctx;

    gm_context *c = calloc(1, sizeof *c);
    if (!c) {
        gm_set_error(err, GM_ERR_NOMEM, "out of memory");
        return NULL;
    }
    c->m = model;
    c->pool = pr.pool;
    c->n_threads = pr.pool ? gm_pool_size(pr.pool) : 1;
    if (c->n_threads < 1)
        c->n_threads = 1;
    c->isa = gm_cpu_best_isa();
    c->should_cancel = pr.should_cancel;
    c->cancel_ud = pr.cancel_ud;
    c->n_ctx = (int32_t)n_ctx;
    c->n_batch = n_batch;
    c->window = (int32_t)(hp->sliding_window < (uint32_t)INT32_MAX / 2 ? hp->sliding_window : INT32_MAX / 2);
    c->H = hp->n_embd;
    c->P = hp->n_embd_per_layer;
    c->LP = c->P * hp->n_layer;
    /* HF scales the PLE rows by sqrt(P) cast to the weight dtype: exact for the released
     * P = 256 in bf16, and the plain fp32 value is what an fp32 reference uses. */
    c->ple_scale = sqrtf((float)c->P);
    c->ple_proj_scale = (float)(1.0 / sqrt((double)c->H));
    c->ple_comb_scale = (float)(1.0 / sqrt(2.0));

    int64_t swa_cap = (int64_t)c->window - 1 + n_batch;
    if (swa_cap > n_ctx)
        swa_cap = n_ctx;
    c->swa_cap = (int32_t)swa_cap;

    c->kv = calloc(hp->n_layer, sizeof *c->kv);
    c->rope_of = calloc(hp->n_layer, sizeof *c->rope_of);
    c->rope = calloc(hp->n_layer, sizeof *c->rope);
    c->pos_type = calloc((size_t)n_ctx, 1);
    c->pos_key = calloc((size_t)n_ctx, sizeof(uint64_t));
    if (!c->kv || !c->rope_of || !c->rope || !c->pos_type || !c->pos_key)
        goto nomem;

    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const gm_layer_hparams *lh = &hp->layers[l];
        int64_t nq = (int64_t)lh->n_head * lh->head_dim, nkv = (int64_t)lh->n_head_kv * lh->head_dim;
        if (nq > c->max_q)
            c->max_q = nq;
        if (lh->n_ff > c->max_ff)
            c->max_ff = lh->n_ff;
        if (lh->kv_source < 0 && nkv > c->max_kv)
            c->max_kv = nkv;
        /* distinct RoPE tables (the model shares one per layer type) */
        const float *inv = model->layers[l].rope_inv_freq;
        int t = 0;
        while (t < c->n_rope && !(c->rope[t].inv == inv && c->rope[t].half == (int32_t)lh->head_dim / 2))
            t++;
        if (t == c->n_rope) {
            c->rope[t].inv = inv;
            c->rope[t].half = (int32_t)lh->head_dim / 2;
            c->n_rope++;
        }
        c->rope_of[l] = t;
        if (lh->kv_source >= 0)
            continue;
        c->last_own = (int32_t)l;
        kv_layer *kv = &c->kv[l];
        kv->n_kv = (int32_t)lh->n_head_kv;
        kv->hd = (int32_t)lh->head_dim;
        kv->ring = lh->is_swa && swa_cap < n_ctx;
        kv->cap = lh->is_swa ? c->swa_cap : c->n_ctx;
        c->has_ring |= kv->ring;
        if (!kv_alloc(kv))
            goto nomem;
        c->kv_bytes += kv_layer_bytes(kv);
        if (kv->hd > c->max_hd)
            c->max_hd = kv->hd;
    }
    /* rings exist only when they wrap; otherwise sliding layers index by position */
    if (!c->has_ring)
        c->swa_cap = c->n_ctx;

    c->th_row_len = c->LP > 0 ? c->LP : 1;
    c->th_scores = malloc((size_t)c->n_threads * ATTN_TILE * (size_t)n_ctx * sizeof(float));
    c->th_row = malloc((size_t)c->n_threads * (size_t)c->th_row_len * sizeof(float));
    if (!c->th_scores || !c->th_row)
        goto nomem;
    if (alloc_bufs(c, n_batch, err) != GM_OK) {
        gm_context_free(c);
        return NULL;
    }
    return c;

nomem:
    gm_set_error(err, GM_ERR_NOMEM, "out of memory for a context of %lld positions", (long long)n_ctx);
    gm_context_free(c);
    return NULL;
}

/* ------------------------------------------------------------------ forward pass */

/* Embeddings (text: scaled row of token_embd; media: the soft token as is) and the
 * chunk's RoPE cos/sin. */
static void job_embed(gm_context *c, int32_t r0, int32_t r1, int ith)
{
    (void)ith;
    const gm_model *m = c->m;
    for (int32_t r = r0; r < r1; r++) {
        const row_info *ri = &c->b.info[r];
        float *x = c->b.x + (size_t)r * (size_t)c->H;
        if (ri->embd) {
            memcpy(x, ri->embd, (size_t)c->H * sizeof(float));
        } else {
            const uint8_t *row = (const uint8_t *)m->tok_embd.data + (size_t)ri->id * m->tok_embd.row_bytes;
            gm_dequantize_row(m->tok_embd.type, row, x, c->H);
            gm_vec_scale(x, m->hp.embd_scale, c->H);
        }
        float pos = (float)(c->cur_p0 + r);
        for (int t = 0; t < c->n_rope; t++) {
            const rope_table *rt = &c->rope[t];
            float *cs = c->b.cs[t] + (size_t)r * (size_t)rt->half * 2;
            for (int32_t i = 0; i < rt->half; i++) {
                float ang = pos * rt->inv[i];
                cs[2 * i] = rt->inv[i] == 0.0f ? 1.0f : cosf(ang);
                cs[2 * i + 1] = rt->inv[i] == 0.0f ? 0.0f : sinf(ang);
            }
        }
    }
}

/* PLE (§2.3): c->b.ple holds per_layer_model_proj(e0); turn it into the per-layer inputs. */
static void job_ple(gm_context *c, int32_t r0, int32_t r1, int ith)
{
    const gm_model *m = c->m;
    const int64_t P = c->P, L = m->hp.n_layer;
    float *tok = c->th_row + (size_t)ith * (size_t)c->th_row_len;
    for (int32_t r = r0; r < r1; r++) {
        float *p = c->b.ple + (size_t)r * (size_t)c->LP;
        gm_vec_scale(p, c->ple_proj_scale, c->LP);
        for (int64_t l = 0; l < L; l++)
            gm_rmsnorm(p + l * P, p + l * P, m->ple_proj_norm, P, m->hp.rms_eps);
        const uint8_t *row = (const uint8_t *)m->ple_tok_embd.data + (size_t)c->b.info[r].id * m->ple_tok_embd.row_bytes;
        gm_dequantize_row(m->ple_tok_embd.type, row, tok, c->LP);
        for (int64_t i = 0; i < c->LP; i++)
            p[i] = (p[i] + tok[i] * c->ple_scale) * c->ple_comb_scale;
    }
}

static void job_attn_norm(gm_context *c, int32_t r0, int32_t r1, int ith)
{
    (void)ith;
    const gm_layer_weights *w = &c->m->layers[c->cur_layer];
    for (int32_t r = r0; r < r1; r++)
        gm_rmsnorm(c->b.xn + (size_t)r * (size_t)c->H, c->b.x + (size_t)r * (size_t)c->H, w->attn_norm, c->H,
                   c->m->hp.rms_eps);
}

static void rope_apply(float *v, int32_t half, const float *cs)
{
    for (int32_t i = 0; i < half; i++) {
        float a = v[i], b = v[i + half], co = cs[2 * i], si = cs[2 * i + 1];
        v[i] = a * co - b * si;
        v[i + half] = b * co + a * si;
    }
}

/* Q/K norms and RoPE, V norm, and the K/V cache writes. */
static void job_qkv(gm_context *c, int32_t r0, int32_t r1, int ith)
{
    (void)ith;
    const int32_t l = c->cur_layer;
    const gm_layer_hparams *lh = &c->m->hp.layers[l];
    const gm_layer_weights *w = &c->m->layers[l];
    const float eps = c->m->hp.rms_eps;
    const int32_t hd = (int32_t)lh->head_dim, half = hd / 2;
    const int64_t nq = (int64_t)lh->n_head * hd, nkv = (int64_t)lh->n_head_kv * hd;
    const float *cs_all = c->b.cs[c->rope_of[l]];
    kv_layer *kv = &c->kv[l];
    for (int32_t r = r0; r < r1; r++) {
        const float *cs = cs_all + (size_t)r * (size_t)half * 2;
        float *q = c->b.q + (size_t)r * (size_t)nq;
        for (uint32_t h = 0; c->do_q && h < lh->n_head; h++) {
            gm_rmsnorm(q + h * hd, q + h * hd, w->q_norm, hd, eps);
            rope_apply(q + h * hd, half, cs);
        }
        if (lh->kv_source >= 0 || !c->do_kv)
            continue;
        float *k = c->b.k + (size_t)r * (size_t)nkv, *v = c->b.v + (size_t)r * (size_t)nkv;
        if (!w->wv.data)
            memcpy(v, k, (size_t)nkv * sizeof(float)); /* V = raw K (attention_k_eq_v) */
        int32_t slot = (c->cur_p0 + r) % kv->cap;
        for (int32_t h = 0; h < kv->n_kv; h++) {
            float *kh = k + h * hd, *vh = v + h * hd;
            gm_rmsnorm(kh, kh, w->k_norm, hd, eps);
            rope_apply(kh, half, cs);
            gm_rmsnorm(vh, vh, NULL, hd, eps);
            kv_put(kv, h, slot, kh, vh);
        }
    }
}

/* ------------------------------------------------------------------ attention
 *
 * A work item is a tile of up to ATTN_TILE (query row, head) pairs that read the same
 * KV head (the heads of a GQA group, then several rows). For the keys [k0, k1) that any
 * pair sees:
 *   S[t][j] = q_t · K[k0 + j]        (qk_*: vectors run along keys, K is transposed)
 *   softmax of each row over its own visible range, 0 elsewhere (fp32, max-subtracted)
 *   out_t   = sum_j S[t][j] V[k0 + j] (pv_*: vectors run along head_dim)
 * Each K/V row is loaded once per tile, accumulators stay in registers. A ring cache
 * that wraps turns [k0, k1) into two slot segments. */

#define GM_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#define GM_AVX2 __attribute__((target("avx2,fma")))
#define GM_INLINE inline __attribute__((always_inline))

static void qk_scalar(const float *kt, int64_t ks, int32_t hd, const float *const *q, int tq, float *s,
                      int64_t ss, int32_t n)
{
    for (int t = 0; t < tq; t++) {
        float *st = s + t * ss;
        memset(st, 0, (size_t)n * sizeof(float));
        for (int32_t d = 0; d < hd; d++) {
            const float qd = q[t][d], *kr = kt + d * ks;
            for (int32_t j = 0; j < n; j++)
                st[j] += qd * kr[j];
        }
    }
}

static void pv_scalar(const float *v, int32_t hd, int32_t n, const float *p, int64_t ps, int tq,
                      float *const *out, bool accumulate)
{
    for (int t = 0; t < tq; t++) {
        float *o = out[t];
        if (!accumulate)
            memset(o, 0, (size_t)hd * sizeof(float));
        for (int32_t j = 0; j < n; j++) {
            const float pj = p[t * ps + j], *vr = v + (size_t)j * (size_t)hd;
            if (pj != 0.0f)
                for (int32_t d = 0; d < hd; d++)
                    o[d] += pj * vr[d];
        }
    }
}

#if defined(__x86_64__) || defined(__i386__)

GM_AVX512 static GM_INLINE void qk512_blk(const float *kt, int64_t ks, int32_t hd, const float *const *q,
                                          const int TQ, const int KB, float *s, int64_t ss, int32_t j,
                                          int32_t n)
{
    __m512 acc[ATTN_TILE][2];
    for (int t = 0; t < TQ; t++)
        for (int u = 0; u < KB; u++)
            acc[t][u] = _mm512_setzero_ps();
    const int32_t r0 = n - j, r1 = n - j - 16;
    const __mmask16 m0 = r0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << r0) - 1u);
    const __mmask16 m1 = r1 >= 16 ? (__mmask16)0xffff : r1 <= 0 ? 0 : (__mmask16)((1u << r1) - 1u);
    const float *kp = kt + j;
    for (int32_t d = 0; d < hd; d++, kp += ks) {
        __m512 k0 = _mm512_maskz_loadu_ps(m0, kp);
        __m512 k1 = KB > 1 ? _mm512_maskz_loadu_ps(m1, kp + 16) : k0;
        for (int t = 0; t < TQ; t++) {
            __m512 qb = _mm512_set1_ps(q[t][d]);
            acc[t][0] = _mm512_fmadd_ps(qb, k0, acc[t][0]);
            if (KB > 1)
                acc[t][1] = _mm512_fmadd_ps(qb, k1, acc[t][1]);
        }
    }
    for (int t = 0; t < TQ; t++) {
        _mm512_mask_storeu_ps(s + t * ss + j, m0, acc[t][0]);
        if (KB > 1)
            _mm512_mask_storeu_ps(s + t * ss + j + 16, m1, acc[t][1]);
    }
}

GM_AVX512 static void qk512(const float *kt, int64_t ks, int32_t hd, const float *const *q, int tq, float *s,
                            int64_t ss, int32_t n)
{
#define QK512(T, KB) \
    case T: \
        for (int32_t j = 0; j < n; j += 16 * (KB)) \
            qk512_blk(kt, ks, hd, q, T, KB, s, ss, j, n); \
        break;
    switch (tq) {
    QK512(1, 2) QK512(2, 2) QK512(3, 2) QK512(4, 2) QK512(5, 1) QK512(6, 1) QK512(7, 1) QK512(8, 1)
    default: break;
    }
#undef QK512
}

GM_AVX512 static GM_INLINE void pv512_blk(const float *v, int32_t hd, int32_t n, const float *p, int64_t ps,
                                          const int TQ, const int NV, float *const *out, int32_t dc,
                                          bool accumulate)
{
    __m512 acc[ATTN_TILE][8];
    for (int t = 0; t < TQ; t++)
        for (int u = 0; u < NV; u++)
            acc[t][u] = accumulate ? _mm512_loadu_ps(out[t] + dc + 16 * u) : _mm512_setzero_ps();
    const float *vr = v + dc;
    for (int32_t j = 0; j < n; j++, vr += hd) {
        __m512 vv[8];
        for (int u = 0; u < NV; u++)
            vv[u] = _mm512_loadu_ps(vr + 16 * u);
        for (int t = 0; t < TQ; t++) {
            __m512 pb = _mm512_set1_ps(p[t * ps + j]);
            for (int u = 0; u < NV; u++)
                acc[t][u] = _mm512_fmadd_ps(pb, vv[u], acc[t][u]);
        }
    }
    for (int t = 0; t < TQ; t++)
        for (int u = 0; u < NV; u++)
            _mm512_storeu_ps(out[t] + dc + 16 * u, acc[t][u]);
}

/* hd must be a multiple of 16. */
GM_AVX512 static void pv512(const float *v, int32_t hd, int32_t n, const float *p, int64_t ps, int tq,
                            float *const *out, bool accumulate)
{
    int nv = tq <= 2 ? 8 : tq <= 4 ? 4 : 2; /* tq * nv <= 16 accumulators */
    while (nv > 1 && hd % (16 * nv))
        nv /= 2;
#define PV512(T, NV) \
    case T: \
        for (int32_t dc = 0; dc < hd; dc += 16 * (NV)) \
            pv512_blk(v, hd, n, p, ps, T, NV, out, dc, accumulate); \
        break;
    switch (nv) {
    case 8:
        switch (tq) { PV512(1, 8) PV512(2, 8) default: break; }
        break;
    case 4:
        switch (tq) { PV512(1, 4) PV512(2, 4) PV512(3, 4) PV512(4, 4) default: break; }
        break;
    case 2:
        switch (tq) {
        PV512(1, 2) PV512(2, 2) PV512(3, 2) PV512(4, 2) PV512(5, 2) PV512(6, 2) PV512(7, 2) PV512(8, 2)
        default: break;
        }
        break;
    default:
        switch (tq) {
        PV512(1, 1) PV512(2, 1) PV512(3, 1) PV512(4, 1) PV512(5, 1) PV512(6, 1) PV512(7, 1) PV512(8, 1)
        default: break;
        }
        break;
    }
#undef PV512
}

GM_AVX2 static GM_INLINE __m256i lane_mask256(int32_t r)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

GM_AVX2 static GM_INLINE void qk256_blk(const float *kt, int64_t ks, int32_t hd, const float *const *q,
                                        const int TQ, const int KB, float *s, int64_t ss, int32_t j,
                                        int32_t n)
{
    __m256 acc[ATTN_TILE][2];
    for (int t = 0; t < TQ; t++)
        for (int u = 0; u < KB; u++)
            acc[t][u] = _mm256_setzero_ps();
    const __m256i m0 = lane_mask256(n - j), m1 = lane_mask256(n - j - 8);
    const float *kp = kt + j;
    for (int32_t d = 0; d < hd; d++, kp += ks) {
        __m256 k0 = _mm256_maskload_ps(kp, m0);
        __m256 k1 = KB > 1 ? _mm256_maskload_ps(kp + 8, m1) : k0;
        for (int t = 0; t < TQ; t++) {
            __m256 qb = _mm256_broadcast_ss(q[t] + d);
            acc[t][0] = _mm256_fmadd_ps(qb, k0, acc[t][0]);
            if (KB > 1)
                acc[t][1] = _mm256_fmadd_ps(qb, k1, acc[t][1]);
        }
    }
    for (int t = 0; t < TQ; t++) {
        _mm256_maskstore_ps(s + t * ss + j, m0, acc[t][0]);
        if (KB > 1)
            _mm256_maskstore_ps(s + t * ss + j + 8, m1, acc[t][1]);
    }
}

GM_AVX2 static void qk256(const float *kt, int64_t ks, int32_t hd, const float *const *q, int tq, float *s,
                          int64_t ss, int32_t n)
{
#define QK256(T, KB) \
    case T: \
        for (int32_t j = 0; j < n; j += 8 * (KB)) \
            qk256_blk(kt, ks, hd, q, T, KB, s, ss, j, n); \
        break;
    switch (tq) {
    QK256(1, 2) QK256(2, 2) QK256(3, 2) QK256(4, 2) QK256(5, 1) QK256(6, 1) QK256(7, 1) QK256(8, 1)
    default: break;
    }
#undef QK256
}

GM_AVX2 static GM_INLINE void pv256_blk(const float *v, int32_t hd, int32_t n, const float *p, int64_t ps,
                                        const int TQ, const int NV, float *const *out, int32_t dc,
                                        bool accumulate)
{
    __m256 acc[ATTN_TILE][4];
    for (int t = 0; t < TQ; t++)
        for (int u = 0; u < NV; u++)
            acc[t][u] = accumulate ? _mm256_loadu_ps(out[t] + dc + 8 * u) : _mm256_setzero_ps();
    const float *vr = v + dc;
    for (int32_t j = 0; j < n; j++, vr += hd) {
        __m256 vv[4];
        for (int u = 0; u < NV; u++)
            vv[u] = _mm256_loadu_ps(vr + 8 * u);
        for (int t = 0; t < TQ; t++) {
            __m256 pb = _mm256_broadcast_ss(p + t * ps + j);
            for (int u = 0; u < NV; u++)
                acc[t][u] = _mm256_fmadd_ps(pb, vv[u], acc[t][u]);
        }
    }
    for (int t = 0; t < TQ; t++)
        for (int u = 0; u < NV; u++)
            _mm256_storeu_ps(out[t] + dc + 8 * u, acc[t][u]);
}

/* hd must be a multiple of 8. */
GM_AVX2 static void pv256(const float *v, int32_t hd, int32_t n, const float *p, int64_t ps, int tq,
                          float *const *out, bool accumulate)
{
    int nv = tq <= 2 ? 4 : tq <= 4 ? 2 : 1; /* tq * nv <= 8 accumulators */
    while (nv > 1 && hd % (8 * nv))
        nv /= 2;
#define PV256(T, NV) \
    case T: \
        for (int32_t dc = 0; dc < hd; dc += 8 * (NV)) \
            pv256_blk(v, hd, n, p, ps, T, NV, out, dc, accumulate); \
        break;
    switch (nv) {
    case 4:
        switch (tq) { PV256(1, 4) PV256(2, 4) default: break; }
        break;
    case 2:
        switch (tq) { PV256(1, 2) PV256(2, 2) PV256(3, 2) PV256(4, 2) default: break; }
        break;
    default:
        switch (tq) {
        PV256(1, 1) PV256(2, 1) PV256(3, 1) PV256(4, 1) PV256(5, 1) PV256(6, 1) PV256(7, 1) PV256(8, 1)
        default: break;
        }
        break;
    }
#undef PV256
}

#endif /* x86 */

typedef void (*qk_fn)(const float *, int64_t, int32_t, const float *const *, int, float *, int64_t, int32_t);
typedef void (*pv_fn)(const float *, int32_t, int32_t, const float *, int64_t, int, float *const *, bool);

static void pick_kernels(const gm_context *c, int32_t hd, qk_fn *qk, pv_fn *pv)
{
    *qk = qk_scalar;
    *pv = pv_scalar;
#if defined(__x86_64__) || defined(__i386__)
    if (c->isa >= GM_ISA_AVX512 && hd % 16 == 0) {
        *qk = qk512;
        *pv = pv512;
    } else if (c->isa >= GM_ISA_AVX2 && hd % 8 == 0) {
        *qk = qk256;
        *pv = pv256;
    }
#else
    (void)c;
    (void)hd;
#endif
}

/* Tile shape for a layer: heads of one GQA group first, then rows; smaller tiles when
 * there would be too few items to keep the threads busy (decoding). */
static void plan_attn(gm_context *c, const gm_layer_hparams *lh, int32_t n_kv, int32_t n)
{
    const int32_t group = (int32_t)lh->n_head / n_kv;
    int32_t hb = group < ATTN_TILE ? group : ATTN_TILE;
    for (;;) {
        int32_t rb = ATTN_TILE / hb;
        if (rb > n)
            rb = n;
        int32_t n_hblk = (group + hb - 1) / hb, n_rblk = (n + rb - 1) / rb;
        int32_t items = n_rblk * n_kv * n_hblk;
        if (items >= 2 * c->n_threads || hb == 1 || rb > 1) {
            c->attn_hb = hb;
            c->attn_rb = rb;
            c->attn_items = items;
            return;
        }
        hb = (hb + 1) / 2;
    }
}

static void job_attn(void *arg, int ith, int nth)
{
    (void)nth;
    gm_context *c = arg;
    const int32_t l = c->cur_layer;
    const gm_layer_hparams *lh = &c->m->hp.layers[l];
    const kv_layer *kv = &c->kv[lh->kv_source >= 0 ? lh->kv_source : l];
    const int32_t hd = kv->hd, n_kv = kv->n_kv, group = (int32_t)lh->n_head / n_kv;
    const int64_t nq = (int64_t)lh->n_head * hd;
    const int32_t cap = kv->cap, hb = c->attn_hb, rb = c->attn_rb;
    const int32_t n_hblk = (group + hb - 1) / hb;
    float *S = c->th_scores + (size_t)ith * ATTN_TILE * (size_t)c->n_ctx;
    qk_fn qk;
    pv_fn pv;
    pick_kernels(c, hd, &qk, &pv);

    for (;;) {
        int32_t item = atomic_fetch_add_explicit(&c->attn_next, 1, memory_order_relaxed);
        if (item >= c->attn_items)
            break;
        int32_t rblk = item / (n_kv * n_hblk), rem = item % (n_kv * n_hblk);
        int32_t kvh = rem / n_hblk, hblk = rem % n_hblk;
        const float *q[ATTN_TILE];
        float *out[ATTN_TILE];
        int32_t a[ATTN_TILE], b[ATTN_TILE];
        int tq = 0;
        int32_t k0 = INT32_MAX, k1 = 0;
        for (int32_t rr = 0; rr < rb; rr++) {
            int32_t r = rblk * rb + rr;
            if (r >= c->cur_n)
                break;
            int32_t lo, hi;
            gm_mask_key_range(lh->is_swa, c->window, c->cur_p0 + r, c->b.info[r].blk_end, &lo, &hi);
            for (int32_t hh = 0; hh < hb; hh++) {
                int32_t hg = hblk * hb + hh;
                if (hg >= group)
                    break;
                size_t off = (size_t)r * (size_t)nq + (size_t)(kvh * group + hg) * (size_t)hd;
                q[tq] = c->b.q + off;
                out[tq] = c->b.att + off;
                a[tq] = lo;
                b[tq] = hi;
                tq++;
            }
            if (lo < k0)
                k0 = lo;
            if (hi > k1)
                k1 = hi;
        }
        const int32_t nk = k1 - k0, s0 = k0 % cap;
        const int32_t seg = nk < cap - s0 ? nk : cap - s0;
        const float *kt = kv->k + (size_t)kvh * (size_t)hd * (size_t)kv->kstride;
        const float *vb = kv->v + (size_t)kvh * (size_t)cap * (size_t)hd;

        qk(kt + s0, kv->kstride, hd, q, tq, S, nk, seg);
        if (seg < nk)
            qk(kt, kv->kstride, hd, q, tq, S + seg, nk, nk - seg);
        for (int t = 0; t < tq; t++) {
            float *st = S + (size_t)t * (size_t)nk;
            int32_t lo = a[t] - k0, hi = b[t] - k0;
            memset(st, 0, (size_t)lo * sizeof(float));
            gm_softmax(st + lo, hi - lo);
            memset(st + hi, 0, (size_t)(nk - hi) * sizeof(float));
        }
        pv(vb + (size_t)s0 * (size_t)hd, hd, seg, S, nk, tq, out, false);
        if (seg < nk)
            pv(vb, hd, nk - seg, S + seg, nk, tq, out, true);
    }
}

/* x += RMSNorm(o; post_attention_norm); xn = RMSNorm(x; ffn_norm) */
static void job_post_attn(gm_context *c, int32_t r0, int32_t r1, int ith)
{
    (void)ith;
    const gm_layer_weights *w = &c->m->layers[c->cur_layer];
    const float eps = c->m->hp.rms_eps;
    for (int32_t r = r0; r < r1; r++) {
        float *x = c->b.x + (size_t)r * (size_t)c->H, *o = c->b.o + (size_t)r * (size_t)c->H;
        gm_rmsnorm(o, o, w->post_attn_norm, c->H, eps);
        gm_vec_add(x, o, c->H);
        gm_rmsnorm(c->b.xn + (size_t)r * (size_t)c->H, x, w->ffn_norm, c->H, eps);
    }
}

/* gate = GELU_tanh(gate) * up */
static void job_ffn_act(gm_context *c, int32_t r0, int32_t r1, int ith)
{
    (void)ith;
    const int64_t ff = c->m->hp.layers[c->cur_layer].n_ff;
    for (int32_t r = r0; r < r1; r++) {
        float *g = c->b.gate + (size_t)r * (size_t)ff;
        gm_gelu_tanh(g, ff);
        gm_vec_mul(g, c->b.up + (size_t)r * (size_t)ff, ff);
    }
}

/* x += RMSNorm(o; post_ffw_norm); without PLE also the layer scale. */
static void job_post_ffn(gm_context *c, int32_t r0, int32_t r1, int ith)
{
    (void)ith;
    const gm_layer_weights *w = &c->m->layers[c->cur_layer];
    for (int32_t r = r0; r < r1; r++) {
        float *x = c->b.x + (size_t)r * (size_t)c->H, *o = c->b.o + (size_t)r * (size_t)c->H;
        gm_rmsnorm(o, o, w->post_ffw_norm, c->H, c->m->hp.rms_eps);
        gm_vec_add(x, o, c->H);
        if (c->P == 0 && w->layer_scale != 1.0f)
            gm_vec_scale(x, w->layer_scale, c->H);
    }
}

/* PLE gate: pg = GELU_tanh(pg) * ple[layer] */
static void job_ple_gate(gm_context *c, int32_t r0, int32_t r1, int ith)
{
    (void)ith;
    for (int32_t r = r0; r < r1; r++) {
        float *g = c->b.pg + (size_t)r * (size_t)c->P;
        gm_gelu_tanh(g, c->P);
        gm_vec_mul(g, c->b.ple + (size_t)r * (size_t)c->LP + (size_t)c->cur_layer * (size_t)c->P, c->P);
    }
}

/* x += RMSNorm(o; post_norm); x *= layer_scale */
static void job_ple_out(gm_context *c, int32_t r0, int32_t r1, int ith)
{
    (void)ith;
    const gm_layer_weights *w = &c->m->layers[c->cur_layer];
    for (int32_t r = r0; r < r1; r++) {
        float *x = c->b.x + (size_t)r * (size_t)c->H, *o = c->b.o + (size_t)r * (size_t)c->H;
        gm_rmsnorm(o, o, w->post_norm, c->H, c->m->hp.rms_eps);
        gm_vec_add(x, o, c->H);
        if (w->layer_scale != 1.0f)
            gm_vec_scale(x, w->layer_scale, c->H);
    }
}

static void job_out_norm(gm_context *c, int32_t r0, int32_t r1, int ith)
{
    (void)ith;
    int32_t first = c->out_first; /* LAST: only the chunk's last row */
    for (int32_t r = r0; r < r1; r++)
        gm_rmsnorm(c->b.xn + (size_t)r * (size_t)c->H, c->b.x + (size_t)(first + r) * (size_t)c->H,
                   c->m->output_norm, c->H, c->m->hp.rms_eps);
}

typedef struct softcap_call {
    float *y;
    int64_t n;
    float cap;
} softcap_call;

static void softcap_tramp(void *arg, int ith, int nth)
{
    softcap_call *s = arg;
    long b, e;
    gm_pool_range((long)((s->n + 63) / 64), ith, nth, &b, &e);
    int64_t lo = (int64_t)b * 64, hi = (int64_t)e * 64;
    if (hi > s->n)
        hi = s->n;
    if (lo < hi)
        gm_softcap(s->y + lo, hi - lo, s->cap);
}

static bool cancelled(const gm_context *c)
{
    return c->should_cancel && c->should_cancel(c->cancel_ud);
}

/* Keeps only the chunk's last `keep` (0 or 1) rows: moves the last row's state to row 0
 * and advances the chunk's first position. Returns the rows left. */
static int32_t compact_rows(gm_context *c, int32_t n, int32_t keep)
{
    if (keep <= 0) {
        c->cur_n = 0;
        return 0;
    }
    const int32_t r = n - 1;
    if (r > 0) {
        memcpy(c->b.x, c->b.x + (size_t)r * (size_t)c->H, (size_t)c->H * sizeof(float));
        memcpy(c->b.xn, c->b.xn + (size_t)r * (size_t)c->H, (size_t)c->H * sizeof(float));
        if (c->LP)
            memcpy(c->b.ple, c->b.ple + (size_t)r * (size_t)c->LP, (size_t)c->LP * sizeof(float));
        for (int t = 0; t < c->n_rope; t++)
            memcpy(c->b.cs[t], c->b.cs[t] + (size_t)r * 2 * (size_t)c->rope[t].half,
                   2 * (size_t)c->rope[t].half * sizeof(float));
        c->b.info[0] = c->b.info[r];
        c->cur_p0 += r;
    }
    c->cur_n = 1;
    return 1;
}

/* One decoder layer over the chunk's n rows (§2.4). keep >= 0: after this layer's K/V
 * are in the cache, only the last `keep` rows go on (see chunk_forward). Returns the
 * rows that went on. */
static int32_t layer_forward(gm_context *c, int32_t l, int32_t n, int32_t keep)
{
    const gm_model *m = c->m;
    const gm_layer_hparams *lh = &m->hp.layers[l];
    const gm_layer_weights *w = &m->layers[l];
    const int64_t H = c->H, hd = lh->head_dim, nq = (int64_t)lh->n_head * hd,
                  nkv = (int64_t)lh->n_head_kv * hd, ff = lh->n_ff;
    c->cur_layer = l;

    run_rows(c, n, job_attn_norm);
    if (lh->kv_source < 0) {
        matmul(c, &w->wk, c->b.xn, n, H, c->b.k, nkv);
        if (w->wv.data)
            matmul(c, &w->wv, c->b.xn, n, H, c->b.v, nkv);
    }
    if (keep >= 0 && keep < n) {
        c->do_q = false;
        c->do_kv = true;
        if (lh->kv_source < 0)
            run_rows(c, n, job_qkv);
        n = compact_rows(c, n, keep);
        if (n == 0)
            return 0;
        c->do_q = true;
        c->do_kv = false;
        matmul(c, &w->wq, c->b.xn, n, H, c->b.q, nq);
        run_rows(c, n, job_qkv);
    } else {
        c->do_q = c->do_kv = true;
        matmul(c, &w->wq, c->b.xn, n, H, c->b.q, nq);
        run_rows(c, n, job_qkv);
    }

    const int32_t src = lh->kv_source >= 0 ? lh->kv_source : l;
    plan_attn(c, lh, c->kv[src].n_kv, n);
    atomic_store(&c->attn_next, 0);
    if (c->pool && c->attn_items > 1)
        gm_pool_run(c->pool, job_attn, c);
    else
        job_attn(c, 0, 1);

    matmul(c, &w->wo, c->b.att, n, nq, c->b.o, H);
    run_rows(c, n, job_post_attn);
    matmul(c, &w->ffn_gate, c->b.xn, n, H, c->b.gate, ff);
    matmul(c, &w->ffn_up, c->b.xn, n, H, c->b.up, ff);
    run_rows(c, n, job_ffn_act);
    matmul(c, &w->ffn_down, c->b.gate, n, ff, c->b.o, H);
    run_rows(c, n, job_post_ffn);

    if (c->P > 0) {
        matmul(c, &w->inp_gate, c->b.x, n, H, c->b.pg, c->P);
        run_rows(c, n, job_ple_gate);
        matmul(c, &w->proj, c->b.pg, n, c->P, c->b.o, H);
        run_rows(c, n, job_ple_out);
    }
    return n;
}

/* Runs one chunk of n rows (c->rows filled) at positions p0.. . out_logits: NULL, or
 * where the logits rows go (all rows, or only the last one). */
static int chunk_forward(gm_context *c, int32_t p0, int32_t n, float *out_logits, bool all_rows)
{
    const gm_model *m = c->m;
    c->cur_p0 = p0;
    c->cur_n = n;
    run_rows(c, n, job_embed);
    if (c->P > 0) {
        matmul(c, &m->ple_model_proj, c->b.x, n, c->H, c->b.ple, c->LP);
        run_rows(c, n, job_ple);
    }
    /* After the last layer that writes a KV cache, a row only feeds its own logits
     * (KV-shared layers read earlier caches and write none): rows without logits stop
     * once that layer has cached their K/V. For E2B this skips the 20 shared layers
     * for all but the last prompt position. */
    const int32_t keep = !out_logits ? 0 : all_rows ? -1 : 1;
    for (uint32_t l = 0; l < m->hp.n_layer && n > 0; l++) {
        if (cancelled(c))
            return GM_ERR_CANCELLED;
        n = layer_forward(c, (int32_t)l, n, (int32_t)l == c->last_own ? keep : -1);
    }
    if (!out_logits)
        return GM_OK;
    if (cancelled(c))
        return GM_ERR_CANCELLED;

    int32_t n_out = all_rows ? n : 1;
    c->out_first = n - n_out;
    run_rows(c, n_out, job_out_norm);
    const int64_t V = m->hp.n_vocab;
    /* the tied head only for the rows asked for: one n=1 product when decoding */
    matmul(c, &m->output, c->b.xn, n_out, c->H, out_logits, V);
    if (m->hp.final_softcap > 0.0f) {
        softcap_call sc = { out_logits, (int64_t)n_out * V, m->hp.final_softcap };
        if (c->pool)
            gm_pool_run(c->pool, softcap_tramp, &sc);
        else
            softcap_tramp(&sc, 0, 1);
    }
    return GM_OK;
}

static int validate_spans(const gm_context *c, const gm_span *spans, size_t n_spans, int64_t *total,
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

int gm_context_eval(gm_context *c, const gm_span *spans, size_t n_spans, gm_logits_mode mode, float *logits,
                    gm_error *err)
{
    if (!c)
        return gm_set_error(err, GM_ERR_INVALID, "gm_context_eval: no context");
    if (mode != GM_LOGITS_NONE && mode != GM_LOGITS_LAST && mode != GM_LOGITS_ALL)
        return gm_set_error(err, GM_ERR_INVALID, "gm_context_eval: unknown logits mode %d", (int)mode);
    if (mode != GM_LOGITS_NONE && !logits)
        return gm_set_error(err, GM_ERR_INVALID, "gm_context_eval: logits requested without a buffer");
    int64_t total = 0;
    int rc = validate_spans(c, spans, n_spans, &total, err);
    if (rc)
        return rc;
    if (total == 0) {
        if (mode != GM_LOGITS_NONE)
            return gm_set_error(err, GM_ERR_INVALID, "gm_context_eval: no positions to produce logits for");
        return GM_OK;
    }
    if ((int64_t)c->n_past + total > c->n_ctx)
        return gm_set_error(err, GM_ERR_RANGE, "context full: %d cached + %lld new positions exceed n_ctx %d",
                            c->n_past, (long long)total, c->n_ctx);
    if (cancelled(c))
        return gm_set_error(err, GM_ERR_CANCELLED, "cancelled");

    const bool vision = c->m->hp.bidir == GM_BIDIR_VISION;

    /* Plan: the largest chunk decides scratch rows and ring size. */
    planner pl = { spans, n_spans, vision, 0, 0 };
    int64_t max_chunk = 0;
    for (int64_t done = 0; done < total;) {
        int64_t len = plan_next(&pl, c->n_batch);
        if (len > max_chunk)
            max_chunk = len;
        done += len;
    }
    if (max_chunk > c->b.rows && (rc = alloc_bufs(c, (int32_t)max_chunk, err)))
        return rc;
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
    }

    row_iter it;
    iter_init(&it, spans, n_spans, vision, c->H, c->n_past);
    pl = (planner){ spans, n_spans, vision, 0, 0 };
    const int64_t V = c->m->hp.n_vocab;
    int64_t done = 0;
    while (done < total) {
        int32_t len = (int32_t)plan_next(&pl, c->n_batch);
        int32_t p0 = c->n_past + (int32_t)done;
        for (int32_t r = 0; r < len; r++) {
            iter_next(&it, &c->b.info[r]);
            c->pos_type[p0 + r] = c->b.info[r].type;
            c->pos_key[p0 + r] = c->b.info[r].key;
        }
        float *out = NULL;
        bool all = mode == GM_LOGITS_ALL;
        if (all)
            out = logits + done * V;
        else if (mode == GM_LOGITS_LAST && done + len == total)
            out = logits;
        rc = chunk_forward(c, p0, len, out, all);
        if (rc) {
            if (u1 > u0)
                undo_copy(c, u0, u1, false);
            return gm_set_error(err, rc, "cancelled after %lld of %lld positions (cache unchanged)",
                                (long long)done, (long long)total);
        }
        done += len;
    }

    c->n_past += (int32_t)total;
    if (c->has_ring && c->n_past - c->swa_cap > c->swa_oldest)
        c->swa_oldest = c->n_past - c->swa_cap;
    return GM_OK;
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

int32_t gm_context_common_prefix(const gm_context *c, const gm_span *spans, size_t n_spans)
{
    if (!c || (!spans && n_spans))
        return 0;
    row_iter it;
    iter_init(&it, spans, n_spans, c->m->hp.bidir == GM_BIDIR_VISION, c->H, 0);
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
        iter_next(&it, &r);
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
