/* test-quant.c — type traits, fp16/bf16 conversion, block layouts, quantizers and the
 * reference dot products (core/gm-types.c, core/quant.c). */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "core/gm-types.h"
#include "core/quant.h"
#include "test-util.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state;
static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_uniform(void) { return (double)(rng_next() >> 11) * 0x1p-53; }
static float rng_gauss(void)
{
    double u = rng_uniform(), v = rng_uniform();
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

static float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* Half value computed independently of the library: sign * mant * 2^(exp-25). */
static double half_value(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 31)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexp((double)m, -24);
    else
        v = ldexp((double)(1024 + m), e - 25);
    return s ? -v : v;
}

static void put_le16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

/* Fills x with a gaussian row with occasional outliers and some special blocks. */
static void make_row(float *x, int n, float scale)
{
    for (int i = 0; i < n; i++) {
        x[i] = scale * rng_gauss();
        if ((rng_next() & 63) == 0)
            x[i] *= 6.0f;
    }
}

/* ---------------------------------------------------------------- traits */

static void test_traits(void)
{
    static const struct { int id; const char *name; int bs; size_t sz; bool sup; } want[] = {
        { GM_TYPE_F32, "f32", 1, 4, true },      { GM_TYPE_F16, "f16", 1, 2, true },
        { GM_TYPE_Q4_0, "q4_0", 32, 18, true },  { GM_TYPE_Q4_1, "q4_1", 32, 20, true },
        { GM_TYPE_Q5_0, "q5_0", 32, 22, true },  { GM_TYPE_Q5_1, "q5_1", 32, 24, false },
        { GM_TYPE_Q8_0, "q8_0", 32, 34, true },  { GM_TYPE_Q8_1, "q8_1", 32, 36, false },
        { GM_TYPE_Q2_K, "q2_K", 256, 84, false }, { GM_TYPE_Q3_K, "q3_K", 256, 110, false },
        { GM_TYPE_Q4_K, "q4_K", 256, 144, true }, { GM_TYPE_Q5_K, "q5_K", 256, 176, true },
        { GM_TYPE_Q6_K, "q6_K", 256, 210, true }, { GM_TYPE_Q8_K, "q8_K", 256, 292, false },
        { GM_TYPE_IQ4_NL, "iq4_nl", 32, 18, false }, { GM_TYPE_IQ4_XS, "iq4_xs", 256, 136, false },
        { GM_TYPE_BF16, "bf16", 1, 2, true },
    };
    int nsup = 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const gm_type_traits *t = gm_type_get_traits((uint32_t)want[i].id);
        CHECKF(t != NULL, "traits of %d", want[i].id);
        if (!t)
            continue;
        CHECKF(strcmp(t->name, want[i].name) == 0, "%d: %s vs %s", want[i].id, t->name, want[i].name);
        CHECK_EQ_INT(t->block_size, want[i].bs);
        CHECK_EQ_INT(t->type_size, want[i].sz);
        CHECKF(t->supported == want[i].sup, "supported flag of %s", want[i].name);
        CHECK(strcmp(gm_type_name((uint32_t)want[i].id), want[i].name) == 0);
        CHECK_EQ_INT(gm_type_from_name(want[i].name), want[i].id);
    }
    /* exactly the contract's set is supported, whatever else is known */
    for (uint32_t id = 0; id < 64; id++) {
        const gm_type_traits *t = gm_type_get_traits(id);
        if (t && t->supported)
            nsup++;
        if (t) /* every known name maps back to its id */
            CHECK_EQ_INT(gm_type_from_name(t->name), id);
    }
    CHECK_EQ_INT(nsup, 10);
    /* removed / never-assigned ggml ids and out-of-range ids */
    CHECK(gm_type_get_traits(4) == NULL);
    CHECK(gm_type_get_traits(5) == NULL);
    CHECK(gm_type_get_traits(31) == NULL);
    CHECK(gm_type_get_traits(GM_TYPE_COUNT) == NULL);
    CHECK(gm_type_get_traits(1000) == NULL);
    CHECK(gm_type_get_traits(UINT32_MAX) == NULL);
    CHECK(gm_type_name(4) != NULL && strcmp(gm_type_name(4), "unknown") == 0);

    CHECK_EQ_INT(gm_type_from_name("Q4_K"), GM_TYPE_Q4_K);
    CHECK_EQ_INT(gm_type_from_name("q4_k"), GM_TYPE_Q4_K);
    CHECK_EQ_INT(gm_type_from_name("BF16"), GM_TYPE_BF16);
    CHECK_EQ_INT(gm_type_from_name("Q8_0"), GM_TYPE_Q8_0);
    CHECK_EQ_INT(gm_type_from_name("IQ4_XS"), GM_TYPE_IQ4_XS);
    CHECK_EQ_INT(gm_type_from_name("q4"), -1);
    CHECK_EQ_INT(gm_type_from_name("q4_0 "), -1);
    CHECK_EQ_INT(gm_type_from_name(""), -1);
    CHECK_EQ_INT(gm_type_from_name(NULL), -1);

    CHECK_EQ_INT(gm_row_size(GM_TYPE_F32, 10), 40);
    CHECK_EQ_INT(gm_row_size(GM_TYPE_F16, 7), 14);
    CHECK_EQ_INT(gm_row_size(GM_TYPE_BF16, 3), 6);
    CHECK_EQ_INT(gm_row_size(GM_TYPE_Q4_0, 64), 36);
    CHECK_EQ_INT(gm_row_size(GM_TYPE_Q4_0, 33), 0);
    CHECK_EQ_INT(gm_row_size(GM_TYPE_Q8_0, 2048), 64 * 34);
    CHECK_EQ_INT(gm_row_size(GM_TYPE_Q4_K, 512), 288);
    CHECK_EQ_INT(gm_row_size(GM_TYPE_Q4_K, 128), 0);
    CHECK_EQ_INT(gm_row_size(GM_TYPE_Q6_K, 1536), 6 * 210);
    CHECK_EQ_INT(gm_row_size(GM_TYPE_Q5_K, 262144), 1024 * 176);
    CHECK_EQ_INT(gm_row_size(GM_TYPE_Q4_0, 0), 0);
    CHECK_EQ_INT(gm_row_size(GM_TYPE_Q4_0, -32), 0);
    CHECK_EQ_INT(gm_row_size((gm_type)4, 32), 0);
    /* large rows do not overflow: a 262144 x 1536 tensor */
    CHECK_EQ_INT(gm_row_size(GM_TYPE_Q6_K, (int64_t)262144 * 1536), (int64_t)262144 * 6 * 210);
}

