/* synth-model.c — synthetic Gemma 4 text GGUFs with seeded weights (see synth-model.h).
 *
 * Names, shapes (ggml order), dtypes and metadata follow llama.cpp's converter
 * (gguf-format.md §1.2-1.5), so the files load like converted checkpoints.
 *
 * Every weight is a pure function of (seed, tensor name, element index): a splitmix64
 * hash of a per-tensor key plus the element counter. Rows can therefore be generated
 * by any number of threads in any order and the result is the same, and the same seed
 * gives the same underlying values whatever the storage type.
 *
 * Files are streamed in chunks of whole rows (at most CHUNK_BYTES, one part of a tensor
 * each): the pool fills one chunk buffer while a writer thread writes the other, so
 * memory stays at two chunks whatever the size of the embedding tables.
 */
#include "synth-model.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/gguf.h"
#include "core/pool.h"
#include "core/quant.h"
#include "decoder/tokenizer.h"

#define GOLDEN 0x9E3779B97F4A7C15ull
#define CHUNK_BYTES ((size_t)64 << 20)
#define CONTEXT_LENGTH 131072u
#define RMS_EPS 1e-6f

/* ------------------------------------------------------------------------------------ */
/* Counter-based random numbers                                                          */

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Approximately N(0, 1): sum of four 16-bit uniforms (Irwin-Hall, bounded at ±3.46),
 * one hash per value; far cheaper than Box-Muller for billions of weights. */
static inline float gauss_from(uint64_t h)
{
    uint32_t s = (uint32_t)(h & 0xFFFF) + (uint32_t)((h >> 16) & 0xFFFF) +
                 (uint32_t)((h >> 32) & 0xFFFF) + (uint32_t)(h >> 48);
    return ((float)s - 131070.0f) * (1.7320508f / 65536.0f);
}

static inline float uniform_from(uint64_t h)
{
    return (float)(h >> 40) * (1.0f / 16777216.0f);
}

/* 64-bit FNV-1a (tensor keys and the vocabulary index). */
static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001B3ull;
    }
    return h;
}

/* ------------------------------------------------------------------------------------ */
/* Types                                                                                 */

static bool type_is_writable(gm_type t)
{
    switch (t) {
    case GM_TYPE_F32: case GM_TYPE_F16: case GM_TYPE_BF16:
    case GM_TYPE_Q4_0: case GM_TYPE_Q4_1: case GM_TYPE_Q5_0: case GM_TYPE_Q8_0:
    case GM_TYPE_Q4_K: case GM_TYPE_Q5_K: case GM_TYPE_Q6_K:
        return true;
    default:
        return false;
    }
}

/* Like llama-quantize: a row length that does not fit the type's blocks falls back to
 * Q8_0, then F16. */
static gm_type matrix_type_for(gm_type want, int64_t ne0)
{
    if (gm_row_size(want, ne0) != 0)
        return want;
    if (gm_row_size(GM_TYPE_Q8_0, ne0) != 0)
        return GM_TYPE_Q8_0;
    return GM_TYPE_F16;
}

/* llama_ftype stored as general.file_type (informational). */
static uint32_t llama_ftype(gm_type t)
{
    switch (t) {
    case GM_TYPE_F32: return 0;
    case GM_TYPE_F16: return 1;
    case GM_TYPE_Q4_0: return 2;
    case GM_TYPE_Q4_1: return 3;
    case GM_TYPE_Q8_0: return 7;
    case GM_TYPE_Q5_0: return 8;
    case GM_TYPE_Q4_K: return 14; /* Q4_K_S */
    case GM_TYPE_Q5_K: return 16; /* Q5_K_S */
    case GM_TYPE_Q6_K: return 18;
    case GM_TYPE_BF16: return 32;
    default: return 0;
    }
}

/* ------------------------------------------------------------------------------------ */
/* Writer thread: streams one part while the pool generates the next                   */

/* A piece of a tensor's data for the writer thread. */
typedef struct part {
    const uint8_t *p;
    size_t n;
    bool input; /* pages of the input mapping: dropped once written */
} part;

/* Drops pages of the input mapping we are done with (they stay in the page cache), so
 * converting a 10 GB file does not show 10 GB resident. */
static void drop_input_pages(const void *p, size_t n)
{
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)p + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t hi = ((uintptr_t)p + n) & ~((uintptr_t)page - 1);
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

typedef struct wthread {
    pthread_t th;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    gm_gguf_writer *w;
    part pending;
    bool has_pending, quit;
    int rc;
    gm_error err;
} wthread;

static void *wthread_main(void *arg)
{
    wthread *t = arg;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (!t->has_pending && !t->quit)
            pthread_cond_wait(&t->cv, &t->mu);
        if (!t->has_pending)
            break;
        part b = t->pending;
        bool skip = t->rc != GM_OK;
        pthread_mutex_unlock(&t->mu);
        gm_error e = { 0 };
        int rc = skip ? GM_OK : gm_gguf_writer_stream_part(t->w, b.p, b.n, &e);
        if (b.input)
            drop_input_pages(b.p, b.n);
        pthread_mutex_lock(&t->mu);
        if (rc != GM_OK && t->rc == GM_OK) {
            t->rc = rc;
            t->err = e;
        }
        t->has_pending = false;
        pthread_cond_broadcast(&t->cv);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

static int wthread_start(wthread *t, gm_gguf_writer *w, gm_error *err)
{
    memset(t, 0, sizeof *t);
    t->w = w;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    if (pthread_create(&t->th, NULL, wthread_main, t) != 0) {
        pthread_mutex_destroy(&t->mu);
        pthread_cond_destroy(&t->cv);
        return gm_set_error(err, GM_ERR_NOMEM, "cannot start the writer thread");
    }
    t->started = true;
    return GM_OK;
}

/* Hands a part to the writer once the previous one is written, so when this returns
 * only this part is in flight. Returns an earlier write error instead. */
static int wthread_submit(wthread *t, part b, gm_error *err)
{
    pthread_mutex_lock(&t->mu);
    while (t->has_pending)
        pthread_cond_wait(&t->cv, &t->mu);
    int rc = t->rc;
    if (rc == GM_OK) {
        t->pending = b;
        t->has_pending = true;
        pthread_cond_broadcast(&t->cv);
    } else if (err) {
        *err = t->err;
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

/* Waits for the last part and stops the thread; returns the first write error. */
static int wthread_stop(wthread *t, gm_error *err)
{
    if (!t->started)
        return GM_OK;
    pthread_mutex_lock(&t->mu);
    while (t->has_pending)
        pthread_cond_wait(&t->cv, &t->mu);
    t->quit = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->th, NULL);
    t->started = false;
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    if (t->rc != GM_OK && err)
        *err = t->err;
    return t->rc;
}

/* ------------------------------------------------------------------------------------ */
/* Tensor table                                                                          */

enum init_kind {
    INIT_NORMAL,   /* a * N(0,1) */
    INIT_NORM,     /* a * (1 + b * N(0,1)) */
    INIT_UNIFORM,  /* a + (b - a) * U(0,1) */
    INIT_ROPE,     /* 1.0 for index < a, 1e30 after */
};

typedef struct stensor {
    char name[96];
    gm_type type;
    uint32_t n_dims;
    int64_t ne[4];     /* unused dims 0 */
    enum init_kind kind;
    float a, b;
    uint64_t key;
} stensor;

typedef struct tlist {
    stensor *v;
    size_t n, cap;
} tlist;

static stensor *tlist_push(tlist *l, const char *name, gm_error *err)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        stensor *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            gm_set_error(err, GM_ERR_NOMEM, "out of memory for the tensor list");
            return NULL;
        }
        l->v = v;
        l->cap = cap;
    }
    stensor *t = &l->v[l->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    return t;
}

/* ------------------------------------------------------------------------------------ */
/* Parallel row generation                                                               */

typedef struct row_job {
    /* generation (src == NULL) or conversion of an existing tensor */
    const stensor *t;
    const gm_gguf_tensor *src;
    gm_type out_type;
    int64_t ne0, n_rows;
    size_t out_row_bytes;
    int64_t row0, chunk_rows; /* the chunk being made: rows [row0, row0 + chunk_rows) */
    uint8_t *dst;             /* its output, chunk_rows * out_row_bytes */
    float **scratch;     /* one row of floats per worker */
    atomic_int failed;   /* set by any worker on a conversion error */
} row_job;

static void gen_row(const stensor *t, int64_t row, float *out)
{
    const int64_t ne0 = t->ne[0];
    const uint64_t base = t->key + (uint64_t)(row * ne0) * GOLDEN;
    switch (t->kind) {
    case INIT_NORMAL:
        for (int64_t c = 0; c < ne0; c++)
            out[c] = t->a * gauss_from(mix64(base + (uint64_t)c * GOLDEN));
        break;
    case INIT_NORM:
        for (int64_t c = 0; c < ne0; c++)
            out[c] = t->a * (1.0f + t->b * gauss_from(mix64(base + (uint64_t)c * GOLDEN)));
        break;
    case INIT_UNIFORM:
        for (int64_t c = 0; c < ne0; c++)
            out[c] = t->a + (t->b - t->a) * uniform_from(mix64(base + (uint64_t)c * GOLDEN));
        break;
    case INIT_ROPE:
        for (int64_t c = 0; c < ne0; c++)
            out[c] = (float)(row * ne0 + c) < t->a ? 1.0f : 1e30f;
        break;
    }
}

static void row_worker(void *ctx, int ith, int nth)
{
    row_job *job = ctx;
    long r0, r1;
    gm_pool_range((long)job->chunk_rows, ith, nth, &r0, &r1);
    float *buf = job->scratch[ith];
    for (long r = r0; r < r1 && !job->failed; r++) {
        const int64_t row = job->row0 + r;
        if (job->src) {
            const uint8_t *src = (const uint8_t *)job->src->data +
                                 (size_t)row * gm_row_size(job->src->type, job->ne0);
            if (gm_dequantize_row(job->src->type, src, buf, job->ne0) != 0) {
                job->failed = 1;
                return;
            }
        } else {
            gen_row(job->t, row, buf);
        }
        if (gm_quantize_row(job->out_type, buf, job->dst + (size_t)r * job->out_row_bytes, job->ne0) != 0) {
            job->failed = 1;
            return;
        }
    }
}

