/* attention.c — attention of a chunk's queries over the KV cache (gemma4-model.md §2.5,
 * masks in masks.h), tiled for AVX-512 / AVX2 with a scalar fallback.
 *
 * A work item is a tile of up to ATTN_TILE (query row, head) pairs that read the same
 * KV head (the heads of a GQA group, then several rows). For the keys [k0, k1) that any
 * pair sees:
 *   S[t][j] = q_t · K[k0 + j]        (qk_*: vectors run along keys, K is transposed)
 *   softmax of each row over its own visible range, 0 elsewhere (fp32, max-subtracted)
 *   out_t   = sum_j S[t][j] V[k0 + j] (pv_*: vectors run along head_dim)
 * Each K/V row is loaded once per tile, accumulators stay in registers. A ring cache
 * that wraps turns [k0, k1) into two slot segments. */
#include "context-internal.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "core/ops.h"
#include "core/pool.h"
#include "masks.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#define GM_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#define GM_AVX2 __attribute__((target("avx2,fma")))
#define GM_INLINE inline __attribute__((always_inline))

static void qk_scalar(const float *kt, int64_t ks, int32_t hd, const float *const *q, int tq, float *s,
                      int64_t ss, int32_t n)
{
    for (int t = 0; t < tq; t++) {
        float *st = s + t * ss;
        memset(st, 0, (size_t)n * sizeof(float));
        for (int32_t d = 0; d < hd; d++) {
            const float qd = q[t][d], *kr = kt + d * ks;
            for (int32_t j = 0; j < n; j++)
                st[j] += qd * kr[j];
        }
    }
}

static void pv_scalar(const float *v, int32_t hd, int32_t n, const float *p, int64_t ps, int tq,
                      float *const *out, bool accumulate)
{
    for (int t = 0; t < tq; t++) {
        float *o = out[t];
        if (!accumulate)
            memset(o, 0, (size_t)hd * sizeof(float));
        for (int32_t j = 0; j < n; j++) {
            const float pj = p[t * ps + j], *vr = v + (size_t)j * (size_t)hd;
            if (pj != 0.0f)
                for (int32_t d = 0; d < hd; d++)
                    o[d] += pj * vr[d];
        }
    }
}

#if defined(__x86_64__) || defined(__i386__)

GM_AVX512 static GM_INLINE void qk512_blk(const float *kt, int64_t ks, int32_t hd, const float *const *q,
                                          const int TQ, const int KB, float *s, int64_t ss, int32_t j,
                                          int32_t n)
{
    __m512 acc[ATTN_TILE][2];
    for (int t = 0; t < TQ; t++)
        for (int u = 0; u < KB; u++)
            acc[t][u] = _mm512_setzero_ps();
    const int32_t r0 = n - j, r1 = n - j - 16;
    const __mmask16 m0 = r0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << r0) - 1u);
    const __mmask16 m1 = r1 >= 16 ? (__mmask16)0xffff : r1 <= 0 ? 0 : (__mmask16)((1u << r1) - 1u);
    const float *kp = kt + j;
    for (int32_t d = 0; d < hd; d++, kp += ks) {
        __m512 k0 = _mm512_maskz_loadu_ps(m0, kp);
        __m512 k1 = KB > 1 ? _mm512_maskz_loadu_ps(m1, kp + 16) : k0;
        for (int t = 0; t < TQ; t++) {
            __m512 qb = _mm512_set1_ps(q[t][d]);
            acc[t][0] = _mm512_fmadd_ps(qb, k0, acc[t][0]);
            if (KB > 1)
                acc[t][1] = _mm512_fmadd_ps(qb, k1, acc[t][1]);
        }
    }
    for (int t = 0; t < TQ; t++) {
        _mm512_mask_storeu_ps(s + t * ss + j, m0, acc[t][0]);
        if (KB > 1)
            _mm512_mask_storeu_ps(s + t * ss + j + 16, m1, acc[t][1]);
    }
}

GM_AVX512 static void qk512(const float *kt, int64_t ks, int32_t hd, const float *const *q, int tq, float *s,
                            int64_t ss, int32_t n)
{
#define QK512(T, KB) \
    case T: \
        for (int32_t j = 0; j < n; j += 16 * (KB)) \
            qk512_blk(kt, ks, hd, q, T, KB, s, ss, j, n); \
        break;
    switch (tq) {
    QK512(1, 2) QK512(2, 2) QK512(3, 2) QK512(4, 2) QK512(5, 1) QK512(6, 1) QK512(7, 1) QK512(8, 1)
    default: break;
    }
#undef QK512
}

