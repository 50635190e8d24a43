/* check_kernels.c — every fast CPU path (kernels/cpu/fast.h) against its readable reference (ref.h) on
 * random inputs of odd sizes. Outputs are poisoned with NaN before each call and K/V rows beyond the valid
 * length are NaN, so a kernel that skips an element or reads past a length fails instead of passing by luck. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/fast.h"
#include "cpu/ref.h"
#include "test_util.h"

static float *nan_buf(size_t n) {
    float *p = malloc(sizeof(float) * n);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

/* Every value finite and max|got - want| <= tol * (1 + max|want|). */
static void assert_close(const float *got, const float *want, size_t n, float tol, const char *what) {
    float maxd = 0, maxw = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(isfinite(got[i]), "%s: element %zu is %f", what, i, got[i]);
        float dlt = fabsf(got[i] - want[i]);
        if (dlt > maxd) maxd = dlt;
        if (fabsf(want[i]) > maxw) maxw = fabsf(want[i]);
    }
    ck_assert_msg(maxd <= tol * (1 + maxw), "%s: max|diff| %g > %g (max|ref| %g)", what, maxd, tol * (1 + maxw),
                  maxw);
}

START_TEST(test_gemm) {
    const int shapes[][3] = {{1, 61, 83}, {7, 61, 83}, {37, 130, 19}, {64, 64, 64}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int n = shapes[s][0], in = shapes[s][1], od = shapes[s][2];
        float *x = ks_test_rand_buf((size_t)n * in, 1), *w = ks_test_rand_buf((size_t)od * in, 1),
              *b = ks_test_rand_buf(od, 1);
        float *want = malloc(sizeof(float) * n * od), *got = nan_buf((size_t)n * od);
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            const float *bias = with_bias ? b : NULL;
            ks_ref_gemm(want, x, w, bias, n, in, od);
            for (int i = 0; i < n * od; i++) got[i] = NAN;
            ks_fast_gemm(got, x, w, bias, n, in, od, 0);
            assert_close(got, want, (size_t)n * od, 1e-5f, "gemm");
            /* accumulate onto a known residual: got = r + x w^T + b */
            float *r = ks_test_rand_buf((size_t)n * od, 1);
            memcpy(got, r, sizeof(float) * n * od);
            ks_fast_gemm(got, x, w, bias, n, in, od, 1);
            for (int i = 0; i < n * od; i++) want[i] += r[i];
            assert_close(got, want, (size_t)n * od, 1e-5f, "gemm accumulate");
            free(r);
        }
        free(x), free(w), free(b), free(want), free(got);
    }
}
END_TEST

/* ks_fast_gemm_rows: each row bit for bit what ks_fast_gemm gives that row alone (with and without bias, plain and
 * accumulating), on shapes below and above the threaded product's threshold. */
START_TEST(test_gemm_rows) {
    const int shapes[][3] = {{5, 61, 83}, {3, 300, 520}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int n = shapes[s][0], in = shapes[s][1], od = shapes[s][2];
        float *x = ks_test_rand_buf((size_t)n * in, 1), *w = ks_test_rand_buf((size_t)od * in, 1),
              *b = ks_test_rand_buf(od, 1), *r = ks_test_rand_buf((size_t)n * od, 1);
        float *got = malloc(sizeof(float) * n * od), *alone = malloc(sizeof(float) * od);
        for (int mode = 0; mode < 4; mode++) {
            const float *bias = mode & 1 ? b : NULL;
            int acc = mode >> 1;
            memcpy(got, r, sizeof(float) * n * od);
            ks_fast_gemm_rows(got, x, w, bias, n, in, od, acc);
            for (int t = 0; t < n; t++) {
                memcpy(alone, r + (size_t)t * od, sizeof(float) * od);
                ks_fast_gemm(alone, x + (size_t)t * in, w, bias, 1, in, od, acc);
                ck_assert_msg(!memcmp(got + (size_t)t * od, alone, sizeof(float) * od),
                              "gemm_rows %dx%dx%d, bias %d, accumulate %d: row %d differs from the row alone", n, in,
                              od, mode & 1, acc, t);
            }
        }
        free(x), free(w), free(b), free(r), free(got), free(alone);
    }
}
END_TEST

