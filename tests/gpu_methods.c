/* gpu_methods.c — the KV-compression ops on CUDA (kernels/cuda/ks_cuda_methods.h, the cuda KV store's
 * window_scores, attention_decode_probs, key_norms, kv_compact, v_merge) against the CPU. Needs a GPU (label "gpu";
 * jobs/gpu/run_gpu.sh runs it). Random inputs: the seed is printed, KS_SEED replays it.
 *
 *   kernels      each kernel against its reference (kernels/cpu/ref.h, xattn_ref.h) on the same bf16-representable
 *                inputs, odd sizes, GQA groups, every statistic, reduction and softmax mode, per-head row
 *                ranges; outputs poisoned with NaN before the call
 *   kept sets    the six methods (and H2O's score window and LOOM variants) driven through two twin KV stores
 *                on identical random Q/K (bf16 values, so both see the same numbers): the cpu store on host
 *                arrays, and the same store whose scoring, compaction and eviction run the CUDA kernels on
 *                device copies; every (layer, KV head)
 *                must keep the same positions, with their values, after prefill and after decode steps, also
 *                when the cuda twin's prompt comes in other chunks than the reference's (7, 64, 100); CaM's
 *                hand-built prompt-end merges on the cuda twin give check_methods' values
 *   tiny model   tests/fixtures/models/tiny_llama on the cuda backend: with budgets covering the sequence every
 *                method's greedy tokens equal FullKV's; with small budgets the cache holds the budget's rows
 *                and decoding continues; a second sequence on each instance repeats the first; H2O keeps the rows of a one-chunk prompt for other chunk sizes, under
 *                each gqa_reduce
 *   deferred     the same model, each method with small budgets three ways: cuda with deferred prompt-end
 *                work (the store's compress_layer: side stream, query snapshots), cuda with the store's
 *                compress_layer replaced by one that runs the work at once, cpu. The two
 *                cuda runs must keep the same rows, report the same statistics and decode the same tokens; the
 *                cuda kept sets must mostly agree with the cpu's (bf16 against fp32 scores: near-ties may
 *                split differently); a fourth run, for the methods that bound their rows, on a budget-sized
 *                cache (layer-major prefill) must equal the first
 *   budget cache a random-weight 8-layer Llama shape (speed/speed_model.h), long enough prompts that every
 *                prefill slot is taken several times: the budget-sized cache keeps the full cache's rows and
 *                decodes the same tokens
 *   composition  the tiny model on the cuda backend: SnapKV, PyramidKV and H2O each composed with a part that
 *                does nothing at the prompt's end and at every decode step (a hooked decode graph) keep the
 *                rows, KV bytes and greedy tokens of the selection alone
 *   KIVI         the tiny model on the cuda store's packed part: a residual longer than the sequence gives
 *                FullKV's tokens and bytes; a short one the cpu backend's counts and bytes (bf16 rows) after the
 *                prompt and decode steps, its errors within 10%, tokens as close as FullKV's, and a budget-sized
 *                cache the full one's counts and tokens (test_kivi)
 *   ThinK        the tiny model on the cuda store's packed part (raw bf16 prefix, device key channel lists):
 *                ratio 0 gives SnapKV's tokens and bytes; ThinK, SnapKV+ThinK and SnapKV+ThinK+KIVI give the cpu
 *                store's counts, kept channels (every head when every prompt row is kept) and bytes by the formula,
 *                tokens as close as FullKV's, a budget-sized cache the full one's, a second prompt the first's
 *                (test_think)
 *   KIVI graph   the tiny model: KIVI's graph-served decode steps give the logits of eager steps bit for bit and
 *                the cpu backend's counts, bytes and positions after every step, a budget-sized cache the full
 *                one's, a second prompt the first's (test_kivi_graph); a budget-sized SnapKV+KIVI cache decoding
 *                past max_new fails with KS_ERR_RANGE, and a second prompt then decodes a fresh instance's tokens
 *                (test_kivi_graph_overflow)
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cpu/flexprefill_ref.h"
#include "cpu/ref.h"
#include "cpu/xattn_ref.h"
#include "cuda/ks_cuda_methods.h"
#include "backend/backend_cuda.h"
#include "backend/backend_cuda_impl.h" /* the decode graph an instance holds (test_kivi_graph) */
#include "backend/kv_kivi.h"
#include "backend/kvstore_cpu.h"
#include "speed/speed_model.h"
#include "engine/generate.h"
#include "methods/chain.h"
#include "methods/method.h"
#include "test_util.h"

#define CK_KS(expr) ck_assert_msg((expr) == KS_OK, "%s: %s", #expr, ks_last_error())
#define CK_CUDA(expr) ck_assert_msg((expr) == cudaSuccess, "%s failed", #expr)

static uint64_t g_rng;

static double rnd(void) { /* uniform [0, 1) */
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}

/* bf16 (round to nearest even) and back: values both sides see identically. */
static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* x[i] = a bf16-representable uniform value in [lo, hi). */
static void fill(float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = from_bf16(to_bf16((float)(lo + (hi - lo) * rnd())));
}

/* A device bf16 copy of host x (n). */
static ks_bf16 *upload(const float *x, size_t n) {
    uint16_t *h = malloc(2 * (n ? n : 1));
    for (size_t i = 0; i < n; i++) h[i] = to_bf16(x[i]);
    void *d;
    CK_CUDA(cudaMalloc(&d, 2 * (n ? n : 1)));
    CK_CUDA(cudaMemcpy(d, h, 2 * n, cudaMemcpyHostToDevice));
    free(h);
    return d;
}

static void *dev_alloc(size_t bytes) {
    void *d;
    CK_CUDA(cudaMalloc(&d, bytes));
    return d;
}

static void *dev_ints(const int32_t *x, int n) {
    void *d = dev_alloc(sizeof(int32_t) * (n ? n : 1));
    CK_CUDA(cudaMemcpy(d, x, sizeof(int32_t) * n, cudaMemcpyHostToDevice));
    return d;
}

/* |got - want| <= atol + rtol |want| for the listed columns of each row. */
static void expect_close(const float *got, const float *want, int rows, int ld, const int32_t *cols, int n, double atol,
                         double rtol, const char *what) {
    for (int g = 0; g < rows; g++)
        for (int j = 0; j < (cols ? cols[g] : n); j++) {
            double a = got[(size_t)g * ld + j], b = want[(size_t)g * ld + j];
            ck_assert_msg(isfinite(a) && fabs(a - b) <= atol + rtol * fabs(b), "%s: row %d col %d: %.8g, want %.8g",
                          what, g, j, a, b);
        }
}

/* ---- kernels ------------------------------------------------------------------------------------------- */

typedef struct score_case {
    int H, Hk, d, cap, n_q, q_pos, n_keys, chunk;
    ks_score_stat stat;
    ks_gqa_reduce reduce;
    int ranges; /* per-head [lo, hi) rows (the decode-probability form) */
} score_case;

static void check_scores(const score_case *c) {
    const int H = c->H, Hk = c->Hk, d = c->d, cap = c->cap, ld = cap + 3;
    const int rows = c->reduce == KS_GQA_NONE ? H : Hk; /* out's rows: per query head, or per KV head */
    const float scale = 1.0f / sqrtf((float)d);
    float *q = malloc(sizeof(float) * c->n_q * H * d), *k = malloc(sizeof(float) * Hk * cap * d);
    fill(q, (size_t)c->n_q * H * d, -2, 2);
    fill(k, (size_t)Hk * cap * d, -2, 2);
    int32_t lo[16], hi[16];
    for (int g = 0; g < Hk; g++) {
        hi[g] = c->ranges ? c->n_keys - (int)(rnd() * (c->n_keys / 2)) : c->n_keys;
        lo[g] = c->ranges ? (int)(rnd() * (hi[g] / 2)) : 0;
    }
    if (c->ranges) hi[0] = c->n_keys; /* the longest head sets the width */
    int32_t cols[64]; /* the columns of each out row: its KV head's */
    for (int r = 0; r < rows; r++) cols[r] = hi[r / (rows / Hk)];
    float *want = malloc(sizeof(float) * rows * ld), *got = malloc(sizeof(float) * rows * ld);
    float *want_sums = malloc(sizeof(float) * Hk * ld), *got_sums = malloc(sizeof(float) * Hk * ld);
    ks_window_summary ws = {0, 0};
    if (c->ranges) {
        ck_assert(c->n_q == 1 && c->stat == KS_SCORE_SUM);
        ks_ref_attention_decode_probs(want, ld, q, k, lo, hi, cap, H, Hk, d, scale, c->reduce);
    } else {
        ks_window_args a = {.q_row0 = 0, .n_q = c->n_q, .q_pos0 = c->q_pos, .n_keys = c->n_keys,
                            .softmax_chunk = c->chunk, .stat = c->stat, .gamma = 0.7f, .reduce = c->reduce,
                            .sums = want_sums};
        ks_ref_window_scores(want, ld, &ws, q, k, H, Hk, d, cap, scale, &a);
    }
    ks_bf16 *dq = upload(q, (size_t)c->n_q * H * d), *dk = upload(k, (size_t)Hk * cap * d);
    int32_t *dlo = dev_ints(lo, Hk), *dhi = dev_ints(hi, Hk);
    float *dout = dev_alloc(sizeof(float) * rows * ld), *dsums = dev_alloc(sizeof(float) * Hk * ld);
    double *dsum = dev_alloc(2 * sizeof(double));
    CK_CUDA(cudaMemset(dout, 0xff, sizeof(float) * rows * ld)); /* NaN poison */
    CK_CUDA(cudaMemset(dsums, 0xff, sizeof(float) * Hk * ld));
    CK_CUDA(cudaMemset(dsum, 0, 2 * sizeof(double)));
    ks_cuda_score_args a = {.q = dq, .ld_q = (int64_t)H * d, .kc = dk, .lo = c->ranges ? dlo : NULL,
                            .hi = c->ranges ? dhi : NULL, .H = H, .Hk = Hk, .d = d, .cap = cap, .n_q = c->n_q,
                            .q_pos = c->q_pos, .n_keys = c->n_keys, .softmax_chunk = c->chunk, .stat = c->stat,
                            .gamma = 0.7f, .reduce = c->reduce, .scale = scale, .sums = c->ranges ? NULL : dsums};
    size_t nlse = ks_cuda_scores_lse_floats(&a);
    float *dlse = dev_alloc(sizeof(float) * nlse);
    CK_KS(ks_cuda_scores(dout, ld, dsum, &a, dlse, nlse, 0));
    CK_CUDA(cudaMemcpy(got, dout, sizeof(float) * rows * ld, cudaMemcpyDeviceToHost));
    double hsum[2];
    CK_CUDA(cudaMemcpy(hsum, dsum, sizeof hsum, cudaMemcpyDeviceToHost));
    char what[160];
    snprintf(what, sizeof what, "scores H %d Hk %d d %d n_q %d q_pos %d n_keys %d chunk %d stat %d reduce %d ranges %d",
             H, Hk, d, c->n_q, c->q_pos, c->n_keys, c->chunk, c->stat, c->reduce, c->ranges);
    /* fp32 logits and exp against doubles: a few 1e-6 relative per probability */
    expect_close(got, want, rows, ld, c->ranges ? cols : NULL, c->n_keys, 1e-6, 2e-4, what);
    if (!c->ranges) { /* the second output of the same pass: the group mean of the query sums */
        CK_CUDA(cudaMemcpy(got_sums, dsums, sizeof(float) * Hk * ld, cudaMemcpyDeviceToHost));
        expect_close(got_sums, want_sums, Hk, ld, NULL, c->n_keys, 1e-6, 2e-4, what);
    }
    /* the tensor-core path's portable kernels too, where the dispatching entry runs wgmma (d = 128 on Hopper) */
    if (!c->ranges && !c->chunk && c->stat == KS_SCORE_SUM && c->n_q >= 64 && d == 128) {
        CK_CUDA(cudaMemset(dout, 0xff, sizeof(float) * rows * ld));
        CK_CUDA(cudaMemset(dsums, 0xff, sizeof(float) * Hk * ld));
        CK_KS(ks_cuda_scores_sm80(dout, ld, dsum, &a, dlse, nlse, 0));
        CK_CUDA(cudaMemcpy(got, dout, sizeof(float) * rows * ld, cudaMemcpyDeviceToHost));
        CK_CUDA(cudaMemcpy(got_sums, dsums, sizeof(float) * Hk * ld, cudaMemcpyDeviceToHost));
        char what80[200];
        snprintf(what80, sizeof what80, "%s sm80", what);
        expect_close(got, want, rows, ld, NULL, c->n_keys, 1e-6, 2e-4, what80);
        expect_close(got_sums, want_sums, Hk, ld, NULL, c->n_keys, 1e-6, 2e-4, what80);
    }
    /* H2O's chunk on the backend: the chunk's attention gives the log-sum-exps and the scores reuse them */
    if (!c->ranges && !c->chunk && c->stat == KS_SCORE_SUM && c->n_q >= 64 && c->q_pos + c->n_q == c->n_keys &&
        (d == 64 || d == 128)) {
        float *dlse_att = dev_alloc(sizeof(float) * c->n_q * H);
        ks_bf16 *datt = dev_alloc(sizeof(ks_bf16) * c->n_q * H * d);
        CK_KS(ks_cuda_attention_prefill(datt, (int64_t)H * d, dq, (int64_t)H * d, dk, dk, c->n_q, c->n_keys, cap, H,
                                        Hk, d, c->q_pos, 0, scale, dlse_att, 0));
        CK_CUDA(cudaMemset(dout, 0xff, sizeof(float) * rows * ld));
        CK_CUDA(cudaMemset(dlse, 0xff, sizeof(float) * nlse)); /* nothing of a first pass is left to read */
        a.lse_in = dlse_att;
        CK_KS(ks_cuda_scores(dout, ld, dsum, &a, dlse, nlse, 0));
        CK_CUDA(cudaMemcpy(got, dout, sizeof(float) * rows * ld, cudaMemcpyDeviceToHost));
        strncat(what, " lse_in", sizeof what - strlen(what) - 1);
        expect_close(got, want, rows, ld, NULL, c->n_keys, 1e-6, 2e-4, what);
        cudaFree(dlse_att), cudaFree(datt);
    }
    if (c->stat == KS_SCORE_MEAN_VAR) {
        ck_assert_msg(fabs(hsum[0] - ws.entropy) <= 1e-3 * fabs(ws.entropy) + 1e-6, "%s: entropy %g, want %g", what,
                      hsum[0], ws.entropy);
        ck_assert_msg(fabs(hsum[1] - ws.var_sum) <= 1e-3 * fabs(ws.var_sum) + 1e-9, "%s: var_sum %g, want %g", what,
                      hsum[1], ws.var_sum);
    }
    cudaFree(dq), cudaFree(dk), cudaFree(dlo), cudaFree(dhi), cudaFree(dout), cudaFree(dsum), cudaFree(dlse);
    cudaFree(dsums);
    free(q), free(k), free(want), free(got), free(want_sums), free(got_sums);
}