/* ---------------------------------------------------------------- fp16 / bf16 */

static void *fp16_thread(void *arg)
{
    int *bad = arg;
    for (uint32_t h = 0; h < 65536; h++) {
        double want = half_value((uint16_t)h);
        float got = gm_fp16_to_fp32((gm_fp16)h);
        if (isnan(want) ? !isnan(got) : (double)got != want || (signbit(got) != 0) != ((h >> 15) != 0))
            (*bad)++;
    }
    return NULL;
}

/* Checks that h is the round-to-nearest-even half of f (finite f in half range). */
static int is_rne_half(float f, uint16_t h)
{
    double x = f, v = half_value(h);
    if (isinf(v))
        return fabs(x) >= 65520.0 && (x < 0) == ((h >> 15) != 0);
    uint16_t mag = h & 0x7fff;
    double up = half_value((uint16_t)((h & 0x8000) | (mag + 1)));
    double dn = mag ? half_value((uint16_t)((h & 0x8000) | (mag - 1))) : -v;
    double e = fabs(x - v);
    if (e > fabs(x - up) || e > fabs(x - dn))
        return 0;
    if ((e == fabs(x - up) && up != v) || (mag && e == fabs(x - dn)))
        return (mag & 1) == 0; /* a tie must pick the even encoding */
    return 1;
}

static void test_fp16(void)
{
    /* several threads race the table initialization */
    pthread_t th[4];
    int bad[4] = { 0 };
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, fp16_thread, &bad[i]);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(bad[i], 0);
    }

    /* every non-NaN half survives half -> float -> half */
    int rt_bad = 0, nan_bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = gm_fp16_to_fp32((gm_fp16)h);
        gm_fp16 back = gm_fp32_to_fp16(f);
        bool is_nan = ((h >> 10) & 31) == 31 && (h & 1023);
        if (is_nan) {
            if (((back >> 10) & 31) != 31 || !(back & 1023) || (back & 0x8000) != (h & 0x8000))
                nan_bad++;
            if ((h & 0x200) && back != h) /* quiet NaNs keep their payload */
                nan_bad++;
        } else if (back != h) {
            rt_bad++;
        }
    }
    CHECK_EQ_INT(rt_bad, 0);
    CHECK_EQ_INT(nan_bad, 0);

    CHECK_EQ_INT(gm_fp32_to_fp16(1.0f), 0x3c00);
    CHECK_EQ_INT(gm_fp32_to_fp16(-2.0f), 0xc000);
    CHECK_EQ_INT(gm_fp32_to_fp16(0.0f), 0x0000);
    CHECK_EQ_INT(gm_fp32_to_fp16(-0.0f), 0x8000);
    CHECK_EQ_INT(gm_fp32_to_fp16(65504.0f), 0x7bff);
    CHECK_EQ_INT(gm_fp32_to_fp16(65519.996f), 0x7bff);
    CHECK_EQ_INT(gm_fp32_to_fp16(65520.0f), 0x7c00);  /* tie goes to the even side: inf */
    CHECK_EQ_INT(gm_fp32_to_fp16(1e10f), 0x7c00);
    CHECK_EQ_INT(gm_fp32_to_fp16(INFINITY), 0x7c00);
    CHECK_EQ_INT(gm_fp32_to_fp16(-INFINITY), 0xfc00);
    gm_fp16 hn = gm_fp32_to_fp16(NAN);
    CHECK(((hn >> 10) & 31) == 31 && (hn & 1023) != 0);
    hn = gm_fp32_to_fp16(f32_from_bits(0x7f800001u)); /* signalling NaN, payload below fp16's */
    CHECK(((hn >> 10) & 31) == 31 && (hn & 1023) != 0);
    CHECK_EQ_INT(gm_fp32_to_fp16(0x1p-14f), 0x0400);        /* smallest normal */
    CHECK_EQ_INT(gm_fp32_to_fp16(0x1p-24f), 0x0001);        /* smallest subnormal */
    CHECK_EQ_INT(gm_fp32_to_fp16(0x1p-25f), 0x0000);        /* tie -> even (0) */
    CHECK_EQ_INT(gm_fp32_to_fp16(-0x1p-25f), 0x8000);
    CHECK_EQ_INT(gm_fp32_to_fp16(f32_from_bits(0x33000001u)), 0x0001); /* just above the tie */
    CHECK_EQ_INT(gm_fp32_to_fp16(3 * 0x1p-25f), 0x0002);    /* tie 1|2 -> 2 */
    CHECK_EQ_INT(gm_fp32_to_fp16(5 * 0x1p-25f), 0x0002);    /* tie 2|3 -> 2 */
    CHECK_EQ_INT(gm_fp32_to_fp16(1e-10f), 0x0000);
    CHECK_EQ_INT(gm_fp32_to_fp16(1023 * 0x1p-24f), 0x03ff); /* largest subnormal */
    CHECK_EQ_INT(gm_fp32_to_fp16(1023.5f * 0x1p-24f), 0x0400); /* rounds up into normal */
    CHECK_EQ_INT(gm_fp32_to_fp16(1.0f + 0x1p-11f), 0x3c00); /* tie -> even */
    CHECK_EQ_INT(gm_fp32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3c02);
    CHECK_EQ_INT(gm_fp32_to_fp16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    CHECK_EQ_INT(gm_fp32_to_fp16(2047.0f / 1024 + 0x1p-11f), 0x4000); /* carry into exponent */
    CHECK_NEAR(gm_fp16_to_fp32(0x3555), 0.333251953125, 0);
    CHECK(isinf(gm_fp16_to_fp32(0xfc00)) && gm_fp16_to_fp32(0xfc00) < 0);
    CHECK(isnan(gm_fp16_to_fp32(0x7e00)));
    CHECK_NEAR(gm_fp16_to_fp32(0x0001), 0x1p-24, 0);

    /* random float bit patterns in (and around) the half range round to nearest even */
    int rne_bad = 0;
    rng_state = 42;
    for (int i = 0; i < 300000; i++) {
        uint32_t u = (uint32_t)rng_next();
        /* exponent spread from 2^-30 to 2^17 */
        uint32_t e = 97 + (uint32_t)(rng_next() % 48);
        u = (u & 0x807fffffu) | (e << 23);
        if (i & 1) /* force near-ties: clear low mantissa bits */
            u &= ~0xfffu;
        float f = f32_from_bits(u);
        if (!is_rne_half(f, gm_fp32_to_fp16(f)))
            rne_bad++;
    }
    CHECK_EQ_INT(rne_bad, 0);

    /* bf16 */
    CHECK_EQ_INT(gm_fp32_to_bf16(1.0f), 0x3f80);
    CHECK_EQ_INT(gm_fp32_to_bf16(-0.0f), 0x8000);
    CHECK_EQ_INT(gm_fp32_to_bf16(f32_from_bits(0x3f808000u)), 0x3f80); /* tie -> even */
    CHECK_EQ_INT(gm_fp32_to_bf16(f32_from_bits(0x3f818000u)), 0x3f82); /* tie -> even */
    CHECK_EQ_INT(gm_fp32_to_bf16(f32_from_bits(0x3f808001u)), 0x3f81);
    CHECK_EQ_INT(gm_fp32_to_bf16(f32_from_bits(0x3f807fffu)), 0x3f80);
    CHECK_EQ_INT(gm_fp32_to_bf16(FLT_MAX), 0x7f80); /* overflows to inf */
    CHECK_EQ_INT(gm_fp32_to_bf16(INFINITY), 0x7f80);
    CHECK_EQ_INT(gm_fp32_to_bf16(-INFINITY), 0xff80);
    CHECK_EQ_INT(gm_fp32_to_bf16(f32_from_bits(0x00000001u)), 0x0000); /* tiny subnormal */
    CHECK_EQ_INT(gm_fp32_to_bf16(f32_from_bits(0x00018000u)), 0x0002); /* subnormal tie */
    gm_bf16 bn = gm_fp32_to_bf16(f32_from_bits(0x7f800001u)); /* NaN whose payload is all low */
    CHECK(isnan(gm_bf16_to_fp32(bn)));
    bn = gm_fp32_to_bf16(f32_from_bits(0xffffffffu)); /* would carry into the sign if rounded */
    CHECK(isnan(gm_bf16_to_fp32(bn)) && (bn & 0x8000));
    CHECK_NEAR(gm_bf16_to_fp32(0x4049), 3.140625, 0);
    int bf_bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = gm_bf16_to_fp32((gm_bf16)h);
        if (!isnan(f) && gm_fp32_to_bf16(f) != h)
            bf_bad++;
    }
    CHECK_EQ_INT(bf_bad, 0);
}

