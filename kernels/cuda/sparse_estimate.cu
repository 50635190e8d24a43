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

#include "cuda/block_rows.cuh"
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

// ---- a whole chunk at once (ks_cuda_xattn_blocks) --------------------------------------------------------------
//
// Per slab of query blocks: the slab's stride queries reordered (xattn_reorder_q: row i of head h is q at positions
// i S + S - 1 .. i S, each d wide, zero outside the chunk), their stride scores against every whole stride column
// of keys as one cuBLASLt GEMM per KV head (a stride column j is cache rows j S .. j S + S - 1, contiguous S d in the
// head-major cache: a GEMM operand in place), then xattn_slab_sums: per (query block, head) each stride row's
// softmax (the partial last column, keys past the chunk zero, recomputed on CUDA cores) and the block sums. Then
// xattn_select: per (head, query block) row ks_xattn_select's choice, on the device.

namespace {

constexpr int XB_WARPS = 8, XB_SELECT_THREADS = 256;
constexpr size_t kXattnScoreBytes = (size_t)256 << 20; // a slab's stride scores at most (ks_cuda_xattn_work_size)

// Qr (H, R, S d) of stride rows i0 .. i0 + R - 1.
__global__ void xattn_reorder_q(bf16 *qr, const bf16 *q, int64_t ld_q, int H, int d, int S, int i0, int R,
                                int q_pos0, int n) {
    const int64_t row_elems = (int64_t)S * d, total = (int64_t)H * R * row_elems / 8;
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t e8 = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e8 < total; e8 += step) {
        const int64_t e = e8 * 8, hr = e / row_elems;
        const int h = (int)(hr / R), r = (int)(hr % R), rem = (int)(e % row_elems), t = rem / d, c = rem % d;
        const int row = (i0 + r) * S + S - 1 - t - q_pos0;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (row >= 0 && row < n) v = *reinterpret_cast<const uint4 *>(q + (int64_t)row * ld_q + (int64_t)h * d + c);
        *reinterpret_cast<uint4 *>(qr + e) = v;
    }
}

// The stride score of reordered row qr (S d) against the keys of stride column j below n_kv (the rest zero), by
// one warp (every lane returns it).
__device__ float padded_dot(const bf16 *qr, const bf16 *kh, int d, int j, int S, int n_kv, float scale) {
    const int m = min(S, n_kv - j * S), lane = threadIdx.x & 31;
    const bf16 *kj = kh + (int64_t)j * S * d;
    float s = 0.0f;
    for (int e = lane; e < m * d; e += 32) s += __bfloat162float(qr[e]) * __bfloat162float(kj[e]);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    return s * scale;
}

struct xattn_slab {
    const bf16 *qr; // (H, R, S d)
    float *sc;      // (H, R, ld_s) unscaled stride dots of the whole columns 0 .. whole - 1; then, in place, each
                    // row's key-block partials (max, sum) at 2 J, 2 J + 1 (xattn_slab_sums)
    int64_t ld_s;
    int i0, R, whole; // the slab's first stride row and rows; whole stride columns (n_kv / S)
};

