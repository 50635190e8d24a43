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
//
// Block-sparse (ks_sparse_cta, attention_prefill_sparse.cuh): the same block and loop over one query head's
// tile (or a KV group's GQA rows where its heads list the same blocks); a key tile is kChunks chunks of 32 keys,
// each inside one listed key block (TMA boxes of 32 rows, or one box of kBN rows for consecutive chunks), so the
// listed blocks of 128 or 64 keys fill the 96-key tiles back to back. The producer walks the block list and
// leaves each tile's chunk positions and row masks in a sparse_tile beside its ring stage, which the `full`
// barrier publishes to the consumers with the data; a last tile short of chunks repeats its first chunk,
// listed for no row (finite data, masked).
#include "attention_prefill_sm90.cuh"
#include "attention_prefill_sparse.cuh"
#include "tma.cuh"

#include <type_traits>

namespace {

constexpr int kConsumers = 2, kThreads = (kConsumers + 1) * 128;
constexpr int kBN = 96, kStages = 4; // the ring is what fits in 227 KB with Q
constexpr int kChunk = 32, kChunks = kBN / kChunk; // block-sparse: a key tile in chunks of 32 keys
constexpr uint32_t kQBytes = kSm90BM * kSm90D * 2, kKVBytes = kBN * kSm90D * 2;

// A block-sparse key tile: the first key of each chunk; bits 2c and 2c + 1 of mask: chunk c is listed for the
// tile's first and second query block; bit kFullBit: every score of the tile is visible to every row.
struct sparse_tile {
    int base[kChunks];
    int mask;
};

// Q, the K and V rings, the full and empty barriers, the sparse tiles of the stages, alignment slack.
constexpr int kSmem =
    (int)(kQBytes + 2 * kStages * kKVBytes) + 16 * kStages + (int)sizeof(sparse_tile) * kStages + 1024;

template <class List>
struct ws_params {
    prefill_args a;
    List list;
    // (d, n_kv, Hk) views of the caches: boxes of 64 x kBN x 1, and (block-sparse walks only) of 64 x kChunk x 1
    CUtensorMap k_map, v_map, k_chunk_map, v_chunk_map;
};

#ifdef KS_SM90A
constexpr int kFullBit = 30; // of sparse_tile::mask
constexpr int kBarQ = 1; // named barrier id: + the consumer warpgroup's index
// Registers per thread after setmaxnreg: per SM sub-partition one producer warp and two consumer warps
// share 16384 (launch bound: 168 each); the producer needs few.
constexpr int kProducerRegs = 24, kConsumerRegs = 240;

// Keys kb .. kb + kBN - 1 of KV head kvh into the ring stage at ks / vs, completing on barrier `full`.
template <class List>
__device__ __forceinline__ void load_tile(const ws_params<List> &p, uint32_t ks, uint32_t vs, int kb, int kvh,
                                          uint32_t full) {
#pragma unroll
    for (int h = 0; h < 2; h++) { // the two 64-column halves of each tile
        ks_tma_load_3d(ks + h * kBN * 128, &p.k_map, h * 64, kb, kvh, full);
        ks_tma_load_3d(vs + h * kBN * 128, &p.v_map, h * 64, kb, kvh, full);
    }
}

// Producer: K/V tiles 0 .. ntiles - 1 of the block through the ring (see tma.cuh for the parities).
__device__ __forceinline__ void produce(const ws_params<ks_dense_list> &p, const ks_dense_cta &cta,
                                        const prefill_range &rg, uint32_t k_ring, uint32_t v_ring, uint32_t full0,
                                        uint32_t empty0, sparse_tile *) {
    for (int t = 0; t < rg.ntiles; t++) {
        const int st = t % kStages;
        const uint32_t full = full0 + 8 * st;
        ks_mbar_wait(empty0 + 8 * st, ((t / kStages) & 1) ^ 1);
        ks_mbar_arrive_expect_tx(full, 2 * kKVBytes);
        load_tile(p, k_ring + st * kKVBytes, v_ring + st * kKVBytes, rg.kb0 + t * kBN, cta.kvh, full);
    }
}

// Block-sparse producer: the chunks of the block's walk, kChunks a tile, each tile's sparse_tile written into
// its stage's slot before the arrive that the consumers' wait on `full` acquires. A tile of consecutive keys (a
// listed run of kBN keys or more: every tile of the full list) loads as the dense producer's boxes of kBN rows,
// any other as kChunks boxes of kChunk rows.
__device__ __forceinline__ void produce(const ws_params<ks_sparse_list> &p, const ks_sparse_cta &cta,
                                        const prefill_range &rg, uint32_t k_ring, uint32_t v_ring, uint32_t full0,
                                        uint32_t empty0, sparse_tile *info) {
    auto walk = cta.keys<kChunk>(rg);
    for (int t = 0;; t++) {
        key_chunk c[kChunks];
        int got = 0;
        while (got < kChunks && walk.next(c[got])) got++;
        if (got == 0) return;
        int mask = 0;
        bool full = got == kChunks;
#pragma unroll
        for (int i = 0; i < kChunks; i++) {
            if (i >= got) c[i] = key_chunk{c[0].base, 0}; // the last tile's padding: finite keys, no row's
            full = full && walk.all_listed(c[i]) && ks_prefill_tile_full(cta.a, rg, c[i].base, kChunk);
            mask |= c[i].mask << 2 * i;
        }
        const bool run = got == kChunks && c[kChunks - 1].base == c[0].base + kBN - kChunk;
        const int st = t % kStages;
        const uint32_t full_bar = full0 + 8 * st, ks = k_ring + st * kKVBytes, vs = v_ring + st * kKVBytes;
        ks_mbar_wait(empty0 + 8 * st, ((t / kStages) & 1) ^ 1);
#pragma unroll
        for (int i = 0; i < kChunks; i++) info[st].base[i] = c[i].base;
        info[st].mask = mask | (int)full << kFullBit;
        ks_mbar_arrive_expect_tx(full_bar, 2 * kKVBytes);
        if (run) {
            load_tile(p, ks, vs, c[0].base, cta.kvh, full_bar);
            continue;
        }
#pragma unroll
        for (int i = 0; i < kChunks; i++)
#pragma unroll
            for (int h = 0; h < 2; h++) { // rows i * kChunk .. of the tile, in each 64-column half
                const uint32_t at = h * kBN * 128 + i * kChunk * 128;
                ks_tma_load_3d(ks + at, &p.k_chunk_map, h * 64, c[i].base, cta.kvh, full_bar);
                ks_tma_load_3d(vs + at, &p.v_chunk_map, h * 64, c[i].base, cta.kvh, full_bar);
            }
    }
}

// The consumers' view of the dense key tiles: tile it holds keys rg.kb0 + it * kBN ..
struct dense_tiles {
    const prefill_args &a;
    const prefill_range &rg;
    __device__ __forceinline__ int count() const { return rg.ntiles; }
    // ks_sm90_softmax of tile it (in ring stage st) with its masks.
    __device__ __forceinline__ void softmax(int it, int, const float s[kBN / 2], uint32_t pa[kBN / 16][4], float m[2],
                                            float l[2], float alpha[2], const int pos[2], int lane) const {
        const int kb = rg.kb0 + it * kBN;
        ks_sm90_softmax<kBN>(a, s, pa, m, l, alpha, ks_prefill_tile_full(a, rg, kb, kBN), [&](int i) {
            return ks_prefill_visible(a, kb + (i >> 2) * 8 + (lane & 3) * 2 + (i & 1), pos[(i >> 1) & 1]);
        });
    }
};

// The consumers' view of the block-sparse tiles: their count from the chunks of the producer's walk (counted by
// each warp), each tile's chunks from its stage's sparse_tile.
struct sparse_tiles {
    const ks_sparse_cta &cta;
    const prefill_range &rg;
    const sparse_tile *info;
    int lane;
    __device__ __forceinline__ int count() const {
        return (cta.keys<kChunk>(rg).count_warp(lane) + kChunks - 1) / kChunks;
    }
    __device__ __forceinline__ void softmax(int, int st, const float s[kBN / 2], uint32_t pa[kBN / 16][4], float m[2],
                                            float l[2], float alpha[2], const int pos[2], int lane) const {
        const sparse_tile t = info[st];
        // the rows' query blocks as bit offsets: 0 for the tile's first, 1 for its second
        const int bit[2] = {(pos[0] >> cta.shift) - cta.qb_first, (pos[1] >> cta.shift) - cta.qb_first};
        ks_sm90_softmax<kBN>(cta.a, s, pa, m, l, alpha, (t.mask >> kFullBit) & 1, [&](int i) {
            const int c = i >> 4, e = (i >> 1) & 1; // chunk c: keys 32c .. of the tile
            const int key = t.base[c] + ((i >> 2) & 3) * 8 + (lane & 3) * 2 + (i & 1);
            return ks_prefill_visible(cta.a, key, pos[e]) & ((t.mask >> (2 * c + bit[e])) & 1);
        });
    }
};
__device__ __forceinline__ dense_tiles tiles_of(const ks_dense_cta &cta, const prefill_range &rg, const sparse_tile *,
                                                int) {
    return {cta.a, rg};
}
__device__ __forceinline__ sparse_tiles tiles_of(const ks_sparse_cta &cta, const prefill_range &rg,
                                                 const sparse_tile *info, int lane) {
    return {cta, rg, info, lane};
}

// Consumer warpgroup wg (warp wl of it): its 64 rows of Q (the block's rows from v0, query heads of qkvh's
// group), visible to its own wgmma (async proxy) after the fence, then the tile loop described above over the
// key tiles of `tiles`, then the normalised output.
template <class Tiles>
__device__ __forceinline__ void consume(const prefill_args &a, const Tiles &tiles, uint32_t q_s, uint32_t k_ring,
                                        uint32_t v_ring, uint32_t full0, uint32_t empty0, int v0, int qkvh, int wg,
                                        int wl, int lane) {
    ks_sm90_load_q(a, q_s, v0, qkvh, wg * 64, 64, wl * 32 + lane, 128);
    ks_cp_async_commit();
    const int n = tiles.count(); // (sparse: list loads while Q lands)
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
        tiles.softmax(0, 0, s, pa_a, m, l, alpha, pos, lane);
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
        tiles.softmax(it + 1, st1, s, next, m, l, alpha, pos, lane);
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

    ks_sm90_store_o(a, o, m, l, v0, row0, qkvh, lane);
}
#endif

template <class Cta>
__global__ void __launch_bounds__(kThreads, 1)
    attention_prefill_ws_kernel(const __grid_constant__ ws_params<typename Cta::list> p) {
#ifdef KS_SM90A
    extern __shared__ unsigned char smem_raw[];
    const uint32_t base = (ks_smem_addr(smem_raw) + 1023) & ~1023u; // swizzle atoms need 1024-byte alignment
    const uint32_t q_s = base, k_ring = base + kQBytes, v_ring = k_ring + kStages * kKVBytes;
    const uint32_t full0 = v_ring + kStages * kKVBytes, empty0 = full0 + 8 * kStages, info_s = empty0 + 8 * kStages;
    sparse_tile *info = reinterpret_cast<sparse_tile *>(smem_raw + (info_s - ks_smem_addr(smem_raw)));
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    // the longest (latest) query blocks start first
    const Cta cta(p.a, p.list, blockIdx.x, gridDim.y - 1 - blockIdx.y, kSm90BM, kSm90D);
    const prefill_range rg = ks_prefill_range(cta.a, cta.v0, kSm90BM, kBN);

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
        if (wl == 0 && lane == 0) produce(p, cta, rg, k_ring, v_ring, full0, empty0, info);
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs));
        consume(cta.a, tiles_of(cta, rg, info, lane), q_s, k_ring, v_ring, full0, empty0, cta.v0, cta.qkvh, wg, wl,
                lane);
    }
