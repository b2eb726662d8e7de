/* test-audio-encoder.c — the gemma4a encoder against transformers 5.17.0
 * (tests/conformance/audio-tower: soft tokens and every checkpoint of two clips, each run
 * alone as get_audio_features sees it), with and without a pool and on every ISA this CPU
 * has; F32 / F16 / Q8_0 rewrites of the BF16 fixture; an optional soft_emb_norm;
 * causality (a prefix encodes to the same leading tokens); token counts; load errors
 * naming file and tensor; refused input. */
#define GM_TEST_RERUN_ISAS
#include "test-util.h"

#include <stdbool.h>
#include <stdint.h>

#include "audio/audio-encoder.h"
#include "core/gguf.h"
#include "core/pool.h"
#include "core/quant.h"

/* Fixture layout (tests/conformance/audio-tower/meta.json). */
#define N_CLIP 2
static const uint32_t frames[N_CLIP] = { 203, 158 };
static const uint32_t frame_row0[N_CLIP] = { 0, 203 };
static const uint32_t token_row0[N_CLIP] = { 0, 51 };
#define N_FRAMES 361
#define N_TOK 91
#define MEL 128
#define HID 64
#define OUT_W 48
#define TEXT_W 64
#define TOL 1e-3

static const char *conf_dir(void)
{
    const char *d = getenv("GEMMAD_CONFORMANCE_DIR");
    return d ? d : "tests/conformance";
}