START_TEST(test_scores) {
    const score_case cases[] = {
        /* SnapKV-like windows: the last queries of the prompt, causal inside the window */
        {8, 2, 64, 700, 32, 645, 677, 0, KS_SCORE_SUM, KS_GQA_MEAN, 0},
        {4, 4, 128, 333, 7, 300, 307, 0, KS_SCORE_SUM, KS_GQA_MAX, 0},
        {6, 2, 16, 97, 1, 90, 91, 0, KS_SCORE_SUM, KS_GQA_SUM, 0},
        /* H2O all queries of a chunk (queries before the last rows), CakeKV's mean + variance with summary */
        {4, 1, 64, 1200, 130, 1000, 1130, 0, KS_SCORE_SUM, KS_GQA_MEAN, 0},
        /* the same on tensor cores (n_q >= 64): a prompt's first chunk, G = 1, keys no query sees, 64 queries */
        {8, 2, 128, 1500, 300, 0, 300, 0, KS_SCORE_SUM, KS_GQA_MAX, 0},
        {4, 4, 128, 2000, 200, 1633, 1833, 0, KS_SCORE_SUM, KS_GQA_SUM, 0},
        {6, 2, 64, 700, 64, 500, 580, 0, KS_SCORE_SUM, KS_GQA_MEAN, 0},
        {8, 1, 128, 4200, 1100, 3000, 4100, 0, KS_SCORE_SUM, KS_GQA_MEAN, 0},
        {8, 2, 128, 520, 17, 480, 497, 0, KS_SCORE_MEAN_VAR, KS_GQA_MEAN, 0},
        {2, 2, 64, 64, 5, 59, 64, 0, KS_SCORE_MEAN_VAR, KS_GQA_MAX, 0},
        /* LOOM's H2O: past keys in softmax chunks (a partial last chunk) */
        {4, 2, 64, 800, 32, 709, 741, 100, KS_SCORE_SUM, KS_GQA_MEAN, 0},
        {4, 2, 128, 300, 8, 256, 264, 64, KS_SCORE_SUM, KS_GQA_SUM, 0},
        /* decode probabilities: one query, per-head [start, len) */
        {8, 2, 128, 900, 1, 899, 899, 0, KS_SCORE_SUM, KS_GQA_MEAN, 1},
        {6, 3, 64, 77, 1, 76, 70, 0, KS_SCORE_SUM, KS_GQA_MAX, 1},
        /* per query head (KS_GQA_NONE, H2O's running sums): a window, a chunk on tensor cores (both head dims,
         * after a first chunk; lse_in too), the mean + variance statistic, a decode step */
        {6, 2, 64, 400, 20, 350, 370, 0, KS_SCORE_SUM, KS_GQA_NONE, 0},
        {8, 2, 128, 1500, 300, 700, 1000, 0, KS_SCORE_SUM, KS_GQA_NONE, 0},
        {6, 2, 64, 700, 64, 500, 564, 0, KS_SCORE_SUM, KS_GQA_NONE, 0},
        {4, 2, 64, 300, 9, 280, 289, 0, KS_SCORE_MEAN_VAR, KS_GQA_NONE, 0},
        {8, 2, 128, 900, 1, 899, 899, 0, KS_SCORE_SUM, KS_GQA_NONE, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_scores(&cases[i]);
}
END_TEST

/* ThinK's channel scores against the reference on fresh random inputs: GQA groups, a head dim that is not a
 * multiple of 32, a head holding no rows, query rows at a row stride wider than the heads (the fused q|k|v rows). */
START_TEST(test_channel_scores) {
    const int shapes[][5] = {{8, 2, 128, 700, 32}, {6, 3, 48, 67, 5}, {4, 4, 64, 16, 1}}; /* H, Hk, d, cap, n_q */
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int H = shapes[s][0], Hk = shapes[s][1], d = shapes[s][2], cap = shapes[s][3], n_q = shapes[s][4];
        const int ld = d + 5, ld_q = H * d + 2 * Hk * d;
        float *k = malloc(sizeof(float) * Hk * cap * d), *q = malloc(sizeof(float) * n_q * ld_q);
        float *q_dense = malloc(sizeof(float) * n_q * H * d);
        fill(k, (size_t)Hk * cap * d, -3, 3), fill(q, (size_t)n_q * ld_q, -2, 2);
        for (int r = 0; r < n_q; r++) memcpy(q_dense + (size_t)r * H * d, q + (size_t)r * ld_q, sizeof(float) * H * d);
        int32_t len[8];
        for (int g = 0; g < Hk; g++) len[g] = g == 1 ? 0 : cap - (int)(rnd() * cap / 2);
        float *want = malloc(sizeof(float) * H * ld), *got = malloc(sizeof(float) * H * ld);
        ks_ref_channel_scores(want, ld, q_dense, n_q, k, len, cap, H, Hk, d);
        ks_bf16 *dk = upload(k, (size_t)Hk * cap * d), *dq = upload(q, (size_t)n_q * ld_q);
        int32_t *dlen = dev_ints(len, Hk);
        float *dout = dev_alloc(sizeof(float) * H * ld);
        CK_CUDA(cudaMemset(dout, 0xff, sizeof(float) * H * ld));
        CK_KS(ks_cuda_channel_scores(dout, ld, dq, ld_q, n_q, dk, dlen, H, Hk, d, cap, 0));
        CK_CUDA(cudaMemcpy(got, dout, sizeof(float) * H * ld, cudaMemcpyDeviceToHost));
        expect_close(got, want, H, ld, NULL, d, 1e-6, 1e-4, "channel scores");
        cudaFree(dk), cudaFree(dq), cudaFree(dlen), cudaFree(dout);
        free(k), free(q), free(q_dense), free(want), free(got);
    }
}
END_TEST

/* XAttention's block scores of one query block against ks_ref_xattn_block_scores: a first chunk, a later chunk
 * whose last query block is partial, stride 8 and 16, GQA groups 1 and 3. */
START_TEST(test_xattn_scores) {
    const int shapes[][7] = {{8, 2, 64, 16, 0, 300, 2}, {4, 4, 128, 8, 256, 200, 3}, {6, 2, 32, 16, 128, 130, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) { /* H, Hk, d, stride, q_pos0, n, qb */
        const int H = shapes[s][0], Hk = shapes[s][1], d = shapes[s][2], n = shapes[s][5];
        const ks_xattn_args a = {.q_pos0 = shapes[s][4], .n = n, .qb = shapes[s][6], .block = 128,
                                 .stride = shapes[s][3], .scale = 1.0f / (sqrtf((float)d) * (float)shapes[s][3])};
        const int cap = a.q_pos0 + n + 9, ld = a.qb + 4, ld_q = H * d + 2 * Hk * d;
        float *k = malloc(sizeof(float) * Hk * cap * d), *q = malloc(sizeof(float) * n * ld_q);
        float *q_dense = malloc(sizeof(float) * n * H * d);
        fill(k, (size_t)Hk * cap * d, -2, 2), fill(q, (size_t)n * ld_q, -2, 2);
        for (int r = 0; r < n; r++) memcpy(q_dense + (size_t)r * H * d, q + (size_t)r * ld_q, sizeof(float) * H * d);
        float *want = malloc(sizeof(float) * H * ld), *got = malloc(sizeof(float) * H * ld);
        ks_ref_xattn_block_scores(want, ld, q_dense, k, H, Hk, d, cap, &a);
        ks_bf16 *dk = upload(k, (size_t)Hk * cap * d), *dq = upload(q, (size_t)n * ld_q);
        float *dout = dev_alloc(sizeof(float) * H * ld), *dstats = dev_alloc(sizeof(float) * 2 * H * 16);
        CK_CUDA(cudaMemset(dout, 0xff, sizeof(float) * H * ld));
        CK_KS(ks_cuda_xattn_block_scores(dout, ld, dstats, dq, ld_q, dk, H, Hk, d, cap, &a, 0));
        CK_CUDA(cudaMemcpy(got, dout, sizeof(float) * H * ld, cudaMemcpyDeviceToHost));
        expect_close(got, want, H, ld, NULL, a.qb + 1, 1e-6, 1e-4, "XAttention block scores");
        cudaFree(dk), cudaFree(dq), cudaFree(dout), cudaFree(dstats);
        free(k), free(q), free(q_dense), free(want), free(got);
    }
}
END_TEST

/* XAttention's block lists of a whole chunk on the device (ks_cuda_xattn_blocks: stride scores on cuBLASLt, the
 * choice on the device, then ks_cuda_xattn_pack: the offsets and packed rows built on the device) against ks_ref_xattn_block_scores and ks_xattn_select query block
 * by query block: the block scores within tolerance, the same blocks in every row. Score scratch for two query
 * blocks, so the chunks take several slabs; a first chunk, a later chunk whose keys end inside a stride column
 * (the partial column recomputed), stride 8 and 16, GQA groups 1 to 4, threshold and force_density. */
START_TEST(test_xattn_blocks) {
    const int shapes[][7] = {{8, 2, 64, 16, 0, 700, 0}, {4, 4, 128, 8, 256, 203, 30}, {6, 2, 32, 16, 128, 130, 0},
                             {8, 2, 128, 16, 384, 600, 10}}; /* H, Hk, d, stride, q_pos0, n, density % */
    const int B = 128;
    ks_cuda_gemm_t *gemm;
    CK_KS(ks_cuda_gemm_init(&gemm, (size_t)32 << 20));
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        const int H = shapes[c][0], Hk = shapes[c][1], d = shapes[c][2], S = shapes[c][3], n = shapes[c][5];
        float theta[8];
        for (int h = 0; h < H; h++) theta[h] = 0.6f + 0.05f * (float)h;
        const ks_xattn_blocks_args a = {.q_pos0 = shapes[c][4], .n = n, .block = B, .stride = S,
                                        .scale = 1.0f / (sqrtf((float)d) * (float)S), .theta = theta,
                                        .density = (float)shapes[c][6] / 100.0f};
        const int cap = a.q_pos0 + n + 9, ld_q = H * d + 2 * Hk * d, qb0 = a.q_pos0 / B;
        const int nq = (a.q_pos0 + n - 1) / B - qb0 + 1, W = qb0 + nq, nb = cap / B + 1, rows = H * nq;
        float *k = malloc(sizeof(float) * Hk * cap * d), *q = malloc(sizeof(float) * n * ld_q);
        float *q_dense = malloc(sizeof(float) * n * H * d);
        fill(k, (size_t)Hk * cap * d, -2, 2), fill(q, (size_t)n * ld_q, -2, 2);
        for (int r = 0; r < n; r++) memcpy(q_dense + (size_t)r * H * d, q + (size_t)r * ld_q, sizeof(float) * H * d);

        /* the reference, query block by query block */
        float *want = malloc(sizeof(float) * rows * nb), *scores = malloc(sizeof(float) * H * W);
        int32_t *want_cols_n = malloc(sizeof(int32_t) * rows), *want_cols = malloc(sizeof(int32_t) * rows * W);
        double *want_cov = malloc(sizeof(double) * rows);
        ks_xattn_rank *work = malloc(sizeof(ks_xattn_rank) * W);
        for (int qb = qb0; qb < W; qb++) {
            const ks_xattn_args xa = {.q_pos0 = a.q_pos0, .n = n, .qb = qb, .block = B, .stride = S, .scale = a.scale};
            ks_ref_xattn_block_scores(scores, W, q_dense, k, H, Hk, d, cap, &xa);
            for (int h = 0; h < H; h++) {
                const int r = h * nq + qb - qb0;
                memcpy(want + (size_t)r * nb, scores + (size_t)h * W, sizeof(float) * (qb + 1));
                want_cols_n[r] = ks_xattn_select(want_cols + (size_t)r * W, &want_cov[r], scores + (size_t)h * W, qb,
                                                 theta[h], a.density, work);
            }
        }

        /* the device */
        ks_cuda_xattn_work w = {.s_floats = 2 * (size_t)H * (B / S) * (cap / S + 32)}; /* two query blocks a slab */
        w.q_elems = (size_t)H * ks_cuda_xattn_slab_qblocks(w.s_floats, H, B, S, cap) * B * d;
        w.s = dev_alloc(sizeof(float) * w.s_floats), w.q = dev_alloc(2 * w.q_elems);
        w.a = dev_alloc(sizeof(float) * rows * nb), w.theta = dev_alloc(sizeof(float) * H);
        w.cols = dev_alloc(sizeof(int32_t) * rows * nb), w.count = dev_alloc(sizeof(int32_t) * rows);
        w.coverage = dev_alloc(sizeof(double) * rows);
        CK_CUDA(cudaMemcpy(w.theta, theta, sizeof(float) * H, cudaMemcpyHostToDevice));
        ks_bf16 *dk = upload(k, (size_t)Hk * cap * d), *dq = upload(q, (size_t)n * ld_q);
        CK_KS(ks_cuda_xattn_blocks(gemm, &w, dq, ld_q, dk, H, Hk, d, cap, &a, 0));
        float *got = malloc(sizeof(float) * rows * nb);
        int32_t *count = malloc(sizeof(int32_t) * rows), *start = malloc(sizeof(int32_t) * (rows + 1));
        double *cov = malloc(sizeof(double) * rows);
        CK_CUDA(cudaMemcpy(got, w.a, sizeof(float) * rows * nb, cudaMemcpyDeviceToHost));
        CK_CUDA(cudaMemcpy(count, w.count, sizeof(int32_t) * rows, cudaMemcpyDeviceToHost));
        CK_CUDA(cudaMemcpy(cov, w.coverage, sizeof(double) * rows, cudaMemcpyDeviceToHost));
        int32_t lens[512];
        for (int r = 0; r < rows; r++) lens[r] = qb0 + r % nq + 1;
        expect_close(got, want, rows, nb, lens, 0, 1e-6, 1e-4, "XAttention chunk block scores");
        int32_t *dstart = dev_alloc(sizeof(int32_t) * (rows + 1)), *dpacked = dev_alloc(sizeof(int32_t) * rows * W);
        CK_KS(ks_cuda_xattn_pack(dstart, dpacked, &w, rows, W, 0));
        CK_CUDA(cudaMemcpy(start, dstart, sizeof(int32_t) * (rows + 1), cudaMemcpyDeviceToHost));
        int32_t *packed = malloc(sizeof(int32_t) * (start[rows] + 1));
        CK_CUDA(cudaMemcpy(packed, dpacked, sizeof(int32_t) * start[rows], cudaMemcpyDeviceToHost));
        ck_assert_int_eq(start[0], 0);
        for (int r = 0; r < rows; r++) {
            ck_assert_msg(start[r + 1] - start[r] == count[r], "case %zu row %d: offsets span %d, count %d", c, r,
                          start[r + 1] - start[r], count[r]);
            ck_assert_msg(count[r] == want_cols_n[r], "case %zu row %d: %d blocks, want %d", c, r, count[r],
                          want_cols_n[r]);
            for (int i = 0; i < count[r]; i++)
                ck_assert_msg(packed[start[r] + i] == want_cols[(size_t)r * W + i], "case %zu row %d entry %d: %d, "
                              "want %d", c, r, i, packed[start[r] + i], want_cols[(size_t)r * W + i]);
            ck_assert_msg(fabs(cov[r] - want_cov[r]) <= 1e-4, "case %zu row %d: coverage %.8g, want %.8g", c, r,
                          cov[r], want_cov[r]);
        }
        cudaFree(w.s), cudaFree(w.q), cudaFree(w.a), cudaFree(w.theta), cudaFree(w.cols), cudaFree(w.count);
        cudaFree(w.coverage), cudaFree(dk), cudaFree(dq), cudaFree(dstart), cudaFree(dpacked);
        free(k), free(q), free(q_dense), free(want), free(scores), free(want_cols_n), free(want_cols), free(want_cov);
        free(work), free(got), free(count), free(start), free(cov), free(packed);
    }
    ks_cuda_gemm_free(gemm);
}
END_TEST

/* One FlexPrefill case of test_flex_blocks: H, Hk, d, B, L, and the knobs. */
typedef struct flex_case {
    int H, Hk, d, B, L;
    float gamma, tau, force_density;
    int min_budget, max_budget;
} flex_case;

/* The device's lists (built on the device, copied back here) and records of case fc against ks_flexprefill_ref's
 * (the cpu store's) on the same bf16 values: exactly the same blocks in every row, the same pattern and counts per
 * head, d_JS, sparsity and coverage within rounding (the device's estimates are the reference's to rounding: its
 * GEMM accumulates the bf16 dots in fp32 where the reference sums them in fp64, and its probabilities are fp32
 * exponentials; a choice could differ only where an estimate sits within that rounding of a threshold or tie,
 * which these random inputs do not), with the scratch's slabs bounded by slab_bytes. Returns how many heads were
 * query-aware; *djs (H, may be NULL) gets the reference's d_JS, slabs (may be NULL) the slabs of scores and of
 * ranking the device took (ks_cuda_flex_slabs). */
static int flex_case_check(ks_cuda_gemm_t *gemm, const flex_case *fc, size_t slab_bytes, float *djs, int slabs[2]) {
    const int H = fc->H, Hk = fc->Hk, d = fc->d, L = fc->L, cap = L + 37, ld_q = H * d + 2 * Hk * d;
    const ks_flexprefill_args a = {.block = fc->B, .gamma = fc->gamma, .tau = fc->tau, .min_budget = fc->min_budget,
                                   .max_budget = fc->max_budget, .force_density = fc->force_density, .H = H,
                                   .Hk = Hk, .d = d, .L = L};
    ck_assert_ptr_null(ks_flexprefill_check(&a));
    ck_assert(!ks_flexprefill_is_dense(&a));
    float *k = malloc(sizeof(float) * Hk * cap * d), *q = malloc(sizeof(float) * L * ld_q);
    float *q_dense = malloc(sizeof(float) * L * H * d);
    fill(k, (size_t)Hk * cap * d, -2, 2), fill(q, (size_t)L * ld_q, -2, 2);
    for (int r = 0; r < L; r++) memcpy(q_dense + (size_t)r * H * d, q + (size_t)r * ld_q, sizeof(float) * H * d);
    const int nb = ks_flexprefill_blocks(&a);
    const size_t n_cols = ks_flexprefill_max_cols(&a);
    ks_block_list want = {.row_start = malloc(sizeof(int32_t) * (H * nb + 1)), .cols = malloc(4 * n_cols)};
    ks_block_list got = {.row_start = malloc(sizeof(int32_t) * (H * nb + 1)), .cols = malloc(4 * n_cols)};
    ks_block_list dev = {.row_start = dev_alloc(sizeof(int32_t) * (H * nb + 1)), .cols = dev_alloc(4 * n_cols)};
    ks_flexprefill_stat *sw = malloc(sizeof *sw * H), *sg = malloc(sizeof *sg * H);
    ks_flexprefill_ref(&want, sw, q_dense, k, cap, &a);

    ks_cuda_flex_work w;
    void *block = dev_alloc(ks_cuda_flex_work_bytes(H, Hk, d, fc->B, cap, slab_bytes));
    ks_cuda_flex_work_place(&w, block, H, Hk, d, fc->B, cap, slab_bytes);
    if (slabs) ks_cuda_flex_slabs(&w, L, &slabs[0], &slabs[1]);
    ks_bf16 *dk = upload(k, (size_t)Hk * cap * d), *dq = upload(q, (size_t)L * ld_q);
    CK_KS(ks_cuda_flex_blocks(gemm, &w, dq, ld_q, dk, cap, &a, &dev, sg, 0));
    ck_assert_int_eq(dev.n_qblocks, nb);
    ck_assert_int_eq(dev.qb0, 0);
    ck_assert_int_eq(dev.resident, 1);
    CK_CUDA(cudaMemcpy(got.row_start, dev.row_start, sizeof(int32_t) * (H * nb + 1), cudaMemcpyDeviceToHost));
    CK_CUDA(cudaMemcpy(got.cols, dev.cols, sizeof(int32_t) * got.row_start[H * nb], cudaMemcpyDeviceToHost));
    int aware = 0;
    for (int h = 0; h < H; h++) {
        ck_assert_msg(sg[h].pattern == sw[h].pattern && sg[h].n_v == sw[h].n_v && sg[h].n_s == sw[h].n_s &&
                          sg[h].blocks == sw[h].blocks,
                      "L %d head %d: pattern %d n_v %d n_s %d blocks %lld, want %d %d %d %lld (d_JS %.6f, want %.6f)",
                      L, h, sg[h].pattern, sg[h].n_v, sg[h].n_s, (long long)sg[h].blocks, sw[h].pattern, sw[h].n_v,
                      sw[h].n_s, (long long)sw[h].blocks, sg[h].d_js, sw[h].d_js);
        ck_assert_msg(fabsf(sg[h].d_js - sw[h].d_js) <= 1e-4f && fabsf(sg[h].sparsity - sw[h].sparsity) <= 1e-6f &&
                          fabsf(sg[h].coverage - sw[h].coverage) <= 1e-4f,
                      "L %d head %d: d_JS %.7f sparsity %.7f coverage %.7f, want %.7f %.7f %.7f", L, h, sg[h].d_js,
                      sg[h].sparsity, sg[h].coverage, sw[h].d_js, sw[h].sparsity, sw[h].coverage);
        aware += sw[h].pattern == KS_FLEX_QUERY_AWARE;
        if (djs) djs[h] = sw[h].d_js;
    }
    for (int r = 0; r <= H * nb; r++)
        ck_assert_msg(got.row_start[r] == want.row_start[r], "L %d row %d: starts at %d, want %d", L, r,
                      got.row_start[r], want.row_start[r]);
    for (int i = 0; i < want.row_start[H * nb]; i++)
        ck_assert_msg(got.cols[i] == want.cols[i], "L %d entry %d: block %d, want %d", L, i, got.cols[i],
                      want.cols[i]);
    cudaFree(block), cudaFree(dk), cudaFree(dq), cudaFree(dev.row_start), cudaFree(dev.cols);
    free(k), free(q), free(q_dense), free(want.row_start), free(want.cols), free(got.row_start), free(got.cols);
    free(sw), free(sg);
    return aware;
}

static int cmp_float_asc(const void *pa, const void *pb) {
    float a = *(const float *)pa, b = *(const float *)pb;
    return (a > b) - (a < b);
}

/* FlexPrefill's estimation and choice on the device (ks_cuda_flex_blocks: the last block's scores on cuBLASLt,
 * the estimates, decisions, rankings and the list on the device) against ks_flexprefill_ref: tau 0 (every head
 * vertical-slash), tau above any d_JS (every head query-aware), tau between two heads' d_JS (both patterns in one
 * layer), force_density 0.3, 0.05 and 1; prompts that end mid-block (the scored rows in two query blocks) and on
 * a block edge, 141 query blocks (not a power of two), GQA groups 1 to 4, blocks of 64 and 128, gamma 1 (every
 * token counted), budgets that bind. Then cases again in the slabs a long prompt takes, forced by small slab
 * bounds: several slabs of KV groups' scores (one group each, two each with the last slab at g0 2), several slabs
 * of query-aware heads' ranking (one head each, three each with a short last one), the same lists and records. */
START_TEST(test_flex_blocks) {
    ks_cuda_gemm_t *gemm;
    CK_KS(ks_cuda_gemm_init(&gemm, (size_t)32 << 20));
    const flex_case cases[] = {
        {8, 2, 64, 64, 1000, 0.9f, 0.0f, 0, 128, 0},      {8, 2, 64, 64, 1000, 0.9f, 1e6f, 0, 128, 0},
        {4, 4, 128, 128, 1536, 0.95f, 0.0f, 0, 256, 512}, {4, 1, 128, 128, 1300, 1.0f, 1e6f, 0, 256, 0},
        {6, 2, 64, 64, 777, 0.9f, 0.1f, 0.3f, 128, 0},    {8, 2, 64, 64, 2048, 0.8f, 0.0f, 0, 64, 1024},
        {4, 2, 64, 64, 9000, 0.9f, 0.0f, 0, 128, 0},      {4, 2, 64, 64, 9000, 0.9f, 1e6f, 0, 128, 0},
        {4, 2, 64, 64, 9000, 0.9f, 0.1f, 0.05f, 128, 0},  {4, 1, 64, 64, 9000, 0.9f, 0.1f, 1.0f, 128, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int aware = flex_case_check(gemm, &cases[c], KS_CUDA_FLEX_SLAB_BYTES, NULL, NULL);
        if (cases[c].force_density == 0)
            ck_assert_int_eq(aware, cases[c].tau > 1 ? cases[c].H : 0);
    }
    /* the bounds: 1 byte (the floors: a KV group's scores, a head's ranking a slab), 7 KiB (three heads' ranking
     * at 16 query blocks, 2176 bytes each), 1600 KiB (two KV groups' scores at G 1, B 128, rows of 1600 floats) */
    const struct {
        int c;
        size_t slab_bytes;
    } forced[] = {{0, 1}, {1, 1}, {1, 7 << 10}, {2, 1}, {2, 1600 << 10}, {7, 1}, {8, 1}};
    for (size_t f = 0; f < sizeof forced / sizeof forced[0]; f++) {
        const flex_case *fc = &cases[forced[f].c];
        int slabs[2];
        const int aware = flex_case_check(gemm, fc, forced[f].slab_bytes, NULL, slabs);
        if (fc->force_density == 0)
            ck_assert_int_eq(aware, fc->tau > 1 ? fc->H : 0);
        ck_assert_msg(slabs[0] > 1 && (aware == 0 || slabs[1] > 1),
                      "case %d in %zu-byte slabs: %d of scores, %d of ranking", forced[f].c, forced[f].slab_bytes,
                      slabs[0], slabs[1]);
    }
    /* tau in the widest gap between two heads' d_JS: both patterns in one layer (the second check draws the
     * same inputs again) */
    flex_case mixed = {8, 2, 64, 64, 1100, 0.9f, 0.0f, 0, 128, 0};
    float djs[8];
    const uint64_t inputs = g_rng;
    flex_case_check(gemm, &mixed, KS_CUDA_FLEX_SLAB_BYTES, djs, NULL);
    g_rng = inputs;
    qsort(djs, 8, sizeof *djs, cmp_float_asc);
    int gap = 0;
    for (int h = 1; h < 7; h++) gap = djs[h + 1] - djs[h] > djs[gap + 1] - djs[gap] ? h : gap;
    ck_assert_msg(djs[gap + 1] - djs[gap] > 1e-3f, "no gap between the heads' d_JS to put tau in");
    mixed.tau = (djs[gap] + djs[gap + 1]) / 2;
    ck_assert_int_eq(flex_case_check(gemm, &mixed, KS_CUDA_FLEX_SLAB_BYTES, NULL, NULL), gap + 1);
    /* and in one-group, one-head slabs: the ranking's slabs hold query-aware heads and heads of the other pattern */
    int slabs[2];
    g_rng = inputs;
    ck_assert_int_eq(flex_case_check(gemm, &mixed, 1, NULL, slabs), gap + 1);
    ck_assert_int_eq(slabs[0], mixed.Hk);
    ck_assert_int_eq(slabs[1], mixed.H);
    ks_cuda_gemm_free(gemm);
}
END_TEST

START_TEST(test_key_norms_and_compact) {
    const int shapes[][3] = {{3, 64, 101}, {2, 128, 517}, {1, 16, 9}}; /* Hk, d, cap */
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int Hk = shapes[s][0], d = shapes[s][1], cap = shapes[s][2], ld = cap;
        const size_t n = (size_t)Hk * cap * d;
        float *k = malloc(sizeof(float) * n), *v = malloc(sizeof(float) * n);
        fill(k, n, -3, 3), fill(v, n, -3, 3);
        int32_t len[4], n_keep[4], *keep = malloc(sizeof(int32_t) * Hk * ld);
        int maxk = 0;
        for (int g = 0; g < Hk; g++) {
            len[g] = cap - (int)(rnd() * cap / 3);
            n_keep[g] = 0;
            for (int j = 0; j < len[g]; j++) /* a random increasing subset; head 0 keeps a leading run */
                if ((g == 0 && j < 5) || rnd() < 0.4) keep[g * ld + n_keep[g]++] = j;
            maxk = n_keep[g] > maxk ? n_keep[g] : maxk;
        }
        /* norms */
        float *want = malloc(sizeof(float) * Hk * ld), *got = malloc(sizeof(float) * Hk * ld);
        ks_ref_key_norms(want, ld, k, len, cap, Hk, d);
        ks_bf16 *dk = upload(k, n), *dv = upload(v, n);
        int32_t *dlen = dev_ints(len, Hk);
        float *dout = dev_alloc(sizeof(float) * Hk * ld);
        CK_CUDA(cudaMemset(dout, 0xff, sizeof(float) * Hk * ld));
        CK_KS(ks_cuda_key_norms(dout, ld, dk, dlen, Hk, d, cap, cap, 0));
        CK_CUDA(cudaMemcpy(got, dout, sizeof(float) * Hk * ld, cudaMemcpyDeviceToHost));
        expect_close(got, want, Hk, ld, len, 0, 1e-6, 1e-5, "key norms");
        /* compaction: the device keep lists packed to width maxk, then the counts */
        int32_t *idx = malloc(sizeof(int32_t) * (Hk * maxk + Hk));
        for (int g = 0; g < Hk; g++) memcpy(idx + g * maxk, keep + g * ld, sizeof(int32_t) * n_keep[g]);
        memcpy(idx + Hk * maxk, n_keep, sizeof(int32_t) * Hk);
        int32_t *didx = dev_ints(idx, Hk * maxk + Hk);
        ks_bf16 *scratch = dev_alloc(2 * n);
        CK_CUDA(cudaMemset(scratch, 0xff, 2 * n));
        CK_KS(ks_cuda_kv_compact(dk, dv, dlen, didx, maxk, Hk, d, cap, maxk, scratch, 0));
        ks_ref_kv_compact(k, v, keep, n_keep, ld, cap, Hk, d);
        uint16_t *hk = malloc(2 * n), *hv = malloc(2 * n);
        int32_t lens_after[4];
        CK_CUDA(cudaMemcpy(hk, dk, 2 * n, cudaMemcpyDeviceToHost));
        CK_CUDA(cudaMemcpy(hv, dv, 2 * n, cudaMemcpyDeviceToHost));
        CK_CUDA(cudaMemcpy(lens_after, dlen, sizeof(int32_t) * Hk, cudaMemcpyDeviceToHost));
        for (int g = 0; g < Hk; g++) {
            ck_assert_int_eq(lens_after[g], n_keep[g]);
            for (size_t e = (size_t)g * cap * d; e < ((size_t)g * cap + n_keep[g]) * d; e++)
                ck_assert_msg(from_bf16(hk[e]) == k[e] && from_bf16(hv[e]) == v[e],
                              "compact: head %d element %zu moved wrong", g, e);
        }
        cudaFree(dk), cudaFree(dv), cudaFree(dlen), cudaFree(dout), cudaFree(didx), cudaFree(scratch);
        free(k), free(v), free(keep), free(want), free(got), free(idx), free(hk), free(hv);
    }
}
END_TEST

/* ks_cuda_row_scores_fold against ks_row_scores_fold: odd sizes, columns before first_new added, the rest
 * written, columns past n_keys untouched. */
START_TEST(test_row_scores_fold) {
    const int Hk = 3, ld = 1003, ld_add = 1111, n_keys = 1000, first_new = 517;
    float *s = malloc(sizeof(float) * Hk * ld), *add = malloc(sizeof(float) * Hk * ld_add);
    float *got = malloc(sizeof(float) * Hk * ld);
    fill(s, (size_t)Hk * ld, -2, 2), fill(add, (size_t)Hk * ld_add, 0, 1);
    float *ds = dev_alloc(sizeof(float) * Hk * ld), *da = dev_alloc(sizeof(float) * Hk * ld_add);
    CK_CUDA(cudaMemcpy(ds, s, sizeof(float) * Hk * ld, cudaMemcpyHostToDevice));
    CK_CUDA(cudaMemcpy(da, add, sizeof(float) * Hk * ld_add, cudaMemcpyHostToDevice));
    CK_KS(ks_cuda_row_scores_fold(ds, ld, da, ld_add, Hk, first_new, n_keys, 0));
    ks_row_scores_fold(s, ld, add, ld_add, Hk, first_new, n_keys);
    CK_CUDA(cudaMemcpy(got, ds, sizeof(float) * Hk * ld, cudaMemcpyDeviceToHost));
    for (int i = 0; i < Hk * ld; i++) ck_assert_msg(got[i] == s[i], "fold: element %d is %g, want %g", i, got[i], s[i]);
    cudaFree(ds), cudaFree(da);
    free(s), free(add), free(got);
}
END_TEST

/* ks_cuda_decode_evict against ks_ref_evict_row and a host shift, every rule, G query heads per KV head (the
 * running scores and probabilities of ACCUMULATED are per query head, reduced over the group to choose): a head
 * at the budget (nothing dropped), heads one over with rows across several 32-row tiles, tied lowest values (the
 * latest goes), a NaN (lowest), protected head and tail rows; outputs poisoned. */
START_TEST(test_decode_evict) {
    const int shapes[][4] = {{4, 64, 301, 1}, {4, 128, 97, 3}, {4, 8, 40, 2}}; /* Hk, d, cap, G */
    const ks_evict_args rules[] = {
        {.rule = KS_EVICT_ACCUMULATED, .keep = 0, .head = 0, .tail = 7, .reduce = KS_GQA_MAX},
        {.rule = KS_EVICT_POOLED, .keep = 0, .head = 0, .tail = 5, .kernel = 5},
        {.rule = KS_EVICT_SINK, .keep = 0, .head = 4, .tail = 9},
        {.rule = KS_EVICT_ACCUMULATED, .keep = 0, .head = 3, .tail = 0, .reduce = KS_GQA_MEAN},
        {.rule = KS_EVICT_ACCUMULATED, .keep = 0, .head = 1, .tail = 2, .reduce = KS_GQA_SUM},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++) {
            const int Hk = shapes[s][0], d = shapes[s][1], cap = shapes[s][2], G = shapes[s][3];
            ks_evict_args a = rules[r];
            const int acc = a.rule == KS_EVICT_ACCUMULATED, pr = acc ? G : 1; /* rows of p per KV head */
            a.keep = cap - 1 - (int)(rnd() * cap / 2);
            const size_t n = (size_t)Hk * cap * d, ns = (size_t)Hk * G * cap;
            float *k = malloc(sizeof(float) * n), *v = malloc(sizeof(float) * n);
            float *p = malloc(sizeof(float) * ns), *sc = malloc(sizeof(float) * ns);
            fill(k, n, -3, 3), fill(v, n, -3, 3), fill(p, ns, 0, 1), fill(sc, ns, 0, 4);
            int32_t len[4] = {a.keep, a.keep + 1, a.keep + 1, a.keep + 1}, want[4];
            const int hi2 = len[2] - a.tail; /* head 2: the two lowest tie; head 3: a NaN (in every row of its group) */
            for (int i = 0; i < G; i++) {
                float *p2 = p + (size_t)(2 * pr + (acc ? i : 0)) * cap, *s2 = sc + (size_t)(2 * G + i) * cap;
                float *p3 = p + (size_t)(3 * pr + (acc ? i : 0)) * cap, *s3 = sc + (size_t)(3 * G + i) * cap;
                p2[a.head + 1] = p2[hi2 - 2] = 0, s2[a.head + 1] = s2[hi2 - 2] = -1;
                p3[a.head + 2] = NAN, s3[a.head + 2] = NAN;
            }
            ks_bf16 *dk = upload(k, n), *dv = upload(v, n), *aside = dev_alloc(2 * n);
            int32_t *dlen = dev_ints(len, Hk), *ddrop = dev_alloc(sizeof(int32_t) * Hk);
            float *dp = dev_alloc(sizeof(float) * ns), *ds = dev_alloc(sizeof(float) * ns);
            float *dsa = dev_alloc(sizeof(float) * ns);
            CK_CUDA(cudaMemcpy(dp, p, sizeof(float) * ns, cudaMemcpyHostToDevice));
            CK_CUDA(cudaMemcpy(ds, sc, sizeof(float) * ns, cudaMemcpyHostToDevice));
            CK_CUDA(cudaMemset(ddrop, 0x7f, sizeof(int32_t) * Hk));
            CK_CUDA(cudaMemset(aside, 0xff, 2 * n));
            CK_KS(ks_cuda_decode_evict(dk, dv, dlen, ddrop, dp, cap, ds, cap, &a, Hk, G, d, cap, cap, aside, dsa, 0));
            int32_t drop[4], lens[4];
            uint16_t *hk = malloc(2 * n), *hv = malloc(2 * n);
            float *hs = malloc(sizeof(float) * ns), *orig = malloc(sizeof(float) * ns);
            memcpy(orig, sc, sizeof(float) * ns);
            CK_CUDA(cudaMemcpy(drop, ddrop, sizeof drop, cudaMemcpyDeviceToHost));
            CK_CUDA(cudaMemcpy(lens, dlen, sizeof lens, cudaMemcpyDeviceToHost));
            CK_CUDA(cudaMemcpy(hk, dk, 2 * n, cudaMemcpyDeviceToHost));
            CK_CUDA(cudaMemcpy(hv, dv, 2 * n, cudaMemcpyDeviceToHost));
            CK_CUDA(cudaMemcpy(hs, ds, sizeof(float) * ns, cudaMemcpyDeviceToHost));
            for (int g = 0; g < Hk; g++) {
                float *sg = sc + (size_t)g * G * cap;
                want[g] = ks_ref_evict_row(&a, len[g], p + (size_t)g * pr * cap, sg, G, cap);
                ck_assert_msg(drop[g] == want[g], "rule %d (head %d, reduce %d) d %d G %d head %d: dropped %d, want %d",
                              (int)a.rule, a.head, (int)a.reduce, d, G, g, drop[g], want[g]);
                ck_assert_int_eq(lens[g], len[g] - (want[g] >= 0));
                for (int j = 0; j < lens[g]; j++) { /* row j of the result = row j or j + 1 of the input */
                    int from = want[g] >= 0 && j >= want[g] ? j + 1 : j;
                    for (int e = 0; e < d; e++) {
                        size_t at = ((size_t)g * cap + j) * d + e, src = ((size_t)g * cap + from) * d + e;
                        ck_assert_msg(from_bf16(hk[at]) == k[src] && from_bf16(hv[at]) == v[src],
                                      "rule %d d %d head %d row %d moved wrong", (int)a.rule, d, g, j);
                    }
                    for (int i = 0; i < G; i++) { /* every score row of the group: updated (the reference's) and
                                                     moved, or untouched */
                        size_t row = (size_t)(g * G + i) * cap;
                        float got = hs[row + j], exp = acc ? sc[row + from] : orig[row + j];
                        ck_assert_msg(got == exp || (isnan(got) && isnan(exp)),
                                      "rule %d head %d query head %d score %d: %g, want %g", (int)a.rule, g, i, j, got,
                                      exp);
                    }
                }
            }
            if (acc) /* pooling spreads the tie and the NaN over their neighbours */
                ck_assert_msg(want[2] == hi2 - 2 && want[3] == a.head + 2, "the tie or the NaN was not the one dropped");
            cudaFree(dk), cudaFree(dv), cudaFree(aside), cudaFree(dlen), cudaFree(ddrop), cudaFree(dp), cudaFree(ds);
            cudaFree(dsa);
            free(k), free(v), free(p), free(sc), free(hk), free(hv), free(hs), free(orig);
        }
}
END_TEST

/* ks_cuda_v_merge on check_methods' hand-built case (test_v_merge_op; every value bf16-exact): head 0 (6 rows,
 * d 8, V[j] = (j, j + 10, ...)) merges row 1 (weight 0.5) then row 2 (0.25) over span 3, head 1 (3 rows) row 0
 * (weight 1) into rows 1 and 2; row 3 of head 1, past its length, keeps its sentinel. Then random lists on random
 * values against ks_ref_v_merge (bf16 storage: each row rounds once). */
START_TEST(test_v_merge) {
    enum { HK = 2, D = 8, CAP = 8 };
    float v[HK * CAP * D];
    for (int h = 0; h < HK; h++)
        for (int j = 0; j < CAP; j++)
            for (int k = 0; k < D; k++) v[(h * CAP + j) * D + k] = j + 10.0f * (k & 1);
    v[(CAP + 3) * D] = 99;
    ks_merge list[HK * CAP] = {{1, 0.5f}, {2, 0.25f}};
    list[CAP] = (ks_merge){0, 1.0f};
    int32_t counts[HK] = {2, 1}, len[HK] = {6, 3};
    float want[HK * CAP * D];
    memcpy(want, v, sizeof v);
    ks_merge_norms ref = {0, 0};
    ks_ref_v_merge(want, list, counts, CAP, 3, len, CAP, HK, D, &ref);
    ck_assert(want[5 * D + 1] == 19.375f && want[(CAP + 2) * D + 1] == 22); /* the hand values (check_methods) */
    ks_bf16 *dv = upload(v, sizeof v / sizeof v[0]);
    ks_merge *dlist = dev_alloc(sizeof list);
    int32_t *dcount = dev_ints(counts, HK), *dlen = dev_ints(len, HK);
    double *dnorms = dev_alloc(2 * sizeof(double)), norms[2];
    CK_CUDA(cudaMemcpy(dlist, list, sizeof list, cudaMemcpyHostToDevice));
    CK_CUDA(cudaMemset(dnorms, 0, 2 * sizeof(double)));
    CK_KS(ks_cuda_v_merge(dv, dlist, dcount, CAP, 3, dlen, HK, D, CAP, dnorms, 0));
    uint16_t got[HK * CAP * D];
    CK_CUDA(cudaMemcpy(got, dv, sizeof got, cudaMemcpyDeviceToHost));
    CK_CUDA(cudaMemcpy(norms, dnorms, sizeof norms, cudaMemcpyDeviceToHost));
    for (int e = 0; e < HK * CAP * D; e++)
        ck_assert_msg(from_bf16(got[e]) == want[e], "v_merge: element %d is %g, want %g", e, from_bf16(got[e]),
                      want[e]);
    ck_assert_msg(norms[0] == ref.v_sq && norms[1] == ref.dv_sq, "v_merge norms %g %g, want %g %g", norms[0],
                  norms[1], ref.v_sq, ref.dv_sq);
    cudaFree(dv), cudaFree(dlist), cudaFree(dcount), cudaFree(dlen), cudaFree(dnorms);

    const int shapes[][4] = {{3, 64, 301, 32}, {2, 128, 517, 5}, {1, 16, 9, 1}}; /* Hk, d, cap, span */
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int Hk = shapes[s][0], d = shapes[s][1], cap = shapes[s][2], span = shapes[s][3];
        const size_t n = (size_t)Hk * cap * d;
        float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
        fill(x, n, -3, 3);
        ks_merge *l = malloc(sizeof(ks_merge) * Hk * cap);
        int32_t cnt[4], lens[4];
        for (int g = 0; g < Hk; g++) {
            lens[g] = cap - (int)(rnd() * cap / 3);
            cnt[g] = 0;
            for (int j = 0; j < lens[g]; j++)
                if (rnd() < 0.5) /* weights of at most 1 / span: the values stay of the inputs' size */
                    l[g * cap + cnt[g]++] = (ks_merge){j, from_bf16(to_bf16((float)(rnd() / span)))};
        }
        memcpy(y, x, sizeof(float) * n);
        ks_merge_norms r = {0, 0};
        ks_ref_v_merge(y, l, cnt, cap, span, lens, cap, Hk, d, &r);
        ks_bf16 *dx = upload(x, n);
        ks_merge *dl = dev_alloc(sizeof(ks_merge) * Hk * cap);
        int32_t *dc = dev_ints(cnt, Hk), *dn = dev_ints(lens, Hk);
        double *dnr = dev_alloc(2 * sizeof(double)), nr[2];
        CK_CUDA(cudaMemcpy(dl, l, sizeof(ks_merge) * Hk * cap, cudaMemcpyHostToDevice));
        CK_CUDA(cudaMemset(dnr, 0, 2 * sizeof(double)));
        CK_KS(ks_cuda_v_merge(dx, dl, dc, cap, span, dn, Hk, d, cap, s ? NULL : dnr, 0));
        uint16_t *h = malloc(2 * n);
        CK_CUDA(cudaMemcpy(h, dx, 2 * n, cudaMemcpyDeviceToHost));
        CK_CUDA(cudaMemcpy(nr, dnr, sizeof nr, cudaMemcpyDeviceToHost));
        for (int g = 0; g < Hk; g++)
            for (size_t e = (size_t)g * cap * d; e < ((size_t)g * cap + lens[g]) * d; e++) {
                float a = from_bf16(h[e]), b = y[e];
                ck_assert_msg(fabsf(a - b) <= 0.02f * (1 + fabsf(b)), "v_merge shape %zu: head %d element %zu is %g, "
                              "the reference's %g", s, g, e, a, b);
            }
        if (!s)
            ck_assert_msg(fabs(nr[0] - r.v_sq) <= 1e-6 * r.v_sq && fabs(nr[1] - r.dv_sq) <= 0.02 * r.dv_sq,
                          "v_merge norms %g %g, the reference's %g %g", nr[0], nr[1], r.v_sq, r.dv_sq);
        cudaFree(dx), cudaFree(dl), cudaFree(dc), cudaFree(dn), cudaFree(dnr);
        free(x), free(y), free(l), free(h);
    }
}
END_TEST

