/* check_results.c — the HDF5 result file and `kvscope report`: round trip of every field, resume, refusal of
 * a different configuration and of foreign/corrupt files (bytes left identical), durability under SIGKILL at
 * random moments, the writer lock, and the report's tables, CSV, SVG and command line. */
#include <check.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/file.h"
#include "results/report.h"
#include "results/results.h"
#include "test_util.h"

static const char *const tasks[] = {"niah_single_1", "vt", "cwe"};
static const int lengths[] = {4096, 8192, 16384, 32768};
static const char *IDENTITY = "benchmark_name: RULER\nlength: [4096, 8192, 16384, 32768]\nmethod: SnapKV\n";

/* Result number i: a unique (task, length, index), Unicode / empty / NULL predictions, 0..3 layer rows. */
static void make_result(ks_result *r, int i) {
    memset(r, 0, sizeof *r);
    snprintf(r->task, KS_TASK_MAX, "%s", tasks[i % 3]);
    r->length = lengths[(i / 3) % 4];
    r->index = i / 12;
    r->seed = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
    r->prompt_tokens = r->length - 17 * (i % 5);
    r->generated_tokens = i % 9;
    if (i % 5 != 1) { /* i % 5 == 1: no prediction at all (stored as "") */
        r->prediction = malloc(64);
        if (i % 5 == 0) r->prediction[0] = '\0';
        else snprintf(r->prediction, 64, "héllo → 世界 %d\nline two", i);
    }
    r->answers_json = malloc(64);
    snprintf(r->answers_json, 64, "[\"ans %d\", \"ü\"]", i);
    r->score = (i * 37) % 100 + 0.25 * (i % 4);
    r->prefill_s = 0.5 + i * 0.125;
    r->decode_s = 1.0 / (i + 1);
    r->peak_bytes = ((int64_t)1 << 33) + i;
    r->kv_bytes_before = 1000000LL * i;
    r->kv_bytes_after = 400000LL * i;
    r->n_layers = i % 4 == 3 ? 0 : 1 + i % 4;
    r->layers = r->n_layers ? calloc((size_t)r->n_layers, sizeof *r->layers) : NULL;
    for (int j = 0; j < r->n_layers; j++)
        r->layers[j] = (ks_layer_stat){.layer = j, .kv_head = j % 2 ? j : -1, .budget = 128 + j,
                                       .kept = 100 + i % 7 + j, .attn_mass_kept = 0.5f + 0.1f * j,
                                       .key_norm_mean = 1.5f * (i + 1), .key_norm_max = 3.25f * (j + 1),
                                       .sparse_density = 1.0f / (j + 1), .quant_error = 0.001f * i,
                                       .quant_error_v = 0.002f * j, .residual_k = i % 5 + j, .residual_v = 128,
                                       .kv_bytes = ((int64_t)1 << 33) + 7 * i + j};
}

static void assert_same(const ks_result *got, int i) {
    ks_result w;
    make_result(&w, i);
    ck_assert_str_eq(got->task, w.task);
    ck_assert_int_eq(got->length, w.length);
    ck_assert_int_eq(got->index, w.index);
    ck_assert_uint_eq(got->seed, w.seed);
    ck_assert_int_eq(got->prompt_tokens, w.prompt_tokens);
    ck_assert_int_eq(got->generated_tokens, w.generated_tokens);
    ck_assert_str_eq(got->prediction, w.prediction ? w.prediction : "");
    ck_assert_str_eq(got->answers_json, w.answers_json);
    ck_assert_double_eq(got->score, w.score);
    ck_assert_double_eq(got->prefill_s, w.prefill_s);
    ck_assert_double_eq(got->decode_s, w.decode_s);
    ck_assert_int_eq(got->peak_bytes, w.peak_bytes);
    ck_assert_int_eq(got->kv_bytes_before, w.kv_bytes_before);
    ck_assert_int_eq(got->kv_bytes_after, w.kv_bytes_after);
    ck_assert_int_eq(got->n_layers, w.n_layers);
    for (int j = 0; j < w.n_layers; j++)
        ck_assert_int_eq(memcmp(&got->layers[j], &w.layers[j], sizeof w.layers[j]), 0);
    ks_result_free(&w);
}

