/* test-media-prompt.c — whole multimodal prompts against transformers 5.17.0:
 * image and sound files → gemmad's decoders, preprocessing / features and encoders →
 * soft tokens spliced into the prompt → gemmad's text decoder → logits, compared with
 * Gemma4ForConditionalGeneration run on the same files. Fixtures:
 * tests/conformance/mm-vision/ (generate_mm_vision.py: a causal model (../e2b) and one
 * with bidirectional image spans (../large), each with one and with two images) and
 * tests/conformance/mm-audio/ (generate_mm_audio.py: audio then an image, causal e2b).
 *
 * Checked per prompt: each medium's soft-token count and values (≤ 1e-3 relative
 * Frobenius), one-shot logits at every position of prompt + greedy continuation
 * (max |Δ| ≤ 1e-3 · max(1, max |ref|), same argmax everywhere), greedy decoding of the
 * continuation (identical ids), and that the chat-level prompt builder
 * (gm_prompt_add_media) yields exactly the fixture's ids and spans. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/pool.h"
#include "decoder/chat.h"
#include "decoder/context.h"
#include "decoder/model.h"
#include "decoder/tokenizer.h"
#include "test-util.h"
#include "audio/audio-embed.h"
#include "vision/image-embed.h"

#define MAX_SPANS 16
#define TOL_LOGITS_REL 1e-3
#define TOL_SOFT_REL 1e-3

typedef struct {
    gm_span_type type;     /* TEXT, IMAGE or AUDIO */
    int32_t n;
    int32_t *ids;          /* text */
    char file[128];        /* media, relative to the fixture's folder */
} fspan;

/* One media span's soft tokens (owned). */
typedef struct {
    uint32_t n, n_embd;
    float *embd;
} media_rows;

typedef struct {
    char dir[1024], name[64];
    char model[256], mmproj[256], mmproj_audio[256];
    int budget, n_vocab, n_spans, n_greedy, n_rows;
    fspan spans[MAX_SPANS];
    int32_t *greedy;
    char logits[128];
} fixture;

static int32_t *read_ids(char **save, int n)
{
    int32_t *ids = calloc((size_t)(n > 0 ? n : 1), sizeof *ids);
    for (int i = 0; i < n; i++) {
        char *t = strtok_r(NULL, " \n", save);
        if (!t) {
            free(ids);
            return NULL;
        }
        ids[i] = (int32_t)strtol(t, NULL, 10);
    }
    return ids;
}

static void fixture_free(fixture *f)
{
    for (int i = 0; i < f->n_spans; i++)
        free(f->spans[i].ids);
    free(f->greedy);
}

static int fixture_load(fixture *f, const char *dir, const char *name)
{
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "%s", dir);
    snprintf(f->name, sizeof f->name, "%s", name);
    char path[1400];
    snprintf(path, sizeof path, "%s/%s.txt", dir, name);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return -1;
    char line[8192];
    int ok = 0;
    while (fgets(line, sizeof line, fp)) {
        char *save = NULL;
        char *key = strtok_r(line, " \n", &save);
        if (!key)
            continue;
        char *v = strtok_r(NULL, " \n", &save);
        if (strcmp(key, "model") == 0 && v)
            snprintf(f->model, sizeof f->model, "%s", v);
        else if (strcmp(key, "mmproj") == 0 && v)
            snprintf(f->mmproj, sizeof f->mmproj, "%s", v);
        else if (strcmp(key, "mmproj_audio") == 0 && v)
            snprintf(f->mmproj_audio, sizeof f->mmproj_audio, "%s", v);
        else if (strcmp(key, "budget") == 0 && v)
            f->budget = atoi(v);
        else if (strcmp(key, "n_vocab") == 0 && v)
            f->n_vocab = atoi(v);
        else if (strcmp(key, "text") == 0 && v && f->n_spans < MAX_SPANS) {
            fspan *s = &f->spans[f->n_spans++];
            s->type = GM_SPAN_TEXT;
            s->n = atoi(v);
            s->ids = read_ids(&save, s->n);
            if (!s->ids)
                break;
        } else if ((strcmp(key, "image") == 0 || strcmp(key, "audio") == 0) && v &&
                   f->n_spans < MAX_SPANS) {
            fspan *s = &f->spans[f->n_spans++];
            s->type = key[0] == 'i' ? GM_SPAN_IMAGE : GM_SPAN_AUDIO;
            snprintf(s->file, sizeof s->file, "%s", v);
            char *n = strtok_r(NULL, " \n", &save);
            s->n = n ? atoi(n) : 0;
        } else if (strcmp(key, "greedy") == 0 && v) {
            f->n_greedy = atoi(v);
            f->greedy = read_ids(&save, f->n_greedy);
        } else if (strcmp(key, "logits") == 0 && v) {
            snprintf(f->logits, sizeof f->logits, "%s", v);
            char *n = strtok_r(NULL, " \n", &save);
            f->n_rows = n ? atoi(n) : 0;
        } else if (strcmp(key, "end") == 0) {
            ok = 1;
        }
    }
    fclose(fp);
    return ok && f->model[0] && f->mmproj[0] && f->budget && f->n_vocab && f->logits[0] &&
                   f->greedy ? 0 : -1;
}

