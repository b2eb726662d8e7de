/* test-gguf.c — GGUF reader/writer: round trips of every value type and several tensor
 * types, the real Gemma 4 vocabulary file, lazy loading of a large (sparse) file, and
 * many malformed files that must be rejected with a message naming the key/tensor. */
#include "core/gguf.h"
#include "test-util.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[256];

static const char *tmp_path(const char *name)
{
    static char buf[2][512];
    static int which;
    which ^= 1;
    snprintf(buf[which], sizeof buf[which], "%s/%s", tmpdir, name);
    return buf[which];
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}


static bool str_eq(gm_gguf_str s, const char *c)
{
    return s.ptr && s.len == strlen(c) && memcmp(s.ptr, c, s.len) == 0;
}

/* ---- a byte builder for hand-made (and malformed) files ---- */

typedef struct bb {
    uint8_t *p;
    size_t n, cap;
} bb;

static void bb_put(bb *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void bb_le(bb *b, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) {
        uint8_t c = (uint8_t)(v >> (8 * i));
        bb_put(b, &c, 1);
    }
}
#define bb_u8(b, v) bb_le(b, v, 1)
#define bb_u16(b, v) bb_le(b, v, 2)
#define bb_u32(b, v) bb_le(b, v, 4)
#define bb_u64(b, v) bb_le(b, v, 8)

static void bb_f32(bb *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    bb_u32(b, u);
}

static void bb_f64(bb *b, double f)
{
    uint64_t u;
    memcpy(&u, &f, 8);
    bb_u64(b, u);
}

static void bb_str(bb *b, const char *s)
{
    bb_u64(b, strlen(s));
    bb_put(b, s, strlen(s));
}

static void bb_header(bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    bb_put(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}

static void bb_kv_u32(bb *b, const char *key, uint32_t v)
{
    bb_str(b, key);
    bb_u32(b, GM_GGUF_UINT32);
    bb_u32(b, v);
}

static void bb_tinfo(bb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                     uint64_t offset)
{
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++)
        bb_u64(b, ne[i]);
    bb_u32(b, type);
    bb_u64(b, offset);
}

static void bb_pad(bb *b, size_t align)
{
    while (b->n % align)
        bb_u8(b, 0);
}

static void bb_zeros(bb *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        bb_u8(b, 0);
}

/* Opens an exact-size heap copy, so ASan sees any read past the end. */
static gm_gguf *open_copy(const uint8_t *p, size_t n, uint8_t **copy, gm_error *err)
{
    *copy = malloc(n ? n : 1);
    if (n)
        memcpy(*copy, p, n);
    return gm_gguf_open_memory(*copy, n, "case.gguf", err);
}

/* The file must be rejected; the message must name the file and contain needle (and needle2). */
static void expect_fail_at(int line, bb *b, const char *needle, const char *needle2)
{
    uint8_t *copy;
    gm_error err = { 0 };
    gm_gguf *g = open_copy(b->p, b->n, &copy, &err);
    CHECKF(g == NULL, "line %d: malformed file was accepted", line);
    CHECKF(err.code < 0, "line %d: no error code", line);
    CHECKF(strstr(err.msg, "case.gguf") != NULL, "line %d: message does not name the file: %s", line, err.msg);
    CHECKF(strstr(err.msg, needle) != NULL, "line %d: message lacks '%s': %s", line, needle, err.msg);
    if (needle2)
        CHECKF(strstr(err.msg, needle2) != NULL, "line %d: message lacks '%s': %s", line, needle2, err.msg);
    gm_gguf_close(g);
    free(copy);
    free(b->p);
    memset(b, 0, sizeof *b);
}
#define expect_fail(b, n1, n2) expect_fail_at(__LINE__, b, n1, n2)

/* ---- round trip through the writer ---- */

typedef struct tspec {
    const char *name;
    gm_type type;
    uint32_t n_dims;
    int64_t ne[4];
} tspec;

static const tspec test_tensors[] = {
    { "tok.f32", GM_TYPE_F32, 2, { 8, 3 } },
    { "blk.0.f16", GM_TYPE_F16, 1, { 17 } },
    { "blk.0.q8_0", GM_TYPE_Q8_0, 2, { 64, 2 } },
    { "blk.0.q4_k", GM_TYPE_Q4_K, 2, { 256, 2 } },
    { "blk.1.q6_k", GM_TYPE_Q6_K, 1, { 256 } },
    { "blk.1.bf16", GM_TYPE_BF16, 3, { 4, 2, 3 } },
    { "blk.1.q4_0", GM_TYPE_Q4_0, 4, { 32, 1, 2, 2 } },
};
#define N_TEST_TENSORS (sizeof test_tensors / sizeof test_tensors[0])

static size_t spec_nbytes(const tspec *s)
{
    size_t n = gm_row_size(s->type, s->ne[0]);
    for (uint32_t d = 1; d < s->n_dims; d++)
        n *= (size_t)s->ne[d];
    return n;
}

static uint8_t *spec_data(size_t k, size_t n)
{
    uint8_t *p = malloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 7 + k * 31 + 1);
    return p;
}

static const uint32_t arr_u32[] = { 0, 1, 4000000000u, 77 };
static const int32_t arr_i32[] = { -5, 0, 2147483647, -2147483647 - 1, 12 };
static const float arr_f32[] = { 1.5f, -0.25f, 3e38f };
static const bool arr_bool[] = { true, true, false, true, false };

static void fill_writer(gm_gguf_writer *w, bool with_data)
{
    gm_gguf_add_str(w, "general.architecture", "gemma4");
    gm_gguf_add_u32(w, "k.u32", 4000000000u);
    gm_gguf_add_i32(w, "k.i32", -123456);
    gm_gguf_add_i32(w, "k.i32pos", 42);
    gm_gguf_add_f32(w, "k.f32", 0.125f);
    gm_gguf_add_bool(w, "k.true", true);
    gm_gguf_add_bool(w, "k.false", false);
    gm_gguf_add_str(w, "k.empty", "");
    gm_gguf_add_arr_u32(w, "a.u32", arr_u32, 4);
    gm_gguf_add_arr_i32(w, "a.i32", arr_i32, 5);
    gm_gguf_add_arr_f32(w, "a.f32", arr_f32, 3);
    gm_gguf_add_arr_bool(w, "a.bool", arr_bool, 5);
    gm_gguf_add_arr_u32(w, "a.empty", NULL, 0);
    /* binary-safe strings: embedded NUL and non-UTF-8 bytes */
    const gm_gguf_str strs[] = { { "<bos>", 5 }, { "a\0b", 3 }, { "", 0 }, { "\xff\xfe", 2 } };
    gm_gguf_add_arr_str(w, "a.str", strs, 4);
    /* replacing a key keeps one entry with the new value */
    gm_gguf_add_u32(w, "k.replaced", 1);
    gm_gguf_add_u32(w, "k.replaced", 2);
    for (size_t i = 0; i < N_TEST_TENSORS; i++) {
        const tspec *s = &test_tensors[i];
        uint8_t *d = with_data ? spec_data(i, spec_nbytes(s)) : NULL;
        gm_error err = { 0 };
        int rc = gm_gguf_add_tensor(w, s->name, s->type, s->n_dims, s->ne, d, &err);
        CHECKF(rc == GM_OK, "add_tensor %s: %s", s->name, err.msg);
        free(d);
    }
}