START_TEST(test_rmsnorm) {
    int n = 5, D = 77;
    float *x = ks_test_rand_buf((size_t)n * D, 3), *w = ks_test_rand_buf(D, 1);
    float *want = malloc(sizeof(float) * n * D), *got = nan_buf((size_t)n * D);
    ks_ref_rmsnorm(want, x, w, n, D, 1e-5f);
    ks_fast_rmsnorm(got, x, w, n, D, 1e-5f);
    assert_close(got, want, (size_t)n * D, 1e-6f, "rmsnorm");
    ks_fast_rmsnorm(x, x, w, n, D, 1e-5f); /* in place */
    assert_close(x, want, (size_t)n * D, 1e-6f, "rmsnorm in place");
    free(x), free(w), free(want), free(got);
}
END_TEST

START_TEST(test_rope) {
    int n = 9, heads = 5, d = 34;
    int32_t pos[9];
    for (int t = 0; t < n; t++) pos[t] = 1000 + 7 * t; /* a chunk far from position 0 */
    float inv_freq[17];
    for (int i = 0; i < d / 2; i++) inv_freq[i] = powf(10000.0f, -2.0f * i / d);
    float *want = ks_test_rand_buf((size_t)n * heads * d, 1), *got = malloc(sizeof(float) * n * heads * d);
    memcpy(got, want, sizeof(float) * n * heads * d);
    ks_ref_rope(want, pos, n, heads, d, inv_freq);
    ks_fast_rope(got, pos, n, heads, d, inv_freq);
    assert_close(got, want, (size_t)n * heads * d, 1e-6f, "rope");
    free(want), free(got);
}
END_TEST

START_TEST(test_swiglu) {
    int64_t n = 10007; /* above the threading threshold, not a multiple of the vector width */
    float *g = ks_test_rand_buf(n, 8), *u = ks_test_rand_buf(n, 2), *want = malloc(sizeof(float) * n),
          *got = nan_buf(n);
    ks_ref_swiglu(want, g, u, n);
    ks_fast_swiglu(got, g, u, n);
    assert_close(got, want, n, 1e-6f, "swiglu");
    ks_fast_swiglu(g, g, u, n); /* out aliases gate */
    assert_close(g, want, n, 1e-6f, "swiglu in place");
    free(g), free(u), free(want), free(got);
}
END_TEST

/* A head-major cache (Hk, cap, d) whose rows >= valid[g] are NaN. */
static float *cache_buf(int Hk, int cap, int d, const int32_t *valid) {
    float *c = ks_test_rand_buf((size_t)Hk * cap * d, 1);
    for (int g = 0; g < Hk; g++)
        for (size_t i = (size_t)valid[g] * d; i < (size_t)cap * d; i++) c[(size_t)g * cap * d + i] = NAN;
    return c;
}

typedef struct att_case {
    int n, pos0, H, Hk, d, window;
} att_case;

START_TEST(test_attention_prefill) {
    const att_case cases[] = {
        {37, 0, 6, 2, 40, 0},   /* first chunk, G = 3 */
        {19, 53, 6, 2, 40, 17}, /* later chunk, sliding window shorter than the chunk offset */
        {23, 11, 5, 5, 33, 0},  /* MHA (G = 1), odd head_dim */
        {3, 70, 8, 1, 64, 0},   /* G = 8 (MQA), tiny chunk at an offset */
        {41, 9, 12, 3, 72, 5},  /* window smaller than the block, G = 4 */
        {1, 130, 4, 2, 128, 0}, /* a one-token "chunk" spanning several key blocks */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        att_case a = cases[c];
        int n_kv = a.pos0 + a.n, cap = n_kv + 5;
        int32_t valid[8];
        for (int g = 0; g < a.Hk; g++) valid[g] = n_kv;
        float *q = ks_test_rand_buf((size_t)a.n * a.H * a.d, 2), *k = cache_buf(a.Hk, cap, a.d, valid),
              *v = cache_buf(a.Hk, cap, a.d, valid);
        size_t no = (size_t)a.n * a.H * a.d;
        float *want = malloc(sizeof(float) * no), *got = nan_buf(no);
        float scale = 1.0f / sqrtf((float)a.d);
        ks_ref_attention(want, q, k, v, a.n, n_kv, cap, a.H, a.Hk, a.d, a.pos0, a.window, scale);
        ks_fast_attention(got, q, k, v, a.n, n_kv, cap, a.H, a.Hk, a.d, a.pos0, a.window, scale, NULL);
        assert_close(got, want, no, 2e-6f, "attention prefill");
        free(q), free(k), free(v), free(want), free(got);
    }
}
END_TEST