static ks_results_meta meta_for(const char *identity, const char *method) {
    return (ks_results_meta){.identity = identity, .version = "0.1.0", .git_revision = "abc123",
                             .command_line = "kvscope eval --cfg_path x.yaml", .model_config = "{\"layers\": 30}",
                             .method_options = "window_size: 32", .hardware = "test machine",
                             .model = "SmolLM2", .benchmark = "RULER", .method = method};
}

/* Appends results [from, to) through a fresh handle. */
static void write_range(const char *path, const char *identity, const char *method, int from, int to) {
    ks_results_meta meta = meta_for(identity, method);
    ks_results *r = NULL;
    ck_assert_msg(ks_results_open(&r, path, &meta) == KS_OK, "%s", ks_last_error());
    for (int i = from; i < to; i++) {
        ks_result res;
        make_result(&res, i);
        ck_assert_msg(ks_results_append(r, &res) == KS_OK, "%s", ks_last_error());
        ks_result_free(&res);
    }
    ck_assert_msg(ks_results_close(r) == KS_OK, "%s", ks_last_error());
}

/* Each test's scratch directory, made by setup() and removed by teardown(). */
static char tmp[4096];

static void setup(void) { snprintf(tmp, sizeof tmp, "%s", ks_test_tmpdir()); }

static void teardown(void) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "check_results: could not remove %s\n", tmp);
}

static char *join(const char *dir, const char *name) {
    static char buf[4][4096];
    static int k;
    k = (k + 1) % 4;
    return ks_path_join(buf[k], sizeof buf[k], dir, name);
}

static char *slurp(const char *path, size_t *n) {
    char *s = NULL;
    ck_assert_msg(ks_file_read_all(path, &s, n) == KS_OK, "%s", ks_last_error());
    return s;
}