/* ---- kept sets: the cpu KV store and its cuda-kernel twin ----------------------------------------------- */

/* The host holds the canonical Q and cache (fp32 storage of bf16 values) of a cpu KV store (kvstore_cpu.h, scale
 * 1). The "ref" twin is that store; the "cuda" twin is the same store with the scoring, compaction and eviction
 * ops replaced by ones that copy what the op reads to the device, run the kernels and copy back what they wrote
 * (scores, or the compacted rows and lengths); its per-row scores stay the store's host ones. */
typedef struct twin_store {
    ks_kvstore_cpu s; /* first: the ops find the twin from its ks_kvstore */
    int H, Hk, d;
    float *q;         /* (cap, H, d) */
    ks_kvcache cache; /* host fp32 */
    /* cuda twin, device: */
    ks_bf16 *dq, *dk, *dv, *scratch; /* (cap, H, d), (Hk, cap, d) x 3 */
    int32_t *dlen, *didx;            /* (Hk), (Hk * cap + Hk) */
    float *dout, *dlse;              /* (H, cap), (H * 2 cap) */
    double *dsum;
    int32_t *idx;                    /* host packing of the keep lists */
    float *p;                        /* host (H, cap) decode probabilities */
    float *dscores, *dscores_aside;  /* (H, cap) x 2 */
    int32_t *ddrop;                  /* (Hk) */
    ks_merge *dmerge;                /* (Hk * cap) merge lists, then Hk int32 counts */
} twin_store;

