/* ops.c — small fp32 vector maths (RMSNorm, LayerNorm, RoPE, softmax, GELU, ...).
 *
 * The hot element-wise loops (dot, axpy, exp-based activations, softmax, RMSNorm) have
 * AVX2 and AVX-512 versions compiled with target attributes and chosen once at run time
 * from gm_cpu_best_isa() (so GEMMAD_ISA also forces the paths here). The scalar versions
 * are the reference and use libm.
 *
 * Transcendentals in the SIMD paths: exp is a Cody-Waite range reduction with a degree-7
 * Taylor polynomial (about 1 ulp on |r| <= ln2/2); tanh is its odd Taylor series for
 * |y| < 0.5 and 1 - 2/(e^2y + 1) above, so both stay within a few 1e-7 relative of libm.
 */
#include "ops.h"

#include <math.h>
#include <stdatomic.h>
#include <stddef.h>

#include "cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#define GM_OPS_X86 1
#include <immintrin.h>
#endif

/* sqrt(2/pi), the GELU tanh-approximation constant */
#define GM_GELU_C 0.7978845608028654f
#define GM_GELU_A 0.044715f

/* ------------------------------------------------------------------ scalar reference */

static float dot_scalar(const float *a, const float *b, int64_t n)
{
    /* Eight partial sums: same association as a vector unit, and less rounding error. */
    float acc[8] = { 0 };
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += a[i + j] * b[i + j];
    float s = 0.0f;
    for (; i < n; i++)
        s += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + s;
}

static void axpy_scalar(float *y, float a, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

static double sumsq_scalar(const float *x, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)x[i] * (double)x[i];
    return s;
}

static void gelu_scalar(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float z = x[i];
        float u = GM_GELU_C * (z + GM_GELU_A * z * z * z);
        /* 0.5 z (1 + tanh u) == z / (1 + e^-2u), without the cancellation at z << 0 */
        x[i] = z / (1.0f + expf(-2.0f * u));
    }
}

static void silu_scalar(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] / (1.0f + expf(-x[i]));
}

static void softcap_scalar(float *x, int64_t n, float cap)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = cap * tanhf(x[i] / cap);
}

/* exp(x[i] - m) in place; returns the sum. */
static float expsub_scalar(float *x, int64_t n, float m)
{
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float e = expf(x[i] - m);
        x[i] = e;
        s += e;
    }
    return s;
}

static float max_scalar(const float *x, int64_t n)
{
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > m)
            m = x[i];
    return m;
}

/* ------------------------------------------------------------------ AVX2 */

#ifdef GM_OPS_X86

#define GM_AVX2 __attribute__((target("avx2,fma")))

GM_AVX2 static inline float hsum256(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

GM_AVX2 static inline float hmax256(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_max_ps(lo, hi);
    lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_max_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* e^x; inputs below -87.33 give 0 (no denormals), above 88.72 give +inf;
 * (88.3, 88.72] saturate at e^88.3 (never reached by the callers' arguments). */
GM_AVX2 static inline __m256 exp256(__m256 x)
{
    const __m256 hi = _mm256_set1_ps(88.3f), lo = _mm256_set1_ps(-87.33f);
    __m256 zero_mask = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    __m256 inf_mask = _mm256_cmp_ps(x, _mm256_set1_ps(88.7228f), _CMP_GT_OQ);
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    y = _mm256_andnot_ps(zero_mask, y);
    return _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), inf_mask);
}

GM_AVX2 static inline __m256 tanh256(__m256 y)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 a = _mm256_andnot_ps(sign, y);
    /* large |y|: 1 - 2/(e^2|y| + 1), sign restored */
    __m256 e = exp256(_mm256_add_ps(a, a));
    __m256 big = _mm256_sub_ps(_mm256_set1_ps(1.0f),
                               _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
    big = _mm256_or_ps(big, _mm256_and_ps(sign, y));
    /* small |y|: odd Taylor series to y^15 */
    __m256 z = _mm256_mul_ps(y, y);
    __m256 p = _mm256_set1_ps(-929569.0f / 638512875.0f);
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(21844.0f / 6081075.0f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-1382.0f / 155925.0f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(62.0f / 2835.0f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-17.0f / 315.0f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(2.0f / 15.0f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-1.0f / 3.0f));
    __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), y, y);
    return _mm256_blendv_ps(big, small, _mm256_cmp_ps(a, _mm256_set1_ps(0.5f), _CMP_LT_OQ));
}

