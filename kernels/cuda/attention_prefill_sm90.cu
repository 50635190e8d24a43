// attention_prefill_sm90.cu — the prefill attention kernel for Hopper (sm_90a), head dim 128: the same
// contract and GQA virtual-row packing as attention_prefill.cu, with the two products on wgmma.
//
// Block: two warpgroups (256 threads), 128 virtual rows (64 per warpgroup), key tiles of 96, a 4-stage
// cp.async ring of K/V tiles filled by all threads three tiles ahead. Per tile `it` a warpgroup issues
// S' = Q K(it+1)^T (eight m64n96k16 wgmma, both operands in shared memory, K-major) and, while the tensor
// cores run it, does the online softmax of S = Q K(it)^T in registers (the accumulator layout is the
// mma.sync one, 16 rows per warp); then it issues O += P V(it) (six m64n128k16 wgmma, P in registers, V
// read N-major, i.e. transposed) and waits for both. The softmax thus overlaps the tensor-core work instead
// of alternating with it. Shared tiles use the 128-byte-swizzled layout of wgmma.cuh.
#include "attention_prefill.cuh"
#include "mma.cuh"
#include "wgmma.cuh"

namespace {

constexpr int kBM = 128, kBN = 96, kD = 128, kThreads = 256;
constexpr uint32_t kQBytes = kBM * kD * 2, kKVBytes = kBN * kD * 2;
constexpr int kStages = 4;
constexpr int kSmem = (int)(kQBytes + 2 * kStages * kKVBytes) + 1024; // Q, the K/V ring, alignment slack

#ifdef KS_SM90A
// cp.async of key tile [kb, kb + kBN) of K and V into swizzled tiles at shared addresses ks, vs.
__device__ __forceinline__ void load_kv_tile(uint32_t ks, uint32_t vs, const bf16 *kh, const bf16 *vh, int kb,
                                             int n_kv) {
#pragma unroll
    for (int c = threadIdx.x; c < kBN * kD / 8; c += kThreads) {
        int r = c / (kD / 8), col = (c % (kD / 8)) * 8;
        bool ok = kb + r < n_kv;
        int64_t src = ok ? (int64_t)(kb + r) * kD + col : 0;
        uint32_t off = ks_sw128_offset(r, col, kBN);
        ks_cp_async16_s(ks + off, kh + src, ok);
        ks_cp_async16_s(vs + off, vh + src, ok);
    }
}


// S (64 rows of warpgroup wg x kBN keys) = Q K^T for the K tile at shared address k_s: eight wgmma over d
// (two 64-column halves of four k-steps), issued and committed, not waited for.
__device__ __forceinline__ void issue_qk(float s[kBN / 2], uint32_t q_s, uint32_t k_s, int wg) {
    ks_wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kD / 16; kk++) {
        uint64_t da = ks_gmma_desc(q_s + (kk >> 2) * (kBM * 128) + wg * 64 * 128 + (kk & 3) * 32, 16, 1024);
        uint64_t db = ks_gmma_desc(k_s + (kk >> 2) * (kBN * 128) + (kk & 3) * 32, 16, 1024);
        ks_wgmma_m64n96k16_ss(s, da, db, kk > 0);
    }
    ks_wgmma_commit();
}

// Online softmax of one S tile (keys kb ..) into the running max m, sum l and output o (all in the log2
// domain), leaving P as wgmma A fragments in pa. sc[4j + 2e + c] is row e (lane/4 + 8e of the warp), key
// kb + 8j + (lane%4)*2 + c. Masked scores go to a fresh array: writing sc in place makes ptxas serialise
// every wgmma of the kernel (C7515: sc is the accumulator of the previous S product). The scale is applied
// inside the exponent's FMA (max commutes with it: scale > 0).
__device__ __forceinline__ void softmax_tile(const prefill_args &a, const float sc[kBN / 2], uint32_t pa[kBN / 16][4],
                                             float o[kD / 2], float m[2], float l[2], int kb, bool full,
                                             const int pos[2], int lane) {
    float x[kBN / 2];
#pragma unroll
    for (int i = 0; i < kBN / 2; i++) {
        const int key = kb + (i >> 2) * 8 + (lane & 3) * 2 + (i & 1);
        x[i] = full || ks_prefill_visible(a, key, pos[(i >> 1) & 1]) ? sc[i] : -INFINITY;
    }
    const float scale = a.scale_log2;
    float mu[2], alpha[2];
#pragma unroll
    for (int e = 0; e < 2; e++) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < kBN / 8; j++) mx = fmaxf(mx, fmaxf(x[4 * j + 2 * e], x[4 * j + 2 * e + 1]));
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
    for (int kk = 0; kk < kBN / 16; kk++) {
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
    // Once the row maxima settle, alpha is exactly 1 for the whole warp: skip the 64 multiplies.
    if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
        for (int j = 0; j < kD / 8; j++)
            o[4 * j] *= alpha[0], o[4 * j + 1] *= alpha[0], o[4 * j + 2] *= alpha[1], o[4 * j + 3] *= alpha[1];
    }
}
#endif