GM_AVX512 static GM_INLINE void pv512_blk(const float *v, int32_t hd, int32_t n, const float *p, int64_t ps,
                                          const int TQ, const int NV, float *const *out, int32_t dc,
                                          bool accumulate)
{
    __m512 acc[ATTN_TILE][8];
    for (int t = 0; t < TQ; t++)
        for (int u = 0; u < NV; u++)
            acc[t][u] = accumulate ? _mm512_loadu_ps(out[t] + dc + 16 * u) : _mm512_setzero_ps();
    const float *vr = v + dc;
    for (int32_t j = 0; j < n; j++, vr += hd) {
        __m512 vv[8];
        for (int u = 0; u < NV; u++)
            vv[u] = _mm512_loadu_ps(vr + 16 * u);
        for (int t = 0; t < TQ; t++) {
            __m512 pb = _mm512_set1_ps(p[t * ps + j]);
            for (int u = 0; u < NV; u++)
                acc[t][u] = _mm512_fmadd_ps(pb, vv[u], acc[t][u]);
        }
    }
    for (int t = 0; t < TQ; t++)
        for (int u = 0; u < NV; u++)
            _mm512_storeu_ps(out[t] + dc + 16 * u, acc[t][u]);
}

/* hd must be a multiple of 16. */
GM_AVX512 static void pv512(const float *v, int32_t hd, int32_t n, const float *p, int64_t ps, int tq,
                            float *const *out, bool accumulate)
{
    int nv = tq <= 2 ? 8 : tq <= 4 ? 4 : 2; /* tq * nv <= 16 accumulators */
    while (nv > 1 && hd % (16 * nv))
        nv /= 2;
#define PV512(T, NV) \
    case T: \
        for (int32_t dc = 0; dc < hd; dc += 16 * (NV)) \
            pv512_blk(v, hd, n, p, ps, T, NV, out, dc, accumulate); \
        break;
    switch (nv) {
    case 8:
        switch (tq) { PV512(1, 8) PV512(2, 8) default: break; }
        break;
    case 4:
        switch (tq) { PV512(1, 4) PV512(2, 4) PV512(3, 4) PV512(4, 4) default: break; }
        break;
    case 2:
        switch (tq) {
        PV512(1, 2) PV512(2, 2) PV512(3, 2) PV512(4, 2) PV512(5, 2) PV512(6, 2) PV512(7, 2) PV512(8, 2)
        default: break;
        }
        break;
    default:
        switch (tq) {
        PV512(1, 1) PV512(2, 1) PV512(3, 1) PV512(4, 1) PV512(5, 1) PV512(6, 1) PV512(7, 1) PV512(8, 1)
        default: break;
        }
        break;
    }
#undef PV512
}

GM_AVX2 static GM_INLINE __m256i lane_mask256(int32_t r)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

GM_AVX2 static GM_INLINE void qk256_blk(const float *kt, int64_t ks, int32_t hd, const float *const *q,
                                        const int TQ, const int KB, float *s, int64_t ss, int32_t j,
                                        int32_t n)
{
    __m256 acc[ATTN_TILE][2];
    for (int t = 0; t < TQ; t++)
        for (int u = 0; u < KB; u++)
            acc[t][u] = _mm256_setzero_ps();
    const __m256i m0 = lane_mask256(n - j), m1 = lane_mask256(n - j - 8);
    const float *kp = kt + j;
    for (int32_t d = 0; d < hd; d++, kp += ks) {
        __m256 k0 = _mm256_maskload_ps(kp, m0);
        __m256 k1 = KB > 1 ? _mm256_maskload_ps(kp + 8, m1) : k0;
        for (int t = 0; t < TQ; t++) {
            __m256 qb = _mm256_broadcast_ss(q[t] + d);
            acc[t][0] = _mm256_fmadd_ps(qb, k0, acc[t][0]);
            if (KB > 1)
                acc[t][1] = _mm256_fmadd_ps(qb, k1, acc[t][1]);
        }
    }
    for (int t = 0; t < TQ; t++) {
        _mm256_maskstore_ps(s + t * ss + j, m0, acc[t][0]);
        if (KB > 1)
            _mm256_maskstore_ps(s + t * ss + j + 8, m1, acc[t][1]);
    }
}

