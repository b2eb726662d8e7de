/* test-image-preprocess.c — Gemma4ImageProcessor target sizes, the uint8 antialiased
 * bicubic resize against slow references written here, rescale and patch order. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test-util.h"
#include "vision/image-preprocess.h"

static void check_target(uint32_t w, uint32_t h, int budget, uint32_t ew, uint32_t eh)
{
    uint32_t tw = 0, th = 0;
    gm_error err = { 0 };
    int rc = gm_image_target_size(w, h, budget, &tw, &th, &err);
    CHECKF(rc == 0, "%ux%u budget %d: %s", w, h, budget, err.msg);
    CHECKF(tw == ew && th == eh, "%ux%u budget %d: got %ux%u, want %ux%u", w, h, budget, tw, th,
           ew, eh);
}

static void test_target_sizes(void)
{
    /* gemma4-model.md §4.1's examples. */
    check_target(768, 768, 280, 768, 768);     /* 16×16 cells: 256 tokens */
    check_target(1024, 768, 280, 912, 672);    /* 19×14: 266 tokens */
    /* 768×768 at every budget: factor = sqrt(budget·9·256 / 768²), floor to 48. */
    check_target(768, 768, 70, 384, 384);
    check_target(768, 768, 140, 528, 528);
    check_target(768, 768, 560, 1104, 1104);
    check_target(768, 768, 1120, 1584, 1584);
    /* Upscaling: a single pixel becomes the largest square the budget allows. */
    check_target(1, 1, 280, 768, 768);
    /* Extreme aspect ratios (long/short > budget): the short side rounds to 0 → 48, the
     * long side min(floor(long/short)·48, budget·48) — always the cap, then. */
    check_target(10000, 10, 280, 13440, 48);
    check_target(10, 10000, 280, 48, 13440);
    check_target(300, 1, 280, 13440, 48);
    check_target(1, 100, 70, 48, 3360);
    check_target(5000, 2, 70, 3360, 48);
    check_target(2, 5000, 1120, 48, 53760);
    /* At the threshold (long/short = budget) the ordinary path gives the same. */
    check_target(280, 1, 280, 13440, 48);   /* ideal exactly 13440×48 */

    /* Every budget over many shapes: multiples of 48, within the patch budget, and not
     * improvable by one more row or column of 48 while keeping below the ideal size. */
    static const int budgets[] = { 70, 140, 280, 560, 1120 };
    for (size_t b = 0; b < 5; b++) {
        for (uint32_t w = 7; w < 5000; w = w * 3 / 2 + 5) {
            for (uint32_t h = 5; h < 5000; h = h * 5 / 3 + 3) {
                uint32_t tw = 0, th = 0;
                int rc = gm_image_target_size(w, h, budgets[b], &tw, &th, NULL);
                CHECKF(rc == 0, "%ux%u budget %d", w, h, budgets[b]);
                CHECKF(tw % 48 == 0 && th % 48 == 0 && tw > 0 && th > 0, "%ux%u -> %ux%u", w, h,
                       tw, th);
                CHECKF((uint64_t)(tw / 16) * (th / 16) <= (uint64_t)budgets[b] * 9,
                       "%ux%u budget %d -> %ux%u too many patches", w, h, budgets[b], tw, th);
                double f = sqrt((double)budgets[b] * 9 * 256 / ((double)w * h));
                if (f * h >= 48 && f * w >= 48)   /* the ordinary case: floors of the ideal */
                    CHECKF(tw <= f * w && tw + 48 > f * w && th <= f * h && th + 48 > f * h,
                           "%ux%u budget %d -> %ux%u (ideal %.2fx%.2f)", w, h, budgets[b], tw,
                           th, f * w, f * h);
            }
        }
    }

    gm_error err = { 0 };
    uint32_t tw, th;
    CHECK(gm_image_target_size(768, 768, 100, &tw, &th, &err) == GM_ERR_INVALID);
    CHECK(strstr(err.msg, "100") != NULL);
    CHECK(gm_image_target_size(0, 768, 280, &tw, &th, &err) < 0);
    CHECK(gm_image_target_size(768, 0, 280, &tw, &th, &err) < 0);
    CHECK(gm_image_budget_valid(280) && gm_image_budget_valid(70) && gm_image_budget_valid(1120));
    CHECK(!gm_image_budget_valid(0) && !gm_image_budget_valid(281) && !gm_image_budget_valid(-70));
}

