/* gemma-bench — prompt-processing and generation speed of a Gemma 4 GGUF (in the manner
 * of llama-bench), plus how close the decode comes to the machine's memory bandwidth.
 *
 * pp: a prompt of p random valid token ids into a cleared context, logits of the last
 *     position only. tg: after a short prompt, n tokens one at a time (greedy).
 * Bandwidth: threads stream through a 1 GiB buffer (best of a few runs); the decode's
 * achieved bandwidth is the bytes of weights one token reads times tokens/s.
 * Image mode (--mmproj, --image): decode, preprocess and vision-encoder times of one
 * image file, no text model involved. Audio mode (--mmproj, --audio): decode, resample,
 * log-mel and audio-encoder times of one sound file (every 30 s clip), likewise.
 * Usage in docs/tools.md. Exit codes: 0 ok, 1 usage, 2 model load error, 3 runtime error.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/cpu.h"
#include "core/gguf.h"
#include "core/pool.h"
#include "decoder/context.h"
#include "decoder/model.h"
#include "tool-common.h"
#include "audio/audio-embed.h"
#include "vision/image-embed.h"

static const char *prog = "gemma-bench";

#define TG_PROMPT 8
#define BW_BYTES ((size_t)1 << 30)
#define BW_RUNS 5

typedef struct options {
    const char *model;
    const char *mmproj, *image, *audio;
    long p, n, reps, threads, ctx, batch, seed, image_tokens;
    bool json;
} options;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: gemma-bench -m MODEL.gguf [-p 512] [-n 128] [-r 5] [--threads N] [--ctx N]\n"
        "                   [--batch N] [--seed N] [--json]\n"
        "       gemma-bench --mmproj MMPROJ.gguf --image FILE [--image-tokens 280] [-r 5]\n"
        "                   [--threads N] [--json]\n"
        "       gemma-bench --mmproj MMPROJ.gguf --audio FILE [-r 5] [--threads N] [--json]\n"
        "\n"
        "  -p N          prompt-processing test: N random token ids (0 = skip)\n"
        "  -n N          generation test: N tokens one at a time after a %d-token prompt (0 = skip)\n"
        "  -r N          repetitions (mean and standard deviation are reported)\n"
        "  --threads N   worker threads (default: all CPUs)\n"
        "  --ctx N       context size (default: what the tests need)\n"
        "  --batch N     prefill chunk size (default 512)\n"
        "  --seed N      seed of the random prompts (default 1)\n"
        "  --json        one JSON object on stdout instead of the table\n"
        "\n"
        "image mode (no text model): times of decoding, preprocessing and encoding one PNG/JPEG\n"
        "  --mmproj FILE       gemma4v vision mmproj GGUF\n"
        "  --image FILE        the image\n"
        "  --image-tokens N    soft-token budget: 70, 140, 280 (default), 560 or 1120\n"
        "\n"
        "audio mode (no text model): times of decoding, resampling to 16 kHz, log-mel features\n"
        "and encoding one sound file (WAV, FLAC, Ogg Vorbis/Opus, MP3, ...; every 30 s clip)\n"
        "  --mmproj FILE       mmproj GGUF with a gemma4a audio encoder\n"
        "  --audio FILE        the sound file\n",
        TG_PROMPT);
}

/* ---- random prompts -------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void random_ids(int32_t *ids, int32_t n, int32_t n_vocab, uint64_t *s)
{
    for (int32_t i = 0; i < n; i++)
        ids[i] = (int32_t)(rng_next(s) % (uint64_t)n_vocab);
}

static int32_t argmax(const float *x, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* ---- statistics ------------------------------------------------------------------------ */

typedef struct stats {
    double mean, sd;
    double *samples;
    int n;
} stats;

static void stats_compute(stats *s)
{
    double sum = 0, sq = 0;
    for (int i = 0; i < s->n; i++)
        sum += s->samples[i];
    s->mean = s->n ? sum / s->n : 0;
    for (int i = 0; i < s->n; i++)
        sq += (s->samples[i] - s->mean) * (s->samples[i] - s->mean);
    s->sd = s->n > 1 ? sqrt(sq / (s->n - 1)) : 0;
}

/* ---- memory bandwidth ------------------------------------------------------------------ */

typedef struct bw_job {
    uint64_t *buf;
    size_t n;
    uint64_t sums[64 * 8]; /* one cache line per worker */
} bw_job;

static void bw_fill(void *ctx, int ith, int nth)
{
    bw_job *j = ctx;
    long b, e;
    gm_pool_range((long)j->n, ith, nth, &b, &e);
    for (long i = b; i < e; i++)
        j->buf[i] = (uint64_t)i * 0x9E3779B97F4A7C15ull;
}

static void bw_sum(void *ctx, int ith, int nth)
{
    bw_job *j = ctx;
    long b, e;
    gm_pool_range((long)j->n, ith, nth, &b, &e);
    const uint64_t *p = j->buf;
    uint64_t s = 0;
    for (long i = b; i < e; i++) /* integer sum: vectorizes, needs no reassociation flags */
        s += p[i];
    if (ith < 64)
        j->sums[ith * 8] = s;
}

