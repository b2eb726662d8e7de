/* audio-encoder.c — gemma4a conformer + embedder (see audio-encoder.h).
 *
 * Per clip (all frames valid, as transformers 5.17.0 get_audio_features sees one clip
 * in a batch of one with an all-true mask):
 *  - two Conv2d 3×3 / stride 2 / pad 1 (no bias) over (time, mel), each followed by a
 *    LayerNorm over channels (weight, no bias, eps 1e-6) and ReLU; activations are kept
 *    channel-last [t][f][c], which is also the order input_proj reads (f·C1 + c);
 *  - input_proj (no bias);
 *  - conformer blocks: FFN half-steps (clamp ±G, RMSNorm, clipped up, SiLU, clipped down,
 *    clamp, RMSNorm, ×0.5, residual), chunked local attention (q·(hd^-½/ln2)·softplus
 *    (per_dim_scale) — the GGUF stores the softplus — k·ln(1+e)/ln2; key s visible to
 *    query t iff 0 ≤ t−s ≤ 11; logit q·k + q·R(t−s) with R(d) = relative_k_proj·sinusoid(d);
 *    cap 50·tanh(·/50)), light conv (RMSNorm without clamp, clipped linear_start, GLU
 *    first-half·sigmoid(second half), causal depthwise conv k=5, clamp, RMSNorm, SiLU,
 *    clipped linear_end, residual), norm_out after a clamp;
 *  - output_proj with bias, weightless RMSNorm (× mm.a.soft_emb_norm if present),
 *    projection to the text width.
 * HF's 12-query blocks with a 24-key context and rel_shift compute exactly the per-pair
 * form above (distance 12 is inside the context but always masked); a chunk is only a
 * window here. G = 1e10 (fp32 weights): a no-op on finite fp32 activations, kept so the
 * order of operations is HF's.
 * Speed: every linear is one gm_matmul over all of the clip's tokens (the kernels' batched
 * path: AMX / VNNI tiles for Q8_0), conv 1 is im2col chunks × one matmul, the attention
 * is 12 dot products per query and head, and the elementwise steps between matmuls run on
 * the pool, fused per row (clamps included) so each is one pass over the activations.
 */
#include "audio-encoder.h"

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

#define AU_MEL 128
#define AU_F1 ((AU_MEL + 1) / 2)        /* mel width after conv 0 */
#define AU_F2 ((AU_F1 + 1) / 2)         /* after conv 1: 32 */
#define AU_WINDOW 12                    /* keys t-11..t (attention_context_left − 1) */
#define AU_REL 13                       /* relative distances 0..12 HF projects */
#define AU_CAP 50.0f
#define AU_KERNEL 5
#define AU_EPS 1e-6f                    /* llama.cpp hard-codes it; the key is unreliable */
#define AU_GCLIP 1e10f
#define AU_MAX_FRAMES (1u << 20)

typedef gm_clipped_linear au_linear;

struct au_layer {
    float *ffn_norm, *ffn_post_norm, *attn_pre_norm, *attn_post_norm, *conv_pre_norm,
          *conv_post_norm, *ffn_norm_1, *ffn_post_norm_1, *out_norm;
    au_linear up, down, q, k, v, o, pw1, pw2, up_1, down_1;
    float *qs;     /* per-dim query scale: (hd^-½ / ln 2) · softplus(per_dim_scale) */
    float *dw;     /* [H][5] */
    float *rel;    /* [AU_REL][H]: relative_k_proj · sinusoid(d) */
};

struct gm_audio_model {
    gm_gguf *g;
    uint32_t n_embd, n_ff, n_layer, n_head, head_dim, c0, c1, out_dim, proj_dim;
    float *conv0, *norm0;   /* conv 0 transposed to [3·3][c0] (channels innermost), [c0] */
    float *conv1r, *norm1;  /* conv 1 reordered to [c1][a][b][c0] (im2col order), [c1] */
    gm_matrix conv1m;       /* F32 view of conv1r: rows c1, cols 9·c0 */
    gm_matrix in_proj;      /* rows H, cols 32·c1 */
    au_linear out_proj;
    float *out_bias, *soft_norm;
    gm_matrix mm_proj;      /* rows proj_dim, cols out_dim */
    struct au_layer *layers;
};

/* ---- loading ---------------------------------------------------------------------- */

void gm_audio_model_free(gm_audio_model *m)
{
    if (!m)
        return;
    if (m->layers) {
        for (uint32_t i = 0; i < m->n_layer; i++) {
            struct au_layer *L = &m->layers[i];
            float *v[] = { L->ffn_norm, L->ffn_post_norm, L->attn_pre_norm, L->attn_post_norm,
                           L->conv_pre_norm, L->conv_post_norm, L->ffn_norm_1,
                           L->ffn_post_norm_1, L->out_norm, L->qs, L->dw, L->rel };
            for (size_t j = 0; j < sizeof v / sizeof v[0]; j++)
                free(v[j]);
        }
        free(m->layers);
    }
    free(m->conv0);
    free(m->norm0);
    free(m->conv1r);
    free(m->norm1);
    free(m->out_bias);
    free(m->soft_norm);
    gm_gguf_close(m->g);
    free(m);
}

