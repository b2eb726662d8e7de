/* gguf-writer.c — writes GGUF v3 files (metadata, tensor infos, aligned tensor data).
 *
 * Metadata values are serialized when added, so the writer owns copies of everything.
 * The add_* functions cannot fail visibly (they return void); the first problem is
 * remembered and reported by write/begin. Tensor data is copied in whole-file mode and
 * never buffered in streaming mode, so multi-GiB synthetic models need no extra memory.
 */
#include "gguf.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct wkv {
    char *key;
    uint32_t type;      /* gm_gguf_vtype */
    uint8_t *payload;   /* serialized value (after the type id) */
    size_t payload_len;
} wkv;

typedef struct wtensor {
    char *name;
    uint32_t n_dims;
    int64_t ne[GM_GGUF_MAX_DIMS];
    gm_type type;
    uint64_t nbytes;
    uint64_t offset;
    void *data; /* copy, or NULL in streaming mode */
} wtensor;

struct gm_gguf_writer {
    uint32_t alignment;
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    /* first error from a void add_* call */
    int pending_rc;
    char pending_msg[sizeof(((gm_error *)0)->msg)];
    /* streaming state */
    FILE *f;
    char *path;
    size_t next_stream;
    uint64_t written; /* bytes of the data section written so far */
    uint64_t cur_done; /* bytes of tensor next_stream written so far (stream_part) */
};

static void pending(gm_gguf_writer *w, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void pending(gm_gguf_writer *w, int rc, const char *fmt, ...)
{
    if (w->pending_rc)
        return;
    w->pending_rc = rc;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->pending_msg, sizeof w->pending_msg, fmt, ap);
    va_end(ap);
}

gm_gguf_writer *gm_gguf_writer_new(void)
{
    gm_gguf_writer *w = calloc(1, sizeof *w);
    if (w)
        w->alignment = GM_GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gm_gguf_writer_free(gm_gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].payload);
    }
    free(w->kv);
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    if (w->f) {
        /* an unfinished streaming write leaves no half-written file behind */
        fclose(w->f);
        if (w->path)
            unlink(w->path);
    }
    free(w->path);
    free(w);
}

void gm_gguf_writer_set_alignment(gm_gguf_writer *w, uint32_t alignment)
{
    if (!w)
        return;
    if (alignment == 0 || (alignment & (alignment - 1))) {
        pending(w, GM_ERR_INVALID, "alignment %" PRIu32 " is not a power of two", alignment);
        return;
    }
    w->alignment = alignment;
}

/* ---- serialization buffer ---- */

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} buf;

