/* sampler.c — penalties, then greedy argmax, or top-k -> temperature -> softmax -> top-p ->
 * min-p -> a draw from a seeded xoshiro256** generator (same seed, same logits => same
 * tokens). Penalties apply in greedy mode too, so a repeat penalty works with
 * temperature 0 as it does in llama.cpp. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { N_BUCKETS = 2048 };  /* top-p histogram, see prob_bucket */

typedef struct cand {
    float logit;   /* then probability */
    int32_t id;
} cand;

struct gm_sampler {
    gm_sampler_params p;
    int32_t n_vocab;
    uint64_t rng[4];
    /* penalty window: ring of the last `window` accepted ids and their counts */
    int32_t *ring;
    size_t ring_cap, ring_len, ring_head;
    int32_t *count;      /* n_vocab */
    uint32_t *stamp;     /* n_vocab: marks ids already penalized this step */
    uint32_t stamp_now;
    cand *c;             /* n_vocab */
    cand *tmp;           /* n_vocab: top-p boundary bucket */
    double *hist;        /* N_BUCKETS */
};

gm_sampler_params gm_sampler_default_params(void)
{
    gm_sampler_params p = {
        .temperature = 1.0f,
        .top_k = 64,
        .top_p = 0.95f,
        .min_p = 0.0f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .seed = 0,
    };
    return p;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4])
{
    return (double)(xoshiro_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static bool penalties_on(const gm_sampler_params *p)
{
    return p->repeat_last_n != 0 &&
           (p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f);
}

void gm_sampler_reset(gm_sampler *s)
{
    uint64_t x = s->p.seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    if (s->count)
        for (size_t i = 0; i < s->ring_len; i++) {
            size_t k = (s->ring_head + s->ring_cap - s->ring_len + i) % s->ring_cap;
            s->count[s->ring[k]] = 0;
        }
    s->ring_len = s->ring_head = 0;
}

gm_sampler *gm_sampler_new(const gm_sampler_params *p, int32_t n_vocab)
{
    if (!p || n_vocab <= 0)
        return NULL;
    gm_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->c = malloc((size_t)n_vocab * sizeof *s->c);
    s->tmp = malloc((size_t)n_vocab * sizeof *s->tmp);
    s->hist = malloc(N_BUCKETS * sizeof *s->hist);
    if (!s->c || !s->tmp || !s->hist)
        goto fail;
    if (penalties_on(p)) {
        s->count = calloc((size_t)n_vocab, sizeof *s->count);
        s->stamp = calloc((size_t)n_vocab, sizeof *s->stamp);
        s->ring_cap = p->repeat_last_n > 0 ? (size_t)p->repeat_last_n : 256;
        s->ring = malloc(s->ring_cap * sizeof *s->ring);
        if (!s->count || !s->stamp || !s->ring)
            goto fail;
    }
    gm_sampler_reset(s);
    return s;
fail:
    gm_sampler_free(s);
    return NULL;
}

void gm_sampler_free(gm_sampler *s)
{
    if (!s)
        return;
    free(s->ring);
    free(s->count);
    free(s->stamp);
    free(s->c);
    free(s->tmp);
    free(s->hist);
    free(s);
}

void gm_sampler_accept(gm_sampler *s, int32_t id)
{
    if (!s->count || id < 0 || id >= s->n_vocab)
        return;
    if (s->p.repeat_last_n < 0 && s->ring_len == s->ring_cap) {
        /* whole history: grow (the ring is linear while it has never wrapped) */
        size_t nc = s->ring_cap * 2;
        int32_t *r = realloc(s->ring, nc * sizeof *r);
        if (!r)
            return;  /* keep penalizing the history we have */
        s->ring = r;
        s->ring_cap = nc;
        s->ring_head = s->ring_len;  /* never evicted, so the oldest entry is at 0 */
    }
    if (s->ring_len == s->ring_cap) {
        int32_t old = s->ring[s->ring_head];
        s->count[old]--;
        s->ring_len--;
    }
    s->ring[s->ring_head] = id;
    s->ring_head = (s->ring_head + 1) % s->ring_cap;
    s->ring_len++;
    s->count[id]++;
}

static void apply_penalties(gm_sampler *s, float *logits)
{
    if (!s->count || s->ring_len == 0)
        return;
    if (++s->stamp_now == 0) {
        memset(s->stamp, 0, (size_t)s->n_vocab * sizeof *s->stamp);
        s->stamp_now = 1;
    }
    const float rp = s->p.repeat_penalty, pp = s->p.presence_penalty, fp = s->p.frequency_penalty;
    for (size_t i = 0; i < s->ring_len; i++) {
        size_t k = (s->ring_head + s->ring_cap - s->ring_len + i) % s->ring_cap;
        int32_t id = s->ring[k];
        if (s->stamp[id] == s->stamp_now)
            continue;  /* once per distinct token */
        s->stamp[id] = s->stamp_now;
        float l = logits[id];
        if (rp != 1.0f && rp > 0.0f)
            l = l > 0.0f ? l / rp : l * rp;
        l -= (float)s->count[id] * fp + pp;
        logits[id] = l;
    }
}

/* Descending by value, ascending id on ties: a total order, so results never depend on
 * the sort algorithm. */
static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static bool cand_before(const cand *x, const cand *y)
{
    return x->logit > y->logit || (x->logit == y->logit && x->id < y->id);
}

/* Top k of logits[0..n) (NaN and -inf skipped) into c, sorted best first; returns how many.
 * A size-k heap whose root is the worst kept candidate: one comparison per logit for most
 * of the vocabulary. */
static size_t top_k_select(const float *logits, int32_t n, size_t k, cand *c)
{
    size_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        float l = logits[i];
        if (!(l == l) || l == -INFINITY)
            continue;
        cand x = {l, i};
        size_t j;
        if (m < k) {
            /* sift up: parents are worse than (or equal to) their children */
            j = m++;
            while (j > 0) {
                size_t pj = (j - 1) / 2;
                if (!cand_before(&c[pj], &x))
                    break;
                c[j] = c[pj];
                j = pj;
            }
            c[j] = x;
            continue;
        }
        if (!cand_before(&x, &c[0]))
            continue;
        j = 0;
        for (;;) {  /* replace the root and sift down */
            size_t ch = 2 * j + 1;
            if (ch >= m)
                break;
            if (ch + 1 < m && cand_before(&c[ch], &c[ch + 1]))
                ch++;  /* the worse child */
            if (!cand_before(&x, &c[ch]))
                break;
            c[j] = c[ch];
            j = ch;
        }
        c[j] = x;
    }
    qsort(c, m, sizeof *c, cand_cmp);
    return m;
}

/* Probability buckets for top-p without a full sort: by the float's bits, which order
 * positive floats; 32 buckets per power of two, down to 2^-64 of the maximum. */

static int prob_bucket(float p)
{
    uint32_t b;
    memcpy(&b, &p, sizeof b);
    uint32_t one = 0x3f800000u;
    if (b >= one)
        return 0;
    uint32_t k = (one - b) >> 18;
    return k >= N_BUCKETS ? N_BUCKETS - 1 : (int)k;
}

/* Keeps the smallest set of most likely candidates whose mass reaches top_p * total (ties
 * by lower id), leaving c in its order. Values are unnormalized, max 1. */
static size_t top_p_unsorted(cand *c, size_t nc, double total, float top_p, double *hist, cand *tmp)
{
    memset(hist, 0, N_BUCKETS * sizeof *hist);
    for (size_t i = 0; i < nc; i++)
        hist[prob_bucket(c[i].logit)] += c[i].logit;
    const double target = (double)top_p * total;
    double before = 0.0;
    int bb = 0;
    for (; bb < N_BUCKETS - 1; bb++) {
        if (before + hist[bb] >= target)
            break;
        before += hist[bb];
    }
    /* the boundary bucket in order decides how many of its members are needed */
    size_t nt = 0;
    for (size_t i = 0; i < nc; i++)
        if (prob_bucket(c[i].logit) == bb)
            tmp[nt++] = c[i];
    qsort(tmp, nt, sizeof *tmp, cand_cmp);
    size_t cut = nt ? nt - 1 : 0;
    double acc = before;
    for (size_t i = 0; i < nt; i++) {
        acc += tmp[i].logit;
        if (acc >= target) {
            cut = i;
            break;
        }
    }
    size_t o = 0;
    for (size_t i = 0; i < nc; i++) {
        int b = prob_bucket(c[i].logit);
        if (b < bb || (b == bb && nt && !cand_before(&tmp[cut], &c[i])))
            c[o++] = c[i];
    }
    return o;
}

int32_t gm_sampler_sample(gm_sampler *s, float *logits)
{
    const int32_t n = s->n_vocab;
    apply_penalties(s, logits);

    if (s->p.temperature <= 0.0f) {
        /* greedy: first maximum (NaN never wins) */
        int32_t best = 0;
        float bv = -INFINITY;
        bool found = false;
        for (int32_t i = 0; i < n; i++) {
            if (logits[i] > bv || (!found && logits[i] == bv)) {
                bv = logits[i];
                best = i;
                found = true;
            }
        }
        return best;
    }

    /* candidates: the top k sorted best first, or every finite logit in id order */
    cand *c = s->c;
    size_t nc = 0;
    bool sorted = false;
    if (s->p.top_k > 0 && s->p.top_k < n) {
        nc = top_k_select(logits, n, (size_t)s->p.top_k, c);
        sorted = true;
    } else {
        for (int32_t i = 0; i < n; i++) {
            float l = logits[i];
            if (l == l && l > -INFINITY)  /* drop NaN and masked tokens */
                c[nc++] = (cand){l, i};
        }
    }
    if (nc == 0)
        return 0;

    /* temperature, then softmax (kept unnormalized: the maximum is 1) */
    const float inv_t = 1.0f / s->p.temperature;
    float mx = -INFINITY;
    for (size_t i = 0; i < nc; i++)
        if (c[i].logit > mx)
            mx = c[i].logit;
    double total = 0.0;
    for (size_t i = 0; i < nc; i++) {
        float e = expf((c[i].logit - mx) * inv_t);
        c[i].logit = e;
        total += e;
    }

    /* top-p: the smallest most-likely set whose mass reaches top_p */
    if (s->p.top_p < 1.0f && nc > 1) {
        if (sorted) {
            double acc = 0.0, target = (double)s->p.top_p * total;
            for (size_t i = 0; i < nc; i++) {
                acc += c[i].logit;
                if (acc >= target) {
                    nc = i + 1;
                    break;
                }
            }
        } else {
            nc = top_p_unsorted(c, nc, total, s->p.top_p, s->hist, s->tmp);
        }
    }

    /* min-p: relative to the most likely token (whose value is 1) */
    if (s->p.min_p > 0.0f && nc > 1) {
        size_t o = 0;
        for (size_t i = 0; i < nc; i++)
            if (c[i].logit >= s->p.min_p)
                c[o++] = c[i];
        nc = o;
    }

    /* draw from what is left, renormalized */
    total = 0.0;
    for (size_t i = 0; i < nc; i++)
        total += c[i].logit;
    double u = rng_uniform(s->rng) * total;
    double acc = 0.0;
    for (size_t i = 0; i < nc; i++) {
        acc += c[i].logit;
        if (u < acc)
            return c[i].id;
    }
    /* rounding left u at the very top: the last token with any mass */
    for (size_t i = nc; i-- > 0;)
        if (c[i].logit > 0.0f)
            return c[i].id;
    return c[0].id;
}
