/* fuzz_util.h — what the libFuzzer targets in tests/fuzz share: a private scratch directory per process and
 * writing the fuzz input into a file there, for the readers that take a path.
 *
 *     char path[512];
 *     if (ks_fuzz_write(ks_fuzz_path(path, sizeof path, "config.json"), data, size)) return 0;
 *     ks_model_config c;
 *     (void)ks_model_config_from_hf(path, &c);   // errors are expected; crashes, leaks and UB are findings
 *
 * A target's only contract is to return without crashing, leaking or tripping a sanitizer on any input: the
 * status the product returns is ignored (rejecting garbage with a message is the right outcome).
 */
#ifndef KS_FUZZ_UTIL_H
#define KS_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* The process's scratch directory (created under $TMPDIR, default /tmp, on first use; removed at exit).
 * Processes of one fuzzing campaign (-jobs, -fork) each get their own. Aborts if it cannot be made. */
const char *ks_fuzz_dir(void);

/* "<scratch dir>/<name>" into buf; returns buf. */
char *ks_fuzz_path(char *buf, size_t cap, const char *name);

/* Replaces the file at path with data[0..size); 0 on success (a failure aborts: the harness is broken). */
int ks_fuzz_write(const char *path, const void *data, size_t size);

/* Splits data at its first NUL byte: the part before it (*a, *na) and after it (*b, *nb; empty when there is
 * no NUL). Text formats cannot hold a raw NUL, so targets that need two inputs separate them this way. */
void ks_fuzz_split(const uint8_t *data, size_t size, const uint8_t **a, size_t *na, const uint8_t **b,
                   size_t *nb);

/* Silences kvscope's info lines. Warnings still go to stderr; jobs/fuzz.sh hides the targets' own output
 * with -close_fd_mask=2 while libFuzzer and the sanitizers keep reporting. */
void ks_fuzz_quiet(void);

#endif
