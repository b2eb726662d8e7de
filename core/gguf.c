/* gguf.c — GGUF v2/v3 reader.
 *
 * The file is mapped read-only and parsed with a bounds-checked cursor. Every count
 * read from the file is checked against the bytes that remain before anything is
 * allocated from it, so a hostile header cannot make us allocate more than a small
 * multiple of the input size. Tensor data is never touched while loading: only the
 * header pages are read, so a multi-GiB model opens in milliseconds.
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC "GGUF"

/* Smallest possible encodings, used to bound counts before allocating:
 * key/value = u64 key length + 1 key byte + u32 type + 1 value byte;
 * tensor info = u64 name length + 1 name byte + u32 n_dims + one i64 dim + u32 type + u64 offset. */
#define MIN_KV_BYTES 14u
#define MIN_TENSOR_INFO_BYTES 33u

/* Sizes of the fixed-width value types (0 = not fixed-width). */
static const uint8_t vtype_size[GM_GGUF_VTYPE_COUNT] = {
    [GM_GGUF_UINT8] = 1, [GM_GGUF_INT8] = 1, [GM_GGUF_UINT16] = 2, [GM_GGUF_INT16] = 2,
    [GM_GGUF_UINT32] = 4, [GM_GGUF_INT32] = 4, [GM_GGUF_FLOAT32] = 4, [GM_GGUF_BOOL] = 1,
    [GM_GGUF_UINT64] = 8, [GM_GGUF_INT64] = 8, [GM_GGUF_FLOAT64] = 8,
};

static const char *const vtype_names[GM_GGUF_VTYPE_COUNT] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
    "bool", "string", "array", "uint64", "int64", "float64",
};

const char *gm_gguf_vtype_name(gm_gguf_vtype t)
{
    if ((unsigned)t < GM_GGUF_VTYPE_COUNT)
        return vtype_names[t];
    return "unknown";
}

static bool vtype_is_unsigned(gm_gguf_vtype t)
{
    return t == GM_GGUF_UINT8 || t == GM_GGUF_UINT16 || t == GM_GGUF_UINT32 || t == GM_GGUF_UINT64;
}

static bool vtype_is_signed(gm_gguf_vtype t)
{
    return t == GM_GGUF_INT8 || t == GM_GGUF_INT16 || t == GM_GGUF_INT32 || t == GM_GGUF_INT64;
}

static bool vtype_is_float(gm_gguf_vtype t)
{
    return t == GM_GGUF_FLOAT32 || t == GM_GGUF_FLOAT64;
}

/* ---- little-endian loads (unaligned-safe) ---- */

static uint64_t load_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Widens one fixed-width element; signed types are sign-extended into the i64 view. */
static void load_scalar(gm_gguf_vtype t, const uint8_t *p, uint64_t *u, int64_t *i, double *f)
{
    uint64_t raw = load_le(p, vtype_size[t]);
    *u = 0;
    *i = 0;
    *f = 0;
    switch (t) {
    case GM_GGUF_UINT8: case GM_GGUF_UINT16: case GM_GGUF_UINT32: case GM_GGUF_UINT64:
    case GM_GGUF_BOOL:
        *u = raw;
        *i = (int64_t)raw;
        break;
    case GM_GGUF_INT8: *i = (int8_t)raw; break;
    case GM_GGUF_INT16: *i = (int16_t)raw; break;
    case GM_GGUF_INT32: *i = (int32_t)raw; break;
    case GM_GGUF_INT64: memcpy(i, &raw, 8); break;
    case GM_GGUF_FLOAT32: {
        uint32_t r32 = (uint32_t)raw;
        float x;
        memcpy(&x, &r32, 4);
        *f = x;
        break;
    }
    case GM_GGUF_FLOAT64: memcpy(f, &raw, 8); break;
    default: break;
    }
}

/* ---- parser state ---- */

typedef struct cursor {
    const uint8_t *base;
    size_t size;
    size_t pos;
    const char *path;
    gm_error *err;
} cursor;

static size_t cur_left(const cursor *c)
{
    return c->size - c->pos;
}

static int need(cursor *c, uint64_t n, const char *what, const char *owner_kind, const char *owner)
{
    if (n <= cur_left(c))
        return GM_OK;
    if (owner)
        return gm_set_error(c->err, GM_ERR_FORMAT,
                            "%s: truncated: %s of %s '%s' at offset %zu needs %" PRIu64
                            " bytes, only %zu left",
                            c->path, what, owner_kind, owner, c->pos, n, cur_left(c));
    return gm_set_error(c->err, GM_ERR_FORMAT,
                        "%s: truncated: %s at offset %zu needs %" PRIu64 " bytes, only %zu left",
                        c->path, what, c->pos, n, cur_left(c));
}