static int argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

/* The reference soft tokens of a medium: <fixture>/<basename>-soft.f32, else next to the
 * medium itself. */
static float *read_soft_ref(const fixture *f, const char *file, size_t *len)
{
    char path[1400];
    const char *base = strrchr(file, '/');
    snprintf(path, sizeof path, "%s/%s-soft.f32", f->dir, base ? base + 1 : file);
    if (access(path, R_OK) != 0)
        snprintf(path, sizeof path, "%s/%s-soft.f32", f->dir, file);
    return gm_test_read_file(path, len);
}

/* Encodes the fixture's media from their files; rows[i] for media span i. */
static int embed_media(const fixture *f, const gm_vision_model *vm, const gm_audio_model *am,
                       gm_pool *pool, media_rows *rows)
{
    for (int i = 0; i < f->n_spans; i++) {
        const fspan *s = &f->spans[i];
        if (s->type == GM_SPAN_TEXT)
            continue;
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", f->dir, s->file);
        size_t len = 0;
        uint8_t *data = gm_test_read_file(path, &len);
        CHECKF(data != NULL, "cannot read %s", path);
        if (!data)
            return -1;
        gm_error err = { 0 };
        int rc;
        char info[256] = "";
        if (s->type == GM_SPAN_IMAGE) {
            gm_image_embedding e;
            rc = gm_image_embed(vm, pool, data, len, NULL, f->budget, &e, &err);
            if (rc == GM_OK) {
                rows[i] = (media_rows){ e.n_soft_tokens, e.n_embd, e.embd };
                snprintf(info, sizeof info, "%ux%u → grid %ux%u (decode %.1f ms, preprocess %.1f ms, "
                         "encode %.1f ms)", e.width, e.height, e.grid_w, e.grid_h, e.decode_s * 1e3,
                         e.preprocess_s * 1e3, e.encode_s * 1e3);
            }
        } else {
            gm_audio_embedding e;
            rc = am ? gm_audio_embed(am, pool, data, len, NULL, &e, &err)
                    : gm_set_error(&err, GM_ERR_INVALID, "no mmproj_audio in the fixture");
            if (rc == GM_OK) {
                CHECKF(e.n_clips == 1, "%s: %zu clips", s->file, e.n_clips);
                rows[i] = (media_rows){ e.clips[0].n_soft_tokens, e.n_embd, e.clips[0].embd };
                e.clips[0].embd = NULL;  /* taken */
                snprintf(info, sizeof info, "%s %u Hz, %u frames (decode %.1f ms, features %.1f ms, "
                         "encode %.1f ms)", e.format, e.src_rate, e.clips[0].n_frames,
                         e.decode_s * 1e3, e.features_s * 1e3, e.encode_s * 1e3);
                gm_audio_embedding_free(&e);
            }
        }
        free(data);
        CHECKF(rc == GM_OK, "%s: %s", path, err.msg);
        if (rc != GM_OK)
            return -1;
        CHECKF((int)rows[i].n == s->n, "%s: %u soft tokens, transformers %d", s->file, rows[i].n, s->n);
        if ((int)rows[i].n != s->n)
            return -1;

        size_t rlen = 0;
        float *ref = read_soft_ref(f, s->file, &rlen);
        size_t n = (size_t)s->n * rows[i].n_embd;
        CHECKF(ref && rlen == n * sizeof(float), "%s: reference soft tokens: %zu bytes, want %zu",
               s->file, rlen, n * sizeof(float));
        if (ref && rlen == n * sizeof(float)) {
            double e = gm_test_rel_frobenius(rows[i].embd, ref, n);
            printf("  %s: %s %s, %u soft tokens, rel err %.2e\n", f->name, s->file, info, rows[i].n, e);
            CHECKF(e <= TOL_SOFT_REL, "%s: soft tokens rel err %.3e > %.0e", s->file, e, TOL_SOFT_REL);
        }
        free(ref);
    }
    return 0;
}

