/* gguf_vocab.c — the vocabulary embedded in a GGUF file (`tokenizer.ggml.*`), turned into the same pipeline a
 * Hugging Face tokenizer.json of that family describes (tests/tools/gguf_tokenizer.py builds the identical
 * pipeline with the `tokenizers` package, which is how this file is checked):
 *
 *   model "gpt2"  byte-level BPE with the listed merges; `tokenizer.ggml.pre` picks the pre-tokenizer:
 *                 llama-bpe/llama3/llama-v3 -> Llama-3 regex + ignore_merges; qwen2 -> NFC + Qwen2 regex;
 *                 smollm -> individual digits, then the GPT-2 regex; default/gpt2 (and unknown names, with a
 *                 warning) -> the GPT-2 regex.
 *   model "llama" SentencePiece BPE: merges derived from the scores (a pair (a, b) merges when a+b is a NORMAL
 *                 token; higher score merges first, ties by id, splits of one token by (left id, right id)), byte
 *                 fallback, unk fused, "▁" for spaces and a "▁" prefix per segment (add_space_prefix).
 *
 * token_type CONTROL and UNKNOWN tokens become special added tokens, USER_DEFINED ones plain added tokens
 * (matched in the text before BPE, as llama.cpp and HF do). add_bos_token defaults to true for "llama" and
 * for the Llama-3 pre-tokenizer, false otherwise.
 */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "model/gguf.h"
#include "tokenizer/tok_impl.h"

enum { TOKEN_NORMAL = 1, TOKEN_UNKNOWN = 2, TOKEN_CONTROL = 3, TOKEN_USER_DEFINED = 4 };

#define SPACE_MARK "\xE2\x96\x81" /* U+2581 '▁' */

static int str_is(const char *s, size_t n, const char *lit) { return s && strlen(lit) == n && memcmp(s, lit, n) == 0; }

/* 's' string, 'i' integer or bool, 'f' floating point. */
static int elem_kind(ks_gguf_type t) {
    switch (t) {
    case KS_GGUF_STRING: return 's';
    case KS_GGUF_FLOAT32: case KS_GGUF_FLOAT64: return 'f';
    case KS_GGUF_ARRAY: return 0;
    default: return 'i';
    }
}

/* An array key whose elements are of kind `want` ('s', 'i', or 'n' = 'i' or 'f'), with n entries when n > 0.
 * Absent: NULL and KS_OK; another shape: NULL and an error naming the key. */
static const ks_gguf_kv *array_kv(const ks_gguf *g, const char *key, int want, uint64_t n, ks_status *st) {
    const ks_gguf_kv *kv = ks_gguf_find(g, key);
    *st = KS_OK;
    if (!kv) return NULL;
    int kind = kv->type == KS_GGUF_ARRAY ? elem_kind(kv->arr_type) : 0;
    int ok = want == 'n' ? kind == 'i' || kind == 'f' : kind == want;
    if (!ok || (n && kv->arr_n != n)) {
        *st = ks_fail(KS_ERR_FORMAT, "%s: metadata key '%s' must be an array of %s%s", g->file.path, key,
                      want == 's' ? "strings" : want == 'i' ? "integers" : "numbers",
                      n ? " with one entry per token" : "");
        return NULL;
    }
    return kv;
}

static ks_status opt_int(const ks_gguf *g, const char *key, int64_t *v) {
    return ks_gguf_find(g, key) ? ks_gguf_get_int(g, key, v) : KS_OK;
}

/* ---- pipelines ---- */

static ks_status norm_step(ks_tokenizer *tok, ks_norm_kind kind, const char *text, const char *with) {
    ks_norm_step st = {kind, text ? strdup(text) : NULL, with ? strdup(with) : NULL, 0, 0};
    if ((text && !st.text) || (with && !st.with)) {
        free(st.text);
        free(st.with);
        return ks_fail(KS_ERR_NOMEM, "out of memory building the tokenizer");
    }
    return ks_tok_add_norm(tok, st, tok->path);
}