static int read_u32(cursor *c, uint32_t *v, const char *what, const char *kind, const char *owner)
{
    int rc = need(c, 4, what, kind, owner);
    if (rc)
        return rc;
    *v = (uint32_t)load_le(c->base + c->pos, 4);
    c->pos += 4;
    return GM_OK;
}

static int read_u64(cursor *c, uint64_t *v, const char *what, const char *kind, const char *owner)
{
    int rc = need(c, 8, what, kind, owner);
    if (rc)
        return rc;
    *v = load_le(c->base + c->pos, 8);
    c->pos += 8;
    return GM_OK;
}

/* Reads a length-prefixed string in place (a value of key or tensor `owner`). */
static int read_str(cursor *c, gm_gguf_str *s, const char *what, const char *kind, const char *owner)
{
    size_t at = c->pos;
    uint64_t len;
    int rc = read_u64(c, &len, what, kind, owner);
    if (rc)
        return rc;
    if (len > cur_left(c))
        return gm_set_error(c->err, GM_ERR_FORMAT,
                            "%s: %s of %s '%s' at offset %zu has length %" PRIu64
                            " but only %zu bytes remain",
                            c->path, what, kind, owner, at, len, cur_left(c));
    s->ptr = (const char *)(c->base + c->pos);
    s->len = len;
    c->pos += (size_t)len;
    return GM_OK;
}

/* A name (key or tensor name) becomes a C string, so it must be non-empty and NUL-free.
 * what/i say which entry it is ("key of metadata entry 3"), as the name is not known yet. */
static int read_name(cursor *c, char **out, const char *what, uint64_t i)
{
    size_t at = c->pos;
    if (cur_left(c) < 8)
        return gm_set_error(c->err, GM_ERR_FORMAT,
                            "%s: truncated: length of %s %" PRIu64 " at offset %zu needs 8 bytes, "
                            "only %zu left", c->path, what, i, at, cur_left(c));
    uint64_t len = load_le(c->base + at, 8);
    if (len > cur_left(c) - 8)
        return gm_set_error(c->err, GM_ERR_FORMAT,
                            "%s: %s %" PRIu64 " at offset %zu has length %" PRIu64
                            " but only %zu bytes remain", c->path, what, i, at, len, cur_left(c) - 8);
    const char *p = (const char *)(c->base + at + 8);
    if (len == 0)
        return gm_set_error(c->err, GM_ERR_FORMAT, "%s: %s %" PRIu64 " at offset %zu is empty",
                            c->path, what, i, at);
    if (memchr(p, 0, (size_t)len))
        return gm_set_error(c->err, GM_ERR_FORMAT,
                            "%s: %s %" PRIu64 " at offset %zu contains a NUL byte: '%.*s'",
                            c->path, what, i, at, (int)(len > 64 ? 64 : len), p);
    char *copy = malloc((size_t)len + 1);
    if (!copy)
        return gm_set_error(c->err, GM_ERR_NOMEM, "%s: out of memory", c->path);
    memcpy(copy, p, (size_t)len);
    copy[len] = '\0';
    *out = copy;
    c->pos = at + 8 + (size_t)len;
    return GM_OK;
}

/* ---- hash index (FNV-1a, open addressing, slots hold index + 1) ---- */

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 16777619u;
    }
    return h;
}

static uint32_t index_cap_for(uint64_t n)
{
    uint32_t cap = 16;
    while (cap < n * 2)
        cap <<= 1;
    return cap;
}

typedef const char *(*name_of_fn)(const void *items, uint32_t i);

static const char *kv_name(const void *items, uint32_t i)
{
    return ((const gm_gguf_kv *)items)[i].key;
}

static const char *tensor_name(const void *items, uint32_t i)
{
    return ((const gm_gguf_tensor *)items)[i].name;
}

/* Returns the slot holding name, or the empty slot where it would go. */
static uint32_t index_probe(const uint32_t *idx, uint32_t cap, const void *items, name_of_fn name_of,
                            const char *name)
{
    uint32_t mask = cap - 1;
    uint32_t s = hash_str(name) & mask;
    while (idx[s] && strcmp(name_of(items, idx[s] - 1), name) != 0)
        s = (s + 1) & mask;
    return s;
}

/* Builds the index; on a duplicate name returns its earlier position in *dup_first. */
static int index_build(uint32_t **out_idx, uint32_t *out_cap, const void *items, uint64_t n,
                       name_of_fn name_of, uint32_t *dup_first, uint32_t *dup_second)
{
    uint32_t cap = index_cap_for(n);
    uint32_t *idx = calloc(cap, sizeof *idx);
    if (!idx)
        return GM_ERR_NOMEM;
    *out_idx = idx;
    *out_cap = cap;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t s = index_probe(idx, cap, items, name_of, name_of(items, i));
        if (idx[s]) {
            *dup_first = idx[s] - 1;
            *dup_second = i;
            return GM_ERR_FORMAT;
        }
        idx[s] = i + 1;
    }
    return GM_OK;
}

