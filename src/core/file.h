/* file.h — read-only file access: memory maps for weights, whole-file reads for small text files.
 *
 *     ks_mapped_file f = {0};
 *     KS_TRY(ks_file_map(&f, "model.safetensors"));   // f.data, f.size; pages are shared and read-only
 *     ...
 *     ks_file_unmap(&f);                               // accepts a zeroed or failed struct
 *
 *     char *text; size_t n;
 *     KS_TRY(ks_file_read_all("config.json", &text, &n));   // NUL-terminated, caller frees
 */
#ifndef KS_FILE_H
#define KS_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct ks_mapped_file {
    const uint8_t *data; /* (size) read-only mapping, NULL when not mapped */
    size_t size;         /* bytes */
    char *path;          /* owned copy of the path, for error messages */
} ks_mapped_file;

ks_status ks_file_map(ks_mapped_file *f, const char *path);
void ks_file_unmap(ks_mapped_file *f);

/* Reads the whole file; *out is NUL-terminated and owned by the caller (free()). */
ks_status ks_file_read_all(const char *path, char **out, size_t *size);

int ks_file_exists(const char *path);
int ks_is_directory(const char *path);

/* Joins dir and name with one '/' into buf (size cap); returns buf. */
char *ks_path_join(char *buf, size_t cap, const char *dir, const char *name);

#endif
