/* kernels-avx512.c — AVX-512 (F/BW/VL/DQ + VNNI) matmul kernels.
 *
 * Layout idea: one zmm holds 16 output rows, one int32 lane per row. A group of 16 weight
 * rows is decoded, 32 columns (one block) at a time, into 8 vectors of unsigned bytes;
 * vector s holds in lane r the 4 quants of row r for columns 4s..4s+3. Then
 *     vpdpbusd(acc[t], wvec[s], broadcast(act[t][4s..4s+3]))
 * adds 64 products for 16 rows of token t with no horizontal sums and no shuffles in the
 * inner loop. The decode (16-row transpose + nibble unpacking) is done once per K chunk
 * into a small L1-resident panel and reused for every token, so a prefill batch pays it
 * once; a decode step (n = 1) pays it once per weight, which is cheap next to the
 * memory traffic.
 *
 * Weight quants are made unsigned (q + bias) for vpdpbusd; the int32 accumulator of each
 * block starts at -bias*sum(act) (precomputed by the driver), so after the block it holds
 * exactly the signed integer dot product of gm_vec_dot_ref. It is then converted and
 * scaled in float: acc += float(isum) * d_act * d_w(row) [+ min(row) * d_act*sum(act)].
 *
 * Float weights use the same scheme with a float panel (16 rows x 1 column per vector)
 * and FMAs against broadcast activations.
 *
 * Batches of 16+ tokens go to AMX tile kernels where the CPU has AMX-INT8 (same panel,
 * see the AMX section). Numbers on the 2-core Sapphire Rapids VM (tools/kernel-bench):
 * n=1 streams at 70-85% of the measured read bandwidth thanks to software prefetch of
 * the next panel; n=512 Q4_0/Q8_0/Q4_K reach ~340-360 GMAC/s on 2 threads (AMX; ~200
 * per core with VNNI alone).
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kernels-impl.h"
#include "quant.h"

#define AI static inline __attribute__((always_inline))

#define RW 2            /* row groups of 16 per panel */
#define PR (16 * RW)    /* rows per panel */
#define TT 6            /* token tile (quantized) */
#define KCB 16          /* 32-column blocks per K chunk (a multiple of 8: K-quant super-blocks) */
#define TF 8            /* token tile (float weights) */
#define KCF 128         /* columns per K chunk (float weights) */
#define TOK_BLOCK_BYTES (1024 * 1024) /* activation bytes per token block (L2 reuse) */

/* One group of 16 rows: row pointers (rows past the range repeat the last one, their
 * results are never stored) and their byte offsets from row 0 for gathers. */
typedef struct {
    const uint8_t *p[16];
    __m512i off;
} rowgrp;

static void rowgrp_init(rowgrp *g, const gm_matrix *w, int64_t r0, int64_t rlast)
{
    int32_t off[16];
    const uint8_t *base = w->data;
    for (int i = 0; i < 16; i++) {
        int64_t r = r0 + i <= rlast ? r0 + i : rlast;
        g->p[i] = base + (size_t)r * w->row_bytes;
        off[i] = (int32_t)((size_t)(r - r0 < 0 ? 0 : r - r0) * w->row_bytes);
    }
    g->off = _mm512_loadu_si512(off);
}

static inline int32_t load_i32(const void *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* 16 rows x 16 bytes at byte offset `off` of each row -> out[j] has in lane r the bytes
 * 4j..4j+3 of row r. */
AI void load_t16x4(const rowgrp *g, size_t off, __m512i out[4])
{
    __m512i z[4];
    for (int a = 0; a < 4; a++) {
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(g->p[a] + off)));
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(g->p[a + 4] + off)), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(g->p[a + 8] + off)), 2);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(g->p[a + 12] + off)), 3);
        z[a] = v;
    }
    /* lane L of z[a] is row a + 4L; a 4x4 dword transpose inside each 128-bit lane
     * puts row 4L + i at dword 4L + i. */
    const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
    const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
    out[0] = _mm512_unpacklo_epi64(t0, t2);
    out[1] = _mm512_unpackhi_epi64(t0, t2);
    out[2] = _mm512_unpacklo_epi64(t1, t3);
    out[3] = _mm512_unpackhi_epi64(t1, t3);
}

/* The 4 bytes at `off` of each of the 16 rows (never past a block's end). */
AI __m512i gather32(const rowgrp *g, size_t off)
{
    return _mm512_i32gather_epi32(g->off, (const void *)(g->p[0] + off), 1);
}

AI __m512 half_lo(__m512i v)
{
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
}

AI __m512 half_hi(__m512i v)
{
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16)));
}

/* ------------------------------------------------------------ quantized panel */

typedef struct {
    __m512i w[KCB][RW][8];
    __m512 s[KCB][RW][2];   /* per-row scale of each 32 columns (or of each 16 for Q6_K) */
    __m512 m[KCB][RW];      /* per-row min term (types with a min) */
} qpanel;

/* Block b (32 columns) of Q4_0. */
AI void dec_q4_0(const rowgrp *g, int64_t b, __m512i *w, __m512 *s)
{
    const size_t off = (size_t)b * sizeof(gm_block_q4_0);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512i v[4];
    load_t16x4(g, off + 2, v);
    for (int j = 0; j < 4; j++) {
        w[j] = _mm512_and_si512(v[j], m4);
        w[j + 4] = _mm512_and_si512(_mm512_srli_epi16(v[j], 4), m4);
    }
    s[0] = half_lo(gather32(g, off));
}

AI void dec_q4_1(const rowgrp *g, int64_t b, __m512i *w, __m512 *s, __m512 *m)
{
    const size_t off = (size_t)b * sizeof(gm_block_q4_1);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512i v[4];
    load_t16x4(g, off + 4, v);
    for (int j = 0; j < 4; j++) {
        w[j] = _mm512_and_si512(v[j], m4);
        w[j + 4] = _mm512_and_si512(_mm512_srli_epi16(v[j], 4), m4);
    }
    const __m512i dm = gather32(g, off);
    s[0] = half_lo(dm);
    *m = half_hi(dm);
}

AI void dec_q5_0(const rowgrp *g, int64_t b, __m512i *w, __m512 *s)
{
    const size_t off = (size_t)b * sizeof(gm_block_q5_0);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i b16 = _mm512_set1_epi8(16);
    __m512i v[4];
    load_t16x4(g, off + 6, v);
    const __m512i h = gather32(g, off + 2);
    /* Column c's 5th bit is bit c of the row's qh. For step s (columns 4s..4s+3) copy
     * qh byte s/2 into each byte of the lane, then test bit 4*(s&1) + i in byte i. */
    const __m512i rep0 = _mm512_set1_epi32(0x00000000), rep1 = _mm512_set1_epi32(0x01010101);
    const __m512i rep2 = _mm512_set1_epi32(0x02020202), rep3 = _mm512_set1_epi32(0x03030303);
    const __m512i lane_base = _mm512_set_epi32(12 * 0x01010101, 8 * 0x01010101, 4 * 0x01010101, 0,
                                               12 * 0x01010101, 8 * 0x01010101, 4 * 0x01010101, 0,
                                               12 * 0x01010101, 8 * 0x01010101, 4 * 0x01010101, 0,
                                               12 * 0x01010101, 8 * 0x01010101, 4 * 0x01010101, 0);
    const __m512i bits_lo = _mm512_set1_epi32(0x08040201), bits_hi = _mm512_set1_epi32((int)0x80402010);
    for (int st = 0; st < 8; st++) {
        const __m512i nib = st < 4 ? _mm512_and_si512(v[st], m4)
                                   : _mm512_and_si512(_mm512_srli_epi16(v[st - 4], 4), m4);
        const __m512i rep = (st >> 1) == 0 ? rep0 : (st >> 1) == 1 ? rep1 : (st >> 1) == 2 ? rep2 : rep3;
        const __m512i hb = _mm512_shuffle_epi8(h, _mm512_add_epi8(lane_base, rep));
        const __mmask64 k = _mm512_test_epi8_mask(hb, (st & 1) ? bits_hi : bits_lo);
        w[st] = _mm512_mask_add_epi8(nib, k, nib, b16);
    }
    s[0] = half_lo(gather32(g, off));
}