static void check_roundtrip_contents(const gm_gguf *g, uint32_t alignment)
{
    gm_error err = { 0 };
    CHECK_EQ_INT(g->version, 3);
    CHECK_EQ_INT(g->alignment, alignment);
    CHECK_EQ_INT(g->n_tensors, N_TEST_TENSORS);
    /* 15 keys added, one replaced, plus general.alignment when non-default */
    CHECK_EQ_INT(g->n_kv, 15 + (alignment != 32));
    const gm_gguf_kv *al = gm_gguf_find_kv(g, "general.alignment");
    if (alignment == 32) {
        CHECK(al == NULL);
    } else {
        CHECK(al && al->type == GM_GGUF_UINT32 && al->v.u64 == alignment);
    }

    char *s = NULL;
    CHECK(gm_gguf_get_str(g, "general.architecture", &s, &err) == GM_OK && s && strcmp(s, "gemma4") == 0);
    free(s);
    s = NULL;
    CHECK(gm_gguf_get_str(g, "k.empty", &s, &err) == GM_OK && s && s[0] == '\0');
    free(s);
    uint32_t u = 0;
    CHECK(gm_gguf_get_u32(g, "k.u32", &u, &err) == GM_OK && u == 4000000000u);
    CHECK(gm_gguf_get_u32(g, "k.i32pos", &u, &err) == GM_OK && u == 42);
    CHECK(gm_gguf_get_u32(g, "k.replaced", &u, &err) == GM_OK && u == 2);
    const gm_gguf_kv *kv = gm_gguf_find_kv(g, "k.i32");
    CHECK(kv && kv->type == GM_GGUF_INT32 && kv->v.i64 == -123456);
    float f = 0;
    CHECK(gm_gguf_get_f32(g, "k.f32", &f, &err) == GM_OK && f == 0.125f);
    bool b = false;
    CHECK(gm_gguf_get_bool(g, "k.true", &b, &err) == GM_OK && b);
    CHECK(gm_gguf_get_bool(g, "k.false", &b, &err) == GM_OK && !b);

    kv = gm_gguf_find_kv(g, "a.u32");
    CHECK(kv && kv->type == GM_GGUF_ARRAY && kv->arr_type == GM_GGUF_UINT32 && kv->arr_n == 4);
    for (uint64_t i = 0; kv && i < 4; i++)
        CHECK_EQ_INT(gm_gguf_arr_int(kv, i), arr_u32[i]);
    kv = gm_gguf_find_kv(g, "a.i32");
    CHECK(kv && kv->arr_type == GM_GGUF_INT32 && kv->arr_n == 5);
    for (uint64_t i = 0; kv && i < 5; i++)
        CHECK_EQ_INT(gm_gguf_arr_int(kv, i), arr_i32[i]);
    kv = gm_gguf_find_kv(g, "a.f32");
    CHECK(kv && kv->arr_type == GM_GGUF_FLOAT32 && kv->arr_n == 3);
    for (uint64_t i = 0; kv && i < 3; i++)
        CHECK(gm_gguf_arr_float(kv, i) == arr_f32[i]);
    kv = gm_gguf_find_kv(g, "a.bool");
    CHECK(kv && kv->arr_type == GM_GGUF_BOOL && kv->arr_n == 5);
    for (uint64_t i = 0; kv && i < 5; i++)
        CHECK_EQ_INT(gm_gguf_arr_int(kv, i), arr_bool[i]);
    kv = gm_gguf_find_kv(g, "a.empty");
    CHECK(kv && kv->type == GM_GGUF_ARRAY && kv->arr_n == 0);
    kv = gm_gguf_find_kv(g, "a.str");
    CHECK(kv && kv->arr_type == GM_GGUF_STRING && kv->arr_n == 4);
    if (kv) {
        CHECK(str_eq(gm_gguf_arr_str(g, kv, 0), "<bos>"));
        gm_gguf_str e1 = gm_gguf_arr_str(g, kv, 1);
        CHECK(e1.len == 3 && memcmp(e1.ptr, "a\0b", 3) == 0);
        CHECK(gm_gguf_arr_str(g, kv, 2).len == 0);
        gm_gguf_str e3 = gm_gguf_arr_str(g, kv, 3);
        CHECK(e3.len == 2 && memcmp(e3.ptr, "\xff\xfe", 2) == 0);
        CHECK(gm_gguf_arr_str(g, kv, 4).ptr == NULL); /* out of range */
    }

    CHECK(g->data_offset % alignment == 0);
    for (size_t i = 0; i < N_TEST_TENSORS; i++) {
        const tspec *sp = &test_tensors[i];
        const gm_gguf_tensor *t = gm_gguf_find_tensor(g, sp->name);
        CHECKF(t != NULL, "tensor %s missing", sp->name);
        if (!t)
            continue;
        CHECK(t == &g->tensors[i]); /* file order is insertion order */
        CHECK_EQ_INT(t->type, sp->type);
        CHECK_EQ_INT(t->n_dims, sp->n_dims);
        for (uint32_t d = 0; d < 4; d++)
            CHECK_EQ_INT(t->ne[d], d < sp->n_dims ? sp->ne[d] : 1);
        size_t n = spec_nbytes(sp);
        CHECK_EQ_INT(t->nbytes, n);
        CHECK(t->offset % alignment == 0);
        CHECK((const uint8_t *)t->data == g->base + g->data_offset + t->offset);
        uint8_t *want = spec_data(i, n);
        CHECKF(memcmp(t->data, want, n) == 0, "tensor %s data differs", sp->name);
        free(want);
    }
    CHECK(gm_gguf_find_tensor(g, "nope") == NULL);
    CHECK(gm_gguf_find_kv(g, "nope") == NULL);
}

/* Streams every test tensor in parts of uneven sizes (including empty parts), none
 * crossing a tensor's end. */
static int stream_in_parts(gm_gguf_writer *w, gm_error *err)
{
    static const size_t sizes[] = { 1, 7, 0, 33, 3, 129, 64, 5 };
    size_t k = 0;
    int rc = GM_OK;
    for (size_t i = 0; rc == GM_OK && i < N_TEST_TENSORS; i++) {
        size_t n = spec_nbytes(&test_tensors[i]);
        uint8_t *d = spec_data(i, n);
        for (size_t off = 0; rc == GM_OK && off < n; k++) {
            size_t part = sizes[k % (sizeof sizes / sizeof sizes[0])];
            if (part > n - off)
                part = n - off;
            rc = gm_gguf_writer_stream_part(w, d + off, part, err);
            off += part;
        }
        free(d);
    }
    return rc;
}

static void test_roundtrip(uint32_t alignment)
{
    char name[64], sname[64], pname[64];
    snprintf(name, sizeof name, "rt-%u.gguf", alignment);
    snprintf(sname, sizeof sname, "rt-stream-%u.gguf", alignment);
    snprintf(pname, sizeof pname, "rt-parts-%u.gguf", alignment);
    gm_error err = { 0 };

    gm_gguf_writer *w = gm_gguf_writer_new();
    gm_gguf_writer_set_alignment(w, alignment);
    fill_writer(w, true);
    int rc = gm_gguf_writer_write(w, tmp_path(name), &err);
    CHECKF(rc == GM_OK, "write: %s", err.msg);
    gm_gguf_writer_free(w);

    gm_gguf *g = gm_gguf_open(tmp_path(name), &err);
    CHECKF(g != NULL, "open %s: %s", name, err.msg);
    if (g) {
        CHECK(g->mapped);
        check_roundtrip_contents(g, alignment);
        gm_gguf_close(g);
    }

    /* Streaming mode produces the same bytes. */
    w = gm_gguf_writer_new();
    gm_gguf_writer_set_alignment(w, alignment);
    fill_writer(w, false);
    rc = gm_gguf_writer_begin(w, tmp_path(sname), &err);
    CHECKF(rc == GM_OK, "begin: %s", err.msg);
    for (size_t i = 0; rc == GM_OK && i < N_TEST_TENSORS; i++) {
        uint8_t *d = spec_data(i, spec_nbytes(&test_tensors[i]));
        rc = gm_gguf_writer_stream_tensor(w, d, &err);
        CHECKF(rc == GM_OK, "stream %zu: %s", i, err.msg);
        free(d);
    }
    rc = gm_gguf_writer_finish(w, &err);
    CHECKF(rc == GM_OK, "finish: %s", err.msg);
    gm_gguf_writer_free(w);
    size_t n1 = 0, n2 = 0;
    uint8_t *a = gm_test_read_file(tmp_path(name), &n1), *b = gm_test_read_file(tmp_path(sname), &n2);
    CHECK(a && b && n1 == n2 && memcmp(a, b, n1) == 0);
    /* every tensor's data is padded, so the file ends on an alignment boundary */
    CHECK(n1 % alignment == 0);

    /* Streaming in parts produces the same bytes as well. */
    w = gm_gguf_writer_new();
    gm_gguf_writer_set_alignment(w, alignment);
    fill_writer(w, false);
    rc = gm_gguf_writer_begin(w, tmp_path(pname), &err);
    CHECKF(rc == GM_OK, "begin: %s", err.msg);
    if (rc == GM_OK) {
        rc = stream_in_parts(w, &err);
        CHECKF(rc == GM_OK, "stream parts: %s", err.msg);
    }
    rc = gm_gguf_writer_finish(w, &err);
    CHECKF(rc == GM_OK, "finish: %s", err.msg);
    gm_gguf_writer_free(w);
    size_t n3 = 0;
    uint8_t *c = gm_test_read_file(tmp_path(pname), &n3);
    CHECK(a && c && n1 == n3 && memcmp(a, c, n1) == 0);
    free(c);

    /* The same bytes parse from memory too. */
    g = gm_gguf_open_memory(a, n1, name, &err);
    CHECKF(g != NULL, "open_memory: %s", err.msg);
    if (g) {
        CHECK(!g->mapped);
        check_roundtrip_contents(g, alignment);
        gm_gguf_close(g);
    }
    free(a);
    free(b);
}

