/* vision-encoder.c — gemma4v vision tower + embedder (see vision-encoder.h).
 *
 * Per image: patch embedding (pixels 2p−1, conv kernel as a [H, 3·16·16] matrix in CHW
 * order) + x/y position tables; encoder layers with sandwich RMSNorms, clamped linears,
 * per-head q/k RMSNorm (weighted), v RMSNorm (weightless), 2-D NeoX RoPE (theta 100, first
 * half of each head by column, second by row), scale-1 bidirectional attention, gated
 * GELU-tanh MLP; 3×3 average pooling × sqrt(H); optional standardisation; weightless
 * RMSNorm; projection to the text width.
 *
 * Speed: every linear is one batched gm_matmul over all patches; attention runs head by
 * head as two F32 matmuls (Q·Kᵀ, then softmax rows · V) over blocks of query rows, so
 * the scores never exceed ~16 MiB; the per-row steps (norms, RoPE, clamps, GELU) are
 * split over the pool, with each output clamp folded into the row pass after its matmul.
 */
#include "vision-encoder.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clipped-linear.h"
#include "core/gguf.h"
#include "core/kernels.h"
#include "core/ops.h"
#include "core/tensor-view.h"

#define VT_PATCH 16
#define VT_POOL 3
#define VT_ROPE_THETA 100.0

typedef gm_clipped_linear vt_linear;

typedef struct vt_layer {
    float *ln1, *q_norm, *k_norm, *attn_post_norm, *ln2, *ffn_post_norm;
    vt_linear q, k, v, o, gate, up, down;
} vt_layer;

struct gm_vision_model {
    gm_gguf *g;
    uint32_t n_embd, n_ff, n_layer, n_head, head_dim, proj_dim, pos_size;
    float eps;
    gm_matrix patch_embd;  /* rows H, cols 768 (CHW) */
    float *pos_embd;       /* [2][pos_size][H], x table first */
    float *std_bias, *std_scale; /* NULL without standardisation */
    gm_matrix proj;        /* rows proj_dim, cols H */
    float *inv_freq;       /* head_dim / 4 frequencies per axis */
    vt_layer *layers;
};

/* ---- loading ---------------------------------------------------------------------- */

void gm_vision_model_free(gm_vision_model *m)
{
    if (!m)
        return;
    if (m->layers) {
        for (uint32_t i = 0; i < m->n_layer; i++) {
            vt_layer *L = &m->layers[i];
            free(L->ln1);
            free(L->q_norm);
            free(L->k_norm);
            free(L->attn_post_norm);
            free(L->ln2);
            free(L->ffn_post_norm);
        }
        free(m->layers);
    }
    free(m->pos_embd);
    free(m->std_bias);
    free(m->std_scale);
    free(m->inv_freq);
    gm_gguf_close(m->g);
    free(m);
}