/* ---- slow references ---------------------------------------------------------------- */

static double keys_cubic(double x)
{
    x = fabs(x);
    if (x < 1)
        return 1.5 * x * x * x - 2.5 * x * x + 1;
    if (x < 2)
        return -0.5 * x * x * x + 2.5 * x * x - 4 * x + 2;
    return 0;
}

/* Taps of output index i along an axis (in → out): first index, count, double weights. */
static int ref_taps(uint32_t in, uint32_t out, uint32_t i, int *first, double *w)
{
    double scale = (double)in / out;
    double support = scale > 1 ? 2 * scale : 2;
    double center = scale * (i + 0.5);
    double lo = center - support + 0.5, hi = center + support + 0.5;
    int a = lo < 0 ? 0 : (int)lo;
    int b = hi > in ? (int)in : (int)hi;
    double sum = 0;
    for (int j = a; j < b; j++) {
        w[j - a] = keys_cubic((j - center + 0.5) / (scale > 1 ? scale : 1));
        sum += w[j - a];
    }
    for (int j = a; j < b; j++)
        w[j - a] /= sum;
    *first = a;
    return b - a;
}

/* Fixed-point reference, one output pixel at a time: int16 weights at the precision where
 * the largest weight of the axis still fits 15 bits, rounding offset, shift, clamp. */
static int axis_precision(uint32_t in, uint32_t out)
{
    static double w[1 << 14];
    double wmax = 0;
    int first;
    for (uint32_t i = 0; i < out; i++) {
        int n = ref_taps(in, out, i, &first, w);
        for (int j = 0; j < n; j++)
            if (w[j] > wmax)
                wmax = w[j];
    }
    int p = 0;
    while (p < 22 && (int)(0.5 + wmax * (double)(1 << (p + 1))) < 32768)
        p++;
    return p;
}

static int16_t q16(double w, int p)
{
    double v = w * (double)(1 << p);
    return (int16_t)(v < 0 ? (int)(v - 0.5) : (int)(v + 0.5));
}

static void ref_resize_fixed(const uint8_t *src, uint32_t sw, uint32_t sh, uint8_t *dst,
                             uint32_t dw, uint32_t dh)
{
    uint8_t *mid = malloc((size_t)dw * sh * 3);
    int ph = sw != dw ? axis_precision(sw, dw) : 0;
    int pv = sh != dh ? axis_precision(sh, dh) : 0;
    static double w[1 << 14];
    int first, n = 0;
    for (uint32_t y = 0; y < sh; y++)
        for (uint32_t x = 0; x < dw; x++) {
            if (sw != dw)
                n = ref_taps(sw, dw, x, &first, w);
            for (int c = 0; c < 3; c++) {
                if (sw == dw) {
                    mid[((size_t)y * dw + x) * 3 + c] = src[((size_t)y * sw + x) * 3 + c];
                    continue;
                }
                long acc = 1L << (ph - 1);
                for (int j = 0; j < n; j++)
                    acc += (long)q16(w[j], ph) * src[((size_t)y * sw + first + j) * 3 + c];
                acc >>= ph;
                mid[((size_t)y * dw + x) * 3 + c] = (uint8_t)(acc < 0 ? 0 : acc > 255 ? 255 : acc);
            }
        }
    for (uint32_t y = 0; y < dh; y++) {
        if (sh != dh)
            n = ref_taps(sh, dh, y, &first, w);
        for (uint32_t x = 0; x < dw; x++)
            for (int c = 0; c < 3; c++) {
                if (sh == dh) {
                    dst[((size_t)y * dw + x) * 3 + c] = mid[((size_t)y * dw + x) * 3 + c];
                    continue;
                }
                long acc = 1L << (pv - 1);
                for (int j = 0; j < n; j++)
                    acc += (long)q16(w[j], pv) * mid[((size_t)(first + j) * dw + x) * 3 + c];
                acc >>= pv;
                dst[((size_t)y * dw + x) * 3 + c] = (uint8_t)(acc < 0 ? 0 : acc > 255 ? 255 : acc);
            }
    }
    free(mid);
}

/* Continuous double-precision separable resize (no int16 weights, no rounding of the
 * intermediate, which is only clamped to 0…255 as the uint8 buffer clamps it). */
