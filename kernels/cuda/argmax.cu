// argmax.cu — greedy sampling: the index of the largest logit per row, in two passes so that a 128K-entry
// vocabulary row is read by many blocks at once.
#include <limits.h>

#include "common.cuh"

// A candidate (value, index); NaN is stored as -inf so it never wins; ties go to the lower index.
struct cand {
    float v;
    int i;
};
__device__ __forceinline__ cand better(cand a, cand b) {
    return (a.v > b.v || (a.v == b.v && a.i < b.i)) ? a : b;
}
__device__ __forceinline__ cand warp_best(cand c) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        cand d = {__shfl_xor_sync(0xffffffffu, c.v, o), __shfl_xor_sync(0xffffffffu, c.i, o)};
        c = better(c, d);
    }
    return c;
}
// Best over the block (blockDim.x a multiple of 32); thread 0 holds the result.
__device__ cand block_best(cand c) {
    __shared__ cand red[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    c = warp_best(c);
    if (lane == 0) red[warp] = c;
    __syncthreads();
    if (warp == 0) {
        c = lane < (int)(blockDim.x >> 5) ? red[lane] : cand{-INFINITY, INT_MAX};
        c = warp_best(c);
    }
    return c;
}

static const int kThreads = 256, kPerBlock = kThreads * 16;

static int blocks_per_row(int n) { return ks_cdiv(n, kPerBlock); }

// Pass 1: block (b, r) scans its segment of row r and writes one candidate to part[r * nb + b].
__global__ void argmax_partial_kernel(cand *part, const float *x, int n, int nb) {
    ks_pdl_wait(); // both passes are launched with ks_launch_pdl
    ks_pdl_trigger();
    const float *row = x + (int64_t)blockIdx.y * n;
    int lo = blockIdx.x * kPerBlock, hi = min(n, lo + kPerBlock);
    cand c = {-INFINITY, INT_MAX};
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        float v = row[i];
        c = better(c, cand{isnan(v) ? -INFINITY : v, i});
    }
    c = block_best(c);
    if (threadIdx.x == 0) part[(int64_t)blockIdx.y * nb + blockIdx.x] = c;
}

// Pass 2: one block per row reduces its nb candidates. A row of only NaN yields index 0.
__global__ void argmax_final_kernel(int32_t *out, const cand *part, int nb) {
    ks_pdl_wait();
    ks_pdl_trigger();
    cand c = {-INFINITY, INT_MAX};
    for (int b = threadIdx.x; b < nb; b += blockDim.x) c = better(c, part[(int64_t)blockIdx.x * nb + b]);
    c = block_best(c);
    if (threadIdx.x == 0) out[blockIdx.x] = c.i == INT_MAX ? 0 : c.i;
}

extern "C" size_t ks_cuda_argmax_scratch_bytes(int rows, int n) {
    return (size_t)rows * blocks_per_row(n) * sizeof(cand);
}

extern "C" ks_status ks_cuda_argmax(int32_t *out, const float *x, int rows, int n, void *scratch, cudaStream_t s) {
    KS_ASSERT(n > 0 && rows <= 65535);
    if (rows <= 0) return KS_OK;
    int nb = blocks_per_row(n);
    cand *part = static_cast<cand *>(scratch);
    KS_LAUNCH_PDL(argmax_partial_kernel, dim3(nb, rows), dim3(kThreads), 0, s, part, x, n, nb);
    KS_LAUNCH_PDL(argmax_final_kernel, dim3(rows), dim3(nb >= 128 ? 128 : 32), 0, s, out, part, nb);
    return KS_OK;
}
