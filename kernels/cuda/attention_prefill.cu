// attention_prefill.cu — flash-attention prefill on tensor cores (mma.sync m16n8k16 bf16, fp32 online
// softmax), causal with an optional sliding window, GQA without replicating K/V, over a head-major cache
// (chunked prefill: queries [q_pos0, q_pos0 + n) against keys [0, n_kv)).
//
// GQA packing: the G = H / Hk query heads of one KV group are interleaved into "virtual rows"
// v = t * G + g (query t, head g of the group). A block owns kBM consecutive virtual rows of one KV group,
// so it reads each K/V tile of that KV head once for all G heads, covers only ~kBM / G query positions
// (a short causal diagonal), and needs no special case for any G.
//
// Block: 4 warps, each 32 virtual rows (two m16 slabs, so every K/V fragment loaded from shared memory
// feeds two mma). Per key tile of kBN keys: S = Q K^T (fragments from swizzled shared memory via
// ldmatrix), masking only on tiles that touch the diagonal, the window edge or n_kv, online softmax in the
// log2 domain in registers, then O += P V with P taken straight from the S accumulators (the FA2 register
// layout identity) and V through ldmatrix.trans. K/V tiles are double-buffered with cp.async.
//
// Each row's log-sum-exp also goes to a.lse when it is set. kLse: the same walk without V (no V tiles, no
// P V), the log-sum-exps only: the first pass of the tensor-core window scores (window_scores_tc.cu).
//
// The rows of a block and the key tiles it visits come from the policy Cta: ks_dense_cta (the above), or
// ks_sparse_cta (attention_prefill_sparse.cuh: one query head's tile, the key blocks its block list names).
#include "attention_generic.cuh"
#include "attention_prefill.cuh"
#include "attention_prefill_sparse.cuh"
#include "mma.cuh"

namespace {

constexpr int kBM = 128, kBN = 64, kWarps = 4, kThreads = kWarps * 32;

template <int D>
struct prefill_smem {
    bf16 q[kBM * D];
    bf16 k[2][kBN * D];
    bf16 v[2][kBN * D]; // last: the kLse kernels' shared memory ends before it
};

template <int D, bool kLse>
constexpr int smem_bytes() { return kLse ? (int)offsetof(prefill_smem<D>, v) : (int)sizeof(prefill_smem<D>); }


// Issues the cp.async copies of key tile [kb, kb + kBN) of K and V (rows past n_kv zero-filled: V rows
// there may hold anything, and 0 * NaN would poison the output).
template <int D, bool kLse>
__device__ __forceinline__ void load_kv_tile(bf16 *ks, bf16 *vs, const bf16 *kh, const bf16 *vh, int kb, int n_kv) {
    constexpr int chunks = kBN * D / 8;
    for (int c = threadIdx.x; c < chunks; c += kThreads) {
        int r = c / (D / 8), col = (c % (D / 8)) * 8;
        bool ok = kb + r < n_kv;
        int64_t src = ok ? (int64_t)(kb + r) * D + col : 0;
        ks_cp_async16(ks + ks_swz<D>(r, col), kh + src, ok);
        if (!kLse) ks_cp_async16(vs + ks_swz<D>(r, col), vh + src, ok);
    }
}

template <int D, bool kLse, class Cta>
__global__ void __launch_bounds__(kThreads, 2) attention_prefill_kernel(prefill_args a0, typename Cta::list list) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    prefill_smem<D> &sm = *reinterpret_cast<prefill_smem<D> *>(smem_raw);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    // the longest (latest) query blocks start first
    const Cta cta(a0, list, blockIdx.x, gridDim.y - 1 - blockIdx.y, kBM, D);
    const prefill_args &a = cta.a;
    const int kvh = cta.kvh, qkvh = cta.qkvh, G = a.G, v0 = cta.v0;
    const prefill_range rg = ks_prefill_range(a, v0, kBM, kBN);
    const bf16 *kh = a.kc + (int64_t)kvh * a.cap * D, *vh = kLse ? NULL : a.vc + (int64_t)kvh * a.cap * D;

