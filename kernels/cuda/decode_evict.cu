// decode_evict.cu — decode-time eviction of one layer on the device (ks_cuda_methods.h: ks_cuda_decode_evict;
// references ks_ref_evict_row for the choice, ks_kvcache_drop_row for the move), so that a decode step with
// H2O's, StreamingLLM's or CakeKV's eviction stays one CUDA graph with no host round trip per layer; and the
// fold of H2O's prompt scores into its running scores (ks_cuda_row_scores_fold), which those start from.
//
//   select  one block per KV head: the running scores, one row per query head of the group, take that head's
//           probabilities of the step, then the row to drop is the lowest key (ks_select_topk's order: NaN
//           lowest, -0 = +0) of the group's reduction of them (ks_gqa_reduce_col) over the droppable rows, the
//           latest of equal lowest, as one 64-bit minimum (key << 32 | ~row); the device length drops by one.
//   shift   the rows after the dropped one move down by one, in tiles of TILE rows over the whole GPU without
//           a second copy of the cache: pass A moves each tile's rows within the tile and sets its first row
//           aside, pass B puts that row at the end of the tile before (the one row two tiles share).
#include <cuda_runtime.h>

#include "cuda/common.cuh"
#include "cuda/ks_cuda_methods.h"

namespace {

constexpr int SELECT_THREADS = 256, TILE = 32, SHIFT_THREADS = 256;

__device__ __forceinline__ uint32_t order_key(float x) {
    if (isnan(x)) return 0;
    if (x == 0.0f) x = 0.0f; // -0 -> +0
    uint32_t u = __float_as_uint(x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// ACCUMULATED: p and scores hold G rows (one per query head) per KV head; POOLED: p one reduced row.
__global__ void __launch_bounds__(SELECT_THREADS)
    select_kernel(int32_t *lens, int32_t *drop, const float *p, int64_t ld_p, float *scores, int64_t ld_s,
                  ks_evict_args a, int G) {
    const int g = blockIdx.x, tid = threadIdx.x, len = lens[g];
    const bool acc = a.rule == KS_EVICT_ACCUMULATED;
    const float *pg = p ? p + (acc ? (int64_t)g * G : g) * ld_p : nullptr;
    float *sg = scores ? scores + (int64_t)g * G * ld_s : nullptr;
    if (acc) {
        for (int i = 0; i < G; i++)
            for (int j = tid; j < len; j += SELECT_THREADS)
                sg[i * ld_s + j] = (j == len - 1 ? 0.0f : sg[i * ld_s + j]) + pg[i * ld_p + j];
        __syncthreads(); // the choice below reads rows from `head` on: other threads' rows
    }
    const int lo = a.head, hi = len - a.tail;
    if (len <= a.keep || hi <= lo) {
        if (tid == 0) drop[g] = -1;
        return;
    }
    uint64_t best = ~0ull;
    if (a.rule == KS_EVICT_SINK) {
        best = ~(uint64_t)(uint32_t)lo & 0xffffffffull;
    } else {
        const int r = a.kernel / 2;
        for (int j = lo + tid; j < hi; j += SELECT_THREADS) {
            float v;
            if (a.rule == KS_EVICT_POOLED) { // ks_select_pool: zeros beyond [0, hi), the divisor kernel
                double sum = 0;
                for (int i = j - r < 0 ? 0 : j - r; i <= j + r && i < hi; i++) sum += pg[i];
                v = (float)(sum / a.kernel);
            } else {
                v = ks_gqa_reduce_col(sg + j, (size_t)ld_s, G, a.reduce);
            }
            uint64_t c = ((uint64_t)order_key(v) << 32) | (uint32_t)~(uint32_t)j;
            best = c < best ? c : best;
        }
    }
    __shared__ uint64_t part[SELECT_THREADS / 32];
    for (int o = 16; o > 0; o >>= 1) {
        uint64_t other = __shfl_xor_sync(0xffffffffu, best, o);
        best = other < best ? other : best;
    }
    if ((tid & 31) == 0) part[tid >> 5] = best;
    __syncthreads();
    if (tid == 0) {
        for (int w = 1; w < SELECT_THREADS / 32; w++) best = part[w] < best ? part[w] : best;
        drop[g] = (int32_t)~(uint32_t)(best & 0xffffffffull);
        lens[g] = len - 1;
    }
}

struct shift_args {
    bf16 *k, *v;      // (Hk, cap, d)
    float *scores;    // (Hk G, ld_s), G rows per KV head, or null
    int64_t ld_s;
    const int32_t *lens, *drop;
    bf16 *aside;      // (Hk, cap, d): tile t's first K row at row t, its V row at row cap / 2 + t
    float *aside_s;   // (Hk G, cap): tile t's first score of each score row at column t
    int d, cap, G;
};

// The tile's source rows [s, e) of head g (the rows after the dropped one: [drop + 1, new length + 1)), or false.
__device__ __forceinline__ bool tile_rows(const shift_args &a, int g, int t, int *s, int *e) {
    const int dr = a.drop[g], n = a.lens[g];
    if (dr < 0) return false;
    *s = dr + 1 + t * TILE;
    *e = *s + TILE < n + 1 ? *s + TILE : n + 1;
    return *s <= n;
}

__device__ __forceinline__ uint4 *row_words(bf16 *base, const shift_args &a, int g, int row) {
    return reinterpret_cast<uint4 *>(base + ((int64_t)g * a.cap + row) * a.d);
}

// Pass A: rows s + 1 .. e - 1 to s .. e - 2 through shared memory; row s set aside.
__global__ void __launch_bounds__(SHIFT_THREADS) shift_within_kernel(shift_args a) {
    extern __shared__ uint4 tile[]; // (2, TILE - 1, d / 8): K rows, then V rows
    const int g = blockIdx.y, t = blockIdx.x, words = a.d / 8;
    int s, e;
    if (!tile_rows(a, g, t, &s, &e)) return;
    const int moved = (e - s - 1) * words;
    for (int i = threadIdx.x; i < words; i += SHIFT_THREADS) {
        row_words(a.aside, a, g, t)[i] = row_words(a.k, a, g, s)[i];
        row_words(a.aside, a, g, a.cap / 2 + t)[i] = row_words(a.v, a, g, s)[i];
    }
    for (int i = threadIdx.x; i < moved; i += SHIFT_THREADS) {
        tile[i] = row_words(a.k, a, g, s + 1)[i];
        tile[(TILE - 1) * words + i] = row_words(a.v, a, g, s + 1)[i];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < moved; i += SHIFT_THREADS) {
        row_words(a.k, a, g, s)[i] = tile[i];
        row_words(a.v, a, g, s)[i] = tile[(TILE - 1) * words + i];
    }
    for (int r = 0; a.scores && r < a.G; r++) { // the group's score rows, the same way (a thread per column)
        const int64_t row = (int64_t)g * a.G + r;
        float sc = 0;
        if (threadIdx.x < e - s) sc = a.scores[row * a.ld_s + s + threadIdx.x];
        if (threadIdx.x == 0) a.aside_s[row * a.cap + t] = sc;
        __syncthreads();
        if (threadIdx.x >= 1 && threadIdx.x < e - s) a.scores[row * a.ld_s + s + threadIdx.x - 1] = sc;
    }
}

// Pass B: the set-aside first row of tile t to row s - 1 (the last row of the tile before, or the dropped one).
__global__ void __launch_bounds__(SHIFT_THREADS) shift_across_kernel(shift_args a) {
    const int g = blockIdx.y, t = blockIdx.x, words = a.d / 8;
    int s, e;
    if (!tile_rows(a, g, t, &s, &e)) return;
    for (int i = threadIdx.x; i < words; i += SHIFT_THREADS) {
        row_words(a.k, a, g, s - 1)[i] = row_words(a.aside, a, g, t)[i];
        row_words(a.v, a, g, s - 1)[i] = row_words(a.aside, a, g, a.cap / 2 + t)[i];
    }
    for (int r = threadIdx.x; a.scores && r < a.G; r += SHIFT_THREADS) {
        const int64_t row = (int64_t)g * a.G + r;
        a.scores[row * a.ld_s + s - 1] = a.aside_s[row * a.cap + t];
    }
}

__global__ void fold_kernel(float *scores, int64_t ld, const float *add, int64_t ld_add, int first_new, int n_keys) {
    const int g = blockIdx.y;
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < n_keys; j += gridDim.x * blockDim.x) {
        float a = add[g * ld_add + j];
        scores[g * ld + j] = j < first_new ? scores[g * ld + j] + a : a;
    }
}

} // namespace

extern "C" ks_status ks_cuda_row_scores_fold(float *scores, int64_t ld, const float *add, int64_t ld_add, int rows,
                                             int first_new, int n_keys, cudaStream_t s) {
    KS_ASSERT(rows > 0 && n_keys <= ld && n_keys <= ld_add);
    if (n_keys <= 0) return KS_OK;
    dim3 grid(ks_cdiv(n_keys, 256) < 64 ? ks_cdiv(n_keys, 256) : 64, rows);
    fold_kernel<<<grid, 256, 0, s>>>(scores, ld, add, ld_add, first_new, n_keys);
    KS_LAUNCH_CHECK();
    return KS_OK;
}

extern "C" ks_status ks_cuda_decode_evict(ks_bf16 *kc, ks_bf16 *vc, int32_t *lens, int32_t *drop, const float *p,
                                          int64_t ld_p, float *scores, int64_t ld_s, const ks_evict_args *a, int Hk,
                                          int G, int d, int cap, int max_len, ks_bf16 *scratch, float *score_scratch,
                                          cudaStream_t s) {
    KS_ASSERT(d % 8 == 0 && d <= 256 && ((uintptr_t)kc | (uintptr_t)vc | (uintptr_t)scratch) % 16 == 0 &&
              max_len <= cap && Hk > 0 && G > 0 && (a->rule == KS_EVICT_SINK || p) &&
              (a->rule != KS_EVICT_ACCUMULATED || (scores && score_scratch)) &&
              (a->rule != KS_EVICT_POOLED || (a->kernel >= 1 && a->kernel % 2 == 1)));
    float *sc = a->rule == KS_EVICT_ACCUMULATED ? scores : nullptr;
    select_kernel<<<Hk, SELECT_THREADS, 0, s>>>(lens, drop, p, ld_p, sc, ld_s, *a, G);
    KS_LAUNCH_CHECK();
    if (max_len < 2) return KS_OK; // nothing can follow a dropped row
    shift_args sa = {reinterpret_cast<bf16 *>(kc), reinterpret_cast<bf16 *>(vc), sc, ld_s, lens, drop,
                     reinterpret_cast<bf16 *>(scratch), score_scratch, d, cap, G};
    dim3 grid(ks_cdiv(max_len, TILE), Hk);
    size_t smem = sizeof(uint4) * 2 * (TILE - 1) * (d / 8);
    shift_within_kernel<<<grid, SHIFT_THREADS, smem, s>>>(sa);
    KS_LAUNCH_CHECK();
    shift_across_kernel<<<grid, SHIFT_THREADS, 0, s>>>(sa);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