static double rel_frob(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static float *features; /* [361][128] */
static float *ref;      /* soft_tokens [91][64], tower_out [91][48], encoder_out, layer0, subsampled [91][64] */

static void fixture_path(char *buf, size_t n, const char *file)
{
    snprintf(buf, n, "%s/audio-tower/%s", conf_dir(), file);
}

/* Encodes both clips with every checkpoint and compares them with transformers. */
static void run_file(const char *path, const char *what, gm_pool *pool, double tol_soft,
                     double tol_ck)
{
    gm_error err = { 0 };
    gm_audio_model *m = gm_audio_model_load(path, &err);
    CHECKF(m != NULL, "load %s: %s", path, err.msg);
    if (!m)
        return;
    CHECK_EQ_INT(gm_audio_model_projection_dim(m), TEXT_W);
    CHECK_EQ_INT(gm_audio_model_hidden(m), HID);
    const float *r_soft = ref, *r_tower = r_soft + N_TOK * TEXT_W, *r_enc = r_tower + N_TOK * OUT_W;
    const float *r_l0 = r_enc + N_TOK * HID, *r_sub = r_l0 + N_TOK * HID;
    float *soft = calloc(N_TOK * TEXT_W, sizeof(float)), *tower = calloc(N_TOK * OUT_W, sizeof(float));
    float *enc = calloc(N_TOK * HID, sizeof(float)), *l0 = calloc(N_TOK * HID, sizeof(float));
    float *sub = calloc(N_TOK * HID, sizeof(float));
    for (int c = 0; c < N_CLIP; c++) {
        CHECK_EQ_INT(gm_audio_n_soft_tokens(frames[c]), (c ? N_TOK : token_row0[1]) - token_row0[c]);
        gm_audio_checkpoints ck = {
            .subsampled = sub + token_row0[c] * HID, .layer0 = l0 + token_row0[c] * HID,
            .encoder_out = enc + token_row0[c] * HID, .tower_out = tower + token_row0[c] * OUT_W,
        };
        int rc = gm_audio_encode_checkpoints(m, pool, features + (size_t)frame_row0[c] * MEL,
                                             frames[c], soft + token_row0[c] * TEXT_W, &ck, &err);
        CHECKF(rc == GM_OK, "%s clip %d: %s", what, c, err.msg);
    }
    struct { const char *name; const float *got, *want; size_t n; double tol; } cmp[] = {
        { "subsampled", sub, r_sub, N_TOK * HID, tol_ck }, { "layer0", l0, r_l0, N_TOK * HID, tol_ck },
        { "encoder_out", enc, r_enc, N_TOK * HID, tol_ck },
        { "tower_out", tower, r_tower, N_TOK * OUT_W, tol_ck },
        { "soft_tokens", soft, r_soft, N_TOK * TEXT_W, tol_soft },
    };
    for (size_t i = 0; i < sizeof cmp / sizeof cmp[0]; i++) {
        double e = rel_frob(cmp[i].got, cmp[i].want, cmp[i].n);
        printf("%s %s%s: rel frobenius %.3g\n", what, cmp[i].name, pool ? " (pool)" : "", e);
        CHECKF(e <= cmp[i].tol, "%s %s: rel frobenius %.3g > %g", what, cmp[i].name, e, cmp[i].tol);
    }
    /* The plain entry point gives the same soft tokens. */
    float *again = calloc(40 * TEXT_W, sizeof(float));
    CHECK(gm_audio_encode(m, pool, features + (size_t)frame_row0[1] * MEL, frames[1], again, &err) == GM_OK);
    CHECK(rel_frob(again, soft + token_row0[1] * TEXT_W, 40 * TEXT_W) == 0.0);
    free(again);
    free(soft);
    free(tower);
    free(enc);
    free(l0);
    free(sub);
    gm_audio_model_free(m);
}

/* Every stage is causal apart from the subsampling convs' one-frame look-ahead, so the
 * first 100 frames (25 tokens, the last needing frames up to 99) give the full clip's
 * first 25 tokens; short clips (1..5 frames) encode to finite tokens. */
static void causal_prefix(gm_pool *pool)
{
    char path[4096];
    gm_error err = { 0 };
    fixture_path(path, sizeof path, "tiny.gguf");
    gm_audio_model *m = gm_audio_model_load(path, &err);
    CHECK(m != NULL);
    if (!m)
        return;
    float full[51 * TEXT_W], pre[25 * TEXT_W];
    CHECK(gm_audio_encode(m, pool, features, 203, full, &err) == GM_OK);
    CHECK(gm_audio_encode(m, pool, features, 100, pre, &err) == GM_OK);
    double e = rel_frob(pre, full, 25 * TEXT_W);
    printf("100-frame prefix vs full clip, first 25 tokens: rel %.3g\n", e);
    CHECKF(e <= 1e-5, "prefix differs: %.3g", e);
    /* The 26th token sees frame 100..103: dropping them must change it. */
    float pre2[26 * TEXT_W];
    CHECK(gm_audio_encode(m, pool, features, 101, pre2, &err) == GM_OK);
    CHECK(rel_frob(pre2 + 25 * TEXT_W, full + 25 * TEXT_W, TEXT_W) > 1e-3);
    for (uint32_t nf = 1; nf <= 5; nf++) {
        float out[2 * TEXT_W];
        uint32_t nt = gm_audio_n_soft_tokens(nf);
        CHECK_EQ_INT(nt, nf <= 4 ? 1 : 2);
        CHECKF(gm_audio_encode(m, pool, features + 7 * MEL, nf, out, &err) == GM_OK, "%s", err.msg);
        bool finite = true;
        for (uint32_t i = 0; i < nt * TEXT_W; i++)
            finite = finite && isfinite(out[i]);
        CHECKF(finite, "%u frames: non-finite soft tokens", nf);
    }
    /* No frame: refused, nothing written. */
    float sentinel = 12345.0f;
    gm_error_clear(&err);
    CHECK(gm_audio_encode(m, pool, features, 0, &sentinel, &err) == GM_ERR_INVALID);
    CHECKF(strstr(err.msg, "frame") != NULL, "%s", err.msg);
    CHECK(sentinel == 12345.0f);
    CHECK(gm_audio_encode(m, pool, NULL, 10, full, &err) == GM_ERR_INVALID);
    gm_audio_model_free(m);
}

static void token_counts(void)
{
    static const uint32_t nf[][2] = { { 0, 0 }, { 1, 1 }, { 2, 1 }, { 3, 1 }, { 4, 1 }, { 5, 2 },
                                      { 8, 2 }, { 9, 3 }, { 203, 51 }, { 158, 40 }, { 3000, 750 },
                                      /* HF tests: 38 560 / 48 000 / 48 800 / 99 360 samples */
                                      { 240, 60 }, { 299, 75 }, { 304, 76 }, { 620, 155 } };
    for (size_t i = 0; i < sizeof nf / sizeof nf[0]; i++)
        CHECKF(gm_audio_n_soft_tokens(nf[i][0]) == nf[i][1], "%u frames: %u tokens, want %u",
               nf[i][0], gm_audio_n_soft_tokens(nf[i][0]), nf[i][1]);
}

/* A rewrite of tiny.gguf: tensors `drop` left out, `reshape` one shorter in ne[0]; with
 * mtype != GM_TYPE_COUNT, every BF16 matrix converted to mtype (Q8_0 only where rows split
 * into whole blocks, else F16) and F32 vectors/convs to BF16 (exact: the fixture's
 * weights are bf16 values) except the softplus'ed per_dim_scale and the clamp scalars. */
static bool rewrite(const char *dst, const char *drop, const char *reshape, int mtype,
                    int *n_conv)
{
    char src[4096];
    gm_error err = { 0 };
    fixture_path(src, sizeof src, "tiny.gguf");
    gm_gguf *g = gm_gguf_open(src, &err);
    CHECKF(g != NULL, "%s", err.msg);
    if (!g)
        return false;
    gm_gguf_writer *w = gm_gguf_writer_new();
    for (uint64_t i = 0; i < g->n_kv; i++)
        gm_gguf_add_kv_from(w, g, &g->kv[i]);
    *n_conv = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gm_gguf_tensor *t = &g->tensors[i];
        if (drop && strcmp(t->name, drop) == 0)
            continue;
        int64_t ne[GM_GGUF_MAX_DIMS];
        memcpy(ne, t->ne, sizeof ne);
        if (reshape && strcmp(t->name, reshape) == 0)
            ne[0] -= 1; /* the data is larger than needed; only the shape matters */
        const int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        gm_type type = t->type;
        if (mtype != GM_TYPE_COUNT && t->type == GM_TYPE_BF16)
            type = (gm_type)mtype;
        else if (mtype != GM_TYPE_COUNT && t->type == GM_TYPE_F32 && n > 1 &&
                 !strstr(t->name, "per_dim_scale"))
            type = GM_TYPE_BF16;
        if (type == GM_TYPE_Q8_0 && t->ne[0] % 32)
            type = GM_TYPE_F16;
        if (type == t->type) {
            CHECK(gm_gguf_add_tensor(w, t->name, t->type, t->n_dims, ne, t->data, &err) == GM_OK);
            continue;
        }
        float *f = malloc((size_t)n * sizeof *f);
        for (int64_t j = 0; j < n; j++)
            f[j] = t->type == GM_TYPE_F32 ? ((const float *)t->data)[j]
                                          : gm_bf16_to_fp32(((const gm_bf16 *)t->data)[j]);
        void *h = malloc(gm_row_size(type, t->ne[0]) * (size_t)(n / t->ne[0]));
        if (type == GM_TYPE_F32) {
            memcpy(h, f, (size_t)n * sizeof *f);
        } else if (type == GM_TYPE_BF16 || type == GM_TYPE_F16) {
            uint16_t *u = h;
            for (int64_t j = 0; j < n; j++)
                u[j] = type == GM_TYPE_F16 ? gm_fp32_to_fp16(f[j]) : gm_fp32_to_bf16(f[j]);
        } else {
            size_t rb = gm_row_size(type, t->ne[0]);
            for (int64_t r = 0; r < n / t->ne[0]; r++)
                CHECK(gm_quantize_row(type, f + r * t->ne[0], (char *)h + r * rb, t->ne[0]) == 0);
        }
        (*n_conv)++;
        CHECK(gm_gguf_add_tensor(w, t->name, type, t->n_dims, ne, h, &err) == GM_OK);
        free(h);
        free(f);
    }
    int rc = gm_gguf_writer_write(w, dst, &err);
    CHECKF(rc == GM_OK, "%s", err.msg);
    gm_gguf_writer_free(w);
    gm_gguf_close(g);
    return rc == GM_OK;
}

