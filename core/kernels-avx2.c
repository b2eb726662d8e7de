/* kernels-avx2.c — AVX2 + FMA + F16C matmul kernels (for CPUs without AVX-512 VNNI).
 *
 * One weight row at a time against a tile of up to TA tokens: each 32-column block is
 * unpacked once into 32 unsigned bytes (column order) and multiplied against every
 * token of the tile with vpmaddubsw (u8 x s8 -> pairs of int16) and vpmaddwd (-> int32).
 * The int32 lanes of a block plus the driver's bias correction (-bias * sum(act), put
 * in lane 0) sum exactly to gm_vec_dot_ref's integer dot product; they are converted
 * and scaled per lane, and the lanes are added once per row at the end.
 * Overflow: u4/u5/u6 x s8 pairs stay below 2^15; Q8_0 uses |w| x sign(a, w) instead of
 * an offset (activation quants are within +-127, so sign() cannot overflow).
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "kernels-impl.h"

#define AI static inline __attribute__((always_inline))
#define TA 4 /* token tile */

AI float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AI float h2f(const void *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

AI __m256i lane0_i32(int32_t v)
{
    return _mm256_zextsi128_si256(_mm_cvtsi32_si128(v));
}

/* 16 packed nibble bytes -> 32 bytes: low nibbles (columns 0..15) then high (16..31). */
AI __m256i unpack_nibbles(const uint8_t *qs)
{
    const __m128i q = _mm_loadu_si128((const __m128i *)qs);
    const __m128i m4 = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m4), _mm_and_si128(q, m4));
}

/* 32 bits (bit c for column c) -> byte c = 0x10 if set. */
AI __m256i bits_to_0x10(uint32_t bits)
{
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303ll, 0x0202020202020202ll,
                                           0x0101010101010101ll, 0x0000000000000000ll);
    const __m256i bitm = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bitm), bitm);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

AI __m256i load_act(const gm_act *a, int64_t t, int64_t col)
{
    return _mm256_loadu_si256((const __m256i *)(a->q + t * a->q_stride + col));
}

AI __m256i dot_u8s8(__m256i w, __m256i act)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, act), _mm256_set1_epi16(1));
}

/* ------------------------------------------------------------ 32-column block types */

AI void row_q32(const gm_type type, const uint8_t *row, const gm_act *a, int64_t t0, const int T,
                float *out)
{
    const int64_t nb = a->k / 32;
    __m256 acc[TA];
    float macc[TA];
    for (int t = 0; t < T; t++) {
        acc[t] = _mm256_setzero_ps();
        macc[t] = 0.0f;
    }
    for (int64_t b = 0; b < nb; b++) {
        __m256i w;
        float dw, mw = 0.0f;
        switch (type) {
        case GM_TYPE_Q4_0: {
            const uint8_t *blk = row + (size_t)b * sizeof(gm_block_q4_0);
            dw = h2f(blk);
            w = unpack_nibbles(blk + 2);
            break;
        }
        case GM_TYPE_Q4_1: {
            const uint8_t *blk = row + (size_t)b * sizeof(gm_block_q4_1);
            dw = h2f(blk);
            mw = h2f(blk + 2);
            w = unpack_nibbles(blk + 4);
            break;
        }
        case GM_TYPE_Q5_0: {
            const uint8_t *blk = row + (size_t)b * sizeof(gm_block_q5_0);
            uint32_t qh;
            memcpy(&qh, blk + 2, 4);
            dw = h2f(blk);
            w = _mm256_or_si256(unpack_nibbles(blk + 6), bits_to_0x10(qh));
            break;
        }
        default: { /* Q8_0 */
            const uint8_t *blk = row + (size_t)b * sizeof(gm_block_q8_0);
            dw = h2f(blk);
            w = _mm256_loadu_si256((const __m256i *)(blk + 2));
            break;
        }
        }
        const __m256i wabs = type == GM_TYPE_Q8_0 ? _mm256_sign_epi8(w, w) : w;
        for (int t = 0; t < T; t++) {
            const int64_t tt = t0 + t;
            __m256i act = load_act(a, tt, 32 * b);
            __m256i isum;
            if (type == GM_TYPE_Q8_0) {
                isum = dot_u8s8(wabs, _mm256_sign_epi8(act, w));
            } else {
                isum = dot_u8s8(w, act);
                if (type != GM_TYPE_Q4_1)
                    isum = _mm256_add_epi32(isum, lane0_i32(a->corr[tt * a->corr_stride + b]));
            }
            const float da = a->d[tt * a->d_stride + b];
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(dw * da), acc[t]);
            if (type == GM_TYPE_Q4_1)
                macc[t] += mw * a->dsum[tt * a->d_stride + b];
        }
    }
    for (int t = 0; t < T; t++)
        out[t] = hsum8(acc[t]) + macc[t];
}

/* ------------------------------------------------------------ K-quants */

