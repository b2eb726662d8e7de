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
#include <stddef.h>
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
 * scales of its two 16-column halves (equal except for Q6_K), mn[j] = min term (s NULL:
 * weights only). */
AI void row_superblock(const gm_type type, const uint8_t *row, int64_t sb, __m256i w[8],
                       float s[16], float mn[8])
{
    if (type == GM_TYPE_Q6_K) {
        const gm_block_q6_K *blk = (const gm_block_q6_K *)(row + (size_t)sb * sizeof(gm_block_q6_K));
        if (s) {
            const float d = h2f(&blk->d);
            for (int g = 0; g < 16; g++)
                s[g] = d * (float)blk->scales[g];
        }
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
    if (s) {
        const float d = h2f(blk), dmin = h2f(blk + 2);
        int32_t sc[8], m[8];
        k4_scales(blk + 4, sc, m);
        for (int j = 0; j < 8; j++) {
            s[2 * j] = s[2 * j + 1] = d * (float)sc[j];
            mn[j] = -dmin * (float)m[j];
        }
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
    gm_act_block_ptrs(a, t0, T, kb0, NSC, MIN, aq, ad, ac, am);
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

AI void mm_rows8(const gm_type type, const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1,
                 float *y, int64_t ldy);

AI void mm_quant(const gm_type type, const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1,
                 float *y, int64_t ldy)
{
    /* Up to this many tokens the transpose costs more than it saves (measured). */
    const int64_t small_n = type == GM_TYPE_Q4_K || type == GM_TYPE_Q5_K || type == GM_TYPE_Q6_K ? 7
                          : type == GM_TYPE_Q8_0 ? 2 : 1;
    if (a->n <= small_n) {
        mm_rows8(type, w, a, r0, r1, y, ldy);
        return;
    }
    const int64_t nblk = w->cols / 32, n = a->n;
    const int64_t tblk = gm_token_block(TOK_BLOCK_BYTES, n, w->cols, TQ);
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
 * For a few tokens the panel transpose costs more than it saves: these stream 8 rows at
 * a time, unpack each block once in column order and multiply it against each token,
 * then reduce the 8 rows' int32 lanes to one exact block sum per row (horizontal adds).
 * From there every output takes the float steps of the panel path in the same order
 * (per block: float(sum) * d_act, FMA with the row scale, then the min term; K chunks of
 * KCB blocks summed separately, a chunk's partial added to the running total), so the
 * result does not depend on the batch size: decoding token by token gives the bits of
 * a batched prefill. Rows past the range repeat the last one, as in the panel path. */

AI __m256i load_act(const gm_act *a, int64_t t, int64_t col)
{
    return _mm256_loadu_si256((const __m256i *)(a->q + t * a->q_stride + col));
}

AI __m256i dot_u8s8(__m256i w, __m256i act)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, act), _mm256_set1_epi16(1));
}

/* v[r]: 8 int32 lanes of row r. Returns lo with lane r = sum of v[r]'s low 128-bit half
 * and hi with the high half's sums (for Q6_K these are the two 16-column halves). */
AI void reduce8(const __m256i v[8], __m256i *lo, __m256i *hi)
{
    const __m256i h01 = _mm256_hadd_epi32(v[0], v[1]), h23 = _mm256_hadd_epi32(v[2], v[3]);
    const __m256i h45 = _mm256_hadd_epi32(v[4], v[5]), h67 = _mm256_hadd_epi32(v[6], v[7]);
    const __m256i q0 = _mm256_hadd_epi32(h01, h23), q1 = _mm256_hadd_epi32(h45, h67);
    *lo = _mm256_permute2x128_si256(q0, q1, 0x20);
    *hi = _mm256_permute2x128_si256(q0, q1, 0x31);
}

/* 8 fp16 values (at byte offset off of each row) as floats, lane r from row r. */
AI __m256 load_h8(const uint8_t *const p[8], size_t off)
{
    uint16_t h[8];
    for (int r = 0; r < 8; r++)
        memcpy(&h[r], p[r] + off, 2);
    return _mm256_cvtph_ps(_mm_setr_epi16((short)h[0], (short)h[1], (short)h[2], (short)h[3],
                                          (short)h[4], (short)h[5], (short)h[6], (short)h[7]));
}

/* Software prefetch of the next 8-row group (one contiguous range) while this one is
 * processed: the hardware prefetchers track 8 interleaved streams poorly. */
typedef struct {
    const char *p;
    size_t off, len, step; /* step: bytes per call */
} pfcur;

AI void pf_next(pfcur *c)
{
    for (size_t i = 0; i < c->step && c->off < c->len; i += 64, c->off += 64)
        _mm_prefetch(c->p + c->off, _MM_HINT_T0);
}

/* Adds chunk partials like the panel path's stores into y: first chunk stored, later
 * ones added to it. */
AI void chunk_done(const int T, __m256 acc[TQ], __m256 tot[TQ], int first)
{
    for (int t = 0; t < T; t++) {
        tot[t] = first ? acc[t] : _mm256_add_ps(acc[t], tot[t]);
        acc[t] = _mm256_setzero_ps();
    }
}

/* 32-column block types: tot[t] = outputs of rows p[0..7] for token t0 + t. */
AI void rows8_q32(const gm_type type, const uint8_t *const p[8], const gm_act *a, int64_t t0,
                  const int T, __m256 tot[TQ], pfcur *pf)
{
    const int64_t nb = a->k / 32;
    const int MIN = type == GM_TYPE_Q4_1, Q8 = type == GM_TYPE_Q8_0;
    const int BIAS = type == GM_TYPE_Q4_0 || type == GM_TYPE_Q5_0;
    const size_t bsz = type == GM_TYPE_Q4_0 ? sizeof(gm_block_q4_0)
                     : type == GM_TYPE_Q4_1 ? sizeof(gm_block_q4_1)
                     : type == GM_TYPE_Q5_0 ? sizeof(gm_block_q5_0) : sizeof(gm_block_q8_0);
    __m256 acc[TQ];
    for (int t = 0; t < T; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        pf_next(pf);
        const size_t o = (size_t)b * bsz;
        __m256i w[8];
        for (int r = 0; r < 8; r++) {
            const uint8_t *blk = p[r] + o;
            switch (type) {
            case GM_TYPE_Q4_0: w[r] = unpack_nibbles(blk + 2); break;
            case GM_TYPE_Q4_1: w[r] = unpack_nibbles(blk + 4); break;
            case GM_TYPE_Q5_0:
                w[r] = _mm256_or_si256(unpack_nibbles(blk + 6), bits_to_0x10((uint32_t)load_i32(blk + 2)));
                break;
            default: w[r] = _mm256_loadu_si256((const __m256i *)(blk + 2)); break;
            }
        }
        const __m256 dw = load_h8(p, o);
        const __m256 mw = MIN ? load_h8(p, o + 2) : _mm256_setzero_ps();
        for (int t = 0; t < T; t++) {
            const int64_t tt = t0 + t;
            const __m256i act = load_act(a, tt, 32 * b);
            __m256i v[8], lo, hi;
            for (int r = 0; r < 8; r++)
                v[r] = Q8 ? dot_u8s8(_mm256_sign_epi8(w[r], w[r]), _mm256_sign_epi8(act, w[r]))
                          : dot_u8s8(w[r], act);
            reduce8(v, &lo, &hi);
            __m256i s = _mm256_add_epi32(lo, hi);
            if (BIAS)
                s = _mm256_add_epi32(s, _mm256_set1_epi32(a->corr[tt * a->corr_stride + b]));
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(s),
                                                   _mm256_set1_ps(a->d[tt * a->d_stride + b])),
                                     dw, acc[t]);
            if (MIN)
                acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(a->dsum[tt * a->d_stride + b]), acc[t]);
        }
        if ((b + 1) % KCB == 0 || b + 1 == nb)
            chunk_done(T, acc, tot, b < KCB);
    }
}

