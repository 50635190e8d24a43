// kivi_attention_decode.cu — decode attention over KIVI's packed tokens and the full-precision rows
// (ks_cuda_kivi.h: ks_cuda_kivi_attention_decode; reference ks_kivi_attention_decode), flash-decoding style: the
// tokens of each KV head are split over blocks that write unnormalised partials (O, max, sum), and a combine
// kernel merges them. Two kernels share the partials:
//
// - the tile kernel (head_dim 64 or 128, 2- or 4-bit keys and values, groups a whole number of code words): the
//   head's first min(nq_k, nq_v) tokens, rounded down to a tile of kTK, packed in both keys and values. A block is
//   one warp over a KV head's tiles for up to kRows query heads (the rows of an m16n8k16 tile, zero past the
//   group), so each packed byte is read once for the whole group. Per tile the warp dequantizes the key codes
//   into a K^T tile of fp16 in shared memory (row = stored key channel, x^ = q s + z as one fp16 fma of the
//   exact code with the fp16 scale and zero), runs S = Q K^T on the tensor cores (Q on the stored channels:
//   the head channel each one holds, 0 past kc), the online softmax in registers, then dequantizes the values
//   into the same buffer (row = token) and accumulates O += P V. A word's codes are dequantized in pairs (slots
//   k and k + P / 2, one bit-select each), so a word's tokens (keys) or channels (values) sit in the tile in the
//   order slot_pos gives; the tile's columns and the value rows follow the same order, and the partial is
//   written back in channel order.
// - the generic kernel: every other token (the full-precision rows, a tile straddling nq_k or nq_v, and every
//   token of a shape the tile kernel does not serve: the raw encodings, other head dims or groups), a block per
//   (query head, split), DEC_WARPS warps a token at a time: the lanes hold the query and the accumulator for
//   channels lane, lane + 32, ..., dequantize the key (packed: the code of each stored channel, its group's fp16
//   scale and zero; raw: the stored bf16 bits; channels not stored count 0) or read the bf16 row, reduce the dot
//   product over the warp, keep an online softmax, and add the dequantized or bf16 value.
//
// Both grids follow max_n (a bound on every head's tokens), never the device-side counts, so one launch shape
// serves every count below the bound. The three kernels are programmatic dependent launches (common.cuh): each
// block waits for the kernels before it first thing, then lets the next one launch.
#include <cuda_fp16.h>

#include "cuda/common.cuh"
#include "cuda/ks_cuda_kivi.h"
#include "mma.cuh"

