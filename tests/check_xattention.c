/* check_xattention.c — XAttention, sparse prefill (src/methods/xattention.c, kernels/cpu/xattn_ref.h).
 *
 *     check_xattention           the block choice on hand-built scores whose answers follow from the rule
 *                                (threshold edges, the forced sink and diagonal, the block that crosses the
 *                                threshold, ties, force_density, a zero row); the antidiagonal estimator on
 *                                hand-built queries and keys, its GEMM form (the CPU store's) against it on random
 *                                ones; the method on the cpu KV store over a cache the
 *                                tests fill: its lists equal the estimator + choice on the whole prompt whatever
 *                                the chunk size, its statistics; the threshold table's file and shape errors; the
 *                                knob and composition errors; the forward pass's block-aligned chunk plan; a
 *                                sparse part that needs the whole prompt in one chunk (a test double)
 *     check_xattention smollm2   SmolLM2 (label "model"), a prompt of several blocks: threshold 1.0 gives FullKV's
 *                                greedy tokens; XAttention+SnapKV at threshold 1.0 keeps SnapKV's rows exactly
 *                                (layer-major into a budget-sized cache);
 *                                threshold 0.5 computes fewer blocks, reaching the threshold in every row
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/kvstore_cpu.h"
#include "cpu/fast.h"
#include "cpu/xattn_ref.h"
#include "engine/generate.h"
#include "engine/forward.h"
#include "methods/chain.h"
#include "methods/method.h"
#include "test_util.h"

/* ---- the block choice ---------------------------------------------------------------------------------- */

/* ks_xattn_select on row qb's scores a must keep exactly want[0 .. n) with the coverage cov. */
static void expect_select(const float *a, int qb, float threshold, float density, const int32_t *want, int n,
                          double cov) {
    int32_t cols[64];
    ks_xattn_rank work[64];
    double got_cov;
    int got = ks_xattn_select(cols, &got_cov, a, qb, threshold, density, work);
    ck_assert_msg(got == n, "threshold %g density %g: %d blocks kept, want %d", threshold, density, got, n);
    for (int i = 0; i < n; i++) ck_assert_int_eq(cols[i], want[i]);
    ck_assert_msg(fabs(got_cov - cov) < 1e-12, "coverage %.17g, want %.17g", got_cov, cov);
}

/* Row 4 of scores 1/8, 3/8, 1/16, 1/4, 3/16 (total 1, exact in binary): the forced blocks 0 and 4 hold 5/16; the
 * others in order 1 (3/8), 3 (1/4), 2 (1/16). A block is added while the kept sum is below threshold: at exactly
 * 5/16 nothing is, just above it block 1, which crosses to 11/16, is kept; at 11/16 no more; 3/4 adds block 3;
 * 1 adds every block. */
START_TEST(test_select_threshold_edges) {
    const float a[5] = {0.125f, 0.375f, 0.0625f, 0.25f, 0.1875f};
    expect_select(a, 4, 0.3125f, 0, (int32_t[]){0, 4}, 2, 0.3125);
    expect_select(a, 4, 0.32f, 0, (int32_t[]){0, 1, 4}, 3, 0.6875);
    expect_select(a, 4, 0.6875f, 0, (int32_t[]){0, 1, 4}, 3, 0.6875);
    expect_select(a, 4, 0.75f, 0, (int32_t[]){0, 1, 3, 4}, 4, 0.9375);
    expect_select(a, 4, 0.9375f, 0, (int32_t[]){0, 1, 3, 4}, 4, 0.9375);
    expect_select(a, 4, 1.0f, 0, (int32_t[]){0, 1, 2, 3, 4}, 5, 1.0);
}
END_TEST

/* The forced blocks stay whatever their scores: row 0 is block 0 alone, row 1 blocks 0 and 1 even at the lowest
 * threshold, and a row whose best blocks are elsewhere still keeps its sink and diagonal. Equal scores go lower
 * block first. A zero row keeps the forced blocks with coverage 1. */