/* Dword at byte offset off of each of the 8 rows, lane r from row r. */
AI __m256i load_d8(const uint8_t *const p[8], size_t off)
{
    return _mm256_setr_epi32(load_i32(p[0] + off), load_i32(p[1] + off), load_i32(p[2] + off),
                             load_i32(p[3] + off), load_i32(p[4] + off), load_i32(p[5] + off),
                             load_i32(p[6] + off), load_i32(p[7] + off));
}

/* Scales of super-block sb for 8 rows, lane r from row r, each the same float product
 * as row_superblock's: s[g] (per 16 columns; Q4_K/Q5_K: s[2j] = s[2j+1]), mn[j]. */
AI void sb_scales8(const gm_type type, const uint8_t *const p[8], int64_t sb, __m256 s[16],
                   __m256 mn[8])
{
    const __m256i ff = _mm256_set1_epi32(0xFF);
    if (type == GM_TYPE_Q6_K) {
        const size_t o = (size_t)sb * sizeof(gm_block_q6_K);
        /* d is the high half of the dword at 206 (the block ends with it) */
        const __m256 d = _mm256_cvtph_ps(_mm256_castsi256_si128(_mm256_permute4x64_epi64(
            _mm256_packus_epi32(_mm256_srli_epi32(load_d8(p, o + 206), 16), _mm256_setzero_si256()), 0xD8)));
        for (int i = 0; i < 4; i++) {
            const __m256i u = load_d8(p, o + offsetof(gm_block_q6_K, scales) + 4 * (size_t)i);
            for (int b = 0; b < 4; b++) /* signed byte b of each lane */
                s[4 * i + b] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_srai_epi32(
                                                    _mm256_slli_epi32(u, 24 - 8 * b), 24)));
        }
        return;
    }
    const size_t o = (size_t)sb * (type == GM_TYPE_Q5_K ? sizeof(gm_block_q5_K) : sizeof(gm_block_q4_K));
    const __m256i dm = load_d8(p, o);
    const __m256i h = _mm256_permute4x64_epi64(
        _mm256_packus_epi32(_mm256_and_si256(dm, _mm256_set1_epi32(0xFFFF)), _mm256_srli_epi32(dm, 16)), 0xD8);
    const __m256 d = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    const __m256 ndmin = _mm256_xor_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)),
                                       _mm256_set1_ps(-0.0f));
    /* the 12 packed bytes as 3 dwords: see k4_scales */
    const __m256i u0 = load_d8(p, o + 4), u1 = load_d8(p, o + 8), u2 = load_d8(p, o + 12);
    const __m256i m6 = _mm256_set1_epi32(0x3F3F3F3F), m4 = _mm256_set1_epi32(0x0F0F0F0F);
    const __m256i m30 = _mm256_set1_epi32(0x30303030);
    __m256i sc[2], mm[2];
    sc[0] = _mm256_and_si256(u0, m6);
    mm[0] = _mm256_and_si256(u1, m6);
    sc[1] = _mm256_or_si256(_mm256_and_si256(u2, m4), _mm256_and_si256(_mm256_srli_epi32(u0, 2), m30));
    mm[1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u2, 4), m4),
                            _mm256_and_si256(_mm256_srli_epi32(u1, 2), m30));
    for (int j = 0; j < 8; j++) {
        const int sh = 8 * (j & 3);
        s[2 * j] = s[2 * j + 1] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(
                                      _mm256_and_si256(_mm256_srli_epi32(sc[j >> 2], sh), ff)));
        mn[j] = _mm256_mul_ps(ndmin, _mm256_cvtepi32_ps(
                                  _mm256_and_si256(_mm256_srli_epi32(mm[j >> 2], sh), ff)));
    }
}

