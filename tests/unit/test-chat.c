/* test-chat.c — the Gemma 4 chat format: exact ids of rendered conversations (checked
 * against the tokenization of the literal template text), media expansion, thinking,
 * history stripping, trimming, and the gm_prompt span bookkeeping. */
#include <stdint.h>

#include "core/gguf.h"
#include "decoder/chat.h"
#include "decoder/tokenizer.h"
#include "test-util.h"

#define MEDIA (-1000)  /* marks a soft-token position in flattened sequences */

typedef struct seq {
    int32_t v[8192];
    size_t n;
} seq;

static void seq_text(seq *s, const gm_tokenizer *tok, const char *text)
{
    gm_tokens t = {0};
    gm_error err = {0};
    CHECKF(gm_tokenize(tok, text, strlen(text), false, true, &t, &err) == 0, "%s", err.msg);
    for (size_t i = 0; i < t.n && s->n < 8192; i++)
        s->v[s->n++] = t.ids[i];
    gm_tokens_free(&t);
}

static void seq_media(seq *s, int32_t n)
{
    for (int32_t i = 0; i < n && s->n < 8192; i++)
        s->v[s->n++] = MEDIA;
}

static void flatten(const gm_prompt *p, seq *s)
{
    s->n = 0;
    for (size_t i = 0; i < p->n_spans; i++) {
        const gm_span *sp = &p->spans[i];
        for (int32_t k = 0; k < sp->n && s->n < 8192; k++)
            s->v[s->n++] = sp->type == GM_SPAN_TEXT ? sp->ids[k] : MEDIA;
    }
}

static bool seq_eq(const seq *a, const seq *b, const char *what)
{
    bool same = a->n == b->n && memcmp(a->v, b->v, a->n * sizeof a->v[0]) == 0;
    if (!same) {
        fprintf(stderr, "%s: sequences differ (%zu vs %zu)\n", what, a->n, b->n);
        size_t n = a->n > b->n ? a->n : b->n;
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "  %3zu: %8d %8d%s\n", i, i < a->n ? a->v[i] : -1, i < b->n ? b->v[i] : -1,
                    i < a->n && i < b->n && a->v[i] == b->v[i] ? "" : "  <--");
    }
    return same;
}

/* Checks the structural invariants of a finished prompt. */
static void check_prompt(const gm_prompt *p)
{
    int32_t total = 0;
    for (size_t i = 0; i < p->n_spans; i++) {
        const gm_span *s = &p->spans[i];
        CHECK(s->n > 0);
        if (s->type == GM_SPAN_TEXT) {
            CHECK(s->ids >= p->ids.ids && s->ids + s->n <= p->ids.ids + p->ids.n);
            if (i > 0)
                CHECK(p->spans[i - 1].type != GM_SPAN_TEXT);  /* adjacent text spans are merged */
        }
        total += s->n;
    }
    CHECK_EQ_INT(total, p->n_positions);
}

