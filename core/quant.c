/* quant.c — scalar reference code for the ggml block formats.
 *
 * Layouts and decode rules: design/gguf-format.md §4.2 (ggml-common.h / ggml-quants.c).
 * Quantizers follow the algorithms of ggml's quantize_row_*_ref (round to nearest; for the
 * K-quants a weighted least-squares search for the scale and min), written from the
 * description, so that files we write decode identically in ggml and vice versa.
 *
 * gm_vec_dot_ref defines the numerics every SIMD kernel is tested against:
 *
 *   Q4_0 / Q4_1 / Q5_0 / Q8_0 weights, Q8_0 activations: for each block b of 32 in order,
 *     isum_b = sum_{i<32} qw[i] * qa[i]        (exact int32; qw decoded to signed ints:
 *                                               q4_0 nibble-8, q5_0 5-bit value-16,
 *                                               q4_1 the raw nibble 0..15)
 *     acc   += (float)isum_b * (dw_b * da_b)   (float, one rounding per op)
 *   and for Q4_1 also, after the line above,
 *     acc   += mw_b * (da_b * (float)sum_{i<32} qa[i])
 *   (ggml stores s = d*sum(q) in a q8_1 block as fp16; we use the exact float product.)
 *
 *   Q4_K / Q5_K weights, Q8_K activations: for each super-block in order,
 *     isum = sum_{j<8} sc_j * sum_{i in sub-block j} qw[i]*qa[i]          (int32)
 *     imin = sum_{j<8} m_j * (bsums[2j] + bsums[2j+1])                     (int32)
 *     acc += (dw*da) * (float)isum;  acc -= (dminw*da) * (float)imin
 *
 *   Q6_K weights, Q8_K activations: for each super-block in order,
 *     isum = sum_{g<16} scale_g * sum_{i in group g of 16} (qw[i]-32)*qa[i]  (int32)
 *     acc += (dw*da) * (float)isum
 *
 *   F32 / F16 / BF16 weights, F32 activations: acc += w[i] * x[i] for i in order, in float.
 *
 * The integer sums are exact, so any SIMD order gives the same isum/imin; only the float
 * accumulation across blocks differs between implementations.
 */
#include "quant.h"

#include <float.h>
#include <math.h>
#include <string.h>

#define GROUP_MAX_EPS 1e-15f

static inline int imin_(int a, int b) { return a < b ? a : b; }
static inline int imax_(int a, int b) { return a > b ? a : b; }
static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Round to nearest, ties to even (ggml's nearest_int: adding 1.5*2^23 puts the rounded
 * integer in the low mantissa bits). Valid for |f| < 2^22. */
