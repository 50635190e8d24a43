/* utf8.h — the UTF-8 facts the tokenizer needs: sequence lengths, validation, Unicode White_Space (HF's
 * char::is_whitespace), and lossy repair (invalid sequences -> U+FFFD, as Rust's String::from_utf8_lossy,
 * one U+FFFD per maximal invalid subpart). */
#ifndef KS_TOK_UTF8_H
#define KS_TOK_UTF8_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* Length of the valid UTF-8 sequence at s[0..n) (1..4), or 0 when it is invalid or truncated. */
size_t ks_utf8_seq_len(const unsigned char *s, size_t n);
/* Decodes the valid sequence at s (length from ks_utf8_seq_len). */
uint32_t ks_utf8_decode(const unsigned char *s, size_t len);
/* Byte offset of the first invalid sequence, or n when s[0..n) is valid UTF-8. */
size_t ks_utf8_validate(const char *s, size_t n);
/* Unicode White_Space (the set Rust's char::is_whitespace and PCRE2's \s with UCP use). */
int ks_utf8_is_space(uint32_t cp);
/* A word character as Rust regex's Unicode \w (letters, marks, Nd/Nl digits, connector punctuation such as
 * '_', ZWNJ/ZWJ): what HF uses for added tokens' single_word. */
int ks_utf8_is_word(uint32_t cp);

/* A growable byte buffer (owned data). */
typedef struct ks_buf {
    char *data;
    size_t len, cap;
} ks_buf;

ks_status ks_buf_reserve(ks_buf *b, size_t extra);
ks_status ks_buf_append(ks_buf *b, const void *s, size_t n);
void ks_buf_free(ks_buf *b);

/* Appends s[0..n) to out with every invalid UTF-8 subpart replaced by U+FFFD. */
ks_status ks_utf8_append_lossy(ks_buf *out, const char *s, size_t n);

#endif
