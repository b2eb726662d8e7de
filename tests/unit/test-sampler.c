/* test-sampler.c — the sampler (distributions, each filter, penalties, determinism), the
 * stop-string filter, and the generate loop on a synthetic model. */
#include <math.h>
#include <stdint.h>
#include <unistd.h>

#include "decoder/context.h"
#include "decoder/generate.h"
#include "decoder/model.h"
#include "decoder/sampler.h"
#include "decoder/stop-strings.h"
#include "decoder/tokenizer.h"
#include "test-util.h"
#include "tools/synth-model.h"

/* ---- sampler ---- */

static gm_sampler_params plain_params(void)
{
    gm_sampler_params p = gm_sampler_default_params();
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.temperature = 1.0f;
    p.seed = 42;
    return p;
}

/* Draws n samples from fixed logits; counts per token. */
static void draw(const gm_sampler_params *p, const float *logits, int32_t nv, int n, int *count)
{
    gm_sampler *s = gm_sampler_new(p, nv);
    CHECK(s != NULL);
    if (!s)
        return;
    float *l = malloc((size_t)nv * sizeof *l);
    memset(count, 0, (size_t)nv * sizeof *count);
    int out_of_range = 0;
    for (int i = 0; i < n; i++) {
        memcpy(l, logits, (size_t)nv * sizeof *l);
        int32_t id = gm_sampler_sample(s, l);
        if (id >= 0 && id < nv)
            count[id]++;
        else
            out_of_range++;
    }
    CHECK_EQ_INT(out_of_range, 0);
    free(l);
    gm_sampler_free(s);
}

/* Frequencies within 5 standard deviations of the expected probabilities (and exactly 0
 * where the probability is 0). */
static void check_dist(const int *count, const double *prob, int32_t nv, int n, const char *what)
{
    for (int32_t i = 0; i < nv; i++) {
        double f = (double)count[i] / n;
        double sd = sqrt(prob[i] * (1.0 - prob[i]) / n);
        if (prob[i] == 0.0)
            CHECKF(count[i] == 0, "%s: token %d drawn %d times, expected never", what, i, count[i]);
        else
            CHECKF(fabs(f - prob[i]) <= 5.0 * sd + 1e-9, "%s: token %d frequency %.4f, expected %.4f (sd %.4f)",
                   what, i, f, prob[i], sd);
    }
}

static void test_greedy(void)
{
    gm_sampler_params p = plain_params();
    p.temperature = 0.0f;
    gm_sampler *s = gm_sampler_new(&p, 6);
    float l1[6] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f, NAN};
    CHECK_EQ_INT(gm_sampler_sample(s, l1), 1);  /* tie: the lower id */
    float l2[6] = {NAN, -INFINITY, -5.0f, -4.0f, -INFINITY, -4.5f};
    CHECK_EQ_INT(gm_sampler_sample(s, l2), 3);
    float l3[6] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int32_t id = gm_sampler_sample(s, l3);
    CHECK(id >= 0 && id < 6);
    gm_sampler_free(s);
    /* negative temperature is greedy as well */
    p.temperature = -1.0f;
    s = gm_sampler_new(&p, 6);
    float l4[6] = {0, 0, 0, 0, 0, 1e-6f};
    CHECK_EQ_INT(gm_sampler_sample(s, l4), 5);
    gm_sampler_free(s);
    CHECK(gm_sampler_new(&p, 0) == NULL);
}

