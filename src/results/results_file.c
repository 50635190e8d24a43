/* results_file.c — the writer: create or resume a result file, append, commit atomically, close.
 * See results.h ("Durability") for why the file lives in memory and every commit replaces it by rename(). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"
#include "core/log.h"
#include "results/h5_check.h"
#include "results/results_impl.h"

#define KS_CORE_INCREMENT (1 << 20) /* growth step of the in-memory file, bytes */

/* ---- small helpers -------------------------------------------------------------------------------------- */

static char *concat(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *s = ks_malloc(na + nb + 1, "a path");
    if (s) {
        memcpy(s, a, na);
        memcpy(s + na, b, nb + 1);
    }
    return s;
}

/* FNV-1a 64 of the identity text as 16 hex digits (a short fingerprint; comparisons use the full text). */
static void fnv1a_hex(const char *s, char out[17]) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

static void iso_now(char out[32]) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static double seconds_since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

/* Describes the first line where the two texts differ: "line N: the file has 'x', this run has 'y'". */
static void first_difference(const char *a, const char *b, char *out, size_t cap) {
    int line = 1;
    const char *la = a, *lb = b;
    while (*a && *a == *b) {
        if (*a == '\n') {
            line++;
            la = a + 1;
            lb = b + 1;
        }
        a++;
        b++;
    }
    int na = (int)strcspn(la, "\n"), nb = (int)strcspn(lb, "\n");
    snprintf(out, cap, "line %d: the file has '%.*s%s', this run has '%.*s%s'", line, na > 60 ? 60 : na, la,
             na > 60 ? "..." : "", nb > 60 ? 60 : nb, lb, nb > 60 ? "..." : "");
}

/* ---- the lock on "<path>.lock" ------------------------------------------------------------------------- */

static void lock_release(ks_results *r) {
    if (r->lock_fd < 0) return;
    unlink(r->lock_path); /* while still locked, so no other writer can hold a lock on the old inode */
    close(r->lock_fd);
    r->lock_fd = -1;
}

/* How long a writer waits for a lock held by someone else before it gives up. Long enough for the ranks of
 * a job whose launcher was just killed to notice and exit (mpi/ks_mpi.h), so an immediate rerun resumes;
 * short enough that a second run on the same output fails within seconds. */
#define KS_LOCK_WAIT_MS 3000
#define KS_LOCK_POLL_MS 50

/* Whoever holds the lock wrote "pid <pid> on <host>" into it; "" when unreadable. */
static void lock_holder(const char *lock_path, char *out, size_t cap) {
    out[0] = '\0';
    int fd = open(lock_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, out, cap - 1);
    close(fd);
    out[n > 0 ? n : 0] = '\0';
    out[strcspn(out, "\n")] = '\0';
}

/* Records this process as the holder, for the message another writer prints. */
static void lock_sign(int fd) {
    char host[256] = "?", text[320];
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    int n = snprintf(text, sizeof text, "pid %d on %s\n", (int)getpid(), host);
    if (ftruncate(fd, 0) == 0 && pwrite(fd, text, (size_t)n, 0) == n) return;
    ks_log_warn("cannot write the lock holder into its lock file (%s)", strerror(errno));
}

/* One try: 1 = taken, 0 = held by someone else, -1 = error recorded (2 = no locks on this file system). */
static int lock_try(ks_results *r) {
    int fd = open(r->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        ks_fail(KS_ERR_IO, "%s: cannot create (%s); does the output directory exist and is it writable?",
                r->lock_path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK) return 0;
        if (e == ENOLCK || e == EOPNOTSUPP || e == ENOSYS) {
            unlink(r->lock_path);
            ks_log_warn("%s: this file system has no file locks (%s); make sure only one kvscope writes it",
                        r->path, strerror(e));
            return 2;
        }
        ks_fail(KS_ERR_IO, "%s: cannot lock (%s)", r->lock_path, strerror(e));
        return -1;
    }
    /* A previous holder may have unlinked the lock file between our open() and flock(): then we hold a lock
     * on a dead inode and must try again on the current one. */
    struct stat held, now;
    if (fstat(fd, &held) == 0 && stat(r->lock_path, &now) == 0 && held.st_ino == now.st_ino &&
        held.st_dev == now.st_dev) {
        lock_sign(fd);
        r->lock_fd = fd;
        return 1;
    }
    close(fd);
    return 0;
}

