/* model.c — binds a Gemma 4 text GGUF: hyper-parameters from the metadata
 * (gguf-format.md §1.2) and every weight checked against them (§1.4).
 *
 * Matrices stay in the mmap. 1-D tensors (norms, rope_freqs, layer scales) are used in
 * place when stored F32 and converted to owned F32 copies otherwise.
 */
#include "model.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/quant.h"

#define ARCH "gemma4"

/* Sanity bounds: far above any released model, low enough that products of them fit
 * comfortably in int64 and that a corrupt header cannot make us allocate absurdly. */
#define MAX_EMBD (1u << 17)
#define MAX_LAYER 4096u
#define MAX_HEAD 4096u
#define MAX_HEAD_DIM 8192u
#define MAX_FF (1u << 22)

/* Owned allocations (converted 1-D tensors, RoPE tables), freed with the model. */
typedef struct owned_list {
    void **p;
    size_t n, cap;
} owned_list;

static void *owned_alloc(gm_model *m, size_t bytes)
{
    owned_list *o = m->owned;
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        void **p = realloc(o->p, cap * sizeof *p);
        if (!p)
            return NULL;
        o->p = p;
        o->cap = cap;
    }
    void *q = calloc(1, bytes ? bytes : 1);
    if (q)
        o->p[o->n++] = q;
    return q;
}

static const char *mpath(const gm_model *m)
{
    return m->gguf && m->gguf->path ? m->gguf->path : "<model>";
}

static void fmt_shape(char *buf, size_t cap, const int64_t *ne, uint32_t n)
{
    size_t len = 0;
    len += (size_t)snprintf(buf + len, cap - len, "{");
    for (uint32_t i = 0; i < n && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%" PRId64, i ? ", " : "", ne[i]);
    if (len < cap)
        snprintf(buf + len, cap - len, "}");
}

/* The tensor's shape with trailing 1s dropped (at least `min_dims` kept). */
static uint32_t tensor_rank(const gm_gguf_tensor *t)
{
    uint32_t n = t->n_dims;
    while (n > 1 && t->ne[n - 1] == 1)
        n--;
    return n;
}

static int shape_error(const gm_model *m, const gm_gguf_tensor *t, const int64_t *want, uint32_t n_want,
                       gm_error *err)
{
    char got[96], exp[96];
    fmt_shape(got, sizeof got, t->ne, t->n_dims ? t->n_dims : 1);
    fmt_shape(exp, sizeof exp, want, n_want);
    return gm_set_error(err, GM_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s", mpath(m),
                        t->name, got, exp);
}

/* Binds a 2-D weight of ggml shape {cols, rows} (rows < 0: any, returned in *rows_out). */
static int bind_matrix(gm_model *m, const char *name, int64_t cols, int64_t rows, bool required,
                       gm_matrix *out, gm_error *err)
{
    memset(out, 0, sizeof *out);
    const gm_gguf_tensor *t = gm_gguf_find_tensor(m->gguf, name);
    if (!t) {
        if (required)
            return gm_set_error(err, GM_ERR_FORMAT, "%s: tensor '%s' is missing", mpath(m), name);
        return GM_OK;
    }
    int64_t want[2] = { cols, rows < 0 ? t->ne[1] : rows };
    if (tensor_rank(t) > 2 || t->ne[0] != want[0] || t->ne[1] != want[1] || want[1] <= 0)
        return shape_error(m, t, want, 2, err);
    if (!gm_matmul_supports(t->type))
        return gm_set_error(err, GM_ERR_UNSUPPORTED,
                            "%s: tensor '%s' has type %s, which this build cannot multiply", mpath(m),
                            t->name, gm_type_name(t->type));
    size_t rb = gm_row_size(t->type, cols);
    if (rb == 0 || (uint64_t)rb * (uint64_t)want[1] > t->nbytes)
        return gm_set_error(err, GM_ERR_FORMAT,
                            "%s: tensor '%s': %" PRId64 " columns do not fit type %s's blocks", mpath(m),
                            t->name, cols, gm_type_name(t->type));
    out->type = t->type;
    out->rows = want[1];
    out->cols = cols;
    out->row_bytes = rb;
    out->data = t->data;
    out->name = t->name;
    return GM_OK;
}

/* Binds a 1-D tensor of n elements as F32 (in place, or an owned converted copy). */
static int bind_vector(gm_model *m, const char *name, int64_t n, bool required, const float **out,
                       gm_error *err)
{
    *out = NULL;
    const gm_gguf_tensor *t = gm_gguf_find_tensor(m->gguf, name);
    if (!t) {
        if (required)
            return gm_set_error(err, GM_ERR_FORMAT, "%s: tensor '%s' is missing", mpath(m), name);
        return GM_OK;
    }
    if (tensor_rank(t) != 1 || t->ne[0] != n)
        return shape_error(m, t, &n, 1, err);
    if (t->type == GM_TYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        *out = t->data;
        return GM_OK;
    }
    size_t rb = gm_row_size(t->type, n);
    if (rb == 0 || rb > t->nbytes)
        return gm_set_error(err, GM_ERR_UNSUPPORTED, "%s: tensor '%s' of %" PRId64
                            " elements cannot be stored as %s", mpath(m), t->name, n,
                            gm_type_name(t->type));
    float *f = owned_alloc(m, (size_t)n * sizeof(float));
    if (!f)
        return gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory for tensor '%s'", mpath(m), t->name);
    if (t->type == GM_TYPE_F32)
        memcpy(f, t->data, (size_t)n * sizeof(float));
    else if (gm_dequantize_row(t->type, t->data, f, n) != 0)
        return gm_set_error(err, GM_ERR_UNSUPPORTED, "%s: tensor '%s' has type %s, which this build "
                            "cannot convert", mpath(m), t->name, gm_type_name(t->type));
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(f[i]))
            return gm_set_error(err, GM_ERR_FORMAT, "%s: tensor '%s' holds a non-finite value at %" PRId64,
                                mpath(m), t->name, i);
    *out = f;
    return GM_OK;
}

