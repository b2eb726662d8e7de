/* image-embed.c — decode → preprocess → encode for one image, timing each stage. */
#define _POSIX_C_SOURCE 200809L
#include "vision/image-embed.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vision/image-preprocess.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int gm_image_embed(const gm_vision_model *m, gm_pool *pool, const uint8_t *data, size_t len,
                   const gm_image_limits *lim, int max_soft_tokens, gm_image_embedding *out,
                   gm_error *err)
{
    memset(out, 0, sizeof *out);
    /* Checked first so a bad budget costs no decode. */
    if (!gm_image_budget_valid(max_soft_tokens))
        return gm_set_error(err, GM_ERR_INVALID,
                            "image token budget %d is not one of 70, 140, 280, 560, 1120",
                            max_soft_tokens);

    gm_image img = { 0 };
    double t0 = now_s();
    int rc = gm_image_decode(data, len, lim, &img, err);
    if (rc != GM_OK)
        return rc;
    double t1 = now_s();

    gm_image_patches patches = { 0 };
    rc = gm_image_preprocess(&img, max_soft_tokens, &patches, err);
    uint32_t width = img.width, height = img.height;
    gm_image_free(&img);
    if (rc != GM_OK)
        return rc;
    double t2 = now_s();

    uint32_t n_embd = gm_vision_model_projection_dim(m);
    float *embd = malloc((size_t)patches.n_soft_tokens * n_embd * sizeof *embd);
    if (embd == NULL) {
        gm_image_patches_free(&patches);
        return gm_set_error(err, GM_ERR_NOMEM, "vision encoder: out of memory for %u soft tokens",
                            (unsigned)patches.n_soft_tokens);
    }
    rc = gm_vision_encode(m, pool, &patches, embd, err);
    double t3 = now_s();
    if (rc != GM_OK) {
        free(embd);
        gm_image_patches_free(&patches);
        return rc;
    }
    out->width = width;
    out->height = height;
    out->grid_w = patches.grid_w;
    out->grid_h = patches.grid_h;
    out->n_soft_tokens = patches.n_soft_tokens;
    out->n_embd = n_embd;
    out->embd = embd;
    out->decode_s = t1 - t0;
    out->preprocess_s = t2 - t1;
    out->encode_s = t3 - t2;
    gm_image_patches_free(&patches);
    return GM_OK;
}

void gm_image_embedding_free(gm_image_embedding *e)
{
    if (e == NULL)
        return;
    free(e->embd);
    memset(e, 0, sizeof *e);
}
