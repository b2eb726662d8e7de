/* gemma-run — one-shot, in-process generation: load a Gemma 4 GGUF, run a prompt, stream
 * the text. Also the conformance interface (--tokens + --dump-logits), a tokenizer
 * front end (--tokenize) and the media inspection dumps (--dump-image-patches, --dump-mel;
 * no model needed). Images and sound files (--image, --audio) go into the user turn in
 * command-line order, before the text. Usage in docs/tools.md.
 *
 * Exit codes: 0 ok, 1 usage, 2 model (or vocabulary / mmproj) load error, 3 runtime error.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/cpu.h"
#include "core/gguf.h"
#include "core/pool.h"
#include "decoder/chat.h"
#include "decoder/context.h"
#include "decoder/generate.h"
#include "decoder/model.h"
#include "decoder/sampler.h"
#include "decoder/tokenizer.h"
#include "tool-common.h"
#include "audio/audio-decode.h"
#include "audio/audio-embed.h"
#include "audio/audio-encoder.h"
#include "audio/audio-features.h"
#include "vision/image-decode.h"
#include "vision/image-embed.h"
#include "vision/image-preprocess.h"
#include "vision/vision-encoder.h"

static const char *prog = "gemma-run";

#define MAX_STOP 16
#define DEFAULT_MAX_TOKENS 256
#define MAX_MEDIA 16
#define DEFAULT_IMAGE_TOKENS 280

typedef struct options {
    const char *model, *mmproj, *prompt, *system, *tokens, *dump_logits;
    char *joined_prompt;       /* positional words, joined */
    const char *stop[MAX_STOP];
    size_t n_stop;
    struct {
        gm_part_type type;     /* GM_PART_IMAGE or GM_PART_AUDIO */
        const char *path;
    } media[MAX_MEDIA];        /* --image / --audio in command-line order */
    size_t n_media, n_images, n_audio;
    long image_tokens;
    const char *dump_patches, *dump_mel;
    long threads, ctx, batch, max_tokens;
    bool max_tokens_set, seed_set;
    long seed;
    double temp, top_p, min_p, repeat_penalty, presence, frequency;
    long top_k, repeat_last_n;
    bool think, raw, tokenize, bos, special, verbose, quiet, ids;
} options;

/* What one --image / --audio file became. */
typedef struct media_embedding {
    gm_image_embedding image;
    gm_audio_embedding audio;
} media_embedding;

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: gemma-run -m MODEL.gguf [options] [-p PROMPT | PROMPT words...]\n"
        "       gemma-run -m MODEL.gguf --tokens \"2 105 ...\" [--dump-logits FILE] [-n N]\n"
        "       gemma-run -m MODEL_OR_VOCAB.gguf --tokenize [--bos] [--special] < text\n"
        "       gemma-run --image FILE [--image-tokens N] --dump-image-patches OUT.f32\n"
        "       gemma-run --audio FILE --dump-mel OUT.f32\n"
        "\n"
        "  -m, --model FILE         Gemma 4 text GGUF\n"
        "  --mmproj FILE            multimodal projector GGUF (its gemma4v vision encoder turns\n"
        "                           --image files into soft tokens, its gemma4a audio encoder\n"
        "                           --audio files)\n"
        "  -p, --prompt TEXT        the user message (or give it as trailing words)\n"
        "  --system TEXT            system message\n"
        "  --think                  enable thinking (<|think|> in the system turn)\n"
        "  --raw                    no chat template: BOS + the prompt, special tokens parsed\n"
        "  --tokens \"ID ...\"        raw token ids as the prompt (no template, no BOS added)\n"
        "  -n, --max-tokens N       tokens to generate (default %d; -1 = until the context is\n"
        "                           full; default 0 with --dump-logits)\n"
        "  --stop STR               stop string (repeatable, up to %d)\n"
        "  --temp F                 temperature (0 = greedy; default 1.0)\n"
        "  --top-k N  --top-p F  --min-p F\n"
        "  --repeat-penalty F  --repeat-last-n N  --presence-penalty F  --frequency-penalty F\n"
        "  --seed N                 sampling seed (default: random)\n"
        "  --threads N              worker threads (default: all CPUs)\n"
        "  --ctx N                  context size (default: min(training context, 4096))\n"
        "  --batch N                prefill chunk size (default 512)\n"
        "  --dump-logits FILE       write the prompt's logits (f32 little-endian, one row of\n"
        "                           n_vocab per prompt position)\n"
        "  --image FILE             a PNG or JPEG image; --image and --audio are repeatable\n"
        "                           (up to %d files together) and go into the user turn in\n"
        "                           command-line order, before the text; need --mmproj\n"
        "                           (with --raw: after BOS, before the text)\n"
        "  --audio FILE             a sound file (WAV, FLAC, Ogg Vorbis/Opus, MP3, anything\n"
        "                           libsndfile reads); each 30 s clip is its own audio block\n"
        "  --image-tokens N         soft-token budget per image: 70, 140, 280, 560 or 1120\n"
        "                           (default %d)\n"
        "  --dump-image-patches FILE  preprocess the first --image as transformers does and\n"
        "                           write its 16x16 patches (f32 little-endian, 768 values in\n"
        "                           [0, 1] per patch, row-major patches); prints \"grid WxH\"\n"
        "                           on stderr; needs no model\n"
        "  --dump-mel FILE          write the first --audio file's log-mel features as\n"
        "                           transformers computes them (f32 little-endian, 128 values\n"
        "                           per frame, clip 0's frames, then clip 1's, ...); prints\n"
        "                           \"clip K: N frames\" per 30 s clip on stderr; needs no model\n"
        "  --ids                    print generated token ids instead of text\n"
        "  --special                render control tokens in the output; with --tokenize, parse\n"
        "                           special-token strings in the input\n"
        "  --tokenize               print the token ids of stdin (or -p) and exit; works on a\n"
        "                           vocabulary-only GGUF\n"
        "  --bos                    with --tokenize: prepend BOS\n"
        "  --verbose                model description, prompt ids and settings on stderr\n"
        "  --quiet                  no statistics on stderr\n",
        DEFAULT_MAX_TOKENS, MAX_STOP, MAX_MEDIA, DEFAULT_IMAGE_TOKENS);
}

