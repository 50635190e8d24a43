// gemv.cu — y (n, out) = x (n, in) W^T (+ bias) (+ y) for the few rows of a decode step (one token, or one per
// sample of a batch, n <= KS_CUDA_GEMV_ROWS): the step's projections, plain or with the small op that follows them
// in a layer fused in (SwiGLU after gate|up, RMSNorm after a residual add). cuBLASLt's n = 1 kernels read the
// weights at 1.5-3.5 TB/s depending on the shape (docs/kernels.md); this one streams each weight row once with
// 16-byte loads, for every shape, and uses each loaded weight word for all n rows.
//
// Row b of an n-row launch is bit-identical to a one-row launch on that row's x: every output's sum is taken in
// one order whatever n is (thread t sums the words t, t + 256, ... in order, 8 fmaf per word; the warps' sums meet
// in shared memory in warp order; the epilogue's arithmetic is per row), so a batch decodes what its samples
// decode alone.
#include "common.cuh"

namespace {

// A block of 8 warps computes R outputs for every row; its 256 threads split the `in` dimension (16-byte words,
// consecutive threads on consecutive words), each with the loads of R weight rows in flight at once; the partial
// sums meet in shared memory. R = 4 for matrices of up to kFewRows rows (a decode layer's q|k|v, o and down:
// one wave of blocks instead of two or three waves of 2-row blocks, whose turnover cost ~7% of their time,
// docs/kernels.md), R = 2 above (gate|up, the LM head: long enough that waves do not matter).
constexpr int kThreads = 256, kFewRows = 16384;

// What happens to the R sums of a block, per row.
enum Mode {
    kPlain,  // y[o] = sum (+ bias[o]) (+ y[o])
    kSwiglu, // the block's two rows are gate row r and up row F + r of a stacked gate|up W: y[r] = silu(g) * u,
             // up[r] = u, with g and u rounded to bf16 first, as separate GEMV and SwiGLU kernels would
    kNorm,   // one row: kPlain into the fp32 residual y, then the last block to finish writes xn = rmsnorm(y) * norm_w
};

template <typename T>
struct gemv_args {
    T *y;
    int64_t ld_y; // row b's outputs at y + b * ld_y (kSwiglu: and its up at up + b * ld_y)
    const bf16 *x;
    int64_t ld_x; // row b's input at x + b * ld_x
    const bf16 *w;
    const T *bias;
    int n, in, out; // kSwiglu: out = F (the grid), W has 2F rows
    bool accumulate;
    bf16 *up;            // kSwiglu: (n, F) the up projection
    bf16 *xn;            // kNorm: (out) the normalised residual
    const float *norm_w; // kNorm: (out)
    float eps;           // kNorm
    unsigned *done;      // kNorm: blocks finished; 0 before the launch, reset to 0 by the last block
};

// Row r of the block's R: the weight row it reads.
template <int MODE, int R>
__device__ __forceinline__ int weight_row(int blk, int r, int out) {
    return MODE == kSwiglu ? blk + r * out : min(blk * R + r, out - 1); // clamp: no OOB past the last row
}

// xn = y * w / sqrt(mean(y^2) + eps) over `out` values, by one block of kThreads (ks_cuda_rmsnorm's arithmetic):
// the last block of a one-row kNorm launch, or one block per row of norm_rows_kernel, so a row's norm is the same
// sums in the same order either way. y is read past L1 (__ldcg): other blocks wrote it, and this block's L1 may
// hold stale lines. The tail is serial work after the GEMV, so its loads are issued kTail at a time per thread,
// not one by one.
__device__ void norm_tail(const float *y, bf16 *xn, const float *norm_w, int out, float eps) {
    constexpr int kTail = 16;
    __shared__ float red[32];
    float ss = 0.0f;
    for (int base = 0; base < out; base += kThreads * kTail) {
        float v[kTail];
#pragma unroll
        for (int k = 0; k < kTail; k++) {
            const int i = base + k * kThreads + threadIdx.x;
            v[k] = i < out ? __ldcg(y + i) : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < kTail; k++) ss += v[k] * v[k];
    }
    ss = ks_block_sum(ss, red);
    const float inv = rsqrtf(ss / out + eps);
    for (int base = 0; base < out; base += kThreads * kTail) {
        float v[kTail], w[kTail];
#pragma unroll
        for (int k = 0; k < kTail; k++) {
            const int i = base + k * kThreads + threadIdx.x;
            v[k] = i < out ? __ldcg(y + i) : 0.0f;
            w[k] = i < out ? norm_w[i] : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < kTail; k++) {
            const int i = base + k * kThreads + threadIdx.x;
            if (i < out) xn[i] = __float2bfloat16_rn(v[k] * inv * w[k]);
        }
    }
}

// One 16-byte word i of every row's x against the R weight words of the block (unpacked in wf): 8 fmaf per
// (row, weight row), k in order.
template <int R, int NB>
__device__ __forceinline__ void dot_word(const bf16 *const xr[NB], int i, const float (&wf)[R][8],
                                         float (&acc)[NB][R]) {
    float xf[8];
#pragma unroll
    for (int b = 0; b < NB; b++) {
        ks_unpack8(__ldcg(reinterpret_cast<const uint4 *>(xr[b]) + i), xf); // past L1: written by the kernel before
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int k = 0; k < 8; k++) acc[b][r] = fmaf(xf[k], wf[r][k], acc[b][r]);
    }
}

