// kv_compact.cu — physical compaction of one layer's head-major cache (ks_cuda_methods.h: ks_cuda_kv_compact;
// reference ks_ref_kv_compact): the kept rows are gathered into a scratch cache, copied back to the front,
// and the device lengths set to the counts. Rows move as 16-byte words, one warp per row.
#include "cuda/common.cuh"
#include "cuda/ks_cuda_methods.h"

namespace {

constexpr int ROW_WARPS = 8;

// dst row i of head g = src row (idx ? idx[g * ld + i] : i), for i < count[g].
__global__ void copy_rows_kernel(bf16 *dst, const bf16 *src, const int32_t *idx, const int32_t *count, int ld, int d,
                                 int cap) {
    const int g = blockIdx.y, i = blockIdx.x * ROW_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (i >= count[g]) return;
    const int from = idx ? idx[(int64_t)g * ld + i] : i;
    const uint4 *s = reinterpret_cast<const uint4 *>(src + ((int64_t)g * cap + from) * d);
    uint4 *t = reinterpret_cast<uint4 *>(dst + ((int64_t)g * cap + i) * d);
    for (int c = lane; c < d / 8; c += 32) t[c] = s[c];
}

__global__ void set_lens_kernel(int32_t *lens, const int32_t *count, int Hk) {
    int g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g < Hk) lens[g] = count[g];
}

ks_status gather(bf16 *cache, bf16 *scratch, const int32_t *idx, const int32_t *count, int ld, int Hk, int d, int cap,
                 int max_keep, cudaStream_t s) {
    dim3 grid(ks_cdiv(max_keep, ROW_WARPS), Hk);
    copy_rows_kernel<<<grid, ROW_WARPS * 32, 0, s>>>(scratch, cache, idx, count, ld, d, cap);
    KS_LAUNCH_CHECK();
    copy_rows_kernel<<<grid, ROW_WARPS * 32, 0, s>>>(cache, scratch, NULL, count, ld, d, cap);
    KS_LAUNCH_CHECK();
    return KS_OK;
}

} // namespace

extern "C" ks_status ks_cuda_kv_compact(ks_bf16 *kc, ks_bf16 *vc, int32_t *lens, const int32_t *idx, int ld, int Hk,
                                        int d, int cap, int max_keep, ks_bf16 *scratch, cudaStream_t s) {
    KS_ASSERT(d % 8 == 0 && ((uintptr_t)kc | (uintptr_t)vc | (uintptr_t)scratch) % 16 == 0 && ld <= cap &&
              max_keep <= ld);
    const int32_t *count = idx + (int64_t)Hk * ld;
    if (max_keep > 0) {
        KS_TRY(gather(reinterpret_cast<bf16 *>(kc), reinterpret_cast<bf16 *>(scratch), idx, count, ld, Hk, d, cap,
                      max_keep, s));
        KS_TRY(gather(reinterpret_cast<bf16 *>(vc), reinterpret_cast<bf16 *>(scratch), idx, count, ld, Hk, d, cap,
                      max_keep, s));
    }
    set_lens_kernel<<<ks_cdiv(Hk, 32), 32, 0, s>>>(lens, count, Hk);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
