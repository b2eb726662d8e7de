/* audio-decode.c — a sound file's bytes to mono float samples, and libsoxr resampling to
 * the 16 kHz Gemma 4's feature extractor expects.
 *
 * Decoding: libsndfile's virtual I/O reads straight from the caller's bytes (every read and
 * seek bounded by len; no temporary file). libsndfile recognises the format from the bytes;
 * a headerless (RAW) result is never accepted. Samples come through sf_readf_float in blocks
 * into a buffer that grows as frames actually arrive, capped at max_seconds × rate + one
 * block: the header's frame count is never used to size anything (a header may claim 2^31
 * frames over a few bytes of data).
 *
 * Downmix: per frame, the channels are summed in float from channel 0 upwards and the sum is
 * multiplied by (float)(1/channels) — for stereo (L + R) × 0.5, exactly numpy's mean of two
 * float32 values (librosa.to_mono).
 *
 * Resampling: libsoxr at SOXR_HQ, float32 mono, one stream fed in pieces and flushed. SOXR_HQ is what librosa uses by default (res_type "soxr_hq", through
 * python-soxr's resample()), which is how transformers' load_audio brings files to the
 * feature extractor's 16 kHz. libsoxr's flushed output has round(n_in × rate_out / rate_in)
 * samples, the length python-soxr's resample() returns; we insist on that length (librosa
 * additionally pads or trims to ceil(n_in × ratio) with fix=True: at most one trailing zero
 * of difference, never a different sample).
 *
 * Ogg Vorbis headers are checked here before libsndfile sees them: libsndfile 1.2's Vorbis
 * open calls vorbis_info_init and, when a header packet is malformed or missing, returns
 * without vorbis_info_clear (libsndfile#922, xiph/vorbis#125), leaking ~5.7 KB per file —
 * a client could grow the daemon by sending bad files. So a Vorbis stream reaches libsndfile
 * only once its three header packets decode with libvorbis here (every libogg/libvorbis
 * state cleared on every path). Only single-stream Ogg Vorbis is accepted: libsndfile
 * decodes just the first link of a chained file (silently dropping the rest) and its
 * length scan keeps per-stream Vorbis state for the others; such files get a clear
 * refusal instead. */
#define _POSIX_C_SOURCE 200809L
#include "audio/audio-decode.h"

#include <math.h>
#include <ogg/ogg.h>
#include <sndfile.h>
#include <soxr.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <vorbis/codec.h>

#define DEFAULT_MAX_SECONDS 600.0
#define DEFAULT_MAX_CHANNELS 64u
#define DEFAULT_MIN_RATE 1000u
#define DEFAULT_MAX_RATE 384000u
/* Interleaved floats per sf_readf_float call: bounds the block buffer whatever the
 * channel count. */
#define BLOCK_VALUES 16384u

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- virtual I/O over a byte range ---- */

typedef struct mem_io {
    const uint8_t *data;
    sf_count_t len;
    sf_count_t pos;   /* always within [0, len] */
} mem_io;

static sf_count_t vio_get_filelen(void *user)
{
    return ((mem_io *)user)->len;
}

static sf_count_t vio_seek(sf_count_t offset, int whence, void *user)
{
    mem_io *m = user;
    sf_count_t base;
    switch (whence) {
    case SEEK_SET: base = 0; break;
    case SEEK_CUR: base = m->pos; break;
    case SEEK_END: base = m->len; break;
    default: return -1;
    }
    /* Refuse positions outside the bytes (and overflow) instead of wrapping. */
    if ((offset < 0 && -offset > base) || (offset > 0 && offset > m->len - base))
        return -1;
    m->pos = base + offset;
    return m->pos;
}

static sf_count_t vio_read(void *ptr, sf_count_t count, void *user)
{
    mem_io *m = user;
    if (count <= 0)
        return 0;
    sf_count_t avail = m->len - m->pos;
    if (count > avail)
        count = avail;
    memcpy(ptr, m->data + m->pos, (size_t)count);
    m->pos += count;
    return count;
}

static sf_count_t vio_write(const void *ptr, sf_count_t count, void *user)
{
    (void)ptr; (void)count; (void)user;
    return 0;   /* opened read-only */
}

static sf_count_t vio_tell(void *user)
{
    return ((mem_io *)user)->pos;
}