/* Prefill in chunks (each chunk's queries against the keys written so far) equals one-shot prefill. */
START_TEST(test_attention_chunked) {
    int n = 101, H = 6, Hk = 2, d = 24, cap = 128;
    for (int window = 0; window <= 30; window += 30) {
        int32_t valid[2] = {n, n};
        float *q = ks_test_rand_buf((size_t)n * H * d, 2), *k = cache_buf(Hk, cap, d, valid),
              *v = cache_buf(Hk, cap, d, valid);
        size_t no = (size_t)n * H * d;
        float *one = nan_buf(no), *chunked = nan_buf(no), *ref_chunked = nan_buf(no);
        float scale = 0.3f;
        ks_fast_attention(one, q, k, v, n, n, cap, H, Hk, d, 0, window, scale, NULL);
        const int chunk = 17;
        for (int t0 = 0; t0 < n; t0 += chunk) {
            int m = n - t0 < chunk ? n - t0 : chunk;
            size_t off = (size_t)t0 * H * d;
            ks_fast_attention(chunked + off, q + off, k, v, m, t0 + m, cap, H, Hk, d, t0, window, scale, NULL);
            ks_ref_attention(ref_chunked + off, q + off, k, v, m, t0 + m, cap, H, Hk, d, t0, window, scale);
        }
        assert_close(chunked, one, no, 1e-6f, "chunked vs one-shot prefill");
        assert_close(ref_chunked, one, no, 2e-6f, "reference chunked vs fast one-shot");
        free(q), free(k), free(v), free(one), free(chunked), free(ref_chunked);
    }
}
END_TEST

/* A block list for a chunk of n queries at pos0 (blocks of B): every causal block if keep_all, else each
 * (head, query block) row keeps a random subset (ascending; possibly empty). */
static ks_block_list random_block_list(int H, int n, int pos0, int B, int keep_all, unsigned seed) {
    ks_block_list l = {.block = B, .H = H, .qb0 = pos0 / B, .n_qblocks = ks_block_rows_of(pos0, n, B)};
    int rows = H * l.n_qblocks, max_cols = (pos0 + n) / B + 1;
    l.row_start = malloc(sizeof(int32_t) * (size_t)(rows + 1));
    l.cols = malloc(sizeof(int32_t) * (size_t)rows * max_cols);
    l.row_start[0] = 0;
    for (int r = 0, c = 0; r < rows; r++) {
        int qb = l.qb0 + r % l.n_qblocks;
        for (int kb = 0; kb <= qb; kb++) {
            seed = seed * 1103515245u + 12345u;
            if (keep_all || (seed >> 16) % 3 != 0) l.cols[c++] = kb;
        }
        l.row_start[r + 1] = c;
    }
    return l;
}

/* Block-sparse prefill: a full list equals dense attention exactly; a sparse list equals, query by query, the
 * attention over just its listed keys (gathered into a cache of their own, attended as a decode step attends
 * every row it holds). */
