/* h5_check.h — checked HDF5 calls for the results module (internal to src/results).
 *
 * HDF5 reports failure by a negative return (herr_t, hid_t, htri_t, ssize_t). Its own error-stack printing is
 * switched off (ks_h5_quiet); instead the most specific entry of the stack becomes part of our one message:
 *
 *     H5_CHECK(H5Dset_extent(d, &n));                    // returns KS_ERR_HDF5 from the enclosing function
 *     H5_TRY_GOTO(st, H5Dwrite(d, t, m, f, H5P_DEFAULT, buf), cleanup);   // sets st, jumps to cleanup
 *
 * Message shape: "HDF5 failed: <innermost HDF5 function>: <description> (<expression> at file:line)".
 */
#ifndef KS_H5_CHECK_H
#define KS_H5_CHECK_H

#include <hdf5.h>

#include "core/status.h"

/* Turns off HDF5's automatic error printing (idempotent; the results module calls it before any HDF5 use). */
void ks_h5_quiet(void);

/* "<function>: <description>" of the most specific entry on HDF5's default error stack, in a thread-local
 * buffer; the argument is the failed comparison's value and is ignored (it fits KS_CHECK_GEN's errstr_fn). */
const char *ks_h5_errstr(int ignored);

#define H5_CHECK(expr) KS_CHECK_GEN((expr) >= 0, 1, KS_ERR_HDF5, "HDF5", ks_h5_errstr)

#define H5_TRY_GOTO(st, expr, label)                                                                        \
    do {                                                                                                    \
        if ((expr) < 0) {                                                                                   \
            (st) = ks_fail(KS_ERR_HDF5, "HDF5 failed: %s (%s at %s:%d)", ks_h5_errstr(0), #expr, __FILE__,  \
                           __LINE__);                                                                       \
            goto label;                                                                                     \
        }                                                                                                   \
    } while (0)

#endif