/* Q4_K/Q5_K 6-bit scales (sc[j]) and mins (m[j]) of the 8 sub-blocks. */
AI void k4_scales(const uint8_t *q, int32_t sc[8], int32_t m[8])
{
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        m[j] = q[j + 4] & 63;
    }
    for (int j = 4; j < 8; j++) {
        sc[j] = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        m[j] = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

AI void row_k(const gm_type type, const uint8_t *row, const gm_act *a, int64_t t0, const int T,
              float *out)
{
    const int64_t nsb = a->k / GM_QK_K;
    __m256 acc[TA];
    for (int t = 0; t < T; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t sb = 0; sb < nsb; sb++) {
        __m256i w[8];
        __m256i scv[8]; /* per sub-block int16 multipliers for vpmaddwd */
        __m256i sc32[2]; /* Q6_K: the 16 scales as int32, for the bias correction */
        __m256 minv = _mm256_setzero_ps();
        float dw;
        if (type == GM_TYPE_Q6_K) {
            const gm_block_q6_K *blk = (const gm_block_q6_K *)(row + (size_t)sb * sizeof(gm_block_q6_K));
            dw = h2f(&blk->d);
            const __m128i s8 = _mm_loadu_si128((const __m128i *)blk->scales);
            sc32[0] = _mm256_cvtepi8_epi32(s8);
            sc32[1] = _mm256_cvtepi8_epi32(_mm_srli_si128(s8, 8));
            const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(0x30);
            for (int h = 0; h < 2; h++) {
                const __m256i A = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h));
                const __m256i B = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h + 32));
                const __m256i H = _mm256_loadu_si256((const __m256i *)(blk->qh + 32 * h));
                w[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(A, m4),
                                               _mm256_and_si256(_mm256_slli_epi16(H, 4), m3));
                w[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(B, m4),
                                               _mm256_and_si256(_mm256_slli_epi16(H, 2), m3));
                w[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(A, 4), m4),
                                               _mm256_and_si256(H, m3));
                w[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(B, 4), m4),
                                               _mm256_and_si256(_mm256_srli_epi16(H, 2), m3));
            }
            /* sub-block j: int16 lanes 0..7 (columns 0..15) scale 2j, lanes 8..15 scale 2j+1 */
            for (int j = 0; j < 8; j++) {
                int16_t s0 = blk->scales[2 * j], s1 = blk->scales[2 * j + 1];
                scv[j] = _mm256_set_m128i(_mm_set1_epi16(s1), _mm_set1_epi16(s0));
            }
        } else {
            const int five = type == GM_TYPE_Q5_K;
            const uint8_t *blk = row + (size_t)sb * (five ? sizeof(gm_block_q5_K) : sizeof(gm_block_q4_K));
            dw = h2f(blk);
            const float dmin = h2f(blk + 2);
            int32_t sc[8], m[8];
            k4_scales(blk + 4, sc, m);
            float mf[8];
            for (int j = 0; j < 8; j++) {
                scv[j] = _mm256_set1_epi16((short)sc[j]);
                mf[j] = -dmin * (float)m[j];
            }
            minv = _mm256_loadu_ps(mf);
            const uint8_t *qs = blk + (five ? 48 : 16);
            const __m256i m4 = _mm256_set1_epi8(0x0F);
            __m256i H = _mm256_setzero_si256();
            if (five)
                H = _mm256_loadu_si256((const __m256i *)(blk + 16));
            for (int g = 0; g < 4; g++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * g));
                w[2 * g] = _mm256_and_si256(v, m4);
                w[2 * g + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                if (five) {
                    /* bit j of qh[l] is the 5th bit of sub-block j, column l */
                    const __m256i b0 = _mm256_set1_epi8((char)(1 << (2 * g)));
                    const __m256i b1 = _mm256_set1_epi8((char)(2 << (2 * g)));
                    const __m256i x10 = _mm256_set1_epi8(0x10);
                    w[2 * g] = _mm256_or_si256(w[2 * g], _mm256_and_si256(
                        _mm256_cmpeq_epi8(_mm256_and_si256(H, b0), b0), x10));
                    w[2 * g + 1] = _mm256_or_si256(w[2 * g + 1], _mm256_and_si256(
                        _mm256_cmpeq_epi8(_mm256_and_si256(H, b1), b1), x10));
                }
            }
        }
        for (int t = 0; t < T; t++) {
            const int64_t tt = t0 + t;
            const int8_t *aq = a->q + tt * a->q_stride + sb * GM_QK_K;
            __m256i isum = _mm256_setzero_si256();
            for (int j = 0; j < 8; j++) {
                const __m256i act = _mm256_loadu_si256((const __m256i *)(aq + 32 * j));
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(w[j], act), scv[j]));
            }
            if (type == GM_TYPE_Q6_K) {
                const int32_t *corr = a->corr + tt * a->corr_stride + sb * 16;
                isum = _mm256_add_epi32(isum, _mm256_mullo_epi32(sc32[0], _mm256_loadu_si256((const __m256i *)corr)));
                isum = _mm256_add_epi32(isum, _mm256_mullo_epi32(sc32[1], _mm256_loadu_si256((const __m256i *)(corr + 8))));
            }
            const float da = a->d[tt * a->d_stride + sb * 8];
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(dw * da), acc[t]);
            if (type != GM_TYPE_Q6_K)
                acc[t] = _mm256_fmadd_ps(minv, _mm256_loadu_ps(a->dsum + tt * a->d_stride + sb * 8), acc[t]);
        }
    }
    for (int t = 0; t < T; t++)
        out[t] = hsum8(acc[t]);
}