/* ---- format names ---- */

/* The short names of sndfile.h's enums (as python-soundfile spells them). */
static const char *major_name(int major)
{
    switch (major) {
    case SF_FORMAT_WAV: return "WAV";
    case SF_FORMAT_AIFF: return "AIFF";
    case SF_FORMAT_AU: return "AU";
    case SF_FORMAT_RAW: return "RAW";
    case SF_FORMAT_PAF: return "PAF";
    case SF_FORMAT_SVX: return "SVX";
    case SF_FORMAT_NIST: return "NIST";
    case SF_FORMAT_VOC: return "VOC";
    case SF_FORMAT_IRCAM: return "IRCAM";
    case SF_FORMAT_W64: return "W64";
    case SF_FORMAT_MAT4: return "MAT4";
    case SF_FORMAT_MAT5: return "MAT5";
    case SF_FORMAT_PVF: return "PVF";
    case SF_FORMAT_XI: return "XI";
    case SF_FORMAT_HTK: return "HTK";
    case SF_FORMAT_SDS: return "SDS";
    case SF_FORMAT_AVR: return "AVR";
    case SF_FORMAT_WAVEX: return "WAVEX";
    case SF_FORMAT_SD2: return "SD2";
    case SF_FORMAT_FLAC: return "FLAC";
    case SF_FORMAT_CAF: return "CAF";
    case SF_FORMAT_WVE: return "WVE";
    case SF_FORMAT_OGG: return "OGG";
    case SF_FORMAT_MPC2K: return "MPC2K";
    case SF_FORMAT_RF64: return "RF64";
    case 0x230000: return "MPEG";   /* SF_FORMAT_MPEG (libsndfile >= 1.1) */
    default: return NULL;
    }
}

static const char *subtype_name(int sub)
{
    switch (sub) {
    case SF_FORMAT_PCM_S8: return "PCM_S8";
    case SF_FORMAT_PCM_16: return "PCM_16";
    case SF_FORMAT_PCM_24: return "PCM_24";
    case SF_FORMAT_PCM_32: return "PCM_32";
    case SF_FORMAT_PCM_U8: return "PCM_U8";
    case SF_FORMAT_FLOAT: return "FLOAT";
    case SF_FORMAT_DOUBLE: return "DOUBLE";
    case SF_FORMAT_ULAW: return "ULAW";
    case SF_FORMAT_ALAW: return "ALAW";
    case SF_FORMAT_IMA_ADPCM: return "IMA_ADPCM";
    case SF_FORMAT_MS_ADPCM: return "MS_ADPCM";
    case SF_FORMAT_GSM610: return "GSM610";
    case SF_FORMAT_VOX_ADPCM: return "VOX_ADPCM";
    case SF_FORMAT_G721_32: return "G721_32";
    case SF_FORMAT_G723_24: return "G723_24";
    case SF_FORMAT_G723_40: return "G723_40";
    case SF_FORMAT_DWVW_12: return "DWVW_12";
    case SF_FORMAT_DWVW_16: return "DWVW_16";
    case SF_FORMAT_DWVW_24: return "DWVW_24";
    case SF_FORMAT_DWVW_N: return "DWVW_N";
    case SF_FORMAT_DPCM_8: return "DPCM_8";
    case SF_FORMAT_DPCM_16: return "DPCM_16";
    case SF_FORMAT_VORBIS: return "VORBIS";
    case SF_FORMAT_ALAC_16: return "ALAC_16";
    case SF_FORMAT_ALAC_20: return "ALAC_20";
    case SF_FORMAT_ALAC_24: return "ALAC_24";
    case SF_FORMAT_ALAC_32: return "ALAC_32";
    /* Enum values of newer libsndfiles (the build accepts >= 1.0.28), by number. */
    case 0x0022: return "NMS_ADPCM_16";    /* SF_FORMAT_NMS_ADPCM_* (1.0.29) */
    case 0x0023: return "NMS_ADPCM_24";
    case 0x0024: return "NMS_ADPCM_32";
    case 0x0064: return "OPUS";            /* SF_FORMAT_OPUS (1.0.29) */
    case 0x0080: return "MPEG_LAYER_I";    /* SF_FORMAT_MPEG_LAYER_* (1.1.0) */
    case 0x0081: return "MPEG_LAYER_II";
    case 0x0082: return "MPEG_LAYER_III";
    default: return NULL;
    }
}