namespace {

constexpr int kTK = 64, kRows = 8, kMaxTileSplits = 512;          // the tile kernel
constexpr int DEC_WARPS = 4, MAX_PER_LANE = 8, TAIL_TOKENS = 32, MAX_SPLITS = 64; // the generic kernel
constexpr int COMBINE_WARPS = 16;                                                   // the combine kernel

// ---- the tile kernel ------------------------------------------------------------------------------------------

// Whether the tile kernel serves shape S: head_dim 64 or 128, 2- or 4-bit codes, and a group of whole code words
// (keys: a word's tokens share a group; values: a word's channels share one).
bool tiles_serve(const ks_kivi_shape &S) {
    const auto coded = [](int b) { return b == 2 || b == 4; };
    return (S.d == 64 || S.d == 128) && coded(S.k_bits) && coded(S.v_bits) && S.group % (32 / S.k_bits) == 0 &&
           S.group % (32 / S.v_bits) == 0;
}

// Tokens of head g the tile kernel covers: packed in both keys and values, whole tiles.
__device__ __forceinline__ int tile_prefix(const ks_cuda_kivi_layer &L, int g) {
    return min(L.nq_k[g], L.nq_v[g]) / kTK * kTK;
}

struct tile_args {
    ks_cuda_kivi_layer L;
    const bf16 *q;
    float *part;      // (H, stride, d + 2): this kernel's splits first
    int G, splits, stride;
    float scale_log2;
};

__device__ __forceinline__ uint32_t h2_bits(__half2 h) { return *reinterpret_cast<uint32_t *>(&h); }
__device__ __forceinline__ __half2 bits_h2(uint32_t u) { return *reinterpret_cast<__half2 *>(&u); }
__device__ __forceinline__ uint32_t pack_h2(float lo, float hi) { return h2_bits(__floats2half2_rn(lo, hi)); }

// Slots k and k + P / 2 of a word of B-bit codes (P = 32 / B), dequantized with fp16 scale s and zero z, as one
// half2 (slot k low): 1024 + code is exact in fp16 from the bits, so x^ = code s + z has a single fp16 rounding.
template <int B>
__device__ __forceinline__ uint32_t dequant_pair(uint32_t w, int k, __half2 s, __half2 z) {
    constexpr uint32_t mask = ((1u << B) - 1u) * 0x00010001u;
    const uint32_t x = ((w >> (B * k)) & mask) | 0x64006400u;
    return h2_bits(__hfma2(__hsub2(bits_h2(x), __float2half2_rn(1024.0f)), s, z));
}

// Where element j of a run of words of P codes sits once dequantized in pairs: slot r of its word at
// 2 (r % (P / 2)) + r / (P / 2) of the word's P places; pos_slot is the inverse.
template <int P>
__device__ __forceinline__ int slot_pos(int j) {
    const int r = j % P;
    return j - r + 2 * (r % (P / 2)) + r / (P / 2);
}
template <int P>
__device__ __forceinline__ int pos_slot(int p) {
    const int r = p % P;
    return p - r + (r % 2) * (P / 2) + r / 2;
}

// Items of a tile's words a lane loads at once before dequantizing them (bounds the registers in flight): a word
// and its group's fp16 scale (low half) and zero (high half).
constexpr int kBatch = 8;
struct word_batch {
    uint32_t word[kBatch], sz[kBatch];
};

// A word_batch item's scale and zero.
__device__ __forceinline__ uint32_t scale_zero(unsigned short s, unsigned short z) {
    return (uint32_t)s | (uint32_t)z << 16;
}

// Key tiles: the lanes take the words (channel, word of the tile) in order, a channel's words on neighbouring lanes:
// lane l loads word l % WPC of channels l / WPC + STEP r (P = 32 / KB tokens a word, WPC words a channel).
template <int D, int KB>
struct key_items {
    static constexpr int P = 32 / KB, WPC = kTK / P, STEP = 32 / WPC, N = D / STEP,
                         BATCH = N < kBatch ? N : kBatch;
};

// Channels r0 .. r0 + BATCH - 1 of this lane's (key_items) in head g's key tile at token kb into b; channels kc ..
// D - 1 read as 0 (code, scale and zero: their rows dequantize to 0).
template <int D, int KB>
__device__ __forceinline__ void key_load(word_batch &b, const ks_cuda_kivi_layer &L, int g, int kb, int kc, int lane,
                                         int r0) {
    using K = key_items<D, KB>;
    const ks_kivi_shape &S = L.shape;
    const int t = kb + lane % K::WPC * K::P, i0 = lane / K::WPC + K::STEP * r0;
    const int64_t ch0 = (int64_t)g * D + i0;
    const uint32_t *codes = L.k_codes + ch0 * S.k_words + t / K::P;
    const int64_t gi = ch0 * S.k_groups + t / S.group;
#pragma unroll
    for (int r = 0; r < K::BATCH; r++) {
        const bool on = i0 + K::STEP * r < kc;
        const int64_t rs = (int64_t)K::STEP * r;
        b.word[r] = on ? __ldg(codes + rs * S.k_words) : 0u;
        b.sz[r] = on ? scale_zero(__ldg(L.k_scale + gi + rs * S.k_groups), __ldg(L.k_zero + gi + rs * S.k_groups)) : 0u;
    }
}

// The loaded channels into the K^T tile: row i = stored key channel i, token kb + j at column slot_pos<P>(j),
// fp16, swizzled rows of kTK.
template <int D, int KB>
__device__ __forceinline__ void key_store(__half *kt, const word_batch &b, int lane, int r0) {
    using K = key_items<D, KB>;
    const int col = lane % K::WPC * K::P, i0 = lane / K::WPC + K::STEP * r0;
#pragma unroll
    for (int r = 0; r < K::BATCH; r++) {
        const __half2 sc = __low2half2(bits_h2(b.sz[r])), z = __high2half2(bits_h2(b.sz[r]));
        uint32_t out[K::P / 2];
#pragma unroll
        for (int k = 0; k < K::P / 2; k++) out[k] = dequant_pair<KB>(b.word[r], k, sc, z);
#pragma unroll
        for (int c = 0; c < K::P / 8; c++)
            *reinterpret_cast<uint4 *>(kt + ks_swz<kTK>(i0 + K::STEP * r, col + 8 * c)) =
                make_uint4(out[4 * c], out[4 * c + 1], out[4 * c + 2], out[4 * c + 3]);
    }
}

// Value tiles: the lanes take the words (token, word of its row) in order: lane l loads word l % WPT of tokens
// kb + l / WPT + STEP r (P = 32 / VB channels a word, WPT words a token).
template <int D, int VB>
struct value_items {
    static constexpr int P = 32 / VB, WPT = D / P, STEP = 32 / WPT, N = kTK / STEP, BATCH = N < kBatch ? N : kBatch;
};

template <int D, int VB>
__device__ __forceinline__ void value_load(word_batch &b, const ks_cuda_kivi_layer &L, int g, int kb, int lane,
                                           int r0) {
    using V = value_items<D, VB>;
    const ks_kivi_shape &S = L.shape;
    const int w = lane % V::WPT;
    const int64_t tok0 = (int64_t)g * S.cap + kb + lane / V::WPT + V::STEP * r0;
    const uint32_t *codes = L.v_codes + tok0 * S.v_words + w;
    const int64_t gi = tok0 * S.v_groups + w * V::P / S.group;
#pragma unroll
    for (int r = 0; r < V::BATCH; r++) {
        const int64_t rs = (int64_t)V::STEP * r;
        b.word[r] = __ldg(codes + rs * S.v_words);
        b.sz[r] = scale_zero(__ldg(L.v_scale + gi + rs * S.v_groups), __ldg(L.v_zero + gi + rs * S.v_groups));
    }
}

// The loaded tokens into the V tile: token kb + j at row slot_pos<32 / KB>(j) (the K^T tile's column order),
// channel c at column slot_pos<P>(c), fp16, swizzled rows of D.
template <int D, int KB, int VB>
__device__ __forceinline__ void value_store(__half *vt, const word_batch &b, int lane, int r0) {
    using V = value_items<D, VB>;
    const int col = lane % V::WPT * V::P, j0 = lane / V::WPT + V::STEP * r0;
#pragma unroll
    for (int r = 0; r < V::BATCH; r++) {
        const __half2 sc = __low2half2(bits_h2(b.sz[r])), z = __high2half2(bits_h2(b.sz[r]));
        uint32_t out[V::P / 2];
#pragma unroll
        for (int k = 0; k < V::P / 2; k++) out[k] = dequant_pair<VB>(b.word[r], k, sc, z);
        const int row = slot_pos<32 / KB>(j0 + V::STEP * r);
#pragma unroll
        for (int c = 0; c < V::P / 8; c++)
            *reinterpret_cast<uint4 *>(vt + ks_swz<D>(row, col + 8 * c)) =
                make_uint4(out[4 * c], out[4 * c + 1], out[4 * c + 2], out[4 * c + 3]);
    }
}

// The K^T tile of head g at token kb, its first batch already in `first`.
template <int D, int KB>
__device__ __forceinline__ void key_tile(__half *kt, const word_batch &first, const ks_cuda_kivi_layer &L, int g,
                                         int kb, int kc, int lane) {
    using K = key_items<D, KB>;
    key_store<D, KB>(kt, first, lane, 0);
#pragma unroll 1
    for (int r0 = K::BATCH; r0 < K::N; r0 += K::BATCH) {
        word_batch b;
        key_load<D, KB>(b, L, g, kb, kc, lane, r0);
        key_store<D, KB>(kt, b, lane, r0);
    }
}

// The V tile of head g at token kb, its first batch already in `first`.
template <int D, int KB, int VB>
__device__ __forceinline__ void value_tile(__half *vt, const word_batch &first, const ks_cuda_kivi_layer &L, int g,
                                           int kb, int lane) {
    using V = value_items<D, VB>;
    value_store<D, KB, VB>(vt, first, lane, 0);
#pragma unroll 1
    for (int r0 = V::BATCH; r0 < V::N; r0 += V::BATCH) {
        word_batch b;
        value_load<D, VB>(b, L, g, kb, lane, r0);
        value_store<D, KB, VB>(vt, b, lane, r0);
    }
}

// Block (KV head g, split, head subgroup z): the split's share of g's whole tiles for query heads
// g G + 8 z .. + 7 (the rows 0 .. 7 of the m16n8k16 tiles; rows past the group zero, rows 8 .. 15 dropped); one
// (O, max, sum) partial per query head, the max in natural log units as the generic kernel's. Lane l holds row
// l / 4 of every accumulator.
template <int D, int KB, int VB>
__global__ void __launch_bounds__(32) kivi_tile_kernel(tile_args a) {
    __shared__ __align__(128) __half tile[kTK * D]; // K^T (D rows of kTK), then V (kTK rows of D)
    ks_pdl_wait(); // launched with ks_launch_pdl: q, the rows and the counts come from the kernels before
    ks_pdl_trigger();
    const ks_cuda_kivi_layer &L = a.L;
    const int lane = threadIdx.x, g = blockIdx.x, split = blockIdx.y, z0 = blockIdx.z * kRows;
    const int ng = min(kRows, a.G - z0), h0 = g * a.G + z0, kc = L.kc[g], row = lane >> 2;
    const int tiles = tile_prefix(L, g) / kTK, per = (tiles + a.splits - 1) / a.splits;
    const int t_lo = split * per, t_hi = min(tiles, t_lo + per);

    // Q as the A fragments' rows 0 .. 7 on the stored key channels: column i = head channel k_chan[i], 0 past
    // kc; qa[kk][0] columns 16 kk + 2 (lane % 4) + {0, 1}, qa[kk][1] the same + 8.
    const int32_t *chan = L.k_chan + (int64_t)g * D;
    const bf16 *qh = a.q + (int64_t)(h0 + (row < ng ? row : 0)) * D;
    uint32_t qa[D / 16][2];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int col = kk * 16 + (lane & 3) * 2 + i * 8;
            const float x0 = row < ng && col < kc ? __bfloat162float(qh[chan[col]]) : 0.0f;
            const float x1 = row < ng && col + 1 < kc ? __bfloat162float(qh[chan[col + 1]]) : 0.0f;
            qa[kk][i] = pack_h2(x0, x1);
        }