const gm_gguf_kv *gm_gguf_find_kv(const gm_gguf *g, const char *key)
{
    if (!g || !key || !g->kv_index)
        return NULL;
    uint32_t s = index_probe(g->kv_index, g->kv_index_cap, g->kv, kv_name, key);
    return g->kv_index[s] ? &g->kv[g->kv_index[s] - 1] : NULL;
}

const gm_gguf_tensor *gm_gguf_find_tensor(const gm_gguf *g, const char *name)
{
    if (!g || !name || !g->tensor_index)
        return NULL;
    uint32_t s = index_probe(g->tensor_index, g->tensor_index_cap, g->tensors, tensor_name, name);
    return g->tensor_index[s] ? &g->tensors[g->tensor_index[s] - 1] : NULL;
}

/* ---- metadata ---- */

static int check_bool(cursor *c, const uint8_t *p, const char *key, size_t at)
{
    if (*p > 1)
        return gm_set_error(c->err, GM_ERR_FORMAT,
                            "%s: key '%s': bool value %u at offset %zu is neither 0 nor 1",
                            c->path, key, *p, at);
    return GM_OK;
}

static int parse_array(cursor *c, gm_gguf_kv *kv)
{
    uint32_t t;
    int rc = read_u32(c, &t, "array element type", "key", kv->key);
    if (rc)
        return rc;
    if (t >= GM_GGUF_VTYPE_COUNT)
        return gm_set_error(c->err, GM_ERR_FORMAT,
                            "%s: key '%s': unknown array element type %" PRIu32 " at offset %zu",
                            c->path, kv->key, t, c->pos - 4);
    if (t == GM_GGUF_ARRAY)
        return gm_set_error(c->err, GM_ERR_FORMAT,
                            "%s: key '%s': arrays of arrays are not supported (offset %zu)",
                            c->path, kv->key, c->pos - 4);
    kv->arr_type = (gm_gguf_vtype)t;
    size_t n_at = c->pos;
    rc = read_u64(c, &kv->arr_n, "array length", "key", kv->key);
    if (rc)
        return rc;
    uint64_t esz = t == GM_GGUF_STRING ? 8 : vtype_size[t];
    /* Each element takes at least esz bytes: bound the count before allocating. */
    if (kv->arr_n > cur_left(c) / esz)
        return gm_set_error(c->err, GM_ERR_FORMAT,
                            "%s: key '%s': array of %" PRIu64 " %s at offset %zu does not fit in "
                            "the %zu remaining bytes",
                            c->path, kv->key, kv->arr_n, vtype_names[t], n_at, cur_left(c));
    if (t != GM_GGUF_STRING) {
        kv->arr_data = c->base + c->pos;
        if (t == GM_GGUF_BOOL) {
            for (uint64_t i = 0; i < kv->arr_n; i++) {
                rc = check_bool(c, kv->arr_data + i, kv->key, c->pos + (size_t)i);
                if (rc)
                    return rc;
            }
        }
        c->pos += (size_t)(kv->arr_n * esz);
        return GM_OK;
    }
    uint64_t *off = malloc(kv->arr_n ? (size_t)kv->arr_n * sizeof *off : 1);
    if (!off)
        return gm_set_error(c->err, GM_ERR_NOMEM, "%s: key '%s': out of memory for %" PRIu64
                            " strings", c->path, kv->key, kv->arr_n);
    kv->arr_str_off = off;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        size_t at = c->pos;
        gm_gguf_str s;
        if (need(c, 8, "string array element length", "key", kv->key))
            return gm_set_error(c->err, GM_ERR_FORMAT,
                                "%s: key '%s': truncated at element %" PRIu64 " of %" PRIu64
                                " (offset %zu)", c->path, kv->key, i, kv->arr_n, at);
        uint64_t len = load_le(c->base + at, 8);
        if (len > cur_left(c) - 8)
            return gm_set_error(c->err, GM_ERR_FORMAT,
                                "%s: key '%s': string element %" PRIu64 " at offset %zu has length %"
                                PRIu64 " but only %zu bytes remain",
                                c->path, kv->key, i, at, len, cur_left(c) - 8);
        rc = read_str(c, &s, "string element", "key", kv->key);
        if (rc)
            return rc;
        off[i] = at;
    }
    return GM_OK;
}

