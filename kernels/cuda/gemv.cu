// gemv.cu — y (out) = W (out, in) x (+ bias) (+ y) for a single token: the decode step's projections, plain or
// with the small op that follows them in a layer fused in (SwiGLU after gate|up, RMSNorm after a residual add).
// cuBLASLt's n = 1 kernels read the weights at 1.5-3.5 TB/s depending on the shape (docs/kernels.md);
// this one streams each weight row once with 16-byte loads, for every shape.
#include "common.cuh"

namespace {

// A block of 8 warps computes R outputs; its 256 threads split the `in` dimension (16-byte words,
// consecutive threads on consecutive words), each with the loads of R rows in flight at once; the partial
// sums meet in shared memory. R = 4 for matrices of up to kFewRows rows (a decode layer's q|k|v, o and down:
// one wave of blocks instead of two or three waves of 2-row blocks, whose turnover cost ~7% of their time,
// docs/kernels.md), R = 2 above (gate|up, the LM head: long enough that waves do not matter).
constexpr int kThreads = 256, kFewRows = 16384;

// What happens to the R sums of a block.
enum Mode {
    kPlain,  // y[o] = sum (+ bias[o]) (+ y[o])
    kSwiglu, // the block's two rows are gate row r and up row F + r of a stacked gate|up W: y[r] = silu(g) * u,
             // up[r] = u, with g and u rounded to bf16 first, as separate GEMV and SwiGLU kernels would
    kNorm,   // kPlain into the fp32 residual y, then the last block to finish writes xn = rmsnorm(y) * norm_w
};

template <typename T>
struct gemv_args {
    T *y;
    const bf16 *x, *w;
    const T *bias;
    int in, out; // kSwiglu: out = F (the grid), W has 2F rows
    bool accumulate;
    bf16 *up;                 // kSwiglu: (F) the up projection
    bf16 *xn;                 // kNorm: (out) the normalised residual
    const float *norm_w;      // kNorm: (out)
    float eps;                // kNorm
    unsigned *done;           // kNorm: blocks finished; 0 before the launch, reset to 0 by the last block
};

// Row r of the block's R: the weight row it reads.
template <int MODE, int R>
__device__ __forceinline__ int weight_row(int blk, int r, int out) {
    return MODE == kSwiglu ? blk + r * out : min(blk * R + r, out - 1); // clamp: no OOB past the last row
}

// The last block of a kNorm launch: xn = y * w / sqrt(mean(y^2) + eps) over all `out` rows (ks_cuda_rmsnorm's
// arithmetic). y is read past L1 (__ldcg): other blocks wrote it, and this block's L1 may hold stale lines.
// The tail is serial work after the GEMV, so its loads are issued kTail at a time per thread, not one by one.
__device__ void norm_tail(const gemv_args<float> &a) {
    constexpr int kTail = 16;
    __shared__ float red[32];
    float ss = 0.0f;
    for (int base = 0; base < a.out; base += kThreads * kTail) {
        float v[kTail];
#pragma unroll
        for (int k = 0; k < kTail; k++) {
            const int i = base + k * kThreads + threadIdx.x;
            v[k] = i < a.out ? __ldcg(a.y + i) : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < kTail; k++) ss += v[k] * v[k];
    }
    ss = ks_block_sum(ss, red);
    const float inv = rsqrtf(ss / a.out + a.eps);
    for (int base = 0; base < a.out; base += kThreads * kTail) {
        float v[kTail], w[kTail];
#pragma unroll
        for (int k = 0; k < kTail; k++) {
            const int i = base + k * kThreads + threadIdx.x;
            v[k] = i < a.out ? __ldcg(a.y + i) : 0.0f;
            w[k] = i < a.out ? a.norm_w[i] : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < kTail; k++) {
            const int i = base + k * kThreads + threadIdx.x;
            if (i < a.out) a.xn[i] = __float2bfloat16_rn(v[k] * inv * w[k]);
        }
    }
    if (threadIdx.x == 0) *a.done = 0; // ready for the next launch (ordered after this grid by the stream)
}

template <typename T, bool VEC, int MODE, int R>
__global__ void __launch_bounds__(kThreads) gemv_kernel(gemv_args<T> a) {
    static_assert(MODE != kSwiglu || R == 2, "a SwiGLU block computes one (gate, up) pair");
    __shared__ float part[kThreads / 32][R];
    __shared__ bool last;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, in = a.in;
    const bf16 *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) wr[r] = a.w + (int64_t)weight_row<MODE, R>(blockIdx.x, r, a.out) * in;
    float acc[R] = {};
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
        const uint4 *x4 = reinterpret_cast<const uint4 *>(a.x);
        float xf[8], wf[8];
#pragma unroll
        for (int p = 0; p < kPre; p++) {
            const int i = threadIdx.x + p * kThreads;
            if (i >= in / 8) break;
            ks_unpack8(__ldcg(x4 + i), xf); // past L1: x was written by the kernel just before
#pragma unroll
            for (int r = 0; r < R; r++) {
                ks_unpack8(pre[p][r], wf);
#pragma unroll
                for (int k = 0; k < 8; k++) acc[r] = fmaf(xf[k], wf[k], acc[r]);
            }
        }
#pragma unroll 4
        for (int i = threadIdx.x + kPre * kThreads; i < in / 8; i += kThreads) {
            ks_unpack8(__ldcg(x4 + i), xf);
#pragma unroll
            for (int r = 0; r < R; r++) {
                ks_unpack8(__ldcs(reinterpret_cast<const uint4 *>(wr[r]) + i), wf); // streamed once
#pragma unroll
                for (int k = 0; k < 8; k++) acc[r] = fmaf(xf[k], wf[k], acc[r]);
            }
        }
    } else {
        for (int i = threadIdx.x; i < in; i += kThreads) {
            float xf = ks_ld_l2(a.x + i);
#pragma unroll
            for (int r = 0; r < R; r++) acc[r] = fmaf(xf, __bfloat162float(wr[r][i]), acc[r]);
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        float v = ks_warp_sum(acc[r]);
        if (lane == 0) part[warp][r] = v;
    }
    __syncthreads();
    if (MODE == kSwiglu) {
        if (threadIdx.x == 0) {
            float s[2] = {};
#pragma unroll
            for (int k = 0; k < kThreads / 32; k++) s[0] += part[k][0], s[1] += part[k][1];
            const int r = blockIdx.x;
            const float g = __bfloat162float(__float2bfloat16_rn(s[0]));
            const bf16 u = __float2bfloat16_rn(s[1]);
            ks_st(a.y + r, g / (1.0f + expf(-g)) * __bfloat162float(u));
            a.up[r] = u;
        }
        return;
    }
    const int o = blockIdx.x * R + threadIdx.x;
    if (threadIdx.x < R && o < a.out) {
        float v = 0.0f;
#pragma unroll
        for (int k = 0; k < kThreads / 32; k++) v += part[k][threadIdx.x];
        if (a.bias) v += ks_ld(a.bias + o);
        if (a.accumulate) v += ks_ld_l2(a.y + o); // past L1, as x
        ks_st(a.y + o, v);
    }
    if (MODE == kNorm) {
        // the classic last-block reduction: publish this block's rows, count it, and let the last one see all
        __threadfence();
        __syncthreads();
        if (threadIdx.x == 0) last = atomicAdd(a.done, 1u) == gridDim.x - 1;
        __syncthreads();
        if (last) {
            __threadfence();
            if constexpr (sizeof(T) == sizeof(float)) norm_tail(a);
        }
    }
}

