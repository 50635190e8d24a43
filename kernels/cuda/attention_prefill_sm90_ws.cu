// attention_prefill_sm90_ws.cu — the prefill attention kernel for Hopper (sm_90a), head dim 128: warp-
// specialised, in the structure of FlashAttention-3, with the contract and GQA virtual-row packing of
// attention_prefill.cu. ks_cuda_attention_prefill sends head dim 128 here on compute capability 9.x.
//
// Block: 384 threads = two consumer warpgroups (64 virtual rows each, 128 in all) + one producer warpgroup
// (setmaxnreg moves its registers to the consumers: 240 each instead of the launch bound's 168).
//   producer   one thread streams the block's K/V tiles (kBN keys) with TMA into a ring of kStages stages,
//              each with a `full` mbarrier (TMA bytes landed) and an `empty` one (all 8 consumer warps done
//              with it): no block-wide barrier anywhere in the loop. The tensor maps cover rows [0, n_kv)
//              only, so rows past n_kv arrive as zeros (V rows there may hold NaN; 0 * NaN would poison O).
//   consumers  per tile `it` a warpgroup issues S' = Q K(it+1)^T and O += P(it) V(it) back to back, then
//              waits for S' alone and runs the online softmax of tile it + 1 while its P V product (and
//              the other warpgroup's products) run on the tensor cores; P(it + 1) goes to a second
//              fragment array because P(it) is still being read. The two warpgroups issue independently:
//              FA3's "ping-pong" (named barriers making them take turns) measured 1-6% slower here.
// Key tiles of 96: at 128 the consumers spill under the 240-register cap and the kernel ran ~5% slower.
// Q is loaded once per block by the consumers (cp.async: the virtual rows are not a TMA box).
#include "attention_prefill_sm90.cuh"
#include "tma.cuh"

namespace {

constexpr int kConsumers = 2, kThreads = (kConsumers + 1) * 128;
constexpr int kBN = 96, kStages = 4; // the ring is what fits in 227 KB with Q
constexpr uint32_t kQBytes = kSm90BM * kSm90D * 2, kKVBytes = kBN * kSm90D * 2;
// Q, the K and V rings, the full and empty barriers, alignment slack.
constexpr int kSmem = (int)(kQBytes + 2 * kStages * kKVBytes) + 16 * kStages + 1024;

struct ws_params {
    prefill_args a;
    CUtensorMap k_map, v_map; // (d, n_kv, Hk) views of the caches, boxes of 64 x kBN x 1
};

#ifdef KS_SM90A
constexpr int kBarQ = 1; // named barrier id: + the consumer warpgroup's index
// Registers per thread after setmaxnreg: per SM sub-partition one producer warp and two consumer warps
// share 16384 (launch bound: 168 each); the producer needs few.
constexpr int kProducerRegs = 24, kConsumerRegs = 240;

// Producer: K/V tiles 0 .. ntiles - 1 of the block through the ring (see tma.cuh for the parities).
__device__ __forceinline__ void produce(const ws_params &p, const prefill_range &rg, uint32_t k_ring, uint32_t v_ring,
                                        uint32_t full0, uint32_t empty0, int kvh) {
    for (int t = 0; t < rg.ntiles; t++) {
        const int st = t % kStages;
        const uint32_t full = full0 + 8 * st, ks = k_ring + st * kKVBytes, vs = v_ring + st * kKVBytes;
        const int kb = rg.kb0 + t * kBN;
        ks_mbar_wait(empty0 + 8 * st, ((t / kStages) & 1) ^ 1);
        ks_mbar_arrive_expect_tx(full, 2 * kKVBytes);
#pragma unroll
        for (int h = 0; h < 2; h++) { // the two 64-column halves of each tile
            ks_tma_load_3d(ks + h * kBN * 128, &p.k_map, h * 64, kb, kvh, full);
            ks_tma_load_3d(vs + h * kBN * 128, &p.v_map, h * 64, kb, kvh, full);
        }
    }
}

// Consumer warpgroup wg (warp wl of it): its 64 rows of Q, visible to its own wgmma (async proxy) after the
// fence, then the tile loop described above, then the normalised output.
__device__ __forceinline__ void consume(const ws_params &p, const prefill_range &rg, uint32_t q_s, uint32_t k_ring,
                                        uint32_t v_ring, uint32_t full0, uint32_t empty0, int v0, int kvh, int wg,
                                        int wl, int lane) {
    const prefill_args &a = p.a;
    const int n = rg.ntiles;
    ks_sm90_load_q(a, q_s, v0, kvh, wg * 64, 64, wl * 32 + lane, 128);
    ks_cp_async_commit();
    ks_cp_async_wait<0>();
    ks_fence_proxy_async();
    ks_named_sync(kBarQ + wg, 128);

    float o[kSm90D / 2], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, alpha[2] = {1.0f, 1.0f};
#pragma unroll
    for (int i = 0; i < kSm90D / 2; i++) o[i] = 0.0f;
    // This thread's rows in the block: warpgroup wg, warp wl, rows lane/4 and lane/4 + 8 (e = 0, 1).
    const int row0 = wg * 64 + wl * 16 + (lane >> 2);
    const int pos[2] = {a.q_pos0 + (v0 + row0) / a.G, a.q_pos0 + (v0 + row0 + 8) / a.G};

    float s[kBN / 2];
    uint32_t pa_a[kBN / 16][4], pa_b[kBN / 16][4]; // P of the tile being multiplied and of the next one
    if (n > 0) {
        ks_mbar_wait(full0, 0);
        ks_sm90_issue_qk<kBN>(s, q_s, k_ring, wg);
        ks_wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < kBN / 2; i++) ks_reg_fence(s[i]);
        ks_sm90_softmax<kBN>(a, s, pa_a, m, l, alpha, rg.kb0, ks_prefill_tile_full(a, rg, rg.kb0, kBN), pos, lane);
    }

