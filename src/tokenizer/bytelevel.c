/* bytelevel.c — see bytelevel.h. The map is computed, not tabled: the 68 remapped bytes are 0x00..0x20
 * (-> U+0100..U+0120), 0x7F..0xA0 (-> U+0121..U+0142) and 0xAD (-> U+0143). */
#include "tokenizer/bytelevel.h"

#include <string.h>

#include "tokenizer/utf8.h"

static int printable(unsigned b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; }

/* The byte written as code point cp, or -1. */
static int cp_byte(uint32_t cp) {
    if (cp < 0x100) return printable(cp) ? (int)cp : -1;
    if (cp <= 0x120) return (int)(cp - 0x100);
    if (cp <= 0x142) return (int)(cp - 0x121 + 0x7F);
    if (cp == 0x143) return 0xAD;
    return -1;
}

int ks_bytelevel_to_bytes(const char *s, size_t n, char *out, size_t *out_n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < n) {
        size_t l = ks_utf8_seq_len(u + i, n - i);
        if (!l) return 0;
        int b = cp_byte(ks_utf8_decode(u + i, l));
        if (b < 0) return 0;
        out[o++] = (char)b;
        i += l;
    }
    *out_n = o;
    return 1;
}

size_t ks_bytelevel_decode_token(const char *s, size_t n, char *out) {
    size_t m;
    if (ks_bytelevel_to_bytes(s, n, out, &m)) return m;
    memcpy(out, s, n);
    return n;
}
