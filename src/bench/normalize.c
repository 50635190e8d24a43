/* normalize.c — LongBench's answer normalisation, Python str.split(), and the per-character Chinese
 * tokenisation that stands in for jieba; see metrics.h. */
#include <stdlib.h>
#include <string.h>

#include "bench/metrics.h"
#include "bench/pychar.h"
#include "bench/strbuf.h"

/* string.punctuation */
static int ascii_punct(int32_t c) { return c < 0x80 && c > 0x20 && c != 0x7F && strchr("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", (int)c); }

/* LongBench metrics.py cn_punctuation. */
static const char CN_PUNCT[] = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏.";

static int cn_punct(int32_t c) {
    size_t len = sizeof CN_PUNCT - 1, i = 0;
    while (i < len)
        if (ks_utf8_next(CN_PUNCT, len, &i) == c) return 1;
    return 0;
}

int ks_split_whitespace(char *s, char ***words) {
    size_t len = strlen(s), i = 0;
    int n = 0, cap = 16;
    char **w = malloc((size_t)cap * sizeof *w);
    if (!w) return -1;
    while (i < len) {
        size_t at = i;
        int32_t c = ks_utf8_next(s, len, &i);
        if (ks_py_isspace(c)) {
            memset(s + at, 0, i - at);
            continue;
        }
        if (at == 0 || s[at - 1] == 0) {
            if (n == cap) {
                char **g = realloc(w, (size_t)(cap *= 2) * sizeof *g);
                if (!g) {
                    free(w);
                    return -1;
                }
                w = g;
            }
            w[n++] = s + at;
        }
    }
    *words = w;
    return n;
}

/* " ".join(s.split()) (or "".join when `sep` is ""). */
static char *join_words(char *s, const char *sep) {
    char **w;
    int n = ks_split_whitespace(s, &w);
    if (n < 0) return NULL;
    ks_strbuf out = {0};
    for (int i = 0; i < n; i++) {
        if (i) ks_strbuf_appendz(&out, sep);
        ks_strbuf_appendz(&out, w[i]);
    }
    free(w);
    return ks_strbuf_take(&out);
}

/* lower() then drop punctuation (ASCII, plus CJK when `zh`). */
static void lower_unpunct(const char *s, int zh, ks_strbuf *out) {
    size_t len = strlen(s), i = 0;
    while (i < len) {
        int32_t c = ks_py_lower(ks_utf8_next(s, len, &i));
        if (ascii_punct(c) || (zh && cn_punct(c))) continue;
        ks_strbuf_append_cp(out, c);
    }
}

char *ks_normalize_answer(const char *s) {
    ks_strbuf a = {0}, b = {0};
    lower_unpunct(s, 0, &a);
    char *text = ks_strbuf_take(&a);
    if (!text) return NULL;
    /* re.sub(r"\b(a|an|the)\b", " ", text): a maximal run of word characters equal to an article. */
    size_t len = strlen(text), i = 0;
    while (i < len) {
        size_t at = i;
        int32_t c = ks_utf8_next(text, len, &i);
        if (!ks_py_isword(c)) {
            ks_strbuf_append(&b, text + at, i - at);
            continue;
        }
        size_t end = i, j = i;
        while (j < len) {
            size_t k = j;
            if (!ks_py_isword(ks_utf8_next(text, len, &k))) break;
            j = end = k;
        }
        size_t n = end - at;
        int article = (n == 1 && text[at] == 'a') || (n == 2 && !strncmp(text + at, "an", 2)) ||
                      (n == 3 && !strncmp(text + at, "the", 3));
        if (article) ks_strbuf_append(&b, " ", 1);
        else ks_strbuf_append(&b, text + at, n);
        i = end;
    }
    free(text);
    char *mid = ks_strbuf_take(&b);
    if (!mid) return NULL;
    char *out = join_words(mid, " ");
    free(mid);
    return out;
}

char *ks_normalize_zh_answer(const char *s) {
    ks_strbuf a = {0};
    lower_unpunct(s, 1, &a);
    char *text = ks_strbuf_take(&a);
    if (!text) return NULL;
    char *out = join_words(text, "");
    free(text);
    return out;
}

static int ascii_alnum(int32_t c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

char *ks_zh_tokens_joined(const char *s) {
    ks_strbuf out = {0};
    size_t len = strlen(s), i = 0;
    int prev_alnum = 0;
    while (i < len) {
        size_t at = i;
        int32_t c = ks_utf8_next(s, len, &i);
        if (ks_py_isspace(c)) {
            prev_alnum = 0;
            continue;
        }
        int alnum = ascii_alnum(c);
        if (out.len && !(alnum && prev_alnum)) ks_strbuf_append(&out, " ", 1);
        ks_strbuf_append(&out, s + at, i - at);
        prev_alnum = alnum;
    }
    return ks_strbuf_take(&out);
}