static ks_status lock_acquire(ks_results *r) {
    for (int waited_ms = 0;; waited_ms += KS_LOCK_POLL_MS) {
        int got = lock_try(r);
        if (got < 0) return KS_ERR_IO;
        if (got > 0) return KS_OK;
        if (waited_ms >= KS_LOCK_WAIT_MS) break;
        if (waited_ms == 0) ks_log_info("%s: locked by another writer; waiting up to %d s", r->path,
                                        KS_LOCK_WAIT_MS / 1000);
        usleep(KS_LOCK_POLL_MS * 1000);
    }
    char holder[300];
    lock_holder(r->lock_path, holder, sizeof holder);
    return ks_fail(KS_ERR_IO, "%s: another kvscope process%s%s%s is writing this file (%s is locked); wait for "
                   "it to finish or choose another output (--output)", r->path, holder[0] ? " (" : "", holder,
                   holder[0] ? ")" : "", r->lock_path);
}

/* ---- commit: the in-memory file replaces the file on disk ---------------------------------------------- */

static ks_status write_all(int fd, const char *p, size_t n, const char *path) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return ks_fail(KS_ERR_IO, "%s: write failed (%s)", path, w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
    }
    return KS_OK;
}

/* Makes the rename durable: fsync of the directory that holds `path`. */
static void sync_parent_dir(const char *path) {
    char *copy = strdup(path);
    if (!copy) return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd); /* some file systems refuse fsync on directories; the rename itself already happened */
        close(fd);
    }
    free(copy);
}

static ks_status move_over(ks_results *r) {
    if (rename(r->tmp_path, r->path) != 0)
        return ks_fail(KS_ERR_IO, "%s: cannot rename to %s (%s)", r->tmp_path, r->path, strerror(errno));
    return KS_OK;
}

/* The first commit of a new file: link() fails if something appeared at path since open, which is never
 * overwritten; file systems without hard links fall back to rename(). */
static ks_status move_new(ks_results *r) {
    if (link(r->tmp_path, r->path) != 0) {
        if (errno == EEXIST)
            return ks_fail(KS_ERR_IO, "%s: appeared while kvscope was creating it; left untouched", r->path);
        if (errno != EPERM && errno != EOPNOTSUPP && errno != ENOSYS)
            return ks_fail(KS_ERR_IO, "%s: cannot create (%s)", r->path, strerror(errno));
        return move_over(r);
    }
    unlink(r->tmp_path);
    return KS_OK;
}

static ks_status replace_file(ks_results *r, const void *image, size_t n) {
    int fd = open(r->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) return ks_fail(KS_ERR_IO, "%s: cannot create (%s)", r->tmp_path, strerror(errno));
    ks_status st = write_all(fd, image, n, r->tmp_path);
    if (st == KS_OK && fsync(fd) != 0) st = ks_fail(KS_ERR_IO, "%s: fsync failed (%s)", r->tmp_path, strerror(errno));
    if (close(fd) != 0 && st == KS_OK)
        st = ks_fail(KS_ERR_IO, "%s: close failed (%s)", r->tmp_path, strerror(errno));
    if (st == KS_OK) st = r->on_disk ? move_over(r) : move_new(r);
    if (st != KS_OK) {
        unlink(r->tmp_path);
        return ks_fail_context(st, "%s keeps its last commit", r->path);
    }
    sync_parent_dir(r->path);
    r->on_disk = 1;
    return KS_OK;
}

static ks_status commit(ks_results *r) {
    char now[32];
    iso_now(now);
    KS_TRY(ks_attr_write_str(r->file, "end_time", now));
    KS_TRY(ks_attr_write_f64(r->file, "wall_seconds", r->wall_before + seconds_since(&r->session_start)));
    H5_CHECK(H5Fflush(r->file, H5F_SCOPE_GLOBAL));
    ssize_t n;
    H5_CHECK(n = H5Fget_file_image(r->file, NULL, 0));
    KS_TRY(ks_scratch_reserve(&r->image, (size_t)n));
    H5_CHECK(H5Fget_file_image(r->file, r->image.p, (size_t)n));
    return replace_file(r, r->image.p, (size_t)n);
}