template <typename T, bool VEC, int MODE, int R>
ks_status launch_rows(const gemv_args<T> &a, cudaStream_t s) {
    KS_LAUNCH_PDL(gemv_kernel<T, VEC, MODE, R>, dim3(MODE == kSwiglu ? a.out : ks_cdiv(a.out, R)), dim3(kThreads), 0, s,
                  a);
    return KS_OK;
}

template <typename T, bool VEC, int MODE>
ks_status launch_vec(const gemv_args<T> &a, cudaStream_t s) {
    if constexpr (MODE == kSwiglu) {
        return launch_rows<T, VEC, MODE, 2>(a, s);
    } else {
        return a.out <= kFewRows ? launch_rows<T, VEC, MODE, 4>(a, s) : launch_rows<T, VEC, MODE, 2>(a, s);
    }
}

template <typename T, int MODE>
ks_status launch(const gemv_args<T> &a, cudaStream_t s) {
    const bool vec = a.in % 8 == 0 && ((((uintptr_t)a.x | (uintptr_t)a.w) & 15) == 0);
    return vec ? launch_vec<T, true, MODE>(a, s) : launch_vec<T, false, MODE>(a, s);
}

} // namespace

extern "C" ks_status ks_cuda_gemv(void *y, ks_dtype y_type, const ks_bf16 *x, const ks_bf16 *w, const void *bias,
                                  int in, int out, float beta, cudaStream_t s) {
    KS_ASSERT(ks_cuda_type_ok(y_type) && (beta == 0.0f || beta == 1.0f));
    if (out <= 0) return KS_OK;
    const bf16 *xb = reinterpret_cast<const bf16 *>(x), *wb = reinterpret_cast<const bf16 *>(w);
    if (y_type == KS_DTYPE_F32) {
        gemv_args<float> a = {static_cast<float *>(y), xb, wb, static_cast<const float *>(bias), in, out, beta != 0.0f};
        return launch<float, kPlain>(a, s);
    }
    gemv_args<bf16> a = {static_cast<bf16 *>(y), xb, wb, static_cast<const bf16 *>(bias), in, out, beta != 0.0f};
    return launch<bf16, kPlain>(a, s);
}

extern "C" ks_status ks_cuda_gemv_swiglu(ks_bf16 *gate, ks_bf16 *up, const ks_bf16 *x, const ks_bf16 *w_gu, int in,
                                         int F, cudaStream_t s) {
    if (F <= 0) return KS_OK;
    gemv_args<bf16> a = {reinterpret_cast<bf16 *>(gate), reinterpret_cast<const bf16 *>(x),
                         reinterpret_cast<const bf16 *>(w_gu), NULL, in, F, false};
    a.up = reinterpret_cast<bf16 *>(up);
    return launch<bf16, kSwiglu>(a, s);
}

extern "C" ks_status ks_cuda_gemv_norm(float *y, const ks_bf16 *x, const ks_bf16 *w, const float *bias, int in, int out,
                                       float beta, ks_bf16 *xn, const float *norm_w, float eps, unsigned *done,
                                       cudaStream_t s) {
    KS_ASSERT(beta == 0.0f || beta == 1.0f);
    if (out <= 0) return KS_OK;
    gemv_args<float> a = {y, reinterpret_cast<const bf16 *>(x), reinterpret_cast<const bf16 *>(w), bias, in, out,
                          beta != 0.0f};
    a.xn = reinterpret_cast<bf16 *>(xn), a.norm_w = norm_w, a.eps = eps, a.done = done;
    return launch<float, kNorm>(a, s);
}
