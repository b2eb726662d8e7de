/* fuzz-audio.c — libFuzzer target for sound decoding (libsndfile through virtual I/O,
 * downmix, libsoxr resampling to 16 kHz): gm_audio_load_16k on the input bytes.
 *
 * Tight limits (2 s, 8 channels, 4–192 kHz) keep each run short, so the fuzzer spends its
 * time in the parsers. A success must give finite samples, as many as the rule
 * round(frames × 16000 / rate) allows for at most 2 s, and a source within the limits; a
 * failure must say "audio: …" and leave no samples. Anything else aborts so the fuzzer
 * saves the input. No LeakSanitizer suppressions: a leak on any input fails the run (the
 * libsndfile 1.2 Vorbis-header leak is kept away by audio-decode.c's own header check). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/audio-decode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(c) do { if (!(c)) { fprintf(stderr, "fuzz-audio: %s failed\n", #c); abort(); } } while (0)

static volatile float sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gm_audio_limits lim = { .max_seconds = 2.0, .max_channels = 8,
                            .min_rate = 4000, .max_rate = 192000 };
    gm_audio_pcm pcm;
    gm_audio_timing t;
    gm_error err = { 0 };
    int rc = gm_audio_load_16k(data, size, &lim, &pcm, &t, &err);
    if (rc == GM_OK) {
        FUZZ_ASSERT(pcm.samples != NULL && pcm.n_samples > 0);
        FUZZ_ASSERT(pcm.channels >= 1 && pcm.channels <= lim.max_channels);
        FUZZ_ASSERT(pcm.rate >= lim.min_rate && pcm.rate <= lim.max_rate);
        /* At most 2 s of source frames, resampled with rounding: ≤ 32000 samples. */
        FUZZ_ASSERT(pcm.n_samples <= (size_t)(lim.max_seconds * GM_AUDIO_SAMPLE_RATE) + 1);
        FUZZ_ASSERT(pcm.format[0] != '\0' && memchr(pcm.format, '\0', sizeof pcm.format) != NULL);
        FUZZ_ASSERT(t.decode_s >= 0 && t.resample_s >= 0);
        float acc = 0;
        for (size_t i = 0; i < pcm.n_samples; i++) {
            FUZZ_ASSERT(isfinite(pcm.samples[i]));
            acc += pcm.samples[i];
        }
        sink = acc;
        gm_audio_pcm_free(&pcm);
        FUZZ_ASSERT(pcm.samples == NULL);
    } else {
        FUZZ_ASSERT(rc < 0 && pcm.samples == NULL && pcm.n_samples == 0);
        FUZZ_ASSERT(strncmp(err.msg, "audio: ", 7) == 0);
    }
    return 0;
}
