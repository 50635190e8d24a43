// kv_merge.cu — value merging of one layer (ks_cuda_methods.h: ks_cuda_v_merge; reference ks_ref_v_merge), in
// place. The reference's row-by-row form: row j's value is its own plus, in list order, weight * V[src] of the
// entries with src < j <= src + span, where V[src] is final by then (every entry adding to it comes earlier), so
// each channel is one thread walking its head's rows in order, reading sources it has already written, and the
// channels are independent: a warp per 32 channels of a KV head. The walk is sequential (a row's sources are the
// rows just finalised), so its time is about one memory latency per row the entries reach.
#include "cuda/common.cuh"
#include "cuda/ks_cuda_methods.h"

namespace {

constexpr int MERGE_LANES = 32;

__device__ __forceinline__ double warp_sum_double(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

// Rows lo .. hi - 1 of head g, channel c: merged; their squares before (v_sq) and of the changes (dv_sq) summed.
__global__ void v_merge_kernel(bf16 *vc, const ks_merge *list, const int32_t *count, int ld, int span,
                               const int32_t *lens, int d, int cap, double *norms) {
    const int g = blockIdx.y, c = blockIdx.x * MERGE_LANES + threadIdx.x;
    const ks_merge *e = list + (int64_t)g * ld;
    const int n = count[g], len = lens[g];
    bf16 *v = vc + (int64_t)g * cap * d;
    double v_sq = 0, dv_sq = 0;
    if (c < d && (n > 0 || norms)) {
        // without norms only the rows an entry reaches: (first source, last source + span]
        const int first = norms || n == 0 ? 0 : e[0].src + 1;
        const int last = norms || n == 0 ? len : min(len, e[n - 1].src + span + 1);
        int lo = 0;
        for (int j = first; j < last; j++) {
            while (lo < n && e[lo].src + span < j) lo++;
            const float x0 = ks_ld(v + (int64_t)j * d + c);
            float x = x0;
            for (int k = lo; k < n && e[k].src < j; k++) // no fused multiply-add: the reference's roundings
                x = __fadd_rn(x, __fmul_rn(e[k].weight, ks_ld(v + (int64_t)e[k].src * d + c)));
            const float stored = x != x0 ? __bfloat162float(__float2bfloat16_rn(x)) : x0;
            if (x != x0) ks_st(v + (int64_t)j * d + c, stored);
            v_sq += (double)x0 * x0;
            dv_sq += (double)(stored - x0) * (stored - x0);
        }
    }
    if (!norms) return;
    v_sq = warp_sum_double(v_sq), dv_sq = warp_sum_double(dv_sq);
    if (threadIdx.x == 0) atomicAdd(norms, v_sq), atomicAdd(norms + 1, dv_sq);
}

} // namespace

extern "C" ks_status ks_cuda_v_merge(ks_bf16 *vc, const ks_merge *list, const int32_t *count, int ld, int span,
                                     const int32_t *lens, int Hk, int d, int cap, double *norms, cudaStream_t s) {
    KS_ASSERT(span > 0 && ld <= cap && d > 0);
    dim3 grid(ks_cdiv(d, MERGE_LANES), Hk);
    v_merge_kernel<<<grid, MERGE_LANES, 0, s>>>(reinterpret_cast<bf16 *>(vc), list, count, ld, span, lens, d, cap,
                                                norms);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