/* ---------------------------------------------------------------- hand-built blocks */

static void test_layout_q4_0_q4_1_q5_0_q8_0(void)
{
    float y[64];
    uint8_t b[2 * 18];
    /* two blocks: d = 0.5 and d = -2 */
    put_le16(b, 0x3800);
    put_le16(b + 18, 0xc000);
    for (int j = 0; j < 16; j++) {
        b[2 + j] = (uint8_t)(j | ((15 - j) << 4));
        b[20 + j] = (uint8_t)(0x80 | (j == 3 ? 0x0f : 0x08));
    }
    CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_Q4_0, b, y, 64), 0);
    int bad = 0;
    for (int j = 0; j < 16; j++) {
        bad += y[j] != 0.5f * (float)(j - 8);
        bad += y[j + 16] != 0.5f * (float)(7 - j);
        bad += y[32 + j] != (j == 3 ? -14.0f : 0.0f);
        bad += y[48 + j] != 0.0f;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(y[0] == -4.0f && y[15] == 3.5f && y[16] == 3.5f && y[31] == -4.0f);

    /* q4_1: d = 0.25, m = -1 */
    uint8_t c[20];
    put_le16(c, 0x3400);
    put_le16(c + 2, 0xbc00);
    for (int j = 0; j < 16; j++)
        c[4 + j] = (uint8_t)((j ^ 5) | (j << 4));
    CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_Q4_1, c, y, 32), 0);
    bad = 0;
    for (int j = 0; j < 16; j++) {
        bad += y[j] != 0.25f * (float)(j ^ 5) - 1.0f;
        bad += y[j + 16] != 0.25f * (float)j - 1.0f;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(y[0] == 0.25f && y[16] == -1.0f && y[31] == 2.75f);

    /* q5_0: d = 1; qh little-endian bit j = 5th bit of weight j */
    uint8_t q5[22];
    put_le16(q5, 0x3c00);
    q5[2] = 0x01; /* weight 0 */
    q5[3] = 0x80; /* weight 15 */
    q5[4] = 0x00;
    q5[5] = 0xf0; /* weights 28..31 */
    for (int j = 0; j < 16; j++)
        q5[6 + j] = (uint8_t)(j | (j << 4));
    CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_Q5_0, q5, y, 32), 0);
    CHECK_NEAR(y[0], 0.0f, 0);        /* 0 | 16 - 16 */
    CHECK_NEAR(y[1], -15.0f, 0);      /* 1 - 16 */
    CHECK_NEAR(y[14], -2.0f, 0);
    CHECK_NEAR(y[15], 15.0f, 0);      /* 15 | 16 - 16 */
    CHECK_NEAR(y[16], -16.0f, 0);
    CHECK_NEAR(y[27], -5.0f, 0);
    CHECK_NEAR(y[28], 12.0f, 0);      /* 12 | 16 - 16 */
    CHECK_NEAR(y[31], 15.0f, 0);

    /* q8_0: d = 2 */
    uint8_t q8[34];
    put_le16(q8, 0x4000);
    for (int j = 0; j < 32; j++)
        q8[2 + j] = (uint8_t)(int8_t)(j * 7 - 100);
    CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_Q8_0, q8, y, 32), 0);
    bad = 0;
    for (int j = 0; j < 32; j++)
        bad += y[j] != 2.0f * (float)(j * 7 - 100);
    CHECK_EQ_INT(bad, 0);
}

