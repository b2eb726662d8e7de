/* gguf.h — GGUF v2/v3 reader on an mmap, and a writer for generated models.
 *
 * The reader validates everything it is given: magic, version, every count and
 * length against the bytes that remain, every string, every tensor's type, shape,
 * offset, alignment and extent. Errors name the file and the key or tensor.
 * Tensor data is never copied: gm_gguf_tensor.data points into the mapping.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gm-error.h"
#include "gm-types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gm_gguf_vtype {
    GM_GGUF_UINT8 = 0,
    GM_GGUF_INT8 = 1,
    GM_GGUF_UINT16 = 2,
    GM_GGUF_INT16 = 3,
    GM_GGUF_UINT32 = 4,
    GM_GGUF_INT32 = 5,
    GM_GGUF_FLOAT32 = 6,
    GM_GGUF_BOOL = 7,
    GM_GGUF_STRING = 8,
    GM_GGUF_ARRAY = 9,
    GM_GGUF_UINT64 = 10,
    GM_GGUF_INT64 = 11,
    GM_GGUF_FLOAT64 = 12,
    GM_GGUF_VTYPE_COUNT = 13,
} gm_gguf_vtype;

#define GM_GGUF_MAX_DIMS 4
#define GM_GGUF_DEFAULT_ALIGNMENT 32

/* A string inside the mapping: not NUL-terminated. */
typedef struct gm_gguf_str {
    const char *ptr;
    uint64_t len;
} gm_gguf_str;

typedef struct gm_gguf_kv {
    char *key;               /* NUL-terminated copy */
    gm_gguf_vtype type;
    /* Scalars: the value, widened. */
    union {
        uint64_t u64;
        int64_t i64;
        double f64;
        bool b;
    } v;
    gm_gguf_str str;         /* type == STRING */
    /* type == ARRAY */
    gm_gguf_vtype arr_type;
    uint64_t arr_n;
    const uint8_t *arr_data; /* numeric arrays: raw little-endian elements in the mapping (maybe unaligned) */
    const uint64_t *arr_str_off; /* string arrays: offset in the mapping of each element's u64 length */
} gm_gguf_kv;

typedef struct gm_gguf_tensor {
    char *name;              /* NUL-terminated copy */
    uint32_t n_dims;
    int64_t ne[GM_GGUF_MAX_DIMS]; /* ggml order: ne[0] is the contiguous dimension; unused dims are 1 */
    gm_type type;
    uint64_t offset;         /* relative to the start of the data section */
    uint64_t nbytes;
    const void *data;        /* into the mapping */
} gm_gguf_tensor;

typedef struct gm_gguf {
    char *path;              /* for messages */
    const uint8_t *base;     /* the mapping (or caller's memory) */
    size_t size;
    bool mapped;             /* we own an mmap */
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;    /* start of the data section within the file */
    uint64_t n_kv;
    gm_gguf_kv *kv;
    uint64_t n_tensors;
    gm_gguf_tensor *tensors;
    /* lookup tables (open addressing), private */
    uint32_t *kv_index;
    uint32_t kv_index_cap;
    uint32_t *tensor_index;
    uint32_t tensor_index_cap;
} gm_gguf;

/* Maps and parses a file. On error returns NULL and fills err (message names the path). */
gm_gguf *gm_gguf_open(const char *path, gm_error *err);
/* Parses a buffer the caller keeps alive (fuzzing, tests). name is used in messages. */
gm_gguf *gm_gguf_open_memory(const void *data, size_t size, const char *name, gm_error *err);
void gm_gguf_close(gm_gguf *g);

const gm_gguf_kv *gm_gguf_find_kv(const gm_gguf *g, const char *key);
const gm_gguf_tensor *gm_gguf_find_tensor(const gm_gguf *g, const char *name);

/* Typed getters. Return GM_OK, or GM_ERR_FORMAT with a message naming file and key when
 * the key is missing (unless *_opt) or has an incompatible type / out-of-range value.
 * Integer getters accept any integer type whose value fits. */
int gm_gguf_get_u32(const gm_gguf *g, const char *key, uint32_t *out, gm_error *err);
int gm_gguf_get_f32(const gm_gguf *g, const char *key, float *out, gm_error *err);
int gm_gguf_get_bool(const gm_gguf *g, const char *key, bool *out, gm_error *err);
/* Returns a NUL-terminated malloc'd copy. */
int gm_gguf_get_str(const gm_gguf *g, const char *key, char **out, gm_error *err);
/* Optional variants: leave *out untouched and return GM_OK when the key is absent. */
int gm_gguf_get_u32_opt(const gm_gguf *g, const char *key, uint32_t *out, gm_error *err);
int gm_gguf_get_f32_opt(const gm_gguf *g, const char *key, float *out, gm_error *err);
int gm_gguf_get_bool_opt(const gm_gguf *g, const char *key, bool *out, gm_error *err);