/* Returns 0, or an exit code. */
static int parse_args(int argc, char **argv, options *o)
{
    gm_sampler_params sp = gm_sampler_default_params();
    memset(o, 0, sizeof *o);
    o->temp = sp.temperature;
    o->top_k = sp.top_k;
    o->top_p = sp.top_p;
    o->min_p = sp.min_p;
    o->repeat_penalty = sp.repeat_penalty;
    o->repeat_last_n = sp.repeat_last_n;
    o->presence = sp.presence_penalty;
    o->frequency = sp.frequency_penalty;
    o->max_tokens = DEFAULT_MAX_TOKENS;
    o->image_tokens = DEFAULT_IMAGE_TOKENS;

    size_t words_len = 0;
    int first_word = -1, n_words = 0;
    tool_args a;
    tool_args_init(&a, argc, argv, prog);
    for (; a.i < argc && !a.error; a.i++) {
        const char *s = argv[a.i];
        const char *stop = NULL;
        if (tool_flag(&a, "-h", "--help")) {
            usage(stdout);
            exit(TOOL_EXIT_OK);
        }
        if (tool_opt_str(&a, "-m", "--model", &o->model) || tool_opt_str(&a, "--mmproj", NULL, &o->mmproj) ||
            tool_opt_str(&a, "-p", "--prompt", &o->prompt) || tool_opt_str(&a, "--system", NULL, &o->system) ||
            tool_opt_str(&a, "--tokens", NULL, &o->tokens) ||
            tool_opt_str(&a, "--dump-logits", NULL, &o->dump_logits) ||
            tool_opt_str(&a, "--dump-image-patches", NULL, &o->dump_patches) ||
            tool_opt_str(&a, "--dump-mel", NULL, &o->dump_mel) ||
            tool_opt_long(&a, "--image-tokens", NULL, 1, 1L << 20, &o->image_tokens) ||
            tool_opt_long(&a, "--threads", "-t", 0, 1024, &o->threads) ||
            tool_opt_long(&a, "--ctx", "-c", 0, 1L << 24, &o->ctx) ||
            tool_opt_long(&a, "--batch", "-b", 0, 1L << 20, &o->batch) ||
            tool_opt_double(&a, "--temp", NULL, 0, 100, &o->temp) ||
            tool_opt_long(&a, "--top-k", NULL, 0, 1L << 24, &o->top_k) ||
            tool_opt_double(&a, "--top-p", NULL, 0, 1, &o->top_p) ||
            tool_opt_double(&a, "--min-p", NULL, 0, 1, &o->min_p) ||
            tool_opt_double(&a, "--repeat-penalty", NULL, 0, 100, &o->repeat_penalty) ||
            tool_opt_long(&a, "--repeat-last-n", NULL, -1, 1L << 24, &o->repeat_last_n) ||
            tool_opt_double(&a, "--presence-penalty", NULL, -100, 100, &o->presence) ||
            tool_opt_double(&a, "--frequency-penalty", NULL, -100, 100, &o->frequency))
            continue;
        if (tool_opt_long(&a, "-n", "--max-tokens", -1, 1L << 24, &o->max_tokens)) {
            o->max_tokens_set = true;
            continue;
        }
        if (tool_opt_long(&a, "--seed", "-s", 0, (long)(~0UL >> 1), &o->seed)) {
            o->seed_set = true;
            continue;
        }
        const char *media = NULL;
        bool is_image = tool_opt_str(&a, "--image", NULL, &media);
        if (is_image || tool_opt_str(&a, "--audio", NULL, &media)) {
            if (a.error)
                break;
            if (o->n_media == MAX_MEDIA) {
                fprintf(stderr, "%s: at most %d --image/--audio files\n", prog, MAX_MEDIA);
                return TOOL_EXIT_USAGE;
            }
            o->media[o->n_media].type = is_image ? GM_PART_IMAGE : GM_PART_AUDIO;
            o->media[o->n_media++].path = media;
            if (is_image)
                o->n_images++;
            else
                o->n_audio++;
            continue;
        }
        if (tool_opt_str(&a, "--stop", NULL, &stop)) {
            if (a.error)
                break;
            if (o->n_stop == MAX_STOP) {
                fprintf(stderr, "%s: at most %d --stop strings\n", prog, MAX_STOP);
                return TOOL_EXIT_USAGE;
            }
            if (!*stop) {
                fprintf(stderr, "%s: --stop: empty string\n", prog);
                return TOOL_EXIT_USAGE;
            }
            o->stop[o->n_stop++] = stop;
            continue;
        }
        if (tool_flag(&a, "--think", NULL)) o->think = true;
        else if (tool_flag(&a, "--raw", NULL)) o->raw = true;
        else if (tool_flag(&a, "--tokenize", NULL)) o->tokenize = true;
        else if (tool_flag(&a, "--bos", NULL)) o->bos = true;
        else if (tool_flag(&a, "--special", NULL)) o->special = true;
        else if (tool_flag(&a, "--verbose", "-v")) o->verbose = true;
        else if (tool_flag(&a, "--quiet", "-q")) o->quiet = true;
        else if (tool_flag(&a, "--ids", NULL)) o->ids = true;
        else if (s[0] == '-' && s[1] != '\0') {
            fprintf(stderr, "%s: unknown option \"%s\" (see --help)\n", prog, s);
            return TOOL_EXIT_USAGE;
        } else {
            if (first_word < 0)
                first_word = a.i;
            else if (first_word + n_words != a.i) {
                fprintf(stderr, "%s: prompt words must come together (after the options)\n", prog);
                return TOOL_EXIT_USAGE;
            }
            n_words++;
            words_len += strlen(s) + 1;
        }
    }
    if (a.error)
        return TOOL_EXIT_USAGE;
    if (n_words) {
        if (o->prompt) {
            fprintf(stderr, "%s: give the prompt either with -p or as words, not both\n", prog);
            return TOOL_EXIT_USAGE;
        }
        o->joined_prompt = malloc(words_len + 1);
        if (!o->joined_prompt)
            return TOOL_EXIT_RUNTIME;
        o->joined_prompt[0] = '\0';
        for (int k = 0; k < n_words; k++) {
            if (k)
                strcat(o->joined_prompt, " ");
            strcat(o->joined_prompt, argv[first_word + k]);
        }
        o->prompt = o->joined_prompt;
    }
    if (!gm_image_budget_valid((int)o->image_tokens)) {
        fprintf(stderr, "%s: --image-tokens %ld: must be 70, 140, 280, 560 or 1120\n", prog,
                o->image_tokens);
        return TOOL_EXIT_USAGE;
    }
    if (o->dump_patches || o->dump_mel) {
        /* Preprocessing only: no model, no prompt. */
        if (o->dump_patches && !o->n_images) {
            fprintf(stderr, "%s: --dump-image-patches needs an --image FILE\n", prog);
            return TOOL_EXIT_USAGE;
        }
        if (o->dump_mel && !o->n_audio) {
            fprintf(stderr, "%s: --dump-mel needs an --audio FILE\n", prog);
            return TOOL_EXIT_USAGE;
        }
        if (o->prompt || o->tokens || o->tokenize || o->dump_logits || o->system) {
            fprintf(stderr, "%s: --dump-image-patches and --dump-mel only preprocess the media: "
                    "no prompt, --system, --tokens, --tokenize or --dump-logits with them\n", prog);
            return TOOL_EXIT_USAGE;
        }
        return 0;
    }
    if (o->n_media && o->tokens) {
        fprintf(stderr, "%s: --tokens is the whole prompt: no --image/--audio with it\n", prog);
        return TOOL_EXIT_USAGE;
    }
    if (o->n_media && !o->tokenize && !o->mmproj) {
        fprintf(stderr, "%s: --%s needs --mmproj FILE (the %s encoder)\n", prog,
                o->n_images ? "image" : "audio", o->n_images ? "vision" : "audio");
        return TOOL_EXIT_USAGE;
    }
    if (!o->model) {
        fprintf(stderr, "%s: no model (-m MODEL.gguf); see --help\n", prog);
        return TOOL_EXIT_USAGE;
    }
    if (o->tokenize)
        return 0;
    if (o->tokens && (o->prompt || o->system || o->raw || o->think)) {
        fprintf(stderr, "%s: --tokens is the whole prompt: no -p/--system/--raw/--think with it\n", prog);
        return TOOL_EXIT_USAGE;
    }
    if (!o->tokens && !o->prompt) {
        fprintf(stderr, "%s: no prompt (-p TEXT, trailing words, or --tokens)\n", prog);
        return TOOL_EXIT_USAGE;
    }
    if (o->raw && o->system) {
        fprintf(stderr, "%s: --system needs the chat template (drop --raw)\n", prog);
        return TOOL_EXIT_USAGE;
    }
    if (o->dump_logits && !o->max_tokens_set)
        o->max_tokens = 0;
    return 0;
}