#else
    __trap(); // only the sm_90a binary holds this kernel; the launcher never selects it elsewhere
#endif
}

// The kernel of policy Cta over `grid`: K/V tensor maps with boxes of kBN keys, and of kChunk keys for the
// block-sparse walk.
template <class Cta>
ks_status launch(const prefill_args &a, const typename Cta::list &list, int Hk, dim3 grid, cudaStream_t s) {
    static bool configured = false; // the attribute is per function; set once, before the first launch
    if (!configured) {
        CUDA_CHECK(cudaFuncSetAttribute(attention_prefill_ws_kernel<Cta>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        kSmem));
        configured = true;
    }
    ws_params<typename Cta::list> p;
    p.a = a;
    p.list = list;
    // The maps end at n_kv (at least one row: the encoder refuses empty extents; with n_kv = 0 nothing loads).
    const uint64_t dims[3] = {kSm90D, (uint64_t)(a.n_kv > 0 ? a.n_kv : 1), (uint64_t)Hk};
    const uint64_t strides[2] = {kSm90D * 2, (uint64_t)a.cap * kSm90D * 2};
    const uint32_t box[3] = {64, kBN, 1}, chunk_box[3] = {64, kChunk, 1};
    KS_TRY(ks_tma_map_bf16_3d(&p.k_map, a.kc, dims, strides, box));
    KS_TRY(ks_tma_map_bf16_3d(&p.v_map, a.vc, dims, strides, box));
    if (std::is_same<Cta, ks_sparse_cta>::value) {
        KS_TRY(ks_tma_map_bf16_3d(&p.k_chunk_map, a.kc, dims, strides, chunk_box));
        KS_TRY(ks_tma_map_bf16_3d(&p.v_chunk_map, a.vc, dims, strides, chunk_box));
    }
    attention_prefill_ws_kernel<Cta><<<grid, kThreads, kSmem, s>>>(p);
    KS_LAUNCH_CHECK();
    return KS_OK;
}

} // namespace

ks_status ks_prefill_launch_sm90(const prefill_args &a, int Hk, cudaStream_t s) {
    return launch<ks_dense_cta>(a, ks_dense_list{}, Hk, dim3(Hk, ks_cdiv((int64_t)a.n * a.G, kSm90BM)), s);
}

ks_status ks_prefill_sparse_launch_sm90(const prefill_args &a, const ks_sparse_list &l, int Hk, cudaStream_t s) {
    static_assert(kSm90BM == kSparseTile && 64 % kChunk == 0, "a tile is one block of rows; chunks split blocks");
    return launch<ks_sparse_cta>(a, l, Hk, ks_sparse_grid(a), s);
}
