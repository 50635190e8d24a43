// channel_scores.cu — ThinK's query-driven channel scores (ks_cuda_methods.h: ks_cuda_channel_scores; reference
// ks_ref_channel_scores). One block per (query head, 32 channels): each warp sums the squares of every eighth
// query row and then every eighth key row of the head's KV head, a lane per channel (64-byte row segments), and
// the warps' partial sums are added in warp order, so the result does not depend on scheduling.
#include "cuda/common.cuh"
#include "cuda/ks_cuda_methods.h"

namespace {

constexpr int CS_WARPS = 8;

__global__ void channel_scores_kernel(float *out, int64_t ld, const bf16 *q, int64_t ld_q, int n_q, const bf16 *kc,
                                      const int32_t *lens, int H, int Hk, int d, int cap) {
    const int i = blockIdx.x, g = i / (H / Hk), warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int c = blockIdx.y * 32 + lane;
    const int len = lens[g];
    float qs = 0.0f, ks = 0.0f;
    if (c < d) {
        for (int r = warp; r < n_q; r += CS_WARPS) {
            float x = __bfloat162float(q[(int64_t)r * ld_q + (int64_t)i * d + c]);
            qs += x * x;
        }
        const bf16 *k = kc + (int64_t)g * cap * d + c;
        for (int j = warp; j < len; j += CS_WARPS) {
            float x = __bfloat162float(k[(int64_t)j * d]);
            ks += x * x;
        }
    }
    __shared__ float part[2][CS_WARPS][32];
    part[0][warp][lane] = qs;
    part[1][warp][lane] = ks;
    __syncthreads();
    if (warp || c >= d) return;
    float qt = 0.0f, kt = 0.0f;
    for (int w = 0; w < CS_WARPS; w++) qt += part[0][w][lane], kt += part[1][w][lane];
    out[(int64_t)i * ld + c] = n_q > 0 && len > 0 ? (qt / n_q) * (kt / len) : 0.0f;
}

} // namespace

extern "C" ks_status ks_cuda_channel_scores(float *out, int64_t ld, const ks_bf16 *q, int64_t ld_q, int n_q,
                                            const ks_bf16 *kc, const int32_t *lens, int H, int Hk, int d, int cap,
                                            cudaStream_t s) {
    KS_ASSERT(n_q > 0 && H % Hk == 0 && d <= ld);
    dim3 grid(H, ks_cdiv(d, 32));
    channel_scores_kernel<<<grid, CS_WARPS * 32, 0, s>>>(out, ld, reinterpret_cast<const bf16 *>(q), ld_q, n_q,
                                                         reinterpret_cast<const bf16 *>(kc), lens, H, Hk, d, cap);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