AI void dec_q8_0(const rowgrp *g, int64_t b, __m512i *w, __m512 *s)
{
    const size_t off = (size_t)b * sizeof(gm_block_q8_0);
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    __m512i v[4];
    load_t16x4(g, off + 2, v);
    for (int j = 0; j < 4; j++)
        w[j] = _mm512_xor_si512(v[j], x80);
    load_t16x4(g, off + 18, v);
    for (int j = 0; j < 4; j++)
        w[j + 4] = _mm512_xor_si512(v[j], x80);
    s[0] = half_lo(gather32(g, off));
}

/* Q4_K / Q5_K 6-bit scales and mins of sub-block j from the 12 scale bytes, given as
 * three gathered dwords S0 (bytes 0-3), S1 (4-7), S2 (8-11). */
AI void k4_scale_min(__m512i S0, __m512i S1, __m512i S2, int j, __m512i *sc, __m512i *mn)
{
    const __m512i m6 = _mm512_set1_epi32(63), m4 = _mm512_set1_epi32(15), m3 = _mm512_set1_epi32(3);
    if (j < 4) {
        *sc = _mm512_and_si512(_mm512_srli_epi32(S0, 8 * j), m6);
        *mn = _mm512_and_si512(_mm512_srli_epi32(S1, 8 * j), m6);
    } else {
        const int jj = j - 4;
        const __m512i lo_s = _mm512_and_si512(_mm512_srli_epi32(S2, 8 * jj), m4);
        const __m512i lo_m = _mm512_and_si512(_mm512_srli_epi32(S2, 8 * jj + 4), m4);
        const __m512i hi_s = _mm512_and_si512(_mm512_srli_epi32(S0, 8 * jj + 6), m3);
        const __m512i hi_m = _mm512_and_si512(_mm512_srli_epi32(S1, 8 * jj + 6), m3);
        *sc = _mm512_or_si512(lo_s, _mm512_slli_epi32(hi_s, 4));
        *mn = _mm512_or_si512(lo_m, _mm512_slli_epi32(hi_m, 4));
    }
}

/* Super-block sb of Q4_K (five = 0) or Q5_K (five = 1) into panel blocks kb..kb+7. */
AI void dec_q45_K(const rowgrp *g, int64_t sb, int five, qpanel *P, int kb, int rg)
{
    const size_t bsz = five ? sizeof(gm_block_q5_K) : sizeof(gm_block_q4_K);
    const size_t off = (size_t)sb * bsz;
    const size_t qs_off = off + (five ? 48 : 16);
    const __m512i dm = gather32(g, off);
    const __m512 d = half_lo(dm), negdmin = _mm512_sub_ps(_mm512_setzero_ps(), half_hi(dm));
    const __m512i S0 = gather32(g, off + 4), S1 = gather32(g, off + 8), S2 = gather32(g, off + 12);
    for (int j = 0; j < 8; j++) {
        __m512i sc, mn;
        k4_scale_min(S0, S1, S2, j, &sc, &mn);
        P->s[kb + j][rg][0] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc));
        P->m[kb + j][rg] = _mm512_mul_ps(negdmin, _mm512_cvtepi32_ps(mn));
    }
    __m512i H[8];
    if (five) {
        load_t16x4(g, off + 16, H);
        load_t16x4(g, off + 32, H + 4);
    }
    const __m512i m4 = _mm512_set1_epi8(0x0F), b16 = _mm512_set1_epi8(0x10);
    for (int grp = 0; grp < 4; grp++) {
        __m512i v[8];
        load_t16x4(g, qs_off + 32 * grp, v);
        load_t16x4(g, qs_off + 32 * grp + 16, v + 4);
        for (int st = 0; st < 8; st++) {
            __m512i lo = _mm512_and_si512(v[st], m4);
            __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v[st], 4), m4);
            if (five) {
                /* qh bit j of column l is the 5th bit of sub-block j: move it to bit 4 */
                const int j0 = 2 * grp, j1 = 2 * grp + 1;
                __m512i h0 = j0 < 4 ? _mm512_slli_epi16(H[st], 4 - j0)
                                    : j0 == 4 ? H[st] : _mm512_srli_epi16(H[st], j0 - 4);
                __m512i h1 = j1 < 4 ? _mm512_slli_epi16(H[st], 4 - j1)
                                    : j1 == 4 ? H[st] : _mm512_srli_epi16(H[st], j1 - 4);
                lo = _mm512_ternarylogic_epi32(lo, h0, b16, 0xF8); /* lo | (h0 & 0x10) */
                hi = _mm512_ternarylogic_epi32(hi, h1, b16, 0xF8);
            }
            P->w[kb + 2 * grp][rg][st] = lo;
            P->w[kb + 2 * grp + 1][rg][st] = hi;
        }
    }
}

AI void dec_q6_K(const rowgrp *g, int64_t sb, qpanel *P, int kb, int rg)
{
    const size_t off = (size_t)sb * sizeof(gm_block_q6_K);
    /* d is the last field: read the dword ending at the block's end. */
    const __m512 d = half_hi(gather32(g, off + 206));
    __m512i G[4];
    for (int i = 0; i < 4; i++)
        G[i] = gather32(g, off + 192 + 4 * i);
    for (int grp = 0; grp < 16; grp++) {
        const __m512i sc = _mm512_srai_epi32(_mm512_slli_epi32(G[grp / 4], 24 - 8 * (grp % 4)), 24);
        P->s[kb + grp / 2][rg][grp % 2] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc));
    }
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    for (int h = 0; h < 2; h++) {
        __m512i A[8], B[8], H[8];
        load_t16x4(g, off + 64 * h, A);
        load_t16x4(g, off + 64 * h + 16, A + 4);
        load_t16x4(g, off + 64 * h + 32, B);
        load_t16x4(g, off + 64 * h + 48, B + 4);
        load_t16x4(g, off + 128 + 32 * h, H);
        load_t16x4(g, off + 128 + 32 * h + 16, H + 4);
        for (int st = 0; st < 8; st++) {
            const __m512i a_lo = _mm512_and_si512(A[st], m4);
            const __m512i b_lo = _mm512_and_si512(B[st], m4);
            const __m512i a_hi = _mm512_and_si512(_mm512_srli_epi16(A[st], 4), m4);
            const __m512i b_hi = _mm512_and_si512(_mm512_srli_epi16(B[st], 4), m4);
            P->w[kb + 4 * h + 0][rg][st] = _mm512_ternarylogic_epi32(a_lo, _mm512_slli_epi16(H[st], 4), m30, 0xF8);
            P->w[kb + 4 * h + 1][rg][st] = _mm512_ternarylogic_epi32(b_lo, _mm512_slli_epi16(H[st], 2), m30, 0xF8);
            P->w[kb + 4 * h + 2][rg][st] = _mm512_ternarylogic_epi32(a_hi, H[st], m30, 0xF8);
            P->w[kb + 4 * h + 3][rg][st] = _mm512_ternarylogic_epi32(b_hi, _mm512_srli_epi16(H[st], 2), m30, 0xF8);
        }
    }
}

/* Decodes blocks [kb0, kb0 + nkb) of the first rw (<= RW) row groups into the panel. */
/* Software prefetch of the next panel, spread over the decode work: a burst of
 * prefetches would stall on the few line-fill buffers. */
typedef struct {
    const char *p;
    size_t off, end, per_block;
} pfcur;

AI void pf_block(pfcur *c)
{
    for (size_t i = 0; i < c->per_block && c->off < c->end; i++, c->off += 64)
        _mm_prefetch(c->p + c->off, _MM_HINT_T1);
}