static void ref_resize_double(const uint8_t *src, uint32_t sw, uint32_t sh, double *dst,
                              uint32_t dw, uint32_t dh)
{
    double *mid = malloc((size_t)dw * sh * 3 * sizeof *mid);
    static double w[1 << 14];
    int first;
    for (uint32_t y = 0; y < sh; y++)
        for (uint32_t x = 0; x < dw; x++) {
            int n = ref_taps(sw, dw, x, &first, w);
            for (int c = 0; c < 3; c++) {
                double acc = 0;
                for (int j = 0; j < n; j++)
                    acc += w[j] * src[((size_t)y * sw + first + j) * 3 + c];
                mid[((size_t)y * dw + x) * 3 + c] = acc < 0 ? 0 : acc > 255 ? 255 : acc;
            }
        }
    for (uint32_t y = 0; y < dh; y++) {
        int n = ref_taps(sh, dh, y, &first, w);
        for (uint32_t x = 0; x < dw; x++)
            for (int c = 0; c < 3; c++) {
                double acc = 0;
                for (int j = 0; j < n; j++)
                    acc += w[j] * mid[((size_t)(first + j) * dw + x) * 3 + c];
                dst[((size_t)y * dw + x) * 3 + c] = acc;
            }
    }
    free(mid);
}

static uint8_t pattern(uint32_t x, uint32_t y, int c)
{
    /* Smooth gradients plus a checkerboard and a hard edge: ringing, clamping and
     * both lobes of the kernel are exercised. */
    uint32_t v = (x * 9 + y * 5 + (uint32_t)c * 60) & 255;
    if (((x / 3) + (y / 2)) % 2)
        v = 255 - v;
    if (x > 20 && x < 24)
        v = c == 1 ? 0 : 255;
    return (uint8_t)v;
}

static uint8_t *make_image(uint32_t w, uint32_t h)
{
    uint8_t *p = malloc((size_t)w * h * 3);
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                p[((size_t)y * w + x) * 3 + c] = pattern(x, y, c);
    return p;
}

static void check_resize(uint32_t sw, uint32_t sh, uint32_t dw, uint32_t dh)
{
    uint8_t *src = make_image(sw, sh);
    uint8_t *got = malloc((size_t)dw * dh * 3), *want = malloc((size_t)dw * dh * 3);
    double *cont = malloc((size_t)dw * dh * 3 * sizeof *cont);
    gm_error err = { 0 };
    int rc = gm_image_resize_bicubic_aa(src, sw, sh, got, dw, dh, &err);
    CHECKF(rc == 0, "resize %ux%u -> %ux%u: %s", sw, sh, dw, dh, err.msg);
    ref_resize_fixed(src, sw, sh, want, dw, dh);
    size_t mism = 0, n = (size_t)dw * dh * 3;
    for (size_t i = 0; i < n; i++)
        mism += got[i] != want[i];
    CHECKF(mism == 0, "resize %ux%u -> %ux%u: %zu of %zu values differ from the fixed-point "
           "reference", sw, sh, dw, dh, mism, n);

    ref_resize_double(src, sw, sh, cont, dw, dh);
    double maxd = 0, sumd = 0;
    for (size_t i = 0; i < n; i++) {
        double c = cont[i] < 0 ? 0 : cont[i] > 255 ? 255 : cont[i];
        double d = fabs(c - got[i]);
        maxd = d > maxd ? d : maxd;
        sumd += d;
    }
    /* Fixed point and the uint8 intermediate cost at most a couple of levels. */
    CHECKF(maxd <= 2.0 && sumd / n < 0.6, "resize %ux%u -> %ux%u: max |diff| %.3f, mean %.3f "
           "against the continuous reference", sw, sh, dw, dh, maxd, sumd / n);
    free(src);
    free(got);
    free(want);
    free(cont);
}