static void test_layout_q4_K(void)
{
    /* sc and m per sub-block, packed below by hand from the §4.2 rule */
    static const int sc[8] = { 1, 2, 3, 4, 17, 33, 50, 63 };
    static const int mn[8] = { 5, 6, 7, 8, 20, 40, 60, 9 };
    static const uint8_t packed[12] = { 0x41, 0x82, 0xC3, 0xC4, 0x45, 0x86, 0xC7, 0x08,
                                        0x41, 0x81, 0xC2, 0x9F };
    uint8_t b[144];
    put_le16(b, 0x3c00);     /* d = 1 */
    put_le16(b + 2, 0x3800); /* dmin = 0.5 */
    memcpy(b + 4, packed, 12);
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++)
            b[16 + 32 * g + l] = (uint8_t)((l & 15) | (((l + g) & 15) << 4));
    float y[256];
    CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_Q4_K, b, y, 256), 0);
    int bad = 0;
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++) {
            bad += y[64 * g + l] != (float)(sc[2 * g] * (l & 15)) - 0.5f * (float)mn[2 * g];
            bad += y[64 * g + 32 + l] != (float)(sc[2 * g + 1] * ((l + g) & 15)) - 0.5f * (float)mn[2 * g + 1];
        }
    CHECK_EQ_INT(bad, 0);
    /* a few literal values */
    CHECK_NEAR(y[0], -2.5f, 0);              /* sc 1, q 0, m 5 */
    CHECK_NEAR(y[33], 2.0f * 1 - 3.0f, 0);   /* sub-block 1: sc 2, q 1, m 6 */
    CHECK_NEAR(y[128 + 5], 17.0f * 5 - 10.0f, 0);  /* sub-block 4 (j>=4 packing) */
    CHECK_NEAR(y[255], 63.0f * 2 - 4.5f, 0);       /* sub-block 7: q (31+3)&15 = 2 */
}

static void test_layout_q5_K(void)
{
    uint8_t b[176];
    put_le16(b, 0x3c00);     /* d = 1 */
    put_le16(b + 2, 0x3800); /* dmin = 0.5 */
    /* sc = 1 and m = 2 for all eight sub-blocks */
    for (int j = 0; j < 4; j++) {
        b[4 + j] = 1;
        b[8 + j] = 2;
        b[12 + j] = 0x21;
    }
    for (int l = 0; l < 32; l++)
        b[16 + l] = (uint8_t)(l * 37 + 11); /* qh */
    for (int i = 0; i < 128; i++)
        b[48 + i] = (uint8_t)(i * 7 + 3);   /* qs */
    float y[256];
    CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_Q5_K, b, y, 256), 0);
    int bad = 0;
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++) {
            uint8_t qh = b[16 + l], qs = b[48 + 32 * g + l];
            int q0 = (qs & 15) + 16 * ((qh >> (2 * g)) & 1);
            int q1 = (qs >> 4) + 16 * ((qh >> (2 * g + 1)) & 1);
            bad += y[64 * g + l] != (float)q0 - 1.0f;
            bad += y[64 * g + 32 + l] != (float)q1 - 1.0f;
        }
    CHECK_EQ_INT(bad, 0);
    /* literal: element 0: qs[0]=3, qh[0]=11=0b1011 bit0 set -> 19 - 1 */
    CHECK_NEAR(y[0], 18.0f, 0);
    /* element 32: high nibble of qs[0]=0, qh bit1 set -> 16 - 1 */
    CHECK_NEAR(y[32], 15.0f, 0);
    /* element 64: qs[32]=227 low nibble 3, qh bit2 clear -> 3 - 1 */
    CHECK_NEAR(y[64], 2.0f, 0);
    /* element 96: qs[32]=227 high nibble 14, qh bit3 set -> 30 - 1 */
    CHECK_NEAR(y[96], 29.0f, 0);
}

static void test_layout_q6_K(void)
{
    uint8_t b[210];
    memset(b, 0, sizeof b);
    for (int g = 0; g < 16; g++)
        b[192 + g] = (uint8_t)(int8_t)(g - 8); /* scales, some negative */
    put_le16(b + 208, 0x3800);                   /* d = 0.5, stored last */
    float y[256];
    CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_Q6_K, b, y, 256), 0);
    /* all quants 0 -> value -32 * 0.5 * scale */
    int bad = 0;
    for (int i = 0; i < 256; i++)
        bad += y[i] != -16.0f * (float)(i / 16 - 8);
    CHECK_EQ_INT(bad, 0);

    /* second half, l = 5: qh[32+5] bits 6-7 = 2 and high nibble of ql[64+32+5] = 7
     * -> element 128+96+5 = 229 has q = 7 | 2<<4 = 39 -> +7 */
    b[128 + 32 + 5] = 0x80;
    b[64 + 32 + 5] = 0x70;
    /* first half, l = 3: ql[3] = 0x9c: element 3 low nibble 12, element 67 high nibble 9;
     * qh[3] = 0b00_11_01_00: element 3 hi 0, element 35 hi 1, element 67 hi 3 */
    b[3] = 0x9c;
    b[128 + 3] = 0x34;
    CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_Q6_K, b, y, 256), 0);
    CHECK_NEAR(y[229], 0.5f * 6 * 7, 0);          /* scale group 14 = 6 */
    CHECK_NEAR(y[165], 0.5f * 2 * -32, 0);        /* low nibble of the same byte is 0 */
    CHECK_NEAR(y[228], 0.5f * 6 * -32, 0);
    CHECK_NEAR(y[3], 0.5f * -8 * (12 - 32), 0);   /* group 0 = -8 */
    CHECK_NEAR(y[35], 0.5f * -6 * (16 - 32), 0);  /* group 2 = -6 */
    CHECK_NEAR(y[67], 0.5f * -4 * (9 + 48 - 32), 0); /* group 4 = -4 */
    CHECK_NEAR(y[99], 0.5f * -2 * -32, 0);        /* group 6, hi bits 6-7 of qh[3] = 0 */

    /* general rule with random bytes */
    rng_state = 7;
    for (int i = 0; i < 208; i++)
        b[i] = (uint8_t)rng_next();
    CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_Q6_K, b, y, 256), 0);
    bad = 0;
    for (int i = 0; i < 256; i++) {
        int h = i / 128, r = i % 128, l = r % 32, part = r / 32;
        int lo = (b[64 * h + l + 32 * (part & 1)] >> (4 * (part >> 1))) & 15;
        int hi = (b[128 + 32 * h + l] >> (2 * part)) & 3;
        float want = 0.5f * (float)(int8_t)b[192 + i / 16] * (float)((lo | (hi << 4)) - 32);
        bad += y[i] != want;
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_plain_types(void)
{
    float x[8] = { 1.0f, -2.5f, 3.14159f, 1e-6f, -65504.0f, 0.0f, 1e5f, -1e-9f }, y[8];
    uint16_t h[8];
    CHECK_EQ_INT(gm_quantize_row(GM_TYPE_F16, x, h, 8), 0);
    CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_F16, h, y, 8), 0);
    for (int i = 0; i < 8; i++)
        CHECK(y[i] == gm_fp16_to_fp32(gm_fp32_to_fp16(x[i])));
    CHECK(isinf(y[6]));
    CHECK_EQ_INT(gm_quantize_row(GM_TYPE_BF16, x, h, 8), 0);
    CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_BF16, h, y, 8), 0);
    for (int i = 0; i < 8; i++)
        CHECK_NEAR(y[i], x[i], fabsf(x[i]) * 0x1p-8f);
    CHECK_EQ_INT(gm_quantize_row(GM_TYPE_F32, x, y, 8), 0);
    CHECK(memcmp(x, y, sizeof x) == 0);
    memset(y, 0, sizeof y);
    CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_F32, x, y, 8), 0);
    CHECK(memcmp(x, y, sizeof x) == 0);
}

