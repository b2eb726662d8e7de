/* synth-model.h — synthetic Gemma 4 text GGUFs with seeded random weights at sensible
 * scales, in llama.cpp's names and layouts: tiny ones for tests and the small model the
 * README starts with, full-size E2B/E4B shapes for benchmarks (streamed, multi-GiB). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "core/gm-error.h"
#include "core/gm-types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gm_synth_config {
    char name[64];              /* general.name */
    uint32_t n_vocab;           /* ignored when vocab_path is set (taken from that file) */
    uint32_t n_embd;
    uint32_t n_layer;
    uint32_t n_head;
    uint32_t n_head_kv;         /* sliding layers (and full layers unless n_head_kv_full) */
    uint32_t n_head_kv_full;    /* 0: same as n_head_kv; else written as a per-layer array */
    uint32_t head_dim_swa;
    uint32_t head_dim_full;
    uint32_t n_ff;
    bool double_wide;           /* KV-shared layers get 2*n_ff (per-layer array) */
    uint32_t n_shared_kv;       /* trailing KV-shared layers */
    bool keep_shared_kv_tensors;/* write attn_k/attn_v/attn_k_norm on shared layers too */
    uint32_t n_embd_per_layer;  /* PLE width; 0 = no PLE */
    uint32_t sliding_window;
    uint32_t swa_period;        /* every swa_period-th layer is full (E2B 5, E4B 6); last layer full */
    float rope_theta_swa, rope_theta_full;
    float partial_rotary;       /* full layers' rotated fraction (0.25), via rope_freqs */
    float final_softcap;        /* 0 = none */
    bool k_eq_v;                /* full layers have no attn_v (V = raw K) */
    int bidir;                  /* -1: omit gemma4.use_bidirectional_attention; 0: "none"; 1: "vision" */
    bool layer_scale;           /* write layer_output_scale */
    gm_type wtype;              /* type of the big matrices */
    gm_type embd_type;          /* token_embd and per_layer_token_embd */
    uint64_t seed;
    const char *vocab_path;     /* copy tokenizer.* keys from this GGUF (NULL: a small generated vocab) */
    int n_threads;              /* generation threads (<= 0: all CPUs) */
} gm_synth_config;

/* Presets: "tiny" (README model: small dims, real vocab expected via vocab_path),
 * "test" (tiny dims, small generated vocab; exercises PLE, KV sharing, double-wide,
 * proportional RoPE, window 8), "e2b", "e4b" (full-size shapes). Returns -1 if unknown. */
int gm_synth_preset(const char *name, gm_synth_config *out);

/* Writes the model to path (streamed; memory use stays small even for full size). */
int gm_synth_write(const gm_synth_config *cfg, const char *path, gm_error *err);

/* Rewrites a gemma4 GGUF with its 2-D weight matrices converted to `type` (like
 * llama-quantize): norms, rope_freqs and 1-D tensors stay F32; a matrix whose row length
 * is not a multiple of the type's block size falls back to Q8_0, then F16. All metadata
 * is copied. drop_shared_kv removes attn_k/attn_v/attn_k_norm of KV-shared layers. */
int gm_synth_requantize(const char *in_path, const char *out_path, gm_type type, bool drop_shared_kv,
                        int n_threads, gm_error *err);

/* Synthetic gemma4v vision mmproj GGUFs (gguf-format.md §2, the converter's clip names
 * and keys): patch kernel, x/y position tables, n_layer encoder blocks with clipped
 * linears (E2B/E4B style: finite input/output clamp scalars around ±3 std of what each
 * linear sees) and the projection to the text width. Weights are seeded like the text
 * models' and scaled so that activations and soft tokens stay around unit size. */
/* The gemma4a audio tower of a synthetic mmproj (gguf-format.md §2.2): two stride-2
 * Conv2d subsampling layers with channel norms (kernels F32), the input projection,
 * n_layer conformer blocks (two half-step FFNs, chunked local attention with the relative
 * position projection and the softplus'ed per-dim query scale, light conv module with a
 * {5, H} F32 depthwise kernel; ten clipped linears each with finite bounds), output_proj
 * with bias, and mm.a.input_projection to the text width (the mmproj's proj_dim). */
typedef struct gm_synth_audio_config {
    uint32_t n_embd;            /* conformer width (E2B/E4B 1024); 0 = no audio tower */
    uint32_t n_layer;           /* 12 */
    uint32_t n_head;            /* 8 */
    uint32_t n_ff;              /* 4096 */
    uint32_t sub_channels[2];   /* subsampling conv channels: 128, 32 */
    uint32_t out_dim;           /* output_proj width: 1536 */
} gm_synth_audio_config;

typedef struct gm_synth_mmproj_config {
    char name[64];              /* general.name */
    uint32_t n_embd;            /* vision width (E2B/E4B 768) */
    uint32_t n_layer;           /* 16 */
    uint32_t n_head;            /* 12 (head dim a multiple of 4: 2-D RoPE) */
    uint32_t n_ff;              /* 3072 */
    uint32_t pos_size;          /* position table entries per axis (10240) */
    uint32_t proj_dim;          /* text width: E2B 1536, E4B 2560 */
    bool clipped;               /* write the clamp scalars of every linear */
    bool standardize;           /* write v.std_bias / v.std_scale (26B/31B style) */
    gm_type wtype;              /* linears and projection: f32 f16 bf16 q8_0 (and other
                                 * block types whose block divides the row) */
    uint64_t seed;
    int n_threads;              /* generation threads (<= 0: all CPUs) */
    /* Added for the audio tower (zero-initialised configs keep the vision-only file): */
    bool no_vision;             /* write no vision tower (clip.has_vision_encoder false) */
    gm_synth_audio_config audio;/* audio.n_embd == 0: no audio tower */
} gm_synth_mmproj_config;

/* Presets "tiny" (hidden 64, 2 layers, 2 heads, FFN 128, projection 64 = the
 * tiny text model's width), "e2b" (768/16/12/3072, projection 1536) and
 * "e4b" (same tower, projection 2560); all with the real 10240-entry position tables (any
 * image the processor makes fits), clipped, F16, seed 1. Returns -1 if unknown.
 * Each also has its audio tower, as the real E2B/E4B mmproj files do: "e2b"/"e4b" 1024
 * wide, 12 blocks, 8 heads, FFN 4096, channels [128, 32], output_proj 1536; "tiny" 64
 * wide, 2 blocks, 2 heads, FFN 256, channels [128, 8], output_proj 48 (like
 * tests/conformance/audio-tower). Set audio.n_embd = 0 for a vision-only file. */
int gm_synth_mmproj_preset(const char *name, gm_synth_mmproj_config *out);

/* Writes the mmproj to path. The patch kernel {16,16,3,H} cannot hold a block type: it is
 * F32 for f32 weights, BF16 for bf16 and F16 otherwise; norms, tables and clamps are F32.
 * Audio: the conv kernels, conv_dw, norms, clamps, per_dim_scale and the output_proj bias
 * are F32; every matrix is wtype, except that mm.a.input_projection (rows of out_dim)
 * falls back to Q8_0, then F16 when out_dim is not in whole blocks of wtype (tiny: 48). */
int gm_synth_mmproj_write(const gm_synth_mmproj_config *cfg, const char *path, gm_error *err);

#ifdef __cplusplus
}
#endif