GM_AVX2 static float dot_avx2(const float *a, const float *b, int64_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(),
           s3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

GM_AVX2 static void axpy_avx2(float *y, float a, const float *x, int64_t n)
{
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
        _mm256_storeu_ps(y + i + 8,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8)));
    }
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

GM_AVX2 static double sumsq_avx2(const float *x, int64_t n)
{
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        s0 = _mm256_fmadd_pd(a, a, s0);
        s1 = _mm256_fmadd_pd(b, b, s1);
    }
    s0 = _mm256_add_pd(s0, s1);
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s0), _mm256_extractf128_pd(s0, 1));
    double s = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
    for (; i < n; i++)
        s += (double)x[i] * (double)x[i];
    return s;
}

GM_AVX2 static void gelu_avx2(float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 z = _mm256_loadu_ps(x + i);
        __m256 z3 = _mm256_mul_ps(_mm256_mul_ps(z, z), z);
        __m256 u = _mm256_mul_ps(_mm256_set1_ps(GM_GELU_C), _mm256_fmadd_ps(_mm256_set1_ps(GM_GELU_A), z3, z));
        __m256 e = exp256(_mm256_mul_ps(u, _mm256_set1_ps(-2.0f)));
        _mm256_storeu_ps(x + i, _mm256_div_ps(z, _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
    }
    gelu_scalar(x + i, n - i);
}

GM_AVX2 static void silu_avx2(float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 z = _mm256_loadu_ps(x + i);
        __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), z));
        _mm256_storeu_ps(x + i, _mm256_div_ps(z, _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
    }
    silu_scalar(x + i, n - i);
}

GM_AVX2 static void softcap_avx2(float *x, int64_t n, float cap)
{
    __m256 c = _mm256_set1_ps(cap);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(c, tanh256(_mm256_div_ps(_mm256_loadu_ps(x + i), c))));
    softcap_scalar(x + i, n - i, cap);
}

GM_AVX2 static float max_avx2(const float *x, int64_t n)
{
    __m256 m = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
    float r = hmax256(m);
    for (; i < n; i++)
        if (x[i] > r)
            r = x[i];
    return r;
}

GM_AVX2 static float expsub_avx2(float *x, int64_t n, float mx)
{
    __m256 vm = _mm256_set1_ps(mx), s = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        s = _mm256_add_ps(s, e);
    }
    return hsum256(s) + expsub_scalar(x + i, n - i, mx);
}

/* ------------------------------------------------------------------ AVX-512 */

#define GM_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))

GM_AVX512 static inline __mmask16 tail_mask(int64_t r)
{
    return (__mmask16)((1u << r) - 1u);
}

/* e^x: scalef handles the scaling by 2^n over the whole range, including overflow to
 * inf and underflow to 0; -inf (masked logits) is clamped first so it yields exactly 0. */
