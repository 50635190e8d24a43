/* vocab.c — building the tokenizer's tables (vocabulary, merges, added tokens, pipeline steps) for the
 * loaders, and the lookups on them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/bytelevel.h"
#include "tokenizer/tok_impl.h"

const char KS_REGEX_GPT2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char KS_REGEX_LLAMA3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
                               "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char KS_REGEX_QWEN2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
                              "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char KS_REGEX_DIGITS[] = "\\p{N}";

ks_tokenizer *ks_tok_new(const char *path) {
    ks_tokenizer *tok = ks_calloc(1, sizeof *tok, "tokenizer");
    if (!tok) return NULL;
    tok->path = strdup(path);
    if (!tok->path) {
        free(tok);
        ks_fail(KS_ERR_NOMEM, "out of memory copying a path");
        return NULL;
    }
    tok->unk_id = tok->bos = tok->eos = -1;
    return tok;
}

ks_status ks_tok_reserve(ks_tokenizer *tok, size_t n_vocab, size_t n_merges) {
    KS_TRY(ks_bytemap_init(&tok->vocab_map, n_vocab));
    return ks_pairmap_init(&tok->merges, n_merges);
}

ks_status ks_tok_set_token(ks_tokenizer *tok, int32_t id, const char *s, size_t len) {
    char small[256];
    char *raw = (char *)s;
    size_t n = len;
    int encodable = 1;
    if (tok->byte_level) {
        raw = len <= sizeof small ? small : ks_malloc(len, "token text");
        if (!raw) return KS_ERR_NOMEM;
        encodable = ks_bytelevel_to_bytes(s, len, raw, &n);
        if (!encodable) { /* keep the UTF-8 text for decoding, as HF's ByteLevel decoder does */
            memcpy(raw, s, len);
            n = len;
        }
    }
    ks_status st = ks_strtab_set(&tok->vocab, id, raw, n);
    if (st == KS_OK && encodable) st = ks_bytemap_put(&tok->vocab_map, &tok->vocab, id);
    if (raw != s && raw != small) free(raw);
    return st;
}

/* s as stored in the vocabulary (raw bytes when byte_level) into out (capacity >= len); 0 when s is not
 * byte-level text, which no encoding can produce. */
static int stored_form(const ks_tokenizer *tok, const char *s, size_t len, char *out, size_t *n) {
    if (tok->byte_level) return ks_bytelevel_to_bytes(s, len, out, n);
    memcpy(out, s, len);
    *n = len;
    return 1;
}

int32_t ks_tok_vocab_id(const ks_tokenizer *tok, const char *s, size_t len) {
    char small[256], *buf = len <= sizeof small ? small : malloc(len);
    size_t n;
    int32_t id = buf && stored_form(tok, s, len, buf, &n) ? ks_bytemap_get(&tok->vocab_map, &tok->vocab, buf, n) : -1;
    if (buf != small) free(buf);
    return id;
}

ks_status ks_tok_add_merge(ks_tokenizer *tok, const char *a, size_t alen, const char *b, size_t blen, int32_t rank,
                           const char *field) {
    char small[512], *buf = alen + blen <= sizeof small ? small : ks_malloc(alen + blen, "merge text");
    if (!buf) return KS_ERR_NOMEM;
    size_t an = 0, bn = 0;
    ks_status st = KS_OK;
    /* a merge of text that is not byte-level can never apply: HF keeps it unused, kvscope skips it */
    if (stored_form(tok, a, alen, buf, &an) && stored_form(tok, b, blen, buf + an, &bn)) {
        int32_t ia = ks_bytemap_get(&tok->vocab_map, &tok->vocab, buf, an);
        int32_t ib = ks_bytemap_get(&tok->vocab_map, &tok->vocab, buf + an, bn);
        int32_t im = ks_bytemap_get(&tok->vocab_map, &tok->vocab, buf, an + bn);
        if (ia < 0 || ib < 0 || im < 0)
            st = ks_fail(KS_ERR_FORMAT, "%s: entry %d of '%s': merge '%.*s %.*s' uses a token that is not in the "
                         "vocabulary (the vocabulary and merges do not belong together)", tok->path, rank, field,
                         (int)alen, a, (int)blen, b);
        else
            st = ks_pairmap_put(&tok->merges, ia, ib, rank, im);
    }
    if (buf != small) free(buf);
    return st;
}

