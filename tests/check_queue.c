/* check_queue.c — rank 0's sample queue without MPI: longest-first order, skipping recorded samples,
 * exactly-once hand-out under random request/return interleavings, failed ranks and protocol errors; the
 * result wire format (round trip, truncated and foreign messages); and the dispatcher's single-process path
 * (success, a failing sample, a failing store, a rank holding several samples). The 3-rank MPI transport is
 * tests/mpi_queue.c. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch.h"
#include "queue.h"
#include "wire.h"
#include "test_util.h"

START_TEST(test_longest_first_skipping_done) {
    const int64_t cost[] = {5, 100, 100, 7, 50};
    const unsigned char done[] = {0, 0, 1, 0, 0};
    ks_queue q = {0};
    ck_assert_int_eq(ks_queue_init(&q, 5, cost, done, 2, 1), KS_OK);
    ck_assert_int_eq(q.n_skipped, 1);
    ck_assert_int_eq(ks_queue_pending(&q), 4);
    const int want[] = {1, 4, 3, 0}; /* 100 (id 2 is done), 50, 7, 5 */
    for (int k = 0; k < 4; k++) {
        int id;
        ck_assert_int_eq(ks_queue_next(&q, k % 2, &id), KS_OK);
        ck_assert_int_eq(id, want[k]);
        ck_assert_int_eq(ks_queue_complete(&q, k % 2, id), KS_OK);
    }
    int id;
    ck_assert_int_eq(ks_queue_next(&q, 0, &id), KS_OK);
    ck_assert_int_eq(id, -1);
    ck_assert_int_eq(q.n_done, 4);
    ck_assert_int_eq(q.state[2], KS_SAMPLE_SKIPPED);
    ks_queue_free(&q);
}
END_TEST

START_TEST(test_protocol_errors) {
    const int64_t cost[] = {3, 2, 1};
    ks_queue q = {0};
    ck_assert_int_eq(ks_queue_init(&q, 3, cost, NULL, 2, 1), KS_OK);
    int id, id1;
    ck_assert_int_eq(ks_queue_next(&q, 2, &id), KS_ERR_MPI); /* no rank 2 */
    ck_assert_int_eq(ks_queue_next(&q, 0, &id), KS_OK);
    ck_assert_int_eq(ks_queue_next(&q, 0, &id1), KS_ERR_MPI); /* still holds id */
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "holds sample 0"));
    ck_assert_int_eq(ks_queue_complete(&q, 1, id), KS_ERR_MPI); /* rank 1 does not hold it */
    ck_assert_int_eq(ks_queue_complete(&q, 0, id), KS_OK);
    ck_assert_int_eq(ks_queue_complete(&q, 0, id), KS_ERR_MPI); /* twice */
    ck_assert_int_eq(q.n_done, 1);
    ks_queue_free(&q);
}
END_TEST

START_TEST(test_failed_rank_stops_the_hand_out) {
    const int64_t cost[] = {9, 8, 7, 6, 5};
    ks_queue q = {0};
    ck_assert_int_eq(ks_queue_init(&q, 5, cost, NULL, 3, 1), KS_OK);
    int a, b, c;
    ck_assert_int_eq(ks_queue_next(&q, 0, &a), KS_OK);
    ck_assert_int_eq(ks_queue_next(&q, 1, &b), KS_OK);
    ck_assert_int_eq(ks_queue_next(&q, 2, &c), KS_OK);
    ks_queue_fail(&q, 1);
    ck_assert_int_eq(q.state[b], KS_SAMPLE_FAILED);
    ck_assert_int_eq(ks_queue_pending(&q), 0);
    ck_assert_int_eq(ks_queue_complete(&q, 0, a), KS_OK); /* in flight elsewhere: still accepted */
    int id;
    ck_assert_int_eq(ks_queue_next(&q, 0, &id), KS_OK);
    ck_assert_int_eq(id, -1);
    ck_assert_int_eq(ks_queue_next(&q, 1, &id), KS_ERR_MPI); /* a failed rank asks again */
    ck_assert_int_eq(ks_queue_complete(&q, 2, c), KS_OK);
    ck_assert_int_eq(q.n_done, 2);
    ck_assert_int_eq(q.n_failed, 1);
    ck_assert_int_eq(q.n_running, 0);
    ck_assert_int_eq(q.state[4], KS_SAMPLE_PENDING); /* never handed out: a rerun does it */
    ks_queue_free(&q);

    ck_assert_int_eq(ks_queue_init(&q, 5, cost, NULL, 1, 1), KS_OK);
    ks_queue_stop(&q);
    ck_assert_int_eq(ks_queue_next(&q, 0, &id), KS_OK);
    ck_assert_int_eq(id, -1);
    ks_queue_free(&q);
}
END_TEST

