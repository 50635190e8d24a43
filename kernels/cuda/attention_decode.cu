// attention_decode.cu — one query token per head against per-KV-head variable-length caches
// (flash-decoding): the length of every KV head is split over a fixed number of blocks, each block streams
// its K/V rows once for all query heads of its group and writes an unnormalised partial (O, max, sum), and
// a combine kernel merges the partials. Memory-bound by design: the only large traffic is K and V, read once.
//
// The grid (Hk, splits, head subgroups) is fixed by the host from max_len, while each block derives its key
// range from the device-side lens (and window starts), so one captured graph serves every length up to
// max_len. Head dims other than 64 and 128 go to the CUDA-core kernel of attention_generic.cu.
//
// A block is one warp with its own kStages-deep cp.async ring of kTK-key tiles (no block barriers at all).
// The G <= 16 query heads of the group are the 16 rows of an m16n8k16 tensor-core tile (rows past G are
// zero), so a key costs a few mma instead of a shuffle reduction per head: S = Q K^T and O += P V run as in
// the prefill kernel (fragments through ldmatrix from swizzled tiles), with the online softmax in registers.
#include "attention_generic.cuh"
#include "mma.cuh"

namespace {

constexpr int kTK = 32, kStages = 3, kRows = 16; // heads per block: larger groups use grid.z

struct decode_args {
    bf16 *out;
    const bf16 *q, *kc, *vc;
    const int32_t *lens, *starts; // starts: first row per KV head (NULL = 0)
    float *part_o, *part_m, *part_l; // (H, splits, D), (H, splits), (H, splits)
    int cap, H, G, splits;
    float scale_log2;
};

// Keys per split for a head of `len` keys: a whole number of tiles, the same rule in both kernels.
// The head's rows are [beg, beg + len) (beg = its window start).
__device__ __forceinline__ int split_chunk(int len, int splits) {
    int c = (len + splits - 1) / splits;
    return (c + kTK - 1) / kTK * kTK;
}

// One warp copies key tile [kb, kb + kTK) of K and V (rows at or past hi zero-filled).
template <int D>
__device__ __forceinline__ void load_tile(bf16 *ks, bf16 *vs, const bf16 *kh, const bf16 *vh, int kb, int hi,
                                          int lane) {
#pragma unroll
    for (int c = lane; c < kTK * D / 8; c += 32) {
        int r = c / (D / 8), col = (c % (D / 8)) * 8;
        bool ok = kb + r < hi;
        int64_t src = ok ? (int64_t)(kb + r) * D + col : 0;
        ks_cp_async16(ks + ks_swz<D>(r, col), kh + src, ok);
        ks_cp_async16(vs + ks_swz<D>(r, col), vh + src, ok);
    }
}

template <int D>
__global__ void __launch_bounds__(32) attention_decode_kernel(decode_args a) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    bf16 *ks = reinterpret_cast<bf16 *>(smem_raw), *vs = ks + kStages * kTK * D; // [kStages][kTK * D] each
    const int lane = threadIdx.x;
    ks_pdl_wait(); // launched with ks_launch_pdl: q, the new row and lens come from the kernels before
    ks_pdl_trigger();
    const int kvh = blockIdx.x, split = blockIdx.y, g0 = blockIdx.z * kRows;
    const int ng = min(kRows, a.G - g0), h0 = kvh * a.G + g0; // this block's query heads: h0 .. h0 + ng - 1
    const int end = a.lens[kvh], beg = a.starts ? min(a.starts[kvh], end) : 0;
    const int chunk = split_chunk(end - beg, a.splits);
    const int lo = beg + split * chunk, hi = min(end, lo + chunk);
    if (lo >= hi) return; // nothing here: the combine kernel counts only non-empty splits
    const bf16 *kh = a.kc + (int64_t)kvh * a.cap * D, *vh = a.vc + (int64_t)kvh * a.cap * D;
    const int ntiles = (hi - lo + kTK - 1) / kTK;

#pragma unroll
    for (int s = 0; s < kStages - 1; s++) {
        if (s < ntiles) load_tile<D>(ks + s * kTK * D, vs + s * kTK * D, kh, vh, lo + s * kTK, hi, lane);
        ks_cp_async_commit();
    }