ks_status ks_tok_add_added(ks_tokenizer *tok, int32_t id, const char *content, size_t len, ks_added_token flags) {
    if (len == 0) return KS_OK; /* an empty added token can never match */
    if (tok->n_added == tok->cap_added) {
        int cap = tok->cap_added ? 2 * tok->cap_added : 64;
        ks_added_token *a = realloc(tok->added, (size_t)cap * sizeof *a);
        if (!a) return ks_fail(KS_ERR_NOMEM, "out of memory growing the added-token list");
        tok->added = a;
        tok->cap_added = cap;
    }
    flags.id = id;
    KS_TRY(ks_strtab_set(&tok->added_text, tok->n_added, content, len));
    tok->added[tok->n_added++] = flags;
    return KS_OK;
}

int32_t ks_tok_added_id(const ks_tokenizer *tok, const char *s, size_t len) {
    if (!len) return -1;
    uint8_t b = (uint8_t)s[0];
    for (int32_t i = tok->first_start[b]; i < tok->first_start[b + 1]; i++) {
        size_t n;
        const char *t = ks_strtab_get(&tok->added_text, i, &n);
        if (n == len && memcmp(t, s, len) == 0) return tok->added[i].id;
    }
    return -1;
}

const char *ks_tok_text(const ks_tokenizer *tok, int32_t id, size_t *len) {
    *len = 0;
    if (id < 0 || id >= tok->n_ids) return NULL;
    if (tok->added_of_id[id] >= 0) return ks_strtab_get(&tok->added_text, tok->added_of_id[id], len);
    return ks_strtab_get(&tok->vocab, id, len);
}

/* ---- finishing ---- */

/* Sort key of added token i: first byte ascending, then length descending (longest match first). */
static _Thread_local const ks_tokenizer *sort_tok;
static int added_cmp(const void *pa, const void *pb) {
    int a = *(const int *)pa, b = *(const int *)pb;
    size_t la, lb;
    const char *sa = ks_strtab_get(&sort_tok->added_text, a, &la);
    const char *sb = ks_strtab_get(&sort_tok->added_text, b, &lb);
    if ((uint8_t)sa[0] != (uint8_t)sb[0]) return (uint8_t)sa[0] - (uint8_t)sb[0];
    if (la != lb) return la > lb ? -1 : 1;
    return a - b;
}

/* Reorders added tokens (and their texts) by added_cmp and fills first_start. */
static ks_status index_added(ks_tokenizer *tok) {
    int n = tok->n_added;
    int *order = ks_malloc((size_t)(n ? n : 1) * sizeof *order, "added-token index");
    ks_added_token *sorted = ks_malloc((size_t)(n ? n : 1) * sizeof *sorted, "added-token index");
    ks_strtab text = {0};
    ks_status st = order && sorted ? KS_OK : KS_ERR_NOMEM;
    if (st == KS_OK) {
        for (int i = 0; i < n; i++) order[i] = i;
        sort_tok = tok; /* qsort has no context argument in C11 */
        qsort(order, (size_t)n, sizeof *order, added_cmp);
        for (int i = 0; i < n && st == KS_OK; i++) {
            size_t len;
            const char *s = ks_strtab_get(&tok->added_text, order[i], &len);
            sorted[i] = tok->added[order[i]];
            st = ks_strtab_set(&text, i, s, len);
        }
    }
    if (st == KS_OK) {
        free(tok->added);
        tok->added = sorted;
        sorted = NULL;
        tok->cap_added = n;
        ks_strtab_free(&tok->added_text);
        tok->added_text = text;
        memset(&text, 0, sizeof text);
        int i = 0;
        for (int b = 0; b < 256; b++) {
            tok->first_start[b] = i;
            while (i < n && (uint8_t)tok->added_text.bytes[tok->added_text.off[i]] == b) i++;
        }
        tok->first_start[256] = n;
    }
    free(order);
    free(sorted);
    ks_strtab_free(&text);
    return st;
}

