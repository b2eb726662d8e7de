/* test-audio-encoder.c — the gemma4a encoder against transformers 5.17.0
 * (tests/conformance/audio-tower: soft tokens and every checkpoint of two clips, each run
 * alone as get_audio_features sees it), with and without a pool and on every ISA this CPU
 * has; F32 / F16 / Q8_0 rewrites of the BF16 fixture; an optional soft_emb_norm;
 * causality (a prefix encodes to the same leading tokens); token counts; load errors
 * naming file and tensor; refused input. The synthetic mmproj writer's audio tower
 * (tools/synth-model.c): the tiny preset loads with both encoders and encodes to finite
 * unit-size tokens in every matrix type, the full-size E2B tower has the real shapes. */
#define GM_TEST_RERUN_ISAS
#include "test-util.h"

#include <stdbool.h>
#include <stdint.h>

#include <time.h>
#include <unistd.h>

#include "audio/audio-encoder.h"
#include "core/gguf.h"
#include "core/pool.h"
#include "core/quant.h"
#include "tools/synth-model.h"
#include "vision/vision-encoder.h"

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

static float *features; /* [361][128] */
static float *ref;      /* soft_tokens [91][64], tower_out [91][48], encoder_out, layer0, subsampled [91][64] */

static void fixture_path(char *buf, size_t n, const char *file)
{
    snprintf(buf, n, "%s/audio-tower/%s", gm_test_conformance_dir(), file);
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
        double e = gm_test_rel_frobenius(cmp[i].got, cmp[i].want, cmp[i].n);
        printf("%s %s%s: rel frobenius %.3g\n", what, cmp[i].name, pool ? " (pool)" : "", e);
        CHECKF(e <= cmp[i].tol, "%s %s: rel frobenius %.3g > %g", what, cmp[i].name, e, cmp[i].tol);
    }
    /* The plain entry point gives the same soft tokens. */
    float *again = calloc(40 * TEXT_W, sizeof(float));
    CHECK(gm_audio_encode(m, pool, features + (size_t)frame_row0[1] * MEL, frames[1], again, &err) == GM_OK);
    CHECK(gm_test_rel_frobenius(again, soft + token_row0[1] * TEXT_W, 40 * TEXT_W) == 0.0);
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
    double e = gm_test_rel_frobenius(pre, full, 25 * TEXT_W);
    printf("100-frame prefix vs full clip, first 25 tokens: rel %.3g\n", e);
    CHECKF(e <= 1e-5, "prefix differs: %.3g", e);
    /* The 26th token sees frame 100..103: dropping them must change it. */
    float pre2[26 * TEXT_W];
    CHECK(gm_audio_encode(m, pool, features, 101, pre2, &err) == GM_OK);
    CHECK(gm_test_rel_frobenius(pre2 + 25 * TEXT_W, full + 25 * TEXT_W, TEXT_W) > 1e-3);
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
        double e = gm_test_rel_frobenius(sb, sa, 40 * TEXT_W);
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
    snprintf(path, sizeof path, "%s/vision-tower/e-clipped.gguf", gm_test_conformance_dir());
    gm_audio_model *m = gm_audio_model_load(path, &err);
    CHECK(m == NULL);
    CHECKF(err.code == GM_ERR_UNSUPPORTED && strstr(err.msg, path) && strstr(err.msg, "audio"),
           "%s", err.msg);
    gm_audio_model_free(m);
    gm_error_clear(&err);
    CHECK(gm_audio_model_load("/nonexistent/mmproj.gguf", &err) == NULL && err.code != GM_OK);
}

/* ---- the synthetic mmproj writer's audio tower ---------------------------------------- */

static char tmpdir[64];

/* Writes preset `preset` with matrices of type t (no_vision / no audio as asked) to a
 * file in tmpdir; false on failure (already reported). */
