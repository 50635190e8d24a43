/* pychar.h — Python `str` character semantics over UTF-8, for the scorers and text splitters that must agree
 * with LongBench's and RULER's Python code (str.split(), str.lower(), re's \w, \d and \b on str patterns).
 *
 *     size_t i = 0; int32_t c;
 *     while (i < len) { c = ks_utf8_next(s, len, &i); if (ks_py_isspace(c)) ... }
 *
 * Classes come from utf8proc's Unicode tables. str.lower() is applied per code point with the simple case
 * mapping (utf8proc_tolower); Python's full mapping differs only for a few characters such as U+0130.
 */
#ifndef KS_PYCHAR_H
#define KS_PYCHAR_H

#include <stddef.h>
#include <stdint.h>

/* Decodes the code point at s[*i] and advances *i; an invalid byte gives U+FFFD and advances one byte. */
int32_t ks_utf8_next(const char *s, size_t len, size_t *i);

/* str.isspace(): the whitespace str.split() and str.strip() use (CPython _PyUnicode_IsWhitespace). */
int ks_py_isspace(int32_t c);
/* re \w on str: letters, numbers (categories L*, N*) and '_'. */
int ks_py_isword(int32_t c);
/* re \d on str: decimal digits (category Nd), so full-width "１２" counts. */
int ks_py_isdigit(int32_t c);
/* str.lower() for one code point (simple mapping). */
int32_t ks_py_lower(int32_t c);

#endif
