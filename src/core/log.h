/* log.h — rank-prefixed logging to stderr.
 *
 *     ks_log_set_rank(rank);              // once, after MPI init (default: no prefix)
 *     ks_log_info("loaded %d layers", n); // "[kvscope] loaded 30 layers" or "[kvscope r3] ..."
 *     ks_log_set_quiet(1);                // silence info lines (errors still print)
 *     ks_log_error_now();                 // "kvscope r3: error: <ks_last_error()>", flushed, marked reported
 */
#ifndef KS_LOG_H
#define KS_LOG_H

void ks_log_set_rank(int rank);
void ks_log_set_quiet(int quiet);
void ks_log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ks_log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints this thread's current error as the one error line ("kvscope: error: ..." or, once a rank is set,
 * "kvscope r3: error: ..."), flushes stderr and marks the error reported (core/status.h) so nobody prints it
 * again. In an MPI job the rank that hits an error calls it before it waits for anyone. */
void ks_log_error_now(void);

#endif
