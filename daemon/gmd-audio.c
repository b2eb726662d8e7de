/* gmd-audio.c — an audio part's decode, features and encoding for the service. */
#include "gmd-audio.h"

#include <stdlib.h>
#include <string.h>

#include "audio/audio-decode.h"
#include "audio/audio-features.h"
#include "gmd-error.h"

/* GM_ERR_LIMIT: over the duration limit the configuration sets (the other bounds the
 * decoder enforces are about the file). Running out of memory is the service's problem,
 * not the file's. */
static void
set_audio_error (GError **error, int rc, const gm_error *err, const char *limit_name,
                 const char *field)
{
  if (rc == GM_ERR_LIMIT)
    gmd_set_field_error (error, GMD_ERROR_LIMIT_EXCEEDED, field, "%s (%s)", err->msg,
                         limit_name);
  else if (rc == GM_ERR_NOMEM)
    gmd_set_field_error (error, GMD_ERROR_INTERNAL, field, "%s", err->msg);
  else
    gmd_set_field_error (error, GMD_ERROR_UNSUPPORTED_MEDIA, field, "%s", err->msg);
}

GmdAudio *
gmd_audio_prepare (const guint8 *data, gsize len, double max_seconds, const char *limit_name,
                   const char *field, GError **error)
{
  gm_error err = { 0 };
  gm_audio_limits lim = {
    .max_seconds = max_seconds,
    .max_channels = GMD_AUDIO_MAX_CHANNELS,
    .min_rate = GMD_AUDIO_MIN_RATE,
    .max_rate = GMD_AUDIO_MAX_RATE,
  };
  gm_audio_pcm pcm = { 0 };

  int rc = gm_audio_load_16k (data, len, &lim, &pcm, NULL, &err);
  if (rc != GM_OK)
    {
      set_audio_error (error, rc, &err, limit_name, field);
      return NULL;
    }

  gm_audio_features features = { 0 };
  rc = gm_audio_featurize (pcm.samples, pcm.n_samples, &features, &err);
  GmdAudio *audio = NULL;
  if (rc != GM_OK)
    set_audio_error (error, rc, &err, limit_name, field);
  else
    {
      audio = g_new0 (GmdAudio, 1);
      audio->ref = 1;
      audio->seconds = (double) pcm.n_samples / GM_AUDIO_SAMPLE_RATE;
      audio->rate = pcm.rate;
      audio->channels = pcm.channels;
      audio->n_clips = (guint) features.n_clips;
      audio->clips = g_new0 (GmdAudioClip, features.n_clips);
      for (gsize i = 0; i < features.n_clips; i++)
        {
          GmdAudioClip *clip = &audio->clips[i];
          clip->n_frames = features.clips[i].n_frames;
          clip->n_soft_tokens = gm_audio_n_soft_tokens (clip->n_frames);
          clip->features = features.clips[i].values;   /* taken: freed with free() */
          features.clips[i].values = NULL;
        }
    }
  gm_audio_features_free (&features);
  gm_audio_pcm_free (&pcm);
  return audio;
}

guint32
gmd_audio_n_soft_tokens (const GmdAudio *audio)
{
  guint32 n = 0;
  for (guint i = 0; i < audio->n_clips; i++)
    n += audio->clips[i].n_soft_tokens;
  return n;
}

gboolean
gmd_audio_encode_clip (GmdAudio *audio, guint i, const gm_audio_model *encoder, gm_pool *pool,
                       GError **error)
{
  g_return_val_if_fail (i < audio->n_clips, FALSE);
  GmdAudioClip *clip = &audio->clips[i];
  g_return_val_if_fail (clip->embd == NULL && clip->features != NULL, FALSE);
  guint32 dim = gm_audio_model_projection_dim (encoder);
  float *out = g_try_malloc_n ((gsize) clip->n_soft_tokens * dim, sizeof (float));
  if (out == NULL)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_INTERNAL,
                   "out of memory for %u soft tokens of an audio clip", clip->n_soft_tokens);
      return FALSE;
    }
  gm_error err = { 0 };
  if (gm_audio_encode (encoder, pool, clip->features, clip->n_frames, out, &err) != GM_OK)
    {
      g_free (out);
      g_set_error (error, GMD_ERROR, GMD_ERROR_INTERNAL, "encoding audio clip %u: %s", i,
                   err.msg);
      return FALSE;
    }
  clip->embd = out;
  /* the features are no longer needed once the clip has its soft tokens */
  free (clip->features);
  clip->features = NULL;
  if (gmd_audio_is_encoded (audio))
    audio->n_embd = dim;
  return TRUE;
}

gboolean
gmd_audio_is_encoded (const GmdAudio *audio)
{
  for (guint i = 0; i < audio->n_clips; i++)
    if (audio->clips[i].embd == NULL)
      return FALSE;
  return TRUE;
}

GmdAudio *
gmd_audio_ref (GmdAudio *audio)
{
  g_atomic_int_inc (&audio->ref);
  return audio;
}

void
gmd_audio_unref (GmdAudio *audio)
{
  if (audio == NULL || !g_atomic_int_dec_and_test (&audio->ref))
    return;
  for (guint i = 0; i < audio->n_clips; i++)
    {
      free (audio->clips[i].features);
      g_free (audio->clips[i].embd);
    }
  g_free (audio->clips);
  g_free (audio);
}
