/* stage_link.c — see stage_link.h. */
#include "stage_link.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

/* Polling: sleeps start short (a decode step's hand-off is sub-millisecond on a node) and double up to this. */
#define KS_STAGE_POLL_MAX_US 1000
/* While a message of at least KS_STAGE_BULK_BYTES is in flight from or to this rank (a prefill chunk's rows), the
 * sleeps stay at KS_STAGE_POLL_BULK_US: MPI moves a large message only while its ranks call into it (one
 * shared-memory fragment per call where no single-copy path exists), so 1 ms sleeps would move a chunk's rows
 * at tens of MB/s. */
#define KS_STAGE_BULK_BYTES (64 * 1024)
#define KS_STAGE_POLL_BULK_US 20

ks_status ks_stage_link_init(ks_stage_link *k, const ks_mpi *mpi, const ks_stage_layout *s, double timeout_s) {
    memset(k, 0, sizeof *k);
    k->stage = s->stage, k->n_stages = s->n_stages, k->first_rank = s->first_rank;
    k->timeout_s = timeout_s;
    k->mpi = mpi;
    snprintf(k->context, sizeof k->context, "setting up");
#ifdef KS_HAVE_MPI
    k->comm = k->heads = MPI_COMM_NULL;
    for (int t = 0; t < KS_STAGE_TAGS; t++) k->sent[t] = MPI_REQUEST_NULL;
    if (mpi->size > 1) {
        MPI_CHECK(MPI_Comm_split(mpi->world, s->stage == 0 ? 0 : MPI_UNDEFINED, mpi->rank, &k->heads));
        MPI_Comm comm; /* collective over the world even for one-stage instances */
        MPI_CHECK(MPI_Comm_split(mpi->world, s->instance, s->stage, &comm));
        if (s->n_stages > 1) {
            k->comm = comm;
            MPI_CHECK(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
        } else {
            MPI_CHECK(MPI_Comm_free(&comm));
        }
    }
    return KS_OK;
#else
    return s->n_stages == 1 ? KS_OK
                            : ks_fail(KS_ERR_UNSUPPORTED, "%d pipeline stages need MPI; this build has none",
                                      s->n_stages);
#endif
}

void ks_stage_link_context(ks_stage_link *k, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(k->context, sizeof k->context, fmt, ap);
    va_end(ap);
}

#ifdef KS_HAVE_MPI
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Waits for req with sleeps; past the timeout the job ends with one line naming `peer` and what was awaited. */
/* 1 when a message of KS_STAGE_BULK_BYTES or more is in flight: the one awaited (bytes) or a send of this rank. */
static int bulk_in_flight(const ks_stage_link *k, size_t bytes) {
    if (bytes >= KS_STAGE_BULK_BYTES) return 1;
    for (int t = 0; t < KS_STAGE_TAGS; t++)
        if (k->sent[t] != MPI_REQUEST_NULL && k->sent_bytes[t] >= KS_STAGE_BULK_BYTES) return 1;
    return 0;
}

static void wait_bounded(ks_stage_link *k, MPI_Request *req, MPI_Status *st, int peer, const char *what,
                         size_t bytes) {
    double t0 = now_s();
    const useconds_t most = bulk_in_flight(k, bytes) ? KS_STAGE_POLL_BULK_US : KS_STAGE_POLL_MAX_US;
    for (useconds_t poll_us = 20;; poll_us = poll_us < most ? 2 * poll_us : most) {
        int done = 0;
        MPI_CHECK(MPI_Test(req, &done, st));
        if (done) return;
        if (now_s() - t0 > k->timeout_s) {
            ks_fail(KS_ERR_MPI, "pipeline stage %d (rank %d) %s nothing for %.0f s during %s: it hangs or died; "
                                "ending the job (rerun the same command to resume; --stage_timeout sets the limit)",
                    peer, k->first_rank + peer, what, k->timeout_s, k->context);
            ks_log_error_now();
            ks_mpi_abort(k->mpi, 1);
        }
        usleep(poll_us);
    }
}

static ks_status check_peer(const ks_stage_link *k, int peer, const char *op) {
    if (k->comm == MPI_COMM_NULL || peer < 0 || peer >= k->n_stages || peer == k->stage)
        return ks_fail(KS_ERR_ARG, "stage link %s: stage %d of %d cannot talk to stage %d", op, k->stage,
                       k->n_stages, peer);
    return KS_OK;
}
#endif

ks_status ks_stage_link_send(ks_stage_link *k, int to_stage, int tag, const void *buf, size_t bytes) {
#ifdef KS_HAVE_MPI
    KS_TRY(check_peer(k, to_stage, "send"));
    KS_ASSERT(tag > 0 && tag < KS_STAGE_TAGS && bytes <= (size_t)0x7fffffff);
    wait_bounded(k, &k->sent[tag], MPI_STATUS_IGNORE, k->sent_to[tag], "took", k->sent_bytes[tag]);
    if (k->out_cap[tag] < bytes) {
        void *p = realloc(k->out[tag], bytes);
        if (!p) return ks_fail(KS_ERR_NOMEM, "out of memory for a %zu-byte stage message", bytes);
        k->out[tag] = p, k->out_cap[tag] = bytes;
    }
    memcpy(k->out[tag], buf, bytes);
    MPI_CHECK(MPI_Isend(k->out[tag], (int)bytes, MPI_BYTE, to_stage, tag, k->comm, &k->sent[tag]));
    k->sent_to[tag] = to_stage;
    k->sent_bytes[tag] = bytes;
    return KS_OK;
#else
    (void)k, (void)to_stage, (void)tag, (void)buf, (void)bytes;
    return ks_fail(KS_ERR_UNSUPPORTED, "pipeline stages need MPI; this build has none");
#endif
}

ks_status ks_stage_link_recv(ks_stage_link *k, int from_stage, int tag, void *buf, size_t bytes) {
#ifdef KS_HAVE_MPI
    KS_TRY(check_peer(k, from_stage, "recv"));
    KS_ASSERT(bytes <= (size_t)0x7fffffff);
    MPI_Request req;
    MPI_Status st;
    MPI_CHECK(MPI_Irecv(buf, (int)bytes, MPI_BYTE, from_stage, tag, k->comm, &req));
    wait_bounded(k, &req, &st, from_stage, "sent", bytes);
    int got = 0;
    MPI_CHECK(MPI_Get_count(&st, MPI_BYTE, &got));
    if ((size_t)got != bytes)
        return ks_fail(KS_ERR_MPI, "pipeline stage %d sent %d bytes where stage %d expected %zu (%s)", from_stage,
                       got, k->stage, bytes, k->context);
    return KS_OK;
#else
    (void)k, (void)from_stage, (void)tag, (void)buf, (void)bytes;
    return ks_fail(KS_ERR_UNSUPPORTED, "pipeline stages need MPI; this build has none");
#endif
}

ks_status ks_stage_link_bcast(ks_stage_link *k, int root_stage, void *buf, size_t bytes) {
    if (k->n_stages == 1 && root_stage == 0) return KS_OK;
#ifdef KS_HAVE_MPI
    if (k->comm == MPI_COMM_NULL || root_stage < 0 || root_stage >= k->n_stages)
        return ks_fail(KS_ERR_ARG, "stage link bcast: no stage %d of %d", root_stage, k->n_stages);
    KS_ASSERT(bytes <= (size_t)0x7fffffff);
    MPI_Request req;
    MPI_CHECK(MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root_stage, k->comm, &req));
    wait_bounded(k, &req, MPI_STATUS_IGNORE, root_stage, k->stage == root_stage ? "completed" : "sent", bytes);
    return KS_OK;
#else
    (void)buf, (void)bytes;
    return ks_fail(KS_ERR_UNSUPPORTED, "pipeline stages need MPI; this build has none");
#endif
}

