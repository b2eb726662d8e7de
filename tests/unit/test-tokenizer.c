/* test-tokenizer.c — the Gemma 4 tokenizer against llama.cpp's reference cases, a naive
 * O(n^2) BPE written independently here, and properties (round trip, special tokens, byte
 * fallback, streaming detokenization). */
#include <stdint.h>
#include <time.h>

#include "core/gguf.h"
#include "decoder/tokenizer.h"
#include "test-util.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}


static gm_tokens tok_str(const gm_tokenizer *tok, const char *s, size_t n, bool bos, bool special)
{
    gm_tokens t = {0};
    gm_error err = {0};
    int rc = gm_tokenize(tok, s, n, bos, special, &t, &err);
    CHECKF(rc == 0, "tokenize failed: %s", err.msg);
    return t;
}

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n && i < 64; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 64 ? " ...\n" : "\n");
}

/* ---- the reference cases (framing as llama.cpp's test-tokenizer-0) ---- */

static void test_reference(const gm_tokenizer *tok)
{
    size_t ni, no;
    char *inp = gm_test_read_file(gm_test_data("ggml-vocab-gemma-4.gguf.inp"), &ni);
    char *out = gm_test_read_file(gm_test_data("ggml-vocab-gemma-4.gguf.out"), &no);
    CHECK(inp && out);
    if (!inp || !out) {
        free(inp);
        free(out);
        return;
    }
    static const char sep[] = "\n__ggml_vocab_test__\n";
    const size_t sl = sizeof sep - 1;
    char *p = inp, *end = inp + ni;
    char *line = out;
    int n_cases = 0, n_ok = 0;
    for (;;) {
        char *q = memmem(p, (size_t)(end - p), sep, sl);
        size_t len = q ? (size_t)(q - p) : (size_t)(end - p);
        /* expected ids: one line per string */
        char *eol = memchr(line, '\n', (size_t)(out + no - line));
        CHECK(eol != NULL);
        if (!eol)
            break;
        *eol = '\0';
        int32_t exp[4096];
        size_t ne = 0;
        for (char *t = line; *t;) {
            char *e;
            long v = strtol(t, &e, 10);
            if (e == t)
                break;
            exp[ne++] = (int32_t)v;
            t = e;
        }
        line = eol + 1;
        gm_tokens got = tok_str(tok, p, len, false, false);
        bool same = got.n == ne && (ne == 0 || memcmp(got.ids, exp, ne * sizeof *exp) == 0);
        CHECKF(same, "reference case %d (\"%.*s\")", n_cases, (int)(len > 60 ? 60 : len), p);
        if (!same) {
            print_ids("expected", exp, ne);
            print_ids("got     ", got.ids, got.n);
        }
        n_ok += same;
        n_cases++;
        gm_tokens_free(&got);
        if (!q)
            break;
        p = q + sl;
    }
    CHECK_EQ_INT(n_cases, 46);
    printf("reference: %d/%d cases match\n", n_ok, n_cases);
    free(inp);
    free(out);
}

/* ---- an independent naive BPE: merges as "left right" strings, rescanned every step ---- */

typedef struct naive {
    char **key;  /* the merge string, NULL = empty slot */
    int32_t *rank;
    size_t mask;
} naive;

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ULL;
    return h;
}

static int naive_load(naive *nv, const gm_gguf *g)
{
    const gm_gguf_kv *kv = gm_gguf_find_kv(g, "tokenizer.ggml.merges");
    if (!kv)
        return -1;
    size_t cap = 1;
    while (cap < kv->arr_n * 2)
        cap <<= 1;
    nv->key = calloc(cap, sizeof *nv->key);
    nv->rank = calloc(cap, sizeof *nv->rank);
    nv->mask = cap - 1;
    for (uint64_t r = 0; r < kv->arr_n; r++) {
        gm_gguf_str s = gm_gguf_arr_str(g, kv, r);
        size_t i = fnv(s.ptr, s.len) & nv->mask;
        while (nv->key[i] && !(strlen(nv->key[i]) == s.len && memcmp(nv->key[i], s.ptr, s.len) == 0))
            i = (i + 1) & nv->mask;
        if (nv->key[i])
            continue;
        nv->key[i] = strndup(s.ptr, s.len);
        nv->rank[i] = (int32_t)r;
    }
    return 0;
}

