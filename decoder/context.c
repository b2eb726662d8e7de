/* context.c — gm_context: creation, evaluation and the forward pass of the Gemma 4 text
 * decoder (gemma4-model.md §2-3, §6.4). The KV cache is in kv-cache.c, attention in
 * attention.c, span handling in spans.c (shared state: context-internal.h).
 *
 * Evaluation runs in prefill chunks of at most n_batch positions; every weight matrix is
 * applied to the whole chunk with one gm_matmul call, so a weight is read once per chunk
 * (once per token when decoding). Element-wise steps run over rows on the thread pool,
 * attention over tiles of (query, head) pairs that share a KV head.
 *
 * Rows that need no logits stop after the last layer that writes a KV cache: what
 * follows (KV-shared layers, the rest of that layer) only feeds their logits.
 */
#include "context-internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/kernels.h"
#include "core/ops.h"
#include "core/quant.h"

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
    gm_kv_free(c);
    free_bufs(&c->b, c->n_rope);
    free(c->rope);
    free(c->rope_of);
    free(c->pos_type);
    free(c->pos_key);
    free(c->th_scores);
    free(c->th_row);
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
        if (!gm_kv_alloc(kv))
            goto nomem;
        c->kv_bytes += gm_kv_layer_bytes(kv);
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

    gm_attention(c, lh, n);

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
    int rc = gm_spans_validate(c, spans, n_spans, &total, err);
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

    /* Plan: the largest chunk decides scratch rows and ring size. */
    planner pl;
    gm_planner_init(&pl, c, spans, n_spans);
    int64_t max_chunk = 0;
    for (int64_t done = 0; done < total;) {
        int64_t len = gm_planner_next(&pl, c->n_batch);
        if (len > max_chunk)
            max_chunk = len;
        done += len;
    }
    if (max_chunk > c->b.rows && (rc = alloc_bufs(c, (int32_t)max_chunk, err)))
        return rc;
    if ((rc = gm_kv_begin(c, total, max_chunk, err)))
        return rc;

    row_iter it;
    gm_row_iter_init(&it, c, spans, n_spans, c->n_past);
    gm_planner_init(&pl, c, spans, n_spans);
    const int64_t V = c->m->hp.n_vocab;
    int64_t done = 0;
    while (done < total) {
        int32_t len = (int32_t)gm_planner_next(&pl, c->n_batch);
        int32_t p0 = c->n_past + (int32_t)done;
        for (int32_t r = 0; r < len; r++) {
            gm_row_iter_next(&it, &c->b.info[r]);
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
            gm_kv_rollback(c);
            return gm_set_error(err, rc, "cancelled after %lld of %lld positions (cache unchanged)",
                                (long long)done, (long long)total);
        }
        done += len;
    }

    gm_kv_commit(c, (int32_t)total);
    return GM_OK;
}
