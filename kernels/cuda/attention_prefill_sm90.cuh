// attention_prefill_sm90.cuh — the per-warpgroup wgmma pieces of the Hopper prefill kernel
// (attention_prefill_sm90_ws.cu): the S = Q K^T wgmma of one key tile, the online softmax of one S tile into
// wgmma A fragments, the O rescale, the Q load and the final normalise-and-store. The Hopper window scores
// (window_scores_sm90.cu) reuse the S = Q K^T product with 128-wide tiles. Head dim 128; a block holds 128
// virtual rows (attention_prefill.cu), 64 per consumer warpgroup, with Q in shared memory in the
// 128-byte-swizzled layout of wgmma.cuh.
//
// Register layout (wgmma m64nN accumulators = the mma.sync one, 16 rows per warp): element 4j + 2e + c of a
// thread's array is row lane/4 + 8e of its warp's 16, column 8j + (lane % 4) * 2 + c.
#pragma once

#include "attention_prefill.cuh"
#include "mma.cuh"
#include "wgmma.cuh"

constexpr int kSm90D = 128, kSm90BM = 128;

#ifdef KS_SM90A
// S (64 rows of warpgroup wg x BN keys) = Q K^T for the K tile at shared address k_s (BN rows, swizzled,
// two 64-column halves BN * 128 bytes apart): eight wgmma over d, issued and committed, not waited for.
template <int BN>
__device__ __forceinline__ void ks_sm90_issue_qk(float s[BN / 2], uint32_t q_s, uint32_t k_s, int wg) {
    static_assert(BN == 96 || BN == 128, "key tile of 96 or 128");
    ks_wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kSm90D / 16; kk++) {
        uint64_t da = ks_gmma_desc(q_s + (kk >> 2) * (kSm90BM * 128) + wg * 64 * 128 + (kk & 3) * 32, 16, 1024);
        uint64_t db = ks_gmma_desc(k_s + (kk >> 2) * (BN * 128) + (kk & 3) * 32, 16, 1024);
        if constexpr (BN == 96)
            ks_wgmma_m64n96k16_ss(s, da, db, kk > 0);
        else
            ks_wgmma_m64n128k16_ss(s, da, db, kk > 0);
    }
    ks_wgmma_commit();
}

// O += P V for the V tile at shared address v_s: V (keys x d) is read N-major, groups of 8 keys 1024 bytes
// apart, the d halves BN * 128 apart. Issued and committed, not waited for.
template <int BN>
__device__ __forceinline__ void ks_sm90_issue_pv(float o[kSm90D / 2], const uint32_t pa[BN / 16][4], uint32_t v_s) {
    ks_wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++)
        ks_wgmma_m64n128k16_rs_tb(o, pa[kk], ks_gmma_desc(v_s + kk * 16 * 128, BN * 128, 1024), 1);
    ks_wgmma_commit();
}

// Online softmax of one S tile into the running max m and sum l (log2 domain), leaving P as
// wgmma A fragments in pa and the factor the output must be rescaled by in alpha (O is not touched, so the
// caller may run this while a P V product still accumulates into O). Masked scores go to a fresh array:
// writing sc in place makes ptxas serialise every wgmma of the kernel (C7515: sc is a wgmma accumulator).
// The scale is applied inside the exponent's FMA (max commutes with it: scale > 0).
// Masking: unless `full` (every score of the tile visible), element i of this thread's scores (key column
// (i / 4) * 8 + (lane % 4) * 2 + i % 2 of the tile, row e = (i / 2) % 2) is kept where visible(i).
template <int BN, class Visible>
__device__ __forceinline__ void ks_sm90_softmax(const prefill_args &a, const float sc[BN / 2], uint32_t pa[BN / 16][4],
                                                float m[2], float l[2], float alpha[2], bool full,
                                                const Visible &visible) {
    float x[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; i++) x[i] = sc[i];
    if (!full) { // one branch per tile: a per-element `full ||` compiles to ~5 branch instructions each
#pragma unroll
        for (int i = 0; i < BN / 2; i++) x[i] = visible(i) ? x[i] : -INFINITY;
    }
    const float scale = a.scale_log2;
    float mu[2];
#pragma unroll
    for (int e = 0; e < 2; e++) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < BN / 8; j++) mx = fmaxf(mx, fmaxf(x[4 * j + 2 * e], x[4 * j + 2 * e + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        mx = fmaxf(m[e], mx * scale);
        mu[e] = mx == -INFINITY ? 0.0f : mx; // no visible key yet: keep exp2 at 0
        alpha[e] = ks_exp2(m[e] - mu[e]);
        m[e] = mx;
    }
    // Exponentiate and pack k-step by k-step: key tiles (2kk, 2kk+1) form the A fragment of k-step kk.
    float sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
        float p[8];
#pragma unroll
        for (int i = 0; i < 8; i++) {
            p[i] = ks_exp2(fmaf(x[8 * kk + i], scale, -mu[(i >> 1) & 1]));
            sum[(i >> 1) & 1] += p[i];
        }
        pa[kk][0] = ks_pack2(p[0], p[1]);
        pa[kk][1] = ks_pack2(p[2], p[3]);
        pa[kk][2] = ks_pack2(p[4], p[5]);
        pa[kk][3] = ks_pack2(p[6], p[7]);
    }
#pragma unroll
    for (int e = 0; e < 2; e++) l[e] = l[e] * alpha[e] + sum[e]; // this thread's partial; quads summed at the end
}

