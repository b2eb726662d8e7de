/* ops.h — small vector maths shared by the decoder and the encoders (fp32). */
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* out = x * (mean(x^2) + eps)^-0.5 * w   (w may be NULL: no scale). out may alias x.
 * Gemma 4 semantics: the scale is w, not 1 + w. */
void gm_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);

/* LayerNorm over n with optional weight/bias (biased variance). */
void gm_layernorm(float *out, const float *x, const float *w, const float *b, int64_t n, float eps);

/* NeoX ("rotate-half") RoPE on one head of d values in place: for i < d/2,
 * angle = pos * inv_freq[i]; pairs (i, i + d/2). inv_freq[i] == 0 leaves the pair as is. */
void gm_rope_neox(float *v, int64_t d, int64_t pos, const float *inv_freq);

/* In-place softmax over n (max-subtracted, fp32). Entries equal to -INFINITY get 0. */
void gm_softmax(float *x, int64_t n);

/* GELU with the tanh approximation (gelu_pytorch_tanh), in place. */
void gm_gelu_tanh(float *x, int64_t n);
void gm_silu(float *x, int64_t n);

/* x = cap * tanh(x / cap), in place. */
void gm_softcap(float *x, int64_t n, float cap);

void gm_vec_add(float *y, const float *x, int64_t n);      /* y += x */
void gm_vec_scale(float *y, float s, int64_t n);           /* y *= s */
void gm_vec_mul(float *y, const float *x, int64_t n);      /* y *= x */
float gm_vec_dot_f32(const float *a, const float *b, int64_t n);
void gm_vec_axpy(float *y, float a, const float *x, int64_t n); /* y += a*x */

#ifdef __cplusplus
}
#endif