GM_AVX2 static void qk256(const float *kt, int64_t ks, int32_t hd, const float *const *q, int tq, float *s,
                          int64_t ss, int32_t n)
{
#define QK256(T, KB) \
    case T: \
        for (int32_t j = 0; j < n; j += 8 * (KB)) \
            qk256_blk(kt, ks, hd, q, T, KB, s, ss, j, n); \
        break;
    switch (tq) {
    QK256(1, 2) QK256(2, 2) QK256(3, 2) QK256(4, 2) QK256(5, 1) QK256(6, 1) QK256(7, 1) QK256(8, 1)
    default: break;
    }
#undef QK256
}

GM_AVX2 static GM_INLINE void pv256_blk(const float *v, int32_t hd, int32_t n, const float *p, int64_t ps,
                                        const int TQ, const int NV, float *const *out, int32_t dc,
                                        bool accumulate)
{
    __m256 acc[ATTN_TILE][4];
    for (int t = 0; t < TQ; t++)
        for (int u = 0; u < NV; u++)
            acc[t][u] = accumulate ? _mm256_loadu_ps(out[t] + dc + 8 * u) : _mm256_setzero_ps();
    const float *vr = v + dc;
    for (int32_t j = 0; j < n; j++, vr += hd) {
        __m256 vv[4];
        for (int u = 0; u < NV; u++)
            vv[u] = _mm256_loadu_ps(vr + 8 * u);
        for (int t = 0; t < TQ; t++) {
            __m256 pb = _mm256_broadcast_ss(p + t * ps + j);
            for (int u = 0; u < NV; u++)
                acc[t][u] = _mm256_fmadd_ps(pb, vv[u], acc[t][u]);
        }
    }
    for (int t = 0; t < TQ; t++)
        for (int u = 0; u < NV; u++)
            _mm256_storeu_ps(out[t] + dc + 8 * u, acc[t][u]);
}

/* hd must be a multiple of 8. */
GM_AVX2 static void pv256(const float *v, int32_t hd, int32_t n, const float *p, int64_t ps, int tq,
                          float *const *out, bool accumulate)
{
    int nv = tq <= 2 ? 4 : tq <= 4 ? 2 : 1; /* tq * nv <= 8 accumulators */
    while (nv > 1 && hd % (8 * nv))
        nv /= 2;
#define PV256(T, NV) \
    case T: \
        for (int32_t dc = 0; dc < hd; dc += 8 * (NV)) \
            pv256_blk(v, hd, n, p, ps, T, NV, out, dc, accumulate); \
        break;
    switch (nv) {
    case 4:
        switch (tq) { PV256(1, 4) PV256(2, 4) default: break; }
        break;
    case 2:
        switch (tq) { PV256(1, 2) PV256(2, 2) PV256(3, 2) PV256(4, 2) default: break; }
        break;
    default:
        switch (tq) {
        PV256(1, 1) PV256(2, 1) PV256(3, 1) PV256(4, 1) PV256(5, 1) PV256(6, 1) PV256(7, 1) PV256(8, 1)
        default: break;
        }
        break;
    }
#undef PV256
}

#endif /* x86 */

typedef void (*qk_fn)(const float *, int64_t, int32_t, const float *const *, int, float *, int64_t, int32_t);
typedef void (*pv_fn)(const float *, int32_t, int32_t, const float *, int64_t, int, float *const *, bool);

static void pick_kernels(const gm_context *c, int32_t hd, qk_fn *qk, pv_fn *pv)
{
    *qk = qk_scalar;
    *pv = pv_scalar;
#if defined(__x86_64__) || defined(__i386__)
    if (c->isa >= GM_ISA_AVX512 && hd % 16 == 0) {
        *qk = qk512;
        *pv = pv512;
    } else if (c->isa >= GM_ISA_AVX2 && hd % 8 == 0) {
        *qk = qk256;
        *pv = pv256;
    }
#else
    (void)c;
    (void)hd;
#endif
}

/* Tile shape for a layer: heads of one GQA group first, then rows; smaller tiles when
 * there would be too few items to keep the threads busy (decoding). */