    // ldmatrix.trans row addresses (as attention_decode.cu's V): K^T rows kk*16 + lane%8 + ((lane/8)%2)*8, chunk
    // 2np + lane/16; V rows the same, chunk 2dp + lane/16.
    constexpr uint32_t kKRow = kTK * 2, kVRow = D * 2;
    const int r8 = lane & 7, lrow = r8 + ((lane >> 3) & 1) * 8;
    const uint32_t x = ks_swz_lane(lane >> 4, r8);
    const uint32_t k_addr = ks_smem_addr(tile) + lrow * kKRow, v_addr = ks_smem_addr(tile) + lrow * kVRow;

    float o[D / 8][2];
#pragma unroll
    for (int j = 0; j < D / 8; j++) o[j][0] = o[j][1] = 0.0f;
    float m = -INFINITY, l = 0.0f;

    // Each tile's first batch of key words is loaded before the previous tile's P V, and of value words before its
    // own S, so that their latency overlaps the tensor-core work.
    word_batch kpre, vpre;
    if (t_lo < t_hi) key_load<D, KB>(kpre, L, g, t_lo * kTK, kc, lane, 0);
    for (int t = t_lo; t < t_hi; t++) {
        const int kb = t * kTK;
        __syncwarp(); // the previous tile's V reads are done
        key_tile<D, KB>(tile, kpre, L, g, kb, kc, lane);
        value_load<D, VB>(vpre, L, g, kb, lane, 0);
        __syncwarp();
        float sc[kTK / 8][2];
#pragma unroll
        for (int j = 0; j < kTK / 8; j++) sc[j][0] = sc[j][1] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
            for (int np = 0; np < kTK / 16; np++) {
                uint32_t kf[4];
                ks_ldmatrix_x4_trans(kf, k_addr + kk * 16 * kKRow + ((np << 5) ^ x));
                ks_mma_f16_rows8(sc[2 * np], qa[kk][0], qa[kk][1], kf[0], kf[1]);
                ks_mma_f16_rows8(sc[2 * np + 1], qa[kk][0], qa[kk][1], kf[2], kf[3]);
            }
        float mx = m; // every token of a tile is valid: no mask
#pragma unroll
        for (int j = 0; j < kTK / 8; j++)
#pragma unroll
            for (int c = 0; c < 2; c++) {
                sc[j][c] *= a.scale_log2;
                mx = fmaxf(mx, sc[j][c]);
            }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float alpha = ks_exp2(m - mx);
        m = mx;
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < kTK / 8; j++)
#pragma unroll
            for (int c = 0; c < 2; c++) {
                sc[j][c] = ks_exp2(sc[j][c] - mx);
                sum += sc[j][c];
            }
        l = l * alpha + sum;
#pragma unroll
        for (int j = 0; j < D / 8; j++) o[j][0] *= alpha, o[j][1] *= alpha;
        __syncwarp(); // the K^T reads are done before the values overwrite the tile
        value_tile<D, KB, VB>(tile, vpre, L, g, kb, lane);
        if (t + 1 < t_hi) key_load<D, KB>(kpre, L, g, kb + kTK, kc, lane, 0);
        __syncwarp();
#pragma unroll
        for (int kk = 0; kk < kTK / 16; kk++) {
            const uint32_t p0 = pack_h2(sc[2 * kk][0], sc[2 * kk][1]), p1 = pack_h2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
#pragma unroll
            for (int dp = 0; dp < D / 16; dp++) {
                uint32_t vf[4];
                ks_ldmatrix_x4_trans(vf, v_addr + kk * 16 * kVRow + ((dp << 5) ^ x));
                ks_mma_f16_rows8(o[2 * dp], p0, p1, vf[0], vf[1]);
                ks_mma_f16_rows8(o[2 * dp + 1], p0, p1, vf[2], vf[3]);
            }
        }
    }

    // The partial of query head h0 + row; column n of o holds channel pos_slot(n). An empty split writes sum 0
    // (the combine skips it).
    l = ks_quad_sum(l);
    if (row >= ng) return;
    float *out = a.part + ((int64_t)(h0 + row) * a.stride + split) * (D + 2);