START_TEST(test_select_forced_and_ties) {
    const float one[1] = {0.5f}, two[2] = {0, 0};
    expect_select(one, 0, 0.1f, 0, (int32_t[]){0}, 1, 1.0);
    expect_select(two, 1, 0.01f, 0, (int32_t[]){0, 1}, 2, 1.0);
    const float far[4] = {0, 0.5f, 0.5f, 0}; /* sink and diagonal 0: both 1/2 blocks needed for 0.75 */
    expect_select(far, 3, 0.4f, 0, (int32_t[]){0, 1, 3}, 3, 0.5);
    expect_select(far, 3, 0.75f, 0, (int32_t[]){0, 1, 2, 3}, 4, 1.0);
    const float tie[5] = {0.25f, 0.125f, 0.125f, 0.25f, 0.25f}; /* forced 1/2; then 3, then 1 before 2 */
    expect_select(tie, 4, 0.8f, 0, (int32_t[]){0, 1, 3, 4}, 4, 0.875);
    const float zero[3] = {0, 0, 0};
    expect_select(zero, 2, 0.9f, 0, (int32_t[]){0, 2}, 2, 1.0);
}
END_TEST

/* force_density: the forced blocks and the top others up to ceil(density * (qb + 1)) blocks, the threshold
 * ignored. Row 9 (10 blocks) of scores 9 - J: 0.3 keeps 0, 9 and the best other (1); 0.1 keeps the forced two
 * only; 1 keeps all ten. */
START_TEST(test_select_density) {
    float a[10];
    for (int J = 0; J < 10; J++) a[J] = (float)(9 - J) / 45.0f;
    int32_t all[10];
    for (int J = 0; J < 10; J++) all[J] = J;
    double total = (double)a[0] + a[9]; /* summed as the choice sums: forced, then the others descending */
    for (int J = 1; J < 9; J++) total += a[J];
    expect_select(a, 9, 1.0f, 0.3f, (int32_t[]){0, 1, 9}, 3, ((double)a[0] + a[9] + a[1]) / total);
    int32_t cols[10];
    ks_xattn_rank work[10];
    double cov;
    ck_assert_int_eq(ks_xattn_select(cols, &cov, a, 9, 1.0f, 0.1f, work), 2);
    ck_assert_int_eq(ks_xattn_select(cols, &cov, a, 9, 0.1f, 1.0f, work), 10);
    ck_assert_mem_eq(cols, all, sizeof all);
}
END_TEST

/* ---- the estimator ---------------------------------------------------------------------------------------- */

/* d = 1, S = 2, B = 4, one head; every key 0 but the one at position 1 (stride column 0, second in its group),
 * scale 1. Stride row i pairs q[2i + 1] with k[2j] and q[2i] with k[2j + 1] (the antidiagonal), so only q[2i]
 * matters: s[i, 0] = q[2i], s[i, j > 0] = 0. Query block 1 holds stride rows 2 (q[4] = ln 2: p = 1/2, 1/4, 1/4)
 * and 3 (q[6] = ln 3: p = 1/2, 1/6, 1/6, 1/6): block 0 (columns 0, 1) scores 3/4 + 2/3 = 17/12, block 1 (columns
 * 2, 3) 1/4 + 1/3 = 7/12. q[5] = q[7] = 5 would change that if the order were not reversed. A chunk ending at
 * position 6 scores row 3 from its position 6 alone (position 7 is padding): the same here. */
START_TEST(test_estimator_antidiagonal) {
    float q[8], k[8] = {0, 1, 0, 0, 0, 0, 0, 0};
    for (int p = 0; p < 8; p++) q[p] = 5.0f;
    q[4] = logf(2.0f), q[6] = logf(3.0f);
    float out[2];
    for (int n = 8; n >= 7; n--) {
        ks_xattn_args a = {.q_pos0 = 0, .n = n, .qb = 1, .block = 4, .stride = 2, .scale = 1.0f};
        ks_ref_xattn_block_scores(out, 2, q, k, 1, 1, 1, 8, &a);
        ck_assert_msg(fabsf(out[0] - 17.0f / 12) < 1e-6f && fabsf(out[1] - 7.0f / 12) < 1e-6f, "n %d: %g %g", n,
                      out[0], out[1]);
    }
    /* the chunk of block 1 alone (positions 4 .. 7, keys 0 .. 7 cached): the same rows, the same scores */
    ks_xattn_args a = {.q_pos0 = 4, .n = 4, .qb = 1, .block = 4, .stride = 2, .scale = 1.0f};
    ks_ref_xattn_block_scores(out, 2, q + 4, k, 1, 1, 1, 8, &a);
    ck_assert(fabsf(out[0] - 17.0f / 12) < 1e-6f && fabsf(out[1] - 7.0f / 12) < 1e-6f);
    /* GQA: two query heads over the one KV head; head 1's queries all 0 give uniform rows: block 0 gets 2/3 + 1/2 */
    float q2[8 * 2], out2[2 * 2];
    for (int p = 0; p < 8; p++) q2[p * 2] = q[p], q2[p * 2 + 1] = 0;
    a = (ks_xattn_args){.q_pos0 = 0, .n = 8, .qb = 1, .block = 4, .stride = 2, .scale = 1.0f};
    ks_ref_xattn_block_scores(out2, 2, q2, k, 2, 1, 1, 8, &a);
    ck_assert(fabsf(out2[0] - 17.0f / 12) < 1e-6f && fabsf(out2[2] - 7.0f / 6) < 1e-6f &&
              fabsf(out2[3] - 5.0f / 6) < 1e-6f);
}
END_TEST