static int parse_kv(cursor *c, gm_gguf_kv *kv, uint64_t i)
{
    int rc = read_name(c, &kv->key, "key of metadata entry", i);
    if (rc)
        return rc;
    uint32_t t;
    rc = read_u32(c, &t, "value type", "key", kv->key);
    if (rc)
        return rc;
    if (t >= GM_GGUF_VTYPE_COUNT)
        return gm_set_error(c->err, GM_ERR_FORMAT,
                            "%s: key '%s': unknown value type %" PRIu32 " at offset %zu",
                            c->path, kv->key, t, c->pos - 4);
    kv->type = (gm_gguf_vtype)t;
    if (t == GM_GGUF_STRING)
        return read_str(c, &kv->str, "string value", "key", kv->key);
    if (t == GM_GGUF_ARRAY)
        return parse_array(c, kv);
    rc = need(c, vtype_size[t], "value", "key", kv->key);
    if (rc)
        return rc;
    const uint8_t *p = c->base + c->pos;
    if (t == GM_GGUF_BOOL) {
        rc = check_bool(c, p, kv->key, c->pos);
        if (rc)
            return rc;
        kv->v.b = *p != 0;
    } else {
        uint64_t u;
        int64_t iv;
        double f;
        load_scalar(kv->type, p, &u, &iv, &f);
        if (vtype_is_unsigned(kv->type))
            kv->v.u64 = u;
        else if (vtype_is_signed(kv->type))
            kv->v.i64 = iv;
        else
            kv->v.f64 = f;
    }
    c->pos += vtype_size[t];
    return GM_OK;
}

/* ---- tensors ---- */

static int parse_tensor_info(cursor *c, gm_gguf_tensor *t, uint64_t i)
{
    int rc = read_name(c, &t->name, "name of tensor info", i);
    if (rc)
        return rc;
    rc = read_u32(c, &t->n_dims, "n_dims", "tensor", t->name);
    if (rc)
        return rc;
    if (t->n_dims < 1 || t->n_dims > GM_GGUF_MAX_DIMS)
        return gm_set_error(c->err, GM_ERR_FORMAT,
                            "%s: tensor '%s': n_dims %" PRIu32 " at offset %zu is not in 1..%d",
                            c->path, t->name, t->n_dims, c->pos - 4, GM_GGUF_MAX_DIMS);
    for (int d = 0; d < GM_GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t v;
        rc = read_u64(c, &v, "dimension", "tensor", t->name);
        if (rc)
            return rc;
        if (v == 0 || v > (uint64_t)INT64_MAX)
            return gm_set_error(c->err, GM_ERR_FORMAT,
                                "%s: tensor '%s': dimension %" PRIu32 " has invalid size %" PRId64
                                " at offset %zu", c->path, t->name, d, (int64_t)v, c->pos - 8);
        t->ne[d] = (int64_t)v;
    }
    uint32_t type;
    rc = read_u32(c, &type, "type", "tensor", t->name);
    if (rc)
        return rc;
    const gm_type_traits *tr = gm_type_get_traits(type);
    if (!tr)
        return gm_set_error(c->err, GM_ERR_UNSUPPORTED,
                            "%s: unknown tensor type %" PRIu32 " for tensor '%s' (offset %zu)",
                            c->path, type, t->name, c->pos - 4);
    if (!tr->supported)
        return gm_set_error(c->err, GM_ERR_UNSUPPORTED,
                            "%s: tensor '%s' has type %s (%" PRIu32 "), which this build does not support",
                            c->path, t->name, tr->name, type);
    t->type = (gm_type)type;
    rc = read_u64(c, &t->offset, "data offset", "tensor", t->name);
    if (rc)
        return rc;

    if (tr->block_size <= 0 || tr->type_size == 0 || t->ne[0] % tr->block_size != 0)
        return gm_set_error(c->err, GM_ERR_FORMAT,
                            "%s: tensor '%s': row length %" PRId64 " is not a multiple of the %s "
                            "block size %d", c->path, t->name, t->ne[0], tr->name, tr->block_size);
    /* Element count and byte size, both overflow-checked. */
    uint64_t nel = 1;
    for (int d = 0; d < GM_GGUF_MAX_DIMS; d++) {
        if ((uint64_t)t->ne[d] > (uint64_t)INT64_MAX / nel)
            return gm_set_error(c->err, GM_ERR_FORMAT,
                                "%s: tensor '%s': element count overflows (%" PRId64 " x %" PRId64
                                " x %" PRId64 " x %" PRId64 ")", c->path, t->name,
                                t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
        nel *= (uint64_t)t->ne[d];
    }
    uint64_t nblocks = nel / (uint64_t)tr->block_size;
    if (nblocks > UINT64_MAX / tr->type_size)
        return gm_set_error(c->err, GM_ERR_FORMAT, "%s: tensor '%s': byte size overflows",
                            c->path, t->name);
    t->nbytes = nblocks * tr->type_size;
    return GM_OK;
}

static int cmp_offset(const void *a, const void *b, void *arg)
{
    const gm_gguf_tensor *ts = arg;
    uint64_t x = ts[*(const uint32_t *)a].offset, y = ts[*(const uint32_t *)b].offset;
    return x < y ? -1 : x > y;
}

static int check_tensor_layout(gm_gguf *g, gm_error *err)
{
    uint64_t data_size = g->size - g->data_offset; /* caller checked data_offset <= size */
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        gm_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment)
            return gm_set_error(err, GM_ERR_FORMAT,
                                "%s: tensor '%s': data offset %" PRIu64 " is not a multiple of the "
                                "alignment %" PRIu64, g->path, t->name, t->offset, g->alignment);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return gm_set_error(err, GM_ERR_FORMAT,
                                "%s: tensor '%s': data [%" PRIu64 ", +%" PRIu64 ") at file offset %"
                                PRIu64 " runs past the end of the file (%zu bytes)",
                                g->path, t->name, t->offset, t->nbytes, g->data_offset + t->offset,
                                g->size);
        t->data = g->base + g->data_offset + t->offset;
    }
    if (g->n_tensors < 2)
        return GM_OK;
    uint32_t *order = malloc((size_t)g->n_tensors * sizeof *order);
    if (!order)
        return gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", g->path);
    for (uint32_t i = 0; i < g->n_tensors; i++)
        order[i] = i;
    qsort_r(order, (size_t)g->n_tensors, sizeof *order, cmp_offset, g->tensors);
    int rc = GM_OK;
    for (uint64_t i = 1; i < g->n_tensors; i++) {
        const gm_gguf_tensor *a = &g->tensors[order[i - 1]], *b = &g->tensors[order[i]];
        if (a->offset + a->nbytes > b->offset) {
            rc = gm_set_error(err, GM_ERR_FORMAT,
                              "%s: tensor '%s' (data %" PRIu64 "..%" PRIu64 ") overlaps tensor '%s' "
                              "(data from %" PRIu64 ")", g->path, a->name, a->offset,
                              a->offset + a->nbytes, b->name, b->offset);
            break;
        }
    }
    free(order);
    return rc;
}