static void test_bad_args(void)
{
    float x[512] = { 0 }, y[512];
    uint8_t buf[2048] = { 0 };
    CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_Q2_K, buf, y, 256), -1);
    CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_Q8_K, buf, y, 256), -1);
    CHECK_EQ_INT(gm_dequantize_row((gm_type)4, buf, y, 32), -1);
    CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_Q4_0, buf, y, 31), -1);
    CHECK_EQ_INT(gm_quantize_row(GM_TYPE_Q5_1, x, buf, 32), -1);
    CHECK_EQ_INT(gm_quantize_row(GM_TYPE_IQ4_XS, x, buf, 256), -1);
    CHECK_EQ_INT(gm_quantize_row(GM_TYPE_Q4_K, x, buf, 320), -1);
    CHECK_EQ_INT(gm_quantize_row((gm_type)99, x, buf, 32), -1);
    CHECK(isnan(gm_vec_dot_ref(GM_TYPE_Q3_K, buf, buf, 256)));
    CHECK(isnan(gm_vec_dot_ref(GM_TYPE_Q6_K, buf, buf, 100)));

    CHECK_EQ_INT(gm_vec_dot_type(GM_TYPE_F32), GM_TYPE_F32);
    CHECK_EQ_INT(gm_vec_dot_type(GM_TYPE_F16), GM_TYPE_F32);
    CHECK_EQ_INT(gm_vec_dot_type(GM_TYPE_BF16), GM_TYPE_F32);
    CHECK_EQ_INT(gm_vec_dot_type(GM_TYPE_Q4_0), GM_TYPE_Q8_0);
    CHECK_EQ_INT(gm_vec_dot_type(GM_TYPE_Q4_1), GM_TYPE_Q8_0);
    CHECK_EQ_INT(gm_vec_dot_type(GM_TYPE_Q5_0), GM_TYPE_Q8_0);
    CHECK_EQ_INT(gm_vec_dot_type(GM_TYPE_Q8_0), GM_TYPE_Q8_0);
    CHECK_EQ_INT(gm_vec_dot_type(GM_TYPE_Q4_K), GM_TYPE_Q8_K);
    CHECK_EQ_INT(gm_vec_dot_type(GM_TYPE_Q5_K), GM_TYPE_Q8_K);
    CHECK_EQ_INT(gm_vec_dot_type(GM_TYPE_Q6_K), GM_TYPE_Q8_K);
    const gm_type_traits *t = gm_type_get_traits(gm_vec_dot_type(GM_TYPE_Q2_K));
    CHECK(t == NULL || !t->supported);
}

/* ---------------------------------------------------------------- round trips */

#define N_RT 4096