/* The CPU store's GEMM form against the reference on random queries and keys: chunks starting and ending inside
 * stride groups and blocks, GQA, both strides' shapes. */
START_TEST(test_estimator_fast) {
    const struct {
        int q_pos0, n, H, Hk, d, B, S;
    } cases[] = {{0, 300, 4, 2, 8, 64, 8}, {128, 131, 2, 1, 16, 128, 16}, {37, 90, 6, 3, 8, 32, 4},
                 {0, 37, 2, 2, 4, 16, 8}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int n_kv = cases[c].q_pos0 + cases[c].n, cap = n_kv + 5, H = cases[c].H, Hk = cases[c].Hk, d = cases[c].d;
        float *q = malloc(sizeof(float) * cases[c].n * H * d), *k = malloc(sizeof(float) * Hk * cap * d);
        for (int i = 0; i < cases[c].n * H * d; i++) q[i] = 2 * ks_test_frand();
        for (int i = 0; i < Hk * cap * d; i++) k[i] = 2 * ks_test_frand();
        int ld = n_kv / cases[c].B + 2;
        float *want = malloc(sizeof(float) * H * ld), *got = malloc(sizeof(float) * H * ld);
        for (int qb = cases[c].q_pos0 / cases[c].B; qb <= (n_kv - 1) / cases[c].B; qb++) {
            ks_xattn_args a = {.q_pos0 = cases[c].q_pos0, .n = cases[c].n, .qb = qb, .block = cases[c].B,
                               .stride = cases[c].S, .scale = 1.0f / (sqrtf((float)d) * cases[c].S)};
            ks_ref_xattn_block_scores(want, ld, q, k, H, Hk, d, cap, &a);
            ks_fast_xattn_block_scores(got, ld, q, k, H, Hk, d, cap, &a);
            for (int h = 0; h < H; h++)
                for (int J = 0; J <= qb; J++)
                    ck_assert_msg(fabsf(got[h * ld + J] - want[h * ld + J]) <= 1e-5f * (1 + fabsf(want[h * ld + J])),
                                  "case %zu qb %d head %d block %d: %g vs %g", c, qb, h, J, got[h * ld + J],
                                  want[h * ld + J]);
        }
        free(q), free(k), free(want), free(got);
    }
}
END_TEST

/* ---- the method on the cpu KV store ----------------------------------------------------------------------- */

enum { H = 4, HK = 2, D = 8, CAP = 5 * 128, B = 128 }; /* one layer */

typedef struct fixture {
    ks_kvcache cache;
    ks_kvstore_cpu s;
    float q[CAP * H * D]; /* the chunk's query rows */
    ks_model model;
    ks_method *m;
    ks_block_list l;
} fixture;

static ks_status fx_init(fixture *f, const char *name, const char *const *opts, int n_opts, int n_layers) {
    memset(f, 0, sizeof *f);
    ck_assert(ks_kvcache_init(&f->cache, 0, 1, HK, D, CAP, CAP, 1) == KS_OK);
    ks_kvstore_cpu_params p = {.cache = &f->cache, .q = f->q, .n_heads = H, .max_chunk = CAP, .scale = 0.5f};
    ck_assert(ks_kvstore_cpu_init(&f->s, &p) == KS_OK);
    f->model.cfg.n_layers = n_layers, f->model.cfg.n_heads = H, f->model.cfg.n_kv_heads = HK;
    f->model.cfg.head_dim = D, f->model.first_layer = 0, f->model.last_layer = 1;
    f->model.source = "test model";
    int rows = H * (CAP / B + 2);
    f->l.row_start = malloc(sizeof(int32_t) * (rows + 1));
    f->l.cols = malloc(sizeof(int32_t) * rows * (CAP / B + 1));
    ck_assert_msg(ks_method_create(&f->m, name, NULL, opts, n_opts) == KS_OK, "%s", ks_last_error());
    return ks_method_bind_store(f->m, &f->s.base, &f->cache, &f->model);
}