/* ---- open / close ---- */

static int parse(gm_gguf *g, gm_error *err)
{
    cursor c = { .base = g->base, .size = g->size, .pos = 0, .path = g->path, .err = err };
    int rc = need(&c, 4, "magic", NULL, NULL);
    if (rc)
        return rc;
    if (memcmp(g->base, GGUF_MAGIC, 4) != 0)
        return gm_set_error(err, GM_ERR_FORMAT,
                            "%s: not a GGUF file (magic %02x %02x %02x %02x, expected \"GGUF\")",
                            g->path, g->base[0], g->base[1], g->base[2], g->base[3]);
    c.pos = 4;
    rc = read_u32(&c, &g->version, "version", NULL, NULL);
    if (rc)
        return rc;
    if (g->version == 1)
        return gm_set_error(err, GM_ERR_UNSUPPORTED,
                            "%s: GGUF version 1 is not supported (only versions 2 and 3); "
                            "re-convert the model with a current converter", g->path);
    if (g->version != 2 && g->version != 3) {
        uint32_t swapped = __builtin_bswap32(g->version);
        if (swapped >= 1 && swapped <= 3)
            return gm_set_error(err, GM_ERR_UNSUPPORTED,
                                "%s: big-endian GGUF files are not supported", g->path);
        return gm_set_error(err, GM_ERR_UNSUPPORTED,
                            "%s: unsupported GGUF version %" PRIu32 " (only 2 and 3)",
                            g->path, g->version);
    }
    uint64_t n_tensors, n_kv;
    rc = read_u64(&c, &n_tensors, "tensor count", NULL, NULL);
    if (rc)
        return rc;
    rc = read_u64(&c, &n_kv, "metadata count", NULL, NULL);
    if (rc)
        return rc;
    /* Bound both counts by what the remaining bytes could possibly hold. */
    size_t left = cur_left(&c);
    if (n_kv > left / MIN_KV_BYTES || n_kv > UINT32_MAX / 4)
        return gm_set_error(err, GM_ERR_FORMAT,
                            "%s: metadata count %" PRIu64 " (offset 16) cannot fit in the %zu "
                            "remaining bytes", g->path, n_kv, left);
    if (n_tensors > (left - n_kv * MIN_KV_BYTES) / MIN_TENSOR_INFO_BYTES || n_tensors > UINT32_MAX / 4)
        return gm_set_error(err, GM_ERR_FORMAT,
                            "%s: tensor count %" PRIu64 " (offset 8) cannot fit in the %zu "
                            "remaining bytes", g->path, n_tensors, left);

    g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    if (!g->kv)
        return gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", g->path);
    for (uint64_t i = 0; i < n_kv; i++) {
        g->n_kv = i + 1; /* so close() frees what this entry allocated */
        rc = parse_kv(&c, &g->kv[i], i);
        if (rc)
            return rc;
    }
    g->n_kv = n_kv;
    uint32_t d1 = 0, d2 = 0;
    rc = index_build(&g->kv_index, &g->kv_index_cap, g->kv, n_kv, kv_name, &d1, &d2);
    if (rc == GM_ERR_NOMEM)
        return gm_set_error(err, rc, "%s: out of memory", g->path);
    if (rc)
        return gm_set_error(err, rc, "%s: duplicate key '%s' (metadata entries %" PRIu32 " and %"
                            PRIu32 ")", g->path, g->kv[d1].key, d1, d2);

    g->alignment = GM_GGUF_DEFAULT_ALIGNMENT;
    const gm_gguf_kv *al = gm_gguf_find_kv(g, "general.alignment");
    if (al) {
        if (al->type != GM_GGUF_UINT32)
            return gm_set_error(err, GM_ERR_FORMAT,
                                "%s: key 'general.alignment' has type %s, expected uint32",
                                g->path, gm_gguf_vtype_name(al->type));
        if (al->v.u64 == 0 || (al->v.u64 & (al->v.u64 - 1)))
            return gm_set_error(err, GM_ERR_FORMAT,
                                "%s: key 'general.alignment' = %" PRIu64 " is not a power of two",
                                g->path, al->v.u64);
        g->alignment = al->v.u64;
    }

    g->tensors = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->tensors);
    if (!g->tensors)
        return gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", g->path);
    for (uint64_t i = 0; i < n_tensors; i++) {
        g->n_tensors = i + 1;
        rc = parse_tensor_info(&c, &g->tensors[i], i);
        if (rc)
            return rc;
    }
    g->n_tensors = n_tensors;
    rc = index_build(&g->tensor_index, &g->tensor_index_cap, g->tensors, n_tensors, tensor_name,
                     &d1, &d2);
    if (rc == GM_ERR_NOMEM)
        return gm_set_error(err, rc, "%s: out of memory", g->path);
    if (rc)
        return gm_set_error(err, rc, "%s: duplicate tensor name '%s' (tensor infos %" PRIu32
                            " and %" PRIu32 ")", g->path, g->tensors[d1].name, d1, d2);

    /* The data section starts at the next alignment boundary. A file without tensors
     * may end before that padding (llama.cpp's vocab files do). */
    uint64_t pad = (g->alignment - c.pos % g->alignment) % g->alignment;
    g->data_offset = (uint64_t)c.pos + pad;
    if (n_tensors == 0)
        return GM_OK;
    if (g->data_offset > g->size)
        return gm_set_error(err, GM_ERR_FORMAT,
                            "%s: truncated: data section would start at offset %" PRIu64
                            " but the file has %zu bytes", g->path, g->data_offset, g->size);
    return check_tensor_layout(g, err);
}

