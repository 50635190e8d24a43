/* mpi_queue.c — the sample queue over MPI (run with `mpirun -np 3`, and as one process): every sample is
 * computed exactly once, by every rank including rank 0, and its result (strings and layer statistics)
 * reaches rank 0 intact and lands in the HDF5 result file; a failing rank and a rank that leaves its loop
 * early end the job cleanly on every rank with the same error, keeping the results that arrived.
 * Check runs with CK_FORK=no: every rank runs the same tests in the same order (they are collective). */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dispatch.h"
#include "ks_mpi.h"
#include "results/results.h"
#include "test_util.h"

static ks_mpi mpi;

enum { N = 36 };

/* The result every rank computes for sample id: text and layer counts vary with id. */
static void compute(ks_result *r, int id) {
    memset(r, 0, sizeof *r);
    snprintf(r->task, KS_TASK_MAX, "%s", id % 2 ? "niah_single_2" : "qa_1");
    r->length = 1024 * (1 + id % 4);
    r->index = id;
    r->seed = 977ull * (uint64_t)id + 1;
    r->prompt_tokens = r->length - id;
    r->generated_tokens = 3 + id % 5;
    size_t n = 16 + 40 * (size_t)(id % 7);
    r->prediction = malloc(n + 1);
    for (size_t k = 0; k < n; k++) r->prediction[k] = (char)('a' + (id + (int)k) % 26);
    r->prediction[n] = '\0';
    r->answers_json = malloc(48);
    snprintf(r->answers_json, 48, "[\"Zürich %d\"]", id);
    r->score = id % 3 ? 100.0 : 0.0;
    r->prefill_s = 0.01 * id;
    r->decode_s = 0.5;
    r->peak_bytes = ((int64_t)1 << 35) + id;
    r->kv_bytes_before = 1 << 20;
    r->kv_bytes_after = (1 << 18) + id;
    r->n_layers = 2 * (id % 5);
    r->layers = r->n_layers ? calloc((size_t)r->n_layers, sizeof *r->layers) : NULL;
    for (int j = 0; j < r->n_layers; j++)
        r->layers[j] = (ks_layer_stat){j / 2, j % 2 ? 1 : -1, 256, 200 + id, 0.875f, 2.0f + j, 8.5f, 1.0f, 0.0f, 0.25f,
                                       7 + j, 128, ((int64_t)1 << 33) + id, id % 3, j, 0.25f, 0.125f,
                                       24.5f, 0.625f, ((int64_t)1 << 34) + j, 0.5f, 0.03125f * j};
}

static int same(const ks_result *a, const ks_result *b) {
    return !strcmp(a->task, b->task) && a->length == b->length && a->index == b->index && a->seed == b->seed &&
           a->prompt_tokens == b->prompt_tokens && a->generated_tokens == b->generated_tokens &&
           !strcmp(a->prediction, b->prediction) && !strcmp(a->answers_json, b->answers_json) &&
           a->score == b->score && a->prefill_s == b->prefill_s && a->decode_s == b->decode_s &&
           a->peak_bytes == b->peak_bytes && a->kv_bytes_before == b->kv_bytes_before &&
           a->kv_bytes_after == b->kv_bytes_after && a->n_layers == b->n_layers &&
           (!a->n_layers || !memcmp(a->layers, b->layers, (size_t)a->n_layers * sizeof *a->layers));
}

/* Rank 0's store: checks each result against a fresh computation, counts, and appends it to the file. */
typedef struct sink {
    int stored[N];
    int n, bad;
    ks_results *file;
} sink;

static ks_status store(void *ctx, int id, const ks_result *r, const ks_queue *q) {
    sink *s = ctx;
    ks_result want;
    compute(&want, id);
    s->bad += !same(r, &want);
    ks_result_free(&want);
    s->stored[id]++;
    s->n++;
    s->bad += q->n_done != s->n;
    return ks_results_append(s->file, r);
}

typedef enum misbehave { BEHAVE, FAIL_SECOND, LEAVE_EARLY } misbehave;

/* One run over N samples. The last rank misbehaves as told on its second sample. Returns finish's status;
 * *computed = samples this rank submitted. */
static ks_status run(sink *s, const char *path, misbehave how, int *computed) {
    ks_queue q = {0};
    if (mpi.rank == 0) {
        int64_t cost[N];
        for (int i = 0; i < N; i++) cost[i] = 1024 * (1 + i % 4) - i;
        ck_assert_int_eq(ks_queue_init(&q, N, cost, NULL, mpi.size, 1), KS_OK);
        ks_results_meta meta = {.identity = "test: mpi_queue\n", .method = "FullKV"};
        ck_assert_msg(ks_results_open(&s->file, path, &meta) == KS_OK, "%s", ks_last_error());
    }
    ks_dispatch d = {0};
    ck_assert_int_eq(ks_dispatch_init(&d, mpi.world, mpi.rank == 0 ? &q : NULL, 1, store, s), KS_OK);
    int id, k = 0;
    *computed = 0;
    int bad_rank = mpi.size - 1;
    while (ks_dispatch_next(&d, &id) == KS_OK && id >= 0) {
        if (mpi.rank == bad_rank && k++ == 1 && how != BEHAVE) {
            if (how == FAIL_SECOND) ks_dispatch_fail(&d, id, ks_fail(KS_ERR_RANGE, "prompt too long (test)"));
            break; /* LEAVE_EARLY: walks away holding the sample */
        }
        ks_result r;
        compute(&r, id);
        usleep(1000 * (useconds_t)(1 + id % 3)); /* spread the samples over the ranks */
        ks_status st = ks_dispatch_submit(&d, id, &r);
        ks_result_free(&r);
        if (st != KS_OK) break;
        (*computed)++;
    }
    ks_status st = ks_dispatch_finish(&d);
    ks_dispatch_free(&d);
    if (mpi.rank == 0) {
        ck_assert_int_eq(ks_results_close(s->file), KS_OK);
        ks_queue_free(&q);
    }
    return st;
}

