/* metrics.c — the per-sample scorers and ks_bench_score; see metrics.h. Normalisation lives in
 * normalize.c, ROUGE-L in rouge.c and difflib's ratio in seqmatch.c. */
#include "bench/metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench/longbench.h"
#include "bench/pychar.h"
#include "bench/strbuf.h"

/* ---- RULER ---- */

/* s.lower() as a new string. */
static char *lower_copy(const char *s) {
    ks_strbuf sb = {0};
    size_t len = strlen(s), i = 0;
    while (i < len) ks_strbuf_append_cp(&sb, ks_py_lower(ks_utf8_next(s, len, &i)));
    return ks_strbuf_take(&sb);
}

/* Number of refs whose lower() is a substring of pred.lower(); -1 when out of memory. */
static int refs_found(const char *pred, char *const *refs, int n) {
    char *p = lower_copy(pred);
    if (!p) return -1;
    int found = 0;
    for (int i = 0; i < n; i++) {
        char *r = lower_copy(refs[i]);
        if (!r) {
            free(p);
            return -1;
        }
        found += strstr(p, r) != NULL;
        free(r);
    }
    free(p);
    return found;
}

double ks_metric_string_match_all(const char *pred, char *const *refs, int n_refs) {
    if (n_refs <= 0) return 0;
    int f = refs_found(pred, refs, n_refs);
    return f < 0 ? -1 : (double)f / n_refs;
}

double ks_metric_string_match_part(const char *pred, char *const *refs, int n_refs) {
    int f = refs_found(pred, refs, n_refs);
    return f < 0 ? -1 : f > 0 ? 1.0 : 0.0;
}

/* ---- token F1 ---- */

static int by_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* f1_score(prediction_tokens, ground_truth_tokens) with Counter intersection. */
static double f1_tokens(char **p, int np, char **g, int ng) {
    qsort(p, (size_t)np, sizeof *p, by_str);
    qsort(g, (size_t)ng, sizeof *g, by_str);
    int same = 0;
    for (int i = 0, j = 0; i < np && j < ng;) {
        int c = strcmp(p[i], g[j]);
        if (c == 0) same++, i++, j++;
        else if (c < 0) i++;
        else j++;
    }
    if (same == 0) return 0;
    double prec = (double)same / np, rec = (double)same / ng;
    return 2 * prec * rec / (prec + rec);
}

double ks_metric_qa_f1(const char *pred, const char *gt) {
    char *a = ks_normalize_answer(pred), *b = ks_normalize_answer(gt), **pa = NULL, **pb = NULL;
    double r = -1;
    int na = a ? ks_split_whitespace(a, &pa) : -1, nb = b ? ks_split_whitespace(b, &pb) : -1;
    if (na >= 0 && nb >= 0) r = f1_tokens(pa, na, pb, nb);
    free(pa), free(pb), free(a), free(b);
    return r;
}

/* jieba-substitute tokens, each normalised with normalize_zh_answer, empty ones dropped; in place in *buf. */
static int zh_tokens(const char *s, char **buf, char ***out) {
    *buf = ks_zh_tokens_joined(s);
    if (!*buf) return -1;
    char **w;
    int n = ks_split_whitespace(*buf, &w);
    if (n < 0) return -1;
    int m = 0;
    for (int i = 0; i < n; i++) {
        char *norm = ks_normalize_zh_answer(w[i]);
        if (!norm) {
            free(w);
            return -1;
        }
        /* A normalised token is never longer than the token: write it back in place. */
        size_t k = strlen(norm);
        if (k) memcpy(w[i], norm, k + 1), w[m++] = w[i];
        free(norm);
    }
    *out = w;
    return m;
}

double ks_metric_qa_f1_zh(const char *pred, const char *gt) {
    char *ba = NULL, *bb = NULL, **pa = NULL, **pb = NULL;
    double r = -1;
    int na = zh_tokens(pred, &ba, &pa), nb = zh_tokens(gt, &bb, &pb);
    if (na >= 0 && nb >= 0) r = f1_tokens(pa, na, pb, nb);
    free(pa), free(pb), free(ba), free(bb);
    return r;
}

/* ---- ROUGE ---- */

double ks_metric_rouge(const char *pred, const char *gt) { return ks_rouge_l(pred, gt); }

