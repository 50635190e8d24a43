/* seqmatch.c — Python difflib.SequenceMatcher(None, a, b).ratio() over code points, as fuzzywuzzy's
 * fuzz.ratio uses it without python-Levenshtein (LongBench code_sim_score).
 *
 * ratio = 2M / (|a| + |b|), M = total size of the matching blocks found by recursively taking the longest
 * match (earliest in a, then earliest in b, among the longest) and recursing left and right of it. With
 * autojunk, when |b| >= 200 every element occurring more than |b|/100 + 1 times in b is "popular": it never
 * seeds a match but extends one at its ends, exactly as difflib's find_longest_match does. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bench/metrics.h"
#include "bench/pychar.h"

/* One element of b with its index, for the element-sorted index of b. */
typedef struct elem_at {
    int32_t c;
    int j;
} elem_at;

typedef struct matcher {
    const int32_t *a, *b;
    int la, lb;
    int *pos;        /* (lb) indices of b sorted by (element, index), popular elements removed */
    int n_pos;
    int *j2len, *newj2len; /* (lb + 1) scratch, zero between uses */
    int *touched, *newtouched; /* (lb) indices set in j2len / newj2len */
} matcher;

static int by_elem(const void *x, const void *y) {
    const elem_at *p = x, *q = y;
    if (p->c != q->c) return p->c < q->c ? -1 : 1;
    return p->j - q->j;
}

/* First index in m->pos whose element is c, or -1. */
static int first_of(const matcher *m, int32_t c) {
    int lo = 0, hi = m->n_pos;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (m->b[m->pos[mid]] < c) lo = mid + 1;
        else hi = mid;
    }
    return lo < m->n_pos && m->b[m->pos[lo]] == c ? lo : -1;
}

/* find_longest_match(alo, ahi, blo, bhi) -> (i, j, size). */
static void longest(matcher *m, int alo, int ahi, int blo, int bhi, int *bi, int *bj, int *bk) {
    int besti = alo, bestj = blo, bestsize = 0, nt = 0;
    for (int i = alo; i < ahi; i++) {
        int nn = 0, p = first_of(m, m->a[i]);
        for (; p >= 0 && p < m->n_pos && m->b[m->pos[p]] == m->a[i]; p++) {
            int j = m->pos[p];
            if (j < blo) continue;
            if (j >= bhi) break;
            int k = (j > 0 ? m->j2len[j - 1 + 1] : 0) + 1; /* j2len is shifted by one: slot j+1 holds index j */
            m->newj2len[j + 1] = k;
            m->newtouched[nn++] = j + 1;
            if (k > bestsize) besti = i - k + 1, bestj = j - k + 1, bestsize = k;
        }
        for (int t = 0; t < nt; t++) m->j2len[m->touched[t]] = 0;
        for (int t = 0; t < nn; t++) m->j2len[m->newtouched[t]] = m->newj2len[m->newtouched[t]], m->newj2len[m->newtouched[t]] = 0;
        int *sw = m->touched;
        m->touched = m->newtouched;
        m->newtouched = sw;
        nt = nn;
    }
    for (int t = 0; t < nt; t++) m->j2len[m->touched[t]] = 0;
    /* Extend with equal (non-junk; popular included) elements on both sides. */
    while (besti > alo && bestj > blo && m->a[besti - 1] == m->b[bestj - 1]) besti--, bestj--, bestsize++;
    while (besti + bestsize < ahi && bestj + bestsize < bhi && m->a[besti + bestsize] == m->b[bestj + bestsize]) bestsize++;
    *bi = besti, *bj = bestj, *bk = bestsize;
}

/* Sum of matching block sizes (get_matching_blocks with an explicit stack). */
static long matched(matcher *m) {
    int cap = 64, top = 0;
    int(*stack)[4] = malloc((size_t)cap * sizeof *stack);
    if (!stack) return -1;
    long total = 0;
    stack[top][0] = 0, stack[top][1] = m->la, stack[top][2] = 0, stack[top][3] = m->lb, top++;
    while (top) {
        top--;
        int alo = stack[top][0], ahi = stack[top][1], blo = stack[top][2], bhi = stack[top][3], i, j, k;
        longest(m, alo, ahi, blo, bhi, &i, &j, &k);
        if (!k) continue;
        total += k;
        if (top + 2 > cap) {
            int(*g)[4] = realloc(stack, (size_t)(cap *= 2) * sizeof *stack);
            if (!g) {
                free(stack);
                return -1;
            }
            stack = g;
        }
        if (alo < i && blo < j) stack[top][0] = alo, stack[top][1] = i, stack[top][2] = blo, stack[top][3] = j, top++;
        if (i + k < ahi && j + k < bhi)
            stack[top][0] = i + k, stack[top][1] = ahi, stack[top][2] = j + k, stack[top][3] = bhi, top++;
    }
    free(stack);
    return total;
}

/* UTF-8 to code points; *n gets the count. NULL when out of memory. */
static int32_t *decode(const char *s, int *n) {
    size_t len = strlen(s), i = 0;
    int32_t *v = malloc((len + 1) * sizeof *v);
    if (!v) return NULL;
    *n = 0;
    while (i < len) v[(*n)++] = ks_utf8_next(s, len, &i);
    return v;
}

double ks_seqmatch_ratio(const char *as, const char *bs) {
    matcher m = {0};
    int32_t *a = decode(as, &m.la), *b = decode(bs, &m.lb);
    double r = -1;
    m.a = a, m.b = b;
    m.pos = malloc(((size_t)m.lb + 1) * sizeof *m.pos);
    m.j2len = calloc((size_t)m.lb + 2, sizeof *m.j2len);
    m.newj2len = calloc((size_t)m.lb + 2, sizeof *m.newj2len);
    m.touched = malloc(((size_t)m.lb + 1) * sizeof *m.touched);
    m.newtouched = malloc(((size_t)m.lb + 1) * sizeof *m.newtouched);
    elem_at *sorted = malloc(((size_t)m.lb + 1) * sizeof *sorted);
    if (a && b && sorted && m.pos && m.j2len && m.newj2len && m.touched && m.newtouched) {
        for (int j = 0; j < m.lb; j++) sorted[j].c = b[j], sorted[j].j = j;
        qsort(sorted, (size_t)m.lb, sizeof *sorted, by_elem);
        for (int j = 0; j < m.lb; j++) m.pos[j] = sorted[j].j;
        m.n_pos = m.lb;
        if (m.lb >= 200) { /* autojunk: drop popular elements from the index */
            int ntest = m.lb / 100 + 1, w = 0;
            for (int p = 0; p < m.lb;) {
                int q = p;
                while (q < m.lb && b[m.pos[q]] == b[m.pos[p]]) q++;
                if (q - p <= ntest)
                    for (int t = p; t < q; t++) m.pos[w++] = m.pos[t];
                p = q;
            }
            m.n_pos = w;
        }
        long mm = matched(&m);
        if (mm >= 0) r = m.la + m.lb ? 2.0 * (double)mm / (double)(m.la + m.lb) : 1.0;
    }
    free(sorted), free(a), free(b), free(m.pos), free(m.j2len), free(m.newj2len), free(m.touched), free(m.newtouched);
    return r;
}