// NB: the rows the kernel is compiled for (1, 2, 4, 8 or 16); a launch of n < NB rows computes rows n .. NB - 1 as
// copies of row n - 1 and stores none of them. NB = 1 keeps the main loop unrolled 4 times (the loads of 4 words
// of every weight row in flight: decode at the memory floor); more rows already have that many loads in flight
// per word and would only spill.
template <typename T, bool VEC, int MODE, int R, int NB>
__global__ void __launch_bounds__(kThreads) gemv_kernel(gemv_args<T> a) {
    static_assert(MODE != kSwiglu || R == 2, "a SwiGLU block computes one (gate, up) pair");
    static_assert(MODE != kNorm || NB == 1, "a launch of several rows writes their norms in norm_rows_kernel");
    constexpr int kUnroll = NB == 1 ? 4 : NB == 2 ? 2 : 1;
    __shared__ float part[kThreads / 32][NB][R];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, in = a.in;
    const bf16 *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) wr[r] = a.w + (int64_t)weight_row<MODE, R>(blockIdx.x, r, a.out) * in;
    const bf16 *xr[NB];
#pragma unroll
    for (int b = 0; b < NB; b++) xr[b] = a.x + (int64_t)min(b, a.n - 1) * a.ld_x;
    float acc[NB][R] = {};
    // The weights are constant through a step, so a block's first kPre words of each row are loaded before
    // the wait: a block that starts while the kernel before is finishing (programmatic dependent launch) has
    // its first loads in flight through that kernel's tail instead of after it.
    constexpr int kPre = 2;
    uint4 pre[kPre][R];
    if (VEC) {
#pragma unroll
        for (int p = 0; p < kPre; p++) {
            const int i = threadIdx.x + p * kThreads;
#pragma unroll
            for (int r = 0; r < R; r++)
                pre[p][r] = i < in / 8 ? __ldcs(reinterpret_cast<const uint4 *>(wr[r]) + i) : make_uint4(0, 0, 0, 0);
        }
    }
    ks_pdl_wait();    // x (and y when accumulating) come from the kernels before
    ks_pdl_trigger(); // the next kernel may launch (its blocks then wait in ks_pdl_wait)
    if (VEC) {
        float wf[R][8];
#pragma unroll
        for (int p = 0; p < kPre; p++) {
            const int i = threadIdx.x + p * kThreads;
            if (i >= in / 8) break;
#pragma unroll
            for (int r = 0; r < R; r++) ks_unpack8(pre[p][r], wf[r]);
            dot_word<R, NB>(xr, i, wf, acc);
        }
#pragma unroll kUnroll
        for (int i = threadIdx.x + kPre * kThreads; i < in / 8; i += kThreads) {
#pragma unroll
            for (int r = 0; r < R; r++) ks_unpack8(__ldcs(reinterpret_cast<const uint4 *>(wr[r]) + i), wf[r]); // streamed once
            dot_word<R, NB>(xr, i, wf, acc);
        }
    } else {
        for (int i = threadIdx.x; i < in; i += kThreads) {
            float wf[R];
#pragma unroll
            for (int r = 0; r < R; r++) wf[r] = __bfloat162float(wr[r][i]);
#pragma unroll
            for (int b = 0; b < NB; b++) {
                const float xf = ks_ld_l2(xr[b] + i);
#pragma unroll
                for (int r = 0; r < R; r++) acc[b][r] = fmaf(xf, wf[r], acc[b][r]);
            }
        }
    }