static ks_status dec_step(ks_tokenizer *tok, ks_dec_kind kind, const char *text, const char *with, int start) {
    ks_dec_step st = {kind, text ? strdup(text) : NULL, with ? strdup(with) : NULL, start, 0};
    if ((text && !st.text) || (with && !st.with)) {
        free(st.text);
        free(st.with);
        return ks_fail(KS_ERR_NOMEM, "out of memory building the tokenizer");
    }
    return ks_tok_add_dec(tok, st, tok->path);
}

/* Pre-tokenizer of a byte-level vocabulary; *llama3 tells whether it is the Llama-3 family. */
static ks_status gpt2_pipeline(ks_tokenizer *tok, const char *pre, size_t pre_len, int *llama3) {
    *llama3 = str_is(pre, pre_len, "llama-bpe") || str_is(pre, pre_len, "llama3") || str_is(pre, pre_len, "llama-v3");
    tok->byte_level = 1;
    tok->ignore_merges = *llama3;
    if (*llama3) return ks_tok_add_split(tok, KS_REGEX_LLAMA3, tok->path);
    if (str_is(pre, pre_len, "qwen2")) {
        KS_TRY(norm_step(tok, KS_NORM_NFC, NULL, NULL));
        return ks_tok_add_split(tok, KS_REGEX_QWEN2, tok->path);
    }
    if (str_is(pre, pre_len, "smollm")) KS_TRY(ks_tok_add_split(tok, KS_REGEX_DIGITS, tok->path));
    else if (pre && !str_is(pre, pre_len, "default") && !str_is(pre, pre_len, "gpt2"))
        ks_log_warn("%s: tokenizer.ggml.pre '%.*s' is not known to kvscope; using the GPT-2 pre-tokenizer", tok->path,
                    (int)pre_len, pre);
    return ks_tok_add_split(tok, KS_REGEX_GPT2, tok->path);
}

static ks_status llama_pipeline(ks_tokenizer *tok, int add_space_prefix) {
    tok->byte_fallback = 1;
    tok->fuse_unk = 1;
    if (add_space_prefix) KS_TRY(norm_step(tok, KS_NORM_PREPEND, SPACE_MARK, NULL));
    KS_TRY(norm_step(tok, KS_NORM_REPLACE, " ", SPACE_MARK));
    KS_TRY(dec_step(tok, KS_DEC_REPLACE, SPACE_MARK, " ", 0));
    KS_TRY(dec_step(tok, KS_DEC_BYTE_FALLBACK, NULL, NULL, 0));
    KS_TRY(dec_step(tok, KS_DEC_FUSE, NULL, NULL, 0));
    return dec_step(tok, KS_DEC_STRIP, " ", NULL, add_space_prefix);
}

/* ---- merges ---- */

static ks_status gpt2_merges(ks_tokenizer *tok, const ks_gguf_kv *merges) {
    for (uint64_t i = 0; i < merges->arr_n; i++) {
        size_t len;
        const char *m = ks_gguf_arr_str(merges, i, &len);
        const char *sp = memchr(m, ' ', len);
        if (!sp || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - m)))
            return ks_fail(KS_ERR_FORMAT, "%s: entry %llu of 'tokenizer.ggml.merges' is not two tokens separated by "
                           "one space", tok->path, (unsigned long long)i);
        KS_TRY(ks_tok_add_merge(tok, m, (size_t)(sp - m), sp + 1, len - (size_t)(sp + 1 - m), (int32_t)i,
                                "tokenizer.ggml.merges"));
    }
    return KS_OK;
}

static _Thread_local const double *sort_scores;
static int score_cmp(const void *pa, const void *pb) {
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    if (sort_scores[a] != sort_scores[b]) return sort_scores[a] > sort_scores[b] ? -1 : 1;
    return a < b ? -1 : a > b;
}

typedef struct split {
    int32_t left, right; /* ids of the two halves */
    size_t cut;          /* byte offset of the split */
} split;