#pragma unroll
    for (int j = 0; j < D / 8; j++)
#pragma unroll
        for (int c = 0; c < 2; c++) out[pos_slot<32 / VB>(j * 8 + (lane & 3) * 2 + c)] = o[j][c];
    if ((lane & 3) == 0) out[D] = m * 0.6931471805599453f, out[D + 1] = l;
}

// Blocks of the tile kernel that fit on the whole device at once (asked once per instance).
template <int D, int KB, int VB>
int tile_slots() {
    static int slots = 0;
    if (!slots) {
        int dev = 0, sms = 132, per_sm = 1;
        if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kivi_tile_kernel<D, KB, VB>, 32, 0);
        slots = sms * (per_sm > 0 ? per_sm : 1);
    }
    return slots;
}

// The tile kernel's splits per KV head: one wave of blocks over the device, at most a split per tile of max_n.
template <int D, int KB, int VB>
int tile_splits(int Hk, int G, int max_n) {
    const int per_head = tile_slots<D, KB, VB>() / (Hk * ks_cdiv(G, kRows));
    const int by_len = ks_cdiv(max_n > 0 ? max_n : 1, kTK), s = per_head < by_len ? per_head : by_len;
    return s < 1 ? 1 : s < kMaxTileSplits ? s : kMaxTileSplits;
}

