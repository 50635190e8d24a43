/* results_check.c — deciding whether a file at an output path is a kvscope result file we may use. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "results/h5_check.h"
#include "results/results_impl.h"

/* HDF5 files start with this signature at offset 0, or 512, 1024, 2048, ... after a user block. */
static const unsigned char hdf5_signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

/* 1 if `path` carries the HDF5 signature, 0 if not; an unreadable path is an error. */
static ks_status has_hdf5_signature(const char *path, int *yes) {
    *yes = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ks_fail(KS_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return ks_fail(KS_ERR_IO, "%s: cannot stat (%s)", path, strerror(errno));
    }
    for (off_t off = 0; off + (off_t)sizeof hdf5_signature <= sb.st_size && !*yes; off = off ? off * 2 : 512) {
        unsigned char buf[sizeof hdf5_signature];
        if (pread(fd, buf, sizeof buf, off) == (ssize_t)sizeof buf && !memcmp(buf, hdf5_signature, sizeof buf))
            *yes = 1;
    }
    close(fd);
    return KS_OK;
}

ks_status ks_results_open_checked(const char *path, const char *image_name, unsigned flags, hid_t fapl,
                                  hid_t *file) {
    const char *advice = flags & H5F_ACC_RDWR
                             ? "kvscope leaves it untouched: move it away or choose another output (--output)"
                             : "expected a result file written by kvscope";
    *file = H5I_INVALID_HID;
    ks_h5_quiet();
    int hdf5;
    KS_TRY(has_hdf5_signature(path, &hdf5));
    if (!hdf5)
        return ks_fail(KS_ERR_FORMAT, "%s: not an HDF5 file; %s", path, advice);
    hid_t f = H5Fopen(image_name, flags, fapl);
    if (f < 0)
        return ks_fail(KS_ERR_FORMAT, "%s: an HDF5 file that cannot be opened (corrupt or truncated? HDF5: %s); %s",
                       path, ks_h5_errstr(0), advice);
    char *format = NULL;
    int version = 0;
    ks_status st = KS_OK;
    if (ks_attr_read_str(f, "kvscope_format", &format) != KS_OK || !format || strcmp(format, KS_RESULTS_FORMAT))
        st = ks_fail(KS_ERR_FORMAT, "%s: an HDF5 file that kvscope did not write (no kvscope_format = \"%s\" "
                     "attribute); %s", path, KS_RESULTS_FORMAT, advice);
    if (st == KS_OK) st = ks_attr_read_i32(f, "format_version", &version);
    if (st == KS_OK && (version < 1 || version > KS_RESULTS_FORMAT_VERSION))
        st = ks_fail(KS_ERR_FORMAT, "%s: result format_version %d, but this kvscope reads version %d; %s", path,
                     version, KS_RESULTS_FORMAT_VERSION, advice);
    free(format);
    if (st != KS_OK) {
        H5Fclose(f);
        return st;
    }
    *file = f;
    return KS_OK;
}