static float round_bf16(float x)
{
    return gm_bf16_to_fp32(gm_fp32_to_bf16(x));
}

/* HF's inverse frequency 1 / theta^(2i/d), computed in fp32 as torch does. */
static float inv_freq(float theta, uint32_t i, uint32_t d)
{
    float e = (float)(2 * i) / (float)d;
    return 1.0f / powf(theta, e);
}

static int read_bidir(gm_model *m, gm_error *err)
{
    gm_hparams *hp = &m->hp;
    const gm_gguf_kv *kv = gm_gguf_find_kv(m->gguf, ARCH ".use_bidirectional_attention");
    if (!kv) {
        /* transformers' released configs: E-series (PLE) None, the large models "vision". */
        hp->bidir = hp->n_embd_per_layer > 0 ? GM_BIDIR_NONE : GM_BIDIR_VISION;
        return GM_OK;
    }
    if (kv->type == GM_GGUF_BOOL) {
        hp->bidir = kv->v.b ? GM_BIDIR_VISION : GM_BIDIR_NONE;
        return GM_OK;
    }
    if (kv->type != GM_GGUF_STRING)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '%s' has type %s, expected string or bool",
                            mpath(m), kv->key, gm_gguf_vtype_name(kv->type));
    const char *s = kv->str.ptr;
    size_t len = (size_t)kv->str.len;
    if (len == 0 || (len == 4 && !memcmp(s, "none", 4)) || (len == 4 && !memcmp(s, "None", 4)))
        hp->bidir = GM_BIDIR_NONE;
    else if (len == 6 && !memcmp(s, "vision", 6))
        hp->bidir = GM_BIDIR_VISION;
    else
        return gm_set_error(err, GM_ERR_UNSUPPORTED, "%s: key '%s' = '%.*s' is not supported "
                            "(expected \"vision\" or \"none\")", mpath(m), kv->key,
                            (int)(len > 64 ? 64 : len), s);
    return GM_OK;
}