/* A name for a format code this table does not know (a newer libsndfile): the
 * extension or description libsndfile itself gives through SFC_GET_FORMAT_INFO. */
static void libsndfile_name(int code, char *buf, size_t cap)
{
    SF_FORMAT_INFO fi = { .format = code };
    if (sf_command(NULL, SFC_GET_FORMAT_INFO, &fi, sizeof fi) == 0 && fi.name != NULL)
        snprintf(buf, cap, "%s", fi.extension ? fi.extension : fi.name);
    else
        snprintf(buf, cap, "0x%x", (unsigned)code);
}

static void format_name(int format, char out[32])
{
    char mj[32], sb[32];
    const char *m = major_name(format & SF_FORMAT_TYPEMASK);
    const char *s = subtype_name(format & SF_FORMAT_SUBMASK);
    if (m)
        snprintf(mj, sizeof mj, "%s", m);
    else
        libsndfile_name(format & SF_FORMAT_TYPEMASK, mj, sizeof mj);
    if (s)
        snprintf(sb, sizeof sb, "%s", s);
    else
        libsndfile_name(format & SF_FORMAT_SUBMASK, sb, sizeof sb);
    /* Both parts are at most 31 characters; keep the major name whole if it must shrink. */
    snprintf(out, 32, "%.15s %.15s", mj, sb);
}

/* ---- Ogg Vorbis header check (see the top of the file) ---- */

#define OGG_CHUNK 65536u

/* Where libsndfile starts recognising the format: after any ID3v2 tags it skips (10-byte
 * header with a syncsafe size). Checking from a wrong place only checks more. */
static size_t skip_id3v2(const uint8_t *d, size_t len)
{
    size_t off = 0;
    while (len - off >= 10 && memcmp(d + off, "ID3", 3) == 0) {
        size_t sz = ((size_t)(d[off + 6] & 0x7f) << 21) | ((size_t)(d[off + 7] & 0x7f) << 14) |
                    ((size_t)(d[off + 8] & 0x7f) << 7) | (size_t)(d[off + 9] & 0x7f);
        if (sz + 10 >= len - off)
            break;
        off += sz + 10;
    }
    return off;
}

static const char *vorbis_err_name(int e)
{
    switch (e) {
    case OV_ENOTVORBIS: return "not a Vorbis header";
    case OV_EBADHEADER: return "malformed header";
    case OV_EFAULT: return "out of order or internal fault";
    case OV_EIMPL: return "unsupported Vorbis feature";
    default: return "libvorbis refused it";
    }
}

static const char *const header_names[3] = { "identification", "comment", "setup" };

/* GM_OK when the bytes are not Ogg, the first logical stream is not Vorbis (Opus, FLAC,
 * …: libsndfile's own readers), or a single Vorbis stream whose three header packets
 * decode; otherwise a GM_ERR_FORMAT "audio: Ogg Vorbis: …". Pages are taken the way
 * libsndfile takes them (libogg from the first byte, bad pages skipped), so the packets
 * checked are the packets libsndfile would read. */