/* Per-element error bounds that follow from the quantizers' definitions. */
static void test_roundtrip_legacy(void)
{
    static float x[N_RT], y[N_RT];
    static uint8_t q[N_RT * 2];
    rng_state = 1234;
    for (int rep = 0; rep < 4; rep++) {
        make_row(x, N_RT, rep == 3 ? 1e-3f : 1.0f);
        if (rep == 1) { /* special blocks: zeros, constant, all positive, one spike */
            for (int j = 0; j < 32; j++) {
                x[j] = 0.0f;
                x[32 + j] = 0.75f;
                x[64 + j] = 2.0f + fabsf(x[64 + j]);
                x[96 + j] = j == 9 ? -50.0f : 0.01f * (float)j;
            }
        }

        /* q8_0: |err| <= d/2 plus the fp16 rounding of d times |q| <= 127 */
        CHECK_EQ_INT(gm_quantize_row(GM_TYPE_Q8_0, x, q, N_RT), 0);
        CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_Q8_0, q, y, N_RT), 0);
        int bad = 0;
        for (int b = 0; b < N_RT / 32; b++) {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[32 * b + j]));
            double d = amax / 127.0, d16 = half_value(((const gm_block_q8_0 *)q)[b].d);
            double bound = d / 2 * (1 + 1e-6) + 127 * fabs(d - d16);
            if (d16 >= 0x1p-14) /* normal fp16 d: relative rounding <= 2^-11 */
                CHECK(bound <= amax * (1.0 / 254 + 1.0 / 2048) * (1 + 1e-6));
            for (int j = 0; j < 32; j++)
                bad += fabs((double)x[32 * b + j] - y[32 * b + j]) > bound;
        }
        CHECKF(bad == 0, "q8_0 rep %d: %d elements out of bound", rep, bad);

        /* q4_0: d = max/-8; |err| <= |d|/2 (+ fp16 of d * 8), except values that would
         * need level +8, clamped to +7 */
        CHECK_EQ_INT(gm_quantize_row(GM_TYPE_Q4_0, x, q, N_RT), 0);
        CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_Q4_0, q, y, N_RT), 0);
        bad = 0;
        for (int b = 0; b < N_RT / 32; b++) {
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++)
                if (fabsf(x[32 * b + j]) > amax) { amax = fabsf(x[32 * b + j]); max = x[32 * b + j]; }
            double d = max / -8.0, d16 = half_value(((const gm_block_q4_0 *)q)[b].d);
            for (int j = 0; j < 32; j++) {
                double xv = x[32 * b + j];
                double bound = fabs(d) / 2 * (1 + 1e-6) + 8 * fabs(d - d16);
                if (d != 0 && xv / d > 7.5)
                    bound = fabs(xv - 7 * d16) * (1 + 1e-6);
                bad += fabs(xv - y[32 * b + j]) > bound;
            }
            /* the largest magnitude is exactly representable as level -8 */
            for (int j = 0; j < 32; j++)
                if (x[32 * b + j] == max && max != 0)
                    bad += fabs(y[32 * b + j] - max) > 8 * fabs(d - d16) + 1e-30;
        }
        CHECKF(bad == 0, "q4_0 rep %d: %d out of bound", rep, bad);

        /* q4_1: |err| <= d/2 + 15*fp16 error of d + fp16 error of the min */
        CHECK_EQ_INT(gm_quantize_row(GM_TYPE_Q4_1, x, q, N_RT), 0);
        CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_Q4_1, q, y, N_RT), 0);
        bad = 0;
        for (int b = 0; b < N_RT / 32; b++) {
            float mn = FLT_MAX, mx = -FLT_MAX;
            for (int j = 0; j < 32; j++) { mn = fminf(mn, x[32 * b + j]); mx = fmaxf(mx, x[32 * b + j]); }
            const gm_block_q4_1 *blk = &((const gm_block_q4_1 *)q)[b];
            double d = (mx - mn) / 15.0, d16 = half_value(blk->d), m16 = half_value(blk->m);
            double bound = d / 2 * (1 + 1e-5) + 15 * fabs(d - d16) + fabs(mn - m16) + 1e-7 * fabs(mx);
            for (int j = 0; j < 32; j++)
                bad += fabs((double)x[32 * b + j] - y[32 * b + j]) > bound;
        }
        CHECKF(bad == 0, "q4_1 rep %d: %d out of bound", rep, bad);

        /* q5_0: as q4_0 with 32 levels */
        CHECK_EQ_INT(gm_quantize_row(GM_TYPE_Q5_0, x, q, N_RT), 0);
        CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_Q5_0, q, y, N_RT), 0);
        bad = 0;
        for (int b = 0; b < N_RT / 32; b++) {
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++)
                if (fabsf(x[32 * b + j]) > amax) { amax = fabsf(x[32 * b + j]); max = x[32 * b + j]; }
            double d = max / -16.0, d16 = half_value(((const gm_block_q5_0 *)q)[b].d);
            for (int j = 0; j < 32; j++) {
                double xv = x[32 * b + j];
                double bound = fabs(d) / 2 * (1 + 1e-6) + 16 * fabs(d - d16);
                if (d != 0 && xv / d > 15.5)
                    bound = fabs(xv - 15 * d16) * (1 + 1e-6);
                bad += fabs(xv - y[32 * b + j]) > bound;
            }
        }
        CHECKF(bad == 0, "q5_0 rep %d: %d out of bound", rep, bad);
        if (rep == 1) { /* zero block decodes to exact zeros */
            int nz = 0;
            for (int j = 0; j < 32; j++) nz += y[j] != 0.0f;
            CHECK_EQ_INT(nz, 0);
        }
    }

    /* requantizing a dequantized q4_0/q5_0/q8_0 row reproduces the bytes exactly */
    static const gm_type idem[] = { GM_TYPE_Q4_0, GM_TYPE_Q5_0, GM_TYPE_Q8_0 };
    static uint8_t q2[N_RT * 2];
    make_row(x, N_RT, 0.3f);
    for (size_t t = 0; t < 3; t++) {
        size_t rs = gm_row_size(idem[t], N_RT);
        gm_quantize_row(idem[t], x, q, N_RT);
        gm_dequantize_row(idem[t], q, y, N_RT);
        gm_quantize_row(idem[t], y, q2, N_RT);
        CHECKF(memcmp(q, q2, rs) == 0, "%s requantization changed bytes", gm_type_name(idem[t]));
    }
}

static double rel_rmse(gm_type t, const float *x, int n, double *max_err_rel)
{
    static uint8_t q[N_RT * 2];
    static float y[N_RT];
    CHECK_EQ_INT(gm_quantize_row(t, x, q, n), 0);
    CHECK_EQ_INT(gm_dequantize_row(t, q, y, n), 0);
    double se = 0, sx = 0, me = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        double e = (double)x[i] - y[i];
        se += e * e;
        sx += (double)x[i] * x[i];
        me = fmax(me, fabs(e));
        amax = fmax(amax, fabs(x[i]));
    }
    *max_err_rel = amax > 0 ? me / amax : me;
    return sx > 0 ? sqrt(se / sx) : sqrt(se);
}

