/* report.c — score tables from result files (see report.h). */
#include "results/report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "results/results.h"

/* ---- collecting ---------------------------------------------------------------------------------------- */

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int find_int(const int *v, int n, int x) {
    const int *p = bsearch(&x, v, (size_t)n, sizeof *v, cmp_int);
    return p ? (int)(p - v) : -1;
}

static int find_str(char *const *v, int n, const char *s) {
    char *const *p = bsearch(&s, v, (size_t)n, sizeof *v, cmp_str);
    return p ? (int)(p - v) : -1;
}

/* The distinct lengths of every row of every file, ascending. */
static ks_status collect_lengths(ks_report *rep, const ks_results_data *d, int n_files) {
    int total = 0;
    for (int f = 0; f < n_files; f++) total += d[f].n_rows;
    rep->lengths = ks_malloc((size_t)(total ? total : 1) * sizeof(int), "report lengths");
    if (!rep->lengths) return KS_ERR_NOMEM;
    for (int f = 0; f < n_files; f++)
        for (int i = 0; i < d[f].n_rows; i++) rep->lengths[rep->n_lengths++] = d[f].rows[i].length;
    qsort(rep->lengths, (size_t)rep->n_lengths, sizeof(int), cmp_int);
    int n = 0;
    for (int i = 0; i < rep->n_lengths; i++)
        if (n == 0 || rep->lengths[n - 1] != rep->lengths[i]) rep->lengths[n++] = rep->lengths[i];
    rep->n_lengths = n;
    return KS_OK;
}

static ks_status add_col(ks_report *rep, const char *name) {
    char *s = strdup(name);
    if (!s) return ks_fail(KS_ERR_NOMEM, "out of memory for report columns");
    rep->cols[rep->n_cols++] = s;
    return KS_OK;
}

/* One file: its distinct tasks, sorted. */
static ks_status collect_tasks(ks_report *rep, const ks_results_data *d) {
    rep->cols = ks_calloc((size_t)(d->n_rows ? d->n_rows : 1), sizeof(char *), "report columns");
    if (!rep->cols) return KS_ERR_NOMEM;
    for (int i = 0; i < d->n_rows; i++) {
        int seen = 0;
        for (int c = 0; c < rep->n_cols && !seen; c++) seen = !strcmp(rep->cols[c], d->rows[i].task);
        if (!seen) KS_TRY(add_col(rep, d->rows[i].task));
    }
    qsort(rep->cols, (size_t)rep->n_cols, sizeof(char *), cmp_str);
    return KS_OK;
}

/* "dir/name.h5" -> "name". */
static void file_stem(const char *path, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    int n = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
    snprintf(out, cap, "%.*s", n, base);
}

/* Several files: one column per file, named by its method, or by its file name when methods are missing or
 * repeat. */
static ks_status collect_methods(ks_report *rep, const ks_results_data *d, const char *const *paths, int n) {
    rep->cols = ks_calloc((size_t)n, sizeof(char *), "report columns");
    if (!rep->cols) return KS_ERR_NOMEM;
    for (int f = 0; f < n; f++) {
        const char *m = d[f].meta.method;
        int unique = m && *m;
        for (int g = 0; g < n && unique; g++)
            if (g != f && d[g].meta.method && !strcmp(d[g].meta.method, m)) unique = 0;
        char stem[256];
        file_stem(paths[f], stem, sizeof stem);
        KS_TRY(add_col(rep, unique ? m : stem));
    }
    return KS_OK;
}

/* "a · b · c" from the non-empty labels shared by every file. */
static ks_status make_title(ks_report *rep, const ks_results_data *d, int n) {
    char buf[512] = "";
    for (int k = 0; k < 3; k++) {
        const char *v = NULL;
        int same = 1;
        for (int f = 0; f < n; f++) {
            const char *x = k == 0 ? d[f].meta.benchmark : k == 1 ? d[f].meta.model : d[f].meta.method;
            if (!x || !*x || (v && strcmp(v, x))) same = 0;
            v = x;
        }
        if (same && v) snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", buf[0] ? " · " : "", v);
    }
    rep->title = strdup(buf);
    return rep->title ? KS_OK : ks_fail(KS_ERR_NOMEM, "out of memory for the report title");
}