static void naive_free(naive *nv)
{
    for (size_t i = 0; i <= nv->mask; i++)
        free(nv->key[i]);
    free(nv->key);
    free(nv->rank);
}

static int32_t naive_rank(const naive *nv, const char *s, size_t n)
{
    size_t i = fnv(s, n) & nv->mask;
    while (nv->key[i]) {
        if (strlen(nv->key[i]) == n && memcmp(nv->key[i], s, n) == 0)
            return nv->rank[i];
        i = (i + 1) & nv->mask;
    }
    return -1;
}

static int32_t find_n(const gm_tokenizer *tok, const char *s, size_t n)
{
    char buf[512];
    if (n >= sizeof buf)
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return gm_tokenizer_find(tok, buf);
}

/* UTF-8 character length for valid text (the naive path only gets valid input). */
static size_t u8len(unsigned char c)
{
    return c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
}

static void naive_word(const gm_tokenizer *tok, const naive *nv, const char *w, size_t n, gm_tokens *out)
{
    if (w[0] == '\n') {
        int32_t id = find_n(tok, w, n);
        if (id >= 0) {
            gm_tokens_push(out, id);
            return;
        }
    }
    /* symbols as (offset, length) into w; a symbol that is not a token never merges */
    size_t *off = malloc(n * sizeof *off), *len = malloc(n * sizeof *len);
    size_t ns = 0;
    for (size_t i = 0; i < n; i += len[ns - 1]) {
        off[ns] = i;
        len[ns++] = u8len((unsigned char)w[i]);
    }
    char buf[1024];
    for (;;) {
        int32_t best = -1;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < ns; i++) {
            if (find_n(tok, w + off[i], len[i]) < 0 || find_n(tok, w + off[i + 1], len[i + 1]) < 0)
                continue;
            if (len[i] + len[i + 1] + 1 >= sizeof buf)
                continue;
            memcpy(buf, w + off[i], len[i]);
            buf[len[i]] = ' ';
            memcpy(buf + len[i] + 1, w + off[i + 1], len[i + 1]);
            int32_t r = naive_rank(nv, buf, len[i] + len[i + 1] + 1);
            if (r >= 0 && find_n(tok, w + off[i], len[i] + len[i + 1]) >= 0 && (best < 0 || r < best)) {
                best = r;
                bi = i;
            }
        }
        if (best < 0)
            break;
        len[bi] += len[bi + 1];
        memmove(off + bi + 1, off + bi + 2, (ns - bi - 2) * sizeof *off);
        memmove(len + bi + 1, len + bi + 2, (ns - bi - 2) * sizeof *len);
        ns--;
    }
    for (size_t i = 0; i < ns; i++) {
        int32_t id = find_n(tok, w + off[i], len[i]);
        if (id >= 0) {
            gm_tokens_push(out, id);
        } else {
            for (size_t k = 0; k < len[i]; k++) {
                char bt[8];
                snprintf(bt, sizeof bt, "<0x%02X>", (unsigned char)w[off[i] + k]);
                gm_tokens_push(out, gm_tokenizer_find(tok, bt));
            }
        }
    }
    free(off);
    free(len);
}

/* Plain text only (no special tokens): escape spaces, split runs, naive BPE. */
static gm_tokens naive_tokenize(const gm_tokenizer *tok, const naive *nv, const char *s)
{
    gm_tokens out = {0};
    size_t n = strlen(s);
    char *e = malloc(n * 3 + 1);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(e + m, "\xe2\x96\x81", 3);
            m += 3;
        } else {
            e[m++] = s[i];
        }
    }
    for (size_t i = 0; i < m;) {
        size_t j = i + 1;
        while (j < m && (e[j] == '\n') == (e[i] == '\n'))
            j++;
        naive_word(tok, nv, e + i, j - i, &out);
        i = j;
    }
    free(e);
    return out;
}