/* ---- --tokenize ---------------------------------------------------------------------- */

static int run_tokenize(const options *o)
{
    gm_error err = { 0 };
    gm_gguf *g = gm_gguf_open(o->model, &err);
    if (!g) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return TOOL_EXIT_LOAD;
    }
    gm_tokenizer *tok = gm_tokenizer_load(g, &err);
    if (!tok) {
        fprintf(stderr, "%s: %s: %s\n", prog, o->model, err.msg);
        gm_gguf_close(g);
        return TOOL_EXIT_LOAD;
    }
    int rc = TOOL_EXIT_OK;
    size_t len = 0;
    char *text = NULL;
    if (o->prompt) {
        len = strlen(o->prompt);
    } else {
        text = tool_read_all(stdin, &len);
        if (!text) {
            fprintf(stderr, "%s: cannot read stdin\n", prog);
            rc = TOOL_EXIT_RUNTIME;
            goto out;
        }
    }
    gm_tokens ids = { 0 };
    if (gm_tokenize(tok, o->prompt ? o->prompt : text, len, o->bos, o->special, &ids, &err) != GM_OK) {
        fprintf(stderr, "%s: tokenize: %s\n", prog, err.msg);
        rc = TOOL_EXIT_RUNTIME;
    } else {
        for (size_t i = 0; i < ids.n; i++)
            printf(i ? " %d" : "%d", ids.ids[i]);
        printf("\n");
        if (fflush(stdout) != 0)
            rc = TOOL_EXIT_RUNTIME;
    }
    gm_tokens_free(&ids);
