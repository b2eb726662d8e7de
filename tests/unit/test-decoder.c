/* test-decoder.c — the Gemma 4 text decoder on synthetic models (tools/synth-model.h).
 *
 * 1. A naive double-precision reference forward pass, written straight from
 *    gemma4-model.md §2-3 against the raw GGUF tensors (no cache, explicit masks),
 *    checks the engine's logits at every position.
 * 2. Cache behaviour: prefill + decode == one-shot, chunking invariance, prompts longer
 *    than the window (ring wrap), truncate, n_ctx overflow, cancellation (cache intact).
 * 3. Model variants: KV-shared tensors kept or not, k_eq_v with per-layer KV heads,
 *    bidirectional vision blocks vs causal audio, quantized weights.
 * 4. Load errors name the tensor or key.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/cpu.h"
#include "core/gguf.h"
#include "core/pool.h"
#include "decoder/context.h"
#include "decoder/masks.h"
#include "decoder/model.h"
#define GM_TEST_RERUN_ISAS
#include "test-util.h"
#include "tools/synth-model.h"

static char g_dir[256];

static const char *tmp_path(const char *name)
{
    static char buf[8][512];
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, sizeof buf[0], "%s/%s", g_dir, name);
    return b;
}

static char *g_models[16];
static int g_n_models;

static const char *write_model(const char *name, const gm_synth_config *cfg)
{
    char *p = strdup(tmp_path(name)); /* kept for the whole run */
    g_models[g_n_models++] = p;
    gm_error err = { 0 };
    if (gm_synth_write(cfg, p, &err) != GM_OK) {
        fprintf(stderr, "gm_synth_write(%s): %s\n", name, err.msg);
        exit(2);
    }
    return p;
}

static gm_model *load(const char *path)
{
    gm_error err = { 0 };
    gm_model *m = gm_model_load(path, &err);
    if (!m) {
        fprintf(stderr, "load %s: %s\n", path, err.msg);
        exit(2);
    }
    return m;
}

static gm_context *new_ctx(const gm_model *m, int n_ctx, int n_batch, gm_pool *pool)
{
    gm_context_params p = { .n_ctx = n_ctx, .n_batch = n_batch, .pool = pool };
    gm_error err = { 0 };
    gm_context *c = gm_context_new(m, &p, &err);
    if (!c) {
        fprintf(stderr, "gm_context_new: %s\n", err.msg);
        exit(2);
    }
    return c;
}

/* max |a - b| / max(1, max |b|) */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double d = 0, mx = 1;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - (double)b[i]));
        mx = fmax(mx, fabs((double)b[i]));
    }
    return d / mx;
}

static double rel_diff_d(const float *a, const double *b, size_t n)
{
    double d = 0, mx = 1;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        mx = fmax(mx, fabs(b[i]));
    }
    return d / mx;
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}

static void make_ids(int32_t *ids, int n, uint32_t seed, int n_vocab)
{
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (int i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ids[i] = (int32_t)(s % (uint64_t)n_vocab);
    }
}

