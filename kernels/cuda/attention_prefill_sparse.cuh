// attention_prefill_sparse.cuh — the block-sparse causal prefill (ks_cuda_attention_prefill_sparse): the rows and
// keys of one block of the prefill kernels when a block list (block_list.h, arrays on the device) says which key
// blocks each (query head, query block) row attends. The kernels (attention_prefill.cu, mma.sync;
// attention_prefill_sm90_ws.cu, wgmma) take ks_sparse_cta in place of ks_dense_cta and are otherwise the same.
//
// A block holds the queries of ONE query head (lists differ between the heads of a KV group, so the dense
// kernels' GQA packing would visit the union of G lists) in one 128-row tile aligned to absolute positions
// (tile i of the chunk: positions [(q_pos0 / 128 + i) 128, + 128) cut to the chunk), reading KV head h / G in
// place; where every head of the group lists the same blocks for the tile, the group's G blocks take the dense
// kernels' GQA rows instead (ks_sparse_cta). With blocks of 128 such a tile lies in one query block; with blocks
// of 64 in at most two, and the block walks the union of the two rows' lists, each row masking the key blocks its own row does not list. A listed
// key block is visited in chunks of C keys (the kernel's key tile, or a part of it) between the window start of
// the tile's first query and the causal end of its last; no other key is loaded or multiplied.
#pragma once

#include <climits>

#include "attention_prefill.cuh"
#include "block_list.h"

constexpr int kSparseTile = 128; // query rows of a block (both kernels), a multiple of every block size

// A ks_block_list with its arrays on the device (block 64 or 128).
struct ks_sparse_list {
    const int32_t *row_start, *cols;
    int block, qb0, n_qblocks;
};

// The chunks of C keys (C divides the block size) of the union of list a and list b (a: the tile's first query
// block, b: its second, or empty), ascending, from the first chunk that reaches lo to the last that starts
// before hi. next() keeps returning false once it has. The lists are entries cols[a .. a_end) and
// cols[b .. b_end) (indices, not pointers: the wgmma kernel's producer thread walks with 24 registers); each
// list's next entry is loaded when the previous one is taken, a block ahead of its use.
template <int C>
struct ks_sparse_walk {
    const int32_t *cols;
    int a, a_end, b, b_end;
    int ca, cb;         // cols[a] and cols[b], INT_MAX past the end
    int shift, lo, hi;  // log2 of the block size; the tile's key bounds
    int qb_first, need; // the tile's first query block; its query blocks as a mask (1, or 3 for two)
    int base, end, mask; // the block being walked: its next chunk, the end of its keys in [lo, hi), its rows

    __device__ __forceinline__ bool next(key_chunk &c) {
        if (base >= end && !advance()) return false;
        c.base = base, c.mask = mask;
        base += C;
        return true;
    }
    // Moves to the next listed block of either row with keys in [lo, hi); false past the last.
    __device__ __forceinline__ bool advance() {
        for (;;) {
            const int kb = min(ca, cb);
            if (kb == INT_MAX || (kb << shift) >= hi) return false; // ascending: every later block is past hi too
            mask = (ca == kb) | (cb == kb) << 1;
            if (ca == kb) ca = ++a < a_end ? __ldg(cols + a) : INT_MAX;
            if (cb == kb) cb = ++b < b_end ? __ldg(cols + b) : INT_MAX;
            const int x = max(kb << shift, lo), y = min((kb + 1) << shift, hi);
            if (x < y) {
                base = x / C * C, end = y;
                return true;
            }
        }
    }
    // The number of chunks a fresh walk returns, counted by the 32 lanes of a warp together (all active; every lane
    // gets it): the chunks in [lo, hi) of each block of list a, and of each block of list b that a lacks.
    __device__ __forceinline__ int count_warp(int lane) const {
        int n = 0;
#pragma unroll 4
        for (int i = a + lane; i < a_end; i += 32) n += chunks_of(__ldg(cols + i));
        for (int i = b + lane; i < b_end; i += 32) {
            const int kb = __ldg(cols + i);
            if (!in_a(kb)) n += chunks_of(kb);
        }
        return __reduce_add_sync(0xffffffffu, n);
    }
    // Chunks of key block kb that reach into [lo, hi) (block starts are multiples of C).
    __device__ __forceinline__ int chunks_of(int kb) const {
        const int x = max(kb << shift, lo), y = min((kb + 1) << shift, hi);
        return x < y ? (y + C - 1) / C - x / C : 0;
    }
    // List a (ascending) holds kb: binary search.
    __device__ __forceinline__ bool in_a(int kb) const {
        int l = a, r = a_end;
        while (l < r) {
            const int m = l + (r - l) / 2;
            if (__ldg(cols + m) < kb) l = m + 1;
            else r = m;
        }
        return l < a_end && __ldg(cols + l) == kb;
    }
    // The row of absolute query position pos lists chunk c.
    __device__ __forceinline__ bool listed(const key_chunk &c, int pos) const {
        return (c.mask >> ((pos >> shift) - qb_first)) & 1;
    }
    // Every query block of the tile lists chunk c.
    __device__ __forceinline__ bool all_listed(const key_chunk &c) const { return (c.mask & need) == need; }
};

