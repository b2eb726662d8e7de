/* test-vision-encoder.c — the gemma4v encoder against transformers 5.17.0
 * (tests/conformance/vision-tower: soft tokens and every checkpoint, both cases, both
 * images), plus load errors on broken files and bad patch input; and the synthetic
 * mmproj writer (tools/synth-model.h): tiny towers in every matrix type load, encode an
 * image to finite unit-size soft tokens and agree with the F32 tower, the full-size E2B
 * file has the real shapes. */
#define GM_TEST_RERUN_ISAS
#include "test-util.h"

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "core/gguf.h"
#include "core/pool.h"
#include "core/quant.h"
#include "tools/synth-model.h"
#include "vision/image-preprocess.h"
#include "vision/vision-encoder.h"

/* Fixture layout (tests/conformance/vision-tower/meta.json): two images concatenated. */
#define N_IMG 2
#define PATCH_VALS 768
static const uint32_t grid[N_IMG][2] = { { 9, 6 }, { 6, 12 } };
static const uint32_t patch_row0[N_IMG] = { 0, 54 };
static const uint32_t token_row0[N_IMG] = { 0, 6 };
#define N_PATCH 126
#define N_TOK 14
#define TEXT_W 64
#define TOL 1e-3

static float *inputs;       /* patches [126][768] then positions i32 [126][2] */
static const int32_t *positions;

static void image_patches(int im, gm_image_patches *p)
{
    p->grid_w = grid[im][0];
    p->grid_h = grid[im][1];
    p->n_patches = p->grid_w * p->grid_h;
    p->n_soft_tokens = (p->grid_w / 3) * (p->grid_h / 3);
    p->values = inputs + (size_t)patch_row0[im] * PATCH_VALS;
    p->pos = (int32_t *)positions + (size_t)patch_row0[im] * 2;
}

static void run_case(const char *name, gm_pool *pool)
{
    char path[4096];
    gm_error err = { 0 };
    snprintf(path, sizeof path, "%s/vision-tower/%s.gguf", gm_test_conformance_dir(), name);
    gm_vision_model *m = gm_vision_model_load(path, &err);
    CHECKF(m != NULL, "load %s: %s", path, err.msg);
    if (!m)
        return;
    CHECK_EQ_INT(gm_vision_model_projection_dim(m), TEXT_W);
    const size_t H = gm_vision_model_hidden(m);

    snprintf(path, sizeof path, "%s/vision-tower/%s.bin", gm_test_conformance_dir(), name);
    size_t len = 0;
    float *ref = gm_test_read_file(path, &len);
    /* soft_tokens, vision_out, pooled [14 rows], encoder_out, layer0, patch_embd [126 rows] */
    const size_t want = (N_TOK * TEXT_W + 2 * N_TOK * H + 3 * N_PATCH * H) * sizeof(float);
    CHECKF(ref && len == want, "%s: %zu bytes, expected %zu", path, len, want);
    if (!ref || len != want) {
        free(ref);
        gm_vision_model_free(m);
        return;
    }
    const float *r_soft = ref, *r_vis = r_soft + N_TOK * TEXT_W, *r_pool = r_vis + N_TOK * H;
    const float *r_enc = r_pool + N_TOK * H, *r_l0 = r_enc + N_PATCH * H, *r_pe = r_l0 + N_PATCH * H;

    float *soft = calloc(N_TOK * TEXT_W, sizeof(float));
    float *vis = calloc(N_TOK * H, sizeof(float)), *pooled = calloc(N_TOK * H, sizeof(float));
    float *enc = calloc(N_PATCH * H, sizeof(float)), *l0 = calloc(N_PATCH * H, sizeof(float));
    float *pe = calloc(N_PATCH * H, sizeof(float));
    for (int im = 0; im < N_IMG; im++) {
        gm_image_patches p;
        image_patches(im, &p);
        gm_vision_checkpoints ck = {
            .patch_embd = pe + patch_row0[im] * H, .layer0 = l0 + patch_row0[im] * H,
            .encoder_out = enc + patch_row0[im] * H, .pooled = pooled + token_row0[im] * H,
            .vision_out = vis + token_row0[im] * H,
        };
        int rc = gm_vision_encode_checkpoints(m, pool, &p, soft + token_row0[im] * TEXT_W, &ck, &err);
        CHECKF(rc == GM_OK, "%s image %d: %s", name, im, err.msg);
    }
    struct { const char *what; const float *got, *want; size_t n; } cmp[] = {
        { "patch_embd", pe, r_pe, N_PATCH * H }, { "layer0", l0, r_l0, N_PATCH * H },
        { "encoder_out", enc, r_enc, N_PATCH * H }, { "pooled", pooled, r_pool, N_TOK * H },
        { "vision_out", vis, r_vis, N_TOK * H }, { "soft_tokens", soft, r_soft, N_TOK * TEXT_W },
    };
    for (size_t i = 0; i < sizeof cmp / sizeof cmp[0]; i++) {
        double e = gm_test_rel_frobenius(cmp[i].got, cmp[i].want, cmp[i].n);
        printf("%s %s%s: rel frobenius %.3g\n", name, cmp[i].what, pool ? " (pool)" : "", e);
        CHECKF(e <= TOL, "%s %s: rel frobenius %.3g > %g", name, cmp[i].what, e, TOL);
    }
    /* The plain entry point gives the same soft tokens. */
    gm_image_patches p;
    image_patches(1, &p);
    float *again = calloc(8 * TEXT_W, sizeof(float));
    CHECK(gm_vision_encode(m, pool, &p, again, &err) == GM_OK);
    CHECK(gm_test_rel_frobenius(again, soft + 6 * TEXT_W, 8 * TEXT_W) == 0.0);
    free(again);
    free(soft);
    free(vis);
    free(pooled);
    free(enc);
    free(l0);
    free(pe);
    free(ref);
    gm_vision_model_free(m);
}