START_TEST(test_round_trip) {
    const char *dir = tmp;
    const char *path = join(dir, "run.h5");
    write_range(path, IDENTITY, "SnapKV", 0, 20);
    ck_assert(!ks_file_exists(join(dir, "run.h5.lock")));
    ck_assert(!ks_file_exists(join(dir, "run.h5.kvscope-tmp")));
    ks_results_data d = {0};
    ck_assert_msg(ks_results_read(path, &d) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(d.n_rows, 20);
    for (int i = 0; i < d.n_rows; i++) assert_same(&d.rows[i], i);
    ks_results_meta m = meta_for(IDENTITY, "SnapKV");
    ck_assert_str_eq(d.meta.identity, m.identity);
    ck_assert_str_eq(d.meta.git_revision, m.git_revision);
    ck_assert_str_eq(d.meta.command_line, m.command_line);
    ck_assert_str_eq(d.meta.model_config, m.model_config);
    ck_assert_str_eq(d.meta.method_options, m.method_options);
    ck_assert_str_eq(d.meta.hardware, m.hardware);
    ck_assert_str_eq(d.meta.method, "SnapKV");
    ck_assert_int_eq(strlen(d.config_hash), 16);
    ck_assert_int_eq(strlen(d.start_time), 20);
    ck_assert(strcmp(d.end_time, d.start_time) >= 0);
    ck_assert(d.wall_seconds >= 0 && d.wall_seconds < 600);
    ck_assert_int_eq(d.sessions, 1);
    ks_results_data_free(&d);
}
END_TEST

START_TEST(test_resume) {
    const char *path = join(tmp, "run.h5");
    write_range(path, IDENTITY, "SnapKV", 0, 10);
    ks_results_meta meta = meta_for(IDENTITY, "SnapKV");
    ks_results *r = NULL;
    ck_assert_msg(ks_results_open(&r, path, &meta) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(ks_results_count(r), 10);
    for (int i = 0; i < 15; i++) {
        ks_result res;
        make_result(&res, i);
        ck_assert_int_eq(ks_results_is_done(r, res.task, res.length, res.index), i < 10);
        if (i >= 10) ck_assert_msg(ks_results_append(r, &res) == KS_OK, "%s", ks_last_error());
        ks_result_free(&res);
    }
    ks_result dup;
    make_result(&dup, 3);
    ck_assert_int_eq(ks_results_append(r, &dup), KS_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "already recorded"));
    ks_result_free(&dup);
    ck_assert_int_eq(ks_results_count(r), 15);
    ck_assert_int_eq(ks_results_close(r), KS_OK);
    ks_results_data d = {0};
    ck_assert_msg(ks_results_read(path, &d) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(d.n_rows, 15);
    for (int i = 0; i < d.n_rows; i++) assert_same(&d.rows[i], i);
    ck_assert_int_eq(d.sessions, 2);
    ks_results_data_free(&d);
}
END_TEST

/* Opening `path` as a writer (with IDENTITY) must fail with `st` and a message holding `needle`; the file's
 * bytes must not change, and no lock file may stay behind. The reader must refuse it too (unless skip_read). */
/* A file written before the /layers columns of value merging, channel pruning and sparse prefill existed
 * (deleted here) reads them as 0, and gains them, 0 for its rows, when a run resumes it. */
START_TEST(test_added_columns) {
    const char *path = join(tmp, "run.h5");
    const char *added[] = {"merges_prompt", "merges_decode",  "merge_prob_mean", "merge_dv_rel",
                           "channels_kept", "sparse_blocks", "sparse_coverage", "sparse_query_aware",
                           "sparse_djs"};
    const int n_added = (int)(sizeof added / sizeof added[0]);
    write_range(path, IDENTITY, "SnapKV", 0, 10);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT), g = H5Gopen2(f, "layers", H5P_DEFAULT);
    for (int i = 0; i < n_added; i++) ck_assert(H5Ldelete(g, added[i], H5P_DEFAULT) >= 0);
    H5Gclose(g), H5Fclose(f);
    ks_results_data d = {0};
    ck_assert_msg(ks_results_read(path, &d) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(d.n_rows, 10);
    for (int i = 0; i < d.n_rows; i++) assert_same(&d.rows[i], i);
    ks_results_data_free(&d);
    write_range(path, IDENTITY, "SnapKV", 10, 15);
    f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), g = H5Gopen2(f, "layers", H5P_DEFAULT);
    for (int i = 0; i < n_added; i++)
        ck_assert_msg(H5Lexists(g, added[i], H5P_DEFAULT) > 0, "%s not added", added[i]);
    H5Gclose(g), H5Fclose(f);
    ck_assert_msg(ks_results_read(path, &d) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(d.n_rows, 15);
    for (int i = 0; i < d.n_rows; i++) assert_same(&d.rows[i], i);
    ks_results_data_free(&d);
}
END_TEST

static void assert_refused(const char *path, const char *identity, ks_status st, const char *needle) {
    size_t n0, n1;
    char *before = slurp(path, &n0);
    ks_results_meta meta = meta_for(identity, "SnapKV");
    ks_results *r = (ks_results *)1;
    ks_status got = ks_results_open(&r, path, &meta);
    ck_assert_msg(got == st, "status %d: %s", got, ks_last_error());
    ck_assert_ptr_null(r);
    ck_assert_msg(strstr(ks_last_error(), needle) && strstr(ks_last_error(), path), "message: %s", ks_last_error());
    char *after = slurp(path, &n1);
    ck_assert_int_eq(n0, n1);
    ck_assert_int_eq(memcmp(before, after, n0), 0);
    char lock[4200];
    snprintf(lock, sizeof lock, "%s.lock", path);
    ck_assert(!ks_file_exists(lock));
    free(before);
    free(after);
}

START_TEST(test_other_configuration_refused) {
    const char *path = join(tmp, "run.h5");
    write_range(path, IDENTITY, "SnapKV", 0, 3);
    assert_refused(path, "benchmark_name: RULER\nlength: [4096]\nmethod: SnapKV\n", KS_ERR_ARG, "line 2");
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "--output"));
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "length: [4096]"));
}
END_TEST