double ks_metric_rouge_zh(const char *pred, const char *gt) {
    char *a = ks_zh_tokens_joined(pred), *b = ks_zh_tokens_joined(gt);
    double r = a && b ? ks_rouge_l(a, b) : -1;
    free(a), free(b);
    return r;
}

/* ---- classification, retrieval, count ---- */

double ks_metric_classification(const char *pred, const char *gt, char *const *classes, int n_classes) {
    const char **m = malloc((size_t)(n_classes ? n_classes : 1) * sizeof *m);
    if (!m) return -1;
    int n = 0;
    for (int i = 0; i < n_classes; i++)
        if (strstr(pred, classes[i])) m[n++] = classes[i];
    /* for match_term in em_match_list: if match_term in gt and match_term != gt: em_match_list.remove(match_term)
     * Python's list iterator walks by index, so the element after a removed one is skipped; remove() deletes the
     * first equal element. */
    for (int i = 0; i < n; i++) {
        const char *term = m[i];
        if (strstr(gt, term) && strcmp(term, gt)) {
            int first = 0;
            while (strcmp(m[first], term)) first++;
            memmove(m + first, m + first + 1, (size_t)(n - first - 1) * sizeof *m);
            n--;
        }
    }
    int hit = 0;
    for (int i = 0; i < n && !hit; i++) hit = !strcmp(m[i], gt);
    free(m);
    return hit ? 1.0 / n : 0.0;
}

/* The numbers re.findall(r"\d+", s) finds (Unicode decimal digits), each compared with `target`:
 * right / len(numbers), or 0 when there are none. */
static double digits_share(const char *s, const char *target) {
    size_t len = strlen(s), i = 0, tl = strlen(target);
    int numbers = 0, right = 0;
    while (i < len) {
        size_t at = i;
        if (!ks_py_isdigit(ks_utf8_next(s, len, &i))) continue;
        size_t end = i;
        while (end < len) {
            size_t k = end;
            if (!ks_py_isdigit(ks_utf8_next(s, len, &k))) break;
            end = k;
        }
        numbers++;
        right += end - at == tl && !memcmp(s + at, target, tl);
        i = end;
    }
    return numbers ? (double)right / numbers : 0.0;
}

/* The first "<label>(\d+)" number in gt, into out (cap bytes); 0 if none. */
static int labelled_number(const char *gt, const char *label, char *out, size_t cap) {
    size_t ll = strlen(label), len = strlen(gt);
    for (const char *p = strstr(gt, label); p; p = strstr(p + 1, label)) {
        size_t at = (size_t)(p - gt) + ll, i = at, end = at;
        while (end < len) {
            i = end;
            if (!ks_py_isdigit(ks_utf8_next(gt, len, &i))) break;
            end = i;
        }
        if (end > at && end - at < cap) {
            memcpy(out, gt + at, end - at);
            out[end - at] = 0;
            return 1;
        }
    }
    return 0;
}

double ks_metric_retrieval(const char *pred, const char *gt) {
    char id[64];
    return labelled_number(gt, "Paragraph ", id, sizeof id) ? digits_share(pred, id) : 0.0;
}

double ks_metric_retrieval_zh(const char *pred, const char *gt) {
    char id[64];
    return labelled_number(gt, "段落", id, sizeof id) ? digits_share(pred, id) : 0.0;
}

double ks_metric_count(const char *pred, const char *gt) { return digits_share(pred, gt); }

/* ---- code similarity ---- */

double ks_metric_code_sim(const char *pred, const char *gt) {
    while (*pred == '\n') pred++; /* lstrip('\n') */
    const char *line = "";
    size_t n = 0;
    for (const char *p = pred;;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        int bad = 0;
        for (size_t i = 0; i < len && !bad; i++) bad = p[i] == '`' || p[i] == '#' || (p[i] == '/' && i + 1 < len && p[i + 1] == '/');
        if (!bad) {
            line = p, n = len;
            break;
        }
        if (!nl) break;
        p = nl + 1;
    }
    char *first = ks_strndup(line, n);
    if (!first) return -1;
    /* fuzz.ratio: equal strings 100 (even empty), an empty side 0, else int(round(100 * ratio)) with Python's
     * round-half-even. */
    double score;
    if (!strcmp(first, gt)) score = 100;
    else if (!*first || !*gt) score = 0;
    else {
        double r = ks_seqmatch_ratio(first, gt);
        score = r < 0 ? -100 : nearbyint(100 * r);
    }
    free(first);
    return score / 100;
}

