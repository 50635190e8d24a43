/* utf8.c — see utf8.h. */
#include "tokenizer/utf8.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

size_t ks_utf8_seq_len(const unsigned char *s, size_t n) {
    if (n == 0) return 0; /* an empty match at the end of a piece asks with nothing left: s[0] is not its byte */
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte (excludes overlongs and surrogates) */
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

uint32_t ks_utf8_decode(const unsigned char *s, size_t len) {
    switch (len) {
    case 1: return s[0];
    case 2: return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3: return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
        return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) |
               (s[3] & 0x3F);
    }
}

size_t ks_utf8_validate(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t l = ks_utf8_seq_len(u + i, n - i);
        if (!l) return i;
        i += l;
    }
    return n;
}

int ks_utf8_is_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

int ks_utf8_is_word(uint32_t cp) {
    if (cp < 0x80)
        return (cp >= '0' && cp <= '9') || ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') || cp == '_';
    if (cp == 0x200C || cp == 0x200D) return 1;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return 0;
    }
}

ks_status ks_buf_reserve(ks_buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return KS_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) return ks_fail(KS_ERR_NOMEM, "out of memory growing a text buffer to %zu bytes", cap);
    b->data = d;
    b->cap = cap;
    return KS_OK;
}

ks_status ks_buf_append(ks_buf *b, const void *s, size_t n) {
    KS_TRY(ks_buf_reserve(b, n));
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    return KS_OK;
}

void ks_buf_free(ks_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* Length of the longest prefix of s[0..n) that could start a valid sequence (the "maximal subpart" that
 * from_utf8_lossy replaces with a single U+FFFD); at least 1. */
static size_t invalid_subpart_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t want;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) want = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        want = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        want = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 1;
    size_t i = 1;
    if (i < n && s[i] >= lo && s[i] <= hi) {
        i++;
        while (i < want && i < n && (s[i] & 0xC0) == 0x80) i++;
    }
    return i;
}

ks_status ks_utf8_append_lossy(ks_buf *out, const char *s, size_t n) {
    static const char fffd[] = "\xEF\xBF\xBD";
    const unsigned char *u = (const unsigned char *)s;
    KS_TRY(ks_buf_reserve(out, n + 8));
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n) {
            if (u[run] < 0x80) {
                run++;
                continue;
            }
            size_t l = ks_utf8_seq_len(u + run, n - run);
            if (!l) break;
            run += l;
        }
        KS_TRY(ks_buf_append(out, s + i, run - i));
        if (run == n) break;
        KS_TRY(ks_buf_append(out, fffd, 3));
        i = run + invalid_subpart_len(u + run, n - run);
    }
    return KS_OK;
}