static inline int nearest_int(float f)
{
    float v = f + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static inline float h2f(gm_fp16 h) { return gm_fp16_to_fp32(h); }

/* Unpacks the 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes of a
 * Q4_K/Q5_K block: j<4 in the low 6 bits of bytes j / j+4; j>=4 in a nibble of byte
 * j+4 plus the top two bits of bytes j-4 (scale) / j (min). */
static inline void get_scale_min_k4(int j, const uint8_t *q, int *sc, int *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* q5_0's qh is a little-endian uint32 (bit j = 5th bit of weight j). */
static inline uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* ------------------------------------------------------------------ dequantize */

static void dequant_q4_0(const gm_block_q4_0 *x, float *y, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++, y += 32) {
        const float d = h2f(x[b].d);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((x[b].qs[j] & 0x0F) - 8) * d;
            y[j + 16] = (float)((x[b].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dequant_q4_1(const gm_block_q4_1 *x, float *y, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++, y += 32) {
        const float d = h2f(x[b].d), m = h2f(x[b].m);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(x[b].qs[j] & 0x0F) * d + m;
            y[j + 16] = (float)(x[b].qs[j] >> 4) * d + m;
        }
    }
}

static void dequant_q5_0(const gm_block_q5_0 *x, float *y, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++, y += 32) {
        const float d = h2f(x[b].d);
        const uint32_t qh = load_le32(x[b].qh);
        for (int j = 0; j < 16; j++) {
            int h0 = (int)((qh >> j) & 1u) << 4;
            int h1 = (int)((qh >> (j + 16)) & 1u) << 4;
            y[j] = (float)(((x[b].qs[j] & 0x0F) | h0) - 16) * d;
            y[j + 16] = (float)(((x[b].qs[j] >> 4) | h1) - 16) * d;
        }
    }
}

static void dequant_q8_0(const gm_block_q8_0 *x, float *y, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++, y += 32) {
        const float d = h2f(x[b].d);
        for (int j = 0; j < 32; j++)
            y[j] = (float)x[b].qs[j] * d;
    }
}

static void dequant_q4_K(const gm_block_q4_K *x, float *y, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++) {
        const float d = h2f(x[b].d), dmin = h2f(x[b].dmin);
        const uint8_t *q = x[b].qs;
        for (int g = 0; g < 4; g++, q += 32) {
            int sc0, m0, sc1, m1;
            get_scale_min_k4(2 * g, x[b].scales, &sc0, &m0);
            get_scale_min_k4(2 * g + 1, x[b].scales, &sc1, &m1);
            const float d0 = d * (float)sc0, mm0 = dmin * (float)m0;
            const float d1 = d * (float)sc1, mm1 = dmin * (float)m1;
            for (int l = 0; l < 32; l++)
                *y++ = d0 * (float)(q[l] & 0x0F) - mm0;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)(q[l] >> 4) - mm1;
        }
    }
}

static void dequant_q5_K(const gm_block_q5_K *x, float *y, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++) {
        const float d = h2f(x[b].d), dmin = h2f(x[b].dmin);
        const uint8_t *ql = x[b].qs, *qh = x[b].qh;
        /* group g: low nibbles use qh bit 2g, high nibbles qh bit 2g+1 */
        for (int g = 0; g < 4; g++, ql += 32) {
            int sc0, m0, sc1, m1;
            get_scale_min_k4(2 * g, x[b].scales, &sc0, &m0);
            get_scale_min_k4(2 * g + 1, x[b].scales, &sc1, &m1);
            const float d0 = d * (float)sc0, mm0 = dmin * (float)m0;
            const float d1 = d * (float)sc1, mm1 = dmin * (float)m1;
            const uint8_t u0 = (uint8_t)(1u << (2 * g)), u1 = (uint8_t)(2u << (2 * g));
            for (int l = 0; l < 32; l++)
                *y++ = d0 * (float)((ql[l] & 0x0F) + ((qh[l] & u0) ? 16 : 0)) - mm0;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)((ql[l] >> 4) + ((qh[l] & u1) ? 16 : 0)) - mm1;
        }
    }
}

/* Q6_K value i (0..255) of a block, as a signed int in -32..31. */
static inline int q6_K_value(const gm_block_q6_K *x, int i)
{
    const int half = i / 128, r = i % 128, l = r % 32, part = r / 32;
    const uint8_t *ql = x->ql + 64 * half, *qh = x->qh + 32 * half;
    int lo;
    switch (part) {
    case 0: lo = ql[l] & 0x0F; break;
    case 1: lo = ql[l + 32] & 0x0F; break;
    case 2: lo = ql[l] >> 4; break;
    default: lo = ql[l + 32] >> 4; break;
    }
    const int hi = (qh[l] >> (2 * part)) & 3;
    return (lo | (hi << 4)) - 32;
}

static void dequant_q6_K(const gm_block_q6_K *x, float *y, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++, y += GM_QK_K) {
        const float d = h2f(x[b].d);
        /* element i has scale group i/16 (the doc's l/16 + {0,2,4,6} per half) */
        for (int i = 0; i < GM_QK_K; i++)
            y[i] = d * (float)x[b].scales[i / 16] * (float)q6_K_value(&x[b], i);
    }
}