START_TEST(test_attention_sparse) {
    const att_case cases[] = {{37, 0, 6, 2, 40, 0}, {29, 21, 4, 2, 16, 0}, {40, 50, 4, 1, 8, 13}};
    const int B = 8;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        att_case a = cases[c];
        int n_kv = a.pos0 + a.n, cap = n_kv, G = a.H / a.Hk;
        int32_t valid[8];
        for (int g = 0; g < a.Hk; g++) valid[g] = n_kv;
        float *q = ks_test_rand_buf((size_t)a.n * a.H * a.d, 2), *k = cache_buf(a.Hk, cap, a.d, valid),
              *v = cache_buf(a.Hk, cap, a.d, valid);
        size_t no = (size_t)a.n * a.H * a.d;
        float *want = malloc(sizeof(float) * no), *got = nan_buf(no), scale = 1.0f / sqrtf((float)a.d);

        ks_block_list full = random_block_list(a.H, a.n, a.pos0, B, 1, 0);
        ks_ref_attention(want, q, k, v, a.n, n_kv, cap, a.H, a.Hk, a.d, a.pos0, a.window, scale);
        ks_ref_attention_sparse(got, q, k, v, a.n, n_kv, cap, a.H, a.Hk, a.d, a.pos0, a.window, scale, &full);
        assert_close(got, want, no, 0.0f, "sparse prefill, full list");

        ks_block_list l = random_block_list(a.H, a.n, a.pos0, B, 0, (unsigned)c + 7);
        ks_ref_attention_sparse(got, q, k, v, a.n, n_kv, cap, a.H, a.Hk, a.d, a.pos0, a.window, scale, &l);
        float *kg = malloc(sizeof(float) * (size_t)n_kv * a.d), *vg = malloc(sizeof(float) * (size_t)n_kv * a.d);
        for (int t = 0; t < a.n; t++)
            for (int h = 0; h < a.H; h++) {
                int qpos = a.pos0 + t, row = ks_block_row(&l, h, qpos / B);
                int32_t m = 0;
                for (int i = l.row_start[row]; i < l.row_start[row + 1]; i++)
                    for (int j = l.cols[i] * B; j < (l.cols[i] + 1) * B; j++) {
                        if (j > qpos || (a.window > 0 && j <= qpos - a.window)) continue;
                        size_t src = ((size_t)(h / G) * cap + j) * a.d;
                        memcpy(kg + (size_t)m * a.d, k + src, sizeof(float) * a.d);
                        memcpy(vg + (size_t)m * a.d, v + src, sizeof(float) * a.d);
                        m++;
                    }
                float *o = want + ((size_t)t * a.H + h) * a.d;
                if (m == 0)
                    for (int i = 0; i < a.d; i++) o[i] = 0;
                else
                    ks_ref_attention_decode(o, q + ((size_t)t * a.H + h) * a.d, kg, vg, &m, n_kv, 1, 1, a.d, scale);
            }
        assert_close(got, want, no, 0.0f, "sparse prefill vs its gathered keys");
        free(full.row_start), free(full.cols), free(l.row_start), free(l.cols), free(kg), free(vg);
        free(q), free(k), free(v), free(want), free(got);
    }
}
END_TEST

START_TEST(test_attention_decode) {
    int H = 12, Hk = 4, d = 56, cap = 300, G = H / Hk;
    int32_t len[4] = {1, 77, 300, 160}; /* per-KV-head lengths, as after per-head compression */
    float *q = ks_test_rand_buf((size_t)H * d, 2), *k = cache_buf(Hk, cap, d, len), *v = cache_buf(Hk, cap, d, len);
    float *want = malloc(sizeof(float) * H * d), *got = nan_buf((size_t)H * d);
    float scale = 1.0f / sqrtf((float)d);
    ks_ref_attention_decode(want, q, k, v, len, cap, H, Hk, d, scale);
    ks_fast_attention_decode(got, q, k, v, NULL, len, cap, H, Hk, d, scale);
    assert_close(got, want, (size_t)H * d, 2e-6f, "attention decode");

    /* With a start row per head (sliding window): the reference on each head's [start, len) sub-view. */
    int32_t start[4] = {0, 70, 1, 99};
    for (int i = 0; i < H * d; i++) got[i] = NAN;
    ks_fast_attention_decode(got, q, k, v, start, len, cap, H, Hk, d, scale);
    for (int g = 0; g < Hk; g++) {
        size_t off = (size_t)g * cap * d + (size_t)start[g] * d;
        int32_t sub_len = len[g] - start[g];
        ks_ref_attention_decode(want + (size_t)g * G * d, q + (size_t)g * G * d, k + off, v + off, &sub_len, cap,
                                G, 1, d, scale);
    }
    assert_close(got, want, (size_t)H * d, 2e-6f, "attention decode with start rows");

    /* A decode step equals the last row of a prefill over the same dense cache. */
    int32_t dense[4] = {cap, cap, cap, cap};
    float *kd = cache_buf(Hk, cap, d, dense), *vd = cache_buf(Hk, cap, d, dense);
    ks_fast_attention_decode(got, q, kd, vd, NULL, dense, cap, H, Hk, d, scale);
    ks_ref_attention(want, q, kd, vd, 1, cap, cap, H, Hk, d, cap - 1, 0, scale);
    assert_close(got, want, (size_t)H * d, 2e-6f, "decode vs last prefill row");
    free(q), free(k), free(v), free(kd), free(vd), free(want), free(got);
}
END_TEST

typedef struct score_case {
    ks_window_args a;
    const char *what;
} score_case;