GM_AVX512 static inline __m512 exp512(__m512 x)
{
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-110.0f)), _mm512_set1_ps(89.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

GM_AVX512 static inline __m512 tanh512(__m512 y)
{
    __m512 a = _mm512_abs_ps(y);
    __m512 e = exp512(_mm512_add_ps(a, a));
    __m512 big = _mm512_sub_ps(_mm512_set1_ps(1.0f),
                               _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
    big = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(big),
        _mm512_and_si512(_mm512_castps_si512(y), _mm512_set1_epi32((int)0x80000000u))));
    __m512 z = _mm512_mul_ps(y, y);
    __m512 p = _mm512_set1_ps(-929569.0f / 638512875.0f);
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(21844.0f / 6081075.0f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-1382.0f / 155925.0f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(62.0f / 2835.0f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-17.0f / 315.0f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(2.0f / 15.0f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-1.0f / 3.0f));
    __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(p, z), y, y);
    __mmask16 m = _mm512_cmp_ps_mask(a, _mm512_set1_ps(0.5f), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(m, big, small);
}

GM_AVX512 static float dot_avx512(const float *a, const float *b, int64_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(),
           s3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

GM_AVX512 static void axpy_avx512(float *y, float a, const float *x, int64_t n)
{
    __m512 va = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
        _mm512_storeu_ps(y + i + 16,
                         _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(y + i + 16)));
    }
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m,
                              _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

GM_AVX512 static double sumsq_avx512(const float *x, int64_t n)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        s0 = _mm512_fmadd_pd(a, a, s0);
        s1 = _mm512_fmadd_pd(b, b, s1);
    }
    double s = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    for (; i < n; i++)
        s += (double)x[i] * (double)x[i];
    return s;
}

GM_AVX512 static inline __m512 gelu512(__m512 z)
{
    __m512 z3 = _mm512_mul_ps(_mm512_mul_ps(z, z), z);
    __m512 u = _mm512_mul_ps(_mm512_set1_ps(GM_GELU_C), _mm512_fmadd_ps(_mm512_set1_ps(GM_GELU_A), z3, z));
    __m512 e = exp512(_mm512_mul_ps(u, _mm512_set1_ps(-2.0f)));
    return _mm512_div_ps(z, _mm512_add_ps(e, _mm512_set1_ps(1.0f)));
}

GM_AVX512 static void gelu_avx512(float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, gelu512(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, m, gelu512(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

GM_AVX512 static inline __m512 silu512(__m512 z)
{
    __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), z));
    return _mm512_div_ps(z, _mm512_add_ps(e, _mm512_set1_ps(1.0f)));
}

GM_AVX512 static void silu_avx512(float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, silu512(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, m, silu512(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

GM_AVX512 static void softcap_avx512(float *x, int64_t n, float cap)
{
    __m512 c = _mm512_set1_ps(cap);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, _mm512_mul_ps(c, tanh512(_mm512_div_ps(_mm512_loadu_ps(x + i), c))));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(c, tanh512(_mm512_div_ps(v, c))));
    }
}

GM_AVX512 static float max_avx512(const float *x, int64_t n)
{
    __m512 m = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
    if (i < n)
        m = _mm512_mask_max_ps(m, tail_mask(n - i), m, _mm512_maskz_loadu_ps(tail_mask(n - i), x + i));
    return _mm512_reduce_max_ps(m);
}

GM_AVX512 static float expsub_avx512(float *x, int64_t n, float mx)
{
    __m512 vm = _mm512_set1_ps(mx), s = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
        _mm512_storeu_ps(x + i, e);
        s = _mm512_add_ps(s, e);
    }
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vm));
        _mm512_mask_storeu_ps(x + i, m, e);
        s = _mm512_add_ps(s, _mm512_maskz_mov_ps(m, e));
    }
    return _mm512_reduce_add_ps(s);
}

#endif /* GM_OPS_X86 */

/* ------------------------------------------------------------------ dispatch */

typedef struct ops_impl {
    float (*dot)(const float *, const float *, int64_t);
    void (*axpy)(float *, float, const float *, int64_t);
    double (*sumsq)(const float *, int64_t);
    void (*gelu)(float *, int64_t);
    void (*silu)(float *, int64_t);
    void (*softcap)(float *, int64_t, float);
    float (*max)(const float *, int64_t);
    float (*expsub)(float *, int64_t, float);
} ops_impl;

