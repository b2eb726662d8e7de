/* cpu.c — CPUID/XGETBV feature detection and ISA selection. */
#include "cpu.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define GM_X86 1
#endif

static gm_cpu_features g_features;
static char g_describe[256];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

#ifdef GM_X86
static void cpuid_count(unsigned leaf, unsigned sub, unsigned r[4])
{
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}

static unsigned long long read_xcr0(void)
{
    unsigned lo, hi;
    /* xgetbv with ecx=0; encoded by hand so no -mxsave is needed. */
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

static void detect(void)
{
    gm_cpu_features f;
    memset(&f, 0, sizeof f);
#ifdef GM_X86
    unsigned r[4];
    unsigned max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf >= 1) {
        cpuid_count(1, 0, r);
        bool osxsave = (r[2] >> 27) & 1;
        bool avx = (r[2] >> 28) & 1;
        bool fma = (r[2] >> 12) & 1;
        bool f16c = (r[2] >> 29) & 1;
        unsigned long long xcr0 = osxsave ? read_xcr0() : 0;
        /* The OS must save XMM|YMM (bits 1,2) for AVX, plus opmask/ZMM (5,6,7) for AVX-512,
         * plus XTILECFG/XTILEDATA (17,18) for AMX. */
        bool os_avx = (xcr0 & 0x6) == 0x6;
        bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
        bool os_amx = (xcr0 & (3ull << 17)) == (3ull << 17);
        if (max_leaf >= 7 && avx && os_avx) {
            cpuid_count(7, 0, r);
            unsigned ebx = r[1], ecx = r[2], edx = r[3];
            f.avx2 = (ebx >> 5) & 1;
            f.fma = fma;
            f.f16c = f16c;
            if (os_avx512) {
                f.avx512f = (ebx >> 16) & 1;
                f.avx512dq = (ebx >> 17) & 1;
                f.avx512bw = (ebx >> 30) & 1;
                f.avx512vl = (ebx >> 31) & 1;
                f.avx512vnni = (ecx >> 11) & 1;
            }
            if (os_amx) {
                f.amx_bf16 = (edx >> 22) & 1;
                f.amx_tile = (edx >> 24) & 1;
                f.amx_int8 = (edx >> 25) & 1;
            }
            unsigned sub_max = r[0];
            if (sub_max >= 1) {
                cpuid_count(7, 1, r);
                f.avx_vnni = (r[0] >> 4) & 1;
                if (os_avx512)
                    f.avx512bf16 = (r[0] >> 5) & 1;
            }
        }
    }
#endif
    g_features = f;

    static const struct { size_t off; const char *name; } names[] = {
#define F(x) { offsetof(gm_cpu_features, x), #x }
        F(avx2), F(fma), F(f16c), F(avx512f), F(avx512bw), F(avx512vl), F(avx512dq),
        F(avx512vnni), F(avx512bf16), F(avx_vnni), F(amx_tile), F(amx_int8), F(amx_bf16),
#undef F
    };
    size_t len = 0;
    g_describe[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        bool on;
        memcpy(&on, (const char *)&g_features + names[i].off, sizeof on);
        if (!on)
            continue;
        int w = snprintf(g_describe + len, sizeof g_describe - len, "%s%s", len ? " " : "",
                         names[i].name);
        if (w < 0 || (size_t)w >= sizeof g_describe - len)
            break;
        len += (size_t)w;
    }
    if (len == 0)
        snprintf(g_describe, sizeof g_describe, "(no SIMD extensions)");
}

const gm_cpu_features *gm_cpu_get_features(void)
{
    pthread_once(&g_once, detect);
    return &g_features;
}

static gm_isa hw_best(const gm_cpu_features *f)
{
    if (f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->avx512vnni && f->fma &&
        f->f16c && f->avx2)
        return GM_ISA_AVX512;
    if (f->avx2 && f->fma && f->f16c)
        return GM_ISA_AVX2;
    return GM_ISA_SCALAR;
}

gm_isa gm_cpu_best_isa(void)
{
    gm_isa best = hw_best(gm_cpu_get_features());
    /* The override can only lower the choice: asking for an ISA the CPU lacks must not crash. */
    const char *env = getenv("GEMMAD_ISA");
    if (env && *env) {
        gm_isa want = best;
        if (!strcmp(env, "scalar"))
            want = GM_ISA_SCALAR;
        else if (!strcmp(env, "avx2"))
            want = GM_ISA_AVX2;
        else if (!strcmp(env, "avx512"))
            want = GM_ISA_AVX512;
        if (want < best)
            best = want;
    }
    return best;
}

const char *gm_isa_name(gm_isa isa)
{
    switch (isa) {
    case GM_ISA_SCALAR: return "scalar";
    case GM_ISA_AVX2: return "avx2";
    case GM_ISA_AVX512: return "avx512";
    }
    return "unknown";
}

const char *gm_cpu_describe(void)
{
    pthread_once(&g_once, detect);
    return g_describe;
}