static bool synth_write(const char *preset, gm_type t, bool no_vision, bool no_audio, char *path, size_t n)
{
    gm_synth_mmproj_config c;
    CHECK(gm_synth_mmproj_preset(preset, &c) == 0);
    c.wtype = t;
    c.no_vision = no_vision;
    if (no_audio)
        c.audio.n_embd = 0;
    c.n_threads = 1;
    snprintf(path, n, "%s/%s-%s%s%s.gguf", tmpdir, preset, gm_type_name(t), no_vision ? "-novision" : "",
             no_audio ? "-noaudio" : "");
    gm_error err = { 0 };
    int rc = gm_synth_mmproj_write(&c, path, &err);
    CHECKF(rc == GM_OK, "write %s: %s", path, err.msg);
    return rc == GM_OK;
}

/* Encodes clip a of the fixture's features with the tiny synthetic tower of type t. */
static bool synth_tiny_encode(gm_type t, gm_pool *pool, float *out)
{
    char path[128];
    if (!synth_write("tiny", t, false, false, path, sizeof path))
        return false;
    gm_error err = { 0 };
    gm_audio_model *m = gm_audio_model_load(path, &err);
    CHECKF(m != NULL, "load %s: %s", path, err.msg);
    int rc = GM_ERR_INVALID;
    if (m) {
        CHECK_EQ_INT(gm_audio_model_hidden(m), 64);
        CHECK_EQ_INT(gm_audio_model_projection_dim(m), 64);
        rc = gm_audio_encode(m, pool, features, frames[0], out, &err);
        CHECKF(rc == GM_OK, "encode with %s: %s", path, err.msg);
    }
    /* The same file holds the vision tower. */
    gm_vision_model *vm = gm_vision_model_load(path, &err);
    CHECKF(vm != NULL, "vision load %s: %s", path, err.msg);
    if (vm) {
        CHECK_EQ_INT(gm_vision_model_hidden(vm), 64);
        CHECK_EQ_INT(gm_vision_model_projection_dim(vm), 64);
    }
    gm_vision_model_free(vm);
    gm_audio_model_free(m);
    unlink(path);
    return rc == GM_OK;
}