static void test_resize(void)
{
    check_resize(37, 29, 16, 11);     /* downscale, fractional factors */
    check_resize(96, 96, 48, 48);     /* exact 2× */
    check_resize(200, 30, 48, 29);    /* 4.17× wide, nearly identity tall */
    check_resize(29, 7, 64, 20);      /* upscale both */
    check_resize(100, 3, 33, 3);      /* horizontal only */
    check_resize(3, 100, 3, 48);      /* vertical only */
    check_resize(5, 40, 48, 13);      /* up one way, down the other */
    check_resize(1, 1, 48, 48);       /* a single pixel */
    /* Extreme strips, as gm_image_target_size gives them at budget 70: a tall one (the
     * vertical pass reads a ring of 359 horizontally resized rows) and a wide one whose
     * horizontal weights (3360 × 1431) are too many to tabulate and are recomputed. */
    check_resize(1, 300000, 48, 3360);
    check_resize(1200000, 1, 3360, 48);

    /* Identity copies; a constant image stays constant whatever the factors. */
    uint8_t *src = make_image(48, 32), *dst = malloc(48 * 32 * 3);
    CHECK(gm_image_resize_bicubic_aa(src, 48, 32, dst, 48, 32, NULL) == 0);
    CHECK(memcmp(src, dst, 48 * 32 * 3) == 0);
    free(src);
    free(dst);
    static const uint32_t sizes[][4] = {
        { 50, 50, 48, 48 }, { 333, 17, 96, 48 }, { 13, 9, 144, 96 }, { 1000, 700, 48, 96 },
    };
    for (size_t s = 0; s < 4; s++) {
        uint32_t sw = sizes[s][0], sh = sizes[s][1], dw = sizes[s][2], dh = sizes[s][3];
        for (int v = 0; v <= 255; v += 51) {
            uint8_t *c = malloc((size_t)sw * sh * 3), *o = malloc((size_t)dw * dh * 3);
            memset(c, v, (size_t)sw * sh * 3);
            CHECK(gm_image_resize_bicubic_aa(c, sw, sh, o, dw, dh, NULL) == 0);
            size_t bad = 0;
            for (size_t i = 0; i < (size_t)dw * dh * 3; i++)
                bad += o[i] != v;
            CHECKF(bad == 0, "constant %d, %ux%u -> %ux%u: %zu values changed", v, sw, sh, dw,
                   dh, bad);
            free(c);
            free(o);
        }
    }
    gm_error err = { 0 };
    uint8_t px[3] = { 1, 2, 3 }, out[3];
    CHECK(gm_image_resize_bicubic_aa(px, 1, 1, out, 0, 1, &err) == GM_ERR_INVALID);
}

static void test_patches(void)
{
    /* 912×672 is its own target at 280: no resize, so every value is known exactly. */
    gm_image img = { .width = 912, .height = 672 };
    img.rgb = make_image(img.width, img.height);
    gm_image_patches p;
    gm_error err = { 0 };
    int rc = gm_image_preprocess(&img, 280, &p, &err);
    CHECKF(rc == 0, "%s", err.msg);
    CHECK_EQ_INT(p.grid_w, 57);
    CHECK_EQ_INT(p.grid_h, 42);
    CHECK_EQ_INT(p.n_patches, 57 * 42);
    CHECK_EQ_INT(p.n_soft_tokens, 266);
    const float s = (float)(1.0 / 255.0);
    size_t bad = 0, badpos = 0;
    for (uint32_t i = 0; i < p.n_patches; i++) {
        uint32_t px = i % 57, py = i / 57;
        badpos += p.pos[2 * i] != (int32_t)px || p.pos[2 * i + 1] != (int32_t)py;
        for (uint32_t r = 0; r < 16; r++)
            for (uint32_t c = 0; c < 16; c++)
                for (int ch = 0; ch < 3; ch++) {
                    float v = p.values[(size_t)i * 768 + (r * 16 + c) * 3 + (uint32_t)ch];
                    float want = (float)pattern(px * 16 + c, py * 16 + r, ch) * s;
                    bad += memcmp(&v, &want, sizeof v) != 0;
                }
    }
    CHECKF(bad == 0, "%zu patch values differ", bad);
    CHECKF(badpos == 0, "%zu positions differ", badpos);
    float mn = 2, mx = -1;
    for (size_t i = 0; i < (size_t)p.n_patches * 768; i++) {
        mn = p.values[i] < mn ? p.values[i] : mn;
        mx = p.values[i] > mx ? p.values[i] : mx;
    }
    CHECK(mn == 0.0f && mx == 1.0f);
    gm_image_patches_free(&p);
    CHECK(p.values == NULL && p.pos == NULL);
    free(img.rgb);

    /* 1024×768 is resized to 912×672: the patches are the resized pixels. */
    img.width = 1024;
    img.height = 768;
    img.rgb = make_image(img.width, img.height);
    uint8_t *rs = malloc(912 * 672 * 3);
    CHECK(gm_image_resize_bicubic_aa(img.rgb, 1024, 768, rs, 912, 672, NULL) == 0);
    CHECK(gm_image_preprocess(&img, 280, &p, &err) == 0);
    CHECK_EQ_INT(p.grid_w, 57);
    CHECK_EQ_INT(p.grid_h, 42);
    bad = 0;
    for (uint32_t i = 0; i < p.n_patches; i++) {
        uint32_t px = i % 57, py = i / 57;
        for (uint32_t r = 0; r < 16; r++)
            for (uint32_t c = 0; c < 48; c++) {
                uint8_t u = rs[((size_t)(py * 16 + r) * 912 + px * 16) * 3 + c];
                bad += p.values[(size_t)i * 768 + r * 48 + c] != (float)u * s;
            }
    }
    CHECKF(bad == 0, "%zu resized patch values differ", bad);
    gm_image_patches_free(&p);
    free(rs);

    /* Budget 70 on the same image: 432×336 → 27×21 patches, 9·7 = 63 tokens. */
    CHECK(gm_image_preprocess(&img, 70, &p, &err) == 0);
    CHECK_EQ_INT(p.grid_w, 27);
    CHECK_EQ_INT(p.grid_h, 21);
    CHECK_EQ_INT(p.n_soft_tokens, 63);
    gm_image_patches_free(&p);
    CHECK(gm_image_preprocess(&img, 71, &p, &err) == GM_ERR_INVALID);
    CHECK(p.values == NULL);
    free(img.rgb);
}