#pragma unroll
    for (int b = 0; b < NB; b++)
#pragma unroll
        for (int r = 0; r < R; r++) {
            float v = ks_warp_sum(acc[b][r]);
            if (lane == 0) part[warp][b][r] = v;
        }
    __syncthreads();
    if (MODE == kSwiglu) {
        const int b = threadIdx.x;
        if (b < a.n && b < NB) {
            float s[2] = {};
#pragma unroll
            for (int k = 0; k < kThreads / 32; k++) s[0] += part[k][b][0], s[1] += part[k][b][1];
            const int r = blockIdx.x;
            const float g = __bfloat162float(__float2bfloat16_rn(s[0]));
            const bf16 u = __float2bfloat16_rn(s[1]);
            ks_st(a.y + b * a.ld_y + r, g / (1.0f + expf(-g)) * __bfloat162float(u));
            a.up[b * a.ld_y + r] = u;
        }
        return;
    }
    const int b = threadIdx.x / R, r = threadIdx.x % R, o = blockIdx.x * R + r;
    if (b < a.n && b < NB && o < a.out) {
        T *y = a.y + b * a.ld_y;
        float v = 0.0f;
#pragma unroll
        for (int k = 0; k < kThreads / 32; k++) v += part[k][b][r];
        if (a.bias) v += ks_ld(a.bias + o);
        if (a.accumulate) v += ks_ld_l2(y + o); // past L1, as x
        ks_st(y + o, v);
    }
    if constexpr (MODE == kNorm && sizeof(T) == sizeof(float))
        if (ks_last_block(a.done)) norm_tail(a.y, a.xn, a.norm_w, a.out, a.eps); // every block's rows visible
}

// xn row b = rmsnorm(y row b) * norm_w, one block per row: the norms of a several-row kNorm, after its GEMV.
__global__ void __launch_bounds__(kThreads) norm_rows_kernel(const float *y, int64_t ld_y, bf16 *xn, int64_t ld_xn,
                                                             const float *norm_w, int out, float eps) {
    ks_pdl_wait(); // y comes from the GEMV before
    ks_pdl_trigger();
    norm_tail(y + blockIdx.x * ld_y, xn + blockIdx.x * ld_xn, norm_w, out, eps);
}

template <typename T, bool VEC, int MODE, int R, int NB>
ks_status launch_block_rows(const gemv_args<T> &a, cudaStream_t s) {
    KS_LAUNCH_PDL(gemv_kernel<T, VEC, MODE, R, NB>, dim3(MODE == kSwiglu ? a.out : ks_cdiv(a.out, R)),
                  dim3(kThreads), 0, s, a);
    return KS_OK;
}

template <typename T, bool VEC, int MODE, int NB>
ks_status launch_batch(const gemv_args<T> &a, cudaStream_t s) {
    if constexpr (MODE == kSwiglu) {
        return launch_block_rows<T, VEC, MODE, 2, NB>(a, s);
    } else {
        return a.out <= kFewRows ? launch_block_rows<T, VEC, MODE, 4, NB>(a, s)
                                 : launch_block_rows<T, VEC, MODE, 2, NB>(a, s);
    }
}

// The smallest compiled row count that holds a.n rows.
template <typename T, bool VEC, int MODE>
ks_status launch_vec(const gemv_args<T> &a, cudaStream_t s) {
    if constexpr (MODE == kNorm) {
        return launch_batch<T, VEC, MODE, 1>(a, s);
    } else {
        if (a.n == 1) return launch_batch<T, VEC, MODE, 1>(a, s);
        if (a.n <= 2) return launch_batch<T, VEC, MODE, 2>(a, s);
        if (a.n <= 4) return launch_batch<T, VEC, MODE, 4>(a, s);
        if (a.n <= 8) return launch_batch<T, VEC, MODE, 8>(a, s);
        return launch_batch<T, VEC, MODE, 16>(a, s);
    }
}

