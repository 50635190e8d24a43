// window_scores_tc.cuh — the tensor-core form of ks_cuda_scores (window_scores_tc.cu), which ks_cuda_scores
// picks for the calls it covers: many queries (H2O's all-query prefill scores, a chunk at a time) under one
// causal softmax.
#pragma once

#include "cuda/common.cuh"
#include "cuda/ks_cuda_methods.h"

// The second pass (column sums, key-major) of one call, as both of its kernels take it.
struct colsum_args {
    float *out, *sums; // (Hk, ld): the reduced sums; the group mean (sums may be NULL)
    int64_t ld, ld_q;
    const float *lse; // (n_q, H) natural log-sum-exps (pass 1, or the attention's)
    const bf16 *q, *kc;
    int H, G, cap, n_q, q_pos, n_keys;
    float scale_log2;
    ks_gqa_reduce reduce;
};

// Folds query head hg's (of the group) probability mass v of one key, summed over every lane holding a part
// of it, into the key's GQA reduction grp and its group mean.
__device__ __forceinline__ void ks_colsum_fold(const colsum_args &a, double v, int hg, double &grp, double &mean) {
    mean += v / a.G;
    switch (a.reduce) {
    case KS_GQA_MEAN: grp += v / a.G; break;
    case KS_GQA_SUM: grp += v; break;
    case KS_GQA_MAX: grp = hg == 0 || v > grp ? v : grp; break;
    }
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
