/* gmd-prompt.c — rendering a request with the Gemma 4 chat format (decoder/chat.h). */
#include "gmd-prompt.h"

#include "gmd-audio.h"
#include "gmd-content.h"
#include "gmd-error.h"
#include "gmd-image.h"
#include "gmd-options.h"

GmdPromptSpec *
gmd_prompt_spec_new (gboolean raw, gboolean thinking, const char *system, GPtrArray *history,
                     GPtrArray *parts)
{
  GmdPromptSpec *spec = g_new0 (GmdPromptSpec, 1);
  spec->ref = 1;
  spec->raw = raw;
  spec->thinking = thinking;
  spec->system = system && system[0] ? g_strdup (system) : NULL;
  spec->history = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_message_free);
  for (guint i = 0; history != NULL && i < history->len; i++)
    {
      g_ptr_array_add (spec->history, gmd_message_copy (history->pdata[i]));
    }
  spec->parts = parts ? g_ptr_array_ref (parts) : NULL;
  return spec;
}

GmdPromptSpec *
gmd_prompt_spec_ref (GmdPromptSpec *spec)
{
  g_atomic_int_inc (&spec->ref);
  return spec;
}

void
gmd_prompt_spec_unref (GmdPromptSpec *spec)
{
  if (spec == NULL || !g_atomic_int_dec_and_test (&spec->ref))
    return;
  g_free (spec->system);
  g_ptr_array_unref (spec->history);
  if (spec->parts)
    g_ptr_array_unref (spec->parts);
  g_free (spec);
}

static gboolean
media_error (guint index, const GmdPart *part, GError **error)
{
  g_autofree char *field = g_strdup_printf ("content[%u]", index);
  gmd_set_field_error (error, GMD_ERROR_UNSUPPORTED_MEDIA, field,
                       "%s input is not available in this build", gmd_part_type_name (part->type));
  return FALSE;
}

static gboolean
no_encoder_error (const GmdModel *model, const char *field, const char *what,
                  const char *tower, GError **error)
{
  gmd_set_field_error (error, GMD_ERROR_UNSUPPORTED_MEDIA, field,
                       "%s input is not available: %s", what,
                       model->mmproj_path ? tower : "no mmproj loaded");
  return FALSE;
}

/* One audio part within what is left of max_audio_seconds after the earlier parts. */
static GmdAudio *
prepare_audio (const GmdModel *model, const GmdPart *part, const char *field,
               guint32 max_audio_seconds, double *used_seconds, GError **error)
{
  if (model->audio == NULL)
    {
      no_encoder_error (model, field, "audio", "the mmproj has no audio encoder", error);
      return NULL;
    }
  double left = (double) max_audio_seconds - *used_seconds;
  g_autofree char *limit = *used_seconds > 0
      ? g_strdup_printf ("max_audio_seconds is %u for all the request's audio, %.3g s left "
                         "after the earlier parts", max_audio_seconds, MAX (left, 0.0))
      : g_strdup_printf ("max_audio_seconds is %u", max_audio_seconds);
  if (left <= 0)
    {
      gmd_set_field_error (error, GMD_ERROR_LIMIT_EXCEEDED, field,
                           "no audio time left (%s)", limit);
      return NULL;
    }
  gsize len = 0;
  const guint8 *data = part->media ? g_bytes_get_data (part->media, &len) : NULL;
  GmdAudio *audio = gmd_audio_prepare (data, len, left, limit, field, error);
  if (audio != NULL)
    *used_seconds += audio->seconds;
  return audio;
}

gboolean
gmd_prompt_prepare_media (const GmdModel *model, const GmdPromptSpec *spec,
                          guint32 image_tokens, guint64 max_pixels, guint32 max_audio_seconds,
                          GPtrArray **images, GPtrArray **audio, GError **error)
{
  g_autoptr (GPtrArray) image_out =
      g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_image_unref);
  g_autoptr (GPtrArray) audio_out =
      g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_audio_unref);
  double audio_seconds = 0;
  for (guint i = 0; spec->parts != NULL && i < spec->parts->len; i++)
    {
      const GmdPart *part = spec->parts->pdata[i];
      if (part->type != GMD_PART_IMAGE && part->type != GMD_PART_AUDIO)
        continue;
      g_autofree char *field = g_strdup_printf ("content[%u]", i);
      if (part->type == GMD_PART_AUDIO)
        {
          GmdAudio *a = prepare_audio (model, part, field, max_audio_seconds, &audio_seconds,
                                       error);
          if (a == NULL)
            return FALSE;
          g_ptr_array_add (audio_out, a);
          continue;
        }
      if (model->vision == NULL)
        return no_encoder_error (model, field, "image", "the mmproj has no vision encoder",
                                 error);
      gsize len = 0;
      const guint8 *data = part->media ? g_bytes_get_data (part->media, &len) : NULL;
      GmdImage *image = gmd_image_prepare (data, len, image_tokens, max_pixels, field, error);
      if (image == NULL)
        return FALSE;
      g_ptr_array_add (image_out, image);
    }
  *images = g_steal_pointer (&image_out);
  *audio = g_steal_pointer (&audio_out);
  return TRUE;
}