static const char *const corpus[] = {
    "Hello world", " leading space", "trailing space ", "  two  spaces  between  ",
    "tabs\tand\t\tmore\t\t\ttabs", "mixed \t \t whitespace\r\nCRLF\r\n",
    "line1\nline2\n\nline3\n\n\n\nline4", "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n",
    "                                                                          x",
    "Привет, как дела? Съешь же ещё этих мягких французских булок.",
    "Ελληνικά: Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.", "עברית: דג סקרן שט בים מאוכזב",
    "العربية: نص حكيم له سر قاطع وذو شأن عظيم", "हिन्दी: ऋषियों को सताने वाले दुष्ट राक्षसों",
    "বাংলা ভাষা", "தமிழ் மொழி", "ગુજરાતી", "ಕನ್ನಡ", "മലയാളം", "සිංහල", "ไทย: เป็นมนุษย์สุดประเสริฐ",
    "ພາສາລາວ", "မြန်မာဘာသာ", "ქართული ენა", "Հայերեն", "አማርኛ", "ᏣᎳᎩ", "ᐃᓄᒃᑎᑐᑦ",
    "日本語のテキスト、カタカナとひらがな。", "中文：我能吞下玻璃而不伤身体。", "한국어: 나는 유리를 먹을 수 있어요",
    "Tiếng Việt có dấu: Cửa Việt, Phở bò", "Café déjà vu naïve coöperate Ångström",
    "emoji: 👩‍👩‍👧‍👦 👨🏽‍💻 🏳️‍🌈 🇩🇪🇯🇵 ❤️‍🔥 🧑🏿‍🦱 1️⃣",
    "math: ∀x∈ℝ, ∑ᵢ xᵢ² ≤ ∞; ∫₀¹ f(x)dx ≈ π/4", "code: for (int i = 0; i < n; ++i) { a[i] = b[i] * 2; }",
    "rare: 𠀀𠀁 ꙮ 𓀀𓀁 ᚠᚡᚢ 㐀 鿿 ힰ", "numbers 1234567890 3.14159 -0.001 1e10",
    "punctuation!!! ??? ... --- ___ ~~~ ''' \"\"\" ```",
    "<not special> <|not a token|> <|turn <turn| <|image |>",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
};

static void test_naive(const gm_tokenizer *tok, const gm_gguf *g)
{
    naive nv = {0};
    CHECK(naive_load(&nv, g) == 0);
    if (!nv.key)
        return;
    /* the corpus plus deterministic random strings over a mixed alphabet */
    static const char *const alpha[] = {"a", "e", "t", "n", " ", " ", "\n", "\t", "é", "ñ", "中",
                                        "文", "я", "ж", "🙂", "‍", "1", "0", ".", ",", "th", "in", "er",
                                        "ing", "▁", "𠀀", "ا", "ل"};
    const size_t na = sizeof alpha / sizeof *alpha;
    uint64_t rng = 12345;
    int n_mismatch = 0;
    size_t nc = sizeof corpus / sizeof *corpus;
    for (size_t c = 0; c < nc + 300; c++) {
        char buf[512];
        const char *s;
        if (c < nc) {
            s = corpus[c];
        } else {
            size_t len = 0, target = 1 + (c % 40);
            buf[0] = '\0';
            for (size_t k = 0; k < target; k++) {
                rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
                const char *a = alpha[(rng >> 33) % na];
                size_t al = strlen(a);
                memcpy(buf + len, a, al + 1);
                len += al;
            }
            s = buf;
        }
        gm_tokens got = tok_str(tok, s, strlen(s), false, false);
        gm_tokens exp = naive_tokenize(tok, &nv, s);
        bool same = got.n == exp.n && (got.n == 0 || memcmp(got.ids, exp.ids, got.n * sizeof *got.ids) == 0);
        if (!same && n_mismatch++ < 5) {
            fprintf(stderr, "naive mismatch on \"%s\"\n", s);
            print_ids("naive", exp.ids, exp.n);
            print_ids("fast ", got.ids, got.n);
        }
        gm_tokens_free(&got);
        gm_tokens_free(&exp);
    }
    CHECK_EQ_INT(n_mismatch, 0);
    naive_free(&nv);
}

static void check_roundtrip(const gm_tokenizer *tok, const char *s, size_t n, bool special);