static void test_distributions(void)
{
    enum { NV = 5, N = 20000 };
    const double base[NV] = {0.05, 0.10, 0.15, 0.30, 0.40};
    float logits[NV];
    for (int i = 0; i < NV; i++)
        logits[i] = (float)log(base[i]) + 3.0f;  /* a shift must not matter */
    int count[NV];
    double exp_p[NV];

    /* temperature 1, no filters: the softmax itself */
    gm_sampler_params p = plain_params();
    draw(&p, logits, NV, N, count);
    check_dist(count, base, NV, N, "softmax");

    /* temperature 0.5: p^2 renormalized */
    p.temperature = 0.5f;
    double z = 0;
    for (int i = 0; i < NV; i++)
        z += base[i] * base[i];
    for (int i = 0; i < NV; i++)
        exp_p[i] = base[i] * base[i] / z;
    draw(&p, logits, NV, N, count);
    check_dist(count, exp_p, NV, N, "temperature 0.5");

    /* temperature 2: sqrt(p) renormalized */
    p.temperature = 2.0f;
    z = 0;
    for (int i = 0; i < NV; i++)
        z += sqrt(base[i]);
    for (int i = 0; i < NV; i++)
        exp_p[i] = sqrt(base[i]) / z;
    draw(&p, logits, NV, N, count);
    check_dist(count, exp_p, NV, N, "temperature 2");

    /* top-k 2: the two best, renormalized */
    p = plain_params();
    p.top_k = 2;
    const double k2[NV] = {0, 0, 0, 0.30 / 0.70, 0.40 / 0.70};
    draw(&p, logits, NV, N, count);
    check_dist(count, k2, NV, N, "top-k 2");

    /* top-p 0.6: 0.40 + 0.30 reaches it, so {3, 4} */
    p = plain_params();
    p.top_p = 0.6f;
    draw(&p, logits, NV, N, count);
    check_dist(count, k2, NV, N, "top-p 0.6");
    /* top-p 0.75: needs 0.15 too */
    p.top_p = 0.75f;
    const double p3[NV] = {0, 0, 0.15 / 0.85, 0.30 / 0.85, 0.40 / 0.85};
    draw(&p, logits, NV, N, count);
    check_dist(count, p3, NV, N, "top-p 0.75");

    /* top-p cutting through ties keeps the lower ids, with or without top-k (two code
     * paths: sorted after top-k, bucketed without) */
    {
        float flat[10];
        int cnt[10];
        double q[10];
        for (int i = 0; i < 10; i++) {
            flat[i] = 1.0f;
            q[i] = i < 4 ? 0.25 : 0.0;
        }
        for (int k = 0; k <= 10; k += 10) {
            p = plain_params();
            p.top_p = 0.35f;
            p.top_k = k;
            draw(&p, flat, 10, N, cnt);
            check_dist(cnt, q, 10, N, k ? "top-p ties, top-k 10" : "top-p ties");
        }
    }

    /* min-p 0.3: keep p >= 0.12 -> {2, 3, 4} */
    p = plain_params();
    p.min_p = 0.3f;
    draw(&p, logits, NV, N, count);
    check_dist(count, p3, NV, N, "min-p 0.3");

    /* filters compose: top-k 4 then top-p 0.5 of the renormalized (0.4/0.95 alone is
     * below 0.5, so {3, 4}) */
    p = plain_params();
    p.top_k = 4;
    p.top_p = 0.5f;
    draw(&p, logits, NV, N, count);
    check_dist(count, k2, NV, N, "top-k + top-p");

    /* temperature applies before top-p: at T = 0.5 token 4 alone has 0.16/0.285 = 0.56
     * (0.40 at T = 1), so top-p 0.45 keeps only it */
    p = plain_params();
    p.temperature = 0.5f;
    p.top_p = 0.45f;
    const double only4[NV] = {0, 0, 0, 0, 1.0};
    draw(&p, logits, NV, N, count);
    check_dist(count, only4, NV, N, "temperature then top-p");

    /* masked (-inf) tokens are never drawn */
    float masked[NV];
    memcpy(masked, logits, sizeof masked);
    masked[4] = -INFINITY;
    masked[0] = NAN;
    p = plain_params();
    const double m[NV] = {0, 0.10 / 0.55, 0.15 / 0.55, 0.30 / 0.55, 0};
    draw(&p, masked, NV, N, count);
    check_dist(count, m, NV, N, "masked");
}

static void test_determinism(void)
{
    enum { NV = 1000 };
    float logits[NV];
    uint64_t x = 7;
    for (int i = 0; i < NV; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        logits[i] = (float)((x >> 40) % 1000) / 100.0f;
    }
    gm_sampler_params p = gm_sampler_default_params();
    p.seed = 1234;
    int32_t a[64], b[64], c[64], d[64];
    gm_sampler *s1 = gm_sampler_new(&p, NV), *s2 = gm_sampler_new(&p, NV);
    p.seed = 1235;
    gm_sampler *s3 = gm_sampler_new(&p, NV);
    float l[NV];
    for (int i = 0; i < 64; i++) {
        memcpy(l, logits, sizeof l);
        a[i] = gm_sampler_sample(s1, l);
        memcpy(l, logits, sizeof l);
        b[i] = gm_sampler_sample(s2, l);
        memcpy(l, logits, sizeof l);
        c[i] = gm_sampler_sample(s3, l);
    }
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
    /* reset re-seeds */
    gm_sampler_reset(s1);
    for (int i = 0; i < 64; i++) {
        memcpy(l, logits, sizeof l);
        d[i] = gm_sampler_sample(s1, l);
    }
    CHECK(memcmp(a, d, sizeof a) == 0);
    gm_sampler_free(s1);
    gm_sampler_free(s2);
    gm_sampler_free(s3);
}

