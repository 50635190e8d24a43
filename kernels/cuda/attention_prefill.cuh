// attention_prefill.cuh — what the two prefill attention kernels share: their argument block and the key
// range of a block of virtual rows (see attention_prefill.cu for the GQA "virtual row" packing).
//   attention_prefill.cu          mma.sync (sm_80+) kernel, head dims 64 and 128, and the public launcher;
//                                 its log-sum-exp-only form is the first pass of the tensor-core scores
//                                 (window_scores_tc.cu)
//   attention_prefill_sm90_ws.cu  warp-specialised wgmma (sm_90a) kernel, head dim 128, chosen on Hopper
//                                 (ks_prefill_launch_sm90)
// Both kernels take the rows and keys of a block from a template policy: ks_dense_cta here (kBM virtual rows
// of one KV group, every key tile of their range), ks_sparse_cta (attention_prefill_sparse.cuh) for the
// block-sparse prefill.
#pragma once

#include "common.cuh"

struct prefill_args {
    bf16 *out;
    const bf16 *q, *kc, *vc;
    int64_t ld_o, ld_q;
    int n, n_kv, cap, H, G, q_pos0, window;
    float scale_log2; // softmax scale * log2(e): scores go straight to exp2
    float *lse;       // optional (n, H): each row's natural log-sum-exp, lse[t * H + head] (+inf: no key)
};

// Stores query t's log-sum-exp for head `head` from its online softmax state: m, the running max in the log2
// domain (scores * scale * log2 e), and sum, the whole row's sum of 2^(x - m) (0: the row saw no key).
__device__ __forceinline__ void ks_prefill_store_lse(const prefill_args &a, int t, int head, float m, float sum) {
    a.lse[(int64_t)t * a.H + head] = sum > 0.0f ? (m + __log2f(sum)) * 0.6931471805599453f : INFINITY;
}

// The keys a block of virtual rows [v0, v0 + rows) must visit: tiles of `tile` keys from kb0, ntiles of
// them (causal end after the block's last query, window start before its first); qp_lo/qp_hi are the
// block's first and last absolute query positions.
struct prefill_range {
    int qp_lo, qp_hi, kb0, ntiles;
};
__device__ __forceinline__ prefill_range ks_prefill_range(const prefill_args &a, int v0, int rows, int tile) {
    prefill_range r;
    const int t_lo = v0 / a.G, t_hi = min(a.n - 1, (v0 + rows - 1) / a.G);
    r.qp_lo = a.q_pos0 + t_lo, r.qp_hi = a.q_pos0 + t_hi;
    const int kv_end = min(a.n_kv, r.qp_hi + 1);
    const int kv_begin = a.window > 0 ? max(0, r.qp_lo - a.window + 1) : 0;
    r.kb0 = kv_begin / tile * tile;
    r.ntiles = kv_end > r.kb0 ? (kv_end - r.kb0 + tile - 1) / tile : 0;
    return r;
}

// True when every (row, key) of key tile [kb, kb + tile) is visible to every row of the block.
__device__ __forceinline__ bool ks_prefill_tile_full(const prefill_args &a, const prefill_range &r, int kb, int tile) {
    return kb + tile - 1 <= r.qp_lo && kb + tile <= a.n_kv && (a.window <= 0 || kb > r.qp_hi - a.window);
}

// Key `key` visible to a query at absolute position `pos`. Bitwise, not short-circuit: the compiler keeps it
// branch-free (the kernels evaluate it per score element on masked tiles).
__device__ __forceinline__ bool ks_prefill_visible(const prefill_args &a, int key, int pos) {
    return (key < a.n_kv) & (key <= pos) & ((a.window <= 0) | (key > pos - a.window));
}

// A run of keys [base, base + C) a block visits, and the rows that see it: bit b of mask set when the block's
// (b + 1)-th query block lists it (block-sparse walks; the dense walk leaves mask 0 and lists every key).
struct key_chunk {
    int base, mask;
};

// The dense key walk: chunks of C keys from kb to end, every one listed for every row.
template <int C>
struct ks_dense_walk {
    int kb, end;
    __device__ __forceinline__ bool next(key_chunk &c) {
        if (kb >= end) return false;
        c.base = kb, c.mask = 0;
        kb += C;
        return true;
    }
    __device__ __forceinline__ bool listed(const key_chunk &, int) const { return true; }
    __device__ __forceinline__ bool all_listed(const key_chunk &) const { return true; }
};

struct ks_dense_list {}; // the dense kernels take no block list

// The rows and keys of block (x, tile) of the dense kernels: the `rows` virtual rows from v0 = tile * rows of KV
// head x (a.q, a.out address query head qkvh * G + g), visiting the key tiles of their range in order.
struct ks_dense_cta {
    using list = ks_dense_list;
    const prefill_args &a;
    int kvh, qkvh, v0;
    // (tile unsigned, as gridDim and blockIdx are: the dense kernels' v0 arithmetic)
    __device__ __forceinline__ ks_dense_cta(const prefill_args &a0, const list &, int x, unsigned tile, int rows, int)
        : a(a0), kvh(x), qkvh(x), v0(tile * rows) {}
    template <int C>
    __device__ __forceinline__ ks_dense_walk<C> keys(const prefill_range &rg) const {
        return {rg.kb0, rg.kb0 + rg.ntiles * C};
    }
};

// Validates the arguments of the public launchers (ks_cuda.h: head dim 64 or 128, alignment) and fills the
// kernels' argument block.
prefill_args ks_prefill_make_args(ks_bf16 *out, int64_t ld_o, const ks_bf16 *q, int64_t ld_q, const ks_bf16 *kc,
                                  const ks_bf16 *vc, int n, int n_kv, int cap, int H, int Hk, int d, int q_pos0,
                                  int window, float scale, float *lse);

// Compute capability major of the current device, queried once (kvscope uses one device per process).
int ks_device_major();

ks_status ks_prefill_launch_sm80(const prefill_args &a, int Hk, int d, cudaStream_t s);
// The mma.sync kernel without V: only each query's log-sum-exp over the keys it sees, into a.lse (a.out
// unused).
ks_status ks_prefill_lse_launch(const prefill_args &a, int Hk, int d, cudaStream_t s);
// The wgmma kernel (head dim 128; only the sm_90a binary holds it).
ks_status ks_prefill_launch_sm90(const prefill_args &a, int Hk, cudaStream_t s);
