/* stage_link.h — the messages between the pipeline stages of one model instance (mpi/stage.h), over MPI.
 *
 *     ks_stage_link k = {0};
 *     KS_TRY(ks_stage_link_init(&k, &mpi, &layout, 300.0));   // collective over the world: one per instance
 *     ks_stage_link_context(&k, "sample %d", id);               // named in a timeout's error line
 *     KS_TRY(ks_stage_link_send(&k, k.stage + 1, 2, rows, bytes));          // to the next stage, channel 2
 *     KS_TRY(ks_stage_link_recv(&k, k.stage - 1, 2, rows, bytes));          // from the previous one
 *     KS_TRY(ks_stage_link_bcast(&k, k.n_stages - 1, &token, sizeof token)); // the last stage's token
 *     ks_stage_transport t;
 *     ks_stage_link_transport(&k, &t);                                      // the pipeline's view of it
 *     ks_stage_link_free(&k);
 *
 * Every wait is bounded: a peer that sends nothing for timeout_s seconds (it hangs, or died without the
 * launcher noticing) ends the whole job with one error line naming the stage, its world rank and the context
 * (ks_mpi_abort: the peers may be blocked anywhere). Waits poll with short sleeps rather than spinning, so
 * ranks sharing a node's cores (the CPU backend, several stages per node) leave them to the one computing.
 * A send copies the message and returns: a stage goes on with its next chunk while the next stage still works on
 * the previous one, which is what pipelines the prefill. The next send of the same tag first waits (bounded)
 * for the previous one to be taken, so one message per tag is in flight.
 *
 * Without MPI (or with one stage) only stage 0 exists and the calls are errors except a bcast to itself.
 */
#ifndef KS_STAGE_LINK_H
#define KS_STAGE_LINK_H

#include <stddef.h>

#include "core/status.h"
#include "engine/pipeline.h"
#include "ks_mpi.h"
#include "stage.h"

/* Channels 1 .. KS_STAGE_TAGS - 1 (MPI tags); the messages of one (peer, channel) arrive in order. The pipeline
 * (engine/pipeline.h) names its channels; ks_stage_link_transport hands them to this link. */
#define KS_STAGE_TAGS 8

typedef struct ks_stage_link {
    int stage, n_stages;   /* this rank's stage in its instance */
    int first_rank;        /* world rank of the instance's stage 0 */
    double timeout_s;      /* the longest wait for a peer */
    char context[128];     /* what the instance is doing (a timeout names it) */
    const ks_mpi *mpi;     /* borrowed: for the abort */
    void *out[KS_STAGE_TAGS];      /* the copy of the message in flight, per tag; owned */
    size_t out_cap[KS_STAGE_TAGS];
#ifdef KS_HAVE_MPI
    MPI_Comm comm;         /* the instance's ranks, ordered by stage; MPI_COMM_NULL with one stage */
    MPI_Comm heads;        /* every instance's stage 0 (rank order); MPI_COMM_NULL on other stages and without
                              MPI's world */
    MPI_Request sent[KS_STAGE_TAGS]; /* the send in flight per tag, MPI_REQUEST_NULL when none */
    int sent_to[KS_STAGE_TAGS];      /* its destination stage */
    size_t sent_bytes[KS_STAGE_TAGS]; /* its size */
#endif
} ks_stage_link;

/* Collective over mpi->world (every rank calls it, each with its own layout). timeout_s > 0. */
ks_status ks_stage_link_init(ks_stage_link *k, const ks_mpi *mpi, const ks_stage_layout *s, double timeout_s);
void ks_stage_link_free(ks_stage_link *k); /* accepts a zeroed struct */

/* printf-style text a timeout's error names ("sample 17, decode step 3"). */
void ks_stage_link_context(ks_stage_link *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

ks_status ks_stage_link_send(ks_stage_link *k, int to_stage, int tag, const void *buf, size_t bytes);
/* Receives exactly `bytes` (a different size is KS_ERR_MPI naming both). */
ks_status ks_stage_link_recv(ks_stage_link *k, int from_stage, int tag, void *buf, size_t bytes);
/* buf of root_stage to every stage of the instance. */
ks_status ks_stage_link_bcast(ks_stage_link *k, int root_stage, void *buf, size_t bytes);

/* The communicator of the instances' first stages, the ranks that take samples from rank 0's queue
 * (mpi/dispatch.h): the world when instances have one stage. Only valid on stage 0. */
ks_mpi_comm ks_stage_link_heads(const ks_stage_link *k);

/* The pipeline's transport table over this link (k must outlive it). */
void ks_stage_link_transport(ks_stage_link *k, ks_stage_transport *t);

#endif