static twin_store *twin_of(ks_kvstore *kv) { return (twin_store *)kv; }

static void put_layer(twin_store *b, int layer, int with_v) {
    const ks_kvcache *c = &b->cache;
    size_t n = (size_t)b->Hk * c->cap * b->d;
    ks_bf16 *t = upload(ks_kvcache_k(c, layer), n);
    CK_CUDA(cudaMemcpy(b->dk, t, 2 * n, cudaMemcpyDeviceToDevice));
    cudaFree(t);
    if (with_v) {
        t = upload(ks_kvcache_v(c, layer), n);
        CK_CUDA(cudaMemcpy(b->dv, t, 2 * n, cudaMemcpyDeviceToDevice));
        cudaFree(t);
    }
    CK_CUDA(cudaMemcpy(b->dlen, ks_kvcache_len(c, layer), sizeof(int32_t) * b->Hk, cudaMemcpyHostToDevice));
}

static void put_q(twin_store *b, int rows) {
    ks_bf16 *t = upload(b->q, (size_t)rows * b->H * b->d);
    CK_CUDA(cudaMemcpy(b->dq, t, 2 * (size_t)rows * b->H * b->d, cudaMemcpyDeviceToDevice));
    cudaFree(t);
}

static void run_scores(twin_store *b, ks_cuda_score_args *a, float *out, int ld, const int32_t *cols, int acc,
                       ks_window_summary *sum) {
    const int cap = b->cache.cap;
    a->kc = b->dk, a->H = b->H, a->Hk = b->Hk, a->d = b->d, a->cap = cap, a->scale = 1.0f;
    CK_CUDA(cudaMemset(b->dsum, 0, 2 * sizeof(double)));
    CK_KS(ks_cuda_scores(b->dout, cap, sum ? b->dsum : NULL, a, b->dlse, (size_t)b->H * 2 * cap, 0));
    const int G = a->reduce == KS_GQA_NONE ? b->H / b->Hk : 1, rows = b->Hk * G; /* out rows per KV head, all */
    float *h = malloc(sizeof(float) * rows * cap);
    CK_CUDA(cudaMemcpy(h, b->dout, sizeof(float) * rows * cap, cudaMemcpyDeviceToHost));
    for (int g = 0; g < rows; g++)
        for (int j = 0; j < (cols ? cols[g / G] : a->n_keys); j++)
            out[(size_t)g * ld + j] = (acc ? out[(size_t)g * ld + j] : 0) + h[(size_t)g * cap + j];
    free(h);
    if (sum) {
        double s[2];
        CK_CUDA(cudaMemcpy(s, b->dsum, sizeof s, cudaMemcpyDeviceToHost));
        *sum = (ks_window_summary){s[0], s[1]};
    }
}

static ks_status tw_window_scores(ks_kvstore *kv, int layer, const ks_window_args *a, float *out, int ld,
                                  ks_window_summary *sum) {
    twin_store *b = twin_of(kv);
    ck_assert(ks_kvcache_is_dense(&b->cache, layer, a->n_keys));
    put_q(b, a->q_row0 + a->n_q);
    put_layer(b, layer, 0);
    ks_cuda_score_args c = {.q = b->dq + (size_t)a->q_row0 * b->H * b->d, .ld_q = (int64_t)b->H * b->d,
                            .n_q = a->n_q, .q_pos = a->q_pos0 + a->q_row0, .n_keys = a->n_keys,
                            .softmax_chunk = a->softmax_chunk, .stat = a->stat, .gamma = a->gamma, .reduce = a->reduce};
    run_scores(b, &c, out, ld, NULL, a->accumulate, a->stat == KS_SCORE_MEAN_VAR ? sum : NULL);
    if (sum && a->stat != KS_SCORE_MEAN_VAR) *sum = (ks_window_summary){0, 0};
    return KS_OK;
}

static ks_status tw_decode_probs(ks_kvstore *kv, int layer, int qpos, ks_gqa_reduce reduce, float *out, int ld) {
    twin_store *b = twin_of(kv);
    const int32_t *len = ks_kvcache_len(&b->cache, layer);
    put_q(b, 1);
    put_layer(b, layer, 0);
    int n = 0;
    for (int g = 0; g < b->Hk; g++) n = len[g] > n ? len[g] : n;
    ks_cuda_score_args c = {.q = b->dq, .ld_q = (int64_t)b->H * b->d, .hi = b->dlen, .n_q = 1, .q_pos = qpos,
                            .n_keys = n, .stat = KS_SCORE_SUM, .reduce = reduce};
    run_scores(b, &c, out, ld, len, 0, NULL);
    return KS_OK;
}

static ks_status tw_key_norms(ks_kvstore *kv, int layer, float *out, int ld) {
    twin_store *b = twin_of(kv);
    const ks_kvcache *c = &b->cache;
    const int32_t *len = ks_kvcache_len(c, layer);
    put_layer(b, layer, 0);
    CK_KS(ks_cuda_key_norms(b->dout, c->cap, b->dk, b->dlen, b->Hk, b->d, c->cap, c->cap, 0));
    float *h = malloc(sizeof(float) * b->Hk * c->cap);
    CK_CUDA(cudaMemcpy(h, b->dout, sizeof(float) * b->Hk * c->cap, cudaMemcpyDeviceToHost));
    for (int g = 0; g < b->Hk; g++) memcpy(out + (size_t)g * ld, h + (size_t)g * c->cap, sizeof(float) * len[g]);
    free(h);
    return KS_OK;
}

static ks_status tw_kv_compact(ks_kvstore *kv, int layer, const int32_t *keep, const int32_t *n_keep, int ld) {
    twin_store *b = twin_of(kv);
    ks_kvcache *c = &b->cache;
    put_layer(b, layer, 1);
    ks_kvcache_compact(c, layer, keep, n_keep, ld);
    int w = 0;
    for (int g = 0; g < b->Hk; g++) w = n_keep[g] > w ? n_keep[g] : w;
    for (int g = 0; g < b->Hk; g++) memcpy(b->idx + (size_t)g * w, keep + (size_t)g * ld, sizeof(int32_t) * n_keep[g]);
    memcpy(b->idx + (size_t)b->Hk * w, n_keep, sizeof(int32_t) * b->Hk);
    CK_CUDA(cudaMemcpy(b->didx, b->idx, sizeof(int32_t) * (b->Hk * w + b->Hk), cudaMemcpyHostToDevice));
    CK_KS(ks_cuda_kv_compact(b->dk, b->dv, b->dlen, b->didx, w ? w : 1, b->Hk, b->d, c->cap, w, b->scratch, 0));
    /* the device's rows and lengths become the host's */
    size_t n = (size_t)b->Hk * c->cap * b->d;
    uint16_t *h = malloc(2 * n);
    float *dst[2] = {ks_kvcache_k(c, layer), ks_kvcache_v(c, layer)};
    const ks_bf16 *src[2] = {b->dk, b->dv};
    for (int t = 0; t < 2; t++) {
        CK_CUDA(cudaMemcpy(h, src[t], 2 * n, cudaMemcpyDeviceToHost));
        for (size_t e = 0; e < n; e++) dst[t][e] = from_bf16(h[e]);
    }
    int32_t lens[16];
    CK_CUDA(cudaMemcpy(lens, b->dlen, sizeof(int32_t) * b->Hk, cudaMemcpyDeviceToHost));
    for (int g = 0; g < b->Hk; g++) ck_assert_int_eq(lens[g], ks_kvcache_len(c, layer)[g]);
    free(h);
    return KS_OK;
}

static ks_status tw_v_merge(ks_kvstore *kv, int layer, const ks_merge *list, const int32_t *n, int ld, int span,
                            ks_merge_norms *norms) {
    twin_store *b = twin_of(kv);
    ks_kvcache *c = &b->cache;
    put_layer(b, layer, 1);
    int w = 0;
    for (int g = 0; g < b->Hk; g++) w = n[g] > w ? n[g] : w;
    ks_merge *packed = malloc(sizeof(ks_merge) * b->Hk * (w ? w : 1) + sizeof(int32_t) * b->Hk);
    for (int g = 0; g < b->Hk; g++) memcpy(packed + (size_t)g * w, list + (size_t)g * ld, sizeof(ks_merge) * n[g]);
    memcpy(packed + (size_t)b->Hk * w, n, sizeof(int32_t) * b->Hk);
    CK_CUDA(cudaMemcpy(b->dmerge, packed, sizeof(ks_merge) * b->Hk * w + sizeof(int32_t) * b->Hk,
                       cudaMemcpyHostToDevice));
    free(packed);
    CK_CUDA(cudaMemset(b->dsum, 0, 2 * sizeof(double)));
    CK_KS(ks_cuda_v_merge(b->dv, b->dmerge, (const int32_t *)(b->dmerge + (size_t)b->Hk * w), w ? w : 1, span,
                          b->dlen, b->Hk, b->d, c->cap, norms ? b->dsum : NULL, 0));
    size_t e = (size_t)b->Hk * c->cap * b->d; /* the device's values become the host's */
    uint16_t *h = malloc(2 * e);
    CK_CUDA(cudaMemcpy(h, b->dv, 2 * e, cudaMemcpyDeviceToHost));
    float *v = ks_kvcache_v(c, layer);
    for (size_t i = 0; i < e; i++) v[i] = from_bf16(h[i]);
    free(h);
    if (norms) {
        double s[2];
        CK_CUDA(cudaMemcpy(s, b->dsum, sizeof s, cudaMemcpyDeviceToHost));
        *norms = (ks_merge_norms){s[0], s[1]};
    }
    return KS_OK;
}

/* The layer's host per-row scores, (H, cap): one row per query head (the store's, reserved at bind). */
static float *tw_row_scores(twin_store *b, int layer) {
    return b->s.row_scores + (size_t)ks_kvcache_index(&b->cache, layer) * b->H * b->cache.cap;
}

/* The kernels' window_scores per query head folded into the host per-row scores. */
static ks_status tw_row_scores_add(ks_kvstore *kv, int layer, const ks_window_args *a) {
    twin_store *b = twin_of(kv);
    ks_window_args w = ks_window_scores_only(a);
    CK_KS(tw_window_scores(kv, layer, &w, b->p, b->cache.cap, NULL));
    ks_row_scores_fold(tw_row_scores(b, layer), b->cache.cap, b->p, b->cache.cap, b->H, a->q_pos0, a->n_keys);
    return KS_OK;
}

/* ks_cuda_decode_evict on device copies of the layer, its probabilities and scores; the host then drops the rows
 * the device chose (ks_kvcache_drop_row) and the device's rows, lengths and scores must equal the host's. */
static ks_status tw_decode_evict(ks_kvstore *kv, int layer, int qpos, const ks_evict_args *a) {
    twin_store *b = twin_of(kv);
    ks_kvcache *c = &b->cache;
    const int cap = c->cap, Hk = b->Hk, G = b->H / b->Hk, acc = a->rule == KS_EVICT_ACCUMULATED;
    float *sc = acc ? tw_row_scores(b, layer) : NULL;
    if (a->rule != KS_EVICT_SINK) /* ACCUMULATED: per query head (kvstore.h); in dout */
        CK_KS(tw_decode_probs(kv, layer, qpos, acc ? KS_GQA_NONE : a->reduce, b->p, cap));
    put_layer(b, layer, 1);
    if (acc) CK_CUDA(cudaMemcpy(b->dscores, sc, sizeof(float) * b->H * cap, cudaMemcpyHostToDevice));
    CK_CUDA(cudaMemset(b->ddrop, 0x7f, sizeof(int32_t) * Hk)); /* poisoned */
    CK_KS(ks_cuda_decode_evict(b->dk, b->dv, b->dlen, b->ddrop, b->dout, cap, acc ? b->dscores : NULL, cap, a, Hk,
                               G, b->d, cap, cap, b->scratch, b->dscores_aside, 0));
    int32_t drop[16], lens[16];
    CK_CUDA(cudaMemcpy(drop, b->ddrop, sizeof(int32_t) * Hk, cudaMemcpyDeviceToHost));
    CK_CUDA(cudaMemcpy(lens, b->dlen, sizeof(int32_t) * Hk, cudaMemcpyDeviceToHost));
    float *got_s = malloc(sizeof(float) * b->H * cap);
    if (acc) CK_CUDA(cudaMemcpy(got_s, b->dscores, sizeof(float) * b->H * cap, cudaMemcpyDeviceToHost));
    for (int h = 0; h < Hk; h++) {
        int len = ks_kvcache_len(c, layer)[h];
        ck_assert_msg(drop[h] >= -1 && drop[h] < len, "decode_evict: head %d dropped row %d of %d", h, drop[h], len);
        for (int i = 0; acc && i < G; i++) { /* the host's own update of each query head's row, as the reference */
            float *s = sc + (size_t)(h * G + i) * cap;
            s[len - 1] = 0;
            for (int j = 0; j < len; j++) s[j] += b->p[(size_t)(h * G + i) * cap + j];
            if (drop[h] >= 0) memmove(s + drop[h], s + drop[h] + 1, sizeof(float) * (len - drop[h] - 1));
        }
        if (drop[h] >= 0) ks_kvcache_drop_row(c, layer, h, drop[h]);
        ck_assert_int_eq(lens[h], ks_kvcache_len(c, layer)[h]);
        for (int i = 0; acc && i < G; i++)
            for (int j = 0; j < lens[h]; j++) {
                size_t at = (size_t)(h * G + i) * cap + j;
                ck_assert_msg(got_s[at] == sc[at], "decode_evict: head %d query head %d score %d is %g, want %g", h, i,
                              j, got_s[at], sc[at]);
            }
    }
    free(got_s);
    size_t n = (size_t)Hk * cap * b->d;
    uint16_t *hk = malloc(2 * n);
    const ks_bf16 *src[2] = {b->dk, b->dv};
    const float *want[2] = {ks_kvcache_k(c, layer), ks_kvcache_v(c, layer)};
    for (int t = 0; t < 2; t++) {
        CK_CUDA(cudaMemcpy(hk, src[t], 2 * n, cudaMemcpyDeviceToHost));
        for (int h = 0; h < Hk; h++)
            for (size_t e = (size_t)h * cap * b->d; e < ((size_t)h * cap + lens[h]) * b->d; e++)
                ck_assert_msg(from_bf16(hk[e]) == want[t][e], "decode_evict: head %d element %zu moved wrong", h, e);
    }
    free(hk);
    return KS_OK;
}

static ks_kvstore_ops tw_ops; /* ks_kvstore_cpu_ops with the kernels' ops (twin_init) */

typedef struct twin {
    twin_store be;
    ks_model model;
    ks_method *m;
} twin;

static void twin_init(twin *t, int cuda, int n_layers, int H, int Hk, int d, int cap) {
    memset(t, 0, sizeof *t);
    twin_store *b = &t->be;
    b->H = H, b->Hk = Hk, b->d = d;
    b->q = calloc((size_t)cap * H * d, sizeof(float));
    CK_KS(ks_kvcache_init(&b->cache, 0, n_layers, Hk, d, cap, cap, 1));
    ks_kvstore_cpu_params p = {.cache = &b->cache, .q = b->q, .n_heads = H, .max_chunk = cap, .scale = 1.0f};
    CK_KS(ks_kvstore_cpu_init(&b->s, &p));
    b->p = calloc((size_t)H * cap, sizeof(float));
    tw_ops = ks_kvstore_cpu_ops;
    tw_ops.window_scores = tw_window_scores, tw_ops.attention_decode_probs = tw_decode_probs;
    tw_ops.key_norms = tw_key_norms, tw_ops.kv_compact = tw_kv_compact, tw_ops.decode_evict = tw_decode_evict;
    tw_ops.row_scores_add = tw_row_scores_add, tw_ops.v_merge = tw_v_merge;
    if (cuda) {
        b->s.base.ops = &tw_ops;
        b->dscores = dev_alloc(sizeof(float) * H * cap), b->dscores_aside = dev_alloc(sizeof(float) * H * cap);
        b->ddrop = dev_alloc(sizeof(int32_t) * Hk);
        b->dq = dev_alloc(2 * (size_t)cap * H * d);
        b->dk = dev_alloc(2 * (size_t)Hk * cap * d), b->dv = dev_alloc(2 * (size_t)Hk * cap * d);
        b->scratch = dev_alloc(2 * (size_t)Hk * cap * d);
        b->dlen = dev_alloc(sizeof(int32_t) * Hk), b->didx = dev_alloc(sizeof(int32_t) * (Hk * cap + Hk));
        b->dout = dev_alloc(sizeof(float) * H * cap), b->dlse = dev_alloc(sizeof(float) * H * 2 * cap);
        b->dsum = dev_alloc(2 * sizeof(double));
        b->idx = malloc(sizeof(int32_t) * (Hk * cap + Hk));
        b->dmerge = dev_alloc(sizeof(ks_merge) * Hk * cap + sizeof(int32_t) * Hk);
    }
    t->model.cfg.n_layers = n_layers, t->model.cfg.n_heads = H, t->model.cfg.n_kv_heads = Hk;
    t->model.cfg.head_dim = d;
    t->model.first_layer = 0, t->model.last_layer = n_layers;
    t->model.source = "twin model";
}