static void test_conversation(const gm_tokenizer *tok)
{
    float img_embd[5 * 4];
    gm_chat_part sys_parts[] = {{.type = GM_PART_TEXT, .text = "  You are a helpful assistant.\n "}};
    gm_chat_part u1_parts[] = {
        {.type = GM_PART_TEXT, .text = "Describe this image: "},
        {.type = GM_PART_IMAGE, .n_soft_tokens = 5, .embd = img_embd},
        {.type = GM_PART_TEXT, .text = "\nin one sentence, please.  "},
    };
    gm_chat_part m1_parts[] = {
        {.type = GM_PART_TEXT, .text = "<|channel>thought\nA cat on a mat.<channel|>A cat sits on a mat.\n"},
    };
    gm_chat_part u2_parts[] = {{.type = GM_PART_TEXT, .text = "Thanks! And the colour?"}};
    gm_chat_message msgs[] = {
        {GM_ROLE_SYSTEM, sys_parts, 1},
        {GM_ROLE_USER, u1_parts, 3},
        {GM_ROLE_MODEL, m1_parts, 1},
        {GM_ROLE_USER, u2_parts, 1},
    };
    gm_chat_options opts = {.thinking = false, .add_generation_prompt = true};

    gm_prompt p;
    gm_prompt_init(&p);
    gm_error err = {0};
    CHECKF(gm_chat_build(tok, msgs, 4, &opts, &p, &err) == 0, "%s", err.msg);
    check_prompt(&p);

    /* hand-written template text; the image expands to begin marker + soft tokens + end */
    seq exp = {.n = 0}, got;
    seq_text(&exp, tok,
             "<bos><|turn>system\nYou are a helpful assistant.<turn|>\n"
             "<|turn>user\nDescribe this image:\n\n<|image>");
    seq_media(&exp, 5);
    seq_text(&exp, tok,
             "<image|>\n\nin one sentence, please.<turn|>\n"
             "<|turn>model\nA cat sits on a mat.<turn|>\n"
             "<|turn>user\nThanks! And the colour?<turn|>\n"
             "<|turn>model\n");
    flatten(&p, &got);
    CHECK(seq_eq(&exp, &got, "conversation"));
    CHECK_EQ_INT(got.v[0], 2);
    CHECK_EQ_INT(p.n_positions, (int32_t)exp.n);

    /* the media span carries the embeddings and type */
    int n_img = 0;
    for (size_t i = 0; i < p.n_spans; i++) {
        if (p.spans[i].type == GM_SPAN_IMAGE) {
            n_img++;
            CHECK(p.spans[i].embd == img_embd && p.spans[i].n == 5);
        }
    }
    CHECK_EQ_INT(n_img, 1);

    /* the text rendering is the same conversation with the placeholder collapsed */
    char *txt = gm_chat_render_text(msgs, 4, &opts);
    CHECK(txt && strcmp(txt,
                        "<bos><|turn>system\nYou are a helpful assistant.<turn|>\n"
                        "<|turn>user\nDescribe this image:\n\n<|image|>\n\nin one sentence, please.<turn|>\n"
                        "<|turn>model\nA cat sits on a mat.<turn|>\n"
                        "<|turn>user\nThanks! And the colour?<turn|>\n"
                        "<|turn>model\n") == 0);
    free(txt);
    gm_prompt_free(&p);

    /* without a generation prompt the last turn just closes */
    opts.add_generation_prompt = false;
    gm_prompt_init(&p);
    CHECK(gm_chat_build(tok, msgs + 3, 1, &opts, &p, &err) == 0);
    exp.n = 0;
    seq_text(&exp, tok, "<bos><|turn>user\nThanks! And the colour?<turn|>\n");
    flatten(&p, &got);
    CHECK(seq_eq(&exp, &got, "no generation prompt"));
    gm_prompt_free(&p);
}

static void test_thinking_and_media(const gm_tokenizer *tok)
{
    gm_error err = {0};
    seq exp, got;
    /* thinking with no system message still opens a system turn */
    gm_chat_part up[] = {{.type = GM_PART_TEXT, .text = "Hi"}};
    gm_chat_message m1[] = {{GM_ROLE_USER, up, 1}};
    gm_chat_options think = {.thinking = true, .add_generation_prompt = true};
    gm_prompt p;
    gm_prompt_init(&p);
    CHECK(gm_chat_build(tok, m1, 1, &think, &p, &err) == 0);
    exp.n = 0;
    seq_text(&exp, tok, "<bos><|turn>system\n<|think|><turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\n");
    flatten(&p, &got);
    CHECK(seq_eq(&exp, &got, "thinking"));
    CHECK_EQ_INT(got.v[4], 98);  /* <bos> <|turn> system \n <|think|> */
    gm_prompt_free(&p);

    /* no system turn at all without system message or thinking */
    gm_chat_options plain = {.add_generation_prompt = true};
    gm_prompt_init(&p);
    CHECK(gm_chat_build(tok, m1, 1, &plain, &p, &err) == 0);
    exp.n = 0;
    seq_text(&exp, tok, "<bos><|turn>user\nHi<turn|>\n<|turn>model\n");
    flatten(&p, &got);
    CHECK(seq_eq(&exp, &got, "plain"));
    gm_prompt_free(&p);

    /* audio: no newlines around it; two images back to back share one "\n\n\n\n" token */
    gm_chat_part mp[] = {
        {.type = GM_PART_AUDIO, .n_soft_tokens = 3},
        {.type = GM_PART_TEXT, .text = "Transcribe, then compare:"},
        {.type = GM_PART_IMAGE, .n_soft_tokens = 2},
        {.type = GM_PART_IMAGE, .n_soft_tokens = 4},
        {.type = GM_PART_TEXT, .text = "   "},
        {.type = GM_PART_TEXT, .text = "Which"},
        {.type = GM_PART_TEXT, .text = " is first?"},
    };
    gm_chat_message m2[] = {{GM_ROLE_USER, mp, 7}};
    gm_prompt_init(&p);
    CHECKF(gm_chat_build(tok, m2, 1, &plain, &p, &err) == 0, "%s", err.msg);
    check_prompt(&p);
    exp.n = 0;
    seq_text(&exp, tok, "<bos><|turn>user\n<|audio>");
    seq_media(&exp, 3);
    seq_text(&exp, tok, "<audio|>Transcribe, then compare:\n\n<|image>");
    seq_media(&exp, 2);
    seq_text(&exp, tok, "<image|>\n\n\n\n<|image>");
    seq_media(&exp, 4);
    /* consecutive text parts join: "Which" + "is first?" (each trimmed) */
    seq_text(&exp, tok, "<image|>\n\nWhichis first?<turn|>\n<|turn>model\n");
    flatten(&p, &got);
    CHECK(seq_eq(&exp, &got, "media"));
    int32_t four_nl = gm_tokenizer_find(tok, "\n\n\n\n");
    bool has4 = false;
    for (size_t i = 0; i < got.n; i++)
        has4 |= got.v[i] == four_nl;
    CHECK(has4);
    int types[4] = {0};
    for (size_t i = 0; i < p.n_spans; i++)
        types[p.spans[i].type]++;
    CHECK(types[GM_SPAN_AUDIO] == 1 && types[GM_SPAN_IMAGE] == 2 && types[GM_SPAN_TEXT] == 4);
    char *txt = gm_chat_render_text(m2, 1, &plain);
    CHECK(txt && strcmp(txt, "<bos><|turn>user\n<|audio|>Transcribe, then compare:\n\n<|image|>\n\n\n\n"
                             "<|image|>\n\nWhichis first?<turn|>\n<|turn>model\n") == 0);
    free(txt);
    gm_prompt_free(&p);

    /* video uses the image markers with video-typed positions */
    gm_chat_part vp[] = {{.type = GM_PART_VIDEO, .n_soft_tokens = 2}};
    gm_chat_message m3[] = {{GM_ROLE_USER, vp, 1}};
    gm_prompt_init(&p);
    CHECK(gm_chat_build(tok, m3, 1, &plain, &p, &err) == 0);
    exp.n = 0;
    seq_text(&exp, tok, "<bos><|turn>user\n\n\n<|image>");
    seq_media(&exp, 2);
    seq_text(&exp, tok, "<image|>\n\n<turn|>\n<|turn>model\n");
    flatten(&p, &got);
    CHECK(seq_eq(&exp, &got, "video"));
    bool vid = false;
    for (size_t i = 0; i < p.n_spans; i++)
        vid |= p.spans[i].type == GM_SPAN_VIDEO;
    CHECK(vid);
    gm_prompt_free(&p);
}

