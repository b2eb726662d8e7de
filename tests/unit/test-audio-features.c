/* test-audio-features.c — the log-mel front end against Gemma4AudioFeatureExtractor of
 * transformers 5.17.0 (tests/conformance/audio-features/, see its README.md), the frame
 * count, the 30 s clip split and the refusals. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/audio-decode.h"
#include "audio/audio-features.h"
#include "test-util.h"

/* CONFORMANCE.md: log-mel features within 1e-4 abs of the extractor. The generator measured
 * transformers itself (float32 FFT) against a float64 FFT of the same frames at ≤ 3.6e-7
 * (meta.json), which is what gemmad computes, so a real bug shows far above this. */
#define TOL 1e-4

static char g_dir[2048];

static const char *fixture(const char *name)   /* name: under 300 bytes */
{
    static char buf[sizeof g_dir + 301];
    snprintf(buf, sizeof buf, "%s/%s", g_dir, name);
    return buf;
}

static uint32_t rd_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* 16 kHz mono PCM16 WAV → float samples as int16 / 32768 (the generator's formula). Walks
 * the RIFF chunks itself so this test does not depend on the sound decoder. */
static float *read_wav(const char *name, size_t *n)
{
    size_t len = 0;
    unsigned char *b = gm_test_read_file(fixture(name), &len);
    if (!b) {
        fprintf(stderr, "cannot read %s\n", fixture(name));
        return NULL;
    }
    float *out = NULL;
    int fmt_ok = 0;
    if (len < 12 || memcmp(b, "RIFF", 4) || memcmp(b + 8, "WAVE", 4))
        goto done;
    for (size_t off = 12; off + 8 <= len;) {
        uint32_t sz = rd_u32(b + off + 4);
        const unsigned char *body = b + off + 8;
        if (sz > len - off - 8)
            break;
        if (!memcmp(b + off, "fmt ", 4) && sz >= 16) {
            unsigned fmt = body[0] | body[1] << 8, ch = body[2] | body[3] << 8;
            unsigned bits = body[14] | body[15] << 8;
            fmt_ok = fmt == 1 && ch == 1 && rd_u32(body + 4) == 16000 && bits == 16;
        } else if (!memcmp(b + off, "data", 4) && fmt_ok) {
            *n = sz / 2;
            out = malloc((*n ? *n : 1) * sizeof *out);
            for (size_t i = 0; out && i < *n; i++)
                out[i] = (float)(int16_t)(body[2 * i] | body[2 * i + 1] << 8) / 32768.0f;
            break;
        }
        off += 8 + (size_t)sz + (sz & 1);
    }
done:
    if (!out)
        fprintf(stderr, "%s: not a 16 kHz mono PCM16 WAV\n", name);
    free(b);
    return out;
}

/* The samples of a case: the WAV, tiled (repeated) to `tile` samples if tile > 0. */
static float *case_samples(const char *wav, size_t tile, size_t *n)
{
    size_t m = 0;
    float *s = read_wav(wav, &m);
    if (!s || !tile || !m) {
        *n = m;
        return s;
    }
    float *t = malloc(tile * sizeof *t);
    for (size_t i = 0; t && i < tile; i++)
        t[i] = s[i % m];
    free(s);
    *n = tile;
    return t;
}

static int sparse_frame(uint32_t f, uint32_t frames)
{
    return f % 50 == 0 || f + 24 >= frames;   /* cases.txt: f % 50 == 0 or f >= frames − 24 */
}

/* Compares gemmad's frames with a case's reference file; returns the max abs diff. */
static double compare_case(const char *name, const char *stored, const gm_audio_clip_features *c)
{
    char fn[300];
    snprintf(fn, sizeof fn, "%s.f32", name);
    size_t len = 0;
    float *ref = gm_test_read_file(fixture(fn), &len);
    CHECKF(ref != NULL, "%s missing", fn);
    if (!ref)
        return INFINITY;
    int sparse = !strcmp(stored, "sparse");
    size_t want = 0;
    for (uint32_t f = 0; f < c->n_frames; f++)
        want += !sparse || sparse_frame(f, c->n_frames);
    CHECKF(len == want * GM_AUDIO_MEL_BINS * sizeof(float), "%s: %zu bytes, want %zu frames",
           fn, len, want);
    double maxd = 0;
    size_t r = 0;
    for (uint32_t f = 0; f < c->n_frames && (r + 1) * GM_AUDIO_MEL_BINS * 4 <= len; f++) {
        if (sparse && !sparse_frame(f, c->n_frames))
            continue;
        for (int j = 0; j < GM_AUDIO_MEL_BINS; j++) {
            double d = fabs((double)c->values[(size_t)f * GM_AUDIO_MEL_BINS + j] -
                            (double)ref[r * GM_AUDIO_MEL_BINS + j]);
            if (!(d <= maxd))
                maxd = d;   /* NaN-safe: a NaN makes maxd NaN and fails below */
        }
        r++;
    }
    free(ref);
    if (sparse) {   /* every frame through its sum */
        snprintf(fn, sizeof fn, "%s-sums.f64", name);
        double *sums = gm_test_read_file(fixture(fn), &len);
        CHECKF(sums && len == (size_t)c->n_frames * sizeof(double), "%s", fn);
        double maxs = 0;
        for (uint32_t f = 0; sums && f < c->n_frames; f++) {
            double s = 0;
            for (int j = 0; j < GM_AUDIO_MEL_BINS; j++)
                s += c->values[(size_t)f * GM_AUDIO_MEL_BINS + j];
            double d = fabs(s - sums[f]);
            if (!(d <= maxs))
                maxs = d;
        }
        CHECKF(maxs <= GM_AUDIO_MEL_BINS * TOL, "%s: frame sums differ by %.3g", name, maxs);
        printf("  %-11s frame sums: max abs diff %.3g\n", name, maxs);
        free(sums);
    }
    return maxd;
}

/* The clip of every case; the long ones also go through gm_audio_featurize. */
static void test_conformance(void)
{
    size_t len = 0;
    char *txt = gm_test_read_file(fixture("cases.txt"), &len);
    CHECKF(txt != NULL, "%s missing", fixture("cases.txt"));
    if (!txt)
        return;
    int n_cases = 0;
    double worst = 0;
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        char name[64], wav[64], stored[16];
        size_t tile, start, count, samples;
        unsigned valid, returned;
        if (sscanf(line, "%63s %63s %zu %zu %zu %zu %u %u %15s", name, wav, &tile, &start,
                   &count, &samples, &valid, &returned, stored) != 9) {
            CHECKF(0, "bad cases.txt line: %s", line);
            continue;
        }
        n_cases++;
        size_t n = 0;
        float *s = case_samples(wav, tile, &n);
        CHECKF(s && start + count <= n && count == samples, "%s: samples", name);
        if (!s || start + count > n) {
            free(s);
            continue;
        }
        CHECK_EQ_INT(gm_audio_n_frames(count), valid);
        gm_audio_clip_features c = { 7, (float *)s };
        gm_error err = { 0 };
        int rc = gm_audio_clip_featurize(s + start, count, &c, &err);
        if (valid == 0) {
            /* transformers returns one frame, masked invalid: no frame for the encoder. */
            CHECKF(rc == GM_ERR_INVALID && strstr(err.msg, "too short"), "%s: rc %d %s",
                   name, rc, err.msg);
            CHECK(c.n_frames == 0 && c.values == NULL);
        } else {
            CHECKF(rc == GM_OK, "%s: %s", name, err.msg);
            CHECK_EQ_INT(c.n_frames, valid);
            double d = rc == GM_OK ? compare_case(name, stored, &c) : INFINITY;
            CHECKF(d <= TOL, "%s: max abs diff %.3g", name, d);
            printf("  %-11s %6zu samples %5u frames (transformers returns %u): max abs diff "
                   "%.3g\n", name, count, c.n_frames, returned, d);
            if (!(d <= worst))
                worst = d;
        }
        free(c.values);
        free(s);
    }
    free(txt);
    CHECK_EQ_INT(n_cases, 10);
    printf("conformance: %d cases, worst max abs diff %.3g (tolerance %.0e)\n", n_cases,
           worst, TOL);
}