/* tests/data/tokenizer-extra/hard-cases.inp: properties for inputs without a reference. */
static void test_extra_file(const gm_tokenizer *tok, const gm_gguf *g)
{
    size_t ni;
    char *inp = gm_test_read_file(gm_test_data("tokenizer-extra/hard-cases.inp"), &ni);
    CHECK(inp != NULL);
    if (!inp)
        return;
    naive nv = {0};
    CHECK(naive_load(&nv, g) == 0);
    static const char sep[] = "\n__ggml_vocab_test__\n";
    const size_t sl = sizeof sep - 1;
    int n_cases = 0, n_naive = 0, bad_naive = 0, bad_runs = 0, bad_ctrl = 0;
    for (char *p = inp, *end = inp + ni;;) {
        char *q = memmem(p, (size_t)(end - p), sep, sl);
        size_t len = q ? (size_t)(q - p) : (size_t)(end - p);
        char *s = strndup(p, len);
        n_cases++;
        if (strstr(s, "\xe2\x96\x81")) {
            /* a literal U+2581 decodes to a space, as in the reference decoder */
            gm_tokens t = tok_str(tok, s, len, false, false);
            char *back = gm_detokenize(tok, t.ids, t.n, false);
            size_t k = 0;
            bool same = back != NULL;
            for (size_t i = 0; same && i < len; k++) {
                if (len - i >= 3 && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
                    same = back[k] == ' ';
                    i += 3;
                } else {
                    same = back[k] == s[i++];
                }
            }
            CHECK(same && back[k] == '\0');
            free(back);
            gm_tokens_free(&t);
        } else {
            check_roundtrip(tok, s, len, false);
            check_roundtrip(tok, s, len, true);
        }
        gm_tokens t = tok_str(tok, s, len, false, false);
        for (size_t i = 0; i < t.n; i++) {
            size_t l;
            const char *x = gm_tokenizer_text(tok, t.ids[i], &l);
            size_t nl = 0;
            for (size_t k = 0; k < l; k++)
                nl += x[k] == '\n';
            bad_runs += nl != 0 && nl != l;  /* newline runs never mix with other text */
            bad_ctrl += gm_tokenizer_type(tok, t.ids[i]) == GM_TOKEN_CONTROL;
        }
        if (len <= 400 && nv.key) {
            gm_tokens e = naive_tokenize(tok, &nv, s);
            n_naive++;
            bool same = e.n == t.n && (t.n == 0 || memcmp(e.ids, t.ids, t.n * sizeof *t.ids) == 0);
            /* the naive path has no special-token partition: USER_DEFINED text differs */
            bool user_defined = strstr(s, "channel") != NULL;
            if (!same && !user_defined)
                fprintf(stderr, "naive mismatch on extra case %d \"%s\"\n", n_cases, s);
            bad_naive += !same && !user_defined;
            gm_tokens_free(&e);
        }
        gm_tokens_free(&t);
        free(s);
        if (!q)
            break;
        p = q + sl;
    }
    CHECK(n_cases >= 70);
    CHECK(n_naive >= 60);
    CHECK_EQ_INT(bad_naive, 0);
    CHECK_EQ_INT(bad_runs, 0);
    CHECK_EQ_INT(bad_ctrl, 0);
    printf("extra cases: %d (%d checked against the naive BPE)\n", n_cases, n_naive);
    if (nv.key)
        naive_free(&nv);
    free(inp);
}

/* ---- properties ---- */

static void check_roundtrip(const gm_tokenizer *tok, const char *s, size_t n, bool special)
{
    gm_tokens t = tok_str(tok, s, n, false, special);
    char *back = gm_detokenize(tok, t.ids, t.n, special);
    CHECK(back != NULL);
    bool same = back && strlen(back) == n && memcmp(back, s, n) == 0;
    CHECKF(same, "round trip of \"%.*s\" (%zu bytes) gave \"%.60s\"", (int)(n > 60 ? 60 : n), s, n,
           back ? back : "(null)");
    free(back);
    gm_tokens_free(&t);
}