AI void decode_chunk(const gm_type type, const int rw, const rowgrp *G, int64_t kb0, int nkb,
                     qpanel *P, pfcur *pf)
{
    for (int rg = 0; rg < rw; rg++) {
        switch (type) {
        case GM_TYPE_Q4_0:
            for (int kb = 0; kb < nkb; kb++) {
                pf_block(pf);
                dec_q4_0(&G[rg], kb0 + kb, P->w[kb][rg], P->s[kb][rg]);
            }
            break;
        case GM_TYPE_Q4_1:
            for (int kb = 0; kb < nkb; kb++) {
                pf_block(pf);
                dec_q4_1(&G[rg], kb0 + kb, P->w[kb][rg], P->s[kb][rg], &P->m[kb][rg]);
            }
            break;
        case GM_TYPE_Q5_0:
            for (int kb = 0; kb < nkb; kb++) {
                pf_block(pf);
                dec_q5_0(&G[rg], kb0 + kb, P->w[kb][rg], P->s[kb][rg]);
            }
            break;
        case GM_TYPE_Q8_0:
            for (int kb = 0; kb < nkb; kb++) {
                pf_block(pf);
                dec_q8_0(&G[rg], kb0 + kb, P->w[kb][rg], P->s[kb][rg]);
            }
            break;
        case GM_TYPE_Q4_K:
            for (int kb = 0; kb < nkb; kb += 8) {
                for (int i = 0; i < 8; i++)
                    pf_block(pf);
                dec_q45_K(&G[rg], (kb0 + kb) / 8, 0, P, kb, rg);
            }
            break;
        case GM_TYPE_Q5_K:
            for (int kb = 0; kb < nkb; kb += 8) {
                for (int i = 0; i < 8; i++)
                    pf_block(pf);
                dec_q45_K(&G[rg], (kb0 + kb) / 8, 1, P, kb, rg);
            }
            break;
        case GM_TYPE_Q6_K:
            for (int kb = 0; kb < nkb; kb += 8) {
                for (int i = 0; i < 8; i++)
                    pf_block(pf);
                dec_q6_K(&G[rg], (kb0 + kb) / 8, P, kb, rg);
            }
            break;
        default:
            break;
        }
    }
}

/* Turns the panel's unsigned quants back into signed ones (q - bias) for AMX's
 * signed x signed product, which needs no bias correction. */
AI void panel_to_signed(const gm_type type, int nkb, qpanel *P)
{
    const int bias = gm_kernel_bias(type);
    const __m512i bv = _mm512_set1_epi8((char)bias);
    for (int kb = 0; kb < nkb; kb++)
        for (int rg = 0; rg < RW; rg++)
            for (int st = 0; st < 8; st++)
                P->w[kb][rg][st] = _mm512_sub_epi8(P->w[kb][rg][st], bv);
}

/* acc[g][t] += panel blocks [0, nkb) x tokens t0..t0+T-1 (columns from block kb0).
 * NSC: scales per 32 columns (1, or 2 for Q6_K); MIN: add the min term. */
AI void micro_q(const qpanel *P, int nkb, int64_t kb0, const gm_act *a, int64_t t0,
                const int T, const int NSC, const int MIN, const int rw, __m512 acc[RW][TT])
{
    const int8_t *aq[TT];
    const float *ad[TT], *am[TT];
    const int32_t *ac[TT];
    gm_act_block_ptrs(a, t0, T, kb0, NSC, MIN, aq, ad, ac, am);
    for (int kb = 0; kb < nkb; kb++) {
        for (int h = 0; h < NSC; h++) {
            __m512i ia[RW][TT];
            for (int g = 0; g < rw; g++)
                for (int t = 0; t < T; t++)
                    ia[g][t] = _mm512_set1_epi32(ac[t][kb * NSC + h]);
            for (int st = h * 8 / NSC; st < (h + 1) * 8 / NSC; st++) {
                __m512i wv[RW];
                for (int g = 0; g < rw; g++)
                    wv[g] = _mm512_load_si512(&P->w[kb][g][st]);
                for (int t = 0; t < T; t++) {
                    const __m512i av = _mm512_set1_epi32(load_i32(aq[t] + kb * 32 + 4 * st));
                    for (int g = 0; g < rw; g++)
                        ia[g][t] = _mm512_dpbusd_epi32(ia[g][t], wv[g], av);
                }
            }
            for (int t = 0; t < T; t++) {
                const __m512 da = _mm512_set1_ps(ad[t][kb]);
                for (int g = 0; g < rw; g++)
                    acc[g][t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(ia[g][t]), da),
                                                P->s[kb][g][h], acc[g][t]);
            }
        }
        if (MIN) {
            for (int t = 0; t < T; t++) {
                const __m512 ds = _mm512_set1_ps(am[t][kb]);
                for (int g = 0; g < rw; g++)
                    acc[g][t] = _mm512_fmadd_ps(P->m[kb][g], ds, acc[g][t]);
            }
        }
    }
}

/* Stores (first K chunk) or adds the tile into y. */
AI void store_tile(__m512 acc[RW][TT], const int T, const int rw, float *y, int64_t ldy, int64_t t0,
                   int64_t pr0, int64_t r1, int first)
{
    for (int g = 0; g < rw; g++) {
        const int64_t rr = pr0 + 16 * g;
        if (rr >= r1)
            break;
        const int valid = r1 - rr >= 16 ? 16 : (int)(r1 - rr);
        const __mmask16 mk = (__mmask16)((1u << valid) - 1);
        for (int t = 0; t < T; t++) {
            float *yp = y + (t0 + t) * ldy + rr;
            __m512 v = acc[g][t];
            if (!first)
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, yp));
            _mm512_mask_storeu_ps(yp, mk, v);
        }
    }
}

AI void run_tile_q(const int T, const int NSC, const int MIN, const int rw, const qpanel *P, int nkb,
                   int64_t kb0, const gm_act *a, int64_t t0, float *y, int64_t ldy, int64_t pr0,
                   int64_t r1, int first)
{
    __m512 acc[RW][TT];
    for (int g = 0; g < rw; g++)
        for (int t = 0; t < T; t++)
            acc[g][t] = _mm512_setzero_ps();
    micro_q(P, nkb, kb0, a, t0, T, NSC, MIN, rw, acc);
    store_tile(acc, T, rw, y, ldy, t0, pr0, r1, first);
}

AI void tiles_q(const int NSC, const int MIN, const int rw, const qpanel *P, int nkb, int64_t kb0,
                const gm_act *a, int64_t tb0, int64_t tb1, float *y, int64_t ldy, int64_t pr0,
                int64_t r1, int first)
{
    int64_t t0 = tb0;
    for (; t0 + TT <= tb1; t0 += TT)
        run_tile_q(TT, NSC, MIN, rw, P, nkb, kb0, a, t0, y, ldy, pr0, r1, first);
    switch (tb1 - t0) {
    case 5: run_tile_q(5, NSC, MIN, rw, P, nkb, kb0, a, t0, y, ldy, pr0, r1, first); break;
    case 4: run_tile_q(4, NSC, MIN, rw, P, nkb, kb0, a, t0, y, ldy, pr0, r1, first); break;
    case 3: run_tile_q(3, NSC, MIN, rw, P, nkb, kb0, a, t0, y, ldy, pr0, r1, first); break;
    case 2: run_tile_q(2, NSC, MIN, rw, P, nkb, kb0, a, t0, y, ldy, pr0, r1, first); break;
    case 1: run_tile_q(1, NSC, MIN, rw, P, nkb, kb0, a, t0, y, ldy, pr0, r1, first); break;
    default: break;
    }
}