static float *make_embd(int rows, int H, uint32_t seed)
{
    float *e = malloc((size_t)rows * H * sizeof(float));
    uint64_t s = seed * 0x2545f4914f6cdd1dull + 7;
    for (int i = 0; i < rows * H; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        e[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    return e;
}

static int eval_text(gm_context *c, const int32_t *ids, int n, gm_logits_mode mode, float *logits)
{
    gm_span s = { GM_SPAN_TEXT, n, ids, NULL };
    gm_error err = { 0 };
    int rc = gm_context_eval(c, &s, 1, mode, logits, &err);
    if (rc && rc != GM_ERR_RANGE && rc != GM_ERR_CANCELLED)
        fprintf(stderr, "eval: %s\n", err.msg);
    return rc;
}

/* ================================================================== reference */

typedef struct ref_model {
    gm_gguf *g;
    int H, L, V, P, W, n_head, n_shared;
    int hd_swa, hd_full;
    int *n_kv, *ff, *swa;
    double eps, softcap;
    bool vision;
    int media[3];  /* <|image|> <|video|> <|audio|> ids, -1 absent: embedded as id 0 (§6.4) */
} ref_model;

static const float *tens(const ref_model *r, const char *fmt, int l)
{
    char name[96];
    snprintf(name, sizeof name, fmt, l);
    const gm_gguf_tensor *t = gm_gguf_find_tensor(r->g, name);
    if (!t)
        return NULL;
    if (t->type != GM_TYPE_F32) {
        fprintf(stderr, "reference needs F32 tensors (%s)\n", name);
        exit(2);
    }
    return t->data;
}

static void ref_open(ref_model *r, const char *path)
{
    gm_error err = { 0 };
    memset(r, 0, sizeof *r);
    r->g = gm_gguf_open(path, &err);
    if (!r->g) {
        fprintf(stderr, "%s\n", err.msg);
        exit(2);
    }
    uint32_t u;
    float f = 0;
    gm_gguf_get_u32(r->g, "gemma4.embedding_length", &u, &err), r->H = (int)u;
    gm_gguf_get_u32(r->g, "gemma4.block_count", &u, &err), r->L = (int)u;
    gm_gguf_get_u32(r->g, "gemma4.embedding_length_per_layer_input", &u, &err), r->P = (int)u;
    gm_gguf_get_u32(r->g, "gemma4.attention.sliding_window", &u, &err), r->W = (int)u;
    gm_gguf_get_u32(r->g, "gemma4.attention.key_length_swa", &u, &err), r->hd_swa = (int)u;
    gm_gguf_get_u32(r->g, "gemma4.attention.key_length", &u, &err), r->hd_full = (int)u;
    u = 0;
    gm_gguf_get_u32_opt(r->g, "gemma4.attention.shared_kv_layers", &u, &err), r->n_shared = (int)u;
    gm_gguf_get_f32(r->g, "gemma4.attention.layer_norm_rms_epsilon", &f, &err), r->eps = f;
    f = 0;
    gm_gguf_get_f32_opt(r->g, "gemma4.final_logit_softcapping", &f, &err), r->softcap = f;
    uint32_t *tmp = calloc((size_t)r->L, sizeof *tmp);
    bool *b = calloc((size_t)r->L, sizeof *b);
    r->n_kv = calloc((size_t)r->L, sizeof(int));
    r->ff = calloc((size_t)r->L, sizeof(int));
    r->swa = calloc((size_t)r->L, sizeof(int));
    gm_gguf_get_u32_per_layer(r->g, "gemma4.attention.head_count", (uint32_t)r->L, tmp, &err);
    r->n_head = (int)tmp[0];
    gm_gguf_get_u32_per_layer(r->g, "gemma4.attention.head_count_kv", (uint32_t)r->L, tmp, &err);
    for (int l = 0; l < r->L; l++)
        r->n_kv[l] = (int)tmp[l];
    gm_gguf_get_u32_per_layer(r->g, "gemma4.feed_forward_length", (uint32_t)r->L, tmp, &err);
    for (int l = 0; l < r->L; l++)
        r->ff[l] = (int)tmp[l];
    gm_gguf_get_bool_array(r->g, "gemma4.attention.sliding_window_pattern", (uint32_t)r->L, b, &err);
    for (int l = 0; l < r->L; l++)
        r->swa[l] = b[l];
    const gm_gguf_kv *kv = gm_gguf_find_kv(r->g, "gemma4.use_bidirectional_attention");
    r->vision = kv ? (kv->str.len == 6 && !memcmp(kv->str.ptr, "vision", 6)) : r->P == 0;
    r->V = (int)gm_gguf_find_tensor(r->g, "token_embd.weight")->ne[1];
    static const char *const media_names[3] = { "<|image|>", "<|video|>", "<|audio|>" };
    const gm_gguf_kv *toks = gm_gguf_find_kv(r->g, "tokenizer.ggml.tokens");
    for (int i = 0; i < 3; i++) {
        r->media[i] = -1;
        for (uint64_t t = 0; toks && t < toks->arr_n && r->media[i] < 0; t++) {
            gm_gguf_str st = gm_gguf_arr_str(r->g, toks, t);
            if (st.len == strlen(media_names[i]) && !memcmp(st.ptr, media_names[i], st.len))
                r->media[i] = (int)t;
        }
    }
    free(tmp);
    free(b);
}

static void ref_close(ref_model *r)
{
    gm_gguf_close(r->g);
    free(r->n_kv);
    free(r->ff);
    free(r->swa);
}

/* y[o] = sum_i W[o][i] x[i], W stored ggml {in, out} (row o contiguous) */
static void ref_lin(const float *W, const double *x, int in, int out, double *y)
{
    for (int o = 0; o < out; o++) {
        double s = 0;
        for (int i = 0; i < in; i++)
            s += (double)W[(size_t)o * in + i] * x[i];
        y[o] = s;
    }
}

static void ref_rms(double *v, int n, const float *w, double eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += v[i] * v[i];
    double r = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        v[i] = v[i] * r * (w ? w[i] : 1.0);
}

static double ref_gelu(double z)
{
    return 0.5 * z * (1.0 + tanh(sqrt(2.0 / M_PI) * (z + 0.044715 * z * z * z)));
}

/* Rotate-half RoPE with HF's inverse frequencies (proportional for full layers). */
static void ref_rope(const ref_model *r, double *v, int d, bool swa, int pos)
{
    const float *rf = tens(r, "rope_freqs.weight", 0);
    for (int i = 0; i < d / 2; i++) {
        double theta = swa ? 10000.0 : 1000000.0;
        double f = pow(theta, -2.0 * i / d);
        if (!swa && rf)
            f = rf[i] >= 1e20f ? 0.0 : f / rf[i];
        double a = v[i], b = v[i + d / 2], ang = pos * f;
        v[i] = a * cos(ang) - b * sin(ang);
        v[i + d / 2] = b * cos(ang) + a * sin(ang);
    }
}

/* Full forward over n positions. type[i]: span type; ids[i] for text; embd rows for media.
 * Returns logits [n][V] (doubles). */
static double *ref_forward(const ref_model *r, int n, const uint8_t *type, const int32_t *ids,
                           const float *const *embd)
{
    const int H = r->H, L = r->L, P = r->P, V = r->V;
    double *x = calloc((size_t)n * H, sizeof(double));
    double *ple = calloc((size_t)n * (L * P + 1), sizeof(double));
    double **Kc = calloc((size_t)L, sizeof *Kc), **Vc = calloc((size_t)L, sizeof *Vc);
    /* block id per position: maximal runs of image/video (vision models only) */
    int *blk = calloc((size_t)n, sizeof(int));
    for (int i = 0, id = 0; i < n; i++) {
        bool b = r->vision && (type[i] == GM_SPAN_IMAGE || type[i] == GM_SPAN_VIDEO);
        if (b && (i == 0 || blk[i - 1] == 0))
            id++;
        blk[i] = b ? id : 0;
    }
    const double escale = gm_bf16_to_fp32(gm_fp32_to_bf16(sqrtf((float)H)));
    const float *E = tens(r, "token_embd.weight", 0);
    /* the ids embedded (text; media placeholder ids become the pad id 0, §6.4) */
    int *eid = calloc((size_t)n, sizeof(int));
    for (int i = 0; i < n; i++) {
        eid[i] = type[i] == GM_SPAN_TEXT ? ids[i] : 0;
        for (int k = 0; k < 3; k++)
            if (type[i] == GM_SPAN_TEXT && ids[i] == r->media[k])
                eid[i] = 0;
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < H; j++)
            x[(size_t)i * H + j] = type[i] == GM_SPAN_TEXT ? E[(size_t)eid[i] * H + j] * escale
                                                           : embd[i][j];
    if (P) {
        const float *T = tens(r, "per_layer_token_embd.weight", 0);
        const float *Wp = tens(r, "per_layer_model_proj.weight", 0);
        const float *nw = tens(r, "per_layer_proj_norm.weight", 0);
        for (int i = 0; i < n; i++) {
            double *p = ple + (size_t)i * (L * P + 1);
            ref_lin(Wp, x + (size_t)i * H, H, L * P, p);
            int id = eid[i];
            for (int l = 0; l < L; l++) {
                for (int k = 0; k < P; k++)
                    p[l * P + k] /= sqrt((double)H);
                ref_rms(p + l * P, P, nw, r->eps);
                for (int k = 0; k < P; k++)
                    p[l * P + k] = (p[l * P + k] + T[(size_t)id * L * P + l * P + k] * sqrt((double)P)) /
                                   sqrt(2.0);
            }
        }
    }
    int maxd = r->hd_full > r->hd_swa ? r->hd_full : r->hd_swa;
    int maxff = 0;
    for (int l = 0; l < L; l++)
        if (r->ff[l] > maxff)
            maxff = r->ff[l];
    double *a = malloc(sizeof(double) * H), *q = malloc(sizeof(double) * r->n_head * maxd);
    double *att = malloc(sizeof(double) * r->n_head * maxd), *o = malloc(sizeof(double) * H);
    double *g = malloc(sizeof(double) * maxff), *u = malloc(sizeof(double) * maxff);
    double *sc = malloc(sizeof(double) * n), *pg = malloc(sizeof(double) * (P + 1));
    double *Q = malloc(sizeof(double) * n * r->n_head * maxd);
    const int first_shared = L - r->n_shared;
    for (int l = 0; l < L; l++) {
        const bool swa = r->swa[l];
        const int d = swa ? r->hd_swa : r->hd_full, nh = r->n_head;
        int src = l;
        if (l >= first_shared)
            for (src = first_shared - 1; src >= 0 && r->swa[src] != r->swa[l]; src--)
                ;
        const int nkv = r->n_kv[src];
        if (src == l) {
            Kc[l] = malloc(sizeof(double) * n * nkv * d);
            Vc[l] = malloc(sizeof(double) * n * nkv * d);
        }
        /* projections for all positions first (the cache of layer src) */
        for (int i = 0; i < n; i++) {
            memcpy(a, x + (size_t)i * H, sizeof(double) * H);
            ref_rms(a, H, tens(r, "blk.%d.attn_norm.weight", l), r->eps);
            double *qi = Q + (size_t)i * nh * d;
            ref_lin(tens(r, "blk.%d.attn_q.weight", l), a, H, nh * d, qi);
            for (int h = 0; h < nh; h++) {
                ref_rms(qi + h * d, d, tens(r, "blk.%d.attn_q_norm.weight", l), r->eps);
                ref_rope(r, qi + h * d, d, swa, i);
            }
            if (src == l) {
                double *ki = Kc[l] + (size_t)i * nkv * d, *vi = Vc[l] + (size_t)i * nkv * d;
                ref_lin(tens(r, "blk.%d.attn_k.weight", l), a, H, nkv * d, ki);
                const float *wv = tens(r, "blk.%d.attn_v.weight", l);
                if (wv)
                    ref_lin(wv, a, H, nkv * d, vi);
                else
                    memcpy(vi, ki, sizeof(double) * nkv * d);
                for (int h = 0; h < nkv; h++) {
                    ref_rms(ki + h * d, d, tens(r, "blk.%d.attn_k_norm.weight", l), r->eps);
                    ref_rope(r, ki + h * d, d, swa, i);
                    ref_rms(vi + h * d, d, NULL, r->eps);
                }
            }
        }
        for (int i = 0; i < n; i++) {
            for (int h = 0; h < nh; h++) {
                int kh = h / (nh / nkv);
                double mx = -INFINITY;
                for (int k = 0; k < n; k++) {
                    bool vis = k <= i;
                    if (swa) {
                        if (blk[i] && blk[i] == blk[k])
                            vis = true;
                        vis = vis && k > i - r->W;
                    }
                    if (!vis) {
                        sc[k] = -INFINITY;
                        continue;
                    }
                    double s = 0;
                    for (int j = 0; j < d; j++)
                        s += Q[((size_t)i * nh + h) * d + j] * Kc[src][((size_t)k * nkv + kh) * d + j];
                    sc[k] = s;
                    mx = fmax(mx, s);
                }
                double sum = 0;
                for (int k = 0; k < n; k++) {
                    sc[k] = sc[k] == -INFINITY ? 0 : exp(sc[k] - mx);
                    sum += sc[k];
                }
                for (int j = 0; j < d; j++) {
                    double acc = 0;
                    for (int k = 0; k < n; k++)
                        acc += sc[k] / sum * Vc[src][((size_t)k * nkv + kh) * d + j];
                    att[h * d + j] = acc;
                }
            }
            double *xi = x + (size_t)i * H;
            ref_lin(tens(r, "blk.%d.attn_output.weight", l), att, nh * d, H, o);
            ref_rms(o, H, tens(r, "blk.%d.post_attention_norm.weight", l), r->eps);
            for (int j = 0; j < H; j++)
                xi[j] += o[j];
            memcpy(a, xi, sizeof(double) * H);
            ref_rms(a, H, tens(r, "blk.%d.ffn_norm.weight", l), r->eps);
            ref_lin(tens(r, "blk.%d.ffn_gate.weight", l), a, H, r->ff[l], g);
            ref_lin(tens(r, "blk.%d.ffn_up.weight", l), a, H, r->ff[l], u);
            for (int j = 0; j < r->ff[l]; j++)
                g[j] = ref_gelu(g[j]) * u[j];
            ref_lin(tens(r, "blk.%d.ffn_down.weight", l), g, r->ff[l], H, o);
            ref_rms(o, H, tens(r, "blk.%d.post_ffw_norm.weight", l), r->eps);
            for (int j = 0; j < H; j++)
                xi[j] += o[j];
            if (P) {
                ref_lin(tens(r, "blk.%d.inp_gate.weight", l), xi, H, P, pg);
                for (int k = 0; k < P; k++)
                    pg[k] = ref_gelu(pg[k]) * ple[(size_t)i * (L * P + 1) + l * P + k];
                ref_lin(tens(r, "blk.%d.proj.weight", l), pg, P, H, o);
                ref_rms(o, H, tens(r, "blk.%d.post_norm.weight", l), r->eps);
                for (int j = 0; j < H; j++)
                    xi[j] += o[j];
            }
            const float *ls = tens(r, "blk.%d.layer_output_scale.weight", l);
            if (ls)
                for (int j = 0; j < H; j++)
                    xi[j] *= ls[0];
        }
    }
    double *logits = malloc(sizeof(double) * (size_t)n * V);
    const float *out = tens(r, "output.weight", 0);
    if (!out)
        out = E;
    for (int i = 0; i < n; i++) {
        memcpy(a, x + (size_t)i * H, sizeof(double) * H);
        ref_rms(a, H, tens(r, "output_norm.weight", 0), r->eps);
        ref_lin(out, a, H, V, logits + (size_t)i * V);
        if (r->softcap > 0)
            for (int k = 0; k < V; k++)
                logits[(size_t)i * V + k] = r->softcap * tanh(logits[(size_t)i * V + k] / r->softcap);
    }
    for (int l = 0; l < L; l++) {
        free(Kc[l]);
        free(Vc[l]);
    }
    free(Kc);
    free(Vc);
    free(blk);
    free(eid);
    free(x);
    free(ple);
    free(a);
    free(q);
    free(att);
    free(o);
    free(g);
    free(u);
    free(sc);
    free(pg);
    free(Q);
    return logits;
}

/* ================================================================== tests */

static void test_masks(void)
{
    /* gemma4-model.md §10: W = 4, positions 5..11 one image block (end 12). */
    const int W = 4, be = 12;
    CHECK(!gm_mask_visible(false, W, 5, be, 11)); /* full: 5 -> 11 masked */
    CHECK(gm_mask_visible(false, W, 11, be, 5));  /* full: 11 -> 5 visible */
    CHECK(gm_mask_visible(true, W, 5, be, 8));    /* sliding: 5 -> 8 visible (same block) */
    CHECK(gm_mask_visible(true, W, 8, be, 5));    /* sliding: 8 -> 5 visible (inside window) */
    CHECK(!gm_mask_visible(true, W, 11, be, 5));  /* sliding: 11 -> 5 outside the window */
    /* plain sliding window: q sees itself and the previous W - 1 */
    CHECK(gm_mask_visible(true, W, 10, -1, 7));
    CHECK(!gm_mask_visible(true, W, 10, -1, 6));
    CHECK(!gm_mask_visible(true, W, 10, -1, 11));
    CHECK(gm_mask_visible(false, W, 10, -1, 0));
    /* a block never reaches past its end, nor before the window */
    CHECK(!gm_mask_visible(true, W, 5, be, 12));
    int32_t k0, k1;
    gm_mask_key_range(true, W, 2, -1, &k0, &k1);
    CHECK(k0 == 0 && k1 == 3);
}

static void test_load_and_hparams(const char *path)
{
    gm_model *m = load(path);
    const gm_hparams *hp = &m->hp;
    CHECK_EQ_INT(hp->n_layer, 6);
    CHECK_EQ_INT(hp->n_vocab, 384);
    CHECK_EQ_INT(hp->n_embd, 64);
    CHECK(hp->embd_scale == 8.0f);
    CHECK(hp->bidir == GM_BIDIR_NONE); /* PLE model without the key: causal */
    /* S S F S S F, last two layers shared: 4 (sliding) reads 3, 5 (full) reads 2 */
    CHECK(hp->layers[0].is_swa && !hp->layers[2].is_swa && !hp->layers[5].is_swa);
    CHECK_EQ_INT(hp->layers[4].kv_source, 3);
    CHECK_EQ_INT(hp->layers[5].kv_source, 2);
    CHECK_EQ_INT(hp->layers[3].kv_source, -1);
    CHECK_EQ_INT(hp->layers[4].n_ff, 256); /* double-wide on shared layers */
    CHECK_EQ_INT(hp->layers[2].head_dim, 32);
    /* proportional RoPE on full layers: 0.25 * 32 / 2 = 4 rotated pairs, rest exactly 0 */
    const float *inv = m->layers[2].rope_inv_freq;
    CHECK(inv[0] == 1.0f && inv[3] > 0.0f && inv[4] == 0.0f && inv[15] == 0.0f);
    CHECK_NEAR(inv[1], pow(1e6, -2.0 / 32), 1e-6 * inv[1]);
    const float *sw = m->layers[0].rope_inv_freq;
    CHECK(sw[7] > 0.0f);
    CHECK_NEAR(sw[7], pow(1e4, -14.0 / 16), 1e-6 * sw[7]);
    char desc[512];
    gm_model_describe(m, desc, sizeof desc);
    CHECK(strstr(desc, "6 layers") != NULL);
    printf("  %s\n", desc);
    gm_model_free(m);
}

/* Engine vs the double-precision reference, every position. */
static void check_vs_reference(const char *path, const char *what, int n_batch, int n, const uint8_t *type,
                               const int32_t *ids, const float *const *embd)
{
    ref_model r;
    ref_open(&r, path);
    double *ref = ref_forward(&r, n, type, ids, embd);
    gm_model *m = load(path);
    gm_context *c = new_ctx(m, 256, n_batch, NULL);
    /* spans from the per-position description (runs of equal type) */
    gm_span spans[64];
    size_t ns = 0;
    int32_t *idcopy = malloc(sizeof(int32_t) * n);
    float *ecopy = malloc(sizeof(float) * n * r.H);
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && type[j] == type[i])
            j++;
        gm_span *s = &spans[ns++];
        s->type = type[i];
        s->n = j - i;
        if (type[i] == GM_SPAN_TEXT) {
            memcpy(idcopy + i, ids + i, sizeof(int32_t) * (j - i));
            s->ids = idcopy + i;
            s->embd = NULL;
        } else {
            for (int k = i; k < j; k++)
                memcpy(ecopy + (size_t)k * r.H, embd[k], sizeof(float) * r.H);
            s->embd = ecopy + (size_t)i * r.H;
            s->ids = NULL;
        }
        i = j;
    }
    float *lg = malloc(sizeof(float) * (size_t)n * r.V);
    gm_error err = { 0 };
    int rc = gm_context_eval(c, spans, ns, GM_LOGITS_ALL, lg, &err);
    CHECKF(rc == GM_OK, "%s: eval: %s", what, err.msg);
    double worst = 0;
    int argmax_ok = 1;
    for (int i = 0; i < n; i++) {
        double d = rel_diff_d(lg + (size_t)i * r.V, ref + (size_t)i * r.V, (size_t)r.V);
        worst = fmax(worst, d);
        int bi = 0;
        for (int k = 1; k < r.V; k++)
            if (ref[(size_t)i * r.V + k] > ref[(size_t)i * r.V + bi])
                bi = k;
        /* allow ties within noise */
        if (argmax(lg + (size_t)i * r.V, r.V) != bi &&
            fabs(ref[(size_t)i * r.V + argmax(lg + (size_t)i * r.V, r.V)] - ref[(size_t)i * r.V + bi]) > 1e-4)
            argmax_ok = 0;
    }
    CHECKF(worst < 1e-4, "%s: logits vs reference: rel diff %g", what, worst);
    CHECKF(argmax_ok, "%s: argmax differs from the reference", what);
    printf("  %-40s vs reference: max rel diff %.2e\n", what, worst);
    free(lg);
    free(idcopy);
    free(ecopy);
    free(ref);
    gm_context_free(c);
    gm_model_free(m);
    ref_close(&r);
}

