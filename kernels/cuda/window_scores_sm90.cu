// window_scores_sm90.cu — the second pass of the tensor-core scores (window_scores_tc.cu) on Hopper
// (sm_90a), head dim 128: each key's probability mass over a chunk's queries with S^T = K Q^T on wgmma.
//
// S^T = K Q^T has the form of the prefill attention's S = Q K^T with the roles swapped, so the block reuses
// its pieces (attention_prefill_sm90.cuh): 128 keys of one KV head sit in shared memory as the A operand
// (ks_sm90_issue_qk's "Q", 64 rows per consumer warpgroup), and the queries of each head of the group stream
// past as the B operand in tiles of kBN, through a kStages-deep cp.async ring with their log-sum-exps. A
// warpgroup issues the product of tile it + 1 before it exponentiates and sums tile it, so the tensor cores
// and the exponentials overlap. No P V, no online softmax: p = 2^(S^T * scale *
// log2 e - lse * log2 e) with each query's final log-sum-exp, summed along the key's row.
#include "cuda/attention_prefill_sm90.cuh"
#include "cuda/window_scores_tc.cuh"

namespace {

constexpr int kBK = kSm90BM, kBN = 128, kD = kSm90D, kThreads = 256, kStages = 4;
constexpr uint32_t kKBytes = kBK * kD * 2, kQBytes = kBN * kD * 2;
constexpr int kLseOff = (int)(kKBytes + kStages * kQBytes);                 // the ring's log-sum-exps
constexpr int kSmem = kLseOff + kStages * kBN * (int)sizeof(float) + 1024; // alignment slack

#ifdef KS_SM90A
// Copies of query tile [i0, i0 + kBN) of head h into the swizzled tile at q_s (rows past n_q zero-filled,
// not committed), and its log-sum-exps * log2 e into l2 (+inf past n_q: every p of such a column is 0).
__device__ __forceinline__ void load_q_tile(const colsum_args &a, uint32_t q_s, float *l2, int h, int i0) {
    for (int c = threadIdx.x; c < kBN * kD / 8; c += kThreads) {
        int r = c / (kD / 8), col = (c % (kD / 8)) * 8, i = i0 + r;
        bool ok = i < a.n_q;
        ks_cp_async16_s(q_s + ks_sw128_offset(r, col, kBN), ok ? a.q + (int64_t)i * a.ld_q + (int64_t)h * kD + col : a.q,
                        ok);
    }
    if (threadIdx.x < kBN) {
        int i = i0 + threadIdx.x;
        l2[threadIdx.x] = ks_colsum_lse2(a, h, i);
    }
}

// rs[e] += the probabilities of this thread's S^T elements of key row e (key0 + 8e) over the tile's query
// columns; kMasked: the tile crosses the causal diagonal (query i0 + col sees keys up to q_pos + i0 + col).
// Two bodies rather than a per-element test: ptxas turns `full ||` into a compare and a select per element.
template <bool kMasked>
__device__ __forceinline__ void tile_sums(const float cur[kBN / 2], const float *l2, float scale_log2, int key0,
                                          int last_seen, int lane, float rs[2]) {
#pragma unroll
    for (int i = 0; i < kBN / 2; i++) {
        const int col = (i >> 2) * 8 + (lane & 3) * 2 + (i & 1), e = (i >> 1) & 1;
        float x = fmaf(cur[i], scale_log2, -l2[col]);
        if (kMasked) x = key0 + 8 * e > last_seen + col ? -INFINITY : x;
        rs[e] += ks_exp2(x);
    }
}
#endif

__global__ void __launch_bounds__(kThreads, 1) colsum_sm90_kernel(const __grid_constant__ colsum_args a) {
#ifdef KS_SM90A
    extern __shared__ unsigned char smem_raw[];
    const uint32_t base = (ks_smem_addr(smem_raw) + 1023) & ~1023u; // swizzle atoms need 1024-byte alignment
    const uint32_t k_s = base, q_ring = base + kKBytes;
    float *lse_ring = reinterpret_cast<float *>(smem_raw + (base - ks_smem_addr(smem_raw)) + kLseOff);
    const int tid = threadIdx.x, lane = tid & 31, wg = tid >> 7, wl = (tid >> 5) & 3;
    const int g = blockIdx.y, kb = blockIdx.x * kBK;
    int i_first, ntiles;
    ks_colsum_tiles(a, kb, kBN, &i_first, &ntiles);
    const int total = ntiles * a.G;
    auto tile_head = [&](int t) { return t / ntiles; };
    auto tile_i0 = [&](int t) { return i_first + (t - t / ntiles * ntiles) * kBN; };

    const bf16 *kh = a.kc + (int64_t)g * a.cap * kD;
    for (int c = tid; c < kBK * kD / 8; c += kThreads) { // rows past n_keys zero-filled, never written
        int r = c / (kD / 8), col = (c % (kD / 8)) * 8;
        bool ok = kb + r < a.n_keys;
        ks_cp_async16_s(k_s + ks_sw128_offset(r, col, kBK), kh + (ok ? (int64_t)(kb + r) * kD + col : 0), ok);
    }
    // Tiles 0 .. kStages - 2 (the keys with the first); tile t lives in stage t % kStages.
#pragma unroll
    for (int t = 0; t < kStages - 1; t++) {
        if (t < total) load_q_tile(a, q_ring + t * kQBytes, lse_ring + t * kBN, g * a.G + tile_head(t), tile_i0(t));
        ks_cp_async_commit();
    }

    // This thread's keys: warpgroup wg, warp wl, rows lane/4 and lane/4 + 8 (e = 0, 1) of its 16.
    const int key0 = kb + wg * 64 + wl * 16 + (lane >> 2);
    double acc[2] = {0, 0}, grp[2] = {0, 0}, mean[2] = {0, 0};
    float s_a[kBN / 2], s_b[kBN / 2]; // S^T of the current tile and of the next one, alternating roles
    if (total > 0) {
        ks_cp_async_wait<kStages - 2>();
        ks_fence_proxy_async();
        __syncthreads();
        ks_sm90_issue_qk<kBN>(s_a, k_s, q_ring, wg);
        ks_wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < kBN / 2; i++) ks_reg_fence(s_a[i]);
    }