static void test_roundtrip_kquants(void)
{
    static float x[N_RT];
    /* Gaussian data: upper limits on relative RMSE and max error / amax, about 1.2x what
     * this code measures (q4_K 0.071, q5_K 0.036, q6_K 0.018, q4_0 0.087, q4_1 0.079,
     * q5_0 0.043, q8_0 0.0055; step/sqrt(12) for uniform rounding explains the legacy ones) */
    const struct { gm_type t; double rmse, maxe; } lim[] = {
        { GM_TYPE_Q4_K, 0.085, 0.12 },
        { GM_TYPE_Q5_K, 0.043, 0.06 },
        { GM_TYPE_Q6_K, 0.022, 0.03 },
        { GM_TYPE_Q4_0, 0.105, 0.25 },
        { GM_TYPE_Q4_1, 0.095, 0.12 },
        { GM_TYPE_Q5_0, 0.052, 0.12 },
        { GM_TYPE_Q8_0, 0.0066, 0.005 },
        { GM_TYPE_F16, 0.0004, 0.0005 },
        { GM_TYPE_BF16, 0.003, 0.004 },
    };
    double r[9] = { 0 };
    rng_state = 99;
    for (int rep = 0; rep < 3; rep++) {
        for (int i = 0; i < N_RT; i++)
            x[i] = (rep == 2 ? 0.02f : 1.0f) * rng_gauss();
        for (int k = 0; k < 9; k++) {
            double me;
            double e = rel_rmse(lim[k].t, x, N_RT, &me);
            r[k] = fmax(r[k], e);
            CHECKF(e <= lim[k].rmse, "%s rep %d rel rmse %.5f > %.5f", gm_type_name(lim[k].t), rep, e, lim[k].rmse);
            CHECKF(me <= lim[k].maxe, "%s rep %d max err / amax %.5f > %.5f", gm_type_name(lim[k].t), rep, me, lim[k].maxe);
        }
    }
    /* the scale search pays off: K-quants beat the legacy formats of the same width */
    CHECKF(r[0] < r[4], "q4_K %.5f vs q4_1 %.5f", r[0], r[4]);
    CHECKF(r[1] < r[5], "q5_K %.5f vs q5_0 %.5f", r[1], r[5]);
    printf("rel rmse (gaussian): q4_K %.4f q5_K %.4f q6_K %.4f q4_0 %.4f q4_1 %.4f q5_0 %.4f q8_0 %.5f\n",
           r[0], r[1], r[2], r[3], r[4], r[5], r[6]);

    /* awkward K-quant super-blocks: zero, constant, all positive, huge dynamic range */
    static const gm_type kt[] = { GM_TYPE_Q4_K, GM_TYPE_Q5_K, GM_TYPE_Q6_K };
    for (int c = 0; c < 5; c++) {
        for (int i = 0; i < 256; i++) {
            switch (c) {
            case 0: x[i] = 0.0f; break;
            case 1: x[i] = -0.3f; break;
            case 2: x[i] = 1.0f + 0.5f * fabsf(rng_gauss()); break;
            case 3: x[i] = (i / 32 == 5) ? 100.0f * rng_gauss() : 1e-3f * rng_gauss(); break;
            default: x[i] = 1e-8f * rng_gauss(); break;
            }
        }
        for (int k = 0; k < 3; k++) {
            double me;
            double e = rel_rmse(kt[k], x, 256, &me);
            /* case 4 is below what an fp16 super-block scale can express: it decodes
             * to (nearly) zero, but must stay finite */
            CHECKF(isfinite(e) && e <= (c == 3 ? 0.2 : c == 4 ? 1.0 : 0.1), "%s case %d rel rmse %.5f",
                   gm_type_name(kt[k]), c, e);
            if (c == 0)
                CHECK(e == 0.0);
        }
    }
}

/* ---------------------------------------------------------------- activations */

static void test_act_q8_0(void)
{
    float x[64];
    gm_block_q8_0 y[2];
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16) + 0.5f;      /* block 0: amax 16.5 */
    x[5] = -127.0f;                          /* now amax 127 -> d = 1, q = round(x) */
    for (int j = 0; j < 32; j++)
        x[32 + j] = 0.0f;
    gm_quantize_row_q8_0(x, y, 64);
    CHECK_EQ_INT(y[0].d, 0x3c00);
    CHECK_EQ_INT(y[0].qs[5], -127);
    CHECK_EQ_INT(y[0].qs[18], 3);  /* 2.5 rounds away from zero */
    CHECK_EQ_INT(y[0].qs[13], -3); /* -2.5 */
    CHECK_EQ_INT(y[0].qs[16], 1);  /* 0.5 -> 1 */
    CHECK_EQ_INT(y[1].d, 0);
    int nz = 0;
    for (int j = 0; j < 32; j++) nz += y[1].qs[j] != 0;
    CHECK_EQ_INT(nz, 0);

    static float a[N_RT];
    static gm_block_q8_0 ya[N_RT / 32];
    rng_state = 5;
    make_row(a, N_RT, 2.0f);
    gm_quantize_row_q8_0(a, ya, N_RT);
    int bad = 0, top = 0;
    for (int b = 0; b < N_RT / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(a[32 * b + j]));
        float d = amax / 127.0f;
        bad += ya[b].d != gm_fp32_to_fp16(d);
        int has127 = 0;
        for (int j = 0; j < 32; j++) {
            int qv = ya[b].qs[j];
            has127 |= qv == 127 || qv == -127;
            /* q is the nearest integer to x/d (d before fp16 rounding) */
            bad += fabs((double)a[32 * b + j] / d - qv) > 0.5 + 1e-5;
        }
        top += has127;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(top, N_RT / 32);
}