static void test_reference_text(const char *path, const char *what)
{
    enum { N = 30 };
    int32_t ids[N];
    uint8_t type[N];
    const float *embd[N] = { 0 };
    make_ids(ids, N, 11, 384);
    memset(type, GM_SPAN_TEXT, sizeof type);
    check_vs_reference(path, what, 7, N, type, ids, embd);
}

/* text, image block (7), text, audio (5), text; one vision model and its causal twin */
static void test_reference_media(const char *path, const char *what)
{
    enum { N = 26 };
    int32_t ids[N];
    uint8_t type[N];
    const float *embd[N] = { 0 };
    float *rows = make_embd(N, 64, 5);
    make_ids(ids, N, 12, 384);
    for (int i = 0; i < N; i++) {
        type[i] = i >= 4 && i < 11 ? GM_SPAN_IMAGE : i >= 14 && i < 19 ? GM_SPAN_AUDIO : GM_SPAN_TEXT;
        if (type[i] != GM_SPAN_TEXT)
            embd[i] = rows + (size_t)i * 64;
    }
    check_vs_reference(path, what, 5, N, type, ids, embd);
    free(rows);
}

/* Prefill of k positions, then one token at a time, equals one-shot ALL. */
static void test_cache_consistency(const char *path, const char *what, gm_pool *pool)
{
    enum { N = 40, K = 13 };
    gm_model *m = load(path);
    const int V = (int)m->hp.n_vocab;
    int32_t ids[N];
    make_ids(ids, N, 3, V);
    float *all = malloc(sizeof(float) * N * V), *one = malloc(sizeof(float) * V);
    gm_context *c = new_ctx(m, 64, 512, pool);
    CHECK(eval_text(c, ids, N, GM_LOGITS_ALL, all) == GM_OK);
    CHECK_EQ_INT(gm_context_n_past(c), N);
    gm_context_free(c);

    /* small batch: the sliding ring (window 8 + 5 - 1) wraps several times */
    c = new_ctx(m, 64, 5, pool);
    CHECK(eval_text(c, ids, K, GM_LOGITS_LAST, one) == GM_OK);
    double worst = rel_diff(one, all + (size_t)(K - 1) * V, (size_t)V);
    for (int i = K; i < N; i++) {
        CHECK(eval_text(c, ids + i, 1, GM_LOGITS_LAST, one) == GM_OK);
        worst = fmax(worst, rel_diff(one, all + (size_t)i * V, (size_t)V));
    }
    CHECKF(worst <= 1e-4, "%s: decode vs one-shot rel diff %g", what, worst);
    printf("  %-40s decode vs one-shot: %.2e\n", what, worst);
    CHECK(gm_context_kv_bytes(c) > 0);
    gm_context_free(c);

    /* chunking invariance: n_batch 5 vs 512, all logits */
    float *all5 = malloc(sizeof(float) * N * V);
    c = new_ctx(m, 64, 5, pool);
    CHECK(eval_text(c, ids, N, GM_LOGITS_ALL, all5) == GM_OK);
    double d5 = rel_diff(all5, all, (size_t)N * V);
    CHECKF(d5 <= 1e-4, "%s: n_batch 5 vs 512 rel diff %g", what, d5);
    gm_context_free(c);
    free(all5);
    free(all);
    free(one);
    gm_model_free(m);
}

