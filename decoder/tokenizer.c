/* tokenizer.c — Gemma 4 BPE tokenizer (gguf-format.md §3.1) and streaming detokenizer.
 *
 * Load builds two open-addressing tables: token text -> id, and (left id, right id) ->
 * (merge rank, merged id). Tokenizing partitions the text around special tokens, turns
 * spaces into U+2581, splits into newline / non-newline runs and runs rank-ordered BPE on
 * each run with a binary heap over linked symbols, so long inputs stay O(n log n). */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

#define SPACE_ESC "\xe2\x96\x81" /* U+2581 */
#define SPACE_ESC_LEN 3

typedef struct tok_entry {
    const char *text;    /* into the GGUF mapping, not NUL-terminated */
    uint32_t len;
    uint8_t type;
} tok_entry;

typedef struct merge_entry {
    uint64_t key;
    int32_t rank;
    int32_t res;
} merge_entry;

struct gm_tokenizer {
    int32_t n_vocab;
    tok_entry *ent;      /* per id */
    size_t max_len;

    /* text -> id: slots hold (hash tag << 32) | (id + 1), 0 = empty; the tag spares
     * string compares on collisions (load time is dominated by cache misses here) */
    uint64_t *tok_slots;
    uint64_t tok_mask;

    /* (left << 32 | right) -> rank, merged id; key UINT64_MAX = empty */
    merge_entry *merges;
    uint64_t mmask;
    size_t n_merges;

    int32_t byte_id[256];
    int32_t *special;    /* CONTROL / USER_DEFINED / UNKNOWN ids, longest text first */
    size_t n_special;

    int32_t bos, eos, pad, unk;
    int32_t eog[8];
    int n_eog;
};

/* ---- gm_tokens ---- */

int gm_tokens_push(gm_tokens *t, int32_t id)
{
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 64;
        int32_t *p = realloc(t->ids, nc * sizeof *p);
        if (!p)
            return GM_ERR_NOMEM;
        t->ids = p;
        t->cap = nc;
    }
    t->ids[t->n++] = id;
    return GM_OK;
}

void gm_tokens_free(gm_tokens *t)
{
    free(t->ids);
    t->ids = NULL;
    t->n = t->cap = 0;
}

/* ---- hashing ---- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (n * 0x100000001b3ULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x100000001b3ULL;
    return mix64(h);
}

static int32_t lookup(const gm_tokenizer *tok, const char *s, size_t n)
{
    uint64_t h = hash_bytes(s, n);
    uint64_t tag = h >> 32, i = h & tok->tok_mask;
    for (;;) {
        uint64_t v = tok->tok_slots[i];
        if (!v)
            return -1;
        if ((v >> 32) == tag) {
            int32_t id = (int32_t)(uint32_t)(v - 1);
            if (tok->ent[id].len == n && memcmp(tok->ent[id].text, s, n) == 0)
                return id;
        }
        i = (i + 1) & tok->tok_mask;
    }
}

/* Finds the merge of (l, r); returns its rank or -1. */
static int32_t merge_find(const gm_tokenizer *tok, int32_t l, int32_t r, int32_t *res)
{
    if (!tok->merges)
        return -1;
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    uint64_t i = mix64(key) & tok->mmask;
    for (;;) {
        const merge_entry *e = &tok->merges[i];
        if (e->key == UINT64_MAX)
            return -1;
        if (e->key == key) {
            *res = e->res;
            return e->rank;
        }
        i = (i + 1) & tok->mmask;
    }
}

static uint64_t pow2_at_least(uint64_t n)
{
    uint64_t c = 16;
    while (c < n)
        c <<= 1;
    return c;
}

/* ---- UTF-8 ---- */

/* Classifies the UTF-8 sequence at s[0..n): returns its length (1-4) when complete and
 * valid; 0 when invalid, with *bad = bytes of the maximal invalid subpart to replace by one
 * U+FFFD; -1 when a valid prefix runs into the end of the buffer. */
static int utf8_check(const uint8_t *s, size_t n, int *bad)
{
    uint8_t c = s[0];
    int need;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        need = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        *bad = 1;
        return 0;
    }
    for (int i = 1; i < need; i++) {
        if ((size_t)i >= n)
            return -1;
        uint8_t b = s[i];
        if (b < lo || b > hi) {
            *bad = i;
            return 0;
        }
        lo = 0x80;
        hi = 0xbf;
    }
    return need;
}

/* ---- loading ---- */

