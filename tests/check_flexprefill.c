/* check_flexprefill.c — FlexPrefill's estimation (kernels/cpu/flexprefill_ref.h) on hand-built cases whose answers
 * are worked out from the algorithm in the comments, step by step and then whole; and the properties: every
 * list well formed (ascending rows, columns <= the row, column 0 and the diagonal present), gamma = 1 with a full
 * budget lists every causal block, force_density gives each row its fraction.
 *
 *     check_flexprefill            the estimation (label "unit")
 *     check_flexprefill smollm2    the method on SmolLM2 (label "model"): gamma = 1 with a full budget gives
 *                                  FullKV's greedy tokens (query-aware heads on a short prompt, vertical-slash
 *                                  heads with B = 128 on a long one), and FlexPrefill+SnapKV SnapKV's; a sparse
 *                                  run's statistics; a prompt longer than the chunk is refused naming --chunk. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "cpu/flexprefill_ref.h"
#include "engine/forward.h"
#include "engine/generate.h"
#include "methods/method.h"
#include "test_util.h"

/* ---- helpers ---------------------------------------------------------------------------------------------- */

typedef struct {
    ks_block_list l;
    ks_flexprefill_stat st[8];
} flex_out;

static flex_out run(const float *q, const float *k, int cap, const ks_flexprefill_args *a) {
    ck_assert_ptr_null(ks_flexprefill_check(a));
    ck_assert_int_le(a->H, 8);
    int nb = ks_flexprefill_blocks(a);
    flex_out o = {.l = {.row_start = malloc(sizeof(int32_t) * (size_t)(a->H * nb + 1)),
                        .cols = malloc(sizeof(int32_t) * ks_flexprefill_max_cols(a))}};
    ks_flexprefill_ref(&o.l, o.st, q, k, cap, a);
    ck_assert_int_eq(o.l.block, a->block);
    ck_assert_int_eq(o.l.H, a->H);
    ck_assert_int_eq(o.l.qb0, 0);
    ck_assert_int_eq(o.l.n_qblocks, nb);
    return o;
}

static void out_free(flex_out *o) { free(o->l.row_start), free(o->l.cols); }

/* Head h's rows as text, "0|0 1|0 2": rows separated by '|', columns by ' '. */
static const char *rows_text(const ks_block_list *l, int h) {
    static char buf[4096];
    size_t n = 0;
    for (int qb = 0; qb < l->n_qblocks; qb++) {
        int r = ks_block_row(l, h, qb);
        if (qb) n += (size_t)snprintf(buf + n, sizeof buf - n, "|");
        for (int c = l->row_start[r]; c < l->row_start[r + 1]; c++)
            n += (size_t)snprintf(buf + n, sizeof buf - n, c > l->row_start[r] ? " %d" : "%d", l->cols[c]);
    }
    return buf;
}

/* A mask (nb, nb)'s causal part as rows_text writes a list. */
static const char *mask_text(const uint8_t *mask, int nb) {
    static char buf[4096];
    size_t n = 0;
    for (int i = 0; i < nb; i++) {
        if (i) n += (size_t)snprintf(buf + n, sizeof buf - n, "|");
        for (int c = 0, first = 1; c <= i; c++)
            if (mask[i * nb + c]) n += (size_t)snprintf(buf + n, sizeof buf - n, first ? "%d" : " %d", c), first = 0;
    }
    return buf;
}

/* Every row strictly ascending, within the causal triangle, holding column 0 and the diagonal; the statistics'
 * block counts and sparsities agree with the list. */
static void assert_well_formed(const flex_out *o) {
    const ks_block_list *l = &o->l;
    int nb = l->n_qblocks;
    for (int h = 0; h < l->H; h++) {
        int64_t blocks = 0;
        for (int qb = 0; qb < nb; qb++) {
            int r = ks_block_row(l, h, qb), a = l->row_start[r], b = l->row_start[r + 1];
            ck_assert_int_ge(b - a, qb ? 2 : 1);
            ck_assert_int_eq(l->cols[a], 0);
            ck_assert_int_eq(l->cols[b - 1], qb);
            for (int c = a + 1; c < b; c++) ck_assert_int_lt(l->cols[c - 1], l->cols[c]);
            blocks += b - a;
        }
        ck_assert_int_eq(o->st[h].blocks, blocks);
        ck_assert_float_eq_tol(o->st[h].sparsity, 1.0 - (double)blocks / (nb * (nb + 1) / 2.0), 1e-6);
    }
}

static void assert_full(const flex_out *o) {
    int nb = o->l.n_qblocks;
    for (int h = 0; h < o->l.H; h++) {
        ck_assert_int_eq(o->st[h].blocks, (int64_t)nb * (nb + 1) / 2);
        for (int qb = 0; qb < nb; qb++) {
            int r = ks_block_row(&o->l, h, qb);
            ck_assert_int_eq(o->l.row_start[r + 1] - o->l.row_start[r], qb + 1);
            for (int c = 0; c <= qb; c++) ck_assert_int_eq(o->l.cols[o->l.row_start[r] + c], c);
        }
    }
}

/* ---- step 3: cover and counts ---------------------------------------------------------------------------- */

/* cover(x) = 1 + #{prefix sums of x sorted descending <= gamma * total}.
 *   m equal entries 1/m and some zeros: prefix k is k/m, so cover = floor(gamma m) + 1 (away from equality).
 *   m = 254, gamma 0.502: 0.502 * 254 = 127.5 -> 127 prefixes -> cover 128 -> count 128 / 128 + 1 = 2.
 *   m = 252, gamma 0.502: 126.5 -> 126 -> cover 127 -> count 127 / 128 + 1 = 1 (the literal 128, not m or B).
 *   {0.5, 0.25, 0.25, 0}: prefixes 0.5 0.75 1 1; gamma 1 keeps all 4 -> 5; 0.75 keeps 2 -> 3; 0.7499 -> 2. */