static void test_shared_kv_tensors(const char *a, const char *b)
{
    enum { N = 20 };
    gm_model *ma = load(a), *mb = load(b);
    const int V = (int)ma->hp.n_vocab;
    int32_t ids[N];
    make_ids(ids, N, 4, V);
    float *la = malloc(sizeof(float) * N * V), *lb = malloc(sizeof(float) * N * V);
    gm_context *ca = new_ctx(ma, 32, 6, NULL), *cb = new_ctx(mb, 32, 6, NULL);
    CHECK(eval_text(ca, ids, N, GM_LOGITS_ALL, la) == GM_OK);
    CHECK(eval_text(cb, ids, N, GM_LOGITS_ALL, lb) == GM_OK);
    CHECKF(memcmp(la, lb, sizeof(float) * N * V) == 0, "shared-layer k/v tensors changed the logits (%g)",
           rel_diff(la, lb, (size_t)N * V));
    gm_context_free(ca);
    gm_context_free(cb);
    gm_model_free(ma);
    gm_model_free(mb);
    free(la);
    free(lb);
}

/* Vision model vs its causal twin (same weights): image block bidirectional on sliding
 * layers only, audio causal, block never split. */
static void test_bidirectional(const char *vision_path, const char *causal_path)
{
    gm_model *mv = load(vision_path), *mc = load(causal_path);
    CHECK(mv->hp.bidir == GM_BIDIR_VISION);
    CHECK(mc->hp.bidir == GM_BIDIR_NONE);
    const int V = (int)mv->hp.n_vocab, H = (int)mv->hp.n_embd;
    enum { NT0 = 4, NI = 7, NT1 = 3, NA = 5, NT2 = 3, N = NT0 + NI + NT1 + NA + NT2 };
    int32_t t0[NT0], t1[NT1], t2[NT2];
    make_ids(t0, NT0, 21, V);
    make_ids(t1, NT1, 22, V);
    make_ids(t2, NT2, 23, V);
    float *img = make_embd(NI, H, 31), *aud = make_embd(NA, H, 32);
    gm_span sp[5] = {
        { GM_SPAN_TEXT, NT0, t0, NULL }, { GM_SPAN_IMAGE, NI, NULL, img }, { GM_SPAN_TEXT, NT1, t1, NULL },
        { GM_SPAN_AUDIO, NA, NULL, aud }, { GM_SPAN_TEXT, NT2, t2, NULL },
    };
    float *lv = malloc(sizeof(float) * N * V), *lc = malloc(sizeof(float) * N * V);
    float *l3 = malloc(sizeof(float) * N * V), *lm = malloc(sizeof(float) * N * V);
    gm_error err = { 0 };

    gm_context *cv = new_ctx(mv, 64, 512, NULL), *cc = new_ctx(mc, 64, 512, NULL);
    CHECK(gm_context_eval(cv, sp, 5, GM_LOGITS_ALL, lv, &err) == GM_OK);
    CHECK(gm_context_eval(cc, sp, 5, GM_LOGITS_ALL, lc, &err) == GM_OK);
    /* before the image: identical; first image rows: differ (they see later block rows) */
    CHECK(rel_diff(lv, lc, (size_t)NT0 * V) <= 1e-6);
    CHECKF(rel_diff(lv + (size_t)NT0 * V, lc + (size_t)NT0 * V, (size_t)V) > 1e-3,
           "image block logits are the same as causal");

    /* n_batch 3 < block of 7: the chunk grows to hold the block, results unchanged */
    gm_context *c3 = new_ctx(mv, 64, 3, NULL);
    CHECK(gm_context_eval(c3, sp, 5, GM_LOGITS_ALL, l3, &err) == GM_OK);
    double d3 = rel_diff(l3, lv, (size_t)N * V);
    CHECKF(d3 <= 1e-5, "vision block split across chunks? rel diff %g", d3);
    gm_context_free(c3);

    /* LAST logits of a prompt that ends inside an image block (the row that goes on
     * past the last KV-writing layer keeps its block) equal ALL's last row */
    float *last = malloc(sizeof(float) * V);
    gm_context *cl = new_ctx(mv, 64, 4, NULL);
    CHECK(gm_context_eval(cl, sp, 2, GM_LOGITS_LAST, last, &err) == GM_OK);
    CHECK(rel_diff(last, lv + (size_t)(NT0 + NI - 1) * V, (size_t)V) <= 1e-5);
    gm_context_free(cl);
    free(last);

    /* changing the last image row changes the first image row (vision) ... */
    float *img2 = malloc(sizeof(float) * NI * H);
    memcpy(img2, img, sizeof(float) * NI * H);
    for (int j = 0; j < H; j++)
        img2[(NI - 1) * H + j] = -img2[(NI - 1) * H + j];
    gm_span sp2[5];
    memcpy(sp2, sp, sizeof sp);
    sp2[1].embd = img2;
    gm_context_clear(cv);
    CHECK(gm_context_eval(cv, sp2, 5, GM_LOGITS_ALL, lm, &err) == GM_OK);
    CHECK(rel_diff(lm + (size_t)NT0 * V, lv + (size_t)NT0 * V, (size_t)V) > 1e-4);
    /* ... but not in the causal model */
    gm_context_clear(cc);
    CHECK(gm_context_eval(cc, sp2, 5, GM_LOGITS_ALL, lm, &err) == GM_OK);
    CHECK(rel_diff(lm, lc, (size_t)(NT0 + NI - 1) * V) <= 1e-6);

    /* audio stays causal in the vision model: changing the last audio row leaves all
     * earlier positions unchanged */
    float *aud2 = malloc(sizeof(float) * NA * H);
    memcpy(aud2, aud, sizeof(float) * NA * H);
    for (int j = 0; j < H; j++)
        aud2[(NA - 1) * H + j] += 0.5f;
    memcpy(sp2, sp, sizeof sp);
    sp2[3].embd = aud2;
    gm_context_clear(cv);
    CHECK(gm_context_eval(cv, sp2, 5, GM_LOGITS_ALL, lm, &err) == GM_OK);
    const int first_changed = NT0 + NI + NT1 + NA - 1;
    CHECKF(rel_diff(lm, lv, (size_t)first_changed * V) <= 1e-6, "audio row changed earlier positions");
    CHECK(rel_diff(lm + (size_t)first_changed * V, lv + (size_t)first_changed * V, (size_t)V) > 1e-4);

    /* common prefix: media by hash; a changed image row stops the prefix at the span start */
    gm_context_clear(cv);
    CHECK(gm_context_eval(cv, sp, 5, GM_LOGITS_NONE, NULL, &err) == GM_OK);
    CHECK_EQ_INT(gm_context_common_prefix(cv, sp, 5), N);
    memcpy(sp2, sp, sizeof sp);
    sp2[1].embd = img2;
    CHECK_EQ_INT(gm_context_common_prefix(cv, sp2, 5), NT0);
    memcpy(sp2, sp, sizeof sp);
    sp2[3].embd = aud2;
    CHECK_EQ_INT(gm_context_common_prefix(cv, sp2, 5), NT0 + NI + NT1);
    /* same rows, but an image of a different length is a different block */
    memcpy(sp2, sp, sizeof sp);
    sp2[1].n = NI - 1;
    CHECK_EQ_INT(gm_context_common_prefix(cv, sp2, 2), NT0);
    memcpy(sp2, sp, sizeof sp);
    int32_t t2b[NT2];
    memcpy(t2b, t2, sizeof t2b);
    t2b[1] ^= 1;
    sp2[4].ids = t2b;
    CHECK_EQ_INT(gm_context_common_prefix(cv, sp2, 5), N - NT2 + 1);

    gm_context_free(cv);
    gm_context_free(cc);
    gm_model_free(mv);
    gm_model_free(mc);
    free(img);
    free(img2);
    free(aud);
    free(aud2);
    free(lv);
    free(lc);
    free(l3);
    free(lm);
}

