/* kernels-avx2.c — AVX2 + FMA + F16C matmul kernels (for CPUs without AVX-512 VNNI).
 *
 * Quantized weights use the layout of the AVX-512 kernels with 8-row groups: a block
 * (32 columns) of 8 rows is unpacked to unsigned bytes in column order, and an 8x8 dword
 * transpose turns it into 8 vectors where vector s holds, per row, the 4 quants of
 * columns 4s..4s+3. Against a broadcast of the token's 4 activation quants,
 * vpmaddubsw + vpmaddwd add 32 products for 8 rows with no horizontal sums. The decoded
 * panel is reused for every token. Integer block sums start at the driver's bias
 * correction (-bias * sum(act)), so they equal gm_vec_dot_ref's exactly; scaling is in
 * float per block (or per 16 columns for Q6_K).
 * Overflow: vpmaddubsw pairs of u4/u5/u6 x s8 stay below 2^15. Q8_0 weights (s8) use
 * |w| x sign(a, w) instead of an offset; activation quants are within +-127, so sign()
 * cannot overflow. Float weights, and quantized ones for batches too small to repay
 * the transpose (1 token; 2 for Q8_0; up to 7 for K-quants, measured), use row dot
 * products with software prefetch ahead of the streamed rows.
 * Measured on the 2-core VM (AVX2 forced): n=512 ~80 GMAC/s, n=1 16-21 GB/s of 26.
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "kernels-impl.h"

#define AI static inline __attribute__((always_inline))
#define TA 4    /* token tile (float weights) */
#define TQ 4    /* token tile (quantized) */
#define KCB 16  /* 32-column blocks per K chunk (a multiple of 8) */
#define TOK_BLOCK_BYTES (512 * 1024)
#define PF_AHEAD 2048 /* software prefetch distance of the row-at-a-time kernels, bytes */

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

static inline int32_t load_i32(const void *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
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

/* r[i] = 8 dwords of row i -> r[s] = dword s of rows 0..7. */
AI void transpose8x8(__m256i r[8])
{
    __m256i t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    /* u[i] (i < 4): rows 0-3, dword i in the low lane and i + 4 in the high lane */
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
    }
}

/* ------------------------------------------------------------ quantized panel */

typedef struct {
    __m256i w[KCB][8];
    __m256 s[KCB][2];   /* per-row scale of each 32 columns (two per 16 for Q6_K) */
    __m256 m[KCB];      /* per-row min term */
} qpanel;

/* Block b of one row as 32 bytes in column order (unsigned; Q8_0: signed). */
AI __m256i row_block(const gm_type type, const uint8_t *row, int64_t b, float *d, float *m)
{
    switch (type) {
    case GM_TYPE_Q4_0: {
        const uint8_t *blk = row + (size_t)b * sizeof(gm_block_q4_0);
        *d = h2f(blk);
        return unpack_nibbles(blk + 2);
    }
    case GM_TYPE_Q4_1: {
        const uint8_t *blk = row + (size_t)b * sizeof(gm_block_q4_1);
        *d = h2f(blk);
        *m = h2f(blk + 2);
        return unpack_nibbles(blk + 4);
    }
    case GM_TYPE_Q5_0: {
        const uint8_t *blk = row + (size_t)b * sizeof(gm_block_q5_0);
        *d = h2f(blk);
        return _mm256_or_si256(unpack_nibbles(blk + 6), bits_to_0x10((uint32_t)load_i32(blk + 2)));
    }
    default: { /* Q8_0 */
        const uint8_t *blk = row + (size_t)b * sizeof(gm_block_q8_0);
        *d = h2f(blk);
        return _mm256_loadu_si256((const __m256i *)(blk + 2));
    }
    }
}

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

/* Super-block sb of one row: w[j] = sub-block j (32 columns, unsigned), s[2j], s[2j+1] =
 * scales of its two 16-column halves (equal except for Q6_K), mn[j] = min term. */