START_TEST(test_cover) {
    float x[300];
    for (int m = 252; m <= 254; m += 2) {
        for (int i = 0; i < 300; i++) x[i] = i < m ? 1.0f / m : 0.0f;
        int cover = ks_flexprefill_cover(x, 300, 0.502f);
        ck_assert_int_eq(cover, (m == 254 ? 128 : 127));
        ck_assert_int_eq(ks_flexprefill_count(cover, 1, 100), (m == 254 ? 2 : 1));
    }
    const float y[4] = {0.25f, 0.5f, 0.0f, 0.25f}; /* any order: cover sorts */
    ck_assert_int_eq(ks_flexprefill_cover(y, 4, 1.0f), 5);
    ck_assert_int_eq(ks_flexprefill_cover(y, 4, 0.75f), 3);
    ck_assert_int_eq(ks_flexprefill_cover(y, 4, 0.7499f), 2);
}
END_TEST

/* count(cover, mb, Mb) = cover / 128 + 1, raised to mb, then lowered to Mb:
 *   127 -> 1, 128 -> 2, 255 -> 2, 256 -> 3 (mb 1, Mb 9);
 *   1000 -> 7 + 1 = 8 in [4, 20]; raised to 10 in [10, 20]; lowered to 5 in [1, 5];
 *   mb 10 > Mb 5: 8 -> 10 -> 5 (the upper bound wins). */
START_TEST(test_count) {
    ck_assert_int_eq(ks_flexprefill_count(127, 1, 9), 1);
    ck_assert_int_eq(ks_flexprefill_count(128, 1, 9), 2);
    ck_assert_int_eq(ks_flexprefill_count(255, 1, 9), 2);
    ck_assert_int_eq(ks_flexprefill_count(256, 1, 9), 3);
    ck_assert_int_eq(ks_flexprefill_count(1000, 4, 20), 8);
    ck_assert_int_eq(ks_flexprefill_count(1000, 10, 20), 10);
    ck_assert_int_eq(ks_flexprefill_count(1000, 1, 5), 5);
    ck_assert_int_eq(ks_flexprefill_count(1000, 10, 5), 5);
}
END_TEST

/* ---- step 5: the divergence --------------------------------------------------------------------------------- */

/* d_JS = sqrt(KL(p||m)/2 + KL(q||m)/2), m = (p + q)/2, 0 log 0 = 0:
 *   p = q: 0.
 *   {1, 0} vs {0, 1}: m = {1/2, 1/2}, both KL = ln 2, d = sqrt(ln 2) = 0.832555.
 *   {1, 0} vs {1/2, 1/2}: m = {3/4, 1/4}; KL(p||m) = ln(4/3) = 0.287682; KL(q||m) = (ln(2/3) + ln 2)/2 = 0.143841;
 *   d = sqrt(0.215762) = 0.464501. */
START_TEST(test_js) {
    const float u[2] = {0.5f, 0.5f}, a[2] = {1, 0}, b[2] = {0, 1};
    ck_assert_float_eq_tol(ks_flexprefill_js(u, u, 2), 0.0f, 1e-6f);
    ck_assert_float_eq_tol(ks_flexprefill_js(a, b, 2), 0.832555f, 1e-5f);
    ck_assert_float_eq_tol(ks_flexprefill_js(a, u, 2), 0.464501f, 1e-5f);
    ck_assert_float_eq_tol(ks_flexprefill_js(u, a, 2), 0.464501f, 1e-5f);
}
END_TEST

/* ---- step 6 and the fills, on their own ---------------------------------------------------------------- */

/* nb = 4, v_b = {0.05, 0.3, 0.3, 0.35}, s_b = {0.4, 0.3, 0.3, 0} (s_b[b] is offset 3 - b).
 *   n_v = n_s = 1: column 0 and the diagonal only, whatever v_b and s_b favour: "0|0 1|0 2|0 3".
 *   n_v = 2: vertical block 3 (0.35): (3, 3), already the diagonal. n_v = 3: then blocks 1 and 2 tie at 0.3, the
 *   lower (1) wins: (1, 1), (2, 1), (3, 1).
 *   n_s = 2: the best other than b = 3 is b = 0 (0.4), offset 3: (3, 0). n_s = 3: then b = 1 and 2 tie, b = 1
 *   wins: offset 2: (2, 0), (3, 1).
 *   n_v = 3, n_s = 3: "0|0 1|0 1 2|0 1 3". n_v = 4, n_s = 4: every vertical block, the full list. */
