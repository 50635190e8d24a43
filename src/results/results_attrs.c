/* results_attrs.c — scalar attributes of result files, and the table of meta string attributes. */
#include <stdlib.h>
#include <string.h>

#include "results/h5_check.h"
#include "results/results_impl.h"

const ks_meta_attr ks_meta_attrs[] = {
    {"config", offsetof(ks_results_meta, identity)},
    {"kvscope_version", offsetof(ks_results_meta, version)},
    {"git_revision", offsetof(ks_results_meta, git_revision)},
    {"command_line", offsetof(ks_results_meta, command_line)},
    {"model_config", offsetof(ks_results_meta, model_config)},
    {"method_options", offsetof(ks_results_meta, method_options)},
    {"hardware", offsetof(ks_results_meta, hardware)},
    {"model", offsetof(ks_results_meta, model)},
    {"benchmark", offsetof(ks_results_meta, benchmark)},
    {"method", offsetof(ks_results_meta, method)},
};
const int ks_n_meta_attrs = (int)(sizeof ks_meta_attrs / sizeof ks_meta_attrs[0]);

/* Writes a scalar attribute of memory type `mtype` (file type `ftype`), replacing an existing one. */
static ks_status write_scalar(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *value) {
    ks_status st = KS_OK;
    hid_t space = H5I_INVALID_HID, attr = H5I_INVALID_HID;
    htri_t exists = H5Aexists(loc, name);
    H5_TRY_GOTO(st, exists, done);
    if (exists) H5_TRY_GOTO(st, H5Adelete(loc, name), done);
    H5_TRY_GOTO(st, space = H5Screate(H5S_SCALAR), done);
    H5_TRY_GOTO(st, attr = H5Acreate2(loc, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT), done);
    H5_TRY_GOTO(st, H5Awrite(attr, mtype, value), done);
done:
    if (attr >= 0) H5Aclose(attr);
    if (space >= 0) H5Sclose(space);
    return st;
}

/* A new variable-length UTF-8 string type (the caller closes it). */
static hid_t vlen_utf8(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t >= 0 && (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0)) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

ks_status ks_attr_write_str(hid_t loc, const char *name, const char *value) {
    hid_t t;
    H5_CHECK(t = vlen_utf8());
    const char *v = value ? value : "";
    ks_status st = write_scalar(loc, name, t, t, &v);
    H5Tclose(t);
    return st;
}

ks_status ks_attr_write_f64(hid_t loc, const char *name, double value) {
    return write_scalar(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

ks_status ks_attr_write_i32(hid_t loc, const char *name, int value) {
    return write_scalar(loc, name, H5T_STD_I32LE, H5T_NATIVE_INT, &value);
}

/* Every attribute kvscope writes is scalar. One that holds another number of values (an array, or none) is
 * refused before it is read: H5Aread writes all of its values into buffers sized for one. */
static ks_status check_one_value(hid_t attr, const char *name) {
    hid_t space;
    H5_CHECK(space = H5Aget_space(attr));
    hssize_t n = H5Sget_simple_extent_npoints(space);
    H5Sclose(space);
    if (n != 1)
        return ks_fail(KS_ERR_FORMAT, "attribute '%s' holds %lld values where kvscope writes one (not a kvscope "
                       "result file?)", name, (long long)n);
    return KS_OK;
}

ks_status ks_attr_read_str(hid_t loc, const char *name, char **out) {
    *out = NULL;
    htri_t exists;
    H5_CHECK(exists = H5Aexists(loc, name));
    if (!exists) return KS_OK;
    ks_status st = KS_OK;
    hid_t attr = H5I_INVALID_HID, ftype = H5I_INVALID_HID, mtype = H5I_INVALID_HID;
    H5_TRY_GOTO(st, attr = H5Aopen(loc, name, H5P_DEFAULT), done);
    KS_TRY_GOTO(st, check_one_value(attr, name), done);
    H5_TRY_GOTO(st, ftype = H5Aget_type(attr), done);
    if (H5Tget_class(ftype) != H5T_STRING) {
        st = ks_fail(KS_ERR_FORMAT, "attribute '%s' is not a string", name);
        goto done;
    }
    if (H5Tis_variable_str(ftype) > 0) {
        char *v = NULL;
        H5_TRY_GOTO(st, mtype = vlen_utf8(), done);
        H5_TRY_GOTO(st, H5Aread(attr, mtype, &v), done);
        *out = strdup(v ? v : "");
        H5free_memory(v);
    } else {
        size_t n = H5Tget_size(ftype);
        H5_TRY_GOTO(st, mtype = H5Tcopy(ftype), done);
        char *v = calloc(n + 1, 1);
        if (v && H5Aread(attr, mtype, v) < 0) {
            free(v);
            st = ks_fail(KS_ERR_HDF5, "HDF5 failed: %s (reading attribute '%s')", ks_h5_errstr(0), name);
            goto done;
        }
        *out = v;
    }
    if (!*out) st = ks_fail(KS_ERR_NOMEM, "out of memory reading attribute '%s'", name);
done:
    if (mtype >= 0) H5Tclose(mtype);
    if (ftype >= 0) H5Tclose(ftype);
    if (attr >= 0) H5Aclose(attr);
    return st;
}

/* Reads a scalar numeric attribute as `mtype`; a missing attribute leaves *out unchanged. */
static ks_status read_number(hid_t loc, const char *name, hid_t mtype, void *out) {
    htri_t exists;
    H5_CHECK(exists = H5Aexists(loc, name));
    if (!exists) return KS_OK;
    hid_t attr;
    H5_CHECK(attr = H5Aopen(loc, name, H5P_DEFAULT));
    ks_status st = check_one_value(attr, name);
    if (st != KS_OK) {
        H5Aclose(attr);
        return st;
    }
    herr_t e = H5Aread(attr, mtype, out);
    H5Aclose(attr);
    if (e < 0) return ks_fail(KS_ERR_FORMAT, "attribute '%s' is not a number (%s)", name, ks_h5_errstr(0));
    return KS_OK;
}

ks_status ks_attr_read_f64(hid_t loc, const char *name, double *out) {
    return read_number(loc, name, H5T_NATIVE_DOUBLE, out);
}

ks_status ks_attr_read_i32(hid_t loc, const char *name, int *out) {
    return read_number(loc, name, H5T_NATIVE_INT, out);
}