    // Q as A fragments (rows = heads h0 + lane/4 and + 8, zero past ng), loaded once.
    uint32_t qa[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int row = (lane >> 2) + (i & 1) * 8, col = kk * 16 + (lane & 3) * 2 + (i >> 1) * 8;
            qa[kk][i] = row < ng ? *reinterpret_cast<const uint32_t *>(a.q + (int64_t)(h0 + row) * D + col) : 0u;
        }

    // ldmatrix row addresses (see attention_prefill.cu): K rows np*16 + lane%8 + (lane/16)*8, chunk
    // 2kk + (lane/8)%2; V rows kk*16 + lane%8 + ((lane/8)%2)*8, chunk 2dp + lane/16.
    constexpr uint32_t kRow = D * 2, kTile = kTK * D * 2;
    const int r8 = lane & 7;
    const uint32_t k_addr0 = ks_smem_addr(ks) + (r8 + (lane >> 4) * 8) * kRow, k_x = ks_swz_lane((lane >> 3) & 1, r8);
    const uint32_t v_addr0 = ks_smem_addr(vs) + (r8 + ((lane >> 3) & 1) * 8) * kRow, v_x = ks_swz_lane(lane >> 4, r8);

    float o[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; j++)
#pragma unroll
        for (int c = 0; c < 4; c++) o[j][c] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

    for (int it = 0; it < ntiles; it++) {
        const int st = it % kStages, kb = lo + it * kTK;
        ks_cp_async_wait<kStages - 2>();
        __syncwarp(); // tile `it` visible to the whole warp; the stage refilled below was last read at it - 1
        if (it + kStages - 1 < ntiles) {
            const int nst = (it + kStages - 1) % kStages;
            load_tile<D>(ks + nst * kTK * D, vs + nst * kTK * D, kh, vh, kb + (kStages - 1) * kTK, hi, lane);
        }
        ks_cp_async_commit();
        const uint32_t k_addr = k_addr0 + st * kTile, v_addr = v_addr0 + st * kTile;

        float sc[kTK / 8][4];
#pragma unroll
        for (int j = 0; j < kTK / 8; j++)
#pragma unroll
            for (int c = 0; c < 4; c++) sc[j][c] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
            for (int np = 0; np < kTK / 16; np++) {
                uint32_t kf[4];
                ks_ldmatrix_x4(kf, k_addr + np * 16 * kRow + ((kk << 5) ^ k_x));
                ks_mma_bf16(sc[2 * np], qa[kk], kf[0], kf[1]);
                ks_mma_bf16(sc[2 * np + 1], qa[kk], kf[2], kf[3]);
            }

        const bool full = kb + kTK <= hi;
#pragma unroll
        for (int e = 0; e < 2; e++) {
            float mx = m[e];
#pragma unroll
            for (int j = 0; j < kTK / 8; j++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    float x = sc[j][2 * e + c] * a.scale_log2;
                    if (!full && kb + j * 8 + (lane & 3) * 2 + c >= hi) x = -INFINITY;
                    sc[j][2 * e + c] = x;
                    mx = fmaxf(mx, x);
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float mu = mx == -INFINITY ? 0.0f : mx; // every tile has a valid key; kept for safety
            const float alpha = ks_exp2(m[e] - mu);
            m[e] = mx;
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < kTK / 8; j++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    float p = ks_exp2(sc[j][2 * e + c] - mu);
                    sc[j][2 * e + c] = p;
                    sum += p;
                }
            l[e] = l[e] * alpha + sum;
#pragma unroll
            for (int j = 0; j < D / 8; j++) o[j][2 * e] *= alpha, o[j][2 * e + 1] *= alpha;
        }

#pragma unroll
        for (int kk = 0; kk < kTK / 16; kk++) {
            const float *s0 = sc[2 * kk], *s1 = sc[2 * kk + 1];
            uint32_t pa[4] = {ks_pack2(s0[0], s0[1]), ks_pack2(s0[2], s0[3]), ks_pack2(s1[0], s1[1]),
                              ks_pack2(s1[2], s1[3])};
#pragma unroll
            for (int dp = 0; dp < D / 16; dp++) {
                uint32_t vf[4];
                ks_ldmatrix_x4_trans(vf, v_addr + kk * 16 * kRow + ((dp << 5) ^ v_x));
                ks_mma_bf16(o[2 * dp], pa, vf[0], vf[1]);
                ks_mma_bf16(o[2 * dp + 1], pa, vf[2], vf[3]);
            }
        }
    }
    ks_cp_async_wait<0>();