static gm_gguf *open_common(const uint8_t *base, size_t size, bool mapped, const char *name,
                            gm_error *err)
{
    gm_gguf *g = calloc(1, sizeof *g);
    char *path = strdup(name ? name : "<memory>");
    if (!g || !path) {
        free(g);
        free(path);
        if (mapped)
            munmap((void *)base, size);
        gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory", name ? name : "<memory>");
        return NULL;
    }
    g->path = path;
    g->base = base;
    g->size = size;
    g->mapped = mapped;
    if (parse(g, err) != GM_OK) {
        gm_gguf_close(g);
        return NULL;
    }
    return g;
}

gm_gguf *gm_gguf_open(const char *path, gm_error *err)
{
    if (!path) {
        gm_set_error(err, GM_ERR_INVALID, "gm_gguf_open: no path");
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        gm_set_error(err, GM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        gm_set_error(err, GM_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        gm_set_error(err, GM_ERR_IO, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_size == 0) {
        gm_set_error(err, GM_ERR_FORMAT, "%s: file is empty", path);
        close(fd);
        return NULL;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        gm_set_error(err, GM_ERR_RANGE, "%s: file too large to map", path);
        close(fd);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    /* Private read-only mapping, no MAP_POPULATE: pages are faulted in on use. */
    void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (m == MAP_FAILED) {
        gm_set_error(err, GM_ERR_IO, "%s: mmap of %zu bytes failed: %s", path, size,
                     strerror(map_errno));
        return NULL;
    }
    return open_common(m, size, true, path, err);
}

gm_gguf *gm_gguf_open_memory(const void *data, size_t size, const char *name, gm_error *err)
{
    if (!data && size) {
        gm_set_error(err, GM_ERR_INVALID, "%s: no data", name ? name : "<memory>");
        return NULL;
    }
    static const uint8_t empty[1];
    return open_common(data ? data : empty, size, false, name, err);
}

void gm_gguf_close(gm_gguf *g)
{
    if (!g)
        return;
    if (g->kv) {
        for (uint64_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].key);
            free((void *)g->kv[i].arr_str_off);
        }
        free(g->kv);
    }
    if (g->tensors) {
        for (uint64_t i = 0; i < g->n_tensors; i++)
            free(g->tensors[i].name);
        free(g->tensors);
    }
    free(g->kv_index);
    free(g->tensor_index);
    if (g->mapped)
        munmap((void *)g->base, g->size);
    free(g->path);
    free(g);
}

/* ---- typed getters ---- */

static const char *gpath(const gm_gguf *g)
{
    return g && g->path ? g->path : "<gguf>";
}

static int missing(const gm_gguf *g, const char *key, gm_error *err)
{
    return gm_set_error(err, GM_ERR_FORMAT, "%s: missing key '%s'", gpath(g), key ? key : "(null)");
}

static int wrong_type(const gm_gguf *g, const gm_gguf_kv *kv, const char *expected, gm_error *err)
{
    if (kv->type == GM_GGUF_ARRAY)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '%s' is an array of %s, expected %s",
                            gpath(g), kv->key, gm_gguf_vtype_name(kv->arr_type), expected);
    return gm_set_error(err, GM_ERR_FORMAT, "%s: key '%s' has type %s, expected %s", gpath(g),
                        kv->key, gm_gguf_vtype_name(kv->type), expected);
}

/* Converts an integer held as (type, u64/i64) to u32 with a range check. */
static bool int_to_u32(gm_gguf_vtype t, uint64_t u, int64_t i, uint32_t *out)
{
    if (vtype_is_unsigned(t)) {
        if (u > UINT32_MAX)
            return false;
        *out = (uint32_t)u;
        return true;
    }
    if (i < 0 || i > (int64_t)UINT32_MAX)
        return false;
    *out = (uint32_t)i;
    return true;
}

static int kv_to_u32(const gm_gguf *g, const gm_gguf_kv *kv, uint32_t *out, gm_error *err)
{
    if (!vtype_is_unsigned(kv->type) && !vtype_is_signed(kv->type))
        return wrong_type(g, kv, "an integer", err);
    uint32_t v;
    if (!int_to_u32(kv->type, kv->v.u64, kv->v.i64, &v)) {
        if (vtype_is_unsigned(kv->type))
            return gm_set_error(err, GM_ERR_FORMAT, "%s: key '%s' = %" PRIu64 " does not fit in uint32",
                                gpath(g), kv->key, kv->v.u64);
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '%s' = %" PRId64 " does not fit in uint32",
                            gpath(g), kv->key, kv->v.i64);
    }
    *out = v;
    return GM_OK;
}