AI void mm_quant_rw(const gm_type type, const int rw, const gm_matrix *w, const gm_act *a,
                    int64_t r0, int64_t r1, float *y, int64_t ldy)
{
    const int64_t pr = 16 * rw;
    const int NSC = type == GM_TYPE_Q6_K ? 2 : 1;
    const int MIN = type == GM_TYPE_Q4_1 || type == GM_TYPE_Q4_K || type == GM_TYPE_Q5_K;
    const int64_t nblk = w->cols / 32;
    const int64_t n = a->n;
    const int64_t tblk = gm_token_block(TOK_BLOCK_BYTES, n, w->cols, TT);
    _Alignas(64) qpanel P;
    rowgrp G[RW];
    for (int64_t tb0 = 0; tb0 < n; tb0 += tblk) {
        const int64_t tb1 = tb0 + tblk < n ? tb0 + tblk : n;
        for (int64_t pr0 = r0; pr0 < r1; pr0 += pr) {
            for (int g = 0; g < rw; g++)
                rowgrp_init(&G[g], w, pr0 + 16 * g, r1 - 1);
            /* The next panel's rows are one contiguous range: prefetch it into L2 while
             * decoding this one (a few lines per block), so streaming a large matrix
             * (n = 1) does not wait on the hardware prefetchers, which see 32
             * interleaved row streams. Measured: ~1.5x the bandwidth of no prefetch. */
            const uint8_t *nxt = (const uint8_t *)w->data + (size_t)(pr0 + pr) * w->row_bytes;
            const int64_t nxt_rows = r1 - (pr0 + pr) < pr ? r1 - (pr0 + pr) : pr;
            const size_t nxt_bytes = nxt_rows > 0 ? (size_t)nxt_rows * w->row_bytes : 0;
            pfcur pf = { (const char *)nxt, 0, nxt_bytes,
                         (nxt_bytes / 64 + (size_t)(rw * nblk) - 1) / (size_t)(rw * nblk) };
            for (int64_t kb0 = 0; kb0 < nblk; kb0 += KCB) {
                const int nkb = nblk - kb0 < KCB ? (int)(nblk - kb0) : KCB;
                decode_chunk(type, rw, G, kb0, nkb, &P, &pf);
                tiles_q(NSC, MIN, rw, &P, nkb, kb0, a, tb0, tb1, y, ldy, pr0, r1, kb0 == 0);
            }
        }
    }
}

/* One token streams each weight once: 16-row panels (half the width of the batch
 * panels) keep fewer row streams open and the next-panel prefetch nearer, measured ~5%
 * faster whole-model decode. Batches keep 32-row panels, which reuse each activation
 * broadcast for two row groups. Each row's arithmetic is the same either way. */
AI void mm_quant(const gm_type type, const gm_matrix *w, const gm_act *a, int64_t r0,
                 int64_t r1, float *y, int64_t ldy)
{
    if (a->n == 1)
        mm_quant_rw(type, 1, w, a, r0, r1, y, ldy);
    else
        mm_quant_rw(type, RW, w, a, r0, r1, y, ldy);
}

static void mm_q4_0(const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1, float *y, int64_t ldy)
{
    mm_quant(GM_TYPE_Q4_0, w, a, r0, r1, y, ldy);
}
static void mm_q4_1(const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1, float *y, int64_t ldy)
{
    mm_quant(GM_TYPE_Q4_1, w, a, r0, r1, y, ldy);
}
static void mm_q5_0(const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1, float *y, int64_t ldy)
{
    mm_quant(GM_TYPE_Q5_0, w, a, r0, r1, y, ldy);
}
static void mm_q8_0(const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1, float *y, int64_t ldy)
{
    mm_quant(GM_TYPE_Q8_0, w, a, r0, r1, y, ldy);
}
static void mm_q4_K(const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1, float *y, int64_t ldy)
{
    mm_quant(GM_TYPE_Q4_K, w, a, r0, r1, y, ldy);
}
static void mm_q5_K(const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1, float *y, int64_t ldy)
{
    mm_quant(GM_TYPE_Q5_K, w, a, r0, r1, y, ldy);
}
static void mm_q6_K(const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1, float *y, int64_t ldy)
{
    mm_quant(GM_TYPE_Q6_K, w, a, r0, r1, y, ldy);
}

/* ------------------------------------------------------------ AMX (tile) kernels
 *
 * With AMX-INT8 one tdpbssd/tdpbsud multiplies a 16-token x K tile of activation quants
 * (straight from the activation rows) by a K x 16-row tile of weight quants, which is
 * exactly the panel layout above (one 64-byte row per 4 columns). K is one block (32
 * columns; 16 for Q6_K, whose scales are per 16), so every product is the exact integer
 * block sum; the 16x16 int32 result goes through memory into the same float epilogue as
 * the VNNI kernels, with 16 float accumulators (one per token, 16 rows each).
 * Bias types use signed weights (tdpbssd, no correction); Q4_1/Q4_K/Q5_K keep unsigned
 * weights (tdpbsud) plus their min term. The driver pads the activation arrays to a
 * multiple of 16 tokens with zero rows.
 */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg;

/* No "memory" clobbers in the hot loop (they would force the float accumulators out of
 * registers): tile loads read memory that is not written while tiles are in use (the
 * panel is fenced by amx_barrier() after decoding), and a tile store names the 1 KiB it
 * writes as an output. */
typedef struct { int32_t v[16][16]; } amx_c;
#define AMX_LOAD(t, base, stride) \
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(base), "r"((long)(stride)))
#define AMX_STORE(t, cb) \
    __asm__ volatile("tilestored %%tmm" #t ", (%1,%2,1)" : "=m"(*(amx_c *)(cb)) : "r"(cb), "r"(64l))
#define amx_barrier() __asm__ volatile("" ::: "memory")
#define AMX_ZERO(t) __asm__ volatile("tilezero %%tmm" #t ::)
#define AMX_DPBSSD(c, a, b) __asm__ volatile("tdpbssd %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)
#define AMX_DPBSUD(c, a, b) __asm__ volatile("tdpbsud %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

#define AMX_LAG 2
#define AMX_NBUF (AMX_LAG + 1)

static int g_amx_ok;
static pthread_once_t g_amx_once = PTHREAD_ONCE_INIT;

static void amx_init(void)
{
    const gm_cpu_features *f = gm_cpu_get_features();
    /* Linux hands out the 8 KiB tile state only on request (ARCH_REQ_XCOMP_PERM for
     * XFEATURE_XTILEDATA); without it the first tile instruction faults. */
    if (f->amx_tile && f->amx_int8 && f->avx512f)
        g_amx_ok = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18) == 0;
}

int gm_amx_available(void)
{
    pthread_once(&g_amx_once, amx_init);
    return g_amx_ok;
}

/* Product i (one block, or half a block for Q6_K) of the 16 tokens at ap and the 16 rows
 * at panel step bp. It uses C tile i % 4 and A/B tiles i % 2, so consecutive products
 * are independent and a C tile is zeroed again only four products after its store. */
#define AMX_PRODUCT1(c, at, bt, sgn, ap, astride, bp)                                        \
    do {                                                                                     \
        AMX_LOAD(at, ap, astride);                                                           \
        AMX_LOAD(bt, bp, 64);                                                                \
        AMX_ZERO(c);                                                                         \
        if (sgn) AMX_DPBSSD(c, at, bt); else AMX_DPBSUD(c, at, bt);                          \
    } while (0)
#define AMX_PRODUCT(i, sgn, ap, astride, bp)                                                  \
    do {                                                                                     \
        switch ((i) & 3) {                                                                   \
        case 0: AMX_PRODUCT1(0, 4, 6, sgn, ap, astride, bp); break;                          \
        case 1: AMX_PRODUCT1(1, 5, 7, sgn, ap, astride, bp); break;                          \
        case 2: AMX_PRODUCT1(2, 4, 6, sgn, ap, astride, bp); break;                          \
        default: AMX_PRODUCT1(3, 5, 7, sgn, ap, astride, bp); break;                         \
        }                                                                                    \
    } while (0)
#define AMX_SAVE(i, cbuf)                                                                    \
    do {                                                                                     \
        switch ((i) & 3) {                                                                   \
        case 0: AMX_STORE(0, cbuf); break;                                                   \
        case 1: AMX_STORE(1, cbuf); break;                                                   \
        case 2: AMX_STORE(2, cbuf); break;                                                   \
        default: AMX_STORE(3, cbuf); break;                                                  \
        }                                                                                    \
    } while (0)