/* Where the chat parts of a rendering go: parts[n] onwards (sized by the caller). */
typedef struct {
  gm_chat_part *parts;
  gsize n;
} ChatParts;

static void
add_image_block (ChatParts *cp, const GmdImage *image)
{
  cp->parts[cp->n++] = (gm_chat_part) { .type = GM_PART_IMAGE,
                                        .n_soft_tokens = (int32_t) image->n_soft_tokens,
                                        .embd = image->embd };
}

/* Each 30 s clip is its own block: begin marker, its soft tokens, end marker. */
static void
add_audio_blocks (ChatParts *cp, const GmdAudio *audio)
{
  for (guint c = 0; c < audio->n_clips; c++)
    cp->parts[cp->n++] = (gm_chat_part) { .type = GM_PART_AUDIO,
                                          .n_soft_tokens = (int32_t) audio->clips[c].n_soft_tokens,
                                          .embd = audio->clips[c].embd };
}

/* The new turn's media in order: *next_image / *next_audio walk images and audio. */
typedef struct {
  GPtrArray *images, *audio;
  guint next_image, next_audio;
} TurnMedia;

/* The chat parts of the new turn's part i (one, or one per audio clip). */
static gboolean
add_turn_part (guint i, const GmdPart *part, TurnMedia *tm, ChatParts *cp, GError **error)
{
  switch (part->type)
    {
    case GMD_PART_TEXT:
      cp->parts[cp->n++] = (gm_chat_part) { .type = GM_PART_TEXT, .text = part->text };
      return TRUE;
    case GMD_PART_IMAGE:
      if (tm->images == NULL || tm->next_image >= tm->images->len)
        break;
      add_image_block (cp, tm->images->pdata[tm->next_image++]);
      return TRUE;
    case GMD_PART_AUDIO:
      if (tm->audio == NULL || tm->next_audio >= tm->audio->len)
        break;
      add_audio_blocks (cp, tm->audio->pdata[tm->next_audio++]);
      return TRUE;
    case GMD_PART_VIDEO:
    default:
      return media_error (i, part, error);
    }
  g_set_error (error, GMD_ERROR, GMD_ERROR_INTERNAL, "content[%u]: the %s was not prepared", i,
               gmd_part_type_name (part->type));
  return FALSE;
}

/* A history part (a kept turn's text, encoded image or encoded audio). */
static void
add_history_part (const GmdPart *part, ChatParts *cp)
{
  if (part->type == GMD_PART_IMAGE && part->image != NULL)
    add_image_block (cp, part->image);
  else if (part->type == GMD_PART_AUDIO && part->audio != NULL)
    add_audio_blocks (cp, part->audio);
  else
    cp->parts[cp->n++] = (gm_chat_part) { .type = GM_PART_TEXT,
                                          .text = part->text ? part->text : "" };
}

/* Chat parts a message's parts expand to at most (audio: one per clip). */
static gsize
history_parts_count (const GPtrArray *parts)
{
  gsize n = 0;
  for (guint j = 0; j < parts->len; j++)
    {
      const GmdPart *part = parts->pdata[j];
      n += part->type == GMD_PART_AUDIO && part->audio != NULL ? part->audio->n_clips : 1;
    }
  return n;
}

static gsize
audio_clips_count (const GPtrArray *audio)
{
  gsize n = 0;
  for (guint j = 0; audio != NULL && j < audio->len; j++)
    n += ((const GmdAudio *) audio->pdata[j])->n_clips;
  return n;
}

static gboolean
render_raw (const GmdModel *model, const GmdPromptSpec *spec, GPtrArray *images,
            GPtrArray *audio, gm_prompt *out, GError **error)
{
  guint n_parts = spec->parts != NULL ? spec->parts->len : 0;
  g_autofree gm_chat_part *parts = g_new0 (gm_chat_part, n_parts + audio_clips_count (audio));
  ChatParts cp = { parts, 0 };
  TurnMedia tm = { images, audio, 0, 0 };
  for (guint i = 0; i < n_parts; i++)
    if (!add_turn_part (i, spec->parts->pdata[i], &tm, &cp, error))
      return FALSE;
  gm_error err = { 0 };
  int32_t bos = gm_tokenizer_bos (model->tokenizer);
  if (bos >= 0 && gm_prompt_add_ids (out, &bos, 1, &err) != GM_OK)
    goto failed;
  for (gsize k = 0; k < cp.n; k++)
    {
      const gm_chat_part *c = &parts[k];
      int rc = c->type == GM_PART_TEXT
                   ? gm_prompt_add_text (out, model->tokenizer, c->text, true, &err)
                   : gm_prompt_add_media (out, model->tokenizer, c->type, c->n_soft_tokens,
                                          c->embd, &err);
      if (rc != GM_OK)
        goto failed;
    }
  gm_prompt_finish (out);
  return TRUE;

failed:
  g_set_error (error, GMD_ERROR, GMD_ERROR_INTERNAL, "rendering the prompt: %s", err.msg);
  return FALSE;
}

