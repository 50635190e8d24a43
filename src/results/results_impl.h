/* results_impl.h — internals shared by src/results/results_*.c (not a public interface).
 *
 * A table is an HDF5 group of 1-D extendible column datasets of equal length. A table spec lists the columns
 * as (name, type, offset of the field in a C row struct), so one gather/scatter routine moves rows of any
 * struct in and out of the file: /samples rows are ks_result, /layers rows are ks_layer_row.
 */
#ifndef KS_RESULTS_IMPL_H
#define KS_RESULTS_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <hdf5.h>

#include "results/results.h"

typedef enum ks_col_type {
    KS_COL_I32,  /* int */
    KS_COL_I64,  /* int64_t */
    KS_COL_U64,  /* uint64_t */
    KS_COL_F32,  /* float */
    KS_COL_F64,  /* double */
    KS_COL_TASK, /* char[KS_TASK_MAX], stored as a fixed-length UTF-8 string */
    KS_COL_TEXT, /* char * (NULL = ""), stored as a variable-length UTF-8 string */
} ks_col_type;

typedef struct ks_column {
    const char *name;
    ks_col_type type;
    size_t offset;           /* of the field in the row struct */
    const char *description; /* stored as the dataset's 'description' attribute */
    int added;               /* 1: a numeric column younger than the result format: a file without it reads 0
                                there, and gains it (0 for its rows) when opened for writing */
} ks_column;

typedef struct ks_table_spec {
    const char *group;       /* "samples", "layers" */
    const ks_column *cols;   /* (n_cols) */
    int n_cols;
    size_t row_size;         /* sizeof the row struct */
    hsize_t chunk;           /* rows per chunk */
} ks_table_spec;

typedef struct ks_table {
    const ks_table_spec *spec;
    hid_t group;
    hid_t *dsets;            /* (spec->n_cols) open datasets */
    int64_t n_rows;
} ks_table;

/* One /layers row: the sample's key, then its statistics. */
typedef struct ks_layer_row {
    int64_t sample;          /* row number in /samples */
    char task[KS_TASK_MAX];
    int length, index;
    ks_layer_stat stat;
} ks_layer_row;

extern const ks_table_spec ks_samples_spec; /* rows: ks_result */
extern const ks_table_spec ks_layers_spec;  /* rows: ks_layer_row */

/* A growable byte buffer (grow-only; reused across appends). */
typedef struct ks_scratch {
    void *p;
    size_t cap;
} ks_scratch;
ks_status ks_scratch_reserve(ks_scratch *s, size_t n);

/* Fills rows->p with r->n_layers ks_layer_row: the key of /samples row `sample`, then r's statistics. */
ks_status ks_layer_rows_build(const ks_result *r, int64_t sample, ks_scratch *rows);
/* Gives rows[0..n_rows) their layer statistics from the /layers rows lr[0..n_lr), in file order; a row that
 * points outside /samples is a format error naming `path`. */
ks_status ks_layer_rows_attach(ks_result *rows, int n_rows, const ks_layer_row *lr, int64_t n_lr,
                               const char *path);

/* Creates the group and its empty columns (chunked, unlimited, shuffle + deflate where available). */
ks_status ks_table_create(ks_table *t, hid_t file, const ks_table_spec *spec);
/* Opens an existing table and checks it (every column present, 1-D, of the right class, equal lengths);
 * errors name `path` and the column. */
ks_status ks_table_open(ks_table *t, hid_t file, const ks_table_spec *spec, const char *path);
/* Appends n rows (an array of spec->row_size structs); scratch holds one gathered column. */
ks_status ks_table_append(ks_table *t, const void *rows, int64_t n, ks_scratch *scratch);
/* Reads rows [0, n) into an array of n zeroed row structs; TEXT fields become owned strings (free()). */
ks_status ks_table_read(const ks_table *t, void *rows, int64_t n);
/* The same for the one column called `name` (which the spec must have). */
ks_status ks_table_read_column(const ks_table *t, const char *name, void *rows, int64_t n);
void ks_table_close(ks_table *t);

/* Root attributes (results_attrs.c). String values are written as variable-length UTF-8. */
ks_status ks_attr_write_str(hid_t loc, const char *name, const char *value);
ks_status ks_attr_write_f64(hid_t loc, const char *name, double value);
ks_status ks_attr_write_i32(hid_t loc, const char *name, int value);
/* Reads a string attribute (variable or fixed length) into an owned string; a missing attribute gives
 * *out = NULL and KS_OK. */
ks_status ks_attr_read_str(hid_t loc, const char *name, char **out);
/* Numeric attributes; missing ones leave *out unchanged. */
ks_status ks_attr_read_f64(hid_t loc, const char *name, double *out);
ks_status ks_attr_read_i32(hid_t loc, const char *name, int *out);

/* The meta string attributes, as (attribute name, offset of the field in ks_results_meta). */
typedef struct ks_meta_attr {
    const char *name;
    size_t offset;
} ks_meta_attr;
extern const ks_meta_attr ks_meta_attrs[];
extern const int ks_n_meta_attrs;

/* Checks what a reader and a resuming writer both need before trusting a file: the HDF5 signature (else
 * "not an HDF5 file"), that HDF5 opens it with `fapl` (else "corrupt"), and the kvscope_format /
 * format_version attributes (else "not written by kvscope" / "newer format"). Returns the open file in *file.
 * `image_name` is the name HDF5 is given (the real path, or a unique name for an in-memory image). */
ks_status ks_results_open_checked(const char *path, const char *image_name, unsigned flags, hid_t fapl,
                                  hid_t *file);

/* The sorted set of recorded sample keys (results_resume.c). */
typedef struct ks_key_set {
    ks_sample_key *keys;     /* (n) sorted by (task, length, index) */
    int n, cap;
} ks_key_set;
/* Loads the keys of every /samples row; a duplicate key is a format error naming `path`. */
ks_status ks_key_set_load(ks_key_set *s, const ks_table *samples, const char *path);
int ks_key_set_contains(const ks_key_set *s, const char *task, int length, int index);
ks_status ks_key_set_insert(ks_key_set *s, const char *task, int length, int index);
void ks_key_set_free(ks_key_set *s);

/* The writer handle. */
struct ks_results {
    char *path;              /* owned: the result file */
    char *tmp_path;          /* owned: "<path>.kvscope-tmp", written then renamed over path */
    char *lock_path;         /* owned: "<path>.lock" */
    char *image_name;        /* owned: the name of the in-memory HDF5 file */
    int lock_fd;             /* -1 when no lock is held */
    int on_disk;             /* path holds our file (resumed, or committed once) */
    hid_t file;              /* the in-memory (core driver) HDF5 file */
    ks_table samples, layers;
    ks_key_set done;
    double wall_before;      /* wall_seconds of the earlier sessions */
    struct timespec session_start; /* CLOCK_MONOTONIC */
    ks_scratch image;        /* the file image of the last commit */
    ks_scratch column;       /* one gathered column */
    ks_scratch layer_rows;   /* ks_layer_row[] of the sample being appended */
    int broken;              /* an append failed: refuse further appends */
};

#endif