#define KEY(k) ARCH "." k

static int load_hparams(gm_model *m, gm_error *err)
{
    gm_gguf *g = m->gguf;
    gm_hparams *hp = &m->hp;
    int rc;

    const gm_gguf_kv *arch = gm_gguf_find_kv(g, "general.architecture");
    if (!arch)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: missing key 'general.architecture'", mpath(m));
    if (arch->type != GM_GGUF_STRING)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key 'general.architecture' is not a string", mpath(m));
    if (arch->str.len != strlen(ARCH) || memcmp(arch->str.ptr, ARCH, strlen(ARCH)) != 0)
        return gm_set_error(err, GM_ERR_UNSUPPORTED,
                            "%s: general.architecture is '%.*s', expected '" ARCH "'", mpath(m),
                            (int)(arch->str.len > 64 ? 64 : arch->str.len), arch->str.ptr);

    const gm_gguf_kv *name = gm_gguf_find_kv(g, "general.name");
    if (name && name->type == GM_GGUF_STRING) {
        size_t n = name->str.len < sizeof hp->name - 1 ? (size_t)name->str.len : sizeof hp->name - 1;
        memcpy(hp->name, name->str.ptr, n);
        hp->name[n] = '\0';
    }

    if ((rc = gm_gguf_get_u32(g, KEY("embedding_length"), &hp->n_embd, err)) ||
        (rc = gm_gguf_get_u32(g, KEY("block_count"), &hp->n_layer, err)) ||
        (rc = gm_gguf_get_u32(g, KEY("context_length"), &hp->n_ctx_train, err)) ||
        (rc = gm_gguf_get_u32(g, KEY("attention.key_length"), &hp->head_dim_full, err)) ||
        (rc = gm_gguf_get_u32(g, KEY("attention.key_length_swa"), &hp->head_dim_swa, err)) ||
        (rc = gm_gguf_get_u32(g, KEY("attention.sliding_window"), &hp->sliding_window, err)) ||
        (rc = gm_gguf_get_f32(g, KEY("attention.layer_norm_rms_epsilon"), &hp->rms_eps, err)))
        return rc;
    /* 0 = no PLE; llama.cpp's converter always writes it, others may not (checked against
     * the PLE tensors in bind_weights) */
    hp->n_embd_per_layer = 0;
    if ((rc = gm_gguf_get_u32_opt(g, KEY("embedding_length_per_layer_input"), &hp->n_embd_per_layer, err)))
        return rc;

    uint32_t vlen = hp->head_dim_full, vlen_swa = hp->head_dim_swa;
    if ((rc = gm_gguf_get_u32_opt(g, KEY("attention.value_length"), &vlen, err)) ||
        (rc = gm_gguf_get_u32_opt(g, KEY("attention.value_length_swa"), &vlen_swa, err)))
        return rc;
    if (vlen != hp->head_dim_full || vlen_swa != hp->head_dim_swa)
        return gm_set_error(err, GM_ERR_UNSUPPORTED,
                            "%s: key/value head sizes differ (key_length %u, value_length %u, "
                            "key_length_swa %u, value_length_swa %u)", mpath(m), hp->head_dim_full, vlen,
                            hp->head_dim_swa, vlen_swa);

    hp->n_rot_full = hp->head_dim_full;
    hp->n_rot_swa = hp->head_dim_swa;
    hp->rope_theta_full = 10000.0f; /* llama.cpp's default when the key is absent */
    hp->rope_theta_swa = 10000.0f;
    hp->n_shared_kv = 0;
    hp->final_softcap = 0.0f;
    if ((rc = gm_gguf_get_u32_opt(g, KEY("rope.dimension_count"), &hp->n_rot_full, err)) ||
        (rc = gm_gguf_get_u32_opt(g, KEY("rope.dimension_count_swa"), &hp->n_rot_swa, err)) ||
        (rc = gm_gguf_get_f32_opt(g, KEY("rope.freq_base"), &hp->rope_theta_full, err)) ||
        (rc = gm_gguf_get_f32_opt(g, KEY("rope.freq_base_swa"), &hp->rope_theta_swa, err)) ||
        (rc = gm_gguf_get_u32_opt(g, KEY("attention.shared_kv_layers"), &hp->n_shared_kv, err)) ||
        (rc = gm_gguf_get_f32_opt(g, KEY("final_logit_softcapping"), &hp->final_softcap, err)))
        return rc;

    /* ranges */
    if (hp->n_embd == 0 || hp->n_embd > MAX_EMBD)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '" KEY("embedding_length") "' = %u is out of range",
                            mpath(m), hp->n_embd);
    if (hp->n_layer == 0 || hp->n_layer > MAX_LAYER)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '" KEY("block_count") "' = %u is out of range",
                            mpath(m), hp->n_layer);
    if (hp->head_dim_full == 0 || hp->head_dim_full > MAX_HEAD_DIM || hp->head_dim_full % 2)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '" KEY("attention.key_length")
                            "' = %u must be even and in 2..%u", mpath(m), hp->head_dim_full, MAX_HEAD_DIM);
    if (hp->head_dim_swa == 0 || hp->head_dim_swa > MAX_HEAD_DIM || hp->head_dim_swa % 2)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '" KEY("attention.key_length_swa")
                            "' = %u must be even and in 2..%u", mpath(m), hp->head_dim_swa, MAX_HEAD_DIM);
    if (hp->n_rot_full > hp->head_dim_full || hp->n_rot_full % 2)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '" KEY("rope.dimension_count")
                            "' = %u must be even and at most the head size %u", mpath(m), hp->n_rot_full,
                            hp->head_dim_full);
    if (hp->n_rot_swa > hp->head_dim_swa || hp->n_rot_swa % 2)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '" KEY("rope.dimension_count_swa")
                            "' = %u must be even and at most the head size %u", mpath(m), hp->n_rot_swa,
                            hp->head_dim_swa);
    if (!(hp->rope_theta_full > 0.0f) || !isfinite(hp->rope_theta_full))
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '" KEY("rope.freq_base") "' = %g is invalid",
                            mpath(m), (double)hp->rope_theta_full);
    if (!(hp->rope_theta_swa > 0.0f) || !isfinite(hp->rope_theta_swa))
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '" KEY("rope.freq_base_swa") "' = %g is invalid",
                            mpath(m), (double)hp->rope_theta_swa);
    if (!(hp->rms_eps > 0.0f) || !isfinite(hp->rms_eps))
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '" KEY("attention.layer_norm_rms_epsilon")
                            "' = %g is invalid", mpath(m), (double)hp->rms_eps);
    if (!(hp->final_softcap >= 0.0f) || !isfinite(hp->final_softcap))
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '" KEY("final_logit_softcapping") "' = %g is invalid",
                            mpath(m), (double)hp->final_softcap);
    if (hp->sliding_window == 0)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '" KEY("attention.sliding_window") "' is 0", mpath(m));
    if (hp->n_embd_per_layer > MAX_EMBD)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '" KEY("embedding_length_per_layer_input")
                            "' = %u is out of range", mpath(m), hp->n_embd_per_layer);
    if (hp->n_shared_kv >= hp->n_layer)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '" KEY("attention.shared_kv_layers")
                            "' = %u leaves no layer with its own KV (block_count %u)", mpath(m),
                            hp->n_shared_kv, hp->n_layer);

    /* per-layer values */
    uint32_t L = hp->n_layer;
    uint32_t *ff = calloc(L, sizeof *ff), *nh = calloc(L, sizeof *nh), *nkv = calloc(L, sizeof *nkv);
    bool *swa = calloc(L, sizeof *swa);
    hp->layers = calloc(L, sizeof *hp->layers);
    if (!ff || !nh || !nkv || !swa || !hp->layers) {
        rc = gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", mpath(m));
        goto out;
    }
    if ((rc = gm_gguf_get_u32_per_layer(g, KEY("feed_forward_length"), L, ff, err)) ||
        (rc = gm_gguf_get_u32_per_layer(g, KEY("attention.head_count"), L, nh, err)) ||
        (rc = gm_gguf_get_u32_per_layer(g, KEY("attention.head_count_kv"), L, nkv, err)) ||
        (rc = gm_gguf_get_bool_array(g, KEY("attention.sliding_window_pattern"), L, swa, err)))
        goto out;

    uint32_t first_shared = L - hp->n_shared_kv;
    for (uint32_t l = 0; l < L; l++) {
        gm_layer_hparams *lh = &hp->layers[l];
        lh->is_swa = swa[l];
        lh->n_head = nh[l];
        lh->n_head_kv = nkv[l];
        lh->n_ff = ff[l];
        lh->head_dim = swa[l] ? hp->head_dim_swa : hp->head_dim_full;
        lh->kv_source = -1;
        if (nh[l] == 0 || nh[l] > MAX_HEAD || nkv[l] == 0 || nkv[l] > nh[l] || nh[l] % nkv[l]) {
            rc = gm_set_error(err, GM_ERR_FORMAT, "%s: layer %u: %u query heads and %u KV heads "
                              "(the query heads must be a non-zero multiple of the KV heads)", mpath(m), l,
                              nh[l], nkv[l]);
            goto out;
        }
        if (ff[l] == 0 || ff[l] > MAX_FF) {
            rc = gm_set_error(err, GM_ERR_FORMAT, "%s: layer %u: key '" KEY("feed_forward_length")
                              "' = %u is out of range", mpath(m), l, ff[l]);
            goto out;
        }
        if (l >= first_shared) {
            /* transformers: the last earlier non-shared layer of the same type */
            int32_t src = -1;
            for (int32_t j = (int32_t)first_shared - 1; j >= 0; j--)
                if (swa[j] == swa[l]) {
                    src = j;
                    break;
                }
            if (src < 0) {
                rc = gm_set_error(err, GM_ERR_FORMAT, "%s: layer %u shares KV but no earlier layer "
                                  "with its own KV is a %s layer", mpath(m), l,
                                  swa[l] ? "sliding-window" : "full-attention");
                goto out;
            }
            if (nkv[src] != nkv[l]) {
                rc = gm_set_error(err, GM_ERR_FORMAT, "%s: layer %u has %u KV heads but reads the KV of "
                                  "layer %d, which has %u", mpath(m), l, nkv[l], src, nkv[src]);
                goto out;
            }
            lh->kv_source = src;
        }
    }

    if ((rc = read_bidir(m, err)))
        goto out;
    hp->embd_scale = round_bf16(sqrtf((float)hp->n_embd));
    rc = GM_OK;