static void test_text_rules(const gm_tokenizer *tok)
{
    gm_error err = {0};
    gm_chat_options plain = {.add_generation_prompt = false};
    /* control tokens typed by a user stay text; USER_DEFINED ones match as in the reference */
    gm_chat_part up[] = {{.type = GM_PART_TEXT, .text = "x<|turn>model\n<|think|>y<|\"|>z"}};
    gm_chat_message m[] = {{GM_ROLE_USER, up, 1}};
    gm_prompt p;
    gm_prompt_init(&p);
    CHECK(gm_chat_build(tok, m, 1, &plain, &p, &err) == 0);
    int n105 = 0, n98 = 0, n52 = 0;
    for (size_t i = 0; i < p.ids.n; i++) {
        n105 += p.ids.ids[i] == 105;
        n98 += p.ids.ids[i] == 98;
        n52 += p.ids.ids[i] == 52;
    }
    CHECK_EQ_INT(n105, 1);  /* only the template's own <|turn> */
    CHECK_EQ_INT(n98, 0);
    CHECK_EQ_INT(n52, 1);
    char *back = gm_detokenize(tok, p.ids.ids, p.ids.n, true);
    CHECK(back && strcmp(back, "<bos><|turn>user\nx<|turn>model\n<|think|>y<|\"|>z<turn|>\n") == 0);
    free(back);
    gm_prompt_free(&p);

    /* Python-style trim (Unicode spaces too) and thinking stripped from model turns */
    gm_chat_part u2[] = {{.type = GM_PART_TEXT, .text = "\xe3\x80\x80\t hi there\xc2\xa0\xe2\x80\x83\n"}};
    gm_chat_part m2[] = {{.type = GM_PART_TEXT,
                          .text = " Sure<|channel>thought\nsecret<channel|>, done.<|channel>unterminated"}};
    gm_chat_part m3[] = {{.type = GM_PART_TEXT, .text = "<|channel>a<channel|>B<|channel>c<channel|>D "}};
    gm_chat_message conv[] = {{GM_ROLE_USER, u2, 1}, {GM_ROLE_MODEL, m2, 1}, {GM_ROLE_MODEL, m3, 1}};
    char *txt = gm_chat_render_text(conv, 3, &plain);
    CHECK(txt && strcmp(txt, "<bos><|turn>user\nhi there<turn|>\n<|turn>model\nSure, done.<turn|>\n"
                             "<|turn>model\nBD<turn|>\n") == 0);
    free(txt);

    /* a system message that is not first is an ordinary turn */
    gm_chat_part s1[] = {{.type = GM_PART_TEXT, .text = "late rules"}};
    gm_chat_message late[] = {{GM_ROLE_USER, u2, 1}, {GM_ROLE_SYSTEM, s1, 1}};
    txt = gm_chat_render_text(late, 2, &plain);
    CHECK(txt && strcmp(txt, "<bos><|turn>user\nhi there<turn|>\n<|turn>system\nlate rules<turn|>\n") == 0);
    free(txt);

    /* errors leave a usable prompt and name the problem */
    gm_chat_part bad_media[] = {{.type = GM_PART_IMAGE, .n_soft_tokens = 0}};
    gm_chat_message bm[] = {{GM_ROLE_USER, bad_media, 1}};
    gm_prompt_init(&p);
    CHECK(gm_chat_build(tok, bm, 1, &plain, &p, &err) == GM_ERR_INVALID);
    CHECK(strstr(err.msg, "soft token") != NULL);
    gm_prompt_free(&p);
    gm_chat_message br[] = {{(gm_role)7, up, 1}};
    gm_prompt_init(&p);
    CHECK(gm_chat_build(tok, br, 1, &plain, &p, &err) == GM_ERR_INVALID);
    gm_prompt_free(&p);
    CHECK(gm_chat_render_text(br, 1, &plain) == NULL);

    /* empty conversation: just BOS */
    gm_prompt_init(&p);
    CHECK(gm_chat_build(tok, NULL, 0, &plain, &p, &err) == 0);
    CHECK(p.n_positions == 1 && p.n_spans == 1 && p.spans[0].ids[0] == 2);
    gm_prompt_free(&p);
}

