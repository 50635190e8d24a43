// convert.cu — fp32 <-> bf16 conversion of contiguous arrays (weight upload, activations for the tests).
#include "common.cuh"

// Each thread converts 8 consecutive elements: 16-byte bf16 and 2x16-byte fp32 accesses when both pointers
// allow it, scalar otherwise and for the tail.
template <bool VEC>
__global__ void f32_to_bf16_kernel(bf16 *out, const float *in, int64_t n) {
    for (int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8; i < n;
         i += (int64_t)gridDim.x * blockDim.x * 8) {
        if (VEC && i + 8 <= n) {
            float4 a = *reinterpret_cast<const float4 *>(in + i), b = *reinterpret_cast<const float4 *>(in + i + 4);
            float f[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
            *reinterpret_cast<uint4 *>(out + i) = ks_pack8(f);
        } else {
            for (int64_t j = i; j < i + 8 && j < n; j++) out[j] = __float2bfloat16_rn(in[j]);
        }
    }
}

template <bool VEC>
__global__ void bf16_to_f32_kernel(float *out, const bf16 *in, int64_t n) {
    for (int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8; i < n;
         i += (int64_t)gridDim.x * blockDim.x * 8) {
        if (VEC && i + 8 <= n) {
            float f[8];
            ks_unpack8(*reinterpret_cast<const uint4 *>(in + i), f);
            *reinterpret_cast<float4 *>(out + i) = make_float4(f[0], f[1], f[2], f[3]);
            *reinterpret_cast<float4 *>(out + i + 4) = make_float4(f[4], f[5], f[6], f[7]);
        } else {
            for (int64_t j = i; j < i + 8 && j < n; j++) out[j] = __bfloat162float(in[j]);
        }
    }
}

static int grid_for(int64_t n) {
    int64_t blocks = (n + 256 * 8 - 1) / (256 * 8);
    return (int)(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096);
}

static bool aligned16(const void *a, const void *b) { return (((uintptr_t)a | (uintptr_t)b) & 15) == 0; }

extern "C" ks_status ks_cuda_f32_to_bf16(ks_bf16 *out, const float *in, int64_t n, cudaStream_t s) {
    if (n <= 0) return KS_OK;
    bf16 *o = reinterpret_cast<bf16 *>(out);
    if (aligned16(out, in))
        f32_to_bf16_kernel<true><<<grid_for(n), 256, 0, s>>>(o, in, n);
    else
        f32_to_bf16_kernel<false><<<grid_for(n), 256, 0, s>>>(o, in, n);
    KS_LAUNCH_CHECK();
    return KS_OK;
}

extern "C" ks_status ks_cuda_bf16_to_f32(float *out, const ks_bf16 *in, int64_t n, cudaStream_t s) {
    if (n <= 0) return KS_OK;
    const bf16 *i = reinterpret_cast<const bf16 *>(in);
    if (aligned16(out, in))
        bf16_to_f32_kernel<true><<<grid_for(n), 256, 0, s>>>(out, i, n);
    else
        bf16_to_f32_kernel<false><<<grid_for(n), 256, 0, s>>>(out, i, n);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