out:
    free(ff);
    free(nh);
    free(nkv);
    free(swa);
    return rc;
}

static int bind_weights(gm_model *m, gm_error *err)
{
    gm_hparams *hp = &m->hp;
    const int64_t H = hp->n_embd, P = hp->n_embd_per_layer, L = hp->n_layer;
    char nm[96];
    int rc;

    if ((rc = bind_matrix(m, "token_embd.weight", H, -1, true, &m->tok_embd, err)))
        return rc;
    if (m->tok_embd.rows > INT32_MAX)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: tensor 'token_embd.weight' has too many rows", mpath(m));
    hp->n_vocab = (uint32_t)m->tok_embd.rows;
    if ((rc = bind_matrix(m, "output.weight", H, hp->n_vocab, false, &m->output, err)))
        return rc;
    if (!m->output.data)
        m->output = m->tok_embd; /* tied */
    if ((rc = bind_vector(m, "output_norm.weight", H, true, &m->output_norm, err)))
        return rc;

    if (P == 0 && gm_gguf_find_tensor(m->gguf, "per_layer_token_embd.weight"))
        return gm_set_error(err, GM_ERR_FORMAT, "%s: tensor 'per_layer_token_embd.weight' is present but key '"
                            KEY("embedding_length_per_layer_input") "' is missing or 0", mpath(m));
    if (P > 0) {
        if ((rc = bind_matrix(m, "per_layer_token_embd.weight", L * P, -1, true, &m->ple_tok_embd, err)) ||
            (rc = bind_matrix(m, "per_layer_model_proj.weight", H, L * P, true, &m->ple_model_proj, err)) ||
            (rc = bind_vector(m, "per_layer_proj_norm.weight", P, true, &m->ple_proj_norm, err)))
            return rc;
    }

    /* RoPE tables: one for sliding layers, one for full layers. */
    const float *rope_freqs = NULL;
    if ((rc = bind_vector(m, "rope_freqs.weight", hp->head_dim_full / 2, false, &rope_freqs, err)))
        return rc;
    float *inv_swa = owned_alloc(m, hp->head_dim_swa / 2 * sizeof(float));
    float *inv_full = owned_alloc(m, hp->head_dim_full / 2 * sizeof(float));
    if (!inv_swa || !inv_full)
        return gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", mpath(m));
    for (uint32_t i = 0; i < hp->head_dim_swa / 2; i++)
        inv_swa[i] = i < hp->n_rot_swa / 2 ? inv_freq(hp->rope_theta_swa, i, hp->head_dim_swa) : 0.0f;
    for (uint32_t i = 0; i < hp->head_dim_full / 2; i++) {
        float f = i < hp->n_rot_full / 2 ? inv_freq(hp->rope_theta_full, i, hp->head_dim_full) : 0.0f;
        if (rope_freqs) {
            float ff = rope_freqs[i];
            if (!(ff > 0.0f))
                return gm_set_error(err, GM_ERR_FORMAT, "%s: tensor 'rope_freqs.weight' entry %u = %g "
                                    "is not positive", mpath(m), i, (double)ff);
            /* llama.cpp's converter marks unrotated pairs with 1e30: exact pass-through */
            f = ff >= 1e20f ? 0.0f : f / ff;
        }
        inv_full[i] = f;
    }

    m->layers = calloc(L, sizeof *m->layers);
    if (!m->layers)
        return gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", mpath(m));

    for (uint32_t l = 0; l < L; l++) {
        const gm_layer_hparams *lh = &hp->layers[l];
        gm_layer_weights *w = &m->layers[l];
        const int64_t hd = lh->head_dim, nq = (int64_t)lh->n_head * hd, nkv = (int64_t)lh->n_head_kv * hd;
        const bool owns = lh->kv_source < 0;

#define T(suffix) (snprintf(nm, sizeof nm, "blk.%u." suffix, l), nm)
        if (gm_gguf_find_tensor(m->gguf, T("attn_qkv.weight")))
            return gm_set_error(err, GM_ERR_UNSUPPORTED, "%s: tensor '%s': fused QKV weights are not "
                                "supported (convert without --fuse-qkv)", mpath(m), nm);
        if ((rc = bind_vector(m, T("attn_norm.weight"), H, true, &w->attn_norm, err)) ||
            (rc = bind_matrix(m, T("attn_q.weight"), H, nq, true, &w->wq, err)) ||
            (rc = bind_matrix(m, T("attn_output.weight"), nq, H, true, &w->wo, err)) ||
            (rc = bind_vector(m, T("attn_q_norm.weight"), hd, true, &w->q_norm, err)) ||
            (rc = bind_vector(m, T("post_attention_norm.weight"), H, true, &w->post_attn_norm, err)) ||
            (rc = bind_vector(m, T("ffn_norm.weight"), H, true, &w->ffn_norm, err)) ||
            (rc = bind_matrix(m, T("ffn_gate.weight"), H, lh->n_ff, true, &w->ffn_gate, err)) ||
            (rc = bind_matrix(m, T("ffn_up.weight"), H, lh->n_ff, true, &w->ffn_up, err)) ||
            (rc = bind_matrix(m, T("ffn_down.weight"), lh->n_ff, H, true, &w->ffn_down, err)) ||
            (rc = bind_vector(m, T("post_ffw_norm.weight"), H, true, &w->post_ffw_norm, err)))
            return rc;
        if (owns) {
            /* attn_v is optional: without it V is the raw K projection (attention_k_eq_v). */
            if ((rc = bind_matrix(m, T("attn_k.weight"), H, nkv, true, &w->wk, err)) ||
                (rc = bind_matrix(m, T("attn_v.weight"), H, nkv, false, &w->wv, err)) ||
                (rc = bind_vector(m, T("attn_k_norm.weight"), hd, true, &w->k_norm, err)))
                return rc;
        }
        /* KV-shared layers: attn_k/attn_v/attn_k_norm may exist in older conversions;
         * transformers ignores them, and so do we. */
        if (P > 0) {
            if ((rc = bind_matrix(m, T("inp_gate.weight"), H, P, true, &w->inp_gate, err)) ||
                (rc = bind_matrix(m, T("proj.weight"), P, H, true, &w->proj, err)) ||
                (rc = bind_vector(m, T("post_norm.weight"), H, true, &w->post_norm, err)))
                return rc;
        }
        const float *scale = NULL;
        if ((rc = bind_vector(m, T("layer_output_scale.weight"), 1, false, &scale, err)))
            return rc;
        w->layer_scale = scale ? scale[0] : 1.0f;
        if (!isfinite(w->layer_scale))
            return gm_set_error(err, GM_ERR_FORMAT, "%s: tensor '%s' is not finite", mpath(m),
                                T("layer_output_scale.weight"));
#undef T
        w->rope_inv_freq = lh->is_swa ? inv_swa : inv_full;
    }
    return GM_OK;
}

