/* gmd-test-mmproj.c — see gmd-test-mmproj.h. */
#include "gmd-test-mmproj.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/gguf.h"

static int
add_tensors (gm_gguf_writer *w, const gm_gguf *src, int projection, int positions,
             gm_error *err)
{
  for (uint64_t i = 0; i < src->n_tensors; i++)
    {
      const gm_gguf_tensor *t = &src->tensors[i];
      int rc;
      if (projection > 0 && strcmp (t->name, "mm.input_projection.weight") == 0)
        {
          int64_t ne[2] = { t->ne[0], projection };
          float *zeros = calloc ((size_t) ne[0] * (size_t) projection, sizeof (float));
          if (zeros == NULL)
            return gm_set_error (err, GM_ERR_NOMEM, "out of memory");
          rc = gm_gguf_add_tensor (w, t->name, GM_TYPE_F32, 2, ne, zeros, err);
          free (zeros);
        }
      else if (positions > 0 && strcmp (t->name, "v.position_embd.weight") == 0)
        {
          if (t->type != GM_TYPE_F32 || t->n_dims != 3)
            return gm_set_error (err, GM_ERR_UNSUPPORTED, "position table is not F32 3-D");
          int64_t h = t->ne[0], old = t->ne[1], axes = t->ne[2];
          int64_t ne[3] = { h, positions, axes };
          float *table = malloc ((size_t) (h * positions * axes) * sizeof (float));
          if (table == NULL)
            return gm_set_error (err, GM_ERR_NOMEM, "out of memory");
          const float *from = t->data;
          for (int64_t a = 0; a < axes; a++)
            for (int64_t p = 0; p < positions; p++)
              memcpy (table + (a * positions + p) * h, from + (a * old + p % old) * h,
                      (size_t) h * sizeof (float));
          rc = gm_gguf_add_tensor (w, t->name, GM_TYPE_F32, 3, ne, table, err);
          free (table);
        }
      else
        rc = gm_gguf_add_tensor (w, t->name, t->type, t->n_dims, t->ne, t->data, err);
      if (rc != GM_OK)
        return rc;
    }
  return GM_OK;
}

int
gmd_test_write_mmproj (const char *src_path, const char *dst, GmdTestMmprojKind kind,
                       int projection, int positions, gm_error *err)
{
  gm_gguf_writer *w = gm_gguf_writer_new ();
  int rc = GM_OK;
  if (kind == GMD_TEST_MMPROJ_VISION)
    {
      gm_gguf *src = gm_gguf_open (src_path, err);
      if (src == NULL)
        {
          gm_gguf_writer_free (w);
          return GM_ERR_IO;
        }
      for (uint64_t i = 0; i < src->n_kv; i++)
        if (projection <= 0 || strcmp (src->kv[i].key, "clip.vision.projection_dim") != 0)
          gm_gguf_add_kv_from (w, src, &src->kv[i]);
      if (projection > 0)
        gm_gguf_add_u32 (w, "clip.vision.projection_dim", (uint32_t) projection);
      rc = add_tensors (w, src, projection, positions, err);
      if (rc == GM_OK)
        rc = gm_gguf_writer_write (w, dst, err);
      gm_gguf_close (src);
    }
  else
    {
      gm_gguf_add_str (w, "general.architecture", "clip");
      if (kind == GMD_TEST_MMPROJ_AUDIO_ONLY)
        {
          gm_gguf_add_bool (w, "clip.has_vision_encoder", false);
          gm_gguf_add_bool (w, "clip.has_audio_encoder", true);
        }
      rc = gm_gguf_writer_write (w, dst, err);
    }
  gm_gguf_writer_free (w);
  return rc;
}