static int vt_load(gm_vision_model *m, gm_error *err)
{
    gm_gguf *g = m->g;
    char *s = NULL;
    int rc = gm_gguf_get_str(g, "clip.vision.projector_type", &s, err);
    if (rc != GM_OK) {
        /* Files with a single modality may only have clip.projector_type. */
        gm_error_clear(err);
        rc = gm_gguf_get_str(g, "clip.projector_type", &s, err);
        if (rc != GM_OK)
            return rc;
    }
    bool ok = strcmp(s, "gemma4v") == 0;
    if (!ok)
        gm_set_error(err, GM_ERR_UNSUPPORTED, "%s: projector_type %s is not gemma4v", g->path, s);
    free(s);
    if (!ok)
        return GM_ERR_UNSUPPORTED;
    uint32_t patch = 0, pool = VT_POOL;
    if ((rc = gm_gguf_get_u32(g, "clip.vision.embedding_length", &m->n_embd, err)) ||
        (rc = gm_gguf_get_u32(g, "clip.vision.feed_forward_length", &m->n_ff, err)) ||
        (rc = gm_gguf_get_u32(g, "clip.vision.block_count", &m->n_layer, err)) ||
        (rc = gm_gguf_get_u32(g, "clip.vision.attention.head_count", &m->n_head, err)) ||
        (rc = gm_gguf_get_u32(g, "clip.vision.patch_size", &patch, err)) ||
        (rc = gm_gguf_get_f32(g, "clip.vision.attention.layer_norm_epsilon", &m->eps, err)) ||
        (rc = gm_gguf_get_u32_opt(g, "clip.vision.projector.scale_factor", &pool, err)))
        return rc;
    if (patch != VT_PATCH || pool != VT_POOL)
        return gm_set_error(err, GM_ERR_UNSUPPORTED, "%s: patch_size %u / pooling %u (want 16 / 3)",
                            g->path, patch, pool);
    if (m->n_embd == 0 || m->n_head == 0 || m->n_embd % m->n_head || m->n_ff == 0 ||
        (m->n_embd / m->n_head) % 4 || m->n_layer > 4096 || m->n_embd > (1u << 16) ||
        m->n_ff > (1u << 20))
        return gm_set_error(err, GM_ERR_FORMAT,
                            "%s: bad clip.vision sizes (embedding_length %u, head_count %u, feed_forward_length %u, block_count %u)",
                            g->path, m->n_embd, m->n_head, m->n_ff, m->n_layer);
    m->head_dim = m->n_embd / m->n_head;
    const int64_t H = m->n_embd, F = m->n_ff;

    const int64_t patch_ne[4] = { VT_PATCH, VT_PATCH, 3, H };   /* the conv kernel, CHW */
    if ((rc = gm_tensor_matrix(g, "v.patch_embd.weight", 4, patch_ne, &m->patch_embd, err)))
        return rc;
    const gm_gguf_tensor *pt = gm_gguf_find_tensor(g, "v.position_embd.weight");
    if (!pt)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: missing tensor v.position_embd.weight", g->path);
    if (pt->ne[1] <= 0 || pt->ne[1] > 65536)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: tensor v.position_embd.weight has bad table size %lld",
                            g->path, (long long)pt->ne[1]);
    m->pos_size = (uint32_t)pt->ne[1];
    const int64_t pne[3] = { H, m->pos_size, 2 };
    if (!(m->pos_embd = gm_tensor_floats(g, "v.position_embd.weight", 3, pne, err)))
        return err ? err->code : GM_ERR_FORMAT;

    const int64_t hne[1] = { H };
    if (gm_gguf_find_tensor(g, "v.std_bias") || gm_gguf_find_tensor(g, "v.std_scale")) {
        if (!(m->std_bias = gm_tensor_floats(g, "v.std_bias", 1, hne, err)) ||
            !(m->std_scale = gm_tensor_floats(g, "v.std_scale", 1, hne, err)))
            return err ? err->code : GM_ERR_FORMAT;
    }
    const gm_gguf_tensor *pj = gm_gguf_find_tensor(g, "mm.input_projection.weight");
    if (!pj)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: missing tensor mm.input_projection.weight", g->path);
    if (pj->ne[1] <= 0 || pj->ne[1] > (1 << 20))
        return gm_set_error(err, GM_ERR_FORMAT, "%s: tensor mm.input_projection.weight has bad shape", g->path);
    m->proj_dim = (uint32_t)pj->ne[1];
    uint32_t kd = 0;
    if ((rc = gm_gguf_get_u32_opt(g, "clip.vision.projection_dim", &kd, err)))
        return rc;
    if (kd && kd != m->proj_dim)
        return gm_set_error(err, GM_ERR_FORMAT,
                            "%s: clip.vision.projection_dim %u but mm.input_projection.weight has %u outputs",
                            g->path, kd, m->proj_dim);
    const int64_t proj_ne[2] = { H, m->proj_dim };
    if ((rc = gm_tensor_matrix(g, "mm.input_projection.weight", 2, proj_ne, &m->proj, err)))
        return rc;

    /* 2-D RoPE: each axis rotates head_dim/2 dims as NeoX pairs with head_dim/4 freqs. */
    uint32_t half = m->head_dim / 2, nf = half / 2;
    if (!(m->inv_freq = malloc(nf * sizeof *m->inv_freq)))
        return gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", g->path);
    for (uint32_t i = 0; i < nf; i++)
        m->inv_freq[i] = (float)pow(VT_ROPE_THETA, -2.0 * i / (double)half);

    if (!(m->layers = calloc(m->n_layer ? m->n_layer : 1, sizeof *m->layers)))
        return gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", g->path);
    const int64_t dne[1] = { m->head_dim };
    for (uint32_t il = 0; il < m->n_layer; il++) {
        vt_layer *L = &m->layers[il];
        char name[256];
#define VT_VEC(field, sfx, ne)                                                              \
        snprintf(name, sizeof name, "v.blk.%u." sfx, il);                                    \
        if (!(L->field = gm_tensor_floats(g, name, 1, ne, err)))                                    \
            return err ? err->code : GM_ERR_FORMAT;
        VT_VEC(ln1, "ln1.weight", hne)
        VT_VEC(q_norm, "attn_q_norm.weight", dne)
        VT_VEC(k_norm, "attn_k_norm.weight", dne)
        VT_VEC(attn_post_norm, "attn_post_norm.weight", hne)
        VT_VEC(ln2, "ln2.weight", hne)
        VT_VEC(ffn_post_norm, "ffn_post_norm.weight", hne)
#undef VT_VEC
#define VT_LIN(field, sfx, rows, cols)                                                      \
        snprintf(name, sizeof name, "v.blk.%u." sfx, il);                                    \
        if ((rc = gm_clipped_linear_load(g, name, rows, cols, &L->field, err)))                      \
            return rc;
        VT_LIN(q, "attn_q", H, H)
        VT_LIN(k, "attn_k", H, H)
        VT_LIN(v, "attn_v", H, H)
        VT_LIN(o, "attn_out", H, H)
        VT_LIN(gate, "ffn_gate", F, H)
        VT_LIN(up, "ffn_up", F, H)
        VT_LIN(down, "ffn_down", H, F)
#undef VT_LIN
    }
    return GM_OK;
}