static void test_roundtrip(const gm_tokenizer *tok)
{
    for (size_t i = 0; i < sizeof corpus / sizeof *corpus; i++) {
        check_roundtrip(tok, corpus[i], strlen(corpus[i]), false);
        check_roundtrip(tok, corpus[i], strlen(corpus[i]), true);
    }
    /* long runs of spaces / newlines / tabs, and mixes of them */
    char *s = malloc(5000);
    const char fills[] = {' ', '\n', '\t'};
    for (int f = 0; f < 3; f++) {
        for (size_t n = 1; n <= 4000; n = n * 3 + 1) {
            memset(s, fills[f], n);
            check_roundtrip(tok, s, n, false);
        }
    }
    for (size_t i = 0; i < 4000; i++)
        s[i] = " \n\t x"[(i * 7 + i / 13) % 5];
    check_roundtrip(tok, s, 4000, false);
    free(s);
    /* runs of up to 31 newlines are single tokens; longer runs are newline tokens only */
    char nl[100];
    memset(nl, '\n', sizeof nl);
    for (size_t n = 1; n <= 31; n++) {
        gm_tokens t = tok_str(tok, nl, n, false, false);
        CHECKF(t.n == 1, "%zu newlines gave %zu tokens", n, t.n);
        gm_tokens_free(&t);
    }
    gm_tokens t = tok_str(tok, nl, 100, false, false);
    size_t total = 0;
    for (size_t i = 0; i < t.n; i++) {
        size_t l;
        const char *x = gm_tokenizer_text(tok, t.ids[i], &l);
        for (size_t k = 0; k < l; k++)
            CHECK(x[k] == '\n');
        total += l;
    }
    CHECK_EQ_INT(total, 100);
    CHECK(t.n >= 4 && t.n <= 8);
    gm_tokens_free(&t);
}

static void test_special(const gm_tokenizer *tok)
{
    int32_t turn = gm_tokenizer_find(tok, "<|turn>");
    int32_t eot = gm_tokenizer_find(tok, "<turn|>");
    int32_t chan = gm_tokenizer_find(tok, "<|channel>");
    int32_t img = gm_tokenizer_find(tok, "<|image|>");
    int32_t boi = gm_tokenizer_find(tok, "<|image>");
    CHECK_EQ_INT(turn, 105);
    CHECK_EQ_INT(eot, 106);
    CHECK_EQ_INT(chan, 100);
    CHECK_EQ_INT(img, 258880);
    CHECK_EQ_INT(boi, 255999);
    CHECK_EQ_INT(gm_tokenizer_type(tok, turn), GM_TOKEN_CONTROL);
    CHECK_EQ_INT(gm_tokenizer_type(tok, chan), GM_TOKEN_USER_DEFINED);
    CHECK_EQ_INT(gm_tokenizer_bos(tok), 2);
    CHECK_EQ_INT(gm_tokenizer_eos(tok), 1);
    CHECK_EQ_INT(gm_tokenizer_pad(tok), 0);
    CHECK(gm_tokenizer_is_eog(tok, 1) && gm_tokenizer_is_eog(tok, 106) && gm_tokenizer_is_eog(tok, 50));
    CHECK(!gm_tokenizer_is_eog(tok, 2) && !gm_tokenizer_is_eog(tok, 105) && !gm_tokenizer_is_eog(tok, 107));
    CHECK_EQ_INT(gm_tokenizer_find(tok, "no such token at all"), -1);

    const char *s = "<|turn>user\nhi<turn|>";
    gm_tokens a = tok_str(tok, s, strlen(s), false, true);
    CHECK(a.n >= 4 && a.ids[0] == turn && a.ids[a.n - 1] == eot);
    gm_tokens b = tok_str(tok, s, strlen(s), false, false);
    bool has = false;
    for (size_t i = 0; i < b.n; i++)
        has |= b.ids[i] == turn || b.ids[i] == eot;
    CHECK(!has && b.n > a.n);
    gm_tokens_free(&a);
    gm_tokens_free(&b);

    /* USER_DEFINED tokens are matched with or without parse_special */
    s = "x<|channel>thought\n<channel|>y";
    for (int ps = 0; ps < 2; ps++) {
        gm_tokens c = tok_str(tok, s, strlen(s), false, ps);
        int n_chan = 0;
        for (size_t i = 0; i < c.n; i++)
            n_chan += c.ids[i] == 100 || c.ids[i] == 101;
        CHECK_EQ_INT(n_chan, 2);
        gm_tokens_free(&c);
    }

    /* placeholders back to back, and the longest match wins (<|image|> over <|image>) */
    s = "<|image|><|image|><|image>x<image|>";
    gm_tokens d = tok_str(tok, s, strlen(s), false, true);
    CHECK_EQ_INT(d.n, 5);
    if (d.n == 5)
        CHECK(d.ids[0] == img && d.ids[1] == img && d.ids[2] == boi && d.ids[4] == 258882);
    gm_tokens_free(&d);

    /* BOS, empty input */
    gm_tokens e = tok_str(tok, "", 0, true, true);
    CHECK(e.n == 1 && e.ids[0] == 2);
    gm_tokens_free(&e);
    e = tok_str(tok, "", 0, false, false);
    CHECK_EQ_INT(e.n, 0);
    gm_tokens_free(&e);
    e = tok_str(tok, "hi", 2, true, false);
    CHECK(e.n >= 2 && e.ids[0] == 2);
    gm_tokens_free(&e);

    /* special text stays text when rendered without render_special (CONTROL) */
    int32_t ids[] = {2, 105, 9259, 106};
    char *r0 = gm_detokenize(tok, ids, 4, false);
    char *r1 = gm_detokenize(tok, ids, 4, true);
    CHECK(r0 && strcmp(r0, "Hello") == 0);
    CHECK(r1 && strcmp(r1, "<bos><|turn>Hello<turn|>") == 0);
    free(r0);
    free(r1);
}