/* R(d) = relative_k_proj · [sin(d·τ_i), cos(d·τ_i)], τ_i = 10^4^(−i/(H/2−1)), d = 0..12. */
static int au_rel_table(const gm_audio_model *m, struct au_layer *L, const gm_matrix *relk,
                        gm_error *err)
{
    const int64_t H = m->n_embd, half = H / 2;
    float *sinus = malloc((size_t)(AU_REL * H) * sizeof *sinus);
    L->rel = malloc((size_t)(AU_REL * H) * sizeof *L->rel);
    if (!sinus || !L->rel) {
        free(sinus);
        return gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", m->g->path);
    }
    const double incr = log(1e4) / (double)(half > 1 ? half - 1 : 1);
    for (int d = 0; d < AU_REL; d++)
        for (int64_t i = 0; i < half; i++) {
            double a = d * exp(-(double)i * incr);
            sinus[d * H + i] = (float)sin(a);
            sinus[d * H + half + i] = (float)cos(a);
        }
    gm_matmul(NULL, relk, sinus, AU_REL, H, L->rel, H);
    free(sinus);
    return GM_OK;
}

static int au_load(gm_audio_model *m, gm_error *err)
{
    gm_gguf *g = m->g;
    char *s = NULL;
    int rc = gm_gguf_get_str(g, "clip.audio.projector_type", &s, err);
    if (rc != GM_OK) {
        /* Single-modality files may only have clip.projector_type. */
        gm_error_clear(err);
        if ((rc = gm_gguf_get_str(g, "clip.projector_type", &s, err)) != GM_OK)
            return gm_set_error(err, GM_ERR_UNSUPPORTED,
                                "%s: no audio encoder (no clip.audio.projector_type)", g->path);
    }
    bool ok = strcmp(s, "gemma4a") == 0;
    if (!ok)
        gm_set_error(err, GM_ERR_UNSUPPORTED, "%s: audio projector_type %s is not gemma4a", g->path, s);
    free(s);
    if (!ok)
        return GM_ERR_UNSUPPORTED;
    bool has_audio = true;
    uint32_t mel = AU_MEL, ff_key = 0;
    if ((rc = gm_gguf_get_bool_opt(g, "clip.has_audio_encoder", &has_audio, err)) ||
        (rc = gm_gguf_get_u32(g, "clip.audio.embedding_length", &m->n_embd, err)) ||
        (rc = gm_gguf_get_u32(g, "clip.audio.block_count", &m->n_layer, err)) ||
        (rc = gm_gguf_get_u32(g, "clip.audio.attention.head_count", &m->n_head, err)) ||
        (rc = gm_gguf_get_u32_opt(g, "clip.audio.feed_forward_length", &ff_key, err)) ||
        (rc = gm_gguf_get_u32_opt(g, "clip.audio.num_mel_bins", &mel, err)))
        return rc;
    if (!has_audio)
        return gm_set_error(err, GM_ERR_UNSUPPORTED, "%s: clip.has_audio_encoder is false", g->path);
    if (mel != AU_MEL)
        return gm_set_error(err, GM_ERR_UNSUPPORTED, "%s: clip.audio.num_mel_bins %u (want %d)",
                            g->path, mel, AU_MEL);
    if (m->n_embd == 0 || m->n_embd % 2 || m->n_head == 0 || m->n_embd % m->n_head ||
        m->n_layer > 4096 || m->n_embd > (1u << 16))
        return gm_set_error(err, GM_ERR_FORMAT,
                            "%s: bad clip.audio sizes (embedding_length %u, head_count %u, block_count %u)",
                            g->path, m->n_embd, m->n_head, m->n_layer);
    m->head_dim = m->n_embd / m->n_head;
    const int64_t H = m->n_embd, hd = m->head_dim;

    /* Sizes the keys do not carry come from the tensors. */
    const gm_gguf_tensor *t;
    if (!(t = gm_gguf_find_tensor(g, "a.conv1d.0.weight")))
        return gm_set_error(err, GM_ERR_FORMAT, "%s: missing tensor a.conv1d.0.weight", g->path);
    if (t->ne[3] <= 0 || t->ne[3] > 4096)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: tensor a.conv1d.0.weight has bad shape", g->path);
    m->c0 = (uint32_t)t->ne[3];
    if (!(t = gm_gguf_find_tensor(g, "a.conv1d.1.weight")))
        return gm_set_error(err, GM_ERR_FORMAT, "%s: missing tensor a.conv1d.1.weight", g->path);
    if (t->ne[3] <= 0 || t->ne[3] > 4096)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: tensor a.conv1d.1.weight has bad shape", g->path);
    m->c1 = (uint32_t)t->ne[3];
    if (!(t = gm_gguf_find_tensor(g, "a.blk.0.ffn_up.weight")) && m->n_layer)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: missing tensor a.blk.0.ffn_up.weight", g->path);
    m->n_ff = t ? (uint32_t)t->ne[1] : 4 * m->n_embd;
    if (m->n_ff == 0 || m->n_ff > (1u << 20) || (ff_key && ff_key != m->n_ff))
        return gm_set_error(err, GM_ERR_FORMAT,
                            "%s: clip.audio.feed_forward_length %u but a.blk.0.ffn_up.weight has %u outputs",
                            g->path, ff_key, m->n_ff);
    if (!(t = gm_gguf_find_tensor(g, "a.pre_encode.out.weight")))
        return gm_set_error(err, GM_ERR_FORMAT, "%s: missing tensor a.pre_encode.out.weight", g->path);
    if (t->ne[1] <= 0 || t->ne[1] > (1 << 20))
        return gm_set_error(err, GM_ERR_FORMAT, "%s: tensor a.pre_encode.out.weight has bad shape", g->path);
    m->out_dim = (uint32_t)t->ne[1];
    if (!(t = gm_gguf_find_tensor(g, "mm.a.input_projection.weight")))
        return gm_set_error(err, GM_ERR_FORMAT, "%s: missing tensor mm.a.input_projection.weight", g->path);
    if (t->ne[1] <= 0 || t->ne[1] > (1 << 20))
        return gm_set_error(err, GM_ERR_FORMAT, "%s: tensor mm.a.input_projection.weight has bad shape", g->path);
    m->proj_dim = (uint32_t)t->ne[1];
    uint32_t kd = 0;
    if ((rc = gm_gguf_get_u32_opt(g, "clip.audio.projection_dim", &kd, err)))
        return rc;
    if (kd && kd != m->proj_dim)
        return gm_set_error(err, GM_ERR_FORMAT,
                            "%s: clip.audio.projection_dim %u but mm.a.input_projection.weight has %u outputs",
                            g->path, kd, m->proj_dim);

    const int64_t c0 = m->c0, c1 = m->c1, F = m->n_ff;
    const int64_t ne0[4] = { 3, 3, 1, c0 }, ne1[4] = { 3, 3, c0, c1 };
    const int64_t nc0[1] = { c0 }, nc1[1] = { c1 }, hne[1] = { H }, dne[1] = { hd };
    float *conv1 = NULL;
    float *conv0 = NULL;
    if (!(conv0 = gm_tensor_floats(g, "a.conv1d.0.weight", 4, ne0, err)) ||
        !(m->norm0 = gm_tensor_floats(g, "a.conv1d.0.norm.weight", 1, nc0, err)) ||
        !(conv1 = gm_tensor_floats(g, "a.conv1d.1.weight", 4, ne1, err)) ||
        !(m->norm1 = gm_tensor_floats(g, "a.conv1d.1.norm.weight", 1, nc1, err))) {
        free(conv0);
        free(conv1);
        return err ? err->code : GM_ERR_FORMAT;
    }
    /* conv 0 [c0][a][b] → [a][b][c0] (the channel loop runs over contiguous weights);
     * conv 1 [c1][c0][a][b] → [c1][a][b][c0]: the im2col rows gather channels innermost. */
    m->conv0 = malloc((size_t)(9 * c0) * sizeof *m->conv0);
    m->conv1r = malloc((size_t)(c1 * 9 * c0) * sizeof *m->conv1r);
    if (!m->conv0 || !m->conv1r) {
        free(conv0);
        free(conv1);
        return gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", g->path);
    }
    for (int64_t c = 0; c < c0; c++)
        for (int ab = 0; ab < 9; ab++)
            m->conv0[ab * c0 + c] = conv0[c * 9 + ab];
    free(conv0);
    for (int64_t o = 0; o < c1; o++)
        for (int64_t c = 0; c < c0; c++)
            for (int ab = 0; ab < 9; ab++)
                m->conv1r[(o * 9 + ab) * c0 + c] = conv1[(o * c0 + c) * 9 + ab];
    free(conv1);
    m->conv1m = (gm_matrix){ .type = GM_TYPE_F32, .rows = c1, .cols = 9 * c0,
                             .row_bytes = (size_t)(9 * c0) * sizeof(float), .data = m->conv1r,
                             .name = "a.conv1d.1.weight" };
    const int64_t in_ne[2] = { AU_F2 * c1, H }, mm_ne[2] = { m->out_dim, m->proj_dim };
    if ((rc = gm_tensor_matrix(g, "a.input_projection.weight", 2, in_ne, &m->in_proj, err)) ||
        (rc = gm_clipped_linear_load(g, "a.pre_encode.out", m->out_dim, H, &m->out_proj, err)) ||
        (rc = gm_tensor_matrix(g, "mm.a.input_projection.weight", 2, mm_ne, &m->mm_proj, err)))
        return rc;
    const int64_t one_out[1] = { m->out_dim };
    if (!(m->out_bias = gm_tensor_floats(g, "a.pre_encode.out.bias", 1, one_out, err)))
        return err ? err->code : GM_ERR_FORMAT;
    if (gm_gguf_find_tensor(g, "mm.a.soft_emb_norm.weight") &&
        !(m->soft_norm = gm_tensor_floats(g, "mm.a.soft_emb_norm.weight", 1, one_out, err)))
        return err ? err->code : GM_ERR_FORMAT;

    if (!(m->layers = calloc(m->n_layer ? m->n_layer : 1, sizeof *m->layers)))
        return gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", g->path);
    const float q_scale = (float)(pow((double)hd, -0.5) / log(2.0));
    const int64_t dwne[2] = { AU_KERNEL, H };
    for (uint32_t il = 0; il < m->n_layer; il++) {
        struct au_layer *L = &m->layers[il];
        char name[256];
#define AU_VEC(field, sfx, ne)                                                              \
        snprintf(name, sizeof name, "a.blk.%u." sfx, il);                                    \
        if (!(L->field = gm_tensor_floats(g, name, 1, ne, err)))                                    \
            return err ? err->code : GM_ERR_FORMAT;
        AU_VEC(ffn_norm, "ffn_norm.weight", hne)
        AU_VEC(ffn_post_norm, "ffn_post_norm.weight", hne)
        AU_VEC(attn_pre_norm, "attn_pre_norm.weight", hne)
        AU_VEC(attn_post_norm, "attn_post_norm.weight", hne)
        /* Crosswise on purpose: the converter stores lconv1d.pre_layer_norm as
         * conv_norm and lconv1d.conv_norm as norm_conv (clip.cpp loads them so too). */
        AU_VEC(conv_pre_norm, "conv_norm.weight", hne)
        AU_VEC(conv_post_norm, "norm_conv.weight", hne)
        AU_VEC(ffn_norm_1, "ffn_norm_1.weight", hne)
        AU_VEC(ffn_post_norm_1, "ffn_post_norm_1.weight", hne)
        AU_VEC(out_norm, "ln2.weight", hne)
        AU_VEC(qs, "per_dim_scale.weight", dne)
#undef AU_VEC
        for (int64_t d = 0; d < hd; d++)
            L->qs[d] *= q_scale;
        snprintf(name, sizeof name, "a.blk.%u.conv_dw.weight", il);
        if (!(L->dw = gm_tensor_floats(g, name, 2, dwne, err)))
            return err ? err->code : GM_ERR_FORMAT;
#define AU_LIN(field, sfx, rows, cols)                                                      \
        snprintf(name, sizeof name, "a.blk.%u." sfx, il);                                    \
        if ((rc = gm_clipped_linear_load(g, name, rows, cols, &L->field, err)))                      \
            return rc;
        AU_LIN(up, "ffn_up", F, H)
        AU_LIN(down, "ffn_down", H, F)
        AU_LIN(q, "attn_q", H, H)
        AU_LIN(k, "attn_k", H, H)
        AU_LIN(v, "attn_v", H, H)
        AU_LIN(o, "attn_out", H, H)
        AU_LIN(pw1, "conv_pw1", 2 * H, H)
        AU_LIN(pw2, "conv_pw2", H, H)
        AU_LIN(up_1, "ffn_up_1", F, H)
        AU_LIN(down_1, "ffn_down_1", H, F)
#undef AU_LIN
        gm_matrix relk;
        snprintf(name, sizeof name, "a.blk.%u.attn_k_rel.weight", il);
        const int64_t relk_ne[2] = { H, H };
        if ((rc = gm_tensor_matrix(g, name, 2, relk_ne, &relk, err)) ||
            (rc = au_rel_table(m, L, &relk, err)))
            return rc;
    }
    return GM_OK;
}