static void twin_free(twin *t) {
    twin_store *b = &t->be;
    ks_method_free(t->m);
    ks_kvstore_cpu_free(&b->s);
    free(b->q), free(b->idx), free(b->p);
    cudaFree(b->dscores), cudaFree(b->dscores_aside), cudaFree(b->ddrop);
    cudaFree(b->dq), cudaFree(b->dk), cudaFree(b->dv), cudaFree(b->scratch), cudaFree(b->dlen), cudaFree(b->didx);
    cudaFree(b->dout), cudaFree(b->dlse), cudaFree(b->dsum), cudaFree(b->dmerge);
    ks_kvcache_free(&b->cache);
}

/* Row at the end of every head of layer l: keys from k (Hk, d), values = the position. */
static void twin_push(twin *t, int l, const float *k) {
    ks_kvcache *c = &t->be.cache;
    int32_t *len = ks_kvcache_len(c, l);
    for (int h = 0; h < t->be.Hk; h++) {
        int row = len[h], pos = row ? ks_kvcache_pos(c, l, h)[row - 1] + 1 : 0;
        float *K = ks_kvcache_k(c, l) + ((size_t)h * c->cap + row) * c->head_dim;
        float *V = ks_kvcache_v(c, l) + ((size_t)h * c->cap + row) * c->head_dim;
        for (int i = 0; i < c->head_dim; i++) K[i] = k[h * c->head_dim + i], V[i] = (float)pos;
        ks_kvcache_pos(c, l, h)[row] = pos;
        len[h]++;
    }
}

typedef struct set_case {
    const char *method;
    const char *opts[5];
    int decode_steps;
    int chunk; /* 0: both twins prefill in chunks 64 64 22; > 0: the cuda twin in chunks of this size (the last
                  one holding the method's window, as ks_forward_chunk_len plans them), the reference twin the
                  whole prompt in one */
} set_case;

/* One method on both twins over the same random prompt (keys, then queries, in chunks) and decode steps; the
 * kept positions of every (layer, head) must agree. Keys carry a per-token "importance" in component 0 (a
 * wide spread of logits) over small noise, so top-k boundaries are far from ties; the queries of each query
 * head weigh a second component differently, so the heads of a group rank keys differently and the GQA
 * reductions differ. */
static void check_sets(const set_case *sc) {
    enum { LAYERS = 3, H = 4, HK = 2, D = 64, L = 150, CAP = 200 };
    int chunks[2][L + 1] = {{64, 64, 22, 0}, {64, 64, 22, 0}}; /* ref twin, cuda twin */
    twin tw[2];
    float *keys = malloc(sizeof(float) * LAYERS * CAP * HK * D), *qs = malloc(sizeof(float) * CAP * H * D);
    fill(keys, (size_t)LAYERS * CAP * HK * D, -0.3f, 0.3f);
    fill(qs, (size_t)CAP * H * D, -0.3f, 0.3f);
    for (size_t r = 0; r < (size_t)LAYERS * CAP * HK; r++) keys[r * D] = from_bf16(to_bf16((float)(8 * rnd() - 4)));
    for (size_t r = 0; r < (size_t)CAP * H; r++) qs[r * D] = from_bf16(to_bf16((float)(1 + rnd())));
    for (size_t r = 0; r < (size_t)CAP * H; r++) qs[r * D + 1] = from_bf16(to_bf16((float)(4 * rnd() - 2)));
    int n_opts = 0;
    while (sc->opts[n_opts]) n_opts++;
    for (int c = 0; c < 2; c++) {
        twin *t = &tw[c];
        twin_init(t, c, LAYERS, H, HK, D, CAP);
        CK_KS(ks_method_create(&t->m, sc->method, NULL, sc->opts, n_opts));
        CK_KS(ks_method_bind_store(t->m, &t->be.s.base, &t->be.cache, &t->model));
        if (sc->chunk) ks_test_plan_chunks(chunks[c], L, c ? sc->chunk : L, ks_method_window(t->m));
        int pos0 = 0;
        for (int k = 0; chunks[c][k]; pos0 += chunks[c][k++]) {
            int n = chunks[c][k], last = pos0 + n == L;
            for (int l = 0; l < LAYERS; l++)
                for (int j = pos0; j < pos0 + n; j++) twin_push(t, l, keys + ((size_t)l * CAP + j) * HK * D);
            memcpy(t->be.q, qs + (size_t)pos0 * H * D, sizeof(float) * n * H * D);
            if (last) ks_method_begin_prompt(t->m, L);
            for (int l = 0; l < LAYERS; l++) CK_KS(ks_method_prefill_layer(t->m, l, pos0, n, last));
        }
        CK_KS(ks_method_end_prompt(t->m));
        for (int s = 0; s < sc->decode_steps; s++)
            for (int l = 0; l < LAYERS; l++) {
                twin_push(t, l, keys + ((size_t)l * CAP + L + s) * HK * D);
                memcpy(t->be.q, qs + (size_t)(L + s) * H * D, sizeof(float) * H * D);
                CK_KS(ks_method_decode_layer(t->m, l, L + s));
            }
    }
    const ks_kvcache *a = &tw[0].be.cache, *b = &tw[1].be.cache;
    int compressed = 0;
    for (int l = 0; l < LAYERS; l++)
        for (int h = 0; h < HK; h++) {
            int n = ks_kvcache_len(a, l)[h];
            compressed |= n < L + sc->decode_steps;
            ck_assert_msg(ks_kvcache_len(b, l)[h] == n,
                          "%s %s %s, chunk %d: layer %d head %d keeps %d rows on CUDA, %d on CPU", sc->method,
                          sc->opts[0], n_opts > 2 ? sc->opts[2] : "", sc->chunk, l, h, ks_kvcache_len(b, l)[h], n);
            for (int i = 0; i < n; i++) {
                int p = ks_kvcache_pos(a, l, h)[i];
                ck_assert_msg(ks_kvcache_pos(b, l, h)[i] == p,
                              "%s %s %s, chunk %d: layer %d head %d row %d: position %d on CUDA, %d on CPU",
                              sc->method, sc->opts[0], n_opts > 2 ? sc->opts[2] : "", sc->chunk, l, h, i,
                              ks_kvcache_pos(b, l, h)[i], p);
                ck_assert_msg(ks_kvcache_v(b, l)[((size_t)h * CAP + i) * D] == (float)p,
                              "%s: row %d's value did not move with position %d on CUDA", sc->method, i, p);
            }
        }
    ck_assert_msg(compressed, "%s: nothing was evicted, the case tests nothing", sc->method);
    twin_free(&tw[0]), twin_free(&tw[1]);
    free(keys), free(qs);
}

/* Every method on both twins; then with the cuda twin's prompt in chunks of 7, 64 and 100 against the
 * reference twin's one chunk: the rows kept do not depend on the prefill chunks, under each gqa_reduce (H2O's
 * running scores summed per query head and reduced only to choose). */
START_TEST(test_kept_sets) {
    const set_case cases[] = {
        {"SnapKV", {"max_capacity_prompt=40", "window_size=8", "kernel_size=5"}, 3, 0},
        {"SnapKV", {"max_capacity_prompt=0.3", "window_size=16", "kernel_size=7", "pooling=maxpool"}, 0, 0},
        {"PyramidKV", {"max_capacity_prompt=48", "window_size=8"}, 2, 0},
        {"H2O", {"heavy_budget=20", "recent_budget=10"}, 4, 0},
        {"H2O", {"heavy_budget=20", "recent_budget=10", "gqa_reduce=max"}, 4, 0},
        {"H2O", {"heavy_budget=20", "recent_budget=10", "gqa_reduce=sum"}, 4, 0},
        {"H2O", {"heavy_budget=20", "recent_budget=10", "score_window=16"}, 4, 0},
        {"H2O", {"heavy_budget=20", "recent_budget=10", "score_window=16", "gqa_reduce=max"}, 4, 0},
        {"H2O", {"variant=loom", "max_capacity_prompt=40", "window_size=8", "score_chunk=32"}, 0, 0},
        {"StreamingLLM", {"start_size=4", "recent_size=20"}, 5, 0},
        {"L2Compress", {"variant=loom", "max_capacity_prompt=40", "skip_layers=[]"}, 0, 0},
        {"CakeKV", {"cache_size=40", "window_size=8"}, 4, 0},
        {"CakeKV", {"cache_size=40", "window_size=8", "gqa_reduce=max"}, 4, 0},
    };
    const int sizes[] = {7, 64, 100};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_sets(&cases[i]);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            set_case chunked = cases[i];
            chunked.chunk = sizes[s];
            check_sets(&chunked);
        }
    }
}
END_TEST

/* CaM on the cuda twin (scores, merges and compaction on the kernels), check_methods' hand-built prompt end
 * (test_cam_prompt_merges) with d = 8 (component 0 of the keys the logit): C = 5, S = 1, W = 2, L = 8; head 0's
 * row 1 and row 3 merge (row 3 after row 1 added to it), row 2 and head 1's rows draw next to no attention. Every
 * value is bf16-exact. */
START_TEST(test_cam_twin) {
    enum { L = 8, D = 8, CAP = 16 };
    twin t;
    twin_init(&t, 1, 1, 2, 2, D, CAP);
    const char *opts[] = {"max_capacity_prompt=5", "start_ratio=0.2", "window_size=2"};
    CK_KS(ks_method_create(&t.m, "CaM", NULL, opts, 3));
    CK_KS(ks_method_bind_store(t.m, &t.be.s.base, &t.be.cache, &t.model));
    const float logits[2][L] = {{0, 2, -1000, 2, 0, 0, 0, 0}, {0, -1000, -1000, -1000, 0, 0, 0, 0}};
    for (int j = 0; j < L; j++) {
        float k[2 * D] = {0};
        k[0] = logits[0][j], k[D] = logits[1][j];
        twin_push(&t, 0, k);
    }
    for (int r = 0; r < L * 2 * D; r++) t.be.q[r] = (r % D) == 0;
    ks_method_begin_prompt(t.m, L);
    CK_KS(ks_method_prefill_layer(t.m, 0, 0, L, 1));
    CK_KS(ks_method_end_prompt(t.m));
    const int pos[5] = {0, 4, 5, 6, 7};
    const float want[2][5] = {{0, 5.75f, 6.75f, 6, 7}, {0, 4, 5, 6, 7}};
    const ks_kvcache *c = &t.be.cache;
    for (int h = 0; h < 2; h++) {
        ck_assert_int_eq(ks_kvcache_len(c, 0)[h], 5);
        for (int i = 0; i < 5; i++)
            for (int k = 0; k < D; k++) {
                float v = ks_kvcache_v(c, 0)[((size_t)h * CAP + i) * D + k];
                ck_assert_msg(ks_kvcache_pos(c, 0, h)[i] == pos[i] && v == want[h][i],
                              "CaM on cuda: head %d row %d: position %d value %g, want %d %g", h, i,
                              ks_kvcache_pos(c, 0, h)[i], v, pos[i], want[h][i]);
            }
    }
    ks_layer_stat st;
    ks_method_layer_stats(t.m, &st);
    ck_assert_msg(st.merges_prompt == 2 && fabsf(st.merge_dv_rel - sqrtf(6.625f / 280)) < 1e-6f,
                  "CaM on cuda: %d merges, dV %g", st.merges_prompt, st.merge_dv_rel);
    twin_free(&t);
}
END_TEST

/* ---- the cuda backend on a tiny model ----------------------------------------------------------------- */

typedef struct model_run {
    const char *method;
    const char *opts[4];
    int rows; /* rows per (layer, KV head) after prefill; 0: the whole prompt */
} model_run;

/* The run's method (NULL: FullKV) on a fresh cuda forward of `model` with the full cache (context n + n_new,
 * chunks of 40): the prompt's n_new greedy tokens into out; then the same sequence again on the instance, which
 * must give the same tokens and KV bytes (the graph and lengths were left consistent). row_bytes (may be NULL):
 * one row of every layer and KV head in the device cache's element size. */
static void generate(const ks_model *model, const model_run *run, const int32_t *ids, int n, int n_new, int32_t *out,
                     ks_generate_result *r, int64_t *row_bytes) {
    ks_method *m = NULL;
    int k = 0;
    while (run && run->opts[k]) k++;
    if (run) CK_KS(ks_method_create(&m, run->method, NULL, run->opts, k));
    ks_forward f = {0};
    ks_forward_params fp = {.device = "cuda", .max_ctx = n + n_new, .max_new = n_new, .chunk = 40,
                            .cache = KS_CACHE_FULL};
    CK_KS(ks_forward_init(&f, model, m, &fp));
    ks_generate_params gp = {.max_new_tokens = n_new};
    CK_KS(ks_generate(&f, ids, n, &gp, out, r));
    ck_assert_int_eq(r->n, n_new);
    int32_t *again = malloc(sizeof(int32_t) * n_new);
    ks_generate_result r2;
    CK_KS(ks_generate(&f, ids, n, &gp, again, &r2));
    for (int t = 0; t < n_new; t++)
        ck_assert_msg(again[t] == out[t], "%s, second sequence: token %d is %d, %d the first time",
                      run ? run->method : "FullKV", t, again[t], out[t]);
    ck_assert(r2.kv_bytes_prefill == r->kv_bytes_prefill && r2.kv_bytes_end == r->kv_bytes_end);
    free(again);
    const ks_kvcache *c = f.ops->kvcache(f.be);
    ck_assert_int_eq(c->elem_bytes, 2); /* bf16 on the device */
    if (row_bytes)
        *row_bytes = (int64_t)model->cfg.n_layers * model->cfg.n_kv_heads * 2 * model->cfg.head_dim * c->elem_bytes;
    ks_forward_free(&f);
    ks_method_free(m);
}

START_TEST(test_tiny_model) {
    ks_model model = {0};
    CK_KS(ks_model_load(&model, ks_test_fixture("models/tiny_llama"), 0, -1));
    enum { N = 90, NEW = 12 };
    int32_t ids[N], want[NEW], got[NEW];
    for (int i = 0; i < N; i++) ids[i] = 3 + (int32_t)(rnd() * (model.cfg.vocab - 3));
    ks_generate_result r;
    int64_t row_bytes;
    generate(&model, NULL, ids, N, NEW, want, &r, &row_bytes);
    const model_run runs[] = {
        {"H2O", {"heavy_budget=4096", "recent_budget=4096"}, 0},
        {"StreamingLLM", {"recent_size=4096"}, 0},
        {"SnapKV", {"max_capacity_prompt=4096"}, 0},
        {"L2Compress", {"max_capacity_prompt=1.0", "prune_after=0"}, 0},
        {"PyramidKV", {"max_capacity_prompt=4096"}, 0},
        {"CakeKV", {"cache_size=4096"}, 0},
        {"CaM", {"max_capacity_prompt=4096"}, 0},
        /* small budgets: the budget's rows after prefill, and decoding goes on (graph or decode hook) */
        {"SnapKV", {"max_capacity_prompt=24", "window_size=8"}, 24},
        {"H2O", {"heavy_budget=12", "recent_budget=12"}, 24},
        {"StreamingLLM", {"start_size=4", "recent_size=20"}, 24},
        {"L2Compress", {"variant=loom", "max_capacity_prompt=24", "skip_layers=[]"}, 24},
        {"CaM", {"max_capacity_prompt=24", "window_size=8"}, 24}, /* v_merge on the store; decode on the host */
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        generate(&model, &runs[i], ids, N, NEW, got, &r, NULL);
        if (runs[i].rows) {
            ck_assert_msg(r.kv_bytes_prefill == runs[i].rows * row_bytes, "%s: %lld bytes after prefill, want %lld",
                          runs[i].method, (long long)r.kv_bytes_prefill, (long long)(runs[i].rows * row_bytes));
            /* the methods that evict while decoding stay at their budget (the device's drops applied) */
            int evicts = !strcmp(runs[i].method, "H2O") || !strcmp(runs[i].method, "StreamingLLM") ||
                         !strcmp(runs[i].method, "CaM");
            int64_t end = (runs[i].rows + (evicts ? 0 : NEW - 1)) * row_bytes;
            ck_assert_msg(r.kv_bytes_end == end, "%s: %lld bytes at the end, want %lld", runs[i].method,
                          (long long)r.kv_bytes_end, (long long)end);
            continue;
        }
        ck_assert(r.kv_bytes_prefill == r.kv_bytes_full);
        for (int t = 0; t < NEW; t++)
            ck_assert_msg(got[t] == want[t], "%s: token %d is %d, FullKV's %d", runs[i].method, t, got[t], want[t]);
    }
    ks_model_free(&model);
}
END_TEST

/* ---- KIVI on the cuda backend ------------------------------------------------------------------------------ */

enum { KIVI_N = 90, KIVI_NEW = 24, KIVI_HEADS = KS_METHOD_MAX_LAYERS * 8 };

/* A forward of a method holding the packed part (KIVI, ThinK) on `device` (a cache of `cache` mode for the prompt
 * and KIVI_NEW tokens, chunks of 40). */
typedef struct kivi_run {
    ks_forward f;
    ks_method *m;
    ks_layer_stat st[KS_METHOD_MAX_LAYERS];
} kivi_run;

static void kivi_open(kivi_run *r, const ks_model *model, const char *method, const char *device,
                      ks_forward_cache cache, const char *const *opts, int n_opts) {
    memset(r, 0, sizeof *r);
    CK_KS(ks_method_create(&r->m, method, NULL, opts, n_opts));
    ks_forward_params fp = {.device = device, .max_ctx = KIVI_N + KIVI_NEW, .max_new = KIVI_NEW, .chunk = 40,
                            .cache = cache};
    CK_KS(ks_forward_init(&r->f, model, r->m, &fp));
}

/* The counts of every (layer, KV head) into n; returns how many. */
static int kivi_counts(kivi_run *r, ks_kivi_counts *n) {
    const ks_kvcache *c = r->f.ops->kvcache(r->f.be);
    ck_assert(c->kivi && c->n_layers * c->n_kv_heads <= KIVI_HEADS);
    int i = 0;
    for (int l = c->first_layer; l < c->first_layer + c->n_layers; l++)
        for (int g = 0; g < c->n_kv_heads; g++) n[i++] = ks_kv_kivi_counts(c->kivi, c, l, g);
    return i;
}