/* A rank with 3 slots holds up to 3 samples, returns them in any order and asks again as slots free up; a fourth
 * request while it holds 3 is a protocol error; a failure fails every sample it holds. */
START_TEST(test_slots) {
    const int64_t cost[] = {9, 8, 7, 6, 5, 4};
    ks_queue q = {0};
    ck_assert_int_eq(ks_queue_init(&q, 6, cost, NULL, 2, 3), KS_OK);
    int a, b, c, x;
    ck_assert_int_eq(ks_queue_next(&q, 0, &a), KS_OK);
    ck_assert_int_eq(ks_queue_next(&q, 0, &b), KS_OK);
    ck_assert_int_eq(ks_queue_next(&q, 0, &c), KS_OK);
    ck_assert(a == 0 && b == 1 && c == 2); /* longest first */
    ck_assert_int_eq(ks_queue_next(&q, 0, &x), KS_ERR_MPI);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "holds 3 samples"));
    ck_assert_int_eq(ks_queue_complete(&q, 0, b), KS_OK); /* out of order */
    ck_assert_int_eq(ks_queue_complete(&q, 0, b), KS_ERR_MPI);
    ck_assert_int_eq(ks_queue_next(&q, 0, &x), KS_OK);
    ck_assert_int_eq(x, 3);
    ck_assert_int_eq(ks_queue_next(&q, 1, &b), KS_OK);
    ck_assert_int_eq(ks_queue_complete(&q, 1, a), KS_ERR_MPI); /* rank 0's */
    ck_assert_int_eq(q.n_running, 4);
    ks_queue_fail(&q, 0);
    ck_assert(q.state[a] == KS_SAMPLE_FAILED && q.state[c] == KS_SAMPLE_FAILED && q.state[x] == KS_SAMPLE_FAILED);
    ck_assert_int_eq(q.n_failed, 3);
    ck_assert_int_eq(q.n_running, 1);
    ck_assert_int_eq(ks_queue_complete(&q, 1, b), KS_OK); /* in flight on rank 1: still recorded */
    ck_assert_int_eq(q.n_done, 2);
    ks_queue_free(&q);
}
END_TEST

/* Random interleavings of requests and returns from 5 ranks: every sample not done before is handed out
 * exactly once, in non-increasing cost order. */
START_TEST(test_exactly_once_random) {
    enum { N = 300, RANKS = 5 };
    unsigned seed = 12345u + (unsigned)_i;
    int64_t cost[N];
    unsigned char done[N];
    int handed[N] = {0}, n_not_done = 0;
    for (int i = 0; i < N; i++) {
        cost[i] = rand_r(&seed) % 50; /* many ties */
        done[i] = rand_r(&seed) % 4 == 0;
        n_not_done += !done[i];
    }
    ks_queue q = {0};
    ck_assert_int_eq(ks_queue_init(&q, N, cost, done, RANKS, 1), KS_OK);
    int holding[RANKS], last_cost = 1 << 30, ended = 0;
    for (int r = 0; r < RANKS; r++) holding[r] = -1;
    while (ended < RANKS) {
        int r = rand_r(&seed) % RANKS;
        if (holding[r] == -2) continue; /* told to stop */
        if (holding[r] >= 0) {
            ck_assert_int_eq(ks_queue_complete(&q, r, holding[r]), KS_OK);
            holding[r] = -1;
            continue;
        }
        int id;
        ck_assert_int_eq(ks_queue_next(&q, r, &id), KS_OK);
        if (id < 0) {
            holding[r] = -2;
            ended++;
            continue;
        }
        ck_assert(!done[id]);
        ck_assert_int_le(cost[id], last_cost);
        last_cost = (int)cost[id];
        handed[id]++;
        holding[r] = id;
    }
    for (int i = 0; i < N; i++) ck_assert_int_eq(handed[i], done[i] ? 0 : 1);
    ck_assert_int_eq(q.n_done, n_not_done);
    ks_queue_free(&q);
}
END_TEST

static void sample_result(ks_result *r, int id) {
    memset(r, 0, sizeof *r);
    snprintf(r->task, KS_TASK_MAX, "niah_multikey_%d", id % 3);
    r->length = 4096 << (id % 5);
    r->index = id;
    r->seed = 0xfeedbeefcafeull * (uint64_t)(id + 1);
    r->prompt_tokens = 1000 + id;
    r->generated_tokens = id % 11;
    if (id % 4) {
        r->prediction = malloc(64);
        snprintf(r->prediction, 64, "Ünïcödé ✓ %d", id);
    }
    r->answers_json = strdup("[\"a\", \"b\"]");
    r->score = id % 2 ? 100.0 : 0.0;
    r->prefill_s = 0.25 * id;
    r->decode_s = 0.125;
    r->peak_bytes = (int64_t)id << 34;
    r->kv_bytes_before = 7 * id;
    r->kv_bytes_after = 3 * id;
    r->n_layers = id % 6;
    r->layers = r->n_layers ? calloc((size_t)r->n_layers, sizeof *r->layers) : NULL;
    for (int j = 0; j < r->n_layers; j++)
        r->layers[j] = (ks_layer_stat){j,    j % 3 - 1, 64,  60 - j, 0.75f, 1.5f + j, 9.0f,  0.5f,
                                       0.01f * j, 0.02f * j, 3 + j, 64, 1000 + j, j, 2 * j, 0.5f, 0.25f,
                                       40.0f + j, 0.875f, 70 + j, 0.375f, 0.0625f * j};
}