static ks_status fill(ks_report *rep, const ks_results_data *d, int n_files) {
    int rows = rep->n_lengths + 1, cols = rep->n_cols;
    double *sum = ks_calloc((size_t)rows * cols, sizeof(double), "report sums");
    int *cnt = ks_calloc((size_t)rows * cols, sizeof(int), "report counts");
    double *row_sum = ks_calloc((size_t)rows, sizeof(double), "report sums");
    int *row_cnt = ks_calloc((size_t)rows, sizeof(int), "report counts");
    rep->score = ks_malloc((size_t)rows * cols * sizeof(double), "report scores");
    ks_status st = sum && cnt && row_sum && row_cnt && rep->score ? KS_OK : KS_ERR_NOMEM;
    if (st == KS_OK && !rep->by_method) {
        rep->row_avg = ks_malloc((size_t)rows * sizeof(double), "report averages");
        rep->row_seconds = ks_calloc((size_t)rows, sizeof(double), "report times");
        st = rep->row_avg && rep->row_seconds ? KS_OK : KS_ERR_NOMEM;
    }
    if (st == KS_OK && rep->by_method) {
        rep->wall_seconds = ks_malloc((size_t)cols * sizeof(double), "report times");
        st = rep->wall_seconds ? KS_OK : KS_ERR_NOMEM;
    }
    for (int f = 0; st == KS_OK && f < n_files; f++) {
        if (rep->by_method) rep->wall_seconds[f] = d[f].wall_seconds;
        for (int i = 0; i < d[f].n_rows; i++) {
            const ks_result *r = &d[f].rows[i];
            int li = find_int(rep->lengths, rep->n_lengths, r->length);
            int c = rep->by_method ? f : find_str(rep->cols, rep->n_cols, r->task);
            const int targets[2] = {li, rows - 1}; /* the length's row and the all-lengths row */
            for (int k = 0; k < 2; k++) {
                int row = targets[k];
                sum[row * cols + c] += r->score;
                cnt[row * cols + c]++;
                row_sum[row] += r->score;
                row_cnt[row]++;
                if (rep->row_seconds) rep->row_seconds[row] += r->prefill_s + r->decode_s;
            }
            rep->n_samples++;
        }
    }
    for (int i = 0; st == KS_OK && i < rows * cols; i++) rep->score[i] = cnt[i] ? sum[i] / cnt[i] : NAN;
    for (int row = 0; st == KS_OK && rep->row_avg && row < rows; row++)
        rep->row_avg[row] = row_cnt[row] ? row_sum[row] / row_cnt[row] : NAN;
    free(sum);
    free(cnt);
    free(row_sum);
    free(row_cnt);
    return st;
}

ks_status ks_report_load(ks_report *rep, const char *const *paths, int n_paths) {
    KS_ASSERT(n_paths > 0);
    memset(rep, 0, sizeof *rep);
    ks_results_data *d = ks_calloc((size_t)n_paths, sizeof *d, "report inputs");
    if (!d) return KS_ERR_NOMEM;
    ks_status st = KS_OK;
    for (int f = 0; f < n_paths && st == KS_OK; f++) st = ks_results_read(paths[f], &d[f]);
    rep->by_method = n_paths > 1;
    if (st == KS_OK) st = collect_lengths(rep, d, n_paths);
    if (st == KS_OK) st = rep->by_method ? collect_methods(rep, d, paths, n_paths) : collect_tasks(rep, d);
    if (st == KS_OK) st = make_title(rep, d, n_paths);
    if (st == KS_OK) st = fill(rep, d, n_paths);
    for (int f = 0; f < n_paths; f++) ks_results_data_free(&d[f]);
    free(d);
    if (st != KS_OK) ks_report_free(rep);
    return st;
}