    // Partials of rows (heads) lane/4 and lane/4 + 8: unnormalised O, running max (log2 domain) and sum.
#pragma unroll
    for (int e = 0; e < 2; e++) {
        const float sum = ks_quad_sum(l[e]);
        const int row = (lane >> 2) + e * 8;
        if (row >= ng) continue;
        const int64_t at = (int64_t)(h0 + row) * a.splits + split;
        float *po = a.part_o + at * D + (lane & 3) * 2;
#pragma unroll
        for (int j = 0; j < D / 8; j++)
            *reinterpret_cast<float2 *>(po + j * 8) = make_float2(o[j][2 * e], o[j][2 * e + 1]);
        if ((lane & 3) == 0) a.part_m[at] = m[e], a.part_l[at] = sum;
    }
}

// One block of D threads per query head: out = sum_s w_s O_s / sum_s w_s l_s with w_s = 2^(m_s - max m).
// Latency-bound (a few KB per head), so every load that does not depend on another is issued at once right
// after the lengths: each thread's first split statistics and its dimension of the first kPre partial outputs
// (the statistics of splits past D, and partials past kPre, follow in loops). Sums run in split order.
template <int D>
__global__ void attention_decode_combine_kernel(decode_args a) {
    constexpr int kPre = 16;
    extern __shared__ float w_s[]; // (splits) the splits' weights
    __shared__ float red[32];
    const int h = blockIdx.x, dim = threadIdx.x;
    ks_pdl_wait();
    ks_pdl_trigger();
    const int end = a.lens[h / a.G], beg = a.starts ? min(a.starts[h / a.G], end) : 0;
    const int len = end - beg, chunk = split_chunk(len, a.splits);
    const int nvalid = len > 0 ? (len + chunk - 1) / chunk : 0;
    const float *pm = a.part_m + (int64_t)h * a.splits, *pl = a.part_l + (int64_t)h * a.splits;
    const float *po = a.part_o + (int64_t)h * a.splits * D + dim;
    const float m0 = dim < nvalid ? pm[dim] : -INFINITY, l0 = dim < nvalid ? pl[dim] : 0.0f;
    float o_pre[kPre];
#pragma unroll
    for (int s = 0; s < kPre; s++) o_pre[s] = s < nvalid ? po[(int64_t)s * D] : 0.0f;
    float mx = m0;
    for (int s = dim + D; s < nvalid; s += D) mx = fmaxf(mx, pm[s]);
    mx = ks_warp_max(mx);
    if ((dim & 31) == 0) red[dim >> 5] = mx;
    __syncthreads();
    mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < D / 32; w++) mx = fmaxf(mx, red[w]);
    float L = 0.0f;
    if (dim < nvalid) {
        const float w = ks_exp2(m0 - mx);
        w_s[dim] = w;
        L += w * l0;
    }
    for (int s = dim + D; s < nvalid; s += D) {
        const float w = ks_exp2(pm[s] - mx);
        w_s[s] = w;
        L += w * pl[s];
    }
    L = ks_block_sum(L, red); // synchronises: w_s is complete after it
    float o = 0.0f;
#pragma unroll
    for (int s = 0; s < kPre; s++)
        if (s < nvalid) o += w_s[s] * o_pre[s];
