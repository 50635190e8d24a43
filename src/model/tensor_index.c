/* tensor_index.c — the format-independent part of ks_tensor_index: entries, lookup, fp32 conversion. */
#include "model/tensor_index.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/dequant.h"

const char *ks_dtype_name(ks_dtype t) {
    switch (t) {
    case KS_DTYPE_F32: return "F32";
    case KS_DTYPE_F16: return "F16";
    case KS_DTYPE_BF16: return "BF16";
    case KS_DTYPE_Q8_0: return "Q8_0";
    case KS_DTYPE_Q4_0: return "Q4_0";
    case KS_DTYPE_Q4_1: return "Q4_1";
    case KS_DTYPE_Q4_K: return "Q4_K";
    case KS_DTYPE_Q6_K: return "Q6_K";
    }
    return "?";
}

ks_tensor_info *ks_tensor_index_add(ks_tensor_index *ix, const char *name, size_t len) {
    if (ix->n == ix->cap) {
        int cap = ix->cap ? 2 * ix->cap : 64;
        ks_tensor_info *t = realloc(ix->tensors, (size_t)cap * sizeof *t);
        if (!t) {
            ks_fail(KS_ERR_NOMEM, "out of memory growing the tensor index to %d entries", cap);
            return NULL;
        }
        ix->tensors = t;
        ix->cap = cap;
    }
    ks_tensor_info *t = &ix->tensors[ix->n];
    memset(t, 0, sizeof *t);
    t->name = ks_malloc(len + 1, "a tensor name");
    if (!t->name) return NULL;
    memcpy(t->name, name, len);
    t->name[len] = '\0';
    ix->n++;
    return t;
}

static int cmp_index(const void *a, const void *b, void *tensors) {
    const ks_tensor_info *t = tensors;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

ks_status ks_tensor_index_finish(ks_tensor_index *ix, const char *what) {
    free(ix->by_name);
    ix->by_name = ks_malloc((size_t)(ix->n ? ix->n : 1) * sizeof *ix->by_name, "the tensor name index");
    if (!ix->by_name) return KS_ERR_NOMEM;
    for (int i = 0; i < ix->n; i++) ix->by_name[i] = i;
    qsort_r(ix->by_name, (size_t)ix->n, sizeof *ix->by_name, cmp_index, ix->tensors);
    for (int i = 1; i < ix->n; i++) {
        const ks_tensor_info *a = &ix->tensors[ix->by_name[i - 1]], *b = &ix->tensors[ix->by_name[i]];
        if (strcmp(a->name, b->name)) continue;
        const char *fa = a->file_name ? a->file_name : a->name, *fb = b->file_name ? b->file_name : b->name;
        if (strcmp(fa, fb))
            return ks_fail(KS_ERR_FORMAT, "%s: tensors '%s' and '%s' are both read as %s (keep one of them)", what,
                           fa, fb, a->name);
        if (a->file == b->file) return ks_fail(KS_ERR_FORMAT, "%s: tensor '%s' appears twice", what, fa);
        return ks_fail(KS_ERR_FORMAT, "%s: tensor '%s' appears twice (in %s and %s)", what, fa,
                       ks_tensor_file(ix, a), ks_tensor_file(ix, b));
    }
    return KS_OK;
}

const ks_tensor_info *ks_tensor_index_find(const ks_tensor_index *ix, const char *name) {
    int lo = 0, hi = ix->n - 1;
    while (lo <= hi) { /* binary search over by_name */
        int mid = lo + (hi - lo) / 2;
        const ks_tensor_info *t = &ix->tensors[ix->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

const char *ks_tensor_label(const ks_tensor_index *ix, const char *name, char *buf, size_t cap) {
    const ks_tensor_info *t = ks_tensor_index_find(ix, name);
    char derived[320];
    const char *file_name = t ? t->file_name : NULL;
    if (!t && ix->gguf) {
        ks_gguf_tensor_name(name, derived, sizeof derived);
        file_name = derived;
    }
    if (file_name && strcmp(file_name, name)) snprintf(buf, cap, "'%s' (%s)", file_name, name);
    else snprintf(buf, cap, "'%s'", name);
    return buf;
}

const char *ks_tensor_file(const ks_tensor_index *ix, const ks_tensor_info *t) {
    return t->file >= 0 && t->file < ix->n_files && ix->files[t->file].path ? ix->files[t->file].path : "?";
}

void ks_tensor_index_free(ks_tensor_index *ix) {
    if (!ix) return;
    for (int i = 0; i < ix->n; i++) {
        free(ix->tensors[i].name);
        free(ix->tensors[i].file_name);
    }
    free(ix->tensors);
    for (int i = 0; ix->files && i < ix->n_files; i++) ks_file_unmap(&ix->files[i]);
    free(ix->files);
    free(ix->by_name);
    memset(ix, 0, sizeof *ix);
}

int64_t ks_tensor_numel(const ks_tensor_info *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

int64_t ks_tensor_row_len(const ks_tensor_info *t) { return t->shape[t->ndim - 1]; }

void ks_tensor_rows_to_f32(const ks_tensor_info *t, int64_t row0, int64_t nrows, float *dst) {
    const int64_t row_len = ks_tensor_row_len(t);
    const size_t row_bytes = (size_t)row_len / ks_dtype_block_elems(t->dtype) * ks_dtype_block_bytes(t->dtype);
    KS_ASSERT(row0 >= 0 && nrows >= 0 && (row0 + nrows) * row_len <= ks_tensor_numel(t));
    ks_dequant(t->dtype, t->data + (size_t)row0 * row_bytes, dst, (size_t)(nrows * row_len));
}

ks_status ks_tensor_to_f32(const ks_tensor_info *t, float *dst) {
    if (ks_tensor_numel(t) == 0) return KS_OK;
    ks_tensor_rows_to_f32(t, 0, ks_tensor_numel(t) / ks_tensor_row_len(t), dst);
    return KS_OK;
}