typedef struct runner {
    gm_pool *pool;
    int n_threads;
    float **scratch;
    int64_t scratch_n;
    /* Chunk buffers, used in turn: the pool fills one while the writer writes the other. */
    uint8_t *chunk[2];
    size_t chunk_cap[2];
    int next_chunk;
} runner;

static int runner_init(runner *r, int n_threads, int64_t max_row, gm_error *err)
{
    memset(r, 0, sizeof *r);
    r->pool = gm_pool_create(n_threads);
    if (!r->pool)
        return gm_set_error(err, GM_ERR_NOMEM, "cannot create a thread pool");
    r->n_threads = gm_pool_size(r->pool);
    r->scratch = calloc((size_t)r->n_threads, sizeof *r->scratch);
    if (!r->scratch)
        return gm_set_error(err, GM_ERR_NOMEM, "out of memory");
    r->scratch_n = max_row;
    for (int i = 0; i < r->n_threads; i++) {
        r->scratch[i] = malloc((size_t)max_row * sizeof(float));
        if (!r->scratch[i])
            return gm_set_error(err, GM_ERR_NOMEM, "out of memory");
    }
    return GM_OK;
}

/* The buffer for the next chunk, of at least n bytes. Not in flight: the writer has
 * finished the one before the last submitted part (wthread_submit). */
static uint8_t *runner_chunk(runner *r, size_t n, gm_error *err)
{
    const int k = r->next_chunk;
    if (r->chunk_cap[k] < n) {
        free(r->chunk[k]);
        r->chunk_cap[k] = 0;
        r->chunk[k] = malloc(n);
        if (!r->chunk[k]) {
            gm_set_error(err, GM_ERR_NOMEM, "out of memory for a %zu-byte chunk", n);
            return NULL;
        }
        r->chunk_cap[k] = n;
    }
    r->next_chunk ^= 1;
    return r->chunk[k];
}

/* Must run after the writer thread has stopped (it may still read a chunk). */
static void runner_free(runner *r)
{
    if (r->scratch)
        for (int i = 0; i < r->n_threads; i++)
            free(r->scratch[i]);
    free(r->scratch);
    free(r->chunk[0]);
    free(r->chunk[1]);
    gm_pool_destroy(r->pool);
    memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------------------------------ */
/* Generated vocabulary                                                                  */

typedef struct vocab {
    uint32_t n_vocab;
    gm_gguf_str *tok;       /* ptr NULL = free slot */
    int32_t *type;
    uint32_t n_used;
    uint32_t next_free;
    gm_gguf_str *merges;
    size_t n_merges, cap_merges;
    /* string arena (chunks never move) */
    char **chunks;
    size_t n_chunks, cap_chunks;
    size_t chunk_used, chunk_cap;
    /* string -> id+1, open addressing */
    uint32_t *slots;
    uint32_t slot_mask;
} vocab;

static const char *vocab_store(vocab *v, const char *s, size_t len)
{
    if (!v->n_chunks || v->chunk_used + len + 1 > v->chunk_cap) {
        size_t cap = len + 1 > (1u << 20) ? len + 1 : (1u << 20);
        if (v->n_chunks == v->cap_chunks) {
            size_t nc = v->cap_chunks ? 2 * v->cap_chunks : 16;
            char **c = realloc(v->chunks, nc * sizeof *c);
            if (!c)
                return NULL;
            v->chunks = c;
            v->cap_chunks = nc;
        }
        char *chunk = malloc(cap);
        if (!chunk)
            return NULL;
        v->chunks[v->n_chunks++] = chunk;
        v->chunk_used = 0;
        v->chunk_cap = cap;
    }
    char *p = v->chunks[v->n_chunks - 1] + v->chunk_used;
    memcpy(p, s, len);
    p[len] = '\0';
    v->chunk_used += len + 1;
    return p;
}

/* Returns the slot for s: holding its id+1, or 0 (free). */
static uint32_t *vocab_slot(vocab *v, const char *s, size_t len)
{
    uint32_t i = (uint32_t)mix64(hash_bytes(s, len)) & v->slot_mask;
    for (;;) {
        uint32_t e = v->slots[i];
        if (e == 0)
            return &v->slots[i];
        const gm_gguf_str *t = &v->tok[e - 1];
        if (t->len == len && memcmp(t->ptr, s, len) == 0)
            return &v->slots[i];
        i = (i + 1) & v->slot_mask;
    }
}

static int32_t vocab_find(vocab *v, const char *s, size_t len)
{
    uint32_t e = *vocab_slot(v, s, len);
    return e ? (int32_t)e - 1 : -1;
}

/* Puts s at id (or at the next free id when id < 0). Returns the id, -1 when s already
 * exists or the vocabulary is full, -2 when out of memory. */
static int32_t vocab_put(vocab *v, const char *s, size_t len, int32_t type, int32_t id)
{
    uint32_t *slot = vocab_slot(v, s, len);
    if (*slot)
        return -1;
    if (id < 0) {
        while (v->next_free < v->n_vocab && v->tok[v->next_free].ptr)
            v->next_free++;
        if (v->next_free >= v->n_vocab)
            return -1;
        id = (int32_t)v->next_free;
    }
    if ((uint32_t)id >= v->n_vocab || v->tok[id].ptr)
        return -1;
    const char *p = vocab_store(v, s, len);
    if (!p)
        return -2;
    v->tok[id].ptr = p;
    v->tok[id].len = len;
    v->type[id] = type;
    *slot = (uint32_t)id + 1;
    v->n_used++;
    return id;
}

static int vocab_add_merge(vocab *v, const char *l, size_t ll, const char *r, size_t rl)
{
    if (v->n_merges == v->cap_merges) {
        size_t cap = v->cap_merges ? 2 * v->cap_merges : 1024;
        gm_gguf_str *m = realloc(v->merges, cap * sizeof *m);
        if (!m)
            return -1;
        v->merges = m;
        v->cap_merges = cap;
    }
    char tmp[256];
    if (ll + rl + 1 > sizeof tmp)
        return -1;
    memcpy(tmp, l, ll);
    tmp[ll] = ' ';
    memcpy(tmp + ll + 1, r, rl);
    const char *p = vocab_store(v, tmp, ll + rl + 1);
    if (!p)
        return -1;
    v->merges[v->n_merges].ptr = p;
    v->merges[v->n_merges].len = ll + rl + 1;
    v->n_merges++;
    return 0;
}

static size_t utf8_len(unsigned char c)
{
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 1;
}

/* Adds word and each of its prefixes as NORMAL tokens, with the merges "prefix char"
 * that build them: a consistent BPE in which every merge result is a token.
 * Returns 0, 1 when the vocabulary is full, -1 on out of memory. */
static int vocab_add_chain(vocab *v, const char *w)
{
    size_t n = strlen(w);
    size_t pl = utf8_len((unsigned char)w[0]);
    if (pl > n)
        return 0;
    if (vocab_find(v, w, pl) < 0) {
        int32_t r = vocab_put(v, w, pl, GM_TOKEN_NORMAL, -1);
        if (r == -2) return -1;
        if (r < 0) return 1;
    }
    while (pl < n) {
        size_t cl = utf8_len((unsigned char)w[pl]);
        if (pl + cl > n)
            break;
        if (vocab_find(v, w + pl, cl) < 0) {
            int32_t r = vocab_put(v, w + pl, cl, GM_TOKEN_NORMAL, -1);
            if (r == -2) return -1;
            if (r < 0) return 1;
        }
        if (vocab_find(v, w, pl + cl) < 0) {
            int32_t r = vocab_put(v, w, pl + cl, GM_TOKEN_NORMAL, -1);
            if (r == -2) return -1;
            if (r < 0) return 1;
            if (vocab_add_merge(v, w, pl, w + pl, cl) != 0)
                return -1;
        }
        pl += cl;
    }
    return 0;
}

static void vocab_free(vocab *v)
{
    for (size_t i = 0; i < v->n_chunks; i++)
        free(v->chunks[i]);
    free(v->chunks);
    free(v->tok);
    free(v->type);
    free(v->merges);
    free(v->slots);
    memset(v, 0, sizeof *v);
}

#define SPACE "\xE2\x96\x81" /* U+2581, how the Gemma tokenizers spell a space */

struct special_tok {
    const char *text;
    int32_t real_id;   /* its id in the real Gemma 4 vocabulary */
    int32_t type;
};

static const struct special_tok specials[] = {
    { "<pad>", 0, GM_TOKEN_CONTROL },
    { "<eos>", 1, GM_TOKEN_CONTROL },
    { "<bos>", 2, GM_TOKEN_CONTROL },
    { "<unk>", 3, GM_TOKEN_CONTROL },
    { "<mask>", 4, GM_TOKEN_CONTROL },
    { "<|tool>", 46, GM_TOKEN_CONTROL },
    { "<tool|>", 47, GM_TOKEN_CONTROL },
    { "<|tool_call>", 48, GM_TOKEN_USER_DEFINED },
    { "<tool_call|>", 49, GM_TOKEN_USER_DEFINED },
    { "<|tool_response>", 50, GM_TOKEN_USER_DEFINED },
    { "<tool_response|>", 51, GM_TOKEN_USER_DEFINED },
    { "<|\"|>", 52, GM_TOKEN_USER_DEFINED },
    { "<|think|>", 98, GM_TOKEN_CONTROL },
    { "<|channel>", 100, GM_TOKEN_USER_DEFINED },
    { "<channel|>", 101, GM_TOKEN_USER_DEFINED },
    { "<|turn>", 105, GM_TOKEN_CONTROL },
    { "<turn|>", 106, GM_TOKEN_CONTROL },
    { "\n", 107, GM_TOKEN_NORMAL },
    { "\n\n", 108, GM_TOKEN_NORMAL },
    { "<|image>", 255999, GM_TOKEN_CONTROL },
    { "<|audio>", 256000, GM_TOKEN_CONTROL },
    { "<|image|>", 258880, GM_TOKEN_CONTROL },
    { "<|audio|>", 258881, GM_TOKEN_CONTROL },
    { "<image|>", 258882, GM_TOKEN_CONTROL },
    { "<audio|>", 258883, GM_TOKEN_CONTROL },
    { "<|video|>", 258884, GM_TOKEN_CONTROL },
};
#define N_SPECIALS (sizeof specials / sizeof specials[0])
#define REAL_LAYOUT_MIN 258885u   /* every real special id fits */
#define REAL_BYTE_BASE 238

static const char *const chain_words[] = {
    SPACE "the", SPACE "hello", SPACE "world", "user", "model", SPACE "is", SPACE "a", SPACE "of", SPACE "and", SPACE "to", SPACE "in",
    SPACE "it", SPACE "you", SPACE "I", SPACE "that", SPACE "what", SPACE "this", SPACE "model", SPACE "user",
    SPACE "Gemma", SPACE "can", SPACE "help", SPACE "with", SPACE "image", SPACE "audio", SPACE "text",
    "hello", "the", "system", "ing", "ed", "er", "es", "thought",
};

/* Builds the generated vocabulary. Small sizes pack everything densely; from
 * REAL_LAYOUT_MIN on, special and byte tokens sit at their real Gemma 4 ids. */
static int vocab_build(vocab *v, uint32_t n_vocab, gm_error *err)
{
    memset(v, 0, sizeof *v);
    const uint32_t n_base = (uint32_t)N_SPECIALS + 256 + 32;
    if (n_vocab < n_base)
        return gm_set_error(err, GM_ERR_INVALID,
                            "generated vocabulary: n_vocab %u is below the minimum %u (special, byte and "
                            "letter tokens)", n_vocab, n_base);
    v->n_vocab = n_vocab;
    v->tok = calloc(n_vocab, sizeof *v->tok);
    v->type = calloc(n_vocab, sizeof *v->type);
    uint32_t cap = 1;
    while (cap < 2u * n_vocab)
        cap <<= 1;
    v->slots = calloc(cap, sizeof *v->slots);
    v->slot_mask = cap - 1;
    if (!v->tok || !v->type || !v->slots)
        goto oom;

    const bool real = n_vocab >= REAL_LAYOUT_MIN;
    for (size_t i = 0; i < N_SPECIALS; i++)
        if (vocab_put(v, specials[i].text, strlen(specials[i].text), specials[i].type,
                      real ? specials[i].real_id : -1) < 0)
            goto oom;
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        if (vocab_put(v, s, strlen(s), GM_TOKEN_BYTE, real ? REAL_BYTE_BASE + b : -1) < 0)
            goto oom;
    }
    if (real) {
        /* The real vocabulary's unused slots below the first byte token. */
        int k = 0;
        for (uint32_t id = 5; id < REAL_BYTE_BASE; id++) {
            if (v->tok[id].ptr)
                continue;
            if (id > 108 && id < REAL_BYTE_BASE)
                break; /* 109.. are ordinary tokens in the real file */
            char s[32];
            snprintf(s, sizeof s, "<unused%d>", k++);
            if (vocab_put(v, s, strlen(s), GM_TOKEN_NORMAL, (int32_t)id) < 0)
                goto oom;
        }
    }
    /* Base characters (single symbols, no merges). */
    const char *base1 = " abcdefghijklmnopqrstuvwxyz.,!?'";
    for (const char *c = base1; *c; c++) {
        const char *s = *c == ' ' ? SPACE : c;
        size_t len = *c == ' ' ? 3 : 1;
        if (vocab_put(v, s, len, GM_TOKEN_NORMAL, -1) == -2)
            goto oom;
    }
    if (n_vocab >= 4096) {
        const char *base2 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-:;\"()";
        for (const char *c = base2; *c; c++)
            if (vocab_put(v, c, 1, GM_TOKEN_NORMAL, -1) == -2)
                goto oom;
    }
    for (size_t i = 0; i < sizeof chain_words / sizeof chain_words[0]; i++) {
        int r = vocab_add_chain(v, chain_words[i]);
        if (r < 0)
            goto oom;
        if (r > 0)
            break;
    }
    /* Fill the rest with two enumerations of lower-case strings, "▁a, ▁b, ..., ▁aa, ..."
     * and "aa, ab, ...", alternating. Each string's prefix came earlier, so one token and
     * one merge per new string. */
    char cur[2][16] = { "a", "a" };
    size_t curlen[2] = { 1, 1 };
    int stream = 0;
    while (v->n_used < n_vocab) {
        char w[32];
        int s = stream;
        stream ^= 1;
        if (s == 0) {
            memcpy(w, SPACE, 3);
            memcpy(w + 3, cur[0], curlen[0]);
            w[3 + curlen[0]] = '\0';
        } else {
            memcpy(w, cur[1], curlen[1]);
            w[curlen[1]] = '\0';
        }
        if (vocab_add_chain(v, w) < 0)
            goto oom;
        /* odometer increment */
        int i = (int)curlen[s] - 1;
        while (i >= 0 && cur[s][i] == 'z') {
            cur[s][i] = 'a';
            i--;
        }
        if (i >= 0) {
            cur[s][i]++;
        } else {
            if (curlen[s] + 1 >= sizeof cur[s]) {
                vocab_free(v);
                return gm_set_error(err, GM_ERR_INVALID, "generated vocabulary: n_vocab %u too large", n_vocab);
            }
            cur[s][curlen[s]++] = 'a';
            cur[s][curlen[s]] = '\0';
        }
    }
    return GM_OK;
oom:
    vocab_free(v);
    return gm_set_error(err, GM_ERR_NOMEM, "out of memory building the generated vocabulary");
}

