/* image-preprocess.c — Gemma4ImageProcessor of transformers 5.17.0 (gemma4-model.md §4.1).
 *
 * The reference (the default torchvision backend) resizes the uint8 CHW tensor with
 * torchvision's resize(BICUBIC, antialias=True), which on the CPU runs ATen's separable
 * uint8 antialiased kernel (the PIL-SIMD scheme): per axis, double-precision Keys cubic
 * weights (a = -0.5) over a support of 2·scale when downscaling, normalised to sum 1,
 * quantised to int16 at one precision per pass; integer accumulation with a rounding
 * offset, >> precision, clamped to 0…255. The horizontal pass runs first (only when the
 * width changes) and its uint8 result feeds the vertical pass (only when the height
 * changes). This file reimplements those numerics so the pixels match bit for bit.
 * Then x·float(1/255) in float32 (a uint8 tensor times a Python float), and patchify. */
#include "image-preprocess.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GM_POOL_K 3
#define GM_SIDE_MULT (GM_POOL_K * GM_IMAGE_PATCH)   /* 48 */

int gm_image_budget_valid(int max_soft_tokens)
{
    return max_soft_tokens == 70 || max_soft_tokens == 140 || max_soft_tokens == 280 ||
           max_soft_tokens == 560 || max_soft_tokens == 1120;
}

int gm_image_target_size(uint32_t width, uint32_t height, int max_soft_tokens,
                         uint32_t *target_width, uint32_t *target_height, gm_error *err)
{
    if (!gm_image_budget_valid(max_soft_tokens))
        return gm_set_error(err, GM_ERR_INVALID,
                            "image token budget %d is not one of 70, 140, 280, 560, 1120",
                            max_soft_tokens);
    if (width == 0 || height == 0)
        return gm_set_error(err, GM_ERR_INVALID, "image of %ux%u pixels has no area",
                            (unsigned)width, (unsigned)height);

    /* Python: factor = sqrt(target_px / total_px) in doubles, floor(factor*h / 48)*48. */
    const int64_t max_patches = (int64_t)max_soft_tokens * GM_POOL_K * GM_POOL_K;
    const int64_t target_px = max_patches * GM_IMAGE_PATCH * GM_IMAGE_PATCH;
    const double total_px = (double)((uint64_t)width * (uint64_t)height);
    const double factor = sqrt((double)target_px / total_px);
    const double ideal_h = factor * (double)height;
    const double ideal_w = factor * (double)width;
    int64_t th = (int64_t)floor(ideal_h / GM_SIDE_MULT) * GM_SIDE_MULT;
    int64_t tw = (int64_t)floor(ideal_w / GM_SIDE_MULT) * GM_SIDE_MULT;

    if (th == 0 && tw == 0)
        return gm_set_error(err, GM_ERR_INVALID,
                            "image of %ux%u pixels would be resized to 0x0 for budget %d",
                            (unsigned)width, (unsigned)height, max_soft_tokens);

    /* Extreme aspect ratios: one side gets a single 48-pixel row of patches and the
     * other floor(long/short) multiples of 48, capped at the budget's side length. */
    const int64_t max_side = (max_patches / (GM_POOL_K * GM_POOL_K)) * GM_SIDE_MULT;
    if (th == 0) {
        th = GM_SIDE_MULT;
        int64_t w = (int64_t)floor((double)width / (double)height) * GM_SIDE_MULT;
        tw = w < max_side ? w : max_side;
    } else if (tw == 0) {
        tw = GM_SIDE_MULT;
        int64_t h = (int64_t)floor((double)height / (double)width) * GM_SIDE_MULT;
        th = h < max_side ? h : max_side;
    }
    if (th * tw > target_px)
        return gm_set_error(err, GM_ERR_INVALID,
                            "resizing %ux%u to %lldx%lld exceeds %lld patches",
                            (unsigned)width, (unsigned)height, (long long)tw, (long long)th,
                            (long long)max_patches);
    if (target_width)
        *target_width = (uint32_t)tw;
    if (target_height)
        *target_height = (uint32_t)th;
    return GM_OK;
}

/* Keys cubic convolution kernel with a = -0.5, written in ATen's operation order so the
 * double weights round identically. */
static double cubic_aa_filter(double x)
{
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0)
        return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2.0)
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
    return 0.0;
}

/* One axis of the resize (in → out). Weights are produced per output index on demand, so
 * memory stays bounded for any aspect ratio (a 1×50 000 000 strip needs no table of
 * 200 M weights); the precision is fixed first from the largest normalised weight of the
 * whole axis, as the reference does. */