static void fx_free(fixture *f) {
    ks_method_free(f->m);
    ks_kvstore_cpu_free(&f->s);
    ks_kvcache_free(&f->cache);
    free(f->l.row_start), free(f->l.cols);
}

/* The whole prompt's queries (L, H, D) and keys, values (L, HK, D): random, with a few strong key blocks. */
static void random_prompt(float *q, float *k, float *v, int L) {
    for (int i = 0; i < L * H * D; i++) q[i] = ks_test_frand();
    for (int i = 0; i < L * HK * D; i++)
        k[i] = ks_test_frand() * (i / (HK * D) / B == 2 ? 4.0f : 1.0f), v[i] = ks_test_frand();
}

/* The kept blocks of every (head, query block) row of an L-token prompt run in chunks of `chunk` (block-aligned
 * but the last) through the method: rows[(h * nqb + qb) * (nqb + 1) ..], count first, then the blocks; density
 * as the statistics report it. */
static void run_chunks(fixture *f, const float *q, const float *k, const float *v, int L, int chunk, int32_t *rows,
                       int nqb, ks_layer_stat *st) {
    ks_kvcache_reset(&f->cache);
    ks_method_reset(f->m);
    for (int t0 = 0; t0 < L; t0 += chunk) {
        int n = L - t0 < chunk ? L - t0 : chunk;
        for (int t = 0; t < n; t++) ks_kvcache_append(&f->cache, 0, k + (size_t)(t0 + t) * HK * D,
                                                      v + (size_t)(t0 + t) * HK * D, 1, t0 + t);
        memcpy(f->q, q + (size_t)t0 * H * D, sizeof(float) * n * H * D);
        f->l = (ks_block_list){.block = B, .H = H, .qb0 = t0 / B, .n_qblocks = ks_block_rows_of(t0, n, B),
                               .row_start = f->l.row_start, .cols = f->l.cols};
        const ks_block_list *out;
        ck_assert_msg(ks_method_prefill_blocks(f->m, 0, t0, n, t0 + n == L, &f->l, &out) == KS_OK, "%s",
                      ks_last_error());
        for (int h = 0; h < H; h++)
            for (int qb = f->l.qb0; qb < f->l.qb0 + f->l.n_qblocks; qb++) {
                int32_t *row = rows + (size_t)(h * nqb + qb) * (nqb + 1);
                if (!out) { /* dense: every causal block */
                    row[0] = qb + 1;
                    for (int J = 0; J <= qb; J++) row[1 + J] = J;
                    continue;
                }
                int r = ks_block_row(out, h, qb);
                row[0] = out->row_start[r + 1] - out->row_start[r];
                memcpy(row + 1, out->cols + out->row_start[r], sizeof(int32_t) * row[0]);
            }
    }
    ck_assert_int_eq(ks_method_layer_stats(f->m, st), 1);
}

/* XAttention's lists are the store's estimator and the choice on the whole prompt, row by row, whatever the
 * prefill chunk (block-aligned chunks, a partial last block); the statistics count them. */