/* The image/video/audio placeholder ids, which transformers embeds as the pad id wherever
 * they occur (§6.4). The GGUF has no key for them: they are found by their text in
 * tokenizer.ggml.tokens, at their ids in the released vocabulary first, else by one pass
 * over the array (a few ms). No tokenizer array, or no such token: no mapping. */
static void find_media_placeholders(gm_model *m)
{
    static const char *const names[GM_N_MEDIA_PLACEHOLDERS] = { "<|image|>", "<|video|>", "<|audio|>" };
    static const int32_t usual[GM_N_MEDIA_PLACEHOLDERS] = { 258880, 258884, 258881 };
    int32_t *ids = m->hp.media_placeholder_ids;
    for (int i = 0; i < GM_N_MEDIA_PLACEHOLDERS; i++)
        ids[i] = -1;
    const gm_gguf_kv *kv = gm_gguf_find_kv(m->gguf, "tokenizer.ggml.tokens");
    if (!kv || kv->type != GM_GGUF_ARRAY || kv->arr_type != GM_GGUF_STRING)
        return;
    /* ids the context accepts are below n_vocab */
    uint64_t n = kv->arr_n < m->hp.n_vocab ? kv->arr_n : m->hp.n_vocab;
    int missing = 0;
    for (int i = 0; i < GM_N_MEDIA_PLACEHOLDERS; i++) {
        gm_gguf_str s = (uint64_t)usual[i] < n ? gm_gguf_arr_str(m->gguf, kv, (uint64_t)usual[i])
                                                : (gm_gguf_str){ NULL, 0 };
        if (s.ptr && s.len == strlen(names[i]) && !memcmp(s.ptr, names[i], s.len))
            ids[i] = usual[i];
        else
            missing++;
    }
    for (uint64_t t = 0; missing > 0 && t < n; t++) {
        gm_gguf_str s = gm_gguf_arr_str(m->gguf, kv, t);
        for (int i = 0; i < GM_N_MEDIA_PLACEHOLDERS; i++)
            if (ids[i] < 0 && s.ptr && s.len == strlen(names[i]) && !memcmp(s.ptr, names[i], s.len)) {
                ids[i] = (int32_t)t;
                missing--;
            }
    }
}

