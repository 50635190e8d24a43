/* status.c — the thread-local error message behind ks_fail(); see status.h. */
#include "core/status.h"

#include <stdarg.h>
#include <string.h>

#define KS_ERRMSG_MAX 1024

static _Thread_local char ks_errmsg[KS_ERRMSG_MAX];
static _Thread_local int ks_err_reported;

void ks_error_mark_reported(void) { ks_err_reported = 1; }
int ks_error_is_reported(void) { return ks_err_reported; }

ks_status ks_fail(ks_status st, const char *fmt, ...) {
    ks_err_reported = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ks_errmsg, sizeof ks_errmsg, fmt, ap);
    va_end(ap);
    return st;
}

ks_status ks_fail_context(ks_status st, const char *fmt, ...) {
    char old[KS_ERRMSG_MAX];
    memcpy(old, ks_errmsg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(ks_errmsg, sizeof ks_errmsg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof ks_errmsg)
        snprintf(ks_errmsg + n, sizeof ks_errmsg - (size_t)n, ": %s", old);
    return st;
}

const char *ks_last_error(void) { return ks_errmsg; }

const char *ks_status_name(ks_status st) {
    switch (st) {
    case KS_OK: return "ok";
    case KS_ERR_IO: return "i/o error";
    case KS_ERR_FORMAT: return "format error";
    case KS_ERR_UNSUPPORTED: return "unsupported";
    case KS_ERR_ARG: return "bad argument";
    case KS_ERR_RANGE: return "out of range";
    case KS_ERR_NOMEM: return "out of memory";
    case KS_ERR_DEVICE: return "device error";
    case KS_ERR_MPI: return "MPI error";
    case KS_ERR_HDF5: return "HDF5 error";
    }
    return "unknown error";
}

void ks_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "kvscope: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
    abort();
}

void *ks_malloc(size_t n, const char *what) {
    void *p = malloc(n ? n : 1);
    if (!p) ks_fail(KS_ERR_NOMEM, "out of memory allocating %zu bytes for %s", n, what);
    return p;
}

void *ks_calloc(size_t count, size_t size, const char *what) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) ks_fail(KS_ERR_NOMEM, "out of memory allocating %zu x %zu bytes for %s", count, size, what);
    return p;
}