/* Window scores: the fast op against the reference on each statistic, reduction (none too: a row per query
 * head), query tiling (more rows than one tile), the causal mask inside the window, LOOM's chunked softmax and
 * accumulation, with and without the prefill attention's log-sum-exps; and the invariant that every scored
 * query's probabilities sum to 1, so SUM with the group mean totals n_q per KV head. Outputs have room for H
 * rows; the reduced ones use the first Hk. */
START_TEST(test_window_scores) {
    int n = 70, pos0 = 150, H = 6, Hk = 2, d = 40, cap = 230, n_keys = pos0 + n, ld = cap;
    int32_t valid[2] = {n_keys, n_keys};
    float *q = ks_test_rand_buf((size_t)n * H * d, 2), *k = cache_buf(Hk, cap, d, valid);
    float *work = malloc(sizeof(float) * 2 * H * ld), *want = ks_test_rand_buf((size_t)H * ld, 1);
    float *got = malloc(sizeof(float) * H * ld), *init = malloc(sizeof(float) * H * ld);
    float *att = malloc(sizeof(float) * n * H * d), *lse = nan_buf((size_t)n * H);
    float *sums_ref = malloc(sizeof(float) * Hk * ld), *sums_fast = malloc(sizeof(float) * Hk * ld);
    memcpy(init, want, sizeof(float) * H * ld);
    const score_case cases[] = {
        {{n - 32, 32, pos0, n_keys, 0, KS_SCORE_SUM, 0, KS_GQA_MEAN, 0, NULL}, "SnapKV window of 32, group mean"},
        {{0, n, pos0, n_keys, 0, KS_SCORE_SUM, 0, KS_GQA_MAX, 1, NULL}, "all 70 rows, group max, accumulated"},
        {{1, n - 1, pos0, n_keys, 0, KS_SCORE_MEAN_VAR, 200, KS_GQA_MEAN, 0, NULL}, "mean + 200 var over 69 rows"},
        {{n - 20, 20, pos0, n_keys, 50, KS_SCORE_SUM, 0, KS_GQA_SUM, 0, NULL}, "LOOM chunked softmax, group sum"},
        {{n - 1, 1, pos0, n_keys, 0, KS_SCORE_MEAN_VAR, 5, KS_GQA_MEAN, 0, NULL}, "one query: variance 0"},
        {{0, n, pos0, n_keys, 0, KS_SCORE_SUM, 0, KS_GQA_NONE, 1, NULL}, "all 70 rows, per query head, accumulated"},
        {{n - 9, 9, pos0, n_keys, 0, KS_SCORE_MEAN_VAR, 3, KS_GQA_NONE, 0, NULL}, "mean + 3 var, per query head"},
    };
    float scale = 1.0f / sqrtf((float)d);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const ks_window_args *a = &cases[c].a;
        const int rows = a->reduce == KS_GQA_NONE ? H : Hk;
        memcpy(want, init, sizeof(float) * H * ld);
        memcpy(got, init, sizeof(float) * H * ld);
        if (!a->accumulate)
            for (int i = 0; i < H * ld; i++) got[i] = NAN;
        ks_window_summary ws, wf;
        ks_ref_window_scores(want, ld, &ws, q, k, H, Hk, d, cap, scale, a);
        ks_fast_window_scores(got, ld, &wf, q, k, H, Hk, d, cap, scale, a, NULL, work);
        for (int g = 0; g < rows; g++)
            assert_close(got + (size_t)g * ld, want + (size_t)g * ld, n_keys, 2e-5f, cases[c].what);
        /* again with the log-sum-exps the prefill attention of these queries leaves (one pass over the keys) */
        memcpy(got, init, sizeof(float) * H * ld);
        ks_fast_attention(att, q, k, k, n, n_keys, cap, H, Hk, d, pos0, 0, scale, lse);
        ks_fast_window_scores(got, ld, &wf, q, k, H, Hk, d, cap, scale, a, lse, work);
        for (int g = 0; g < rows; g++)
            assert_close(got + (size_t)g * ld, want + (size_t)g * ld, n_keys, 2e-5f, cases[c].what);
        if (a->reduce == KS_GQA_NONE) { /* each group's rows reduce to what the reduced call writes */
            ks_window_args r = *a;
            float *red = malloc(sizeof(float) * Hk * ld);
            for (int m = KS_GQA_MEAN; m <= KS_GQA_SUM; m++) {
                r.reduce = (ks_gqa_reduce)m, r.accumulate = 0;
                ks_fast_window_scores(red, ld, NULL, q, k, H, Hk, d, cap, scale, &r, NULL, work);
                memcpy(got, init, sizeof(float) * H * ld);
                r.reduce = KS_GQA_NONE;
                ks_fast_window_scores(got, ld, NULL, q, k, H, Hk, d, cap, scale, &r, NULL, work);
                for (int g = 0; g < Hk; g++)
                    for (int j = 0; j < n_keys; j++)
                        ck_assert_msg(ks_gqa_reduce_col(got + (size_t)g * (H / Hk) * ld + j, ld, H / Hk, m) ==
                                          red[(size_t)g * ld + j],
                                      "%s: reduction %d of head %d key %d", cases[c].what, m, g, j);
            }
            free(red);
        }
        if (a->stat == KS_SCORE_MEAN_VAR) {
            ck_assert_msg(ws.entropy > 0 && fabs(wf.entropy - ws.entropy) <= 1e-4 * ws.entropy, "%s: entropy %g vs %g",
                          cases[c].what, wf.entropy, ws.entropy);
            ck_assert_msg(fabs(wf.var_sum - ws.var_sum) <= 1e-4 * ws.var_sum + 1e-9, "%s: var sum %g vs %g",
                          cases[c].what, wf.var_sum, ws.var_sum);
            if (a->n_q == 1) ck_assert(ws.var_sum == 0 && wf.var_sum == 0);
        }
        if (a->stat == KS_SCORE_SUM && a->reduce == KS_GQA_MEAN && !a->softmax_chunk)
            for (int g = 0; g < Hk; g++) {
                double tot = 0;
                for (int j = 0; j < n_keys; j++) tot += want[(size_t)g * ld + j];
                ck_assert_msg(fabs(tot - a->n_q) < 1e-3, "%s: head %d mass %g, want %d", cases[c].what, g, tot, a->n_q);
            }
        if (a->softmax_chunk) /* keys from the first scored query on are not scored */
            for (int j = pos0 + a->q_row0; j < n_keys; j++) ck_assert(want[j] == 0 && got[j] == 0);
        { /* a->sums = what stat SUM, reduce MEAN, the plain causal softmax writes (also next to LOOM's chunks) */
            ks_window_args as = *a, plain = *a;
            plain.stat = KS_SCORE_SUM, plain.reduce = KS_GQA_MEAN, plain.accumulate = 0, plain.softmax_chunk = 0;
            ks_ref_window_scores(want, ld, NULL, q, k, H, Hk, d, cap, scale, &plain);
            as.sums = sums_ref;
            memcpy(got, init, sizeof(float) * Hk * ld);
            ks_ref_window_scores(got, ld, NULL, q, k, H, Hk, d, cap, scale, &as);
            for (int g = 0; g < Hk; g++)
                assert_close(sums_ref + (size_t)g * ld, want + (size_t)g * ld, n_keys, 1e-6f, cases[c].what);
            for (int i = 0; i < Hk * ld; i++) sums_fast[i] = NAN;
            as.sums = sums_fast;
            ks_fast_window_scores(got, ld, NULL, q, k, H, Hk, d, cap, scale, &as, NULL, work);
            for (int g = 0; g < Hk; g++)
                assert_close(sums_fast + (size_t)g * ld, want + (size_t)g * ld, n_keys, 2e-5f, cases[c].what);
        }
    }
    free(q), free(k), free(work), free(want), free(got), free(init), free(att), free(lse);
    free(sums_ref), free(sums_fast);
}
END_TEST