    // Tile it < n - 1: P(it) is in cur (alpha rescales O for it); leaves P(it + 1) in next and its alpha.
    // (The last tile has its own body: a run-time "is there a next tile" branch around the S' wgmma makes
    // ptxas serialise every wgmma, C7514.)
    auto step = [&](int it, uint32_t(&cur)[kBN / 16][4], uint32_t(&next)[kBN / 16][4]) {
        const int st = it % kStages, st1 = (it + 1) % kStages;
        ks_mbar_wait(full0 + 8 * st1, ((it + 1) / kStages) & 1);
        ks_sm90_issue_qk<kBN>(s, q_s, k_ring + st1 * kKVBytes, wg);
        ks_sm90_rescale_o(o, alpha);
        ks_sm90_issue_pv<kBN>(o, cur, v_ring + st * kKVBytes);
        ks_wgmma_wait<1>(); // S(it + 1); P(it) V(it) may still run
#pragma unroll
        for (int i = 0; i < kBN / 2; i++) ks_reg_fence(s[i]);
        const int kb = rg.kb0 + (it + 1) * kBN;
        ks_sm90_softmax<kBN>(a, s, next, m, l, alpha, kb, ks_prefill_tile_full(a, rg, kb, kBN), pos, lane);
        ks_wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < kSm90D / 2; i++) ks_reg_fence(o[i]);
        __syncwarp();
        if (lane == 0) ks_mbar_arrive(empty0 + 8 * st); // this warp is done with stage st
    };
    // Tile n - 1: the last P V.
    auto last = [&](int it, uint32_t(&cur)[kBN / 16][4]) {
        ks_sm90_rescale_o(o, alpha);
        ks_sm90_issue_pv<kBN>(o, cur, v_ring + (it % kStages) * kKVBytes);
        ks_wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < kSm90D / 2; i++) ks_reg_fence(o[i]);
    };
    int it = 0;
    for (; it + 2 < n; it += 2) { // unrolled by two so that cur/next swap without copies
        step(it, pa_a, pa_b);
        step(it + 1, pa_b, pa_a);
    }
    if (it + 1 < n) {
        step(it, pa_a, pa_b);
        last(it + 1, pa_b);
    } else if (it < n) {
        last(it, pa_a);
    }

    ks_sm90_store_o(a, o, m, l, v0, row0, kvh, lane);
}
#endif

__global__ void __launch_bounds__(kThreads, 1) attention_prefill_ws_kernel(const __grid_constant__ ws_params p) {
#ifdef KS_SM90A
    extern __shared__ unsigned char smem_raw[];
    const uint32_t base = (ks_smem_addr(smem_raw) + 1023) & ~1023u; // swizzle atoms need 1024-byte alignment
    const uint32_t q_s = base, k_ring = base + kQBytes, v_ring = k_ring + kStages * kKVBytes;
    const uint32_t full0 = v_ring + kStages * kKVBytes, empty0 = full0 + 8 * kStages;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int kvh = blockIdx.x;
    const int v0 = (gridDim.y - 1 - blockIdx.y) * kSm90BM; // the longest (latest) query blocks start first
    const prefill_range rg = ks_prefill_range(p.a, v0, kSm90BM, kBN);

    if (tid == 0) {
        for (int st = 0; st < kStages; st++) {
            ks_mbar_init(full0 + 8 * st, 1);
            ks_mbar_init(empty0 + 8 * st, kConsumers * 4);
        }
        ks_mbar_init_fence();
    }
    __syncthreads(); // the only block-wide barrier

    const int wg = warp >> 2, wl = warp & 3;
    if (wg == kConsumers) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegs));
        if (wl == 0 && lane == 0) produce(p, rg, k_ring, v_ring, full0, empty0, kvh);
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs));
        consume(p, rg, q_s, k_ring, v_ring, full0, empty0, v0, kvh, wg, wl, lane);
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
            cudaFuncSetAttribute(attention_prefill_ws_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
        configured = true;
    }
    ws_params p;
    p.a = a;
    // The maps end at n_kv (at least one row: the encoder refuses empty extents; with n_kv = 0 nothing loads).
    const uint64_t dims[3] = {kSm90D, (uint64_t)(a.n_kv > 0 ? a.n_kv : 1), (uint64_t)Hk};
    const uint64_t strides[2] = {kSm90D * 2, (uint64_t)a.cap * kSm90D * 2};
    const uint32_t box[3] = {64, kBN, 1};
    KS_TRY(ks_tma_map_bf16_3d(&p.k_map, a.kc, dims, strides, box));
    KS_TRY(ks_tma_map_bf16_3d(&p.v_map, a.vc, dims, strides, box));
    dim3 grid(Hk, ks_cdiv((int64_t)a.n * a.G, kSm90BM));
    attention_prefill_ws_kernel<<<grid, kThreads, kSmem, s>>>(p);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
