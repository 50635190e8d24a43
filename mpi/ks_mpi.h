/* ks_mpi.h — MPI start-up and shut-down, the job's shape (rank, size, node-local rank), and MPI_CHECK.
 *
 *     ks_mpi m = {0};
 *     KS_TRY(ks_mpi_init(&m, &argc, &argv));   // MPI_Init_thread(MULTIPLE) when built with MPI, else 0 of 1
 *     ... m.rank, m.size, m.local_rank (picks the GPU), m.world (for mpi/dispatch.h) ...
 *     st = set_up_something();                // may fail on some ranks only
 *     KS_TRY(ks_mpi_agree(&m, st));           // collective: fails on every rank if it failed on any
 *     if (st != KS_OK && m.size > 1) ks_mpi_abort(&m, 1);   // an error that left peers waiting
 *     ks_mpi_finalize(&m);
 *
 * The rule that keeps a job from hanging: a rank that fails never leaves a collective unmatched. Every phase
 * that may fail on some ranks only ends in ks_mpi_agree, which every rank reaches whatever happened; inside
 * the sample loop, mpi/dispatch.h carries failures. The rank that fails prints its error line before it
 * waits for anyone (ks_log_error_now), so a peer stuck elsewhere never hides it.
 *
 * Without KS_HAVE_MPI (or when run without mpirun: MPI's singleton start) everything works as rank 0 of 1.
 *
 * Under a launcher (mpirun, srun) a watcher thread ends the rank at once when its launcher disappears (the
 * parent process changes): a killed mpirun leaves no orphaned rank computing or committing, and the result
 * file's lock is free for an immediate rerun. Results stay safe: a commit is atomic (results/results.h).
 * MPI_THREAD_MULTIPLE is requested because rank 0 serves the sample queue from a helper thread while its main
 * thread computes (mpi/dispatch.h); m.thread_multiple says whether the library granted it.
 *
 * MPI_CHECK(call) is for MPI calls whose failure leaves the job in an unknown state (a peer may be blocked
 * waiting for us): it prints one line "kvscope r<rank>: error: MPI failed: <MPI's message> (<call> at
 * file:line)" and ends every rank with MPI_Abort. MPI_COMM_WORLD returns errors (MPI_ERRORS_RETURN) instead
 * of MPI's default silent abort so that this line is printed.
 */
#ifndef KS_MPI_H
#define KS_MPI_H

#include "core/status.h"

#ifdef KS_HAVE_MPI
#include <mpi.h>
typedef MPI_Comm ks_mpi_comm;
#define MPI_CHECK(call)                                                                                     \
    do {                                                                                                    \
        int ks_mpi_rc_ = (call);                                                                            \
        if (ks_mpi_rc_ != MPI_SUCCESS) ks_mpi_check_fail(ks_mpi_rc_, #call, __FILE__, __LINE__);            \
    } while (0)
void ks_mpi_check_fail(int rc, const char *call, const char *file, int line) __attribute__((noreturn));
#else
typedef int ks_mpi_comm; /* a placeholder: there is only one process */
#endif

typedef struct ks_mpi {
    int rank, size;             /* in the world communicator; 0 and 1 without MPI */
    int local_rank, local_size; /* among the ranks on this node (MPI_COMM_TYPE_SHARED): picks the GPU */
    int thread_multiple;        /* 1 if MPI_THREAD_MULTIPLE was granted (always 1 without MPI) */
    int initialized;            /* this struct called MPI_Init_thread and must finalize */
    ks_mpi_comm world;          /* MPI_COMM_WORLD */
} ks_mpi;

/* Initialises MPI (if this build has it and nobody did yet), fills the struct, and prefixes log lines with
 * the rank when size > 1. */
ks_status ks_mpi_init(ks_mpi *m, int *argc, char ***argv);

/* Collective over m->world: KS_OK on every rank if `st` is KS_OK on every rank. A rank whose `st` failed
 * first prints its error (unless already printed) and returns `st`; the others return KS_ERR_MPI naming the
 * lowest failed rank, marked reported (its line is already out). A failed rank whose peers do not arrive
 * within 2 s (still loading a model, say) ends the whole job with MPI_Abort instead. With one process it
 * returns `st` as is. */
ks_status ks_mpi_agree(const ks_mpi *m, ks_status st);

/* Finalises MPI if ks_mpi_init initialised it; accepts a zeroed struct. */
void ks_mpi_finalize(ks_mpi *m);

/* Ends every rank of the job with exit code `code` (exit() without MPI). For errors after which peers could
 * wait forever; errors that every rank learns about (e.g. ks_dispatch_finish) end normally instead. */
void ks_mpi_abort(const ks_mpi *m, int code) __attribute__((noreturn));

#endif
