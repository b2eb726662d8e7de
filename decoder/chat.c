/* chat.c — the Gemma 4 chat template (gemma4-model.md §6.2-6.3) rendered straight to
 * token ids and media spans.
 *
 * Template text is tokenized with special tokens parsed; message text is tokenized without
 * (a user typing "<|turn>" gets text, not a turn marker; USER_DEFINED tokens such as
 * <|channel> still match, as they would in the reference). Consecutive template pieces are
 * joined before tokenizing, and so are consecutive text parts of one message, so the BPE
 * sees the same runs as it does on the whole rendered string: message text is trimmed and
 * always meets template text at a newline or a special token, which are run boundaries. */
#include "chat.h"

#include <stdlib.h>
#include <string.h>

/* ---- gm_prompt ---- */

void gm_prompt_init(gm_prompt *p)
{
    memset(p, 0, sizeof *p);
}

void gm_prompt_free(gm_prompt *p)
{
    free(p->spans);
    free(p->text_off);
    gm_tokens_free(&p->ids);
    memset(p, 0, sizeof *p);
}

static int prompt_new_span(gm_prompt *p, gm_error *err)
{
    if (p->n_spans == p->cap_spans) {
        size_t nc = p->cap_spans ? p->cap_spans * 2 : 16;
        gm_span *s = realloc(p->spans, nc * sizeof *s);
        if (!s)
            return gm_set_error(err, GM_ERR_NOMEM, "prompt: out of memory");
        p->spans = s;
        size_t *o = realloc(p->text_off, nc * sizeof *o);
        if (!o)
            return gm_set_error(err, GM_ERR_NOMEM, "prompt: out of memory");
        p->text_off = o;
        p->cap_spans = nc;
    }
    memset(&p->spans[p->n_spans], 0, sizeof p->spans[0]);
    p->text_off[p->n_spans] = 0;
    p->n_spans++;
    return GM_OK;
}

/* Accounts ids[n0..) as text positions: extends a trailing text span or opens one. */
static int prompt_commit_text(gm_prompt *p, size_t n0, gm_error *err)
{
    size_t added = p->ids.n - n0;
    if (added == 0)
        return GM_OK;
    if ((size_t)p->n_positions + added > INT32_MAX) {
        p->ids.n = n0;
        return gm_set_error(err, GM_ERR_RANGE, "prompt: more than %d positions", INT32_MAX);
    }
    if (p->n_spans == 0 || p->spans[p->n_spans - 1].type != GM_SPAN_TEXT) {
        int rc = prompt_new_span(p, err);
        if (rc) {
            p->ids.n = n0;
            return rc;
        }
        p->spans[p->n_spans - 1].type = GM_SPAN_TEXT;
        p->text_off[p->n_spans - 1] = n0;
    }
    p->spans[p->n_spans - 1].n += (int32_t)added;
    p->spans[p->n_spans - 1].ids = NULL;  /* fixed up by gm_prompt_finish */
    p->n_positions += (int32_t)added;
    return GM_OK;
}

static int prompt_add_text_n(gm_prompt *p, const gm_tokenizer *tok, const char *text, size_t len,
                             bool parse_special, gm_error *err)
{
    size_t n0 = p->ids.n;
    int rc = gm_tokenize(tok, text, len, false, parse_special, &p->ids, err);
    if (rc)
        return rc;
    return prompt_commit_text(p, n0, err);
}

int gm_prompt_add_text(gm_prompt *p, const gm_tokenizer *tok, const char *text, bool parse_special,
                       gm_error *err)
{
    if (!text)
        return gm_set_error(err, GM_ERR_INVALID, "prompt: NULL text");
    return prompt_add_text_n(p, tok, text, strlen(text), parse_special, err);
}

int gm_prompt_add_ids(gm_prompt *p, const int32_t *ids, size_t n, gm_error *err)
{
    size_t n0 = p->ids.n;
    for (size_t i = 0; i < n; i++) {
        if (gm_tokens_push(&p->ids, ids[i])) {
            p->ids.n = n0;
            return gm_set_error(err, GM_ERR_NOMEM, "prompt: out of memory");
        }
    }
    return prompt_commit_text(p, n0, err);
}