int gm_dequantize_row(gm_type type, const void *src, float *dst, int64_t n)
{
    const gm_type_traits *t = gm_type_get_traits((uint32_t)type);
    if (!t || !t->supported || n < 0 || n % t->block_size != 0)
        return -1;
    const int64_t nb = n / t->block_size;
    switch (type) {
    case GM_TYPE_F32:
        memmove(dst, src, (size_t)n * sizeof(float));
        return 0;
    case GM_TYPE_F16: {
        const gm_fp16 *s = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = gm_fp16_to_fp32(s[i]);
        return 0;
    }
    case GM_TYPE_BF16: {
        const gm_bf16 *s = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = gm_bf16_to_fp32(s[i]);
        return 0;
    }
    case GM_TYPE_Q4_0: dequant_q4_0(src, dst, nb); return 0;
    case GM_TYPE_Q4_1: dequant_q4_1(src, dst, nb); return 0;
    case GM_TYPE_Q5_0: dequant_q5_0(src, dst, nb); return 0;
    case GM_TYPE_Q8_0: dequant_q8_0(src, dst, nb); return 0;
    case GM_TYPE_Q4_K: dequant_q4_K(src, dst, nb); return 0;
    case GM_TYPE_Q5_K: dequant_q5_K(src, dst, nb); return 0;
    case GM_TYPE_Q6_K: dequant_q6_K(src, dst, nb); return 0;
    default: return -1;
    }
}

/* ------------------------------------------------------------------ quantize */

static void quant_q4_0(const float *x, gm_block_q4_0 *y, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++, x += 32) {
        /* the value of largest magnitude maps exactly to -8 (the extra negative level) */
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        const float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = gm_fp32_to_fp16(d);
        for (int j = 0; j < 16; j++) {
            /* +8.5 then truncation = round half up into 0..16; 16 is clamped to 15 */
            int q0 = imin_(15, (int)(x[j] * id + 8.5f));
            int q1 = imin_(15, (int)(x[j + 16] * id + 8.5f));
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quant_q4_1(const float *x, gm_block_q4_1 *y, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++, x += 32) {
        float mn = FLT_MAX, mx = -FLT_MAX;
        for (int j = 0; j < 32; j++) {
            if (x[j] < mn) mn = x[j];
            if (x[j] > mx) mx = x[j];
        }
        const float d = (mx - mn) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = gm_fp32_to_fp16(d);
        y[b].m = gm_fp32_to_fp16(mn);
        for (int j = 0; j < 16; j++) {
            int q0 = imin_(15, (int)((x[j] - mn) * id + 0.5f));
            int q1 = imin_(15, (int)((x[j + 16] - mn) * id + 0.5f));
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quant_q5_0(const float *x, gm_block_q5_0 *y, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++, x += 32) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        const float d = max / -16.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = gm_fp32_to_fp16(d);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            int q0 = imin_(31, (int)(x[j] * id + 16.5f));
            int q1 = imin_(31, (int)(x[j + 16] * id + 16.5f));
            y[b].qs[j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= (uint32_t)(q0 >> 4) << j;
            qh |= (uint32_t)(q1 >> 4) << (j + 16);
        }
        for (int k = 0; k < 4; k++)
            y[b].qh[k] = (uint8_t)(qh >> (8 * k));
    }
}

void gm_quantize_row_q8_0(const float *x, gm_block_q8_0 *y, int64_t n)
{
    const int64_t nb = n / GM_QK8_0;
    for (int64_t b = 0; b < nb; b++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = gm_fp32_to_fp16(d);
        for (int j = 0; j < 32; j++) /* roundf: ties away from zero, as quantize_row_q8_0_ref */
            y[b].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

void gm_quantize_row_q8_K(const float *x, gm_block_q8_K *y, int64_t n)
{
    const int64_t nb = n / GM_QK_K;
    for (int64_t b = 0; b < nb; b++, x += GM_QK_K) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < GM_QK_K; j++)
            if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        /* ggml's sign convention: the largest-magnitude value maps to -127, so d is
         * negative when that value is positive. Ties round to even. */
        const float iscale = -127.0f / max;
        for (int j = 0; j < GM_QK_K; j++)
            y[b].qs[j] = (int8_t)imin_(127, nearest_int(iscale * x[j]));
        for (int g = 0; g < GM_QK_K / 16; g++) {
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += y[b].qs[16 * g + l];
            y[b].bsums[g] = (int16_t)s;
        }
        y[b].d = 1.0f / iscale;
    }
}

/* Fits x ≈ scale*L + min (L in 0..nmax, min <= 0) minimizing the weighted squared error:
 * start from the plain min/max grid, then try nstep slightly different grid spacings and,
 * for each resulting L, solve the 2x2 least-squares system for scale and min. Returns the
 * scale; *neg_min receives -min (>= 0). Same search as ggml's make_qkx2_quants. */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                           float *neg_min, uint8_t *Laux, float rmin, float rdelta, int nstep)
{
    float mn = x[0], mx = x[0], sum_w = w[0], sum_x = w[0] * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < mn) mn = x[i];
        if (x[i] > mx) mx = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (mn > 0.0f)
        mn = 0.0f;
    if (mx == mn) {
        memset(L, 0, (size_t)n);
        *neg_min = -mn;
        return 0.0f;
    }
    float iscale = (float)nmax / (mx - mn);
    float scale = 1.0f / iscale;
    float best_err = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = clampi(nearest_int(iscale * (x[i] - mn)), 0, nmax);
        L[i] = (uint8_t)l;
        float diff = scale * (float)l + mn - x[i];
        best_err += w[i] * diff * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (mx - mn);
        float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest_int(iscale * (x[i] - mn)), 0, nmax);
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D <= 0.0f)
            continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0.0f) { /* min must not be positive: refit the scale alone */
            this_min = 0.0f;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0.0f;
        for (int i = 0; i < n; i++) {
            float diff = this_scale * (float)Laux[i] + this_min - x[i];
            err += w[i] * diff * diff;
        }
        if (err < best_err) {
            memcpy(L, Laux, (size_t)n);
            best_err = err;
            scale = this_scale;
            mn = this_min;
        }
    }
    *neg_min = -mn;
    return scale;
}

