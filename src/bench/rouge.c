/* rouge.c — ROUGE-L as LongBench computes it: pltrdy/rouge `Rouge().get_scores([hyp], [ref], avg=True)
 * ["rouge-l"]["f"]` with the defaults (summary level, exclusive word sets, no lower-casing or stemming).
 *
 * 1. Each text is split on "."; empty pieces are dropped; each piece is re-joined from its str.split() words
 *    with single spaces and split again on " " (so a whitespace-only piece is the one word "").
 * 2. m, n = number of distinct words of the reference / hypothesis.
 * 3. For every reference sentence, the LCS with every hypothesis sentence is reconstructed (the package's
 *    recursive walk: on a tie it steps along the hypothesis); the distinct words of those LCSs join one set
 *    that accumulates over reference sentences; llcs is its final size.
 * 4. R = llcs/m, P = llcs/n, F = 2PR / (P + R + 1e-8).
 * The package raises (and LongBench scores 0) when either side has no sentence, and its recursive walk hits
 * Python's recursion limit on very long sentence pairs; ROUGE_MAX_DEPTH reproduces that limit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bench/metrics.h"
#include "bench/strbuf.h"

/* Python's default recursion limit (1000) less the frames LongBench's scorer already uses when _recon starts
 * (eval.py -> scorer -> rouge_score -> get_scores -> _get_avg_scores -> rouge_l_summary_level -> _union_lcs ->
 * _recon_lcs -> _recon, plus the interpreter's entry frames); deeper walks raise RecursionError. */
#define ROUGE_MAX_DEPTH 985

typedef struct words {
    char *buf;     /* owned storage the words point into */
    char **w;      /* (n) words */
    int n;
    int *sent_at;  /* (n_sents + 1) first word of each sentence */
    int n_sents;
} words;

static void words_free(words *x) {
    free(x->buf);
    free(x->w);
    free(x->sent_at);
}

/* Step 1 for one text, in place on a copy. Returns 0 on success, -1 when out of memory. */
static int split_text(const char *text, words *x) {
    memset(x, 0, sizeof *x);
    size_t len = strlen(text);
    x->buf = ks_strndup(text, len);
    x->w = malloc((len + 1) * sizeof *x->w);      /* at most one word per byte, or the one "" word */
    x->sent_at = malloc((len + 2) * sizeof *x->sent_at);
    if (!x->buf || !x->w || !x->sent_at) {
        words_free(x);
        return -1;
    }
    for (size_t i = 0; i < len; i++)
        if (x->buf[i] == '.') x->buf[i] = 0;
    for (size_t a = 0; a < len;) {
        size_t b = a + strlen(x->buf + a); /* the piece [a, b) up to the next "." */
        if (b > a) {
            char **pw;
            int k = ks_split_whitespace(x->buf + a, &pw);
            if (k < 0) {
                words_free(x);
                return -1;
            }
            x->sent_at[x->n_sents++] = x->n;
            for (int i = 0; i < k; i++) x->w[x->n++] = pw[i];
            if (k == 0) x->w[x->n++] = x->buf + a; /* all whitespace, now NULs: the word "" */
            free(pw);
        }
        a = b + 1;
    }
    x->sent_at[x->n_sents] = x->n;
    return 0;
}

static int by_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Number of distinct strings in v[0..n) (sorts a copy). */
static int distinct(char **v, int n, int *ok) {
    char **c = malloc((size_t)(n ? n : 1) * sizeof *c);
    if (!c) {
        *ok = 0;
        return 0;
    }
    memcpy(c, v, (size_t)n * sizeof *c);
    qsort(c, (size_t)n, sizeof *c, by_str);
    int d = 0;
    for (int i = 0; i < n; i++) d += i == 0 || strcmp(c[i - 1], c[i]);
    free(c);
    return d;
}

/* A growing set of words (pointers compared by content). */
typedef struct word_set {
    char **v;
    int n, cap;
} word_set;

static int set_add(word_set *s, char *w) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->v[i], w)) return 0;
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 32;
        char **v = realloc(s->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = w;
    return 0;
}

/* _lcs + _recon_lcs for reference words x[0..nx) and hypothesis words y[0..ny); adds the LCS words to `set`.
 * Returns 0, -1 when out of memory, or 1 when the walk is deeper than Python allows. */
static int lcs_into(char **x, int nx, char **y, int ny, word_set *set) {
    int32_t *t = calloc((size_t)(nx + 1) * (size_t)(ny + 1), sizeof *t);
    if (!t) return -1;
#define T(i, j) t[(size_t)(i) * (size_t)(ny + 1) + (size_t)(j)]
    for (int i = 1; i <= nx; i++)
        for (int j = 1; j <= ny; j++)
            T(i, j) = !strcmp(x[i - 1], y[j - 1]) ? T(i - 1, j - 1) + 1 : (T(i - 1, j) > T(i, j - 1) ? T(i - 1, j) : T(i, j - 1));
    /* The recursion depth of _recon is the number of calls along the walk, one per step plus the final one. */
    int depth = 1, rc = 0;
    for (int i = nx, j = ny; i > 0 && j > 0; depth++) {
        if (!strcmp(x[i - 1], y[j - 1])) i--, j--;
        else if (T(i - 1, j) > T(i, j - 1)) i--;
        else j--;
    }
    if (depth > ROUGE_MAX_DEPTH) rc = 1;
    for (int i = nx, j = ny; rc == 0 && i > 0 && j > 0;) {
        if (!strcmp(x[i - 1], y[j - 1])) {
            if (set_add(set, x[i - 1]) < 0) rc = -1;
            i--, j--;
        } else if (T(i - 1, j) > T(i, j - 1)) {
            i--;
        } else {
            j--;
        }
    }
#undef T
    free(t);
    return rc;
}

double ks_rouge_l(const char *hyp, const char *ref) {
    words h, r;
    if (split_text(hyp, &h) < 0) return -1;
    if (split_text(ref, &r) < 0) {
        words_free(&h);
        return -1;
    }
    double f = 0;
    int ok = 1;
    word_set set = {0};
    if (h.n_sents > 0 && r.n_sents > 0) {
        int m = distinct(r.w, r.n, &ok), n = distinct(h.w, h.n, &ok), rc = 0;
        for (int s = 0; ok && rc == 0 && s < r.n_sents; s++)
            for (int e = 0; rc == 0 && e < h.n_sents; e++)
                rc = lcs_into(r.w + r.sent_at[s], r.sent_at[s + 1] - r.sent_at[s], h.w + h.sent_at[e],
                              h.sent_at[e + 1] - h.sent_at[e], &set);
        if (rc < 0) ok = 0;
        if (ok && rc == 0) {
            double rec = (double)set.n / m, prec = (double)set.n / n;
            f = 2.0 * (prec * rec / (prec + rec + 1e-8));
        }
    }
    free(set.v);
    words_free(&h);
    words_free(&r);
    return ok ? f : -1;
}