gboolean
gmd_prompt_render (const GmdModel *model, const GmdPromptSpec *spec, GPtrArray *images,
                   GPtrArray *audio, const char *answer, gm_prompt *out, GError **error)
{
  gm_prompt_init (out);
  if (spec->raw)
    return render_raw (model, spec, images, audio, out, error);

  guint n_parts = spec->parts ? spec->parts->len : 0;
  guint n_history = spec->history->len;
  gsize n_history_parts = 0;
  for (guint i = 0; i < n_history; i++)
    {
      const GmdMessage *m = spec->history->pdata[i];
      n_history_parts += m->parts ? history_parts_count (m->parts) : 1;
    }
  /* the system prompt, the history's parts, the new turn's parts (audio: one per clip),
   * the answer */
  g_autofree gm_chat_part *parts =
      g_new0 (gm_chat_part, n_history_parts + n_parts + audio_clips_count (audio) + 2);
  g_autofree gm_chat_message *msgs = g_new0 (gm_chat_message, n_history + 3);
  gsize n_msgs = 0;
  ChatParts cp = { parts, 0 };

  if (spec->system != NULL)
    {
      parts[cp.n] = (gm_chat_part) { .type = GM_PART_TEXT, .text = spec->system };
      msgs[n_msgs++] = (gm_chat_message) { GM_ROLE_SYSTEM, &parts[cp.n++], 1 };
    }
  for (guint i = 0; i < n_history; i++)
    {
      const GmdMessage *m = spec->history->pdata[i];
      gm_role role = m->role == GMD_ROLE_MODEL ? GM_ROLE_MODEL : GM_ROLE_USER;
      if (m->parts != NULL && m->parts->len > 0)
        {
          gsize first = cp.n;
          for (guint j = 0; j < m->parts->len; j++)
            add_history_part (m->parts->pdata[j], &cp);
          msgs[n_msgs++] = (gm_chat_message) { role, &parts[first], cp.n - first };
          continue;
        }
      if (m->text == NULL)
        continue;
      parts[cp.n] = (gm_chat_part) { .type = GM_PART_TEXT, .text = m->text };
      msgs[n_msgs++] = (gm_chat_message) { role, &parts[cp.n++], 1 };
    }
  if (n_parts > 0)
    {
      gsize first = cp.n;
      TurnMedia tm = { images, audio, 0, 0 };
      for (guint i = 0; i < n_parts; i++)
        if (!add_turn_part (i, spec->parts->pdata[i], &tm, &cp, error))
          return FALSE;
      msgs[n_msgs++] = (gm_chat_message) { GM_ROLE_USER, &parts[first], cp.n - first };
    }
  if (answer != NULL)
    {
      parts[cp.n] = (gm_chat_part) { .type = GM_PART_TEXT, .text = answer };
      msgs[n_msgs++] = (gm_chat_message) { GM_ROLE_MODEL, &parts[cp.n++], 1 };
    }

  /* the model turn's header only when asking for a new answer */
  gm_chat_options co = { .thinking = spec->thinking,
                         .add_generation_prompt = answer == NULL && n_parts > 0 };
  gm_error err = { 0 };
  if (gm_chat_build (model->tokenizer, msgs, n_msgs, &co, out, &err) != GM_OK)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_INTERNAL, "rendering the prompt: %s", err.msg);
      return FALSE;
    }
  return TRUE;
}

gboolean
gmd_prompt_check_fit (guint32 n_positions, guint32 context_size, guint32 max_prompt_tokens,
                      GError **error)
{
  if (max_prompt_tokens != 0 && max_prompt_tokens < context_size &&
      n_positions > max_prompt_tokens)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_LIMIT_EXCEEDED,
                   "the prompt has %u positions, more than max_prompt_tokens (%u)",
                   n_positions, max_prompt_tokens);
      return FALSE;
    }
  if ((guint64) n_positions + 1 > context_size)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_CONTEXT_EXCEEDED,
                   "the prompt has %u positions and leaves no room for an answer in the "
                   "context window of %u", n_positions, context_size);
      return FALSE;
    }
  return TRUE;
}
