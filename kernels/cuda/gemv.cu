// gemv.cu — y (out) = W (out, in) x (+ bias) (+ y) for a single token: the decode step's projections.
// cuBLASLt's n = 1 kernels read the weights at 1.5-3.5 TB/s depending on the shape (docs/gpu-notes.md);
// this one streams each weight row once with 16-byte loads, for every shape.
#include "common.cuh"

namespace {

// A block of 8 warps computes kRows outputs; its 256 threads split the `in` dimension (16-byte words,
// consecutive threads on consecutive words), so even a 4096-row matrix spreads over thousands of warps,
// each with all of its loads in flight at once; the partial sums meet in shared memory.
constexpr int kThreads = 256, kRows = 2;

template <typename T, bool VEC>
__global__ void __launch_bounds__(kThreads) gemv_kernel(T *y, const bf16 *x, const bf16 *w, const T *bias, int in,
                                                         int out, bool accumulate) {
    __shared__ float part[kThreads / 32][kRows];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, row0 = blockIdx.x * kRows;
    const bf16 *wr[kRows];
#pragma unroll
    for (int r = 0; r < kRows; r++) wr[r] = w + (int64_t)min(row0 + r, out - 1) * in; // clamp: no OOB
    float acc[kRows] = {};
    if (VEC) {
        const uint4 *x4 = reinterpret_cast<const uint4 *>(x);
#pragma unroll 4
        for (int i = threadIdx.x; i < in / 8; i += kThreads) {
            float xf[8], wf[8];
            ks_unpack8(__ldg(x4 + i), xf);
#pragma unroll
            for (int r = 0; r < kRows; r++) {
                ks_unpack8(__ldcs(reinterpret_cast<const uint4 *>(wr[r]) + i), wf); // streamed once
#pragma unroll
                for (int k = 0; k < 8; k++) acc[r] = fmaf(xf[k], wf[k], acc[r]);
            }
        }
    } else {
        for (int i = threadIdx.x; i < in; i += kThreads) {
            float xf = __bfloat162float(x[i]);
#pragma unroll
            for (int r = 0; r < kRows; r++) acc[r] = fmaf(xf, __bfloat162float(wr[r][i]), acc[r]);
        }
    }
#pragma unroll
    for (int r = 0; r < kRows; r++) {
        float v = ks_warp_sum(acc[r]);
        if (lane == 0) part[warp][r] = v;
    }
    __syncthreads();
    if (threadIdx.x < kRows && row0 + (int)threadIdx.x < out) {
        const int o = row0 + threadIdx.x;
        float v = 0.0f;
#pragma unroll
        for (int k = 0; k < kThreads / 32; k++) v += part[k][threadIdx.x];
        if (bias) v += ks_ld(bias + o);
        if (accumulate) v += ks_ld(y + o);
        ks_st(y + o, v);
    }
}

template <typename T>
void launch(T *y, const bf16 *x, const bf16 *w, const T *bias, int in, int out, bool accumulate, cudaStream_t s) {
    const int blocks = ks_cdiv(out, kRows);
    const bool vec = in % 8 == 0 && ((((uintptr_t)x | (uintptr_t)w) & 15) == 0);
    if (vec)
        gemv_kernel<T, true><<<blocks, kThreads, 0, s>>>(y, x, w, bias, in, out, accumulate);
    else
        gemv_kernel<T, false><<<blocks, kThreads, 0, s>>>(y, x, w, bias, in, out, accumulate);
}

} // namespace

extern "C" ks_status ks_cuda_gemv(void *y, ks_dtype y_type, const ks_bf16 *x, const ks_bf16 *w, const void *bias,
                                  int in, int out, float beta, cudaStream_t s) {
    KS_ASSERT(ks_cuda_type_ok(y_type) && (beta == 0.0f || beta == 1.0f));
    if (out <= 0) return KS_OK;
    const bf16 *xb = reinterpret_cast<const bf16 *>(x), *wb = reinterpret_cast<const bf16 *>(w);
    if (y_type == KS_DTYPE_F32)
        launch(static_cast<float *>(y), xb, wb, static_cast<const float *>(bias), in, out, beta != 0.0f, s);
    else
        launch(static_cast<bf16 *>(y), xb, wb, static_cast<const bf16 *>(bias), in, out, beta != 0.0f, s);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