    // Q tile: virtual row r -> query t = (v0 + r) / G, head qkvh * G + (v0 + r) % G; rows past n zero-filled.
    for (int c = threadIdx.x; c < kBM * D / 8; c += kThreads) {
        int r = c / (D / 8), col = (c % (D / 8)) * 8, v = v0 + r, t = v / G;
        bool ok = t < a.n;
        const bf16 *src = ok ? a.q + (int64_t)t * a.ld_q + (int64_t)(qkvh * G + v - t * G) * D + col : a.q;
        ks_cp_async16(sm.q + ks_swz<D>(r, col), src, ok);
    }

    auto walk = cta.template keys<kBN>(rg);
    key_chunk cur, nxt;
    bool have = walk.next(cur);
    if (have) load_kv_tile<D, kLse>(sm.k[0], sm.v[0], kh, vh, cur.base, a.n_kv);
    ks_cp_async_commit();

    // ldmatrix row addresses of this lane (byte addresses in the shared window; see ks_swz_lane):
    //   Q (A operand): row warp*32 + s*16 + lane%16, chunk 2kk + lane/16;
    //   K (B operand): row np*16 + lane%8 + (lane/16)*8, chunk 2kk + (lane/8)%2;
    //   V (B operand, transposed): row kk*16 + lane%8 + ((lane/8)%2)*8, chunk 2dp + lane/16.
    constexpr uint32_t kRow = D * 2, kTile = kBN * D * 2;
    const int r8 = lane & 7;
    uint32_t q_addr, q_x, k_addr0, k_x;
    ks_abt_a_lane<D>(sm.q, warp * 32, &q_addr, &q_x);
    ks_abt_b_lane<D>(sm.k[0], &k_addr0, &k_x);
    const uint32_t v_addr0 = ks_smem_addr(sm.v[0]) + (r8 + ((lane >> 3) & 1) * 8) * kRow,
                   v_x = ks_swz_lane(lane >> 4, r8);

    float o[2][D / 8][4];
#pragma unroll
    for (int s = 0; s < 2; s++)
#pragma unroll
        for (int j = 0; j < D / 8; j++)
#pragma unroll
            for (int c = 0; c < 4; c++) o[s][j][c] = 0.0f;
    float m[2][2] = {{-INFINITY, -INFINITY}, {-INFINITY, -INFINITY}}, l[2][2] = {{0, 0}, {0, 0}};

    for (int it = 0; have; it++) {
        const int kb = cur.base, st = it & 1;
        const bool more = walk.next(nxt);
        if (more) {
            load_kv_tile<D, kLse>(sm.k[st ^ 1], sm.v[st ^ 1], kh, vh, nxt.base, a.n_kv);
            ks_cp_async_commit();
            ks_cp_async_wait<1>();
        } else {
            ks_cp_async_wait<0>();
        }
        __syncthreads();
        const uint32_t k_addr = k_addr0 + st * kTile, v_addr = v_addr0 + st * kTile;

        // S = Q K^T for this warp's 32 rows x kBN keys.
        float sc[2][kBN / 8][4];
        ks_mma_abt<D, kBN>(sc, q_addr, q_x, k_addr, k_x);

        // Masks only where some (row, key) of the tile is invisible.
        const bool full = ks_prefill_tile_full(a, rg, kb, kBN) && walk.all_listed(cur);
#pragma unroll
        for (int s = 0; s < 2; s++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                float mx = m[s][e];
#pragma unroll
                for (int j = 0; j < kBN / 8; j++)
#pragma unroll
                    for (int c = 0; c < 2; c++) {
                        float x = sc[s][j][2 * e + c] * a.scale_log2;
                        if (!full) {
                            int key = kb + j * 8 + (lane & 3) * 2 + c;
                            int p = a.q_pos0 + (v0 + warp * 32 + s * 16 + e * 8 + (lane >> 2)) / G;
                            if (!(ks_prefill_visible(a, key, p) & walk.listed(cur, p))) x = -INFINITY;
                        }
                        sc[s][j][2 * e + c] = x;
                        mx = fmaxf(mx, x);
                    }
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                // A row that has seen no visible key yet keeps m = -inf; subtract 0 instead so exp2 gives 0.
                const float mu = mx == -INFINITY ? 0.0f : mx;
                const float alpha = ks_exp2(m[s][e] - mu);
                m[s][e] = mx;
                float sum = 0.0f;
#pragma unroll
                for (int j = 0; j < kBN / 8; j++)
#pragma unroll
                    for (int c = 0; c < 2; c++) {
                        float p = ks_exp2(sc[s][j][2 * e + c] - mu);
                        sc[s][j][2 * e + c] = p;
                        sum += p;
                    }
                l[s][e] = l[s][e] * alpha + sum; // this thread's partial; the quad is summed at the end
                if (!kLse) {
#pragma unroll
                    for (int j = 0; j < D / 8; j++) {
                        o[s][j][2 * e] *= alpha;
                        o[s][j][2 * e + 1] *= alpha;
                    }
                }
            }
        }

