/* bytelevel.h — GPT-2's byte <-> printable code point map (`bytes_to_unicode`), used by byte-level BPE
 * vocabularies: bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF map to themselves, the other 68 bytes map in
 * increasing order to U+0100, U+0101, ... (space -> U+0120 'Ġ', '\n' -> U+010A 'Ċ'). kvscope stores
 * byte-level vocabularies as raw bytes, so this map is needed only when loading and for token-string queries. */
#ifndef KS_TOK_BYTELEVEL_H
#define KS_TOK_BYTELEVEL_H

#include <stddef.h>
#include <stdint.h>

/* Maps a byte-level string back to raw bytes: out (capacity >= n) receives one byte per code point. Returns
 * 1 when every code point of s is in the map, else 0 (out is then unspecified): HF's ByteLevel decoder keeps
 * such a token's own UTF-8 bytes. */
int ks_bytelevel_to_bytes(const char *s, size_t n, char *out, size_t *out_n);

/* The token text HF's ByteLevel decoder produces for token string s: the mapped bytes when every code
 * point is in the map, else s itself. out needs capacity n. */
size_t ks_bytelevel_decode_token(const char *s, size_t n, char *out);

#endif
