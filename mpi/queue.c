/* queue.c — see queue.h. */
#include "queue.h"

#include <stdlib.h>
#include <string.h>

typedef struct cost_id {
    int64_t cost;
    int id;
} cost_id;

static int by_cost_desc(const void *a, const void *b) {
    const cost_id *x = a, *y = b;
    if (x->cost != y->cost) return x->cost > y->cost ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

ks_status ks_queue_init(ks_queue *q, int n, const int64_t *cost, const unsigned char *done, int n_ranks, int slots) {
    KS_ASSERT(n >= 0 && n_ranks >= 1 && slots >= 1 && (n == 0 || cost));
    memset(q, 0, sizeof *q);
    q->n = n;
    q->n_ranks = n_ranks;
    q->slots = slots;
    q->order = ks_malloc((size_t)(n ? n : 1) * sizeof(int), "the sample queue");
    q->state = ks_calloc((size_t)(n ? n : 1), 1, "the sample queue");
    q->running = ks_malloc((size_t)n_ranks * slots * sizeof(int), "the sample queue");
    q->rank_failed = ks_calloc((size_t)n_ranks, 1, "the sample queue");
    cost_id *tmp = ks_malloc((size_t)(n ? n : 1) * sizeof *tmp, "the sample queue");
    if (!q->order || !q->state || !q->running || !q->rank_failed || !tmp) {
        free(tmp);
        ks_queue_free(q);
        return KS_ERR_NOMEM;
    }
    for (int r = 0; r < n_ranks * slots; r++) q->running[r] = -1;
    for (int i = 0; i < n; i++) {
        if (done && done[i]) {
            q->state[i] = KS_SAMPLE_SKIPPED;
            q->n_skipped++;
        } else {
            tmp[q->n_order++] = (cost_id){cost[i], i};
        }
    }
    qsort(tmp, (size_t)q->n_order, sizeof *tmp, by_cost_desc);
    for (int k = 0; k < q->n_order; k++) q->order[k] = tmp[k].id;
    free(tmp);
    return KS_OK;
}

void ks_queue_free(ks_queue *q) {
    free(q->order);
    free(q->state);
    free(q->running);
    free(q->rank_failed);
    memset(q, 0, sizeof *q);
}

static ks_status check_rank(const ks_queue *q, int rank) {
    if (rank < 0 || rank >= q->n_ranks)
        return ks_fail(KS_ERR_MPI, "sample queue: rank %d is outside the job (%d ranks)", rank, q->n_ranks);
    if (q->rank_failed[rank])
        return ks_fail(KS_ERR_MPI, "sample queue: rank %d talks after it failed", rank);
    return KS_OK;
}

/* The entry of `rank`'s row of running[] that holds `id` (-1: a free one), or NULL. */
static int *held(ks_queue *q, int rank, int id) {
    int *row = q->running + (size_t)rank * q->slots;
    for (int k = 0; k < q->slots; k++)
        if (row[k] == id) return &row[k];
    return NULL;
}

ks_status ks_queue_next(ks_queue *q, int rank, int *id) {
    *id = -1;
    KS_TRY(check_rank(q, rank));
    int *slot = held(q, rank, -1);
    if (!slot && q->slots == 1)
        return ks_fail(KS_ERR_MPI, "sample queue: rank %d asks for work while it holds sample %d", rank,
                       q->running[rank]);
    if (!slot)
        return ks_fail(KS_ERR_MPI, "sample queue: rank %d asks for work while it holds %d samples (sample %d, ...)",
                       rank, q->slots, q->running[(size_t)rank * q->slots]);
    if (q->stopping || q->next == q->n_order) return KS_OK;
    *id = q->order[q->next++];
    q->state[*id] = KS_SAMPLE_RUNNING;
    *slot = *id;
    q->n_running++;
    return KS_OK;
}

ks_status ks_queue_complete(ks_queue *q, int rank, int id) {
    KS_TRY(check_rank(q, rank));
    int *slot = id >= 0 ? held(q, rank, id) : NULL;
    if (!slot)
        return ks_fail(KS_ERR_MPI, "sample queue: rank %d returns sample %d but holds %d%s", rank, id,
                       q->running[(size_t)rank * q->slots], q->slots > 1 ? ", ..." : "");
    q->state[id] = KS_SAMPLE_DONE;
    *slot = -1;
    q->n_running--;
    q->n_done++;
    return KS_OK;
}

void ks_queue_fail(ks_queue *q, int rank) {
    KS_ASSERT(rank >= 0 && rank < q->n_ranks);
    int *row = q->running + (size_t)rank * q->slots;
    for (int k = 0; k < q->slots; k++)
        if (row[k] >= 0) {
            q->state[row[k]] = KS_SAMPLE_FAILED;
            row[k] = -1;
            q->n_running--;
            q->n_failed++;
        }
    q->rank_failed[rank] = 1;
    q->stopping = 1;
}

void ks_queue_stop(ks_queue *q) { q->stopping = 1; }

int ks_queue_held(const ks_queue *q, int rank) {
    int n = 0;
    for (int k = 0; k < q->slots; k++) n += q->running[(size_t)rank * q->slots + k] >= 0;
    return n;
}

int ks_queue_pending(const ks_queue *q) { return q->stopping ? 0 : q->n_order - q->next; }
