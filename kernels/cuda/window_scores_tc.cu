// window_scores_tc.cu — ks_cuda_scores on tensor cores for many queries under one causal softmax (H2O's
// all-query prefill scores: a chunk of n_q queries at positions q_pos.. against every key they see), the
// semantics of ks_ref_window_scores with KS_SCORE_SUM. The CUDA-core kernels of window_scores.cu sweep the
// chunk's queries over the keys twice with scalar dot products; here both sweeps are mma.sync products:
//   1. each (query, head)'s log-sum-exp: the prefill attention kernel without V (ks_prefill_lse_launch), or
//      none when the caller has them from the chunk's attention (lse_in);
//   2. colsum_kernel, key-major: a block holds kBK keys of one KV head as the A operand and streams every
//      query head of the group past them in tiles of kBQ queries (the B operand, with their log-sum-exps):
//      S^T = K Q^T, p = 2^(S^T * scale * log2 e - lse * log2 e), and each key's row sum of p is its
//      probability mass over the tile's queries. Tile sums go to double per head, then the quad of lanes
//      sharing a key adds them and the GQA reduction folds the heads, so no atomics and no (n_q, n_keys)
//      matrix. Key blocks start at the first query tile that sees them (the causal triangle only).
// Together about one attention pass of work over the chunk (two Q K^T, no P V); half that with lse_in.
// On Hopper, head dim 128, the second pass runs on wgmma instead (window_scores_sm90.cu).
#include "cuda/attention_prefill.cuh"
#include "cuda/mma.cuh"
#include "cuda/window_scores_tc.cuh"

namespace {

constexpr int kBK = 128, kBQ = 64, kThreads = 128; // 4 warps x 32 keys
constexpr float kLog2e = 1.4426950408889634f;

template <int D>
struct colsum_smem {
    bf16 k[kBK * D];     // the block's keys, swizzled (ks_swz)
    bf16 q[2][kBQ * D];  // query tiles, double-buffered
    float lse2[2][kBQ];  // their log-sum-exps * log2 e (+inf past n_q: every p of such a column is 0)
};

// Issues the copies of query tile [i0, i0 + kBQ) of head h into stage st (rows past n_q zero-filled) and
// stores its log-sum-exps.
template <int D>
__device__ __forceinline__ void load_q_tile(colsum_smem<D> &sm, int st, const colsum_args &a, int h, int i0) {
    for (int c = threadIdx.x; c < kBQ * D / 8; c += kThreads) {
        int r = c / (D / 8), col = (c % (D / 8)) * 8, i = i0 + r;
        bool ok = i < a.n_q;
        ks_cp_async16(sm.q[st] + ks_swz<D>(r, col), ok ? a.q + (int64_t)i * a.ld_q + (int64_t)h * D + col : a.q, ok);
    }
    if (threadIdx.x < kBQ) {
        int i = i0 + threadIdx.x;
        sm.lse2[st][threadIdx.x] = ks_colsum_lse2(a, h, i);
    }
}

template <int D>
__global__ void __launch_bounds__(kThreads, 2) colsum_kernel(colsum_args a) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    colsum_smem<D> &sm = *reinterpret_cast<colsum_smem<D> *>(smem_raw);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = blockIdx.y, kb = blockIdx.x * kBK;
    int i_first, ntiles;
    ks_colsum_tiles(a, kb, kBQ, &i_first, &ntiles);
    const int total = ntiles * a.G;
    const bf16 *kh = a.kc + (int64_t)g * a.cap * D;
    for (int c = threadIdx.x; c < kBK * D / 8; c += kThreads) { // rows past n_keys zero-filled, never written
        int r = c / (D / 8), col = (c % (D / 8)) * 8;
        bool ok = kb + r < a.n_keys;
        ks_cp_async16(sm.k + ks_swz<D>(r, col), kh + (ok ? (int64_t)(kb + r) * D + col : 0), ok);
    }
    if (total > 0) load_q_tile<D>(sm, 0, a, g * a.G, i_first);
    ks_cp_async_commit();

    // ldmatrix rows of this lane: the keys are ks_mma_abt's A operand, the query tiles its B operand (as
    // attention_prefill.cu with the roles of Q and K swapped).
    constexpr uint32_t kTile = kBQ * D * 2;
    uint32_t k_addr, k_x, q_addr0, q_x;
    ks_abt_a_lane<D>(sm.k, warp * 32, &k_addr, &k_x);
    ks_abt_b_lane<D>(sm.q[0], &q_addr0, &q_x);