/* Decode probabilities: fast against reference with per-head lengths and start rows, reduced and per query head
 * (a row of its KV head's length per query head); the group mean of each KV head's probabilities, and each
 * query head's, sums to 1 and is 0 before its start row. */
START_TEST(test_attention_decode_probs) {
    int H = 12, Hk = 4, G = H / Hk, d = 56, cap = 300, ld = 310;
    int32_t len[4] = {1, 77, 300, 160}, start[4] = {0, 70, 1, 99};
    float *q = ks_test_rand_buf((size_t)H * d, 2), *k = cache_buf(Hk, cap, d, len);
    float *want = malloc(sizeof(float) * H * ld), *got = nan_buf((size_t)H * ld);
    float *work = malloc(sizeof(float) * H * ld);
    float scale = 1.0f / sqrtf((float)d);
    const ks_gqa_reduce reduces[] = {KS_GQA_MEAN, KS_GQA_MAX, KS_GQA_SUM, KS_GQA_NONE};
    for (int r = 0; r < 4; r++) {
        const int per = reduces[r] == KS_GQA_NONE ? G : 1; /* rows per KV head */
        ks_ref_attention_decode_probs(want, ld, q, k, start, len, cap, H, Hk, d, scale, reduces[r]);
        ks_fast_attention_decode_probs(got, ld, q, k, start, len, cap, H, Hk, d, scale, reduces[r], work);
        for (int row = 0; row < Hk * per; row++) {
            int g = row / per;
            assert_close(got + (size_t)row * ld, want + (size_t)row * ld, len[g], 2e-6f, "decode probabilities");
            double tot = 0;
            for (int j = 0; j < len[g]; j++) tot += want[(size_t)row * ld + j];
            for (int j = 0; j < start[g]; j++)
                ck_assert(want[(size_t)row * ld + j] == 0 && got[(size_t)row * ld + j] == 0);
            if (reduces[r] == KS_GQA_MEAN || reduces[r] == KS_GQA_NONE)
                ck_assert_msg(fabs(tot - 1) < 1e-5, "row %d: mass %g", row, tot);
        }
    }
    free(q), free(k), free(want), free(got), free(work);
}
END_TEST