// Every query head of KV group `group` (G <= 32 heads) lists the same key blocks in rows qb .. qb + nq - 1 (nq 1
// or 2), compared by the 32 lanes of a warp together (all active; every lane gets it): lane g < G loads head g's
// row bounds, then the lanes compare the entries, loads batched by the unroll (the check runs before any tile).
__device__ __forceinline__ bool ks_sparse_group_shares(const ks_sparse_list &l, int group, int G, int qb, int nq,
                                                       int lane) {
    int s = 0, m = 0, e = 0; // head `lane`'s entries cols[s, e), the first row's ending at m
    if (lane < G) {
        const int r = (group * G + lane) * l.n_qblocks + (qb - l.qb0);
        s = l.row_start[r], m = l.row_start[r + 1], e = l.row_start[r + nq];
    }
    const int s0 = __shfl_sync(0xffffffffu, s, 0), m0 = __shfl_sync(0xffffffffu, m, 0);
    const int e0 = __shfl_sync(0xffffffffu, e, 0);
    if (!__all_sync(0xffffffffu, lane >= G || (m - s == m0 - s0 && e - s == e0 - s0))) return false;
    bool same = true;
    for (int g = 1; g < G; g++) {
        const int sg = __shfl_sync(0xffffffffu, s, g);
#pragma unroll 8
        for (int i = lane; i < e0 - s0; i += 32) same &= __ldg(l.cols + s0 + i) == __ldg(l.cols + sg + i);
    }
    return __all_sync(0xffffffffu, same);
}

// The rows and keys of block (head, tile) of the sparse prefill. The G blocks of the query heads of one KV group
// share the group's 128-position tile, in one of two layouts:
//   per head (the heads' lists differ): the tile's queries of query head `head` as a view of the call's
//     arguments (a.q, a.out, a.lse moved to the tile's first query and the head, a.n its rows, a.q_pos0 its
//     first position, a.G = 1, so the kernels' virtual rows are its queries and qkvh is 0), KV head head / G;
//   packed (every head of the group lists the same blocks in the tile's query blocks, as the full list does):
//     the dense kernels' GQA rows, slab head % G of the tile's 128 / G positions for all G heads, so each listed
//     K/V tile is loaded once for the group (a.n cut at the slab's end; the rows before it are the call's).
//     Each slab lies in one query block (128 / G divides the block size).
// Constructed by every thread of the block (the layout check is a warp collective).
struct ks_sparse_cta {
    using list = ks_sparse_list;
    prefill_args a;
    int kvh, qkvh, v0;
    const int32_t *cols;
    int row_a, row_a_end, row_b_end; // the first row's entries of cols, and the second's end (= row_a_end: none)
    int shift, qb_first, need;

