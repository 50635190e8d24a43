/* fuzz_results.c — libFuzzer target: the result-file readers (ks_results_read, `kvscope report`, and the
 * writer's resume) on well-formed HDF5 files whose content is wrong.
 *
 * Mutating the bytes of an .h5 file mostly exercises HDF5's own parser, whose crashes on garbage are not
 * kvscope's to fix. What kvscope must survive is a valid HDF5 file that does not hold what it expects:
 * missing or extra attributes and columns, other types, ranks, lengths and values. So the input is a recipe:
 * at start-up the writer makes a valid result file with three samples and their layer rows; each run copies
 * it, applies the recipe's edits through the HDF5 API, and hands the edited file to the readers.
 *
 * Recipe: a sequence of edits, each an opcode byte followed by its operands (bytes past the end read as 0):
 *   0 DEL_ATTR a              delete root attribute a
 *   1 SET_ATTR a v            replace root attribute a by a value v (see `value` below)
 *   2 DEL_COL  c              delete column c (/samples or /layers)
 *   3 SET_COL  c v            replace column c by a dataset holding v
 *   4 EXTEND   c u32          grow column c to u32 rows (the baseline columns are extendible)
 *   5 POKE     c row v8...    overwrite one element of column c with bytes from the input
 *   6 DEL_GRP  g              delete /samples or /layers
 *   7 GRP_DSET g v            replace the group by a dataset
 *   8 LINK     c t            replace column c by a soft link to one of a few targets (dangling, a group...)
 *   9 COL_GRP  c              replace column c by an empty group
 * a value v is: type byte (string vlen/fixed, int8/32/64, uint64, float, double, compound), rank byte
 * (scalar, null, 1-D, 2-D) and dims, then the element bytes. Seeds: tests/fuzz/make_corpus.py.
 */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/file.h"
#include "fuzz_util.h"
#include "results/report.h"
#include "results/results.h"
#include "results/results_impl.h"

#define IDENTITY "benchmark_name: RULER\nmethod: SnapKV\n"
#define MAX_ELEMS 64 /* elements of one written value: small files, but more than the baseline's rows */

static char *baseline;       /* the valid file's bytes */
static size_t baseline_size;

/* ---- the recipe reader ----------------------------------------------------------------------------------- */

typedef struct recipe {
    const uint8_t *p;
    size_t n;
} recipe;

static unsigned take_u8(recipe *r) {
    if (!r->n) return 0;
    r->n--;
    return *r->p++;
}

static uint32_t take_u32(recipe *r) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v = v << 8 | take_u8(r);
    return v;
}

static void take_bytes(recipe *r, void *dst, size_t n) {
    for (size_t i = 0; i < n; i++) ((uint8_t *)dst)[i] = (uint8_t)take_u8(r);
}

/* ---- names ----------------------------------------------------------------------------------------------- */

static const char *const extra_attrs[] = {"kvscope_format", "format_version", "config_hash", "start_time",
                                          "end_time", "wall_seconds", "sessions"};
#define N_EXTRA_ATTRS (int)(sizeof extra_attrs / sizeof extra_attrs[0])

static const char *attr_name(unsigned i) {
    i %= (unsigned)(ks_n_meta_attrs + N_EXTRA_ATTRS);
    return (int)i < ks_n_meta_attrs ? ks_meta_attrs[i].name : extra_attrs[i - (unsigned)ks_n_meta_attrs];
}

static const ks_table_spec *group_spec(unsigned g) { return g % 2 ? &ks_layers_spec : &ks_samples_spec; }

/* "/samples/<col>" or "/layers/<col>" for column byte c (the two tables' columns in a row). */
static void column_path(unsigned c, char *buf, size_t cap) {
    c %= (unsigned)(ks_samples_spec.n_cols + ks_layers_spec.n_cols);
    const ks_table_spec *s = (int)c < ks_samples_spec.n_cols ? &ks_samples_spec : &ks_layers_spec;
    if (s == &ks_layers_spec) c -= (unsigned)ks_samples_spec.n_cols;
    snprintf(buf, cap, "/%s/%s", s->group, s->cols[c].name);
}