/* 33 s of tiled speech: clip 0 = transformers on the whole (it truncates) = samples[0:480000],
 * clip 1 = samples[480000:]; each is what gm_audio_clip_featurize gives for its slice. */
static void test_long_split(void)
{
    size_t n = 0;
    float *s = case_samples("speech.wav", 528000, &n);
    CHECK(s && n == 528000);
    if (!s)
        return;
    gm_audio_features f;
    gm_error err = { 0 };
    int rc = gm_audio_featurize(s, n, &f, &err);
    CHECKF(rc == GM_OK, "%s", err.msg);
    if (rc == GM_OK) {
        CHECK_EQ_INT(f.n_clips, 2);
        CHECK_EQ_INT(f.clips[0].n_frames, 2999);
        CHECK_EQ_INT(f.clips[1].n_frames, 299);
        double d0 = compare_case("long-clip0", "sparse", &f.clips[0]);
        double d1 = compare_case("long-clip1", "all", &f.clips[1]);
        CHECKF(d0 <= TOL && d1 <= TOL, "long split: %.3g %.3g", d0, d1);
        printf("long 33 s split: clip 0 %u frames (diff %.3g), clip 1 %u frames (diff %.3g)\n",
               f.clips[0].n_frames, d0, f.clips[1].n_frames, d1);
        gm_audio_clip_features c;
        CHECK(gm_audio_clip_featurize(s + 480000, 48000, &c, &err) == GM_OK);
        CHECK(c.n_frames == f.clips[1].n_frames &&
              !memcmp(c.values, f.clips[1].values, (size_t)c.n_frames * 128 * sizeof(float)));
        free(c.values);
    }
    gm_audio_features_free(&f);
    CHECK(f.n_clips == 0 && f.clips == NULL);
    free(s);
}