ks_mpi_comm ks_stage_link_heads(const ks_stage_link *k) {
#ifdef KS_HAVE_MPI
    return k->heads != MPI_COMM_NULL ? k->heads : k->mpi->world;
#else
    return k->mpi->world;
#endif
}

void ks_stage_link_free(ks_stage_link *k) {
#ifdef KS_HAVE_MPI
    if (k->comm != MPI_COMM_NULL && k->mpi) {
        for (int t = 0; t < KS_STAGE_TAGS; t++)
            if (k->sent[t] != MPI_REQUEST_NULL)
                wait_bounded(k, &k->sent[t], MPI_STATUS_IGNORE, k->sent_to[t], "took", k->sent_bytes[t]);
        MPI_Comm_free(&k->comm);
    }
    if (k->heads != MPI_COMM_NULL && k->mpi) MPI_Comm_free(&k->heads);
#endif
    for (int t = 0; t < KS_STAGE_TAGS; t++) free(k->out[t]);
    memset(k, 0, sizeof *k);
}

static ks_status transport_send(void *ctx, int to, int channel, const void *buf, size_t bytes) {
    return ks_stage_link_send(ctx, to, channel, buf, bytes);
}

static ks_status transport_recv(void *ctx, int from, int channel, void *buf, size_t bytes) {
    return ks_stage_link_recv(ctx, from, channel, buf, bytes);
}

static void transport_context(void *ctx, const char *what) { ks_stage_link_context(ctx, "%s", what); }

void ks_stage_link_transport(ks_stage_link *k, ks_stage_transport *t) {
    _Static_assert(KS_PIPE_CHANNELS <= KS_STAGE_TAGS, "the pipeline's channels are MPI tags of the link");
    *t = (ks_stage_transport){.stage = k->stage, .n_stages = k->n_stages, .ctx = k, .send = transport_send,
                              .recv = transport_recv, .context = transport_context};
}