/* A hand-made file with a scalar of every type and an array of every numeric type. */
static const struct {
    gm_gguf_vtype t;
    int size;
    uint64_t raw[3]; /* little-endian bit patterns */
} all_types[] = {
    { GM_GGUF_UINT8, 1, { 0, 200, 255 } },
    { GM_GGUF_INT8, 1, { 0x80, 0x7f, 0xff } },         /* -128, 127, -1 */
    { GM_GGUF_UINT16, 2, { 1, 65535, 300 } },
    { GM_GGUF_INT16, 2, { 0x8000, 0x7fff, 0xfffe } },  /* -32768, 32767, -2 */
    { GM_GGUF_UINT32, 4, { 0, 0xffffffffu, 123 } },
    { GM_GGUF_INT32, 4, { 0x80000000u, 5, 0xfffffff6u } },
    { GM_GGUF_UINT64, 8, { 1, 0xffffffffffffffffull, 1ull << 40 } },
    { GM_GGUF_INT64, 8, { 0x8000000000000000ull, 7, 0xfffffffffffffffdull } },
};

static int64_t signext(uint64_t raw, int size)
{
    int shift = 64 - 8 * size;
    return (int64_t)(raw << shift) >> shift;
}

static bb build_all_types(void)
{
    bb b = { 0 };
    size_t n_int = sizeof all_types / sizeof all_types[0];
    bb_header(&b, 2, 0, n_int * 2 + 7); /* version 2 is accepted too */
    char key[64];
    for (size_t i = 0; i < n_int; i++) {
        snprintf(key, sizeof key, "s.%s", gm_gguf_vtype_name(all_types[i].t));
        bb_str(&b, key);
        bb_u32(&b, all_types[i].t);
        bb_le(&b, all_types[i].raw[1], all_types[i].size);
        snprintf(key, sizeof key, "a.%s", gm_gguf_vtype_name(all_types[i].t));
        bb_str(&b, key);
        bb_u32(&b, GM_GGUF_ARRAY);
        bb_u32(&b, all_types[i].t);
        bb_u64(&b, 3);
        for (int k = 0; k < 3; k++)
            bb_le(&b, all_types[i].raw[k], all_types[i].size);
    }
    bb_str(&b, "s.float32"); bb_u32(&b, GM_GGUF_FLOAT32); bb_f32(&b, -2.5f);
    bb_str(&b, "s.float64"); bb_u32(&b, GM_GGUF_FLOAT64); bb_f64(&b, 1e-300);
    bb_str(&b, "s.float64big"); bb_u32(&b, GM_GGUF_FLOAT64); bb_f64(&b, 1e300);
    bb_str(&b, "a.float32"); bb_u32(&b, GM_GGUF_ARRAY); bb_u32(&b, GM_GGUF_FLOAT32); bb_u64(&b, 2);
    bb_f32(&b, 1.25f); bb_f32(&b, -3.0f);
    bb_str(&b, "a.float64"); bb_u32(&b, GM_GGUF_ARRAY); bb_u32(&b, GM_GGUF_FLOAT64); bb_u64(&b, 2);
    bb_f64(&b, 0.1); bb_f64(&b, -1e100);
    bb_str(&b, "s.bool"); bb_u32(&b, GM_GGUF_BOOL); bb_u8(&b, 1);
    bb_str(&b, "s.string"); bb_u32(&b, GM_GGUF_STRING); bb_str(&b, "hello");
    return b;
}

static void check_all_types(const gm_gguf *g)
{
    gm_error err = { 0 };
    char key[64];
    for (size_t i = 0; i < sizeof all_types / sizeof all_types[0]; i++) {
        gm_gguf_vtype t = all_types[i].t;
        bool is_signed = t == GM_GGUF_INT8 || t == GM_GGUF_INT16 || t == GM_GGUF_INT32 || t == GM_GGUF_INT64;
        snprintf(key, sizeof key, "s.%s", gm_gguf_vtype_name(t));
        const gm_gguf_kv *kv = gm_gguf_find_kv(g, key);
        CHECKF(kv && kv->type == t, "%s", key);
        if (kv) {
            if (is_signed)
                CHECKF(kv->v.i64 == signext(all_types[i].raw[1], all_types[i].size), "%s = %lld", key,
                       (long long)kv->v.i64);
            else
                CHECKF(kv->v.u64 == all_types[i].raw[1], "%s", key);
        }
        snprintf(key, sizeof key, "a.%s", gm_gguf_vtype_name(t));
        kv = gm_gguf_find_kv(g, key);
        CHECKF(kv && kv->type == GM_GGUF_ARRAY && kv->arr_type == t && kv->arr_n == 3, "%s", key);
        for (uint64_t k = 0; kv && k < 3; k++) {
            uint64_t raw = all_types[i].raw[k];
            int64_t want = is_signed ? signext(raw, all_types[i].size) : (int64_t)raw;
            CHECKF(gm_gguf_arr_int(kv, k) == want, "%s[%llu] = %lld, want %lld", key,
                   (unsigned long long)k, (long long)gm_gguf_arr_int(kv, k), (long long)want);
            double wantf = is_signed ? (double)want : (double)raw;
            CHECK(gm_gguf_arr_float(kv, k) == wantf);
        }
        CHECK(gm_gguf_arr_int(kv, 3) == 0); /* out of range */
    }
    const gm_gguf_kv *kv = gm_gguf_find_kv(g, "a.float32");
    CHECK(kv && gm_gguf_arr_float(kv, 0) == 1.25 && gm_gguf_arr_float(kv, 1) == -3.0);
    kv = gm_gguf_find_kv(g, "a.float64");
    CHECK(kv && gm_gguf_arr_float(kv, 0) == 0.1 && gm_gguf_arr_float(kv, 1) == -1e100);
    CHECK(gm_gguf_arr_float(kv, 2) == 0.0);
    CHECK(gm_gguf_arr_int(kv, 0) == 0); /* float array through the integer accessor */

    /* integer getter: any integer type whose value fits */
    uint32_t u = 7;
    CHECK(gm_gguf_get_u32(g, "s.uint8", &u, &err) == GM_OK && u == 200);
    CHECK(gm_gguf_get_u32(g, "s.int8", &u, &err) == GM_OK && u == 127);
    CHECK(gm_gguf_get_u32(g, "s.uint16", &u, &err) == GM_OK && u == 65535);
    CHECK(gm_gguf_get_u32(g, "s.int32", &u, &err) == GM_OK && u == 5);
    CHECK(gm_gguf_get_u32(g, "s.int64", &u, &err) == GM_OK && u == 7);
    CHECK(gm_gguf_get_u32(g, "s.uint32", &u, &err) == GM_OK && u == 0xffffffffu);
    CHECK(gm_gguf_get_u32(g, "s.uint64", &u, &err) == GM_ERR_FORMAT && strstr(err.msg, "s.uint64"));
    CHECK(gm_gguf_get_u32(g, "s.int16", &u, &err) == GM_OK && u == 32767);
    CHECK(gm_gguf_get_u32(g, "s.float32", &u, &err) == GM_ERR_FORMAT && strstr(err.msg, "s.float32"));
    CHECK(gm_gguf_get_u32(g, "s.bool", &u, &err) == GM_ERR_FORMAT && strstr(err.msg, "s.bool"));
    CHECK(gm_gguf_get_u32(g, "a.uint32", &u, &err) == GM_ERR_FORMAT && strstr(err.msg, "a.uint32"));
    CHECK(gm_gguf_get_u32(g, "missing.key", &u, &err) == GM_ERR_FORMAT && strstr(err.msg, "missing.key"));
    u = 99;
    CHECK(gm_gguf_get_u32_opt(g, "missing.key", &u, &err) == GM_OK && u == 99);
    CHECK(gm_gguf_get_u32_opt(g, "s.float32", &u, &err) == GM_ERR_FORMAT && u == 99);

    float f = 0;
    CHECK(gm_gguf_get_f32(g, "s.float32", &f, &err) == GM_OK && f == -2.5f);
    CHECK(gm_gguf_get_f32(g, "s.float64", &f, &err) == GM_OK && f == (float)1e-300);
    CHECK(gm_gguf_get_f32(g, "s.float64big", &f, &err) == GM_ERR_FORMAT && strstr(err.msg, "s.float64big"));
    CHECK(gm_gguf_get_f32(g, "s.uint32", &f, &err) == GM_ERR_FORMAT && strstr(err.msg, "s.uint32"));
    f = 3;
    CHECK(gm_gguf_get_f32_opt(g, "missing.key", &f, &err) == GM_OK && f == 3);
    CHECK(gm_gguf_get_f32(g, "missing.key", &f, &err) == GM_ERR_FORMAT);

    bool b = false;
    CHECK(gm_gguf_get_bool(g, "s.bool", &b, &err) == GM_OK && b);
    CHECK(gm_gguf_get_bool(g, "s.uint8", &b, &err) == GM_ERR_FORMAT && strstr(err.msg, "s.uint8"));
    CHECK(gm_gguf_get_bool_opt(g, "missing.key", &b, &err) == GM_OK && b);
    CHECK(gm_gguf_get_bool(g, "missing.key", &b, &err) == GM_ERR_FORMAT);

    char *s = NULL;
    CHECK(gm_gguf_get_str(g, "s.string", &s, &err) == GM_OK && s && strcmp(s, "hello") == 0);
    free(s);
    CHECK(gm_gguf_get_str(g, "s.uint8", &s, &err) == GM_ERR_FORMAT && strstr(err.msg, "s.uint8"));
    CHECK(gm_gguf_get_str(g, "missing.key", &s, &err) == GM_ERR_FORMAT);

    /* scalar-or-per-layer */
    uint32_t pl[3] = { 0 };
    CHECK(gm_gguf_get_u32_per_layer(g, "s.uint16", 3, pl, &err) == GM_OK && pl[0] == 65535 && pl[2] == 65535);
    CHECK(gm_gguf_get_u32_per_layer(g, "a.uint16", 3, pl, &err) == GM_OK && pl[0] == 1 && pl[1] == 65535 && pl[2] == 300);
    CHECK(gm_gguf_get_u32_per_layer(g, "a.uint16", 2, pl, &err) == GM_ERR_FORMAT && strstr(err.msg, "a.uint16"));
    CHECK(gm_gguf_get_u32_per_layer(g, "a.int8", 3, pl, &err) == GM_ERR_FORMAT && strstr(err.msg, "a.int8"));
    CHECK(gm_gguf_get_u32_per_layer(g, "a.float32", 2, pl, &err) == GM_ERR_FORMAT);
    CHECK(gm_gguf_get_u32_per_layer(g, "missing.key", 2, pl, &err) == GM_ERR_FORMAT);

    bool ba[3];
    CHECK(gm_gguf_get_bool_array(g, "a.uint8", 3, ba, &err) == GM_OK && !ba[0] && ba[1] && ba[2]);
    CHECK(gm_gguf_get_bool_array(g, "a.int32", 3, ba, &err) == GM_OK && ba[0] && ba[1] && ba[2]);
    CHECK(gm_gguf_get_bool_array(g, "a.int32", 4, ba, &err) == GM_ERR_FORMAT && strstr(err.msg, "a.int32"));
    CHECK(gm_gguf_get_bool_array(g, "s.bool", 1, ba, &err) == GM_ERR_FORMAT && strstr(err.msg, "s.bool"));
    CHECK(gm_gguf_get_bool_array(g, "a.float64", 2, ba, &err) == GM_ERR_FORMAT);

    CHECK(strcmp(gm_gguf_vtype_name(GM_GGUF_FLOAT64), "float64") == 0);
    CHECK(strcmp(gm_gguf_vtype_name((gm_gguf_vtype)77), "unknown") == 0);
}