static void test_truncate(const char *path)
{
    enum { A = 17, B = 3, C = 6 };
    gm_model *m = load(path);
    const int V = (int)m->hp.n_vocab;
    int32_t ids[A + B + C], ac[A + C];
    make_ids(ids, A + B + C, 8, V);
    memcpy(ac, ids, sizeof(int32_t) * A);
    memcpy(ac + A, ids + A + B, sizeof(int32_t) * C);
    float *fresh = malloc(sizeof(float) * (A + C) * V), *got = malloc(sizeof(float) * C * V);
    gm_context *c = new_ctx(m, 64, 4, NULL);
    CHECK(eval_text(c, ac, A + C, GM_LOGITS_ALL, fresh) == GM_OK);
    gm_context_clear(c);
    CHECK_EQ_INT(gm_context_n_past(c), 0);
    /* A then B, drop B, continue with C */
    CHECK(eval_text(c, ids, A + B, GM_LOGITS_NONE, NULL) == GM_OK);
    gm_span s = { GM_SPAN_TEXT, A + C, ac, NULL };
    CHECK_EQ_INT(gm_context_common_prefix(c, &s, 1), A);
    gm_error err = { 0 };
    CHECK(gm_context_truncate(c, A, &err) == GM_OK);
    CHECK_EQ_INT(gm_context_n_past(c), A);
    CHECK(eval_text(c, ids + A + B, C, GM_LOGITS_ALL, got) == GM_OK);
    double d = rel_diff(got, fresh + (size_t)A * V, (size_t)C * V);
    CHECKF(d <= 1e-4, "truncate + re-eval vs fresh: %g", d);

    /* too far back for the ring (window 8, ring 8 + 4 - 1 = 11): GM_ERR_RANGE, unchanged */
    int32_t more[40];
    make_ids(more, 40, 9, V);
    CHECK(eval_text(c, more, 40, GM_LOGITS_NONE, NULL) == GM_OK);
    int32_t np = gm_context_n_past(c);
    CHECK(gm_context_truncate(c, 5, &err) == GM_ERR_RANGE);
    CHECK(strstr(err.msg, "sliding") != NULL);
    CHECK_EQ_INT(gm_context_n_past(c), np);
    CHECK(gm_context_truncate(c, np + 1, &err) == GM_ERR_INVALID);
    CHECK(gm_context_truncate(c, np - 2, &err) == GM_OK);
    CHECK(gm_context_truncate(c, 0, &err) == GM_OK);
    CHECK_EQ_INT(gm_context_n_past(c), 0);
    gm_context_free(c);

    /* defaults: n_ctx = min(context_length, 4096), n_batch 512 */
    c = gm_context_new(m, NULL, &err);
    CHECK(c != NULL);
    CHECK_EQ_INT(gm_context_n_ctx(c), 4096);
    CHECK(gm_context_model(c) == m);
    gm_context_free(c);
    free(fresh);
    free(got);
    gm_model_free(m);
}

