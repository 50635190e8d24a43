// add.cu — the residual add y += x (x fp32 or bf16) over a contiguous array.
#include "common.cuh"

template <typename T>
__global__ void add_kernel(float *y, const T *x, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] += ks_ld(x + i);
}

extern "C" ks_status ks_cuda_add(float *y, const void *x, ks_dtype x_type, int64_t n, cudaStream_t s) {
    KS_ASSERT(ks_cuda_type_ok(x_type));
    if (n <= 0) return KS_OK;
    int64_t b = (n + 255) / 256;
    int grid = (int)(b < 8192 ? b : 8192);
    if (x_type == KS_DTYPE_F32)
        add_kernel<<<grid, 256, 0, s>>>(y, static_cast<const float *>(x), n);
    else
        add_kernel<<<grid, 256, 0, s>>>(y, static_cast<const bf16 *>(x), n);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