/* Begin / end marker texts per media type (§6.1, §6.3: video frames use the image markers). */
static void media_markers(gm_part_type type, const char **begin, const char **end)
{
    switch (type) {
    case GM_PART_AUDIO:
        *begin = "<|audio>";
        *end = "<audio|>";
        break;
    case GM_PART_IMAGE:
    case GM_PART_VIDEO:
    default:
        *begin = "<|image>";
        *end = "<image|>";
        break;
    }
}

int gm_prompt_add_media(gm_prompt *p, const gm_tokenizer *tok, gm_part_type type, int32_t n,
                        const float *embd, gm_error *err)
{
    gm_span_type st;
    switch (type) {
    case GM_PART_IMAGE: st = GM_SPAN_IMAGE; break;
    case GM_PART_VIDEO: st = GM_SPAN_VIDEO; break;
    case GM_PART_AUDIO: st = GM_SPAN_AUDIO; break;
    default:
        return gm_set_error(err, GM_ERR_INVALID, "prompt: part type %d is not media", (int)type);
    }
    if (n <= 0)
        return gm_set_error(err, GM_ERR_INVALID, "prompt: a media part needs at least one soft token "
                            "(got %d)", n);
    const char *bt, *et;
    media_markers(type, &bt, &et);
    int32_t b = gm_tokenizer_find(tok, bt), e = gm_tokenizer_find(tok, et);
    if (b < 0 || e < 0)
        return gm_set_error(err, GM_ERR_UNSUPPORTED, "prompt: the vocabulary has no %s token",
                            b < 0 ? bt : et);
    if ((int64_t)p->n_positions + n + 2 > INT32_MAX)
        return gm_set_error(err, GM_ERR_RANGE, "prompt: more than %d positions", INT32_MAX);
    /* on failure the prompt is restored to what it was */
    size_t n_spans0 = p->n_spans, n_ids0 = p->ids.n;
    int32_t n_pos0 = p->n_positions;
    int32_t last_n0 = n_spans0 ? p->spans[n_spans0 - 1].n : 0;
    int rc = gm_prompt_add_ids(p, &b, 1, err);
    if (!rc)
        rc = prompt_new_span(p, err);
    if (!rc) {
        gm_span *s = &p->spans[p->n_spans - 1];
        s->type = st;
        s->n = n;
        s->ids = NULL;
        s->embd = embd;
        p->n_positions += n;
        rc = gm_prompt_add_ids(p, &e, 1, err);
    }
    if (rc) {
        p->n_spans = n_spans0;
        p->ids.n = n_ids0;
        p->n_positions = n_pos0;
        if (n_spans0)
            p->spans[n_spans0 - 1].n = last_n0;
    }
    return rc;
}

void gm_prompt_finish(gm_prompt *p)
{
    for (size_t i = 0; i < p->n_spans; i++)
        if (p->spans[i].type == GM_SPAN_TEXT)
            p->spans[i].ids = p->ids.ids + p->text_off[i];
}

/* ---- text helpers ---- */

/* Length of the whitespace character at s (Python's str.isspace, which Jinja's trim
 * uses), or 0. */
static size_t space_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f))
        return 1;
    if (c == 0xc2 && n >= 2 && (s[1] == 0x85 || s[1] == 0xa0))
        return 2;
    if (c == 0xe1 && n >= 3 && s[1] == 0x9a && s[2] == 0x80)
        return 3;  /* U+1680 */
    if (c == 0xe2 && n >= 3) {
        if (s[1] == 0x80 && ((s[2] >= 0x80 && s[2] <= 0x8a) || s[2] == 0xa8 || s[2] == 0xa9 || s[2] == 0xaf))
            return 3;  /* U+2000-200A, 2028, 2029, 202F */
        if (s[1] == 0x81 && s[2] == 0x9f)
            return 3;  /* U+205F */
    }
    if (c == 0xe3 && n >= 3 && s[1] == 0x80 && s[2] == 0x80)
        return 3;  /* U+3000 */
    return 0;
}