/* ---- values ---------------------------------------------------------------------------------------------- */

typedef struct value {
    hid_t type;    /* file and memory type (native layouts) */
    hid_t space;
    void *data;    /* elements in memory layout; for vlen strings an array of char * */
    char **strs;   /* vlen strings (owned), else NULL */
    size_t n;
} value;

typedef struct pair {
    int a;
    double b;
} pair;

static hid_t make_type(unsigned sel, recipe *r) {
    switch (sel % 9) {
    case 0: { hid_t t = H5Tcopy(H5T_C_S1); H5Tset_size(t, H5T_VARIABLE); H5Tset_cset(t, H5T_CSET_UTF8); return t; }
    case 1: { hid_t t = H5Tcopy(H5T_C_S1); H5Tset_size(t, 1 + take_u8(r) % 64); return t; }
    case 2: return H5Tcopy(H5T_NATIVE_INT8);
    case 3: return H5Tcopy(H5T_NATIVE_INT32);
    case 4: return H5Tcopy(H5T_NATIVE_INT64);
    case 5: return H5Tcopy(H5T_NATIVE_UINT64);
    case 6: return H5Tcopy(H5T_NATIVE_FLOAT);
    case 7: return H5Tcopy(H5T_NATIVE_DOUBLE);
    default: {
        hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(pair));
        H5Tinsert(t, "a", HOFFSET(pair, a), H5T_NATIVE_INT);
        H5Tinsert(t, "b", HOFFSET(pair, b), H5T_NATIVE_DOUBLE);
        return t;
    }
    }
}

/* Reads a value's type, shape and elements from the recipe. `extendible`: a 1-D shape gets an unlimited
 * maximum (needs chunked storage, which make_dataset sets up). */
static void value_read(recipe *r, value *v, int extendible) {
    memset(v, 0, sizeof *v);
    v->type = make_type(take_u8(r), r);
    unsigned rank = take_u8(r) % 4;
    hsize_t dims[2] = {take_u8(r) % MAX_ELEMS, 0}, unlimited = H5S_UNLIMITED;
    if (rank == 0) v->space = H5Screate(H5S_SCALAR);
    else if (rank == 1) v->space = H5Screate(H5S_NULL);
    else if (rank == 2) v->space = H5Screate_simple(1, dims, extendible ? &unlimited : NULL);
    else {
        dims[1] = 1 + take_u8(r) % 4;
        if (dims[0] * dims[1] > MAX_ELEMS) dims[0] = MAX_ELEMS / dims[1];
        v->space = H5Screate_simple(2, dims, NULL);
    }
    hssize_t n = H5Sget_simple_extent_npoints(v->space);
    v->n = n > 0 ? (size_t)n : 0;
    size_t esz = H5Tis_variable_str(v->type) > 0 ? sizeof(char *) : H5Tget_size(v->type);
    v->data = calloc(v->n ? v->n : 1, esz);
    if (H5Tis_variable_str(v->type) > 0) {
        v->strs = calloc(v->n ? v->n : 1, sizeof *v->strs);
        for (size_t i = 0; i < v->n; i++) {
            size_t len = take_u8(r) % 16;
            v->strs[i] = calloc(len + 1, 1);
            take_bytes(r, v->strs[i], len);
            ((char **)v->data)[i] = v->strs[i];
        }
    } else {
        take_bytes(r, v->data, v->n * esz);
    }
}

static void value_free(value *v) {
    for (size_t i = 0; v->strs && i < v->n; i++) free(v->strs[i]);
    free(v->strs);
    free(v->data);
    H5Tclose(v->type);
    H5Sclose(v->space);
}

/* ---- edits ----------------------------------------------------------------------------------------------- */

static void delete_link(hid_t f, const char *path) {
    if (H5Lexists(f, path, H5P_DEFAULT) > 0) H5Ldelete(f, path, H5P_DEFAULT);
}