static int split_cmp(const void *pa, const void *pb) {
    const split *a = pa, *b = pb;
    if (a->left != b->left) return a->left < b->left ? -1 : 1;
    return a->right < b->right ? -1 : a->right > b->right;
}

/* SentencePiece BPE as merges, exactly as transformers' SentencePieceExtractor orders them: merged tokens by
 * score (descending; ties by id), and the splits of one token by (left id, right id). */
static ks_status score_merges(ks_tokenizer *tok, const ks_gguf_kv *tokens, const ks_gguf_kv *types,
                              const ks_gguf_kv *scores) {
    int32_t n = (int32_t)tokens->arr_n, m = 0, rank = 0;
    size_t max_len = 1;
    for (int32_t i = 0; i < n; i++) {
        size_t len;
        ks_gguf_arr_str(tokens, (uint64_t)i, &len);
        if (len > max_len) max_len = len;
    }
    double *sc = ks_malloc((size_t)n * sizeof *sc, "token scores");
    int32_t *order = ks_malloc((size_t)n * sizeof *order, "token order");
    split *splits = ks_malloc(max_len * sizeof *splits, "token splits");
    ks_status st = sc && order && splits ? KS_OK : KS_ERR_NOMEM;
    for (int32_t i = 0; i < n && st == KS_OK; i++) {
        sc[i] = scores ? ks_gguf_arr_float(scores, (uint64_t)i) : 0.0;
        if (!types || ks_gguf_arr_int(types, (uint64_t)i) == TOKEN_NORMAL) order[m++] = i;
    }
    if (st == KS_OK) {
        sort_scores = sc; /* qsort has no context argument in C11 */
        qsort(order, (size_t)m, sizeof *order, score_cmp);
    }
    for (int32_t k = 0; k < m && st == KS_OK; k++) {
        size_t len, ns = 0;
        const char *t = ks_gguf_arr_str(tokens, (uint64_t)order[k], &len);
        for (size_t cut = 1; cut < len; cut++) {
            if (((unsigned char)t[cut] & 0xC0) == 0x80) continue; /* split at character boundaries only */
            split s = {ks_tok_vocab_id(tok, t, cut), ks_tok_vocab_id(tok, t + cut, len - cut), cut};
            if (s.left >= 0 && s.right >= 0) splits[ns++] = s;
        }
        qsort(splits, ns, sizeof *splits, split_cmp);
        for (size_t j = 0; j < ns && st == KS_OK; j++)
            st = ks_tok_add_merge(tok, t, splits[j].cut, t + splits[j].cut, len - splits[j].cut, rank++,
                                  "merges derived from tokenizer.ggml.scores");
    }
    free(sc);
    free(order);
    free(splits);
    return st;
}

/* ---- loading ---- */