/* Trims Python whitespace from both ends of s[0..n): returns the new start, sets *len. */
static const char *trim(const char *s, size_t n, size_t *len)
{
    const unsigned char *b = (const unsigned char *)s, *e = b + n;
    size_t k;
    while (b < e && (k = space_len(b, (size_t)(e - b))) > 0)
        b += k;
    /* from the end: step back over one character at a time */
    while (e > b) {
        const unsigned char *c = e - 1;
        while (c > b && (*c & 0xc0) == 0x80 && e - c < 4)
            c--;
        k = space_len(c, (size_t)(e - c));
        if (k == 0 || c + k != e)
            break;
        e = c;
    }
    *len = (size_t)(e - b);
    return (const char *)b;
}

/* The template's strip_thinking: drop every "<|channel>…<channel|>" (and an unterminated
 * "<|channel>…" at the end), then trim. malloc'd; *len set. */
static char *strip_thinking(const char *s, size_t *len)
{
    static const char open_t[] = "<|channel>", close_t[] = "<channel|>";
    size_t n = strlen(s);
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    const char *p = s, *end = s + n;
    /* split on <channel|>; keep each part up to its first <|channel> */
    for (;;) {
        const char *c = memmem(p, (size_t)(end - p), close_t, sizeof close_t - 1);
        const char *part_end = c ? c : end;
        const char *op = memmem(p, (size_t)(part_end - p), open_t, sizeof open_t - 1);
        const char *keep_end = op ? op : part_end;
        memcpy(out + o, p, (size_t)(keep_end - p));
        o += (size_t)(keep_end - p);
        if (!c)
            break;
        p = c + sizeof close_t - 1;
    }
    size_t tl;
    const char *t = trim(out, o, &tl);
    memmove(out, t, tl);
    out[tl] = '\0';
    *len = tl;
    return out;
}

/* ---- rendering ---- */

