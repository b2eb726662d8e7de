/* model.h — the Gemma 4 text model: hyper-parameters from GGUF metadata and the
 * weights bound in place from the mmap. Nothing here assumes a model size: every
 * dimension comes from the file (gguf-format.md §1.2) and is checked against the
 * tensors' shapes, with errors naming the file and the tensor or key. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "core/gguf.h"
#include "core/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gm_bidir_mode {
    GM_BIDIR_NONE = 0,    /* media tokens are causal like text (E2B/E4B) */
    GM_BIDIR_VISION = 1,  /* image/video blocks bidirectional on sliding layers */
} gm_bidir_mode;

#define GM_N_MEDIA_PLACEHOLDERS 3

typedef struct gm_layer_hparams {
    bool is_swa;          /* sliding-window layer */
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t head_dim;    /* key_length_swa or key_length */
    uint32_t n_ff;
    int32_t kv_source;    /* -1: owns its KV; else index of the layer whose cache it reads */
} gm_layer_hparams;

typedef struct gm_hparams {
    char name[128];
    uint32_t n_vocab;
    uint32_t n_embd;
    uint32_t n_layer;
    uint32_t n_ctx_train;
    uint32_t n_embd_per_layer;   /* PLE width P; 0 = no PLE */
    uint32_t sliding_window;
    uint32_t n_shared_kv;        /* trailing layers without their own KV */
    uint32_t head_dim_full, head_dim_swa;
    uint32_t n_rot_full, n_rot_swa;
    float rope_theta_full, rope_theta_swa;
    float rms_eps;
    float final_softcap;         /* 0 = none */
    float embd_scale;            /* sqrt(n_embd) rounded to bf16, as HF does (§9.1) */
    gm_bidir_mode bidir;
    gm_layer_hparams *layers;    /* n_layer entries */
    /* Ids of "<|image|>", "<|video|>", "<|audio|>" in tokenizer.ggml.tokens, -1 where absent.
     * As in transformers they embed as the pad id 0 wherever they occur, text included
     * (embedding and PLE identity row, §6.4). */
    int32_t media_placeholder_ids[GM_N_MEDIA_PLACEHOLDERS];
} gm_hparams;

typedef struct gm_layer_weights {
    const float *attn_norm;
    gm_matrix wq, wk, wv, wo;    /* wk/wv .data == NULL when absent (shared layer / V = K) */
    const float *q_norm, *k_norm;
    const float *post_attn_norm;
    const float *ffn_norm;
    gm_matrix ffn_gate, ffn_up, ffn_down;
    const float *post_ffw_norm;
    /* PLE (when n_embd_per_layer > 0) */
    gm_matrix inp_gate, proj;
    const float *post_norm;
    float layer_scale;           /* 1 when layer_output_scale is absent */
    /* inverse RoPE frequencies for this layer (head_dim/2 entries, 0 = unrotated) */
    float *rope_inv_freq;
} gm_layer_weights;

typedef struct gm_model {
    gm_gguf *gguf;
    char *path;
    gm_hparams hp;
    gm_matrix tok_embd;          /* [n_vocab, n_embd]; also the tied output head */
    gm_matrix output;            /* == tok_embd unless the file has output.weight */
    const float *output_norm;
    gm_matrix ple_tok_embd;      /* [n_vocab, n_layer*P] */
    gm_matrix ple_model_proj;    /* [n_layer*P, n_embd] */
    const float *ple_proj_norm;  /* [P] */
    gm_layer_weights *layers;
    /* F32 copies of small norm vectors when the file stores them in F16/BF16 */
    void *owned;
} gm_model;

/* Loads a text GGUF (general.architecture = "gemma4"). Weights stay in the mmap. */
gm_model *gm_model_load(const char *path, gm_error *err);
/* Same from an already opened file (takes ownership of g on success and failure). */
gm_model *gm_model_from_gguf(gm_gguf *g, gm_error *err);
void gm_model_free(gm_model *m);

/* Human-readable description of the architecture (layers, heads, dims). */
void gm_model_describe(const gm_model *m, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