/* Copies the e-clipped file, leaving out tensor `drop` or giving tensor `reshape` one
 * fewer element in ne[0]; loading must fail with a message naming that tensor. */
static void broken_file(const char *drop, const char *reshape, const char *expect)
{
    char src[4096], dst[4096];
    gm_error err = { 0 };
    snprintf(src, sizeof src, "%s/vision-tower/e-clipped.gguf", gm_test_conformance_dir());
    snprintf(dst, sizeof dst, "/tmp/test-vision-encoder-%d.gguf", (int)getpid());
    gm_gguf *g = gm_gguf_open(src, &err);
    CHECKF(g != NULL, "%s", err.msg);
    if (!g)
        return;
    gm_gguf_writer *w = gm_gguf_writer_new();
    for (uint64_t i = 0; i < g->n_kv; i++)
        gm_gguf_add_kv_from(w, g, &g->kv[i]);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gm_gguf_tensor *t = &g->tensors[i];
        if (drop && strcmp(t->name, drop) == 0)
            continue;
        int64_t ne[GM_GGUF_MAX_DIMS];
        memcpy(ne, t->ne, sizeof ne);
        if (reshape && strcmp(t->name, reshape) == 0)
            ne[0] -= 1; /* the data is larger than needed; only the shape matters */
        CHECK(gm_gguf_add_tensor(w, t->name, t->type, t->n_dims, ne, t->data, &err) == GM_OK);
    }
    CHECKF(gm_gguf_writer_write(w, dst, &err) == GM_OK, "%s", err.msg);
    gm_gguf_writer_free(w);
    gm_gguf_close(g);
    gm_error_clear(&err);
    gm_vision_model *m = gm_vision_model_load(dst, &err);
    CHECKF(m == NULL, "loading without/with reshaped %s succeeded", drop ? drop : reshape);
    CHECKF(err.code != GM_OK && strstr(err.msg, expect) && strstr(err.msg, dst),
           "error does not name %s and the file: %s", expect, err.msg);
    gm_vision_model_free(m);
    unlink(dst);
}

/* The same model with its 2-D weight matrices as mtype (the patch kernel as F16) and every
 * vector/table as BF16 (the fixture's values are bf16-representable, so BF16 is exact and
 * F16 loses only a few subnormals): the loader's conversions and gm_matmul's kernels for
 * those types must give the F32 file's soft tokens within tol. */