/* Best read bandwidth in bytes/s over BW_RUNS passes, or -1. */
static double measure_bandwidth(gm_pool *pool)
{
    bw_job *j = calloc(1, sizeof *j);
    if (!j)
        return -1;
    void *p = mmap(NULL, BW_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        free(j);
        return -1;
    }
    j->buf = p;
    j->n = BW_BYTES / sizeof(uint64_t);
    gm_pool_run(pool, bw_fill, j); /* first touch by the workers that will read it */
    double best = 0;
    volatile uint64_t sink = 0;
    for (int r = 0; r < BW_RUNS; r++) {
        double t0 = tool_now();
        gm_pool_run(pool, bw_sum, j);
        double dt = tool_now() - t0;
        for (int i = 0; i < 64; i++)
            sink += j->sums[i * 8];
        if (dt > 0 && BW_BYTES / dt > best)
            best = (double)BW_BYTES / dt;
    }
    (void)sink;
    munmap(p, BW_BYTES);
    free(j);
    return best;
}

/* ---- model facts ----------------------------------------------------------------------- */

static double matrix_bytes(const gm_matrix *m)
{
    return m->data ? (double)m->rows * (double)m->row_bytes : 0.0;
}

/* Bytes of weights one decoded token reads: every matrix of every layer, the PLE model
 * projection and the output head, plus one row of each embedding table. Norm vectors
 * are left out (kilobytes). */
static double decode_bytes_per_token(const gm_model *m)
{
    double b = 0;
    for (uint32_t l = 0; l < m->hp.n_layer; l++) {
        const gm_layer_weights *w = &m->layers[l];
        b += matrix_bytes(&w->wq) + matrix_bytes(&w->wk) + matrix_bytes(&w->wv) + matrix_bytes(&w->wo);
        b += matrix_bytes(&w->ffn_gate) + matrix_bytes(&w->ffn_up) + matrix_bytes(&w->ffn_down);
        b += matrix_bytes(&w->inp_gate) + matrix_bytes(&w->proj);
    }
    b += matrix_bytes(&m->ple_model_proj);
    b += matrix_bytes(&m->output);
    if (m->tok_embd.data)
        b += (double)m->tok_embd.row_bytes;
    if (m->ple_tok_embd.data)
        b += (double)m->ple_tok_embd.row_bytes;
    return b;
}

typedef struct type_bytes {
    double bytes[GM_TYPE_COUNT];
    double params;
} type_bytes;

static void count_types(const gm_gguf *g, type_bytes *t)
{
    memset(t, 0, sizeof *t);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gm_gguf_tensor *x = &g->tensors[i];
        if ((unsigned)x->type < GM_TYPE_COUNT)
            t->bytes[x->type] += (double)x->nbytes;
        double n = 1;
        for (uint32_t d = 0; d < x->n_dims; d++)
            n *= (double)x->ne[d];
        t->params += n;
    }
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_stats(FILE *f, const char *key, long n_tokens, const stats *s)
{
    fprintf(f, "  \"%s\": {\"n_tokens\": %ld, \"reps\": %d, \"ts_mean\": %.4f, \"ts_stddev\": %.4f, \"samples_ts\": [",
            key, n_tokens, s->n, s->mean, s->sd);
    for (int i = 0; i < s->n; i++)
        fprintf(f, "%s%.4f", i ? ", " : "", s->samples[i]);
    fprintf(f, "]},\n");
}

/* ---- image mode ------------------------------------------------------------------------ */

enum { ST_DECODE, ST_PREPROCESS, ST_ENCODE, ST_TOTAL, ST_COUNT };
static const char *const stage_names[ST_COUNT] = { "decode", "preprocess", "encode", "total" };

/* The whole media file, or NULL after saying which file could not be read. */
static uint8_t *read_media(const char *path, const char *what, size_t *len)
{
    uint8_t *data = NULL;
    FILE *f = fopen(path, "rb");
    if (f) {
        data = (uint8_t *)tool_read_all(f, len);
        fclose(f);
    }
    if (!data)
        fprintf(stderr, "%s: %s: cannot read the %s\n", prog, path, what);
    return data;
}

/* general.name (malloc'd, or NULL) and the matrices' types of all the mmproj's tensors
 * (both towers), for the table, from a second (mapped) open. */
static char *mmproj_info(const char *path, type_bytes *tb)
{
    gm_error err = { 0 };
    char *name = NULL;
    memset(tb, 0, sizeof *tb);
    gm_gguf *g = gm_gguf_open(path, &err);
    if (g) {
        if (gm_gguf_get_str(g, "general.name", &name, &err) != GM_OK)
            name = NULL;
        count_types(g, tb);
        gm_gguf_close(g);
    }
    return name;
}