template <int D, int KB, int VB>
ks_status tile_launch(tile_args a, int Hk, int max_n, int stride_rest, cudaStream_t s, int *splits) {
    a.splits = tile_splits<D, KB, VB>(Hk, a.G, max_n);
    a.stride = a.splits + stride_rest;
    *splits = a.splits;
    KS_LAUNCH_PDL(kivi_tile_kernel<D, KB, VB>, dim3(Hk, a.splits, ks_cdiv(a.G, kRows)), dim3(32), 0, s, a);
    return KS_OK;
}

template <int D>
ks_status tile_launch_bits(const tile_args &a, int Hk, int max_n, int rest, cudaStream_t s, int *splits) {
    const int kb = a.L.shape.k_bits, vb = a.L.shape.v_bits;
    if (kb == 2) return vb == 2 ? tile_launch<D, 2, 2>(a, Hk, max_n, rest, s, splits)
                                : tile_launch<D, 2, 4>(a, Hk, max_n, rest, s, splits);
    return vb == 2 ? tile_launch<D, 4, 2>(a, Hk, max_n, rest, s, splits)
                   : tile_launch<D, 4, 4>(a, Hk, max_n, rest, s, splits);
}

// ---- the generic kernel ---------------------------------------------------------------------------------------

int generic_splits(int max_n) {
    const int s = ks_cdiv(max_n > 0 ? max_n : 1, TAIL_TOKENS);
    return s < MAX_SPLITS ? s : MAX_SPLITS;
}