/* The cuda run's counts equal the cpu run's, head by head (the flush and release rules follow counts only), and
 * its bytes are the cpu's with each full-precision element 2 bytes instead of 4 (bf16 against fp32 rows; codes,
 * scales and zeros the same). */
static void kivi_same_counts(kivi_run *cpu, kivi_run *gpu, const char *what) {
    ks_kivi_counts a[KIVI_HEADS], b[KIVI_HEADS];
    int n = kivi_counts(cpu, a);
    ck_assert_int_eq(kivi_counts(gpu, b), n);
    const ks_kvcache *cc = cpu->f.ops->kvcache(cpu->f.be), *gc = gpu->f.ops->kvcache(gpu->f.be);
    int64_t dense = 0;
    for (int i = 0; i < n; i++) {
        ck_assert_msg(a[i].nq_k == b[i].nq_k && a[i].nq_v == b[i].nq_v && a[i].off == b[i].off && a[i].n == b[i].n,
                      "%s, head %d: cuda counts (%d, %d, %d, %d), cpu (%d, %d, %d, %d)", what, i, b[i].nq_k,
                      b[i].nq_v, b[i].off, b[i].n, a[i].nq_k, a[i].nq_v, a[i].off, a[i].n);
        dense += (int64_t)(2 * a[i].n - a[i].nq_k - a[i].nq_v) * cc->head_dim;
    }
    ck_assert_msg(ks_kvcache_bytes(gc) == ks_kvcache_bytes(cc) - dense * (cc->elem_bytes - gc->elem_bytes),
                  "%s: cuda holds %lld bytes, cpu %lld with %lld full-precision elements", what,
                  (long long)ks_kvcache_bytes(gc), (long long)ks_kvcache_bytes(cc), (long long)dense);
}

/* KIVI_NEW - 1 decode steps on r after a prompt whose next token is t0: step t feeds feed[t - 1] (feed NULL:
 * r's own greedy token); out[0] = t0, out[t] the greedy token after step t. */
static void kivi_decode(kivi_run *r, int32_t t0, const int32_t *feed, int32_t *out) {
    out[0] = t0;
    for (int t = 1; t < KIVI_NEW; t++)
        CK_KS(ks_forward_decode(&r->f, feed ? feed[t - 1] : out[t - 1], NULL, &out[t]));
}

static void kivi_close(kivi_run *r) {
    ks_forward_free(&r->f);
    ks_method_free(r->m);
}

/* FullKV's teacher-forced agreement between the cpu and cuda backends on the prompt: what bf16 allows. */
static int fullkv_agreement(const ks_model *model, const int32_t *ids) {
    ks_forward f[2] = {{0}, {0}};
    const char *dev[2] = {"cpu", "cuda"};
    int32_t next[2];
    for (int i = 0; i < 2; i++) {
        ks_forward_params fp = {.device = dev[i], .max_ctx = KIVI_N + KIVI_NEW, .max_new = KIVI_NEW, .chunk = 40,
                                .cache = KS_CACHE_FULL};
        CK_KS(ks_forward_init(&f[i], model, NULL, &fp));
        CK_KS(ks_forward_prefill(&f[i], ids, KIVI_N, NULL, &next[i]));
    }
    int agree = next[0] == next[1];
    int32_t tok = next[0];
    for (int t = 1; t < KIVI_NEW; t++) {
        for (int i = 0; i < 2; i++) CK_KS(ks_forward_decode(&f[i], tok, NULL, &next[i]));
        agree += next[0] == next[1];
        tok = next[0];
    }
    ks_forward_free(&f[0]), ks_forward_free(&f[1]);
    return agree;
}

/* KIVI on the cuda store (device packed part, flush kernels, packed decode attention, releases) on the tiny model
 * (head_dim 16, so group_size 8):
 * - residual_length longer than the sequence: nothing is packed, FullKV's greedy tokens and KV bytes, and a
 *   second sequence on the instance repeats the first (generate);
 * - residual_length 16, 2 and 4 bits, decoding the cpu backend's greedy tokens (teacher-forced, KIVI_NEW steps:
 *   a key block packed, a value per step, stale rows released once): after the prompt and after decoding every
 *   head's counts equal the cpu backend's, and the bytes held are the cpu's with bf16 full-precision elements;
 *   the prompt's statistics (kept, residual_k, residual_v) equal and its relative quantization errors agree
 *   within 10% (bf16 against fp32 keys and values: a value near a code boundary may round to the other code);
 *   the greedy tokens agree with the cpu's on at least as many steps as FullKV's do between the two backends,
 *   less 3 (the quantization may bring a near-tie of either); a budget-sized cuda cache (2 R rows, the prompt
 *   through the prefill slots) gives the full cache's counts and tokens exactly; a second prompt on the cuda
 *   instance (ks_forward_reset) gives the same counts. */