gm_audio_model *gm_audio_model_load(const char *mmproj_path, gm_error *err)
{
    gm_audio_model *m = calloc(1, sizeof *m);
    if (!m) {
        gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", mmproj_path);
        return NULL;
    }
    if (!(m->g = gm_gguf_open(mmproj_path, err)) || au_load(m, err) != GM_OK) {
        gm_audio_model_free(m);
        return NULL;
    }
    return m;
}

uint32_t gm_audio_model_projection_dim(const gm_audio_model *m) { return m->proj_dim; }
uint32_t gm_audio_model_hidden(const gm_audio_model *m) { return m->n_embd; }

uint32_t gm_audio_n_soft_tokens(uint32_t n_frames)
{
    uint32_t t1 = n_frames / 2 + (n_frames & 1);
    return t1 / 2 + (t1 & 1);
}

/* ---- forward ---------------------------------------------------------------------- */


typedef struct au_fwd {
    const gm_audio_model *m;
    const struct au_layer *L;
    const float *feat;     /* T × 128 */
    int64_t T, T1, n;      /* frames, rows after conv 0, tokens */
    float *x0;             /* conv 0 output [T1][64][c0] */
    float *col;            /* im2col rows of a chunk: [rows][9·c0] */
    int64_t col_t0;        /* first output time row of the chunk */
    float *x1;             /* conv 1 output [n][32][c1] */
    float *h, *a, *q, *k, *v, *o, *big, *tmp;
} au_fwd;