static int check_ogg_vorbis(const uint8_t *data, size_t len, gm_error *err)
{
    size_t off = skip_id3v2(data, len);
    if (len - off < 4 || memcmp(data + off, "OggS", 4) != 0)
        return GM_OK;
    data += off;
    len -= off;

    ogg_sync_state oy;
    ogg_stream_state os;
    vorbis_info vi;
    vorbis_comment vc;
    ogg_sync_init(&oy);
    vorbis_info_init(&vi);
    vorbis_comment_init(&vc);
    int have_stream = 0, is_vorbis = 0, headers = 0, rc = GM_OK;
    long serial = 0;
    size_t fed = 0;
    for (;;) {
        ogg_page og;
        int r = ogg_sync_pageout(&oy, &og);
        if (r < 0)
            continue;   /* bytes skipped up to the next page that checks out */
        if (r == 0) {
            if (fed == len)
                break;
            size_t n = len - fed < OGG_CHUNK ? len - fed : OGG_CHUNK;
            char *buf = ogg_sync_buffer(&oy, (long)n);
            if (buf == NULL) {
                rc = gm_set_error(err, GM_ERR_NOMEM, "audio: Ogg: out of memory");
                break;
            }
            memcpy(buf, data + fed, n);
            ogg_sync_wrote(&oy, (long)n);
            fed += n;
            continue;
        }
        if (!have_stream) {
            serial = ogg_page_serialno(&og);
            ogg_stream_init(&os, (int)serial);
            have_stream = 1;
            ogg_stream_pagein(&os, &og);
            ogg_packet op;
            if (ogg_stream_packetout(&os, &op) != 1 || op.bytes < 7 ||
                memcmp(op.packet, "\x01vorbis", 7) != 0)
                break;   /* not Vorbis: nothing for this check */
            is_vorbis = 1;
            int e = vorbis_synthesis_headerin(&vi, &vc, &op);
            if (e != 0) {
                rc = gm_set_error(err, GM_ERR_FORMAT, "audio: Ogg Vorbis: header packet 1 "
                                  "(identification) is invalid: %s", vorbis_err_name(e));
                break;
            }
            headers = 1;
        } else {
            if (ogg_page_serialno(&og) != serial) {
                rc = gm_set_error(err, GM_ERR_FORMAT, "audio: Ogg Vorbis: more than one logical "
                                  "stream (serial numbers 0x%08lx and 0x%08lx; chained or "
                                  "multiplexed files are not accepted)",
                                  (unsigned long)(uint32_t)serial,
                                  (unsigned long)(uint32_t)ogg_page_serialno(&og));
                break;
            }
            if (headers < 3)
                ogg_stream_pagein(&os, &og);
        }
        while (headers < 3 && rc == GM_OK) {
            ogg_packet op;
            int p = ogg_stream_packetout(&os, &op);
            if (p == 0)
                break;
            if (p < 0) {
                rc = gm_set_error(err, GM_ERR_FORMAT, "audio: Ogg Vorbis: a page is missing or "
                                  "corrupt before header packet %d (%s)", headers + 1,
                                  header_names[headers]);
                break;
            }
            int e = vorbis_synthesis_headerin(&vi, &vc, &op);
            if (e != 0) {
                rc = gm_set_error(err, GM_ERR_FORMAT, "audio: Ogg Vorbis: header packet %d (%s) "
                                  "is invalid: %s", headers + 1, header_names[headers],
                                  vorbis_err_name(e));
                break;
            }
            headers++;
        }
        if (rc != GM_OK)
            break;
        /* Past the headers only the serial numbers matter: pages are not kept. */
    }
    if (rc == GM_OK && is_vorbis && headers < 3)
        rc = gm_set_error(err, GM_ERR_FORMAT, "audio: Ogg Vorbis: the stream ends after %d of its "
                          "3 header packets (%s header missing)", headers, header_names[headers]);
    vorbis_comment_clear(&vc);
    vorbis_info_clear(&vi);
    if (have_stream)
        ogg_stream_clear(&os);
    ogg_sync_clear(&oy);
    return rc;
}

/* ---- decoding ---- */

static void resolve_limits(const gm_audio_limits *lim, double *max_s, uint32_t *max_ch,
                           uint32_t *min_rate, uint32_t *max_rate)
{
    *max_s = lim && lim->max_seconds > 0 ? lim->max_seconds : DEFAULT_MAX_SECONDS;
    *max_ch = lim && lim->max_channels ? lim->max_channels : DEFAULT_MAX_CHANNELS;
    *min_rate = lim && lim->min_rate ? lim->min_rate : DEFAULT_MIN_RATE;
    *max_rate = lim && lim->max_rate ? lim->max_rate : DEFAULT_MAX_RATE;
}

