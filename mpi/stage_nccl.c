/* stage_nccl.c — see stage_nccl.h. Built only with KS_HAVE_CUDA (CMakeLists.txt). */
#include "stage_nccl.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "core/log.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

static ks_status nccl_check(ncclResult_t r, const char *what, int stage, int peer) {
    if (r == ncclSuccess) return KS_OK;
    return ks_fail(KS_ERR_DEVICE, "NCCL failed: %s (%s, pipeline stage %d, peer stage %d)", ncclGetErrorString(r),
                   what, stage, peer);
}

/* The UUID of this process's current CUDA device. */
static ks_status current_gpu(cudaUUID_t *uuid) {
    int dev = 0;
    struct cudaDeviceProp prop;
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, dev);
    if (e != cudaSuccess)
        return ks_fail(KS_ERR_DEVICE, "pipeline stage: cannot query its GPU: %s", cudaGetErrorString(e));
    *uuid = prop.uuid;
    return KS_OK;
}

ks_status ks_stage_nccl_own_gpus(ks_stage_link *k, int *own) {
    /* Every stage broadcasts its GPU's UUID, a failed query as zeros, so that no stage is left waiting. */
    cudaUUID_t mine, all[KS_STAGE_MAX];
    memset(&mine, 0, sizeof mine);
    ks_status st = current_gpu(&mine);
    for (int s = 0; s < k->n_stages; s++) {
        if (s == k->stage) all[s] = mine;
        KS_TRY(ks_stage_link_bcast(k, s, &all[s], sizeof all[s]));
    }
    KS_TRY(st);
    *own = 1;
    for (int a = 0; a < k->n_stages; a++)
        for (int b = a + 1; b < k->n_stages; b++)
            if (!memcmp(&all[a], &all[b], sizeof all[a])) *own = 0;
    return KS_OK;
}

/* ncclCommInitRank waits for every stage of the instance with no limit of its own: a watcher ends the job when
 * it takes longer than the link's timeout (a peer died after the id's broadcast), as the link's own waits do. */
typedef struct init_watch {
    ks_stage_link *k;
    pthread_mutex_t lock;
    pthread_cond_t done_cond;
    int done;
} init_watch;

static void *watch_init(void *arg) {
    init_watch *w = arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)w->k->timeout_s + 1;
    pthread_mutex_lock(&w->lock);
    int rc = 0;
    while (!w->done && rc == 0) rc = pthread_cond_timedwait(&w->done_cond, &w->lock, &until);
    int late = !w->done;
    pthread_mutex_unlock(&w->lock);
    if (late) {
        ks_fail(KS_ERR_DEVICE, "pipeline stage %d (rank %d): NCCL's set-up (ncclCommInitRank) waited more than %.0f s "
                               "for the instance's other stages: one hangs or died; ending the job (--stage_timeout "
                               "sets the limit)", w->k->stage, w->k->first_rank + w->k->stage, w->k->timeout_s);
        ks_log_error_now();
        ks_mpi_abort(w->k->mpi, 1);
    }
    return NULL;
}

static ks_status init_comm_bounded(ks_stage_link *k, ncclComm_t *comm, ncclUniqueId id) {
    init_watch w = {.k = k, .lock = PTHREAD_MUTEX_INITIALIZER, .done_cond = PTHREAD_COND_INITIALIZER};
    pthread_t t;
    int watching = pthread_create(&t, NULL, watch_init, &w) == 0;
    ncclResult_t r = ncclCommInitRank(comm, k->n_stages, id, k->stage);
    pthread_mutex_lock(&w.lock);
    w.done = 1;
    pthread_cond_signal(&w.done_cond);
    pthread_mutex_unlock(&w.lock);
    if (watching) pthread_join(t, NULL);
    return nccl_check(r, "ncclCommInitRank", k->stage, -1);
}

ks_status ks_stage_nccl_init(ks_stage_nccl *n, ks_stage_link *k) {
    memset(n, 0, sizeof *n);
    n->stage = k->stage, n->n_stages = k->n_stages;
    /* Stage 0's id, or its failure, reaches every stage: none enters ncclCommInitRank alone. */
    struct {
        ncclUniqueId id;
        int32_t r;
    } made;
    memset(&made, 0, sizeof made);
    if (k->stage == 0) made.r = ncclGetUniqueId(&made.id);
    KS_TRY(ks_stage_link_bcast(k, 0, &made, sizeof made));
    KS_TRY(nccl_check((ncclResult_t)made.r, "ncclGetUniqueId", n->stage, 0));
    ncclComm_t comm = NULL;
    KS_TRY(init_comm_bounded(k, &comm, made.id));
    n->comm = comm;
    return KS_OK;
}

void ks_stage_nccl_free(ks_stage_nccl *n) {
    if (n->comm) ncclCommDestroy(n->comm);
    memset(n, 0, sizeof *n);
}

static ks_status nccl_send(void *ctx, int to_stage, const void *rows, size_t bytes, void *stream) {
    ks_stage_nccl *n = ctx;
    return nccl_check(ncclSend(rows, bytes, ncclUint8, to_stage, n->comm, (cudaStream_t)stream), "ncclSend",
                      n->stage, to_stage);
}

static ks_status nccl_recv(void *ctx, int from_stage, void *rows, size_t bytes, void *stream) {
    ks_stage_nccl *n = ctx;
    return nccl_check(ncclRecv(rows, bytes, ncclUint8, from_stage, n->comm, (cudaStream_t)stream), "ncclRecv",
                      n->stage, from_stage);
}

void ks_stage_nccl_transport(ks_stage_nccl *n, ks_stage_link *k, ks_stage_transport *t) {
    ks_stage_link_transport(k, t);
    if (!n->comm) return;
    t->device_ctx = n;
    t->send_device = nccl_send;
    t->recv_device = nccl_recv;
}