static int add_generated_vocab(gm_gguf_writer *w, uint32_t n_vocab, gm_error *err)
{
    vocab v;
    int rc = vocab_build(&v, n_vocab, err);
    if (rc != GM_OK)
        return rc;
    float *scores = malloc((size_t)n_vocab * sizeof *scores);
    if (!scores) {
        vocab_free(&v);
        return gm_set_error(err, GM_ERR_NOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < n_vocab; i++)
        scores[i] = -1000.0f;
    gm_gguf_add_str(w, "tokenizer.ggml.model", "gemma4");
    gm_gguf_add_arr_str(w, "tokenizer.ggml.tokens", v.tok, n_vocab);
    gm_gguf_add_arr_f32(w, "tokenizer.ggml.scores", scores, n_vocab);
    gm_gguf_add_arr_i32(w, "tokenizer.ggml.token_type", v.type, n_vocab);
    gm_gguf_add_arr_str(w, "tokenizer.ggml.merges", v.merges, v.n_merges);
    gm_gguf_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)vocab_find(&v, "<bos>", 5));
    gm_gguf_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)vocab_find(&v, "<eos>", 5));
    gm_gguf_add_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)vocab_find(&v, "<unk>", 5));
    gm_gguf_add_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)vocab_find(&v, "<pad>", 5));
    gm_gguf_add_u32(w, "tokenizer.ggml.mask_token_id", (uint32_t)vocab_find(&v, "<mask>", 6));
    gm_gguf_add_bool(w, "tokenizer.ggml.add_space_prefix", false);
    gm_gguf_add_bool(w, "tokenizer.ggml.add_bos_token", true);
    free(scores);
    /* The writer copies keys when they are added, so the vocabulary can go. */
    vocab_free(&v);
    return GM_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Presets                                                                               */

/* The presets' shapes and types; gm_synth_preset adds what they share. */
static const struct preset {
    const char *id;
    gm_synth_config c;
} presets[] = {
    { "e2b", { .name = "Gemma 4 E2B (synthetic)", .n_embd = 1536, .n_layer = 35, .n_head = 8, .n_head_kv = 1,
               .head_dim_swa = 256, .head_dim_full = 512, .n_ff = 6144, .double_wide = true, .n_shared_kv = 20,
               .n_embd_per_layer = 256, .sliding_window = 512, .swa_period = 5,
               .wtype = GM_TYPE_Q4_0, .embd_type = GM_TYPE_Q4_0 } },
    { "e4b", { .name = "Gemma 4 E4B (synthetic)", .n_embd = 2560, .n_layer = 42, .n_head = 8, .n_head_kv = 2,
               .head_dim_swa = 256, .head_dim_full = 512, .n_ff = 10240, .double_wide = false, .n_shared_kv = 18,
               .n_embd_per_layer = 256, .sliding_window = 512, .swa_period = 6,
               .wtype = GM_TYPE_Q4_0, .embd_type = GM_TYPE_Q4_0 } },
    /* The README's demo model: real vocabulary, small everything else. Layers S F S F
     * with the last two KV-shared (reading layers 0 and 1). The embedding tables are
     * Q4_0 to keep the file small: at 262144 rows they dominate it. */
    { "tiny", { .name = "Gemma 4 tiny (synthetic)", .n_embd = 64, .n_layer = 4, .n_head = 4, .n_head_kv = 2,
                .head_dim_swa = 32, .head_dim_full = 64, .n_ff = 256, .double_wide = true, .n_shared_kv = 2,
                .n_embd_per_layer = 16, .sliding_window = 32, .swa_period = 2,
                .wtype = GM_TYPE_Q8_0, .embd_type = GM_TYPE_Q4_0 } },
    /* Unit-test model: layers S S F S S F; layers 4 (sliding) and 5 (full) share the KV
     * of layers 3 and 2. */
    { "test", { .name = "Gemma 4 test (synthetic)", .n_vocab = 384, .n_embd = 64, .n_layer = 6, .n_head = 4,
                .n_head_kv = 2, .head_dim_swa = 16, .head_dim_full = 32, .n_ff = 128, .double_wide = true,
                .n_shared_kv = 2, .n_embd_per_layer = 8, .sliding_window = 8, .swa_period = 3,
                .wtype = GM_TYPE_F32, .embd_type = GM_TYPE_F32 } },
};