static void set_attr(hid_t f, recipe *r) {
    const char *name = attr_name(take_u8(r));
    value v;
    value_read(r, &v, 0);
    if (H5Aexists(f, name) > 0) H5Adelete(f, name);
    hid_t a = H5Acreate2(f, name, v.type, v.space, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) {
        H5Awrite(a, v.type, v.data);
        H5Aclose(a);
    }
    value_free(&v);
}

/* A dataset holding a recipe value at path (the link there, if any, is replaced). */
static void make_dataset(hid_t f, const char *path, recipe *r) {
    value v;
    value_read(r, &v, 1);
    delete_link(f, path);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t maxdim = 0, chunk = 8;
    if (H5Sget_simple_extent_ndims(v.space) == 1 && H5Sget_simple_extent_dims(v.space, NULL, &maxdim) == 1 &&
        maxdim == H5S_UNLIMITED)
        H5Pset_chunk(dcpl, 1, &chunk);
    hid_t d = H5Dcreate2(f, path, v.type, v.space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (d >= 0) {
        if (v.n) H5Dwrite(d, v.type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data);
        H5Dclose(d);
    }
    H5Pclose(dcpl);
    value_free(&v);
}

/* Grows a 1-D column to `rows` rows, none of them written (they read as the fill value). Only growth: HDF5
 * itself takes minutes to shrink a column of billions of rows, which is no test of kvscope. */
static void extend_column(hid_t f, const char *path, uint32_t rows) {
    hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
    if (d < 0) return;
    hid_t space = H5Dget_space(d);
    hsize_t len = 0, n = rows;
    if (H5Sget_simple_extent_ndims(space) == 1 && H5Sget_simple_extent_dims(space, &len, NULL) == 1 && n > len)
        H5Dset_extent(d, &n);
    H5Sclose(space);
    H5Dclose(d);
}

/* Overwrites element `row` of a 1-D column with recipe bytes in the column's own class. */
static void poke(hid_t f, const char *path, recipe *r) {
    unsigned row = take_u8(r);
    hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
    if (d < 0) return;
    hid_t ftype = H5Dget_type(d), fspace = H5Dget_space(d);
    hsize_t len = 0, start, count = 1;
    if (H5Sget_simple_extent_ndims(fspace) == 1 && H5Sget_simple_extent_dims(fspace, &len, NULL) == 1 && len > 0) {
        start = row % len;
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, NULL, &count, NULL);
        hid_t mspace = H5Screate_simple(1, &count, NULL);
        if (H5Tis_variable_str(ftype) > 0) {
            char s[16] = {0};
            take_bytes(r, s, take_u8(r) % 16);
            const char *p = s;
            H5Dwrite(d, ftype, mspace, fspace, H5P_DEFAULT, &p);
        } else if (H5Tget_class(ftype) == H5T_STRING) {
            char s[256] = {0}; /* raw bytes, NUL or not: the fixed-length task column */
            take_bytes(r, s, H5Tget_size(ftype) < sizeof s ? H5Tget_size(ftype) : sizeof s);
            H5Dwrite(d, ftype, mspace, fspace, H5P_DEFAULT, s);
        } else {
            int64_t x;
            take_bytes(r, &x, sizeof x);
            H5Dwrite(d, H5T_NATIVE_INT64, mspace, fspace, H5P_DEFAULT, &x);
        }
        H5Sclose(mspace);
    }
    H5Sclose(fspace);
    H5Tclose(ftype);
    H5Dclose(d);
}

static void soft_link(hid_t f, const char *path, unsigned target) {
    static const char *const targets[] = {"/nowhere", "/samples", "/layers/task", "/samples/prediction", "/"};
    delete_link(f, path);
    H5Lcreate_soft(targets[target % 5], f, path, H5P_DEFAULT, H5P_DEFAULT);
}

