/* gemma-mkmodel — writes synthetic Gemma 4 text GGUFs (presets with overrides) or
 * vision + audio mmproj GGUFs, or requantizes an existing gemma4 GGUF. See docs/tools.md. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "synth-model.h"
#include "tool-common.h"

static const char *prog = "gemma-mkmodel";

static void usage(FILE *f)
{
    fprintf(f,
        "usage: gemma-mkmodel --preset NAME [options] -o OUT.gguf\n"
        "       gemma-mkmodel --mmproj-preset NAME [--type T] [--seed N] [--projection-dim N]\n"
        "                     [--no-audio | --no-vision] -o OUT.gguf\n"
        "       gemma-mkmodel --from IN.gguf --type T [--drop-shared-kv] [--threads N] -o OUT.gguf\n"
        "\n"
        "Writes a Gemma 4 text GGUF with seeded synthetic weights, in llama.cpp's tensor\n"
        "names, shapes and metadata keys, or a gemma4v + gemma4a (vision + audio) mmproj GGUF\n"
        "the same way; or\n"
        "converts the matrices of an existing gemma4 GGUF to another type (like llama-quantize).\n"
        "\n"
        "  --preset NAME        tiny | test | e2b | e4b\n"
        "  --vocab FILE         copy the tokenizer (tokenizer.* keys) from this GGUF;\n"
        "                       without it a vocabulary is generated (--vocab-size entries)\n"
        "  --type T             matrix type: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q4_K q5_K q6_K\n"
        "  --embd-type T        token_embd / per_layer_token_embd type (default: --type, except\n"
        "                       presets with their own embedding type: tiny uses q4_0)\n"
        "  --seed N             weight seed (default 1)\n"
        "  --threads N          generation threads (default: all CPUs)\n"
        "  --name STR           general.name\n"
        "  -o, --output FILE    output path\n"
        "\n"
        "dimension overrides:\n"
        "  --vocab-size N --embd N --layers N --heads N --kv-heads N --kv-heads-full N\n"
        "  --head-dim N (sliding) --head-dim-full N --ff N --double-wide --no-double-wide\n"
        "  --shared-kv N --keep-shared-kv --ple N --window N --swa-period N\n"
        "  --rope-theta F (full) --rope-theta-swa F --partial-rotary F --softcap F (0 = none)\n"
        "  --k-eq-v --no-layer-scale --bidir none|vision|omit\n"
        "\n"
        "mmproj with both towers, as the E2B/E4B files (clipped linears):\n"
        "  --mmproj-preset NAME tiny (vision hidden 64, 2 layers; audio hidden 64, 2 blocks,\n"
        "                       output_proj 48; projection 64 = the tiny text model)\n"
        "                       | e2b (vision 768, 16 layers, 12 heads, FFN 3072; audio 1024,\n"
        "                       12 blocks, 8 heads, FFN 4096, output_proj 1536; projection 1536)\n"
        "                       | e4b (the same towers, projection 2560)\n"
        "  --type T             linears and projections: f32 f16 (default) bf16 q8_0 (norms,\n"
        "                       tables, clamps, audio convs stay f32; the patch kernel is\n"
        "                       f32/bf16/f16)\n"
        "  --no-audio           vision tower only\n"
        "  --no-vision          audio tower only\n"
        "  --projection-dim N   text width the soft tokens are projected to\n"
        "  --seed N, --threads N, --name STR as above\n"
        "\n"
        "requantize:\n"
        "  --from FILE          input gemma4 GGUF (all metadata is copied)\n"
        "  --drop-shared-kv     leave out attn_k/attn_v/attn_k_norm of KV-shared layers\n");
}

static int parse_type(const char *opt, const char *s, gm_type *out)
{
    static const char *const writable[] = { "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q4_K", "q5_K", "q6_K" };
    int t = -1;
    for (size_t i = 0; i < sizeof writable / sizeof writable[0]; i++)
        if (strcasecmp(s, writable[i]) == 0)
            t = gm_type_from_name(writable[i]);
    if (t < 0) {
        fprintf(stderr, "%s: %s: unknown type \"%s\" (f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q4_K q5_K q6_K)\n", prog,
                opt, s);
        return -1;
    }
    *out = (gm_type)t;
    return 0;
}

int main(int argc, char **argv)
{
    const char *preset = NULL, *vocab = NULL, *type_s = NULL, *embd_type_s = NULL, *out = NULL, *from = NULL;
    const char *name = NULL, *bidir_s = NULL, *mmproj = NULL;
    long v_proj = -1;
    long seed = -1, threads = 0;
    long v_vocab = -1, v_embd = -1, v_layers = -1, v_heads = -1, v_kv = -1, v_kv_full = -1, v_hd = -1,
         v_hd_full = -1, v_ff = -1, v_shared = -1, v_ple = -1, v_window = -1, v_period = -1;
    double v_theta = -1, v_theta_swa = -1, v_partial = -1, v_softcap = -1;
    int double_wide = -1;
    bool keep_shared = false, k_eq_v = false, no_layer_scale = false, drop_shared = false;
    bool no_audio = false, no_vision = false;

    tool_args a;
    tool_args_init(&a, argc, argv, prog);
    const long BIG = 1L << 30;
    for (; a.i < argc && !a.error; a.i++) {
        if (tool_flag(&a, "-h", "--help")) {
            usage(stdout);
            return 0;
        }
        if (tool_opt_str(&a, "--preset", NULL, &preset) || tool_opt_str(&a, "--vocab", NULL, &vocab) ||
            tool_opt_str(&a, "--type", NULL, &type_s) || tool_opt_str(&a, "--embd-type", NULL, &embd_type_s) ||
            tool_opt_str(&a, "-o", "--output", &out) || tool_opt_str(&a, "--from", NULL, &from) ||
            tool_opt_str(&a, "--name", NULL, &name) || tool_opt_str(&a, "--bidir", NULL, &bidir_s) ||
            tool_opt_str(&a, "--mmproj-preset", NULL, &mmproj) ||
            tool_opt_long(&a, "--projection-dim", NULL, 1, 65536, &v_proj) ||
            tool_opt_long(&a, "--seed", NULL, 0, (long)(~0UL >> 1), &seed) ||
            tool_opt_long(&a, "--threads", "-t", 0, 1024, &threads) ||
            tool_opt_long(&a, "--vocab-size", NULL, 1, 1L << 24, &v_vocab) ||
            tool_opt_long(&a, "--embd", NULL, 1, 65536, &v_embd) ||
            tool_opt_long(&a, "--layers", NULL, 1, 4096, &v_layers) ||
            tool_opt_long(&a, "--heads", NULL, 1, 1024, &v_heads) ||
            tool_opt_long(&a, "--kv-heads", NULL, 1, 1024, &v_kv) ||
            tool_opt_long(&a, "--kv-heads-full", NULL, 0, 1024, &v_kv_full) ||
            tool_opt_long(&a, "--head-dim", NULL, 2, 65536, &v_hd) ||
            tool_opt_long(&a, "--head-dim-full", NULL, 2, 65536, &v_hd_full) ||
            tool_opt_long(&a, "--ff", NULL, 1, 262144, &v_ff) ||
            tool_opt_long(&a, "--shared-kv", NULL, 0, 4096, &v_shared) ||
            tool_opt_long(&a, "--ple", NULL, 0, 65536, &v_ple) ||
            tool_opt_long(&a, "--window", NULL, 1, BIG, &v_window) ||
            tool_opt_long(&a, "--swa-period", NULL, 0, 4096, &v_period) ||
            tool_opt_double(&a, "--rope-theta", NULL, 1e-3, 1e12, &v_theta) ||
            tool_opt_double(&a, "--rope-theta-swa", NULL, 1e-3, 1e12, &v_theta_swa) ||
            tool_opt_double(&a, "--partial-rotary", NULL, 0, 1, &v_partial) ||
            tool_opt_double(&a, "--softcap", NULL, 0, 1e6, &v_softcap))
            continue;
        if (tool_flag(&a, "--double-wide", NULL)) double_wide = 1;
        else if (tool_flag(&a, "--no-double-wide", NULL)) double_wide = 0;
        else if (tool_flag(&a, "--keep-shared-kv", NULL)) keep_shared = true;
        else if (tool_flag(&a, "--k-eq-v", NULL)) k_eq_v = true;
        else if (tool_flag(&a, "--no-layer-scale", NULL)) no_layer_scale = true;
        else if (tool_flag(&a, "--drop-shared-kv", NULL)) drop_shared = true;
        else if (tool_flag(&a, "--no-audio", NULL)) no_audio = true;
        else if (tool_flag(&a, "--no-vision", NULL)) no_vision = true;
        else {
            fprintf(stderr, "%s: unknown argument \"%s\" (see --help)\n", prog, argv[a.i]);
            return TOOL_EXIT_USAGE;
        }
    }
    if (a.error)
        return TOOL_EXIT_USAGE;
    if (!out) {
        fprintf(stderr, "%s: no output file (-o OUT.gguf)\n", prog);
        return TOOL_EXIT_USAGE;
    }
    if (!!preset + !!from + !!mmproj != 1) {
        fprintf(stderr, "%s: give exactly one of --preset NAME, --mmproj-preset NAME or --from FILE\n", prog);
        return TOOL_EXIT_USAGE;
    }
    if ((v_proj > 0 || no_audio || no_vision) && !mmproj) {
        fprintf(stderr, "%s: --projection-dim, --no-audio and --no-vision are for --mmproj-preset\n", prog);
        return TOOL_EXIT_USAGE;
    }
    if (no_audio && no_vision) {
        fprintf(stderr, "%s: --no-audio and --no-vision together leave nothing to write\n", prog);
        return TOOL_EXIT_USAGE;
    }
    gm_type type = GM_TYPE_Q8_0, embd_type = GM_TYPE_Q8_0;
    if (type_s && parse_type("--type", type_s, &type) != 0)
        return TOOL_EXIT_USAGE;
    if (embd_type_s && parse_type("--embd-type", embd_type_s, &embd_type) != 0)
        return TOOL_EXIT_USAGE;

    gm_error err = { 0 };
    double t0 = tool_now();
    if (mmproj) {
        gm_synth_mmproj_config mc;
        if (gm_synth_mmproj_preset(mmproj, &mc) != 0) {
            fprintf(stderr, "%s: unknown mmproj preset \"%s\" (tiny, e2b, e4b)\n", prog, mmproj);
            return TOOL_EXIT_USAGE;
        }
        if (type_s) {
            if (type != GM_TYPE_F32 && type != GM_TYPE_F16 && type != GM_TYPE_BF16 && type != GM_TYPE_Q8_0) {
                fprintf(stderr, "%s: --type %s: an mmproj takes f32, f16, bf16 or q8_0\n", prog, type_s);
                return TOOL_EXIT_USAGE;
            }
            mc.wtype = type;
        }
        if (name) snprintf(mc.name, sizeof mc.name, "%s", name);
        if (seed >= 0) mc.seed = (uint64_t)seed;
        if (v_proj > 0) mc.proj_dim = (uint32_t)v_proj;
        mc.n_threads = (int)threads;
        if (no_audio)
            mc.audio.n_embd = 0;
        mc.no_vision = no_vision;
        if (gm_synth_mmproj_write(&mc, out, &err) != GM_OK) {
            fprintf(stderr, "%s: %s\n", prog, err.msg);
            return TOOL_EXIT_RUNTIME;
        }
    } else if (from) {
        if (!type_s) {
            fprintf(stderr, "%s: --from needs --type\n", prog);
            return TOOL_EXIT_USAGE;
        }
        if (gm_synth_requantize(from, out, type, drop_shared, (int)threads, &err) != GM_OK) {
            fprintf(stderr, "%s: %s\n", prog, err.msg);
            return TOOL_EXIT_RUNTIME;
        }
    } else {
        gm_synth_config cfg;
        if (gm_synth_preset(preset, &cfg) != 0) {
            fprintf(stderr, "%s: unknown preset \"%s\" (tiny, test, e2b, e4b)\n", prog, preset);
            return TOOL_EXIT_USAGE;
        }
        bool embd_follows = cfg.embd_type == cfg.wtype;
        if (type_s) {
            cfg.wtype = type;
            if (embd_follows)
                cfg.embd_type = type;
        }
        if (embd_type_s)
            cfg.embd_type = embd_type;
        if (name) snprintf(cfg.name, sizeof cfg.name, "%s", name);
        if (seed >= 0) cfg.seed = (uint64_t)seed;
        cfg.n_threads = (int)threads;
        cfg.vocab_path = vocab;
        if (v_vocab > 0) cfg.n_vocab = (uint32_t)v_vocab;
        if (v_embd > 0) cfg.n_embd = (uint32_t)v_embd;
        if (v_layers > 0) cfg.n_layer = (uint32_t)v_layers;
        if (v_heads > 0) cfg.n_head = (uint32_t)v_heads;
        if (v_kv > 0) cfg.n_head_kv = (uint32_t)v_kv;
        if (v_kv_full >= 0) cfg.n_head_kv_full = (uint32_t)v_kv_full;
        if (v_hd > 0) cfg.head_dim_swa = (uint32_t)v_hd;
        if (v_hd_full > 0) cfg.head_dim_full = (uint32_t)v_hd_full;
        if (v_ff > 0) cfg.n_ff = (uint32_t)v_ff;
        if (v_shared >= 0) cfg.n_shared_kv = (uint32_t)v_shared;
        if (v_ple >= 0) cfg.n_embd_per_layer = (uint32_t)v_ple;
        if (v_window > 0) cfg.sliding_window = (uint32_t)v_window;
        if (v_period >= 0) cfg.swa_period = (uint32_t)v_period;
        if (v_theta > 0) cfg.rope_theta_full = (float)v_theta;
        if (v_theta_swa > 0) cfg.rope_theta_swa = (float)v_theta_swa;
        if (v_partial >= 0) cfg.partial_rotary = (float)v_partial;
        if (v_softcap >= 0) cfg.final_softcap = (float)v_softcap;
        if (double_wide >= 0) cfg.double_wide = double_wide != 0;
        if (keep_shared) cfg.keep_shared_kv_tensors = true;
        if (k_eq_v) cfg.k_eq_v = true;
        if (no_layer_scale) cfg.layer_scale = false;
        if (bidir_s) {
            if (strcmp(bidir_s, "none") == 0) cfg.bidir = 0;
            else if (strcmp(bidir_s, "vision") == 0) cfg.bidir = 1;
            else if (strcmp(bidir_s, "omit") == 0) cfg.bidir = -1;
            else {
                fprintf(stderr, "%s: --bidir: \"%s\" is not none, vision or omit\n", prog, bidir_s);
                return TOOL_EXIT_USAGE;
            }
        }
        if (gm_synth_write(&cfg, out, &err) != GM_OK) {
            fprintf(stderr, "%s: %s\n", prog, err.msg);
            return TOOL_EXIT_RUNTIME;
        }
    }
    double dt = tool_now() - t0;
    long long size = tool_file_size(out);
    double mib = size >= 0 ? (double)size / (1024.0 * 1024.0) : 0.0;
    fprintf(stderr, "%s: wrote %s (%.1f MiB) in %.2f s\n", prog, out, mib, dt);
    return 0;
}