/* ---- dispatch ---- */

typedef double (*pair_metric)(const char *pred, const char *gt);

static const struct {
    const char *name;
    pair_metric fn;
} pair_metrics[] = {
    {"qa_f1_score", ks_metric_qa_f1},       {"qa_f1_zh_score", ks_metric_qa_f1_zh},
    {"rouge_score", ks_metric_rouge},       {"rouge_zh_score", ks_metric_rouge_zh},
    {"retrieval_score", ks_metric_retrieval}, {"retrieval_zh_score", ks_metric_retrieval_zh},
    {"count_score", ks_metric_count},       {"code_sim_score", ks_metric_code_sim},
};
#define N_PAIR ((int)(sizeof pair_metrics / sizeof pair_metrics[0]))

int ks_metric_known(const char *name) {
    if (!strcmp(name, "string_match_all") || !strcmp(name, "string_match_part") || !strcmp(name, "classification_score"))
        return 1;
    for (int i = 0; i < N_PAIR; i++)
        if (!strcmp(pair_metrics[i].name, name)) return 1;
    return 0;
}

/* RULER postprocess_pred: strip; every char in \x00-\x1f to "\n"; strip again. */
static char *ruler_postprocess(const char *pred) {
    ks_strbuf sb = {0};
    size_t len = strlen(pred), i = 0;
    while (i < len) {
        size_t at = i;
        int32_t c = ks_utf8_next(pred, len, &i);
        if (c < 0x20) ks_strbuf_append(&sb, "\n", 1);
        else ks_strbuf_append(&sb, pred + at, i - at);
    }
    char *s = ks_strbuf_take(&sb);
    if (!s) return NULL;
    /* Both strips together: control characters became "\n", which strip() removes as whitespace anyway. */
    size_t n = strlen(s), a = 0, b = n;
    while (a < b) {
        size_t k = a;
        if (!ks_py_isspace(ks_utf8_next(s, n, &k))) break;
        a = k;
    }
    while (b > a) {
        size_t k = b - 1;
        while (k > a && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
        size_t e = k;
        if (!ks_py_isspace(ks_utf8_next(s, n, &e))) break;
        b = k;
    }
    memmove(s, s + a, b - a);
    s[b - a] = 0;
    return s;
}

ks_status ks_bench_score(const ks_sample *s, const char *prediction, double *score) {
    double v = -1;
    if (!strcmp(s->metric, "string_match_all") || !strcmp(s->metric, "string_match_part")) {
        char *p = ruler_postprocess(prediction);
        if (!p) return ks_fail(KS_ERR_NOMEM, "out of memory scoring %s", s->task);
        v = !strcmp(s->metric, "string_match_all") ? ks_metric_string_match_all(p, s->answers, s->n_answers)
                                                   : ks_metric_string_match_part(p, s->answers, s->n_answers);
        free(p);
    } else {
        const ks_longbench_task *t = ks_longbench_task_find(s->task);
        pair_metric fn = NULL;
        for (int i = 0; i < N_PAIR; i++)
            if (!strcmp(pair_metrics[i].name, s->metric)) fn = pair_metrics[i].fn;
        if (!fn && strcmp(s->metric, "classification_score"))
            return ks_fail(KS_ERR_ARG, "sample %s/%d: unknown metric '%s'", s->task, s->index, s->metric);
        /* pred.lstrip('\n').split('\n')[0] for the few-shot tasks. */
        while (t && t->first_line && *prediction == '\n') prediction++;
        char *p = ks_strndup(prediction, t && t->first_line ? strcspn(prediction, "\n") : strlen(prediction));
        if (!p) return KS_ERR_NOMEM;
        v = 0;
        for (int i = 0; i < s->n_answers && v >= 0; i++) {
            double x = fn ? fn(p, s->answers[i]) : ks_metric_classification(p, s->answers[i], s->all_classes, s->n_classes);
            v = x < 0 ? -1 : x > v ? x : v;
        }
        free(p);
    }
    if (v < 0) return ks_fail(KS_ERR_NOMEM, "out of memory scoring %s", s->task);
    *score = v;
    return KS_OK;
}