static void write_text(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

START_TEST(test_foreign_files_refused) {
    const char *dir = tmp;
    ks_results_data d = {0};
    /* not HDF5 at all, and an empty file */
    const char *text = join(dir, "notes.h5");
    write_text(text, "these are my notes, not HDF5\n", 29);
    assert_refused(text, IDENTITY, KS_ERR_FORMAT, "not an HDF5 file");
    ck_assert_int_eq(ks_results_read(text, &d), KS_ERR_FORMAT);
    const char *empty = join(dir, "empty.h5");
    write_text(empty, "", 0);
    assert_refused(empty, IDENTITY, KS_ERR_FORMAT, "not an HDF5 file");
    /* HDF5, but not ours */
    const char *foreign = join(dir, "foreign.h5");
    hid_t f = H5Fcreate(foreign, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims = 4;
    hid_t sp = H5Screate_simple(1, &dims, NULL);
    H5Dclose(H5Dcreate2(f, "data", H5T_NATIVE_INT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(sp);
    H5Fclose(f);
    assert_refused(foreign, IDENTITY, KS_ERR_FORMAT, "did not write");
    ck_assert_int_eq(ks_results_read(foreign, &d), KS_ERR_FORMAT);
    /* ours, but truncated */
    const char *good = join(dir, "good.h5"), *cut = join(dir, "cut.h5");
    write_range(good, IDENTITY, "SnapKV", 0, 5);
    size_t n;
    char *bytes = slurp(good, &n);
    write_text(cut, bytes, n / 2);
    free(bytes);
    assert_refused(cut, IDENTITY, KS_ERR_FORMAT, "cannot be opened");
    ck_assert_int_eq(ks_results_read(cut, &d), KS_ERR_FORMAT);
    /* a directory, and a directory that does not exist */
    ks_results_meta meta = meta_for(IDENTITY, "SnapKV");
    ks_results *r = NULL;
    ck_assert_int_eq(ks_results_open(&r, dir, &meta), KS_ERR_IO);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "not a regular file"));
    ck_assert_int_eq(ks_results_open(&r, join(dir, "no/such/dir/x.h5"), &meta), KS_ERR_IO);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "output directory"));
}
END_TEST

/* Replaces root attribute `name` of the HDF5 file at path by a 1-D attribute of n values of `type`. */
static void replace_attr(const char *path, const char *name, hid_t type, hsize_t n, const void *values) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    if (H5Aexists(f, name) > 0) ck_assert_int_ge(H5Adelete(f, name), 0);
    hid_t sp = H5Screate_simple(1, &n, NULL), a = H5Acreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ge(H5Awrite(a, type, values), 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Fclose(f);
}

/* A well-formed HDF5 file whose string or number attributes hold several values where kvscope writes one:
 * the reader and the resuming writer refuse it, naming the attribute (reading it whole would overrun the
 * one-value buffers). */
START_TEST(test_attribute_arrays_refused) {
    const char *strings[3] = {"benchmark_name: RULER", "b", "c"};
    const int ints[6] = {1, 2, 3, 4, 5, 6};
    const double reals[2] = {1.5, 2.5};
    hid_t vlen = H5Tcopy(H5T_C_S1);
    ck_assert_int_ge(H5Tset_size(vlen, H5T_VARIABLE), 0);
    const struct { const char *attr; hid_t type; hsize_t n; const void *values; } cases[] = {
        {"config", vlen, 3, strings}, {"kvscope_format", vlen, 2, strings},
        {"sessions", H5T_NATIVE_INT, 6, ints}, {"wall_seconds", H5T_NATIVE_DOUBLE, 2, reals}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "attr%zu.h5", i);
        const char *path = join(tmp, name);
        write_range(path, IDENTITY, "SnapKV", 0, 2);
        replace_attr(path, cases[i].attr, cases[i].type, cases[i].n, cases[i].values);
        ks_results_data d = {0};
        ck_assert_int_eq(ks_results_read(path, &d), KS_ERR_FORMAT);
        ck_assert_msg(strstr(ks_last_error(), path) && strstr(ks_last_error(), cases[i].attr), "message: %s",
                      ks_last_error());
        ks_results_meta meta = meta_for(IDENTITY, "SnapKV");
        ks_results *r = NULL;
        ck_assert_int_eq(ks_results_open(&r, path, &meta), KS_ERR_FORMAT);
        ck_assert_ptr_null(r);
    }
    H5Tclose(vlen);
}
END_TEST

/* A file whose run count ('sessions') is not one kvscope writes (below 1, or the largest int, which one more
 * open would overflow): resuming refuses it, naming the file and the attribute. */
START_TEST(test_bad_session_count_refused) {
    const int counts[] = {INT_MAX, 0, -5};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "sessions%zu.h5", i);
        const char *path = join(tmp, name);
        write_range(path, IDENTITY, "SnapKV", 0, 2);
        replace_attr(path, "sessions", H5T_NATIVE_INT, 1, &counts[i]);
        ks_results_meta meta = meta_for(IDENTITY, "SnapKV");
        ks_results *r = NULL;
        ck_assert_int_eq(ks_results_open(&r, path, &meta), KS_ERR_FORMAT);
        ck_assert_ptr_null(r);
        ck_assert_msg(strstr(ks_last_error(), path) && strstr(ks_last_error(), "'sessions'"), "message: %s",
                      ks_last_error());
    }
}
END_TEST