/* K-quants: per sub-block (Q6_K: per 16 columns) the exact sum, then float scales. */
AI void rows8_k(const gm_type type, const uint8_t *const p[8], const gm_act *a, int64_t t0,
                const int T, __m256 tot[TQ], pfcur *pf)
{
    const int64_t nsb = a->k / GM_QK_K;
    const int Q6 = type == GM_TYPE_Q6_K;
    __m256 acc[TQ];
    for (int t = 0; t < T; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t sb = 0; sb < nsb; sb++) {
        for (int i = 0; i < 8; i++)
            pf_next(pf);
        _Alignas(32) __m256i W[8][8];
        __m256 s[16], mn[8];
        for (int r = 0; r < 8; r++)
            row_superblock(type, p[r], sb, W[r], NULL, NULL);
        sb_scales8(type, p, sb, s, mn);
        for (int j = 0; j < 8; j++) {
            const int64_t b = sb * 8 + j;
            for (int t = 0; t < T; t++) {
                const int64_t tt = t0 + t;
                const __m256i act = load_act(a, tt, 32 * b);
                __m256i v[8], lo, hi;
                for (int r = 0; r < 8; r++)
                    v[r] = dot_u8s8(W[r][j], act);
                reduce8(v, &lo, &hi);
                const __m256 da = _mm256_set1_ps(a->d[tt * a->d_stride + b]);
                if (Q6) {
                    const int32_t *corr = a->corr + tt * a->corr_stride + 2 * b;
                    lo = _mm256_add_epi32(lo, _mm256_set1_epi32(corr[0]));
                    hi = _mm256_add_epi32(hi, _mm256_set1_epi32(corr[1]));
                    acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(lo), da),
                                             s[2 * j], acc[t]);
                    acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(hi), da),
                                             s[2 * j + 1], acc[t]);
                } else {
                    acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(lo, hi)), da),
                                             s[2 * j], acc[t]);
                    acc[t] = _mm256_fmadd_ps(mn[j],
                                             _mm256_set1_ps(a->dsum[tt * a->d_stride + b]), acc[t]);
                }
            }
            if ((b + 1) % KCB == 0 || b + 1 == nsb * 8)
                chunk_done(T, acc, tot, b < KCB);
        }
    }
}