static void converted_copy(gm_type mtype, double tol)
{
    char dst[4096], what[64];
    int n_conv = 0;
    snprintf(dst, sizeof dst, "/tmp/test-audio-encoder-%s-%d.gguf", gm_type_name(mtype), (int)getpid());
    if (!rewrite(dst, NULL, NULL, mtype, &n_conv))
        return;
    /* 2 layers × (11 matrices + 9 norms + conv_dw) + 4 convs/norms + 2 matrices + bias */
    CHECK_EQ_INT(n_conv, 2 * 21 + 4 + 3 + 1);
    snprintf(what, sizeof what, "tiny as %s", gm_type_name(mtype));
    run_file(dst, what, NULL, tol, tol);
    unlink(dst);
}

static void broken_file(const char *drop, const char *reshape, const char *expect)
{
    char dst[4096];
    int n_conv = 0;
    snprintf(dst, sizeof dst, "/tmp/test-audio-encoder-broken-%d.gguf", (int)getpid());
    if (!rewrite(dst, drop, reshape, GM_TYPE_COUNT, &n_conv))
        return;
    gm_error err = { 0 };
    gm_audio_model *m = gm_audio_model_load(dst, &err);
    CHECKF(m == NULL, "loading without/with reshaped %s succeeded", drop ? drop : reshape);
    CHECKF(err.code != GM_OK && strstr(err.msg, expect) && strstr(err.msg, dst),
           "error does not name %s and the file: %s", expect, err.msg);
    gm_audio_model_free(m);
    unlink(dst);
}