    // Tile it: S^T in cur; leaves tile it + 1's in next. Element 4j + 2e + c of S^T is key key0 + 8e,
    // query column 8j + (lane % 4) * 2 + c.
    auto step = [&](int it, float(&cur)[kBN / 2], float(&next)[kBN / 2]) {
        const int st = it % kStages, hg = tile_head(it), i0 = tile_i0(it);
        ks_cp_async_wait<kStages - 3>(); // tile it + 1 (issued kStages - 2 iterations ago) has landed
        ks_fence_proxy_async();
        __syncthreads(); // ... for every thread; and every warpgroup is done with tile it - 1's stage
        if (it + kStages - 1 < total) {
            const int t = it + kStages - 1, stt = t % kStages;
            load_q_tile(a, q_ring + stt * kQBytes, lse_ring + stt * kBN, g * a.G + tile_head(t), tile_i0(t));
        }
        ks_cp_async_commit();
        if (it + 1 < total) ks_sm90_issue_qk<kBN>(next, k_s, q_ring + ((it + 1) % kStages) * kQBytes, wg);

        const float *l2 = lse_ring + st * kBN;
        const bool full = kb + kBK - 1 <= a.q_pos + i0; // every key of the block seen by the tile's first query
        float rs[2] = {0.0f, 0.0f};
        if (full) tile_sums<false>(cur, l2, a.scale_log2, key0, 0, lane, rs);
        else tile_sums<true>(cur, l2, a.scale_log2, key0, a.q_pos + i0, lane, rs);
        acc[0] += rs[0], acc[1] += rs[1];
        if (i0 + kBN >= a.n_q) { // the head's last tile: the quad's sums, then the GQA reduction
#pragma unroll
            for (int e = 0; e < 2; e++) ks_colsum_fold(a, acc[e], g, hg, key0 + 8 * e, grp[e], mean[e]);
        }
        ks_wgmma_wait<0>(); // S^T of tile it + 1
#pragma unroll
        for (int i = 0; i < kBN / 2; i++) ks_reg_fence(next[i]);
    };
    for (int it = 0; it < total; it += 2) { // unrolled by two so that cur/next swap without copies
        step(it, s_a, s_b);
        if (it + 1 < total) step(it + 1, s_b, s_a);
    }
    ks_cp_async_wait<0>(); // with no query tile at all, the key copies are still in flight here

#pragma unroll
    for (int e = 0; e < 2; e++) ks_colsum_store(a, g, key0 + 8 * e, grp[e], mean[e], total > 0);
#else
    __trap(); // only the sm_90a binary holds this kernel; the launcher never selects it elsewhere
#endif
}

} // namespace

ks_status ks_colsum_launch_sm90(const colsum_args &c, int Hk, cudaStream_t s) {
    static bool configured = false; // the attribute is per function; set once, before the first launch
    if (!configured) {
        CUDA_CHECK(cudaFuncSetAttribute(colsum_sm90_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
        configured = true;
    }
    colsum_sm90_kernel<<<dim3(ks_cdiv(c.n_keys, kBK), Hk), kThreads, kSmem, s>>>(c);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