/* A key that is a scalar integer or an array of integers of exactly n entries
 * (llama.cpp's "scalar or per-layer" keys); fills out[0..n). */
int gm_gguf_get_u32_per_layer(const gm_gguf *g, const char *key, uint32_t n, uint32_t *out, gm_error *err);
/* An array of bool/ints of exactly n entries; non-zero = true. */
int gm_gguf_get_bool_array(const gm_gguf *g, const char *key, uint32_t n, bool *out, gm_error *err);

/* Array element access (bounds-checked; the reader already validated the array). */
gm_gguf_str gm_gguf_arr_str(const gm_gguf *g, const gm_gguf_kv *kv, uint64_t i);
int64_t gm_gguf_arr_int(const gm_gguf_kv *kv, uint64_t i);   /* integer and bool arrays */
double gm_gguf_arr_float(const gm_gguf_kv *kv, uint64_t i);  /* float arrays */

const char *gm_gguf_vtype_name(gm_gguf_vtype t);

/* ---- writer (used by the synthetic model generator and tests) ---- */

typedef struct gm_gguf_writer gm_gguf_writer;

gm_gguf_writer *gm_gguf_writer_new(void);
void gm_gguf_writer_free(gm_gguf_writer *w);
void gm_gguf_writer_set_alignment(gm_gguf_writer *w, uint32_t alignment);
void gm_gguf_add_u32(gm_gguf_writer *w, const char *key, uint32_t v);
void gm_gguf_add_i32(gm_gguf_writer *w, const char *key, int32_t v);
void gm_gguf_add_f32(gm_gguf_writer *w, const char *key, float v);
void gm_gguf_add_bool(gm_gguf_writer *w, const char *key, bool v);
void gm_gguf_add_str(gm_gguf_writer *w, const char *key, const char *v);
void gm_gguf_add_arr_u32(gm_gguf_writer *w, const char *key, const uint32_t *v, uint64_t n);
void gm_gguf_add_arr_i32(gm_gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
void gm_gguf_add_arr_f32(gm_gguf_writer *w, const char *key, const float *v, uint64_t n);
void gm_gguf_add_arr_bool(gm_gguf_writer *w, const char *key, const bool *v, uint64_t n);
/* Strings given as (ptr, len) pairs so binary-safe vocab pieces can be copied. */
void gm_gguf_add_arr_str(gm_gguf_writer *w, const char *key, const gm_gguf_str *v, uint64_t n);
/* Copies every key of src (used to carry a tokenizer into a generated model). */
void gm_gguf_add_kv_from(gm_gguf_writer *w, const gm_gguf *src, const gm_gguf_kv *kv);
/* Adds a tensor; data (nbytes = gm_row_size(type, ne[0]) * ne[1] * ...) is copied.
 * data may be NULL when the file is written in streaming mode (below). */
int gm_gguf_add_tensor(gm_gguf_writer *w, const char *name, gm_type type, uint32_t n_dims,
                       const int64_t *ne, const void *data, gm_error *err);
/* Writes the whole file (every tensor must have data). */
int gm_gguf_writer_write(gm_gguf_writer *w, const char *path, gm_error *err);
/* Streaming mode for multi-GiB files: add every tensor with data == NULL, then
 * begin (writes header, metadata and tensor infos), then stream each tensor's data
 * in the order the tensors were added, then finish. */
int gm_gguf_writer_begin(gm_gguf_writer *w, const char *path, gm_error *err);
int gm_gguf_writer_stream_tensor(gm_gguf_writer *w, const void *data, gm_error *err);
/* Streams the current tensor's data in parts: appends n bytes of it. Once its nbytes
 * have been written the tensor is complete (and padded), and the next part starts the
 * next tensor. A part may not run past the end of the current tensor (GM_ERR_INVALID;
 * nothing is written); n = 0 does nothing. stream_tensor is one part of the whole
 * tensor (so it fails after a part of the same tensor). */
int gm_gguf_writer_stream_part(gm_gguf_writer *w, const void *data, size_t n, gm_error *err);
int gm_gguf_writer_finish(gm_gguf_writer *w, gm_error *err);

#ifdef __cplusplus
}
#endif