/* The 16 accumulators are only ever indexed by constants, so they stay in registers. */
#define REP16(X) X(0); X(1); X(2); X(3); X(4); X(5); X(6); X(7); \
                 X(8); X(9); X(10); X(11); X(12); X(13); X(14); X(15)
#define AMX_ACC_ZERO(t) acc[t] = _mm512_setzero_ps()
#define AMX_ACC_SCALE(t)                                                                       \
    acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cb[t])),       \
                                           _mm512_set1_ps(adk[(t) * a->d_stride])), sc, acc[t])
#define AMX_ACC_MIN(t) acc[t] = _mm512_fmadd_ps(mv, _mm512_set1_ps(amk[(t) * a->d_stride]), acc[t])
#define AMX_ACC_STORE(t)                                                                       \
    do {                                                                                       \
        if ((t) < nt) {                                                                        \
            float *yp = y + (t0 + (t)) * ldy + rr;                                             \
            __m512 v = acc[t];                                                                 \
            if (kb0 != 0)                                                                      \
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, yp));                           \
            _mm512_mask_storeu_ps(yp, mk, v);                                                  \
        }                                                                                      \
    } while (0)

AI void mm_amx(const gm_type type, const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1,
               float *y, int64_t ldy)
{
    const int NSC = type == GM_TYPE_Q6_K ? 2 : 1;
    const int KB = 32 / NSC;                 /* columns per tile product */
    const int MIN = type == GM_TYPE_Q4_1 || type == GM_TYPE_Q4_K || type == GM_TYPE_Q5_K;
    const int SGN = gm_kernel_bias(type) != 0;
    const int64_t nblk = w->cols / 32;
    const int64_t n = a->n;
    const int64_t tblk = gm_token_block(TOK_BLOCK_BYTES, n, w->cols, 16);

    _Alignas(64) amx_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 4; t++) {
        cfg.colsb[t] = 64;                   /* C (tiles 0-3): 16 tokens x 16 int32 */
        cfg.rows[t] = 16;
    }
    for (int t = 0; t < 2; t++) {
        cfg.colsb[4 + t] = (uint16_t)KB;     /* A (4, 5): 16 tokens x KB bytes */
        cfg.rows[4 + t] = 16;
        cfg.colsb[6 + t] = 64;               /* B (6, 7): KB/4 rows of 16 x 4 bytes */
        cfg.rows[6 + t] = (uint8_t)(KB / 4);
    }
    __asm__ volatile("ldtilecfg %0" ::"m"(cfg));

    _Alignas(64) qpanel P;
    _Alignas(64) int32_t cbuf[AMX_NBUF][16][16];
    rowgrp G[RW];
    for (int64_t tb0 = 0; tb0 < n; tb0 += tblk) {
        const int64_t tb1 = tb0 + tblk < n ? tb0 + tblk : n;
        for (int64_t pr0 = r0; pr0 < r1; pr0 += PR) {
            for (int g = 0; g < RW; g++)
                rowgrp_init(&G[g], w, pr0 + 16 * g, r1 - 1);
            for (int64_t kb0 = 0; kb0 < nblk; kb0 += KCB) {
                const int nkb = nblk - kb0 < KCB ? (int)(nblk - kb0) : KCB;
                pfcur nopf = { NULL, 0, 0, 0 };
                amx_barrier(); /* earlier tile loads of the panel stay before its rewrite */
                decode_chunk(type, RW, G, kb0, nkb, &P, &nopf);
                if (SGN)
                    panel_to_signed(type, nkb, &P);
                amx_barrier();
                for (int64_t t0 = tb0; t0 < tb1; t0 += 16) {
                    const int nt = tb1 - t0 < 16 ? (int)(tb1 - t0) : 16;
                    for (int g = 0; g < RW; g++) {
                        const int64_t rr = pr0 + 16 * g;
                        if (rr >= r1)
                            break;
                        __m512 acc[16];
                        REP16(AMX_ACC_ZERO);
                        const int8_t *aq = a->q + t0 * a->q_stride + kb0 * 32;
                        const float *ad = a->d + t0 * a->d_stride + kb0;
                        const float *am = MIN ? a->dsum + t0 * a->d_stride + kb0 : NULL;
                        /* Software pipeline: the float epilogue of product i runs
                         * AMX_LAG products later, so its loads do not wait on the tile
                         * store just issued. */
                        const int nsteps = nkb * NSC;
                        AMX_PRODUCT(0, SGN, aq, a->q_stride, &P.w[0][g][0]);
                        for (int i = 0; i < nsteps + AMX_LAG; i++) {
                            if (i < nsteps) {
                                /* start the next product before saving this one */
                                if (i + 1 < nsteps) {
                                    const int j = i + 1;
                                    AMX_PRODUCT(j, SGN, aq + (j / NSC) * 32 + (j % NSC) * KB,
                                                a->q_stride, &P.w[j / NSC][g][(j % NSC) * (KB / 4)]);
                                }
                                AMX_SAVE(i, cbuf[i % AMX_NBUF]);
                            }
                            const int e = i - AMX_LAG;
                            if (e < 0)
                                continue;
                            const int kb = e / NSC, h = e % NSC;
                            const __m512 sc = P.s[kb][g][h];
                            const int32_t (*cb)[16] = cbuf[e % AMX_NBUF];
                            const float *adk = ad + kb;
                            REP16(AMX_ACC_SCALE);
                            if (MIN && h == NSC - 1) {
                                const __m512 mv = P.m[kb][g];
                                const float *amk = am + kb;
                                REP16(AMX_ACC_MIN);
                            }
                        }
                        const int valid = r1 - rr >= 16 ? 16 : (int)(r1 - rr);
                        const __mmask16 mk = (__mmask16)((1u << valid) - 1);
                        REP16(AMX_ACC_STORE);
                    }
                }
            }
        }
    }
    __asm__ volatile("tilerelease" ::: "memory");
}

#define AMX_KERNEL(name, type)                                                                 \
    static void name(const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1, float *y,    \
                     int64_t ldy)                                                              \
    {                                                                                          \
        mm_amx(type, w, a, r0, r1, y, ldy);                                                    \
    }

AMX_KERNEL(amx_q4_0, GM_TYPE_Q4_0)
AMX_KERNEL(amx_q4_1, GM_TYPE_Q4_1)
AMX_KERNEL(amx_q5_0, GM_TYPE_Q5_0)
AMX_KERNEL(amx_q8_0, GM_TYPE_Q8_0)
AMX_KERNEL(amx_q4_K, GM_TYPE_Q4_K)
AMX_KERNEL(amx_q5_K, GM_TYPE_Q5_K)
AMX_KERNEL(amx_q6_K, GM_TYPE_Q6_K)

gm_kernel_fn gm_kernel_amx(gm_type t)
{
    if (!gm_amx_available())
        return NULL;
    switch (t) {
    case GM_TYPE_Q4_0: return amx_q4_0;
    case GM_TYPE_Q4_1: return amx_q4_1;
    case GM_TYPE_Q5_0: return amx_q5_0;
    case GM_TYPE_Q8_0: return amx_q8_0;
    case GM_TYPE_Q4_K: return amx_q4_K;
    case GM_TYPE_Q5_K: return amx_q5_K;
    case GM_TYPE_Q6_K: return amx_q6_K;
    default: return NULL;
    }
}

/* ------------------------------------------------------------ float weights */

typedef struct {
    __m512 w[KCF][RW];      /* column c of the chunk: 16 rows per vector */
} fpanel;

/* 16 x 16 float transpose: in[r] = row r (16 columns) -> out[c] = column c. */
AI void transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    /* r[4q + c] now holds, per 128-bit lane L, column 4L + c of rows 4q..4q+3. */
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);       /* lanes 0,2 of r[i], r[i+4] */
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);   /* lanes 1,3 */
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);           /* column i */
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);       /* column i + 8 */
        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);  /* column i + 4 */
        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xDD); /* column i + 12 */
    }
}

AI __m512 load16f(const gm_type type, const uint8_t *p)
{
    switch (type) {
    case GM_TYPE_F16:
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    case GM_TYPE_BF16:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
    default:
        return _mm512_loadu_ps(p);
    }
}