static void converted_copy(gm_type mtype, double tol)
{
    char src[4096], dst[4096];
    gm_error err = { 0 };
    snprintf(src, sizeof src, "%s/vision-tower/e-clipped.gguf", gm_test_conformance_dir());
    snprintf(dst, sizeof dst, "/tmp/test-vision-encoder-half-%d.gguf", (int)getpid());
    gm_gguf *g = gm_gguf_open(src, &err);
    CHECKF(g != NULL, "%s", err.msg);
    if (!g)
        return;
    gm_gguf_writer *w = gm_gguf_writer_new();
    for (uint64_t i = 0; i < g->n_kv; i++)
        gm_gguf_add_kv_from(w, g, &g->kv[i]);
    int n_half = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gm_gguf_tensor *t = &g->tensors[i];
        int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        const float *f = t->data;
        if (t->type != GM_TYPE_F32 || n == 1) { /* clamp scalars stay F32 */
            CHECK(gm_gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, &err) == GM_OK);
            continue;
        }
        bool matrix = t->n_dims >= 2 && strcmp(t->name, "v.position_embd.weight") != 0;
        /* Block types need whole blocks per row: the 4-D patch kernel stays F16. */
        gm_type type = !matrix ? GM_TYPE_BF16 : (t->n_dims == 2 ? mtype : GM_TYPE_F16);
        void *h = malloc(gm_row_size(type, t->ne[0]) * (size_t)(n / t->ne[0]));
        if (type == GM_TYPE_BF16 || type == GM_TYPE_F16) {
            uint16_t *u = h;
            for (int64_t j = 0; j < n; j++)
                u[j] = type == GM_TYPE_F16 ? gm_fp32_to_fp16(f[j]) : gm_fp32_to_bf16(f[j]);
        } else {
            size_t rb = gm_row_size(type, t->ne[0]);
            for (int64_t r = 0; r < n / t->ne[0]; r++)
                CHECK(gm_quantize_row(type, f + r * t->ne[0], (char *)h + r * rb, t->ne[0]) == 0);
        }
        n_half++;
        CHECK(gm_gguf_add_tensor(w, t->name, type, t->n_dims, t->ne, h, &err) == GM_OK);
        free(h);
    }
    CHECK_EQ_INT(n_half, 29); /* 3 + 2 layers × (7 matrices + 6 vectors) */
    CHECKF(gm_gguf_writer_write(w, dst, &err) == GM_OK, "%s", err.msg);
    gm_gguf_writer_free(w);
    gm_gguf_close(g);

    gm_vision_model *a = gm_vision_model_load(src, &err);
    gm_vision_model *b = gm_vision_model_load(dst, &err);
    CHECKF(a && b, "load: %s", err.msg);
    if (a && b) {
        gm_image_patches p;
        image_patches(1, &p);
        float sa[8 * TEXT_W], sb[8 * TEXT_W];
        CHECK(gm_vision_encode(a, NULL, &p, sa, &err) == GM_OK);
        CHECK(gm_vision_encode(b, NULL, &p, sb, &err) == GM_OK);
        double e = gm_test_rel_frobenius(sb, sa, 8 * TEXT_W);
        printf("e-clipped with %s matrices vs F32: rel frobenius %.3g\n", gm_type_name(mtype), e);
        CHECKF(e <= tol, "%s copy differs by %.3g", gm_type_name(mtype), e);
    }
    gm_vision_model_free(a);
    gm_vision_model_free(b);
    unlink(dst);
}

static void bad_input(void)
{
    char path[4096];
    gm_error err = { 0 };
    snprintf(path, sizeof path, "%s/vision-tower/e-clipped.gguf", gm_test_conformance_dir());
    gm_vision_model *m = gm_vision_model_load(path, &err);
    CHECK(m != NULL);
    if (!m)
        return;
    gm_image_patches p;
    image_patches(0, &p);
    float out[6 * TEXT_W];
    int32_t pos[54 * 2];
    memcpy(pos, p.pos, sizeof pos);
    p.pos = pos;
    pos[2 * 10] = 40; /* beyond the grid and the 24-entry table */
    CHECK(gm_vision_encode(m, NULL, &p, out, &err) == GM_ERR_INVALID);
    pos[2 * 10] = 3; /* patch (1, 1) moved onto (3, 0): cell 0 short, cell 1 over */
    pos[2 * 10 + 1] = 0;
    CHECKF(gm_vision_encode(m, NULL, &p, out, &err) == GM_ERR_INVALID, "%s", err.msg);
    image_patches(0, &p);
    p.n_soft_tokens = 7;
    CHECK(gm_vision_encode(m, NULL, &p, out, &err) == GM_ERR_INVALID);
    gm_vision_model_free(m);
}


/* ---- synthetic mmproj (tools/synth-model.h) ---------------------------------------- */

static char tmpdir[64];

