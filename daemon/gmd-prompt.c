/* gmd-prompt.c — rendering a request with the Gemma 4 chat format (decoder/chat.h). */
#include "gmd-prompt.h"

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

gboolean
gmd_prompt_prepare_images (const GmdModel *model, const GmdPromptSpec *spec,
                           guint32 image_tokens, guint64 max_pixels, GPtrArray **images,
                           GError **error)
{
  g_autoptr (GPtrArray) out = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_image_unref);
  for (guint i = 0; spec->parts != NULL && i < spec->parts->len; i++)
    {
      const GmdPart *part = spec->parts->pdata[i];
      if (part->type != GMD_PART_IMAGE)
        continue;
      g_autofree char *field = g_strdup_printf ("content[%u]", i);
      if (model->vision == NULL)
        {
          gmd_set_field_error (error, GMD_ERROR_UNSUPPORTED_MEDIA, field,
                               "image input is not available: %s",
                               model->mmproj_path ? "the mmproj has no vision encoder"
                                                  : "no mmproj loaded");
          return FALSE;
        }
      gsize len = 0;
      const guint8 *data = part->media ? g_bytes_get_data (part->media, &len) : NULL;
      GmdImage *image = gmd_image_prepare (data, len, image_tokens, max_pixels, field, error);
      if (image == NULL)
        return FALSE;
      g_ptr_array_add (out, image);
    }
  *images = g_steal_pointer (&out);
  return TRUE;
}

/* The chat part of the new turn's part i; *next_image walks images in order. */
static gboolean
turn_part (guint i, const GmdPart *part, GPtrArray *images, guint *next_image,
           gm_chat_part *out, GError **error)
{
  if (part->type == GMD_PART_TEXT)
    {
      *out = (gm_chat_part) { .type = GM_PART_TEXT, .text = part->text };
      return TRUE;
    }
  if (part->type != GMD_PART_IMAGE)
    return media_error (i, part, error);
  if (images == NULL || *next_image >= images->len)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_INTERNAL,
                   "content[%u]: the image was not prepared", i);
      return FALSE;
    }
  const GmdImage *image = images->pdata[(*next_image)++];
  *out = (gm_chat_part) { .type = GM_PART_IMAGE, .n_soft_tokens = (int32_t) image->n_soft_tokens,
                          .embd = image->embd };
  return TRUE;
}

/* A history part (a kept turn's text or encoded image). */
static gm_chat_part
history_part (const GmdPart *part)
{
  if (part->type == GMD_PART_IMAGE && part->image != NULL)
    return (gm_chat_part) { .type = GM_PART_IMAGE,
                            .n_soft_tokens = (int32_t) part->image->n_soft_tokens,
                            .embd = part->image->embd };
  return (gm_chat_part) { .type = GM_PART_TEXT, .text = part->text ? part->text : "" };
}

static gboolean
render_raw (const GmdModel *model, const GmdPromptSpec *spec, GPtrArray *images,
            gm_prompt *out, GError **error)
{
  gm_error err = { 0 };
  int32_t bos = gm_tokenizer_bos (model->tokenizer);
  if (bos >= 0 && gm_prompt_add_ids (out, &bos, 1, &err) != GM_OK)
    goto failed;
  guint next_image = 0;
  for (guint i = 0; spec->parts != NULL && i < spec->parts->len; i++)
    {
      gm_chat_part cp;
      if (!turn_part (i, spec->parts->pdata[i], images, &next_image, &cp, error))
        return FALSE;
      int rc = cp.type == GM_PART_TEXT
                   ? gm_prompt_add_text (out, model->tokenizer, cp.text, true, &err)
                   : gm_prompt_add_media (out, model->tokenizer, cp.type, cp.n_soft_tokens,
                                          cp.embd, &err);
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
                   const char *answer, gm_prompt *out, GError **error)
{
  gm_prompt_init (out);
  if (spec->raw)
    return render_raw (model, spec, images, out, error);

  guint n_parts = spec->parts ? spec->parts->len : 0;
  guint n_history = spec->history->len;
  guint n_history_parts = 0;
  for (guint i = 0; i < n_history; i++)
    {
      const GmdMessage *m = spec->history->pdata[i];
      n_history_parts += m->parts ? m->parts->len : 1;
    }
  /* the system prompt, the history's parts, the new turn's parts, the answer */
  g_autofree gm_chat_part *parts = g_new0 (gm_chat_part, n_history_parts + n_parts + 2);
  g_autofree gm_chat_message *msgs = g_new0 (gm_chat_message, n_history + 3);
  gsize n_msgs = 0, n_used = 0;

  if (spec->system != NULL)
    {
      parts[n_used] = (gm_chat_part) { .type = GM_PART_TEXT, .text = spec->system };
      msgs[n_msgs++] = (gm_chat_message) { GM_ROLE_SYSTEM, &parts[n_used++], 1 };
    }
  for (guint i = 0; i < n_history; i++)
    {
      const GmdMessage *m = spec->history->pdata[i];
      gm_role role = m->role == GMD_ROLE_MODEL ? GM_ROLE_MODEL : GM_ROLE_USER;
      if (m->parts != NULL && m->parts->len > 0)
        {
          gm_chat_part *first = &parts[n_used];
          for (guint j = 0; j < m->parts->len; j++)
            parts[n_used++] = history_part (m->parts->pdata[j]);
          msgs[n_msgs++] = (gm_chat_message) { role, first, m->parts->len };
          continue;
        }
      if (m->text == NULL)
        continue;
      parts[n_used] = (gm_chat_part) { .type = GM_PART_TEXT, .text = m->text };
      msgs[n_msgs++] = (gm_chat_message) { role, &parts[n_used++], 1 };
    }
  if (n_parts > 0)
    {
      gm_chat_part *first = &parts[n_used];
      guint next_image = 0;
      for (guint i = 0; i < n_parts; i++)
        if (!turn_part (i, spec->parts->pdata[i], images, &next_image, &parts[n_used++], error))
          return FALSE;
      msgs[n_msgs++] = (gm_chat_message) { GM_ROLE_USER, first, n_parts };
    }
  if (answer != NULL)
    {
      parts[n_used] = (gm_chat_part) { .type = GM_PART_TEXT, .text = answer };
      msgs[n_msgs++] = (gm_chat_message) { GM_ROLE_MODEL, &parts[n_used++], 1 };
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