/* One image through gm_image_embed -r times after a warm-up; per-stage wall times. */
static int image_bench(const options *o)
{
    int exit_code = TOOL_EXIT_OK;
    gm_error err = { 0 };
    gm_pool *pool = NULL;
    gm_image_embedding e = { 0 };
    stats st[ST_COUNT] = { { 0 } };
    uint8_t *data = NULL;
    size_t len = 0;
    char *name = NULL;

    if (!(data = read_media(o->image, "image", &len)))
        return TOOL_EXIT_USAGE;
    double loadavg = -1;
    getloadavg(&loadavg, 1);
    double t0 = tool_now();
    gm_vision_model *vm = gm_vision_model_load(o->mmproj, &err);
    if (!vm) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        free(data);
        return TOOL_EXIT_LOAD;
    }
    double load_s = tool_now() - t0;
    long rss_load = tool_rss_kib();
    type_bytes tb;
    name = mmproj_info(o->mmproj, &tb);
    const char *shown = name ? name : o->mmproj;
    long long fsize = tool_file_size(o->mmproj);

    pool = gm_pool_create((int)o->threads);
    for (int i = 0; i < ST_COUNT; i++)
        st[i].samples = calloc((size_t)o->reps, sizeof(double));
    if (!pool || !st[0].samples || !st[1].samples || !st[2].samples || !st[3].samples) {
        fprintf(stderr, "%s: out of memory\n", prog);
        exit_code = TOOL_EXIT_RUNTIME;
        goto out;
    }
    const int nth = gm_pool_size(pool);
    if (!o->json) {
        fprintf(stderr, "%s: %s: %s, vision width %u, projection %u\n", prog, o->mmproj, shown,
                gm_vision_model_hidden(vm), gm_vision_model_projection_dim(vm));
        fprintf(stderr, "%s: load %.1f ms, RSS after load %.1f MiB, file %.1f MiB\n", prog, load_s * 1e3,
                rss_load / 1024.0, (double)fsize / (1u << 20));
        fprintf(stderr, "%s: threads %d, isa %s, cpu: %s, load average %.2f\n", prog, nth,
                gm_isa_name(gm_cpu_best_isa()), gm_cpu_describe(), loadavg);
    }
    /* Warm-up: maps the weights in and sizes the kernels' scratch buffers. */
    for (long r = -1; r < o->reps; r++) {
        gm_image_embedding_free(&e);
        if (gm_image_embed(vm, pool, data, len, NULL, (int)o->image_tokens, &e, &err) != GM_OK) {
            fprintf(stderr, "%s: %s: %s\n", prog, o->image, err.msg);
            exit_code = TOOL_EXIT_RUNTIME;
            goto out;
        }
        if (r < 0)
            continue;
        double v[ST_COUNT] = { e.decode_s * 1e3, e.preprocess_s * 1e3, e.encode_s * 1e3,
                               (e.decode_s + e.preprocess_s + e.encode_s) * 1e3 };
        for (int i = 0; i < ST_COUNT; i++)
            st[i].samples[st[i].n++] = v[i];
        if (!o->json)
            fprintf(stderr, "%s: image rep %ld: decode %.1f ms, preprocess %.1f ms, encode %.1f ms\n", prog,
                    r + 1, v[0], v[1], v[2]);
    }
    for (int i = 0; i < ST_COUNT; i++)
        stats_compute(&st[i]);

    /* The last run's soft tokens: finite, and their size (synthetic towers give rms ~1). */
    const size_t n_out = (size_t)e.n_soft_tokens * e.n_embd;
    size_t n_bad = 0;
    double sq = 0;
    for (size_t i = 0; i < n_out; i++) {
        if (!isfinite(e.embd[i]))
            n_bad++;
        else
            sq += (double)e.embd[i] * e.embd[i];
    }
    const double rms = n_out > n_bad ? sqrt(sq / (double)(n_out - n_bad)) : 0.0;
    if (n_bad) {
        fprintf(stderr, "%s: %zu of %zu soft-token values are not finite\n", prog, n_bad, n_out);
        exit_code = TOOL_EXIT_RUNTIME;
    }

    if (o->json) {
        FILE *jf = stdout;
        fprintf(jf, "{\n  \"mmproj\": ");
        json_str(jf, o->mmproj);
        fprintf(jf, ",\n  \"mmproj_name\": ");
        json_str(jf, shown);
        fprintf(jf, ",\n  \"mmproj_size\": %lld,\n  \"n_params\": %.0f,\n  \"types\": {", fsize, tb.params);
        bool first = true;
        for (int t = 0; t < GM_TYPE_COUNT; t++) {
            if (tb.bytes[t] <= 0)
                continue;
            fprintf(jf, "%s\"%s\": %.0f", first ? "" : ", ", gm_type_name((uint32_t)t), tb.bytes[t]);
            first = false;
        }
        fprintf(jf, "},\n  \"image\": ");
        json_str(jf, o->image);
        fprintf(jf, ",\n  \"width\": %u,\n  \"height\": %u,\n  \"grid_w\": %u,\n  \"grid_h\": %u,\n"
                    "  \"image_tokens\": %ld,\n  \"n_soft_tokens\": %u,\n  \"n_embd\": %u,\n"
                    "  \"soft_token_rms\": %.6f,\n  \"threads\": %d,\n  \"isa\": \"%s\",\n  \"cpu_features\": ",
                e.width, e.height, e.grid_w, e.grid_h, o->image_tokens, e.n_soft_tokens, e.n_embd, rms, nth,
                gm_isa_name(gm_cpu_best_isa()));
        json_str(jf, gm_cpu_describe());
        fprintf(jf, ",\n  \"loadavg_1m\": %.2f,\n  \"load_ms\": %.3f,\n  \"rss_after_load_kib\": %ld", loadavg,
                load_s * 1e3, rss_load);
        for (int i = 0; i < ST_COUNT; i++) {
            fprintf(jf, ",\n  \"%s_ms\": {\"reps\": %d, \"mean\": %.4f, \"stddev\": %.4f, \"samples\": [",
                    stage_names[i], st[i].n, st[i].mean, st[i].sd);
            for (int k = 0; k < st[i].n; k++)
                fprintf(jf, "%s%.4f", k ? ", " : "", st[i].samples[k]);
            fprintf(jf, "]}");
        }
        fprintf(jf, "\n}\n");
    } else {
        printf("| mmproj | size | threads | image | soft tokens | stage | ms |\n|---|---|---|---|---|---|---|\n");
        for (int i = 0; i < ST_COUNT; i++)
            printf("| %s | %.1f MiB | %d | %ux%u → %ux%u patches | %u | %s | %.2f ± %.2f |\n", shown,
                   (double)fsize / (1u << 20), nth, e.width, e.height, e.grid_w, e.grid_h, e.n_soft_tokens,
                   stage_names[i], st[i].mean, st[i].sd);
        printf("\nload %.1f ms, RSS after load %.1f MiB\n", load_s * 1e3, rss_load / 1024.0);
        printf("soft tokens: %u × %u, rms %.4f%s\n", e.n_soft_tokens, e.n_embd, rms,
               n_bad ? " (NOT ALL FINITE)" : "");
        printf("encode: %.1f soft tokens/s, %.1f patches/s\n",
               st[ST_ENCODE].mean > 0 ? e.n_soft_tokens / (st[ST_ENCODE].mean * 1e-3) : 0.0,
               st[ST_ENCODE].mean > 0 ? (double)e.grid_w * e.grid_h / (st[ST_ENCODE].mean * 1e-3) : 0.0);
    }