static void test_all_types(void)
{
    bb b = build_all_types();
    gm_error err = { 0 };
    uint8_t *copy;
    gm_gguf *g = open_copy(b.p, b.n, &copy, &err);
    CHECKF(g != NULL, "all-types: %s", err.msg);
    if (g) {
        CHECK_EQ_INT(g->version, 2);
        check_all_types(g);
        /* Copy every key through the writer and read it back identical. */
        gm_gguf_writer *w = gm_gguf_writer_new();
        for (uint64_t i = 0; i < g->n_kv; i++)
            gm_gguf_add_kv_from(w, g, &g->kv[i]);
        CHECK(gm_gguf_writer_write(w, tmp_path("all-types.gguf"), &err) == GM_OK);
        gm_gguf_writer_free(w);
        gm_gguf *g2 = gm_gguf_open(tmp_path("all-types.gguf"), &err);
        CHECKF(g2 != NULL, "reopen: %s", err.msg);
        if (g2) {
            CHECK_EQ_INT(g2->n_kv, g->n_kv);
            check_all_types(g2);
            gm_gguf_close(g2);
        }
        gm_gguf_close(g);
    }
    free(copy);
    free(b.p);
}

/* ---- the real vocabulary file ---- */

static void kv_equal(const gm_gguf *a, const gm_gguf_kv *x, const gm_gguf *b, const gm_gguf_kv *y)
{
    CHECKF(y && x->type == y->type, "key %s type", x->key);
    if (!y || x->type != y->type)
        return;
    if (x->type == GM_GGUF_STRING) {
        CHECKF(x->str.len == y->str.len && memcmp(x->str.ptr, y->str.ptr, x->str.len) == 0, "key %s", x->key);
    } else if (x->type == GM_GGUF_ARRAY) {
        CHECKF(x->arr_type == y->arr_type && x->arr_n == y->arr_n, "key %s array", x->key);
        if (x->arr_type != y->arr_type || x->arr_n != y->arr_n)
            return;
        if (x->arr_type == GM_GGUF_STRING) {
            uint64_t bad = 0;
            for (uint64_t i = 0; i < x->arr_n; i++) {
                gm_gguf_str s = gm_gguf_arr_str(a, x, i), t = gm_gguf_arr_str(b, y, i);
                bad += s.len != t.len || memcmp(s.ptr, t.ptr, s.len) != 0;
            }
            CHECKF(bad == 0, "key %s: %llu strings differ", x->key, (unsigned long long)bad);
        } else {
            uint64_t bad = 0;
            for (uint64_t i = 0; i < x->arr_n; i++)
                bad += gm_gguf_arr_float(x, i) != gm_gguf_arr_float(y, i) ||
                       gm_gguf_arr_int(x, i) != gm_gguf_arr_int(y, i);
            CHECKF(bad == 0, "key %s: %llu elements differ", x->key, (unsigned long long)bad);
        }
    } else {
        CHECKF(memcmp(&x->v, &y->v, sizeof x->v) == 0, "key %s value", x->key);
    }
}

