/* results_table.c — tables of 1-D extendible column datasets (see results_impl.h). */
#include <stdlib.h>
#include <string.h>

#include "results/h5_check.h"
#include "results/results_impl.h"

#define KS_DEFLATE_LEVEL 4

static size_t col_size(ks_col_type t) {
    switch (t) {
    case KS_COL_I32: return sizeof(int);
    case KS_COL_I64: return sizeof(int64_t);
    case KS_COL_U64: return sizeof(uint64_t);
    case KS_COL_F32: return sizeof(float);
    case KS_COL_F64: return sizeof(double);
    case KS_COL_TASK: return KS_TASK_MAX;
    case KS_COL_TEXT: return sizeof(char *);
    }
    return 0;
}

static H5T_class_t col_class(ks_col_type t) {
    switch (t) {
    case KS_COL_I32: case KS_COL_I64: case KS_COL_U64: return H5T_INTEGER;
    case KS_COL_F32: case KS_COL_F64: return H5T_FLOAT;
    case KS_COL_TASK: case KS_COL_TEXT: return H5T_STRING;
    }
    return H5T_NO_CLASS;
}

/* A new datatype id (the caller closes it): the file type (little-endian) or the memory type of a column. */
static hid_t col_type(ks_col_type t, int in_file) {
    switch (t) {
    case KS_COL_I32: return H5Tcopy(in_file ? H5T_STD_I32LE : H5T_NATIVE_INT);
    case KS_COL_I64: return H5Tcopy(in_file ? H5T_STD_I64LE : H5T_NATIVE_INT64);
    case KS_COL_U64: return H5Tcopy(in_file ? H5T_STD_U64LE : H5T_NATIVE_UINT64);
    case KS_COL_F32: return H5Tcopy(in_file ? H5T_IEEE_F32LE : H5T_NATIVE_FLOAT);
    case KS_COL_F64: return H5Tcopy(in_file ? H5T_IEEE_F64LE : H5T_NATIVE_DOUBLE);
    case KS_COL_TASK:
    case KS_COL_TEXT: {
        hid_t s = H5Tcopy(H5T_C_S1);
        if (s < 0) return s;
        if (H5Tset_size(s, t == KS_COL_TASK ? KS_TASK_MAX : H5T_VARIABLE) < 0 || H5Tset_cset(s, H5T_CSET_UTF8) < 0 ||
            H5Tset_strpad(s, H5T_STR_NULLTERM) < 0) {
            H5Tclose(s);
            return -1;
        }
        return s;
    }
    }
    return -1;
}

ks_status ks_scratch_reserve(ks_scratch *s, size_t n) {
    if (n <= s->cap) return KS_OK;
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < n) cap *= 2;
    void *p = realloc(s->p, cap);
    if (!p) return ks_fail(KS_ERR_NOMEM, "out of memory growing a results buffer to %zu bytes", cap);
    s->p = p;
    s->cap = cap;
    return KS_OK;
}

static ks_status alloc_dsets(ks_table *t, const ks_table_spec *spec) {
    t->spec = spec;
    t->group = H5I_INVALID_HID;
    t->n_rows = 0;
    t->dsets = ks_malloc((size_t)spec->n_cols * sizeof(hid_t), "result table columns");
    if (!t->dsets) return KS_ERR_NOMEM;
    for (int c = 0; c < spec->n_cols; c++) t->dsets[c] = H5I_INVALID_HID;
    return KS_OK;
}

/* Creates one empty column of `t`. */
static ks_status create_column(ks_table *t, int c, int deflate) {
    const ks_column *col = &t->spec->cols[c];
    ks_status st = KS_OK;
    hsize_t zero = 0, unlimited = H5S_UNLIMITED, chunk = t->spec->chunk;
    hid_t space = H5I_INVALID_HID, dcpl = H5I_INVALID_HID, ftype = H5I_INVALID_HID;
    H5_TRY_GOTO(st, space = H5Screate_simple(1, &zero, &unlimited), done);
    H5_TRY_GOTO(st, dcpl = H5Pcreate(H5P_DATASET_CREATE), done);
    H5_TRY_GOTO(st, H5Pset_chunk(dcpl, 1, &chunk), done);
    if (deflate && col->type != KS_COL_TEXT) { /* variable-length data lives in the heap, uncompressed */
        H5_TRY_GOTO(st, H5Pset_shuffle(dcpl), done);
        H5_TRY_GOTO(st, H5Pset_deflate(dcpl, KS_DEFLATE_LEVEL), done);
    }
    H5_TRY_GOTO(st, ftype = col_type(col->type, 1), done);
    H5_TRY_GOTO(st, t->dsets[c] = H5Dcreate2(t->group, col->name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT),
                done);
    st = ks_attr_write_str(t->dsets[c], "description", col->description);
done:
    if (ftype >= 0) H5Tclose(ftype);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    return st;
}