typedef struct resample_axis {
    uint32_t in, out;
    double scale, support, invscale;
    int ksize;            /* most taps an output index can have */
    unsigned precision;   /* fixed-point bits of the int16 weights */
    double *tmp;          /* [ksize] */
} resample_axis;

/* Normalised double weights of output i into ax->tmp; returns the tap count, *first the
 * first input index. */
static int axis_taps(const resample_axis *ax, uint32_t i, int64_t *first, int *normalised)
{
    const double center = ax->scale * ((double)i + 0.5);
    /* C truncation toward zero, as the int64 casts in the reference. */
    int64_t xmin = (int64_t)(center - ax->support + 0.5);
    if (xmin < 0)
        xmin = 0;
    int64_t xend = (int64_t)(center + ax->support + 0.5);
    if (xend > (int64_t)ax->in)
        xend = ax->in;
    int64_t xsize = xend - xmin;
    if (xsize < 0)
        xsize = 0;
    if (xsize > ax->ksize)
        xsize = ax->ksize;
    double total = 0.0;
    for (int64_t j = 0; j < xsize; j++) {
        double w = cubic_aa_filter(((double)(j + xmin) - center + 0.5) * ax->invscale);
        ax->tmp[j] = w;
        total += w;
    }
    *normalised = total != 0.0;
    if (total != 0.0)
        for (int64_t j = 0; j < xsize; j++)
            ax->tmp[j] /= total;
    *first = xmin;
    return (int)xsize;
}

/* int16 weights of output i at the axis precision into k[]; returns the tap count. */
static int axis_weights(const resample_axis *ax, uint32_t i, int16_t *k, int32_t *first)
{
    int64_t xmin;
    int norm;
    int n = axis_taps(ax, i, &xmin, &norm);
    for (int j = 0; j < n; j++) {
        double v = ax->tmp[j] * (double)(1 << ax->precision);
        k[j] = (int16_t)(v < 0 ? (int)(-0.5 + v) : (int)(0.5 + v));
    }
    *first = (int32_t)xmin;
    return n;
}

static int axis_init(resample_axis *ax, uint32_t in_size, uint32_t out_size, gm_error *err)
{
    memset(ax, 0, sizeof *ax);
    ax->in = in_size;
    ax->out = out_size;
    ax->scale = (double)in_size / (double)out_size;
    ax->support = ax->scale >= 1.0 ? 2.0 * ax->scale : 2.0;   /* interp_size 4 · 0.5 */
    ax->invscale = ax->scale >= 1.0 ? 1.0 / ax->scale : 1.0;
    ax->ksize = (int)ceil(ax->support) * 2 + 1;
    ax->tmp = malloc((size_t)ax->ksize * sizeof *ax->tmp);
    if (!ax->tmp)
        return gm_set_error(err, GM_ERR_NOMEM, "resize %u -> %u: out of memory for weights",
                            (unsigned)in_size, (unsigned)out_size);
    double wt_max = 0.0;
    for (uint32_t i = 0; i < out_size; i++) {
        int64_t xmin;
        int norm;
        int n = axis_taps(ax, i, &xmin, &norm);
        for (int j = 0; norm && j < n; j++)
            if (ax->tmp[j] > wt_max)
                wt_max = ax->tmp[j];
    }
    /* Largest precision (up to 22) at which the biggest weight still fits int16. */
    unsigned prec;
    for (prec = 0; prec < 22; prec++) {
        int next = (int)(0.5 + wt_max * (double)(1 << (prec + 1)));
        if (next >= (1 << 15))
            break;
    }
    ax->precision = prec;
    return GM_OK;
}

static void axis_free(resample_axis *ax)
{
    free(ax->tmp);
    ax->tmp = NULL;
}