gm_vision_model *gm_vision_model_load(const char *mmproj_path, gm_error *err)
{
    gm_vision_model *m = calloc(1, sizeof *m);
    if (!m) {
        gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", mmproj_path);
        return NULL;
    }
    if (!(m->g = gm_gguf_open(mmproj_path, err)) || vt_load(m, err) != GM_OK) {
        gm_vision_model_free(m);
        return NULL;
    }
    return m;
}

uint32_t gm_vision_model_projection_dim(const gm_vision_model *m) { return m->proj_dim; }
uint32_t gm_vision_model_hidden(const gm_vision_model *m) { return m->n_embd; }

/* ---- forward ---------------------------------------------------------------------- */

/* The state of one forward pass, shared by the row-parallel steps. */
typedef struct vt_fwd {
    const gm_vision_model *m;
    const vt_layer *L;
    const gm_image_patches *p;
    int64_t n;
    float *h, *a, *q, *k, *v, *o, *gate, *up;
    /* a clamp copy: dst = clamp(src) over rows of cols */
    const float *c_src;
    float *c_dst;
    int64_t c_cols;
    float c_lo, c_hi;
    /* attention of one head: packed K (n × hd), V transposed (hd × n), scores of a
     * block of query rows */
    int64_t head;
    float *kh, *vt, *s;
} vt_fwd;

static void vt_rows_clamp_copy(void *arg, int64_t r0, int64_t r1)
{
    vt_fwd *f = arg;
    const int64_t c = f->c_cols;
    for (int64_t i = r0; i < r1; i++) {
        const float *x = f->c_src + i * c;
        float *y = f->c_dst + i * c;
        for (int64_t j = 0; j < c; j++)
            y[j] = x[j] < f->c_lo ? f->c_lo : (x[j] > f->c_hi ? f->c_hi : x[j]);
    }
}

static void vt_rows_clamp(void *arg, int64_t r0, int64_t r1)
{
    vt_fwd *f = arg;
    gm_clampv(f->c_dst + r0 * f->c_cols, (r1 - r0) * f->c_cols, f->c_lo, f->c_hi);
}

/* Clamps the caller applies itself inside a row pass it makes anyway (saves a pass
 * over n × n_ff floats), or an input that may be clamped in place (not read again). */
