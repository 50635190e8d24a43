// attention_generic.cuh — the CUDA-core attention kernel for head dims the tensor-core kernels do not cover;
// ks_cuda_attention_prefill and ks_cuda_attention_decode dispatch to it (attention_generic.cu).
#pragma once

#include "common.cuh"

// Attention of n queries (token t's row at q + t * ld_q, head h at + h * d) over the head-major cache
// kc, vc (Hk, cap, d); out the same layout with ld_o. Two key ranges:
//   lens == NULL (prefill): query t sits at position q_pos0 + t and sees keys j < n_kv with j <= its
//     position (and j > position - window when window > 0), rows being positions;
//   lens != NULL (decode, n == 1): KV head g's rows [starts[g], lens[g]) (starts NULL = 0), device arrays.
// Any even d <= 256; a query with no visible key gets 0.
ks_status ks_attention_generic_launch(ks_bf16 *out, int64_t ld_o, const ks_bf16 *q, int64_t ld_q, const ks_bf16 *kc,
                                      const ks_bf16 *vc, int n, int n_kv, int cap, int H, int Hk, int d, int q_pos0,
                                      int window, const int32_t *lens, const int32_t *starts, float scale,
                                      cudaStream_t s);