/* H5Literate callback: grows the dataset `name` of the group to *(hsize_t *)rows rows without writing them. */
static herr_t grow_column(hid_t group, const char *name, const H5L_info_t *info, void *rows) {
    (void)info;
    hid_t d = H5Dopen2(group, name, H5P_DEFAULT);
    ck_assert_int_ge(d, 0);
    ck_assert_int_ge(H5Dset_extent(d, (const hsize_t *)rows), 0);
    H5Dclose(d);
    return 0;
}

/* Unwritten rows read as the fill value at no cost to the file, so a file of a few KB can claim millions of
 * samples: refused, naming the column, before the reader allocates for them. */
START_TEST(test_unstored_rows_refused) {
    const char *path = join(tmp, "grown.h5");
    write_range(path, IDENTITY, "SnapKV", 0, 5);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    hsize_t rows = 100000;
    ck_assert_int_ge(H5Literate_by_name(f, "/samples", H5_INDEX_NAME, H5_ITER_INC, NULL, grow_column, &rows,
                                        H5P_DEFAULT), 0);
    H5Fclose(f);
    ks_results_data d = {0};
    ck_assert_int_eq(ks_results_read(path, &d), KS_ERR_FORMAT);
    ck_assert_msg(strstr(ks_last_error(), path) && strstr(ks_last_error(), "/samples/task has 100000 rows"),
                  "message: %s", ks_last_error());
    ks_results_meta meta = meta_for(IDENTITY, "SnapKV");
    ks_results *r = NULL;
    ck_assert_int_eq(ks_results_open(&r, path, &meta), KS_ERR_FORMAT);
}
END_TEST

START_TEST(test_second_writer_refused) {
    const char *path = join(tmp, "run.h5");
    ks_results_meta meta = meta_for(IDENTITY, "SnapKV");
    ks_results *a = NULL, *b = NULL;
    ck_assert_msg(ks_results_open(&a, path, &meta) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(ks_results_open(&b, path, &meta), KS_ERR_IO);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "another kvscope process"));
    ck_assert_int_eq(ks_results_close(a), KS_OK);
    ck_assert_msg(ks_results_open(&b, path, &meta) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(ks_results_close(b), KS_OK);
}
END_TEST

/* The child appends results count, count + 1, ... until it is killed; it never returns. */
static void append_forever(const char *path) {
    ks_results_meta meta = meta_for(IDENTITY, "SnapKV");
    ks_results *r = NULL;
    if (ks_results_open(&r, path, &meta) != KS_OK) _exit(3);
    for (int i = ks_results_count(r);; i++) {
        ks_result res;
        make_result(&res, i);
        if (ks_results_append(r, &res) != KS_OK) _exit(4);
        ks_result_free(&res);
    }
}

START_TEST(test_kill_at_random_moments) {
    const char *path = join(tmp, "run.h5");
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    int parent_rows = 0;
    for (int round = 0; round < 16; round++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) append_forever(path);
        usleep(1000 + (useconds_t)(rand_r(&seed) % 80000));
        ck_assert_int_eq(kill(pid, SIGKILL), 0);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFSIGNALED(status), "the child ended by itself (status %d; seed %u)", status, seed);
        if (!ks_file_exists(path)) continue; /* killed before its first commit */
        ks_results_data d = {0};
        ck_assert_msg(ks_results_read(path, &d) == KS_OK, "round %d (seed %u): %s", round, seed, ks_last_error());
        for (int i = 0; i < d.n_rows; i++) assert_same(&d.rows[i], i);
        int before = d.n_rows;
        ks_results_data_free(&d);
        write_range(path, IDENTITY, "SnapKV", before, before + 1); /* the file takes more appends */
        parent_rows++;
        ck_assert_msg(ks_results_read(path, &d) == KS_OK, "%s", ks_last_error());
        ck_assert_int_eq(d.n_rows, before + 1);
        ks_results_data_free(&d);
    }
    ks_results_data d = {0};
    ck_assert_int_eq(ks_results_read(path, &d), KS_OK);
    ck_assert_msg(d.n_rows > parent_rows, "no child ever committed a row (seed %u)", seed);
    ks_results_data_free(&d);
}
END_TEST

/* ---- report -------------------------------------------------------------------------------------------- */

