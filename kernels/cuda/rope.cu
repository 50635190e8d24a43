// rope.cu — in-place rotate-half RoPE (HF apply_rotary_pos_emb) on the q or k rows of n tokens.
#include "common.cuh"

// One block per token; thread i < d/2 computes the angle pos * inv_freq[i] once and rotates pair i of every
// head (the angle is the same for all heads). The angle is the fp32 product and cos/sin are full-precision
// (sincosf), as the reference computes them: at 128K positions the fast intrinsics would be off by far more
// than bf16 rounding, and sincosf there is slow enough that computing it once per head would cost more than
// the rotation itself.
template <typename T>
__global__ void rope_kernel(T *x, int64_t ld, const int32_t *pos, int heads, int d, const float *inv_freq) {
    const int half = d / 2;
    const float p = (float)pos[blockIdx.x];
    T *row = x + (int64_t)blockIdx.x * ld;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float sn, cs;
        sincosf(p * inv_freq[i], &sn, &cs);
        for (int h0 = 0; h0 < heads; h0 += 4) { // four heads' loads in flight before their stores
            float a[4], b[4];
#pragma unroll
            for (int k = 0; k < 4; k++)
                if (h0 + k < heads) {
                    const T *v = row + (int64_t)(h0 + k) * d;
                    a[k] = ks_ld(v + i), b[k] = ks_ld(v + i + half);
                }
#pragma unroll
            for (int k = 0; k < 4; k++)
                if (h0 + k < heads) {
                    T *v = row + (int64_t)(h0 + k) * d;
                    ks_st(v + i, a[k] * cs - b[k] * sn);
                    ks_st(v + i + half, b[k] * cs + a[k] * sn);
                }
        }
    }
}

extern "C" ks_status ks_cuda_rope(void *x, ks_dtype x_type, int64_t ld, const int32_t *pos, int n, int heads, int d,
                                  const float *inv_freq, cudaStream_t s) {
    KS_ASSERT(ks_cuda_type_ok(x_type) && d % 2 == 0);
    if (n <= 0 || heads <= 0) return KS_OK;
    const int half = d / 2, threads = half >= 256 ? 256 : (half + 31) / 32 * 32;
    if (x_type == KS_DTYPE_F32)
        rope_kernel<<<n, threads, 0, s>>>(static_cast<float *>(x), ld, pos, heads, d, inv_freq);
    else
        rope_kernel<<<n, threads, 0, s>>>(static_cast<bf16 *>(x), ld, pos, heads, d, inv_freq);
    KS_LAUNCH_CHECK();
    return KS_OK;
}

__global__ void positions_kernel(int32_t *pos, int pos0, int n) {
    ks_pdl_wait(); // launched with ks_launch_pdl: earlier kernels may still read pos
    ks_pdl_trigger();
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < n) pos[t] = pos0 + t;
}

extern "C" ks_status ks_cuda_positions(int32_t *pos, int pos0, int n, cudaStream_t s) {
    if (n <= 0) return KS_OK;
    KS_LAUNCH_PDL(positions_kernel, dim3(ks_cdiv(n, 256)), dim3(256), 0, s, pos, pos0, n);
    return KS_OK;
}