AI void row_superblock(const gm_type type, const uint8_t *row, int64_t sb, __m256i w[8],
                       float s[16], float mn[8])
{
    if (type == GM_TYPE_Q6_K) {
        const gm_block_q6_K *blk = (const gm_block_q6_K *)(row + (size_t)sb * sizeof(gm_block_q6_K));
        const float d = h2f(&blk->d);
        for (int g = 0; g < 16; g++)
            s[g] = d * (float)blk->scales[g];
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
        return;
    }
    const int five = type == GM_TYPE_Q5_K;
    const uint8_t *blk = row + (size_t)sb * (five ? sizeof(gm_block_q5_K) : sizeof(gm_block_q4_K));
    const float d = h2f(blk), dmin = h2f(blk + 2);
    int32_t sc[8], m[8];
    k4_scales(blk + 4, sc, m);
    for (int j = 0; j < 8; j++) {
        s[2 * j] = s[2 * j + 1] = d * (float)sc[j];
        mn[j] = -dmin * (float)m[j];
    }
    const uint8_t *qs = blk + (five ? 48 : 16);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i H = five ? _mm256_loadu_si256((const __m256i *)(blk + 16)) : _mm256_setzero_si256();
    const __m256i x10 = _mm256_set1_epi8(0x10);
    for (int g = 0; g < 4; g++) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * g));
        w[2 * g] = _mm256_and_si256(v, m4);
        w[2 * g + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        if (five) {
            /* bit j of qh[l] is the 5th bit of sub-block j, column l */
            const __m256i b0 = _mm256_set1_epi8((char)(1 << (2 * g)));
            const __m256i b1 = _mm256_set1_epi8((char)(2 << (2 * g)));
            w[2 * g] = _mm256_or_si256(w[2 * g], _mm256_and_si256(
                _mm256_cmpeq_epi8(_mm256_and_si256(H, b0), b0), x10));
            w[2 * g + 1] = _mm256_or_si256(w[2 * g + 1], _mm256_and_si256(
                _mm256_cmpeq_epi8(_mm256_and_si256(H, b1), b1), x10));
        }
    }
}

/* Decodes blocks [kb0, kb0 + nkb) of rows p[0..7] into the panel. */
AI void decode_chunk(const gm_type type, const uint8_t *const p[8], int64_t kb0, int nkb, qpanel *P)
{
    if (type == GM_TYPE_Q4_K || type == GM_TYPE_Q5_K || type == GM_TYPE_Q6_K) {
        for (int kb = 0; kb < nkb; kb += 8) {
            _Alignas(32) __m256i rows[8][8];
            _Alignas(32) float s[16][8], mn[8][8];
            for (int r = 0; r < 8; r++) {
                float sr[16], mr[8];
                row_superblock(type, p[r], (kb0 + kb) / 8, rows[r], sr, mr);
                for (int g = 0; g < 16; g++)
                    s[g][r] = sr[g];
                for (int j = 0; j < 8; j++)
                    mn[j][r] = type == GM_TYPE_Q6_K ? 0.0f : mr[j];
            }
            for (int j = 0; j < 8; j++) {
                __m256i v[8];
                for (int r = 0; r < 8; r++)
                    v[r] = rows[r][j];
                transpose8x8(v);
                for (int st = 0; st < 8; st++)
                    P->w[kb + j][st] = v[st];
                P->s[kb + j][0] = _mm256_load_ps(s[2 * j]);
                P->s[kb + j][1] = _mm256_load_ps(s[2 * j + 1]);
                P->m[kb + j] = _mm256_load_ps(mn[j]);
            }
        }
        return;
    }
    for (int kb = 0; kb < nkb; kb++) {
        __m256i v[8];
        _Alignas(32) float d[8], m[8];
        for (int r = 0; r < 8; r++) {
            m[r] = 0.0f;
            v[r] = row_block(type, p[r], kb0 + kb, &d[r], &m[r]);
        }
        transpose8x8(v);
        for (int st = 0; st < 8; st++)
            P->w[kb][st] = v[st];
        P->s[kb][0] = P->s[kb][1] = _mm256_load_ps(d);
        P->m[kb] = _mm256_load_ps(m);
    }
}