/* A 144×96 picture with structure at several scales (gradients, a disc, stripes). */
static void synth_image(gm_image *img)
{
    img->width = 144;
    img->height = 96;
    img->rgb = malloc((size_t)img->width * img->height * 3);
    for (uint32_t y = 0; y < img->height; y++)
        for (uint32_t x = 0; x < img->width; x++) {
            uint8_t *px = img->rgb + ((size_t)y * img->width + x) * 3;
            int dx = (int)x - 50, dy = (int)y - 40;
            px[0] = (uint8_t)(x * 255 / img->width);
            px[1] = dx * dx + dy * dy < 900 ? 230 : (uint8_t)(y * 2);
            px[2] = ((x / 8 + y / 12) % 2) ? 200 : 30;
        }
}

/* Writes the tiny preset in type t (seed 1) and encodes the image's patches into out
 * (n_soft_tokens × proj_dim); false on any failure (already reported). */
static bool tiny_encode(gm_type t, bool standardize, bool clipped, const gm_image_patches *p, float *out,
                        uint32_t *proj)
{
    gm_synth_mmproj_config c;
    CHECK(gm_synth_mmproj_preset("tiny", &c) == 0);
    c.wtype = t;
    c.standardize = standardize;
    c.clipped = clipped;
    c.n_threads = 1;
    char path[128];
    snprintf(path, sizeof path, "%s/tiny-%s%s%s.gguf", tmpdir, gm_type_name(t), standardize ? "-std" : "",
             clipped ? "" : "-noclip");
    gm_error err = { 0 };
    int rc = gm_synth_mmproj_write(&c, path, &err);
    CHECKF(rc == GM_OK, "write %s: %s", path, err.msg);
    if (rc != GM_OK)
        return false;
    gm_vision_model *m = gm_vision_model_load(path, &err);
    CHECKF(m != NULL, "load %s: %s", path, err.msg);
    if (!m)
        return false;
    CHECK_EQ_INT(gm_vision_model_hidden(m), 64);
    CHECK_EQ_INT(gm_vision_model_projection_dim(m), 64);
    *proj = gm_vision_model_projection_dim(m);
    gm_pool *pool = gm_pool_create(2);
    rc = gm_vision_encode(m, pool, p, out, &err);
    CHECKF(rc == GM_OK, "encode with %s: %s", path, err.msg);
    gm_pool_destroy(pool);
    gm_vision_model_free(m);
    unlink(path);
    return rc == GM_OK;
}

