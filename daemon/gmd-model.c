/* gmd-model.c — loading a model bundle and describing it. */
#include "gmd-model.h"

#include <string.h>

#include "core/gguf.h"
#include "gmd-error.h"

/* The weight type holding most parameters of the layer matrices ("blk.*", 2-D): that is
 * what a user calls the quantization (embedding tables are often kept at another type). */
static char *
predominant_type (const gm_gguf *g)
{
  guint64 per_type[GM_TYPE_COUNT] = { 0 };
  guint64 total = 0;
  for (int pass = 0; pass < 2 && total == 0; pass++)
    for (guint64 i = 0; i < g->n_tensors; i++)
      {
        const gm_gguf_tensor *t = &g->tensors[i];
        if (t->n_dims != 2 || (guint) t->type >= GM_TYPE_COUNT)
          continue;
        if (pass == 0 && !g_str_has_prefix (t->name, "blk."))
          continue;
        guint64 n = (guint64) t->ne[0] * (guint64) t->ne[1];
        per_type[t->type] += n;
        total += n;
      }
  if (total == 0)
    return g_strdup ("unknown");
  guint best = 0;
  for (guint i = 1; i < GM_TYPE_COUNT; i++)
    if (per_type[i] > per_type[best])
      best = i;
  if (per_type[best] * 2 <= total)
    return g_strdup ("mixed");
  return g_ascii_strup (gm_type_name (best), -1);
}

static guint64
count_params (const gm_gguf *g)
{
  guint64 n = 0;
  for (guint64 i = 0; i < g->n_tensors; i++)
    {
      guint64 e = 1;
      for (guint32 d = 0; d < g->tensors[i].n_dims; d++)
        e *= (guint64) g->tensors[i].ne[d];
      n += e;
    }
  return n;
}

static char *
gguf_string (const gm_gguf *g, const char *key)
{
  const gm_gguf_kv *kv = gm_gguf_find_kv (g, key);
  if (kv == NULL || kv->type != GM_GGUF_STRING)
    return NULL;
  char *s = g_strndup (kv->str.ptr, kv->str.len);
  if (!g_utf8_validate (s, -1, NULL) || s[0] == '\0')
    {
      g_free (s);
      return NULL;
    }
  return s;
}

static gboolean
kv_true (const gm_gguf *g, const char *key)
{
  const gm_gguf_kv *kv = gm_gguf_find_kv (g, key);
  return kv != NULL && kv->type == GM_GGUF_BOOL && kv->v.b;
}

/* Which towers an mmproj holds, from its keys (llama.cpp's clip conventions: the
 * has_*_encoder flags, or the per-tower projector type / width). */
static void
mmproj_towers (const gm_gguf *g, gboolean *vision, gboolean *audio)
{
  *vision = kv_true (g, "clip.has_vision_encoder") ||
            gm_gguf_find_kv (g, "clip.vision.projector_type") != NULL ||
            gm_gguf_find_kv (g, "clip.vision.embedding_length") != NULL;
  *audio = kv_true (g, "clip.has_audio_encoder") ||
           gm_gguf_find_kv (g, "clip.audio.projector_type") != NULL ||
           gm_gguf_find_kv (g, "clip.audio.embedding_length") != NULL;
}

/* The mmproj's towers: *vision / *audio stay NULL for a tower it does not have. Each
 * must project to the text model's width n_embd. */
static gboolean
load_towers (const char *mmproj_path, const char *model_path, guint32 n_embd,
             gm_vision_model **vision_out, gm_audio_model **audio_out, GError **error)
{
  gm_error err = { 0 };
  *vision_out = NULL;
  *audio_out = NULL;
  gm_gguf *proj = gm_gguf_open (mmproj_path, &err);
  if (proj == NULL)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT, "mmproj: %s", err.msg);
      return FALSE;
    }
  gboolean vision, audio;
  mmproj_towers (proj, &vision, &audio);
  gm_gguf_close (proj);
  if (!vision && !audio)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT,
                   "mmproj: %s has neither a vision nor an audio encoder (no clip.vision.* "
                   "or clip.audio.* keys)", mmproj_path);
      return FALSE;
    }

  gm_vision_model *vm = NULL;
  if (vision)
    {
      vm = gm_vision_model_load (mmproj_path, &err);
      if (vm == NULL)
        {
          g_set_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT, "mmproj: %s", err.msg);
          return FALSE;
        }
      guint32 dim = gm_vision_model_projection_dim (vm);
      if (dim != n_embd)
        {
          g_set_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT,
                       "mmproj: %s projects images to width %u, but the model %s has width "
                       "%u (the mmproj belongs to another model)", mmproj_path, dim,
                       model_path, n_embd);
          gm_vision_model_free (vm);
          return FALSE;
        }
    }
  gm_audio_model *am = NULL;
  if (audio)
    {
      am = gm_audio_model_load (mmproj_path, &err);
      if (am == NULL)
        {
          g_set_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT, "mmproj: %s", err.msg);
          gm_vision_model_free (vm);
          return FALSE;
        }
      guint32 dim = gm_audio_model_projection_dim (am);
      if (dim != n_embd)
        {
          g_set_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT,
                       "mmproj: %s projects audio to width %u, but the model %s has width "
                       "%u (the mmproj belongs to another model)", mmproj_path, dim,
                       model_path, n_embd);
          gm_audio_model_free (am);
          gm_vision_model_free (vm);
          return FALSE;
        }
    }
  *vision_out = vm;
  *audio_out = am;
  return TRUE;
}