/* acc[t] += panel blocks [0, nkb) x tokens t0..t0+T-1 (columns from block kb0). */
AI void micro_q(const gm_type type, const qpanel *P, int nkb, int64_t kb0, const gm_act *a,
                int64_t t0, const int T, __m256 acc[TQ])
{
    const int NSC = type == GM_TYPE_Q6_K ? 2 : 1;
    const int MIN = type == GM_TYPE_Q4_1 || type == GM_TYPE_Q4_K || type == GM_TYPE_Q5_K;
    const int Q8 = type == GM_TYPE_Q8_0;
    const __m256i ones = _mm256_set1_epi16(1);
    const int8_t *aq[TQ];
    const float *ad[TQ], *am[TQ];
    const int32_t *ac[TQ];
    for (int t = 0; t < T; t++) {
        aq[t] = a->q + (t0 + t) * a->q_stride + kb0 * 32;
        ad[t] = a->d + (t0 + t) * a->d_stride + kb0;
        ac[t] = a->corr + (t0 + t) * a->corr_stride + kb0 * NSC;
        am[t] = MIN ? a->dsum + (t0 + t) * a->d_stride + kb0 : NULL;
    }
    for (int kb = 0; kb < nkb; kb++) {
        for (int h = 0; h < NSC; h++) {
            __m256i ia[TQ];
            for (int t = 0; t < T; t++)
                ia[t] = Q8 ? _mm256_setzero_si256() : _mm256_set1_epi32(ac[t][kb * NSC + h]);
            for (int st = h * 8 / NSC; st < (h + 1) * 8 / NSC; st++) {
                const __m256i wv = _mm256_load_si256(&P->w[kb][st]);
                const __m256i wa = Q8 ? _mm256_sign_epi8(wv, wv) : wv;
                for (int t = 0; t < T; t++) {
                    __m256i av = _mm256_set1_epi32(load_i32(aq[t] + kb * 32 + 4 * st));
                    if (Q8)
                        av = _mm256_sign_epi8(av, wv);
                    ia[t] = _mm256_add_epi32(ia[t], _mm256_madd_epi16(_mm256_maddubs_epi16(wa, av), ones));
                }
            }
            for (int t = 0; t < T; t++)
                acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(ia[t]), _mm256_set1_ps(ad[t][kb])),
                                         P->s[kb][h], acc[t]);
        }
        if (MIN)
            for (int t = 0; t < T; t++)
                acc[t] = _mm256_fmadd_ps(P->m[kb], _mm256_set1_ps(am[t][kb]), acc[t]);
    }
}

AI void run_tile_q(const gm_type type, const int T, const qpanel *P, int nkb, int64_t kb0,
                   const gm_act *a, int64_t t0, float *y, int64_t ldy, int64_t pr0, int valid,
                   int first)
{
    __m256 acc[TQ];
    for (int t = 0; t < T; t++)
        acc[t] = _mm256_setzero_ps();
    micro_q(type, P, nkb, kb0, a, t0, T, acc);
    for (int t = 0; t < T; t++) {
        float *yp = y + (t0 + t) * ldy + pr0;
        if (valid == 8) {
            __m256 v = acc[t];
            if (!first)
                v = _mm256_add_ps(v, _mm256_loadu_ps(yp));
            _mm256_storeu_ps(yp, v);
        } else {
            _Alignas(32) float tmp[8];
            _mm256_store_ps(tmp, acc[t]);
            for (int i = 0; i < valid; i++)
                yp[i] = first ? tmp[i] : yp[i] + tmp[i];
        }
    }
}

static int64_t token_block(int64_t n, int64_t bytes_per_token, int tile)
{
    int64_t tb = TOK_BLOCK_BYTES / (bytes_per_token > 0 ? bytes_per_token : 1);
    tb = tb / tile * tile;
    if (tb < tile)
        tb = tile;
    return tb < n ? tb : n;
}

AI void mm_rows(const gm_type type, const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1,
                float *y, int64_t ldy);

AI void mm_quant(const gm_type type, const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1,
                 float *y, int64_t ldy)
{
    /* Up to this many tokens the transpose costs more than it saves (measured). */
    const int64_t small_n = type == GM_TYPE_Q4_K || type == GM_TYPE_Q5_K || type == GM_TYPE_Q6_K ? 7
                          : type == GM_TYPE_Q8_0 ? 2 : 1;
    if (a->n <= small_n) {
        mm_rows(type, w, a, r0, r1, y, ldy);
        return;
    }
    const int64_t nblk = w->cols / 32, n = a->n;
    const int64_t tblk = token_block(n, w->cols, TQ);
    _Alignas(32) qpanel P;
    for (int64_t tb0 = 0; tb0 < n; tb0 += tblk) {
        const int64_t tb1 = tb0 + tblk < n ? tb0 + tblk : n;
        for (int64_t pr0 = r0; pr0 < r1; pr0 += 8) {
            const int valid = r1 - pr0 < 8 ? (int)(r1 - pr0) : 8;
            const uint8_t *p[8];
            for (int i = 0; i < 8; i++) /* rows past the range repeat the last one */
                p[i] = (const uint8_t *)w->data + (size_t)(pr0 + (i < valid ? i : valid - 1)) * w->row_bytes;
            for (int64_t kb0 = 0; kb0 < nblk; kb0 += KCB) {
                const int nkb = nblk - kb0 < KCB ? (int)(nblk - kb0) : KCB;
                decode_chunk(type, p, kb0, nkb, &P);
                int64_t t0 = tb0;
                for (; t0 + TQ <= tb1; t0 += TQ)
                    run_tile_q(type, TQ, &P, nkb, kb0, a, t0, y, ldy, pr0, valid, kb0 == 0);
                switch (tb1 - t0) {
                case 3: run_tile_q(type, 3, &P, nkb, kb0, a, t0, y, ldy, pr0, valid, kb0 == 0); break;
                case 2: run_tile_q(type, 2, &P, nkb, kb0, a, t0, y, ldy, pr0, valid, kb0 == 0); break;
                case 1: run_tile_q(type, 1, &P, nkb, kb0, a, t0, y, ldy, pr0, valid, kb0 == 0); break;
                default: break;
                }
            }
        }
    }
}