#pragma unroll 8
    for (int s = kPre; s < nvalid; s++) o += w_s[s] * po[(int64_t)s * D];
    a.out[(int64_t)h * D + dim] = __float2bfloat16_rn(L > 0.0f ? o / L : 0.0f);
}

template <int D>
constexpr int decode_smem_bytes() { return 2 * kStages * kTK * D * (int)sizeof(bf16); }

// Blocks of the decode kernel that fit on the whole device at once (queried once per head dim).
template <int D>
int device_slots() {
    static int slots = 0;
    if (!slots) {
        int dev = 0, sms = 132, per_sm = 1;
        if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
        cudaFuncSetAttribute(attention_decode_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             decode_smem_bytes<D>());
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, attention_decode_kernel<D>, 32, decode_smem_bytes<D>());
        slots = sms * (per_sm > 0 ? per_sm : 1);
    }
    return slots;
}

// Splits per KV head: one wave of blocks over the device when the cache is long, but no split shorter
// than 128 keys (below that the partials cost more than they parallelise).
int decode_splits(int Hk, int G, int d, int max_len) {
    int per_head = (d == 64 ? device_slots<64>() : device_slots<128>()) / (Hk * ks_cdiv(G, kRows));
    int by_len = ks_cdiv(max_len > 0 ? max_len : 1, 128);
    int s = by_len < per_head ? by_len : per_head;
    return s > 0 ? s : 1;
}

template <int D>
ks_status launch(const decode_args &a, int Hk, cudaStream_t s) {
    device_slots<D>(); // also sets the kernel's shared-memory limit, once
    KS_LAUNCH_PDL(attention_decode_kernel<D>, dim3(Hk, a.splits, ks_cdiv(a.G, kRows)), dim3(32),
                  decode_smem_bytes<D>(), s, a);
    KS_LAUNCH_PDL(attention_decode_combine_kernel<D>, dim3(a.H), dim3(D), sizeof(float) * a.splits, s, a);
    return KS_OK;
}

} // namespace

extern "C" size_t ks_cuda_attention_decode_scratch_bytes(int H, int Hk, int d, int max_len) {
    if (d != 64 && d != 128) return 0; // the generic kernel needs no partials
    size_t splits = (size_t)decode_splits(Hk, H / Hk, d, max_len);
    return (size_t)H * splits * (d + 2) * sizeof(float);
}

extern "C" ks_status ks_cuda_attention_decode(ks_bf16 *out, const ks_bf16 *q, const ks_bf16 *kc, const ks_bf16 *vc,
                                              const int32_t *lens, const int32_t *starts, int cap, int H, int Hk,
                                              int d, float scale, int max_len, void *scratch, cudaStream_t s) {
    KS_ASSERT(Hk > 0 && H % Hk == 0 && max_len > 0); /* lens <= cap; max_len only sizes the grid */
    if (d != 64 && d != 128)
        return ks_attention_generic_launch(out, d, q, d, kc, vc, 1, 0, cap, H, Hk, d, 0, 0, lens, starts, scale, s);
    KS_ASSERT(((((uintptr_t)q | (uintptr_t)kc | (uintptr_t)vc) & 15) == 0));
    decode_args a;
    a.out = reinterpret_cast<bf16 *>(out);
    a.q = reinterpret_cast<const bf16 *>(q);
    a.kc = reinterpret_cast<const bf16 *>(kc);
    a.vc = reinterpret_cast<const bf16 *>(vc);
    a.lens = lens, a.starts = starts;
    a.cap = cap, a.H = H, a.G = H / Hk;
    a.splits = decode_splits(Hk, a.G, d, max_len);
    a.part_o = static_cast<float *>(scratch);
    a.part_m = a.part_o + (size_t)H * a.splits * d;
    a.part_l = a.part_m + (size_t)H * a.splits;
    a.scale_log2 = scale * 1.4426950408889634f;
    return d == 64 ? launch<64>(a, Hk, s) : launch<128>(a, Hk, s);
}
