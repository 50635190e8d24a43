// sparse_estimate.cu — XAttention's antidiagonal block scores on the GPU (ks_cuda_methods.h:
// ks_cuda_xattn_block_scores; reference ks_ref_xattn_block_scores in cpu/xattn_ref.h). For one query block qb of
// a chunk and every query head, in two passes that never hold a row of stride scores:
//   1. xattn_row_stats: one block per (stride row i of the query block, head): the row's stride query (its S
//      positions in reverse, positions outside the chunk zero) in shared memory, each warp a strided share of
//      the columns j <= i (a stride dot: lanes over the S d products, a butterfly sum), an online max and sum per
//      warp, the warps combined in warp order: the row's softmax max and denominator;
//   2. xattn_block_sums: one block per (8 key blocks, head), a warp per key block J: for the block's stride rows
//      in order, the stride dots of J's columns again, their probabilities added in a fixed order.
// Every sum has a fixed order, so the scores do not depend on scheduling. Correct first: a dot product per warp
// on CUDA cores (fast enough for small models; a tensor-core estimate is the next step for 128K).
#include <math.h>

#include "cuda/common.cuh"
#include "cuda/ks_cuda_methods.h"

namespace {

constexpr int XA_WARPS = 8;
constexpr int XA_MAX_SD = 16 * 256; // S d: stride 16 at head dim 256

// The stride query of row i into x (S d floats): x[t d + c] = q at position i S + S - 1 - t, head h; returns
// whether any of its positions lies in the chunk (a row with none is XAttention padding: it scores nothing).
__device__ bool load_stride_query(float *x, const bf16 *q, int64_t ld_q, int h, int d, int i, int S, int q_pos0,
                                  int n) {
    for (int e = threadIdx.x; e < S * d; e += blockDim.x) {
        const int t = e / d, c = e % d, r = i * S + S - 1 - t - q_pos0;
        x[e] = r >= 0 && r < n ? __bfloat162float(q[(int64_t)r * ld_q + (int64_t)h * d + c]) : 0.0f;
    }
    __syncthreads();
    return i * S + S - 1 >= q_pos0 && i * S < q_pos0 + n;
}

// scale x . K'[j] by one warp (every lane returns it): the keys of rows j S .. j S + S - 1 below n_kv (the rest
// are zero, XAttention's padding).
__device__ float stride_dot(const float *x, const bf16 *kh, int d, int j, int S, int n_kv, float scale) {
    const int m = min(S, n_kv - j * S), lane = threadIdx.x & 31;
    const bf16 *kj = kh + (int64_t)j * S * d;
    float s = 0.0f;
    for (int e = lane; e < m * d; e += 32) s += x[e] * __bfloat162float(kj[e]);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    return s * scale;
}

__global__ void xattn_row_stats(float *stats, const bf16 *q, int64_t ld_q, const bf16 *kc, int H, int Hk, int d,
                                int cap, ks_xattn_args a) {
    __shared__ float x[XA_MAX_SD];
    __shared__ float wm[XA_WARPS], ws[XA_WARPS];
    const int per = a.block / a.stride, h = blockIdx.y, i = a.qb * per + blockIdx.x;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, n_kv = a.q_pos0 + a.n;
    float *st = stats + 2 * ((int64_t)h * per + blockIdx.x);
    if (!load_stride_query(x, q, ld_q, h, d, i, a.stride, a.q_pos0, a.n)) {
        if (threadIdx.x == 0) st[0] = -INFINITY, st[1] = 0.0f;
        return;
    }
    const bf16 *kh = kc + (int64_t)(h / (H / Hk)) * cap * d;
    float mx = -INFINITY, sum = 0.0f;
    for (int j = warp; j <= i; j += XA_WARPS) {
        const float s = stride_dot(x, kh, d, j, a.stride, n_kv, a.scale);
        if (s > mx) sum = sum * expf(mx - s), mx = s;
        sum += expf(s - mx);
    }
    if (lane == 0) wm[warp] = mx, ws[warp] = sum;
    __syncthreads();
    if (threadIdx.x) return;
    float M = -INFINITY, total = 0.0f;
    for (int w = 0; w < XA_WARPS; w++) M = fmaxf(M, wm[w]);
    for (int w = 0; w < XA_WARPS; w++)
        if (ws[w] > 0.0f) total += ws[w] * expf(wm[w] - M);
    st[0] = M, st[1] = total;
}

__global__ void xattn_block_sums(float *out, int64_t ld, const float *stats, const bf16 *q, int64_t ld_q,
                                 const bf16 *kc, int H, int Hk, int d, int cap, ks_xattn_args a) {
    __shared__ float x[XA_MAX_SD];
    const int per = a.block / a.stride, h = blockIdx.y, warp = threadIdx.x >> 5;
    const int J = blockIdx.x * XA_WARPS + warp, n_kv = a.q_pos0 + a.n;
    const bf16 *kh = kc + (int64_t)(h / (H / Hk)) * cap * d;
    double acc = 0.0;
    for (int r = 0; r < per; r++) {
        const int i = a.qb * per + r;
        const float M = stats[2 * ((int64_t)h * per + r)], total = stats[2 * ((int64_t)h * per + r) + 1];
        __syncthreads(); // the previous row's x is read by every warp
        load_stride_query(x, q, ld_q, h, d, i, a.stride, a.q_pos0, a.n);
        if (J > a.qb || !(total > 0.0f)) continue;
        for (int j = J * per; j < (J + 1) * per && j <= i; j++)
            acc += expf(stride_dot(x, kh, d, j, a.stride, n_kv, a.scale) - M) / total;
    }
    if (J <= a.qb && (threadIdx.x & 31) == 0) out[(int64_t)h * ld + J] = (float)acc;
}

} // namespace

extern "C" ks_status ks_cuda_xattn_block_scores(float *out, int64_t ld, float *stats, const ks_bf16 *q, int64_t ld_q,
                                                const ks_bf16 *kc, int H, int Hk, int d, int cap,
                                                const ks_xattn_args *a, cudaStream_t s) {
    KS_ASSERT(H % Hk == 0 && a->stride > 0 && a->block % a->stride == 0 && a->qb < ld && a->n > 0);
    if (a->stride * d > XA_MAX_SD)
        return ks_fail(KS_ERR_UNSUPPORTED, "XAttention on cuda: stride %d x head_dim %d exceeds the %d-element stride "
                                           "query the estimation kernel holds", a->stride, d, XA_MAX_SD);
    const int per = a->block / a->stride;
    xattn_row_stats<<<dim3(per, H), XA_WARPS * 32, 0, s>>>(stats, reinterpret_cast<const bf16 *>(q), ld_q,
                                                           reinterpret_cast<const bf16 *>(kc), H, Hk, d, cap, *a);
    KS_LAUNCH_CHECK();
    xattn_block_sums<<<dim3(ks_cdiv(a->qb + 1, XA_WARPS), H), XA_WARPS * 32, 0, s>>>(
        out, ld, stats, reinterpret_cast<const bf16 *>(q), ld_q, reinterpret_cast<const bf16 *>(kc), H, Hk, d, cap,
        *a);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