START_TEST(test_mark_vertical_slash) {
    const float v_b[4] = {0.05f, 0.3f, 0.3f, 0.35f}, s_b[4] = {0.4f, 0.3f, 0.3f, 0.0f};
    uint8_t mask[16];
    memset(mask, 0, sizeof mask);
    ks_flexprefill_mark_vertical_slash(mask, v_b, s_b, 4, 1, 1);
    ck_assert_str_eq(mask_text(mask, 4), "0|0 1|0 2|0 3");
    memset(mask, 0, sizeof mask);
    ks_flexprefill_mark_vertical_slash(mask, v_b, s_b, 4, 3, 1);
    ck_assert_str_eq(mask_text(mask, 4), "0|0 1|0 1 2|0 1 3");
    memset(mask, 0, sizeof mask);
    ks_flexprefill_mark_vertical_slash(mask, v_b, s_b, 4, 1, 2);
    ck_assert_str_eq(mask_text(mask, 4), "0|0 1|0 2|0 3");
    memset(mask, 0, sizeof mask);
    ks_flexprefill_mark_vertical_slash(mask, v_b, s_b, 4, 1, 3);
    ck_assert_str_eq(mask_text(mask, 4), "0|0 1|0 2|0 1 3");
    memset(mask, 0, sizeof mask);
    ks_flexprefill_mark_vertical_slash(mask, v_b, s_b, 4, 3, 3);
    ck_assert_str_eq(mask_text(mask, 4), "0|0 1|0 1 2|0 1 3");
    memset(mask, 0, sizeof mask);
    ks_flexprefill_mark_vertical_slash(mask, v_b, s_b, 4, 4, 4);
    ck_assert_str_eq(mask_text(mask, 4), "0|0 1|0 1 2|0 1 2 3");
}
END_TEST

/* Block attention rows {1}, {0.3, 0.7}, {0.5, 0.1, 0.4} (total 3), descending: (0,0) 1, (1,1) 0.7, (2,0) 0.5,
 * (2,2) 0.4, (1,0) 0.3, (2,1) 0.1; running sums 1, 1.7, 2.2, 2.6, 2.9, 3.
 *   gamma 0.8 (<= 2.4): (0,0) (1,1) (2,0); (2,2) crosses and is left out: "0|1|0".
 *   gamma 0.97 (<= 2.91): all but (2,1): "0|0 1|0 2".  gamma 1: all six.
 * The entries above the diagonal are NaN: never read. */
START_TEST(test_mark_query_aware) {
    const float p[9] = {1.0f, NAN, NAN, 0.3f, 0.7f, NAN, 0.5f, 0.1f, 0.4f};
    uint8_t mask[9];
    memset(mask, 0, sizeof mask);
    ks_flexprefill_mark_query_aware(mask, p, 3, 0.8f);
    ck_assert_str_eq(mask_text(mask, 3), "0|1|0");
    memset(mask, 0, sizeof mask);
    ks_flexprefill_mark_query_aware(mask, p, 3, 0.97f);
    ck_assert_str_eq(mask_text(mask, 3), "0|0 1|0 2");
    memset(mask, 0, sizeof mask);
    ks_flexprefill_mark_query_aware(mask, p, 3, 1.0f);
    ck_assert_str_eq(mask_text(mask, 3), "0|0 1|0 1 2");
}
END_TEST

/* nb = 5, v_b = {0.5, 0.1, 0.3, 0.1, 0}, s_b = {0.2, 0.05, 0.05, 0.3, 0.4}; block (i, c) scores
 * v_b[c] + s_b[4 - (i - c)]; row i keeps ceil(f (i + 1)) blocks, at least column 0 and the diagonal.
 *   f = 0.5: targets 1, 1 -> 2, 2, 2, 3. Row 4 picks one of c = 1, 2, 3: 0.1 + 0.05, 0.3 + 0.05, 0.1 + 0.3 -> 3.
 *     "0|0 1|0 2|0 3|0 3 4".
 *   f = 0.75: targets 1, 2, 3, 3, 4. Row 2: all. Row 3: one of c = 1 (0.1 + s_b[2] = 0.15), c = 2 (0.3 + s_b[3]
 *     = 0.6) -> 2. Row 4: two: 3 (0.4), 2 (0.35). "0|0 1|0 1 2|0 2 3|0 2 3 4". */
START_TEST(test_mark_forced) {
    const float v_b[5] = {0.5f, 0.1f, 0.3f, 0.1f, 0.0f}, s_b[5] = {0.2f, 0.05f, 0.05f, 0.3f, 0.4f};
    uint8_t mask[25];
    memset(mask, 0, sizeof mask);
    ks_flexprefill_mark_forced(mask, v_b, s_b, 5, 0.5f);
    ck_assert_str_eq(mask_text(mask, 5), "0|0 1|0 2|0 3|0 3 4");
    memset(mask, 0, sizeof mask);
    ks_flexprefill_mark_forced(mask, v_b, s_b, 5, 0.75f);
    ck_assert_str_eq(mask_text(mask, 5), "0|0 1|0 1 2|0 2 3|0 2 3 4");
    memset(mask, 0, sizeof mask);
    ks_flexprefill_mark_forced(mask, v_b, s_b, 5, 1.0f);
    ck_assert_str_eq(mask_text(mask, 5), "0|0 1|0 1 2|0 1 2 3|0 1 2 3 4");
}
END_TEST

/* ---- the whole estimation ---------------------------------------------------------------------------------- */

/* Step 0: dense when L <= max(2B, ceil(min_budget / B) B). B = 4: L = 8 is dense (2B); L = 9 with min_budget 1
 * is not; min_budget 9 (3 blocks, 12 tokens) makes L = 9 and 12 dense again, not L = 13. A dense list is full,
 * its heads DENSE with coverage 1. */
