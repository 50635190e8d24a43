/* stage_nccl.h — the residual rows between the pipeline stages of one model instance, GPU to GPU through NCCL
 * (built with the cuda backend only: KS_HAVE_CUDA). Every other message stays on the instance's MPI link
 * (mpi/stage_link.h), which also carries NCCL's set-up.
 *
 *     // every stage of the instance, after its GPU is chosen (ks_backend_use_gpu) and its link is up:
 *     int own_gpus;
 *     KS_TRY(ks_stage_nccl_own_gpus(&link, &own_gpus));      // collective over the instance
 *     ks_stage_nccl nccl = {0};
 *     if (own_gpus) KS_TRY(ks_stage_nccl_init(&nccl, &link)); // collective over the instance
 *     ks_stage_transport t;
 *     ks_stage_nccl_transport(&nccl, &link, &t);               // the link's table plus the device entries
 *     ...                                                       // engine/pipeline.h over t
 *     ks_stage_nccl_free(&nccl);                                // after the backend's stream is done with it
 *
 * One communicator per instance, NCCL rank = stage: stage 0 makes the unique id and the link broadcasts it.
 * A device send or receive is one ncclSend / ncclRecv of the rows' bytes on the caller's stream (the backend's:
 * engine/pipeline.h), so it starts after the work queued there and the work queued after it starts once the
 * rows have left or landed; the host does not wait. NCCL refuses two ranks on one GPU: ks_stage_nccl_own_gpus
 * says whether the instance's stages all have GPUs of their own (told apart by UUID, so across nodes and
 * whatever CUDA_VISIBLE_DEVICES says), and instances where they do not keep the MPI path.
 *
 * Waits: set-up waits are bounded like the link's: its broadcasts, and ncclCommInitRank, which every stage enters
 * together, under a watcher that ends the job past the link's timeout; a peer that dies afterwards stalls the
 * stream of the stage waiting on it, and the job ends through the launcher or the link's bounded waits of the
 * stages around it.
 */
#ifndef KS_STAGE_NCCL_H
#define KS_STAGE_NCCL_H

#include "core/status.h"
#include "engine/pipeline.h"
#include "stage_link.h"

struct ncclComm; /* nccl.h's ncclComm_t is a pointer to it */

typedef struct ks_stage_nccl {
    struct ncclComm *comm; /* the instance's stages, NCCL rank = stage; owned; NULL before init */
    int stage, n_stages;
} ks_stage_nccl;

/* Collective over k's instance: *own = 1 when every stage's current CUDA device is a different GPU. */
ks_status ks_stage_nccl_own_gpus(ks_stage_link *k, int *own);

/* Collective over k's instance: the communicator over the stages' current CUDA devices. */
ks_status ks_stage_nccl_init(ks_stage_nccl *n, ks_stage_link *k);
void ks_stage_nccl_free(ks_stage_nccl *n); /* accepts a zeroed struct */

/* The pipeline's transport: k's table (ks_stage_link_transport) with the device entries of n (both must outlive
 * it); without a communicator (n zeroed) k's table alone. */
void ks_stage_nccl_transport(ks_stage_nccl *n, ks_stage_link *k, ks_stage_transport *t);

#endif