static void test_vocab(void)
{
    gm_error err = { 0 };
    double t0 = now_s();
    gm_gguf *g = gm_gguf_open(gm_test_data("ggml-vocab-gemma-4.gguf"), &err);
    double t1 = now_s();
    CHECKF(g != NULL, "vocab: %s", err.msg);
    if (!g)
        return;
    printf("vocab: %llu keys parsed in %.1f ms\n", (unsigned long long)g->n_kv, (t1 - t0) * 1e3);
    CHECK_EQ_INT(g->version, 3);
    CHECK_EQ_INT(g->n_tensors, 0);
    CHECK_EQ_INT(g->n_kv, 42);
    char *s = NULL;
    CHECK(gm_gguf_get_str(g, "tokenizer.ggml.model", &s, &err) == GM_OK && s && strcmp(s, "gemma4") == 0);
    free(s);
    s = NULL;
    CHECK(gm_gguf_get_str(g, "general.architecture", &s, &err) == GM_OK && s && strcmp(s, "gemma4") == 0);
    free(s);
    const gm_gguf_kv *tok = gm_gguf_find_kv(g, "tokenizer.ggml.tokens");
    CHECK(tok && tok->type == GM_GGUF_ARRAY && tok->arr_type == GM_GGUF_STRING);
    if (tok) {
        CHECK_EQ_INT(tok->arr_n, 262144);
        CHECK(str_eq(gm_gguf_arr_str(g, tok, 0), "<pad>"));
        CHECK(str_eq(gm_gguf_arr_str(g, tok, 1), "<eos>"));
        CHECK(str_eq(gm_gguf_arr_str(g, tok, 2), "<bos>"));
        CHECK(str_eq(gm_gguf_arr_str(g, tok, 3), "<unk>"));
        CHECK(str_eq(gm_gguf_arr_str(g, tok, 262143), "<unused6226>"));
        CHECK(gm_gguf_arr_str(g, tok, 262144).ptr == NULL);
    }
    const gm_gguf_kv *merges = gm_gguf_find_kv(g, "tokenizer.ggml.merges");
    CHECK(merges && merges->arr_type == GM_GGUF_STRING && merges->arr_n == 514906);
    if (merges) {
        /* every merge is two pieces separated by one space */
        uint64_t bad = 0;
        for (uint64_t i = 0; i < merges->arr_n; i++) {
            gm_gguf_str m = gm_gguf_arr_str(g, merges, i);
            bad += m.len < 3 || !memchr(m.ptr + 1, ' ', m.len - 2);
        }
        CHECK_EQ_INT(bad, 0);
    }
    const gm_gguf_kv *scores = gm_gguf_find_kv(g, "tokenizer.ggml.scores");
    CHECK(scores && scores->arr_type == GM_GGUF_FLOAT32 && scores->arr_n == 262144);
    CHECK(gm_gguf_arr_float(scores, 100) == -1000.0);
    const gm_gguf_kv *tt = gm_gguf_find_kv(g, "tokenizer.ggml.token_type");
    CHECK(tt && tt->arr_n == 262144 && gm_gguf_arr_int(tt, 2) == 3 && gm_gguf_arr_int(tt, 5) == 1);
    uint32_t u = 0;
    CHECK(gm_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &u, &err) == GM_OK && u == 2);
    CHECK(gm_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &u, &err) == GM_OK && u == 1);
    CHECK(gm_gguf_get_u32(g, "gemma4.block_count", &u, &err) == GM_OK && u == 30);
    bool b = false;
    CHECK(gm_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b, &err) == GM_OK && b);
    float f = 0;
    CHECK(gm_gguf_get_f32(g, "gemma4.rope.freq_base", &f, &err) == GM_OK && f == 1e6f);
    CHECK(gm_gguf_get_f32(g, "gemma4.attention.layer_norm_rms_epsilon", &f, &err) == GM_OK && f == 1e-6f);
    /* per-layer keys of this (26B-A4B) vocabulary: KV heads 8 on sliding, 2 on full layers */
    uint32_t kvh[30];
    bool swa[30];
    CHECK(gm_gguf_get_u32_per_layer(g, "gemma4.attention.head_count_kv", 30, kvh, &err) == GM_OK);
    CHECK(gm_gguf_get_bool_array(g, "gemma4.attention.sliding_window_pattern", 30, swa, &err) == GM_OK);
    int mismatch = 0;
    for (int i = 0; i < 30; i++)
        mismatch += kvh[i] != (swa[i] ? 8u : 2u);
    CHECK_EQ_INT(mismatch, 0);
    CHECK(swa[0] && !swa[5] && !swa[29]);
    CHECK(gm_gguf_get_u32_per_layer(g, "gemma4.attention.head_count", 30, kvh, &err) == GM_OK && kvh[17] == 16);

    /* Carry the whole tokenizer into a new file (as the model generator does). */
    gm_gguf_writer *w = gm_gguf_writer_new();
    for (uint64_t i = 0; i < g->n_kv; i++)
        gm_gguf_add_kv_from(w, g, &g->kv[i]);
    int64_t ne[1] = { 32 };
    float data[32] = { 1 };
    CHECK(gm_gguf_add_tensor(w, "x", GM_TYPE_F32, 1, ne, data, &err) == GM_OK);
    CHECK(gm_gguf_writer_write(w, tmp_path("vocab-copy.gguf"), &err) == GM_OK);
    gm_gguf_writer_free(w);
    gm_gguf *g2 = gm_gguf_open(tmp_path("vocab-copy.gguf"), &err);
    CHECKF(g2 != NULL, "vocab copy: %s", err.msg);
    if (g2) {
        CHECK_EQ_INT(g2->n_kv, g->n_kv);
        for (uint64_t i = 0; i < g->n_kv; i++)
            kv_equal(g, &g->kv[i], g2, gm_gguf_find_kv(g2, g->kv[i].key));
        gm_gguf_close(g2);
    }
    unlink(tmp_path("vocab-copy.gguf"));

    /* A few cuts through the big arrays must fail cleanly. */
    size_t n = 0;
    uint8_t *all = gm_test_read_file(gm_test_data("ggml-vocab-gemma-4.gguf"), &n);
    if (all) {
        const size_t cuts[] = { 100, n / 3, n / 2, n - 1 };
        for (size_t i = 0; i < 4; i++) {
            gm_gguf *gc = gm_gguf_open_memory(all, cuts[i], "vocab-cut", &err);
            CHECKF(gc == NULL && strstr(err.msg, "vocab-cut"), "cut at %zu", cuts[i]);
            gm_gguf_close(gc);
        }
        free(all);
    }
    gm_gguf_close(g);
}

/* ---- lazy loading: a 4 GiB tensor in a sparse file ---- */

static long resident_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static void test_lazy_load(void)
{
    bb b = { 0 };
    bb_header(&b, 3, 2, 1);
    bb_str(&b, "general.architecture"); bb_u32(&b, GM_GGUF_STRING); bb_str(&b, "gemma4");
    const uint64_t big[2] = { 1024, 1024 * 1024 }; /* f32: 4 GiB */
    const uint64_t small[1] = { 8 };
    bb_tinfo(&b, "big", 2, big, GM_TYPE_F32, 0);
    bb_tinfo(&b, "small", 1, small, GM_TYPE_F32, 4ull << 30);
    bb_pad(&b, 32);
    const char *path = tmp_path("sparse.gguf");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    if (fd < 0) {
        free(b.p);
        return;
    }
    bool ok = write(fd, b.p, b.n) == (ssize_t)b.n && ftruncate(fd, (off_t)(b.n + (4ull << 30) + 32)) == 0;
    close(fd);
    free(b.p);
    CHECKF(ok, "cannot create sparse file");
    if (!ok)
        return;
    gm_error err = { 0 };
    long rss0 = resident_kib();
    double t0 = now_s();
    gm_gguf *g = gm_gguf_open(path, &err);
    double t1 = now_s();
    long rss1 = resident_kib();
    CHECKF(g != NULL, "sparse: %s", err.msg);
    if (g) {
        printf("4 GiB file opened in %.3f ms, resident +%ld KiB\n", (t1 - t0) * 1e3, rss1 - rss0);
        CHECKF(t1 - t0 < 0.5, "open took %.3f s", t1 - t0);
        CHECKF(rss1 - rss0 < 8 * 1024, "resident memory grew by %ld KiB", rss1 - rss0);
        const gm_gguf_tensor *t = gm_gguf_find_tensor(g, "big");
        CHECK(t && t->nbytes == 4ull << 30);
        /* No tensor page may have been faulted in by open. */
        long page = sysconf(_SC_PAGESIZE);
        size_t npages = 256;
        unsigned char vec[256];
        uintptr_t start = ((uintptr_t)g->base + (uintptr_t)(1u << 30)) & ~(uintptr_t)(page - 1);
        if (mincore((void *)start, npages * (size_t)page, vec) == 0) {
            int resident = 0;
            for (size_t i = 0; i < npages; i++)
                resident += vec[i] & 1;
            CHECK_EQ_INT(resident, 0);
        }
        gm_gguf_close(g);
    }
    unlink(path);
}

/* ---- writer misuse ---- */

static void test_writer_errors(void)
{
    gm_error err = { 0 };
    int64_t ne[2] = { 33, 2 };
    gm_gguf_writer *w = gm_gguf_writer_new();
    CHECK(gm_gguf_add_tensor(w, "q", GM_TYPE_Q8_0, 2, ne, NULL, &err) == GM_ERR_INVALID && strstr(err.msg, "'q'"));
    ne[0] = 32;
    CHECK(gm_gguf_add_tensor(w, "q", GM_TYPE_Q8_0, 5, ne, NULL, &err) == GM_ERR_INVALID);
    CHECK(gm_gguf_add_tensor(w, "q", GM_TYPE_Q8_0, 2, ne, NULL, &err) == GM_OK);
    CHECK(gm_gguf_add_tensor(w, "q", GM_TYPE_F32, 1, ne, NULL, &err) == GM_ERR_INVALID && strstr(err.msg, "twice"));
    CHECK(gm_gguf_add_tensor(w, "t", (gm_type)99, 1, ne, NULL, &err) == GM_ERR_INVALID);
    CHECK(gm_gguf_add_tensor(w, "a123456789b123456789c123456789d123456789e123456789f123456789g123",
                             GM_TYPE_F32, 1, ne, NULL, &err) == GM_ERR_INVALID && strstr(err.msg, "63"));
    ne[1] = 0;
    CHECK(gm_gguf_add_tensor(w, "z", GM_TYPE_F32, 2, ne, NULL, &err) == GM_ERR_INVALID);
    /* whole-file mode needs data */
    CHECK(gm_gguf_writer_write(w, tmp_path("bad.gguf"), &err) == GM_ERR_INVALID && strstr(err.msg, "'q'"));
    /* finishing before every tensor was streamed fails and removes the file */
    CHECK(gm_gguf_writer_begin(w, tmp_path("bad.gguf"), &err) == GM_OK);
    CHECK(gm_gguf_writer_finish(w, &err) == GM_ERR_INVALID && strstr(err.msg, "'q'"));
    CHECK(access(tmp_path("bad.gguf"), F_OK) != 0);
    /* streaming more tensors than were added */
    uint8_t data[68] = { 0 };
    CHECK(gm_gguf_writer_begin(w, tmp_path("ok.gguf"), &err) == GM_OK);
    CHECK(gm_gguf_writer_stream_tensor(w, data, &err) == GM_OK);
    CHECK(gm_gguf_writer_stream_tensor(w, data, &err) == GM_ERR_INVALID);
    CHECK(gm_gguf_writer_finish(w, &err) == GM_OK);
    gm_gguf *g = gm_gguf_open(tmp_path("ok.gguf"), &err);
    CHECK(g && g->n_tensors == 1 && g->tensors[0].nbytes == 68);
    gm_gguf_close(g);
    unlink(tmp_path("ok.gguf"));
    gm_gguf_writer_free(w);

    /* a bad alignment is reported at write time */
    w = gm_gguf_writer_new();
    gm_gguf_writer_set_alignment(w, 48);
    CHECK(gm_gguf_writer_write(w, tmp_path("bad.gguf"), &err) == GM_ERR_INVALID && strstr(err.msg, "48"));
    gm_gguf_writer_free(w);
    /* unwritable path */
    w = gm_gguf_writer_new();
    CHECK(gm_gguf_writer_write(w, "/nonexistent-dir/x.gguf", &err) == GM_ERR_IO && strstr(err.msg, "/nonexistent-dir/x.gguf"));
    gm_gguf_writer_free(w);
    /* an abandoned streaming write leaves no file behind */
    w = gm_gguf_writer_new();
    CHECK(gm_gguf_writer_begin(w, tmp_path("abandoned.gguf"), &err) == GM_OK);
    gm_gguf_writer_free(w);
    CHECK(access(tmp_path("abandoned.gguf"), F_OK) != 0);
}