START_TEST(test_dense_fallback) {
    ks_flexprefill_args a = {.block = 4, .gamma = 0.9f, .tau = 0.1f, .min_budget = 1, .H = 2, .Hk = 1, .d = 2};
    const int L[] = {8, 9, 9, 12, 13}, mb[] = {1, 1, 9, 9, 9}, dense[] = {1, 0, 1, 1, 0};
    for (int c = 0; c < 5; c++) {
        a.L = L[c], a.min_budget = mb[c];
        ck_assert_int_eq(ks_flexprefill_is_dense(&a), dense[c]);
    }
    a.L = 12;
    float *q = ks_test_rand_buf((size_t)a.L * a.H * a.d, 1), *k = ks_test_rand_buf((size_t)a.L * a.d, 1);
    flex_out o = run(q, k, a.L, &a);
    assert_full(&o);
    for (int h = 0; h < a.H; h++) {
        ck_assert_int_eq(o.st[h].pattern, KS_FLEX_DENSE);
        ck_assert_float_eq(o.st[h].coverage, 1.0f);
        ck_assert_float_eq(o.st[h].sparsity, 0.0f);
    }
    out_free(&o);
    free(q), free(k);
}
END_TEST

/* Uniform attention: every key 0, so each scored query (positions 8 .. 11, B = 4, L = 12, nb = 3) spreads 1/(p + 1)
 * over its p + 1 keys.
 *   vertical_j = (1/4) sum over p >= max(8, j) of 1/(p + 1): c = (1/9 + 1/10 + 1/11 + 1/12)/4 = 0.096338 for
 *   j <= 8, then 0.068561, 0.043561, 0.020833. gamma 0.9: 9 c = 0.867 <= 0.9, + 0.0686 > 0.9: 9 prefixes,
 *   cover 10, n_v = 10 / 128 + 1 = 1 (mb 1). Slash mirrors it: n_s = 1.
 *   v_b = {4c, 4c, (1/9 + 2/10 + 3/11 + 4/12)/4} = {0.385354, 0.385354, 0.229293}.
 *   Zero keys: every block mean key is 0, a = {1/3, 1/3, 1/3}; d_JS(a, v_b) = 0.081987 (m = {0.359344, 0.359344,
 *   0.281313}: KL(a||m) = 0.006468, KL(v_b||m) = 0.006977).
 *   tau 0.07 < d: VERTICAL_SLASH, n_v = n_s = 1: "0|0 1|0 2", 5 blocks, sparsity 1/6. Coverage: row 2 lists
 *   keys 0..3 and 8..11, the query at p holds (4 + p - 7)/(p + 1): (5/9 + 6/10 + 7/11 + 8/12)/4 = 0.614646.
 *   tau 0.09 > d: QUERY_AWARE, n_v = n_s = mb = 1, plus the fill: block attention rows {1}, {1/2, 1/2},
 *   {1/3, 1/3, 1/3}, gamma 0.9 (<= 2.7): 1, 1.5 (1,0), 2 (1,1), 2.333 (2,0), 2.667 (2,1); (2,2) would reach 3.
 *   With the forced blocks: every block, coverage 1. */
START_TEST(test_uniform_js_both_sides) {
    ks_flexprefill_args a = {.block = 4, .gamma = 0.9f, .tau = 0.07f, .min_budget = 1, .H = 1, .Hk = 1, .d = 2,
                             .L = 12};
    float q[24], k[24], v[12], s[12];
    for (int i = 0; i < 24; i++) q[i] = i % 2 ? 0.0f : 1.0f, k[i] = 0;
    ks_flexprefill_score(v, s, q, k, 12, 0, &a);
    const float c = (1.0f / 9 + 1.0f / 10 + 1.0f / 11 + 1.0f / 12) / 4;
    for (int j = 0; j <= 8; j++) ck_assert_float_eq_tol(v[j], c, 1e-6f);
    ck_assert_float_eq_tol(v[9], 0.068561f, 1e-6f);
    ck_assert_float_eq_tol(v[10], 0.043561f, 1e-6f);
    ck_assert_float_eq_tol(v[11], 0.020833f, 1e-6f);
    for (int j = 0; j < 12; j++) ck_assert_float_eq_tol(s[j], v[11 - j], 1e-6f);
    ck_assert_int_eq(ks_flexprefill_cover(v, 12, 0.9f), 10);

    flex_out o = run(q, k, 12, &a);
    ck_assert_str_eq(rows_text(&o.l, 0), "0|0 1|0 2");
    ck_assert_int_eq(o.st[0].pattern, KS_FLEX_VERTICAL_SLASH);
    ck_assert_float_eq_tol(o.st[0].d_js, 0.081987f, 1e-5f);
    ck_assert_int_eq(o.st[0].n_v, 1);
    ck_assert_int_eq(o.st[0].n_s, 1);
    ck_assert_float_eq_tol(o.st[0].coverage, 0.614646f, 1e-5f);
    assert_well_formed(&o);
    out_free(&o);

    a.tau = 0.09f;
    o = run(q, k, 12, &a);
    ck_assert_str_eq(rows_text(&o.l, 0), "0|0 1|0 1 2");
    ck_assert_int_eq(o.st[0].pattern, KS_FLEX_QUERY_AWARE);
    ck_assert_int_eq(o.st[0].n_v, 1);
    ck_assert_float_eq_tol(o.st[0].coverage, 1.0f, 1e-6f);
    assert_well_formed(&o);
    out_free(&o);
}
END_TEST