static void test_ctx_overflow(const char *path)
{
    gm_model *m = load(path);
    const int V = (int)m->hp.n_vocab;
    int32_t ids[40];
    make_ids(ids, 40, 10, V);
    float *ref = malloc(sizeof(float) * V), *got = malloc(sizeof(float) * V);
    gm_context *c = new_ctx(m, 32, 8, NULL);
    CHECK(eval_text(c, ids, 25, GM_LOGITS_LAST, ref) == GM_OK);
    gm_context_clear(c);
    CHECK(eval_text(c, ids, 20, GM_LOGITS_NONE, NULL) == GM_OK);
    gm_error err = { 0 };
    gm_span s = { GM_SPAN_TEXT, 13, ids + 20, NULL };
    CHECK(gm_context_eval(c, &s, 1, GM_LOGITS_LAST, got, &err) == GM_ERR_RANGE);
    CHECK(strstr(err.msg, "n_ctx") != NULL);
    CHECK_EQ_INT(gm_context_n_past(c), 20);
    CHECK(eval_text(c, ids + 20, 5, GM_LOGITS_LAST, got) == GM_OK);
    CHECK(rel_diff(got, ref, (size_t)V) <= 1e-5);
    /* bad input is rejected before anything happens */
    int32_t bad = V;
    s = (gm_span){ GM_SPAN_TEXT, 1, &bad, NULL };
    CHECK(gm_context_eval(c, &s, 1, GM_LOGITS_LAST, got, &err) == GM_ERR_INVALID);
    s = (gm_span){ GM_SPAN_IMAGE, 2, NULL, NULL };
    CHECK(gm_context_eval(c, &s, 1, GM_LOGITS_LAST, got, &err) == GM_ERR_INVALID);
    CHECK(gm_context_eval(c, NULL, 0, GM_LOGITS_LAST, got, &err) == GM_ERR_INVALID);
    CHECK(gm_context_eval(c, NULL, 0, GM_LOGITS_NONE, NULL, &err) == GM_OK);
    CHECK_EQ_INT(gm_context_n_past(c), 25);
    gm_context_free(c);
    free(ref);
    free(got);
    gm_model_free(m);
}

typedef struct cancel_state {
    int calls, cancel_at;
} cancel_state;

static int cancel_cb(void *ud)
{
    cancel_state *s = ud;
    return ++s->calls >= s->cancel_at;
}