/* mm.a.soft_emb_norm.weight (not written for Gemma 4, whose embed_audio norm has no
 * weight; llama.cpp applies it when present) scales the normed tokens: all 2 doubles the
 * soft tokens (the projection is linear). */
static void soft_emb_norm(void)
{
    char src[4096], dst[4096];
    gm_error err = { 0 };
    fixture_path(src, sizeof src, "tiny.gguf");
    snprintf(dst, sizeof dst, "/tmp/test-audio-encoder-norm-%d.gguf", (int)getpid());
    gm_gguf *g = gm_gguf_open(src, &err);
    CHECKF(g != NULL, "%s", err.msg);
    if (!g)
        return;
    gm_gguf_writer *w = gm_gguf_writer_new();
    for (uint64_t i = 0; i < g->n_kv; i++)
        gm_gguf_add_kv_from(w, g, &g->kv[i]);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gm_gguf_tensor *t = &g->tensors[i];
        CHECK(gm_gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, &err) == GM_OK);
    }
    float two[OUT_W];
    for (int i = 0; i < OUT_W; i++)
        two[i] = 2.0f;
    const int64_t ne[1] = { OUT_W };
    CHECK(gm_gguf_add_tensor(w, "mm.a.soft_emb_norm.weight", GM_TYPE_F32, 1, ne, two, &err) == GM_OK);
    CHECKF(gm_gguf_writer_write(w, dst, &err) == GM_OK, "%s", err.msg);
    gm_gguf_writer_free(w);
    gm_gguf_close(g);
    gm_audio_model *a = gm_audio_model_load(src, &err), *b = gm_audio_model_load(dst, &err);
    CHECKF(a && b, "load: %s", err.msg);
    if (a && b) {
        float sa[40 * TEXT_W], sb[40 * TEXT_W];
        const float *x = features + (size_t)frame_row0[1] * MEL;
        CHECK(gm_audio_encode(a, NULL, x, frames[1], sa, &err) == GM_OK);
        CHECK(gm_audio_encode(b, NULL, x, frames[1], sb, &err) == GM_OK);
        for (int i = 0; i < 40 * TEXT_W; i++)
            sa[i] *= 2.0f;
        double e = rel_frob(sb, sa, 40 * TEXT_W);
        CHECKF(e <= 1e-6, "soft_emb_norm of 2: %.3g from twice the tokens", e);
    }
    gm_audio_model_free(a);
    gm_audio_model_free(b);
    unlink(dst);
}