#define VT_IN_DONE 1u
#define VT_IN_PLACE 2u
#define VT_OUT_LATER 4u

/* y = clamp_out(W · clamp_in(x)); tmp holds n × cols floats when the input is clamped
 * into a copy. One batched matmul over all patches (the prefill path of the kernels). */
static void vt_linear_apply(gm_pool *pool, vt_fwd *f, const vt_linear *l, float *x,
                            float *tmp, float *y, unsigned flags)
{
    const int64_t cols = l->w.cols, rows = l->w.rows, n = f->n;
    if (l->clamp_in && (flags & VT_IN_PLACE)) {
        f->c_dst = x;
        f->c_cols = cols;
        f->c_lo = l->in_min;
        f->c_hi = l->in_max;
        gm_pool_run_rows(pool, n, vt_rows_clamp, f);
    } else if (l->clamp_in && !(flags & VT_IN_DONE)) {
        f->c_src = x;
        f->c_dst = tmp;
        f->c_cols = cols;
        f->c_lo = l->in_min;
        f->c_hi = l->in_max;
        gm_pool_run_rows(pool, n, vt_rows_clamp_copy, f);
        x = tmp;
    }
    gm_matmul(pool, &l->w, x, n, cols, y, rows);
    if (l->clamp_out && !(flags & VT_OUT_LATER)) {
        f->c_dst = y;
        f->c_cols = rows;
        f->c_lo = l->out_min;
        f->c_hi = l->out_max;
        gm_pool_run_rows(pool, n, vt_rows_clamp, f);
    }
}

static void vt_rows_ln1(void *arg, int64_t r0, int64_t r1)
{
    vt_fwd *f = arg;
    const int64_t H = f->m->n_embd;
    for (int64_t i = r0; i < r1; i++)
        gm_rmsnorm(f->a + i * H, f->h + i * H, f->L->ln1, H, f->m->eps);
}

static inline void vt_clamp_out(const vt_linear *l, float *x, int64_t n)
{
    if (l->clamp_out)
        gm_clampv(x, n, l->out_min, l->out_max);
}

/* The q/k/v output clamps, then per-head q/k RMSNorm (weighted), v RMSNorm (weightless),
 * 2-D RoPE on q and k. */
static void vt_rows_qkv(void *arg, int64_t r0, int64_t r1)
{
    vt_fwd *f = arg;
    const gm_vision_model *m = f->m;
    const int64_t H = m->n_embd, hd = m->head_dim, half = hd / 2;
    for (int64_t i = r0; i < r1; i++) {
        vt_clamp_out(&f->L->q, f->q + i * H, H);
        vt_clamp_out(&f->L->k, f->k + i * H, H);
        vt_clamp_out(&f->L->v, f->v + i * H, H);
        for (uint32_t hh = 0; hh < m->n_head; hh++) {
            float *qh = f->q + i * H + hh * hd, *kh = f->k + i * H + hh * hd;
            float *vh = f->v + i * H + hh * hd;
            gm_rmsnorm(qh, qh, f->L->q_norm, hd, m->eps);
            gm_rmsnorm(kh, kh, f->L->k_norm, hd, m->eps);
            gm_rmsnorm(vh, vh, NULL, hd, m->eps);
            for (int ax = 0; ax < 2; ax++) {
                gm_rope_neox(qh + ax * half, half, f->p->pos[2 * i + ax], m->inv_freq);
                gm_rope_neox(kh + ax * half, half, f->p->pos[2 * i + ax], m->inv_freq);
            }
        }
    }
}

/* Head f->head of K into kh (n × hd rows) and of V transposed into vt (hd × n). */
static void vt_rows_pack(void *arg, int64_t r0, int64_t r1)
{
    vt_fwd *f = arg;
    const int64_t H = f->m->n_embd, hd = f->m->head_dim, n = f->n, off = f->head * hd;
    for (int64_t j = r0; j < r1; j++) {
        memcpy(f->kh + j * hd, f->k + j * H + off, (size_t)hd * sizeof *f->kh);
        const float *vj = f->v + j * H + off;
        for (int64_t d = 0; d < hd; d++)
            f->vt[d * n + j] = vj[d];
    }
}