AI void decode_chunk_f(const gm_type type, const rowgrp *G, int64_t c0, int nc, fpanel *P,
                       pfcur *pf)
{
    const size_t esz = type == GM_TYPE_F32 ? 4 : 2;
    for (int rg = 0; rg < RW; rg++) {
        for (int c = 0; c < nc; c += 16) {
            __m512 r[16];
            pf_block(pf);
            for (int i = 0; i < 16; i++)
                r[i] = load16f(type, G[rg].p[i] + (size_t)(c0 + c) * esz);
            transpose16(r);
            for (int i = 0; i < 16; i++)
                P->w[c + i][rg] = r[i];
        }
    }
}

AI void run_tile_f(const int T, const fpanel *P, int nc, int64_t c0, const gm_act *a, int64_t t0,
                   float *y, int64_t ldy, int64_t pr0, int64_t r1, int first)
{
    __m512 acc[RW][TF];
    const float *x[TF];
    for (int t = 0; t < T; t++) {
        x[t] = a->x + (t0 + t) * a->ldx + c0;
        for (int g = 0; g < RW; g++)
            acc[g][t] = _mm512_setzero_ps();
    }
    for (int c = 0; c < nc; c++) {
        __m512 wv[RW];
        for (int g = 0; g < RW; g++)
            wv[g] = _mm512_load_ps(&P->w[c][g]);
        for (int t = 0; t < T; t++) {
            const __m512 xv = _mm512_set1_ps(x[t][c]);
            for (int g = 0; g < RW; g++)
                acc[g][t] = _mm512_fmadd_ps(wv[g], xv, acc[g][t]);
        }
    }
    for (int g = 0; g < RW; g++) {
        const int64_t rr = pr0 + 16 * g;
        if (rr >= r1)
            break;
        const int valid = r1 - rr >= 16 ? 16 : (int)(r1 - rr);
        const __mmask16 mk = (__mmask16)((1u << valid) - 1);
        for (int t = 0; t < T; t++) {
            float *yp = y + (t0 + t) * ldy + rr;
            __m512 v = acc[g][t];
            if (!first)
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, yp));
            _mm512_mask_storeu_ps(yp, mk, v);
        }
    }
}

AI void mm_float(const gm_type type, const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1,
                 float *y, int64_t ldy)
{
    const int64_t n = a->n, k = w->cols;
    const int64_t tblk = gm_token_block(TOK_BLOCK_BYTES, n, k, TF);
    _Alignas(64) fpanel P;
    rowgrp G[RW];
    /* Columns past a multiple of 16 are done in scalar code below. */
    const int64_t k16 = k / 16 * 16;
    for (int64_t tb0 = 0; tb0 < n; tb0 += tblk) {
        const int64_t tb1 = tb0 + tblk < n ? tb0 + tblk : n;
        for (int64_t pr0 = r0; pr0 < r1; pr0 += PR) {
            for (int g = 0; g < RW; g++)
                rowgrp_init(&G[g], w, pr0 + 16 * g, r1 - 1);
            /* prefetch the next panel while transposing this one (see mm_quant) */
            const int64_t nxt_rows = r1 - (pr0 + PR) < PR ? r1 - (pr0 + PR) : PR;
            const size_t nxt_bytes = nxt_rows > 0 ? (size_t)nxt_rows * w->row_bytes : 0;
            const size_t tiles = (size_t)RW * (size_t)((k16 + 15) / 16);
            pfcur pf = { (const char *)w->data + (size_t)(pr0 + PR) * w->row_bytes, 0, nxt_bytes,
                         tiles ? (nxt_bytes / 64 + tiles - 1) / tiles : 0 };
            for (int64_t c0 = 0; c0 < k16; c0 += KCF) {
                const int nc = k16 - c0 < KCF ? (int)(k16 - c0) : KCF;
                decode_chunk_f(type, G, c0, nc, &P, &pf);
                int64_t t0 = tb0;
                for (; t0 + TF <= tb1; t0 += TF)
                    run_tile_f(TF, &P, nc, c0, a, t0, y, ldy, pr0, r1, c0 == 0);
                switch (tb1 - t0) {
                case 7: run_tile_f(7, &P, nc, c0, a, t0, y, ldy, pr0, r1, c0 == 0); break;
                case 6: run_tile_f(6, &P, nc, c0, a, t0, y, ldy, pr0, r1, c0 == 0); break;
                case 5: run_tile_f(5, &P, nc, c0, a, t0, y, ldy, pr0, r1, c0 == 0); break;
                case 4: run_tile_f(4, &P, nc, c0, a, t0, y, ldy, pr0, r1, c0 == 0); break;
                case 3: run_tile_f(3, &P, nc, c0, a, t0, y, ldy, pr0, r1, c0 == 0); break;
                case 2: run_tile_f(2, &P, nc, c0, a, t0, y, ldy, pr0, r1, c0 == 0); break;
                case 1: run_tile_f(1, &P, nc, c0, a, t0, y, ldy, pr0, r1, c0 == 0); break;
                default: break;
                }
            }
            if (k16 == k)
                continue;
            /* Leftover columns (k not a multiple of 16): plain dot products. */
            const size_t esz = type == GM_TYPE_F32 ? 4 : 2;
            const int64_t pr1 = pr0 + PR < r1 ? pr0 + PR : r1;
            for (int64_t t = tb0; t < tb1; t++) {
                const float *xt = a->x + t * a->ldx;
                for (int64_t r = pr0; r < pr1; r++) {
                    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
                    float s = 0.0f;
                    for (int64_t c = k16; c < k; c++) {
                        const uint8_t *p = row + (size_t)c * esz;
                        uint16_t h;
                        float wf;
                        if (type == GM_TYPE_F32) {
                            memcpy(&wf, p, 4);
                        } else {
                            memcpy(&h, p, 2);
                            wf = type == GM_TYPE_F16 ? _cvtsh_ss(h) : gm_bf16_to_fp32(h);
                        }
                        s += wf * xt[c];
                    }
                    if (k16 == 0)
                        y[t * ldy + r] = s;
                    else
                        y[t * ldy + r] += s;
                }
            }
        }
    }
}

static void mm_f32(const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1, float *y, int64_t ldy)
{
    mm_float(GM_TYPE_F32, w, a, r0, r1, y, ldy);
}
static void mm_f16(const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1, float *y, int64_t ldy)
{
    mm_float(GM_TYPE_F16, w, a, r0, r1, y, ldy);
}
static void mm_bf16(const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1, float *y, int64_t ldy)
{
    mm_float(GM_TYPE_BF16, w, a, r0, r1, y, ldy);
}

/* ------------------------------------------------------------ activation quantization */

/* Bit-exact with gm_quantize_row_q8_0 / gm_quantize_row_q8_K + the driver's unpacking
 * (same float operations in the same order per element; roundf's ties-away rounding and
 * nearest_int's ties-to-even are reproduced exactly). Inputs must not contain NaN. */
/* r[b] = op over the 16 elements of v[b], for 16 vectors at once (a transposing
 * reduction: ~46 shuffles and ops instead of 16 separate horizontal reductions). */
#define HREDUCE16(name, type, op, cast_in, cast_out)                                           \
    AI type name(const type v[16])                                                            \
    {                                                                                          \
        __m512 a[8], b[4];                                                                     \
        for (int i = 0; i < 8; i++) {                                                          \
            const __m512 x = cast_in(v[2 * i]), y = cast_in(v[2 * i + 1]);                     \
            a[i] = op(_mm512_shuffle_f32x4(x, y, 0x44), _mm512_shuffle_f32x4(x, y, 0xEE));      \
        }                                                                                      \
        for (int i = 0; i < 4; i++)                                                            \
            b[i] = op(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x88),                       \
                      _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xDD));                      \
        /* b[i], 128-bit lane L: the 4 partial results of vector 4i + L */                     \
        const __m512 c0 = op(_mm512_unpacklo_ps(b[0], b[1]), _mm512_unpackhi_ps(b[0], b[1]));  \
        const __m512 c1 = op(_mm512_unpacklo_ps(b[2], b[3]), _mm512_unpackhi_ps(b[2], b[3]));  \
        const __m512 dd = op(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(c0), _mm512_castps_pd(c1))), \
                             _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(c0), _mm512_castps_pd(c1)))); \
        /* element 4L + i holds vector 4i + L */                                              \
        const __m512i perm = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0); \
        return cast_out(_mm512_permutexvar_ps(perm, dd));                                      \
    }

