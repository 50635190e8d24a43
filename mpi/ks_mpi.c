/* ks_mpi.c — see ks_mpi.h. */
#include "ks_mpi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
#else
    (void)argc;
    (void)argv;
#endif
    return KS_OK;
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