// O *= alpha per row. Once the row maxima settle, alpha is exactly 1 for the whole warp: skip the multiplies.
__device__ __forceinline__ void ks_sm90_rescale_o(float o[kSm90D / 2], const float alpha[2]) {
    if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
        for (int j = 0; j < kSm90D / 8; j++)
            o[4 * j] *= alpha[0], o[4 * j + 1] *= alpha[0], o[4 * j + 2] *= alpha[1], o[4 * j + 3] *= alpha[1];
    }
}

// Normalises and stores this thread's two rows (block row row0 and row0 + 8, block of virtual rows from v0,
// KV head kvh): columns 8j + (lane % 4) * 2 + {0, 1}; and their log-sum-exps when a.lse is set (m, l: the
// online softmax state). Rows past the n queries are skipped.
__device__ __forceinline__ void ks_sm90_store_o(const prefill_args &a, const float o[kSm90D / 2], const float m[2],
                                                const float l[2], int v0, int row0, int kvh, int lane) {
    const int G = a.G;
#pragma unroll
    for (int e = 0; e < 2; e++) {
        const float sum = ks_quad_sum(l[e]);
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
        const int v = v0 + row0 + e * 8, t = v / G;
        if (t >= a.n) continue;
        if (a.lse && (lane & 3) == 0) ks_prefill_store_lse(a, t, kvh * G + v - t * G, m[e], sum);
        bf16 *dst = a.out + (int64_t)t * a.ld_o + (int64_t)(kvh * G + v - t * G) * kSm90D + (lane & 3) * 2;
#pragma unroll
        for (int j = 0; j < kSm90D / 8; j++)
            *reinterpret_cast<uint32_t *>(dst + j * 8) = ks_pack2(o[4 * j + 2 * e] * inv, o[4 * j + 2 * e + 1] * inv);
    }
}

// cp.async of virtual rows [r0, r0 + rows) of the block's Q tile (block of virtual rows from v0, KV head kvh)
// into the swizzled tile at q_s, by `nthreads` threads of which this is number `t0`: virtual row r -> query
// (v0 + r) / G, head kvh * G + (v0 + r) % G; rows past n zero-filled. Not committed.
__device__ __forceinline__ void ks_sm90_load_q(const prefill_args &a, uint32_t q_s, int v0, int kvh, int r0, int rows,
                                               int t0, int nthreads) {
    const int G = a.G;
    for (int c = t0; c < rows * kSm90D / 8; c += nthreads) {
        int r = r0 + c / (kSm90D / 8), col = (c % (kSm90D / 8)) * 8, v = v0 + r, t = v / G;
        bool ok = t < a.n;
        const bf16 *src = ok ? a.q + (int64_t)t * a.ld_q + (int64_t)(kvh * G + v - t * G) * kSm90D + col : a.q;
        ks_cp_async16_s(q_s + ks_sw128_offset(r, col, kSm90BM), src, ok);
    }
}
#endif