// Token t's key channel of stored index i (packed) of head g.
__device__ __forceinline__ float packed_key(const ks_cuda_kivi_layer &L, int g, int i, int t) {
    const ks_kivi_shape &S = L.shape;
    const int64_t ch = (int64_t)g * S.d + i, gi = ch * S.k_groups + t / S.group;
    if (S.k_bits == KS_KIVI_RAW_BF16) return ks_kivi_raw_get(L.k_codes + ch * S.k_words, t, S.k_bits);
    const unsigned q = ks_kivi_code(L.k_codes + ch * S.k_words, t, S.k_bits);
    return ks_kivi_dequantize(q, __half2float(__ushort_as_half(L.k_scale[gi])),
                              __half2float(__ushort_as_half(L.k_zero[gi])));
}

// Token t's value channel c (packed) of head g.
__device__ __forceinline__ float packed_value(const ks_cuda_kivi_layer &L, int g, int c, int t) {
    const ks_kivi_shape &S = L.shape;
    const int64_t tok = (int64_t)g * S.cap + t, gi = tok * S.v_groups + c / S.group;
    if (S.v_bits == KS_KIVI_RAW_BF16) return ks_kivi_raw_get(L.v_codes + tok * S.v_words, c, S.v_bits);
    const unsigned q = ks_kivi_code(L.v_codes + tok * S.v_words, c, S.v_bits);
    return ks_kivi_dequantize(q, __half2float(__ushort_as_half(L.v_scale[gi])),
                              __half2float(__ushort_as_half(L.v_zero[gi])));
}