out:
    for (int i = 0; i < ST_COUNT; i++)
        free(st[i].samples);
    gm_image_embedding_free(&e);
    gm_pool_destroy(pool);
    gm_vision_model_free(vm);
    free(name);
    free(data);
    return exit_code;
}

/* ---- audio mode ------------------------------------------------------------------------ */

enum { AST_DECODE, AST_RESAMPLE, AST_FEATURES, AST_ENCODE, AST_TOTAL, AST_COUNT };
static const char *const astage_names[AST_COUNT] = { "decode", "resample", "features", "encode", "total" };

/* One sound file through gm_audio_embed -r times after a warm-up; per-stage wall times. */
static int audio_bench(const options *o)
{
    int exit_code = TOOL_EXIT_OK;
    gm_error err = { 0 };
    gm_pool *pool = NULL;
    gm_audio_embedding e = { 0 };
    stats st[AST_COUNT] = { { 0 } };
    uint8_t *data = NULL;
    size_t len = 0;
    char *name = NULL;

    if (!(data = read_media(o->audio, "sound file", &len)))
        return TOOL_EXIT_USAGE;
    double loadavg = -1;
    getloadavg(&loadavg, 1);
    double t0 = tool_now();
    gm_audio_model *am = gm_audio_model_load(o->mmproj, &err);
    if (!am) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        free(data);
        return TOOL_EXIT_LOAD;
    }
    double load_s = tool_now() - t0;
    long rss_load = tool_rss_kib();
    type_bytes tb;
    name = mmproj_info(o->mmproj, &tb);
    const char *shown = name ? name : o->mmproj;
    long long fsize = tool_file_size(o->mmproj);

    pool = gm_pool_create((int)o->threads);
    bool ok = pool != NULL;
    for (int i = 0; i < AST_COUNT; i++)
        ok = (st[i].samples = calloc((size_t)o->reps, sizeof(double))) != NULL && ok;
    if (!ok) {
        fprintf(stderr, "%s: out of memory\n", prog);
        exit_code = TOOL_EXIT_RUNTIME;
        goto out;
    }
    const int nth = gm_pool_size(pool);
    if (!o->json) {
        fprintf(stderr, "%s: %s: %s, audio width %u, projection %u\n", prog, o->mmproj, shown,
                gm_audio_model_hidden(am), gm_audio_model_projection_dim(am));
        fprintf(stderr, "%s: load %.1f ms, RSS after load %.1f MiB, file %.1f MiB\n", prog, load_s * 1e3,
                rss_load / 1024.0, (double)fsize / (1u << 20));
        fprintf(stderr, "%s: threads %d, isa %s, cpu: %s, load average %.2f\n", prog, nth,
                gm_isa_name(gm_cpu_best_isa()), gm_cpu_describe(), loadavg);
    }
    /* Warm-up: maps the weights in and sizes the kernels' scratch buffers. */
    for (long r = -1; r < o->reps; r++) {
        gm_audio_embedding_free(&e);
        if (gm_audio_embed(am, pool, data, len, NULL, &e, &err) != GM_OK) {
            fprintf(stderr, "%s: %s: %s\n", prog, o->audio, err.msg);
            exit_code = TOOL_EXIT_RUNTIME;
            goto out;
        }
        if (r < 0)
            continue;
        double v[AST_COUNT] = { e.decode_s * 1e3, e.resample_s * 1e3, e.features_s * 1e3, e.encode_s * 1e3,
                                (e.decode_s + e.resample_s + e.features_s + e.encode_s) * 1e3 };
        for (int i = 0; i < AST_COUNT; i++)
            st[i].samples[st[i].n++] = v[i];
        if (!o->json)
            fprintf(stderr, "%s: audio rep %ld: decode %.1f ms, resample %.1f ms, features %.1f ms, encode %.1f ms\n",
                    prog, r + 1, v[0], v[1], v[2], v[3]);
    }
    for (int i = 0; i < AST_COUNT; i++)
        stats_compute(&st[i]);

    /* The last run's soft tokens: finite, and their size (synthetic towers give rms ~1). */
    size_t n_out = 0, n_bad = 0, n_tok = 0, n_frames = 0;
    double sq = 0;
    for (size_t k = 0; k < e.n_clips; k++) {
        const gm_audio_clip_embedding *c = &e.clips[k];
        n_tok += c->n_soft_tokens;
        n_frames += c->n_frames;
        for (size_t i = 0; i < (size_t)c->n_soft_tokens * e.n_embd; i++) {
            if (!isfinite(c->embd[i]))
                n_bad++;
            else
                sq += (double)c->embd[i] * c->embd[i];
        }
        n_out += (size_t)c->n_soft_tokens * e.n_embd;
    }
    const double rms = n_out > n_bad ? sqrt(sq / (double)(n_out - n_bad)) : 0.0;
    if (n_bad) {
        fprintf(stderr, "%s: %zu of %zu soft-token values are not finite\n", prog, n_bad, n_out);
        exit_code = TOOL_EXIT_RUNTIME;
    }

    if (o->json) {
        FILE *jf = stdout;
        fprintf(jf, "{\n  \"mmproj\": ");
        json_str(jf, o->mmproj);
        fprintf(jf, ",\n  \"mmproj_name\": ");
        json_str(jf, shown);
        fprintf(jf, ",\n  \"mmproj_size\": %lld,\n  \"n_params\": %.0f,\n  \"types\": {", fsize, tb.params);
        bool first = true;
        for (int t = 0; t < GM_TYPE_COUNT; t++) {
            if (tb.bytes[t] <= 0)
                continue;
            fprintf(jf, "%s\"%s\": %.0f", first ? "" : ", ", gm_type_name((uint32_t)t), tb.bytes[t]);
            first = false;
        }
        fprintf(jf, "},\n  \"audio\": ");
        json_str(jf, o->audio);
        fprintf(jf, ",\n  \"format\": ");
        json_str(jf, e.format);
        fprintf(jf, ",\n  \"src_rate\": %u,\n  \"src_channels\": %u,\n  \"seconds\": %.4f,\n"
                    "  \"n_clips\": %zu,\n  \"n_frames\": %zu,\n  \"n_soft_tokens\": %zu,\n  \"n_embd\": %u,\n"
                    "  \"audio_width\": %u,\n  \"soft_token_rms\": %.6f,\n  \"threads\": %d,\n  \"isa\": \"%s\",\n"
                    "  \"cpu_features\": ",
                e.src_rate, e.src_channels, e.seconds, e.n_clips, n_frames, n_tok, e.n_embd,
                gm_audio_model_hidden(am), rms, nth, gm_isa_name(gm_cpu_best_isa()));
        json_str(jf, gm_cpu_describe());
        fprintf(jf, ",\n  \"loadavg_1m\": %.2f,\n  \"load_ms\": %.3f,\n  \"rss_after_load_kib\": %ld", loadavg,
                load_s * 1e3, rss_load);
        for (int i = 0; i < AST_COUNT; i++) {
            fprintf(jf, ",\n  \"%s_ms\": {\"reps\": %d, \"mean\": %.4f, \"stddev\": %.4f, \"samples\": [",
                    astage_names[i], st[i].n, st[i].mean, st[i].sd);
            for (int k = 0; k < st[i].n; k++)
                fprintf(jf, "%s%.4f", k ? ", " : "", st[i].samples[k]);
            fprintf(jf, "]}");
        }
        fprintf(jf, "\n}\n");
    } else {
        printf("| mmproj | size | threads | audio | clips | soft tokens | stage | ms |\n"
               "|---|---|---|---|---|---|---|---|\n");
        for (int i = 0; i < AST_COUNT; i++)
            printf("| %s | %.1f MiB | %d | %s %.2f s %u Hz × %u | %zu | %zu | %s | %.2f ± %.2f |\n", shown,
                   (double)fsize / (1u << 20), nth, e.format, e.seconds, e.src_rate, e.src_channels, e.n_clips,
                   n_tok, astage_names[i], st[i].mean, st[i].sd);
        printf("\nload %.1f ms, RSS after load %.1f MiB\n", load_s * 1e3, rss_load / 1024.0);
        printf("soft tokens: %zu × %u from %zu frames in %zu clip%s, rms %.4f%s\n", n_tok, e.n_embd, n_frames,
               e.n_clips, e.n_clips == 1 ? "" : "s", rms, n_bad ? " (NOT ALL FINITE)" : "");
        printf("encode: %.1f soft tokens/s; whole pipeline %.1f× real time\n",
               st[AST_ENCODE].mean > 0 ? (double)n_tok / (st[AST_ENCODE].mean * 1e-3) : 0.0,
               st[AST_TOTAL].mean > 0 ? e.seconds / (st[AST_TOTAL].mean * 1e-3) : 0.0);
    }