START_TEST(test_method_chunk_independent) {
    const int L = 600, nqb = (L + B - 1) / B;
    float *q = malloc(sizeof(float) * L * H * D), *k = malloc(sizeof(float) * L * HK * D),
          *v = malloc(sizeof(float) * L * HK * D);
    random_prompt(q, k, v, L);
    const char *opts[] = {"threshold=0.5", "stride=8"};
    fixture f;
    ck_assert_msg(fx_init(&f, "XAttention", opts, 2, 1) == KS_OK, "%s", ks_last_error());
    size_t per = (size_t)H * nqb * (nqb + 1);
    int32_t *want = calloc(per, sizeof(int32_t)), *got = calloc(per, sizeof(int32_t));
    /* the reference: every row from the whole prompt's queries */
    int64_t blocks = 0, causal = 0;
    double coverage = 0;
    {
        float kc[HK * CAP * D];
        for (int h = 0; h < HK; h++)
            for (int t = 0; t < L; t++)
                memcpy(kc + ((size_t)h * CAP + t) * D, k + ((size_t)t * HK + h) * D, sizeof(float) * D);
        float scores[H * 8];
        ks_xattn_rank work[8];
        for (int qb = 0; qb < nqb; qb++) {
            ks_xattn_args a = {.q_pos0 = 0, .n = L, .qb = qb, .block = B, .stride = 8, .scale = 1.0f / (sqrtf(D) * 8)};
            ks_fast_xattn_block_scores(scores, 8, q, kc, H, HK, D, CAP, &a);
            for (int h = 0; h < H; h++) {
                int32_t *row = want + (size_t)(h * nqb + qb) * (nqb + 1);
                double cov;
                row[0] = ks_xattn_select(row + 1, &cov, scores + h * 8, qb, 0.5f, 0, work);
                blocks += row[0], causal += qb + 1, coverage += cov;
            }
        }
    }
    ck_assert(blocks < causal); /* some row is sparse */
    const int chunks[] = {128, 256, 384, CAP};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        ks_layer_stat st;
        memset(got, 0, sizeof(int32_t) * per);
        run_chunks(&f, q, k, v, L, chunks[c], got, nqb, &st);
        ck_assert_msg(!memcmp(got, want, sizeof(int32_t) * per), "chunk %d: other blocks", chunks[c]);
        ck_assert_int_eq(st.sparse_blocks, blocks);
        ck_assert_float_eq_tol(st.sparse_density, (float)((double)blocks / causal), 1e-6f);
        ck_assert_float_eq_tol(st.sparse_coverage, (float)(coverage / (H * nqb)), 1e-6f);
        ck_assert(st.sparse_coverage >= 0.5f);
    }
    fx_free(&f);
    free(want), free(got), free(q), free(k), free(v);
}
END_TEST

/* threshold 1 keeps every causal block: the chunk runs dense (no list), density 1. */
START_TEST(test_method_threshold_one_dense) {
    const int L = 300, nqb = 3;
    float *q = malloc(sizeof(float) * L * H * D), *k = malloc(sizeof(float) * L * HK * D),
          *v = malloc(sizeof(float) * L * HK * D);
    random_prompt(q, k, v, L);
    const char *opts[] = {"threshold=1"};
    fixture f;
    ck_assert_msg(fx_init(&f, "XAttention", opts, 1, 1) == KS_OK, "%s", ks_last_error());
    int32_t rows[H * 3 * 4];
    ks_layer_stat st;
    run_chunks(&f, q, k, v, L, 128, rows, nqb, &st);
    ck_assert_float_eq(st.sparse_density, 1.0f);
    ck_assert_int_eq(st.sparse_blocks, H * (1 + 2 + 3));
    ck_assert_float_eq_tol(st.sparse_coverage, 1.0f, 1e-6f);
    fx_free(&f);
    free(q), free(k), free(v);
}
END_TEST


/* A binding must fail with `want` and a message holding both needles. */
static void expect_bind_error(const char *threshold, int n_layers, ks_status want, const char *needle,
                              const char *needle2) {
    char opt[600];
    snprintf(opt, sizeof opt, "threshold=%s", threshold);
    const char *opts[] = {opt};
    fixture f;
    ks_status st = fx_init(&f, "XAttention", opts, 1, n_layers);
    ck_assert_msg(st == want && strstr(ks_last_error(), needle) && strstr(ks_last_error(), needle2), "%d: %s", st,
                  ks_last_error());
    fx_free(&f);
}

/* The per-layer x head table: its values are the heads' thresholds (head 0's 1 keeps every block, head 1's low
 * one fewer); its shape is checked against the model, each error naming the file and what it needs. */
START_TEST(test_threshold_table) {
    const char *good = ks_test_write_tmp("theta.txt", "# layer 0\n1, 1 1 1\n\n0.1 0.1 0.1 0.1  # layer 1\n");
    char opt[600];
    snprintf(opt, sizeof opt, "threshold=%s", good);
    const char *opts[] = {opt};
    fixture f;
    ck_assert_msg(fx_init(&f, "XAttention", opts, 1, 2) == KS_OK, "%s", ks_last_error());
    const int L = 384, nqb = 3;
    float *q = malloc(sizeof(float) * L * H * D), *k = malloc(sizeof(float) * L * HK * D),
          *v = malloc(sizeof(float) * L * HK * D);
    random_prompt(q, k, v, L);
    int32_t rows[H * 3 * 4];
    ks_layer_stat st;
    run_chunks(&f, q, k, v, L, 384, rows, nqb, &st);
    ck_assert_int_eq(st.sparse_blocks, H * 6); /* layer 0's thresholds are all 1 */
    fx_free(&f);
    free(q), free(k), free(v);

    expect_bind_error(good, 3, KS_ERR_ARG, "theta.txt", "2 lines of values; the model has 3 layers");
    expect_bind_error(ks_test_write_tmp("short.txt", "0.5 0.5 0.5\n0.5 0.5 0.5 0.5\n"), 2, KS_ERR_ARG, "short.txt:1",
                      "3 values; the model has 4 query heads");
    expect_bind_error(ks_test_write_tmp("big.txt", "0.5 1.5 0.5 0.5\n"), 1, KS_ERR_ARG, "big.txt:1",
                      "'1.5' is not a number in (0, 1]");
    expect_bind_error("/nonexistent/theta.txt", 1, KS_ERR_IO, "/nonexistent/theta.txt", "");
}
END_TEST

