/* dispatch.c — see dispatch.h. */
#include "dispatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

enum {
    TAG_REQUEST = 1, /* worker -> 0: no payload */
    TAG_ASSIGN,      /* 0 -> worker: int id, -1 = stop */
    TAG_RESULT,      /* worker -> 0: ks_wire_pack_result() */
    TAG_FAIL,        /* worker -> 0: fail_message */
};

/* A FAIL message, and the status every rank learns at the end. */
typedef struct fail_message {
    int id, status;
    char msg[KS_DISPATCH_MSG_MAX];
} fail_message;

/* Keeps the first failure (the later ones are usually its consequences) as "rank R (sample I): why".
 * Call with the lock held, after the failure's line was printed (by the rank that hit it). */
static void record_failure(ks_dispatch *d, ks_status st, int rank, int id, const char *why) {
    if (d->fail_status != KS_OK) return;
    d->fail_status = st;
    snprintf(d->fail_msg, sizeof d->fail_msg, "rank %d (sample %d): %.960s", rank, id, why);
}

/* Rank 0: one finished sample from `rank` (0 or a worker). Call with the lock held. */
static ks_status take_result(ks_dispatch *d, int rank, int id, const ks_result *r) {
    ks_status st = ks_queue_complete(d->q, rank, id);
    if (st == KS_OK) st = d->store(d->ctx, id, r, d->q);
    if (st != KS_OK) {
        ks_log_error_now();
        record_failure(d, st, rank, id, ks_last_error());
        ks_queue_stop(d->q);
    }
    return st;
}

/* The entry of held[] that holds `id` (-1: a free one), or NULL. */
static int *held_entry(ks_dispatch *d, int id) {
    for (int k = 0; k < d->slots; k++)
        if (d->held[k] == id) return &d->held[k];
    return NULL;
}

int ks_dispatch_holding(const ks_dispatch *d) {
    int n = 0;
    for (int k = 0; k < d->slots; k++) n += d->held[k] >= 0;
    return n;
}

ks_status ks_dispatch_next(ks_dispatch *d, int *id) {
    *id = -1;
    if (d->closed) return KS_OK;
    int *entry = held_entry(d, -1);
    KS_ASSERT(entry); /* submit or fail a sample first: this rank holds `slots` */
    if (d->rank == 0) {
        pthread_mutex_lock(&d->lock);
        ks_status st = ks_queue_next(d->q, 0, id);
        pthread_mutex_unlock(&d->lock);
        KS_TRY(st);
    } else {
#ifdef KS_HAVE_MPI
        MPI_CHECK(MPI_Send(NULL, 0, MPI_BYTE, 0, TAG_REQUEST, d->comm));
        MPI_CHECK(MPI_Recv(id, 1, MPI_INT, 0, TAG_ASSIGN, d->comm, MPI_STATUS_IGNORE));
#endif
    }
    if (*id < 0) d->closed = 1;
    *entry = *id;
    return KS_OK;
}

ks_status ks_dispatch_submit(ks_dispatch *d, int id, const ks_result *r) {
    int *entry = id >= 0 ? held_entry(d, id) : NULL;
    KS_ASSERT(entry);
    *entry = -1;
    if (d->rank == 0) {
        pthread_mutex_lock(&d->lock);
        ks_status st = take_result(d, 0, id, r);
        pthread_mutex_unlock(&d->lock);
        return st;
    }
    KS_TRY(ks_wire_pack_result(&d->buf, id, r));
#ifdef KS_HAVE_MPI
    MPI_CHECK(MPI_Send(d->buf.data, (int)d->buf.size, MPI_BYTE, 0, TAG_RESULT, d->comm));
#endif
    return KS_OK;
}

void ks_dispatch_fail(ks_dispatch *d, int id, ks_status st) {
    if (d->failed) return; /* rank 0 knows: the rank's samples failed with the first */
    d->failed = 1;
    fail_message f = {.id = id, .status = st};
    snprintf(f.msg, sizeof f.msg, "%s", ks_last_error());
    if (id >= 0) ks_fail_context(st, "sample %d", id);
    ks_log_error_now(); /* now, not at the job's end: other ranks may compute for a long while yet */
    for (int k = 0; k < d->slots; k++) d->held[k] = -1; /* the queue fails them all */
    d->closed = 1;
    if (d->rank == 0) {
        pthread_mutex_lock(&d->lock);
        record_failure(d, st, 0, id, f.msg);
        ks_queue_fail(d->q, 0);
        pthread_mutex_unlock(&d->lock);
        return;
    }
    d->fail_status = st;
    snprintf(d->fail_msg, sizeof d->fail_msg, "%s", f.msg);
#ifdef KS_HAVE_MPI
    MPI_CHECK(MPI_Send(&f, (int)sizeof f, MPI_BYTE, 0, TAG_FAIL, d->comm));
#endif
}