/* Whether the columns are compressed (the filters this HDF5 build has). */
static int deflate_available(void) {
    return H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0 && H5Zfilter_avail(H5Z_FILTER_SHUFFLE) > 0;
}

ks_status ks_table_create(ks_table *t, hid_t file, const ks_table_spec *spec) {
    KS_TRY(alloc_dsets(t, spec));
    /* Tracked creation order: h5py (hence pandas) lists the columns in the spec's order, not by name. */
    hid_t gcpl;
    H5_CHECK(gcpl = H5Pcreate(H5P_GROUP_CREATE));
    if (H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) >= 0)
        t->group = H5Gcreate2(file, spec->group, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    H5_CHECK(t->group); /* still H5I_INVALID_HID if either call failed */
    for (int c = 0; c < spec->n_cols; c++) KS_TRY(create_column(t, c, deflate_available()));
    return KS_OK;
}

/* Opens column c and returns its length in *len after checking its shape and class. */
static ks_status open_column(ks_table *t, int c, const char *path, hsize_t *len) {
    const ks_column *col = &t->spec->cols[c];
    if (H5Lexists(t->group, col->name, H5P_DEFAULT) <= 0)
        return ks_fail(KS_ERR_FORMAT, "%s: /%s has no column '%s' (not a complete kvscope result file)", path,
                       t->spec->group, col->name);
    H5_CHECK(t->dsets[c] = H5Dopen2(t->group, col->name, H5P_DEFAULT));
    hid_t space = H5Dget_space(t->dsets[c]), type = H5Dget_type(t->dsets[c]);
    int ndims = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    if (ndims == 1) H5Sget_simple_extent_dims(space, len, NULL);
    H5T_class_t cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (ndims != 1 || cls != col_class(col->type))
        return ks_fail(KS_ERR_FORMAT, "%s: /%s/%s is not a 1-D %s column (not a kvscope result file?)", path,
                       t->spec->group, col->name, col_class(col->type) == H5T_STRING ? "string" : "numeric");
    return KS_OK;
}

/* Rows past a column's stored data read back as the fill value, at no cost to the file: a small file can claim
 * billions of rows. kvscope writes every row it counts (in whole chunks, from row 0), so a column whose length
 * runs past its allocated chunks (or, unchunked, its stored bytes) was not written by it, and is refused
 * before anything is allocated for those rows. */
static ks_status check_stored(const ks_table *t, int c, hsize_t len, const char *path) {
    hid_t d = t->dsets[c], dcpl, type;
    hsize_t chunk = 0, stored = 0;
    H5_CHECK(dcpl = H5Dget_create_plist(d));
    int chunked = H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 1, &chunk) == 1;
    H5Pclose(dcpl);
    if (chunked) {
        hsize_t n_chunks = 0;
        hid_t space;
        H5_CHECK(space = H5Dget_space(d));
        herr_t e = H5Dget_num_chunks(d, space, &n_chunks);
        H5Sclose(space);
        H5_CHECK(e);
        stored = n_chunks * chunk;
    } else {
        H5_CHECK(type = H5Dget_type(d));
        size_t esz = H5Tget_size(type);
        H5Tclose(type);
        stored = esz ? H5Dget_storage_size(d) / esz : 0;
    }
    if (len > stored)
        return ks_fail(KS_ERR_FORMAT, "%s: /%s/%s has %llu rows but stores data for %llu (not a complete kvscope "
                       "result file)", path, t->spec->group, t->spec->cols[c].name, (unsigned long long)len,
                       (unsigned long long)stored);
    return KS_OK;
}