int gm_synth_preset(const char *name, gm_synth_config *out)
{
    if (!name || !out)
        return -1;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (strcmp(name, presets[i].id) != 0)
            continue;
        gm_synth_config c = presets[i].c;
        if (c.n_vocab == 0)
            c.n_vocab = 262144; /* the real Gemma 4 vocabulary size */
        c.rope_theta_swa = 10000.0f;
        c.rope_theta_full = 1000000.0f;
        c.partial_rotary = 0.25f;
        c.final_softcap = 30.0f;
        c.bidir = -1;
        c.layer_scale = true;
        c.seed = 1;
        *out = c;
        return 0;
    }
    return -1;
}

/* ------------------------------------------------------------------------------------ */
/* Writing                                                                               */

static bool layer_is_swa(const gm_synth_config *c, uint32_t il)
{
    if (il + 1 == c->n_layer)
        return false; /* the last layer is always full attention */
    if (c->swa_period == 0)
        return true;
    return (il + 1) % c->swa_period != 0;
}

static int validate(const gm_synth_config *c, gm_error *err)
{
#define BAD(...) return gm_set_error(err, GM_ERR_INVALID, __VA_ARGS__)
    if (c->n_embd == 0 || c->n_layer == 0 || c->n_head == 0 || c->n_head_kv == 0 || c->n_ff == 0)
        BAD("synthetic model: n_embd, n_layer, n_head, n_head_kv and n_ff must be positive");
    if (c->n_layer > 4096 || c->n_embd > 65536 || c->n_ff > 262144 || c->n_head > 1024)
        BAD("synthetic model: dimensions too large");
    if (c->n_head % c->n_head_kv != 0)
        BAD("synthetic model: n_head %u is not a multiple of n_head_kv %u", c->n_head, c->n_head_kv);
    if (c->n_head_kv_full && c->n_head % c->n_head_kv_full != 0)
        BAD("synthetic model: n_head %u is not a multiple of n_head_kv_full %u", c->n_head, c->n_head_kv_full);
    if (c->head_dim_swa == 0 || c->head_dim_full == 0 || c->head_dim_swa % 2 || c->head_dim_full % 2)
        BAD("synthetic model: head dims must be positive and even (%u, %u)", c->head_dim_swa, c->head_dim_full);
    if (c->n_shared_kv >= c->n_layer)
        BAD("synthetic model: n_shared_kv %u must be below n_layer %u", c->n_shared_kv, c->n_layer);
    if (c->sliding_window == 0)
        BAD("synthetic model: sliding_window must be positive");
    if (!(c->partial_rotary >= 0.0f && c->partial_rotary <= 1.0f))
        BAD("synthetic model: partial_rotary %g not in [0, 1]", (double)c->partial_rotary);
    if (!(c->rope_theta_swa > 0.0f) || !(c->rope_theta_full > 0.0f))
        BAD("synthetic model: rope thetas must be positive");
    if (!type_is_writable(c->wtype))
        BAD("synthetic model: weight type %s cannot be written", gm_type_name(c->wtype));
    if (!type_is_writable(c->embd_type))
        BAD("synthetic model: embedding type %s cannot be written", gm_type_name(c->embd_type));
    if (c->bidir < -1 || c->bidir > 1)
        BAD("synthetic model: bidir must be -1, 0 or 1");
    if (c->n_embd_per_layer && (uint64_t)c->n_embd_per_layer * c->n_layer > (1u << 20))
        BAD("synthetic model: PLE width too large");
    /* Every KV-shared layer needs an earlier layer of its type with its own KV. */
    uint32_t first_shared = c->n_layer - c->n_shared_kv;
    for (uint32_t il = first_shared; il < c->n_layer; il++) {
        bool found = false;
        for (uint32_t j = 0; j < first_shared; j++)
            if (layer_is_swa(c, j) == layer_is_swa(c, il))
                found = true;
        if (!found)
            BAD("synthetic model: KV-shared layer %u (%s) has no earlier %s layer with its own KV", il,
                layer_is_swa(c, il) ? "sliding" : "full", layer_is_swa(c, il) ? "sliding" : "full");
    }
    return GM_OK;
#undef BAD
}

static uint32_t layer_ff(const gm_synth_config *c, uint32_t il)
{
    bool shared = il >= c->n_layer - c->n_shared_kv;
    return c->double_wide && c->n_shared_kv > 0 && shared ? 2 * c->n_ff : c->n_ff;
}

static uint32_t layer_kv_heads(const gm_synth_config *c, uint32_t il)
{
    return !layer_is_swa(c, il) && c->n_head_kv_full ? c->n_head_kv_full : c->n_head_kv;
}

/* A "scalar or per-layer" key: the per-layer array when per_layer, else the scalar
 * (also when the array cannot be allocated). */
static void add_u32_or_per_layer(gm_gguf_writer *w, const char *key, const gm_synth_config *c, bool per_layer,
                                 uint32_t (*of_layer)(const gm_synth_config *c, uint32_t il), uint32_t scalar)
{
    int32_t *arr = per_layer ? malloc((size_t)c->n_layer * sizeof *arr) : NULL;
    if (!arr) {
        gm_gguf_add_u32(w, key, scalar);
        return;
    }
    for (uint32_t il = 0; il < c->n_layer; il++)
        arr[il] = (int32_t)of_layer(c, il);
    gm_gguf_add_arr_i32(w, key, arr, c->n_layer);
    free(arr);
}

static void add_metadata(gm_gguf_writer *w, const gm_synth_config *c)
{
    const uint32_t L = c->n_layer;
    gm_gguf_add_str(w, "general.architecture", "gemma4");
    gm_gguf_add_str(w, "general.type", "model");
    gm_gguf_add_str(w, "general.name", c->name[0] ? c->name : "Gemma 4 (synthetic)");
    gm_gguf_add_u32(w, "general.file_type", llama_ftype(c->wtype));
    gm_gguf_add_u32(w, "general.quantization_version", 2);
    gm_gguf_add_u32(w, "gemma4.block_count", L);
    gm_gguf_add_u32(w, "gemma4.context_length", CONTEXT_LENGTH);
    gm_gguf_add_u32(w, "gemma4.embedding_length", c->n_embd);

    add_u32_or_per_layer(w, "gemma4.feed_forward_length", c, c->double_wide, layer_ff, c->n_ff);
    gm_gguf_add_u32(w, "gemma4.attention.head_count", c->n_head);
    add_u32_or_per_layer(w, "gemma4.attention.head_count_kv", c, c->n_head_kv_full != 0, layer_kv_heads,
                         c->n_head_kv);
    bool *pat = malloc((size_t)L * sizeof *pat);
    gm_gguf_add_f32(w, "gemma4.rope.freq_base", c->rope_theta_full);
    gm_gguf_add_f32(w, "gemma4.rope.freq_base_swa", c->rope_theta_swa);
    gm_gguf_add_f32(w, "gemma4.attention.layer_norm_rms_epsilon", RMS_EPS);
    gm_gguf_add_u32(w, "gemma4.attention.key_length", c->head_dim_full);
    gm_gguf_add_u32(w, "gemma4.attention.value_length", c->head_dim_full);
    if (c->final_softcap > 0.0f)
        gm_gguf_add_f32(w, "gemma4.final_logit_softcapping", c->final_softcap);
    gm_gguf_add_u32(w, "gemma4.attention.sliding_window", c->sliding_window);
    gm_gguf_add_u32(w, "gemma4.attention.shared_kv_layers", c->n_shared_kv);
    gm_gguf_add_u32(w, "gemma4.embedding_length_per_layer_input", c->n_embd_per_layer);
    if (pat) {
        for (uint32_t il = 0; il < L; il++)
            pat[il] = layer_is_swa(c, il);
        gm_gguf_add_arr_bool(w, "gemma4.attention.sliding_window_pattern", pat, L);
    }
    gm_gguf_add_u32(w, "gemma4.attention.key_length_swa", c->head_dim_swa);
    gm_gguf_add_u32(w, "gemma4.attention.value_length_swa", c->head_dim_swa);
    gm_gguf_add_u32(w, "gemma4.rope.dimension_count", c->head_dim_full);
    gm_gguf_add_u32(w, "gemma4.rope.dimension_count_swa", c->head_dim_swa);
    if (c->bidir >= 0)
        gm_gguf_add_str(w, "gemma4.use_bidirectional_attention", c->bidir ? "vision" : "none");
    free(pat);
}

/* The tensor list in the converter's names, shapes (ggml order) and dtypes. */
static int build_tensors(const gm_synth_config *c, uint32_t n_vocab, tlist *l, gm_error *err)
{
    const int64_t E = c->n_embd, P = c->n_embd_per_layer, L = c->n_layer;
    const uint32_t first_shared = c->n_layer - c->n_shared_kv;
    stensor *t;
    char name[96];

#define MATRIX(nm, in, out, wt) do { \
        if (!(t = tlist_push(l, (nm), err))) return err ? err->code : GM_ERR_NOMEM; \
        t->n_dims = 2; t->ne[0] = (in); t->ne[1] = (out); \
        t->type = matrix_type_for((wt), (in)); \
        t->kind = INIT_NORMAL; t->a = 1.0f / sqrtf((float)(in)); \
    } while (0)
#define VECTOR(nm, n, kd, pa, pb) do { \
        if (!(t = tlist_push(l, (nm), err))) return err ? err->code : GM_ERR_NOMEM; \
        t->n_dims = 1; t->ne[0] = (n); t->ne[1] = 1; t->type = GM_TYPE_F32; \
        t->kind = (kd); t->a = (pa); t->b = (pb); \
    } while (0)