static int parse_byte_token(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static int get_id_opt(const gm_gguf *g, const char *key, int32_t n_vocab, int32_t *out, gm_error *err)
{
    uint32_t v = UINT32_MAX;
    int rc = gm_gguf_get_u32_opt(g, key, &v, err);
    if (rc)
        return rc;
    if (v == UINT32_MAX)
        return GM_OK;
    if (v >= (uint32_t)n_vocab)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: %s = %u is outside the vocabulary (%d tokens)",
                            g->path ? g->path : "gguf", key, v, n_vocab);
    *out = (int32_t)v;
    return GM_OK;
}

static const gm_tokenizer *sort_ctx;

static int cmp_special(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = sort_ctx->ent[x].len, ly = sort_ctx->ent[y].len;
    if (lx != ly)
        return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* First id whose slot tag matches h (usually the answer; verified by the caller). */
static int32_t probe_tag(const gm_tokenizer *tok, uint64_t h)
{
    uint64_t tag = h >> 32, i = h & tok->tok_mask;
    for (uint64_t v; (v = tok->tok_slots[i]) != 0; i = (i + 1) & tok->tok_mask)
        if ((v >> 32) == tag)
            return (int32_t)(uint32_t)(v - 1);
    return -1;
}

enum { MERGE_BATCH = 64 };

typedef struct merge_job {
    const char *part[3];  /* left, right, left+right */
    size_t len[3];
    uint64_t h[3];
    int32_t id[3];
    bool ok;
} merge_job;

/* Merges are parsed in batches whose table probes are prefetched stage by stage: the
 * lookups are random accesses into tables much larger than the caches, and overlapping
 * their misses is what keeps loading 514k merges well under the 0.5 s budget. */
static int load_merges(gm_tokenizer *tok, const gm_gguf *g, const gm_gguf_kv *kv, gm_error *err)
{
    const char *path = g->path ? g->path : "gguf";
    if (kv->type != GM_GGUF_ARRAY || kv->arr_type != GM_GGUF_STRING)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: tokenizer.ggml.merges is not an array of strings",
                            path);
    uint64_t n = kv->arr_n;
    if (n >= (uint64_t)INT32_MAX)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: tokenizer.ggml.merges has too many entries (%llu)",
                            path, (unsigned long long)n);
    uint64_t cap = pow2_at_least(n + n / 2 + 1);
    tok->merges = malloc(cap * sizeof *tok->merges);
    size_t stride = tok->max_len + 1;
    char *buf = malloc(stride * MERGE_BATCH);
    merge_job *jobs = malloc(MERGE_BATCH * sizeof *jobs);
    if (!tok->merges || !buf || !jobs) {
        free(buf);
        free(jobs);
        return gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory for %llu merges", path,
                            (unsigned long long)n);
    }
    for (uint64_t i = 0; i < cap; i++)
        tok->merges[i].key = UINT64_MAX;
    tok->mmask = cap - 1;
    for (uint64_t r0 = 0; r0 < n; r0 += MERGE_BATCH) {
        int nb = n - r0 < MERGE_BATCH ? (int)(n - r0) : MERGE_BATCH;
        for (int j = 0; j < nb; j++) {
            merge_job *m = &jobs[j];
            gm_gguf_str s = gm_gguf_arr_str(g, kv, r0 + (uint64_t)j);
            /* split at the first space after position 0 */
            const char *sp = s.len >= 3 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL;
            m->ok = false;
            if (!sp)
                continue;
            size_t ll = (size_t)(sp - s.ptr), rl = s.len - ll - 1;
            if (rl == 0 || ll + rl > tok->max_len)
                continue;  /* the result cannot be a token */
            char *cat = buf + (size_t)j * stride;
            memcpy(cat, s.ptr, ll);
            memcpy(cat + ll, sp + 1, rl);
            m->part[0] = s.ptr;
            m->len[0] = ll;
            m->part[1] = sp + 1;
            m->len[1] = rl;
            m->part[2] = cat;
            m->len[2] = ll + rl;
            for (int k = 0; k < 3; k++) {
                m->h[k] = hash_bytes(m->part[k], m->len[k]);
                __builtin_prefetch(&tok->tok_slots[m->h[k] & tok->tok_mask]);
            }
            m->ok = true;
        }
        for (int j = 0; j < nb; j++) {
            if (!jobs[j].ok)
                continue;
            for (int k = 0; k < 3; k++) {
                jobs[j].id[k] = probe_tag(tok, jobs[j].h[k]);
                if (jobs[j].id[k] >= 0)
                    __builtin_prefetch(&tok->ent[jobs[j].id[k]]);
            }
        }
        for (int j = 0; j < nb; j++)
            for (int k = 0; jobs[j].ok && k < 3; k++)
                if (jobs[j].id[k] >= 0)
                    __builtin_prefetch(tok->ent[jobs[j].id[k]].text);
        for (int j = 0; j < nb; j++) {
            merge_job *m = &jobs[j];
            if (!m->ok)
                continue;
            for (int k = 0; k < 3; k++) {
                int32_t id = m->id[k];
                if (id >= 0 && !(tok->ent[id].len == m->len[k] && memcmp(tok->ent[id].text, m->part[k], m->len[k]) == 0))
                    id = lookup(tok, m->part[k], m->len[k]);  /* tag collision: full probe */
                m->id[k] = id;
            }
            /* a merge whose parts or result are not tokens can never apply */
            if (m->id[0] < 0 || m->id[1] < 0 || m->id[2] < 0) {
                m->ok = false;
                continue;
            }
            m->h[0] = ((uint64_t)(uint32_t)m->id[0] << 32) | (uint32_t)m->id[1];
            __builtin_prefetch(&tok->merges[mix64(m->h[0]) & tok->mmask]);
        }
        for (int j = 0; j < nb; j++) {
            merge_job *m = &jobs[j];
            if (!m->ok)
                continue;
            uint64_t key = m->h[0];
            uint64_t i = mix64(key) & tok->mmask;
            while (tok->merges[i].key != UINT64_MAX && tok->merges[i].key != key)
                i = (i + 1) & tok->mmask;
            if (tok->merges[i].key == key)
                continue;  /* first (lowest rank) wins */
            tok->merges[i].key = key;
            tok->merges[i].rank = (int32_t)(r0 + (uint64_t)j);
            tok->merges[i].res = m->id[2];
            tok->n_merges++;
        }
    }
    free(buf);
    free(jobs);
    return GM_OK;
}