static void assert_same_result(const ks_result *a, const ks_result *b) {
    ck_assert_str_eq(a->task, b->task);
    ck_assert_int_eq(a->length, b->length);
    ck_assert_int_eq(a->index, b->index);
    ck_assert_uint_eq(a->seed, b->seed);
    ck_assert_int_eq(a->prompt_tokens, b->prompt_tokens);
    ck_assert_int_eq(a->generated_tokens, b->generated_tokens);
    ck_assert_str_eq(a->prediction ? a->prediction : "", b->prediction ? b->prediction : "");
    ck_assert_str_eq(a->answers_json, b->answers_json);
    ck_assert_double_eq(a->score, b->score);
    ck_assert_double_eq(a->prefill_s, b->prefill_s);
    ck_assert_double_eq(a->decode_s, b->decode_s);
    ck_assert_int_eq(a->peak_bytes, b->peak_bytes);
    ck_assert_int_eq(a->kv_bytes_before, b->kv_bytes_before);
    ck_assert_int_eq(a->kv_bytes_after, b->kv_bytes_after);
    ck_assert_int_eq(a->n_layers, b->n_layers);
    if (a->n_layers) ck_assert_int_eq(memcmp(a->layers, b->layers, (size_t)a->n_layers * sizeof *a->layers), 0);
}

START_TEST(test_wire_round_trip_and_damage) {
    ks_wire_buf b = {0};
    for (int id = 0; id < 12; id++) {
        ks_result r, back;
        sample_result(&r, id);
        ck_assert_int_eq(ks_wire_pack_result(&b, id, &r), KS_OK);
        int got = -5;
        ck_assert_int_eq(ks_wire_unpack_result(b.data, b.size, &got, &back), KS_OK);
        ck_assert_int_eq(got, id);
        assert_same_result(&back, &r);
        ks_result_free(&back);
        for (size_t cut = 0; cut < b.size; cut += 1 + cut / 8) { /* every truncation is refused */
            ck_assert_int_eq(ks_wire_unpack_result(b.data, cut, &got, &back), KS_ERR_MPI);
            ck_assert_ptr_null(back.prediction);
            ck_assert_ptr_null(back.layers);
        }
        ks_result_free(&r);
    }
    unsigned char junk[256];
    memset(junk, 0x41, sizeof junk);
    int id;
    ks_result r;
    ck_assert_int_eq(ks_wire_unpack_result(junk, sizeof junk, &id, &r), KS_ERR_MPI);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "bad magic"));
    ks_result full;
    sample_result(&full, 5);
    ck_assert_int_eq(ks_wire_pack_result(&b, 5, &full), KS_OK);
    unsigned char *longer = calloc(b.size + 4, 1);
    memcpy(longer, b.data, b.size);
    ck_assert_int_eq(ks_wire_unpack_result(longer, b.size + 4, &id, &r), KS_ERR_MPI); /* trailing bytes */
    free(longer);
    ks_result_free(&full);
    ks_wire_buf_free(&b);
}
END_TEST

/* ---- the dispatcher as one process --------------------------------------------------------------------- */

typedef struct sink {
    int stored[64];     /* times each id was stored */
    int order[64], n;   /* ids in storing order */
    int fail_at;        /* the n-th store fails (-1: never) */
} sink;

static ks_status store(void *ctx, int id, const ks_result *r, const ks_queue *q) {
    sink *s = ctx;
    ks_result want;
    sample_result(&want, id);
    assert_same_result(r, &want);
    ks_result_free(&want);
    if (s->n == s->fail_at) return ks_fail(KS_ERR_IO, "disk full (test)");
    s->stored[id]++;
    s->order[s->n++] = id;
    ck_assert_int_eq(q->n_done, s->n);
    return KS_OK;
}