/* Symmetric fit x ≈ scale*(L - nmax), L in 0..2*nmax-1, with weights x^2 (large values
 * matter most); tries 18 grid spacings around nmax/max and keeps the best least-squares
 * scale. Same search as ggml's make_qx_quants(rmse_type = 1). */
static float fit_scale_sym(int n, int nmax, const float *x, uint8_t *L)
{
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); max = x[i]; }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = -(float)nmax / max;
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (uint8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0)
            continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0.0f;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0.0f && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] = (uint8_t)(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Shared by Q4_K (nmax 15) and Q5_K (nmax 31): per-sub-block scale/min fit, 6-bit
 * quantization of the scales and mins against the super-block d/dmin, then requantization
 * of the values with the stored (rounded) scales. Output: d, dmin, packed scales, L[256]. */
static void quant_k_scales(const float *x, int nmax, float rmin, int nstep,
                           gm_fp16 *d_out, gm_fp16 *dmin_out, uint8_t packed[GM_K_SCALE_SIZE],
                           uint8_t L[GM_QK_K])
{
    float scales[8], mins[8], w[32];
    uint8_t Laux[32];
    float max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0.0f;
        for (int l = 0; l < 32; l++)
            sum_x2 += xs[l] * xs[l];
        const float av_x = sqrtf(sum_x2 / 32.0f);
        for (int l = 0; l < 32; l++)
            w[l] = av_x + fabsf(xs[l]);
        scales[j] = fit_scale_min(32, nmax, xs, w, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    memset(packed, 0, GM_K_SCALE_SIZE);
    for (int j = 0; j < 8; j++) {
        int ls = imin_(63, nearest_int(inv_scale * scales[j]));
        int lm = imin_(63, nearest_int(inv_min * mins[j]));
        if (j < 4) {
            packed[j] |= (uint8_t)ls;
            packed[j + 4] |= (uint8_t)lm;
        } else {
            packed[j + 4] = (uint8_t)((ls & 0x0F) | ((lm & 0x0F) << 4));
            packed[j - 4] |= (uint8_t)((ls >> 4) << 6);
            packed[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *d_out = gm_fp32_to_fp16(max_scale / 63.0f);
    *dmin_out = gm_fp32_to_fp16(max_min / 63.0f);
    const float d = h2f(*d_out), dmin = h2f(*dmin_out);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        get_scale_min_k4(j, packed, &sc, &m);
        const float dd = d * (float)sc;
        if (dd == 0.0f)
            continue; /* keep the fit's L; every value decodes to -dm anyway */
        const float dm = dmin * (float)m;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = (uint8_t)clampi(nearest_int((x[32 * j + l] + dm) / dd), 0, nmax);
    }
}

static void quant_q4_K(const float *x, gm_block_q4_K *y, int64_t nb)
{
    uint8_t L[GM_QK_K];
    for (int64_t b = 0; b < nb; b++, x += GM_QK_K) {
        quant_k_scales(x, 15, -1.0f, 20, &y[b].d, &y[b].dmin, y[b].scales, L);
        uint8_t *q = y[b].qs;
        for (int g = 0; g < 4; g++, q += 32)
            for (int l = 0; l < 32; l++)
                q[l] = (uint8_t)(L[64 * g + l] | (L[64 * g + 32 + l] << 4));
    }
}

static void quant_q5_K(const float *x, gm_block_q5_K *y, int64_t nb)
{
    uint8_t L[GM_QK_K];
    for (int64_t b = 0; b < nb; b++, x += GM_QK_K) {
        quant_k_scales(x, 31, -0.5f, 15, &y[b].d, &y[b].dmin, y[b].scales, L);
        memset(y[b].qh, 0, sizeof y[b].qh);
        uint8_t *ql = y[b].qs;
        for (int g = 0; g < 4; g++, ql += 32) {
            for (int l = 0; l < 32; l++) {
                int l0 = L[64 * g + l], l1 = L[64 * g + 32 + l];
                if (l0 > 15) { l0 -= 16; y[b].qh[l] |= (uint8_t)(1u << (2 * g)); }
                if (l1 > 15) { l1 -= 16; y[b].qh[l] |= (uint8_t)(2u << (2 * g)); }
                ql[l] = (uint8_t)(l0 | (l1 << 4));
            }
        }
    }
}

static void quant_q6_K(const float *x, gm_block_q6_K *y, int64_t nb)
{
    uint8_t L[GM_QK_K];
    float scales[16];
    for (int64_t b = 0; b < nb; b++, x += GM_QK_K) {
        float max_scale = 0.0f, max_abs = 0.0f;
        for (int g = 0; g < 16; g++) {
            scales[g] = fit_scale_sym(16, 32, x + 16 * g, L + 16 * g);
            if (fabsf(scales[g]) > max_abs) { max_abs = fabsf(scales[g]); max_scale = scales[g]; }
        }
        if (max_abs < GROUP_MAX_EPS) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        const float iscale = -128.0f / max_scale;
        y[b].d = gm_fp32_to_fp16(1.0f / iscale);
        for (int g = 0; g < 16; g++)
            y[b].scales[g] = (int8_t)imin_(127, nearest_int(iscale * scales[g]));
        const float d = h2f(y[b].d);
        for (int g = 0; g < 16; g++) {
            const float dd = d * (float)y[b].scales[g];
            if (dd == 0.0f)
                continue;
            for (int l = 0; l < 16; l++)
                L[16 * g + l] = (uint8_t)(clampi(nearest_int(x[16 * g + l] / dd), -32, 31) + 32);
        }
        for (int h = 0; h < 2; h++) {
            uint8_t *ql = y[b].ql + 64 * h, *qh = y[b].qh + 32 * h;
            const uint8_t *Lh = L + 128 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((Lh[l] & 0x0F) | ((Lh[l + 64] & 0x0F) << 4));
                ql[l + 32] = (uint8_t)((Lh[l + 32] & 0x0F) | ((Lh[l + 96] & 0x0F) << 4));
                qh[l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) |
                                  ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
            }
        }
    }
}

int gm_quantize_row(gm_type type, const float *src, void *dst, int64_t n)
{
    const gm_type_traits *t = gm_type_get_traits((uint32_t)type);
    if (!t || !t->supported || n < 0 || n % t->block_size != 0)
        return -1;
    const int64_t nb = n / t->block_size;
    switch (type) {
    case GM_TYPE_F32:
        memmove(dst, src, (size_t)n * sizeof(float));
        return 0;
    case GM_TYPE_F16: {
        gm_fp16 *d = dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = gm_fp32_to_fp16(src[i]);
        return 0;
    }
    case GM_TYPE_BF16: {
        gm_bf16 *d = dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = gm_fp32_to_bf16(src[i]);
        return 0;
    }
    case GM_TYPE_Q4_0: quant_q4_0(src, dst, nb); return 0;
    case GM_TYPE_Q4_1: quant_q4_1(src, dst, nb); return 0;
    case GM_TYPE_Q5_0: quant_q5_0(src, dst, nb); return 0;
    case GM_TYPE_Q8_0: gm_quantize_row_q8_0(src, dst, n); return 0;
    case GM_TYPE_Q4_K: quant_q4_K(src, dst, nb); return 0;
    case GM_TYPE_Q5_K: quant_q5_K(src, dst, nb); return 0;
    case GM_TYPE_Q6_K: quant_q6_K(src, dst, nb); return 0;
    default: return -1;
    }
}

/* ------------------------------------------------------------------ dot products */

gm_type gm_vec_dot_type(gm_type t)
{
    switch (t) {
    case GM_TYPE_F32:
    case GM_TYPE_F16:
    case GM_TYPE_BF16:
        return GM_TYPE_F32;
    case GM_TYPE_Q4_0:
    case GM_TYPE_Q4_1:
    case GM_TYPE_Q5_0:
    case GM_TYPE_Q8_0:
        return GM_TYPE_Q8_0;
    case GM_TYPE_Q4_K:
    case GM_TYPE_Q5_K:
    case GM_TYPE_Q6_K:
        return GM_TYPE_Q8_K;
    default:
        return GM_TYPE_COUNT; /* no dot product for this weight type */
    }
}

static float dot_q4_0(const gm_block_q4_0 *x, const gm_block_q8_0 *y, int64_t nb)
{
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int32_t isum = 0;
        for (int j = 0; j < 16; j++) {
            isum += ((x[b].qs[j] & 0x0F) - 8) * y[b].qs[j];
            isum += ((x[b].qs[j] >> 4) - 8) * y[b].qs[j + 16];
        }
        acc += (float)isum * (h2f(x[b].d) * h2f(y[b].d));
    }
    return acc;
}

static float dot_q4_1(const gm_block_q4_1 *x, const gm_block_q8_0 *y, int64_t nb)
{
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int32_t isum = 0, asum = 0;
        for (int j = 0; j < 16; j++) {
            isum += (x[b].qs[j] & 0x0F) * y[b].qs[j];
            isum += (x[b].qs[j] >> 4) * y[b].qs[j + 16];
            asum += y[b].qs[j] + y[b].qs[j + 16];
        }
        const float da = h2f(y[b].d);
        acc += (float)isum * (h2f(x[b].d) * da);
        acc += h2f(x[b].m) * (da * (float)asum);
    }
    return acc;
}

static float dot_q5_0(const gm_block_q5_0 *x, const gm_block_q8_0 *y, int64_t nb)
{
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const uint32_t qh = load_le32(x[b].qh);
        int32_t isum = 0;
        for (int j = 0; j < 16; j++) {
            int w0 = ((x[b].qs[j] & 0x0F) | (int)(((qh >> j) & 1u) << 4)) - 16;
            int w1 = ((x[b].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4)) - 16;
            isum += w0 * y[b].qs[j] + w1 * y[b].qs[j + 16];
        }
        acc += (float)isum * (h2f(x[b].d) * h2f(y[b].d));
    }
    return acc;
}

