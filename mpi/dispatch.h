/* dispatch.h — rank 0 hands out sample ids on request and collects every result.
 * The same calls run on every rank, with one process and without MPI:
 *
 *     // every rank builds the same sample list (ids 0 .. n-1); rank 0 also builds the queue
 *     ks_queue q = {0};
 *     if (m.rank == 0) KS_TRY(ks_queue_init(&q, n, cost, done, m.size, 1));
 *     ks_dispatch d = {0};
 *     KS_TRY(ks_dispatch_init(&d, m.world, m.rank == 0 ? &q : NULL, 1, store, ctx));   // collective
 *     int id;
 *     while (ks_dispatch_next(&d, &id) == KS_OK && id >= 0) {
 *         ks_result r = {0};
 *         ks_status st = run_sample(id, &r);
 *         if (st == KS_OK) st = ks_dispatch_submit(&d, id, &r);   // rank 0: store() now; else sent to rank 0
 *         else ks_dispatch_fail(&d, id, st);                      // uses ks_last_error() as the reason
 *         ks_result_free(&r);
 *         if (st != KS_OK) break;
 *     }
 *     ks_status st = ks_dispatch_finish(&d);   // collective: every rank gets the same status and message
 *     ks_dispatch_free(&d);
 *
 * How rank 0 computes too: it answers the other ranks from a helper thread, so a rank that finishes a sample
 * gets its next id within milliseconds even while rank 0 is in the middle of a long (128K) sample; serving
 * between its own samples instead would leave the others idle for a whole rank-0 sample. The thread polls
 * (MPI_Iprobe, then sleeps 50 us doubling to 5 ms while idle) rather than blocking in MPI_Recv, because Open
 * MPI's blocking receive spins a core that rank 0's own compute needs. It uses a private duplicate of the
 * communicator, so MPI_THREAD_MULTIPLE is required on rank 0 (checked: a clear error otherwise). The queue
 * and store() run under one mutex: store() is never called concurrently, from either thread; it is where
 * rank 0 appends to the HDF5 file (results/results.h) and prints progress.
 *
 * A rank that runs several samples at once (a batch, runner/runner.h) holds up to `slots` ids: it asks for the
 * next one while it has a free slot and submits each result when that sample finishes, in any order.
 *
 * Protocol (tags on the private communicator): a rank sends REQUEST and waits for ASSIGN (an id, or -1 =
 * stop); after computing it sends RESULT (mpi/wire.h) and requests again; on an error it sends FAIL (id,
 * status, message) and asks for nothing more (rank 0 fails every sample it holds). ks_dispatch_finish on a rank that never got -1 and never
 * failed sends FAIL for it, so rank 0's thread always learns when every rank is done: no deadlock when work
 * runs out or a rank fails. A failure stops the hand-out (mpi/queue.h): samples in flight elsewhere still
 * arrive and are stored, then every rank's finish returns the first failure ("rank 2 (sample 17): ...").
 * The rank that hits a failure prints its line at once (ks_log_error_now), before it waits for the samples
 * in flight; the status finish returns is marked reported, so nobody prints it twice.
 * A rank that dies without a word (killed, segfault) is handled by mpirun, which ends the whole job; the
 * result file keeps every committed sample (results/results.h), so rerunning resumes.
 */
#ifndef KS_DISPATCH_H
#define KS_DISPATCH_H

#include <pthread.h>

#include "results/record.h"
#include "core/status.h"
#include "ks_mpi.h"
#include "queue.h"
#include "wire.h"

#define KS_DISPATCH_MSG_MAX 1024

/* Rank 0's sink for one finished sample (id, its result, the queue's counts after it). Serialised. */
typedef ks_status (*ks_dispatch_store)(void *ctx, int id, const ks_result *r, const ks_queue *q);

/* Fields are private to dispatch.c. */
typedef struct ks_dispatch {
    int rank, size;                   /* in the communicator given to init */
    ks_queue *q;                      /* rank 0: borrowed; NULL elsewhere */
    ks_dispatch_store store;          /* rank 0 */
    void *ctx;
    int slots;                        /* samples this rank may hold at once */
    int *held;                        /* (slots) the ids this rank computes, -1 = none; owned */
    int closed;                       /* this rank asks for nothing more (got -1, or failed) */
    int failed;                       /* this rank failed (ks_dispatch_fail): later failures add nothing */
    ks_status fail_status;            /* the first failure seen (rank 0: the job's; elsewhere: its own) */
    char fail_msg[KS_DISPATCH_MSG_MAX];
    ks_wire_buf buf;                  /* packed results (workers), received messages (rank 0's thread) */
    pthread_mutex_t lock;
    int lock_ready;
    pthread_t server;                 /* rank 0's helper thread, when size > 1 */
    int server_running;
#ifdef KS_HAVE_MPI
    MPI_Comm comm;                    /* private duplicate; MPI_COMM_NULL without MPI */
#endif
} ks_dispatch;

/* Collective over `comm` (ignored, and size 1, when MPI is absent or not initialised). Rank 0 passes its
 * queue (built for the communicator's size and `slots`) and store(); other ranks pass NULL. Every rank passes
 * the same `slots`, the samples a rank may hold at once. */
ks_status ks_dispatch_init(ks_dispatch *d, ks_mpi_comm comm, ks_queue *q, int slots, ks_dispatch_store store,
                           void *ctx);

/* The next sample id for this rank (holding fewer than `slots`), or -1 when there is no more work (or after this
 * rank failed). */
ks_status ks_dispatch_next(ks_dispatch *d, int *id);
/* The samples this rank holds (handed out, not yet submitted or failed). */
int ks_dispatch_holding(const ks_dispatch *d);

/* Hands back the result of `id` (an id this rank holds). Rank 0 stores it now (store()'s error is
 * returned, and stops the hand-out); other ranks send it to rank 0. */
ks_status ks_dispatch_submit(ks_dispatch *d, int id, const ks_result *r);

/* This rank could not run `id` (or -1: it fails outside a sample) because of `st`, whose message is
 * ks_last_error(): rank 0 learns it, fails every sample this rank holds and stops handing out work; this rank
 * asks for nothing more. Only a rank's first failure counts (the later ones are its consequences). */
void ks_dispatch_fail(ks_dispatch *d, int id, ks_status st);

/* Collective: waits until every rank is done and rank 0 holds every result, then returns KS_OK on every rank
 * if nothing failed, else the first failure's status and message on every rank. */
ks_status ks_dispatch_finish(ks_dispatch *d);

/* Releases the communicator and the buffers; accepts a zeroed struct. Call after ks_dispatch_finish. */
void ks_dispatch_free(ks_dispatch *d);

#endif