// One block per (query block qb = qb_s + blockIdx.x, head), in one pass over the scores. A warp per stride row i:
// 32 columns at a time, each key block's `per` columns a group of lanes, the block's max m_J and sum
// s_J = sum exp(s - m_J) by shuffles, written over the row's own columns 2 J, 2 J + 1 (already read: 2 J + 1 <
// J per), and folded into the row's softmax max M and denominator T. Then thread t the key blocks J = t,
// t + blockDim, .. <= qb: a[J] = sum over the rows of s_J exp(m_J - M) / T, rows in order, into a_out (H, nq, nb)
// row (h, qb - qb0).
__global__ void xattn_slab_sums(float *a_out, int nq, int nb, xattn_slab sl, const bf16 *kc, int H, int Hk, int d,
                                int cap, int qb_s, int qb0, ks_xattn_blocks_args a) {
    __shared__ float rm[32], rt[32];
    const int per = a.block / a.stride, S = a.stride, h = blockIdx.y, qb = qb_s + blockIdx.x;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, n_kv = a.q_pos0 + a.n;
    const bf16 *kh = kc + (int64_t)(h / (H / Hk)) * cap * d;
    for (int rr = warp; rr < per; rr += XB_WARPS) {
        const int i = qb * per + rr, r = i - sl.i0;
        const bool has = i * S + S - 1 >= a.q_pos0 && i * S < a.q_pos0 + a.n;
        const bf16 *qr = sl.qr + ((int64_t)h * sl.R + r) * S * d;
        float *srow = sl.sc + ((int64_t)h * sl.R + r) * sl.ld_s;
        const float f = has && sl.whole <= i ? padded_dot(qr, kh, d, sl.whole, S, n_kv, a.scale) : 0.0f;
        float mx = -INFINITY, tot = 0.0f; // this lane's fold of its groups' partials
        for (int j0 = 0; has && j0 <= i; j0 += 32) {
            const int j = j0 + lane;
            const float s = j > i ? -INFINITY : j < sl.whole ? srow[j] * a.scale : f;
            float m = s;
            for (int o = 1; o < per; o <<= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
            float e = j > i ? 0.0f : expf(s - m);
            for (int o = 1; o < per; o <<= 1) e += __shfl_xor_sync(0xffffffffu, e, o);
            if (lane % per == 0 && j <= i) { // the group's first column is causal: the block has a partial
                const int J = j / per;
                srow[2 * J] = m, srow[2 * J + 1] = e;
                const float M = fmaxf(mx, m);
                tot = (tot > 0.0f ? tot * expf(mx - M) : 0.0f) + e * expf(m - M);
                mx = M;
            }
        }
        for (int o = 16; o > 0; o >>= 1) { // combine the lanes' (max, sum)
            const float om = __shfl_xor_sync(0xffffffffu, mx, o), ot = __shfl_xor_sync(0xffffffffu, tot, o);
            const float M = fmaxf(mx, om);
            tot = (tot > 0.0f ? tot * expf(mx - M) : 0.0f) + (ot > 0.0f ? ot * expf(om - M) : 0.0f);
            mx = M;
        }
        if (lane == 0) rm[rr] = mx, rt[rr] = has ? tot : 0.0f;
    }
    __syncthreads();
    float *row = a_out + ((int64_t)h * nq + (qb - qb0)) * nb;
    for (int J = threadIdx.x; J <= qb; J += blockDim.x) {
        double acc = 0.0;
        for (int rr = 0; rr < per; rr++) {
            if (!(rt[rr] > 0.0f)) continue;
            const float *p = sl.sc + ((int64_t)h * sl.R + qb * per + rr - sl.i0) * sl.ld_s + 2 * J;
            acc += (double)p[1] * exp((double)p[0] - rm[rr]) / rt[rr];
        }
        row[J] = (float)acc;
    }
}

} // namespace