#define NORM(nm, n) VECTOR(nm, n, INIT_NORM, 1.0f, 0.1f)

    /* Embeddings: rows of rms 1 once scaled by sqrt(width), so logits through the tied
     * head come out around N(0, 1), well inside the softcap. */
    MATRIX("token_embd.weight", E, n_vocab, c->embd_type);
    if (P) {
        MATRIX("per_layer_token_embd.weight", P * L, n_vocab, c->embd_type);
        t->a = 1.0f / sqrtf((float)P);
        MATRIX("per_layer_model_proj.weight", E, P * L, c->wtype);
        NORM("per_layer_proj_norm.weight", P);
    }
    /* Proportional RoPE for full layers (gguf-format.md §1.3). */
    {
        uint32_t n_pairs = c->head_dim_full / 2;
        float n_rot = floorf(c->partial_rotary * (float)c->head_dim_full / 2.0f);
        VECTOR("rope_freqs.weight", n_pairs, INIT_ROPE, n_rot, 0.0f);
    }
    NORM("output_norm.weight", E);

    for (uint32_t il = 0; il < c->n_layer; il++) {
        const bool swa = layer_is_swa(c, il);
        const int64_t hd = swa ? c->head_dim_swa : c->head_dim_full;
        const int64_t nh = c->n_head, nkv = layer_kv_heads(c, il);
        const bool own_kv = il < first_shared;
        const bool has_kv = own_kv || c->keep_shared_kv_tensors;
        const int64_t ff = layer_ff(c, il);
        /* q_norm and k_norm around hd^-1/4 each: with attention scale 1.0 the scores
         * then have unit spread instead of sqrt(hd) (no saturated softmax). */
        const float qk = powf((float)hd, -0.25f);

#define LNAME(suffix) (snprintf(name, sizeof name, "blk.%u." suffix, il), name)
        NORM(LNAME("attn_norm.weight"), E);
        MATRIX(LNAME("attn_q.weight"), E, nh * hd, c->wtype);
        if (has_kv) {
            MATRIX(LNAME("attn_k.weight"), E, nkv * hd, c->wtype);
            if (!(c->k_eq_v && !swa))
                MATRIX(LNAME("attn_v.weight"), E, nkv * hd, c->wtype);
        }
        MATRIX(LNAME("attn_output.weight"), nh * hd, E, c->wtype);
        VECTOR(LNAME("attn_q_norm.weight"), hd, INIT_NORM, qk, 0.1f);
        if (has_kv)
            VECTOR(LNAME("attn_k_norm.weight"), hd, INIT_NORM, qk, 0.1f);
        NORM(LNAME("post_attention_norm.weight"), E);
        if (c->layer_scale)
            VECTOR(LNAME("layer_output_scale.weight"), 1, INIT_UNIFORM, 0.3f, 1.0f);
        NORM(LNAME("ffn_norm.weight"), E);
        MATRIX(LNAME("ffn_gate.weight"), E, ff, c->wtype);
        MATRIX(LNAME("ffn_up.weight"), E, ff, c->wtype);
        MATRIX(LNAME("ffn_down.weight"), ff, E, c->wtype);
        NORM(LNAME("post_ffw_norm.weight"), E);
        if (P) {
            MATRIX(LNAME("inp_gate.weight"), E, P, c->wtype);
            MATRIX(LNAME("proj.weight"), P, E, c->wtype);
            NORM(LNAME("post_norm.weight"), E);
        }
#undef LNAME
    }
#undef MATRIX
#undef VECTOR
#undef NORM
    for (size_t i = 0; i < l->n; i++)
        l->v[i].key = mix64(c->seed ^ mix64(hash_bytes(l->v[i].name, strlen(l->v[i].name))));
    return GM_OK;
}

/* The writing side that gm_synth_write and gm_synth_requantize share: the pool with
 * its chunk buffers, the GGUF writer (tensors added before output_begin) and the writer
 * thread. */
typedef struct output {
    gm_gguf_writer *w;
    const char *path;
    runner rn;
    wthread wt;
    bool begun;
} output;

static int output_begin(output *o, int n_threads, int64_t max_row, gm_error *err)
{
    int rc = runner_init(&o->rn, n_threads, max_row, err);
    if (rc == GM_OK)
        rc = gm_gguf_writer_begin(o->w, o->path, err);
    if (rc != GM_OK)
        return rc;
    o->begun = true;
    return wthread_start(&o->wt, o->w, err);
}

/* Waits for the last part and completes the file. */
static int output_finish(output *o, gm_error *err)
{
    int rc = wthread_stop(&o->wt, err);
    return rc == GM_OK ? gm_gguf_writer_finish(o->w, err) : rc;
}

/* Stops the writer thread, then frees; the file is removed unless rc is GM_OK. */
static void output_close(output *o, int rc)
{
    if (o->wt.started) {
        gm_error ignored;
        wthread_stop(&o->wt, &ignored);
    }
    if (rc != GM_OK && o->begun)
        unlink(o->path);
    runner_free(&o->rn);
    gm_gguf_writer_free(o->w);
}

/* Makes a tensor in chunks of whole rows over the pool and hands each to the writer
 * thread as one part of the tensor. */
static int emit_rows(output *o, row_job *job, const char *tname, gm_error *err)
{
    runner *rn = &o->rn;
    int64_t per_chunk = (int64_t)(CHUNK_BYTES / job->out_row_bytes);
    if (per_chunk < 1)
        per_chunk = 1;
    job->scratch = rn->scratch;
    job->failed = 0;
    for (int64_t r0 = 0; r0 < job->n_rows; r0 += per_chunk) {
        job->row0 = r0;
        job->chunk_rows = job->n_rows - r0 < per_chunk ? job->n_rows - r0 : per_chunk;
        size_t nbytes = job->out_row_bytes * (size_t)job->chunk_rows;
        job->dst = runner_chunk(rn, nbytes, err);
        if (!job->dst)
            return err ? err->code : GM_ERR_NOMEM;
        gm_pool_run(rn->pool, row_worker, job);
        if (job->failed)
            return gm_set_error(err, GM_ERR_UNSUPPORTED, "%s: tensor %s: cannot convert to %s", o->path, tname,
                                gm_type_name(job->out_type));
        int rc = wthread_submit(&o->wt, (part){ .p = job->dst, .n = nbytes }, err);
        if (rc != GM_OK)
            return rc;
    }
    return GM_OK;
}

int gm_synth_write(const gm_synth_config *cfg, const char *path, gm_error *err)
{
    if (!cfg || !path)
        return gm_set_error(err, GM_ERR_INVALID, "gm_synth_write: NULL argument");
    int rc = validate(cfg, err);
    if (rc != GM_OK)
        return rc;

    gm_gguf *vocab_src = NULL;
    uint32_t n_vocab = cfg->n_vocab;
    if (cfg->vocab_path) {
        vocab_src = gm_gguf_open(cfg->vocab_path, err);
        if (!vocab_src)
            return err ? err->code : GM_ERR_IO;
        const gm_gguf_kv *toks = gm_gguf_find_kv(vocab_src, "tokenizer.ggml.tokens");
        if (!toks || toks->type != GM_GGUF_ARRAY || toks->arr_type != GM_GGUF_STRING || toks->arr_n == 0 ||
            toks->arr_n > (1u << 24)) {
            gm_gguf_close(vocab_src);
            return gm_set_error(err, GM_ERR_FORMAT, "%s: no usable tokenizer.ggml.tokens array",
                                cfg->vocab_path);
        }
        n_vocab = (uint32_t)toks->arr_n;
    }
    if (n_vocab == 0) {
        gm_gguf_close(vocab_src);
        return gm_set_error(err, GM_ERR_INVALID, "synthetic model: n_vocab must be positive");
    }

    output o = { .w = gm_gguf_writer_new(), .path = path };
    gm_gguf_writer *w = o.w;
    tlist tl = { 0 };
    if (!w) {
        rc = gm_set_error(err, GM_ERR_NOMEM, "out of memory");
        goto done;
    }
    add_metadata(w, cfg);
    if (vocab_src) {
        for (uint64_t i = 0; i < vocab_src->n_kv; i++)
            if (strncmp(vocab_src->kv[i].key, "tokenizer.", 10) == 0)
                gm_gguf_add_kv_from(w, vocab_src, &vocab_src->kv[i]);
    } else {
        rc = add_generated_vocab(w, n_vocab, err);
        if (rc != GM_OK)
            goto done;
    }

    rc = build_tensors(cfg, n_vocab, &tl, err);
    if (rc != GM_OK)
        goto done;
    int64_t max_row = 1;
    for (size_t i = 0; i < tl.n; i++) {
        stensor *t = &tl.v[i];
        if (t->ne[0] > max_row)
            max_row = t->ne[0];
        rc = gm_gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, NULL, err);
        if (rc != GM_OK)
            goto done;
    }
    rc = output_begin(&o, cfg->n_threads, max_row, err);
    if (rc != GM_OK)
        goto done;
    for (size_t i = 0; i < tl.n; i++) {
        const stensor *t = &tl.v[i];
        row_job job = {
            .t = t,
            .out_type = t->type,
            .ne0 = t->ne[0],
            .n_rows = t->n_dims > 1 ? t->ne[1] : 1,
            .out_row_bytes = gm_row_size(t->type, t->ne[0]),
        };
        rc = emit_rows(&o, &job, t->name, err);
        if (rc != GM_OK)
            goto done;
    }
    rc = output_finish(&o, err);

done:
    output_close(&o, rc);
    free(tl.v);
    gm_gguf_close(vocab_src);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Requantize                                                                            */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* A KV-shared layer's attn_k / attn_v / attn_k_norm (layer index >= first_shared). */
