/* pretok.c — pre-tokenization: the Split regexes of tokenizer.json (or the ones a GGUF `tokenizer.ggml.pre`
 * names), each applied to every piece the previous one produced, with HF's "isolated" behaviour: matches
 * and the text between them both become pieces. Patterns are PCRE2 in UTF + UCP mode (\p{L}, \s Unicode),
 * JIT-compiled; the subject is validated once per encode, so matching skips PCRE2's per-call UTF check. */
#include "tokenizer/tok_impl.h"

static ks_status split_step(const ks_tokenizer *tok, ks_tok_scratch *sc, const char *s, size_t n, int step,
                            ks_piece_fn fn, void *ctx) {
    if (n == 0) return KS_OK;
    if (step == tok->n_split) return fn(ctx, s, n);
    const pcre2_code *re = tok->split[step];
    size_t pos = 0, gap = 0; /* gap: start of the text not yet emitted */
    while (pos < n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, sc->md, sc->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return ks_fail(KS_ERR_RANGE, "%s: pre-tokenizer regex failed on a %zu-byte piece: %s", tok->path, n,
                           (const char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(sc->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* an empty match splits nothing: step over one character */
            size_t l = ks_utf8_seq_len((const unsigned char *)s + ms, n - ms);
            pos = ms + (l ? l : 1);
            continue;
        }
        KS_TRY(split_step(tok, sc, s + gap, ms - gap, step + 1, fn, ctx));
        KS_TRY(split_step(tok, sc, s + ms, me - ms, step + 1, fn, ctx));
        gap = pos = me;
    }
    return split_step(tok, sc, s + gap, n - gap, step + 1, fn, ctx);
}

ks_status ks_pretokenize(const ks_tokenizer *tok, ks_tok_scratch *sc, const char *s, size_t n, ks_piece_fn fn,
                         void *ctx) {
    return split_step(tok, sc, s, n, 0, fn, ctx);
}