out:
    free(text);
    gm_tokenizer_free(tok);
    gm_gguf_close(g);
    return rc;
}

/* ---- --dump-image-patches, --dump-mel -------------------------------------------------- */

static const char *first_media(const options *o, gm_part_type type)
{
    for (size_t i = 0; i < o->n_media; i++)
        if (o->media[i].type == type)
            return o->media[i].path;
    return NULL;
}

static uint8_t *read_whole_file(const char *path, size_t *len)
{
    FILE *in = fopen(path, "rb");
    if (!in)
        return NULL;
    uint8_t *data = (uint8_t *)tool_read_all(in, len);
    int saved = errno;
    fclose(in);
    errno = saved;
    return data;
}

/* Writes n floats as little-endian bytes whatever the host order. */
static int write_f32_le(FILE *f, const float *v, size_t n)
{
    unsigned char buf[4096];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], sizeof u);
        buf[k++] = (unsigned char)u;
        buf[k++] = (unsigned char)(u >> 8);
        buf[k++] = (unsigned char)(u >> 16);
        buf[k++] = (unsigned char)(u >> 24);
        if (k == sizeof buf || i + 1 == n) {
            if (fwrite(buf, 1, k, f) != k)
                return -1;
            k = 0;
        }
    }
    return 0;
}

static int run_dump_mel(const options *o)
{
    const char *path = first_media(o, GM_PART_AUDIO);
    gm_error err = { 0 };
    size_t len = 0;
    uint8_t *data = read_whole_file(path, &len);
    if (!data) {
        fprintf(stderr, "%s: %s: cannot read: %s\n", prog, path, strerror(errno));
        return TOOL_EXIT_LOAD;
    }
    gm_audio_pcm pcm = { 0 };
    gm_audio_timing t = { 0 };
    int rc = gm_audio_load_16k(data, len, NULL, &pcm, &t, &err);
    free(data);
    if (rc != GM_OK) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, err.msg);
        return TOOL_EXIT_LOAD;
    }
    gm_audio_features feats = { 0 };
    double t0 = tool_now();
    rc = gm_audio_featurize(pcm.samples, pcm.n_samples, &feats, &err);
    double feat_s = tool_now() - t0;
    if (rc != GM_OK) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, err.msg);
        gm_audio_pcm_free(&pcm);
        return TOOL_EXIT_LOAD;
    }
    int exit_code = TOOL_EXIT_OK;
    FILE *f = fopen(o->dump_mel, "wb");
    if (!f) {
        fprintf(stderr, "%s: %s: cannot create: %s\n", prog, o->dump_mel, strerror(errno));
        exit_code = TOOL_EXIT_RUNTIME;
    }
    for (size_t k = 0; k < feats.n_clips && exit_code == TOOL_EXIT_OK; k++)
        if (write_f32_le(f, feats.clips[k].values,
                         (size_t)feats.clips[k].n_frames * GM_AUDIO_MEL_BINS) != 0)
            exit_code = TOOL_EXIT_RUNTIME;
    if (f && fclose(f) != 0)
        exit_code = TOOL_EXIT_RUNTIME;
    if (f && exit_code != TOOL_EXIT_OK) {
        fprintf(stderr, "%s: %s: write failed: %s\n", prog, o->dump_mel, strerror(errno));
        unlink(o->dump_mel);
    } else if (exit_code == TOOL_EXIT_OK) {
        for (size_t k = 0; k < feats.n_clips; k++)
            fprintf(stderr, "clip %zu: %u frames\n", k, feats.clips[k].n_frames);
        if (o->verbose)
            fprintf(stderr, "%s: %s: %s, %u Hz, %u channel(s), %.3f s | decode %.1f ms, resample "
                    "%.1f ms, features %.1f ms\n", prog, path, pcm.format, pcm.rate, pcm.channels,
                    (double)pcm.n_samples / GM_AUDIO_SAMPLE_RATE, t.decode_s * 1e3,
                    t.resample_s * 1e3, feat_s * 1e3);
    }
    gm_audio_features_free(&feats);
    gm_audio_pcm_free(&pcm);
    return exit_code;
}