// The 16-byte path when x's rows and W allow it, else the scalar one. A row past the first takes the path a
// one-row launch on it would (the bit-identity above): with 16-byte words, every row must start on one.
template <typename T, int MODE>
ks_status launch(const gemv_args<T> &a, cudaStream_t s) {
    KS_ASSERT(a.n >= 1 && a.n <= KS_CUDA_GEMV_ROWS && a.ld_x >= a.in && (a.n == 1 || a.ld_y >= a.out));
    const bool vec = a.in % 8 == 0 && ((((uintptr_t)a.x | (uintptr_t)a.w) & 15) == 0);
    if (vec && a.n > 1 && a.ld_x % 8)
        return ks_fail(KS_ERR_ARG, "GEMV over %d rows (in = %d): the row stride ld_x = %lld is not a multiple of "
                       "8 elements, so the rows past the first would not start on a 16-byte word and would be "
                       "summed in another order than each row alone (pass 16-byte aligned rows)",
                       a.n, a.in, (long long)a.ld_x);
    return vec ? launch_vec<T, true, MODE>(a, s) : launch_vec<T, false, MODE>(a, s);
}

template <typename T>
gemv_args<T> make_args(T *y, int64_t ld_y, const ks_bf16 *x, int64_t ld_x, const ks_bf16 *w, const T *bias, int n,
                       int in, int out, bool accumulate) {
    gemv_args<T> a = {};
    a.y = y, a.ld_y = ld_y, a.x = reinterpret_cast<const bf16 *>(x), a.ld_x = ld_x;
    a.w = reinterpret_cast<const bf16 *>(w), a.bias = bias, a.n = n, a.in = in, a.out = out;
    a.accumulate = accumulate;
    return a;
}

} // namespace

extern "C" ks_status ks_cuda_gemv(void *y, int64_t ld_y, ks_dtype y_type, const ks_bf16 *x, int64_t ld_x,
                                  const ks_bf16 *w, const void *bias, int n, int in, int out, float beta,
                                  cudaStream_t s) {
    KS_ASSERT(ks_cuda_type_ok(y_type) && (beta == 0.0f || beta == 1.0f));
    if (out <= 0 || n <= 0) return KS_OK;
    if (y_type == KS_DTYPE_F32)
        return launch<float, kPlain>(make_args(static_cast<float *>(y), ld_y, x, ld_x, w,
                                               static_cast<const float *>(bias), n, in, out, beta != 0.0f),
                                     s);
    return launch<bf16, kPlain>(make_args(static_cast<bf16 *>(y), ld_y, x, ld_x, w, static_cast<const bf16 *>(bias),
                                          n, in, out, beta != 0.0f),
                                s);
}

extern "C" ks_status ks_cuda_gemv_swiglu(ks_bf16 *gate, ks_bf16 *up, int64_t ld_gu, const ks_bf16 *x, int64_t ld_x,
                                         const ks_bf16 *w_gu, int n, int in, int F, cudaStream_t s) {
    if (F <= 0 || n <= 0) return KS_OK;
    gemv_args<bf16> a = make_args<bf16>(reinterpret_cast<bf16 *>(gate), ld_gu, x, ld_x, w_gu, NULL, n, in, F, false);
    a.up = reinterpret_cast<bf16 *>(up);
    return launch<bf16, kSwiglu>(a, s);
}

extern "C" ks_status ks_cuda_gemv_norm(float *y, int64_t ld_y, const ks_bf16 *x, int64_t ld_x, const ks_bf16 *w,
                                       const float *bias, int n, int in, int out, float beta, ks_bf16 *xn,
                                       int64_t ld_xn, const float *norm_w, float eps, unsigned *done,
                                       cudaStream_t s) {
    KS_ASSERT(beta == 0.0f || beta == 1.0f);
    if (out <= 0 || n <= 0) return KS_OK;
    gemv_args<float> a = make_args(y, ld_y, x, ld_x, w, bias, n, in, out, beta != 0.0f);
    bf16 *xnb = reinterpret_cast<bf16 *>(xn);
    if (n == 1) { // the last block writes the norm: no launch for it
        a.xn = xnb, a.norm_w = norm_w, a.eps = eps, a.done = done;
        return launch<float, kNorm>(a, s);
    }
    // several rows: the last block would take the rows' tails one after another; one block per row instead
    KS_ASSERT(ld_xn >= out);
    KS_TRY((launch<float, kPlain>(a, s)));
    KS_LAUNCH_PDL(norm_rows_kernel, dim3(n), dim3(kThreads), 0, s, (const float *)y, ld_y, xnb, ld_xn, norm_w, out,
                  eps);
    return KS_OK;
}
