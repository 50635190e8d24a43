// window_scores_tc.cuh — the tensor-core form of ks_cuda_scores (window_scores_tc.cu), which ks_cuda_scores
// picks for the calls it covers: many queries (H2O's all-query prefill scores, a chunk at a time) under one
// causal softmax.
#pragma once

#include "cuda/common.cuh"
#include "cuda/ks_cuda_methods.h"

// The second pass (column sums, key-major) of one call, as both of its kernels take it.
struct colsum_args {
    float *out, *sums; // (Hk, ld): the reduced sums ((H, ld), one row per query head, for KS_GQA_NONE); the group
                       // mean (sums may be NULL)
    int64_t ld, ld_q;
    const float *lse; // (n_q, H) natural log-sum-exps (pass 1, or the attention's)
    const bf16 *q, *kc;
    int H, G, cap, n_q, q_pos, n_keys;
    float scale_log2;
    ks_gqa_reduce reduce;
};

// The query tiles of bq queries a block of keys from kb meets: from the first that sees key kb (query i sees
// key j when j <= q_pos + i), ntiles of them, for each query head of the group.
__device__ __forceinline__ void ks_colsum_tiles(const colsum_args &a, int kb, int bq, int *i_first, int *ntiles) {
    *i_first = max(0, kb - a.q_pos) / bq * bq;
    *ntiles = a.n_q > *i_first ? (a.n_q - *i_first + bq - 1) / bq : 0;
}

// Query i's log-sum-exp for head h times log2 e, the exponent's offset; +inf past n_q, where every p is 0.
__device__ __forceinline__ float ks_colsum_lse2(const colsum_args &a, int h, int i) {
    return i < a.n_q ? a.lse[(int64_t)i * a.H + h] * 1.4426950408889634f : INFINITY;
}

// At the end of query head hg (of KV head g's group): this lane's partial mass acc of key `key`, summed over the
// quad of lanes holding its parts (acc restarts at 0), folds into the key's GQA reduction grp and group mean;
// with KS_GQA_NONE the quad leader stores it as query head g G + hg's (keys past n_keys belong to no one).
__device__ __forceinline__ void ks_colsum_fold(const colsum_args &a, double &acc, int g, int hg, int key,
                                               double &grp, double &mean) {
    const double v = ks_quad_sum(acc);
    acc = 0.0;
    mean += v / a.G;
    switch (a.reduce) {
    case KS_GQA_MEAN: grp += v / a.G; break;
    case KS_GQA_SUM: grp += v; break;
    case KS_GQA_MAX: grp = hg == 0 || v > grp ? v : grp; break;
    case KS_GQA_NONE:
        if ((threadIdx.x & 3) == 0 && key < a.n_keys) a.out[((int64_t)g * a.G + hg) * a.ld + key] = (float)v;
        break;
    }
}

// Stores key `key` of KV head g (quad leaders only; keys past n_keys belong to no one): its reduction and group
// mean. With KS_GQA_NONE ks_colsum_fold stored each query head's value, unless no query tile met the block
// (folded false): those keys get 0 per query head.
__device__ __forceinline__ void ks_colsum_store(const colsum_args &a, int g, int key, double grp, double mean,
                                                bool folded) {
    if ((threadIdx.x & 3) != 0 || key >= a.n_keys) return;
    if (a.reduce != KS_GQA_NONE) a.out[(int64_t)g * a.ld + key] = (float)grp;
    for (int hg = 0; a.reduce == KS_GQA_NONE && !folded && hg < a.G; hg++)
        a.out[((int64_t)g * a.G + hg) * a.ld + key] = 0.0f;
    if (a.sums) a.sums[(int64_t)g * a.ld + key] = (float)mean;
}

// The wgmma form of the second pass for head dim 128 on Hopper (window_scores_sm90.cu).
ks_status ks_colsum_launch_sm90(const colsum_args &c, int Hk, cudaStream_t s);

// True when the call is one the tensor-core path computes: n_q >= 64, no softmax_chunk, no per-head row
// ranges, KS_SCORE_SUM, head dim 64 or 128, 16-byte query rows.
bool ks_scores_tc_fits(const ks_cuda_score_args *a);

// ks_cuda_scores' out, sums and scratch contract for such a call (lse: n_q * H floats at least); portable:
// the second pass on mma.sync even on Hopper.
ks_status ks_scores_tc(float *out, int64_t ld, const ks_cuda_score_args *a, float *lse, bool portable,
                       cudaStream_t s);