static void test_cancel(const char *path, gm_pool *pool)
{
    enum { A = 20, B = 15 };
    gm_model *m = load(path);
    const int V = (int)m->hp.n_vocab;
    int32_t ids[A + B];
    make_ids(ids, A + B, 12, V);
    float *ref = malloc(sizeof(float) * V), *got = malloc(sizeof(float) * V);
    /* reference: A + B straight, and A + the first 3 of B after dropping to 16 */
    gm_context *c = new_ctx(m, 64, 5, pool);
    CHECK(eval_text(c, ids, A + B, GM_LOGITS_LAST, ref) == GM_OK);

    cancel_state st = { 0, 1 << 30 };
    gm_context_params p = { .n_ctx = 64, .n_batch = 5, .pool = pool, .should_cancel = cancel_cb, .cancel_ud = &st };
    gm_error err = { 0 };
    gm_context *cc = gm_context_new(m, &p, &err);
    CHECK(eval_text(cc, ids, A, GM_LOGITS_NONE, NULL) == GM_OK);
    /* cancel in the middle of the second chunk of B: the ring has already wrapped over
     * positions that a truncate may still ask for */
    st.calls = 0;
    st.cancel_at = 1 + 6 + 3;
    CHECK(eval_text(cc, ids + A, B, GM_LOGITS_LAST, got) == GM_ERR_CANCELLED);
    CHECK_EQ_INT(gm_context_n_past(cc), A);
    st.cancel_at = 1 << 30;
    CHECK(eval_text(cc, ids + A, B, GM_LOGITS_LAST, got) == GM_OK);
    CHECK(rel_diff(got, ref, (size_t)V) <= 1e-5);

    /* after a cancelled eval, truncating into the old window works as before */
    gm_context_clear(c);
    gm_context_clear(cc);
    CHECK(eval_text(c, ids, 16, GM_LOGITS_NONE, NULL) == GM_OK);
    CHECK(eval_text(c, ids + 16, 3, GM_LOGITS_LAST, ref) == GM_OK);
    CHECK(eval_text(cc, ids, A, GM_LOGITS_NONE, NULL) == GM_OK);
    st.calls = 0;
    st.cancel_at = 1 + 6 + 3;
    CHECK(eval_text(cc, ids + A, B, GM_LOGITS_NONE, NULL) == GM_ERR_CANCELLED);
    st.cancel_at = 1 << 30;
    CHECK(gm_context_truncate(cc, 16, &err) == GM_OK);
    CHECK(eval_text(cc, ids + 16, 3, GM_LOGITS_LAST, got) == GM_OK);
    double d = rel_diff(got, ref, (size_t)V);
    CHECKF(d <= 1e-5, "cancelled eval corrupted the ring: %g", d);
    gm_context_free(c);
    gm_context_free(cc);
    free(ref);
    free(got);
    gm_model_free(m);
}

/* ================================================================== load errors */

typedef struct rewrite_opts {
    const char *drop;       /* tensor to leave out */
    const char *reshape;    /* tensor whose ne[1] is halved */
    const char *arch;       /* replacement general.architecture */
    const char *drop_key;   /* metadata key to leave out */
} rewrite_opts;

static const char *rewrite(const char *src, const char *name, const rewrite_opts *o)
{
    gm_error err = { 0 };
    gm_gguf *g = gm_gguf_open(src, &err);
    gm_gguf_writer *w = gm_gguf_writer_new();
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const gm_gguf_kv *kv = &g->kv[i];
        if (o->arch && !strcmp(kv->key, "general.architecture"))
            gm_gguf_add_str(w, kv->key, o->arch);
        else if (!o->drop_key || strcmp(kv->key, o->drop_key))
            gm_gguf_add_kv_from(w, g, kv);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gm_gguf_tensor *t = &g->tensors[i];
        if (o->drop && !strcmp(t->name, o->drop))
            continue;
        int64_t ne[4] = { t->ne[0], t->ne[1], t->ne[2], t->ne[3] };
        if (o->reshape && !strcmp(t->name, o->reshape))
            ne[1] /= 2;
        gm_gguf_add_tensor(w, t->name, t->type, t->n_dims, ne, t->data, &err);
    }
    const char *p = tmp_path(name);
    if (gm_gguf_writer_write(w, p, &err) != GM_OK) {
        fprintf(stderr, "rewrite: %s\n", err.msg);
        exit(2);
    }
    gm_gguf_writer_free(w);
    gm_gguf_close(g);
    return p;
}

static void expect_load_error(const char *path, int code, const char *needle1, const char *needle2)
{
    gm_error err = { 0 };
    gm_model *m = gm_model_load(path, &err);
    CHECKF(m == NULL, "%s loaded", path);
    gm_model_free(m);
    CHECKF(err.code == code, "code %d, expected %d (%s)", err.code, code, err.msg);
    CHECKF(strstr(err.msg, needle1) != NULL, "message '%s' lacks '%s'", err.msg, needle1);
    if (needle2)
        CHECKF(strstr(err.msg, needle2) != NULL, "message '%s' lacks '%s'", err.msg, needle2);
}

static void test_load_errors(const char *base)
{
    rewrite_opts o = { .drop = "blk.1.ffn_up.weight" };
    expect_load_error(rewrite(base, "e-missing.gguf", &o), GM_ERR_FORMAT, "'blk.1.ffn_up.weight'", "missing");

    o = (rewrite_opts){ .reshape = "blk.3.attn_q.weight" };
    const char *p = rewrite(base, "e-shape.gguf", &o);
    expect_load_error(p, GM_ERR_FORMAT, "tensor 'blk.3.attn_q.weight' has shape {64, 32}, expected {64, 64}", "e-shape.gguf");

    o = (rewrite_opts){ .arch = "llama" };
    expect_load_error(rewrite(base, "e-arch.gguf", &o), GM_ERR_UNSUPPORTED, "general.architecture", "llama");

    o = (rewrite_opts){ .drop_key = "gemma4.attention.sliding_window_pattern" };
    expect_load_error(rewrite(base, "e-key.gguf", &o), GM_ERR_FORMAT, "gemma4.attention.sliding_window_pattern", NULL);

    /* a KV-owning layer must have attn_k; a shared one need not */
    o = (rewrite_opts){ .drop = "blk.3.attn_k.weight" };
    expect_load_error(rewrite(base, "e-k.gguf", &o), GM_ERR_FORMAT, "'blk.3.attn_k.weight'", NULL);
    o = (rewrite_opts){ .drop = "blk.0.attn_v.weight" }; /* V = K is allowed */
    gm_error err = { 0 };
    gm_model *m = gm_model_load(rewrite(base, "ok-nov.gguf", &o), &err);
    CHECKF(m != NULL, "model without attn_v: %s", err.msg);
    if (m)
        CHECK(m->layers[0].wv.data == NULL && m->layers[1].wv.data != NULL);
    gm_model_free(m);

    m = gm_model_load(tmp_path("does-not-exist.gguf"), &err);
    CHECK(m == NULL && err.code != GM_OK);
}

/* ================================================================== media placeholder ids */

/* transformers embeds <|image|>, <|video|> and <|audio|> as the pad id 0 wherever they
 * occur, text included (e.g. a generated token): same logits as id 0 in that position,
 * one-shot, chunked and decoded. The ids come from the tokenizer strings; a file without
 * tokenizer.ggml.tokens has none and embeds those ids as their own rows. */
