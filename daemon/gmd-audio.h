/* gmd-audio.h — one audio part of a request on its way into the prompt: decoded,
 * resampled to 16 kHz and turned into log-mel features by a prompt worker, split into 30 s
 * clips (each its own audio block: begin marker, soft tokens, end marker), encoded clip
 * by clip by the engine thread, then kept by a session's history so its cache can be
 * rebuilt without the file.
 *
 * Refcounted with atomic counts. Each stage is done by one thread and published to the
 * next through the service's mailbox or the engine's queue, so no lock is needed. */
#pragma once

#include <glib.h>

#include "audio/audio-encoder.h"
#include "core/pool.h"

G_BEGIN_DECLS

/* Source bounds the service accepts (the decoder refuses others as unsupported): enough
 * for surround and studio rates, and they keep the decoded buffer of a
 * max_audio_seconds-long file at a sensible size. */
#define GMD_AUDIO_MAX_CHANNELS 32
#define GMD_AUDIO_MIN_RATE 4000
#define GMD_AUDIO_MAX_RATE 192000

typedef struct {
  guint32 n_frames;           /* log-mel frames (10 ms each) */
  guint32 n_soft_tokens;      /* positions of the clip's soft tokens in the prompt */
  float *features;            /* n_frames × 128 until encoded, then NULL */
  float *embd;                /* n_soft_tokens × n_embd once encoded, else NULL */
} GmdAudioClip;

typedef struct _GmdAudio GmdAudio;

struct _GmdAudio {
  gint ref;
  double seconds;             /* duration at 16 kHz */
  guint32 rate, channels;     /* of the file */
  guint n_clips;              /* 30 s clips, at least one */
  GmdAudioClip *clips;
  guint32 n_embd;             /* 0 until every clip is encoded */
};

/* Decodes data (any format libsndfile reads), mixes it to mono, resamples it to 16 kHz
 * and computes the log-mel features of each 30 s clip. max_seconds (> 0) caps the
 * duration. Errors name field: LIMIT_EXCEEDED for sound longer than max_seconds (the
 * message names limit_name), UNSUPPORTED_MEDIA for anything that does not decode or is
 * outside the bounds above, with the decoder's message ("audio: …"); INTERNAL when out
 * of memory. */
GmdAudio *gmd_audio_prepare (const guint8 *data, gsize len, double max_seconds,
                             const char *limit_name, const char *field, GError **error);

/* Soft tokens of all clips. */
guint32 gmd_audio_n_soft_tokens (const GmdAudio *audio);

/* Runs the audio encoder on clip i (pool may be NULL) and frees its features; the last
 * clip encoded sets n_embd. INTERNAL on failure. Call once per clip. */
gboolean gmd_audio_encode_clip (GmdAudio *audio, guint i, const gm_audio_model *encoder,
                                gm_pool *pool, GError **error);

/* TRUE when every clip has its soft tokens. */
gboolean gmd_audio_is_encoded (const GmdAudio *audio);

GmdAudio *gmd_audio_ref (GmdAudio *audio);
void gmd_audio_unref (GmdAudio *audio);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GmdAudio, gmd_audio_unref)

G_END_DECLS