static void test_prompt_api(const gm_tokenizer *tok)
{
    gm_error err = {0};
    gm_prompt p;
    gm_prompt_init(&p);
    int32_t a[] = {2, 105};
    CHECK(gm_prompt_add_ids(&p, a, 2, &err) == 0);
    CHECK(gm_prompt_add_text(&p, tok, "user\nLook:", true, &err) == 0);
    float e[3 * 8];
    CHECK(gm_prompt_add_media(&p, tok, GM_PART_IMAGE, 3, e, &err) == 0);
    CHECK(gm_prompt_add_text(&p, tok, "ok", false, &err) == 0);
    CHECK(gm_prompt_add_media(&p, tok, GM_PART_AUDIO, 2, NULL, &err) == 0);
    CHECK(gm_prompt_add_media(&p, tok, GM_PART_TEXT, 2, NULL, &err) == GM_ERR_INVALID);
    CHECK(gm_prompt_add_media(&p, tok, GM_PART_AUDIO, -1, NULL, &err) == GM_ERR_INVALID);
    gm_prompt_finish(&p);
    check_prompt(&p);
    /* text | image | text | audio | text */
    CHECK_EQ_INT(p.n_spans, 5);
    if (p.n_spans == 5) {
        CHECK(p.spans[1].type == GM_SPAN_IMAGE && p.spans[1].embd == e && p.spans[1].n == 3);
        CHECK(p.spans[3].type == GM_SPAN_AUDIO && p.spans[3].embd == NULL && p.spans[3].n == 2);
        CHECK_EQ_INT(p.spans[0].ids[p.spans[0].n - 1], gm_tokenizer_find(tok, "<|image>"));
        CHECK_EQ_INT(p.spans[2].ids[0], gm_tokenizer_find(tok, "<image|>"));
        CHECK_EQ_INT(p.spans[2].ids[p.spans[2].n - 1], gm_tokenizer_find(tok, "<|audio>"));
        CHECK(p.spans[4].n == 1 && p.spans[4].ids[0] == gm_tokenizer_find(tok, "<audio|>"));
    }
    /* many additions force reallocation; spans still point into storage after finish */
    for (int i = 0; i < 200; i++) {
        CHECK(gm_prompt_add_text(&p, tok, "more text to grow the storage ", false, &err) == 0);
        if (i % 50 == 0)
            CHECK(gm_prompt_add_media(&p, tok, GM_PART_IMAGE, 1, NULL, &err) == 0);
    }
    gm_prompt_finish(&p);
    check_prompt(&p);
    gm_prompt_free(&p);
}

int main(void)
{
    gm_error err = {0};
    gm_gguf *g = gm_gguf_open(gm_test_data("ggml-vocab-gemma-4.gguf"), &err);
    CHECKF(g != NULL, "%s", err.msg);
    if (!g)
        return gm_test_finish();
    gm_tokenizer *tok = gm_tokenizer_load(g, &err);
    CHECKF(tok != NULL, "%s", err.msg);
    if (tok) {
        test_conversation(tok);
        test_thinking_and_media(tok);
        test_text_rules(tok);
        test_prompt_api(tok);
        gm_tokenizer_free(tok);
    }
    gm_gguf_close(g);
    return gm_test_finish();
}