// Block (h, split): its share of head g's tokens from `first` (the tile kernel's prefix when `tiled`, else 0) to
// n; partial O (d), max and sum to part (H, stride, d + 2) at split0 + split.
__global__ void __launch_bounds__(DEC_WARPS * 32) kivi_decode_kernel(ks_cuda_kivi_layer L, const bf16 *q, float scale,
                                                                    int H, int tiled, int splits, int split0,
                                                                    int stride, float *part) {
    __shared__ float sm_m[DEC_WARPS], sm_l[DEC_WARPS], sm_o[DEC_WARPS][MAX_PER_LANE * 32];
    ks_pdl_wait();
    ks_pdl_trigger();
    const ks_kivi_shape &S = L.shape;
    const int h = blockIdx.x, split = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = h / (H / L.Hk), d = S.d, per = (d + 31) / 32; // lanes past d hold nothing
    const int nq_k = L.nq_k[g], nq_v = L.nq_v[g], off = L.off[g], n = off + L.len[g], kc = L.kc[g];
    const int first = tiled ? tile_prefix(L, g) : 0;
    const int chunk = (n - first + splits - 1) / splits, lo = first + split * chunk, hi = min(n, lo + chunk);
    float qr[MAX_PER_LANE], qs[MAX_PER_LANE], acc[MAX_PER_LANE], m = -INFINITY, l = 0.0f;
    for (int k = 0; k < per; k++) {
        const int i = lane + 32 * k; // stored key channel i reads the query at its head channel
        qr[k] = i < d ? __bfloat162float(q[(int64_t)h * d + i]) : 0.0f;
        qs[k] = i < kc ? __bfloat162float(q[(int64_t)h * d + L.k_chan[(int64_t)g * d + i]]) : 0.0f;
        acc[k] = 0.0f;
    }
    const bf16 *kr = reinterpret_cast<const bf16 *>(L.k) + (int64_t)g * L.stride * d;
    const bf16 *vr = reinterpret_cast<const bf16 *>(L.v) + (int64_t)g * L.stride * d;
    for (int t = lo + warp; t < hi; t += DEC_WARPS) {
        float dot = 0.0f;
        for (int k = 0; k < per; k++) {
            const int c = lane + 32 * k;
            if (t < nq_k) dot += c < kc ? qs[k] * packed_key(L, g, c, t) : 0.0f;
            else if (c < d) dot += qr[k] * __bfloat162float(kr[(int64_t)(t - off) * d + c]);
        }
        const float logit = ks_warp_sum(dot) * scale, mn = fmaxf(m, logit);
        const float corr = __expf(m - mn), p = __expf(logit - mn);
        l = l * corr + p, m = mn;
        for (int k = 0; k < per; k++) {
            const int c = lane + 32 * k;
            if (c >= d) break;
            const float v = t < nq_v ? packed_value(L, g, c, t) : __bfloat162float(vr[(int64_t)(t - off) * d + c]);
            acc[k] = acc[k] * corr + p * v;
        }
    }
    if (lane == 0) sm_m[warp] = m, sm_l[warp] = l;
    for (int k = 0; k < per && lane + 32 * k < d; k++) sm_o[warp][lane + 32 * k] = acc[k];
    __syncthreads();
    if (warp) return;
    float M = -INFINITY;
    for (int w = 0; w < DEC_WARPS; w++) M = fmaxf(M, sm_m[w]);
    float *out = part + ((int64_t)h * stride + split0 + split) * (d + 2);
    for (int k = 0; k < per && lane + 32 * k < d; k++) {
        float o = 0.0f;
        for (int w = 0; w < DEC_WARPS; w++)
            if (sm_l[w] > 0.0f) o += sm_o[w][lane + 32 * k] * __expf(sm_m[w] - M);
        out[lane + 32 * k] = o;
    }
    if (lane == 0) {
        float s = 0.0f;
        for (int w = 0; w < DEC_WARPS; w++)
            if (sm_l[w] > 0.0f) s += sm_l[w] * __expf(sm_m[w] - M);
        out[d] = M, out[d + 1] = s;
    }
}