static void synth_tiny(void)
{
    gm_image img;
    synth_image(&img);
    gm_image_patches p = { 0 };
    gm_error err = { 0 };
    CHECKF(gm_image_preprocess(&img, 70, &p, &err) == GM_OK, "%s", err.msg);
    gm_image_free(&img);
    CHECK(p.n_soft_tokens > 1);
    const size_t n = (size_t)p.n_soft_tokens * 64;
    float *ref = malloc(n * sizeof *ref), *got = malloc(n * sizeof *got);
    uint32_t proj = 0;
    if (tiny_encode(GM_TYPE_F32, false, true, &p, ref, &proj)) {
        /* Finite, unit-size (RMSNorm then a 1/sqrt(H) projection), and differing between
         * tokens (neither saturated nor collapsed onto one vector). */
        double sq = 0, diff = 0;
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            bad += !isfinite(ref[i]);
            sq += (double)ref[i] * ref[i];
            diff += fabs((double)ref[i] - ref[i % 64]);
        }
        double rms = sqrt(sq / (double)n), mean_diff = diff / (double)(n - 64);
        printf("synthetic tiny tower: %u soft tokens × %u, rms %.4f, mean |token - token 0| %.4f\n",
               p.n_soft_tokens, proj, rms, mean_diff);
        CHECK_EQ_INT(bad, 0);
        CHECKF(rms > 0.5 && rms < 2.0, "soft-token rms %.4g", rms);
        CHECKF(mean_diff > 0.05 * rms, "soft tokens hardly differ (%.4g)", mean_diff);

        /* The other storage types hold the same seeded values, rounded. */
        static const struct { gm_type t; double tol; } types[] = {
            { GM_TYPE_F16, 3e-3 }, { GM_TYPE_BF16, 2e-2 }, { GM_TYPE_Q8_0, 5e-2 },
        };
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
            if (!tiny_encode(types[i].t, false, true, &p, got, &proj))
                continue;
            double e = gm_test_rel_frobenius(got, ref, n);
            printf("synthetic tiny tower, %s matrices vs F32: rel frobenius %.3g\n", gm_type_name(types[i].t), e);
            CHECKF(e > 0 && e <= types[i].tol, "%s: rel frobenius %.3g (tolerance %g)",
                   gm_type_name(types[i].t), e, types[i].tol);
        }
        /* The clamps bite, a little (bounds 2.5-4 std out): the same weights without
         * them give different, but not wildly different, soft tokens. */
        if (tiny_encode(GM_TYPE_F32, false, false, &p, got, &proj)) {
            double e = gm_test_rel_frobenius(got, ref, n);
            printf("synthetic tiny tower without its clamps vs with: rel frobenius %.3g\n", e);
            CHECKF(e > 1e-4 && e < 0.3, "removing the clamps changes the soft tokens by %.3g", e);
        }
        /* The standardized (26B/31B-style) variant also loads and encodes. */
        if (tiny_encode(GM_TYPE_F16, true, true, &p, got, &proj)) {
            size_t nonfinite = 0;
            for (size_t i = 0; i < n; i++)
                nonfinite += !isfinite(got[i]);
            CHECK_EQ_INT(nonfinite, 0);
            CHECKF(gm_test_rel_frobenius(got, ref, n) > 1e-2, "standardisation changed nothing");
        }
    }
    free(ref);
    free(got);
    gm_image_patches_free(&p);

    /* Presets and refusals. */
    gm_synth_mmproj_config c;
    CHECK(gm_synth_mmproj_preset("e4b", &c) == 0 && c.proj_dim == 2560 && c.n_embd == 768);
    CHECK(gm_synth_mmproj_preset("e2b", &c) == 0 && c.proj_dim == 1536 && c.n_layer == 16);
    CHECK(gm_synth_mmproj_preset("nope", &c) == -1);
    CHECK(gm_synth_mmproj_preset("tiny", &c) == 0);
    c.n_embd = 48; /* Q8_0 rows need multiples of 32 */
    c.n_head = 3;
    c.wtype = GM_TYPE_Q8_0;
    char path[128];
    snprintf(path, sizeof path, "%s/refused.gguf", tmpdir);
    CHECK(gm_synth_mmproj_write(&c, path, &err) == GM_ERR_INVALID);
    CHECK(access(path, F_OK) != 0);
}

/* The full-size E2B tower (Q8_0, ~220 MB, about a second): real shapes and keys, and the
 * encoder accepts it. Not encoded here (seconds of work); gemma-bench times that. */
