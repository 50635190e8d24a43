/* fuzz_util.c — see fuzz_util.h. */
#include "fuzz_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/file.h"
#include "core/log.h"

static char scratch[256];

/* Removes the scratch directory and the files the targets left in it (they make no subdirectories). */
static void remove_scratch(void) {
    DIR *d = opendir(scratch);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[512];
        unlink(ks_path_join(p, sizeof p, scratch, e->d_name));
    }
    closedir(d);
    rmdir(scratch);
}

const char *ks_fuzz_dir(void) {
    if (scratch[0]) return scratch;
    const char *tmp = getenv("TMPDIR");
    snprintf(scratch, sizeof scratch, "%s/kvscope-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(scratch)) {
        perror("ks_fuzz_dir: mkdtemp");
        abort();
    }
    atexit(remove_scratch);
    return scratch;
}

char *ks_fuzz_path(char *buf, size_t cap, const char *name) { return ks_path_join(buf, cap, ks_fuzz_dir(), name); }

int ks_fuzz_write(const char *path, const void *data, size_t size) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(path);
        abort();
    }
    for (const char *p = data; size > 0;) {
        ssize_t w = write(fd, p, size);
        if (w <= 0) {
            perror(path);
            abort();
        }
        p += w;
        size -= (size_t)w;
    }
    close(fd);
    return 0;
}

void ks_fuzz_split(const uint8_t *data, size_t size, const uint8_t **a, size_t *na, const uint8_t **b,
                   size_t *nb) {
    const uint8_t *nul = size ? memchr(data, 0, size) : NULL;
    *a = data;
    *na = nul ? (size_t)(nul - data) : size;
    *b = nul ? nul + 1 : data + size;
    *nb = nul ? size - *na - 1 : 0;
}

void ks_fuzz_quiet(void) { ks_log_set_quiet(1); }
