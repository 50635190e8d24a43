/* quant.h — products with weight matrices kept in their GGUF block encoding (ks_qmat, model.h): the CPU
 * backend's packed-weight path. For a few input rows (decode) activations are quantized on the fly to 32-element
 * int8 blocks (ks_qa_block), and each weight block meets its activation block in an integer dot product, as the
 * GGML formats are meant to be used; one scale multiply per block pair turns the integer sum into fp32. From
 * KS_QUANT_TILE_MIN_ROWS input rows on (prefill) each thread dequantizes a tile of weight rows to fp32 and runs
 * OpenBLAS's SGEMM on it with the fp32 activations: the weights are read once per chunk either way, and SGEMM
 * does 2-3x the multiply-adds per second of the int8 dot products there (one Zen core, 1536x576 Q4_1: 33 against
 * 13 GMAC/s at 512 rows, equal near 24 rows; CPU time).
 *
 *     ks_quant_work work;
 *     KS_TRY(ks_quant_work_init(&work, max_n, max_in));  // after ks_fast_set_threads
 *     ks_quant_gemm(y, x, &w, bias, n, 1, &work);        // y (n, w.rows) += x (n, w.cols) w^T + bias
 *     ks_quant_work_free(&work);
 *     float r = ks_quant_ref_dot(&w, row, x);            // reference: dequantize the row, fp32 dot
 *
 * Supported weight types (ks_quant_supports): Q8_0, Q4_0, Q4_1, Q4_K, Q6_K. The dot kernels exist twice: plain C
 * (any CPU) and AVX2 + FMA + F16C, chosen once at run time from the CPU's flags. Both compute the same integer
 * sums per 32-element block and differ only in the order of the fp32 accumulation of the block results;
 * tests/check_quant.c compares them with each other and with the reference.
 *
 * Error of the int8 path against the fp32 reference: only the activations' rounding, |sum_i w_i (x_i - x^_i)| <=
 * sum over activation blocks of (d / 2) * sum |w_i| of that block (ks_quant_act_bound), plus fp32 summation
 * rounding. The tiled path is the reference's fp32 arithmetic in another order.
 */
#ifndef KS_KERNELS_QUANT_H
#define KS_KERNELS_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "cpu/team.h"
#include "model/model.h" /* ks_qmat */

#define KS_QA_ELEMS 32 /* elements per activation block; every supported weight row is a whole number of them */

/* 32 activations x[i] ~ d * q[i] (round to nearest, |q| <= 127); s = d * sum q, which the formats with a
 * per-block offset (Q4_1, Q4_K mins) and the ones storing unsigned codes (Q4_0, Q6_K) need. */
typedef struct ks_qa_block {
    float d, s;
    int8_t q[KS_QA_ELEMS];
} ks_qa_block;

/* 1 when ks_quant_gemm takes weights of type t. */
int ks_quant_supports(ks_dtype t);

#define KS_QUANT_TILE_MIN_ROWS 24 /* input rows from which products go through dequantized tiles and SGEMM */
#define KS_QUANT_TILE 256         /* weight rows per dequantized tile */

/* The scratch of ks_quant_gemm (owned): int8 activations for up to max_n rows of up to max_in values, an fp32
 * tile of weight rows per thread, and the helper threads of the int8 products, for the OpenMP threads set when it
 * was built (products then use at most those). */
typedef struct ks_quant_work {
    ks_qa_block *act; /* (max_n * max_in / 32) */
    float *tiles;     /* (threads, KS_QUANT_TILE, max_in); NULL when max_n < KS_QUANT_TILE_MIN_ROWS */
    int max_n, threads;
    int64_t max_in;
    ks_team team;      /* threads - 1 helpers sharing the int8 products (decode) */
    ks_team_pick pick; /* whether a decode step's products use the team (team.h); set by the step's owner */
    int alone;         /* this step's int8 products and items run on the calling thread (!ks_team_pick_begin) */
    int late;          /* a team product of this step was late: the scheduler kept a helper off the cores */
} ks_quant_work;