/* Frame count: the number of f with 160·f + 160 ≤ n − 1 (the last sample of the 321-sample
 * window after 160 zeros in front must be real), counted directly. */
static void test_frame_count(void)
{
    int bad = 0;
    for (size_t n = 0; n < 5000; n++) {
        uint32_t want = 0;
        for (uint32_t f = 0; (size_t)f * 160 + 160 < n; f++)
            want++;
        bad += gm_audio_n_frames(n) != want;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(gm_audio_n_frames(160), 0);
    CHECK_EQ_INT(gm_audio_n_frames(161), 1);
    CHECK_EQ_INT(gm_audio_n_frames(320), 1);
    CHECK_EQ_INT(gm_audio_n_frames(321), 2);
    CHECK_EQ_INT(gm_audio_n_frames(16000), 99);   /* 1 s: centres 0 … 15680 (15840 needs 16000) */
    CHECK_EQ_INT(gm_audio_n_frames(GM_AUDIO_CLIP_SAMPLES), 2999);
}

static float synth(size_t i)
{
    uint32_t h = (uint32_t)i * 2654435761u;
    h ^= h >> 15;
    return 0.3f * (float)sin(0.037 * (double)i) + (float)(h & 1023) / 16384.0f - 0.03f;
}

/* Clip boundaries with a tail too short for a frame, and exactly 30 s. */
static void test_split_edges(void)
{
    const size_t n = GM_AUDIO_CLIP_SAMPLES + 161;
    float *s = malloc(n * sizeof *s);
    for (size_t i = 0; i < n; i++)
        s[i] = synth(i);
    static const struct { size_t n; size_t clips; uint32_t last; } cases[] = {
        { GM_AUDIO_CLIP_SAMPLES + 161, 2, 1 },
        { GM_AUDIO_CLIP_SAMPLES + 160, 1, 2999 },   /* 160-sample tail: no frame, dropped */
        { GM_AUDIO_CLIP_SAMPLES + 1, 1, 2999 },
        { GM_AUDIO_CLIP_SAMPLES, 1, 2999 },
        { 161, 1, 1 },
    };
    gm_audio_features f;
    gm_error err = { 0 };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int rc = gm_audio_featurize(s, cases[k].n, &f, &err);
        CHECKF(rc == GM_OK, "%zu: %s", cases[k].n, err.msg);
        if (rc != GM_OK)
            continue;
        CHECKF(f.n_clips == cases[k].clips && f.clips[f.n_clips - 1].n_frames == cases[k].last,
               "n %zu: %zu clips, last %u frames", cases[k].n, f.n_clips,
               f.clips[f.n_clips - 1].n_frames);
        if (k == 0) {   /* the 1-frame tail clip is that slice featurised alone */
            gm_audio_clip_features c;
            CHECK(gm_audio_clip_featurize(s + GM_AUDIO_CLIP_SAMPLES, 161, &c, &err) == GM_OK);
            CHECK(!memcmp(c.values, f.clips[1].values, 128 * sizeof(float)));
            free(c.values);
        }
        gm_audio_features_free(&f);
    }
    free(s);
}