static size_t build_spans(const fixture *f, const media_rows *emb, bool with_greedy,
                          gm_span *out)
{
    size_t n = 0;
    for (int i = 0; i < f->n_spans; i++) {
        const fspan *s = &f->spans[i];
        if (s->type != GM_SPAN_TEXT)
            out[n++] = (gm_span){ .type = s->type, .n = s->n, .embd = emb[i].embd };
        else
            out[n++] = (gm_span){ .type = GM_SPAN_TEXT, .n = s->n, .ids = s->ids };
    }
    if (with_greedy)
        out[n++] = (gm_span){ .type = GM_SPAN_TEXT, .n = f->n_greedy, .ids = f->greedy };
    return n;
}

/* gm_prompt_add_media (what gemma-run and the service use) must give the fixture's
 * layout: the markers around each image come from the tokenizer, not the caller. */
static void check_prompt_builder(const fixture *f, const gm_model *m, const media_rows *emb)
{
    gm_error err = { 0 };
    gm_tokenizer *tok = gm_tokenizer_load(m->gguf, &err);
    CHECKF(tok != NULL, "tokenizer: %s", err.msg);
    if (!tok)
        return;
    gm_prompt p;
    gm_prompt_init(&p);
    int rc = GM_OK;
    for (int i = 0; i < f->n_spans && rc == GM_OK; i++) {
        const fspan *s = &f->spans[i];
        if (s->type != GM_SPAN_TEXT) {
            rc = gm_prompt_add_media(&p, tok, s->type == GM_SPAN_IMAGE ? GM_PART_IMAGE : GM_PART_AUDIO,
                                     s->n, emb[i].embd, &err);
            continue;
        }
        /* The fixture's text spans carry the markers; drop them here. */
        int32_t a = 0, b = s->n;
        if (i > 0 && f->spans[i - 1].type != GM_SPAN_TEXT)
            a++;
        if (i + 1 < f->n_spans && f->spans[i + 1].type != GM_SPAN_TEXT)
            b--;
        rc = gm_prompt_add_ids(&p, s->ids + a, (size_t)(b - a), &err);
    }
    CHECKF(rc == GM_OK, "%s: prompt builder: %s", f->name, err.msg);
    gm_prompt_finish(&p);
    /* Flatten both and compare position by position. */
    int total = 0;
    for (int i = 0; i < f->n_spans; i++)
        total += f->spans[i].n;
    CHECK_EQ_INT(p.n_positions, total);
    int pos = 0, mismatches = 0, si = 0, off = 0;
    for (size_t k = 0; k < p.n_spans && rc == GM_OK; k++) {
        const gm_span *sp = &p.spans[k];
        for (int32_t j = 0; j < sp->n; j++, pos++) {
            while (si < f->n_spans && off >= f->spans[si].n) {
                si++;
                off = 0;
            }
            if (si >= f->n_spans) {
                mismatches++;
                break;
            }
            const fspan *fs = &f->spans[si];
            if (fs->type != sp->type)
                mismatches++;
            else if (fs->type == GM_SPAN_TEXT && fs->ids[off] != sp->ids[j])
                mismatches++;
            else if (fs->type != GM_SPAN_TEXT && sp->embd + (size_t)j * emb[si].n_embd !=
                                                     emb[si].embd + (size_t)off * emb[si].n_embd)
                mismatches++;
            off++;
        }
    }
    CHECKF(mismatches == 0, "%s: gm_prompt_add_media layout differs at %d positions", f->name,
           mismatches);
    gm_prompt_free(&p);
    gm_tokenizer_free(tok);
}

