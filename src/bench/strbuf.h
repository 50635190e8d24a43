/* strbuf.h — a growable UTF-8 string for building prompts and normalised texts.
 *
 *     ks_strbuf sb = {0};
 *     ks_strbuf_append(&sb, "Document ", 9);
 *     ks_strbuf_appendf(&sb, "%d:\n", i + 1);
 *     KS_TRY(ks_strbuf_status(&sb, "RULER prompt"));   // one check after many appends
 *     ... sb.s (NUL-terminated), sb.len ...
 *     ks_strbuf_free(&sb);                              // accepts a zeroed struct
 *
 * Appends never fail loudly: an allocation failure sets a sticky flag, later appends become no-ops, and
 * ks_strbuf_status() reports it once (KS_ERR_NOMEM naming `what`). This keeps builders free of a check per
 * append while still returning a status up the stack. The buffer keeps its capacity across ks_strbuf_reset(),
 * so a builder reused for every size probe of a sample allocates only while it grows.
 */
#ifndef KS_STRBUF_H
#define KS_STRBUF_H

#include <stddef.h>

#include "core/status.h"

typedef struct ks_strbuf {
    char *s;    /* (cap) owned; NUL-terminated when non-NULL */
    size_t len; /* bytes before the NUL */
    size_t cap; /* bytes allocated */
    int oom;    /* sticky: an allocation failed */
} ks_strbuf;

void ks_strbuf_append(ks_strbuf *sb, const char *s, size_t n);
void ks_strbuf_appendz(ks_strbuf *sb, const char *s);
void ks_strbuf_appendf(ks_strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends the UTF-8 encoding of code point c. */
void ks_strbuf_append_cp(ks_strbuf *sb, int c);
/* Appends `tmpl`, replacing each "{name}" whose name is in keys[0..n) with vals[i] (Python str.format for
 * the named fields our templates use; other text, braces included, is copied). */
void ks_strbuf_format(ks_strbuf *sb, const char *tmpl, const char *const *keys, const char *const *vals, int n);
/* Replaces every occurrence of `from` by `to` in place (Python str.replace). */
void ks_strbuf_replace_all(ks_strbuf *sb, const char *from, const char *to);
void ks_strbuf_reset(ks_strbuf *sb);
/* KS_OK, or KS_ERR_NOMEM with a message naming `what` if an append failed. */
ks_status ks_strbuf_status(const ks_strbuf *sb, const char *what);
/* Hands the string to the caller (never NULL on success: "" for an empty buffer) and zeroes *sb. */
char *ks_strbuf_take(ks_strbuf *sb);
void ks_strbuf_free(ks_strbuf *sb);

/* A heap copy of s[0..n) (NUL-terminated), or NULL with KS_ERR_NOMEM recorded. */
char *ks_strndup(const char *s, size_t n);

#endif