static bool is_shared_kv_tensor(const char *name, uint32_t first_shared)
{
    unsigned il;
    int pos = 0;
    if (sscanf(name, "blk.%u.%n", &il, &pos) != 1 || pos == 0 || il < first_shared)
        return false;
    const char *rest = name + pos;
    return strcmp(rest, "attn_k.weight") == 0 || strcmp(rest, "attn_v.weight") == 0 ||
           strcmp(rest, "attn_k_norm.weight") == 0;
}

/* The output type of one tensor, as llama-quantize decides it (simplified). */
static gm_type requant_type(const gm_gguf_tensor *t, gm_type type)
{
    if (t->n_dims < 2)
        return t->type;
    if (!ends_with(t->name, ".weight") || ends_with(t->name, "_norm.weight") ||
        strcmp(t->name, "rope_freqs.weight") == 0)
        return t->type;
    if (strcmp(t->name, "per_layer_model_proj.weight") == 0)
        return t->type; /* llama-quantize never quantizes it */
    return matrix_type_for(type, t->ne[0]);
}

int gm_synth_requantize(const char *in_path, const char *out_path, gm_type type, bool drop_shared_kv,
                        int n_threads, gm_error *err)
{
    if (!in_path || !out_path)
        return gm_set_error(err, GM_ERR_INVALID, "gm_synth_requantize: NULL argument");
    if (!type_is_writable(type))
        return gm_set_error(err, GM_ERR_INVALID, "requantize: type %s cannot be written", gm_type_name(type));
    if (strcmp(in_path, out_path) == 0)
        return gm_set_error(err, GM_ERR_INVALID, "requantize: input and output are the same file (%s)", in_path);

    gm_gguf *g = gm_gguf_open(in_path, err);
    if (!g)
        return err ? err->code : GM_ERR_IO;
    output o = { .path = out_path };
    gm_gguf_writer *w = NULL;
    bool *keep = NULL;
    gm_type *otype = NULL;
    int rc = GM_OK;

    char *arch = NULL;
    rc = gm_gguf_get_str(g, "general.architecture", &arch, err);
    if (rc != GM_OK)
        goto done;
    if (strcmp(arch, "gemma4") != 0) {
        rc = gm_set_error(err, GM_ERR_UNSUPPORTED, "%s: general.architecture is \"%s\", not \"gemma4\"", in_path,
                          arch);
        goto done;
    }
    uint32_t n_layer = 0, n_shared = 0;
    if ((rc = gm_gguf_get_u32(g, "gemma4.block_count", &n_layer, err)) != GM_OK ||
        (rc = gm_gguf_get_u32_opt(g, "gemma4.attention.shared_kv_layers", &n_shared, err)) != GM_OK)
        goto done;
    if (n_shared > n_layer) {
        rc = gm_set_error(err, GM_ERR_FORMAT, "%s: gemma4.attention.shared_kv_layers %u exceeds block_count %u",
                          in_path, n_shared, n_layer);
        goto done;
    }

    w = o.w = gm_gguf_writer_new();
    keep = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *keep);
    otype = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *otype);
    if (!w || !keep || !otype) {
        rc = gm_set_error(err, GM_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (g->alignment != GM_GGUF_DEFAULT_ALIGNMENT)
        gm_gguf_writer_set_alignment(w, (uint32_t)g->alignment);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const char *k = g->kv[i].key;
        if (strcmp(k, "general.file_type") == 0 || strcmp(k, "general.alignment") == 0)
            continue;
        gm_gguf_add_kv_from(w, g, &g->kv[i]);
    }
    gm_gguf_add_u32(w, "general.file_type", llama_ftype(type));

    int64_t max_row = 1;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gm_gguf_tensor *t = &g->tensors[i];
        keep[i] = !(drop_shared_kv && is_shared_kv_tensor(t->name, n_layer - n_shared));
        if (!keep[i])
            continue;
        otype[i] = requant_type(t, type);
        if (otype[i] != t->type && !gm_type_get_traits(t->type)) {
            rc = gm_set_error(err, GM_ERR_UNSUPPORTED, "%s: tensor %s has unknown type %u", in_path, t->name,
                              (unsigned)t->type);
            goto done;
        }
        if (t->ne[0] > max_row)
            max_row = t->ne[0];
        rc = gm_gguf_add_tensor(w, t->name, otype[i], t->n_dims, t->ne, NULL, err);
        if (rc != GM_OK)
            goto done;
    }
    rc = output_begin(&o, n_threads, max_row, err);
    if (rc != GM_OK)
        goto done;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gm_gguf_tensor *t = &g->tensors[i];
        if (!keep[i])
            continue;
        if (otype[i] == t->type) {
            /* Unchanged: straight from the input mapping. */
            rc = wthread_submit(&o.wt, (part){ .p = t->data, .n = t->nbytes, .input = true }, err);
        } else {
            int64_t n_el = 1;
            for (uint32_t d = 0; d < t->n_dims; d++)
                n_el *= t->ne[d];
            row_job job = {
                .src = t,
                .out_type = otype[i],
                .ne0 = t->ne[0],
                .n_rows = t->ne[0] ? n_el / t->ne[0] : 0,
                .out_row_bytes = gm_row_size(otype[i], t->ne[0]),
            };
            rc = emit_rows(&o, &job, t->name, err);
            if (rc == GM_OK)
                drop_input_pages(t->data, t->nbytes);
        }
        if (rc != GM_OK)
            goto done;
    }
    rc = output_finish(&o, err);

done:
    output_close(&o, rc);
    free(arch);
    free(keep);
    free(otype);
    gm_gguf_close(g);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Vision mmproj (gemma4v)                                                               */

static const struct mmproj_preset {
    const char *id;
    gm_synth_mmproj_config c;
} mmproj_presets[] = {
    { "tiny", { .name = "Gemma 4 tiny vision+audio (synthetic)", .n_embd = 64, .n_layer = 2, .n_head = 2,
                .n_ff = 128, .pos_size = 10240, .proj_dim = 64,
                .audio = { .n_embd = 64, .n_layer = 2, .n_head = 2, .n_ff = 256,
                           .sub_channels = { 128, 8 }, .out_dim = 48 } } },
    { "e2b", { .name = "Gemma 4 E2B vision+audio (synthetic)", .n_embd = 768, .n_layer = 16, .n_head = 12,
               .n_ff = 3072, .pos_size = 10240, .proj_dim = 1536,
               .audio = { .n_embd = 1024, .n_layer = 12, .n_head = 8, .n_ff = 4096,
                          .sub_channels = { 128, 32 }, .out_dim = 1536 } } },
    { "e4b", { .name = "Gemma 4 E4B vision+audio (synthetic)", .n_embd = 768, .n_layer = 16, .n_head = 12,
               .n_ff = 3072, .pos_size = 10240, .proj_dim = 2560,
               .audio = { .n_embd = 1024, .n_layer = 12, .n_head = 8, .n_ff = 4096,
                          .sub_channels = { 128, 32 }, .out_dim = 1536 } } },
};

/* Mel bins of the gemma4a feature extractor; the subsampling halves them twice. */
#define SYNTH_MEL 128
#define SYNTH_MEL_SUB ((((SYNTH_MEL) + 1) / 2 + 1) / 2)

static bool mmproj_has_audio(const gm_synth_mmproj_config *c)
{
    return c->audio.n_embd != 0;
}

int gm_synth_mmproj_preset(const char *name, gm_synth_mmproj_config *out)
{
    if (!name || !out)
        return -1;
    for (size_t i = 0; i < sizeof mmproj_presets / sizeof mmproj_presets[0]; i++) {
        if (strcmp(name, mmproj_presets[i].id) != 0)
            continue;
        gm_synth_mmproj_config c = mmproj_presets[i].c;
        c.clipped = true;
        c.wtype = GM_TYPE_F16;
        c.seed = 1;
        *out = c;
        return 0;
    }
    return -1;
}

static gm_type mmproj_patch_type(gm_type wtype)
{
    return wtype == GM_TYPE_F32 ? GM_TYPE_F32 : wtype == GM_TYPE_BF16 ? GM_TYPE_BF16 : GM_TYPE_F16;
}

static int mmproj_validate(const gm_synth_mmproj_config *c, gm_error *err)
{
#define BAD(...) return gm_set_error(err, GM_ERR_INVALID, __VA_ARGS__)
    if (c->no_vision && !mmproj_has_audio(c))
        BAD("synthetic mmproj: neither a vision nor an audio tower to write");
    if (!type_is_writable(c->wtype))
        BAD("synthetic mmproj: weight type %s cannot be written", gm_type_name(c->wtype));
    if (mmproj_has_audio(c)) {
        const gm_synth_audio_config *a = &c->audio;
        if (a->n_layer == 0 || a->n_head == 0 || a->n_ff == 0 || a->sub_channels[0] == 0 ||
            a->sub_channels[1] == 0 || a->out_dim == 0 || c->proj_dim == 0)
            BAD("synthetic mmproj: all audio sizes must be positive");
        if (a->n_embd > 65536 || a->n_ff > (1u << 20) || a->n_layer > 4096 || a->sub_channels[0] > 4096 ||
            a->sub_channels[1] > 4096 || a->out_dim > 65536 || c->proj_dim > 65536)
            BAD("synthetic mmproj: audio dimensions too large");
        if (a->n_embd % 2 || a->n_embd % a->n_head)
            BAD("synthetic mmproj: audio width %u must be even and split into %u heads", a->n_embd, a->n_head);
        if (gm_row_size(c->wtype, a->n_embd) == 0 || gm_row_size(c->wtype, a->n_ff) == 0 ||
            gm_row_size(c->wtype, (int64_t)SYNTH_MEL_SUB * a->sub_channels[1]) == 0)
            BAD("synthetic mmproj: type %s needs audio rows (%u, %u, %u) in whole blocks", gm_type_name(c->wtype),
                a->n_embd, a->n_ff, SYNTH_MEL_SUB * a->sub_channels[1]);
    }
    if (c->no_vision)
        return GM_OK;
    if (c->n_embd == 0 || c->n_layer == 0 || c->n_head == 0 || c->n_ff == 0 || c->pos_size == 0 ||
        c->proj_dim == 0)
        BAD("synthetic mmproj: all sizes must be positive");
    if (c->n_embd > 65536 || c->n_ff > (1u << 20) || c->n_layer > 4096 || c->pos_size > 65536 ||
        c->proj_dim > 65536)
        BAD("synthetic mmproj: dimensions too large");
    if (c->n_embd % c->n_head || (c->n_embd / c->n_head) % 4)
        BAD("synthetic mmproj: width %u over %u heads must give a head dim divisible by 4", c->n_embd,
            c->n_head);
    if (!type_is_writable(c->wtype))
        BAD("synthetic mmproj: weight type %s cannot be written", gm_type_name(c->wtype));
    /* The encoder reads every linear in the given type: no silent fallback here. */
    if (gm_row_size(c->wtype, c->n_embd) == 0 || gm_row_size(c->wtype, c->n_ff) == 0)
        BAD("synthetic mmproj: type %s needs rows (%u, %u) in whole blocks", gm_type_name(c->wtype), c->n_embd,
            c->n_ff);
    return GM_OK;
#undef BAD
}

