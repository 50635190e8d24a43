/* ks_mpi.c — see ks_mpi.h. */
#include "ks_mpi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#include "core/log.h"

#ifdef KS_HAVE_MPI
void ks_mpi_check_fail(int rc, const char *call, const char *file, int line) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0, rank = -1, inited = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error code %d", rc);
    MPI_Initialized(&inited);
    if (inited) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    fprintf(stderr, "kvscope r%d: error: MPI failed: %s (%s at %s:%d)\n", rank, msg, call, file, line);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    abort(); /* MPI_Abort does not return */
}
#endif

/* The launcher's process is this rank's parent; when it dies the rank is re-parented. Polled rather than
 * prctl(PR_SET_PDEATHSIG), which fires when the forking *thread* ends and so depends on launcher internals. */
#define KS_LAUNCHER_POLL_US 50000

static void *watch_launcher(void *arg) {
    pid_t launcher = (pid_t)(intptr_t)arg;
    for (;;) {
        usleep(KS_LAUNCHER_POLL_US);
        if (getppid() != launcher) {
            /* stderr may be a pipe to the dead launcher; the line is for launchers that log to files. */
            ks_fail(KS_ERR_MPI, "the launcher (pid %d) is gone; stopping this rank", (int)launcher);
            ks_log_error_now();
            _exit(1);
        }
    }
    return NULL;
}

/* Started by a launcher: the variables every common MPI launcher sets for its ranks. */
static int under_launcher(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK") || getenv("PMI_SIZE");
}

static void start_launcher_watch(void) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, watch_launcher, (void *)(intptr_t)getppid()) != 0)
        ks_log_warn("cannot start the launcher watch; a killed mpirun may leave this rank running");
    pthread_attr_destroy(&attr);
}

ks_status ks_mpi_init(ks_mpi *m, int *argc, char ***argv) {
    memset(m, 0, sizeof *m);
    m->size = m->local_size = 1;
    m->thread_multiple = 1;
#ifdef KS_HAVE_MPI
    int inited = 0, provided = MPI_THREAD_SINGLE;
    MPI_Initialized(&inited);
    if (!inited) {
        if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
            return ks_fail(KS_ERR_MPI, "MPI_Init_thread failed (is the MPI installation complete?)");
        m->initialized = 1;
    } else {
        MPI_Query_thread(&provided);
    }
    m->thread_multiple = provided >= MPI_THREAD_MULTIPLE;
    m->world = MPI_COMM_WORLD;
    MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &m->rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &m->size));
    MPI_Comm node;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, m->rank, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_rank(node, &m->local_rank));
    MPI_CHECK(MPI_Comm_size(node, &m->local_size));
    MPI_CHECK(MPI_Comm_free(&node));
    if (m->size > 1) ks_log_set_rank(m->rank);
    if (m->size > 1 || under_launcher()) start_launcher_watch();
#else
    (void)argc;
    (void)argv;
#endif
    return KS_OK;
}

/* A rank that failed waits this long for the others to reach the agreement, then ends the job with
 * MPI_Abort: its line is out, and peers still loading a large model must not keep the allocation busy. */
#define KS_AGREE_GRACE_US 2000000
#define KS_AGREE_POLL_MAX_US 10000

ks_status ks_mpi_agree(const ks_mpi *m, ks_status st) {
    if (m->size <= 1) return st;
    if (st != KS_OK && !ks_error_is_reported()) ks_log_error_now();
#ifdef KS_HAVE_MPI
    int mine = st != KS_OK ? m->rank : m->size, first = m->size, done = 0;
    MPI_Request req;
    MPI_CHECK(MPI_Iallreduce(&mine, &first, 1, MPI_INT, MPI_MIN, m->world, &req));
    /* Polled with sleeps: a blocking wait spins a core that a peer on this node may need to catch up. */
    for (long waited_us = 0, poll_us = 100;; waited_us += poll_us, poll_us = poll_us < KS_AGREE_POLL_MAX_US ? 2 * poll_us : poll_us) {
        MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
        if (done) break;
        if (st != KS_OK && waited_us >= KS_AGREE_GRACE_US) ks_mpi_abort(m, 1);
        usleep((useconds_t)poll_us);
    }
    if (first == m->size || st != KS_OK) return st;
    ks_status failed = ks_fail(KS_ERR_MPI, "rank %d failed (its error line is above)", first);
    ks_error_mark_reported();
    return failed;
#else
    return st;
#endif
}

void ks_mpi_finalize(ks_mpi *m) {
#ifdef KS_HAVE_MPI
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (m->initialized && !finalized) MPI_Finalize();
#endif
    m->initialized = 0;
}

void ks_mpi_abort(const ks_mpi *m, int code) {
    fflush(stdout);
    fflush(stderr);
#ifdef KS_HAVE_MPI
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (inited && !finalized && m->size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#else
    (void)m;
#endif
    exit(code);
}