/* The int8 products (a decode step's, tens of microseconds each) run on `team`, whose helpers wait awake between
 * them (team.h); prefill's tiled products (milliseconds each) on the OpenMP threads. A team is worth it only
 * while every helper works: an awake helper that took no tile of a product or kept the caller waiting for its last
 * tile (other processes share the cores) marks the step `late`, and the step's owner (the CPU backend's
 * decode_step) lets ks_team_pick choose from step times whether the next steps use the team or run `alone`.
 * Which thread computes a row never changes its value. */

ks_status ks_quant_work_init(ks_quant_work *w, int max_n, int64_t max_in);
void ks_quant_work_free(ks_quant_work *w); /* accepts a zeroed struct */

/* dst (n / 32 blocks) = x (n values, a multiple of 32) quantized: the dispatched version (AVX2 where the CPU has
 * it) and the plain C one, which give the same blocks. */
void ks_quant_act(ks_qa_block *dst, const float *x, int64_t n);
void ks_quant_act_c(ks_qa_block *dst, const float *x, int64_t n);

/* Row `row` of w dotted with activation blocks xa (w->cols / 32 of them): the dispatched kernel (AVX2 where the
 * CPU has it) and the plain C one. */
float ks_quant_dot(const ks_qmat *w, int64_t row, const ks_qa_block *xa);
float ks_quant_dot_c(const ks_qmat *w, int64_t row, const ks_qa_block *xa);

/* Reference: row `row` of w dequantized to fp32 (model/dequant.h), dotted with fp32 x, summed in double. */
double ks_quant_ref_dot(const ks_qmat *w, int64_t row, const float *x);

/* The bound on |ks_quant_dot - exact dot of the dequantized row with x| that the activations' rounding
 * allows: sum over blocks of d / 2 * sum |w_i|. */
double ks_quant_act_bound(const ks_qmat *w, int64_t row, const ks_qa_block *xa);

/* out (n, w->rows) = x (n, w->cols) w^T + bias, or out += ... when accumulate; bias may be NULL; n <= work's
 * max_n, w->cols <= its max_in. Output rows are spread over the threads (the helper team for int8 products, one
 * OpenMP parallel region for tiled ones; neither below KS_QUANT_PARALLEL_MIN multiply-adds, where a thread team
 * costs more than it saves); each tile of weight rows is read once for all n inputs. */
void ks_quant_gemm(float *out, const float *x, const ks_qmat *w, const float *bias, int n, int accumulate,
                   ks_quant_work *work);

#define KS_QUANT_MAX_OUTS 3
#define KS_QUANT_PARALLEL_MIN (1 << 18)

/* One product of ks_quant_gemm_multi: out (n, w->rows) = x w^T + bias. */
typedef struct ks_quant_out {
    const ks_qmat *w;
    const float *bias; /* (w->rows) or NULL */
    float *out;
} ks_quant_out;

/* Up to KS_QUANT_MAX_OUTS products of the same input x (n, cols), all weights having cols columns (q|k|v,
 * gate|up): x is quantized once and all their rows share one loop of the threads. */
void ks_quant_gemm_multi(const ks_quant_out *outs, int n_outs, const float *x, int n, int accumulate,
                         ks_quant_work *work);

/* fn(ctx, i) for every i in [0, n) on the int8 products' threads (`team`; on the calling thread when the step
 * runs `alone`): a decode step's other work that comes as independent items (its attention). */
void ks_quant_work_for(ks_quant_work *work, int64_t n, ks_team_fn fn, void *ctx);

/* out (n, w->cols) = rows tokens[t] of w dequantized: an embedding lookup in a packed table. */
void ks_quant_rows(float *out, const ks_qmat *w, const int32_t *tokens, int n);

#endif