gm_tokenizer *gm_tokenizer_load(const gm_gguf *g, gm_error *err)
{
    const char *path = g->path ? g->path : "gguf";
    const gm_gguf_kv *kv_model = gm_gguf_find_kv(g, "tokenizer.ggml.model");
    if (!kv_model || kv_model->type != GM_GGUF_STRING) {
        gm_set_error(err, GM_ERR_FORMAT, "%s: missing string key tokenizer.ggml.model", path);
        return NULL;
    }
    if (!(kv_model->str.len == 6 && memcmp(kv_model->str.ptr, "gemma4", 6) == 0)) {
        gm_set_error(err, GM_ERR_UNSUPPORTED, "%s: tokenizer.ggml.model = \"%.*s\" is not supported "
                     "(only \"gemma4\")", path, (int)(kv_model->str.len > 64 ? 64 : kv_model->str.len),
                     kv_model->str.ptr);
        return NULL;
    }
    const gm_gguf_kv *kv_tok = gm_gguf_find_kv(g, "tokenizer.ggml.tokens");
    if (!kv_tok || kv_tok->type != GM_GGUF_ARRAY || kv_tok->arr_type != GM_GGUF_STRING) {
        gm_set_error(err, GM_ERR_FORMAT, "%s: missing string array tokenizer.ggml.tokens", path);
        return NULL;
    }
    if (kv_tok->arr_n == 0 || kv_tok->arr_n >= (1u << 30)) {
        gm_set_error(err, GM_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu entries", path,
                     (unsigned long long)kv_tok->arr_n);
        return NULL;
    }
    const gm_gguf_kv *kv_type = gm_gguf_find_kv(g, "tokenizer.ggml.token_type");
    if (kv_type && (kv_type->type != GM_GGUF_ARRAY || kv_type->arr_n != kv_tok->arr_n ||
                    kv_type->arr_type == GM_GGUF_STRING || kv_type->arr_type == GM_GGUF_ARRAY ||
                    kv_type->arr_type == GM_GGUF_FLOAT32 || kv_type->arr_type == GM_GGUF_FLOAT64)) {
        gm_set_error(err, GM_ERR_FORMAT, "%s: tokenizer.ggml.token_type must be an integer array of "
                     "%llu entries", path, (unsigned long long)kv_tok->arr_n);
        return NULL;
    }

    gm_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) {
        gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    int32_t n = (int32_t)kv_tok->arr_n;
    tok->n_vocab = n;
    tok->bos = tok->eos = tok->pad = tok->unk = -1;
    tok->ent = malloc((size_t)n * sizeof *tok->ent);
    uint64_t cap = pow2_at_least((uint64_t)n * 2);
    tok->tok_slots = calloc(cap, sizeof *tok->tok_slots);
    tok->tok_mask = cap - 1;
    if (!tok->ent || !tok->tok_slots) {
        gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory for %d tokens", path, n);
        goto fail;
    }
    for (int i = 0; i < 256; i++)
        tok->byte_id[i] = -1;

    size_t n_special = 0;
    for (int32_t id = 0; id < n; id++) {
        gm_gguf_str s = gm_gguf_arr_str(g, kv_tok, (uint64_t)id);
        if (s.len > (1u << 16)) {  /* real tokens are < 100 bytes; this bounds scratch buffers */
            gm_set_error(err, GM_ERR_FORMAT, "%s: token %d is %llu bytes long", path, id,
                         (unsigned long long)s.len);
            goto fail;
        }
        tok->ent[id].text = s.ptr ? s.ptr : "";
        tok->ent[id].len = (uint32_t)s.len;
        if (s.len > tok->max_len)
            tok->max_len = s.len;
        int64_t t = kv_type ? gm_gguf_arr_int(kv_type, (uint64_t)id) : GM_TOKEN_NORMAL;
        if (t < GM_TOKEN_NORMAL || t > GM_TOKEN_BYTE)
            t = GM_TOKEN_NORMAL;  /* llama.cpp treats undefined types as normal text */
        tok->ent[id].type = (uint8_t)t;
        if (t == GM_TOKEN_BYTE) {
            int b = parse_byte_token(s.ptr, s.len);
            if (b < 0) {
                gm_set_error(err, GM_ERR_FORMAT, "%s: byte token %d has text \"%.*s\", not <0xXX>", path,
                             id, (int)(s.len > 32 ? 32 : s.len), s.ptr);
                goto fail;
            }
            if (tok->byte_id[b] < 0)
                tok->byte_id[b] = id;
        }
        if ((t == GM_TOKEN_CONTROL || t == GM_TOKEN_USER_DEFINED || t == GM_TOKEN_UNKNOWN) && s.len > 0)
            n_special++;
        /* insert; on duplicate text the first id wins */
        uint64_t h = hash_bytes(tok->ent[id].text, s.len);
        uint64_t tag = h >> 32, i = h & tok->tok_mask;
        bool dup = false;
        while (tok->tok_slots[i]) {
            uint64_t v = tok->tok_slots[i];
            int32_t o = (int32_t)(uint32_t)(v - 1);
            if ((v >> 32) == tag && tok->ent[o].len == s.len && memcmp(tok->ent[o].text, tok->ent[id].text, s.len) == 0) {
                dup = true;
                break;
            }
            i = (i + 1) & tok->tok_mask;
        }
        if (!dup)
            tok->tok_slots[i] = (tag << 32) | ((uint64_t)id + 1);
    }

    tok->special = malloc((n_special ? n_special : 1) * sizeof *tok->special);
    if (!tok->special) {
        gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (int32_t id = 0; id < n; id++) {
        int t = tok->ent[id].type;
        if ((t == GM_TOKEN_CONTROL || t == GM_TOKEN_USER_DEFINED || t == GM_TOKEN_UNKNOWN) && tok->ent[id].len)
            tok->special[tok->n_special++] = id;
    }
    sort_ctx = tok;
    qsort(tok->special, tok->n_special, sizeof *tok->special, cmp_special);
    sort_ctx = NULL;

    if (get_id_opt(g, "tokenizer.ggml.bos_token_id", n, &tok->bos, err) ||
        get_id_opt(g, "tokenizer.ggml.eos_token_id", n, &tok->eos, err) ||
        get_id_opt(g, "tokenizer.ggml.padding_token_id", n, &tok->pad, err) ||
        get_id_opt(g, "tokenizer.ggml.unknown_token_id", n, &tok->unk, err))
        goto fail;
    if (tok->bos < 0)
        tok->bos = lookup(tok, "<bos>", 5);
    if (tok->eos < 0)
        tok->eos = lookup(tok, "<eos>", 5);
    if (tok->pad < 0)
        tok->pad = lookup(tok, "<pad>", 5);
    if (tok->unk < 0)
        tok->unk = lookup(tok, "<unk>", 5);

    /* end-of-generation set (gguf-format.md §3.1: {<eos>, <turn|>, <|tool_response>}) */
    int32_t cand[3] = {tok->eos, lookup(tok, "<turn|>", 7), lookup(tok, "<|tool_response>", 16)};
    for (int i = 0; i < 3; i++) {
        if (cand[i] < 0)
            continue;
        bool seen = false;
        for (int j = 0; j < tok->n_eog; j++)
            seen |= tok->eog[j] == cand[i];
        if (!seen)
            tok->eog[tok->n_eog++] = cand[i];
    }

    const gm_gguf_kv *kv_merges = gm_gguf_find_kv(g, "tokenizer.ggml.merges");
    if (!kv_merges) {
        gm_set_error(err, GM_ERR_FORMAT, "%s: missing tokenizer.ggml.merges (required by the gemma4 BPE "
                     "tokenizer)", path);
        goto fail;
    }
    if (load_merges(tok, g, kv_merges, err))
        goto fail;
    return tok;

fail:
    gm_tokenizer_free(tok);
    return NULL;
}

void gm_tokenizer_free(gm_tokenizer *tok)
{
    if (!tok)
        return;
    free(tok->ent);
    free(tok->tok_slots);
    free(tok->merges);
    free(tok->special);
    free(tok);
}

int32_t gm_tokenizer_n_vocab(const gm_tokenizer *tok) { return tok->n_vocab; }
int32_t gm_tokenizer_bos(const gm_tokenizer *tok) { return tok->bos; }
int32_t gm_tokenizer_eos(const gm_tokenizer *tok) { return tok->eos; }
int32_t gm_tokenizer_pad(const gm_tokenizer *tok) { return tok->pad; }

int32_t gm_tokenizer_find(const gm_tokenizer *tok, const char *s)
{
    return s ? lookup(tok, s, strlen(s)) : -1;
}

const char *gm_tokenizer_text(const gm_tokenizer *tok, int32_t id, size_t *len)
{
    if (id < 0 || id >= tok->n_vocab)
        return NULL;
    if (len)
        *len = tok->ent[id].len;
    return tok->ent[id].text;
}

int gm_tokenizer_type(const gm_tokenizer *tok, int32_t id)
{
    if (id < 0 || id >= tok->n_vocab)
        return 0;
    return tok->ent[id].type;
}

bool gm_tokenizer_is_eog(const gm_tokenizer *tok, int32_t id)
{
    for (int i = 0; i < tok->n_eog; i++)
        if (tok->eog[i] == id)
            return true;
    return false;
}

/* ---- BPE ---- */

typedef struct sym {
    uint32_t start;   /* byte offset in the run */
    uint32_t len;     /* 0 once merged into its left neighbour */
    int32_t id;       /* -1: a character that is not a token (byte fallback) */
    int32_t prev, next;
} sym;

/* A queued merge: key orders by rank, then by the left symbol's index (= leftmost first). */
typedef struct pair {
    uint64_t key;      /* rank << 32 | left symbol index */
    int32_t res;       /* merged id */
    uint32_t sum_len;  /* left.len + right.len when queued: lengths only grow, so any change
                          to either side since then shows up as a different sum */
} pair;

typedef struct bpe_work {
    sym *syms;
    size_t cap_syms;
    pair *heap;
    size_t n_heap, cap_heap;
    char *buf;        /* the fragment with spaces escaped */
    size_t cap_buf;
} bpe_work;

static bool pair_less(const pair *a, const pair *b)
{
    return a->key < b->key;
}

static int heap_push(bpe_work *w, const pair *p)
{
    if (w->n_heap == w->cap_heap) {
        size_t nc = w->cap_heap ? w->cap_heap * 2 : 256;
        pair *h = realloc(w->heap, nc * sizeof *h);
        if (!h)
            return GM_ERR_NOMEM;
        w->heap = h;
        w->cap_heap = nc;
    }
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_less(p, &w->heap[parent]))
            break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = *p;
    return GM_OK;
}