__global__ void __launch_bounds__(kThreads, 1) attention_prefill_sm90_kernel(prefill_args a) {
#ifdef KS_SM90A
    extern __shared__ unsigned char smem_raw[];
    const uint32_t base = (ks_smem_addr(smem_raw) + 1023) & ~1023u; // swizzle atoms need 1024-byte alignment
    const uint32_t q_s = base, k_ring = base + kQBytes, v_ring = base + kQBytes + kStages * kKVBytes;
    const int tid = threadIdx.x, lane = tid & 31, wg = tid >> 7, wl = (tid >> 5) & 3;
    const int kvh = blockIdx.x, G = a.G;
    const int v0 = (gridDim.y - 1 - blockIdx.y) * kBM; // the longest (latest) query blocks start first
    const prefill_range rg = ks_prefill_range(a, v0, kBM, kBN);
    const bf16 *kh = a.kc + (int64_t)kvh * a.cap * kD, *vh = a.vc + (int64_t)kvh * a.cap * kD;

    // Q tile: virtual row r -> query t = (v0 + r) / G, head kvh * G + (v0 + r) % G; rows past n zero-filled.
#pragma unroll
    for (int c = tid; c < kBM * kD / 8; c += kThreads) {
        int r = c / (kD / 8), col = (c % (kD / 8)) * 8, v = v0 + r, t = v / G;
        bool ok = t < a.n;
        const bf16 *src = ok ? a.q + (int64_t)t * a.ld_q + (int64_t)(kvh * G + v - t * G) * kD + col : a.q;
        ks_cp_async16_s(q_s + ks_sw128_offset(r, col, kBM), src, ok);
    }
    // Tiles 0, 1 and 2 (with Q in the first group); tile t lives in stage t % kStages.
#pragma unroll
    for (int t = 0; t < kStages - 1; t++) {
        if (t < rg.ntiles) load_kv_tile(k_ring + t * kKVBytes, v_ring + t * kKVBytes, kh, vh, rg.kb0 + t * kBN, a.n_kv);
        ks_cp_async_commit();
    }

    float o[kD / 2], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < kD / 2; i++) o[i] = 0.0f;
    // This thread's rows in the block: warpgroup wg, warp wl, rows lane/4 and lane/4 + 8 (e = 0, 1).
    const int row0 = wg * 64 + wl * 16 + (lane >> 2);
    const int pos[2] = {a.q_pos0 + (v0 + row0) / G, a.q_pos0 + (v0 + row0 + 8) / G};

    float s_a[kBN / 2], s_b[kBN / 2]; // S of the current tile and of the next one, alternating roles
    if (rg.ntiles > 0) {
        ks_cp_async_wait<kStages - 2>();
        ks_fence_proxy_async();
        __syncthreads();
        issue_qk(s_a, q_s, k_ring, wg);
        ks_wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < kBN / 2; i++) ks_reg_fence(s_a[i]);
    }

    // One tile: S of tile `it` is in cur; leaves S of tile it + 1 in next.
    auto step = [&](int it, float(&cur)[kBN / 2], float(&next)[kBN / 2]) {
        const int kb = rg.kb0 + it * kBN;
        ks_cp_async_wait<kStages - 3>(); // tile it + 1 (issued two iterations ago) has landed
        ks_fence_proxy_async();
        __syncthreads(); // ... for every thread; and every warpgroup is done with tile it - 1's stage
        if (it + kStages - 1 < rg.ntiles) {
            const int st = (it + kStages - 1) % kStages;
            load_kv_tile(k_ring + st * kKVBytes, v_ring + st * kKVBytes, kh, vh, kb + (kStages - 1) * kBN, a.n_kv);
        }
        ks_cp_async_commit();
        if (it + 1 < rg.ntiles) issue_qk(next, q_s, k_ring + ((it + 1) % kStages) * kKVBytes, wg);

        uint32_t pa[kBN / 16][4];
        softmax_tile(a, cur, pa, o, m, l, kb, ks_prefill_tile_full(a, rg, kb, kBN), pos, lane);

        // O += P V: V (keys x d) is N-major; groups of 8 keys 1024 bytes apart, the d halves kBN*128 apart.
        const uint32_t v_s = v_ring + (it % kStages) * kKVBytes;
        ks_wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kBN / 16; kk++)
            ks_wgmma_m64n128k16_rs_tb(o, pa[kk], ks_gmma_desc(v_s + kk * 16 * 128, kBN * 128, 1024), 1);
        ks_wgmma_commit();
        ks_wgmma_wait<0>(); // S of tile it + 1 and this P V
#pragma unroll
        for (int i = 0; i < kBN / 2; i++) ks_reg_fence(next[i]);
#pragma unroll
        for (int i = 0; i < kD / 2; i++) ks_reg_fence(o[i]);
    };
    for (int it = 0; it < rg.ntiles; it += 2) { // unrolled by two so that cur/next swap without copies
        step(it, s_a, s_b);
        if (it + 1 < rg.ntiles) step(it + 1, s_b, s_a);
    }
    ks_cp_async_wait<0>(); // with no key tile at all, the Q copies are still in flight here

    // Normalise and store: row e of this thread, columns 8j + (lane % 4) * 2 + {0, 1}.
#pragma unroll
    for (int e = 0; e < 2; e++) {
        float sum = l[e];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
        const int v = v0 + row0 + e * 8, t = v / G;
        if (t >= a.n) continue;
        bf16 *dst = a.out + (int64_t)t * a.ld_o + (int64_t)(kvh * G + v - t * G) * kD + (lane & 3) * 2;
#pragma unroll
        for (int j = 0; j < kD / 8; j++)
            *reinterpret_cast<uint32_t *>(dst + j * 8) = ks_pack2(o[4 * j + 2 * e] * inv, o[4 * j + 2 * e + 1] * inv);
    }
#else
    __trap(); // only the sm_90a binary holds this kernel; the launcher never selects it elsewhere
#endif
}

} // namespace

ks_status ks_prefill_launch_sm90(const prefill_args &a, int Hk, cudaStream_t s) {
    static bool configured = false; // the attribute is per function; set once, before the first launch
    if (!configured) {
        CUDA_CHECK(
            cudaFuncSetAttribute(attention_prefill_sm90_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
        configured = true;
    }
    dim3 grid(Hk, ks_cdiv((int64_t)a.n * a.G, kBM));
    attention_prefill_sm90_kernel<<<grid, kThreads, kSmem, s>>>(a);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
