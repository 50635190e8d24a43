/* chat.c — the chat templates of chat.h, written out in C for one (system, user) turn ending with the
 * assistant header (add_generation_prompt=True):
 *   llama3  BOS <|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n
 *           Today Date: 26 Jul 2024\n\n{system|trim}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n
 *           {user|trim}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n   (Llama 3.1 Instruct)
 *   mistral BOS[INST] {system\n\n}{user} [/INST]               (Mistral-Instruct v0.1/v0.2; BOS = "<s>")
 *   chatml  <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n
 *           (Qwen2/Qwen2.5; no trim; default system text from the model's template when it has a literal one)
 *   none    the user text unchanged (a system text, if given, is prepended with a blank line)
 */
#include "tokenizer/chat.h"

#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_impl.h"

#define LLAMA3_DATE_BLOCK "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
#define CHATML_DEFAULT_SYSTEM "You are a helpful assistant."

static ks_status cat(ks_buf *b, const char *s) { return ks_buf_append(b, s, strlen(s)); }

/* Appends s without leading/trailing whitespace (Jinja's | trim). */
static ks_status cat_trimmed(ks_buf *b, const char *s) {
    size_t n = strlen(s), a = 0;
    while (a < n && (s[a] == ' ' || (s[a] >= '\t' && s[a] <= '\r'))) a++;
    while (n > a && (s[n - 1] == ' ' || (s[n - 1] >= '\t' && s[n - 1] <= '\r'))) n--;
    return ks_buf_append(b, s + a, n - a);
}

/* The BOS token's text, or `dflt` when the tokenizer has none. */
static ks_status cat_bos(ks_buf *b, const ks_tokenizer *tok, const char *dflt) {
    size_t n;
    const char *s = tok->bos >= 0 ? ks_tok_text(tok, tok->bos, &n) : NULL;
    return s ? ks_buf_append(b, s, n) : cat(b, dflt);
}

/* A literal default system prompt in the model's Jinja template: the text between "<|im_start|>system" plus a
 * newline (real, or the two characters \n inside a Jinja string) and "<|im_end|>", when it holds no template
 * syntax or quotes (else it is an expression, e.g. messages[0].content). */
static int template_system(const char *tpl, const char **s, size_t *n) {
    static const char head[] = "<|im_start|>system";
    for (const char *p = tpl ? strstr(tpl, head) : NULL; p; p = strstr(p + 1, head)) {
        const char *q = p + sizeof head - 1;
        if (*q == '\n') q++;
        else if (q[0] == '\\' && q[1] == 'n') q += 2;
        else continue;
        const char *end = strstr(q, "<|im_end|>");
        if (!end || end == q) continue;
        size_t len = (size_t)(end - q);
        if (memchr(q, '{', len) || memchr(q, '}', len) || memchr(q, '\'', len) || memchr(q, '"', len)) continue;
        *s = q;
        *n = len;
        return 1;
    }
    return 0;
}

static ks_status llama3(ks_buf *b, const ks_tokenizer *tok, const char *system, const char *user) {
    KS_TRY(cat_bos(b, tok, "<|begin_of_text|>"));
    KS_TRY(cat(b, "<|start_header_id|>system<|end_header_id|>\n\n" LLAMA3_DATE_BLOCK));
    if (system) KS_TRY(cat_trimmed(b, system));
    KS_TRY(cat(b, "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"));
    KS_TRY(cat_trimmed(b, user));
    return cat(b, "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

static ks_status mistral(ks_buf *b, const ks_tokenizer *tok, const char *system, const char *user) {
    KS_TRY(cat_bos(b, tok, "<s>"));
    KS_TRY(cat(b, "[INST] "));
    if (system) {
        KS_TRY(cat(b, system));
        KS_TRY(cat(b, "\n\n"));
    }
    KS_TRY(cat(b, user));
    return cat(b, " [/INST]");
}

static ks_status chatml(ks_buf *b, const ks_tokenizer *tok, const char *system, const char *user) {
    KS_TRY(cat(b, "<|im_start|>system\n"));
    const char *s;
    size_t n;
    if (system) KS_TRY(cat(b, system));
    else if (template_system(tok->chat_template, &s, &n)) KS_TRY(ks_buf_append(b, s, n));
    else KS_TRY(cat(b, CHATML_DEFAULT_SYSTEM));
    KS_TRY(cat(b, "<|im_end|>\n<|im_start|>user\n"));
    KS_TRY(cat(b, user));
    return cat(b, "<|im_end|>\n<|im_start|>assistant\n");
}

static ks_status none(ks_buf *b, const ks_tokenizer *tok, const char *system, const char *user) {
    (void)tok;
    if (system) {
        KS_TRY(cat(b, system));
        KS_TRY(cat(b, "\n\n"));
    }
    return cat(b, user);
}

typedef struct chat_format {
    const char *name;
    ks_status (*apply)(ks_buf *b, const ks_tokenizer *tok, const char *system, const char *user);
    int has_bos;
} chat_format;

static const chat_format formats[] = {
    {"llama3", llama3, 1}, {"mistral", mistral, 1}, {"chatml", chatml, 0},
    {"qwen2", chatml, 0},  {"none", none, 0},       {NULL, NULL, 0},
};

/* "auto": from the special tokens the vocabulary has. */
static const char *auto_format(const ks_tokenizer *tok) {
    if (ks_tokenizer_token_id(tok, "<|start_header_id|>") >= 0) return "llama3";
    if (ks_tokenizer_token_id(tok, "<|im_start|>") >= 0) return "chatml";
    if (!tok->byte_level && ks_tokenizer_token_id(tok, "<s>") >= 0) return "mistral";
    return "none";
}

ks_status ks_chat_apply(const ks_tokenizer *tok, const char *template_name, const char *system, const char *user,
                        char **out, int *has_bos) {
    *out = NULL;
    const char *name = strcmp(template_name, "auto") == 0 ? auto_format(tok) : template_name;
    const chat_format *f = formats;
    while (f->name && strcmp(f->name, name) != 0) f++;
    if (!f->name)
        return ks_fail(KS_ERR_ARG, "unknown chat template '%s' (known: auto, llama3, mistral, chatml, qwen2, none)",
                       template_name);
    ks_buf b = {0};
    ks_status st = f->apply(&b, tok, system, user);
    if (st == KS_OK) st = ks_buf_append(&b, "", 1);
    if (st != KS_OK) {
        ks_buf_free(&b);
        return st;
    }
    if (has_bos) *has_bos = f->has_bos;
    *out = b.data;
    return KS_OK;
}
