/* queue.h — rank 0's assignment of samples to ranks: longest first, skipping samples already recorded, up to
 * `slots` samples in flight per rank (a rank decoding a batch of samples holds one per slot), accounting for
 * returned results and failed ranks. Pure logic (no MPI, no
 * threads, no allocation after init); mpi/dispatch.h carries it over MPI and holds the lock around it.
 *
 *     ks_queue q = {0};
 *     KS_TRY(ks_queue_init(&q, n_samples, cost, done, n_ranks, slots));  // cost: e.g. prompt tokens; done: resume
 *     int id;
 *     KS_TRY(ks_queue_next(&q, rank, &id));     // id = -1: no more work for this rank
 *     KS_TRY(ks_queue_complete(&q, rank, id));  // its result arrived
 *     ks_queue_fail(&q, rank);                  // the rank gave up
 *     ks_queue_free(&q);
 *
 * Failure policy (an error ends the run): after a failure no new sample is handed out; samples in
 * flight on other ranks still complete and are recorded; the failed rank's samples stay unrecorded, so rerunning
 * the same command (resume) retries them. Requests that break the protocol (a rank asking for work while it
 * holds `slots` samples, returning a sample it does not hold, a rank number out of range) are KS_ERR_MPI
 * errors.
 */
#ifndef KS_QUEUE_H
#define KS_QUEUE_H

#include <stdint.h>

#include "core/status.h"

typedef enum ks_sample_state {
    KS_SAMPLE_PENDING, /* still to be handed out */
    KS_SAMPLE_SKIPPED, /* recorded by an earlier run */
    KS_SAMPLE_RUNNING,
    KS_SAMPLE_DONE,
    KS_SAMPLE_FAILED,
} ks_sample_state;

typedef struct ks_queue {
    int n;                      /* samples (ids 0 .. n-1) */
    int n_ranks;
    int *order;                 /* (n_order) ids still to run at init, by cost descending, then id */
    int n_order, next;          /* order[next .. n_order) have not been handed out */
    unsigned char *state;       /* (n) ks_sample_state per id */
    int slots;                  /* samples a rank may hold at once */
    int *running;               /* (n_ranks, slots) the ids each rank holds, -1 = none */
    unsigned char *rank_failed; /* (n_ranks) */
    int stopping;               /* a failure happened: nothing more is handed out */
    int n_skipped, n_done, n_failed, n_running;
} ks_queue;

/* cost[i] orders the work (largest first; ties by id); done[i] != 0 marks samples to skip (may be NULL); each
 * rank holds up to `slots` (>= 1) samples at once. */
ks_status ks_queue_init(ks_queue *q, int n, const int64_t *cost, const unsigned char *done, int n_ranks, int slots);
void ks_queue_free(ks_queue *q);

/* The next sample for `rank` (holding fewer than `slots`), or -1 when there is none left or the queue is
 * stopping. */
ks_status ks_queue_next(ks_queue *q, int rank, int *id);
/* `rank` returned the result of `id`. */
ks_status ks_queue_complete(ks_queue *q, int rank, int id);
/* `rank` failed: the samples it holds (if any) are failed, the rank gets no more work, the queue stops. */
void ks_queue_fail(ks_queue *q, int rank);
/* Stops handing out work (e.g. results can no longer be stored). */
void ks_queue_stop(ks_queue *q);

/* Samples `rank` holds (handed out, not returned). */
int ks_queue_held(const ks_queue *q, int rank);

/* Samples not yet handed out (0 once stopping). */
int ks_queue_pending(const ks_queue *q);

#endif