static float dot_q8_0(const gm_block_q8_0 *x, const gm_block_q8_0 *y, int64_t nb)
{
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int32_t isum = 0;
        for (int j = 0; j < 32; j++)
            isum += x[b].qs[j] * y[b].qs[j];
        acc += (float)isum * (h2f(x[b].d) * h2f(y[b].d));
    }
    return acc;
}

/* Q4_K / Q5_K: qw(i) gives the unsigned quant of element i. */
static float dot_q45_K(const void *xv, size_t stride, int five, const gm_block_q8_K *y, int64_t nb)
{
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = (const uint8_t *)xv + (size_t)b * stride;
        /* the common prefix of q4_K and q5_K: d, dmin, scales */
        const gm_block_q4_K *hdr = (const gm_block_q4_K *)blk;
        const uint8_t *qh = five ? ((const gm_block_q5_K *)blk)->qh : NULL;
        const uint8_t *qs = five ? ((const gm_block_q5_K *)blk)->qs : hdr->qs;
        int32_t isum = 0, imin = 0;
        for (int j = 0; j < 8; j++) {
            int sc, m;
            get_scale_min_k4(j, hdr->scales, &sc, &m);
            const int g = j / 2, hi = j & 1;
            int32_t s = 0;
            for (int l = 0; l < 32; l++) {
                int q = hi ? (qs[32 * g + l] >> 4) : (qs[32 * g + l] & 0x0F);
                if (five && (qh[l] >> j) & 1)
                    q += 16;
                s += q * y[b].qs[32 * j + l];
            }
            isum += sc * s;
            imin += m * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
        }
        acc += (h2f(hdr->d) * y[b].d) * (float)isum;
        acc -= (h2f(hdr->dmin) * y[b].d) * (float)imin;
    }
    return acc;
}