/* A partial last block: B = 4, L = 10, nb = 3 (block 2 holds tokens 8, 9). The scored queries are the last B
 * tokens, 6 .. 9, across rows 1 and 2. Queries (1, 0), so the scaled query is (1/sqrt 2, 0); keys 8 and 9 are
 * (sqrt 2 ln 3, 0) (weight 3), the others 0 (weight 1).
 *   A: p = 6: 1/7 each; p = 7: 1/8; p = 8: 1/11, key 8 3/11; p = 9: 1/14, keys 8, 9 3/14.
 *   vertical_8 = (3/11 + 3/14)/4 = 0.121753; v_b = {1/7 + 1/8 + 1/11 + 1/14 = 0.430195, 0.394481, 0.175325}.
 *   Block mean keys: 0, 0 and block 2's over its 2 tokens, (sqrt 2 ln 3, 0): a = softmax(0, 0, ln 3) =
 *   {0.2, 0.2, 0.6} (a mean over B = 4 would give weight sqrt 3 instead). m = {0.315097, 0.297240, 0.387662},
 *   KL(a||m) = 0.091919, KL(v_b||m) = 0.106474, d_JS = 0.314955.
 *   tau 0.30: VERTICAL_SLASH, n_v = n_s = 1: "0|0 1|0 2". Coverage: p = 6, 7 (row 1 lists everything) 1; p = 8
 *   (row 2: keys 0..3 and 8) 4/11 + 3/11; p = 9: 4/14 + 6/14: (2 + 7/11 + 10/14)/4 = 0.837662.
 *   tau 0.33: QUERY_AWARE. Block attention: rows {1}, {1/2, 1/2}, {0.2, 0.2, 0.6}; gamma 0.9 (<= 2.7): (0,0) 1,
 *   (2,2) 1.6, (1,0) 2.1, (1,1) 2.6; (2,0) would reach 2.8. The same list, "0|0 1|0 2". */
START_TEST(test_partial_last_block) {
    ks_flexprefill_args a = {.block = 4, .gamma = 0.9f, .tau = 0.30f, .min_budget = 1, .H = 1, .Hk = 1, .d = 2,
                             .L = 10};
    float q[20], k[20], v[10], s[10];
    for (int t = 0; t < 10; t++)
        q[2 * t] = 1, q[2 * t + 1] = 0, k[2 * t] = t >= 8 ? 1.5536724f : 0.0f, k[2 * t + 1] = 0;
    ks_flexprefill_score(v, s, q, k, 10, 0, &a);
    ck_assert_float_eq_tol(v[8], 0.121753f, 1e-5f);
    flex_out o = run(q, k, 10, &a);
    ck_assert_str_eq(rows_text(&o.l, 0), "0|0 1|0 2");
    ck_assert_int_eq(o.st[0].pattern, KS_FLEX_VERTICAL_SLASH);
    ck_assert_float_eq_tol(o.st[0].d_js, 0.314955f, 1e-4f);
    ck_assert_float_eq_tol(o.st[0].coverage, 0.837662f, 1e-5f);
    out_free(&o);
    a.tau = 0.33f;
    o = run(q, k, 10, &a);
    ck_assert_str_eq(rows_text(&o.l, 0), "0|0 1|0 2");
    ck_assert_int_eq(o.st[0].pattern, KS_FLEX_QUERY_AWARE);
    out_free(&o);
}
END_TEST

/* Sinks: keys 0 .. 253 are (14.142136, 0), the rest 0; every query (10, 0), so a scored query's logit is 100 on a
 * sink and 0 elsewhere: 1/254 on each sink, exactly 0 (fp32 underflow) elsewhere. B = 64, L = 384, nb = 6, tau 0
 * (never query-aware); query head 1 shares KV head 0 with head 0, so both give the same list.
 *   vertical: 254 entries of 1/254. gamma 0.502: cover 128 -> n_v = 128 / 128 + 1 = 2 (not 128 / B + 1 = 3).
 *   slash (the diagonal through (383, j) holds the sinks j - 63 + i, i = 0..63): #terms per j is j + 1 below 63,
 *   64 for j = 63..253 (191 entries of 1/254), then 317 - j: the top 127 are 1/254 -> cover 128 -> n_s = 2.
 *   v_b (in 1/254): {64, 64, 64, 62, 0, 0}: the best other than 0 ties 1 and 2 -> 1: column 1 on rows 1..5.
 *   s_b (in 1/(64 254)): {2080, 4096, 4096, 4093, 1891, 0}: the best other than b = 5 ties b = 1 and 2 -> 1,
 *   offset 4: (4, 0), (5, 1).
 *   -> "0|0 1|0 1 2|0 1 3|0 1 4|0 1 5", 15 of 21 blocks. Coverage: the scored queries' row 5 lists keys
 *   0..127 and 320..383, 128 of the 254 sinks: 0.503937.
 * gamma 0.498: cover 127 -> n_v = n_s = 1: "0|0 1|0 2|0 3|0 4|0 5", 11 blocks.
 * gamma 0.498, min_budget 129 (mb = 3; 384 > max(128, 192), not dense): n_v = n_s = 3: vertical 1, 2 (64 each,
 *   ahead of block 3's 62); slash b = 1, 2 (offsets 4, 3: (4,0) (5,1), (3,0) (4,1) (5,2)):
 *   "0|0 1|0 1 2|0 1 2 3|0 1 2 4|0 1 2 5", 18 blocks.
 * gamma 0.502, max_budget 64 (Mb = 1): n_v = n_s = 2 lowered to 1: 11 blocks; with min_budget 129 too (3 > 1),
 *   the upper bound wins: 1. */