static pair heap_pop(bpe_work *w)
{
    pair top = w->heap[0];
    pair last = w->heap[--w->n_heap];
    size_t n = w->n_heap, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && pair_less(&w->heap[c + 1], &w->heap[c]))
            c++;
        if (!pair_less(&w->heap[c], &last))
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n)
        w->heap[i] = last;
    return top;
}

static int try_pair(const gm_tokenizer *tok, bpe_work *w, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return GM_OK;
    const sym *a = &w->syms[l], *b = &w->syms[r];
    if (a->id < 0 || b->id < 0)
        return GM_OK;
    int32_t res;
    int32_t rank = merge_find(tok, a->id, b->id, &res);
    if (rank < 0)
        return GM_OK;
    pair p = {((uint64_t)(uint32_t)rank << 32) | (uint32_t)l, res, a->len + b->len};
    return heap_push(w, &p);
}

static int emit_symbol(const gm_tokenizer *tok, const char *s, size_t n, int32_t id, gm_tokens *out)
{
    if (id >= 0)
        return gm_tokens_push(out, id);
    for (size_t i = 0; i < n; i++) {
        int32_t b = tok->byte_id[(uint8_t)s[i]];
        if (b < 0)
            b = tok->unk;
        if (b >= 0 && gm_tokens_push(out, b))
            return GM_ERR_NOMEM;
    }
    return GM_OK;
}