    __device__ __forceinline__ ks_sparse_cta(const prefill_args &a0, const list &l, int head, int tile, int rows,
                                             int d)
        : a(a0), kvh(head / a0.G), cols(l.cols) {
        const int start = (a0.q_pos0 / rows + tile) * rows, G = a0.G;
        const int t_lo = max(0, start - a0.q_pos0), t_hi = min(a0.n, start + rows - a0.q_pos0);
        shift = l.block == 64 ? 6 : 7;
        const int qb_lo = (a0.q_pos0 + t_lo) >> shift, qb_hi = (a0.q_pos0 + t_hi - 1) >> shift;
        if (G > 1 && G <= 32 && rows % G == 0 &&
            ks_sparse_group_shares(l, kvh, G, qb_lo, qb_hi - qb_lo + 1, threadIdx.x & 31)) {
            const int per = rows / G, sub = head % G, s_lo = start - a0.q_pos0 + sub * per;
            const int p_lo = max(t_lo, s_lo), p_hi = min(t_hi, s_lo + per);
            qkvh = kvh, v0 = p_lo * G, need = 1;
            qb_first = (a0.q_pos0 + p_lo) >> shift;
            if (p_hi > p_lo) {
                const int r = kvh * G * l.n_qblocks + (qb_first - l.qb0);
                a.n = p_hi, row_a = l.row_start[r], row_a_end = l.row_start[r + 1];
            } else { // a slab past the chunk's end: no rows, no keys
                a.n = p_lo, row_a = row_a_end = 0;
            }
            row_b_end = row_a_end;
            return;
        }
        a.q += (int64_t)t_lo * a0.ld_q + (int64_t)head * d;
        a.out += (int64_t)t_lo * a0.ld_o + (int64_t)head * d;
        if (a.lse) a.lse += (int64_t)t_lo * a0.H + head;
        a.n = t_hi - t_lo, a.q_pos0 = a0.q_pos0 + t_lo, a.G = 1;
        qkvh = 0, v0 = 0;
        qb_first = qb_lo, need = qb_hi > qb_lo ? 3 : 1;
        const int r = head * l.n_qblocks + (qb_first - l.qb0);
        row_a = l.row_start[r], row_a_end = l.row_start[r + 1];
        row_b_end = need == 3 ? l.row_start[r + 2] : row_a_end;
    }

    // The walk over the keys of the block's rows (range rg): from the window start of its first query to the causal
    // end of its last.
    template <int C>
    __device__ __forceinline__ ks_sparse_walk<C> keys(const prefill_range &rg) const {
        ks_sparse_walk<C> w;
        w.cols = cols;
        w.a = row_a, w.a_end = row_a_end, w.b = row_a_end, w.b_end = row_b_end;
        w.ca = row_a < row_a_end ? __ldg(cols + row_a) : INT_MAX;
        w.cb = row_a_end < row_b_end ? __ldg(cols + row_a_end) : INT_MAX;
        w.shift = shift, w.qb_first = qb_first, w.need = need;
        w.lo = a.window > 0 ? max(0, rg.qp_lo - a.window + 1) : 0;
        w.hi = min(a.n_kv, rg.qp_hi + 1);
        w.base = 0, w.end = 0, w.mask = 0;
        return w;
    }
};

// Blocks of the grid: x the query heads, y the 128-aligned tiles of the chunk.
inline dim3 ks_sparse_grid(const prefill_args &a) {
    return dim3(a.H, (a.q_pos0 + a.n - 1) / kSparseTile - a.q_pos0 / kSparseTile + 1);
}

// The sparse forms of ks_prefill_launch_sm80 (head dim d 64 or 128) and ks_prefill_launch_sm90 (128).
ks_status ks_prefill_sparse_launch_sm80(const prefill_args &a, const ks_sparse_list &l, int d, cudaStream_t s);
ks_status ks_prefill_sparse_launch_sm90(const prefill_args &a, const ks_sparse_list &l, int Hk, cudaStream_t s);