/* Conv 0 (1 → c0 channels) + channel LayerNorm + ReLU, output rows [r0, r1). */
static void au_rows_conv0(void *arg, int64_t r0, int64_t r1)
{
    au_fwd *f = arg;
    const gm_audio_model *m = f->m;
    const int64_t c0 = m->c0, T = f->T;
    for (int64_t t = r0; t < r1; t++)
        for (int64_t fo = 0; fo < AU_F1; fo++) {
            float in[9];
            for (int a = 0; a < 3; a++)
                for (int b = 0; b < 3; b++) {
                    int64_t ti = 2 * t - 1 + a, fi = 2 * fo - 1 + b;
                    in[a * 3 + b] = (ti >= 0 && ti < T && fi >= 0 && fi < AU_MEL)
                                        ? f->feat[ti * AU_MEL + fi] : 0.0f;
                }
            /* per channel: taps summed in the order 0..8, as a dot product would */
            float *y = f->x0 + (t * AU_F1 + fo) * c0;
            for (int64_t c = 0; c < c0; c++)
                y[c] = 0.0f;
            for (int j = 0; j < 9; j++) {
                const float *w = m->conv0 + j * c0, v = in[j];
                for (int64_t c = 0; c < c0; c++)
                    y[c] += w[c] * v;
            }
            gm_layernorm(y, y, m->norm0, NULL, c0, AU_EPS);
            for (int64_t c = 0; c < c0; c++)
                y[c] = y[c] > 0 ? y[c] : 0;
        }
}

/* im2col for conv 1: row (t − col_t0)·32 + fo holds x0[2t−1+a][2fo−1+b][c] at
 * (a·3 + b)·c0 + c (zero outside). Rows r are indices within the chunk. */
