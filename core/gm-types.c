/* gm-types.c — type traits (ggml ids, names, block sizes) and fp16/bf16 conversion. */
#include "gm-types.h"

#include <pthread.h>
#include <string.h>
#include <strings.h>

/* Every ggml type id a GGUF file may carry. Only the ones listed in the contract are
 * `supported`; the others are known so that the loader can compute tensor sizes and
 * name the type in an "unsupported type" error. Sizes follow ggml-common.h. */
static const gm_type_traits type_traits[GM_TYPE_COUNT] = {
    [GM_TYPE_F32] = { "f32", 1, 4, true },
    [GM_TYPE_F16] = { "f16", 1, 2, true },
    [GM_TYPE_Q4_0] = { "q4_0", GM_QK4_0, sizeof(gm_block_q4_0), true },
    [GM_TYPE_Q4_1] = { "q4_1", GM_QK4_1, sizeof(gm_block_q4_1), true },
    [GM_TYPE_Q5_0] = { "q5_0", GM_QK5_0, sizeof(gm_block_q5_0), true },
    [GM_TYPE_Q5_1] = { "q5_1", 32, 24, false },   /* half d, m; u32 qh; 16 B qs */
    [GM_TYPE_Q8_0] = { "q8_0", GM_QK8_0, sizeof(gm_block_q8_0), true },
    [GM_TYPE_Q8_1] = { "q8_1", 32, 36, false },   /* half d, s; 32 int8 */
    [GM_TYPE_Q2_K] = { "q2_K", GM_QK_K, 84, false },  /* 16 scales, 64 qs, d, dmin */
    [GM_TYPE_Q3_K] = { "q3_K", GM_QK_K, 110, false }, /* 32 hmask, 64 qs, 12 scales, d */
    [GM_TYPE_Q4_K] = { "q4_K", GM_QK_K, sizeof(gm_block_q4_K), true },
    [GM_TYPE_Q5_K] = { "q5_K", GM_QK_K, sizeof(gm_block_q5_K), true },
    [GM_TYPE_Q6_K] = { "q6_K", GM_QK_K, sizeof(gm_block_q6_K), true },
    [GM_TYPE_Q8_K] = { "q8_K", GM_QK_K, sizeof(gm_block_q8_K), false },
    [16] = { "iq2_xxs", GM_QK_K, 66, false },
    [17] = { "iq2_xs", GM_QK_K, 74, false },
    [18] = { "iq3_xxs", GM_QK_K, 98, false },
    [19] = { "iq1_s", GM_QK_K, 50, false },
    [GM_TYPE_IQ4_NL] = { "iq4_nl", 32, 18, false },   /* half d; 16 B qs */
    [21] = { "iq3_s", GM_QK_K, 110, false },
    [22] = { "iq2_s", GM_QK_K, 82, false },
    [GM_TYPE_IQ4_XS] = { "iq4_xs", GM_QK_K, 136, false }, /* d, scales_h, 4 scales_l, 128 qs */
    [24] = { "i8", 1, 1, false },
    [25] = { "i16", 1, 2, false },
    [26] = { "i32", 1, 4, false },
    [27] = { "i64", 1, 8, false },
    [28] = { "f64", 1, 8, false },
    [29] = { "iq1_m", GM_QK_K, 56, false },
    [GM_TYPE_BF16] = { "bf16", 1, 2, true },
    [34] = { "tq1_0", GM_QK_K, 54, false },
    [35] = { "tq2_0", GM_QK_K, 66, false },
    [39] = { "mxfp4", 32, 17, false },
};

_Static_assert(sizeof(gm_block_q8_K) == 292, "q8_K layout");

const gm_type_traits *gm_type_get_traits(uint32_t type)
{
    if (type >= GM_TYPE_COUNT || type_traits[type].name == NULL)
        return NULL;
    return &type_traits[type];
}

const char *gm_type_name(uint32_t type)
{
    const gm_type_traits *t = gm_type_get_traits(type);
    return t ? t->name : "unknown";
}

int gm_type_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < GM_TYPE_COUNT; i++)
        if (type_traits[i].name && strcasecmp(type_traits[i].name, name) == 0)
            return i;
    return -1;
}

size_t gm_row_size(gm_type type, int64_t n)
{
    const gm_type_traits *t = gm_type_get_traits((uint32_t)type);
    if (!t || n < 0 || n % t->block_size != 0)
        return 0;
    return (size_t)(n / t->block_size) * t->type_size;
}

/* ---- fp16 / bf16 ---- */

static inline float bits_to_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t f32_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Exact half -> float (every half is representable as a float). */
static float fp16_to_fp32_slow(gm_fp16 h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) /* inf / NaN; keep the payload, so a quiet NaN stays quiet */
        return bits_to_f32(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in float */
        float f = (float)mant * 0x1p-24f;
        return bits_to_f32(sign | f32_to_bits(f));
    }
    return bits_to_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

static float fp16_table[65536];
static pthread_once_t fp16_table_once = PTHREAD_ONCE_INIT;

static void fp16_table_init(void)
{
    for (uint32_t i = 0; i < 65536; i++)
        fp16_table[i] = fp16_to_fp32_slow((gm_fp16)i);
}

float gm_fp16_to_fp32(gm_fp16 h)
{
    pthread_once(&fp16_table_once, fp16_table_init);
    return fp16_table[h];
}

gm_fp16 gm_fp32_to_fp16(float f)
{
    uint32_t u = f32_to_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;

    if (a > 0x7f800000u) /* NaN: quiet it, keep the top payload bits */
        return (gm_fp16)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* >= 65520 rounds (to even) past 65504: inf */
        return (gm_fp16)(sign | 0x7c00u);

    uint32_t e = a >> 23;
    uint32_t mant = a & 0x7fffffu;
    if (a < 0x38800000u) {
        /* Result is a half subnormal (or zero): count units of 2^-24.
         * value = (mant | 2^23) * 2^(e-150), so units = m24 >> (126 - e). */
        if (e < 102) /* below 2^-25: rounds to zero */
            return sign;
        uint32_t m24 = mant | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t q = m24 >> shift;
        uint32_t rem = m24 & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            q++; /* may carry into the smallest normal, which is the right encoding */
        return (gm_fp16)(sign | q);
    }
    uint32_t h = ((e - 112) << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
        h++; /* carry into the exponent is correct; cannot reach inf (checked above) */
    return (gm_fp16)(sign | h);
}

gm_bf16 gm_fp32_to_bf16(float f)
{
    uint32_t u = f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: truncate but force quiet */
        return (gm_bf16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (gm_bf16)(u >> 16);
}
