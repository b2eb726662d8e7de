/* cpu.h — run-time CPU feature detection (CPUID + XGETBV) and ISA selection. */
#pragma once

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gm_cpu_features {
    bool avx2, fma, f16c;
    bool avx512f, avx512bw, avx512vl, avx512dq;
    bool avx512vnni, avx512bf16, avx_vnni;
    bool amx_tile, amx_int8, amx_bf16;
} gm_cpu_features;

typedef enum gm_isa {
    GM_ISA_SCALAR = 0,
    GM_ISA_AVX2 = 1,      /* AVX2 + FMA + F16C */
    GM_ISA_AVX512 = 2,    /* AVX-512 F/BW/VL/DQ + VNNI (+ BF16 where present) */
} gm_isa;

/* Detected once (thread-safe). Checks OS support of the register state (XGETBV). */
const gm_cpu_features *gm_cpu_get_features(void);

/* The best ISA this CPU supports, lowered by the environment variable GEMMAD_ISA
 * ("scalar", "avx2", "avx512") if set — tests use it to force each path. */
gm_isa gm_cpu_best_isa(void);
const char *gm_isa_name(gm_isa isa);
/* Human-readable summary ("avx2 fma f16c avx512f ... amx_int8"). */
const char *gm_cpu_describe(void);

#ifdef __cplusplus
}
#endif