static void test_errors(void)
{
    float s[400];
    for (int i = 0; i < 400; i++)
        s[i] = synth((size_t)i);
    gm_audio_features f = { 5, (gm_audio_clip_features *)s };
    gm_audio_clip_features c = { 5, s };
    gm_error err = { 0 };
    CHECK(gm_audio_featurize(s, 0, &f, &err) == GM_ERR_INVALID && strstr(err.msg, "too short"));
    CHECK(f.n_clips == 0 && f.clips == NULL);
    CHECK(gm_audio_featurize(s, 160, &f, &err) == GM_ERR_INVALID && strstr(err.msg, "160"));
    CHECK(gm_audio_clip_featurize(s, 160, &c, &err) == GM_ERR_INVALID);
    CHECK(c.n_frames == 0 && c.values == NULL);
    CHECK(gm_audio_clip_featurize(s, GM_AUDIO_CLIP_SAMPLES + 1, &c, &err) == GM_ERR_INVALID &&
          strstr(err.msg, "480000"));
    CHECK(gm_audio_clip_featurize(NULL, 300, &c, &err) == GM_ERR_INVALID);
    CHECK(gm_audio_clip_featurize(s, 300, NULL, &err) == GM_ERR_INVALID);
    s[250] = NAN;
    CHECK(gm_audio_featurize(s, 400, &f, &err) == GM_ERR_INVALID && strstr(err.msg, "250"));
    s[250] = INFINITY;
    CHECK(gm_audio_clip_featurize(s, 400, &c, &err) == GM_ERR_INVALID);
    CHECK(gm_audio_featurize(s, 400, &f, NULL) == GM_ERR_INVALID);   /* err may be NULL */
    gm_audio_features_free(&f);   /* an emptied result and NULL are fine */
    gm_audio_features_free(NULL);
}

/* Properties that need no reference: silence is the floor ln(1e-3) everywhere; mel filter 0
 * (0–27.7 Hz) has no FFT bin inside it, so it stays at the floor for any sound; a frame
 * depends only on its own samples (no state between frames or calls). */