namespace {

// x before y in ks_xattn_select's ranking: descending score, the lower block first among equals.
__device__ __forceinline__ bool ranks_before(float sx, int bx, float sy, int by) {
    return sx > sy || (sx == sy && bx < by);
}

// One block per (query block qb0 + blockIdx.x, head): ks_xattn_select on the row's scores a[0 .. qb] (the
// candidates 1 .. qb - 1 ranked by a bitonic sort in shared memory, P >= qb - 1 slots padded with blocks that rank
// last; the running sums by one thread in the reference's order), the kept blocks ascending into cols (row r at
// r W), their count and coverage.
__global__ void xattn_select(int32_t *cols, int32_t *count, double *coverage, const float *a_in, int nq, int nb,
                             int W, int qb0, const float *theta, float density, int P) {
    extern __shared__ unsigned char xs_smem[];
    float *key = reinterpret_cast<float *>(xs_smem);
    int *blk = reinterpret_cast<int *>(key + P);
    unsigned char *keep = reinterpret_cast<unsigned char *>(blk + P);
    const int h = blockIdx.y, qb = qb0 + blockIdx.x, r = h * nq + blockIdx.x, tid = threadIdx.x;
    const float *a = a_in + (int64_t)r * nb;
    for (int i = tid; i < P; i += blockDim.x) {
        const bool real = i < qb - 1;
        key[i] = real ? a[i + 1] : -INFINITY, blk[i] = real ? i + 1 : INT_MAX;
    }
    for (int J = tid; J <= qb; J += blockDim.x) keep[J] = J == 0 || J == qb;
    __syncthreads();
    for (int k = 2; k <= P; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = tid; i < P; i += blockDim.x) {
                const int l = i ^ j;
                if (l > i) {
                    const bool up = (i & k) == 0; // this pair sorts into ranking order, else reversed
                    const bool swap = up ? ranks_before(key[l], blk[l], key[i], blk[i])
                                         : ranks_before(key[i], blk[i], key[l], blk[l]);
                    if (swap) {
                        const float tk = key[i];
                        const int tb = blk[i];
                        key[i] = key[l], blk[i] = blk[l], key[l] = tk, blk[l] = tb;
                    }
                }
            }
            __syncthreads();
        }
    if (tid == 0) {
        const int n_other = max(qb - 1, 0);
        double forced = a[0];
        int n = 1;
        if (qb > 0) forced += a[qb], n++;
        double total = forced, kept = forced;
        for (int i = 0; i < n_other; i++) total += key[i];
        if (density > 0) {
            const int target = (int)ceil((double)density * (qb + 1) - 1e-6);
            for (int i = 0; i < n_other && n < target; i++) keep[blk[i]] = 1, n++, kept += key[i];
        } else {
            const double required = (double)theta[h] * total;
            for (int i = 0; i < n_other && kept < required; i++) keep[blk[i]] = 1, n++, kept += key[i];
        }
        int32_t *out = cols + (int64_t)r * W;
        n = 0;
        for (int J = 0; J <= qb; J++)
            if (keep[J]) out[n++] = J;
        count[r] = n;
        coverage[r] = total > 0 ? kept / total : 1.0;
    }
}

// Row r's count[r] entries from src (row r at r W) to dst at row_start[r]: one block per row.
__global__ void xattn_pack(int32_t *dst, const int32_t *row_start, const int32_t *src, const int32_t *count, int W) {
    const int r = blockIdx.x;
    for (int i = threadIdx.x; i < count[r]; i += blockDim.x) dst[row_start[r] + i] = src[(int64_t)r * W + i];
}

} // namespace

// The row stride of the stride scores: every stride column of the cache, in whole 128-byte lines (the GEMM's
// output rows aligned).
static int64_t scores_ld(int cap, int stride) { return (cap / stride + 32) / 32 * 32; }

extern "C" size_t ks_cuda_xattn_slab_qblocks(size_t s_floats, int H, int block, int stride, int cap) {
    const size_t per_qblock = (size_t)H * (block / stride) * scores_ld(cap, stride);
    return s_floats / per_qblock;
}

extern "C" void ks_cuda_xattn_work_size(int H, int d, int block, int cap, int nq, size_t *s_floats, size_t *q_elems) {
    const size_t one = (size_t)H * (block / 8) * scores_ld(cap, 8); // one query block's stride scores at stride 8
    size_t floats = kXattnScoreBytes / 4;
    floats = floats < one ? one : floats > one * nq ? one * nq : floats;
    size_t slab = ks_cuda_xattn_slab_qblocks(floats, H, block, 16, cap);
    slab = slab < (size_t)nq ? slab : (size_t)nq;
    *s_floats = floats, *q_elems = (size_t)H * slab * block * d;
}

