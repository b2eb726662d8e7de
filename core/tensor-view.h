/* tensor-view.h — checked views of GGUF tensors for the encoders that read an mmproj:
 * a tensor of an exact shape, a small tensor as a float copy, a weight matrix used in
 * place. Errors name the file and the tensor. */
#pragma once

#include <stdint.h>

#include "core/gguf.h"
#include "core/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The tensor `name` with exactly the n_dims dims ne (the others 1); NULL and err
 * (GM_ERR_FORMAT) when it is missing or shaped otherwise. */
const gm_gguf_tensor *gm_tensor_expect(const gm_gguf *g, const char *name, uint32_t n_dims,
                                       const int64_t *ne, gm_error *err);

/* A malloc'd F32 copy of a shaped F32 / F16 / BF16 tensor (norms, tables, clamps,
 * convolutions); NULL and err otherwise. */
float *gm_tensor_floats(const gm_gguf *g, const char *name, uint32_t n_dims, const int64_t *ne,
                        gm_error *err);

/* The shaped tensor as a matrix for gm_matmul, used in place from the mapping: one row
 * per index of the last dim, the earlier dims flattened into the row (so {16,16,3,H} is H
 * rows of 768; block types need n_dims 2). */
int gm_tensor_matrix(const gm_gguf *g, const char *name, uint32_t n_dims, const int64_t *ne,
                     gm_matrix *m, gm_error *err);

#ifdef __cplusplus
}
#endif
