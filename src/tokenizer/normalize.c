/* normalize.c — the normalizer steps of a segment (text between added tokens): Unicode normal forms via
 * utf8proc, Prepend and literal Replace (SentencePiece-style "▁" handling). Steps write into the scratch's two
 * ping-pong buffers; a step that changes nothing leaves the text where it is. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tok_impl.h"

static int all_ascii(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80) return 0;
    return 1;
}

static ks_status unicode_form(ks_norm_kind kind, const char *s, size_t n, ks_buf *dst) {
    utf8proc_option_t opt = UTF8PROC_STABLE;
    if (kind == KS_NORM_NFC || kind == KS_NORM_NFKC) opt |= UTF8PROC_COMPOSE;
    else opt |= UTF8PROC_DECOMPOSE;
    if (kind == KS_NORM_NFKC || kind == KS_NORM_NFKD) opt |= UTF8PROC_COMPAT;
    utf8proc_uint8_t *res = NULL;
    utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &res, opt);
    if (m < 0) return ks_fail(KS_ERR_ARG, "text cannot be normalized: %s", utf8proc_errmsg(m));
    ks_status st = ks_buf_append(dst, res, (size_t)m);
    free(res);
    return st;
}

static ks_status replace_all(const char *s, size_t n, const char *pat, const char *with, ks_buf *dst) {
    size_t pl = strlen(pat), wl = strlen(with);
    size_t i = 0;
    while (i < n) {
        const char *hit = pl ? memmem(s + i, n - i, pat, pl) : NULL;
        size_t upto = hit ? (size_t)(hit - s) : n;
        KS_TRY(ks_buf_append(dst, s + i, upto - i));
        if (!hit) break;
        KS_TRY(ks_buf_append(dst, with, wl));
        i = upto + pl;
    }
    return KS_OK;
}

/* Writes step(s[0..n)) to dst; returns 0 in *changed when the step is the identity on this text. */
static ks_status apply(const ks_norm_step *st, const char *s, size_t n, size_t offset, ks_buf *dst, int *changed) {
    *changed = 0;
    switch (st->kind) {
    case KS_NORM_NFC:
    case KS_NORM_NFD:
    case KS_NORM_NFKC:
    case KS_NORM_NFKD:
        if (all_ascii(s, n)) return KS_OK; /* every normal form is the identity on ASCII */
        *changed = 1;
        return unicode_form(st->kind, s, n, dst);
    case KS_NORM_PREPEND: {
        size_t pl = strlen(st->text);
        if (n == 0 || (st->first_only && offset != 0)) return KS_OK;
        if (st->if_missing && n >= pl && memcmp(s, st->text, pl) == 0) return KS_OK;
        *changed = 1;
        KS_TRY(ks_buf_append(dst, st->text, pl));
        return ks_buf_append(dst, s, n);
    }
    case KS_NORM_REPLACE:
        if (!memmem(s, n, st->text, strlen(st->text))) return KS_OK;
        *changed = 1;
        return replace_all(s, n, st->text, st->with, dst);
    }
    return KS_OK;
}

ks_status ks_normalize(const ks_tokenizer *tok, ks_tok_scratch *sc, const char *s, size_t n, size_t offset,
                       const char **out, size_t *out_n) {
    int which = 0;
    for (int i = 0; i < tok->n_norm; i++) {
        ks_buf *dst = &sc->norm[which];
        dst->len = 0;
        int changed;
        KS_TRY(apply(&tok->norm[i], s, n, offset, dst, &changed));
        if (!changed) continue;
        s = dst->data;
        n = dst->len;
        which ^= 1;
    }
    *out = s;
    *out_n = n;
    return KS_OK;
}
