/* file.c — mmap and whole-file reads; see file.h. */
#define _POSIX_C_SOURCE 200809L
#include "core/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* "a FIFO", ... for a file type that is neither a regular file nor a directory, else NULL. */
static const char *special_kind(mode_t mode) {
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    return NULL;
}

const char *ks_special_file_kind(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? special_kind(sb.st_mode) : NULL;
}

ks_status ks_file_map(ks_mapped_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_NONBLOCK); /* O_NONBLOCK: a FIFO is refused below instead of waited on */
    if (fd < 0) return ks_fail(KS_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return ks_fail(KS_ERR_IO, "%s: cannot stat (%s)", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        const char *kind = special_kind(sb.st_mode);
        return ks_fail(KS_ERR_IO, "%s: is %s, expected a regular file", path, kind ? kind : "a directory");
    }
    f->size = (size_t)sb.st_size;
    if (f->size > 0) {
        void *p = mmap(NULL, f->size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return ks_fail(KS_ERR_IO, "%s: cannot mmap %zu bytes (%s)", path, f->size, strerror(errno));
        }
        f->data = p;
    }
    close(fd);
    f->path = strdup(path);
    if (!f->path) {
        ks_file_unmap(f);
        return ks_fail(KS_ERR_NOMEM, "out of memory");
    }
    return KS_OK;
}

void ks_file_unmap(ks_mapped_file *f) {
    if (!f) return;
    if (f->data) munmap((void *)f->data, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

ks_status ks_file_open_read(const char *path, FILE **out) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return ks_fail(KS_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) == 0 && S_ISDIR(sb.st_mode)) { /* Linux opens a directory; reading it fails */
        fclose(fp);
        return ks_fail(KS_ERR_IO, "%s: is a directory, expected a file", path);
    }
    *out = fp;
    return KS_OK;
}

ks_status ks_file_read_all(const char *path, char **out, size_t *size) {
    *out = NULL;
    FILE *fp;
    KS_TRY(ks_file_open_read(path, &fp));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); buf = NULL; break; }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, fp);
        n += r;
        if (r == 0) break;
    }
    int err = ferror(fp);
    fclose(fp);
    if (!buf) return ks_fail(KS_ERR_NOMEM, "%s: out of memory reading file", path);
    if (err) {
        free(buf);
        return ks_fail(KS_ERR_IO, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    if (size) *size = n;
    return KS_OK;
}

int ks_file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

int ks_is_directory(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

ks_status ks_make_dirs(const char *path, const char *what) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return ks_fail(KS_ERR_ARG, "%s: a directory path of %zu characters", what, n);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) { /* each prefix ending before a '/' (and the whole path) */
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0 && !ks_is_directory(buf))
            return ks_fail(KS_ERR_IO, "%s %s: cannot create the directory %s (%s)", what, path, buf,
                           errno == EEXIST ? "a file of that name exists" : strerror(errno));
        buf[i] = c;
    }
    return KS_OK;
}

char *ks_path_join(char *buf, size_t cap, const char *dir, const char *name) {
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    snprintf(buf, cap, "%.*s/%s", (int)dl, dir, name);
    return buf;
}