gm_model *gm_model_from_gguf(gm_gguf *g, gm_error *err)
{
    if (!g) {
        gm_set_error(err, GM_ERR_INVALID, "no GGUF file given");
        return NULL;
    }
    gm_model *m = calloc(1, sizeof *m);
    owned_list *o = calloc(1, sizeof *o);
    if (!m || !o) {
        free(m);
        free(o);
        gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", g->path ? g->path : "<gguf>");
        gm_gguf_close(g);
        return NULL;
    }
    m->gguf = g;
    m->owned = o;
    m->path = strdup(g->path ? g->path : "<memory>");
    if (!m->path) {
        gm_set_error(err, GM_ERR_NOMEM, "out of memory");
        gm_model_free(m);
        return NULL;
    }
    if (load_hparams(m, err) != GM_OK || bind_weights(m, err) != GM_OK) {
        gm_model_free(m);
        return NULL;
    }
    find_media_placeholders(m);
    return m;
}

gm_model *gm_model_load(const char *path, gm_error *err)
{
    gm_gguf *g = gm_gguf_open(path, err);
    if (!g)
        return NULL;
    return gm_model_from_gguf(g, err);
}

void gm_model_free(gm_model *m)
{
    if (!m)
        return;
    owned_list *o = m->owned;
    if (o) {
        for (size_t i = 0; i < o->n; i++)
            free(o->p[i]);
        free(o->p);
        free(o);
    }
    free(m->layers);
    free(m->hp.layers);
    free(m->path);
    gm_gguf_close(m->gguf);
    free(m);
}