/* The scratch directory, the same on every rank (rank 0 makes it in main and removes it at the end; only
 * rank 0 writes there). */
static char dir[4096];

static void shared_path(char *path, size_t cap, const char *name) { snprintf(path, cap, "%s/%s", dir, name); }

START_TEST(test_every_sample_once_intact) {
    char path[4200];
    shared_path(path, sizeof path, "run.h5");
    sink s = {0};
    int computed;
    ks_status st = run(&s, path, BEHAVE, &computed);
    int per_rank[64] = {0};
    MPI_CHECK(MPI_Gather(&computed, 1, MPI_INT, per_rank, 1, MPI_INT, 0, mpi.world));
    ck_assert_msg(st == KS_OK, "%s", ks_last_error());
    if (mpi.rank != 0) return;
    ck_assert_int_eq(s.bad, 0);
    ck_assert_int_eq(s.n, N);
    for (int i = 0; i < N; i++) ck_assert_int_eq(s.stored[i], 1);
    int total = 0;
    for (int r = 0; r < mpi.size; r++) total += per_rank[r];
    ck_assert_int_eq(total, N);
    ck_assert_int_ge(per_rank[0], 1); /* rank 0 computes too */
    ks_results_data d = {0};
    ck_assert_msg(ks_results_read(path, &d) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(d.n_rows, N);
    int seen[N] = {0};
    for (int i = 0; i < d.n_rows; i++) {
        ks_result want;
        compute(&want, d.rows[i].index);
        ck_assert(same(&d.rows[i], &want));
        ks_result_free(&want);
        seen[d.rows[i].index]++;
    }
    for (int i = 0; i < N; i++) ck_assert_int_eq(seen[i], 1);
    ks_results_data_free(&d);
}
END_TEST

/* A misbehaving rank: every rank ends (no hang) with the same error; what arrived is stored once each. */
static void check_misbehaviour(misbehave how, ks_status want_st, const char *want_msg) {
    char path[4200];
    shared_path(path, sizeof path, how == FAIL_SECOND ? "fail.h5" : "leave.h5");
    sink s = {0};
    int computed;
    ks_status st = run(&s, path, how, &computed);
    ck_assert_int_eq(st, want_st);
    ck_assert_msg(strstr(ks_last_error(), want_msg) != NULL, "message: %s", ks_last_error());
    char rank_str[32];
    snprintf(rank_str, sizeof rank_str, "rank %d (sample ", mpi.size - 1);
    ck_assert_msg(strstr(ks_last_error(), rank_str) != NULL, "message: %s", ks_last_error());
    if (mpi.rank != 0) return;
    ck_assert_int_eq(s.bad, 0);
    ck_assert_int_lt(s.n, N);
    for (int i = 0; i < N; i++) ck_assert_int_le(s.stored[i], 1);
    ks_results_data d = {0};
    ck_assert_msg(ks_results_read(path, &d) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(d.n_rows, s.n);
    ks_results_data_free(&d);
}

START_TEST(test_failing_rank) { check_misbehaviour(FAIL_SECOND, KS_ERR_RANGE, "prompt too long (test)"); }
END_TEST

START_TEST(test_rank_leaving_early) {
    check_misbehaviour(LEAVE_EARLY, KS_ERR_ARG, "left the sample loop while holding a sample");
}
END_TEST

int main(int argc, char **argv) {
    if (ks_mpi_init(&mpi, &argc, &argv) != KS_OK) {
        fprintf(stderr, "mpi_queue: %s\n", ks_last_error());
        return 1;
    }
    if (mpi.rank == 0) snprintf(dir, sizeof dir, "%s", ks_test_tmpdir());
    MPI_CHECK(MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, mpi.world));
    Suite *s = suite_create("mpi_queue");
    TCase *tc = tcase_create("mpi_queue");
    tcase_add_test(tc, test_every_sample_once_intact);
    tcase_add_test(tc, test_failing_rank);
    tcase_add_test(tc, test_rank_leaving_early);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* collective tests: no fork, whatever CK_FORK says */
    srunner_run_all(sr, mpi.rank == 0 ? CK_NORMAL : CK_SILENT);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    int any_failed = failed;
    MPI_CHECK(MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, mpi.world));
    if (mpi.rank == 0) {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "mpi_queue: could not remove %s\n", dir);
    }
    ks_mpi_finalize(&mpi);
    return any_failed ? 1 : 0;
}