static void test_penalties(void)
{
    enum { NV = 6 };
    gm_sampler_params p = plain_params();
    p.temperature = 0.0f;
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 3;
    gm_sampler *s = gm_sampler_new(&p, NV);
    gm_sampler_accept(s, 0);
    gm_sampler_accept(s, 1);
    gm_sampler_accept(s, 1);  /* counted once for the repeat penalty */
    float l[NV] = {4.0f, -1.0f, 3.0f, 0.5f, 2.5f, -3.0f};
    int32_t id = gm_sampler_sample(s, l);
    CHECK_EQ_INT(id, 2);            /* 4 / 2 = 2 < 3 */
    CHECK_NEAR(l[0], 2.0f, 1e-6);  /* positive: divided */
    CHECK_NEAR(l[1], -2.0f, 1e-6); /* negative: multiplied */
    CHECK_NEAR(l[2], 3.0f, 0);     /* not in the window */
    /* the window slides: after three more tokens 0 and 1 are out */
    gm_sampler_accept(s, 2);
    gm_sampler_accept(s, 3);
    gm_sampler_accept(s, 4);
    float l2[NV] = {4.0f, -1.0f, 3.0f, 0.5f, 2.5f, -3.0f};
    CHECK_EQ_INT(gm_sampler_sample(s, l2), 0);
    CHECK_NEAR(l2[0], 4.0f, 0);
    CHECK_NEAR(l2[2], 1.5f, 1e-6);
    CHECK_NEAR(l2[3], 0.25f, 1e-6);
    /* reset forgets the history */
    gm_sampler_reset(s);
    float l3[NV] = {4.0f, -1.0f, 3.0f, 0.5f, 2.5f, -3.0f};
    gm_sampler_sample(s, l3);
    CHECK_NEAR(l3[2], 3.0f, 0);
    gm_sampler_free(s);

    /* presence / frequency: logit -= presence + frequency * count */
    p = plain_params();
    p.temperature = 0.0f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    p.repeat_last_n = -1;  /* whole history */
    s = gm_sampler_new(&p, NV);
    for (int i = 0; i < 300; i++)
        gm_sampler_accept(s, 5);  /* beyond the initial ring size */
    gm_sampler_accept(s, 3);
    gm_sampler_accept(s, 3);
    gm_sampler_accept(s, 3);
    float l4[NV] = {0, 0, 0, 2.0f, 0, 100.0f};
    id = gm_sampler_sample(s, l4);
    CHECK_NEAR(l4[3], 2.0f - 0.5f - 0.75f, 1e-6);
    CHECK_NEAR(l4[5], 100.0f - 0.5f - 75.0f, 1e-4);
    CHECK_EQ_INT(id, 5);
    gm_sampler_free(s);

    /* repeat_last_n = 0 turns penalties off */
    p.repeat_last_n = 0;
    s = gm_sampler_new(&p, NV);
    gm_sampler_accept(s, 3);
    float l5[NV] = {0, 0, 0, 2.0f, 0, 1.0f};
    gm_sampler_sample(s, l5);
    CHECK_NEAR(l5[3], 2.0f, 0);
    gm_sampler_free(s);

    /* penalties steer sampling too: token 0 dominant until penalized */
    p = plain_params();
    p.repeat_penalty = 1000.0f;
    p.repeat_last_n = 8;
    s = gm_sampler_new(&p, NV);
    gm_sampler_accept(s, 0);
    int n0 = 0;
    for (int i = 0; i < 2000; i++) {
        float l6[NV] = {5.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
        n0 += gm_sampler_sample(s, l6) == 0;
    }
    /* e^0.005 / (e^0.005 + 5e) = 6.9 % expected (91.6 % without the penalty) */
    CHECKF(n0 > 80 && n0 < 200, "n0 = %d", n0);
    gm_sampler_free(s);
}

/* Full-vocabulary draws with the default top-p path (no top-k): the chosen token is always
 * inside the smallest set that reaches top_p, computed here by brute force. */
static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

static void test_large_vocab(void)
{
    enum { NV = 262144 };
    float *logits = malloc(NV * sizeof *logits), *l = malloc(NV * sizeof *l), *pr = malloc(NV * sizeof *pr);
    uint64_t x = 99;
    for (int i = 0; i < NV; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        /* a peaked distribution: a few hundred plausible tokens */
        double u = (double)(x >> 11) / 9007199254740992.0;
        logits[i] = (float)(-30.0 * u + (i % 997 == 0 ? 20.0 : 0.0));
    }
    double mx = -1e30, z = 0;
    for (int i = 0; i < NV; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    for (int i = 0; i < NV; i++)
        z += exp(logits[i] - mx);
    for (int i = 0; i < NV; i++)
        pr[i] = (float)(exp(logits[i] - mx) / z);
    float *sorted = malloc(NV * sizeof *sorted);
    memcpy(sorted, pr, NV * sizeof *sorted);
    qsort(sorted, NV, sizeof *sorted, cmp_desc);
    double acc = 0;
    float thr = 0;
    for (int i = 0; i < NV; i++) {
        acc += sorted[i];
        if (acc >= 0.9) {
            thr = sorted[i];
            break;
        }
    }
    gm_sampler_params p = plain_params();
    p.top_p = 0.9f;
    gm_sampler *s = gm_sampler_new(&p, NV);
    int bad = 0;
    for (int i = 0; i < 50; i++) {
        memcpy(l, logits, NV * sizeof *l);
        int32_t id = gm_sampler_sample(s, l);
        bad += !(id >= 0 && id < NV && pr[id] >= thr * 0.999f);
    }
    CHECK_EQ_INT(bad, 0);
    gm_sampler_free(s);
    /* defaults (top-k 64) on the full vocabulary: always one of the 64 best */
    p = gm_sampler_default_params();
    s = gm_sampler_new(&p, NV);
    float t64 = sorted[63];
    bad = 0;
    for (int i = 0; i < 50; i++) {
        memcpy(l, logits, NV * sizeof *l);
        int32_t id = gm_sampler_sample(s, l);
        bad += !(id >= 0 && id < NV && pr[id] >= t64);
    }
    CHECK_EQ_INT(bad, 0);
    gm_sampler_free(s);
    free(sorted);
    free(logits);
    free(l);
    free(pr);
}

/* ---- stop strings ---- */

typedef struct acc_text {
    char s[4096];
    size_t n;
} acc_text;

static int feed(gm_stop_filter *f, acc_text *a, const char *piece)
{
    const char *e;
    size_t n;
    int m = gm_stop_filter_push(f, piece, strlen(piece), &e, &n);
    memcpy(a->s + a->n, e, n);
    a->n += n;
    a->s[a->n] = '\0';
    return m;
}

static void finish(gm_stop_filter *f, acc_text *a)
{
    const char *e;
    size_t n;
    gm_stop_filter_flush(f, &e, &n);
    memcpy(a->s + a->n, e, n);
    a->n += n;
    a->s[a->n] = '\0';
}

static void test_stop_strings(void)
{
    gm_stop_filter f;
    acc_text a = {.n = 0};
    const char *stops[] = {"STOP", "", "\n\nUser:"};
    CHECK(gm_stop_filter_init(&f, stops, 3) == 0);
    CHECK_EQ_INT(feed(&f, &a, "Hello S"), 0);
    CHECK(strcmp(a.s, "Hello ") == 0);  /* "S" held back */
    CHECK_EQ_INT(feed(&f, &a, "TO"), 0);
    CHECK(strcmp(a.s, "Hello ") == 0);
    CHECK_EQ_INT(feed(&f, &a, "P and more"), 1);
    CHECK(strcmp(a.s, "Hello ") == 0);  /* the stop string and what follows are dropped */
    CHECK_EQ_INT(feed(&f, &a, "later"), 1);
    finish(&f, &a);
    CHECK(strcmp(a.s, "Hello ") == 0);
    gm_stop_filter_free(&f);

    /* a false start is released once it cannot match any more */
    a.n = 0;
    a.s[0] = '\0';
    gm_stop_filter_init(&f, stops, 3);
    feed(&f, &a, "x ST");
    CHECK(strcmp(a.s, "x ") == 0);
    feed(&f, &a, "OX\n");
    CHECK(strcmp(a.s, "x STOX") == 0);
    feed(&f, &a, "\nUse");
    CHECK(strcmp(a.s, "x STOX") == 0);
    CHECK_EQ_INT(feed(&f, &a, "d"), 0);
    CHECK(strcmp(a.s, "x STOX\n\nUsed") == 0);
    feed(&f, &a, "\n");
    finish(&f, &a);  /* the end of the stream releases the held "\n" */
    CHECK(strcmp(a.s, "x STOX\n\nUsed\n") == 0);
    gm_stop_filter_free(&f);

    /* overlapping prefix: "aaab" with stop "aab" leaves "a" */
    const char *s2[] = {"aab"};
    a.n = 0;
    gm_stop_filter_init(&f, s2, 1);
    feed(&f, &a, "a");
    feed(&f, &a, "a");
    feed(&f, &a, "a");
    CHECK(a.n == 1 && a.s[0] == 'a');
    CHECK_EQ_INT(feed(&f, &a, "b"), 1);
    CHECK(a.n == 1);
    gm_stop_filter_free(&f);

    /* no stop strings: everything passes through at once */
    a.n = 0;
    gm_stop_filter_init(&f, NULL, 0);
    feed(&f, &a, "STOP");
    CHECK(a.n == 4);
    gm_stop_filter_free(&f);

    /* randomized: output == text before the earliest stop string, for any chunking; every
     * released piece ends on a character boundary */
    const char *alpha[] = {"a", "b", "é", "中", "\n"};
    const char *rs[] = {"ab\n", "bé", "中中a"};
    uint64_t x = 5;
    int bad = 0, bad_utf8 = 0;
    for (int t = 0; t < 2000; t++) {
        char text[256];
        size_t tn = 0;
        int len = 1 + t % 30;
        for (int i = 0; i < len; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            const char *c = alpha[(x >> 33) % 5];
            memcpy(text + tn, c, strlen(c));
            tn += strlen(c);
        }
        text[tn] = '\0';
        /* expected: cut at the earliest occurrence of any stop string */
        size_t cut = tn;
        for (int k = 0; k < 3; k++) {
            const char *m = strstr(text, rs[k]);
            if (m && (size_t)(m - text) < cut)
                cut = (size_t)(m - text);
        }
        gm_stop_filter_init(&f, rs, 3);
        a.n = 0;
        int matched = 0;
        for (size_t i = 0; i < tn && !matched;) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            /* pieces are whole characters, as the detokenizer delivers them */
            size_t step = 0;
            for (int c = 1 + (int)((x >> 40) % 3); c > 0 && i + step < tn; c--) {
                step++;
                while (i + step < tn && ((unsigned char)text[i + step] & 0xc0) == 0x80)
                    step++;
            }
            char piece[16];
            memcpy(piece, text + i, step);
            piece[step] = '\0';
            size_t before = a.n;
            matched = feed(&f, &a, piece);
            /* released text never ends inside a multi-byte character */
            if (a.n > before && a.n < tn && ((unsigned char)text[a.n] & 0xc0) == 0x80)
                bad_utf8++;
            i += step;
        }
        if (!matched)
            finish(&f, &a);
        if (a.n != cut || memcmp(a.s, text, cut) != 0 || (matched != 0) != (cut < tn))
            bad++;
        gm_stop_filter_free(&f);
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(bad_utf8, 0);
}

/* ---- generate on a synthetic model ---- */

typedef struct gen_rec {
    int32_t ids[512];
    int n_ids;
    char text[8192];
    size_t n_text;
    int cancel_after;  /* on_token cancels after this many tokens (0: never) */
    int cancel_pieces; /* on_piece cancels after this many pieces (0: never) */
    int n_pieces;
    int bad_utf8;
} gen_rec;

static int rec_token(void *ud, int32_t id)
{
    gen_rec *r = ud;
    if (r->n_ids < 512)
        r->ids[r->n_ids] = id;
    r->n_ids++;
    return r->cancel_after && r->n_ids >= r->cancel_after;
}

static int rec_piece(void *ud, const char *s, size_t n)
{
    gen_rec *r = ud;
    CHECK(n > 0);
    /* every piece is valid UTF-8 on its own */
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t l = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (!l || i + l > n) {
            r->bad_utf8++;
            break;
        }
        for (size_t k = 1; k < l; k++)
            if (((unsigned char)s[i + k] & 0xc0) != 0x80)
                r->bad_utf8++;
        i += l;
    }
    if (r->n_text + n < sizeof r->text) {
        memcpy(r->text + r->n_text, s, n);
        r->n_text += n;
        r->text[r->n_text] = '\0';
    }
    r->n_pieces++;
    return r->cancel_pieces && r->n_pieces >= r->cancel_pieces;
}

static int32_t argmax(const float *l, int32_t n)
{
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (l[i] > l[b])
            b = i;
    return b;
}

static void test_generate(void)
{
    gm_synth_config cfg;
    if (gm_synth_preset("test", &cfg) != 0) {
        CHECK(!"no test preset");
        return;
    }
    char path[] = "/tmp/gemmad-test-sampler-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    close(fd);
    gm_error err = {0};
    cfg.n_threads = 1;
    int rc = gm_synth_write(&cfg, path, &err);
    CHECKF(rc == 0, "%s", err.msg);
    gm_model *model = rc == 0 ? gm_model_load(path, &err) : NULL;
    CHECKF(model != NULL, "%s", err.msg);
    if (!model) {
        unlink(path);
        return;
    }
    gm_tokenizer *tok = gm_tokenizer_load(model->gguf, &err);
    CHECKF(tok != NULL, "%s", err.msg);
    gm_context_params cp = {.n_ctx = 96, .n_batch = 16};
    gm_context *ctx = gm_context_new(model, &cp, &err);
    CHECKF(ctx != NULL, "%s", err.msg);
    if (!tok || !ctx)
        goto out;
    const int32_t nv = (int32_t)model->hp.n_vocab;

    /* a chat prompt (longer than the sliding window of 8) */
    gm_chat_part up[] = {{.type = GM_PART_TEXT, .text = "hello world, the model can help with this text"}};
    gm_chat_message msgs[] = {{GM_ROLE_USER, up, 1}};
    gm_chat_options opts = {.add_generation_prompt = true};
    gm_prompt prompt;
    gm_prompt_init(&prompt);
    CHECKF(gm_chat_build(tok, msgs, 1, &opts, &prompt, &err) == 0, "%s", err.msg);
    CHECK(prompt.n_positions > 8);

    /* reference: greedy by hand with the context API */
    int32_t ref[24];
    int n_ref = 0;
    {
        float *logits = malloc((size_t)nv * sizeof *logits);
        gm_context_clear(ctx);
        CHECK(gm_context_eval(ctx, prompt.spans, prompt.n_spans, GM_LOGITS_LAST, logits, &err) == 0);
        while (n_ref < 24) {
            int32_t id = argmax(logits, nv);
            ref[n_ref++] = id;
            if (gm_tokenizer_is_eog(tok, id))
                break;
            gm_span one = {GM_SPAN_TEXT, 1, &id, NULL};
            CHECK(gm_context_eval(ctx, &one, 1, GM_LOGITS_LAST, logits, &err) == 0);
        }
        free(logits);
    }
    int n_ref_text = n_ref;  /* tokens that produce text (the EOG does not) */
    if (n_ref && gm_tokenizer_is_eog(tok, ref[n_ref - 1]))
        n_ref_text--;
    printf("generate: reference greedy run has %d tokens%s\n", n_ref,
           n_ref_text < n_ref ? " (ends with EOG)" : "");

    gm_generate_params gp = {0};
    gp.sampling = gm_sampler_default_params();
    gp.sampling.temperature = 0.0f;
    gp.max_tokens = 24;
    gen_rec r1 = {.n_ids = 0};
    gm_generate_result res;
    gm_context_clear(ctx);
    rc = gm_generate(ctx, tok, &prompt, &gp, rec_piece, rec_token, &r1, &res, &err);
    CHECKF(rc == 0, "%s", err.msg);
    CHECK_EQ_INT(r1.n_ids, n_ref);
    CHECK(memcmp(r1.ids, ref, (size_t)n_ref * sizeof *ref) == 0);
    CHECK_EQ_INT(res.n_generated, n_ref);
    CHECK_EQ_INT(res.n_prompt, prompt.n_positions);
    CHECK_EQ_INT(res.n_prompt_reused, 0);
    CHECK(res.stop_reason == (n_ref_text < n_ref ? GM_STOP_EOG : GM_STOP_MAX_TOKENS));
    CHECK(res.prefill_seconds > 0 && res.decode_seconds >= 0);
    CHECK_EQ_INT(r1.bad_utf8, 0);
    /* the streamed text is the detokenized sequence */
    char *whole = gm_detokenize(tok, ref, (size_t)n_ref_text, false);
    CHECK(whole && strlen(whole) == r1.n_text && memcmp(whole, r1.text, r1.n_text) == 0);
    free(whole);
    /* the cache holds the prompt and every generated token but the last */
    CHECK_EQ_INT(gm_context_n_past(ctx), prompt.n_positions + n_ref - 1);

    /* the same request again with prefix reuse: same tokens, and the whole prompt but the
     * last position reused unless the sliding window forced a full re-evaluation */
    gp.reuse_prefix = true;
    gen_rec r2 = {.n_ids = 0};
    rc = gm_generate(ctx, tok, &prompt, &gp, rec_piece, rec_token, &r2, &res, &err);
    CHECKF(rc == 0, "%s", err.msg);
    CHECK(r2.n_ids == n_ref && memcmp(r2.ids, ref, (size_t)n_ref * sizeof *ref) == 0);
    CHECK(res.n_prompt_reused == prompt.n_positions - 1 || res.n_prompt_reused == 0);
    printf("generate: reuse kept %d of %d prompt positions\n", res.n_prompt_reused, prompt.n_positions);
    /* a follow-up turn extends what the cache holds: all of it is reused, and the result
     * equals a run from scratch */
    {
        gp.max_tokens = 4;
        gp.reuse_prefix = false;
        gen_rec t1 = {.n_ids = 0};
        CHECK(gm_generate(ctx, tok, &prompt, &gp, NULL, rec_token, &t1, &res, &err) == 0);
        int32_t n_cached = gm_context_n_past(ctx);
        gm_prompt p2;
        gm_prompt_init(&p2);
        CHECK(gm_prompt_add_ids(&p2, prompt.ids.ids, prompt.ids.n, &err) == 0);
        CHECK(gm_prompt_add_ids(&p2, t1.ids, (size_t)t1.n_ids, &err) == 0);
        CHECK(gm_prompt_add_text(&p2, tok, "<turn|>\n<|turn>user\nand the world?<turn|>\n<|turn>model\n", true,
                                 &err) == 0);
        gm_prompt_finish(&p2);
        gp.max_tokens = 8;
        gp.reuse_prefix = true;
        gen_rec t2 = {.n_ids = 0}, t3 = {.n_ids = 0};
        CHECK(gm_generate(ctx, tok, &p2, &gp, NULL, rec_token, &t2, &res, &err) == 0);
        CHECK_EQ_INT(res.n_prompt_reused, n_cached);
        CHECK_EQ_INT(res.n_prompt, p2.n_positions);
        gp.reuse_prefix = false;
        CHECK(gm_generate(ctx, tok, &p2, &gp, NULL, rec_token, &t3, &res, &err) == 0);
        CHECK_EQ_INT(res.n_prompt_reused, 0);
        CHECK(t2.n_ids == t3.n_ids && memcmp(t2.ids, t3.ids, (size_t)t2.n_ids * sizeof *t2.ids) == 0);
        gm_prompt_free(&p2);
        gp.max_tokens = 24;
    }

    /* a dirty cache without reuse is cleared first */
    gp.reuse_prefix = false;
    gen_rec r3 = {.n_ids = 0};
    rc = gm_generate(ctx, tok, &prompt, &gp, NULL, rec_token, &r3, &res, &err);
    CHECK(rc == 0 && r3.n_ids == n_ref && memcmp(r3.ids, ref, (size_t)n_ref * sizeof *ref) == 0);

    /* max tokens */
    gp.max_tokens = 3;
    gen_rec r4 = {.n_ids = 0};
    rc = gm_generate(ctx, tok, &prompt, &gp, rec_piece, rec_token, &r4, &res, &err);
    CHECK(rc == 0);
    if (n_ref_text >= 3) {
        CHECK(res.stop_reason == GM_STOP_MAX_TOKENS && res.n_generated == 3);
        CHECK(memcmp(r4.ids, ref, 3 * sizeof *ref) == 0);
    }

    /* cancellation from on_token and from on_piece */
    gp.max_tokens = 24;
    gen_rec r5 = {.cancel_after = 2};
    rc = gm_generate(ctx, tok, &prompt, &gp, rec_piece, rec_token, &r5, &res, &err);
    CHECK(rc == 0);
    if (n_ref >= 2)
        CHECK(res.stop_reason == GM_STOP_CANCELLED && res.n_generated == 2);
    gen_rec r6 = {.cancel_pieces = 1};
    rc = gm_generate(ctx, tok, &prompt, &gp, rec_piece, rec_token, &r6, &res, &err);
    CHECK(rc == 0);
    if (r1.n_pieces >= 1)
        CHECK(res.stop_reason == GM_STOP_CANCELLED && r6.n_pieces == 1);

    /* a stop string taken from the middle of the greedy text */
    if (r1.n_text >= 6) {
        char stop[4];
        size_t at = r1.n_text / 2;
        while (at > 0 && ((unsigned char)r1.text[at] & 0xc0) == 0x80)
            at--;
        memcpy(stop, r1.text + at, 1);
        stop[1] = '\0';
        const char *first = strstr(r1.text, stop);
        const char *stops[] = {stop};
        gp.stop_strings = stops;
        gp.n_stop_strings = 1;
        gen_rec r7 = {.n_ids = 0};
        rc = gm_generate(ctx, tok, &prompt, &gp, rec_piece, rec_token, &r7, &res, &err);
        CHECK(rc == 0);
        CHECK_EQ_INT(res.stop_reason, GM_STOP_STRING);
        CHECK(r7.n_text == (size_t)(first - r1.text) && memcmp(r7.text, r1.text, r7.n_text) == 0);
        gp.stop_strings = NULL;
        gp.n_stop_strings = 0;
    }

    /* the context fills up: room for 3 more positions after the prompt */
    {
        gm_context_params cp2 = {.n_ctx = prompt.n_positions + 3, .n_batch = 16};
        gm_context *small = gm_context_new(model, &cp2, &err);
        CHECKF(small != NULL, "%s", err.msg);
        if (small) {
            gp.max_tokens = 0;
            gen_rec r8 = {.n_ids = 0};
            rc = gm_generate(small, tok, &prompt, &gp, rec_piece, rec_token, &r8, &res, &err);
            CHECK(rc == 0);
            if (n_ref_text >= 4)
                CHECK(res.stop_reason == GM_STOP_CONTEXT_FULL && res.n_generated == 4);
            CHECK_EQ_INT(gm_context_n_past(small), prompt.n_positions + res.n_generated - 1);
            /* a prompt longer than the context is an error, not a crash */
            gm_context_params cp3 = {.n_ctx = prompt.n_positions - 1, .n_batch = 16};
            gm_context *tiny = gm_context_new(model, &cp3, &err);
            if (tiny) {
                rc = gm_generate(tiny, tok, &prompt, &gp, rec_piece, rec_token, &r8, &res, &err);
                CHECK(rc == GM_ERR_RANGE && res.stop_reason == GM_STOP_ERROR);
                gm_context_free(tiny);
            }
            gm_context_free(small);
        }
    }

    /* sampling with a seed is reproducible */
    gp.sampling = gm_sampler_default_params();
    gp.sampling.seed = 77;
    gp.max_tokens = 12;
    gen_rec s1 = {.n_ids = 0}, s2 = {.n_ids = 0};
    CHECK(gm_generate(ctx, tok, &prompt, &gp, NULL, rec_token, &s1, &res, &err) == 0);
    CHECK(gm_generate(ctx, tok, &prompt, &gp, NULL, rec_token, &s2, &res, &err) == 0);
    CHECK(s1.n_ids == s2.n_ids && memcmp(s1.ids, s2.ids, (size_t)s1.n_ids * sizeof *s1.ids) == 0);

    /* an empty prompt is refused */
    gm_prompt empty;
    gm_prompt_init(&empty);
    CHECK(gm_generate(ctx, tok, &empty, &gp, NULL, NULL, NULL, &res, &err) == GM_ERR_INVALID);

    gm_prompt_free(&prompt);
out:
    gm_context_free(ctx);
    gm_tokenizer_free(tok);
    gm_model_free(model);
    unlink(path);
}

int main(void)
{
    test_greedy();
    test_distributions();
    test_determinism();
    test_penalties();
    test_large_vocab();
    test_stop_strings();
    test_generate();
    CHECK_EQ_INT(strcmp(gm_stop_reason_name(GM_STOP_STRING), "stop_string"), 0);
    return gm_test_finish();
}