static int kv_to_f32(const gm_gguf *g, const gm_gguf_kv *kv, float *out, gm_error *err)
{
    if (!vtype_is_float(kv->type))
        return wrong_type(g, kv, "float32", err);
    double d = kv->v.f64;
    if (isfinite(d) && fabs(d) > (double)FLT_MAX)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '%s' = %g is out of float32 range",
                            gpath(g), kv->key, d);
    *out = (float)d;
    return GM_OK;
}

static int kv_to_bool(const gm_gguf *g, const gm_gguf_kv *kv, bool *out, gm_error *err)
{
    if (kv->type != GM_GGUF_BOOL)
        return wrong_type(g, kv, "bool", err);
    *out = kv->v.b;
    return GM_OK;
}

int gm_gguf_get_u32(const gm_gguf *g, const char *key, uint32_t *out, gm_error *err)
{
    const gm_gguf_kv *kv = gm_gguf_find_kv(g, key);
    return kv ? kv_to_u32(g, kv, out, err) : missing(g, key, err);
}

int gm_gguf_get_f32(const gm_gguf *g, const char *key, float *out, gm_error *err)
{
    const gm_gguf_kv *kv = gm_gguf_find_kv(g, key);
    return kv ? kv_to_f32(g, kv, out, err) : missing(g, key, err);
}

int gm_gguf_get_bool(const gm_gguf *g, const char *key, bool *out, gm_error *err)
{
    const gm_gguf_kv *kv = gm_gguf_find_kv(g, key);
    return kv ? kv_to_bool(g, kv, out, err) : missing(g, key, err);
}

int gm_gguf_get_str(const gm_gguf *g, const char *key, char **out, gm_error *err)
{
    const gm_gguf_kv *kv = gm_gguf_find_kv(g, key);
    if (!kv)
        return missing(g, key, err);
    if (kv->type != GM_GGUF_STRING)
        return wrong_type(g, kv, "string", err);
    char *s = malloc((size_t)kv->str.len + 1);
    if (!s)
        return gm_set_error(err, GM_ERR_NOMEM, "%s: key '%s': out of memory", gpath(g), kv->key);
    if (kv->str.len)
        memcpy(s, kv->str.ptr, (size_t)kv->str.len);
    s[kv->str.len] = '\0';
    *out = s;
    return GM_OK;
}

int gm_gguf_get_u32_opt(const gm_gguf *g, const char *key, uint32_t *out, gm_error *err)
{
    const gm_gguf_kv *kv = gm_gguf_find_kv(g, key);
    return kv ? kv_to_u32(g, kv, out, err) : GM_OK;
}