static void au_rows_im2col(void *arg, int64_t r0, int64_t r1)
{
    au_fwd *f = arg;
    const int64_t c0 = f->m->c0;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t t = f->col_t0 + r / AU_F2, fo = r % AU_F2;
        float *dst = f->col + r * 9 * c0;
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) {
                int64_t ti = 2 * t - 1 + a, fi = 2 * fo - 1 + b;
                float *d = dst + (a * 3 + b) * c0;
                if (ti >= 0 && ti < f->T1 && fi >= 0 && fi < AU_F1)
                    memcpy(d, f->x0 + (ti * AU_F1 + fi) * c0, (size_t)c0 * sizeof *d);
                else
                    memset(d, 0, (size_t)c0 * sizeof *d);
            }
    }
}

/* Channel LayerNorm + ReLU over conv 1 outputs (rows of c1). */
static void au_rows_norm1(void *arg, int64_t r0, int64_t r1)
{
    au_fwd *f = arg;
    const int64_t c1 = f->m->c1;
    for (int64_t r = r0; r < r1; r++) {
        float *y = f->x1 + r * c1;
        gm_layernorm(y, y, f->m->norm1, NULL, c1, AU_EPS);
        for (int64_t c = 0; c < c1; c++)
            y[c] = y[c] > 0 ? y[c] : 0;
    }
}

/* Row steps. Each clipped linear's clamps are fused into the elementwise step that
 * produces its input or consumes its output, and consecutive row-local steps run in one
 * pass (au_run) on rows still in cache: between two matmuls there is one pass over the
 * activations, two where a step reads neighbouring rows (attention, depthwise conv). */
static inline void au_clamp_in(const au_linear *l, float *x, int64_t n)
{
    if (l && l->clamp_in)
        gm_clampv(x, n, l->in_min, l->in_max);
}

static inline void au_clamp_out(const au_linear *l, float *x, int64_t n)
{
    if (l && l->clamp_out)
        gm_clampv(x, n, l->out_min, l->out_max);
}

typedef struct au_step au_step;
typedef void (*au_step_fn)(const au_fwd *f, const au_step *s, int64_t i);
struct au_step {
    au_step_fn fn;
    const float *w;             /* norm weight */
    const au_linear *lin, *lin2;/* whose clamps the step applies */
    float scale;
};

#define AU_MAX_STEPS 4
typedef struct au_pass {
    const au_fwd *f;
    au_step s[AU_MAX_STEPS];
    int n;
} au_pass;

static void au_rows_pass(void *arg, int64_t r0, int64_t r1)
{
    const au_pass *p = arg;
    for (int64_t i = r0; i < r1; i++)
        for (int k = 0; k < p->n; k++)
            p->s[k].fn(p->f, &p->s[k], i);
}

/* Runs the steps (fn NULL = skipped) on every row, each row through all of them. */
static void au_run(gm_pool *pool, const au_fwd *f, au_step s0, au_step s1, au_step s2, au_step s3)
{
    au_pass p = { .f = f };
    const au_step in[AU_MAX_STEPS] = { s0, s1, s2, s3 };
    for (int k = 0; k < AU_MAX_STEPS; k++)
        if (in[k].fn)
            p.s[p.n++] = in[k];
    gm_pool_run_rows(pool, f->n, au_rows_pass, &p);
}

#define AU_NONE ((au_step){ 0 })

/* a = RMSNorm(clamp_G(h); w), then lin's input clamp when a feeds only that linear */
static void au_row_pre_norm(const au_fwd *f, const au_step *s, int64_t i)
{
    const int64_t H = f->m->n_embd;
    float *ai = f->a + i * H;
    const float *hi = f->h + i * H;
    for (int64_t j = 0; j < H; j++)
        ai[j] = gm_clampf(hi[j], -AU_GCLIP, AU_GCLIP);
    gm_rmsnorm(ai, ai, s->w, H, AU_EPS);
    au_clamp_in(s->lin, ai, H);
}

/* q, k and v read the same normed row a, each through its own input clamp: the clamped
 * copies go to tmp, tmp + n·H, tmp + 2n·H (unused where a linear has no clamp) */
static void au_row_qkv_in(const au_fwd *f, const au_step *s, int64_t i)
{
    const struct au_layer *L = f->L;
    const au_linear *lin[3] = { &L->q, &L->k, &L->v };
    const int64_t H = f->m->n_embd;
    const float *ai = f->a + i * H;
    for (int j = 0; j < 3; j++) {
        if (!lin[j]->clamp_in)
            continue;
        float *d = f->tmp + (j * f->n + i) * H;
        for (int64_t c = 0; c < H; c++)
            d[c] = gm_clampf(ai[c], lin[j]->in_min, lin[j]->in_max);
    }
    (void)s;
}

/* big = clamp_in_down(silu(clamp_out_up(big))) (rows of n_ff) */
static void au_row_silu(const au_fwd *f, const au_step *s, int64_t i)
{
    const int64_t F = f->m->n_ff;
    float *y = f->big + i * F;
    au_clamp_out(s->lin, y, F);
    gm_silu(y, F);
    au_clamp_in(s->lin2, y, F);
}