static void buf_put(buf *b, const void *src, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void buf_le(buf *b, uint64_t v, unsigned n)
{
    uint8_t tmp[8];
    for (unsigned i = 0; i < n; i++)
        tmp[i] = (uint8_t)(v >> (8 * i));
    buf_put(b, tmp, n);
}

static void buf_str(buf *b, const void *s, uint64_t len)
{
    buf_le(b, len, 8);
    buf_put(b, s, (size_t)len);
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Adds or replaces key with a serialized payload (ownership of b.p passes to the writer). */
static void set_kv(gm_gguf_writer *w, const char *key, uint32_t type, buf *b)
{
    if (!w) {
        free(b->p);
        return;
    }
    if (!key || !*key) {
        free(b->p);
        pending(w, GM_ERR_INVALID, "empty metadata key");
        return;
    }
    if (b->oom) {
        free(b->p);
        pending(w, GM_ERR_NOMEM, "key '%s': out of memory", key);
        return;
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) == 0) {
            free(w->kv[i].payload);
            w->kv[i].type = type;
            w->kv[i].payload = b->p;
            w->kv[i].payload_len = b->len;
            return;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        wkv *kv = realloc(w->kv, cap * sizeof *kv);
        if (!kv) {
            free(b->p);
            pending(w, GM_ERR_NOMEM, "key '%s': out of memory", key);
            return;
        }
        w->kv = kv;
        w->cap_kv = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(b->p);
        pending(w, GM_ERR_NOMEM, "key '%s': out of memory", key);
        return;
    }
    w->kv[w->n_kv++] = (wkv){ .key = k, .type = type, .payload = b->p, .payload_len = b->len };
}

void gm_gguf_add_u32(gm_gguf_writer *w, const char *key, uint32_t v)
{
    buf b = { 0 };
    buf_le(&b, v, 4);
    set_kv(w, key, GM_GGUF_UINT32, &b);
}

void gm_gguf_add_i32(gm_gguf_writer *w, const char *key, int32_t v)
{
    buf b = { 0 };
    buf_le(&b, (uint32_t)v, 4);
    set_kv(w, key, GM_GGUF_INT32, &b);
}

void gm_gguf_add_f32(gm_gguf_writer *w, const char *key, float v)
{
    buf b = { 0 };
    buf_le(&b, f32_bits(v), 4);
    set_kv(w, key, GM_GGUF_FLOAT32, &b);
}

void gm_gguf_add_bool(gm_gguf_writer *w, const char *key, bool v)
{
    buf b = { 0 };
    buf_le(&b, v ? 1 : 0, 1);
    set_kv(w, key, GM_GGUF_BOOL, &b);
}

void gm_gguf_add_str(gm_gguf_writer *w, const char *key, const char *v)
{
    buf b = { 0 };
    buf_str(&b, v ? v : "", v ? strlen(v) : 0);
    set_kv(w, key, GM_GGUF_STRING, &b);
}

static void arr_header(buf *b, uint32_t elem_type, uint64_t n)
{
    buf_le(b, elem_type, 4);
    buf_le(b, n, 8);
}

void gm_gguf_add_arr_u32(gm_gguf_writer *w, const char *key, const uint32_t *v, uint64_t n)
{
    buf b = { 0 };
    arr_header(&b, GM_GGUF_UINT32, n);
    for (uint64_t i = 0; i < n; i++)
        buf_le(&b, v[i], 4);
    set_kv(w, key, GM_GGUF_ARRAY, &b);
}

void gm_gguf_add_arr_i32(gm_gguf_writer *w, const char *key, const int32_t *v, uint64_t n)
{
    buf b = { 0 };
    arr_header(&b, GM_GGUF_INT32, n);
    for (uint64_t i = 0; i < n; i++)
        buf_le(&b, (uint32_t)v[i], 4);
    set_kv(w, key, GM_GGUF_ARRAY, &b);
}

void gm_gguf_add_arr_f32(gm_gguf_writer *w, const char *key, const float *v, uint64_t n)
{
    buf b = { 0 };
    arr_header(&b, GM_GGUF_FLOAT32, n);
    for (uint64_t i = 0; i < n; i++)
        buf_le(&b, f32_bits(v[i]), 4);
    set_kv(w, key, GM_GGUF_ARRAY, &b);
}

void gm_gguf_add_arr_bool(gm_gguf_writer *w, const char *key, const bool *v, uint64_t n)
{
    buf b = { 0 };
    arr_header(&b, GM_GGUF_BOOL, n);
    for (uint64_t i = 0; i < n; i++)
        buf_le(&b, v[i] ? 1 : 0, 1);
    set_kv(w, key, GM_GGUF_ARRAY, &b);
}

void gm_gguf_add_arr_str(gm_gguf_writer *w, const char *key, const gm_gguf_str *v, uint64_t n)
{
    buf b = { 0 };
    arr_header(&b, GM_GGUF_STRING, n);
    for (uint64_t i = 0; i < n; i++)
        buf_str(&b, v[i].ptr, v[i].ptr ? v[i].len : 0);
    set_kv(w, key, GM_GGUF_ARRAY, &b);
}

/* Element size of fixed-width types; 0 for string/array/unknown. */
static size_t elem_size(uint32_t t)
{
    switch (t) {
    case GM_GGUF_UINT8: case GM_GGUF_INT8: case GM_GGUF_BOOL: return 1;
    case GM_GGUF_UINT16: case GM_GGUF_INT16: return 2;
    case GM_GGUF_UINT32: case GM_GGUF_INT32: case GM_GGUF_FLOAT32: return 4;
    case GM_GGUF_UINT64: case GM_GGUF_INT64: case GM_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

void gm_gguf_add_kv_from(gm_gguf_writer *w, const gm_gguf *src, const gm_gguf_kv *kv)
{
    if (!w)
        return;
    if (!src || !kv) {
        pending(w, GM_ERR_INVALID, "gm_gguf_add_kv_from: no source key");
        return;
    }
    buf b = { 0 };
    switch (kv->type) {
    case GM_GGUF_STRING:
        buf_str(&b, kv->str.ptr, kv->str.len);
        break;
    case GM_GGUF_ARRAY: {
        arr_header(&b, kv->arr_type, kv->arr_n);
        if (kv->arr_type == GM_GGUF_STRING) {
            for (uint64_t i = 0; i < kv->arr_n; i++) {
                gm_gguf_str s = gm_gguf_arr_str(src, kv, i);
                buf_str(&b, s.ptr, s.len);
            }
        } else {
            size_t es = elem_size(kv->arr_type);
            if (!es) {
                free(b.p);
                pending(w, GM_ERR_INVALID, "%s: key '%s': cannot copy an array of %s", src->path,
                        kv->key, gm_gguf_vtype_name(kv->arr_type));
                return;
            }
            /* the reader bounded arr_n * es by the file size */
            buf_put(&b, kv->arr_data, (size_t)kv->arr_n * es);
        }
        break;
    }
    case GM_GGUF_BOOL:
        buf_le(&b, kv->v.b ? 1 : 0, 1);
        break;
    case GM_GGUF_FLOAT32:
        buf_le(&b, f32_bits((float)kv->v.f64), 4);
        break;
    case GM_GGUF_FLOAT64: {
        uint64_t u;
        memcpy(&u, &kv->v.f64, 8);
        buf_le(&b, u, 8);
        break;
    }
    default: {
        size_t es = elem_size(kv->type);
        if (!es) {
            free(b.p);
            pending(w, GM_ERR_INVALID, "%s: key '%s': unknown value type %d", src->path, kv->key,
                    (int)kv->type);
            return;
        }
        /* the union's u64 and i64 views share bits; truncation keeps the low bytes */
        buf_le(&b, kv->v.u64, (unsigned)es);
        break;
    }
    }
    set_kv(w, kv->key, kv->type, &b);
}

/* ---- tensors ---- */

int gm_gguf_add_tensor(gm_gguf_writer *w, const char *name, gm_type type, uint32_t n_dims,
                       const int64_t *ne, const void *data, gm_error *err)
{
    if (!w || !name || !*name || !ne)
        return gm_set_error(err, GM_ERR_INVALID, "gm_gguf_add_tensor: missing writer, name or shape");
    if (w->f)
        return gm_set_error(err, GM_ERR_INVALID, "tensor '%s': cannot add tensors after begin", name);
    /* llama.cpp rejects names of GGML_MAX_NAME (64) bytes or more */
    if (strlen(name) >= 64)
        return gm_set_error(err, GM_ERR_INVALID, "tensor '%s': name longer than 63 bytes", name);
    if (n_dims < 1 || n_dims > GM_GGUF_MAX_DIMS)
        return gm_set_error(err, GM_ERR_INVALID, "tensor '%s': n_dims %" PRIu32 " is not in 1..%d",
                            name, n_dims, GM_GGUF_MAX_DIMS);
    const gm_type_traits *tr = gm_type_get_traits((uint32_t)type);
    if (!tr)
        return gm_set_error(err, GM_ERR_INVALID, "tensor '%s': unknown type %d", name, (int)type);
    wtensor t = { .n_dims = n_dims, .type = type };
    for (int d = 0; d < GM_GGUF_MAX_DIMS; d++)
        t.ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 1)
            return gm_set_error(err, GM_ERR_INVALID, "tensor '%s': dimension %" PRIu32 " is %" PRId64,
                                name, d, ne[d]);
        t.ne[d] = ne[d];
    }
    if (t.ne[0] % tr->block_size)
        return gm_set_error(err, GM_ERR_INVALID, "tensor '%s': row length %" PRId64
                            " is not a multiple of the %s block size %d", name, t.ne[0], tr->name,
                            tr->block_size);
    uint64_t nbytes = (uint64_t)(t.ne[0] / tr->block_size) * tr->type_size;
    for (int d = 1; d < GM_GGUF_MAX_DIMS; d++) {
        if ((uint64_t)t.ne[d] > UINT64_MAX / nbytes)
            return gm_set_error(err, GM_ERR_INVALID, "tensor '%s': size overflows", name);
        nbytes *= (uint64_t)t.ne[d];
    }
    t.nbytes = nbytes;
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return gm_set_error(err, GM_ERR_INVALID, "tensor '%s' added twice", name);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 16;
        wtensor *nt = realloc(w->t, cap * sizeof *nt);
        if (!nt)
            return gm_set_error(err, GM_ERR_NOMEM, "tensor '%s': out of memory", name);
        w->t = nt;
        w->cap_t = cap;
    }
    t.name = strdup(name);
    if (!t.name)
        return gm_set_error(err, GM_ERR_NOMEM, "tensor '%s': out of memory", name);
    if (data) {
        if (nbytes > SIZE_MAX || !(t.data = malloc(nbytes ? (size_t)nbytes : 1))) {
            free(t.name);
            return gm_set_error(err, GM_ERR_NOMEM, "tensor '%s': out of memory for %" PRIu64 " bytes",
                                name, nbytes);
        }
        memcpy(t.data, data, (size_t)nbytes);
    }
    w->t[w->n_t++] = t;
    return GM_OK;
}