AI void rows8_any(const gm_type type, const uint8_t *const p[8], const gm_act *a, int64_t t0,
                  const int T, __m256 tot[TQ], pfcur *pf)
{
    if (type == GM_TYPE_Q4_K || type == GM_TYPE_Q5_K || type == GM_TYPE_Q6_K)
        rows8_k(type, p, a, t0, T, tot, pf);
    else
        rows8_q32(type, p, a, t0, T, tot, pf);
}

AI void mm_rows8(const gm_type type, const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1,
                 float *y, int64_t ldy)
{
    const int64_t n = a->n, nblk = w->cols / 32;
    for (int64_t t0 = 0; t0 < n; t0 += TQ) {
        const int T = n - t0 < TQ ? (int)(n - t0) : TQ;
        for (int64_t pr0 = r0; pr0 < r1; pr0 += 8) {
            const int valid = r1 - pr0 < 8 ? (int)(r1 - pr0) : 8;
            const uint8_t *p[8];
            for (int i = 0; i < 8; i++)
                p[i] = (const uint8_t *)w->data + (size_t)(pr0 + (i < valid ? i : valid - 1)) * w->row_bytes;
            const int64_t nxt_rows = r1 - (pr0 + 8) < 8 ? r1 - (pr0 + 8) : 8;
            const size_t nxt_bytes = nxt_rows > 0 ? (size_t)nxt_rows * w->row_bytes : 0;
            pfcur pf = { (const char *)w->data + (size_t)(pr0 + 8) * w->row_bytes, 0, nxt_bytes,
                         (nxt_bytes / (size_t)nblk + 63) & ~(size_t)63 };
            __m256 tot[TQ];
            for (int t = 0; t < TQ; t++)
                tot[t] = _mm256_setzero_ps(); /* overwritten by the first chunk */
            switch (T) {
            case 4: rows8_any(type, p, a, t0, 4, tot, &pf); break;
            case 3: rows8_any(type, p, a, t0, 3, tot, &pf); break;
            case 2: rows8_any(type, p, a, t0, 2, tot, &pf); break;
            default: rows8_any(type, p, a, t0, 1, tot, &pf); break;
            }
            for (int t = 0; t < T; t++) {
                float *yp = y + (t0 + t) * ldy + pr0;
                if (valid == 8) {
                    _mm256_storeu_ps(yp, tot[t]);
                } else {
                    _Alignas(32) float tmp[8];
                    _mm256_store_ps(tmp, tot[t]);
                    for (int i = 0; i < valid; i++)
                        yp[i] = tmp[i];
                }
            }
        }
    }
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
    row_f(type, row, a, t0, T, out);
}

/* Float weights: one row at a time, every n (so batch-invariant as well). */
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