#define ID_PS(x) (x)
#define ADD_EPI32_PS(x, y) _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(x), _mm512_castps_si512(y)))
HREDUCE16(hmax16_ps, __m512, _mm512_max_ps, ID_PS, ID_PS)
HREDUCE16(hadd16_epi32, __m512i, ADD_EPI32_PS, _mm512_castsi512_ps, _mm512_castps_si512)

/* Quantizes 32 values with inverse scale idv (roundf semantics) into q; returns the
 * 16 partial lane sums of the quants. */
AI __m512i q8_0_block(const float *x, __m512 idv, int8_t *q)
{
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const __m512 signmask = _mm512_castsi512_ps(_mm512_set1_epi32((int)0x80000000u));
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
    __m512i qi[2];
    for (int h = 0; h < 2; h++) {
        const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + 16 * h), idv);
        /* roundf: truncate, then step away from zero when the dropped part is >= 0.5 */
        const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __mmask16 up = _mm512_cmp_ps_mask(_mm512_and_ps(_mm512_sub_ps(v, t), absmask), half, _CMP_GE_OQ);
        const __m512 step = _mm512_or_ps(_mm512_and_ps(v, signmask), one);
        qi[h] = _mm512_cvttps_epi32(_mm512_mask_add_ps(t, up, t, step));
        _mm_storeu_si128((__m128i *)(q + 16 * h), _mm512_cvtsepi32_epi8(qi[h]));
    }
    return _mm512_add_epi32(qi[0], qi[1]);
}

static void quant_q8_0_row(const float *x, int64_t k, int bias, int8_t *q, float *d,
                           int32_t *corr, float *dsum)
{
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const int64_t nb = k / 32;
    int64_t b = 0;
    /* 16 blocks at a time: scales and sums as vectors */
    for (; b + 16 <= nb; b += 16) {
        const float *xb = x + 32 * b;
        __m512 m[16];
        for (int i = 0; i < 16; i++)
            m[i] = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(xb + 32 * i), absmask),
                                 _mm512_and_ps(_mm512_loadu_ps(xb + 32 * i + 16), absmask));
        const __m512 amax = hmax16_ps(m);
        const __m512 dd = _mm512_div_ps(amax, _mm512_set1_ps(127.0f));
        const __mmask16 nz = _mm512_cmp_ps_mask(dd, _mm512_setzero_ps(), _CMP_NEQ_OQ);
        _Alignas(64) float id[16];
        _mm512_store_ps(id, _mm512_maskz_div_ps(nz, _mm512_set1_ps(1.0f), dd));
        __m512i sums[16];
        for (int i = 0; i < 16; i++)
            sums[i] = q8_0_block(xb + 32 * i, _mm512_set1_ps(id[i]), q + 32 * (b + i));
        const __m512i s = hadd16_epi32(sums);
        const __m512 df = _mm512_cvtph_ps(_mm512_cvtps_ph(dd, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        _mm512_storeu_ps(d + b, df);
        _mm512_storeu_si512(corr + b, _mm512_mullo_epi32(s, _mm512_set1_epi32(-bias)));
        if (dsum)
            _mm512_storeu_ps(dsum + b, _mm512_mul_ps(df, _mm512_cvtepi32_ps(s)));
    }
    for (; b < nb; b++) {
        const __m512 x0 = _mm512_loadu_ps(x + 32 * b), x1 = _mm512_loadu_ps(x + 32 * b + 16);
        const float amax = _mm512_reduce_max_ps(
            _mm512_max_ps(_mm512_and_ps(x0, absmask), _mm512_and_ps(x1, absmask)));
        const float dd = amax / 127.0f, id = dd != 0.0f ? 1.0f / dd : 0.0f;
        const int s = _mm512_reduce_add_epi32(q8_0_block(x + 32 * b, _mm512_set1_ps(id), q + 32 * b));
        const float df = _cvtsh_ss(_cvtss_sh(dd, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        d[b] = df;
        corr[b] = -bias * s;
        if (dsum)
            dsum[b] = df * (float)s;
    }
}

static void quant_q8_K_row(const float *x, int64_t k, int bias, int g16, int8_t *q, float *d,
                           int32_t *corr, float *dsum)
{
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const __m512i q127 = _mm512_set1_epi32(127);
    for (int64_t b = 0; b < k / GM_QK_K; b++) {
        const float *xb = x + GM_QK_K * b;
        __m512 m = _mm512_setzero_ps();
        for (int i = 0; i < 16; i++)
            m = _mm512_max_ps(m, _mm512_and_ps(_mm512_loadu_ps(xb + 16 * i), absmask));
        const float amax = _mm512_reduce_max_ps(m);
        if (amax == 0.0f) {
            memset(q + GM_QK_K * b, 0, GM_QK_K);
            for (int s = 0; s < 8; s++) {
                d[8 * b + s] = 0.0f;
                if (dsum)
                    dsum[8 * b + s] = 0.0f;
            }
            for (int g = 0; g < (g16 ? 16 : 8); g++)
                corr[(g16 ? 16 : 8) * b + g] = 0;
            continue;
        }
        /* the reference keeps the first element of largest magnitude, with its sign */
        float max = 0.0f;
        const __m512 am = _mm512_set1_ps(amax);
        for (int i = 0; i < 16; i++) {
            const __mmask16 hit = _mm512_cmp_ps_mask(_mm512_and_ps(_mm512_loadu_ps(xb + 16 * i), absmask), am, _CMP_EQ_OQ);
            if (hit) {
                max = xb[16 * i + __builtin_ctz(hit)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m512 is = _mm512_set1_ps(iscale);
        __m512i qv[16];
        for (int i = 0; i < 16; i++) {
            /* default MXCSR rounding: to nearest even, like nearest_int() */
            qv[i] = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(is, _mm512_loadu_ps(xb + 16 * i))), q127);
            _mm_storeu_si128((__m128i *)(q + GM_QK_K * b + 16 * i), _mm512_cvtsepi32_epi8(qv[i]));
        }
        _Alignas(64) int32_t sums[16];
        _mm512_store_si512(sums, hadd16_epi32(qv));
        const float df = 1.0f / iscale;
        for (int s = 0; s < 8; s++) {
            const int a0 = sums[2 * s], a1 = sums[2 * s + 1];
            d[8 * b + s] = df;
            if (g16) {
                corr[16 * b + 2 * s] = -bias * a0;
                corr[16 * b + 2 * s + 1] = -bias * a1;
            } else {
                corr[8 * b + s] = -bias * (a0 + a1);
            }
            if (dsum)
                dsum[8 * b + s] = df * (float)(a0 + a1);
        }
    }
}

void gm_act_quant_avx512(gm_type wtype, const float *x, int64_t k, int8_t *q, float *d,
                         int32_t *corr, float *dsum)
{
    if (gm_vec_dot_type(wtype) == GM_TYPE_Q8_K)
        quant_q8_K_row(x, k, gm_kernel_bias(wtype), gm_kernel_corr_group(wtype) == 16, q, d, corr, dsum);
    else
        quant_q8_0_row(x, k, gm_kernel_bias(wtype), q, d, corr, dsum);
}

/* ------------------------------------------------------------ BF16 weights, AVX512_BF16
 *
 * vdpbf16ps multiplies bf16 pairs exactly and accumulates in fp32. Weights are exact in
 * bf16; the driver splits each activation into hi = bf16(x) and lo = bf16(x - hi)
 * (kernels-impl.h), so w·hi + w·lo misses w·x by at most 2^-16 |w·x|: near-fp32
 * results at half the weight bytes of an fp32 panel and without a float transpose.
 *
 * Rows are used as they are stored (no panel): one zmm holds 32 columns of one row,
 * dotted with 32 columns of one token's hi and lo; each (row, token) output has its own
 * accumulator, reduced horizontally at the end. A tile of R rows x T tokens reuses each
 * loaded weight vector T times and each activation vector R times. The sequence of
 * operations on an output's accumulator and its reduction do not depend on the tile
 * shape, the token count or the thread split, so one-by-one decode, chunked prefill and
 * any batch give bit-identical results.
 */
HREDUCE16(hadd16_ps, __m512, _mm512_add_ps, ID_PS, ID_PS)

#define BFR 4      /* rows per tile (batches) */
#define BFT 4      /* tokens per tile (batches) */
#define BFR1 8     /* rows per tile (one token) */
#define BF_PF 512  /* weight prefetch distance, bytes */

static inline __m512bh as_bh(__m512i v)
{
    __m512bh r;
    memcpy(&r, &v, sizeof r);
    return r;
}

/* acc[i][t] += w_i . (hi_t + lo_t) over the 32 columns at c (hi then lo, per row). */
AI void bf_step(const int R, const int T, const __m512bh *wv, const uint16_t *const *xh, int64_t kp,
                int64_t c, __m512 acc[BFR1][BFT])
{
    for (int t = 0; t < T; t++) {
        const __m512bh hv = as_bh(_mm512_load_si512(xh[t] + c));
        const __m512bh lv = as_bh(_mm512_load_si512(xh[t] + kp + c));
        for (int i = 0; i < R; i++)
            acc[i][t] = _mm512_dpbf16_ps(acc[i][t], wv[i], hv);
        for (int i = 0; i < R; i++)
            acc[i][t] = _mm512_dpbf16_ps(acc[i][t], wv[i], lv);
    }
}

AI void bf_tile(const int R, const int T, const gm_matrix *w, const gm_act *a, int64_t r,
                int64_t t0, float *y, int64_t ldy)
{
    const int64_t k = w->cols, kp = a->xbf_stride / 2;
    const uint16_t *wr[BFR1];
    const uint16_t *xh[BFT];
    for (int i = 0; i < R; i++)
        wr[i] = (const uint16_t *)((const uint8_t *)w->data + (size_t)(r + i) * w->row_bytes);
    for (int t = 0; t < T; t++)
        xh[t] = a->xbf + (t0 + t) * a->xbf_stride;
    __m512 acc[BFR1][BFT];
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++)
            acc[i][t] = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 32 <= k; c += 32) {
        __m512bh wv[BFR1];
        for (int i = 0; i < R; i++) {
            _mm_prefetch((const char *)(wr[i] + c) + BF_PF, _MM_HINT_T0);
            wv[i] = as_bh(_mm512_loadu_si512(wr[i] + c));
        }
        bf_step(R, T, wv, xh, kp, c, acc);
    }
    if (c < k) {
        /* Last columns: masked weight loads (no read past the row) against the zero
         * padding of the activations. */
        const __mmask32 m = (__mmask32)((1ull << (k - c)) - 1);
        __m512bh wv[BFR1];
        for (int i = 0; i < R; i++)
            wv[i] = as_bh(_mm512_maskz_loadu_epi16(m, wr[i] + c));
        bf_step(R, T, wv, xh, kp, c, acc);
    }
    /* Each output of hadd16_ps goes through the same reduction tree whatever the other
     * 15 vectors hold. */
    __m512 v[16];
    for (int j = 0; j < 16; j++)
        v[j] = _mm512_setzero_ps();
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++)
            v[t * R + i] = acc[i][t];
    _Alignas(64) float s[16];
    _mm512_store_ps(s, hadd16_ps(v));
    for (int t = 0; t < T; t++)
        for (int i = 0; i < R; i++)
            y[(t0 + t) * ldy + r + i] = s[t * R + i];
}