/* ------------------------------------------------------------ float weights */

AI __m256 load8f(const gm_type type, const uint8_t *p)
{
    switch (type) {
    case GM_TYPE_F16:
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    case GM_TYPE_BF16:
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    default:
        return _mm256_loadu_ps((const float *)p);
    }
}

AI float load1f(const gm_type type, const uint8_t *p)
{
    if (type == GM_TYPE_F32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p, 2);
    return type == GM_TYPE_F16 ? _cvtsh_ss(h) : gm_bf16_to_fp32(h);
}

AI void row_f(const gm_type type, const uint8_t *row, const gm_act *a, int64_t t0, const int T,
              float *out)
{
    const size_t esz = type == GM_TYPE_F32 ? 4 : 2;
    const int64_t k = a->k, k8 = k / 8 * 8;
    __m256 acc[TA];
    for (int t = 0; t < T; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t c = 0; c < k8; c += 8) {
        const __m256 wv = load8f(type, row + (size_t)c * esz);
        for (int t = 0; t < T; t++)
            acc[t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(a->x + (t0 + t) * a->ldx + c), acc[t]);
    }
    for (int t = 0; t < T; t++) {
        float s = hsum8(acc[t]);
        for (int64_t c = k8; c < k; c++)
            s += load1f(type, row + (size_t)c * esz) * a->x[(t0 + t) * a->ldx + c];
        out[t] = s;
    }
}

/* ------------------------------------------------------------ driver */

AI void row_any(const gm_type type, const uint8_t *row, const gm_act *a, int64_t t0, const int T,
                float *out)
{
    switch (type) {
    case GM_TYPE_Q4_0:
    case GM_TYPE_Q4_1:
    case GM_TYPE_Q5_0:
    case GM_TYPE_Q8_0:
        row_q32(type, row, a, t0, T, out);
        break;
    case GM_TYPE_Q4_K:
    case GM_TYPE_Q5_K:
    case GM_TYPE_Q6_K:
        row_k(type, row, a, t0, T, out);
        break;
    default:
        row_f(type, row, a, t0, T, out);
        break;
    }
}

AI void mm_rows(const gm_type type, const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1,
                float *y, int64_t ldy)
{
    const int64_t n = a->n;
    float out[TA];
    for (int64_t t0 = 0; t0 < n; t0 += TA) {
        const int T = n - t0 < TA ? (int)(n - t0) : TA;
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
            switch (T) {
            case 4: row_any(type, row, a, t0, 4, out); break;
            case 3: row_any(type, row, a, t0, 3, out); break;
            case 2: row_any(type, row, a, t0, 2, out); break;
            default: row_any(type, row, a, t0, 1, out); break;
            }
            for (int t = 0; t < T; t++)
                y[(t0 + t) * ldy + r] = out[t];
        }
    }
}

#define DEFINE_KERNEL(name, type)                                                              \
    static void name(const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1, float *y,    \
                     int64_t ldy)                                                              \
    {                                                                                          \
        mm_rows(type, w, a, r0, r1, y, ldy);                                                   \
    }

DEFINE_KERNEL(mm_q4_0, GM_TYPE_Q4_0)
DEFINE_KERNEL(mm_q4_1, GM_TYPE_Q4_1)
DEFINE_KERNEL(mm_q5_0, GM_TYPE_Q5_0)
DEFINE_KERNEL(mm_q8_0, GM_TYPE_Q8_0)
DEFINE_KERNEL(mm_q4_K, GM_TYPE_Q4_K)
DEFINE_KERNEL(mm_q5_K, GM_TYPE_Q5_K)
DEFINE_KERNEL(mm_q6_K, GM_TYPE_Q6_K)
DEFINE_KERNEL(mm_f32, GM_TYPE_F32)
DEFINE_KERNEL(mm_f16, GM_TYPE_F16)
DEFINE_KERNEL(mm_bf16, GM_TYPE_BF16)

gm_kernel_fn gm_kernel_avx2(gm_type t)
{
    switch (t) {
    case GM_TYPE_Q4_0: return mm_q4_0;
    case GM_TYPE_Q4_1: return mm_q4_1;
    case GM_TYPE_Q5_0: return mm_q5_0;
    case GM_TYPE_Q8_0: return mm_q8_0;
    case GM_TYPE_Q4_K: return mm_q4_K;
    case GM_TYPE_Q5_K: return mm_q5_K;
    case GM_TYPE_Q6_K: return mm_q6_K;
    case GM_TYPE_F32: return mm_f32;
    case GM_TYPE_F16: return mm_f16;
    case GM_TYPE_BF16: return mm_bf16;
    default: return NULL;
    }
}

int gm_kernel_rows_avx2(void)
{
    return 8;
}