static void apply(hid_t f, recipe *r) {
    char path[128];
    while (r->n) {
        unsigned op = take_u8(r) % 10;
        switch (op) {
        case 0: { const char *a = attr_name(take_u8(r)); if (H5Aexists(f, a) > 0) H5Adelete(f, a); break; }
        case 1: set_attr(f, r); break;
        case 2: column_path(take_u8(r), path, sizeof path); delete_link(f, path); break;
        case 3: column_path(take_u8(r), path, sizeof path); make_dataset(f, path, r); break;
        case 4: column_path(take_u8(r), path, sizeof path); extend_column(f, path, take_u32(r)); break;
        case 5: column_path(take_u8(r), path, sizeof path); poke(f, path, r); break;
        case 6: snprintf(path, sizeof path, "/%s", group_spec(take_u8(r))->group); delete_link(f, path); break;
        case 7:
            snprintf(path, sizeof path, "/%s", group_spec(take_u8(r))->group);
            make_dataset(f, path, r);
            break;
        case 8: column_path(take_u8(r), path, sizeof path); soft_link(f, path, take_u8(r)); break;
        default: {
            column_path(take_u8(r), path, sizeof path);
            delete_link(f, path);
            hid_t g = H5Gcreate2(f, path, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            if (g >= 0) H5Gclose(g);
        }
        }
    }
}

/* ---- the baseline and the readers ------------------------------------------------------------------------ */

static ks_results_meta meta(void) {
    return (ks_results_meta){.identity = IDENTITY, .version = "0.1.0", .git_revision = "fuzz",
                             .command_line = "fuzz_results", .model = "tiny", .benchmark = "RULER",
                             .method = "SnapKV"};
}

/* Three samples, two of them with layer rows. */
static void make_baseline(void) {
    char path[512];
    ks_fuzz_path(path, sizeof path, "baseline.h5");
    ks_results_meta m = meta();
    ks_results *w;
    if (ks_results_open(&w, path, &m) != KS_OK) goto fail;
    char prediction[] = "answer", answers[] = "[\"answer\"]";
    for (int i = 0; i < 3; i++) {
        ks_layer_stat layers[2] = {{.layer = 0, .kv_head = -1, .budget = 64, .kept = 64, .attn_mass_kept = 0.9f},
                                   {.layer = 1, .kv_head = 0, .budget = 64, .kept = 60, .attn_mass_kept = 0.8f}};
        ks_result res = {.length = 4096 << i, .index = i, .seed = 42u + (unsigned)i, .prompt_tokens = 4000,
                         .generated_tokens = 5, .prediction = prediction, .answers_json = answers,
                         .score = 50.0 * i, .prefill_s = 0.5, .decode_s = 0.25, .layers = layers,
                         .n_layers = i == 2 ? 0 : 2};
        snprintf(res.task, sizeof res.task, "%s", i ? "vt" : "niah_single_1");
        if (ks_results_append(w, &res) != KS_OK) goto fail;
    }
    if (ks_results_close(w) != KS_OK || ks_file_read_all(path, &baseline, &baseline_size) != KS_OK) goto fail;
    unlink(path);
    return;
fail:
    fprintf(stderr, "fuzz_results: cannot write the baseline result file: %s\n", ks_last_error());
    abort();
}

static void read_back(const char *path) {
    ks_results_data d;
    if (ks_results_read(path, &d) == KS_OK) ks_results_data_free(&d);
    ks_report rep = {0};
    const char *const paths[] = {path};
    if (ks_report_load(&rep, paths, 1) == KS_OK) {
        FILE *out = fopen("/dev/null", "w");
        if (out) {
            (void)ks_report_print(&rep, out, KS_REPORT_MD, "/dev/null");
            (void)ks_report_print(&rep, out, KS_REPORT_CSV, "/dev/null");
            fclose(out);
        }
        char svg[512];
        (void)ks_report_write_svg(&rep, ks_fuzz_path(svg, sizeof svg, "plot.svg"));
    }
    ks_report_free(&rep);
    /* the writer's resume reads the samples' keys before it appends anything */
    ks_results_meta m = meta();
    ks_results *w;
    if (ks_results_open(&w, path, &m) == KS_OK) (void)ks_results_close(w);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    ks_fuzz_quiet();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    make_baseline();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    ks_fuzz_write(ks_fuzz_path(path, sizeof path, "results.h5"), baseline, baseline_size);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) abort(); /* the baseline is valid: the harness is broken */
    recipe r = {data, size};
    apply(f, &r);
    H5Fclose(f);
    read_back(path);
    return 0;
}