static ks_status write_rows(ks_table *t, int c, hsize_t start, hsize_t count, const void *buf);

/* An added column (ks_column.added) a file lacks: created with 0 for its t->n_rows rows when the file is open for
 * writing; else left closed, read as 0. */
static ks_status add_column(ks_table *t, hid_t file, int c) {
    unsigned intent = 0;
    H5_CHECK(H5Fget_intent(file, &intent));
    if (!(intent & H5F_ACC_RDWR)) return KS_OK;
    KS_TRY(create_column(t, c, deflate_available()));
    if (!t->n_rows) return KS_OK;
    void *zeros = ks_calloc((size_t)t->n_rows, col_size(t->spec->cols[c].type), "a results column");
    if (!zeros) return KS_ERR_NOMEM;
    ks_status st = write_rows(t, c, 0, (hsize_t)t->n_rows, zeros);
    free(zeros);
    return st;
}

ks_status ks_table_open(ks_table *t, hid_t file, const ks_table_spec *spec, const char *path) {
    KS_TRY(alloc_dsets(t, spec));
    if (H5Lexists(file, spec->group, H5P_DEFAULT) <= 0)
        return ks_fail(KS_ERR_FORMAT, "%s: no /%s group (not a complete kvscope result file)", path, spec->group);
    H5_CHECK(t->group = H5Gopen2(file, spec->group, H5P_DEFAULT));
    for (int c = 0; c < spec->n_cols; c++) {
        hsize_t len = 0;
        const ks_col_type type = spec->cols[c].type;
        KS_ASSERT(!spec->cols[c].added || (c > 0 && type != KS_COL_TEXT && type != KS_COL_TASK)); /* numeric */
        if (spec->cols[c].added && H5Lexists(t->group, spec->cols[c].name, H5P_DEFAULT) <= 0) {
            KS_TRY(add_column(t, file, c));
            continue;
        }
        KS_TRY(open_column(t, c, path, &len));
        KS_TRY(check_stored(t, c, len, path));
        if (c == 0) t->n_rows = (int64_t)len;
        else if ((int64_t)len != t->n_rows)
            return ks_fail(KS_ERR_FORMAT, "%s: /%s columns differ in length ('%s' %lld rows, '%s' %llu)", path,
                           spec->group, spec->cols[0].name, (long long)t->n_rows, spec->cols[c].name,
                           (unsigned long long)len);
    }
    return KS_OK;
}

/* Writes `buf` (count values of the column's memory type) at rows [start, start + count) of column c. */
static ks_status write_rows(ks_table *t, int c, hsize_t start, hsize_t count, const void *buf) {
    ks_status st = KS_OK;
    hsize_t size = start + count;
    hid_t fspace = H5I_INVALID_HID, mspace = H5I_INVALID_HID, mtype = H5I_INVALID_HID;
    H5_TRY_GOTO(st, H5Dset_extent(t->dsets[c], &size), done);
    H5_TRY_GOTO(st, fspace = H5Dget_space(t->dsets[c]), done);
    H5_TRY_GOTO(st, H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, NULL, &count, NULL), done);
    H5_TRY_GOTO(st, mspace = H5Screate_simple(1, &count, NULL), done);
    H5_TRY_GOTO(st, mtype = col_type(t->spec->cols[c].type, 0), done);
    H5_TRY_GOTO(st, H5Dwrite(t->dsets[c], mtype, mspace, fspace, H5P_DEFAULT, buf), done);
done:
    if (mtype >= 0) H5Tclose(mtype);
    if (mspace >= 0) H5Sclose(mspace);
    if (fspace >= 0) H5Sclose(fspace);
    return st;
}

ks_status ks_table_append(ks_table *t, const void *rows, int64_t n, ks_scratch *scratch) {
    if (n <= 0) return KS_OK;
    const ks_table_spec *spec = t->spec;
    for (int c = 0; c < spec->n_cols; c++) {
        const ks_column *col = &spec->cols[c];
        size_t esz = col_size(col->type);
        KS_TRY(ks_scratch_reserve(scratch, (size_t)n * esz));
        char *dst = scratch->p;
        for (int64_t i = 0; i < n; i++) {
            const char *src = (const char *)rows + (size_t)i * spec->row_size + col->offset;
            if (col->type == KS_COL_TEXT) {
                const char *s = *(char *const *)src;
                ((const char **)scratch->p)[i] = s ? s : "";
            } else {
                memcpy(dst + (size_t)i * esz, src, esz);
            }
        }
        KS_TRY(write_rows(t, c, (hsize_t)t->n_rows, (hsize_t)n, scratch->p));
    }
    t->n_rows += n;
    return KS_OK;
}