/* Mean score of results i in [from, to) that match (task or NULL = any, length or -1 = any); NAN if none. */
static double expected_mean(int from, int to, const char *task, int length) {
    double sum = 0;
    int n = 0;
    for (int i = from; i < to; i++) {
        ks_result r;
        make_result(&r, i);
        if ((!task || !strcmp(task, r.task)) && (length < 0 || length == r.length)) {
            sum += r.score;
            n++;
        }
        ks_result_free(&r);
    }
    return n ? sum / n : NAN;
}

static void assert_close_or_nan(double got, double want) {
    if (isnan(want)) ck_assert_msg(isnan(got), "expected no value, got %g", got);
    else ck_assert_msg(fabs(got - want) < 1e-9, "got %g, want %g", got, want);
}

START_TEST(test_report_one_file) {
    const char *path = join(tmp, "one.h5");
    write_range(path, IDENTITY, "SnapKV", 0, 30);
    ks_report rep = {0};
    const char *paths[] = {path};
    ck_assert_msg(ks_report_load(&rep, paths, 1) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(rep.by_method, 0);
    ck_assert_int_eq(rep.n_samples, 30);
    ck_assert_int_eq(rep.n_lengths, 4);
    ck_assert_int_eq(rep.n_cols, 3);
    ck_assert_str_eq(rep.cols[0], "cwe"); /* sorted */
    ck_assert_str_eq(rep.cols[2], "vt");
    double seconds = 0;
    for (int i = 0; i < 30; i++) {
        ks_result r;
        make_result(&r, i);
        seconds += r.prefill_s + r.decode_s;
        ks_result_free(&r);
    }
    for (int row = 0; row <= rep.n_lengths; row++) {
        int len = row < rep.n_lengths ? lengths[row] : -1;
        for (int c = 0; c < rep.n_cols; c++)
            assert_close_or_nan(rep.score[row * rep.n_cols + c], expected_mean(0, 30, rep.cols[c], len));
        assert_close_or_nan(rep.row_avg[row], expected_mean(0, 30, NULL, len));
    }
    ck_assert(fabs(rep.row_seconds[rep.n_lengths] - seconds) < 1e-9);
    ck_assert_str_eq(rep.title, "RULER · SmolLM2 · SnapKV");

    char *md = NULL;
    size_t md_n = 0;
    FILE *out = open_memstream(&md, &md_n);
    ck_assert_int_eq(ks_report_print(&rep, out, KS_REPORT_MD, "memory"), KS_OK);
    fclose(out);
    ck_assert_ptr_nonnull(strstr(md, "| Sequence Length | cwe | niah_single_1 | vt | Avg | Time |"));
    char cell[64];
    snprintf(cell, sizeof cell, "| 4K | %.2f |", expected_mean(0, 30, "cwe", 4096));
    ck_assert_msg(strstr(md, cell) != NULL, "no '%s' in\n%s", cell, md);
    ck_assert_ptr_nonnull(strstr(md, "| Avg |"));
    free(md);
    ks_report_free(&rep);
}
END_TEST

START_TEST(test_report_methods_csv_svg) {
    const char *dir = tmp;
    const char *full = join(dir, "full.h5"), *snap = join(dir, "snap.h5");
    write_range(full, IDENTITY, "FullKV", 0, 24);
    write_range(snap, IDENTITY, "SnapKV", 0, 6); /* only 4K and 8K rows */
    const char *paths[] = {full, snap};
    ks_report rep = {0};
    ck_assert_msg(ks_report_load(&rep, paths, 2) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(rep.by_method, 1);
    ck_assert_int_eq(rep.n_cols, 2);
    ck_assert_str_eq(rep.cols[0], "FullKV");
    ck_assert_str_eq(rep.cols[1], "SnapKV");
    ck_assert_ptr_null(rep.row_avg);
    for (int row = 0; row <= rep.n_lengths; row++) {
        int len = row < rep.n_lengths ? lengths[row] : -1;
        assert_close_or_nan(rep.score[row * 2 + 0], expected_mean(0, 24, NULL, len));
        assert_close_or_nan(rep.score[row * 2 + 1], expected_mean(0, 6, NULL, len));
    }
    ck_assert(isnan(rep.score[3 * 2 + 1])); /* SnapKV has no 32K samples */
    ks_results_data d = {0};
    ck_assert_int_eq(ks_results_read(snap, &d), KS_OK);
    ck_assert_double_eq(rep.wall_seconds[1], d.wall_seconds);
    ks_results_data_free(&d);

    char *csv = NULL;
    size_t csv_n = 0;
    FILE *out = open_memstream(&csv, &csv_n);
    ck_assert_int_eq(ks_report_print(&rep, out, KS_REPORT_CSV, "memory"), KS_OK);
    fclose(out);
    ck_assert(!strncmp(csv, "length,FullKV,SnapKV\n", 21));
    char line[128];
    snprintf(line, sizeof line, "\n4096,%.4f,%.4f\n", expected_mean(0, 24, NULL, 4096),
             expected_mean(0, 6, NULL, 4096));
    ck_assert_msg(strstr(csv, line) != NULL, "no '%s' in\n%s", line + 1, csv);
    snprintf(line, sizeof line, "\n32768,%.4f,\n", expected_mean(0, 24, NULL, 32768));
    ck_assert_msg(strstr(csv, line) != NULL, "no '%s' in\n%s", line + 1, csv);
    ck_assert_ptr_nonnull(strstr(csv, "\nwall_seconds,"));
    free(csv);

    const char *svg = join(dir, "plot.svg");
    ck_assert_int_eq(ks_report_write_svg(&rep, svg), KS_OK);
    size_t n;
    char *s = slurp(svg, &n);
    ck_assert(!strncmp(s, "<?xml", 5));
    ck_assert_ptr_nonnull(strstr(s, "</svg>"));
    int lines = 0;
    for (const char *p = s; (p = strstr(p, "<polyline")); p++) lines++;
    ck_assert_int_eq(lines, 2);
    ck_assert_ptr_nonnull(strstr(s, ">SnapKV</text>"));
    ck_assert_ptr_nonnull(strstr(s, ">32K</text>"));
    free(s);
    ks_report_free(&rep);
}
END_TEST

/* Runs a shell command, returns its exit status. */
static int run(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(test_report_command_line) {
    const char *dir = tmp;
    const char *a = join(dir, "a.h5"), *b = join(dir, "b.h5");
    write_range(a, IDENTITY, "FullKV", 0, 12);
    write_range(b, IDENTITY, "H2O", 0, 12);
    char cmd[40000];
    snprintf(cmd, sizeof cmd, "%s/kvscope report %s %s --csv %s/t.csv --plot=%s/p.svg > %s/t.md 2> %s/err",
             KS_BUILD_DIR, a, b, dir, dir, dir, dir);
    ck_assert_int_eq(run(cmd), 0);
    size_t n;
    char *md = slurp(join(dir, "t.md"), &n);
    ck_assert_ptr_nonnull(strstr(md, "| Sequence Length | FullKV | H2O |"));
    ck_assert_ptr_nonnull(strstr(md, "| Reasoning time |"));
    free(md);
    ck_assert(ks_file_exists(join(dir, "t.csv")) && ks_file_exists(join(dir, "p.svg")));
    /* bad input: one error line naming the problem, non-zero exit */
    const char *bad[][2] = {{"missing.h5", "missing.h5"}, {"%s --plot x.png", "SVG"}, {"%s --format xml", "--format"},
                            {"", "result files"}};
    for (int k = 0; k < 4; k++) {
        char args[8192];
        snprintf(args, sizeof args, bad[k][0], a);
        snprintf(cmd, sizeof cmd, "%s/kvscope report %s > /dev/null 2> %s/err", KS_BUILD_DIR, args, dir);
        ck_assert_int_eq(run(cmd), 1);
        char *err = slurp(join(dir, "err"), &n);
        ck_assert_msg(strstr(err, bad[k][1]) && strchr(err, '\n') == err + n - 1, "stderr: %s", err);
        free(err);
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("results");
    TCase *tc = tcase_create("results");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_resume);
    tcase_add_test(tc, test_added_columns);
    tcase_add_test(tc, test_other_configuration_refused);
    tcase_add_test(tc, test_foreign_files_refused);
    tcase_add_test(tc, test_attribute_arrays_refused);
    tcase_add_test(tc, test_bad_session_count_refused);
    tcase_add_test(tc, test_unstored_rows_refused);
    tcase_add_test(tc, test_second_writer_refused);
    tcase_add_test(tc, test_kill_at_random_moments);
    tcase_add_test(tc, test_report_one_file);
    tcase_add_test(tc, test_report_methods_csv_svg);
    tcase_add_test(tc, test_report_command_line);
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