static void mmproj_metadata(gm_gguf_writer *w, const gm_synth_mmproj_config *c)
{
    static const float mean[3] = { 0.0f, 0.0f, 0.0f }, stdv[3] = { 1.0f, 1.0f, 1.0f };
    gm_gguf_add_str(w, "general.architecture", "clip");
    gm_gguf_add_str(w, "general.type", "mmproj");
    gm_gguf_add_str(w, "general.name", c->name[0] ? c->name : "Gemma 4 mmproj (synthetic)");
    gm_gguf_add_u32(w, "general.file_type", llama_ftype(c->wtype));
    gm_gguf_add_u32(w, "general.quantization_version", 2);
    gm_gguf_add_bool(w, "clip.has_vision_encoder", !c->no_vision);
    gm_gguf_add_bool(w, "clip.has_audio_encoder", mmproj_has_audio(c));
    if (mmproj_has_audio(c)) {
        /* The converter's keys (gguf-format.md §2.1); FFN length is 4×hidden there. */
        const gm_synth_audio_config *a = &c->audio;
        gm_gguf_add_str(w, "clip.audio.projector_type", "gemma4a");
        gm_gguf_add_u32(w, "clip.audio.projection_dim", c->proj_dim);
        gm_gguf_add_u32(w, "clip.audio.num_mel_bins", SYNTH_MEL);
        gm_gguf_add_u32(w, "clip.audio.embedding_length", a->n_embd);
        gm_gguf_add_u32(w, "clip.audio.feed_forward_length", a->n_ff);
        gm_gguf_add_u32(w, "clip.audio.block_count", a->n_layer);
        gm_gguf_add_u32(w, "clip.audio.attention.head_count", a->n_head);
        gm_gguf_add_f32(w, "clip.audio.attention.layer_norm_epsilon", RMS_EPS);
    }
    if (c->no_vision)
        return;
    gm_gguf_add_str(w, "clip.vision.projector_type", "gemma4v");
    gm_gguf_add_u32(w, "clip.vision.projection_dim", c->proj_dim);
    gm_gguf_add_u32(w, "clip.vision.image_size", 224); /* the converter's dummy */
    gm_gguf_add_u32(w, "clip.vision.patch_size", 16);
    gm_gguf_add_u32(w, "clip.vision.embedding_length", c->n_embd);
    gm_gguf_add_u32(w, "clip.vision.feed_forward_length", c->n_ff);
    gm_gguf_add_u32(w, "clip.vision.block_count", c->n_layer);
    gm_gguf_add_u32(w, "clip.vision.attention.head_count", c->n_head);
    gm_gguf_add_f32(w, "clip.vision.attention.layer_norm_epsilon", RMS_EPS);
    gm_gguf_add_arr_f32(w, "clip.vision.image_mean", mean, 3);
    gm_gguf_add_arr_f32(w, "clip.vision.image_std", stdv, 3);
}

static int mmproj_audio_tensors(const gm_synth_mmproj_config *c, tlist *l, gm_error *err);

/* Tensors in the converter's order, names and shapes (ggml order): the vision tower's,
 * then the audio tower's. */
static int mmproj_tensors(const gm_synth_mmproj_config *c, tlist *l, gm_error *err)
{
    if (c->no_vision)
        return mmproj_audio_tensors(c, l, err);
    const int64_t H = c->n_embd, F = c->n_ff, hd = c->n_embd / c->n_head;
    stensor *t;
    char name[96];

#define PUSH(nm, nd, e0, e1, e2, e3, ty, kd, pa, pb) do { \
        if (!(t = tlist_push(l, (nm), err))) return err ? err->code : GM_ERR_NOMEM; \
        t->n_dims = (nd); t->ne[0] = (e0); t->ne[1] = (e1); t->ne[2] = (e2); t->ne[3] = (e3); \
        t->type = (ty); t->kind = (kd); t->a = (pa); t->b = (pb); \
    } while (0)
#define NORM(nm, n) PUSH(nm, 1, n, 1, 1, 1, GM_TYPE_F32, INIT_NORM, 1.0f, 0.1f)

    /* Patch kernel: unit-variance outputs for unit-variance pixels (2p - 1). */
    PUSH("v.patch_embd.weight", 4, 16, 16, 3, H, mmproj_patch_type(c->wtype), INIT_NORMAL,
         1.0f / sqrtf(768.0f), 0.0f);
    /* x table then y table, well below the patch term. */
    PUSH("v.position_embd.weight", 3, H, c->pos_size, 2, 1, GM_TYPE_F32, INIT_NORMAL, 0.3f, 0.0f);

    /* Each linear with the rms of what it reads and writes (unit after the pre-norms;
     * smaller after attention averaging and the gated GELU), for the clamp bounds. */
    static const struct { const char *nm; int rows_ff, cols_ff; float s_in, s_out; } lin[7] = {
        { "attn_q", 0, 0, 1.0f, 1.0f },    { "attn_k", 0, 0, 1.0f, 1.0f },
        { "attn_v", 0, 0, 1.0f, 1.0f },    { "attn_out", 0, 0, 0.6f, 0.6f },
        { "ffn_gate", 1, 0, 1.0f, 1.0f },  { "ffn_up", 1, 0, 1.0f, 1.0f },
        { "ffn_down", 0, 1, 0.65f, 0.65f },
    };
    /* q/k norms near hd^-1/4 · 1.4: with attention scale 1 the scores then spread by ~2
     * (attention neither uniform nor one-hot). */
    const float qk = 1.4f * powf((float)hd, -0.25f);
    for (uint32_t il = 0; il < c->n_layer; il++) {
#define LNAME(sfx) (snprintf(name, sizeof name, "v.blk.%u.%s", il, (sfx)), name)
        NORM(LNAME("ln1.weight"), H);
        PUSH(LNAME("attn_q_norm.weight"), 1, hd, 1, 1, 1, GM_TYPE_F32, INIT_NORM, qk, 0.1f);
        PUSH(LNAME("attn_k_norm.weight"), 1, hd, 1, 1, 1, GM_TYPE_F32, INIT_NORM, qk, 0.1f);
        NORM(LNAME("attn_post_norm.weight"), H);
        NORM(LNAME("ln2.weight"), H);
        NORM(LNAME("ffn_post_norm.weight"), H);
        for (int i = 0; i < 7; i++) {
            const int64_t cols = lin[i].cols_ff ? F : H, rows = lin[i].rows_ff ? F : H;
            char wn[64];
            snprintf(wn, sizeof wn, "%s.weight", lin[i].nm);
            PUSH(LNAME(wn), 2, cols, rows, 1, 1, c->wtype, INIT_NORMAL, 1.0f / sqrtf((float)cols), 0.0f);
            if (!c->clipped)
                continue;
            /* Bounds 2.5-4 std out, distinct per linear and side. */
            const float si = lin[i].s_in, so = lin[i].s_out;
            snprintf(wn, sizeof wn, "%s.input_min", lin[i].nm);
            PUSH(LNAME(wn), 1, 1, 1, 1, 1, GM_TYPE_F32, INIT_UNIFORM, -4.0f * si, -2.5f * si);
            snprintf(wn, sizeof wn, "%s.input_max", lin[i].nm);
            PUSH(LNAME(wn), 1, 1, 1, 1, 1, GM_TYPE_F32, INIT_UNIFORM, 2.5f * si, 4.0f * si);
            snprintf(wn, sizeof wn, "%s.output_min", lin[i].nm);
            PUSH(LNAME(wn), 1, 1, 1, 1, 1, GM_TYPE_F32, INIT_UNIFORM, -4.0f * so, -2.5f * so);
            snprintf(wn, sizeof wn, "%s.output_max", lin[i].nm);
            PUSH(LNAME(wn), 1, 1, 1, 1, 1, GM_TYPE_F32, INIT_UNIFORM, 2.5f * so, 4.0f * so);
        }
#undef LNAME
    }
    if (c->standardize) {
        PUSH("v.std_bias", 1, H, 1, 1, 1, GM_TYPE_F32, INIT_NORMAL, 0.5f, 0.0f);
        PUSH("v.std_scale", 1, H, 1, 1, 1, GM_TYPE_F32, INIT_NORM, 1.0f, 0.2f);
    }
    /* After the weightless RMSNorm: soft tokens of rms ~1. */
    PUSH("mm.input_projection.weight", 2, H, c->proj_dim, 1, 1, c->wtype, INIT_NORMAL, 1.0f / sqrtf((float)H),
         0.0f);
#undef PUSH
#undef NORM
    return mmproj_audio_tensors(c, l, err);
}