void ks_report_free(ks_report *rep) {
    if (!rep) return;
    for (int c = 0; c < rep->n_cols; c++) free(rep->cols[c]);
    free(rep->cols);
    free(rep->lengths);
    free(rep->score);
    free(rep->row_avg);
    free(rep->row_seconds);
    free(rep->wall_seconds);
    free(rep->title);
    memset(rep, 0, sizeof *rep);
}

/* ---- printing ------------------------------------------------------------------------------------------ */

void ks_report_length_label(int length, char *out, size_t cap) {
    if (length == 0) snprintf(out, cap, "all");
    else if (length % 1024 == 0) snprintf(out, cap, "%dK", length / 1024);
    else snprintf(out, cap, "%d", length);
}

static void hms(double s, char *out, size_t cap) {
    long t = lround(s);
    snprintf(out, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

/* One cell: Markdown "94.83" / "-", CSV "94.8333" / "". */
static void put_score(FILE *out, ks_report_format fmt, double v) {
    if (isnan(v)) fputs(fmt == KS_REPORT_MD ? " - |" : ",", out);
    else fprintf(out, fmt == KS_REPORT_MD ? " %.2f |" : ",%.4f", v);
}

static void put_seconds(FILE *out, ks_report_format fmt, double s) {
    char buf[32];
    hms(s, buf, sizeof buf);
    if (fmt == KS_REPORT_MD) fprintf(out, " %s |", buf);
    else fprintf(out, ",%.3f", s);
}

/* A CSV field, quoted when it holds a comma, quote or newline. */
static void put_csv_text(FILE *out, const char *s) {
    if (!strpbrk(s, ",\"\n")) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"') fputc('"', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

static void print_header(const ks_report *rep, FILE *out, ks_report_format fmt) {
    int md = fmt == KS_REPORT_MD;
    fputs(md ? "| Sequence Length |" : "length", out);
    for (int c = 0; c < rep->n_cols; c++) {
        if (md) fprintf(out, " %s |", rep->cols[c]);
        else {
            fputc(',', out);
            put_csv_text(out, rep->cols[c]);
        }
    }
    if (!rep->by_method) fputs(md ? " Avg | Time |" : ",avg,seconds", out);
    fputc('\n', out);
    if (!md) return;
    int n = rep->n_cols + 1 + (rep->by_method ? 0 : 2);
    fputc('|', out);
    for (int c = 0; c < n; c++) fputs(" --- |", out);
    fputc('\n', out);
}

ks_status ks_report_print(const ks_report *rep, FILE *out, ks_report_format fmt, const char *what) {
    int md = fmt == KS_REPORT_MD;
    if (md && rep->title[0]) fprintf(out, "**%s** (%d samples)\n\n", rep->title, rep->n_samples);
    print_header(rep, out, fmt);
    for (int row = 0; row <= rep->n_lengths; row++) {
        char label[32];
        if (row == rep->n_lengths) snprintf(label, sizeof label, md ? "Avg" : "avg");
        else if (md) ks_report_length_label(rep->lengths[row], label, sizeof label);
        else snprintf(label, sizeof label, "%d", rep->lengths[row]);
        fprintf(out, md ? "| %s |" : "%s", label);
        for (int c = 0; c < rep->n_cols; c++) put_score(out, fmt, rep->score[row * rep->n_cols + c]);
        if (!rep->by_method) {
            put_score(out, fmt, rep->row_avg[row]);
            put_seconds(out, fmt, rep->row_seconds[row]);
        }
        fputc('\n', out);
    }
    if (rep->by_method) {
        fputs(md ? "| Reasoning time |" : "wall_seconds", out);
        for (int c = 0; c < rep->n_cols; c++) put_seconds(out, fmt, rep->wall_seconds[c]);
        fputc('\n', out);
    }
    if (fflush(out) != 0 || ferror(out)) return ks_fail(KS_ERR_IO, "%s: write failed", what);
    return KS_OK;
}
