/* audio-dump — writes what gemmad feeds the feature extractor for a sound file: mono
 * float samples at 16 kHz (decode → downmix → libsoxr HQ), as raw little-endian f32.
 * Used to give transformers' feature extractor exactly gemmad's samples when making
 * conformance references (tests/conformance/generate_audio_recordings.py).
 *
 * usage: audio-dump IN OUT.f32      prints "<rate> <channels> <format> <samples>" */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/audio-decode.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: audio-dump IN OUT.f32\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    size_t cap = 1 << 20, len = 0;
    uint8_t *data = malloc(cap);
    size_t got;
    while (data && (got = fread(data + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            uint8_t *bigger = realloc(data, cap *= 2);
            if (!bigger) {
                free(data);
                data = NULL;
            } else {
                data = bigger;
            }
        }
    }
    fclose(f);
    if (!data)
        return 1;
    gm_audio_pcm pcm;
    gm_error err = { 0 };
    int rc = gm_audio_load_16k(data, len, NULL, &pcm, NULL, &err);
    free(data);
    if (rc != GM_OK) {
        fprintf(stderr, "%s: %s\n", argv[1], err.msg);
        return 1;
    }
    FILE *o = fopen(argv[2], "wb");
    int ok = o != NULL;
    for (size_t i = 0; ok && i < pcm.n_samples; i++) {
        uint32_t u;
        memcpy(&u, &pcm.samples[i], 4);
        unsigned char b[4] = { (unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16),
                               (unsigned char)(u >> 24) };
        ok = fwrite(b, 1, 4, o) == 4;
    }
    if (o && fclose(o) != 0)
        ok = 0;
    if (!ok) {
        perror(argv[2]);
        gm_audio_pcm_free(&pcm);
        return 1;
    }
    printf("%u %u %s %zu\n", pcm.rate, pcm.channels, pcm.format, pcm.n_samples);
    gm_audio_pcm_free(&pcm);
    return 0;
}