int gm_gguf_get_f32_opt(const gm_gguf *g, const char *key, float *out, gm_error *err)
{
    const gm_gguf_kv *kv = gm_gguf_find_kv(g, key);
    return kv ? kv_to_f32(g, kv, out, err) : GM_OK;
}

int gm_gguf_get_bool_opt(const gm_gguf *g, const char *key, bool *out, gm_error *err)
{
    const gm_gguf_kv *kv = gm_gguf_find_kv(g, key);
    return kv ? kv_to_bool(g, kv, out, err) : GM_OK;
}

static int check_arr_len(const gm_gguf *g, const gm_gguf_kv *kv, uint32_t n, gm_error *err)
{
    if (kv->arr_n != n)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: key '%s' has %" PRIu64 " entries, expected %"
                            PRIu32, gpath(g), kv->key, kv->arr_n, n);
    return GM_OK;
}

int gm_gguf_get_u32_per_layer(const gm_gguf *g, const char *key, uint32_t n, uint32_t *out,
                              gm_error *err)
{
    const gm_gguf_kv *kv = gm_gguf_find_kv(g, key);
    if (!kv)
        return missing(g, key, err);
    if (kv->type != GM_GGUF_ARRAY) {
        uint32_t v = 0;
        int rc = kv_to_u32(g, kv, &v, err);
        if (rc)
            return rc;
        for (uint32_t i = 0; i < n; i++)
            out[i] = v;
        return GM_OK;
    }
    if (!vtype_is_unsigned(kv->arr_type) && !vtype_is_signed(kv->arr_type))
        return wrong_type(g, kv, "an integer or an array of integers", err);
    int rc = check_arr_len(g, kv, n, err);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t u;
        int64_t iv;
        double f;
        load_scalar(kv->arr_type, kv->arr_data + (size_t)i * vtype_size[kv->arr_type], &u, &iv, &f);
        if (!int_to_u32(kv->arr_type, u, iv, &out[i]))
            return gm_set_error(err, GM_ERR_FORMAT, "%s: key '%s': entry %" PRIu32
                                " does not fit in uint32", gpath(g), kv->key, i);
    }
    return GM_OK;
}

int gm_gguf_get_bool_array(const gm_gguf *g, const char *key, uint32_t n, bool *out, gm_error *err)
{
    const gm_gguf_kv *kv = gm_gguf_find_kv(g, key);
    if (!kv)
        return missing(g, key, err);
    if (kv->type != GM_GGUF_ARRAY || (kv->arr_type != GM_GGUF_BOOL &&
                                      !vtype_is_unsigned(kv->arr_type) && !vtype_is_signed(kv->arr_type)))
        return wrong_type(g, kv, "an array of bool or integers", err);
    int rc = check_arr_len(g, kv, n, err);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < n; i++)
        out[i] = gm_gguf_arr_int(kv, i) != 0;
    return GM_OK;
}

/* ---- array element access ---- */

gm_gguf_str gm_gguf_arr_str(const gm_gguf *g, const gm_gguf_kv *kv, uint64_t i)
{
    gm_gguf_str s = { NULL, 0 };
    if (!g || !kv || kv->type != GM_GGUF_ARRAY || kv->arr_type != GM_GGUF_STRING ||
        i >= kv->arr_n || !kv->arr_str_off)
        return s;
    uint64_t off = kv->arr_str_off[i];
    s.len = load_le(g->base + off, 8);
    s.ptr = (const char *)(g->base + off + 8);
    return s;
}

int64_t gm_gguf_arr_int(const gm_gguf_kv *kv, uint64_t i)
{
    if (!kv || kv->type != GM_GGUF_ARRAY || i >= kv->arr_n || !kv->arr_data)
        return 0;
    gm_gguf_vtype t = kv->arr_type;
    if (!vtype_is_unsigned(t) && !vtype_is_signed(t) && t != GM_GGUF_BOOL)
        return 0;
    uint64_t u;
    int64_t v;
    double f;
    load_scalar(t, kv->arr_data + i * vtype_size[t], &u, &v, &f);
    return v;
}

double gm_gguf_arr_float(const gm_gguf_kv *kv, uint64_t i)
{
    if (!kv || kv->type != GM_GGUF_ARRAY || i >= kv->arr_n || !kv->arr_data)
        return 0.0;
    gm_gguf_vtype t = kv->arr_type;
    if (t == GM_GGUF_STRING || t >= GM_GGUF_VTYPE_COUNT || t == GM_GGUF_ARRAY)
        return 0.0;
    uint64_t u;
    int64_t v;
    double f;
    load_scalar(t, kv->arr_data + i * vtype_size[t], &u, &v, &f);
    if (vtype_is_float(t))
        return f;
    return vtype_is_signed(t) ? (double)v : (double)u;
}