#ifdef KS_HAVE_MPI
/* A worker that was told to stop (`stopped`) is done once it holds no sample: its last results are in. Call with
 * the lock held. */
static void close_if_done(ks_dispatch *d, unsigned char *stopped, unsigned char *done, int src, int *open) {
    if (stopped[src] && !done[src] && ks_queue_held(d->q, src) == 0) {
        done[src] = 1;
        (*open)--;
    }
}

/* Rank 0's helper thread: answers requests, stores results, notes failures, until every worker is done (told to
 * stop and holding nothing, or failed). */
static void *serve(void *arg) {
    ks_dispatch *d = arg;
    int open = d->size - 1; /* workers that may still send */
    unsigned char *stopped = calloc((size_t)d->size, 1), *done = calloc((size_t)d->size, 1);
    if (!stopped || !done) {
        fprintf(stderr, "kvscope r0: error: out of memory starting the sample queue\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    useconds_t idle_us = 50;
    while (open > 0) {
        int flag = 0, count = 0;
        MPI_Status s;
        MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, d->comm, &flag, &s));
        if (!flag) {
            usleep(idle_us);
            idle_us = idle_us < 5000 ? idle_us * 2 : 5000;
            continue;
        }
        idle_us = 50;
        MPI_CHECK(MPI_Get_count(&s, MPI_BYTE, &count));
        if (d->buf.cap < (size_t)count + 1) {
            unsigned char *p = realloc(d->buf.data, (size_t)count + 1);
            if (!p) {
                fprintf(stderr, "kvscope r0: error: out of memory receiving a %d-byte message\n", count);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            d->buf.data = p;
            d->buf.cap = (size_t)count + 1;
        }
        int src = s.MPI_SOURCE;
        MPI_CHECK(MPI_Recv(d->buf.data, count, MPI_BYTE, src, s.MPI_TAG, d->comm, MPI_STATUS_IGNORE));
        pthread_mutex_lock(&d->lock);
        if (s.MPI_TAG == TAG_REQUEST) {
            int id = -1;
            if (!d->q->rank_failed[src] && ks_queue_next(d->q, src, &id) != KS_OK) {
                ks_log_error_now();
                record_failure(d, KS_ERR_MPI, src, -1, ks_last_error());
                ks_queue_fail(d->q, src);
            }
            MPI_CHECK(MPI_Send(&id, 1, MPI_INT, src, TAG_ASSIGN, d->comm));
            if (id < 0) stopped[src] = 1;
            close_if_done(d, stopped, done, src, &open);
        } else if (s.MPI_TAG == TAG_RESULT) {
            ks_result r;
            int id = -1;
            if (ks_wire_unpack_result(d->buf.data, (size_t)count, &id, &r) == KS_OK) take_result(d, src, id, &r);
            else {
                ks_log_error_now();
                record_failure(d, KS_ERR_MPI, src, id, ks_last_error());
                ks_queue_fail(d->q, src);
            }
            ks_result_free(&r);
            close_if_done(d, stopped, done, src, &open);
        } else if (s.MPI_TAG == TAG_FAIL && count == (int)sizeof(fail_message)) {
            fail_message *f = (fail_message *)d->buf.data;
            f->msg[sizeof f->msg - 1] = '\0';
            record_failure(d, (ks_status)f->status, src, f->id, f->msg);
            ks_queue_fail(d->q, src);
            stopped[src] = 1; /* it holds nothing now and asks for nothing more */
            close_if_done(d, stopped, done, src, &open);
        } else {
            fprintf(stderr, "kvscope r0: error: unexpected message (tag %d, %d bytes) from rank %d\n", s.MPI_TAG,
                    count, src);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        pthread_mutex_unlock(&d->lock);
    }
    free(stopped);
    free(done);
    return NULL;
}
#endif

/* Rank 0's status and message to every rank (collective); returns it, marked reported: the rank that hit a
 * failure printed it when it happened. */
static ks_status share_status(ks_dispatch *d, ks_status st, const char *msg) {
    fail_message f = {.status = st};
    snprintf(f.msg, sizeof f.msg, "%s", msg);
#ifdef KS_HAVE_MPI
    if (d->size > 1) MPI_CHECK(MPI_Bcast(&f, (int)sizeof f, MPI_BYTE, 0, d->comm));
#else
    (void)d;
#endif
    if (f.status == KS_OK) return KS_OK;
    ks_status shared = ks_fail((ks_status)f.status, "%s", f.msg);
    ks_error_mark_reported();
    return shared;
}

ks_status ks_dispatch_init(ks_dispatch *d, ks_mpi_comm comm, ks_queue *q, int slots, ks_dispatch_store store,
                           void *ctx) {
    memset(d, 0, sizeof *d);
    KS_ASSERT(slots >= 1 && (!q || q->slots == slots));
    d->size = 1;
    d->slots = slots;
    d->held = ks_malloc(sizeof(int) * (size_t)slots, "the samples a rank holds");
    if (!d->held) return KS_ERR_NOMEM;
    for (int k = 0; k < slots; k++) d->held[k] = -1;
    pthread_mutex_init(&d->lock, NULL);
    d->lock_ready = 1;
#ifdef KS_HAVE_MPI
    d->comm = MPI_COMM_NULL;
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (inited && !finalized) {
        MPI_CHECK(MPI_Comm_dup(comm, &d->comm));
        MPI_CHECK(MPI_Comm_rank(d->comm, &d->rank));
        MPI_CHECK(MPI_Comm_size(d->comm, &d->size));
    }
#else
    (void)comm;
#endif
    ks_status st = KS_OK;
    char msg[KS_DISPATCH_MSG_MAX] = "";
    if (d->rank == 0) {
        KS_ASSERT(q && store && q->n_ranks == d->size);
        d->q = q;
        d->store = store;
        d->ctx = ctx;
    }
#ifdef KS_HAVE_MPI
    if (d->rank == 0 && d->size > 1) {
        int provided = MPI_THREAD_SINGLE;
        MPI_Query_thread(&provided);
        if (provided < MPI_THREAD_MULTIPLE)
            st = ks_fail(KS_ERR_MPI, "the MPI library did not grant MPI_THREAD_MULTIPLE, which rank 0 needs to serve "
                         "the sample queue while it computes; use an MPI built with thread support (Open MPI >= 3 "
                         "or MPICH with --enable-threads=multiple)");
        else if (pthread_create(&d->server, NULL, serve, d) != 0)
            st = ks_fail(KS_ERR_MPI, "cannot start rank 0's sample-queue thread");
        else d->server_running = 1;
        if (st != KS_OK) ks_log_error_now();
        snprintf(msg, sizeof msg, "%s", st == KS_OK ? "" : ks_last_error());
    }
#endif
    return share_status(d, st, msg);
}

ks_status ks_dispatch_finish(ks_dispatch *d) {
    if (ks_dispatch_holding(d)) { /* the caller left its loop while holding a sample without saying why */
        int id = -1;
        for (int k = 0; k < d->slots && id < 0; k++) id = d->held[k];
        ks_fail(KS_ERR_ARG, "left the sample loop while holding a sample");
        ks_dispatch_fail(d, id, KS_ERR_ARG);
    }
    if (d->rank != 0 && !d->closed) { /* left the loop early: tell rank 0, which waits for every rank */
        ks_fail(KS_ERR_ARG, "left the sample loop before the work ran out");
        ks_dispatch_fail(d, -1, KS_ERR_ARG);
    }
    if (d->server_running) {
        pthread_join(d->server, NULL);
        d->server_running = 0;
    }
    return share_status(d, d->rank == 0 ? d->fail_status : KS_OK, d->fail_msg);
}

void ks_dispatch_free(ks_dispatch *d) {
    KS_ASSERT(!d->server_running); /* ks_dispatch_finish first */
#ifdef KS_HAVE_MPI
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (d->lock_ready && d->comm != MPI_COMM_NULL && !finalized) MPI_Comm_free(&d->comm);
#endif
    ks_wire_buf_free(&d->buf);
    free(d->held);
    if (d->lock_ready) pthread_mutex_destroy(&d->lock);
    memset(d, 0, sizeof *d);
}
