/* audio-features.c — Gemma4AudioFeatureExtractor of transformers 5.17.0 (gemma4-model.md
 * §5.1), checked against feature_extraction_gemma4.py of that release.
 *
 * What the reference does for one clip (a single-element batch, its defaults):
 *   - samples become float32; truncation at 480 000; zero padding at the end to a multiple
 *     of 128 ("longest" with pad_to_multiple_of=128), with an attention mask;
 *   - 160 zeros in front (semicausal), windows of 321 samples with hop 160; without
 *     preemphasis the first 320 samples of each window are the frame;
 *   - frame · window in float32 (periodic Hann, computed in float64 by np.hanning(321)[:-1]
 *     and rounded to float32), rfft with n = 512 (numpy ≥ 2 does a float32 input in
 *     float32), |X|, matmul with the float64 HTK bank (so in float64), ln(mel + 1e-3),
 *     rounded to float32;
 *   - frame f is valid iff the 321st sample of its window (original index 160·f + 160) is
 *     real; invalid frames are returned as zeros.
 * The batch padding only adds invalid (zero) frames at the end: a valid frame reads real
 * samples only. gemmad returns the valid frames, V = ⌊(n − 161)/160⌋ + 1 for n ≥ 161 —
 * the frames the encoder sees (it masks the others) — and no padding frames.
 *
 * Here the spectrum is computed in double (our own radix-2 real FFT) from the same float32
 * windowed frames, so the only difference from the reference is its float32 FFT's rounding
 * (see tests/conformance/audio-features/README.md for the measured size). */
#include "audio/audio-features.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define FRAME_LEN 320
#define HOP 160
#define FFT_N 512
#define FFT_HALF (FFT_N / 2)          /* complex FFT size of the real-FFT packing */
#define N_BINS (FFT_N / 2 + 1)        /* 257 */
#define MEL_FLOOR 1e-3
#define MIN_SAMPLES (FRAME_LEN / 2 + 1)   /* 161: one 321-sample window after the left pad */

/* Tables built once: the float32 window, the twiddles, the bit reversal of 256 and the
 * mel bank stored per filter as its run of non-zero bins (float64, as the reference). */
static float g_window[FRAME_LEN];
static double g_cos[FFT_HALF], g_sin[FFT_HALF];   /* e^{-2πik/512} = cos − i·sin */
static uint16_t g_bitrev[FFT_HALF];
static double g_bank[GM_AUDIO_MEL_BINS][N_BINS];
static uint16_t g_bank_lo[GM_AUDIO_MEL_BINS], g_bank_hi[GM_AUDIO_MEL_BINS]; /* [lo, hi) */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static double hz_to_mel(double hz) { return 2595.0 * log10(1.0 + hz / 700.0); }
static double mel_to_hz(double mel) { return 700.0 * (pow(10.0, mel / 2595.0) - 1.0); }

static void init_tables(void)
{
    /* np.hanning(321): 0.5 + 0.5·cos(π·m/320) with m = −320, −318, …; drop the last. */
    for (int k = 0; k < FRAME_LEN; k++) {
        double m = (double)(2 * k - FRAME_LEN);
        g_window[k] = (float)(0.5 + 0.5 * cos(M_PI * m / (double)FRAME_LEN));
    }
    for (int k = 0; k < FFT_HALF; k++) {
        double a = 2.0 * M_PI * (double)k / (double)FFT_N;
        g_cos[k] = cos(a);
        g_sin[k] = sin(a);
        unsigned r = 0;
        for (int b = 0; b < 8; b++)
            r |= (((unsigned)k >> b) & 1u) << (7 - b);
        g_bitrev[k] = (uint16_t)r;
    }
    /* transformers' mel_filter_bank(257, 128, 0, 8000, 16000, norm=None, mel_scale="htk"):
     * 130 points np.linspace'd in mel (i·step, the last set to the end exactly), back to
     * Hz; bins np.linspace(0, 8000, 257); triangles max(0, min(down, up)). */
    double hz[GM_AUDIO_MEL_BINS + 2];
    const double mel_lo = hz_to_mel(0.0), mel_hi = hz_to_mel(8000.0);
    const double step = (mel_hi - mel_lo) / (double)(GM_AUDIO_MEL_BINS + 1);
    for (int i = 0; i < GM_AUDIO_MEL_BINS + 2; i++)
        hz[i] = mel_to_hz(i == GM_AUDIO_MEL_BINS + 1 ? mel_hi : (double)i * step + mel_lo);
    const double bin_step = 8000.0 / (double)(N_BINS - 1);
    for (int j = 0; j < GM_AUDIO_MEL_BINS; j++) {
        int lo = N_BINS, hi = 0;
        for (int k = 0; k < N_BINS; k++) {
            double f = (double)k * bin_step;
            double down = -(hz[j] - f) / (hz[j + 1] - hz[j]);
            double up = (hz[j + 2] - f) / (hz[j + 2] - hz[j + 1]);
            double w = down < up ? down : up;
            g_bank[j][k] = w > 0.0 ? w : 0.0;
            if (g_bank[j][k] != 0.0) {
                if (k < lo)
                    lo = k;
                hi = k + 1;
            }
        }
        g_bank_lo[j] = (uint16_t)(lo < hi ? lo : 0);
        g_bank_hi[j] = (uint16_t)(lo < hi ? hi : 0);
    }
}