static void test_properties(void)
{
    const float floor_v = (float)log(1e-3);
    float z[1000] = { 0 };
    gm_audio_clip_features c;
    gm_error err = { 0 };
    CHECK(gm_audio_clip_featurize(z, 1000, &c, &err) == GM_OK);
    int bad = 0;
    for (size_t i = 0; i < (size_t)c.n_frames * 128; i++)
        bad += c.values[i] != floor_v;
    CHECK_EQ_INT(bad, 0);
    free(c.values);

    float s[3000];
    for (int i = 0; i < 3000; i++)
        s[i] = synth((size_t)i);
    gm_audio_clip_features a, b;
    CHECK(gm_audio_clip_featurize(s, 3000, &a, &err) == GM_OK);
    bad = 0;
    for (uint32_t f = 0; f < a.n_frames; f++)
        bad += a.values[(size_t)f * 128] != floor_v;
    CHECK_EQ_INT(bad, 0);
    /* Frame g of the slice from sample 1600 covers the slice's samples 160·g − 160 …, i.e.
     * frame g + 10 of the whole, once it no longer reaches before the slice (g ≥ 1). */
    CHECK(gm_audio_clip_featurize(s + 1600, 1400, &b, &err) == GM_OK);
    CHECK(b.n_frames == 8 && a.n_frames == 18);
    CHECK(!memcmp(b.values + 128, a.values + 11 * 128, 7 * 128 * sizeof(float)));
    free(a.values);
    free(b.values);
}

struct thread_arg {
    const float *s;
    size_t n;
    gm_audio_clip_features c;
    int rc;
};

static void *thread_main(void *p)
{
    struct thread_arg *a = p;
    a->rc = gm_audio_clip_featurize(a->s, a->n, &a->c, NULL);
    return NULL;
}