/* h += scale · RMSNorm(clamp_G(clamp_out(a)); w)  (FFN: scale 0.5; attention: 1) */
static void au_row_post_add(const au_fwd *f, const au_step *s, int64_t i)
{
    const int64_t H = f->m->n_embd;
    float *ai = f->a + i * H;
    au_clamp_out(s->lin, ai, H);
    gm_clampv(ai, H, -AU_GCLIP, AU_GCLIP);
    gm_rmsnorm(ai, ai, s->w, H, AU_EPS);
    gm_vec_axpy(f->h + i * H, s->scale, ai, H);
}

/* q = clamp_out(q)·(hd^-½/ln2)·softplus(pds) per dim; k = clamp_out(k)·ln(1+e)/ln2;
 * v = clamp_out(v) */
static void au_row_qkv_out(const au_fwd *f, const au_step *s, int64_t i)
{
    const gm_audio_model *m = f->m;
    const struct au_layer *L = f->L;
    const int64_t H = m->n_embd, hd = m->head_dim;
    const float ks = (float)(log1p(exp(1.0)) / log(2.0));
    float *q = f->q + i * H, *k = f->k + i * H;
    au_clamp_out(&L->q, q, H);
    au_clamp_out(&L->k, k, H);
    au_clamp_out(&L->v, f->v + i * H, H);
    for (uint32_t hh = 0; hh < m->n_head; hh++)
        gm_vec_mul(q + hh * hd, L->qs, hd);
    gm_vec_scale(k, ks, H);
    (void)s;
}

/* Local attention of query row t: keys t−11..t (≥ 0), logit q·k_s + q·R(t−s), softcap 50;
 * then attn_out's input clamp. */
static void au_row_attn(const au_fwd *f, const au_step *s, int64_t t)
{
    const gm_audio_model *m = f->m;
    const int64_t H = m->n_embd, hd = m->head_dim;
    const float *rel = f->L->rel;
    const int64_t nk = t + 1 < AU_WINDOW ? t + 1 : AU_WINDOW;
    float *ot = f->o + t * H;
    memset(ot, 0, (size_t)H * sizeof *ot);
    for (uint32_t hh = 0; hh < m->n_head; hh++) {
        const int64_t off = hh * hd;
        const float *qt = f->q + t * H + off;
        float sc[AU_WINDOW];
        for (int64_t d = 0; d < nk; d++)
            sc[d] = gm_vec_dot_f32(qt, f->k + (t - d) * H + off, hd) +
                    gm_vec_dot_f32(qt, rel + d * H + off, hd);
        gm_softcap(sc, nk, AU_CAP);
        gm_softmax(sc, nk);
        for (int64_t d = 0; d < nk; d++)
            gm_vec_axpy(ot + off, sc[d], f->v + (t - d) * H + off, hd);
    }
    au_clamp_in(&f->L->o, ot, H);
    (void)s;
}

/* a = RMSNorm(h; conv_pre_norm) — no clamp before this one in HF — then linear_start's
 * input clamp */
static void au_row_conv_pre(const au_fwd *f, const au_step *s, int64_t i)
{
    const int64_t H = f->m->n_embd;
    float *ai = f->a + i * H;
    gm_rmsnorm(ai, f->h + i * H, f->L->conv_pre_norm, H, AU_EPS);
    au_clamp_in(&f->L->pw1, ai, H);
    (void)s;
}

/* GLU of linear_start's clamped output: row i of o = first half · sigmoid(second half) */
static void au_row_glu(const au_fwd *f, const au_step *s, int64_t i)
{
    const int64_t H = f->m->n_embd;
    float *y = f->big + i * 2 * H;
    float *g = f->o + i * H;
    au_clamp_out(&f->L->pw1, y, 2 * H);
    for (int64_t c = 0; c < H; c++)
        g[c] = y[c] / (1.0f + expf(-y[H + c]));
    (void)s;
}

/* Causal depthwise conv (k = 5, left pad 4) of o into a, clamp, RMSNorm(norm_conv), SiLU,
 * then linear_end's input clamp in place (a is not read again). */
static void au_row_dwconv(const au_fwd *f, const au_step *s, int64_t t)
{
    const struct au_layer *L = f->L;
    const int64_t H = f->m->n_embd;
    float *z = f->a + t * H;
    for (int64_t c = 0; c < H; c++) {
        const float *w = L->dw + c * AU_KERNEL;
        float acc = 0;
        for (int j = 0; j < AU_KERNEL; j++) {
            int64_t ti = t - (AU_KERNEL - 1) + j;
            if (ti >= 0)
                acc += w[j] * f->o[ti * H + c];
        }
        z[c] = gm_clampf(acc, -AU_GCLIP, AU_GCLIP);
    }
    gm_rmsnorm(z, z, L->conv_post_norm, H, AU_EPS);
    gm_silu(z, H);
    au_clamp_in(&L->pw2, z, H);
    (void)s;
}

/* h += clamp_out(o)  (linear_end) */
static void au_row_add_pw2(const au_fwd *f, const au_step *s, int64_t i)
{
    const int64_t H = f->m->n_embd;
    float *oi = f->o + i * H;
    au_clamp_out(&f->L->pw2, oi, H);
    gm_vec_add(f->h + i * H, oi, H);
    (void)s;
}

/* h = RMSNorm(clamp_G(h); norm_out) */
static void au_row_out_norm(const au_fwd *f, const au_step *s, int64_t i)
{
    const int64_t H = f->m->n_embd;
    float *hi = f->h + i * H;
    gm_clampv(hi, H, -AU_GCLIP, AU_GCLIP);
    gm_rmsnorm(hi, hi, s->w, H, AU_EPS);
}