/* In-place radix-2 complex FFT of FFT_HALF points (forward, e^{-i…}). */
static void fft_half(double *re, double *im)
{
    for (int k = 0; k < FFT_HALF; k++) {
        int r = g_bitrev[k];
        if (r > k) {
            double t = re[k]; re[k] = re[r]; re[r] = t;
            t = im[k]; im[k] = im[r]; im[r] = t;
        }
    }
    for (int len = 2; len <= FFT_HALF; len <<= 1) {
        int half = len >> 1, tstep = FFT_N / len;   /* W_len^j = W_512^{j·512/len} */
        for (int s = 0; s < FFT_HALF; s += len) {
            for (int j = 0; j < half; j++) {
                double wr = g_cos[j * tstep], wi = -g_sin[j * tstep];
                int a = s + j, b = a + half;
                double xr = re[b] * wr - im[b] * wi;
                double xi = re[b] * wi + im[b] * wr;
                re[b] = re[a] - xr;
                im[b] = im[a] - xi;
                re[a] += xr;
                im[a] += xi;
            }
        }
    }
}

/* |rfft(x, 512)| for a frame of FRAME_LEN values (the rest zero): the even/odd samples
 * packed as one 256-point complex FFT, then split into the 257 bins. */
static void rfft_mag(const float *x, double *mag)
{
    double re[FFT_HALF], im[FFT_HALF];
    for (int n = 0; n < FFT_HALF; n++) {
        re[n] = 2 * n < FRAME_LEN ? (double)x[2 * n] : 0.0;
        im[n] = 2 * n + 1 < FRAME_LEN ? (double)x[2 * n + 1] : 0.0;
    }
    fft_half(re, im);
    mag[0] = fabs(re[0] + im[0]);
    mag[FFT_HALF] = fabs(re[0] - im[0]);
    for (int k = 1; k < FFT_HALF; k++) {
        int c = FFT_HALF - k;
        /* E = (Z[k] + conj Z[c]) / 2, O = (Z[k] − conj Z[c]) / 2i, X = E + W^k·O. */
        double er = 0.5 * (re[k] + re[c]), ei = 0.5 * (im[k] - im[c]);
        double or_ = 0.5 * (im[k] + im[c]), oi = -0.5 * (re[k] - re[c]);
        double wr = g_cos[k], wi = -g_sin[k];
        double xr = er + or_ * wr - oi * wi;
        double xi = ei + or_ * wi + oi * wr;
        mag[k] = hypot(xr, xi);
    }
}

uint32_t gm_audio_n_frames(size_t n_samples)
{
    if (n_samples < MIN_SAMPLES)
        return 0;
    return (uint32_t)((n_samples - MIN_SAMPLES) / HOP + 1);
}