/* ---- conformance against transformers 5.17.0 (tests/conformance/vision) ---------------- */

/* The fixture images' pixels (generate_vision.py pixel()): gradients, hard edges, noise. */
static uint8_t fixture_pixel(uint32_t x, uint32_t y, uint32_t c)
{
    uint32_t block = ((x / 7) + (y / 5)) % 4;
    if (block == 0) {
        uint32_t h = (x * 73856093u) ^ (y * 19349663u) ^ ((c + 1) * 83492791u);
        h = (h ^ (h >> 13)) * 1274126177u;
        return (uint8_t)((h >> 16) & 255);
    }
    if (block == 1)
        return ((c == 0) == ((x + y) % 2 == 0)) ? 255 : 0;
    return (uint8_t)((x * 3 + y * 2 + c * 85) & 255);
}


static void test_conformance(void)
{
    const char *dir = getenv("GEMMAD_CONFORMANCE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/vision/cases.txt", dir ? dir : "tests/conformance");
    FILE *f = fopen(path, "r");
    CHECKF(f != NULL, "cannot open %s", path);
    if (!f)
        return;
    char line[256];
    int cases = 0;
    while (fgets(line, sizeof line, f)) {
        char name[128];
        unsigned w, h, gw, gh, nst;
        unsigned long long digest = 0;
        int budget;
        if (line[0] == '#' || sscanf(line, "%127s %u %u %d %u %u %u %llx", name, &w, &h, &budget,
                                     &gw, &gh, &nst, &digest) != 8)
            continue;
        cases++;
        gm_image img = { .width = w, .height = h, .rgb = malloc((size_t)w * h * 3) };
        for (uint32_t y = 0; y < h; y++)
            for (uint32_t x = 0; x < w; x++)
                for (uint32_t c = 0; c < 3; c++)
                    img.rgb[((size_t)y * w + x) * 3 + c] = fixture_pixel(x, y, c);

        /* The committed PNG decodes to exactly these pixels (the generator checked the
         * same under PIL), so file → patches matches the reference end to end. */
        size_t flen = 0;
        snprintf(path, sizeof path, "%s/vision/%s.png", dir ? dir : "tests/conformance", name);
        /* The large sources are not committed (the generator checked them against the
         * formula too); the small ones are. */
        uint8_t *png = access(path, F_OK) == 0 || (uint64_t)w * h < 100000
                           ? gm_test_read_file(path, &flen) : NULL;
        CHECKF(png != NULL || (uint64_t)w * h >= 100000, "cannot read %s", path);
        if (png) {
            gm_image dec = { 0 };
            gm_error derr = { 0 };
            int drc = gm_image_decode(png, flen, NULL, &dec, &derr);
            CHECKF(drc == 0, "%s: %s", path, derr.msg);
            CHECKF(drc != 0 || (dec.width == w && dec.height == h &&
                                memcmp(dec.rgb, img.rgb, (size_t)w * h * 3) == 0),
                   "%s: decoded pixels differ from the fixture formula", path);
            gm_image_free(&dec);
            free(png);
        }
        gm_image_patches p;
        gm_error err = { 0 };
        int rc = gm_image_preprocess(&img, budget, &p, &err);
        CHECKF(rc == 0, "%s: %s", name, err.msg);
        free(img.rgb);
        if (rc < 0)
            continue;
        CHECKF(p.grid_w == gw && p.grid_h == gh && p.n_soft_tokens == nst,
               "%s: grid %ux%u (%u tokens), reference %ux%u (%u)", name, p.grid_w, p.grid_h,
               p.n_soft_tokens, gw, gh, nst);
        if (p.grid_w != gw || p.grid_h != gh) {
            gm_image_patches_free(&p);
            continue;
        }
        /* Every case: FNV-1a 64 over the u8 patch values, then the positions (int32 LE). */
        uint64_t hsh = 0xcbf29ce484222325ull;
        for (size_t i = 0; i < (size_t)p.n_patches * 768; i++) {
            long q = lrintf(p.values[i] * 255.0f);
            hsh = (hsh ^ (uint8_t)q) * 0x100000001b3ull;
        }
        for (size_t i = 0; i < (size_t)p.n_patches * 2; i++) {
            uint32_t v = (uint32_t)p.pos[i];
            for (int b = 0; b < 4; b++)
                hsh = (hsh ^ ((v >> (8 * b)) & 0xff)) * 0x100000001b3ull;
        }
        CHECKF(hsh == digest, "%s: patch digest %016llx, reference %016llx", name,
               (unsigned long long)hsh, digest);
        snprintf(path, sizeof path, "%s/vision/%s-patches.u8", dir ? dir : "tests/conformance",
                 name);
        if (access(path, F_OK) != 0) {  /* digest-only case */
            gm_image_patches_free(&p);
            continue;
        }

        size_t ulen = 0, plen = 0;
        snprintf(path, sizeof path, "%s/vision/%s-patches.u8", dir ? dir : "tests/conformance",
                 name);
        uint8_t *ref = gm_test_read_file(path, &ulen);
        snprintf(path, sizeof path, "%s/vision/%s-pos.i32", dir ? dir : "tests/conformance",
                 name);
        int32_t *rpos = gm_test_read_file(path, &plen);
        CHECKF(ref && ulen == (size_t)p.n_patches * 768, "%s: patches file %zu bytes", name,
               ulen);
        CHECKF(rpos && plen == (size_t)p.n_patches * 8, "%s: positions file %zu bytes", name,
               plen);
        if (ref && rpos && ulen == (size_t)p.n_patches * 768 && plen == (size_t)p.n_patches * 8) {
            /* The reference values are exactly u8 · float32(1/255) (the generator checked
             * that), so the comparison is exact: bit-identical pixels. */
            const float s = (float)(1.0 / 255.0);
            size_t bad = 0, first = (size_t)-1;
            double maxd = 0;
            for (size_t i = 0; i < ulen; i++) {
                float want = (float)ref[i] * s;
                if (memcmp(&want, &p.values[i], sizeof want) != 0) {
                    if (!bad)
                        first = i;
                    bad++;
                    double d = fabs((double)p.values[i] - want) * 255.0;
                    maxd = d > maxd ? d : maxd;
                }
            }
            CHECKF(bad == 0, "%s: %zu of %zu values differ (first at patch %zu value %zu; max "
                   "%.1f levels)", name, bad, ulen, first / 768, first % 768, maxd);
            size_t badpos = 0;
            for (size_t i = 0; i < (size_t)p.n_patches * 2; i++)
                badpos += rpos[i] != p.pos[i];
            CHECKF(badpos == 0, "%s: %zu position values differ", name, badpos);
        }
        free(ref);
        free(rpos);
        gm_image_patches_free(&p);
    }
    fclose(f);
    CHECKF(cases >= 5, "only %d conformance cases in cases.txt", cases);
}

int main(void)
{
    test_target_sizes();
    test_resize();
    test_patches();
    test_conformance();
    return gm_test_finish();
}