int gm_audio_decode(const uint8_t *data, size_t len, const gm_audio_limits *lim,
                    gm_audio_pcm *out, gm_error *err)
{
    if (out == NULL)
        return gm_set_error(err, GM_ERR_INVALID, "audio: no output given");
    memset(out, 0, sizeof *out);
    if (data == NULL || len == 0)
        return gm_set_error(err, GM_ERR_FORMAT, "audio: empty input (0 bytes)");
    if ((uint64_t)len > (uint64_t)INT64_MAX)
        return gm_set_error(err, GM_ERR_RANGE, "audio: input too large (%zu bytes)", len);

    double max_s;
    uint32_t max_ch, min_rate, max_rate;
    resolve_limits(lim, &max_s, &max_ch, &min_rate, &max_rate);

    int vrc = check_ogg_vorbis(data, len, err);
    if (vrc != GM_OK) {
        snprintf(out->format, sizeof out->format, "OGG VORBIS");
        return vrc;
    }

    mem_io m = { .data = data, .len = (sf_count_t)len, .pos = 0 };
    SF_VIRTUAL_IO vio = { vio_get_filelen, vio_seek, vio_read, vio_write, vio_tell };
    SF_INFO info;
    memset(&info, 0, sizeof info);   /* format 0: libsndfile recognises it from the bytes */
    SNDFILE *sf = sf_open_virtual(&vio, SFM_READ, &info, &m);
    if (sf == NULL) {
        const char *why = sf_strerror(NULL);
        /* libsndfile says this when its MPEG reader gives up on a stream; there is no file
         * here, so say what it means. */
        if (strstr(why, "does not exist") != NULL)
            why = "unreadable or truncated stream";
        return gm_set_error(err, GM_ERR_FORMAT, "audio: not a sound file libsndfile reads "
                            "(%zu bytes): %s", len, why);
    }

    int rc = GM_OK;
    float *block = NULL, *mono = NULL;
    format_name(info.format, out->format);
    int major = info.format & SF_FORMAT_TYPEMASK;
    if (major == SF_FORMAT_RAW) {
        /* Never guess a headerless layout. */
        rc = gm_set_error(err, GM_ERR_FORMAT, "audio: headerless (RAW) data is not accepted");
        goto done;
    }
    if (info.channels <= 0 || (uint32_t)info.channels > max_ch) {
        rc = gm_set_error(err, GM_ERR_RANGE, "audio: %s: %d channels (accepted: 1 to %u)",
                          out->format, info.channels, max_ch);
        goto done;
    }
    if (info.samplerate <= 0 || (uint32_t)info.samplerate < min_rate ||
        (uint32_t)info.samplerate > max_rate) {
        rc = gm_set_error(err, GM_ERR_RANGE, "audio: %s: sample rate %d Hz (accepted: %u to %u Hz)",
                          out->format, info.samplerate, min_rate, max_rate);
        goto done;
    }

    const size_t ch = (size_t)info.channels;
    const uint32_t rate = (uint32_t)info.samplerate;
    /* Frames allowed: max_seconds × rate (rounded down), checked against a cap that keeps
     * the float buffer's byte count representable. */
    double max_frames_d = floor(max_s * (double)rate);
    if (max_frames_d < 1)
        max_frames_d = 1;
    if (max_frames_d > (double)(SIZE_MAX / sizeof(float) / 2))
        max_frames_d = (double)(SIZE_MAX / sizeof(float) / 2);
    const size_t max_frames = (size_t)max_frames_d;

    size_t block_frames = BLOCK_VALUES / ch;
    if (block_frames == 0)
        block_frames = 1;
    block = malloc(block_frames * ch * sizeof *block);
    if (block == NULL) {
        rc = gm_set_error(err, GM_ERR_NOMEM, "audio: out of memory for a read block");
        goto done;
    }

    size_t n = 0, cap = 0;
    const float inv_ch = 1.0f / (float)ch;
    for (;;) {
        /* Ask for one frame beyond the limit at most, so exceeding it is seen without
         * reading (or keeping) more. */
        size_t want = block_frames;
        if (n + want > max_frames + 1)
            want = max_frames + 1 - n;
        if (want == 0)
            break;
        sf_count_t got = sf_readf_float(sf, block, (sf_count_t)want);
        if (got <= 0)
            break;
        if ((size_t)got > want)
            got = (sf_count_t)want;   /* defensive: never trust more than was asked */
        if (n + (size_t)got > cap) {
            size_t ncap = cap ? cap * 2 : block_frames * 4;
            if (ncap < n + (size_t)got)
                ncap = n + (size_t)got;
            if (ncap > max_frames + block_frames)
                ncap = max_frames + block_frames;
            float *nm = realloc(mono, ncap * sizeof *nm);
            if (nm == NULL) {
                rc = gm_set_error(err, GM_ERR_NOMEM, "audio: out of memory after %zu samples", n);
                goto done;
            }
            mono = nm;
            cap = ncap;
        }
        for (size_t f = 0; f < (size_t)got; f++) {
            const float *fr = block + f * ch;
            float acc = fr[0];
            for (size_t c = 1; c < ch; c++)
                acc += fr[c];
            float v = ch == 1 ? acc : acc * inv_ch;
            if (!isfinite(v)) {
                rc = gm_set_error(err, GM_ERR_FORMAT, "audio: %s: sample %zu is not a finite number",
                                  out->format, n + f);
                goto done;
            }
            mono[n + f] = v;
        }
        n += (size_t)got;
        if (n > max_frames) {
            rc = gm_set_error(err, GM_ERR_LIMIT, "audio: %s: longer than the %.6g s duration limit "
                              "(more than %zu frames at %u Hz)", out->format, max_s, max_frames, rate);
            goto done;
        }
    }
    int sferr = sf_error(sf);
    if (sferr != SF_ERR_NO_ERROR) {
        rc = gm_set_error(err, GM_ERR_FORMAT, "audio: %s: corrupt data after %zu frames: %s",
                          out->format, n, sf_strerror(sf));
        goto done;
    }
    /* A header count libsndfile trusts (it clamps a WAV's data size to the bytes present)
     * that is larger than what decoded means the stream stops early: a truncated FLAC,
     * Ogg or AIFF. MPEG counts are estimates (from a Xing tag or the file size), so a
     * short MPEG stream keeps what decoded, as players do. */
    if (major != 0x230000 && info.frames > 0 && info.frames < SF_COUNT_MAX &&
        (uint64_t)n < (uint64_t)info.frames && n <= max_frames) {
        rc = gm_set_error(err, GM_ERR_FORMAT, "audio: %s: truncated: the header promises %lld "
                          "frames, only %zu decode", out->format, (long long)info.frames, n);
        goto done;
    }
    if (n == 0) {
        rc = gm_set_error(err, GM_ERR_FORMAT, "audio: %s: no audio frames (zero-length sound)",
                          out->format);
        goto done;
    }
    out->rate = rate;
    out->channels = (uint32_t)ch;
    out->n_samples = n;
    out->samples = mono;
    mono = NULL;

done:
    free(block);
    free(mono);
    sf_close(sf);
    if (rc != GM_OK) {
        char fmt[32];
        memcpy(fmt, out->format, sizeof fmt);
        memset(out, 0, sizeof *out);
        memcpy(out->format, fmt, sizeof fmt);   /* what was recognised, for diagnostics */
    }
    return rc;
}