/* Knob and composition errors. */
START_TEST(test_errors) {
    ks_method *m;
    const char *stride[] = {"stride=12"}, *theta[] = {"threshold=1.5"}, *zero[] = {"threshold=0"};
    ck_assert(ks_method_create(&m, "XAttention", NULL, stride, 1) == KS_ERR_ARG);
    ck_assert_msg(strstr(ks_last_error(), "stride 12 must be 8 or 16"), "%s", ks_last_error());
    ck_assert(ks_method_create(&m, "XAttention", NULL, theta, 1) == KS_ERR_ARG);
    ck_assert_msg(strstr(ks_last_error(), "threshold 1.5 must be in (0, 1]"), "%s", ks_last_error());
    ck_assert(ks_method_create(&m, "XAttention", NULL, zero, 1) == KS_ERR_ARG);
    ck_assert(ks_method_create(&m, "SnapKV+XAttention", NULL, NULL, 0) == KS_ERR_ARG);
    ck_assert_msg(strstr(ks_last_error(), "write XAttention+SnapKV"), "%s", ks_last_error());
    ck_assert(ks_method_create(&m, "XAttention+CaM", NULL, NULL, 0) == KS_ERR_ARG);
    ck_assert_msg(strstr(ks_last_error(), "needs a selection method before it"), "%s", ks_last_error());
    const char *part[] = {"xattention.threshold=0.7", "snapkv.window_size=16"};
    ck_assert_msg(ks_method_create(&m, "XAttention+SnapKV+KIVI", NULL, part, 2) == KS_OK, "%s", ks_last_error());
    ck_assert_str_eq(ks_method_name(m), "XAttention+SnapKV+KIVI");
    ck_assert(m->ops == &ks_method_xattention && m->selector == NULL && m->next->selector == NULL &&
              m->next->next->selector == m->next);
    ck_assert(ks_method_bounds_rows(m)); /* SnapKV's plan bounds the rows; XAttention keeps them */
    ks_method_free(m);
    ck_assert(ks_method_create(&m, "XAttention", NULL, NULL, 0) == KS_OK);
    ck_assert(!ks_method_bounds_rows(m) && ks_method_sparse_block(m) == 128 && ks_method_window(m) == 0);
    ks_method_free(m);
}
END_TEST

/* The forward pass's chunks with a sparse-prefill method start on block edges, the last holding the composition's
 * window: a 1000-token prompt in chunks of at most 300 is 256, 256, 256, 232; a 330-token one 256, 74 (the window
 * of 32 would not fit a last chunk of 30). */
START_TEST(test_chunk_plan) {
    ks_method *m;
    ck_assert(ks_method_create(&m, "XAttention+SnapKV", NULL, NULL, 0) == KS_OK);
    ks_forward f = {.chunk = 300, .method = m};
    const struct {
        int n, want[5];
    } cases[] = {{1000, {256, 256, 256, 232}}, {330, {256, 74}}, {300, {300}}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int t0 = 0, i = 0; t0 < cases[c].n; i++) {
            int len = ks_forward_chunk_len(&f, cases[c].n, t0);
            ck_assert_msg(len == cases[c].want[i], "prompt %d, chunk %d: %d tokens", cases[c].n, i, len);
            t0 += len;
        }
    ks_method_free(m);
}
END_TEST

/* A sparse-prefill part that needs the prompt's last query block (FlexPrefill's kind, a test double here) gets
 * the whole prompt as one chunk or an error naming --chunk. */