static int run_dump_patches(const options *o)
{
    const char *path = first_media(o, GM_PART_IMAGE);
    gm_error err = { 0 };
    FILE *in = fopen(path, "rb");
    if (!in) {
        fprintf(stderr, "%s: %s: cannot open: %s\n", prog, path, strerror(errno));
        return TOOL_EXIT_LOAD;
    }
    size_t len = 0;
    uint8_t *data = (uint8_t *)tool_read_all(in, &len);
    fclose(in);
    if (!data) {
        fprintf(stderr, "%s: %s: cannot read\n", prog, path);
        return TOOL_EXIT_LOAD;
    }
    gm_image img = { 0 };
    int rc = gm_image_decode(data, len, NULL, &img, &err);
    free(data);
    if (rc != GM_OK) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, err.msg);
        return TOOL_EXIT_LOAD;
    }
    gm_image_patches p;
    double t0 = tool_now();
    rc = gm_image_preprocess(&img, (int)o->image_tokens, &p, &err);
    double pre_s = tool_now() - t0;
    uint32_t iw = img.width, ih = img.height;
    gm_image_free(&img);
    if (rc != GM_OK) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, err.msg);
        return TOOL_EXIT_RUNTIME;
    }

    int exit_code = TOOL_EXIT_OK;
    FILE *f = fopen(o->dump_patches, "wb");
    if (!f) {
        fprintf(stderr, "%s: %s: cannot create: %s\n", prog, o->dump_patches, strerror(errno));
        gm_image_patches_free(&p);
        return TOOL_EXIT_RUNTIME;
    }
    /* One patch row at a time, as little-endian bytes whatever the host order. */
    unsigned char row[GM_IMAGE_PATCH_VALUES * 4];
    for (uint32_t i = 0; i < p.n_patches && exit_code == TOOL_EXIT_OK; i++) {
        const float *v = p.values + (size_t)i * GM_IMAGE_PATCH_VALUES;
        for (size_t k = 0; k < GM_IMAGE_PATCH_VALUES; k++) {
            uint32_t u;
            memcpy(&u, &v[k], sizeof u);
            row[4 * k + 0] = (unsigned char)u;
            row[4 * k + 1] = (unsigned char)(u >> 8);
            row[4 * k + 2] = (unsigned char)(u >> 16);
            row[4 * k + 3] = (unsigned char)(u >> 24);
        }
        if (fwrite(row, 1, sizeof row, f) != sizeof row)
            exit_code = TOOL_EXIT_RUNTIME;
    }
    if (fclose(f) != 0)
        exit_code = TOOL_EXIT_RUNTIME;
    if (exit_code != TOOL_EXIT_OK) {
        fprintf(stderr, "%s: %s: write failed: %s\n", prog, o->dump_patches, strerror(errno));
        unlink(o->dump_patches);
    } else {
        fprintf(stderr, "grid %ux%u\n", p.grid_w, p.grid_h);
        if (o->verbose)
            fprintf(stderr, "%s: %s: %ux%u -> %ux%u pixels, %u patches, %u soft tokens "
                    "(budget %ld), preprocess %.1f ms\n", prog, path, iw, ih,
                    p.grid_w * GM_IMAGE_PATCH, p.grid_h * GM_IMAGE_PATCH, p.n_patches,
                    p.n_soft_tokens, o->image_tokens, pre_s * 1e3);
    }
    gm_image_patches_free(&p);
    return exit_code;
}

/* ---- prompt ---------------------------------------------------------------------------- */

/* The media of the command line as chat parts, in order: one part per image, one per
 * 30 s audio clip. *out is malloc'd. */
static int media_parts(const options *o, const media_embedding *embd, gm_chat_part **out,
                       size_t *n_out, gm_error *err)
{
    size_t n = 0;
    for (size_t i = 0; i < o->n_media; i++)
        n += o->media[i].type == GM_PART_IMAGE ? 1 : embd[i].audio.n_clips;
    gm_chat_part *parts = calloc(n + 1, sizeof *parts);
    if (!parts)
        return gm_set_error(err, GM_ERR_NOMEM, "out of memory for %zu prompt parts", n);
    size_t k = 0;
    for (size_t i = 0; i < o->n_media; i++) {
        if (o->media[i].type == GM_PART_IMAGE) {
            parts[k++] = (gm_chat_part){ .type = GM_PART_IMAGE,
                                         .n_soft_tokens = (int32_t)embd[i].image.n_soft_tokens,
                                         .embd = embd[i].image.embd };
            continue;
        }
        for (size_t c = 0; c < embd[i].audio.n_clips; c++)
            parts[k++] = (gm_chat_part){ .type = GM_PART_AUDIO,
                                         .n_soft_tokens = (int32_t)embd[i].audio.clips[c].n_soft_tokens,
                                         .embd = embd[i].audio.clips[c].embd };
    }
    *out = parts;
    *n_out = k;
    return GM_OK;
}

static int build_prompt(const options *o, const gm_model *model, const gm_tokenizer *tok,
                        const media_embedding *embd, gm_prompt *p, gm_error *err)
{
    int rc;
    if (o->tokens) {
        gm_tokens ids = { 0 };
        char msg[160];
        if (tool_parse_ids(o->tokens, (int32_t)model->hp.n_vocab, &ids, msg, sizeof msg) != 0) {
            gm_tokens_free(&ids);
            return gm_set_error(err, GM_ERR_INVALID, "--tokens: %s", msg);
        }
        if (ids.n == 0) {
            gm_tokens_free(&ids);
            return gm_set_error(err, GM_ERR_INVALID, "--tokens: no token ids");
        }
        rc = gm_prompt_add_ids(p, ids.ids, ids.n, err);
        gm_tokens_free(&ids);
    } else if (o->raw) {
        gm_chat_part *parts = NULL;
        size_t n_parts = 0;
        int32_t bos = gm_tokenizer_bos(tok);
        rc = bos >= 0 ? gm_prompt_add_ids(p, &bos, 1, err) : GM_OK;
        if (rc == GM_OK)
            rc = media_parts(o, embd, &parts, &n_parts, err);
        for (size_t i = 0; i < n_parts && rc == GM_OK; i++)
            rc = gm_prompt_add_media(p, tok, parts[i].type, parts[i].n_soft_tokens, parts[i].embd, err);
        free(parts);
        if (rc == GM_OK)
            rc = gm_prompt_add_text(p, tok, o->prompt, true, err);
    } else {
        gm_chat_part sys_part = { .type = GM_PART_TEXT, .text = o->system };
        /* Media first, then the question: the order transformers' chat template keeps for
         * content [image/audio, …, text]. */
        gm_chat_part *user_parts = NULL;
        size_t n_user = 0;
        rc = media_parts(o, embd, &user_parts, &n_user, err);
        if (rc != GM_OK)
            return rc;
        user_parts[n_user++] = (gm_chat_part){ .type = GM_PART_TEXT, .text = o->prompt };
        gm_chat_message msgs[2];
        size_t n = 0;
        if (o->system)
            msgs[n++] = (gm_chat_message){ .role = GM_ROLE_SYSTEM, .parts = &sys_part, .n_parts = 1 };
        msgs[n++] = (gm_chat_message){ .role = GM_ROLE_USER, .parts = user_parts, .n_parts = n_user };
        gm_chat_options co = { .thinking = o->think, .add_generation_prompt = true };
        rc = gm_chat_build(tok, msgs, n, &co, p, err);
        free(user_parts);
        return rc;
    }
    if (rc == GM_OK)
        gm_prompt_finish(p);
    return rc;
}