/* Misuse of stream_part: a part past a tensor's end, mixing with stream_tensor,
 * finishing mid-tensor, data after the last tensor. */
static void test_stream_part_errors(void)
{
    gm_error err = { 0 };
    const int64_t ne_a[1] = { 10 }, ne_b[1] = { 3 }; /* F32: 40 and 12 bytes */
    uint8_t data[64];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7 + 1);

    gm_gguf_writer *w = gm_gguf_writer_new();
    CHECK(gm_gguf_writer_stream_part(w, data, 4, &err) == GM_ERR_INVALID && strstr(err.msg, "not started"));
    CHECK(gm_gguf_add_tensor(w, "a", GM_TYPE_F32, 1, ne_a, NULL, &err) == GM_OK);
    CHECK(gm_gguf_add_tensor(w, "b", GM_TYPE_F32, 1, ne_b, NULL, &err) == GM_OK);
    CHECK(gm_gguf_writer_begin(w, tmp_path("parts.gguf"), &err) == GM_OK);
    /* one byte too many for "a" in one part, and after a first part */
    CHECK(gm_gguf_writer_stream_part(w, data, 41, &err) == GM_ERR_INVALID && strstr(err.msg, "'a'") &&
          strstr(err.msg, "41"));
    CHECK(gm_gguf_writer_stream_part(w, data, 30, &err) == GM_OK);
    CHECK(gm_gguf_writer_stream_part(w, data + 30, 11, &err) == GM_ERR_INVALID && strstr(err.msg, "'a'"));
    /* a whole tensor cannot follow a part of it */
    CHECK(gm_gguf_writer_stream_tensor(w, data, &err) == GM_ERR_INVALID && strstr(err.msg, "30 of its 40"));
    /* finishing mid-tensor fails; the rejected calls wrote nothing, so this still works: */
    CHECK(gm_gguf_writer_stream_part(w, data + 30, 10, &err) == GM_OK);
    CHECK(gm_gguf_writer_stream_part(w, data + 40, 5, &err) == GM_OK);
    CHECK(gm_gguf_writer_stream_part(w, data + 45, 0, &err) == GM_OK);
    CHECK(gm_gguf_writer_stream_part(w, data + 45, 7, &err) == GM_OK);
    CHECK(gm_gguf_writer_stream_part(w, data, 1, &err) == GM_ERR_INVALID && strstr(err.msg, "more tensor data"));
    CHECK(gm_gguf_writer_finish(w, &err) == GM_OK);
    gm_gguf_writer_free(w);
    gm_gguf *g = gm_gguf_open(tmp_path("parts.gguf"), &err);
    CHECKF(g != NULL, "open: %s", err.msg);
    if (g) {
        const gm_gguf_tensor *a = gm_gguf_find_tensor(g, "a"), *b = gm_gguf_find_tensor(g, "b");
        CHECK(a && a->nbytes == 40 && memcmp(a->data, data, 40) == 0);
        CHECK(b && b->nbytes == 12 && memcmp(b->data, data + 40, 12) == 0);
        gm_gguf_close(g);
    }
    unlink(tmp_path("parts.gguf"));

    /* finishing with a tensor half streamed fails, names it, and removes the file */
    w = gm_gguf_writer_new();
    CHECK(gm_gguf_add_tensor(w, "a", GM_TYPE_F32, 1, ne_a, NULL, &err) == GM_OK);
    CHECK(gm_gguf_writer_begin(w, tmp_path("parts.gguf"), &err) == GM_OK);
    CHECK(gm_gguf_writer_stream_part(w, data, 12, &err) == GM_OK);
    CHECK(gm_gguf_writer_finish(w, &err) == GM_ERR_INVALID && strstr(err.msg, "'a', 12 of 40"));
    CHECK(access(tmp_path("parts.gguf"), F_OK) != 0);
    /* a part without data aborts the file */
    CHECK(gm_gguf_writer_begin(w, tmp_path("parts.gguf"), &err) == GM_OK);
    CHECK(gm_gguf_writer_stream_part(w, NULL, 4, &err) == GM_ERR_INVALID && strstr(err.msg, "'a'"));
    CHECK(access(tmp_path("parts.gguf"), F_OK) != 0);
    gm_gguf_writer_free(w);
}

/* ---- open() errors ---- */

static void test_open_errors(void)
{
    gm_error err = { 0 };
    CHECK(gm_gguf_open("/nonexistent/file.gguf", &err) == NULL && err.code == GM_ERR_IO &&
          strstr(err.msg, "/nonexistent/file.gguf"));
    CHECK(gm_gguf_open(tmpdir, &err) == NULL && strstr(err.msg, tmpdir));
    FILE *f = fopen(tmp_path("empty.gguf"), "wb");
    if (f)
        fclose(f);
    CHECK(gm_gguf_open(tmp_path("empty.gguf"), &err) == NULL && strstr(err.msg, "empty.gguf"));
    unlink(tmp_path("empty.gguf"));
    CHECK(gm_gguf_open_memory(NULL, 0, "nothing", &err) == NULL && strstr(err.msg, "nothing"));
}

/* ---- malformed files ---- */

