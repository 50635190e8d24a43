/* check_quant.c — the packed-weight kernels (kernels/cpu/quant.h) on fresh random blocks of every supported
 * type: the dispatched (AVX2 where the CPU has it) and plain C dot kernels agree up to fp32 summation order, and
 * both stay within the activations' rounding bound (ks_quant_act_bound) of the reference (the row dequantized,
 * dotted in double with the unrounded activations); the threaded product (int8 for a few inputs, dequantized tiles
 * and SGEMM for more) and the packed embedding lookup match them; the decode products' helper team (cpu/team.h)
 * runs every item once. */
#include <check.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu/fast.h"
#include "cpu/quant.h"
#include "cpu/team.h"
#include "model/dequant.h"
#include "test_util.h"

static const ks_dtype types[] = {KS_DTYPE_Q8_0, KS_DTYPE_Q4_0, KS_DTYPE_Q4_1, KS_DTYPE_Q4_K, KS_DTYPE_Q6_K};
#define N_TYPES ((int)(sizeof types / sizeof types[0]))

static uint32_t rng_state = 12345;
static uint32_t rnd(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}
static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() & 0xFFFF) / 65535.0f; }

/* A normal fp16 of magnitude in [2^(e_lo - 15), 2^(e_hi - 14)), positive or with a random sign. */
static void put_f16(uint8_t *p, int e_lo, int e_hi, int any_sign) {
    uint16_t h = (uint16_t)(((e_lo + (int)(rnd() % (uint32_t)(e_hi - e_lo + 1))) << 10) | (rnd() & 0x3FF));
    if (any_sign && (rnd() & 1)) h |= 0x8000;
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* Random bytes for every code and scale, and sane fp16 scale fields (no inf or NaN). */
static void random_block(ks_dtype t, uint8_t *b) {
    for (size_t i = 0; i < ks_dtype_block_bytes(t); i++) b[i] = (uint8_t)rnd();
    switch (t) {
    case KS_DTYPE_Q8_0: case KS_DTYPE_Q4_0: put_f16(b, 5, 12, 1); break;
    case KS_DTYPE_Q4_1: put_f16(b, 5, 12, 1), put_f16(b + 2, 5, 12, 1); break;
    case KS_DTYPE_Q4_K: put_f16(b, 3, 8, 0), put_f16(b + 2, 3, 8, 0); break;
    case KS_DTYPE_Q6_K: put_f16(b + 208, 3, 8, 1); break;
    default: ck_abort_msg("no random block for this type");
    }
}

/* A (rows, cols) matrix of random blocks; free ->data. */
static ks_qmat random_qmat(ks_dtype t, int64_t rows, int64_t cols) {
    ks_qmat w = {.type = t, .rows = rows, .cols = cols};
    w.row_bytes = (size_t)cols / ks_dtype_block_elems(t) * ks_dtype_block_bytes(t);
    uint8_t *data = malloc(w.row_bytes * (size_t)rows);
    ck_assert_ptr_nonnull(data);
    for (size_t off = 0; off < w.row_bytes * (size_t)rows; off += ks_dtype_block_bytes(t)) random_block(t, data + off);
    w.data = data;
    return w;
}

/* Activations of mixed scale: most in [-2, 2], an outlier every so often (as real hidden states have). */
static void random_x(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = uniform(-2, 2) * (rnd() % 37 == 0 ? 20.0f : 1.0f);
}

/* sum |w_i x_i| of row r: the scale of the fp32 rounding allowed. */
static double magnitude(const ks_qmat *w, int64_t r, const float *x) {
    float *y = malloc(sizeof(float) * (size_t)w->cols);
    ks_dequant(w->type, w->data + r * w->row_bytes, y, (size_t)w->cols);
    double m = 0;
    for (int64_t i = 0; i < w->cols; i++) m += fabs((double)y[i] * x[i]);
    free(y);
    return m;
}

START_TEST(test_dot_every_type) {
    const ks_dtype t = types[_i];
    const int64_t rows = 9, cols = 768;
    ks_qmat w = random_qmat(t, rows, cols);
    float *x = malloc(sizeof(float) * cols);
    ks_qa_block *xa = malloc(sizeof *xa * (size_t)(cols / KS_QA_ELEMS));
    for (int trial = 0; trial < 4; trial++) {
        random_x(x, cols);
        ks_quant_act(xa, x, cols);
        for (int64_t r = 0; r < rows; r++) {
            const double ref = ks_quant_ref_dot(&w, r, x), bound = ks_quant_act_bound(&w, r, xa);
            const double fp = 1e-5 * magnitude(&w, r, x) + 1e-6;
            const float c = ks_quant_dot_c(&w, r, xa), v = ks_quant_dot(&w, r, xa);
            ck_assert_msg(fabs(c - v) <= fp, "%s row %ld: dispatched %.7g vs plain C %.7g", ks_dtype_name(t), (long)r,
                          v, c);
            ck_assert_msg(fabs(c - ref) <= bound + fp, "%s row %ld: plain C %.7g vs reference %.7g (bound %.3g)",
                          ks_dtype_name(t), (long)r, c, ref, bound);
            ck_assert_msg(fabs(v - ref) <= bound + fp, "%s row %ld: dispatched %.7g vs reference %.7g (bound %.3g)",
                          ks_dtype_name(t), (long)r, v, ref, bound);
        }
    }
    free(xa);
    free(x);
    free((void *)w.data);
}
END_TEST

/* Activation rounding alone: quantized and dequantized, each value within half a step of its block's scale; the
 * dispatched and plain C versions give the same blocks. */
START_TEST(test_act_rounding) {
    float x[256], back;
    ks_qa_block a[256 / KS_QA_ELEMS];
    random_x(x, 256);
    ks_quant_act(a, x, 256);
    for (int b = 0; b < 256 / KS_QA_ELEMS; b++) {
        int sum = 0;
        for (int i = 0; i < KS_QA_ELEMS; i++) {
            back = a[b].d * a[b].q[i];
            ck_assert_float_le(fabsf(back - x[b * KS_QA_ELEMS + i]), a[b].d * 0.5001f);
            sum += a[b].q[i];
        }
        ck_assert_float_eq_tol(a[b].s, a[b].d * sum, 1e-6f * fabsf(a[b].d * sum) + 1e-30f);
    }
    ks_qa_block c[256 / KS_QA_ELEMS];
    ks_quant_act_c(c, x, 256);
    ck_assert_mem_eq(c, a, sizeof c); /* the dispatched and the plain C quantization agree bit for bit */
}
END_TEST

/* Two products sharing n inputs x (n, cols): w[0] (rows[0], cols) with a bias, w[1] (rows[1], cols) without,
 * run by ks_quant_gemm_multi accumulating into outputs that hold 1.0. */
typedef struct two_products {
    int n;
    int64_t cols, rows[2];
    ks_qmat w[2];
    float *x, *bias, *out[2];
    ks_quant_work work;
} two_products;

static void two_products_run(two_products *p, ks_dtype t, int n, int64_t cols, int64_t rows0, int64_t rows1) {
    *p = (two_products){.n = n, .cols = cols, .rows = {rows0, rows1}};
    for (int i = 0; i < 2; i++) {
        p->w[i] = random_qmat(t, p->rows[i], cols);
        p->out[i] = malloc(sizeof(float) * n * p->rows[i]);
        for (int64_t k = 0; k < n * p->rows[i]; k++) p->out[i][k] = 1.0f;
    }
    p->x = malloc(sizeof(float) * n * cols), p->bias = malloc(sizeof(float) * rows0);
    ck_assert_int_eq(ks_quant_work_init(&p->work, n, cols), KS_OK);
    random_x(p->x, n * cols);
    for (int64_t r = 0; r < rows0; r++) p->bias[r] = uniform(-1, 1);
    const ks_quant_out o[2] = {{.w = &p->w[0], .bias = p->bias, .out = p->out[0]},
                               {.w = &p->w[1], .bias = NULL, .out = p->out[1]}};
    ks_quant_gemm_multi(o, 2, p->x, n, 1, &p->work);
}

static void two_products_free(two_products *p) {
    ks_quant_work_free(&p->work);
    for (int i = 0; i < 2; i++) free(p->out[i]), free((void *)p->w[i].data);
    free(p->bias), free(p->x);
}

/* The threaded product (bias, accumulate, several inputs, two products sharing x) against the single dots. */
START_TEST(test_gemm_multi) {
    const ks_dtype t = types[_i];
    two_products p;
    two_products_run(&p, t, 3, 512, 300, 45);
    ks_qa_block xa[512 / KS_QA_ELEMS];
    for (int i = 0; i < 2; i++)
        for (int tkn = 0; tkn < p.n; tkn++) {
            ks_quant_act(xa, p.x + tkn * p.cols, p.cols);
            for (int64_t r = 0; r < p.rows[i]; r++) {
                const float want = 1.0f + ks_quant_dot(&p.w[i], r, xa) + (i == 0 ? p.bias[r] : 0.0f);
                ck_assert_float_eq_tol(p.out[i][tkn * p.rows[i] + r], want, 1e-6f * (1 + fabsf(want)));
            }
        }
    ks_quant_gemm(p.out[1], p.x, &p.w[1], NULL, p.n, 0, &p.work); /* overwrite: no accumulation */
    ks_quant_act(xa, p.x + (p.n - 1) * p.cols, p.cols);
    ck_assert_float_eq_tol(p.out[1][(p.n - 1) * p.rows[1] + 7], ks_quant_dot(&p.w[1], 7, xa), 1e-6f);
    two_products_free(&p);
}
END_TEST

/* From KS_QUANT_TILE_MIN_ROWS inputs on: dequantized tiles and SGEMM, within fp32 rounding of the reference (a
 * bias, accumulation, a product of fewer rows than a tile and one of several tiles). */
START_TEST(test_gemm_tiles) {
    const ks_dtype t = types[_i];
    two_products p;
    two_products_run(&p, t, KS_QUANT_TILE_MIN_ROWS + 5, 256, KS_QUANT_TILE * 2 + 7, 9);
    for (int i = 0; i < 2; i++)
        for (int tkn = 0; tkn < p.n; tkn++)
            for (int64_t r = 0; r < p.rows[i]; r++) {
                const float *x = p.x + tkn * p.cols, got = p.out[i][tkn * p.rows[i] + r];
                const double want = 1.0 + ks_quant_ref_dot(&p.w[i], r, x) + (i == 0 ? p.bias[r] : 0.0);
                const double tol = 1e-5 * (magnitude(&p.w[i], r, x) + 2.0);
                ck_assert_msg(fabs(got - want) <= tol, "%s: row %ld input %d: %.7g vs %.7g", ks_dtype_name(t), (long)r,
                              tkn, got, want);
            }
    two_products_free(&p);
}
END_TEST

START_TEST(test_rows) {
    const ks_dtype t = types[_i];
    ks_qmat w = random_qmat(t, 20, 256);
    const int32_t tokens[3] = {19, 0, 7};
    float out[3 * 256], want[256];
    ks_quant_rows(out, &w, tokens, 3);
    for (int k = 0; k < 3; k++) {
        ks_dequant(t, w.data + tokens[k] * w.row_bytes, want, 256);
        ck_assert_mem_eq(out + k * 256, want, sizeof want);
    }
    free((void *)w.data);
}
END_TEST

static void count_item(void *ctx, int64_t item) { atomic_fetch_add((_Atomic int *)ctx + item, 1); }

/* The helper team runs every item of every loop exactly once, with one helper or several (more threads than this
 * machine may have cores), loops of no item, of fewer items than threads and of many, and after pauses longer than
 * the helpers' spin (they sleep and are woken). */
START_TEST(test_team) {
    const int threads[] = {1, 3};
    for (int k = 0; k < 2; k++) {
        ks_team team;
        ck_assert_int_eq(ks_team_init(&team, threads[k]), KS_OK);
        _Atomic int hits[300];
        for (int loop = 0; loop < 100; loop++) {
            const int n = loop * 37 % 300;
            for (int i = 0; i < n; i++) atomic_init(&hits[i], 0);
            if (loop % 50 == 49) usleep(2 * KS_TEAM_SPIN_NS / 1000);
            ks_team_for(&team, n, count_item, hits);
            for (int i = 0; i < n; i++) ck_assert_msg(hits[i] == 1, "%d threads, loop %d: item %d ran %d times",
                                                      threads[k], loop, i, (int)hits[i]);
        }
        ks_team_free(&team);
    }
}
END_TEST

/* One step of the pick: its way, then its time (`team_s` with the team, `alone_s` alone) and lateness. */
static int pick_step(ks_team_pick *p, double team_s, double alone_s, int late) {
    const int team = ks_team_pick_begin(p);
    ks_team_pick_end(p, team ? team_s : alone_s, team && late);
    return team;
}

/* `n` steps of the pick all going one way (team: 1 or 0). */
static void pick_steps(ks_team_pick *p, int n, int team, double team_s, double alone_s, int late, const char *what) {
    for (int i = 0; i < n; i++)
        ck_assert_msg(pick_step(p, team_s, alone_s, late) == team, "%s: step %d of %d not %s", what, i, n,
                      team ? "on the team" : "alone");
}

/* A trial: 2 KS_TEAM_PICK_TRIAL steps alternating, the other way (!chosen) first. */
static void pick_trial(ks_team_pick *p, int chosen, double team_s, double alone_s, int late, const char *what) {
    for (int i = 0; i < 2 * KS_TEAM_PICK_TRIAL; i++)
        ck_assert_msg(pick_step(p, team_s, alone_s, late) == (i % 2 ? chosen : !chosen), "%s: trial step %d", what, i);
}

/* ks_team_pick on hand-made step times: without a late loop the team runs throughout; a late step starts a trial
 * (KS_TEAM_PICK_TRIAL steps alone and as many on the team, alternating) that alone wins when faster (then the
 * team is tried again after KS_TEAM_PICK_FIRST steps alone, and loses: the next run doubles) and otherwise leaves
 * the team chosen, the next trial waiting for a late step after twice the run; a team within KS_TEAM_PICK_EDGE of
 * one thread loses. */
START_TEST(test_team_pick) {
    const int F = KS_TEAM_PICK_FIRST;
    ks_team_pick p = KS_TEAM_PICK_INIT;
    pick_steps(&p, 1000, 1, 1.0, 2.0, 0, "quiet");

    /* the cores get busy: the team 3 s a step and late, alone 2 s */
    pick_steps(&p, 1, 1, 3.0, 2.0, 1, "the first late step");
    pick_trial(&p, 1, 3.0, 2.0, 1, "busy, the first trial");
    pick_steps(&p, F, 0, 3.0, 2.0, 1, "busy, alone chosen");
    pick_trial(&p, 0, 3.0, 2.0, 1, "busy, the team tried again");
    pick_steps(&p, 2 * F, 0, 3.0, 2.0, 1, "busy, alone for a doubled run");
    pick_trial(&p, 0, 3.0, 2.0, 1, "busy, the team tried a third time");

    /* quiet again: the team wins its next trial (after 4 F steps alone) and keeps running */
    pick_steps(&p, 4 * F, 0, 1.0, 2.0, 0, "quiet, alone until the next trial");
    pick_trial(&p, 0, 1.0, 2.0, 0, "quiet, trial of the team");
    pick_steps(&p, 1000, 1, 1.0, 2.0, 0, "quiet, the team chosen");

    /* a late step while the team is still faster: the trial leaves the team chosen, and the next trial waits for
     * a late step after 2 F steps */
    pick_steps(&p, 1, 1, 1.0, 2.0, 1, "a late but fast team");
    pick_trial(&p, 1, 1.0, 2.0, 1, "trial alone");
    pick_steps(&p, 2 * F, 1, 1.0, 2.0, 1, "the team kept");
    pick_trial(&p, 1, 1.0, 2.0, 1, "the next trial");

    /* a team only 2% faster than one thread (within KS_TEAM_PICK_EDGE): one thread takes the steps */
    pick_steps(&p, 4 * F, 1, 1.0, 1.02, 1, "a team about as fast as one thread");
    pick_trial(&p, 1, 1.0, 1.02, 1, "a draw");
    pick_steps(&p, F, 0, 1.0, 1.02, 1, "the draw gone to one thread");
}
END_TEST

int main(void) {
    ks_fast_set_threads(2);
    Suite *s = suite_create("quant");
    TCase *tc = tcase_create("quant");
    tcase_add_loop_test(tc, test_dot_every_type, 0, N_TYPES);
    tcase_add_test(tc, test_act_rounding);
    tcase_add_loop_test(tc, test_gemm_multi, 0, N_TYPES);
    tcase_add_loop_test(tc, test_gemm_tiles, 0, N_TYPES);
    tcase_add_loop_test(tc, test_rows, 0, N_TYPES);
    tcase_add_test(tc, test_team);
    tcase_add_test(tc, test_team_pick);
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
