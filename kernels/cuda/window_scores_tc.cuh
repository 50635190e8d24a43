// window_scores_tc.cuh — the tensor-core form of ks_cuda_scores (window_scores_tc.cu), which ks_cuda_scores
// picks for the calls it covers: many queries (H2O's all-query prefill scores, a chunk at a time) under one
// causal softmax.
#pragma once

#include "cuda/ks_cuda_methods.h"

// True when the call is one the tensor-core path computes: n_q >= 64, no softmax_chunk, no per-head row
// ranges, KS_SCORE_SUM, head dim 64 or 128, 16-byte query rows.
bool ks_scores_tc_fits(const ks_cuda_score_args *a);

// ks_cuda_scores' out, sums and scratch contract for such a call (lse: n_q * H floats at least).
ks_status ks_scores_tc(float *out, int64_t ld, const ks_cuda_score_args *a, float *lse, cudaStream_t s);