static void test_malformed(void)
{
    bb b = { 0 };
    const uint64_t ne32[1] = { 32 };

    bb_put(&b, "GGUX", 4); bb_u32(&b, 3); bb_u64(&b, 0); bb_u64(&b, 0);
    expect_fail(&b, "not a GGUF", NULL);
    bb_put(&b, "GG", 2);
    expect_fail(&b, "truncated", "magic");
    bb_header(&b, 1, 0, 0);
    expect_fail(&b, "version 1", NULL);
    bb_header(&b, 99, 0, 0);
    expect_fail(&b, "version 99", NULL);
    bb_header(&b, 0x03000000u, 0, 0);
    expect_fail(&b, "big-endian", NULL);
    bb_put(&b, "GGUF", 4); bb_u32(&b, 3); bb_u64(&b, 0);
    expect_fail(&b, "metadata count", NULL);

    /* huge counts */
    bb_header(&b, 3, 0, 1ull << 62);
    expect_fail(&b, "metadata count", NULL);
    bb_header(&b, 3, UINT64_MAX, 0);
    expect_fail(&b, "tensor count", NULL);
    bb_header(&b, 3, 3, 1); bb_kv_u32(&b, "a", 1);
    expect_fail(&b, "tensor count", NULL);

    /* keys */
    bb_header(&b, 3, 0, 1); bb_u64(&b, UINT64_MAX); bb_put(&b, "abc", 3); bb_u32(&b, 4); bb_u32(&b, 0);
    expect_fail(&b, "key of metadata entry 0", "length");
    bb_header(&b, 3, 0, 2); bb_kv_u32(&b, "ok", 1); bb_u64(&b, 0); bb_u32(&b, 4); bb_u32(&b, 0);
    expect_fail(&b, "key of metadata entry 1", "empty");
    bb_header(&b, 3, 0, 1); bb_u64(&b, 3); bb_put(&b, "a\0b", 3); bb_u32(&b, 4); bb_u32(&b, 0);
    expect_fail(&b, "NUL", NULL);
    bb_header(&b, 3, 0, 3); bb_kv_u32(&b, "dup.key", 1); bb_kv_u32(&b, "other", 2); bb_kv_u32(&b, "dup.key", 3);
    expect_fail(&b, "duplicate key 'dup.key'", NULL);

    /* values */
    bb_header(&b, 3, 0, 1); bb_str(&b, "my.key"); bb_u32(&b, 13); bb_u32(&b, 0);
    expect_fail(&b, "'my.key'", "unknown value type 13");
    bb_header(&b, 3, 0, 1); bb_str(&b, "my.key"); bb_u32(&b, 0xffffffffu); bb_u32(&b, 0);
    expect_fail(&b, "'my.key'", "unknown value type");
    bb_header(&b, 3, 0, 1); bb_str(&b, "str.key"); bb_u32(&b, GM_GGUF_STRING); bb_u64(&b, 1ull << 60); bb_put(&b, "xx", 2);
    expect_fail(&b, "'str.key'", "length");
    bb_header(&b, 3, 0, 1); bb_str(&b, "str.key"); bb_u32(&b, GM_GGUF_STRING); bb_u64(&b, UINT64_MAX); bb_put(&b, "xx", 2);
    expect_fail(&b, "'str.key'", "length");
    bb_header(&b, 3, 0, 1); bb_str(&b, "b.key"); bb_u32(&b, GM_GGUF_BOOL); bb_u8(&b, 2); bb_zeros(&b, 12);
    expect_fail(&b, "'b.key'", "bool");
    bb_header(&b, 3, 0, 1); bb_str(&b, "u.key"); bb_u32(&b, GM_GGUF_UINT64); bb_u32(&b, 0);
    expect_fail(&b, "'u.key'", "truncated");

    /* arrays */
    bb_header(&b, 3, 0, 1); bb_str(&b, "arr.key"); bb_u32(&b, GM_GGUF_ARRAY); bb_u32(&b, GM_GGUF_ARRAY);
    bb_u64(&b, 1); bb_u32(&b, GM_GGUF_UINT8); bb_u64(&b, 1); bb_u8(&b, 0);
    expect_fail(&b, "'arr.key'", "arrays of arrays");
    bb_header(&b, 3, 0, 1); bb_str(&b, "arr.key"); bb_u32(&b, GM_GGUF_ARRAY); bb_u32(&b, 42); bb_u64(&b, 0);
    expect_fail(&b, "'arr.key'", "unknown array element type 42");
    bb_header(&b, 3, 0, 1); bb_str(&b, "arr.key"); bb_u32(&b, GM_GGUF_ARRAY); bb_u32(&b, GM_GGUF_UINT32);
    bb_u64(&b, 1ull << 62); bb_zeros(&b, 64);
    expect_fail(&b, "'arr.key'", "does not fit");
    bb_header(&b, 3, 0, 1); bb_str(&b, "arr.key"); bb_u32(&b, GM_GGUF_ARRAY); bb_u32(&b, GM_GGUF_UINT64);
    bb_u64(&b, 3); bb_zeros(&b, 23);
    expect_fail(&b, "'arr.key'", "does not fit");
    bb_header(&b, 3, 0, 1); bb_str(&b, "arr.key"); bb_u32(&b, GM_GGUF_ARRAY); bb_u32(&b, GM_GGUF_STRING);
    bb_u64(&b, UINT64_MAX / 4); bb_zeros(&b, 64);
    expect_fail(&b, "'arr.key'", "does not fit");
    bb_header(&b, 3, 0, 1); bb_str(&b, "tok.key"); bb_u32(&b, GM_GGUF_ARRAY); bb_u32(&b, GM_GGUF_STRING);
    bb_u64(&b, 3); bb_str(&b, "a"); bb_u64(&b, 1ull << 50); bb_str(&b, "c");
    expect_fail(&b, "'tok.key'", "element 1");
    bb_header(&b, 3, 0, 1); bb_str(&b, "tok.key"); bb_u32(&b, GM_GGUF_ARRAY); bb_u32(&b, GM_GGUF_STRING);
    bb_u64(&b, 2); bb_str(&b, "a"); bb_u64(&b, 8); bb_put(&b, "bcd", 3);
    expect_fail(&b, "'tok.key'", "element 1");
    bb_header(&b, 3, 0, 1); bb_str(&b, "ba.key"); bb_u32(&b, GM_GGUF_ARRAY); bb_u32(&b, GM_GGUF_BOOL);
    bb_u64(&b, 3); bb_u8(&b, 1); bb_u8(&b, 0); bb_u8(&b, 7);
    expect_fail(&b, "'ba.key'", "bool value 7");

    /* general.alignment */
    bb_header(&b, 3, 0, 1); bb_str(&b, "general.alignment"); bb_u32(&b, GM_GGUF_UINT64); bb_u64(&b, 32);
    expect_fail(&b, "'general.alignment'", "uint32");
    bb_header(&b, 3, 0, 1); bb_kv_u32(&b, "general.alignment", 0);
    expect_fail(&b, "'general.alignment'", "power of two");
    bb_header(&b, 3, 0, 1); bb_kv_u32(&b, "general.alignment", 48);
    expect_fail(&b, "'general.alignment'", "power of two");

    /* tensor infos */
    bb_header(&b, 3, 1, 0); bb_tinfo(&b, "t.zero_dims", 0, NULL, GM_TYPE_F32, 0); bb_pad(&b, 32); bb_zeros(&b, 128);
    expect_fail(&b, "'t.zero_dims'", "n_dims 0");
    {
        const uint64_t ne5[5] = { 32, 1, 1, 1, 1 };
        bb_header(&b, 3, 1, 0); bb_tinfo(&b, "t.five", 5, ne5, GM_TYPE_F32, 0); bb_pad(&b, 32); bb_zeros(&b, 128);
        expect_fail(&b, "'t.five'", "n_dims 5");
    }
    {
        const uint64_t ne[2] = { 32, 0 };
        bb_header(&b, 3, 1, 0); bb_tinfo(&b, "t.empty", 2, ne, GM_TYPE_F32, 0); bb_pad(&b, 32); bb_zeros(&b, 128);
        expect_fail(&b, "'t.empty'", "dimension 1");
    }
    {
        const uint64_t ne[1] = { (uint64_t)-32 };
        bb_header(&b, 3, 1, 0); bb_tinfo(&b, "t.neg", 1, ne, GM_TYPE_F32, 0); bb_pad(&b, 32); bb_zeros(&b, 128);
        expect_fail(&b, "'t.neg'", "dimension 0");
    }
    {
        const uint64_t ne[3] = { 1ull << 32, 1ull << 32, 1ull << 32 };
        bb_header(&b, 3, 1, 0); bb_tinfo(&b, "t.huge", 3, ne, GM_TYPE_F32, 0); bb_pad(&b, 32); bb_zeros(&b, 128);
        expect_fail(&b, "'t.huge'", "overflows");
    }
    {
        const uint64_t ne[2] = { 1ull << 31, 1ull << 31 }; /* 2^62 floats = 2^64 bytes */
        bb_header(&b, 3, 1, 0); bb_tinfo(&b, "t.bytes", 2, ne, GM_TYPE_F32, 0); bb_pad(&b, 32); bb_zeros(&b, 128);
        expect_fail(&b, "'t.bytes'", "overflows");
    }
    bb_header(&b, 3, 1, 0); bb_tinfo(&b, "t.type", 1, ne32, 99, 0); bb_pad(&b, 32); bb_zeros(&b, 128);
    expect_fail(&b, "unknown tensor type 99 for tensor 't.type'", NULL);
    bb_header(&b, 3, 1, 0); bb_tinfo(&b, "t.type4", 1, ne32, 4, 0); bb_pad(&b, 32); bb_zeros(&b, 128);
    expect_fail(&b, "unknown tensor type 4 for tensor 't.type4'", NULL);
    /* a type this build knows but cannot compute with (taken from the traits table) */
    for (uint32_t ty = 0; ty < GM_TYPE_COUNT; ty++) {
        const gm_type_traits *tr = gm_type_get_traits(ty);
        if (!tr || tr->supported)
            continue;
        const uint64_t ne[1] = { 256 };
        bb_header(&b, 3, 1, 0); bb_tinfo(&b, "t.unsup", 1, ne, ty, 0); bb_pad(&b, 32); bb_zeros(&b, 4096);
        expect_fail(&b, "'t.unsup'", tr->name);
        break;
    }
    {
        const uint64_t ne[2] = { 33, 2 };
        bb_header(&b, 3, 1, 0); bb_tinfo(&b, "t.q8", 2, ne, GM_TYPE_Q8_0, 0); bb_pad(&b, 32); bb_zeros(&b, 256);
        expect_fail(&b, "'t.q8'", "block size");
    }
    bb_header(&b, 3, 1, 0); bb_tinfo(&b, "t.misaligned", 1, ne32, GM_TYPE_F32, 16); bb_pad(&b, 32); bb_zeros(&b, 256);
    expect_fail(&b, "'t.misaligned'", "offset 16");
    bb_header(&b, 3, 1, 1); bb_kv_u32(&b, "general.alignment", 64);
    bb_tinfo(&b, "t.misaligned64", 1, ne32, GM_TYPE_F32, 32); bb_pad(&b, 64); bb_zeros(&b, 256);
    expect_fail(&b, "'t.misaligned64'", "alignment 64");
    bb_header(&b, 3, 1, 0); bb_tinfo(&b, "t.past", 1, ne32, GM_TYPE_F32, 1ull << 40); bb_pad(&b, 32); bb_zeros(&b, 256);
    expect_fail(&b, "'t.past'", "end of the file");
    bb_header(&b, 3, 1, 0); bb_tinfo(&b, "t.tail", 1, ne32, GM_TYPE_F32, 0); bb_pad(&b, 32); bb_zeros(&b, 127);
    expect_fail(&b, "'t.tail'", "end of the file");
    bb_header(&b, 3, 1, 0); bb_tinfo(&b, "t.nodata1", 1, ne32, GM_TYPE_F32, 0);
    expect_fail(&b, "data section", NULL);
    {
        const uint64_t ne64[1] = { 64 };
        bb_header(&b, 3, 3, 0);
        bb_tinfo(&b, "t.a", 1, ne32, GM_TYPE_F32, 0);
        bb_tinfo(&b, "t.c", 1, ne32, GM_TYPE_F32, 320);
        bb_tinfo(&b, "t.b", 1, ne64, GM_TYPE_F32, 192); /* 192 + 256 > 320 */
        bb_pad(&b, 32); bb_zeros(&b, 1024);
        expect_fail(&b, "overlaps", "'t.b'");
    }
    bb_header(&b, 3, 2, 0);
    bb_tinfo(&b, "t.same", 1, ne32, GM_TYPE_F32, 0);
    bb_tinfo(&b, "t.same", 1, ne32, GM_TYPE_F32, 128);
    bb_pad(&b, 32); bb_zeros(&b, 256);
    expect_fail(&b, "duplicate tensor name 't.same'", NULL);
    bb_header(&b, 3, 1, 0); bb_u64(&b, 0); bb_u32(&b, 1); bb_u64(&b, 32); bb_u32(&b, 0); bb_u64(&b, 0);
    bb_pad(&b, 32); bb_zeros(&b, 128);
    expect_fail(&b, "name of tensor info 0", "empty");
    bb_header(&b, 3, 1, 0); bb_tinfo(&b, "t.cut.longer.name", 2, (const uint64_t[]){ 32, 2 }, GM_TYPE_F32, 0);
    b.n -= 20; /* ends inside the shape */
    bb_zeros(&b, 1);
    expect_fail(&b, "'t.cut.longer.name'", "truncated");

    /* The same file without the defects opens: the cases above fail for the reason tested. */
    bb_header(&b, 3, 2, 1); bb_kv_u32(&b, "general.alignment", 64);
    bb_tinfo(&b, "t.a", 1, ne32, GM_TYPE_F32, 0);
    bb_tinfo(&b, "t.b", 1, ne32, GM_TYPE_F32, 128);
    bb_pad(&b, 64); bb_zeros(&b, 256);
    uint8_t *copy;
    gm_error err = { 0 };
    gm_gguf *g = open_copy(b.p, b.n, &copy, &err);
    CHECKF(g != NULL, "control file: %s", err.msg);
    if (g) {
        CHECK_EQ_INT(g->alignment, 64);
        CHECK(g->data_offset % 64 == 0);
        CHECK(gm_gguf_find_tensor(g, "t.b") && gm_gguf_find_tensor(g, "t.b")->offset == 128);
    }
    gm_gguf_close(g);
    free(copy);
    free(b.p);
}