/* output_proj's input clamp (if the file has bounds) into tmp */
static void au_row_tower_in(const au_fwd *f, const au_step *s, int64_t i)
{
    const int64_t H = f->m->n_embd;
    const float *hi = f->h + i * H;
    float *d = f->tmp + i * H;
    for (int64_t c = 0; c < H; c++)
        d[c] = gm_clampf(hi[c], s->lin->in_min, s->lin->in_max);
}

/* output_proj row: clamp_out (if the file has bounds), + bias, then embed_audio's RMSNorm
 * (weightless unless the file has soft_emb_norm); tower_out is kept before the norm */
static void au_row_tower_bias(const au_fwd *f, const au_step *s, int64_t i)
{
    const gm_audio_model *m = f->m;
    const int64_t O = m->out_dim;
    float *y = f->big + i * O;
    au_clamp_out(&m->out_proj, y, O);
    gm_vec_add(y, m->out_bias, O);
    (void)s;
}

static void au_row_soft_norm(const au_fwd *f, const au_step *s, int64_t i)
{
    const gm_audio_model *m = f->m;
    const int64_t O = m->out_dim;
    gm_rmsnorm(f->big + i * O, f->big + i * O, m->soft_norm, O, AU_EPS);
    (void)s;
}

/* y = W·x over the n rows */
static void au_mm(gm_pool *pool, const au_fwd *f, const gm_matrix *w, const float *x, float *y)
{
    gm_matmul(pool, w, x, f->n, w->cols, y, w->rows);
}

/* Floats of im2col rows per chunk of conv 1 (bounded scratch, ~16 MiB). */
#define AU_COL_FLOATS ((int64_t)1 << 22)

