// kv_append.cu — appending a chunk's K and V (token-major, straight from the projections) to the
// head-major bf16 cache of one layer, each KV head at its own length.
#include "common.cuh"

// One block per token; thread e covers element group e of the token's Hk*d K values and the same of V.
// VEC: groups of 8 bf16 moved as one 16-byte word (d % 8 == 0 and 16-byte aligned rows).
template <bool VEC>
__global__ void kv_append_kernel(bf16 *kc, bf16 *vc, const bf16 *k, const bf16 *v, int64_t ld,
                                 const int32_t *lens, int row0, int Hk, int d, int cap) {
    const int W = VEC ? 8 : 1, per_head = d / W;
    int t = blockIdx.x;
    for (int e = threadIdx.x; e < Hk * per_head; e += blockDim.x) {
        int h = e / per_head, c = (e - h * per_head) * W;
        int64_t src = (int64_t)t * ld + (int64_t)h * d + c;
        int64_t dst = ((int64_t)h * cap + (lens ? lens[h] : row0) + t) * d + c;
        if (VEC) {
            *reinterpret_cast<uint4 *>(kc + dst) = *reinterpret_cast<const uint4 *>(k + src);
            *reinterpret_cast<uint4 *>(vc + dst) = *reinterpret_cast<const uint4 *>(v + src);
        } else {
            kc[dst] = k[src];
            vc[dst] = v[src];
        }
    }
}

// One decode token, one block per head (H query heads, then Hk key heads): RoPE on the head in place
// (rotate-half, as rope.cu), one thread per (i, i + d/2) pair with its own angle (sincosf, accurate at 128K
// positions); a key head's block also appends its rotated k and its v at lens[h] and then counts the row —
// lens[h] is read and written by that block alone. One block per head keeps every thread to one load and
// one store of each (a single block looping over all heads waits on ~15 dependent rounds of loads).
__global__ void rope_append_one_kernel(bf16 *qkv, bf16 *kc, bf16 *vc, const int32_t *pos, int32_t *lens, int H,
                                       int Hk, int d, int cap, const float *inv_freq) {
    ks_pdl_wait(); // launched with ks_launch_pdl: q|k|v, pos and lens come from the kernels before
    ks_pdl_trigger();
    const int h = blockIdx.x, half = d / 2, kh = h - H;
    const float p = (float)pos[0];
    bf16 *x = qkv + (int64_t)h * d;
    const int row = kh >= 0 ? lens[kh] : 0;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float sn, cs;
        sincosf(p * inv_freq[i], &sn, &cs);
        const float a = __bfloat162float(x[i]), b = __bfloat162float(x[i + half]);
        const bf16 ra = __float2bfloat16_rn(a * cs - b * sn), rb = __float2bfloat16_rn(b * cs + a * sn);
        x[i] = ra, x[i + half] = rb;
        if (kh >= 0) { // a key head: its rotated pair and its value pair go to the cache too
            bf16 *kr = kc + ((int64_t)kh * cap + row) * d, *vr = vc + ((int64_t)kh * cap + row) * d;
            const bf16 *v = qkv + (int64_t)(H + Hk + kh) * d;
            kr[i] = ra, kr[i + half] = rb;
            vr[i] = v[i], vr[i + half] = v[i + half];
        }
    }
    if (kh >= 0) {
        __syncthreads(); // every thread has read lens[kh]
        if (threadIdx.x == 0) lens[kh] = row + 1;
    }
}

__global__ void lens_add_kernel(int32_t *lens, int Hk, int delta) {
    int h = blockIdx.x * blockDim.x + threadIdx.x;
    if (h < Hk) lens[h] += delta;
}

extern "C" ks_status ks_cuda_kv_append(ks_bf16 *kc, ks_bf16 *vc, const ks_bf16 *k, const ks_bf16 *v, int64_t ld,
                                       const int32_t *lens, int row0, int n, int Hk, int d, int cap,
                                       cudaStream_t s) {
    if (n <= 0) return KS_OK;
    KS_ASSERT(lens || row0 + n <= cap);
    bool vec = d % 8 == 0 && ld % 8 == 0 && ((((uintptr_t)kc | (uintptr_t)vc | (uintptr_t)k | (uintptr_t)v) & 15) == 0);
    int work = Hk * (vec ? d / 8 : d), threads = work >= 256 ? 256 : (work + 31) / 32 * 32;
    bf16 *K = reinterpret_cast<bf16 *>(kc), *V = reinterpret_cast<bf16 *>(vc);
    const bf16 *ks = reinterpret_cast<const bf16 *>(k), *vs = reinterpret_cast<const bf16 *>(v);
    if (vec)
        kv_append_kernel<true><<<n, threads, 0, s>>>(K, V, ks, vs, ld, lens, row0, Hk, d, cap);
    else
        kv_append_kernel<false><<<n, threads, 0, s>>>(K, V, ks, vs, ld, lens, row0, Hk, d, cap);
    KS_LAUNCH_CHECK();
    return KS_OK;
}

extern "C" ks_status ks_cuda_lens_add(int32_t *lens, int Hk, int delta, cudaStream_t s) {
    lens_add_kernel<<<ks_cdiv(Hk, 128), 128, 0, s>>>(lens, Hk, delta);
    KS_LAUNCH_CHECK();
    return KS_OK;
}

extern "C" ks_status ks_cuda_rope_append_one(ks_bf16 *qkv, ks_bf16 *kc, ks_bf16 *vc, const int32_t *pos,
                                             int32_t *lens, int H, int Hk, int d, int cap, const float *inv_freq,
                                             cudaStream_t s) {
    KS_ASSERT(d % 2 == 0);
    const int threads = d / 2 < 256 ? (d / 2 + 31) / 32 * 32 : 256;
    KS_LAUNCH_PDL(rope_append_one_kernel, dim3(H + Hk), dim3(threads), 0, s, reinterpret_cast<bf16 *>(qkv),
                  reinterpret_cast<bf16 *>(kc), reinterpret_cast<bf16 *>(vc), pos, lens, H, Hk, d, cap, inv_freq);
    return KS_OK;
}