    double acc[2][2] = {{0, 0}, {0, 0}}, grp[2][2] = {{0, 0}, {0, 0}}, mean[2][2] = {{0, 0}, {0, 0}};
    for (int it = 0; it < total; it++) {
        const int hg = it / ntiles, i0 = i_first + (it - hg * ntiles) * kBQ, st = it & 1;
        if (it + 1 < total) { // stage st ^ 1 was last read in iteration it - 1, which ended in a barrier
            const int nx = it + 1, nhg = nx / ntiles;
            load_q_tile<D>(sm, st ^ 1, a, g * a.G + nhg, i_first + (nx - nhg * ntiles) * kBQ);
            ks_cp_async_commit();
            ks_cp_async_wait<1>();
        } else {
            ks_cp_async_wait<0>();
        }
        __syncthreads();
        const uint32_t q_addr = q_addr0 + st * kTile;

        float sc[2][kBQ / 8][4]; // S^T = K Q^T for this warp's 32 keys x kBQ queries
        ks_mma_abt<D, kBQ>(sc, k_addr, k_x, q_addr, q_x);

        // Accumulator (s, j, 2e + c): key row warp*32 + s*16 + e*8 + lane/4, query column j*8 + (lane%4)*2 + c.
        const bool full = kb + kBK - 1 <= a.q_pos + i0; // every key of the block seen by the tile's first query
        const float *l2 = sm.lse2[st];
#pragma unroll
        for (int s = 0; s < 2; s++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int key = kb + warp * 32 + s * 16 + e * 8 + (lane >> 2);
                float rs = 0.0f;
#pragma unroll
                for (int j = 0; j < kBQ / 8; j++)
#pragma unroll
                    for (int c = 0; c < 2; c++) {
                        const int col = j * 8 + (lane & 3) * 2 + c;
                        float x = sc[s][j][2 * e + c] * a.scale_log2 - l2[col];
                        if (!full && key > a.q_pos + i0 + col) x = -INFINITY;
                        rs += ks_exp2(x);
                    }
                acc[s][e] += rs;
            }
        if (i0 + kBQ >= a.n_q) { // the head's last tile: the quad's sums, then the GQA reduction
#pragma unroll
            for (int s = 0; s < 2; s++)
#pragma unroll
                for (int e = 0; e < 2; e++)
                    ks_colsum_fold(a, acc[s][e], g, hg, kb + warp * 32 + s * 16 + e * 8 + (lane >> 2), grp[s][e],
                                   mean[s][e]);
        }
        __syncthreads(); // every warp is done with stage st before the next iteration refills it
    }
    ks_cp_async_wait<0>(); // with no query tile at all, the K copies are still in flight here

#pragma unroll
    for (int s = 0; s < 2; s++)
#pragma unroll
        for (int e = 0; e < 2; e++)
            ks_colsum_store(a, g, kb + warp * 32 + s * 16 + e * 8 + (lane >> 2), grp[s][e], mean[s][e], total > 0);
}

template <int D>
ks_status launch_colsum(const colsum_args &c, int Hk, cudaStream_t s) {
    const int smem = (int)sizeof(colsum_smem<D>);
    static bool configured = false; // the attribute is per function; set once, before the first launch
    if (!configured) {
        CUDA_CHECK(cudaFuncSetAttribute(colsum_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        configured = true;
    }
    colsum_kernel<D><<<dim3(ks_cdiv(c.n_keys, kBK), Hk), kThreads, smem, s>>>(c);
    KS_LAUNCH_CHECK();
    return KS_OK;
}

} // namespace

bool ks_scores_tc_fits(const ks_cuda_score_args *a) {
    return a->n_q >= kBQ && a->softmax_chunk == 0 && !a->lo && !a->hi && a->stat == KS_SCORE_SUM &&
           (a->d == 64 || a->d == 128) && a->ld_q % 8 == 0 && ks_cdiv((int64_t)a->n_q * (a->H / a->Hk), 128) <= 65535;
}

ks_status ks_scores_tc(float *out, int64_t ld, const ks_cuda_score_args *a, float *lse, bool portable,
                       cudaStream_t s) {
    KS_ASSERT(ks_scores_tc_fits(a));
    const float scale_log2 = a->scale * kLog2e;
    prefill_args p = {};
    p.q = reinterpret_cast<const bf16 *>(a->q), p.kc = reinterpret_cast<const bf16 *>(a->kc);
    p.ld_q = a->ld_q, p.n = a->n_q, p.n_kv = a->n_keys, p.cap = a->cap, p.H = a->H, p.G = a->H / a->Hk;
    p.q_pos0 = a->q_pos;
    p.window = 0, p.scale_log2 = scale_log2, p.lse = lse;
    if (!a->lse_in) KS_TRY(ks_prefill_lse_launch(p, a->Hk, a->d, s));
    colsum_args c = {out, a->sums, ld, a->ld_q, a->lse_in ? a->lse_in : lse, p.q, p.kc, a->H, p.G, a->cap, a->n_q, a->q_pos, a->n_keys,
                     scale_log2, a->reduce};
    if (!portable && a->d == 128 && ks_device_major() == 9) return ks_colsum_launch_sm90(c, a->Hk, s);
    return a->d == 64 ? launch_colsum<64>(c, a->Hk, s) : launch_colsum<128>(c, a->Hk, s);
}