static void synth_tiny(void)
{
    const size_t n = (size_t)token_row0[1] * TEXT_W; /* clip a: 51 tokens */
    float *f32 = calloc(n, sizeof *f32), *got = calloc(n, sizeof *got);
    gm_pool *pool = gm_pool_create(2);
    if (synth_tiny_encode(GM_TYPE_F32, NULL, f32)) {
        /* Finite, unit-size (weightless RMSNorm, then a 1/sqrt(48) projection), and
         * differing between tokens (neither saturated nor collapsed onto one vector). */
        double sq = 0, diff = 0;
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            bad += !isfinite(f32[i]);
            sq += (double)f32[i] * f32[i];
            diff += fabs((double)f32[i] - f32[i % TEXT_W]);
        }
        const double rms = sqrt(sq / (double)n), mean_diff = diff / (double)(n - TEXT_W);
        printf("synthetic tiny audio tower: %u soft tokens × %d, rms %.4f, mean |token - token 0| %.4f\n",
               token_row0[1], TEXT_W, rms, mean_diff);
        CHECK_EQ_INT(bad, 0);
        CHECKF(rms > 0.5 && rms < 2.0, "soft-token rms %.4g", rms);
        CHECKF(mean_diff > 0.1 * rms, "soft tokens hardly differ (%.4g)", mean_diff);
        /* With a pool: the same tokens up to summation order. */
        if (synth_tiny_encode(GM_TYPE_F32, pool, got)) {
            double e = gm_test_rel_frobenius(got, f32, n);
            printf("synthetic tiny audio tower, pool vs none: rel frobenius %.3g\n", e);
            CHECKF(e <= 1e-5, "pool changes the tokens by %.3g", e);
        }
        /* The other storage types hold the same seeded values, rounded. */
        static const struct { gm_type t; double tol; } types[] = {
            { GM_TYPE_F16, 3e-3 }, { GM_TYPE_BF16, 3e-2 }, { GM_TYPE_Q8_0, 5e-2 },
        };
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
            if (!synth_tiny_encode(types[i].t, pool, got))
                continue;
            double e = gm_test_rel_frobenius(got, f32, n);
            printf("synthetic tiny audio tower, %s matrices vs F32: rel frobenius %.3g\n",
                   gm_type_name(types[i].t), e);
            CHECKF(e > 0 && e <= types[i].tol, "%s: rel frobenius %.3g (tolerance %g)", gm_type_name(types[i].t), e,
                   types[i].tol);
        }
    }
    gm_pool_destroy(pool);
    free(f32);
    free(got);

    /* One tower only: the other encoder refuses the file, naming it. */
    char a_only[128], v_only[128];
    gm_error err = { 0 };
    if (synth_write("tiny", GM_TYPE_F16, true, false, a_only, sizeof a_only)) {
        gm_audio_model *m = gm_audio_model_load(a_only, &err);
        CHECKF(m != NULL, "audio-only: %s", err.msg);
        gm_audio_model_free(m);
        gm_error_clear(&err);
        gm_vision_model *vm = gm_vision_model_load(a_only, &err);
        CHECKF(vm == NULL && strstr(err.msg, a_only), "vision load of an audio-only file: %s", err.msg);
        gm_vision_model_free(vm);
        gm_error_clear(&err);
    }
    if (synth_write("tiny", GM_TYPE_F16, false, true, v_only, sizeof v_only)) {
        gm_audio_model *m = gm_audio_model_load(v_only, &err);
        CHECKF(m == NULL && err.code == GM_ERR_UNSUPPORTED && strstr(err.msg, v_only),
               "audio load of a vision-only file: %s", err.msg);
        gm_audio_model_free(m);
        gm_error_clear(&err);
        /* The audio tower's tensors are keyed by name: the vision tower's values are the
         * same with or without it. */
        char both[128];
        if (synth_write("tiny", GM_TYPE_F16, false, false, both, sizeof both)) {
            gm_gguf *g1 = gm_gguf_open(v_only, &err), *g2 = gm_gguf_open(both, &err);
            CHECK(g1 && g2);
            if (g1 && g2) {
                const gm_gguf_tensor *x = gm_gguf_find_tensor(g1, "v.blk.1.ffn_down.weight");
                const gm_gguf_tensor *y = gm_gguf_find_tensor(g2, "v.blk.1.ffn_down.weight");
                CHECK(x && y && x->nbytes == y->nbytes && memcmp(x->data, y->data, x->nbytes) == 0);
                CHECK(gm_gguf_find_tensor(g1, "a.blk.0.ffn_up.weight") == NULL);
                CHECK(gm_gguf_find_tensor(g2, "a.blk.0.ffn_up.weight") != NULL);
                bool hv = false, ha = false;
                CHECK(gm_gguf_get_bool_opt(g2, "clip.has_vision_encoder", &hv, &err) == GM_OK && hv);
                CHECK(gm_gguf_get_bool_opt(g2, "clip.has_audio_encoder", &ha, &err) == GM_OK && ha);
                CHECK(gm_gguf_get_bool_opt(g1, "clip.has_audio_encoder", &ha, &err) == GM_OK && !ha);
            }
            gm_gguf_close(g1);
            gm_gguf_close(g2);
            unlink(both);
        }
    }
    unlink(a_only);
    unlink(v_only);

    /* Refusals: nothing written. */
    gm_synth_mmproj_config c;
    char path[128];
    snprintf(path, sizeof path, "%s/refused.gguf", tmpdir);
    CHECK(gm_synth_mmproj_preset("tiny", &c) == 0);
    c.no_vision = true;
    c.audio.n_embd = 0;
    CHECK(gm_synth_mmproj_write(&c, path, &err) == GM_ERR_INVALID);
    CHECK(gm_synth_mmproj_preset("tiny", &c) == 0);
    c.audio.n_ff = 200; /* Q8_0 rows need multiples of 32 */
    c.wtype = GM_TYPE_Q8_0;
    CHECK(gm_synth_mmproj_write(&c, path, &err) == GM_ERR_INVALID);
    CHECK(gm_synth_mmproj_preset("tiny", &c) == 0);
    c.audio.n_head = 3;
    CHECK(gm_synth_mmproj_write(&c, path, &err) == GM_ERR_INVALID);
    CHECK(access(path, F_OK) != 0);
}