extern "C" ks_status ks_cuda_xattn_blocks(ks_cuda_gemm_t *gemm, const ks_cuda_xattn_work *w, const ks_bf16 *q,
                                          int64_t ld_q, const ks_bf16 *kc, int H, int Hk, int d, int cap,
                                          const ks_xattn_blocks_args *a, cudaStream_t s) {
    const int B = a->block, S = a->stride, per = B / S, G = H / Hk, n_kv = a->q_pos0 + a->n;
    const int qb0 = a->q_pos0 / B, nq = (n_kv - 1) / B - qb0 + 1, nb = cap / B + 1, W = qb0 + nq;
    KS_ASSERT(H % Hk == 0 && S > 0 && B % S == 0 && per <= 32 && a->n > 0 && d % 8 == 0 && W <= nb);
    const size_t by_s = ks_cuda_xattn_slab_qblocks(w->s_floats, H, B, S, cap), by_q = w->q_elems / ((size_t)H * B * d);
    const int slab = (int)(by_s < by_q ? by_s : by_q);
    if (slab < 1)
        return ks_fail(KS_ERR_UNSUPPORTED, "XAttention on cuda: the estimation scratch holds no query block of %d "
                                           "keys at stride %d", cap, S);
    const int whole = n_kv / S;
    const int64_t ld_s = scores_ld(cap, S);
    for (int qs = qb0; qs < qb0 + nq; qs += slab) {
        const int nqs = min(slab, qb0 + nq - qs), i0 = qs * per, R = nqs * per;
        const int64_t vec = (int64_t)H * R * S * d / 8;
        xattn_reorder_q<<<(unsigned)min(ks_cdiv(vec, 256), 65535), 256, 0, s>>>(
            reinterpret_cast<bf16 *>(w->q), reinterpret_cast<const bf16 *>(q), ld_q, H, d, S, i0, R, a->q_pos0, a->n);
        KS_LAUNCH_CHECK();
        // The whole stride columns up to the slab's last row (causal), rounded up to a multiple of 512 inside the
        // cache (columns past n_kv / S are computed and never read) so that the chunks share a few GEMM shapes, and
        // so cuBLASLt plans.
        const int need = min(whole, i0 + R), cols = min((need + 511) / 512 * 512, cap / S);
        for (int g = 0; g < Hk && need > 0; g++) // the G heads' rows against KV head g's stride columns
            KS_TRY(ks_cuda_gemm_run_ld(gemm, w->s + (int64_t)g * G * R * ld_s, ld_s, KS_DTYPE_F32,
                                       w->q + (int64_t)g * G * R * S * d, (int64_t)S * d,
                                       kc + (int64_t)g * cap * d, NULL, G * R, S * d, cols, 0.0f, s));
        const xattn_slab sl = {reinterpret_cast<const bf16 *>(w->q), w->s, ld_s, i0, R, whole};
        xattn_slab_sums<<<dim3(nqs, H), XB_WARPS * 32, 0, s>>>(w->a, nq, nb, sl, reinterpret_cast<const bf16 *>(kc),
                                                               H, Hk, d, cap, qs, qb0, *a);
        KS_LAUNCH_CHECK();
    }
    int P = 1;
    while (P < W - 2) P <<= 1;
    const size_t smem = (size_t)P * 8 + (size_t)W;
    if (smem > 48 * 1024)
        return ks_fail(KS_ERR_UNSUPPORTED, "XAttention on cuda: %d key blocks per row exceed the device selection's "
                                           "shared memory", W);
    xattn_select<<<dim3(nq, H), XB_SELECT_THREADS, smem, s>>>(w->cols, w->count, w->coverage, w->a, nq, nb, W, qb0,
                                                              w->theta, a->density, P);
    KS_LAUNCH_CHECK();
    return KS_OK;
}

extern "C" ks_status ks_cuda_xattn_pack(int32_t *row_start, int32_t *cols, const ks_cuda_xattn_work *w, int rows,
                                        int W, cudaStream_t s) {
    if (rows <= 0) return KS_OK;
    KS_TRY(ks_rows_offsets(row_start, w->count, rows, s));
    xattn_pack<<<rows, 128, 0, s>>>(cols, row_start, w->cols, w->count, W);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
