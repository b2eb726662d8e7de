/* gmd-image.c — an image's decode, preprocessing and encoding for the service. */
#include "gmd-image.h"

#include <stdlib.h>

#include "gmd-error.h"
#include "vision/image-decode.h"

GmdImage *
gmd_image_prepare (const guint8 *data, gsize len, guint32 max_soft_tokens, guint64 max_pixels,
                   const char *field, GError **error)
{
  gm_error err = { 0 };
  gm_image_limits lim = { .max_pixels = max_pixels };
  gm_image img = { 0 };

  int rc = gm_image_decode (data, len, &lim, &img, &err);
  if (rc != GM_OK)
    {
      if (rc == GM_ERR_LIMIT)
        gmd_set_field_error (error, GMD_ERROR_LIMIT_EXCEEDED, field, "%s (max_image_pixels)",
                             err.msg);
      else
        gmd_set_field_error (error, GMD_ERROR_UNSUPPORTED_MEDIA, field, "%s", err.msg);
      return NULL;
    }

  GmdImage *image = g_new0 (GmdImage, 1);
  image->ref = 1;
  image->width = img.width;
  image->height = img.height;
  rc = gm_image_preprocess (&img, (int) max_soft_tokens, &image->patches, &err);
  gm_image_free (&img);
  if (rc != GM_OK)
    {
      gmd_set_field_error (error, GMD_ERROR_UNSUPPORTED_MEDIA, field, "%s", err.msg);
      gmd_image_unref (image);
      return NULL;
    }
  image->n_soft_tokens = image->patches.n_soft_tokens;
  return image;
}

gboolean
gmd_image_encode (GmdImage *image, const gm_vision_model *vision, gm_pool *pool,
                  GError **error)
{
  g_return_val_if_fail (image->embd == NULL, FALSE);
  guint32 dim = gm_vision_model_projection_dim (vision);
  float *out = g_try_malloc_n ((gsize) image->n_soft_tokens * dim, sizeof (float));
  if (out == NULL)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_INTERNAL,
                   "out of memory for %u soft tokens of an image", image->n_soft_tokens);
      return FALSE;
    }
  gm_error err = { 0 };
  if (gm_vision_encode (vision, pool, &image->patches, out, &err) != GM_OK)
    {
      g_free (out);
      g_set_error (error, GMD_ERROR, GMD_ERROR_INTERNAL, "encoding an image: %s", err.msg);
      return FALSE;
    }
  image->embd = out;
  image->n_embd = dim;
  /* the patches are several times larger than the soft tokens and no longer needed */
  gm_image_patches_free (&image->patches);
  return TRUE;
}

gsize
gmd_image_bytes (const GmdImage *image)
{
  return (gsize) image->patches.n_patches * (GM_IMAGE_PATCH_VALUES * sizeof (float) +
                                             2 * sizeof (int32_t)) +
         (gsize) image->n_soft_tokens * image->n_embd * sizeof (float);
}

GmdImage *
gmd_image_ref (GmdImage *image)
{
  g_atomic_int_inc (&image->ref);
  return image;
}

void
gmd_image_unref (GmdImage *image)
{
  if (image == NULL || !g_atomic_int_dec_and_test (&image->ref))
    return;
  gm_image_patches_free (&image->patches);
  g_free (image->embd);
  g_free (image);
}
