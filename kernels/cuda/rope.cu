// rope.cu — in-place rotate-half RoPE (HF apply_rotary_pos_emb) on the q or k rows of n tokens.
#include "common.cuh"

// One block per token; threads over (head, i < d/2). The angle is the fp32 product pos * inv_freq[i] and
// cos/sin are full-precision (sincosf), as the reference computes them: at 128K positions the fast
// intrinsics would be off by far more than bf16 rounding.
template <typename T>
__global__ void rope_kernel(T *x, int64_t ld, const int32_t *pos, int heads, int d, const float *inv_freq) {
    int half = d / 2;
    float p = (float)pos[blockIdx.x];
    T *row = x + (int64_t)blockIdx.x * ld;
    for (int e = threadIdx.x; e < heads * half; e += blockDim.x) {
        int h = e / half, i = e - h * half;
        float sn, cs;
        sincosf(p * inv_freq[i], &sn, &cs);
        T *v = row + (int64_t)h * d;
        float a = ks_ld(v + i), b = ks_ld(v + i + half);
        ks_st(v + i, a * cs - b * sn);
        ks_st(v + i + half, b * cs + a * sn);
    }
}

extern "C" ks_status ks_cuda_rope(void *x, ks_dtype x_type, int64_t ld, const int32_t *pos, int n, int heads, int d,
                                  const float *inv_freq, cudaStream_t s) {
    KS_ASSERT(ks_cuda_type_ok(x_type) && d % 2 == 0);
    if (n <= 0 || heads <= 0) return KS_OK;
    int work = heads * d / 2, threads = work >= 512 ? 512 : (work + 31) / 32 * 32;
    if (x_type == KS_DTYPE_F32)
        rope_kernel<<<n, threads, 0, s>>>(static_cast<float *>(x), ld, pos, heads, d, inv_freq);
    else
        rope_kernel<<<n, threads, 0, s>>>(static_cast<bf16 *>(x), ld, pos, heads, d, inv_freq);
    KS_LAUNCH_CHECK();
    return KS_OK;
}