int gm_audio_encode_checkpoints(const gm_audio_model *m, gm_pool *pool, const float *features,
                                uint32_t n_frames, float *out, const gm_audio_checkpoints *ck,
                                gm_error *err)
{
    if (!m || !features || !out)
        return gm_set_error(err, GM_ERR_INVALID, "audio encode: NULL argument");
    if (n_frames == 0)
        return gm_set_error(err, GM_ERR_INVALID, "audio encode: no feature frames (clip too short)");
    if (n_frames > AU_MAX_FRAMES)
        return gm_set_error(err, GM_ERR_INVALID, "audio encode: %u frames is too many (max %u)",
                            n_frames, AU_MAX_FRAMES);
    const int64_t T = n_frames, T1 = (T + 1) / 2, n = gm_audio_n_soft_tokens(n_frames);
    const int64_t H = m->n_embd, F = m->n_ff, c0 = m->c0, c1 = m->c1, O = m->out_dim;
    const int64_t K1 = 9 * c0;
    int64_t rows_chunk = AU_COL_FLOATS / (K1 * AU_F2);
    if (rows_chunk < 1)
        rows_chunk = 1;
    if (rows_chunk > n)
        rows_chunk = n;
    int64_t wide = F > 2 * H ? F : 2 * H;
    if (O > wide)
        wide = O;
    /* tmp holds the clamped inputs of q, k and v side by side (3 × n × H) */
    const int64_t tmpw = wide > 3 * H ? wide : 3 * H;
    /* Scratch: conv 0 output and im2col rows (freed after subsampling), then the block
     * activations. */
    size_t n_sub = (size_t)(T1 * AU_F1 * c0) + (size_t)(rows_chunk * AU_F2 * K1) +
                   (size_t)(n * AU_F2 * c1);
    size_t n_blk = (size_t)(n * H) * 6 + (size_t)(n * wide) + (size_t)(n * tmpw);
    float *sub = malloc(n_sub * sizeof *sub);
    float *buf = malloc(n_blk * sizeof *buf);
    if (!sub || !buf) {
        free(sub);
        free(buf);
        return gm_set_error(err, GM_ERR_NOMEM, "audio encode: out of memory for %u frames", n_frames);
    }
    au_fwd f = { .m = m, .feat = features, .T = T, .T1 = T1, .n = n, .x0 = sub };
    f.col = sub + T1 * AU_F1 * c0;
    f.x1 = f.col + rows_chunk * AU_F2 * K1;
    f.h = buf;
    f.a = f.h + n * H;
    f.q = f.a + n * H;
    f.k = f.q + n * H;
    f.v = f.k + n * H;
    f.o = f.v + n * H;
    f.big = f.o + n * H;
    f.tmp = f.big + n * wide;

    /* Subsampling: conv 0 directly (9 taps), conv 1 as im2col chunks × gm_matmul. */
    gm_pool_run_rows(pool, T1, au_rows_conv0, &f);
    for (int64_t t0 = 0; t0 < n; t0 += rows_chunk) {
        const int64_t nt = n - t0 < rows_chunk ? n - t0 : rows_chunk;
        f.col_t0 = t0;
        gm_pool_run_rows(pool, nt * AU_F2, au_rows_im2col, &f);
        gm_matmul(pool, &m->conv1m, f.col, nt * AU_F2, K1, f.x1 + t0 * AU_F2 * c1, c1);
    }
    gm_pool_run_rows(pool, n * AU_F2, au_rows_norm1, &f);
    /* Row t of x1 is [f][c] = the f·C1 + c flattening input_proj reads. */
    gm_matmul(pool, &m->in_proj, f.x1, n, AU_F2 * c1, f.h, H);
    free(sub);
    if (ck && ck->subsampled)
        memcpy(ck->subsampled, f.h, (size_t)(n * H) * sizeof *f.h);

    /* Conformer blocks. The first FFN's pre-norm runs with the previous block's last
     * steps (the first block's alone). */
    if (m->n_layer)
        au_run(pool, &f, (au_step){ .fn = au_row_pre_norm, .w = m->layers[0].ffn_norm, .lin = &m->layers[0].up },
               AU_NONE, AU_NONE, AU_NONE);
    for (uint32_t il = 0; il < m->n_layer; il++) {
        const struct au_layer *L = &m->layers[il];
        const struct au_layer *next = il + 1 < m->n_layer ? &m->layers[il + 1] : NULL;
        f.L = L;
        /* FFN half-step 1, then attention's pre-norm and the q/k/v input clamps */
        au_mm(pool, &f, &L->up.w, f.a, f.big);
        au_run(pool, &f, (au_step){ .fn = au_row_silu, .lin = &L->up, .lin2 = &L->down }, AU_NONE, AU_NONE, AU_NONE);
        au_mm(pool, &f, &L->down.w, f.big, f.a);
        au_run(pool, &f, (au_step){ .fn = au_row_post_add, .w = L->ffn_post_norm, .lin = &L->down, .scale = 0.5f },
               (au_step){ .fn = au_row_pre_norm, .w = L->attn_pre_norm }, (au_step){ .fn = au_row_qkv_in }, AU_NONE);
        /* attention */
        au_mm(pool, &f, &L->q.w, L->q.clamp_in ? f.tmp : f.a, f.q);
        au_mm(pool, &f, &L->k.w, L->k.clamp_in ? f.tmp + n * H : f.a, f.k);
        au_mm(pool, &f, &L->v.w, L->v.clamp_in ? f.tmp + 2 * n * H : f.a, f.v);
        au_run(pool, &f, (au_step){ .fn = au_row_qkv_out }, AU_NONE, AU_NONE, AU_NONE);
        au_run(pool, &f, (au_step){ .fn = au_row_attn }, AU_NONE, AU_NONE, AU_NONE);
        au_mm(pool, &f, &L->o.w, f.o, f.a);
        /* light conv module */
        au_run(pool, &f, (au_step){ .fn = au_row_post_add, .w = L->attn_post_norm, .lin = &L->o, .scale = 1.0f },
               (au_step){ .fn = au_row_conv_pre }, AU_NONE, AU_NONE);
        au_mm(pool, &f, &L->pw1.w, f.a, f.big);
        au_run(pool, &f, (au_step){ .fn = au_row_glu }, AU_NONE, AU_NONE, AU_NONE);
        au_run(pool, &f, (au_step){ .fn = au_row_dwconv }, AU_NONE, AU_NONE, AU_NONE);
        au_mm(pool, &f, &L->pw2.w, f.a, f.o);
        /* FFN half-step 2, norm_out, and the next block's first pre-norm */
        au_run(pool, &f, (au_step){ .fn = au_row_add_pw2 },
               (au_step){ .fn = au_row_pre_norm, .w = L->ffn_norm_1, .lin = &L->up_1 }, AU_NONE, AU_NONE);
        au_mm(pool, &f, &L->up_1.w, f.a, f.big);
        au_run(pool, &f, (au_step){ .fn = au_row_silu, .lin = &L->up_1, .lin2 = &L->down_1 }, AU_NONE, AU_NONE,
               AU_NONE);
        au_mm(pool, &f, &L->down_1.w, f.big, f.a);
        au_run(pool, &f, (au_step){ .fn = au_row_post_add, .w = L->ffn_post_norm_1, .lin = &L->down_1, .scale = 0.5f },
               (au_step){ .fn = au_row_out_norm, .w = L->out_norm },
               next ? (au_step){ .fn = au_row_pre_norm, .w = next->ffn_norm, .lin = &next->up } : AU_NONE, AU_NONE);
        if (il == 0 && ck && ck->layer0)
            memcpy(ck->layer0, f.h, (size_t)(n * H) * sizeof *f.h);
    }
    if (ck && ck->encoder_out)
        memcpy(ck->encoder_out, f.h, (size_t)(n * H) * sizeof *f.h);

    /* output_proj (with bias; clamped if the file has bounds, as llama.cpp does for any
     * weight with them), then embed_audio: weightless RMSNorm (× soft_emb_norm if the file
     * has one) and the projection to the text width. */
    if (m->out_proj.clamp_in)
        au_run(pool, &f, (au_step){ .fn = au_row_tower_in, .lin = &m->out_proj }, AU_NONE, AU_NONE, AU_NONE);
    au_mm(pool, &f, &m->out_proj.w, m->out_proj.clamp_in ? f.tmp : f.h, f.big);
    au_run(pool, &f, (au_step){ .fn = au_row_tower_bias }, AU_NONE, AU_NONE, AU_NONE);
    if (ck && ck->tower_out)
        memcpy(ck->tower_out, f.big, (size_t)(n * O) * sizeof *f.big);
    au_run(pool, &f, (au_step){ .fn = au_row_soft_norm }, AU_NONE, AU_NONE, AU_NONE);
    au_mm(pool, &f, &m->mm_proj, f.big, out);
    free(buf);
    return GM_OK;
}

int gm_audio_encode(const gm_audio_model *m, gm_pool *pool, const float *features,
                    uint32_t n_frames, float *soft_tokens_out, gm_error *err)
{
    return gm_audio_encode_checkpoints(m, pool, features, n_frames, soft_tokens_out, NULL, err);
}