static int bpe_run(const gm_tokenizer *tok, bpe_work *w, const char *s, size_t n, gm_tokens *out)
{
    /* a newline-only run that is itself a token is emitted whole (llama.cpp PR 21343) */
    if (s[0] == '\n') {
        int32_t id = lookup(tok, s, n);
        if (id >= 0)
            return gm_tokens_push(out, id);
    }
    if (n > w->cap_syms) {
        sym *ns = realloc(w->syms, n * sizeof *ns);
        if (!ns)
            return GM_ERR_NOMEM;
        w->syms = ns;
        w->cap_syms = n;
    }
    int32_t n_syms = 0;
    for (size_t i = 0; i < n;) {
        int bad = 1;
        int l = utf8_check((const uint8_t *)s + i, n - i, &bad);
        if (l <= 0)
            l = 1;  /* an invalid byte is a symbol of its own (and falls back to <0xXX>) */
        sym *y = &w->syms[n_syms];
        y->start = (uint32_t)i;
        y->len = (uint32_t)l;
        y->id = lookup(tok, s + i, (size_t)l);
        y->prev = n_syms - 1;
        y->next = n_syms + 1;
        n_syms++;
        i += (size_t)l;
    }
    w->syms[n_syms - 1].next = -1;

    w->n_heap = 0;
    for (int32_t i = 0; i + 1 < n_syms; i++)
        if (try_pair(tok, w, i, i + 1))
            return GM_ERR_NOMEM;
    while (w->n_heap) {
        pair p = heap_pop(w);
        int32_t li = (int32_t)(uint32_t)p.key;
        sym *a = &w->syms[li];
        /* stale: one side was merged away or grew since the pair was queued */
        if (a->len == 0 || a->next < 0 || a->len + w->syms[a->next].len != p.sum_len)
            continue;
        sym *b = &w->syms[a->next];
        a->len += b->len;
        a->id = p.res;
        a->next = b->next;
        if (b->next >= 0)
            w->syms[b->next].prev = li;
        b->len = 0;
        if (try_pair(tok, w, a->prev, li) || try_pair(tok, w, li, a->next))
            return GM_ERR_NOMEM;
    }
    for (int32_t i = 0; i >= 0; i = w->syms[i].next) {
        const sym *y = &w->syms[i];
        if (emit_symbol(tok, s + y->start, y->len, y->id, out))
            return GM_ERR_NOMEM;
    }
    return GM_OK;
}