out:
    for (int i = 0; i < AST_COUNT; i++)
        free(st[i].samples);
    gm_audio_embedding_free(&e);
    gm_pool_destroy(pool);
    gm_audio_model_free(am);
    free(name);
    free(data);
    return exit_code;
}

int main(int argc, char **argv)
{
    options o = { .p = 512, .n = 128, .reps = 5, .seed = 1, .image_tokens = 280 };
    tool_args a;
    tool_args_init(&a, argc, argv, prog);
    for (; a.i < argc && !a.error; a.i++) {
        if (tool_flag(&a, "-h", "--help")) {
            usage(stdout);
            return TOOL_EXIT_OK;
        }
        if (tool_opt_str(&a, "-m", "--model", &o.model) ||
            tool_opt_long(&a, "-p", "--n-prompt", 0, 1L << 20, &o.p) ||
            tool_opt_long(&a, "-n", "--n-gen", 0, 1L << 20, &o.n) ||
            tool_opt_long(&a, "-r", "--repetitions", 1, 1000, &o.reps) ||
            tool_opt_long(&a, "--threads", "-t", 0, 1024, &o.threads) ||
            tool_opt_long(&a, "--ctx", "-c", 0, 1L << 24, &o.ctx) ||
            tool_opt_long(&a, "--batch", "-b", 0, 1L << 20, &o.batch) ||
            tool_opt_long(&a, "--seed", NULL, 0, (long)(~0UL >> 1), &o.seed) ||
            tool_opt_str(&a, "--mmproj", NULL, &o.mmproj) || tool_opt_str(&a, "--image", NULL, &o.image) ||
            tool_opt_str(&a, "--audio", NULL, &o.audio) ||
            tool_opt_long(&a, "--image-tokens", NULL, 1, 1L << 20, &o.image_tokens))
            continue;
        if (tool_flag(&a, "--json", NULL)) {
            o.json = true;
            continue;
        }
        fprintf(stderr, "%s: unknown argument \"%s\" (see --help)\n", prog, argv[a.i]);
        return TOOL_EXIT_USAGE;
    }
    if (a.error)
        return TOOL_EXIT_USAGE;
    if (o.audio) {
        if (!o.mmproj) {
            fprintf(stderr, "%s: the audio mode needs --mmproj FILE with --audio FILE\n", prog);
            return TOOL_EXIT_USAGE;
        }
        if (o.image) {
            fprintf(stderr, "%s: give --image or --audio, not both\n", prog);
            return TOOL_EXIT_USAGE;
        }
        if (o.model) {
            fprintf(stderr, "%s: the audio mode takes no text model (-m)\n", prog);
            return TOOL_EXIT_USAGE;
        }
        return audio_bench(&o);
    }
    if (o.mmproj || o.image) {
        if (!o.mmproj || !o.image) {
            fprintf(stderr, "%s: the image mode needs both --mmproj FILE and --image FILE\n", prog);
            return TOOL_EXIT_USAGE;
        }
        if (o.model) {
            fprintf(stderr, "%s: the image mode takes no text model (-m)\n", prog);
            return TOOL_EXIT_USAGE;
        }
        if (!gm_image_budget_valid((int)o.image_tokens)) {
            fprintf(stderr, "%s: --image-tokens %ld is not one of 70, 140, 280, 560, 1120\n", prog,
                    o.image_tokens);
            return TOOL_EXIT_USAGE;
        }
        return image_bench(&o);
    }
    if (!o.model) {
        fprintf(stderr, "%s: no model (-m MODEL.gguf); see --help\n", prog);
        return TOOL_EXIT_USAGE;
    }
    long need = o.p > TG_PROMPT + o.n ? o.p : TG_PROMPT + o.n;
    if (o.ctx && o.ctx < need) {
        fprintf(stderr, "%s: --ctx %ld is too small for the tests (need %ld)\n", prog, o.ctx, need);
        return TOOL_EXIT_USAGE;
    }

    gm_error err = { 0 };
    int exit_code = TOOL_EXIT_OK;
    gm_pool *pool = NULL;
    gm_context *ctx = NULL;
    float *logits = NULL;
    int32_t *ids = NULL;
    stats pp = { 0 }, tg = { 0 };

    double loadavg = -1;
    getloadavg(&loadavg, 1); /* other work on the machine makes the numbers noisy: say so */
    long rss_before = tool_rss_kib();
    double t0 = tool_now();
    gm_model *model = gm_model_load(o.model, &err);
    if (!model) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return TOOL_EXIT_LOAD;
    }
    double load_s = tool_now() - t0;
    long rss_load = tool_rss_kib();

    const int32_t n_vocab = (int32_t)model->hp.n_vocab;
    pool = gm_pool_create((int)o.threads);
    logits = malloc((size_t)n_vocab * sizeof *logits);
    ids = malloc((size_t)(need > 0 ? need : 1) * sizeof *ids);
    pp.samples = calloc((size_t)o.reps, sizeof(double));
    tg.samples = calloc((size_t)o.reps, sizeof(double));
    if (!pool || !logits || !ids || !pp.samples || !tg.samples) {
        fprintf(stderr, "%s: out of memory\n", prog);
        exit_code = TOOL_EXIT_RUNTIME;
        goto out;
    }
    const int nth = gm_pool_size(pool);
    gm_context_params cp = {
        .n_ctx = (int32_t)(o.ctx ? o.ctx : need),
        .n_batch = (int32_t)o.batch,
        .pool = pool,
    };
    ctx = gm_context_new(model, &cp, &err);
    if (!ctx) {
        fprintf(stderr, "%s: %s: creating the context: %s\n", prog, o.model, err.msg);
        exit_code = TOOL_EXIT_RUNTIME;
        goto out;
    }

    char desc[1024];
    gm_model_describe(model, desc, sizeof desc);
    long long fsize = tool_file_size(o.model);
    type_bytes tb;
    count_types(model->gguf, &tb);
    if (!o.json) {
        fprintf(stderr, "%s: %s: %s\n", prog, o.model, desc);
        fprintf(stderr, "%s: load %.1f ms, RSS after load %.1f MiB (before %.1f MiB), file %.2f GiB\n", prog,
                load_s * 1e3, rss_load / 1024.0, rss_before / 1024.0, (double)fsize / (1u << 30));
        fprintf(stderr, "%s: threads %d, isa %s, cpu: %s, load average %.2f\n", prog, nth,
                gm_isa_name(gm_cpu_best_isa()), gm_cpu_describe(), loadavg);
    }

    uint64_t rs = (uint64_t)o.seed;
    /* Warm-up as llama-bench does: one prompt of the test's size (touches every weight and
     * sizes the scratch buffers) and one decode step. */
    {
        int32_t nw = o.p > 0 ? (int32_t)o.p : TG_PROMPT;
        random_ids(ids, nw, n_vocab, &rs);
        gm_span warm = { .type = GM_SPAN_TEXT, .n = nw, .ids = ids };
        if (gm_context_eval(ctx, &warm, 1, GM_LOGITS_LAST, logits, &err) != GM_OK)
            goto eval_failed;
        gm_context_clear(ctx);
        if (o.n > 0) {
            warm.n = TG_PROMPT;
            if (gm_context_eval(ctx, &warm, 1, GM_LOGITS_LAST, logits, &err) != GM_OK)
                goto eval_failed;
            warm.n = 1;
            if (gm_context_eval(ctx, &warm, 1, GM_LOGITS_LAST, logits, &err) != GM_OK)
                goto eval_failed;
            gm_context_clear(ctx);
        }
    }

    for (long r = 0; r < o.reps && o.p > 0; r++) {
        random_ids(ids, (int32_t)o.p, n_vocab, &rs);
        gm_context_clear(ctx);
        gm_span sp = { .type = GM_SPAN_TEXT, .n = (int32_t)o.p, .ids = ids };
        double t = tool_now();
        if (gm_context_eval(ctx, &sp, 1, GM_LOGITS_LAST, logits, &err) != GM_OK)
            goto eval_failed;
        double dt = tool_now() - t;
        pp.samples[pp.n++] = (double)o.p / dt;
        if (!o.json)
            fprintf(stderr, "%s: pp%ld rep %ld: %.2f t/s\n", prog, o.p, r + 1, (double)o.p / dt);
    }
    for (long r = 0; r < o.reps && o.n > 0; r++) {
        random_ids(ids, TG_PROMPT, n_vocab, &rs);
        gm_context_clear(ctx);
        gm_span sp = { .type = GM_SPAN_TEXT, .n = TG_PROMPT, .ids = ids };
        if (gm_context_eval(ctx, &sp, 1, GM_LOGITS_LAST, logits, &err) != GM_OK)
            goto eval_failed;
        int32_t next = argmax(logits, n_vocab);
        double t = tool_now();
        for (long i = 0; i < o.n; i++) {
            gm_span one = { .type = GM_SPAN_TEXT, .n = 1, .ids = &next };
            if (gm_context_eval(ctx, &one, 1, GM_LOGITS_LAST, logits, &err) != GM_OK)
                goto eval_failed;
            next = argmax(logits, n_vocab);
        }
        double dt = tool_now() - t;
        tg.samples[tg.n++] = (double)o.n / dt;
        if (!o.json)
            fprintf(stderr, "%s: tg%ld rep %ld: %.2f t/s\n", prog, o.n, r + 1, (double)o.n / dt);
    }
    stats_compute(&pp);
    stats_compute(&tg);

    gm_context_free(ctx);
    ctx = NULL; /* give the KV cache back before allocating the bandwidth buffer */
    double bw = measure_bandwidth(pool);
    double bpt = decode_bytes_per_token(model);
    double decode_bw = tg.n ? bpt * tg.mean : 0;
    double ratio = bw > 0 ? decode_bw / bw : 0;

    if (o.json) {
        FILE *f = stdout;
        fprintf(f, "{\n  \"model\": ");
        json_str(f, o.model);
        fprintf(f, ",\n  \"model_desc\": ");
        json_str(f, desc);
        fprintf(f, ",\n  \"model_size\": %lld,\n  \"n_params\": %.0f,\n  \"types\": {", fsize, tb.params);
        bool first = true;
        for (int t = 0; t < GM_TYPE_COUNT; t++) {
            if (tb.bytes[t] <= 0)
                continue;
            fprintf(f, "%s\"%s\": %.0f", first ? "" : ", ", gm_type_name((uint32_t)t), tb.bytes[t]);
            first = false;
        }
        fprintf(f, "},\n  \"threads\": %d,\n  \"n_ctx\": %d,\n  \"isa\": \"%s\",\n  \"cpu_features\": ", nth,
                cp.n_ctx, gm_isa_name(gm_cpu_best_isa()));
        json_str(f, gm_cpu_describe());
        fprintf(f, ",\n  \"loadavg_1m\": %.2f,\n  \"load_ms\": %.3f,\n  \"rss_after_load_kib\": %ld,\n", loadavg,
                load_s * 1e3, rss_load);
        if (pp.n)
            json_stats(f, "pp", o.p, &pp);
        if (tg.n)
            json_stats(f, "tg", o.n, &tg);
        fprintf(f, "  \"mem_read_bw_gbs\": %.3f,\n  \"decode_bytes_per_token\": %.0f,\n"
                   "  \"decode_bw_gbs\": %.3f,\n  \"bw_ratio\": %.4f\n}\n",
                bw / 1e9, bpt, decode_bw / 1e9, ratio);
    } else {
        printf("| model | size | threads | test | t/s |\n|---|---|---|---|---|\n");
        if (pp.n)
            printf("| %s | %.2f GiB | %d | pp%ld | %.2f ± %.2f |\n", model->hp.name, (double)fsize / (1u << 30),
                   nth, o.p, pp.mean, pp.sd);
        if (tg.n)
            printf("| %s | %.2f GiB | %d | tg%ld | %.2f ± %.2f |\n", model->hp.name, (double)fsize / (1u << 30),
                   nth, o.n, tg.mean, tg.sd);
        printf("\nload %.1f ms, RSS after load %.1f MiB\n", load_s * 1e3, rss_load / 1024.0);
        printf("memory read bandwidth (%d threads, 1 GiB, best of %d): %.2f GB/s\n", nth, BW_RUNS, bw / 1e9);
        printf("decode reads %.3f GB of weights per token", bpt / 1e9);
        if (tg.n)
            printf(" x %.2f t/s = %.2f GB/s (%.0f%% of measured bandwidth)", tg.mean, decode_bw / 1e9,
                   ratio * 100.0);
        printf("\n");
    }
    goto out;

eval_failed:
    fprintf(stderr, "%s: %s: evaluation failed: %s\n", prog, o.model, err.msg);
    exit_code = TOOL_EXIT_RUNTIME;
out:
    free(pp.samples);
    free(tg.samples);
    free(ids);
    free(logits);
    gm_context_free(ctx);
    gm_pool_destroy(pool);
    gm_model_free(model);
    return exit_code;
}
