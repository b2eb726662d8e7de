/* tensor-view.c — checked views of GGUF tensors (see tensor-view.h). */
#include "core/tensor-view.h"

#include <stdlib.h>
#include <string.h>

#include "core/gm-types.h"

const gm_gguf_tensor *gm_tensor_expect(const gm_gguf *g, const char *name, uint32_t n_dims,
                                       const int64_t *ne, gm_error *err)
{
    const gm_gguf_tensor *t = gm_gguf_find_tensor(g, name);
    if (!t) {
        gm_set_error(err, GM_ERR_FORMAT, "%s: missing tensor %s", g->path, name);
        return NULL;
    }
    for (uint32_t i = 0; i < GM_GGUF_MAX_DIMS; i++) {
        int64_t want = i < n_dims ? ne[i] : 1;
        if (t->ne[i] != want) {
            gm_set_error(err, GM_ERR_FORMAT,
                         "%s: tensor %s has shape {%lld,%lld,%lld,%lld}, expected {%lld,%lld,%lld,%lld}",
                         g->path, name, (long long)t->ne[0], (long long)t->ne[1],
                         (long long)t->ne[2], (long long)t->ne[3], (long long)ne[0],
                         (long long)(n_dims > 1 ? ne[1] : 1), (long long)(n_dims > 2 ? ne[2] : 1),
                         (long long)(n_dims > 3 ? ne[3] : 1));
            return NULL;
        }
    }
    return t;
}

float *gm_tensor_floats(const gm_gguf *g, const char *name, uint32_t n_dims, const int64_t *ne,
                        gm_error *err)
{
    const gm_gguf_tensor *t = gm_tensor_expect(g, name, n_dims, ne, err);
    if (!t)
        return NULL;
    if (t->type != GM_TYPE_F32 && t->type != GM_TYPE_F16 && t->type != GM_TYPE_BF16) {
        gm_set_error(err, GM_ERR_UNSUPPORTED, "%s: tensor %s has type %s (want F32/F16/BF16)",
                     g->path, name, gm_type_name(t->type));
        return NULL;
    }
    int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    float *out = malloc((size_t)n * sizeof *out);
    if (!out) {
        gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory for %s", g->path, name);
        return NULL;
    }
    if (t->type == GM_TYPE_F32) {
        memcpy(out, t->data, (size_t)n * sizeof *out);
    } else if (t->type == GM_TYPE_F16) {
        const gm_fp16 *s = t->data;
        for (int64_t i = 0; i < n; i++)
            out[i] = gm_fp16_to_fp32(s[i]);
    } else {
        const gm_bf16 *s = t->data;
        for (int64_t i = 0; i < n; i++)
            out[i] = gm_bf16_to_fp32(s[i]);
    }
    return out;
}

int gm_tensor_matrix(const gm_gguf *g, const char *name, uint32_t n_dims, const int64_t *ne,
                     gm_matrix *m, gm_error *err)
{
    const gm_gguf_tensor *t = gm_tensor_expect(g, name, n_dims, ne, err);
    if (!t)
        return err ? err->code : GM_ERR_FORMAT;
    int64_t cols = 1;
    for (uint32_t i = 0; i + 1 < n_dims; i++)
        cols *= ne[i];
    int64_t rows = n_dims ? ne[n_dims - 1] : 1;
    if (!gm_matmul_supports(t->type))
        return gm_set_error(err, GM_ERR_UNSUPPORTED, "%s: tensor %s has unsupported type %s",
                            g->path, name, gm_type_name(t->type));
    /* A block type's rows must be whole rows of the file: only a plain 2-D matrix. */
    if (n_dims != 2 && t->type != GM_TYPE_F32 && t->type != GM_TYPE_F16 && t->type != GM_TYPE_BF16)
        return gm_set_error(err, GM_ERR_UNSUPPORTED, "%s: tensor %s of %u dims has block type %s",
                            g->path, name, n_dims, gm_type_name(t->type));
    m->type = t->type;
    m->rows = rows;
    m->cols = cols;
    m->row_bytes = gm_row_size(t->type, cols);
    m->data = t->data;
    m->name = t->name;
    if (m->row_bytes * (uint64_t)rows > t->nbytes)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: tensor %s is too small", g->path, name);
    return GM_OK;
}