static float first_f32(const gm_gguf *g, const char *name)
{
    const gm_gguf_tensor *t = gm_gguf_find_tensor(g, name);
    return t && t->type == GM_TYPE_F32 ? *(const float *)t->data : NAN;
}

/* The full-size E2B audio tower (Q8_0, ~330 MB, audio only): real keys and shapes, and
 * the encoder accepts it. Not encoded here (seconds of work); gemma-bench times that. */
static void synth_e2b(void)
{
    char path[128];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!synth_write("e2b", GM_TYPE_Q8_0, true, false, path, sizeof path))
        return;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("synthetic E2B audio tower (Q8_0) written in %.2f s\n",
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    gm_error err = { 0 };
    gm_gguf *g = gm_gguf_open(path, &err);
    CHECKF(g != NULL, "%s", err.msg);
    if (g) {
        static const struct { const char *key; uint32_t v; } keys[] = {
            { "clip.audio.embedding_length", 1024 }, { "clip.audio.block_count", 12 },
            { "clip.audio.attention.head_count", 8 }, { "clip.audio.feed_forward_length", 4096 },
            { "clip.audio.projection_dim", 1536 }, { "clip.audio.num_mel_bins", 128 },
        };
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            uint32_t v = 0;
            CHECKF(gm_gguf_get_u32(g, keys[i].key, &v, &err) == GM_OK && v == keys[i].v, "%s = %u", keys[i].key,
                   v);
        }
        char *s = NULL;
        CHECK(gm_gguf_get_str(g, "clip.audio.projector_type", &s, &err) == GM_OK && strcmp(s, "gemma4a") == 0);
        free(s);
        const gm_type Q = GM_TYPE_Q8_0, F = GM_TYPE_F32;
        gm_test_check_shape(g, "a.conv1d.0.weight", F, 3, 3, 1, 128);
        gm_test_check_shape(g, "a.conv1d.0.norm.weight", F, 128, 1, 1, 1);
        gm_test_check_shape(g, "a.conv1d.1.weight", F, 3, 3, 128, 32);
        gm_test_check_shape(g, "a.conv1d.1.norm.weight", F, 32, 1, 1, 1);
        gm_test_check_shape(g, "a.input_projection.weight", Q, 1024, 1024, 1, 1);
        gm_test_check_shape(g, "a.blk.11.ffn_up.weight", Q, 1024, 4096, 1, 1);
        gm_test_check_shape(g, "a.blk.11.ffn_down.weight", Q, 4096, 1024, 1, 1);
        gm_test_check_shape(g, "a.blk.11.ffn_up_1.weight", Q, 1024, 4096, 1, 1);
        gm_test_check_shape(g, "a.blk.11.ffn_down_1.weight", Q, 4096, 1024, 1, 1);
        gm_test_check_shape(g, "a.blk.5.attn_q.weight", Q, 1024, 1024, 1, 1);
        gm_test_check_shape(g, "a.blk.5.attn_out.weight", Q, 1024, 1024, 1, 1);
        gm_test_check_shape(g, "a.blk.5.attn_k_rel.weight", Q, 1024, 1024, 1, 1);
        gm_test_check_shape(g, "a.blk.5.conv_pw1.weight", Q, 1024, 2048, 1, 1);
        gm_test_check_shape(g, "a.blk.5.conv_pw2.weight", Q, 1024, 1024, 1, 1);
        gm_test_check_shape(g, "a.blk.5.conv_dw.weight", F, 5, 1024, 1, 1);
        gm_test_check_shape(g, "a.blk.5.per_dim_scale.weight", F, 128, 1, 1, 1);
        gm_test_check_shape(g, "a.blk.0.norm_conv.weight", F, 1024, 1, 1, 1);
        gm_test_check_shape(g, "a.blk.0.ln2.weight", F, 1024, 1, 1, 1);
        gm_test_check_shape(g, "a.blk.7.conv_pw2.output_max", F, 1, 1, 1, 1);
        gm_test_check_shape(g, "a.pre_encode.out.weight", Q, 1024, 1536, 1, 1);
        gm_test_check_shape(g, "a.pre_encode.out.bias", F, 1536, 1, 1, 1);
        gm_test_check_shape(g, "mm.a.input_projection.weight", Q, 1536, 1536, 1, 1);
        CHECK(gm_gguf_find_tensor(g, "a.blk.12.ln2.weight") == NULL);
        CHECK(gm_gguf_find_tensor(g, "v.blk.0.ln1.weight") == NULL);
        CHECK(gm_gguf_find_tensor(g, "mm.a.soft_emb_norm.weight") == NULL);
        /* 4 conv + input_projection + 12 × (9 norms + 10 linears × (weight + 4 clamps) +
         * attn_k_rel + per_dim_scale + conv_dw) + output_proj, bias, projection */
        CHECK_EQ_INT(g->n_tensors, 5 + 12 * (9 + 10 * 5 + 3) + 3);
        /* Clamp bounds finite, two-sided and a few units wide; per_dim_scale positive
         * and near softplus(0) = ln 2. */
        for (int il = 0; il < 12; il += 11) {
            char lo[64], hi[64];
            snprintf(lo, sizeof lo, "a.blk.%d.ffn_down_1.input_min", il);
            snprintf(hi, sizeof hi, "a.blk.%d.ffn_down_1.input_max", il);
            float a = first_f32(g, lo), b = first_f32(g, hi);
            CHECKF(a > -6 && a < -1 && b > 1 && b < 6, "%s clamp [%g, %g]", lo, a, b);
            snprintf(lo, sizeof lo, "a.blk.%d.attn_q.output_min", il);
            snprintf(hi, sizeof hi, "a.blk.%d.attn_q.output_max", il);
            a = first_f32(g, lo);
            b = first_f32(g, hi);
            CHECKF(a > -6 && a < -1 && b > 1 && b < 6, "%s clamp [%g, %g]", lo, a, b);
        }
        const gm_gguf_tensor *pds = gm_gguf_find_tensor(g, "a.blk.3.per_dim_scale.weight");
        if (pds && pds->type == GM_TYPE_F32) {
            float lo = 1e9f, hi = -1e9f;
            for (int i = 0; i < 128; i++) {
                float v = ((const float *)pds->data)[i];
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
            CHECKF(lo > 0.05f && hi < 2.0f && hi - lo > 0.1f, "per_dim_scale in [%g, %g]", lo, hi);
        }
        gm_gguf_close(g);
    }
    gm_audio_model *m = gm_audio_model_load(path, &err);
    CHECKF(m != NULL, "load: %s", err.msg);
    if (m) {
        CHECK_EQ_INT(gm_audio_model_hidden(m), 1024);
        CHECK_EQ_INT(gm_audio_model_projection_dim(m), 1536);
    }
    gm_audio_model_free(m);
    unlink(path);
    /* E4B: the same tower, projected to 2560. */
    gm_synth_mmproj_config c;
    CHECK(gm_synth_mmproj_preset("e4b", &c) == 0 && c.audio.n_embd == 1024 && c.audio.out_dim == 1536 &&
          c.proj_dim == 2560 && c.audio.sub_channels[1] == 32);
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

    snprintf(tmpdir, sizeof tmpdir, "/tmp/test-audio-encoder-XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
    synth_tiny();
    /* Writing does not depend on the ISA: the lower-ISA reruns skip the 330 MB file. */
    if (!getenv("GEMMAD_ISA"))
        synth_e2b();
    rmdir(tmpdir);

    free(features);
    free(ref);
    int rc = gm_test_finish();
    if (!getenv("GEMMAD_ISA") && gm_test_rerun_lower_isas("test-audio-encoder", argv))
        rc = 1;
    return rc;
}