/* The gemma4a tower (names and ggml shapes of gguf-format.md §2.2, the generator
 * tests/conformance/generate_audio_tower.py shows the same layout). Scales: the
 * subsampling convs are followed by channel LayerNorms, every block ends in an RMSNorm,
 * so only the residual branches need sizing (unit rms after each pre-norm, 1/sqrt(fan-in)
 * matrices); the final weightless RMSNorm and a 1/sqrt(out_dim) projection give soft
 * tokens of rms ~1. Tensor keys hash the name, so adding this tower leaves the vision
 * tower's values unchanged. */
static int mmproj_audio_tensors(const gm_synth_mmproj_config *c, tlist *l, gm_error *err)
{
    if (mmproj_has_audio(c)) {
        const gm_synth_audio_config *A = &c->audio;
        const int64_t H = A->n_embd, F = A->n_ff, hd = A->n_embd / A->n_head;
        const int64_t c0 = A->sub_channels[0], c1 = A->sub_channels[1], O = A->out_dim;
        const int64_t sub_in = (int64_t)SYNTH_MEL_SUB * c1;
        stensor *t;
        char name[96];
#define PUSH(nm, nd, e0, e1, e2, e3, ty, kd, pa, pb) do { \
        if (!(t = tlist_push(l, (nm), err))) return err ? err->code : GM_ERR_NOMEM; \
        t->n_dims = (nd); t->ne[0] = (e0); t->ne[1] = (e1); t->ne[2] = (e2); t->ne[3] = (e3); \
        t->type = (ty); t->kind = (kd); t->a = (pa); t->b = (pb); \
    } while (0)
#define NORM(nm, n) PUSH(nm, 1, n, 1, 1, 1, GM_TYPE_F32, INIT_NORM, 1.0f, 0.1f)
        /* Conv kernels stay F32 (the converter keeps them so); each output is LayerNormed
         * over channels, so only their spread across channels matters. */
        PUSH("a.conv1d.0.weight", 4, 3, 3, 1, c0, GM_TYPE_F32, INIT_NORMAL, 1.0f / 3.0f, 0.0f);
        PUSH("a.conv1d.0.norm.weight", 1, c0, 1, 1, 1, GM_TYPE_F32, INIT_NORM, 1.0f, 0.2f);
        PUSH("a.conv1d.1.weight", 4, 3, 3, c0, c1, GM_TYPE_F32, INIT_NORMAL, 1.0f / sqrtf(9.0f * (float)c0), 0.0f);
        PUSH("a.conv1d.1.norm.weight", 1, c1, 1, 1, 1, GM_TYPE_F32, INIT_NORM, 1.0f, 0.2f);
        /* ReLU'd unit-normed channels (rms ~0.6) in: ~1.6/sqrt(fan-in) gives unit rms out. */
        PUSH("a.input_projection.weight", 2, sub_in, H, 1, 1, c->wtype, INIT_NORMAL, 1.6f / sqrtf((float)sub_in),
             0.0f);
        /* The ten clipped linears: {name, rows, cols} as multiples of (H, F, 2H), and the
         * rms of what each reads and writes (unit after the pre-norms; ~0.6 after SiLU,
         * GLU and attention averaging), for clamp bounds 2.5-4 std out. */
        enum { DH, DF, D2H };
        static const struct { const char *nm; int rows, cols; float s_in, s_out; } lin[10] = {
            { "ffn_up", DF, DH, 1.0f, 1.0f },     { "ffn_down", DH, DF, 0.6f, 0.6f },
            { "attn_q", DH, DH, 1.0f, 1.0f },     { "attn_k", DH, DH, 1.0f, 1.0f },
            { "attn_v", DH, DH, 1.0f, 1.0f },     { "attn_out", DH, DH, 0.6f, 0.6f },
            { "conv_pw1", D2H, DH, 1.0f, 1.0f },  { "conv_pw2", DH, DH, 0.6f, 0.6f },
            { "ffn_up_1", DF, DH, 1.0f, 1.0f },   { "ffn_down_1", DH, DF, 0.6f, 0.6f },
        };
        const int64_t dim[3] = { H, F, 2 * H };
        for (uint32_t il = 0; il < A->n_layer; il++) {
#define LNAME(sfx) (snprintf(name, sizeof name, "a.blk.%u.%s", il, (sfx)), name)
            static const char *const norms[9] = {
                "ffn_norm.weight", "ffn_post_norm.weight", "attn_pre_norm.weight", "attn_post_norm.weight",
                "conv_norm.weight", "norm_conv.weight", "ffn_norm_1.weight", "ffn_post_norm_1.weight",
                "ln2.weight",
            };
            for (int i = 0; i < 9; i++)
                NORM(LNAME(norms[i]), H);
            for (int i = 0; i < 10; i++) {
                const int64_t rows = dim[lin[i].rows], cols = dim[lin[i].cols];
                char wn[64];
                snprintf(wn, sizeof wn, "%s.weight", lin[i].nm);
                PUSH(LNAME(wn), 2, cols, rows, 1, 1, c->wtype, INIT_NORMAL, 1.0f / sqrtf((float)cols), 0.0f);
                /* E2B/E4B clip every one of these; bounds distinct per linear and side. */
                const float si = lin[i].s_in, so = lin[i].s_out;
                snprintf(wn, sizeof wn, "%s.input_min", lin[i].nm);
                PUSH(LNAME(wn), 1, 1, 1, 1, 1, GM_TYPE_F32, INIT_UNIFORM, -4.0f * si, -2.5f * si);
                snprintf(wn, sizeof wn, "%s.input_max", lin[i].nm);
                PUSH(LNAME(wn), 1, 1, 1, 1, 1, GM_TYPE_F32, INIT_UNIFORM, 2.5f * si, 4.0f * si);
                snprintf(wn, sizeof wn, "%s.output_min", lin[i].nm);
                PUSH(LNAME(wn), 1, 1, 1, 1, 1, GM_TYPE_F32, INIT_UNIFORM, -4.0f * so, -2.5f * so);
                snprintf(wn, sizeof wn, "%s.output_max", lin[i].nm);
                PUSH(LNAME(wn), 1, 1, 1, 1, 1, GM_TYPE_F32, INIT_UNIFORM, 2.5f * so, 4.0f * so);
            }
            /* R(d) = relative_k_proj · sinusoid(d): unit-ish position logits next to q·k. */
            PUSH(LNAME("attn_k_rel.weight"), 2, H, H, 1, 1, c->wtype, INIT_NORMAL, 1.0f / sqrtf((float)H), 0.0f);
            /* Stored softplus'ed (the converter applies it): HF initialises per_dim_scale
             * to 0, softplus(0) = ln 2; around that, positive. Query-key logits then
             * spread by ~2 (×1.9/ln 2 of the q·k/sqrt(hd) spread). */
            PUSH(LNAME("per_dim_scale.weight"), 1, hd, 1, 1, 1, GM_TYPE_F32, INIT_NORM, 0.7f, 0.2f);
            PUSH(LNAME("conv_dw.weight"), 2, 5, H, 1, 1, GM_TYPE_F32, INIT_NORMAL, 1.0f / sqrtf(5.0f), 0.0f);
#undef LNAME
        }
        PUSH("a.pre_encode.out.weight", 2, H, O, 1, 1, c->wtype, INIT_NORMAL, 1.0f / sqrtf((float)H), 0.0f);
        PUSH("a.pre_encode.out.bias", 1, O, 1, 1, 1, GM_TYPE_F32, INIT_NORMAL, 0.3f, 0.0f);
        /* After the weightless RMSNorm: soft tokens of rms ~1. Rows of O: the tiny
         * tower's 48 take no Q8_0 block, so that one matrix falls back like
         * llama-quantize's. */
        PUSH("mm.a.input_projection.weight", 2, O, c->proj_dim, 1, 1, matrix_type_for(c->wtype, O), INIT_NORMAL,
             1.0f / sqrtf((float)O), 0.0f);
#undef PUSH
#undef NORM
    }
    for (size_t i = 0; i < l->n; i++)
        l->v[i].key = mix64(c->seed ^ mix64(hash_bytes(l->v[i].name, strlen(l->v[i].name))));
    return GM_OK;
}

int gm_synth_mmproj_write(const gm_synth_mmproj_config *cfg, const char *path, gm_error *err)
{
    if (!cfg || !path)
        return gm_set_error(err, GM_ERR_INVALID, "gm_synth_mmproj_write: NULL argument");
    int rc = mmproj_validate(cfg, err);
    if (rc != GM_OK)
        return rc;
    output o = { .w = gm_gguf_writer_new(), .path = path };
    tlist tl = { 0 };
    if (!o.w) {
        rc = gm_set_error(err, GM_ERR_NOMEM, "out of memory");
        goto done;
    }
    mmproj_metadata(o.w, cfg);
    rc = mmproj_tensors(cfg, &tl, err);
    if (rc != GM_OK)
        goto done;
    int64_t max_row = 1;
    for (size_t i = 0; i < tl.n; i++) {
        const stensor *t = &tl.v[i];
        if (t->ne[0] > max_row)
            max_row = t->ne[0];
        rc = gm_gguf_add_tensor(o.w, t->name, t->type, t->n_dims, t->ne, NULL, err);
        if (rc != GM_OK)
            goto done;
    }
    rc = output_begin(&o, cfg->n_threads, max_row, err);
    if (rc != GM_OK)
        goto done;
    for (size_t i = 0; i < tl.n && rc == GM_OK; i++) {
        const stensor *t = &tl.v[i];
        int64_t rows = 1;
        for (uint32_t d = 1; d < t->n_dims; d++)
            rows *= t->ne[d];
        row_job job = {
            .t = t,
            .out_type = t->type,
            .ne0 = t->ne[0],
            .n_rows = rows,
            .out_row_bytes = gm_row_size(t->type, t->ne[0]),
        };
        rc = emit_rows(&o, &job, t->name, err);
    }
    if (rc == GM_OK)
        rc = output_finish(&o, err);

done:
    output_close(&o, rc);
    free(tl.v);
    return rc;
}
