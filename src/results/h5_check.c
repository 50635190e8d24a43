/* h5_check.c — see h5_check.h. */
#include "results/h5_check.h"

#include <stdio.h>
#include <string.h>

void ks_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static _Thread_local char ks_h5_msg[512];

/* H5Ewalk callback: keeps the first entry of an upward walk, the most specific one. */
static herr_t keep_innermost(unsigned n, const H5E_error2_t *e, void *data) {
    (void)data;
    if (n == 0) snprintf(ks_h5_msg, sizeof ks_h5_msg, "%s: %s", e->func_name, e->desc ? e->desc : "");
    return 0;
}

const char *ks_h5_errstr(int ignored) {
    (void)ignored;
    snprintf(ks_h5_msg, sizeof ks_h5_msg, "no HDF5 error recorded");
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keep_innermost, NULL);
    return ks_h5_msg;
}