/* Key norms of known rows, and compaction: kept rows land at the front in order, with their values. */
START_TEST(test_key_norms_and_compact) {
    int Hk = 2, cap = 9, d = 4, ld = 12;
    int32_t len[2] = {7, 5};
    float *k = cache_buf(Hk, cap, d, len), *v = cache_buf(Hk, cap, d, len);
    for (int i = 0; i < d; i++) k[3 * d + i] = i == 1 ? 3.0f : i == 2 ? -4.0f : 0.0f; /* head 0, row 3: norm 5 */
    float *k0 = malloc(sizeof(float) * Hk * cap * d), *v0 = malloc(sizeof(float) * Hk * cap * d);
    memcpy(k0, k, sizeof(float) * Hk * cap * d);
    memcpy(v0, v, sizeof(float) * Hk * cap * d);
    float norms[2 * 12];
    ks_ref_key_norms(norms, ld, k, len, cap, Hk, d);
    ck_assert_float_eq_tol(norms[3], 5.0f, 1e-6f);
    for (int g = 0; g < Hk; g++)
        for (int j = 0; j < len[g]; j++) ck_assert(isfinite(norms[g * ld + j]) && norms[g * ld + j] > 0);

    int32_t keep[2 * 12] = {0, 3, 6}, n_keep[2] = {3, 5};
    for (int i = 0; i < 5; i++) keep[ld + i] = i; /* head 1 keeps everything: rows must not move */
    ks_ref_kv_compact(k, v, keep, n_keep, ld, cap, Hk, d);
    for (int g = 0; g < Hk; g++)
        for (int i = 0; i < n_keep[g]; i++) {
            size_t dst = ((size_t)g * cap + i) * d, src = ((size_t)g * cap + keep[g * ld + i]) * d;
            ck_assert_mem_eq(k + dst, k0 + src, sizeof(float) * d);
            ck_assert_mem_eq(v + dst, v0 + src, sizeof(float) * d);
        }
    free(k), free(v), free(k0), free(v0);
}
END_TEST

/* ThinK's channel scores on a hand-worked case: two query heads over one KV head (GQA), two channels; query
 * head 0's rows (1, 2), (3, 0) and the keys (1, 1), (3, 0): channel 0 = mean(1, 9) * mean(1, 9) = 25, channel 1 =
 * mean(4, 0) * mean(1, 0) = 1; query head 1's rows (0, 1), (0, 1): channel 0 = 0, channel 1 = 1 * 0.5. A KV head
 * with no rows scores 0. */