static void run_fixture(const char *folder, const char *name, gm_pool *pool)
{
    char dir[1000], path[2400];
    snprintf(dir, sizeof dir, "%s/%s", gm_test_conformance_dir(), folder);
    fixture f;
    int rc = fixture_load(&f, dir, name);
    CHECKF(rc == 0, "%s/%s.txt: cannot load", dir, name);
    if (rc != 0) {
        fixture_free(&f);
        return;
    }
    gm_error err = { 0 };
    snprintf(path, sizeof path, "%s/%s", dir, f.model);
    gm_model *m = gm_model_load(path, &err);
    CHECKF(m != NULL, "%s: %s", path, err.msg);
    snprintf(path, sizeof path, "%s/%s", dir, f.mmproj);
    gm_vision_model *vm = gm_vision_model_load(path, &err);
    CHECKF(vm != NULL, "%s: %s", path, err.msg);
    gm_audio_model *am = NULL;
    if (f.mmproj_audio[0]) {
        snprintf(path, sizeof path, "%s/%s", dir, f.mmproj_audio);
        am = gm_audio_model_load(path, &err);
        CHECKF(am != NULL, "%s: %s", path, err.msg);
    }
    media_rows emb[MAX_SPANS] = { 0 };
    if (!m || !vm || (f.mmproj_audio[0] && !am) || embed_media(&f, vm, am, pool, emb) != 0)
        goto out;
    CHECK_EQ_INT(gm_vision_model_projection_dim(vm), m->hp.n_embd);

    size_t V = (size_t)f.n_vocab;
    snprintf(path, sizeof path, "%s/%s", dir, f.logits);
    size_t rlen = 0;
    float *ref = gm_test_read_file(path, &rlen);
    CHECKF(ref && rlen == (size_t)f.n_rows * V * sizeof(float), "%s: %zu bytes", path, rlen);
    gm_span spans[MAX_SPANS + 1];
    size_t ns = build_spans(&f, emb, true, spans);
    gm_context_params cp = { .n_ctx = f.n_rows + 8 };
    gm_context *c = gm_context_new(m, &cp, &err);
    float *lg = malloc((size_t)f.n_rows * V * sizeof *lg);
    rc = c && lg ? gm_context_eval(c, spans, ns, GM_LOGITS_ALL, lg, &err) : GM_ERR_NOMEM;
    CHECKF(rc == GM_OK, "%s: eval: %s", name, err.msg);
    if (rc == GM_OK && ref && rlen == (size_t)f.n_rows * V * sizeof(float)) {
        double max_abs = 0, max_ref = 0;
        int agree = 0, first_miss = -1;
        for (int r = 0; r < f.n_rows; r++) {
            for (size_t i = 0; i < V; i++) {
                double d = fabs((double)lg[r * V + i] - (double)ref[r * V + i]);
                if (!(d <= max_abs))
                    max_abs = d;
                if (fabs(ref[r * V + i]) > max_ref)
                    max_ref = fabs(ref[r * V + i]);
            }
            int same = argmax(lg + r * V, (int)V) == argmax(ref + r * V, (int)V);
            agree += same;
            if (!same && first_miss < 0)
                first_miss = r;
        }
        double tol = TOL_LOGITS_REL * (max_ref > 1 ? max_ref : 1);
        printf("  %s: %d positions, max |Δlogit| %.2e (tolerance %.2e, max |ref| %.1f), argmax "
               "%d/%d\n", name, f.n_rows, max_abs, tol, max_ref, agree, f.n_rows);
        CHECKF(max_abs <= tol, "%s: max |Δlogit| %.3e > %.3e", name, max_abs, tol);
        CHECKF(agree == f.n_rows, "%s: argmax differs at %d positions (first %d)", name,
               f.n_rows - agree, first_miss);
    }
    gm_context_free(c);
    free(lg);
    free(ref);

    /* Greedy decoding from the prompt alone (incremental, through the KV cache). */
    ns = build_spans(&f, emb, false, spans);
    c = gm_context_new(m, &cp, &err);
    float *row = malloc(V * sizeof *row);
    rc = c && row ? gm_context_eval(c, spans, ns, GM_LOGITS_LAST, row, &err) : GM_ERR_NOMEM;
    CHECKF(rc == GM_OK, "%s: prefill: %s", name, err.msg);
    int same = 0;
    for (int k = 0; k < f.n_greedy && rc == GM_OK; k++) {
        int32_t id = argmax(row, (int)V);
        if (id != f.greedy[k])
            break;
        same++;
        gm_span one = { .type = GM_SPAN_TEXT, .n = 1, .ids = &id };
        rc = gm_context_eval(c, &one, 1, GM_LOGITS_LAST, row, &err);
    }
    CHECKF(same == f.n_greedy, "%s: greedy ids agree for %d of %d", name, same, f.n_greedy);
    gm_context_free(c);
    free(row);

    check_prompt_builder(&f, m, emb);
out:
    for (int i = 0; i < MAX_SPANS; i++)
        free(emb[i].embd);
    gm_vision_model_free(vm);
    gm_audio_model_free(am);
    gm_model_free(m);
    fixture_free(&f);
}

int main(void)
{
    static const char *const names[][2] = { { "mm-vision", "causal-one" },
                                            { "mm-vision", "causal-two" },
                                            { "mm-vision", "bidir-one" },
                                            { "mm-vision", "bidir-two" },
                                            { "mm-audio", "mixed" } };
    gm_pool *pool = gm_pool_create(2);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        run_fixture(names[i][0], names[i][1], i % 2 ? pool : NULL);
    gm_pool_destroy(pool);
    return gm_test_finish();
}