GmdModel *
gmd_model_load (const char *path, const char *mmproj_path, guint32 context_size,
                GError **error)
{
  gm_error err = { 0 };

  gm_model *model = gm_model_load (path, &err);
  if (model == NULL)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT, "%s", err.msg);
      return NULL;
    }
  gm_vision_model *vision = NULL;
  gm_audio_model *audio = NULL;
  if (mmproj_path != NULL && mmproj_path[0] != '\0' &&
      !load_towers (mmproj_path, path, model->hp.n_embd, &vision, &audio, error))
    {
      gm_model_free (model);
      return NULL;
    }
  gm_tokenizer *tok = gm_tokenizer_load (model->gguf, &err);
  if (tok == NULL)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT, "%s", err.msg);
      gm_audio_model_free (audio);
      gm_vision_model_free (vision);
      gm_model_free (model);
      return NULL;
    }

  GmdModel *m = g_new0 (GmdModel, 1);
  m->ref = 1;
  m->model = model;
  m->tokenizer = tok;
  m->vision = vision;
  m->audio = audio;
  m->path = g_strdup (path);
  m->mmproj_path = mmproj_path && mmproj_path[0] ? g_strdup (mmproj_path) : NULL;
  m->name = gguf_string (model->gguf, "general.name");
  if (m->name == NULL)
    m->name = g_path_get_basename (path);
  m->architecture = gguf_string (model->gguf, "general.architecture");
  if (m->architecture == NULL)
    m->architecture = g_strdup ("gemma4");
  m->quantization = predominant_type (model->gguf);
  m->n_ctx_train = model->hp.n_ctx_train;
  m->context_size = context_size ? context_size
                    : m->n_ctx_train ? MIN (m->n_ctx_train, 4096u) : 4096u;
  m->n_params = count_params (model->gguf);
  m->file_bytes = model->gguf->size;
  m->channel_open = gm_tokenizer_find (tok, "<|channel>");
  m->channel_close = gm_tokenizer_find (tok, "<channel|>");
  return m;
}

/* The formats gmd_media_sniff recognises that the decoders read (GIF and WebP are
 * recognised only to name them in errors). */
#define IMAGE_TYPES "image/png", "image/jpeg"
#define AUDIO_TYPES "audio/wav", "audio/flac", "audio/ogg", "audio/mpeg", "audio/aiff", \
                    "audio/basic"
static const char *const text_modalities[] = { "text", NULL };
static const char *const image_modalities[] = { "text", "image", NULL };
static const char *const audio_modalities[] = { "text", "audio", NULL };
static const char *const all_modalities[] = { "text", "image", "audio", NULL };
static const char *const no_media_types[] = { NULL };
static const char *const image_media_types[] = { IMAGE_TYPES, NULL };
static const char *const audio_media_types[] = { AUDIO_TYPES, NULL };
static const char *const all_media_types[] = { IMAGE_TYPES, AUDIO_TYPES, NULL };

/* Both tables are indexed by (vision != NULL) + 2 × (audio != NULL). */
static const char *const *const modalities[] = {
  text_modalities, image_modalities, audio_modalities, all_modalities,
};
static const char *const *const media_types[] = {
  no_media_types, image_media_types, audio_media_types, all_media_types,
};

static guint
towers_index (const GmdModel *m)
{
  if (m == NULL)
    return 0;
  return (m->vision != NULL ? 1u : 0u) + (m->audio != NULL ? 2u : 0u);
}

const char *const *
gmd_model_modalities (const GmdModel *m)
{
  return modalities[towers_index (m)];
}

const char *const *
gmd_model_media_types (const GmdModel *m)
{
  return media_types[towers_index (m)];
}

GmdModel *
gmd_model_ref (GmdModel *m)
{
  g_atomic_int_inc (&m->ref);
  return m;
}

void
gmd_model_unref (GmdModel *m)
{
  if (m == NULL || !g_atomic_int_dec_and_test (&m->ref))
    return;
  gm_tokenizer_free (m->tokenizer);
  gm_vision_model_free (m->vision);
  gm_audio_model_free (m->audio);
  gm_model_free (m->model);
  g_free (m->path);
  g_free (m->mmproj_path);
  g_free (m->name);
  g_free (m->architecture);
  g_free (m->quantization);
  g_free (m);
}