/* ---- every prefix of a small valid file fails; every single-byte change is handled ---- */

static void test_truncation_and_mutation(void)
{
    gm_error err = { 0 };
    gm_gguf_writer *w = gm_gguf_writer_new();
    gm_gguf_add_str(w, "general.architecture", "gemma4");
    gm_gguf_add_u32(w, "n", 3);
    gm_gguf_add_f32(w, "eps", 1e-6f);
    gm_gguf_add_bool(w, "flag", true);
    const gm_gguf_str toks[] = { { "<pad>", 5 }, { "ab", 2 }, { "c", 1 } };
    gm_gguf_add_arr_str(w, "tokens", toks, 3);
    gm_gguf_add_arr_i32(w, "ints", (const int32_t[]){ 1, -2 }, 2);
    uint8_t d0[40] = { 1 }, d1[34] = { 2 };
    CHECK(gm_gguf_add_tensor(w, "f16", GM_TYPE_F16, 2, (const int64_t[]){ 4, 5 }, d0, &err) == GM_OK);
    CHECK(gm_gguf_add_tensor(w, "q8", GM_TYPE_Q8_0, 1, (const int64_t[]){ 32 }, d1, &err) == GM_OK);
    CHECK(gm_gguf_writer_write(w, tmp_path("small.gguf"), &err) == GM_OK);
    gm_gguf_writer_free(w);
    size_t n = 0;
    uint8_t *file = gm_test_read_file(tmp_path("small.gguf"), &n);
    CHECK(file && n > 64);
    if (!file)
        return;
    gm_gguf *g = gm_gguf_open_memory(file, n, "small", &err);
    CHECKF(g != NULL, "small: %s", err.msg);
    if (!g) {
        free(file);
        return;
    }
    /* the last tensor's bytes end before the file's final padding */
    const gm_gguf_tensor *last = gm_gguf_find_tensor(g, "q8");
    size_t need = (size_t)(g->data_offset + last->offset + last->nbytes);
    gm_gguf_close(g);
    int accepted_short = 0, rejected_long = 0, unnamed = 0;
    for (size_t len = 0; len <= n; len++) {
        uint8_t *copy;
        gm_gguf *gp = open_copy(file, len, &copy, &err);
        if (len < need) {
            accepted_short += gp != NULL;
            unnamed += gp == NULL && !strstr(err.msg, "case.gguf");
        } else {
            rejected_long += gp == NULL;
        }
        gm_gguf_close(gp);
        free(copy);
    }
    CHECK_EQ_INT(accepted_short, 0);
    CHECK_EQ_INT(rejected_long, 0);
    CHECK_EQ_INT(unnamed, 0);

    /* Single-byte changes: never crash; whatever opens must be self-consistent. */
    static const uint8_t vals[] = { 0x00, 0x01, 0x07, 0x20, 0x7f, 0x80, 0xff };
    int opened = 0, inconsistent = 0;
    for (size_t pos = 0; pos < need; pos++) {
        for (size_t v = 0; v < sizeof vals; v++) {
            uint8_t *copy = malloc(n);
            memcpy(copy, file, n);
            copy[pos] = vals[v];
            gm_gguf *gm = gm_gguf_open_memory(copy, n, "mut", &err);
            if (gm) {
                opened++;
                for (uint64_t i = 0; i < gm->n_kv; i++)
                    inconsistent += gm_gguf_find_kv(gm, gm->kv[i].key) != &gm->kv[i];
                for (uint64_t i = 0; i < gm->n_tensors; i++) {
                    const gm_gguf_tensor *t = &gm->tensors[i];
                    inconsistent += gm_gguf_find_tensor(gm, t->name) != t;
                    inconsistent += (const uint8_t *)t->data + t->nbytes > copy + n;
                }
            }
            gm_gguf_close(gm);
            free(copy);
        }
    }
    CHECK(opened > 0); /* e.g. changed tensor bytes or string contents */
    CHECK_EQ_INT(inconsistent, 0);
    free(file);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test-gguf-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_roundtrip(32);
    test_roundtrip(64);
    test_all_types();
    test_malformed();
    test_truncation_and_mutation();
    test_writer_errors();
    test_stream_part_errors();
    test_open_errors();
    test_lazy_load();
    test_vocab();

    /* remove what the tests wrote */
    const char *names[] = { "rt-32.gguf", "rt-stream-32.gguf", "rt-parts-32.gguf", "rt-64.gguf",
                            "rt-stream-64.gguf", "rt-parts-64.gguf", "all-types.gguf", "small.gguf" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        unlink(tmp_path(names[i]));
    rmdir(tmpdir);
    return gm_test_finish();
}