typedef struct strbuf {
    char *s;
    size_t n, cap;
    bool oom;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (b->n + n + 1 > nc)
            nc *= 2;
        char *p = realloc(b->s, nc);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = nc;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

/* Renders into either a prompt (ids and spans) or plain text. Pending template text and
 * pending message text are buffered separately and flushed when the kind changes. */
typedef struct renderer {
    const gm_tokenizer *tok;   /* NULL: text mode */
    gm_prompt *out;
    strbuf text;               /* text mode output */
    strbuf lit;                /* pending template text (special tokens parsed) */
    strbuf msg;                /* pending message text (not parsed) */
    gm_error *err;
    int rc;
} renderer;

static void r_flush(renderer *r)
{
    if (r->rc || !r->tok)
        return;
    if (r->lit.oom || r->msg.oom) {
        r->rc = gm_set_error(r->err, GM_ERR_NOMEM, "chat: out of memory");
        return;
    }
    /* at most one of the two is pending at a time */
    if (r->lit.n)
        r->rc = prompt_add_text_n(r->out, r->tok, r->lit.s, r->lit.n, true, r->err);
    else if (r->msg.n)
        r->rc = prompt_add_text_n(r->out, r->tok, r->msg.s, r->msg.n, false, r->err);
    r->lit.n = r->msg.n = 0;
}

static void r_lit(renderer *r, const char *s)
{
    size_t n = strlen(s);
    if (!r->tok) {
        sb_add(&r->text, s, n);
        return;
    }
    if (r->msg.n)
        r_flush(r);
    sb_add(&r->lit, s, n);
}

static void r_msg(renderer *r, const char *s, size_t n)
{
    if (n == 0)
        return;
    if (!r->tok) {
        sb_add(&r->text, s, n);
        return;
    }
    if (r->lit.n)
        r_flush(r);
    sb_add(&r->msg, s, n);
}

static void r_bos(renderer *r)
{
    if (!r->tok) {
        sb_add(&r->text, "<bos>", 5);
        return;
    }
    r_flush(r);
    int32_t bos = gm_tokenizer_bos(r->tok);
    if (bos < 0) {
        if (!r->rc)
            r->rc = gm_set_error(r->err, GM_ERR_UNSUPPORTED, "chat: the vocabulary has no BOS token");
        return;
    }
    if (!r->rc)
        r->rc = gm_prompt_add_ids(r->out, &bos, 1, r->err);
}

static void r_media(renderer *r, const gm_chat_part *part)
{
    if (!r->tok) {
        sb_add(&r->text, part->type == GM_PART_AUDIO ? "<|audio|>" : part->type == GM_PART_VIDEO
                                                                         ? "<|video|>" : "<|image|>", 9);
        return;
    }
    r_flush(r);
    if (!r->rc)
        r->rc = gm_prompt_add_media(r->out, r->tok, part->type, part->n_soft_tokens, part->embd, r->err);
}

static void render_parts(renderer *r, const gm_chat_message *m)
{
    for (size_t i = 0; i < m->n_parts && !r->rc; i++) {
        const gm_chat_part *part = &m->parts[i];
        switch (part->type) {
        case GM_PART_TEXT: {
            if (!part->text)
                break;
            if (m->role == GM_ROLE_MODEL) {
                size_t n;
                char *s = strip_thinking(part->text, &n);
                if (!s) {
                    r->rc = gm_set_error(r->err, GM_ERR_NOMEM, "chat: out of memory");
                    break;
                }
                r_msg(r, s, n);
                free(s);
            } else {
                size_t n;
                const char *s = trim(part->text, strlen(part->text), &n);
                r_msg(r, s, n);
            }
            break;
        }
        case GM_PART_IMAGE:
        case GM_PART_VIDEO:
            r_lit(r, "\n\n");
            r_media(r, part);
            r_lit(r, "\n\n");
            break;
        case GM_PART_AUDIO:
            r_media(r, part);
            break;
        default:
            r->rc = gm_set_error(r->err, GM_ERR_INVALID, "chat: unknown part type %d", (int)part->type);
            break;
        }
    }
}

static const char *role_name(gm_role role)
{
    switch (role) {
    case GM_ROLE_SYSTEM: return "system";
    case GM_ROLE_USER: return "user";
    case GM_ROLE_MODEL: return "model";
    }
    return NULL;
}

static int render(renderer *r, const gm_chat_message *msgs, size_t n_msgs, const gm_chat_options *opts)
{
    bool thinking = opts && opts->thinking;
    bool gen = opts && opts->add_generation_prompt;
    for (size_t i = 0; i < n_msgs; i++) {
        if (!role_name(msgs[i].role))
            return gm_set_error(r->err, GM_ERR_INVALID, "chat: message %zu has unknown role %d", i,
                                (int)msgs[i].role);
        if (msgs[i].n_parts && !msgs[i].parts)
            return gm_set_error(r->err, GM_ERR_INVALID, "chat: message %zu has NULL parts", i);
    }
    r_bos(r);
    size_t first = 0;
    bool has_system = n_msgs > 0 && msgs[0].role == GM_ROLE_SYSTEM;
    if (thinking || has_system) {
        r_lit(r, "<|turn>system\n");
        if (thinking)
            r_lit(r, "<|think|>");
        if (has_system) {
            render_parts(r, &msgs[0]);
            first = 1;
        }
        r_lit(r, "<turn|>\n");
    }
    for (size_t i = first; i < n_msgs && !r->rc; i++) {
        r_lit(r, "<|turn>");
        r_lit(r, role_name(msgs[i].role));
        r_lit(r, "\n");
        render_parts(r, &msgs[i]);
        r_lit(r, "<turn|>\n");
    }
    if (gen)
        r_lit(r, "<|turn>model\n");
    r_flush(r);
    return r->rc;
}

int gm_chat_build(const gm_tokenizer *tok, const gm_chat_message *msgs, size_t n_msgs,
                  const gm_chat_options *opts, gm_prompt *out, gm_error *err)
{
    if (!tok || !out || (n_msgs && !msgs))
        return gm_set_error(err, GM_ERR_INVALID, "chat: NULL argument");
    renderer r = {.tok = tok, .out = out, .err = err};
    int rc = render(&r, msgs, n_msgs, opts);
    free(r.lit.s);
    free(r.msg.s);
    gm_prompt_finish(out);
    return rc;
}

char *gm_chat_render_text(const gm_chat_message *msgs, size_t n_msgs, const gm_chat_options *opts)
{
    if (n_msgs && !msgs)
        return NULL;
    gm_error err = {0};
    renderer r = {.tok = NULL, .err = &err};
    int rc = render(&r, msgs, n_msgs, opts);
    if (rc || r.text.oom) {
        free(r.text.s);
        return NULL;
    }
    if (!r.text.s)
        return calloc(1, 1);
    return r.text.s;
}
