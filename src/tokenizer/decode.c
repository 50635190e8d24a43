/* decode.c — ids -> text, as HF `tokenizers` decode followed by transformers' clean-up:
 *   byte-level: concatenate the tokens' raw bytes (added tokens through the ByteLevel char map when they are
 *     fully byte-level, else their UTF-8), then repair invalid UTF-8 with U+FFFD;
 *   otherwise: the decoder steps on the list of token strings (Replace, ByteFallback, Fuse, Strip, Metaspace),
 *     then concatenate and repair;
 *   then, when the tokenizer config asks for it, clean_up_tokenization_spaces (" ." -> "." ...).
 * Ids outside the vocabulary are skipped, as HF does. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/bytelevel.h"
#include "tokenizer/tok_impl.h"

/* A list of strings stored in one buffer. The buffer is allocated on the first non-empty string: a list of
 * empty strings (or none) may have text.data == NULL, so every access goes through tlist_get. */
typedef struct tlist {
    ks_buf text;
    size_t *off, *len; /* (cap) */
    int n, cap;
} tlist;

static ks_status tlist_push(tlist *l, const char *s, size_t n) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        size_t *off = realloc(l->off, (size_t)cap * sizeof *off);
        if (!off) return ks_fail(KS_ERR_NOMEM, "out of memory decoding");
        l->off = off;
        size_t *len = realloc(l->len, (size_t)cap * sizeof *len);
        if (!len) return ks_fail(KS_ERR_NOMEM, "out of memory decoding");
        l->len = len;
        l->cap = cap;
    }
    l->off[l->n] = l->text.len;
    l->len[l->n] = n;
    l->n++;
    return ks_buf_append(&l->text, s, n);
}

/* Appends to the last string of l (which must exist). */
static ks_status tlist_extend(tlist *l, const char *s, size_t n) {
    l->len[l->n - 1] += n;
    return ks_buf_append(&l->text, s, n);
}

static void tlist_free(tlist *l) {
    ks_buf_free(&l->text);
    free(l->off);
    free(l->len);
    memset(l, 0, sizeof *l);
}

/* String i of l (never NULL). Without a buffer every string is empty, and no offset is applied to NULL. */
static const char *tlist_get(const tlist *l, int i, size_t *n) {
    *n = l->len[i];
    return l->text.data ? l->text.data + l->off[i] : "";
}

/* Byte of a "<0xXX>" token, or -1. */
static int fallback_byte(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    static const char hex[] = "0123456789ABCDEF0123456789abcdef";
    const char *hi = memchr(hex, s[3], 32), *lo = memchr(hex, s[4], 32);
    if (!hi || !lo) return -1;
    return (int)((hi - hex) % 16 * 16 + (lo - hex) % 16);
}

static ks_status replace_into(tlist *dst, const char *s, size_t n, const char *pat, const char *with, int first) {
    size_t pl = strlen(pat), wl = strlen(with);
    KS_TRY(tlist_push(dst, "", 0));
    size_t i = 0;
    while (i < n) {
        const char *hit = pl ? memmem(s + i, n - i, pat, pl) : NULL;
        size_t upto = hit ? (size_t)(hit - s) : n;
        KS_TRY(tlist_extend(dst, s + i, upto - i));
        if (!hit) break;
        if (!first) KS_TRY(tlist_extend(dst, with, wl));
        i = upto + pl;
    }
    return KS_OK;
}

/* Flushes pending ByteFallback bytes as one string, or one U+FFFD per byte when they are not valid UTF-8. */
static ks_status flush_bytes(tlist *dst, const char *bytes, size_t n) {
    if (!n) return KS_OK;
    if (ks_utf8_validate(bytes, n) == n) return tlist_push(dst, bytes, n);
    for (size_t i = 0; i < n; i++) KS_TRY(tlist_push(dst, "\xEF\xBF\xBD", 3));
    return KS_OK;
}

static ks_status apply_step(const ks_dec_step *st, const tlist *src, tlist *dst) {
    size_t n;
    if (st->kind == KS_DEC_FUSE) {
        KS_TRY(tlist_push(dst, "", 0));
        for (int i = 0; i < src->n; i++) {
            const char *s = tlist_get(src, i, &n);
            KS_TRY(tlist_extend(dst, s, n));
        }
        return KS_OK;
    }
    if (st->kind == KS_DEC_BYTE_FALLBACK) {
        ks_buf pending = {0};
        ks_status rc = KS_OK;
        for (int i = 0; i < src->n && rc == KS_OK; i++) {
            const char *s = tlist_get(src, i, &n);
            int b = fallback_byte(s, n);
            if (b >= 0) {
                char c = (char)b;
                rc = ks_buf_append(&pending, &c, 1);
                continue;
            }
            rc = flush_bytes(dst, pending.data, pending.len);
            pending.len = 0;
            if (rc == KS_OK) rc = tlist_push(dst, s, n);
        }
        if (rc == KS_OK) rc = flush_bytes(dst, pending.data, pending.len);
        ks_buf_free(&pending);
        return rc;
    }
    for (int i = 0; i < src->n; i++) {
        const char *s = tlist_get(src, i, &n);
        switch (st->kind) {
        case KS_DEC_REPLACE: KS_TRY(replace_into(dst, s, n, st->text, st->with, 0)); break;
        case KS_DEC_METASPACE: KS_TRY(replace_into(dst, s, n, st->text, " ", i == 0 && st->start)); break;
        case KS_DEC_STRIP: {
            size_t cl = strlen(st->text), a = 0, b = n;
            for (int k = 0; k < st->start && b - a >= cl && memcmp(s + a, st->text, cl) == 0; k++) a += cl;
            for (int k = 0; k < st->stop && b - a >= cl && memcmp(s + b - cl, st->text, cl) == 0; k++) b -= cl;
            KS_TRY(tlist_push(dst, s + a, b - a));
            break;
        }
        default: break;
        }
    }
    return KS_OK;
}

