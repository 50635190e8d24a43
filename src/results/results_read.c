/* results_read.c — ks_results_read(): a whole result file into memory, read-only. */
#include <stdlib.h>
#include <string.h>

#include "results/h5_check.h"
#include "results/results_impl.h"

static ks_status read_meta(hid_t file, ks_results_data *d) {
    for (int i = 0; i < ks_n_meta_attrs; i++)
        KS_TRY(ks_attr_read_str(file, ks_meta_attrs[i].name, (char **)((char *)&d->meta + ks_meta_attrs[i].offset)));
    KS_TRY(ks_attr_read_str(file, "config_hash", &d->config_hash));
    KS_TRY(ks_attr_read_str(file, "start_time", &d->start_time));
    KS_TRY(ks_attr_read_str(file, "end_time", &d->end_time));
    KS_TRY(ks_attr_read_f64(file, "wall_seconds", &d->wall_seconds));
    return ks_attr_read_i32(file, "sessions", &d->sessions);
}

static ks_status read_rows(hid_t file, const char *path, ks_results_data *d) {
    ks_table samples = {0}, layers = {0};
    ks_layer_row *lr = NULL;
    ks_status st = ks_table_open(&samples, file, &ks_samples_spec, path);
    if (st == KS_OK) st = ks_table_open(&layers, file, &ks_layers_spec, path);
    if (st == KS_OK && samples.n_rows > 0) {
        d->rows = ks_calloc((size_t)samples.n_rows, sizeof *d->rows, "result rows");
        st = d->rows ? KS_OK : KS_ERR_NOMEM;
        if (st == KS_OK) {
            d->n_rows = (int)samples.n_rows;
            st = ks_table_read(&samples, d->rows, samples.n_rows);
        }
    }
    if (st == KS_OK && layers.n_rows > 0) {
        lr = ks_calloc((size_t)layers.n_rows, sizeof *lr, "layer rows");
        st = lr ? ks_table_read(&layers, lr, layers.n_rows) : KS_ERR_NOMEM;
        if (st == KS_OK) st = ks_layer_rows_attach(d->rows, d->n_rows, lr, layers.n_rows, path);
    }
    free(lr);
    ks_table_close(&samples);
    ks_table_close(&layers);
    return st;
}

ks_status ks_results_read(const char *path, ks_results_data *d) {
    memset(d, 0, sizeof *d);
    hid_t fapl, file;
    H5_CHECK(fapl = H5Pcreate(H5P_FILE_ACCESS));
    /* The writer never holds HDF5 locks on the path (it commits by rename), so none are needed here, and
     * file systems without flock support stay readable. */
    H5Pset_file_locking(fapl, 0, 1);
    ks_status st = ks_results_open_checked(path, path, H5F_ACC_RDONLY, fapl, &file);
    H5Pclose(fapl);
    KS_TRY(st);
    st = read_meta(file, d);
    if (st == KS_OK) st = read_rows(file, path, d);
    H5Fclose(file);
    if (st != KS_OK) {
        ks_results_data_free(d);
        return ks_fail_context(st, "reading %s", path);
    }
    return KS_OK;
}

void ks_results_data_free(ks_results_data *d) {
    if (!d) return;
    for (int i = 0; i < ks_n_meta_attrs; i++) free(*(char **)((char *)&d->meta + ks_meta_attrs[i].offset));
    free(d->config_hash);
    free(d->start_time);
    free(d->end_time);
    for (int i = 0; i < d->n_rows; i++) ks_result_free(&d->rows[i]);
    free(d->rows);
    memset(d, 0, sizeof *d);
}