static ks_status load(ks_tokenizer *tok, const ks_gguf *g) {
    size_t mlen = 0, plen = 0;
    const char *model = ks_gguf_get_str(g, "tokenizer.ggml.model", &mlen);
    const char *pre = ks_gguf_get_str(g, "tokenizer.ggml.pre", &plen);
    if (!model)
        return ks_fail(KS_ERR_FORMAT, "%s: metadata key 'tokenizer.ggml.model' is missing: the GGUF has no embedded "
                       "tokenizer (pass --tokenizer with a tokenizer.json)", g->file.path);
    int is_gpt2 = str_is(model, mlen, "gpt2"), is_llama = str_is(model, mlen, "llama");
    if (!is_gpt2 && !is_llama)
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: metadata key 'tokenizer.ggml.model' is '%.*s', which kvscope does not "
                       "support (supported: gpt2, llama)", g->file.path, (int)mlen, model);
    ks_status st;
    const ks_gguf_kv *tokens = array_kv(g, "tokenizer.ggml.tokens", 's', 0, &st);
    KS_TRY(st);
    if (!tokens || tokens->arr_n == 0 || tokens->arr_n > INT32_MAX)
        return ks_fail(KS_ERR_FORMAT, "%s: metadata key 'tokenizer.ggml.tokens' is missing or empty", g->file.path);
    const ks_gguf_kv *types = array_kv(g, "tokenizer.ggml.token_type", 'i', tokens->arr_n, &st);
    KS_TRY(st);
    const ks_gguf_kv *scores = array_kv(g, "tokenizer.ggml.scores", 'n', tokens->arr_n, &st);
    KS_TRY(st);
    const ks_gguf_kv *merges = NULL;
    if (is_gpt2) {
        merges = array_kv(g, "tokenizer.ggml.merges", 's', 0, &st);
        KS_TRY(st);
        if (!merges) return ks_fail(KS_ERR_FORMAT, "%s: metadata key 'tokenizer.ggml.merges' is missing", g->file.path);
    }

    int64_t add_space_prefix = 1, add_bos = is_llama, add_eos = 0, bos = -1, eos = -1, unk = is_llama ? 0 : -1;
    int llama3 = 0;
    KS_TRY(opt_int(g, "tokenizer.ggml.add_space_prefix", &add_space_prefix));
    if (is_gpt2) KS_TRY(gpt2_pipeline(tok, pre, plen, &llama3));
    else KS_TRY(llama_pipeline(tok, (int)add_space_prefix));
    add_bos = add_bos || llama3;
    KS_TRY(opt_int(g, "tokenizer.ggml.add_bos_token", &add_bos));
    KS_TRY(opt_int(g, "tokenizer.ggml.add_eos_token", &add_eos));
    KS_TRY(opt_int(g, "tokenizer.ggml.bos_token_id", &bos));
    KS_TRY(opt_int(g, "tokenizer.ggml.eos_token_id", &eos));
    if (is_llama) KS_TRY(opt_int(g, "tokenizer.ggml.unknown_token_id", &unk));

    KS_TRY(ks_tok_reserve(tok, tokens->arr_n, merges ? merges->arr_n : 2 * tokens->arr_n));
    for (uint64_t i = 0; i < tokens->arr_n; i++) {
        size_t len;
        const char *t = ks_gguf_arr_str(tokens, i, &len);
        KS_TRY(ks_tok_set_token(tok, (int32_t)i, t, len));
        int64_t type = types ? ks_gguf_arr_int(types, i) : TOKEN_NORMAL;
        if (type == TOKEN_CONTROL || type == TOKEN_UNKNOWN || type == TOKEN_USER_DEFINED) {
            ks_added_token f = {.special = type != TOKEN_USER_DEFINED};
            KS_TRY(ks_tok_add_added(tok, (int32_t)i, t, len, f));
        }
    }
    KS_TRY(is_gpt2 ? gpt2_merges(tok, merges) : score_merges(tok, tokens, types, scores));
    KS_TRY(ks_tok_finish(tok));

    int32_t n = (int32_t)tokens->arr_n;
    tok->bos = bos >= 0 && bos < n ? (int32_t)bos : -1;
    tok->eos = eos >= 0 && eos < n ? (int32_t)eos : -1;
    tok->unk_id = unk >= 0 && unk < n ? (int32_t)unk : -1;
    if (add_bos && tok->bos >= 0) tok->prefix[tok->n_prefix++] = tok->bos;
    if (add_eos && tok->eos >= 0) tok->suffix[tok->n_suffix++] = tok->eos;
    size_t tl;
    const char *tpl = ks_gguf_get_str(g, "tokenizer.chat_template", &tl);
    if (tpl && !(tok->chat_template = strndup(tpl, tl)))
        return ks_fail(KS_ERR_NOMEM, "out of memory copying the chat template");
    return ks_tok_check_ids(tok);
}

ks_status ks_tok_load_gguf(ks_tokenizer *tok, const char *gguf_path) {
    ks_gguf g = {0};
    KS_TRY(ks_gguf_open(&g, gguf_path));
    ks_status st = load(tok, &g);
    ks_gguf_close(&g);
    return st;
}