static void test_act_q8_K(void)
{
    static float x[512];
    static gm_block_q8_K y[2];
    for (int i = 0; i < 256; i++)
        x[i] = (float)((i * 37) % 255 - 127) * 0.5f;
    x[7] = 127.0f;          /* positive max -> iscale -1, d = -1 */
    x[8] = 2.5f;            /* -2.5 ties to even: -2 */
    x[9] = 3.5f;            /* -3.5 -> -4 */
    x[10] = -126.5f;        /* 126.5 -> 126 */
    for (int i = 256; i < 512; i++)
        x[i] = 0.0f;
    memset(y, 0x55, sizeof y); /* the zero block must clear everything */
    gm_quantize_row_q8_K(x, y, 512);
    CHECK_NEAR(y[0].d, -1.0f, 0);
    CHECK_EQ_INT(y[0].qs[7], -127);
    CHECK_EQ_INT(y[0].qs[8], -2);
    CHECK_EQ_INT(y[0].qs[9], -4);
    CHECK_EQ_INT(y[0].qs[10], 126);
    int bad = 0;
    for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int l = 0; l < 16; l++) s += y[0].qs[16 * g + l];
        bad += s != y[0].bsums[g];
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(y[1].d == 0.0f);
    bad = 0;
    for (int i = 0; i < 256; i++) bad += y[1].qs[i] != 0;
    for (int g = 0; g < 16; g++) bad += y[1].bsums[g] != 0;
    CHECK_EQ_INT(bad, 0);

    /* negative max -> positive d; random data: |x - d*q| <= |d|/2, bsums match */
    static float a[N_RT];
    static gm_block_q8_K ya[N_RT / 256];
    rng_state = 77;
    make_row(a, N_RT, 3.0f);
    a[3] = -40.0f;
    gm_quantize_row_q8_K(a, ya, N_RT);
    CHECK(ya[0].d > 0 && fabsf(ya[0].d - 40.0f / 127) < 1e-6f);
    bad = 0;
    for (int b = 0; b < N_RT / 256; b++) {
        float amax = 0, mx = 0;
        for (int j = 0; j < 256; j++)
            if (fabsf(a[256 * b + j]) > amax) { amax = fabsf(a[256 * b + j]); mx = a[256 * b + j]; }
        bad += fabsf(ya[b].d - mx / -127.0f) > 1e-6f * amax;
        for (int j = 0; j < 256; j++)
            bad += fabs((double)a[256 * b + j] - (double)ya[b].d * ya[b].qs[j]) > fabs(ya[b].d) * (0.5 + 1e-5);
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int l = 0; l < 16; l++) s += ya[b].qs[16 * g + l];
            bad += s != ya[b].bsums[g];
        }
    }
    CHECK_EQ_INT(bad, 0);
}

/* ---------------------------------------------------------------- dot products */

static void dequant_act(gm_type at, const void *a, float *out, int n)
{
    if (at == GM_TYPE_Q8_K) {
        const gm_block_q8_K *b = a;
        for (int i = 0; i < n; i++)
            out[i] = b[i / 256].d * (float)b[i / 256].qs[i % 256];
    } else if (at == GM_TYPE_Q8_0) {
        CHECK_EQ_INT(gm_dequantize_row(GM_TYPE_Q8_0, a, out, n), 0);
    } else {
        memcpy(out, a, (size_t)n * sizeof(float));
    }
}

static void test_vec_dot(void)
{
    static const gm_type types[] = { GM_TYPE_F32, GM_TYPE_F16, GM_TYPE_BF16, GM_TYPE_Q4_0,
                                     GM_TYPE_Q4_1, GM_TYPE_Q5_0, GM_TYPE_Q8_0, GM_TYPE_Q4_K,
                                     GM_TYPE_Q5_K, GM_TYPE_Q6_K };
    static const int sizes[] = { 256, 1536, 4096 };
    static float w[N_RT], a[N_RT], wd[N_RT], ad[N_RT];
    static uint8_t wq[N_RT * 4], aq[N_RT * 4 + 64];
    rng_state = 2024;
    double worst = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        gm_type t = types[ti];
        gm_type at = gm_vec_dot_type(t);
        for (size_t si = 0; si < 3; si++) {
            int n = sizes[si];
            for (int rep = 0; rep < 2; rep++) {
                make_row(w, n, 0.05f);
                make_row(a, n, rep ? 10.0f : 1.0f);
                if (rep) /* a bias so the q4_1 / K-quant min terms matter */
                    for (int i = 0; i < n; i++) w[i] += 0.02f;
                CHECK_EQ_INT(gm_quantize_row(t, w, wq, n), 0);
                CHECK_EQ_INT(gm_dequantize_row(t, wq, wd, n), 0);
                if (at == GM_TYPE_Q8_0)
                    gm_quantize_row_q8_0(a, (gm_block_q8_0 *)aq, n);
                else if (at == GM_TYPE_Q8_K)
                    gm_quantize_row_q8_K(a, (gm_block_q8_K *)aq, n);
                else
                    memcpy(aq, a, (size_t)n * sizeof(float));
                dequant_act(at, aq, ad, n);
                double want = 0, mag = 0;
                for (int i = 0; i < n; i++) {
                    want += (double)wd[i] * ad[i];
                    mag += fabs((double)wd[i] * ad[i]);
                }
                float got = gm_vec_dot_ref(t, wq, aq, n);
                double rel = fabs(got - want) / mag;
                worst = fmax(worst, rel);
                CHECKF(rel <= 1e-5, "%s n=%d rep %d: dot %.9g vs %.9g (rel %.3g)",
                       gm_type_name(t), n, rep, got, want, rel);
                /* and it approximates the float dot of the original values */
                double exact = 0;
                for (int i = 0; i < n; i++)
                    exact += (double)w[i] * a[i];
                double tol = (t == GM_TYPE_F32 ? 1e-5 : t == GM_TYPE_Q8_0 || t == GM_TYPE_F16 ? 0.02 : 0.1);
                CHECKF(fabs(got - exact) <= tol * mag, "%s n=%d: dot %.6g vs exact %.6g",
                       gm_type_name(t), n, got, exact);
            }
        }
    }
    printf("vec_dot_ref vs dequantized dot: worst relative error %.3g\n", worst);

    /* the q4_K min term is taken from bsums: with all quants zero only -dmin*m*sum remains */
    gm_block_q4_K wb;
    memset(&wb, 0, sizeof wb);
    wb.dmin = 0x3c00; /* 1.0 */
    wb.scales[4] = 3;  /* m of sub-block 0 = 3 */
    gm_block_q8_K ab;
    memset(&ab, 0, sizeof ab);
    ab.d = 0.5f;
    ab.bsums[0] = 10;
    ab.bsums[1] = -4;
    ab.bsums[2] = 100; /* sub-block 1 has m = 0 */
    CHECK_NEAR(gm_vec_dot_ref(GM_TYPE_Q4_K, &wb, &ab, 256), -1.0 * 0.5 * 3 * 6, 0);
}

int main(void)
{
    test_fp16();
    test_traits();
    test_layout_q4_0_q4_1_q5_0_q8_0();
    test_layout_q4_K();
    test_layout_q5_K();
    test_layout_q6_K();
    test_plain_types();
    test_bad_args();
    test_roundtrip_legacy();
    test_roundtrip_kquants();
    test_act_q8_0();
    test_act_q8_K();
    test_vec_dot();
    return gm_test_finish();
}
