/* status.h — error handling for all of kvscope.
 *
 * Two classes of error:
 *  - environmental errors (missing/truncated files, bad config fields, unsupported architectures, OOM) are
 *    returned as a `ks_status` up to `main`. The function that detects the error records ONE clear message
 *    with ks_fail(), naming the file/field and the fix; callers just propagate the status (KS_TRY).
 *  - programmer errors use KS_ASSERT, which prints file:line and aborts (kept on in every build type).
 *
 * Usage:
 *     if (fd < 0) return ks_fail(KS_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
 *     KS_TRY(ks_model_load(&m, path));            // returns the status on failure
 *     KS_TRY_GOTO(st, ks_x(...), cleanup);         // sets st and jumps to cleanup on failure
 *     ... main: fprintf(stderr, "kvscope: error: %s\n", ks_last_error());
 *
 * The message buffer is thread-local; a later ks_fail() overwrites an earlier one (the first, most specific
 * failure is usually the one reported because callers propagate without calling ks_fail again; a caller may
 * add context with ks_fail_context()).
 */
#ifndef KS_STATUS_H
#define KS_STATUS_H

#include <stdio.h>
#include <stdlib.h>

typedef enum ks_status {
    KS_OK = 0,
    KS_ERR_IO,          /* file missing, unreadable, short read, mmap failure */
    KS_ERR_FORMAT,      /* file present but malformed (bad header, bad JSON, shape mismatch) */
    KS_ERR_UNSUPPORTED, /* valid input we do not handle (architecture, quant type, tokenizer model) */
    KS_ERR_ARG,         /* bad command-line argument or option value */
    KS_ERR_RANGE,       /* a length/size beyond what the model or a buffer allows */
    KS_ERR_NOMEM,       /* allocation failed */
    KS_ERR_DEVICE,      /* CUDA / cuBLAS / NCCL runtime failure */
    KS_ERR_MPI,         /* MPI failure */
    KS_ERR_HDF5,        /* HDF5 failure */
} ks_status;

/* Records a printf-style message for `st` and returns `st`. */
ks_status ks_fail(ks_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes the current message with "<context>: " (e.g. the file being loaded); returns `st`. */
ks_status ks_fail_context(ks_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The last recorded message ("" if none). */
const char *ks_last_error(void);

/* Marks the current error as already printed by someone else (e.g. rank 0 of an MPI job prints the error every
 * rank shares), so main stays quiet; ks_fail() clears the mark. */
void ks_error_mark_reported(void);
int ks_error_is_reported(void);

/* Short name of a status ("io error", "format error", ...). */
const char *ks_status_name(ks_status st);

#define KS_TRY(expr)                                                                                        \
    do {                                                                                                    \
        ks_status ks_try_st_ = (expr);                                                                      \
        if (ks_try_st_ != KS_OK) return ks_try_st_;                                                         \
    } while (0)

#define KS_TRY_GOTO(st, expr, label)                                                                        \
    do {                                                                                                    \
        (st) = (expr);                                                                                      \
        if ((st) != KS_OK) goto label;                                                                      \
    } while (0)

void ks_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

#define KS_ASSERT(cond)                                                                                     \
    do {                                                                                                    \
        if (!(cond)) ks_assert_fail(#cond, __FILE__, __LINE__);                                             \
    } while (0)

/* Checked-call family. KS_CHECK_GEN evaluates `expr` once, compares it with `ok`; on mismatch it records
 * "<what> failed: <errstr(result)> (<expr> at file:line)" and returns `errst` from the enclosing function.
 * The CUDA/cuBLAS/NCCL/MPI/HDF5 variants are defined next to the code that includes those libraries
 * (backend/cuda_check.h, mpi/ks_mpi.h, results/h5_check.h) on top of this one macro. */
#define KS_CHECK_GEN(expr, ok, errst, what, errstr_fn)                                                      \
    do {                                                                                                    \
        __typeof__(expr) ks_chk_r_ = (expr);                                                                \
        if (ks_chk_r_ != (ok))                                                                              \
            return ks_fail((errst), "%s failed: %s (%s at %s:%d)", (what), errstr_fn(ks_chk_r_), #expr,     \
                           __FILE__, __LINE__);                                                             \
    } while (0)

/* Allocation helpers: return NULL only with a recorded KS_ERR_NOMEM message naming `what`. */
void *ks_malloc(size_t n, const char *what);
void *ks_calloc(size_t count, size_t size, const char *what);

#endif
