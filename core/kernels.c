/* kernels.c — the matmul driver: activation quantization, threading, ISA dispatch, and
 * the scalar reference path (gm_vec_dot_ref per output).
 *
 * One call: (1) quantize the n activation rows into the weight type's vec-dot format,
 * in parallel over the pool when the batch is large; the SIMD paths also unpack the
 * blocks into flat arrays (kernels-impl.h) so their inner loops only broadcast;
 * (2) hand out row chunks to the workers through an atomic counter (a worker that is
 * descheduled on a shared machine does not hold the others up), each chunk covering all
 * n tokens.
 */
#include "kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels-impl.h"
#include "quant.h"

/* ------------------------------------------------------------ scratch memory */

/* Per calling thread, grown as needed, freed when the thread exits. */
struct scratch {
    void *p;
    size_t cap;
};

static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;
static int g_scratch_ok;

static void scratch_free(void *v)
{
    struct scratch *s = v;
    if (s) {
        free(s->p);
        free(s);
    }
}

static void scratch_init(void)
{
    g_scratch_ok = pthread_key_create(&g_scratch_key, scratch_free) == 0;
}

/* Returns a 64-byte aligned buffer of at least `size` bytes, or NULL. */
static void *scratch_get(size_t size)
{
    pthread_once(&g_scratch_once, scratch_init);
    if (!g_scratch_ok)
        return NULL;
    struct scratch *s = pthread_getspecific(g_scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s || pthread_setspecific(g_scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->cap < size) {
        size_t cap = (size + 4095) & ~(size_t)4095;
        void *p = aligned_alloc(64, cap);
        if (!p)
            return NULL;
        free(s->p);
        s->p = p;
        s->cap = cap;
    }
    return s->p;
}

static size_t align64(size_t v)
{
    return (v + 63) & ~(size_t)63;
}

/* ------------------------------------------------------------ ISA selection */

static gm_isa hw_isa(void)
{
    const gm_cpu_features *f = gm_cpu_get_features();
    if (f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->avx512vnni && f->avx2 &&
        f->fma && f->f16c)
        return GM_ISA_AVX512;
    if (f->avx2 && f->fma && f->f16c)
        return GM_ISA_AVX2;
    return GM_ISA_SCALAR;
}

static int is_float_type(gm_type t)
{
    return t == GM_TYPE_F32 || t == GM_TYPE_F16 || t == GM_TYPE_BF16;
}

int gm_matmul_supports(gm_type t)
{
    switch (t) {
    case GM_TYPE_F32:
    case GM_TYPE_F16:
    case GM_TYPE_BF16:
    case GM_TYPE_Q4_0:
    case GM_TYPE_Q4_1:
    case GM_TYPE_Q5_0:
    case GM_TYPE_Q8_0:
    case GM_TYPE_Q4_K:
    case GM_TYPE_Q5_K:
    case GM_TYPE_Q6_K:
        return 1;
    default:
        return 0;
    }
}

/* ------------------------------------------------------------ activation quantization */

struct quant_job {
    gm_type wtype, vdt;
    const float *x;
    int64_t ldx, n, k;
    /* Scalar path: the block rows themselves, kept. */
    uint8_t *blocks;        /* n x blk_row bytes, or per-worker temp rows for SIMD */
    size_t blk_row;
    int keep_blocks;
    /* SIMD path: unpacked arrays (see kernels-impl.h). */
    int8_t *q;
    int64_t q_stride;
    float *d;
    int32_t *corr;
    int64_t corr_stride;
    float *dsum;
    int simd_quant;         /* quantize with gm_act_quant_avx512 (no block rows) */
};

static void unpack_q8_0(const struct quant_job *j, const gm_block_q8_0 *b, int64_t t)
{
    const int64_t nb = j->k / 32;
    const int bias = gm_kernel_bias(j->wtype);
    int8_t *q = j->q + t * j->q_stride;
    float *d = j->d + t * nb;
    int32_t *corr = j->corr + t * j->corr_stride;
    float *dsum = j->dsum ? j->dsum + t * nb : NULL;
    for (int64_t i = 0; i < nb; i++) {
        memcpy(q + 32 * i, b[i].qs, 32);
        int s = 0;
        for (int l = 0; l < 32; l++)
            s += b[i].qs[l];
        const float da = gm_fp16_to_fp32(b[i].d);
        d[i] = da;
        corr[i] = -bias * s;
        if (dsum)
            dsum[i] = da * (float)s;
    }
}

static void unpack_q8_K(const struct quant_job *j, const gm_block_q8_K *b, int64_t t)
{
    const int64_t nsb = j->k / GM_QK_K;
    const int bias = gm_kernel_bias(j->wtype);
    const int g16 = gm_kernel_corr_group(j->wtype) == 16;
    int8_t *q = j->q + t * j->q_stride;
    float *d = j->d + t * (j->k / 32);
    int32_t *corr = j->corr + t * j->corr_stride;
    float *dsum = j->dsum ? j->dsum + t * (j->k / 32) : NULL;
    for (int64_t i = 0; i < nsb; i++) {
        memcpy(q + GM_QK_K * i, b[i].qs, GM_QK_K);
        for (int s = 0; s < 8; s++) {
            const int a0 = b[i].bsums[2 * s], a1 = b[i].bsums[2 * s + 1];
            d[8 * i + s] = b[i].d;
            if (g16) {
                corr[16 * i + 2 * s] = -bias * a0;
                corr[16 * i + 2 * s + 1] = -bias * a1;
            } else {
                corr[8 * i + s] = -bias * (a0 + a1);
            }
            if (dsum)
                dsum[8 * i + s] = b[i].d * (float)(a0 + a1);
        }
    }
}

static void quant_rows(const struct quant_job *j, int64_t t0, int64_t t1, int ith)
{
    if (j->simd_quant) {
        const int64_t nb = j->k / 32;
        for (int64_t t = t0; t < t1; t++)
            gm_act_quant_avx512(j->wtype, j->x + t * j->ldx, j->k, j->q + t * j->q_stride,
                                j->d + t * nb, j->corr + t * j->corr_stride,
                                j->dsum ? j->dsum + t * nb : NULL);
        return;
    }
    for (int64_t t = t0; t < t1; t++) {
        uint8_t *blk = j->blocks + (size_t)(j->keep_blocks ? t : ith) * j->blk_row;
        const float *x = j->x + t * j->ldx;
        if (j->vdt == GM_TYPE_Q8_0)
            gm_quantize_row_q8_0(x, (gm_block_q8_0 *)blk, j->k);
        else
            gm_quantize_row_q8_K(x, (gm_block_q8_K *)blk, j->k);
        if (j->q) {
            if (j->vdt == GM_TYPE_Q8_0)
                unpack_q8_0(j, (const gm_block_q8_0 *)blk, t);
            else
                unpack_q8_K(j, (const gm_block_q8_K *)blk, t);
        }
    }
}

static void quant_worker(void *ctx, int ith, int nth)
{
    const struct quant_job *j = ctx;
    long b, e;
    gm_pool_range((long)j->n, ith, nth, &b, &e);
    quant_rows(j, b, e, ith);
}

/* ------------------------------------------------------------ matmul job */

struct mm_job {
    const gm_matrix *w;
    gm_kernel_fn kern;          /* NULL: scalar reference */
    const gm_act *act;
    const uint8_t *blocks;      /* scalar path, quantized types */
    size_t blk_row;
    const float *x;
    int64_t ldx, n;
    float *y;
    int64_t ldy;
    int64_t chunk_rows, nchunks;
    atomic_long next;
};

static void scalar_rows(const struct mm_job *j, int64_t r0, int64_t r1)
{
    const gm_matrix *w = j->w;
    for (int64_t t = 0; t < j->n; t++) {
        const void *a = j->blocks ? (const void *)(j->blocks + (size_t)t * j->blk_row)
                                  : (const void *)(j->x + t * j->ldx);
        float *yt = j->y + t * j->ldy;
        for (int64_t r = r0; r < r1; r++)
            yt[r] = gm_vec_dot_ref(w->type, (const uint8_t *)w->data + (size_t)r * w->row_bytes,
                                   a, w->cols);
    }
}

static void mm_worker(void *ctx, int ith, int nth)
{
    (void)ith;
    (void)nth;
    struct mm_job *j = ctx;
    for (;;) {
        long c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (c >= j->nchunks)
            break;
        int64_t r0 = c * j->chunk_rows;
        int64_t r1 = r0 + j->chunk_rows < j->w->rows ? r0 + j->chunk_rows : j->w->rows;
        if (j->kern)
            j->kern(j->w, j->act, r0, r1, j->y, j->ldy);
        else
            scalar_rows(j, r0, r1);
    }
}

static void fill_nan(const gm_matrix *w, int64_t n, float *y, int64_t ldy)
{
    for (int64_t t = 0; t < n; t++)
        for (int64_t r = 0; r < w->rows; r++)
            y[t * ldy + r] = NAN;
}

/* Smallest batch for the AMX kernels (they work on 16 tokens at a time). */
#define AMX_MIN_N 16

static int amx_enabled(void)
{
    const char *e = getenv("GEMMAD_AMX");
    return !(e && e[0] == '0');
}

/* Below this many activation values, quantizing on the calling thread beats a dispatch. */
#define PAR_QUANT_MIN 16384

/* BF16 weights go to the AVX512_BF16 kernel where the CPU has it; GEMMAD_AVX512BF16=0
 * keeps them on the fp32 FMA kernel (tests use it to check that path). */
static int bf16dp_enabled(void)
{
    if (!gm_cpu_get_features()->avx512bf16)
        return 0;
    const char *e = getenv("GEMMAD_AVX512BF16");
    return !(e && e[0] == '0');
}

struct split_job {
    const float *x;
    int64_t ldx, n, k, kp;
    uint16_t *xbf;
};

static void split_worker(void *ctx, int ith, int nth)
{
    const struct split_job *j = ctx;
    long b, e;
    gm_pool_range((long)j->n, ith, nth, &b, &e);
    for (int64_t t = b; t < e; t++)
        gm_act_split_bf16_avx512(j->x + t * j->ldx, j->k, j->xbf + t * 2 * j->kp,
                                 j->xbf + t * 2 * j->kp + j->kp);
}

void gm_matmul_isa(gm_isa isa, gm_pool *pool, const gm_matrix *w, const float *x, int64_t n,
                   int64_t ldx, float *y, int64_t ldy)
{
    if (!w || !x || !y || n <= 0 || w->rows <= 0 || w->cols <= 0)
        return;
    /* Invalid shapes have no defined result: make that visible rather than crash. */
    const gm_type_traits *tr = gm_type_get_traits((uint32_t)w->type);
    if (!gm_matmul_supports(w->type) || !tr || w->cols % tr->block_size != 0 || !w->data ||
        ldx < w->cols || ldy < w->rows || w->row_bytes < gm_row_size(w->type, w->cols)) {
        fill_nan(w, n, y, ldy);
        return;
    }
    gm_isa hw = hw_isa();
    if (isa > hw)
        isa = hw;

    /* Pick the kernel, falling back to lower ISAs. */
    gm_kernel_fn kern = NULL;
    int gran = 16, simd_quant = 0;
    /* The AVX-512 kernels gather with int32 offsets across 16 rows. */
    const int offsets_fit = w->row_bytes <= (size_t)INT32_MAX / 16;
    if (isa >= GM_ISA_AVX512 && offsets_fit && (kern = gm_kernel_avx512(w->type)) != NULL) {
        gran = gm_kernel_rows_avx512();
        simd_quant = 1;
    } else if (isa >= GM_ISA_AVX2 && (kern = gm_kernel_avx2(w->type)) != NULL) {
        gran = gm_kernel_rows_avx2();
    }

    const int nth = gm_pool_size(pool);
    const int64_t k = w->cols;
    const gm_type vdt = gm_vec_dot_type(w->type);
    const int quantized = !is_float_type(w->type);

    int bf16dp = 0;
    if (simd_quant && w->type == GM_TYPE_BF16 && bf16dp_enabled()) {
        kern = gm_kernel_avx512_bf16();
        bf16dp = 1;
    }

    /* Batches go to the AMX tile kernels where the CPU has them (GEMMAD_AMX=0 turns
     * them off); they take 16 tokens at a time, so the activations get zero padding. */
    int64_t n_pad = n;
    if (simd_quant && n >= AMX_MIN_N && amx_enabled()) {
        gm_kernel_fn ak = gm_kernel_amx(w->type);
        if (ak) {
            kern = ak;
            n_pad = (n + 15) / 16 * 16;
        }
    }

    struct mm_job job = {
        .w = w, .kern = kern, .x = x, .ldx = ldx, .n = n, .y = y, .ldy = ldy,
    };
    gm_act act;
    memset(&act, 0, sizeof act);
    act.n = n;
    act.k = k;
    act.x = x;
    act.ldx = ldx;
    job.act = &act;

    if (bf16dp) {
        /* hi/lo bf16 halves of each activation (kernels-impl.h), converted once */
        struct split_job sj = { .x = x, .ldx = ldx, .n = n, .k = k, .kp = (k + 31) / 32 * 32 };
        sj.xbf = scratch_get((size_t)(n * 2 * sj.kp) * sizeof(uint16_t));
        if (!sj.xbf) {
            fill_nan(w, n, y, ldy);
            return;
        }
        if (nth > 1 && n > 1 && n * k >= PAR_QUANT_MIN)
            gm_pool_run(pool, split_worker, &sj);
        else
            split_worker(&sj, 0, 1);
        act.xbf = sj.xbf;
        act.xbf_stride = 2 * sj.kp;
    }

    if (quantized) {
        struct quant_job qj = { .wtype = w->type, .vdt = vdt, .x = x, .ldx = ldx, .n = n, .k = k };
        qj.blk_row = vdt == GM_TYPE_Q8_0 ? (size_t)(k / 32) * sizeof(gm_block_q8_0)
                                         : (size_t)(k / GM_QK_K) * sizeof(gm_block_q8_K);
        const int par = nth > 1 && n > 1 && n * k >= PAR_QUANT_MIN;
        const int qth = par ? nth : 1;
        qj.simd_quant = simd_quant;
        size_t sz_blocks = simd_quant ? 0 : align64(qj.blk_row * (size_t)(kern ? qth : n));
        size_t sz_q = 0, sz_d = 0, sz_c = 0, sz_s = 0;
        if (kern) {
            qj.q_stride = (int64_t)align64((size_t)k);
            qj.corr_stride = k / gm_kernel_corr_group(w->type);
            sz_q = align64((size_t)(qj.q_stride * n_pad));
            sz_d = align64((size_t)(n_pad * (k / 32)) * sizeof(float));
            sz_c = align64((size_t)(n_pad * qj.corr_stride) * sizeof(int32_t));
            if (w->type == GM_TYPE_Q4_1 || w->type == GM_TYPE_Q4_K || w->type == GM_TYPE_Q5_K)
                sz_s = sz_d;
        }
        uint8_t *mem = scratch_get(sz_blocks + sz_q + sz_d + sz_c + sz_s);
        if (!mem) {
            fill_nan(w, n, y, ldy);
            return;
        }
        qj.blocks = mem;
        qj.keep_blocks = kern == NULL;
        if (kern) {
            uint8_t *p = mem + sz_blocks;
            qj.q = (int8_t *)p;
            p += sz_q;
            qj.d = (float *)p;
            p += sz_d;
            qj.corr = (int32_t *)p;
            p += sz_c;
            qj.dsum = sz_s ? (float *)p : NULL;
        }
        if (n_pad > n) {
            memset(qj.q + n * qj.q_stride, 0, (size_t)((n_pad - n) * qj.q_stride));
            memset(qj.d + n * (k / 32), 0, (size_t)((n_pad - n) * (k / 32)) * sizeof(float));
            memset(qj.corr + n * qj.corr_stride, 0, (size_t)((n_pad - n) * qj.corr_stride) * sizeof(int32_t));
            if (qj.dsum)
                memset(qj.dsum + n * (k / 32), 0, (size_t)((n_pad - n) * (k / 32)) * sizeof(float));
        }
        if (par)
            gm_pool_run(pool, quant_worker, &qj);
        else
            quant_rows(&qj, 0, n, 0);

        job.blocks = kern ? NULL : mem;
        job.blk_row = qj.blk_row;
        act.q = qj.q;
        act.q_stride = qj.q_stride;
        act.d = qj.d;
        act.d_stride = k / 32;
        act.corr = qj.corr;
        act.corr_stride = qj.corr_stride;
        act.dsum = qj.dsum;
    }

    /* Row chunks: small batches are bandwidth bound, so a few big contiguous chunks per
     * thread keep each thread streaming (the kernels prefetch within a chunk); big
     * batches take small chunks for balance (each chunk still covers every token). */
    int64_t chunk;
    if (nth == 1) {
        chunk = w->rows;
    } else if (n <= 8) {
        chunk = (w->rows + nth * 4 - 1) / (nth * 4);
    } else {
        chunk = 2 * (int64_t)gran;
        /* Tiny matrices: no more chunks than useful. */
        if (chunk * nth * 2 > w->rows)
            chunk = (w->rows + nth * 2 - 1) / (nth * 2);
    }
    chunk = (chunk + gran - 1) / gran * gran;
    if (chunk < gran)
        chunk = gran;
    job.chunk_rows = chunk;
    job.nchunks = (w->rows + chunk - 1) / chunk;
    atomic_init(&job.next, 0);
    if (nth > 1 && job.nchunks > 1)
        gm_pool_run(pool, mm_worker, &job);
    else
        mm_worker(&job, 0, 1);
}

void gm_matmul(gm_pool *pool, const gm_matrix *w, const float *x, int64_t n, int64_t ldx,
               float *y, int64_t ldy)
{
    gm_matmul_isa(gm_cpu_best_isa(), pool, w, x, n, ldx, y, ldy);
}