/* Escapes spaces, splits into runs of newlines / non-newlines and tokenizes each. */
static int tokenize_fragment(const gm_tokenizer *tok, bpe_work *w, const char *text, size_t len,
                             gm_tokens *out)
{
    size_t n_sp = 0;
    for (size_t i = 0; i < len; i++)
        n_sp += text[i] == ' ';
    size_t need = len + n_sp * (SPACE_ESC_LEN - 1);
    if (need > UINT32_MAX)
        return GM_ERR_RANGE;
    if (need > w->cap_buf) {
        char *nb = realloc(w->buf, need);
        if (!nb)
            return GM_ERR_NOMEM;
        w->buf = nb;
        w->cap_buf = need;
    }
    char *b = w->buf;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(b + o, SPACE_ESC, SPACE_ESC_LEN);
            o += SPACE_ESC_LEN;
        } else {
            b[o++] = text[i];
        }
    }
    for (size_t i = 0; i < o;) {
        bool nl = b[i] == '\n';
        size_t j = i + 1;
        while (j < o && (b[j] == '\n') == nl)
            j++;
        int rc = bpe_run(tok, w, b + i, j - i, out);
        if (rc)
            return rc;
        i = j;
    }
    return GM_OK;
}

typedef struct frag {
    size_t off, len;
    int32_t id;   /* >= 0: a matched special token */
} frag;

typedef struct frag_list {
    frag *v;
    size_t n, cap;
} frag_list;

static int frag_push(frag_list *l, size_t off, size_t len, int32_t id)
{
    if (id < 0 && len == 0)
        return GM_OK;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        frag *p = realloc(l->v, nc * sizeof *p);
        if (!p)
            return GM_ERR_NOMEM;
        l->v = p;
        l->cap = nc;
    }
    l->v[l->n++] = (frag){off, len, id};
    return GM_OK;
}

/* Splits raw fragments around the special tokens, longest text first (llama.cpp's
 * tokenizer_st_partition): each token's leftmost non-overlapping occurrences in what is
 * still raw text become fragments of their own. */
