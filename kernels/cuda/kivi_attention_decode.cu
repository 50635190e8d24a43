// kivi_attention_decode.cu — decode attention over KIVI's packed tokens and the full-precision rows
// (ks_cuda_kivi.h: ks_cuda_kivi_attention_decode; reference ks_kivi_attention_decode), flash-decoding style: the
// tokens of each head are split over a fixed number of blocks (from max_n, so the grid does not depend on the
// device-side counts), each block of DEC_WARPS warps streams its tokens once, a warp per token at a time: its
// lanes hold the query and the accumulator for channels lane, lane + 32, ..., dequantize the key (packed:
// the code of each stored channel, its group's fp16 scale and zero; raw: the stored bf16 bits; channels not
// stored count 0) or read the bf16 row, reduce the dot product
// over the warp, keep an online softmax, and add the dequantized or bf16 value. The warps' partials merge in
// shared memory into one (O, max, sum) per block, and a combine kernel merges the blocks.
#include "cuda/common.cuh"
#include "cuda/ks_cuda_kivi.h"

namespace {

constexpr int DEC_WARPS = 4, MAX_PER_LANE = 8, SPLIT_TOKENS = 256, MAX_SPLITS = 64;

int splits_for(int max_n) {
    int s = ks_cdiv(max_n > 0 ? max_n : 1, SPLIT_TOKENS);
    return s < MAX_SPLITS ? s : MAX_SPLITS;
}

// Token t's key channel of stored index i (packed) of head g.
__device__ __forceinline__ float packed_key(const ks_cuda_kivi_layer &L, int g, int i, int t) {
    const ks_kivi_shape &S = L.shape;
    const int64_t ch = (int64_t)g * S.d + i, gi = ch * S.k_groups + t / S.group;
    if (S.k_bits == KS_KIVI_RAW_BF16) return ks_kivi_raw_get(L.k_codes + ch * S.k_words, t, S.k_bits);
    const unsigned q = ks_kivi_code(L.k_codes + ch * S.k_words, t, S.k_bits);
    return ks_kivi_dequantize(q, ks_kivi_float(L.k_scale[gi]), ks_kivi_float(L.k_zero[gi]));
}

// Token t's value channel c (packed) of head g.
__device__ __forceinline__ float packed_value(const ks_cuda_kivi_layer &L, int g, int c, int t) {
    const ks_kivi_shape &S = L.shape;
    const int64_t tok = (int64_t)g * S.cap + t, gi = tok * S.v_groups + c / S.group;
    if (S.v_bits == KS_KIVI_RAW_BF16) return ks_kivi_raw_get(L.v_codes + tok * S.v_words, c, S.v_bits);
    const unsigned q = ks_kivi_code(L.v_codes + tok * S.v_words, c, S.v_bits);
    return ks_kivi_dequantize(q, ks_kivi_float(L.v_scale[gi]), ks_kivi_float(L.v_zero[gi]));
}

// Block (h, split): the tokens of its share; partial O (d), max and sum to part (H, splits, d + 2).
__global__ void __launch_bounds__(DEC_WARPS * 32) kivi_decode_kernel(ks_cuda_kivi_layer L, const bf16 *q, float scale,
                                                                    int H, int splits, float *part) {
    __shared__ float sm_m[DEC_WARPS], sm_l[DEC_WARPS], sm_o[DEC_WARPS][MAX_PER_LANE * 32];
    const ks_kivi_shape &S = L.shape;
    const int h = blockIdx.x, split = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = h / (H / L.Hk), d = S.d, per = (d + 31) / 32; // lanes past d hold nothing
    const int n = L.n[g], nq_k = L.nq_k[g], nq_v = L.nq_v[g], off = L.off[g], kc = L.kc[g];
    const int chunk = (n + splits - 1) / splits, lo = split * chunk, hi = min(n, lo + chunk);
    float qr[MAX_PER_LANE], qs[MAX_PER_LANE], acc[MAX_PER_LANE], m = -INFINITY, l = 0.0f;
    for (int k = 0; k < per; k++) {
        const int i = lane + 32 * k; // stored key channel i reads the query at its head channel
        qr[k] = i < d ? __bfloat162float(q[(int64_t)h * d + i]) : 0.0f;
        qs[k] = i < kc ? __bfloat162float(q[(int64_t)h * d + L.k_chan[(int64_t)g * d + i]]) : 0.0f;
        acc[k] = 0.0f;
    }
    const bf16 *kr = reinterpret_cast<const bf16 *>(L.k) + (int64_t)g * L.stride * d;
    const bf16 *vr = reinterpret_cast<const bf16 *>(L.v) + (int64_t)g * L.stride * d;
    for (int t = lo + warp; t < hi; t += DEC_WARPS) {
        float dot = 0.0f;
        for (int k = 0; k < per; k++) {
            const int c = lane + 32 * k;
            if (t < nq_k) dot += c < kc ? qs[k] * packed_key(L, g, c, t) : 0.0f;
            else if (c < d) dot += qr[k] * __bfloat162float(kr[(int64_t)(t - off) * d + c]);
        }
        const float logit = ks_warp_sum(dot) * scale, mn = fmaxf(m, logit);
        const float corr = __expf(m - mn), p = __expf(logit - mn);
        l = l * corr + p, m = mn;
        for (int k = 0; k < per; k++) {
            const int c = lane + 32 * k;
            if (c >= d) break;
            const float v = t < nq_v ? packed_value(L, g, c, t) : __bfloat162float(vr[(int64_t)(t - off) * d + c]);
            acc[k] = acc[k] * corr + p * v;
        }
    }
    if (lane == 0) sm_m[warp] = m, sm_l[warp] = l;
    for (int k = 0; k < per && lane + 32 * k < d; k++) sm_o[warp][lane + 32 * k] = acc[k];
    __syncthreads();
    if (warp) return;
    float M = -INFINITY;
    for (int w = 0; w < DEC_WARPS; w++) M = fmaxf(M, sm_m[w]);
    float *out = part + ((int64_t)h * splits + split) * (d + 2);
    for (int k = 0; k < per && lane + 32 * k < d; k++) {
        float o = 0.0f;
        for (int w = 0; w < DEC_WARPS; w++)
            if (sm_l[w] > 0.0f) o += sm_o[w][lane + 32 * k] * __expf(sm_m[w] - M);
        out[lane + 32 * k] = o;
    }
    if (lane == 0) {
        float s = 0.0f;
        for (int w = 0; w < DEC_WARPS; w++)
            if (sm_l[w] > 0.0f) s += sm_l[w] * __expf(sm_m[w] - M);
        out[d] = M, out[d + 1] = s;
    }
}

// Block h: out[h] = sum of the splits' partials, rescaled to the largest max, over their sums.
__global__ void kivi_combine_kernel(bf16 *out, const float *part, int d, int splits) {
    const int h = blockIdx.x;
    const float *p = part + (int64_t)h * splits * (d + 2);
    float M = -INFINITY;
    for (int s = 0; s < splits; s++)
        if (p[s * (d + 2) + d + 1] > 0.0f) M = fmaxf(M, p[s * (d + 2) + d]);
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float o = 0.0f, l = 0.0f;
        for (int s = 0; s < splits; s++) {
            const float *ps = p + s * (d + 2);
            if (ps[d + 1] <= 0.0f) continue; // an empty split
            const float w = __expf(ps[d] - M);
            o += ps[c] * w, l += ps[d + 1] * w;
        }
        out[(int64_t)h * d + c] = __float2bfloat16_rn(l > 0.0f ? o / l : 0.0f);
    }
}

} // namespace

extern "C" size_t ks_cuda_kivi_attention_scratch_floats(int H, int d, int max_n) {
    return (size_t)H * splits_for(max_n) * (d + 2);
}

extern "C" ks_status ks_cuda_kivi_attention_decode(ks_bf16 *out, const ks_bf16 *q, const ks_cuda_kivi_layer *L, int H,
                                                   float scale, int max_n, float *scratch, cudaStream_t s) {
    const int d = L->shape.d, splits = splits_for(max_n);
    KS_ASSERT(d <= 32 * MAX_PER_LANE && H % L->Hk == 0);
    kivi_decode_kernel<<<dim3(H, splits), DEC_WARPS * 32, 0, s>>>(*L, reinterpret_cast<const bf16 *>(q), scale, H,
                                                                  splits, scratch);
    KS_LAUNCH_CHECK();
    kivi_combine_kernel<<<H, 128, 0, s>>>(reinterpret_cast<bf16 *>(out), scratch, d, splits);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