static void synth_e2b(void)
{
    gm_synth_mmproj_config c;
    CHECK(gm_synth_mmproj_preset("e2b", &c) == 0);
    c.wtype = GM_TYPE_Q8_0;
    c.audio.n_embd = 0; /* the vision tower alone (test-audio-encoder checks the audio one) */
    char path[128];
    snprintf(path, sizeof path, "%s/e2b-q8_0.gguf", tmpdir);
    gm_error err = { 0 };
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = gm_synth_mmproj_write(&c, path, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECKF(rc == GM_OK, "%s", err.msg);
    if (rc != GM_OK)
        return;
    printf("synthetic E2B mmproj (Q8_0) written in %.2f s\n",
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    gm_gguf *g = gm_gguf_open(path, &err);
    CHECKF(g != NULL, "%s", err.msg);
    if (g) {
        uint32_t v = 0;
        CHECK(gm_gguf_get_u32(g, "clip.vision.embedding_length", &v, &err) == GM_OK && v == 768);
        CHECK(gm_gguf_get_u32(g, "clip.vision.block_count", &v, &err) == GM_OK && v == 16);
        CHECK(gm_gguf_get_u32(g, "clip.vision.attention.head_count", &v, &err) == GM_OK && v == 12);
        CHECK(gm_gguf_get_u32(g, "clip.vision.feed_forward_length", &v, &err) == GM_OK && v == 3072);
        CHECK(gm_gguf_get_u32(g, "clip.vision.projection_dim", &v, &err) == GM_OK && v == 1536);
        char *s = NULL;
        CHECK(gm_gguf_get_str(g, "general.architecture", &s, &err) == GM_OK && strcmp(s, "clip") == 0);
        free(s);
        gm_test_check_shape(g, "v.patch_embd.weight", GM_TYPE_F16, 16, 16, 3, 768);
        gm_test_check_shape(g, "v.position_embd.weight", GM_TYPE_F32, 768, 10240, 2, 1);
        gm_test_check_shape(g, "mm.input_projection.weight", GM_TYPE_Q8_0, 768, 1536, 1, 1);
        gm_test_check_shape(g, "v.blk.15.attn_q.weight", GM_TYPE_Q8_0, 768, 768, 1, 1);
        gm_test_check_shape(g, "v.blk.15.attn_out.weight", GM_TYPE_Q8_0, 768, 768, 1, 1);
        gm_test_check_shape(g, "v.blk.15.ffn_gate.weight", GM_TYPE_Q8_0, 768, 3072, 1, 1);
        gm_test_check_shape(g, "v.blk.15.ffn_down.weight", GM_TYPE_Q8_0, 3072, 768, 1, 1);
        gm_test_check_shape(g, "v.blk.0.attn_k_norm.weight", GM_TYPE_F32, 64, 1, 1, 1);
        gm_test_check_shape(g, "v.blk.0.ln1.weight", GM_TYPE_F32, 768, 1, 1, 1);
        gm_test_check_shape(g, "v.blk.7.ffn_down.input_max", GM_TYPE_F32, 1, 1, 1, 1);
        CHECK(gm_gguf_find_tensor(g, "v.blk.16.ln1.weight") == NULL);
        CHECK(gm_gguf_find_tensor(g, "v.std_bias") == NULL);
        /* 3 + 16 × (6 vectors + 7 linears × (weight + 4 clamps)) */
        CHECK_EQ_INT(g->n_tensors, 3 + 16 * (6 + 7 * 5));
        /* Clamp bounds are finite, two-sided and a few units wide, like the E models'. */
        const gm_gguf_tensor *lo = gm_gguf_find_tensor(g, "v.blk.3.attn_v.output_min");
        const gm_gguf_tensor *hi = gm_gguf_find_tensor(g, "v.blk.3.attn_v.output_max");
        CHECK(lo && hi);
        if (lo && hi) {
            float a = *(const float *)lo->data, b = *(const float *)hi->data;
            CHECKF(a > -6 && a < -1 && b > 1 && b < 6, "clamp [%g, %g]", a, b);
        }
        gm_gguf_close(g);
    }
    gm_vision_model *m = gm_vision_model_load(path, &err);
    CHECKF(m != NULL, "load: %s", err.msg);
    if (m) {
        CHECK_EQ_INT(gm_vision_model_hidden(m), 768);
        CHECK_EQ_INT(gm_vision_model_projection_dim(m), 1536);
    }
    gm_vision_model_free(m);
    unlink(path);
}

int main(int argc, char **argv)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/vision-tower/inputs.bin", gm_test_conformance_dir());
    size_t len = 0;
    inputs = gm_test_read_file(path, &len);
    const size_t want = (size_t)N_PATCH * PATCH_VALS * 4 + (size_t)N_PATCH * 2 * 4;
    CHECKF(inputs && len == want, "%s: %zu bytes, expected %zu", path, len, want);
    if (!inputs || len != want)
        return gm_test_finish();
    positions = (const int32_t *)(inputs + (size_t)N_PATCH * PATCH_VALS);

    run_case("e-clipped", NULL);
    run_case("large-std", NULL);
    gm_pool *pool = gm_pool_create(2);
    run_case("e-clipped", pool);
    run_case("large-std", pool);
    gm_pool_destroy(pool);

    broken_file("v.blk.1.ffn_down.weight", NULL, "v.blk.1.ffn_down.weight");
    broken_file("v.position_embd.weight", NULL, "v.position_embd.weight");
    broken_file(NULL, "v.blk.0.attn_q_norm.weight", "v.blk.0.attn_q_norm.weight");
    broken_file(NULL, "v.blk.0.attn_k.weight", "v.blk.0.attn_k.weight");
    bad_input();
    converted_copy(GM_TYPE_F16, TOL);
    converted_copy(GM_TYPE_Q8_0, 3e-2); /* activations are quantized to Q8_0 too */

    snprintf(tmpdir, sizeof tmpdir, "/tmp/test-vision-encoder-XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
    synth_tiny();
    /* Writing does not depend on the ISA: the lower-ISA reruns skip the 220 MB file. */
    if (!getenv("GEMMAD_ISA"))
        synth_e2b();
    rmdir(tmpdir);
    free(inputs);
    (void)argc;
    int rc = gm_test_finish();
    if (!getenv("GEMMAD_ISA") && gm_test_rerun_lower_isas("test-vision-encoder", argv))
        rc = 1;
    return rc;
}