/* Moves n values read from column `col` (buf) into the row structs; TEXT values are copied. */
static ks_status scatter(const ks_table_spec *spec, const ks_column *col, const char *buf, void *rows, int64_t n) {
    size_t esz = col_size(col->type);
    for (int64_t i = 0; i < n; i++) {
        char *dst = (char *)rows + (size_t)i * spec->row_size + col->offset;
        if (col->type == KS_COL_TEXT) {
            const char *s = ((char *const *)buf)[i];
            char *copy = strdup(s ? s : "");
            if (!copy) return ks_fail(KS_ERR_NOMEM, "out of memory reading /%s/%s", spec->group, col->name);
            *(char **)dst = copy;
        } else {
            memcpy(dst, buf + (size_t)i * esz, esz);
            if (col->type == KS_COL_TASK) dst[KS_TASK_MAX - 1] = '\0';
        }
    }
    return KS_OK;
}

/* Reads rows [0, n) of column c into the row structs. */
static ks_status read_column(const ks_table *t, int c, void *rows, int64_t n) {
    const ks_column *col = &t->spec->cols[c];
    ks_status st = KS_OK;
    hsize_t start = 0, count = (hsize_t)n;
    hid_t fspace = H5I_INVALID_HID, mspace = H5I_INVALID_HID, mtype = H5I_INVALID_HID;
    int have_vlen = 0;
    char *buf = t->dsets[c] < 0 ? ks_calloc((size_t)n, col_size(col->type), "a results column") /* added: 0 */
                                : ks_malloc((size_t)n * col_size(col->type), "a results column");
    if (!buf) return KS_ERR_NOMEM;
    if (t->dsets[c] < 0) {
        st = scatter(t->spec, col, buf, rows, n);
        free(buf);
        return st;
    }
    H5_TRY_GOTO(st, fspace = H5Dget_space(t->dsets[c]), done);
    H5_TRY_GOTO(st, H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, NULL, &count, NULL), done);
    H5_TRY_GOTO(st, mspace = H5Screate_simple(1, &count, NULL), done);
    H5_TRY_GOTO(st, mtype = col_type(col->type, 0), done);
    H5_TRY_GOTO(st, H5Dread(t->dsets[c], mtype, mspace, fspace, H5P_DEFAULT, buf), done);
    have_vlen = col->type == KS_COL_TEXT;
    st = scatter(t->spec, col, buf, rows, n);
done:
    if (have_vlen) H5Dvlen_reclaim(mtype, mspace, H5P_DEFAULT, buf);
    free(buf);
    if (mtype >= 0) H5Tclose(mtype);
    if (mspace >= 0) H5Sclose(mspace);
    if (fspace >= 0) H5Sclose(fspace);
    return st;
}

ks_status ks_table_read(const ks_table *t, void *rows, int64_t n) {
    for (int c = 0; c < t->spec->n_cols && n > 0; c++) KS_TRY(read_column(t, c, rows, n));
    return KS_OK;
}

ks_status ks_table_read_column(const ks_table *t, const char *name, void *rows, int64_t n) {
    for (int c = 0; c < t->spec->n_cols; c++)
        if (!strcmp(t->spec->cols[c].name, name)) return n > 0 ? read_column(t, c, rows, n) : KS_OK;
    KS_ASSERT(!"no such column");
    return KS_ERR_ARG;
}

void ks_table_close(ks_table *t) {
    if (!t->dsets) return; /* zeroed, or nothing was opened */
    for (int c = 0; c < t->spec->n_cols; c++)
        if (t->dsets[c] >= 0) H5Dclose(t->dsets[c]);
    if (t->group >= 0) H5Gclose(t->group);
    free(t->dsets);
    memset(t, 0, sizeof *t);
}