static inline uint8_t clamp_u8(int32_t acc, unsigned precision)
{
    int32_t v = acc >> precision;   /* arithmetic shift, as _mm256_srai_epi32 */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Horizontal weights of every output column, kept when they are few (the usual case);
 * for very wide inputs they are recomputed per row instead of held in memory. */
#define GM_HTABLE_MAX (1u << 22)

typedef struct hpass {
    const resample_axis *ax;
    int16_t *w;        /* [out * ksize] or NULL */
    int32_t *first;    /* [out] or NULL */
    int32_t *count;
    int16_t *k;        /* [ksize] scratch when there is no table */
} hpass;

static void hpass_free(hpass *h)
{
    free(h->w);
    free(h->first);
    free(h->count);
    free(h->k);
    memset(h, 0, sizeof *h);
}

static int hpass_init(hpass *h, const resample_axis *ax, gm_error *err)
{
    memset(h, 0, sizeof *h);
    h->ax = ax;
    h->k = malloc((size_t)ax->ksize * sizeof *h->k);
    if (!h->k)
        goto nomem;
    if ((uint64_t)ax->out * (uint64_t)ax->ksize > GM_HTABLE_MAX)
        return GM_OK;
    h->w = malloc((size_t)ax->out * (size_t)ax->ksize * sizeof *h->w);
    h->first = malloc((size_t)ax->out * sizeof *h->first);
    h->count = malloc((size_t)ax->out * sizeof *h->count);
    if (!h->w || !h->first || !h->count)
        goto nomem;
    for (uint32_t x = 0; x < ax->out; x++)
        h->count[x] = axis_weights(ax, x, h->w + (size_t)x * (size_t)ax->ksize, &h->first[x]);
    return GM_OK;
nomem:
    hpass_free(h);
    return gm_set_error(err, GM_ERR_NOMEM, "resize: out of memory for horizontal weights");
}

/* One RGB row: in (ax->in pixels) → out (ax->out pixels). */
static void hpass_row(const hpass *h, const uint8_t *in, uint8_t *out)
{
    const resample_axis *ax = h->ax;
    const int32_t round = (int32_t)1 << (ax->precision - 1);
    for (uint32_t x = 0; x < ax->out; x++) {
        const int16_t *k;
        int32_t first, n;
        if (h->w) {
            k = h->w + (size_t)x * (size_t)ax->ksize;
            first = h->first[x];
            n = h->count[x];
        } else {
            n = axis_weights(ax, x, h->k, &first);
            k = h->k;
        }
        const uint8_t *p = in + (size_t)first * 3;
        int32_t r = round, g = round, b = round;
        for (int32_t j = 0; j < n; j++) {
            r += (int32_t)k[j] * p[3 * j + 0];
            g += (int32_t)k[j] * p[3 * j + 1];
            b += (int32_t)k[j] * p[3 * j + 2];
        }
        out[3 * x + 0] = clamp_u8(r, ax->precision);
        out[3 * x + 1] = clamp_u8(g, ax->precision);
        out[3 * x + 2] = clamp_u8(b, ax->precision);
    }
}

/* Exposed through the header (and used by the tests): uint8 RGB resize as the reference.
 * The horizontal pass runs first and is rounded to uint8; the vertical pass reads its rows
 * from a ring of the last ksize horizontally resized rows, so the intermediate image is
 * never held whole (the values are the same as with a full intermediate). */
int gm_image_resize_bicubic_aa(const uint8_t *src, uint32_t sw, uint32_t sh, uint8_t *dst,
                               uint32_t dw, uint32_t dh, gm_error *err)
{
    if (sw == 0 || sh == 0 || dw == 0 || dh == 0)
        return gm_set_error(err, GM_ERR_INVALID, "resize %ux%u -> %ux%u: zero dimension",
                            (unsigned)sw, (unsigned)sh, (unsigned)dw, (unsigned)dh);
    if (sw == dw && sh == dh) {
        memcpy(dst, src, (size_t)sw * sh * 3);
        return GM_OK;
    }
    int rc = GM_OK;
    resample_axis hx = { 0 }, vy = { 0 };
    hpass hp = { 0 };
    uint8_t *ring = NULL;
    int32_t *acc = NULL;
    int16_t *kv = NULL;
    const int need_h = sw != dw, need_v = sh != dh;
    const size_t srow = (size_t)sw * 3, drow = (size_t)dw * 3;

    if (need_h && ((rc = axis_init(&hx, sw, dw, err)) < 0 || (rc = hpass_init(&hp, &hx, err)) < 0))
        goto out;
    if (!need_v) {
        for (uint32_t y = 0; y < sh; y++)
            hpass_row(&hp, src + (size_t)y * srow, dst + (size_t)y * drow);
        goto out;
    }
    if ((rc = axis_init(&vy, sh, dh, err)) < 0)
        goto out;
    acc = malloc(drow * sizeof *acc);
    kv = malloc((size_t)vy.ksize * sizeof *kv);
    if (need_h)
        ring = malloc((size_t)vy.ksize * drow);
    if (!acc || !kv || (need_h && !ring)) {
        rc = gm_set_error(err, GM_ERR_NOMEM, "resize %ux%u -> %ux%u: out of memory",
                          (unsigned)sw, (unsigned)sh, (unsigned)dw, (unsigned)dh);
        goto out;
    }
    const int32_t round = (int32_t)1 << (vy.precision - 1);
    int64_t next_row = 0;   /* rows below this are in the ring (or were skipped) */
    for (uint32_t y = 0; y < dh; y++) {
        int32_t first;
        int n = axis_weights(&vy, y, kv, &first);
        if (need_h) {
            /* Window starts and ends never decrease, and n <= ksize, so the rows of this
             * window are distinct ring slots. */
            if (next_row < first)
                next_row = first;
            for (; next_row < (int64_t)first + n; next_row++)
                hpass_row(&hp, src + (size_t)next_row * srow,
                          ring + (size_t)(next_row % vy.ksize) * drow);
        }
        for (size_t c = 0; c < drow; c++)
            acc[c] = round;
        for (int j = 0; j < n; j++) {
            const size_t r = (size_t)first + (size_t)j;
            const uint8_t *in = need_h ? ring + (r % (size_t)vy.ksize) * drow : src + r * srow;
            const int32_t kj = kv[j];
            for (size_t c = 0; c < drow; c++)
                acc[c] += kj * in[c];
        }
        uint8_t *o = dst + (size_t)y * drow;
        for (size_t c = 0; c < drow; c++)
            o[c] = clamp_u8(acc[c], vy.precision);
    }
out:
    free(acc);
    free(kv);
    free(ring);
    hpass_free(&hp);
    axis_free(&hx);
    axis_free(&vy);
    return rc;
}

int gm_image_preprocess(const gm_image *img, int max_soft_tokens, gm_image_patches *out,
                        gm_error *err)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!img || !out || !img->rgb)
        return gm_set_error(err, GM_ERR_INVALID, "image preprocess: no image");

    uint32_t tw, th;
    int rc = gm_image_target_size(img->width, img->height, max_soft_tokens, &tw, &th, err);
    if (rc < 0)
        return rc;

    const uint8_t *pix = img->rgb;
    uint8_t *resized = NULL;
    if (tw != img->width || th != img->height) {
        resized = malloc((size_t)tw * th * 3);
        if (!resized)
            return gm_set_error(err, GM_ERR_NOMEM, "image preprocess: out of memory for %ux%u",
                                (unsigned)tw, (unsigned)th);
        rc = gm_image_resize_bicubic_aa(img->rgb, img->width, img->height, resized, tw, th, err);
        if (rc < 0) {
            free(resized);
            return rc;
        }
        pix = resized;
    }

    const uint32_t gw = tw / GM_IMAGE_PATCH, gh = th / GM_IMAGE_PATCH;
    const size_t n = (size_t)gw * gh;
    out->values = malloc(n * GM_IMAGE_PATCH_VALUES * sizeof *out->values);
    out->pos = malloc(n * 2 * sizeof *out->pos);
    if (!out->values || !out->pos) {
        free(resized);
        gm_image_patches_free(out);
        return gm_set_error(err, GM_ERR_NOMEM, "image preprocess: out of memory for %zu patches",
                            n);
    }

    /* uint8 tensor * Python float: the scalar becomes float32, the product is float32. */
    float lut[256];
    const float scale = (float)(1.0 / 255.0);
    for (int v = 0; v < 256; v++)
        lut[v] = (float)v * scale;

    for (uint32_t py = 0; py < gh; py++) {
        for (uint32_t px = 0; px < gw; px++) {
            const size_t p = (size_t)py * gw + px;
            float *dstp = out->values + p * GM_IMAGE_PATCH_VALUES;
            for (uint32_t r = 0; r < GM_IMAGE_PATCH; r++) {
                const uint8_t *srow =
                    pix + ((size_t)(py * GM_IMAGE_PATCH + r) * tw + (size_t)px * GM_IMAGE_PATCH) * 3;
                for (uint32_t c = 0; c < GM_IMAGE_PATCH * 3; c++)
                    *dstp++ = lut[srow[c]];
            }
            out->pos[2 * p + 0] = (int32_t)px;
            out->pos[2 * p + 1] = (int32_t)py;
        }
    }
    free(resized);
    out->grid_w = gw;
    out->grid_h = gh;
    out->n_patches = (uint32_t)n;
    out->n_soft_tokens = (gw / GM_POOL_K) * (gh / GM_POOL_K);
    return GM_OK;
}

void gm_image_patches_free(gm_image_patches *p)
{
    if (!p)
        return;
    free(p->values);
    free(p->pos);
    memset(p, 0, sizeof *p);
}