void gm_audio_pcm_free(gm_audio_pcm *pcm)
{
    if (pcm == NULL)
        return;
    free(pcm->samples);
    pcm->samples = NULL;
    pcm->n_samples = 0;
}

/* ---- resampling ---- */

int gm_audio_resample(const float *in, size_t n_in, uint32_t rate_in, uint32_t rate_out,
                      float **out, size_t *n_out, gm_error *err)
{
    if (out == NULL || n_out == NULL)
        return gm_set_error(err, GM_ERR_INVALID, "audio: resample: no output given");
    *out = NULL;
    *n_out = 0;
    if (rate_in == 0 || rate_out == 0)
        return gm_set_error(err, GM_ERR_INVALID, "audio: resample: zero sample rate (%u -> %u Hz)",
                            rate_in, rate_out);
    if (n_in == 0)
        return gm_set_error(err, GM_ERR_INVALID, "audio: resample: no samples");
    if (in == NULL)
        return gm_set_error(err, GM_ERR_INVALID, "audio: resample: no input samples");

    /* The length libsoxr gives once flushed (and python-soxr returns): n_in × rate_out /
     * rate_in rounded half up (libsoxr's rounding, checked at exact halves). */
    uint64_t want64;
    if ((uint64_t)n_in <= UINT64_MAX / 2 / rate_out)
        want64 = ((uint64_t)n_in * rate_out * 2 + rate_in) / (2 * (uint64_t)rate_in);
    else
        want64 = (uint64_t)floor((double)n_in * (double)rate_out / (double)rate_in + 0.5);
    if (want64 > SIZE_MAX / sizeof(float) / 2)
        return gm_set_error(err, GM_ERR_RANGE, "audio: resample: %zu samples at %u -> %u Hz is too long",
                            n_in, rate_in, rate_out);
    size_t want = (size_t)want64;
    if (want == 0)
        return gm_set_error(err, GM_ERR_INVALID, "audio: resample: %zu samples at %u Hz give no "
                            "sample at %u Hz", n_in, rate_in, rate_out);

    float *y = malloc(want * sizeof *y);
    if (y == NULL)
        return gm_set_error(err, GM_ERR_NOMEM, "audio: resample: out of memory for %zu samples", want);
    if (rate_in == rate_out) {
        memcpy(y, in, n_in * sizeof *y);
        *out = y;
        *n_out = n_in;
        return GM_OK;
    }

    soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
    soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
    soxr_runtime_spec_t rt = soxr_runtime_spec(1);   /* no threads of its own */
    soxr_error_t e = NULL;
    soxr_t sx = soxr_create((double)rate_in, (double)rate_out, 1, &e, &io, &q, &rt);
    if (sx == NULL || e != NULL) {
        free(y);
        soxr_delete(sx);
        return gm_set_error(err, GM_ERR_FORMAT, "audio: resample %u -> %u Hz: %s", rate_in,
                            rate_out, e ? e : "libsoxr refused the rates");
    }
    /* Fed in pieces of about 3 s of output: one soxr_process over a long input makes libsoxr
     * buffer all of it (python-soxr divides its input for the same reason); the result is
     * the same stream either way. Then an empty input flushes the filter's tail. */
    size_t chunk = (size_t)(48000.0 * (double)rate_in / (double)rate_out);
    if (chunk == 0)
        chunk = 1;
    size_t done = 0, odone = 0;
    for (size_t i = 0; i < n_in && e == NULL; i += chunk) {
        size_t k = n_in - i < chunk ? n_in - i : chunk;
        odone = 0;
        e = soxr_process(sx, in + i, k, NULL, y + done, want - done, &odone);
        done += odone;
    }
    while (e == NULL && done < want) {
        odone = 0;
        e = soxr_process(sx, NULL, 0, NULL, y + done, want - done, &odone);
        done += odone;
        if (odone == 0)
            break;
    }
    soxr_delete(sx);
    if (e != NULL) {
        free(y);
        return gm_set_error(err, GM_ERR_FORMAT, "audio: resample %u -> %u Hz failed: %s",
                            rate_in, rate_out, e);
    }
    if (done != want) {
        free(y);
        return gm_set_error(err, GM_ERR_FORMAT, "audio: resample %u -> %u Hz gave %zu samples, "
                            "expected %zu", rate_in, rate_out, done, want);
    }
    /* Finite input can still overflow the filter (float WAVs may hold values near
     * FLT_MAX): refuse rather than hand infinities to the features. */
    for (size_t i = 0; i < done; i++)
        if (!isfinite(y[i])) {
            free(y);
            return gm_set_error(err, GM_ERR_RANGE, "audio: resample %u -> %u Hz: output sample %zu "
                                "is not finite (input values too large)", rate_in, rate_out, i);
        }
    *out = y;
    *n_out = done;
    return GM_OK;
}

int gm_audio_load_16k(const uint8_t *data, size_t len, const gm_audio_limits *lim,
                      gm_audio_pcm *out, gm_audio_timing *timing, gm_error *err)
{
    if (timing)
        memset(timing, 0, sizeof *timing);
    double t0 = now_s();
    int rc = gm_audio_decode(data, len, lim, out, err);
    double t1 = now_s();
    if (timing)
        timing->decode_s = t1 - t0;
    if (rc != GM_OK || out->rate == GM_AUDIO_SAMPLE_RATE)
        return rc;
    float *y = NULL;
    size_t ny = 0;
    rc = gm_audio_resample(out->samples, out->n_samples, out->rate, GM_AUDIO_SAMPLE_RATE,
                           &y, &ny, err);
    if (timing)
        timing->resample_s = now_s() - t1;
    if (rc != GM_OK) {
        gm_audio_pcm_free(out);
        return rc;
    }
    /* rate and channels keep describing the source; the samples are now at 16 kHz. */
    free(out->samples);
    out->samples = y;
    out->n_samples = ny;
    return GM_OK;
}