static int skipped(const ks_tokenizer *tok, int32_t id, int skip_special) {
    if (id < 0 || id >= tok->n_ids) return 1;
    int a = tok->added_of_id[id];
    return skip_special && a >= 0 && tok->added[a].special;
}

static ks_status decode_byte_level(const ks_tokenizer *tok, const int32_t *ids, int n, int skip_special, ks_buf *out) {
    ks_buf raw = {0};
    ks_status st = KS_OK;
    for (int i = 0; i < n && st == KS_OK; i++) {
        if (skipped(tok, ids[i], skip_special)) continue;
        size_t len;
        const char *s = ks_tok_text(tok, ids[i], &len);
        if (!s) continue;
        if (tok->added_of_id[ids[i]] < 0) {
            st = ks_buf_append(&raw, s, len);
        } else if (len && (st = ks_buf_reserve(&raw, len)) == KS_OK) { /* len > 0: raw.data is allocated */
            raw.len += ks_bytelevel_decode_token(s, len, raw.data + raw.len);
        }
    }
    if (st == KS_OK) st = ks_utf8_append_lossy(out, raw.data, raw.len);
    ks_buf_free(&raw);
    return st;
}

static ks_status decode_steps(const ks_tokenizer *tok, const int32_t *ids, int n, int skip_special, ks_buf *out) {
    tlist l[2];
    memset(l, 0, sizeof l);
    ks_status st = KS_OK;
    for (int i = 0; i < n && st == KS_OK; i++) {
        if (skipped(tok, ids[i], skip_special)) continue;
        size_t len;
        const char *s = ks_tok_text(tok, ids[i], &len);
        if (s) st = tlist_push(&l[0], s, len);
    }
    int cur = 0;
    for (int k = 0; k < tok->n_dec && st == KS_OK; k++) {
        tlist *dst = &l[cur ^ 1];
        dst->n = 0;
        dst->text.len = 0;
        st = apply_step(&tok->dec[k], &l[cur], dst);
        cur ^= 1;
    }
    for (int i = 0; i < l[cur].n && st == KS_OK; i++) {
        size_t len;
        const char *s = tlist_get(&l[cur], i, &len);
        st = ks_utf8_append_lossy(out, s, len);
    }
    tlist_free(&l[0]);
    tlist_free(&l[1]);
    return st;
}

/* transformers' clean_up_tokenization: each replacement applied to the whole string, in this order. Every
 * pattern starts with a space, so a pass starts at the first occurrence and jumps from space to space. An empty
 * buffer may have no storage at all (data NULL), which memmem must not be given. */
static void clean_up_spaces(ks_buf *b) {
    if (b->len == 0) return;
    static const char *const from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"};
    static const char *const to[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};
    for (size_t r = 0; r < sizeof from / sizeof *from; r++) {
        size_t fl = strlen(from[r]), tl = strlen(to[r]);
        const char *first = memmem(b->data, b->len, from[r], fl); /* most patterns never occur: skip the pass */
        if (!first) continue;
        size_t w = (size_t)(first - b->data), i = w;
        while (i < b->len) {
            const char *sp = memchr(b->data + i, ' ', b->len - i);
            size_t j = sp ? (size_t)(sp - b->data) : b->len;
            memmove(b->data + w, b->data + i, j - i); /* w <= i: moves left */
            w += j - i;
            i = j;
            if (i == b->len) break;
            if (i + fl <= b->len && memcmp(b->data + i, from[r], fl) == 0) {
                memcpy(b->data + w, to[r], tl); /* tl < fl: stays behind the read position */
                w += tl;
                i += fl;
            } else {
                b->data[w++] = b->data[i++];
            }
        }
        b->len = w;
    }
}

ks_status ks_tokenizer_decode(const ks_tokenizer *tok, const int32_t *ids, int n, int skip_special, char **out) {
    ks_buf b = {0};
    ks_status st = tok->byte_level ? decode_byte_level(tok, ids, n, skip_special, &b)
                                   : decode_steps(tok, ids, n, skip_special, &b);
    if (st == KS_OK && tok->clean_up_spaces) clean_up_spaces(&b);
    if (st == KS_OK) st = ks_buf_append(&b, "", 1);
    if (st != KS_OK) {
        ks_buf_free(&b);
        *out = NULL;
        return st;
    }
    *out = b.data;
    return KS_OK;
}