static int whole_block(const ks_method *m) {
    (void)m;
    return 64;
}
static ks_status whole_blocks(ks_method *m, const ks_method_chunk *c, int last, ks_block_list *l,
                              const ks_block_list **out) {
    (void)m, (void)c, (void)last, (void)l;
    *out = NULL;
    return KS_OK;
}
static const ks_knob no_knobs[] = {{0}};
static const ks_method_ops t_whole = {.name = "TestWhole", .role = KS_ROLE_PREFILL, .file = "testwhole",
                                      .summary = "test double", .knobs = no_knobs, .sparse_block = whole_block,
                                      .prefill_blocks = whole_blocks, .sparse_whole_prompt = 1};

START_TEST(test_whole_prompt_part) {
    fixture f;
    ck_assert(fx_init(&f, "XAttention", NULL, 0, 1) == KS_OK);
    ks_method *m;
    const ks_method_ops *parts[] = {&t_whole, &ks_method_snapkv};
    ck_assert_msg(ks_method_create_ops(&m, parts, 2, NULL, NULL, 0) == KS_OK, "%s", ks_last_error());
    ck_assert(ks_method_bind_store(m, &f.s.base, &f.cache, &f.model) == KS_OK);
    ck_assert_int_eq(ks_method_sparse_block(m), 64);
    const ks_block_list *out = &f.l;
    ck_assert(ks_method_prefill_blocks(m, 0, 0, 100, 1, &f.l, &out) == KS_OK && out == NULL);
    ck_assert(ks_method_prefill_blocks(m, 0, 0, 64, 0, &f.l, &out) == KS_ERR_ARG);
    ck_assert_msg(strstr(ks_last_error(), "TestWhole+SnapKV: TestWhole chooses each layer's key blocks from the "
                                          "prompt's last block of queries") &&
                      strstr(ks_last_error(), "raise --chunk"),
                  "%s", ks_last_error());
    ck_assert(ks_method_prefill_blocks(m, 0, 64, 36, 1, &f.l, &out) == KS_ERR_ARG);
    ks_method_free(m);
    fx_free(&f);
}
END_TEST

/* ---- SmolLM2 ------------------------------------------------------------------------------------------ */

typedef struct run_out {
    int32_t tokens[4];
    int32_t *pos, len[2048];
    ks_layer_stat st[KS_METHOD_MAX_LAYERS];
    int n_st, cap;
} run_out;

static void run(const ks_model *model, const ks_ids *ids, const char *name, const char *const *opts, int n_opts,
                int chunk, ks_forward_cache cache, run_out *o) {
    ks_method *m = NULL;
    if (name) ck_assert_msg(ks_method_create(&m, name, NULL, opts, n_opts) == KS_OK, "%s", ks_last_error());
    ks_forward f = {0};
    ks_forward_params fp = {.device = "cpu", .max_ctx = ids->n + 4, .max_new = 4, .chunk = chunk, .cache = cache};
    ck_assert_msg(ks_forward_init(&f, model, m, &fp) == KS_OK, "%s", ks_last_error());
    ks_generate_params gp = {.max_new_tokens = 4};
    ks_generate_result r;
    ck_assert_msg(ks_generate(&f, ids->ids, ids->n, &gp, o->tokens, &r) == KS_OK, "%s", ks_last_error());
    const ks_kvcache *c = f.ops->kvcache(f.be);
    o->cap = c->cap;
    o->pos = calloc((size_t)c->n_layers * c->n_kv_heads * c->cap, sizeof(int32_t));
    for (int l = 0, i = 0; l < c->n_layers; l++)
        for (int h = 0; h < c->n_kv_heads; h++, i++) {
            o->len[i] = ks_kvcache_len(c, l)[h];
            memcpy(o->pos + (size_t)i * c->cap, ks_kvcache_pos(c, l, h), sizeof(int32_t) * o->len[i]);
        }
    o->n_st = m ? ks_method_layer_stats(m, o->st) : 0;
    ks_forward_free(&f);
    ks_method_free(m);
}

/* Dense equivalence: threshold 1.0 gives FullKV's greedy tokens; XAttention+SnapKV at threshold 1.0, prefilled
 * layer by layer into a budget-sized cache, keeps the rows and tokens of SnapKV in the full cache exactly, with
 * SnapKV's statistics and a density of 1. */
