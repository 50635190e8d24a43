/* file.h — read-only file access: memory maps for weights, whole-file reads for small text files.
 *
 *     ks_mapped_file f = {0};
 *     KS_TRY(ks_file_map(&f, "model.safetensors"));   // f.data, f.size; pages are shared and read-only
 *     ...
 *     ks_file_unmap(&f);                               // accepts a zeroed or failed struct
 *
 *     char *text; size_t n;
 *     KS_TRY(ks_file_read_all("config.json", &text, &n));   // NUL-terminated, caller frees
 *
 * Paths that are not what the caller needs (a directory for a file, a FIFO for a model) are errors saying what
 * the path is, never "not found" or "read error".
 */
#ifndef KS_FILE_H
#define KS_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

typedef struct ks_mapped_file {
    const uint8_t *data; /* (size) read-only mapping, NULL when not mapped */
    size_t size;         /* bytes */
    char *path;          /* owned copy of the path, for error messages */
} ks_mapped_file;

ks_status ks_file_map(ks_mapped_file *f, const char *path);
void ks_file_unmap(ks_mapped_file *f);

/* Reads the whole file; *out is NUL-terminated and owned by the caller (free()). A directory is an error
 * saying so; a pipe or FIFO is read to its end. */
ks_status ks_file_read_all(const char *path, char **out, size_t *size);

/* Opens path for reading as a stream: a regular file, or a pipe or FIFO read as it comes. A directory is
 * KS_ERR_IO "<path>: is a directory, expected a file". *out is NULL on any error. */
ks_status ks_file_open_read(const char *path, FILE **out);

int ks_file_exists(const char *path); /* a regular file (following links) */
int ks_is_directory(const char *path);
/* The directory path and every missing folder above it (as `mkdir -p`); KS_ERR_IO naming `what` (an option or
 * field), the path and the reason when one cannot be made or is not a directory. */
ks_status ks_make_dirs(const char *path, const char *what);

/* "a FIFO", "a socket", "a character device" or "a block device" when path is one of those, else NULL (a
 * regular file, a directory, nothing there). Only stats the path: opening a FIFO would wait for a writer. */
const char *ks_special_file_kind(const char *path);

/* Joins dir and name with one '/' into buf (size cap); returns buf. */
char *ks_path_join(char *buf, size_t cap, const char *dir, const char *name);

#endif