/* ---- create / resume ----------------------------------------------------------------------------------- */

/* A file-access property list for an in-memory file, optionally starting from `image` (n bytes). */
static ks_status core_fapl(hid_t *fapl, const void *image, size_t n) {
    H5_CHECK(*fapl = H5Pcreate(H5P_FILE_ACCESS));
    H5_CHECK(H5Pset_fapl_core(*fapl, KS_CORE_INCREMENT, 0));
    if (image && n) H5_CHECK(H5Pset_file_image(*fapl, (void *)image, n)); /* n = 0: refused as not HDF5 */
    return KS_OK;
}

static ks_status create_file(ks_results *r, const ks_results_meta *meta) {
    hid_t fapl = H5I_INVALID_HID;
    ks_status st = core_fapl(&fapl, NULL, 0);
    if (st == KS_OK && (r->file = H5Fcreate(r->image_name, H5F_ACC_TRUNC, H5P_DEFAULT, fapl)) < 0)
        st = ks_fail(KS_ERR_HDF5, "%s: cannot create the in-memory HDF5 file (%s)", r->path, ks_h5_errstr(0));
    if (fapl >= 0) H5Pclose(fapl);
    KS_TRY(st);
    char hash[17], now[32];
    fnv1a_hex(meta->identity, hash);
    iso_now(now);
    KS_TRY(ks_attr_write_str(r->file, "kvscope_format", KS_RESULTS_FORMAT));
    KS_TRY(ks_attr_write_i32(r->file, "format_version", KS_RESULTS_FORMAT_VERSION));
    for (int i = 0; i < ks_n_meta_attrs; i++)
        KS_TRY(ks_attr_write_str(r->file, ks_meta_attrs[i].name,
                                 *(const char *const *)((const char *)meta + ks_meta_attrs[i].offset)));
    KS_TRY(ks_attr_write_str(r->file, "config_hash", hash));
    KS_TRY(ks_attr_write_str(r->file, "start_time", now));
    KS_TRY(ks_attr_write_i32(r->file, "sessions", 1));
    KS_TRY(ks_table_create(&r->samples, r->file, &ks_samples_spec));
    KS_TRY(ks_table_create(&r->layers, r->file, &ks_layers_spec));
    return commit(r);
}

/* Opens the existing file in memory; nothing is written until every check passed. */
static ks_status resume_file(ks_results *r, const ks_results_meta *meta) {
    char *image = NULL;
    size_t n = 0;
    KS_TRY(ks_file_read_all(r->path, &image, &n));
    hid_t fapl = H5I_INVALID_HID;
    ks_status st = core_fapl(&fapl, image, n);
    if (st == KS_OK) st = ks_results_open_checked(r->path, r->image_name, H5F_ACC_RDWR, fapl, &r->file);
    if (fapl >= 0) H5Pclose(fapl);
    free(image);
    KS_TRY(st);

    char *identity = NULL;
    KS_TRY(ks_attr_read_str(r->file, "config", &identity));
    if (!identity || strcmp(identity, meta->identity)) {
        char diff[256];
        first_difference(identity ? identity : "", meta->identity, diff, sizeof diff);
        free(identity);
        return ks_fail(KS_ERR_ARG, "%s holds results of a different configuration (config %s); choose another "
                       "output (--output) to keep both, or rerun with the file's configuration to resume it",
                       r->path, diff);
    }
    free(identity);
    KS_TRY(ks_table_open(&r->samples, r->file, &ks_samples_spec, r->path));
    KS_TRY(ks_table_open(&r->layers, r->file, &ks_layers_spec, r->path));
    KS_TRY(ks_key_set_load(&r->done, &r->samples, r->path));
    int sessions = 0;
    KS_TRY(ks_attr_read_f64(r->file, "wall_seconds", &r->wall_before));
    KS_TRY(ks_attr_read_i32(r->file, "sessions", &sessions));
    if (sessions < 1 || sessions == INT_MAX)
        return ks_fail(KS_ERR_FORMAT, "%s: attribute 'sessions' is %d, not a count of the runs that opened the file "
                                      "(1 or more); the file was not written by kvscope or was altered",
                       r->path, sessions);
    KS_TRY(ks_attr_write_i32(r->file, "sessions", sessions + 1));
    return commit(r);
}