/* Evaluates the prompt with logits for every position, chunk by chunk, and appends each
 * chunk's rows to the file. Leaves the prompt in the cache. */
static int dump_logits(const options *o, gm_context *ctx, const gm_prompt *p, int32_t n_vocab,
                       double *seconds, gm_error *err)
{
    FILE *f = fopen(o->dump_logits, "wb");
    if (!f)
        return gm_set_error(err, GM_ERR_IO, "%s: cannot create: %s", o->dump_logits, strerror(errno));
    int32_t chunk = o->batch > 0 ? (int32_t)o->batch : 512;
    float *logits = malloc((size_t)chunk * (size_t)n_vocab * sizeof(float));
    int rc = GM_OK;
    if (!logits) {
        fclose(f);
        return gm_set_error(err, GM_ERR_NOMEM, "out of memory for %d logit rows", chunk);
    }
    double t0 = tool_now();
    for (size_t s = 0; s < p->n_spans && rc == GM_OK; s++) {
        const gm_span *sp = &p->spans[s];
        if (sp->type != GM_SPAN_TEXT) {
            /* A media block in one call: its bidirectional attention needs all of it. */
            float *rows = malloc((size_t)sp->n * (size_t)n_vocab * sizeof(float));
            rc = rows ? gm_context_eval(ctx, sp, 1, GM_LOGITS_ALL, rows, err)
                      : gm_set_error(err, GM_ERR_NOMEM, "out of memory for %d logit rows", sp->n);
            size_t nrow = (size_t)sp->n * (size_t)n_vocab;
            if (rc == GM_OK && fwrite(rows, sizeof(float), nrow, f) != nrow)
                rc = gm_set_error(err, GM_ERR_IO, "%s: write failed: %s", o->dump_logits, strerror(errno));
            free(rows);
            continue;
        }
        for (int32_t i = 0; i < sp->n && rc == GM_OK; i += chunk) {
            gm_span part = { .type = GM_SPAN_TEXT, .n = sp->n - i < chunk ? sp->n - i : chunk, .ids = sp->ids + i };
            rc = gm_context_eval(ctx, &part, 1, GM_LOGITS_ALL, logits, err);
            if (rc != GM_OK)
                break;
            size_t nrow = (size_t)part.n * (size_t)n_vocab;
            if (fwrite(logits, sizeof(float), nrow, f) != nrow)
                rc = gm_set_error(err, GM_ERR_IO, "%s: write failed: %s", o->dump_logits, strerror(errno));
        }
    }
    *seconds = tool_now() - t0;
    free(logits);
    if (fclose(f) != 0 && rc == GM_OK)
        rc = gm_set_error(err, GM_ERR_IO, "%s: write failed: %s", o->dump_logits, strerror(errno));
    if (rc != GM_OK)
        unlink(o->dump_logits);
    return rc;
}

/* ---- generation callbacks -------------------------------------------------------------- */

typedef struct run_state {
    bool ids;
    bool any_output;
    char last;
    size_t n_ids;
} run_state;

static int on_piece(void *ud, const char *text, size_t len)
{
    run_state *s = ud;
    if (!s->ids && len) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
        s->any_output = true;
        s->last = text[len - 1];
    }
    return interrupted;
}

static int on_token(void *ud, int32_t id)
{
    run_state *s = ud;
    if (s->ids) {
        printf(s->n_ids ? " %d" : "%d", id);
        fflush(stdout);
        s->any_output = true;
        s->last = ' ';
    }
    s->n_ids++;
    return interrupted;
}