static void plan_attn(gm_context *c, const gm_layer_hparams *lh, int32_t n_kv, int32_t n)
{
    const int32_t group = (int32_t)lh->n_head / n_kv;
    int32_t hb = group < ATTN_TILE ? group : ATTN_TILE;
    for (;;) {
        int32_t rb = ATTN_TILE / hb;
        if (rb > n)
            rb = n;
        int32_t n_hblk = (group + hb - 1) / hb, n_rblk = (n + rb - 1) / rb;
        int32_t items = n_rblk * n_kv * n_hblk;
        if (items >= 2 * c->n_threads || hb == 1 || rb > 1) {
            c->attn_hb = hb;
            c->attn_rb = rb;
            c->attn_items = items;
            return;
        }
        hb = (hb + 1) / 2;
    }
}

static void job_attn(void *arg, int ith, int nth)
{
    (void)nth;
    gm_context *c = arg;
    const int32_t l = c->cur_layer;
    const gm_layer_hparams *lh = &c->m->hp.layers[l];
    const kv_layer *kv = &c->kv[lh->kv_source >= 0 ? lh->kv_source : l];
    const int32_t hd = kv->hd, n_kv = kv->n_kv, group = (int32_t)lh->n_head / n_kv;
    const int64_t nq = (int64_t)lh->n_head * hd;
    const int32_t cap = kv->cap, hb = c->attn_hb, rb = c->attn_rb;
    const int32_t n_hblk = (group + hb - 1) / hb;
    float *S = c->th_scores + (size_t)ith * ATTN_TILE * (size_t)c->n_ctx;
    qk_fn qk;
    pv_fn pv;
    pick_kernels(c, hd, &qk, &pv);

    for (;;) {
        int32_t item = atomic_fetch_add_explicit(&c->attn_next, 1, memory_order_relaxed);
        if (item >= c->attn_items)
            break;
        int32_t rblk = item / (n_kv * n_hblk), rem = item % (n_kv * n_hblk);
        int32_t kvh = rem / n_hblk, hblk = rem % n_hblk;
        const float *q[ATTN_TILE];
        float *out[ATTN_TILE];
        int32_t a[ATTN_TILE], b[ATTN_TILE];
        int tq = 0;
        int32_t k0 = INT32_MAX, k1 = 0;
        for (int32_t rr = 0; rr < rb; rr++) {
            int32_t r = rblk * rb + rr;
            if (r >= c->cur_n)
                break;
            int32_t lo, hi;
            gm_mask_key_range(lh->is_swa, c->window, c->cur_p0 + r, c->b.info[r].blk_end, &lo, &hi);
            for (int32_t hh = 0; hh < hb; hh++) {
                int32_t hg = hblk * hb + hh;
                if (hg >= group)
                    break;
                size_t off = (size_t)r * (size_t)nq + (size_t)(kvh * group + hg) * (size_t)hd;
                q[tq] = c->b.q + off;
                out[tq] = c->b.att + off;
                a[tq] = lo;
                b[tq] = hi;
                tq++;
            }
            if (lo < k0)
                k0 = lo;
            if (hi > k1)
                k1 = hi;
        }
        const int32_t nk = k1 - k0, s0 = k0 % cap;
        const int32_t seg = nk < cap - s0 ? nk : cap - s0;
        const float *kt = kv->k + (size_t)kvh * (size_t)hd * (size_t)kv->kstride;
        const float *vb = kv->v + (size_t)kvh * (size_t)cap * (size_t)hd;

        qk(kt + s0, kv->kstride, hd, q, tq, S, nk, seg);
        if (seg < nk)
            qk(kt, kv->kstride, hd, q, tq, S + seg, nk, nk - seg);
        for (int t = 0; t < tq; t++) {
            float *st = S + (size_t)t * (size_t)nk;
            int32_t lo = a[t] - k0, hi = b[t] - k0;
            memset(st, 0, (size_t)lo * sizeof(float));
            gm_softmax(st + lo, hi - lo);
            memset(st + hi, 0, (size_t)(nk - hi) * sizeof(float));
        }
        pv(vb + (size_t)s0 * (size_t)hd, hd, seg, S, nk, tq, out, false);
        if (seg < nk)
            pv(vb, hd, nk - seg, S + seg, nk, tq, out, true);
    }
}

void gm_attention(gm_context *c, const gm_layer_hparams *lh, int32_t n)
{
    const int32_t src = lh->kv_source >= 0 ? lh->kv_source : c->cur_layer;
    plan_attn(c, lh, c->kv[src].n_kv, n);
    atomic_store(&c->attn_next, 0);
    if (c->pool && c->attn_items > 1)
        gm_pool_run(c->pool, job_attn, c);
    else
        job_attn(c, 0, 1);
}
