/* strbuf.c — see strbuf.h. */
#include "bench/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Ensures room for `extra` more bytes plus the NUL; sets the sticky flag on failure. */
static int grow(ks_strbuf *sb, size_t extra) {
    if (sb->oom) return 0;
    size_t need = sb->len + extra + 1;
    if (need <= sb->cap) return 1;
    size_t cap = sb->cap ? sb->cap : 64;
    while (cap < need) cap *= 2;
    char *s = realloc(sb->s, cap);
    if (!s) {
        sb->oom = 1;
        return 0;
    }
    sb->s = s;
    sb->cap = cap;
    return 1;
}

void ks_strbuf_append(ks_strbuf *sb, const char *s, size_t n) {
    if (!grow(sb, n)) return;
    memcpy(sb->s + sb->len, s, n);
    sb->len += n;
    sb->s[sb->len] = 0;
}

void ks_strbuf_appendz(ks_strbuf *sb, const char *s) { ks_strbuf_append(sb, s, strlen(s)); }

void ks_strbuf_appendf(ks_strbuf *sb, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !grow(sb, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(sb->s + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

void ks_strbuf_append_cp(ks_strbuf *sb, int c) {
    char b[4];
    size_t n;
    if (c < 0x80) {
        b[0] = (char)c;
        n = 1;
    } else if (c < 0x800) {
        b[0] = (char)(0xC0 | (c >> 6));
        b[1] = (char)(0x80 | (c & 0x3F));
        n = 2;
    } else if (c < 0x10000) {
        b[0] = (char)(0xE0 | (c >> 12));
        b[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        b[2] = (char)(0x80 | (c & 0x3F));
        n = 3;
    } else {
        b[0] = (char)(0xF0 | (c >> 18));
        b[1] = (char)(0x80 | ((c >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((c >> 6) & 0x3F));
        b[3] = (char)(0x80 | (c & 0x3F));
        n = 4;
    }
    ks_strbuf_append(sb, b, n);
}

void ks_strbuf_format(ks_strbuf *sb, const char *tmpl, const char *const *keys, const char *const *vals, int n) {
    const char *p = tmpl;
    while (*p) {
        const char *open = strchr(p, '{');
        if (!open) break;
        const char *close = strchr(open, '}');
        if (!close) break;
        int hit = -1;
        for (int i = 0; i < n && hit < 0; i++)
            if (strlen(keys[i]) == (size_t)(close - open - 1) && !strncmp(open + 1, keys[i], (size_t)(close - open - 1)))
                hit = i;
        if (hit < 0) { /* not one of ours: copy through the brace and go on */
            ks_strbuf_append(sb, p, (size_t)(open - p) + 1);
            p = open + 1;
            continue;
        }
        ks_strbuf_append(sb, p, (size_t)(open - p));
        ks_strbuf_appendz(sb, vals[hit]);
        p = close + 1;
    }
    ks_strbuf_appendz(sb, p);
}

void ks_strbuf_replace_all(ks_strbuf *sb, const char *from, const char *to) {
    size_t nf = strlen(from);
    if (sb->oom || !sb->s || !nf || !strstr(sb->s, from)) return;
    ks_strbuf out = {0};
    const char *p = sb->s, *hit;
    while ((hit = strstr(p, from))) {
        ks_strbuf_append(&out, p, (size_t)(hit - p));
        ks_strbuf_appendz(&out, to);
        p = hit + nf;
    }
    ks_strbuf_appendz(&out, p);
    if (out.oom) {
        ks_strbuf_free(&out);
        sb->oom = 1;
        return;
    }
    free(sb->s);
    *sb = out;
}

void ks_strbuf_reset(ks_strbuf *sb) {
    sb->len = 0;
    if (sb->s) sb->s[0] = 0;
}

ks_status ks_strbuf_status(const ks_strbuf *sb, const char *what) {
    return sb->oom ? ks_fail(KS_ERR_NOMEM, "out of memory building %s", what) : KS_OK;
}

char *ks_strbuf_take(ks_strbuf *sb) {
    if (!sb->s) grow(sb, 0);
    if (sb->oom) {
        ks_fail(KS_ERR_NOMEM, "out of memory building a string");
        return NULL;
    }
    sb->s[sb->len] = 0;
    char *s = sb->s;
    memset(sb, 0, sizeof *sb);
    return s;
}

void ks_strbuf_free(ks_strbuf *sb) {
    if (!sb) return;
    free(sb->s);
    memset(sb, 0, sizeof *sb);
}

char *ks_strndup(const char *s, size_t n) {
    char *d = ks_malloc(n + 1, "a string copy");
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}