/* The adjacent character pairs of every vocabulary token, for `chunked` (see tok_impl.h). */
static ks_status index_char_pairs(ks_tokenizer *tok) {
    KS_TRY(ks_pairmap_init(&tok->char_pairs, 4 * (size_t)tok->vocab.n));
    for (int32_t id = 0; id < tok->vocab.n; id++) {
        size_t len, l;
        const unsigned char *s = (const unsigned char *)ks_strtab_get(&tok->vocab, id, &len);
        int32_t prev = -1;
        for (size_t i = 0; s && i < len; i += l) {
            l = ks_utf8_seq_len(s + i, len - i);
            int32_t cp = l ? (int32_t)ks_utf8_decode(s + i, l) : -2 - s[i]; /* invalid bytes: distinct keys */
            if (!l) l = 1;
            if (prev != -1) KS_TRY(ks_pairmap_put(&tok->char_pairs, prev, cp, 0, 0));
            prev = cp;
        }
    }
    tok->chunked = 1;
    return KS_OK;
}

ks_status ks_tok_finish(ks_tokenizer *tok) {
    KS_TRY(index_added(tok));
    tok->n_ids = tok->vocab.n;
    for (int i = 0; i < tok->n_added; i++)
        if (tok->added[i].id >= tok->n_ids) tok->n_ids = tok->added[i].id + 1;
    tok->added_of_id = ks_malloc((size_t)(tok->n_ids ? tok->n_ids : 1) * sizeof *tok->added_of_id, "added-token ids");
    if (!tok->added_of_id) return KS_ERR_NOMEM;
    memset(tok->added_of_id, 0xff, (size_t)tok->n_ids * sizeof *tok->added_of_id);
    for (int i = 0; i < tok->n_added; i++)
        if (tok->added_of_id[tok->added[i].id] < 0) tok->added_of_id[tok->added[i].id] = i;
    for (int b = 0; b < 256; b++) {
        char c = (char)b, name[8];
        tok->byte_id[b] = tok->byte_level ? ks_bytemap_get(&tok->vocab_map, &tok->vocab, &c, 1) : -1;
        snprintf(name, sizeof name, "<0x%02X>", b);
        tok->fallback_id[b] = tok->byte_fallback ? ks_bytemap_get(&tok->vocab_map, &tok->vocab, name, 6) : -1;
    }
    return tok->n_split == 0 && !tok->byte_level ? index_char_pairs(tok) : KS_OK;
}

static ks_status check_id(const ks_tokenizer *tok, int32_t id, const char *what) {
    size_t len;
    if (id < -1 || id >= tok->n_ids || (id >= 0 && !ks_tok_text(tok, id, &len)))
        return ks_fail(KS_ERR_FORMAT, "%s: %s id %d is not a token of the vocabulary (size %d)", tok->path, what,
                       id, tok->n_ids);
    return KS_OK;
}

ks_status ks_tok_check_ids(const ks_tokenizer *tok) {
    KS_TRY(check_id(tok, tok->bos, "bos token"));
    KS_TRY(check_id(tok, tok->eos, "eos token"));
    KS_TRY(check_id(tok, tok->unk_id, "unk token"));
    for (int i = 0; i < tok->n_prefix; i++) KS_TRY(check_id(tok, tok->prefix[i], "post-processor token"));
    for (int i = 0; i < tok->n_suffix; i++) KS_TRY(check_id(tok, tok->suffix[i], "post-processor token"));
    return KS_OK;
}

/* ---- pipeline steps ---- */

ks_status ks_tok_add_split(ks_tokenizer *tok, const char *pattern, const char *what) {
    if (tok->n_split == KS_TOK_MAX_STEPS)
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: more than %d pre-tokenizer steps", what, KS_TOK_MAX_STEPS);
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: regex does not compile with PCRE2 at offset %zu (%s): %s", what,
                       (size_t)off, (const char *)msg, pattern);
    }
    /* JIT is an optimisation only: without it (unsupported CPU) pcre2_match interprets the pattern. */
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    tok->split[tok->n_split++] = re;
    return KS_OK;
}

ks_status ks_tok_add_norm(ks_tokenizer *tok, ks_norm_step step, const char *what) {
    if (tok->n_norm == KS_TOK_MAX_STEPS) {
        free(step.text);
        free(step.with);
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: more than %d normalizer steps", what, KS_TOK_MAX_STEPS);
    }
    tok->norm[tok->n_norm++] = step;
    return KS_OK;
}

ks_status ks_tok_add_dec(ks_tokenizer *tok, ks_dec_step step, const char *what) {
    if (tok->n_dec == KS_TOK_MAX_STEPS) {
        free(step.text);
        free(step.with);
        return ks_fail(KS_ERR_UNSUPPORTED, "%s: more than %d decoder steps", what, KS_TOK_MAX_STEPS);
    }
    tok->dec[tok->n_dec++] = step;
    return KS_OK;
}