static void test_media_placeholders(const char *path, gm_pool *pool)
{
    enum { N = 24 };
    static const char *const names[3] = { "<|image|>", "<|video|>", "<|audio|>" };
    gm_model *m = load(path);
    const gm_hparams *hp = &m->hp;
    const int V = (int)hp->n_vocab;
    const gm_gguf_kv *toks = gm_gguf_find_kv(m->gguf, "tokenizer.ggml.tokens");
    CHECK(toks != NULL);
    int32_t media[3];
    for (int i = 0; i < 3; i++) {
        media[i] = hp->media_placeholder_ids[i];
        CHECKF(media[i] > 0 && media[i] < V, "%s: id %d", names[i], media[i]);
        if (media[i] <= 0 || media[i] >= V) {
            gm_model_free(m);
            return;
        }
        gm_gguf_str st = gm_gguf_arr_str(m->gguf, toks, (uint64_t)media[i]);
        CHECKF(st.len == strlen(names[i]) && !memcmp(st.ptr, names[i], st.len), "id %d is '%.*s', not %s",
               media[i], (int)st.len, st.ptr, names[i]);
        /* its own embedding row differs from the pad row: the mapping is observable */
        const uint8_t *E = m->tok_embd.data;
        CHECK(memcmp(E + (size_t)media[i] * m->tok_embd.row_bytes, E, m->tok_embd.row_bytes) != 0);
    }
    printf("  placeholder ids: image %d, video %d, audio %d\n", media[0], media[1], media[2]);

    int32_t ids[N], pad[N];
    make_ids(ids, N, 21, V);
    const int at[4] = { 3, 9, 17, N - 1 };
    for (int k = 0; k < 4; k++)
        ids[at[k]] = media[k % 3];
    memcpy(pad, ids, sizeof ids);
    for (int k = 0; k < 4; k++)
        pad[at[k]] = 0;
    float *a = malloc(sizeof(float) * N * V), *b = malloc(sizeof(float) * N * V), *one = malloc(sizeof(float) * V);
    gm_context *c = new_ctx(m, 64, 512, pool);
    CHECK(eval_text(c, ids, N, GM_LOGITS_ALL, a) == GM_OK);
    gm_context_free(c);
    c = new_ctx(m, 64, 512, pool);
    CHECK(eval_text(c, pad, N, GM_LOGITS_ALL, b) == GM_OK);
    gm_context_free(c);
    CHECKF(memcmp(a, b, sizeof(float) * N * V) == 0, "placeholder ids vs the pad id: rel diff %g",
           rel_diff(a, b, (size_t)N * V));

    /* chunked prefill, then the last placeholder arrives alone, like a generated token */
    c = new_ctx(m, 64, 5, pool);
    CHECK(eval_text(c, ids, N - 1, GM_LOGITS_LAST, one) == GM_OK);
    double d = rel_diff(one, b + (size_t)(N - 2) * V, (size_t)V);
    CHECK(eval_text(c, ids + N - 1, 1, GM_LOGITS_LAST, one) == GM_OK);
    d = fmax(d, rel_diff(one, b + (size_t)(N - 1) * V, (size_t)V));
    CHECKF(d <= 1e-4, "decoded placeholder vs pad id: rel diff %g", d);
    gm_context_free(c);

    /* the double-precision reference, which maps the ids by itself */
    uint8_t type[N];
    const float *embd[N] = { 0 };
    memset(type, GM_SPAN_TEXT, sizeof type);
    check_vs_reference(path, "placeholder ids as text", 7, N, type, ids, embd);

    /* no tokenizer.ggml.tokens: no mapping, the ids embed as themselves */
    rewrite_opts o = { .drop_key = "tokenizer.ggml.tokens" };
    gm_model *mn = load(rewrite(path, "no-tokens.gguf", &o));
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(mn->hp.media_placeholder_ids[i], -1);
    c = new_ctx(mn, 64, 512, pool);
    CHECK(eval_text(c, ids, N, GM_LOGITS_ALL, a) == GM_OK);
    CHECKF(rel_diff(a + (size_t)(N - 1) * V, b + (size_t)(N - 1) * V, (size_t)V) > 1e-3,
           "without the mapping the placeholder should embed as its own row");
    gm_context_free(c);
    gm_model_free(mn);
    free(a);
    free(b);
    free(one);
    gm_model_free(m);
}

/* ================================================================== main */

int main(int argc, char **argv)
{
    (void)argc;
    printf("decoder: isa %s\n", gm_isa_name(gm_cpu_best_isa()));
    snprintf(g_dir, sizeof g_dir, "/tmp/gm-test-decoder-XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 2;
    }
    gm_synth_config cfg;
    gm_synth_preset("test", &cfg);
    cfg.n_threads = 1;
    const char *base = write_model("base.gguf", &cfg);

    gm_synth_config c2 = cfg;
    c2.keep_shared_kv_tensors = true;
    const char *keep = write_model("keep.gguf", &c2);

    c2 = cfg;
    c2.k_eq_v = true;
    c2.n_head_kv_full = 1;
    c2.n_embd_per_layer = 0; /* a "large model" shape: no PLE, k_eq_v, per-layer KV heads */
    c2.bidir = 0;
    const char *keqv = write_model("keqv.gguf", &c2);

    c2 = cfg;
    c2.bidir = 1;
    const char *vision = write_model("vision.gguf", &c2);
    c2.bidir = 0;
    const char *causal = write_model("causal.gguf", &c2);

    c2 = cfg;
    c2.wtype = GM_TYPE_Q8_0;
    c2.embd_type = GM_TYPE_Q8_0;
    c2.n_embd_per_layer = 16; /* Q8_0 rows need multiples of 32 */
    const char *q8 = write_model("q8.gguf", &c2);

    gm_pool *pool = gm_pool_create(2);

    printf("masks\n");
    test_masks();
    printf("load\n");
    test_load_and_hparams(base);
    printf("reference\n");
    test_reference_text(base, "base (PLE, KV sharing, double-wide)");
    test_reference_text(keqv, "k_eq_v, per-layer KV heads, no PLE");
    test_reference_media(vision, "vision blocks + audio");
    test_reference_media(causal, "causal media");
    printf("cache\n");
    test_cache_consistency(base, "base", NULL);
    test_cache_consistency(base, "base, 2 threads", pool);
    test_cache_consistency(keqv, "k_eq_v", pool);
    test_cache_consistency(q8, "q8_0 weights", pool);
    printf("variants\n");
    test_shared_kv_tensors(base, keep);
    test_bidirectional(vision, causal);
    test_media_placeholders(base, pool);
    printf("truncate / overflow / cancel\n");
    test_truncate(base);
    test_ctx_overflow(base);
    test_cancel(base, NULL);
    test_cancel(base, pool);
    printf("load errors\n");
    test_load_errors(base);

    gm_pool_destroy(pool);
    /* clean up the temporary models */
    const char *files[] = { "base.gguf", "keep.gguf", "keqv.gguf", "vision.gguf", "causal.gguf", "q8.gguf",
                            "e-missing.gguf", "e-shape.gguf", "e-arch.gguf", "e-key.gguf", "e-k.gguf",
                            "ok-nov.gguf", "no-tokens.gguf" };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        unlink(tmp_path(files[i]));
    for (int i = 0; i < g_n_models; i++)
        free(g_models[i]);
    rmdir(g_dir);
    int rc = gm_test_finish();
    const char *isa = getenv("GEMMAD_ISA");
    if (!isa || !*isa)
        rc |= gm_test_rerun_lower_isas("test-decoder", argv);
    return rc;
}
