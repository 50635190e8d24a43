// attention_prefill_sm90.cu — the v4 prefill attention kernel for Hopper (sm_90a), head dim 128: the same
// contract and GQA virtual-row packing as attention_prefill.cu, with the two products on wgmma; and the
// Hopper launcher, which runs the warp-specialised kernel (attention_prefill_sm90_ws.cu, ~1.45x faster)
// unless KS_PREFILL_SM90=v4 selects this one.
//
// Block: two warpgroups (256 threads), 128 virtual rows (64 per warpgroup), key tiles of 96, a 4-stage
// cp.async ring of K/V tiles filled by all threads three tiles ahead. Per tile `it` a warpgroup issues
// S' = Q K(it+1)^T (eight m64n96k16 wgmma, both operands in shared memory, K-major) and, while the tensor
// cores run it, does the online softmax of S = Q K(it)^T in registers (the accumulator layout is the
// mma.sync one, 16 rows per warp); then it issues O += P V(it) (six m64n128k16 wgmma, P in registers, V
// read N-major, i.e. transposed) and waits for both. The softmax thus overlaps the tensor-core work instead
// of alternating with it. Shared tiles use the 128-byte-swizzled layout of wgmma.cuh.
#include <stdlib.h>
#include <string.h>

#include "attention_prefill_sm90.cuh"

namespace {

constexpr int kBM = kSm90BM, kBN = 96, kD = kSm90D, kThreads = 256;
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
#endif

__global__ void __launch_bounds__(kThreads, 1) attention_prefill_sm90_kernel(prefill_args a) {
#ifdef KS_SM90A
    extern __shared__ unsigned char smem_raw[];
    const uint32_t base = (ks_smem_addr(smem_raw) + 1023) & ~1023u; // swizzle atoms need 1024-byte alignment
    const uint32_t q_s = base, k_ring = base + kQBytes, v_ring = base + kQBytes + kStages * kKVBytes;
    const int tid = threadIdx.x, lane = tid & 31, wg = tid >> 7, wl = (tid >> 5) & 3;
    const int kvh = blockIdx.x;
    const int v0 = (gridDim.y - 1 - blockIdx.y) * kBM; // the longest (latest) query blocks start first
    const prefill_range rg = ks_prefill_range(a, v0, kBM, kBN);
    const bf16 *kh = a.kc + (int64_t)kvh * a.cap * kD, *vh = a.vc + (int64_t)kvh * a.cap * kD;

    ks_sm90_load_q(a, q_s, v0, kvh, 0, kBM, tid, kThreads);
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
    const int pos[2] = {a.q_pos0 + (v0 + row0) / a.G, a.q_pos0 + (v0 + row0 + 8) / a.G};

    float s_a[kBN / 2], s_b[kBN / 2]; // S of the current tile and of the next one, alternating roles
    if (rg.ntiles > 0) {
        ks_cp_async_wait<kStages - 2>();
        ks_fence_proxy_async();
        __syncthreads();
        ks_sm90_issue_qk<kBN>(s_a, q_s, k_ring, wg);
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
        if (it + 1 < rg.ntiles) ks_sm90_issue_qk<kBN>(next, q_s, k_ring + ((it + 1) % kStages) * kKVBytes, wg);

        uint32_t pa[kBN / 16][4];
        float alpha[2];
        ks_sm90_softmax<kBN>(a, cur, pa, m, l, alpha, kb, ks_prefill_tile_full(a, rg, kb, kBN), pos, lane);
        ks_sm90_rescale_o(o, alpha);
        ks_sm90_issue_pv<kBN>(o, pa, v_ring + (it % kStages) * kKVBytes);
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

    ks_sm90_store_o(a, o, m, l, v0, row0, kvh, lane);
#else
    __trap(); // only the sm_90a binary holds this kernel; the launcher never selects it elsewhere
#endif
}

} // namespace

// The v4 kernel above (kept selectable while the warp-specialised one proves itself).
static ks_status launch_v4(const prefill_args &a, int Hk, cudaStream_t s) {
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

// Environment KS_PREFILL_SM90 picks the kernel (read once): "v4" this file's; "ws96" / "ws128" the
// warp-specialised one with 96- or 128-key tiles, a "-turns" suffix with its warpgroups taking turns
// (ping-pong); unset or anything else: the default, ws96 without turns (the fastest: docs/gpu-notes.md).
ks_status ks_prefill_launch_sm90(const prefill_args &a, int Hk, cudaStream_t s) {
    static int tile = -1; // 0: v4; else the warp-specialised kernel's key tile
    static bool turns = false;
    if (tile < 0) {
        const char *e = getenv("KS_PREFILL_SM90");
        tile = e && strcmp(e, "v4") == 0 ? 0 : e && strncmp(e, "ws128", 5) == 0 ? 128 : 96;
        turns = e && strstr(e, "-turns");
    }
    return tile ? ks_prefill_launch_sm90_ws(a, Hk, tile, turns, s) : launch_v4(a, Hk, s);
}