/* ------------------------------------------------------------ small batches
 *
 * For one or two tokens the panel transpose costs more than it saves: these take one
 * weight row at a time, unpack each block once in column order and multiply it against
 * each token, keeping 8 int32/float lanes per token and adding the lanes at the end. The
 * bias correction goes into lane 0 so that the lanes still sum to the exact integer. */

AI __m256i lane0_i32(int32_t v)
{
    return _mm256_zextsi128_si256(_mm_cvtsi32_si128(v));
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
    const size_t bsz = type == GM_TYPE_Q4_0 ? sizeof(gm_block_q4_0)
                     : type == GM_TYPE_Q4_1 ? sizeof(gm_block_q4_1)
                     : type == GM_TYPE_Q5_0 ? sizeof(gm_block_q5_0) : sizeof(gm_block_q8_0);
    for (int64_t b = 0; b < nb; b++) {
        __m256i w;
        float dw, mw = 0.0f;
        /* rows follow each other in memory: keep PF_AHEAD bytes ahead in flight */
        if (((size_t)b * bsz & 63) + bsz > 64 || b == 0)
            _mm_prefetch((const char *)row + (size_t)b * bsz + PF_AHEAD, _MM_HINT_T0);
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

/* K-quants: exact integer sums of sc_j * dot_j via vpmaddwd with the scales. */
AI void row_k(const gm_type type, const uint8_t *row, const gm_act *a, int64_t t0, const int T,
              float *out)
{
    const int64_t nsb = a->k / GM_QK_K;
    __m256 acc[TA];
    for (int t = 0; t < T; t++)
        acc[t] = _mm256_setzero_ps();
    const size_t bsz = type == GM_TYPE_Q6_K ? sizeof(gm_block_q6_K)
                     : type == GM_TYPE_Q5_K ? sizeof(gm_block_q5_K) : sizeof(gm_block_q4_K);
    for (int64_t sb = 0; sb < nsb; sb++) {
        for (size_t o = 0; o < bsz; o += 64)
            _mm_prefetch((const char *)row + (size_t)sb * bsz + o + PF_AHEAD, _MM_HINT_T0);
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
        if (type != GM_TYPE_F32 && ((size_t)c * esz & 63) == 0) /* measured: helps F16/BF16 only */
            _mm_prefetch((const char *)row + (size_t)c * esz + PF_AHEAD, _MM_HINT_T0);
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

/* One row at a time (float weights, and quantized ones for tiny batches). */
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

#define DEFINE_KERNEL(name, type, body)                                                        \
    static void name(const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1, float *y,    \
                     int64_t ldy)                                                              \
    {                                                                                          \
        body(type, w, a, r0, r1, y, ldy);                                                      \
    }

DEFINE_KERNEL(mm_q4_0, GM_TYPE_Q4_0, mm_quant)
DEFINE_KERNEL(mm_q4_1, GM_TYPE_Q4_1, mm_quant)
DEFINE_KERNEL(mm_q5_0, GM_TYPE_Q5_0, mm_quant)
DEFINE_KERNEL(mm_q8_0, GM_TYPE_Q8_0, mm_quant)
DEFINE_KERNEL(mm_q4_K, GM_TYPE_Q4_K, mm_quant)
DEFINE_KERNEL(mm_q5_K, GM_TYPE_Q5_K, mm_quant)
DEFINE_KERNEL(mm_q6_K, GM_TYPE_Q6_K, mm_quant)
DEFINE_KERNEL(mm_f32, GM_TYPE_F32, mm_rows)
DEFINE_KERNEL(mm_f16, GM_TYPE_F16, mm_rows)
DEFINE_KERNEL(mm_bf16, GM_TYPE_BF16, mm_rows)

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
    return 16;
}