static void vt_rows_softmax(void *arg, int64_t r0, int64_t r1)
{
    vt_fwd *f = arg;
    for (int64_t i = r0; i < r1; i++)
        gm_softmax(f->s + i * f->n, f->n);
}

/* Query rows per block of scores: the n × n matrix of one head in pieces of at most
 * ~4M floats (16 MiB), never all heads at once. */
#define VT_SCORE_FLOATS ((int64_t)1 << 22)

static int64_t vt_query_block(int64_t n)
{
    int64_t nb = (n * n + VT_SCORE_FLOATS - 1) / VT_SCORE_FLOATS;
    if (nb < 1)
        nb = 1;
    return (n + nb - 1) / nb;
}

/* Scale-1 bidirectional attention, head by head: S = Q_h·K_hᵀ and O_h = softmax(S)·V_h
 * as F32 matmuls over the pool (the kernels' blocked batched path), softmax rows split
 * over the pool in between. */
static void vt_attention(gm_pool *pool, vt_fwd *f)
{
    const gm_vision_model *m = f->m;
    const int64_t n = f->n, H = m->n_embd, hd = m->head_dim, qb = vt_query_block(n);
    gm_matrix km = { .type = GM_TYPE_F32, .rows = n, .cols = hd, .row_bytes = (size_t)hd * sizeof(float),
                     .data = f->kh, .name = "vision attention K" };
    gm_matrix vm = { .type = GM_TYPE_F32, .rows = hd, .cols = n, .row_bytes = (size_t)n * sizeof(float),
                     .data = f->vt, .name = "vision attention V" };
    for (uint32_t hh = 0; hh < m->n_head; hh++) {
        f->head = hh;
        gm_pool_run_rows(pool, n, vt_rows_pack, f);
        for (int64_t i0 = 0; i0 < n; i0 += qb) {
            const int64_t nq = n - i0 < qb ? n - i0 : qb;
            gm_matmul(pool, &km, f->q + i0 * H + hh * hd, nq, H, f->s, n);
            gm_pool_run_rows(pool, nq, vt_rows_softmax, f);
            gm_matmul(pool, &vm, f->s, nq, n, f->o + i0 * H + hh * hd, H);
        }
    }
}

/* a = attn_post_norm(clamp_out(a)); h += a; a = ln2(h) */
static void vt_rows_post_attn(void *arg, int64_t r0, int64_t r1)
{
    vt_fwd *f = arg;
    const int64_t H = f->m->n_embd;
    for (int64_t i = r0; i < r1; i++) {
        float *ai = f->a + i * H, *hi = f->h + i * H;
        vt_clamp_out(&f->L->o, ai, H);
        gm_rmsnorm(ai, ai, f->L->attn_post_norm, H, f->m->eps);
        gm_vec_add(hi, ai, H);
        gm_rmsnorm(ai, hi, f->L->ln2, H, f->m->eps);
    }
}

/* gate = clamp_in_down(gelu(clamp_out(gate)) · clamp_out(up)), a row at a time so the
 * row stays in cache across the steps. */
static void vt_rows_gelu_mul(void *arg, int64_t r0, int64_t r1)
{
    vt_fwd *f = arg;
    const vt_layer *L = f->L;
    const int64_t F = f->m->n_ff;
    for (int64_t i = r0; i < r1; i++) {
        float *g = f->gate + i * F, *u = f->up + i * F;
        vt_clamp_out(&L->gate, g, F);
        vt_clamp_out(&L->up, u, F);
        gm_gelu_tanh(g, F);
        gm_vec_mul(g, u, F);
        if (L->down.clamp_in)
            gm_clampv(g, F, L->down.in_min, L->down.in_max);
    }
}

/* a = ffn_post_norm(clamp_out(a)); h += a */
static void vt_rows_post_ffn(void *arg, int64_t r0, int64_t r1)
{
    vt_fwd *f = arg;
    const int64_t H = f->m->n_embd;
    for (int64_t i = r0; i < r1; i++) {
        float *ai = f->a + i * H;
        vt_clamp_out(&f->L->down, ai, H);
        gm_rmsnorm(ai, ai, f->L->ffn_post_norm, H, f->m->eps);
        gm_vec_add(f->h + i * H, ai, H);
    }
}

