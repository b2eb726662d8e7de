/* gmd-test-mmproj.c — see gmd-test-mmproj.h. */
#include "gmd-test-mmproj.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/gguf.h"

static bool
is_projection (const char *name)
{
  return strcmp (name, "mm.input_projection.weight") == 0 ||
         strcmp (name, "mm.a.input_projection.weight") == 0;
}

static int
add_tensors (gm_gguf_writer *w, const gm_gguf *src, int projection, int positions,
             gm_error *err)
{
  for (uint64_t i = 0; i < src->n_tensors; i++)
    {
      const gm_gguf_tensor *t = &src->tensors[i];
      int rc;
      if (projection > 0 && is_projection (t->name))
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

/* Keys written by the caller itself (the towers present, the projection widths). */
static bool
is_overridden_key (const char *key, int projection)
{
  if (strcmp (key, "clip.has_vision_encoder") == 0 || strcmp (key, "clip.has_audio_encoder") == 0)
    return true;
  return projection > 0 && (strcmp (key, "clip.vision.projection_dim") == 0 ||
                            strcmp (key, "clip.audio.projection_dim") == 0);
}

/* Copies a tower's keys (those not already taken from an earlier tower, so the general.*
 * keys come from the first) and tensors. */
static int
add_tower (gm_gguf_writer *w, const gm_gguf *src, const gm_gguf *earlier, int projection,
           int positions, gm_error *err)
{
  for (uint64_t i = 0; i < src->n_kv; i++)
    {
      const char *key = src->kv[i].key;
      if (is_overridden_key (key, projection) ||
          (earlier != NULL && gm_gguf_find_kv (earlier, key) != NULL))
        continue;
      gm_gguf_add_kv_from (w, src, &src->kv[i]);
    }
  return add_tensors (w, src, projection, positions, err);
}

int
gmd_test_write_mmproj (const char *vision_src, const char *audio_src, const char *dst,
                       GmdTestMmprojKind kind, int projection, int positions, gm_error *err)
{
  bool vision = kind == GMD_TEST_MMPROJ_VISION || kind == GMD_TEST_MMPROJ_AUDIO_VISION;
  bool audio = kind == GMD_TEST_MMPROJ_AUDIO_ONLY || kind == GMD_TEST_MMPROJ_AUDIO_VISION;
  gm_gguf *v = NULL, *a = NULL;
  if (vision && (v = gm_gguf_open (vision_src, err)) == NULL)
    return GM_ERR_IO;
  if (audio && (a = gm_gguf_open (audio_src, err)) == NULL)
    {
      gm_gguf_close (v);
      return GM_ERR_IO;
    }

  gm_gguf_writer *w = gm_gguf_writer_new ();
  int rc = GM_OK;
  if (!vision && !audio)
    gm_gguf_add_str (w, "general.architecture", "clip");
  if (vision)
    rc = add_tower (w, v, NULL, projection, positions, err);
  if (rc == GM_OK && audio)
    rc = add_tower (w, a, v, projection, 0, err);
  if (rc == GM_OK)
    {
      gm_gguf_add_bool (w, "clip.has_vision_encoder", vision);
      gm_gguf_add_bool (w, "clip.has_audio_encoder", audio);
      if (projection > 0 && vision)
        gm_gguf_add_u32 (w, "clip.vision.projection_dim", (uint32_t) projection);
      if (projection > 0 && audio)
        gm_gguf_add_u32 (w, "clip.audio.projection_dim", (uint32_t) projection);
      rc = gm_gguf_writer_write (w, dst, err);
    }
  gm_gguf_writer_free (w);
  gm_gguf_close (v);
  gm_gguf_close (a);
  return rc;
}