/* Runs ids through a one-process dispatcher; sample number fail_sample (in hand-out order) fails. */
static ks_status run_single(sink *s, int n, int fail_sample) {
    int64_t cost[64];
    for (int i = 0; i < n; i++) cost[i] = (i * 7) % 13;
    ks_queue q = {0};
    ck_assert_int_eq(ks_queue_init(&q, n, cost, NULL, 1, 1), KS_OK);
    ks_mpi_comm none;
    memset(&none, 0, sizeof none); /* MPI is not initialised here: the dispatcher runs as one process */
    ks_dispatch d = {0};
    ck_assert_int_eq(ks_dispatch_init(&d, none, &q, 1, store, s), KS_OK);
    int id, k = 0;
    while (ks_dispatch_next(&d, &id) == KS_OK && id >= 0) {
        ks_result r;
        sample_result(&r, id);
        ks_status st = KS_OK;
        if (k++ == fail_sample) ks_dispatch_fail(&d, id, ks_fail(KS_ERR_RANGE, "prompt too long (test)"));
        else st = ks_dispatch_submit(&d, id, &r);
        ks_result_free(&r);
        if (st != KS_OK || k - 1 == fail_sample) break;
    }
    ks_status st = ks_dispatch_finish(&d);
    ks_dispatch_free(&d);
    for (int i = 1; i < s->n; i++) ck_assert_int_ge(cost[s->order[i - 1]], cost[s->order[i]]);
    ks_queue_free(&q);
    return st;
}

/* A one-process dispatcher whose rank holds up to `slots` samples: it fills its slots, hands back the newest
 * first (results arrive in any order), and after `fail_after` results (-1: never) fails while holding the rest. */
static ks_status run_slots(sink *s, int n, int slots, int fail_after) {
    int64_t cost[64];
    for (int i = 0; i < n; i++) cost[i] = (i * 7) % 13;
    ks_queue q = {0};
    ck_assert_int_eq(ks_queue_init(&q, n, cost, NULL, 1, slots), KS_OK);
    ks_mpi_comm none;
    memset(&none, 0, sizeof none);
    ks_dispatch d = {0};
    ck_assert_int_eq(ks_dispatch_init(&d, none, &q, slots, store, s), KS_OK);
    int held[8], n_held = 0, done = 0, closed = 0;
    while (!closed || n_held) {
        while (!closed && n_held < slots) {
            int id;
            ck_assert_int_eq(ks_dispatch_next(&d, &id), KS_OK);
            if (id < 0) closed = 1;
            else held[n_held++] = id;
        }
        ck_assert_int_eq(ks_dispatch_holding(&d), n_held);
        if (!n_held) break;
        if (done == fail_after) {
            ks_dispatch_fail(&d, held[0], ks_fail(KS_ERR_RANGE, "prompt too long (test)"));
            break;
        }
        ks_result r;
        sample_result(&r, held[--n_held]);
        ck_assert_int_eq(ks_dispatch_submit(&d, held[n_held], &r), KS_OK);
        ks_result_free(&r);
        done++;
    }
    ks_status st = ks_dispatch_finish(&d);
    ck_assert_int_eq(q.n_running, 0);
    ks_dispatch_free(&d);
    ks_queue_free(&q);
    return st;
}

START_TEST(test_dispatch_slots) {
    sink s = {.fail_at = -1};
    ck_assert_int_eq(run_slots(&s, 40, 4, -1), KS_OK);
    ck_assert_int_eq(s.n, 40);
    for (int i = 0; i < 40; i++) ck_assert_int_eq(s.stored[i], 1);

    sink f = {.fail_at = -1};
    ck_assert_int_eq(run_slots(&f, 40, 4, 6), KS_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "prompt too long (test)"));
    ck_assert_int_eq(f.n, 6);
}
END_TEST

START_TEST(test_dispatch_one_process) {
    sink s = {.fail_at = -1};
    ck_assert_int_eq(run_single(&s, 40, -1), KS_OK);
    ck_assert_int_eq(s.n, 40);
    for (int i = 0; i < 40; i++) ck_assert_int_eq(s.stored[i], 1);

    sink f = {.fail_at = -1};
    ck_assert_int_eq(run_single(&f, 40, 5), KS_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "rank 0 (sample"));
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "prompt too long (test)"));
    ck_assert_int_eq(f.n, 5);

    sink g = {.fail_at = 3};
    ck_assert_int_eq(run_single(&g, 40, -1), KS_ERR_IO);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "disk full (test)"));
    ck_assert_int_eq(g.n, 3);
}
END_TEST

int main(void) {
    Suite *s = suite_create("queue");
    TCase *tc = tcase_create("queue");
    tcase_add_test(tc, test_longest_first_skipping_done);
    tcase_add_test(tc, test_protocol_errors);
    tcase_add_test(tc, test_slots);
    tcase_add_test(tc, test_failed_rank_stops_the_hand_out);
    tcase_add_loop_test(tc, test_exactly_once_random, 0, 20);
    tcase_add_test(tc, test_wire_round_trip_and_damage);
    tcase_add_test(tc, test_dispatch_one_process);
    tcase_add_test(tc, test_dispatch_slots);
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
