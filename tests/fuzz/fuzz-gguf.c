/* fuzz-gguf.c — libFuzzer target for the GGUF reader.
 *
 * Opens the input with gm_gguf_open_memory; when it parses, every key and tensor is
 * looked up again, every getter and array accessor is called on every key, each
 * tensor's first and last data byte is read, and every key and tensor is copied
 * into a writer (not written out), so the whole read API runs on accepted inputs.
 * Any inconsistency found is a bug: the target then aborts so the fuzzer saves it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(c) do { if (!(c)) { fprintf(stderr, "fuzz-gguf: %s failed\n", #c); abort(); } } while (0)

static volatile uint8_t sink;

static void exercise_kv(const gm_gguf *g, const gm_gguf_kv *kv)
{
    gm_error err = { 0 };
    FUZZ_ASSERT(gm_gguf_find_kv(g, kv->key) == kv);
    FUZZ_ASSERT(strcmp(gm_gguf_vtype_name(kv->type), "unknown") != 0);

    uint32_t u = 0;
    float f = 0;
    bool b = false;
    char *s = NULL;
    int rc = gm_gguf_get_u32(g, kv->key, &u, &err);
    FUZZ_ASSERT(rc == GM_OK || strstr(err.msg, kv->key));
    gm_gguf_get_u32_opt(g, kv->key, &u, &err);
    rc = gm_gguf_get_f32(g, kv->key, &f, &err);
    FUZZ_ASSERT(rc == GM_OK || strstr(err.msg, kv->key));
    gm_gguf_get_f32_opt(g, kv->key, &f, &err);
    gm_gguf_get_bool(g, kv->key, &b, &err);
    gm_gguf_get_bool_opt(g, kv->key, &b, &err);
    if (gm_gguf_get_str(g, kv->key, &s, &err) == GM_OK) {
        FUZZ_ASSERT(kv->type == GM_GGUF_STRING && s[kv->str.len] == '\0');
        free(s);
    }

    /* per-layer getters with the array's own length (bounded) and a mismatching one */
    uint32_t n = kv->type == GM_GGUF_ARRAY ? (kv->arr_n < 4096 ? (uint32_t)kv->arr_n : 4096) : 3;
    uint32_t *pl = malloc((size_t)n * sizeof *pl + 1);
    bool *ba = malloc((size_t)n * sizeof *ba + 1);
    if (pl && ba) {
        gm_gguf_get_u32_per_layer(g, kv->key, n, pl, &err);
        gm_gguf_get_bool_array(g, kv->key, n, ba, &err);
        gm_gguf_get_u32_per_layer(g, kv->key, n ? n - 1 : 1, pl, &err);
    }
    free(pl);
    free(ba);

    if (kv->type == GM_GGUF_STRING && kv->str.len) {
        sink ^= (uint8_t)kv->str.ptr[0];
        sink ^= (uint8_t)kv->str.ptr[kv->str.len - 1];
    }
    if (kv->type != GM_GGUF_ARRAY)
        return;
    FUZZ_ASSERT(kv->arr_type != GM_GGUF_ARRAY && (unsigned)kv->arr_type < GM_GGUF_VTYPE_COUNT);
    for (uint64_t i = 0; i <= kv->arr_n; i++) { /* one past the end on purpose */
        if (kv->arr_type == GM_GGUF_STRING) {
            gm_gguf_str e = gm_gguf_arr_str(g, kv, i);
            if (i == kv->arr_n) {
                FUZZ_ASSERT(e.ptr == NULL);
            } else {
                FUZZ_ASSERT(e.ptr != NULL);
                FUZZ_ASSERT((const uint8_t *)e.ptr >= g->base &&
                            (const uint8_t *)e.ptr + e.len <= g->base + g->size);
                if (e.len)
                    sink ^= (uint8_t)(e.ptr[0] ^ e.ptr[e.len - 1]);
            }
        } else {
            int64_t v = gm_gguf_arr_int(kv, i);
            double d = gm_gguf_arr_float(kv, i);
            if (i == kv->arr_n)
                FUZZ_ASSERT(v == 0 && d == 0.0);
            if (kv->arr_type == GM_GGUF_BOOL && i < kv->arr_n)
                FUZZ_ASSERT(v == 0 || v == 1);
            sink ^= (uint8_t)v;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gm_error err = { 0 };
    gm_gguf *g = gm_gguf_open_memory(data, size, "fuzz.gguf", &err);
    if (!g) {
        FUZZ_ASSERT(err.code < 0 && strstr(err.msg, "fuzz.gguf") != NULL);
        return 0;
    }
    FUZZ_ASSERT(g->version == 2 || g->version == 3);
    FUZZ_ASSERT(g->alignment && !(g->alignment & (g->alignment - 1)));
    gm_gguf_writer *w = gm_gguf_writer_new();
    for (uint64_t i = 0; i < g->n_kv; i++) {
        exercise_kv(g, &g->kv[i]);
        gm_gguf_add_kv_from(w, g, &g->kv[i]);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gm_gguf_tensor *t = &g->tensors[i];
        FUZZ_ASSERT(gm_gguf_find_tensor(g, t->name) == t);
        FUZZ_ASSERT(t->n_dims >= 1 && t->n_dims <= GM_GGUF_MAX_DIMS && t->nbytes > 0);
        FUZZ_ASSERT(t->offset % g->alignment == 0);
        const uint8_t *p = t->data;
        FUZZ_ASSERT(p >= g->base && p + t->nbytes <= g->base + g->size);
        sink ^= p[0];
        sink ^= p[t->nbytes - 1];
        /* the writer recomputes the size from type and shape: it must agree */
        size_t rows = 1;
        for (int d = 1; d < GM_GGUF_MAX_DIMS; d++)
            rows *= (size_t)t->ne[d];
        FUZZ_ASSERT(gm_row_size(t->type, t->ne[0]) * rows == t->nbytes);
        gm_error werr = { 0 };
        int rc = gm_gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, &werr);
        FUZZ_ASSERT(rc == GM_OK);
    }
    gm_gguf_writer_free(w);
    FUZZ_ASSERT(gm_gguf_find_kv(g, "\x01no such key") == NULL);
    FUZZ_ASSERT(gm_gguf_find_tensor(g, "\x01no such tensor") == NULL);
    gm_gguf_close(g);
    return 0;
}