START_TEST(test_sinks_literal_128_and_clamps) {
    enum { L = 384, H = 2, D = 2 };
    float *q = malloc(sizeof(float) * L * H * D), *k = malloc(sizeof(float) * L * D);
    for (int t = 0; t < L * H; t++) q[2 * t] = 10, q[2 * t + 1] = 0;
    for (int j = 0; j < L; j++) k[2 * j] = j < 254 ? 14.142136f : 0.0f, k[2 * j + 1] = 0;
    ks_flexprefill_args a = {.block = 64, .gamma = 0.502f, .tau = 0, .min_budget = 1, .H = H, .Hk = 1, .d = D,
                             .L = L};
    flex_out o = run(q, k, L, &a);
    for (int h = 0; h < H; h++) {
        ck_assert_str_eq(rows_text(&o.l, h), "0|0 1|0 1 2|0 1 3|0 1 4|0 1 5");
        ck_assert_int_eq(o.st[h].pattern, KS_FLEX_VERTICAL_SLASH);
        ck_assert_int_eq(o.st[h].n_v, 2);
        ck_assert_int_eq(o.st[h].n_s, 2);
        ck_assert_int_eq(o.st[h].blocks, 15);
        ck_assert_float_eq_tol(o.st[h].coverage, 0.503937f, 1e-5f);
    }
    assert_well_formed(&o);
    out_free(&o);

    a.gamma = 0.498f;
    o = run(q, k, L, &a);
    ck_assert_str_eq(rows_text(&o.l, 0), "0|0 1|0 2|0 3|0 4|0 5");
    ck_assert_int_eq(o.st[0].n_v, 1);
    ck_assert_int_eq(o.st[0].n_s, 1);
    out_free(&o);

    a.min_budget = 129;
    o = run(q, k, L, &a);
    ck_assert_str_eq(rows_text(&o.l, 1), "0|0 1|0 1 2|0 1 2 3|0 1 2 4|0 1 2 5");
    ck_assert_int_eq(o.st[1].n_v, 3);
    ck_assert_int_eq(o.st[1].n_s, 3);
    ck_assert_int_eq(o.st[1].blocks, 18);
    assert_well_formed(&o);
    out_free(&o);

    a.gamma = 0.502f, a.min_budget = 1, a.max_budget = 64;
    o = run(q, k, L, &a);
    ck_assert_int_eq(o.st[0].n_v, 1);
    ck_assert_int_eq(o.st[0].blocks, 11);
    out_free(&o);
    a.min_budget = 129;
    o = run(q, k, L, &a);
    ck_assert_int_eq(o.st[0].n_v, 1);
    ck_assert_int_eq(o.st[0].n_s, 1);
    out_free(&o);
    free(q), free(k);
}
END_TEST

/* gamma = 1 with a full budget (max_budget unbounded) lists every causal block: with B = 128 the counts cover every
 * token (cover L + 1 -> (L + 1) / 128 + 1 >= nb), and the query-aware fill takes every causal block; with B = 64
 * only the query-aware heads (tau above any d_JS) are full, the literal 128 halving the counts. */
START_TEST(test_gamma_one_full) {
    ks_flexprefill_args a = {.block = 128, .gamma = 1.0f, .min_budget = 1, .H = 4, .Hk = 2, .d = 16, .L = 700};
    float *q = ks_test_rand_buf((size_t)a.L * a.H * a.d, 2), *k = ks_test_rand_buf((size_t)a.L * a.Hk * a.d, 2);
    const int blocks[] = {128, 128, 64};
    const float taus[] = {0, 10, 10};
    for (int c = 0; c < 3; c++) {
        a.block = blocks[c], a.tau = taus[c];
        flex_out o = run(q, k, a.L, &a);
        assert_full(&o);
        for (int h = 0; h < a.H; h++) {
            ck_assert_int_eq(o.st[h].pattern, a.tau > 1 ? KS_FLEX_QUERY_AWARE : KS_FLEX_VERTICAL_SLASH);
            ck_assert_float_eq_tol(o.st[h].coverage, 1.0f, 1e-5f);
        }
        out_free(&o);
    }
    free(q), free(k);
}
END_TEST

/* force_density f: row i holds max(min(2, i + 1), ceil(f (i + 1))) blocks, column 0 and the diagonal among them;
 * every head FORCED. */
START_TEST(test_force_density_rows) {
    ks_flexprefill_args a = {.block = 32, .gamma = 0.9f, .tau = 0.1f, .min_budget = 1, .force_density = 0.3f,
                             .H = 3, .Hk = 1, .d = 8, .L = 500};
    float *q = ks_test_rand_buf((size_t)a.L * a.H * a.d, 2), *k = ks_test_rand_buf((size_t)a.L * a.Hk * a.d, 2);
    flex_out o = run(q, k, a.L, &a);
    assert_well_formed(&o);
    for (int h = 0; h < a.H; h++) {
        ck_assert_int_eq(o.st[h].pattern, KS_FLEX_FORCED);
        for (int i = 0; i < o.l.n_qblocks; i++) {
            int r = ks_block_row(&o.l, h, i), want = (int)ceilf(0.3f * (float)(i + 1)), floor2 = i + 1 < 2 ? i + 1 : 2;
            ck_assert_int_eq(o.l.row_start[r + 1] - o.l.row_start[r], want > floor2 ? want : floor2);
        }
    }
    out_free(&o);
    free(q), free(k);
}
END_TEST

/* The arguments' checks name the knob. */
START_TEST(test_check_args) {
    ks_flexprefill_args a = {.block = 128, .gamma = 0.9f, .tau = 0.1f, .min_budget = 512, .H = 4, .Hk = 2, .d = 8,
                             .L = 10};
    ck_assert_ptr_null(ks_flexprefill_check(&a));
    a.gamma = 1.5f;
    ck_assert_ptr_nonnull(strstr(ks_flexprefill_check(&a), "gamma"));
    a.gamma = 0.9f, a.min_budget = 0;
    ck_assert_ptr_nonnull(strstr(ks_flexprefill_check(&a), "min_budget"));
    a.min_budget = 1, a.force_density = 2;
    ck_assert_ptr_nonnull(strstr(ks_flexprefill_check(&a), "force_density"));
    a.force_density = 0, a.block = 0;
    ck_assert_ptr_nonnull(strstr(ks_flexprefill_check(&a), "block_size"));
}
END_TEST


