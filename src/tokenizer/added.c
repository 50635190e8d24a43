/* added.c — finding added tokens in raw text, as HF's AddedVocabulary (leftmost match, longest at that
 * position; lstrip/rstrip absorb neighbouring whitespace; single_word requires non-word neighbours).
 * Candidates are bucketed by first byte and sorted longest first, so a position whose byte starts no added
 * token costs one table lookup. All added tokens are matched in the raw text: HF matches those marked
 * `normalized: true` in the normalized text instead, which differs only when the normalizer changes them
 * (none of the supported model families has such a token). */
#include <string.h>

#include "tokenizer/tok_impl.h"

/* Code point ending at s[0..end) (the previous character), or 0 at the start. */
static uint32_t cp_before(const char *s, size_t end) {
    if (end == 0) return 0;
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80 && end - i < 4) i--;
    size_t l = ks_utf8_seq_len((const unsigned char *)s + i, end - i);
    return l == end - i ? ks_utf8_decode((const unsigned char *)s + i, l) : 0;
}

static uint32_t cp_at(const char *s, size_t n, size_t i, size_t *len) {
    *len = ks_utf8_seq_len((const unsigned char *)s + i, n - i);
    if (!*len) {
        *len = 1;
        return 0xFFFD;
    }
    return ks_utf8_decode((const unsigned char *)s + i, *len);
}

int ks_added_find(const ks_tokenizer *tok, const char *text, size_t len, size_t from, size_t *start, size_t *end,
                  int *which) {
    if (tok->n_added == 0) return 0;
    for (size_t i = from; i < len; i++) {
        uint8_t b = (uint8_t)text[i];
        int32_t lo = tok->first_start[b], hi = tok->first_start[b + 1];
        for (int32_t k = lo; k < hi; k++) {
            size_t tl;
            const char *t = ks_strtab_get(&tok->added_text, k, &tl);
            if (tl > len - i || memcmp(text + i, t, tl) != 0) continue;
            const ks_added_token *a = &tok->added[k];
            size_t s = i, e = i + tl, cl;
            if (a->single_word) {
                uint32_t before = cp_before(text, s);
                uint32_t after = e < len ? cp_at(text, len, e, &cl) : 0;
                if ((s > 0 && ks_utf8_is_word(before)) || (e < len && ks_utf8_is_word(after))) {
                    /* HF discards the match and resumes after it, without trying shorter tokens here */
                    i = e - 1;
                    break;
                }
            }
            if (a->lstrip)
                while (s > from && ks_utf8_is_space(cp_before(text, s))) {
                    size_t j = s - 1;
                    while (j > from && ((unsigned char)text[j] & 0xC0) == 0x80) j--;
                    s = j;
                }
            if (a->rstrip)
                while (e < len && ks_utf8_is_space(cp_at(text, len, e, &cl))) e += cl;
            *start = s;
            *end = e;
            *which = k;
            return 1;
        }
    }
    return 0;
}
