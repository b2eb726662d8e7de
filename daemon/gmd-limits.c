/* gmd-limits.c — default caps and their a{sv} form (Limits property, socket hello). */
#include "gmd-limits.h"

void
gmd_limits_init_default (GmdLimits *limits)
{
  *limits = (GmdLimits) {
    .max_queue = 64,
    .max_queued_per_client = 4,
    .max_sessions_per_client = 8,
    .max_prompt_tokens = 0,
    .max_tokens_limit = 0,
    .max_text_bytes = 1024 * 1024,
    .max_media_bytes = 20 * 1024 * 1024,
    .max_media_parts = 16,
    .max_audio_seconds = 300,
    .max_stop_strings = 8,
    .max_stop_bytes = 256,
    .session_idle_timeout = 1800,
    .max_line_bytes = 32 * 1024 * 1024,
    .max_fds_per_line = 16,
    .max_connections_per_uid = 32,
    .max_image_pixels = 50000000,
  };
}

/* A token cap of 0 means "the window"; a cap above the window cannot be reached, so the
 * value in force is the smaller one (when the window is known). */
static guint32
resolve_token_cap (guint32 cap, guint32 context_size)
{
  if (context_size == 0)
    return cap;
  if (cap == 0 || cap > context_size)
    return context_size;
  return cap;
}

GVariant *
gmd_limits_to_variant (const GmdLimits *l, guint32 context_size)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "max_queue", g_variant_new_uint32 (l->max_queue));
  g_variant_builder_add (&b, "{sv}", "max_queued_per_client",
                         g_variant_new_uint32 (l->max_queued_per_client));
  g_variant_builder_add (&b, "{sv}", "max_sessions_per_client",
                         g_variant_new_uint32 (l->max_sessions_per_client));
  g_variant_builder_add (&b, "{sv}", "max_prompt_tokens",
                         g_variant_new_uint32 (resolve_token_cap (l->max_prompt_tokens, context_size)));
  g_variant_builder_add (&b, "{sv}", "max_tokens_limit",
                         g_variant_new_uint32 (resolve_token_cap (l->max_tokens_limit, context_size)));
  g_variant_builder_add (&b, "{sv}", "max_text_bytes", g_variant_new_uint64 (l->max_text_bytes));
  g_variant_builder_add (&b, "{sv}", "max_media_bytes", g_variant_new_uint64 (l->max_media_bytes));
  g_variant_builder_add (&b, "{sv}", "max_media_parts", g_variant_new_uint32 (l->max_media_parts));
  g_variant_builder_add (&b, "{sv}", "max_audio_seconds", g_variant_new_uint32 (l->max_audio_seconds));
  g_variant_builder_add (&b, "{sv}", "max_stop_strings", g_variant_new_uint32 (l->max_stop_strings));
  g_variant_builder_add (&b, "{sv}", "max_stop_bytes", g_variant_new_uint32 (l->max_stop_bytes));
  g_variant_builder_add (&b, "{sv}", "session_idle_timeout",
                         g_variant_new_uint32 (l->session_idle_timeout));
  g_variant_builder_add (&b, "{sv}", "max_line_bytes", g_variant_new_uint64 (l->max_line_bytes));
  g_variant_builder_add (&b, "{sv}", "max_fds_per_line", g_variant_new_uint32 (l->max_fds_per_line));
  g_variant_builder_add (&b, "{sv}", "max_image_pixels", g_variant_new_uint64 (l->max_image_pixels));
  return g_variant_builder_end (&b);
}