/* ---- the method on SmolLM2 --------------------------------------------------------------------------------- */

enum { NEW = 12 };

static ks_method *create(const char *name, const char *const *opts) {
    int n = 0;
    while (opts && opts[n]) n++;
    ks_method *m;
    ck_assert_msg(ks_method_create(&m, name, NULL, opts, n) == KS_OK, "%s", ks_last_error());
    return m;
}

/* The prompt's NEW greedy tokens with method m (NULL: FullKV) into out, prefill chunk `chunk`. */
static ks_status generate(const ks_model *model, ks_method *m, const ks_ids *ids, int chunk, int32_t *out) {
    ks_forward f = {0};
    ks_forward_params fp = {.device = "cpu", .max_ctx = ids->n + NEW, .max_new = NEW, .chunk = chunk,
                            .cache = KS_CACHE_FULL};
    ck_assert_msg(ks_forward_init(&f, model, m, &fp) == KS_OK, "%s", ks_last_error());
    ks_generate_params gp = {.max_new_tokens = NEW};
    ks_generate_result r;
    ks_status st = ks_generate(&f, ids->ids, ids->n, &gp, out, &r);
    ks_forward_free(&f);
    return st;
}

static void assert_tokens(const int32_t *got, const int32_t *want, const char *what) {
    for (int t = 0; t < NEW; t++)
        ck_assert_msg(got[t] == want[t], "%s: token %d is %d, %d expected", what, t, got[t], want[t]);
}

/* The layers' sparse columns: density within [lo, hi], coverage in (0, 1], d_JS in (0, sqrt(ln 2)], the fraction
 * of query-aware heads `aware` (< 0: not checked). */
static void assert_sparse_stats(const ks_method *m, double lo, double hi, double aware) {
    ks_layer_stat st[KS_METHOD_MAX_LAYERS];
    int n = ks_method_layer_stats(m, st);
    ck_assert_int_gt(n, 0);
    for (int l = 0; l < n; l++) {
        ck_assert_msg(st[l].sparse_density >= lo - 1e-6 && st[l].sparse_density <= hi + 1e-6,
                      "layer %d: density %g outside [%g, %g]", l, st[l].sparse_density, lo, hi);
        ck_assert_msg(st[l].sparse_blocks > 0 && st[l].sparse_coverage > 0 && st[l].sparse_coverage <= 1.0001f,
                      "layer %d: %lld blocks, coverage %g", l, (long long)st[l].sparse_blocks, st[l].sparse_coverage);
        ck_assert_msg(st[l].sparse_djs > 0 && st[l].sparse_djs <= 0.8326f, "layer %d: d_JS %g", l, st[l].sparse_djs);
        if (aware >= 0) ck_assert_float_eq(st[l].sparse_query_aware, (float)aware);
    }
}

/* gamma = 1 with a full budget lists every causal block: FullKV's tokens. The short prompt (> 2 B = 32 tokens) with
 * B = 16 and tau = 1 (every head query-aware: d_JS <= sqrt(ln 2) < 1); and FlexPrefill+SnapKV gives SnapKV's. A
 * sparse run (gamma 0.9, tau 0.1) and force_density 0.5 (rows of 1, 2, 2 of 3 blocks: density 5/6 exactly). */
START_TEST(test_smollm2_short) {
    ks_model model;
    ks_tokenizer *tok;
    ks_ids ids;
    ks_test_smollm2_prompt(&model, &tok, &ids);
    ck_assert_int_gt(ids.n, 32);
    ck_assert_int_le(ids.n, 48); /* three blocks of 16 */
    int32_t want[NEW], got[NEW];
    ck_assert(generate(&model, NULL, &ids, 512, want) == KS_OK);

    const char *full[] = {"block_size=16", "gamma=1", "tau=1", "min_budget=1", "max_budget=0", NULL};
    ks_method *m = create("FlexPrefill", full);
    ck_assert_msg(generate(&model, m, &ids, 512, got) == KS_OK, "%s", ks_last_error());
    assert_tokens(got, want, "FlexPrefill, gamma 1");
    assert_sparse_stats(m, 1, 1, 1);
    ks_method_free(m);

    const char *snap[] = {"max_capacity_prompt=24", "window_size=8", NULL};
    m = create("SnapKV", snap);
    ck_assert(generate(&model, m, &ids, 512, want) == KS_OK);
    ks_method_free(m);
    const char *both[] = {"FlexPrefill.block_size=16", "FlexPrefill.gamma=1", "FlexPrefill.tau=1",
                          "FlexPrefill.min_budget=1", "FlexPrefill.max_budget=0", "SnapKV.max_capacity_prompt=24",
                          "SnapKV.window_size=8", NULL};
    m = create("FlexPrefill+SnapKV", both);
    ck_assert_msg(generate(&model, m, &ids, 512, got) == KS_OK, "%s", ks_last_error());
    assert_tokens(got, want, "FlexPrefill+SnapKV, gamma 1");
    ks_method_free(m);

    const char *sparse[] = {"block_size=16", "min_budget=1", NULL};
    m = create("FlexPrefill", sparse);
    ck_assert_msg(generate(&model, m, &ids, 512, got) == KS_OK, "%s", ks_last_error());
    assert_sparse_stats(m, 5.0 / 6, 1, -1);
    ks_method_free(m);

    const char *forced[] = {"block_size=16", "min_budget=1", "force_density=0.5", NULL};
    m = create("FlexPrefill", forced);
    ck_assert_msg(generate(&model, m, &ids, 512, got) == KS_OK, "%s", ks_last_error());
    assert_sparse_stats(m, 5.0 / 6, 5.0 / 6, 0);
    ks_method_free(m);

    /* a prompt over two chunks: refused, naming --chunk */
    m = create("FlexPrefill", sparse);
    ck_assert_int_eq(generate(&model, m, &ids, 32, got), KS_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "--chunk"));
    ks_method_free(m);
    ks_test_smollm2_free(&model, tok, &ids);
}
END_TEST