static void test_bytes(const gm_tokenizer *tok)
{
    int32_t b[256];
    for (int i = 0; i < 256; i++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", i);
        b[i] = gm_tokenizer_find(tok, name);
        CHECK(b[i] >= 0 && gm_tokenizer_type(tok, b[i]) == GM_TOKEN_BYTE);
    }
    /* a character that is not in the vocabulary falls back to its UTF-8 bytes */
    const char *rare = "\xf0\xa0\x80\x80";  /* U+20000 */
    CHECK_EQ_INT(gm_tokenizer_find(tok, rare), -1);
    gm_tokens t = tok_str(tok, rare, 4, false, false);
    CHECK(t.n == 4 && t.ids[0] == b[0xf0] && t.ids[1] == b[0xa0] && t.ids[2] == b[0x80] && t.ids[3] == b[0x80]);
    gm_tokens_free(&t);

    /* invalid UTF-8: each stray byte becomes its byte token */
    const char bad[] = "a\x80z\xff\xc3(\xe4\xb8";
    t = tok_str(tok, bad, sizeof bad - 1, false, false);
    int n_bytes = 0;
    for (size_t i = 0; i < t.n; i++)
        n_bytes += gm_tokenizer_type(tok, t.ids[i]) == GM_TOKEN_BYTE;
    CHECK_EQ_INT(n_bytes, 5);
    char *back = gm_detokenize(tok, t.ids, t.n, false);
    /* invalid sequences come back as U+FFFD, one per maximal subpart */
    CHECK(back && strcmp(back, "a\xef\xbf\xbdz\xef\xbf\xbd\xef\xbf\xbd(\xef\xbf\xbd") == 0);
    free(back);
    gm_tokens_free(&t);

    /* streaming: a character split over byte tokens appears only once complete */
    gm_detok d;
    gm_detok_init(&d, false);
    char out[256];
    CHECK_EQ_INT(gm_detok_push(&d, tok, b[0xe4], out, sizeof out), 0);
    CHECK_EQ_INT(gm_detok_push(&d, tok, b[0xb8], out, sizeof out), 0);
    CHECK_EQ_INT(gm_detok_push(&d, tok, b[0xad], out, sizeof out), 3);
    CHECK(strcmp(out, "中") == 0);
    /* an interrupted sequence becomes U+FFFD followed by the next text */
    CHECK_EQ_INT(gm_detok_push(&d, tok, b[0xf0], out, sizeof out), 0);
    CHECK_EQ_INT(gm_detok_push(&d, tok, b[0x9f], out, sizeof out), 0);
    int k = gm_detok_push(&d, tok, 9259 /* Hello */, out, sizeof out);
    CHECK(k == 8 && strcmp(out, "\xef\xbf\xbdHello") == 0);
    /* a control token between the bytes is invisible and does not break the sequence */
    gm_detok_push(&d, tok, b[0xc3], out, sizeof out);
    CHECK_EQ_INT(gm_detok_push(&d, tok, 106, out, sizeof out), 0);
    k = gm_detok_push(&d, tok, b[0xa9], out, sizeof out);
    CHECK(k == 2 && strcmp(out, "é") == 0);
    /* flush of a held prefix */
    gm_detok_push(&d, tok, b[0xe4], out, sizeof out);
    CHECK_EQ_INT(gm_detok_flush(&d, out, sizeof out), 3);
    CHECK(strcmp(out, "\xef\xbf\xbd") == 0);
    CHECK_EQ_INT(gm_detok_flush(&d, out, sizeof out), 0);
    /* too small a buffer is refused without losing state */
    gm_detok_push(&d, tok, b[0xe4], out, sizeof out);
    gm_detok_push(&d, tok, b[0xb8], out, sizeof out);
    CHECK_EQ_INT(gm_detok_push(&d, tok, 9259, out, 4), -1);
    CHECK_EQ_INT(d.n_pending, 2);
    /* spaces come back from U+2581 */
    int32_t sp = gm_tokenizer_find(tok, "\xe2\x96\x81\xe2\x96\x81");
    CHECK_EQ_INT(gm_detok_push(&d, tok, sp, out, sizeof out), 5);
    CHECK(memcmp(out, "\xef\xbf\xbd  ", 5) == 0);
    /* out-of-range ids produce nothing */
    CHECK_EQ_INT(gm_detok_push(&d, tok, -5, out, sizeof out), 0);
    CHECK_EQ_INT(gm_detok_push(&d, tok, gm_tokenizer_n_vocab(tok), out, sizeof out), 0);
    CHECK(gm_tokenizer_text(tok, -1, NULL) == NULL);
}