/* Tiles of up to RMAX rows x TMAX tokens over rows [r0, r1), tokens [tb0, tb1). */
#define BF_T_CASES(R)                                                                        \
    switch (nt) {                                                                            \
    case 4: bf_tile(R, 4, w, a, r, t0, y, ldy); break;                                       \
    case 3: bf_tile(R, 3, w, a, r, t0, y, ldy); break;                                       \
    case 2: bf_tile(R, 2, w, a, r, t0, y, ldy); break;                                       \
    default: bf_tile(R, 1, w, a, r, t0, y, ldy); break;                                      \
    }

static void mm_bf16_dp(const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1, float *y,
                       int64_t ldy)
{
    const int64_t n = a->n;
    if (n == 1) {
        const int64_t t0 = 0;
        for (int64_t r = r0; r < r1; r += BFR1) {
            switch (r1 - r < BFR1 ? r1 - r : BFR1) {
            case 8: bf_tile(8, 1, w, a, r, t0, y, ldy); break;
            case 7: bf_tile(7, 1, w, a, r, t0, y, ldy); break;
            case 6: bf_tile(6, 1, w, a, r, t0, y, ldy); break;
            case 5: bf_tile(5, 1, w, a, r, t0, y, ldy); break;
            case 4: bf_tile(4, 1, w, a, r, t0, y, ldy); break;
            case 3: bf_tile(3, 1, w, a, r, t0, y, ldy); break;
            case 2: bf_tile(2, 1, w, a, r, t0, y, ldy); break;
            default: bf_tile(1, 1, w, a, r, t0, y, ldy); break;
            }
        }
        return;
    }
    /* A token tile's hi/lo rows (16 bytes per column) stay in L1 while the row tiles of
     * the range, a few dozen rows that stay in L2, stream past them: per 32 columns the
     * L1 serves 2*BFT activation loads and the L2 only BFR weight loads. */
    for (int64_t t0 = 0; t0 < n; t0 += BFT) {
        const int64_t nt = n - t0 < BFT ? n - t0 : BFT;
        for (int64_t r = r0; r < r1; r += BFR) {
            const int64_t nr = r1 - r < BFR ? r1 - r : BFR;
            switch (nr) {
            case 4: BF_T_CASES(4); break;
            case 3: BF_T_CASES(3); break;
            case 2: BF_T_CASES(2); break;
            default: BF_T_CASES(1); break;
            }
        }
    }
}

gm_kernel_fn gm_kernel_avx512_bf16(void)
{
    return mm_bf16_dp;
}

void gm_act_split_bf16_avx512(const float *x, int64_t k, uint16_t *hi, uint16_t *lo)
{
    const int64_t kp = (k + 31) / 32 * 32;
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const __m512 inf = _mm512_set1_ps(__builtin_inff());
    for (int64_t c = 0; c < kp; c += 16) {
        const int64_t left = k - c;
        const __mmask16 m = left >= 16 ? (__mmask16)0xFFFF
                          : left > 0 ? (__mmask16)((1u << left) - 1) : (__mmask16)0;
        const __m512 v = _mm512_maskz_loadu_ps(m, x + c);
        /* round to nearest even; x - bf16(x) is exact in fp32 */
        const __m256bh h = _mm512_cvtneps_pbh(v);
        __m256i hb;
        memcpy(&hb, &h, sizeof hb);
        const __m512 hf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(hb), 16));
        /* where hi is +-inf or NaN, lo = 0 keeps inf * w from becoming inf - inf */
        const __mmask16 fin = _mm512_cmp_ps_mask(_mm512_and_ps(hf, absmask), inf, _CMP_LT_OQ);
        const __m256bh l = _mm512_cvtneps_pbh(_mm512_maskz_sub_ps(fin, v, hf));
        _mm256_storeu_si256((__m256i *)(hi + c), hb);
        __m256i lb;
        memcpy(&lb, &l, sizeof lb);
        _mm256_storeu_si256((__m256i *)(lo + c), lb);
    }
}

gm_kernel_fn gm_kernel_avx512(gm_type t)
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

int gm_kernel_rows_avx512(void)
{
    return PR;
}
