/* results_resume.c — the set of recorded (task, length, index) keys: what a resumed run skips. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "results/results_impl.h"

static int key_cmp(const ks_sample_key *a, const char *task, int length, int index) {
    int c = strcmp(a->task, task);
    if (c) return c;
    if (a->length != length) return a->length < length ? -1 : 1;
    if (a->index != index) return a->index < index ? -1 : 1;
    return 0;
}

static int key_qsort_cmp(const void *a, const void *b) {
    const ks_sample_key *kb = b;
    return key_cmp(a, kb->task, kb->length, kb->index);
}

/* The first position whose key is >= (task, length, index). */
static int lower_bound(const ks_key_set *s, const char *task, int length, int index) {
    int lo = 0, hi = s->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (key_cmp(&s->keys[mid], task, length, index) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

int ks_key_set_contains(const ks_key_set *s, const char *task, int length, int index) {
    int i = lower_bound(s, task, length, index);
    return i < s->n && key_cmp(&s->keys[i], task, length, index) == 0;
}

static ks_status reserve(ks_key_set *s, int n) {
    if (n <= s->cap) return KS_OK;
    int cap = s->cap ? s->cap : 256;
    while (cap < n) cap *= 2;
    ks_sample_key *k = realloc(s->keys, (size_t)cap * sizeof *k);
    if (!k) return ks_fail(KS_ERR_NOMEM, "out of memory for %d sample keys", cap);
    s->keys = k;
    s->cap = cap;
    return KS_OK;
}

ks_status ks_key_set_insert(ks_key_set *s, const char *task, int length, int index) {
    KS_TRY(reserve(s, s->n + 1));
    int i = lower_bound(s, task, length, index);
    memmove(&s->keys[i + 1], &s->keys[i], (size_t)(s->n - i) * sizeof s->keys[0]);
    memset(&s->keys[i], 0, sizeof s->keys[i]);
    snprintf(s->keys[i].task, KS_TASK_MAX, "%s", task);
    s->keys[i].length = length;
    s->keys[i].index = index;
    s->n++;
    return KS_OK;
}

ks_status ks_key_set_load(ks_key_set *s, const ks_table *samples, const char *path) {
    int n = (int)samples->n_rows;
    s->n = 0;
    if (n == 0) return KS_OK;
    KS_TRY(reserve(s, n));
    ks_result *rows = ks_calloc((size_t)n, sizeof *rows, "sample keys");
    if (!rows) return KS_ERR_NOMEM;
    ks_status st = ks_table_read_column(samples, "task", rows, n);
    if (st == KS_OK) st = ks_table_read_column(samples, "length", rows, n);
    if (st == KS_OK) st = ks_table_read_column(samples, "index", rows, n);
    for (int i = 0; st == KS_OK && i < n; i++) {
        memcpy(s->keys[i].task, rows[i].task, KS_TASK_MAX);
        s->keys[i].length = rows[i].length;
        s->keys[i].index = rows[i].index;
    }
    free(rows); /* only fixed-size fields were read */
    if (st != KS_OK) return st;
    s->n = n;
    qsort(s->keys, (size_t)n, sizeof s->keys[0], key_qsort_cmp);
    for (int i = 1; i < n; i++)
        if (!key_qsort_cmp(&s->keys[i - 1], &s->keys[i]))
            return ks_fail(KS_ERR_FORMAT, "%s: sample %s/%d/%d is recorded twice in /samples", path,
                           s->keys[i].task, s->keys[i].length, s->keys[i].index);
    return KS_OK;
}

void ks_key_set_free(ks_key_set *s) {
    free(s->keys);
    memset(s, 0, sizeof *s);
}