START_TEST(test_kivi) {
    ks_model model = {0};
    CK_KS(ks_model_load(&model, ks_test_fixture("models/tiny_llama"), 0, -1));
    int32_t ids[KIVI_N], want[KIVI_NEW], got[KIVI_NEW];
    for (int i = 0; i < KIVI_N; i++) ids[i] = 3 + (int32_t)(rnd() * (model.cfg.vocab - 3));
    ks_generate_result r, rf;
    generate(&model, NULL, ids, KIVI_N, KIVI_NEW, want, &rf, NULL);
    const model_run whole = {"KIVI", {"group_size=8", "residual_length=4096"}, 0};
    generate(&model, &whole, ids, KIVI_N, KIVI_NEW, got, &r, NULL);
    ck_assert(r.kv_bytes_prefill == rf.kv_bytes_prefill && r.kv_bytes_end == rf.kv_bytes_end);
    for (int t = 0; t < KIVI_NEW; t++)
        ck_assert_msg(got[t] == want[t], "KIVI, residual 4096: token %d is %d, FullKV's %d", t, got[t], want[t]);

    const int full_agree = fullkv_agreement(&model, ids);
    const char *const cases[][4] = {
        {"group_size=8", "residual_length=16"},
        {"group_size=8", "residual_length=16", "k_bits=4", "v_bits=4"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int n_opts = cases[c][2] ? 4 : 2;
        kivi_run cpu, gpu, bud;
        kivi_open(&cpu, &model, "KIVI", "cpu", KS_CACHE_FULL, cases[c], n_opts);
        kivi_open(&gpu, &model, "KIVI", "cuda", KS_CACHE_FULL, cases[c], n_opts);
        kivi_open(&bud, &model, "KIVI", "cuda", KS_CACHE_BUDGET, cases[c], n_opts);
        ck_assert_int_eq(bud.f.kv_rows, 2 * 16);
        int32_t c0, g0, b0, ct[KIVI_NEW], gt[KIVI_NEW], bt[KIVI_NEW];
        CK_KS(ks_forward_prefill(&cpu.f, ids, KIVI_N, NULL, &c0));
        CK_KS(ks_forward_prefill(&gpu.f, ids, KIVI_N, NULL, &g0));
        CK_KS(ks_forward_prefill(&bud.f, ids, KIVI_N, NULL, &b0));
        int layers = ks_method_layer_stats(cpu.m, cpu.st);
        ck_assert_int_eq(ks_method_layer_stats(gpu.m, gpu.st), layers);
        for (int l = 0; l < layers; l++) {
            const ks_layer_stat *x = &cpu.st[l], *y = &gpu.st[l];
            ck_assert_msg(x->kept == y->kept && x->residual_k == y->residual_k && x->residual_v == y->residual_v,
                          "case %zu layer %d: cuda statistics (kept %d, residuals %d, %d), cpu (%d, %d, %d)", c, l,
                          y->kept, y->residual_k, y->residual_v, x->kept, x->residual_k, x->residual_v);
            ck_assert_msg(x->quant_error > 0 && fabsf(y->quant_error - x->quant_error) <= 0.1f * x->quant_error &&
                              fabsf(y->quant_error_v - x->quant_error_v) <= 0.1f * x->quant_error_v,
                          "case %zu layer %d: cuda errors %g, %g; cpu %g, %g", c, l, y->quant_error,
                          y->quant_error_v, x->quant_error, x->quant_error_v);
        }
        ks_kivi_counts first[KIVI_HEADS], other[KIVI_HEADS];
        int heads = kivi_counts(&gpu, first);
        for (int i = 0; i < heads; i++) ck_assert(first[i].nq_k > 0 && first[i].nq_v > 0 && first[i].off > 0);
        kivi_same_counts(&cpu, &gpu, "after the prompt");
        ck_assert(kivi_counts(&bud, other) == heads && !memcmp(other, first, sizeof first[0] * heads) && b0 == g0);
        kivi_decode(&cpu, c0, NULL, ct);
        kivi_decode(&gpu, g0, ct, gt);
        kivi_decode(&bud, b0, ct, bt);
        kivi_same_counts(&cpu, &gpu, "after decoding");
        int agree = 0;
        for (int t = 0; t < KIVI_NEW; t++) {
            agree += ct[t] == gt[t];
            ck_assert_msg(bt[t] == gt[t], "case %zu: token %d is %d budget-sized, %d full", c, t, bt[t], gt[t]);
        }
        ck_assert_msg(agree >= full_agree - 3, "case %zu: %d of %d greedy tokens agree with the cpu's (FullKV: %d)", c,
                      agree, KIVI_NEW, full_agree);
        ks_kivi_counts now[KIVI_HEADS];
        ck_assert(kivi_counts(&gpu, now) == heads && kivi_counts(&bud, other) == heads &&
                  !memcmp(other, now, sizeof now[0] * heads));
        ks_forward_reset(&gpu.f);
        CK_KS(ks_forward_prefill(&gpu.f, ids, KIVI_N, NULL, &g0));
        ck_assert(kivi_counts(&gpu, other) == heads && !memcmp(other, first, sizeof first[0] * heads));
        kivi_close(&cpu), kivi_close(&gpu), kivi_close(&bud);
    }
    ks_model_free(&model);
}
END_TEST

/* ---- ThinK on the cuda backend ----------------------------------------------------------------------------- */

/* Head (l, g)'s stored key channels in run r (the host lists, as the store's kernels read them): their count,
 * the list at *chan. */
static int think_channels(kivi_run *r, int l, int g, const int32_t **chan) {
    const ks_kvcache *c = r->f.ops->kvcache(r->f.be);
    size_t i = (size_t)ks_kvcache_index(c, l) * c->n_kv_heads + g;
    *chan = c->kivi->k_chan + i * c->head_dim;
    return c->kivi->kc[i];
}

/* 1 when head (l, g) holds the same counts and positions in both runs (its released tokens' and its rows'). */
static int same_positions(kivi_run *a, kivi_run *b, int l, int g) {
    const ks_kvcache *c[2] = {a->f.ops->kvcache(a->f.be), b->f.ops->kvcache(b->f.be)};
    ks_kivi_counts n[2];
    const int32_t *released[2];
    for (int i = 0; i < 2; i++) {
        n[i] = ks_kv_kivi_counts(c[i]->kivi, c[i], l, g);
        size_t h = (size_t)ks_kvcache_index(c[i], l) * c[i]->n_kv_heads + g;
        released[i] = c[i]->kivi->pos + h * c[i]->kivi->shape.cap;
    }
    return !memcmp(&n[0], &n[1], sizeof n[0]) && !memcmp(released[0], released[1], sizeof(int32_t) * n[0].off) &&
           !memcmp(ks_kvcache_pos(c[0], l, g), ks_kvcache_pos(c[1], l, g), sizeof(int32_t) * (n[0].n - n[0].off));
}

/* *other of the *all (layer, KV head) pairs of a and b that hold other tokens. */
static void heads_holding_other_tokens(kivi_run *a, kivi_run *b, int *other, int *all) {
    const ks_kvcache *c = a->f.ops->kvcache(a->f.be);
    *other = *all = 0;
    for (int l = c->first_layer; l < c->first_layer + c->n_layers; l++)
        for (int g = 0; g < c->n_kv_heads; g++) *other += !same_positions(a, b, l, g), ++*all;
}

/* Members of x (n of them) not in y (n of them). */
static int channels_missing(const int32_t *x, const int32_t *y, int n) {
    int missing = 0;
    for (int i = 0; i < n; i++) {
        int found = 0;
        for (int j = 0; j < n && !found; j++) found = x[i] == y[j];
        missing += !found;
    }
    return missing;
}

/* Run b's stored key channels equal run a's on every (layer, KV head) holding the same positions, which must be
 * every head when `all`. Up to `swaps` heads may trade one channel at the boundary instead: the cuda store scores
 * bf16 keys where the cpu's are fp32, and two channels whose group-mean scores sit within that rounding rank
 * either way (0.5% apart in one such head of the tiny model). */
static void think_same_channels(kivi_run *a, kivi_run *b, int all, int swaps, const char *what) {
    const ks_kvcache *c = a->f.ops->kvcache(a->f.be);
    int swapped = 0;
    for (int l = c->first_layer; l < c->first_layer + c->n_layers; l++)
        for (int g = 0; g < c->n_kv_heads; g++) {
            int same = same_positions(a, b, l, g);
            ck_assert_msg(same || !all, "%s: layer %d, KV head %d holds other tokens", what, l, g);
            if (!same) continue;
            const int32_t *x, *y;
            int kx = think_channels(a, l, g, &x), ky = think_channels(b, l, g, &y);
            ck_assert_msg(kx == ky, "%s: layer %d, KV head %d stores %d key channels against %d", what, l, g, ky, kx);
            if (!memcmp(x, y, sizeof(int32_t) * kx)) continue;
            const int missing = channels_missing(x, y, kx);
            swapped++;
            ck_assert_msg(missing == 1 && swapped <= swaps,
                          "%s: layer %d, KV head %d stores other key channels (%d of %d differ; head %d of %d "
                          "allowed a one-channel swap)", what, l, g, missing, kx, swapped, swaps);
        }
}

/* ThinK's own storage by the formula, from the counts and stored channels of every head: per packed token its
 * key on the kept channels and its value whole in the store's raw element (fp32 on the cpu, bf16 two per word on
 * the cuda store: whole 32-bit words per stored channel and per token), the dense rows in the cache's element. */
static int64_t think_bytes(kivi_run *r) {
    const ks_kvcache *c = r->f.ops->kvcache(r->f.be);
    const int d = c->head_dim, per = 4 / c->elem_bytes;
    int64_t bytes = 0;
    for (int l = c->first_layer; l < c->first_layer + c->n_layers; l++)
        for (int g = 0; g < c->n_kv_heads; g++) {
            ks_kivi_counts n = ks_kv_kivi_counts(c->kivi, c, l, g);
            const int32_t *chan;
            int64_t kc = think_channels(r, l, g, &chan);
            bytes += kc * ((n.nq_k + per - 1) / per) * 4 + (int64_t)n.nq_v * ((d + per - 1) / per) * 4 +
                     (int64_t)(2 * n.n - n.nq_k - n.nq_v) * d * c->elem_bytes;
        }
    return bytes;
}

/* The bytes both runs hold against the formula: ThinK's own storage (think_bytes), or, with KIVI after it, the
 * cuda run's counts and bytes against the cpu's (kivi_same_counts). */
static void think_same_bytes(kivi_run *cpu, kivi_run *gpu, int quant, const char *what) {
    if (quant) {
        kivi_same_counts(cpu, gpu, what);
        return;
    }
    ks_kivi_counts a[KIVI_HEADS], b[KIVI_HEADS];
    int n = kivi_counts(cpu, a);
    ck_assert_msg(kivi_counts(gpu, b) == n && !memcmp(a, b, sizeof a[0] * n), "%s: cuda counts differ", what);
    kivi_run *r[2] = {cpu, gpu};
    for (int i = 0; i < 2; i++) {
        const ks_kvcache *c = r[i]->f.ops->kvcache(r[i]->f.be);
        ck_assert_msg(ks_kvcache_bytes(c) == think_bytes(r[i]), "%s: %s holds %lld bytes, the formula %lld", what,
                      i ? "cuda" : "cpu", (long long)ks_kvcache_bytes(c), (long long)think_bytes(r[i]));
    }
}

/* ThinK on the cuda store (its raw packed part in bf16, the stored key channels on the device, the packed decode
 * attention over them) on the tiny model (head_dim 16: 10 channels kept of 16 at ratio 0.4):
 * - ratio 0 is SnapKV: the same greedy tokens and KV bytes, and a second sequence repeats the first (generate);
 * - ThinK alone, SnapKV+ThinK and SnapKV+ThinK+KIVI against the cpu store, teacher-forced with the cpu's tokens:
 *   after the prompt and after decoding the same counts, the bytes by the formula (ThinK's own storage: fp32 on
 *   the cpu, bf16 on cuda; with KIVI: the cpu's bytes with bf16 full-precision elements); with every prompt row
 *   kept (max_capacity_prompt 4096: the same rows on both) the same kept channels on every head and the same
 *   channels_kept statistics, ThinK alone packing the 82 rows before the recent 8 of every head; with a
 *   selection of 40 rows (bf16 scores may split near-ties otherwise) the same channels wherever a head holds the
 *   same tokens; greedy tokens agreeing with the cpu's as FullKV's do, less 3 (half as many where a head kept
 *   other rows); a budget-sized cuda cache giving the full one's counts, channels and tokens exactly; a second
 *   prompt on both instances (ks_forward_reset) the first's counts and channels (the device lists follow the
 *   sequence). */
START_TEST(test_think) {
    ks_model model = {0};
    CK_KS(ks_model_load(&model, ks_test_fixture("models/tiny_llama"), 0, -1));
    int32_t ids[KIVI_N], want[KIVI_NEW], got[KIVI_NEW];
    for (int i = 0; i < KIVI_N; i++) ids[i] = 3 + (int32_t)(rnd() * (model.cfg.vocab - 3));
    ks_generate_result rs, rz;
    const model_run snap = {"SnapKV", {"max_capacity_prompt=40", "window_size=8"}, 0};
    const model_run zero = {"ThinK", {"max_capacity_prompt=40", "window_size=8", "ratio=0"}, 0};
    generate(&model, &snap, ids, KIVI_N, KIVI_NEW, want, &rs, NULL);
    generate(&model, &zero, ids, KIVI_N, KIVI_NEW, got, &rz, NULL);
    ck_assert(rz.kv_bytes_prefill == rs.kv_bytes_prefill && rz.kv_bytes_end == rs.kv_bytes_end);
    for (int t = 0; t < KIVI_NEW; t++)
        ck_assert_msg(got[t] == want[t], "ThinK, ratio 0: token %d is %d, SnapKV's %d", t, got[t], want[t]);

    const int full_agree = fullkv_agreement(&model, ids), d = model.cfg.head_dim, kc = d - (int)floor(d * 0.4);
    const struct {
        const char *method;
        const char *opts[5];
        int all, quant; /* every prompt row kept; KIVI after ThinK */
    } cases[] = {
        {"ThinK", {"max_capacity_prompt=4096", "window_size=8", "recent_size=8"}, 1, 0},
        {"SnapKV+ThinK", {"snapkv.max_capacity_prompt=4096", "snapkv.window_size=8", "think.window_size=8",
                          "recent_size=8"}, 1, 0},
        {"SnapKV+ThinK", {"snapkv.max_capacity_prompt=40", "snapkv.window_size=8", "think.window_size=8",
                          "recent_size=8"}, 0, 0},
        {"SnapKV+ThinK+KIVI", {"snapkv.max_capacity_prompt=4096", "snapkv.window_size=8", "think.window_size=8",
                               "group_size=8", "residual_length=16"}, 1, 1},
        {"SnapKV+ThinK+KIVI", {"snapkv.max_capacity_prompt=40", "snapkv.window_size=8", "think.window_size=8",
                               "group_size=8", "residual_length=16"}, 0, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *name = cases[c].method;
        int n_opts = 0;
        while (n_opts < 5 && cases[c].opts[n_opts]) n_opts++;
        char what[96];
        kivi_run cpu, gpu, bud;
        kivi_open(&cpu, &model, name, "cpu", KS_CACHE_FULL, cases[c].opts, n_opts);
        kivi_open(&gpu, &model, name, "cuda", KS_CACHE_FULL, cases[c].opts, n_opts);
        kivi_open(&bud, &model, name, "cuda", KS_CACHE_BUDGET, cases[c].opts, n_opts);
        int32_t c0, g0, b0, ct[KIVI_NEW], gt[KIVI_NEW], bt[KIVI_NEW];
        CK_KS(ks_forward_prefill(&cpu.f, ids, KIVI_N, NULL, &c0));
        CK_KS(ks_forward_prefill(&gpu.f, ids, KIVI_N, NULL, &g0));
        CK_KS(ks_forward_prefill(&bud.f, ids, KIVI_N, NULL, &b0));
        snprintf(what, sizeof what, "case %zu (%s), after the prompt", c, name);
        think_same_bytes(&cpu, &gpu, cases[c].quant, what);
        think_same_channels(&cpu, &gpu, cases[c].all, 1, what);
        think_same_channels(&gpu, &bud, 1, 0, what);
        int layers = ks_method_layer_stats(cpu.m, cpu.st);
        ck_assert_int_eq(ks_method_layer_stats(gpu.m, gpu.st), layers);
        for (int l = 0; cases[c].all && l < layers; l++)
            ck_assert_msg(cpu.st[l].channels_kept == gpu.st[l].channels_kept && gpu.st[l].channels_kept == kc &&
                              cpu.st[l].kept == gpu.st[l].kept,
                          "%s, layer %d: cuda keeps %g channels and %d tokens, cpu %g and %d", what, l,
                          gpu.st[l].channels_kept, gpu.st[l].kept, cpu.st[l].channels_kept, cpu.st[l].kept);
        ks_kivi_counts first[KIVI_HEADS], other[KIVI_HEADS];
        int heads = kivi_counts(&gpu, first);
        for (int i = 0; !strcmp(name, "ThinK") && i < heads; i++) /* every row before the recent 8 packed raw */
            ck_assert(first[i].nq_k == KIVI_N - 8 && first[i].nq_v == KIVI_N - 8 && first[i].off == KIVI_N - 8 &&
                      first[i].n == KIVI_N);
        ck_assert(kivi_counts(&bud, other) == heads && !memcmp(other, first, sizeof first[0] * heads) && b0 == g0);
        kivi_decode(&cpu, c0, NULL, ct);
        kivi_decode(&gpu, g0, ct, gt);
        kivi_decode(&bud, b0, ct, bt);
        snprintf(what, sizeof what, "case %zu (%s), after decoding", c, name);
        think_same_bytes(&cpu, &gpu, cases[c].quant, what);
        think_same_channels(&gpu, &bud, 1, 0, what);
        int agree = 0;
        for (int t = 0; t < KIVI_NEW; t++) {
            agree += ct[t] == gt[t];
            ck_assert_msg(bt[t] == gt[t], "%s: token %d is %d budget-sized, %d full", what, t, bt[t], gt[t]);
        }
        int heads_other = 0, heads_all = 0;
        heads_holding_other_tokens(&cpu, &gpu, &heads_other, &heads_all);
        /* Heads that kept other rows (a near-tie split by bf16 scores) attend to other tokens, and the tiny model's
         * margins let that turn a few more tokens; a decode reading wrong rows agrees on almost none. */
        const int bound = heads_other ? full_agree / 2 : full_agree - 3;
        ck_assert_msg(agree >= bound,
                      "%s: %d of %d greedy tokens agree with the cpu's (FullKV: %d; %d of %d heads hold other tokens "
                      "than the cpu's)",
                      what, agree, KIVI_NEW, full_agree, heads_other, heads_all);
        ks_forward_reset(&cpu.f), ks_forward_reset(&gpu.f);
        CK_KS(ks_forward_prefill(&cpu.f, ids, KIVI_N, NULL, &c0));
        CK_KS(ks_forward_prefill(&gpu.f, ids, KIVI_N, NULL, &g0));
        snprintf(what, sizeof what, "case %zu (%s), a second prompt", c, name);
        ck_assert_msg(kivi_counts(&gpu, other) == heads && !memcmp(other, first, sizeof first[0] * heads),
                      "%s: other counts than the first", what);
        think_same_channels(&cpu, &gpu, cases[c].all, 1, what);
        kivi_close(&cpu), kivi_close(&gpu), kivi_close(&bud);
    }
    ks_model_free(&model);
}
END_TEST

/* ---- prefill chunk sizes on the cuda backend ------------------------------------------------------------- */

/* The kept positions of every (layer, KV head) after a prompt of n ids in prefill chunks of `chunk` tokens on
 * the cuda backend, then after `steps` teacher-forced decode steps, into pos[when] (cap per head) and len[when]. */
static void chunked_rows(const ks_model *model, const char *method, const char *const *opts, int chunk,
                         const int32_t *ids, int n, int steps, int cap, int32_t *pos[2], int32_t *len[2]) {
    int k = 0;
    while (opts[k]) k++;
    ks_method *m;
    CK_KS(ks_method_create(&m, method, NULL, opts, k));
    ks_forward f = {0};
    ks_forward_params fp = {.device = "cuda", .max_ctx = cap, .chunk = chunk, .cache = KS_CACHE_FULL};
    CK_KS(ks_forward_init(&f, model, m, &fp));
    int32_t next;
    CK_KS(ks_forward_prefill(&f, ids, n, NULL, &next));
    for (int w = 0; w < 2; w++) {
        if (w) for (int t = 0; t < steps; t++) CK_KS(ks_forward_decode(&f, ids[n + t], NULL, &next));
        const ks_kvcache *c = f.ops->kvcache(f.be);
        for (int l = c->first_layer, i = 0; l < c->first_layer + c->n_layers; l++)
            for (int g = 0; g < c->n_kv_heads; g++, i++) {
                len[w][i] = ks_kvcache_len(c, l)[g];
                memcpy(pos[w] + (size_t)i * cap, ks_kvcache_pos(c, l, g), sizeof(int32_t) * len[w][i]);
            }
    }
    ks_forward_free(&f);
    ks_method_free(m);
}

/* H2O's all-query scores on the cuda backend keep the same rows for prefill chunks of 32 (the shortest its
 * statistics window allows; CUDA-core scoring), 64 and 512 (tensor cores, the attention's log-sum-exps) as for
 * the whole prompt in one chunk, under each gqa_reduce, after the prompt and after decode steps (the running
 * scores per query head on the device). Up to 1% of the rows may differ: the bf16 projections may round
 * differently for other chunk shapes, and a boundary within that rounding can split either way; summing the
 * group's per-chunk maxima instead changed most heads' rows. */
START_TEST(test_tiny_model_chunks) {
    ks_model model = {0};
    CK_KS(ks_model_load(&model, ks_test_fixture("models/tiny_llama"), 0, -1));
    enum { N = 600, STEPS = 6, CAP = N + STEPS };
    int32_t ids[CAP];
    for (int i = 0; i < CAP; i++) ids[i] = 3 + (int32_t)((i * 7919u + 13) % (unsigned)(model.cfg.vocab - 3));
    const int heads = (model.last_layer - model.first_layer) * model.cfg.n_kv_heads, sizes[] = {32, 64, 512};
    int32_t *buf = malloc(sizeof(int32_t) * 4 * ((size_t)heads * CAP + heads)), *pos[2][2], *len[2][2];
    for (int a = 0; a < 2; a++)
        for (int w = 0; w < 2; w++) {
            pos[a][w] = buf + (size_t)(2 * a + w) * ((size_t)heads * CAP + heads);
            len[a][w] = pos[a][w] + (size_t)heads * CAP;
        }
    const char *reduces[] = {"gqa_reduce=mean", "gqa_reduce=max", "gqa_reduce=sum"};
    for (int r = 0; r < 3; r++) {
        const char *opts[] = {"heavy_budget=32", "recent_budget=32", reduces[r], NULL};
        chunked_rows(&model, "H2O", opts, CAP, ids, N, STEPS, CAP, pos[0], len[0]);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            chunked_rows(&model, "H2O", opts, sizes[s], ids, N, STEPS, CAP, pos[1], len[1]);
            for (int w = 0; w < 2; w++) {
                int64_t kept = 0, same = 0;
                for (int i = 0; i < heads; i++) {
                    ck_assert_int_eq(len[0][w][i], len[1][w][i]);
                    for (int a = 0, b = 0; a < len[0][w][i] && b < len[1][w][i];) { /* common positions */
                        int pa = pos[0][w][(size_t)i * CAP + a], pb = pos[1][w][(size_t)i * CAP + b];
                        same += pa == pb, a += pa <= pb, b += pb <= pa;
                    }
                    kept += len[0][w][i];
                }
                printf("gpu_methods: H2O %s, chunk %d, %s: %lld of %lld kept rows as in one chunk\n", reduces[r],
                       sizes[s], w ? "after decoding" : "after the prompt", (long long)same, (long long)kept);
                ck_assert_msg(same >= kept - kept / 100, "H2O %s, chunk %d, %s: %lld of %lld kept rows as in one chunk",
                              reduces[r], sizes[s], w ? "after decoding" : "after the prompt", (long long)same,
                              (long long)kept);
            }
        }
    }
    free(buf);
    ks_model_free(&model);
}
END_TEST

/* ---- deferred prompt-end work on the cuda backend ---------------------------------------------------------- */

enum { PATH_TOKENS = 8 };

typedef struct path_run {
    ks_forward f;
    ks_method *m;
    int32_t tokens[PATH_TOKENS]; /* the greedy continuation */
    ks_layer_stat st[KS_METHOD_MAX_LAYERS];
} path_run;

/* A store's compress_layer that runs the layer's work at once (the cuda store then defers nothing). */
static ks_status compress_at_once(ks_kvstore *kv, int layer, int q_row0, int n_q, ks_kvstore_work work, void *ctx) {
    (void)kv, (void)q_row0, (void)n_q;
    return work(ctx, layer);
}

/* The prompt ids (n) through a fresh forward instance on `device` with the method; statistics recorded, the
 * cache left as the prompt leaves it. at_once: the backend's KV store runs each layer's prompt-end work at once
 * (its compress_layer replaced by compress_at_once). budget: a cache sized by ks_method_kv_rows (layer-major
 * prefill). */
static void path_prefill(path_run *r, const ks_model *model, const char *device, int at_once, int budget,
                         const char *method, const char *const *opts, const int32_t *ids, int n) {
    int k = 0;
    while (opts[k]) k++;
    CK_KS(ks_method_create(&r->m, method, NULL, opts, k));
    ks_forward_params fp = {.device = device, .max_ctx = n + PATH_TOKENS, .max_new = PATH_TOKENS, .chunk = 40,
                            .cache = budget ? KS_CACHE_BUDGET : KS_CACHE_FULL};
    CK_KS(ks_forward_init(&r->f, model, r->m, &fp));
    static ks_kvstore_ops ops_at_once;
    ks_kvstore *kv = r->f.ops->kvstore(r->f.be);
    if (at_once) {
        ops_at_once = *kv->ops;
        ops_at_once.compress_layer = compress_at_once;
        kv->ops = &ops_at_once;
    }
    CK_KS(ks_forward_prefill(&r->f, ids, n, NULL, &r->tokens[0]));
    ks_method_layer_stats(r->m, r->st);
}

static void path_decode(path_run *r) {
    for (int t = 1; t < PATH_TOKENS; t++) CK_KS(ks_forward_decode(&r->f, r->tokens[t - 1], NULL, &r->tokens[t]));
}

static void path_free(path_run *r) {
    ks_forward_free(&r->f);
    ks_method_free(r->m);
}

/* Kept rows of (layer l, KV head g) that a and b share (both position lists increase). */
static int64_t shared_rows(const ks_kvcache *a, const ks_kvcache *b, int l, int g) {
    int64_t common = 0;
    const int32_t *p = ks_kvcache_pos(a, l, g), *q = ks_kvcache_pos(b, l, g);
    for (int i = 0, j = 0, n = ks_kvcache_len(a, l)[g], m = ks_kvcache_len(b, l)[g]; i < n && j < m;) {
        common += p[i] == q[j];
        int step_i = p[i] <= q[j], step_j = q[j] <= p[i];
        i += step_i, j += step_j;
    }
    return common;
}

START_TEST(test_deferred_paths) {
    ks_model model = {0};
    CK_KS(ks_model_load(&model, ks_test_fixture("models/tiny_llama"), 0, -1));
    enum { N = 90 };
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = 3 + (int32_t)(rnd() * (model.cfg.vocab - 3));
    const struct {
        const char *method;
        const char *opts[5];
    } cases[] = {
        {"FullKV", {NULL}},
        {"SnapKV", {"max_capacity_prompt=24", "window_size=8"}},
        {"PyramidKV", {"max_capacity_prompt=24", "window_size=8"}},
        {"H2O", {"heavy_budget=12", "recent_budget=12"}},
        {"H2O", {"heavy_budget=12", "recent_budget=12", "score_window=8"}},
        {"H2O", {"variant=loom", "max_capacity_prompt=24", "window_size=8", "score_chunk=16"}},
        {"StreamingLLM", {"start_size=4", "recent_size=20"}},
        {"L2Compress", {"variant=loom", "max_capacity_prompt=24", "skip_layers=[]"}},
        {"CakeKV", {"cache_size=16", "window_size=8", "cascading=true"}},
        {"CakeKV", {"cache_size=16", "window_size=8", "cascading=false"}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *name = cases[c].method, *opt = cases[c].opts[0] ? cases[c].opts[0] : "";
        path_run r[4]; /* cuda, cuda with each layer's work at once, cpu, cuda on a budget-sized cache */
        memset(r, 0, sizeof r);
        path_prefill(&r[0], &model, "cuda", 0, 0, name, cases[c].opts, ids, N);
        path_prefill(&r[1], &model, "cuda", 1, 0, name, cases[c].opts, ids, N);
        path_prefill(&r[2], &model, "cpu", 0, 0, name, cases[c].opts, ids, N);
        int budget = ks_method_bounds_rows(r[0].m); /* layer-major, three slots, rows moved back on the side stream */
        if (budget) path_prefill(&r[3], &model, "cuda", 0, 1, name, cases[c].opts, ids, N);
        const ks_kvcache *a = r[0].f.ops->kvcache(r[0].f.be), *b = r[1].f.ops->kvcache(r[1].f.be);
        const ks_kvcache *h = r[2].f.ops->kvcache(r[2].f.be);
        int64_t kept = 0, common = 0;
        for (int l = a->first_layer; l < a->first_layer + a->n_layers; l++) {
            const ks_layer_stat *x = &r[0].st[l], *y = &r[1].st[l];
            ck_assert_msg(x->kept == y->kept && x->budget == y->budget && x->attn_mass_kept == y->attn_mass_kept &&
                              x->key_norm_mean == y->key_norm_mean && x->key_norm_max == y->key_norm_max,
                          "%s %s layer %d: statistics differ between the deferred and at-once cuda paths", name,
                          opt, l);
            const ks_layer_stat *z = &r[3].st[l];
            ck_assert_msg(!budget || (x->kept == z->kept && x->attn_mass_kept == z->attn_mass_kept &&
                                      x->key_norm_mean == z->key_norm_mean && x->key_norm_max == z->key_norm_max),
                          "%s %s layer %d: statistics differ between the full and budget-sized cuda caches", name, opt,
                          l);
            for (int g = 0; g < a->n_kv_heads; g++) {
                int n = ks_kvcache_len(a, l)[g];
                ck_assert_msg(ks_kvcache_len(b, l)[g] == n && shared_rows(a, b, l, g) == n,
                              "%s %s layer %d head %d: deferred and at-once cuda keep different rows", name, opt, l,
                              g);
                if (budget) {
                    const ks_kvcache *z3 = r[3].f.ops->kvcache(r[3].f.be);
                    ck_assert_msg(ks_kvcache_len(z3, l)[g] == n && shared_rows(a, z3, l, g) == n &&
                                      ks_kvcache_slot(z3, l) < 0,
                                  "%s %s layer %d head %d: the budget-sized cuda cache keeps other rows", name, opt, l,
                                  g);
                }
                common += shared_rows(a, h, l, g);
                kept += n;
            }
        }
        ck_assert_msg(common >= 0.85 * kept, "%s %s: cuda and cpu share %lld of %lld kept rows", name, opt,
                      (long long)common, (long long)kept);
        path_decode(&r[0]), path_decode(&r[1]);
        if (budget) path_decode(&r[3]);
        for (int t = 0; t < PATH_TOKENS; t++) {
            ck_assert_msg(r[0].tokens[t] == r[1].tokens[t], "%s %s: token %d is %d deferred, %d at once", name, opt,
                          t, r[0].tokens[t], r[1].tokens[t]);
            ck_assert_msg(!budget || r[0].tokens[t] == r[3].tokens[t], "%s %s: token %d is %d, %d budget-sized", name,
                          opt, t, r[0].tokens[t], r[3].tokens[t]);
        }
        for (int i = 0; i < 4; i++) path_free(&r[i]);
    }
    ks_model_free(&model);
}
END_TEST

/* ---- budget-sized cache on a deeper model ----------------------------------------------------------------- */

START_TEST(test_budget_cache_slots) {
    char cfg[] = "/tmp/ks_gpu_methods_cfg_XXXXXX";
    int fd = mkstemp(cfg);
    ck_assert(fd >= 0);
    const char *json = "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 256, "
                       "\"intermediate_size\": 512, \"num_hidden_layers\": 8, \"num_attention_heads\": 4, "
                       "\"num_key_value_heads\": 2, \"head_dim\": 64, \"vocab_size\": 512, "
                       "\"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, "
                       "\"tie_word_embeddings\": false}";
    ck_assert(write(fd, json, strlen(json)) == (ssize_t)strlen(json) && close(fd) == 0);
    ks_model model = {0};
    CK_KS(ks_speed_model_init(&model, cfg));
    unlink(cfg);
    enum { N = 700, NEW = 8, CHUNK = 128 };
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = 3 + (int32_t)(rnd() * 500);
    const struct {
        const char *method;
        const char *opts[4];
    } cases[] = {
        {"SnapKV", {"max_capacity_prompt=64", "window_size=16"}},
        {"H2O", {"heavy_budget=32", "recent_budget=32"}}, /* every chunk scored, layer after layer */
        {"H2O", {"heavy_budget=32", "recent_budget=32", "gqa_reduce=max"}}, /* on tensor cores, per query head */
        {"StreamingLLM", {"start_size=4", "recent_size=60"}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ks_forward f[2];
        ks_method *m[2];
        int32_t tok[2][NEW];
        int k = 0;
        while (cases[c].opts[k]) k++;
        for (int b = 0; b < 2; b++) {
            CK_KS(ks_method_create(&m[b], cases[c].method, NULL, cases[c].opts, k));
            ks_forward_params fp = {.max_ctx = N + NEW, .max_new = NEW, .chunk = CHUNK,
                                    .cache = b ? KS_CACHE_BUDGET : KS_CACHE_FULL};
            CK_KS(ks_speed_forward(&f[b], &model, m[b], &fp, 7));
            ck_assert(!b || (f[b].kv_rows > 0 && f[b].kv_rows < N));
            CK_KS(ks_forward_prefill(&f[b], ids, N, NULL, &tok[b][0]));
        }
        const ks_kvcache *a = f[0].ops->kvcache(f[0].be), *z = f[1].ops->kvcache(f[1].be);
        ck_assert(z->n_slots == KS_KVCACHE_SLOTS && z->own_cap < N);
        for (int l = a->first_layer; l < a->first_layer + a->n_layers; l++)
            for (int g = 0; g < a->n_kv_heads; g++) {
                int n = ks_kvcache_len(a, l)[g];
                ck_assert_msg(n < N && ks_kvcache_len(z, l)[g] == n && shared_rows(a, z, l, g) == n &&
                                      ks_kvcache_slot(z, l) < 0,
                              "%s layer %d head %d: the budget-sized cache keeps other rows", cases[c].method, l, g);
            }
        for (int t = 1; t < NEW; t++)
            for (int b = 0; b < 2; b++) CK_KS(ks_forward_decode(&f[b], tok[b][t - 1], NULL, &tok[b][t]));
        for (int t = 0; t < NEW; t++)
            ck_assert_msg(tok[0][t] == tok[1][t], "%s: token %d is %d, %d budget-sized", cases[c].method, t, tok[0][t],
                          tok[1][t]);
        for (int b = 0; b < 2; b++) {
            ks_forward_free(&f[b]);
            ks_method_free(m[b]);
        }
    }
    ks_model_free(&model);
}
END_TEST

/* ---- a composition on the cuda backend ------------------------------------------------------------------ */

static const ks_knob no_knobs[] = {{0}};
static ks_status noop_prompt_end(ks_method *m, const ks_method_chunk *c) { return (void)m, (void)c, KS_OK; }
static ks_status noop_decode(ks_method *m, int layer, int qpos) { return (void)m, (void)layer, (void)qpos, KS_OK; }
static const ks_method_ops noop_part = {
    .name = "TestNoop", .role = KS_ROLE_QUANT, .file = "testnoop", .summary = "test double", .knobs = no_knobs,
    .after_prefill_layer = noop_prompt_end, .on_decode_step = noop_decode,
};

/* What one run leaves: greedy tokens, KV bytes, the kept positions of every (layer, KV head). */
typedef struct chain_out {
    int32_t tokens[12], len[64], *pos; /* pos: (layers * KV heads, cap), the caller frees */
    int cap;
    ks_generate_result r;
} chain_out;

/* `parts` with opts on a fresh cuda forward of `model` (full cache, chunks of 40): n_new greedy tokens. */
static void chain_run(const ks_model *model, const ks_method_ops *const *parts, int n_parts, const char *const *opts,
                      int n_opts, const int32_t *ids, int n, int n_new, chain_out *o) {
    ks_method *m;
    CK_KS(ks_method_create_ops(&m, parts, n_parts, NULL, opts, n_opts));
    ks_forward f = {0};
    ks_forward_params fp = {.device = "cuda", .max_ctx = n + n_new, .max_new = n_new, .chunk = 40,
                            .cache = KS_CACHE_FULL};
    CK_KS(ks_forward_init(&f, model, m, &fp));
    ks_generate_params gp = {.max_new_tokens = n_new};
    CK_KS(ks_generate(&f, ids, n, &gp, o->tokens, &o->r));
    const ks_kvcache *c = f.ops->kvcache(f.be);
    ck_assert(c->n_layers * c->n_kv_heads <= 64);
    o->cap = c->cap;
    o->pos = malloc(sizeof(int32_t) * c->n_layers * c->n_kv_heads * c->cap);
    for (int l = 0, i = 0; l < c->n_layers; l++)
        for (int h = 0; h < c->n_kv_heads; h++, i++) {
            o->len[i] = ks_kvcache_len(c, l)[h];
            memcpy(o->pos + (size_t)i * c->cap, ks_kvcache_pos(c, l, h), sizeof(int32_t) * o->len[i]);
        }
    ks_forward_free(&f);
    ks_method_free(m);
}

START_TEST(test_chain_noop_part) {
    ks_model model = {0};
    CK_KS(ks_model_load(&model, ks_test_fixture("models/tiny_llama"), 0, -1));
    enum { N = 90, NEW = 12 };
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = 3 + (int32_t)(rnd() * (model.cfg.vocab - 3));
    const struct {
        const ks_method_ops *sel;
        const char *opts[2];
    } runs[] = {
        {&ks_method_snapkv, {"max_capacity_prompt=24", "window_size=8"}},
        {&ks_method_pyramidkv, {"max_capacity_prompt=24", "window_size=8"}},
        {&ks_method_h2o, {"heavy_budget=12", "recent_budget=12"}},
    };
    static chain_out alone, chained;
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        const ks_method_ops *chain[] = {runs[i].sel, &noop_part};
        chain_run(&model, chain, 1, runs[i].opts, 2, ids, N, NEW, &alone);
        chain_run(&model, chain, 2, runs[i].opts, 2, ids, N, NEW, &chained);
        const char *name = runs[i].sel->name;
        ck_assert_msg(!memcmp(alone.tokens, chained.tokens, sizeof alone.tokens), "%s+TestNoop: other tokens", name);
        ck_assert_msg(alone.r.kv_bytes_prefill == chained.r.kv_bytes_prefill &&
                          alone.r.kv_bytes_end == chained.r.kv_bytes_end, "%s+TestNoop: other KV bytes", name);
        int heads = model.cfg.n_layers * model.cfg.n_kv_heads;
        ck_assert_msg(!memcmp(alone.len, chained.len, sizeof(int32_t) * heads), "%s+TestNoop: other lengths", name);
        ck_assert_int_eq(alone.cap, chained.cap);
        for (int h = 0; h < heads; h++)
            ck_assert_msg(!memcmp(alone.pos + (size_t)h * alone.cap, chained.pos + (size_t)h * alone.cap,
                                  sizeof(int32_t) * alone.len[h]),
                          "%s+TestNoop: (layer, KV head) %d keeps other rows", name, h);
        free(alone.pos), free(chained.pos);
    }
    ks_model_free(&model);
}
END_TEST

/* ---- KIVI's graph-served decode step ---------------------------------------------------------------------- */

/* A part whose decode steps do host work (KS_DECODE_HOST): composed before KIVI, the cuda backend runs every step
 * eagerly, KIVI's flush planned on the host and released by kv_compact: the reference for the graph-served steps. */
static int host_step(const ks_method *m) { return (void)m, 1; }
static const ks_method_ops host_step_part = {
    .name = "TestHostStep", .role = KS_ROLE_CHANNELS, .file = "testhoststep", .summary = "test double",
    .knobs = no_knobs, .on_decode_step = noop_decode, .decode_on_host = host_step,
};

enum { GRAPH_NEW = 61 };

/* A forward of the composition `parts` on `device` for a prompt of n tokens and n_new more (chunks of 40). */
static void graph_open(kivi_run *r, const ks_model *model, const ks_method_ops *const *parts, int n_parts,
                       const char *device, ks_forward_cache cache, const char *const *opts, int n_opts, int n,
                       int n_new) {
    memset(r, 0, sizeof *r);
    CK_KS(ks_method_create_ops(&r->m, parts, n_parts, NULL, opts, n_opts));
    ks_forward_params fp = {.device = device, .max_ctx = n + n_new, .max_new = n_new, .chunk = 40, .cache = cache};
    CK_KS(ks_forward_init(&r->f, model, r->m, &fp));
}

/* The decode graph of r's cuda instance (its current slot's), NULL when none is held. */
static cudaGraphExec_t graph_of(kivi_run *r) { return r->f.be->cur->graph; }

/* Every (layer, KV head) of a and b holds the same counts and positions (same_positions). */
static void same_heads(kivi_run *a, kivi_run *b, const char *what) {
    const ks_kvcache *c = a->f.ops->kvcache(a->f.be);
    for (int l = c->first_layer; l < c->first_layer + c->n_layers; l++)
        for (int g = 0; g < c->n_kv_heads; g++)
            ck_assert_msg(same_positions(a, b, l, g), "%s: layer %d, KV head %d holds other tokens", what, l, g);
}

/* KIVI's graph-served decode steps (device-planned flush and release, the host's dry pass) on the tiny model
 * (head_dim 16: group_size 8, residual_length 16), 2 and 4 bits, GRAPH_NEW - 1 steps (several key flushes and
 * releases), after a prompt of 90 tokens (L mod R != 0) and of 10 (L <= R: the layers start packing during decode,
 * so the graph is captured anew when they attend through packed tokens), decoding the cpu backend's greedy
 * tokens (teacher-forced):
 * - the graph-served run's logits equal, bit for bit, those of eager steps planned on the host (KIVI after a part
 *   whose steps do host work), its counts, statistics and kept positions theirs; a graph was held at the end
 *   (the steps replayed), the eager run held none;
 * - after every step its counts equal the cpu backend's and its bytes are the cpu's with bf16 rows, and at the
 *   end every (layer, KV head) keeps the cpu's positions;
 * - a budget-sized cuda cache (graph-served, 2 R rows) decodes the full one's tokens with its counts;
 * - a second prompt on the graph-served instance (ks_forward_reset) decodes the first's tokens and counts. */
START_TEST(test_kivi_graph) {
    ks_model model = {0};
    CK_KS(ks_model_load(&model, ks_test_fixture("models/tiny_llama"), 0, -1));
    const int V = model.cfg.vocab, lens[2] = {90, 10};
    int32_t ids[90];
    for (int i = 0; i < 90; i++) ids[i] = 3 + (int32_t)(rnd() * (V - 3));
    float *lg = malloc(sizeof(float) * V), *le = malloc(sizeof(float) * V);
    const char *const cases[][4] = {
        {"group_size=8", "residual_length=16"},
        {"group_size=8", "residual_length=16", "k_bits=4", "v_bits=4"},
    };
    const ks_method_ops *kivi[] = {&ks_method_kivi}, *eager[] = {&host_step_part, &ks_method_kivi};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int p = 0; p < 2; p++) {
            const int n = lens[p], n_opts = cases[c][2] ? 4 : 2;
            kivi_run cpu, gr, ea, bud;
            graph_open(&cpu, &model, kivi, 1, "cpu", KS_CACHE_FULL, cases[c], n_opts, n, GRAPH_NEW);
            graph_open(&gr, &model, kivi, 1, "cuda", KS_CACHE_FULL, cases[c], n_opts, n, GRAPH_NEW);
            graph_open(&ea, &model, eager, 2, "cuda", KS_CACHE_FULL, cases[c], n_opts, n, GRAPH_NEW);
            graph_open(&bud, &model, kivi, 1, "cuda", KS_CACHE_BUDGET, cases[c], n_opts, n, GRAPH_NEW);
            int32_t ct[GRAPH_NEW], gt[GRAPH_NEW], et[GRAPH_NEW], bt[GRAPH_NEW], again[GRAPH_NEW];
            CK_KS(ks_forward_prefill(&cpu.f, ids, n, NULL, &ct[0]));
            CK_KS(ks_forward_prefill(&gr.f, ids, n, NULL, &gt[0]));
            CK_KS(ks_forward_prefill(&ea.f, ids, n, NULL, &et[0]));
            CK_KS(ks_forward_prefill(&bud.f, ids, n, NULL, &bt[0]));
            char what[96];
            for (int t = 1; t < GRAPH_NEW; t++) {
                snprintf(what, sizeof what, "case %zu, prompt %d, step %d", c, n, t);
                CK_KS(ks_forward_decode(&cpu.f, ct[t - 1], NULL, &ct[t]));
                CK_KS(ks_forward_decode(&gr.f, ct[t - 1], lg, &gt[t]));
                CK_KS(ks_forward_decode(&ea.f, ct[t - 1], le, &et[t]));
                CK_KS(ks_forward_decode(&bud.f, ct[t - 1], NULL, &bt[t]));
                float worst = 0;
                for (int i = 0; i < V; i++) worst = fabsf(lg[i] - le[i]) > worst ? fabsf(lg[i] - le[i]) : worst;
                ck_assert_msg(!memcmp(lg, le, sizeof(float) * V), "%s: graph-served logits differ from eager ones "
                              "by up to %g", what, worst);
                ck_assert_msg(gt[t] == et[t] && bt[t] == gt[t], "%s: tokens %d graph, %d eager, %d budget", what, gt[t],
                              et[t], bt[t]);
                kivi_same_counts(&cpu, &gr, what);
                ks_kivi_counts a[KIVI_HEADS], b[KIVI_HEADS], d[KIVI_HEADS];
                const int heads = kivi_counts(&gr, a);
                ck_assert(kivi_counts(&ea, b) == heads && kivi_counts(&bud, d) == heads);
                ck_assert_msg(!memcmp(a, b, sizeof a[0] * heads) && !memcmp(a, d, sizeof a[0] * heads),
                              "%s: graph-served counts differ from eager or budget-sized ones", what);
            }
            snprintf(what, sizeof what, "case %zu, prompt %d, after decoding", c, n);
            ck_assert_msg(graph_of(&gr) && graph_of(&bud) && !graph_of(&ea), "%s: graphs held: %d full, %d budget, %d "
                          "eager", what, graph_of(&gr) != NULL, graph_of(&bud) != NULL, graph_of(&ea) != NULL);
            same_heads(&cpu, &gr, what);
            same_heads(&ea, &gr, what);
            const int layers = ks_method_layer_stats(gr.m, gr.st);
            ck_assert_int_eq(ks_method_layer_stats(ea.m, ea.st), layers);
            for (int l = 0; l < layers; l++) {
                const ks_layer_stat *x = &gr.st[l], *y = &ea.st[l];
                ck_assert_msg(x->kept == y->kept && x->residual_k == y->residual_k && x->residual_v == y->residual_v &&
                                  x->kv_bytes == y->kv_bytes && x->quant_error == y->quant_error &&
                                  x->quant_error_v == y->quant_error_v,
                              "%s: layer %d's statistics differ from the eager run's", what, l);
            }
            ks_kivi_counts first[KIVI_HEADS], now[KIVI_HEADS];
            const int heads = kivi_counts(&gr, first);
            ks_forward_reset(&gr.f);
            CK_KS(ks_forward_prefill(&gr.f, ids, n, NULL, &again[0]));
            for (int t = 1; t < GRAPH_NEW; t++) CK_KS(ks_forward_decode(&gr.f, ct[t - 1], NULL, &again[t]));
            ck_assert_msg(!memcmp(again, gt, sizeof gt), "case %zu, prompt %d: a second prompt decodes other tokens",
                          c, n);
            ck_assert(kivi_counts(&gr, now) == heads && !memcmp(now, first, sizeof now[0] * heads));
            kivi_close(&cpu), kivi_close(&gr), kivi_close(&ea), kivi_close(&bud);
        }
    free(lg), free(le);
    ks_model_free(&model);
}
END_TEST

/* A budget-sized cache after a selection (SnapKV+KIVI) packs at most the selection's plan plus max_new tokens a
 * head. Decoding past max_new (graph-served steps first), the step whose flush would pack past that fails with
 * KS_ERR_RANGE (its plan checked on the host before the step, which then runs eagerly and fails there); the graph
 * is dropped and the host's mirrors of the device state forgotten, so a second prompt on the instance decodes a
 * fresh instance's tokens with its counts. */
START_TEST(test_kivi_graph_overflow) {
    enum { N = 90, NEW = 8, PAST = 40 };
    ks_model model = {0};
    CK_KS(ks_model_load(&model, ks_test_fixture("models/tiny_llama"), 0, -1));
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = 3 + (int32_t)(rnd() * (model.cfg.vocab - 3));
    const char *const opts[] = {"max_capacity_prompt=24", "window_size=8", "group_size=8", "residual_length=16"};
    const ks_method_ops *parts[] = {&ks_method_snapkv, &ks_method_kivi};
    kivi_run a, fresh;
    graph_open(&a, &model, parts, 2, "cuda", KS_CACHE_BUDGET, opts, 4, N + PAST - NEW, NEW);
    graph_open(&fresh, &model, parts, 2, "cuda", KS_CACHE_BUDGET, opts, 4, N + PAST - NEW, NEW);
    int32_t tok, want[NEW], got[NEW];
    CK_KS(ks_forward_prefill(&a.f, ids, N, NULL, &tok));
    ks_status st = KS_OK;
    int steps = 0;
    while (st == KS_OK && steps < PAST) st = ks_forward_decode(&a.f, tok, NULL, &tok), steps += st == KS_OK;
    ck_assert_msg(st == KS_ERR_RANGE && steps > NEW, "decoding past max_new: status %d after %d steps (%s)", st,
                  steps, ks_last_error());
    ck_assert(!graph_of(&a));
    ks_forward_reset(&a.f);
    CK_KS(ks_forward_prefill(&a.f, ids, N, NULL, &got[0]));
    CK_KS(ks_forward_prefill(&fresh.f, ids, N, NULL, &want[0]));
    for (int t = 1; t < NEW; t++) {
        CK_KS(ks_forward_decode(&a.f, got[t - 1], NULL, &got[t]));
        CK_KS(ks_forward_decode(&fresh.f, want[t - 1], NULL, &want[t]));
    }
    ck_assert_msg(!memcmp(got, want, sizeof got), "the prompt after the failed step decodes other tokens");
    ks_kivi_counts x[KIVI_HEADS], y[KIVI_HEADS];
    const int heads = kivi_counts(&a, x);
    ck_assert(kivi_counts(&fresh, y) == heads && !memcmp(x, y, sizeof x[0] * heads));
    same_heads(&a, &fresh, "after the failed step's sequence");
    kivi_close(&a), kivi_close(&fresh);
    ks_model_free(&model);
}
END_TEST

int main(void) {
    const char *env = getenv("KS_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    g_rng = seed ? seed : 1;
    printf("gpu_methods: seed %llu (set KS_SEED to replay)\n", (unsigned long long)seed);
    Suite *s = suite_create("gpu_methods");
    TCase *tk = tcase_create("kernels"); /* CK_RUN_CASE=kernels: these alone (e.g. under compute-sanitizer) */
    tcase_set_timeout(tk, 300);
    tcase_add_test(tk, test_scores);
    tcase_add_test(tk, test_channel_scores);
    tcase_add_test(tk, test_xattn_scores);
    tcase_add_test(tk, test_xattn_blocks);
    tcase_add_test(tk, test_flex_blocks);
    tcase_add_test(tk, test_key_norms_and_compact);
    tcase_add_test(tk, test_decode_evict);
    tcase_add_test(tk, test_row_scores_fold);
    tcase_add_test(tk, test_v_merge);
    suite_add_tcase(s, tk);
    TCase *tc = tcase_create("methods");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_kept_sets);
    tcase_add_test(tc, test_cam_twin);
    tcase_add_test(tc, test_tiny_model);
    tcase_add_test(tc, test_tiny_model_chunks);
    tcase_add_test(tc, test_deferred_paths);
    tcase_add_test(tc, test_budget_cache_slots);
    tcase_add_test(tc, test_chain_noop_part);
    tcase_add_test(tc, test_kivi);
    tcase_add_test(tc, test_kivi_graph);
    tcase_add_test(tc, test_kivi_graph_overflow);
    tcase_add_test(tc, test_think);
    suite_add_tcase(s, tc);
    return ks_test_run(s, 1);
}