/* A vision-only mmproj has no audio encoder. */
static void no_audio(void)
{
    char path[4096];
    gm_error err = { 0 };
    snprintf(path, sizeof path, "%s/vision-tower/e-clipped.gguf", conf_dir());
    gm_audio_model *m = gm_audio_model_load(path, &err);
    CHECK(m == NULL);
    CHECKF(err.code == GM_ERR_UNSUPPORTED && strstr(err.msg, path) && strstr(err.msg, "audio"),
           "%s", err.msg);
    gm_audio_model_free(m);
    gm_error_clear(&err);
    CHECK(gm_audio_model_load("/nonexistent/mmproj.gguf", &err) == NULL && err.code != GM_OK);
}

int main(int argc, char **argv)
{
    char path[4096];
    size_t len = 0;
    fixture_path(path, sizeof path, "inputs.bin");
    features = gm_test_read_file(path, &len);
    CHECKF(features && len == (size_t)N_FRAMES * MEL * 4, "%s: %zu bytes", path, len);
    fixture_path(path, sizeof path, "tiny.bin");
    size_t rlen = 0;
    ref = gm_test_read_file(path, &rlen);
    CHECKF(ref && rlen == (size_t)N_TOK * (TEXT_W + OUT_W + 3 * HID) * 4, "%s: %zu bytes", path, rlen);
    if (!features || !ref || len != (size_t)N_FRAMES * MEL * 4 ||
        rlen != (size_t)N_TOK * (TEXT_W + OUT_W + 3 * HID) * 4)
        return gm_test_finish();

    token_counts();
    fixture_path(path, sizeof path, "tiny.gguf");
    run_file(path, "tiny", NULL, TOL, TOL);
    gm_pool *pool = gm_pool_create(2);
    run_file(path, "tiny", pool, TOL, TOL);
    causal_prefix(pool);
    gm_pool_destroy(pool);
    causal_prefix(NULL);

    converted_copy(GM_TYPE_F32, TOL);
    converted_copy(GM_TYPE_F16, TOL);
    converted_copy(GM_TYPE_Q8_0, 3e-2); /* activations are quantized to Q8_0 too */

    broken_file("a.blk.1.conv_pw2.weight", NULL, "a.blk.1.conv_pw2.weight");
    broken_file("a.conv1d.1.norm.weight", NULL, "a.conv1d.1.norm.weight");
    broken_file("a.blk.0.norm_conv.weight", NULL, "a.blk.0.norm_conv.weight");
    broken_file("mm.a.input_projection.weight", NULL, "mm.a.input_projection.weight");
    broken_file(NULL, "a.blk.0.per_dim_scale.weight", "a.blk.0.per_dim_scale.weight");
    broken_file(NULL, "a.input_projection.weight", "a.input_projection.weight");
    broken_file(NULL, "a.blk.1.attn_k_rel.weight", "a.blk.1.attn_k_rel.weight");
    broken_file(NULL, "a.blk.0.conv_dw.weight", "a.blk.0.conv_dw.weight");
    broken_file(NULL, "a.pre_encode.out.bias", "a.pre_encode.out.bias");
    soft_emb_norm();
    no_audio();

    free(features);
    free(ref);
    int rc = gm_test_finish();
    if (!getenv("GEMMAD_ISA") && gm_test_rerun_lower_isas("test-audio-encoder", argv))
        rc = 1;
    return rc;
}