/* The first calls race on the table initialisation: both must see the same tables. */
static void test_threads(void)
{
    enum { N = 8000 };
    float *s = malloc(N * sizeof *s);
    for (size_t i = 0; i < N; i++)
        s[i] = synth(i);
    struct thread_arg a[2] = { { s, N, { 0, NULL }, -1 }, { s, N, { 0, NULL }, -1 } };
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, thread_main, &a[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK(a[0].rc == GM_OK && a[1].rc == GM_OK && a[0].c.n_frames == a[1].c.n_frames);
    CHECK(a[0].c.values && a[1].c.values &&
          !memcmp(a[0].c.values, a[1].c.values, (size_t)a[0].c.n_frames * 128 * sizeof(float)));
    free(a[0].c.values);
    free(a[1].c.values);
    free(s);
}

/* Real recordings (8, 16, 44.1, 48 kHz; mono and stereo; WAV, FLAC, Ogg Vorbis/Opus, MP3)
 * through gemmad's decoder and resampler, then the front end, against transformers'
 * extractor on the very samples gemmad produced (audio-recordings/, made with
 * tests/tools/audio-dump and generate_audio_recordings.py). The samples' Σx and Σx² say
 * the decode and resample still give what the reference saw; the features must then agree
 * as closely as for the exact 16 kHz WAVs. */
static void test_recordings(void)
{
    const char *cdir = getenv("GEMMAD_CONFORMANCE_DIR");
    const char *ddir = getenv("GEMMAD_TEST_DATA");
    char path[4096];
    snprintf(path, sizeof path, "%s/audio-recordings/cases.txt", cdir ? cdir : "tests/conformance");
    FILE *f = fopen(path, "r");
    CHECKF(f != NULL, "cannot open %s", path);
    if (!f)
        return;
    char line[1024];
    int cases = 0;
    while (fgets(line, sizeof line, f)) {
        char name[256], file[256];
        unsigned rate, ch, frames;
        size_t n;
        double s1, s2;
        if (line[0] == '#' || sscanf(line, "%255s %255s %u %u %zu %u %lf %lf", name, file, &rate, &ch,
                                     &n, &frames, &s1, &s2) != 8)
            continue;
        cases++;
        snprintf(path, sizeof path, "%s/audio/%s", ddir ? ddir : "tests/data", file);
        size_t len = 0;
        uint8_t *data = gm_test_read_file(path, &len);
        CHECKF(data != NULL, "cannot read %s", path);
        if (!data)
            continue;
        gm_audio_pcm pcm;
        gm_error err = { 0 };
        int rc = gm_audio_load_16k(data, len, NULL, &pcm, NULL, &err);
        free(data);
        CHECKF(rc == GM_OK, "%s: %s", file, err.msg);
        if (rc != GM_OK)
            continue;
        CHECKF(pcm.rate == rate && pcm.channels == ch && pcm.n_samples == n,
               "%s: %u Hz %u ch %zu samples, reference %u Hz %u ch %zu", file, pcm.rate,
               pcm.channels, pcm.n_samples, rate, ch, n);
        double t1 = 0, t2 = 0;
        for (size_t i = 0; i < pcm.n_samples; i++) {
            t1 += pcm.samples[i];
            t2 += (double)pcm.samples[i] * pcm.samples[i];
        }
        CHECKF(fabs(t1 - s1) <= 1e-3 && fabs(t2 - s2) <= 1e-6 * s2 + 1e-6,
               "%s: samples differ from the reference's (sum %.9g vs %.9g, sum of squares %.9g vs "
               "%.9g)", file, t1, s1, t2, s2);

        gm_audio_clip_features cf = { 0 };
        rc = pcm.n_samples == n ? gm_audio_clip_featurize(pcm.samples, pcm.n_samples, &cf, &err)
                                : GM_ERR_INVALID;
        gm_audio_pcm_free(&pcm);
        CHECKF(rc == GM_OK, "%s: %s", file, err.msg);
        if (rc != GM_OK)
            continue;
        CHECK_EQ_INT(cf.n_frames, frames);
        size_t slen = 0, sumlen = 0;
        snprintf(path, sizeof path, "%s/audio-recordings/%s-sparse.f32", cdir ? cdir : "tests/conformance", name);
        float *sparse = gm_test_read_file(path, &slen);
        snprintf(path, sizeof path, "%s/audio-recordings/%s-sums.f64", cdir ? cdir : "tests/conformance", name);
        double *sums = gm_test_read_file(path, &sumlen);
        size_t n_sparse = (frames + 7) / 8;
        CHECKF(sparse && slen == n_sparse * 128 * sizeof(float) && sums &&
                   sumlen == (size_t)frames * sizeof(double), "%s: reference files", name);
        if (cf.n_frames == frames && sparse && sums && slen == n_sparse * 128 * sizeof(float) &&
            sumlen == (size_t)frames * sizeof(double)) {
            double dmax = 0, smax = 0;
            for (size_t k = 0; k < n_sparse; k++)
                for (int b = 0; b < 128; b++) {
                    double d = fabs((double)cf.values[k * 8 * 128 + b] - sparse[k * 128 + b]);
                    dmax = d > dmax ? d : dmax;
                }
            for (unsigned fr = 0; fr < frames; fr++) {
                double t = 0;
                for (int b = 0; b < 128; b++)
                    t += cf.values[(size_t)fr * 128 + b];
                double d = fabs(t - sums[fr]);
                smax = d > smax ? d : smax;
            }
            printf("  %-28s %5u Hz %u ch: %u frames, max |d| %.2e (every 8th frame), frame sums "
                   "max |d| %.2e\n", name, rate, ch, frames, dmax, smax);
            CHECKF(dmax <= 1e-4, "%s: log-mel max |d| %.3e > 1e-4", name, dmax);
            CHECKF(smax <= 128 * 1e-4, "%s: frame-sum max |d| %.3e", name, smax);
        }
        free(sparse);
        free(sums);
        free(cf.values);
    }
    fclose(f);
    CHECKF(cases >= 8, "only %d recordings in cases.txt", cases);
}

int main(void)
{
    const char *dir = getenv("GEMMAD_CONFORMANCE_DIR");
    snprintf(g_dir, sizeof g_dir, "%s/audio-features", dir ? dir : "tests/conformance");
    test_threads();   /* first: the tables are not built yet */
    test_frame_count();
    test_errors();
    test_properties();
    test_conformance();
    test_long_split();
    test_split_edges();
    test_recordings();
    return gm_test_finish();
}
