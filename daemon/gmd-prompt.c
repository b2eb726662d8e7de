/* gmd-prompt.c — rendering a request with the Gemma 4 chat format (decoder/chat.h). */
#include "gmd-prompt.h"

#include "gmd-content.h"
#include "gmd-error.h"
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
      const GmdMessage *m = history->pdata[i];
      g_ptr_array_add (spec->history, gmd_message_new (m->role, m->text));
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
render_raw (const GmdModel *model, const GmdPromptSpec *spec, gm_prompt *out, GError **error)
{
  gm_error err = { 0 };
  int32_t bos = gm_tokenizer_bos (model->tokenizer);
  if (bos >= 0 && gm_prompt_add_ids (out, &bos, 1, &err) != GM_OK)
    goto failed;
  for (guint i = 0; spec->parts != NULL && i < spec->parts->len; i++)
    {
      const GmdPart *part = spec->parts->pdata[i];
      if (part->type != GMD_PART_TEXT)
        return media_error (i, part, error);
      if (gm_prompt_add_text (out, model->tokenizer, part->text, true, &err) != GM_OK)
        goto failed;
    }
  gm_prompt_finish (out);
  return TRUE;

failed:
  g_set_error (error, GMD_ERROR, GMD_ERROR_INTERNAL, "rendering the prompt: %s", err.msg);
  return FALSE;
}

gboolean
gmd_prompt_render (const GmdModel *model, const GmdPromptSpec *spec, const char *answer,
                   gm_prompt *out, GError **error)
{
  gm_prompt_init (out);
  if (spec->raw)
    return render_raw (model, spec, out, error);

  guint n_parts = spec->parts ? spec->parts->len : 0;
  guint n_history = spec->history->len;
  /* one part per message, plus the new turn's parts */
  g_autofree gm_chat_part *parts = g_new0 (gm_chat_part, n_history + n_parts + 2);
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
      if (m->text == NULL)
        continue;  /* media entries exist only once encoders do */
      parts[n_used] = (gm_chat_part) { .type = GM_PART_TEXT, .text = m->text };
      msgs[n_msgs++] = (gm_chat_message) {
        m->role == GMD_ROLE_MODEL ? GM_ROLE_MODEL : GM_ROLE_USER, &parts[n_used++], 1 };
    }
  if (n_parts > 0)
    {
      gm_chat_part *first = &parts[n_used];
      for (guint i = 0; i < n_parts; i++)
        {
          const GmdPart *part = spec->parts->pdata[i];
          if (part->type != GMD_PART_TEXT)
            return media_error (i, part, error);
          parts[n_used++] = (gm_chat_part) { .type = GM_PART_TEXT, .text = part->text };
        }
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