int gm_vision_encode_checkpoints(const gm_vision_model *m, gm_pool *pool,
                                 const gm_image_patches *p, float *out,
                                 const gm_vision_checkpoints *ck, gm_error *err)
{
    if (!m || !p || !out || !p->values || !p->pos)
        return gm_set_error(err, GM_ERR_INVALID, "vision encode: NULL argument");
    const uint32_t gw = p->grid_w, gh = p->grid_h;
    const uint32_t cw = gw / VT_POOL, ntok = cw * (gh / VT_POOL);
    if (p->n_patches == 0 || (uint64_t)gw * gh != p->n_patches || p->n_soft_tokens != ntok ||
        ntok == 0 || p->n_patches > (1u << 20))
        return gm_set_error(err, GM_ERR_INVALID,
                            "vision encode: grid %ux%u, %u patches, %u soft tokens do not agree",
                            gw, gh, p->n_patches, p->n_soft_tokens);
    const int64_t n = p->n_patches, H = m->n_embd, F = m->n_ff, hd = m->head_dim;
    const int64_t K = 3 * VT_PATCH * VT_PATCH;
    for (int64_t i = 0; i < n; i++) {
        int32_t x = p->pos[2 * i], y = p->pos[2 * i + 1];
        if (x < 0 || y < 0 || (uint32_t)x >= gw || (uint32_t)y >= gh ||
            (uint32_t)x >= m->pos_size || (uint32_t)y >= m->pos_size ||
            (uint32_t)x / VT_POOL >= cw || (uint32_t)y / VT_POOL >= gh / VT_POOL)
            return gm_set_error(err, GM_ERR_INVALID,
                                "vision encode: patch %lld has position (%d, %d) outside grid %ux%u / table %u",
                                (long long)i, x, y, gw, gh, m->pos_size);
    }
    const int64_t W = F > K ? F : (H > K ? H : K); /* widest row */
    const int64_t qb = vt_query_block(n);
    size_t nbuf = (size_t)(n * H) * 6 + (size_t)(n * F) * 2 + (size_t)(n * W) + (size_t)(qb * n) +
                  (size_t)(2 * n * hd) + (size_t)ntok * H;
    float *buf = malloc(nbuf * sizeof *buf);
    int32_t *cnt = calloc(ntok, sizeof *cnt);
    if (!buf || !cnt) {
        free(buf);
        free(cnt);
        return gm_set_error(err, GM_ERR_NOMEM, "vision encode: out of memory for %lld patches",
                            (long long)n);
    }
    float *h = buf, *a = h + n * H, *q = a + n * H, *k = q + n * H, *v = k + n * H, *o = v + n * H;
    float *gate = o + n * H, *up = gate + n * F, *tmp = up + n * F, *scores = tmp + n * W;
    float *kh = scores + qb * n, *vt = kh + n * hd, *pooled = vt + n * hd;
    vt_fwd f = { .m = m, .p = p, .n = n, .h = h, .a = a, .q = q, .k = k, .v = v, .o = o,
                 .gate = gate, .up = up, .kh = kh, .vt = vt, .s = scores };

    /* Patch embedding: the kernel is CHW, the processor's patches are (row, col, channel). */
    for (int64_t i = 0; i < n; i++) {
        const float *src = p->values + i * K;
        float *dst = tmp + i * K;
        for (int c = 0; c < 3; c++)
            for (int r = 0; r < VT_PATCH * VT_PATCH; r++)
                dst[c * VT_PATCH * VT_PATCH + r] = 2.0f * (src[r * 3 + c] - 0.5f);
    }
    gm_matmul(pool, &m->patch_embd, tmp, n, K, h, H);
    for (int64_t i = 0; i < n; i++) {
        gm_vec_add(h + i * H, m->pos_embd + (int64_t)p->pos[2 * i] * H, H);
        gm_vec_add(h + i * H, m->pos_embd + ((int64_t)m->pos_size + p->pos[2 * i + 1]) * H, H);
    }
    if (ck && ck->patch_embd)
        memcpy(ck->patch_embd, h, (size_t)(n * H) * sizeof *h);

    for (uint32_t il = 0; il < m->n_layer; il++) {
        const vt_layer *L = &m->layers[il];
        f.L = L;
        gm_pool_run_rows(pool, n, vt_rows_ln1, &f);
        /* Output clamps are applied in the row pass after each matmul. */
        vt_linear_apply(pool, &f, &L->q, a, tmp, q, VT_OUT_LATER);
        vt_linear_apply(pool, &f, &L->k, a, tmp, k, VT_OUT_LATER);
        vt_linear_apply(pool, &f, &L->v, a, tmp, v, VT_OUT_LATER);
        gm_pool_run_rows(pool, n, vt_rows_qkv, &f);
        vt_attention(pool, &f);
        vt_linear_apply(pool, &f, &L->o, o, tmp, a, VT_IN_PLACE | VT_OUT_LATER);
        gm_pool_run_rows(pool, n, vt_rows_post_attn, &f);
        vt_linear_apply(pool, &f, &L->gate, a, tmp, gate, VT_OUT_LATER);
        vt_linear_apply(pool, &f, &L->up, a, tmp, up, VT_OUT_LATER);
        gm_pool_run_rows(pool, n, vt_rows_gelu_mul, &f);
        vt_linear_apply(pool, &f, &L->down, gate, tmp, a, VT_IN_DONE | VT_OUT_LATER);
        gm_pool_run_rows(pool, n, vt_rows_post_ffn, &f);
        if (il == 0 && ck && ck->layer0)
            memcpy(ck->layer0, h, (size_t)(n * H) * sizeof *h);
    }
    if (ck && ck->encoder_out)
        memcpy(ck->encoder_out, h, (size_t)(n * H) * sizeof *h);

    /* 3×3 average pooling; cells in row-major order over the pooled grid. */
    memset(pooled, 0, (size_t)ntok * H * sizeof *pooled);
    for (int64_t i = 0; i < n; i++) {
        uint32_t cell = (uint32_t)p->pos[2 * i] / VT_POOL + cw * ((uint32_t)p->pos[2 * i + 1] / VT_POOL);
        gm_vec_add(pooled + (int64_t)cell * H, h + i * H, H);
        cnt[cell]++;
    }
    int rc = GM_OK;
    const float scale = sqrtf((float)H) / (float)(VT_POOL * VT_POOL);
    for (uint32_t t = 0; t < ntok && rc == GM_OK; t++) {
        if (cnt[t] != VT_POOL * VT_POOL)
            rc = gm_set_error(err, GM_ERR_INVALID,
                              "vision encode: pooled cell %u has %d patches (positions repeat?)",
                              t, cnt[t]);
        gm_vec_scale(pooled + (int64_t)t * H, scale, H);
    }
    if (rc == GM_OK) {
        if (ck && ck->pooled)
            memcpy(ck->pooled, pooled, (size_t)ntok * H * sizeof *pooled);
        if (m->std_bias) {
            for (uint32_t t = 0; t < ntok; t++)
                for (int64_t d = 0; d < H; d++)
                    pooled[t * H + d] = (pooled[t * H + d] - m->std_bias[d]) * m->std_scale[d];
        }
        if (ck && ck->vision_out)
            memcpy(ck->vision_out, pooled, (size_t)ntok * H * sizeof *pooled);
        for (uint32_t t = 0; t < ntok; t++)
            gm_rmsnorm(pooled + (int64_t)t * H, pooled + (int64_t)t * H, NULL, H, m->eps);
        gm_matmul(pool, &m->proj, pooled, ntok, H, out, m->proj_dim);
    }
    free(buf);
    free(cnt);
    return rc;
}

int gm_vision_encode(const gm_vision_model *m, gm_pool *pool, const gm_image_patches *patches,
                     float *soft_tokens_out, gm_error *err)
{
    return gm_vision_encode_checkpoints(m, pool, patches, soft_tokens_out, NULL, err);
}