static int partition_special(const gm_tokenizer *tok, const char *text, size_t len, bool parse_special,
                             frag_list *cur, frag_list *next)
{
    cur->n = 0;
    if (frag_push(cur, 0, len, -1))
        return GM_ERR_NOMEM;
    for (size_t k = 0; k < tok->n_special; k++) {
        int32_t id = tok->special[k];
        int t = tok->ent[id].type;
        if (!parse_special && (t == GM_TOKEN_CONTROL || t == GM_TOKEN_UNKNOWN))
            continue;
        const char *st = tok->ent[id].text;
        size_t sl = tok->ent[id].len;
        bool any = false;
        for (size_t f = 0; f < cur->n && !any; f++)
            any = cur->v[f].id < 0 && cur->v[f].len >= sl &&
                  memmem(text + cur->v[f].off, cur->v[f].len, st, sl) != NULL;
        if (!any)
            continue;
        next->n = 0;
        for (size_t f = 0; f < cur->n; f++) {
            frag fr = cur->v[f];
            if (fr.id >= 0 || fr.len < sl) {
                if (frag_push(next, fr.off, fr.len, fr.id))
                    return GM_ERR_NOMEM;
                continue;
            }
            size_t pos = fr.off, end = fr.off + fr.len;
            while (pos < end) {
                const char *hit = end - pos >= sl ? memmem(text + pos, end - pos, st, sl) : NULL;
                if (!hit) {
                    if (frag_push(next, pos, end - pos, -1))
                        return GM_ERR_NOMEM;
                    break;
                }
                size_t h = (size_t)(hit - text);
                if (frag_push(next, pos, h - pos, -1) || frag_push(next, h, sl, id))
                    return GM_ERR_NOMEM;
                pos = h + sl;
            }
        }
        frag_list tmp = *cur;
        *cur = *next;
        *next = tmp;
    }
    return GM_OK;
}

int gm_tokenize(const gm_tokenizer *tok, const char *text, size_t len, bool add_bos,
                bool parse_special, gm_tokens *out, gm_error *err)
{
    if (!text && len)
        return gm_set_error(err, GM_ERR_INVALID, "tokenize: NULL text with length %zu", len);
    size_t n0 = out->n;
    if (add_bos && tok->bos >= 0 && gm_tokens_push(out, tok->bos))
        return gm_set_error(err, GM_ERR_NOMEM, "tokenize: out of memory");
    if (len == 0)
        return GM_OK;
    frag_list a = {0}, b = {0};
    bpe_work w = {0};
    int rc = partition_special(tok, text, len, parse_special, &a, &b);
    for (size_t f = 0; rc == GM_OK && f < a.n; f++) {
        if (a.v[f].id >= 0)
            rc = gm_tokens_push(out, a.v[f].id);
        else
            rc = tokenize_fragment(tok, &w, text + a.v[f].off, a.v[f].len, out);
    }
    free(a.v);
    free(b.v);
    free(w.syms);
    free(w.heap);
    free(w.buf);
    if (rc) {
        out->n = n0;
        if (rc == GM_ERR_RANGE)
            return gm_set_error(err, rc, "tokenize: text of %zu bytes is too long", len);
        return gm_set_error(err, rc, "tokenize: out of memory on %zu bytes of text", len);
    }
    return GM_OK;
}

/* ---- detokenizer ---- */

void gm_detok_init(gm_detok *d, bool render_special)
{
    memset(d, 0, sizeof *d);
    d->render_special = render_special;
}

typedef struct outbuf {
    char *p;
    size_t n, cap;
    bool overflow;
} outbuf;

static void ob_put(outbuf *o, const void *s, size_t n)
{
    if (o->overflow || o->n + n + 1 > o->cap) {
        o->overflow = true;
        return;
    }
    memcpy(o->p + o->n, s, n);
    o->n += n;
}