/* A prompt of more than 2 B = 256 tokens with B = 128, gamma 1, tau 0 (every head vertical-slash): the counts cover
 * every token, (L + 1) / 128 + 1 >= nb, so every list is full: FullKV's tokens. */
START_TEST(test_smollm2_long) {
    ks_model model;
    ks_tokenizer *tok;
    ks_ids ids;
    ks_test_smollm2_prompt(&model, &tok, &ids);
    ks_ids_free(&ids);
    char text[8192];
    size_t n = 0;
    for (int i = 0; i < 24; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "Day %d: the harbor master counted %d boats and %d gulls. ", i,
                              3 * i + 7, 11 * i + 2);
    snprintf(text + n, sizeof text - n, "The secret word is HARBOR. Repeat the secret word. Answer:");
    ck_assert(ks_generate_encode_prompt(tok, text, 0, &ids) == KS_OK);
    ck_assert_int_gt(ids.n, 256);
    int32_t want[NEW], got[NEW];
    ck_assert(generate(&model, NULL, &ids, 1024, want) == KS_OK);
    const char *full[] = {"gamma=1", "tau=0", "min_budget=1", "max_budget=0", NULL};
    ks_method *m = create("FlexPrefill", full);
    ck_assert_msg(generate(&model, m, &ids, 1024, got) == KS_OK, "%s", ks_last_error());
    assert_tokens(got, want, "FlexPrefill, B 128, gamma 1");
    assert_sparse_stats(m, 1, 1, 0);
    /* a caller given no chunk prefills FlexPrefill's prompt whole, anyone else's in chunks of 512 */
    ck_assert_int_eq(ks_forward_default_chunk(m, ids.n + NEW), ids.n + NEW);
    ck_assert_int_eq(ks_forward_default_chunk(NULL, ids.n + NEW), KS_FORWARD_CHUNK);
    ks_method_free(m);
    ks_test_smollm2_free(&model, tok, &ids);
}
END_TEST

/* ks_flexprefill_emit against a plain walk of the mask: nb = 37 (rows longer than a word of eight blocks, and
 * partial words), masks from empty to dense, each row's causal blocks in order; blocks and sparsity. */
START_TEST(test_emit_rows) {
    enum { NB = 37 };
    static uint8_t mask[NB * NB];
    const float density[] = {0, 0.05f, 0.5f, 1};
    float *u = ks_test_rand_buf(NB * NB, 1);
    for (size_t k = 0; k < sizeof density / sizeof density[0]; k++) {
        for (int e = 0; e < NB * NB; e++) mask[e] = fabsf(u[e]) < density[k];
        int32_t rows[NB + 1], cols[NB * NB], off = 0, want = 0;
        ks_block_list l = {.row_start = rows, .cols = cols};
        ks_flexprefill_stat st = {0};
        rows[0] = 0;
        ks_flexprefill_emit(&l, &st, mask, 0, NB, &off);
        for (int i = 0; i < NB; i++) {
            for (int c = 0; c <= i; c++)
                if (mask[i * NB + c]) ck_assert_int_eq(cols[want++], c);
            ck_assert_int_eq(rows[i + 1], want);
        }
        ck_assert_int_eq(off, want);
        ck_assert_int_eq(st.blocks, want);
        ck_assert_float_eq_tol(st.sparsity, 1.0f - (float)want / (NB * (NB + 1) / 2), 1e-6f);
    }
    free(u);
}
END_TEST

int main(int argc, char **argv) {
    ks_test_seed(0x2545F4914F6CDD1Dull);
    int smollm2 = argc > 1 && !strcmp(argv[1], "smollm2");
    Suite *s = suite_create("flexprefill");
    TCase *tc = tcase_create(smollm2 ? "smollm2" : "estimation");
    if (smollm2) {
        tcase_add_test(tc, test_smollm2_short);
        tcase_add_test(tc, test_smollm2_long);
        suite_add_tcase(s, tc);
        return ks_test_run(s, 0);
    }
    tcase_add_test(tc, test_cover);
    tcase_add_test(tc, test_count);
    tcase_add_test(tc, test_js);
    tcase_add_test(tc, test_mark_vertical_slash);
    tcase_add_test(tc, test_mark_query_aware);
    tcase_add_test(tc, test_mark_forced);
    tcase_add_test(tc, test_emit_rows);
    tcase_add_test(tc, test_dense_fallback);
    tcase_add_test(tc, test_uniform_js_both_sides);
    tcase_add_test(tc, test_partial_last_block);
    tcase_add_test(tc, test_sinks_literal_128_and_clamps);
    tcase_add_test(tc, test_gamma_one_full);
    tcase_add_test(tc, test_force_density_rows);
    tcase_add_test(tc, test_check_args);
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
