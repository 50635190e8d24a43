/* xattn_ref.h — XAttention's estimation and block choice (sparse prefill, block_list.h), the ground truth of the
 * KV stores' xattn_scores op and of the method (src/methods/xattention.c):
 *
 *     ks_xattn_args a = {.q_pos0 = pos0, .n = n, .qb = qb, .block = 128, .stride = 16,
 *                        .scale = 1 / (sqrtf(d) * 16)};
 *     ks_ref_xattn_block_scores(scores, ld, q, k, H, Hk, d, cap, &a);        // (H, ld) block scores of row qb
 *     ks_xattn_rank work[qb + 1];
 *     int n = ks_xattn_select(cols, &coverage, scores + h * ld, qb, 0.9f, 0, work);  // row (h, qb)'s blocks
 *
 * Layouts as cpu/ref.h: q (n, H, d) token-major, the chunk's row t at position q_pos0 + t; k (Hk, cap, d)
 * head-major, query head h reading KV head h / (H / Hk).
 */
#ifndef KS_KERNELS_XATTN_REF_H
#define KS_KERNELS_XATTN_REF_H

#include <stdint.h>

#include "kv_args.h" /* ks_xattn_args */

/* out[h * ld + J], J = 0 .. a->qb (ld > a->qb): query head h's block scores of query block qb, with S = stride:
 *   the block's stride rows i (positions iS .. iS + S - 1) that hold a query of the chunk, stride columns j <= i;
 *   s[i, j] = scale * sum_{t < S} q[iS + S - 1 - t] . k[jS + t]   (the antidiagonal of the S x S tile (i, j));
 *   p[i, .] = softmax of s[i, j] over j <= i (fp32, max subtracted);
 *   a[J]    = the sum of p[i, j] over the block's rows i and the columns j of key block J (double sums).
 * A query position outside the chunk and a key position >= q_pos0 + n are zero vectors (XAttention's padding),
 * so a query block split over two chunks is scored from each chunk's own queries; a query block is whole in one
 * chunk when chunks start on block edges. Memory: one stride row of scores per head at a time. */
void ks_ref_xattn_block_scores(float *out, int ld, const float *q, const float *k, int H, int Hk, int d, int cap,
                               const ks_xattn_args *a);

/* One candidate block of a row (ks_xattn_select's work). */
typedef struct ks_xattn_rank {
    float score;
    int32_t block;
} ks_xattn_rank;

/* Row qb's key blocks from its block scores a[0 .. qb] (the causal blocks):
 *   forced: block 0 (the sink) and block qb (the diagonal);
 *   threshold: the other blocks in descending score (the lower block first among equals), each kept while the
 *     sum of the blocks kept before it, the forced ones included, is below threshold * the row's total: the
 *     block that crosses the threshold is kept. Sums in double, the total in the same order as the running sum,
 *     so threshold 1 keeps every block whose score adds to it;
 *   density > 0 instead: the forced blocks and the top other blocks up to ceil(density * (qb + 1)) in all.
 * cols (qb + 1) receives the kept blocks ascending; returns their count. *coverage = their scores' sum over the
 * total (1 for a zero total). work holds qb + 1 ranks. */
int ks_xattn_select(int32_t *cols, double *coverage, const float *a, int qb, float threshold, float density,
                    ks_xattn_rank *work);

#endif