/* Decodes the stream pending ++ s: emits complete sequences, holds an incomplete tail. */
static void detok_bytes(gm_detok *d, const uint8_t *s, size_t n, outbuf *o)
{
    static const char repl[3] = {(char)0xef, (char)0xbf, (char)0xbd};
    /* small working window: pending bytes then the new ones */
    size_t i = 0;
    while (d->n_pending > 0 && i <= n) {
        uint8_t tmp[8];
        size_t k = (size_t)d->n_pending, add = n - i < 4 ? n - i : 4;
        memcpy(tmp, d->pending, k);
        memcpy(tmp + k, s + i, add);
        int bad = 1;
        int l = utf8_check(tmp, k + add, &bad);
        if (l < 0) {
            /* still incomplete: everything left joins pending */
            memcpy(d->pending + k, s + i, add);
            d->n_pending = (int)(k + add);
            return;
        }
        size_t used = l > 0 ? (size_t)l : (size_t)bad;
        if (l > 0)
            ob_put(o, tmp, used);
        else
            ob_put(o, repl, 3);
        if (used >= k) {
            i += used - k;
            d->n_pending = 0;
        } else {
            memmove(d->pending, d->pending + used, k - used);
            d->n_pending = (int)(k - used);
        }
    }
    while (i < n) {
        size_t j = i;
        /* fast path over ASCII */
        while (j < n && s[j] < 0x80)
            j++;
        if (j > i) {
            ob_put(o, s + i, j - i);
            i = j;
            continue;
        }
        int bad = 1;
        int l = utf8_check(s + i, n - i, &bad);
        if (l < 0) {
            memcpy(d->pending, s + i, n - i);
            d->n_pending = (int)(n - i);
            return;
        }
        if (l > 0) {
            ob_put(o, s + i, (size_t)l);
            i += (size_t)l;
        } else {
            ob_put(o, repl, 3);
            i += (size_t)bad;
        }
    }
}

int gm_detok_push(gm_detok *d, const gm_tokenizer *tok, int32_t id, char *out, size_t cap)
{
    if (!out || cap == 0)
        return -1;
    outbuf o = {out, 0, cap, false};
    gm_detok saved = *d;
    if (id >= 0 && id < tok->n_vocab) {
        const char *t = tok->ent[id].text;
        size_t n = tok->ent[id].len;
        switch (tok->ent[id].type) {
        case GM_TOKEN_BYTE: {
            uint8_t byte = (uint8_t)parse_byte_token(t, n);
            detok_bytes(d, &byte, 1, &o);
            break;
        }
        case GM_TOKEN_CONTROL:
        case GM_TOKEN_UNKNOWN:
            if (!d->render_special)
                break;
            /* fall through */
        case GM_TOKEN_NORMAL:
        case GM_TOKEN_USER_DEFINED: {
            /* U+2581 -> space (HF's decoder does this for added tokens too), in chunks so
             * the buffer stays small */
            size_t i = 0;
            while (i < n) {
                char chunk[256];
                size_t c = 0;
                while (i < n && c + SPACE_ESC_LEN <= sizeof chunk) {
                    if (n - i >= SPACE_ESC_LEN && memcmp(t + i, SPACE_ESC, SPACE_ESC_LEN) == 0) {
                        chunk[c++] = ' ';
                        i += SPACE_ESC_LEN;
                    } else {
                        chunk[c++] = t[i++];
                    }
                }
                detok_bytes(d, (const uint8_t *)chunk, c, &o);
            }
            break;
        }
        default:  /* UNUSED: nothing */
            break;
        }
    }
    if (o.overflow) {
        *d = saved;
        out[0] = '\0';
        return -1;
    }
    out[o.n] = '\0';
    return (int)o.n;
}

int gm_detok_flush(gm_detok *d, char *out, size_t cap)
{
    if (!out || cap == 0)
        return -1;
    outbuf o = {out, 0, cap, false};
    gm_detok saved = *d;
    /* what is held is an incomplete sequence: one U+FFFD for it (maximal subpart) */
    if (d->n_pending > 0)
        ob_put(&o, "\xef\xbf\xbd", 3);
    if (o.overflow) {
        *d = saved;
        out[0] = '\0';
        return -1;
    }
    d->n_pending = 0;
    out[o.n] = '\0';
    return (int)o.n;
}

char *gm_detokenize(const gm_tokenizer *tok, const int32_t *ids, size_t n, bool render_special)
{
    gm_detok d;
    gm_detok_init(&d, render_special);
    size_t piece_cap = 64 + 3 * tok->max_len + 16;
    size_t cap = 256, len = 0;
    char *s = malloc(cap);
    char *piece = malloc(piece_cap);
    if (!s || !piece) {
        free(s);
        free(piece);
        return NULL;
    }
    for (size_t i = 0; i <= n; i++) {
        int k = i < n ? gm_detok_push(&d, tok, ids[i], piece, piece_cap) : gm_detok_flush(&d, piece, piece_cap);
        if (k < 0) {
            free(s);
            free(piece);
            return NULL;
        }
        if (len + (size_t)k + 1 > cap) {
            while (len + (size_t)k + 1 > cap)
                cap *= 2;
            char *ns = realloc(s, cap);
            if (!ns) {
                free(s);
                free(piece);
                return NULL;
            }
            s = ns;
        }
        memcpy(s + len, piece, (size_t)k);
        len += (size_t)k;
    }
    s[len] = '\0';
    free(piece);
    return s;
}