/* Every piece the streaming detokenizer returns is valid UTF-8, and their concatenation
 * equals the whole-sequence result, for random byte soup. */
static bool valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t l;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        else if ((c & 0xe0) == 0xc0) { l = 2; cp = c & 0x1f; }
        else if ((c & 0xf0) == 0xe0) { l = 3; cp = c & 0x0f; }
        else if ((c & 0xf8) == 0xf0) { l = 4; cp = c & 0x07; }
        else return false;
        if (i + l > n)
            return false;
        for (size_t k = 1; k < l; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((l == 2 && cp < 0x80) || (l == 3 && cp < 0x800) || (l == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += l;
    }
    return true;
}

static void test_stream_random(const gm_tokenizer *tok)
{
    uint64_t rng = 99;
    int32_t bt[256];
    for (int i = 0; i < 256; i++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", i);
        bt[i] = gm_tokenizer_find(tok, name);
    }
    int bad = 0;
    for (int trial = 0; trial < 200; trial++) {
        int32_t ids[64];
        for (int i = 0; i < 64; i++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            uint32_t r = (uint32_t)(rng >> 32);
            /* mostly byte tokens biased to UTF-8 lead/continuation bytes, some text tokens */
            if (r % 4 == 0)
                ids[i] = (int32_t)(r % 300000u % (uint32_t)gm_tokenizer_n_vocab(tok));
            else
                ids[i] = bt[(r >> 8) % 3 == 0 ? 0x80 + (r >> 12) % 64 : 0xc0 + (r >> 12) % 64];
        }
        gm_detok d;
        gm_detok_init(&d, true);
        char acc[8192];
        size_t n = 0;
        for (int i = 0; i <= 64; i++) {
            char piece[1024];
            int k = i < 64 ? gm_detok_push(&d, tok, ids[i], piece, sizeof piece) : gm_detok_flush(&d, piece, sizeof piece);
            if (k < 0 || !valid_utf8((unsigned char *)piece, (size_t)k) || n + (size_t)k >= sizeof acc) {
                bad++;
                break;
            }
            memcpy(acc + n, piece, (size_t)k);
            n += (size_t)k;
        }
        char *whole = gm_detokenize(tok, ids, 64, true);
        if (!whole || strlen(whole) != n || memcmp(whole, acc, n) != 0)
            bad++;
        free(whole);
    }
    CHECK_EQ_INT(bad, 0);
}

/* Random bytes (valid or not): the raw bytes behind the ids (byte tokens as their byte,
 * others as their text with U+2581 as a space) reproduce the input exactly. */
static void test_random_bytes(const gm_tokenizer *tok)
{
    uint64_t rng = 4242;
    int bad = 0;
    static const char pool[] = " \n\t<|>abcxyz";
    for (int trial = 0; trial < 300; trial++) {
        unsigned char in[160];
        size_t n = 1 + (size_t)trial % 150;
        for (size_t i = 0; i < n; i++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            uint32_t r = (uint32_t)(rng >> 32);
            in[i] = (r & 3) ? (unsigned char)(r >> 8) : (unsigned char)pool[(r >> 8) % (sizeof pool - 1)];
        }
        if (memmem(in, n, "\xe2\x96\x81", 3))
            continue;
        gm_tokens t = tok_str(tok, (const char *)in, n, false, trial & 1);
        unsigned char out[1024];
        size_t o = 0;
        for (size_t i = 0; i < t.n && o < sizeof out - 8; i++) {
            size_t l;
            const char *x = gm_tokenizer_text(tok, t.ids[i], &l);
            if (!x) {
                bad++;
                break;
            }
            if (gm_tokenizer_type(tok, t.ids[i]) == GM_TOKEN_BYTE) {
                out[o++] = (unsigned char)strtol(x + 3, NULL, 16);
                continue;
            }
            for (size_t k = 0; k < l && o < sizeof out - 8;) {
                if (l - k >= 3 && memcmp(x + k, "\xe2\x96\x81", 3) == 0) {
                    out[o++] = ' ';
                    k += 3;
                } else {
                    out[o++] = (unsigned char)x[k++];
                }
            }
        }
        bad += o != n || memcmp(out, in, n) != 0;
        gm_tokens_free(&t);
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_perf(const gm_tokenizer *tok)
{
    /* 1 MiB of mixed text in one line (a single BPE run) and in many lines */
    const size_t n = 1 << 20;
    char *s = malloc(n + 1);
    const char *pat = "The quick brown fox jumps over the lazy dog. Ça va? 日本語テキスト 🙂 ";
    size_t pl = strlen(pat);
    for (size_t i = 0; i < n; i++)
        s[i] = pat[i % pl];
    /* cut back to a character boundary */
    size_t end = n;
    while (end > 0 && ((unsigned char)s[end] & 0xc0) == 0x80)
        end--;
    s[end] = '\0';
    double t0 = now_s();
    gm_tokens t = tok_str(tok, s, end, false, false);
    double t1 = now_s();
    printf("tokenize 1 MiB single run: %zu tokens in %.3f s\n", t.n, t1 - t0);
    CHECK(t.n > 100000);
    char *back = gm_detokenize(tok, t.ids, t.n, false);
    CHECK(back && strlen(back) == end && memcmp(back, s, end) == 0);
    free(back);
    gm_tokens_free(&t);
    /* a single 1 MiB run of one letter: merges cascade the deepest */
    memset(s, 'a', n);
    t0 = now_s();
    t = tok_str(tok, s, n, false, false);
    t1 = now_s();
    printf("tokenize 1 MiB of 'a': %zu tokens in %.3f s\n", t.n, t1 - t0);
    CHECK(t1 - t0 < 10.0);
    gm_tokens_free(&t);
    free(s);
}

int main(void)
{
    gm_error err = {0};
    double t0 = now_s();
    gm_gguf *g = gm_gguf_open(gm_test_data("ggml-vocab-gemma-4.gguf"), &err);
    CHECKF(g != NULL, "%s", err.msg);
    if (!g)
        return gm_test_finish();
    double t1 = now_s();
    gm_tokenizer *tok = gm_tokenizer_load(g, &err);
    double t2 = now_s();
    CHECKF(tok != NULL, "%s", err.msg);
    if (!tok) {
        gm_gguf_close(g);
        return gm_test_finish();
    }
    printf("gguf open %.3f s, tokenizer load %.3f s (%d tokens)\n", t1 - t0, t2 - t1, gm_tokenizer_n_vocab(tok));
    CHECK_EQ_INT(gm_tokenizer_n_vocab(tok), 262144);

    test_reference(tok);
    test_special(tok);
    test_bytes(tok);
    test_roundtrip(tok);
    test_stream_random(tok);
    test_random_bytes(tok);
    test_naive(tok, g);
    test_extra_file(tok, g);
    test_perf(tok);

    gm_tokenizer_free(tok);
    gm_gguf_close(g);
    return gm_test_finish();
}