static float dot_q6_K(const gm_block_q6_K *x, const gm_block_q8_K *y, int64_t nb)
{
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int32_t isum = 0;
        for (int g = 0; g < 16; g++) {
            int32_t s = 0;
            for (int l = 0; l < 16; l++)
                s += q6_K_value(&x[b], 16 * g + l) * y[b].qs[16 * g + l];
            isum += x[b].scales[g] * s;
        }
        acc += (h2f(x[b].d) * y[b].d) * (float)isum;
    }
    return acc;
}

float gm_vec_dot_ref(gm_type t, const void *w_row, const void *act_row, int64_t n)
{
    const gm_type_traits *tr = gm_type_get_traits((uint32_t)t);
    if (!tr || !tr->supported || n < 0 || n % tr->block_size != 0)
        return NAN; /* no defined result; NaN makes misuse visible */
    const int64_t nb = n / tr->block_size;
    const float *a = act_row;
    float acc = 0.0f;
    switch (t) {
    case GM_TYPE_F32: {
        const float *w = w_row;
        for (int64_t i = 0; i < n; i++)
            acc += w[i] * a[i];
        return acc;
    }
    case GM_TYPE_F16: {
        const gm_fp16 *w = w_row;
        for (int64_t i = 0; i < n; i++)
            acc += gm_fp16_to_fp32(w[i]) * a[i];
        return acc;
    }
    case GM_TYPE_BF16: {
        const gm_bf16 *w = w_row;
        for (int64_t i = 0; i < n; i++)
            acc += gm_bf16_to_fp32(w[i]) * a[i];
        return acc;
    }
    case GM_TYPE_Q4_0: return dot_q4_0(w_row, act_row, nb);
    case GM_TYPE_Q4_1: return dot_q4_1(w_row, act_row, nb);
    case GM_TYPE_Q5_0: return dot_q5_0(w_row, act_row, nb);
    case GM_TYPE_Q8_0: return dot_q8_0(w_row, act_row, nb);
    case GM_TYPE_Q4_K: return dot_q45_K(w_row, sizeof(gm_block_q4_K), 0, act_row, nb);
    case GM_TYPE_Q5_K: return dot_q45_K(w_row, sizeof(gm_block_q5_K), 1, act_row, nb);
    case GM_TYPE_Q6_K: return dot_q6_K(w_row, act_row, nb);
    default: return NAN;
    }
}
