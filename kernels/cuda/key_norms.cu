// key_norms.cu — the L2 norm of every held key row (ks_cuda_methods.h: ks_cuda_key_norms; reference
// ks_ref_key_norms): one warp per row, 16-byte loads, fp32 sums.
#include "cuda/common.cuh"
#include "cuda/ks_cuda_methods.h"

namespace {

constexpr int NORM_WARPS = 8;

__global__ void key_norms_kernel(float *out, int64_t ld, const bf16 *kc, const int32_t *lens, int d, int cap) {
    const int g = blockIdx.y, j = blockIdx.x * NORM_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (j >= lens[g]) return; // whole warps leave together
    const uint4 *r = reinterpret_cast<const uint4 *>(kc + ((int64_t)g * cap + j) * d);
    float ss = 0.0f;
    for (int c = lane; c < d / 8; c += 32) {
        float f[8];
        ks_unpack8(r[c], f);
#pragma unroll
        for (int e = 0; e < 8; e++) ss += f[e] * f[e];
    }
    ss = ks_warp_sum(ss);
    if (lane == 0) out[(int64_t)g * ld + j] = sqrtf(ss);
}

} // namespace

extern "C" ks_status ks_cuda_key_norms(float *out, int64_t ld, const ks_bf16 *kc, const int32_t *lens, int Hk, int d,
                                       int cap, int max_len, cudaStream_t s) {
    KS_ASSERT(d % 8 == 0 && (uintptr_t)kc % 16 == 0 && max_len <= ld && max_len <= cap);
    if (max_len <= 0) return KS_OK;
    dim3 grid(ks_cdiv(max_len, NORM_WARPS), Hk);
    key_norms_kernel<<<grid, NORM_WARPS * 32, 0, s>>>(out, ld, reinterpret_cast<const bf16 *>(kc), lens, d, cap);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
