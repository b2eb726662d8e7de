/* gmd-image.h — one image of a request on its way into the prompt: decoded and
 * preprocessed by a prompt worker (the patches), encoded by the engine thread (the soft
 * tokens), then kept by a session's history so its cache can be rebuilt without the file.
 *
 * Refcounted with atomic counts. Each stage is done by one thread and published to the
 * next through the service's mailbox or the engine's queue, so no lock is needed. */
#pragma once

#include <glib.h>

#include "core/pool.h"
#include "vision/image-preprocess.h"
#include "vision/vision-encoder.h"

G_BEGIN_DECLS

typedef struct _GmdImage GmdImage;

struct _GmdImage {
  gint ref;
  guint32 width, height;      /* decoded size */
  guint32 n_soft_tokens;      /* positions the image takes in the prompt */
  gm_image_patches patches;   /* until encoded; freed by gmd_image_encode */
  guint32 n_embd;             /* 0 until encoded */
  float *embd;                /* n_soft_tokens × n_embd once encoded, else NULL */
};

/* Decodes data (PNG or JPEG) with a pixel cap (0 = the decoder's 50 000 000) and
 * preprocesses it for max_soft_tokens. Errors name field: LIMIT_EXCEEDED for an image
 * above max_pixels, UNSUPPORTED_MEDIA for anything that does not decode ("JPEG: …"). */
GmdImage *gmd_image_prepare (const guint8 *data, gsize len, guint32 max_soft_tokens,
                             guint64 max_pixels, const char *field, GError **error);

/* Runs the vision encoder on the patches (pool may be NULL), then frees them. INTERNAL
 * on failure. Call once. */
gboolean gmd_image_encode (GmdImage *image, const gm_vision_model *vision, gm_pool *pool,
                           GError **error);

/* Bytes held (patches and soft tokens), for accounting. */
gsize gmd_image_bytes (const GmdImage *image);

GmdImage *gmd_image_ref (GmdImage *image);
void gmd_image_unref (GmdImage *image);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GmdImage, gmd_image_unref)

G_END_DECLS
