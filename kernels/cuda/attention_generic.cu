// attention_generic.cu — attention on CUDA cores for any even head dim up to 256: one warp per (query, head),
// keys visited one at a time with an fp32 online softmax (a warp-wide dot product per key). Correct for every
// shape, fast for none: the tensor-core kernels serve d = 64 and 128 (the Llama, Mistral and Qwen2 sizes
// kvscope targets); this one keeps other head dims (and the tiny test checkpoints, d = 16) on the GPU.
#include "attention_generic.cuh"

namespace {

constexpr int kWarps = 4;

struct generic_args {
    bf16 *out;
    const bf16 *q, *kc, *vc;
    const int32_t *lens, *starts;
    int64_t ld_o, ld_q;
    int n, n_kv, cap, H, G, d, q_pos0, window;
    float scale_log2;
};

// PL = elements of a head row per lane (d <= 32 * PL); grid (n, ceil(H / kWarps)).
template <int PL>
__global__ void __launch_bounds__(kWarps * 32) attention_generic_kernel(generic_args a) {
    const int lane = threadIdx.x & 31, h = blockIdx.y * kWarps + (threadIdx.x >> 5), t = blockIdx.x;
    if (h >= a.H) return;
    const int kvh = h / a.G;
    int lo, hi;
    if (a.lens) {
        hi = a.lens[kvh];
        lo = a.starts ? min(a.starts[kvh], hi) : 0;
    } else {
        const int pos = a.q_pos0 + t;
        hi = min(a.n_kv, pos + 1);
        lo = a.window > 0 ? max(0, pos - a.window + 1) : 0;
    }
    const bf16 *q = a.q + (int64_t)t * a.ld_q + (int64_t)h * a.d;
    const bf16 *kh = a.kc + (int64_t)kvh * a.cap * a.d, *vh = a.vc + (int64_t)kvh * a.cap * a.d;
    float qv[PL], acc[PL];
#pragma unroll
    for (int i = 0; i < PL; i++) {
        const int c = lane + 32 * i;
        qv[i] = c < a.d ? __bfloat162float(q[c]) * a.scale_log2 : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f; // running max (log2 domain) and sum
    for (int j = lo; j < hi; j++) {
        const bf16 *kr = kh + (int64_t)j * a.d, *vr = vh + (int64_t)j * a.d;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < PL; i++) {
            const int c = lane + 32 * i;
            if (c < a.d) s = fmaf(qv[i], __bfloat162float(kr[c]), s);
        }
        s = ks_warp_sum(s);
        const float mn = fmaxf(m, s), corr = exp2f(m - mn), p = exp2f(s - mn);
        l = l * corr + p;
#pragma unroll
        for (int i = 0; i < PL; i++) {
            const int c = lane + 32 * i;
            if (c < a.d) acc[i] = fmaf(p, __bfloat162float(vr[c]), acc[i] * corr);
        }
        m = mn;
    }
    bf16 *o = a.out + (int64_t)t * a.ld_o + (int64_t)h * a.d;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int i = 0; i < PL; i++) {
        const int c = lane + 32 * i;
        if (c < a.d) o[c] = __float2bfloat16_rn(acc[i] * inv);
    }
}

} // namespace

ks_status ks_attention_generic_launch(ks_bf16 *out, int64_t ld_o, const ks_bf16 *q, int64_t ld_q, const ks_bf16 *kc,
                                      const ks_bf16 *vc, int n, int n_kv, int cap, int H, int Hk, int d, int q_pos0,
                                      int window, const int32_t *lens, const int32_t *starts, float scale,
                                      cudaStream_t s) {
    KS_ASSERT(d > 0 && d % 2 == 0 && d <= 256 && Hk > 0 && H % Hk == 0 && (!lens || n == 1) && n_kv <= cap);
    if (n <= 0) return KS_OK;
    generic_args a;
    a.out = reinterpret_cast<bf16 *>(out);
    a.q = reinterpret_cast<const bf16 *>(q);
    a.kc = reinterpret_cast<const bf16 *>(kc);
    a.vc = reinterpret_cast<const bf16 *>(vc);
    a.lens = lens, a.starts = starts;
    a.ld_o = ld_o, a.ld_q = ld_q;
    a.n = n, a.n_kv = n_kv, a.cap = cap, a.H = H, a.G = H / Hk, a.d = d, a.q_pos0 = q_pos0, a.window = window;
    a.scale_log2 = scale * 1.4426950408889634f;
    const dim3 grid(n, ks_cdiv(H, kWarps));
    const int pl = ks_cdiv(d, 32);
    if (pl == 1)
        attention_generic_kernel<1><<<grid, kWarps * 32, 0, s>>>(a);
    else if (pl == 2)
        attention_generic_kernel<2><<<grid, kWarps * 32, 0, s>>>(a);
    else if (pl <= 4)
        attention_generic_kernel<4><<<grid, kWarps * 32, 0, s>>>(a);
    else
        attention_generic_kernel<8><<<grid, kWarps * 32, 0, s>>>(a);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