ks_status ks_results_open(ks_results **out, const char *path, const ks_results_meta *meta) {
    KS_ASSERT(out && path && meta && meta->identity);
    *out = NULL;
    ks_h5_quiet();
    ks_results *r = ks_calloc(1, sizeof *r, "the results writer");
    if (!r) return KS_ERR_NOMEM;
    r->file = H5I_INVALID_HID;
    r->lock_fd = -1;
    clock_gettime(CLOCK_MONOTONIC, &r->session_start);
    r->path = strdup(path);
    r->tmp_path = concat(path, ".kvscope-tmp");
    r->lock_path = concat(path, ".lock");
    r->image_name = concat(path, ".kvscope-memory"); /* never created on disk: names the core-driver file */
    ks_status st = r->path && r->tmp_path && r->lock_path && r->image_name
                       ? KS_OK : ks_fail(KS_ERR_NOMEM, "out of memory opening %s", path);
    if (st == KS_OK) st = lock_acquire(r);
    struct stat sb;
    r->on_disk = st == KS_OK && stat(path, &sb) == 0;
    if (r->on_disk && !S_ISREG(sb.st_mode))
        st = ks_fail(KS_ERR_IO, "%s: exists and is not a regular file; choose another output (--output)", path);
    if (st == KS_OK) st = r->on_disk ? resume_file(r, meta) : create_file(r, meta);
    if (st != KS_OK) {
        r->broken = 1; /* close must not commit */
        ks_results_close(r);
        return st;
    }
    *out = r;
    return KS_OK;
}

/* ---- append / close ------------------------------------------------------------------------------------ */

int ks_results_is_done(const ks_results *r, const char *task, int length, int index) {
    return ks_key_set_contains(&r->done, task, length, index);
}

int ks_results_count(const ks_results *r) { return (int)r->samples.n_rows; }

ks_status ks_results_append(ks_results *r, const ks_result *res) {
    KS_ASSERT(r && res && memchr(res->task, '\0', KS_TASK_MAX) && res->task[0]);
    KS_ASSERT(res->n_layers >= 0 && (res->n_layers == 0 || res->layers));
    if (r->broken)
        return ks_fail(KS_ERR_IO, "%s: an earlier write failed; the file keeps the %d samples committed before it",
                       r->path, r->done.n);
    if (ks_key_set_contains(&r->done, res->task, res->length, res->index))
        return ks_fail(KS_ERR_ARG, "%s: sample %s/%d/%d is already recorded (each sample is written once)",
                       r->path, res->task, res->length, res->index);
    int64_t row = r->samples.n_rows;
    ks_status st = ks_table_append(&r->samples, res, 1, &r->column);
    if (st == KS_OK) st = ks_layer_rows_build(res, row, &r->layer_rows);
    if (st == KS_OK) st = ks_table_append(&r->layers, r->layer_rows.p, res->n_layers, &r->column);
    if (st == KS_OK) st = ks_key_set_insert(&r->done, res->task, res->length, res->index);
    if (st == KS_OK) st = commit(r);
    if (st != KS_OK) {
        r->broken = 1;
        return ks_fail_context(st, "%s: appending sample %s/%d/%d", r->path, res->task, res->length, res->index);
    }
    return KS_OK;
}

ks_status ks_results_close(ks_results *r) {
    if (!r) return KS_OK;
    ks_status st = r->broken ? KS_OK : commit(r);
    ks_table_close(&r->samples);
    ks_table_close(&r->layers);
    if (r->file >= 0) H5Fclose(r->file);
    lock_release(r);
    ks_key_set_free(&r->done);
    free(r->image.p);
    free(r->column.p);
    free(r->layer_rows.p);
    free(r->path);
    free(r->tmp_path);
    free(r->lock_path);
    free(r->image_name);
    free(r);
    return st;
}