START_TEST(test_channel_scores) {
    const int H = 4, Hk = 2, d = 2, cap = 3, ld = 3, n_q = 2;
    const float q[2][4][2] = {{{1, 2}, {0, 1}, {5, 5}, {5, 5}}, {{3, 0}, {0, 1}, {5, 5}, {5, 5}}};
    float k[2 * 3 * 2] = {1, 1, 3, 0, 7, 7, 9, 9, 9, 9, 9, 9}; /* head 0 holds rows 0, 1 (row 2 is free capacity) */
    int32_t len[2] = {2, 0};
    float out[4 * 3];
    ks_ref_channel_scores(out, ld, &q[0][0][0], n_q, k, len, cap, H, Hk, d);
    const float want[4][2] = {{25, 1}, {0, 0.5f}, {0, 0}, {0, 0}};
    for (int i = 0; i < H; i++)
        for (int c = 0; c < d; c++)
            ck_assert_msg(fabsf(out[i * ld + c] - want[i][c]) < 1e-6f, "head %d channel %d: %g, want %g", i, c,
                          out[i * ld + c], want[i][c]);
}
END_TEST

START_TEST(test_argmax) {
    float x[7] = {-1, 3, 2, 3, -5, 0, 1};
    ck_assert_int_eq(ks_ref_argmax(x, 7), 1); /* first of the tied maxima */
    ck_assert_int_eq(ks_ref_argmax(x + 2, 5), 1);
}
END_TEST

/* The CPU backend's block-sparse prefill against the reference on fresh random inputs: random lists (empty rows
 * included) and the full list, blocks smaller and larger than its 64-row tiles, chunks starting mid-block, GQA,
 * a sliding window; the full list also equals the dense fast path. */
START_TEST(test_attention_sparse_fast) {
    const struct {
        att_case a;
        int B;
    } cases[] = {{{37, 0, 6, 2, 40, 0}, 8}, {{29, 21, 4, 2, 16, 0}, 16}, {{40, 50, 4, 1, 8, 13}, 8},
                 {{150, 70, 4, 2, 32, 0}, 80}, {{131, 128, 2, 1, 64, 0}, 128}, {{97, 5, 6, 3, 24, 40}, 32}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        att_case a = cases[c].a;
        int B = cases[c].B, n_kv = a.pos0 + a.n, cap = n_kv + 3;
        int32_t valid[8];
        for (int g = 0; g < a.Hk; g++) valid[g] = n_kv;
        float *q = ks_test_rand_buf((size_t)a.n * a.H * a.d, 2), *k = cache_buf(a.Hk, cap, a.d, valid),
              *v = cache_buf(a.Hk, cap, a.d, valid);
        size_t no = (size_t)a.n * a.H * a.d;
        float *want = nan_buf(no), *got = nan_buf(no), scale = 1.0f / sqrtf((float)a.d);
        for (int keep_all = 0; keep_all <= 1; keep_all++) {
            ks_block_list l = random_block_list(a.H, a.n, a.pos0, B, keep_all, (unsigned)c * 31 + 3);
            ks_ref_attention_sparse(want, q, k, v, a.n, n_kv, cap, a.H, a.Hk, a.d, a.pos0, a.window, scale, &l);
            ks_fast_attention_sparse(got, q, k, v, a.n, n_kv, cap, a.H, a.Hk, a.d, a.pos0, a.window, scale, &l);
            assert_close(got, want, no, 2e-6f, keep_all ? "fast sparse prefill, full list" : "fast sparse prefill");
            if (keep_all) {
                ks_fast_attention(want, q, k, v, a.n, n_kv, cap, a.H, a.Hk, a.d, a.pos0, a.window, scale, NULL);
                assert_close(got, want, no, 1e-6f, "fast sparse prefill, full list, vs dense");
            }
            free(l.row_start), free(l.cols);
        }
        free(q), free(k), free(v), free(want), free(got);
    }
}
END_TEST

int main(void) {
    ks_fast_set_threads(2);
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("kernels");
    tcase_add_test(tc, test_gemm);
    tcase_add_test(tc, test_gemm_rows);
    tcase_add_test(tc, test_rmsnorm);
    tcase_add_test(tc, test_rope);
    tcase_add_test(tc, test_swiglu);
    tcase_add_test(tc, test_attention_prefill);
    tcase_add_test(tc, test_attention_chunked);
    tcase_add_test(tc, test_attention_sparse);
    tcase_add_test(tc, test_attention_sparse_fast);
    tcase_add_test(tc, test_attention_decode);
    tcase_add_test(tc, test_window_scores);
    tcase_add_test(tc, test_attention_decode_probs);
    tcase_add_test(tc, test_key_norms_and_compact);
    tcase_add_test(tc, test_channel_scores);
    tcase_add_test(tc, test_argmax);
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