/* ---- output ---- */

static uint64_t pad_to(uint64_t x, uint64_t a)
{
    return (a - x % a) % a;
}

static int write_bytes(gm_gguf_writer *w, const void *p, size_t n, gm_error *err)
{
    if (n && fwrite(p, 1, n, w->f) != n)
        return gm_set_error(err, GM_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
    return GM_OK;
}

static int write_zeros(gm_gguf_writer *w, uint64_t n, gm_error *err)
{
    static const uint8_t zeros[256];
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        int rc = write_bytes(w, zeros, k, err);
        if (rc)
            return rc;
        n -= k;
    }
    return GM_OK;
}

/* Drops the open file after a failure. */
static int abort_stream(gm_gguf_writer *w, int rc)
{
    if (w->f) {
        fclose(w->f);
        w->f = NULL;
        unlink(w->path);
    }
    return rc;
}

int gm_gguf_writer_begin(gm_gguf_writer *w, const char *path, gm_error *err)
{
    if (!w || !path)
        return gm_set_error(err, GM_ERR_INVALID, "gm_gguf_writer_begin: no writer or path");
    if (w->f)
        return gm_set_error(err, GM_ERR_INVALID, "%s: writer already started", path);
    if (w->pending_rc)
        return gm_set_error(err, w->pending_rc, "%s: %s", path, w->pending_msg);

    /* The writer owns general.alignment: a copied one is dropped, ours written if non-default. */
    bool write_alignment = w->alignment != GM_GGUF_DEFAULT_ALIGNMENT;
    uint64_t n_kv = write_alignment;
    for (size_t i = 0; i < w->n_kv; i++)
        n_kv += strcmp(w->kv[i].key, "general.alignment") != 0;

    buf h = { 0 };
    buf_put(&h, "GGUF", 4);
    buf_le(&h, 3, 4);
    buf_le(&h, w->n_t, 8);
    buf_le(&h, n_kv, 8);
    if (write_alignment) {
        buf_str(&h, "general.alignment", strlen("general.alignment"));
        buf_le(&h, GM_GGUF_UINT32, 4);
        buf_le(&h, w->alignment, 4);
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") == 0)
            continue;
        buf_str(&h, w->kv[i].key, strlen(w->kv[i].key));
        buf_le(&h, w->kv[i].type, 4);
        buf_put(&h, w->kv[i].payload, w->kv[i].payload_len);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        wtensor *t = &w->t[i];
        t->offset = off;
        buf_str(&h, t->name, strlen(t->name));
        buf_le(&h, t->n_dims, 4);
        for (uint32_t d = 0; d < t->n_dims; d++)
            buf_le(&h, (uint64_t)t->ne[d], 8);
        buf_le(&h, (uint32_t)t->type, 4);
        buf_le(&h, t->offset, 8);
        off += t->nbytes + pad_to(t->nbytes, w->alignment);
    }
    buf_put(&h, NULL, 0);
    if (h.oom) {
        free(h.p);
        return gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory for the header", path);
    }
    free(w->path);
    w->path = strdup(path);
    if (!w->path) {
        free(h.p);
        return gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", path);
    }
    w->f = fopen(path, "wb");
    if (!w->f) {
        free(h.p);
        return gm_set_error(err, GM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    int rc = write_bytes(w, h.p, h.len, err);
    if (!rc)
        rc = write_zeros(w, pad_to(h.len, w->alignment), err);
    free(h.p);
    if (rc)
        return abort_stream(w, rc);
    w->next_stream = 0;
    w->written = 0;
    w->cur_done = 0;
    return GM_OK;
}

/* Appends n bytes to the current tensor (the caller checked that it exists); pads and
 * moves on once the tensor is complete. */
static int append_part(gm_gguf_writer *w, const void *data, size_t n, gm_error *err)
{
    wtensor *t = &w->t[w->next_stream];
    if (n > t->nbytes - w->cur_done)
        return gm_set_error(err, GM_ERR_INVALID, "%s: tensor '%s': a part of %zu bytes at byte %" PRIu64
                            " runs past its %" PRIu64 " bytes", w->path, t->name, n, w->cur_done, t->nbytes);
    int rc = write_bytes(w, data, n, err);
    if (rc)
        return abort_stream(w, rc);
    w->cur_done += n;
    w->written += n;
    if (w->cur_done == t->nbytes) {
        uint64_t pad = pad_to(t->nbytes, w->alignment);
        rc = write_zeros(w, pad, err);
        if (rc)
            return abort_stream(w, rc);
        w->written += pad;
        w->cur_done = 0;
        w->next_stream++;
    }
    return GM_OK;
}

/* The tensor that streamed data goes to next; NULL with *rc and err set when there is
 * none (no data aborts the file, as a caller bug that leaves it unusable). */
static wtensor *stream_target(gm_gguf_writer *w, const char *fn, const void *data, int *rc, gm_error *err)
{
    if (!w || !w->f) {
        *rc = gm_set_error(err, GM_ERR_INVALID, "%s: writer not started", fn);
        return NULL;
    }
    if (w->next_stream >= w->n_t) {
        *rc = gm_set_error(err, GM_ERR_INVALID, "%s: more tensor data streamed than tensors added (%zu)",
                           w->path, w->n_t);
        return NULL;
    }
    wtensor *t = &w->t[w->next_stream];
    if (!data) {
        *rc = abort_stream(w, gm_set_error(err, GM_ERR_INVALID, "%s: tensor '%s': no data", w->path, t->name));
        return NULL;
    }
    return t;
}

int gm_gguf_writer_stream_tensor(gm_gguf_writer *w, const void *data, gm_error *err)
{
    int rc = GM_OK;
    wtensor *t = stream_target(w, "gm_gguf_writer_stream_tensor", data, &rc, err);
    if (!t)
        return rc;
    if (w->cur_done)
        return gm_set_error(err, GM_ERR_INVALID, "%s: tensor '%s': %" PRIu64 " of its %" PRIu64
                            " bytes were already streamed in parts", w->path, t->name, w->cur_done, t->nbytes);
    return append_part(w, data, (size_t)t->nbytes, err);
}

int gm_gguf_writer_stream_part(gm_gguf_writer *w, const void *data, size_t n, gm_error *err)
{
    if (n == 0 && w && w->f)
        return GM_OK;
    int rc = GM_OK;
    if (!stream_target(w, "gm_gguf_writer_stream_part", data, &rc, err))
        return rc;
    return append_part(w, data, n, err);
}

int gm_gguf_writer_finish(gm_gguf_writer *w, gm_error *err)
{
    if (!w || !w->f)
        return gm_set_error(err, GM_ERR_INVALID, "gm_gguf_writer_finish: writer not started");
    if (w->next_stream != w->n_t)
        return abort_stream(w, gm_set_error(err, GM_ERR_INVALID,
                                            "%s: only %zu of %zu tensors were streamed (next: '%s', "
                                            "%" PRIu64 " of %" PRIu64 " bytes)",
                                            w->path, w->next_stream, w->n_t, w->t[w->next_stream].name,
                                            w->cur_done, w->t[w->next_stream].nbytes));
    int rc = GM_OK;
    if (fflush(w->f) != 0 || ferror(w->f))
        rc = gm_set_error(err, GM_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
    if (fclose(w->f) != 0 && !rc)
        rc = gm_set_error(err, GM_ERR_IO, "%s: close failed: %s", w->path, strerror(errno));
    w->f = NULL;
    if (rc)
        unlink(w->path);
    return rc;
}

int gm_gguf_writer_write(gm_gguf_writer *w, const char *path, gm_error *err)
{
    if (!w || !path)
        return gm_set_error(err, GM_ERR_INVALID, "gm_gguf_writer_write: no writer or path");
    for (size_t i = 0; i < w->n_t; i++)
        if (!w->t[i].data)
            return gm_set_error(err, GM_ERR_INVALID, "%s: tensor '%s' has no data (use the streaming "
                                "functions)", path, w->t[i].name);
    int rc = gm_gguf_writer_begin(w, path, err);
    for (size_t i = 0; !rc && i < w->n_t; i++)
        rc = gm_gguf_writer_stream_tensor(w, w->t[i].data, err);
    if (!rc)
        rc = gm_gguf_writer_finish(w, err);
    return rc;
}