int gm_audio_clip_featurize(const float *samples, size_t n, gm_audio_clip_features *out,
                            gm_error *err)
{
    if (!out)
        return gm_set_error(err, GM_ERR_INVALID, "audio features: no output");
    out->n_frames = 0;
    out->values = NULL;
    if (n > GM_AUDIO_CLIP_SAMPLES)
        return gm_set_error(err, GM_ERR_INVALID,
                            "audio features: clip of %zu samples is longer than %d (30 s)", n,
                            GM_AUDIO_CLIP_SAMPLES);
    if (n < MIN_SAMPLES)
        return gm_set_error(err, GM_ERR_INVALID,
                            "audio: sound too short: %zu samples at 16 kHz, a feature frame "
                            "needs at least %d (10.06 ms)", n, MIN_SAMPLES);
    if (!samples)
        return gm_set_error(err, GM_ERR_INVALID, "audio features: no samples");
    /* NaN or infinity would flow through the FFT into every later layer. */
    for (size_t i = 0; i < n; i++)
        if (!isfinite(samples[i]))
            return gm_set_error(err, GM_ERR_INVALID,
                                "audio features: sample %zu of %zu is not finite", i, n);

    pthread_once(&g_once, init_tables);
    const uint32_t nf = gm_audio_n_frames(n);
    float *vals = malloc((size_t)nf * GM_AUDIO_MEL_BINS * sizeof *vals);
    if (!vals)
        return gm_set_error(err, GM_ERR_NOMEM, "audio features: %u frames: out of memory", nf);

    float frame[FRAME_LEN];
    double mag[N_BINS];
    for (uint32_t f = 0; f < nf; f++) {
        /* Frame f covers original samples 160·f − 160 … 160·f + 159 (zeros before 0); all
         * of them are real because f is valid. */
        for (int k = 0; k < FRAME_LEN; k++) {
            long long i = (long long)f * HOP - FRAME_LEN / 2 + k;
            float s = i >= 0 ? samples[i] : 0.0f;
            frame[k] = s * g_window[k];   /* float32 product, as numpy's */
        }
        rfft_mag(frame, mag);
        float *o = vals + (size_t)f * GM_AUDIO_MEL_BINS;
        for (int j = 0; j < GM_AUDIO_MEL_BINS; j++) {
            double acc = 0.0;
            for (int k = g_bank_lo[j]; k < g_bank_hi[j]; k++)
                acc += mag[k] * g_bank[j][k];
            o[j] = (float)log(acc + MEL_FLOOR);
        }
    }
    out->n_frames = nf;
    out->values = vals;
    return GM_OK;
}

int gm_audio_featurize(const float *samples, size_t n, gm_audio_features *out, gm_error *err)
{
    if (!out)
        return gm_set_error(err, GM_ERR_INVALID, "audio features: no output");
    out->n_clips = 0;
    out->clips = NULL;
    if (n < MIN_SAMPLES)
        return gm_set_error(err, GM_ERR_INVALID,
                            "audio: sound too short: %zu samples at 16 kHz, a feature frame "
                            "needs at least %d (10.06 ms)", n, MIN_SAMPLES);
    size_t n_clips = n / GM_AUDIO_CLIP_SAMPLES;
    size_t tail = n % GM_AUDIO_CLIP_SAMPLES;
    if (tail >= MIN_SAMPLES)
        n_clips++;   /* a shorter tail gives no frame: dropped (n ≥ 161 leaves a clip) */
    gm_audio_clip_features *clips = calloc(n_clips, sizeof *clips);
    if (!clips)
        return gm_set_error(err, GM_ERR_NOMEM, "audio features: %zu clips: out of memory",
                            n_clips);
    for (size_t c = 0; c < n_clips; c++) {
        size_t start = c * GM_AUDIO_CLIP_SAMPLES;
        size_t len = n - start < GM_AUDIO_CLIP_SAMPLES ? n - start : GM_AUDIO_CLIP_SAMPLES;
        int rc = gm_audio_clip_featurize(samples + start, len, &clips[c], err);
        if (rc != GM_OK) {
            gm_audio_features tmp = { c, clips };
            gm_audio_features_free(&tmp);
            if (n_clips > 1)
                gm_error_prefix(err, "audio clip %zu (from %.1f s): ", c,
                                (double)start / 16000.0);
            return rc;
        }
    }
    out->n_clips = n_clips;
    out->clips = clips;
    return GM_OK;
}

void gm_audio_features_free(gm_audio_features *f)
{
    if (!f)
        return;
    for (size_t c = 0; c < f->n_clips; c++)
        free(f->clips[c].values);
    free(f->clips);
    f->n_clips = 0;
    f->clips = NULL;
}
