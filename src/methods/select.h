/* select.h — the selection primitives the KV methods share: 1-D pooling of a score row with PyTorch's border
 * handling, and a deterministic top-k.
 *
 *     ks_select_pool(pooled, scores, n, 5, KS_POOL_AVG);      // SnapKV's avg_pool1d(kernel 5, padding 2)
 *     int m = ks_select_topk(idx, pooled, n, k);               // the k best, in increasing index order
 *
 * Tie rule (PyTorch leaves it to the implementation): among equal scores the earlier index (earlier position)
 * wins; -0 equals +0; NaN ranks below every number. Kept rows are returned in position order, the order the
 * cache stores them (the reference code stores score order; attention does not depend on the order).
 */
#ifndef KS_SELECT_H
#define KS_SELECT_H

#include <stdint.h>

typedef enum ks_pool { KS_POOL_AVG, KS_POOL_MAX } ks_pool; /* the order of the `pooling` knob's choices */

/* out (n) = pooling of in (n) with an odd kernel k, stride 1 and padding k / 2 on both sides: KS_POOL_AVG
 * divides every window's sum by k (count_include_pad: the zero padding counts at the borders), KS_POOL_MAX pads
 * with -inf. k = 1 copies. out must not alias in. */
void ks_select_pool(float *out, const float *in, int n, int k, ks_pool mode);

/* Writes the indices of the min(k, n) largest values of s (n) to idx in increasing order, under the tie rule
 * above, and returns how many. O(n): a radix select on the order-preserving integer image of the floats. */
int ks_select_topk(int32_t *idx, const float *s, int n, int k);

#endif