START_TEST(test_smollm2_threshold_one) {
    ks_model model;
    ks_tokenizer *tok;
    ks_ids ids;
    ks_test_smollm2_long_prompt(&model, &tok, &ids, 4 * B);
    static run_out full, xa, snap, both;
    const char *one[] = {"threshold=1.0"};
    run(&model, &ids, NULL, NULL, 0, 256, KS_CACHE_FULL, &full);
    run(&model, &ids, "XAttention", one, 1, 256, KS_CACHE_FULL, &xa);
    ck_assert_mem_eq(full.tokens, xa.tokens, sizeof full.tokens);
    for (int l = 0; l < xa.n_st; l++) ck_assert(xa.st[l].sparse_density == 1.0f && xa.st[l].sparse_blocks > 0);
    const char *snap_opts[] = {"max_capacity_prompt=64", "window_size=16"};
    const char *both_opts[] = {"xattention.threshold=1.0", "max_capacity_prompt=64", "window_size=16"};
    run(&model, &ids, "SnapKV", snap_opts, 2, 256, KS_CACHE_FULL, &snap);
    run(&model, &ids, "XAttention+SnapKV", both_opts, 3, 256, KS_CACHE_BUDGET, &both); /* layer-major prefill */
    ck_assert_mem_eq(snap.tokens, both.tokens, sizeof snap.tokens);
    int heads = model.cfg.n_layers * model.cfg.n_kv_heads;
    ck_assert_mem_eq(snap.len, both.len, sizeof(int32_t) * heads);
    for (int i = 0; i < heads; i++)
        ck_assert_mem_eq(snap.pos + (size_t)i * snap.cap, both.pos + (size_t)i * both.cap,
                         sizeof(int32_t) * snap.len[i]);
    for (int l = 0; l < snap.n_st; l++) {
        ck_assert(both.st[l].kept == snap.st[l].kept && both.st[l].budget == snap.st[l].budget &&
                  both.st[l].attn_mass_kept == snap.st[l].attn_mass_kept &&
                  both.st[l].key_norm_mean == snap.st[l].key_norm_mean && both.st[l].sparse_density == 1.0f);
    }
    free(full.pos), free(xa.pos), free(snap.pos), free(both.pos);
    ks_test_smollm2_free(&model, tok, &ids);
}
END_TEST

/* Threshold 0.5 computes fewer blocks than the causal triangle in some layer, each row reaching the threshold;
 * the same blocks in chunks of 128 and of 384 tokens give the same density. */
START_TEST(test_smollm2_sparse) {
    ks_model model;
    ks_tokenizer *tok;
    ks_ids ids;
    ks_test_smollm2_long_prompt(&model, &tok, &ids, 4 * B);
    static run_out a, b;
    const char *half[] = {"threshold=0.5", "stride=8"};
    run(&model, &ids, "XAttention", half, 2, 256, KS_CACHE_FULL, &a);
    int sparse = 0;
    for (int l = 0; l < a.n_st; l++) {
        ck_assert(a.st[l].sparse_density > 0 && a.st[l].sparse_density <= 1.0f);
        ck_assert_msg(a.st[l].sparse_coverage >= 0.5f - 1e-6f, "layer %d: coverage %g", l, a.st[l].sparse_coverage);
        sparse |= a.st[l].sparse_density < 1.0f;
    }
    ck_assert(sparse);
    const char *dens[] = {"force_density=0.25"};
    run(&model, &ids, "XAttention", dens, 1, 128, KS_CACHE_FULL, &b);
    for (int l = 0; l < b.n_st; l++) ck_assert(b.st[l].sparse_density < 0.75f);
    free(a.pos), free(b.pos);
    ks_test_smollm2_free(&model, tok, &ids);
}
END_TEST

int main(int argc, char **argv) {
    ks_test_seed(0x2545F4914F6CDD1Dull);
    int smollm2 = argc > 1 && !strcmp(argv[1], "smollm2");
    Suite *s = suite_create("xattention");
    TCase *tc = tcase_create(smollm2 ? "smollm2" : "xattention");
    if (smollm2) {
        tcase_add_test(tc, test_smollm2_threshold_one);
        tcase_add_test(tc, test_smollm2_sparse);
    } else {
        tcase_add_test(tc, test_select_threshold_edges);
        tcase_add_test(tc, test_select_forced_and_ties);
        tcase_add_test(tc, test_select_density);
        tcase_add_test(tc, test_estimator_antidiagonal);
        tcase_add_test(tc, test_estimator_fast);
        tcase_add_test(tc, test_method_chunk_independent);
        tcase_add_test(tc, test_method_threshold_one_dense);
        tcase_add_test(tc, test_threshold_table);
        tcase_add_test(tc, test_errors);
        tcase_add_test(tc, test_chunk_plan);
        tcase_add_test(tc, test_whole_prompt_part);
    }
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