// Block h: out[h] = sum of the splits' partials, rescaled to the largest max, over their sums. A long sequence has
// hundreds of splits (the tile kernel's wave and the generic kernel's), so COMBINE_WARPS warps share them: warp w
// merges splits w, w + COMBINE_WARPS, ... online (its lanes holding channels lane, lane + 32, ...), then the warps'
// partials merge as the generic kernel's do.
__global__ void __launch_bounds__(COMBINE_WARPS * 32) kivi_combine_kernel(bf16 *out, const float *part, int d,
                                                                          int splits) {
    __shared__ float sm_m[COMBINE_WARPS], sm_l[COMBINE_WARPS], sm_o[COMBINE_WARPS][MAX_PER_LANE * 32];
    ks_pdl_wait();
    ks_pdl_trigger();
    const int h = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, per = (d + 31) / 32;
    const float *p = part + (int64_t)h * splits * (d + 2);
    float m = -INFINITY, l = 0.0f, acc[MAX_PER_LANE];
    for (int k = 0; k < per; k++) acc[k] = 0.0f;
    for (int s = warp; s < splits; s += COMBINE_WARPS) {
        const float *ps = p + (int64_t)s * (d + 2);
        if (ps[d + 1] <= 0.0f) continue; // an empty split (the same for the whole warp)
        const float mn = fmaxf(m, ps[d]), corr = __expf(m - mn), w = __expf(ps[d] - mn);
        l = l * corr + ps[d + 1] * w, m = mn;
        for (int k = 0; k < per; k++) {
            const int c = lane + 32 * k;
            if (c < d) acc[k] = acc[k] * corr + ps[c] * w;
        }
    }
    if (lane == 0) sm_m[warp] = m, sm_l[warp] = l;
    for (int k = 0; k < per && lane + 32 * k < d; k++) sm_o[warp][lane + 32 * k] = acc[k];
    __syncthreads();
    float M = -INFINITY, L = 0.0f;
    for (int w = 0; w < COMBINE_WARPS; w++)
        if (sm_l[w] > 0.0f) M = fmaxf(M, sm_m[w]);
    for (int w = 0; w < COMBINE_WARPS; w++)
        if (sm_l[w] > 0.0f) L += sm_l[w] * __expf(sm_m[w] - M);
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < COMBINE_WARPS; w++)
            if (sm_l[w] > 0.0f) o += sm_o[w][c] * __expf(sm_m[w] - M);
        out[(int64_t)h * d + c] = __float2bfloat16_rn(L > 0.0f ? o / L : 0.0f);
    }
}

} // namespace

extern "C" size_t ks_cuda_kivi_attention_scratch_floats(int H, int d, int max_n) {
    const int tiles = ks_cdiv(max_n > 0 ? max_n : 1, kTK);
    return (size_t)H * ((tiles < kMaxTileSplits ? tiles : kMaxTileSplits) + generic_splits(max_n)) * (d + 2);
}

extern "C" ks_status ks_cuda_kivi_attention_decode(ks_bf16 *out, const ks_bf16 *q, const ks_cuda_kivi_layer *L, int H,
                                                   float scale, int max_n, float *scratch, cudaStream_t s) {
    const int d = L->shape.d, rest = generic_splits(max_n), tiled = tiles_serve(L->shape);
    KS_ASSERT(d <= 32 * MAX_PER_LANE && H % L->Hk == 0);
    const bf16 *qb = reinterpret_cast<const bf16 *>(q);
    int splits = 0; // the tile kernel's
    if (tiled) {
        const tile_args a = {*L, qb, scratch, H / L->Hk, 0, 0, scale * 1.4426950408889634f};
        KS_TRY(d == 64 ? tile_launch_bits<64>(a, L->Hk, max_n, rest, s, &splits)
                       : tile_launch_bits<128>(a, L->Hk, max_n, rest, s, &splits));
    }
    KS_LAUNCH_PDL(kivi_decode_kernel, dim3(H, rest), dim3(DEC_WARPS * 32), 0, s, *L, qb, scale, H, tiled, rest, splits,
                  splits + rest, scratch);
    KS_LAUNCH_PDL(kivi_combine_kernel, dim3(H), dim3(COMBINE_WARPS * 32), 0, s, reinterpret_cast<bf16 *>(out),
                  (const float *)scratch, d, splits + rest);
    return KS_OK;
}