        // O += P V: the S accumulator of key tiles (2kk, 2kk+1) is exactly the A fragment of k-step kk.
#pragma unroll
        for (int kk = 0; kk < (kLse ? 0 : kBN / 16); kk++) {
            uint32_t pa[2][4];
#pragma unroll
            for (int s = 0; s < 2; s++) {
                pa[s][0] = ks_pack2(sc[s][2 * kk][0], sc[s][2 * kk][1]);
                pa[s][1] = ks_pack2(sc[s][2 * kk][2], sc[s][2 * kk][3]);
                pa[s][2] = ks_pack2(sc[s][2 * kk + 1][0], sc[s][2 * kk + 1][1]);
                pa[s][3] = ks_pack2(sc[s][2 * kk + 1][2], sc[s][2 * kk + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < D / 16; dp++) {
                uint32_t vf[4];
                ks_ldmatrix_x4_trans(vf, v_addr + kk * 16 * kRow + ((dp << 5) ^ v_x));
#pragma unroll
                for (int s = 0; s < 2; s++) {
                    ks_mma_bf16(o[s][2 * dp], pa[s], vf[0], vf[1]);
                    ks_mma_bf16(o[s][2 * dp + 1], pa[s], vf[2], vf[3]);
                }
            }
        }
        __syncthreads(); // every warp is done with stage st before the next iteration refills it
        cur = nxt, have = more;
    }
    ks_cp_async_wait<0>(); // with no key tile at all, the Q copies are still in flight here

    // Normalise and store: row (s, e) of this thread, columns j * 8 + (lane % 4) * 2 + {0, 1}.
#pragma unroll
    for (int s = 0; s < 2; s++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const float sum = ks_quad_sum(l[s][e]);
            const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
            const int v = v0 + warp * 32 + s * 16 + e * 8 + (lane >> 2), t = v / G;
            if (t >= a.n) continue;
            if ((kLse || a.lse) && (lane & 3) == 0) ks_prefill_store_lse(a, t, qkvh * G + v - t * G, m[s][e], sum);
            if (kLse) continue;
            bf16 *dst = a.out + (int64_t)t * a.ld_o + (int64_t)(qkvh * G + v - t * G) * D + (lane & 3) * 2;
#pragma unroll
            for (int j = 0; j < D / 8; j++)
                *reinterpret_cast<uint32_t *>(dst + j * 8) = ks_pack2(o[s][j][2 * e] * inv, o[s][j][2 * e + 1] * inv);
        }
}

template <int D, bool kLse, class Cta>
ks_status launch(const prefill_args &a, const typename Cta::list &list, dim3 grid, cudaStream_t s) {
    const int smem = smem_bytes<D, kLse>();
    static bool configured = false; // the attribute is per function; set once, before the first launch
    if (!configured) {
        CUDA_CHECK(cudaFuncSetAttribute(attention_prefill_kernel<D, kLse, Cta>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        configured = true;
    }
    attention_prefill_kernel<D, kLse, Cta><<<grid, kThreads, smem, s>>>(a, list);
    KS_LAUNCH_CHECK();
    return KS_OK;
}

// The dense grid: x the KV heads, y the blocks of kBM virtual rows.
template <int D, bool kLse>
ks_status launch_dense(const prefill_args &a, int Hk, cudaStream_t s) {
    return launch<D, kLse, ks_dense_cta>(a, ks_dense_list{}, dim3(Hk, ks_cdiv((int64_t)a.n * a.G, kBM)), s);
}

} // namespace

prefill_args ks_prefill_make_args(ks_bf16 *out, int64_t ld_o, const ks_bf16 *q, int64_t ld_q, const ks_bf16 *kc,
                                  const ks_bf16 *vc, int n, int n_kv, int cap, int H, int Hk, int d, int q_pos0,
                                  int window, float scale, float *lse) {
    KS_ASSERT(d == 64 || d == 128);
    KS_ASSERT(Hk > 0 && H % Hk == 0 && n_kv <= cap);
    // 16-byte rows for cp.async and the 4-byte output stores.
    KS_ASSERT(ld_q % 8 == 0 && ld_o % 8 == 0 &&
              ((((uintptr_t)out | (uintptr_t)q | (uintptr_t)kc | (uintptr_t)vc) & 15) == 0));
    KS_ASSERT(ks_cdiv((int64_t)n * (H / Hk), kBM) <= 65535);
    prefill_args a;
    a.out = reinterpret_cast<bf16 *>(out);
    a.q = reinterpret_cast<const bf16 *>(q);
    a.kc = reinterpret_cast<const bf16 *>(kc);
    a.vc = reinterpret_cast<const bf16 *>(vc);
    a.ld_o = ld_o, a.ld_q = ld_q;
    a.n = n, a.n_kv = n_kv, a.cap = cap, a.H = H, a.G = H / Hk, a.q_pos0 = q_pos0, a.window = window, a.lse = lse;
    a.scale_log2 = scale * 1.4426950408889634f;
    return a;
}

int ks_device_major() {
    static int major = -1;
    if (major < 0) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
            major = 0;
    }
    return major;
}

ks_status ks_prefill_launch_sm80(const prefill_args &a, int Hk, int d, cudaStream_t s) {
    return d == 64 ? launch_dense<64, false>(a, Hk, s) : launch_dense<128, false>(a, Hk, s);
}

ks_status ks_prefill_sparse_launch_sm80(const prefill_args &a, const ks_sparse_list &l, int d, cudaStream_t s) {
    static_assert(kBM == kSparseTile, "a sparse tile is one block of rows");
    const dim3 grid = ks_sparse_grid(a);
    return d == 64 ? launch<64, false, ks_sparse_cta>(a, l, grid, s) : launch<128, false, ks_sparse_cta>(a, l, grid, s);
}

ks_status ks_prefill_lse_launch(const prefill_args &a, int Hk, int d, cudaStream_t s) {
    KS_ASSERT((d == 64 || d == 128) && a.lse && a.window == 0);
    return d == 64 ? launch_dense<64, true>(a, Hk, s) : launch_dense<128, true>(a, Hk, s);
}

extern "C" ks_status ks_cuda_attention_prefill(ks_bf16 *out, int64_t ld_o, const ks_bf16 *q, int64_t ld_q,
                                               const ks_bf16 *kc, const ks_bf16 *vc, int n, int n_kv, int cap, int H,
                                               int Hk, int d, int q_pos0, int window, float scale, float *lse,
                                               cudaStream_t s) {
    if (n <= 0) return KS_OK;
    if (d != 64 && d != 128) { // no tensor-core kernel for this head dim
        if (lse) return ks_fail(KS_ERR_UNSUPPORTED, "prefill attention log-sum-exps need head_dim 64 or 128, not %d", d);
        return ks_attention_generic_launch(out, ld_o, q, ld_q, kc, vc, n, n_kv, cap, H, Hk, d, q_pos0, window, NULL,
                                           NULL, scale, s);
    }
    prefill_args a =
        ks_prefill_make_args(out, ld_o, q, ld_q, kc, vc, n, n_kv, cap, H, Hk, d, q_pos0, window, scale, lse);
    // The sm_90a binary holds the wgmma kernel; other GPUs run the mma.sync one (from the PTX target).
    if (d == 128 && ks_device_major() == 9) return ks_prefill_launch_sm90(a, Hk, s);
    return ks_prefill_launch_sm80(a, Hk, d, s);
}

extern "C" ks_status ks_cuda_attention_prefill_sm80(ks_bf16 *out, int64_t ld_o, const ks_bf16 *q, int64_t ld_q,
                                                    const ks_bf16 *kc, const ks_bf16 *vc, int n, int n_kv, int cap,
                                                    int H, int Hk, int d, int q_pos0, int window, float scale,
                                                    float *lse, cudaStream_t s) {
    if (n <= 0) return KS_OK;
    prefill_args a =
        ks_prefill_make_args(out, ld_o, q, ld_q, kc, vc, n, n_kv, cap, H, Hk, d, q_pos0, window, scale, lse);
    return ks_prefill_launch_sm80(a, Hk, d, s);
}
