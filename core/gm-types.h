/* gm-types.h — tensor element types and the ggml block layouts stored in GGUF files.
 *
 * Type ids are ggml's (they are what GGUF tensor infos store). Block structs are
 * byte-exact to ggml's so a weight is used straight from the mmap.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gm_type {
    GM_TYPE_F32 = 0,
    GM_TYPE_F16 = 1,
    GM_TYPE_Q4_0 = 2,
    GM_TYPE_Q4_1 = 3,
    GM_TYPE_Q5_0 = 6,
    GM_TYPE_Q5_1 = 7,
    GM_TYPE_Q8_0 = 8,
    GM_TYPE_Q8_1 = 9,
    GM_TYPE_Q2_K = 10,
    GM_TYPE_Q3_K = 11,
    GM_TYPE_Q4_K = 12,
    GM_TYPE_Q5_K = 13,
    GM_TYPE_Q6_K = 14,
    GM_TYPE_Q8_K = 15,
    GM_TYPE_IQ4_NL = 20,
    GM_TYPE_IQ4_XS = 23,
    GM_TYPE_BF16 = 30,
    GM_TYPE_COUNT = 40,
} gm_type;

#define GM_QK4_0 32
#define GM_QK4_1 32
#define GM_QK5_0 32
#define GM_QK8_0 32
#define GM_QK_K 256
#define GM_K_SCALE_SIZE 12

typedef uint16_t gm_fp16; /* IEEE half, raw bits */
typedef uint16_t gm_bf16; /* upper half of an IEEE float, raw bits */

typedef struct { gm_fp16 d; uint8_t qs[GM_QK4_0 / 2]; } gm_block_q4_0;                 /* 18 B */
typedef struct { gm_fp16 d, m; uint8_t qs[GM_QK4_1 / 2]; } gm_block_q4_1;              /* 20 B */
typedef struct { gm_fp16 d; uint8_t qh[4]; uint8_t qs[GM_QK5_0 / 2]; } gm_block_q5_0;   /* 22 B */
typedef struct { gm_fp16 d; int8_t qs[GM_QK8_0]; } gm_block_q8_0;                      /* 34 B */
typedef struct {
    gm_fp16 d, dmin;
    uint8_t scales[GM_K_SCALE_SIZE];
    uint8_t qs[GM_QK_K / 2];
} gm_block_q4_K; /* 144 B */
typedef struct {
    gm_fp16 d, dmin;
    uint8_t scales[GM_K_SCALE_SIZE];
    uint8_t qh[GM_QK_K / 8];
    uint8_t qs[GM_QK_K / 2];
} gm_block_q5_K; /* 176 B */
typedef struct {
    uint8_t ql[GM_QK_K / 2];
    uint8_t qh[GM_QK_K / 4];
    int8_t scales[GM_QK_K / 16];
    gm_fp16 d;
} gm_block_q6_K; /* 210 B */
/* Activation format for K-quant dot products (never stored in files). */
typedef struct {
    float d;
    int8_t qs[GM_QK_K];
    int16_t bsums[GM_QK_K / 16];
} gm_block_q8_K;

_Static_assert(sizeof(gm_block_q4_0) == 18, "q4_0 layout");
_Static_assert(sizeof(gm_block_q4_1) == 20, "q4_1 layout");
_Static_assert(sizeof(gm_block_q5_0) == 22, "q5_0 layout");
_Static_assert(sizeof(gm_block_q8_0) == 34, "q8_0 layout");
_Static_assert(sizeof(gm_block_q4_K) == 144, "q4_K layout");
_Static_assert(sizeof(gm_block_q5_K) == 176, "q5_K layout");
_Static_assert(sizeof(gm_block_q6_K) == 210, "q6_K layout");

typedef struct gm_type_traits {
    const char *name;   /* "q4_0", "f16", ... (ggml's names) */
    int block_size;     /* elements per block (1 for plain types) */
    size_t type_size;   /* bytes per block */
    bool supported;     /* this build can dequantize and multiply it */
} gm_type_traits;

/* Traits for a type id; returns NULL for ids this code does not know at all. */
const gm_type_traits *gm_type_get_traits(uint32_t type);
const char *gm_type_name(uint32_t type);
/* Parses a name like "q4_K", "Q4_K", "bf16"; returns -1 if unknown. */
int gm_type_from_name(const char *name);

/* Bytes of a row of n elements; 0 if n is not a multiple of the block size. */
size_t gm_row_size(gm_type type, int64_t n);

/* Half and bfloat16 conversion (round-to-nearest-even). */
float gm_fp16_to_fp32(gm_fp16 h);
gm_fp16 gm_fp32_to_fp16(float f);
static inline float gm_bf16_to_fp32(gm_bf16 h)
{
    union { uint32_t u; float f; } v = { .u = (uint32_t)h << 16 };
    return v.f;
}
gm_bf16 gm_fp32_to_bf16(float f);

#ifdef __cplusplus
}
#endif