static const ops_impl impl_scalar = {
    dot_scalar, axpy_scalar, sumsq_scalar, gelu_scalar, silu_scalar, softcap_scalar, max_scalar, expsub_scalar,
};
#ifdef GM_OPS_X86
static const ops_impl impl_avx2 = {
    dot_avx2, axpy_avx2, sumsq_avx2, gelu_avx2, silu_avx2, softcap_avx2, max_avx2, expsub_avx2,
};
static const ops_impl impl_avx512 = {
    dot_avx512, axpy_avx512, sumsq_avx512, gelu_avx512, silu_avx512, softcap_avx512, max_avx512, expsub_avx512,
};
#endif

static _Atomic(const ops_impl *) g_impl;

static const ops_impl *ops(void)
{
    const ops_impl *p = atomic_load_explicit(&g_impl, memory_order_acquire);
    if (p)
        return p;
    p = &impl_scalar;
#ifdef GM_OPS_X86
    switch (gm_cpu_best_isa()) {
    case GM_ISA_AVX512: p = &impl_avx512; break;
    case GM_ISA_AVX2: p = &impl_avx2; break;
    default: break;
    }
#endif
    /* Every thread computes the same choice, so a race here is harmless. */
    atomic_store_explicit(&g_impl, p, memory_order_release);
    return p;
}

/* ------------------------------------------------------------------ public */

void gm_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps)
{
    if (n <= 0)
        return;
    /* HF: mean of squares in fp32, then (ms + eps)^-0.5 as a power, x * r, then * w. */
    float ms = (float)(ops()->sumsq(x, n) / (double)n);
    float r = powf(ms + eps, -0.5f);
    if (w) {
        for (int64_t i = 0; i < n; i++)
            out[i] = (x[i] * r) * w[i];
    } else {
        for (int64_t i = 0; i < n; i++)
            out[i] = x[i] * r;
    }
}

void gm_layernorm(float *out, const float *x, const float *w, const float *b, int64_t n, float eps)
{
    if (n <= 0)
        return;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    double mean = s / (double)n;
    double v = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - mean;
        v += d * d;
    }
    float r = (float)(1.0 / sqrt(v / (double)n + (double)eps));
    float m = (float)mean;
    for (int64_t i = 0; i < n; i++) {
        float y = (x[i] - m) * r;
        if (w)
            y *= w[i];
        if (b)
            y += b[i];
        out[i] = y;
    }
}

void gm_rope_neox(float *v, int64_t d, int64_t pos, const float *inv_freq)
{
    int64_t h = d / 2;
    for (int64_t i = 0; i < h; i++) {
        if (inv_freq[i] == 0.0f)
            continue; /* exact pass-through (proportional RoPE's unrotated pairs) */
        float ang = (float)pos * inv_freq[i];
        float c = cosf(ang), s = sinf(ang);
        float a = v[i], b = v[i + h];
        v[i] = a * c - b * s;
        v[i + h] = b * c + a * s;
    }
}

void gm_softmax(float *x, int64_t n)
{
    if (n <= 0)
        return;
    const ops_impl *o = ops();
    float m = o->max(x, n);
    if (m == -INFINITY) {
        /* Nothing visible: all-zero rather than NaN. */
        for (int64_t i = 0; i < n; i++)
            x[i] = 0.0f;
        return;
    }
    float s = o->expsub(x, n, m);
    float inv = 1.0f / s;
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}

void gm_gelu_tanh(float *x, int64_t n)
{
    if (n > 0)
        ops()->gelu(x, n);
}

void gm_silu(float *x, int64_t n)
{
    if (n > 0)
        ops()->silu(x, n);
}

void gm_softcap(float *x, int64_t n, float cap)
{
    if (n > 0 && cap > 0.0f)
        ops()->softcap(x, n, cap);
}

void gm_vec_add(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

void gm_vec_scale(float *y, float s, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] *= s;
}

void gm_vec_mul(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] *= x[i];
}

float gm_vec_dot_f32(const float *a, const float *b, int64_t n)
{
    return n > 0 ? ops()->dot(a, b, n) : 0.0f;
}

void gm_vec_axpy(float *y, float a, const float *x, int64_t n)
{
    if (n > 0)
        ops()->axpy(y, a, x, n);
}