void gm_model_describe(const gm_model *m, char *buf, size_t cap)
{
    if (!buf || cap == 0)
        return;
    if (!m) {
        snprintf(buf, cap, "(no model)");
        return;
    }
    const gm_hparams *hp = &m->hp;
    uint32_t n_swa = 0, ff_min = UINT32_MAX, ff_max = 0, nh_min = UINT32_MAX, nh_max = 0,
             kv_min = UINT32_MAX, kv_max = 0;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const gm_layer_hparams *lh = &hp->layers[l];
        n_swa += lh->is_swa;
#define MINMAX(v, lo, hi) do { if ((v) < (lo)) (lo) = (v); if ((v) > (hi)) (hi) = (v); } while (0)
        MINMAX(lh->n_ff, ff_min, ff_max);
        MINMAX(lh->n_head, nh_min, nh_max);
        MINMAX(lh->n_head_kv, kv_min, kv_max);
#undef MINMAX
    }
    char ff[32], kv[32], nh[32];
    if (ff_min == ff_max) snprintf(ff, sizeof ff, "%u", ff_min); else snprintf(ff, sizeof ff, "%u-%u", ff_min, ff_max);
    if (kv_min == kv_max) snprintf(kv, sizeof kv, "%u", kv_min); else snprintf(kv, sizeof kv, "%u-%u", kv_min, kv_max);
    if (nh_min == nh_max) snprintf(nh, sizeof nh, "%u", nh_min); else snprintf(nh, sizeof nh, "%u-%u", nh_min, nh_max);
    snprintf(buf, cap,
             "gemma4%s%s%s: %u layers (%u sliding, window %u; %u full), n_embd %u, heads %s / kv %s, "
             "head_dim %u sliding / %u full, ffn %s, vocab %u, PLE %u, shared-KV layers %u, "
             "rope theta %g / %g, softcap %g, bidirectional %s, weights %s",
             hp->name[0] ? " '" : "", hp->name, hp->name[0] ? "'" : "", hp->n_layer, n_swa,
             hp->sliding_window, hp->n_layer - n_swa, hp->n_embd, nh, kv, hp->head_dim_swa,
             hp->head_dim_full, ff, hp->n_vocab, hp->n_embd_per_layer, hp->n_shared_kv,
             (double)hp->rope_theta_swa, (double)hp->rope_theta_full, (double)hp->final_softcap,
             hp->bidir == GM_BIDIR_VISION ? "vision" : "none",
             m->layers ? gm_type_name(m->layers[0].wq.type) : "?");
}
