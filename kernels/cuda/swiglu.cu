// swiglu.cu — the MLP gate: out (rows, F) = silu(gate) * up, bf16 in and out, fp32 arithmetic.
#include "common.cuh"

// Grid (column blocks, row blocks): no division per element; rows of a fused gate|up buffer are strided.
__global__ void swiglu_kernel(bf16 *out, const bf16 *gate, const bf16 *up, int rows, int F, int64_t ld_in) {
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < F; i += gridDim.x * blockDim.x) {
            float g = __bfloat162float(gate[r * ld_in + i]), u = __bfloat162float(up[r * ld_in + i]);
            out[r * F + i] = __float2bfloat16_rn(g / (1.0f + expf(-g)) * u);
        }
}

extern "C" ks_status ks_cuda_swiglu(ks_bf16 *out, const ks_bf16 *gate, const ks_bf16 *up, int rows, int F,
                                    int64_t ld_in, cudaStream_t s) {
    if (rows <= 0 || F <= 0) return KS_OK;
    int bx = ks_cdiv(F, 256);
    dim3 grid(bx < 64 ? bx : 64, rows < 65535 ? rows : 65535);
    swiglu_kernel<<<grid, 256, 0, s>>>(reinterpret_cast<bf16 *>(out), reinterpret_cast<const bf16 *>(gate),
                                       reinterpret_cast<const bf16 *>(up), rows, F, ld_in);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