static void print_ids(const char *what, const gm_prompt *p)
{
    fprintf(stderr, "%s: %s (%d positions):", prog, what, p->n_positions);
    for (size_t s = 0; s < p->n_spans; s++) {
        const gm_span *sp = &p->spans[s];
        if (sp->type != GM_SPAN_TEXT) {
            fprintf(stderr, " [media x%d]", sp->n);
            continue;
        }
        for (int32_t i = 0; i < sp->n; i++)
            fprintf(stderr, " %d", sp->ids[i]);
    }
    fprintf(stderr, "\n");
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0) {
        free(o.joined_prompt);
        return rc;
    }
    if (o.dump_patches || o.dump_mel) {
        rc = o.dump_patches ? run_dump_patches(&o) : TOOL_EXIT_OK;
        if (rc == TOOL_EXIT_OK && o.dump_mel)
            rc = run_dump_mel(&o);
        free(o.joined_prompt);
        return rc;
    }
    if (o.tokenize) {
        rc = run_tokenize(&o);
        free(o.joined_prompt);
        return rc;
    }

    gm_error err = { 0 };
    gm_pool *pool = NULL;
    gm_model *model = NULL;
    gm_tokenizer *tok = NULL;
    gm_context *ctx = NULL;
    gm_vision_model *vision = NULL;
    gm_audio_model *audio = NULL;
    media_embedding embd[MAX_MEDIA];
    memset(embd, 0, sizeof embd);
    gm_prompt prompt;
    gm_prompt_init(&prompt);
    int exit_code = TOOL_EXIT_OK;

    double t_load0 = tool_now();
    model = gm_model_load(o.model, &err);
    if (!model) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        exit_code = TOOL_EXIT_LOAD;
        goto out;
    }
    double load_s = tool_now() - t_load0;
    tok = gm_tokenizer_load(model->gguf, &err);
    if (!tok) {
        fprintf(stderr, "%s: %s: %s\n", prog, o.model, err.msg);
        exit_code = TOOL_EXIT_LOAD;
        goto out;
    }
    if (o.n_images) {
        vision = gm_vision_model_load(o.mmproj, &err);
        if (!vision) {
            fprintf(stderr, "%s: %s\n", prog, err.msg);
            exit_code = TOOL_EXIT_LOAD;
            goto out;
        }
        if (gm_vision_model_projection_dim(vision) != model->hp.n_embd) {
            fprintf(stderr, "%s: %s projects images to width %u, but %s has n_embd %u: they are "
                    "not a pair\n", prog, o.mmproj, gm_vision_model_projection_dim(vision), o.model,
                    model->hp.n_embd);
            exit_code = TOOL_EXIT_LOAD;
            goto out;
        }
    }
    if (o.n_audio) {
        audio = gm_audio_model_load(o.mmproj, &err);
        if (!audio) {
            fprintf(stderr, "%s: %s\n", prog, err.msg);
            exit_code = TOOL_EXIT_LOAD;
            goto out;
        }
        if (gm_audio_model_projection_dim(audio) != model->hp.n_embd) {
            fprintf(stderr, "%s: %s projects audio to width %u, but %s has n_embd %u: they are "
                    "not a pair\n", prog, o.mmproj, gm_audio_model_projection_dim(audio), o.model,
                    model->hp.n_embd);
            exit_code = TOOL_EXIT_LOAD;
            goto out;
        }
    }
    if (o.mmproj && !o.n_media) {
        gm_gguf *mm = gm_gguf_open(o.mmproj, &err);
        if (!mm) {
            fprintf(stderr, "%s: %s\n", prog, err.msg);
            exit_code = TOOL_EXIT_LOAD;
            goto out;
        }
        char *arch = NULL;
        if (gm_gguf_get_str(mm, "general.architecture", &arch, &err) != GM_OK || strcmp(arch, "clip") != 0) {
            fprintf(stderr, "%s: %s: not a multimodal projector (general.architecture is %s%s%s, expected "
                    "\"clip\")\n", prog, o.mmproj, arch ? "\"" : "", arch ? arch : "missing", arch ? "\"" : "");
            free(arch);
            gm_gguf_close(mm);
            exit_code = TOOL_EXIT_LOAD;
            goto out;
        }
        free(arch);
        gm_gguf_close(mm);
    }

    pool = gm_pool_create((int)o.threads);
    if (!pool) {
        fprintf(stderr, "%s: cannot create %ld worker threads\n", prog, o.threads);
        exit_code = TOOL_EXIT_RUNTIME;
        goto out;
    }
    gm_context_params cp = { .n_ctx = (int32_t)o.ctx, .n_batch = (int32_t)o.batch, .pool = pool };
    ctx = gm_context_new(model, &cp, &err);
    if (!ctx) {
        fprintf(stderr, "%s: %s: creating the context: %s\n", prog, o.model, err.msg);
        exit_code = TOOL_EXIT_RUNTIME;
        goto out;
    }

    for (size_t i = 0; i < o.n_media; i++) {
        const char *path = o.media[i].path;
        size_t len = 0;
        uint8_t *data = read_whole_file(path, &len);
        if (!data) {
            fprintf(stderr, "%s: %s: cannot read: %s\n", prog, path, strerror(errno));
            exit_code = TOOL_EXIT_LOAD;
            goto out;
        }
        int erc;
        if (o.media[i].type == GM_PART_IMAGE)
            erc = gm_image_embed(vision, pool, data, len, NULL, (int)o.image_tokens, &embd[i].image, &err);
        else
            erc = gm_audio_embed(audio, pool, data, len, NULL, &embd[i].audio, &err);
        free(data);
        if (erc != GM_OK) {
            fprintf(stderr, "%s: %s: %s\n", prog, path, err.msg);
            exit_code = erc == GM_ERR_FORMAT || erc == GM_ERR_UNSUPPORTED || erc == GM_ERR_RANGE || erc == GM_ERR_LIMIT ||
                                erc == GM_ERR_INVALID
                            ? TOOL_EXIT_LOAD : TOOL_EXIT_RUNTIME;
            goto out;
        }
        if (o.quiet)
            continue;
        if (o.media[i].type == GM_PART_IMAGE) {
            const gm_image_embedding *e = &embd[i].image;
            fprintf(stderr, "%s: image %s: %ux%u -> %u soft tokens (grid %ux%u) | decode %.1f ms, "
                    "preprocess %.1f ms, encode %.1f ms\n", prog, path, e->width, e->height,
                    e->n_soft_tokens, e->grid_w, e->grid_h, e->decode_s * 1e3,
                    e->preprocess_s * 1e3, e->encode_s * 1e3);
        } else {
            const gm_audio_embedding *e = &embd[i].audio;
            uint32_t n_tok = 0;
            for (size_t k = 0; k < e->n_clips; k++)
                n_tok += e->clips[k].n_soft_tokens;
            fprintf(stderr, "%s: audio %s: %s, %u Hz, %u channel(s), %.2f s -> %zu clip(s), %u soft "
                    "tokens | decode %.1f ms, resample %.1f ms, features %.1f ms, encode %.1f ms\n",
                    prog, path, e->format, e->src_rate, e->src_channels, e->seconds, e->n_clips,
                    n_tok, e->decode_s * 1e3, e->resample_s * 1e3, e->features_s * 1e3,
                    e->encode_s * 1e3);
        }
    }

    if (build_prompt(&o, model, tok, embd, &prompt, &err) != GM_OK) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        exit_code = err.code == GM_ERR_INVALID && o.tokens ? TOOL_EXIT_USAGE : TOOL_EXIT_RUNTIME;
        goto out;
    }
    uint64_t seed = o.seed_set ? (uint64_t)o.seed : ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
    if (o.verbose) {
        char desc[1024];
        gm_model_describe(model, desc, sizeof desc);
        fprintf(stderr, "%s: %s\n%s: %s\n", prog, o.model, prog, desc);
        fprintf(stderr, "%s: threads %d, isa %s, cpu: %s, n_ctx %d, seed %llu\n", prog, gm_pool_size(pool),
                gm_isa_name(gm_cpu_best_isa()), gm_cpu_describe(), gm_context_n_ctx(ctx),
                (unsigned long long)seed);
        print_ids("prompt", &prompt);
    }
    if (prompt.n_positions > gm_context_n_ctx(ctx)) {
        fprintf(stderr, "%s: the prompt has %d positions, more than the context (%d; see --ctx)\n", prog,
                prompt.n_positions, gm_context_n_ctx(ctx));
        exit_code = TOOL_EXIT_RUNTIME;
        goto out;
    }

    double dump_s = 0;
    if (o.dump_logits) {
        if (dump_logits(&o, ctx, &prompt, (int32_t)model->hp.n_vocab, &dump_s, &err) != GM_OK) {
            fprintf(stderr, "%s: %s\n", prog, err.msg);
            exit_code = TOOL_EXIT_RUNTIME;
            goto out;
        }
        if (!o.quiet)
            fprintf(stderr, "%s: wrote %d x %u logits to %s (prompt eval %.1f ms)\n", prog, prompt.n_positions,
                    model->hp.n_vocab, o.dump_logits, dump_s * 1e3);
    }

    gm_generate_result res = { 0 };
    run_state st = { .ids = o.ids };
    if (o.max_tokens != 0) {
        gm_generate_params gp = {
            .sampling = gm_sampler_default_params(),
            .max_tokens = o.max_tokens < 0 ? 0 : (int32_t)o.max_tokens,
            .stop_strings = o.stop,
            .n_stop_strings = o.n_stop,
            .render_special = o.special,
            .reuse_prefix = o.dump_logits != NULL,
        };
        gp.sampling.temperature = (float)o.temp;
        gp.sampling.top_k = (int32_t)o.top_k;
        gp.sampling.top_p = (float)o.top_p;
        gp.sampling.min_p = (float)o.min_p;
        gp.sampling.repeat_penalty = (float)o.repeat_penalty;
        gp.sampling.repeat_last_n = (int32_t)o.repeat_last_n;
        gp.sampling.presence_penalty = (float)o.presence;
        gp.sampling.frequency_penalty = (float)o.frequency;
        gp.sampling.seed = seed;

        signal(SIGINT, on_sigint);
        rc = gm_generate(ctx, tok, &prompt, &gp, on_piece, on_token, &st, &res, &err);
        signal(SIGINT, SIG_DFL);
        if (st.any_output && st.last != '\n')
            fputc('\n', stdout);
        fflush(stdout);
        if (rc != GM_OK || res.stop_reason == GM_STOP_ERROR) {
            fprintf(stderr, "%s: generation failed: %s\n", prog, err.msg[0] ? err.msg : "unknown error");
            exit_code = TOOL_EXIT_RUNTIME;
            goto out;
        }
    }

    if (!o.quiet) {
        long rss = tool_rss_kib();
        fprintf(stderr, "%s: load %.1f ms, RSS %.1f MiB", prog, load_s * 1e3, rss > 0 ? (double)rss / 1024.0 : 0.0);
        if (o.max_tokens != 0) {
            int32_t n_eval = res.n_prompt - res.n_prompt_reused;
            fprintf(stderr, " | prompt %d tokens", res.n_prompt);
            if (res.n_prompt_reused)
                fprintf(stderr, " (%d reused)", res.n_prompt_reused);
            fprintf(stderr, " %.1f ms (%.2f t/s)", res.prefill_seconds * 1e3,
                    res.prefill_seconds > 0 ? n_eval / res.prefill_seconds : 0.0);
            fprintf(stderr, " | generated %d tokens %.1f ms (%.2f t/s) | stop: %s", res.n_generated,
                    res.decode_seconds * 1e3, res.decode_seconds > 0 ? res.n_generated / res.decode_seconds : 0.0,
                    gm_stop_reason_name(res.stop_reason));
        } else if (o.dump_logits) {
            fprintf(stderr, " | prompt %d tokens %.1f ms (%.2f t/s)", prompt.n_positions, dump_s * 1e3,
                    dump_s > 0 ? prompt.n_positions / dump_s : 0.0);
        }
        fprintf(stderr, "\n");
    }

out:
    gm_prompt_free(&prompt);
    for (size_t i = 0; i < MAX_MEDIA; i++) {
        gm_image_embedding_free(&embd[i].image);
        gm_audio_embedding_free(&embd[i].audio);
    }
    gm_vision_model_free(vision);
    gm_audio_model_free(audio);
    gm_context_free(ctx);
    gm_pool_destroy(pool);
    gm_tokenizer_free(tok);
    gm_model_free(model);
    free(o.joined_prompt);
    return exit_code;
}
